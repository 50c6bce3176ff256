//! Whole syncs against the Microsoft 365 simulator, each on SQLite and on PostgreSQL.

mod common;

use common::*;
use usersync_core::{EmailMethod, MailboxType, UserStatus};
use usersync_engine::NoProgress;
use usersync_sim::{Fault, SimConfig, SimUser, Throttle};
use usersync_store::{RunStatus, SecretString};

async fn a_first_sync_imports_the_tenant_by_the_mapping_rules(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 120,
            seed: 3,
            ..SimConfig::default()
        },
    )
    .await;
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    let users = w.store.users(w.customer, false).await.unwrap();
    assert_eq!(users.len(), outcome.plan.add.len());
    assert!(!users.is_empty());

    let mail_domains = w.sim.info().mail_domains.clone();
    let tenant = w.sim.tenant();
    for user in &users {
        let address = user.address.as_str();
        assert_eq!(address, address.to_lowercase());
        assert!(
            mail_domains.iter().any(|d| user.address.domain() == d),
            "{address}"
        );
        let mut sorted = user.aliases.clone();
        sorted.sort();
        assert_eq!(user.aliases, sorted);
        assert!(user.aliases.iter().all(|a| !a.is_onmicrosoft()));
        assert_eq!(user.status, UserStatus::Active);
        assert_eq!(user.source_id, Some(w.source));
        // The entry's address is the tenant object's SMTP primary (rule 2's default).
        let object = user.source_object_id.as_deref().unwrap();
        if let Some(sim_user) = tenant.user(object) {
            let expected = sim_user
                .primary_smtp()
                .map(str::to_string)
                .or(sim_user.mail.clone())
                .unwrap_or(sim_user.user_principal_name.clone());
            assert_eq!(address, expected.to_lowercase());
            // Rule 5: only licensed, enabled, regular user mailboxes are billable.
            let licensed = !sim_user.assigned_licenses.is_empty();
            assert_eq!(
                user.billable,
                user.mailbox_type == MailboxType::User && licensed && sim_user.account_enabled,
                "{address}"
            );
        }
    }
    // Every kind of mailbox the tenant has shows up with its type.
    for kind in [
        MailboxType::User,
        MailboxType::Shared,
        MailboxType::DistributionList,
        MailboxType::Group,
    ] {
        assert!(users.iter().any(|u| u.mailbox_type == kind), "no {kind}");
    }
    // Guests and onmicrosoft-only users are skipped with a reason.
    assert!(outcome.plan.skip.iter().all(|s| !s.reason.is_empty()));

    let again = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert!(
        again.plan.is_empty(),
        "an unchanged tenant changes nothing: {:?}",
        again.plan
    );
    w.close().await;
}

async fn preview_reads_and_plans_but_writes_nothing(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 30,
            ..SimConfig::default()
        },
    )
    .await;
    let preview = w.engine.preview(w.source, &NoProgress).await.unwrap();
    assert_eq!(preview.status, RunStatus::Succeeded);
    assert!(!preview.plan.add.is_empty());
    assert!(w.addresses(true).await.is_empty());
    let run = w.store.run(preview.run_id).await.unwrap();
    assert_eq!(run.added as usize, preview.plan.add.len());
    assert_eq!(run.plan.unwrap().add.len(), preview.plan.add.len());
    w.close().await;
}

async fn a_user_deleted_in_the_tenant_is_removed_on_the_next_sync_and_kept_as_removed(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 40,
            ..SimConfig::default()
        },
    )
    .await;
    let first = w.engine.sync(w.source, &NoProgress).await.unwrap();
    let victim = first
        .plan
        .add
        .iter()
        .find(|u| u.mailbox_type == MailboxType::User)
        .unwrap();
    w.sim
        .tenant()
        .delete_user(victim.source_object_id.as_deref().unwrap())
        .unwrap();
    let second = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(second.plan.remove.len(), 1);
    assert_eq!(second.plan.remove[0].address, victim.address);
    assert!(
        !w.addresses(false)
            .await
            .contains(&victim.address.to_string())
    );
    let all = w.store.users(w.customer, true).await.unwrap();
    let kept = all.iter().find(|u| u.address == victim.address).unwrap();
    assert_eq!(kept.status, UserStatus::Removed);
    w.close().await;
}

