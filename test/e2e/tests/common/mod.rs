//! Helpers shared by the e2e suites that act on vcsim as a second client would.

use vmm_testkit::Vcsim;

/// Powers a VM (by managed object id, e.g. `vm-42`) off from a session of its own.
pub async fn power_off(vcsim: &Vcsim, vm_id: &str) {
    let actor = vcsim.connect().await.unwrap();
    actor.set_power(vm_id, false).await.expect("power off");
    actor.logout().await.unwrap();
}
