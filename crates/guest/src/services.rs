//! The test image's services, each an accept loop on its own thread:
//!
//! - the **HTTP responder** (port 8080): any request gets `HTTP/1.0 200 OK` and the
//!   body `<hostname>\n`, so ingress tests can see which VM answered;
//! - the **control port** (port 7070): one command line per connection, one reply
//!   line. See [`Command`] for the commands; a bad line gets `error <why>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::say;

/// The HTTP responder's port in the guest.
pub const HTTP_PORT: u16 = 8080;
/// The control port in the guest.
pub const CONTROL_PORT: u16 = 7070;
/// The longest command line accepted.
const MAX_LINE: u64 = 4096;
/// The largest file `cat` returns.
const MAX_CAT: u64 = 1 << 20;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The `tcp` command's connect timeout.
const TCP_TIMEOUT: Duration = Duration::from_secs(2);
/// The `get` command's request timeout.
const GET_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the services could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A listener could not be bound.
    #[error("{service}: binding {addr}: {source}")]
    Bind {
        /// `http` or `control`.
        service: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A service thread could not be started.
    #[error("{service}: starting its thread: {source}")]
    Spawn {
        /// `http` or `control`.
        service: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A service thread ended, which it never should.
    #[error("{service}: its thread ended")]
    Stopped {
        /// `http` or `control`.
        service: &'static str,
    },
}

/// A control-port command, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ping <ipv4>`: one busybox ping (`-c 1 -W 2`); `ok` or `fail` by its exit status.
    Ping(Ipv4Addr),
    /// `pings <ipv4> <count> <interval-ms>`: a busybox ping series; how many came
    /// back and the longest time without a reply (`sent=N received=M gap_ms=G`).
    Pings {
        /// The peer.
        ip: Ipv4Addr,
        /// Echo requests to send (1 to 6000).
        count: u32,
        /// Milliseconds between them (10 to 1000).
        interval_ms: u32,
    },
    /// `echoes <ipv4> <count> <interval-ms>`: one TCP connection to the peer's
    /// control port, held (`hold`) while a numbered line goes out and comes back
    /// every interval (`sent=N echoed=M max_rtt_ms=R`, then `broken` if it broke).
    Echoes {
        /// The peer.
        ip: Ipv4Addr,
        /// Lines to send (1 to 6000).
        count: u32,
        /// Milliseconds between them (10 to 1000).
        interval_ms: u32,
    },
    /// `hold`: this connection echoes each further line until it closes or idles
    /// for 30 s (the peer side of `echoes`).
    Hold,
    /// `tcp <ipv4> <port>`: a TCP connect with a 2 s timeout; `ok` or `fail`.
    Tcp(SocketAddrV4),
    /// `get <url>`: an HTTP GET; the status code (`200`) or `error <msg>`.
    Get(String),
    /// `hostname`: the kernel's host name.
    Hostname,
    /// `cat <path>`: the file's content, base64 on one line.
    Cat(PathBuf),
}

/// Why a control line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The line is empty.
    #[error("empty command: use ping, pings, echoes, hold, tcp, get, hostname or cat")]
    Empty,
    /// The first word is not a command.
    #[error("unknown command {0:?}: use ping, pings, echoes, hold, tcp, get, hostname or cat")]
    Unknown(String),
    /// The wrong number of arguments.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// An argument is not an IPv4 address.
    #[error("{0:?} is not an IPv4 address")]
    BadIp(String),
    /// An argument is not a port.
    #[error("{0:?} is not a port (1-65535)")]
    BadPort(String),
    /// An argument is not an http:// URL.
    #[error("{0:?} is not an http:// URL")]
    BadUrl(String),
    /// An argument is not an absolute path.
    #[error("{0:?} is not an absolute path")]
    BadPath(String),
}

