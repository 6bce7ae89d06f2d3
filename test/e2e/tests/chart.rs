//! The Helm chart against the real kube-apiserver: it lints, renders objects
//! the cluster accepts (server-side dry run) for default and other values,
//! refuses bad values by its schema, gives users inventory access through the
//! default `view`/`edit`/`admin` roles (ClusterRole aggregation by the real
//! kube-controller-manager), and its RBAC is enough for both binaries: with
//! only tokens of the chart's ServiceAccounts, the inventory apiserver serves a
//! vCenter's VMs and their cluster-dependent concerns, and the controller
//! checks the source and imports a VM, as released: built without the test
//! hooks, so a crash point in its environment is ignored. They read Secrets
//! only in the namespaces the chart was told hold sources: elsewhere a source
//! is `SecretForbidden` and their tokens are refused, until a tenant binds the
//! shipped ClusterRole. A NetworkPolicy
//! opens the disk endpoint to the image downloaders only; the ServiceMonitors
//! select each component's Service and the Prometheus operator's CRD accepts
//! them. The Harvester Addon and the Rancher
//! ManagedChart that install the chart are accepted by those projects' CRDs,
//! and carry values the chart accepts. The UI extension's chart renders a
//! UIPlugin that Rancher's own CRD accepts, for the package the UI builds.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use serde::Deserialize;

use vmm_controller::crash;
use vmm_testkit::chart::{chart_dir, helm, render, render_chart, ui_chart_dir};
use vmm_testkit::servers::{ControllerOptions, start_controller_with, start_inventory_api};
use vmm_testkit::vcsim::DiskSpec;
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, import, repo_root, workspace_binary};

const WAIT: Duration = Duration::from_secs(120);

/// For a chart applied for real: the harness registers the APIService itself,
/// pointing at the binary it runs on loopback.
const NO_APISERVICE: &[&str] = &["apiserver.apiService.create=false"];

