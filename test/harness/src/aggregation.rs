//! Registering a locally running aggregated API server with the test
//! kube-apiserver.
//!
//! With no kube-proxy and no endpoints controller, kube-aggregator reaches a
//! local port through a Service of `type: ExternalName` with
//! `externalName: localhost`: for such a Service it dials
//! `https://localhost:<APIService.spec.service.port>` and verifies the serving
//! certificate for `<service>.<namespace>.svc` against `spec.caBundle`
//! (kube-aggregator's service resolver; no kube-proxy is involved). Issue
//! that certificate with
//! [`ClusterPki::issue_aggregated_serving`](crate::pki::ClusterPki::issue_aggregated_serving).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
    APIService, APIServiceCondition, APIServiceSpec, ServiceReference,
};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};

/// Field manager of the objects the harness applies.
pub const FIELD_MANAGER: &str = "vmm-testkit";

/// One APIService routed to `localhost:<local_port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServiceRegistration {
    pub group: String,
    pub version: String,
    /// Port of the aggregated server on 127.0.0.1/localhost.
    pub local_port: u16,
    /// PEM of the CA that signed the server's certificate (`spec.caBundle`).
    pub ca_pem: String,
    /// CRD groups get 1000; KubeVirt's `kubevirt.io` must keep winning the
    /// plain `virtualmachines` name, so stay below unless a test wants otherwise.
    pub group_priority_minimum: i32,
    pub version_priority: i32,
    /// Namespace of the ExternalName Service (created when missing).
    pub service_namespace: String,
    /// Name of the ExternalName Service.
    pub service_name: String,
}

impl ApiServiceRegistration {
    /// Defaults: priority 100/15, Service `api-<group with dots as dashes>`
    /// (cut to 63 characters) in namespace `vmm-e2e-aggregation`.
    pub fn new(group: &str, version: &str, local_port: u16, ca_pem: &str) -> Self {
        let mut service_name = format!("api-{}", group.replace('.', "-"));
        service_name.truncate(63);
        let service_name = service_name.trim_end_matches('-').to_string();
        Self {
            group: group.into(),
            version: version.into(),
            local_port,
            ca_pem: ca_pem.into(),
            group_priority_minimum: 100,
            version_priority: 15,
            service_namespace: "vmm-e2e-aggregation".into(),
            service_name,
        }
    }

    pub fn priority(mut self, group_priority_minimum: i32, version_priority: i32) -> Self {
        self.group_priority_minimum = group_priority_minimum;
        self.version_priority = version_priority;
        self
    }

    pub fn service(mut self, namespace: &str, name: &str) -> Self {
        self.service_namespace = namespace.into();
        self.service_name = name.into();
        self
    }

    /// `<version>.<group>`: the APIService's object name.
    pub fn apiservice_name(&self) -> String {
        format!("{}.{}", self.version, self.group)
    }

    /// `<service>.<namespace>.svc`: the name the aggregator verifies in the
    /// server's certificate.
    pub fn service_host(&self) -> String {
        format!("{}.{}.svc", self.service_name, self.service_namespace)
    }

