//! The decoders the boot network feeds, on any bytes: an error, never a panic.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use shoal_pxe::dhcp::{self, ProxyConfig, PXE_PORT};
use shoal_pxe::tftp::{negotiate, Packet};

fn cfg() -> ProxyConfig {
    ProxyConfig {
        server: Ipv4Addr::new(10, 78, 0, 2),
        script_url: "http://10.78.0.2:8080/boot.ipxe".into(),
        bios_file: "undionly.kpxe".into(),
        uefi_file: "ipxe.efi".into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn dhcp_bytes_never_panic_the_proxy(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(msg) = dhcp::decode(&bytes) {
            for port in [67, PXE_PORT] {
                if let Some(answer) = dhcp::respond(&cfg(), &msg, port) {
                    prop_assert!(dhcp::encode(&answer.reply).is_ok());
                }
            }
        }
    }

    /// A DHCP header with a PXE vendor class and random options after it.
    #[test]
    fn pxe_like_requests_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300), op in 1u8..=2, hlen in any::<u8>()) {
        let mut bytes = vec![0u8; 236];
        bytes[0] = op;
        bytes[1] = 1;
        bytes[2] = hlen;
        bytes.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 60, 9]);
        bytes.extend_from_slice(b"PXEClient");
        bytes.extend_from_slice(&tail);
        if let Ok(msg) = dhcp::decode(&bytes) {
            let _ = dhcp::respond(&cfg(), &msg, 67);
        }
    }

    #[test]
    fn tftp_bytes_never_panic_and_decoded_packets_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(p) = Packet::decode(&bytes) {
            if let Packet::Rrq { options, .. } = &p {
                let n = negotiate(options, 1 << 20);
                prop_assert!((8..=shoal_pxe::tftp::MAX_BLOCK).contains(&n.block));
            }
            prop_assert_eq!(Packet::decode(&p.encode()), Ok(p));
        }
    }

    #[test]
    fn read_requests_with_any_fields_never_panic(name in "[ -~]{0,40}", mode in "[a-zA-Z]{0,8}", opts in proptest::collection::vec(("[a-z]{0,8}", "[ -~]{0,8}"), 0..4)) {
        let rrq = Packet::Rrq { filename: name, mode: mode.to_ascii_lowercase(), options: opts };
        let decoded = Packet::decode(&rrq.encode());
        prop_assert!(decoded.is_ok());
    }
}
