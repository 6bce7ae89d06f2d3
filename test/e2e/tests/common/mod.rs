//! Helpers shared by the e2e suites that act on vcsim as a second client would.

use vmm_api::SourceKind;
use vmm_providers::Credentials;
use vmm_providers::vsphere::VsphereClient;
use vmm_testkit::Vcsim;

/// Powers a VM (by managed object id, e.g. `vm-42`) off from a session of its own.
pub async fn power_off(vcsim: &Vcsim, vm_id: &str) {
    let data = [
        ("username", vcsim.username()),
        ("password", vcsim.password()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
    .collect();
    let credentials = Credentials::from_secret(SourceKind::Vsphere, "test", &data).unwrap();
    let actor = VsphereClient::connect(vcsim.url(), &credentials, Some(vcsim.ca_pem()), false)
        .await
        .expect("connect to vcsim");
    actor.set_power(vm_id, false).await.expect("power off");
    actor.logout().await.unwrap();
}
