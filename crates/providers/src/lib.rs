//! Everything that talks to a source lives here, one module per kind of source
//! behind one trait (the trait arrives with the first provider). What is common
//! to all kinds today: reading credentials out of the source's Secret.
#![forbid(unsafe_code)]

pub mod credentials;

pub use credentials::{Credentials, CredentialsError, SecretString};
