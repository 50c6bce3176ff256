//! The store's operations, each run on SQLite and on PostgreSQL.

use usersync_core::{
    DirectoryUser, DomainName, EmailAddress, MailboxType, Plan, PlannedUpdate, SourceKind,
    UserStatus,
};
use usersync_store::testing::{discard, open_fresh};
use usersync_store::{
    Apply, DomainOrigin, Enqueued, MirrorObject, MirrorWrite, NewJob, NewRun, NewSource, RunEnd,
    RunKind, RunLease, RunReason, RunStats, RunStatus, SecretString, Settle, Store, StoreError,
};

fn entry(address: &str, object: &str, source: i64) -> DirectoryUser {
    DirectoryUser {
        id: None,
        address: EmailAddress::parse(address).unwrap(),
        display_name: address.to_string(),
        given_name: Some("Given".into()),
        surname: None,
        mailbox_type: MailboxType::User,
        billable: true,
        aliases: vec![EmailAddress::parse(&format!("alias.{address}")).unwrap()],
        group: "Main".into(),
        source_id: Some(source),
        source_object_id: Some(object.into()),
        status: UserStatus::Active,
        manager: None,
        services: None,
        placed_by: None,
    }
}

async fn setup(store: &Store) -> (i64, i64) {
    let customer = store.add_customer("Contoso").await.unwrap();
    store
        .add_domain(
            customer.id,
            &DomainName::parse("contoso.com").unwrap(),
            DomainOrigin::Manual,
        )
        .await
        .unwrap();
    let source = store
        .add_source(NewSource {
            customer_id: customer.id,
            kind: SourceKind::Office365,
            tenant_id: "tenant-1".into(),
            settings: serde_json::json!({"client_id": "app"}),
            secret: Some(SecretString::new("very-secret-value")),
            refresh_token: None,
        })
        .await
        .unwrap();
    (customer.id, source.id)
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// A sync of the source, queued and claimed by this process.
async fn new_run(store: &Store, customer: i64, source: i64) -> RunLease {
    let _ = customer;
    let queued = store.enqueue_sync(&job(source)).await.unwrap();
    store
        .claim_run(
            queued.run_id(),
            &usersync_store::RunOwner::this_process(),
            LEASE,
        )
        .await
        .unwrap()
        .expect("claimed")
        .lease
}

fn job(source: i64) -> NewJob {
    NewJob {
        source_id: source,
        reason: RunReason::Manual,
        confirms: None,
        requested_by: "tester".into(),
    }
}

/// Applies `plan` as the run's success, from the directory as it is now.
async fn apply(
    store: &Store,
    lease: RunLease,
    customer: i64,
    source: i64,
    plan: &Plan,
    stats: &mut RunStats,
) -> Result<usersync_store::ApplyCounts, StoreError> {
    let (_, version) = store.directory_versioned(customer).await.unwrap();
    store
        .apply_plan(
            &Apply {
                lease,
                customer_id: customer,
                source_id: Some(source),
                plan,
                directory_version: version,
                status: RunStatus::Succeeded,
                error: None,
                settle: Settle::Succeeded { clears_hold: false },
                mirror: None,
                mirror_rows: None,
            },
            stats,
        )
        .await
}

async fn customers_domains_and_sources_are_kept_with_clear_conflicts(url: String) {
    let store = open_fresh(&url).await;
    let (customer, source) = setup(&store).await;
    let groups = store.list_groups(customer).await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].name, "Main");

    let again = store.add_customer("Contoso").await.unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again}");
    let other = store.add_customer("Fabrikam").await.unwrap();
    let taken = store
        .add_domain(
            other.id,
            &DomainName::parse("contoso.com").unwrap(),
            DomainOrigin::Manual,
        )
        .await
        .unwrap_err();
    assert!(taken.to_string().contains("Contoso"), "{taken}");
    let tenant_taken = store
        .add_source(NewSource {
            customer_id: other.id,
            kind: SourceKind::Office365,
            tenant_id: "tenant-1".into(),
            settings: serde_json::json!({}),
            secret: None,
            refresh_token: None,
        })
        .await
        .unwrap_err();
    assert!(
        tenant_taken.to_string().contains("'Contoso'"),
        "{tenant_taken}"
    );

    let record = store.source(source).await.unwrap();
    assert!(record.has_secret);
    assert!(!format!("{record:?}").contains("very-secret-value"));
    assert_eq!(
        store.source_secret(source).await.unwrap().unwrap().expose(),
        "very-secret-value"
    );
    let missing = store.customer_by_name("Nobody").await.unwrap_err();
    assert!(
        matches!(
            missing,
            StoreError::NotFound {
                what: "customer",
                ..
            }
        ),
        "{missing}"
    );
    assert_eq!(missing.to_string(), "customer 'Nobody' does not exist");
    store.close().await;
    discard(&url).await;
}

