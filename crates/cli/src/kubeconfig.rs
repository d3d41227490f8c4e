//! Kubeconfigs for guest clusters, as pure data: the cluster, user and context
//! entries of one guest cluster, a new self-contained file, and merging those
//! entries into an existing file without losing anything else in it.
//!
//! No I/O here: `commands::kubeconfig` reads and writes the files.

use std::fmt;
use std::num::NonZeroU16;
use std::str::FromStr;

use base64::Engine;
use serde_yaml::{Mapping, Value};

/// The three lists of a kubeconfig that hold named entries.
const SECTIONS: [&str; 3] = ["clusters", "users", "contexts"];

/// Why a kubeconfig cannot be read, merged or rendered.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The text is not YAML (or JSON).
    #[error("not a valid kubeconfig: {source}")]
    Parse {
        /// The parser's complaint, with its line and column.
        #[source]
        source: serde_yaml::Error,
    },
    /// The document is YAML, but not a mapping.
    #[error("not a valid kubeconfig: the document is {found}, not a mapping of fields")]
    NotAMapping {
        /// What the document is instead.
        found: &'static str,
    },
    /// `clusters`, `users` or `contexts` is not a list.
    #[error("not a valid kubeconfig: {field:?} is {found}, not a list")]
    NotAList {
        /// The field.
        field: &'static str,
        /// What it is instead.
        found: &'static str,
    },
    /// The cluster's `status.apiEndpoint` is not an `https://HOST[:PORT]` URL.
    #[error("the cluster's API endpoint {endpoint:?} is not an https://HOST:PORT URL")]
    ApiEndpoint {
        /// The endpoint.
        endpoint: String,
    },
    /// YAML could not be written (never expected for plain strings and mappings).
    #[error("cannot render the kubeconfig: {source}")]
    Render {
        /// The serializer's complaint.
        #[source]
        source: serde_yaml::Error,
    },
}

/// Why a `--gateway-address` is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayAddressError {
    /// There is no `:PORT`.
    #[error("{0:?} has no port: use HOST:PORT, e.g. gateway.example.com:443")]
    NoPort(String),
    /// The host part is empty or holds characters no host name or IP has.
    #[error("{0:?} has no valid host: use HOST:PORT, e.g. gateway.example.com:443 or [::1]:443")]
    BadHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("{0:?} has no valid port: the port is a number from 1 to 65535")]
    BadPort(String),
}

/// The gateway's `HOST:PORT`, checked: a host name, IPv4 or bracketed IPv6
/// address, and a non-zero port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayAddress {
    host: String,
    port: NonZeroU16,
}

impl FromStr for GatewayAddress {
    type Err = GatewayAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| GatewayAddressError::NoPort(s.to_owned()))?;
        let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let host_ok = match bracketed {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            }
        };
        if !host_ok {
            return Err(GatewayAddressError::BadHost(s.to_owned()));
        }
        let port = port
            .parse::<NonZeroU16>()
            .map_err(|_| GatewayAddressError::BadPort(s.to_owned()))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for GatewayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where kubectl connects, and the name it checks the server's certificate for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The `server` URL.
    pub server: String,
    /// `tls-server-name`: the API's host name, sent as SNI and checked in the
    /// certificate, when `server` is the gateway's address instead.
    pub tls_server_name: Option<String>,
}

/// The endpoint for a cluster's `status.apiEndpoint`, directly or through the
/// gateway at `gateway` (then the API host name travels as `tls-server-name`, so
/// the gateway's SNI routing works without DNS).
pub fn endpoint(
    api_endpoint: &str,
    gateway: Option<&GatewayAddress>,
) -> Result<Endpoint, KubeconfigError> {
    let bad = || KubeconfigError::ApiEndpoint {
        endpoint: api_endpoint.to_owned(),
    };
    let authority = api_endpoint
        .strip_prefix("https://")
        .map(|rest| rest.split('/').next().unwrap_or_default())
        .ok_or_else(bad)?;
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => authority,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(match gateway {
        None => Endpoint {
            server: api_endpoint.to_owned(),
            tls_server_name: None,
        },
        Some(gw) => Endpoint {
            server: format!("https://{gw}"),
            tls_server_name: Some(host.to_owned()),
        },
    })
}

