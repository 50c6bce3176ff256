//! The `usersync` command: parses arguments, opens the store, calls the engine, prints.
//! Nothing else lives here: no sync logic, no SQL, no Graph.

mod bench;
mod commands;
mod demo;
mod output;
mod progress;
mod sim;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use usersync_core::EmailMethod;
use usersync_store::{DEFAULT_DATABASE_URL, KeySource, Store, StoreOptions};

/// Keeps an email-security console's users in step with Microsoft 365 tenants.
#[derive(Debug, Parser)]
#[command(name = "usersync", version, about, max_term_width = 100)]
struct Cli {
    /// The database: sqlite://PATH (created on first use) or postgres://USER@HOST:PORT/DB.
    #[arg(long, global = true, env = "USERSYNC_DATABASE_URL", hide_env_values = true, default_value = DEFAULT_DATABASE_URL)]
    database: String,
    /// The key that encrypts secrets at rest, 32 bytes in base64 [default: a key file beside
    /// the SQLite database, generated on first use].
    #[arg(
        long,
        global = true,
        env = "USERSYNC_SECRET_KEY",
        hide_env_values = true,
        hide = true
    )]
    secret_key: Option<String>,
    /// A file holding the key that encrypts secrets at rest (generated if missing).
    #[arg(long, global = true, env = "USERSYNC_SECRET_KEY_FILE")]
    secret_key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone, Copy)]
struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Customers: the organisations whose mail is protected.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Mail domains of a customer; only addresses in them are synced.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// User sources: connections that feed users into a customer.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Filter rules of a source: ordered conditions that send users to a destination group.
    #[command(subcommand)]
    Filter(FilterCommand),
    /// Show what a sync would add, update, remove and skip, changing nothing.
    Preview {
        /// The source's id (`usersync source list`).
        source_id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Sync & Save: read the source and apply the plan, all of it or nothing.
    Sync {
        source_id: i64,
        /// Apply removals beyond the deletion safeguard (more than 10% of the source's
        /// users and at least 20), after checking them with a preview.
        #[arg(long)]
        confirm_removals: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The console directory's users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Console groups of a customer, with their members.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Sync runs: every preview and sync, with its plan and outcome.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Print the effective configuration (secrets masked) and where each value comes from.
    Config {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Run the Microsoft 365 simulator (identity platform + Graph v1.0) until Ctrl-C.
    Sim(sim::SimArgs),
    /// A tour on a simulated tenant: connect, preview, sync, change the tenant, sync again.
    Demo(demo::DemoArgs),
    /// Measure full syncs of simulated tenants (10,000 and 100,000 users by default).
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum CustomerCommand {
    /// Add a customer (with its group "Main").
    Add {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List the customers.
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum DomainCommand {
    /// Add a mail domain to a customer.
    Add {
        domain: String,
        #[arg(long)]
        customer: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one domain: its customer, how it was added, and its protection switches.
    Show {
        domain: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List a customer's domains.
    List {
        #[arg(long)]
        customer: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum SourceCommand {
    /// Add a source to a customer.
    #[command(subcommand)]
    Add(SourceAdd),
    /// List the sources, of one customer or of all.
    List {
        #[arg(long)]
        customer: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Set options of a source, e.g. `exclude_guests=true deny_list=ceo@contoso.com`.
    /// All are applied or none; an unknown key or bad value lists the valid ones.
    Set {
        source_id: i64,
        /// KEY=VALUE pairs; `usersync source show ID` lists every key with its value.
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one source and its settings (secrets are never shown).
    Show {
        source_id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum FilterCommand {
    /// Append a rule: clauses `field operator value` joined by "and", e.g.
    /// 'jobTitle equals Driver and accountEnabled is_true'. The first matching rule wins.
    Add {
        source_id: i64,
        /// The destination console group of users the rule matches.
        #[arg(long)]
        group: String,
        /// The rule. Fields: memberOf, accountEnabled, assignedLicenses, companyName,
        /// department, displayName, givenName, jobTitle, mail, mailEnabled, userType,
        /// surname, proxyAddresses, userPrincipalName, id. Operators: equals, not_equals,
        /// contains, starts_with, ends_with, matches, is_true, is_false, is_empty,
        /// is_not_empty, in.
        rule: String,
        /// Create the destination group if it does not exist yet.
        #[arg(long)]
        create_group: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List a source's rules in order.
    List {
        source_id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a rule.
    Remove { source_id: i64, rule_id: i64 },
    /// Move a rule to position N (1 is first).
    Move {
        source_id: i64,
        rule_id: i64,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        to: u32,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum SourceAdd {
    /// Connect a Microsoft 365 tenant through the app registered in Microsoft Entra ID.
    /// The client secret is read from USERSYNC_M365_CLIENT_SECRET and stored encrypted.
    Office365(Office365Args),
}

#[derive(Debug, Args)]
struct Office365Args {
    #[arg(long)]
    customer: String,
    /// The tenant (directory) id of the customer's Microsoft 365.
    #[arg(long)]
    tenant: String,
    /// The application (client) id.
    #[arg(long, env = "USERSYNC_M365_CLIENT_ID")]
    client_id: Option<String>,
    /// The identity platform [default: https://login.microsoftonline.com].
    #[arg(long, env = "USERSYNC_M365_AUTHORITY_URL")]
    authority_url: Option<String>,
    /// Microsoft Graph [default: https://graph.microsoft.com].
    #[arg(long, env = "USERSYNC_M365_GRAPH_URL")]
    graph_url: Option<String>,
    /// How the primary address is chosen.
    #[arg(long, value_parser = parse_email_method, default_value = "primary_smtp")]
    email_method: EmailMethod,
    /// A PEM file of extra root certificates to trust (the simulator's with --tls).
    #[arg(long, env = "USERSYNC_M365_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    json: JsonFlag,
}

fn parse_mailbox_type(text: &str) -> Result<usersync_core::MailboxType, String> {
    text.parse()
        .map_err(|e: usersync_core::UnknownValue| e.to_string())
}

fn parse_email_method(text: &str) -> Result<EmailMethod, String> {
    text.parse()
        .map_err(|e: usersync_core::UnknownValue| e.to_string())
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add a user by hand; no sync changes or removes it, but a source may adopt
    /// ("link") it when it finds the same address.
    Add {
        address: String,
        #[arg(long)]
        customer: String,
        /// Display name [default: the address].
        #[arg(long)]
        name: Option<String>,
        /// Mailbox type.
        #[arg(long = "type", default_value = "user", value_parser = parse_mailbox_type)]
        mailbox_type: usersync_core::MailboxType,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List a customer's users (active ones; removed ones too with --include-removed).
    List {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        include_removed: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum GroupsCommand {
    /// List a customer's console groups with their members.
    List {
        #[arg(long)]
        customer: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Add a console group (e.g. a target for group_map).
    Add {
        name: String,
        #[arg(long)]
        customer: String,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        source: Option<i64>,
        /// How many runs at most.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one run with its plan.
    Show {
        run_id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

impl Cli {
    fn store_options(&self) -> StoreOptions {
        let mut options = StoreOptions::new(&self.database);
        options.key = match (&self.secret_key, &self.secret_key_file) {
            (Some(key), _) => KeySource::Base64(key.clone()),
            (None, Some(path)) => KeySource::File(path.clone()),
            (None, None) => KeySource::Default,
        };
        options
    }

    async fn open_store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(self.store_options()).await?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("USERSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
