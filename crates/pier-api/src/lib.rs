//! Pier's API vocabulary: the resource types every other crate and every client speaks,
//! validated names and references as newtypes, and the one error shape served over HTTP.
//!
//! Nothing in here touches the host. Types that come from users (`ImageRef`, `Digest`,
//! `ProjectName`, `Ipv4Net`, `Ipv4Address`, `MacAddress`, `ByteSize`, `PortSpec`,
//! `VolumeFlag`, `MountFlag`, `TmpfsFlag`) reject bad input when parsed or deserialized, with a
//! message that shows a good value, so nothing unvalidated travels further in.

// Docker's JSON shapes (`docker`) are large `json!` literals.
#![recursion_limit = "256"]

/// Describes a validated string newtype as a plain string in the OpenAPI document.
#[macro_export]
macro_rules! string_schema {
    ($ty:ty, $desc:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($desc))
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}

pub mod build;
pub mod cluster;
pub mod containers;
pub mod detach;
pub mod docker;
pub mod error;
pub mod form;
pub mod host_error;
pub mod ids;
pub mod limits;
pub mod mounts;
pub mod names;
pub mod net;
pub mod networks;
pub mod ports;
pub mod reference;
pub mod registry;
pub mod size;
pub mod system;
pub mod terminal;
pub mod time;
pub mod types;
pub mod volumes;

pub use error::{ErrorBody, ErrorKind};
pub use ids::{hex, random_hex, ContainerId, NetworkId};
pub use mounts::{MountFlag, TmpfsFlag, VolumeFlag};
pub use names::{Digest, ProjectName};
pub use net::{Ipv4Address, Ipv4Net, Ipv6Net, MacAddress};
pub use ports::PortSpec;
pub use reference::ImageRef;
pub use size::ByteSize;

/// The project every resource belongs to until tenants arrive.
pub const DEFAULT_PROJECT: &str = "default";

/// The version of Pier's native API, served in paths as `/v1/...`.
pub const API_VERSION: &str = "v1";
