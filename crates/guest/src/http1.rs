//! The bit of HTTP/1.1 the stand-in services speak: one bounded request per
//! connection (head parsed with `httparse`, a body read and discarded), one response
//! with `Content-Length` and `Connection: close`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::say;

/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest request body accepted (it is read and discarded).
pub const MAX_BODY: u64 = 64 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 64;
/// How long a client has, from connecting, to send its request (and over TLS, to
/// finish the handshake).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write of the response may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, after the response, what the client still sends is drained.
const LINGER: Duration = Duration::from_secs(2);
/// How much of it is drained at most.
const LINGER_BYTES: u64 = 1 << 20;

/// What a stand-in answers.
pub trait Responder {
    /// The response to a well-formed request; `client_cert` is the DER certificate
    /// the client authenticated with over TLS, if any.
    fn respond(&self, req: &Request, client_cert: Option<&[u8]>) -> Response;

    /// The response to a request that could not be read, with `status` and why.
    fn refuse(&self, status: Status, why: &str) -> Response;
}

/// A TCP stream whose reads share one deadline (a client that trickles bytes cannot
/// hold a connection longer than that) and whose writes time out.
pub struct DeadlineStream {
    sock: TcpStream,
    deadline: Instant,
}

impl DeadlineStream {
    /// Wraps `sock`: every read must finish within `read_for` from now, every write
    /// within `write_timeout`.
    pub fn new(sock: TcpStream, read_for: Duration, write_timeout: Duration) -> io::Result<Self> {
        sock.set_write_timeout(Some(write_timeout))?;
        Ok(Self {
            sock,
            deadline: Instant::now() + read_for,
        })
    }

    /// Closes the connection after a response: shuts down the sending side, then
    /// reads and discards what the client still sends (for up to 2 s and 1 MiB), so
    /// that unread data (a refused oversized request, say) does not make the kernel
    /// reset the connection before the client has read the response.
    pub fn linger(mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
        self.deadline = Instant::now() + LINGER;
        let _ = io::copy(&mut (&mut self).take(LINGER_BYTES), &mut io::sink());
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "the request took too long");
        if left.is_zero() {
            return Err(timed_out());
        }
        self.sock.set_read_timeout(Some(left))?;
        // A socket read timeout shows up as WouldBlock on Linux.
        self.sock.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
            _ => e,
        })
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// The peer's address for log lines.
pub(crate) fn peer_name(sock: &TcpStream) -> String {
    sock.peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string())
}

/// Serves one plain-HTTP connection: one request, one response. Failures are logged
/// and end only this connection.
pub fn serve_plain<R: Responder>(service: &'static str, sock: TcpStream, responder: &R) {
    let peer = peer_name(&sock);
    match DeadlineStream::new(sock, READ_TIMEOUT, WRITE_TIMEOUT) {
        Ok(mut io) => {
            if exchange(service, &peer, &mut io, responder, |_| None) {
                io.linger();
            }
        }
        Err(e) => say!("{service}: {peer}: setting timeouts: {e}"),
    }
}

/// Reads one request from `stream` and writes its response (or the refusal of a bad
/// request); `client_cert` gives the client's certificate once the request is read.
/// Returns whether a response was written; failures are logged.
pub(crate) fn exchange<S: Read + Write, R: Responder>(
    service: &'static str,
    peer: &str,
    stream: &mut S,
    responder: &R,
    client_cert: impl FnOnce(&S) -> Option<Vec<u8>>,
) -> bool {
    let (method, response) = match read_request(stream) {
        Ok(req) => {
            let cert = client_cert(stream);
            let response = responder.respond(&req, cert.as_deref());
            (req.method, response)
        }
        Err(e) => match e.status() {
            Some(status) => ("GET".to_string(), responder.refuse(status, &e.to_string())),
            None => {
                if !matches!(e, RequestError::Closed) {
                    say!("{service}: {peer}: {e}");
                }
                return false;
            }
        },
    };
    match response.write_to(stream, &method) {
        Ok(()) => true,
        Err(e) => {
            say!("{service}: {peer}: writing the response: {e}");
            false
        }
    }
}

/// A request's method and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The target's path, without the query.
    pub path: String,
}

/// Why a request could not be read. [`RequestError::status`] says which answer it
/// gets; `None` means the connection is closed without one.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The client closed the connection before sending a request.
    #[error("the client closed the connection without a request")]
    Closed,
    /// Reading failed (a timeout, a reset or, over TLS, a failed handshake).
    #[error("reading the request: {0}")]
    Io(#[source] io::Error),
    /// The request head is not HTTP/1.x.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The head is longer than [`MAX_HEAD`] or has too many headers.
    #[error(
        "the request head is larger than {MAX_HEAD} bytes or has more than {MAX_HEADERS} headers"
    )]
    HeadTooLarge,
    /// The body is longer than [`MAX_BODY`].
    #[error("the request body of {0} bytes is larger than {MAX_BODY} bytes")]
    BodyTooLarge(u64),
    /// A chunked body: only `Content-Length` bodies are supported.
    #[error("chunked request bodies are not supported: send Content-Length")]
    Chunked,
}

impl RequestError {
    /// The response status for this error, or `None` when nobody can be answered.
    pub fn status(&self) -> Option<Status> {
        match self {
            RequestError::Closed | RequestError::Io(_) => None,
            RequestError::Malformed(_) => Some(Status::BadRequest),
            RequestError::HeadTooLarge => Some(Status::HeaderFieldsTooLarge),
            RequestError::BodyTooLarge(_) => Some(Status::PayloadTooLarge),
            RequestError::Chunked => Some(Status::LengthRequired),
        }
    }
}

