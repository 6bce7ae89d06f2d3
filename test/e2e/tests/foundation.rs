//! Foundation end-to-end tests: our CRDs and the third-party ones in a real
//! kube-apiserver 1.36, kubectl as the reference client, vcsim over SOAP and its
//! datastore HTTP API, and the harness's own guarantees (no process outlives
//! its owner or the test binary).
//!
//! All tests share one control plane and one vcsim per test binary; each test
//! works in its own namespace.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use vmm_testkit::aggregation::{
    ApiServiceRegistration, StubAggregatedServer, register_apiservice, unregister_apiservice,
    wait_apiservice_available, wait_available_condition,
};
use vmm_testkit::process::{ProcessBuilder, free_port, pid_alive, run_dir};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, repo_root};

/// Generous limit for anything that waits on a peer (never a pass/fail timing).
const WAIT: Duration = Duration::from_secs(120);

fn cp() -> &'static ControlPlane {
    ControlPlane::shared()
}

/// Every document of a YAML stream, as JSON values (empty documents dropped).
fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// A `v1/List` of the documents, each moved into `namespace`, as JSON text.
fn into_namespace(docs: &[Value], namespace: &str) -> String {
    let items: Vec<Value> = docs
        .iter()
        .cloned()
        .map(|mut doc| {
            doc["metadata"]["namespace"] = json!(namespace);
            doc
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

fn example_files() -> Vec<PathBuf> {
    vmm_testkit::peers::yaml_files(&repo_root().join("docs/examples")).expect("docs/examples")
}

fn read_example(name: &str) -> Vec<Value> {
    let path = repo_root().join("docs/examples").join(name);
    yaml_documents(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

/// The header row (split on runs of 2+ spaces, so `SOURCE VM` stays one
/// column) of every table in kubectl's output.
fn table_headers(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .filter(|l| l.starts_with("NAME"))
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Our CRDs: examples, validation, printer columns, names

#[test]
fn every_example_in_docs_is_accepted() {
    let cp = cp();
    let ns = TestNamespace::new(cp, "examples").unwrap();
    let files = example_files();
    assert!(!files.is_empty(), "docs/examples has no YAML");
    for file in files {
        let docs = yaml_documents(&std::fs::read_to_string(&file).unwrap());
        assert!(!docs.is_empty(), "{} has no object", file.display());
        let list = into_namespace(&docs, ns.name());
        let out = cp.kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], &list);
        assert!(out.success(), "{} was rejected: {out}", file.display());
        // Read back exactly these objects.
        let names = cp.kubectl_with_stdin(["get", "-n", ns.name(), "-f", "-", "-o", "name"], &list);
        let names = names.expect_success();
        assert_eq!(
            names.lines().count(),
            docs.len(),
            "{}: {names}",
            file.display()
        );
    }
}

struct Invalid {
    case: &'static str,
    yaml: String,
    /// Substrings the apiserver's error must contain: the field path and the message.
    expect: &'static [&'static str],
}

fn vsphere(name: &str, spec: &str) -> String {
    source("Vsphere", name, spec)
}

fn source(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: source.harvesterhci.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{}",
        indent(spec)
    )
}

fn import_job(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: importjob.harvesterhci.io/v1\nkind: VirtualMachine\nmetadata:\n  name: {name}\nspec:\n{}",
        indent(spec)
    )
}

fn indent(block: &str) -> String {
    block
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect::<String>()
}

const CREDS: &str = "credentials: {name: vc-creds}";
const JOB_BASE: &str = "sourceCluster: {kind: Vsphere, name: dc-east}\nvmName: Web 01";

fn invalid_objects() -> Vec<Invalid> {
    let url_msg: &'static [&'static str] = &["spec.endpoint", "must be an http(s) URL"];
    let nad_msg: &'static [&'static str] = &[
        "spec.mapping[0].destinationNetwork",
        "must name a NetworkAttachmentDefinition",
    ];
    vec![
        Invalid {
            case: "endpoint with ftp scheme",
            yaml: vsphere("ftp", &format!("endpoint: ftp://x\n{CREDS}")),
            expect: url_msg,
        },
        Invalid {
            case: "endpoint without scheme",
            yaml: vsphere(
                "bare-host",
                &format!("endpoint: vcenter.example.com\n{CREDS}"),
            ),
            expect: url_msg,
        },
        Invalid {
            case: "endpoint without host",
            yaml: vsphere("no-host", &format!("endpoint: 'https://'\n{CREDS}")),
            expect: url_msg,
        },
        Invalid {
            case: "openstack endpoint with ftp scheme",
            yaml: source(
                "Openstack",
                "os-ftp",
                &format!("endpoint: ftp://keystone\n{CREDS}"),
            ),
            expect: url_msg,
        },
        Invalid {
            case: "harvester endpoint that is no URL",
            yaml: source(
                "Harvester",
                "hv-bad",
                &format!("endpoint: not a url\n{CREDS}"),
            ),
            expect: url_msg,
        },
        Invalid {
            case: "credentials without name",
            yaml: vsphere("no-cred-name", "endpoint: https://vc/sdk\ncredentials: {}"),
            expect: &["spec.credentials.name", "Required value"],
        },
        Invalid {
            case: "no credentials",
            yaml: vsphere("no-creds", "endpoint: https://vc/sdk"),
            expect: &["spec.credentials", "Required value"],
        },
        Invalid {
            case: "credentials name that is no Secret name",
            yaml: vsphere(
                "bad-cred-name",
                "endpoint: https://vc/sdk\ncredentials: {name: Bad_Secret}",
            ),
            expect: &["spec.credentials.name", "must be the name of a Secret"],
        },
        Invalid {
            case: "caBundle with insecureSkipVerify",
            yaml: vsphere(
                "ca-and-insecure",
                &format!(
                    "endpoint: https://vc/sdk\n{CREDS}\ncaBundle: PEM\ninsecureSkipVerify: true"
                ),
            ),
            expect: &[
                "spec.insecureSkipVerify",
                "set either caBundle or insecureSkipVerify, not both",
            ],
        },
        Invalid {
            case: "import job with empty vmName",
            yaml: import_job(
                "empty-vm",
                "sourceCluster: {kind: Vsphere, name: dc-east}\nvmName: ''",
            ),
            expect: &["spec.vmName", "at least 1 chars long"],
        },
        Invalid {
            case: "import job without vmName",
            yaml: import_job("no-vm", "sourceCluster: {kind: Vsphere, name: dc-east}"),
            expect: &["spec.vmName", "Required value"],
        },
        Invalid {
            case: "mapping entry without destinationNetwork",
            yaml: import_job(
                "no-destination",
                &format!("{JOB_BASE}\nmapping:\n- sourceNetwork: VM Network"),
            ),
            expect: &["spec.mapping[0].destinationNetwork", "Required value"],
        },
        Invalid {
            case: "two mapping entries for one sourceNetwork",
            yaml: import_job(
                "duplicate-source",
                &format!(
                    "{JOB_BASE}\nmapping:\n- {{sourceNetwork: VM Network, destinationNetwork: vlan1}}\n- {{sourceNetwork: VM Network, destinationNetwork: vlan2}}"
                ),
            ),
            expect: &["spec.mapping[1]", "Duplicate value", "VM Network"],
        },
        Invalid {
            case: "destinationNetwork with upper case and underscore",
            yaml: import_job(
                "bad-nad-name",
                &format!(
                    "{JOB_BASE}\nmapping:\n- {{sourceNetwork: VM Network, destinationNetwork: Bad_Name}}"
                ),
            ),
            expect: nad_msg,
        },
        Invalid {
            case: "destinationNetwork with two slashes",
            yaml: import_job(
                "bad-nad-path",
                &format!(
                    "{JOB_BASE}\nmapping:\n- {{sourceNetwork: VM Network, destinationNetwork: a/b/c}}"
                ),
            ),
            expect: nad_msg,
        },
        Invalid {
            case: "unknown sourceCluster.kind",
            yaml: import_job(
                "bad-kind",
                "sourceCluster: {kind: Vmware, name: dc-east}\nvmName: Web 01",
            ),
            expect: &["spec.sourceCluster.kind", "Unsupported value", "\"Vmware\""],
        },
        Invalid {
            case: "targetName that is no DNS label",
            yaml: import_job("bad-target", &format!("{JOB_BASE}\ntargetName: Web_01")),
            expect: &["spec.targetName", "must be a lowercase DNS-1123 label"],
        },
    ]
}

