//! Values that YAML 1.1 readers would not read back as strings.
//!
//! serde_yaml writes YAML 1.2 and quotes what YAML 1.2 reads as a non-string (`true`,
//! `null`, `123`, `0x1f`, `1e3`, `0644`). cloud-init reads user-data with PyYAML and
//! kubeadm its configuration with go-yaml, both YAML 1.1, which also take `yes`, `on`,
//! `1:30`, `1_000` or `2024-01-31` for booleans, numbers and dates. Such values are
//! refused at validation rather than written unquoted.

/// YAML 1.1's extra booleans (`yes`, `on`, ...), its dates (`2024-01-31`), and its
/// numbers that YAML 1.2 reads as strings: base 60 (`1:30`) and `_`-separated
/// (`1_000`, `0b1_0`).
pub(crate) fn is_yaml11_non_string(value: &str) -> bool {
    const BOOLS: [&str; 16] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    if BOOLS.contains(&value) || is_yaml11_date(value) {
        return true;
    }
    let body = value.strip_prefix(['+', '-']).unwrap_or(value);
    let digits_ = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit() || c == b'_');
    let lead = |s: &str| digits_(s) && s.as_bytes()[0].is_ascii_digit();
    if body.contains(':') {
        // [0-9][0-9_]* (:[0-5]?[0-9])+ (\.[0-9_]*)?
        let (whole, fraction) = match body.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (body, None),
        };
        let mut groups = whole.split(':');
        let first = groups.next().unwrap_or_default();
        let sixty = |g: &str| {
            (1..=2).contains(&g.len())
                && g.bytes().all(|c| c.is_ascii_digit())
                && g.parse::<u8>().is_ok_and(|n| n < 60)
        };
        return lead(first)
            && groups.all(sixty)
            && fraction.is_none_or(|f| f.bytes().all(|c| c.is_ascii_digit() || c == b'_'));
    }
    if !body.contains('_') {
        return false;
    }
    if let Some(bits) = body.strip_prefix("0b") {
        return !bits.is_empty() && bits.bytes().all(|c| matches!(c, b'0' | b'1' | b'_'));
    }
    if let Some(hex) = body.strip_prefix("0x") {
        return !hex.is_empty() && hex.bytes().all(|c| c.is_ascii_hexdigit() || c == b'_');
    }
    // [0-9][0-9_]* (\.[0-9_]* ([eE][-+][0-9]+)?)?
    let (whole, rest) = match body.split_once('.') {
        Some((w, r)) => (w, Some(r)),
        None => (body, None),
    };
    let fraction_ok = |r: &str| {
        let (fraction, exponent) = match r.find(['e', 'E']) {
            Some(i) => (&r[..i], Some(&r[i + 1..])),
            None => (r, None),
        };
        fraction.bytes().all(|c| c.is_ascii_digit() || c == b'_')
            && exponent.is_none_or(|e| {
                e.strip_prefix(['+', '-'])
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
            })
    };
    lead(whole) && rest.is_none_or(fraction_ok)
}

/// YAML 1.1's timestamps start with a date: `YYYY-M-D`, alone or followed by a time.
fn is_yaml11_date(value: &str) -> bool {
    let mut parts = value.splitn(3, '-');
    let (Some(year), Some(month), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let day_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let after_day = &rest[day_len..];
    let num = |s: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit())
    };
    num(year, 4..=4)
        && num(month, 1..=2)
        && (1..=2).contains(&day_len)
        && (after_day.is_empty() || after_day.starts_with(['T', 't', ' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_booleans_and_odd_numbers_are_caught() {
        for v in [
            "on",
            "off",
            "yes",
            "no",
            "y",
            "N",
            "1_000",
            "1:30",
            "0b1_01",
            "-1:2:3",
            "1:2:3:4:5:6",
            "1_0.5",
            "1_0.5e+3",
            "0x_1f",
            "190:20:30.15",
            "2024-01-31",
            "2024-1-2t10:00:00",
        ] {
            assert!(is_yaml11_non_string(v), "{v}");
        }
        for v in [
            "demo",
            "node-1",
            "10.0.0.1",
            "1.31.2",
            "10.0.0.1:6443",
            "api.demo.acme.shoal.local:443",
            "0bad",
            "email",
            "fd00::10",
            "1:2:3:4:5:6:7:8a",
            "1:60",
            "2024-01-31x",
            "20240-01-31",
            "1_a",
            "x_1",
        ] {
            assert!(!is_yaml11_non_string(v), "{v}");
        }
    }
}
