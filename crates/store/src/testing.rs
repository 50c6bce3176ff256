//! Helpers for tests of this and other crates: a fresh database of each backend.

use crate::{KeySource, Store, StoreOptions};

/// The PostgreSQL server tests use: `USERSYNC_TEST_POSTGRES` or the local one.
pub fn postgres_server() -> String {
    std::env::var("USERSYNC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".to_string())
}

/// A URL naming a PostgreSQL database that does not exist yet (the store creates it).
pub fn fresh_postgres_url() -> String {
    let name = format!("usersync_test_{}", random_suffix());
    format!("{}/{name}", postgres_server())
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
