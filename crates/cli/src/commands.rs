//! One function per command: call one method of the engine (the application service), then print.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use usersync_engine::{
    AuditRequest, ConnectionReport, Engine, EngineError, NewOffice365, NewUser, Office365Settings,
    PlanReport, Reconnect, RunOutcome,
};
use usersync_graph::{GLOBAL_AUTHORITY_URL, GLOBAL_GRAPH_URL};
use usersync_store::{Enqueued, KeyLocation, RunStatus, SecretString, Store, StoreError};

use crate::output::{self, print_json};
use crate::progress::TerminalProgress;
use crate::{
    AdminCommand, Cli, Command, CustomerCommand, DomainCommand, FilterCommand, GroupsCommand,
    KeyCommand, Office365Args, RunsCommand, SourceAdd, SourceCommand, TokenCommand, UsersCommand,
    outln,
};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Config { json } => return show_config(&cli, json.json),
        Command::Sim(args) => return crate::sim::run(args).await,
        Command::Demo(args) => return crate::demo::run(&cli, args).await,
        Command::Bench(args) => return crate::bench::run(&cli, args).await,
        Command::Key(KeyCommand::Reset { yes }) => return reset_key(&cli, *yes).await,
        Command::Serve(args) => {
            let engine = Engine::new(cli.open_store().await?, cli.engine_options());
            return crate::serve::serve(engine, args).await;
        }
        Command::Worker(args) => {
            let engine = Engine::new(cli.open_store().await?, cli.engine_options());
            return crate::serve::worker(engine, args).await;
        }
        Command::Lookup(crate::LookupCommand::Serve(args)) => {
            let engine = Engine::new(cli.open_store().await?, cli.engine_options());
            return crate::lookup::serve(engine, args).await;
        }
        _ => {}
    }
    let engine = Engine::new(cli.open_store().await?, cli.engine_options());
    let code = match dispatch(&cli, &engine).await {
        Err(error) => Err(explain(&engine, error).await),
        ok => ok,
    };
    engine.close().await;
    code
}

/// An error completed for a person at a terminal: who holds a busy database, and which
/// command shows or fixes what was not found (the engine's messages name no commands).
async fn explain(engine: &Engine, error: anyhow::Error) -> anyhow::Error {
    match engine_error(error) {
        Ok(error) => hinted(engine.explain(error).await),
        Err(other) => other,
    }
}

/// The engine's (or the store's) error inside, if that is what it is.
fn engine_error(error: anyhow::Error) -> Result<EngineError, anyhow::Error> {
    match error.downcast::<StoreError>() {
        Ok(e) => Ok(EngineError::Store(e)),
        Err(other) => other.downcast::<EngineError>(),
    }
}

/// An error with the command that shows or fixes it, when there is one.
pub(crate) fn with_hint(error: anyhow::Error) -> anyhow::Error {
    match engine_error(error) {
        Ok(error) => hinted(error),
        Err(other) => other,
    }
}

fn hinted(error: EngineError) -> anyhow::Error {
    match output::error_hint(&error) {
        Some(hint) => anyhow::anyhow!("{} ({hint})", usersync_engine::error_text(&error)),
        None => error.into(),
    }
}

