//! Names and URLs as KubeVirt forms them: the exporter's paths
//! (`export.go`), the links (`links.go`: `"https://" + path.Join(host and
//! base, path)`, so a trailing slash is dropped), and the names made with
//! openshift's `naming.GetName`.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{Value, json};

use super::FORMATS_ANNOTATION;

/// A format a volume is exported in (`status.links.*.volumes[].formats[].format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    /// `raw`: the disk image.
    Raw,
    /// `gzip`: the disk image, gzipped.
    Gzip,
    /// `dir`: the volume's root as a file server.
    Dir,
    /// `tar.gz`: the volume's root, tarred and gzipped.
    TarGz,
}

impl ExportFormat {
    /// All of them, in the order KubeVirt lists them.
    pub const ALL: [ExportFormat; 4] = [Self::Raw, Self::Gzip, Self::Dir, Self::TarGz];

    /// The name in the export's status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Gzip => "gzip",
            Self::Dir => "dir",
            Self::TarGz => "tar.gz",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The exporter's path for `claim` in this format (`rawURI`,
    /// `rawGzipURI`, `dirURI`, `archiveURI`).
    pub(super) fn path(self, claim: &str) -> String {
        match self {
            Self::Raw => format!("/volumes/{claim}/disk.img"),
            Self::Gzip => format!("/volumes/{claim}/disk.img.gz"),
            Self::Dir => format!("/volumes/{claim}/dir/"),
            Self::TarGz => format!("/volumes/{claim}/disk.tar.gz"),
        }
    }
}

/// The formats a claim is exported in: [`FORMATS_ANNOTATION`], else raw
/// and gzip.
pub(super) fn formats(pvc: &PersistentVolumeClaim) -> Vec<ExportFormat> {
    let chosen = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FORMATS_ANNOTATION));
    let Some(chosen) = chosen else {
        return vec![ExportFormat::Raw, ExportFormat::Gzip];
    };
    let chosen: Vec<_> = chosen
        .split(',')
        .filter_map(|f| ExportFormat::parse(f.trim()))
        .collect();
    ExportFormat::ALL
        .into_iter()
        .filter(|f| chosen.contains(f))
        .collect()
}

/// One volume of an export: its claim and formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExportedVolume {
    pub claim: String,
    pub formats: Vec<ExportFormat>,
}

/// `/api/export.kubevirt.io/v1beta1/namespaces/<ns>/virtualmachineexports/<name>`:
/// the external links' base path (`externalUrlLinkFormat`).
pub(super) fn external_base(namespace: &str, name: &str) -> String {
    format!("/api/export.kubevirt.io/v1beta1/namespaces/{namespace}/virtualmachineexports/{name}")
}

/// The internal links' host: the export's Service.
pub(super) fn internal_host(namespace: &str, service: &str) -> String {
    format!("{service}.{namespace}.svc")
}

/// A link (`VirtualMachineExportLink`) for `host_and_base` (no trailing
/// slash); a volume without formats is left out, as KubeVirt does.
pub(super) fn link(host_and_base: &str, cert: &str, volumes: &[ExportedVolume]) -> Value {
    let volumes: Vec<Value> = volumes
        .iter()
        .filter(|v| !v.formats.is_empty())
        .map(|v| {
            let formats: Vec<Value> = v
                .formats
                .iter()
                .map(|f| {
                    // path.Join drops the trailing slash of the dir path.
                    let path = f.path(&v.claim);
                    let url = format!("https://{host_and_base}{}", path.trim_end_matches('/'));
                    json!({"format": f.as_str(), "url": url})
                })
                .collect();
            json!({"name": v.claim, "formats": formats})
        })
        .collect();
    let mut link = json!({"cert": cert});
    if !volumes.is_empty() {
        link["volumes"] = Value::Array(volumes);
    }
    link
}

/// The export's Service, `virt-export-<name>` (`getExportServiceName`).
pub(super) fn service_name(export: &str) -> String {
    let mut suffix = export.replace('.', "-");
    // GetName would otherwise begin the name with "-".
    if suffix.len() == MAX_NAME - 10 {
        suffix.pop();
    }
    get_name("virt-export", &suffix, MAX_NAME)
}

/// The Secret KubeVirt makes when the export names none
/// (`getDefaultTokenSecretName`).
pub(super) fn token_secret_name(export: &str) -> String {
    get_name("export-token", export, MAX_NAME)
}

/// `validation.DNS1035LabelMaxLength`.
const MAX_NAME: usize = 63;

/// openshift's `naming.GetName`: `<base>-<suffix>`, or when too long the
/// base cut and an FNV-1a hash put in.
fn get_name(base: &str, suffix: &str, max: usize) -> String {
    let name = format!("{base}-{suffix}");
    if name.len() <= max {
        return name;
    }
    let cut = |s: &str, n: usize| s.get(..n.min(s.len())).unwrap_or(s).to_owned();
    match max.checked_sub(10 + suffix.len()) {
        None => {
            let short = format!("{}-{}", cut(base, max.saturating_sub(9)), fnv32a(&name));
            cut(&short, max)
        }
        Some(base_len) => format!("{}-{}-{suffix}", cut(base, base_len), fnv32a(base)),
    }
}

/// FNV-1a (32 bits) as 8 hex digits.
fn fnv32a(s: &str) -> String {
    let hash = s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_formed_as_kubevirt_forms_them() {
        let volumes = [ExportedVolume {
            claim: "web-root".into(),
            formats: ExportFormat::ALL.to_vec(),
        }];
        let link = link("h:1/api/x", "CA", &volumes);
        let urls: Vec<&str> = link["volumes"][0]["formats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                "https://h:1/api/x/volumes/web-root/disk.img",
                "https://h:1/api/x/volumes/web-root/disk.img.gz",
                "https://h:1/api/x/volumes/web-root/dir",
                "https://h:1/api/x/volumes/web-root/disk.tar.gz",
            ]
        );
        assert_eq!(link["cert"], "CA");
        assert!(super::link("h", "CA", &[]).get("volumes").is_none());
    }

    #[test]
    fn names_follow_openshift_naming() {
        assert_eq!(service_name("web"), "virt-export-web");
        assert_eq!(service_name("a.b"), "virt-export-a-b");
        assert_eq!(token_secret_name("web"), "export-token-web");
        // A suffix too long to keep: the base and a hash of the whole name.
        let long = "x".repeat(60);
        assert_eq!(
            token_secret_name(&long),
            format!("export-token-{}", fnv32a(&format!("export-token-{long}")))
        );
        // A suffix that fits: the base cut, a hash of the base, the suffix.
        let suffix = "y".repeat(51);
        assert_eq!(
            token_secret_name(&suffix),
            format!("ex-{}-{suffix}", fnv32a("export-token"))
        );
        assert_eq!(fnv32a(""), "811c9dc5");
        assert_eq!(fnv32a("a"), "e40c292c");
    }

    #[test]
    fn the_annotation_chooses_formats_in_kubevirt_order() {
        let mut pvc = PersistentVolumeClaim::default();
        assert_eq!(formats(&pvc), [ExportFormat::Raw, ExportFormat::Gzip]);
        pvc.metadata.annotations = Some(
            [(
                FORMATS_ANNOTATION.to_owned(),
                "tar.gz, dir,bogus".to_owned(),
            )]
            .into(),
        );
        assert_eq!(formats(&pvc), [ExportFormat::Dir, ExportFormat::TarGz]);
    }
}