impl Command {
    /// Parses one control line (without its line ending).
    pub fn parse(line: &str) -> Result<Self, CommandError> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let ip = |s: &str| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| CommandError::BadIp(s.to_string()))
        };
        match words.as_slice() {
            [] => Err(CommandError::Empty),
            ["ping", addr] => Ok(Command::Ping(ip(addr)?)),
            ["ping", ..] => Err(CommandError::Usage("ping <ipv4>")),
            ["pings", addr, count, interval] => {
                let (count, interval_ms) = series(count, interval, PINGS_USAGE)?;
                Ok(Command::Pings {
                    ip: ip(addr)?,
                    count,
                    interval_ms,
                })
            }
            ["pings", ..] => Err(CommandError::Usage(PINGS_USAGE)),
            ["echoes", addr, count, interval] => {
                let (count, interval_ms) = series(count, interval, ECHOES_USAGE)?;
                Ok(Command::Echoes {
                    ip: ip(addr)?,
                    count,
                    interval_ms,
                })
            }
            ["echoes", ..] => Err(CommandError::Usage(ECHOES_USAGE)),
            ["hold"] => Ok(Command::Hold),
            ["hold", ..] => Err(CommandError::Usage("hold")),
            ["tcp", addr, port] => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| CommandError::BadPort(port.to_string()))?;
                Ok(Command::Tcp(SocketAddrV4::new(ip(addr)?, port)))
            }
            ["tcp", ..] => Err(CommandError::Usage("tcp <ipv4> <port>")),
            ["get", url] => {
                let host = url.strip_prefix("http://").unwrap_or_default();
                if host.is_empty() || host.starts_with('/') {
                    return Err(CommandError::BadUrl(url.to_string()));
                }
                Ok(Command::Get(url.to_string()))
            }
            ["get", ..] => Err(CommandError::Usage("get <http://url>")),
            ["hostname"] => Ok(Command::Hostname),
            ["hostname", ..] => Err(CommandError::Usage("hostname")),
            ["cat", path] => {
                let p = PathBuf::from(path);
                if !p.is_absolute() {
                    return Err(CommandError::BadPath(path.to_string()));
                }
                Ok(Command::Cat(p))
            }
            ["cat", ..] => Err(CommandError::Usage("cat <absolute path>")),
            [other, ..] => Err(CommandError::Unknown(other.to_string())),
        }
    }
}

/// The current kernel host name.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Where the services listen and how `ping` runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The HTTP responder's address.
    pub http: SocketAddr,
    /// The control port's address.
    pub control: SocketAddr,
    /// The ping program and its leading arguments, e.g. `["/bin/busybox", "ping"]`.
    pub ping: Vec<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            http: SocketAddr::from((Ipv4Addr::UNSPECIFIED, HTTP_PORT)),
            control: SocketAddr::from((Ipv4Addr::UNSPECIFIED, CONTROL_PORT)),
            ping: vec!["/bin/busybox".into(), "ping".into()],
        }
    }
}

/// The running services.
pub struct Running {
    /// The HTTP responder's bound address.
    pub http: SocketAddr,
    /// The control port's bound address.
    pub control: SocketAddr,
    threads: Vec<(&'static str, JoinHandle<()>)>,
}

impl Running {
    /// Blocks while the services run; they never stop on their own, so this returns
    /// only if a thread ended (an error).
    pub fn wait(self) -> ServiceError {
        let mut service = "services";
        for (name, t) in self.threads {
            service = name;
            let _ = t.join();
        }
        ServiceError::Stopped { service }
    }
}

/// Binds both listeners (failing before any thread starts) and serves them.
pub fn start(cfg: &ServiceConfig) -> Result<Running, ServiceError> {
    let bind = |service, addr| {
        TcpListener::bind(addr).map_err(|source| ServiceError::Bind {
            service,
            addr,
            source,
        })
    };
    let http = bind("http", cfg.http)?;
    let control = bind("control", cfg.control)?;
    let addr = |l: &TcpListener, service, want| {
        l.local_addr().map_err(|source| ServiceError::Bind {
            service,
            addr: want,
            source,
        })
    };
    let http_addr = addr(&http, "http", cfg.http)?;
    let control_addr = addr(&control, "control", cfg.control)?;
    let ping = cfg.ping.clone();
    let spawn = |service: &'static str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(service.to_string())
            .spawn(f)
            .map(|t| (service, t))
            .map_err(|source| ServiceError::Spawn { service, source })
    };
    let threads = vec![
        spawn(
            "http",
            Box::new(move || accept_loop("http", http, serve_http)),
        )?,
        spawn(
            "control",
            Box::new(move || accept_loop("control", control, move |s| serve_control(s, &ping))),
        )?,
    ];
    Ok(Running {
        http: http_addr,
        control: control_addr,
        threads,
    })
}

