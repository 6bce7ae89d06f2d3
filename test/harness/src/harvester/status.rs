//! `VirtualMachineImage` status as Harvester's `vmiOperator`
//! (`pkg/image/common/operator.go`) writes it, with wrangler's condition
//! helpers (`pkg/condition`): a condition is created `Unknown`; changing its
//! status or message stamps `lastUpdateTime` (UTC, RFC 3339); a reason
//! changes silently; `lastTransitionTime` is never set.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub(super) const INITIALIZED: &str = "Initialized";
pub(super) const IMPORTED: &str = "Imported";
pub(super) const RETRY_LIMIT_EXCEEDED: &str = "RetryLimitExceeded";

/// One entry of `status.conditions` (Harvester's `Condition`, all strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_update_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The status fields the image controller owns, with Go's zero values. The Go
/// struct has `omitempty` on all of them but `failed`, so a zero is written
/// as an absent field (`null` in our merge patch).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ImageStatus {
    pub applied_url: String,
    pub progress: i64,
    pub size: i64,
    pub virtual_size: i64,
    pub storage_class_name: String,
    pub failed: i64,
    pub last_failed_time: String,
    pub conditions: Vec<Condition>,
}

/// Now, as Go's `time.Now().UTC().Format(time.RFC3339)`.
pub(super) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs)
        .ok()
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| "1970-01-01T00:00:00Z".to_owned(), |t| t.to_string())
}

impl ImageStatus {
    /// The status of an image object (defaults where absent or malformed).
    pub fn of(object: &kube::api::DynamicObject) -> Self {
        object
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default()
    }

