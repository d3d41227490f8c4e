//! An OIDC sign-in kept in a kubeconfig, as pure data: the `shoal.io/oidc`
//! extension that holds the issuer, client id and tokens, the exec credential
//! plugin user that hands kubectl (and kube-rs) the ID token, and the
//! `ExecCredential` the plugin prints.
//!
//! No I/O here: `commands::oidc` reads and writes the files.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use crate::kubeconfig::{parse, KubeconfigError};

/// The name of the kubeconfig extension (top-level `extensions`) holding the session.
pub const EXTENSION_NAME: &str = "shoal.io/oidc";
/// The exec credential API version the configs name: v1beta1, which every
/// kubectl from 1.11 on and kube-rs read (v1 needs kubectl 1.22 or newer).
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1beta1";
/// The exec credential API versions the plugin can answer in.
pub const EXEC_API_VERSIONS: [&str; 2] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

/// The API version to answer in: the one the caller names in
/// `KUBERNETES_EXEC_INFO` (its JSON `apiVersion`) when the plugin speaks it,
/// else [`EXEC_API_VERSION`].
pub fn answer_api_version(exec_info: Option<&str>) -> &'static str {
    let asked = exec_info
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .and_then(|v| {
            v.get("apiVersion")
                .and_then(|a| a.as_str())
                .map(str::to_owned)
        });
    EXEC_API_VERSIONS
        .into_iter()
        .find(|v| asked.as_deref() == Some(*v))
        .unwrap_or(EXEC_API_VERSION)
}
/// The name of the cluster, user and context entries of Shoal's own config.
pub const ENTRY_NAME: &str = "shoal";

/// One user's sign-in at one issuer.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OidcSession {
    /// The issuer URL.
    #[serde(rename = "issuerURL")]
    pub issuer: String,
    /// The client id.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// A CA (PEM) to trust for the issuer, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The refresh token; `None` after logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The last ID token; `None` after logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for OidcSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSession")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("ca_file", &self.ca_file)
            .field("signed_in", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a session cannot be read from or written to a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The file is not a kubeconfig.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// The file holds no `shoal.io/oidc` extension.
    #[error(
        "it holds no OIDC sign-in (no {EXTENSION_NAME:?} extension): run 'shoal login --oidc'"
    )]
    Missing,
    /// The extension is not a session.
    #[error("its {EXTENSION_NAME:?} extension is not readable ({source}): run 'shoal login --oidc' again")]
    Malformed {
        /// Why.
        #[source]
        source: serde_yaml::Error,
    },
    /// `extensions` is not a list.
    #[error("its 'extensions' field is not a list: fix or remove it")]
    ExtensionsNotAList,
    /// YAML could not be written.
    #[error("cannot render the config: {0}")]
    Render(#[source] serde_yaml::Error),
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Mapping(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::String(k.to_owned()), v))
            .collect(),
    )
}

/// The `exec` section of a user that runs `command args...` for its token.
pub fn exec_user(command: &Path, args: &[String]) -> Value {
    map([(
        "exec",
        map([
            ("apiVersion", text(EXEC_API_VERSION)),
            ("command", text(&command.to_string_lossy())),
            (
                "args",
                Value::Sequence(args.iter().map(|a| text(a)).collect()),
            ),
            // The plugin only prompts when a guest kubeconfig has no sign-in yet,
            // and then it prints the URL on stderr.
            ("interactiveMode", text("IfAvailable")),
            ("provideClusterInfo", Value::Bool(false)),
        ]),
    )])
}

/// The plugin arguments that read and refresh the session kept in `config`.
pub fn token_args_for_config(config: &Path) -> Vec<String> {
    vec![
        "kubeconfig".into(),
        "token".into(),
        "--config".into(),
        config.to_string_lossy().into_owned(),
    ]
}

/// Shoal's own config for a management server reached at `server` (CA `ca_pem`)
/// whose user is the exec plugin `command args`, holding `session`.
pub fn render_config(
    server: &str,
    ca_pem: &str,
    command: &Path,
    args: &[String],
    session: &OidcSession,
) -> Result<String, SessionError> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut doc = Mapping::new();
    doc.insert(text("apiVersion"), text("v1"));
    doc.insert(text("kind"), text("Config"));
    doc.insert(
        text("clusters"),
        Value::Sequence(vec![map([
            ("name", text(ENTRY_NAME)),
            (
                "cluster",
                map([
                    ("server", text(server)),
                    ("certificate-authority-data", text(&ca)),
                ]),
            ),
        ])]),
    );
    doc.insert(
        text("users"),
        Value::Sequence(vec![map([
            ("name", text(ENTRY_NAME)),
            ("user", exec_user(command, args)),
        ])]),
    );
    doc.insert(
        text("contexts"),
        Value::Sequence(vec![map([
            ("name", text(ENTRY_NAME)),
            (
                "context",
                map([("cluster", text(ENTRY_NAME)), ("user", text(ENTRY_NAME))]),
            ),
        ])]),
    );
    doc.insert(text("current-context"), text(ENTRY_NAME));
    set_session(&mut doc, session)?;
    serde_yaml::to_string(&doc).map_err(SessionError::Render)
}

/// The session kept in a kubeconfig's text.
pub fn read_session(kubeconfig: &str) -> Result<OidcSession, SessionError> {
    let doc = parse(kubeconfig)?;
    let entry = match doc.get("extensions") {
        None | Some(Value::Null) => None,
        Some(Value::Sequence(list)) => list
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(EXTENSION_NAME)),
        Some(_) => return Err(SessionError::ExtensionsNotAList),
    };
    let ext = entry
        .and_then(|e| e.get("extension"))
        .ok_or(SessionError::Missing)?;
    serde_yaml::from_value(ext.clone()).map_err(|source| SessionError::Malformed { source })
}

