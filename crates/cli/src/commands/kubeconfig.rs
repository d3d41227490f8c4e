//! `shoal kubeconfig`: access to guest clusters with client certificates.
//!
//! `create` makes an ECDSA P-256 key and a CSR on this machine, has the cluster's
//! CA sign the CSR through a KeyPair, and writes a kubeconfig, either a new file
//! or merged into the user's kubeconfig; the private key is never sent anywhere.
//! `list` shows the KeyPairs issued for a cluster.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use shoal_api::resources::cluster::OidcSpec;
use shoal_api::resources::common::Condition;
use shoal_api::resources::keypair::KeyPairSpec;
use shoal_api::resources::organization::org_namespace;
use shoal_api::{Cluster, ClusterPhase, KeyPair};

use shoal_kube::endpoint::{api_host_port, resolves};

use crate::args::{KubeconfigCommand, KubeconfigCreateArgs, Output};
use crate::client::{find_kind, CliError};
use crate::commands::cluster_view::standing;
use crate::commands::wait::Deadline;
use crate::kubeconfig::{
    choose_gateway, endpoint, entry_name, merge, parse, render_new, Credentials, GatewayAddress,
    GuestAccess,
};
use crate::oidc_session::exec_user;
use crate::output::{emit, print, render_columns};

/// `Issued=False` reasons that the keypair controller clears by itself.
const TRANSIENT_REASONS: [&str; 1] = ["ClusterPkiPending"];

/// Runs a kubeconfig subcommand.
pub async fn run(client: &Client, cmd: &KubeconfigCommand) -> Result<(), CliError> {
    match cmd {
        KubeconfigCommand::Create(a) if a.oidc => create_oidc(client, a).await,
        KubeconfigCommand::Create(a) => create(client, a).await,
        KubeconfigCommand::Token(a) => crate::commands::oidc::token(a).await,
        KubeconfigCommand::List {
            cluster,
            org,
            output,
        } => list(client, org, cluster, *output).await,
    }
}

/// Where `create` writes.
#[derive(Debug)]
enum Target {
    /// A new, self-contained file.
    New(PathBuf),
    /// Merged into an existing (or new) kubeconfig.
    Merge(PathBuf),
}

impl Target {
    fn path(&self) -> &Path {
        match self {
            Target::New(p) | Target::Merge(p) => p,
        }
    }
}

/// The kubeconfig `create` merges into: the first file of `$KUBECONFIG`, as
/// kubectl writes new entries, else `~/.kube/config`.
fn merge_path() -> Result<PathBuf, CliError> {
    let from_env = std::env::var_os("KUBECONFIG")
        .and_then(|list| std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty()));
    let path = match from_env {
        Some(p) => p,
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".kube/config"))
            .ok_or_else(|| {
                CliError::Config("neither KUBECONFIG nor HOME is set: pass --output FILE".into())
            })?,
    };
    // Write through a symlink (a dotfiles checkout) rather than replacing it.
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

/// The file's text; a missing file is an empty kubeconfig.
fn read_existing(path: &Path) -> Result<String, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(CliError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `text` to `path` only its owner can read (mode 0600), atomically: a
/// temporary file in the same directory, flushed to disk, then renamed over
/// `path`. Missing directories are created (mode 0700).
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), CliError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    let file_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CliError::File { path, source }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(file_err(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".shoal-kubeconfig-")
        .tempfile_in(dir)
        .map_err(file_err(dir))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| tmp.write_all(text.as_bytes()))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(file_err(tmp.path()))?;
    tmp.persist(path).map_err(|e| CliError::File {
        path: path.to_owned(),
        source: e.error,
    })?;
    // The rename is durable once the directory is; a failure here is harmless.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The CSR's CN when `--cn-prefix` is not given: the local user name.
fn default_cn() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty() && !u.chars().any(char::is_control))
        .unwrap_or_else(|| "shoal".to_owned())
}

