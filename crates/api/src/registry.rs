//! The kinds the management API serves: names, scope, validation and table
//! columns, as data the API server, the CLI and `shoal crds` share.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resources::{
    BareMetalMachine, Cluster, Host, KeyPair, Machine, NodePool, Organization, Release,
};
use crate::validate::{
    validate_dns1123_label, validate_dns1123_subdomain, FieldCause, FieldErrors,
};

/// Shoal's own API group.
pub const GROUP: &str = "shoal.io";
/// Shoal's API version.
pub const VERSION: &str = "v1alpha1";

/// A column of `kubectl get` output.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// The header, e.g. `STATUS`.
    pub name: &'static str,
    /// The OpenAPI type: `string`, `integer`, `boolean` or `date`.
    pub type_: &'static str,
    /// A dotted path into the object, e.g. `.status.phase`.
    pub json_path: &'static str,
    /// What the column shows.
    pub description: &'static str,
}

/// Checks an object of one kind, reporting every invalid field.
pub type Validator = fn(&Value) -> Result<(), Vec<FieldCause>>;

/// One kind served by the API.
#[derive(Clone, Copy, Debug)]
pub struct KindInfo {
    /// The API group; empty for the core group.
    pub group: &'static str,
    /// The version, e.g. `v1alpha1`.
    pub version: &'static str,
    /// The kind, e.g. `Cluster`.
    pub kind: &'static str,
    /// The URL plural, e.g. `clusters`.
    pub plural: &'static str,
    /// The singular name.
    pub singular: &'static str,
    /// Short names for `kubectl get`.
    pub short_names: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource; spec and status are then written separately.
    pub has_status: bool,
    /// Bumps `metadata.generation` on spec changes.
    pub has_spec: bool,
    /// Readable and writable only by cluster admins, and encrypted at rest.
    pub sensitive: bool,
    /// The storage this kind shares with others (both Event views share `events`).
    pub storage: &'static str,
    /// Columns after NAME for table output (AGE comes from the server).
    pub columns: &'static [Column],
    /// Checks an incoming object.
    pub validate: Validator,
    /// What the server does for this kind beyond the generic handling.
    pub behavior: Behavior,
}

/// What the API server does for a kind beyond the generic handling, as flags on
/// its registry entry instead of comparisons of kind names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behavior {
    /// The server owns the `shoal.io/requested-by` annotation: it stamps the
    /// caller on create and keeps it on every update and patch (KeyPair).
    pub requested_by: bool,
    /// Creating one creates its organization's namespace (Organization).
    pub creates_namespace: bool,
    /// Its owners (not only cluster admins) may update it (Organization).
    pub owner_may_update: bool,
    /// `spec.release` must name an existing Release when it is created (Cluster).
    pub references_release: bool,
    /// It serves the `endpoints` subresource (Cluster).
    pub endpoints: bool,
    /// Its status is `phase: Active` from creation, whatever the client sent
    /// (Namespace).
    pub always_active: bool,
    /// What an organization's token may do with it.
    pub tenant: TenantAccess,
    /// Holds the bootstrap credentials in the system namespace, which even
    /// cluster admins may not change or delete (Secret).
    pub bootstrap_credentials: bool,
    /// Accepts strategic merge patches, served as merge patches (the Kubernetes
    /// built-in kinds).
    pub strategic_merge: bool,
    /// How this kind's view relates to what is stored.
    pub view: StorageView,
    /// The field paths a field selector may name.
    pub field_selectors: &'static [&'static str],
    /// A spec field no two objects of the kind may share, as a JSON pointer
    /// (BareMetalMachine's `/spec/mac`): a create that repeats one is refused.
    pub unique_field: Option<&'static str>,
    /// `stringData` is folded into `data` on every write, as Kubernetes does
    /// (Secret).
    pub folds_string_data: bool,
    /// Fields that keep the value they were created with, as JSON pointers, with
    /// what to do instead of changing one (a Cluster's AWS region and VPC network:
    /// the VPC is built on them).
    pub immutable_fields: &'static [(&'static str, &'static str)],
}