async fn the_deletion_safeguard_stops_mass_removals_until_confirmed(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 80,
            ..SimConfig::default()
        },
    )
    .await;
    let first = w.engine.sync(w.source, &NoProgress).await.unwrap();
    let tenant = w.sim.tenant();
    let victims: Vec<_> = first
        .plan
        .add
        .iter()
        .filter(|u| u.mailbox_type == MailboxType::User)
        .take(25)
        .collect();
    assert_eq!(victims.len(), 25);
    for v in &victims {
        tenant
            .delete_user(v.source_object_id.as_deref().unwrap())
            .unwrap();
    }
    // A newcomer in the same run: adds are not held with the removals.
    let newcomer = tenant.new_member("Nora Newcomer");
    tenant.add_user(newcomer).unwrap();
    let before = w.store.users(w.customer, true).await.unwrap();
    let held = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(held.status, RunStatus::Held);
    assert!(
        held.error
            .as_deref()
            .unwrap()
            .contains("deletion safeguard"),
        "{:?}",
        held.error
    );
    assert_eq!(held.plan.held.len(), 25);
    assert_eq!(held.plan.add.len(), 1, "the newcomer is added at once");
    let after = w.store.users(w.customer, true).await.unwrap();
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(
        after
            .iter()
            .filter(|u| u.status == UserStatus::Removed)
            .count(),
        0,
        "nobody removed"
    );
    let recorded = w.store.run(held.run_id).await.unwrap();
    assert_eq!(recorded.status, RunStatus::Held);
    assert_eq!(
        recorded.held, 25,
        "the held removals are kept to be checked"
    );
    assert_eq!(
        w.store.source_health(w.source).await.unwrap().hold_run_id,
        Some(held.run_id)
    );

    // While the hold lasts, the next run holds its removals too.
    let again = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(again.status, RunStatus::Held);
    assert_eq!(again.plan.held.len(), 25);

    // The confirmation reads the tenant again and applies the held removals it still
    // agrees with.
    let confirmed = w.engine.confirm(again.run_id, &NoProgress).await.unwrap();
    assert_eq!(confirmed.status, RunStatus::Succeeded);
    assert_eq!(confirmed.plan.remove.len(), 25);
    assert_eq!(w.addresses(true).await.len(), before.len() + 1);
    assert_eq!(w.addresses(false).await.len(), before.len() + 1 - 25);
    assert_eq!(
        w.store.source_health(w.source).await.unwrap().hold_run_id,
        None,
        "the hold is over"
    );
    let err = w
        .engine
        .confirm(again.run_id, &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no longer held"), "{err}");
    w.close().await;
}

