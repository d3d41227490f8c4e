//! The gateway's ClientHello reader on arbitrary bytes: no panic, a name found is
//! normalized, and a decided verdict does not change when more bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_gateway::hello::{normalize, parse, Hello};

fuzz_target!(|data: &[u8]| {
    let first = parse(data);
    if let Hello::Sni(name) = &first {
        assert_eq!(normalize(name.as_bytes()).as_ref(), Some(name));
    }
    if first != Hello::Incomplete {
        let mut more = data.to_vec();
        more.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        let second = parse(&more);
        match (&first, &second) {
            (Hello::NotTls(_), Hello::NotTls(_)) => {}
            _ => assert_eq!(first, second),
        }
    }
});
