//! Reads the server name (SNI) from a TLS ClientHello without terminating TLS.
//!
//! Pure: it looks at the bytes a client sent so far and says whether they are a
//! complete ClientHello, and which name it asks for. The bytes are then passed on
//! unchanged, so the client's certificate reaches the guest.

/// The largest ClientHello the gateway waits for.
pub const MAX_HELLO: usize = 16 * 1024;

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not enough bytes yet.
    Incomplete,
    /// A ClientHello asking for this server name (lower case, no trailing dot).
    Sni(String),
    /// A complete ClientHello without a server name.
    NoSni,
    /// Not a TLS ClientHello, and why.
    NotTls(&'static str),
}

const RECORD_HEADER: usize = 5;
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// Parses the start of a TLS connection.
pub fn parse(buf: &[u8]) -> Hello {
    // The handshake message may span several records: join their payloads.
    let mut handshake = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + RECORD_HEADER) else {
            return Hello::Incomplete;
        };
        if header[0] != HANDSHAKE {
            return Hello::NotTls("the first record is not a TLS handshake");
        }
        if header[1] != 3 {
            return Hello::NotTls("the record's protocol version is not TLS");
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Hello::NotTls("an empty handshake record");
        }
        let Some(payload) = buf.get(at + RECORD_HEADER..at + RECORD_HEADER + len) else {
            return if at + RECORD_HEADER + len > MAX_HELLO {
                Hello::NotTls("the ClientHello is larger than 16 KiB")
            } else {
                Hello::Incomplete
            };
        };
        handshake.extend_from_slice(payload);
        at += RECORD_HEADER + len;
        if handshake.len() >= 4 {
            if handshake[0] != CLIENT_HELLO {
                return Hello::NotTls("the first handshake message is not a ClientHello");
            }
            let body_len = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            if body_len + 4 > MAX_HELLO {
                return Hello::NotTls("the ClientHello is larger than 16 KiB");
            }
            if handshake.len() >= body_len + 4 {
                return client_hello(&handshake[4..4 + body_len]);
            }
        }
        if at >= MAX_HELLO {
            return Hello::NotTls("the ClientHello is larger than 16 KiB");
        }
    }
}

/// A cursor over a ClientHello body; every read checks its bounds.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

const MALFORMED: Hello = Hello::NotTls("a malformed ClientHello");

fn client_hello(body: &[u8]) -> Hello {
    let mut r = Reader { buf: body };
    // legacy_version, random, session id, cipher suites, compression methods.
    if r.take(2 + 32).is_none() || r.vec8().is_none() || r.vec16().is_none() || r.vec8().is_none() {
        return MALFORMED;
    }
    if r.buf.is_empty() {
        return Hello::NoSni;
    }
    let Some(extensions) = r.vec16() else {
        return MALFORMED;
    };
    let mut exts = Reader { buf: extensions };
    while !exts.buf.is_empty() {
        let (Some(kind), Some(data)) = (exts.u16(), exts.vec16()) else {
            return MALFORMED;
        };
        if kind == EXT_SERVER_NAME {
            return server_name(data);
        }
    }
    Hello::NoSni
}

fn server_name(data: &[u8]) -> Hello {
    let mut r = Reader { buf: data };
    let Some(list) = r.vec16() else {
        return MALFORMED;
    };
    let mut names = Reader { buf: list };
    while !names.buf.is_empty() {
        let (Some(kind), Some(name)) = (names.u8(), names.vec16()) else {
            return MALFORMED;
        };
        if kind != NAME_TYPE_HOST {
            continue;
        }
        return match normalize(name) {
            Some(n) => Hello::Sni(n),
            None => Hello::NotTls("the server name is not a DNS name"),
        };
    }
    Hello::NoSni
}