async fn throttling_mid_paging_still_gives_the_right_result(url: String) {
    let calm = world(
        url.clone(),
        SimConfig {
            users: 150,
            seed: 9,
            page_size_cap: Some(20),
            ..SimConfig::default()
        },
    )
    .await;
    let expected = calm
        .engine
        .preview(calm.source, &NoProgress)
        .await
        .unwrap()
        .plan;
    calm.close().await;

    let url2 = format!("{url}_t");
    let url2 = if url.starts_with("sqlite") {
        usersync_store::testing::fresh_sqlite_url()
    } else {
        url2
    };
    let busy = world(
        url2,
        SimConfig {
            users: 150,
            seed: 9,
            page_size_cap: Some(20),
            throttle: Throttle::every_nth(4, 1),
            ..SimConfig::default()
        },
    )
    .await;
    let outcome = busy.engine.sync(busy.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    assert!(
        outcome.stats.throttled > 0,
        "the simulator throttled nothing"
    );
    let got: Vec<_> = outcome
        .plan
        .add
        .iter()
        .map(|u| (&u.address, &u.aliases, u.mailbox_type))
        .collect();
    let want: Vec<_> = expected
        .add
        .iter()
        .map(|u| (&u.address, &u.aliases, u.mailbox_type))
        .collect();
    assert_eq!(got, want);
    assert_eq!(busy.addresses(false).await.len(), expected.add.len());
    busy.close().await;
}

async fn a_page_that_keeps_failing_applies_nothing(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 60,
            page_size_cap: Some(10),
            ..SimConfig::default()
        },
    )
    .await;
    w.engine.sync(w.source, &NoProgress).await.unwrap();
    let before = w.store.users(w.customer, true).await.unwrap();
    // Changes that a sync would apply (more than one page of the delta round, whose pages
    // hold ten), and a later page that never loads.
    let tenant = w.sim.tenant();
    for i in 0..15 {
        let newcomer = tenant.new_member(&format!("Nadia Newcomer {i}"));
        tenant.add_user(newcomer).unwrap();
    }
    w.sim
        .inject_fault(Fault::status("/v1.0/users", 500).with_query("$skiptoken"));
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.clone().unwrap();
    assert!(error.contains("500"), "{error}");
    assert_eq!(w.store.users(w.customer, true).await.unwrap(), before);
    let run = w.store.run(outcome.run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some(error.as_str()));
    assert_eq!(w.store.source_health(w.source).await.unwrap().failures, 1);

    // Unavailable (503 after the client's own retries): the run goes back to the queue
    // for later, spends no attempt, and is not counted as a failure of the source.
    w.sim.clear_faults();
    w.sim
        .inject_fault(Fault::status("/v1.0/users", 503).with_query("$skiptoken"));
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Queued, "{:?}", outcome.error);
    assert!(outcome.retry_in_secs.is_some());
    assert_eq!(w.store.users(w.customer, true).await.unwrap(), before);
    let run = w.store.run(outcome.run_id).await.unwrap();
    assert_eq!((run.status, run.attempts), (RunStatus::Queued, 0));
    assert_eq!(w.store.source_health(w.source).await.unwrap().failures, 1);
    w.close().await;
}

async fn a_wrong_client_secret_gives_a_clear_error_and_changes_nothing(url: String) {
    let w = world_with(url, SimConfig::default(), |new| {
        new.client_secret = SecretString::new("not-the-secret");
    })
    .await;
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.unwrap();
    assert!(error.contains("AADSTS7000215"), "{error}");
    assert!(error.to_lowercase().contains("secret"), "{error}");
    assert!(
        !error.contains("not-the-secret"),
        "the secret leaked: {error}"
    );
    assert!(w.addresses(true).await.is_empty());
    w.close().await;
}

async fn an_unmanaged_user_with_a_tenant_address_is_linked(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 25,
            ..SimConfig::default()
        },
    )
    .await;
    let preview = w.engine.preview(w.source, &NoProgress).await.unwrap();
    let target = preview.plan.add[0].clone();
    let by_hand = usersync_core::DirectoryUser {
        source_id: None,
        source_object_id: None,
        aliases: vec![],
        display_name: "Typed in by hand".into(),
        ..target.clone()
    };
    w.store.add_manual_user(w.customer, &by_hand).await.unwrap();
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.plan.linked(), 1);
    assert_eq!(outcome.plan.add.len(), preview.plan.add.len() - 1);
    let users = w.store.users(w.customer, false).await.unwrap();
    let linked = users.iter().find(|u| u.address == target.address).unwrap();
    assert_eq!(linked.source_id, Some(w.source));
    assert_eq!(linked.display_name, target.display_name);
    w.close().await;
}

