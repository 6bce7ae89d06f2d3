//! What a client of the inventory API puts in its URL, parsed the way kube-apiserver
//! parses it: label and field selectors ([`selector`]), continue tokens
//! ([`ContinueToken`]), the other list and watch parameters ([`ListQuery`]), and what
//! authorization reads from a query before any handler runs ([`RequestInfo`]).
//!
//! All of it is outside input, so it lives here, apart from the server: pure functions
//! with no I/O and a small dependency tree, which the fuzz targets (`fuzz/`) build in
//! seconds. Every rejection is an [`Error`] whose `Display` is the whole message of the
//! 400 `BadRequest` the apiserver answers.
#![forbid(unsafe_code)]

mod continue_token;
mod error;
mod list;
mod request_info;
pub mod selector;

pub use continue_token::ContinueToken;
pub use error::Error;
pub use list::{IncludeObject, ListQuery};
pub use request_info::{RequestInfo, percent_decode};
