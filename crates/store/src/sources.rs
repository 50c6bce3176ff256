//! User sources: their settings (opaque JSON the engine interprets), their sealed secret and
//! their sync state (delta links and the like), which moves only together with the data.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use usersync_core::SourceKind;

use crate::{SecretString, Store, StoreError, now, parse_enum, query_dyn};

/// A source to create.
#[derive(Debug, Clone)]
pub struct NewSource {
    pub customer_id: i64,
    pub kind: SourceKind,
    /// The tenant (Microsoft 365) or directory (LDAP) the source reads; one customer each.
    pub tenant_id: String,
    pub settings: serde_json::Value,
    pub secret: Option<SecretString>,
}

/// A stored source; the secret is not in it, see [`Store::source_secret`].
#[derive(Debug, Clone, Serialize)]
pub struct SourceRecord {
    pub id: i64,
    pub customer_id: i64,
    pub customer: String,
    pub kind: SourceKind,
    pub tenant_id: String,
    pub settings: serde_json::Value,
    pub has_secret: bool,
    pub sync_state: serde_json::Value,
    pub created_at: String,
}

const SELECT: &str = "SELECT s.id, s.customer_id, c.name AS customer, s.kind, s.tenant_id, s.settings, \
     CASE WHEN s.secret IS NULL THEN 0 ELSE 1 END AS has_secret, s.sync_state, s.created_at \
     FROM sources s JOIN customers c ON c.id = s.customer_id";

fn secret_context(source_id: i64) -> String {
    format!("sources.secret:{source_id}")
}

fn json(text: &str, column: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn source_from(row: &AnyRow) -> Result<SourceRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    let settings: String = row.try_get("settings")?;
    let state: String = row.try_get("sync_state")?;
    let has_secret: i64 = row.try_get("has_secret")?;
    Ok(SourceRecord {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        customer: row.try_get("customer")?,
        kind: parse_enum(&kind, "sources.kind")?,
        tenant_id: row.try_get("tenant_id")?,
        settings: json(&settings, "sources.settings")?,
        has_secret: has_secret != 0,
        sync_state: json(&state, "sources.sync_state")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Creates a source; a tenant that another customer already uses is refused, naming it.
    pub async fn add_source(&self, new: NewSource) -> Result<SourceRecord, StoreError> {
        if let Some(row) = sqlx::query(
            "SELECT s.id, c.name FROM sources s JOIN customers c ON c.id = s.customer_id \
             WHERE s.kind = $1 AND s.tenant_id = $2",
        )
        .bind(new.kind.as_str())
        .bind(&new.tenant_id)
        .fetch_optional(&self.pool)
        .await?
        {
            let id: i64 = row.try_get("id")?;
            let owner: String = row.try_get("name")?;
            return Err(StoreError::Conflict(format!(
                "the tenant {} is already connected to the customer '{owner}' (source #{id}); one tenant belongs to one customer",
                new.tenant_id
            )));
        }
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO sources (customer_id, kind, tenant_id, settings, sync_state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(new.customer_id)
        .bind(new.kind.as_str())
        .bind(&new.tenant_id)
        .bind(new.settings.to_string())
        .bind("{}")
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        if let Some(secret) = &new.secret {
            // The row id is part of the associated data, so the secret is sealed after insert.
            let sealed = self.secrets.seal(secret, &secret_context(id))?;
            sqlx::query("UPDATE sources SET secret = $1 WHERE id = $2")
                .bind(sealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.source(id).await
    }

    pub async fn source(&self, id: i64) -> Result<SourceRecord, StoreError> {
        let row = query_dyn(&format!("{SELECT} WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::not_found("source", id, "`usersync source list` shows the sources")
            })?;
        source_from(&row)
    }

    pub async fn list_sources(
        &self,
        customer_id: Option<i64>,
    ) -> Result<Vec<SourceRecord>, StoreError> {
        let rows = match customer_id {
            Some(c) => {
                query_dyn(&format!("{SELECT} WHERE s.customer_id = $1 ORDER BY s.id"))
                    .bind(c)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                query_dyn(&format!("{SELECT} ORDER BY s.id"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(source_from).collect()
    }

    /// The source's decrypted secret, for the one place that sends it.
    pub async fn source_secret(&self, id: i64) -> Result<Option<SecretString>, StoreError> {
        let row = sqlx::query("SELECT secret FROM sources WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("source", id, ""))?;
        let sealed: Option<String> = row.try_get("secret")?;
        sealed
            .map(|s| self.secrets.open(&s, &secret_context(id)))
            .transpose()
    }

    /// Replaces the settings of a source.
    pub async fn set_source_settings(
        &self,
        id: i64,
        settings: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sources SET settings = $1 WHERE id = $2")
            .bind(settings.to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
