//! A switch's access port on one VLAN, in user space, for the labs.
//!
//! This machine's kernel has no VLAN support (no `8021q`, no bridge VLAN
//! filtering), while the guests' kernel has. To put a tagged VLAN on a lab's bridge,
//! a trunk tap on the bridge hands every frame tagged with the VLAN's id to an
//! access tap in another namespace without its tag, and tags every frame that
//! leaves the access tap on its way back, as a switch's access port would. Frames
//! of other VLANs and untagged ones stay on the bridge.
//!
//! The relay is a short Python program (the workspace forbids `unsafe`, which a
//! tap's `TUNSETIFF` needs from Rust): it opens both taps in the access namespace,
//! and the trunk tap is then moved into the bridge's. Its PID is recorded; dropping
//! the port stops it, and the taps go with it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::hosts::ip;
use crate::pxelab::{in_ns, stop};

/// The relay: `python3 -c RELAY VID TRUNK ACCESS`. It prints `ready` once both
/// taps exist.
const RELAY: &str = r#"
import fcntl, os, select, struct, sys
TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000
vid, trunk_name, access_name = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd

trunk, access = tap(trunk_name), tap(access_name)
tag = b"\x81\x00" + struct.pack("!H", vid)
print("ready", flush=True)
while True:
    for fd in select.select([trunk, access], [], [])[0]:
        frame = os.read(fd, 65536)
        if fd == trunk:
            tagged = len(frame) >= 18 and frame[12:14] == b"\x81\x00"
            if tagged and struct.unpack("!H", frame[14:16])[0] & 0x0FFF == vid:
                os.write(access, frame[:12] + frame[16:])
        elif len(frame) >= 14:
            os.write(trunk, frame[:12] + tag + frame[12:])
"#;

/// A running access port; dropping it stops the relay.
pub struct VlanPort {
    access_ns: String,
    access: String,
    relay: Child,
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
        let trunk = format!("vlan{vid}t");
        let relay = in_ns(access_ns, "python3")
            .args(["-u", "-c", RELAY, &vid.to_string(), &trunk, access])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the VLAN relay (python3)")?;
        let mut port = VlanPort {
            access_ns: access_ns.to_owned(),
            access: access.to_owned(),
            relay,
        };
        let mut line = String::new();
        if let Some(out) = port.relay.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        if line.trim() != "ready" {
            let mut why = String::new();
            if let Some(mut err) = port.relay.stderr.take() {
                std::io::Read::read_to_string(&mut err, &mut why)?;
            }
            bail!("the VLAN relay did not start: {why}");
        }
        ip(&["-n", access_ns, "link", "set", &trunk, "netns", trunk_ns])?;
        ip(&[
            "-n", trunk_ns, "link", "set", &trunk, "master", bridge, "up",
        ])?;
        ip(&["-n", access_ns, "addr", "add", address, "dev", access])?;
        ip(&["-n", access_ns, "link", "set", access, "up"])?;
        Ok(port)
    }

    /// How many frames of the VLAN reached the access tap (its receive counter:
    /// only the relay writes to it).
    pub fn tagged_frames_in(&self) -> Result<u64> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.access_ns,
                "-s",
                "-j",
                "link",
                "show",
                &self.access,
            ])
            .output()?;
        let links: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
        links[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .with_context(|| format!("no receive counter on {}: {links}", self.access))
    }
}

impl Drop for VlanPort {
    fn drop(&mut self) {
        stop(&mut self.relay);
    }
}
