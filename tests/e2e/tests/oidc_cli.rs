//! The CLI's OIDC sign-in against a real OIDC provider (npm `oidc-provider`,
//! scripts/oidc-provider.sh) and a real `shoal server` trusting it: `shoal
//! login --oidc` in the browser flow (the test plays the browser for the URL
//! the CLI prints) and in the device flow, the exec credential plugin `shoal
//! kubeconfig token` with its cache and silent refresh, organization access
//! through the group claim, and `shoal logout` revoking the refresh token.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use shoal_e2e::oidc::{OidcProvider, ProviderOptions};
use shoal_e2e::{ensure_release, kubectl_bin, raw, shoal_bin, ServerProc};

const JSON: &str = "application/json";

/// A server trusting `provider`, with the organizations acme (group
/// platform-team, alice's: owner) and beta (group app-team: member).
async fn server_for(provider: &OidcProvider) -> Result<ServerProc> {
    let mut args = vec![
        "--controllers=false".to_owned(),
        format!("--oidc-issuer-url={}", provider.issuer()),
        format!("--oidc-client-id={}", OidcProvider::CLIENT_ID),
        "--oidc-username-claim=email".to_owned(),
    ];
    if let Some(ca) = provider.ca_file() {
        args.push(format!("--oidc-ca-file={}", ca.display()));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProc::start_with(&refs)?;
    let admin = server.client().await?;
    for (org, group, role) in [
        ("acme", "platform-team", "owner"),
        ("beta", "app-team", "member"),
    ] {
        let body = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Organization",
            "metadata": {"name": org},
            "spec": {"members": [{"group": group, "role": role}]},
        });
        let (code, resp) = raw(
            &admin,
            "POST",
            "/apis/shoal.io/v1alpha1/organizations",
            JSON,
            serde_json::to_vec(&body)?,
        )
        .await?;
        ensure!(code == 201, "creating organization {org}: {code} {resp}");
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("org-{org}")}});
        let (code, resp) = raw(
            &admin,
            "POST",
            "/api/v1/namespaces",
            JSON,
            serde_json::to_vec(&ns)?,
        )
        .await?;
        ensure!(
            code == 201 || code == 409,
            "creating namespace org-{org}: {code} {resp}"
        );
    }
    Ok(server)
}

/// A home of the test's own, so that nothing reads or writes the real one.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    /// Shoal's default config path under this home.
    fn config(&self) -> PathBuf {
        self.dir.path().join(".config/shoal/config")
    }

    fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(shoal_bin()?);
        cmd.env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"));
        Ok(cmd)
    }

    /// Runs `shoal args` and returns its output.
    fn shoal(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command()?.args(args).stdin(Stdio::null()).output()?)
    }

    /// `shoal kubeconfig token --config <config>`: the ExecCredential.
    fn exec_credential(&self) -> Result<Value> {
        let config = self.config();
        let out = self.shoal(&["kubeconfig", "token", "--config", path_str(&config)?])?;
        ensure!(
            out.status.success(),
            "kubeconfig token: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).context("kubeconfig token printed no JSON")
    }

    /// The session the config holds.
    fn session(&self) -> Result<Value> {
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(self.config())?)?;
        doc["extensions"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["name"] == "shoal.io/oidc"))
            .map(|e| e["extension"].clone())
            .context("the config holds no shoal.io/oidc extension")
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("a UTF-8 path")
}

