//! User-data for a bare-metal machine of the host cluster: what its installed system
//! needs to run `shoal agent` and join as a Host.
//!
//! The document names the machine and writes two files:
//!
//! - [`AGENT_KUBECONFIG_PATH`] (0600): where the agent reaches Shoal's API, and
//!   with which credentials;
//! - [`AGENT_ENV_PATH`] (0644): `KEY=value` lines, read by a shell's `.` and by a
//!   systemd `EnvironmentFile=` alike: the Host's name, its role and, when the
//!   machine has one, its production NIC (MAC, address with prefix, gateway).
//!
//! The installed system's agent service waits for the second file, brings the
//! production NIC up with that address and starts `shoal agent` with it as the
//! underlay. Nothing here is run by cloud-init itself (no `runcmd`), so the same
//! document works on Shoal's test image, which runs no user-data commands.

use serde::Serialize;

use crate::cloudconfig::{CloudConfig, PhoneHome, WriteFile};
use crate::validate::{dns_label, empty, phone_home_url};
use crate::BootstrapError;

/// Where the agent's kubeconfig is written.
pub const AGENT_KUBECONFIG_PATH: &str = "/etc/shoal/agent/kubeconfig";
/// Where the agent's settings are written.
pub const AGENT_ENV_PATH: &str = "/etc/shoal/agent/agent.env";

/// The fields a machine posts when it phones home.
const PHONE_HOME_POST: [&str; 2] = ["instance_id", "hostname"];
/// Attempts at phoning home.
const PHONE_HOME_TRIES: u32 = 10;

/// What the machine is in the host cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostRole {
    /// A control-plane machine.
    ControlPlane,
    /// A worker: it runs guest VMs.
    Worker,
}

impl HostRole {
    /// The name written to [`AGENT_ENV_PATH`].
    pub fn as_str(self) -> &'static str {
        match self {
            HostRole::ControlPlane => "control-plane",
            HostRole::Worker => "worker",
        }
    }
}

/// The machine's production NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNetwork {
    /// The NIC's MAC, `52:54:00:79:01:01`.
    pub mac: String,
    /// The production VLAN's id on that NIC (1–4094); `None`, its untagged
    /// network.
    pub vlan: Option<u16>,
    /// Its address with the prefix length, `10.79.0.11/24`.
    pub address: String,
    /// The default gateway on that network, if any.
    pub gateway: Option<String>,
}

/// What a bare-metal machine needs to join the host cluster.
#[derive(Clone)]
pub struct HostJoin {
    /// The Host's name (and the machine's hostname): one DNS label.
    pub hostname: String,
    /// Its role.
    pub role: HostRole,
    /// The agent's kubeconfig: the API's address as the machine reaches it, and
    /// credentials. Secret: never echoed.
    pub kubeconfig: String,
    /// Its production NIC; without one the agent stays on the provisioning NIC.
    pub network: Option<HostNetwork>,
    /// Where it phones home once the files are written.
    pub phone_home_url: Option<String>,
}

impl std::fmt::Debug for HostJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostJoin")
            .field("hostname", &self.hostname)
            .field("role", &self.role)
            .field("kubeconfig", &"<redacted>")
            .field("network", &self.network)
            .field("phone_home_url", &self.phone_home_url)
            .finish()
    }
}

fn mac_ok(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()))
}

fn cidr_ok(s: &str) -> bool {
    s.split_once('/').is_some_and(|(ip, prefix)| {
        ip.parse::<std::net::Ipv4Addr>().is_ok()
            && prefix.parse::<u8>().is_ok_and(|p| (1..=32).contains(&p))
    })
}

impl HostNetwork {
    fn validate(&self) -> Result<(), BootstrapError> {
        let bad = |field: &'static str, value: &str, hint: &'static str| {
            Err(BootstrapError::HostNetwork {
                field,
                value: value.to_owned(),
                hint,
            })
        };
        if !mac_ok(&self.mac) {
            return bad("network.mac", &self.mac, "use e.g. 52:54:00:79:01:01");
        }
        if let Some(vlan) = self.vlan {
            if !(1..=4094).contains(&vlan) {
                return bad(
                    "network.vlan",
                    &vlan.to_string(),
                    "use a VLAN id from 1 to 4094, or none for the untagged network",
                );
            }
        }
        if !cidr_ok(&self.address) {
            return bad(
                "network.address",
                &self.address,
                "use an IPv4 address with its prefix length, e.g. 10.79.0.11/24",
            );
        }
        if let Some(gw) = &self.gateway {
            if gw.parse::<std::net::Ipv4Addr>().is_err() {
                return bad("network.gateway", gw, "use an IPv4 address, e.g. 10.79.0.1");
            }
        }
        Ok(())
    }
}

impl HostJoin {
    /// Checks every field; a [`BootstrapError`] names the one to change.
    pub fn validate(&self) -> Result<(), BootstrapError> {
        dns_label(
            "hostname",
            &self.hostname,
            "give the BareMetalMachine's name, e.g. rack1-u1",
        )?;
        empty(
            "kubeconfig",
            &self.kubeconfig,
            "give the kubeconfig the machine's agent uses to reach Shoal's API",
        )?;
        if let Some(net) = &self.network {
            net.validate()?;
        }
        if let Some(url) = &self.phone_home_url {
            phone_home_url(url)?;
        }
        Ok(())
    }