fn set_session(doc: &mut Mapping, session: &OidcSession) -> Result<(), SessionError> {
    let value = serde_yaml::to_value(session).map_err(SessionError::Render)?;
    let entry = map([("name", text(EXTENSION_NAME)), ("extension", value)]);
    let slot = doc
        .entry(text("extensions"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if slot.is_null() {
        *slot = Value::Sequence(Vec::new());
    }
    let Value::Sequence(list) = slot else {
        return Err(SessionError::ExtensionsNotAList);
    };
    let ours = |e: &Value| e.get("name").and_then(Value::as_str) == Some(EXTENSION_NAME);
    match list.iter_mut().find(|e| ours(e)) {
        Some(existing) => *existing = entry,
        None => list.push(entry),
    }
    Ok(())
}

/// The kubeconfig's text with its session replaced by `session`; everything
/// else in it is kept.
pub fn write_session(kubeconfig: &str, session: &OidcSession) -> Result<String, SessionError> {
    let mut doc = parse(kubeconfig)?;
    set_session(&mut doc, session)?;
    serde_yaml::to_string(&doc).map_err(SessionError::Render)
}

/// The `ExecCredential` handing `token`, valid until `exp` (seconds since the
/// epoch), to kubectl or kube-rs.
pub fn exec_credential(api_version: &str, token: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {
            "token": token,
            "expirationTimestamp": rfc3339(exp),
        }
    })
}

/// `secs` since the epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX / 2);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> OidcSession {
        OidcSession {
            issuer: "https://issuer.example".into(),
            client_id: "shoal".into(),
            ca_file: Some("/tmp/ca.crt".into()),
            refresh_token: Some("rt-1".into()),
            id_token: Some("a.b.c".into()),
        }
    }

    #[test]
    fn the_config_runs_the_plugin_and_keeps_the_session() {
        let args = token_args_for_config(Path::new("/home/a/.config/shoal/config"));
        let text = render_config(
            "https://127.0.0.1:6443",
            "PEM",
            Path::new("/usr/bin/shoal"),
            &args,
            &session(),
        )
        .expect("renders");
        let kc: kube::config::Kubeconfig = serde_yaml::from_str(&text).expect("a kubeconfig");
        let exec = kc.auth_infos[0]
            .auth_info
            .as_ref()
            .and_then(|a| a.exec.as_ref())
            .expect("an exec user");
        assert_eq!(exec.api_version.as_deref(), Some(EXEC_API_VERSION));
        assert_eq!(exec.command.as_deref(), Some("/usr/bin/shoal"));
        assert_eq!(exec.args.as_deref(), Some(&args[..]));
        assert_eq!(kc.current_context.as_deref(), Some(ENTRY_NAME));
        assert_eq!(read_session(&text).expect("a session"), session());
        assert!(text.contains("issuerURL: https://issuer.example"), "{text}");
    }

    #[test]
    fn writing_a_session_replaces_only_ours() {
        let existing = "apiVersion: v1\nkind: Config\nextensions:\n- name: other\n  extension: {a: 1}\npreferences: {colors: true}\n";
        let mut s = session();
        let once = write_session(existing, &s).expect("written");
        s.refresh_token = None;
        s.id_token = None;
        let twice = write_session(&once, &s).expect("rewritten");
        let doc = parse(&twice).expect("parses");
        let exts = doc["extensions"].as_sequence().expect("a list");
        assert_eq!(exts.len(), 2);
        assert_eq!(exts[0]["name"], text("other"));
        assert_eq!(read_session(&twice).expect("a session"), s);
        assert!(!twice.contains("rt-1"));
        assert_eq!(doc["preferences"]["colors"], Value::Bool(true));
    }

    #[test]
    fn missing_and_malformed_sessions_say_what_to_do() {
        let e = read_session("apiVersion: v1\nkind: Config\n").expect_err("none");
        assert!(e.to_string().contains("shoal login --oidc"), "{e}");
        let e = read_session("extensions: {a: 1}\n").expect_err("not a list");
        assert!(matches!(e, SessionError::ExtensionsNotAList));
        let e = read_session("extensions:\n- name: shoal.io/oidc\n  extension: [1]\n")
            .expect_err("malformed");
        assert!(matches!(e, SessionError::Malformed { .. }), "{e:?}");
    }

    #[test]
    fn the_plugin_answers_in_the_version_it_is_asked_for() {
        let v1 = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#;
        assert_eq!(
            answer_api_version(Some(v1)),
            "client.authentication.k8s.io/v1"
        );
        assert_eq!(answer_api_version(None), EXEC_API_VERSION);
        assert_eq!(answer_api_version(Some("not json")), EXEC_API_VERSION);
        let alpha = r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#;
        assert_eq!(answer_api_version(Some(alpha)), EXEC_API_VERSION);
    }

    #[test]
    fn exec_credentials_carry_an_rfc3339_expiry() {
        let c = exec_credential(EXEC_API_VERSION, "tok", 1_700_000_000);
        assert_eq!(c["status"]["expirationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(c["status"]["token"], "tok");
        assert_eq!(c["kind"], "ExecCredential");
        assert!(!format!("{:?}", session()).contains("rt-1"));
    }
}
