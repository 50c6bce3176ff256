//! Filter rules of a source, in order, each with its destination console group.

use sqlx::Row;
use usersync_core::filter::{Expression, FilterRule};

use crate::audit::Change;
use crate::{Store, StoreError, now};

impl Store {
    /// The source's rules, first to last.
    pub async fn filter_rules(&self, source_id: i64) -> Result<Vec<FilterRule>, StoreError> {
        read_rules(&self.pool, source_id).await
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
            self.audit_now(
                &mut tx,
                &[Change::new(Some(source.customer_id), "group.add", group)],
            )
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
        let rule = FilterRule {
            id: row.try_get("id")?,
            group: group.to_string(),
            expression: expression.clone(),
        };
        self.audit_now(
            &mut tx,
            &[
                Change::new(Some(source.customer_id), "filter.add", rule_object(&rule, source_id))
                    .after(serde_json::json!({"position": position, "group": group, "rule": expression.to_string()})),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(rule)
    }

    pub async fn remove_filter_rule(&self, source_id: i64, rule_id: i64) -> Result<(), StoreError> {
        self.renumber(source_id, rule_id, None).await
    }

    /// Moves a rule to 1-based position `to` (clamped to the list), keeping the others' order.
    pub async fn move_filter_rule(
        &self,
        source_id: i64,
        rule_id: i64,
        to: usize,
    ) -> Result<(), StoreError> {
        self.renumber(source_id, rule_id, Some(to)).await
    }

    /// Removes a rule (`to` is `None`) or moves it to 1-based position `to` (clamped to
    /// the list), keeping the others' order, and rewrites positions 1..n.
    async fn renumber(
        &self,
        source_id: i64,
        rule_id: i64,
        to: Option<usize>,
    ) -> Result<(), StoreError> {
        let source = self.source(source_id).await?;
        let mut tx = self.write_tx().await?;
        let rules = read_rules(&mut *tx, source_id).await?;
        let Some(from) = rules.iter().position(|r| r.id == rule_id) else {
            return Err(StoreError::not_found(
                "filter rule",
                format!("{rule_id}' of source '#{source_id}"),
            ));
        };
        let rule = rules[from].clone();
        let mut ids: Vec<i64> = rules
            .iter()
            .map(|r| r.id)
            .filter(|id| *id != rule_id)
            .collect();
        let what = rule_object(&rule, source_id);
        let change = match to {
            None => {
                sqlx::query("DELETE FROM filter_rules WHERE id = $1")
                    .bind(rule_id)
                    .execute(&mut *tx)
                    .await?;
                Change::new(Some(source.customer_id), "filter.remove", what).before(
                    serde_json::json!({"position": from + 1, "group": rule.group, "rule": rule.expression.to_string()}),
                )
            }
            Some(to) => {
                let at = to.saturating_sub(1).min(ids.len());
                ids.insert(at, rule_id);
                Change::new(Some(source.customer_id), "filter.move", what)
                    .before(serde_json::json!({"position": from + 1}))
                    .after(serde_json::json!({"position": at + 1}))
            }
        };
        for (i, id) in ids.iter().enumerate() {
            sqlx::query("UPDATE filter_rules SET position = $1 WHERE id = $2")
                .bind(i as i64 + 1)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        self.audit_now(&mut tx, &[change]).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A rule as the audit log names it.
fn rule_object(rule: &FilterRule, source_id: i64) -> String {
    format!("filter rule {} of source #{source_id}", rule.id)
}

async fn read_rules<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    source_id: i64,
) -> Result<Vec<FilterRule>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, group_name, expression FROM filter_rules WHERE source_id = $1 ORDER BY position, id",
    )
    .bind(source_id)
    .fetch_all(executor)
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
