//! Helpers for tests of this and other crates: a fresh database of each backend.

use crate::{KeySource, Store, StoreOptions};

/// The PostgreSQL server tests use: `USERSYNC_TEST_POSTGRES` or the local one.
pub fn postgres_server() -> String {
    std::env::var("USERSYNC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".to_string())
}

/// Set (to anything but empty or 0) by `.ci/run`: a PostgreSQL test may not skip.
pub const REQUIRE_POSTGRES: &str = "USERSYNC_REQUIRE_POSTGRES";

/// A URL naming a PostgreSQL database that does not exist yet (the store creates it), or
/// `None` when no PostgreSQL server answers: then the test skips, and the first skip in
/// the process says so on stderr with how to run them. With `USERSYNC_REQUIRE_POSTGRES`
/// set, an unreachable server fails the test instead.
pub fn fresh_postgres_url() -> Option<String> {
    let required = std::env::var(REQUIRE_POSTGRES).is_ok_and(|v| !v.is_empty() && v != "0");
    match decide(postgres_reachable(), required) {
        Decision::Run => {}
        Decision::Fail(why) => panic!("PostgreSQL at {}: {why}", postgres_server()),
        Decision::Skip(why) => {
            say_skipped(&why);
            return None;
        }
    }
    let name = format!("usersync_test_{}", random_suffix());
    Some(format!("{}/{name}", postgres_server()))
}

/// What a PostgreSQL test does.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Run,
    Skip(String),
    Fail(String),
}

fn decide(reachable: Result<(), String>, required: bool) -> Decision {
    match (reachable, required) {
        (Ok(()), _) => Decision::Run,
        (Err(why), true) => Decision::Fail(format!(
            "required ({REQUIRE_POSTGRES} is set) but not reachable: {why}"
        )),
        (Err(why), false) => Decision::Skip(why),
    }
}

/// Says once per `cargo test` (the first test binary that skips says it for all) that the
/// PostgreSQL tests are skipped, and how to run them.
fn say_skipped(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        if !first_to_say() {
            return;
        }
            use std::io::Write;
            // Straight to stderr: the test harness captures only print!/eprint!.
            let _ = writeln!(
                std::io::stderr(),
                "note: PostgreSQL at {} is not reachable ({why}): the tests that need it are \
                 SKIPPED. Start PostgreSQL, or set USERSYNC_TEST_POSTGRES=postgres://USER@HOST:PORT, \
                 to run them; .ci/run starts it and requires them ({REQUIRE_POSTGRES}=1).",
                postgres_server()
        );
    });
}

/// Whether this test binary is the first of its `cargo test` to skip: test binaries are
/// children of one cargo process, identified by its pid and start tick (pids are reused).
fn first_to_say() -> bool {
    let parent = std::os::unix::process::parent_id();
    let tick = std::fs::read_to_string(format!("/proc/{parent}/stat"))
        .ok()
        .and_then(|stat| crate::process::start_tick(&stat))
        .unwrap_or_default();
    let marker = std::env::temp_dir().join(format!("usersync-postgres-skipped-{parent}-{tick}"));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
        .is_ok()
}

/// Whether something listens at the test server's address (checked once per process).
fn postgres_reachable() -> Result<(), String> {
    static REACHABLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REACHABLE
        .get_or_init(|| {
            use std::net::ToSocketAddrs;
            let url = url::Url::parse(&postgres_server()).map_err(|e| e.to_string())?;
            let host = url
                .host_str()
                .unwrap_or("127.0.0.1")
                .trim_matches(['[', ']']);
            let port = url.port().unwrap_or(5432);
            let address = (host, port)
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or_else(|| format!("{host} has no address"))?;
            std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(3))
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Runs each named test (an async function of a database URL) on SQLite and PostgreSQL;
/// the PostgreSQL one skips, saying so, when no server answers (see [`fresh_postgres_url`]).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[tokio::test] async fn $name() { super::$name($crate::testing::fresh_sqlite_url()).await } )+ }
        mod postgres { $(#[tokio::test] async fn $name() {
            let Some(url) = $crate::testing::fresh_postgres_url() else { return };
            super::$name(url).await
        } )+ }
    };
}

/// A URL naming a new SQLite file in the temporary directory.
pub fn fresh_sqlite_url() -> String {
    let dir = std::env::temp_dir().join(format!("usersync-test-{}", random_suffix()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    format!("sqlite://{}", dir.join("usersync.db").display())
}

/// Opens a fresh store with a fixed test key.
pub async fn open_fresh(url: &str) -> Store {
    let mut options = StoreOptions::new(url);
    options.key = KeySource::Base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into());
    Store::open(options).await.expect("open the test store")
}

/// Drops a test database (PostgreSQL) or deletes its folder (SQLite); best effort.
pub async fn discard(url: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if let Some(dir) = std::path::Path::new(path).parent() {
            std::fs::remove_dir_all(dir).ok();
        }
        return;
    }
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let Some((server, name)) = url.rsplit_once('/') else {
        return;
    };
    if let Ok(mut conn) = sqlx::AnyConnection::connect(&format!("{server}/postgres")).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .ok();
    }
}

fn random_suffix() -> String {
    use rand::RngCore;
    format!("{}_{:08x}", std::process::id(), rand::rng().next_u32())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_skips_unless_postgres_is_required() {
        assert_eq!(decide(Ok(()), false), Decision::Run);
        assert_eq!(decide(Ok(()), true), Decision::Run);
        assert_eq!(
            decide(Err("refused".into()), false),
            Decision::Skip("refused".into())
        );
        assert!(matches!(
            decide(Err("refused".into()), true),
            Decision::Fail(why) if why.contains(REQUIRE_POSTGRES) && why.contains("refused")
        ));
    }
}
