//! The one operation behind preview and Sync & Save: read, plan, then record or apply.
//! A sync is a job: queued, claimed under a lease, executed here, finished by the holder of
//! the lease only.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::Instrument;
use usersync_core::early::EarlyPlan;
use usersync_core::{DirectoryUser, MappingContext, Plan, SourceKind, UserStatus, plan_within};
use usersync_graph::RetryPolicy;
use usersync_store::{
    Apply, Claim, DEFAULT_LEASE, Enqueued, NewJob, NewRun, RunEnd, RunKind, RunLease, RunOwner,
    RunReason, RunRecord, RunStats, RunStatus, Settle, SourceRecord, Store, StoreError,
};

use crate::office365::{Office365Settings, Office365Source, ReadNeeds};
use crate::source::{FailureKind, Progress, Source};
use crate::sources::office365_settings;
use crate::{EngineError, error_text};

/// How the engine talks to sources and keeps its runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Requests in flight at once per tenant: pages of users and groups, member lists and
    /// `$batch` lookups share them (Graph's per-mailbox limit of 4 concurrent requests
    /// concerns one mailbox; a `$batch` asks about 20 different ones). 16: a first sync's
    /// 1,000 `$batch` lookups (20,000 mailbox types) then fit beside the user pages of a
    /// tenant 100 ms away (at 8 they took 12.5 s, longer than its 101 pages).
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    /// How often a running run renews its lease (and tells it still works on it).
    pub heartbeat_every: Duration,
    /// How long a claim holds without renewal: then another worker takes the run over.
    pub lease: Duration,
    /// Claims of one sync before it ends failed (a run that keeps killing workers).
    pub max_attempts: i64,
    /// Who asks, recorded with runs and changes: the operating-system user on the CLI.
    pub actor: String,
    /// A sync that reads its whole source plans the users it can before the read ends and
    /// writes their adds into the plan's transaction as they come (see
    /// `usersync_core::early`), judged on its first this many users: a smaller read is
    /// planned and written after it. On SQLite the open transaction holds the one writer
    /// while the rest of the read goes on.
    pub early_writes_from: usize,
    /// ... and only when those users came at most this fast (users a second): a read
    /// faster than the database writes gains nothing from writing beside it (the
    /// processors are busy with the read already), one slower (a tenant far away, as
    /// every real one is) leaves the writes nothing to wait for at its end. Measured on 2
    /// cores: 100 ms away a read hands over about 2,750 users a second; nearby 23,000 to
    /// 60,000, and then the early writes cost time and a second copy of every
    /// user (a 1,000,000-user first sync: 76 s and 2.9 GB against 54 s and 2.0 GB).
    pub early_writes_below_rate: f64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_in_flight: 16,
            retry: RetryPolicy::default(),
            heartbeat_every: Duration::from_secs(15),
            lease: DEFAULT_LEASE,
            max_attempts: 3,
            actor: "usersync".into(),
            early_writes_from: 5_000,
            early_writes_below_rate: 12_000.0,
        }
    }
}

/// Renews the lease of a run while it executes; stops when the run ends, however it ends.
struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    /// Set when this process records the run's outcome: the heartbeat then finds the run
    /// no longer running, and that is no news.
    finishing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Heartbeat {
    fn finishing(&self) {
        self.finishing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a run ended; a failed run is an outcome too, recorded with its reason.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run_id: i64,
    pub kind: RunKind,
    /// `succeeded`, `held` (applied, removals held), `failed`, or `queued` (given back: the
    /// tenant throttled it; it runs again after `retry_in_secs`).
    pub status: RunStatus,
    /// The plan; empty when the read failed.
    #[serde(skip)]
    pub plan: Plan,
    pub stats: RunStats,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_secs: Option<u64>,
    /// What mends a failed run, for a surface to say how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
}

/// What an operator does about a failed run; each surface says it its own way (a command,
/// a button).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Remedy {
    /// Store the source's new client secret.
    SetSecret,
    /// Grant the app admin consent (or the missing permission) in the tenant, then test.
    GrantConsent,
    /// Give the customer a mail domain.
    AddDomain,
}

impl Remedy {
    /// The remedy for an error that stopped a run before it read anything.
    pub fn of(error: &EngineError) -> Option<Remedy> {
        match error {
            EngineError::Config { field, .. } if field == "domains" => Some(Remedy::AddDomain),
            EngineError::Config { field, .. } if field == "client secret" => {
                Some(Remedy::SetSecret)
            }
            EngineError::Store(StoreError::Key(_) | StoreError::SecretUnreadable { .. }) => {
                Some(Remedy::SetSecret)
            }
            _ => None,
        }
    }

    fn of_read(kind: FailureKind) -> Option<Remedy> {
        match kind {
            FailureKind::Secret => Some(Remedy::SetSecret),
            FailureKind::Consent => Some(Remedy::GrantConsent),
            _ => None,
        }
    }
}

/// Which run is executing, and how.
#[derive(Debug, Clone, Copy)]
struct RunSpec {
    lease: RunLease,
    kind: RunKind,
    /// The held run whose removals this run applies.
    confirms: Option<i64>,
    customer_id: i64,
    source_id: i64,
}

/// What the deletion safeguard decided for a plan.
/// Adds planned while the source was read, and the transaction they are written in (see
/// `Engine::plan_early`).
struct Early {
    plan: EarlyPlan,
    open: usersync_store::OpenApply,
    adds: Vec<DirectoryUser>,
    /// Users whose mirror objects are written in `open` (a first read's, as handed over).
    mirrored: HashSet<String>,
}

struct Verdict {
    status: RunStatus,
    reason: Option<String>,
    attention: Option<String>,
    clears_hold: bool,
}

/// The sync engine: every surface calls these operations.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) store: Store,
    pub(crate) options: EngineOptions,
    /// The runs executing in this process, shared by every clone.
    pub(crate) live: std::sync::Arc<crate::live::LiveRuns>,
}

