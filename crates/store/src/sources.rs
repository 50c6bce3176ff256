//! User sources: their settings (opaque JSON the engine interprets), their sealed secret and
//! their sync state (delta links and the like), which moves only together with the data.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use usersync_core::SourceKind;

use crate::audit::Change;
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
    /// A delegated connection's refresh token (sealed like the secret).
    pub refresh_token: Option<SecretString>,
}

/// A stored source; the secret is not in it, see [`Store::source_secret`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// When the source was removed (`usersync source remove`); a removed source keeps its
    /// row for its runs' sake but reads nothing and holds no secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<String>,
    /// Its schedule, failures in a row, whether it needs attention, its deletion hold.
    pub health: crate::SourceHealth,
}

const SELECT: &str = "SELECT s.id, s.customer_id, c.name AS customer, s.kind, s.tenant_id, s.settings, \
     CASE WHEN s.secret IS NULL THEN 0 ELSE 1 END AS has_secret, s.sync_state, s.created_at, s.removed_at, \
     s.next_run_at, s.failures, s.last_error, s.attention, s.attention_since, s.hold_run_id, s.last_success_at \
     FROM sources s JOIN customers c ON c.id = s.customer_id";

/// What removing a source changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SourceRemoval {
    /// Users that no source manages any more (kept as they are).
    pub unmanaged: u64,
    /// Users removed (soft-deleted) with the source.
    pub removed: u64,
}

pub(crate) fn secret_context(source_id: i64) -> String {
    format!("sources.secret:{source_id}")
}

fn refresh_token_context(source_id: i64) -> String {
    format!("sources.refresh_token:{source_id}")
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
        removed_at: row.try_get("removed_at")?,
        health: crate::jobs::health_from(row)?,
    })
}

