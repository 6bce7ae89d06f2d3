//! `vmm-dev`: the whole system on this machine, for trying it out (README,
//! `hack/up.sh`). Starts etcd + kube-apiserver with every CRD, vcsim, the
//! apiserver and controller binaries, and a demo `Vsphere` source in namespace
//! `demo`; prints how to reach it; stops everything on Ctrl-C or SIGTERM.
//! Every process it starts also dies with it if it is killed outright.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use vmm_testkit::servers::{start_controller, start_inventory_api};
use vmm_testkit::{ControlPlane, Inventory, Vcsim, repo_root};

const DEMO_NAMESPACE: &str = "demo";

const USAGE: &str = "usage: vmm-dev [--vms N] [--state-dir DIR] [--bin-dir DIR]

  --vms N          VMs per resource pool in the simulated vCenter (default 4)
  --state-dir DIR  where the kubeconfig is written (default <repo>/.vmm)
  --bin-dir DIR    where vmm-apiserver and vmm-controller are (default: next to vmm-dev)";

struct Args {
    vms: u32,
    state_dir: PathBuf,
    bin_dir: PathBuf,
}

fn parse_args() -> Result<Args> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut parsed = Args {
        vms: 4,
        state_dir: repo_root().join(".vmm"),
        bin_dir: exe.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--vms" => parsed.vms = value()?.parse().context("--vms needs a number")?,
            "--state-dir" => parsed.state_dir = value()?.into(),
            "--bin-dir" => parsed.bin_dir = value()?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(parsed)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    eprintln!("starting etcd and kube-apiserver …");
    let cp = ControlPlane::start()?;
    eprintln!("starting vcsim with {} VMs per pool …", args.vms);
    let vcsim = Vcsim::start(Inventory::with_vms(args.vms))?;

    std::fs::create_dir_all(&args.state_dir)?;
    let kubeconfig = args.state_dir.join("kubeconfig");
    std::fs::copy(cp.kubeconfig_path(), &kubeconfig).context("writing the kubeconfig")?;

    let controller = start_controller(
        &cp,
        &args.bin_dir.join("vmm-controller"),
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
        &args.bin_dir.join("vmm-apiserver"),
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
