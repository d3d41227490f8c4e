//! Property tests of the validated newtypes `Quantity` and `Cidr`: what they print
//! parses back to the same value, no input makes them panic, and their comparisons
//! agree with the numbers they stand for.
//!
//! Only `is_ok`/`is_err` of a parse is looked at, never the error's type or text.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use shoal_api::validate::{Cidr, Quantity};

/// The suffixes Kubernetes quantities take, with their multipliers.
const SUFFIXES: &[(&str, f64)] = &[
    ("", 1.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
    ("Ki", 1024.0),
    ("Mi", 1048576.0),
    ("Gi", 1073741824.0),
    ("Ti", 1099511627776.0),
    ("Pi", 1125899906842624.0),
    ("Ei", 1152921504606846976.0),
];

/// A quantity as a user writes it, with the value it stands for.
#[derive(Debug, Clone)]
struct Written {
    text: String,
    value: f64,
}

fn suffix() -> impl Strategy<Value = (String, f64)> {
    prop_oneof![
        (0..SUFFIXES.len()).prop_map(|i| (SUFFIXES[i].0.to_string(), SUFFIXES[i].1)),
        (-18i32..=18, any::<bool>()).prop_map(|(e, upper)| {
            let mark = if upper { 'E' } else { 'e' };
            (format!("{mark}{e}"), 10f64.powi(e))
        }),
    ]
}

/// A quantity in any of the spellings `Quantity::parse` documents: an integer or a
/// decimal (`1.5`, `.5`, `5.`), then a suffix or an exponent.
fn written() -> impl Strategy<Value = Written> {
    let number = prop_oneof![
        (0u64..1_000_000_000).prop_map(|n| n.to_string()),
        (0u64..1_000_000, 0u32..1000).prop_map(|(i, f)| format!("{i}.{f:03}")),
        (0u32..1000).prop_map(|f| format!(".{f}")),
        (0u64..1000).prop_map(|i| format!("{i}.")),
    ];
    (number, suffix()).prop_map(|(number, (suffix, multiplier))| Written {
        value: number.parse::<f64>().expect("a generated number") * multiplier,
        text: format!("{number}{suffix}"),
    })
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn quantity_parse_never_panics(text in any::<String>()) {
        let _ = Quantity::parse(&text);
    }

    #[test]
    fn quantity_parse_never_panics_on_near_misses(text in "[ 0-9.eE+-]{0,12}[a-zA-Z]{0,3}[0-9+-]{0,4}") {
        if let Ok(q) = Quantity::parse(&text) {
            prop_assert!(q.value() >= 0.0 && q.value().is_finite(), "{text:?} -> {q:?}");
        }
    }

    #[test]
    fn every_documented_spelling_parses_to_its_value(w in written()) {
        let q = Quantity::parse(&w.text);
        prop_assert!(q.is_ok(), "{:?} is a valid quantity", w.text);
        let q = q.expect("checked");
        prop_assert!(close(q.value(), w.value), "{:?}: {} != {}", w.text, q.value(), w.value);
        prop_assert_eq!(q.as_str(), w.text.as_str());
    }

    #[test]
    fn a_quantity_parses_back_from_what_it_prints(w in written(), pad in "[ \t]{0,2}") {
        let q = Quantity::parse(&format!("{pad}{}{pad}", w.text)).expect("valid");
        let again = Quantity::parse(&q.to_string()).expect("what it prints is valid");
        prop_assert_eq!(&again, &q);
        let json = serde_json::to_string(&q).expect("serializes");
        let back: Quantity = serde_json::from_str(&json).expect("deserializes");
        prop_assert_eq!(back, q);
    }

    #[test]
    fn integers_in_json_are_quantities(n in any::<u64>()) {
        let q: Quantity = serde_json::from_str(&n.to_string()).expect("an integer is a quantity");
        prop_assert_eq!(q.as_str(), n.to_string());
        prop_assert!(close(q.value(), n as f64));
    }

    #[test]
    fn rounding_follows_the_value(a in written(), b in written()) {
        let (qa, qb) = (Quantity::parse(&a.text).expect("valid"), Quantity::parse(&b.text).expect("valid"));
        if qa.value() <= qb.value() {
            prop_assert!(qa.as_bytes() <= qb.as_bytes(), "{qa:?} {qb:?}");
            prop_assert!(qa.as_millis() <= qb.as_millis(), "{qa:?} {qb:?}");
        }
        // Rounding up: never below the value, and at most one unit above it.
        for q in [&qa, &qb] {
            if q.value() < 1e15 {
                let bytes = q.as_bytes() as f64;
                prop_assert!(bytes >= q.value() && bytes - q.value() <= 1.0, "{q:?}");
            }
        }
    }

    #[test]
    fn binary_and_plain_spellings_agree(n in 0u64..(1 << 12), i in 0usize..5) {
        let (suffix, multiplier) = SUFFIXES[SUFFIXES.len() - 6 + i];
        let binary = Quantity::parse(&format!("{n}{suffix}")).expect("valid");
        let plain = Quantity::parse(&(n * multiplier as u64).to_string()).expect("valid");
        prop_assert_eq!(binary.as_bytes(), plain.as_bytes());
        prop_assert_eq!(binary.value(), plain.value());
    }

    #[test]
    fn negative_and_suffix_only_quantities_are_refused(w in written(), junk in "[a-df-zA-DF-Z]{1,3}") {
        let negative = format!("-{}", w.text);
        prop_assert!(Quantity::parse(&negative).is_err(), "{negative:?}");
        prop_assert!(Quantity::parse(&junk).is_err(), "{junk:?}");
    }
}

/// A valid network: a random address with the host bits cleared.
fn v4_net() -> impl Strategy<Value = (Ipv4Addr, u8)> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| (Ipv4Addr::from(a & mask4(p)), p))
}

