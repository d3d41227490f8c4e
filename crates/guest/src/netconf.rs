//! The guest's network: finding its NIC in sysfs, and bringing links up, setting the
//! MTU, the address and the default route through rtnetlink.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::dhcp::{Lease, Mac};

/// `ARPHRD_ETHER`, the `type` of an Ethernet interface in sysfs.
const ARPHRD_ETHER: u32 = 1;

/// Why the network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No Ethernet interface appeared.
    #[error(
        "no Ethernet interface in {dir} after {waited:?}: does the VM have a NIC (virtio-net)?"
    )]
    NoInterface {
        /// The sysfs directory searched.
        dir: PathBuf,
        /// How long the guest waited.
        waited: Duration,
    },
    /// A sysfs file could not be read or parsed.
    #[error("reading {path}: {why}")]
    Sysfs {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("netlink: {action} on {iface}: {source}")]
    Netlink {
        /// What was being done.
        action: String,
        /// The interface.
        iface: String,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
}

/// A network interface as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Its name, e.g. `eth0`.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its MAC address.
    pub mac: Mac,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn read_attr(dir: &Path, name: &str, attr: &str) -> Result<String, NetError> {
    let path = dir.join(name).join(attr);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| NetError::Sysfs {
            path,
            why: e.to_string(),
        })
}

fn parse_attr<T: std::str::FromStr>(dir: &Path, name: &str, attr: &str) -> Result<T, NetError> {
    let raw = read_attr(dir, name, attr)?;
    raw.parse().map_err(|_| NetError::Sysfs {
        path: dir.join(name).join(attr),
        why: format!("{raw:?} is not a number"),
    })
}

/// Reads one interface's index and MAC from `dir` (normally `/sys/class/net`).
pub fn read_iface(dir: &Path, name: &str) -> Result<Iface, NetError> {
    let index = parse_attr(dir, name, "ifindex")?;
    let raw = read_attr(dir, name, "address")?;
    let mac = parse_mac(&raw).ok_or_else(|| NetError::Sysfs {
        path: dir.join(name).join("address"),
        why: format!("{raw:?} is not a MAC address"),
    })?;
    Ok(Iface {
        name: name.to_string(),
        index,
        mac,
    })
}

/// The Ethernet interface with the lowest index in `dir`, if any (loopback and
/// other link types are skipped).
pub fn first_ethernet(dir: &Path) -> Result<Option<Iface>, NetError> {
    let entries = std::fs::read_dir(dir).map_err(|e| NetError::Sysfs {
        path: dir.to_path_buf(),
        why: e.to_string(),
    })?;
    let mut found: Option<Iface> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" || parse_attr::<u32>(dir, &name, "type")? != ARPHRD_ETHER {
            continue;
        }
        let iface = read_iface(dir, &name)?;
        if found.as_ref().is_none_or(|f| iface.index < f.index) {
            found = Some(iface);
        }
    }
    Ok(found)
}

/// Waits up to `wait` for an Ethernet interface to appear in `dir`.
pub fn wait_for_ethernet(dir: &Path, wait: Duration) -> Result<Iface, NetError> {
    let start = Instant::now();
    loop {
        if let Some(iface) = first_ethernet(dir)? {
            return Ok(iface);
        }
        if start.elapsed() >= wait {
            return Err(NetError::NoInterface {
                dir: dir.to_path_buf(),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An rtnetlink connection; must be created inside a tokio runtime.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the socket and spawns its connection task on the current runtime.
    pub fn connect() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    fn err(action: impl Into<String>, iface: &str) -> impl FnOnce(rtnetlink::Error) -> NetError {
        let action = action.into();
        let iface = iface.to_string();
        move |source| NetError::Netlink {
            action,
            iface,
            source,
        }
    }

    /// Sets link `index` (named `name` in errors) up.
    pub async fn link_up(&self, index: u32, name: &str) -> Result<(), NetError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(Self::err("setting the link up", name))
    }

    /// Applies a DHCP lease to `iface`: MTU, address/prefix and default route.
    pub async fn apply_lease(&self, iface: &Iface, lease: &Lease) -> Result<(), NetError> {
        if let Some(mtu) = lease.mtu {
            self.handle
                .link()
                .set(
                    LinkUnspec::new_with_index(iface.index)
                        .mtu(u32::from(mtu))
                        .build(),
                )
                .execute()
                .await
                .map_err(Self::err(format!("setting MTU {mtu}"), &iface.name))?;
        }
        self.handle
            .address()
            .add(iface.index, IpAddr::V4(lease.ip), lease.prefix_len)
            .replace()
            .execute()
            .await
            .map_err(Self::err(
                format!("adding {}/{}", lease.ip, lease.prefix_len),
                &iface.name,
            ))?;
        if let Some(gw) = lease.router {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(iface.index)
                .build();
            self.handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(Self::err(
                    format!("adding the default route via {gw}"),
                    &iface.name,
                ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("52:54:00:12:34:5f\n"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x5f])
        );
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    fn fake(dir: &Path, name: &str, index: u32, kind: u32, mac: &str) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("ifindex"), format!("{index}\n")).expect("write");
        std::fs::write(d.join("type"), format!("{kind}\n")).expect("write");
        std::fs::write(d.join("address"), format!("{mac}\n")).expect("write");
    }

    #[test]
    fn picks_the_first_ethernet_interface() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake(dir.path(), "lo", 1, 772, "00:00:00:00:00:00");
        assert_eq!(first_ethernet(dir.path()).expect("reads"), None);
        assert!(matches!(
            wait_for_ethernet(dir.path(), Duration::ZERO),
            Err(NetError::NoInterface { .. })
        ));
        fake(dir.path(), "sit0", 2, 776, "00:00:00:00:00:00");
        fake(dir.path(), "eth1", 4, 1, "52:54:00:00:00:04");
        fake(dir.path(), "eth0", 3, 1, "52:54:00:00:00:03");
        let iface = wait_for_ethernet(dir.path(), Duration::ZERO).expect("found");
        assert_eq!(
            iface,
            Iface {
                name: "eth0".into(),
                index: 3,
                mac: [0x52, 0x54, 0, 0, 0, 3],
            }
        );
    }
}
