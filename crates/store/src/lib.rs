//! usersync-store: persistence of the console directory, sources and runs on SQLite (the
//! default, one file) or PostgreSQL, through one code path and one set of migrations.
//!
//! Architecture invariant: every query is written once, in SQL that both backends accept,
//! and goes through sqlx's `Any` driver. Booleans are stored as 0/1 integers and times as
//! RFC 3339 text because `Any` cannot read SQLite booleans or any date type portably.
//! A plan is applied in one transaction together with its run record. On SQLite every
//! transaction that writes begins `IMMEDIATE` ([`Store::write_tx`]): writers queue for the
//! one write lock instead of failing when another committed first.

mod accounts;
mod audit;
mod bulk;
mod crypto;
mod customers;
mod database;
mod error;
mod filters;
mod jobs;
mod lookup;
mod migrations;
mod mirror;
mod open_apply;
mod process;
mod retention;
mod runs;
mod sources;
mod subscriptions;
pub mod testing;
mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor, Row};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use accounts::{Account, ApiToken, SessionRecord};
pub use audit::{AuditEntry, AuditQuery};
pub use crypto::{KeyLocation, KeySource, SecretBox, SecretString};
pub use customers::{Customer, Domain, DomainOrigin, Group};
pub use database::mask_password;
pub use error::{DEFAULT_BUSY_TIMEOUT, StoreError};
pub use jobs::{Claim, Enqueued, NewJob, QueueStats, Recovered, SourceHealth};
pub use lookup::{LookupData, LookupDomain};
pub use mirror::{Mirror, MirrorObject, MirrorPlan, MirrorRows, MirrorWrite};
pub use open_apply::OpenApply;
pub use process::RunOwner;
pub use retention::PurgeReport;
pub use runs::{
    DEFAULT_LEASE, NewRun, RunEnd, RunKind, RunLease, RunReason, RunRecord, RunStats, RunStatus,
    Settle,
};
pub use sources::{NewSource, SourceRecord};
pub use subscriptions::{NewSubscription, Subscription};
pub use users::{Apply, ApplyCounts, UserQuery};

use database::Target;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://usersync.db";

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://PATH` or `postgres://USER@HOST[:PORT]/DB`.
    pub url: String,
    /// Where the key that encrypts secrets at rest comes from.
    pub key: KeySource,
    pub max_connections: u32,
    /// How long a writer waits for another (SQLite allows one at a time) before it gives up.
    pub busy_timeout: Duration,
    /// Refuse to open a database whose secrets this key does not open (on by default; off
    /// only to forget those secrets, see [`Store::forget_secrets`]).
    pub verify_key: bool,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            key: KeySource::Default,
            max_connections: 8,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            verify_key: true,
        }
    }

    /// Where the key for this database is (for `usersync config`); no connection is made.
    pub fn key_location(&self) -> Result<KeyLocation, StoreError> {
        let target = Target::parse(&self.url)?;
        Ok(KeyLocation::resolve(
            &self.key,
            target.sqlite_path.as_deref(),
        ))
    }
}

/// The store: a connection pool plus the key for secrets.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    secrets: SecretBox,
    busy_timeout: Duration,
    /// Seconds added to the database's clock by tests ([`Store::advance_clock`]).
    clock: jobs::ClockOffset,
    /// Who the changes made through this handle are by, in the audit log.
    actor: std::sync::Arc<str>,
    /// Wakes the task that checkpoints a SQLite file's WAL (see [`checkpoints`]).
    checkpoint: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Held while PostgreSQL's statistics are refreshed after a large apply (in the
    /// background, after its commit): see [`Store::statistics_current`].
    statistics: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// Connections of a SQLite pool: several readers beside the one writer (WAL), so reading
/// never waits for a sync that writes.
const SQLITE_CONNECTIONS: u32 = 4;

/// Checkpoints a SQLite file's WAL every few seconds, and when woken: PASSIVE, so it waits
/// for no reader or writer, and no commit waits for it. Ends when the pool is closed.
fn checkpoints(pool: AnyPool) -> std::sync::Arc<tokio::sync::Notify> {
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let woken = wake.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = woken.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            if pool.is_closed() {
                break;
            }
            let started = std::time::Instant::now();
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                Ok(_) => tracing::trace!(
                    ms = started.elapsed().as_millis() as u64,
                    "WAL checkpointed"
                ),
                Err(e) => tracing::debug!(error = %e, "WAL not checkpointed"),
            }
        }
    });
    wake
}