/// `generateName` for a KeyPair: `<cluster>-<cn as a DNS label part>-`.
fn keypair_prefix(cluster: &str, cn: &str) -> String {
    let mut part = String::new();
    for c in cn.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            part.push(c);
        } else if !part.ends_with('-') {
            part.push('-');
        }
    }
    let part: String = part.trim_matches('-').chars().take(20).collect();
    let part = part.trim_end_matches('-');
    if part.is_empty() {
        format!("{cluster}-")
    } else {
        format!("{cluster}-{part}-")
    }
}

/// The subject of a PEM certificate: its CN and O entries.
pub fn cert_subject(cert_pem: &str) -> Option<(String, Vec<String>)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_owned();
    let orgs = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_owned))
        .collect();
    Some((cn, orgs))
}

/// A spinner on stderr while waiting, when stderr is a terminal; silent otherwise.
struct Spinner(Option<ProgressBar>);

impl Spinner {
    fn new() -> Self {
        Self(std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        }))
    }

    fn say(&self, message: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(message);
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn issued_condition(kp: &KeyPair) -> Option<&Condition> {
    kp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Issued")
}

/// The cluster, or a usage error naming it.
async fn get_cluster(api: &Api<Cluster>, org: &str, name: &str) -> Result<Cluster, CliError> {
    api.get_opt(name).await?.ok_or_else(|| {
        CliError::Usage(format!(
            "cluster {org}/{name} does not exist; see 'shoal cluster list --org {org}'"
        ))
    })
}

/// Waits until the cluster has its API endpoint and CA; returns `(endpoint, CA PEM)`
/// and the cluster.
async fn wait_cluster_ca(
    api: &Api<Cluster>,
    org: &str,
    name: &str,
    deadline: &Deadline,
    spinner: &Spinner,
) -> Result<(String, String, Cluster), CliError> {
    loop {
        let cluster = get_cluster(api, org, name).await?;
        let status = cluster.status.clone().unwrap_or_default();
        if let (Some(ep), Some(ca)) = (status.api_endpoint, status.ca_certificate) {
            return Ok((ep, ca, cluster));
        }
        spinner.say(format!("waiting for cluster {org}/{name} to have its CA"));
        if !deadline.tick().await {
            return Err(deadline.timeout(
                format!("cluster {org}/{name} to have its CA (status.caCertificate)"),
                standing(&cluster),
            ));
        }
    }
}

/// The gateway the kubeconfig goes through ([`choose_gateway`]): `--gateway-address`,
/// else the server's published one when the API host name does not resolve.
async fn gateway_for(
    a: &KubeconfigCreateArgs,
    cluster: &Cluster,
    api_endpoint: &str,
) -> Result<Option<GatewayAddress>, CliError> {
    let published = cluster
        .status
        .as_ref()
        .and_then(|s| s.gateway_address.as_deref());
    let resolves = match (&a.gateway_address, published, api_host_port(api_endpoint)) {
        // A resolver that does not answer counts as no DNS record.
        (None, Some(_), Some((host, port))) => resolves(&host, port).await,
        _ => true,
    };
    choose_gateway(a.gateway_address.as_ref(), published, resolves).map_err(|e| {
        CliError::Usage(format!(
            "cluster {}/{}: the server's status.gatewayAddress {e}; pass --gateway-address",
            a.org, a.cluster
        ))
    })
}

/// Deletes a KeyPair whose certificate will never be used (its key is gone).
async fn discard(api: &Api<KeyPair>, ns: &str, name: &str) {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => eprintln!("keypair {ns}/{name} deleted"),
        Err(e) => eprintln!("warning: keypair {ns}/{name} could not be deleted: {e}"),
    }
}

/// Where a KeyPair stands, for `create`'s wait.
#[derive(Debug, PartialEq, Eq)]
enum Signing {
    /// The certificate is there.
    Signed,
    /// Not yet; the message says why, if the controller said.
    Waiting(Option<String>),
    /// `ClusterNotFound`: final only if the cluster is really gone (the
    /// controller may not have seen a cluster created a moment ago).
    ClusterNotFound(String),
    /// Refused for good: the reason and message of the `Issued=False` condition.
    Refused(String, String),
}

