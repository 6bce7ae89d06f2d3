//! The parameters of a list or watch (`?labelSelector=…&limit=…&watch=true`), as the
//! URL gives them, and how each is read. Parameters that do not apply to a request
//! are ignored, as kube-apiserver ignores them.

use std::time::Duration;

use serde::Deserialize;

use crate::selector::{FieldSelector, FieldTable, LabelSelector};
use crate::{ContinueToken, Error};

/// The query of a list, watch or get, decoded from the URL (axum's `Query` extractor).
/// Every value is kept as the text the client sent, so a bad one is reported by the
/// method that reads it, in kube-apiserver's words, rather than by the extractor.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    label_selector: Option<String>,
    field_selector: Option<String>,
    limit: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    include_object: Option<String>,
    watch: Option<String>,
    resource_version: Option<String>,
    send_initial_events: Option<String>,
    allow_watch_bookmarks: Option<String>,
    timeout_seconds: Option<String>,
}

/// How much of each object goes with its Table row (`includeObject`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

/// A boolean parameter: given and not `0` or `false` in any case, as upstream's
/// `Convert_Slice_string_To_bool` reads it. Authorization reads `watch` with this
/// too: when the handler read `watch=False` as a watch, a user allowed to list but
/// not to watch could watch (fuzzing found it).
pub(crate) fn flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

impl ListQuery {
    /// `watch` counts as asked for unless it is `0` or `false`.
    pub fn wants_watch(&self) -> bool {
        flag(self.watch.as_deref())
    }

    pub fn include_object(&self) -> Result<IncludeObject, Error> {
        match self.include_object.as_deref() {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(Error::IncludeObject {
                value: other.to_owned(),
            }),
        }
    }

    /// `labelSelector`; none selects everything.
    pub fn label_selector(&self) -> Result<LabelSelector, Error> {
        LabelSelector::parse(self.label_selector.as_deref().unwrap_or(""))
    }

    /// `fieldSelector`, naming only the fields `fields` has; none selects everything.
    pub fn field_selector<T>(&self, fields: &FieldTable<T>) -> Result<FieldSelector, Error> {
        fields.parse(self.field_selector.as_deref().unwrap_or(""))
    }

    /// The page size; 0 (also when not given) for the whole list.
    pub fn limit(&self) -> Result<usize, Error> {
        match self.limit.as_deref() {
            None | Some("") => Ok(0),
            Some(text) => text.parse().map_err(|_| Error::Limit {
                text: text.to_owned(),
            }),
        }
    }

    /// Where the page starts, if `continue` names a previous page's end.
    pub fn continue_token(&self) -> Result<Option<ContinueToken>, Error> {
        match self.continue_token.as_deref() {
            None | Some("") => Ok(None),
            Some(token) => ContinueToken::parse(token).map(Some),
        }
    }

    /// How long a watch may last, if `timeoutSeconds` says.
    pub fn timeout(&self) -> Result<Option<Duration>, Error> {
        match self.timeout_seconds.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse()
                .map(|seconds| Some(Duration::from_secs(seconds)))
                .map_err(|_| Error::TimeoutSeconds {
                    text: text.to_owned(),
                }),
        }
    }

    /// `sendInitialEvents`: a watch starts as a streaming list.
    pub fn send_initial_events(&self) -> bool {
        flag(self.send_initial_events.as_deref())
    }

    /// `allowWatchBookmarks`: an idle watch gets bookmarks.
    pub fn allow_watch_bookmarks(&self) -> bool {
        flag(self.allow_watch_bookmarks.as_deref())
    }

    /// The version a watch continues from: `None` (no `resourceVersion`, or `0`)
    /// starts from the current state. A streaming list always does.
    pub fn watch_from(&self) -> Result<Option<u64>, Error> {
        match self.resource_version.as_deref() {
            None | Some("") | Some("0") => Ok(None),
            Some(text) if self.send_initial_events() => Err(Error::InitialEventsVersion {
                text: text.to_owned(),
            }),
            Some(text) => text.parse().map(Some).map_err(|_| Error::ResourceVersion {
                text: text.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestInfo;

    #[test]
    fn parameters_read_as_kube_apiserver_reads_them() {
        let none = ListQuery::default();
        assert_eq!(none.include_object(), Ok(IncludeObject::Metadata));
        assert_eq!((none.limit(), none.timeout()), (Ok(0), Ok(None)));
        assert_eq!(
            (none.continue_token(), none.watch_from()),
            (Ok(None), Ok(None))
        );
        assert!(!none.wants_watch() && !none.send_initial_events());

        let bad = ListQuery {
            include_object: Some("All".into()),
            limit: Some("-1".into()),
            timeout_seconds: Some("1.5".into()),
            resource_version: Some("x".into()),
            ..ListQuery::default()
        };
        assert_eq!(
            bad.include_object().unwrap_err().to_string(),
            r#"includeObject must be None, Metadata or Object, not "All""#
        );
        assert_eq!(
            bad.limit().unwrap_err().to_string(),
            r#"limit must be a whole number, not "-1""#
        );
        assert_eq!(
            bad.timeout().unwrap_err().to_string(),
            r#"timeoutSeconds must be a whole number, not "1.5""#
        );
        assert_eq!(
            bad.watch_from().unwrap_err().to_string(),
            r#"resourceVersion "x" is not one this server issued"#
        );
        let streaming = ListQuery {
            send_initial_events: Some("true".into()),
            resource_version: Some("7".into()),
            ..ListQuery::default()
        };
        assert!(matches!(
            streaming.watch_from(),
            Err(Error::InitialEventsVersion { .. })
        ));
    }

    /// The handler and authorization read `watch` alike, in any case.
    #[test]
    fn watch_is_read_alike_by_the_handler_and_authorization() {
        for (value, watch) in [
            ("true", true),
            ("1", true),
            ("", true),
            ("0", false),
            ("false", false),
            ("False", false),
            ("fAlse", false),
        ] {
            let query = ListQuery {
                watch: Some(value.into()),
                ..ListQuery::default()
            };
            assert_eq!(query.wants_watch(), watch, "{value:?}");
            let info = RequestInfo::from_query(&format!("watch={value}"));
            assert_eq!(info.watch, watch, "{value:?}");
        }
    }
}
