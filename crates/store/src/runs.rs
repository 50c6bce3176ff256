//! Sync runs: every preview and sync is recorded with its plan, counts, figures and error.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use usersync_core::Plan;

use crate::process::RunOwner;
use crate::{Backend, Store, StoreError, now, parse_enum, query_dyn};

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

text_enum!(RunKind { Preview => "preview", Sync => "sync", Remove => "remove" });
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
    /// Time spent reading the source, planning, and applying the plan.
    #[serde(default)]
    pub read_ms: u64,
    #[serde(default)]
    pub plan_ms: u64,
    #[serde(default)]
    pub apply_ms: u64,
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
    /// The process that executes (or executed) the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<RunOwner>,
    /// Only filled by [`Store::run`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

const COLUMNS: &str = "r.id, r.source_id, c.name AS customer, r.kind, r.reason, r.status, r.started_at, \
     r.finished_at, r.added, r.updated, r.removed, r.skipped, r.linked, r.stats, r.error, \
     r.owner_host, r.owner_pid, r.owner_started";

/// A running run is judged stopped when its owner's heartbeat is older than this (for
/// owners on other hosts; on this host a dead process is seen at once).
pub const DEFAULT_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Seconds since an RFC 3339 time, by this machine's clock.
fn age_seconds(rfc3339: &str) -> Option<i64> {
    let then = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some((time::OffsetDateTime::now_utc() - then).whole_seconds())
}

impl Backend {
    /// The database's clock in whole seconds since 1970: one clock for every host.
    pub(crate) fn epoch_now(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST(strftime('%s', 'now') AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
        }
    }
}

fn run_from(row: &AnyRow) -> Result<RunRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let stats: Option<String> = row.try_get("stats")?;
    let host: Option<String> = row.try_get("owner_host")?;
    let pid: Option<i64> = row.try_get("owner_pid")?;
    let started: Option<String> = row.try_get("owner_started")?;
    let owner = match (host, pid) {
        (Some(host), Some(pid)) => Some(RunOwner {
            host,
            pid: u32::try_from(pid).unwrap_or_default(),
            started: started.unwrap_or_default(),
        }),
        _ => None,
    };
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
        owner,
        plan: None,
    })
}

