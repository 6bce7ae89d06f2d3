//! Cluster DNS for the stand-in and the downloaders it starts. In Harvester
//! they run in pods and resolve a Service's name (`<service>.<namespace>.svc`,
//! the form of the chart's default disk URL) through CoreDNS, which the test
//! world does not run. Here such a name resolves to the Service's ClusterIP,
//! read from the API as CoreDNS's `kubernetes` plugin does (kube-proxy on the
//! test's nodes routes it from the host too); any other name goes to the
//! host's resolver.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::Service;

/// The cluster's DNS domain (kubelet's `--cluster-domain` default).
const CLUSTER_DOMAIN: &str = "cluster.local";

/// `(namespace, service)` when `host` names a Service
/// (`<service>.<namespace>.svc`, optionally followed by the cluster domain).
pub(super) fn service_of(host: &str) -> Option<(&str, &str)> {
    let host = host.trim_end_matches('.');
    let host = host
        .strip_suffix(CLUSTER_DOMAIN)
        .and_then(|h| h.strip_suffix('.'))
        .unwrap_or(host);
    let (service, namespace) = host.strip_suffix(".svc")?.split_once('.')?;
    (!service.is_empty() && !namespace.is_empty() && !namespace.contains('.'))
        .then_some((namespace, service))
}

/// The resolver of the stand-in's own HTTP clients.
pub(super) struct Resolver(pub kube::Client);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let client = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = lookup(&client, &host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses of `host` at `port`: a Service's ClusterIP for its name,
/// else what the host's resolver says.
async fn lookup(client: &kube::Client, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    Ok(match service_of(host) {
        Some((namespace, service)) => vec![SocketAddr::new(
            cluster_ip(client, namespace, service).await?,
            port,
        )],
        None => tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await?
            .collect(),
    })
}

/// The Service's ClusterIP (an error for a missing or headless one).
async fn cluster_ip(client: &kube::Client, namespace: &str, service: &str) -> Result<IpAddr> {
    let found = kube::Api::<Service>::namespaced(client.clone(), namespace)
        .get(service)
        .await
        .with_context(|| format!("resolve {service}.{namespace}.svc"))?;
    let ip = found
        .spec
        .and_then(|spec| spec.cluster_ip)
        .filter(|ip| ip != "None")
        .ok_or_else(|| anyhow!("Service {namespace}/{service} has no ClusterIP"))?;
    Ok(ip.parse()?)
}

/// Where `url`'s server is: its host resolved (as above) with its port.
pub(super) async fn address(client: &kube::Client, url: &reqwest::Url) -> Result<SocketAddr> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    lookup(client, host, port)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{host} does not resolve"))
}

/// For a `url` on a Service: `dir/hosts`, the host's `/etc/hosts` with the
/// Service's name added, for a downloader to resolve it with.
pub(super) async fn hosts_file(
    client: &kube::Client,
    url: &reqwest::Url,
    dir: &Path,
) -> Result<Option<PathBuf>> {
    let host = url.host_str().unwrap_or_default();
    if service_of(host).is_none() {
        return Ok(None);
    }
    let ip = address(client, url).await?.ip();
    let mut hosts = tokio::fs::read_to_string("/etc/hosts")
        .await
        .unwrap_or_default();
    hosts.push_str(&format!("\n{ip} {host}\n"));
    let file = dir.join("hosts");
    tokio::fs::write(&file, hosts).await?;
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::service_of;

    #[test]
    fn only_service_names_are_the_clusters() {
        for (host, want) in [
            (
                "vmm-controller.vm-migration.svc",
                Some(("vm-migration", "vmm-controller")),
            ),
            ("disks.ns.svc.cluster.local", Some(("ns", "disks"))),
            ("disks.ns.svc.cluster.local.", Some(("ns", "disks"))),
            ("127.0.0.1", None),
            ("vcenter.example.com", None),
            ("svc", None),
            (".ns.svc", None),
            ("a.b.c.svc", None),
        ] {
            assert_eq!(service_of(host), want, "{host}");
        }
    }
}
