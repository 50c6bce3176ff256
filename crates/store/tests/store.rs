//! The store's operations, each run on SQLite and on PostgreSQL.

use usersync_core::{
    DirectoryUser, DomainName, EmailAddress, MailboxType, Plan, PlannedUpdate, SourceKind,
    UserStatus,
};
use usersync_store::testing::{discard, open_fresh};
use usersync_store::{
    DomainOrigin, NewRun, NewSource, RunKind, RunStats, RunStatus, SecretString, Store, StoreError,
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
        })
        .await
        .unwrap();
    (customer.id, source.id)
}

async fn new_run(store: &Store, customer: i64, source: i64) -> i64 {
    store
        .start_run(&NewRun {
            source_id: source,
            customer_id: customer,
            kind: RunKind::Sync,
            reason: "manual".into(),
        })
        .await
        .unwrap()
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
    let missing = store
        .customer_by_name("Nobody")
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("usersync customer add"), "{missing}");
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
    let stats = RunStats {
        read_users: 2,
        ..RunStats::default()
    };
    let counts = store
        .apply_plan(run, customer, Some(source), &plan, &stats)
        .await
        .unwrap();
    assert_eq!(counts.added, 2);
    let users = store.users(customer, false).await.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0].address.as_str(), "anne@contoso.com");
    assert_eq!(users[0].aliases[0].as_str(), "alias.anne@contoso.com");
    assert_eq!(users[0].given_name.as_deref(), Some("Given"));
    assert!(users[0].billable);
    let recorded = store.run(run).await.unwrap();
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
        }],
        remove: vec![users[1].clone()],
        ..Plan::default()
    };
    store
        .apply_plan(run2, customer, Some(source), &plan2, &RunStats::default())
        .await
        .unwrap();
    let active = store.users(customer, false).await.unwrap();
    assert_eq!(active.len(), 1);
    assert!(active[0].aliases.is_empty());
    assert_eq!(active[0].group, "Drivers");
    let all = store.users(customer, true).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].status, UserStatus::Removed);
    let runs = store.list_runs(Some(source), 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![run2, run]
    );
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
    let err = store
        .apply_plan(run, customer, Some(source), &plan, &RunStats::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(store.users(customer, true).await.unwrap().is_empty());
    assert_eq!(store.run(run).await.unwrap().status, RunStatus::Running);
    store.close().await;
    discard(&url).await;
}

macro_rules! on_both_backends {
    ($($name:ident),+) => {
        mod sqlite { $(#[tokio::test] async fn $name() { super::$name(usersync_store::testing::fresh_sqlite_url()).await } )+ }
        mod postgres { $(#[tokio::test] async fn $name() { super::$name(usersync_store::testing::fresh_postgres_url()).await } )+ }
    };
}

on_both_backends!(
    customers_domains_and_sources_are_kept_with_clear_conflicts,
    a_plan_is_applied_whole_and_recorded_with_its_run,
    a_plan_that_fails_part_way_applies_nothing
);

#[tokio::test]
async fn two_processes_opening_a_fresh_postgres_database_at_once_both_succeed() {
    let url = usersync_store::testing::fresh_postgres_url();
    // The database exists first (creating it twice at once is a different race).
    open_fresh(&url).await.close().await;
    let other = usersync_store::testing::fresh_postgres_url();
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