/// What an organization's token may do with a kind; cluster admins may do
/// everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantAccess {
    /// Nothing: only cluster admins use it (Secret, Lease, Host).
    AdminOnly,
    /// Read every object, write none (Release).
    ReadAll,
    /// See only the object named after the organization; owners may update it
    /// when `owner_may_update` is set (Organization).
    OwnOrganization,
    /// See only the organization's namespace (Namespace).
    OwnNamespace,
    /// Read in the organization's namespace; only controllers write (Machine).
    NamespaceRead,
    /// Read in the organization's namespace, and write there with the owner or
    /// member role (Cluster, NodePool, KeyPair, Event).
    NamespaceWrite,
}

/// How the objects of a kind are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageView {
    /// Stored as served.
    AsServed,
    /// A core Event: stored as served, with its fields normalized.
    CoreEvent,
    /// An `events.k8s.io` Event: stored in the core form and converted both ways.
    EventsV1,
}

/// The field selectors every kind supports.
pub const NAME_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

impl Behavior {
    /// Nothing beyond the generic handling.
    pub const NONE: Behavior = Behavior {
        requested_by: false,
        creates_namespace: false,
        owner_may_update: false,
        references_release: false,
        endpoints: false,
        always_active: false,
        tenant: TenantAccess::AdminOnly,
        bootstrap_credentials: false,
        strategic_merge: false,
        view: StorageView::AsServed,
        field_selectors: NAME_FIELDS,
        unique_field: None,
        folds_string_data: false,
        immutable_fields: &[],
    };
}

/// Names one kind in the registry by group and kind, for code that needs a
/// particular kind (to create a Namespace, read a Secret), not a behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindRef {
    /// The API group; empty for the core group.
    pub group: &'static str,
    /// The kind.
    pub kind: &'static str,
}

impl KindRef {
    /// The registry entry; every constant in [`kinds`] names a served kind.
    pub fn info(self) -> &'static KindInfo {
        KINDS
            .iter()
            .find(|k| k.group == self.group && k.kind == self.kind)
            .expect("every KindRef constant names a kind in KINDS")
    }
}

/// The kinds other code refers to by identity.
pub mod kinds {
    use super::{KindRef, GROUP};

    /// Core Namespaces.
    pub const NAMESPACE: KindRef = KindRef {
        group: "",
        kind: "Namespace",
    };
    /// Core Secrets.
    pub const SECRET: KindRef = KindRef {
        group: "",
        kind: "Secret",
    };
    /// Shoal Releases.
    pub const RELEASE: KindRef = KindRef {
        group: GROUP,
        kind: "Release",
    };
    /// Shoal Clusters.
    pub const CLUSTER: KindRef = KindRef {
        group: GROUP,
        kind: "Cluster",
    };
    /// Shoal KeyPairs.
    pub const KEY_PAIR: KindRef = KindRef {
        group: GROUP,
        kind: "KeyPair",
    };
    /// Shoal Organizations.
    pub const ORGANIZATION: KindRef = KindRef {
        group: GROUP,
        kind: "Organization",
    };

    /// Every constant above.
    pub const ALL: &[KindRef] = &[NAMESPACE, SECRET, RELEASE, CLUSTER, KEY_PAIR, ORGANIZATION];
}

impl KindInfo {
    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL prefix of this kind's group and version: `/api/v1` or `/apis/g/v`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

/// Deserializes `obj` as `T`, naming the field of the first error.
pub fn decode_typed<T: DeserializeOwned>(obj: &Value) -> Result<T, Vec<FieldCause>> {
    serde_path_to_error::deserialize::<_, T>(obj).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        vec![cause_from_serde(&path, &message)]
    })
}

