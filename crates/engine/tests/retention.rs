//! Removed users: restored within the retention period (by hand, or because the tenant
//! lists them again: the same entry comes back), purged after it by the daily job, once;
//! and the audit log: one entry per change, by whom, in the change's transaction.

mod common;

use std::time::Duration;

use common::*;
use usersync_core::{MailboxType, UserStatus};
use usersync_engine::{AuditRequest, Engine, EngineOptions, NewUser, NoProgress};
use usersync_sim::SimConfig;
use usersync_store::{AuditEntry, RunStatus};

const DAY: Duration = Duration::from_secs(86_400);

fn engine_of(w: &World, actor: &str) -> Engine {
    Engine::new(
        w.store.clone(),
        EngineOptions {
            actor: actor.into(),
            ..w.engine.options().clone()
        },
    )
}

async fn log(engine: &Engine) -> Vec<AuditEntry> {
    query(engine, AuditRequest::default(), 100_000).await
}

async fn query(engine: &Engine, request: AuditRequest, limit: i64) -> Vec<AuditEntry> {
    engine
        .audit(&AuditRequest { limit, ..request })
        .await
        .unwrap()
}

async fn entry_of(w: &World, address: &str) -> usersync_core::DirectoryUser {
    w.store
        .users(w.customer, true)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.address.as_str() == address)
        .unwrap_or_else(|| panic!("{address} is not in the directory"))
}

async fn restored_within_retention_purged_after_it(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 10,
            ..SimConfig::default()
        },
    )
    .await;
    let alice = engine_of(&w, "alice");
    let anne_id = w.add("Anne Back", "anne.back", "Sales");
    let bob_id = w.add("Bob Gone", "bob.gone", "Sales");
    let anne = format!("anne.back@{}", w.domain);
    let bob = format!("bob.gone@{}", w.domain);
    assert_eq!(
        alice.sync(w.source, &NoProgress).await.unwrap().status,
        RunStatus::Succeeded
    );
    let first = entry_of(&w, &anne).await;

    // Both leave the tenant: removed, kept.
    w.sim.tenant().delete_user(&anne_id).unwrap();
    w.sim.tenant().delete_user(&bob_id).unwrap();
    alice.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(entry_of(&w, &anne).await.status, UserStatus::Removed);
    assert_eq!(entry_of(&w, &bob).await.status, UserStatus::Removed);

    // Anne comes back in the tenant (a new account, same address) within the period:
    // the same entry is restored, with its group and services, not a new one.
    w.add("Anne Back", "anne.back", "Sales");
    let back = alice.sync(w.source, &NoProgress).await.unwrap();
    assert!(back.plan.add.iter().all(|u| u.address.as_str() != anne));
    assert!(
        back.plan
            .update
            .iter()
            .any(|u| u.address.as_str() == anne && u.restored)
    );
    let again = entry_of(&w, &anne).await;
    assert_eq!(again.status, UserStatus::Active);
    assert_eq!(again.id, first.id, "the same entry");
    assert_eq!((again.group, again.services), (first.group, first.services));

    // A person restores Bob: active, kept by hand (no source manages it), and the next
    // sync leaves it alone although the tenant does not list it.
    let restored = alice.restore_user("contoso", &bob).await.unwrap();
    assert_eq!(restored.status, UserStatus::Active);
    assert_eq!(restored.source_id, None);
    alice.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(entry_of(&w, &bob).await.status, UserStatus::Active);
    let error = alice.restore_user("contoso", &bob).await.unwrap_err();
    assert_eq!(
        error.kind(),
        usersync_engine::ErrorKind::Conflict,
        "{error}"
    );
    let error = alice
        .restore_user("contoso", &format!("nobody@{}", w.domain))
        .await
        .unwrap_err();
    assert_eq!(
        error.kind(),
        usersync_engine::ErrorKind::NotFound,
        "{error}"
    );

    // The tenant lists Bob again: its source takes the hand-kept entry over; then Bob
    // leaves the tenant again and is removed again.
    w.add("Bob Gone", "bob.gone", "Sales");
    alice.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(
        entry_of(&w, &bob).await.source_id,
        Some(w.source),
        "the tenant lists it again: its source takes it over"
    );
    let bob_again = w
        .sim
        .tenant()
        .users()
        .into_iter()
        .find(|u| u.user_principal_name.starts_with("bob.gone@"))
        .unwrap()
        .id;
    w.sim.tenant().delete_user(&bob_again).unwrap();
    alice.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(entry_of(&w, &bob).await.status, UserStatus::Removed);

    // The first purge of this database stamps and purges nothing yet; later the same day
    // nobody purges again; 30 days after the removal, one of two racing purges deletes
    // Bob for good.
    let first_purge = w.store.purge_due().await.unwrap().expect("due at first");
    assert!(first_purge.purged.is_empty(), "{first_purge:?}");
    assert!(w.store.purge_due().await.unwrap().is_none(), "once a day");
    w.store.advance_clock(DAY * 29);
    let early = w.store.purge_due().await.unwrap().expect("a day later");
    assert!(early.purged.is_empty(), "29 days are within 30: {early:?}");
    w.store.advance_clock(DAY + Duration::from_secs(60));
    let (a, b) = tokio::join!(w.store.purge_due(), w.store.purge_due());
    let reports: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(reports.len(), 1, "one process purges: {reports:?}");
    assert_eq!(
        reports[0].purged,
        vec![(w.customer, bob.clone())],
        "only Bob was removed 30 days ago"
    );
    assert!(!w.addresses(true).await.contains(&bob), "purged for good");
    let purge_entries: Vec<_> = log(&alice)
        .await
        .into_iter()
        .filter(|e| e.action == "user.purge")
        .collect();
    assert_eq!(purge_entries.len(), 1);
    assert_eq!(
        (
            purge_entries[0].actor.as_str(),
            purge_entries[0].object.as_str()
        ),
        ("retention", bob.as_str())
    );

    // After the purge, the address coming back is a new entry.
    w.add("Bob Gone", "bob.gone", "Sales");
    let fresh = alice.sync(w.source, &NoProgress).await.unwrap();
    assert!(fresh.plan.add.iter().any(|u| u.address.as_str() == bob));
    w.close().await;
}