/// Polls `check` until it holds.
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => panic!("never {what}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[test]
fn the_chart_lints_and_the_cluster_accepts_what_it_renders() {
    let cp = ControlPlane::shared();
    let lint = helm(["lint".into(), chart_dir().into_os_string()]).unwrap();
    assert!(lint.success(), "{lint}");

    let ns = TestNamespace::new(cp, "chart-dry-run").unwrap();
    let cases: [&[&str]; 3] = [
        &[],
        &[
            "fullnameOverride=vmm",
            "rbac.aggregateToDefaultRoles=false",
            "apiserver.serviceAccount.create=false",
            "apiserver.serviceAccount.name=custom-apiserver",
            "controller.serviceAccount.create=false",
            "controller.serviceAccount.name=custom-controller",
            "apiserver.replicas=3",
            "controller.diskUrl=https://disks.example.com:8443",
            "controller.maxJobs=8",
            "imagePullPolicy=Always",
        ],
        &[
            "apiserver.tls.existingSecret=inventory-tls",
            "apiserver.tls.caBundle=Zm9v",
            "apiserver.image.tag=v9.9.9",
        ],
    ];
    for set in cases {
        let rendered = render("vmm", ns.name(), set).unwrap();
        let manifest = rendered.ok().unwrap_or_else(|e| panic!("{set:?}: {e}"));
        // Forced: the APIService may be registered by another test's harness.
        let applied = cp.kubectl_with_stdin(
            [
                "apply",
                "--dry-run=server",
                "--server-side",
                "--force-conflicts",
                "-f",
                "-",
            ],
            manifest,
        );
        assert!(applied.success(), "{set:?}: {applied}");
    }

    // The schema names what is wrong before anything reaches the cluster.
    for (set, complaint) in [
        ("fullnameOverride=Not_A_Name", "fullnameOverride"),
        (
            "rbac.aggregateToDefaultRoles=maybe",
            "aggregateToDefaultRoles",
        ),
        ("rbac.typo=true", "typo"),
        ("controller.maxJobs=0", "maxJobs"),
        ("controller.scratchSizeLimit=lots", "scratchSizeLimit"),
        ("imagePullPolicy=Sometimes", "imagePullPolicy"),
    ] {
        let refused = render("vmm", ns.name(), &[set]).unwrap();
        assert!(
            !refused.success() && refused.stderr.contains(complaint),
            "{set}: {refused}"
        );
    }
}

/// The objects of kind `kind` a rendered manifest holds.
fn objects_of(manifest: &str, kind: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(manifest)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .filter(|object| object["kind"] == kind)
        .collect()
}

/// With `metrics.serviceMonitor.enabled`, each component gets a
/// ServiceMonitor that selects exactly its own Service by that Service's
/// labels and scrapes a port the Service has; the Prometheus operator's own
/// CRD (generated from its module, docs/peers.md) accepts both, and refuses
/// one with a malformed interval, so its schema is what judged them.
#[test]
fn the_service_monitors_are_accepted_by_the_prometheus_operators_crd() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new(cp, "chart-monitors").unwrap();
    let set = [
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.interval=15s",
    ];
    let rendered = render("vmm", ns.name(), &set).unwrap();
    let manifest = rendered.ok().unwrap();
    let services = objects_of(manifest, "Service");
    let monitors = objects_of(manifest, "ServiceMonitor");
    assert_eq!(monitors.len(), 2, "{manifest}");
    for monitor in &monitors {
        let name = monitor["metadata"]["name"].as_str().unwrap();
        let wanted = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap();
        let selected: Vec<_> = services
            .iter()
            .filter(|service| {
                wanted
                    .iter()
                    .all(|(k, v)| &service["metadata"]["labels"][k] == v)
            })
            .collect();
        assert_eq!(selected.len(), 1, "{name} selects {selected:?}");
        let component = &selected[0]["metadata"]["labels"]["app.kubernetes.io/component"];
        assert!(
            name.ends_with(component.as_str().unwrap()),
            "{name} selects the {component} Service"
        );
        let port = &monitor["spec"]["endpoints"][0]["port"];
        let ports = selected[0]["spec"]["ports"].as_array().unwrap();
        assert!(
            ports.iter().any(|p| &p["name"] == port),
            "{name} scrapes {port}, not a port of {ports:?}"
        );
        assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
    }

    let dry_run = |objects: &[serde_json::Value]| {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
        cp.kubectl_with_stdin(
            ["apply", "--dry-run=server", "--server-side", "-f", "-"],
            &list.to_string(),
        )
    };
    let accepted = dry_run(&monitors);
    assert!(accepted.success(), "{accepted}");
    let mut malformed = monitors[0].clone();
    malformed["spec"]["endpoints"][0]["interval"] = "soon".into();
    let refused = dry_run(&[malformed]);
    assert!(
        !refused.success() && refused.stderr.contains("spec.endpoints[0].interval"),
        "{refused}"
    );
}