/// Which gateway a kubeconfig goes through: the one the user named; else the one
/// the server publishes (`status.gatewayAddress`) when the API's host name does
/// not resolve (a base domain without DNS, as on the all-in-one install); else
/// none, and kubectl connects to the API endpoint directly.
pub fn choose_gateway(
    flag: Option<&GatewayAddress>,
    published: Option<&str>,
    api_resolves: bool,
) -> Result<Option<GatewayAddress>, GatewayAddressError> {
    if let Some(g) = flag {
        return Ok(Some(g.clone()));
    }
    match published {
        Some(p) if !api_resolves => p.parse().map(Some),
        _ => Ok(None),
    }
}

/// The name of a guest cluster's cluster, user and context entries.
pub fn entry_name(org: &str, cluster: &str) -> String {
    format!("shoal-{org}-{cluster}")
}

/// What one guest cluster's entries hold.
#[derive(Clone, PartialEq, Eq)]
pub struct GuestAccess {
    /// The name of the cluster, user and context entries (see [`entry_name`]).
    pub name: String,
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    /// How the user authenticates.
    pub credentials: Credentials,
}

/// How a guest cluster's user authenticates.
#[derive(Clone, PartialEq)]
pub enum Credentials {
    /// A client certificate and its key.
    Certificate {
        /// The client certificate (PEM).
        cert_pem: String,
        /// The client certificate's private key (PEM).
        key_pem: String,
    },
    /// An exec credential plugin: the `user` mapping (`{exec: {...}}`).
    Exec(Value),
}

impl Eq for Credentials {}

impl fmt::Debug for GuestAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestAccess")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field(
                "credentials",
                &match &self.credentials {
                    Credentials::Certificate { .. } => "certificate (key redacted)",
                    Credentials::Exec(_) => "exec plugin",
                },
            )
            .finish_non_exhaustive()
    }
}

fn b64(pem: &str) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(pem))
}

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Mapping(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::String(k.to_owned()), v))
            .collect(),
    )
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

impl GuestAccess {
    /// The `clusters` entry.
    fn cluster_entry(&self) -> Value {
        let mut cluster = Mapping::new();
        cluster.insert(text("certificate-authority-data"), b64(&self.ca_pem));
        cluster.insert(text("server"), text(&self.endpoint.server));
        if let Some(name) = &self.endpoint.tls_server_name {
            cluster.insert(text("tls-server-name"), text(name));
        }
        map([
            ("name", text(&self.name)),
            ("cluster", Value::Mapping(cluster)),
        ])
    }

    /// The `users` entry.
    fn user_entry(&self) -> Value {
        let user = match &self.credentials {
            Credentials::Certificate { cert_pem, key_pem } => map([
                ("client-certificate-data", b64(cert_pem)),
                ("client-key-data", b64(key_pem)),
            ]),
            Credentials::Exec(user) => user.clone(),
        };
        map([("name", text(&self.name)), ("user", user)])
    }

    /// The `contexts` entry, using the cluster and user entries of the same name.
    fn context_entry(&self) -> Value {
        map([
            ("name", text(&self.name)),
            (
                "context",
                map([("cluster", text(&self.name)), ("user", text(&self.name))]),
            ),
        ])
    }