impl Store {
    /// Opens (and on first use creates and migrates) the database the options name. A URL
    /// or file that is not a usable database, a database that is not usersync's, and a
    /// key that does not open the database's secrets are refused before anything is written.
    pub async fn open(options: StoreOptions) -> Result<Store, StoreError> {
        install_default_drivers();
        let target = Target::parse(&options.url)?;
        let backend = target.backend;
        match &target.sqlite_path {
            Some(path) => database::check_sqlite_file(path, &target.shown)?,
            None => database::ensure_postgres_database(&target).await?,
        }
        let busy_ms = options.busy_timeout.as_millis().min(i32::MAX as u128);
        // A page cache of up to 32 MB per connection (the default is 2 MB): a first sync's
        // transaction then stays in memory until its commit instead of spilling pages to
        // the WAL as it goes (a fifth of the time of writing 100,000 users, measured).
        // No commit copies the WAL back into the file (SQLite's automatic checkpoint made
        // a first sync's commit wait for it: 0.4 s at 100,000 users, 3 s at 1,000,000):
        // a task of the store does, beside the runs (`checkpoints`).
        let setup = format!(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = {busy_ms}; \
             PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 0;"
        );
        let connect = AnyConnectOptions::from_str(&target.connect_url)
            .map_err(|e| StoreError::BadUrl {
                url: target.shown.clone(),
                problem: e.to_string(),
            })?
            // The driver's "slow statement" warnings carry whole SQL texts (megabytes for
            // a bulk insert): for debugging only.
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(5))
            .log_statements(log::LevelFilter::Trace);
        let open_failed = |source| StoreError::Open {
            url: target.shown.clone(),
            source,
        };
        // One connection first: an error is reported at once, with its cause, instead of
        // the pool retrying it until it times out.
        let mut first = sqlx::AnyConnection::connect_with(&connect)
            .await
            .map_err(open_failed)?;
        if backend == Backend::Sqlite {
            // Settings of this connection only: nothing is written to the file yet.
            first
                .execute(sqlx::AssertSqlSafe(setup.clone()))
                .await
                .map_err(open_failed)?;
        }
        // Whose database this is, reading only: a foreign or newer one is refused unchanged.
        let found = migrations::inspect(&mut first, backend, &target.shown).await?;
        if backend == Backend::Sqlite {
            // WAL lets readers read while a sync writes; it is a property of the file.
            // Switching needs a lock nobody waits for, so it is done only when needed.
            let mode: String = sqlx::query("PRAGMA journal_mode")
                .fetch_one(&mut first)
                .await?
                .try_get(0)?;
            if !mode.eq_ignore_ascii_case("wal") {
                first.execute("PRAGMA journal_mode = WAL;").await?;
            }
        }
        first.close().await.ok();
        let max = match backend {
            Backend::Sqlite => SQLITE_CONNECTIONS,
            Backend::Postgres => options.max_connections.max(1),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            // A connection may be held by a writer waiting its turn: allow that wait.
            .acquire_timeout(options.busy_timeout + Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                let setup = setup.clone();
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(sqlx::AssertSqlSafe(setup)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect.clone())
            .await
            .map_err(open_failed)?;
        let location = KeyLocation::resolve(&options.key, target.sqlite_path.as_deref());
        let secrets = SecretBox::load(&options.key, location)?;
        let checkpoint = (backend == Backend::Sqlite).then(|| checkpoints(pool.clone()));
        let store = Store {
            pool,
            backend,
            secrets,
            busy_timeout: options.busy_timeout,
            clock: Default::default(),
            actor: "usersync".into(),
            checkpoint,
            statistics: Default::default(),
        };
        // The key before any migration: a wrong key leaves the database as it was.
        let keep_check = if options.verify_key {
            store.verify_key(&found).await?
        } else {
            false
        };
        migrations::run(&store.pool, backend, &target.shown)
            .await
            .map_err(|e| explain_busy(e, options.busy_timeout, None))?;
        if keep_check {
            store.keep_key_check().await;
        }
        Ok(store)
    }

    /// This store, with the changes made through it written to the audit log as `actor`'s
    /// (an operating-system user, a console account). Changes made by a run are the run's.
    pub fn acting_as(&self, actor: &str) -> Store {
        Store {
            actor: actor.into(),
            ..self.clone()
        }
    }

    /// Who the changes made through this handle are by.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the key for secrets is, and whether this process generated it.
    pub fn key(&self) -> &SecretBox {
        &self.secrets
    }

    /// Closes the pool, waiting for connections to finish (SQLite checkpoints the WAL as
    /// the last one closes).
    pub async fn close(&self) {
        // A refresh of the statistics under way is let finish: the next process plans
        // from them.
        self.statistics_current().await;
        self.pool.close().await;
        self.checkpoint_soon();
    }

    /// Waits for a refresh of the database's statistics that an apply of this handle
    /// started (see `apply`): a run plans its lookups from current ones.
    pub async fn statistics_current(&self) {
        drop(self.statistics.lock().await);
    }

    /// Asks for the WAL of a SQLite file to be checkpointed now, not at the next tick: after
    /// a large write.
    pub(crate) fn checkpoint_soon(&self) {
        if let Some(wake) = &self.checkpoint {
            wake.notify_one();
        }
    }

    /// A transaction that writes: on SQLite it takes the write lock at once (waiting its
    /// turn), so it never fails half-way because another writer came first.
    pub(crate) async fn write_tx(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Completes a "database is busy" error with the wait and the runs in progress; other
    /// errors pass unchanged. Reading the runs never waits for the writer (WAL).
    pub async fn explain(&self, error: StoreError) -> StoreError {
        self.explain_for(error, None).await
    }

    /// [`Store::explain`] for a run that met the error: it is not "another" sync.
    pub async fn explain_for(&self, error: StoreError, own_run: Option<i64>) -> StoreError {
        if !error.is_busy() {
            return error;
        }
        let running = self.describe_running(own_run).await;
        explain_busy(error, self.busy_timeout, running)
    }

    /// Checks that the key opens this database's secrets, before anything is written. A
    /// database that holds none accepts any key (and a missing key file is generated with
    /// the first secret). Returns whether the check value should be stored now (a database
    /// from before it was kept, whose first secret opened).
    async fn verify_key(&self, found: &migrations::Inspection) -> Result<bool, StoreError> {
        if !found.has("sources") {
            return Ok(false);
        }
        let sealed: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sources WHERE secret IS NOT NULL")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        if sealed == 0 {
            return Ok(false);
        }
        let check = if found.has("store_meta") {
            self.meta("key_check").await?
        } else {
            None
        };
        if !self.secrets.is_available() {
            return match self.secrets.location() {
                // The key file was deleted or the database copied without it: a new key
                // generated now would make every stored secret unreadable.
                KeyLocation::File { path, .. } => Err(StoreError::KeyLost {
                    problem: format!(
                        "this database holds secrets, but the key file {} does not exist, so no \
                         new key is generated",
                        path.display()
                    ),
                    sealed: Some(sealed),
                }),
                // PostgreSQL without a key: an error the first time a secret is needed.
                _ => Ok(false),
            };
        }
        let matches = match &check {
            Some(check) => self.secrets.matches(check),
            // Stored by a version without a check value: the first secret tells.
            None => self.first_secret_opens().await?,
        };
        if !matches {
            return Err(StoreError::KeyLost {
                problem: format!(
                    "{} does not open this database's secrets: they were sealed with another key",
                    self.secrets.describe()
                ),
                sealed: Some(sealed),
            });
        }
        Ok(check.is_none())
    }

    /// Stores the key's check value; best effort (another process may be writing; the
    /// first secret opened, and it is tried again at the next open).
    async fn keep_key_check(&self) {
        let Ok(value) = self.secrets.check_value() else {
            return;
        };
        let _ = sqlx::query(
            "INSERT INTO store_meta (name, value) VALUES ('key_check', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(value)
        .execute(&self.pool)
        .await;
    }

    /// Whether the first stored secret opens with the key (databases from before the key
    /// check was kept).
    async fn first_secret_opens(&self) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT id, secret FROM sources WHERE secret IS NOT NULL ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(true) };
        let id: i64 = row.try_get("id")?;
        let sealed: String = row.try_get("secret")?;
        Ok(self
            .secrets
            .open(&sealed, &sources::secret_context(id))
            .is_ok())
    }

