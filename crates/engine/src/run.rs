//! The one operation behind preview and Sync & Save: read, plan, then record or apply.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::Instrument;
use usersync_core::{MappingContext, Plan, Safeguard, SourceKind, UserStatus, plan_sync};
use usersync_graph::{GraphError, RetryPolicy, TokenErrorKind};
use usersync_store::{
    DEFAULT_STALE_AFTER, NewRun, RunKind, RunOwner, RunRecord, RunStats, RunStatus, SourceRecord,
    Store, StoreError,
};

use crate::office365::{Office365Settings, Office365Source, ReadNeeds};
use crate::source::{Progress, Source};
use crate::sources::office365_settings;
use crate::{EngineError, error_text};

/// How the engine talks to sources.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Requests in flight at once per tenant.
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    /// How often a running run tells the database that its process still works on it.
    pub heartbeat_every: Duration,
    /// A run whose owner (on another host) was silent this long is judged stopped.
    pub stale_after: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_in_flight: 4,
            retry: RetryPolicy::default(),
            heartbeat_every: Duration::from_secs(15),
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

/// Stops the heartbeat of a run when the run ends, however it ends.
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
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run_id: i64,
    pub kind: RunKind,
    pub status: RunStatus,
    /// The plan; empty when the read failed.
    #[serde(skip)]
    pub plan: Plan,
    pub stats: RunStats,
    pub error: Option<String>,
}

/// Which run is executing, and how.
#[derive(Debug, Clone, Copy)]
struct RunSpec {
    run_id: i64,
    kind: RunKind,
    confirm_removals: bool,
    customer_id: i64,
}

/// The sync engine: every surface calls these operations.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) store: Store,
    options: EngineOptions,
}