    fn entries(&self) -> [(&'static str, Value); 3] {
        [
            ("clusters", self.cluster_entry()),
            ("users", self.user_entry()),
            ("contexts", self.context_entry()),
        ]
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The boolean a YAML 1.1 parser, such as the Go `yaml.v2` that kubectl reads
/// kubeconfigs with, takes this plain word for; serde_yaml (YAML 1.2) reads and
/// writes these words as strings.
fn yaml11_bool(word: &str) -> Option<bool> {
    match word {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// Fields of a kubeconfig that kubectl reads as booleans.
const BOOL_FIELDS: [(&str, &str); 4] = [
    ("clusters", "insecure-skip-tls-verify"),
    ("clusters", "disable-compression"),
    ("users", "provideClusterInfo"),
    ("preferences", "colors"),
];

/// Makes the YAML 1.1 boolean words in kubectl's boolean fields real booleans:
/// serde_yaml reads a hand-written `insecure-skip-tls-verify: yes` as a string,
/// which would otherwise be written back quoted, and kubectl would refuse it.
fn normalize_bools(doc: &mut Mapping) {
    let as_bool = |v: &mut Value| {
        if let Some(b) = v.as_str().and_then(yaml11_bool) {
            *v = Value::Bool(b);
        }
    };
    for (section, field) in BOOL_FIELDS {
        match (section, doc.get_mut(section)) {
            ("preferences", Some(prefs)) => {
                if let Some(v) = prefs.get_mut(field) {
                    as_bool(v);
                }
            }
            (_, Some(Value::Sequence(list))) => {
                for item in list {
                    let inner = if section == "clusters" {
                        item.get_mut("cluster")
                    } else {
                        item.get_mut("user").and_then(|u| u.get_mut("exec"))
                    };
                    if let Some(v) = inner.and_then(|i| i.get_mut(field)) {
                        as_bool(v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Replaces every string (value or key) that YAML 1.1 reads as a boolean with
/// a placeholder, recording the word.
fn protect(value: &mut Value, prefix: &str, words: &mut Vec<String>) {
    let mut swap = |s: &mut String| {
        if yaml11_bool(s).is_some() {
            words.push(std::mem::replace(s, format!("{prefix}{}z", words.len())));
        }
    };
    match value {
        Value::String(s) => swap(s),
        Value::Sequence(list) => {
            for item in list {
                protect(item, prefix, words);
            }
        }
        Value::Mapping(map) => {
            let old = std::mem::take(map);
            for (mut k, mut v) in old {
                protect(&mut k, prefix, words);
                protect(&mut v, prefix, words);
                map.insert(k, v);
            }
        }
        Value::Tagged(tagged) => protect(&mut tagged.value, prefix, words),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Writes the document as YAML that YAML 1.1 parsers read back the same: the
/// strings they would take for booleans are single-quoted, as kubectl writes them.
fn render(doc: &Mapping) -> Result<String, KubeconfigError> {
    let to_yaml =
        |d: &Value| serde_yaml::to_string(d).map_err(|source| KubeconfigError::Render { source });
    let mut doc = Value::Mapping(doc.clone());
    let plain = to_yaml(&doc)?;
    // A placeholder prefix found nowhere in the document.
    let mut prefix = "shoalq".to_owned();
    while plain.contains(&prefix) {
        prefix.push('q');
    }
    let mut words = Vec::new();
    protect(&mut doc, &prefix, &mut words);
    if words.is_empty() {
        return Ok(plain);
    }
    let mut text = to_yaml(&doc)?;
    for (i, word) in words.iter().enumerate() {
        text = text.replacen(&format!("{prefix}{i}z"), &format!("'{word}'"), 1);
    }
    Ok(text)
}

/// A new, self-contained kubeconfig with only this cluster's entries, its
/// context current.
pub fn render_new(access: &GuestAccess) -> Result<String, KubeconfigError> {
    let mut doc = Mapping::new();
    doc.insert(text("apiVersion"), text("v1"));
    doc.insert(text("kind"), text("Config"));
    for (section, entry) in access.entries() {
        doc.insert(text(section), Value::Sequence(vec![entry]));
    }
    doc.insert(text("current-context"), text(&access.name));
    doc.insert(text("preferences"), Value::Mapping(Mapping::new()));
    render(&doc)
}

/// Parses an existing kubeconfig loosely: any field is kept, only the shape
/// of what [`merge`] changes is checked. Empty text is an empty kubeconfig.
pub fn parse(existing: &str) -> Result<Mapping, KubeconfigError> {
    let value: Value = if existing.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml::from_str(existing).map_err(|source| KubeconfigError::Parse { source })?
    };
    let doc = match value {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        other => {
            return Err(KubeconfigError::NotAMapping {
                found: kind_of(&other),
            })
        }
    };
    for field in SECTIONS {
        match doc.get(field) {
            None | Some(Value::Null | Value::Sequence(_)) => {}
            Some(other) => {
                return Err(KubeconfigError::NotAList {
                    field,
                    found: kind_of(other),
                })
            }
        }
    }
    Ok(doc)
}

/// Puts `entry` in place of the first item named like it (dropping any later
/// items of that name), or appends it.
fn upsert(list: &mut Vec<Value>, entry: Value) {
    let name = entry.get("name").cloned();
    let named = |v: &Value| v.get("name").is_some_and(|n| Some(n) == name.as_ref());
    match list.iter().position(named) {
        Some(at) => {
            list[at] = entry;
            let mut i = 0;
            list.retain(|v| {
                i += 1;
                i - 1 == at || !named(v)
            });
        }
        None => list.push(entry),
    }
}

/// Merges a guest cluster's entries into an existing kubeconfig: the cluster,
/// user and context entries named [`GuestAccess::name`] are replaced (or added);
/// every other entry and every other field, known to kubectl or not, is kept as
/// it was. `current-context` changes only when `switch_context` is set.
///
/// Comments in the existing file are not kept (YAML values are, in their order).
pub fn merge(
    existing: &str,
    access: &GuestAccess,
    switch_context: bool,
) -> Result<String, KubeconfigError> {
    let mut doc = parse(existing)?;
    normalize_bools(&mut doc);
    for (field, value) in [("apiVersion", "v1"), ("kind", "Config")] {
        if !doc.contains_key(field) {
            doc.insert(text(field), text(value));
        }
    }
    for (section, entry) in access.entries() {
        let slot = doc
            .entry(text(section))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if slot.is_null() {
            *slot = Value::Sequence(Vec::new());
        }
        if let Value::Sequence(list) = slot {
            upsert(list, entry);
        }
    }
    if switch_context {
        doc.insert(text("current-context"), text(&access.name));
    }
    render(&doc)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_flag_wins_then_the_published_gateway_when_there_is_no_dns() {
        let flag: GatewayAddress = "gw.example.com:8443".parse().expect("valid");
        let published = Some("127.0.0.1:9443");
        assert_eq!(
            choose_gateway(Some(&flag), published, false),
            Ok(Some(flag.clone()))
        );
        assert_eq!(
            choose_gateway(None, published, false),
            Ok(Some("127.0.0.1:9443".parse().expect("valid")))
        );
        assert_eq!(choose_gateway(None, published, true), Ok(None), "DNS works");
        assert_eq!(
            choose_gateway(None, None, false),
            Ok(None),
            "none published"
        );
        assert!(choose_gateway(None, Some("no-port"), false).is_err());
    }

    /// Compares `rendered` with `testdata/<name>`; `SHOAL_UPDATE_GOLDEN=1` rewrites it.
    fn golden(name: &str, rendered: &str) {
        shoal_testutil::check_golden(env!("CARGO_MANIFEST_DIR"), name, rendered);
    }

    fn access(gateway: Option<&str>) -> GuestAccess {
        let gw = gateway.map(|g| g.parse().expect("valid gateway address"));
        GuestAccess {
            name: entry_name("acme", "demo"),
            endpoint: endpoint("https://api.demo.acme.shoal.local:443", gw.as_ref())
                .expect("valid endpoint"),
            ca_pem: "CA PEM\n".into(),
            credentials: Credentials::Certificate {
                cert_pem: "CERT PEM\n".into(),
                key_pem: "KEY PEM\n".into(),
            },
        }
    }

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("valid YAML")
    }

    fn names(doc: &Value, section: &str) -> Vec<String> {
        doc[section]
            .as_sequence()
            .expect("a list")
            .iter()
            .map(|e| e["name"].as_str().expect("named").to_owned())
            .collect()
    }

    /// A kubeconfig as a user has it: two contexts, fields kubectl knows and
    /// fields it does not.
    const EXISTING: &str = r#"apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: dev
  cluster:
    server: https://dev.example.com:6443
    insecure-skip-tls-verify: true
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {audience: dev}
- name: prod
  cluster:
    server: https://prod.example.com:6443
    certificate-authority: /etc/prod-ca.crt
users:
- name: dev-admin
  user:
    token: dev-token
- name: prod-sso
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: sso-login
      args: [--profile, prod]
contexts:
- name: dev
  context: {cluster: dev, user: dev-admin, namespace: team-a}
- name: prod
  context: {cluster: prod, user: prod-sso}
current-context: prod
x-team-notes:
  owner: platform
  rotated: 2024-05-01
"#;

    #[test]
    fn a_new_kubeconfig_is_self_contained() {
        let text = render_new(&access(None)).expect("renders");
        golden("kubeconfig/new.yaml", &text);
        let doc = yaml(&text);
        assert_eq!(doc["current-context"], "shoal-acme-demo");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://api.demo.acme.shoal.local:443"
        );
        assert!(doc["clusters"][0]["cluster"]
            .get("tls-server-name")
            .is_none());
        // base64("CA PEM\n"), base64("CERT PEM\n"), base64("KEY PEM\n").
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0EgUEVNCg=="
        );
        assert_eq!(
            doc["users"][0]["user"]["client-certificate-data"],
            "Q0VSVCBQRU0K"
        );
        assert_eq!(doc["users"][0]["user"]["client-key-data"], "S0VZIFBFTQo=");
        assert_eq!(doc["contexts"][0]["context"]["cluster"], "shoal-acme-demo");
        assert_eq!(doc["contexts"][0]["context"]["user"], "shoal-acme-demo");
    }

    #[test]
    fn merging_keeps_every_other_entry_and_unknown_field() {
        let merged = merge(EXISTING, &access(Some("127.0.0.1:1234")), false).expect("merges");
        golden("kubeconfig/merged.yaml", &merged);
        let before = yaml(EXISTING);
        let after = yaml(&merged);
        assert_eq!(
            names(&after, "contexts"),
            ["dev", "prod", "shoal-acme-demo"]
        );
        assert_eq!(
            names(&after, "clusters"),
            ["dev", "prod", "shoal-acme-demo"]
        );
        assert_eq!(
            names(&after, "users"),
            ["dev-admin", "prod-sso", "shoal-acme-demo"]
        );
        // The old entries and every other field are exactly as they were.
        for section in SECTIONS {
            for i in 0..2 {
                assert_eq!(after[section][i], before[section][i], "{section}[{i}]");
            }
        }
        for field in ["preferences", "x-team-notes", "apiVersion", "kind"] {
            assert_eq!(after[field], before[field], "{field}");
        }
        assert_eq!(after["current-context"], "prod", "not switched");
        let cluster = &after["clusters"][2]["cluster"];
        assert_eq!(cluster["server"], "https://127.0.0.1:1234");
        assert_eq!(cluster["tls-server-name"], "api.demo.acme.shoal.local");
    }

    #[test]
    fn merging_replaces_only_this_clusters_entries() {
        let stale = EXISTING.replace(
            "- name: prod\n  context: {cluster: prod, user: prod-sso}\n",
            "- name: prod\n  context: {cluster: prod, user: prod-sso}\n\
             - name: shoal-acme-demo\n  context: {cluster: old, user: old}\n\
             - name: shoal-acme-demo-2\n  context: {cluster: x, user: y}\n\
             - name: shoal-acme-demo\n  context: {cluster: older, user: older}\n",
        );
        let merged = merge(&stale, &access(None), true).expect("merges");
        let after = yaml(&merged);
        assert_eq!(
            names(&after, "contexts"),
            ["dev", "prod", "shoal-acme-demo", "shoal-acme-demo-2"]
        );
        assert_eq!(
            after["contexts"][2]["context"]["cluster"],
            "shoal-acme-demo"
        );
        assert_eq!(after["contexts"][3]["context"]["cluster"], "x");
        assert_eq!(after["current-context"], "shoal-acme-demo", "switched");
        // Merging again changes nothing.
        assert_eq!(merge(&merged, &access(None), true).expect("merges"), merged);
    }

    #[test]
    fn an_empty_or_missing_file_gets_a_minimal_config() {
        for existing in ["", "\n  \n", "---\n", "null\n"] {
            let after = yaml(&merge(existing, &access(None), false).expect("merges"));
            assert_eq!(after["apiVersion"], "v1");
            assert_eq!(after["kind"], "Config");
            assert_eq!(names(&after, "contexts"), ["shoal-acme-demo"]);
            assert!(after.get("current-context").is_none(), "{existing:?}");
        }
        let after = yaml(&merge("clusters: null\nusers: []\n", &access(None), false).expect("ok"));
        assert_eq!(names(&after, "clusters"), ["shoal-acme-demo"]);
        assert_eq!(names(&after, "users"), ["shoal-acme-demo"]);
    }

    #[test]
    fn a_corrupt_kubeconfig_is_refused() {
        let a = access(None);
        assert!(matches!(
            merge("clusters: [\n  - name: x\n", &a, false),
            Err(KubeconfigError::Parse { .. })
        ));
        assert!(matches!(
            merge("- a\n- b\n", &a, false),
            Err(KubeconfigError::NotAMapping { found: "a list" })
        ));
        assert!(matches!(
            merge("just some text\n", &a, false),
            Err(KubeconfigError::NotAMapping { found: "a string" })
        ));
        assert!(matches!(
            merge("apiVersion: v1\ncontexts: {dev: x}\n", &a, false),
            Err(KubeconfigError::NotAList {
                field: "contexts",
                found: "a mapping"
            })
        ));
        assert!(matches!(
            merge("a: 1\na: 2\n", &a, false),
            Err(KubeconfigError::Parse { .. })
        ));
    }

    #[test]
    fn words_kubectl_reads_as_booleans_keep_their_meaning() {
        let existing = r#"clusters:
- name: c
  cluster: {server: "https://c", insecure-skip-tls-verify: yes, disable-compression: Off}
users:
- name: u
  user:
    exec:
      command: sso
      provideClusterInfo: ON
      env:
      - {name: VERBOSE, value: "on"}
      - {name: FLAG, value: "yes"}
preferences: {colors: n}
x-notes: {"n": "N", "off": ["y", "true", "yesterday"]}
"#;
        let merged = merge(existing, &access(None), false).expect("merges");
        for line in [
            "insecure-skip-tls-verify: true",
            "disable-compression: false",
            "provideClusterInfo: true",
            "value: 'on'",
            "value: 'yes'",
            "colors: false",
            "'n': 'N'",
            "'off':\n  - 'y'\n  - 'true'\n  - yesterday\n",
        ] {
            assert!(merged.contains(line), "{line:?} in\n{merged}");
        }
        let (before, after) = (yaml(existing), yaml(&merged));
        assert_eq!(after["x-notes"], before["x-notes"]);
        assert_eq!(
            after["users"][0]["user"]["exec"]["env"],
            before["users"][0]["user"]["exec"]["env"]
        );
    }

    #[test]
    fn gateway_addresses_are_checked() {
        let ok = |s: &str| s.parse::<GatewayAddress>().map(|g| g.to_string());
        assert_eq!(ok("127.0.0.1:1234"), Ok("127.0.0.1:1234".into()));
        assert_eq!(ok("gw.example.com:443"), Ok("gw.example.com:443".into()));
        assert_eq!(ok("[::1]:8443"), Ok("[::1]:8443".into()));
        assert!(matches!(
            ok("gw.example.com"),
            Err(GatewayAddressError::NoPort(_))
        ));
        assert!(matches!(ok(":443"), Err(GatewayAddressError::BadHost(_))));
        assert!(matches!(
            ok("https://gw:443"),
            Err(GatewayAddressError::BadHost(_))
        ));
        assert!(matches!(
            ok("::1:443"),
            Err(GatewayAddressError::BadHost(_))
        ));
        assert!(matches!(ok("gw:0"), Err(GatewayAddressError::BadPort(_))));
        assert!(matches!(
            ok("gw:65536"),
            Err(GatewayAddressError::BadPort(_))
        ));
        assert!(matches!(
            ok("gw:https"),
            Err(GatewayAddressError::BadPort(_))
        ));
    }

    #[test]
    fn the_gateway_endpoint_sends_the_api_name_as_sni() {
        let api = "https://api.demo.acme.shoal.local:443";
        assert_eq!(
            endpoint(api, None).expect("valid"),
            Endpoint {
                server: api.into(),
                tls_server_name: None
            }
        );
        let gw: GatewayAddress = "[::1]:8443".parse().expect("valid");
        assert_eq!(
            endpoint(api, Some(&gw)).expect("valid"),
            Endpoint {
                server: "https://[::1]:8443".into(),
                tls_server_name: Some("api.demo.acme.shoal.local".into())
            }
        );
        let no_port = endpoint("https://api.x.y.z", Some(&gw)).expect("valid");
        assert_eq!(no_port.tls_server_name.as_deref(), Some("api.x.y.z"));
        for bad in ["http://api.x:443", "api.x:443", "https://", "https://:443"] {
            assert!(
                matches!(
                    endpoint(bad, None),
                    Err(KubeconfigError::ApiEndpoint { .. })
                ),
                "{bad}"
            );
        }
    }
}
