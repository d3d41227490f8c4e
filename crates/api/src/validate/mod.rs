//! Validation as pure functions: names, quantities, CIDRs, OIDC settings and the
//! field errors they produce.

mod cidr;
mod field;
mod name;
mod oidc;
mod quantity;

pub use cidr::{Cidr, CidrError};
pub use field::{FieldCause, FieldErrors};
pub use name::{
    validate_dns1123_label, validate_dns1123_subdomain, validate_label_key, validate_label_value,
    NameError,
};
pub use oidc::validate_oidc;
pub use quantity::{Quantity, QuantityError};