/// Where `kp` stands.
fn signing(kp: &KeyPair) -> Signing {
    if kp.status.as_ref().is_some_and(|s| s.certificate.is_some()) {
        return Signing::Signed;
    }
    match issued_condition(kp).filter(|c| c.status == "False") {
        None => Signing::Waiting(None),
        Some(c) if TRANSIENT_REASONS.contains(&c.reason.as_str()) => {
            Signing::Waiting(Some(c.message.clone()))
        }
        Some(c) if c.reason == "ClusterNotFound" => Signing::ClusterNotFound(c.message.clone()),
        Some(c) => Signing::Refused(c.reason.clone(), c.message.clone()),
    }
}

/// Waits until the KeyPair carries its certificate, or a condition refuses it.
async fn wait_signed(
    keypairs: &Api<KeyPair>,
    clusters: &Api<Cluster>,
    ns: &str,
    name: &str,
    deadline: &Deadline,
    spinner: &Spinner,
) -> Result<KeyPair, CliError> {
    let refused = |reason: String, message: String| CliError::Refused {
        keypair: format!("{ns}/{name}"),
        reason,
        message,
    };
    loop {
        let kp = keypairs.get(name).await?;
        let why = match signing(&kp) {
            Signing::Signed => return Ok(kp),
            Signing::Waiting(why) => why,
            Signing::ClusterNotFound(message) => {
                if clusters.get_opt(&kp.spec.cluster).await?.is_none() {
                    return Err(refused("ClusterNotFound".into(), message));
                }
                Some(message)
            }
            Signing::Refused(reason, message) => return Err(refused(reason, message)),
        };
        spinner.say(match why {
            Some(why) => format!("waiting for keypair {ns}/{name}: {why}"),
            None => format!("waiting for keypair {ns}/{name} to be signed"),
        });
        if !deadline.tick().await {
            let detail = issued_condition(&kp)
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| "no condition yet: is the keypair controller running?".into());
            return Err(deadline.timeout(format!("keypair {ns}/{name} to be signed"), detail));
        }
    }
}

/// Writes the kubeconfig; returns how, for the summary.
fn write_kubeconfig(
    target: &Target,
    access: &GuestAccess,
    switch_context: bool,
) -> Result<String, CliError> {
    let kubeconfig_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CliError::Kubeconfig { path, source }
    };
    match target {
        Target::New(path) => {
            let text = render_new(access).map_err(kubeconfig_err(path))?;
            write_atomic(path, &text)?;
            Ok("written as a new kubeconfig (current context)".to_owned())
        }
        Target::Merge(path) => {
            // Read again: the file may have changed while the CA was signing.
            let existing = read_existing(path)?;
            let text = merge(&existing, access, switch_context).map_err(kubeconfig_err(path))?;
            write_atomic(path, &text)?;
            Ok(if switch_context {
                "merged; now the current context".to_owned()
            } else {
                format!(
                    "merged; switch to it with 'kubectl config use-context {}'",
                    access.name
                )
            })
        }
    }
}

