//! The guest stand-ins' HTTP/1 request reader on arbitrary bytes: no panic, and a
//! request read keeps a path without its query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_guest::http1::read_request;

fuzz_target!(|data: &[u8]| {
    let mut stream = std::io::Cursor::new(data);
    if let Ok(req) = read_request(&mut stream) {
        assert!(!req.method.is_empty());
        assert!(!req.path.contains('?'));
    }
});
