//! Issue 4's options against the simulator, on SQLite and PostgreSQL: filters and their
//! destinations, selected groups, the deny list, mailbox types through $batch.

mod common;

use common::World;
use usersync_core::{DomainName, MailboxType};
use usersync_engine::{
    Engine, EngineError, EngineOptions, NewOffice365Source, NoProgress, Office365Settings,
    connect_office365,
};
use usersync_sim::{SimConfig, SimGroup, SimUser, Simulator};
use usersync_store::testing::{discard, open_fresh};
use usersync_store::{DomainOrigin, RunStatus, SecretString};

async fn world(url: String, users: usize) -> World {
    common::world(
        url,
        SimConfig {
            users,
            seed: 11,
            ..SimConfig::default()
        },
    )
    .await
}

async fn filters_route_users_to_their_groups_and_a_move_changes_only_the_group(url: String) {
    let w = world(url, 20).await;
    let dan = w.add("Dan Driver", "dan.driver", "Driver");
    let cara = w.add("Cara Clerk", "cara.clerk", "Clerk");
    let team = w
        .sim
        .tenant()
        .add_group(SimGroup::security("Night Shift").with_members([cara.clone()]))
        .unwrap();

    // A rule naming a group the tenant does not have is refused, naming the group.
    let err = w
        .engine
        .add_filter_rule(w.source, "Nights", "memberOf equals \"Nite Shift\"", true)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Filter(_)), "{err}");
    assert!(err.to_string().contains("Nite Shift"), "{err}");
    // A missing destination group needs --create-group.
    let err = w
        .engine
        .add_filter_rule(w.source, "Drivers", "jobTitle equals driver", false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), usersync_engine::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("group 'Drivers'"), "{err}");
    assert!(
        w.store.filter_rules(w.source).await.unwrap().is_empty(),
        "nothing saved"
    );

    w.engine
        .add_filter_rule(w.source, "Drivers", "jobTitle equals driver", true)
        .await
        .unwrap();
    w.engine
        .add_filter_rule(w.source, "Nights", "memberOf equals 'Night Shift'", true)
        .await
        .unwrap();
    let preview = w.engine.preview(w.source, &NoProgress).await.unwrap();
    let entry = |id: &str| {
        preview
            .plan
            .add
            .iter()
            .find(|u| u.source_object_id.as_deref() == Some(id))
            .unwrap()
            .clone()
    };
    assert_eq!(entry(&dan).group, "Drivers");
    assert_eq!(entry(&cara).group, "Nights");
    assert!(entry(&cara).placed_by.unwrap().contains("memberOf"));
    assert!(
        preview.plan.add.iter().all(|u| u.placed_by.is_some()),
        "every user shows what placed it"
    );
    w.engine.sync(w.source, &NoProgress).await.unwrap();

    // Dan becomes a member of the night shift but the first rule still wins; Cara leaves it.
    w.sim.tenant().add_member(&team, &dan).unwrap();
    w.sim.tenant().remove_member(&team, &cara).unwrap();
    let second = w.engine.sync(w.source, &NoProgress).await.unwrap();
    assert_eq!(second.status, RunStatus::Succeeded);
    assert_eq!(second.plan.update.len(), 1, "{:?}", second.plan.update);
    let moved = &second.plan.update[0];
    assert_eq!(moved.changes.keys().collect::<Vec<_>>(), ["group"]);
    let users = w.store.users(w.customer, false).await.unwrap();
    assert_eq!(
        users
            .iter()
            .find(|u| u.source_object_id.as_deref() == Some(cara.as_str()))
            .unwrap()
            .group,
        "Main"
    );

    // A rename in the tenant: the rule names the old name, so nobody matches it any more,
    // but a rule by id keeps working.
    w.sim.tenant().rename_group(&team, "Late Shift").unwrap();
    w.sim.tenant().add_member(&team, &cara).unwrap();
    let rules = w.store.filter_rules(w.source).await.unwrap();
    w.store
        .remove_filter_rule(w.source, rules[1].id)
        .await
        .unwrap();
    w.engine
        .add_filter_rule(
            w.source,
            "Nights",
            &format!("memberOf equals {team}"),
            false,
        )
        .await
        .unwrap();
    let third = w.engine.preview(w.source, &NoProgress).await.unwrap();
    assert_eq!(third.plan.update.len(), 1);
    assert_eq!(
        third.plan.update[0].changes["group"].1,
        usersync_core::plan::FieldValue::Text("Nights".into())
    );
    w.close().await;
}

