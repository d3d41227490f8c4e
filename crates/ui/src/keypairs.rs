//! Key pairs on the cluster page, and "Create kubeconfig": the browser makes the
//! key pair (WebCrypto), sends only a certificate signing request, and builds
//! the kubeconfig it offers for download once. The private key never leaves the
//! browser; the server only creates the KeyPair with the user's token and hands
//! back what the kubeconfig needs besides the key.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use http::{HeaderMap, StatusCode};
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};
use shoal_api::resources::cluster::Cluster;
use shoal_api::resources::keypair::KeyPairSpec;
use shoal_api::resources::organization::org_namespace;
use shoal_api::KeyPair;
use shoal_kube::endpoint::{api_host_port, resolves};

use crate::html::escape;
use crate::pages::client;
use crate::{session, UiConfig};

/// The script that makes the key pair and the CSR, and writes the kubeconfig.
const SCRIPT: &str = include_str!("keypair.js");

/// How long the handler waits for the controller to sign the CSR.
const SIGN_WAIT: Duration = Duration::from_secs(30);

/// The cluster's key pairs, and the Create kubeconfig button when `may_create`.
pub fn section(b: &mut String, org: &str, name: &str, keypairs: &[KeyPair], may_create: bool) {
    b.push_str("<h2>Key pairs</h2>");
    if keypairs.is_empty() {
        b.push_str("<p>No key pairs yet.</p>");
    } else {
        b.push_str(
            "<table><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Description</th>\
             <th scope=\"col\">Serial</th><th scope=\"col\">Expires</th></tr></thead><tbody>",
        );
        for kp in keypairs {
            let status = kp.status.clone().unwrap_or_default();
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(kp.metadata.name.as_deref().unwrap_or_default()),
                escape(kp.spec.description.as_deref().unwrap_or_default()),
                escape(status.serial.as_deref().unwrap_or("not signed yet")),
                escape(status.not_after.as_deref().unwrap_or_default()),
            );
        }
        b.push_str("</tbody></table>");
    }
    if !may_create {
        b.push_str("<p>Your token may not create key pairs for this cluster: that takes an owner or member of its organization.</p>");
        return;
    }
    let _ = write!(
        b,
        r#"<form id="kubeconfig-form" method="post" action="/ui/clusters/{org}/{name}/keypairs" data-org="{org}" data-cluster="{name}">
<p>A kubeconfig with a client certificate valid for 8 hours. The key pair is made in this browser and only a signing request is sent: the private key is in the downloaded file and nowhere else, so download it once and keep it.</p>
<button type="button" id="kubeconfig-create" hidden>Create kubeconfig</button>
<noscript><p>Creating a kubeconfig here needs JavaScript, because the key is made in the browser. Without it, run <code>shoal kubeconfig create --org {org} {name}</code>.</p></noscript>
<p id="kubeconfig-status" role="status" aria-live="polite"></p>
</form>
<script>{SCRIPT}</script>"#,
        org = escape(org),
        name = escape(name),
    );
}

/// The key pairs of cluster `name` in `ns`, oldest first.
pub async fn of_cluster(
    c: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Vec<KeyPair>, kube::Error> {
    let mut list: Vec<KeyPair> = Api::<KeyPair>::namespaced(c.clone(), ns)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|kp| kp.spec.cluster == name)
        .collect();
    list.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    Ok(list)
}

/// The form the script posts: the PEM CSR.
#[derive(Deserialize)]
pub struct Request {
    csr: String,
}

/// What the script needs for the kubeconfig besides the private key.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Signed {
    /// The name of the kubeconfig's cluster, user and context entries.
    entry: String,
    /// The KeyPair's name.
    keypair: String,
    /// The `server` URL.
    server: String,
    /// The API's host name when `server` is the gateway's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_server_name: Option<String>,
    /// The cluster CA (PEM).
    ca: String,
    /// The signed client certificate (PEM).
    certificate: String,
}

/// A refusal the script shows as it is.
fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "message": message.into() }))).into_response()
}

