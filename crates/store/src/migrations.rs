//! One set of migrations for both backends; `{id}` is the only word that differs, and where
//! SQLite cannot alter a table in place a migration has a text for each backend.

use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection, Row};

use crate::{Backend, StoreError, now};

/// One migration: the same SQL for both backends, or one text each.
struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const fn both(version: i64, name: &'static str, sql: &'static str) -> Migration {
    Migration {
        version,
        name,
        sqlite: sql,
        postgres: sql,
    }
}

/// Each migration once, in order; never edit one that has shipped: add another.
const MIGRATIONS: &[Migration] = &[
    both(1, "directory, sources and runs", V1),
    both(2, "filter rules", V2),
    both(
        3,
        "domain protection, managers, new-mailbox settings, console group members",
        V3,
    ),
    both(4, "console groups made from tenant groups", V4),
    Migration {
        version: 5,
        name: "removed sources, run owners and heartbeats, the key check",
        sqlite: V5_SQLITE,
        postgres: V5_POSTGRES,
    },
    both(
        6,
        "runs as jobs (queue, leases, attempts), schedules and source health, deletion holds, retention, audit log",
        V6,
    ),
    both(
        7,
        "daily maintenance jobs (the retention purge), held removals counted on runs",
        V7,
    ),
    both(
        8,
        "source mirrors (the tenant as last read, delta links), read mode of runs",
        V8,
    ),
    both(9, "change-notification subscriptions of sources", V9),
    Migration {
        version: 10,
        name: "users without foreign-key checks, indexed by source alone (a faster bulk write)",
        sqlite: V10_SQLITE,
        postgres: V10_POSTGRES,
    },
    both(
        11,
        "what the plan applied with a mirror depended on (delta runs plan what changed)",
        V11,
    ),
    both(
        12,
        "mirrored objects the source has more to read about (delta runs find them alone)",
        V12,
    ),
    Migration {
        version: 13,
        name: "run plans kept in parts (the plan of a large sync is written without one large copy)",
        sqlite: V13_SQLITE,
        postgres: V13_POSTGRES,
    },
    both(
        14,
        "users indexed by tenant object (a delta run finds the entries of what changed)",
        V14,
    ),
    both(15, "console accounts, their sessions, and API tokens", V15),
    both(16, "refresh tokens of delegated sources (sealed)", V16),
    both(
        17,
        "failed sign-ins, counted by every process of the database",
        V17,
    ),
    both(18, "where a running run stands, for other processes", V18),
    both(
        19,
        "a domain's own destination route for the mail system",
        V19,
    ),
];

/// The newest schema version this binary knows.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Every table the migrations make: any other table in the database is not ours.
const OUR_TABLES: &[&str] = &[
    "schema_migrations",
    "customers",
    "domains",
    "console_groups",
    "sources",
    "users",
    "user_aliases",
    "runs",
    "filter_rules",
    "group_members",
    "store_meta",
    "audit_log",
    "maintenance",
    "source_mirrors",
    "mirror_objects",
    "subscriptions",
    "run_plans",
    "accounts",
    "sessions",
    "api_tokens",
    "sign_in_failures",
];

/// What both backends add in version 5.
macro_rules! v5_common {
    () => {
        r#"
ALTER TABLE runs ADD COLUMN owner_host TEXT;
ALTER TABLE runs ADD COLUMN owner_pid BIGINT;
ALTER TABLE runs ADD COLUMN owner_started TEXT;
ALTER TABLE runs ADD COLUMN heartbeat_at BIGINT;
CREATE INDEX runs_by_status ON runs (status);
CREATE TABLE store_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE UNIQUE INDEX sources_one_customer_per_tenant ON sources (kind, tenant_id) WHERE removed_at IS NULL;
"#
    };
}

/// A removed source keeps its row (its runs and its users' history point at it), so the
/// rule "one tenant, one customer" holds among sources that are not removed. SQLite cannot
/// drop a table constraint: the table is rebuilt (with foreign keys off, see `migrate`).
const V5_SQLITE: &str = concat!(
    r#"
CREATE TABLE sources_v5 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    settings TEXT NOT NULL,
    secret TEXT,
    sync_state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    removed_at TEXT
);
INSERT INTO sources_v5 (id, customer_id, kind, tenant_id, settings, secret, sync_state, created_at)
    SELECT id, customer_id, kind, tenant_id, settings, secret, sync_state, created_at FROM sources;