    /// A JSON merge patch that makes the object's status equal to this one
    /// (other status fields, e.g. `backupTarget`, are left alone).
    pub fn merge_patch(&self) -> Value {
        let s = |v: &str| if v.is_empty() { Value::Null } else { json!(v) };
        let n = |v: i64| if v == 0 { Value::Null } else { json!(v) };
        json!({"status": {
            "appliedUrl": s(&self.applied_url),
            "progress": n(self.progress),
            "size": n(self.size),
            "virtualSize": n(self.virtual_size),
            "storageClassName": s(&self.storage_class_name),
            "failed": self.failed,
            "lastFailedTime": s(&self.last_failed_time),
            "conditions": self.conditions,
        }})
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    fn cond_mut(&mut self, type_: &str) -> &mut Condition {
        let i = match self.conditions.iter().position(|c| c.type_ == type_) {
            Some(i) => i,
            None => {
                self.conditions.push(Condition {
                    type_: type_.to_owned(),
                    status: "Unknown".to_owned(),
                    ..Condition::default()
                });
                self.conditions.len() - 1
            }
        };
        &mut self.conditions[i]
    }

    fn set_status(&mut self, type_: &str, status: &str) {
        let c = self.cond_mut(type_);
        if c.status != status {
            c.status = status.to_owned();
            c.last_update_time = now_rfc3339();
        }
    }

    fn set_reason(&mut self, type_: &str, reason: &str) {
        reason.clone_into(&mut self.cond_mut(type_).reason);
    }

    fn set_message(&mut self, type_: &str, message: &str) {
        let c = self.cond_mut(type_);
        if c.message != message {
            message.clone_into(&mut c.message);
            c.last_update_time = now_rfc3339();
        }
    }

    fn touch(&mut self, type_: &str) {
        self.cond_mut(type_).last_update_time = now_rfc3339();
    }

    /// `stateTransit(VMImageStateInitialized)`: the backend is set up, the
    /// download starts.
    pub fn initialized(&mut self, url: &str, storage_class_name: &str) {
        url.clone_into(&mut self.applied_url);
        storage_class_name.clone_into(&mut self.storage_class_name);
        self.progress = 0;
        self.set_status(IMPORTED, "Unknown");
        self.set_reason(IMPORTED, "Importing");
        self.touch(IMPORTED);
        self.set_status(INITIALIZED, "True");
        self.set_message(INITIALIZED, "");
        self.set_reason(INITIALIZED, "Initialized");
        self.touch(INITIALIZED);
    }

    /// `stateTransit(VMImageStateImporting)`: 100 is shown as 99 until the
    /// image is ready.
    pub fn importing(&mut self, message: &str, progress: i64) {
        self.progress = if progress >= 100 { 99 } else { progress };
        self.set_status(IMPORTED, "Unknown");
        self.set_reason(IMPORTED, "Importing");
        self.set_message(IMPORTED, message);
    }

    /// `stateTransit(VMImageStateImported)`; also clears a lingering
    /// `RetryLimitExceeded` message from earlier failed attempts.
    pub fn imported(&mut self, size: i64, virtual_size: i64) {
        self.progress = 100;
        self.size = size;
        self.virtual_size = virtual_size;
        self.set_status(IMPORTED, "True");
        self.set_reason(IMPORTED, "Imported");
        self.set_message(IMPORTED, "");
        self.set_status(RETRY_LIMIT_EXCEEDED, "False");
        self.set_reason(RETRY_LIMIT_EXCEEDED, "");
        self.set_message(RETRY_LIMIT_EXCEEDED, "");
    }

    /// `failStateTransit`: one more failure of `cond` (`Initialized` when
    /// Harvester's own checks failed, `Imported` when the download did).
    /// Returns true when `failed` exceeds `retry`: the image is then given
    /// up (`RetryLimitExceeded=True`, `cond=False`). Below the limit `cond`
    /// keeps its status and only `RetryLimitExceeded=False` carries the
    /// message.
    pub fn fail(&mut self, cond: &str, error: &str, progress: i64, retry: i64) -> bool {
        self.failed += 1;
        self.last_failed_time = now_rfc3339();
        self.progress = progress;
        let mut message = format!("failed due to error: {error}");
        if self.failed > 1 {
            message = format!("retry attempted {}/{retry} {message}", self.failed - 1);
        }
        let exceeded = self.failed > retry;
        if exceeded {
            self.set_status(RETRY_LIMIT_EXCEEDED, "True");
            self.set_message(RETRY_LIMIT_EXCEEDED, &message);
            self.set_status(cond, "False");
            self.set_message(cond, &message);
        } else {
            self.set_status(RETRY_LIMIT_EXCEEDED, "False");
            self.set_message(RETRY_LIMIT_EXCEEDED, &message);
        }
        exceeded
    }

    /// The `RetryLimitExceeded` message (why the image was given up).
    pub fn retry_message(&self) -> String {
        self.condition(RETRY_LIMIT_EXCEEDED)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_up_to_the_retry_limit() {
        let mut s = ImageStatus::default();
        assert!(!s.fail(IMPORTED, "boom", 40, 1));
        assert_eq!(s.retry_message(), "failed due to error: boom");
        assert!(
            s.condition(IMPORTED).is_none(),
            "below the limit: untouched"
        );
        assert!(s.fail(IMPORTED, "boom", 40, 1));
        assert_eq!(s.failed, 2);
        assert_eq!(
            s.retry_message(),
            "retry attempted 1/1 failed due to error: boom"
        );
        assert!(s.is_true(RETRY_LIMIT_EXCEEDED));
        let imported = s.condition(IMPORTED).expect("Imported");
        assert_eq!(imported.status, "False");
        assert_eq!(imported.reason, "", "no ImportFailed reason");
        assert!(imported.last_transition_time.is_empty());
        assert!(!imported.last_update_time.is_empty());
    }

    #[test]
    fn progress_shows_99_until_imported() {
        let mut s = ImageStatus::default();
        s.initialized("http://x/disk", "lh-1");
        assert_eq!(
            s.condition(IMPORTED).map(|c| c.reason.as_str()),
            Some("Importing")
        );
        s.importing("", 100);
        assert_eq!(s.progress, 99);
        s.imported(10, 10);
        assert_eq!(s.progress, 100);
        assert!(s.is_true(IMPORTED) && s.is_true(INITIALIZED));
        assert_eq!(
            s.condition(RETRY_LIMIT_EXCEEDED).map(|c| c.status.as_str()),
            Some("False")
        );
        let patch = s.merge_patch();
        assert_eq!(patch["status"]["failed"], 0);
        assert_eq!(patch["status"]["lastFailedTime"], Value::Null);
        assert!(now_rfc3339().ends_with('Z'), "{}", now_rfc3339());
    }
}
