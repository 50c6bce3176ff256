//! Runs as jobs, on the database already in use (no broker), as River, Oban and good_job
//! do it: a sync is queued, claimed atomically under a lease, renewed by its worker's
//! heartbeat, finished only by the holder of the lease, and taken over when its worker dies.
//!
//! Every time the database compares (when a run is due, when a lease expires, when a source
//! is due) is an integer of seconds on the database's clock, so that processes on several
//! hosts agree and both backends compare the same way.

use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use usersync_core::schedule;

use crate::process::RunOwner;
use crate::runs::{RunKind, RunLease, RunReason, RunStatus, Settle};
use crate::{Backend, Store, StoreError, now, parse_enum, query_dyn};

/// A sync to queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub source_id: i64,
    pub reason: RunReason,
    /// The held run whose removals this run confirms.
    pub confirms: Option<i64>,
    pub requested_by: String,
}

/// What queueing a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "run_id", rename_all = "snake_case")]
pub enum Enqueued {
    /// A new run was queued.
    Queued(i64),
    /// A run of the source was queued already: this request is that run (due now).
    Folded(i64),
    /// A run of the source is in progress; nothing was queued.
    Running(i64),
}

impl Enqueued {
    pub fn run_id(self) -> i64 {
        match self {
            Enqueued::Queued(id) | Enqueued::Folded(id) | Enqueued::Running(id) => id,
        }
    }
}

/// A run claimed by a worker: it may execute it while its lease holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    pub lease: RunLease,
    pub source_id: i64,
    pub customer_id: i64,
    pub kind: RunKind,
    pub reason: String,
    /// 1 for the first claim; a run taken over from a dead worker counts again.
    pub attempt: i64,
    pub confirms: Option<i64>,
}

/// How the queue and the schedule stand (for /metrics and `runs list`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Runs queued and due now.
    pub queued_due: i64,
    /// Runs queued for later (retries after throttling).
    pub queued_later: i64,
    pub running: i64,
    /// Seconds since the most overdue source was due (0 when none is late).
    pub most_overdue_secs: i64,
    /// Sources that need attention.
    pub needs_attention: i64,
}

/// A source's schedule and health, as `source list/show` show them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceHealth {
    /// When it syncs by itself next (RFC 3339, UTC); `None` without automatic sync.
    pub next_run_at: Option<String>,
    pub failures: i64,
    pub last_error: Option<String>,
    /// Why the source needs attention, when it does.
    pub attention: Option<String>,
    pub attention_since: Option<String>,
    /// The held run whose removals wait for a confirmation.
    pub hold_run_id: Option<i64>,
    pub last_success_at: Option<String>,
}

/// The columns of a source's health, as [`health_from`] reads them.
pub(crate) const HEALTH_COLUMNS: &str = "s.next_run_at, s.failures, s.last_error, s.attention, \
     s.attention_since, s.hold_run_id, s.last_success_at";

pub(crate) fn health_from(row: &sqlx::any::AnyRow) -> Result<SourceHealth, StoreError> {
    let next: Option<i64> = row.try_get("next_run_at")?;
    Ok(SourceHealth {
        next_run_at: next.map(crate::epoch_text),
        failures: row.try_get("failures")?,
        last_error: row.try_get("last_error")?,
        attention: row.try_get("attention")?,
        attention_since: row.try_get("attention_since")?,
        hold_run_id: row.try_get("hold_run_id")?,
        last_success_at: row.try_get("last_success_at")?,
    })
}

/// The test clock: seconds added to the database's clock (0 outside tests).
pub(crate) type ClockOffset = std::sync::Arc<std::sync::atomic::AtomicI64>;

const CLAIM_RETURNING: &str =
    "RETURNING id, source_id, customer_id, kind, reason, attempts, lease_token, confirms";

