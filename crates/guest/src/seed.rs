//! The NoCloud seed address, read from the kernel command line or the SMBIOS system
//! serial number.
//!
//! Shoal's agent (like any NoCloud host) starts a VM with
//! `-smbios type=1,serial=ds=nocloud-net;s=http://<gateway>/<machine>/`, and the guest
//! kernel exposes that string as `/sys/class/dmi/id/product_serial`. A machine that
//! boots over the network (`shoal pxe`) gets the same `ds=nocloud;s=…` word on its
//! kernel command line instead, as cloud-init reads it; the command line wins.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why the seed address could not be found.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The serial number file could not be read.
    #[error("reading the SMBIOS serial {path}: {source} (is this a NoCloud VM?)")]
    Read {
        /// The file read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The serial does not name the NoCloud data source.
    #[error("the SMBIOS serial {serial:?} does not start with ds=nocloud or ds=nocloud-net")]
    NotNoCloud {
        /// The serial as read.
        serial: String,
    },
    /// The serial names NoCloud but gives no seed address.
    #[error("the SMBIOS serial {serial:?} has no s= or seedfrom= seed address")]
    NoSeed {
        /// The serial as read.
        serial: String,
    },
    /// The seed address is not a plain-HTTP URL with a host.
    #[error("the seed address {url:?} is not an http://host[:port]/path URL")]
    BadUrl {
        /// The address as given.
        url: String,
    },
}

/// A NoCloud seed URL: `http://host[:port]/path/`, always ending with `/`, so
/// `meta-data`, `user-data`, `vendor-data` and `phone-home` can be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedUrl(String);

impl SeedUrl {
    /// Validates `url` as a seed address; a missing trailing `/` is added.
    pub fn new(url: &str) -> Result<Self, SeedError> {
        let bad = || SeedError::BadUrl {
            url: url.to_string(),
        };
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let host = rest.split('/').next().unwrap_or_default();
        let valid_char = |c: char| c.is_ascii_alphanumeric() || "-._:[]".contains(c);
        if host.is_empty() || !host.chars().all(valid_char) {
            return Err(bad());
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let mut s = url.to_string();
        if !s.ends_with('/') {
            s.push('/');
        }
        Ok(Self(s))
    }

    /// The URL of one seed file, e.g. `meta-data`.
    pub fn join(&self, file: &str) -> String {
        format!("{}{file}", self.0)
    }

    /// The URL as a string, ending with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SeedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses an SMBIOS serial such as `ds=nocloud;s=http://10.0.0.1/m1/` or
/// `ds=nocloud-net;seedfrom=http://10.0.0.1/m1/` into the seed URL.
///
/// Other `key=value` fields (cloud-init's `i=` and `h=`) are ignored.
pub fn parse_serial(serial: &str) -> Result<SeedUrl, SeedError> {
    let serial = serial.trim();
    let mut fields = serial.split(';');
    match fields.next() {
        Some("ds=nocloud") | Some("ds=nocloud-net") => {}
        _ => {
            return Err(SeedError::NotNoCloud {
                serial: serial.to_string(),
            })
        }
    }
    let url = fields
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| *k == "s" || *k == "seedfrom")
        .map(|(_, v)| v)
        .ok_or_else(|| SeedError::NoSeed {
            serial: serial.to_string(),
        })?;
    SeedUrl::new(url)
}

/// The seed address of a kernel command line's `ds=nocloud…` word, if it has one.
pub fn parse_cmdline(cmdline: &str) -> Option<Result<SeedUrl, SeedError>> {
    cmdline
        .split_whitespace()
        .find(|w| w.starts_with("ds=nocloud"))
        .map(parse_serial)
}

/// Reads and parses the serial at `path` (normally `/sys/class/dmi/id/product_serial`).
pub fn read_serial(path: &Path) -> Result<SeedUrl, SeedError> {
    let serial = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_serial(&serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_seed_on_a_kernel_command_line() {
        let url = parse_cmdline(
            "console=ttyS0 quiet ds=nocloud;s=http://10.78.0.2:8080/seed/52-54-00-00-00-07/ x=1",
        )
        .expect("a ds= word")
        .expect("valid");
        assert_eq!(
            url.as_str(),
            "http://10.78.0.2:8080/seed/52-54-00-00-00-07/"
        );
        assert!(parse_cmdline("console=ttyS0 quiet").is_none());
        assert!(matches!(
            parse_cmdline("ds=nocloud;h=x"),
            Some(Err(SeedError::NoSeed { .. }))
        ));
    }

    #[test]
    fn parses_the_nocloud_forms() {
        let want = "http://10.0.2.2:8000/vm0/";
        for serial in [
            "ds=nocloud;s=http://10.0.2.2:8000/vm0/\n",
            "ds=nocloud-net;seedfrom=http://10.0.2.2:8000/vm0/",
            "ds=nocloud;i=iid-1;s=http://10.0.2.2:8000/vm0/;h=vm0",
            "ds=nocloud;s=http://10.0.2.2:8000/vm0",
        ] {
            let seed = parse_serial(serial).expect(serial);
            assert_eq!(seed.as_str(), want, "{serial}");
        }
        let seed = parse_serial("ds=nocloud;s=http://10.0.0.1/m1/").expect("valid");
        assert_eq!(seed.join("meta-data"), "http://10.0.0.1/m1/meta-data");
    }

    #[test]
    fn refuses_what_is_not_a_nocloud_seed() {
        assert!(matches!(
            parse_serial("VMware-56 4d"),
            Err(SeedError::NotNoCloud { .. })
        ));
        assert!(matches!(
            parse_serial(""),
            Err(SeedError::NotNoCloud { .. })
        ));
        assert!(matches!(
            parse_serial("ds=nocloud;h=vm0"),
            Err(SeedError::NoSeed { .. })
        ));
        for bad in [
            "ds=nocloud;s=https://10.0.0.1/m1/",
            "ds=nocloud;s=file:///var/seed/",
            "ds=nocloud;s=http:///m1/",
            "ds=nocloud;s=http://10.0.0.1/a b/",
        ] {
            assert!(
                matches!(parse_serial(bad), Err(SeedError::BadUrl { .. })),
                "{bad}"
            );
        }
    }
}
