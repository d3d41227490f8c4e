//! `shoal guest`: the agent inside Shoal's test guest image. It does, on the same
//! endpoints, the part of cloud-init's work that Shoal's tests need:
//!
//! 1. reads the NoCloud seed address from the kernel command line or, without one
//!    there, the SMBIOS serial ([`seed`]);
//! 2. brings up the first Ethernet interface, gets a DHCP lease ([`dhcp`]) and applies
//!    it through rtnetlink ([`netconf`]);
//! 3. fetches meta-data, user-data and vendor-data ([`http`], [`metadata`]), and
//!    honours a `#cloud-config` subset ([`cloudconfig`]): hostname and `write_files`;
//! 4. starts the test services ([`services`]): an HTTP responder on 8080 and a control
//!    port on 7070;
//! 5. starts what the node's role calls for ([`stand_ins`], from `/etc/shoal/node.yaml`
//!    and `/etc/shoal/pki/` written by `write_files`): on control-plane nodes an HTTPS
//!    stand-in for kube-apiserver on 6443 ([`apiserver`], [`tls`], [`whoami`]); on
//!    workers stand-ins for an ingress controller's NodePorts, HTTP on 30080 and TLS on
//!    30443. A stand-in that cannot start is logged and the rest keep running;
//! 6. serves node metrics on 9100 ([`exporter`]), for the host agent to scrape;
//! 7. phones home, prints `SHOAL-GUEST-READY <hostname> <ip>` and serves forever.
//!
//! Throughout, it powers the machine off when the ACPI power button is pressed
//! ([`power`]), which is how the host agent stops a VM.
//!
//! Progress goes to stdout (the serial console), each line prefixed `shoal-guest:`.
//!
//! What this crate must not do: run anything from user-data (`runcmd` and scripts are
//! ignored, with a log line), resolve host names (the binary is statically linked and
//! has no name service), or depend on any other Shoal crate: it is built alone as a
//! static binary for the image (its tests use `shoal-pki` to make certificates).

use std::path::PathBuf;
use std::time::Duration;

pub mod apiserver;
pub mod cloudconfig;
pub mod dhcp;
pub mod exporter;
pub mod http;
pub mod http1;
pub mod metadata;
pub mod netconf;
pub mod node;
pub mod power;
pub mod seed;
pub mod services;
pub mod stand_ins;
pub mod tls;
pub mod whoami;

/// Prints one progress line to the console, prefixed `shoal-guest:`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        println!("shoal-guest: {}", format_args!($($arg)*))
    };
}

/// The marker printed once the guest has phoned home.
pub const READY_MARKER: &str = "SHOAL-GUEST-READY";

