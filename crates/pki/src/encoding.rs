//! Small helpers shared by the CA and the CSR code: input validation, subject names,
//! PEM decoding, validity times and serial numbers.

use std::time::Duration;

use rand::RngCore;
use time::OffsetDateTime;
use x509_cert::der::asn1::{Any, GeneralizedTime, Ia5String};
use x509_cert::der::oid::db::rfc4519;
use x509_cert::der::Tag;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_parser::error::{PEMError, X509Error};
use x509_parser::nom;
use x509_parser::x509::X509Name;

use crate::{ClientIdentity, PkiError};

/// How far `not_before` is set into the past, so that peers whose clock lags a little
/// already accept a certificate that was just issued.
pub(crate) const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Refuses an empty name or one with control characters.
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), PkiError> {
    let reason = if value.trim().is_empty() {
        "must not be empty or blank"
    } else if value.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(PkiError::InvalidInput {
        field,
        value: value.to_owned(),
        reason,
    })
}

/// Checks a DNS name for a server certificate: LDH labels, optionally a leading `*.`.
pub(crate) fn dns_san(name: &str) -> Result<GeneralName, PkiError> {
    let invalid = |reason| PkiError::InvalidInput {
        field: "DNS name",
        value: name.to_owned(),
        reason,
    };
    let host = name.strip_prefix("*.").unwrap_or(name);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || name.len() > 253 {
        return Err(invalid("must have 1 to 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("every label must have 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "labels may hold only ASCII letters, digits and '-' (a wildcard only as a leading \"*.\")",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("labels must not start or end with '-'"));
        }
    }
    let ia5 = Ia5String::new(name).map_err(|_| invalid("must be ASCII"))?;
    Ok(GeneralName::DnsName(ia5))
}

/// Builds a subject with one RDN per organization followed by the common name, the
/// layout Kubernetes and OpenSSL tools expect (`O=group1, O=group2, CN=user`).
pub(crate) fn subject_name(
    what: &'static str,
    common_name: &str,
    organizations: &[String],
) -> Result<Name, PkiError> {
    check_name("common name", common_name)?;
    let mut rdns = Vec::with_capacity(organizations.len() + 1);
    for org in organizations {
        check_name("organization", org)?;
        rdns.push(utf8_rdn(what, rfc4519::O, org)?);
    }
    rdns.push(utf8_rdn(what, rfc4519::CN, common_name)?);
    Ok(RdnSequence(rdns))
}

fn utf8_rdn(
    what: &'static str,
    oid: x509_cert::der::oid::ObjectIdentifier,
    value: &str,
) -> Result<RelativeDistinguishedName, PkiError> {
    let encode = |source| PkiError::Encode { what, source };
    let value = Any::new(Tag::Utf8String, value.as_bytes()).map_err(encode)?;
    let atv = x509_cert::attr::AttributeTypeAndValue { oid, value };
    RelativeDistinguishedName::try_from(vec![atv]).map_err(encode)
}

