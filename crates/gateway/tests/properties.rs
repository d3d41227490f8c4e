//! Property tests of the gateway's two pure parsers, the TLS ClientHello reader
//! ([`hello`]) and the HTTP head reader ([`host_header`]): any bytes give a verdict
//! without a panic, a verdict never changes when more bytes arrive (so neither
//! parser looks past what it was given), and a request built here for a generated
//! name yields exactly that name, however its bytes are split.

use proptest::prelude::*;
use shoal_gateway::hello::{self, Hello, MAX_HELLO};
use shoal_gateway::host_header::{self, Head, MAX_HEAD};

/// A DNS name as a client may spell it (mixed case, optional trailing dot), and
/// the form the gateway routes by.
#[derive(Debug, Clone)]
struct Name {
    spelled: String,
    routed: String,
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9][a-zA-Z0-9_-]{0,14}",
        1 => "[a-z0-9-]{63}",
        1 => Just("*".to_string()),
    ]
}

fn dns_name() -> impl Strategy<Value = Name> {
    (prop::collection::vec(label(), 1..6), any::<bool>())
        .prop_filter("at most 253 bytes", |(labels, _)| {
            labels.join(".").len() <= 253
        })
        .prop_map(|(labels, dot)| {
            let name = labels.join(".");
            Name {
                spelled: if dot {
                    format!("{name}.")
                } else {
                    name.clone()
                },
                routed: name.to_ascii_lowercase(),
            }
        })
}

/// The parts of a ClientHello that do not carry the name, generated freely.
#[derive(Debug, Clone)]
struct HelloShape {
    session_id: Vec<u8>,
    cipher_suites: Vec<u16>,
    /// Extensions (type, data) before and after the server name; never type 0.
    before: Vec<(u16, Vec<u8>)>,
    after: Vec<(u16, Vec<u8>)>,
    /// Entries of the server name list before the host name, of other name types.
    other_names: Vec<(u8, Vec<u8>)>,
}

fn extension() -> impl Strategy<Value = (u16, Vec<u8>)> {
    (1u16.., prop::collection::vec(any::<u8>(), 0..40))
}

fn shape() -> impl Strategy<Value = HelloShape> {
    (
        prop::collection::vec(any::<u8>(), 0..=32),
        prop::collection::vec(any::<u16>(), 1..8),
        prop::collection::vec(extension(), 0..4),
        prop::collection::vec(extension(), 0..4),
        prop::collection::vec((1u8.., prop::collection::vec(any::<u8>(), 0..20)), 0..3),
    )
        .prop_map(
            |(session_id, cipher_suites, before, after, other_names)| HelloShape {
                session_id,
                cipher_suites,
                before,
                after,
                other_names,
            },
        )
}

fn u16_len(n: usize) -> [u8; 2] {
    u16::try_from(n)
        .expect("test vectors are short")
        .to_be_bytes()
}

fn vec16(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u16_len(bytes.len()));
    out.extend_from_slice(bytes);
}

/// The handshake message (type 1, 24-bit length, body) of a ClientHello.
fn client_hello(shape: &HelloShape, sni: Option<&str>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(u8::try_from(shape.session_id.len()).expect("at most 32"));
    body.extend_from_slice(&shape.session_id);
    let suites: Vec<u8> = shape
        .cipher_suites
        .iter()
        .flat_map(|s| s.to_be_bytes())
        .collect();
    vec16(&mut body, &suites);
    body.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    let mut ext = |kind: u16, data: &[u8]| {
        exts.extend_from_slice(&kind.to_be_bytes());
        vec16(&mut exts, data);
    };
    for (kind, data) in &shape.before {
        ext(*kind, data);
    }
    if let Some(name) = sni {
        let mut list = Vec::new();
        for (kind, other) in &shape.other_names {
            list.push(*kind);
            vec16(&mut list, other);
        }
        list.push(0);
        vec16(&mut list, name.as_bytes());
        let mut data = Vec::new();
        vec16(&mut data, &list);
        ext(0, &data);
    }
    for (kind, data) in &shape.after {
        ext(*kind, data);
    }
    vec16(&mut body, &exts);
    let len = u32::try_from(body.len()).expect("short").to_be_bytes();
    let mut hs = vec![1, len[1], len[2], len[3]];
    hs.extend_from_slice(&body);
    hs
}

/// `hs` in TLS records whose payloads are cut at `cuts` (each a fraction of what is
/// left), as a client or a middlebox may fragment it.
fn records(hs: &[u8], cuts: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = hs;
    let mut cuts = cuts.iter();
    while !rest.is_empty() {
        let take = match cuts.next() {
            Some(c) => 1 + usize::from(*c) % rest.len(),
            None => rest.len(),
        };
        let (payload, tail) = rest.split_at(take);
        out.extend_from_slice(&[22, 3, 1]);
        vec16(&mut out, payload);
        rest = tail;
    }
    out
}

