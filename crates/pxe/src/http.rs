//! The boot services' HTTP side: iPXE's boot script, the kernel and initrd, each
//! machine's NoCloud seed and its phone home, and the journal.
//!
//! - `GET /boot.ipxe`: the script the proxy names; it chains to the machine's own.
//! - `GET /boot/{mac}`: the machine's script: kernel, initrd, command line, seed.
//! - `GET /boot/{mac}/kernel`, `GET /boot/{mac}/initrd`: the boot files.
//! - `GET /seed/{mac}/{meta-data|user-data|vendor-data}`: from the seed directory
//!   (`<dir>/<mac>/<file>`, then `<dir>/default/<file>`), or a default that names
//!   the machine after its MAC.
//! - `POST /seed/{mac}/phone-home`: the booted system reports in.
//! - `GET /machines`: the [`Journal`] as JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::journal::{Journal, Stage};
use crate::mac::{BadMac, Mac};

/// What the HTTP side serves.
#[derive(Debug, Clone)]
pub struct BootSite {
    /// This server's base URL as machines reach it, e.g. `http://10.78.0.2:8080`.
    pub base_url: String,
    /// The kernel to boot.
    pub kernel: PathBuf,
    /// Its initrd.
    pub initrd: PathBuf,
    /// The kernel command line, before the seed address Shoal appends.
    pub cmdline: String,
    /// Per-machine seed files, if any.
    pub seed_dir: Option<PathBuf>,
    /// The journal.
    pub journal: Journal,
}

impl BootSite {
    /// The script iPXE gets from the proxy: it chains to the machine's own script,
    /// which iPXE names by expanding its MAC.
    pub fn entry_script(&self) -> String {
        format!(
            "#!ipxe\nchain {}/boot/${{net0/mac:hexhyp}}\n",
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
        format!(
            "#!ipxe\necho Shoal: booting {mac}\n\
             kernel {base}/boot/{m}/kernel {cmdline}{space}ds=nocloud;s={base}/seed/{m}/\n\
             initrd {base}/boot/{m}/initrd\nboot\n"
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
) -> Result<Response, BadMac> {
    let mac: Mac = mac.parse()?;
    site.journal.saw_ip(mac, peer.ip().to_string());
    site.journal.record(mac, Stage::Script, "");
    Ok(text(site.machine_script(mac)))
}

async fn boot_file(
    State(site): Site,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((mac, file)): Path<(String, String)>,
) -> Result<Response, BadMac> {
    let mac: Mac = mac.parse()?;
    let (path, stage) = match file.as_str() {
        "kernel" => (&site.kernel, Stage::Kernel),
        "initrd" => (&site.initrd, Stage::Initrd),
        _ => {
            return Ok((
                StatusCode::NOT_FOUND,
                format!("{file}: the boot files are kernel and initrd\n"),
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
            initrd: "/i".into(),
            cmdline: "console=ttyS0 quiet".into(),
            seed_dir: None,
            journal: Journal::default(),
        }
    }

    #[test]
    fn the_scripts_chain_by_mac_and_carry_the_seed() {
        let s = site();
        assert_eq!(
            s.entry_script(),
            "#!ipxe\nchain http://10.78.0.2:8080/boot/${net0/mac:hexhyp}\n"
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
        assert_eq!(
            BootSite::default_meta_data(mac),
            "instance-id: pxe-52-54-00-00-00-07\nlocal-hostname: pxe-525400000007\n"
        );
    }
}
