//! One set of migrations for both backends; `{id}` is the only word that differs.

use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};

use crate::{Backend, StoreError, now};

/// Each migration once, in order; never edit one that has shipped: add another.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "directory, sources and runs", V1),
    (2, "filter rules", V2),
    (
        3,
        "domain protection, managers, new-mailbox settings, console group members",
        V3,
    ),
    (4, "console groups made from tenant groups", V4),
];

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

/// Brings the schema up to date, one transaction per migration. On PostgreSQL several
/// processes may start at once: they take turns under an advisory lock.
pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT CAST(pg_advisory_lock($1) AS TEXT) AS locked")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        let result = migrate(pool, backend).await;
        sqlx::query("SELECT CAST(pg_advisory_unlock($1) AS TEXT) AS unlocked")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        return result;
    }
    migrate(pool, backend).await
}

async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    pool.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .await?;
    let id_column = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    };
    for (version, name, sql) in MIGRATIONS {
        let mut tx = pool.begin().await?;
        let applied = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?;
        if applied.is_some() {
            continue;
        }
        tracing::info!(version, name, "applying database migration");
        let sql = sql.replace("{id}", id_column);
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(AssertSqlSafe(statement.to_string()))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(*name)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    let newest: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(pool)
        .await?
        .try_get("v")?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if newest > known {
        return Err(StoreError::Invalid(format!(
            "the database has schema version {newest}, newer than this usersync knows ({known}): upgrade usersync"
        )));
    }
    Ok(())
}
