//! IP network prefixes such as `10.244.0.0/16`.

use std::{borrow::Cow, fmt, net::IpAddr, str::FromStr};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A validated CIDR: an address whose host bits are zero, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        match (self.addr, other.addr) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                mask_v4(u32::from(a), shorter) == mask_v4(u32::from(b), shorter)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                mask_v6(u128::from(a), shorter) == mask_v6(u128::from(b), shorter)
            }
            _ => false,
        }
    }
}

fn mask_v4(a: u32, prefix: u8) -> u32 {
    a.checked_shr(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(a: u128, prefix: u8) -> u128 {
    a.checked_shr(128 - u32::from(prefix)).unwrap_or(0)
}

/// What a valid CIDR looks like, for error messages.
const HINT: &str = "use an address and a prefix length, e.g. '10.244.0.0/16'";

/// Why a text is not a [`Cidr`]; each message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/` between an address and a prefix length.
    #[error("{text:?} is not a CIDR: {hint}", hint = HINT)]
    NoPrefix {
        /// The text as given.
        text: String,
    },
    /// The part before `/` is not an IP address.
    #[error("{text:?} has an invalid address: {hint}", hint = HINT)]
    BadAddress {
        /// The text as given.
        text: String,
    },
    /// The part after `/` is not a number.
    #[error("{text:?} has an invalid prefix length: {hint}", hint = HINT)]
    BadPrefix {
        /// The text as given.
        text: String,
    },
    /// A prefix longer than the address.
    #[error("{text:?} has a prefix longer than {max} bits")]
    PrefixTooLong {
        /// The text as given.
        text: String,
        /// The address family's length in bits.
        max: u8,
    },
    /// The address is not the network address of its prefix.
    #[error("{text:?} has host bits set: use the network address of the prefix")]
    HostBitsSet {
        /// The text as given.
        text: String,
    },
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let text = || s.to_owned();
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::NoPrefix { text: text() })?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress { text: text() })?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| CidrError::BadPrefix { text: text() })?;
        let (max, host_bits_zero) = match addr {
            IpAddr::V4(a) => (
                32,
                prefix <= 32
                    && u32::from(a) & !u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
                        == 0,
            ),
            IpAddr::V6(a) => (
                128,
                prefix <= 128
                    && u128::from(a) & !u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
                        == 0,
            ),
        };
        if prefix > max {
            return Err(CidrError::PrefixTooLong { text: text(), max });
        }
        if !host_bits_zero {
            return Err(CidrError::HostBitsSet { text: text() });
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Cidr {
    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An IP prefix such as '10.244.0.0/16'.",
            "type": "string"
        })
    }
}

impl Cidr {
    /// Parses a CIDR written in the source code.
    ///
    /// # Panics
    /// When the literal is not a CIDR: that is a bug in Shoal, caught by the unit tests.
    pub fn from_str_const(s: &str) -> Self {
        s.parse()
            .expect("CIDR literals in Shoal's source are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_host_bits() {
        assert!("10.244.0.0/16".parse::<Cidr>().is_ok());
        assert!("fd00::/64".parse::<Cidr>().is_ok());
        assert!("0.0.0.0/0".parse::<Cidr>().is_ok());
        for bad in [
            "10.244.0.1/16",
            "10.0.0.0/33",
            "10.0.0.0",
            "x/8",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap() -> Result<(), CidrError> {
        let a: Cidr = "10.0.0.0/8".parse()?;
        let b: Cidr = "10.1.0.0/16".parse()?;
        let c: Cidr = "192.168.0.0/16".parse()?;
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        Ok(())
    }

    /// Seeded properties (`SHOAL_FUZZ_SEED`, `SHOAL_FUZZ_CASES`): every network
    /// prints and parses back to itself, an address with host bits set is refused,
    /// and overlap is symmetric and agrees with containment of the network address.
    #[test]
    fn properties_of_random_networks() -> Result<(), CidrError> {
        use shoal_testutil::fuzz::{plan, Rng};
        let (seed, cases) = plan("Cidr", 20_000);
        let mut rng = Rng::new(seed);
        let v4 = |rng: &mut Rng| -> Cidr {
            let prefix = rng.below(33) as u8;
            let addr =
                (rng.next_u64() as u32) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Cidr {
                addr: IpAddr::V4(addr.into()),
                prefix,
            }
        };
        for _ in 0..cases {
            let a = v4(&mut rng);
            let b = v4(&mut rng);
            assert_eq!(a.to_string().parse::<Cidr>()?, a);
            assert_eq!(a.overlaps(&b), b.overlaps(&a), "{a} {b}");
            let (IpAddr::V4(x), IpAddr::V4(y)) = (a.addr, b.addr) else {
                unreachable!("both are IPv4");
            };
            let within = |net: &Cidr, ip: u32| {
                let IpAddr::V4(n) = net.addr else {
                    return false;
                };
                mask_v4(ip, net.prefix) == mask_v4(u32::from(n), net.prefix)
            };
            assert_eq!(
                a.overlaps(&b),
                within(&a, u32::from(y)) || within(&b, u32::from(x)),
                "{a} {b}"
            );
            if a.prefix < 32 {
                let host_bit = 1u32 << rng.below(usize::from(32 - a.prefix));
                let bad = format!(
                    "{}/{}",
                    std::net::Ipv4Addr::from(u32::from(x) | host_bit),
                    a.prefix
                );
                assert!(bad.parse::<Cidr>().is_err(), "{bad} has host bits set");
            }
        }
        Ok(())
    }
}
