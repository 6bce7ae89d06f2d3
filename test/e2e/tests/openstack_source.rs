//! OpenStack sources against the real Keystone (and Glance) with the
//! project's stand-in for Nova, Cinder and Neutron registered in its
//! catalog: each way a source can be unusable is its own `Ready=False`
//! reason naming the fix; a usable one is browsed with kubectl, and changes
//! at the cloud reach `kubectl get ivm -w`.

use std::time::Duration;

use serde_json::{Value, json};
use vmm_testkit::openstack::{COMPUTE_ONLY_REGION, OpenStack, ProjectUser, ServerSeed};
use vmm_testkit::servers::{shared_controller, shared_inventory_api};
use vmm_testkit::sources::{KubectlWatch, pluck, ready_condition, secret, source};
use vmm_testkit::{ControlPlane, TestNamespace};

const WAIT: Duration = Duration::from_secs(120);

fn openstack(name: &str, endpoint: &str, secret: &str, settings: Value) -> Value {
    source("Openstack", name, endpoint, secret, settings)
}

fn password(user: &ProjectUser) -> Value {
    json!({"username": user.user, "password": user.password, "userDomain": user.domain})
}

/// The source's `Ready` condition once its reason is `reason`, and the source.
fn wait_for_reason(ns: &TestNamespace, name: &str, reason: &str) -> (Value, Value) {
    let source = ns.wait_for_ready_reason(&format!("openstack/{name}"), reason, WAIT);
    (ready_condition(&source), source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_sources_say_whether_they_can_be_used_and_what_to_fix() {
    let os = OpenStack::shared().await;
    let cp = ControlPlane::shared();
    shared_controller();
    let ns = TestNamespace::new(cp, "os-ready").unwrap();
    let keystone = &os.keystone;
    let user = keystone
        .create_project_user(
            "Default",
            &format!("{}-p", ns.name()),
            &format!("{}-u", ns.name()),
            "member",
        )
        .await
        .unwrap();
    let credential = keystone
        .create_application_credential(&user, "good")
        .await
        .unwrap();
    let revoked = keystone
        .create_application_credential(&user, "revoked")
        .await
        .unwrap();
    keystone
        .delete_application_credential(&user, &revoked)
        .await
        .unwrap();
    let expired = keystone
        .create_expired_application_credential(&user, "expired")
        .await
        .unwrap();
    let app = |c: &vmm_testkit::openstack::ApplicationCredential| json!({"applicationCredentialId": c.id, "applicationCredentialSecret": c.secret});
    let auth_url = keystone.url();
    let project = json!({"project": user.project, "pollIntervalSeconds": 2});
    let closed = format!(
        "http://127.0.0.1:{}/v3",
        vmm_testkit::process::free_port().unwrap()
    );
    // A TLS endpoint whose CA the source is not given: kube-apiserver's.
    let untrusted = format!("{}/v3", cp.server_url());
    let mut wrong = password(&user);
    wrong["password"] = json!("not-it");
    ns.apply_all(&[
        secret("password", password(&user)),
        secret("wrong", wrong),
        secret("app", app(&credential)),
        secret("revoked", app(&revoked)),
        secret("expired", app(&expired)),
        openstack("ok", &auth_url, "password", project.clone()),
        openstack("ok-app", &auth_url, "app", json!({"interface": "internal"})),
        openstack("bad-password", &auth_url, "wrong", project.clone()),
        openstack("revoked", &auth_url, "revoked", json!({})),
        openstack("expired", &auth_url, "expired", json!({})),
        openstack(
            "no-project",
            &auth_url,
            "password",
            json!({"project": "nowhere"}),
        ),
        openstack("no-region", &auth_url, "app", json!({"region": "Atlantis"})),
        openstack(
            "compute-only",
            &auth_url,
            "app",
            json!({"region": COMPUTE_ONLY_REGION}),
        ),
        openstack("unreachable", &closed, "app", json!({})),
        openstack("untrusted", &untrusted, "app", json!({})),
    ]);
    let cases = [
        ("ok", "Connected", "True", "OpenStack compute"),
        ("ok-app", "Connected", "True", "region RegionOne"),
        (
            "bad-password",
            "AuthenticationFailed",
            "False",
            "check username, password",
        ),
        (
            "revoked",
            "ApplicationCredentialRefused",
            "False",
            "create a new application credential",
        ),
        (
            "expired",
            "ApplicationCredentialRefused",
            "False",
            "expired",
        ),
        ("no-project", "ProjectNotFound", "False", "fix spec.project"),
        ("no-region", "RegionNotFound", "False", "RegionOne"),
        (
            "compute-only",
            "ServiceNotInCatalog",
            "False",
            "block-storage",
        ),
        ("unreachable", "EndpointUnreachable", "False", "unreachable"),
        ("untrusted", "CertificateUntrusted", "False", "CA bundle"),
    ];
    for (name, reason, status, says) in cases {
        let (ready, source) = tokio::task::block_in_place(|| wait_for_reason(&ns, name, reason));
        assert_eq!(ready["status"], status, "{name}: {ready}");
        let message = ready["message"].as_str().unwrap();
        assert!(message.contains(says), "{name}: {message}");
        for secret in [
            &user.password,
            &credential.secret,
            &revoked.secret,
            &expired.secret,
        ] {
            assert!(
                !message.contains(secret.as_str()),
                "{name}: a secret leaked: {message}"
            );
        }
        if status == "True" {
            assert!(
                source["status"]["endpointVersion"]
                    .as_str()
                    .is_some_and(|v| v.contains(&user.project)),
                "{name}: {}",
                source["status"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_browses_an_openstack_project_and_sees_its_changes() {
    let os = OpenStack::shared().await;
    let cp = ControlPlane::shared();
    shared_inventory_api();
    let ns = TestNamespace::new(cp, "os-browse").unwrap();
    let user = os
        .keystone
        .create_project_user(
            "Default",
            &format!("{}-p", ns.name()),
            &format!("{}-u", ns.name()),
            "member",
        )
        .await
        .unwrap();
    let cloud = &os.cloud;
    let project = &user.project_id;
    let private = cloud.add_network("private", project, Some(100));
    let public = cloud.add_network("public", project, None);
    let spare = cloud.add_network("spare", project, Some(300));
    let boot = cloud.add_volume("web-boot", project, 1, true).unwrap();
    let data = cloud.add_volume("web-data", project, 1, false).unwrap();
    let web = cloud
        .add_server(ServerSeed {
            vcpus: 4,
            ram_mib: 8192,
            flavor: "m1.large".into(),
            volumes: vec![boot, data.clone()],
            ports: vec![
                (private.clone(), "fa:16:3e:00:00:01".into()),
                (public.clone(), "fa:16:3e:00:00:02".into()),
            ],
            ..ServerSeed::new("web 01", project)
        })
        .unwrap();
    let db = cloud
        .add_server(ServerSeed {
            image: Some("cirros".into()),
            root_gib: 1,
            swap_mib: 512,
            ports: vec![(private.clone(), "fa:16:3e:00:00:03".into())],
            ..ServerSeed::new("db", project)
        })
        .unwrap();
    // Another project's server, which this source must not show.
    cloud
        .add_server(ServerSeed::new("elsewhere", "another-project"))
        .unwrap();
    ns.apply_all(&[
        secret("password", password(&user)),
        openstack(
            "cloud",
            &os.keystone.url(),
            "password",
            json!({"project": user.project, "pollIntervalSeconds": 2}),
        ),
    ]);

    let vms = tokio::task::block_in_place(|| ns.wait_for_list("ivm", 2, WAIT));
    let by_name = |name: &str| {
        vms.iter()
            .find(|vm| vm["spec"]["displayName"] == name)
            .unwrap_or_else(|| panic!("no VM {name} in {vms:?}"))
            .clone()
    };
    let web_vm = by_name("web 01");
    assert_eq!(web_vm["spec"]["id"], web.as_str());
    assert_eq!(
        (
            &web_vm["spec"]["cpus"],
            &web_vm["spec"]["memoryMib"],
            &web_vm["spec"]["flavor"]
        ),
        (&json!(4), &json!(8192), &json!("m1.large")),
        "{web_vm}"
    );
    assert_eq!(
        pluck(
            &web_vm["spec"]["disks"],
            &["name", "capacityBytes", "bootable"]
        ),
        [
            json!(["web-boot", 1u64 << 30, true]),
            json!(["web-data", 1u64 << 30, false]),
        ]
    );
    assert_eq!(
        pluck(&web_vm["spec"]["nics"], &["network", "macAddress"]),
        [
            json!(["private", "fa:16:3e:00:00:01"]),
            json!(["public", "fa:16:3e:00:00:02"]),
        ]
    );
    let db_vm = by_name("db");
    let reasons: Vec<_> = db_vm["status"]["concerns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        reasons.contains(&"ImageBackedRootDisk".to_owned())
            && reasons.contains(&"SwapDisk".to_owned()),
        "{reasons:?}"
    );
    let networks = tokio::task::block_in_place(|| ns.wait_for_list("inet", 3, WAIT));
    let vlans: Vec<_> = networks
        .iter()
        .map(|n| (n["spec"]["displayName"].clone(), n["spec"]["vlan"].clone()))
        .collect();
    assert!(vlans.contains(&(json!("private"), json!(100))), "{vlans:?}");

    // Changes at the cloud, seen through `kubectl get ivm -w`.
    let watch = KubectlWatch::start(&ns, "ivm");
    let wait_event = |what: &str, found: &dyn Fn(&Value) -> bool| watch.wait(what, WAIT, found);
    tokio::task::block_in_place(|| {
        wait_event("the initial list", &|e| {
            e["type"] == "ADDED" && e["object"]["spec"]["id"] == db.as_str()
        });
        cloud.rename_server(&web, "web 02");
        wait_event("the rename", &|e| {
            e["type"] == "MODIFIED" && e["object"]["spec"]["displayName"] == "web 02"
        });
        cloud.set_stop_delay(Duration::from_secs(1));
        cloud.stop_server(&web);
        wait_event("the stop", &|e| {
            e["type"] == "MODIFIED"
                && e["object"]["spec"]["id"] == web.as_str()
                && e["object"]["spec"]["powerState"] == "Off"
        });
        cloud.delete_server(&db);
        wait_event("the deletion", &|e| {
            e["type"] == "DELETED" && e["object"]["spec"]["id"] == db.as_str()
        });
        // Cinder's and Neutron's changes, read through their change filters.
        cloud.extend_volume(&data, 2).unwrap();
        wait_event("the volume's extension", &|e| {
            e["object"]["spec"]["id"] == web.as_str()
                && e["object"]["spec"]["disks"][1]["capacityBytes"] == 2u64 << 30
        });
        cloud.rename_network(&public, "public-2");
        wait_event("the network's rename", &|e| {
            e["object"]["spec"]["id"] == web.as_str()
                && e["object"]["spec"]["nics"][1]["network"] == "public-2"
        });
        // A deletion, which neither lists: seen in their lists of ids.
        cloud.delete_network(&spare);
        ns.wait_for_list("inet", 2, WAIT);
    });
    drop(watch);

    // After the first read, each poll asked for changes only: Cinder and
    // Neutron were listed in full once, then by their change filters (and
    // for ids alone, the cheapest list that shows deletions).
    let requests = cloud.requests(project);
    for (collection, filter, ids) in [
        ("/volumes/detail", "updated_at=gte:", "/volumes?"),
        ("/networks", "changed_since=", "fields=id"),
        ("/ports", "changed_since=", "fields=id"),
    ] {
        let listed: Vec<&String> = requests
            .iter()
            .filter(|r| r.starts_with("GET ") && r.contains(collection) && !r.contains(ids))
            .collect();
        let full = listed.iter().filter(|r| !r.contains(filter)).count();
        let changes = listed.len() - full;
        assert!(
            full == 1 && changes >= 3,
            "{collection}: {full} full lists, {changes} of changes: {listed:?}"
        );
    }
}
