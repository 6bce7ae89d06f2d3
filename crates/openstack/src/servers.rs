//! One server: found by name or id, with the volumes, ports and networks
//! its VM is made of, and stopped.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use vmm_api::inventory::{PowerState, VirtualMachineSpec};

use crate::model::{Inventory, Server};
use crate::{OpenstackClient, OpenstackError, ServiceKind};

/// How often a stopping server is looked at.
const STOP_POLL: Duration = Duration::from_secs(2);

impl OpenstackClient {
    /// Every server named exactly `name`, by id.
    pub async fn find_servers(&self, name: &str) -> Result<Vec<Server>, OpenstackError> {
        // Nova's name filter is a regular expression: anchor an escaped name.
        let pattern = format!("^{}$", regex_escape(name));
        let path = format!("servers/detail?name={}", url_encode(&pattern));
        let mut servers: Vec<Server> = self.list(ServiceKind::Compute, &path, "servers").await?;
        servers.retain(|s| s.name.as_deref() == Some(name));
        servers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(servers)
    }

    /// The server `id` as it is now.
    pub async fn server(&self, id: &str) -> Result<Server, OpenstackError> {
        let mut body: Value = self
            .get(ServiceKind::Compute, &format!("servers/{id}"), "GET server")
            .await
            .map_err(|e| self.not_found(e, id))?;
        self.parse(ServiceKind::Compute, "servers", body["server"].take())
    }

    /// The VM spec of `server`: its attached volumes, ports and their
    /// networks read now.
    pub async fn vm_spec(&self, server: Server) -> Result<VirtualMachineSpec, OpenstackError> {
        let mut inventory = Inventory::default();
        for attached in &server.os_extended_volumes_volumes_attached {
            let mut body: Value = self
                .get(
                    ServiceKind::BlockStorage,
                    &format!("volumes/{}", attached.id),
                    "GET volume",
                )
                .await?;
            let volume: crate::model::Volume =
                self.parse(ServiceKind::BlockStorage, "volumes", body["volume"].take())?;
            inventory.volumes.insert(volume.id.clone(), volume);
        }
        let ports = self
            .list(
                ServiceKind::Network,
                &format!("v2.0/ports?device_id={}", server.id),
                "ports",
            )
            .await?;
        inventory.set_ports(ports);
        let network_ids: Vec<String> = inventory
            .ports
            .values()
            .flatten()
            .filter_map(|p| p.network_id.clone())
            .collect();
        if !network_ids.is_empty() {
            let query: Vec<String> = network_ids.iter().map(|id| format!("id={id}")).collect();
            let networks: Vec<crate::model::NeutronNetwork> = self
                .list(
                    ServiceKind::Network,
                    &format!("v2.0/networks?{}", query.join("&")),
                    "networks",
                )
                .await?;
            inventory.networks = networks
                .into_iter()
                .filter_map(|n| Some((n.id.clone()?, n)))
                .collect();
        }
        Ok(inventory.vm(&server))
    }

    pub async fn power_state(&self, id: &str) -> Result<PowerState, OpenstackError> {
        let server = self.server(id).await?;
        Ok(Inventory::default().vm(&server).power_state)
    }

    /// Asks Nova to stop the server (`os-stop`: an ACPI shutdown, then off
    /// after the compute node's own timeout). A server already stopped is
    /// fine.
    pub async fn stop(&self, id: &str) -> Result<(), OpenstackError> {
        let action = format!("servers/{id}/action");
        match self
            .send(
                Method::POST,
                ServiceKind::Compute,
                &action,
                Some(&json!({"os-stop": null})),
                "stop server",
            )
            .await
        {
            Ok(_) => Ok(()),
            // 409: not in a state to stop, which includes already stopped.
            Err(OpenstackError::Api { status: 409, .. })
                if self.power_state(id).await? == PowerState::Off =>
            {
                Ok(())
            }
            Err(e) => Err(self.not_found(e, id)),
        }
    }

    /// Waits until the server is stopped; an error after `timeout`.
    pub async fn wait_stopped(&self, id: &str, timeout: Duration) -> Result<(), OpenstackError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let server = self.server(id).await?;
            if Inventory::default().vm(&server).power_state == PowerState::Off {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OpenstackError::StopTimeout {
                    url: self.endpoints().url(ServiceKind::Compute).to_owned(),
                    server: id.to_owned(),
                    status: serde_json::to_value(&server.status)
                        .ok()
                        .and_then(|s| s.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    /// A 404 about server `id` as [`OpenstackError::ServerNotFound`].
    fn not_found(&self, error: OpenstackError, id: &str) -> OpenstackError {
        match error {
            OpenstackError::Api {
                status: 404, url, ..
            } => OpenstackError::ServerNotFound {
                url,
                server: id.to_owned(),
            },
            other => other,
        }
    }
}

/// `text` with the characters a Python regular expression gives meaning to
/// escaped (Nova matches names with `re.search`).
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Percent-encodes a query value.
fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_anchored_patterns() {
        assert_eq!(regex_escape("web (1).example"), r"web \(1\)\.example");
        assert_eq!(url_encode("^a b$"), "%5Ea%20b%24");
        assert_eq!(url_encode("é"), "%C3%A9");
    }
}