async fn the_email_method_upn_uses_the_user_principal_name(url: String) {
    let w = world_with(
        url,
        SimConfig {
            users: 30,
            ..SimConfig::default()
        },
        |new| {
            new.settings.options.email_method = EmailMethod::Upn;
        },
    )
    .await;
    let tenant = w.sim.tenant();
    let domain = w.sim.info().mail_domains[0].clone();
    let user = SimUser::member("Una Upn", &format!("una.primary@{domain}"))
        .with_upn(&format!("Una.Login@{domain}"));
    tenant.add_user(user).unwrap();
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    let una = outcome
        .plan
        .add
        .iter()
        .find(|u| u.display_name == "Una Upn")
        .unwrap();
    assert_eq!(una.address.as_str(), format!("una.login@{domain}"));
    assert!(
        una.aliases
            .iter()
            .any(|a| a.as_str() == format!("una.primary@{domain}"))
    );
    w.close().await;
}

async fn the_https_path_works_with_the_simulators_certificate(url: String) {
    let dir = std::env::temp_dir().join(format!("usersync-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("sim.pem");
    let config = SimConfig {
        users: 20,
        tls: true,
        tls_cert_out: Some(cert.clone()),
        ..SimConfig::default()
    };
    // The certificate file exists only once the simulator started, so the source is
    // connected after start: world_with's tweak runs after Simulator::start.
    let w = world_with(url, config, |new| {
        new.settings.ca_file = Some(cert.clone());
    })
    .await;
    assert!(w.sim.info().graph_url.starts_with("https://"));
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    assert!(!outcome.plan.add.is_empty());
    w.close().await;
    std::fs::remove_dir_all(dir).ok();
}

/// Rule 2: an enabled, unlicensed account without `mail` or an `smtp:` proxy address has
/// no mailbox: it is skipped as `no_mailbox`, except with the email method upn.
async fn an_account_without_a_mailbox_is_skipped_unless_the_method_is_upn(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 30,
            seed: 31,
            ..SimConfig::default()
        },
    )
    .await;
    let upn = format!("printer.scanner@{}", w.domain);
    let mut account = SimUser::member("Printer Scanner", &upn);
    account.mail = None;
    account.proxy_addresses.clear();
    account.assigned_licenses.clear();
    account.user_purpose = None;
    let id = w.sim.tenant().add_user(account).unwrap();
    let preview = w.engine.preview(w.source, &NoProgress).await.unwrap();
    let skip = preview
        .plan
        .skip
        .iter()
        .find(|s| s.source_object_id == id)
        .expect("the account is skipped");
    assert_eq!(skip.code, "no_mailbox", "{skip:?}");
    assert!(!preview.plan.add.iter().any(|u| u.address.as_str() == upn));

    w.set(&["email_method=upn"]).await;
    let preview = w.engine.preview(w.source, &NoProgress).await.unwrap();
    assert!(
        preview.plan.add.iter().any(|u| u.address.as_str() == upn),
        "upn syncs accounts by their user principal name"
    );
    w.close().await;
}

/// A run's recorded figures include the apply, and `skipped` counts only objects that
/// were not synced: an alias left out of an added entry is a warning.
async fn a_run_records_its_apply_and_counts_only_real_skips(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 3000,
            seed: 32,
            ..SimConfig::default()
        },
    )
    .await;
    // Two new users: the second lists the first's address as an alias.
    let first = format!("pat.first@{}", w.domain);
    w.sim
        .tenant()
        .add_user(SimUser::member("Pat First", &first))
        .unwrap();
    let second = w
        .sim
        .tenant()
        .add_user(
            SimUser::member("Sam Second", &format!("sam.second@{}", w.domain)).with_alias(&first),
        )
        .unwrap();
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    assert!(
        !outcome
            .plan
            .skip
            .iter()
            .any(|s| s.source_object_id == second),
        "an added object is not skipped"
    );
    let warning = outcome
        .plan
        .warnings
        .iter()
        .find(|s| s.source_object_id == second)
        .expect("the dropped alias is a warning");
    assert_eq!(warning.code, "alias_conflict");
    assert!(warning.reason.contains("is the address of"), "{warning:?}");
    let run = w.store.run(outcome.run_id).await.unwrap();
    assert_eq!(run.skipped as usize, outcome.plan.skip.len());
    let stats = run.stats.unwrap();
    assert!(stats.apply_ms > 0, "{stats:?}");
    assert!(
        stats.duration_ms >= stats.read_ms + stats.plan_ms + stats.apply_ms,
        "{stats:?}"
    );
    w.close().await;
}

