//! Change-notification subscriptions: per source, the Graph subscriptions it holds (one per
//! resource it watches), when each expires, and its clientState, sealed at rest like a
//! client secret and checked on every notification.

use sqlx::Row;

use crate::{SecretString, Store, StoreError, now, query_dyn};

/// A subscription as stored.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Graph's id of the subscription.
    pub subscription_id: String,
    pub source_id: i64,
    /// `users` or `groups`.
    pub resource: String,
    pub notification_url: String,
    /// When it expires (seconds on the database's clock).
    pub expires_at: i64,
    /// Seconds left before it expires, on the database's clock.
    pub expires_in: i64,
}

/// A subscription to keep.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub subscription_id: String,
    pub source_id: i64,
    pub resource: String,
    pub notification_url: String,
    pub client_state: SecretString,
    /// Seconds from now until it expires.
    pub expires_in: i64,
}

fn context(subscription_id: &str) -> String {
    format!("subscriptions.client_state:{subscription_id}")
}

fn subscription_from(row: &sqlx::any::AnyRow) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        subscription_id: row.try_get("subscription_id")?,
        source_id: row.try_get("source_id")?,
        resource: row.try_get("resource")?,
        notification_url: row.try_get("notification_url")?,
        expires_at: row.try_get("expires_at")?,
        expires_in: row.try_get("expires_in")?,
    })
}

impl Store {
    fn select_subscriptions(&self) -> String {
        format!(
            "SELECT subscription_id, source_id, resource, notification_url, expires_at, \
             expires_at - {} AS expires_in FROM subscriptions",
            self.db_now()
        )
    }

    /// Keeps a subscription Graph made for a source.
    pub async fn add_subscription(&self, new: &NewSubscription) -> Result<(), StoreError> {
        let sealed = self
            .secrets
            .seal(&new.client_state, &context(&new.subscription_id))?;
        let mut tx = self.write_tx().await?;
        query_dyn(&format!(
            "INSERT INTO subscriptions (subscription_id, source_id, resource, client_state, \
             notification_url, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, {} + $6, $7)",
            self.db_now()
        ))
        .bind(&new.subscription_id)
        .bind(new.source_id)
        .bind(&new.resource)
        .bind(sealed)
        .bind(&new.notification_url)
        .bind(new.expires_in)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every subscription, or those of one source.
    pub async fn subscriptions(
        &self,
        source_id: Option<i64>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let sql = match source_id {
            Some(_) => format!(
                "{} WHERE source_id = $1 ORDER BY resource",
                self.select_subscriptions()
            ),
            None => format!(
                "{} ORDER BY source_id, resource",
                self.select_subscriptions()
            ),
        };
        let mut query = query_dyn(&sql);
        if let Some(id) = source_id {
            query = query.bind(id);
        }
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(subscription_from)
            .collect()
    }

    /// The subscription a notification names, and whether `client_state` is its own
    /// (compared in constant time). `None` when no such subscription is kept here.
    pub async fn check_notification(
        &self,
        subscription_id: &str,
        client_state: &str,
    ) -> Result<Option<(Subscription, bool)>, StoreError> {
        let row = query_dyn(&format!(
            "SELECT subscription_id, source_id, resource, notification_url, expires_at, \
             expires_at - {} AS expires_in, client_state FROM subscriptions WHERE subscription_id = $1",
            self.db_now()
        ))
        .bind(subscription_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: String = row.try_get("client_state")?;
        let ours = self.secrets.open(&sealed, &context(subscription_id))?;
        let same = constant_time_eq(ours.expose().as_bytes(), client_state.as_bytes());
        Ok(Some((subscription_from(&row)?, same)))
    }

    /// Records a renewal: the subscription now expires `expires_in` seconds from now.
    pub async fn renew_subscription(
        &self,
        subscription_id: &str,
        expires_in: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        query_dyn(&format!(
            "UPDATE subscriptions SET expires_at = {} + $1 WHERE subscription_id = $2",
            self.db_now()
        ))
        .bind(expires_in)
        .bind(subscription_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a subscription (deleted at Graph, or removed by it).
    pub async fn remove_subscription(&self, subscription_id: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM subscriptions WHERE subscription_id = $1")
            .bind(subscription_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
