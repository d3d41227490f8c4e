//! Boots Shoal's test guest image under raw QEMU, with no Shoal at all: TCG, one
//! virtio-net NIC on QEMU's user-mode network (slirp, which creates no host
//! interface and answers DHCP itself), and a tiny NoCloud server on 127.0.0.1 that
//! the guests reach as `10.0.2.2`, slirp's alias for the host's loopback.
//!
//! It is the baseline for "boot to phone-home": [`RawBoot::wait_all`] returns, per
//! VM, the time from QEMU's launch to the guest's phone-home POST.
//!
//! QEMU processes are stopped by the PID recorded at launch when the [`RawBoot`] is
//! dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// The host's loopback as slirp guests see it.
pub const SLIRP_HOST: &str = "10.0.2.2";

/// The test image's kernel and initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// `images/out/vmlinuz`.
    pub kernel: PathBuf,
    /// `images/out/initrd.img`.
    pub initrd: PathBuf,
}

impl GuestImage {
    /// The image under `images/out`, checked to exist and to contain `/bin/shoal`.
    pub fn find() -> Result<Self> {
        let out = workspace_root().join("images/out");
        let img = Self {
            kernel: out.join("vmlinuz"),
            initrd: out.join("initrd.img"),
        };
        for f in [&img.kernel, &img.initrd] {
            if !f.exists() {
                bail!(
                    "{} is missing: run scripts/setup.sh (it builds the test image)",
                    f.display()
                );
            }
        }
        if !img.has_guest_agent()? {
            bail!(
                "{} has no /bin/shoal, so the guest would never phone home: run \
                 scripts/setup.sh (it builds shoal-guest and the image with it)",
                img.initrd.display()
            );
        }
        Ok(img)
    }

    /// Whether the initramfs holds `bin/shoal` (listed with `gzip -dc | cpio -t`).
    pub fn has_guest_agent(&self) -> Result<bool> {
        let file = std::fs::File::open(&self.initrd)
            .with_context(|| format!("opening {}", self.initrd.display()))?;
        let mut gunzip = Command::new("gzip")
            .arg("-dc")
            .stdin(file)
            .stdout(Stdio::piped())
            .spawn()
            .context("running gzip")?;
        let cpio_in = gunzip.stdout.take().context("gzip stdout")?;
        let listing = Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(cpio_in)
            .stderr(Stdio::inherit())
            .output()
            .context("running cpio: run scripts/setup.sh")?;
        let gz = gunzip.wait()?;
        if !gz.success() || !listing.status.success() {
            bail!("listing {} failed", self.initrd.display());
        }
        Ok(String::from_utf8_lossy(&listing.stdout)
            .lines()
            .any(|l| l.trim_start_matches("./") == "bin/shoal"))
    }
}

/// One VM to boot: its NoCloud seed and the host ports forwarded into it.
#[derive(Debug, Clone)]
pub struct RawVmSpec {
    /// The VM's name, also its seed path (`/<name>/`); `vm0`, `vm1`, ...
    pub name: String,
    /// The meta-data document.
    pub meta_data: String,
    /// The user-data document.
    pub user_data: String,
    /// The vendor-data document.
    pub vendor_data: String,
    /// `(host port on 127.0.0.1, guest port)` pairs: slirp `hostfwd=tcp:...`.
    pub hostfwd: Vec<(u16, u16)>,
}

impl RawVmSpec {
    /// VM `index`: name `vm<index>`, instance-id `iid-vm<index>`, local-hostname
    /// `vm<index>`, an empty `#cloud-config`, no vendor-data, no forwarded ports.
    pub fn new(index: usize) -> Self {
        let name = format!("vm{index}");
        Self {
            meta_data: format!("instance-id: iid-{name}\nlocal-hostname: {name}\n"),
            user_data: "#cloud-config\n".to_string(),
            vendor_data: String::new(),
            hostfwd: Vec::new(),
            name,
        }
    }
}

/// A phone-home POST as the NoCloud server received it.
#[derive(Debug, Clone)]
pub struct PhoneHome {
    /// When it arrived.
    pub at: Instant,
    /// The form fields (`instance_id`, `hostname`, `fqdn`).
    pub fields: BTreeMap<String, String>,
}

/// What the NoCloud server serves and has seen.
#[derive(Default)]
struct SeedState {
    /// name -> (meta-data, user-data, vendor-data)
    docs: BTreeMap<String, [String; 3]>,
    phone_homes: BTreeMap<String, PhoneHome>,
    requests: Vec<String>,
}

struct Vm {
    name: String,
    child: Child,
    pid: u32,
    launched: Instant,
    console: PathBuf,
    stderr: PathBuf,
}

