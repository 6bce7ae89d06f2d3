//! The disk endpoint over HTTPS, as an operator turns it on (docs/install.md,
//! "TLS on the disk endpoint"): the controller serves a certificate from
//! files; images of Longhorn's backend get the HTTPS URL, and the stand-in
//! for Longhorn's downloader, trusting nothing but Harvester's
//! `additional-ca`, imports them intact; an image of CDI's backend keeps
//! plain HTTP (Harvester v1.8 hands CDI's importer no CA); a client without
//! the CA is refused at the handshake; a renewed certificate is served
//! without a restart. Its own test binary: the controller here is the only
//! one reconciling this control plane's jobs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmm_testkit::harvester::{ImageController, Options, SHA256_ANNOTATION};
use vmm_testkit::import;
use vmm_testkit::pki::Ca;
use vmm_testkit::process::{free_port, pid_alive, run_dir};
use vmm_testkit::servers::{ControllerOptions, ControllerServer, start_controller_with};
use vmm_testkit::vcsim::{DiskSpec, qemu_img_raw_sha256};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, workspace_binary};

const WAIT: Duration = Duration::from_secs(300);

/// A client trusting only `ca_pem`.
fn client(ca_pem: &[&str]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(vmm_testkit::tls::client_config(ca_pem, None).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Whether a client trusting only `ca_pem` gets an HTTP answer at `url`.
async fn handshakes(ca_pem: &str, url: &str) -> bool {
    client(&[ca_pem]).get(url).send().await.is_ok()
}

fn image(ns: &TestNamespace, name: &str) -> Value {
    let out = ns.kubectl([
        "get",
        "virtualmachineimages.harvesterhci.io",
        name,
        "-o",
        "json",
    ]);
    serde_json::from_str(out.expect_success()).unwrap()
}

fn succeeded(ns: &TestNamespace, job: &str, controller: &ControllerServer) -> Value {
    let done = import::wait_finished(ns, job, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.server.process.log_tail(60)));
    assert_eq!(
        done["status"]["phase"],
        "Succeeded",
        "{}\n{}",
        done["status"],
        controller.server.process.log_tail(60)
    );
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longhorn_images_are_served_over_https_and_a_renewed_certificate_without_a_restart() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let dir = run_dir().unwrap();
    let ca = Ca::new(&dir, "disk-ca", "disk endpoint CA").unwrap();
    let issued = ca
        .issue_server("disk", "127.0.0.1", &["127.0.0.1"])
        .unwrap();
    // Where the Secret would be mounted: files replaced in place on renewal.
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let tls_port = free_port().unwrap();
    let https = format!("https://127.0.0.1:{tls_port}");
    let listen = format!("127.0.0.1:{tls_port}");
    let args = [
        "--disk-tls-cert-file",
        cert.to_str().unwrap(),
        "--disk-tls-key-file",
        key.to_str().unwrap(),
        "--disk-tls-listen-addr",
        &listen,
        "--disk-tls-url",
        &https,
    ];
    let program = workspace_binary("vmm-controller").unwrap();
    let options = ControllerOptions {
        args: &args,
        ..ControllerOptions::default()
    };
    let controller = start_controller_with(cp, &program, cp.kubeconfig_path(), &options).unwrap();

    // TLS is verified: the CA's clients get answers, others no handshake.
    let probe = format!("{https}/disks/no-such-token/disk.img");
    assert!(handshakes(ca.cert_pem(), &probe).await);
    let stranger = Ca::new(&dir, "other-ca", "another CA").unwrap();
    assert!(!handshakes(stranger.cert_pem(), &probe).await);

    let ns = TestNamespace::new(cp, "tls").unwrap();
    let _harvester = ImageController::start(
        cp.client(),
        Options {
            namespace: Some(ns.name().to_owned()),
            retry_delay: Duration::from_secs(1),
            additional_ca_pem: Some(ca.cert_pem().to_owned()),
            ..Options::default()
        },
    )
    .unwrap();
    import::network_and_source(cp, vcsim, &ns).unwrap();
    let class = format!("ceph-{}", ns.name());
    let storage_class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": class}, "provisioner": "rbd.csi.ceph.com"});
    cp.kubectl_with_stdin(["apply", "-f", "-"], &storage_class.to_string())
        .expect_success();

    // One job on Harvester's default (Longhorn), one on a CDI class.
    let suffix = vmm_testkit::namespace::random_suffix();
    let jobs = [("web", json!({})), ("db", json!({"storageClass": class}))];
    let mut sources = Vec::new();
    for (job, spec) in &jobs {
        let vm_name = format!("{job} {suffix}");
        let disks = vec![DiskSpec::generated(24, 5, 0.5)];
        sources.push(import::source_vm(vcsim, &vm_name, disks).await.unwrap());
        import::create_job(cp, &ns, job, &vm_name, spec.clone()).unwrap();
    }
    for ((job, _), source) in jobs.iter().zip(&sources) {
        succeeded(&ns, job, &controller);
        let image = image(&ns, &format!("{job}-disk-0"));
        let url = image["spec"]["url"].as_str().unwrap();
        let expected = if *job == "web" {
            format!("{https}/")
        } else {
            format!("{}/", controller.disk_url)
        };
        assert!(url.starts_with(&expected), "{job}: {url}");
        assert_eq!(
            image["metadata"]["annotations"][SHA256_ANNOTATION],
            qemu_img_raw_sha256(&source.disks[0].descriptor_file)
                .unwrap()
                .as_str(),
            "{job}"
        );
    }

    // Renewed in place by another CA: served from a later handshake on,
    // by the same process.
    let renewed_ca = Ca::new(&dir, "renewed-ca", "renewed disk endpoint CA").unwrap();
    let renewed = renewed_ca
        .issue_server("disk", "127.0.0.1", &["127.0.0.1"])
        .unwrap();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !handshakes(renewed_ca.cert_pem(), &probe).await {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is never served\n{}",
            controller.server.process.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!handshakes(ca.cert_pem(), &probe).await);
    assert!(pid_alive(controller.server.process.pid()));
}
