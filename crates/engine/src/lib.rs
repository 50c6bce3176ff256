//! usersync-engine: one sync run = read the source -> plan -> preview or apply -> record.
//!
//! Architecture invariant: every surface (CLI today; web console, REST API and scheduler
//! later) goes through [`Engine`]; none of them holds sync logic. Sources are reached only
//! through the [`Source`] trait, so Microsoft 365 is the first source, not the only one.

mod access;
mod consent;
mod directory;
mod error;
mod live;
mod notifications;
mod office365;
mod report;
mod run;
mod service;
mod source;
mod sources;

pub use access::{
    Access, LiveSession, MIN_PASSWORD_CHARS, NewSession, NewToken, Principal, PrincipalKind,
    SESSION_TTL_SECS, random_token,
};
pub use consent::{CONSENT_TTL_SECS, ConsentAnswer, Office365App};
pub use directory::{AuditRequest, CustomerSetting, NewOffice365, NewUser};
pub use error::{EngineError, ErrorKind, error_text};
pub use live::LiveProgress;
pub use notifications::{
    DEBOUNCE, Inbox, LIFECYCLE_PATH, NOTIFICATION_PATH, Received, SubscriptionReport,
    SubscriptionTiming, endpoint,
};
pub use office365::{
    NewOffice365Source, Office365Settings, Office365Source, ReadNeeds, connect_office365,
};
pub use report::{PlanCounts, PlanReport};
pub use run::{Engine, EngineOptions, Remedy, RunOutcome};
pub use service::{
    DURATION_BUCKETS, Metrics, MetricsInner, NotificationService, ServiceOptions, run_service,
};
pub use source::{
    CheckStatus, ConnectionReport, FailureKind, NoProgress, PermissionCheck, Progress, ReadMode,
    SnapshotMirror, Source, SourceError, SourceRead,
};
pub use sources::{Reconnect, SourceRemovalOutcome};
