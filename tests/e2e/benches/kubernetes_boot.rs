//! `cargo bench -p shoal-e2e --bench kubernetes_boot` (or `make bench`): Shoal's
//! Kubernetes node image on its own, with no Shoal server or agent. Two TCG VMs
//! booted from it with the user-data `shoal-bootstrap` renders and the PKI
//! `shoal-pki` generates become a Kubernetes cluster whose nodes are Ready, whose pods
//! reach each other across nodes and find Services through CoreDNS, and which never
//! pulled an image (the lab network has no uplink).
//!
//! It prints the image's boot figures for BENCHMARKS.md: QEMU's launch to each
//! Node's Ready, and the control plane's memory. `make test` checks the same things
//! through Shoal in `tests/kubernetes_cluster.rs`, so this raw-QEMU cluster is not
//! booted a second time there. Needs root and the image (`scripts/setup.sh` builds
//! it).

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use shoal_bootstrap::{render_kubeadm, BootstrapFile, NodeBootstrap, Role};
use shoal_e2e::kubelab::{Lab, NodeImage};
use shoal_pki::{ClusterPki, ClusterPkiParams, OffsetDateTime, PkiFile};

const CP: &str = "img-cp-0";
const WORKER: &str = "img-worker-0";
const CP_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const WORKER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn b64(data: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = data.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Cluster {
    pki: ClusterPki,
    token: String,
    ca_hash: String,
    cert_key: String,
}

impl Cluster {
    fn new() -> Result<Self> {
        let params = ClusterPkiParams {
            cluster: "img".into(),
            org: "e2e".into(),
            base_domain: "shoal.local".into(),
            dns_domain: "cluster.local".into(),
            api_service_ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
            control_plane: vec![(CP.into(), IpAddr::V4(CP_IP))],
            ca_ttl: Duration::from_secs(86_400),
            leaf_ttl: Duration::from_secs(86_400),
        };
        let pki = ClusterPki::generate(&params, OffsetDateTime::now_utc())?;
        let ca_hash = shoal_pki::ca_cert_hash(pki.file(PkiFile::CaCert))?;
        Ok(Self {
            token: format!("{}.{}", random_hex(3)?, random_hex(8)?),
            cert_key: random_hex(32)?,
            ca_hash,
            pki,
        })
    }

    fn user_data(&self, role: Role, hostname: &str, ip: Ipv4Addr) -> Result<String> {
        use PkiFile::*;
        let files: &[PkiFile] = if role.is_control_plane() {
            &[CaCert, CaKey, EtcdCaCert, EtcdCaKey, SaKey, SaPub]
        } else {
            &[]
        };
        let node = NodeBootstrap {
            cluster: "img".into(),
            org: "e2e".into(),
            base_domain: "shoal.local".into(),
            hostname: hostname.into(),
            role,
            kubernetes_version: "1.35.4".into(),
            control_plane_endpoint: format!("{CP_IP}:6443"),
            endpoint_address: None,
            advertise_address: ip.to_string(),
            pod_cidr: "10.244.0.0/16".into(),
            pod_network: shoal_bootstrap::PodNetwork::Flannel,
            service_cidr: "10.96.0.0/12".into(),
            dns_domain: "cluster.local".into(),
            files: files
                .iter()
                .map(|f| {
                    BootstrapFile::new(
                        format!("/etc/kubernetes/pki/{}", f.kubeadm_path()),
                        self.pki.file(*f),
                    )
                })
                .collect(),
            bootstrap_token: self.token.clone(),
            ca_cert_hash: self.ca_hash.clone(),
            certificate_key: role.is_control_plane().then(|| self.cert_key.clone()),
            oidc: None,
            phone_home_url: None,
        };
        Ok(render_kubeadm(&node)?)
    }

    /// An admin kubeconfig for the guest's API server (the Shoal PKI's admin
    /// certificate, `O=system:masters`, signed by the CA kubeadm was given).
    fn admin_kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: img\n  cluster:\n    server: https://{CP_IP}:6443\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: img\n  context: {{cluster: img, user: admin}}\ncurrent-context: img\n",
            b64(self.pki.file(PkiFile::CaCert)),
            b64(self.pki.file(PkiFile::AdminCert)),
            b64(self.pki.file(PkiFile::AdminKey)),
        )
    }
}