async fn a_plan_is_applied_whole_and_recorded_with_its_run(url: String) {
    let store = open_fresh(&url).await;
    let (customer, source) = setup(&store).await;
    let run = new_run(&store, customer, source).await;
    let plan = Plan {
        add: vec![
            entry("anne@contoso.com", "a", source),
            entry("bob@contoso.com", "b", source),
        ],
        ..Plan::default()
    };
    let mut stats = RunStats {
        read_users: 2,
        ..RunStats::default()
    };
    let counts = apply(&store, run, customer, source, &plan, &mut stats)
        .await
        .unwrap();
    assert_eq!(counts.added, 2);
    let users = store.users(customer, false).await.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0].address.as_str(), "anne@contoso.com");
    assert_eq!(users[0].aliases[0].as_str(), "alias.anne@contoso.com");
    assert_eq!(users[0].given_name.as_deref(), Some("Given"));
    assert!(users[0].billable);
    let recorded = store.run(run.run_id).await.unwrap();
    assert_eq!(recorded.status, RunStatus::Succeeded);
    assert_eq!(recorded.added, 2);
    assert_eq!(recorded.plan.unwrap().add.len(), 2);

    // Second run: update anne (new alias, new group), remove bob.
    let run2 = new_run(&store, customer, source).await;
    let anne = users[0].clone();
    let mut after = anne.clone();
    after.aliases = vec![];
    after.group = "Drivers".into();
    let mut changes = std::collections::BTreeMap::new();
    changes.insert(
        "aliases".to_string(),
        usersync_core::Change(
            usersync_core::plan::FieldValue::List(vec!["alias.anne@contoso.com".into()]),
            usersync_core::plan::FieldValue::List(vec![]),
        ),
    );
    let plan2 = Plan {
        update: vec![PlannedUpdate {
            address: anne.address.clone(),
            changes,
            linked: false,
            restored: false,
            id: anne.id.unwrap(),
            after: Some(after),
            unless_held: None,
        }],
        remove: vec![users[1].clone()],
        ..Plan::default()
    };
    apply(
        &store,
        run2,
        customer,
        source,
        &plan2,
        &mut RunStats::default(),
    )
    .await
    .unwrap();
    let active = store.users(customer, false).await.unwrap();
    assert_eq!(active.len(), 1);
    assert!(active[0].aliases.is_empty());
    assert_eq!(active[0].group, "Drivers");
    let all = store.users(customer, true).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].status, UserStatus::Removed);
    let runs = store.list_runs(Some(source), &[], 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![run2.run_id, run.run_id]
    );
    store.close().await;
    discard(&url).await;
}

async fn a_large_plan_is_recorded_in_parts_and_read_back_whole(url: String) {
    use sqlx::Connection;
    let store = open_fresh(&url).await;
    let (customer, source) = setup(&store).await;
    let run = new_run(&store, customer, source).await;
    // Text that does not compress away: the recorded plan takes more than one part.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        format!("{state:016x}")
    };
    let plan = Plan {
        skip: (0..60_000)
            .map(|i| usersync_core::Skip {
                source_object_id: noise(),
                name: format!("user {i} {}", noise()),
                code: "guest".into(),
                reason: noise(),
            })
            .collect(),
        ..Plan::default()
    };
    let mut stats = RunStats::default();
    apply(&store, run, customer, source, &plan, &mut stats)
        .await
        .unwrap();
    let recorded = store.run(run.run_id).await.unwrap();
    assert_eq!(recorded.skipped, 60_000);
    assert_eq!(recorded.plan.as_ref(), Some(&plan));
    let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
    let parts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM run_plans WHERE run_id = $1")
        .bind(run.run_id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(parts > 1, "{parts} part(s)");
    db.close().await.unwrap();
    store.close().await;
    discard(&url).await;
}

