//! `shoal org`.

use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use shoal_api::{OrgAwsAccess, Organization, OrganizationSpec};

use crate::args::OrgCommand;
use crate::client::{find_kind, CliError};
use crate::output::{emit_line, print};

/// Runs an org subcommand.
pub async fn run(client: &Client, cmd: &OrgCommand) -> Result<(), CliError> {
    let api: Api<Organization> = Api::all(client.clone());
    match cmd {
        OrgCommand::Create {
            name,
            display_name,
            aws_role_arn,
            aws_credentials_secret,
        } => {
            let aws = (aws_role_arn.is_some() || aws_credentials_secret.is_some()).then(|| {
                OrgAwsAccess {
                    role_arn: aws_role_arn.clone(),
                    credentials_secret: aws_credentials_secret.clone(),
                }
            });
            let org = Organization::new(
                name,
                OrganizationSpec {
                    display_name: display_name.clone(),
                    members: Vec::new(),
                    aws,
                },
            );
            api.create(&PostParams::default(), &org).await?;
            emit_line(format_args!(
                "organization.shoal.io/{name} created (namespace org-{name})"
            ))?;
        }
        OrgCommand::List { output } => {
            let list = api.list(&ListParams::default()).await?;
            let items: Vec<Value> = list
                .items
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect();
            print(find_kind("organizations")?, &items, false, false, *output)?;
        }
    }
    Ok(())
}