DROP TABLE sources;
ALTER TABLE sources_v5 RENAME TO sources;
"#,
    v5_common!()
);

const V5_POSTGRES: &str = concat!(
    r#"
ALTER TABLE sources ADD COLUMN removed_at TEXT;
ALTER TABLE sources DROP CONSTRAINT IF EXISTS sources_kind_tenant_id_key;
"#,
    v5_common!()
);

/// Runs become jobs: a queued run waits for `due_at`, a claimed one is leased (`lease_token`
/// grows with every claim, `lease_until` is on the database's clock), `attempts` counts
/// claims. At most one sync of a source is queued or running (older versions could leave
/// two running: all but the newest are marked failed first). Sources get their schedule
/// (`next_run_at`), their health (`failures`, `attention`) and their deletion hold. Every
/// time the database compares is an integer of seconds since 1970.
const V6: &str = r#"
ALTER TABLE runs ADD COLUMN queued_at TEXT;
ALTER TABLE runs ADD COLUMN due_at BIGINT;
ALTER TABLE runs ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_until BIGINT;
ALTER TABLE runs ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN confirms BIGINT;
ALTER TABLE runs ADD COLUMN requested_by TEXT;
ALTER TABLE runs ADD COLUMN finished_epoch BIGINT;
UPDATE runs SET status = 'failed', error = 'another run of this source was running at the same time (before runs were jobs)', finished_at = started_at
    WHERE status = 'running' AND kind = 'sync'
    AND id NOT IN (SELECT MAX(id) FROM runs WHERE status = 'running' AND kind = 'sync' GROUP BY source_id);
