//! Keystone's service catalog, and choosing from it the endpoints the
//! provider calls: one per service it needs, in one region, on one
//! interface.

use serde::Deserialize;
use vmm_api::source::EndpointInterface;

/// A service of the catalog, as a token carries it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Service {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(from = "WireEndpoint")]
pub(crate) struct Endpoint {
    pub interface: String,
    pub region_id: Option<String>,
    pub url: String,
}

/// An endpoint as Keystone sends it: `region_id` and `region` both (older
/// Keystones only the latter).
#[derive(Deserialize)]
struct WireEndpoint {
    interface: String,
    region_id: Option<String>,
    region: Option<String>,
    url: String,
}

impl From<WireEndpoint> for Endpoint {
    fn from(wire: WireEndpoint) -> Self {
        Self {
            interface: wire.interface,
            region_id: wire.region_id.or(wire.region),
            url: wire.url,
        }
    }
}

/// The services the provider needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    Compute,
    BlockStorage,
    Image,
    Network,
}

impl ServiceKind {
    const ALL: [Self; 4] = [
        Self::Compute,
        Self::BlockStorage,
        Self::Image,
        Self::Network,
    ];

    /// The catalog types that name the service, preferred first.
    fn catalog_types(self) -> &'static [&'static str] {
        match self {
            Self::Compute => &["compute"],
            Self::BlockStorage => &["block-storage", "volumev3", "volume"],
            Self::Image => &["image"],
            Self::Network => &["network"],
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Compute => "compute (Nova)",
            Self::BlockStorage => "block-storage (Cinder v3)",
            Self::Image => "image (Glance)",
            Self::Network => "network (Neutron)",
        }
    }
}

/// The endpoint URL of each service, without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub region: String,
    urls: [String; 4],
}

impl Endpoints {
    pub fn url(&self, service: ServiceKind) -> &str {
        &self.urls[service as usize]
    }
}

/// Why no endpoints could be chosen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Missing {
    Region {
        available: Vec<String>,
    },
    Service {
        service: ServiceKind,
        region: String,
    },
}

/// Chooses every service's endpoint on `interface` in `region`, or, when no
/// region is asked for, in the first region compute is offered in.
pub(crate) fn select(
    catalog: &[Service],
    region: Option<&str>,
    interface: EndpointInterface,
) -> Result<Endpoints, Missing> {
    let interface = interface.as_str();
    let region = match region {
        Some(region) => region.to_owned(),
        None => endpoints_of(catalog, ServiceKind::Compute)
            .find(|e| e.interface == interface)
            .and_then(|e| e.region_id.clone())
            .ok_or_else(|| Missing::Service {
                service: ServiceKind::Compute,
                region: "any".into(),
            })?,
    };
    let mut regions: Vec<String> = catalog
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter_map(|e| e.region_id.clone())
        .collect();
    regions.sort();
    regions.dedup();
    if !regions.contains(&region) {
        return Err(Missing::Region { available: regions });
    }
    let url = |service: ServiceKind| {
        endpoints_of(catalog, service)
            .find(|e| e.interface == interface && e.region_id.as_deref() == Some(&region))
            .map(|e| e.url.trim_end_matches('/').to_owned())
            .ok_or_else(|| Missing::Service {
                service,
                region: region.clone(),
            })
    };
    let [compute, block_storage, image, network] = ServiceKind::ALL;
    let urls = [
        url(compute)?,
        url(block_storage)?,
        url(image)?,
        url(network)?,
    ];
    Ok(Endpoints { region, urls })
}

/// The endpoints of every catalog type naming `service`, preferred type
/// first.
fn endpoints_of(catalog: &[Service], service: ServiceKind) -> impl Iterator<Item = &Endpoint> {
    service
        .catalog_types()
        .iter()
        .flat_map(|kind| catalog.iter().filter(move |s| s.kind == *kind))
        .flat_map(|s| &s.endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<Service> {
        serde_json::from_value(serde_json::json!([
            {"type": "identity", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "url": "http://k/v3/"}]},
            {"type": "compute", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://nova1/v2.1/"},
                {"interface": "internal", "region_id": "RegionOne", "url": "http://nova1-int/v2.1"},
                {"interface": "public", "region_id": "RegionTwo", "url": "http://nova2/v2.1"}]},
            {"type": "volumev3", "endpoints": [
                {"interface": "public", "region": "RegionOne", "url": "http://cinder1/v3/p"},
                {"interface": "internal", "region_id": "RegionOne", "url": "http://cinder1-int/v3/p"},
                {"interface": "public", "region_id": "RegionTwo", "url": "http://cinder2/v3/p"}]},
            {"type": "block-storage", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "url": "http://bs1/v3/p"},
                {"interface": "internal", "region_id": "RegionOne", "url": "http://bs1-int/v3/p"}]},
            {"type": "image", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "url": "http://glance1"},
                {"interface": "internal", "region_id": "RegionOne", "url": "http://glance1-int"},
                {"interface": "public", "region_id": "RegionTwo", "url": "http://glance2"}]},
            {"type": "network", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "url": "http://neutron1"},
                {"interface": "internal", "region_id": "RegionOne", "url": "http://neutron1-int"}]}
        ]))
        .unwrap()
    }

    #[test]
    fn chooses_by_region_and_interface() {
        use EndpointInterface::*;
        let catalog = catalog();
        let first = select(&catalog, None, Public).unwrap();
        assert_eq!(first.region, "RegionOne");
        assert_eq!(first.url(ServiceKind::Compute), "http://nova1/v2.1");
        assert_eq!(first.url(ServiceKind::BlockStorage), "http://bs1/v3/p");
        assert_eq!(first.url(ServiceKind::Image), "http://glance1");
        let internal = select(&catalog, Some("RegionOne"), Internal).unwrap();
        assert_eq!(internal.url(ServiceKind::Network), "http://neutron1-int");
        assert_eq!(
            select(&catalog, Some("RegionTwo"), Public),
            Err(Missing::Service {
                service: ServiceKind::Network,
                region: "RegionTwo".into()
            }),
        );
        let mut two = catalog.clone();
        two[5].endpoints[0].region_id = Some("RegionTwo".into());
        let chosen = select(&two, Some("RegionTwo"), Public).unwrap();
        assert_eq!(
            chosen.url(ServiceKind::BlockStorage),
            "http://cinder2/v3/p",
            "volumev3 where block-storage has no endpoint in the region"
        );
        assert_eq!(
            select(&catalog, Some("RegionThree"), Public),
            Err(Missing::Region {
                available: vec!["RegionOne".into(), "RegionTwo".into()]
            })
        );
    }
}