/// Starts `shoal login --oidc ...` with stderr piped.
fn start_login(
    home: &Home,
    server: &ServerProc,
    provider: &OidcProvider,
    extra: &[&str],
) -> Result<Child> {
    let ca = server.data_dir.join("tls/ca.crt");
    let config = home.config();
    let issuer_ca: Vec<&str> = match provider.ca_file() {
        Some(ca) => vec!["--oidc-ca-file", path_str(ca)?],
        None => Vec::new(),
    };
    Ok(home
        .command()?
        .args(["login", "--oidc", "--no-browser", "--login-timeout", "60s"])
        .args(["--issuer", provider.issuer()])
        .args(["--client-id", OidcProvider::CLIENT_ID])
        .args(["--server", &server.url()])
        .args(["--certificate-authority", path_str(&ca)?])
        .args(["--config", path_str(&config)?])
        .args(&issuer_ca)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Reads the child's stderr until a line satisfies `pick`; the rest of stderr
/// is collected in the background and returned by the join handle.
fn read_until(
    child: &mut Child,
    pick: impl Fn(&str) -> Option<String>,
) -> Result<(String, std::thread::JoinHandle<String>)> {
    let stderr = child.stderr.take().context("stderr is piped")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line?;
        seen.push_str(&line);
        seen.push('\n');
        if let Some(found) = pick(&line) {
            let rest = std::thread::spawn(move || {
                lines.map_while(Result::ok).collect::<Vec<_>>().join("\n")
            });
            return Ok((found, rest));
        }
    }
    bail!("shoal login ended without printing what was expected; stderr:\n{seen}")
}

/// Waits (up to 60 s) for `shoal login` to finish; returns stdout.
async fn finish(mut child: Child, rest: std::thread::JoinHandle<String>) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            let err = rest.join().unwrap_or_default();
            let mut out = String::new();
            if let Some(mut s) = child.stdout.take() {
                std::io::Read::read_to_string(&mut s, &mut out)?;
            }
            ensure!(status.success(), "shoal login: {status}\n{out}\n{err}");
            return Ok(out);
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            bail!("shoal login did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn claims(id_token: &str) -> Result<Value> {
    let payload = id_token.split('.').nth(1).context("a JWT")?;
    Ok(serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?,
    )?)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks an ExecCredential's shape and returns its token.
fn token_of(cred: &Value, issuer: &str) -> Result<String> {
    ensure!(
        cred["apiVersion"] == "client.authentication.k8s.io/v1beta1",
        "{cred}"
    );
    ensure!(cred["kind"] == "ExecCredential", "{cred}");
    let token = cred["status"]["token"]
        .as_str()
        .context("no status.token")?
        .to_owned();
    let c = claims(&token)?;
    ensure!(c["iss"] == issuer, "iss {}", c["iss"]);
    ensure!(c["aud"] == OidcProvider::CLIENT_ID, "aud {}", c["aud"]);
    let exp = c["exp"].as_u64().context("exp")?;
    let stamp = cred["status"]["expirationTimestamp"]
        .as_str()
        .context("no expirationTimestamp")?;
    let parsed = chrono::DateTime::parse_from_rfc3339(stamp)?;
    ensure!(
        u64::try_from(parsed.timestamp())? == exp,
        "expirationTimestamp {stamp} is not exp {exp}"
    );
    Ok(token)
}

#[tokio::test]
async fn browser_login_the_exec_plugin_organizations_and_logout() -> Result<()> {
    // An https issuer with a CA of its own, as guest clusters' spec.oidc requires.
    let provider = OidcProvider::start(ProviderOptions {
        tls: true,
        ..ProviderOptions::default()
    })
    .await?;
    let server = server_for(&provider).await?;
    let home = Home::new()?;

    // Missing issuer: the error says how to give it.
    let out = home.shoal(&["login", "--oidc", "--server", &server.url()])?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains("--issuer") && err.contains("--client-id"),
        "{err}"
    );

    let mut child = start_login(&home, &server, &provider, &[])?;
    let (url, rest) = read_until(&mut child, |l| {
        let t = l.trim();
        t.starts_with(provider.issuer()).then(|| t.to_owned())
    })?;
    ensure!(url.contains("code_challenge_method=S256"), "{url}");
    ensure!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    provider
        .complete_browser_login(&url, "alice", "alice-pw")
        .await?;
    let said = finish(child, rest).await?;
    ensure!(said.contains("logged in"), "{said}");

    let mode = std::fs::metadata(home.config())?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "the config has mode {mode:o}");
    let session = home.session()?;
    ensure!(session["issuerURL"] == provider.issuer(), "{session}");
    ensure!(session["clientID"] == OidcProvider::CLIENT_ID, "{session}");
    let first_rt = session["refreshToken"]
        .as_str()
        .context("no refresh token in the config")?
        .to_owned();
    let text = std::fs::read_to_string(home.config())?;
    ensure!(
        text.contains("client.authentication.k8s.io/v1beta1") && text.contains("kubeconfig"),
        "{text}"
    );

    // The plugin hands out the cached ID token while it is valid.
    let cred = home.exec_credential()?;
    let token = token_of(&cred, provider.issuer())?;
    ensure!(claims(&token)?["email"] == "alice@example.com");
    ensure!(Some(token.as_str()) == session["idToken"].as_str());
    let again = token_of(&home.exec_credential()?, provider.issuer())?;
    ensure!(again == token, "a valid cached token was replaced");

    // The CLI's own commands run the plugin (kube-rs exec) and the server maps
    // alice's group to acme's owner role, and to nothing in beta.
    let config = home.config();
    let kc = path_str(&config)?;
    let out = home.shoal(&["--kubeconfig", kc, "get", "clusters", "-n", "org-acme"])?;
    ensure!(
        out.status.success(),
        "get clusters in org-acme: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = home.shoal(&["--kubeconfig", kc, "get", "clusters", "-n", "org-beta"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(5) && err.contains("Forbidden"),
        "get clusters in org-beta: {:?} {err}",
        out.status
    );

    // kubectl runs the same plugin.
    let out = Command::new(kubectl_bin()?)
        .env("HOME", home.dir.path())
        .args([
            "--kubeconfig",
            kc,
            "get",
            "clusters.shoal.io",
            "-n",
            "org-acme",
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl get clusters in org-acme: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    guest_kubeconfig(&server, &provider, &home).await?;

    // Logout revokes the refresh token at the issuer and removes the tokens.
    let out = home.shoal(&["logout", "--config", kc])?;
    ensure!(
        out.status.success(),
        "logout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match provider.refresh(&first_rt).await {
        Ok(_) => bail!("the provider still honours the revoked refresh token"),
        Err(e) => ensure!(format!("{e:#}").contains("invalid_grant"), "{e:#}"),
    }
    let session = home.session()?;
    ensure!(
        session.get("refreshToken").is_none() && session.get("idToken").is_none(),
        "{session}"
    );
    let out = home.shoal(&["kubeconfig", "token", "--config", kc])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && out.stdout.is_empty(), "{err}");
    ensure!(err.contains("shoal login --oidc"), "{err}");
    Ok(())
}