/// A progress that remembers what it was told.
#[derive(Default)]
struct Recorded {
    totals: std::sync::Mutex<Vec<u64>>,
    phases: std::sync::Mutex<Vec<String>>,
}

impl usersync_engine::Progress for Recorded {
    fn phase(&self, name: &str) {
        self.phases.lock().unwrap().push(name.to_string());
    }
    fn advance(&self, _count: usize) {}
    fn total(&self, total: u64) {
        self.totals.lock().unwrap().push(total);
    }
}

/// A long read knows its total from `/users/$count`, so a surface can show a bar with the
/// time left.
async fn a_read_tells_the_progress_its_total(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 250,
            seed: 33,
            ..SimConfig::default()
        },
    )
    .await;
    let progress = Recorded::default();
    let outcome = w.engine.preview(w.source, &progress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(*progress.totals.lock().unwrap(), vec![250]);
    assert!(
        progress
            .phases
            .lock()
            .unwrap()
            .contains(&"reading users and groups".to_string())
    );
    w.close().await;
}

/// A source whose sync is in progress is not removed under it.
async fn a_source_with_a_running_sync_is_not_removed(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 20,
            seed: 34,
            ..SimConfig::default()
        },
    )
    .await;
    let queued = w.engine.run_now(w.source).await.unwrap();
    let claim = w
        .store
        .claim_run(
            queued.run_id(),
            &usersync_store::RunOwner::this_process(),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
        .unwrap();
    let run = claim.lease.run_id;
    let err = w
        .engine
        .remove_source(w.source, true, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("run {run}")) && err.contains("is running"),
        "{err}"
    );
    assert!(w.store.source(w.source).await.unwrap().removed_at.is_none());
    w.close().await;
}

