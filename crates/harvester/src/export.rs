//! A stopped VM's volumes through KubeVirt's `VirtualMachineExport`
//! (`export.kubevirt.io/v1beta1`): the export and its token Secret are
//! named after the import (`<namespace>/vmm-<job uid>`), so a restart finds
//! them again and a deletion removes them; the volumes are read at the
//! export's external links (this cluster is outside the remote one), with
//! the token in KubeVirt's header, trusting the CA the export publishes.
//!
//! KubeVirt serves each volume of a VM as `raw` (the device's bytes) and
//! `gzip` (the same, compressed); `dir` and `tar.gz` are archives of a
//! filesystem volume's files, which are not a disk.

use std::io::{self, Write};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::core::DynamicObject;
use kube::runtime::wait::await_condition;
use serde::Deserialize;
use serde_json::json;
use vmm_core::ByteStream;

use crate::{HarvesterClient, HarvesterError, model};

/// KubeVirt's header (or query parameter) for an export's token.
pub const TOKEN_HEADER: &str = "x-kubevirt-export-token";
/// The key of the token in the token Secret, as KubeVirt reads it.
const TOKEN_KEY: &str = "token";
/// How long KubeVirt keeps an export that was never deleted: longer than
/// any import, so that only a leaked one expires.
const TTL: &str = "24h";
/// How long one call waits for an export to become ready before the job
/// is requeued (it resumes the same export).
const READY_WAIT: Duration = Duration::from_secs(120);
/// No byte for this long fails a volume's download.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Who made an export, on the export and its Secret.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vm-migration");

/// An export that is ready: where each volume is served, and how to ask.
pub struct ReadyExport {
    http: reqwest::Client,
    token: String,
    /// The volumes (claim names) and their links.
    pub volumes: Vec<ExportedVolume>,
}

/// One volume of a [`ReadyExport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedVolume {
    /// The claim's name: KubeVirt names export volumes after their claims.
    pub name: String,
    pub url: String,
    /// Whether the link serves the raw bytes gzip-compressed.
    pub gzip: bool,
}

impl HarvesterClient {
    /// The export of VM `vm_id` (`namespace/name`) for the import job with
    /// UID `job_uid`: `<namespace>/vmm-<job uid>`.
    pub fn export_id(vm_id: &str, job_uid: &str) -> String {
        let namespace = vm_id.split_once('/').map_or("", |(ns, _)| ns);
        format!("{namespace}/vmm-{job_uid}")
    }

    /// Makes (or finds) the export `id` of the stopped VM `vm_id` and its
    /// token Secret, and waits until KubeVirt serves it.
    pub async fn open_export(&self, vm_id: &str, id: &str) -> Result<ReadyExport, HarvesterError> {
        let (namespace, name) = self.split_id(id)?;
        let (_, vm_name) = self.split_id(vm_id)?;
        let export = self.ensure_export(namespace, name, vm_name).await?;
        let token = self.ensure_token(namespace, name, &export).await?;
        let ready = self.wait_ready(namespace, name).await?;
        let link =
            ready
                .status
                .links
                .external
                .ok_or_else(|| HarvesterError::ExportUnreachable {
                    url: self.url.clone(),
                    export: id.to_owned(),
                })?;
        let volumes = link
            .volumes
            .iter()
            .map(|volume| choose_format(id, volume))
            .collect::<Result<Vec<_>, _>>()?;
        let trust = (!link.cert.trim().is_empty()).then_some(link.cert.as_str());
        Ok(ReadyExport {
            http: self.transfer_client(trust.or(self.ca_pem.as_deref()))?,
            token,
            volumes,
        })
    }

