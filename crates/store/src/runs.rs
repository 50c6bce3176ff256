//! Sync runs: every preview and sync is recorded with its plan, counts, figures and error.
//! A sync run is a job (see `jobs.rs`): queued, claimed under a lease, then finished.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use usersync_core::Plan;

use crate::process::RunOwner;
use crate::{Store, StoreError, now, parse_enum, query_dyn};

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ }) => {
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
        }
        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(()) }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(RunKind { Preview => "preview", Sync => "sync", Remove => "remove" });
text_enum!(RunStatus {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Held => "held",
    Cancelled => "cancelled"
});
text_enum!(RunReason {
    Manual => "manual",
    Schedule => "schedule",
    RunNow => "run-now",
    Confirm => "confirm",
    Retry => "retry",
    Notification => "notification"
});

impl RunStatus {
    /// Whether the run is over (it will not change any more).
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// A run about to start at once (a preview, a source's removal).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub source_id: i64,
    pub customer_id: i64,
    pub kind: RunKind,
    pub reason: RunReason,
    /// Who asked for it (an operating-system user, later a console account).
    pub requested_by: String,
}

/// The right to finish a run: its id and the lease token of the claim. Every write of a
/// run's outcome checks the token, so a process whose lease was taken over (or whose run
/// was cancelled) can never record or apply anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunLease {
    pub run_id: i64,
    pub token: i64,
}

/// What a run read and how it went, beside the plan's counts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// How the source was read: `full` (the whole tenant) or `delta` (what changed since
    /// the last applied run); absent for runs that did not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_mode: Option<String>,
    /// Why the source was read whole, or what the delta round held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_detail: Option<String>,
    /// A delta read's plan took in only these objects: those that changed and those
    /// sharing addresses with them or left with a conflict by the last plan. Absent when
    /// every object was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_objects: Option<u64>,
    /// Objects read from the source's mirror: every one for a whole read, and for a delta
    /// run only the groups and the users it plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_read: Option<u64>,
    /// Adds planned and written while the source was still being read (a whole read of a
    /// tenant far away); absent when the plan was made and written after the read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_while_reading: Option<u64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub source_id: i64,
    pub customer: String,
    pub kind: RunKind,
    pub reason: String,
    pub status: RunStatus,
    /// When it was queued (runs that were jobs) and when it started (or was claimed last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub added: i64,
    pub updated: i64,
    pub removed: i64,
    pub skipped: i64,
    pub linked: i64,
    /// Removals the deletion safeguard held (status `held`).
    pub held: i64,
    /// Claims of the run by a worker (a run whose workers keep dying ends failed).
    pub attempts: i64,
    /// The held run whose removals this run confirms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirms: Option<i64>,
    /// Who asked for it: an operating-system user, `scheduler`, later a console account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub stats: Option<RunStats>,
    pub error: Option<String>,
    /// The process that executes (or executed) the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<RunOwner>,
    /// Only filled by [`Store::run`] (the plan as it was made; a held run's removals are
    /// in `plan.held`, re-read from the tenant when confirmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

pub(crate) const COLUMNS: &str = "r.id, r.source_id, c.name AS customer, r.kind, r.reason, r.status, r.started_at, \
     r.finished_at, r.added, r.updated, r.removed, r.skipped, r.linked, r.stats, r.error, \
     r.owner_host, r.owner_pid, r.owner_started, r.queued_at, r.attempts, r.confirms, r.requested_by, r.held";

/// A claimed run's lease lasts this long unless its owner renews it (every heartbeat).
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

pub(crate) fn run_from(row: &AnyRow) -> Result<RunRecord, StoreError> {
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
    let stats: Option<RunStats> = stats
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("runs.stats: {e}")))?;
    let status: RunStatus = parse_enum(&status, "runs.status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        source_id: row.try_get("source_id")?,
        customer: row.try_get("customer")?,
        kind: parse_enum(&kind, "runs.kind")?,
        reason: row.try_get("reason")?,
        status,
        queued_at: row.try_get("queued_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        added: row.try_get("added")?,
        updated: row.try_get("updated")?,
        removed: row.try_get("removed")?,
        skipped: row.try_get("skipped")?,
        linked: row.try_get("linked")?,
        held: row.try_get("held")?,
        attempts: row.try_get("attempts")?,
        confirms: row.try_get("confirms")?,
        requested_by: row.try_get("requested_by")?,
        stats,
        error: row.try_get("error")?,
        owner,
        plan: None,
    })
}

