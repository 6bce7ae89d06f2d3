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