/// The image's kubectl, run inside the lab namespace against the guest cluster.
struct Kubectl {
    ns: String,
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=60s")
            .args(args)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        Ok(serde_json::from_str(&self.run(&all)?)?)
    }
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn ready_nodes(nodes: &Value) -> Vec<String> {
    nodes["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|n| condition(n, "Ready").is_some_and(|c| c["status"] == "True"))
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn pods_manifest(busybox: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  nodeName: {WORKER}
  containers:
  - name: web
    image: {busybox}
    imagePullPolicy: Never
    command: [sh, -c, "mkdir -p /www && echo hello-from-shoal > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: {CP}
  tolerations: [{{operator: Exists}}]
  containers:
  - name: client
    image: {busybox}
    imagePullPolicy: Never
    command: [sleep, "86400"]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

/// Waits until every pod of `namespace` is Ready, and there are at least `min`.
fn all_pods_ready(kubectl: &Kubectl, namespace: &str, min: usize) -> Result<Option<usize>> {
    let pods = kubectl.json(&["-n", namespace, "get", "pods"])?;
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    let ready = items
        .iter()
        .filter(|p| condition(p, "Ready").is_some_and(|c| c["status"] == "True"))
        .count();
    Ok((items.len() >= min && ready == items.len()).then_some(ready))
}

fn main() -> Result<()> {
    println!("Kubernetes node image: kubeadm on two TCG VMs, no Shoal, one run");
    let image = NodeImage::find()?;
    ensure!(
        image.kubernetes_version == "v1.35.4",
        "the image is {}, this test renders 1.35.4",
        image.kubernetes_version
    );
    let cluster = Cluster::new()?;
    let mut lab = Lab::new("shoal-kubelab")?;
    let kubectl = Kubectl {
        ns: lab.ns.clone(),
        bin: image.kubectl.clone(),
        kubeconfig: lab.write("admin.kubeconfig", &cluster.admin_kubeconfig())?,
    };

    // The control plane needs two vCPUs and 1.7 GB (kubeadm's preflight checks).
    let cp_data = cluster.user_data(Role::ControlPlaneInit, CP, CP_IP)?;
    lab.boot(&image, CP, CP_IP, 2, 2048, &cp_data)?;
    let worker_data = cluster.user_data(Role::Worker, WORKER, WORKER_IP)?;
    lab.boot(&image, WORKER, WORKER_IP, 1, 1536, &worker_data)?;

    // Both nodes Ready; each one's time from QEMU's launch is recorded.
    let mut ready_at: Vec<(String, Duration)> = Vec::new();
    lab.wait_for(
        "both nodes Ready",
        Duration::from_secs(25 * 60),
        Duration::from_secs(10),
        |lab| {
            let nodes = kubectl.json(&["get", "nodes"])?;
            for name in ready_nodes(&nodes) {
                if !ready_at.iter().any(|(n, _)| *n == name) {
                    let t = lab.vm(&name)?.started.elapsed();
                    println!(
                        "bench: node {name} Ready {:.0} s after QEMU's launch",
                        t.as_secs_f64()
                    );
                    ready_at.push((name, t));
                }
            }
            Ok((ready_at.len() == 2).then_some(()))
        },
    )?;

    // The nodes run the image's Kubernetes on containerd.
    let nodes = kubectl.json(&["get", "nodes"])?;
    for node in nodes["items"].as_array().context("no nodes")? {
        let info = &node["status"]["nodeInfo"];
        assert_eq!(info["kubeletVersion"], "v1.35.4", "{info}");
        let runtime = info["containerRuntimeVersion"].as_str().unwrap_or_default();
        assert!(runtime.starts_with("containerd://"), "{runtime}");
    }

    // The control plane's pods, CoreDNS, kube-proxy and flannel all become Ready:
    // etcd, 3 control-plane components, 2 CoreDNS, 2 kube-proxy; 2 flannel.
    let system = lab.wait_for(
        "kube-system pods Ready",
        Duration::from_secs(15 * 60),
        Duration::from_secs(10),
        |_| all_pods_ready(&kubectl, "kube-system", 8),
    )?;
    let flannel = lab.wait_for(
        "kube-flannel pods Ready",
        Duration::from_secs(10 * 60),
        Duration::from_secs(10),
        |_| all_pods_ready(&kubectl, "kube-flannel", 2),
    )?;
    println!("kube-system: {system} pods Ready; kube-flannel: {flannel}");

    // A web server on the worker, a client on the control plane, a Service.
    let manifest = lab.write("pods.yaml", &pods_manifest(&image.busybox))?;
    kubectl.run(&["apply", "-f", &manifest.to_string_lossy()])?;
    lab.wait_for(
        "the web and client pods Ready",
        Duration::from_secs(10 * 60),
        Duration::from_secs(5),
        |_| all_pods_ready(&kubectl, "default", 2),
    )?;
    let web = kubectl.json(&["get", "pod", "web"])?;
    let client = kubectl.json(&["get", "pod", "client"])?;
    assert_ne!(
        web["status"]["hostIP"], client["status"]["hostIP"],
        "the two pods must be on different nodes"
    );
    let web_ip = web["status"]["podIP"]
        .as_str()
        .context("web has no podIP")?;
    assert!(
        web_ip.starts_with("10.244."),
        "pod IP {web_ip} outside the pod CIDR"
    );

    // Pod to pod across nodes (flannel's VXLAN).
    let body = lab.wait_for(
        "the client reaching the web pod across nodes",
        Duration::from_secs(3 * 60),
        Duration::from_secs(5),
        |_| {
            // busybox's own `timeout`: Debian's busybox 1.35 `wget -T` segfaults.
            kubectl
                .run(&[
                    "exec",
                    "client",
                    "--",
                    "timeout",
                    "10",
                    "wget",
                    "-qO-",
                    &format!("http://{web_ip}:8080/"),
                ])
                .map(Some)
        },
    )?;
    assert_eq!(body.trim(), "hello-from-shoal");

    // The Service by name, through CoreDNS and kube-proxy.
    let svc = kubectl.json(&["get", "service", "web"])?;
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .context("no clusterIP")?
        .to_owned();
    let lookup = lab.wait_for(
        "CoreDNS resolving the Service",
        Duration::from_secs(3 * 60),
        Duration::from_secs(5),
        |_| {
            kubectl
                .run(&[
                    "exec",
                    "client",
                    "--",
                    "nslookup",
                    "web.default.svc.cluster.local",
                ])
                .map(|out| out.contains(&cluster_ip).then_some(out))
        },
    )?;
    println!("nslookup: {}", lookup.trim());
    let body = lab.wait_for(
        "the client reaching the Service by name",
        Duration::from_secs(3 * 60),
        Duration::from_secs(5),
        |_| {
            kubectl
                .run(&[
                    "exec",
                    "client",
                    "--",
                    "timeout",
                    "10",
                    "wget",
                    "-qO-",
                    "http://web.default.svc.cluster.local/",
                ])
                .map(Some)
        },
    )?;
    assert_eq!(body.trim(), "hello-from-shoal");

    // Nothing was pulled: every image a node has is one the image preloaded, and no
    // event reports a pull.
    let nodes = kubectl.json(&["get", "nodes"])?;
    for node in nodes["items"].as_array().context("no nodes")? {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        let images = node["status"]["images"].as_array().context("no images")?;
        ensure!(!images.is_empty(), "{name} reports no images");
        for entry in images {
            for n in entry["names"].as_array().into_iter().flatten() {
                let n = n.as_str().unwrap_or_default();
                ensure!(
                    n.starts_with("shoal.local/k8s/"),
                    "{name} has image {n}, not one of the image's"
                );
            }
        }
    }
    let events = kubectl.json(&["get", "events", "-A"])?;
    for e in events["items"].as_array().into_iter().flatten() {
        let reason = e["reason"].as_str().unwrap_or_default();
        let message = e["message"].as_str().unwrap_or_default();
        // The kubelet reports an image it did not need to pull as "Pulled" with
        // "already present on machine".
        let pulled = reason == "Pulled" && !message.contains("already present");
        ensure!(
            !pulled && !matches!(reason, "Pulling" | "ErrImagePull" | "ErrImageNeverPull"),
            "event {reason}: {message}"
        );
    }

    // The control plane's memory, for BENCHMARKS.md.
    let summary: Value = serde_json::from_str(&kubectl.run(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{CP}/proxy/stats/summary"),
    ])?)?;
    let ws = summary["node"]["memory"]["workingSetBytes"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "bench: control-plane node working set {} MiB",
        ws / (1 << 20)
    );
    ensure!(ws > 0, "the kubelet's summary has no working set");
    Ok(())
}
