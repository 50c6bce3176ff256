//! Which database a URL names, and the checks made before usersync writes anything to it:
//! a URL that names a database, a file that is an SQLite database, a server that answers.

use std::path::{Path, PathBuf};

use crate::{Backend, StoreError};

/// A database URL, parsed and checked; `shown` is the URL as given with any password masked.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub backend: Backend,
    /// What sqlx connects to (may differ from the URL as given, e.g. for IPv6 hosts).
    pub connect_url: String,
    pub sqlite_path: Option<PathBuf>,
    pub shown: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, StoreError> {
        let shown = mask_password(url);
        let bad = |problem: String| StoreError::BadUrl {
            url: shown.clone(),
            problem,
        };
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path_part = rest.trim_start_matches("//");
            let (path, query) = path_part.split_once('?').unwrap_or((path_part, ""));
            if path.is_empty() || path == ":memory:" {
                return Err(bad("give a file path, such as sqlite://usersync.db".into()));
            }
            // mode=rwc: create the file on first use.
            let query = if query.contains("mode=") {
                query.to_string()
            } else if query.is_empty() {
                "mode=rwc".to_string()
            } else {
                format!("{query}&mode=rwc")
            };
            return Ok(Target {
                backend: Backend::Sqlite,
                connect_url: format!("sqlite://{path}?{query}"),
                sqlite_path: Some(PathBuf::from(path)),
                shown,
            });
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE".into(),
            ));
        }
        let parsed = url::Url::parse(url).map_err(|e| {
            bad(format!(
                "it cannot be read ({e}); use postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ))
        })?;
        let database = parsed.path().trim_start_matches('/');
        if database.is_empty() {
            return Err(bad(
                "it names no database; add one, such as postgres://USER@HOST:5432/usersync \
                 (usersync creates it if it does not exist, and wants a database of its own)"
                    .into(),
            ));
        }
        if database.contains('/') {
            return Err(bad(format!(
                "'{database}' is not a database name: it cannot contain '/'"
            )));
        }
        Ok(Target {
            backend: Backend::Postgres,
            connect_url: with_ipv6_host(&parsed),
            sqlite_path: None,
            shown,
        })
    }

    /// The PostgreSQL database's name, decoded (`user%20sync` is `user sync`).
    pub fn database_name(&self) -> Option<String> {
        let url = url::Url::parse(&self.connect_url).ok()?;
        let encoded = url.path().trim_start_matches('/');
        percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .ok()
            .map(|name| name.into_owned())
    }
}

/// sqlx hands the host of `postgres://u@[::1]/db` to the resolver with its brackets, which
/// fails; its `host` parameter takes the bare address instead.
fn with_ipv6_host(url: &url::Url) -> String {
    match url.host() {
        Some(url::Host::Ipv6(address)) if !url.query_pairs().any(|(k, _)| k == "host") => {
            let mut url = url.clone();
            url.query_pairs_mut()
                .append_pair("host", &address.to_string());
            url.to_string()
        }
        _ => url.to_string(),
    }
}

/// The URL as given, with the password (in the user part or a `password` parameter)
/// replaced by `***`; works on text that is not a valid URL too.
pub fn mask_password(text: &str) -> String {
    if let Ok(url) = url::Url::parse(text)
        && url.has_host()
    {
        return redact_parsed(url);
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    // The user part ends at the last '@' before the path; a password may hold '@' or '/'.
    let Some(at) = rest.rfind('@') else {
        return text.to_string();
    };
    let (user_info, host_and_rest) = (&rest[..at], &rest[at + 1..]);
    match user_info.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host_and_rest}"),
        None => text.to_string(),
    }
}

