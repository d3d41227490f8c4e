//! The boot services' HTTP side: iPXE's boot script, the kernel and initrd, each
//! machine's NoCloud seed and its phone home, and the journal.
//!
//! - `GET /boot.ipxe`: the script the proxy names; it chains to the machine's own.
//! - `GET /boot/{mac}`: the machine's script: kernel, initrd, command line, seed.
//! - `GET /boot/{mac}/kernel`, `GET /boot/{mac}/initrd` (then `initrd2`…): the boot files.
//! - `GET /seed/{mac}/{meta-data|user-data|vendor-data}`: from the seed directory
//!   (`<dir>/<mac>/<file>`, then `<dir>/default/<file>`), else the [`Seeds`]
//!   rendered for a machine joining the host cluster, else a default that names
//!   the machine after its MAC.
//! - `POST /seed/{mac}/phone-home`: the booted system reports in.
//! - `GET /machines`: the [`Journal`] as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use shoal_api::HardwareFacts;

use crate::journal::{Journal, Stage};
use crate::mac::{BadMac, Mac};
use crate::seeds::Seeds;

/// What the HTTP side serves.
#[derive(Debug, Clone)]
pub struct BootSite {
    /// This server's base URL as machines reach it, e.g. `http://10.78.0.2:8080`.
    pub base_url: String,
    /// The kernel to boot.
    pub kernel: PathBuf,
    /// Its initrds, in load order.
    pub initrds: Vec<PathBuf>,
    /// The kernel command line, before the seed address Shoal appends.
    pub cmdline: String,
    /// Per-machine seed files, if any.
    pub seed_dir: Option<PathBuf>,
    /// The journal.
    pub journal: Journal,
    /// Seeds rendered for machines joining the host cluster.
    pub seeds: Seeds,
}

impl BootSite {
    /// The script iPXE gets from the proxy: it chains to the machine's own script,
    /// which iPXE names by expanding its MAC, and reports the hardware facts iPXE
    /// knows (SMBIOS serial, UUID, manufacturer and product, platform and
    /// architecture) in the query.
    pub fn entry_script(&self) -> String {
        let facts: String = FACTS
            .iter()
            .map(|(key, setting)| format!("{key}=${{{setting}}}"))
            .collect::<Vec<_>>()
            .join("&");
        format!(
            "#!ipxe\nchain {}/boot/${{net0/mac:hexhyp}}?{facts}\n",
            self.base_url
        )
    }

    /// The script that boots `mac`: kernel and initrd from here, and the NoCloud
    /// seed address on the command line (`ds=nocloud;s=…`, as cloud-init reads it).
    pub fn machine_script(&self, mac: Mac) -> String {
        let m = mac.hyphenated();
        let base = &self.base_url;
        let cmdline = self.cmdline.trim();
        let space = if cmdline.is_empty() { "" } else { " " };
        let initrds: String = (0..self.initrds.len().max(1))
            .map(|i| format!("initrd {base}/boot/{m}/{}\n", initrd_name(i)))
            .collect();
        format!(
            "#!ipxe\necho Shoal: booting {mac}\n\
             kernel {base}/boot/{m}/kernel {cmdline}{space}ds=nocloud;s={base}/seed/{m}/\n\
             {initrds}boot\n"
        )
    }

    /// The default meta-data of `mac`: its instance id and host name come from
    /// the MAC, so that each machine is told apart before an inventory names it.
    pub fn default_meta_data(mac: Mac) -> String {
        let bare: String = mac.hyphenated().replace('-', "");
        format!(
            "instance-id: pxe-{}\nlocal-hostname: pxe-{bare}\n",
            mac.hyphenated()
        )
    }
}

/// The facts the entry script reports: query key and iPXE setting (escaped for
/// a URI where it is free text).
const FACTS: [(&str, &str); 6] = [
    ("serial", "serial:uristring"),
    ("uuid", "uuid"),
    ("manufacturer", "manufacturer:uristring"),
    ("product", "product:uristring"),
    ("platform", "platform"),
    ("arch", "buildarch"),
];

/// The longest fact kept, in characters; longer values are cut.
const FACT_MAX: usize = 128;