/// Stores the key check with a sealed secret, in the transaction that seals it. It replaces
/// any check there: the store opened only if its key opens the secrets held, and a check
/// left from a key whose secrets are all gone must not outlive them.
pub(crate) async fn keep_key_check(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    check: String,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO store_meta (name, value) VALUES ('key_check', $1) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(check)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Creates a source; a tenant that another customer already uses is refused, naming it.
    pub async fn add_source(&self, new: NewSource) -> Result<SourceRecord, StoreError> {
        if let Some(row) = sqlx::query(
            "SELECT s.id, c.name FROM sources s JOIN customers c ON c.id = s.customer_id \
             WHERE s.kind = $1 AND s.tenant_id = $2 AND s.removed_at IS NULL",
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
        let mut tx = self.write_tx().await?;
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
        .await
        .map_err(|e| {
            if StoreError::is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "the tenant {} was connected by another process at the same moment; one tenant belongs to one customer",
                    new.tenant_id
                ))
            } else {
                e.into()
            }
        })?;
        let id: i64 = row.try_get("id")?;
        if let Some(secret) = &new.secret {
            // The row id is part of the associated data, so the secret is sealed after insert.
            self.seal_secret(&mut tx, id, secret).await?;
        }
        if let Some(token) = &new.refresh_token {
            self.seal_refresh_token(&mut tx, id, token).await?;
        }
        self.audit_now(
            &mut tx,
            &[
                Change::new(Some(new.customer_id), "source.add", source_object(id)).after(
                    serde_json::json!({
                        "kind": new.kind.as_str(),
                        "tenant_id": new.tenant_id,
                        "settings": new.settings,
                        "secret": new.secret.as_ref().map(|_| "set"),
                    }),
                ),
            ],
        )
        .await?;
        tx.commit().await?;
        self.source(id).await
    }

    /// Seals `secret` into the source's row, with the key check if it is the first secret.
    async fn seal_secret(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: i64,
        secret: &SecretString,
    ) -> Result<(), StoreError> {
        let sealed = self.secrets.seal(secret, &secret_context(id))?;
        sqlx::query("UPDATE sources SET secret = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        keep_key_check(tx, self.secrets.check_value()?).await
    }

    async fn seal_refresh_token(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: i64,
        token: &SecretString,
    ) -> Result<(), StoreError> {
        let sealed = self.secrets.seal(token, &refresh_token_context(id))?;
        sqlx::query("UPDATE sources SET refresh_token = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        keep_key_check(tx, self.secrets.check_value()?).await
    }

    /// Keeps the refresh token the identity platform gave a delegated source last (it
    /// hands out a new one with each access token). Not audited: it changes every run.
    pub async fn keep_refresh_token(
        &self,
        id: i64,
        token: &SecretString,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let live = sqlx::query("SELECT id FROM sources WHERE id = $1 AND removed_at IS NULL")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if live.is_some() {
            self.seal_refresh_token(&mut tx, id, token).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A delegated source's refresh token, opened.
    pub async fn source_refresh_token(&self, id: i64) -> Result<Option<SecretString>, StoreError> {
        let row = sqlx::query("SELECT refresh_token FROM sources WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("source", id))?;
        let sealed: Option<String> = row.try_get("refresh_token")?;
        sealed
            .map(|s| {
                self.secrets
                    .open(&s, &refresh_token_context(id))
                    .map_err(|e| match e {
                        StoreError::Key(why) if self.secrets.is_available() => {
                            StoreError::SecretUnreadable { source_id: id, why }
                        }
                        other => other,
                    })
            })
            .transpose()
    }

    /// Replaces the client secret of a source (a wrong or expired one, or one sealed with
    /// a key that was lost and reset).
    pub async fn set_source_secret(
        &self,
        id: i64,
        secret: &SecretString,
    ) -> Result<(), StoreError> {
        let source = self.source(id).await?;
        if let Some(when) = &source.removed_at {
            return Err(StoreError::Invalid(format!(
                "source #{id} was removed on {when}; connect the tenant again instead"
            )));
        }
        let mut tx = self.write_tx().await?;
        self.seal_secret(&mut tx, id, secret).await?;
        self.audit_now(
            &mut tx,
            &[
                Change::new(Some(source.customer_id), "source.secret", source_object(id))
                    .before(serde_json::json!({"secret": source.has_secret.then_some("set")}))
                    .after(serde_json::json!({"secret": "replaced"})),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets every stored secret and the key check, so that a new key can be used after
    /// the old one was lost. Returns how many sources held a secret.
    pub async fn forget_secrets(&self) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let held = sqlx::query("SELECT id, customer_id FROM sources WHERE secret IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?;
        let done = sqlx::query("UPDATE sources SET secret = NULL WHERE secret IS NOT NULL")
            .execute(&mut *tx)
            .await?;
        // Sealed with the lost key too: a delegated source signs in again (reconnect).
        sqlx::query("UPDATE sources SET refresh_token = NULL WHERE refresh_token IS NOT NULL")
            .execute(&mut *tx)
            .await?;
        let mut changes = Vec::new();
        for row in &held {
            changes.push(
                Change::new(
                    row.try_get("customer_id")?,
                    "source.secret",
                    source_object(row.try_get("id")?),
                )
                .before(serde_json::json!({"secret": "set"}))
                .after(serde_json::json!({"secret": null, "why": "the key was reset"})),
            );
        }
        self.audit_now(&mut tx, &changes).await?;
        sqlx::query("DELETE FROM store_meta WHERE name = 'key_check'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Removes a source and lets its users go unmanaged: they stay as they are, and no sync
    /// changes or removes them; console groups it made from tenant groups stay as
    /// ordinary groups. The source keeps its row (its runs), without its secret.
    pub async fn remove_source_keeping_users(&self, id: i64) -> Result<SourceRemoval, StoreError> {
        let mut tx = self.write_tx().await?;
        let stamp = now();
        let users = sqlx::query(
            "UPDATE users SET source_id = NULL, source_object_id = NULL, updated_at = $2 WHERE source_id = $1",
        )
        .bind(id)
        .bind(&stamp)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE customers SET directory_version = directory_version + 1 \
             WHERE id = (SELECT customer_id FROM sources WHERE id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        mark_removed(&mut tx, id, &stamp).await?;
        let customer_id: Option<i64> = sqlx::query("SELECT customer_id FROM sources WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("customer_id"))
            .transpose()?;
        self.audit_now(
            &mut tx,
            &[Change::new(customer_id, "source.remove", source_object(id)).after(
                serde_json::json!({"users": "kept, managed by no source", "unmanaged": users.rows_affected()}),
            )],
        )
        .await?;
        tx.commit().await?;
        Ok(SourceRemoval {
            unmanaged: users.rows_affected(),
            removed: 0,
        })
    }

    pub async fn source(&self, id: i64) -> Result<SourceRecord, StoreError> {
        let row = query_dyn(&format!("{SELECT} WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("source", id))?;
        source_from(&row)
    }

    /// Sources of one customer or of all, removed ones only when asked.
    pub async fn list_sources(
        &self,
        customer_id: Option<i64>,
        include_removed: bool,
    ) -> Result<Vec<SourceRecord>, StoreError> {
        let live = if include_removed {
            ""
        } else {
            " AND s.removed_at IS NULL"
        };
        let rows = match customer_id {
            Some(c) => {
                query_dyn(&format!(
                    "{SELECT} WHERE s.customer_id = $1{live} ORDER BY s.id"
                ))
                .bind(c)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                query_dyn(&format!("{SELECT} WHERE 1 = 1{live} ORDER BY s.id"))
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
            .ok_or_else(|| StoreError::not_found("source", id))?;
        let sealed: Option<String> = row.try_get("secret")?;
        sealed
            .map(|s| {
                self.secrets
                    .open(&s, &secret_context(id))
                    .map_err(|e| match e {
                        // A key that does not open it (a missing key is fixed elsewhere).
                        StoreError::Key(why) if self.secrets.is_available() => {
                            StoreError::SecretUnreadable { source_id: id, why }
                        }
                        other => other,
                    })
            })
            .transpose()
    }

    /// Replaces the settings of a source (its options, or its connection: client id and
    /// endpoints).
    pub async fn set_source_settings(
        &self,
        id: i64,
        settings: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let before = self.source(id).await?;
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE sources SET settings = $1 WHERE id = $2")
            .bind(settings.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let (old, new) = changed_keys(&before.settings, settings);
        if !new.is_empty() || !old.is_empty() {
            self.audit_now(
                &mut tx,
                &[
                    Change::new(Some(before.customer_id), "source.set", source_object(id))
                        .before(old)
                        .after(new),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A source as the audit log names it.
pub(crate) fn source_object(id: i64) -> String {
    format!("source #{id}")
}

/// The keys whose values differ between two settings objects (nested objects key by key:
/// `options.interval`), with their values before and after.
fn changed_keys(
    before: &serde_json::Value,
    after: &serde_json::Value,
) -> (
    serde_json::Map<String, serde_json::Value>,
    serde_json::Map<String, serde_json::Value>,
) {
    fn walk(
        prefix: &str,
        before: &serde_json::Value,
        after: &serde_json::Value,
        old: &mut serde_json::Map<String, serde_json::Value>,
        new: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        use serde_json::Value;
        if let (Value::Object(b), Value::Object(a)) = (before, after) {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                walk(
                    &name,
                    b.get(key).unwrap_or(&Value::Null),
                    a.get(key).unwrap_or(&Value::Null),
                    old,
                    new,
                );
            }
        } else if before != after {
            old.insert(prefix.to_string(), before.clone());
            new.insert(prefix.to_string(), after.clone());
        }
    }
    let (mut old, mut new) = Default::default();
    walk("", before, after, &mut old, &mut new);
    (old, new)
}

/// Marks a source removed, in the transaction that dealt with its users; its secret goes.
pub(crate) async fn mark_removed(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    stamp: &str,
) -> Result<(), StoreError> {
    crate::mirror::drop_mirror(tx, id).await?;
    // Groups it made from tenant groups become ordinary console groups.
    sqlx::query(
        "UPDATE console_groups SET source_id = NULL, source_object_id = NULL WHERE source_id = $1",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    let done = sqlx::query(
        "UPDATE sources SET removed_at = $2, secret = NULL, refresh_token = NULL WHERE id = $1 AND removed_at IS NULL",
    )
    .bind(id)
    .bind(stamp)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!(
            "source #{id} was removed already (or by another process at the same moment)"
        )));
    }
    // With the last secret gone, the database holds none: any key may seal the next one.
    sqlx::query(
        "DELETE FROM store_meta WHERE name = 'key_check' \
         AND NOT EXISTS (SELECT 1 FROM sources WHERE secret IS NOT NULL)",
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
