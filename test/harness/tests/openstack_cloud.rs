//! The stand-in for Nova, Cinder and Neutron, checked with the official
//! client rather than with our own provider: python-openstackclient (pinned
//! in the OpenStack world's venv) lists, shows and stops servers, lists and
//! shows volumes, snapshots a volume, uploads a volume to an image (into the
//! real Glance), and lists networks and ports, finding every service through
//! the real Keystone's catalog.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmm_testkit::openstack::{OpenStack, OpenStackBuild, ProjectUser, REGION, ServerSeed};

/// `openstack <args> -f json` as `user`, parsed; a panic with its stderr on failure.
fn openstack(os: &OpenStack, user: &ProjectUser, args: &[&str]) -> Value {
    let program = OpenStackBuild::get().unwrap().bin("openstack");
    let output = Command::new(&program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("OS_AUTH_URL", os.keystone.url())
        .env("OS_IDENTITY_API_VERSION", "3")
        .env("OS_USERNAME", &user.user)
        .env("OS_PASSWORD", &user.password)
        .env("OS_USER_DOMAIN_NAME", &user.domain)
        .env("OS_PROJECT_NAME", &user.project)
        .env("OS_PROJECT_DOMAIN_NAME", &user.domain)
        .env("OS_REGION_NAME", REGION)
        .env("OS_INTERFACE", "public")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openstack {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("openstack {}: {e}: {stdout}", args.join(" ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstackclient_sees_the_stand_in_as_a_cloud() {
    let os = OpenStack::shared().await;
    let user = os
        .keystone
        .create_project_user("Default", "osc-check", "osc-user", "member")
        .await
        .unwrap();
    let cloud = &os.cloud;
    let project = &user.project_id;
    let network = cloud.add_network("private", project, Some(100));
    let boot = cloud.add_volume("boot", project, 1, true).unwrap();
    let server = cloud
        .add_server(ServerSeed {
            volumes: vec![boot.clone()],
            ports: vec![(network.clone(), "fa:16:3e:00:00:99".into())],
            ..ServerSeed::new("web", project)
        })
        .unwrap();
    cloud.set_stop_delay(Duration::from_secs(1));

    tokio::task::block_in_place(|| {
        let run = |args: &[&str]| openstack(os, &user, args);

        let servers = run(&["server", "list", "-f", "json"]);
        assert_eq!(servers[0]["ID"], server.as_str(), "{servers}");
        assert_eq!(servers[0]["Status"], "ACTIVE");
        let shown = run(&["server", "show", &server, "-f", "json"]);
        assert_eq!(shown["name"], "web", "{shown}");
        run(&["server", "stop", &server]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while run(&["server", "show", &server, "-f", "json"])["status"] != "SHUTOFF" {
            assert!(Instant::now() < deadline, "the server never stopped");
            std::thread::sleep(Duration::from_millis(500));
        }

        let volumes = run(&["volume", "list", "-f", "json"]);
        assert_eq!(volumes[0]["ID"], boot.as_str(), "{volumes}");
        let volume = run(&["volume", "show", &boot, "-f", "json"]);
        assert_eq!(
            (&volume["size"], &volume["bootable"]),
            (&1.into(), &true.into()),
            "{volume}"
        );
        let snapshot = run(&[
            "volume", "snapshot", "create", "--volume", &boot, "--force", "osc-snap", "-f", "json",
        ]);
        assert_eq!(snapshot["volume_id"], boot.as_str(), "{snapshot}");

        let networks = run(&["network", "list", "-f", "json"]);
        assert_eq!(networks[0]["ID"], network.as_str(), "{networks}");
        let ports = run(&["port", "list", "-f", "json"]);
        assert_eq!(ports[0]["MAC Address"], "fa:16:3e:00:00:99", "{ports}");
    });

    // A volume to an image: the image lands in the real Glance, whole.
    let spare = cloud.add_volume("spare", project, 1, false).unwrap();
    let image = tokio::task::block_in_place(|| {
        openstack(
            os,
            &user,
            &[
                "image",
                "create",
                "--volume",
                &spare,
                "osc-image",
                "-f",
                "json",
            ],
        )
    });
    let image_id = image["image_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{image}"))
        .to_owned();
    let token = os
        .keystone
        .authenticate(&user.password_auth())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = os.glance.image(&token, &image_id).await.unwrap();
        if found.status == "active" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the image never became active: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        os.glance.image_sha256(&token, &image_id).await.unwrap(),
        cloud.volume_sha256(&spare).unwrap()
    );
}