/// Whether two verdicts agree (a refusal may name another defect).
fn same_hello(a: &Hello, b: &Hello) -> bool {
    matches!((a, b), (Hello::NotTls(_), Hello::NotTls(_))) || a == b
}

fn same_head(a: &Head, b: &Head) -> bool {
    matches!((a, b), (Head::NotHttp(_), Head::NotHttp(_))) || a == b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_hello_yields_exactly_its_name(name in dns_name(), shape in shape(), cuts in prop::collection::vec(any::<u16>(), 0..6)) {
        let bytes = records(&client_hello(&shape, Some(&name.spelled)), &cuts);
        prop_assert_eq!(hello::parse(&bytes), Hello::Sni(name.routed.clone()));
        // Delivered in pieces, it is incomplete until its last byte.
        for n in 0..bytes.len() {
            prop_assert_eq!(hello::parse(&bytes[..n]), Hello::Incomplete, "prefix of {} bytes", n);
        }
        // What follows the hello (the client's next flight) changes nothing.
        let mut more = bytes.clone();
        more.extend_from_slice(&[23, 3, 3, 0, 2, 0xab, 0xcd]);
        prop_assert_eq!(hello::parse(&more), Hello::Sni(name.routed));
    }

    #[test]
    fn a_hello_without_a_name_says_so(shape in shape(), cuts in prop::collection::vec(any::<u16>(), 0..6)) {
        let bytes = records(&client_hello(&shape, None), &cuts);
        prop_assert_eq!(hello::parse(&bytes), Hello::NoSni);
    }

    #[test]
    fn a_hello_naming_no_dns_name_is_refused(shape in shape(), name in "[a-z]{1,5}[ /@:][a-z]{0,5}") {
        let bytes = records(&client_hello(&shape, Some(&name)), &[]);
        prop_assert!(matches!(hello::parse(&bytes), Hello::NotTls(_)), "{:?}", name);
    }

    #[test]
    fn any_bytes_get_a_verdict_that_more_bytes_keep(bytes in prop::collection::vec(any::<u8>(), 0..600), more in prop::collection::vec(any::<u8>(), 1..64)) {
        let first = hello::parse(&bytes);
        let mut longer = bytes.clone();
        longer.extend_from_slice(&more);
        let second = hello::parse(&longer);
        if first != Hello::Incomplete {
            prop_assert!(same_hello(&first, &second), "{:?} then {:?}", first, second);
        }
        if let Hello::Sni(name) = &first {
            prop_assert_eq!(hello::normalize(name.as_bytes()), Some(name.clone()));
        }
    }

    #[test]
    fn record_shaped_bytes_get_a_verdict_that_more_bytes_keep(
        shape in shape(),
        name in dns_name(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        // A real hello with a few bytes replaced and its tail possibly cut: the
        // inputs that reach the inner length checks.
        let mut bytes = records(&client_hello(&shape, Some(&name.spelled)), &[]);
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let first = hello::parse(&bytes);
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0x16; 40]);
        if first != Hello::Incomplete {
            prop_assert!(same_hello(&first, &hello::parse(&longer)), "{:?}", bytes);
        }
    }

    #[test]
    fn an_oversized_hello_is_refused_without_waiting(len in (MAX_HELLO as u32 - 3)..=0xff_ffff) {
        // A declared length beyond the limit is refused from its header alone.
        let l = len.to_be_bytes();
        let bytes = [22, 3, 1, 0, 4, 1, l[1], l[2], l[3]];
        prop_assert!(matches!(hello::parse(&bytes), Hello::NotTls(_)));
    }
}

/// One header line that is not `Host`.
fn other_header() -> impl Strategy<Value = String> {
    ("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}")
        .prop_filter("not Host", |(name, _)| !name.eq_ignore_ascii_case("host"))
        .prop_map(|(name, value)| format!("{name}: {value}"))
}

/// A request head as a client sends it, with a `Host` for `name`.
#[derive(Debug, Clone)]
struct HeadShape {
    method: String,
    target: String,
    version: &'static str,
    /// `host` in some mixture of cases.
    host_key: String,
    port: Option<u16>,
    space: &'static str,
    before: Vec<String>,
    after: Vec<String>,
}

