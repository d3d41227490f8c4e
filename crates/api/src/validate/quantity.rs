//! Resource quantities such as `2Gi`, `500m` or `4`.

use std::{borrow::Cow, fmt};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A validated Kubernetes resource quantity. It keeps the user's spelling and
/// exposes its value in base units (bytes for memory and disk, cores for CPU).
#[derive(Clone, Debug, PartialEq)]
pub struct Quantity {
    text: String,
    value: f64,
}

const SUFFIXES: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1048576.0),
    ("Gi", 1073741824.0),
    ("Ti", 1099511627776.0),
    ("Pi", 1125899906842624.0),
    ("Ei", 1152921504606846976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// Why a text is not a [`Quantity`]; each message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The number part is missing or malformed.
    #[error("{text:?} is not a valid quantity: {hint}", hint = HINT)]
    Invalid {
        /// The text as given (trimmed).
        text: String,
    },
    /// An `e` exponent that is not an integer.
    #[error("{text:?} has an invalid exponent: {hint}", hint = HINT)]
    BadExponent {
        /// The text as given (trimmed).
        text: String,
    },
    /// An exponent outside -18..18.
    #[error("{text:?} has an exponent out of range (-18..18)")]
    ExponentOutOfRange {
        /// The text as given (trimmed).
        text: String,
    },
    /// A suffix that is neither SI, binary nor an exponent.
    #[error("{text:?} has an unknown suffix {suffix:?}: {hint}", hint = HINT)]
    UnknownSuffix {
        /// The text as given (trimmed).
        text: String,
        /// The suffix that was not recognised.
        suffix: String,
    },
}

/// What a valid quantity looks like, for error messages.
const HINT: &str = "use a number with an optional suffix, e.g. '2', '500m', '4Gi' or '20G'";

impl Quantity {
    /// Parses a quantity: a non-negative decimal number with an optional SI
    /// (`k`, `M`, `G`, `m`, …) or binary (`Ki`, `Mi`, `Gi`, …) suffix, or an exponent (`1e3`).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let valid_number = !number.is_empty()
            && number != "."
            && number.matches('.').count() <= 1
            && number.len() <= 32;
        if !valid_number {
            return Err(QuantityError::Invalid { text: text.into() });
        }
        let base: f64 = number
            .parse()
            .map_err(|_| QuantityError::Invalid { text: text.into() })?;
        // A suffix first: `E` and `Ei` (exa, exbi) also start like an exponent.
        let named = SUFFIXES.iter().find(|(s, _)| *s == suffix).map(|(_, m)| *m);
        let multiplier = if suffix.is_empty() {
            1.0
        } else if let Some(m) = named {
            m
        } else if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
            let exp: i32 = exp
                .parse()
                .map_err(|_| QuantityError::BadExponent { text: text.into() })?;
            if !(-18..=18).contains(&exp) {
                return Err(QuantityError::ExponentOutOfRange { text: text.into() });
            }
            10f64.powi(exp)
        } else {
            return Err(QuantityError::UnknownSuffix {
                text: text.into(),
                suffix: suffix.into(),
            });
        };
        Ok(Self {
            text: text.to_owned(),
            value: base * multiplier,
        })
    }

    /// The value in base units.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The value as whole bytes, rounded up.
    pub fn as_bytes(&self) -> u64 {
        self.value.ceil() as u64
    }

    /// The value as millicores, rounded up.
    pub fn as_millis(&self) -> u64 {
        (self.value * 1000.0).ceil() as u64
    }

    /// The user's spelling.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        };
        Quantity::parse(&text).map_err(de::Error::custom)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A quantity such as '2', '500m', '4Gi' or '20G'.",
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() -> Result<(), QuantityError> {
        assert_eq!(Quantity::parse("2Gi")?.as_bytes(), 2 << 30);
        assert_eq!(Quantity::parse("512Mi")?.as_bytes(), 512 << 20);
        assert_eq!(Quantity::parse("20G")?.as_bytes(), 20_000_000_000);
        assert_eq!(Quantity::parse("500m")?.as_millis(), 500);
        assert_eq!(Quantity::parse("2")?.as_millis(), 2000);
        assert_eq!(Quantity::parse("1.5")?.as_millis(), 1500);
        assert_eq!(Quantity::parse("1e3")?.as_bytes(), 1000);
        Ok(())
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "Gi", "-1", "2 Gi", "2GB", "1.2.3", ".", "2x", "1e99"] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accepts_numbers_in_json() -> Result<(), serde_json::Error> {
        let q: Quantity = serde_json::from_str("4")?;
        assert_eq!(q.as_str(), "4");
        assert!(serde_json::from_str::<Quantity>("\"4Gb\"").is_err());
        Ok(())
    }
}
