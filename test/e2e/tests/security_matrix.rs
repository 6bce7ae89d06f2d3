//! The security matrix (issue 16): every way in that must be refused, tried
//! against the real servers (kube-apiserver's aggregator in front of the
//! inventory apiserver, the controller and its disk endpoint), one row per
//! case. The test prints the table `docs/reliability.md` records (run it with
//! `--nocapture`) and fails on any case that got through. Each refusal is
//! checked against a control that is allowed (the same request with the
//! right identity, namespace or token), so a refusal cannot come from a
//! broken setup.

use std::time::Duration;

use serde_json::json;
use vmm_testkit::servers::{shared_controller, shared_inventory_api};
use vmm_testkit::tls::reqwest_client;
use vmm_testkit::vcsim::DiskSpec;
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, import};

const GROUP: &str = "inventory.harvesterhci.io";
const WAIT: Duration = Duration::from_secs(120);

/// One case: what was tried, whether it was refused, and what came back.
struct Row {
    case: &'static str,
    refused: bool,
    seen: String,
}

struct Matrix(Vec<Row>);

impl Matrix {
    fn row(&mut self, case: &'static str, refused: bool, seen: impl Into<String>) {
        let seen = seen.into().replace('\n', " ");
        self.0.push(Row {
            case,
            refused,
            seen: seen.chars().take(160).collect(),
        });
    }

    /// A kubectl run that must fail with `says` in its error.
    fn refused_kubectl(&mut self, case: &'static str, out: &vmm_testkit::CmdOutput, says: &str) {
        let refused = !out.success() && out.stderr.contains(says);
        let seen = if out.success() {
            format!("allowed: {}", out.stdout)
        } else {
            out.stderr.clone()
        };
        self.row(case, refused, seen);
    }

    fn report(&self) -> (usize, usize) {
        println!("| case | refused | what came back |\n|---|---|---|");
        for row in &self.0 {
            let mark = if row.refused { "yes" } else { "**NO**" };
            println!(
                "| {} | {mark} | {} |",
                row.case,
                row.seen.replace('|', "\\|")
            );
        }
        let refused = self.0.iter().filter(|r| r.refused).count();
        println!(
            "security cases refused / tried: {refused} / {}",
            self.0.len()
        );
        (refused, self.0.len())
    }
}

/// A Role in `namespace` that may read the inventory's VMs, bound to `user`.
fn inventory_reader(namespace: &str, user: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "inventory-reader", "namespace": namespace},
                "rules": [{"apiGroups": [GROUP], "resources": ["virtualmachines"], "verbs": ["get", "list", "watch"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "inventory-reader", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "inventory-reader"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            },
        ],
    })
    .to_string()
}