/// The most connections one listener serves at once; more are closed at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// Accepts connections on `listener` forever, each handled on its own thread, at most
/// [`MAX_CONNECTIONS`] at once.
pub(crate) fn accept_loop<F>(service: &'static str, listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) + Clone + Send + 'static,
{
    /// Counts a connection while its thread runs.
    struct Slot(Arc<AtomicUsize>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    say!("{service}: {MAX_CONNECTIONS} connections busy: closing {peer}");
                    continue;
                }
                let slot = Slot(Arc::clone(&active));
                let handle = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("{service}-conn"))
                    .spawn(move || {
                        let _slot = slot;
                        handle(stream)
                    });
                if let Err(e) = spawned {
                    say!("{service}: cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                say!("{service}: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Answers one HTTP request (read up to the blank line, or 8 KiB) with the hostname.
fn serve_http(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while seen.len() < 8192 && !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("{}\n", hostname());
    let _ = write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn serve_control(stream: TcpStream, ping: &[String]) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let Ok(rest) = stream.try_clone() else {
        return;
    };
    let mut line = String::new();
    let reply = match BufReader::new(stream.take(MAX_LINE)).read_line(&mut line) {
        Ok(_) if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE => {
            format!("error line longer than {MAX_LINE} bytes")
        }
        Ok(_) => match Command::parse(line.trim_end_matches(['\r', '\n'])) {
            // The client waits for `held` before it sends more, so nothing of the
            // connection is left in the first line's buffer.
            Ok(Command::Hold) => return hold(rest, out),
            Ok(cmd) => execute(&cmd, ping),
            Err(e) => format!("error {e}"),
        },
        Err(e) => format!("error reading the command: {e}"),
    };
    let _ = writeln!(out, "{}", one_line(&reply));
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

fn ok_fail(ok: bool) -> String {
    if ok { "ok" } else { "fail" }.to_string()
}

const PINGS_USAGE: &str = "pings <ipv4> <count 1-6000> <interval-ms 10-1000>";
const ECHOES_USAGE: &str = "echoes <ipv4> <count 1-6000> <interval-ms 10-1000>";

/// How long a held connection may stay idle, and how long `echoes` waits for a line.
const HOLD_IDLE: Duration = Duration::from_secs(30);

/// The count and interval of a series command.
fn series(count: &str, interval: &str, usage: &'static str) -> Result<(u32, u32), CommandError> {
    let count = count
        .parse::<u32>()
        .ok()
        .filter(|c| (1..=6000).contains(c))
        .ok_or(CommandError::Usage(usage))?;
    let interval_ms = interval
        .parse::<u32>()
        .ok()
        .filter(|i| (10..=1000).contains(i))
        .ok_or(CommandError::Usage(usage))?;
    Ok((count, interval_ms))
}

/// Holds one connection to the control port at `addr` and sends `count` numbered
/// lines `interval_ms` apart, each echoed back; sums up as
/// `sent=N echoed=M max_rtt_ms=R`, with ` broken: <why>` when the connection broke.
pub fn echo_series(addr: SocketAddr, count: u32, interval_ms: u32) -> String {
    let stream = match TcpStream::connect_timeout(&addr, TCP_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return format!("error connecting to {addr}: {e}"),
    };
    let _ = stream.set_read_timeout(Some(HOLD_IDLE));
    let Ok(mut out) = stream.try_clone() else {
        return "error cloning the connection".into();
    };
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    let held = writeln!(out, "hold").is_ok()
        && lines.read_line(&mut line).is_ok()
        && line.trim_end() == "held";
    if !held {
        return format!(
            "error {addr} did not hold the connection: {:?}",
            line.trim_end()
        );
    }
    let (mut echoed, mut max_rtt) = (0u32, Duration::ZERO);
    for i in 0..count {
        let sent = Instant::now();
        line.clear();
        let back = writeln!(out, "{i}")
            .map_err(|e| e.to_string())
            .and_then(|()| match lines.read_line(&mut line) {
                Ok(0) => Err("closed by the peer".to_string()),
                Ok(_) if line.trim_end() == i.to_string() => Ok(()),
                Ok(_) => Err(format!("echoed {:?} for {i}", line.trim_end())),
                Err(e) => Err(e.to_string()),
            });
        match back {
            Ok(()) => {
                echoed += 1;
                max_rtt = max_rtt.max(sent.elapsed());
            }
            Err(why) => {
                return format!(
                    "sent={} echoed={echoed} max_rtt_ms={} broken: {why}",
                    i + 1,
                    max_rtt.as_millis()
                )
            }
        }
        std::thread::sleep(Duration::from_millis(u64::from(interval_ms)));
    }
    format!(
        "sent={count} echoed={echoed} max_rtt_ms={}",
        max_rtt.as_millis()
    )
}

/// Echoes each line of a held connection until it closes or idles.
fn hold(stream: TcpStream, mut out: TcpStream) {
    let _ = stream.set_read_timeout(Some(HOLD_IDLE));
    if writeln!(out, "held").is_err() {
        return;
    }
    let mut lines = BufReader::new(stream.take(u64::MAX));
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut lines).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if writeln!(out, "{}", line.trim_end()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Sums up a ping series from ping's output: the replies (by `seq=`) and the
/// longest time between two replies, counting the series' start and end.
pub fn ping_series(output: &str, count: u32, interval_ms: u32) -> String {
    let mut got = std::collections::BTreeSet::new();
    for line in output.lines() {
        if let Some(seq) = line
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix("seq="))
            .and_then(|n| n.parse::<u32>().ok())
        {
            if seq < count {
                got.insert(seq);
            }
        }
    }
    // The longest run of missing replies, plus one interval.
    let (mut longest, mut run) = (0u32, 0u32);
    for seq in 0..count {
        if got.contains(&seq) {
            run = 0;
        } else {
            run += 1;
            longest = longest.max(run);
        }
    }
    let gap_ms = if longest == 0 {
        0
    } else {
        u64::from(longest + 1) * u64::from(interval_ms)
    };
    format!("sent={count} received={} gap_ms={gap_ms}", got.len())
}

/// Runs a command and returns its one-line reply.
pub fn execute(cmd: &Command, ping: &[String]) -> String {
    match cmd {
        Command::Ping(ip) => {
            let Some((prog, args)) = ping.split_first() else {
                return "error no ping program configured".to_string();
            };
            let status = std::process::Command::new(prog)
                .args(args)
                .args(["-c", "1", "-W", "2"])
                .arg(ip.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            match status {
                Ok(s) => ok_fail(s.success()),
                Err(e) => format!("error running {prog}: {e}"),
            }
        }
        Command::Pings {
            ip,
            count,
            interval_ms,
        } => {
            let Some((prog, args)) = ping.split_first() else {
                return "error no ping program configured".to_string();
            };
            let secs = format!("{}.{:03}", interval_ms / 1000, interval_ms % 1000);
            let out = std::process::Command::new(prog)
                .args(args)
                .args(["-c", &count.to_string(), "-i", &secs, "-W", "1"])
                .arg(ip.to_string())
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output();
            match out {
                Ok(o) => ping_series(&String::from_utf8_lossy(&o.stdout), *count, *interval_ms),
                Err(e) => format!("error running {prog}: {e}"),
            }
        }
        Command::Echoes {
            ip,
            count,
            interval_ms,
        } => echo_series(SocketAddr::from((*ip, CONTROL_PORT)), *count, *interval_ms),
        // Served by the control loop itself, which keeps the connection.
        Command::Hold => "error hold is for a connection of its own".into(),
        Command::Tcp(addr) => {
            ok_fail(TcpStream::connect_timeout(&SocketAddr::V4(*addr), TCP_TIMEOUT).is_ok())
        }
        Command::Get(url) => match crate::http::agent(GET_TIMEOUT).get(url).call() {
            Ok(resp) => resp.status().as_u16().to_string(),
            Err(e) => format!("error {e}"),
        },
        Command::Hostname => hostname(),
        Command::Cat(path) => {
            let read = std::fs::File::open(path).and_then(|f| {
                let mut content = Vec::new();
                f.take(MAX_CAT + 1).read_to_end(&mut content)?;
                Ok(content)
            });
            match read {
                Ok(c) if c.len() as u64 > MAX_CAT => {
                    format!("error {} is larger than {MAX_CAT} bytes", path.display())
                }
                Ok(c) => base64::engine::general_purpose::STANDARD.encode(c),
                Err(e) => format!("error {}: {e}", path.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_strictly() {
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(Command::parse("ping 10.0.0.1"), Ok(Command::Ping(ip)));
        assert_eq!(
            Command::parse("tcp 10.0.0.1 6443"),
            Ok(Command::Tcp(SocketAddrV4::new(ip, 6443)))
        );
        assert_eq!(
            Command::parse("get http://10.0.0.1/readyz"),
            Ok(Command::Get("http://10.0.0.1/readyz".into()))
        );
        assert_eq!(Command::parse("hostname"), Ok(Command::Hostname));
        assert_eq!(
            Command::parse("cat /etc/hostname"),
            Ok(Command::Cat("/etc/hostname".into()))
        );
        for (line, want) in [
            ("", CommandError::Empty),
            ("reboot", CommandError::Unknown("reboot".into())),
            ("ping", CommandError::Usage("ping <ipv4>")),
            ("ping 10.0.0.1 x", CommandError::Usage("ping <ipv4>")),
            (
                "ping example.com",
                CommandError::BadIp("example.com".into()),
            ),
            ("ping ::1", CommandError::BadIp("::1".into())),
            (
                "ping 10.0.0.1;id",
                CommandError::BadIp("10.0.0.1;id".into()),
            ),
            ("tcp 10.0.0.1", CommandError::Usage("tcp <ipv4> <port>")),
            ("tcp 10.0.0.1 0", CommandError::BadPort("0".into())),
            ("tcp 10.0.0.1 65536", CommandError::BadPort("65536".into())),
            (
                "tcp 10.0.0.300 80",
                CommandError::BadIp("10.0.0.300".into()),
            ),
            ("get https://x/", CommandError::BadUrl("https://x/".into())),
            ("get http:///x", CommandError::BadUrl("http:///x".into())),
            ("hostname x", CommandError::Usage("hostname")),
            ("cat etc/passwd", CommandError::BadPath("etc/passwd".into())),
        ] {
            assert_eq!(Command::parse(line), Err(want), "{line:?}");
        }
    }

    fn ask(addr: SocketAddr, line: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(line.as_bytes()).expect("send");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("reply");
        reply
    }

    fn running() -> Running {
        start(&ServiceConfig {
            http: "127.0.0.1:0".parse().expect("addr"),
            control: "127.0.0.1:0".parse().expect("addr"),
            ping: vec!["/nonexistent/ping".into()],
        })
        .expect("services start")
    }

    #[test]
    fn the_http_responder_names_the_host() {
        let svc = running();
        let reply = ask(svc.http, "GET /anything HTTP/1.1\r\nHost: x\r\n\r\n");
        let want_body = format!("{}\n", hostname());
        assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with(&format!("\r\n\r\n{want_body}")), "{reply}");
        assert!(
            reply.contains(&format!("Content-Length: {}\r\n", want_body.len())),
            "{reply}"
        );
    }

    #[test]
    fn the_control_port_answers_one_line_per_connection() {
        let svc = running();
        assert_eq!(ask(svc.control, "hostname\n"), format!("{}\n", hostname()));

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"hi\nthere").expect("write");
        assert_eq!(
            ask(svc.control, &format!("cat {}\r\n", file.display())),
            "aGkKdGhlcmU=\n"
        );
        let missing = ask(svc.control, "cat /nonexistent/file\n");
        assert!(
            missing.starts_with("error /nonexistent/file: "),
            "{missing}"
        );

        // tcp: the control port itself is listening; a closed port is not.
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed_port = closed.local_addr().expect("addr").port();
        drop(closed);
        let port = svc.control.port();
        assert_eq!(ask(svc.control, &format!("tcp 127.0.0.1 {port}\n")), "ok\n");
        assert_eq!(
            ask(svc.control, &format!("tcp 127.0.0.1 {closed_port}\n")),
            "fail\n"
        );

        // get: the HTTP responder answers 200; a closed port is an error.
        let http = svc.http.port();
        assert_eq!(
            ask(svc.control, &format!("get http://127.0.0.1:{http}/x\n")),
            "200\n"
        );
        let refused = ask(
            svc.control,
            &format!("get http://127.0.0.1:{closed_port}/\n"),
        );
        assert!(refused.starts_with("error "), "{refused}");

        let bad = ask(svc.control, "ping nowhere\n");
        assert_eq!(bad, "error \"nowhere\" is not an IPv4 address\n");
        let no_ping = ask(svc.control, "ping 127.0.0.1\n");
        assert!(
            no_ping.starts_with("error running /nonexistent/ping"),
            "{no_ping}"
        );
        let long = ask(svc.control, &"x".repeat(MAX_LINE as usize));
        assert!(long.starts_with("error line longer"), "{long}");
    }

    #[test]
    fn a_ping_series_counts_replies_and_the_longest_silence() {
        let out = "PING 10.0.0.2 (10.0.0.2): 56 data bytes\n\
            64 bytes from 10.0.0.2: seq=0 ttl=64 time=0.1 ms\n\
            64 bytes from 10.0.0.2: seq=1 ttl=64 time=0.1 ms\n\
            64 bytes from 10.0.0.2: seq=4 ttl=64 time=0.1 ms\n\
            64 bytes from 10.0.0.2: seq=5 ttl=64 time=0.1 ms\n\
            64 bytes from 10.0.0.2: seq=7 ttl=64 time=0.1 ms\n";
        // seq 2-3 missing: 3 intervals between replies 1 and 4; 6 missing: 2.
        assert_eq!(ping_series(out, 8, 50), "sent=8 received=5 gap_ms=150");
        assert_eq!(ping_series(out, 6, 50), "sent=6 received=4 gap_ms=150");
        assert_eq!(ping_series("", 3, 50), "sent=3 received=0 gap_ms=200");
        let all = "seq=0\nseq=1\n";
        assert_eq!(ping_series(all, 2, 50), "sent=2 received=2 gap_ms=0");
        assert_eq!(
            Command::parse("pings 10.0.0.2 100 50"),
            Ok(Command::Pings {
                ip: Ipv4Addr::new(10, 0, 0, 2),
                count: 100,
                interval_ms: 50
            })
        );
        for bad in [
            "pings 10.0.0.2 0 50",
            "pings 10.0.0.2 10 5",
            "pings 10.0.0.2 10",
        ] {
            assert_eq!(
                Command::parse(bad),
                Err(CommandError::Usage(PINGS_USAGE)),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_echo_series_holds_one_connection_and_says_when_it_breaks() {
        let cfg = ServiceConfig {
            http: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ping: vec!["/nonexistent/ping".into()],
        };
        let svc = start(&cfg).expect("services start");
        let got = echo_series(svc.control, 5, 10);
        assert!(got.starts_with("sent=5 echoed=5 max_rtt_ms="), "{got}");
        assert!(!got.contains("broken"), "{got}");
        // A port where nothing listens: the series says so instead of counting.
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let refused = echo_series(closed, 5, 10);
        assert!(refused.starts_with("error connecting"), "{refused}");
        assert_eq!(
            Command::parse("echoes 10.0.0.2 100 50"),
            Ok(Command::Echoes {
                ip: Ipv4Addr::new(10, 0, 0, 2),
                count: 100,
                interval_ms: 50
            })
        );
        assert_eq!(
            Command::parse("echoes 10.0.0.2 100"),
            Err(CommandError::Usage(ECHOES_USAGE))
        );
    }

    #[test]
    fn ping_reports_the_exit_status() {
        // Any program with ping's exit-status contract will do: `true` and `false`.
        assert_eq!(
            execute(&Command::Ping(Ipv4Addr::LOCALHOST), &["true".into()]),
            "ok"
        );
        assert_eq!(
            execute(&Command::Ping(Ipv4Addr::LOCALHOST), &["false".into()]),
            "fail"
        );
    }

    #[test]
    fn binding_a_busy_port_fails_before_serving() {
        let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
        let err = start(&ServiceConfig {
            http: busy.local_addr().expect("addr"),
            control: "127.0.0.1:0".parse().expect("addr"),
            ping: vec![],
        })
        .err()
        .expect("port is busy");
        assert!(
            matches!(
                err,
                ServiceError::Bind {
                    service: "http",
                    ..
                }
            ),
            "{err}"
        );
    }
}
