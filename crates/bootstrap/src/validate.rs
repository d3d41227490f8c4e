//! Field checks for [`NodeBootstrap`], and the small parsers the renderers share.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};

use crate::input::{NodeBootstrap, Oidc, Role};
use crate::yaml11::is_yaml11_non_string;
use crate::{BootstrapError, KUBEADM_CONFIG_PATH, NODE_FILE_PATH};

/// Files whose presence makes `kubeadm join` of a worker fail its preflight checks
/// (kubeadm writes them itself); the test image does not mind them.
const WORKER_JOIN_OWNS: [&str; 3] = [
    "/etc/kubernetes/pki/ca.crt",
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/bootstrap-kubelet.conf",
];

/// Checks every field of `n`, in declaration order.
pub(crate) fn node(n: &NodeBootstrap) -> Result<(), BootstrapError> {
    dns_label("cluster", &n.cluster, "give the cluster's name, e.g. demo")?;
    dns_label("org", &n.org, "give the organisation's name, e.g. acme")?;
    dns_name(
        "base_domain",
        &n.base_domain,
        "give the gateway's base domain, e.g. shoal.local",
    )?;
    dns_label(
        "hostname",
        &n.hostname,
        "give the Machine's name, e.g. demo-cp-0",
    )?;
    kubernetes_version(&n.kubernetes_version)?;
    endpoint(&n.control_plane_endpoint)?;
    if let Some(addr) = &n.endpoint_address {
        if addr.parse::<IpAddr>().is_err() {
            return Err(BootstrapError::EndpointAddress {
                value: addr.clone(),
            });
        }
    }
    if n.advertise_address.parse::<IpAddr>().is_err() {
        return Err(BootstrapError::AdvertiseAddress {
            value: n.advertise_address.clone(),
        });
    }
    cidrs("pod_cidr", &n.pod_cidr)?;
    cidrs("service_cidr", &n.service_cidr)?;
    dns_name(
        "dns_domain",
        &n.dns_domain,
        "give the cluster's DNS domain, e.g. cluster.local",
    )?;
    files(n)?;
    if !is_token(&n.bootstrap_token) {
        return Err(BootstrapError::BootstrapToken);
    }
    let hash_ok = n
        .ca_cert_hash
        .strip_prefix("sha256:")
        .is_some_and(|hex| is_hex(hex, 64));
    if !hash_ok {
        return Err(BootstrapError::CaCertHash {
            value: n.ca_cert_hash.clone(),
        });
    }
    match (&n.certificate_key, n.role) {
        (Some(key), Role::ControlPlaneInit | Role::ControlPlaneJoin) if !is_hex(key, 64) => {
            return Err(BootstrapError::CertificateKey)
        }
        (Some(_), Role::Worker) => return Err(BootstrapError::UnexpectedCertificateKey),
        (None, Role::ControlPlaneJoin) => return Err(BootstrapError::MissingCertificateKey),
        _ => {}
    }
    if let Some(oidc) = &n.oidc {
        check_oidc(oidc)?;
    }
    if let Some(url) = &n.phone_home_url {
        phone_home_url(url)?;
    }
    Ok(())
}

pub(crate) fn empty(
    field: &'static str,
    value: &str,
    hint: &'static str,
) -> Result<(), BootstrapError> {
    if value.is_empty() {
        Err(BootstrapError::Empty { field, hint })
    } else {
        Ok(())
    }
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

pub(crate) fn dns_label(
    field: &'static str,
    value: &str,
    hint: &'static str,
) -> Result<(), BootstrapError> {
    empty(field, value, hint)?;
    if !is_label(value) {
        return Err(BootstrapError::NotDnsLabel {
            field,
            value: value.to_string(),
        });
    }
    yaml11_string(field, value)
}

fn dns_name(field: &'static str, value: &str, hint: &'static str) -> Result<(), BootstrapError> {
    empty(field, value, hint)?;
    if !is_dns_name(value) {
        return Err(BootstrapError::NotDnsName {
            field,
            value: value.to_string(),
        });
    }
    yaml11_string(field, value)
}

/// Refuses a value that serde_yaml (YAML 1.2) writes unquoted but a YAML 1.1 reader
/// takes for a boolean or a number. serde_yaml already quotes what YAML 1.2 reads as
/// non-strings (`true`, `null`, `123`, `0x1f`, `1e3`, `0644`).
fn yaml11_string(field: &'static str, value: &str) -> Result<(), BootstrapError> {
    if is_yaml11_non_string(value) {
        Err(BootstrapError::Yaml11Ambiguous {
            field,
            value: value.to_string(),
        })
    } else {
        Ok(())
    }
}

/// The release as `MAJOR.MINOR.PATCH`, without a leading `v`.
pub(crate) fn version_digits(value: &str) -> &str {
    value.strip_prefix('v').unwrap_or(value)
}

fn kubernetes_version(value: &str) -> Result<(), BootstrapError> {
    empty(
        "kubernetes_version",
        value,
        "give the Kubernetes release, e.g. 1.31.2",
    )?;
    let err = |why| BootstrapError::KubernetesVersion {
        value: value.to_string(),
        why,
    };
    let parts: Vec<&str> = version_digits(value).split('.').collect();
    let numbers: Option<Vec<u32>> = parts
        .iter()
        .map(|p| {
            let digits = !p.is_empty() && p.len() <= 6 && p.bytes().all(|c| c.is_ascii_digit());
            digits.then(|| p.parse().ok()).flatten()
        })
        .collect();
    match numbers.as_deref() {
        Some([1, minor, _]) if *minor >= 31 => Ok(()),
        Some([_, _, _]) => Err(err(
            "kubeadm's v1beta4 configuration needs Kubernetes 1.31 or newer: choose a newer release",
        )),
        _ => Err(err("must be MAJOR.MINOR.PATCH, e.g. 1.31.2")),
    }
}

/// `host:port` split, with an IPv6 host's brackets removed.
pub(crate) fn split_endpoint(value: &str) -> Option<(&str, &str)> {
    if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        Some((host, after.strip_prefix(':')?))
    } else {
        value.rsplit_once(':')
    }
}

