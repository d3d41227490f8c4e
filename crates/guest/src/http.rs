//! Plain-HTTP calls to the NoCloud seed: GETs of the seed files and the phone-home
//! POST, each retried once a second until a deadline.
//!
//! Only `http://` with IP-literal hosts is expected: the binary is statically linked
//! and has no name service.

use std::time::{Duration, Instant};

use crate::cloudconfig::PostFields;
use crate::say;

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between attempts.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// One failed attempt.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The server answered with a status that is not success.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The request failed before a status arrived.
    #[error(transparent)]
    Http(#[from] ureq::Error),
}

/// A request that never succeeded before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: no success within {waited:?} ({attempts} attempts), last: {last}")]
pub struct GaveUp {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The URL.
    pub url: String,
    /// How long it was tried.
    pub waited: Duration,
    /// How many attempts were made.
    pub attempts: u32,
    /// The last attempt's failure.
    #[source]
    pub last: AttemptError,
}

/// The HTTP client: no proxy, statuses returned rather than raised, short timeouts.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .proxy(None)
        .user_agent(concat!("shoal-guest/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Tries `attempt` every [`RETRY_PAUSE`] until it succeeds or `deadline` has passed,
/// logging the first failure and then one in ten.
fn retry<T>(
    method: &'static str,
    url: &str,
    deadline: Duration,
    mut attempt: impl FnMut() -> Result<T, AttemptError>,
) -> Result<T, GaveUp> {
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let err = match attempt() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() + RETRY_PAUSE > deadline {
            return Err(GaveUp {
                method,
                url: url.to_string(),
                waited: start.elapsed(),
                attempts,
                last: err,
            });
        }
        if attempts % 10 == 1 {
            say!("{method} {url}: {err}; retrying");
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// GETs `url` until it answers 2xx; with `missing_ok`, a 404 gives `None` at once.
pub fn fetch(
    agent: &ureq::Agent,
    url: &str,
    deadline: Duration,
    missing_ok: bool,
) -> Result<Option<String>, GaveUp> {
    retry("GET", url, deadline, || {
        let mut resp = agent.get(url).call()?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(Some(resp.body_mut().read_to_string()?)),
            404 if missing_ok => Ok(None),
            _ => Err(AttemptError::Status(status)),
        }
    })
}

/// POSTs `fields` as `application/x-www-form-urlencoded` until the answer is 2xx;
/// returns that status.
pub fn post_form(
    agent: &ureq::Agent,
    url: &str,
    fields: &[(&str, String)],
    deadline: Duration,
) -> Result<u16, GaveUp> {
    retry("POST", url, deadline, || {
        let resp = agent
            .post(url)
            .send_form(fields.iter().map(|(k, v)| (*k, v.as_str())))?;
        match resp.status().as_u16() {
            s @ 200..=299 => Ok(s),
            s => Err(AttemptError::Status(s)),
        }
    })
}

/// The phone-home URL: the configured one with `$INSTANCE_ID` replaced, or the
/// seed's `phone-home`.
pub fn phone_home_url(configured: Option<&str>, seed_default: &str, instance_id: &str) -> String {
    match configured {
        Some(url) => url.replace("$INSTANCE_ID", instance_id),
        None => seed_default.to_string(),
    }
}

/// The phone-home form fields, in cloud-init's names. The guest has no SSH host
/// keys, so `pub_key_*` names are skipped; unknown names are returned separately.
pub fn phone_home_fields(
    post: &PostFields,
    instance_id: &str,
    hostname: &str,
    fqdn: &str,
) -> (Vec<(&'static str, String)>, Vec<String>) {
    let all = [
        ("instance_id", instance_id),
        ("hostname", hostname),
        ("fqdn", fqdn),
    ];
    match post {
        PostFields::All => (
            all.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            vec![],
        ),
        PostFields::Only(names) => {
            let mut fields = Vec::new();
            let mut skipped = Vec::new();
            for name in names {
                match all.iter().find(|(k, _)| k == name) {
                    Some((k, v)) => fields.push((*k, v.to_string())),
                    None => skipped.push(name.clone()),
                }
            }
            (fields, skipped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    #[test]
    fn phone_home_url_substitutes_the_instance_id() {
        assert_eq!(
            phone_home_url(
                Some("http://10.0.0.1/$INSTANCE_ID/ph"),
                "http://x/",
                "iid-1"
            ),
            "http://10.0.0.1/iid-1/ph"
        );
        assert_eq!(
            phone_home_url(None, "http://10.0.0.1/m1/phone-home", "iid-1"),
            "http://10.0.0.1/m1/phone-home"
        );
    }

    #[test]
    fn phone_home_fields_follow_post() {
        let (f, skipped) = phone_home_fields(&PostFields::All, "i", "h", "h.example");
        assert_eq!(
            f,
            vec![
                ("instance_id", "i".to_string()),
                ("hostname", "h".to_string()),
                ("fqdn", "h.example".to_string()),
            ]
        );
        assert!(skipped.is_empty());
        let only = PostFields::Only(vec!["hostname".into(), "pub_key_rsa".into()]);
        let (f, skipped) = phone_home_fields(&only, "i", "h", "h");
        assert_eq!(f, vec![("hostname", "h".to_string())]);
        assert_eq!(skipped, vec!["pub_key_rsa"]);
    }

    /// A one-shot HTTP server on loopback answering each connection in turn with the
    /// given statuses; returns its address and a handle yielding the requests seen.
    fn serve(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for status in statuses {
                let (s, _) = l.accept().expect("accept");
                let mut r = BufReader::new(s);
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).expect("read");
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().expect("length");
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).expect("body");
                head.push_str(&String::from_utf8_lossy(&body));
                seen.push(head);
                let mut s = r.into_inner();
                write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                )
                .expect("write");
            }
            seen
        });
        (format!("http://{addr}/vm0/"), h)
    }

    #[test]
    fn fetch_retries_until_success_and_404_can_mean_missing() {
        let (base, h) = serve(vec![503, 200, 404]);
        let a = agent(REQUEST_TIMEOUT);
        let url = format!("{base}meta-data");
        let got = fetch(&a, &url, Duration::from_secs(10), false).expect("fetched");
        assert_eq!(got.as_deref(), Some("ok"));
        let got = fetch(&a, &url, Duration::from_secs(10), true).expect("fetched");
        assert_eq!(got, None);
        let seen = h.join().expect("server");
        assert!(
            seen[0].starts_with("GET /vm0/meta-data HTTP/1.1"),
            "{seen:?}"
        );
    }

    #[test]
    fn fetch_gives_up_at_the_deadline() {
        let (base, h) = serve(vec![500]);
        let err = fetch(&agent(REQUEST_TIMEOUT), &base, Duration::ZERO, false)
            .expect_err("500 is not success");
        assert!(matches!(err.last, AttemptError::Status(500)), "{err}");
        assert_eq!(err.attempts, 1);
        h.join().expect("server");
    }

    #[test]
    fn phone_home_posts_a_form() {
        let (base, h) = serve(vec![200]);
        let fields = [
            ("instance_id", "iid 1".to_string()),
            ("hostname", "vm0".to_string()),
        ];
        let url = format!("{base}phone-home");
        let status = post_form(
            &agent(REQUEST_TIMEOUT),
            &url,
            &fields,
            Duration::from_secs(5),
        )
        .expect("posted");
        assert_eq!(status, 200);
        let seen = h.join().expect("server");
        let req = &seen[0];
        assert!(req.starts_with("POST /vm0/phone-home HTTP/1.1"), "{req}");
        assert!(
            req.to_ascii_lowercase()
                .contains("content-type: application/x-www-form-urlencoded"),
            "{req}"
        );
        assert!(
            req.ends_with("\r\n\r\ninstance_id=iid+1&hostname=vm0"),
            "{req}"
        );
    }
}