/// Splits a raw query into its pairs, percent-decoded; a `+` stays a `+` (iPXE's
/// `uristring` does not escape it, so it is not a space here).
pub fn query_pairs(raw: &str) -> BTreeMap<String, String> {
    raw.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = bytes
            .get(i + 1)
            .copied()
            .and_then(hex)
            .zip(bytes.get(i + 2).copied().and_then(hex));
        match (bytes[i], pair) {
            (b'%', Some((h, l))) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The facts in a boot script request's query; `None` when it reports none.
/// Values are kept printable and short, whatever the firmware sends.
pub fn facts_from_query(query: &BTreeMap<String, String>) -> Option<HardwareFacts> {
    let get = |key: &str| {
        query
            .get(key)
            .map(|v| {
                v.chars()
                    .filter(|c| !c.is_control())
                    .take(FACT_MAX)
                    .collect::<String>()
            })
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let facts = HardwareFacts {
        serial: get("serial"),
        uuid: get("uuid"),
        manufacturer: get("manufacturer"),
        product: get("product"),
        platform: get("platform"),
        arch: get("arch"),
    };
    (!facts.is_empty()).then_some(facts)
}

/// The URL name of initrd `i`: `initrd`, then `initrd2`, `initrd3`…
fn initrd_name(i: usize) -> String {
    if i == 0 {
        "initrd".into()
    } else {
        format!("initrd{}", i + 1)
    }
}

/// The router.
pub fn router(site: BootSite) -> Router {
    Router::new()
        .route("/boot.ipxe", get(entry))
        .route("/boot/{mac}", get(machine_script))
        .route("/boot/{mac}/{file}", get(boot_file))
        .route("/seed/{mac}/{file}", get(seed_file))
        .route("/seed/{mac}/phone-home", post(phone_home))
        .route("/machines", get(machines))
        .with_state(Arc::new(site))
}

type Site = State<Arc<BootSite>>;

impl IntoResponse for BadMac {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, format!("{self}\n")).into_response()
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn entry(State(site): Site) -> Response {
    text(site.entry_script())
}

async fn machine_script(
    State(site): Site,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, BadMac> {
    let mac: Mac = mac.parse()?;
    site.journal.saw_ip(mac, peer.ip().to_string());
    let query = query_pairs(query.as_deref().unwrap_or_default());
    if let Some(facts) = facts_from_query(&query) {
        site.journal.reported(mac, facts);
    }
    site.journal.record(mac, Stage::Script, "");
    Ok(text(site.machine_script(mac)))
}

async fn boot_file(
    State(site): Site,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((mac, file)): Path<(String, String)>,
) -> Result<Response, BadMac> {
    let mac: Mac = mac.parse()?;
    let initrd = (0..site.initrds.len()).find(|&i| initrd_name(i) == file);
    let (path, stage) = match (file.as_str(), initrd) {
        ("kernel", _) => (&site.kernel, Stage::Kernel),
        (_, Some(i)) => (&site.initrds[i], Stage::Initrd),
        _ => {
            return Ok((
                StatusCode::NOT_FOUND,
                format!(
                    "{file}: the boot files are kernel and {}\n",
                    (0..site.initrds.len())
                        .map(initrd_name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
                .into_response())
        }
    };
    Ok(match tokio::fs::read(path).await {
        Ok(bytes) => {
            site.journal.saw_ip(mac, peer.ip().to_string());
            site.journal
                .record(mac, stage, format!("{} bytes", bytes.len()));
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Bytes::from(bytes),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "boot file unreadable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}: {e}\n", path.display()),
            )
                .into_response()
        }
    })
}

async fn seed_file(
    State(site): Site,
    Path((mac, file)): Path<(String, String)>,
) -> Result<Response, BadMac> {
    let mac: Mac = mac.parse()?;
    if !matches!(file.as_str(), "meta-data" | "user-data" | "vendor-data") {
        return Ok((
            StatusCode::NOT_FOUND,
            format!("{file}: the seed files are meta-data, user-data and vendor-data\n"),
        )
            .into_response());
    }
    if let Some(dir) = &site.seed_dir {
        for sub in [mac.hyphenated(), "default".to_owned()] {
            if let Ok(body) = tokio::fs::read_to_string(dir.join(sub).join(&file)).await {
                if file == "meta-data" {
                    site.journal
                        .record(mac, Stage::Seed, "from the seed directory");
                }
                return Ok(text(body));
            }
        }
    }
    if let Some(seed) = site.seeds.get(mac) {
        match file.as_str() {
            "meta-data" => {
                site.journal
                    .record(mac, Stage::Seed, "rendered to join the host cluster");
                return Ok(text(seed.meta_data));
            }
            "user-data" => return Ok(text(seed.user_data)),
            _ => {}
        }
    }
    Ok(match file.as_str() {
        "meta-data" => {
            site.journal.record(mac, Stage::Seed, "default");
            text(BootSite::default_meta_data(mac))
        }
        "user-data" => text("#cloud-config\n{}\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "no vendor-data\n").into_response(),
    })
}

async fn phone_home(
    State(site): Site,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
    body: Bytes,
) -> Result<Response, BadMac> {
    let mac: Mac = mac.parse()?;
    let form = String::from_utf8_lossy(&body);
    let hostname = form
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "hostname")
        .map(|(_, v)| v.to_owned());
    site.journal.saw_ip(mac, peer.ip().to_string());
    if let Some(h) = &hostname {
        site.journal.named(mac, h.clone());
    }
    site.journal
        .record(mac, Stage::PhonedHome, hostname.unwrap_or_default());
    tracing::info!(%mac, ip = %peer.ip(), "machine phoned home");
    Ok((StatusCode::OK, "ok\n").into_response())
}

async fn machines(State(site): Site) -> Response {
    Json(site.journal.machines()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> BootSite {
        BootSite {
            base_url: "http://10.78.0.2:8080".into(),
            kernel: "/k".into(),
            initrds: vec!["/i".into()],
            cmdline: "console=ttyS0 quiet".into(),
            seed_dir: None,
            journal: Journal::default(),
            seeds: Seeds::default(),
        }
    }

    #[test]
    fn the_scripts_chain_by_mac_and_carry_the_seed() {
        let s = site();
        assert_eq!(
            s.entry_script(),
            "#!ipxe\nchain http://10.78.0.2:8080/boot/${net0/mac:hexhyp}?serial=${serial:uristring}\
             &uuid=${uuid}&manufacturer=${manufacturer:uristring}&product=${product:uristring}\
             &platform=${platform}&arch=${buildarch}\n"
        );
        let mac: Mac = "52:54:00:00:00:07".parse().expect("mac");
        let script = s.machine_script(mac);
        assert!(script.starts_with("#!ipxe\n"), "{script}");
        assert!(
            script.contains(
                "kernel http://10.78.0.2:8080/boot/52-54-00-00-00-07/kernel console=ttyS0 quiet ds=nocloud;s=http://10.78.0.2:8080/seed/52-54-00-00-00-07/\n"
            ),
            "{script}"
        );
        assert!(script.contains("initrd http://10.78.0.2:8080/boot/52-54-00-00-00-07/initrd\n"));
        assert!(script.ends_with("boot\n"));
        let layered = BootSite {
            initrds: vec!["/i".into(), "/agent".into()],
            ..site()
        };
        let script = layered.machine_script(mac);
        assert!(
            script.ends_with(
                "initrd http://10.78.0.2:8080/boot/52-54-00-00-00-07/initrd\n\
                 initrd http://10.78.0.2:8080/boot/52-54-00-00-00-07/initrd2\nboot\n"
            ),
            "{script}"
        );
        assert_eq!(
            BootSite::default_meta_data(mac),
            "instance-id: pxe-52-54-00-00-00-07\nlocal-hostname: pxe-525400000007\n"
        );
    }

    #[test]
    fn the_firmwares_facts_are_kept_short_and_printable() {
        let q = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(facts_from_query(&q(&[])), None);
        // iPXE expands an unset setting to nothing.
        assert_eq!(facts_from_query(&q(&[("serial", ""), ("uuid", "")])), None);
        let facts = facts_from_query(&q(&[
            ("serial", "SN 42\u{7}"),
            ("platform", "pcbios"),
            ("arch", "x86_64"),
            ("product", &"x".repeat(500)),
            ("other", "ignored"),
        ]))
        .expect("facts");
        assert_eq!(facts.serial.as_deref(), Some("SN 42"));
        assert_eq!(facts.platform.as_deref(), Some("pcbios"));
        assert_eq!(facts.arch.as_deref(), Some("x86_64"));
        assert_eq!(facts.product.map(|p| p.len()), Some(FACT_MAX));
        assert_eq!(facts_from_query(&q(&[("memsize", "768")])), None);
        // The raw query as iPXE sends it: `+` kept, escapes decoded.
        let pairs = query_pairs("product=Standard%20PC%20(i440FX+PIIX)&serial=&x=%zz%4");
        assert_eq!(pairs["product"], "Standard PC (i440FX+PIIX)");
        assert_eq!(pairs["serial"], "");
        assert_eq!(pairs["x"], "%zz%4");
    }
}