async fn selected_groups_filters_and_the_deny_list_combine(url: String) {
    let w = world(url, 20).await;
    let a = w.add("Ann Member", "ann.member", "Driver");
    let b = w.add("Ben Member", "ben.member", "Clerk");
    let c = w.add("Cal Denied", "cal.denied", "Driver");
    let _d = w.add("Dee Outsider", "dee.outsider", "Driver");
    w.sim
        .tenant()
        .add_group(SimGroup::security("Sync Me").with_members([a.clone(), b.clone(), c.clone()]))
        .unwrap();
    w.set(&[
        "selected_groups=Sync Me",
        "only_matching=true",
        &format!("deny_list=cal.denied@{}", w.domain),
    ])
    .await;
    w.engine
        .add_filter_rule(w.source, "Drivers", "jobTitle equals Driver", true)
        .await
        .unwrap();
    let preview = w.engine.preview(w.source, &NoProgress).await.unwrap();
    // Users only: the tenant's group mailboxes are not people and are not filtered.
    let tenant = w.sim.tenant();
    let added: Vec<_> = preview
        .plan
        .add
        .iter()
        .filter_map(|u| u.source_object_id.clone())
        .filter(|id| tenant.user(id).is_some())
        .collect();
    assert_eq!(added, vec![a.clone()], "only Ann passes all three");
    assert!(
        preview
            .plan
            .add
            .iter()
            .any(|u| u.mailbox_type == MailboxType::DistributionList)
    );
    let reason = |name: &str| {
        preview
            .plan
            .skip
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.code.clone())
    };
    assert_eq!(reason("Ben Member").as_deref(), Some("no_matching_filter"));
    assert_eq!(reason("Cal Denied").as_deref(), Some("deny_list"));
    assert_eq!(
        reason("Dee Outsider").as_deref(),
        Some("not_in_selected_groups")
    );
    w.close().await;
}

async fn mailbox_types_come_from_user_purpose_and_fall_back_with_a_note(url: String) {
    let w = world(url, 30).await;
    let first = w.engine.preview(w.source, &NoProgress).await.unwrap();
    assert!(first.stats.notes.is_empty(), "{:?}", first.stats.notes);
    let tenant = w.sim.tenant();
    for entry in &first.plan.add {
        let Some(u) = entry
            .source_object_id
            .as_deref()
            .and_then(|id| tenant.user(id))
        else {
            continue;
        };
        let want = match u.user_purpose.map(|p| p.as_str().to_string()).as_deref() {
            Some("room") => MailboxType::Room,
            Some("equipment") => MailboxType::Equipment,
            Some("shared") => MailboxType::Shared,
            _ => continue,
        };
        assert_eq!(entry.mailbox_type, want, "{}", entry.address);
    }
    assert!(
        first
            .plan
            .add
            .iter()
            .any(|u| u.mailbox_type == MailboxType::Room)
    );

    w.sim.set_denied_permissions(&["MailboxSettings.Read"]);
    let fallback = w.engine.preview(w.source, &NoProgress).await.unwrap();
    assert_eq!(fallback.status, RunStatus::Succeeded);
    assert!(
        fallback
            .stats
            .notes
            .iter()
            .any(|n| n.contains("MailboxSettings.Read")),
        "{:?}",
        fallback.stats.notes
    );
    let run = w.store.run(fallback.run_id).await.unwrap();
    assert!(run.stats.unwrap().notes[0].contains("guessed"));
    w.close().await;
}

