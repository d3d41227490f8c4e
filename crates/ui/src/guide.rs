//! The getting-started page: from a cluster to a kubeconfig and a first `kubectl`.

use axum::response::{Html, IntoResponse, Response};
use http::HeaderMap;

use crate::html::page;
use crate::pages::to_sign_in;
use crate::session;

/// The page's body: static text, the same for every user.
const BODY: &str = r#"<ol>
<li><p><strong>Sign the CLI in.</strong> The <code>shoal</code> CLI is the same binary as the server. Save this server and your token in its own config file (never <code>~/.kube/config</code>):</p>
<pre><code>shoal login --server https://&lt;this server&gt; --certificate-authority ca.crt --token &lt;your token&gt;</code></pre>
<p>With an identity provider, <code>shoal login --oidc --issuer &lt;issuer&gt; --client-id &lt;client&gt;</code> signs in through your browser instead.</p></li>
<li><p><strong>Create a cluster</strong> with the <a href="/ui/clusters/new">form</a>, or:</p>
<pre><code>shoal cluster create --name demo --org &lt;org&gt; --release &lt;release&gt; --workers 2 --cpu 2 --memory 4Gi --disk 20Gi --wait</code></pre>
<p>Pick the release from <a href="/ui/releases">Releases</a>. The cluster's page shows its conditions, machines and API endpoint; it is ready when its status is Ready.</p></li>
<li><p><strong>Get a kubeconfig.</strong> The key pair is made on your machine and only a certificate signing request is sent; the cluster's CA signs it:</p>
<pre><code>shoal kubeconfig create --cluster demo --org &lt;org&gt; --groups kubeadm:cluster-admins --output demo.kubeconfig</code></pre>
<p>With an identity provider, <code>--oidc</code> writes a kubeconfig that signs in with your identity instead of a certificate.</p></li>
<li><p><strong>Use it.</strong> Every request goes through the host cluster's gateway to your cluster's API:</p>
<pre><code>kubectl --kubeconfig demo.kubeconfig get nodes</code></pre></li>
</ol>
<p>Scale a node pool on the cluster's page or with <code>shoal cluster scale demo --org &lt;org&gt; --workers 3</code>; delete it there or with <code>shoal cluster delete demo --org &lt;org&gt;</code>.</p>"#;

/// `GET /ui/getting-started`.
pub async fn getting_started(headers: HeaderMap) -> Response {
    if session::token(&headers).is_none() {
        return to_sign_in();
    }
    Html(page("Getting started", true, BODY)).into_response()
}
