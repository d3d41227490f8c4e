//! A guest cluster's `spec.oidc`: every value becomes a kube-apiserver flag or a
//! file on the control plane, so each is checked here, where the user can still
//! fix it, rather than found broken on a booted node.

use crate::resources::cluster::OidcSpec;
use crate::validate::{FieldCause, FieldErrors};

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// Records a cause for every unusable field of `oidc` (`spec.oidc.*`).
pub fn validate_oidc(oidc: &OidcSpec, errs: &mut FieldErrors) {
    if let Some(why) = issuer_url_problem(&oidc.issuer_url) {
        errs.push(FieldCause::invalid("spec.oidc.issuerUrl", why));
    }
    if oidc.client_id.is_empty() {
        errs.push(FieldCause::required(
            "spec.oidc.clientId",
            "give the client ID that the issuer puts in the tokens' aud claim",
        ));
    } else if !flag_value(&oidc.client_id) {
        errs.push(FieldCause::invalid(
            "spec.oidc.clientId",
            "must not contain control characters or surrounding spaces",
        ));
    }
    for (field, claim) in [
        ("spec.oidc.usernameClaim", &oidc.username_claim),
        ("spec.oidc.groupsClaim", &oidc.groups_claim),
    ] {
        if let Some(claim) = claim {
            if claim.is_empty() || claim.contains(char::is_whitespace) || !flag_value(claim) {
                errs.push(FieldCause::invalid(
                    field,
                    "must be a claim name such as email or groups, without spaces; leave it \
                     unset for the API server's default",
                ));
            }
        }
    }
    for (field, prefix) in [
        ("spec.oidc.usernamePrefix", &oidc.username_prefix),
        ("spec.oidc.groupsPrefix", &oidc.groups_prefix),
    ] {
        if let Some(prefix) = prefix {
            if prefix.is_empty() || prefix.contains(char::is_whitespace) || !flag_value(prefix) {
                errs.push(FieldCause::invalid(
                    field,
                    "must be a non-empty prefix without spaces, such as oidc: (use - for no \
                     prefix on user names)",
                ));
            }
        }
    }
    if let Some(ca) = &oidc.certificate_authority {
        if let Some(why) = pem_problem(ca) {
            errs.push(FieldCause::invalid("spec.oidc.certificateAuthority", why));
        }
    }
}

/// No control characters and no surrounding spaces: the value goes to a flag verbatim.
fn flag_value(value: &str) -> bool {
    !value.chars().any(char::is_control) && value.trim() == value
}

/// What is wrong with an issuer URL, if anything.
fn issuer_url_problem(url: &str) -> Option<String> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Some(format!(
            "{url:?} does not start with https://: the guest API server accepts only https issuers"
        ));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Some(format!(
            "{url:?} has no host: give the issuer's https:// URL"
        ));
    }
    if !flag_value(url) || url.contains(['?', '#', ' ']) {
        return Some(format!(
            "{url:?} must not contain spaces, control characters, a query or a fragment: \
             use the issuer exactly as its tokens carry it in iss"
        ));
    }
    None
}

/// What keeps `text` from being one or more PEM `CERTIFICATE` blocks with base64
/// bodies and nothing but blank space between them, if anything.
fn pem_problem(text: &str) -> Option<String> {
    let hint = "paste the issuer's CA certificate(s) in PEM form (-----BEGIN CERTIFICATE----- …)";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Some(format!("is empty: {hint}, or leave it unset"));
    }
    let mut blocks = 0;
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix(PEM_BEGIN) else {
            return Some(format!(
                "certificate {} does not start with {PEM_BEGIN}: {hint}",
                blocks + 1
            ));
        };
        let Some((body, after)) = body.split_once(PEM_END) else {
            return Some(format!(
                "certificate {} has no {PEM_END}: {hint}",
                blocks + 1
            ));
        };
        let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
        if body.trim().is_empty() || !body.chars().all(|c| base64(c) || c.is_ascii_whitespace()) {
            return Some(format!(
                "certificate {} is not base64 between its BEGIN and END lines: {hint}",
                blocks + 1
            ));
        }
        blocks += 1;
        rest = after.trim_start();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\nZm9v+/==\n-----END CERTIFICATE-----\n";

    fn spec() -> OidcSpec {
        OidcSpec {
            issuer_url: "https://login.example.com/realms/a".into(),
            client_id: "shoal".into(),
            username_claim: Some("email".into()),
            groups_claim: Some("groups".into()),
            username_prefix: Some("-".into()),
            groups_prefix: Some("oidc:".into()),
            certificate_authority: Some(format!("{CA}{CA}")),
        }
    }

    fn fields(oidc: &OidcSpec) -> Vec<String> {
        let mut errs = FieldErrors::default();
        validate_oidc(oidc, &mut errs);
        errs.0.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn accepts_a_complete_spec() {
        assert!(fields(&spec()).is_empty());
        let minimal = OidcSpec {
            issuer_url: "https://10.0.0.1:8443".into(),
            client_id: "k".into(),
            ..OidcSpec::default()
        };
        assert!(fields(&minimal).is_empty());
    }

    #[test]
    fn names_each_bad_field() {
        type Break = fn(&mut OidcSpec);
        let cases: Vec<(Break, &str)> = vec![
            (
                |o| o.issuer_url = "http://login.example.com".into(),
                "spec.oidc.issuerUrl",
            ),
            (
                |o| o.issuer_url = "https:///x".into(),
                "spec.oidc.issuerUrl",
            ),
            (
                |o| o.issuer_url = "https://a.example/?x=1".into(),
                "spec.oidc.issuerUrl",
            ),
            (|o| o.client_id = String::new(), "spec.oidc.clientId"),
            (|o| o.client_id = "a\nb".into(), "spec.oidc.clientId"),
            (
                |o| o.username_claim = Some("e mail".into()),
                "spec.oidc.usernameClaim",
            ),
            (
                |o| o.groups_claim = Some("groups\n".into()),
                "spec.oidc.groupsClaim",
            ),
            (
                |o| o.groups_prefix = Some(String::new()),
                "spec.oidc.groupsPrefix",
            ),
            (
                |o| o.username_prefix = Some("a b".into()),
                "spec.oidc.usernamePrefix",
            ),
            (
                |o| o.certificate_authority = Some("not a pem".into()),
                "spec.oidc.certificateAuthority",
            ),
            (
                |o| o.certificate_authority = Some(format!("{CA}{PEM_BEGIN}\nabc\n")),
                "spec.oidc.certificateAuthority",
            ),
            (
                |o| {
                    o.certificate_authority =
                        Some(format!("{PEM_BEGIN}\n*not base64*\n{PEM_END}\n"))
                },
                "spec.oidc.certificateAuthority",
            ),
        ];
        for (breaks, field) in cases {
            let mut o = spec();
            breaks(&mut o);
            assert_eq!(fields(&o), vec![field.to_owned()], "{o:?}");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let mut errs = FieldErrors::default();
        validate_oidc(
            &OidcSpec {
                issuer_url: "http://x".into(),
                certificate_authority: Some("x".into()),
                ..OidcSpec::default()
            },
            &mut errs,
        );
        let text: Vec<String> = errs.0.iter().map(|c| c.message.clone()).collect();
        assert!(text[0].contains("https"), "{text:?}");
        assert!(text[1].contains("client ID"), "{text:?}");
        assert!(text[2].contains("PEM"), "{text:?}");
    }
}