impl Engine {
    /// The engine over `store`; what it changes is written to the audit log as
    /// `options.actor`'s (runs' changes as their runs').
    pub fn new(store: Store, options: EngineOptions) -> Self {
        Engine {
            store: store.acting_as(&options.actor),
            options,
            live: Default::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Reads the source and records what a sync would do, changing nothing in the directory.
    pub async fn preview(
        &self,
        source_id: i64,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        let record = self.live_source(source_id).await?;
        self.recover_runs().await;
        let lease = self
            .store
            .start_run(
                &NewRun {
                    source_id,
                    customer_id: record.customer_id,
                    kind: RunKind::Preview,
                    reason: RunReason::Manual,
                    requested_by: self.options.actor.clone(),
                },
                &RunOwner::this_process(),
                self.options.lease,
            )
            .await?;
        let spec = RunSpec {
            lease,
            kind: RunKind::Preview,
            confirms: None,
            customer_id: record.customer_id,
            source_id,
        };
        self.run(spec, record, progress).await
    }

    /// Sync & Save, in this process: queues a sync of the source (or takes the one queued
    /// already), claims it and executes it. A sync of the source running elsewhere is a
    /// conflict that names it.
    pub async fn sync(
        &self,
        source_id: i64,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        self.sync_job(source_id, RunReason::Manual, None, progress)
            .await
    }

    /// Applies the removals a held run held, those the tenant still agrees with (the
    /// tenant is read again now), together with whatever else a sync would do now.
    pub async fn confirm(
        &self,
        run_id: i64,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        self.recover_runs().await;
        let run = self.store.run(run_id).await?;
        if run.status != RunStatus::Held {
            return Err(EngineError::Conflict(format!(
                "run {run_id} is {}: only a held run's removals can be confirmed",
                run.status
            )));
        }
        let health = self.store.source_health(run.source_id).await?;
        if health.hold_run_id.is_none() {
            return Err(EngineError::Conflict(format!(
                "the removals of source #{} are no longer held (confirmed already, or its threshold changed)",
                run.source_id
            )));
        }
        self.sync_job(run.source_id, RunReason::Confirm, Some(run_id), progress)
            .await
    }

    /// Confirms the removals the source holds (its held run), as [`Engine::confirm`] does.
    pub async fn confirm_source(
        &self,
        source_id: i64,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        let health = self.store.source_health(source_id).await?;
        let Some(held) = health.hold_run_id else {
            return Err(EngineError::Conflict(format!(
                "source #{source_id} holds no removals, so there is nothing to confirm; a sync holds \
                 removals beyond the deletion threshold and they can be confirmed then"
            )));
        };
        // The newest held run lists every removal held so far.
        let newest = self
            .store
            .list_runs(Some(source_id), &[RunStatus::Held], 1)
            .await?
            .first()
            .map_or(held, |r| r.id);
        self.confirm(newest, progress).await
    }

    /// Queues a sync of the source for a worker, due now; a queued one absorbs it.
    pub async fn run_now(&self, source_id: i64) -> Result<Enqueued, EngineError> {
        self.live_source(source_id).await?;
        self.recover_runs().await;
        Ok(self
            .store
            .enqueue_sync(&NewJob {
                source_id,
                reason: RunReason::RunNow,
                confirms: None,
                requested_by: self.options.actor.clone(),
            })
            .await?)
    }

    async fn sync_job(
        &self,
        source_id: i64,
        reason: RunReason,
        confirms: Option<i64>,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        self.live_source(source_id).await?;
        self.recover_runs().await;
        let queued = self
            .store
            .enqueue_sync(&NewJob {
                source_id,
                reason,
                confirms,
                requested_by: self.options.actor.clone(),
            })
            .await?;
        let busy = |run: i64| {
            EngineError::Conflict(format!(
                "source #{source_id} is being synced already (run {run}); wait for it to finish"
            ))
        };
        let run_id = match queued {
            Enqueued::Running(run) => return Err(busy(run)),
            Enqueued::Queued(run) | Enqueued::Folded(run) => run,
        };
        let claim = self
            .store
            .claim_run(run_id, &RunOwner::this_process(), self.options.lease)
            .await?
            .ok_or_else(|| busy(run_id))?;
        self.execute(&claim, progress).await
    }

    /// Executes a claimed sync (a worker's, or this process's own) and records its outcome.
    pub async fn execute(
        &self,
        claim: &Claim,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        let spec = RunSpec {
            lease: claim.lease,
            kind: claim.kind,
            confirms: claim.confirms,
            customer_id: claim.customer_id,
            source_id: claim.source_id,
        };
        let record = match self.live_source(claim.source_id).await {
            Ok(record) => record,
            Err(error) => {
                // A failure before the run could start is recorded like any other.
                let text = error_text(&error);
                return self
                    .failed(&spec, None, RunStats::default(), text, Remedy::of(&error))
                    .await;
            }
        };
        self.run(spec, record, progress).await
    }

    /// The newest runs first, of one source or of all, of some statuses or all; runs whose
    /// process died are taken back first, so none shows "running" for ever.
    pub async fn runs(
        &self,
        source_id: Option<i64>,
        statuses: &[RunStatus],
        limit: i64,
    ) -> Result<Vec<RunRecord>, EngineError> {
        self.runs_before(source_id, statuses, None, limit).await
    }

    /// [`Engine::runs`], only runs older than `before` (a run id).
    pub async fn runs_before(
        &self,
        source_id: Option<i64>,
        statuses: &[RunStatus],
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, EngineError> {
        self.recover_runs().await;
        Ok(self
            .store
            .list_runs_before(source_id, statuses, before, limit)
            .await?)
    }

    /// One run with its plan (after taking back runs whose process died).
    pub async fn run_record(&self, run_id: i64) -> Result<RunRecord, EngineError> {
        self.recover_runs().await;
        Ok(self.store.run(run_id).await?)
    }

    /// Executes a claimed run as [`Engine::execute`] does, keeping its progress where
    /// [`Engine::live_progress`] finds it while it runs (a service's workers).
    pub async fn execute_watched(&self, claim: &Claim) -> Result<RunOutcome, EngineError> {
        let run_id = claim.lease.run_id;
        let progress = self.live.watch(run_id);
        // For the consoles of the other processes (see `live`).
        let writer = (self.store.backend() == usersync_store::Backend::Postgres).then(|| {
            tokio::spawn(crate::live::write_progress(
                self.live.clone(),
                self.store.clone(),
                run_id,
            ))
        });
        let outcome = self.execute(claim, &progress).await;
        if let Some(writer) = writer {
            writer.abort();
        }
        outcome
    }

    /// Where a run executing in this process stands; `None` when it runs elsewhere or
    /// not at all.
    pub fn live_progress(&self, run_id: i64) -> Option<crate::LiveProgress> {
        self.live.get(run_id)
    }

    /// Where a running run stands: as this process executes it, else as the process that
    /// executes it wrote it (PostgreSQL); `None` when neither tells.
    pub async fn run_progress(&self, run_id: i64) -> Option<crate::LiveProgress> {
        if let Some(here) = self.live.get(run_id) {
            return Some(here);
        }
        let text = self.store.run_progress(run_id).await.ok().flatten()?;
        serde_json::from_str(&text).ok()
    }

    /// Cancels a queued or running run; a running one can apply nothing from now on.
    pub async fn cancel(&self, run_id: i64) -> Result<RunStatus, EngineError> {
        Ok(self.store.cancel_run(run_id, &self.options.actor).await?)
    }

    /// Takes back runs whose process stopped; best effort (a busy database only delays it
    /// to the next command).
    pub(crate) async fn recover_runs(&self) {
        if let Err(e) = self.store.recover_runs(self.options.max_attempts).await {
            tracing::debug!(error = %e, "could not check for stopped runs");
        }
    }

    async fn run(
        &self,
        spec: RunSpec,
        record: SourceRecord,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        let heartbeat = self.heartbeat(spec.lease);
        let span = tracing::info_span!("run", run = spec.lease.run_id, kind = spec.kind.as_str(), customer = %record.customer, source = spec.source_id);
        let outcome = async {
            let (source, ctx) = match self.prepare(&record).await {
                Ok(prepared) => prepared,
                // No domains, no secret, unreadable settings: recorded as the run's failure.
                Err(error) => {
                    heartbeat.finishing();
                    let text = error_text(&error);
                    let remedy = Remedy::of(&error);
                    return self
                        .failed(&spec, None, RunStats::default(), text, remedy)
                        .await;
                }
            };
            self.read_plan_apply(&spec, source.as_ref(), &ctx, progress, &heartbeat)
                .await
        }
        .instrument(span)
        .await;
        let outcome = match outcome {
            Err(EngineError::Store(error)) => Err(self
                .store
                .explain_for(error, Some(spec.lease.run_id))
                .await
                .into()),
            other => other,
        };
        if let Err(error) = &outcome {
            heartbeat.finishing();
            // The run started, so it ends recorded, whatever went wrong.
            let text = error_text(error);
            let _ = self
                .store
                .finish_run(
                    &spec.lease,
                    &RunEnd {
                        status: RunStatus::Failed,
                        plan: None,
                        stats: &RunStats::default(),
                        error: Some(&text),
                    },
                    &self.settle_failed(&spec, &text, false),
                )
                .await;
        }
        outcome
    }

    /// Renews the run's lease every `heartbeat_every` while this process works on it.
    fn heartbeat(&self, lease: RunLease) -> Heartbeat {
        let store = self.store.clone();
        let every = self.options.heartbeat_every;
        let lease_for = self.options.lease;
        let finishing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ours = finishing.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match store.heartbeat(&lease, lease_for).await {
                    Ok(true) => {}
                    Ok(false) => {
                        if !ours.load(std::sync::atomic::Ordering::Relaxed) {
                            tracing::warn!(
                                run = lease.run_id,
                                "this process lost the run (cancelled, or taken over after its lease expired); its outcome will not be recorded"
                            );
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(run = lease.run_id, error = %e, "lease not renewed")
                    }
                }
            }
        });
        Heartbeat { task, finishing }
    }

    async fn read_plan_apply(
        &self,
        spec: &RunSpec,
        source: &dyn Source,
        ctx: &MappingContext,
        progress: &dyn Progress,
        heartbeat: &Heartbeat,
    ) -> Result<RunOutcome, EngineError> {
        let started = Instant::now();
        tracing::info!("run started");
        // The statistics a run before refreshed after its commit, current: the lookups
        // below are planned from them.
        self.store.statistics_current().await;
        // What the last applied run read: the source reads what changed since.
        // Its head: the source reads the objects it needs.
        let mirror = self.store.mirror_head(spec.source_id).await?;
        let planned_before = mirror.as_ref().and_then(|m| m.planned.clone());
        // Whether a delta read's plan can take in only what changed: decided before the
        // read, so that the whole directory is loaded only for a plan that needs it.
        let mut whole_plan = self
            .whole_plan_because(spec, ctx, planned_before.as_ref())
            .await?;
        // The customer's directory loads while the source is read (the read waits on the
        // network, the load on the database): a whole plan needs it. It is checked to be
        // current when the plan applies, and loaded again if it is not.
        //
        // A sync that plans every object plans, as the read hands them over, the users
        // nothing else bears on, and stages their adds (`usersync_core::early`): most of
        // a first sync is written while its pages still arrive.
        let (read, preloaded, early) = if whole_plan.is_some() {
            let (handover, handed) = match spec.kind {
                RunKind::Sync => {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    (Some(tx), Some(rx))
                }
                _ => (None, None),
            };
            let (read, staged) = tokio::join!(
                source.read(mirror, false, handover, progress),
                self.plan_early(spec, ctx, handed)
            );
            let (directory, version, early) = staged?;
            (read, Some((directory, version)), early)
        } else {
            (source.read(mirror, true, None, progress).await, None, None)
        };
        let mut preloaded = preloaded;
        let mut early = early;
        let mut read = match read {
            Ok(read) => read,
            Err(error) => {
                // Its early writes are rolled back first (on SQLite they hold the writer
                // the failure is recorded with).
                drop(early.take());
                let stats = RunStats {
                    duration_ms: elapsed_ms(started),
                    ..RunStats::default()
                };
                heartbeat.finishing();
                let kind = source.failure_kind(error.as_ref());
                let text = error_text(error.as_ref());
                if let (FailureKind::Throttled { retry_after }, RunKind::Sync) = (kind, spec.kind) {
                    return self.throttled(spec, stats, text, retry_after).await;
                }
                return self
                    .failed(spec, None, stats, text, Remedy::of_read(kind))
                    .await;
            }
        };
        let read_ms = elapsed_ms(started);
        progress.phase("planning");
        let mut notes = std::mem::take(&mut read.notes);
        let (import, ctx) = self
            .domains_to_import(&read.snapshot, ctx, &mut notes)
            .await?;
        if let crate::source::ReadMode::Full { reason } = &read.mode {
            tracing::info!(%reason, "read the whole source");
        }
        let basis = usersync_core::scope::basis(&ctx);
        if whole_plan.is_none() && planned_before.as_ref().is_none_or(|p| p.basis != basis) {
            whole_plan = Some("the tenant's domains were imported into the customer".into());
        }
        let users_total = read.users_total.unwrap_or(read.snapshot.users.len() as u64);
        // A plan of every object needs every user: those a partial read left out too.
        if whole_plan.is_some() {
            read_everything(&mut read).await?;
        }
        // The objects a delta read's plan takes in first: what changed, and what the last
        // plan left with an address conflict.
        let mut scope_from: Option<HashSet<String>> = match (&whole_plan, &read.changed) {
            (None, Some(changed)) => {
                let mut objects = changed.clone();
                objects.extend(
                    planned_before
                        .iter()
                        .flat_map(|p| p.unsettled.iter().cloned()),
                );
                Some(objects)
            }
            (Some(why), Some(_)) => {
                notes.push(format!("every object was planned: {why}"));
                None
            }
            _ => None,
        };
        let mut stats = RunStats {
            read_mode: Some(read.mode.as_str().to_string()),
            read_detail: Some(read.mode.detail().to_string()),
            read_users: users_total,
            mirror_read: read.mirror_read,
            read_groups: read.snapshot.groups.len() as u64,
            requests: read.requests,
            throttled: read.throttled,
            read_ms,
            notes,
            ..RunStats::default()
        };
        let confirmed: HashSet<i64> = match spec.confirms {
            Some(held) => self
                .store
                .run(held)
                .await?
                .plan
                .map(|p| p.held.iter().filter_map(|u| u.id).collect())
                .unwrap_or_default(),
            None => HashSet::new(),
        };
        // The plan is made from the directory as it is when it is applied: if another run
        // of the customer applied in between, it is made again.
        let mut tries = 0;
        loop {
            tries += 1;
            let planning = Instant::now();
            let scoped = match &scope_from {
                Some(objects) => {
                    self.scoped_directory(
                        spec,
                        &mut read.snapshot,
                        read.more.as_deref(),
                        &ctx,
                        objects,
                        &mut stats.mirror_read,
                    )
                    .await?
                }
                None => None,
            };
            let (directory, version, scope) = match scoped {
                Some((entries, version, objects)) => (entries, version, Some(objects)),
                None => {
                    // The directory changed while the scope was being loaded: this plan
                    // takes in every object, so it needs every user.
                    if scope_from.take().is_some() {
                        let before = read.mirror_read.unwrap_or(0);
                        read_everything(&mut read).await?;
                        let more = read.mirror_read.unwrap_or(0) - before;
                        *stats.mirror_read.get_or_insert(0) += more;
                    }
                    let (directory, version) = match preloaded.take() {
                        Some(loaded) => loaded,
                        None => self.store.directory_versioned(spec.customer_id).await?,
                    };
                    (directory, version, None)
                }
            };
            let loaded_ms = elapsed_ms(planning);
            // The early adds stand where nothing the read found after bears on them (and
            // the domains did not change under them); the rest is planned now.
            let mut open = None;
            let mut mirrored = HashSet::new();
            let mut plan = match early.take() {
                Some(e) if scope.is_none() && import.is_empty() => {
                    let settled = e.plan.finish(&read.snapshot, &ctx, &read.changed_after);
                    // Users that changed after they were handed over are written again.
                    mirrored = e.mirrored;
                    mirrored.retain(|id| !read.changed_after.contains(id));
                    let mut written = e.open;
                    written.withdraw(&settled.withdrawn).await?;
                    tracing::debug!(
                        kept = settled.kept.len(),
                        withdrawn = settled.withdrawn.len(),
                        "early adds settled"
                    );
                    open = Some(written);
                    usersync_core::early::plan_rest(
                        &read.snapshot,
                        &directory,
                        &ctx,
                        &settled.kept,
                        e.adds,
                    )
                }
                // Domains imported after the read change what an add holds: its writes
                // are rolled back, and everything is planned now.
                Some(e) => {
                    drop(e);
                    plan_within(&read.snapshot, &directory, &ctx, scope.as_ref())
                }
                None => plan_within(&read.snapshot, &directory, &ctx, scope.as_ref()),
            };
            tracing::debug!(
                directory_ms = loaded_ms,
                plan_ms = elapsed_ms(planning) - loaded_ms,
                entries = directory.len(),
                objects = scope.as_ref().map(HashSet::len),
                "planned"
            );
            plan.import_domains = import.clone();
            let managed = match &scope {
                Some(_) => {
                    self.store
                        .managed_count(spec.customer_id, spec.source_id)
                        .await?
                }
                None => directory
                    .iter()
                    .filter(|u| u.is_managed_by(ctx.source_id) && u.status == UserStatus::Active)
                    .count(),
            };
            stats.planned_objects = scope.as_ref().map(|s| s.len() as u64);
            drop(directory);
            let verdict = self
                .judge(spec, &ctx, &mut plan, managed, users_total == 0, &confirmed)
                .await?;
            stats.plan_ms += elapsed_ms(planning);
            // What the next delta run's plan depends on, saved with this one.
            if let Some(write) = read.mirror.as_mut() {
                let mut unsettled = usersync_core::scope::unsettled(&plan);
                if let (Some(objects), Some(before)) = (&scope, &planned_before) {
                    // Objects this plan did not take in keep their conflicts.
                    unsettled.extend(
                        before
                            .unsettled
                            .iter()
                            .filter(|o| !objects.contains(*o))
                            .cloned(),
                    );
                }
                write.planned = Some(usersync_store::MirrorPlan {
                    basis: basis.clone(),
                    unsettled: unsettled.into_iter().collect(),
                });
            }
            if spec.kind == RunKind::Preview {
                heartbeat.finishing();
                stats.duration_ms = elapsed_ms(started);
                if let Some(why) = &verdict.reason {
                    stats
                        .notes
                        .push(format!("a sync now would hold its removals: {why}"));
                }
                self.store
                    .finish_run(
                        &spec.lease,
                        &RunEnd {
                            status: RunStatus::Succeeded,
                            plan: Some(&plan),
                            stats: &stats,
                            error: None,
                        },
                        &Settle::Nothing,
                    )
                    .await?;
                return Ok(self.outcome(spec, RunStatus::Succeeded, plan, stats, None));
            }
            progress.phase("saving");
            heartbeat.finishing();
            stats.duration_ms = elapsed_ms(started);
            let settle = match (verdict.status, &verdict.attention) {
                (RunStatus::Held, attention) => Settle::Held {
                    attention: attention.as_deref(),
                },
                _ => Settle::Succeeded {
                    clears_hold: verdict.clears_hold,
                },
            };
            // A whole read's users go to the mirror as they are written, first thing in the
            // apply; the plan holds what the rest of it needs, so each user is let go once
            // its object is made (at 1,000,000 users, most of a gigabyte the adds need not
            // wait beside).
            let user_rows = read.mirror_users.as_deref().map(|mirror| {
                SnapshotRows::new(
                    std::mem::take(&mut read.snapshot.users),
                    mirror,
                    std::mem::take(&mut mirrored),
                )
            });
            let apply = Apply {
                lease: spec.lease,
                customer_id: spec.customer_id,
                source_id: Some(ctx.source_id),
                plan: &plan,
                directory_version: version,
                status: verdict.status,
                error: verdict.reason.as_deref(),
                settle,
                mirror: read.mirror.as_ref(),
                mirror_rows: user_rows
                    .as_ref()
                    .map(|r| r as &dyn usersync_store::MirrorRows),
            };
            let applied = match open {
                Some(mut written) => {
                    // Only what the judged plan still adds stays in.
                    let adds: HashSet<&str> = plan
                        .add
                        .iter()
                        .filter_map(|a| a.source_object_id.as_deref())
                        .collect();
                    let dropped: Vec<String> = written
                        .objects()
                        .filter(|o| !adds.contains(o))
                        .map(str::to_string)
                        .collect();
                    drop(adds);
                    written.withdraw(&dropped).await?;
                    stats.written_while_reading = Some(written.added() as u64);
                    self.store
                        .apply_plan_open(&apply, &mut stats, written)
                        .await
                }
                None => self.store.apply_plan(&apply, &mut stats).await,
            };
            // Planning again needs the users back: a directory that changed is found before
            // the first mirror object is made, so they are all still there.
            let kept = user_rows.map(SnapshotRows::into_users);
            match applied {
                Ok(_) => {}
                Err(StoreError::DirectoryChanged { .. }) if tries < 5 => {
                    match kept {
                        Some(Some(users)) => read.snapshot.users = users,
                        None => {}
                        Some(None) => {
                            let message = "the directory changed while the plan was being \
                                           saved; nothing was changed, run the sync again"
                                .to_string();
                            stats.apply_ms = 0;
                            stats.duration_ms = elapsed_ms(started);
                            return self.failed(spec, Some(plan), stats, message, None).await;
                        }
                    }
                    tracing::info!("the directory changed while planning; planning again");
                    stats.duration_ms = 0;
                    // (What was written while reading was rolled back with it.)
                    stats.written_while_reading = None;
                    continue;
                }
                Err(error) => {
                    let error = self.store.explain_for(error, Some(spec.lease.run_id)).await;
                    if let StoreError::Conflict(_) = error {
                        // The run is no longer ours: nothing to record over its new state.
                        return Err(error.into());
                    }
                    let message = format!("the plan could not be saved: {}", error_text(&error));
                    stats.apply_ms = 0;
                    stats.duration_ms = elapsed_ms(started);
                    return self.failed(spec, Some(plan), stats, message, None).await;
                }
            }
            // The caller sees the whole run, commit included.
            stats.duration_ms = elapsed_ms(started);
            tracing::info!(
                added = plan.add.len(),
                updated = plan.update.len(),
                removed = plan.remove.len(),
                held = plan.held.len(),
                skipped = plan.skip.len(),
                ms = stats.duration_ms,
                status = verdict.status.as_str(),
                "run finished"
            );
            return Ok(self.outcome(spec, verdict.status, plan, stats, verdict.reason));
        }
    }

    /// The customer's directory (loaded while the source is read), and with `handed` (the
    /// users a sync's read hands over as it goes) the adds planned from them, written into
    /// the plan's transaction as they come once there are enough of them.
    async fn plan_early(
        &self,
        spec: &RunSpec,
        ctx: &MappingContext,
        handed: Option<tokio::sync::mpsc::UnboundedReceiver<crate::source::Handed>>,
    ) -> Result<(Vec<DirectoryUser>, i64, Option<Early>), EngineError> {
        let (directory, version) = self.store.directory_versioned(spec.customer_id).await?;
        let (Some(mut handed), Some(mut plan)) = (handed, EarlyPlan::new(&directory, ctx)) else {
            return Ok((directory, version, None));
        };
        // Whether the read is slow enough to plan and write beside it is judged on its
        // first users, kept until then; a fast one is told to hand over no more.
        let mut first: Option<Instant> = None;
        let mut held: Vec<usersync_core::SourceUser> = Vec::new();
        let mut mirror: Vec<usersync_store::MirrorObject> = Vec::new();
        let mut early = false;
        while !early {
            let Some(handed) = handed.recv().await else {
                return Ok((directory, version, None));
            };
            let since = *first.get_or_insert_with(Instant::now);
            held.extend(handed.users);
            mirror.extend(handed.mirror);
            if held.len() >= self.options.early_writes_from.max(1) {
                let rate = held.len() as f64 / since.elapsed().as_secs_f64().max(1e-3);
                if rate > self.options.early_writes_below_rate {
                    tracing::debug!(rate, "the read is fast: planned after it");
                    return Ok((directory, version, None));
                }
                tracing::debug!(rate, "the read is slow: planned and written beside it");
                early = true;
            }
        }
        let mut open = match self
            .store
            .open_apply(spec.lease, spec.customer_id, version)
            .await
        {
            Ok(o) => o,
            // Another apply came first: this run plans after its read, and plans again
            // from the directory as it is then.
            Err(StoreError::DirectoryChanged { .. }) => return Ok((directory, version, None)),
            Err(error) => return Err(error.into()),
        };
        let mut adds: Vec<DirectoryUser> = plan.take(held, ctx);
        let mut written = 0;
        // The users' mirror objects go in beside (a first read's: see `Handed`).
        let mut mirrored = HashSet::new();
        let chunk = usersync_store::OpenApply::ADDS_PER_WRITE;
        loop {
            let ready = (adds.len() - written) / chunk * chunk;
            if ready > 0 {
                open.add(&adds[written..written + ready]).await?;
                written += ready;
            }
            if mirror.len() >= chunk {
                let rest = mirror.split_off(mirror.len() / chunk * chunk);
                mirrored.extend(mirror.iter().map(|o| o.id.clone()));
                open.mirror(spec.source_id, std::mem::replace(&mut mirror, rest))
                    .await?;
            }
            let Some(handed) = handed.recv().await else {
                break;
            };
            adds.extend(plan.take(handed.users, ctx));
            mirror.extend(handed.mirror);
        }
        open.add(&adds[written..]).await?;
        written = adds.len();
        mirrored.extend(mirror.iter().map(|o| o.id.clone()));
        open.mirror(spec.source_id, mirror).await?;
        tracing::debug!(
            written,
            mirrored = mirrored.len(),
            "adds planned and written while reading, with the users' mirror objects"
        );
        Ok((
            directory,
            version,
            Some(Early {
                plan,
                open,
                adds,
                mirrored,
            }),
        ))
    }

    /// Why a delta read's plan must take in every object rather than what changed (see
    /// `usersync_core::scope`), or `None` when it need not.
    async fn whole_plan_because(
        &self,
        spec: &RunSpec,
        ctx: &MappingContext,
        planned: Option<&usersync_store::MirrorPlan>,
    ) -> Result<Option<String>, EngineError> {
        let Some(planned) = planned else {
            return Ok(Some(
                "the last plan did not record what it depended on".into(),
            ));
        };
        if planned.basis != usersync_core::scope::basis(ctx) {
            return Ok(Some(
                "the source's options, filters or the customer's domains changed since the last plan"
                    .into(),
            ));
        }
        if let Some(why) = usersync_core::scope::whole_because(ctx) {
            return Ok(Some(why.into()));
        }
        if spec.confirms.is_some() {
            return Ok(Some("held removals are confirmed".into()));
        }
        if let Some(held) = self.store.source_health(spec.source_id).await?.hold_run_id {
            return Ok(Some(format!(
                "removals are held since run {held} (each run lists them again)"
            )));
        }
        Ok(None)
    }

    /// The entries the objects of a delta read's plan are planned against, the scope
    /// closed over the entries holding their addresses (`usersync_core::scope::Scope`),
    /// with the directory's version and the objects to plan; `None` when the directory
    /// changed between two rounds of loading (the caller plans whole).
    async fn scoped_directory(
        &self,
        spec: &RunSpec,
        snapshot: &mut usersync_core::SourceSnapshot,
        more: Option<&dyn crate::source::MoreObjects>,
        ctx: &MappingContext,
        objects: &HashSet<String>,
        mirror_read: &mut Option<u64>,
    ) -> Result<Option<(Vec<usersync_core::DirectoryUser>, i64, HashSet<String>)>, EngineError>
    {
        let mut scope = usersync_core::scope::Scope::new(objects.iter().cloned());
        let mut version = None;
        let mut rounds = 0;
        let mut have: HashSet<String> = snapshot
            .users
            .iter()
            .map(|u| u.id.clone())
            .chain(snapshot.groups.iter().map(|g| g.id.clone()))
            .collect();
        loop {
            let asking = Instant::now();
            // Objects of the scope a partial read left out are read first: what they claim
            // decides what else the scope takes in.
            if let Some(more) = more {
                let missing: Vec<String> = scope
                    .objects()
                    .iter()
                    .filter(|o| !have.contains(*o))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    let users = more.users(Some(&missing)).await?;
                    *mirror_read.get_or_insert(0) += users.len() as u64;
                    have.extend(missing);
                    snapshot.users.extend(users);
                }
            }
            let wanted = scope.wanted(snapshot, ctx);
            if wanted.is_none() && version.is_some() {
                break;
            }
            let wanted = wanted.unwrap_or_default();
            rounds += 1;
            tracing::debug!(
                round = rounds,
                objects = wanted.objects.len(),
                addresses = wanted.addresses.len(),
                ms = elapsed_ms(asking),
                "scope round"
            );
            let (entries, now) = self
                .store
                .directory_entries(
                    spec.customer_id,
                    spec.source_id,
                    &wanted.objects,
                    &wanted.addresses,
                )
                .await?;
            if version.is_some_and(|v| v != now) {
                return Ok(None);
            }
            version = Some(now);
            scope.take(entries, spec.source_id);
        }
        Ok(Some((
            scope.entries(),
            version.unwrap_or_default(),
            scope.objects().clone(),
        )))
    }