#[test]
fn invalid_objects_are_rejected_naming_the_field() {
    let cp = cp();
    let ns = TestNamespace::new(cp, "invalid").unwrap();
    let mut failures = Vec::new();
    for case in invalid_objects() {
        let out = cp.kubectl_with_stdin(["create", "-n", ns.name(), "-f", "-"], &case.yaml);
        if out.success() {
            failures.push(format!("{}: accepted:\n{}", case.case, case.yaml));
            continue;
        }
        let missing: Vec<_> = case
            .expect
            .iter()
            .filter(|s| !out.stderr.contains(*s))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{}: error lacks {missing:?}:\n{}",
                case.case,
                out.stderr.trim()
            ));
        }
    }
    // Nothing of it was stored.
    let left = ns.kubectl(["get", "migration", "-o", "name"]);
    assert_eq!(
        left.expect_success().trim(),
        "",
        "invalid objects were stored"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn valid_edge_cases_are_accepted() {
    let cp = cp();
    let ns = TestNamespace::new(cp, "valid").unwrap();
    for yaml in [
        // insecureSkipVerify: false next to a caBundle is fine.
        vsphere(
            "ca-and-verify",
            &format!(
                "endpoint: https://vc.example.com/sdk\n{CREDS}\ncaBundle: PEM\ninsecureSkipVerify: false"
            ),
        ),
        vsphere(
            "http-endpoint",
            &format!("endpoint: http://10.0.0.5:8989/sdk\n{CREDS}"),
        ),
        // VM names with spaces, dots and Unicode; namespaced and plain NAD names.
        import_job(
            "unicode-vm",
            "sourceCluster: {kind: Vsphere, name: dc.east}\nvmName: \"Web 01.prod – ü\"\nmapping:\n- {sourceNetwork: VM Network, destinationNetwork: default/vlan100}\n- {sourceNetwork: DC0_DVPG0, destinationNetwork: vlan200}",
        ),
    ] {
        let out = cp.kubectl_with_stdin(["create", "-n", ns.name(), "-f", "-"], &yaml);
        assert!(out.success(), "rejected: {out}\n{yaml}");
    }
    // Defaults are applied by the schema.
    let job = ns.kubectl(["get", "ij", "unicode-vm", "-o", "json"]);
    let job: Value = serde_json::from_str(job.expect_success()).unwrap();
    assert_eq!(job["spec"]["powerOn"], json!(true));
    assert_eq!(job["spec"]["vmName"], json!("Web 01.prod – ü"));
}

#[test]
fn import_job_spec_is_immutable() {
    let cp = cp();
    let ns = TestNamespace::new(cp, "immutable").unwrap();
    ns.apply(&import_job("web-01", JOB_BASE)).unwrap();

    let out = ns.kubectl([
        "patch",
        "ij",
        "web-01",
        "--type=merge",
        "-p",
        r#"{"spec":{"vmName":"Web 02"}}"#,
    ]);
    let err = out.expect_failure();
    assert!(err.contains("spec: Invalid value"), "{err}");
    assert!(
        err.contains("an import job cannot be changed once created"),
        "{err}"
    );

    // apply of a changed spec: the same answer.
    let changed = import_job(
        "web-01",
        "sourceCluster: {kind: Vsphere, name: dc-west}\nvmName: Web 01",
    );
    let out = cp.apply_yaml(ns.name(), &changed);
    assert!(
        out.expect_failure()
            .contains("an import job cannot be changed once created"),
        "{out}"
    );

    // Metadata stays editable, and the spec is unchanged.
    ns.kubectl(["label", "ij", "web-01", "team=a"])
        .expect_success();
    let name = ns.kubectl([
        "get",
        "ij",
        "web-01",
        "-o",
        "jsonpath={.spec.vmName}/{.spec.sourceCluster.name}",
    ]);
    assert_eq!(name.expect_success(), "Web 01/dc-east");
}

#[test]
fn printer_columns_category_and_short_name() {
    let cp = cp();
    let ns = TestNamespace::new(cp, "columns").unwrap();
    let mut docs = read_example("vsphere-source.yaml");
    docs.extend(read_example("importjob.yaml"));
    cp.kubectl_with_stdin(
        ["apply", "-n", ns.name(), "-f", "-"],
        &into_namespace(&docs, ns.name()),
    )
    .expect_success();

    let out = ns.kubectl(["get", "vspheres,importjobs"]);
    let out = out.expect_success();
    let headers = table_headers(out);
    assert_eq!(
        headers,
        vec![
            vec!["NAME", "READY", "ENDPOINT", "AGE"],
            vec!["NAME", "PHASE", "PROGRESS", "AGE"],
        ],
        "{out}"
    );
    assert!(
        out.contains("vsphere.source.harvesterhci.io/dc-east"),
        "{out}"
    );
    assert!(out.contains("https://vcenter.example.com/sdk"), "{out}");
    assert!(
        out.contains("virtualmachine.importjob.harvesterhci.io/web-01"),
        "{out}"
    );

    let wide = ns.kubectl(["get", "vspheres,importjobs", "-o", "wide"]);
    let wide = wide.expect_success();
    let headers = table_headers(wide);
    assert_eq!(headers.len(), 2, "{wide}");
    for column in ["READY", "REASON", "ENDPOINT", "DATACENTER", "VMS", "AGE"] {
        assert!(
            headers[0].iter().any(|h| h == column),
            "vsphere -o wide lacks {column}: {wide}"
        );
    }
    for column in [
        "PHASE",
        "PROGRESS",
        "SOURCE",
        "SOURCE VM",
        "TARGET",
        "REASON",
        "AGE",
    ] {
        assert!(
            headers[1].iter().any(|h| h == column),
            "importjob -o wide lacks {column}: {wide}"
        );
    }
    assert!(wide.contains("Web 01"), "{wide}");
    assert!(wide.contains("DC0"), "{wide}");

    // The `migration` category lists both kinds.
    let names = ns.kubectl(["get", "migration", "-o", "name"]);
    let mut names: Vec<_> = names.expect_success().lines().map(str::to_owned).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "virtualmachine.importjob.harvesterhci.io/web-01",
            "vsphere.source.harvesterhci.io/dc-east",
        ],
    );

    // Short name.
    let ij = ns.kubectl(["get", "ij", "-o", "name"]);
    assert_eq!(
        ij.expect_success().trim(),
        "virtualmachine.importjob.harvesterhci.io/web-01"
    );
    let source = ns.kubectl(["get", "vsrc", "-o", "name"]);
    assert_eq!(
        source.expect_success().trim(),
        "vsphere.source.harvesterhci.io/dc-east"
    );
    let singular = ns.kubectl(["get", "importjob", "web-01", "-o", "name"]);
    assert_eq!(
        singular.expect_success().trim(),
        "virtualmachine.importjob.harvesterhci.io/web-01"
    );
}