fn claim_from(row: &sqlx::any::AnyRow) -> Result<Claim, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Claim {
        lease: RunLease {
            run_id: row.try_get("id")?,
            token: row.try_get("lease_token")?,
        },
        source_id: row.try_get("source_id")?,
        customer_id: row.try_get("customer_id")?,
        kind: parse_enum(&kind, "runs.kind")?,
        reason: row.try_get("reason")?,
        attempt: row.try_get("attempts")?,
        confirms: row.try_get("confirms")?,
    })
}

/// A random fraction in [0, 1) that spreads retries and slots.
fn fraction() -> f64 {
    rand::random::<f64>()
}

impl Store {
    /// The database's clock in whole seconds since 1970 (plus the test clock's offset).
    /// On PostgreSQL the statement's start time: a stable value, so that a comparison with
    /// it can use an index (`clock_timestamp()` is volatile: the scheduler's look for due
    /// sources scanned every source, 24 ms for 10,000), and current in a long transaction
    /// (which `now()`, the transaction's start, is not).
    pub(crate) fn db_now(&self) -> String {
        let base = match self.backend {
            Backend::Sqlite => "CAST(strftime('%s', 'now') AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM statement_timestamp()) AS BIGINT)",
        };
        let offset = self.clock.load(std::sync::atomic::Ordering::Relaxed);
        if offset == 0 {
            base.to_string()
        } else {
            format!("({base} + {offset})")
        }
    }