/// The `status.conditions[type=Ready]` reason of an object, once it has one.
fn ready_reason(ns: &TestNamespace<'_>, kind: &str, name: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = ns.kubectl([
            "get",
            kind,
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ]);
        let reason = out.stdout.trim();
        if !reason.is_empty() || std::time::Instant::now() > deadline {
            return reason.to_owned();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_of_the_security_matrix_is_refused() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let inventory = shared_inventory_api();
    let controller = shared_controller();
    let team = TestNamespace::new(cp, "sec-team").unwrap();
    let other = TestNamespace::new(cp, "sec-other").unwrap();
    let _harvester = import::prepare(cp, vcsim, &team, Duration::from_secs(1)).unwrap();
    let listed = {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let out = team.kubectl(["get", "ivm", "-o", "name"]);
            if out.success() && !out.stdout.trim().is_empty() {
                break out.stdout;
            }
            assert!(std::time::Instant::now() < deadline, "never listed: {out}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let a_vm = listed
        .lines()
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mut matrix = Matrix(Vec::new());

    // Straight to the inventory apiserver, past kube-apiserver.
    let ca = cp.pki().cluster_ca.cert_pem();
    let url = format!(
        "https://127.0.0.1:{}/apis/{GROUP}/v1/namespaces/{}/virtualmachines",
        inventory.port,
        team.name()
    );
    let status = |response: reqwest::Result<reqwest::Response>| match response {
        Ok(response) => response.status().as_u16().to_string(),
        Err(error) => format!("no answer: {error}"),
    };
    let anonymous = reqwest_client(&[ca], None).unwrap();
    let seen = status(anonymous.get(&url).send().await);
    matrix.row("no credentials", seen == "401", seen);
    let seen = status(
        anonymous
            .get(&url)
            .header("X-Remote-User", "admin")
            .header("X-Remote-Group", "system:masters")
            .send()
            .await,
    );
    matrix.row(
        "forged X-Remote-User without a proxy certificate",
        seen == "401",
        seen,
    );
    let stranger = cp.pki().issue_user("stranger", &[]).unwrap();
    let stranger = reqwest_client(&[ca], Some((&stranger.cert_pem, &stranger.key_pem))).unwrap();
    let seen = status(
        stranger
            .get(&url)
            .header("X-Remote-User", "admin")
            .send()
            .await,
    );
    matrix.row(
        "a client certificate from another CA (the users' CA, not the front proxy's)",
        seen.starts_with("no answer"),
        seen,
    );
    let impostor = cp
        .pki()
        .front_proxy_ca
        .issue_client("impostor", "impostor", &[])
        .unwrap();
    let impostor = reqwest_client(&[ca], Some((&impostor.cert_pem, &impostor.key_pem))).unwrap();
    let seen = status(
        impostor
            .get(&url)
            .header("X-Remote-User", "admin")
            .header("X-Remote-Group", "system:masters")
            .send()
            .await,
    );
    matrix.row(
        "the front proxy's CA, but not an allowed proxy name",
        seen == "401",
        seen,
    );
    let proxy = &cp.pki().front_proxy_client;
    let proxy = reqwest_client(&[ca], Some((&proxy.cert_pem, &proxy.key_pem))).unwrap();
    let control = status(
        proxy
            .get(&url)
            .header("X-Remote-User", "admin")
            .header("X-Remote-Group", "system:masters")
            .send()
            .await,
    );
    assert_eq!(control, "200", "the real proxy certificate must be let in");

    // Through kube-apiserver, as users.
    let nobody = cp.kubectl_as("sec-nobody", &[], ["get", "ivm", "-n", team.name()]);
    matrix.refused_kubectl("a user with no RBAC", &nobody, "Forbidden");
    let tenant = "sec-tenant-b";
    cp.kubectl_with_stdin(
        ["apply", "-f", "-"],
        &inventory_reader(other.name(), tenant),
    )
    .expect_success();
    let as_tenant = |args: &[&str]| cp.kubectl_as(tenant, &[], args.iter().copied());
    let deadline = std::time::Instant::now() + WAIT;
    while !as_tenant(&["get", "ivm", "-n", other.name()]).success() {
        assert!(
            std::time::Instant::now() < deadline,
            "the tenant never may read its own namespace"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    matrix.refused_kubectl(
        "a tenant lists another namespace",
        &as_tenant(&["get", "ivm", "-n", team.name()]),
        "Forbidden",
    );
    matrix.refused_kubectl(
        "a tenant gets a VM of another namespace",
        &as_tenant(&["get", "ivm", &a_vm, "-n", team.name()]),
        "Forbidden",
    );
    let watch = format!(
        "/apis/{GROUP}/v1/namespaces/{}/virtualmachines?watch=true&timeoutSeconds=5",
        team.name()
    );
    matrix.refused_kubectl(
        "a tenant watches another namespace",
        &as_tenant(&["get", "--raw", &watch]),
        "Forbidden",
    );
    matrix.refused_kubectl(
        "a tenant lists all namespaces with a field selector naming another",
        &as_tenant(&[
            "get",
            "ivm",
            "-A",
            "--field-selector",
            &format!("metadata.namespace={}", team.name()),
        ]),
        "Forbidden",
    );
    let own_selecting_other = as_tenant(&[
        "get",
        "ivm",
        "-n",
        other.name(),
        "--field-selector",
        &format!("metadata.namespace={}", team.name()),
        "-o",
        "name",
    ]);
    matrix.row(
        "a tenant lists its own namespace with a field selector naming another",
        own_selecting_other.success() && own_selecting_other.stdout.trim().is_empty(),
        format!(
            "listed: [{}] {}",
            own_selecting_other.stdout.trim(),
            own_selecting_other.stderr.trim()
        ),
    );

    // A source that names another namespace's Secret: the API has no field for
    // it (strict validation refuses one), and a pruned one reads its own.
    let borrowing = json!({
        "apiVersion": "source.harvesterhci.io/v1", "kind": "Vsphere",
        "metadata": {"name": "borrowing"},
        "spec": {
            "endpoint": vcsim.url(),
            "credentials": {"name": "vc-credentials", "namespace": team.name()},
            "datacenter": vcsim.datacenter(),
            "caBundle": vcsim.ca_pem(),
        },
    })
    .to_string();
    let strict = cp.kubectl_with_stdin(
        ["apply", "--validate=strict", "-n", other.name(), "-f", "-"],
        &borrowing,
    );
    let strict_refused = !strict.success() && strict.stderr.contains("unknown field");
    cp.kubectl_with_stdin(
        ["apply", "--validate=ignore", "-n", other.name(), "-f", "-"],
        &borrowing,
    )
    .expect_success();
    let reason = ready_reason(&other, "vsphere", "borrowing");
    matrix.row(
        "a source naming another namespace's Secret",
        strict_refused && reason == "SecretNotFound",
        format!(
            "strict apply: {}; applied anyway: Ready reason {reason}",
            strict.stderr.trim()
        ),
    );

    // An import job naming a source of another namespace.
    let job = |namespace: Option<&str>| {
        let mut source = json!({"kind": "Vsphere", "name": "vc"});
        if let Some(namespace) = namespace {
            source["namespace"] = json!(namespace);
        }
        json!({
            "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "borrowing"},
            "spec": {"sourceCluster": source, "vmName": "DC0_H0_VM0", "mapping": []},
        })
        .to_string()
    };
    let strict = cp.kubectl_with_stdin(
        ["apply", "--validate=strict", "-n", other.name(), "-f", "-"],
        &job(Some(team.name())),
    );
    let strict_refused = !strict.success() && strict.stderr.contains("unknown field");
    cp.kubectl_with_stdin(["apply", "-n", other.name(), "-f", "-"], &job(None))
        .expect_success();
    let (reason, message) = import::failure(&other, "borrowing", WAIT);
    matrix.row(
        "an import job naming a source in another namespace",
        strict_refused && reason == "SourceNotFound",
        format!(
            "strict apply: {}; applied in its own namespace: {reason}: {message}",
            strict.stderr.trim()
        ),
    );

    // The disk endpoint: a real import's URLs, then tokens that are wrong.
    let name = format!("sec {}", vmm_testkit::namespace::random_suffix());
    import::source_vm(vcsim, &name, vec![DiskSpec::generated(4, 7, 0.5)])
        .await
        .unwrap();
    import::create_job(cp, &team, "sec", &name, json!({})).unwrap();
    let done = import::succeeded(&team, "sec", WAIT);
    let images: Vec<String> = done["status"]["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|disk| disk["imageName"].as_str().map(str::to_owned))
        .collect();
    assert!(!images.is_empty(), "{}", done["status"]);
    let http = reqwest_client(&[], None).unwrap();
    let get = |url: String| {
        let request = http.get(url);
        async move { status(request.send().await) }
    };
    let base = format!("http://127.0.0.1:{}", controller.disk_port);
    let seen = get(format!("{base}/disks/")).await;
    matrix.row("a disk URL without a token", seen == "404", seen);
    let seen = get(format!("{base}/disks/not-a-token/disk-0.img")).await;
    matrix.row("a disk URL with a wrong token", seen == "404", seen);
    let mut after = Vec::new();
    for image in &images {
        let url = team.kubectl([
            "get",
            "virtualmachineimages.harvesterhci.io",
            image,
            "-o",
            "jsonpath={.spec.url}",
        ]);
        after.push(get(url.expect_success().trim().to_owned()).await);
    }
    matrix.row(
        "a disk URL with its token after its job ended",
        after.iter().all(|s| s == "404"),
        after.join(", "),
    );

    let (refused, tried) = matrix.report();
    assert_eq!(refused, tried, "a case got through: see the table above");
}
