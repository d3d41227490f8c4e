//! DNS-1123 names and Kubernetes label syntax.

const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

/// Why a text is not a valid name, label key or label value; each message says
/// what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a DNS-1123 label.
    #[error("{0:?} is not a valid DNS-1123 label: use at most {max} lower-case letters, digits or '-', starting and ending with a letter or digit (e.g. 'my-name')", max = LABEL_MAX)]
    Dns1123Label(String),
    /// Not a DNS-1123 subdomain.
    #[error("{0:?} is not a valid DNS-1123 subdomain: use lower-case letters, digits, '-' and '.', at most {max} characters (e.g. 'example.com')", max = SUBDOMAIN_MAX)]
    Dns1123Subdomain(String),
    /// Not a label value.
    #[error("{0:?} is not a valid label value: use at most {max} letters, digits, '-', '_' or '.', starting and ending with a letter or digit", max = LABEL_MAX)]
    LabelValue(String),
    /// Not a label key.
    #[error("{0:?} is not a valid label key: use an optional DNS subdomain prefix and '/', then at most {max} letters, digits, '-', '_' or '.' (e.g. 'shoal.io/role')", max = LABEL_MAX)]
    LabelKey(String),
}

fn is_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= LABEL_MAX
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Checks a DNS-1123 label: at most 63 lower-case alphanumerics or '-', starting
/// and ending with an alphanumeric. Cluster and organization names are labels,
/// because they become parts of host names.
pub fn validate_dns1123_label(s: &str) -> Result<(), NameError> {
    if is_label(s) {
        Ok(())
    } else {
        Err(NameError::Dns1123Label(s.to_owned()))
    }
}

/// Checks a DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn validate_dns1123_subdomain(s: &str) -> Result<(), NameError> {
    if !s.is_empty() && s.len() <= SUBDOMAIN_MAX && s.split('.').all(is_label) {
        Ok(())
    } else {
        Err(NameError::Dns1123Subdomain(s.to_owned()))
    }
}

fn is_label_value_chars(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() <= LABEL_MAX
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_none_or(|b| b.is_ascii_alphanumeric())
        && bytes.last().is_none_or(|b| b.is_ascii_alphanumeric())
}

/// Checks a label value: empty, or at most 63 alphanumerics, '-', '_' or '.',
/// starting and ending with an alphanumeric.
pub fn validate_label_value(s: &str) -> Result<(), NameError> {
    if is_label_value_chars(s) {
        Ok(())
    } else {
        Err(NameError::LabelValue(s.to_owned()))
    }
}

/// Checks a label key: an optional DNS-1123 subdomain prefix and '/', then a name
/// like a label value (not empty).
pub fn validate_label_key(s: &str) -> Result<(), NameError> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok = prefix.is_none_or(|p| validate_dns1123_subdomain(p).is_ok());
    if prefix_ok && !name.is_empty() && is_label_value_chars(name) {
        Ok(())
    } else {
        Err(NameError::LabelKey(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(validate_dns1123_label("acme").is_ok());
        assert!(validate_dns1123_label("a-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(validate_dns1123_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdomains() {
        assert!(validate_dns1123_subdomain("api.demo.acme.shoal.local").is_ok());
        assert!(validate_dns1123_subdomain("a..b").is_err());
        assert!(validate_dns1123_subdomain(&"a.".repeat(130)).is_err());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(validate_label_key("shoal.io/role").is_ok());
        assert!(validate_label_key("app").is_ok());
        assert!(validate_label_key("Bad_Prefix/x").is_err());
        assert!(validate_label_key("x/").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("v1.2_3").is_ok());
        assert!(validate_label_value("-x").is_err());
    }
}
