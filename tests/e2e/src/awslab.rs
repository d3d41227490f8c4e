//! The AWS lab: moto (`moto_server`, from the setup script's venv) as AWS, and a
//! proxy in front of it that counts every AWS call by service and action, can
//! delay each one, and can make NAT gateways look `pending` for a while, so that
//! the provider's waiting paths run although moto answers at once.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use aws_credential_types::Credentials;
use serde_json::json;

use crate::{free_port, ServerProc};

/// The version the setup script installs.
pub const MOTO_VERSION: &str = "5.2.1";
/// The credentials every lab server uses (moto accepts any unless told otherwise).
pub const CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "eu-west-1"),
];

/// The lab's region.
pub const REGION: &str = "eu-west-1";
/// The tag on every AWS resource of a cluster.
pub const TAG: &str = "shoal.io/cluster";
/// The lab's organization.
pub const ORG: &str = "acme";

/// The `moto_server` of the setup script's venv.
pub fn moto_bin() -> Result<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let bin = PathBuf::from(home).join(format!(".cache/shoal/moto-{MOTO_VERSION}/bin/moto_server"));
    if !bin.exists() {
        bail!(
            "{} is missing: run scripts/setup.sh (make setup), which installs moto {MOTO_VERSION}",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running moto.
pub struct Moto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Moto {
    /// Starts moto; with `auth`, it checks credentials as IAM does (and refuses
    /// unknown ones with 403).
    pub fn start(auth: bool) -> Result<Self> {
        Self::spawn(auth.then_some(0))
    }

    /// Starts moto checking credentials as IAM does after its first `free` calls,
    /// which may set up users and keys with any credentials.
    pub fn start_auth_after(free: u32) -> Result<Self> {
        Self::spawn(Some(free))
    }

    fn spawn(free_calls: Option<u32>) -> Result<Self> {
        let port = free_port()?;
        let mut cmd = Command::new(moto_bin()?);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(free) = free_calls {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", free.to_string());
        }
        let child = cmd.spawn().context("starting moto_server")?;
        let moto = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("moto_server did not listen on {port} within 30 s")
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<()> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.write_all(b"POST /moto-api/reset HTTP/1.1\r\nHost: moto\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        if !out.starts_with("HTTP/1.1 200") && !out.starts_with("HTTP/1.0 200") {
            bail!("moto reset: {}", out.lines().next().unwrap_or_default());
        }
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SDK clients straight to moto (not through the proxy), for checking what
/// Shoal made.
pub struct Aws {
    /// Its client.
    pub ec2: aws_sdk_ec2::Client,
    /// Its client.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// Its client.
    pub asg: aws_sdk_autoscaling::Client,
    /// Its client.
    pub dns: aws_sdk_route53::Client,
    /// Its client.
    pub iam: aws_sdk_iam::Client,
    /// Its client.
    pub tagging: aws_sdk_resourcegroupstagging::Client,
}

/// The clients of `moto`.
pub async fn aws(moto: &Moto) -> Aws {
    aws_at(&moto.url()).await
}

/// Clients of the AWS endpoint at `url` (moto's, or the proxy's).
pub async fn aws_at(url: &str) -> Aws {
    aws_as(
        url,
        Credentials::new("testing", "testing", None, None, "shoal-e2e"),
    )
    .await
}

/// Clients of the AWS endpoint at `url` signing with `credentials`.
pub async fn aws_as(url: &str, credentials: Credentials) -> Aws {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(credentials)
        .http_client(http)
        .load()
        .await;
    Aws {
        ec2: aws_sdk_ec2::Client::new(&config),
        elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
        asg: aws_sdk_autoscaling::Client::new(&config),
        dns: aws_sdk_route53::Client::new(&config),
        iam: aws_sdk_iam::Client::new(&config),
        tagging: aws_sdk_resourcegroupstagging::Client::new(&config),
    }
}

/// A server on `endpoint` with an org, a Release with one of moto's AMIs, and a
/// hosted zone `example.com`.
pub async fn lab(endpoint: &str, aws: &Aws) -> Result<ServerProc> {
    let server = ServerProc::start_with_env(
        &["--aws-endpoint-url", endpoint, "--lease-duration", "2"],
        &CREDENTIALS,
    )?;
    server.shoal_ok(&["org", "create", ORG])?;
    let images = aws.ec2.describe_images().owners("amazon").send().await?;
    let ami = images
        .images()
        .iter()
        .find_map(|i| i.image_id())
        .context("moto lists no AMI")?;
    let release = json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Release",
        "metadata": {"name": "aws-1-35"},
        "spec": {"kubernetesVersion": "1.35.4", "bootstrap": "kubeadm",
                 "image": {"amis": {REGION: ami}}},
    });
    let file = server.data_dir.with_extension("release.json");
    std::fs::write(&file, release.to_string())?;
    server.kubectl_ok(&["apply", "-f", &file.display().to_string()])?;
    let zones = aws.dns.list_hosted_zones().send().await?;
    if !zones
        .hosted_zones()
        .iter()
        .any(|z| z.name() == "example.com.")
    {
        aws.dns
            .create_hosted_zone()
            .name("example.com")
            .caller_reference(format!("shoal-{}", server.port))
            .send()
            .await?;
    }
    Ok(server)
}

/// What the proxy shares with its threads.
#[derive(Default)]
struct Shared {
    counts: Mutex<BTreeMap<String, u64>>,
    delay_ms: AtomicU64,
    pending_nat: AtomicU64,
    stop: AtomicBool,
}

/// A proxy in front of moto that counts, delays and rewrites.
pub struct Proxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy to `upstream` (moto's port).
    pub fn start(upstream: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &s);
                });
            }
        });
        Ok(Self { port, shared })
    }

    /// The endpoint to give Shoal.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Delays every call by `ms` from now on.
    pub fn set_delay(&self, ms: u64) {
        self.shared.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Shows every NAT gateway as `pending` in the next `n` answers of
    /// CreateNatGateway and DescribeNatGateways.
    pub fn nat_pending_for(&self, n: u64) {
        self.shared.pending_nat.store(n, Ordering::Relaxed);
    }

    /// The calls so far, `service:Action` → count.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.shared
            .counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Forgets the counts.
    pub fn reset_counts(&self) {
        if let Ok(mut c) = self.shared.counts.lock() {
            c.clear();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one HTTP/1.1 message (head and Content-Length body) from `r`.
fn read_message(r: &mut impl Read) -> Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            return Ok(None);
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `service:Action` of a signed AWS request.
fn call_of(head: &str, body: &[u8]) -> String {
    let service = header(head, "authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("unknown")
        .to_owned();
    let body = String::from_utf8_lossy(body);
    if let Some(action) = body.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
        return format!("{service}:{action}");
    }
    // REST services (Route 53): the method and the path without IDs.
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default();
    let path = parts
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    let shape: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, seg)| {
            if i > 0 && segments[i - 1] == "hostedzone" {
                "{id}"
            } else {
                seg
            }
        })
        .collect();
    format!("{service}:{method} {}", shape.join("/"))
}

fn with_connection_close(head: &str) -> String {
    let mut out: Vec<&str> = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    out.push("Connection: close");
    format!("{}\r\n\r\n", out.join("\r\n"))
}

fn serve(mut client: TcpStream, upstream: u16, s: &Shared) -> Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let Some((head, body)) = read_message(&mut client)? else {
        return Ok(());
    };
    let call = call_of(&head, &body);
    if let Ok(mut c) = s.counts.lock() {
        *c.entry(call.clone()).or_default() += 1;
    }
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(with_connection_close(&head).as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(resp.len());
    let (rhead, rbody) = resp.split_at(split);
    let mut rbody = rbody.to_vec();
    if (call == "ec2:DescribeNatGateways" || call == "ec2:CreateNatGateway")
        && s.pending_nat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    {
        rbody = String::from_utf8_lossy(&rbody)
            .replace("<state>available</state>", "<state>pending</state>")
            .into_bytes();
    }
    let rhead = String::from_utf8_lossy(rhead);
    let mut lines: Vec<String> = rhead
        .trim_end()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("content-length:")
                && !l.starts_with("connection:")
                && !l.starts_with("transfer-encoding:")
        })
        .map(str::to_owned)
        .collect();
    lines.push(format!("Content-Length: {}", rbody.len()));
    lines.push("Connection: close".into());
    client.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())?;
    client.write_all(&rbody)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_named_by_service_and_action() {
        let head = "POST / HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20261207/eu-west-1/ec2/aws4_request, SignedHeaders=host\r\n\r\n";
        assert_eq!(
            call_of(head, b"Action=DescribeVpcs&Version=2016-11-15"),
            "ec2:DescribeVpcs"
        );
        let rest = "GET /2013-04-01/hostedzone/Z123/rrset HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20261207/us-east-1/route53/aws4_request\r\n\r\n";
        assert_eq!(
            call_of(rest, b""),
            "route53:GET /2013-04-01/hostedzone/{id}/rrset"
        );
    }
}
