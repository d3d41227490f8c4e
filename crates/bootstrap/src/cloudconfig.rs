//! The `#cloud-config` document both renderers produce, as serde structs: only the
//! keys Shoal uses, in the order they run on the node.

use serde::Serialize;

use crate::input::NodeBootstrap;
use crate::BootstrapError;

/// The first line of every rendered document.
pub(crate) const HEADER: &str = "#cloud-config";

/// The fields a node posts when it phones home.
const PHONE_HOME_POST: [&str; 2] = ["instance_id", "hostname"];
/// cloud-init's attempts at phoning home.
const PHONE_HOME_TRIES: u32 = 10;

/// A `#cloud-config` document.
#[derive(Serialize)]
pub(crate) struct CloudConfig<'a> {
    /// Unset for a group of identical nodes: each keeps the name its cloud gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub write_files: Vec<WriteFile<'a>>,
    /// Commands in exec form (no shell), run once on first boot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runcmd: Vec<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_home: Option<PhoneHome<'a>>,
}

/// A `write_files` entry; the content is plain text (cloud-init's default encoding).
#[derive(Serialize)]
pub(crate) struct WriteFile<'a> {
    pub path: &'a str,
    pub content: String,
    /// Octal, as a string (`'0600'`): cloud-init's schema refuses an integer.
    pub permissions: String,
    /// Appends to the file instead of replacing it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub append: bool,
}

impl<'a> WriteFile<'a> {
    pub fn new(path: &'a str, content: String, mode: u32) -> Self {
        Self {
            path,
            content,
            permissions: format!("{mode:04o}"),
            append: false,
        }
    }

    /// An entry that appends `content` to `path`.
    pub fn append(path: &'a str, content: String, mode: u32) -> Self {
        Self {
            append: true,
            ..Self::new(path, content, mode)
        }
    }
}

/// The `phone_home` key.
#[derive(Serialize)]
pub(crate) struct PhoneHome<'a> {
    pub url: &'a str,
    pub post: [&'static str; 2],
    pub tries: u32,
}

impl<'a> CloudConfig<'a> {
    /// `hostname`, the caller's files and `phone_home`; the renderers add the rest.
    pub fn base(n: &'a NodeBootstrap) -> Self {
        Self {
            hostname: Some(&n.hostname),
            write_files: n
                .files
                .iter()
                .map(|f| WriteFile::new(&f.path, f.content.clone(), f.mode()))
                .collect(),
            runcmd: Vec::new(),
            phone_home: n.phone_home_url.as_deref().map(|url| PhoneHome {
                url,
                post: PHONE_HOME_POST,
                tries: PHONE_HOME_TRIES,
            }),
        }
    }

    /// The document's text, header first.
    pub fn render(&self) -> Result<String, BootstrapError> {
        Ok(format!("{HEADER}\n{}", to_yaml("the cloud-config", self)?))
    }
}

/// One YAML document, without a `---` marker.
pub(crate) fn to_yaml<T: Serialize>(
    what: &'static str,
    value: &T,
) -> Result<String, BootstrapError> {
    serde_yaml::to_string(value).map_err(|source| BootstrapError::Yaml { what, source })
}