/// N test-image VMs under raw QEMU with their NoCloud server; see the module docs.
pub struct RawBoot {
    vms: Vec<Vm>,
    state: Arc<Mutex<SeedState>>,
    port: u16,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

/// The `-smbios` value carrying the NoCloud seed; QEMU doubles commas in values.
/// `nocloud-net`: cloud-init 22.4 (bookworm) fetches an `http://` seed only in its
/// network stage, which takes no `ds=nocloud` (local) seed.
pub fn smbios_serial(seed_url: &str) -> String {
    format!(
        "type=1,serial=ds=nocloud-net;s={}",
        seed_url.replace(',', ",,")
    )
}

/// The MAC of VM `index` (a locally administered QEMU-style address).
pub fn vm_mac(index: usize) -> String {
    let i = index as u32;
    format!("52:54:00:5e:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff)
}

/// QEMU's arguments (without the binary) for one VM.
pub fn qemu_args(
    image: &GuestImage,
    index: usize,
    spec: &RawVmSpec,
    seed_port: u16,
    console: &Path,
) -> Vec<String> {
    let mut netdev = format!("user,id=n0,hostname={}", spec.name.replace(',', ",,"));
    for (host, guest) in &spec.hostfwd {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    let seed = format!("http://{SLIRP_HOST}:{seed_port}/{}/", spec.name);
    [
        "-machine",
        "q35,accel=tcg",
        "-nodefaults",
        "-nographic",
        "-no-reboot",
        "-m",
        "256",
        "-kernel",
        &image.kernel.to_string_lossy(),
        "-initrd",
        &image.initrd.to_string_lossy(),
        "-append",
        "console=ttyS0 quiet",
        "-netdev",
        &netdev,
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={}", vm_mac(index)),
        "-smbios",
        &smbios_serial(&seed),
        "-serial",
        &format!("file:{}", console.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl RawBoot {
    /// Boots `n` VMs with [`RawVmSpec::new`] seeds.
    pub fn launch_n(n: usize) -> Result<Self> {
        Self::launch((0..n).map(RawVmSpec::new).collect())
    }

    /// Starts the NoCloud server, then one QEMU per spec, all at once.
    pub fn launch(specs: Vec<RawVmSpec>) -> Result<Self> {
        let image = GuestImage::find()?;
        let dir = tempfile::tempdir()?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the seed server")?;
        let port = listener.local_addr()?.port();
        let mut state = SeedState::default();
        for s in &specs {
            let docs = [
                s.meta_data.clone(),
                s.user_data.clone(),
                s.vendor_data.clone(),
            ];
            if state.docs.insert(s.name.clone(), docs).is_some() {
                bail!("two VMs are named {}", s.name);
            }
        }
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("rawboot-seed".into())
                .spawn(move || serve(listener, state, stop))?
        };
        let mut boot = Self {
            vms: Vec::new(),
            state,
            port,
            stop,
            server: Some(server),
            dir,
        };
        for (i, spec) in specs.iter().enumerate() {
            let console = boot.dir.path().join(format!("{}.log", spec.name));
            let stderr = boot.dir.path().join(format!("{}.qemu.err", spec.name));
            let args = qemu_args(&image, i, spec, port, &console);
            let launched = Instant::now();
            let child = Command::new("qemu-system-x86_64")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr)?)
                .spawn()
                .context("starting qemu-system-x86_64: run scripts/setup.sh")?;
            let pid = child.id();
            eprintln!("rawboot: {} qemu started (pid {pid})", spec.name);
            boot.vms.push(Vm {
                name: spec.name.clone(),
                child,
                pid,
                launched,
                console,
                stderr,
            });
        }
        Ok(boot)
    }

    /// The NoCloud server's port on 127.0.0.1 (`10.0.2.2:<port>` in the guests).
    pub fn seed_port(&self) -> u16 {
        self.port
    }

    /// The QEMU PIDs, in VM order.
    pub fn pids(&self) -> Vec<u32> {
        self.vms.iter().map(|v| v.pid).collect()
    }

    /// VM `i`'s serial console log so far.
    pub fn console(&self, i: usize) -> String {
        self.vms
            .get(i)
            .and_then(|v| std::fs::read(&v.console).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// VM `i`'s phone-home, if it has arrived.
    pub fn phone_home(&self, i: usize) -> Option<PhoneHome> {
        let name = &self.vms.get(i)?.name;
        self.lock().phone_homes.get(name).cloned()
    }

    /// Every request the NoCloud server has answered, as `METHOD path status`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every VM has phoned home and returns, per VM, the time from its
    /// QEMU's launch to its phone-home. Fails, with the console, when a QEMU exits
    /// first or `timeout` passes.
    pub fn wait_all(&mut self, timeout: Duration) -> Result<Vec<Duration>> {
        let deadline = Instant::now() + timeout;
        loop {
            let homes: Vec<Option<Instant>> = {
                let st = self.lock();
                self.vms
                    .iter()
                    .map(|v| st.phone_homes.get(&v.name).map(|p| p.at))
                    .collect()
            };
            if homes.iter().all(Option::is_some) {
                return Ok(self
                    .vms
                    .iter()
                    .zip(homes)
                    .map(|(v, at)| at.map_or(Duration::ZERO, |at| at - v.launched))
                    .collect());
            }
            let waiting: Vec<usize> = (0..self.vms.len())
                .filter(|i| homes[*i].is_none())
                .collect();
            for &i in &waiting {
                if let Some(status) = self.vms[i].child.try_wait()? {
                    let vm = &self.vms[i];
                    bail!(
                        "{} (qemu pid {}) exited with {status} before phoning home\n\
                         qemu stderr:\n{}\nconsole:\n{}",
                        vm.name,
                        vm.pid,
                        std::fs::read_to_string(&vm.stderr).unwrap_or_default(),
                        self.console(i)
                    );
                }
            }
            if Instant::now() >= deadline {
                let missing = waiting;
                let i = missing[0];
                bail!(
                    "{} of {} VMs did not phone home within {timeout:?} ({}); seed \
                     requests: {:?}\nconsole of {}:\n{}",
                    missing.len(),
                    self.vms.len(),
                    missing
                        .iter()
                        .map(|i| self.vms[*i].name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.requests(),
                    self.vms[i].name,
                    self.console(i)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RawBoot {
    fn drop(&mut self) {
        for vm in &mut self.vms {
            if let Ok(None) = vm.child.try_wait() {
                eprintln!("rawboot: stopping {} qemu (pid {})", vm.name, vm.pid);
                let _ = vm.child.kill();
                let _ = vm.child.wait();
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

fn serve(listener: TcpListener, state: Arc<Mutex<SeedState>>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let state = state.clone();
        std::thread::spawn(move || {
            let _ = handle(conn, &state);
        });
    }
}

/// Answers one HTTP/1.x request and closes the connection.
fn handle(conn: TcpStream, state: &Mutex<SeedState>) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().context("content-length")?;
            }
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let received = Instant::now();

    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let (status, reply) = match path.trim_start_matches('/').split_once('/') {
        Some((vm, file)) if st.docs.contains_key(vm) => {
            let docs = &st.docs[vm];
            match (method, file) {
                ("GET", "meta-data") => (200, docs[0].clone()),
                ("GET", "user-data") => (200, docs[1].clone()),
                ("GET", "vendor-data") => (200, docs[2].clone()),
                ("POST", "phone-home") => {
                    let fields = parse_form(&String::from_utf8_lossy(&body));
                    st.phone_homes.entry(vm.to_string()).or_insert(PhoneHome {
                        at: received,
                        fields,
                    });
                    (200, String::new())
                }
                _ => (404, "not found\n".to_string()),
            }
        }
        _ => (404, "not found\n".to_string()),
    };
    st.requests.push(format!("{method} {path} {status}"));
    drop(st);
    let mut conn = reader.into_inner();
    write!(
        conn,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        if status == 200 { "OK" } else { "Not Found" },
        reply.len()
    )?;
    Ok(())
}

/// Decodes `application/x-www-form-urlencoded`.
pub fn parse_form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends one line to a guest's control port (through a slirp `hostfwd`) and returns
/// the reply line, retrying the connection for up to `wait` while slirp has no guest
/// listener yet.
pub fn control(addr: SocketAddr, line: &str, wait: Duration) -> Result<String> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(format!("{line}\n").as_bytes())?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply)
        })();
        match attempt {
            // slirp accepts the host side even when the guest refuses: an empty
            // reply means the guest was not listening yet.
            Ok(r) if !r.is_empty() => return Ok(r.trim_end_matches('\n').to_string()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Ok(_) => bail!("{addr}: {line:?} got an empty reply"),
            Err(e) => return Err(e).with_context(|| format!("{addr}: {line:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let f = parse_form("instance_id=iid-vm0&hostname=a+b&fqdn=x%2Ey&bad=%zz&k");
        assert_eq!(f["instance_id"], "iid-vm0");
        assert_eq!(f["hostname"], "a b");
        assert_eq!(f["fqdn"], "x.y");
        assert_eq!(f["bad"], "%zz");
        assert_eq!(f["k"], "");
        assert_eq!(
            parse_form("a=%4"),
            BTreeMap::from([("a".into(), "%4".into())])
        );
    }

    #[test]
    fn qemu_args_carry_the_seed_and_forwards() {
        let image = GuestImage {
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initrd.img".into(),
        };
        let mut spec = RawVmSpec::new(3);
        spec.hostfwd.push((40000, 7070));
        let args = qemu_args(&image, 3, &spec, 8123, Path::new("/tmp/d/vm3.log"));
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).expect(flag);
            args[i + 1].clone()
        };
        assert_eq!(
            after("-smbios"),
            "type=1,serial=ds=nocloud-net;s=http://10.0.2.2:8123/vm3/"
        );
        assert_eq!(
            after("-netdev"),
            "user,id=n0,hostname=vm3,hostfwd=tcp:127.0.0.1:40000-:7070"
        );
        assert_eq!(
            after("-device"),
            "virtio-net-pci,netdev=n0,mac=52:54:00:5e:00:03"
        );
        assert_eq!(after("-serial"), "file:/tmp/d/vm3.log");
        assert_eq!(after("-machine"), "q35,accel=tcg");
        assert_eq!(
            smbios_serial("http://h/a,b/"),
            "type=1,serial=ds=nocloud-net;s=http://h/a,,b/"
        );
    }
}