    /// The deletion safeguard (rule 9, per source): removals beyond the threshold, removals
    /// of a source that holds removals already or is in error, and a tenant that suddenly
    /// returns nobody are held (moved to `plan.held`); a confirming run applies the held
    /// removals the tenant still agrees with.
    async fn judge(
        &self,
        spec: &RunSpec,
        ctx: &MappingContext,
        plan: &mut Plan,
        managed: usize,
        read_nobody: bool,
        confirmed: &HashSet<i64>,
    ) -> Result<Verdict, EngineError> {
        let health = self.store.source_health(spec.source_id).await?;
        let mut verdict = Verdict {
            status: RunStatus::Succeeded,
            reason: None,
            attention: None,
            clears_hold: spec.confirms.is_some(),
        };
        if plan.remove.is_empty() {
            return Ok(verdict);
        }
        // Confirmed removals go; the others are judged as usual.
        let (go, judged): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.remove)
            .into_iter()
            .partition(|u| u.id.is_some_and(|id| confirmed.contains(&id)));
        plan.remove = judged;
        let why = if read_nobody && managed > 0 {
            let why = format!(
                "the source returned no users at all, after it had {managed}; nobody is removed until this is confirmed"
            );
            verdict.attention = Some(why.clone());
            Some(why)
        } else if let (Some(held), None) = (health.hold_run_id, spec.confirms) {
            Some(format!(
                "the removals of this source are held since run {held}, until they are confirmed or the threshold is changed"
            ))
        } else if let (Some(attention), None) = (&health.attention, spec.confirms) {
            Some(format!(
                "the source needs attention ({attention}); nothing of it is removed while it is in error"
            ))
        } else {
            ctx.options
                .deletion_threshold
                .check(plan, managed)
                .map(|why| {
                    format!(
                        "{why}, over the threshold {}",
                        ctx.options.deletion_threshold
                    )
                })
        };
        if let Some(why) = why {
            plan.hold_removals();
            verdict.status = RunStatus::Held;
            verdict.reason = Some(why);
            verdict.clears_hold = false;
        }
        let mut go = go;
        go.append(&mut plan.remove);
        plan.remove = go;
        plan.keep_addresses_of_held();
        Ok(verdict)
    }

    fn outcome(
        &self,
        spec: &RunSpec,
        status: RunStatus,
        plan: Plan,
        stats: RunStats,
        error: Option<String>,
    ) -> RunOutcome {
        RunOutcome {
            run_id: spec.lease.run_id,
            kind: spec.kind,
            status,
            plan,
            stats,
            error,
            retry_in_secs: None,
            remedy: None,
        }
    }

    /// The source's health after a failed run of this kind (previews leave it alone).
    fn settle_failed<'a>(&self, spec: &RunSpec, error: &'a str, at_once: bool) -> Settle<'a> {
        match spec.kind {
            RunKind::Sync => Settle::Failed { error, at_once },
            _ => Settle::Nothing,
        }
    }

    /// Gives a throttled sync back to the queue, due after the tenant's Retry-After (or a
    /// minute), without spending an attempt.
    async fn throttled(
        &self,
        spec: &RunSpec,
        stats: RunStats,
        error: String,
        retry_after: Option<Duration>,
    ) -> Result<RunOutcome, EngineError> {
        let delay = retry_after
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_secs(1));
        let note = format!(
            "the tenant is throttled or unavailable ({error}); queued again for {} s later",
            delay.as_secs()
        );
        tracing::info!(%note, "run given back");
        if !self
            .store
            .release_run(&spec.lease, delay, Some(&note))
            .await?
        {
            return Err(EngineError::Conflict(format!(
                "run {} is no longer this process's; nothing was applied",
                spec.lease.run_id
            )));
        }
        Ok(RunOutcome {
            run_id: spec.lease.run_id,
            kind: spec.kind,
            status: RunStatus::Queued,
            plan: Plan::default(),
            stats,
            error: Some(note),
            retry_in_secs: Some(delay.as_secs()),
            remedy: None,
        })
    }

    async fn failed(
        &self,
        spec: &RunSpec,
        plan: Option<Plan>,
        stats: RunStats,
        error: String,
        remedy: Option<Remedy>,
    ) -> Result<RunOutcome, EngineError> {
        let at_once = matches!(remedy, Some(Remedy::SetSecret | Remedy::GrantConsent));
        // Info, not warn: the outcome carries the error to the caller, which reports it.
        tracing::info!(%error, "run failed");
        // A failed run records why, but not a plan: nothing of it was applied. A run that
        // another process took over or cancelled meanwhile keeps that verdict.
        match self
            .store
            .finish_run(
                &spec.lease,
                &RunEnd {
                    status: RunStatus::Failed,
                    plan: None,
                    stats: &stats,
                    error: Some(&error),
                },
                &self.settle_failed(spec, &error, at_once),
            )
            .await
        {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(RunOutcome {
            run_id: spec.lease.run_id,
            kind: spec.kind,
            status: RunStatus::Failed,
            plan: plan.unwrap_or_default(),
            stats,
            error: Some(error),
            retry_in_secs: None,
            remedy,
        })
    }

    /// The source's reader and the mapping context of its customer.
    async fn prepare(
        &self,
        record: &SourceRecord,
    ) -> Result<(Box<dyn Source>, MappingContext), EngineError> {
        let domains: BTreeSet<_> = self
            .store
            .list_domains(record.customer_id)
            .await?
            .into_iter()
            .map(|d| d.name)
            .collect();
        if domains.is_empty() {
            // Every user would be out of domain, and every synced user removed.
            return Err(EngineError::config(
                "domains",
                format!(
                    "the customer '{}' has no domains, so no address could be synced; add one",
                    record.customer
                ),
            ));
        }
        match record.kind {
            SourceKind::Office365 => {
                let (source, settings) = self.office365(record).await?;
                let mut ctx = MappingContext::new(record.id, domains, settings.options.clone());
                ctx.rules = self.store.filter_rules(record.id).await?;
                let needs = ReadNeeds {
                    memberships: usersync_core::early::needs_memberships(&ctx),
                    purpose_budget: ctx.options.purpose_budget as usize,
                    managers: ctx.options.import_managers,
                    delta: ctx.options.delta,
                    full_every_secs: i64::from(ctx.options.full_sync_every_minutes) * 60,
                };
                let source = source.with_needs(needs).with_store(self.store.clone());
                Ok((Box::new(source), ctx))
            }
        }
    }
}