/// A DNS name in lower case without its trailing dot, or `None` if `raw` is not one.
pub fn normalize(raw: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(raw).ok()?;
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
        });
    ok.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello record for `sni` (none if `None`), as a client would send it.
    pub(crate) fn client_hello_record(sni: Option<&str>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut exts = Vec::new();
        // An unrelated extension first (supported_versions).
        exts.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            let mut ext = Vec::new();
            ext.extend_from_slice(&(n + 3).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&n.to_be_bytes());
            ext.extend_from_slice(name.as_bytes());
            exts.extend_from_slice(&0u16.to_be_bytes());
            exts.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            exts.extend_from_slice(&ext);
        }
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![CLIENT_HELLO, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![HANDSHAKE, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn finds_the_server_name() {
        let rec = client_hello_record(Some("API.Demo.acme.example."));
        assert_eq!(parse(&rec), Hello::Sni("api.demo.acme.example".into()));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let rec = client_hello_record(Some("api.demo.acme.example"));
        for n in 0..rec.len() {
            assert_eq!(parse(&rec[..n]), Hello::Incomplete, "prefix of {n} bytes");
        }
    }

    #[test]
    fn a_hello_split_over_two_records_is_joined() {
        let rec = client_hello_record(Some("x.demo.acme.example"));
        let hs = &rec[5..];
        let (a, b) = hs.split_at(10);
        let mut two = vec![HANDSHAKE, 3, 1];
        two.extend_from_slice(&(a.len() as u16).to_be_bytes());
        two.extend_from_slice(a);
        two.extend_from_slice(&[HANDSHAKE, 3, 1]);
        two.extend_from_slice(&(b.len() as u16).to_be_bytes());
        two.extend_from_slice(b);
        assert_eq!(parse(&two), Hello::Sni("x.demo.acme.example".into()));
    }

    #[test]
    fn no_sni_and_garbage_are_told_apart() {
        assert_eq!(parse(&client_hello_record(None)), Hello::NoSni);
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n\r\n"), Hello::NotTls(_)));
        assert!(matches!(parse(&[22, 9, 9, 0, 1, 0]), Hello::NotTls(_)));
        // A declared length beyond 16 KiB is refused without waiting for it.
        assert!(matches!(parse(&[22, 3, 1, 0xff, 0xff]), Hello::NotTls(_)));
        // Truncated inner vectors are malformed, not a panic.
        let mut rec = client_hello_record(Some("a.b"));
        let len = rec.len();
        rec[len - 6] = 0xff;
        assert!(matches!(parse(&rec), Hello::NotTls(_) | Hello::NoSni));
    }

    /// Seeded fuzzing (`SHOAL_FUZZ_SEED`, `SHOAL_FUZZ_CASES`): mutated and random
    /// records never panic, a name found is always normalized, and a parse is
    /// stable: the same bytes with more after them say the same.
    #[test]
    fn fuzz_mutated_hellos() {
        use shoal_testutil::fuzz::{mutate, plan, Rng};
        let seeds: Vec<Vec<u8>> = [Some("api.demo.acme.example"), Some("A.B."), None]
            .into_iter()
            .map(client_hello_record)
            .collect();
        let (seed, cases) = plan("gateway ClientHello", 50_000);
        let mut rng = Rng::new(seed);
        let mut names = 0;
        for _ in 0..cases {
            // A ClientHello's extensions start after the fixed fields (~45 bytes).
            let input = mutate(&mut rng, &seeds, 48);
            let first = parse(&input);
            if let Hello::Sni(name) = &first {
                names += 1;
                assert_eq!(
                    normalize(name.as_bytes()).as_deref(),
                    Some(name.as_str()),
                    "a name as found is normalized: {input:?}"
                );
            }
            if first != Hello::Incomplete {
                let mut more = input.clone();
                more.extend_from_slice(b"trailing application data");
                let second = parse(&more);
                match (&first, &second) {
                    // The reason may name another defect; refused it stays.
                    (Hello::NotTls(_), Hello::NotTls(_)) => {}
                    _ => assert_eq!(second, first, "more bytes change nothing: {input:?}"),
                }
            }
        }
        assert!(names > 0, "some mutated hellos still carry a name");
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize(b"A.B."), Some("a.b".into()));
        assert_eq!(normalize(b"a..b"), None);
        assert_eq!(normalize(b"a b"), None);
        assert_eq!(normalize(&[0xff]), None);
    }
}