async fn tenant_domains_are_imported_and_protected_after_the_first_sync(url: String) {
    let sim = Simulator::start(SimConfig {
        users: 30,
        seed: 12,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let info = sim.info().clone();
    let store = open_fresh(&url).await;
    let customer = store.add_customer("Contoso").await.unwrap().id;
    // Only the first domain by hand; the others come from the tenant.
    let first = DomainName::parse(&info.mail_domains[0]).unwrap();
    store
        .add_domain(customer, &first, DomainOrigin::Manual)
        .await
        .unwrap();
    let source = connect_office365(
        &store,
        NewOffice365Source {
            customer_id: customer,
            tenant_id: info.tenant_id.clone(),
            settings: Office365Settings::new(&info.client_id, &info.authority_url, &info.graph_url),
            client_secret: SecretString::new(info.client_secret.clone()),
        },
    )
    .await
    .unwrap()
    .id;
    let engine = Engine::new(store.clone(), EngineOptions::default());
    let before = engine.preview(source, &NoProgress).await.unwrap();
    assert!(before.plan.import_domains.is_empty());
    assert!(!store.domain(&first).await.unwrap().reject_unlisted);

    engine
        .set_source_options(source, &["import_domains=true".to_string()])
        .await
        .unwrap();
    let preview = engine.preview(source, &NoProgress).await.unwrap();
    let imported: Vec<String> = preview
        .plan
        .import_domains
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        imported,
        info.mail_domains[1..].to_vec(),
        "verified Email domains only, never onmicrosoft"
    );
    assert!(preview.plan.add.len() > before.plan.add.len());
    assert_eq!(
        store.list_domains(customer).await.unwrap().len(),
        1,
        "a preview imports nothing"
    );

    engine.sync(source, &NoProgress).await.unwrap();
    let domains = store.list_domains(customer).await.unwrap();
    assert_eq!(domains.len(), info.mail_domains.len());
    for d in &domains {
        assert!(
            d.reject_unlisted && d.protect_listed_only,
            "{} is not protected",
            d.name
        );
    }
    let imported = domains
        .iter()
        .find(|d| d.name.as_str() == info.mail_domains[1])
        .unwrap();
    assert_eq!(imported.origin, usersync_store::DomainOrigin::Source);
    assert_eq!(imported.source_id, Some(source));
    assert!(domains.iter().all(|d| !d.name.is_onmicrosoft()));
    sim.shutdown().await;
    store.close().await;
    discard(&url).await;
}

on_both_backends!(
    filters_route_users_to_their_groups_and_a_move_changes_only_the_group,
    selected_groups_filters_and_the_deny_list_combine,
    mailbox_types_come_from_user_purpose_and_fall_back_with_a_note,
    tenant_domains_are_imported_and_protected_after_the_first_sync,
);

mod managers_and_defaults {
    use super::*;

    async fn managers_and_new_mailbox_settings(url: String) {
        let w = world(url, 10).await;
        let boss = w.add("Bea Boss", "bea.boss", "Director");
        let mut anne = SimUser::member("Ann Report", &format!("ann.report@{}", w.domain));
        anne.manager_id = Some(boss.clone());
        let anne = w.sim.tenant().add_user(anne).unwrap();
        w.set(&[
            "import_managers=true",
            "defaults.archiving=true",
            "defaults.timezone=Europe/Paris",
        ])
        .await;
        let first = w.engine.sync(w.source, &NoProgress).await.unwrap();
        assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
        let users = w.store.users(w.customer, false).await.unwrap();
        let ann = users
            .iter()
            .find(|u| u.source_object_id.as_deref() == Some(anne.as_str()))
            .unwrap();
        assert_eq!(
            ann.manager.as_ref().unwrap().as_str(),
            format!("bea.boss@{}", w.domain)
        );
        let services = ann.services.clone().unwrap();
        assert!(services.archiving);
        assert_eq!(services.timezone.as_deref(), Some("Europe/Paris"));

        // New defaults apply to new mailboxes only; existing ones keep theirs.
        w.set(&["defaults.archiving=false"]).await;
        w.add("Nia New", "nia.new", "Clerk");
        let second = w.engine.sync(w.source, &NoProgress).await.unwrap();
        assert_eq!(second.plan.add.len(), 1);
        assert!(second.plan.update.is_empty(), "{:?}", second.plan.update);
        let users = w.store.users(w.customer, false).await.unwrap();
        let nia = users.iter().find(|u| u.display_name == "Nia New").unwrap();
        assert!(!nia.services.clone().unwrap().archiving);
        let ann = users
            .iter()
            .find(|u| u.source_object_id.as_deref() == Some(anne.as_str()))
            .unwrap();
        assert!(ann.services.clone().unwrap().archiving);
        w.close().await;
    }

    #[tokio::test]
    async fn sqlite_managers_and_new_mailbox_settings() {
        managers_and_new_mailbox_settings(usersync_store::testing::fresh_sqlite_url()).await
    }

    #[tokio::test]
    async fn postgres_managers_and_new_mailbox_settings() {
        let Some(url) = usersync_store::testing::fresh_postgres_url() else {
            return;
        };
        managers_and_new_mailbox_settings(url).await
    }
}

mod console_groups {
    use super::*;

    async fn tenant_groups_become_console_groups_and_follow_renames(url: String) {
        let w = world(url, 10).await;
        let a = w.add("Ann Alpha", "ann.alpha", "Clerk");
        let b = w.add("Ben Beta", "ben.beta", "Clerk");
        let tenant = w.sim.tenant();
        let inner = tenant
            .add_group(SimGroup::security("Inner").with_members([b.clone()]))
            .unwrap();
        let outer = tenant
            .add_group(SimGroup::security("Outer Team").with_members([a.clone(), inner.clone()]))
            .unwrap();

        // group_map needs an existing console group.
        let err = w
            .engine
            .set_source_options(w.source, &["group_map=Inner=>Staff".into()])
            .await
            .unwrap_err();
        assert_eq!(err.field().as_deref(), Some("group_map"), "{err}");
        assert!(err.to_string().contains("'Staff' does not exist"), "{err}");
        w.store.add_group(w.customer, "Staff").await.unwrap();
        w.set(&[
            "include_groups=true",
            "group_types=security",
            "group_map=Inner=>Staff",
        ])
        .await;
        let first = w.engine.sync(w.source, &NoProgress).await.unwrap();
        assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);

        let groups = w.store.list_groups(w.customer).await.unwrap();
        let find = |name: &str| groups.iter().find(|g| g.name == name).cloned();
        let ann = format!("ann.alpha@{}", w.domain);
        let ben = format!("ben.beta@{}", w.domain);
        let outer_group = find("Outer Team").expect("made from the tenant group");
        assert!(
            outer_group.members.contains(&ann) && outer_group.members.contains(&ben),
            "transitive: {:?}",
            outer_group.members
        );
        assert_eq!(outer_group.tenant_group_id.as_deref(), Some(outer.as_str()));
        assert!(
            find("Staff").unwrap().members.contains(&ben),
            "mapped onto Staff"
        );
        assert!(find("Inner").is_none(), "mapped groups are not created");

        // A rename in the tenant renames the console group; a member who leaves leaves it.
        tenant.rename_group(&outer, "Outer Crew").unwrap();
        tenant.remove_member(&outer, &a).unwrap();
        let second = w.engine.sync(w.source, &NoProgress).await.unwrap();
        // Both are in the audit log, as the run's changes.
        let log = audit_log(&w.engine).await;
        let of_run: Vec<_> = log
            .iter()
            .filter(|e| e.run_id == Some(second.run_id))
            .map(|e| {
                (
                    e.action.as_str(),
                    e.object.as_str(),
                    e.before.clone(),
                    e.after.clone(),
                )
            })
            .collect();
        assert!(
            of_run.contains(&(
                "group.rename",
                "Outer Crew",
                Some(serde_json::json!({"name": "Outer Team"})),
                Some(serde_json::json!({"name": "Outer Crew"}))
            )),
            "{of_run:?}"
        );
        assert!(
            of_run.contains(&(
                "group.members",
                "Outer Crew",
                Some(serde_json::json!({"left": [ann.clone()]})),
                Some(serde_json::json!({"joined": []}))
            )),
            "{of_run:?}"
        );
        // An unchanged tenant changes nothing, so the log gets nothing.
        let third = w.engine.sync(w.source, &NoProgress).await.unwrap();
        assert!(!log.iter().any(|e| e.run_id == Some(third.run_id)));
        let after = audit_log(&w.engine).await;
        assert_eq!(
            after.len(),
            log.len(),
            "no entries for a sync that changed nothing"
        );
        let groups = w.store.list_groups(w.customer).await.unwrap();
        assert!(!groups.iter().any(|g| g.name == "Outer Team"));
        let crew = groups.iter().find(|g| g.name == "Outer Crew").unwrap();
        assert!(
            !crew.members.contains(&ann) && crew.members.contains(&ben),
            "{:?}",
            crew.members
        );
        let _ = inner;
        w.close().await;
    }

    #[tokio::test]
    async fn sqlite_tenant_groups_become_console_groups_and_follow_renames() {
        tenant_groups_become_console_groups_and_follow_renames(
            usersync_store::testing::fresh_sqlite_url(),
        )
        .await
    }

    #[tokio::test]
    async fn postgres_tenant_groups_become_console_groups_and_follow_renames() {
        let Some(url) = usersync_store::testing::fresh_postgres_url() else {
            return;
        };
        tenant_groups_become_console_groups_and_follow_renames(url).await
    }
}

