//! Reading the inventory and keeping it fresh by polling, each service by
//! the cheapest change signal it offers: servers through Nova's
//! `changes-since`, which also lists the servers deleted since; volumes
//! through Cinder's `updated_at` filter (microversion 3.60) and networks and
//! ports through Neutron's `changed_since`, which list no deletions, so
//! each poll also lists their ids alone (Cinder's summary list, Neutron's
//! `fields=id`). A Cinder without 3.60 has its volumes listed in full. Only
//! what changed is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use vmm_core::{InventoryEvent, Reported};

use crate::model::{Inventory, Port};
use crate::{OpenstackClient, OpenstackError, ServiceKind};

/// Items per page asked of Nova and Cinder (Nova caps it at its
/// `max_limit`, 1000 by default).
const PAGE_SIZE: usize = 1000;
/// A change filter reaches this far before the previous answer, so a
/// change in the same second as that answer is not missed.
const SINCE_OVERLAP: SignedDuration = SignedDuration::from_secs(2);

/// A collection that lists what changed since a time but not what was
/// deleted.
struct Collection {
    service: ServiceKind,
    key: &'static str,
    /// Every item in full.
    all: &'static str,
    /// Every item's id (and little else).
    ids: &'static str,
    /// The items changed since the time appended.
    changed: &'static str,
    /// The microversion `changed` needs.
    version: Option<&'static str>,
}

const VOLUMES: Collection = Collection {
    service: ServiceKind::BlockStorage,
    key: "volumes",
    all: "volumes/detail?limit=1000",
    ids: "volumes?limit=1000",
    changed: "volumes/detail?limit=1000&updated_at=gte:",
    version: Some("volume 3.60"),
};

const NETWORKS: Collection = Collection {
    service: ServiceKind::Network,
    key: "networks",
    all: "v2.0/networks?",
    ids: "v2.0/networks?fields=id",
    changed: "v2.0/networks?changed_since=",
    version: None,
};

const PORTS: Collection = Collection {
    service: ServiceKind::Network,
    key: "ports",
    all: "v2.0/ports?",
    ids: "v2.0/ports?fields=id",
    changed: "v2.0/ports?changed_since=",
    version: None,
};

/// Where a collection's next poll starts.
#[derive(Clone, Copy, Default)]
struct Mark {
    /// The service's clock at the previous answer; `None` before the first.
    since: Option<Timestamp>,
    /// The service refused the change filter: list in full.
    unfiltered: bool,
}

/// Every collection's mark, and the ports by id (the inventory files them
/// by server).
#[derive(Default)]
struct Marks {
    servers: Option<Timestamp>,
    volumes: Mark,
    networks: Mark,
    ports: Mark,
    ports_by_id: BTreeMap<String, Port>,
}

impl OpenstackClient {
    /// Every server, volume, network and port of the project, read now.
    pub async fn inventory(&self) -> Result<Inventory, OpenstackError> {
        let mut inventory = Inventory::default();
        self.refresh(&mut inventory, &mut Marks::default()).await?;
        Ok(inventory)
    }