async fn a_plan_that_fails_part_way_applies_nothing(url: String) {
    let store = open_fresh(&url).await;
    let (customer, source) = setup(&store).await;
    let run = new_run(&store, customer, source).await;
    // 1,000 adds (three INSERT chunks) where the last collides with the first.
    let mut add: Vec<DirectoryUser> = (0..999)
        .map(|i| entry(&format!("user{i:04}@contoso.com"), &format!("o{i}"), source))
        .collect();
    add.push(entry("user0000@contoso.com", "dup", source));
    let plan = Plan {
        add,
        ..Plan::default()
    };
    let err = apply(
        &store,
        run,
        customer,
        source,
        &plan,
        &mut RunStats::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(store.users(customer, true).await.unwrap().is_empty());
    assert_eq!(
        store.run(run.run_id).await.unwrap().status,
        RunStatus::Running
    );
    store.close().await;
    discard(&url).await;
}

/// A schema newer than this binary is refused before any migration runs: nothing of ours
/// is created in the database.
async fn a_newer_schema_is_refused_before_anything_is_migrated(url: String) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    create_empty(&url).await;
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    for sql in [
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'from the future', 'x')",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    let err = Store::open(usersync_store::StoreOptions::new(&url))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("schema version 999"), "{err}");
    let customers = sqlx::query("SELECT 1 FROM customers")
        .fetch_all(&mut conn)
        .await;
    assert!(customers.is_err(), "no migration ran");
    conn.close().await.unwrap();
    discard(&url).await;
}

/// An empty database for a test that builds its own tables.
async fn create_empty(url: &str) {
    use sqlx::Connection;
    if let Some(path) = url.strip_prefix("sqlite://") {
        sqlx::AnyConnection::connect(&format!("sqlite://{path}?mode=rwc"))
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
        return;
    }
    let (server, name) = url.rsplit_once('/').unwrap();
    let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
}

/// A sync that read a source before it was removed cannot apply afterwards: its users
/// would belong to a source that no longer exists.
async fn a_run_of_a_source_removed_meanwhile_applies_nothing(url: String) {
    let store = open_fresh(&url).await;
    let (customer, source) = setup(&store).await;
    let run = new_run(&store, customer, source).await;
    store.remove_source_keeping_users(source).await.unwrap();
    let plan = Plan {
        add: vec![entry("anne@contoso.com", "a", source)],
        ..Plan::default()
    };
    let err = apply(
        &store,
        run,
        customer,
        source,
        &plan,
        &mut RunStats::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("was removed while this run"),
        "{err}"
    );
    assert!(store.users(customer, true).await.unwrap().is_empty());
    store.close().await;
    discard(&url).await;
}

/// When every secret is gone with its source, the database holds none: another key may
/// seal the next one, and the database then opens with that key.
async fn a_database_whose_secrets_are_all_gone_takes_a_new_key(url: String) {
    use usersync_store::KeySource;
    let store = open_with(&url, KeySource::Base64(KEY_A.into()))
        .await
        .unwrap();
    let source = add_source_with_secret(&store, "tenant-a").await;
    store.remove_source_keeping_users(source).await.unwrap();
    store.close().await;
    let store = open_with(&url, KeySource::Base64(KEY_B.into()))
        .await
        .unwrap();
    let again = add_source_with_secret(&store, "tenant-b").await;
    store.close().await;
    let store = open_with(&url, KeySource::Base64(KEY_B.into()))
        .await
        .unwrap();
    assert!(store.source_secret(again).await.unwrap().is_some());
    store.close().await;
    assert!(
        open_with(&url, KeySource::Base64(KEY_A.into()))
            .await
            .is_err()
    );
    discard(&url).await;
}

