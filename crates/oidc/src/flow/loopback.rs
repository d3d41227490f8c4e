//! The loopback redirect listener (RFC 8252 section 7.3): the browser comes
//! back to `http://127.0.0.1:<port>/callback` with the code, and gets a short
//! page saying it may be closed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::FlowError;

/// The path the issuer redirects to.
pub const CALLBACK_PATH: &str = "/callback";
/// The longest request head read from the browser.
const MAX_HEAD: usize = 16 * 1024;

const DONE_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Shoal</title></head>\
<body><h1>Signed in to Shoal</h1><p>You may close this window and return to the terminal.</p></body></html>";

/// What one request to the listener was.
#[derive(Debug)]
pub enum Callback {
    /// Not the redirect (a favicon, say): answered with 404, keep waiting.
    Other,
    /// The redirect with this code.
    Code(String),
    /// The redirect, but with an error or the wrong state.
    Failed(FlowError),
}

/// Reads a request target (`/callback?code=...&state=...`) against the state
/// that was sent.
pub fn parse_callback(target: &str, expected_state: &str) -> Callback {
    let Ok(url) = reqwest::Url::parse(&format!("http://127.0.0.1{target}")) else {
        return Callback::Other;
    };
    if url.path() != CALLBACK_PATH {
        return Callback::Other;
    }
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if param("state").as_deref() != Some(expected_state) {
        return Callback::Failed(FlowError::StateMismatch);
    }
    if let Some(error) = param("error") {
        return Callback::Failed(FlowError::Denied {
            error,
            description: param("error_description"),
        });
    }
    match param("code") {
        Some(code) if !code.is_empty() => Callback::Code(code),
        _ => Callback::Failed(FlowError::Denied {
            error: "no code".into(),
            description: Some("the redirect carried neither a code nor an error".into()),
        }),
    }
}

/// A listener on 127.0.0.1 on a port the OS picks.
#[derive(Debug)]
pub struct Loopback {
    listener: TcpListener,
    redirect_uri: String,
}

impl Loopback {
    /// Opens the listener.
    pub async fn bind() -> Result<Self, FlowError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(FlowError::Listen)?;
        let port = listener.local_addr().map_err(FlowError::Listen)?.port();
        Ok(Self {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}{CALLBACK_PATH}"),
        })
    }

    /// The redirect URI to register in the authorization request.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the redirect carrying `state`; returns its code.
    pub async fn wait(&self, state: &str, timeout: Duration) -> Result<String, FlowError> {
        let work = async {
            loop {
                let Ok((stream, _)) = self.listener.accept().await else {
                    continue;
                };
                match serve_one(stream, state).await {
                    Some(Callback::Code(code)) => return Ok(code),
                    Some(Callback::Failed(e)) => return Err(e),
                    Some(Callback::Other) | None => {}
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| FlowError::CallbackTimeout {
                seconds: timeout.as_secs(),
            })?
    }
}

/// Reads one request head and answers it; `None` when the connection broke
/// before a request line arrived.
async fn serve_one(mut stream: TcpStream, state: &str) -> Option<Callback> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()??;
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next()?.split_whitespace();
    let (method, target) = (words.next()?, words.next()?);
    let outcome = if method == "GET" {
        parse_callback(target, state)
    } else {
        Callback::Other
    };
    let (status, body) = match &outcome {
        Callback::Code(_) => ("200 OK", DONE_PAGE.to_owned()),
        Callback::Failed(e) => (
            "400 Bad Request",
            format!(
                "<!doctype html><html><body><h1>Sign-in failed</h1><p>{}</p></body></html>",
                html_escape(&e.to_string())
            ),
        ),
        Callback::Other => ("404 Not Found", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    );
    // The browser may already be gone; the outcome stands either way.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    Some(outcome)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_comes_back_only_with_the_right_state() {
        assert!(matches!(
            parse_callback("/callback?code=abc&state=s1", "s1"),
            Callback::Code(c) if c == "abc"
        ));
        assert!(matches!(
            parse_callback("/callback?code=abc&state=other", "s1"),
            Callback::Failed(FlowError::StateMismatch)
        ));
        assert!(matches!(
            parse_callback("/callback?code=abc", "s1"),
            Callback::Failed(FlowError::StateMismatch)
        ));
        assert!(matches!(
            parse_callback("/favicon.ico", "s1"),
            Callback::Other
        ));
        assert!(matches!(
            parse_callback("/callback?error=access_denied&error_description=no%20way&state=s1", "s1"),
            Callback::Failed(FlowError::Denied { error, description })
                if error == "access_denied" && description.as_deref() == Some("no way")
        ));
    }

    #[tokio::test]
    async fn a_real_browser_request_gets_the_page_and_yields_the_code() {
        let lb = Loopback::bind().await.expect("listens");
        let uri = lb.redirect_uri().to_owned();
        assert!(uri.starts_with("http://127.0.0.1:") && uri.ends_with("/callback"));
        let browser = tokio::spawn(async move {
            let miss = reqwest::get(uri.replace("/callback", "/favicon.ico"))
                .await
                .expect("answered");
            assert_eq!(miss.status(), 404);
            let resp = reqwest::get(format!("{uri}?code=c0de&state=st"))
                .await
                .expect("answered");
            (resp.status(), resp.text().await.expect("a body"))
        });
        let code = lb
            .wait("st", Duration::from_secs(10))
            .await
            .expect("a code");
        assert_eq!(code, "c0de");
        let (status, body) = browser.await.expect("the browser task");
        assert_eq!(status, 200);
        assert!(body.contains("close this window"), "{body}");
    }

    #[tokio::test]
    async fn nobody_coming_back_times_out() {
        let lb = Loopback::bind().await.expect("listens");
        let err = lb
            .wait("st", Duration::from_millis(200))
            .await
            .expect_err("times out");
        assert!(matches!(err, FlowError::CallbackTimeout { .. }), "{err:?}");
        assert!(err.to_string().contains("--device"));
    }
}
