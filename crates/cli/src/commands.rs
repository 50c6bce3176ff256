//! One function per command: call the store or the engine, then print.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use usersync_core::DomainName;
use usersync_engine::{
    Engine, EngineOptions, NewOffice365Source, Office365Settings, RunOutcome, connect_office365,
    set_source_options,
};
use usersync_graph::{GLOBAL_AUTHORITY_URL, GLOBAL_GRAPH_URL};
use usersync_store::{DomainOrigin, RunStatus, SecretString, Store};

use crate::output::{self, print_json};
use crate::progress::TerminalProgress;
use crate::{
    Cli, Command, CustomerCommand, DomainCommand, FilterCommand, GroupsCommand, Office365Args,
    RunsCommand, SourceAdd, SourceCommand, UsersCommand,
};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Config { json } => return show_config(&cli, json.json),
        Command::Sim(args) => return crate::sim::run(args).await,
        Command::Demo(args) => return crate::demo::run(&cli, args).await,
        Command::Bench(args) => return crate::bench::run(&cli, args).await,
        _ => {}
    }
    let store = cli.open_store().await?;
    let code = dispatch(&cli.command, &store).await;
    store.close().await;
    code
}

async fn dispatch(command: &Command, store: &Store) -> anyhow::Result<ExitCode> {
    match command {
        Command::Customer(CustomerCommand::Add { name, json }) => {
            let customer = store.add_customer(name).await?;
            if json.json {
                print_json(&customer)?;
            } else {
                println!(
                    "Added customer '{}' (id {}) with its group Main.",
                    customer.name, customer.id
                );
            }
        }
        Command::Customer(CustomerCommand::List { json }) => {
            let customers = store.list_customers().await?;
            if json.json {
                print_json(&customers)?;
            } else {
                output::customers_table(&customers);
            }
        }
        Command::Domain(DomainCommand::Add {
            domain,
            customer,
            json,
        }) => {
            let customer = store.customer_by_name(customer).await?;
            let name = DomainName::parse(domain).context("the domain")?;
            let domain = store
                .add_domain(customer.id, &name, DomainOrigin::Manual)
                .await?;
            if json.json {
                print_json(&domain)?;
            } else {
                println!("Added the domain {} to '{}'.", domain.name, customer.name);
            }
        }
        Command::Domain(DomainCommand::Show { domain, json }) => {
            let name = DomainName::parse(domain).context("the domain")?;
            let domain = store.domain(&name).await?;
            if json.json {
                print_json(&domain)?;
            } else {
                output::domains_table(std::slice::from_ref(&domain));
            }
        }
        Command::Domain(DomainCommand::List { customer, json }) => {
            let customer = store.customer_by_name(customer).await?;
            let domains = store.list_domains(customer.id).await?;
            if json.json {
                print_json(&domains)?;
            } else {
                output::domains_table(&domains);
            }
        }
        Command::Source(SourceCommand::Add(SourceAdd::Office365(args))) => {
            add_office365(store, args).await?;
        }
        Command::Source(SourceCommand::List { customer, json }) => {
            let customer_id = match customer {
                Some(name) => Some(store.customer_by_name(name).await?.id),
                None => None,
            };
            let sources = store.list_sources(customer_id).await?;
            if json.json {
                print_json(&sources)?;
            } else {
                output::sources_table(&sources);
            }
        }
        Command::Source(SourceCommand::Set {
            source_id,
            assignments,
            json,
        }) => {
            let options = set_source_options(store, *source_id, assignments).await?;
            if json.json {
                print_json(&options)?;
            } else {
                println!("Source #{source_id} options:");
                for (key, value) in options.entries() {
                    println!("  {key} = {value}");
                }
            }
        }
        Command::Source(SourceCommand::Show { source_id, json }) => {
            let source = store.source(*source_id).await?;
            if json.json {
                print_json(&source)?;
            } else {
                output::source_details(&source);
            }
        }
        Command::Filter(FilterCommand::Add {
            source_id,
            group,
            rule,
            create_group,
            json,
        }) => {
            let engine = Engine::new(store.clone(), EngineOptions::default());
            let mut create = *create_group;
            let added = loop {
                match engine
                    .add_filter_rule(*source_id, group, rule, create)
                    .await
                {
                    Err(usersync_engine::EngineError::Store(
                        usersync_store::StoreError::NotFound { what: "group", .. },
                    )) if !create
                        && confirm(&format!("The group '{group}' does not exist. Create it?")) =>
                    {
                        create = true;
                    }
                    other => break other?,
                }
            };
            if json.json {
                print_json(&added)?;
            } else {
                println!(
                    "Added rule {} -> {}: {}",
                    added.id, added.group, added.expression
                );
            }
        }
        Command::Filter(FilterCommand::List { source_id, json }) => {
            store.source(*source_id).await?;
            let rules = store.filter_rules(*source_id).await?;
            if json.json {
                print_json(&rules)?;
            } else {
                output::rules_table(&rules);
            }
        }
        Command::Filter(FilterCommand::Remove { source_id, rule_id }) => {
            store.remove_filter_rule(*source_id, *rule_id).await?;
            println!("Removed rule {rule_id}.");
        }
        Command::Filter(FilterCommand::Move {
            source_id,
            rule_id,
            to,
            json,
        }) => {
            store
                .move_filter_rule(*source_id, *rule_id, *to as usize)
                .await?;
            let rules = store.filter_rules(*source_id).await?;
            if json.json {
                print_json(&rules)?;
            } else {
                output::rules_table(&rules);
            }
        }
        Command::Preview { source_id, json } => {
            let engine = Engine::new(store.clone(), EngineOptions::default());
            let progress = TerminalProgress::new(!json.json);
            let outcome = engine.preview(*source_id, &progress).await?;
            progress.finish();
            if outcome.status == RunStatus::Failed {
                return report_failure(&outcome, json.json);
            }
            if json.json {
                let mut value = serde_json::to_value(&outcome.plan)?;
                value["run_id"] = json!(outcome.run_id);
                print_json(&value)?;
            } else {
                output::plan_report(&outcome.plan, outcome.run_id, &outcome.stats);
            }
        }
        Command::Sync {
            source_id,
            confirm_removals,
            json,
        } => {
            let engine = Engine::new(store.clone(), EngineOptions::default());
            let progress = TerminalProgress::new(!json.json);
            let outcome = if *confirm_removals {
                engine.sync_confirmed(*source_id, &progress).await?
            } else {
                engine.sync(*source_id, &progress).await?
            };
            progress.finish();
            if json.json {
                print_json(&sync_json(&outcome))?;
            } else {
                output::sync_report(&outcome);
            }
            if outcome.status == RunStatus::Failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Users(UsersCommand::Add {
            address,
            customer,
            name,
            mailbox_type,
            json,
        }) => {
            let customer = store.customer_by_name(customer).await?;
            let address = usersync_core::EmailAddress::parse(address).context("the address")?;
            let user = usersync_core::DirectoryUser {
                id: None,
                display_name: name.clone().unwrap_or_else(|| address.to_string()),
                given_name: None,
                surname: None,
                mailbox_type: *mailbox_type,
                billable: *mailbox_type == usersync_core::MailboxType::User,
                aliases: vec![],
                group: usersync_core::mapping::MAIN_GROUP.into(),
                source_id: None,
                source_object_id: None,
                status: usersync_core::UserStatus::Active,
                manager: None,
                services: None,
                placed_by: None,
                address,
            };
            let user = store.add_manual_user(customer.id, &user).await?;
            if json.json {
                print_json(&user)?;
            } else {
                println!("Added {} to '{}' by hand.", user.address, customer.name);
            }
        }
        Command::Users(UsersCommand::List {
            customer,
            include_removed,
            json,
        }) => {
            let customer = store.customer_by_name(customer).await?;
            let users = store.users(customer.id, *include_removed).await?;
            if json.json {
                print_json(&users)?;
            } else {
                output::users_table(&users);
            }
        }
        Command::Groups(GroupsCommand::List { customer, json }) => {
            let customer = store.customer_by_name(customer).await?;
            let groups = store.list_groups(customer.id).await?;
            if json.json {
                print_json(&groups)?;
            } else {
                output::groups_table(&groups);
            }
        }
        Command::Groups(GroupsCommand::Add { name, customer }) => {
            let customer = store.customer_by_name(customer).await?;
            store.add_group(customer.id, name).await?;
            println!("Added the group '{name}' to '{}'.", customer.name);
        }
        Command::Runs(RunsCommand::List {
            source,
            limit,
            json,
        }) => {
            let runs = store.list_runs(*source, *limit).await?;
            if json.json {
                print_json(&runs)?;
            } else {
                output::runs_table(&runs);
            }
        }
        Command::Runs(RunsCommand::Show { run_id, json }) => {
            let run = store.run(*run_id).await?;
            if json.json {
                print_json(&run)?;
            } else {
                output::run_details(&run);
            }
        }
        Command::Config { .. } | Command::Sim(_) | Command::Demo(_) | Command::Bench(_) => {
            unreachable!("handled above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `sync --json` shape that scripts rely on: counts of what was applied.
pub fn sync_json(outcome: &RunOutcome) -> serde_json::Value {
    let applied = |n: usize| {
        if outcome.status == RunStatus::Failed {
            0
        } else {
            n
        }
    };
    let p = &outcome.plan;
    json!({
        "run_id": outcome.run_id,
        "status": outcome.status,
        "added": applied(p.add.len()),
        "updated": applied(p.update.len()),
        "removed": applied(p.remove.len()),
        "skipped": applied(p.skip.len()),
        "linked": applied(p.linked()),
        "duration_ms": outcome.stats.duration_ms,
        "requests": outcome.stats.requests,
        "error": outcome.error,
    })
}

fn report_failure(outcome: &RunOutcome, as_json: bool) -> anyhow::Result<ExitCode> {
    let error = outcome.error.as_deref().unwrap_or("unknown error");
    if as_json {
        print_json(&json!({"run_id": outcome.run_id, "status": outcome.status, "error": error}))?;
    } else {
        eprintln!("error: run {} failed: {error}", outcome.run_id);
    }
    Ok(ExitCode::FAILURE)
}

async fn add_office365(store: &Store, args: &Office365Args) -> anyhow::Result<()> {
    let customer = store.customer_by_name(&args.customer).await?;
    let secret = std::env::var("USERSYNC_M365_CLIENT_SECRET").unwrap_or_default();
    let settings = Office365Settings {
        client_id: args.client_id.clone().unwrap_or_default(),
        authority_url: args
            .authority_url
            .clone()
            .unwrap_or_else(|| GLOBAL_AUTHORITY_URL.to_string()),
        graph_url: args
            .graph_url
            .clone()
            .unwrap_or_else(|| GLOBAL_GRAPH_URL.to_string()),
        ca_file: args.ca_file.clone(),
        options: usersync_core::SourceOptions {
            email_method: args.email_method,
            ..Default::default()
        },
    };
    let source = connect_office365(
        store,
        NewOffice365Source {
            customer_id: customer.id,
            tenant_id: args.tenant.clone(),
            settings,
            client_secret: SecretString::new(secret),
        },
    )
    .await?;
    if args.json.json {
        print_json(&json!({"id": source.id}))?;
    } else {
        println!(
            "Added source #{} (office365, tenant {}) to '{}'. Next: `usersync preview {}`.",
            source.id, source.tenant_id, customer.name, source.id
        );
    }
    Ok(())
}

/// Every setting with its effective value and origin; secrets show only whether they are set.
fn show_config(cli: &Cli, as_json: bool) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let origin = |name: &str, default: &str| {
        if env(name).is_some() {
            format!("env {name}")
        } else {
            default.to_string()
        }
    };
    let masked = |name: &str| {
        if env(name).is_some() {
            "*** (set)".to_string()
        } else {
            "(not set)".to_string()
        }
    };
    let key = match (&cli.secret_key, &cli.secret_key_file) {
        (Some(_), _) => ("*** (set)".to_string(), "env USERSYNC_SECRET_KEY".to_string()),
        (None, Some(path)) => (path.display().to_string(), origin("USERSYNC_SECRET_KEY_FILE", "--secret-key-file")),
        (None, None) => (
            "DATABASE_FILE.key beside a SQLite database; usersync.key in the working directory for PostgreSQL".to_string(),
            "default".to_string(),
        ),
    };
    let database_origin = if env("USERSYNC_DATABASE_URL").is_some() {
        "env USERSYNC_DATABASE_URL"
    } else if cli.database == usersync_store::DEFAULT_DATABASE_URL {
        "default"
    } else {
        "--database"
    };
    let rows: Vec<(&str, String, String)> = vec![
        (
            "database",
            usersync_store::redact_url(&cli.database),
            database_origin.to_string(),
        ),
        ("secret_key", key.0, key.1),
        (
            "m365.client_id",
            env("USERSYNC_M365_CLIENT_ID").unwrap_or_else(|| "(not set)".into()),
            origin("USERSYNC_M365_CLIENT_ID", "default"),
        ),
        (
            "m365.client_secret",
            masked("USERSYNC_M365_CLIENT_SECRET"),
            origin("USERSYNC_M365_CLIENT_SECRET", "default"),
        ),
        (
            "m365.authority_url",
            env("USERSYNC_M365_AUTHORITY_URL").unwrap_or_else(|| GLOBAL_AUTHORITY_URL.into()),
            origin("USERSYNC_M365_AUTHORITY_URL", "default"),
        ),
        (
            "m365.graph_url",
            env("USERSYNC_M365_GRAPH_URL").unwrap_or_else(|| GLOBAL_GRAPH_URL.into()),
            origin("USERSYNC_M365_GRAPH_URL", "default"),
        ),
        (
            "m365.ca_file",
            env("USERSYNC_M365_CA_FILE").unwrap_or_else(|| "(none)".into()),
            origin("USERSYNC_M365_CA_FILE", "default"),
        ),
        (
            "log",
            env("USERSYNC_LOG").unwrap_or_else(|| "warn".into()),
            origin("USERSYNC_LOG", "default"),
        ),
    ];
    if as_json {
        let map: serde_json::Map<String, serde_json::Value> = rows
            .into_iter()
            .map(|(k, v, o)| (k.to_string(), json!({"value": v, "from": o})))
            .collect();
        print_json(&map)?;
    } else {
        for (k, v, o) in rows {
            println!("{k:<20} {v}  [{o}]");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks a yes/no question on a terminal; without one the answer is no.
fn confirm(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}
