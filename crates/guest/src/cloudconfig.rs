//! The `#cloud-config` subset the test image honours, parsed as pure data, and the
//! `write_files` step applied under a root directory (`/` in the guest, a temporary
//! directory in tests).
//!
//! Supported keys: `hostname`, `fqdn`, `write_files` (`path`, `content`, `encoding`
//! text|b64|base64, `permissions`, `append`; `owner` and `defer` are accepted and
//! ignored) and `phone_home` (`url`, `post`, `tries`). Any other key is kept in
//! [`CloudConfig::ignored`] so the caller can log it. Vendor-data is merged under
//! user-data key by key, as cloud-init does.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use serde_yaml::{Mapping, Value};

/// The header that marks a cloud-config document.
pub const HEADER: &str = "#cloud-config";

/// Why a cloud-config document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The document is not valid YAML.
    #[error("{doc}: invalid YAML: {source}")]
    Yaml {
        /// `user-data` or `vendor-data`.
        doc: &'static str,
        /// The YAML error.
        #[source]
        source: serde_yaml::Error,
    },
    /// The document is YAML but not a mapping of keys.
    #[error("{doc}: a #cloud-config document must be a mapping of keys")]
    NotMapping {
        /// `user-data` or `vendor-data`.
        doc: &'static str,
    },
    /// A known key has the wrong shape.
    #[error("cloud-config key {key}: {why}")]
    Field {
        /// The key, e.g. `write_files[2].permissions`.
        key: String,
        /// What was wrong and what is expected.
        why: String,
    },
}

fn field(key: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        key: key.into(),
        why: why.into(),
    }
}

/// Why `write_files` could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("write_files {path}: {action}: {source}")]
pub struct WriteError {
    /// The file's path in the guest.
    pub path: PathBuf,
    /// What was being done.
    pub action: &'static str,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// One `write_files` entry, validated and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    /// Absolute path in the guest, with no `..` components.
    pub path: PathBuf,
    /// The decoded content.
    pub content: Vec<u8>,
    /// The permission bits (default 0644).
    pub mode: u32,
    /// Append to the file instead of replacing it.
    pub append: bool,
}

/// Which fields the phone-home POST carries (cloud-init's `phone_home.post`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostFields {
    /// `all` (the default): everything the guest knows.
    All,
    /// Only the listed field names.
    Only(Vec<String>),
}

/// The `phone_home` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneHome {
    /// The URL to POST to; `$INSTANCE_ID` is replaced. `None`: the seed's `phone-home`.
    pub url: Option<String>,
    /// The fields to post.
    pub post: PostFields,
    /// cloud-init's attempt count; the guest retries for a fixed time instead.
    pub tries: Option<u32>,
}

/// The honoured part of the merged user-data and vendor-data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudConfig {
    /// `hostname`.
    pub hostname: Option<String>,
    /// `fqdn`.
    pub fqdn: Option<String>,
    /// `write_files`, in order.
    pub write_files: Vec<WriteFile>,
    /// `phone_home`.
    pub phone_home: Option<PhoneHome>,
    /// Top-level keys present but not supported, sorted.
    pub ignored: Vec<String>,
    /// Notes about accepted-but-ignored sub-keys (e.g. `owner`, `defer`).
    pub notes: Vec<String>,
}

/// What a seed document (user-data or vendor-data) turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// A `#cloud-config` mapping.
    CloudConfig(Mapping),
    /// Empty, or another format (script, MIME multipart, ...), which is not applied;
    /// the string says which, for the log.
    Ignored(String),
}

/// Classifies and parses one seed document; `doc` names it in errors.
pub fn parse_document(doc: &'static str, text: &str) -> Result<Document, ConfigError> {
    let first = text.lines().next().unwrap_or_default().trim_end();
    if first != HEADER {
        let kind = if text.trim().is_empty() {
            "empty".to_string()
        } else if first.starts_with("#!") {
            "a script".to_string()
        } else if first.to_ascii_lowercase().starts_with("content-type:") {
            "MIME multipart".to_string()
        } else {
            format!("not {HEADER} (first line {first:?})")
        };
        return Ok(Document::Ignored(kind));
    }
    let value: Value =
        serde_yaml::from_str(text).map_err(|source| ConfigError::Yaml { doc, source })?;
    match value {
        Value::Null => Ok(Document::CloudConfig(Mapping::new())),
        Value::Mapping(m) => Ok(Document::CloudConfig(m)),
        _ => Err(ConfigError::NotMapping { doc }),
    }
}

