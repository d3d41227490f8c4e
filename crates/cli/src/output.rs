//! Printing objects as columns, JSON or YAML.

use std::io::Write;

use serde_json::Value;
use shoal_api::KindInfo;
use shoal_apiserver::http::table::{table, IncludeObject};

use crate::args::Output;
use crate::client::CliError;

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "<none>".into(),
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// Renders objects as aligned columns, with a NAMESPACE column when asked.
pub fn render_table(kind: &KindInfo, items: &[Value], with_namespace: bool) -> String {
    let t = table(kind, items, IncludeObject::Metadata, true, None, None);
    let mut header: Vec<String> = t["columnDefinitions"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_uppercase())
                .collect()
        })
        .unwrap_or_default();
    let mut rows: Vec<Vec<String>> = t["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r["cells"]
                        .as_array()
                        .map(|c| c.iter().map(cell_text).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    if with_namespace {
        header.insert(0, "NAMESPACE".into());
        for (row, obj) in rows.iter_mut().zip(items) {
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            row.insert(0, ns.to_owned());
        }
    }
    render_columns(&header, &rows)
}

/// Renders a header and rows as columns aligned on the widest cell, three
/// spaces apart, one line each.
pub fn render_columns<H: AsRef<str>>(header: &[H], rows: &[Vec<String>]) -> String {
    let width = |c: &str| c.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h.as_ref())).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width(c)),
                None => widths.push(width(c)),
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        cells
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(&mut header.iter().map(AsRef::as_ref));
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// Writes `text` to stdout. When the reader has gone (`shoal crds | head`) the
/// rest of the output is dropped quietly instead of panicking, and the command
/// still finishes what it was doing.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

/// [`emit`]s one line.
pub fn emit_line(line: impl std::fmt::Display) -> Result<(), CliError> {
    emit(&format!("{line}\n"))
}

/// Prints objects in the chosen format.
pub fn print(
    kind: &KindInfo,
    items: &[Value],
    single: bool,
    with_namespace: bool,
    format: Output,
) -> Result<(), CliError> {
    match format {
        Output::Table => {
            if items.is_empty() {
                eprintln!("No resources found.");
                Ok(())
            } else {
                emit(&render_table(kind, items, with_namespace))
            }
        }
        Output::Json | Output::Yaml => {
            let doc = if single && items.len() == 1 {
                items[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
            };
            let text = if format == Output::Json {
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            } else {
                serde_yaml::to_string(&doc).unwrap_or_default()
            };
            emit_line(text.trim_end())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned()],
            vec!["bbbb".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            render_columns(&["NAME", "V"], &rows),
            "NAME   V\na      long value\nbbbb   x\n"
        );
    }
}
