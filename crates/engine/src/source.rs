//! What the engine needs from a source of users: one full read into a snapshot.

use async_trait::async_trait;
use serde::Serialize;
use usersync_core::SourceSnapshot;
use usersync_store::{Mirror, MirrorWrite};

/// Why a read failed, in words an operator can act on (the source's own error type).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Progress of long work, shown as a bar on a terminal; called from any task.
pub trait Progress: Send + Sync {
    /// A new phase starts, such as "reading users".
    fn phase(&self, name: &str);
    /// `count` items of the current phase are done.
    fn advance(&self, count: usize);
    /// The current phase will count to `total` (when the source can tell cheaply).
    fn total(&self, _total: u64) {}
}

/// Progress that nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _name: &str) {}
    fn advance(&self, _count: usize) {}
}

/// How a run read its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadMode {
    /// The whole source, and why (the first read, a refused delta link, the daily
    /// reconciliation, options that need more than the mirror holds ...).
    Full { reason: String },
    /// Only what changed since the mirror, and how much that was.
    Delta { changes: String },
}

impl ReadMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReadMode::Full { .. } => "full",
            ReadMode::Delta { .. } => "delta",
        }
    }

    /// Why the source was read whole, or what the delta round held.
    pub fn detail(&self) -> &str {
        match self {
            ReadMode::Full { reason } => reason,
            ReadMode::Delta { changes } => changes,
        }
    }
}

impl Default for ReadMode {
    fn default() -> Self {
        ReadMode::Full {
            reason: String::new(),
        }
    }
}

/// What one read of a source returned, and what it cost.
#[derive(Debug, Clone, Default)]
pub struct SourceRead {
    pub snapshot: SourceSnapshot,
    pub requests: u64,
    pub throttled: u64,
    /// Things the operator should know that did not fail the read.
    pub notes: Vec<String>,
    pub mode: ReadMode,
    /// What the read changes in the source's mirror; written with the plan it led to
    /// (a preview writes nothing).
    pub mirror: Option<MirrorWrite>,
    /// Read by delta: the objects whose plan may differ from the last one (changed,
    /// removed, typed, or members of a changed group). `None`: every object may differ.
    pub changed: Option<std::collections::HashSet<String>>,
    /// The snapshot holds only some users (those `changed` names, and the groups): the
    /// others are read from here when the plan needs them.
    pub more: Option<std::sync::Arc<dyn MoreObjects>>,
    /// Users in the source (the snapshot's when it holds every one).
    pub users_total: Option<u64>,
    /// Objects read from the mirror (a delta run reads only those it needs).
    pub mirror_read: Option<u64>,
    /// Users handed to the read's [`EarlyUsers`] that changed after (a mailbox type read
    /// after the last page): what was planned of them early is planned again.
    pub changed_after: std::collections::HashSet<String>,
    /// The mirror objects of the snapshot's users, to add to `mirror`'s: made as they are
    /// written (a first read's users, every one new to the mirror).
    pub mirror_users: Option<std::sync::Arc<dyn SnapshotMirror>>,
}

/// Makes the mirror objects of a read's users from the snapshot's records when they are
/// written ([`usersync_store::MirrorRows`]), so that a whole read does not hold every user
/// a second time as text (at 1,000,000 users, most of a gigabyte).
pub trait SnapshotMirror: Send + Sync + std::fmt::Debug {
    /// How many users it makes objects of: the snapshot's.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The objects of those of `users` (the snapshot's users from index `from` on) that
    /// are `wanted`.
    fn rows(
        &self,
        users: &[usersync_core::SourceUser],
        from: usize,
        wanted: &dyn Fn(&usersync_core::SourceUser) -> bool,
    ) -> Result<Vec<usersync_store::MirrorObject>, String>;
}

/// Where a whole read hands over its users as it holds them for good (a page arrived, its
/// mailbox types read), so that the run can plan and write them while later pages still
/// arrive (see `usersync_core::early`). Each user is handed over once.
pub type EarlyUsers = tokio::sync::mpsc::UnboundedSender<Handed>;