/// A first read's users' mirror objects written while it goes on, the rest with the
/// plan: those the rows leave out stay as written; the others fill whole statements.
async fn mirror_objects_written_early_stand_beside_those_written_with_the_plan(url: String) {
    #[derive(Debug)]
    struct Late(usize);
    impl usersync_store::MirrorRows for Late {
        fn len(&self) -> usize {
            self.0
        }
        fn rows(&self, range: std::ops::Range<usize>) -> Result<Vec<MirrorObject>, String> {
            // Every third was written early: left out.
            Ok(range
                .filter(|i| i % 3 != 0)
                .map(|i| object(i, "late"))
                .collect())
        }
    }
    fn object(i: usize, when: &str) -> MirrorObject {
        MirrorObject {
            kind: "user".into(),
            id: format!("u{i:05}"),
            data: format!("{{\"when\":\"{when}\"}}"),
            pending: i.is_multiple_of(2),
        }
    }
    let store = open_fresh(&url).await;
    let (customer, source) = setup(&store).await;
    let lease = new_run(&store, customer, source).await;
    let (_, version) = store.directory_versioned(customer).await.unwrap();
    let total = 10_001;
    let mut open = store.open_apply(lease, customer, version).await.unwrap();
    let early: Vec<MirrorObject> = (0..total)
        .filter(|i| i % 3 == 0)
        .map(|i| object(i, "early"))
        .collect();
    open.mirror(source, early).await.unwrap();
    let plan = Plan::default();
    let write = MirrorWrite {
        source_id: source,
        cursor: serde_json::json!({"v": 1}),
        full: true,
        ..MirrorWrite::default()
    };
    store
        .apply_plan_open(
            &Apply {
                lease,
                customer_id: customer,
                source_id: Some(source),
                plan: &plan,
                directory_version: version,
                status: RunStatus::Succeeded,
                error: None,
                settle: Settle::Succeeded { clears_hold: false },
                mirror: Some(&write),
                mirror_rows: Some(&Late(total)),
            },
            &mut RunStats::default(),
            open,
        )
        .await
        .unwrap();
    let mut objects = store.mirror_objects(source, None, None).await.unwrap();
    objects.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(objects.len(), total);
    for (i, o) in objects.iter().enumerate() {
        let when = if i % 3 == 0 { "early" } else { "late" };
        assert_eq!(o, &object(i, when));
    }
    // Nothing is seen of an apply that does not commit.
    let lease = new_run(&store, customer, source).await;
    let (_, version) = store.directory_versioned(customer).await.unwrap();
    let mut open = store.open_apply(lease, customer, version).await.unwrap();
    open.mirror(source, vec![object(total, "early")])
        .await
        .unwrap();
    drop(open);
    let objects = store.mirror_objects(source, None, None).await.unwrap();
    assert_eq!(objects.len(), total);
    store.close().await;
    discard(&url).await;
}