/// Reads one request: its head, then its body (discarded, so that closing the
/// connection afterwards does not reset it under the client).
pub fn read_request<R: Read>(r: &mut R) -> Result<Request, RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            // Over TLS, a client that leaves before sending anything.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && buf.is_empty() => {
                return Err(RequestError::Closed);
            }
            Err(e) => return Err(RequestError::Io(e)),
        };
        if n == 0 {
            return Err(if buf.is_empty() {
                RequestError::Closed
            } else {
                RequestError::Malformed("the connection ended inside the request head".into())
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let body = body_length(req.headers)?;
                let request = Request {
                    method: req.method.unwrap_or_default().to_string(),
                    path: req
                        .path
                        .unwrap_or_default()
                        .split('?')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                };
                let have = (buf.len() - head_len) as u64;
                if have < body {
                    io::copy(&mut r.take(body - have), &mut io::sink())
                        .map_err(RequestError::Io)?;
                }
                return Ok(request);
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(RequestError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadTooLarge),
            Err(e) => return Err(RequestError::Malformed(e.to_string())),
        }
        if buf.len() > MAX_HEAD {
            return Err(RequestError::HeadTooLarge);
        }
    }
}

/// The body's length from `Content-Length`; refuses chunked and oversized bodies.
fn body_length(headers: &[httparse::Header<'_>]) -> Result<u64, RequestError> {
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::Chunked);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| RequestError::Malformed("Content-Length is not a number".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(RequestError::Malformed(
                    "conflicting Content-Length headers".into(),
                ));
            }
            length = Some(n);
        }
    }
    match length.unwrap_or(0) {
        n if n > MAX_BODY => Err(RequestError::BodyTooLarge(n)),
        n => Ok(n),
    }
}

/// The statuses the stand-ins answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 400.
    BadRequest,
    /// 401.
    Unauthorized,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 411.
    LengthRequired,
    /// 413.
    PayloadTooLarge,
    /// 431.
    HeaderFieldsTooLarge,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::LengthRequired => 411,
            Status::PayloadTooLarge => 413,
            Status::HeaderFieldsTooLarge => 431,
        }
    }

    /// The HTTP reason phrase.
    pub fn phrase(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::LengthRequired => "Length Required",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
        }
    }

    /// The Kubernetes `Status` reason (`metav1.StatusReason`).
    pub fn reason(self) -> &'static str {
        match self {
            // Kubernetes' StatusReasonUnknown; a success carries no Status object.
            Status::Ok => "",
            Status::BadRequest => "BadRequest",
            Status::Unauthorized => "Unauthorized",
            Status::NotFound => "NotFound",
            Status::MethodNotAllowed => "MethodNotAllowed",
            Status::LengthRequired => "LengthRequired",
            Status::PayloadTooLarge => "RequestEntityTooLarge",
            Status::HeaderFieldsTooLarge => "RequestHeaderFieldsTooLarge",
        }
    }
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: Status,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: Status, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    /// An `application/json` response.
    pub fn json(status: Status, body: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }

    /// Writes the response; `HEAD` requests get the head only.
    pub fn write_to<W: Write>(&self, w: &mut W, method: &str) -> io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status.code(),
            self.status.phrase(),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if method != "HEAD" {
            out.extend_from_slice(&self.body);
        }
        w.write_all(&out)?;
        w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Request, RequestError> {
        read_request(&mut io::Cursor::new(bytes.to_vec()))
    }

    #[test]
    fn requests_are_read_with_their_body_and_without_the_query() {
        let req = read(b"GET /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n").expect("valid");
        assert_eq!(
            req,
            Request {
                method: "GET".into(),
                path: "/readyz".into()
            }
        );
        // The body is consumed: nothing of it is left to be reset by the close.
        let mut cursor =
            io::Cursor::new(b"POST /api HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec());
        assert_eq!(read_request(&mut cursor).expect("valid").method, "POST");
        assert_eq!(cursor.position(), cursor.get_ref().len() as u64);
    }

    #[test]
    fn bad_requests_get_a_status() {
        let status = |bytes: &[u8]| read(bytes).expect_err("refused").status();
        assert_eq!(status(b""), None);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost"), Some(Status::BadRequest));
        assert_eq!(
            status(b"\x16\x03\x01 not http\r\n\r\n"),
            Some(Status::BadRequest)
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Some(Status::BadRequest)
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Some(Status::BadRequest)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Status::LengthRequired)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            Some(Status::PayloadTooLarge)
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(long.as_bytes()), Some(Status::HeaderFieldsTooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(status(many.as_bytes()), Some(Status::HeaderFieldsTooLarge));
    }

    #[test]
    fn a_client_that_trickles_its_request_is_cut_off_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        let trickle = std::thread::spawn(move || {
            // One byte every 50 ms: each read is quick, the whole request is not.
            for b in b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" {
                if client.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let mut io = DeadlineStream::new(server, Duration::from_millis(300), WRITE_TIMEOUT)
            .expect("timeouts");
        let err = read_request(&mut io).expect_err("too slow");
        assert!(
            matches!(&err, RequestError::Io(e) if e.kind() == io::ErrorKind::TimedOut),
            "{err}"
        );
        assert_eq!(err.status(), None);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(io);
        trickle.join().expect("client thread");
    }

    #[test]
    fn responses_have_a_length_and_close() {
        let mut out = Vec::new();
        Response::text(Status::Ok, "ok")
            .write_to(&mut out, "GET")
            .expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        );
        let mut head = Vec::new();
        Response::text(Status::Ok, "ok")
            .write_to(&mut head, "HEAD")
            .expect("write");
        assert!(head.ends_with(b"Content-Length: 2\r\nConnection: close\r\n\r\n"));
    }
}
