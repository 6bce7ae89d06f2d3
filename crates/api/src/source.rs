//! Sources: where VMs come from. One CRD per kind of source, all in
//! `source.harvesterhci.io/v1`, sharing how they connect and what they report.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "source.harvesterhci.io";

/// The kinds of source an import job can name in `spec.sourceCluster.kind`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum SourceKind {
    Vsphere,
    Openstack,
    Harvester,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [Self::Vsphere, Self::Openstack, Self::Harvester];

    /// The kind as the API spells it: `Vsphere`, the CRD's kind and what
    /// `spec.sourceCluster.kind` names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vsphere => "Vsphere",
            Self::Openstack => "Openstack",
            Self::Harvester => "Harvester",
        }
    }

    /// The CRD's plural resource name: `vspheres`.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Vsphere => "vspheres",
            Self::Openstack => "openstacks",
            Self::Harvester => "harvesters",
        }
    }
}

/// A source of any kind, read through [`SourceKind::api_resource`]: what
/// every kind shares (how to connect; the status), and the kind's own fields
/// for its provider.
pub type AnySource = kube::core::Object<SourceSpec, SourceStatus>;

/// The spec of a source of any kind: the [`Connection`] every kind has, and
/// the rest of the spec as JSON, which only the kind's provider reads (with
/// [`settings`](Self::settings)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    #[serde(flatten)]
    pub connection: Connection,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl SourceSpec {
    /// The kind's own fields, read as `T` (e.g. [`OpenstackSettings`]).
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(serde_json::Value::Object(self.rest.clone()))
    }
}

impl SourceKind {
    /// The kind's resource, to read it as an [`AnySource`].
    pub fn api_resource(self) -> kube::core::ApiResource {
        kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(GROUP, "v1", self.as_str()),
            self.plural(),
        )
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach a source and prove who we are. Flattened into each kind's spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.caBundle) && has(self.insecureSkipVerify) && self.insecureSkipVerify)")
    .message("set either caBundle or insecureSkipVerify, not both").field_path(".insecureSkipVerify"))]
pub struct Connection {
    /// URL of the source's API: the vCenter/ESXi SDK URL (`https://vcenter.example.com/sdk`),
    /// the Keystone v3 auth URL, or the remote Harvester's Kubernetes API server.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''")
        .message("must be an http(s) URL such as https://vcenter.example.com/sdk"))]
    pub endpoint: String,

    /// The Secret holding the credentials. It must be in the source's own namespace.
    pub credentials: SecretReference,

    /// PEM certificates that sign the endpoint's TLS certificate, when it is not
    /// signed by a public CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,

    /// Accept any TLS certificate from the endpoint. Only for tests and labs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// A reference to a Secret in the same namespace as the object that holds it.
/// There is deliberately no namespace field: a source can never read another
/// namespace's Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct SecretReference {
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')")
        .message("must be the name of a Secret (lowercase DNS-1123 subdomain)"))]
    pub name: String,
}

/// What every source reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// `Ready` says whether the source can be reached and logged in to; its reason
    /// and message say what to fix when it cannot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Product and version the endpoint reports, e.g. `VMware vCenter Server 8.0.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_version: Option<String>,
    /// How much inventory the source holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryCounts>,
    /// When the inventory was last read in full or brought up to date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryCounts {
    pub virtual_machines: i64,
    pub networks: i64,
}

/// A VMware vSphere source: a vCenter or an ESXi host. The credentials Secret holds
/// `username` and `password`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "source.harvesterhci.io",
    version = "v1",
    kind = "Vsphere",
    shortname = "vsrc",
    namespaced,
    status = "SourceStatus",
    category = "migration",
    derive = "PartialEq",
    doc = "A VMware vSphere source (vCenter or ESXi) whose VMs can be browsed and imported.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Datacenter",
        type_ = "string",
        json_path = ".spec.datacenter",
        priority = 1
    ),
    printcolumn(
        name = "VMs",
        type_ = "integer",
        json_path = ".status.inventory.virtualMachines",
        priority = 1
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VsphereSpec {
    #[serde(flatten)]
    pub connection: Connection,
    /// Limit the source to one datacenter (its name or inventory path); all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub datacenter: Option<String>,
}

/// An OpenStack source. The credentials Secret holds either `username`,
/// `password` (and optionally `userDomain`), or `applicationCredentialId` and
/// `applicationCredentialSecret`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "source.harvesterhci.io",
    version = "v1",
    kind = "Openstack",
    shortname = "osrc",
    namespaced,
    status = "SourceStatus",
    category = "migration",
    derive = "PartialEq",
    doc = "An OpenStack cloud (Keystone v3) whose servers can be browsed and imported.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Region",
        type_ = "string",
        json_path = ".spec.region",
        priority = 1
    ),
    printcolumn(
        name = "VMs",
        type_ = "integer",
        json_path = ".status.inventory.virtualMachines",
        priority = 1
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct OpenstackSpec {
    #[serde(flatten)]
    pub connection: Connection,
    #[serde(flatten)]
    pub settings: OpenstackSettings,
}

/// Where in an OpenStack cloud to work: what the provider reads from a
/// [`SourceSpec`]'s settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenstackSettings {
    /// Region to use from the service catalog; the first one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub region: Option<String>,
    /// Project (tenant) name to scope to. Not used with application credentials,
    /// which carry their own scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub project: Option<String>,
    /// Domain of the project and user; `Default` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub domain: Option<String>,
    /// Which of the catalog's endpoints to call: `public` (the default) or
    /// `internal`, for a cluster inside the cloud's own network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
    /// How often the inventory is read for changes, in seconds; 10 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub poll_interval_seconds: Option<u16>,
}

