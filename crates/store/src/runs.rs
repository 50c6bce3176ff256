//! Sync runs: every preview and sync is recorded with its plan, counts, figures and error.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use usersync_core::Plan;

use crate::{Store, StoreError, now, parse_enum, query_dyn};

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
        }
        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(()) }
            }
        }
    };
}

text_enum!(RunKind { Preview => "preview", Sync => "sync" });
text_enum!(RunStatus { Running => "running", Succeeded => "succeeded", Failed => "failed" });

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub source_id: i64,
    pub customer_id: i64,
    pub kind: RunKind,
    /// Why it runs: `manual` now; `schedule` and `notification` later.
    pub reason: String,
}

/// What a run read and how it went, beside the plan's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStats {
    pub read_users: u64,
    pub read_groups: u64,
    /// HTTP requests the run made to the source.
    pub requests: u64,
    /// Requests the source throttled (HTTP 429) and that were retried.
    pub throttled: u64,
    pub duration_ms: u64,
    /// Things the operator should know that did not fail the run.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub source_id: i64,
    pub customer: String,
    pub kind: RunKind,
    pub reason: String,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub added: i64,
    pub updated: i64,
    pub removed: i64,
    pub skipped: i64,
    pub linked: i64,
    pub stats: Option<RunStats>,
    pub error: Option<String>,
    /// Only filled by [`Store::run`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

const COLUMNS: &str = "r.id, r.source_id, c.name AS customer, r.kind, r.reason, r.status, r.started_at, \
     r.finished_at, r.added, r.updated, r.removed, r.skipped, r.linked, r.stats, r.error";

fn run_from(row: &AnyRow) -> Result<RunRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let stats: Option<String> = row.try_get("stats")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        source_id: row.try_get("source_id")?,
        customer: row.try_get("customer")?,
        kind: parse_enum(&kind, "runs.kind")?,
        reason: row.try_get("reason")?,
        status: parse_enum(&status, "runs.status")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        added: row.try_get("added")?,
        updated: row.try_get("updated")?,
        removed: row.try_get("removed")?,
        skipped: row.try_get("skipped")?,
        linked: row.try_get("linked")?,
        stats: stats
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("runs.stats: {e}")))?,
        error: row.try_get("error")?,
        plan: None,
    })
}

impl Store {
    /// Records that a run started; it is `running` until finished.
    pub async fn start_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO runs (source_id, customer_id, kind, reason, status, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(run.source_id)
        .bind(run.customer_id)
        .bind(run.kind.as_str())
        .bind(&run.reason)
        .bind(RunStatus::Running.as_str())
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Finishes a run that applies nothing: a preview, or a failed sync.
    pub async fn finish_run(
        &self,
        run_id: i64,
        status: RunStatus,
        plan: Option<&Plan>,
        stats: &RunStats,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        finish(&self.pool, run_id, status, plan, stats, error).await
    }

    /// The newest runs first, of one source or of all.
    pub async fn list_runs(
        &self,
        source_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let base = format!("SELECT {COLUMNS} FROM runs r JOIN customers c ON c.id = r.customer_id");
        let rows = match source_id {
            Some(s) => {
                query_dyn(&format!(
                    "{base} WHERE r.source_id = $1 ORDER BY r.id DESC LIMIT $2"
                ))
                .bind(s)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                query_dyn(&format!("{base} ORDER BY r.id DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(run_from).collect()
    }

    /// One run with its plan.
    pub async fn run(&self, id: i64) -> Result<RunRecord, StoreError> {
        let row = query_dyn(&format!(
            "SELECT {COLUMNS}, r.plan FROM runs r JOIN customers c ON c.id = r.customer_id WHERE r.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("run", id, "`usersync runs list` shows the runs"))?;
        let mut run = run_from(&row)?;
        let plan: Option<String> = row.try_get("plan")?;
        run.plan = plan
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("runs.plan: {e}")))?;
        Ok(run)
    }
}

/// Writes a run's outcome; used alone, and inside the transaction that applies a plan.
pub(crate) async fn finish<'e, E>(
    executor: E,
    run_id: i64,
    status: RunStatus,
    plan: Option<&Plan>,
    stats: &RunStats,
    error: Option<&str>,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let count = |n: usize| n as i64;
    let (added, updated, removed, skipped, linked) = plan.map_or((0, 0, 0, 0, 0), |p| {
        (
            count(p.add.len()),
            count(p.update.len()),
            count(p.remove.len()),
            count(p.skip.len()),
            count(p.linked()),
        )
    });
    let plan_json = plan
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let stats_json =
        serde_json::to_string(stats).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "UPDATE runs SET status = $1, finished_at = $2, added = $3, updated = $4, removed = $5, \
         skipped = $6, linked = $7, stats = $8, error = $9, plan = $10 WHERE id = $11",
    )
    .bind(status.as_str())
    .bind(now())
    .bind(added)
    .bind(updated)
    .bind(removed)
    .bind(skipped)
    .bind(linked)
    .bind(stats_json)
    .bind(error)
    .bind(plan_json)
    .bind(run_id)
    .execute(executor)
    .await?;
    Ok(())
}
