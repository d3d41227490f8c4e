//! Kubeconfig files, rendered as pure data.

use base64::Engine;
use serde_json::json;

/// Renders a kubeconfig with one cluster, one token user and one context.
pub fn render_token_kubeconfig(
    context: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
        "preferences": {},
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_yaml_kubectl_reads() -> Result<(), serde_yaml::Error> {
        let text = render_token_kubeconfig(
            "shoal",
            "https://127.0.0.1:6443",
            "PEM",
            "admin",
            "shoal.admin.x",
        );
        let v: serde_json::Value = serde_yaml::from_str(&text)?;
        assert_eq!(v["current-context"], "shoal");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(v["users"][0]["user"]["token"], "shoal.admin.x");
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        Ok(())
    }
}