    /// For a long-running process (`serve`, `worker`): refuses a key that is missing or does
    /// not match the key check value the database holds, at start rather than at the first
    /// run that needs a secret. Every process on one database must have the same key.
    pub async fn require_key(&self) -> Result<(), StoreError> {
        let Some(check) = self.meta("key_check").await? else {
            return Ok(());
        };
        let same_key = "give every process that uses this database the same key \
             (USERSYNC_SECRET_KEY_FILE pointing at a copy of the same key file, or the same \
             USERSYNC_SECRET_KEY)";
        if !self.secrets.is_available() {
            return Err(StoreError::Key(format!(
                "this database holds secrets, but this process has no key to open them: {same_key}"
            )));
        }
        if !self.secrets.matches(&check) {
            return Err(StoreError::Key(format!(
                "{} is not the key this database's secrets were sealed with: {same_key}",
                self.secrets.describe()
            )));
        }
        Ok(())
    }

    /// Whether the database answers and its schema is the one this binary knows (/readyz).
    pub async fn ready(&self) -> Result<(), StoreError> {
        let newest: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?
            .try_get("v")?;
        let known = migrations::latest();
        if newest != Some(known) {
            return Err(StoreError::Invalid(format!(
                "the database's schema is at version {}, this usersync expects {known}",
                newest.unwrap_or(0)
            )));
        }
        Ok(())
    }

