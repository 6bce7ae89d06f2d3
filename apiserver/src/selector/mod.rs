//! Kubernetes label and field selectors (`?labelSelector=` / `?fieldSelector=`),
//! parsed and matched the way kube-apiserver does it.
//!
//! The label selector parser is a port of the lexer and parser in
//! k8s.io/apimachinery/pkg/labels/selector.go, quirks included: `x in ()` means
//! `x in ("")`, values are de-duplicated and sorted, `!=` and `notin` match objects
//! without the key, `gt`/`lt` compare 64-bit integers, and a NUL byte where a token
//! would start ends the input. The field selector parser follows
//! k8s.io/apimachinery/pkg/fields/selector.go: comma-separated `field=value`,
//! `field==value` and `field!=value` terms, with `\,` `\=` and `\\` escapes in the
//! value, no whitespace trimming, and a term with neither field nor value (`=`)
//! dropped. On top of that, every field must be one of the paths the resource
//! supports, as kube-apiserver checks with `ConvertFieldLabel`.
//!
//! Error messages use upstream's wording. They differ in three places: syntax errors
//! in a label selector also give the byte offset of the bad token, a bad key is
//! reported at `key` where upstream prints `<nil>`, and field selector escaping
//! errors quote the character and the value rather than printing a rune number.
//!
//! This is pure logic: no I/O and no knowledge of the inventory types. A resource
//! describes its selectable fields with a [`FieldTable`], or matches through a
//! [`FieldSource`] or a closure.

mod field;
mod label;
#[cfg(test)]
mod tests;

pub use field::*;
pub use label::*;

/// Why a selector was rejected. `Display` gives the whole message for a 400
/// `BadRequest` `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector does not follow the grammar. `message` uses upstream's
    /// wording, and `offset` is the byte offset of the token that was not expected.
    #[error("{message} (at byte {offset} of the label selector)")]
    LabelSyntax { message: String, offset: usize },
    /// A label selector requirement parsed, but its key or values are not valid.
    /// The message names the field path (`key`, `values[0][app]`) and quotes the bad value.
    #[error("unable to parse requirement: {0}")]
    LabelRequirement(String),
    /// A field selector term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldSyntax { selector: String, term: String },
    /// A field selector value has a backslash that is not followed by `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {sequence} (in value '{value}')")]
    FieldEscape { sequence: String, value: String },
    /// A field selector value contains a `,` or `=` that is not escaped.
    #[error(
        "invalid field selector: unescaped character in value: '{character}' (in value '{value}'; write it as '\\{character}')"
    )]
    FieldUnescaped { character: char, value: String },
    /// A field selector names a field the resource does not support.
    #[error("field label not supported: {field} (supported: {})", supported.join(", "))]
    FieldNotSupported {
        field: String,
        supported: Vec<String>,
    },
}