/// The API's refusal, with its code and message.
fn api_refusal(e: kube::Error) -> Response {
    match e {
        kube::Error::Api(s) => refuse(
            StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY),
            s.message,
        ),
        e => refuse(
            StatusCode::BAD_GATEWAY,
            format!("the API could not be reached: {e}"),
        ),
    }
}

/// `POST /ui/clusters/{org}/{name}/keypairs`: creates a KeyPair for the CSR with
/// the user's token, waits for its certificate, and answers with what the
/// kubeconfig needs (JSON).
pub async fn create(
    State(config): State<UiConfig>,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
    Form(form): Form<Request>,
) -> Response {
    let Some(token) = session::token(&headers) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Your session has ended: sign in again.",
        );
    };
    let c = match client(&config, &token) {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let ns = org_namespace(&org);
    if !crate::can::can(&c, "create", "keypairs", Some(&ns), None).await {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("Your token may not create key pairs in organization {org}: that takes an owner or member."),
        );
    }
    let cluster = match Api::<Cluster>::namespaced(c.clone(), &ns).get(&name).await {
        Ok(cluster) => cluster,
        Err(e) => return api_refusal(e),
    };
    let status = cluster.status.clone().unwrap_or_default();
    let (Some(api_endpoint), Some(ca)) = (status.api_endpoint, status.ca_certificate) else {
        return refuse(
            StatusCode::CONFLICT,
            format!("Cluster {name} has no API endpoint and CA yet: try again when it is Ready."),
        );
    };
    let Some((server, tls_server_name)) =
        endpoint(&api_endpoint, status.gateway_address.as_deref()).await
    else {
        return refuse(
            StatusCode::BAD_GATEWAY,
            format!("Cluster {name} reports an API endpoint that is not a URL: {api_endpoint}"),
        );
    };
    let keypairs = Api::<KeyPair>::namespaced(c, &ns);
    let request = KeyPair::request(
        &ns,
        format!("{name}-browser-"),
        KeyPairSpec {
            cluster: name.clone(),
            csr: form.csr,
            ttl: "8h".into(),
            groups: Vec::new(),
            description: Some("made in the web UI".into()),
        },
    );
    let created = match keypairs.create(&PostParams::default(), &request).await {
        Ok(kp) => kp,
        Err(e) => return api_refusal(e),
    };
    let keypair = created.metadata.name.unwrap_or_default();
    let certificate = match signed(&keypairs, &keypair).await {
        Ok(cert) => cert,
        Err(response) => return response,
    };
    Json(Signed {
        entry: format!("shoal-{org}-{name}"),
        keypair,
        server,
        tls_server_name,
        ca,
        certificate,
    })
    .into_response()
}

/// Waits for KeyPair `name`'s certificate; the controller's refusal or a timeout
/// as the answer otherwise.
async fn signed(keypairs: &Api<KeyPair>, name: &str) -> Result<String, Response> {
    let deadline = tokio::time::Instant::now() + SIGN_WAIT;
    loop {
        let kp = keypairs.get(name).await.map_err(api_refusal)?;
        let status = kp.status.unwrap_or_default();
        if let Some(cert) = status.certificate {
            return Ok(cert);
        }
        let refused = status.conditions.iter().find(|c| {
            c.type_ == "Issued" && c.status == "False" && c.reason != "ClusterPkiPending"
        });
        if let Some(c) = refused {
            return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, c.message.clone()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(refuse(
                StatusCode::GATEWAY_TIMEOUT,
                format!("KeyPair {name} was not signed in {} s: look at its conditions (shoal get keypairs)", SIGN_WAIT.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where kubectl connects: the API endpoint itself when its host name resolves,
/// else the gateway the server publishes, with the API's host name as
/// `tls-server-name` (as `shoal kubeconfig create` decides).
async fn endpoint(api_endpoint: &str, gateway: Option<&str>) -> Option<(String, Option<String>)> {
    let (host, port) = api_host_port(api_endpoint)?;
    let Some(gateway) = gateway else {
        return Some((api_endpoint.to_owned(), None));
    };
    Some(if resolves(&host, port).await {
        (api_endpoint.to_owned(), None)
    } else {
        (format!("https://{gateway}"), Some(host))
    })
}
