//! The guest's DHCP client on arbitrary bytes: its guarded decoder and its handling
//! of what decodes (classification, lease extraction) never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_guest::dhcp::{classify, decode, Reply};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fuzz_target!(
    init: {
        // `decode` catches dhcproto's own panics on malformed options by design;
        // libFuzzer's hook would abort on those. Any other panic still reaches
        // libfuzzer-sys, which aborts and saves the input.
        std::panic::set_hook(Box::new(|info| {
            if !info.location().is_some_and(|l| l.file().contains("dhcproto")) {
                eprintln!("{info}");
            }
        }));
    },
    |data: &[u8]| {
        if let Ok(msg) = decode(data) {
            if let Some(Reply::Ack(lease)) = classify(&msg, msg.xid(), &MAC) {
                assert!(lease.prefix_len <= 32);
                assert!(!lease.ip.is_unspecified());
            }
        }
    }
);