#[test]
fn virtualmachines_still_means_kubevirt() {
    let cp = cp();
    let out = cp.kubectl(["api-resources", "--no-headers"]);
    let out = out.expect_success();
    let row = |resource: &str, group_version: &str| {
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&resource) && cols.contains(&group_version))
            .unwrap_or_else(|| panic!("no {resource} in {group_version}:\n{out}"))
    };
    let kubevirt = row("virtualmachines", "kubevirt.io/v1");
    assert!(kubevirt.contains(&"VirtualMachine"), "{kubevirt:?}");
    let jobs = row("importjobs", "importjob.harvesterhci.io/v1");
    assert!(
        jobs.contains(&"ij") && jobs.contains(&"VirtualMachine"),
        "{jobs:?}"
    );
    assert!(
        !out.lines()
            .any(|l| l.starts_with("virtualmachines") && l.contains("importjob.harvesterhci.io")),
        "import jobs must not use the plural virtualmachines:\n{out}"
    );

    // A KubeVirt VM and an import job of the same name: plain `virtualmachines` is KubeVirt's.
    let ns = TestNamespace::new(cp, "kubevirt-names").unwrap();
    ns.apply(KUBEVIRT_VM).unwrap();
    ns.apply(&import_job("demo-vm", JOB_BASE)).unwrap();
    let listed = ns.kubectl([
        "get",
        "virtualmachines",
        "-o",
        "jsonpath={range .items[*]}{.apiVersion} {.metadata.name}{\"\\n\"}{end}",
    ]);
    assert_eq!(listed.expect_success().trim(), "kubevirt.io/v1 demo-vm");
    let vm = ns.kubectl(["get", "vm", "demo-vm", "-o", "jsonpath={.apiVersion}"]);
    assert_eq!(vm.expect_success(), "kubevirt.io/v1");
    let job = ns.kubectl([
        "get",
        "importjobs",
        "demo-vm",
        "-o",
        "jsonpath={.apiVersion}",
    ]);
    assert_eq!(job.expect_success(), "importjob.harvesterhci.io/v1");
}

