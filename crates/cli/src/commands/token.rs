//! `shoal token`: tokens are Secrets in shoal-system holding only a hash.

use std::time::Duration;

use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::Value;
use shoal_api::resources::keypair::parse_ttl;
use shoal_apiserver::auth::{TokenRequest, TOKEN_NAMESPACE};

use crate::args::TokenCommand;
use crate::client::{dynamic_api, find_kind, CliError};
use crate::output::emit_line;

fn parse_role(s: &str) -> Result<shoal_api::OrgRole, CliError> {
    match s {
        "owner" => Ok(shoal_api::OrgRole::Owner),
        "member" => Ok(shoal_api::OrgRole::Member),
        "viewer" => Ok(shoal_api::OrgRole::Viewer),
        other => Err(CliError::Usage(format!(
            "--role {other:?} is not a role: use owner, member or viewer"
        ))),
    }
}

/// Runs a token subcommand.
pub async fn run(client: &Client, cmd: &TokenCommand) -> Result<(), CliError> {
    let secrets = dynamic_api(client, find_kind("secrets")?, Some(TOKEN_NAMESPACE));
    match cmd {
        TokenCommand::Create {
            org,
            role,
            user,
            ttl,
            description,
        } => {
            let role_v = parse_role(role)?;
            let ttl = ttl
                .as_deref()
                .map(|t| {
                    parse_ttl(t)
                        .map(Duration::from_secs)
                        .map_err(|e| CliError::Usage(format!("--ttl: {e}")))
                })
                .transpose()?;
            // A token for a mistyped organization would be accepted and useless.
            if dynamic_api(client, find_kind("organizations")?, None)
                .get_opt(org)
                .await?
                .is_none()
            {
                return Err(CliError::Usage(format!(
                    "organization {org:?} does not exist: create it first with 'shoal org create {org}'"
                )));
            }
            let req = TokenRequest {
                org: Some((org.clone(), role_v)),
                user: user.clone().unwrap_or_else(|| format!("{role}@{org}")),
                ttl,
                description: description.clone(),
            };
            let (token, secret) = req.mint(None);
            let dynamic =
                serde_json::from_value(secret).map_err(|e| CliError::Usage(e.to_string()))?;
            secrets.create(&PostParams::default(), &dynamic).await?;
            emit_line(format_args!("{token}"))?;
        }
        TokenCommand::List => {
            let list = secrets
                .list(
                    &ListParams::default()
                        .labels(&format!("{}=true", shoal_api::wellknown::label::TOKEN)),
                )
                .await?;
            emit_line(format_args!(
                "{:<16} {:<16} {:<14} {:<22} DESCRIPTION",
                "ID", "ORG", "ROLE", "EXPIRES"
            ))?;
            for s in list.items {
                let v = serde_json::to_value(&s).unwrap_or(Value::Null);
                let get = |p: &str| {
                    v.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                let id = get("/metadata/name")
                    .trim_start_matches("token-")
                    .to_owned();
                emit_line(format_args!(
                    "{:<16} {:<16} {:<14} {:<22} {}",
                    id,
                    get("/metadata/labels/shoal.io~1org"),
                    get("/metadata/labels/shoal.io~1role"),
                    get("/metadata/annotations/shoal.io~1expires"),
                    get("/metadata/annotations/shoal.io~1description"),
                ))?;
            }
        }
        TokenCommand::Revoke { id } => {
            secrets
                .delete(&format!("token-{id}"), &DeleteParams::default())
                .await?;
            emit_line(format_args!("token {id} revoked"))?;
        }
    }
    Ok(())
}
