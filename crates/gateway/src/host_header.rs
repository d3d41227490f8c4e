//! Reads the `Host` header of a plain HTTP/1.x request, for ingress on port 80.

use crate::hello::normalize;

/// The largest request head the gateway waits for.
pub const MAX_HEAD: usize = 8 * 1024;

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Not enough bytes yet.
    Incomplete,
    /// A request for this host (lower case, port removed).
    Host(String),
    /// A complete head without a usable `Host` header.
    NoHost,
    /// Not an HTTP/1.x request, and why.
    NotHttp(&'static str),
}

/// Parses the start of an HTTP connection.
pub fn parse(buf: &[u8]) -> Head {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let Some(end) = end else {
        if buf.len() >= MAX_HEAD {
            return Head::NotHttp("the request head is larger than 8 KiB");
        }
        if let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") {
            if !request_line_ok(&buf[..line_end]) {
                return Head::NotHttp("not an HTTP/1.x request line");
            }
        }
        return Head::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Head::NotHttp("the request head is not text");
    };
    let mut lines = head.split("\r\n");
    if !lines.next().is_some_and(|l| request_line_ok(l.as_bytes())) {
        return Head::NotHttp("not an HTTP/1.x request line");
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Head::NotHttp("a header line without a colon");
        };
        if name.trim().eq_ignore_ascii_case("host") {
            let value = value.trim();
            let host = match value.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => value,
            };
            return match normalize(host.as_bytes()) {
                Some(h) => Head::Host(h),
                None => Head::NoHost,
            };
        }
    }
    Head::NoHost
}

fn request_line_ok(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && !target.is_empty()
        && (version == "HTTP/1.1" || version == "HTTP/1.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_host_without_its_port() {
        let req = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHOST: Shop.Demo.acme.example:80\r\n\r\n";
        assert_eq!(parse(req), Head::Host("shop.demo.acme.example".into()));
    }

    #[test]
    fn incomplete_missing_and_garbage() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a"), Head::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Head::NoHost);
        assert!(matches!(
            parse(b"\x16\x03\x01\x00\x05hello\r\n"),
            Head::NotHttp(_)
        ));
        assert!(matches!(parse(b"GET / SPDY/3\r\n\r\n"), Head::NotHttp(_)));
        assert!(matches!(parse(&vec![b'a'; MAX_HEAD]), Head::NotHttp(_)));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), Head::NoHost);
    }

    /// Seeded fuzzing: mutated and random heads never panic, a host found is
    /// always normalized, and a decided head stays decided with more bytes.
    #[test]
    fn fuzz_mutated_heads() {
        use shoal_testutil::fuzz::{mutate, plan, Rng};
        let seeds: Vec<Vec<u8>> = [
            &b"GET / HTTP/1.1\r\nHost: Shop.A.example:8080\r\nAccept: */*\r\n\r\n"[..],
            b"POST /x HTTP/1.0\r\nhost: a.b\r\nContent-Length: 3\r\n\r\nabc",
            b"GET / HTTP/1.1\r\n\r\n",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        let (seed, cases) = plan("gateway HTTP head", 50_000);
        let mut rng = Rng::new(seed);
        let mut hosts = 0;
        for _ in 0..cases {
            let input = mutate(&mut rng, &seeds, 16);
            let first = parse(&input);
            if let Head::Host(host) = &first {
                hosts += 1;
                assert_eq!(
                    crate::hello::normalize(host.as_bytes()).as_deref(),
                    Some(host.as_str()),
                    "{input:?}"
                );
            }
            if !matches!(first, Head::Incomplete) {
                let mut more = input.clone();
                more.extend_from_slice(b"\r\n\r\nmore");
                let second = parse(&more);
                match (&first, &second) {
                    // The reason may name another defect; refused it stays.
                    (Head::NotHttp(_), Head::NotHttp(_)) => {}
                    _ => assert_eq!(second, first, "more bytes change nothing: {input:?}"),
                }
            }
        }
        assert!(hosts > 0, "some mutated heads still name a host");
    }
}
