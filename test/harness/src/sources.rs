//! Sources as the e2e suites make them and wait on them, and `kubectl get
//! -w` as people run it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::TestNamespace;

/// A Secret with `data` as its `stringData`.
pub fn secret(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data})
}

/// A source of `kind` (`Vsphere`, `Openstack`, `Harvester`) at `endpoint`
/// with the Secret `secret`, and the rest of its spec from `more` (an
/// object: `caBundle`, the kind's settings).
pub fn source(kind: &str, name: &str, endpoint: &str, secret: &str, more: Value) -> Value {
    let mut spec = json!({"endpoint": endpoint, "credentials": {"name": secret}});
    if let (Some(spec), Value::Object(more)) = (spec.as_object_mut(), more) {
        spec.extend(more);
    }
    json!({"apiVersion": "source.harvesterhci.io/v1", "kind": kind,
           "metadata": {"name": name}, "spec": spec})
}

/// A source's `Ready` condition (`null` before it has one).
pub fn ready_condition(source: &Value) -> Value {
    source["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default()
}

impl TestNamespace<'_> {
    /// Applies `objects` in this namespace, as one List.
    pub fn apply_all(&self, objects: &[Value]) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.apply(&list.to_string())
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The source `resource` (`harvesters.source.harvesterhci.io/x`) once
    /// its `Ready` reason is `reason`; panics after `timeout`.
    pub fn wait_for_ready_reason(&self, resource: &str, reason: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(["get", resource, "-o", "json"]);
            let source: Value = serde_json::from_str(out.expect_success()).unwrap();
            if ready_condition(&source)["reason"] == reason {
                return source;
            }
            assert!(
                Instant::now() < deadline,
                "{resource} never became {reason}: {}",
                source["status"]
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl TestNamespace<'_> {
    /// The items of `kubectl get <resource>` once there are `count`;
    /// panics after `timeout`.
    pub fn wait_for_list(&self, resource: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(["get", resource, "-o", "json"]);
            if let Ok(stdout) = out.ok() {
                let list: Value = serde_json::from_str(stdout).unwrap();
                let items = list["items"].as_array().cloned().unwrap_or_default();
                if items.len() == count {
                    return items;
                }
            }
            assert!(Instant::now() < deadline, "never {count} {resource}: {out}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `kubectl get <resource> -w --output-watch-events -o json` in a
/// namespace, its events kept as they come. Stopped on drop.
pub struct KubectlWatch {
    kubectl: Child,
    seen: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl KubectlWatch {
    pub fn start(ns: &TestNamespace<'_>, resource: &str) -> KubectlWatch {
        let cp = ns.control_plane();
        let mut kubectl = std::process::Command::new(cp.peers().kubectl())
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args(["get", resource, "-n", ns.name(), "-w"])
            .args(["--output-watch-events", "-o", "json"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let seen = Arc::new(Mutex::new(String::new()));
        let stdout = kubectl.stdout.take().expect("kubectl's stdout");
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    seen.lock().unwrap().push_str(&line);
                }
            })
        };
        KubectlWatch {
            kubectl,
            seen,
            reader: Some(reader),
        }
    }

    /// Every event so far (`{"type", "object"}`).
    pub fn events(&self) -> Vec<Value> {
        let text = self.seen.lock().unwrap().clone();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect()
    }

    /// Waits (blocking) until an event satisfies `found`, and prints how
    /// long that took as `what`; panics after `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, found: impl Fn(&Value) -> bool) {
        let started = Instant::now();
        loop {
            if self.events().iter().any(&found) {
                eprintln!("{what}: seen after {:?}", started.elapsed());
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "never saw {what}: {:?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KubectlWatch {
    fn drop(&mut self) {
        let _ = self.kubectl.kill();
        let _ = self.kubectl.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Each item of the JSON array `items` as an array of its `keys`' values
/// (`null` where one is missing): a list of specs compared in one line.
pub fn pluck(items: &Value, keys: &[&str]) -> Vec<Value> {
    items
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| Value::Array(keys.iter().map(|k| item[*k].clone()).collect()))
                .collect()
        })
        .unwrap_or_default()
}