async fn a_shorter_retention_purges_sooner(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 5,
            ..SimConfig::default()
        },
    )
    .await;
    let carol_id = w.add("Carol Short", "carol.short", "Sales");
    let carol = format!("carol.short@{}", w.domain);
    w.engine.sync(w.source, &NoProgress).await.unwrap();
    let customer = w
        .engine
        .set_customer("Contoso", &["retention=2d".into()])
        .await
        .unwrap();
    assert_eq!(customer.retention_days, 2);
    let error = w
        .engine
        .set_customer("Contoso", &["retention=forever".into()])
        .await
        .unwrap_err();
    assert_eq!(error.field().as_deref(), Some("retention"), "{error}");
    w.sim.tenant().delete_user(&carol_id).unwrap();
    w.engine.sync(w.source, &NoProgress).await.unwrap();
    w.store.advance_clock(DAY * 2 + Duration::from_secs(5));
    let report = w.store.purge_due().await.unwrap().unwrap();
    assert_eq!(report.purged, vec![(w.customer, carol.clone())]);
    w.close().await;
}

async fn every_change_is_audited_with_its_actor(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 12,
            ..SimConfig::default()
        },
    )
    .await;
    let alice = engine_of(&w, "alice");
    let bob = engine_of(&w, "bob");
    let before = log(&alice).await.len();

    bob.add_customer("Fabrikam").await.unwrap();
    alice
        .add_domain("Fabrikam", "fabrikam.example")
        .await
        .unwrap();
    alice.add_group("Fabrikam", "Staff").await.unwrap();
    alice
        .add_user(NewUser {
            customer: "Fabrikam".into(),
            address: "desk@fabrikam.example".into(),
            display_name: Some("Front Desk".into()),
            mailbox_type: MailboxType::Shared,
        })
        .await
        .unwrap();
    alice
        .set_source_options(w.source, &["interval=2h".into(), "auto_sync=true".into()])
        .await
        .unwrap();
    let rule = alice
        .add_filter_rule(w.source, "Sales", "jobTitle equals Sales", true)
        .await
        .unwrap();
    alice
        .add_filter_rule(w.source, "Main", "jobTitle equals Boss", false)
        .await
        .unwrap();
    alice.move_filter_rule(w.source, rule.id, 2).await.unwrap();
    alice.remove_filter_rule(w.source, rule.id).await.unwrap();

    let entries = log(&alice).await;
    let people: Vec<(&str, &str, &str)> = entries[..entries.len() - before]
        .iter()
        .rev()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.object.as_str()))
        .collect();
    let source = format!("source #{}", w.source);
    let rule_name = format!("filter rule {} of source #{}", rule.id, w.source);
    assert_eq!(
        people,
        vec![
            ("bob", "customer.add", "Fabrikam"),
            ("alice", "domain.add", "fabrikam.example"),
            ("alice", "group.add", "Staff"),
            ("alice", "user.add", "desk@fabrikam.example"),
            ("alice", "source.set", source.as_str()),
            ("alice", "group.add", "Sales"),
            ("alice", "filter.add", rule_name.as_str()),
            (
                "alice",
                "filter.add",
                &*format!("filter rule {} of source #{}", rule.id + 1, w.source)
            ),
            ("alice", "filter.move", rule_name.as_str()),
            ("alice", "filter.remove", rule_name.as_str()),
        ]
    );
    let set = entries.iter().find(|e| e.action == "source.set").unwrap();
    assert_eq!(
        set.before.as_ref().unwrap()["options.interval_minutes"],
        serde_json::json!(360)
    );
    assert_eq!(
        set.after.as_ref().unwrap()["options.interval_minutes"],
        serde_json::json!(120)
    );
    let desk = entries.iter().find(|e| e.action == "user.add").unwrap();
    assert_eq!(
        desk.after.as_ref().unwrap()["billable"],
        false,
        "a shared mailbox is not billed"
    );

    // A run's changes: one entry per user it adds, by the run, in its transaction.
    let outcome = alice.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    let by_run: Vec<_> = log(&alice)
        .await
        .into_iter()
        .filter(|e| e.run_id == Some(outcome.run_id))
        .collect();
    assert_eq!(
        by_run.iter().filter(|e| e.action == "user.add").count(),
        outcome.plan.add.len()
    );
    assert!(outcome.plan.add.len() >= 5);
    assert!(
        by_run
            .iter()
            .any(|e| e.action == "domain.set" && e.object == w.domain),
        "the first sync switched on the domain's protection: {by_run:?}"
    );
    assert!(
        by_run
            .iter()
            .all(|e| e.actor == "alice" && e.customer_id == Some(w.customer))
    );

    // A failed change writes no entry: a duplicate customer.
    let count = log(&alice).await.len();
    assert!(bob.add_customer("fabrikam").await.is_err());
    assert_eq!(log(&alice).await.len(), count);

    // Filters by customer, since and limit.
    let fabrikam = query(
        &alice,
        AuditRequest {
            customer: Some("Fabrikam".into()),
            ..Default::default()
        },
        100,
    )
    .await;
    assert_eq!(fabrikam.len(), 4);
    let since = |text: &str| AuditRequest {
        since: Some(text.into()),
        ..Default::default()
    };
    let newest = query(&alice, since("1h"), 2).await;
    assert_eq!(newest.len(), 2);
    assert!(newest[0].id > newest[1].id, "newest first");
    let none = query(&alice, since("2999-01-01"), 10).await;
    assert!(none.is_empty());
    w.close().await;
}

/// A first sync of thousands writes its entries as it goes (a few thousand at a time):
/// every one of them is there, once.
async fn a_large_first_sync_logs_every_user_once(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 2600,
            ..SimConfig::default()
        },
    )
    .await;
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert!(outcome.plan.add.len() > 2000, "{}", outcome.plan.add.len());
    let entries = log(&w.engine).await;
    let mut added: Vec<&str> = entries
        .iter()
        .filter(|e| e.run_id == Some(outcome.run_id) && e.action == "user.add")
        .map(|e| e.object.as_str())
        .collect();
    added.sort_unstable();
    let mut planned: Vec<&str> = outcome
        .plan
        .add
        .iter()
        .map(|u| u.address.as_str())
        .collect();
    planned.sort_unstable();
    assert_eq!(added, planned);
    w.close().await;
}

on_both_backends!(
    a_large_first_sync_logs_every_user_once,
    restored_within_retention_purged_after_it,
    a_shorter_retention_purges_sooner,
    every_change_is_audited_with_its_actor,
);