/// Reads the identity (CN and every O, in order) out of a parsed subject.
///
/// A subject with several common names is refused: different consumers would pick
/// different ones, and an identity must not be ambiguous.
pub(crate) fn identity_from_name(
    what: &'static str,
    name: &X509Name<'_>,
) -> Result<ClientIdentity, PkiError> {
    let invalid = |reason| PkiError::InvalidSubject {
        what,
        subject: name.to_string(),
        reason,
    };
    let mut common_names = name.iter_common_name();
    let common_name = match (common_names.next(), common_names.next()) {
        (Some(cn), None) => cn
            .as_str()
            .map_err(|_| invalid("has a common name that is not a text string"))?,
        (None, _) => return Err(invalid("has no common name")),
        (Some(_), Some(_)) => return Err(invalid("has more than one common name")),
    };
    if common_name.trim().is_empty() {
        return Err(invalid("has an empty common name"));
    }
    let organizations = name
        .iter_organization()
        .map(|o| {
            o.as_str()
                .map(str::to_owned)
                .map_err(|_| invalid("has an organization that is not a text string"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClientIdentity {
        common_name: common_name.to_owned(),
        organizations,
    })
}

/// Decodes exactly one PEM block whose label is one of `labels`.
pub(crate) fn decode_pem(
    what: &'static str,
    input: &str,
    labels: &[&str],
    expected: &'static str,
) -> Result<(String, Vec<u8>), PkiError> {
    let (rest, pem) = x509_parser::pem::parse_x509_pem(input.as_bytes()).map_err(|e| {
        let source = match e {
            nom::Err::Error(e) | nom::Err::Failure(e) => e,
            nom::Err::Incomplete(_) => PEMError::IncompletePEM,
        };
        PkiError::Pem { what, source }
    })?;
    if !labels.contains(&pem.label.as_str()) {
        return Err(PkiError::PemLabel {
            what,
            found: pem.label,
            expected,
        });
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(PkiError::TrailingData { what });
    }
    Ok((pem.label, pem.contents))
}

/// Unwraps a nom error from x509-parser into the X.509 error it carries.
pub(crate) fn x509_error(e: nom::Err<X509Error>) -> X509Error {
    match e {
        nom::Err::Error(e) | nom::Err::Failure(e) => e,
        nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
    }
}

/// Converts a time to X.509 form; the builder picks UTCTime for years before 2050.
fn x509_time(what: &'static str, t: OffsetDateTime) -> Result<Time, PkiError> {
    let encode = |source| PkiError::Encode { what, source };
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| encode(x509_cert::der::ErrorKind::DateTime.into()))?;
    let time = GeneralizedTime::from_unix_duration(Duration::from_secs(secs)).map_err(encode)?;
    Ok(Time::GeneralTime(time))
}

/// Validity from `not_before` to `not_after`, both whole seconds.
pub(crate) fn validity(
    what: &'static str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Validity, PkiError> {
    Ok(Validity {
        not_before: x509_time(what, not_before)?,
        not_after: x509_time(what, not_after)?,
    })
}

/// `now + ttl` in whole seconds, refusing a zero or unrepresentable lifetime.
pub(crate) fn expiry(now: OffsetDateTime, ttl: Duration) -> Result<OffsetDateTime, PkiError> {
    let invalid = |reason| PkiError::InvalidTtl { ttl, reason };
    if ttl.as_secs() == 0 {
        return Err(invalid("must be at least one second"));
    }
    let ttl_secs = i64::try_from(ttl.as_secs()).map_err(|_| invalid("is far too long"))?;
    now.unix_timestamp()
        .checked_add(ttl_secs)
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or_else(|| invalid("is far too long"))
}

/// A random positive 128-bit serial number and its lowercase hex form.
pub(crate) fn random_serial(what: &'static str) -> Result<(SerialNumber, String), PkiError> {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // Clear the sign bit and set the next one: positive, never zero, always 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    let serial = SerialNumber::new(&bytes).map_err(|source| PkiError::Encode { what, source })?;
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok((serial, hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for ok in ["localhost", "api.shoal.example", "*.apps.example", "a-b.c1"] {
            assert!(dns_san(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "*.",
            "a..b",
            "-a.b",
            "a_b.c",
            "a b",
            "ü.example",
            "*.*.a",
        ] {
            assert!(
                matches!(dns_san(bad), Err(PkiError::InvalidInput { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("common name", "system:masters").is_ok());
        assert!(check_name("common name", " ").is_err());
        assert!(check_name("organization", "a\nb").is_err());
    }

    #[test]
    fn zero_ttl_is_refused() {
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            expiry(now, Duration::ZERO),
            Err(PkiError::InvalidTtl { .. })
        ));
        assert!(expiry(now, Duration::from_secs(u64::MAX)).is_err());
        assert_eq!(
            expiry(now, Duration::from_secs(60)).ok(),
            OffsetDateTime::from_unix_timestamp(now.unix_timestamp() + 60).ok()
        );
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let (a, a_hex) = random_serial("test").expect("serial");
        let (b, _) = random_serial("test").expect("serial");
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 16);
        assert_eq!(a_hex.len(), 32);
        assert!(a.as_bytes()[0] & 0x80 == 0);
    }
}