// ---------------------------------------------------------------------------
// Third-party CRDs

const KUBEVIRT_VM: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: demo-vm
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        cpu: {cores: 1}
        memory: {guest: 64Mi}
        devices:
          disks:
          - name: rootdisk
            disk: {bus: virtio}
      volumes:
      - name: rootdisk
        persistentVolumeClaim: {claimName: demo-vm-rootdisk}
"#;

const VM_IMAGE: &str = r#"
apiVersion: harvesterhci.io/v1beta1
kind: VirtualMachineImage
metadata:
  name: demo-image
spec:
  displayName: demo image
  sourceType: download
  url: http://example.com/disk.img
"#;

const NAD: &str = r#"
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: vlan100
spec:
  config: '{"cniVersion":"0.3.1","name":"vlan100","type":"bridge","bridge":"mgmt-br","vlan":100}'
"#;

#[test]
fn third_party_crds_accept_minimal_objects() {
    let cp = cp();
    let ns = TestNamespace::new(cp, "third-party").unwrap();
    for (yaml, resource, name) in [
        (KUBEVIRT_VM, "virtualmachines.kubevirt.io", "demo-vm"),
        (
            VM_IMAGE,
            "virtualmachineimages.harvesterhci.io",
            "demo-image",
        ),
        (
            NAD,
            "network-attachment-definitions.k8s.cni.cncf.io",
            "vlan100",
        ),
    ] {
        let out = cp.kubectl_with_stdin(["create", "-n", ns.name(), "-f", "-"], yaml);
        assert!(out.success(), "{resource}: {out}");
        let got = ns.kubectl(["get", resource, name, "-o", "jsonpath={.metadata.name}"]);
        assert_eq!(got.expect_success(), name);
    }
    // Their schemas are real: a KubeVirt VM without a template is refused.
    let bad = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: bad}\nspec: {runStrategy: Halted}\n";
    let out = cp.kubectl_with_stdin(["create", "-n", ns.name(), "-f", "-"], bad);
    assert!(out.expect_failure().contains("spec.template"), "{out}");
}

