//! A real OIDC provider for tests (npm `oidc-provider`, run by
//! `scripts/oidc-provider.sh`), and a scripted browser for it: sign-ins follow
//! the provider's redirects and submit its login and consent forms, never a
//! shortcut around them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{free_port, workspace_root};

/// A user the provider knows.
#[derive(Clone, Debug)]
pub struct TestUser {
    /// The login name (also the `sub`).
    pub username: String,
    /// The password typed into the login form.
    pub password: String,
    /// The `email` claim.
    pub email: String,
    /// The `groups` claim.
    pub groups: Vec<String>,
}

impl TestUser {
    fn new(name: &str, groups: &[&str]) -> Self {
        Self {
            username: name.to_owned(),
            password: format!("{name}-pw"),
            email: format!("{name}@example.com"),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }
}

/// How to run the provider.
#[derive(Clone, Debug)]
pub struct ProviderOptions {
    /// Serve https with a certificate from a CA of the test's own.
    pub tls: bool,
    /// The lifetime of ID tokens, in seconds.
    pub id_token_ttl_secs: u64,
    /// The users.
    pub users: Vec<TestUser>,
    /// Run inside this network namespace, on this address, instead of on
    /// 127.0.0.1: the issuer is then `https://<addr>:<port>`, and the harness
    /// reaches it through a CONNECT proxy ([`OidcProvider::proxy_url`]).
    pub netns: Option<(String, Ipv4Addr)>,
    /// Where the web client [`OidcProvider::WEB_CLIENT_ID`] may send browsers
    /// back to (a web UI's callback URLs).
    pub web_redirect_uris: Vec<String>,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            tls: false,
            id_token_ttl_secs: 300,
            users: vec![
                TestUser::new("alice", &["platform-team"]),
                TestUser::new("bob", &["app-team"]),
                TestUser::new("carol", &[]),
            ],
            netns: None,
            web_redirect_uris: Vec::new(),
        }
    }
}

/// What a token endpoint returned.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// The ID token.
    pub id_token: String,
    /// The refresh token, when one was issued.
    pub refresh_token: Option<String>,
    /// The access token.
    pub access_token: String,
}

/// Which key [`OidcProvider::sign`] signs with.
#[derive(Clone, Copy, Debug)]
pub enum SignWith {
    /// The provider's current signing key (published in its JWKS).
    Current,
    /// A fresh key the provider does not publish, with a random `kid`.
    Foreign,
}

/// A running provider; dropping it stops the process.
pub struct OidcProvider {
    child: Child,
    issuer: String,
    ca_file: Option<PathBuf>,
    proxy: Option<crate::connect_proxy::ConnectProxy>,
    users: Vec<TestUser>,
    dir: tempfile::TempDir,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_b64(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    b64url(&buf)
}

/// Makes a CA and a certificate for `host` with openssl; returns the CA's,
/// the certificate's and the key's paths.
fn make_tls(dir: &Path, host: Ipv4Addr) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Shoal test OIDC CA",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        &format!("/CN={host}"),
    ])?;
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName=IP:{host}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    Ok((dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key")))
}

/// One HTML form: where it posts and its inputs' names and values.
#[derive(Debug)]
struct Form {
    action: String,
    fields: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .replace("&amp;", "&")
            .replace("&#34;", "\"")
            .replace("&#39;", "'"),
    )
}

/// The first form of a page.
fn first_form(html: &str) -> Option<Form> {
    let start = html.find("<form")?;
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let form = &html[start..end];
    let open_end = form.find('>')?;
    let action = attr(&form[..open_end], "action").unwrap_or_default();
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag_end = rest[i..].find('>').map_or(rest.len(), |e| i + e);
        let tag = &rest[i..tag_end];
        if let Some(name) = attr(tag, "name") {
            fields.push((name, attr(tag, "value").unwrap_or_default()));
        }
        rest = &rest[tag_end..];
    }
    Some(Form { action, fields })
}