fn head_shape() -> impl Strategy<Value = HeadShape> {
    (
        "[A-Z]{1,8}",
        "/[A-Za-z0-9/._~?=&%-]{0,40}",
        prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0")],
        prop::collection::vec(any::<bool>(), 4),
        prop::option::of(any::<u16>()),
        prop_oneof![Just(""), Just(" "), Just("  "), Just("\t")],
        prop::collection::vec(other_header(), 0..4),
        prop::collection::vec(other_header(), 0..4),
    )
        .prop_map(
            |(method, target, version, upper, port, space, before, after)| HeadShape {
                method,
                target,
                version,
                host_key: "host"
                    .chars()
                    .zip(upper)
                    .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                    .collect(),
                port,
                space,
                before,
                after,
            },
        )
}

fn render_head(shape: &HeadShape, host: Option<&str>) -> String {
    let mut lines = vec![format!(
        "{} {} {}",
        shape.method, shape.target, shape.version
    )];
    lines.extend(shape.before.iter().cloned());
    if let Some(host) = host {
        let port = shape.port.map(|p| format!(":{p}")).unwrap_or_default();
        lines.push(format!(
            "{}:{}{host}{port}{}",
            shape.host_key, shape.space, shape.space
        ));
    }
    lines.extend(shape.after.iter().cloned());
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_head_yields_its_host(shape in head_shape(), name in dns_name(), body in "[ -~]{0,20}") {
        let head = render_head(&shape, Some(&name.spelled));
        prop_assert_eq!(host_header::parse(head.as_bytes()), Head::Host(name.routed.clone()), "{}", head);
        for n in 0..head.len() {
            prop_assert_eq!(host_header::parse(&head.as_bytes()[..n]), Head::Incomplete, "prefix of {} bytes of {:?}", n, head);
        }
        // A body after the head changes nothing.
        let with_body = format!("{head}{body}");
        prop_assert_eq!(host_header::parse(with_body.as_bytes()), Head::Host(name.routed));
    }

    #[test]
    fn a_head_without_host_says_so(shape in head_shape()) {
        let head = render_head(&shape, None);
        prop_assert_eq!(host_header::parse(head.as_bytes()), Head::NoHost, "{}", head);
    }

    #[test]
    fn a_bad_request_line_is_refused(shape in head_shape(), name in dns_name(), method in "[a-z]{1,5}|[A-Z]{1,3} [A-Z]{1,3}", version in "HTTP/[02-9]\\.[0-9]|SPDY/3") {
        let good = render_head(&shape, Some(&name.spelled));
        let (line, rest) = good.split_once("\r\n").expect("a request line");
        let bad_method = line.replacen(&shape.method, &method, 1);
        let bad_version = line.replacen(shape.version, &version, 1);
        for bad in [bad_method, bad_version] {
            let req = format!("{bad}\r\n{rest}");
            prop_assert!(matches!(host_header::parse(req.as_bytes()), Head::NotHttp(_)), "{}", req);
            // The request line alone is enough to refuse it.
            let first = format!("{bad}\r\n");
            prop_assert!(matches!(host_header::parse(first.as_bytes()), Head::NotHttp(_)), "{}", first);
        }
    }

    #[test]
    fn any_head_bytes_get_a_verdict_that_more_bytes_keep(bytes in prop::collection::vec(any::<u8>(), 0..400), more in prop::collection::vec(any::<u8>(), 1..64)) {
        let first = host_header::parse(&bytes);
        let mut longer = bytes.clone();
        longer.extend_from_slice(&more);
        if first != Head::Incomplete {
            prop_assert!(same_head(&first, &host_header::parse(&longer)), "{:?}", bytes);
        }
        if let Head::Host(h) = &first {
            prop_assert_eq!(hello::normalize(h.as_bytes()), Some(h.clone()));
        }
    }

    #[test]
    fn head_shaped_text_gets_a_verdict_that_more_bytes_keep(
        shape in head_shape(),
        name in dns_name(),
        flips in prop::collection::vec((any::<usize>(), prop_oneof![Just(b':'), Just(b'\r'), Just(b'\n'), Just(b' '), any::<u8>()]), 1..4),
        cut in any::<usize>(),
    ) {
        let mut bytes = render_head(&shape, Some(&name.spelled)).into_bytes();
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let first = host_header::parse(&bytes);
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"\r\n\r\nX: y\r\n\r\n");
        if first != Head::Incomplete {
            prop_assert!(same_head(&first, &host_header::parse(&longer)), "{:?}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn an_endless_head_is_refused_at_the_limit(line in "[ -~]{1,60}") {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        while head.len() < MAX_HEAD {
            head.extend_from_slice(b"X: ");
            head.extend_from_slice(line.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        prop_assert!(matches!(host_header::parse(&head), Head::NotHttp(_)));
    }
}
