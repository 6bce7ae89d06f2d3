//! `vmm-dev`: the whole system on this machine, for trying it out (README,
//! `hack/up.sh`) and for the UI's browser suite and benchmark. Starts etcd +
//! kube-apiserver with every CRD, vcsim, the apiserver and controller
//! binaries, the stand-in for Harvester's image importer (so imports run to
//! the end), a demo `Vsphere` source with two small VMs to import in
//! namespace `demo`, and with `--ui-dist` steve and the built UI; prints how
//! to reach it; stops everything on Ctrl-C or SIGTERM. Every process it
//! starts also dies with it if it is killed outright.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use vmm_testkit::harvester::{ImageController, Options};
use vmm_testkit::import::nad;
use vmm_testkit::servers::{start_controller, start_inventory_api};
use vmm_testkit::ui::{PRODUCT_NEEDS, SHELL_NEEDS, Steve, UiServer, apply_rancher_objects};
use vmm_testkit::vcsim::{DiskSpec, NicSpec, VmSpec};
use vmm_testkit::{ControlPlane, Inventory, Vcsim, repo_root};

const DEMO_NAMESPACE: &str = "demo";
/// The demo's NAD, on the VLAN of vcsim's "VM Network".
const DEMO_NAD: &str = "vlan-a";
/// VMs with real disk contents, small enough to import in seconds.
const DEMO_VMS: [&str; 2] = ["Web 01", "Ünïcödé-VM €"];

/// The whole system on this machine, for trying it out.
#[derive(Parser)]
#[command(name = "vmm-dev")]
struct Args {
    /// VMs per resource pool in the simulated vCenter (besides the demo's).
    #[arg(long, default_value_t = 4)]
    vms: u32,
    /// Where the kubeconfig is written (default <repo>/.vmm).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where vmm-apiserver and vmm-controller are (default: next to vmm-dev).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Serve this built UI (ui-extension/dist, `npm run build`) through steve.
    #[arg(long)]
    ui_dist: Option<PathBuf>,
    /// The steve binary (default: $VMM_STEVE_DIR/bin/steve or `hack/build-peers.sh --steve`).
    #[arg(long, requires = "ui_dist")]
    steve: Option<PathBuf>,
    /// How fast the image importer stand-in downloads, in MiB/s (0: unlimited).
    /// Slow enough by default that an import's progress can be watched.
    #[arg(long, default_value_t = 32)]
    download_mib_per_sec: u64,
    /// Capacity of each demo VM's disk, in MiB.
    #[arg(long, default_value_t = 512)]
    demo_disk_mib: u64,
    /// With --ui-dist, also serve the UI to a user without any role for our
    /// resources (the browser suite checks the "not allowed" pages there).
    #[arg(long, requires = "ui_dist")]
    ui_restricted: bool,
    /// Once everything runs, write what it is (URLs, kubeconfig, vcsim) here as
    /// JSON; the browser suite and the UI benchmark read it.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let state_dir = args.state_dir.unwrap_or_else(|| repo_root().join(".vmm"));
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .context("cannot find this program's path")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    eprintln!("starting etcd and kube-apiserver …");
    let cp = ControlPlane::start()?;
    eprintln!("starting vcsim with {} VMs per pool …", args.vms);
    let vcsim = Vcsim::start(Inventory::with_vms(args.vms))?;

    std::fs::create_dir_all(&state_dir)?;
    let kubeconfig = state_dir.join("kubeconfig");
    std::fs::copy(cp.kubeconfig_path(), &kubeconfig).context("writing the kubeconfig")?;

    let controller = start_controller(
        &cp,
        &bin_dir.join("vmm-controller"),
        cp.kubeconfig_path(),
        &[],
    )?;
    eprintln!(
        "vmm-controller ready ({}; disks served at {})",
        controller.server.admin_url("/metrics"),
        controller.disk_url
    );
    let apiserver = runtime.block_on(start_inventory_api(
        &cp,
        &bin_dir.join("vmm-apiserver"),
        cp.kubeconfig_path(),
    ))?;
    eprintln!(
        "vmm-apiserver ready ({})",
        apiserver.server.admin_url("/metrics")
    );
    let image_importer = {
        let _entered = runtime.enter();
        ImageController::start(
            cp.client(),
            Options {
                download_rate: (args.download_mib_per_sec > 0)
                    .then_some(args.download_mib_per_sec << 20),
                ..Options::default()
            },
        )?
    };

    eprintln!("creating the demo source and VMs …");
    cp.kubectl(["create", "namespace", DEMO_NAMESPACE])
        .expect_success();
    cp.kubectl_with_stdin(
        ["apply", "-f", "-"],
        &nad(DEMO_NAMESPACE, DEMO_NAD, 10).to_string(),
    )
    .ok()?;
    let demo_vms = runtime.block_on(create_demo_vms(&vcsim, args.demo_disk_mib))?;
    cp.apply_yaml(DEMO_NAMESPACE, &vcsim.source_manifest("vcsim"))
        .expect_success();