async fn dispatch(cli: &Cli, engine: &Engine) -> anyhow::Result<ExitCode> {
    let command = &cli.command;
    match command {
        Command::Admin(AdminCommand::Create {
            email,
            role,
            customer,
            json,
        }) => {
            let password = read_password(email)?;
            let account = engine
                .create_account(email, &password, *role, customer.as_deref())
                .await?;
            if json.json {
                print_json(&account)?;
            } else {
                outln!(
                    "Made the {} account {}{} (id {}); sign in to the console served by `usersync serve`.",
                    account.role,
                    account.email,
                    account
                        .customer
                        .as_deref()
                        .map(|c| format!(" of customer '{c}'"))
                        .unwrap_or_default(),
                    account.id
                );
            }
        }
        Command::Admin(AdminCommand::List { json }) => {
            let accounts = engine.store().accounts().await?;
            if json.json {
                print_json(&accounts)?;
            } else {
                output::accounts_table(&accounts);
            }
        }
        Command::Token(TokenCommand::Create {
            role,
            customer,
            name,
            json,
        }) => {
            let made = engine
                .create_token(name, *role, customer.as_deref())
                .await?;
            if json.json {
                #[derive(serde::Serialize)]
                struct Made<'a> {
                    token: &'a str,
                    #[serde(flatten)]
                    record: &'a usersync_store::ApiToken,
                }
                print_json(&Made {
                    token: made.token.expose(),
                    record: &made.record,
                })?;
            } else {
                eprintln!(
                    "Made API token #{} ({}, {}); it is shown this once, keep it now:",
                    made.record.id,
                    made.record.role,
                    made.record.customer.as_deref().unwrap_or("every customer")
                );
                outln!("{}", made.token.expose());
            }
        }
        Command::Token(TokenCommand::List { json }) => {
            let tokens = engine.store().api_tokens(None).await?;
            if json.json {
                print_json(&tokens)?;
            } else {
                output::tokens_table(&tokens);
            }
        }
        Command::Token(TokenCommand::Revoke { token_id }) => {
            let token = engine.store().revoke_api_token(*token_id).await?;
            outln!("Revoked API token #{} ({}).", token.id, token.name);
        }
        Command::Customer(CustomerCommand::Add { name, json }) => {
            let customer = engine.add_customer(name).await?;
            if json.json {
                print_json(&customer)?;
            } else {
                outln!(
                    "Added customer '{}' (id {}) with its group Main.",
                    customer.name,
                    customer.id
                );
            }
        }
        Command::Customer(CustomerCommand::List { json }) => {
            let customers = engine.customers().await?;
            if json.json {
                print_json(&customers)?;
            } else {
                output::customers_table(&customers);
            }
        }
        Command::Customer(CustomerCommand::Set {
            name,
            assignments,
            json,
        }) => {
            let customer = engine.set_customer(name, assignments).await?;
            if json.json {
                print_json(&customer)?;
            } else {
                outln!(
                    "Customer '{}': removed users are kept {} days, then purged.",
                    customer.name,
                    customer.retention_days
                );
            }
        }
        Command::Domain(DomainCommand::Add {
            domain,
            customer,
            json,
        }) => {
            let domain = engine.add_domain(customer, domain).await?;
            if json.json {
                print_json(&domain)?;
            } else {
                outln!("Added the domain {} to '{}'.", domain.name, domain.customer);
            }
        }
        Command::Domain(DomainCommand::Show { domain, json }) => {
            let domain = engine.domain(domain).await?;
            if json.json {
                print_json(&domain)?;
            } else {
                output::domains_table(std::slice::from_ref(&domain));
            }
        }
        Command::Domain(DomainCommand::Set {
            domain,
            assignments,
            json,
        }) => {
            let domain = engine.set_domain(domain, assignments).await?;
            if json.json {
                print_json(&domain)?;
            } else {
                output::domains_table(std::slice::from_ref(&domain));
            }
        }
        Command::Domain(DomainCommand::List { customer, json }) => {
            let domains = engine.domains(customer).await?;
            if json.json {
                print_json(&domains)?;
            } else {
                output::domains_table(&domains);
            }
        }
        Command::Source(SourceCommand::Add(SourceAdd::Office365(args))) => {
            return add_office365(engine, args).await;
        }
        Command::Source(SourceCommand::List {
            customer,
            include_removed,
            json,
        }) => {
            let sources = engine
                .sources(customer.as_deref(), *include_removed)
                .await?;
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
            let options = engine.set_source_options(*source_id, assignments).await?;
            if json.json {
                print_json(&options)?;
            } else {
                outln!("Source #{source_id} options:");
                for (key, value) in options.entries() {
                    outln!("  {key} = {value}");
                }
            }
        }
        Command::Source(SourceCommand::SetSecret { source_id, no_test }) => {
            let secret = read_secret(*source_id)?;
            engine.set_source_secret(*source_id, secret).await?;
            outln!("Stored the new client secret of source #{source_id} (encrypted).");
            key_generated_note(engine);
            if !no_test {
                let report = engine.test_source(*source_id).await?;
                output::connection_report(*source_id, &report);
                if !report.is_ready() {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Source(SourceCommand::Reconnect {
            source_id,
            client_id,
            authority_url,
            graph_url,
            ca_file,
            allow_insecure_http,
            json,
        }) => {
            let before = engine.source(*source_id).await?;
            let source = engine
                .reconnect_source(
                    *source_id,
                    Reconnect {
                        client_id: client_id.clone(),
                        authority_url: authority_url.clone(),
                        graph_url: graph_url.clone(),
                        ca_file: ca_file.clone(),
                        // Restated each time: a reconnect without it withdraws the permission.
                        allow_insecure_http: Some(*allow_insecure_http),
                    },
                )
                .await?;
            let report = engine.test_source(*source_id).await?;
            if json.json {
                print_json(&json!({"source": source, "connection": report}))?;
            } else {
                outln!("Source #{source_id} now connects with:");
                for key in ["client_id", "authority_url", "graph_url", "ca_file"] {
                    if let Some(value) = source.settings.get(key) {
                        outln!("  {key:<14} {}", value.as_str().unwrap_or_default());
                    }
                }
                let new_app = before.settings.get("client_id") != source.settings.get("client_id");
                if new_app {
                    outln!(
                        "The client secret belongs to an app registration: set the new app's secret with `usersync source set-secret {source_id}`."
                    );
                }
                output::connection_report(*source_id, &report);
            }
            if !report.is_ready() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Source(SourceCommand::Remove {
            source_id,
            keep_users,
            confirm_removals,
            json,
        }) => {
            let outcome = engine
                .remove_source(*source_id, *keep_users, *confirm_removals)
                .await?;
            if json.json {
                print_json(&outcome)?;
            } else {
                output::removal_report(&outcome);
            }
            if outcome.status == RunStatus::Failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Source(SourceCommand::Test { source_id, json }) => {
            let report = engine.test_source(*source_id).await?;
            if json.json {
                print_json(&report)?;
            } else {
                output::connection_report(*source_id, &report);
            }
            if !report.is_ready() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Source(SourceCommand::Show { source_id, json }) => {
            let source = engine.source(*source_id).await?;
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
            let mut create = *create_group;
            let added = loop {
                match engine
                    .add_filter_rule(*source_id, group, rule, create)
                    .await
                {
                    Err(EngineError::Store(StoreError::NotFound { what: "group", .. }))
                        if !create
                            && confirm(&format!(
                                "The group '{group}' does not exist. Create it?"
                            )) =>
                    {
                        create = true;
                    }
                    other => break other?,
                }
            };
            if json.json {
                print_json(&added)?;
            } else {
                outln!(
                    "Added rule {} -> {}: {}",
                    added.id,
                    added.group,
                    added.expression
                );
            }
        }
        Command::Filter(FilterCommand::List { source_id, json }) => {
            let rules = engine.filter_rules(*source_id).await?;
            if json.json {
                print_json(&rules)?;
            } else {
                output::rules_table(&rules);
            }
        }
        Command::Filter(FilterCommand::Remove { source_id, rule_id }) => {
            engine.remove_filter_rule(*source_id, *rule_id).await?;
            outln!("Removed rule {rule_id}.");
        }
        Command::Filter(FilterCommand::Move {
            source_id,
            rule_id,
            to,
            json,
        }) => {
            let rules = engine
                .move_filter_rule(*source_id, *rule_id, *to as usize)
                .await?;
            if json.json {
                print_json(&rules)?;
            } else {
                output::rules_table(&rules);
            }
        }
        Command::Preview { source_id, json } => {
            let progress = TerminalProgress::new(!json.json);
            let outcome = engine.preview(*source_id, &progress).await?;
            progress.finish();
            if outcome.status == RunStatus::Failed {
                return report_failure(&outcome, *source_id, json.json);
            }
            if json.json {
                print_json(&PlanReport::new(outcome.run_id, &outcome.plan))?;
            } else {
                output::plan_report(&outcome.plan, outcome.run_id, &outcome.stats);
            }
        }
        Command::Sync {
            source_id,
            confirm_removals,
            json,
        } => {
            let progress = TerminalProgress::new(!json.json);
            let outcome = if *confirm_removals {
                engine.confirm_source(*source_id, &progress).await?
            } else {
                engine.sync(*source_id, &progress).await?
            };
            progress.finish();
            return sync_result(&outcome, Some(*source_id), json.json);
        }
        Command::Users(UsersCommand::Add {
            address,
            customer,
            name,
            mailbox_type,
            json,
        }) => {
            let user = engine
                .add_user(NewUser {
                    customer: customer.clone(),
                    address: address.clone(),
                    display_name: name.clone(),
                    mailbox_type: *mailbox_type,
                })
                .await?;
            if json.json {
                print_json(&user)?;
            } else {
                outln!("Added {} to '{customer}' by hand.", user.address);
            }
        }
        Command::Users(UsersCommand::List {
            customer,
            include_removed,
            json,
        }) => {
            let users = engine.users(customer, *include_removed).await?;
            if json.json {
                print_json(&users)?;
            } else {
                output::users_table(&users);
            }
        }
        Command::Users(UsersCommand::Restore {
            address,
            customer,
            json,
        }) => {
            let user = engine.restore_user(customer, address).await?;
            if json.json {
                print_json(&user)?;
            } else {
                outln!(
                    "Restored {} in '{customer}' (group {}); it is kept by hand from now on.",
                    user.address,
                    user.group
                );
            }
        }
        Command::Groups(GroupsCommand::List { customer, json }) => {
            let groups = engine.groups(customer).await?;
            if json.json {
                print_json(&groups)?;
            } else {
                output::groups_table(&groups);
            }
        }
        Command::Groups(GroupsCommand::Add { name, customer }) => {
            let customer = engine.add_group(customer, name).await?;
            outln!("Added the group '{name}' to '{}'.", customer.name);
        }
        Command::Audit {
            customer,
            since,
            limit,
            json,
        } => {
            let entries = engine
                .audit(&AuditRequest {
                    customer: customer.clone(),
                    since: since.clone(),
                    limit: *limit,
                })
                .await?;
            if json.json {
                print_json(&entries)?;
            } else {
                output::audit_table(&entries);
            }
        }
        Command::Runs(RunsCommand::List {
            source,
            status,
            limit,
            json,
        }) => {
            let runs = engine.runs(*source, status, *limit).await?;
            if json.json {
                print_json(&runs)?;
            } else {
                output::runs_table(&runs);
            }
        }
        Command::Runs(RunsCommand::Show { run_id, json }) => {
            let run = engine.run_record(*run_id).await?;
            if json.json {
                print_json(&run)?;
            } else {
                output::run_details(&run);
            }
        }
        Command::Runs(RunsCommand::Cancel { run_id }) => {
            let was = engine.cancel(*run_id).await?;
            match was {
                RunStatus::Running => outln!(
                    "Cancelled run {run_id}: it was running; nothing more of it is applied or recorded."
                ),
                _ => outln!("Cancelled run {run_id} (it was {was})."),
            }
        }
        Command::Runs(RunsCommand::Confirm { run_id, json }) => {
            let progress = TerminalProgress::new(!json.json);
            let outcome = engine.confirm(*run_id, &progress).await?;
            progress.finish();
            return sync_result(&outcome, None, json.json);
        }
        Command::Source(SourceCommand::RunNow {
            source_id,
            wait,
            json,
        }) => {
            let queued = engine.run_now(*source_id).await?;
            let run_id = queued.run_id();
            if !wait {
                if json.json {
                    print_json(&queued)?;
                } else {
                    match queued {
                        Enqueued::Queued(_) => outln!(
                            "Queued run {run_id} of source #{source_id}; a worker (`usersync serve`) runs it."
                        ),
                        Enqueued::Folded(_) => outln!(
                            "A sync of source #{source_id} was queued already (run {run_id}); it is due now."
                        ),
                        Enqueued::Running(_) => {
                            outln!("Source #{source_id} is being synced now (run {run_id}).")
                        }
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !json.json {
                eprintln!("Waiting for run {run_id} (a worker runs it: `usersync serve`)...");
            }
            let run = loop {
                let run = engine.run_record(run_id).await?;
                if run.status.is_final() {
                    break run;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            };
            if json.json {
                print_json(&run)?;
            } else {
                output::run_details(&run);
            }
            if run.status == RunStatus::Failed || run.status == RunStatus::Cancelled {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Config { .. }
        | Command::Serve(_)
        | Command::Worker(_)
        | Command::Lookup(_)
        | Command::Sim(_)
        | Command::Demo(_)
        | Command::Bench(_)
        | Command::Key(_) => {
            unreachable!("handled above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `sync --json` shape that scripts rely on: counts of what was applied.
pub fn sync_json(outcome: &RunOutcome) -> serde_json::Value {
    let applied = |n: usize| {
        if matches!(outcome.status, RunStatus::Succeeded | RunStatus::Held) {
            n
        } else {
            0
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
        "warnings": applied(p.warnings.len()),
        "linked": applied(p.linked()),
        "held": applied(p.held.len()),
        "duration_ms": outcome.stats.duration_ms,
        "requests": outcome.stats.requests,
        "read_mode": outcome.stats.read_mode,
        "read_detail": outcome.stats.read_detail,
        "planned_objects": outcome.stats.planned_objects,
        "mirror_read": outcome.stats.mirror_read,
        "written_while_reading": outcome.stats.written_while_reading,
        "error": outcome.error,
        "retry_in_secs": outcome.retry_in_secs,
        "remedy": outcome.remedy,
    })
}

/// Prints how a sync ended; exit 1 unless it applied (held counts: it applied its adds
/// and updates, and says what waits).
fn sync_result(
    outcome: &RunOutcome,
    source_id: Option<i64>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    if as_json {
        print_json(&sync_json(outcome))?;
    } else {
        output::sync_report(outcome, source_id);
    }
    Ok(match outcome.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Held => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    })
}

fn report_failure(outcome: &RunOutcome, source_id: i64, as_json: bool) -> anyhow::Result<ExitCode> {
    let error = outcome.error.as_deref().unwrap_or("unknown error");
    if as_json {
        print_json(
            &json!({"run_id": outcome.run_id, "status": outcome.status, "error": error, "remedy": outcome.remedy}),
        )?;
    } else {
        eprintln!("error: run {} failed: {error}", outcome.run_id);
        output::remedy_hint(outcome, Some(source_id));
    }
    Ok(ExitCode::FAILURE)
}

async fn add_office365(engine: &Engine, args: &Office365Args) -> anyhow::Result<ExitCode> {
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
        allow_insecure_http: args.allow_insecure_http,
        options: usersync_core::SourceOptions {
            email_method: args.email_method,
            ..Default::default()
        },
        setup_step: None,
        delegated: false,
    };
    let source = engine
        .add_office365_source(NewOffice365 {
            customer: args.customer.clone(),
            tenant_id: args.tenant.clone(),
            settings,
            client_secret: SecretString::new(secret),
        })
        .await?;
    // The source is added either way; the test says at once what is missing.
    let report: Option<ConnectionReport> = if args.no_test {
        None
    } else {
        Some(engine.test_source(source.id).await?)
    };
    if args.json.json {
        print_json(&json!({"id": source.id, "connection": report}))?;
    } else {
        outln!(
            "Added source #{} (office365, tenant {}) to '{}'.",
            source.id,
            source.tenant_id,
            source.customer
        );
        key_generated_note(engine);
        match &report {
            Some(report) if !report.is_ready() => {
                eprintln!(
                    "warning: the connection test failed; the source was added, but it cannot sync until this is fixed:"
                );
                output::connection_report(source.id, report);
            }
            Some(report) => {
                output::connection_report(source.id, report);
                outln!("Next: `usersync preview {}`.", source.id);
            }
            None => outln!("Next: `usersync source test {}`.", source.id),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Says so when storing a secret generated the key file: it must be backed up.
fn key_generated_note(engine: &Engine) {
    if let Some(path) = engine.generated_key_file() {
        outln!(
            "Generated the key file {} that encrypts secrets at rest: back it up with the database.",
            path.display()
        );
    }
}

/// A new account's password: typed twice on the terminal (not shown), or the first line
/// of stdin. Never an argument.
fn read_password(email: &str) -> anyhow::Result<SecretString> {
    use std::io::{BufRead, IsTerminal};
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {email} (not shown): "))
            .context("reading the password from the terminal")?;
        let again = rpassword::prompt_password("The same password again: ")
            .context("reading the password from the terminal")?;
        if first != again {
            anyhow::bail!("the two passwords differ; nothing was made");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    Ok(SecretString::new(password))
}

/// The new secret: typed on the terminal (not shown); else the first line of stdin; else,
/// when stdin gives nothing, USERSYNC_M365_CLIENT_SECRET (said so). Never an argument: it
/// would show in `ps` and the shell's history.
fn read_secret(source_id: i64) -> anyhow::Result<SecretString> {
    use std::io::{BufRead, IsTerminal};
    let mut secret = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!(
            "Client secret of source #{source_id} (the secret's value, not shown): "
        ))
        .context("reading the secret from the terminal")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the secret from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if secret.trim().is_empty()
        && let Ok(from_env) = std::env::var("USERSYNC_M365_CLIENT_SECRET")
        && !from_env.trim().is_empty()
    {
        eprintln!("Using the secret in USERSYNC_M365_CLIENT_SECRET.");
        secret = from_env;
    }
    if secret.trim().is_empty() {
        anyhow::bail!(
            "no secret was given: type it when asked, pipe it on stdin, or set USERSYNC_M365_CLIENT_SECRET"
        );
    }
    Ok(SecretString::new(secret))
}

/// `usersync key reset`: forgets the stored secrets of a database whose key was lost.
async fn reset_key(cli: &Cli, yes: bool) -> anyhow::Result<ExitCode> {
    let mut options = cli.store_options();
    options.verify_key = false;
    let store = Store::open(options)
        .await
        .map_err(|e| with_hint(e.into()))?;
    let engine = Engine::new(store, cli.engine_options());
    let sources: Vec<_> = engine
        .sources(None, false)
        .await?
        .into_iter()
        .filter(|s| s.has_secret)
        .collect();
    let ids: Vec<String> = sources.iter().map(|s| format!("#{}", s.id)).collect();
    let question = format!(
        "This forgets the client secrets of {} source(s) ({}); they cannot sync until each gets \
         its secret again with `usersync source set-secret SOURCE_ID`. {} is used from now on. Go on?",
        sources.len(),
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        },
        engine.key_description()
    );
    if !yes && !confirm(&question) {
        eprintln!("Nothing was changed (on a terminal, answer y; elsewhere, add --yes).");
        engine.close().await;
        return Ok(ExitCode::FAILURE);
    }
    let forgotten = engine.forget_secrets().await?;
    engine.close().await;
    outln!("Forgot the secrets of {} source(s).", forgotten.len());
    for s in &forgotten {
        outln!("  usersync source set-secret {}", s.id);
    }
    Ok(ExitCode::SUCCESS)
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
    let key_origin = match (&cli.secret_key, &cli.secret_key_file) {
        (Some(_), _) => "env USERSYNC_SECRET_KEY".to_string(),
        (None, Some(_)) => origin("USERSYNC_SECRET_KEY_FILE", "--secret-key-file"),
        (None, None) => "default".to_string(),
    };
    let key = match cli.store_options().key_location() {
        Ok(KeyLocation::Environment) => ("*** (set)".to_string(), key_origin),
        Ok(location @ KeyLocation::File { .. }) => (location.describe(), key_origin),
        Ok(KeyLocation::Unset) => (
            "(none: a PostgreSQL database needs USERSYNC_SECRET_KEY or USERSYNC_SECRET_KEY_FILE)"
                .to_string(),
            key_origin,
        ),
        Err(e) => (format!("(unknown: {e})"), key_origin),
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
            usersync_store::mask_password(&cli.database),
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
            "busy_timeout",
            format!("{} s", cli.busy_timeout.as_secs()),
            origin("USERSYNC_BUSY_TIMEOUT", "default"),
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
            outln!("{k:<20} {v}  [{o}]");
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
