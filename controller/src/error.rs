//! The controller's one error type: what a reconcile can fail with. Failures
//! of the source or of the user's input are not errors here: they end up in
//! status conditions, and the reconcile succeeds in reporting them.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    #[error("{kind} {name} has no namespace: only namespaced objects are reconciled")]
    NoNamespace { kind: &'static str, name: String },

    #[error("the source still holds the export's temporaries: {0}")]
    ExportNotReleased(String),

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}