CREATE UNIQUE INDEX runs_one_active_sync_per_source ON runs (source_id) WHERE status IN ('queued', 'running') AND kind = 'sync';
CREATE INDEX runs_queue ON runs (due_at, id) WHERE status = 'queued';
ALTER TABLE sources ADD COLUMN interval_secs BIGINT;
ALTER TABLE sources ADD COLUMN next_run_at BIGINT;
ALTER TABLE sources ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sources ADD COLUMN last_error TEXT;
ALTER TABLE sources ADD COLUMN attention TEXT;
ALTER TABLE sources ADD COLUMN attention_since TEXT;
ALTER TABLE sources ADD COLUMN hold_run_id BIGINT;
ALTER TABLE sources ADD COLUMN last_success_at TEXT;
CREATE INDEX sources_due ON sources (next_run_at) WHERE next_run_at IS NOT NULL AND removed_at IS NULL;
ALTER TABLE customers ADD COLUMN retention_days BIGINT NOT NULL DEFAULT 30;
ALTER TABLE customers ADD COLUMN directory_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN removed_epoch BIGINT;
CREATE INDEX users_removed ON users (removed_epoch) WHERE status = 'removed';
CREATE TABLE audit_log (
    id {id},
    at TEXT NOT NULL,
    customer_id BIGINT,
    actor TEXT NOT NULL,
    run_id BIGINT,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX audit_by_customer ON audit_log (customer_id, id);
"#;

/// Jobs that run once a day for the whole database (the purge of removed users past their
/// customer's retention): `next_run_at` is taken by a compare-and-set in the transaction
/// that does the work, so one process does it, once. Runs count the removals they held.
const V7: &str = r#"
CREATE TABLE maintenance (
    name TEXT PRIMARY KEY,
    next_run_at BIGINT NOT NULL,
    last_run_at TEXT,
    last_result TEXT
);
INSERT INTO maintenance (name, next_run_at) VALUES ('purge', 0);
ALTER TABLE runs ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
"#;

/// Per source, the tenant as the last applied run read it: its objects (opaque to the
/// store, the source's own JSON) and its cursor (delta links and what was read), written
/// in the transaction that applies the plan made from them. `generation` grows with each
/// write, so a run that read an older mirror cannot overwrite a newer one. No foreign
/// keys on the objects: a first sync writes one row per tenant object, and the rows go
/// with their source (see `sources::mark_removed`).
const V8: &str = r#"
CREATE TABLE source_mirrors (
    source_id BIGINT PRIMARY KEY REFERENCES sources(id) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    cursor TEXT NOT NULL,
    full_at BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE mirror_objects (
    source_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (source_id, kind, object_id)
);
ALTER TABLE runs ADD COLUMN read_mode TEXT;
"#;

/// A source's Graph change-notification subscriptions (one per resource it watches),
/// with the clientState that authenticates each notification, sealed like a secret.
const V9: &str = r#"
CREATE TABLE subscriptions (
    subscription_id TEXT PRIMARY KEY,
    source_id BIGINT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    resource TEXT NOT NULL,
    client_state TEXT NOT NULL,
    notification_url TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX subscriptions_by_source ON subscriptions (source_id);
"#;

/// The write path of a first sync, weighed (issue 9): the users table loses its three
/// foreign keys and its index by tenant object id.
///
/// - `customer_id`, `group_id`, `source_id`: every row is written with ids the same
///   transaction read, and no customer or source row is ever deleted (a removed source is
///   marked, `sources::mark_removed`); a console group is deleted only when no user is in
///   it (`NOT EXISTS` in the delete itself). The checks caught nothing the code does not
///   already guarantee, and on PostgreSQL each was a trigger per inserted row: the three
///   took half the time of inserting 92,000 users.
/// - `users_by_source (source_id, source_object_id)`: nothing looked users up by tenant
///   object id then (the plan matched them in memory); every query named the source alone,
///   and an index on it grows at its end as a sync inserts, where the object id made each
///   insert land at a random place. (Delta runs look entries up by object id: v14 indexes
///   it again.)
///
/// The aliases and console-group members keep their keys to users (a purge cascades to
/// them). SQLite cannot drop a constraint: the table is rebuilt with foreign keys off (see
/// `migrate`), ids and the AUTOINCREMENT counter kept, so no id is ever used twice.
const V10_SQLITE: &str = r#"
CREATE TABLE users_v10 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id BIGINT NOT NULL,
    address TEXT NOT NULL,
    display_name TEXT NOT NULL,
    given_name TEXT,
    surname TEXT,
    mailbox_type TEXT NOT NULL,
    billable BIGINT NOT NULL,
    group_id BIGINT NOT NULL,
    source_id BIGINT,
    source_object_id TEXT,
    status TEXT NOT NULL,
    removed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    manager TEXT,
    services TEXT,
    removed_epoch BIGINT,
    UNIQUE (customer_id, address)
);
INSERT INTO users_v10 (id, customer_id, address, display_name, given_name, surname, mailbox_type,
    billable, group_id, source_id, source_object_id, status, removed_at, created_at, updated_at,
    manager, services, removed_epoch)
    SELECT id, customer_id, address, display_name, given_name, surname, mailbox_type, billable,
    group_id, source_id, source_object_id, status, removed_at, created_at, updated_at, manager,
    services, removed_epoch FROM users;
INSERT INTO sqlite_sequence (name, seq) SELECT 'users_v10', 0
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'users_v10');
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'users'), 0))
    WHERE name = 'users_v10';
DROP TABLE users;
ALTER TABLE users_v10 RENAME TO users;
CREATE INDEX users_by_source ON users (source_id);
CREATE INDEX users_removed ON users (removed_epoch) WHERE status = 'removed';
"#;

/// With a source's mirror, what the plan applied with it depended on (a fingerprint of the
/// options, filters and domains) and the objects it left with an address conflict, as
/// JSON: a delta run plans what changed only while the fingerprint holds, and plans those
/// objects again. `NULL` (every mirror before this version): the next plan is whole.
const V11: &str = r#"
ALTER TABLE source_mirrors ADD COLUMN planned TEXT;
"#;

/// Mirrored objects the source has more to read about (a mailbox type not known yet),
/// found through a partial index without reading the rest of the mirror.
const V12: &str = r#"
ALTER TABLE mirror_objects ADD COLUMN pending BIGINT NOT NULL DEFAULT 0;
CREATE INDEX mirror_objects_pending ON mirror_objects (source_id, kind, object_id) WHERE pending = 1;
"#;