impl OidcProvider {
    /// The public client for the CLI: PKCE, loopback redirects, refresh and device grants.
    pub const CLIENT_ID: &'static str = "shoal";
    /// A second client, for tokens issued to someone else.
    pub const OTHER_CLIENT_ID: &'static str = "other";
    /// A public web client (PKCE), for the web UI's sign-in.
    pub const WEB_CLIENT_ID: &'static str = "shoal-web";

    /// Starts a provider and waits until its discovery document answers.
    pub async fn start(opts: ProviderOptions) -> Result<Self> {
        ensure!(
            opts.netns.is_none() || opts.tls,
            "a provider in a namespace serves https (it is reached through a CONNECT proxy)"
        );
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let host = opts
            .netns
            .as_ref()
            .map_or(Ipv4Addr::LOCALHOST, |(_, addr)| *addr);
        let tls = if opts.tls {
            Some(make_tls(dir.path(), host)?)
        } else {
            None
        };
        let users: Vec<Value> = opts
            .users
            .iter()
            .map(|u| {
                json!({"username": u.username, "password": u.password, "email": u.email, "groups": u.groups})
            })
            .collect();
        let config = json!({
            "port": port,
            "host": host.to_string(),
            "idTokenTtl": opts.id_token_ttl_secs,
            "users": users,
            "tls": tls.as_ref().map(|(_, cert, key)| json!({"cert": cert, "key": key})),
            "webRedirectUris": opts.web_redirect_uris,
        });
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
        let log_path = dir.path().join("provider.log");
        let log = std::fs::File::create(&log_path)?;
        let script = workspace_root().join("scripts/oidc-provider.sh");
        let mut command = match &opts.netns {
            Some((ns, _)) => {
                // Installed out here, where the npm registry is reachable.
                let out = Command::new("bash").arg(&script).arg("install").output()?;
                ensure!(
                    out.status.success(),
                    "scripts/oidc-provider.sh install: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "bash"]);
                c
            }
            None => Command::new("bash"),
        };
        let child = command
            .arg(&script)
            .arg("run")
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting scripts/oidc-provider.sh")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let proxy = match &opts.netns {
            Some((ns, addr)) => Some(crate::connect_proxy::ConnectProxy::start(
                ns,
                std::net::SocketAddr::from((*addr, port)),
            )?),
            None => None,
        };
        let provider = Self {
            child,
            issuer: format!("{scheme}://{host}:{port}"),
            ca_file: tls.map(|(ca, _, _)| ca),
            proxy,
            users: opts.users,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = provider.http()?;
        loop {
            let url = format!("{}/.well-known/openid-configuration", provider.issuer);
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    return Ok(provider);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the OIDC provider did not answer within 60 s; its log ({}):\n{}",
                    log_path.display(),
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The issuer URL, as tokens carry it in `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `http://127.0.0.1:<port>` CONNECT proxy that reaches a provider in a
    /// namespace (for `HTTPS_PROXY`), if it runs in one.
    pub fn proxy_url(&self) -> Option<String> {
        self.proxy.as_ref().map(|p| format!("http://{}", p.addr()))
    }

    /// The CA of the provider's certificate, when it serves https.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The provider's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provider.log")).unwrap_or_default()
    }

    /// A browser-like client: cookies kept, redirects followed by hand.
    fn http(&self) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20));
        if let Some(ca) = &self.ca_file {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?);
        }
        // The issuer through the proxy; loopback redirect targets stay direct.
        if let Some(url) = self.proxy_url() {
            b = b.proxy(reqwest::Proxy::https(url)?);
        }
        Ok(b.build()?)
    }

    fn password_of(&self, user: &str) -> Result<String> {
        self.users
            .iter()
            .find(|u| u.username == user)
            .map(|u| u.password.clone())
            .with_context(|| format!("the provider has no user {user:?}"))
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.issuer)
        }
    }

    /// Acts as the browser from `url`: follows redirects, signs in as `user` and
    /// allows access on the provider's forms, until a redirect leaves the
    /// provider (returned) or a page has no form left (`None`).
    async fn browse(
        &self,
        http: &reqwest::Client,
        url: &str,
        user: &str,
        password: &str,
        user_code: Option<&str>,
    ) -> Result<Option<String>> {
        let mut next = (reqwest::Method::GET, self.absolute(url), Vec::new());
        for _ in 0..30 {
            let (method, url, form) = next;
            if !url.starts_with(&self.issuer) {
                return Ok(Some(url));
            }
            let req = http.request(method.clone(), &url);
            let req = if method == reqwest::Method::POST {
                req.form(&form)
            } else {
                req
            };
            let resp = req
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .with_context(|| format!("{url}: a redirect without Location"))?;
                next = (reqwest::Method::GET, self.absolute(location), Vec::new());
                continue;
            }
            let html = resp.text().await?;
            ensure!(status.is_success(), "{method} {url}: {status}: {html}");
            ensure!(
                !html.contains("wrong user name or password"),
                "the provider refused {user}'s password"
            );
            let Some(mut page_form) = first_form(&html) else {
                return Ok(None);
            };
            for (name, value) in &mut page_form.fields {
                match name.as_str() {
                    "login" => *value = user.to_owned(),
                    "password" => *value = password.to_owned(),
                    "user_code" if value.is_empty() => {
                        *value = user_code.unwrap_or_default().to_owned();
                    }
                    _ => {}
                }
            }
            let action = if page_form.action.is_empty() {
                url.clone()
            } else {
                self.absolute(&page_form.action)
            };
            next = (reqwest::Method::POST, action, page_form.fields);
        }
        bail!("the sign-in did not finish within 30 steps")
    }

    /// Signs `user` in to `client_id` with the authorization code flow and PKCE,
    /// as the CLI would, and exchanges the code.
    pub async fn login_for_client(&self, client_id: &str, user: &str) -> Result<Tokens> {
        let password = self.password_of(user)?;
        let http = self.http()?;
        let verifier = random_b64(32);
        let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
        let state = random_b64(16);
        let redirect_uri = format!("http://127.0.0.1:{}/callback", free_port()?);
        let auth_url = reqwest::Url::parse_with_params(
            &format!("{}/auth", self.issuer),
            &[
                ("client_id", client_id),
                ("response_type", "code"),
                ("scope", "openid email profile groups offline_access"),
                ("redirect_uri", &redirect_uri),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", &state),
                ("prompt", "consent"),
            ],
        )?;
        let landed = self
            .browse(&http, auth_url.as_str(), user, &password, None)
            .await?
            .context("the sign-in ended without redirecting back")?;
        ensure!(
            landed.starts_with(&redirect_uri),
            "redirected to {landed}, not {redirect_uri}"
        );
        let landed = reqwest::Url::parse(&landed)?;
        let param = |k: &str| {
            landed
                .query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
        };
        ensure!(
            param("state").as_deref() == Some(state.as_str()),
            "state mismatch: {landed}"
        );
        let code = param("code").with_context(|| format!("no code in {landed}"))?;
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("client_id", client_id),
            ("code_verifier", &verifier),
        ])
        .await
    }

    /// Signs `user` in to [`Self::CLIENT_ID`].
    pub async fn login(&self, user: &str) -> Result<Tokens> {
        self.login_for_client(Self::CLIENT_ID, user).await
    }

    /// Acts as the browser at `authorization_url`: signs `user` in and allows
    /// access; returns the URL the provider then sends the browser to, unvisited.
    pub async fn sign_in_at(&self, authorization_url: &str, user: &str) -> Result<String> {
        let password = self.password_of(user)?;
        let http = self.http()?;
        self.browse(&http, authorization_url, user, &password, None)
            .await?
            .context("the sign-in ended without redirecting back")
    }

    /// Acts as the browser for an authorization URL someone else printed: signs
    /// in, allows access, and finally fetches the redirect to the caller's
    /// loopback `redirect_uri`, so its listener receives the code.
    pub async fn complete_browser_login(
        &self,
        authorization_url: &str,
        user: &str,
        password: &str,
    ) -> Result<()> {
        let http = self.http()?;
        let landed = self
            .browse(&http, authorization_url, user, password, None)
            .await?
            .context("the sign-in ended without redirecting back")?;
        let resp = http
            .get(&landed)
            .send()
            .await
            .with_context(|| format!("delivering the redirect to {landed}"))?;
        ensure!(
            resp.status().is_success(),
            "the redirect target {landed} answered {}",
            resp.status()
        );
        Ok(())
    }

    /// Acts as the browser at the device verification page: enters `user_code`,
    /// signs in and allows access.
    pub async fn approve_device_code(
        &self,
        user_code: &str,
        user: &str,
        password: &str,
    ) -> Result<()> {
        let http = self.http()?;
        let end = self
            .browse(&http, "/device", user, password, Some(user_code))
            .await?;
        ensure!(
            end.is_none(),
            "the device flow left the provider for {end:?}"
        );
        Ok(())
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Tokens> {
        let resp = self
            .http()?
            .post(format!("{}/token", self.issuer))
            .form(form)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        ensure!(
            status.is_success(),
            "the token endpoint answered {status}: {body}"
        );
        let text = |k: &str| body[k].as_str().map(str::to_owned);
        Ok(Tokens {
            id_token: text("id_token").with_context(|| format!("no id_token: {body}"))?,
            refresh_token: text("refresh_token"),
            access_token: text("access_token")
                .with_context(|| format!("no access_token: {body}"))?,
        })
    }

    /// Exchanges a refresh token of [`Self::CLIENT_ID`].
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", Self::CLIENT_ID),
        ])
        .await
    }

    /// Replaces the provider's signing key; returns the new `kid`.
    pub async fn rotate_keys(&self) -> Result<String> {
        let body: Value = self
            .http()?
            .post(format!("{}/test/rotate", self.issuer))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        body["kid"].as_str().map(str::to_owned).context("no kid")
    }

    /// A compact RS256 JWS of exactly `claims`.
    pub async fn sign(&self, claims: Value, with: SignWith) -> Result<String> {
        let key = match with {
            SignWith::Current => "current",
            SignWith::Foreign => "foreign",
        };
        let body: Value = self
            .http()?
            .post(format!("{}/test/sign", self.issuer))
            .json(&json!({"claims": claims, "key": key}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        body["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token")
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        // The script execs node, so this PID is the provider's.
        let _ = crate::signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server whose web UI signs in through a provider of its own: the provider
/// (https) has the web client [`OidcProvider::WEB_CLIENT_ID`] with the server's
/// callback, and the server (controllers off) trusts it, names users by email
/// and has one organization owned by one of the provider's groups.
pub struct UiWithProvider {
    /// The provider.
    pub provider: OidcProvider,
    /// The server.
    pub server: crate::ServerProc,
    /// The server's `https://127.0.0.1:PORT`.
    pub base: String,
    _dir: tempfile::TempDir,
}

impl UiWithProvider {
    /// Starts both, with organization `org` whose owners are group `owners`.
    pub async fn start(org: &str, owners: &str) -> Result<Self> {
        let port = free_port()?;
        let base = format!("https://127.0.0.1:{port}");
        let provider = OidcProvider::start(ProviderOptions {
            tls: true,
            web_redirect_uris: vec![format!("{base}/ui/oidc/callback")],
            ..ProviderOptions::default()
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let ca = provider.ca_file().context("the provider's CA")?;
        let args = [
            "--controllers=false".to_owned(),
            format!("--oidc-issuer-url={}", provider.issuer()),
            format!("--oidc-client-id={}", OidcProvider::WEB_CLIENT_ID),
            format!("--oidc-ca-file={}", ca.display()),
            "--oidc-username-claim=email".to_owned(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = crate::ServerProc::start_at(&dir.path().join("data"), port, &refs)?;
        let body = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Organization",
            "metadata": {"name": org},
            "spec": {"members": [{"group": owners, "role": "owner"}]},
        });
        let (code, answer) = crate::raw(
            &server.client().await?,
            "POST",
            "/apis/shoal.io/v1alpha1/organizations",
            "application/json",
            serde_json::to_vec(&body)?,
        )
        .await?;
        ensure!(code == 201, "creating {org}: {code} {answer}");
        Ok(Self {
            provider,
            server,
            base,
            _dir: dir,
        })
    }
}