fn cause_from_serde(path: &str, message: &str) -> FieldCause {
    let path = if path == "." {
        String::new()
    } else {
        path.to_owned()
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let field = join_field(&path, name);
        return FieldCause::not_supported(
            field.clone(),
            format!("unknown field {field:?}: remove it, or check its spelling ({message})"),
        );
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let field = join_field(&path, name);
        return FieldCause::required(field, format!("{name} is required"));
    }
    FieldCause::invalid(path, message.to_owned())
}

fn join_field(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else if path == name || path.ends_with(&format!(".{name}")) {
        path.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The top-level fields every object may have.
const TOP_LEVEL: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Rejects unknown top-level fields: Shoal refuses what it would otherwise drop.
pub fn check_top_level(obj: &Value, allowed_extra: &[&str]) -> Result<(), Vec<FieldCause>> {
    let Some(map) = obj.as_object() else {
        return Err(vec![FieldCause::invalid(
            "",
            "the body must be a JSON or YAML object",
        )]);
    };
    let unknown: Vec<FieldCause> = map
        .keys()
        .filter(|k| !TOP_LEVEL.contains(&k.as_str()) && !allowed_extra.contains(&k.as_str()))
        .map(|k| {
            FieldCause::not_supported(
                k.clone(),
                format!("unknown field {k:?}: remove it, or check its spelling"),
            )
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(unknown)
    }
}

/// Checks `metadata.name`, labels and annotations.
pub fn check_metadata(obj: &Value, label_name: bool) -> Result<(), Vec<FieldCause>> {
    let mut errs = FieldErrors::default();
    let meta = obj.get("metadata");
    match meta.and_then(|m| m.get("name")).and_then(Value::as_str) {
        Some(name) => {
            let checked = if label_name {
                validate_dns1123_label(name)
            } else {
                validate_dns1123_subdomain(name)
            };
            errs.check("metadata.name", checked);
        }
        None => {
            let generate = meta.and_then(|m| m.get("generateName")).is_some();
            if !generate {
                errs.push(FieldCause::required(
                    "metadata.name",
                    "name or generateName is required",
                ));
            }
        }
    }
    if let Some(labels) = meta
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    {
        for (k, v) in labels {
            errs.check(
                &format!("metadata.labels[{k}]"),
                crate::validate::validate_label_key(k),
            );
            match v.as_str() {
                Some(v) => errs.check(
                    &format!("metadata.labels[{k}]"),
                    crate::validate::validate_label_value(v),
                ),
                None => errs.push(FieldCause::invalid(
                    format!("metadata.labels[{k}]"),
                    "label values must be strings",
                )),
            }
        }
    }
    errs.into_result()
}

/// A Shoal resource's own checks beyond its types.
pub trait Validate {
    /// Records every invalid field.
    fn validate(&self, errs: &mut FieldErrors);
}

macro_rules! impl_validate {
    ($($kind:ty),*) => {$(
        impl Validate for $kind {
            fn validate(&self, errs: &mut FieldErrors) {
                self.spec.validate(errs);
            }
        }
    )*};
}
impl_validate!(
    Organization,
    Release,
    Cluster,
    NodePool,
    Machine,
    Host,
    KeyPair,
    BareMetalMachine
);

fn validate_shoal<T: DeserializeOwned + Validate>(obj: &Value) -> Result<(), Vec<FieldCause>> {
    check_top_level(obj, &[])?;
    check_metadata(obj, true)?;
    if obj.get("spec").is_none() {
        return Err(vec![FieldCause::required("spec", "spec is required")]);
    }
    let typed: T = decode_typed(obj)?;
    let mut errs = FieldErrors::default();
    typed.validate(&mut errs);
    errs.into_result()
}

fn validate_k8s<T: DeserializeOwned>(
    extra: &'static [&'static str],
) -> impl Fn(&Value) -> Result<(), Vec<FieldCause>> {
    move |obj| {
        check_top_level(obj, extra)?;
        check_metadata(obj, false)?;
        decode_typed::<T>(obj).map(|_| ())
    }
}

fn validate_lease(obj: &Value) -> Result<(), Vec<FieldCause>> {
    validate_k8s::<k8s_openapi::api::coordination::v1::Lease>(&[])(obj)
}

fn validate_core_event(obj: &Value) -> Result<(), Vec<FieldCause>> {
    const EXTRA: &[&str] = &[
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "series",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    ];
    validate_k8s::<k8s_openapi::api::core::v1::Event>(EXTRA)(obj)
}

fn validate_events_event(obj: &Value) -> Result<(), Vec<FieldCause>> {
    const EXTRA: &[&str] = &[
        "regarding",
        "related",
        "note",
        "reason",
        "type",
        "action",
        "eventTime",
        "series",
        "reportingController",
        "reportingInstance",
        "deprecatedSource",
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
    ];
    validate_k8s::<k8s_openapi::api::events::v1::Event>(EXTRA)(obj)
}

fn validate_namespace(obj: &Value) -> Result<(), Vec<FieldCause>> {
    check_top_level(obj, &[])?;
    check_metadata(obj, true)?;
    decode_typed::<k8s_openapi::api::core::v1::Namespace>(obj).map(|_| ())
}

fn validate_secret(obj: &Value) -> Result<(), Vec<FieldCause>> {
    validate_k8s::<k8s_openapi::api::core::v1::Secret>(&["data", "stringData", "type", "immutable"])(
        obj,
    )
}

/// The field selectors of core Events.
const CORE_EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "type",
    "source",
    "reportingComponent",
];

/// The field selectors of `events.k8s.io` Events.
const EVENTS_V1_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "reason",
    "type",
    "reportingController",
];

