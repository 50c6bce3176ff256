//! usersync as a service: a scheduler that queues the syncs whose slot has come, and
//! workers that claim queued syncs and execute them, any number of processes on one
//! database. Shutdown stops claiming, lets runs in flight finish within a grace period, and
//! gives the rest back to the queue without spending an attempt.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use usersync_store::{RunKind, RunOwner, RunStatus};

use crate::run::RunOutcome;
use crate::{Engine, error_text};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Workers in this process: runs executing at once.
    pub workers: usize,
    /// Whether this process queues due syncs (`serve`) or only executes them (`worker`).
    pub scheduler: bool,
    /// How often an idle worker looks for work, and the scheduler for due sources.
    pub poll: Duration,
    /// How long runs in flight may take to finish after shutdown was asked for.
    pub grace: Duration,
    /// Change notifications received at this public URL (`serve` only): subscriptions
    /// kept, and notified sources queued after their debounce.
    pub notifications: Option<NotificationService>,
}

/// Where change notifications arrive, and the inbox the HTTP handler fills.
#[derive(Debug, Clone)]
pub struct NotificationService {
    pub public_url: url::Url,
    pub inbox: Arc<crate::Inbox>,
    /// How often subscriptions are checked (made, renewed, deleted).
    pub keep_every: Duration,
    pub timing: crate::SubscriptionTiming,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            workers: 2,
            scheduler: true,
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(30),
            notifications: None,
        }
    }
}

/// Upper bounds (seconds) of the run-duration histogram's buckets.
pub const DURATION_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

/// What the service did, for /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsInner>,
}

#[derive(Debug, Default, Clone)]
pub struct MetricsInner {
    /// Finished runs by kind and status.
    pub runs: BTreeMap<(String, String), u64>,
    /// Run durations: counts per bucket (cumulative at export), sum and count.
    pub duration_buckets: Vec<u64>,
    pub duration_sum: f64,
    pub duration_count: u64,
    pub graph_requests: u64,
    pub throttled: u64,
    /// Runs given back to the queue because the tenant throttled them.
    pub requeued_throttled: u64,
    pub claims: u64,
    /// Syncs queued by the scheduler.
    pub scheduled: u64,
    /// Removed users purged after their customer's retention.
    pub purged: u64,
    /// Change notifications taken (their source's run queued) and refused (wrong
    /// clientState).
    pub notifications_accepted: u64,
    pub notifications_refused: u64,
    /// Runs queued because of change notifications.
    pub notified_runs: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> MetricsInner {
        self.inner.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn record(&self, outcome: &RunOutcome, took: Duration) {
        let Ok(mut m) = self.inner.lock() else { return };
        *m.runs
            .entry((
                outcome.kind.as_str().to_string(),
                outcome.status.as_str().to_string(),
            ))
            .or_default() += 1;
        if m.duration_buckets.len() != DURATION_BUCKETS.len() {
            m.duration_buckets = vec![0; DURATION_BUCKETS.len()];
        }
        let secs = took.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| secs <= *b) {
            m.duration_buckets[i] += 1;
        }
        m.duration_sum += secs;
        m.duration_count += 1;
        m.graph_requests += outcome.stats.requests;
        m.throttled += outcome.stats.throttled;
        if outcome.status == RunStatus::Queued {
            m.requeued_throttled += 1;
        }
    }

    pub fn add(&self, f: impl FnOnce(&mut MetricsInner)) {
        if let Ok(mut m) = self.inner.lock() {
            f(&mut m);
        }
    }
}

