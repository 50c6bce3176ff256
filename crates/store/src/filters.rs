//! Filter rules of a source, in order, each with its destination console group.

use sqlx::Row;
use usersync_core::filter::{Expression, FilterRule};

use crate::{Store, StoreError, now};

impl Store {
    /// The source's rules, first to last.
    pub async fn filter_rules(&self, source_id: i64) -> Result<Vec<FilterRule>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, group_name, expression FROM filter_rules WHERE source_id = $1 ORDER BY position, id",
        )
        .bind(source_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("expression")?;
                Ok(FilterRule {
                    id: row.try_get("id")?,
                    group: row.try_get("group_name")?,
                    expression: Expression::parse(&text)
                        .map_err(|e| StoreError::Corrupt(format!("filter rule: {e}")))?,
                })
            })
            .collect()
    }

    /// Appends a rule; when `create_group` is set its destination group is created if missing,
    /// otherwise a missing group is refused. Rule and group are saved together or not at all.
    pub async fn add_filter_rule(
        &self,
        source_id: i64,
        group: &str,
        expression: &Expression,
        create_group: bool,
    ) -> Result<FilterRule, StoreError> {
        let group = usersync_core::check_name(usersync_core::NameKind::Group, group)
            .map_err(|e| StoreError::Invalid(format!("--group: {e}")))?;
        let group = group.as_str();
        let source = self.source(source_id).await?;
        let mut tx = self.write_tx().await?;
        let exists =
            sqlx::query("SELECT id FROM console_groups WHERE customer_id = $1 AND name = $2")
                .bind(source.customer_id)
                .bind(group)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !exists {
            if !create_group {
                return Err(StoreError::not_found(
                    "group",
                    format!("{group}' of customer '{}", source.customer),
                    "add --create-group to create it with the rule",
                ));
            }
            sqlx::query(
                "INSERT INTO console_groups (customer_id, name, created_at) VALUES ($1, $2, $3)",
            )
            .bind(source.customer_id)
            .bind(group)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        let position: i64 = sqlx::query(
            "SELECT COALESCE(MAX(position), 0) + 1 AS p FROM filter_rules WHERE source_id = $1",
        )
        .bind(source_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("p")?;
        let row = sqlx::query(
            "INSERT INTO filter_rules (source_id, position, group_name, expression, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(source_id)
        .bind(position)
        .bind(group)
        .bind(expression.to_string())
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(FilterRule {
            id: row.try_get("id")?,
            group: group.to_string(),
            expression: expression.clone(),
        })
    }

    pub async fn remove_filter_rule(&self, source_id: i64, rule_id: i64) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM filter_rules WHERE source_id = $1 AND id = $2")
            .bind(source_id)
            .bind(rule_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found(
                "filter rule",
                rule_id,
                &format!("`usersync filter list {source_id}` shows the rules of this source"),
            ));
        }
        self.renumber(source_id, None).await
    }

    /// Moves a rule to 1-based position `to` (clamped to the list), keeping the others' order.
    pub async fn move_filter_rule(
        &self,
        source_id: i64,
        rule_id: i64,
        to: usize,
    ) -> Result<(), StoreError> {
        let rules = self.filter_rules(source_id).await?;
        if !rules.iter().any(|r| r.id == rule_id) {
            return Err(StoreError::not_found(
                "filter rule",
                rule_id,
                &format!("`usersync filter list {source_id}` shows the rules of this source"),
            ));
        }
        self.renumber(source_id, Some((rule_id, to))).await
    }

    /// Rewrites positions 1..n, optionally moving one rule first.
    async fn renumber(
        &self,
        source_id: i64,
        moving: Option<(i64, usize)>,
    ) -> Result<(), StoreError> {
        let mut ids: Vec<i64> = self
            .filter_rules(source_id)
            .await?
            .iter()
            .map(|r| r.id)
            .collect();
        if let Some((rule_id, to)) = moving {
            ids.retain(|id| *id != rule_id);
            let at = to.saturating_sub(1).min(ids.len());
            ids.insert(at, rule_id);
        }
        let mut tx = self.write_tx().await?;
        for (i, id) in ids.iter().enumerate() {
            sqlx::query("UPDATE filter_rules SET position = $1 WHERE id = $2")
                .bind(i as i64 + 1)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