    /// Moves this store's view of the database's clock forward (tests of schedules and
    /// leases); every comparison of due times and leases uses it.
    pub fn advance_clock(&self, by: Duration) {
        self.clock
            .fetch_add(by.as_secs() as i64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The database's clock, in seconds since 1970.
    pub async fn clock(&self) -> Result<i64, StoreError> {
        Ok(query_dyn(&format!("SELECT {} AS now_s", self.db_now()))
            .fetch_one(&self.pool)
            .await?
            .try_get("now_s")?)
    }

    /// Queues a sync of a source, due now. A sync of it already queued absorbs the request
    /// (and becomes due now); one already running is named and nothing is queued. A removed
    /// source is refused.
    pub async fn enqueue_sync(&self, job: &NewJob) -> Result<Enqueued, StoreError> {
        let now_s = self.db_now();
        let mut tx = self.write_tx().await?;
        let source = sqlx::query("SELECT customer_id, removed_at FROM sources WHERE id = $1")
            .bind(job.source_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::not_found("source", job.source_id))?;
        if let Some(when) = source.try_get::<Option<String>, _>("removed_at")? {
            return Err(StoreError::Invalid(format!(
                "source #{} was removed on {when}; it syncs no more",
                job.source_id
            )));
        }
        let customer_id: i64 = source.try_get("customer_id")?;
        let active = sqlx::query(
            "SELECT id, status FROM runs WHERE source_id = $1 AND kind = 'sync' \
             AND status IN ('queued', 'running')",
        )
        .bind(job.source_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = active {
            let id: i64 = row.try_get("id")?;
            let status: String = row.try_get("status")?;
            if status == "running" {
                return Ok(Enqueued::Running(id));
            }
            // Folds into the queued run: due now, and a confirmation carries over.
            query_dyn(&format!(
                "UPDATE runs SET due_at = CASE WHEN due_at > {now_s} THEN {now_s} ELSE due_at END, \
                 confirms = COALESCE($2, confirms) WHERE id = $1"
            ))
            .bind(id)
            .bind(job.confirms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Enqueued::Folded(id));
        }
        let stamp = now();
        let row = query_dyn(&format!(
            "INSERT INTO runs (source_id, customer_id, kind, reason, status, queued_at, started_at, \
             due_at, confirms, requested_by) \
             VALUES ($1, $2, 'sync', $3, 'queued', $4, $4, {now_s}, $5, $6) RETURNING id"
        ))
        .bind(job.source_id)
        .bind(customer_id)
        .bind(job.reason.as_str())
        .bind(&stamp)
        .bind(job.confirms)
        .bind(&job.requested_by)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        tx.commit().await?;
        Ok(Enqueued::Queued(id))
    }

    /// Claims up to `limit` queued runs that are due, oldest first, for `owner`, each under
    /// a lease of `lease` on the database's clock. Atomic: on PostgreSQL several workers
    /// claim at once and skip each other's rows (`FOR UPDATE SKIP LOCKED`); on SQLite the one
    /// writer does it in one statement.
    pub async fn claim_runs(
        &self,
        owner: &RunOwner,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let which = format!(
            "id IN (SELECT id FROM runs WHERE status = 'queued' AND due_at <= {} \
             ORDER BY due_at, id LIMIT $6{lock})",
            self.db_now()
        );
        self.claim(&which, limit, owner, lease).await
    }

    /// Claims one queued run by id (a command that runs a sync itself, without a worker);
    /// `None` when it is not queued any more (a worker took it, or it was cancelled).
    pub async fn claim_run(
        &self,
        run_id: i64,
        owner: &RunOwner,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        let which = "id = $6 AND status = 'queued'";
        Ok(self.claim(which, run_id, owner, lease).await?.pop())
    }

    /// The claim itself: the runs `which` selects (with `$6` bound to `value`) become
    /// `running` for `owner`, with a new lease token and one more attempt.
    async fn claim(
        &self,
        which: &str,
        value: i64,
        owner: &RunOwner,
        lease: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        let now_s = self.db_now();
        let mut tx = self.write_tx().await?;
        let rows = query_dyn(&format!(
            "UPDATE runs SET status = 'running', lease_token = lease_token + 1, \
             lease_until = {now_s} + $1, attempts = attempts + 1, heartbeat_at = {now_s}, \
             owner_host = $2, owner_pid = $3, owner_started = $4, started_at = $5 \
             WHERE {which} {CLAIM_RETURNING}"
        ))
        .bind(lease.as_secs() as i64)
        .bind(&owner.host)
        .bind(i64::from(owner.pid))
        .bind(&owner.started)
        .bind(now())
        .bind(value)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(claim_from).collect()
    }

    /// Gives a claimed run back to the queue without spending an attempt: the process is
    /// shutting down, or the tenant throttled it (due again after `delay`). `note` is kept
    /// as the run's last message. False when the lease was not the caller's any more.
    pub async fn release_run(
        &self,
        lease: &RunLease,
        delay: Duration,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now_s = self.db_now();
        let mut tx = self.write_tx().await?;
        let done = query_dyn(&format!(
            "UPDATE runs SET status = 'queued', due_at = {now_s} + $1, lease_until = NULL, \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
             owner_host = NULL, owner_pid = NULL, owner_started = NULL, error = $2 \
             WHERE id = $3 AND status = 'running' AND lease_token = $4"
        ))
        .bind(delay.as_secs() as i64)
        .bind(note)
        .bind(lease.run_id)
        .bind(lease.token)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes back the runs whose process stopped without finishing them: a lease past its
    /// time on the database's clock, or an owner on this machine whose process is gone. A
    /// sync goes back to the queue (that claim counted as an attempt) unless it used
    /// `max_attempts` already; then it, like a preview, ends failed with the reason.
    /// Reads first, so a database without such runs is not written to. Returns the runs
    /// failed and the runs queued again.
    pub async fn recover_runs(&self, max_attempts: i64) -> Result<Recovered, StoreError> {
        let rows = query_dyn(&format!(
            "SELECT id, kind, attempts, lease_token, lease_until, owner_host, owner_pid, \
             owner_started, heartbeat_at, {} AS db_now FROM runs WHERE status = 'running' ORDER BY id",
            self.db_now()
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut recovered = Recovered::default();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let kind: String = row.try_get("kind")?;
            let attempts: i64 = row.try_get("attempts")?;
            let token: i64 = row.try_get("lease_token")?;
            let lease_until: Option<i64> = row.try_get("lease_until")?;
            let heartbeat: Option<i64> = row.try_get("heartbeat_at")?;
            let db_now: i64 = row.try_get("db_now")?;
            let host: Option<String> = row.try_get("owner_host")?;
            let pid: Option<i64> = row.try_get("owner_pid")?;
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
            let expired = lease_until.is_none_or(|until| until < db_now);
            let dead = owner.as_ref().and_then(RunOwner::is_alive) == Some(false);
            if !(expired || dead) {
                continue;
            }
            let whose = match &owner {
                Some(o) => format!("pid {} on {}", o.pid, o.host),
                None => "a process of an older usersync".to_string(),
            };
            let heard = match heartbeat {
                Some(h) => format!(", last heard of {} s ago", db_now.saturating_sub(h)),
                None => String::new(),
            };
            let stopped =
                format!("the process running it stopped ({whose}{heard}) before it finished");
            let requeue = kind == RunKind::Sync.as_str() && attempts < max_attempts;
            let mut tx = self.write_tx().await?;
            // Only while the lease is the one read: a live owner that renewed it wins.
            let done = if requeue {
                query_dyn(&format!(
                    "UPDATE runs SET status = 'queued', due_at = {}, lease_until = NULL, \
                     owner_host = NULL, owner_pid = NULL, owner_started = NULL, error = $1 \
                     WHERE id = $2 AND status = 'running' AND lease_token = $3",
                    self.db_now()
                ))
                .bind(format!("attempt {attempts}: {stopped}; queued again"))
                .bind(id)
                .bind(token)
                .execute(&mut *tx)
                .await?
            } else {
                let message = if kind == RunKind::Sync.as_str() {
                    format!(
                        "{stopped}, for the {attempts}th time; nothing of it was applied, and it is not tried again"
                    )
                } else {
                    format!("{stopped}; nothing of it was applied")
                };
                let done = sqlx::query(
                    "UPDATE runs SET status = 'failed', finished_at = $1, error = $2, lease_until = NULL \
                     WHERE id = $3 AND status = 'running' AND lease_token = $4",
                )
                .bind(now())
                .bind(&message)
                .bind(id)
                .bind(token)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 && kind == RunKind::Sync.as_str() {
                    let source: i64 = sqlx::query("SELECT source_id FROM runs WHERE id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("source_id")?;
                    self.settle_source(
                        &mut tx,
                        source,
                        id,
                        &Settle::Failed {
                            error: &message,
                            at_once: false,
                        },
                    )
                    .await?;
                }
                done
            };
            tx.commit().await?;
            if done.rows_affected() == 1 {
                tracing::info!(run = id, requeue, "took back a run whose process stopped");
                if requeue {
                    recovered.requeued.push(id);
                } else {
                    recovered.failed.push(id);
                }
            }
        }
        Ok(recovered)
    }

    /// Cancels a queued or running run. A running one loses its lease at once: its worker
    /// can record and apply nothing more. Returns the status it had.
    pub async fn cancel_run(&self, run_id: i64, by: &str) -> Result<RunStatus, StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT status, customer_id FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::not_found("run", run_id))?;
        let status: RunStatus = parse_enum(&row.try_get::<String, _>("status")?, "runs.status")?;
        let customer_id: i64 = row.try_get("customer_id")?;
        if status.is_final() {
            return Err(StoreError::Conflict(format!(
                "run {run_id} is {status} already; only a queued or running run can be cancelled"
            )));
        }
        sqlx::query(
            "UPDATE runs SET status = 'cancelled', finished_at = $1, error = $2, lease_until = NULL \
             WHERE id = $3 AND status IN ('queued', 'running')",
        )
        .bind(now())
        .bind(format!("cancelled by {by}"))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        self.audit_now(
            &mut tx,
            &[
                crate::audit::Change::new(Some(customer_id), "run.cancel", format!("run {run_id}"))
                    .before(serde_json::json!({"status": status.as_str()}))
                    .after(serde_json::json!({"status": "cancelled"})),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(status)
    }

    /// Sets when a source syncs by itself: every `interval` (from now, plus jitter), or
    /// never (`None`). An unchanged interval keeps the slot it has.
    pub async fn set_source_schedule(
        &self,
        source_id: i64,
        interval: Option<Duration>,
    ) -> Result<(), StoreError> {
        let now_s = self.db_now();
        let mut tx = self.write_tx().await?;
        match interval {
            None => {
                sqlx::query(
                    "UPDATE sources SET interval_secs = NULL, next_run_at = NULL WHERE id = $1",
                )
                .bind(source_id)
                .execute(&mut *tx)
                .await?;
            }
            Some(interval) => {
                let secs = interval.as_secs() as i64;
                // The first sync of a newly scheduled source comes soon, spread over a tenth
                // of the interval; a new interval counts from now.
                let first = schedule::next_slot(secs as u64, fraction()) as i64 - secs;
                query_dyn(&format!(
                    "UPDATE sources SET next_run_at = CASE \
                     WHEN interval_secs IS NULL OR next_run_at IS NULL THEN {now_s} + $2 \
                     WHEN interval_secs <> $1 THEN {now_s} + $1 + $2 \
                     ELSE next_run_at END, interval_secs = $1 WHERE id = $3"
                ))
                .bind(secs)
                .bind(first)
                .bind(source_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Queues a sync of every source whose slot has come (at most `limit`), and moves its
    /// slot to one interval (plus jitter) from now: slots missed while nothing ran are
    /// skipped, not run in a burst. A source with a sync queued or running already gets no
    /// second one. Several schedulers may run at once: each slot is taken by one. Returns
    /// the runs queued.
    pub async fn enqueue_due(&self, limit: i64) -> Result<Vec<i64>, StoreError> {
        let now_s = self.db_now();
        let due = query_dyn(&format!(
            "SELECT id, customer_id, interval_secs, next_run_at FROM sources \
             WHERE next_run_at IS NOT NULL AND next_run_at <= {now_s} AND removed_at IS NULL \
             ORDER BY next_run_at, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut queued = Vec::new();
        let mut tx = self.write_tx().await?;
        let stamp = now();
        for row in &due {
            let id: i64 = row.try_get("id")?;
            let customer_id: i64 = row.try_get("customer_id")?;
            let interval: Option<i64> = row.try_get("interval_secs")?;
            let slot: i64 = row.try_get("next_run_at")?;
            let next = schedule::next_slot(interval.unwrap_or(3600).max(60) as u64, fraction());
            let moved = query_dyn(&format!(
                "UPDATE sources SET next_run_at = {now_s} + $1 WHERE id = $2 AND next_run_at = $3"
            ))
            .bind(next as i64)
            .bind(id)
            .bind(slot)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                continue; // another scheduler took this slot
            }
            let row = query_dyn(&format!(
                "INSERT INTO runs (source_id, customer_id, kind, reason, status, queued_at, started_at, \
                 due_at, requested_by) VALUES ($1, $2, 'sync', 'schedule', 'queued', $3, $3, {now_s}, 'scheduler') \
                 ON CONFLICT DO NOTHING RETURNING id"
            ))
            .bind(id)
            .bind(customer_id)
            .bind(&stamp)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                queued.push(row.try_get("id")?);
            }
        }
        tx.commit().await?;
        Ok(queued)
    }

    /// How the queue and the schedule stand.
    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let now_s = self.db_now();
        let row = query_dyn(&format!(
            "SELECT \
             (SELECT COUNT(*) FROM runs WHERE status = 'queued' AND due_at <= {now_s}) AS queued_due, \
             (SELECT COUNT(*) FROM runs WHERE status = 'queued' AND due_at > {now_s}) AS queued_later, \
             (SELECT COUNT(*) FROM runs WHERE status = 'running') AS running, \
             (SELECT MIN(next_run_at) FROM sources WHERE next_run_at IS NOT NULL AND removed_at IS NULL) AS earliest, \
             (SELECT COUNT(*) FROM sources WHERE attention IS NOT NULL AND removed_at IS NULL) AS attention, \
             {now_s} AS now_s"
        ))
        .fetch_one(&self.pool)
        .await?;
        let now_s: i64 = row.try_get("now_s")?;
        let earliest: Option<i64> = row.try_get("earliest")?;
        Ok(QueueStats {
            queued_due: row.try_get("queued_due")?,
            queued_later: row.try_get("queued_later")?,
            running: row.try_get("running")?,
            most_overdue_secs: earliest.map_or(0, |e| (now_s - e).max(0)),
            needs_attention: row.try_get("attention")?,
        })
    }

    /// The schedule and health of a source.
    pub async fn source_health(&self, source_id: i64) -> Result<SourceHealth, StoreError> {
        let row = query_dyn(&format!(
            "SELECT {HEALTH_COLUMNS} FROM sources s WHERE s.id = $1"
        ))
        .bind(source_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("source", source_id))?;
        health_from(&row)
    }

    /// Lifts a source's deletion hold (its threshold was changed): the next run judges its
    /// removals anew.
    pub async fn clear_hold(&self, source_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sources SET hold_run_id = NULL WHERE id = $1")
            .bind(source_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records what a run's end means for its source, in the run's transaction.
    pub(crate) async fn settle_source(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        source_id: i64,
        run_id: i64,
        settle: &Settle<'_>,
    ) -> Result<(), StoreError> {
        let stamp = now();
        match *settle {
            Settle::Nothing => {}
            Settle::Succeeded { clears_hold } => {
                let hold = if clears_hold {
                    ", hold_run_id = NULL"
                } else {
                    ""
                };
                query_dyn(&format!(
                    "UPDATE sources SET failures = 0, last_error = NULL, attention = NULL, \
                     attention_since = NULL, last_success_at = $1{hold} WHERE id = $2"
                ))
                .bind(&stamp)
                .bind(source_id)
                .execute(&mut **tx)
                .await?;
            }
            Settle::Held { attention } => {
                sqlx::query(
                    "UPDATE sources SET failures = 0, last_error = NULL, last_success_at = $1, \
                     hold_run_id = COALESCE(hold_run_id, $2), \
                     attention = COALESCE($3, attention), \
                     attention_since = CASE WHEN $3 IS NULL THEN attention_since ELSE COALESCE(attention_since, $1) END \
                     WHERE id = $4",
                )
                .bind(&stamp)
                .bind(run_id)
                .bind(attention)
                .bind(source_id)
                .execute(&mut **tx)
                .await?;
            }
            Settle::Failed { error, at_once } => {
                let row = sqlx::query(
                    "UPDATE sources SET failures = failures + 1, last_error = $1 WHERE id = $2 \
                     RETURNING failures, interval_secs",
                )
                .bind(error)
                .bind(source_id)
                .fetch_one(&mut **tx)
                .await?;
                let failures: i64 = row.try_get("failures")?;
                let interval: Option<i64> = row.try_get("interval_secs")?;
                let after = schedule::after_failure(
                    u32::try_from(failures).unwrap_or(u32::MAX),
                    interval.map(|i| i.max(0) as u64),
                    at_once,
                    fraction(),
                );
                if let Some(retry_in) = after.retry_in {
                    query_dyn(&format!(
                        "UPDATE sources SET next_run_at = {} + $1 WHERE id = $2",
                        self.db_now()
                    ))
                    .bind(retry_in as i64)
                    .bind(source_id)
                    .execute(&mut **tx)
                    .await?;
                }
                if after.needs_attention {
                    sqlx::query(
                        "UPDATE sources SET attention = $1, attention_since = COALESCE(attention_since, $2) \
                         WHERE id = $3",
                    )
                    .bind(error)
                    .bind(&stamp)
                    .bind(source_id)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        Ok(())
    }
}

/// Runs taken back from stopped processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recovered {
    pub failed: Vec<i64>,
    pub requeued: Vec<i64>,
}
