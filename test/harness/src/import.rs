//! Import jobs as a user drives them: the networks they map to, and waiting
//! with kubectl until a job has ended.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::namespace::TestNamespace;

/// A bridge NetworkAttachmentDefinition on `vlan`, as Harvester's UI makes one.
pub fn nad(namespace: &str, name: &str, vlan: u16) -> Value {
    let config = json!({"cniVersion": "0.3.1", "name": name, "type": "bridge",
        "bridge": "mgmt-br", "promiscMode": true, "vlan": vlan, "ipam": {}});
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": config.to_string()}})
}

/// The job (`kubectl get -o json`) once its phase is Succeeded or Failed.
pub fn wait_finished(ns: &TestNamespace, job: &str, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = ns.kubectl(["get", "importjob", job, "-o", "json"]);
        let now: Value = serde_json::from_str(out.ok()?)?;
        let phase = now["status"]["phase"].as_str().unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!(
                "job {job} still running after {timeout:?}: {}",
                now["status"]
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
