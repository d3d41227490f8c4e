//! A real etcd cluster for tests: N members of Debian's etcd (package
//! etcd-server, which `scripts/setup.sh` installs) on 127.0.0.1 with free ports
//! and temporary data dirs, optionally with TLS and client certificates.
//!
//! Members are stopped by the PID recorded when they were started, on
//! [`EtcdCluster::kill9`] and when the cluster is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::free_ports;

/// How long a member may take to become healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// The etcd binary: `$SHOAL_ETCD`, or Debian's `/usr/bin/etcd`.
pub fn etcd_bin() -> Result<PathBuf> {
    let path = std::env::var_os("SHOAL_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if !path.exists() {
        bail!(
            "{} is missing: the etcd tests need a real etcd; run scripts/setup.sh \
             (it installs Debian's etcd-server)",
            path.display()
        );
    }
    Ok(path)
}

/// One member's fixed identity: the same on every restart.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP for `/health`, also when clients must use TLS.
    metrics_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The PEM material of a cluster started with [`EtcdCluster::start_tls`].
#[derive(Clone)]
pub struct ClusterTls {
    /// The CA that signed the members' serving certificate and the client's.
    pub ca_pem: String,
    /// A client certificate the members accept.
    pub client_cert_pem: String,
    /// Its private key.
    pub client_key_pem: String,
    server_cert: PathBuf,
    server_key: PathBuf,
    ca_file: PathBuf,
}

impl Member {
    fn client_url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A running etcd cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    tls: Option<ClusterTls>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `members` members and waits until each reports itself healthy.
    pub fn start(members: usize) -> Result<EtcdCluster> {
        Self::start_with(members, false)
    }

    /// Like [`start`](Self::start), but clients must talk TLS and present a
    /// certificate from the cluster's own CA (see [`tls`](Self::tls)).
    pub fn start_tls(members: usize) -> Result<EtcdCluster> {
        Self::start_with(members, true)
    }

    fn start_with(members: usize, tls: bool) -> Result<EtcdCluster> {
        // A port chosen free can be taken by another process before etcd binds it:
        // such a start is retried with other ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(members, tls) {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    eprintln!("etcd start attempt {attempt}: a port was taken, retrying: {e:#}");
                }
                other => return other,
            }
        }
    }

    fn try_start(members: usize, tls: bool) -> Result<EtcdCluster> {
        if members == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        etcd_bin()?;
        let dir = tempfile::Builder::new().prefix("shoal-etcd-").tempdir()?;
        let mut list = Vec::with_capacity(members);
        let ports = free_ports(3 * members)?;
        for (i, p) in ports.chunks(3).enumerate() {
            list.push(Member {
                name: format!("m{i}"),
                client_port: p[0],
                peer_port: p[1],
                metrics_port: p[2],
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            });
        }
        let initial_cluster = list
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("shoal-test-{}-{}", std::process::id(), list[0].client_port);
        let tls = if tls {
            Some(write_tls(dir.path())?)
        } else {
            None
        };
        let mut cluster = EtcdCluster {
            members: list,
            initial_cluster,
            token,
            tls,
            dir,
        };
        for i in 0..members {
            cluster.spawn(i)?;
        }
        for i in 0..members {
            cluster.wait_healthy(i)?;
        }
        Ok(cluster)
    }

    /// The members' client URLs, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        let tls = self.tls.is_some();
        self.members.iter().map(|m| m.client_url(tls)).collect()
    }

    /// The TLS material clients need, for a cluster from
    /// [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// How many members the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no member (never: `start` refuses that).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The PID of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members
            .get(i)
            .and_then(|m| m.child.as_ref())
            .map(Child::id)
    }

    /// Member `i`'s log so far (its stderr), for failure messages.
    pub fn log(&self, i: usize) -> String {
        self.members
            .get(i)
            .and_then(|m| std::fs::read_to_string(&m.log).ok())
            .unwrap_or_default()
    }

    /// The gRPC requests the members have answered so far, summed over the
    /// members, by method (`Range`, `Txn`, `Watch`, ...), from their metrics.
    pub fn grpc_requests(&self) -> Result<std::collections::BTreeMap<String, f64>> {
        let mut by_method = std::collections::BTreeMap::new();
        for m in &self.members {
            let body = http(m.metrics_port, "GET", "/metrics", "")?;
            for (labels, n) in
                crate::prom::samples(&body, "grpc_server_handled_total", &["grpc_method"])?
            {
                let method = labels.into_iter().next().unwrap_or_default();
                *by_method.entry(method).or_insert(0.0) += n;
            }
        }
        Ok(by_method)
    }

    /// The directory holding the data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        let member = self.members.get_mut(i).context("no such member")?;
        let mut child = member
            .child
            .take()
            .with_context(|| format!("etcd member {i} is not running"))?;
        crate::signal(child.id(), "KILL")?;
        child.wait()?;
        Ok(())
    }

    /// Starts member `i` again on its data dir and ports and waits until it is
    /// healthy.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.pid(i).is_some() {
            bail!("etcd member {i} is still running");
        }
        self.spawn(i)?;
        self.wait_healthy(i)
    }

    /// Which member leads, asked of every running member until one answers
    /// (through etcd's JSON gateway, so only without TLS).
    pub fn leader_index(&self) -> Result<usize> {
        if self.tls.is_some() {
            bail!("leader_index asks over plain HTTP; this cluster only talks TLS");
        }
        let mut last = None;
        for (i, member) in self.members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            match status(member.client_port) {
                Ok((_, 0)) => last = Some(anyhow::anyhow!("member {i} knows no leader")),
                Ok((_, leader)) => {
                    for (j, other) in self.members.iter().enumerate() {
                        if other.child.is_some() {
                            if let Ok((id, _)) = status(other.client_port) {
                                if id == leader {
                                    return Ok(j);
                                }
                            }
                        }
                    }
                    last = Some(anyhow::anyhow!(
                        "member {i} names leader {leader:x}, which no running member is"
                    ));
                }
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no etcd member runs")))
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let bin = etcd_bin()?;
        let member = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)?;
        let mut command = Command::new(bin);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth");
        }
        let client_url = member.client_url(self.tls.is_some());
        let child = command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-metrics-urls")
            .arg(format!("http://127.0.0.1:{}", member.metrics_port))
            .arg("--listen-peer-urls")
            .arg(member.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(member.peer_url())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--initial-cluster-state")
            .arg("new")
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting etcd member {i}"))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        let mut last = String::new();
        while Instant::now() < deadline {
            let member = &mut self.members[i];
            if let Some(child) = member.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    member.child = None;
                    bail!("etcd member {i} exited with {status}:\n{}", self.log(i));
                }
            }
            match http(member.metrics_port, "GET", "/health", "") {
                Ok(body) if body.contains(r#""health":"true""#) => return Ok(()),
                Ok(body) => last = body,
                Err(err) => last = err.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "etcd member {i} was not healthy within {HEALTHY_WITHIN:?} (last: {last}):\n{}",
            self.log(i)
        )
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = crate::signal(child.id(), "KILL");
                let _ = child.wait();
            }
        }
    }
}

