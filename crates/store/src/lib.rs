//! usersync-store: persistence of the console directory, sources and runs on SQLite (the
//! default, one file) or PostgreSQL, through one code path and one set of migrations.
//!
//! Architecture invariant: every query is written once, in SQL that both backends accept,
//! and goes through sqlx's `Any` driver. Booleans are stored as 0/1 integers and times as
//! RFC 3339 text because `Any` cannot read SQLite booleans or any date type portably.
//! A plan is applied in one transaction together with its run record.

mod crypto;
mod customers;
mod error;
mod filters;
mod migrations;
mod runs;
mod sources;
pub mod testing;
mod users;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use crypto::{KeySource, SecretBox, SecretString};
pub use customers::{Customer, Domain, DomainOrigin, Group};
pub use error::StoreError;
pub use runs::{NewRun, RunKind, RunRecord, RunStats, RunStatus};
pub use sources::{NewSource, SourceRecord};
pub use users::ApplyCounts;

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
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            key: KeySource::Default,
            max_connections: 8,
        }
    }
}

/// The store: a connection pool plus the key for secrets.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    secrets: SecretBox,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store {
    /// Opens (and on first use creates and migrates) the database the options name.
    pub async fn open(options: StoreOptions) -> Result<Store, StoreError> {
        install_default_drivers();
        let (backend, url, sqlite_path) = parse_url(&options.url)?;
        if backend == Backend::Postgres {
            ensure_postgres_database(&url).await?;
        }
        // SQLite allows one writer: more connections would only wait on each other's locks.
        let max = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => options.max_connections.max(1),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| StoreError::Open {
                url: redact_url(&options.url),
                source,
            })?;
        if backend == Backend::Sqlite {
            // WAL lets readers (the console, the CLI) read while a sync writes; it is
            // a property of the file, so setting it once per open is enough.
            pool.execute("PRAGMA journal_mode = WAL;").await?;
        }
        migrations::run(&pool, backend).await?;
        let key_beside = sqlite_path.map(|p| key_path_beside(&p));
        let secrets = SecretBox::load(&options.key, key_beside.as_deref())?;
        Ok(Store {
            pool,
            backend,
            secrets,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The default key file for a SQLite database `x.db` is `x.db.key` beside it.
fn key_path_beside(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    db.with_file_name(name)
}

fn parse_url(url: &str) -> Result<(Backend, String, Option<PathBuf>), StoreError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path_part = rest.trim_start_matches("//");
        let (path, query) = path_part.split_once('?').unwrap_or((path_part, ""));
        if path.is_empty() || path == ":memory:" {
            return Err(StoreError::BadUrl {
                url: url.to_string(),
                problem: "give a file path, such as sqlite://usersync.db".into(),
            });
        }
        // mode=rwc: create the file on first use.
        let query = if query.contains("mode=") {
            query.to_string()
        } else if query.is_empty() {
            "mode=rwc".to_string()
        } else {
            format!("{query}&mode=rwc")
        };
        Ok((
            Backend::Sqlite,
            format!("sqlite://{path}?{query}"),
            Some(PathBuf::from(path)),
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((Backend::Postgres, url.to_string(), None))
    } else {
        Err(StoreError::BadUrl {
            url: redact_url(url),
            problem: "use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE".into(),
        })
    }
}

/// Creates the PostgreSQL database the URL names when it does not exist yet.
async fn ensure_postgres_database(url: &str) -> Result<(), StoreError> {
    use sqlx::Connection;
    let Some((server, rest)) = url.rsplit_once('/') else {
        return Ok(());
    };
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(());
    }
    let maintenance = if query.is_empty() {
        format!("{server}/postgres")
    } else {
        format!("{server}/postgres?{query}")
    };
    // Connecting to the database itself says at once what is wrong (refused, bad password);
    // only "does not exist" (3D000) is ours to fix.
    match sqlx::AnyConnection::connect(url).await {
        Ok(conn) => {
            conn.close().await.ok();
            return Ok(());
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(source) => {
            return Err(StoreError::Open {
                url: redact_url(url),
                source,
            });
        }
    }
    let mut conn = sqlx::AnyConnection::connect(&maintenance)
        .await
        .map_err(|source| StoreError::Open {
            url: redact_url(&maintenance),
            source,
        })?;
    let exists: Option<(i64,)> =
        sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut conn)
            .await?;
    if exists.is_none() {
        tracing::info!(database = name, "creating the PostgreSQL database");
        // The name was checked above to be letters, digits and underscores only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await.ok();
    Ok(())
}

/// The URL without a password (in the user part or a `password` parameter), for messages.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        // Not parseable: show only the scheme, in case a password hides in the rest.
        return text.split_once("://").map_or_else(
            || "(unparseable URL)".to_string(),
            |(scheme, _)| format!("{scheme}://***"),
        );
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let secret_params = ["password", "sslpassword"];
    if url
        .query_pairs()
        .any(|(k, _)| secret_params.contains(&k.as_ref()))
    {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_params.contains(&k.as_ref()) {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string().replace("%2A%2A%2A", "***")
}

pub(crate) fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_the_file_and_postgres_urls_pass_through() {
        let (b, url, path) = parse_url("sqlite://data/usersync.db").unwrap();
        assert_eq!(b, Backend::Sqlite);
        assert_eq!(url, "sqlite://data/usersync.db?mode=rwc");
        assert_eq!(path.unwrap(), PathBuf::from("data/usersync.db"));
        let (b, _, path) = parse_url("postgres://root@127.0.0.1/test").unwrap();
        assert_eq!(b, Backend::Postgres);
        assert!(path.is_none());
        assert!(parse_url("mysql://x").is_err());
        assert!(parse_url("sqlite://").is_err());
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(
            redact_url("postgres://app@db/x?sslmode=require&password=s3cret"),
            "postgres://app@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn the_key_file_sits_beside_the_database() {
        assert_eq!(
            key_path_beside(Path::new("/var/lib/usersync.db")),
            PathBuf::from("/var/lib/usersync.db.key")
        );
    }
}
