//! usersync-core: the console model, the mapping rules of PRODUCT.md and sync planning.
//!
//! Architecture invariant: this crate does no I/O, reads no clock and spawns nothing.
//! Everything it needs (the source snapshot, the current directory, the options) is
//! handed in as plain values, and everything it decides comes back as a [`Plan`].

pub mod access;
pub mod address;
pub mod early;
pub mod filter;
pub mod ids;
pub mod mapping;
pub mod model;
pub mod names;
#[cfg(feature = "openapi")]
mod openapi;
pub mod options;
mod order;
pub mod plan;
pub mod schedule;
pub mod scope;
pub mod snapshot;
#[cfg(test)]
mod testing;

pub use access::{Grant, GrantError, ScopeRule};
pub use address::{AddressError, DomainName, DomainProblem, EmailAddress};
pub use filter::{
    Clause, Expression, Field, FieldKind, FilterError, FilterRule, GroupNames, Operator,
    first_match,
};
pub use ids::{ClientId, IdError, TenantId};
pub use mapping::{MappingContext, SkipReason};
pub use model::{
    DirectoryUser, EmailMethod, MailboxType, Role, SourceKind, UnknownValue, UserStatus,
};
pub use names::{MAX_NAME_CHARS, NameError, NameKind, check_name, same_name};
pub use options::{MailboxDefaults, OptionError, SourceOptions, UnknownTenantGroup};
pub use plan::{
    Change, Plan, PlannedGroup, PlannedUpdate, Safeguard, Skip, plan_sync, plan_within,
};
pub use snapshot::{
    Interner, Shared, SourceDomain, SourceGroup, SourceSnapshot, SourceUser, sort_users_beside,
};