/// Makes a CA, one serving certificate for 127.0.0.1 that every member uses,
/// and a client certificate, and writes the files etcd reads.
fn write_tls(dir: &Path) -> Result<ClusterTls> {
    let ttl = Duration::from_secs(24 * 3600);
    let ca = shoal_pki::CertificateAuthority::generate("shoal test etcd CA")?;
    let server = ca.issue_server(
        "etcd",
        &["localhost".to_owned()],
        &[std::net::IpAddr::from([127, 0, 0, 1])],
        ttl,
    )?;
    let client = ca.issue_client("shoal", &[], ttl)?;
    let write = |name: &str, pem: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, pem)?;
        Ok(path)
    };
    Ok(ClusterTls {
        ca_pem: ca.cert_pem().to_owned(),
        client_cert_pem: client.cert_pem,
        client_key_pem: client.key_pem,
        server_cert: write("server.pem", &server.cert_pem)?,
        server_key: write("server-key.pem", &server.key_pem)?,
        ca_file: write("ca.pem", ca.cert_pem())?,
    })
}

/// A member's own ID and the leader's ID it knows (0: none), from the JSON
/// gateway's maintenance status.
fn status(client_port: u16) -> Result<(u64, u64)> {
    let body = http(client_port, "POST", "/v3/maintenance/status", "{}")?;
    let json: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("status is not JSON: {body}"))?;
    // The gateway writes uint64 fields as strings.
    let id = |v: &serde_json::Value| -> Result<u64> {
        match v {
            serde_json::Value::String(s) => Ok(s.parse()?),
            serde_json::Value::Number(n) => n.as_u64().context("not a u64"),
            serde_json::Value::Null => Ok(0),
            other => bail!("unexpected ID {other}"),
        }
    };
    Ok((id(&json["header"]["member_id"])?, id(&json["leader"])?))
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; returns the body of a 200 answer.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<String> {
    let timeout = Duration::from_secs(2);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 200 ") {
        bail!("{method} {path}: {status_line}");
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok(if chunked {
        dechunk(rest)?
    } else {
        rest.to_owned()
    })
}

/// Decodes a chunked HTTP body.
fn dechunk(mut rest: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("bad chunk header")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).context("short chunk")?);
        rest = after
            .get(size..)
            .context("short chunk")?
            .trim_start_matches("\r\n");
    }
}