const fn col(
    name: &'static str,
    type_: &'static str,
    json_path: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        json_path,
        description,
    }
}

/// Every kind the API serves.
pub static KINDS: &[KindInfo] = &[
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Organization",
        plural: "organizations",
        singular: "organization",
        short_names: &["org"],
        namespaced: false,
        has_status: true,
        has_spec: true,
        sensitive: false,
        storage: "organizations",
        columns: &[
            col(
                "DISPLAY NAME",
                "string",
                ".spec.displayName",
                "A human-friendly name",
            ),
            col(
                "NAMESPACE",
                "string",
                ".status.namespace",
                "The organization's namespace",
            ),
        ],
        validate: validate_shoal::<Organization>,
        behavior: Behavior {
            creates_namespace: true,
            owner_may_update: true,
            tenant: TenantAccess::OwnOrganization,
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Release",
        plural: "releases",
        singular: "release",
        short_names: &["rel"],
        namespaced: false,
        has_status: false,
        has_spec: true,
        sensitive: false,
        storage: "releases",
        columns: &[
            col(
                "KUBERNETES",
                "string",
                ".spec.kubernetesVersion",
                "Kubernetes version",
            ),
            col("STATE", "string", ".spec.state", "active or deprecated"),
        ],
        validate: validate_shoal::<Release>,
        behavior: Behavior {
            tenant: TenantAccess::ReadAll,
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Cluster",
        plural: "clusters",
        singular: "cluster",
        short_names: &["cl"],
        namespaced: true,
        has_status: true,
        has_spec: true,
        sensitive: false,
        storage: "clusters",
        columns: &[
            col("STATUS", "string", ".status.phase", "The cluster's phase"),
            col("RELEASE", "string", ".spec.release", "The release it runs"),
            col(
                "NODES",
                "string",
                ".status.nodes",
                "Ready over desired nodes",
            ),
        ],
        validate: validate_shoal::<Cluster>,
        behavior: Behavior {
            references_release: true,
            endpoints: true,
            tenant: TenantAccess::NamespaceWrite,
            immutable_fields: &[
                (
                    "/spec/provider/aws/region",
                    "the cluster's VPC is in its region: create a new cluster in the other region",
                ),
                (
                    "/spec/provider/aws/vpcCidr",
                    "the cluster's VPC and subnets are built on its network: create a new cluster with the other network",
                ),
            ],
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "NodePool",
        plural: "nodepools",
        singular: "nodepool",
        short_names: &["np"],
        namespaced: true,
        has_status: true,
        has_spec: true,
        sensitive: false,
        storage: "nodepools",
        columns: &[
            col("CLUSTER", "string", ".spec.cluster", "The pool's cluster"),
            col("DESIRED", "integer", ".spec.replicas", "Desired machines"),
            col(
                "READY",
                "integer",
                ".status.readyReplicas",
                "Ready machines",
            ),
        ],
        validate: validate_shoal::<NodePool>,
        behavior: Behavior {
            tenant: TenantAccess::NamespaceWrite,
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Machine",
        plural: "machines",
        singular: "machine",
        short_names: &["ma"],
        namespaced: true,
        has_status: true,
        has_spec: true,
        sensitive: false,
        storage: "machines",
        columns: &[
            col(
                "CLUSTER",
                "string",
                ".spec.cluster",
                "The machine's cluster",
            ),
            col("ROLE", "string", ".spec.role", "control-plane or worker"),
            col("HOST", "string", ".spec.hostName", "The host it runs on"),
            col("IP", "string", ".spec.ip", "Its cluster-network address"),
            col("PHASE", "string", ".status.phase", "The machine's phase"),
        ],
        validate: validate_shoal::<Machine>,
        behavior: Behavior {
            tenant: TenantAccess::NamespaceRead,
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Host",
        plural: "hosts",
        singular: "host",
        short_names: &[],
        namespaced: false,
        has_status: true,
        has_spec: true,
        sensitive: false,
        storage: "hosts",
        columns: &[
            col(
                "READY",
                "string",
                r#".status.conditions[?(@.type=="Ready")].status"#,
                "Whether its agent is running and heartbeating",
            ),
            col(
                "UNDERLAY",
                "string",
                ".status.underlayIp",
                "The VXLAN underlay address",
            ),
            col("KVM", "boolean", ".status.kvm", "Whether KVM is usable"),
            col(
                "UNSCHEDULABLE",
                "boolean",
                ".spec.unschedulable",
                "Cordoned",
            ),
        ],
        validate: validate_shoal::<Host>,
        behavior: Behavior::NONE,
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "KeyPair",
        plural: "keypairs",
        singular: "keypair",
        short_names: &["kp"],
        namespaced: true,
        has_status: true,
        has_spec: true,
        sensitive: false,
        storage: "keypairs",
        columns: &[
            col(
                "CLUSTER",
                "string",
                ".spec.cluster",
                "The cluster it is for",
            ),
            col(
                "EXPIRES",
                "string",
                ".status.notAfter",
                "Certificate expiry",
            ),
            col(
                "DESCRIPTION",
                "string",
                ".spec.description",
                "Why it was issued",
            ),
        ],
        validate: validate_shoal::<KeyPair>,
        behavior: Behavior {
            requested_by: true,
            tenant: TenantAccess::NamespaceWrite,
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "BareMetalMachine",
        plural: "baremetalmachines",
        singular: "baremetalmachine",
        short_names: &["bmm"],
        namespaced: false,
        has_status: true,
        has_spec: true,
        sensitive: false,
        storage: "baremetalmachines",
        columns: &[
            col("MAC", "string", ".spec.mac", "PXE MAC address"),
            col("ROLE", "string", ".spec.role", "What it becomes"),
            col("STATE", "string", ".status.state", "Provisioning state"),
        ],
        validate: validate_shoal::<BareMetalMachine>,
        behavior: Behavior {
            unique_field: Some("/spec/mac"),
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        namespaced: true,
        has_status: false,
        has_spec: false,
        sensitive: false,
        storage: "leases",
        columns: &[col(
            "HOLDER",
            "string",
            ".spec.holderIdentity",
            "The current holder",
        )],
        validate: validate_lease,
        behavior: Behavior {
            strategic_merge: true,
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        has_status: false,
        has_spec: false,
        sensitive: false,
        storage: "events",
        columns: &[
            col("TYPE", "string", ".type", "Normal or Warning"),
            col("REASON", "string", ".reason", "Why"),
            col(
                "OBJECT",
                "string",
                ".regarding.name",
                "The object it is about",
            ),
            col("MESSAGE", "string", ".note", "What happened"),
        ],
        validate: validate_events_event,
        behavior: Behavior {
            tenant: TenantAccess::NamespaceWrite,
            strategic_merge: true,
            view: StorageView::EventsV1,
            field_selectors: EVENTS_V1_FIELDS,
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        has_status: false,
        has_spec: false,
        sensitive: false,
        storage: "events",
        columns: &[
            col("TYPE", "string", ".type", "Normal or Warning"),
            col("REASON", "string", ".reason", "Why"),
            col(
                "OBJECT",
                "string",
                ".involvedObject.name",
                "The object it is about",
            ),
            col("MESSAGE", "string", ".message", "What happened"),
        ],
        validate: validate_core_event,
        behavior: Behavior {
            tenant: TenantAccess::NamespaceWrite,
            strategic_merge: true,
            view: StorageView::CoreEvent,
            field_selectors: CORE_EVENT_FIELDS,
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        has_status: true,
        has_spec: false,
        sensitive: false,
        storage: "namespaces",
        columns: &[col(
            "STATUS",
            "string",
            ".status.phase",
            "Active or Terminating",
        )],
        validate: validate_namespace,
        behavior: Behavior {
            always_active: true,
            tenant: TenantAccess::OwnNamespace,
            strategic_merge: true,
            field_selectors: &["metadata.name", "status.phase"],
            ..Behavior::NONE
        },
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        has_status: false,
        has_spec: false,
        sensitive: true,
        storage: "secrets",
        columns: &[col("TYPE", "string", ".type", "The secret's type")],
        validate: validate_secret,
        behavior: Behavior {
            bootstrap_credentials: true,
            strategic_merge: true,
            folds_string_data: true,
            field_selectors: &["metadata.name", "metadata.namespace", "type"],
            ..Behavior::NONE
        },
    },
];

/// Finds a kind by group, version and URL plural.
pub fn find_by_plural(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Every group and version served, in a stable order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

/// Reads a dotted path such as `.status.phase` from an object. A step may pick the
/// element of a list whose field has a value, as printer columns do:
/// `.status.conditions[?(@.type=="Ready")].status`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = obj;
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        let (step, filter, tail) = match (rest.find('['), rest.find('.')) {
            (Some(b), dot) if dot.is_none_or(|d| b < d) => {
                let end = rest[b..].find(")]")? + b;
                (&rest[..b], Some(&rest[b + 1..end + 1]), &rest[end + 2..])
            }
            (_, Some(d)) => (&rest[..d], None, &rest[d..]),
            (_, None) => (rest, None, ""),
        };
        v = v.get(step)?;
        if let Some(filter) = filter {
            let (field, want) = parse_filter(filter)?;
            v = v
                .as_array()?
                .iter()
                .find(|e| e.get(field).and_then(Value::as_str) == Some(want))?;
        }
        rest = tail.trim_start_matches('.');
    }
    Some(v)
}

/// `?(@.FIELD=="VALUE")` as (FIELD, VALUE).
fn parse_filter(filter: &str) -> Option<(&str, &str)> {
    let inner = filter.strip_prefix("?(@.")?.strip_suffix(')')?;
    let (field, value) = inner.split_once("==")?;
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))?;
    Some((field.trim(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster() -> Value {
        json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "org-acme"},
            "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}}
        })
    }

    fn kind(name: &str) -> &'static KindInfo {
        KINDS
            .iter()
            .find(|k| k.kind == name && k.group == GROUP)
            .expect("known kind")
    }

    #[test]
    fn a_json_path_may_pick_a_list_element_by_a_field() {
        let host = json!({"status": {"underlayIp": "10.79.0.11", "conditions": [
            {"type": "Drained", "status": "False"},
            {"type": "Ready", "status": "True"},
        ]}});
        assert_eq!(
            json_path(&host, ".status.underlayIp"),
            Some(&json!("10.79.0.11"))
        );
        assert_eq!(
            json_path(&host, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(&json!("True"))
        );
        assert_eq!(
            json_path(&host, ".status.conditions[?(@.type=='Drained')].status"),
            Some(&json!("False"))
        );
        assert_eq!(
            json_path(&host, r#".status.conditions[?(@.type=="Gone")].status"#),
            None
        );
        assert_eq!(json_path(&host, ".status.conditions[?(@.type=="), None);
        assert_eq!(
            json_path(&json!({}), r#".status.conditions[?(@.type=="Ready")]"#),
            None
        );
    }

    #[test]
    fn accepts_a_valid_cluster() {
        assert_eq!((kind("Cluster").validate)(&cluster()), Ok(()));
    }

    #[test]
    fn names_unknown_and_invalid_fields() {
        let mut c = cluster();
        c["spec"]["controlPlane"]["colour"] = json!("red");
        let errs = (kind("Cluster").validate)(&c).expect_err("unknown field");
        assert_eq!(errs[0].field, "spec.controlPlane.colour");
        assert_eq!(errs[0].reason, "FieldValueNotSupported");

        let mut c = cluster();
        c["spec"]["controlPlane"]["replicas"] = json!(2);
        let errs = (kind("Cluster").validate)(&c).expect_err("replicas");
        assert_eq!(errs[0].field, "spec.controlPlane.replicas");

        let mut c = cluster();
        c["spec"]["controlPlane"]["memory"] = json!("2GB");
        let errs = (kind("Cluster").validate)(&c).expect_err("quantity");
        assert_eq!(errs[0].field, "spec.controlPlane.memory");

        let mut c = cluster();
        c["spec"]["network"] = json!({"podCidr": "10.0.0.1/8"});
        let errs = (kind("Cluster").validate)(&c).expect_err("cidr");
        assert_eq!(errs[0].field, "spec.network.podCidr");

        let mut c = cluster();
        c["metadata"]["name"] = json!("Bad_Name");
        let errs = (kind("Cluster").validate)(&c).expect_err("name");
        assert_eq!(errs[0].field, "metadata.name");

        let mut c = cluster();
        c["extra"] = json!(1);
        let errs = (kind("Cluster").validate)(&c).expect_err("top level");
        assert_eq!(errs[0].field, "extra");
    }

    #[test]
    fn kind_constants_name_served_kinds() {
        for r in kinds::ALL {
            assert_eq!((r.info().group, r.info().kind), (r.group, r.kind));
        }
    }

    #[test]
    fn tenant_namespace_access_is_only_on_namespaced_kinds() {
        for k in KINDS {
            if matches!(
                k.behavior.tenant,
                TenantAccess::NamespaceRead | TenantAccess::NamespaceWrite
            ) {
                assert!(k.namespaced, "{}", k.kind);
            }
            assert!(
                k.behavior.field_selectors.contains(&"metadata.name"),
                "{}",
                k.kind
            );
        }
    }

    #[test]
    fn every_plural_is_unique_per_group_version() {
        for k in KINDS {
            assert_eq!(
                find_by_plural(k.group, k.version, k.plural).map(|f| f.kind),
                Some(k.kind)
            );
        }
    }
}