impl Engine {
    pub fn new(store: Store, options: EngineOptions) -> Self {
        Engine { store, options }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads the source and records what a sync would do, changing nothing in the directory.
    pub async fn preview(
        &self,
        source_id: i64,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        self.run(source_id, RunKind::Preview, false, progress).await
    }

    /// Sync & Save after the operator confirmed removals beyond the deletion safeguard.
    pub async fn sync_confirmed(
        &self,
        source_id: i64,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        self.run(source_id, RunKind::Sync, true, progress).await
    }

    /// Sync & Save: reads the source and applies the plan in one transaction, or nothing.
    /// A plan that removes more than the deletion safeguard allows is not applied.
    pub async fn sync(
        &self,
        source_id: i64,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        self.run(source_id, RunKind::Sync, false, progress).await
    }

    /// The newest runs first, of one source or of all; runs whose process died are marked
    /// failed first, so none shows "running" for ever.
    pub async fn runs(
        &self,
        source_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, EngineError> {
        self.fail_stale_runs().await;
        Ok(self.store.list_runs(source_id, limit).await?)
    }

    /// One run with its plan (after marking runs whose process died failed).
    pub async fn run_record(&self, run_id: i64) -> Result<RunRecord, EngineError> {
        self.fail_stale_runs().await;
        Ok(self.store.run(run_id).await?)
    }

    /// Marks failed the runs whose process stopped; best effort (a busy database only
    /// delays it to the next command).
    pub(crate) async fn fail_stale_runs(&self) {
        if let Err(e) = self.store.fail_stale_runs(self.options.stale_after).await {
            tracing::debug!(error = %e, "could not check for stale runs");
        }
    }

    async fn run(
        &self,
        source_id: i64,
        kind: RunKind,
        confirm_removals: bool,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        let record = self.live_source(source_id).await?;
        let (source, ctx) = self.prepare(&record).await?;
        self.fail_stale_runs().await;
        let owner = RunOwner::this_process();
        let run_id = self
            .store
            .start_run(
                &NewRun {
                    source_id,
                    customer_id: record.customer_id,
                    kind,
                    reason: "manual".into(),
                },
                &owner,
            )
            .await?;
        let heartbeat = self.heartbeat(run_id, owner);
        let span = tracing::info_span!("run", run = run_id, kind = kind.as_str(), customer = %record.customer, source = source_id);
        let run = RunSpec {
            run_id,
            kind,
            confirm_removals,
            customer_id: record.customer_id,
        };
        let outcome = self
            .execute(&run, source.as_ref(), &ctx, progress, &heartbeat)
            .instrument(span)
            .await;
        let outcome = match outcome {
            Err(EngineError::Store(error)) => {
                Err(self.store.explain_for(error, Some(run_id)).await.into())
            }
            other => other,
        };
        if let Err(error) = &outcome {
            heartbeat.finishing();
            // The run started, so it ends recorded, whatever went wrong.
            let _ = self
                .store
                .finish_run(
                    run_id,
                    RunStatus::Failed,
                    None,
                    &RunStats::default(),
                    Some(&error_text(error)),
                )
                .await;
        }
        outcome
    }

    /// Tells the database every `heartbeat_every` that this process still runs `run_id`.
    fn heartbeat(&self, run_id: i64, owner: RunOwner) -> Heartbeat {
        let store = self.store.clone();
        let every = self.options.heartbeat_every;
        let finishing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ours = finishing.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match store.heartbeat(run_id, &owner).await {
                    Ok(true) => {}
                    Ok(false) => {
                        if !ours.load(std::sync::atomic::Ordering::Relaxed) {
                            tracing::warn!(
                                run = run_id,
                                "another process marked this run stopped; its outcome will not be recorded"
                            );
                        }
                        return;
                    }
                    Err(e) => tracing::debug!(run = run_id, error = %e, "heartbeat not recorded"),
                }
            }
        });
        Heartbeat { task, finishing }
    }

    async fn execute(
        &self,
        run: &RunSpec,
        source: &dyn Source,
        ctx: &MappingContext,
        progress: &dyn Progress,
        heartbeat: &Heartbeat,
    ) -> Result<RunOutcome, EngineError> {
        let RunSpec {
            run_id,
            kind,
            confirm_removals,
            customer_id,
        } = *run;
        let started = Instant::now();
        tracing::info!("run started");
        let mut read = match source.read(progress).await {
            Ok(read) => read,
            Err(error) => {
                let stats = RunStats {
                    duration_ms: elapsed_ms(started),
                    ..RunStats::default()
                };
                let message = read_error_text(ctx.source_id, error.as_ref());
                heartbeat.finishing();
                return self.failed(run_id, kind, None, stats, message).await;
            }
        };
        let read_ms = elapsed_ms(started);
        progress.phase("planning");
        let mut notes = std::mem::take(&mut read.notes);
        let (import, ctx) = self
            .domains_to_import(&read.snapshot, ctx, &mut notes)
            .await?;
        let directory = self.store.directory(customer_id).await?;
        let mut plan = plan_sync(&read.snapshot, &directory, &ctx);
        plan.import_domains = import;
        let managed = directory
            .iter()
            .filter(|u| u.is_managed_by(ctx.source_id) && u.status == UserStatus::Active)
            .count();
        drop(directory);
        let mut stats = RunStats {
            read_users: read.snapshot.users.len() as u64,
            read_groups: read.snapshot.groups.len() as u64,
            requests: read.requests,
            throttled: read.throttled,
            read_ms,
            plan_ms: elapsed_ms(started) - read_ms,
            notes,
            ..RunStats::default()
        };
        drop(read.snapshot);
        // From here this process records the outcome (a long apply included).
        heartbeat.finishing();
        match kind {
            RunKind::Preview => {
                stats.duration_ms = elapsed_ms(started);
                self.store
                    .finish_run(run_id, RunStatus::Succeeded, Some(&plan), &stats, None)
                    .await?;
            }
            // A source's removal is its own operation (`Engine::remove_source`).
            RunKind::Sync | RunKind::Remove => {
                if !confirm_removals && let Some(why) = Safeguard::default().check(&plan, managed) {
                    stats.duration_ms = elapsed_ms(started);
                    // The plan is kept with the failed run so the operator can see what
                    // would have been removed before confirming.
                    self.store
                        .finish_run(run_id, RunStatus::Failed, Some(&plan), &stats, Some(&why))
                        .await?;
                    tracing::info!(
                        removing = plan.remove.len(),
                        managed,
                        "deletion safeguard stopped the run"
                    );
                    return Ok(RunOutcome {
                        run_id,
                        kind,
                        status: RunStatus::Failed,
                        plan,
                        stats,
                        error: Some(why),
                    });
                }
                progress.phase("saving");
                // The store adds the apply to the recorded figures; only the commit is
                // left out of them.
                stats.duration_ms = elapsed_ms(started);
                if let Err(error) = self
                    .store
                    .apply_plan(run_id, customer_id, Some(ctx.source_id), &plan, &mut stats)
                    .await
                {
                    let error = self.store.explain_for(error, Some(run_id)).await;
                    let message = format!("the plan could not be saved: {}", error_text(&error));
                    stats.apply_ms = 0;
                    stats.duration_ms = elapsed_ms(started);
                    return self.failed(run_id, kind, Some(plan), stats, message).await;
                }
                // The caller sees the whole run, commit included.
                stats.duration_ms = elapsed_ms(started);
            }
        }
        tracing::info!(
            added = plan.add.len(),
            updated = plan.update.len(),
            removed = plan.remove.len(),
            skipped = plan.skip.len(),
            ms = stats.duration_ms,
            "run succeeded"
        );
        Ok(RunOutcome {
            run_id,
            kind,
            status: RunStatus::Succeeded,
            plan,
            stats,
            error: None,
        })
    }

    async fn failed(
        &self,
        run_id: i64,
        kind: RunKind,
        plan: Option<Plan>,
        stats: RunStats,
        error: String,
    ) -> Result<RunOutcome, EngineError> {
        // Info, not warn: the outcome carries the error to the caller, which reports it.
        tracing::info!(%error, "run failed");
        // A failed run records why, but not a plan: nothing of it was applied. A run that
        // another process marked stopped meanwhile keeps that verdict.
        match self
            .store
            .finish_run(run_id, RunStatus::Failed, None, &stats, Some(&error))
            .await
        {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(RunOutcome {
            run_id,
            kind,
            status: RunStatus::Failed,
            plan: plan.unwrap_or_default(),
            stats,
            error: Some(error),
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
                    "the customer '{}' has no domains, so no address could be synced; add one with `usersync domain add DOMAIN --customer '{}'`",
                    record.customer, record.customer
                ),
            ));
        }
        match record.kind {
            SourceKind::Office365 => {
                let (source, settings) = self.office365(record).await?;
                let mut ctx = MappingContext::new(record.id, domains, settings.options.clone());
                ctx.rules = self.store.filter_rules(record.id).await?;
                let needs = ReadNeeds {
                    memberships: !ctx.options.selected_groups.is_empty()
                        || ctx.options.include_groups
                        || !ctx.options.group_map.is_empty()
                        || ctx.rules.iter().any(|r| r.expression.mentions_member_of()),
                    purposes: true,
                    managers: ctx.options.import_managers,
                };
                let source = source.with_needs(needs);
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
                format!(
                    "source #{} has no client secret; set it with `usersync source set-secret {}`",
                    record.id, record.id
                ),
            )
        })?;
        let source = Office365Source::new(
            record,
            &settings,
            secret,
            self.options.max_in_flight,
            self.options.retry.clone(),
        )?;
        Ok((source, settings))
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

/// Why a read failed, with the command that repairs a wrong or expired secret.
fn read_error_text(
    source_id: i64,
    error: &(dyn std::error::Error + Send + Sync + 'static),
) -> String {
    let text = error_text(error);
    let secret_problem = matches!(
        error.downcast_ref::<GraphError>(),
        Some(GraphError::Token {
            kind: TokenErrorKind::InvalidClientSecret | TokenErrorKind::ExpiredClientSecret,
            ..
        })
    );
    if secret_problem {
        format!("{text}; set the new secret with `usersync source set-secret {source_id}`")
    } else {
        text
    }
}