/// ID tokens live this long in the refresh test. The plugin uses a token for
/// three quarters of its life, so the six concurrent runs below have 4 s in which
/// the first run's refreshed token is still good for the others.
const TTL_SECS: u64 = 5;

#[tokio::test]
async fn device_login_and_silent_refresh_of_short_lived_tokens() -> Result<()> {
    let provider = OidcProvider::start(ProviderOptions {
        id_token_ttl_secs: TTL_SECS,
        ..ProviderOptions::default()
    })
    .await?;
    let server = server_for(&provider).await?;
    let home = Home::new()?;

    let mut child = start_login(&home, &server, &provider, &["--device"])?;
    let (code, rest) = read_until(&mut child, |l| {
        l.split_once("enter the code ")
            .map(|(_, c)| c.trim().to_owned())
    })?;
    provider
        .approve_device_code(&code, "alice", "alice-pw")
        .await?;
    finish(child, rest).await?;

    let session = home.session()?;
    let login_id = session["idToken"]
        .as_str()
        .context("an ID token")?
        .to_owned();
    let login_rt = session["refreshToken"]
        .as_str()
        .context("a refresh token")?
        .to_owned();
    tokio::time::sleep(Duration::from_secs(TTL_SECS + 1)).await;
    ensure!(
        claims(&login_id)?["exp"].as_u64() < Some(now()),
        "the login token has not expired"
    );

    // Expired: the plugin refreshes silently and writes the new tokens back.
    let token = token_of(&home.exec_credential()?, provider.issuer())?;
    ensure!(token != login_id, "the expired ID token was handed out");
    ensure!(claims(&token)?["sub"] == claims(&login_id)?["sub"]);
    let session = home.session()?;
    ensure!(
        session["idToken"].as_str() == Some(token.as_str()),
        "{session}"
    );
    let rt = session["refreshToken"]
        .as_str()
        .context("a refresh token")?;
    let mode = std::fs::metadata(home.config())?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "the rewritten config has mode {mode:o}");

    // Once more: the stored (possibly rotated) refresh token works.
    tokio::time::sleep(Duration::from_secs(TTL_SECS + 1)).await;
    let newer = token_of(&home.exec_credential()?, provider.issuer())?;
    ensure!(newer != token);
    eprintln!("refresh tokens rotated: {}", rt != login_rt);

    // kubectl may run the plugin several times at once (parallel commands): with
    // an expired token they must not all spend the same refresh token, which the
    // provider rotates and, reused, revokes with its whole grant.
    tokio::time::sleep(Duration::from_secs(TTL_SECS + 1)).await;
    let config = home.config();
    let runs: Vec<Child> = (0..6)
        .map(|_| {
            home.command()?
                .args(["kubeconfig", "token", "--config", path_str(&config)?])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting kubeconfig token")
        })
        .collect::<Result<_>>()?;
    let mut handed_out = std::collections::BTreeSet::new();
    for run in runs {
        let out = run.wait_with_output()?;
        ensure!(
            out.status.success(),
            "a concurrent kubeconfig token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cred: Value = serde_json::from_slice(&out.stdout)?;
        handed_out.insert(token_of(&cred, provider.issuer())?);
    }
    ensure!(
        handed_out.len() == 1,
        "{} different ID tokens: one run refreshed, the others should have used its result",
        handed_out.len()
    );
    // The grant survived: the next expiry refreshes again.
    tokio::time::sleep(Duration::from_secs(TTL_SECS + 1)).await;
    let after = token_of(&home.exec_credential()?, provider.issuer())?;
    ensure!(!handed_out.contains(&after));
    Ok(())
}

