//! What the engine needs from a source of users: one full read into a snapshot.

use async_trait::async_trait;
use usersync_core::SourceSnapshot;

/// Why a read failed, in words an operator can act on (the source's own error type).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Progress of long work, shown as a bar on a terminal; called from any task.
pub trait Progress: Send + Sync {
    /// A new phase starts, such as "reading users".
    fn phase(&self, name: &str);
    /// `count` items of the current phase are done.
    fn advance(&self, count: usize);
}

/// Progress that nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _name: &str) {}
    fn advance(&self, _count: usize) {}
}

/// What one read of a source returned, and what it cost.
#[derive(Debug, Clone, Default)]
pub struct SourceRead {
    pub snapshot: SourceSnapshot,
    pub requests: u64,
    pub throttled: u64,
    /// Things the operator should know that did not fail the read.
    pub notes: Vec<String>,
}

/// A source of users: Microsoft 365 now, LDAP later.
#[async_trait]
pub trait Source: Send + Sync {
    /// Reads everything a full sync needs. Fails rather than return a partial read: a sync
    /// from half a tenant would remove the other half.
    async fn read(&self, progress: &dyn Progress) -> Result<SourceRead, SourceError>;
}