/// Runs the scheduler (when asked) and the workers until `shutdown` turns true, then
/// drains: no new claims, runs in flight get `grace` to finish, the rest go back to the
/// queue. Returns when every worker has stopped.
pub async fn run_service(
    engine: Engine,
    options: ServiceOptions,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    if let (Some(n), true) = (options.notifications.clone(), options.scheduler) {
        // Notified sources are queued once their debounce is over.
        let engine_q = engine.clone();
        let metrics_q = metrics.clone();
        let inbox = n.inbox.clone();
        let mut shutdown_q = shutdown.clone();
        let poll = options.poll.min(Duration::from_secs(1));
        tasks.spawn(async move {
            loop {
                let queued = engine_q.queue_notified(&inbox).await;
                if queued > 0 {
                    metrics_q.add(|m| m.notified_runs += queued as u64);
                }
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stopping(&mut shutdown_q) => return,
                }
            }
        });
        // Subscriptions made, renewed and deleted as the sources' options say.
        let engine_k = engine.clone();
        let mut shutdown_k = shutdown.clone();
        tasks.spawn(async move {
            loop {
                let report = engine_k
                    .keep_subscriptions(Some(&n.public_url), n.timing)
                    .await;
                if report.made + report.renewed + report.deleted > 0 {
                    tracing::info!(
                        made = report.made,
                        renewed = report.renewed,
                        deleted = report.deleted,
                        "change-notification subscriptions kept"
                    );
                }
                for error in &report.errors {
                    tracing::warn!(%error, "a change-notification subscription could not be kept");
                }
                tokio::select! {
                    _ = tokio::time::sleep(n.keep_every) => {}
                    _ = stopping(&mut shutdown_k) => return,
                }
            }
        });
    }
    {
        // Every process takes back runs whose worker died (any process may notice first),
        // and offers to do the daily purge (one process does it, once a day).
        let engine = engine.clone();
        let metrics = metrics.clone();
        let mut shutdown = shutdown.clone();
        let every = options.poll * 5;
        tasks.spawn(async move {
            loop {
                engine.recover_runs().await;
                if let Some(report) = engine.purge_due().await {
                    metrics.add(|m| m.purged += report.purged.len() as u64);
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopping(&mut shutdown) => return,
                }
            }
        });
    }
    if options.scheduler {
        let engine = engine.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let poll = options.poll;
        tasks.spawn(async move { scheduler(engine, poll, metrics, shutdown).await });
    }
    for worker in 0..options.workers.max(1) {
        let engine = engine.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let options = options.clone();
        tasks.spawn(async move { work(worker, engine, options, metrics, shutdown).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits until shutdown is asked for (or the sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn scheduler(
    engine: Engine,
    poll: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let store = engine.store().clone();
    loop {
        match store.enqueue_due(500).await {
            Ok(queued) if !queued.is_empty() => {
                tracing::info!(runs = queued.len(), "queued the syncs whose slot has come");
                metrics.add(|m| m.scheduled += queued.len() as u64);
                // More may be due: look again at once.
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %error_text(&e), "the scheduler could not queue due syncs")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stopping(&mut shutdown) => return,
        }
    }
}

async fn work(
    worker: usize,
    engine: Engine,
    options: ServiceOptions,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let owner = RunOwner::this_process();
    let store = engine.store().clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let claims = match store.claim_runs(&owner, 1, engine.options().lease).await {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(worker, error = %error_text(&e), "could not claim a run");
                Vec::new()
            }
        };
        let Some(claim) = claims.into_iter().next() else {
            tokio::select! {
                _ = tokio::time::sleep(options.poll) => {}
                _ = stopping(&mut shutdown) => return,
            }
            continue;
        };
        metrics.add(|m| m.claims += 1);
        let started = Instant::now();
        let run_id = claim.lease.run_id;
        tracing::info!(
            worker,
            run = run_id,
            source = claim.source_id,
            attempt = claim.attempt,
            "claimed a run"
        );
        // Boxed, so that it can be dropped (rolling back what it has not committed) before
        // its run is given back.
        let mut execute = Box::pin(engine.execute_watched(&claim));
        let mut grace_over = Box::pin(async {
            stopping(&mut shutdown.clone()).await;
            tokio::time::sleep(options.grace).await;
        });
        tokio::select! {
            outcome = &mut execute => match outcome {
                Ok(outcome) => {
                    metrics.record(&outcome, started.elapsed());
                    tracing::info!(worker, run = run_id, status = outcome.status.as_str(), "run ended");
                }
                Err(e) => {
                    metrics.record(&RunOutcome {
                        run_id,
                        kind: RunKind::Sync,
                        status: RunStatus::Failed,
                        plan: Default::default(),
                        stats: Default::default(),
                        error: None,
                        retry_in_secs: None,
                        remedy: None,
                    }, started.elapsed());
                    tracing::warn!(worker, run = run_id, error = %error_text(&e), "run ended with an error");
                }
            },
            _ = &mut grace_over => {
                // The run did not finish within the grace period: dropping it rolls back
                // what it had not committed, and the queue gets it back.
                drop(execute);
                let note = "the worker running it was stopped before it finished; queued again";
                match store.release_run(&claim.lease, Duration::ZERO, Some(note)).await {
                    Ok(true) => tracing::info!(worker, run = run_id, "gave a run back to the queue"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(worker, run = run_id, error = %error_text(&e), "could not give a run back; its lease will expire"),
                }
                return;
            }
        }
    }
}