/// A run's plan, gzip-compressed JSON, in parts of at most [`crate::runs::PLAN_PART`]
/// bytes: the plan of a first sync of 1,000,000 users is 56 MB compressed, and as one
/// value each layer under the query held its own copy at the end of the run.
const V13_SQLITE: &str = r#"
CREATE TABLE run_plans (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    part INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, part)
);
"#;

const V13_POSTGRES: &str = r#"
CREATE TABLE run_plans (
    run_id BIGINT NOT NULL REFERENCES runs(id),
    part BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (run_id, part)
);
"#;

/// A delta run looks up the entries of the objects that changed by tenant object id:
/// indexed by source alone, each run walked every entry of the source (1.2 to 1.7 s on
/// SQLite, 2 to 3 on PostgreSQL at 1,000,000 users). The index by source stays as it is:
/// in it a source's entries lie in row order, so counting its active ones reads the table
/// in order (with the object id in that index, SQLite read the rows in random order, 3.5 s
/// for a count at 1,000,000).
/// Who signs in to the console and who calls the API (issue 10). Passwords are kept as
/// Argon2id hashes, session and API tokens as SHA-256 hashes of their random text (the text
/// itself is only ever shown once, to its holder). `customer_id` binds a customer admin, or
/// a read-only principal, to one customer. Expiry is seconds on the database's clock.
const V15: &str = r#"
CREATE TABLE accounts (
    id {id},
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    customer_id BIGINT REFERENCES customers(id),
    created_at TEXT NOT NULL,
    disabled_at TEXT
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_account ON sessions (account_id);
CREATE TABLE api_tokens (
    id {id},
    token_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    customer_id BIGINT REFERENCES customers(id),
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
"#;

const V19: &str = r#"
ALTER TABLE domains ADD COLUMN route TEXT;
"#;

const V18: &str = r#"
ALTER TABLE runs ADD COLUMN progress TEXT;
"#;

const V17: &str = r#"
CREATE TABLE sign_in_failures (
    key TEXT NOT NULL,
    at BIGINT NOT NULL,
    attempt TEXT NOT NULL
);
CREATE INDEX sign_in_failures_by_key ON sign_in_failures (key, at);
"#;

const V16: &str = r#"
ALTER TABLE sources ADD COLUMN refresh_token TEXT;
"#;

const V14: &str = r#"
CREATE INDEX users_by_object ON users (source_object_id);
"#;

const V10_POSTGRES: &str = r#"
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_customer_id_fkey;
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_group_id_fkey;
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_source_id_fkey;
DROP INDEX users_by_source;
CREATE INDEX users_by_source ON users (source_id);
"#;

const V4: &str = r#"
ALTER TABLE console_groups ADD COLUMN source_object_id TEXT;
"#;

const V3: &str = r#"
ALTER TABLE domains ADD COLUMN reject_unlisted BIGINT NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN protect_listed_only BIGINT NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN source_id BIGINT;
ALTER TABLE domains ADD COLUMN protection_applied BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN manager TEXT;
ALTER TABLE users ADD COLUMN services TEXT;
ALTER TABLE console_groups ADD COLUMN source_id BIGINT;
CREATE TABLE group_members (
    group_id BIGINT NOT NULL REFERENCES console_groups(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members (user_id);
"#;

const V2: &str = r#"
CREATE TABLE filter_rules (
    id {id},
    source_id BIGINT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    group_name TEXT NOT NULL,
    expression TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX filter_rules_by_source ON filter_rules (source_id, position);
"#;

const V1: &str = r#"
CREATE TABLE customers (
    id {id},
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE domains (
    id {id},
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    name TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE console_groups (
    id {id},
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (customer_id, name)
);
CREATE TABLE sources (
    id {id},
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    settings TEXT NOT NULL,
    secret TEXT,
    sync_state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (kind, tenant_id)
);
CREATE TABLE users (
    id {id},
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    display_name TEXT NOT NULL,
    given_name TEXT,
    surname TEXT,
    mailbox_type TEXT NOT NULL,
    billable BIGINT NOT NULL,
    group_id BIGINT NOT NULL REFERENCES console_groups(id),
    source_id BIGINT REFERENCES sources(id) ON DELETE SET NULL,
    source_object_id TEXT,
    status TEXT NOT NULL,
    removed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (customer_id, address)
);
CREATE INDEX users_by_source ON users (source_id, source_object_id);
CREATE TABLE user_aliases (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    PRIMARY KEY (user_id, address)
);
CREATE INDEX user_aliases_by_address ON user_aliases (address);
CREATE TABLE runs (
    id {id},
    source_id BIGINT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    added BIGINT NOT NULL DEFAULT 0,
    updated BIGINT NOT NULL DEFAULT 0,
    removed BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    linked BIGINT NOT NULL DEFAULT 0,
    stats TEXT,
    error TEXT,
    plan TEXT
);
CREATE INDEX runs_by_source ON runs (source_id, id);
"#;

/// An arbitrary key for PostgreSQL's advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7573_6572_7379_6e63; // "usersync"

/// Brings the schema up to date, one transaction per migration, after checking that the
/// database is ours and not newer than this binary (before anything is written). On
/// PostgreSQL several processes may start at once: they take turns under an advisory lock.
pub(crate) async fn run(pool: &AnyPool, backend: Backend, shown: &str) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT CAST(pg_advisory_lock($1) AS TEXT) AS locked")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        let result = migrate(&mut conn, backend, shown).await;
        sqlx::query("SELECT CAST(pg_advisory_unlock($1) AS TEXT) AS unlocked")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        return result;
    }
    let result = migrate(&mut conn, backend, shown).await;
    // The connection goes back to the pool: it must enforce foreign keys again.
    if sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await
        .is_err()
    {
        Connection::close(conn.detach()).await.ok();
    }
    result
}

/// The tables in the database's current schema.
async fn tables(conn: &mut AnyConnection, backend: Backend) -> Result<Vec<String>, StoreError> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT CAST(tablename AS TEXT) AS name FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        }
    };
    let rows = sqlx::query(sql).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("name").map_err(StoreError::from))
        .collect()
}

/// What is in a database before usersync writes to it.
#[derive(Debug, Clone)]
pub(crate) struct Inspection {
    pub tables: Vec<String>,
    pub applied: Vec<i64>,
}

impl Inspection {
    pub fn has(&self, table: &str) -> bool {
        self.tables.iter().any(|t| t == table)
    }
}

/// Reads which tables and migrations a database has, and refuses (reading only) one that
/// holds tables that are not ours or a schema newer than this binary.
pub(crate) async fn inspect(
    conn: &mut AnyConnection,
    backend: Backend,
    shown: &str,
) -> Result<Inspection, StoreError> {
    let unusable = |problem: String| StoreError::Unusable {
        url: shown.to_string(),
        problem,
    };
    let tables = tables(conn, backend).await?;
    let applied: Vec<i64> = if tables.iter().any(|t| t == "schema_migrations") {
        sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get("version"))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let newest = applied.iter().copied().max().unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if newest > known {
        return Err(unusable(format!(
            "has schema version {newest}, newer than this usersync knows ({known}): upgrade usersync; nothing was changed"
        )));
    }
    let foreign: Vec<&str> = tables
        .iter()
        .map(String::as_str)
        .filter(|t| !OUR_TABLES.contains(t))
        .collect();
    if !foreign.is_empty() {
        return Err(unusable(format!(
            "holds tables that are not usersync's ({}); give usersync a database of its own \
             (a new SQLite file, or a new PostgreSQL database: usersync creates it); nothing was changed",
            foreign.join(", ")
        )));
    }
    Ok(Inspection { tables, applied })
}

async fn migrate(
    conn: &mut AnyConnection,
    backend: Backend,
    shown: &str,
) -> Result<(), StoreError> {
    migrate_until(conn, backend, shown, i64::MAX).await
}

/// Applies the pending migrations up to version `until`.
async fn migrate_until(
    conn: &mut AnyConnection,
    backend: Backend,
    shown: &str,
    until: i64,
) -> Result<(), StoreError> {
    // Again under the lock: another process may have migrated meanwhile.
    let applied = inspect(conn, backend, shown).await?.applied;
    let pending: Vec<&Migration> = MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version) && m.version <= until)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    if backend == Backend::Sqlite {
        // Rebuilding a table drops the old one: with foreign keys on, that would delete
        // or cascade every row that points at it. Checked again before each commit.
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let id_column = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    };
    for migration in pending {
        let mut tx = match backend {
            Backend::Sqlite => Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?,
            Backend::Postgres => Connection::begin(&mut *conn).await?,
        };
        // Another process may have applied it while this one waited for the lock.
        let done = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(migration.version)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            continue;
        }
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying database migration"
        );
        let text = match backend {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        let sql = text.replace("{id}", id_column);
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(AssertSqlSafe(statement.to_string()))
                .execute(&mut *tx)
                .await?;
        }
        if backend == Backend::Sqlite {
            let broken = sqlx::query("PRAGMA foreign_key_check")
                .fetch_all(&mut *tx)
                .await?;
            if !broken.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "migration {} would leave {} rows pointing at rows that do not exist; nothing was changed",
                    migration.version,
                    broken.len()
                )));
            }
        }
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::{AnyConnection, Connection, Row};

    use super::*;

    async fn count(conn: &mut AnyConnection, sql: &str) -> i64 {
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .try_get(0)
            .unwrap()
    }

    /// v10 rebuilds the users table on SQLite: rows, ids, aliases (and their cascade) and
    /// the id counter survive it.
    #[tokio::test]
    async fn the_users_table_rebuilt_by_v10_keeps_rows_ids_aliases_and_its_counter() {
        sqlx::any::install_default_drivers();
        let dir = std::env::temp_dir().join(format!("usersync-v10-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("v9.db").display());
        let mut conn = AnyConnection::connect(&url).await.unwrap();
        migrate_until(&mut conn, Backend::Sqlite, "v9.db", 9)
            .await
            .unwrap();
        for sql in [
            "INSERT INTO customers (id, name, created_at) VALUES (1, 'Acme', 'x')",
            "INSERT INTO console_groups (id, customer_id, name, created_at) VALUES (1, 1, 'Main', 'x')",
            "INSERT INTO sources (id, customer_id, kind, tenant_id, settings, sync_state, created_at) \
             VALUES (1, 1, 'office365', 't', '{}', '{}', 'x')",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        for (id, address) in [(1, "a@acme.com"), (2, "b@acme.com"), (3, "c@acme.com")] {
            sqlx::query(
                "INSERT INTO users (id, customer_id, address, display_name, mailbox_type, billable, \
                 group_id, source_id, source_object_id, status, created_at, updated_at) \
                 VALUES ($1, 1, $2, 'A', 'user', 1, 1, 1, 'oid', 'active', 'x', 'x')",
            )
            .bind(id)
            .bind(address)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        sqlx::query("INSERT INTO user_aliases (user_id, address) VALUES (1, 'al@acme.com')")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("DELETE FROM users WHERE id = 3")
            .execute(&mut conn)
            .await
            .unwrap();

        migrate(&mut conn, Backend::Sqlite, "v9.db").await.unwrap();
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(count(&mut conn, "SELECT COUNT(*) FROM users").await, 2);
        assert_eq!(
            count(&mut conn, "SELECT COUNT(*) FROM user_aliases").await,
            1
        );
        // The id of the deleted user is not given again.
        let id: i64 = sqlx::query(
            "INSERT INTO users (customer_id, address, display_name, mailbox_type, billable, \
             group_id, status, created_at, updated_at) \
             VALUES (1, 'd@acme.com', 'D', 'user', 1, 1, 'active', 'x', 'x') RETURNING id",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .try_get("id")
        .unwrap();
        assert_eq!(id, 4);
        // Aliases still go with their user; the address stays unique per customer.
        sqlx::query("DELETE FROM users WHERE id = 1")
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            count(&mut conn, "SELECT COUNT(*) FROM user_aliases").await,
            0
        );
        assert!(
            sqlx::query(
                "INSERT INTO users (customer_id, address, display_name, mailbox_type, billable, \
                 group_id, status, created_at, updated_at) \
                 VALUES (1, 'b@acme.com', 'B', 'user', 1, 1, 'active', 'x', 'x')",
            )
            .execute(&mut conn)
            .await
            .is_err()
        );
        let index: String =
            sqlx::query("SELECT sql FROM sqlite_master WHERE name = 'users_by_source'")
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .try_get("sql")
                .unwrap();
        assert!(index.ends_with("(source_id)"), "{index}");
        conn.close().await.unwrap();
        std::fs::remove_dir_all(dir).ok();
    }
}