/// Users a read holds for good, handed over as it goes (see [`EarlyUsers`]).
#[derive(Debug, Default)]
pub struct Handed {
    pub users: Vec<usersync_core::SourceUser>,
    /// Their mirror objects, when the read writes every user to a mirror that holds none
    /// yet (a source's first read): the run writes them beside its early adds, so that
    /// they are not all left to the end of a slow read. A user that changes after it was
    /// handed over (`SourceRead::changed_after`) is written again with the rest.
    pub mirror: Vec<usersync_store::MirrorObject>,
}

/// The users a partial read left out of its snapshot, read on demand.
#[async_trait]
pub trait MoreObjects: Send + Sync + std::fmt::Debug {
    /// These users (every one left out when `None`), as the read has them; those the
    /// source does not hold (or that the read changed) are not returned.
    async fn users(
        &self,
        ids: Option<&[String]>,
    ) -> Result<Vec<usersync_core::SourceUser>, crate::EngineError>;
}

/// A source of users: Microsoft 365 now, LDAP later.
#[async_trait]
pub trait Source: Send + Sync {
    /// Reads everything a sync needs: what changed since `mirror` (the source as the last
    /// applied run read it) when the source can, else the whole source. Fails rather than
    /// return a partial read: a sync from half a tenant would remove the other half.
    ///
    /// With `partial`, the mirror may come without its objects and the snapshot may hold
    /// only what changed (see [`SourceRead::more`]); else it holds every object.
    ///
    /// With `early`, a read of the whole source hands its users over there as it goes
    /// (a source that cannot just never does: the run then plans after the read).
    async fn read(
        &self,
        mirror: Option<Mirror>,
        partial: bool,
        early: Option<EarlyUsers>,
        progress: &dyn Progress,
    ) -> Result<SourceRead, SourceError>;

    /// Signs in and tries one small read of each kind a sync makes, reporting each
    /// permission it needs as granted or missing. Never fails: a failure is a finding.
    async fn check(&self) -> ConnectionReport;

    /// What kind of failure a read error is, so the scheduler knows what to do with it.
    fn failure_kind(
        &self,
        _error: &(dyn std::error::Error + Send + Sync + 'static),
    ) -> FailureKind {
        FailureKind::Other
    }
}

/// Kinds of read failures the scheduler treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Throttled or unavailable (HTTP 429, 503): tried again after `retry_after`, without
    /// spending an attempt.
    Throttled {
        retry_after: Option<std::time::Duration>,
    },
    /// Consent revoked, a permission missing, the app unknown or disabled: no retry mends
    /// it, the source needs attention at once.
    Consent,
    /// The client secret is wrong or expired: attention at once; a new secret mends it.
    Secret,
    /// Anything else: retried with backoff; needs attention after three in a row.
    Other,
}

/// What a connection test found, check by check.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    pub checks: Vec<PermissionCheck>,
    /// The tenant's name as it calls itself (Graph's organization), when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_name: Option<String>,
}

impl ConnectionReport {
    /// True when everything a sync needs works (optional permissions may be missing).
    pub fn is_ready(&self) -> bool {
        self.checks
            .iter()
            .all(|c| c.status == CheckStatus::Granted || !c.required)
    }
}

/// One thing the sync needs from the source.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct PermissionCheck {
    /// The permission (`User.Read.All`) or step (`sign-in`) checked.
    pub permission: String,
    /// What the sync reads with it.
    pub needed_for: String,
    pub status: CheckStatus,
    /// Without it the sync cannot run; an optional one only lowers what it knows.
    pub required: bool,
    /// What the source said, or what was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Granted,
    Missing,
    /// The check could not tell (the source did not answer, or an earlier step failed).
    Failed,
    NotChecked,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Granted => "granted",
            CheckStatus::Missing => "missing",
            CheckStatus::Failed => "failed",
            CheckStatus::NotChecked => "not checked",
        }
    }
}