    /// Deletes the export `id` and its token Secret; either one already
    /// gone is fine.
    pub async fn remove_export(&self, id: &str) -> Result<(), HarvesterError> {
        let (namespace, name) = self.split_id(id)?;
        let exports = self.exports(namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        for (deleted, resource) in [
            (
                exports
                    .delete(name, &DeleteParams::default())
                    .await
                    .map(drop),
                "virtualmachineexports",
            ),
            (
                secrets
                    .delete(&token_secret(name), &DeleteParams::default())
                    .await
                    .map(drop),
                "secrets",
            ),
        ] {
            match deleted {
                Ok(()) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(self.refused(&e, "delete", resource, namespace)),
            }
        }
        Ok(())
    }

    async fn ensure_export(
        &self,
        namespace: &str,
        name: &str,
        vm_name: &str,
    ) -> Result<DynamicObject, HarvesterError> {
        let exports = self.exports(namespace);
        if let Some(export) = exports
            .get_opt(name)
            .await
            .map_err(|e| self.refused(&e, "get", "virtualmachineexports", namespace))?
        {
            return Ok(export);
        }
        let mut export = DynamicObject::new(name, &model::virtual_machine_exports());
        export.metadata.labels = Some([(MANAGED_BY.0.into(), MANAGED_BY.1.into())].into());
        export.data = json!({"spec": {
            "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm_name},
            "tokenSecretRef": token_secret(name),
            "ttlDuration": TTL,
        }});
        exports
            .create(&PostParams::default(), &export)
            .await
            .map_err(|e| self.refused(&e, "create", "virtualmachineexports", namespace))
    }

    /// The token in the export's Secret, made with a new random token (and
    /// owned by the export, so KubeVirt's expiry takes it too) when absent.
    async fn ensure_token(
        &self,
        namespace: &str,
        name: &str,
        export: &DynamicObject,
    ) -> Result<String, HarvesterError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret_name = token_secret(name);
        let existing = secrets
            .get_opt(&secret_name)
            .await
            .map_err(|e| self.refused(&e, "get", "secrets", namespace))?;
        if let Some(secret) = existing {
            return secret
                .data
                .as_ref()
                .and_then(|data| data.get(TOKEN_KEY))
                .and_then(|token| String::from_utf8(token.0.clone()).ok())
                .ok_or_else(|| HarvesterError::Api {
                    url: self.url.clone(),
                    call: format!("read secret {namespace}/{secret_name}"),
                    status: 200,
                    detail: "it has no token: delete it, and it is made again".into(),
                });
        }
        let token = new_token();
        let owner = OwnerReference {
            api_version: "export.kubevirt.io/v1beta1".into(),
            kind: "VirtualMachineExport".into(),
            name: name.to_owned(),
            uid: export.metadata.uid.clone().unwrap_or_default(),
            ..OwnerReference::default()
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name),
                labels: Some([(MANAGED_BY.0.into(), MANAGED_BY.1.into())].into()),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            data: Some([(TOKEN_KEY.into(), ByteString(token.clone().into_bytes()))].into()),
            ..Secret::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .map_err(|e| self.refused(&e, "create", "secrets", namespace))?;
        Ok(token)
    }

    /// The export once its phase is `Ready`; [`HarvesterError::ExportNotReady`]
    /// with KubeVirt's reason after [`READY_WAIT`].
    async fn wait_ready(&self, namespace: &str, name: &str) -> Result<Export, HarvesterError> {
        let ready = await_condition(self.exports(namespace), name, |export: Option<&_>| {
            export.is_some_and(|e| read(e).status.phase.as_deref() == Some("Ready"))
        });
        match tokio::time::timeout(READY_WAIT, ready).await {
            Ok(Ok(Some(export))) => Ok(read(&export)),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                let now = self
                    .exports(namespace)
                    .get_opt(name)
                    .await
                    .map_err(|e| self.refused(&e, "get", "virtualmachineexports", namespace))?;
                let condition = now
                    .as_ref()
                    .map(read)
                    .and_then(|e| e.status.conditions.into_iter().find(|c| c.type_ == "Ready"))
                    .unwrap_or_default();
                Err(HarvesterError::ExportNotReady {
                    url: self.url.clone(),
                    export: format!("{namespace}/{name}"),
                    waited: READY_WAIT.as_secs(),
                    reason: condition.reason,
                    message: condition.message,
                })
            }
        }
    }

    fn exports(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            namespace,
            &model::virtual_machine_exports(),
        )
    }

    /// A client for the downloads: no overall timeout (a volume takes as
    /// long as it takes), only an idle one.
    fn transfer_client(&self, ca_pem: Option<&str>) -> Result<reqwest::Client, HarvesterError> {
        let invalid = |detail: String| HarvesterError::InvalidCaBundle {
            url: self.url.clone(),
            detail,
        };
        let tls = vmm_core::tls::client_config(ca_pem, self.insecure).map_err(|e| invalid(e.0))?;
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| invalid(e.to_string()))
    }
}

