//! What the signed-in user may do, asked of the API with a SelfSubjectAccessReview,
//! so that a page offers only the actions the API would accept. The API still
//! decides every request: hiding a button is a courtesy, not a guard.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, ListParams, PostParams};
use shoal_api::resources::organization::{org_namespace, Organization};

/// Whether the user of `client` may `verb` the shoal.io `resource` in
/// `namespace` (`None`: at the cluster scope), named `name` if given. An API
/// that cannot answer counts as no.
pub async fn can(
    client: &kube::Client,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(shoal_api::GROUP.to_owned()),
                resource: Some(resource.to_owned()),
                verb: Some(verb.to_owned()),
                namespace: namespace.map(str::to_owned),
                name: name.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(answer) => answer.status.is_some_and(|s| s.allowed),
        Err(e) => {
            tracing::debug!(error = %e, verb, resource, "the access review failed");
            false
        }
    }
}

/// Whether the user may create clusters anywhere: at the cluster scope (an
/// administrator) or in one of the organizations it can see.
pub async fn can_create_clusters(client: &kube::Client) -> bool {
    if can(client, "create", "clusters", None, None).await {
        return true;
    }
    let Ok(orgs) = Api::<Organization>::all(client.clone())
        .list(&ListParams::default())
        .await
    else {
        return false;
    };
    for org in orgs.items.iter().filter_map(|o| o.metadata.name.as_deref()) {
        if can(
            client,
            "create",
            "clusters",
            Some(&org_namespace(org)),
            None,
        )
        .await
        {
            return true;
        }
    }
    false
}
