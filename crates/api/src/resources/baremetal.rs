//! BareMetalMachine: a physical machine found or registered for PXE bootstrap.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::{Condition, MachineRole};
use crate::validate::{validate_dns1123_subdomain, FieldErrors};

/// What users set on a BareMetalMachine.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "BareMetalMachine",
    status = "BareMetalMachineStatus",
    shortname = "bmm",
    category = "shoal",
    printcolumn = r#"{"name":"MAC","type":"string","jsonPath":".spec.mac"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BareMetalMachineSpec {
    /// The MAC address it PXE-boots from.
    pub mac: String,
    /// What it becomes.
    pub role: MachineRole,
    /// The provisioning profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Its BMC: with one, Shoal sets the next boot to PXE and powers it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<BmcSpec>,
    /// Its production network, on a NIC of its own or a VLAN: the installed system brings
    /// it up and its `shoal agent` uses it (the underlay and the way to the API).
    /// Without it everything stays on the provisioning NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ProductionNetwork>,
}

/// A machine's production network: a second NIC, or a VLAN (an 802.1Q tag) on
/// either NIC, with a static address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductionNetwork {
    /// The MAC of the NIC on the production network. With `vlan`, it may be the
    /// provisioning NIC's (`spec.mac`): PXE on its untagged network, production
    /// on the tagged one.
    pub mac: String,
    /// The production network's VLAN id (1–4094) on that NIC; unset, the NIC's
    /// untagged network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Its address with the prefix length, e.g. `10.79.0.11/24`.
    pub address: String,
    /// The default gateway on that network, if the machine routes through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// How Shoal reaches a machine's BMC over Redfish (ILO, iDRAC and most current
/// BMCs speak it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BmcSpec {
    /// The BMC's address: `https://10.0.0.5` or `http://bmc.example:8000`; its
    /// Redfish service is at `/redfish/v1`.
    pub address: String,
    /// The ComputerSystem, by its Redfish id or name; when unset, the only one
    /// the BMC has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// A Secret in `shoal-system` with the keys `username` and `password`.
    pub credentials_secret: String,
    /// Accept a certificate that does not verify (BMCs often have a self-signed
    /// one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// Where the site's console logger writes the machine's serial console (a
    /// conserver or serial-over-LAN capture); a provisioning timeout quotes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_log: Option<String>,
}

/// Provisioning state of a bare-metal machine, in the order a machine goes through
/// them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum BareMetalState {
    /// Its BMC was told to boot it from PXE and power it on.
    PoweringOn,
    /// Seen on the provisioning network.
    #[default]
    Discovered,
    /// Installing.
    Provisioning,
    /// It did not phone home in time after it was powered on or discovered.
    ProvisioningTimeout,
    /// Installed.
    Provisioned,
    /// Joined the host cluster.
    Joined,
    /// Powered off through its BMC on request.
    Deprovisioned,
}

/// What Shoal reports on a BareMetalMachine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalMachineStatus {
    /// The provisioning state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BareMetalState>,
    /// The address it was last seen at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The host name it phoned home with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// What its boot firmware reported of the hardware at its last network boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<HardwareFacts>,
    /// Every change of state, oldest first, each with its time and what caused it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<BareMetalTransition>,
    /// The power state its BMC last reported: `On` or `Off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<String>,
    /// The BMC request (the `shoal.io/bmc-request` annotation) last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_request: Option<String>,
    /// `BmcReady`: whether Shoal can drive its BMC, and why not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A machine's hardware as its boot firmware (iPXE) reports it: SMBIOS, platform.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HardwareFacts {
    /// The system's serial number (SMBIOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The system's UUID (SMBIOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The manufacturer (SMBIOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// The product name (SMBIOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// The firmware's platform: `pcbios` or `efi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The boot loader's architecture, e.g. `x86_64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

impl HardwareFacts {
    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One change of a bare-metal machine's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalTransition {
    /// The state entered.
    pub state: BareMetalState,
    /// When, RFC 3339.
    pub at: String,
    /// What was seen: e.g. "fetched its boot script", "phoned home as pxe-1".
    pub reason: String,
}

impl BareMetalMachineSpec {
    /// Checks the MAC address, the BMC and the production network.
    pub fn validate(&self, errs: &mut FieldErrors) {
        check_mac(errs, "spec.mac", &self.mac);
        if let Some(bmc) = &self.bmc {
            bmc.validate(errs);
        }
        if let Some(net) = &self.network {
            net.validate(errs, &self.mac);
        }
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()))
}

fn check_mac(errs: &mut FieldErrors, field: &str, mac: &str) {
    if !is_mac(mac) {
        errs.check(
            field,
            Err(format!(
                "{mac:?} is not a MAC address: use e.g. '52:54:00:12:34:56'"
            )),
        );
    }
}

impl ProductionNetwork {
    /// The address without its prefix length, if `address` is valid.
    pub fn ip(&self) -> Option<std::net::Ipv4Addr> {
        let (ip, prefix) = self.address.split_once('/')?;
        let prefix: u8 = prefix.parse().ok()?;
        (1..=32).contains(&prefix).then_some(())?;
        ip.parse().ok()
    }