    /// The three objects, as the harness applies them.
    pub fn objects(&self) -> (Namespace, Service, APIService) {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(self.service_namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let service = Service {
            metadata: ObjectMeta {
                name: Some(self.service_name.clone()),
                namespace: Some(self.service_namespace.clone()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("localhost".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let apiservice = APIService {
            metadata: ObjectMeta {
                name: Some(self.apiservice_name()),
                ..Default::default()
            },
            spec: Some(APIServiceSpec {
                group: Some(self.group.clone()),
                version: Some(self.version.clone()),
                group_priority_minimum: self.group_priority_minimum,
                version_priority: self.version_priority,
                ca_bundle: Some(ByteString(self.ca_pem.clone().into_bytes())),
                insecure_skip_tls_verify: None,
                service: Some(ServiceReference {
                    namespace: Some(self.service_namespace.clone()),
                    name: Some(self.service_name.clone()),
                    port: Some(i32::from(self.local_port)),
                }),
            }),
            status: None,
        };
        (namespace, service, apiservice)
    }
}

fn ssa() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies (server-side) the namespace, the ExternalName Service and the
/// APIService. Idempotent.
pub async fn register_apiservice(
    client: &kube::Client,
    registration: &ApiServiceRegistration,
) -> Result<APIService> {
    let (namespace, service, apiservice) = registration.objects();
    let ns_name = registration.service_namespace.as_str();
    Api::<Namespace>::all(client.clone())
        .patch(ns_name, &ssa(), &Patch::Apply(&namespace))
        .await
        .with_context(|| format!("apply namespace {ns_name}"))?;
    Api::<Service>::namespaced(client.clone(), ns_name)
        .patch(&registration.service_name, &ssa(), &Patch::Apply(&service))
        .await
        .with_context(|| format!("apply service {}", registration.service_host()))?;
    Api::<APIService>::all(client.clone())
        .patch(
            &registration.apiservice_name(),
            &ssa(),
            &Patch::Apply(&apiservice),
        )
        .await
        .with_context(|| format!("apply apiservice {}", registration.apiservice_name()))
}

/// Deletes the APIService and its Service (the namespace stays: without
/// kube-controller-manager it could never finish terminating).
pub async fn unregister_apiservice(
    client: &kube::Client,
    registration: &ApiServiceRegistration,
) -> Result<()> {
    let dp = DeleteParams::default();
    match Api::<APIService>::all(client.clone())
        .delete(&registration.apiservice_name(), &dp)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(e).context("delete apiservice"),
    }
    match Api::<Service>::namespaced(client.clone(), &registration.service_namespace)
        .delete(&registration.service_name, &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e).context("delete service"),
    }
}

/// The APIService's `Available` condition, if it has one yet.
pub async fn available_condition(
    client: &kube::Client,
    apiservice_name: &str,
) -> Result<Option<APIServiceCondition>> {
    let apiservice = Api::<APIService>::all(client.clone())
        .get(apiservice_name)
        .await
        .with_context(|| format!("get apiservice {apiservice_name}"))?;
    Ok(apiservice
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "Available")))
}

/// Polls until the `Available` condition satisfies `accept`, returning it; on
/// timeout the error shows the last condition seen.
pub async fn wait_available_condition(
    client: &kube::Client,
    apiservice_name: &str,
    timeout: Duration,
    mut accept: impl FnMut(&APIServiceCondition) -> bool,
) -> Result<APIServiceCondition> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match available_condition(client, apiservice_name).await {
            Ok(Some(condition)) if accept(&condition) => return Ok(condition),
            Ok(Some(condition)) => format!("{condition:?}"),
            Ok(None) => "no Available condition yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "apiservice {apiservice_name}: condition not reached within {timeout:?}; last: {last}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the APIService is `Available=True`.
pub async fn wait_apiservice_available(
    client: &kube::Client,
    apiservice_name: &str,
    timeout: Duration,
) -> Result<APIServiceCondition> {
    wait_available_condition(client, apiservice_name, timeout, |c| c.status == "True")
        .await
        .map_err(|e| anyhow!("{e:#}"))
}

/// What a [`StubAggregatedServer`] saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The TLS server name (SNI) the client asked for.
    pub server_name: Option<String>,
    pub method: String,
    pub path: String,
    /// Header names in lower case, in arrival order (repeated headers repeat).
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// Every value of a header (name in any case).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A minimal aggregated API server for harness tests: HTTPS on
/// `127.0.0.1:<port>`, requiring a client certificate signed by the given CA
/// (the front-proxy CA), answering `GET /apis/<group>/<version>` with an
/// empty `APIResourceList` and 404 otherwise, and recording every request.
/// It stops when dropped.
pub struct StubAggregatedServer {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StubAggregatedServer {
    /// Binds a free loopback port and serves on the current Tokio runtime
    /// (use a multi-threaded runtime when the test blocks, e.g. on kubectl).
    pub async fn start(
        serving: &crate::pki::CertFiles,
        client_ca_pem: &str,
        group: &str,
        version: &str,
    ) -> Result<Self> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let provider = crate::tls::provider();
        let mut roots = rustls::RootCertStore::empty();
        for cert in crate::tls::certs_from_pem(client_ca_pem)? {
            roots.add(cert)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                crate::tls::certs_from_pem(&serving.cert_pem)?,
                PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())?,
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let discovery_path = format!("/apis/{group}/{version}");
        let body = serde_json::json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{group}/{version}"),
            "resources": [],
        })
        .to_string();
        let task_seen = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = task_seen.clone();
                let discovery_path = discovery_path.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let _ = serve_one(acceptor, stream, seen, &discovery_path, &body).await;
                });
            }
        });
        Ok(Self { port, seen, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for StubAggregatedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The head of one HTTP/1.1 request, as a test server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// As sent: the path and any query.
    pub target: String,
    /// Header names in lower case, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
}

/// Reads one request head, up to its blank line, for test servers that
/// answer one request per connection (what follows the head is not kept).
/// `None` when the client closes first or sends more than 64 KiB.
pub async fn read_request_head<S>(stream: &mut S) -> Result<Option<RequestHead>>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Some(RequestHead {
        method,
        target,
        headers,
    }))
}

async fn serve_one(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    discovery_path: &str,
    body: &str,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut tls = acceptor.accept(stream).await?;
    let server_name = tls.get_ref().1.server_name().map(str::to_owned);
    let Some(head) = read_request_head(&mut tls).await? else {
        return Ok(());
    };
    let path = head
        .target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let (status, body) = if head.method == "GET" && path == discovery_path {
        ("200 OK", body.to_string())
    } else {
        (
            "404 Not Found",
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_string(),
        )
    };
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(SeenRequest {
            server_name,
            method: head.method,
            path,
            headers: head.headers,
        });
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_group() {
        let r = ApiServiceRegistration::new("inventory.harvesterhci.io", "v1", 8443, "PEM");
        assert_eq!(r.apiservice_name(), "v1.inventory.harvesterhci.io");
        assert_eq!(r.service_name, "api-inventory-harvesterhci-io");
        assert_eq!(
            r.service_host(),
            "api-inventory-harvesterhci-io.vmm-e2e-aggregation.svc"
        );
        let (_, svc, api) = r.objects();
        assert_eq!(
            svc.spec.unwrap().external_name.as_deref(),
            Some("localhost")
        );
        assert_eq!(api.spec.clone().unwrap().service.unwrap().port, Some(8443));
        assert_eq!(api.spec.unwrap().ca_bundle.unwrap().0, b"PEM");
    }
}
