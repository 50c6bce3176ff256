//! Removed users: restored by hand, or purged once their customer's retention has passed.

use serde::Serialize;
use sqlx::Row;
use usersync_core::{DirectoryUser, EmailAddress, UserStatus};

use crate::audit::{By, Change, record};
use crate::{Store, StoreError, now, query_dyn};

/// Seconds in a day: retention is counted in days.
const DAY: i64 = 86_400;

/// What one purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// Removed users deleted for good, by customer id and address.
    pub purged: Vec<(i64, String)>,
    /// Removed users that had no removal time (removed before it was recorded): their
    /// retention starts now.
    pub stamped: u64,
}

impl Store {
    /// Brings a removed user back: active again, kept by hand from now on (no source
    /// manages it, so no sync removes it again; a source whose tenant lists the address
    /// again takes it over, as it does any entry added by hand). Its entry, group, aliases
    /// and services are the ones it had.
    pub async fn restore_user(
        &self,
        customer_id: i64,
        address: &EmailAddress,
    ) -> Result<DirectoryUser, StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "SELECT id, status, source_id FROM users WHERE customer_id = $1 AND address = $2",
        )
        .bind(customer_id)
        .bind(address.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::not_found("user", address))?;
        let status: String = row.try_get("status")?;
        if status != UserStatus::Removed.as_str() {
            return Err(StoreError::Conflict(format!(
                "{address} is not removed: it is {status}; there is nothing to restore"
            )));
        }
        let id: i64 = row.try_get("id")?;
        let source_id: Option<i64> = row.try_get("source_id")?;
        sqlx::query(
            "UPDATE users SET status = 'active', removed_at = NULL, removed_epoch = NULL, \
             source_id = NULL, source_object_id = NULL, updated_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        crate::users::bump_directory(&mut tx, customer_id).await?;
        self.audit_now(
            &mut tx,
            &[Change::new(Some(customer_id), "user.restore", address)
                .before(serde_json::json!({"status": "removed", "source_id": source_id}))
                .after(
                    serde_json::json!({"status": "active", "source_id": null, "kept": "by hand"}),
                )],
        )
        .await?;
        tx.commit().await?;
        self.user(id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", address))
    }

    /// The daily purge, when it is due: deletes for good the removed users whose customer's
    /// retention has passed, with an audit entry each. The job's next time is taken by a
    /// compare-and-set in the same transaction as the work, so however many processes call
    /// this, one of them purges, once a day; `None` when it was not due.
    pub async fn purge_due(&self) -> Result<Option<PurgeReport>, StoreError> {
        let now_s = self.db_now();
        // A read first: on most calls it is not due, and that must not take the write lock
        // (on SQLite, a writer would wait behind a sync's apply).
        let due = query_dyn(&format!(
            "SELECT 1 AS due FROM maintenance WHERE name = 'purge' AND next_run_at <= {now_s}"
        ))
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(None);
        }
        let mut tx = self.write_tx().await?;
        let taken = query_dyn(&format!(
            "UPDATE maintenance SET next_run_at = {now_s} + {DAY}, last_run_at = $1 \
             WHERE name = 'purge' AND next_run_at <= {now_s}"
        ))
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() == 0 {
            return Ok(None);
        }
        let stamped = query_dyn(&format!(
            "UPDATE users SET removed_epoch = {now_s} WHERE status = 'removed' AND removed_epoch IS NULL"
        ))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let rows = query_dyn(&format!(
            "SELECT u.id, u.customer_id, u.address, u.removed_at FROM users u \
             JOIN customers c ON c.id = u.customer_id \
             WHERE u.status = 'removed' AND u.removed_epoch <= {now_s} - c.retention_days * {DAY} \
             ORDER BY u.customer_id, u.address"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut report = PurgeReport {
            purged: Vec::with_capacity(rows.len()),
            stamped,
        };
        let mut changes = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let customer_id: i64 = row.try_get("customer_id")?;
            let address: String = row.try_get("address")?;
            let removed_at: Option<String> = row.try_get("removed_at")?;
            ids.push(row.try_get::<i64, _>("id")?);
            changes.push(
                Change::new(Some(customer_id), "user.purge", &address)
                    .before(serde_json::json!({"status": "removed", "removed_at": removed_at}))
                    .after(serde_json::json!({"why": "its customer's retention period passed"})),
            );
            report.purged.push((customer_id, address));
        }
        for chunk in ids.chunks(400) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let mut query = query_dyn(&format!(
                "DELETE FROM users WHERE status = 'removed' AND id IN ({})",
                marks.join(", ")
            ));
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
        }
        let mut customers: Vec<i64> = report.purged.iter().map(|(c, _)| *c).collect();
        customers.dedup();
        for customer_id in customers {
            crate::users::bump_directory(&mut tx, customer_id).await?;
        }
        let by = By {
            actor: "retention",
            run_id: None,
        };
        record(&mut tx, self.backend, &by, &changes).await?;
        sqlx::query("UPDATE maintenance SET last_result = $1 WHERE name = 'purge'")
            .bind(format!(
                "purged {} removed user(s) past retention",
                report.purged.len()
            ))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(report))
    }
}