impl Engine {
    /// With import_domains on: the tenant's verified domains that support Email and that the
    /// customer lacks, and the mapping context that already counts them (rule 1).
    async fn domains_to_import(
        &self,
        snapshot: &usersync_core::SourceSnapshot,
        ctx: &MappingContext,
        notes: &mut Vec<String>,
    ) -> Result<(Vec<usersync_core::DomainName>, MappingContext), EngineError> {
        let mut ctx = ctx.clone();
        let mut import = Vec::new();
        if !ctx.options.import_domains {
            return Ok((import, ctx));
        }
        for d in &snapshot.domains {
            let email = d
                .supported_services
                .iter()
                .any(|s| s.eq_ignore_ascii_case("email"));
            let Ok(name) = usersync_core::DomainName::parse(&d.name) else {
                continue;
            };
            if !d.is_verified
                || !email
                || d.is_initial
                || name.is_onmicrosoft()
                || ctx.domains.contains(&name)
            {
                continue;
            }
            match self.store.domain(&name).await {
                Ok(other) => notes.push(format!(
                    "the tenant's domain {name} belongs to the customer '{}', so it was not imported",
                    other.customer
                )),
                Err(usersync_store::StoreError::NotFound { .. }) => {
                    ctx.domains.insert(name.clone());
                    import.push(name);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok((import, ctx))
    }

    /// The Graph reader of a stored office365 source, with its settings.
    pub(crate) async fn office365(
        &self,
        record: &SourceRecord,
    ) -> Result<(Office365Source, Office365Settings), EngineError> {
        let settings: Office365Settings = office365_settings(record)?;
        let secret = self.store.source_secret(record.id).await?.ok_or_else(|| {
            EngineError::config(
                "client secret",
                format!("source #{} has no client secret; set it again", record.id),
            )
        })?;
        let sign_in = if settings.delegated {
            let token = self.store.source_refresh_token(record.id).await?.ok_or_else(|| {
                EngineError::config(
                    "delegated",
                    format!(
                        "source #{} signs in as an administrator but holds no sign-in; connect it again (Connect Office 365)",
                        record.id
                    ),
                )
            })?;
            // The identity platform hands out a new refresh token with each access
            // token: keep the newest (writes may finish out of order; an older one never
            // replaces a newer).
            let (store, id) = (self.store.clone(), record.id);
            let handed_out = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let kept = std::sync::Arc::new(tokio::sync::Mutex::new(0u64));
            let keeper = move |token: &usersync_graph::ClientSecret| {
                let n = handed_out.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let (store, kept) = (store.clone(), kept.clone());
                let token = usersync_store::SecretString::new(token.expose_secret());
                tokio::spawn(async move {
                    let mut newest = kept.lock().await;
                    if *newest > n {
                        return;
                    }
                    match store.keep_refresh_token(id, &token).await {
                        Ok(()) => *newest = n,
                        Err(e) => tracing::warn!(
                            source = id,
                            error = %e,
                            "the new refresh token could not be kept"
                        ),
                    }
                });
            };
            usersync_graph::SignIn::Delegated(
                usersync_graph::RefreshToken::new(token.expose()).kept_by(keeper),
            )
        } else {
            usersync_graph::SignIn::Application
        };
        let source = Office365Source::new(
            record,
            &settings,
            secret,
            sign_in,
            self.options.max_in_flight,
            self.options.retry.clone(),
        )?;
        Ok((source, settings))
    }
}

/// The mirror objects of a read's users, made from its snapshot as the store writes them;
/// each user's text is let go once its object is made.
#[derive(Debug)]
struct SnapshotRows<'a> {
    users: std::sync::Mutex<Made>,
    total: usize,
    mirror: &'a dyn crate::source::SnapshotMirror,
    /// Users whose objects were written while the read went on (left out here).
    written: HashSet<String>,
}

/// The snapshot's users, and how many of them have been made into objects (and let go).
#[derive(Debug)]
struct Made {
    users: Vec<usersync_core::SourceUser>,
    made: usize,
}

impl<'a> SnapshotRows<'a> {
    fn new(
        users: Vec<usersync_core::SourceUser>,
        mirror: &'a dyn crate::source::SnapshotMirror,
        written: HashSet<String>,
    ) -> Self {
        SnapshotRows {
            total: users.len(),
            users: std::sync::Mutex::new(Made { users, made: 0 }),
            mirror,
            written,
        }
    }

    /// The users back, whole; `None` once any was let go.
    fn into_users(self) -> Option<Vec<usersync_core::SourceUser>> {
        let made = self.users.into_inner().ok()?;
        (made.made == 0).then_some(made.users)
    }
}

impl usersync_store::MirrorRows for SnapshotRows<'_> {
    fn len(&self) -> usize {
        self.total
    }

    fn rows(
        &self,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<usersync_store::MirrorObject>, String> {
        if self.mirror.len() != self.total {
            return Err("the read's users changed after it".into());
        }
        let mut made = self
            .users
            .lock()
            .map_err(|_| "a write of the mirror failed")?;
        if range.start < made.made || range.end > made.users.len() {
            return Err("the read's users were asked for again after they were written".into());
        }
        let from = range.start;
        let rows = self.mirror.rows(&made.users[range.clone()], from, &|u| {
            !self.written.contains(&u.id)
        })?;
        for user in &mut made.users[range.clone()] {
            drop(std::mem::take(user));
        }
        made.made = range.end;
        if range.end == self.total {
            // The last of them: the list itself goes too.
            made.users = Vec::new();
        }
        Ok(rows)
    }
}

/// Completes a partial read's snapshot with every user it left out (for a plan of every
/// object).
async fn read_everything(read: &mut crate::source::SourceRead) -> Result<(), EngineError> {
    let Some(more) = read.more.take() else {
        return Ok(());
    };
    let have: HashSet<String> = read.snapshot.users.iter().map(|u| u.id.clone()).collect();
    let rest = more.users(None).await?;
    *read.mirror_read.get_or_insert(0) += rest.len() as u64;
    read.snapshot
        .users
        .extend(rest.into_iter().filter(|u| !have.contains(&u.id)));
    read.snapshot.users.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Ok(())
}

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::SnapshotRows;
    use usersync_core::SourceUser;
    use usersync_store::{MirrorObject, MirrorRows};

    #[derive(Debug)]
    struct Ids(usize);

    impl crate::source::SnapshotMirror for Ids {
        fn len(&self) -> usize {
            self.0
        }

        fn rows(
            &self,
            users: &[SourceUser],
            _from: usize,
            wanted: &dyn Fn(&SourceUser) -> bool,
        ) -> Result<Vec<MirrorObject>, String> {
            Ok(users
                .iter()
                .filter(|u| wanted(u))
                .map(|u| MirrorObject {
                    kind: "user".into(),
                    id: u.id.clone(),
                    data: format!("{{\"id\":\"{}\"}}", u.id),
                    pending: false,
                })
                .collect())
        }
    }

    fn users(n: usize) -> Vec<SourceUser> {
        (0..n)
            .map(|i| SourceUser {
                id: format!("u{i}"),
                display_name: Some(format!("User {i}")),
                ..SourceUser::default()
            })
            .collect()
    }

    #[test]
    fn the_snapshot_users_are_given_back_whole_until_one_is_written() {
        let mirror = Ids(3);
        let rows = SnapshotRows::new(users(3), &mirror, Default::default());
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.into_users(), Some(users(3)));

        let rows = SnapshotRows::new(users(3), &mirror, Default::default());
        let first = rows.rows(0..2).unwrap();
        assert_eq!(
            first.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["u0", "u1"]
        );
        // Written users are let go: they cannot be asked for again, nor given back.
        let again = rows.rows(0..2).unwrap_err();
        assert!(again.contains("asked for again"), "{again}");
        let last = rows.rows(2..3).unwrap();
        assert_eq!(last[0].data, r#"{"id":"u2"}"#);
        assert_eq!(rows.into_users(), None);
    }

    #[test]
    fn users_written_while_the_read_went_on_are_left_out() {
        let mirror = Ids(3);
        let written = ["u0", "u2"].map(String::from).into_iter().collect();
        let rows = SnapshotRows::new(users(3), &mirror, written);
        let made = rows.rows(0..3).unwrap();
        assert_eq!(
            made.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["u1"]
        );
    }

    #[test]
    fn a_snapshot_that_changed_after_the_read_is_not_written() {
        let mirror = Ids(2);
        let rows = SnapshotRows::new(users(3), &mirror, Default::default());
        let error = rows.rows(0..3).unwrap_err();
        assert!(error.contains("changed after"), "{error}");
    }
}
