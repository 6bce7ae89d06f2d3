//! The inventory apiserver as a library: the binary (`main.rs`) only reads flags
//! and wires these together, and the e2e tests drive the same pieces (the
//! per-source sync, TokenReview and SubjectAccessReview) against real peers.
//!
//! | module | what |
//! |---|---|
//! | [`serve`] | HTTPS with the front proxy's optional client certificate |
//! | [`authn`], [`authz`] | who is asking (front proxy, bearer tokens); SubjectAccessReview |
//! | [`certs`] | a serving certificate managed in a Secret, the APIService's caBundle kept current |
//! | [`router`] | every route, built by one function |
//! | [`resources`] | one module per served resource: its columns, selectable fields and place in the store |
//! | [`discovery`], [`openapi`], [`list`], [`watch`], [`table`], [`status`] | what the routes answer |
//! | [`json`] | JSON answers serialized from the typed objects, lists streamed in chunks |
//! | [`selector`] | label and field selectors as kube-apiserver parses them |
//! | [`store`], [`concerns`] | the inventory in memory |
//! | [`cluster`] | NADs and KubeVirt VM names, for concerns |
//! | [`metrics`] | requests, latencies and inventory size for Prometheus |
//! | [`sources`], [`sink`] | one sync task per source, delivering into the store |
#![forbid(unsafe_code)]

pub mod authn;
pub mod authz;
pub mod certs;
pub mod cluster;
pub mod concerns;
pub mod discovery;
pub mod json;
pub mod list;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod resources;
pub mod router;
pub mod serve;
pub mod sink;
pub mod sources;
pub mod status;
pub mod store;
pub mod table;
pub mod watch;