/// Merges vendor-data under user-data: a top-level key in user-data replaces the
/// same key from vendor-data.
pub fn merge(vendor: Mapping, user: Mapping) -> Mapping {
    let mut merged = vendor;
    for (k, v) in user {
        merged.insert(k, v);
    }
    merged
}

impl CloudConfig {
    /// Interprets a (merged) cloud-config mapping.
    pub fn from_mapping(map: &Mapping) -> Result<Self, ConfigError> {
        let mut cfg = CloudConfig::default();
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                cfg.ignored.push(format!("{k:?}"));
                continue;
            };
            match key {
                "hostname" => cfg.hostname = Some(scalar_string(key, v)?),
                "fqdn" => cfg.fqdn = Some(scalar_string(key, v)?),
                "write_files" => {
                    let Value::Sequence(items) = v else {
                        return Err(field(key, "must be a list of files"));
                    };
                    for (i, item) in items.iter().enumerate() {
                        let (file, notes) = write_file(i, item)?;
                        cfg.write_files.push(file);
                        cfg.notes.extend(notes);
                    }
                }
                "phone_home" => cfg.phone_home = Some(phone_home(v)?),
                other => cfg.ignored.push(other.to_string()),
            }
        }
        cfg.ignored.sort();
        Ok(cfg)
    }
}

/// A YAML scalar as a string (numbers and booleans as written).
fn scalar_string(key: &str, v: &Value) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(field(key, "must be a string")),
    }
}

fn get<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn bool_field(key: String, v: Option<&Value>) -> Result<bool, ConfigError> {
    match v {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(field(key, "must be true or false")),
    }
}

/// Parses `permissions`: an octal string (`'0644'`, `'644'`, `'0o644'`) or a YAML
/// integer whose digits are read as octal (YAML 1.2 reads `0644` as 644).
pub fn parse_mode(key: &str, v: &Value) -> Result<u32, ConfigError> {
    let digits = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return Err(field(key, "must be an octal string such as '0644'")),
    };
    let digits = digits.strip_prefix("0o").unwrap_or(&digits);
    let mode = u32::from_str_radix(digits, 8).map_err(|_| {
        field(
            key,
            format!("{digits:?} is not an octal mode such as '0644'"),
        )
    })?;
    if mode > 0o7777 {
        return Err(field(key, format!("{digits:?} is above 07777")));
    }
    Ok(mode)
}

fn write_file(i: usize, item: &Value) -> Result<(WriteFile, Vec<String>), ConfigError> {
    let at = |k: &str| format!("write_files[{i}].{k}");
    let Value::Mapping(m) = item else {
        return Err(field(format!("write_files[{i}]"), "must be a mapping"));
    };
    let path = match get(m, "path") {
        Some(Value::String(p)) => PathBuf::from(p),
        _ => return Err(field(at("path"), "is required and must be a string")),
    };
    let normal = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && path.file_name().is_some();
    if !normal {
        return Err(field(
            at("path"),
            format!(
                "{} must be an absolute file path without ..",
                path.display()
            ),
        ));
    }
    let content = match get(m, "content") {
        None => String::new(),
        Some(v) => scalar_string(&at("content"), v)?,
    };
    let encoding = match get(m, "encoding") {
        None => "text".to_string(),
        Some(v) => scalar_string(&at("encoding"), v)?,
    };
    let content = match encoding.as_str() {
        "text" | "" => content.into_bytes(),
        "b64" | "base64" => {
            let compact: String = content.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| field(at("content"), format!("invalid base64: {e}")))?
        }
        other => {
            return Err(field(
                at("encoding"),
                format!("{other:?} is not supported: use text, b64 or base64"),
            ))
        }
    };
    let mode = match get(m, "permissions") {
        None => 0o644,
        Some(v) => parse_mode(&at("permissions"), v)?,
    };
    let append = bool_field(at("append"), get(m, "append"))?;
    let mut notes = Vec::new();
    if let Some(owner) = get(m, "owner") {
        notes.push(format!(
            "{}: owner {owner:?} ignored (files belong to root)",
            path.display()
        ));
    }
    if bool_field(at("defer"), get(m, "defer"))? {
        notes.push(format!(
            "{}: defer ignored (written at once)",
            path.display()
        ));
    }
    for k in m.keys().filter_map(Value::as_str) {
        if !matches!(
            k,
            "path" | "content" | "encoding" | "permissions" | "append" | "owner" | "defer"
        ) {
            notes.push(format!("{}: unknown key {k} ignored", path.display()));
        }
    }
    Ok((
        WriteFile {
            path,
            content,
            mode,
            append,
        },
        notes,
    ))
}

