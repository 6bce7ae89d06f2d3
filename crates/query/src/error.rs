//! The crate's one error type.

/// Why a query was rejected. `Display` gives the whole message for a 400
/// `BadRequest` `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
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
    /// A `continue` token this server did not issue (a token it issued, but for
    /// another version of the inventory, parses: the server then answers 410).
    #[error("continue token {token:?} is not one this server issued")]
    ContinueToken { token: String },
    /// `includeObject` is none of the three policies.
    #[error("includeObject must be None, Metadata or Object, not {value:?}")]
    IncludeObject { value: String },
    /// `limit` is not a whole number.
    #[error("limit must be a whole number, not {text:?}")]
    Limit { text: String },
    /// `timeoutSeconds` is not a whole number.
    #[error("timeoutSeconds must be a whole number, not {text:?}")]
    TimeoutSeconds { text: String },
    /// A watch's `resourceVersion` is not a version this server counts.
    #[error("resourceVersion {text:?} is not one this server issued")]
    ResourceVersion { text: String },
    /// `sendInitialEvents` with a `resourceVersion` to start from: the two contradict.
    #[error(
        "sendInitialEvents starts from the current state; resourceVersion {text:?} must be empty or 0"
    )]
    InitialEventsVersion { text: String },
}
