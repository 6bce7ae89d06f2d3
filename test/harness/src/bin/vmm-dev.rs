//! `vmm-dev`: the whole system on this machine, for trying it out (README,
//! `hack/up.sh`). Starts etcd + kube-apiserver with every CRD, vcsim, the
//! apiserver and controller binaries, and a demo `Vsphere` source in namespace
//! `demo`; prints how to reach it; stops everything on Ctrl-C or SIGTERM.
//! Every process it starts also dies with it if it is killed outright.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use vmm_testkit::servers::{start_controller, start_inventory_api};
use vmm_testkit::{ControlPlane, Inventory, Vcsim, repo_root};

const DEMO_NAMESPACE: &str = "demo";

/// The whole system on this machine, for trying it out.
#[derive(Parser)]
#[command(name = "vmm-dev")]
struct Args {
    /// VMs per resource pool in the simulated vCenter.
    #[arg(long, default_value_t = 4)]
    vms: u32,
    /// Where the kubeconfig is written (default <repo>/.vmm).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where vmm-apiserver and vmm-controller are (default: next to vmm-dev).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
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
    let runtime = tokio::runtime::Builder::new_current_thread()
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

    eprintln!("creating the demo source …");
    cp.kubectl(["create", "namespace", DEMO_NAMESPACE])
        .expect_success();
    cp.apply_yaml(DEMO_NAMESPACE, &vcsim.source_manifest("vcsim"))
        .expect_success();

    let bin = cp.peers().kubectl();
    let bin = bin.parent().unwrap_or(Path::new("."));
    println!(
        "\nVM migration is running locally (logs in {logs}).

  export KUBECONFIG={kubeconfig}
  export PATH={bin}:$PATH    # the pinned kubectl the tests use

  kubectl get vspheres -n {DEMO_NAMESPACE}             # the demo source, a simulated vCenter
  kubectl get migration -n {DEMO_NAMESPACE} -o wide    # everything of ours in the namespace
  kubectl explain importjobs.spec          # the import job API
  kubectl get ivm -n {DEMO_NAMESPACE} -o wide          # the simulated vCenter's VMs, live
  kubectl get inet -n {DEMO_NAMESPACE}                 # and its networks

vCenter simulator: {vcsim_url} (user {user:?}, password {password:?})
Stop everything with Ctrl-C.",
        logs = cp.dir().display(),
        kubeconfig = kubeconfig.display(),
        bin = bin.display(),
        vcsim_url = vcsim.url(),
        user = vcsim.username(),
        password = vcsim.password(),
    );
    std::io::stdout().flush()?;

    runtime.block_on(vmm_runtime::shutdown_signal());
    eprintln!("stopping …");
    drop(apiserver);
    drop(controller);
    drop(vcsim);
    drop(cp);
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}