/// By default only the image downloaders may reach the disk endpoint: a
/// NetworkPolicy selects the controller's pods and lets the listed peers
/// in on the disk port alone (the admin port stays open to probes and
/// Prometheus); turned off, there is none; an empty peer list, which a
/// NetworkPolicy would read as "everyone", is refused.
#[test]
fn the_disk_endpoint_is_open_only_to_the_image_downloaders() {
    let rendered = render("vmm", "vmm-system", &[]).unwrap();
    let manifest = rendered.ok().unwrap();
    let [policy] = <[_; 1]>::try_from(objects_of(manifest, "NetworkPolicy")).unwrap();
    let controller = objects_of(manifest, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "vmm-controller")
        .expect("the controller's Deployment");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        controller["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let disks = rules
        .iter()
        .find(|r| r["ports"][0]["port"] == "disks")
        .expect("a rule for the disk port");
    let peers: Vec<&serde_json::Value> = disks["from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|peer| &peer["podSelector"]["matchLabels"])
        .collect();
    assert_eq!(
        peers,
        [
            &serde_json::json!({"longhorn.io/component": "backing-image-data-source"}),
            &serde_json::json!({"app": "containerized-data-importer", "cdi.kubevirt.io": "importer"}),
            &serde_json::json!({"app.kubernetes.io/name": "harvester"}),
        ]
    );
    assert!(
        rules
            .iter()
            .any(|r| r["ports"][0]["port"] == "admin" && r.get("from").is_none()),
        "{rules:?}"
    );

    let off = render(
        "vmm",
        "vmm-system",
        &["controller.diskNetworkPolicy.enabled=false"],
    )
    .unwrap();
    assert!(objects_of(off.ok().unwrap(), "NetworkPolicy").is_empty());
    let everyone = render(
        "vmm",
        "vmm-system",
        &["controller.diskNetworkPolicy.from={}"],
    )
    .unwrap();
    assert!(
        !everyone.success() && everyone.stderr.contains("from"),
        "{everyone}"
    );
}

/// With `controller.diskTls.secretName` the controller mounts that Secret
/// and serves HTTPS on 8443 besides plain HTTP (for CDI's importer, which
/// Harvester v1.8 hands no CA); with `forCdi` only HTTPS is served, and the
/// Service and NetworkPolicy follow.
#[test]
fn the_disk_endpoint_serves_https_when_given_a_certificate() {
    let tls = "controller.diskTls.secretName=disk-tls";
    let cases: [(&[&str], &[&str], bool); 3] = [
        (&[], &["disks"], false),
        (&[tls], &["disks", "disks-tls"], false),
        (
            &[tls, "controller.diskTls.forCdi=true"],
            &["disks-tls"],
            true,
        ),
    ];
    for (set, ports, for_cdi) in cases {
        let rendered = render("vmm", "vmm-system", set).unwrap();
        let manifest = rendered.ok().unwrap();
        let service = objects_of(manifest, "Service")
            .into_iter()
            .find(|s| s["metadata"]["name"] == "vmm-controller")
            .unwrap();
        let served: Vec<&str> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(served, ports, "{set:?}");
        let [policy] = <[_; 1]>::try_from(objects_of(manifest, "NetworkPolicy")).unwrap();
        let allowed: Vec<&str> = policy["spec"]["ingress"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_str().unwrap())
            .collect();
        assert_eq!(allowed, ports, "{set:?}");
        let controller = objects_of(manifest, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"] == "vmm-controller")
            .unwrap();
        let pod = &controller["spec"]["template"]["spec"];
        let args: Vec<&str> = pod["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let https = set.contains(&tls);
        assert_eq!(
            args.contains(&"--disk-tls-url=https://vmm-controller.vmm-system.svc:8443"),
            https,
            "{args:?}"
        );
        assert_eq!(args.contains(&"--disk-tls-for-cdi"), for_cdi, "{args:?}");
        let secret = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "disk-tls");
        assert_eq!(
            secret.map(|v| &v["secret"]["secretName"]),
            https.then_some(&serde_json::json!("disk-tls")),
            "{set:?}"
        );
    }
}

/// Both Deployments' pods may run where Pod Security `restricted` is
/// enforced: each pod template, as a Pod, passes a server-side dry run in a
/// namespace with the enforce label (admission checks Pods, not
/// Deployments, so the templates are checked as the Pods they become).
#[test]
fn the_pods_pass_pod_security_restricted() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new(cp, "chart-restricted").unwrap();
    ns.kubectl([
        "label",
        "namespace",
        ns.name(),
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .expect_success();
    let rendered = render("vmm", ns.name(), &[]).unwrap();
    let deployments = objects_of(rendered.ok().unwrap(), "Deployment");
    assert_eq!(deployments.len(), 2, "the apiserver and the controller");
    for deployment in deployments {
        let template = &deployment["spec"]["template"];
        // The ServiceAccount admission plugin wants the pod's account.
        let account = template["spec"]["serviceAccountName"].as_str().unwrap();
        ns.kubectl(["create", "serviceaccount", account])
            .expect_success();
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": deployment["metadata"]["name"], "labels": template["metadata"]["labels"]},
            "spec": template["spec"]});
        let created = ns.control_plane().kubectl_with_stdin(
            ["create", "--dry-run=server", "-n", ns.name(), "-f", "-"],
            &pod.to_string(),
        );
        assert!(
            created.success() && !created.stderr.contains("violate"),
            "{}: {created}",
            deployment["metadata"]["name"]
        );
    }
    // The same check refuses a pod that is not restricted.
    let root = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
        "spec": {"serviceAccountName": "vmm-controller",
                 "containers": [{"name": "c", "image": "busybox"}]}});
    let refused = ns.control_plane().kubectl_with_stdin(
        ["create", "--dry-run=server", "-n", ns.name(), "-f", "-"],
        &root.to_string(),
    );
    assert!(
        !refused.success() && refused.stderr.contains("restricted"),
        "{refused}"
    );
}