impl ReadyExport {
    /// The raw bytes of `volume`, from its start.
    pub async fn open(&self, volume: &ExportedVolume) -> io::Result<ByteStream> {
        let response = self
            .http
            .get(&volume.url)
            .header(TOKEN_HEADER, &self.token)
            .send()
            .await
            .map_err(|e| io::Error::other(vmm_core::tls::chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(io::Error::other(format!(
                "the export server answered {status} for volume {}{}",
                volume.name,
                if status == reqwest::StatusCode::UNAUTHORIZED {
                    ": it refused the export's token (was the token Secret changed or deleted?)"
                } else {
                    ""
                }
            )));
        }
        let bytes = response.bytes_stream().map_err(io::Error::other).boxed();
        Ok(if volume.gzip { gunzip(bytes) } else { bytes })
    }
}

/// The raw link of a volume, else its gzip one; an archive is refused.
fn choose_format(export: &str, volume: &Volume) -> Result<ExportedVolume, HarvesterError> {
    let link = |format: &str| {
        volume
            .formats
            .iter()
            .find(|f| f.format == format)
            .map(|f| f.url.clone())
    };
    let (url, gzip) = match (link("raw"), link("gzip")) {
        (Some(url), _) => (url, false),
        (None, Some(url)) => (url, true),
        (None, None) => {
            return Err(HarvesterError::ExportFormatUnsupported {
                export: export.to_owned(),
                volume: volume.name.clone(),
                formats: volume
                    .formats
                    .iter()
                    .map(|f| f.format.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    Ok(ExportedVolume {
        name: volume.name.clone(),
        url,
        gzip,
    })
}

/// Inflates a gzip stream as it arrives; a stream cut short is an error.
fn gunzip(compressed: ByteStream) -> ByteStream {
    let decoder = flate2::write::GzDecoder::new(Vec::new());
    stream::try_unfold(
        (compressed, Some(decoder)),
        |(mut compressed, decoder)| async move {
            let Some(mut decoder) = decoder else {
                return Ok(None);
            };
            loop {
                match compressed.next().await {
                    Some(chunk) => {
                        decoder.write_all(&chunk?)?;
                        let out = std::mem::take(decoder.get_mut());
                        if !out.is_empty() {
                            return Ok(Some((Bytes::from(out), (compressed, Some(decoder)))));
                        }
                    }
                    None => {
                        let rest = decoder.finish()?;
                        return Ok(Some((Bytes::from(rest), (compressed, None))));
                    }
                }
            }
        },
    )
    .boxed()
}

/// The token Secret of export `name`.
fn token_secret(name: &str) -> String {
    format!("{name}-token")
}

/// 32 random bytes as hex.
fn new_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is read of a VirtualMachineExport.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Export {
    status: Status,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Status {
    phase: Option<String>,
    links: Links,
    conditions: Vec<Condition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Links {
    external: Option<Link>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Link {
    cert: String,
    volumes: Vec<Volume>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Volume {
    name: String,
    formats: Vec<Format>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Format {
    format: String,
    url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    reason: String,
    message: String,
}

/// An export as far as it is read; one KubeVirt wrote otherwise reads as
/// not ready.
fn read(export: &DynamicObject) -> Export {
    serde_json::from_value(export.data.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn volume(formats: &[&str]) -> Volume {
        Volume {
            name: "web-root".into(),
            formats: formats
                .iter()
                .map(|f| Format {
                    format: (*f).into(),
                    url: format!("https://x/{f}"),
                })
                .collect(),
        }
    }

    #[test]
    fn raw_is_preferred_then_gzip_and_archives_are_refused() {
        let pick = |formats: &[&str]| choose_format("vms/e", &volume(formats));
        assert_eq!(pick(&["gzip", "raw"]).unwrap().url, "https://x/raw");
        let gzip = pick(&["gzip", "tar.gz"]).unwrap();
        assert!(gzip.gzip && gzip.url == "https://x/gzip");
        let refused = pick(&["dir", "tar.gz"]).unwrap_err().to_string();
        assert!(
            refused.contains("web-root") && refused.contains("dir, tar.gz"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn gzip_is_inflated_chunk_by_chunk_and_a_cut_stream_fails() {
        let raw: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&raw).unwrap();
        let gz = encoder.finish().unwrap();
        let chunks = |bytes: &[u8]| -> ByteStream {
            let chunks: Vec<io::Result<Bytes>> = bytes
                .chunks(4096)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            stream::iter(chunks).boxed()
        };
        let inflated: Vec<Bytes> = gunzip(chunks(&gz)).try_collect().await.unwrap();
        assert_eq!(inflated.concat(), raw);
        let cut: Result<Vec<Bytes>, _> = gunzip(chunks(&gz[..gz.len() / 2])).try_collect().await;
        assert!(cut.is_err(), "a truncated gzip stream must fail");
    }
}
