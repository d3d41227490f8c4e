//! The AWS clients of one cluster: credentials from a Secret or else the SDK's own
//! chain (environment, profile, instance role), an optional role to assume, and an
//! optional endpoint that points every service somewhere else (moto in tests).

use aws_config::{BehaviorVersion, Region};

use crate::access::Access;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// How the server reaches AWS.
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    /// One endpoint for every service (`--aws-endpoint-url`), e.g. moto's.
    pub endpoint_url: Option<String>,
    /// The server's base domain, for clusters whose spec names no domain.
    pub base_domain: String,
}

/// The service clients one cluster is reconciled with.
#[derive(Clone, Debug)]
pub struct Clients {
    /// EC2 in us-east-1, which answers which regions exist whatever the cluster's is.
    pub home: aws_sdk_ec2::Client,
    /// EC2: network, instances, launch templates.
    pub ec2: aws_sdk_ec2::Client,
    /// Elastic Load Balancing v2: the API's and the ingress's load balancers.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// Auto Scaling: one group per NodePool.
    pub asg: aws_sdk_autoscaling::Client,
    /// IAM: roles and instance profiles.
    pub iam: aws_sdk_iam::Client,
    /// Route 53: the cluster's records.
    pub dns: aws_sdk_route53::Client,
}

impl Clients {
    /// Clients for `region`, with `access`'s credentials and role.
    pub async fn new(settings: &AwsSettings, region: &str, access: &Access) -> Self {
        // rustls on ring, as the rest of Shoal, rather than the SDK's default aws-lc.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .http_client(http);
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(secret) = &access.secret {
            loader = loader.credentials_provider(secret.credentials.clone());
        }
        let mut config = loader.load().await;
        if let Some(role) = &access.role_arn {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("shoal-provider-aws")
                .configure(&config)
                .build()
                .await;
            config = config
                .into_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .build();
        }
        let home = aws_sdk_ec2::config::Builder::from(&config)
            .region(Region::new("us-east-1"))
            .build();
        Self {
            home: aws_sdk_ec2::Client::from_conf(home),
            ec2: aws_sdk_ec2::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            asg: aws_sdk_autoscaling::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            dns: aws_sdk_route53::Client::new(&config),
        }
    }
}
