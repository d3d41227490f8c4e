//! The test image's guest agent (`shoal guest`, built by `scripts/build-guest.sh` into
//! the image by `scripts/setup.sh`) boots for real under raw QEMU with slirp
//! networking and no Shoal: DHCP, the NoCloud seed, hostname, `write_files`, the
//! control port and the HTTP responder, and the phone-home.
//!
//! Fails, rather than skips, when the image has no `/bin/shoal`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_e2e::free_port;
use shoal_e2e::rawboot::{control, RawBoot, RawVmSpec, SLIRP_HOST};

/// How long the guest may take from QEMU's launch to its phone-home (TCG).
const PHONE_HOME_WITHIN: Duration = Duration::from_secs(90);
/// How long the ready marker may lag the phone-home on the console.
const MARKER_WITHIN: Duration = Duration::from_secs(10);

const USER_DATA: &str = "#cloud-config
hostname: guest-test
write_files:
- path: /etc/shoal/hello.txt
  content: |
    hello from user-data
    line two
  permissions: '0600'
- path: /etc/shoal/hello.txt
  content: appended
  append: true
- path: /var/lib/shoal/blob
  encoding: b64
  content: AAECA/8=
runcmd:
- [echo, not run by the test image]
";

/// Decodes standard base64 (the control port's `cat` reply).
fn b64decode(s: &str) -> Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .with_context(|| format!("{s:?} is not base64"))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

fn http_get(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn the_guest_agent_configures_itself_from_nocloud_and_phones_home() -> Result<()> {
    let control_port = free_port()?;
    let http_port = free_port()?;
    let mut spec = RawVmSpec::new(0);
    spec.meta_data = "instance-id: iid-guest-test\nlocal-hostname: from-meta-data\n".into();
    spec.user_data = USER_DATA.into();
    spec.hostfwd = vec![(control_port, 7070), (http_port, 8080)];
    let mut boot = RawBoot::launch(vec![spec])?;
    eprintln!(
        "qemu pids {:?}, seed port {}",
        boot.pids(),
        boot.seed_port()
    );

    let times = boot.wait_all(PHONE_HOME_WITHIN)?;
    let ph = boot
        .phone_home(0)
        .context("wait_all returned without a phone-home")?;
    assert_eq!(
        ph.fields.get("hostname").map(String::as_str),
        Some("guest-test"),
        "{ph:?}"
    );
    assert_eq!(
        ph.fields.get("instance_id").map(String::as_str),
        Some("iid-guest-test"),
        "{ph:?}"
    );
    let requests = boot.requests();
    for want in [
        "GET /vm0/meta-data 200",
        "GET /vm0/user-data 200",
        "POST /vm0/phone-home 200",
    ] {
        assert!(
            requests.iter().any(|r| r == want),
            "no {want:?} in {requests:?}"
        );
    }

    // The marker follows the phone-home on the console.
    let deadline = Instant::now() + MARKER_WITHIN;
    let console = loop {
        let console = boot.console(0);
        if console.contains("SHOAL-GUEST-READY") {
            break console;
        }
        if Instant::now() >= deadline {
            bail!("no SHOAL-GUEST-READY on the console:\n{console}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // slirp leases its first address, 10.0.2.15.
    assert!(
        console.contains("SHOAL-GUEST-READY guest-test 10.0.2.15"),
        "{console}"
    );
    assert!(console.contains("key runcmd is not supported"), "{console}");
    assert!(!console.contains("SHOAL-GUEST-EXITED"), "{console}");

    let ctl = SocketAddr::from(([127, 0, 0, 1], control_port));
    let ask = |line: &str| control(ctl, line, Duration::from_secs(10));
    assert_eq!(ask("hostname")?, "guest-test");
    let hello = b64decode(&ask("cat /etc/shoal/hello.txt")?)?;
    assert_eq!(
        String::from_utf8_lossy(&hello),
        "hello from user-data\nline two\nappended"
    );
    assert_eq!(
        b64decode(&ask("cat /var/lib/shoal/blob")?)?,
        [0, 1, 2, 3, 255]
    );
    assert_eq!(b64decode(&ask("cat /etc/hostname")?)?, b"guest-test\n");
    let missing = ask("cat /etc/shoal/missing")?;
    assert!(missing.starts_with("error "), "{missing}");

    let seed = format!("http://{SLIRP_HOST}:{}", boot.seed_port());
    assert_eq!(ask(&format!("get {seed}/vm0/meta-data"))?, "200");
    assert_eq!(ask(&format!("get {seed}/vm0/nothing-here"))?, "404");
    assert_eq!(
        ask(&format!("tcp {SLIRP_HOST} {}", boot.seed_port()))?,
        "ok"
    );
    assert_eq!(ask(&format!("ping {SLIRP_HOST}"))?, "ok");
    assert_eq!(
        ask("ping not-an-ip")?,
        "error \"not-an-ip\" is not an IPv4 address"
    );

    let reply = http_get(SocketAddr::from(([127, 0, 0, 1], http_port)))?;
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nguest-test\n"), "{reply}");

    eprintln!(
        "raw QEMU (TCG, slirp): launch to phone-home {:.2}s",
        times[0].as_secs_f64()
    );
    Ok(())
}

#[test]
fn base64_decoding_matches_the_guest_encoding() -> Result<()> {
    assert_eq!(b64decode("aGkKdGhlcmU=")?, b"hi\nthere");
    assert_eq!(b64decode("AAECA/8=")?, [0, 1, 2, 3, 255]);
    assert_eq!(b64decode("")?, b"");
    assert!(b64decode("a*").is_err());
    Ok(())
}

/// The harness the boot benchmark uses: several VMs at once, each reading its own
/// seed (meta-data local-hostname `vm<i>`, no user-data hostname).
#[test]
fn vms_booted_together_each_read_their_own_seed() -> Result<()> {
    let mut boot = RawBoot::launch_n(2)?;
    let times = boot.wait_all(PHONE_HOME_WITHIN)?;
    for (i, t) in times.iter().enumerate() {
        let ph = boot.phone_home(i).context("phone-home")?;
        let want = format!("vm{i}");
        assert_eq!(ph.fields.get("hostname"), Some(&want), "{ph:?}");
        assert_eq!(ph.fields.get("instance_id"), Some(&format!("iid-{want}")));
        eprintln!("{want}: launch to phone-home {:.2}s", t.as_secs_f64());
    }
    Ok(())
}
