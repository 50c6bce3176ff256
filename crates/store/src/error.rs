//! The store's error type: each variant says what to fix.

use std::time::Duration;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database URL '{url}' is not usable: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("cannot open the database {url}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// The database is not one usersync can use as it is; nothing was changed in it.
    #[error("the database {url} {problem}")]
    Unusable { url: String, problem: String },
    /// `what` is the kind of object ("customer", "source", "run" ...): surfaces add their
    /// own hint (a command, a link) from it.
    #[error("{what} '{name}' does not exist")]
    NotFound { what: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    /// The customer's directory changed after a plan was made from it: plan again.
    #[error("the directory of customer {customer_id} changed while the plan was made")]
    DirectoryChanged { customer_id: i64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Key(String),
    /// The key at hand does not open the database's secrets (or is missing or unreadable):
    /// the right key must be given back, or the secrets forgotten and set again.
    #[error(
        "{problem}. Use the key this database was made with: restore its key file, or point \
         USERSYNC_SECRET_KEY_FILE (or USERSYNC_SECRET_KEY) at it. If that key is lost for good, \
         the stored secrets{} can be forgotten so that a new key is used from now on, and each \
         source's secret set again",
        sealed.map(|n| format!(" ({n} source(s))")).unwrap_or_default()
    )]
    KeyLost {
        problem: String,
        /// How many sources hold a secret, when known.
        sealed: Option<i64>,
    },
    /// One source's secret cannot be opened with the key at hand: set it again.
    #[error("{why}; the client secret of source #{source_id} must be set again")]
    SecretUnreadable { source_id: i64, why: String },
    /// Another writer (a sync in another process) held the database longer than the
    /// configured wait. `running` names the runs in progress, when any are recorded.
    #[error(
        "the database is busy: another sync of this database is running{} and did not finish {}; nothing was changed, retry when it has finished",
        running.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
        waited.map(|w| format!("within {}", seconds(w))).unwrap_or_else(|| "in time".into())
    )]
    Busy {
        waited: Option<Duration>,
        running: Option<String>,
    },
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 && d.subsec_millis() != 0 {
        format!("{s:.1} s")
    } else {
        format!("{} s", d.as_secs())
    }
}

/// How long writers wait for each other unless configured: more than a 100,000-user apply
/// takes on a slow disk (about 5 s on a 2-core machine), so syncs queue instead of failing.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(120);

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_busy(&error) {
            // The wait is the connection's busy_timeout: `Store::explain` adds it, and
            // the runs in progress.
            return StoreError::Busy {
                waited: None,
                running: None,
            };
        }
        StoreError::Database(error)
    }
}

/// SQLite's "database is locked" family (SQLITE_BUSY and SQLITE_LOCKED, with their
/// extended codes): another connection holds the write lock.
fn is_busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_none() {
        return false;
    }
    // Extended result codes keep the primary code in the low byte.
    db.code()
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

impl StoreError {
    pub(crate) fn not_found(what: &'static str, name: impl ToString) -> Self {
        StoreError::NotFound {
            what,
            name: name.to_string(),
        }
    }

    /// Whether the error is a unique-constraint violation (the same on both backends).
    pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
    }

    /// Whether another writer kept the database busy.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }
}
