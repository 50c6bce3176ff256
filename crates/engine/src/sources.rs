//! Operations on a source beside its runs: options, secret, connection, test, removal.

use serde::Serialize;
use usersync_core::filter::{Expression, FilterRule};
use usersync_core::{Plan, SourceGroup, SourceOptions, UserStatus};
use usersync_store::{
    Apply, NewRun, RunEnd, RunKind, RunOwner, RunReason, RunStats, RunStatus, SecretString, Settle,
    SourceRecord,
};

use crate::office365::Office365Settings;
use crate::source::{ConnectionReport, Source};
use crate::{Engine, EngineError};

/// New connection settings for a source; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct Reconnect {
    pub client_id: Option<String>,
    pub authority_url: Option<String>,
    pub graph_url: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
    pub allow_insecure_http: Option<bool>,
}

/// How often a source syncs by itself, or `None`.
pub(crate) fn schedule_of(options: &SourceOptions) -> Option<std::time::Duration> {
    options
        .auto_sync
        .then(|| std::time::Duration::from_secs(u64::from(options.interval_minutes) * 60))
}

/// What removing a source did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct SourceRemovalOutcome {
    pub source_id: i64,
    /// The run that recorded the removal of its users (none with `keep_users`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    /// `succeeded`, or `failed` when the deletion safeguard held the removal back.
    pub status: RunStatus,
    /// Users that no source manages any more (with `keep_users`).
    pub unmanaged: u64,
    /// Users removed (kept as removed, restorable) with the source.
    pub removed: u64,
    pub error: Option<String>,
}

impl Engine {
    /// Sets options of a source from `KEY=VALUE` texts, all or none, and returns them.
    /// Tenant groups that `selected_groups` and `group_map` name are checked against the
    /// tenant (read now), console groups that `group_map` names against the customer.
    /// The last step of the console's setup wizard saved for the source.
    pub async fn setup_step(&self, source_id: i64) -> Result<Option<String>, EngineError> {
        let record = self.store.source(source_id).await?;
        Ok(office365_settings(&record)?.setup_step)
    }

    /// Keeps how far the console's setup wizard got for the source.
    pub async fn set_setup_step(&self, source_id: i64, step: &str) -> Result<(), EngineError> {
        let record = self.live_source(source_id).await?;
        let mut settings = office365_settings(&record)?;
        if settings.setup_step.as_deref() == Some(step) {
            return Ok(());
        }
        settings.setup_step = Some(step.to_string());
        self.save_settings(source_id, &settings).await
    }

    /// A source's options as they are set now.
    pub async fn source_options(&self, source_id: i64) -> Result<SourceOptions, EngineError> {
        let record = self.store.source(source_id).await?;
        Ok(office365_settings(&record)?.options)
    }

    pub async fn set_source_options(
        &self,
        source_id: i64,
        assignments: &[String],
    ) -> Result<SourceOptions, EngineError> {
        let record = self.live_source(source_id).await?;
        let mut settings = office365_settings(&record)?;
        let options = settings.options.apply(assignments)?;
        // group_map maps onto existing console groups: a name that is not one is refused.
        let groups = self.store.list_groups(record.customer_id).await?;
        for (_, console) in &options.group_map {
            if !groups.iter().any(|g| g.name == *console) {
                let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
                return Err(EngineError::config(
                    "group_map",
                    format!(
                        "the console group '{console}' does not exist in '{}'; existing groups: {}; \
                         add the group first",
                        record.customer,
                        names.join(", "),
                    ),
                ));
            }
        }
        let names_tenant_groups = assignments.iter().any(|a| {
            let key = a.split_once('=').map_or(a.as_str(), |(k, _)| k).trim();
            key == "selected_groups" || key == "group_map"
        });
        if names_tenant_groups
            && (!options.selected_groups.is_empty() || !options.group_map.is_empty())
        {
            let tenant_groups = self
                .tenant_groups(&record, "selected_groups", "the option")
                .await?;
            options.check_tenant_groups(&tenant_groups)?;
        }
        let threshold_changed = settings.options.deletion_threshold != options.deletion_threshold;
        settings.options = options;
        self.save_settings(source_id, &settings).await?;
        self.store
            .set_source_schedule(source_id, schedule_of(&settings.options))
            .await?;
        if threshold_changed {
            // The held removals are judged anew by the next run, against the new threshold.
            self.store.clear_hold(source_id).await?;
        }
        Ok(settings.options)
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
        let record = self.live_source(source_id).await?;
        if expression.mentions_member_of() {
            let groups = self.tenant_groups(&record, "memberOf", "the rule").await?;
            expression.check_groups(&groups)?;
        }
        Ok(self
            .store
            .add_filter_rule(source_id, group, &expression, create_group)
            .await?)
    }