/// `shoal kubeconfig create --oidc`, run by alice with her OIDC sign-in: the
/// guest kubeconfig's user is the plugin for the Cluster's spec.oidc, and that
/// plugin, run as kubectl would run it, hands out her ID token (the management
/// sign-in has the same issuer and client). A Cluster without spec.oidc is
/// refused with what to do.
async fn guest_kubeconfig(server: &ServerProc, provider: &OidcProvider, home: &Home) -> Result<()> {
    let admin = server.client().await?;
    ensure_release(&admin, "test-1").await?;
    let base = "/apis/shoal.io/v1alpha1/namespaces/org-acme/clusters";
    for (name, oidc) in [
        (
            "sso",
            Some(json!({"issuerUrl": provider.issuer(), "clientId": OidcProvider::CLIENT_ID})),
        ),
        ("plain", None),
    ] {
        let mut cluster = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "namespace": "org-acme"},
            "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
        });
        if let Some(o) = oidc {
            cluster["spec"]["oidc"] = o;
        }
        let (code, resp) = raw(&admin, "POST", base, JSON, serde_json::to_vec(&cluster)?).await?;
        ensure!(code == 201, "creating cluster {name}: {code} {resp}");
        // No controllers run: give the status the cluster controller would.
        let status = json!({"status": {
            "apiEndpoint": format!("https://api.{name}.acme.shoal.local:443"),
            "caCertificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "gatewayAddress": "127.0.0.1:9443",
        }});
        let (code, resp) = raw(
            &admin,
            "PATCH",
            &format!("{base}/{name}/status"),
            "application/merge-patch+json",
            serde_json::to_vec(&status)?,
        )
        .await?;
        ensure!(code == 200, "setting the status of {name}: {code} {resp}");
    }
    let config = home.config();
    let kc = path_str(&config)?;
    let out_file = home.dir.path().join("guest.kubeconfig");
    let issuer_ca = path_str(provider.ca_file().context("an https issuer")?)?;
    let out = home.shoal(&[
        "--kubeconfig",
        kc,
        "kubeconfig",
        "create",
        "--oidc",
        "--oidc-ca-file",
        issuer_ca,
        "--cluster",
        "sso",
        "--org",
        "acme",
        "--output",
        path_str(&out_file)?,
    ])?;
    ensure!(
        out.status.success(),
        "kubeconfig create --oidc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&out_file)?)?;
    let exec = &doc["users"][0]["user"]["exec"];
    ensure!(
        exec["apiVersion"] == "client.authentication.k8s.io/v1beta1",
        "{doc}"
    );
    let command = exec["command"].as_str().context("an exec command")?;
    ensure!(
        std::fs::canonicalize(command)? == std::fs::canonicalize(shoal_bin()?)?,
        "{exec}"
    );
    let args: Vec<String> = serde_json::from_value(exec["args"].clone())?;
    ensure!(
        args == [
            "kubeconfig",
            "token",
            "--issuer",
            provider.issuer(),
            "--client-id",
            OidcProvider::CLIENT_ID,
            "--oidc-ca-file",
            issuer_ca,
        ],
        "{args:?}"
    );
    ensure!(
        doc["clusters"][0]["cluster"]["tls-server-name"] == "api.sso.acme.shoal.local",
        "{doc}"
    );
    ensure!(doc["users"][0]["user"].get("client-key-data").is_none());
    let out = home.command()?.args(&args).stdin(Stdio::null()).output()?;
    ensure!(
        out.status.success(),
        "the guest plugin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cred: Value = serde_json::from_slice(&out.stdout)?;
    let token = token_of(&cred, provider.issuer())?;
    ensure!(Some(token.as_str()) == home.session()?["idToken"].as_str());

    let out = home.shoal(&[
        "--kubeconfig",
        kc,
        "kubeconfig",
        "create",
        "--oidc",
        "--cluster",
        "plain",
        "--org",
        "acme",
        "--output",
        path_str(&home.dir.path().join("plain.kubeconfig"))?,
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2) && err.contains("spec.oidc"),
        "{:?} {err}",
        out.status
    );
    Ok(())
}

/// The guest plugin's first use, as kubectl runs it for a kubeconfig from
/// `kubeconfig create --oidc`: no session yet, so `shoal kubeconfig token
/// --issuer --client-id` prints the sign-in URL and waits for the browser. The
/// provider lives in a namespace, as it does for guest clusters, reached through
/// the harness's CONNECT proxy (`HTTPS_PROXY`) at the guests' URL.
#[tokio::test]
async fn the_guest_plugin_signs_in_on_first_use_through_a_proxy() -> Result<()> {
    let hosts = shoal_e2e::hosts::Underlay::pair(&format!("oc{}h", std::process::id()))?;
    let egress = shoal_e2e::hosts::Egress::new(&hosts, &format!("oc{}", std::process::id()))?;
    let provider = OidcProvider::start(ProviderOptions {
        tls: true,
        netns: Some((egress.name.clone(), shoal_e2e::hosts::Egress::SERVICE)),
        ..ProviderOptions::default()
    })
    .await?;
    ensure!(provider.issuer().starts_with("https://10.251.0.1:"));
    let proxy = provider.proxy_url().context("a proxy")?;
    let ca = provider.ca_file().context("https")?;
    let home = Home::new()?;
    let token_cmd = || -> Result<Command> {
        let mut c = home.command()?;
        c.args(["kubeconfig", "token", "--issuer", provider.issuer()])
            .args(["--client-id", OidcProvider::CLIENT_ID])
            .args(["--oidc-ca-file", path_str(ca)?])
            .env("HTTPS_PROXY", &proxy)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("SHOAL_NO_BROWSER", "1")
            .stdin(Stdio::null());
        Ok(c)
    };

    let mut child = token_cmd()?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let issuer = provider.issuer().to_owned();
    let (url, rest) = read_until(&mut child, move |l| {
        l.trim().starts_with(&issuer).then(|| l.trim().to_owned())
    })?;
    provider
        .complete_browser_login(&url, "alice", "alice-pw")
        .await?;
    let out = finish(child, rest).await?;
    let cred: Value = serde_json::from_str(&out).context("an ExecCredential")?;
    let token = token_of(&cred, provider.issuer())?;
    ensure!(claims(&token)?["email"] == "alice@example.com");

    // The second use answers from the cache, without a browser.
    let again = token_cmd()?.output()?;
    ensure!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    ensure!(
        !String::from_utf8_lossy(&again.stderr).contains("To sign in"),
        "the cached sign-in was not used"
    );
    let cred: Value = serde_json::from_slice(&again.stdout)?;
    ensure!(token_of(&cred, provider.issuer())? == token);
    Ok(())
}
