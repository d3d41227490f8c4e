//! The seeds of machines joining the host cluster: for each BareMetalMachine the
//! inventory knows, the NoCloud meta-data and user-data that make its installed
//! system run `shoal agent` as a Host named after it, rendered by `shoal-bootstrap`
//! from its spec (role, production NIC) and the agents' kubeconfig.
//!
//! The inventory renders a machine's seed each time it syncs it (its first PXE
//! contact of every boot comes first) and on every provisioning pass (every two
//! seconds, so a machine registered ahead, or whose spec changed, has its seed
//! before it boots), and the HTTP side serves it; the seed directory, when it has
//! files for the machine, still wins.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use kube::ResourceExt;
use shoal_api::{BareMetalMachine, MachineRole};
use shoal_bootstrap::{render_host_join, BootstrapError, HostJoin, HostNetwork, HostRole};

use crate::mac::Mac;

/// What every joining machine gets.
#[derive(Clone)]
pub struct JoinSettings {
    /// The kubeconfig its agent uses: the API's address as the machines reach it
    /// (on the production network when they have one), and credentials.
    pub kubeconfig: String,
    /// The boot server's base URL, e.g. `http://10.78.0.2:8080` (for phone home).
    pub base_url: String,
}

impl std::fmt::Debug for JoinSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinSettings")
            .field("kubeconfig", &"<redacted>")
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// One machine's rendered seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// NoCloud meta-data: the instance id and host name are the machine's name.
    pub meta_data: String,
    /// `#cloud-config` user-data from [`render_host_join`].
    pub user_data: String,
}

/// The rendered seeds by MAC, shared by the inventory (writer) and the HTTP side.
#[derive(Clone, Debug, Default)]
pub struct Seeds(Arc<RwLock<BTreeMap<Mac, Seed>>>);

impl Seeds {
    /// The seed of `mac`, if one was rendered.
    pub fn get(&self, mac: Mac) -> Option<Seed> {
        self.0.read().ok().and_then(|m| m.get(&mac).cloned())
    }

    /// Keeps `seed` for `mac`.
    pub fn set(&self, mac: Mac, seed: Seed) {
        if let Ok(mut m) = self.0.write() {
            m.insert(mac, seed);
        }
    }
}

/// Renders `machine`'s seed into `seeds` under `mac`; a machine whose spec cannot
/// be rendered keeps the default seed, with a warning naming the field.
pub fn refresh(seeds: &Seeds, join: &JoinSettings, mac: Mac, machine: &BareMetalMachine) {
    match render(machine, join) {
        Ok(seed) => {
            if seeds.get(mac).as_ref() != Some(&seed) {
                tracing::info!(%mac, name = %machine.name_any(), "join seed rendered");
                seeds.set(mac, seed);
            }
        }
        Err(e) => tracing::warn!(
            %mac,
            name = %machine.name_any(),
            error = %e,
            "no join seed: the machine gets the default one"
        ),
    }
}

/// The seed that makes `m` join the host cluster.
pub fn render(m: &BareMetalMachine, join: &JoinSettings) -> Result<Seed, BootstrapError> {
    let name = m.name_any();
    let mac = m
        .spec
        .mac
        .parse::<Mac>()
        .map(|mac| mac.hyphenated())
        .unwrap_or_default();
    let host = HostJoin {
        hostname: name.clone(),
        role: match m.spec.role {
            MachineRole::ControlPlane => HostRole::ControlPlane,
            MachineRole::Worker => HostRole::Worker,
        },
        kubeconfig: join.kubeconfig.clone(),
        network: m.spec.network.as_ref().map(|n| HostNetwork {
            mac: n.mac.clone(),
            vlan: n.vlan,
            address: n.address.clone(),
            gateway: n.gateway.clone(),
        }),
        phone_home_url: Some(format!("{}/seed/{mac}/phone-home", join.base_url)),
    };
    Ok(Seed {
        meta_data: format!("instance-id: {name}\nlocal-hostname: {name}\n"),
        user_data: render_host_join(&host)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{BareMetalMachineSpec, ProductionNetwork};

    fn settings() -> JoinSettings {
        JoinSettings {
            kubeconfig: "apiVersion: v1\nkind: Config\n# token-xyz\n".into(),
            base_url: "http://10.78.0.2:8080".into(),
        }
    }

    fn machine(network: Option<ProductionNetwork>) -> BareMetalMachine {
        BareMetalMachine::new(
            "rack1-u1",
            BareMetalMachineSpec {
                mac: "52:54:00:78:01:01".into(),
                role: MachineRole::Worker,
                profile: None,
                bmc: None,
                network,
            },
        )
    }

    #[test]
    fn a_machine_is_named_after_its_resource_and_gets_its_production_nic() {
        let seed = render(
            &machine(Some(ProductionNetwork {
                mac: "52:54:00:79:01:01".into(),
                vlan: Some(79),
                address: "10.79.0.11/24".into(),
                gateway: None,
            })),
            &settings(),
        )
        .expect("renders");
        assert_eq!(
            seed.meta_data,
            "instance-id: rack1-u1\nlocal-hostname: rack1-u1\n"
        );
        for want in [
            "hostname: rack1-u1\n",
            "SHOAL_HOST_NAME=rack1-u1\n",
            "SHOAL_HOST_ROLE=worker\n",
            "SHOAL_PRODUCTION_VLAN=79\n",
            "SHOAL_PRODUCTION_ADDRESS=10.79.0.11/24\n",
            "# token-xyz\n",
            "url: http://10.78.0.2:8080/seed/52-54-00-78-01-01/phone-home\n",
        ] {
            assert!(seed.user_data.contains(want), "{want}: {}", seed.user_data);
        }
        let seeds = Seeds::default();
        let mac: Mac = "52:54:00:78:01:01".parse().expect("mac");
        assert_eq!(seeds.get(mac), None);
        seeds.set(mac, seed.clone());
        assert_eq!(seeds.get(mac), Some(seed));
    }

    #[test]
    fn a_machine_without_a_production_nic_stays_on_the_provisioning_network() {
        let seed = render(&machine(None), &settings()).expect("renders");
        assert!(
            !seed.user_data.contains("SHOAL_PRODUCTION"),
            "{}",
            seed.user_data
        );
    }
}