/// `kubeconfig create`.
async fn create(client: &Client, a: &KubeconfigCreateArgs) -> Result<(), CliError> {
    let target = match &a.output {
        Some(p) => Target::New(p.clone()),
        None => Target::Merge(merge_path()?),
    };
    // A kubeconfig that cannot be merged into fails before anything is created.
    if let Target::Merge(path) = &target {
        parse(&read_existing(path)?).map_err(|source| CliError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    }
    let cn = a.cn_prefix.clone().unwrap_or_else(default_cn);
    let ns = org_namespace(&a.org);
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let keypairs: Api<KeyPair> = Api::namespaced(client.clone(), &ns);
    let deadline = Deadline::after(a.timeout.as_secs());
    let spinner = Spinner::new();

    let (csr, key_pem) = shoal_pki::generate_csr(&cn, &[])
        .map_err(|e| CliError::Usage(format!("--cn-prefix {cn:?}: {e}")))?;
    let (api_endpoint, ca_pem, cluster) =
        wait_cluster_ca(&clusters, &a.org, &a.cluster, &deadline, &spinner).await?;
    let gateway = gateway_for(a, &cluster, &api_endpoint).await?;
    let endpoint = endpoint(&api_endpoint, gateway.as_ref())
        .map_err(|source| CliError::Usage(format!("cluster {}/{}: {source}", a.org, a.cluster)))?;
    let request = KeyPair::request(
        &ns,
        keypair_prefix(&a.cluster, &cn),
        KeyPairSpec {
            cluster: a.cluster.clone(),
            csr,
            ttl: a.ttl.clone(),
            groups: a.groups.clone(),
            description: a.description.clone(),
        },
    );
    let created = keypairs.create(&PostParams::default(), &request).await?;
    let name = created.name_any();
    spinner.say(format!("waiting for keypair {ns}/{name} to be signed"));
    let signed = match wait_signed(&keypairs, &clusters, &ns, &name, &deadline, &spinner).await {
        Ok(kp) => kp,
        Err(e) => {
            drop(spinner);
            discard(&keypairs, &ns, &name).await;
            return Err(e);
        }
    };
    drop(spinner);
    let status = signed.status.unwrap_or_default();
    let cert_pem = status.certificate.unwrap_or_default();
    let (subject_cn, orgs) = cert_subject(&cert_pem).unwrap_or_default();
    let access = GuestAccess {
        name: entry_name(&a.org, &a.cluster),
        endpoint,
        ca_pem,
        credentials: Credentials::Certificate { cert_pem, key_pem },
    };
    let written = match write_kubeconfig(&target, &access, a.switch_context) {
        Ok(w) => w,
        Err(e) => {
            discard(&keypairs, &ns, &name).await;
            return Err(e);
        }
    };
    let via = match &access.endpoint.tls_server_name {
        Some(sni) => format!(" (tls-server-name {sni})"),
        None => String::new(),
    };
    emit(&format!(
        "keypair.shoal.io/{name} signed\n\
         context {} in {}: {written}\n\
         \x20 CN:      {subject_cn}\n\
         \x20 groups:  {}\n\
         \x20 expires: {}\n\
         \x20 server:  {}{via}\n",
        access.name,
        target.path().display(),
        if orgs.is_empty() {
            "-".to_owned()
        } else {
            orgs.join(", ")
        },
        status.not_after.as_deref().unwrap_or("-"),
        access.endpoint.server,
    ))?;
    if cluster.status.as_ref().and_then(|s| s.phase) != Some(ClusterPhase::Ready) {
        eprintln!(
            "note: cluster {}/{} is not Ready yet ({}); its API answers once it is",
            a.org,
            a.cluster,
            standing(&cluster)
        );
    }
    Ok(())
}

/// The plugin arguments that sign in to `oidc`'s issuer for a guest cluster.
fn guest_token_args(oidc: &OidcSpec, ca_file: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        "kubeconfig".into(),
        "token".into(),
        "--issuer".into(),
        oidc.issuer_url.clone(),
        "--client-id".into(),
        oidc.client_id.clone(),
    ];
    if let Some(ca) = ca_file {
        args.push("--oidc-ca-file".into());
        args.push(ca.to_string_lossy().into_owned());
    }
    args
}