fn endpoint(value: &str) -> Result<(), BootstrapError> {
    empty(
        "control_plane_endpoint",
        value,
        "give host:port of the API server, e.g. api.demo.acme.shoal.local:443",
    )?;
    let err = |why| BootstrapError::Endpoint {
        value: value.to_string(),
        why,
    };
    let (host, port) = split_endpoint(value).ok_or_else(|| err("no port"))?;
    let port_ok = !port.is_empty()
        && port.bytes().all(|c| c.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return Err(err("the port must be a number from 1 to 65535"));
    }
    if value.starts_with('[') {
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(err("the bracketed host is not an IPv6 address"));
        }
    } else if host.contains(':') {
        return Err(err("an IPv6 host must be in brackets"));
    } else if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
        return Err(err("the host is neither an IP address nor a DNS name"));
    }
    yaml11_string("control_plane_endpoint", value)
}

fn cidrs(field: &'static str, value: &str) -> Result<(), BootstrapError> {
    empty(field, value, "give a CIDR, e.g. 10.244.0.0/16")?;
    let err = |why| BootstrapError::Cidr {
        field,
        value: value.to_string(),
        why,
    };
    let list: Vec<&str> = value.split(',').collect();
    if list.len() > 2 {
        return Err(err("at most two CIDRs (one IPv4, one IPv6) may be given"));
    }
    for cidr in list {
        let (addr, prefix) = cidr.split_once('/').ok_or_else(|| err("no /prefix"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| err("the address is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_ok = !prefix.is_empty()
            && prefix.bytes().all(|c| c.is_ascii_digit())
            && prefix.parse::<u8>().is_ok_and(|p| p <= max);
        if !prefix_ok {
            return Err(err("the prefix length is out of range"));
        }
    }
    Ok(())
}

fn files(n: &NodeBootstrap) -> Result<(), BootstrapError> {
    let mut seen = BTreeSet::new();
    for (index, file) in n.files.iter().enumerate() {
        let path_err = |why| BootstrapError::FilePath {
            index,
            path: file.path.clone(),
            why,
        };
        if !file.path.starts_with('/') {
            return Err(path_err("must be absolute: start it with /"));
        }
        let clean = file.path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean {
            return Err(path_err(
                "must name a file without empty, . or .. components",
            ));
        }
        if file.path.chars().any(char::is_control) {
            return Err(path_err("must not contain control characters"));
        }
        if file.path == KUBEADM_CONFIG_PATH || file.path == NODE_FILE_PATH {
            return Err(path_err(
                "is written by the renderer itself: do not pass it as a file",
            ));
        }
        if !seen.insert(file.path.as_str()) {
            return Err(path_err("is given twice: pass each path once"));
        }
        let mode = file.mode();
        let mode_err = |why| BootstrapError::FilePermissions {
            index,
            path: file.path.clone(),
            mode,
            why,
        };
        if mode > 0o777 {
            return Err(mode_err(
                "only the rwx bits (at most 0777) may be set on bootstrap files",
            ));
        }
        if file.is_private_key() && mode & 0o077 != 0 {
            return Err(mode_err(
                "a private key must not be readable by group or others: use 0600 or 0400",
            ));
        }
    }
    Ok(())
}

/// The kubeadm-only check: `kubeadm join` of a worker writes the cluster CA and the
/// kubelet's kubeconfigs itself, and its preflight checks refuse to start if they exist.
pub(crate) fn kubeadm_worker_files(n: &NodeBootstrap) -> Result<(), BootstrapError> {
    if n.role != Role::Worker {
        return Ok(());
    }
    match n
        .files
        .iter()
        .enumerate()
        .find(|(_, f)| WORKER_JOIN_OWNS.contains(&f.path.as_str()))
    {
        Some((index, file)) => Err(BootstrapError::FilePath {
            index,
            path: file.path.clone(),
            why: "kubeadm join writes this file on a worker and refuses to start if it exists: \
                  do not pass it to kubeadm workers",
        }),
        None => Ok(()),
    }
}

fn is_token(value: &str) -> bool {
    let id_or_secret =
        |s: &str, len| s.len() == len && s.bytes().all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9'));
    value
        .split_once('.')
        .is_some_and(|(id, secret)| id_or_secret(id, 6) && id_or_secret(secret, 16))
}

fn is_hex(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|c| c.is_ascii_hexdigit())
}

/// A value that is passed to a flag verbatim: no control characters, no leading or
/// trailing space.
fn flag_value_ok(value: &str) -> bool {
    !value.chars().any(char::is_control) && value.trim() == value
}

fn check_oidc(oidc: &Oidc) -> Result<(), BootstrapError> {
    let err = |field, why| BootstrapError::Oidc { field, why };
    let host = oidc.issuer_url.strip_prefix("https://").unwrap_or_default();
    let host = host.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(err(
            "issuer_url",
            "must be an https:// URL with a host, as the API server requires",
        ));
    }
    if !flag_value_ok(&oidc.issuer_url) || oidc.issuer_url.contains(['?', '#', ' ']) {
        return Err(err(
            "issuer_url",
            "must not contain spaces, control characters, a query or a fragment",
        ));
    }
    if oidc.client_id.is_empty() {
        return Err(err(
            "client_id",
            "is empty: give the client ID the issuer puts in the tokens' aud claim",
        ));
    }
    if !flag_value_ok(&oidc.client_id) || is_yaml11_non_string(&oidc.client_id) {
        return Err(err(
            "client_id",
            "must not have control characters or surrounding spaces, nor read as a YAML 1.1 \
             boolean or number",
        ));
    }
    for (field, claim) in [
        ("username_claim", &oidc.username_claim),
        ("groups_claim", &oidc.groups_claim),
    ] {
        let Some(claim) = claim else { continue };
        if claim.is_empty()
            || claim.contains(char::is_whitespace)
            || !flag_value_ok(claim)
            || is_yaml11_non_string(claim)
        {
            return Err(err(
                field,
                "must be a claim name such as email or groups, without spaces; leave it unset \
                 for the API server's default",
            ));
        }
    }
    for (field, prefix) in [
        ("username_prefix", &oidc.username_prefix),
        ("groups_prefix", &oidc.groups_prefix),
    ] {
        let Some(prefix) = prefix else { continue };
        if prefix.is_empty()
            || prefix.contains(char::is_whitespace)
            || !flag_value_ok(prefix)
            || is_yaml11_non_string(prefix)
        {
            return Err(err(
                field,
                "must be a non-empty prefix without spaces, such as oidc: (- for no prefix on \
                 user names)",
            ));
        }
    }
    if let Some(ca) = &oidc.ca_pem {
        let ca = ca.trim();
        if !ca.starts_with("-----BEGIN CERTIFICATE-----")
            || !ca.ends_with("-----END CERTIFICATE-----")
        {
            return Err(err(
                "ca_pem",
                "must be PEM certificates (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)",
            ));
        }
    }
    Ok(())
}

pub(crate) fn phone_home_url(value: &str) -> Result<(), BootstrapError> {
    let err = |why| BootstrapError::PhoneHomeUrl {
        value: value.to_string(),
        why,
    };
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| err("must be an http:// or https:// URL"))?;
    if rest.split('/').next().unwrap_or_default().is_empty() {
        return Err(err("has no host"));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(err("must not contain spaces or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hashes_and_versions() {
        assert!(is_token("abcdef.0123456789abcdef"));
        for bad in [
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef.",
        ] {
            assert!(!is_token(bad), "{bad}");
        }
        assert!(kubernetes_version("1.31.2").is_ok());
        assert!(kubernetes_version("v1.32.0").is_ok());
        for bad in ["1.30.5", "1.31", "1.31.x", "2.0.0", "1.31.2-rc.1", "", "v"] {
            assert!(kubernetes_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints() {
        for ok in [
            "api.demo.acme.shoal.local:443",
            "10.0.0.10:6443",
            "[fd00::10]:6443",
        ] {
            assert!(endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "api.demo:0",
            "api.demo",
            "fd00::10:6443",
            "[10.0.0.1]:6443",
            "Api.Demo:443",
            "api.demo:+443",
            ":443",
            "api..demo:443",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_lists() {
        for ok in ["10.244.0.0/16", "10.244.0.0/16,fd00:10:244::/56"] {
            assert!(cidrs("pod_cidr", ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.244.0.0",
            "10.244.0.0/33",
            "10.244.0/16",
            "a,b,c",
            "fd00::/129",
            "10.0.0.0/",
        ] {
            assert!(cidrs("pod_cidr", bad).is_err(), "{bad}");
        }
    }
}
