//! The audit log: every change to the directory and to configuration, by a person or by a
//! run, written in the transaction that makes the change (so there is never a change
//! without its entry, nor an entry for a change that did not commit).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::bulk::{Bulk, Cell};
use crate::{Backend, Store, StoreError, now, query_dyn};

/// One entry of the audit log.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    pub customer_id: Option<i64>,
    pub customer: Option<String>,
    /// Who: an operating-system user, a console account (later), `scheduler`, `retention`.
    pub actor: String,
    /// The run that made the change, when a run made it.
    pub run_id: Option<i64>,
    /// What was done, as `object.verb`: `user.add`, `source.set`, `filter.move` ...
    pub action: String,
    /// Which object: an address, `source #3`, a domain, a group's name.
    pub object: String,
    /// The object (or the fields that changed) before and after; never a secret.
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub customer_id: Option<i64>,
    /// Only entries at or after this time (RFC 3339, UTC).
    pub since: Option<String>,
    /// Only entries older than this one (the id of the last entry of the page before).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// A change about to be written to the log.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub customer_id: Option<i64>,
    pub action: &'static str,
    pub object: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Change {
    pub fn new(customer_id: Option<i64>, action: &'static str, object: impl ToString) -> Self {
        Change {
            customer_id,
            action,
            object: object.to_string(),
            before: None,
            after: None,
        }
    }

    pub fn before(mut self, value: impl Serialize) -> Self {
        self.before = serde_json::to_value(value).ok();
        self
    }

    pub fn after(mut self, value: impl Serialize) -> Self {
        self.after = serde_json::to_value(value).ok();
        self
    }
}

/// Who makes the changes of a transaction: a person (the store's actor) or a run.
#[derive(Debug, Clone)]
pub(crate) struct By<'a> {
    pub actor: &'a str,
    pub run_id: Option<i64>,
}

/// Writes `changes` to the log inside `tx`, many rows per statement.
pub(crate) async fn record(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    by: &By<'_>,
    changes: &[Change],
) -> Result<(), StoreError> {
    write(tx, backend, by, changes, None).await
}

/// [`record`], keeping the id of each `user.add` entry by its object (the address).
pub(crate) async fn record_adds(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    by: &By<'_>,
    changes: &[Change],
    entries: &mut HashMap<String, i64>,
) -> Result<(), StoreError> {
    write(tx, backend, by, changes, Some(entries)).await
}

async fn write(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    by: &By<'_>,
    changes: &[Change],
    mut kept: Option<&mut HashMap<String, i64>>,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let stamp = now();
    let text = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    let entries = Bulk {
        backend,
        table: "audit_log",
        columns: &[
            "at",
            "customer_id",
            "actor",
            "run_id",
            "action",
            "object",
            "before",
            "after",
        ],
        tail: if kept.is_some() {
            "RETURNING id, action, object"
        } else {
            ""
        },
    };
    for chunk in changes.chunks(entries.rows_per_statement()) {
        let query = entries.query(chunk.iter().map(|c| {
            vec![
                Cell::from(stamp.as_str()),
                Cell::from(c.customer_id),
                Cell::from(by.actor),
                Cell::from(by.run_id),
                Cell::from(c.action),
                Cell::from(c.object.as_str()),
                Cell::Owned(text(&c.before)),
                Cell::Owned(text(&c.after)),
            ]
        }));
        match kept.as_deref_mut() {
            Some(kept) => {
                for row in query.fetch_all(&mut **tx).await? {
                    let action: String = row.try_get("action")?;
                    if action == "user.add" {
                        kept.insert(row.try_get("object")?, row.try_get("id")?);
                    }
                }
            }
            None => {
                query.execute(&mut **tx).await?;
            }
        }
    }
    Ok(())
}

fn entry_from(row: &AnyRow) -> Result<AuditEntry, StoreError> {
    let json = |column: &str| -> Result<Option<Value>, StoreError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("audit_log.{column}: {e}")))
    };
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        customer_id: row.try_get("customer_id")?,
        customer: row.try_get("customer")?,
        actor: row.try_get("actor")?,
        run_id: row.try_get("run_id")?,
        action: row.try_get("action")?,
        object: row.try_get("object")?,
        before: json("before")?,
        after: json("after")?,
    })
}

impl Store {
    /// Writes `changes` inside `tx` (the transaction that makes them), as this handle's actor.
    pub(crate) async fn audit_now(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        changes: &[Change],
    ) -> Result<(), StoreError> {
        let by = By {
            actor: &self.actor,
            run_id: None,
        };
        record(tx, self.backend, &by, changes).await
    }

    /// Entries of the log, newest first.
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let mut sql = String::from(
            "SELECT a.id, a.at, a.customer_id, c.name AS customer, a.actor, a.run_id, a.action, \
             a.object, a.before, a.after FROM audit_log a LEFT JOIN customers c ON c.id = a.customer_id \
             WHERE 1 = 1",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if query.customer_id.is_some() {
            sql.push_str(&format!(" AND a.customer_id = {}", next()));
        }
        if query.since.is_some() {
            sql.push_str(&format!(" AND a.at >= {}", next()));
        }
        if query.before_id.is_some() {
            sql.push_str(&format!(" AND a.id < {}", next()));
        }
        sql.push_str(&format!(" ORDER BY a.id DESC LIMIT {}", next()));
        let mut q = query_dyn(&sql);
        if let Some(c) = query.customer_id {
            q = q.bind(c);
        }
        if let Some(since) = &query.since {
            q = q.bind(since.clone());
        }
        if let Some(before) = query.before_id {
            q = q.bind(before);
        }
        let rows = q.bind(query.limit.max(0)).fetch_all(&self.pool).await?;
        rows.iter().map(entry_from).collect()
    }
}