    let ui = match &args.ui_dist {
        None => None,
        Some(dist) => {
            let steve_bin = match &args.steve {
                Some(bin) => bin.clone(),
                None => vmm_testkit::peers::steve()?,
            };
            apply_rancher_objects(&cp)?;
            let steve = Steve::start(&cp, &steve_bin)?;
            let server = UiServer::start(
                &cp,
                dist,
                &steve,
                &[&SHELL_NEEDS[..], &PRODUCT_NEEDS].concat(),
            )?;
            eprintln!("UI ready at {}", server.url);
            let restricted = if args.ui_restricted {
                let steve = Steve::start_restricted(&cp, &steve_bin)?;
                let server = UiServer::start(&cp, dist, &steve, &SHELL_NEEDS)?;
                eprintln!("UI for a user without roles at {}", server.url);
                Some((steve, server))
            } else {
                None
            };
            Some((steve, server, restricted))
        }
    };

    let kubectl = cp.peers().kubectl();
    let ready = json!({
        "kubeconfig": kubeconfig,
        "kubectl": kubectl,
        "logs": cp.dir(),
        "namespace": DEMO_NAMESPACE,
        "nad": DEMO_NAD,
        "demoVms": demo_vms,
        "vcsim": {
            "url": vcsim.url(),
            "username": vcsim.username(),
            "password": vcsim.password(),
            "caPem": vcsim.ca_pem(),
            "harnessUrl": vcsim.harness_url(""),
        },
        "ui": ui.as_ref().map(|(steve, server, restricted)| json!({
            "url": server.url,
            "requestLog": server.request_log,
            "steveUrl": steve.url(),
            "restrictedUrl": restricted.as_ref().map(|(_, server)| &server.url),
        })),
    });
    if let Some(path) = &args.ready_file {
        std::fs::write(path, serde_json::to_vec_pretty(&ready)?)
            .with_context(|| format!("write {}", path.display()))?;
    }

    let bin = kubectl.parent().unwrap_or(Path::new("."));
    let ui_line = match &ui {
        Some((_, server, _)) => format!(
            "\nOpen the UI: {}c/local/migration (the VM Migration product; no login)\n",
            server.url
        ),
        None => String::new(),
    };
    println!(
        "\nVM migration is running locally (logs in {logs}).
{ui_line}
  export KUBECONFIG={kubeconfig}
  export PATH={bin}:$PATH    # the pinned kubectl the tests use

  kubectl get vspheres -n {DEMO_NAMESPACE}             # the demo source, a simulated vCenter
  kubectl get migration -n {DEMO_NAMESPACE} -o wide    # everything of ours in the namespace
  kubectl explain importjobs.spec          # the import job API
  kubectl get ivm -n {DEMO_NAMESPACE} -o wide          # the simulated vCenter's VMs, live
  kubectl get inet -n {DEMO_NAMESPACE}                 # and its networks

  # Import {vm:?} into Harvester (stand-in), then watch it run to Succeeded:
  kubectl apply -n {DEMO_NAMESPACE} -f - <<'EOF'
{job}EOF
  kubectl get ij -n {DEMO_NAMESPACE} -w

vCenter simulator: {vcsim_url} (user {user:?}, password {password:?})
Stop everything with Ctrl-C.",
        logs = cp.dir().display(),
        kubeconfig = kubeconfig.display(),
        bin = bin.display(),
        vm = DEMO_VMS[0],
        job = demo_job(DEMO_VMS[0]),
        vcsim_url = vcsim.url(),
        user = vcsim.username(),
        password = vcsim.password(),
    );
    std::io::stdout().flush()?;

    runtime.block_on(vmm_runtime::shutdown_signal());
    eprintln!("stopping …");
    drop(ui);
    drop(image_importer);
    drop(apiserver);
    drop(controller);
    drop(vcsim);
    drop(cp);
    let _ = std::fs::remove_file(&kubeconfig);
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The demo VMs: powered on, one NIC on "VM Network", one disk with some data
/// (a tenth of it, so vcsim's export stays quick). Returns their names and ids.
async fn create_demo_vms(vcsim: &Vcsim, disk_mib: u64) -> Result<Vec<serde_json::Value>> {
    let mut created = Vec::new();
    for (seed, name) in (1..).zip(DEMO_VMS) {
        let spec = VmSpec::new(name)
            .nic(NicSpec::on("VM Network"))
            .disk(DiskSpec::generated(disk_mib, seed, 0.1))
            .powered_on(true);
        let vm = vcsim.create_vm(&spec).await?;
        created.push(json!({"name": vm.name, "moref": vm.moref}));
    }
    Ok(created)
}

/// An import job for the demo VM `vm_name` (YAML), named after it.
fn demo_job(vm_name: &str) -> String {
    format!(
        "apiVersion: importjob.harvesterhci.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  sourceCluster: {{kind: Vsphere, name: vcsim}}
  vmName: {vm_name:?}
  mapping:
    - {{sourceNetwork: VM Network, destinationNetwork: {DEMO_NAD}}}
",
        name = vmm_api::names::target_vm_name(vm_name),
    )
}