    async fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query("SELECT value FROM store_meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get("value"))
            .transpose()?)
    }
}

/// Fills in what a "database is busy" error leaves open.
fn explain_busy(error: StoreError, waited: Duration, running: Option<String>) -> StoreError {
    match error {
        StoreError::Busy {
            waited: None,
            running: None,
        } => StoreError::Busy {
            waited: Some(waited),
            running,
        },
        other => other,
    }
}

/// A time for people: to the second, UTC.
pub fn format_time(time: std::time::SystemTime) -> String {
    let t = OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Seconds since 1970 as RFC 3339 text.
pub(crate) fn epoch_text(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub(crate) fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Parameter `n` of a statement: `$n`, or on SQLite an anonymous `?` (a statement that
/// uses these takes its parameters in the order they appear; see `values_clause`).
pub(crate) fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_string(),
        Backend::Postgres => format!("${n}"),
    }
}

/// The values of an `IN (...)` sent as one parameter, a JSON array (`n`: its number): the
/// statement's text is the same whatever the list's length, so there are not thousands of
/// parameters to bind nor plans to make. `bigint`: the values are ids.
pub(crate) fn in_json(backend: Backend, n: usize, bigint: bool) -> String {
    match (backend, bigint) {
        (Backend::Sqlite, _) => "SELECT value FROM json_each(?)".to_string(),
        (Backend::Postgres, false) => {
            format!("SELECT jsonb_array_elements_text(CAST(${n} AS jsonb))")
        }
        (Backend::Postgres, true) => {
            format!("SELECT CAST(jsonb_array_elements_text(CAST(${n} AS jsonb)) AS BIGINT)")
        }
    }
}

/// `($1, $2, ...), (...)` for `rows` rows of `columns` parameters.
///
/// SQLite gets anonymous `?` instead: it looks up every named parameter by a linear scan
/// (`sqlite3_bind_parameter_name`), which made a 5,000-parameter INSERT quadratic and a
/// 100,000-user first sync take 15 s instead of 2.
pub(crate) fn values_clause(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(r * columns + c + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// A query whose text this crate assembled from its own constants and placeholder counts,
/// never from input (values are always bound): what sqlx's `AssertSqlSafe` asks us to vouch.
pub(crate) fn query_dyn(
    sql: &str,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
}

pub(crate) fn parse_enum<T: FromStr>(text: &str, column: &str) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{column} holds the unknown value '{text}'")))
}
