//! NoCloud `meta-data` (`instance-id`, `local-hostname`) and the choice of the
//! guest's hostname, as pure data.

use serde::Deserialize;

use crate::cloudconfig::CloudConfig;

/// Why meta-data or the hostname was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetaDataError {
    /// meta-data is not the expected YAML.
    #[error("meta-data: {source}")]
    Yaml {
        /// The YAML error.
        #[source]
        source: serde_yaml::Error,
    },
    /// meta-data has an empty `instance-id`.
    #[error("meta-data: instance-id is empty")]
    EmptyInstanceId,
    /// The chosen hostname is not a valid host name.
    #[error("hostname {name:?} (from {from}) is not a valid host name: letters, digits and '-' in dot-separated labels of at most 63, 64 characters in all")]
    BadHostname {
        /// The name.
        name: String,
        /// Where it came from.
        from: &'static str,
    },
    /// Nothing names the guest.
    #[error("no hostname: set hostname or fqdn in user-data, or local-hostname in meta-data")]
    NoHostname,
}

/// The fields of NoCloud meta-data the guest uses; others are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MetaData {
    /// `instance-id`.
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    /// `local-hostname`.
    #[serde(rename = "local-hostname", default)]
    pub local_hostname: Option<String>,
}

/// Parses meta-data YAML.
pub fn parse_meta_data(text: &str) -> Result<MetaData, MetaDataError> {
    let md: MetaData =
        serde_yaml::from_str(text).map_err(|source| MetaDataError::Yaml { source })?;
    if md.instance_id.trim().is_empty() {
        return Err(MetaDataError::EmptyInstanceId);
    }
    Ok(md)
}

/// The guest's names: the short hostname (set in the kernel) and its FQDN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The short host name.
    pub hostname: String,
    /// The fully qualified name (the hostname itself when none is known).
    pub fqdn: String,
}

/// Picks the names as cloud-init does: user-data `fqdn` and `hostname` first (the
/// short name defaulting to the FQDN's first label), then meta-data
/// `local-hostname`, then the DHCP host name. A dotted name gives the FQDN and its
/// first label is the hostname.
pub fn choose_names(
    cfg: &CloudConfig,
    md: &MetaData,
    dhcp_hostname: Option<&str>,
) -> Result<Names, MetaDataError> {
    let (name, from) = if let Some(fqdn) = &cfg.fqdn {
        let host = cfg
            .hostname
            .clone()
            .unwrap_or_else(|| first_label(fqdn).to_string());
        check(fqdn, "user-data fqdn")?;
        check(&host, "user-data hostname")?;
        return Ok(Names {
            hostname: first_label(&host).to_string(),
            fqdn: fqdn.clone(),
        });
    } else if let Some(h) = &cfg.hostname {
        (h.as_str(), "user-data hostname")
    } else if let Some(h) = &md.local_hostname {
        (h.as_str(), "meta-data local-hostname")
    } else if let Some(h) = dhcp_hostname {
        (h, "the DHCP host name")
    } else {
        return Err(MetaDataError::NoHostname);
    };
    check(name, from)?;
    Ok(Names {
        hostname: first_label(name).to_string(),
        fqdn: name.to_string(),
    })
}

fn first_label(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Checks an RFC 1123 host name that fits the kernel's 64-byte limit.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn check(name: &str, from: &'static str) -> Result<(), MetaDataError> {
    if valid_hostname(name) {
        Ok(())
    } else {
        Err(MetaDataError::BadHostname {
            name: name.to_string(),
            from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(host: Option<&str>) -> MetaData {
        MetaData {
            instance_id: "i-1".into(),
            local_hostname: host.map(Into::into),
        }
    }

    #[test]
    fn parses_meta_data_and_ignores_other_keys() {
        let m = parse_meta_data("instance-id: iid-vm0\nlocal-hostname: vm0\nplatform: x\n")
            .expect("valid");
        assert_eq!(
            m,
            MetaData {
                instance_id: "iid-vm0".into(),
                local_hostname: Some("vm0".into()),
            }
        );
        let m = parse_meta_data("instance-id: iid-vm0\n").expect("valid");
        assert_eq!(m.local_hostname, None);
        assert!(parse_meta_data("local-hostname: vm0\n").is_err());
        assert!(matches!(
            parse_meta_data("instance-id: ''\n"),
            Err(MetaDataError::EmptyInstanceId)
        ));
    }

    #[test]
    fn names_follow_cloud_init_precedence() {
        let names = |cfg: &CloudConfig, m: &MetaData, d: Option<&str>| {
            let n = choose_names(cfg, m, d).expect("names");
            (n.hostname, n.fqdn)
        };
        let mut cfg = CloudConfig::default();
        assert!(matches!(
            choose_names(&cfg, &md(None), None),
            Err(MetaDataError::NoHostname)
        ));
        assert_eq!(names(&cfg, &md(None), Some("d")), ("d".into(), "d".into()));
        assert_eq!(
            names(&cfg, &md(Some("m.example")), Some("d")),
            ("m".into(), "m.example".into())
        );
        cfg.hostname = Some("u".into());
        assert_eq!(names(&cfg, &md(Some("m")), None), ("u".into(), "u".into()));
        cfg.fqdn = Some("f.example".into());
        assert_eq!(
            names(&cfg, &md(Some("m")), None),
            ("u".into(), "f.example".into())
        );
        cfg.hostname = None;
        assert_eq!(
            names(&cfg, &md(Some("m")), None),
            ("f".into(), "f.example".into())
        );
    }

    #[test]
    fn bad_host_names_are_refused() {
        for bad in ["", "a_b", "-a", "a-", "a..b", "with space", &"x".repeat(65)] {
            assert!(!valid_hostname(bad), "{bad:?}");
        }
        for good in ["a", "vm-0", "node1.cluster.example"] {
            assert!(valid_hostname(good), "{good}");
        }
        let cfg = CloudConfig {
            hostname: Some("bad_name".into()),
            ..Default::default()
        };
        assert!(matches!(
            choose_names(&cfg, &md(None), None),
            Err(MetaDataError::BadHostname { .. })
        ));
    }
}
