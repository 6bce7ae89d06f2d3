//! The controller binary reports each source's `Ready` condition through the
//! real kube-apiserver: a table of good and broken sources against vcsim, each
//! with the reason that names the fix, an Event, `observedGeneration`, and a
//! fixed Secret picked up without touching the source, by the Secret watch
//! alone (the periodic recheck of a failing source is an hour here).

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use vmm_testkit::servers::{ControllerServer, start_controller};
use vmm_testkit::sources::{ready_condition, secret, source};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, workspace_binary};

const WAIT: Duration = Duration::from_secs(90);

/// This binary's controller, which checks a failing source again only after
/// an hour: within the test's wait, a fixed Secret can only be noticed
/// through the Secret watch.
fn controller() -> &'static ControllerServer {
    static CONTROLLER: OnceLock<ControllerServer> = OnceLock::new();
    CONTROLLER.get_or_init(|| {
        let cp = ControlPlane::shared();
        let program = workspace_binary("vmm-controller").unwrap();
        start_controller(
            cp,
            &program,
            cp.kubeconfig_path(),
            &["--source-retry-seconds=3600"],
        )
        .unwrap()
    })
}

fn vsphere(name: &str, endpoint: &str, secret: &str, ca: Option<&str>) -> Value {
    source(
        "Vsphere",
        name,
        endpoint,
        secret,
        ca.map_or(json!({}), |ca| json!({"caBundle": ca})),
    )
}

/// The source's `Ready` condition once its reason is `reason`, and the
/// source, as `{"ready", "source"}`.
fn wait_for_reason(ns: &TestNamespace, resource: &str, reason: &str) -> Value {
    let source = ns.wait_for_ready_reason(resource, reason, WAIT);
    json!({"ready": ready_condition(&source), "source": source})
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
    ns.apply_all(
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
            "SecretInvalid",
            "False",
            "has no kubeconfig or token",
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
    ns.apply_all(&[secret("wrong", good.clone()), secret("absent", good)]);
    wait_for_reason(&ns, "vsphere/bad-password", "Connected");
    wait_for_reason(&ns, "vsphere/no-secret", "Connected");

    // There is no way to name a Secret of another namespace.
    let mut foreign = vsphere("foreign", vcsim.url(), "good", ca);
    foreign["spec"]["credentials"]["namespace"] = json!("kube-system");
    let refused =
        cp.kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], &foreign.to_string());
    assert!(refused.expect_failure().contains("namespace"), "{refused}");
}
