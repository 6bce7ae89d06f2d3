//! Reading the inventory and keeping it fresh by polling: servers through
//! Nova's `changes-since` (which also lists the servers deleted since), and
//! volumes, networks and ports listed in full, since Cinder and Neutron list
//! no deletions. Only what changed is reported.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use vmm_core::InventoryEvent;

use crate::model::Inventory;
use crate::{OpenstackClient, OpenstackError, ServiceKind};

/// Items per page asked of Nova and Cinder (Nova caps it at its
/// `max_limit`, 1000 by default).
const PAGE_SIZE: usize = 1000;
/// `changes-since` reaches this far before the previous poll's answer, so
/// a change in the same second as that answer is not missed.
const SINCE_OVERLAP: SignedDuration = SignedDuration::from_secs(2);

impl OpenstackClient {
    /// Every server, volume, network and port of the project, read now.
    pub async fn inventory(&self) -> Result<Inventory, OpenstackError> {
        let mut inventory = Inventory::default();
        self.refresh(&mut inventory, None).await?;
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
        let mut sent = Sent::default();
        let mut since = self.refresh(&mut inventory, None).await?;
        if !sent
            .report(&inventory, &events, InventoryEvent::Synced)
            .await
        {
            return Ok(());
        }
        loop {
            tokio::select! {
                () = events.closed() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
            since = self.refresh(&mut inventory, Some(since)).await?;
            if !sent
                .report(&inventory, &events, InventoryEvent::Current)
                .await
            {
                return Ok(());
            }
        }
    }

    /// Brings `inventory` up to date: the servers changed since `since`
    /// (all when `None`), everything else in full. Returns Nova's clock at
    /// the answer, the next `since`.
    async fn refresh(
        &self,
        inventory: &mut Inventory,
        since: Option<Timestamp>,
    ) -> Result<Timestamp, OpenstackError> {
        let mut query = String::new();
        if let Some(since) = since {
            let since = since.saturating_sub(SINCE_OVERLAP).unwrap_or(since);
            query = format!("&changes-since={}", since.strftime("%Y-%m-%dT%H:%M:%SZ"));
        }
        let (servers, now) = self
            .list_raw(
                ServiceKind::Compute,
                &format!("servers/detail?limit={PAGE_SIZE}{query}"),
                "servers",
            )
            .await?;
        if since.is_none() {
            inventory.servers.clear();
        }
        for server in servers {
            let id = server["id"].as_str().unwrap_or_default().to_owned();
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
        inventory.volumes = self
            .list(
                ServiceKind::BlockStorage,
                &format!("volumes/detail?limit={PAGE_SIZE}"),
                "volumes",
            )
            .await?
            .into_iter()
            .map(|volume: crate::model::Volume| (volume.id.clone(), volume))
            .collect();
        inventory.networks = self
            .list(ServiceKind::Network, "v2.0/networks?", "networks")
            .await?
            .into_iter()
            .filter_map(|network: crate::model::NeutronNetwork| {
                Some((network.id.clone()?, network))
            })
            .collect();
        let ports = self
            .list(ServiceKind::Network, "v2.0/ports?", "ports")
            .await?;
        inventory.set_ports(ports);
        Ok(now)
    }

    /// Every item of a paged collection (`key`), read as `T`.
    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        service: ServiceKind,
        path: &str,
        key: &str,
    ) -> Result<Vec<T>, OpenstackError> {
        let (items, _) = self.list_raw(service, path, key).await?;
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
    async fn list_raw(
        &self,
        service: ServiceKind,
        path: &str,
        key: &str,
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
            let response = self
                .send(Method::GET, service, &page_path, None, &call)
                .await?;
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

/// What a watch has reported, to report only changes.
#[derive(Default)]
struct Sent {
    vms: BTreeMap<String, vmm_api::inventory::VirtualMachineSpec>,
    networks: BTreeMap<String, vmm_api::inventory::NetworkSpec>,
}

impl Sent {
    /// Reports the difference between `inventory` and what was sent, then
    /// `done`. False when the receiver is gone.
    async fn report(
        &mut self,
        inventory: &Inventory,
        events: &mpsc::Sender<InventoryEvent>,
        done: InventoryEvent,
    ) -> bool {
        let networks = inventory.network_specs();
        let vms = inventory.vms();
        let mut changes = Vec::new();
        diff(
            &self.networks,
            &networks,
            &mut changes,
            InventoryEvent::Network,
            |id| InventoryEvent::NetworkRemoved { id },
        );
        diff(&self.vms, &vms, &mut changes, InventoryEvent::Vm, |id| {
            InventoryEvent::VmRemoved { id }
        });
        self.networks = networks;
        self.vms = vms;
        for event in changes.into_iter().chain([done]) {
            if events.send(event).await.is_err() {
                return false;
            }
        }
        true
    }
}

fn diff<T: Clone + PartialEq>(
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    changes: &mut Vec<InventoryEvent>,
    changed: impl Fn(T) -> InventoryEvent,
    removed: impl Fn(String) -> InventoryEvent,
) {
    for (id, spec) in after {
        if before.get(id) != Some(spec) {
            changes.push(changed(spec.clone()));
        }
    }
    for id in before.keys().filter(|id| !after.contains_key(*id)) {
        changes.push(removed(id.clone()));
    }
}