mod each_option_and_operator {
    use super::*;
    use usersync_core::filter::Operator;

    async fn account_options_extra_addresses_and_keeping_deleted_users(url: String) {
        let w = world(url, 10).await;
        let tenant = w.sim.tenant();
        let mut unlicensed = SimUser::member("Una Licence", &format!("una.licence@{}", w.domain));
        unlicensed.assigned_licenses.clear();
        let una = tenant.add_user(unlicensed).unwrap();
        let mut disabled = SimUser::member("Dis Abled", &format!("dis.abled@{}", w.domain));
        disabled.account_enabled = false;
        let dis = tenant.add_user(disabled).unwrap();
        let code_of = |plan: &usersync_core::Plan, id: &str| {
            plan.skip
                .iter()
                .find(|s| s.source_object_id == id)
                .map(|s| s.code.clone())
        };

        let plain = w.engine.preview(w.source, &NoProgress).await.unwrap().plan;
        assert_eq!(code_of(&plain, &una), None);
        assert_eq!(code_of(&plain, &dis), None);
        w.set(&[
            "exclude_unlicensed=true",
            "exclude_disabled=true",
            &format!("extra_addresses=all-staff@{}", w.domain),
        ])
        .await;
        let plan = w.engine.preview(w.source, &NoProgress).await.unwrap().plan;
        assert_eq!(code_of(&plan, &una).as_deref(), Some("unlicensed"));
        assert_eq!(code_of(&plan, &dis).as_deref(), Some("disabled"));
        let extra = plan
            .add
            .iter()
            .find(|u| u.address.as_str() == format!("all-staff@{}", w.domain))
            .unwrap();
        assert_eq!(extra.mailbox_type, MailboxType::DistributionList);

        // remove_deleted=false: a user deleted in the tenant is reported and kept.
        w.set(&[
            "exclude_unlicensed=false",
            "exclude_disabled=false",
            "remove_deleted=false",
        ])
        .await;
        w.engine.sync(w.source, &NoProgress).await.unwrap();
        tenant.delete_user(&una).unwrap();
        let kept = w.engine.sync(w.source, &NoProgress).await.unwrap();
        assert!(kept.plan.remove.is_empty());
        assert_eq!(
            code_of(&kept.plan, &una).as_deref(),
            Some("kept_not_removed")
        );
        assert!(
            w.addresses(false)
                .await
                .contains(&format!("una.licence@{}", w.domain))
        );
        w.set(&["remove_deleted=true"]).await;
        let removed = w.engine.sync(w.source, &NoProgress).await.unwrap();
        assert_eq!(removed.plan.remove.len(), 1);
        w.close().await;
    }

