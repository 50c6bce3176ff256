//! usersync-core: the console model, the mapping rules of PRODUCT.md and sync planning.
//!
//! Architecture invariant: this crate does no I/O, reads no clock and spawns nothing.
//! Everything it needs (the source snapshot, the current directory, the options) is
//! handed in as plain values, and everything it decides comes back as a [`Plan`].

pub mod address;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod snapshot;

pub use address::{AddressError, DomainName, EmailAddress};
pub use mapping::{MappingContext, SkipReason};
pub use model::{
    DirectoryUser, EmailMethod, MailboxType, SourceKind, SourceOptions, UnknownValue, UserStatus,
};
pub use plan::{Change, Plan, PlannedUpdate, Safeguard, Skip, plan_sync};
pub use snapshot::{SourceDomain, SourceGroup, SourceSnapshot, SourceUser};