fn phone_home(v: &Value) -> Result<PhoneHome, ConfigError> {
    let Value::Mapping(m) = v else {
        return Err(field("phone_home", "must be a mapping"));
    };
    let url = match get(m, "url") {
        None => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(field("phone_home.url", "must be a string")),
    };
    let post = match get(m, "post") {
        None => PostFields::All,
        Some(Value::String(s)) if s == "all" => PostFields::All,
        Some(Value::Sequence(items)) => PostFields::Only(
            items
                .iter()
                .map(|i| scalar_string("phone_home.post", i))
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(field("phone_home.post", "must be 'all' or a list of names")),
    };
    let tries = match get(m, "tries") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| field("phone_home.tries", "must be a positive integer"))?,
        ),
        Some(_) => return Err(field("phone_home.tries", "must be an integer")),
    };
    Ok(PhoneHome { url, post, tries })
}

/// Writes `files` under `root` in order: parent directories are created (0755), a
/// file is replaced (or appended to) and then given its mode.
pub fn apply_write_files(root: &Path, files: &[WriteFile]) -> Result<(), WriteError> {
    for f in files {
        let err = |action: &'static str| {
            let path = f.path.clone();
            move |source| WriteError {
                path,
                action,
                source,
            }
        };
        let relative = f.path.strip_prefix("/").unwrap_or(&f.path);
        let target = root.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(err("creating its directory"))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(f.append)
            .truncate(!f.append)
            .mode(f.mode)
            .open(&target)
            .map_err(err("opening"))?;
        file.write_all(&f.content).map_err(err("writing"))?;
        file.set_permissions(std::fs::Permissions::from_mode(f.mode))
            .map_err(err("setting its mode"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> CloudConfig {
        match parse_document("user-data", text).expect("parses") {
            Document::CloudConfig(m) => CloudConfig::from_mapping(&m).expect("valid"),
            Document::Ignored(why) => panic!("ignored: {why}"),
        }
    }

    #[test]
    fn parses_the_supported_keys_and_lists_the_rest() {
        let cfg = config(
            "#cloud-config\n\
             hostname: node-1\n\
             fqdn: node-1.example.test\n\
             runcmd: [[kubeadm, init]]\n\
             packages: [curl]\n\
             write_files:\n\
             - path: /etc/shoal/a.txt\n\
             \x20 content: |\n\
             \x20   hello\n\
             \x20   world\n\
             \x20 permissions: '0600'\n\
             - path: /etc/shoal/b.bin\n\
             \x20 encoding: b64\n\
             \x20 content: aGk=\n\
             \x20 append: true\n\
             \x20 owner: root:root\n\
             \x20 defer: true\n\
             phone_home:\n\
             \x20 url: http://10.0.0.1/$INSTANCE_ID/phone-home\n\
             \x20 post: [instance_id, hostname]\n\
             \x20 tries: 10\n",
        );
        assert_eq!(cfg.hostname.as_deref(), Some("node-1"));
        assert_eq!(cfg.fqdn.as_deref(), Some("node-1.example.test"));
        assert_eq!(cfg.ignored, vec!["packages", "runcmd"]);
        assert_eq!(
            cfg.write_files,
            vec![
                WriteFile {
                    path: "/etc/shoal/a.txt".into(),
                    content: b"hello\nworld\n".to_vec(),
                    mode: 0o600,
                    append: false,
                },
                WriteFile {
                    path: "/etc/shoal/b.bin".into(),
                    content: b"hi".to_vec(),
                    mode: 0o644,
                    append: true,
                },
            ]
        );
        assert_eq!(cfg.notes.len(), 2, "{:?}", cfg.notes);
        assert_eq!(
            cfg.phone_home,
            Some(PhoneHome {
                url: Some("http://10.0.0.1/$INSTANCE_ID/phone-home".into()),
                post: PostFields::Only(vec!["instance_id".into(), "hostname".into()]),
                tries: Some(10),
            })
        );
    }

    #[test]
    fn other_formats_are_ignored_not_refused() {
        for (text, want) in [
            ("", "empty"),
            ("#!/bin/sh\necho hi\n", "a script"),
            (
                "Content-Type: multipart/mixed; boundary=x\n",
                "MIME multipart",
            ),
        ] {
            assert_eq!(
                parse_document("user-data", text).expect("no error"),
                Document::Ignored(want.into())
            );
        }
        assert_eq!(
            parse_document("user-data", "#cloud-config\n").expect("no error"),
            Document::CloudConfig(Mapping::new())
        );
    }

    #[test]
    fn refuses_malformed_cloud_config_naming_the_key() {
        for (text, key) in [
            ("#cloud-config\nwrite_files: {}\n", "write_files"),
            (
                "#cloud-config\nwrite_files:\n- content: x\n",
                "write_files[0].path",
            ),
            (
                "#cloud-config\nwrite_files:\n- path: etc/relative\n",
                "write_files[0].path",
            ),
            (
                "#cloud-config\nwrite_files:\n- path: /etc/../root/x\n",
                "write_files[0].path",
            ),
            (
                "#cloud-config\nwrite_files:\n- path: /x\n  encoding: gzip\n",
                "write_files[0].encoding",
            ),
            (
                "#cloud-config\nwrite_files:\n- path: /x\n  permissions: '0999'\n",
                "write_files[0].permissions",
            ),
            (
                "#cloud-config\nwrite_files:\n- path: /x\n  encoding: b64\n  content: '*'\n",
                "write_files[0].content",
            ),
            ("#cloud-config\nphone_home: [x]\n", "phone_home"),
            ("#cloud-config\nhostname: [a]\n", "hostname"),
        ] {
            let Document::CloudConfig(m) = parse_document("user-data", text).expect("yaml") else {
                panic!("not cloud-config: {text}");
            };
            match CloudConfig::from_mapping(&m) {
                Err(ConfigError::Field { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_document("user-data", "#cloud-config\n- a\n"),
            Err(ConfigError::NotMapping { .. })
        ));
        assert!(matches!(
            parse_document("user-data", "#cloud-config\na: [\n"),
            Err(ConfigError::Yaml { .. })
        ));
    }

    #[test]
    fn modes_read_as_octal() {
        for (yaml, want) in [
            ("'0644'", 0o644),
            ("'600'", 0o600),
            ("'0o755'", 0o755),
            ("0644", 0o644),
            ("640", 0o640),
        ] {
            let v: Value = serde_yaml::from_str(yaml).expect("yaml");
            assert_eq!(parse_mode("m", &v).expect(yaml), want, "{yaml}");
        }
    }

    #[test]
    fn user_data_overrides_vendor_data_key_by_key() {
        let doc = |t| match parse_document("x", t).expect("parses") {
            Document::CloudConfig(m) => m,
            Document::Ignored(w) => panic!("{w}"),
        };
        let vendor = doc("#cloud-config\nhostname: vendor\nfqdn: v.example\n");
        let user = doc("#cloud-config\nhostname: user\n");
        let cfg = CloudConfig::from_mapping(&merge(vendor, user)).expect("valid");
        assert_eq!(cfg.hostname.as_deref(), Some("user"));
        assert_eq!(cfg.fqdn.as_deref(), Some("v.example"));
    }

    #[test]
    fn write_files_creates_replaces_appends_and_sets_modes() {
        let root = tempfile::tempdir().expect("tempdir");
        let file = |path: &str, content: &[u8], mode, append| WriteFile {
            path: path.into(),
            content: content.to_vec(),
            mode,
            append,
        };
        apply_write_files(
            root.path(),
            &[
                file("/etc/deep/dir/a", b"one\n", 0o600, false),
                file("/etc/deep/dir/a", b"two\n", 0o640, true),
                file("/b", b"first", 0o644, false),
                file("/b", b"second", 0o755, false),
            ],
        )
        .expect("applied");
        let a = root.path().join("etc/deep/dir/a");
        assert_eq!(std::fs::read(&a).expect("a"), b"one\ntwo\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode(&a), 0o640);
        let b = root.path().join("b");
        assert_eq!(std::fs::read(&b).expect("b"), b"second");
        assert_eq!(mode(&b), 0o755);
    }

    #[test]
    fn write_files_reports_the_path_that_failed() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("blocker"), b"a file").expect("write");
        let err = apply_write_files(
            root.path(),
            &[WriteFile {
                path: "/blocker/under".into(),
                content: vec![],
                mode: 0o644,
                append: false,
            }],
        )
        .expect_err("a file is not a directory");
        assert_eq!(err.path, PathBuf::from("/blocker/under"));
    }
}