    /// Each operator in a rule, evaluated on users read from the simulator.
    async fn every_operator_routes_users_read_from_the_tenant(url: String) {
        let w = world(url, 5).await;
        let tenant = w.sim.tenant();
        let mut dan = SimUser::member("Dan Driver", &format!("dan.driver@{}", w.domain));
        dan.job_title = Some("Senior Driver".into());
        dan.department = Some("Logistics".into());
        let dan = tenant.add_user(dan).unwrap();
        let team = tenant
            .add_group(SimGroup::security("Fleet").with_members([dan.clone()]))
            .unwrap();
        let cases: Vec<(Operator, String)> = vec![
            (Operator::Equals, "jobTitle equals 'senior driver'".into()),
            (
                Operator::NotEquals,
                "department not_equals Sales and displayName starts_with Dan".into(),
            ),
            (Operator::Contains, "jobTitle contains DRIVER".into()),
            (Operator::StartsWith, "displayName starts_with dan".into()),
            (Operator::EndsWith, format!("mail ends_with @{}", w.domain)),
            (Operator::Matches, "displayName matches ^Dan\\s+Dr".into()),
            (
                Operator::IsTrue,
                "accountEnabled is_true and department equals Logistics".into(),
            ),
            (Operator::IsFalse, "accountEnabled is_false".into()),
            (
                Operator::IsEmpty,
                "companyName is_empty and displayName starts_with Dan".into(),
            ),
            (
                Operator::IsNotEmpty,
                "assignedLicenses is_not_empty and department equals logistics".into(),
            ),
            (Operator::In, "department in Sales, Logistics".into()),
            (Operator::Equals, "memberOf equals Fleet".into()),
            (Operator::Equals, format!("memberOf equals {team}")),
            (
                Operator::Contains,
                format!("proxyAddresses contains dan.driver@{}", w.domain),
            ),
        ];
        // is_false is the one case where Dan must not match.
        let mut seen = std::collections::BTreeSet::new();
        for (i, (operator, text)) in cases.iter().enumerate() {
            for rule in w.store.filter_rules(w.source).await.unwrap() {
                w.store.remove_filter_rule(w.source, rule.id).await.unwrap();
            }
            let group = format!("G{i}");
            w.engine
                .add_filter_rule(w.source, &group, text, true)
                .await
                .unwrap();
            let plan = w.engine.preview(w.source, &NoProgress).await.unwrap().plan;
            let placed = plan
                .add
                .iter()
                .find(|u| u.source_object_id.as_deref() == Some(dan.as_str()))
                .unwrap();
            let expect = if *operator == Operator::IsFalse {
                "Main".to_string()
            } else {
                group
            };
            assert_eq!(placed.group, expect, "{text}");
            seen.insert(operator.as_str());
        }
        assert_eq!(seen.len(), Operator::ALL.len(), "every operator was tried");
        w.close().await;
    }

    on_both_backends!(
        account_options_extra_addresses_and_keeping_deleted_users,
        every_operator_routes_users_read_from_the_tenant,
    );
}

/// The whole audit log, newest first.
async fn audit_log(engine: &usersync_engine::Engine) -> Vec<usersync_store::AuditEntry> {
    engine
        .audit(&usersync_engine::AuditRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
}