#[test]
fn the_addon_and_the_managed_chart_are_accepted_with_their_values() {
    let cp = ControlPlane::shared();
    // (file, where the object carries the chart's values)
    let cases = [
        ("harvester-addon.yaml", "/spec/valuesContent"),
        ("rancher-managedchart.yaml", "/spec/values"),
    ];
    for (file, values_at) in cases {
        let path = repo_root().join("charts/addon").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let object: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let namespace = object["metadata"]["namespace"].as_str().unwrap();
        let home = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        cp.kubectl_with_stdin(["apply", "-f", "-"], &home.to_string())
            .expect_success();
        let dry_run = |manifest: &str| {
            cp.kubectl_with_stdin(
                ["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
                manifest,
            )
        };
        let accepted = dry_run(&text);
        assert!(accepted.success(), "{file}: {accepted}");
        // Strict: a field the CRD does not know is refused, so the check above means something.
        let mut typo = object.clone();
        typo["spec"]["chartVersion"] = "0.1.0".into();
        let refused = dry_run(&typo.to_string());
        assert!(
            !refused.success() && refused.stderr.contains("chartVersion"),
            "{file} with an unknown field: {refused}"
        );

        let values = match object.pointer(values_at).unwrap() {
            serde_json::Value::String(yaml) => yaml.clone(),
            map => serde_yaml::to_string(map).unwrap(),
        };
        let values_file = vmm_testkit::process::run_dir()
            .unwrap()
            .join(format!("{file}.values.yaml"));
        std::fs::write(&values_file, values).unwrap();
        let rendered = helm([
            "template".into(),
            "vmm".into(),
            chart_dir().into_os_string(),
            "--values".into(),
            values_file.into_os_string(),
        ])
        .unwrap();
        assert!(rendered.success(), "{file}'s values: {rendered}");
    }
}

#[test]
fn inventory_access_comes_with_the_default_roles() {
    let cp = ControlPlane::shared();
    let _aggregation = cp
        .start_controller_manager(&["clusterrole-aggregation"])
        .unwrap();
    let ns = TestNamespace::new(cp, "chart-roles").unwrap();
    let manifest = render("roles", ns.name(), NO_APISERVICE).unwrap();
    cp.kubectl_with_stdin(
        ["apply", "--server-side", "-f", "-"],
        manifest.ok().unwrap(),
    )
    .expect_success();

    let suffix = vmm_testkit::namespace::random_suffix();
    for role in ["view", "edit", "admin"] {
        let user = format!("{role}-{suffix}");
        ns.kubectl([
            "create",
            "rolebinding",
            &user,
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ])
        .expect_success();
    }
    let can = |role: &str, verb: &str, resource: &str| {
        let out = cp.kubectl([
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns.name(),
            &format!("--as={role}-{suffix}"),
        ]);
        out.stdout.trim() == "yes"
    };
    let cases = [
        (
            "view",
            "list",
            "virtualmachines.inventory.harvesterhci.io",
            true,
        ),
        ("view", "watch", "networks.inventory.harvesterhci.io", true),
        ("view", "get", "vspheres.source.harvesterhci.io", true),
        ("view", "list", "importjobs.importjob.harvesterhci.io", true),
        (
            "view",
            "create",
            "importjobs.importjob.harvesterhci.io",
            false,
        ),
        (
            "edit",
            "create",
            "importjobs.importjob.harvesterhci.io",
            true,
        ),
        ("edit", "delete", "vspheres.source.harvesterhci.io", true),
        (
            "edit",
            "list",
            "virtualmachines.inventory.harvesterhci.io",
            true,
        ),
        ("admin", "create", "openstacks.source.harvesterhci.io", true),
        (
            "admin",
            "delete",
            "virtualmachines.inventory.harvesterhci.io",
            false,
        ),
    ];
    for (role, verb, resource, want) in cases {
        eventually(&format!("{role} may {verb} {resource}: {want}"), || {
            let got = can(role, verb, resource);
            (got == want)
                .then_some(())
                .ok_or_else(|| format!("can-i says {got}"))
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_need_no_more_than_the_charts_rbac() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let system = TestNamespace::new(cp, "chart-system").unwrap();
    let team = TestNamespace::new(cp, "chart-team").unwrap();
    let credentials = format!("rbac.credentials.namespaces={{{}}}", team.name());
    let manifest = render("vmm", system.name(), &[NO_APISERVICE[0], &credentials]).unwrap();
    cp.kubectl_with_stdin(
        ["apply", "--server-side", "-f", "-"],
        manifest.ok().unwrap(),
    )
    .expect_success();
    let apiserver_kubeconfig = cp
        .kubeconfig_for_service_account(system.name(), "vmm-apiserver")
        .unwrap();
    let program = workspace_binary("vmm-apiserver").unwrap();
    let inventory = start_inventory_api(cp, &program, &apiserver_kubeconfig)
        .await
        .unwrap();

    cp.apply_yaml(team.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let count = vcsim.info().vm_paths.len();
    eventually("the VMs listed", || {
        let out = team.kubectl(["get", "ivm", "-o", "name"]);
        (out.success() && out.stdout.lines().count() == count)
            .then_some(())
            .ok_or_else(|| format!("{out}"))
    });
    // Reading NADs works too: with none in the cluster, every VM says so.
    eventually("the NAD concern raised", || {
        let out = team.kubectl([
            "get",
            "ivm",
            "-o",
            "jsonpath={.items[*].status.concerns[*].reason}",
        ]);
        out.stdout
            .contains("NoNetworkToMapTo")
            .then_some(())
            .ok_or_else(|| format!("{out}"))
    });
    let log = inventory.server.process.log_tail(200);
    assert!(!log.contains("forbidden"), "a request was refused:\n{log}");

    // The controller as released (hack/test.sh keeps it in shipped/: built
    // without the test hooks), with only its ServiceAccount's token, imports
    // a VM. A crash point named in its environment must change nothing.
    let controller_kubeconfig = cp
        .kubeconfig_for_service_account(system.name(), "vmm-controller")
        .unwrap();
    let kubeconfig = &controller_kubeconfig;
    let program = workspace_binary("shipped/vmm-controller").unwrap();
    // With leader election, as in the chart's pod (its Lease RBAC too), and
    // the chart's name for the credentials role.
    let args = [
        "--leader-election-namespace",
        system.name(),
        "--credentials-cluster-role",
        "vmm-credentials",
    ];
    let options = ControllerOptions {
        args: &args,
        env: &[(crash::ENV, OsStr::new(crash::VALIDATED))],
        ..ControllerOptions::default()
    };
    let controller = start_controller_with(cp, &program, kubeconfig, &options).unwrap();
    let _harvester = import::prepare(cp, vcsim, &team, Duration::from_secs(1)).unwrap();
    let name = format!("chart {}", vmm_testkit::namespace::random_suffix());
    let disks = vec![DiskSpec::generated(8, 31, 0.5)];
    import::source_vm(vcsim, &name, disks).await.unwrap();
    import::create_job(cp, &team, "chart", &name, serde_json::json!({})).unwrap();
    let done = import::wait_finished(&team, "chart", WAIT).unwrap();
    let log = controller.server.process.log_tail(300);
    assert_eq!(
        done["status"]["phase"], "Succeeded",
        "{}\n{log}",
        done["status"]
    );
    assert!(!log.contains("forbidden"), "a request was refused:\n{log}");
    let ready = team.kubectl([
        "get",
        "vsphere",
        "vc",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready.stdout.trim(), "True", "{ready}");

    // Secrets are readable only where the chart was told sources live: a
    // source in another namespace is not Ready, and says which role to bind;
    // neither ServiceAccount's token can read a Secret there.
    let other = TestNamespace::new(cp, "chart-other").unwrap();
    cp.apply_yaml(other.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    eventually("the source said it may not read its Secret", || {
        let out = other.kubectl([
            "get",
            "vsphere",
            "vc",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}: {.status.conditions[?(@.type==\"Ready\")].message}",
        ]);
        (out.stdout.starts_with("SecretForbidden:")
            && out.stdout.contains("ClusterRole vmm-credentials"))
        .then_some(())
        .ok_or_else(|| format!("{out}"))
    });
    for (account, kubeconfig) in [
        ("apiserver", &apiserver_kubeconfig),
        ("controller", &controller_kubeconfig),
    ] {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let secrets = |namespace: &str| {
            let api = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
                client.clone(),
                namespace,
            );
            async move { api.get("vc-credentials").await }
        };
        if let Err(e) = secrets(team.name()).await {
            panic!("the {account} cannot read its tenant's Secret: {e}");
        }
        match secrets(other.name()).await {
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            read => panic!("the {account}'s token read a Secret it has no grant for: {read:?}"),
        }
    }
    // The tenant binds the shipped role: the source turns Ready and its VMs
    // are listed, with neither binary restarted.
    let subjects = ["vmm-apiserver", "vmm-controller"].map(|name| {
        serde_json::json!({"kind": "ServiceAccount", "name": name, "namespace": system.name()})
    });
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "vm-migration-credentials"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "vmm-credentials"},
        "subjects": subjects,
    });
    cp.apply_yaml(other.name(), &binding.to_string())
        .expect_success();
    eventually("the source turned Ready once the role was bound", || {
        let out = other.kubectl([
            "get",
            "vsphere",
            "vc",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (out.stdout.trim() == "True")
            .then_some(())
            .ok_or_else(|| format!("{out}"))
    });
    // The same vCenter, so the same VMs as the first tenant's (the import
    // above added one).
    eventually("the other tenant's VMs listed", || {
        let listed = other.kubectl(["get", "ivm", "-o", "name"]);
        let expected = team.kubectl(["get", "ivm", "-o", "name"]);
        (listed.success()
            && listed.stdout.lines().count() > count
            && listed.stdout == expected.stdout)
            .then_some(())
            .ok_or_else(|| format!("{listed}\nexpected:\n{expected}"))
    });
}

#[test]
fn the_ui_extension_chart_installs_the_package_as_a_uiplugin() {
    let cp = ControlPlane::shared();
    let lint = helm(["lint".into(), ui_chart_dir().into_os_string()]).unwrap();
    assert!(lint.success(), "{lint}");

    let ns = TestNamespace::new(cp, "cattle-ui-plugin-system").unwrap();
    let rendered = render_chart(&ui_chart_dir(), "vm-migration-ui", ns.name(), &[]).unwrap();
    let manifest = rendered.ok().unwrap().to_owned();
    // Rancher's UIPlugin CRD (controller-gen on the rancher/pkg/apis Harvester pins,
    // installed with every CRD of the peers) accepts it, strictly.
    let applied = cp.kubectl_with_stdin(
        ["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
        &manifest,
    );
    assert!(applied.success(), "{applied}");
    let mut typo: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&manifest)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|o: &serde_json::Value| !o.is_null())
        .collect();
    let plugin = typo
        .iter_mut()
        .find(|o| o["kind"] == "UIPlugin")
        .expect("a UIPlugin");
    let spec = plugin["spec"]["plugin"].clone();
    plugin["spec"]["plugin"]["endpoints"] = "http://typo".into();
    let refused = cp.kubectl_with_stdin(
        ["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
        &serde_json::to_string(plugin).unwrap(),
    );
    assert!(
        !refused.success() && refused.stderr.contains("endpoints"),
        "a UIPlugin with an unknown field: {refused}"
    );

    // It names the package the UI builds (Rancher loads <name>-<version>.umd.min.js),
    // with the package's own Rancher annotations, from the chart's Service.
    let package: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("ui-extension/pkg/vm-migration/package.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(spec["name"], package["name"]);
    assert_eq!(spec["version"], package["version"]);
    assert_eq!(spec["metadata"], package["rancher"]["annotations"]);
    assert_eq!(
        spec["endpoint"],
        format!("http://vm-migration-ui.{}.svc:8080", ns.name())
    );
}
