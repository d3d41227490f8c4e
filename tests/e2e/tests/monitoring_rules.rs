//! The monitoring files in `deploy/`, checked with Debian's real `promtool`:
//! - the alert rules pass `promtool check rules`, and every group's unit tests in
//!   `deploy/prometheus/tests/` pass `promtool test rules`;
//! - the alerts other code waits for exist; every alert has a `severity` label and
//!   `summary` and `runbook` annotations, and
//!   the test file of its group shows it firing and not firing; there is one test
//!   file per group and none without a group;
//! - every dashboard query parses (as a recording rule, through `promtool check
//!   rules`), and every metric that a rule or a dashboard names is in the contract
//!   of `deploy/README.md` (or is Prometheus's `up`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use shoal_e2e::workspace_root;

fn deploy() -> PathBuf {
    workspace_root().join("deploy")
}

/// Runs `promtool` with `args`; returns whether it succeeded and its whole output.
/// Fails loudly when promtool is not installed: CI installs it, so nothing skips.
fn promtool(args: &[&Path]) -> Result<(bool, String)> {
    let out = match Command::new("promtool").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("promtool is missing: run scripts/setup.sh (installs prometheus)")
        }
        Err(e) => return Err(e).context("running promtool"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn read_yaml(path: &Path) -> Result<Yaml> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn rule_test_files() -> Result<Vec<PathBuf>> {
    let dir = deploy().join("prometheus/tests");
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "no rule tests in {}", dir.display());
    Ok(files)
}

fn str_at<'a>(v: &'a Yaml, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Yaml::as_str)
}

fn seq_at<'a>(v: &'a Yaml, key: &str) -> &'a [Yaml] {
    v.get(key)
        .and_then(Yaml::as_sequence)
        .map_or(&[], Vec::as_slice)
}

/// The metric names of the contract: every `shoal_…` name in `deploy/README.md`.
fn contract_metrics() -> Result<BTreeSet<String>> {
    let path = deploy().join("README.md");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let names: BTreeSet<String> = identifiers(&text)
        .into_iter()
        .filter(|n| n.starts_with("shoal_"))
        .collect();
    ensure!(names.len() > 20, "the contract names only {names:?}");
    Ok(names)
}