// ---------------------------------------------------------------------------
// Clients and identities

fn vsphere_resource() -> ApiResource {
    ApiResource {
        group: "source.harvesterhci.io".into(),
        version: "v1".into(),
        api_version: "source.harvesterhci.io/v1".into(),
        kind: "Vsphere".into(),
        plural: "vspheres".into(),
    }
}

#[tokio::test]
async fn kube_client_reads_and_writes_our_resources() {
    let cp = cp();
    let ns = TestNamespace::new(cp, "client").unwrap();
    let client = cp.client();
    let ar = vsphere_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client, ns.name(), &ar);
    let mut obj = DynamicObject::new("from-rust", &ar);
    obj.data =
        json!({"spec": {"endpoint": "https://vc.example.com/sdk", "credentials": {"name": "vc"}}});
    api.create(&PostParams::default(), &obj).await.unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert_eq!(names, ["from-rust"]);

    // Validation applies to the Rust client too, with the same message.
    let mut bad = DynamicObject::new("bad", &ar);
    bad.data = json!({"spec": {"endpoint": "ftp://x", "credentials": {"name": "vc"}}});
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("must be an http(s) URL"),
                "{status:?}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn users_are_authenticated_by_certificate_and_authorized_by_rbac() {
    let cp = cp();
    let ns = TestNamespace::new(cp, "rbac").unwrap();
    let user = format!("alice-{}", ns.name());

    // Who am I: user and both groups from the certificate.
    let whoami = cp.kubectl_as(
        &user,
        &["team-a", "team-b"],
        ["auth", "whoami", "-o", "json"],
    );
    let whoami: Value = serde_json::from_str(whoami.expect_success()).unwrap();
    assert_eq!(whoami["status"]["userInfo"]["username"], json!(user));
    let groups = whoami["status"]["userInfo"]["groups"].as_array().unwrap();
    for group in ["team-a", "team-b", "system:authenticated"] {
        assert!(groups.contains(&json!(group)), "{whoami}");
    }

    // Nothing granted yet: 403 through kubectl and through kube.
    let denied = cp.kubectl_as(&user, &["team-a"], ["get", "vspheres", "-n", ns.name()]);
    assert!(denied.expect_failure().contains("Forbidden"), "{denied}");
    let ar = vsphere_resource();
    let api: Api<DynamicObject> =
        Api::namespaced_with(cp.client_as(&user, &["team-a"]).unwrap(), ns.name(), &ar);
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }

    // Grant the group read access in this namespace only.
    ns.kubectl([
        "create",
        "role",
        "reader",
        "--verb=get,list,watch",
        "--resource=vspheres.source.harvesterhci.io",
    ])
    .expect_success();
    ns.kubectl([
        "create",
        "rolebinding",
        "team-a-reader",
        "--role=reader",
        "--group=team-a",
    ])
    .expect_success();
    let allowed = cp.kubectl_as(&user, &["team-a"], ["get", "vspheres", "-n", ns.name()]);
    assert!(allowed.success(), "{allowed}");
    api.list(&ListParams::default()).await.unwrap();
    let elsewhere = cp.kubectl_as(&user, &["team-a"], ["get", "vspheres", "-n", "default"]);
    assert!(
        elsewhere.expect_failure().contains("Forbidden"),
        "{elsewhere}"
    );
}

