//! The crate's one error type.

/// Why a range or an endpoint was refused. `Display` is the whole message: the
/// body of a 416, or the detail of an invalid endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A `Range` in another unit than bytes.
    #[error("range {header:?}: only bytes ranges are served")]
    RangeUnit { header: String },
    /// A `Range` with several ranges.
    #[error("range {header:?}: one range per request")]
    RangeCount { header: String },
    /// A `Range` that is not `bytes=a-b`, `bytes=a-` or `bytes=-n`.
    #[error("range {header:?} is malformed")]
    RangeMalformed { header: String },
    /// A `Range` with no byte inside the disk.
    #[error("range {header:?} is outside the disk's {capacity} bytes")]
    RangeOutside { header: String, capacity: u64 },
    /// An endpoint that is not a URL (or a host name).
    #[error("{0}")]
    EndpointUrl(url::ParseError),
    #[error("the scheme must be https")]
    EndpointScheme,
    #[error("the URL must not hold credentials; put them in the Secret")]
    EndpointCredentials,
    #[error("the path must be /sdk (or empty)")]
    EndpointPath,
    #[error("no host")]
    EndpointHost,
}