fn v6_net() -> impl Strategy<Value = (Ipv6Addr, u8)> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, p)| (Ipv6Addr::from(a & mask6(p)), p))
}

fn mask4(p: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0)
}

fn mask6(p: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0)
}

fn net() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        v4_net().prop_map(|(a, p)| format!("{a}/{p}")),
        v6_net().prop_map(|(a, p)| format!("{a}/{p}")),
    ]
    .prop_map(|text| text.parse::<Cidr>().expect("a generated network is valid"))
}

/// Whether `outer` holds every address of `inner`, computed on the numbers.
fn contains(outer: &Cidr, inner: &Cidr) -> bool {
    if outer.prefix() > inner.prefix() {
        return false;
    }
    match (outer.addr(), inner.addr()) {
        (IpAddr::V4(o), IpAddr::V4(i)) => u32::from(i) & mask4(outer.prefix()) == u32::from(o),
        (IpAddr::V6(o), IpAddr::V6(i)) => u128::from(i) & mask6(outer.prefix()) == u128::from(o),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn cidr_parse_never_panics(text in any::<String>()) {
        let _ = text.parse::<Cidr>();
    }

    #[test]
    fn cidr_parse_never_panics_on_near_misses(text in "[0-9a-f:.]{0,40}/[0-9]{0,4}") {
        if let Ok(c) = text.parse::<Cidr>() {
            let max = if c.addr().is_ipv4() { 32 } else { 128 };
            prop_assert!(c.prefix() <= max, "{text:?}");
        }
    }

    #[test]
    fn a_network_parses_back_from_what_it_prints(c in net()) {
        prop_assert_eq!(c.to_string().parse::<Cidr>().expect("what it prints is valid"), c);
        let json = serde_json::to_string(&c).expect("serializes");
        prop_assert_eq!(serde_json::from_str::<Cidr>(&json).expect("deserializes"), c);
    }

    #[test]
    fn v4_parts_survive_parsing((addr, prefix) in v4_net()) {
        let c: Cidr = format!("{addr}/{prefix}").parse().expect("valid");
        prop_assert_eq!((c.addr(), c.prefix()), (IpAddr::V4(addr), prefix));
    }

    #[test]
    fn host_bits_are_refused((addr, prefix) in v4_net(), (addr6, prefix6) in v6_net(), bit in any::<u32>()) {
        if prefix < 32 {
            let host = 1u32 << (bit % (32 - u32::from(prefix)));
            let bad = format!("{}/{prefix}", Ipv4Addr::from(u32::from(addr) | host));
            prop_assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        if prefix6 < 128 {
            let host = 1u128 << (bit % (128 - u32::from(prefix6)));
            let bad = format!("{}/{prefix6}", Ipv6Addr::from(u128::from(addr6) | host));
            prop_assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_beyond_the_family_are_refused(extra in 1u32..200) {
        let (v4, v6) = (format!("10.0.0.0/{}", 32 + extra), format!("fd00::/{}", 128 + extra));
        prop_assert!(v4.parse::<Cidr>().is_err(), "{v4}");
        prop_assert!(v6.parse::<Cidr>().is_err(), "{v6}");
    }

    #[test]
    fn overlap_is_symmetric_and_means_containment(a in net(), b in net()) {
        prop_assert_eq!(a.overlaps(&b), b.overlaps(&a), "{} {}", a, b);
        // Two prefixes share an address exactly when one holds the other.
        prop_assert_eq!(a.overlaps(&b), contains(&a, &b) || contains(&b, &a), "{} {}", a, b);
        prop_assert!(a.overlaps(&a));
    }

    #[test]
    fn a_network_overlaps_its_subnets(c in net(), bits in any::<u128>(), grow in 0u8..=128) {
        // A subnet of `c`: a longer prefix, host bits of `c` chosen at random.
        let (text, max) = match c.addr() {
            IpAddr::V4(a) => {
                let p = c.prefix() + grow % (33 - c.prefix());
                let sub = (u32::from(a) | (bits as u32 & !mask4(c.prefix()))) & mask4(p);
                (format!("{}/{p}", Ipv4Addr::from(sub)), 32)
            }
            IpAddr::V6(a) => {
                let p = c.prefix() + grow % (129 - c.prefix());
                let sub = (u128::from(a) | (bits & !mask6(c.prefix()))) & mask6(p);
                (format!("{}/{p}", Ipv6Addr::from(sub)), 128)
            }
        };
        let sub: Cidr = text.parse().expect("a subnet is valid");
        prop_assert!(sub.prefix() <= max);
        prop_assert!(contains(&c, &sub), "{} holds {}", c, sub);
        prop_assert!(c.overlaps(&sub) && sub.overlaps(&c), "{} {}", c, sub);
    }
}