    /// Sends every VM and network, then [`InventoryEvent::Synced`], then,
    /// every `interval`, what changed and [`InventoryEvent::Current`], until
    /// `events` is closed (`Ok`) or the cloud fails (`Err`).
    pub async fn watch(
        &self,
        events: mpsc::Sender<InventoryEvent>,
        interval: Duration,
    ) -> Result<(), OpenstackError> {
        let mut inventory = Inventory::default();
        let mut sent = Reported::default();
        let mut marks = Marks::default();
        self.refresh(&mut inventory, &mut marks).await?;
        if !sent
            .report(
                inventory.vms(),
                inventory.network_specs(),
                &events,
                InventoryEvent::Synced,
            )
            .await
        {
            return Ok(());
        }
        loop {
            tokio::select! {
                () = events.closed() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
            self.refresh(&mut inventory, &mut marks).await?;
            if !sent
                .report(
                    inventory.vms(),
                    inventory.network_specs(),
                    &events,
                    InventoryEvent::Current,
                )
                .await
            {
                return Ok(());
            }
        }
    }

    /// Brings `inventory` up to date from `marks` (everything, the first
    /// time) and moves the marks on.
    async fn refresh(
        &self,
        inventory: &mut Inventory,
        marks: &mut Marks,
    ) -> Result<(), OpenstackError> {
        let query = match marks.servers {
            Some(since) => format!("&changes-since={}", stamp(since)),
            None => String::new(),
        };
        let (servers, now) = self
            .list_raw(
                ServiceKind::Compute,
                &format!("servers/detail?limit={PAGE_SIZE}{query}"),
                "servers",
                None,
            )
            .await?;
        if marks.servers.is_none() {
            inventory.servers.clear();
        }
        marks.servers = Some(now);
        for server in servers {
            let id = id_of(&server);
            // Nova lists deleted servers under changes-since, with a status
            // of DELETED (or SOFT_DELETED while they can be restored).
            if matches!(server["status"].as_str(), Some("DELETED" | "SOFT_DELETED")) {
                inventory.servers.remove(&id);
                continue;
            }
            inventory
                .servers
                .insert(id, self.parse(ServiceKind::Compute, "servers", server)?);
        }
        self.refresh_collection(&VOLUMES, &mut marks.volumes, &mut inventory.volumes)
            .await?;
        self.refresh_collection(&NETWORKS, &mut marks.networks, &mut inventory.networks)
            .await?;
        self.refresh_collection(&PORTS, &mut marks.ports, &mut marks.ports_by_id)
            .await?;
        inventory.set_ports(marks.ports_by_id.values().cloned().collect());
        Ok(())
    }

    /// Brings `items` (by id) up to date: in full the first time, or when
    /// the service refuses the change filter; else the items changed since
    /// the mark, and the ids of all to drop the deleted.
    async fn refresh_collection<T: DeserializeOwned>(
        &self,
        collection: &Collection,
        mark: &mut Mark,
        items: &mut BTreeMap<String, T>,
    ) -> Result<(), OpenstackError> {
        let Collection {
            service,
            key,
            version,
            ..
        } = *collection;
        if let (Some(since), false) = (mark.since, mark.unfiltered) {
            let path = format!("{}{}", collection.changed, stamp(since));
            match self.list_raw(service, &path, key, version).await {
                Ok((changed, now)) => {
                    let (all, _) = self.list_raw(service, collection.ids, key, None).await?;
                    let present: BTreeSet<String> = all.iter().map(id_of).collect();
                    for item in changed {
                        items.insert(id_of(&item), self.parse(service, key, item)?);
                    }
                    items.retain(|id, _| present.contains(id));
                    mark.since = Some(now);
                    return Ok(());
                }
                // An older Cinder: no such microversion, or no such filter.
                Err(OpenstackError::Api {
                    status: 400 | 404 | 406,
                    detail,
                    ..
                }) if version.is_some() => {
                    tracing::info!(%detail, "{} lists no {key} changed since a time: listing them in full", service.describe());
                    mark.unfiltered = true;
                }
                Err(error) => return Err(error),
            }
        }
        let (all, now) = self.list_raw(service, collection.all, key, None).await?;
        *items = all
            .into_iter()
            .map(|item| Ok((id_of(&item), self.parse(service, key, item)?)))
            .collect::<Result<_, OpenstackError>>()?;
        mark.since = Some(now);
        Ok(())
    }

    /// Every item of a paged collection (`key`), read as `T`.
    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        service: ServiceKind,
        path: &str,
        key: &str,
    ) -> Result<Vec<T>, OpenstackError> {
        let (items, _) = self.list_raw(service, path, key, None).await?;
        items
            .into_iter()
            .map(|item| self.parse(service, key, item))
            .collect()
    }

    pub(crate) fn parse<T: DeserializeOwned>(
        &self,
        service: ServiceKind,
        key: &str,
        item: Value,
    ) -> Result<T, OpenstackError> {
        let id = item["id"].as_str().unwrap_or_default().to_owned();
        serde_json::from_value(item).map_err(|e| OpenstackError::Malformed {
            url: self.endpoints().url(service).to_owned(),
            call: format!("list {key}"),
            detail: format!("item {id}: {e}"),
        })
    }

    /// The items of a collection, following its `<key>_links` `next` with a
    /// marker, and the service's clock at the first answer (its `Date`).
    /// `version`: the microversion to ask for, if any.
    async fn list_raw(
        &self,
        service: ServiceKind,
        path: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<(Vec<Value>, Timestamp), OpenstackError> {
        let call = format!("list {key}");
        let separator = if path.contains('?') { "&" } else { "?" };
        let mut items = Vec::new();
        let mut clock = None;
        loop {
            let page_path = match items.last().and_then(|item: &Value| item["id"].as_str()) {
                Some(marker) => format!("{path}{separator}marker={marker}"),
                None => path.to_owned(),
            };
            let response = self.send_get(service, &page_path, &call, version).await?;
            clock.get_or_insert_with(|| server_clock(&response));
            let url = response.url().to_string();
            let mut page: Value = response
                .json()
                .await
                .map_err(|e| OpenstackError::Malformed {
                    url,
                    call: call.clone(),
                    detail: e.to_string(),
                })?;
            // Nova, Cinder and Neutron link the next page in `<key>_links`;
            // Glance in a top-level `next`.
            let more = page[format!("{key}_links")]
                .as_array()
                .is_some_and(|links| links.iter().any(|l| l["rel"] == "next"))
                || page["next"].is_string();
            let page_items = match page[key].take() {
                Value::Array(page_items) => page_items,
                _ => Vec::new(),
            };
            let empty = page_items.is_empty();
            items.extend(page_items);
            if !more || empty {
                return Ok((items, clock.unwrap_or_else(Timestamp::now)));
            }
        }
    }
}

/// A change filter's time: `since`, less the overlap, as the services
/// read it.
fn stamp(since: Timestamp) -> String {
    since
        .saturating_sub(SINCE_OVERLAP)
        .unwrap_or(since)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// An item's `id`; empty when it has none.
pub(crate) fn id_of(item: &Value) -> String {
    item["id"].as_str().unwrap_or_default().to_owned()
}

/// The time a service answered at, by its `Date` header (its own clock, so
/// `changes-since` does not depend on ours); ours when it sent none.
fn server_clock(response: &reqwest::Response) -> Timestamp {
    response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|date| date.to_str().ok())
        .and_then(|date| k8s_openapi::jiff::fmt::rfc2822::parse(date).ok())
        .map_or_else(Timestamp::now, |zoned| zoned.timestamp())
}
