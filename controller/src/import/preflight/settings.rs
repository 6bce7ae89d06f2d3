//! The Harvester settings an import depends on, read the way Harvester's VM
//! webhook reads them (`pkg/webhook/resources/virtualmachine/mutator.go`): a
//! Setting's `value`, else its `default`; a missing Setting is what the
//! webhook treats as unset.

use kube::Api;
use kube::api::DynamicObject;
use vmm_api::external;

use crate::connect::Refused;

/// `overcommit-config`: a VM pod's requests are its limits × 100 / these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Overcommit {
    pub cpu: i128,
    pub memory: i128,
}

/// What the webhook keeps back from a VM's memory limit for QEMU when it
/// uses a fixed reserve (its legacy strategy).
const LEGACY_RESERVED_MEMORY_MIB: i64 = 100;

/// The overcommit percentages, or `None` when the cluster has no such
/// setting (not Harvester) or it cannot be read as Harvester would.
pub async fn overcommit(client: &kube::Client) -> Result<Option<Overcommit>, Refused> {
    let text = value(client, "overcommit-config").await?;
    Ok(text.and_then(|text| serde_json::from_str(&text).ok()))
}

/// How much less than its memory limit the webhook gives a VM's guest: the
/// fixed reserve unless `additional-guest-memory-overhead-ratio` is set to a
/// non-zero ratio (Harvester's default, "1.5", makes the guest the limit).
pub async fn reserved_memory_mib(client: &kube::Client) -> Result<i64, Refused> {
    let ratio = value(client, "additional-guest-memory-overhead-ratio").await?;
    let uses_ratio = ratio
        .and_then(|r| r.trim().parse::<f64>().ok())
        .is_some_and(|r| r != 0.0);
    Ok(if uses_ratio {
        0
    } else {
        LEGACY_RESERVED_MEMORY_MIB
    })
}

/// A setting's value, else its default; `None` when it is missing or both
/// are empty.
async fn value(client: &kube::Client, name: &str) -> Result<Option<String>, Refused> {
    let setting = Api::<DynamicObject>::all_with(client.clone(), &external::harvester_setting())
        .get_opt(name)
        .await;
    let setting = match setting {
        Ok(setting) => setting,
        // No Harvester settings here at all.
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(e) => {
            return Err(Refused::new(
                "SettingUnreadable",
                format!("cannot read Harvester's {name} setting: {e}"),
            ));
        }
    };
    Ok(setting.and_then(|setting| {
        [&setting.data["value"], &setting.data["default"]]
            .into_iter()
            .filter_map(|v| v.as_str())
            .find(|v| !v.is_empty())
            .map(str::to_owned)
    }))
}