    /// Checks the NIC's MAC (not the provisioning NIC's), the address and the
    /// gateway.
    pub fn validate(&self, errs: &mut FieldErrors, pxe_mac: &str) {
        check_mac(errs, "spec.network.mac", &self.mac);
        if self.vlan.is_none() && is_mac(&self.mac) && self.mac.eq_ignore_ascii_case(pxe_mac) {
            errs.check(
                "spec.network.mac",
                Err(format!(
                    "{} is spec.mac, the provisioning NIC: name the production NIC's MAC, \
                     set spec.network.vlan to put production on a VLAN of this NIC, \
                     or leave spec.network out to stay on the provisioning network",
                    self.mac
                )),
            );
        }
        if let Some(vlan) = self.vlan {
            if !(1..=4094).contains(&vlan) {
                errs.check(
                    "spec.network.vlan",
                    Err(format!(
                        "{vlan} is not a VLAN id: use 1 to 4094, or leave it out for the \
                         NIC's untagged network"
                    )),
                );
            }
        }
        if self.ip().is_none() {
            errs.check(
                "spec.network.address",
                Err(format!(
                    "{:?} is not an IPv4 address with a prefix length: use e.g. '10.79.0.11/24'",
                    self.address
                )),
            );
        }
        if let Some(gw) = &self.gateway {
            if gw.parse::<std::net::Ipv4Addr>().is_err() {
                errs.check(
                    "spec.network.gateway",
                    Err(format!(
                        "{gw:?} is not an IPv4 address: use e.g. '10.79.0.1', or leave it out"
                    )),
                );
            }
        }
    }
}

impl BmcSpec {
    /// Checks the address and the Secret's name.
    pub fn validate(&self, errs: &mut FieldErrors) {
        let rest = self
            .address
            .strip_prefix("https://")
            .or_else(|| self.address.strip_prefix("http://"));
        let host = rest.map(|r| r.split('/').next().unwrap_or_default());
        if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            errs.check(
                "spec.bmc.address",
                Err(format!(
                    "{:?} is not a BMC address: use its URL, e.g. 'https://10.0.0.5' or 'http://bmc1:8000'",
                    self.address
                )),
            );
        }
        errs.check(
            "spec.bmc.credentialsSecret",
            validate_dns1123_subdomain(&self.credentials_secret).map_err(|e| {
                format!("{e}: name a Secret in shoal-system with keys username and password")
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(address: &str, secret: &str) -> BareMetalMachineSpec {
        BareMetalMachineSpec {
            mac: "52:54:00:78:01:01".into(),
            role: MachineRole::Worker,
            profile: None,
            bmc: Some(BmcSpec {
                address: address.into(),
                system: None,
                credentials_secret: secret.into(),
                insecure_skip_verify: false,
                console_log: None,
            }),
            network: None,
        }
    }

    fn fields(s: &BareMetalMachineSpec) -> Vec<String> {
        let mut errs = FieldErrors::default();
        s.validate(&mut errs);
        match errs.into_result() {
            Ok(()) => Vec::new(),
            Err(causes) => causes.into_iter().map(|c| c.field).collect(),
        }
    }

    #[test]
    fn a_bmc_needs_an_http_address_and_a_secret_name() {
        assert!(fields(&spec("https://10.0.0.5", "bmc-rack1")).is_empty());
        assert!(fields(&spec("http://bmc1:8000/", "bmc-rack1")).is_empty());
        assert_eq!(fields(&spec("10.0.0.5", "bmc-rack1")), ["spec.bmc.address"]);
        assert_eq!(fields(&spec("https://", "bmc-rack1")), ["spec.bmc.address"]);
        assert_eq!(
            fields(&spec("ftp://10.0.0.5", "Bad_Name")),
            ["spec.bmc.address", "spec.bmc.credentialsSecret"]
        );
    }

    #[test]
    fn a_production_network_needs_its_own_nic_and_an_address_with_a_prefix() {
        let tagged = |mac: &str, vlan: Option<u16>, address: &str, gateway: Option<&str>| {
            let mut s = spec("https://10.0.0.5", "bmc-rack1");
            s.network = Some(ProductionNetwork {
                mac: mac.into(),
                vlan,
                address: address.into(),
                gateway: gateway.map(Into::into),
            });
            fields(&s)
        };
        let with =
            |mac: &str, address: &str, gateway: Option<&str>| tagged(mac, None, address, gateway);
        assert!(with("52:54:00:79:01:01", "10.79.0.11/24", Some("10.79.0.1")).is_empty());
        assert_eq!(
            with("52:54:00:78:01:01", "10.79.0.11/24", None),
            ["spec.network.mac"]
        );
        assert_eq!(
            with("52:54:00:79:01", "10.79.0.11", Some("gw")),
            [
                "spec.network.mac",
                "spec.network.address",
                "spec.network.gateway"
            ]
        );
        assert_eq!(
            with("52:54:00:79:01:01", "10.79.0.11/33", None),
            ["spec.network.address"]
        );
        // A VLAN of the provisioning NIC is a production network of its own.
        assert!(tagged("52:54:00:78:01:01", Some(80), "10.80.0.11/24", None).is_empty());
        assert!(tagged("52:54:00:79:01:01", Some(4094), "10.80.0.11/24", None).is_empty());
        for vlan in [0, 4095] {
            assert_eq!(
                tagged("52:54:00:78:01:01", Some(vlan), "10.80.0.11/24", None),
                ["spec.network.vlan"]
            );
        }
        let net = ProductionNetwork {
            mac: "52:54:00:79:01:01".into(),
            vlan: None,
            address: "10.79.0.11/24".into(),
            gateway: None,
        };
        assert_eq!(net.ip(), Some(std::net::Ipv4Addr::new(10, 79, 0, 11)));
    }
}
