//! Reading counters from Prometheus' text format, for benches that count the
//! requests a run made.

use anyhow::{Context, Result};

/// One sample of `metric`: the value of each label asked for (empty when the
/// sample has no such label), and the sample's value.
pub fn samples(text: &str, metric: &str, labels: &[&str]) -> Result<Vec<(Vec<String>, f64)>> {
    let open = format!("{metric}{{");
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&open) else {
            continue;
        };
        let values = labels
            .iter()
            .map(|name| {
                rest.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        let value: f64 = line
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("a sample value: {line}"))?;
        out.push((values, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_labels_asked_for_and_the_value() -> Result<()> {
        let text = "# HELP x\n\
            grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\"} 12\n\
            grpc_server_handled_total{grpc_method=\"Txn\"} 3.5\n\
            grpc_server_started_total{grpc_method=\"Range\"} 99\n";
        let got = samples(text, "grpc_server_handled_total", &["grpc_method", "nope"])?;
        assert_eq!(
            got,
            vec![
                (vec!["Range".to_owned(), String::new()], 12.0),
                (vec!["Txn".to_owned(), String::new()], 3.5),
            ]
        );
        assert!(samples("m{a=\"b\"} x", "m", &["a"]).is_err());
        Ok(())
    }
}