    /// The tenant's groups, read now to check what `field` names.
    async fn tenant_groups(
        &self,
        record: &SourceRecord,
        field: &str,
        checking: &str,
    ) -> Result<Vec<SourceGroup>, EngineError> {
        let (source, _) = self.office365(record).await?;
        source
            .groups()
            .await
            .map_err(|e| match e.downcast::<usersync_graph::GraphError>() {
                // The tenant refused or failed: not the value's fault, and the kind says
                // whether to grant consent or try again.
                Ok(error) => EngineError::Tenant {
                    what: "the tenant's groups could not be read to check the groups named",
                    error,
                },
                Err(e) => EngineError::config(
                    field,
                    format!("the tenant's groups could not be read to check {checking}: {e}"),
                ),
            })
    }

    /// Replaces the client secret of a source (wrong, expired, or sealed with a lost key).
    pub async fn set_source_secret(
        &self,
        source_id: i64,
        secret: SecretString,
    ) -> Result<(), EngineError> {
        self.live_source(source_id).await?;
        if secret.expose().trim().is_empty() {
            return Err(EngineError::config(
                "client secret",
                "the secret is empty; paste the secret's value (not its id) from the app registration",
            ));
        }
        Ok(self.store.set_source_secret(source_id, &secret).await?)
    }

    /// Changes how a source connects (app registration, endpoints), checked like a new
    /// source; the tenant and the options stay.
    pub async fn reconnect_source(
        &self,
        source_id: i64,
        change: Reconnect,
    ) -> Result<SourceRecord, EngineError> {
        let record = self.live_source(source_id).await?;
        let mut settings = office365_settings(&record)?;
        if let Some(v) = change.client_id {
            settings.client_id = v.trim().to_string();
        }
        if let Some(v) = change.authority_url {
            settings.authority_url = v;
        }
        if let Some(v) = change.graph_url {
            settings.graph_url = v;
        }
        if let Some(v) = change.ca_file {
            settings.ca_file = Some(v);
        }
        if let Some(v) = change.allow_insecure_http {
            settings.allow_insecure_http = v;
        }
        settings.check()?;
        self.save_settings(source_id, &settings).await?;
        Ok(self.store.source(source_id).await?)
    }

    /// Signs in to the source and tries one read of each kind a sync makes.
    pub async fn test_source(&self, source_id: i64) -> Result<ConnectionReport, EngineError> {
        let record = self.live_source(source_id).await?;
        let (source, _) = self.office365(&record).await?;
        Ok(source.check().await)
    }