    /// The content of [`AGENT_ENV_PATH`]; every value is validated to need no
    /// quoting.
    pub fn agent_env(&self) -> String {
        let mut lines = vec![
            format!("SHOAL_HOST_NAME={}", self.hostname),
            format!("SHOAL_HOST_ROLE={}", self.role.as_str()),
        ];
        if let Some(net) = &self.network {
            lines.push(format!(
                "SHOAL_PRODUCTION_MAC={}",
                net.mac.to_ascii_lowercase()
            ));
            if let Some(vlan) = net.vlan {
                lines.push(format!("SHOAL_PRODUCTION_VLAN={vlan}"));
            }
            lines.push(format!("SHOAL_PRODUCTION_ADDRESS={}", net.address));
            if let Some(gw) = &net.gateway {
                lines.push(format!("SHOAL_PRODUCTION_GATEWAY={gw}"));
            }
        }
        lines.join("\n") + "\n"
    }
}

/// Renders `#cloud-config` user-data for a bare-metal machine joining as a Host.
pub fn render_host_join(h: &HostJoin) -> Result<String, BootstrapError> {
    h.validate()?;
    let doc = CloudConfig {
        hostname: Some(&h.hostname),
        write_files: vec![
            WriteFile::new(AGENT_KUBECONFIG_PATH, h.kubeconfig.clone(), 0o600),
            WriteFile::new(AGENT_ENV_PATH, h.agent_env(), 0o644),
        ],
        runcmd: Vec::new(),
        phone_home: h.phone_home_url.as_deref().map(|url| PhoneHome {
            url,
            post: PHONE_HOME_POST,
            tries: PHONE_HOME_TRIES,
        }),
    };
    doc.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join() -> HostJoin {
        HostJoin {
            hostname: "rack1-u1".into(),
            role: HostRole::Worker,
            kubeconfig: "apiVersion: v1\nkind: Config\n# secret-token\n".into(),
            network: Some(HostNetwork {
                mac: "52:54:00:79:01:01".into(),
                vlan: None,
                address: "10.79.0.11/24".into(),
                gateway: None,
            }),
            phone_home_url: None,
        }
    }

    #[test]
    fn the_env_file_names_the_host_its_role_and_its_production_nic() {
        assert_eq!(
            join().agent_env(),
            "SHOAL_HOST_NAME=rack1-u1\nSHOAL_HOST_ROLE=worker\n\
             SHOAL_PRODUCTION_MAC=52:54:00:79:01:01\nSHOAL_PRODUCTION_ADDRESS=10.79.0.11/24\n"
        );
        let plain = HostJoin {
            network: None,
            role: HostRole::ControlPlane,
            ..join()
        };
        assert_eq!(
            plain.agent_env(),
            "SHOAL_HOST_NAME=rack1-u1\nSHOAL_HOST_ROLE=control-plane\n"
        );
        let tagged = HostJoin {
            network: Some(HostNetwork {
                mac: "52:54:00:78:01:01".into(),
                vlan: Some(80),
                address: "10.80.0.11/24".into(),
                gateway: Some("10.80.0.2".into()),
            }),
            ..join()
        };
        assert_eq!(
            tagged.agent_env(),
            "SHOAL_HOST_NAME=rack1-u1\nSHOAL_HOST_ROLE=worker\n\
             SHOAL_PRODUCTION_MAC=52:54:00:78:01:01\nSHOAL_PRODUCTION_VLAN=80\n\
             SHOAL_PRODUCTION_ADDRESS=10.80.0.11/24\nSHOAL_PRODUCTION_GATEWAY=10.80.0.2\n"
        );
    }

    #[test]
    fn bad_input_names_the_field_and_never_the_kubeconfig() {
        let mut bad = join();
        bad.hostname = "Rack 1".into();
        assert_eq!(
            render_host_join(&bad).err().and_then(|e| e.field()),
            Some("hostname".into())
        );
        let mut bad = join();
        bad.kubeconfig = String::new();
        assert_eq!(
            render_host_join(&bad).err().and_then(|e| e.field()),
            Some("kubeconfig".into())
        );
        for (field, net) in [
            (
                "network.mac",
                HostNetwork {
                    mac: "52:54:00:79:01".into(),
                    vlan: None,
                    address: "10.79.0.11/24".into(),
                    gateway: None,
                },
            ),
            (
                "network.address",
                HostNetwork {
                    mac: "52:54:00:79:01:01".into(),
                    vlan: None,
                    address: "10.79.0.11; reboot".into(),
                    gateway: None,
                },
            ),
            (
                "network.vlan",
                HostNetwork {
                    mac: "52:54:00:79:01:01".into(),
                    vlan: Some(4095),
                    address: "10.79.0.11/24".into(),
                    gateway: None,
                },
            ),
            (
                "network.gateway",
                HostNetwork {
                    mac: "52:54:00:79:01:01".into(),
                    vlan: None,
                    address: "10.79.0.11/24".into(),
                    gateway: Some("$(reboot)".into()),
                },
            ),
        ] {
            let bad = HostJoin {
                network: Some(net),
                ..join()
            };
            let err = render_host_join(&bad).expect_err(field);
            assert_eq!(err.field(), Some(field.into()), "{err}");
        }
        assert!(!format!("{:?}", join()).contains("secret-token"));
    }
}