impl Store {
    /// Records that a run started at once in `owner` (a preview, a source's removal): it is
    /// `running`, leased to `owner` for `lease`, until finished.
    pub async fn start_run(
        &self,
        run: &NewRun,
        owner: &RunOwner,
        lease: std::time::Duration,
    ) -> Result<RunLease, StoreError> {
        let now_s = self.db_now();
        let row = query_dyn(&format!(
            "INSERT INTO runs (source_id, customer_id, kind, reason, status, started_at, \
             owner_host, owner_pid, owner_started, heartbeat_at, lease_token, lease_until, attempts, requested_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {now_s}, 1, {now_s} + $10, 1, $11) RETURNING id"
        ))
        .bind(run.source_id)
        .bind(run.customer_id)
        .bind(run.kind.as_str())
        .bind(run.reason.as_str())
        .bind(RunStatus::Running.as_str())
        .bind(now())
        .bind(&owner.host)
        .bind(i64::from(owner.pid))
        .bind(&owner.started)
        .bind(lease.as_secs() as i64)
        .bind(&run.requested_by)
        .fetch_one(&self.pool)
        .await?;
        Ok(RunLease {
            run_id: row.try_get("id")?,
            token: 1,
        })
    }

    /// Renews the lease of a run its owner still works on; false when the lease is no longer
    /// this owner's (taken over after it expired, or the run was cancelled).
    pub async fn heartbeat(
        &self,
        lease: &RunLease,
        lease_for: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now_s = self.db_now();
        let done = query_dyn(&format!(
            "UPDATE runs SET heartbeat_at = {now_s}, lease_until = {now_s} + $3 \
             WHERE id = $1 AND status = 'running' AND lease_token = $2"
        ))
        .bind(lease.run_id)
        .bind(lease.token)
        .bind(lease_for.as_secs() as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Where a running run stands (JSON), for the processes that do not execute it.
    pub async fn set_run_progress(&self, run_id: i64, progress: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET progress = $2 WHERE id = $1 AND status = 'running'")
            .bind(run_id)
            .bind(progress)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// What [`Store::set_run_progress`] kept, while the run is running.
    pub async fn run_progress(&self, run_id: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT progress FROM runs WHERE id = $1 AND status = 'running'")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("progress")?,
            None => None,
        })
    }

    /// The ids of the runs of a source that are queued or in progress.
    pub async fn active_runs(&self, source_id: i64) -> Result<Vec<(i64, RunStatus)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, status FROM runs WHERE source_id = $1 AND status IN ('queued', 'running') ORDER BY id",
        )
        .bind(source_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok((r.try_get("id")?, parse_enum(&status, "runs.status")?))
            })
            .collect()
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
            .map(|r| describe(&r))
            .collect();
        (!texts.is_empty()).then(|| texts.join("; "))
    }

    /// Finishes a run that applies nothing (a preview, a failed run), with what it means
    /// for its source, in one transaction.
    pub async fn finish_run(
        &self,
        lease: &RunLease,
        end: &RunEnd<'_>,
        settle: &Settle<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let source_id = finish(&mut tx, lease, end).await?;
        self.settle_source(&mut tx, source_id, lease.run_id, settle)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest runs first, of one source or of all, of some statuses or all.
    pub async fn list_runs(
        &self,
        source_id: Option<i64>,
        statuses: &[RunStatus],
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.list_runs_before(source_id, statuses, None, limit)
            .await
    }

    /// [`Store::list_runs`], only runs older than `before` (a run id: the last of the
    /// page before).
    pub async fn list_runs_before(
        &self,
        source_id: Option<i64>,
        statuses: &[RunStatus],
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut sql = format!(
            "SELECT {COLUMNS} FROM runs r JOIN customers c ON c.id = r.customer_id WHERE 1 = 1"
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if source_id.is_some() {
            sql.push_str(&format!(" AND r.source_id = {}", next()));
        }
        if !statuses.is_empty() {
            let marks: Vec<String> = statuses.iter().map(|_| next()).collect();
            sql.push_str(&format!(" AND r.status IN ({})", marks.join(", ")));
        }
        if before.is_some() {
            sql.push_str(&format!(" AND r.id < {}", next()));
        }
        sql.push_str(&format!(" ORDER BY r.id DESC LIMIT {}", next()));
        let mut query = query_dyn(&sql);
        if let Some(s) = source_id {
            query = query.bind(s);
        }
        for status in statuses {
            query = query.bind(status.as_str());
        }
        if let Some(before) = before {
            query = query.bind(before);
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
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
        .ok_or_else(|| StoreError::not_found("run", id))?;
        let mut run = run_from(&row)?;
        let plan: Option<String> = row.try_get("plan")?;
        run.plan = match plan {
            // Kept in the run's row before schema version 13.
            Some(text) => Some(decode_plan(&text)?),
            None => {
                let parts =
                    sqlx::query("SELECT data FROM run_plans WHERE run_id = $1 ORDER BY part")
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await?;
                let mut gzip = Vec::new();
                for part in &parts {
                    gzip.extend_from_slice(&part.try_get::<Vec<u8>, _>("data")?);
                }
                (!gzip.is_empty()).then(|| decode_gzip(&gzip)).transpose()?
            }
        };
        Ok(run)
    }
}

/// A run in words, for messages.
pub(crate) fn describe(r: &RunRecord) -> String {
    let by = r
        .owner
        .as_ref()
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
}

/// How a run ended.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    pub status: RunStatus,
    pub plan: Option<&'a Plan>,
    pub stats: &'a RunStats,
    pub error: Option<&'a str>,
}

/// What a run's end means for its source's health and schedule.
#[derive(Debug, Clone, Copy)]
pub enum Settle<'a> {
    /// Nothing (a preview).
    Nothing,
    /// It synced: failures forgiven, attention cleared; with `clears_hold`, the deletion
    /// hold too (the run applied the confirmed removals).
    Succeeded { clears_hold: bool },
    /// It applied but held its removals; with `attention`, the source needs a person.
    Held { attention: Option<&'a str> },
    /// It failed; `at_once` when no retry mends it (consent or permission missing).
    Failed { error: &'a str, at_once: bool },
}

/// Writes a run's outcome inside `tx`, only while the lease is still the caller's; returns
/// the run's source.
pub(crate) async fn finish(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    lease: &RunLease,
    end: &RunEnd<'_>,
) -> Result<i64, StoreError> {
    let count = |n: usize| n as i64;
    let (added, updated, removed, skipped, linked, held) =
        end.plan.map_or((0, 0, 0, 0, 0, 0), |p| {
            (
                count(p.add.len()),
                count(p.update.len()),
                count(p.remove.len()),
                count(p.skip.len()),
                count(p.linked()),
                count(p.held.len()),
            )
        });
    let plan = end.plan.map(encode_plan).transpose()?;
    let stats_json =
        serde_json::to_string(end.stats).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let row = sqlx::query(
        "UPDATE runs SET status = $1, finished_at = $2, added = $3, updated = $4, removed = $5, \
         skipped = $6, linked = $7, stats = $8, error = $9, plan = $10, lease_until = NULL, held = $13, \
         read_mode = $14 WHERE id = $11 AND status = 'running' AND lease_token = $12 RETURNING source_id",
    )
    .bind(end.status.as_str())
    .bind(now())
    .bind(added)
    .bind(updated)
    .bind(removed)
    .bind(skipped)
    .bind(linked)
    .bind(stats_json)
    .bind(end.error)
    .bind(None::<String>)
    .bind(lease.run_id)
    .bind(lease.token)
    .bind(held)
    .bind(end.stats.read_mode.as_deref())
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(row) => {
            sqlx::query("DELETE FROM run_plans WHERE run_id = $1")
                .bind(lease.run_id)
                .execute(&mut **tx)
                .await?;
            for (part, data) in plan.iter().flatten().enumerate() {
                sqlx::query("INSERT INTO run_plans (run_id, part, data) VALUES ($1, $2, $3)")
                    .bind(lease.run_id)
                    .bind(part as i64)
                    .bind(data)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(row.try_get("source_id")?)
        }
        None => {
            let status: Option<String> = sqlx::query("SELECT status FROM runs WHERE id = $1")
                .bind(lease.run_id)
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| r.try_get("status"))
                .transpose()?;
            let why = match status.as_deref() {
                Some("cancelled") => "it was cancelled",
                Some("running") | Some("queued") => {
                    "its lease expired and another process took it over"
                }
                _ => "it was marked stopped while this process worked on it",
            };
            // What this process did must not be recorded (or applied) over that.
            Err(StoreError::Conflict(format!(
                "run {} is no longer this process's: {why}; nothing was applied",
                lease.run_id
            )))
        }
    }
}

/// Plans are kept gzip-compressed, in `run_plans` in parts of this many bytes: the plan of
/// a first sync of 100,000 users is 35 MB of JSON, 3 MB compressed, and holding the JSON
/// and the database's copies of it was the largest part of a sync's peak memory.
pub(crate) const PLAN_PART: usize = 1 << 20;

/// How plans were kept in `runs.plan` before schema version 13: base64 of the gzip.
const PLAN_PREFIX: &str = "gzip:";

/// The gzip of a plan, in parts of [`PLAN_PART`] bytes as deflate writes it: no buffer of
/// the whole (a growing one held up to twice its size).
#[derive(Default)]
struct Parts(Vec<Vec<u8>>);

impl std::io::Write for Parts {
    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<usize> {
        let written = bytes.len();
        while !bytes.is_empty() {
            if self.0.last().is_none_or(|part| part.len() == PLAN_PART) {
                self.0.push(Vec::with_capacity(PLAN_PART));
            }
            let part = self.0.last_mut().expect("a part with room");
            let take = bytes.len().min(PLAN_PART - part.len());
            part.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn encode_plan(plan: &Plan) -> Result<Vec<Vec<u8>>, StoreError> {
    use std::io::Write;
    let failed = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("encoding the plan: {e}"));
    let encoder = flate2::write::GzEncoder::new(Parts::default(), flate2::Compression::fast());
    // serde_json writes a few bytes at a time; each write to the encoder runs deflate.
    let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, encoder);
    serde_json::to_writer(&mut buffered, plan).map_err(|e| failed(&e))?;
    buffered.flush().map_err(|e| failed(&e))?;
    let Parts(mut parts) = buffered
        .into_inner()
        .map_err(|e| failed(&e))?
        .finish()
        .map_err(|e| failed(&e))?;
    if let Some(last) = parts.last_mut() {
        last.shrink_to_fit();
    }
    Ok(parts)
}

fn decode_gzip(bytes: &[u8]) -> Result<Plan, StoreError> {
    serde_json::from_reader(flate2::read::GzDecoder::new(bytes))
        .map_err(|e| StoreError::Corrupt(format!("run_plans: {e}")))
}

/// A plan as `runs.plan` held it before schema version 13: base64 of the gzip after
/// [`PLAN_PREFIX`], or plain JSON.
fn decode_plan(text: &str) -> Result<Plan, StoreError> {
    use base64::Engine;
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("runs.plan: {e}"));
    match text.strip_prefix(PLAN_PREFIX) {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| corrupt(&e))?;
            decode_gzip(&bytes)
        }
        None => serde_json::from_str(text).map_err(|e| corrupt(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gzip_is_cut_into_whole_parts() {
        use std::io::Write;
        let mut parts = Parts::default();
        let bytes: Vec<u8> = (0..PLAN_PART * 2 + 10).map(|i| i as u8).collect();
        parts.write_all(&bytes[..7]).unwrap();
        parts.write_all(&bytes[7..]).unwrap();
        let lengths: Vec<usize> = parts.0.iter().map(Vec::len).collect();
        assert_eq!(lengths, [PLAN_PART, PLAN_PART, 10]);
        assert_eq!(parts.0.concat(), bytes);
    }

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
        let stored = encode_plan(&plan).unwrap().concat();
        assert_eq!(decode_gzip(&stored).unwrap(), plan);
        use base64::Engine;
        let before_13 = format!(
            "{PLAN_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&stored)
        );
        assert_eq!(decode_plan(&before_13).unwrap(), plan);
        assert_eq!(
            decode_plan(&serde_json::to_string(&plan).unwrap()).unwrap(),
            plan
        );
    }
}
