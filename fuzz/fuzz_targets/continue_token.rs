//! `?continue=`: any token parses or is refused; what parses prints to a token that
//! parses back the same (the canonical form), and every token the server issues
//! (a version, a namespace without `/`, a non-empty name) parses back to its parts.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vmm_query::ContinueToken;

#[derive(Arbitrary, Debug)]
enum Input {
    /// What a client may send.
    Text(String),
    /// What the server issues at a page's end.
    Issued {
        version: u64,
        namespace: String,
        name: String,
    },
}

fuzz_target!(|input: Input| match input {
    Input::Text(text) => {
        if let Ok(token) = ContinueToken::parse(&text) {
            let printed = token.to_string();
            assert_eq!(ContinueToken::parse(&printed), Ok(token), "{text:?}");
        }
    }
    Input::Issued {
        version,
        namespace,
        name,
    } => {
        // Object keys are DNS-1123: no `/` in a namespace, and every object has a name.
        if namespace.contains('/') || name.is_empty() {
            return;
        }
        let token = ContinueToken {
            version,
            namespace,
            name,
        };
        assert_eq!(ContinueToken::parse(&token.to_string()), Ok(token));
    }
});
