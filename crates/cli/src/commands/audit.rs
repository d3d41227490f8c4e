//! `shoal audit`: searches the audit log of the server that answers.

use kube::Client;
use serde_json::Value;

use crate::args::{AuditArgs, Output};
use crate::client::CliError;
use crate::output::{emit, render_columns};

/// The query string of a search, each value URL-encoded.
fn query_string(args: &AuditArgs) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(since) = &args.since {
        q.append_pair("since", since);
    }
    if let Some(user) = &args.user {
        q.append_pair("user", user);
    }
    if let Some(org) = &args.org {
        q.append_pair("org", org);
    }
    q.append_pair("limit", &args.limit.to_string());
    q.finish()
}

fn text(rec: &Value, key: &str) -> String {
    match rec.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Runs `shoal audit`.
pub async fn run(client: &Client, args: &AuditArgs) -> Result<(), CliError> {
    let uri = format!("/shoal/v1/audit?{}", query_string(args));
    let req = http::Request::get(uri)
        .body(Vec::new())
        .map_err(|e| CliError::Usage(format!("cannot build the audit request: {e}")))?;
    let body: Value = client.request(req).await?;
    let items = body
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match args.output {
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        )),
        Output::Yaml => emit(&serde_yaml::to_string(&body).unwrap_or_default()),
        Output::Table => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|r| {
                    [
                        "time",
                        "user",
                        "verb",
                        "resource",
                        "namespace",
                        "name",
                        "code",
                        "issuer",
                        "groups",
                    ]
                    .iter()
                    .map(|k| text(r, k))
                    .collect()
                })
                .collect();
            emit(&render_columns(
                &[
                    "TIME",
                    "USER",
                    "VERB",
                    "RESOURCE",
                    "NAMESPACE",
                    "NAME",
                    "CODE",
                    "ISSUER",
                    "GROUPS",
                ],
                &rows,
            ))
        }
    }
}