    /// Removes a source. With `keep_users` its users stay as they are and become unmanaged
    /// (no sync changes or removes them). Otherwise they are removed like users gone from
    /// the tenant, through the deletion safeguard: a removal beyond it is recorded as a
    /// failed run with its plan and nothing changes, unless `confirm_removals`. Either way
    /// the source keeps its row and runs, loses its secret, and its tenant can be
    /// connected again.
    pub async fn remove_source(
        &self,
        source_id: i64,
        keep_users: bool,
        confirm_removals: bool,
    ) -> Result<SourceRemovalOutcome, EngineError> {
        let record = self.live_source(source_id).await?;
        self.recover_runs().await;
        let active = self.store.active_runs(source_id).await?;
        if let Some((run, status)) = active.first() {
            return Err(EngineError::Conflict(format!(
                "run {run} of source #{source_id} is {status}; remove the source when it has finished (or cancel it)"
            )));
        }
        // While it still holds its secret: afterwards nothing could sign in to delete them.
        self.drop_subscriptions(&record).await;
        if keep_users {
            let done = self.store.remove_source_keeping_users(source_id).await?;
            tracing::info!(
                source = source_id,
                unmanaged = done.unmanaged,
                "source removed, users kept"
            );
            return Ok(SourceRemovalOutcome {
                source_id,
                run_id: None,
                status: RunStatus::Succeeded,
                unmanaged: done.unmanaged,
                removed: 0,
                error: None,
            });
        }
        let (directory, version) = self.store.directory_versioned(record.customer_id).await?;
        let remove: Vec<_> = directory
            .into_iter()
            .filter(|u| u.is_managed_by(source_id) && u.status == UserStatus::Active)
            .collect();
        let managed = remove.len();
        let plan = Plan {
            remove,
            ..Plan::default()
        };
        let lease = self
            .store
            .start_run(
                &NewRun {
                    source_id,
                    customer_id: record.customer_id,
                    kind: RunKind::Remove,
                    reason: RunReason::Manual,
                    requested_by: self.options.actor.clone(),
                },
                &RunOwner::this_process(),
                self.options.lease,
            )
            .await?;
        let run_id = lease.run_id;
        let mut stats = RunStats::default();
        let threshold = office365_settings(&record)?.options.deletion_threshold;
        if !confirm_removals && let Some(why) = threshold.check(&plan, managed) {
            let why = format!("{why}; the source was not removed");
            self.store
                .finish_run(
                    &lease,
                    &RunEnd {
                        status: RunStatus::Failed,
                        plan: Some(&plan),
                        stats: &stats,
                        error: Some(&why),
                    },
                    &Settle::Nothing,
                )
                .await?;
            return Ok(SourceRemovalOutcome {
                source_id,
                run_id: Some(run_id),
                status: RunStatus::Failed,
                unmanaged: 0,
                removed: 0,
                error: Some(why),
            });
        }
        let applied = self
            .store
            .apply_source_removal(
                &Apply {
                    lease,
                    customer_id: record.customer_id,
                    source_id: Some(source_id),
                    plan: &plan,
                    directory_version: version,
                    status: RunStatus::Succeeded,
                    error: None,
                    settle: Settle::Nothing,
                    mirror: None,
                    mirror_rows: None,
                },
                &mut stats,
            )
            .await;
        if let Err(error) = applied {
            let error = self.store.explain_for(error, Some(run_id)).await;
            let message = format!("the source could not be removed: {error}");
            let _ = self
                .store
                .finish_run(
                    &lease,
                    &RunEnd {
                        status: RunStatus::Failed,
                        plan: None,
                        stats: &stats,
                        error: Some(&message),
                    },
                    &Settle::Nothing,
                )
                .await;
            return Err(error.into());
        }
        Ok(SourceRemovalOutcome {
            source_id,
            run_id: Some(run_id),
            status: RunStatus::Succeeded,
            unmanaged: 0,
            removed: plan.remove.len() as u64,
            error: None,
        })
    }

    /// A source that has not been removed.
    pub(crate) async fn live_source(&self, source_id: i64) -> Result<SourceRecord, EngineError> {
        let record = self.store.source(source_id).await?;
        if let Some(when) = &record.removed_at {
            return Err(EngineError::config(
                "source",
                format!(
                    "source #{source_id} was removed on {}; connect the tenant again as a new source",
                    when.get(..10).unwrap_or(when)
                ),
            ));
        }
        Ok(record)
    }

    async fn save_settings(
        &self,
        source_id: i64,
        settings: &Office365Settings,
    ) -> Result<(), EngineError> {
        settings.options.validate()?;
        let value = serde_json::to_value(settings)
            .map_err(|e| EngineError::config("source settings", e.to_string()))?;
        Ok(self.store.set_source_settings(source_id, &value).await?)
    }
}

/// The stored settings of an office365 source.
pub(crate) fn office365_settings(record: &SourceRecord) -> Result<Office365Settings, EngineError> {
    serde_json::from_value(record.settings.clone()).map_err(|e| {
        EngineError::config(
            "source settings",
            format!("source #{} has unreadable settings: {e}", record.id),
        )
    })
}