// ---------------------------------------------------------------------------
// Aggregation

#[tokio::test]
async fn apiservice_is_accepted_and_reports_why_it_is_unavailable() {
    let cp = cp();
    let client = cp.client();
    let suffix = vmm_testkit::namespace::random_suffix();
    let group = format!("e2e{suffix}.vmm.test");
    let port = free_port().unwrap(); // nothing listens there
    let registration =
        ApiServiceRegistration::new(&group, "v1", port, cp.pki().cluster_ca.cert_pem());
    register_apiservice(&client, &registration).await.unwrap();

    let service = cp.kubectl([
        "get",
        "service",
        "-n",
        &registration.service_namespace,
        &registration.service_name,
        "-o",
        "jsonpath={.spec.type} {.spec.externalName}",
    ]);
    assert_eq!(service.expect_success(), "ExternalName localhost");

    let condition = wait_available_condition(&client, &registration.apiservice_name(), WAIT, |c| {
        c.status == "False" && c.reason.as_deref().is_some_and(|r| !r.is_empty())
    })
    .await
    .unwrap();
    let reason = condition.reason.clone().unwrap_or_default();
    let message = condition.message.clone().unwrap_or_default();
    assert_eq!(reason, "FailedDiscoveryCheck", "{condition:?}");
    assert!(
        message.contains(&format!("localhost:{port}")) || message.contains(&group),
        "{condition:?}"
    );

    // kubectl shows it, and requests to the group get 503.
    let listed = cp.kubectl(["get", "apiservice", &registration.apiservice_name()]);
    assert!(
        listed
            .expect_success()
            .contains("False (FailedDiscoveryCheck)"),
        "{listed}"
    );
    let raw = cp.kubectl(["get", "--raw", &format!("/apis/{group}/v1")]);
    assert!(
        raw.expect_failure()
            .contains("unable to handle the request")
            || raw.stderr.contains("503"),
        "{raw}"
    );

    unregister_apiservice(&client, &registration).await.unwrap();
    let gone = cp.kubectl([
        "get",
        "apiservice",
        &registration.apiservice_name(),
        "--ignore-not-found",
        "-o",
        "name",
    ]);
    assert_eq!(gone.expect_success().trim(), "");
}

