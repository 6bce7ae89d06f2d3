//! The controller binary reports each source's `Ready` condition through the
//! real kube-apiserver: a table of good and broken sources against vcsim, each
//! with the reason that names the fix, an Event, `observedGeneration`, and a
//! fixed Secret picked up without touching the source.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmm_testkit::servers::{ControllerServer, shared_controller};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim};

const WAIT: Duration = Duration::from_secs(90);

fn controller() -> &'static ControllerServer {
    shared_controller()
}

fn secret(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data})
}

fn vsphere(name: &str, endpoint: &str, secret: &str, ca: Option<&str>) -> Value {
    let mut spec = json!({"endpoint": endpoint, "credentials": {"name": secret}});
    if let Some(ca) = ca {
        spec["caBundle"] = json!(ca);
    }
    json!({"apiVersion": "source.harvesterhci.io/v1", "kind": "Vsphere",
           "metadata": {"name": name}, "spec": spec})
}

fn apply(ns: &TestNamespace, objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    ControlPlane::shared()
        .apply_yaml(ns.name(), &list.to_string())
        .expect_success();
}

/// The source's `Ready` condition once its reason is `reason`.
fn wait_for_reason(ns: &TestNamespace, resource: &str, reason: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = ns.kubectl(["get", resource, "-o", "json"]);
        let source: Value = serde_json::from_str(out.expect_success()).unwrap();
        let ready = source["status"]["conditions"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == "Ready"))
            .cloned();
        if let Some(ready) = ready.filter(|r| r["reason"] == reason) {
            return json!({"ready": ready, "source": source});
        }
        assert!(
            Instant::now() < deadline,
            "{resource} never became {reason}: {}",
            source["status"]
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn sources_say_whether_they_can_be_used_and_what_to_fix() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    controller();
    let ns = TestNamespace::new(cp, "source-ready").unwrap();
    let good = json!({"username": vcsim.username(), "password": vcsim.password()});
    let ca = Some(vcsim.ca_pem());
    let closed = format!(
        "https://127.0.0.1:{}/sdk",
        vmm_testkit::process::free_port().unwrap()
    );
    apply(
        &ns,
        &[
            secret("good", good.clone()),
            secret(
                "wrong",
                json!({"username": vcsim.username(), "password": "not-it"}),
            ),
            secret("no-password", json!({"username": vcsim.username()})),
            vsphere("ok", vcsim.url(), "good", ca),
            vsphere("no-secret", vcsim.url(), "absent", ca),
            vsphere("bad-password", vcsim.url(), "wrong", ca),
            vsphere("half-secret", vcsim.url(), "no-password", ca),
            vsphere("unreachable", &closed, "good", ca),
            vsphere("untrusted", vcsim.url(), "good", None),
            json!({"apiVersion": "source.harvesterhci.io/v1", "kind": "Harvester",
                   "metadata": {"name": "remote"},
                   "spec": {"endpoint": "https://harvester.example.com:6443", "credentials": {"name": "good"}}}),
        ],
    );
    let cases = [
        ("vsphere/ok", "Connected", "True", "logged in to"),
        ("vsphere/no-secret", "SecretNotFound", "False", "absent"),
        (
            "vsphere/bad-password",
            "AuthenticationFailed",
            "False",
            "username and password",
        ),
        ("vsphere/half-secret", "SecretInvalid", "False", "password"),
        (
            "vsphere/unreachable",
            "EndpointUnreachable",
            "False",
            "unreachable",
        ),
        ("vsphere/untrusted", "CertificateUntrusted", "False", "CA"),
        (
            "harvester/remote",
            "KindNotSupported",
            "False",
            "it connects to Vsphere, Openstack",
        ),
    ];
    for (resource, reason, status, says) in cases {
        let found = wait_for_reason(&ns, resource, reason);
        let ready = &found["ready"];
        assert_eq!(ready["status"], status, "{resource}: {ready}");
        let message = ready["message"].as_str().unwrap();
        assert!(message.contains(says), "{resource}: {message}");
        assert!(
            !message.contains(vcsim.password()) && !message.contains("not-it"),
            "{resource}: a password leaked: {message}"
        );
        assert_eq!(
            found["source"]["status"]["observedGeneration"],
            found["source"]["metadata"]["generation"],
            "{resource}"
        );
    }
    let ok = wait_for_reason(&ns, "vsphere/ok", "Connected");
    assert!(
        ok["source"]["status"]["endpointVersion"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{ok}"
    );
    let events = ns.kubectl([
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=bad-password",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        events.expect_success().contains("AuthenticationFailed"),
        "{events}"
    );

    // Fixing the Secrets is enough: the sources notice without being touched.
    apply(
        &ns,
        &[secret("wrong", good.clone()), secret("absent", good)],
    );
    wait_for_reason(&ns, "vsphere/bad-password", "Connected");
    wait_for_reason(&ns, "vsphere/no-secret", "Connected");

    // There is no way to name a Secret of another namespace.
    let mut foreign = vsphere("foreign", vcsim.url(), "good", ca);
    foreign["spec"]["credentials"]["namespace"] = json!("kube-system");
    let refused =
        cp.kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], &foreign.to_string());
    assert!(refused.expect_failure().contains("namespace"), "{refused}");
}
