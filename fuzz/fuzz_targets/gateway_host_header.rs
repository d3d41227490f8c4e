//! The gateway's HTTP head reader on arbitrary bytes: no panic, a host found is
//! normalized, and a decided verdict does not change when more bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_gateway::hello::normalize;
use shoal_gateway::host_header::{parse, Head};

fuzz_target!(|data: &[u8]| {
    let first = parse(data);
    if let Head::Host(host) = &first {
        assert_eq!(normalize(host.as_bytes()).as_ref(), Some(host));
    }
    if first != Head::Incomplete {
        let mut more = data.to_vec();
        more.extend_from_slice(b"\r\n\r\nX: y\r\n\r\n");
        let second = parse(&more);
        match (&first, &second) {
            (Head::NotHttp(_), Head::NotHttp(_)) => {}
            _ => assert_eq!(first, second),
        }
    }
});