/// Generated tenants hold what real ones have: licensed shared and room mailboxes whose
/// sign-in is allowed, primary addresses that differ from `mail`, two objects claiming one
/// address, and aliases that are another object's address. Each syncs by the rules.
async fn real_world_oddities_sync_by_the_rules(url: String) {
    let w = world(
        url,
        SimConfig {
            users: 120,
            seed: 8,
            ..SimConfig::default()
        },
    )
    .await;
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    let users = w.store.users(w.customer, false).await.unwrap();
    let entry = |id: &str| {
        users
            .iter()
            .find(|u| u.source_object_id.as_deref() == Some(id))
    };
    let tenant = w.sim.tenant().users();
    let mail_domains = &w.sim.info().mail_domains;
    let in_domains = |a: &str| {
        mail_domains
            .iter()
            .any(|d| a.to_lowercase().ends_with(&format!("@{d}")))
    };

    // A shared or room mailbox with a licence and sign-in allowed: its mailbox purpose
    // types it, and it is not billed.
    let signing_in: Vec<_> = tenant
        .iter()
        .filter(|u| {
            u.account_enabled
                && !u.assigned_licenses.is_empty()
                && matches!(
                    u.user_purpose.map(|p| p.as_str()),
                    Some("shared") | Some("room")
                )
        })
        .collect();
    assert!(!signing_in.is_empty());
    for u in signing_in {
        let e = entry(&u.id).unwrap_or_else(|| panic!("{} not synced", u.display_name));
        assert_eq!(
            e.mailbox_type.as_str(),
            u.user_purpose.unwrap().as_str(),
            "{}",
            e.address
        );
        assert!(!e.billable, "{}", e.address);
    }

    // The primary SMTP address wins over a stale `mail`.
    let moved: Vec<_> = tenant
        .iter()
        .filter(|u| {
            u.mail.is_some()
                && u.primary_smtp()
                    .is_some_and(|p| Some(p) != u.mail.as_deref())
        })
        .filter(|u| in_domains(u.primary_smtp().unwrap()))
        .collect();
    assert!(!moved.is_empty());
    for u in moved {
        if let Some(e) = entry(&u.id) {
            assert_eq!(e.address.as_str(), u.primary_smtp().unwrap().to_lowercase());
        }
    }

    // Two objects claiming one address: one entry has it, the other is skipped and says why.
    let mut by_primary: std::collections::HashMap<String, Vec<&SimUser>> = Default::default();
    for u in tenant
        .iter()
        .filter(|u| u.user_type == usersync_sim::UserType::Member)
    {
        if let Some(p) = u.primary_smtp().filter(|p| in_domains(p)) {
            by_primary.entry(p.to_lowercase()).or_default().push(u);
        }
    }
    let shared: Vec<_> = by_primary.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(!shared.is_empty());
    for (address, claimants) in shared {
        assert_eq!(
            users
                .iter()
                .filter(|e| e.address.as_str() == address)
                .count(),
            1
        );
        let skipped = claimants
            .iter()
            .filter(|c| {
                outcome
                    .plan
                    .skip
                    .iter()
                    .any(|s| s.source_object_id == c.id && s.code == "duplicate_address")
            })
            .count();
        assert_eq!(skipped, claimants.len() - 1, "{address}");
    }

    // An alias that is another object's address stays with that object, with a warning.
    let primaries: std::collections::HashSet<String> = by_primary.keys().cloned().collect();
    let borrowing: Vec<_> = tenant
        .iter()
        .filter(|u| {
            u.proxy_addresses.iter().any(|p| {
                p.strip_prefix("smtp:")
                    .is_some_and(|a| primaries.contains(&a.to_lowercase()))
            })
        })
        .collect();
    assert!(!borrowing.is_empty());
    for u in borrowing {
        let Some(e) = entry(&u.id) else { continue };
        for a in &e.aliases {
            assert!(
                !users.iter().any(|o| o.address == *a),
                "{} keeps {a} as an alias, another entry's address",
                e.address
            );
        }
        assert!(
            outcome
                .plan
                .warnings
                .iter()
                .any(|s| s.source_object_id == u.id && s.code == "alias_conflict"),
            "{:?}",
            outcome.plan.warnings
        );
    }
    w.close().await;
}

/// What a directory entry is, as an operator compares two directories.
fn entries(users: &[usersync_core::DirectoryUser]) -> Vec<String> {
    let mut rows: Vec<String> = users
        .iter()
        .map(|u| {
            format!(
                "{} {:?} {} {} {} {:?}",
                u.address, u.aliases, u.mailbox_type, u.billable, u.group, u.source_object_id
            )
        })
        .collect();
    rows.sort();
    rows
}