/// An endpoint interface of the OpenStack service catalog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointInterface {
    #[default]
    Public,
    Internal,
}

impl EndpointInterface {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
        }
    }
}

/// Another Harvester cluster. The credentials Secret holds either `kubeconfig` or
/// `token`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "source.harvesterhci.io",
    version = "v1",
    kind = "Harvester",
    shortname = "hsrc",
    namespaced,
    status = "SourceStatus",
    category = "migration",
    derive = "PartialEq",
    doc = "Another Harvester cluster whose VMs can be browsed and imported.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "VMs",
        type_ = "integer",
        json_path = ".status.inventory.virtualMachines",
        priority = 1
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HarvesterSpec {
    #[serde(flatten)]
    pub connection: Connection,
    #[serde(flatten)]
    pub settings: HarvesterSettings,
}

/// What of the remote cluster to read: what the provider reads from a
/// [`SourceSpec`]'s settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HarvesterSettings {
    /// The remote namespaces whose VMs and networks are read; every
    /// namespace the credentials may list when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    pub namespaces: Vec<String>,
}

/// What every kind of source shares, for code that handles them alike.
pub trait Source {
    const KIND: SourceKind;
    fn connection(&self) -> &Connection;
    fn source_status(&self) -> Option<&SourceStatus>;
}

macro_rules! source {
    ($kind:ident) => {
        impl Source for $kind {
            const KIND: SourceKind = SourceKind::$kind;
            fn connection(&self) -> &Connection {
                &self.spec.connection
            }
            fn source_status(&self) -> Option<&SourceStatus> {
                self.status.as_ref()
            }
        }
    };
}
source!(Vsphere);
source!(Openstack);
source!(Harvester);

#[cfg(test)]
mod tests {
    use kube::Resource;

    use super::*;

    /// The names written out above are the ones serde and the CRDs use.
    #[test]
    fn kind_names_match_serde_and_the_crds() {
        let crd_names = [
            (Vsphere::kind(&()), Vsphere::plural(&())),
            (Openstack::kind(&()), Openstack::plural(&())),
            (Harvester::kind(&()), Harvester::plural(&())),
        ];
        for (kind, (crd_kind, crd_plural)) in SourceKind::ALL.into_iter().zip(crd_names) {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(kind.as_str(), crd_kind);
            assert_eq!(kind.plural(), crd_plural);
        }
    }

    /// Every kind reads as an [`AnySource`]: its connection, status, and
    /// the kind's own settings for its provider.
    #[test]
    fn every_kind_reads_as_any_source() {
        let vsphere = Vsphere::new(
            "vc",
            VsphereSpec {
                connection: serde_json::from_value(serde_json::json!({
                    "endpoint": "https://vc/sdk", "credentials": {"name": "creds"}
                }))
                .unwrap(),
                datacenter: Some("DC0".into()),
            },
        );
        let any: AnySource =
            serde_json::from_value(serde_json::to_value(&vsphere).unwrap()).unwrap();
        assert_eq!(any.spec.connection, vsphere.spec.connection);
        assert_eq!(any.spec.rest.get("datacenter"), Some(&"DC0".into()));
        let openstack = Openstack::new(
            "os",
            OpenstackSpec {
                connection: vsphere.spec.connection.clone(),
                settings: OpenstackSettings {
                    region: Some("RegionTwo".into()),
                    interface: Some(EndpointInterface::Internal),
                    ..Default::default()
                },
            },
        );
        let any: AnySource =
            serde_json::from_value(serde_json::to_value(&openstack).unwrap()).unwrap();
        assert_eq!(any.spec.connection, openstack.spec.connection);
        assert_eq!(
            any.spec.settings::<OpenstackSettings>().unwrap(),
            openstack.spec.settings
        );
        assert_eq!(SourceKind::Vsphere.api_resource().plural, "vspheres");
        assert_eq!(
            SourceKind::Openstack.api_resource().api_version,
            "source.harvesterhci.io/v1"
        );
    }
}