/// The §1f recipe end to end: APIService → ExternalName `localhost` → a local
/// HTTPS server that requires the front-proxy client certificate, sees the
/// `<svc>.<ns>.svc` server name, and receives the caller's identity in the
/// X-Remote-* headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiservice_routes_to_a_local_server_with_the_callers_identity() {
    let cp = cp();
    let client = cp.client();
    let group = format!("e2e{}.vmm.test", vmm_testkit::namespace::random_suffix());
    let mut registration =
        ApiServiceRegistration::new(&group, "v1", 0, cp.pki().cluster_ca.cert_pem());
    let serving = cp
        .pki()
        .issue_aggregated_serving(&registration.service_name, &registration.service_namespace)
        .unwrap();
    let server =
        StubAggregatedServer::start(&serving, cp.pki().front_proxy_ca.cert_pem(), &group, "v1")
            .await
            .unwrap();
    registration.local_port = server.port();
    register_apiservice(&client, &registration).await.unwrap();
    let name = registration.apiservice_name();
    wait_apiservice_available(&client, &name, WAIT)
        .await
        .unwrap();

    // As admin, then as an ordinary user (discovery is allowed to everyone).
    let user = format!("bob-{}", vmm_testkit::namespace::random_suffix());
    for (out, who, group_expected) in [
        (
            cp.kubectl(["get", "--raw", &format!("/apis/{group}/v1")]),
            "admin".to_string(),
            "system:masters",
        ),
        (
            cp.kubectl_as(
                &user,
                &["team-b"],
                ["get", "--raw", &format!("/apis/{group}/v1")],
            ),
            user.clone(),
            "team-b",
        ),
    ] {
        let list: Value = serde_json::from_str(out.expect_success()).unwrap();
        assert_eq!(list["groupVersion"], json!(format!("{group}/v1")), "{out}");
        let seen = server.requests();
        let request = seen
            .iter()
            .find(|r| {
                r.path == format!("/apis/{group}/v1")
                    && r.header_values("X-Remote-User") == [who.as_str()]
            })
            .unwrap_or_else(|| panic!("no request from {who} reached the server: {seen:#?}"));
        let groups = request.header_values("X-Remote-Group");
        assert!(groups.contains(&group_expected), "{request:?}");
        assert!(groups.contains(&"system:authenticated"), "{request:?}");
        assert_eq!(
            request.server_name.as_deref(),
            Some(registration.service_host().as_str()),
            "{request:?}"
        );
    }

    // Discovery through kubectl lists the group.
    let groups = cp.kubectl(["api-versions"]);
    assert!(
        groups
            .expect_success()
            .lines()
            .any(|l| l == format!("{group}/v1")),
        "{groups}"
    );

    unregister_apiservice(&client, &registration).await.unwrap();
    drop(server);
}

// ---------------------------------------------------------------------------
// vcsim

const RETRIEVE_SERVICE_CONTENT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:vim25="urn:vim25">
  <soapenv:Body>
    <vim25:RetrieveServiceContent>
      <vim25:_this type="ServiceInstance">ServiceInstance</vim25:_this>
    </vim25:RetrieveServiceContent>
  </soapenv:Body>
</soapenv:Envelope>"#;

