//! Continue tokens: where the next page of a list starts.

use std::fmt;

use crate::Error;

/// A page boundary: the version the list was read at and the key of the last object
/// served, written `version/namespace/name`. Names and namespaces are DNS-1123, so `/`
/// cannot occur inside them (the namespace of a cluster-wide key is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinueToken {
    pub version: u64,
    pub namespace: String,
    pub name: String,
}

impl ContinueToken {
    /// Reads a token this server issued; anything else is [`Error::ContinueToken`].
    pub fn parse(token: &str) -> Result<Self, Error> {
        let malformed = || Error::ContinueToken {
            token: token.to_owned(),
        };
        let mut parts = token.splitn(3, '/');
        let version = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(malformed)?;
        let namespace = parts.next().ok_or_else(malformed)?;
        let name = parts
            .next()
            .filter(|n| !n.is_empty())
            .ok_or_else(malformed)?;
        Ok(Self {
            version,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ContinueToken {
    /// The token as a list's `metadata.continue` carries it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.version, self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = ContinueToken {
            version: 7,
            namespace: "ns".into(),
            name: "vc-vm-1".into(),
        };
        assert_eq!(token.to_string(), "7/ns/vc-vm-1");
        assert_eq!(ContinueToken::parse(&token.to_string()), Ok(token));
        for garbage in [
            "", "x", "7", "7/ns", "7/ns/", "abc/ns/x", "-1/ns/x", "\u{0}",
        ] {
            assert_eq!(
                ContinueToken::parse(garbage),
                Err(Error::ContinueToken {
                    token: garbage.into()
                }),
                "{garbage:?}"
            );
        }
    }
}
