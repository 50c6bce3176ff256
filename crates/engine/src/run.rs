//! The one operation behind preview and Sync & Save: read, plan, then record or apply.

use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;
use tracing::Instrument;
use usersync_core::filter::{Expression, FilterRule};
use usersync_core::{MappingContext, Plan, Safeguard, SourceKind, UserStatus, plan_sync};
use usersync_graph::RetryPolicy;
use usersync_store::{NewRun, RunKind, RunStats, RunStatus, SourceRecord, Store};

use crate::EngineError;
use crate::office365::{Office365Settings, Office365Source, ReadNeeds};
use crate::source::{Progress, Source};

/// How the engine talks to sources.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Requests in flight at once per tenant.
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_in_flight: 4,
            retry: RetryPolicy::default(),
        }
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
    store: Store,
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

    async fn run(
        &self,
        source_id: i64,
        kind: RunKind,
        confirm_removals: bool,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        let record = self.store.source(source_id).await?;
        let (source, ctx) = self.prepare(&record).await?;
        let run_id = self
            .store
            .start_run(&NewRun {
                source_id,
                customer_id: record.customer_id,
                kind,
                reason: "manual".into(),
            })
            .await?;
        let span = tracing::info_span!("run", run = run_id, kind = kind.as_str(), customer = %record.customer, source = source_id);
        let run = RunSpec {
            run_id,
            kind,
            confirm_removals,
            customer_id: record.customer_id,
        };
        let outcome = self
            .execute(&run, source.as_ref(), &ctx, progress)
            .instrument(span)
            .await;
        if let Err(error) = &outcome {
            // The run started, so it ends recorded, whatever went wrong.
            let _ = self
                .store
                .finish_run(
                    run_id,
                    RunStatus::Failed,
                    None,
                    &RunStats::default(),
                    Some(&error.to_string()),
                )
                .await;
        }
        outcome
    }

    async fn execute(
        &self,
        run: &RunSpec,
        source: &dyn Source,
        ctx: &MappingContext,
        progress: &dyn Progress,
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
                return self
                    .failed(run_id, kind, None, stats, error.to_string())
                    .await;
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
        match kind {
            RunKind::Preview => {
                stats.duration_ms = elapsed_ms(started);
                self.store
                    .finish_run(run_id, RunStatus::Succeeded, Some(&plan), &stats, None)
                    .await?;
            }
            RunKind::Sync => {
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
                // The figures recorded with an applied plan cover everything but the commit.
                stats.duration_ms = elapsed_ms(started);
                if let Err(error) = self
                    .store
                    .apply_plan(run_id, customer_id, Some(ctx.source_id), &plan, &stats)
                    .await
                {
                    let message = format!("the plan could not be saved: {error}");
                    return self.failed(run_id, kind, Some(plan), stats, message).await;
                }
                // The caller sees the whole run, commit included.
                let before_apply = stats.duration_ms;
                stats.duration_ms = elapsed_ms(started);
                stats.apply_ms = stats.duration_ms - before_apply;
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
        // A failed run records why, but not a plan: nothing of it was applied.
        self.store
            .finish_run(run_id, RunStatus::Failed, None, &stats, Some(&error))
            .await?;
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
    async fn office365(
        &self,
        record: &SourceRecord,
    ) -> Result<(Office365Source, Office365Settings), EngineError> {
        let settings: Office365Settings =
            serde_json::from_value(record.settings.clone()).map_err(|e| {
                EngineError::config(
                    "source settings",
                    format!("source #{} has unreadable settings: {e}", record.id),
                )
            })?;
        let secret = self.store.source_secret(record.id).await?.ok_or_else(|| {
            EngineError::config(
                "client secret",
                format!(
                    "source #{} has no client secret; add the source again with USERSYNC_M365_CLIENT_SECRET set",
                    record.id
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

    /// Adds a filter rule after checking it: the text parses, and every group a `memberOf`
    /// clause names exists in the tenant (read now). Nothing is saved when a check fails.
    pub async fn add_filter_rule(
        &self,
        source_id: i64,
        group: &str,
        text: &str,
        create_group: bool,
    ) -> Result<FilterRule, EngineError> {
        let expression = Expression::parse(text)?;
        let record = self.store.source(source_id).await?;
        if expression.mentions_member_of() {
            let (source, _) = self.office365(&record).await?;
            let groups = source.groups().await.map_err(|e| {
                EngineError::config(
                    "memberOf",
                    format!("the tenant's groups could not be read to check the rule: {e}"),
                )
            })?;
            expression.check_groups(&groups)?;
        }
        Ok(self
            .store
            .add_filter_rule(source_id, group, &expression, create_group)
            .await?)
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}
