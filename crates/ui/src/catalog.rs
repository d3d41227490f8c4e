//! The install's catalogue, read with the user's token: Releases (every user) and
//! Hosts with their capacity, allocation and VMs (administrators; the API refuses
//! a tenant, and the page says so).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use kube::api::{Api, ListParams};
use shoal_api::resources::common::ResourceTotals;
use shoal_api::resources::release::ReleaseState;
use shoal_api::{Host, Machine, Release};

use crate::html::{escape, page};
use crate::pages::{client, error_page, to_sign_in, unauthorized};
use crate::{session, UiConfig, UiError};

/// `GET /ui/releases`: every Release, by name.
pub async fn releases(State(config): State<UiConfig>, headers: HeaderMap) -> Response {
    let Some(token) = session::token(&headers) else {
        return to_sign_in();
    };
    let listed = match client(&config, &token) {
        Ok(c) => Api::<Release>::all(c)
            .list(&ListParams::default())
            .await
            .map_err(UiError::Api),
        Err(e) => Err(e),
    };
    match listed {
        Ok(list) => Html(page("Releases", true, &releases_table(&list.items))).into_response(),
        Err(e) if unauthorized(&e) => to_sign_in(),
        Err(e) => refused(&e, "Releases"),
    }
}

/// The releases table: name, state, Kubernetes, etcd and CNI versions, and how
/// nodes boot.
pub fn releases_table(releases: &[Release]) -> String {
    if releases.is_empty() {
        return "<p>No releases yet: an administrator adds them (<code>shoal release create</code>).</p>"
            .to_owned();
    }
    let mut rows: Vec<&Release> = releases.iter().collect();
    rows.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = String::from(
        r#"<p>New clusters pick an active release; a deprecated one stays with the clusters that run it until they are upgraded.</p>
<table>
<caption>Releases</caption>
<thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Kubernetes</th><th scope="col">etcd</th><th scope="col">CNI</th><th scope="col">Image</th></tr></thead>
<tbody>
"#,
    );
    for r in rows {
        let state = match r.spec.state {
            ReleaseState::Active => "active",
            ReleaseState::Deprecated => "deprecated",
        };
        let image = r
            .spec
            .image
            .disk
            .as_deref()
            .or(r.spec.image.kernel.as_deref())
            .unwrap_or("–");
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(r.metadata.name.as_deref().unwrap_or_default()),
            escape(&r.spec.kubernetes_version),
            escape(r.spec.etcd_version.as_deref().unwrap_or("–")),
            escape(r.spec.cni_version.as_deref().unwrap_or("–")),
            escape(image),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// `GET /ui/hosts`: every Host with its capacity, allocation and VMs, for
/// administrators.
pub async fn hosts(State(config): State<UiConfig>, headers: HeaderMap) -> Response {
    let Some(token) = session::token(&headers) else {
        return to_sign_in();
    };
    let c = match client(&config, &token) {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, "Hosts", &e),
    };
    let hosts = match Api::<Host>::all(c.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            let e = UiError::Api(e);
            if unauthorized(&e) {
                return to_sign_in();
            }
            return refused(&e, "Hosts");
        }
    };
    let machines = match Api::<Machine>::all(c).list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return refused(&UiError::Api(e), "Hosts"),
    };
    Html(page("Hosts", true, &hosts_body(&hosts, &machines))).into_response()
}

/// The page for an API refusal: a 403 says who may see the page instead of the
/// API's wording.
fn refused(e: &UiError, title: &str) -> Response {
    match e {
        UiError::Api(kube::Error::Api(s)) if s.code == 403 => {
            let body = format!(
                r#"<p class="error" role="alert">Your token may not read {}: this page is for administrators of the Shoal install. Ask one, or sign in with an administrator's token.</p>"#,
                escape(&title.to_lowercase())
            );
            (StatusCode::FORBIDDEN, Html(page(title, true, &body))).into_response()
        }
        e => error_page(StatusCode::BAD_GATEWAY, title, e),
    }
}

fn totals(t: &ResourceTotals) -> String {
    let q = |v: &Option<shoal_api::validate::Quantity>| {
        v.as_ref().map_or_else(|| "–".to_owned(), |q| q.to_string())
    };
    format!(
        "{} CPU, {} memory, {} disk",
        q(&t.cpu),
        q(&t.memory),
        q(&t.disk)
    )
}

