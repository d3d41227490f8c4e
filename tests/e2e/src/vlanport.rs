//! A switch's access port on one VLAN, in user space, for the labs.
//!
//! This machine's kernel has no VLAN support (no `8021q`, no bridge VLAN
//! filtering), while the guests' kernel has. To put a tagged VLAN on a lab's bridge,
//! a trunk tap on the bridge hands every frame tagged with the VLAN's id to an
//! access tap in another namespace without its tag, and tags every frame that
//! leaves the access tap on its way back, as a switch's access port would. Frames
//! of other VLANs and untagged ones stay on the bridge. Two threads relay, one per
//! direction; deleting the taps (on drop) ends them.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::hosts::{in_netns, ip};

/// The 802.1Q tag protocol identifier.
const TPID: [u8; 2] = [0x81, 0x00];
/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: rustix::ioctl::Opcode = rustix::ioctl::opcode::write::<i32>(b'T', 202);
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;

/// `struct ifreq` as `TUNSETIFF` reads it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Opens a new tap `name` in namespace `ns`: frames without any header.
fn open_tap(ns: &str, name: &str) -> Result<File> {
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    anyhow::ensure!(name.len() < 16, "tap name {name} is too long");
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    in_netns(ns, move || -> Result<File> {
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .context("opening /dev/net/tun")?;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `IfReq`
        // lays out (40 bytes on Linux), for as long as the call lasts.
        unsafe {
            rustix::ioctl::ioctl(
                &tun,
                rustix::ioctl::Updater::<TUNSETIFF, IfReq>::new(&mut req),
            )
        }
        .with_context(|| format!("creating tap {name}"))?;
        Ok(tun)
    })?
}

/// The VLAN id of a tagged frame.
fn frame_vid(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 18 && frame[12..14] == TPID)
        .then(|| u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff)
}

/// `frame` without its 802.1Q tag.
fn untag(frame: &[u8]) -> Vec<u8> {
    [&frame[..12], &frame[16..]].concat()
}

/// `frame` with a tag of `vid` after its addresses.
fn tag(frame: &[u8], vid: u16) -> Vec<u8> {
    let tci = (vid & 0x0fff).to_be_bytes();
    [&frame[..12], &TPID, &tci, &frame[12..]].concat()
}

/// Copies frames from `from` to `to` through `map` until either tap is gone;
/// counts those it passed.
fn relay(
    mut from: File,
    mut to: File,
    count: Arc<AtomicU64>,
    map: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = from.read(&mut buf) {
            if let Some(out) = map(&buf[..n]) {
                if to.write(&out).is_err() {
                    break;
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// A running access port; dropping it deletes both taps.
pub struct VlanPort {
    trunk: (String, String),
    access: (String, String),
    tagged_in: Arc<AtomicU64>,
}

impl VlanPort {
    /// Adds trunk tap `vlan<vid>t` to `bridge` in `trunk_ns` and access tap
    /// `access` with `address` (CIDR) in `access_ns`, and relays VLAN `vid`
    /// between them.
    pub fn start(
        trunk_ns: &str,
        bridge: &str,
        vid: u16,
        access_ns: &str,
        access: &str,
        address: &str,
    ) -> Result<Self> {
        let trunk_name = format!("vlan{vid}t");
        let trunk = open_tap(trunk_ns, &trunk_name)?;
        let port = VlanPort {
            trunk: (trunk_ns.to_owned(), trunk_name.clone()),
            access: (access_ns.to_owned(), access.to_owned()),
            tagged_in: Arc::new(AtomicU64::new(0)),
        };
        let access_tap = open_tap(access_ns, access)?;
        ip(&[
            "-n",
            trunk_ns,
            "link",
            "set",
            &trunk_name,
            "master",
            bridge,
            "up",
        ])?;
        ip(&["-n", access_ns, "addr", "add", address, "dev", access])?;
        ip(&["-n", access_ns, "link", "set", access, "up"])?;
        relay(
            trunk.try_clone()?,
            access_tap.try_clone()?,
            port.tagged_in.clone(),
            move |f| (frame_vid(f) == Some(vid)).then(|| untag(f)),
        );
        relay(access_tap, trunk, Arc::new(AtomicU64::new(0)), move |f| {
            (f.len() >= 14).then(|| tag(f, vid))
        });
        Ok(port)
    }

    /// How many tagged frames of the VLAN reached the access tap.
    pub fn tagged_frames_in(&self) -> u64 {
        self.tagged_in.load(Ordering::Relaxed)
    }
}

impl Drop for VlanPort {
    fn drop(&mut self) {
        for (ns, name) in [&self.trunk, &self.access] {
            let _ = std::process::Command::new("ip")
                .args(["-n", ns, "link", "del", name])
                .output();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_on_and_come_off_after_the_addresses() {
        let frame: Vec<u8> = (0u8..60).collect();
        let tagged = tag(&frame, 80);
        assert_eq!(tagged.len(), 64);
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 80]);
        assert_eq!(frame_vid(&tagged), Some(80));
        assert_eq!(untag(&tagged), frame);
        assert_eq!(frame_vid(&frame), None);
        assert_eq!(frame_vid(&tag(&frame, 4095 + 81)), Some(80));
    }
}