async fn a_whole_read_writes_its_adds_while_its_pages_arrive(url: String) {
    let config = SimConfig {
        users: 300,
        seed: 11,
        page_size_cap: Some(25),
        ..SimConfig::default()
    };
    // (The tests' engine writes early whatever the read's size and pace.)
    let w = world(url, config.clone()).await;
    let user_adds = |store: usersync_store::Store, customer: i64| async move {
        store
            .audit_log(&usersync_store::AuditQuery {
                customer_id: Some(customer),
                since: None,
                before_id: None,
                limit: 100_000,
            })
            .await
            .unwrap()
            .iter()
            .filter(|e| e.action == "user.add")
            .count()
    };

    // A page late in the read fails: what was written beside it is rolled back, and the
    // failure is recorded (on SQLite, after the writes let go of the writer).
    w.sim
        .inject_fault(Fault::status("/v1.0/users", 500).with_query("$skiptoken"));
    let failed = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.error.as_deref().unwrap().contains("500"));
    assert!(w.store.users(w.customer, true).await.unwrap().is_empty());
    assert_eq!(user_adds(w.store.clone(), w.customer).await, 0);
    // So are the users' mirror objects written beside the adds.
    assert!(
        w.store
            .mirror_objects(w.source, None, None)
            .await
            .unwrap()
            .is_empty()
    );

    w.sim.clear_faults();
    // Without the tenant's count, the mailbox types of enabled, licensed users are asked
    // after the last page: users handed over before their type is known, planned and
    // mirrored again at the end.
    w.sim.inject_fault(Fault::status("/v1.0/users/$count", 400));
    let outcome = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    let early = outcome.stats.written_while_reading.unwrap_or(0) as usize;
    assert!(
        early > 0 && early <= outcome.plan.add.len(),
        "{early} of {} adds written while reading",
        outcome.plan.add.len()
    );
    let users = w.store.users(w.customer, false).await.unwrap();
    assert_eq!(users.len(), outcome.plan.add.len());
    // One audit entry per user added: none left of an early add planned again.
    assert_eq!(user_adds(w.store.clone(), w.customer).await, users.len());
    let run = w.store.run(outcome.run_id).await.unwrap();
    assert_eq!(
        run.stats.and_then(|s| s.written_while_reading),
        Some(early as u64)
    );

    // The same tenant planned and written after its read gives the same directory.
    let other = world(usersync_store::testing::fresh_sqlite_url(), config).await;
    let after = usersync_engine::Engine::new(
        other.store.clone(),
        usersync_engine::EngineOptions {
            early_writes_from: usize::MAX,
            ..usersync_engine::EngineOptions::default()
        },
    );
    let classic = after.sync(other.source, &NoProgress).await.unwrap();
    assert_eq!(classic.stats.written_while_reading, None);
    assert_eq!(classic.plan.add, outcome.plan.add);
    let theirs = other.store.users(other.customer, false).await.unwrap();
    assert_eq!(entries(&theirs), entries(&users));
    // And the same mirror, whose users went in beside the adds in the first case.
    let mirror = |store: usersync_store::Store, source: i64| async move {
        let mut objects: Vec<(String, String, serde_json::Value, bool)> = store
            .mirror_objects(source, None, None)
            .await
            .unwrap()
            .into_iter()
            .map(|o| {
                let mut data: serde_json::Value = serde_json::from_str(&o.data).unwrap();
                // (When each mailbox type was read differs.)
                if let Some(map) = data.as_object_mut() {
                    map.remove("t");
                }
                (o.kind, o.id, data, o.pending)
            })
            .collect();
        objects.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        objects
    };
    let ours = mirror(w.store.clone(), w.source).await;
    assert!(ours.iter().filter(|o| o.0 == "user").count() >= users.len());
    assert!(ours.iter().any(|o| o.2.get("p").is_some()), "types read");
    let theirs = mirror(other.store.clone(), other.source).await;
    assert_eq!(ours.len(), theirs.len());
    if let Some((a, b)) = ours.iter().zip(&theirs).find(|(a, b)| a != b) {
        panic!("mirrors differ: written beside the adds {a:?}, after the read {b:?}");
    }
    other.close().await;
    w.close().await;
}

on_both_backends!(
    a_whole_read_writes_its_adds_while_its_pages_arrive,
    real_world_oddities_sync_by_the_rules,
    a_read_tells_the_progress_its_total,
    a_source_with_a_running_sync_is_not_removed,
    an_account_without_a_mailbox_is_skipped_unless_the_method_is_upn,
    a_run_records_its_apply_and_counts_only_real_skips,
    a_first_sync_imports_the_tenant_by_the_mapping_rules,
    preview_reads_and_plans_but_writes_nothing,
    a_user_deleted_in_the_tenant_is_removed_on_the_next_sync_and_kept_as_removed,
    throttling_mid_paging_still_gives_the_right_result,
    the_deletion_safeguard_stops_mass_removals_until_confirmed,
    a_page_that_keeps_failing_applies_nothing,
    a_wrong_client_secret_gives_a_clear_error_and_changes_nothing,
    an_unmanaged_user_with_a_tenant_address_is_linked,
    the_email_method_upn_uses_the_user_principal_name,
    the_https_path_works_with_the_simulators_certificate,
);