/// A delta run's directory: the entries its source holds for the objects that changed
/// (not another source's entry of the same object id), and those holding its addresses.
async fn a_delta_finds_its_sources_entries_by_object_and_any_entry_by_address(url: String) {
    let store = open_fresh(&url).await;
    let (customer, source) = setup(&store).await;
    let other = store
        .add_source(NewSource {
            customer_id: customer,
            kind: SourceKind::Office365,
            tenant_id: "tenant-2".into(),
            settings: serde_json::json!({"client_id": "app"}),
            secret: Some(SecretString::new("very-secret-value")),
            refresh_token: None,
        })
        .await
        .unwrap()
        .id;
    let plan = Plan {
        add: vec![
            entry("anne@contoso.com", "a", source),
            entry("bob@contoso.com", "b", source),
        ],
        ..Plan::default()
    };
    let run = new_run(&store, customer, source).await;
    apply(
        &store,
        run,
        customer,
        source,
        &plan,
        &mut RunStats::default(),
    )
    .await
    .unwrap();
    let plan = Plan {
        add: vec![entry("carl@contoso.com", "a", other)],
        ..Plan::default()
    };
    let run = new_run(&store, customer, other).await;
    apply(
        &store,
        run,
        customer,
        other,
        &plan,
        &mut RunStats::default(),
    )
    .await
    .unwrap();

    let addresses = |users: &[DirectoryUser]| {
        users
            .iter()
            .map(|u| u.address.to_string())
            .collect::<Vec<_>>()
    };
    let (found, _) = store
        .directory_entries(customer, source, &["a".to_string()], &[])
        .await
        .unwrap();
    assert_eq!(addresses(&found), ["anne@contoso.com"]);
    let (found, _) = store
        .directory_entries(customer, other, &["a".to_string(), "b".to_string()], &[])
        .await
        .unwrap();
    assert_eq!(addresses(&found), ["carl@contoso.com"]);
    // By address or alias, whoever holds it.
    let (found, _) = store
        .directory_entries(
            customer,
            source,
            &["b".to_string()],
            &[
                EmailAddress::parse("carl@contoso.com").unwrap(),
                EmailAddress::parse("alias.anne@contoso.com").unwrap(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        addresses(&found),
        ["anne@contoso.com", "bob@contoso.com", "carl@contoso.com"]
    );
    store.close().await;
    discard(&url).await;
}

usersync_store::on_both_backends!(
    a_delta_finds_its_sources_entries_by_object_and_any_entry_by_address,
    mirror_objects_written_early_stand_beside_those_written_with_the_plan,
    a_newer_schema_is_refused_before_anything_is_migrated,
    a_run_of_a_source_removed_meanwhile_applies_nothing,
    a_database_whose_secrets_are_all_gone_takes_a_new_key,
    customers_domains_and_sources_are_kept_with_clear_conflicts,
    a_plan_is_applied_whole_and_recorded_with_its_run,
    a_large_plan_is_recorded_in_parts_and_read_back_whole,
    a_plan_that_fails_part_way_applies_nothing,
    a_database_is_refused_with_a_key_that_does_not_open_its_secrets,
    a_run_whose_process_died_is_taken_back,
    syncs_are_queued_once_claimed_once_and_cancelled,
    the_schedule_queues_a_due_source_once_per_slot,
    a_database_that_is_not_ours_is_refused_unchanged
);

#[tokio::test]
async fn two_processes_opening_a_fresh_postgres_database_at_once_both_succeed() {
    let Some(url) = usersync_store::testing::fresh_postgres_url() else {
        return;
    };
    // The database exists first (creating it twice at once is a different race).
    open_fresh(&url).await.close().await;
    let other = usersync_store::testing::fresh_postgres_url().unwrap();
    open_fresh(&other).await.close().await;
    let (a, b) = tokio::join!(open_fresh(&url), open_fresh(&url));
    a.add_customer("A").await.unwrap();
    b.add_customer("B").await.unwrap();
    a.close().await;
    b.close().await;
    discard(&url).await;
    discard(&other).await;
}

#[tokio::test]
async fn an_unreachable_postgres_server_is_named_at_once() {
    // Port 9 (discard) on loopback: nothing listens there.
    let err = Store::open(usersync_store::StoreOptions::new(
        "postgres://root:pw@127.0.0.1:9/x",
    ))
    .await
    .unwrap_err();
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        text.contains("127.0.0.1:9") && !text.contains(":pw@"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
}

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "HxwdHhscGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwI=";

async fn open_with(url: &str, key: usersync_store::KeySource) -> Result<Store, StoreError> {
    let mut options = usersync_store::StoreOptions::new(url);
    options.key = key;
    Store::open(options).await
}

async fn add_source_with_secret(store: &Store, tenant: &str) -> i64 {
    let customer = store.add_customer(&format!("C {tenant}")).await.unwrap();
    store
        .add_source(NewSource {
            customer_id: customer.id,
            kind: SourceKind::Office365,
            tenant_id: tenant.into(),
            settings: serde_json::json!({}),
            secret: Some(SecretString::new("the-client-secret")),
            refresh_token: None,
        })
        .await
        .unwrap()
        .id
}

/// A database whose secrets were sealed with one key is refused with another, at once,
/// naming the key in use; a lost key can be reset, after which the secrets must be set again.
async fn a_database_is_refused_with_a_key_that_does_not_open_its_secrets(url: String) {
    use usersync_store::KeySource;
    let store = open_with(&url, KeySource::Base64(KEY_A.into()))
        .await
        .unwrap();
    let source = add_source_with_secret(&store, "tenant-a").await;
    store.close().await;

    let err = open_with(&url, KeySource::Base64(KEY_B.into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("USERSYNC_SECRET_KEY")
            && err.contains("does not open this database's secrets"),
        "{err}"
    );
    assert!(err.contains("can be forgotten"), "{err}");

    // The operator who lost the key forgets the secrets, then uses a new key.
    let mut options = usersync_store::StoreOptions::new(&url);
    options.key = KeySource::Base64(KEY_B.into());
    options.verify_key = false;
    let store = Store::open(options).await.unwrap();
    assert_eq!(store.forget_secrets().await.unwrap(), 1);
    store.close().await;
    let store = open_with(&url, KeySource::Base64(KEY_B.into()))
        .await
        .unwrap();
    assert!(store.source_secret(source).await.unwrap().is_none());
    store
        .set_source_secret(source, &SecretString::new("new-secret"))
        .await
        .unwrap();
    assert_eq!(
        store.source_secret(source).await.unwrap().unwrap().expose(),
        "new-secret"
    );
    store.close().await;
    discard(&url).await;
}

#[tokio::test]
async fn a_deleted_key_file_is_not_generated_anew_for_a_database_with_secrets() {
    use usersync_store::KeySource;
    let url = usersync_store::testing::fresh_sqlite_url();
    let db = std::path::PathBuf::from(url.strip_prefix("sqlite://").unwrap());
    let key_file = db.with_file_name("usersync.db.key");
    let store = open_with(&url, KeySource::Default).await.unwrap();
    assert!(!key_file.exists(), "no key file before the first secret");
    add_source_with_secret(&store, "tenant-a").await;
    assert!(key_file.exists(), "the first secret generates the key file");
    assert_eq!(store.key().generated_file(), Some(key_file.as_path()));
    store.close().await;

    std::fs::remove_file(&key_file).unwrap();
    let err = open_with(&url, KeySource::Default)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&key_file.display().to_string()) && err.contains("does not exist"),
        "{err}"
    );
    assert!(!key_file.exists(), "no new key was generated");

    // A key file generated elsewhere (another folder, a copied database) is refused too.
    let other = db.with_file_name("other.key");
    std::fs::write(&other, format!("{KEY_B}\n")).unwrap();
    let err = open_with(&url, KeySource::File(other.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("the key file {}", other.display()))
            && err.contains("does not open this database's secrets"),
        "{err}"
    );
    discard(&url).await;
}

#[tokio::test]
async fn postgres_keeps_no_key_file_and_names_the_missing_key_when_a_secret_is_needed() {
    use usersync_store::KeySource;
    let Some(url) = usersync_store::testing::fresh_postgres_url() else {
        return;
    };
    let store = open_with(&url, KeySource::Default).await.unwrap();
    assert_eq!(store.key().location(), &usersync_store::KeyLocation::Unset);
    let customer = store.add_customer("Contoso").await.unwrap();
    let err = store
        .add_source(NewSource {
            customer_id: customer.id,
            kind: SourceKind::Office365,
            tenant_id: "tenant-a".into(),
            settings: serde_json::json!({}),
            secret: Some(SecretString::new("the-client-secret")),
            refresh_token: None,
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("USERSYNC_SECRET_KEY") && err.contains("USERSYNC_SECRET_KEY_FILE"),
        "{err}"
    );
    assert!(
        store.list_sources(None, true).await.unwrap().is_empty(),
        "nothing is stored without a key"
    );
    store.close().await;
    discard(&url).await;
}

/// A run whose process is gone is taken back by a later command: a sync goes back to the
/// queue (the claim counted as an attempt), a preview ends failed; a live one is left
/// alone, and a process whose lease was taken over can no longer record an outcome.
async fn a_run_whose_process_died_is_taken_back(url: String) {
    let store = open_fresh(&url).await;
    let (customer, source) = setup(&store).await;
    let me = usersync_store::RunOwner::this_process();
    let preview = NewRun {
        source_id: source,
        customer_id: customer,
        kind: RunKind::Preview,
        reason: RunReason::Manual,
        requested_by: "tester".into(),
    };
    let live = store.start_run(&preview, &me, LEASE).await.unwrap();
    // A process of this host that is gone: the same pid with another start identity
    // (on systems without /proc, an expired lease decides instead).
    let dead_owner = usersync_store::RunOwner {
        started: format!("{}-gone", me.started),
        ..me.clone()
    };
    let dead = store.start_run(&preview, &dead_owner, LEASE).await.unwrap();
    // A sync claimed by a process on another host: only its lease tells.
    let remote = usersync_store::RunOwner {
        host: "worker-elsewhere".into(),
        pid: 77,
        started: String::new(),
    };
    let queued = store.enqueue_sync(&job(source)).await.unwrap();
    let quiet = store
        .claim_run(queued.run_id(), &remote, LEASE)
        .await
        .unwrap()
        .unwrap()
        .lease;
    let taken = store.recover_runs(3).await.unwrap();
    if !me.started.is_empty() {
        assert_eq!(taken.failed, vec![dead.run_id]);
        let run = store.run(dead.run_id).await.unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert!(
            run.error
                .as_deref()
                .unwrap()
                .contains("the process running it stopped"),
            "{:?}",
            run.error
        );
    }
    assert_eq!(
        store.run(live.run_id).await.unwrap().status,
        RunStatus::Running
    );
    assert_eq!(
        store.run(quiet.run_id).await.unwrap().status,
        RunStatus::Running
    );
    // The remote owner stays silent past its lease (the test clock moves on).
    store.advance_clock(std::time::Duration::from_secs(61));
    assert!(store.heartbeat(&live, LEASE).await.unwrap());
    let taken = store.recover_runs(3).await.unwrap();
    assert_eq!(taken.requeued, vec![quiet.run_id], "{taken:?}");
    let run = store.run(quiet.run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.attempts, 1, "the lost claim counted");
    assert!(!store.heartbeat(&quiet, LEASE).await.unwrap());
    // Another worker claims it: a new token, attempt 2.
    let second = store
        .claim_runs(&me, 5, LEASE)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(second.lease.run_id, quiet.run_id);
    assert!(second.lease.token > quiet.token);
    assert_eq!(second.attempt, 2);
    // The remote process comes back and tries to record its result: refused.
    let err = store
        .finish_run(
            &quiet,
            &RunEnd {
                status: RunStatus::Succeeded,
                plan: None,
                stats: &RunStats::default(),
                error: None,
            },
            &Settle::Nothing,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("another process took it over"),
        "{err}"
    );
    // A run that keeps losing its worker ends failed after the last attempt.
    store.advance_clock(std::time::Duration::from_secs(61));
    store.recover_runs(2).await.unwrap();
    let run = store.run(quiet.run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("not tried again"));
    assert_eq!(store.source_health(source).await.unwrap().failures, 1);
    store.close().await;
    discard(&url).await;
}

/// One sync per source is queued or running: a second request folds into the queued one,
/// a request while one runs names it; claims take due runs once each; a cancelled running
/// run records nothing.
async fn syncs_are_queued_once_claimed_once_and_cancelled(url: String) {
    let store = open_fresh(&url).await;
    let (_customer, source) = setup(&store).await;
    let me = usersync_store::RunOwner::this_process();
    let first = store.enqueue_sync(&job(source)).await.unwrap();
    assert!(matches!(first, Enqueued::Queued(_)));
    let again = store.enqueue_sync(&job(source)).await.unwrap();
    assert_eq!(again, Enqueued::Folded(first.run_id()));
    assert_eq!(store.queue_stats().await.unwrap().queued_due, 1);
    let claims = store.claim_runs(&me, 10, LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].attempt, 1);
    assert!(store.claim_runs(&me, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(
        store.enqueue_sync(&job(source)).await.unwrap(),
        Enqueued::Running(first.run_id())
    );
    assert_eq!(
        store.cancel_run(first.run_id(), "tester").await.unwrap(),
        RunStatus::Running
    );
    let err = store
        .finish_run(
            &claims[0].lease,
            &RunEnd {
                status: RunStatus::Succeeded,
                plan: None,
                stats: &RunStats::default(),
                error: None,
            },
            &Settle::Nothing,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert_eq!(
        store.run(first.run_id()).await.unwrap().status,
        RunStatus::Cancelled
    );
    // Given back without spending an attempt (throttled, or shutting down).
    let next = store.enqueue_sync(&job(source)).await.unwrap();
    let claim = store
        .claim_run(next.run_id(), &me, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .release_run(
                &claim.lease,
                std::time::Duration::from_secs(30),
                Some("throttled")
            )
            .await
            .unwrap()
    );
    let run = store.run(next.run_id()).await.unwrap();
    assert_eq!((run.status, run.attempts), (RunStatus::Queued, 0));
    assert!(
        store.claim_runs(&me, 10, LEASE).await.unwrap().is_empty(),
        "not due yet"
    );
    store.advance_clock(std::time::Duration::from_secs(31));
    assert_eq!(store.claim_runs(&me, 10, LEASE).await.unwrap().len(), 1);
    store.close().await;
    discard(&url).await;
}

/// A source with automatic sync is queued when its slot comes, once per slot; slots missed
/// while nothing ran are skipped, not queued in a burst.
async fn the_schedule_queues_a_due_source_once_per_slot(url: String) {
    let store = open_fresh(&url).await;
    let (_customer, source) = setup(&store).await;
    let hour = std::time::Duration::from_secs(3600);
    store.set_source_schedule(source, Some(hour)).await.unwrap();
    // The first slot is within a tenth of the interval.
    store.advance_clock(std::time::Duration::from_secs(361));
    let queued = store.enqueue_due(100).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert!(
        store.enqueue_due(100).await.unwrap().is_empty(),
        "once per slot"
    );
    let health = store.source_health(source).await.unwrap();
    let next = health.next_run_at.unwrap();
    let now = store.clock().await.unwrap();
    let next_epoch =
        time::OffsetDateTime::parse(&next, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp();
    let ahead = next_epoch - now;
    assert!(
        (3600..=3960).contains(&ahead),
        "next slot in {ahead} s: interval plus up to 10 %"
    );
    // Nothing runs for five intervals: one sync is queued, not five.
    store.advance_clock(std::time::Duration::from_secs(5 * 3600));
    assert!(store.queue_stats().await.unwrap().most_overdue_secs >= 3 * 3600);
    let me = usersync_store::RunOwner::this_process();
    let claim = store.claim_runs(&me, 10, LEASE).await.unwrap();
    assert_eq!(claim.len(), 1);
    let queued = store.enqueue_due(100).await.unwrap();
    assert!(
        queued.is_empty(),
        "a sync of the source is running: no second one"
    );
    assert_eq!(
        store.queue_stats().await.unwrap().most_overdue_secs,
        0,
        "the missed slots were skipped"
    );
    store.set_source_schedule(source, None).await.unwrap();
    assert_eq!(store.source_health(source).await.unwrap().next_run_at, None);
    store.close().await;
    discard(&url).await;
}

/// Tables of another application are named and nothing is migrated into them; a schema
/// newer than this binary is refused before anything is written.
async fn a_database_that_is_not_ours_is_refused_unchanged(url: String) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    // A database holding someone else's table.
    let store = open_fresh(&url).await;
    store.close().await;
    let raw = url.clone();
    let mut conn = sqlx::AnyConnection::connect(&raw).await.unwrap();
    sqlx::query("CREATE TABLE invoices (id BIGINT)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = Store::open(usersync_store::StoreOptions::new(&url))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not usersync's") && err.contains("invoices"),
        "{err}"
    );
    let mut conn = sqlx::AnyConnection::connect(&raw).await.unwrap();
    sqlx::query("DROP TABLE invoices")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 'x')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let err = Store::open(usersync_store::StoreOptions::new(&url))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("schema version 999") && err.contains("upgrade usersync"),
        "{err}"
    );
    discard(&url).await;
}

#[tokio::test]
async fn another_applications_sqlite_file_is_left_exactly_as_it_was() {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let url = usersync_store::testing::fresh_sqlite_url();
    let path = std::path::PathBuf::from(url.strip_prefix("sqlite://").unwrap());
    let mut conn = sqlx::AnyConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE invoices (id BIGINT)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(usersync_store::StoreOptions::new(&url))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("invoices"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is unchanged"
    );
    let mut wal = path.as_os_str().to_os_string();
    wal.push("-wal");
    assert!(!std::path::Path::new(&wal).exists(), "not switched to WAL");
    discard(&url).await;
}

#[tokio::test]
async fn a_foreign_postgres_database_is_not_migrated() {
    use sqlx::Connection;
    let Some(url) = usersync_store::testing::fresh_postgres_url() else {
        return;
    };
    sqlx::any::install_default_drivers();
    // An existing database of another application.
    create_empty(&url).await;
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    for sql in [
        "CREATE TABLE invoices (id BIGINT)",
        "CREATE TABLE orders (id BIGINT)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    let err = Store::open(usersync_store::StoreOptions::new(&url))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("invoices, orders"), "{err}");
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(tablename AS TEXT) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables.len(), 2, "nothing was migrated: {tables:?}");
    conn.close().await.unwrap();
    discard(&url).await;
}

#[tokio::test]
async fn a_postgres_url_with_an_ipv6_loopback_host_works() {
    let Some(url) = usersync_store::testing::fresh_postgres_url() else {
        return;
    };
    let v6 = url.replace("127.0.0.1", "[::1]");
    if v6 == url || std::net::TcpStream::connect("[::1]:5432").is_err() {
        return; // the server does not listen on ::1 here
    }
    let store = open_fresh(&v6).await;
    store.add_customer("Contoso").await.unwrap();
    store.close().await;
    discard(&url).await;
}

/// SQLite allows one writer: the others wait their turn (up to the busy timeout), then
/// give up with one sentence that names the sync in progress. Readers never wait.
#[tokio::test]
async fn a_writer_waits_for_a_busy_sqlite_database_and_then_says_who_holds_it() {
    use sqlx::Connection;
    let url = usersync_store::testing::fresh_sqlite_url();
    let store = open_fresh(&url).await;
    let (customer, source) = setup(&store).await;
    let run = new_run(&store, customer, source).await.run_id;
    store.close().await;
    let mut options = usersync_store::StoreOptions::new(&url);
    options.key = usersync_store::KeySource::Base64(KEY_A.into());
    options.busy_timeout = std::time::Duration::from_secs(1);
    let store = Store::open(options.clone()).await.unwrap();

    // Another process's sync holds the write lock.
    let mut writer = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    assert_eq!(
        store.list_customers().await.unwrap().len(),
        1,
        "reads go on"
    );
    let started = std::time::Instant::now();
    let err = store.add_customer("Fabrikam").await.unwrap_err();
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    let text = store.explain(err).await.to_string();
    assert!(
        text.contains("another sync of this database is running")
            && text.contains(&format!(
                "run {run}, a sync of source #{source} of 'Contoso'"
            ))
            && text.contains("within 1 s")
            && text.contains("retry"),
        "{text}"
    );
    assert_eq!(text.matches("locked").count(), 0, "{text}");

    // With a longer wait, the writer gets its turn when the other commits.
    options.busy_timeout = std::time::Duration::from_secs(30);
    let patient = Store::open(options).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
        writer.close().await.unwrap();
    });
    patient.add_customer("Fabrikam").await.unwrap();
    release.await.unwrap();
    assert_eq!(patient.list_customers().await.unwrap().len(), 2);
    patient.close().await;
    store.close().await;
    discard(&url).await;
}