impl Store {
    /// Records that a run started in `owner`; it is `running` until finished, and its owner
    /// keeps it so with [`Store::heartbeat`].
    pub async fn start_run(&self, run: &NewRun, owner: &RunOwner) -> Result<i64, StoreError> {
        let row = query_dyn(&format!(
            "INSERT INTO runs (source_id, customer_id, kind, reason, status, started_at, \
             owner_host, owner_pid, owner_started, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {}) RETURNING id",
            self.backend.epoch_now()
        ))
        .bind(run.source_id)
        .bind(run.customer_id)
        .bind(run.kind.as_str())
        .bind(&run.reason)
        .bind(RunStatus::Running.as_str())
        .bind(now())
        .bind(&owner.host)
        .bind(i64::from(owner.pid))
        .bind(&owner.started)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Tells that the run's owner still works on it; false when the run is no longer
    /// running as this owner's (another process judged it stopped).
    pub async fn heartbeat(&self, run_id: i64, owner: &RunOwner) -> Result<bool, StoreError> {
        let done = query_dyn(&format!(
            "UPDATE runs SET heartbeat_at = {} WHERE id = $1 AND status = 'running' \
             AND owner_host = $2 AND owner_pid = $3",
            self.backend.epoch_now()
        ))
        .bind(run_id)
        .bind(&owner.host)
        .bind(i64::from(owner.pid))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks failed the runs whose process stopped without finishing them: an owner on this
    /// host whose process is gone, or an owner whose last heartbeat is older than
    /// `stale_after` by the database's clock. Returns their ids. Reads first, so a database
    /// without stale runs is not written to.
    pub async fn fail_stale_runs(
        &self,
        stale_after: std::time::Duration,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = query_dyn(&format!(
            "SELECT id, owner_host, owner_pid, owner_started, heartbeat_at, started_at, {} AS db_now \
             FROM runs WHERE status = 'running' ORDER BY id",
            self.backend.epoch_now()
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut stale = Vec::new();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let host: Option<String> = row.try_get("owner_host")?;
            let pid: Option<i64> = row.try_get("owner_pid")?;
            let heartbeat: Option<i64> = row.try_get("heartbeat_at")?;
            let db_now: i64 = row.try_get("db_now")?;
            let silent_for = heartbeat.map(|h| db_now.saturating_sub(h));
            let owner = match (&host, pid) {
                (Some(host), Some(pid)) => Some(RunOwner {
                    host: host.clone(),
                    pid: u32::try_from(pid).unwrap_or_default(),
                    started: row
                        .try_get::<Option<String>, _>("owner_started")?
                        .unwrap_or_default(),
                }),
                _ => None,
            };
            let limit = stale_after.as_secs() as i64;
            let gone = match (owner.as_ref().and_then(RunOwner::is_alive), silent_for) {
                (Some(alive), _) => !alive,
                (None, Some(silent)) => silent > limit,
                // Started by a version without heartbeats: old enough to be over.
                (None, None) => {
                    let started: String = row.try_get("started_at")?;
                    age_seconds(&started).is_none_or(|age| age > limit)
                }
            };
            if !gone {
                continue;
            }
            let whose = match &owner {
                Some(o) => format!("pid {} on {}", o.pid, o.host),
                None => "a process of an older usersync".to_string(),
            };
            let heard = match silent_for {
                Some(s) => format!(", last heard of {s} s ago"),
                None => String::new(),
            };
            let message = format!(
                "the process running it stopped ({whose}{heard}) before it finished; nothing of it was applied"
            );
            // Only if no heartbeat came in since it was read: a live owner wins the race.
            let beat = match heartbeat {
                Some(_) => "heartbeat_at = $5",
                None => "heartbeat_at IS NULL",
            };
            let done = query_dyn(&format!(
                "UPDATE runs SET status = $1, finished_at = $2, error = $3 \
                 WHERE id = $4 AND status = 'running' AND {beat}"
            ))
            .bind(RunStatus::Failed.as_str())
            .bind(now())
            .bind(&message)
            .bind(id);
            let done = match heartbeat {
                Some(h) => done.bind(h),
                None => done,
            }
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                tracing::info!(run = id, %message, "marked a stale run failed");
                stale.push(id);
            }
        }
        Ok(stale)
    }

    /// The ids of the runs of a source that are in progress.
    pub async fn running_runs(&self, source_id: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM runs WHERE source_id = $1 AND status = 'running' ORDER BY id",
        )
        .bind(source_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    /// Whether a run is still `running` (and not marked stopped or finished).
    pub async fn run_is_running(&self, run_id: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT status FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<String, _>("status")? == RunStatus::Running.as_str(),
            None => false,
        })
    }

    /// The runs in progress but `except`, in words ("run 12, a sync of source #3 of
    /// 'Contoso' by pid 4242 on host x, since 07:53:09 UTC"), for a message; `None` when
    /// there are none.
    pub async fn describe_running(&self, except: Option<i64>) -> Option<String> {
        let runs = query_dyn(&format!(
            "SELECT {COLUMNS} FROM runs r JOIN customers c ON c.id = r.customer_id \
             WHERE r.status = 'running' AND r.id <> $1 ORDER BY r.id"
        ))
        .bind(except.unwrap_or(0))
        .fetch_all(&self.pool)
        .await
        .ok()?;
        let texts: Vec<String> = runs
            .iter()
            .filter_map(|row| run_from(row).ok())
            .map(|r| {
                let by = r
                    .owner
                    .map(|o| format!(" by pid {} on {}", o.pid, o.host))
                    .unwrap_or_default();
                let since = r.started_at.get(11..19).unwrap_or(&r.started_at);
                format!(
                    "run {}, a {} of source #{} of '{}'{by}, since {since} UTC",
                    r.id,
                    r.kind.as_str(),
                    r.source_id,
                    r.customer
                )
            })
            .collect();
        (!texts.is_empty()).then(|| texts.join("; "))
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
        run.plan = plan.map(|p| decode_plan(&p)).transpose()?;
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
    let plan_json = plan.map(encode_plan).transpose()?;
    let stats_json =
        serde_json::to_string(stats).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE runs SET status = $1, finished_at = $2, added = $3, updated = $4, removed = $5, \
         skipped = $6, linked = $7, stats = $8, error = $9, plan = $10 \
         WHERE id = $11 AND status = 'running'",
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
    if done.rows_affected() == 0 {
        // Another process judged this run's owner gone and marked it failed: what this
        // process did must not be recorded (or applied) over that.
        return Err(StoreError::Conflict(format!(
            "run {run_id} is no longer running: it was marked stopped while this process worked on it; nothing was applied"
        )));
    }
    Ok(())
}

/// Plans are kept gzip-compressed (base64, so one text column serves both databases): the
/// plan of a first sync of 100,000 users is 35 MB of JSON, 3 MB compressed, and holding
/// the JSON and the database's copies of it was the largest part of a sync's peak memory.
const PLAN_PREFIX: &str = "gzip:";

fn encode_plan(plan: &Plan) -> Result<String, StoreError> {
    use base64::Engine;
    use std::io::Write;
    let failed = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("encoding the plan: {e}"));
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // serde_json writes a few bytes at a time; each write to the encoder runs deflate.
    let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, encoder);
    serde_json::to_writer(&mut buffered, plan).map_err(|e| failed(&e))?;
    buffered.flush().map_err(|e| failed(&e))?;
    let bytes = buffered
        .into_inner()
        .map_err(|e| failed(&e))?
        .finish()
        .map_err(|e| failed(&e))?;
    Ok(format!(
        "{PLAN_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

fn decode_plan(text: &str) -> Result<Plan, StoreError> {
    use base64::Engine;
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("runs.plan: {e}"));
    match text.strip_prefix(PLAN_PREFIX) {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| corrupt(&e))?;
            serde_json::from_reader(flate2::read::GzDecoder::new(bytes.as_slice()))
                .map_err(|e| corrupt(&e))
        }
        None => serde_json::from_str(text).map_err(|e| corrupt(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_survives_compression_and_plain_json_still_reads() {
        let plan = Plan {
            skip: vec![usersync_core::Skip {
                source_object_id: "1".into(),
                name: "Anne".into(),
                code: "guest".into(),
                reason: "a guest".into(),
            }],
            ..Plan::default()
        };
        let stored = encode_plan(&plan).unwrap();
        assert!(stored.starts_with(PLAN_PREFIX));
        assert_eq!(decode_plan(&stored).unwrap(), plan);
        assert_eq!(
            decode_plan(&serde_json::to_string(&plan).unwrap()).unwrap(),
            plan
        );
    }
}