#[tokio::test]
async fn vcsim_answers_retrieve_service_content_over_soap() {
    let vcsim = Vcsim::shared();
    assert!(
        vcsim.url().starts_with("https://127.0.0.1:"),
        "{}",
        vcsim.url()
    );
    let http = vcsim.http_client().unwrap();
    let response = http
        .post(vcsim.url())
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", "urn:vim25/8.0")
        .body(RETRIEVE_SERVICE_CONTENT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("RetrieveServiceContentResponse"), "{body}");
    assert!(body.contains("<rootFolder type=\"Folder\">"), "{body}");
    assert!(body.contains("<about>"), "{body}");
    assert!(body.contains("<apiType>VirtualCenter</apiType>"), "{body}");
    assert!(
        body.contains("<propertyCollector type=\"PropertyCollector\">"),
        "{body}"
    );

    // The certificate is verified: a client trusting nothing else fails.
    let other_ca = vmm_testkit::pki::Ca::new(&run_dir().unwrap(), "other", "other CA").unwrap();
    let strict = vmm_testkit::tls::reqwest_client(&[other_ca.cert_pem()], None).unwrap();
    assert!(
        strict
            .post(vcsim.url())
            .body(RETRIEVE_SERVICE_CONTENT)
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn vcsim_datastore_files_round_trip_over_http() {
    let vcsim = Vcsim::shared();
    let http = vcsim.http_client().unwrap();
    let dir = format!("e2e-{}", vmm_testkit::namespace::random_suffix());
    let file = format!("{dir}/disk image.bin");
    let bytes: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();

    let put = http
        .put(vcsim.folder_url(&file))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "PUT: {}", put.status());

    let get = http.get(vcsim.folder_url(&file)).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let head = http.head(vcsim.folder_url(&file)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(bytes.len().to_string().as_str())
    );

    let range = http
        .get(vcsim.folder_url(&file))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap().as_ref(), &bytes[100..200]);

    // The datastore root lists the new directory next to the VMs' directories
    // (vcsim cannot list subdirectories: its /folder handler redirects them in a loop).
    let listing = http.get(vcsim.folder_url("")).send().await.unwrap();
    assert_eq!(listing.status(), 200);
    let listing = listing.text().await.unwrap();
    assert!(listing.contains(&format!("{dir}/")), "{listing}");
    let vm = vcsim
        .info()
        .vm_paths
        .first()
        .expect("vcsim reports its VMs");
    let vm_name = vm.rsplit('/').next().unwrap();
    assert!(listing.contains(&format!("{vm_name}/")), "{listing}");
    // The bytes are on the datastore's disk.
    assert_eq!(
        std::fs::read(vcsim.datastore_dir().join(&file)).unwrap(),
        bytes
    );

    let missing = http
        .get(vcsim.folder_url(&format!("{dir}/nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

// ---------------------------------------------------------------------------
// The harness itself: no process outlives its owner or the test binary

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_spawned_process_dies_with_its_owner() {
    let dir = run_dir().unwrap();
    let sleep = ProcessBuilder::new("sleep", "sleep")
        .arg("1000")
        .log_file(dir.join("sleep.log"))
        .spawn()
        .unwrap();
    let pid = sleep.pid();
    assert!(pid_alive(pid));
    drop(sleep);
    assert!(!pid_alive(pid), "pid {pid} outlived its ManagedProcess");
}

const ORPHAN_PID_FILE_ENV: &str = "VMM_E2E_ORPHAN_PID_FILE";

/// Helper for `children_die_when_the_test_binary_is_killed`: does nothing unless
/// that test runs this binary with the environment variable set.
#[test]
fn helper_spawn_a_child_then_wait_to_be_killed() {
    let Some(pid_file) = std::env::var_os(ORPHAN_PID_FILE_ENV) else {
        return;
    };
    let dir = run_dir().unwrap();
    let sleep = ProcessBuilder::new("sleep", "sleep")
        .arg("1000")
        .log_file(dir.join("orphan-sleep.log"))
        .spawn()
        .unwrap();
    let tmp = PathBuf::from(format!("{}.tmp", Path::new(&pid_file).display()));
    std::fs::write(&tmp, sleep.pid().to_string()).unwrap();
    std::fs::rename(&tmp, &pid_file).unwrap();
    std::thread::sleep(Duration::from_secs(1000));
}

#[test]
fn children_die_when_the_test_binary_is_killed() {
    let dir = run_dir().unwrap();
    let pid_file = dir.join("orphan.pid");
    let mut binary = ProcessBuilder::new("e2e-child", std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_spawn_a_child_then_wait_to_be_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_PID_FILE_ENV, &pid_file)
        .log_file(dir.join("e2e-child.log"))
        .spawn()
        .unwrap();
    binary
        .wait_ready("the pid file", WAIT, Duration::from_millis(20), || {
            Ok(pid_file.exists())
        })
        .unwrap();
    let sleep_pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(sleep_pid));

    binary.kill().unwrap(); // SIGKILL: no destructor of the child test binary runs
    // Alive means: that pid still runs `sleep` (so a reused pid cannot fool us).
    let sleep_alive = || {
        pid_alive(sleep_pid)
            && std::fs::read_to_string(format!("/proc/{sleep_pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
    };
    wait_until(
        &format!("pid {sleep_pid} to die with its test binary"),
        || !sleep_alive(),
    );
}
