//! Where clients reach a guest cluster's API: the host and port of its
//! `status.apiEndpoint`, and whether that host name resolves (when it does not,
//! kubeconfigs go through the gateway, with the host name as `tls-server-name`).

use std::time::Duration;

/// How long a lookup may take before the name counts as not resolving.
const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// The host and port of a cluster's `status.apiEndpoint` (`https://HOST[:PORT]`,
/// 443 by default); `None` for anything else.
pub fn api_host_port(api_endpoint: &str) -> Option<(String, u16)> {
    let authority = api_endpoint.strip_prefix("https://")?.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None => (authority, 443),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Whether `host` resolves to at least one address; a resolver that does not
/// answer within two seconds counts as no record.
pub async fn resolves(host: &str, port: u16) -> bool {
    tokio::time::timeout(LOOKUP_WAIT, tokio::net::lookup_host((host, port)))
        .await
        .is_ok_and(|r| r.is_ok_and(|mut addrs| addrs.next().is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_host_port_of_endpoints() {
        assert_eq!(
            api_host_port("https://api.c.o.shoal.local:443"),
            Some(("api.c.o.shoal.local".into(), 443))
        );
        assert_eq!(
            api_host_port("https://api.example.com/"),
            Some(("api.example.com".into(), 443))
        );
        assert_eq!(api_host_port("http://x:1"), None);
        assert_eq!(api_host_port("https://:443"), None);
        assert_eq!(api_host_port("https://x:port"), None);
    }

    #[tokio::test]
    async fn loopback_resolves_and_an_invalid_name_does_not() {
        assert!(resolves("localhost", 443).await);
        assert!(!resolves("no-such-host.invalid", 443).await);
    }
}