/// Why `shoal guest` failed; each kind has its own exit code ([`GuestError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The tokio runtime could not be built.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The seed address is missing or malformed.
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
    /// The interface or rtnetlink failed.
    #[error(transparent)]
    Net(#[from] netconf::NetError),
    /// No DHCP lease.
    #[error(transparent)]
    Dhcp(#[from] dhcp::DhcpError),
    /// A seed file could not be fetched.
    #[error("fetching the seed: {0}")]
    Fetch(#[source] http::GaveUp),
    /// meta-data is malformed or no valid hostname is given.
    #[error(transparent)]
    MetaData(#[from] metadata::MetaDataError),
    /// user-data or vendor-data is malformed cloud-config.
    #[error(transparent)]
    CloudConfig(#[from] cloudconfig::ConfigError),
    /// The kernel refused the hostname.
    #[error("setting the hostname {name:?}: {source}")]
    Hostname {
        /// The name.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A `write_files` entry could not be written.
    #[error(transparent)]
    WriteFiles(#[from] cloudconfig::WriteError),
    /// The services could not start, or stopped.
    #[error(transparent)]
    Services(#[from] services::ServiceError),
    /// The phone-home POST never succeeded.
    #[error("phoning home: {0}")]
    PhoneHome(#[source] http::GaveUp),
}

impl GuestError {
    /// The process exit code for this kind of failure (2 is the CLI's usage error).
    pub fn exit_code(&self) -> u8 {
        match self {
            GuestError::Runtime(_) => 10,
            GuestError::Seed(_) => 11,
            GuestError::Net(_) => 12,
            GuestError::Dhcp(_) => 13,
            GuestError::Fetch(_) => 14,
            GuestError::MetaData(_) => 15,
            GuestError::CloudConfig(_) => 16,
            GuestError::Hostname { .. } => 17,
            GuestError::WriteFiles(_) => 18,
            GuestError::Services(_) => 19,
            GuestError::PhoneHome(_) => 20,
        }
    }
}

/// Where `shoal guest` reads and writes, and how long it waits.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// The SMBIOS serial file.
    pub serial: PathBuf,
    /// The kernel command line (`/proc/cmdline`); a `ds=nocloud…` word there wins
    /// over the serial.
    pub cmdline: PathBuf,
    /// The sysfs network class directory.
    pub sys_net: PathBuf,
    /// The root under which `write_files` and `/etc/hostname` are written.
    pub root: PathBuf,
    /// How long to wait for a NIC to appear.
    pub nic_wait: Duration,
    /// How long DHCP may take.
    pub dhcp_deadline: Duration,
    /// How long fetching each seed file may take.
    pub fetch_deadline: Duration,
    /// How long phoning home may take.
    pub phone_home_deadline: Duration,
    /// The services' addresses.
    pub services: services::ServiceConfig,
    /// The role stand-ins' addresses.
    pub stand_ins: stand_ins::StandInConfig,
    /// The node exporter's address ([`exporter::EXPORTER_PORT`]).
    pub exporter: std::net::SocketAddr,
    /// The sysfs input class directory and the device directory in which the
    /// ACPI power button is looked for ([`power`]); `None` does not watch it.
    pub power_button: Option<(PathBuf, PathBuf)>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            serial: "/sys/class/dmi/id/product_serial".into(),
            cmdline: "/proc/cmdline".into(),
            sys_net: "/sys/class/net".into(),
            root: "/".into(),
            nic_wait: Duration::from_secs(3),
            dhcp_deadline: Duration::from_secs(60),
            fetch_deadline: Duration::from_secs(60),
            phone_home_deadline: Duration::from_secs(60),
            services: services::ServiceConfig::default(),
            stand_ins: stand_ins::StandInConfig::default(),
            exporter: exporter::default_addr(),
            power_button: Some(("/sys/class/input".into(), "/dev/input".into())),
        }
    }
}

/// Runs `shoal guest` with the image's paths and deadlines. Blocks: on success it
/// serves forever, so it returns only with an error.
pub fn run() -> Result<(), GuestError> {
    run_with(&GuestConfig::default())
}

/// Runs `shoal guest` with `cfg`; see [`run`].
pub fn run_with(cfg: &GuestConfig) -> Result<(), GuestError> {
    // First, so that a stop powers the guest off at any point of its boot.
    if let Some((sys_input, dev)) = &cfg.power_button {
        power::spawn_watcher(sys_input.clone(), dev.clone(), Duration::from_secs(2));
    }
    let cmdline = std::fs::read_to_string(&cfg.cmdline).unwrap_or_default();
    let seed = match seed::parse_cmdline(&cmdline) {
        Some(url) => url?,
        None => seed::read_serial(&cfg.serial)?,
    };
    say!("seed {seed}");

    let iface = netconf::wait_for_ethernet(&cfg.sys_net, cfg.nic_wait)?;
    let lo = netconf::read_iface(&cfg.sys_net, "lo")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(GuestError::Runtime)?;
    let lease = rt.block_on(async {
        let nl = netconf::Netlink::connect()?;
        nl.link_up(lo.index, &lo.name).await?;
        nl.link_up(iface.index, &iface.name).await?;
        say!("{} up, DHCP from {}", iface.name, mac_string(&iface.mac));
        let sock = dhcp::guest_socket(&iface.name)?;
        let lease = dhcp::obtain(
            &sock,
            dhcp::broadcast_server(),
            &iface.name,
            &iface.mac,
            Duration::from_secs(1),
            cfg.dhcp_deadline,
        )
        .await?;
        nl.apply_lease(&iface, &lease).await?;
        Ok::<_, GuestError>(lease)
    })?;
    drop(rt);
    say!(
        "lease {}/{} on {} router {} mtu {} hostname {} (server {})",
        lease.ip,
        lease.prefix_len,
        iface.name,
        opt(lease.router),
        opt(lease.mtu),
        opt(lease.hostname.as_deref()),
        lease.server
    );

    let agent = http::agent(http::REQUEST_TIMEOUT);
    let fetch = |file: &str, missing_ok: bool| {
        http::fetch(&agent, &seed.join(file), cfg.fetch_deadline, missing_ok)
            .map_err(GuestError::Fetch)
    };
    let md = metadata::parse_meta_data(&fetch("meta-data", false)?.unwrap_or_default())?;
    let user = fetch("user-data", false)?.unwrap_or_default();
    let vendor = fetch("vendor-data", true)?.unwrap_or_default();
    say!("meta-data: instance-id {}", md.instance_id);
    let cfg_doc = |doc: &'static str, text: &str| {
        cloudconfig::parse_document(doc, text).map(|d| match d {
            cloudconfig::Document::CloudConfig(m) => m,
            cloudconfig::Document::Ignored(why) => {
                say!("{doc}: {why}: ignored");
                serde_yaml::Mapping::new()
            }
        })
    };
    let merged = cloudconfig::merge(
        cfg_doc("vendor-data", &vendor)?,
        cfg_doc("user-data", &user)?,
    );
    let cc = cloudconfig::CloudConfig::from_mapping(&merged)?;
    for key in &cc.ignored {
        say!("cloud-config: key {key} is not supported by the test image: ignored");
    }
    for note in &cc.notes {
        say!("cloud-config: {note}");
    }

    let names = metadata::choose_names(&cc, &md, lease.hostname.as_deref())?;
    rustix::system::sethostname(names.hostname.as_bytes()).map_err(|e| GuestError::Hostname {
        name: names.hostname.clone(),
        source: e.into(),
    })?;
    let etc_hostname = cloudconfig::WriteFile {
        path: "/etc/hostname".into(),
        content: format!("{}\n", names.hostname).into_bytes(),
        mode: 0o644,
        append: false,
    };
    cloudconfig::apply_write_files(&cfg.root, std::slice::from_ref(&etc_hostname))?;
    say!("hostname {} (fqdn {})", names.hostname, names.fqdn);

    cloudconfig::apply_write_files(&cfg.root, &cc.write_files)?;
    for f in &cc.write_files {
        say!(
            "wrote {} ({} bytes, mode {:o}{})",
            f.path.display(),
            f.content.len(),
            f.mode,
            if f.append { ", appended" } else { "" }
        );
    }

    let running = services::start(&cfg.services)?;
    say!(
        "serving http on {} and control on {}",
        running.http,
        running.control
    );
    let role = stand_ins::start(&cfg.root, &cfg.stand_ins);
    if let Some(node) = &role.node {
        say!(
            "role {} in cluster {} (Kubernetes {})",
            node.role,
            node.cluster,
            node.kubernetes_version
        );
    }
    for (name, addr) in &role.serving {
        say!("serving {name} on {addr}");
    }
    for e in &role.failed {
        say!("{e}");
    }
    // Like a stand-in, an exporter that cannot start is logged, not fatal.
    match stand_ins::serve_plain("exporter", cfg.exporter, exporter::Exporter::new()) {
        Ok((name, addr)) => say!("serving {name} on {addr}"),
        Err(e) => say!("{e}"),
    }

    let ph = cc.phone_home.clone().unwrap_or(cloudconfig::PhoneHome {
        url: None,
        post: cloudconfig::PostFields::All,
        tries: None,
    });
    if let Some(tries) = ph.tries {
        say!(
            "phone_home: tries {tries} ignored: retrying for {:?}",
            cfg.phone_home_deadline
        );
    }
    let url = http::phone_home_url(ph.url.as_deref(), &seed.join("phone-home"), &md.instance_id);
    let (fields, skipped) =
        http::phone_home_fields(&ph.post, &md.instance_id, &names.hostname, &names.fqdn);
    for name in skipped {
        say!("phone_home: field {name} is not available: skipped");
    }
    let status = http::post_form(&agent, &url, &fields, cfg.phone_home_deadline)
        .map_err(GuestError::PhoneHome)?;
    say!("phoned home to {url} ({status})");
    println!("{READY_MARKER} {} {}", names.hostname, lease.ip);

    Err(running.wait().into())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn mac_string(mac: &dhcp::Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let io = || std::io::Error::other("x");
        let errors = [
            GuestError::Runtime(io()),
            GuestError::Seed(seed::SeedError::NoSeed { serial: "x".into() }),
            GuestError::Net(netconf::NetError::Connect(io())),
            GuestError::Dhcp(dhcp::DhcpError::Timeout {
                iface: "eth0".into(),
                waited: Duration::ZERO,
                sent: 0,
                state: "discovering",
            }),
            GuestError::MetaData(metadata::MetaDataError::NoHostname),
            GuestError::CloudConfig(cloudconfig::ConfigError::NotMapping { doc: "user-data" }),
            GuestError::Hostname {
                name: "x".into(),
                source: io(),
            },
            GuestError::WriteFiles(cloudconfig::WriteError {
                path: "/x".into(),
                action: "writing",
                source: io(),
            }),
            GuestError::Services(services::ServiceError::Stopped { service: "http" }),
        ];
        let mut codes: Vec<u8> = errors.iter().map(GuestError::exit_code).collect();
        codes.extend([14, 20]); // Fetch and PhoneHome need a live ureq error to build.
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        assert!(codes.iter().all(|c| *c > 2));
    }
}