/// Writes a cluster's `spec.oidc.certificateAuthority` to
/// `~/.config/shoal/oidc-ca/<org>-<cluster>.crt`, where its plugin reads it.
fn save_issuer_ca(org: &str, cluster: &str, pem: &str) -> Result<PathBuf, CliError> {
    let dir = crate::client::shoal_config_path()
        .and_then(|c| c.parent().map(|d| d.join("oidc-ca")))
        .ok_or_else(|| {
            CliError::Usage(
                "HOME is not set, so the issuer's CA from spec.oidc has nowhere to go: pass \
                 --oidc-ca-file"
                    .into(),
            )
        })?;
    let path = dir.join(format!("{org}-{cluster}.crt"));
    let io = |source| CliError::File {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(&path, pem).map_err(io)?;
    Ok(path)
}

/// `kubeconfig create --oidc`: a kubeconfig whose user runs `shoal kubeconfig
/// token` for the issuer and client of the cluster's `spec.oidc`.
async fn create_oidc(client: &Client, a: &KubeconfigCreateArgs) -> Result<(), CliError> {
    let target = match &a.output {
        Some(p) => Target::New(p.clone()),
        None => Target::Merge(merge_path()?),
    };
    if let Target::Merge(path) = &target {
        parse(&read_existing(path)?).map_err(|source| CliError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    }
    let ns = org_namespace(&a.org);
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let cluster = get_cluster(&clusters, &a.org, &a.cluster).await?;
    let oidc = cluster.spec.oidc.clone().ok_or_else(|| {
        CliError::Usage(format!(
            "cluster {}/{} has no spec.oidc, so its API server does not accept OIDC tokens: set spec.oidc (issuerUrl, clientId) on the cluster, or drop --oidc to get a client certificate",
            a.org, a.cluster
        ))
    })?;
    let deadline = Deadline::after(a.timeout.as_secs());
    let spinner = Spinner::new();
    let (api_endpoint, ca_pem, cluster) =
        wait_cluster_ca(&clusters, &a.org, &a.cluster, &deadline, &spinner).await?;
    drop(spinner);
    let gateway = gateway_for(a, &cluster, &api_endpoint).await?;
    let endpoint = endpoint(&api_endpoint, gateway.as_ref())
        .map_err(|source| CliError::Usage(format!("cluster {}/{}: {source}", a.org, a.cluster)))?;
    let exe = std::env::current_exe().map_err(|source| CliError::File {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    // The plugin runs from any directory: give it an absolute CA path. Without
    // one, the cluster's own spec.oidc.certificateAuthority is kept for it.
    let oidc_ca = match (&a.oidc_ca_file, &oidc.certificate_authority) {
        (Some(p), _) => Some(std::path::absolute(p).map_err(|source| CliError::File {
            path: p.to_owned(),
            source,
        })?),
        (None, Some(pem)) => Some(save_issuer_ca(&a.org, &a.cluster, pem)?),
        (None, None) => None,
    };
    let access = GuestAccess {
        name: entry_name(&a.org, &a.cluster),
        endpoint,
        ca_pem,
        credentials: Credentials::Exec(exec_user(
            &exe,
            &guest_token_args(&oidc, oidc_ca.as_deref()),
        )),
    };
    let written = write_kubeconfig(&target, &access, a.switch_context)?;
    emit(&format!(
        "context {} in {}: {written}\n\x20 issuer:    {}\n\x20 client id: {}\n\x20 server:    {}\n\
         kubectl signs in to the issuer on first use ('shoal kubeconfig token')\n",
        access.name,
        target.path().display(),
        oidc.issuer_url,
        oidc.client_id,
        access.endpoint.server,
    ))
}

/// One row of `kubeconfig list`.
fn list_row(kp: &KeyPair) -> Vec<String> {
    let status = kp.status.clone().unwrap_or_default();
    let cn = status
        .certificate
        .as_deref()
        .and_then(cert_subject)
        .map_or_else(|| "-".to_owned(), |(cn, _)| cn);
    let groups = if kp.spec.groups.is_empty() {
        "-".to_owned()
    } else {
        kp.spec.groups.join(",")
    };
    let expires = match (&status.not_after, issued_condition(kp)) {
        (Some(t), _) => t.clone(),
        (None, Some(c))
            if c.status == "False" && !TRANSIENT_REASONS.contains(&c.reason.as_str()) =>
        {
            format!("refused:{}", c.reason)
        }
        _ => "-".to_owned(),
    };
    vec![
        kp.name_any(),
        cn,
        groups,
        expires,
        kp.spec.description.clone().unwrap_or_default(),
    ]
}

/// `kubeconfig list`: the KeyPairs of one cluster, oldest first.
async fn list(client: &Client, org: &str, cluster: &str, output: Output) -> Result<(), CliError> {
    let ns = org_namespace(org);
    let keypairs: Api<KeyPair> = Api::namespaced(client.clone(), &ns);
    let mut items: Vec<KeyPair> = keypairs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|kp| kp.spec.cluster == cluster)
        .collect();
    items.sort_by(|a, b| {
        (a.creation_timestamp(), a.name_any()).cmp(&(b.creation_timestamp(), b.name_any()))
    });
    if items.is_empty() {
        // No KeyPairs because of a typo is worth saying.
        let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
        get_cluster(&clusters, org, cluster).await?;
    }
    match output {
        Output::Table if items.is_empty() => {
            eprintln!("No keypairs found for cluster {org}/{cluster}.");
            Ok(())
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = items.iter().map(list_row).collect();
            emit(&render_columns(
                &["NAME", "CN", "GROUPS", "EXPIRES", "DESCRIPTION"],
                &rows,
            ))
        }
        Output::Json | Output::Yaml => {
            let values: Vec<serde_json::Value> = items
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            print(find_kind("keypairs")?, &values, false, false, output)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypair_names_derive_from_cluster_and_cn() {
        assert_eq!(keypair_prefix("demo", "alice"), "demo-alice-");
        assert_eq!(
            keypair_prefix("demo", "Alice Smith@Laptop"),
            "demo-alice-smith-laptop-"
        );
        assert_eq!(keypair_prefix("demo", "::"), "demo-");
        assert_eq!(
            keypair_prefix("demo", "a-very-long-common-name-indeed"),
            "demo-a-very-long-common-n-"
        );
    }

    fn keypair(status: serde_json::Value) -> KeyPair {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "KeyPair",
            "metadata": {"name": "demo-alice-x", "namespace": "org-acme"},
            "spec": {"cluster": "demo", "csr": "CSR"},
            "status": status,
        }))
        .expect("a KeyPair")
    }

    fn issued(status: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({"conditions": [
            {"type": "Issued", "status": status, "reason": reason, "message": "why"}
        ]})
    }

    #[test]
    fn only_final_conditions_end_the_wait() {
        assert_eq!(
            signing(&keypair(serde_json::json!({}))),
            Signing::Waiting(None)
        );
        assert_eq!(
            signing(&keypair(issued("False", "ClusterPkiPending"))),
            Signing::Waiting(Some("why".into()))
        );
        assert_eq!(
            signing(&keypair(issued("False", "ClusterNotFound"))),
            Signing::ClusterNotFound("why".into())
        );
        assert_eq!(
            signing(&keypair(issued("False", "InvalidCSR"))),
            Signing::Refused("InvalidCSR".into(), "why".into())
        );
        let mut signed = issued("True", "Signed");
        signed["certificate"] = "PEM".into();
        assert_eq!(signing(&keypair(signed)), Signing::Signed);
    }

    #[test]
    fn the_subject_of_a_signed_certificate_is_read() {
        let ca = shoal_pki::CertificateAuthority::generate("test-ca").expect("a CA");
        let groups = vec!["dev".to_owned(), "ops".to_owned()];
        let cert = ca
            .issue_client("alice:laptop", &groups, Duration::from_secs(3600))
            .expect("a client certificate");
        assert_eq!(
            cert_subject(&cert.cert_pem),
            Some(("alice:laptop".to_owned(), groups))
        );
        assert_eq!(cert_subject("not a certificate"), None);
    }

    #[test]
    fn atomic_writes_are_private_and_create_directories() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("new/.kube/config");
        write_atomic(&path, "one\n").expect("written");
        write_atomic(&path, "two\n").expect("rewritten");
        assert_eq!(std::fs::read_to_string(&path).expect("readable"), "two\n");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("a parent"))
            .expect("listable")
            .collect();
        assert_eq!(left.len(), 1, "no temporary files left behind");
    }
}
