//! The service: the scheduler queues a due source and a worker syncs it (with the test
//! clock), failures count towards "needs attention", and a tenant that refuses or returns
//! nobody removes nobody.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use usersync_core::UserStatus;
use usersync_engine::{Metrics, NoProgress, ServiceOptions, run_service};
use usersync_sim::SimConfig;
use usersync_store::{RunStatus, SecretString};

/// How many syncs of the source succeeded.
async fn succeeded(store: &usersync_store::Store, source: i64) -> usize {
    store
        .list_runs(Some(source), &[RunStatus::Succeeded], 10)
        .await
        .unwrap()
        .len()
}

/// Waits (polling) until `check` holds, up to 60 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_due_source_is_synced_by_the_service_and_not_before(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 30,
            ..SimConfig::default()
        },
    )
    .await;
    w.set(&["auto_sync=true", "interval=1h"]).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let service = tokio::spawn(run_service(
        w.engine.clone(),
        ServiceOptions {
            workers: 2,
            scheduler: true,
            poll: Duration::from_millis(50),
            grace: Duration::from_secs(5),
            notifications: None,
        },
        metrics.clone(),
        stopped,
    ));
    // The first slot is at most a tenth of the interval away: nothing before it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = w.store.list_runs(Some(w.source), &[], 10).await.unwrap();
    assert!(
        early.len() <= 1,
        "at most the first slot (jitter may put it at once): {early:?}"
    );
    w.store.advance_clock(Duration::from_secs(361));
    let store = w.store.clone();
    let source = w.source;
    eventually("the first scheduled sync", || {
        let store = store.clone();
        async move { succeeded(&store, source).await == 1 }
    })
    .await;
    assert!(
        !w.addresses(false).await.is_empty(),
        "the scheduled sync applied"
    );
    // The next slot is one interval (plus jitter) later: nothing in between.
    w.store.advance_clock(Duration::from_secs(1800));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        w.store
            .list_runs(Some(w.source), &[], 10)
            .await
            .unwrap()
            .len(),
        1
    );
    w.store.advance_clock(Duration::from_secs(2200));
    eventually("the second scheduled sync", || {
        let store = store.clone();
        async move { succeeded(&store, source).await == 2 }
    })
    .await;
    let runs = w.store.list_runs(Some(w.source), &[], 10).await.unwrap();
    assert!(runs.iter().all(|r| r.reason == "schedule"), "{runs:?}");
    assert_eq!(metrics.snapshot().scheduled, 2);
    stop.send(true).unwrap();
    service.await.unwrap();
    w.close().await;
}

async fn three_failures_in_a_row_need_attention_and_a_success_clears_it(url: String) {
    let w = world(url, SimConfig::default()).await;
    w.set(&["auto_sync=true", "interval=1h"]).await;
    // Every read of the users fails (HTTP 500, not a throttle).
    w.sim
        .inject_fault(usersync_sim::Fault::status("/v1.0/users", 500));
    for n in 1..=3 {
        let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
        assert_eq!(outcome.status, RunStatus::Failed);
        let health = w.store.source_health(w.source).await.unwrap();
        assert_eq!(health.failures, n);
        assert_eq!(health.attention.is_some(), n == 3, "after {n} failures");
    }
    let health = w.store.source(w.source).await.unwrap().health;
    assert!(health.attention.unwrap().contains("500"));
    // Retried daily while it needs attention.
    let next = health.next_run_at.unwrap();
    let next = time_of(&next) - w.store.clock().await.unwrap();
    assert!((86_000..=96_000).contains(&next), "next try in {next} s");
    w.sim.clear_faults();
    let ok = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(ok.status, RunStatus::Succeeded);
    let health = w.store.source_health(w.source).await.unwrap();
    assert_eq!((health.failures, health.attention), (0, None));
    w.close().await;
}

async fn a_refused_tenant_needs_attention_at_once_and_removes_nobody(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 40,
            ..SimConfig::default()
        },
    )
    .await;
    let first = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(first.status, RunStatus::Succeeded);
    let synced = w.addresses(false).await.len();
    // Consent revoked: 403 on every read.
    w.sim
        .set_denied_permissions(&["User.Read.All", "Directory.Read.All"]);
    let refused = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(refused.status, RunStatus::Failed);
    let health = w.store.source_health(w.source).await.unwrap();
    assert_eq!(health.failures, 1);
    assert!(
        health.attention.is_some(),
        "a missing permission needs attention at once"
    );
    assert_eq!(w.addresses(false).await.len(), synced, "nobody removed");
    w.sim.set_denied_permissions(&[]);

    // The tenant answers again, but lists nobody: nobody is removed, the run is held.
    for user in w.sim.tenant().users() {
        w.sim.tenant().delete_user(&user.id).unwrap();
    }
    let empty = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(empty.status, RunStatus::Held, "{:?}", empty.error);
    assert!(empty.error.unwrap().contains("no users at all"));
    assert_eq!(w.addresses(false).await.len(), synced, "nobody removed");
    let health = w.store.source_health(w.source).await.unwrap();
    assert!(health.attention.is_some());
    assert_eq!(health.hold_run_id, Some(empty.run_id));
    // A wrong secret is a refusal too.
    w.engine
        .set_source_secret(w.source, SecretString::new("wrong"))
        .await
        .unwrap();
    let wrong = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(wrong.status, RunStatus::Failed);
    assert!(
        w.store
            .users(w.customer, true)
            .await
            .unwrap()
            .iter()
            .all(|u| u.status == UserStatus::Active)
    );
    w.close().await;
}

fn time_of(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

on_both_backends!(
    a_due_source_is_synced_by_the_service_and_not_before,
    three_failures_in_a_row_need_attention_and_a_success_clears_it,
    a_refused_tenant_needs_attention_at_once_and_removes_nobody,
);