fn identifiers(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `name` is a contract metric, a histogram series of one, or `up`.
fn known_metric(contract: &BTreeSet<String>, name: &str) -> bool {
    name == "up"
        || contract.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| contract.contains(base))
        })
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects. A small scanner, not a parser
/// (promtool parses): it skips strings, label matchers, ranges, numbers, function
/// and aggregation names, keywords and the label lists of `by (…)`, `on (…)` and
/// the like; what is left are metric names.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| {
        let mut j = from + 1;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            let c = chars[j];
            match quote {
                Some(_) if c == '\\' => j += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == close => return j + 1,
                None => {}
            }
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // a string outside braces: skip_to treats the opening quote as consumed.
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            i = j + 1;
        } else if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = skip_to(next, ')');
                }
            } else if chars.get(next) == Some(&'(')
                || AGGREGATIONS.contains(&lower.as_str())
                || KEYWORDS.contains(&lower.as_str())
            {
                // a function, an aggregation or an operator
            } else {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Replaces Grafana's variables with concrete values: intervals with `5m`, every
/// other `$name`, `${name}`, `${name:format}` and `[[name]]` with `x`.
fn substitute_variables(expr: &str) -> String {
    let value = |name: &str| {
        if matches!(name, "__rate_interval" | "__interval" | "__range") {
            "5m"
        } else {
            "x"
        }
    };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(pos) = rest.find(['$', '[']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(inner) = tail.strip_prefix("${") {
            if let Some(end) = inner.find('}') {
                let name = inner[..end].split(':').next().unwrap_or_default();
                out.push_str(value(name));
                rest = &inner[end + 1..];
                continue;
            }
        } else if let Some(inner) = tail.strip_prefix("[[") {
            if let Some(end) = inner.find("]]") {
                out.push_str(value(&inner[..end]));
                rest = &inner[end + 2..];
                continue;
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            if end > 0 {
                out.push_str(value(&inner[..end]));
                rest = &inner[end..];
                continue;
            }
        }
        out.push_str(&tail[..1]);
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() -> Result<()> {
    let rules = deploy().join("prometheus/alerts.yaml");
    let (ok, out) = promtool(&[Path::new("check"), Path::new("rules"), &rules])?;
    ensure!(ok, "promtool check rules {}:\n{out}", rules.display());

    for file in rule_test_files()? {
        let (ok, out) = promtool(&[Path::new("test"), Path::new("rules"), &file])?;
        ensure!(ok, "promtool test rules {}:\n{out}", file.display());
        ensure!(
            out.contains("SUCCESS"),
            "promtool test rules {} ran no test:\n{out}",
            file.display()
        );
    }
    Ok(())
}

/// Alert names that other code (and the end-to-end tests) wait for.
const FIXED_ALERTS: &[&str] = &[
    "ShoalClusterNotReady",
    "ShoalMachineStuckProvisioning",
    "ShoalHostNotReady",
    "ShoalGatewayBackendDown",
    "ShoalReconcileErrorsRising",
    "ShoalStoreErrors",
    "ShoalStoreSlowWrites",
    "ShoalCertificateExpiringSoon",
    "ShoalAuditLogWriteFailures",
    "ShoalProcessDown",
];

#[test]
fn every_alert_is_documented_and_tested_firing_and_not_firing() -> Result<()> {
    let contract = contract_metrics()?;
    let doc = read_yaml(&deploy().join("prometheus/alerts.yaml"))?;
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for group in seq_at(&doc, "groups") {
        let gname = str_at(group, "name").context("a group without a name")?;
        let alerts = groups.entry(gname.to_owned()).or_default();
        for rule in seq_at(group, "rules") {
            let Some(alert) = str_at(rule, "alert") else {
                continue;
            };
            alerts.push(alert.to_owned());
            let labels = rule.get("labels");
            match labels.and_then(|l| str_at(l, "severity")) {
                Some("critical" | "warning") => {}
                other => problems.push(format!(
                    "{alert}: severity label is {other:?}, want critical or warning"
                )),
            }
            let annotations = rule.get("annotations");
            for key in ["summary", "runbook"] {
                let text = annotations.and_then(|a| str_at(a, key)).unwrap_or_default();
                if text.trim().is_empty() {
                    problems.push(format!("{alert}: no {key} annotation"));
                }
            }
            let expr = str_at(rule, "expr").unwrap_or_default();
            for name in metric_names(expr) {
                if !known_metric(&contract, &name) {
                    problems.push(format!(
                        "{alert}: metric {name} is not in deploy/README.md's contract"
                    ));
                }
            }
        }
        if alerts.is_empty() {
            problems.push(format!("group {gname} has no alert"));
        }
    }
    ensure!(!groups.is_empty(), "alerts.yaml has no group");
    let names: BTreeSet<&str> = groups.values().flatten().map(String::as_str).collect();
    for alert in FIXED_ALERTS {
        if !names.contains(alert) {
            problems.push(format!("alerts.yaml has no alert {alert}"));
        }
    }

    let mut tested = BTreeSet::new();
    for file in rule_test_files()? {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("test file name")?
            .to_owned();
        let Some(alerts) = groups.get(&stem) else {
            problems.push(format!(
                "{}: no group {stem} in alerts.yaml",
                file.display()
            ));
            continue;
        };
        tested.insert(stem.clone());
        let doc = read_yaml(&file)?;
        let rule_files: Vec<&str> = seq_at(&doc, "rule_files")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        if rule_files != ["../alerts.yaml"] {
            problems.push(format!(
                "{stem}.yaml: rule_files is {rule_files:?}, want [\"../alerts.yaml\"]"
            ));
        }
        let cases: Vec<&Yaml> = seq_at(&doc, "tests")
            .iter()
            .flat_map(|t| seq_at(t, "alert_rule_test"))
            .collect();
        for alert in alerts {
            let mine = cases
                .iter()
                .filter(|c| str_at(c, "alertname") == Some(alert.as_str()));
            let (mut firing, mut quiet) = (false, false);
            for case in mine {
                let exp = seq_at(case, "exp_alerts");
                if exp.is_empty() {
                    quiet = true;
                } else if exp.iter().all(|e| {
                    e.get("exp_labels").is_some()
                        && e.get("exp_annotations")
                            .and_then(|a| str_at(a, "summary"))
                            .is_some()
                }) {
                    firing = true;
                }
            }
            if !firing {
                problems.push(format!(
                    "{stem}.yaml: no case where {alert} fires (exp_alerts with exp_labels and a summary)"
                ));
            }
            if !quiet {
                problems.push(format!(
                    "{stem}.yaml: no case where {alert} does not fire (exp_alerts: [])"
                ));
            }
        }
    }
    for gname in groups.keys() {
        if !tested.contains(gname) {
            problems.push(format!(
                "group {gname} has no test file prometheus/tests/{gname}.yaml"
            ));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: &'a Json, out: &mut Vec<&'a Json>) {
        for p in list.as_array().map_or(&[][..], Vec::as_slice) {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(list) = dashboard.get("panels") {
        walk(list, &mut out);
    }
    out
}

fn variables(dashboard: &Json) -> BTreeSet<&str> {
    dashboard
        .pointer("/templating/list")
        .and_then(Json::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|v| v.get("name").and_then(Json::as_str))
        .collect()
}

#[test]
fn dashboard_queries_parse_and_use_contract_metrics() -> Result<()> {
    let contract = contract_metrics()?;
    let dir = deploy().join("grafana");
    let want: [(&str, &[&str]); 3] = [
        ("host-overview.json", &["datasource"]),
        ("guest-cluster.json", &["datasource", "org", "cluster"]),
        ("gateway.json", &["datasource"]),
    ];
    let tmp = tempfile::tempdir()?;
    let mut problems = Vec::new();
    for (file, vars) in want {
        let path = dir.join(file);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let dashboard: Json =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let have = variables(&dashboard);
        for v in vars {
            if !have.contains(v) {
                problems.push(format!("{file}: no template variable {v}"));
            }
        }
        if dashboard
            .get("schemaVersion")
            .and_then(Json::as_u64)
            .is_none()
        {
            problems.push(format!("{file}: no schemaVersion"));
        }

        let mut groups = Vec::new();
        for (index, panel) in panels(&dashboard).into_iter().enumerate() {
            let title = panel
                .get("title")
                .and_then(Json::as_str)
                .unwrap_or("<untitled>");
            if panel.get("type").and_then(Json::as_str) == Some("row") {
                continue;
            }
            let targets = panel
                .get("targets")
                .and_then(Json::as_array)
                .map_or(&[][..], Vec::as_slice);
            if targets.is_empty() {
                problems.push(format!("{file}: panel {title:?} has no query"));
            }
            for (n, target) in targets.iter().enumerate() {
                let Some(expr) = target.get("expr").and_then(Json::as_str) else {
                    problems.push(format!("{file}: panel {title:?} target {n} has no expr"));
                    continue;
                };
                for name in metric_names(expr) {
                    if !known_metric(&contract, &name) {
                        problems.push(format!(
                            "{file}: panel {title:?}: metric {name} is not in deploy/README.md's contract"
                        ));
                    }
                }
                let mut rule = serde_yaml::Mapping::new();
                rule.insert("record".into(), format!("dashboard:panel_{n}").into());
                rule.insert("expr".into(), substitute_variables(expr).into());
                let mut group = serde_yaml::Mapping::new();
                // promtool names the group of a rule that does not parse; names must be unique.
                let ref_id = target.get("refId").and_then(Json::as_str).unwrap_or("?");
                let name = format!("{file}: panel {title:?} (panel #{index}, query {ref_id})");
                group.insert("name".into(), name.into());
                group.insert("rules".into(), Yaml::Sequence(vec![Yaml::Mapping(rule)]));
                groups.push(Yaml::Mapping(group));
            }
        }
        ensure!(!groups.is_empty(), "{file}: no queries");
        let mut doc = serde_yaml::Mapping::new();
        doc.insert("groups".into(), Yaml::Sequence(groups));
        let rules = tmp.path().join(file.replace(".json", ".rules.yaml"));
        fs::write(&rules, serde_yaml::to_string(&doc)?)?;
        let (ok, out) = promtool(&[Path::new("check"), Path::new("rules"), &rules])?;
        if !ok {
            problems.push(format!("{file}: a query does not parse:\n{out}"));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[test]
fn metric_names_scanner() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, op) (rate(shoal_store_operation_duration_seconds_bucket{op=~"create|update"}[5m]))) > 0.5"#
        ),
        ["shoal_store_operation_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            "max by (org, cluster) (shoal_cluster_ready) == 0 unless on (org, cluster) max by (org, cluster) (shoal_cluster_phase{phase=\"Deleting\"} == 1)"
        ),
        ["shoal_cluster_ready", "shoal_cluster_phase"]
    );
    assert_eq!(
        metric_names("count(up{job=\"a\"} == 0) or vector(0) - time() < 7 * 86400"),
        ["up"]
    );
    assert_eq!(
        substitute_variables("rate(x{org=\"$org\",c=\"${cluster}\"}[$__rate_interval])"),
        "rate(x{org=\"x\",c=\"x\"}[5m])"
    );
}
