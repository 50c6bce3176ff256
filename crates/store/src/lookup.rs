//! What the mail system's lookups need from the directory: the protected domains and
//! every active address with its aliases, read whole; and a cheap sign that it changed.

use sqlx::Row;

use crate::{Store, StoreError};

/// A protected domain as the lookups see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupDomain {
    pub name: String,
    pub reject_unlisted: bool,
    /// Imported from, or first synced by, a Microsoft 365 source: its mail goes on to
    /// Exchange Online.
    pub microsoft365: bool,
    /// Its own destination route, set by hand.
    pub route: Option<String>,
}

/// Every protected domain and every active address (aliases included).
#[derive(Debug, Clone, Default)]
pub struct LookupData {
    pub domains: Vec<LookupDomain>,
    pub addresses: Vec<String>,
}

impl Store {
    /// The directory as the lookups hold it, read in one snapshot.
    pub async fn lookup_data(&self) -> Result<LookupData, StoreError> {
        let mut tx = self.pool.begin().await?;
        let domains = sqlx::query(
            "SELECT d.name, d.reject_unlisted, d.route, \
             CASE WHEN d.source_id IS NOT NULL OR d.origin = 'source' THEN 1 ELSE 0 END AS m365 \
             FROM domains d",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| {
            let reject: i64 = row.try_get("reject_unlisted")?;
            let m365: i64 = row.try_get("m365")?;
            Ok(LookupDomain {
                name: row.try_get("name")?,
                reject_unlisted: reject != 0,
                microsoft365: m365 != 0,
                route: row.try_get("route")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let mut addresses = Vec::new();
        for sql in [
            "SELECT address FROM users WHERE status = 'active'",
            "SELECT a.address FROM user_aliases a JOIN users u ON u.id = a.user_id \
             WHERE u.status = 'active'",
        ] {
            let rows = sqlx::query(sql).fetch_all(&mut *tx).await?;
            addresses.reserve(rows.len());
            for row in rows {
                addresses.push(row.try_get::<String, _>("address")?);
            }
        }
        tx.commit().await?;
        Ok(LookupData { domains, addresses })
    }

    /// A number that grows with every audited change (every change of users and domains
    /// is audited): when it moved, the directory may have changed.
    pub async fn directory_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS v FROM audit_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("v")?)
    }
}