/// The hosts table and, per host, its VMs (the Machines placed on it).
pub fn hosts_body(hosts: &[Host], machines: &[Machine]) -> String {
    let mut vms: BTreeMap<&str, Vec<&Machine>> = BTreeMap::new();
    for m in machines {
        if let Some(host) = m.spec.host_name.as_deref() {
            vms.entry(host).or_default().push(m);
        }
    }
    let mut out = String::from(
        r#"<p>Monitoring of every host and guest: <a href="/monitoring/prometheus/">Prometheus</a> (alerts under <a href="/monitoring/prometheus/classic/alerts">Alerts</a>), with <code>shoal server --monitoring</code>.</p>"#,
    );
    if hosts.is_empty() {
        out.push_str("<p>No hosts have registered: start <code>shoal agent</code> on a machine (see the README).</p>");
        return out;
    }
    let mut sorted: Vec<&Host> = hosts.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out.push_str(
        r#"<table>
<caption>Hosts</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Ready</th><th scope="col">Underlay</th><th scope="col">Capacity</th><th scope="col">Allocated</th><th scope="col">VMs</th><th scope="col">Acceleration</th></tr></thead>
<tbody>
"#,
    );
    for h in &sorted {
        let name = h.metadata.name.as_deref().unwrap_or_default();
        let status = h.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map_or("Unknown", |c| match c.status.as_str() {
                "True" => "Ready",
                "False" => "NotReady",
                _ => "Unknown",
            });
        let ready = if h.spec.unschedulable {
            format!("{ready}, cordoned")
        } else {
            ready.to_owned()
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(&ready),
            escape(status.underlay_ip.as_deref().unwrap_or("–")),
            escape(&totals(&status.capacity)),
            escape(&totals(&status.allocated)),
            vms.get(name).map_or(0, Vec::len),
            if status.kvm { "KVM" } else { "TCG (emulated)" },
        );
    }
    out.push_str("</tbody>\n</table>\n");
    for h in &sorted {
        let name = h.metadata.name.as_deref().unwrap_or_default();
        let Some(on_host) = vms.get(name) else {
            continue;
        };
        let _ = write!(
            out,
            r#"<h2>VMs on {name}</h2><table><thead><tr><th scope="col">Machine</th><th scope="col">Organization</th><th scope="col">Cluster</th><th scope="col">Size</th><th scope="col">IP</th><th scope="col">Phase</th></tr></thead><tbody>"#,
            name = escape(name)
        );
        for m in on_host {
            let phase = m
                .status
                .as_ref()
                .and_then(|s| s.phase.as_ref())
                .map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
            let size = format!(
                "{} CPU, {} memory, {} disk",
                m.spec.size.cpu, m.spec.size.memory, m.spec.size.disk
            );
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(m.metadata.name.as_deref().unwrap_or_default()),
                escape(m.metadata.namespace.as_deref().unwrap_or_default()),
                escape(&m.spec.cluster),
                escape(&size),
                escape(m.spec.ip.as_deref().unwrap_or("–")),
                escape(&phase),
            );
        }
        out.push_str("</tbody></table>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts_list_their_vms_and_escape_names() {
        let host: Host = serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Host",
            "metadata": {"name": "h<1>"}, "spec": {},
            "status": {"capacity": {"cpu": "8", "memory": "32Gi"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "", "message": ""}]}
        }))
        .expect("a Host");
        let machine: Machine = serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": "c1-cp-0", "namespace": "org-acme"},
            "spec": {"cluster": "c1", "role": "control-plane", "release": "test",
                     "hostName": "h<1>",
                     "size": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"}}
        }))
        .expect("a Machine");
        let out = hosts_body(&[host], &[machine]);
        assert!(out.contains("h&lt;1&gt;"), "{out}");
        assert!(!out.contains("h<1>"), "{out}");
        assert!(out.contains("8 CPU, 32Gi memory, – disk"), "{out}");
        assert!(out.contains("<td>Ready</td>"), "{out}");
        assert!(out.contains("c1-cp-0"), "{out}");
    }
}