fn redact_parsed(mut url: url::Url) -> String {
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

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Refuses a path that is not an SQLite database (or a place one can be created) before
/// SQLite sees it: SQLite itself only says "file is not a database" on the first query.
pub(crate) fn check_sqlite_file(path: &Path, shown: &str) -> Result<(), StoreError> {
    let unusable = |problem: String| StoreError::Unusable {
        url: shown.to_string(),
        problem,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(unusable(format!(
            "names the folder {}, not a file; give a file path such as sqlite://{}/usersync.db",
            path.display(),
            path.display()
        ))),
        // SQLite makes an empty file a new database.
        Ok(meta) if meta.len() == 0 => Ok(()),
        Ok(_) => {
            use std::io::Read;
            let mut header = [0u8; 16];
            let read = std::fs::File::open(path)
                .and_then(|mut f| f.read(&mut header))
                .map_err(|e| unusable(format!("cannot be read: {e}")))?;
            if read < header.len() || &header != SQLITE_HEADER {
                return Err(unusable(format!(
                    "is not an SQLite database: the file {} holds something else. \
                     Check the path, or give a new file name to create a database",
                    path.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            match parent {
                Some(dir) if !dir.is_dir() => Err(unusable(format!(
                    "cannot be created: the folder {} does not exist",
                    dir.display()
                ))),
                _ => Ok(()),
            }
        }
        Err(e) => Err(unusable(format!("cannot be read: {e}"))),
    }
}

/// Creates the PostgreSQL database the target names when it does not exist yet.
pub(crate) async fn ensure_postgres_database(target: &Target) -> Result<(), StoreError> {
    use sqlx::Connection;
    let open_failed = |source| StoreError::Open {
        url: target.shown.clone(),
        source,
    };
    let Some(name) = target.database_name() else {
        return Ok(());
    };
    // Connecting to the database itself says at once what is wrong (refused, bad password);
    // only "does not exist" (3D000) is ours to fix.
    match sqlx::AnyConnection::connect(&target.connect_url).await {
        Ok(conn) => {
            conn.close().await.ok();
            return Ok(());
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(source) => return Err(open_failed(source)),
    }
    let mut maintenance = url::Url::parse(&target.connect_url).map_err(|e| StoreError::BadUrl {
        url: target.shown.clone(),
        problem: e.to_string(),
    })?;
    maintenance.set_path("/postgres");
    let mut conn = sqlx::AnyConnection::connect(maintenance.as_str())
        .await
        .map_err(open_failed)?;
    let exists: Option<(i64,)> =
        sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut conn)
            .await?;
    if exists.is_none() {
        tracing::info!(database = name, "creating the PostgreSQL database");
        let quoted = name.replace('"', "\"\"");
        // An identifier cannot be bound; it is quoted, with quotes inside doubled.
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
            .execute(&mut conn)
            .await
        {
            // 42P04: another process created it at the same moment, which is as good.
            let raced =
                matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P04"));
            if !raced {
                return Err(e.into());
            }
        }
    }
    conn.close().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_the_file_and_postgres_urls_pass_through() {
        let t = Target::parse("sqlite://data/usersync.db").unwrap();
        assert_eq!(t.backend, Backend::Sqlite);
        assert_eq!(t.connect_url, "sqlite://data/usersync.db?mode=rwc");
        assert_eq!(t.sqlite_path.unwrap(), PathBuf::from("data/usersync.db"));
        let t = Target::parse("postgres://root@127.0.0.1/test").unwrap();
        assert_eq!(t.backend, Backend::Postgres);
        assert!(t.sqlite_path.is_none());
        assert_eq!(t.database_name().as_deref(), Some("test"));
        let t = Target::parse("postgres://root@127.0.0.1/user%20sync").unwrap();
        assert_eq!(t.database_name().as_deref(), Some("user sync"));
        assert!(Target::parse("mysql://x").is_err());
        assert!(Target::parse("sqlite://").is_err());
    }

    #[test]
    fn a_postgres_url_without_a_database_is_refused() {
        for url in [
            "postgres://root@127.0.0.1:5432",
            "postgres://root@127.0.0.1:5432/",
        ] {
            let err = Target::parse(url).unwrap_err().to_string();
            assert!(err.contains("names no database"), "{err}");
        }
    }

    #[test]
    fn an_ipv6_host_is_given_to_sqlx_without_brackets() {
        let t = Target::parse("postgres://root@[::1]:5432/test").unwrap();
        assert_eq!(
            t.connect_url,
            "postgres://root@[::1]:5432/test?host=%3A%3A1"
        );
        assert_eq!(t.shown, "postgres://root@[::1]:5432/test");
    }

    #[test]
    fn an_unreadable_url_is_shown_as_given_with_the_password_masked() {
        let err = Target::parse("postgres://app:s3cret@[::1:5432/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres://app:***@[::1:5432/x"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(mask_password("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(
            mask_password("postgres://app@db/x?sslmode=require&password=s3cret"),
            "postgres://app@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            mask_password("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            mask_password("postgres://u:p w@h:x/db"),
            "postgres://u:***@h:x/db"
        );
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("usersync-notdb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("notes.db");
        std::fs::write(&file, "hello, this is not a database at all").unwrap();
        let err = check_sqlite_file(&file, "sqlite://notes.db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an SQLite database"), "{err}");
        let err = check_sqlite_file(&dir, "sqlite://dir")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a file"), "{err}");
        let err = check_sqlite_file(&dir.join("no/such/x.db"), "sqlite://x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::write(&file, "").unwrap();
        assert!(check_sqlite_file(&file, "sqlite://notes.db").is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
