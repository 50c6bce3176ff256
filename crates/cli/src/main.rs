//! The `usersync` command: parses arguments, opens the store, calls the engine, prints.
//! Nothing else lives here: no sync logic, no SQL, no Graph.

mod bench;
mod bench_lookup;
mod commands;
mod demo;
mod fleet;
mod lookup;
mod output;
mod progress;
mod serve;
mod sim;
mod table;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use usersync_core::EmailMethod;
use usersync_store::{DEFAULT_DATABASE_URL, KeySource, RunStatus, Store, StoreOptions};

/// A sync makes and drops millions of small strings (a page's users, the plan, the rows
/// bound to statements): glibc's allocator spent a fifth of a first sync's main thread
/// merging freed chunks; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (include/mimalloc.h); the
/// bindings name no constant for it. A test checks the major version.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// mimalloc gives memory freed in bulk back to the system a second later by default; a
/// first sync frees the read's copy of the tenant while it makes the snapshot, and for
/// that second both were resident (at 1,000,000 users, the run's peak: 1.57 GB where it
/// is 1.45 GB with a tenth of a second). Given back at once, a sync spent 7 % more
/// processor time on it; after 100 ms, within the noise. `MIMALLOC_PURGE_DELAY` (in
/// milliseconds) still decides when set.
fn give_back_freed_memory_soon() {
    unsafe extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called once at start, before any other thread runs.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
    }
}

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
    /// A file holding the key that encrypts secrets at rest [default: DATABASE_FILE.key
    /// beside a SQLite database; none for PostgreSQL]. Generated with the first secret.
    #[arg(long, global = true, env = "USERSYNC_SECRET_KEY_FILE")]
    secret_key_file: Option<std::path::PathBuf>,
    /// How long a command waits for another sync that is writing to the same SQLite
    /// database before it gives up, e.g. 120s, 10m.
    #[arg(long, global = true, env = "USERSYNC_BUSY_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    busy_timeout: Duration,
    /// Log lines as text for people, or as JSON objects for a log collector.
    #[arg(long, global = true, env = "USERSYNC_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// How long a claimed run holds without its worker renewing the lease; then another
    /// worker takes it over.
    #[arg(long, global = true, env = "USERSYNC_LEASE", default_value = "120s", value_parser = parse_duration, hide = true)]
    lease: Duration,
    /// How often a run renews its lease.
    #[arg(long, global = true, env = "USERSYNC_HEARTBEAT", default_value = "15s", value_parser = parse_duration, hide = true)]
    heartbeat: Duration,
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
    ///
    /// Removals beyond the source's deletion threshold are held (the rest applies) and the
    /// run ends "held"; `usersync runs confirm RUN_ID` applies them.
    Sync {
        source_id: i64,
        /// Apply the removals the deletion safeguard holds for this source (what
        /// `usersync runs confirm` does for its held run), checked against the tenant now.
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
    /// The audit log: every change to the directory and the configuration, by whom.
    Audit {
        /// Only this customer's changes.
        #[arg(long)]
        customer: Option<String>,
        /// Only changes at or after this time: 2026-11-30T10:00:00Z, 2026-11-30, or an
        /// age such as 30m, 12h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// How many entries at most, newest first.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The key that encrypts secrets at rest.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Console accounts: `admin create EMAIL` makes the first provider admin.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// API tokens for /api/v1 (`Authorization: Bearer TOKEN`).
    #[command(subcommand)]
    Token(TokenCommand),
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
    /// Run as a service: the scheduler, workers, and /healthz, /readyz, /metrics.
    ///
    /// Sources with auto_sync=true sync every interval; queued syncs (run-now, retries)
    /// are executed. SQLite: one serve process. PostgreSQL: any number of serve and worker
    /// processes on one database, with the same secret key.
    Serve(serve::ServeArgs),
    /// Run workers only: execute queued syncs (more machines on one PostgreSQL database).
    Worker(serve::WorkerArgs),
    /// Answer the mail system's lookups (Postfix socketmap): recipients, domains, routes.
    #[command(subcommand)]
    Lookup(LookupCommand),
}

#[derive(Debug, Subcommand)]
enum LookupCommand {
    /// Serve Postfix's socketmap lookups from the directory, held in memory and reloaded
    /// when it changes, until Ctrl-C or SIGTERM. In Postfix's main.cf:
    ///
    ///     relay_domains = socketmap:inet:127.0.0.1:10027:domains
    ///     relay_recipient_maps = socketmap:inet:127.0.0.1:10027:recipients
    ///     transport_maps = socketmap:inet:127.0.0.1:10027:transport
    #[command(verbatim_doc_comment)]
    Serve(lookup::LookupServeArgs),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Forget every stored client secret, after the key was lost.
    ///
    /// Then the database can be used with a new key; set each source's secret again with
    /// `usersync source set-secret SOURCE_ID`.
    Reset {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Make a console account. The password is asked on the terminal (twice), or read
    /// from the first line of stdin when stdin is not a terminal; at least 12 characters.
    Create {
        email: String,
        /// provider_admin (every customer), customer_admin (one customer, --customer) or
        /// read_only (every customer, or one with --customer).
        #[arg(long, default_value = "provider_admin", value_parser = parse_role)]
        role: usersync_core::Role,
        /// The customer a customer_admin (or a read_only account) is bound to.
        #[arg(long)]
        customer: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List the console accounts.
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make an API token; it is printed once (only its hash is kept).
    Create {
        /// provider_admin, customer_admin (with --customer) or read_only.
        #[arg(long, value_parser = parse_role)]
        role: usersync_core::Role,
        /// The customer the token is bound to.
        #[arg(long)]
        customer: Option<String>,
        /// What the token is for, as shown in lists and the audit log.
        #[arg(long, default_value = "api")]
        name: String,
        /// Print {"token": ..., "id": ...} as JSON.
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List API tokens (never their text), newest first.
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Revoke a token: it authenticates nothing from now on.
    Revoke { token_id: i64 },
}

fn parse_role(text: &str) -> Result<usersync_core::Role, String> {
    text.parse()
        .map_err(|e: usersync_core::UnknownValue| e.to_string())
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
    /// Change a customer's settings: retention=DAYS (how long removed users are kept,
    /// restorable, before they are purged; default 30d).
    Set {
        name: String,
        /// KEY=VALUE, e.g. retention=30d.
        #[arg(required = true)]
        assignments: Vec<String>,
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
    /// Change a domain's settings: route=TRANSPORT:NEXTHOP, where the mail system sends
    /// its mail on (`usersync lookup serve`'s transport map), e.g.
    /// route=smtp:[mx.example.net]:25; route= (empty) goes back to the default, a
    /// Microsoft 365 domain's Exchange Online host.
    Set {
        domain: String,
        /// KEY=VALUE.
        #[arg(required = true)]
        assignments: Vec<String>,
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
        /// Also list removed sources.
        #[arg(long)]
        include_removed: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Replace the client secret of a source (wrong, expired, or after `key reset`).
    ///
    /// The secret is read from the terminal (not shown), or from stdin when it is not a
    /// terminal, or, when stdin gives nothing, from USERSYNC_M365_CLIENT_SECRET; never from
    /// an argument. The connection is tested afterwards.
    SetSecret {
        source_id: i64,
        /// Do not test the connection with the new secret.
        #[arg(long)]
        no_test: bool,
    },
    /// Change how a source connects: app registration, endpoints.
    ///
    /// Its tenant and options stay. The new settings are checked like a new source's, and
    /// the connection is tested afterwards.
    Reconnect {
        source_id: i64,
        /// The application (client) id of the app registered in Microsoft Entra ID.
        #[arg(long)]
        client_id: Option<String>,
        /// The identity platform, e.g. https://login.microsoftonline.us.
        #[arg(long)]
        authority_url: Option<String>,
        /// Microsoft Graph, e.g. https://graph.microsoft.us.
        #[arg(long)]
        graph_url: Option<String>,
        /// A PEM file of extra root certificates to trust.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
        /// Allow plain http:// endpoints on a host other than this machine (secrets and
        /// tokens travel unencrypted). Given or not at each reconnect.
        #[arg(long)]
        allow_insecure_http: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a source, with its users or keeping them.
    ///
    /// Its users are removed like users gone from the tenant (kept as removed,
    /// restorable), through the deletion safeguard; with --keep-users they stay and no sync
    /// manages them any more. Its runs are kept, its secret erased; the tenant can be
    /// connected again.
    Remove {
        source_id: i64,
        /// Keep the source's users, unmanaged.
        #[arg(long, conflicts_with = "confirm_removals")]
        keep_users: bool,
        /// Remove the users even when they are more than the deletion safeguard allows.
        #[arg(long)]
        confirm_removals: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Test the connection: each permission the sync needs, granted or missing.
    ///
    /// Signs in to the tenant and tries one read of each kind a sync makes (a page of
    /// users, of groups, the domains, one mailbox setting). Exit code 1 when it cannot sync.
    Test {
        source_id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Set options of a source, e.g. `exclude_guests=true deny_list=ceo@contoso.com`.
    ///
    /// All are applied or none; an unknown key or bad value lists the valid ones.
    Set {
        source_id: i64,
        /// KEY=VALUE pairs; `usersync source show ID` lists every key with its value.
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Queue a sync of the source for the service's workers, due now.
    ///
    /// A sync already queued absorbs it. With --wait, waits until the run has ended and
    /// exits 1 when it failed.
    RunNow {
        source_id: i64,
        #[arg(long)]
        wait: bool,
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
    /// Allow plain http:// endpoints on a host other than this machine (secrets and tokens
    /// travel unencrypted); http on loopback (the simulator) needs no flag.
    #[arg(long)]
    allow_insecure_http: bool,
    /// Do not test the connection after adding the source.
    #[arg(long)]
    no_test: bool,
    #[command(flatten)]
    json: JsonFlag,
}

/// `90s`, `10m`, `1h` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration; use e.g. 120s, 10m or 1h"))?;
    let seconds = match unit.trim() {
        "" | "s" => n,
        "m" | "min" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => {
            return Err(format!(
                "'{text}' is not a duration; use e.g. 120s, 10m or 1h"
            ));
        }
    };
    Ok(Duration::from_secs(seconds))
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
    /// Bring a removed user back (same entry, group, aliases and services). It is kept by
    /// hand from then on: no sync removes it, until a tenant lists the address again.
    Restore {
        address: String,
        #[arg(long)]
        customer: String,
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
        /// Only runs of these statuses: queued, running, succeeded, failed, held, cancelled
        /// (comma-separated or repeated).
        #[arg(long, value_delimiter = ',', value_parser = parse_status)]
        status: Vec<RunStatus>,
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
    /// Cancel a queued or running run; a running one applies nothing from then on.
    Cancel { run_id: i64 },
    /// Apply the removals a held run held, those the tenant still agrees with.
    ///
    /// The tenant is read again now; what a sync would do besides is applied too.
    Confirm {
        run_id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

fn parse_status(text: &str) -> Result<RunStatus, String> {
    text.trim().parse().map_err(|()| {
        let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "'{text}' is not a run status; use one of: {}",
            all.join(", ")
        )
    })
}

impl Cli {
    fn store_options(&self) -> StoreOptions {
        let mut options = StoreOptions::new(&self.database);
        options.key = match (&self.secret_key, &self.secret_key_file) {
            (Some(key), _) => KeySource::Base64(key.clone()),
            (None, Some(path)) => KeySource::File(path.clone()),
            (None, None) => KeySource::Default,
        };
        options.busy_timeout = self.busy_timeout;
        options
    }

    /// How the engine runs, from the global options; runs and changes are recorded as made
    /// by the operating-system user.
    fn engine_options(&self) -> usersync_engine::EngineOptions {
        usersync_engine::EngineOptions {
            lease: self.lease,
            heartbeat_every: self.heartbeat.min(self.lease / 2),
            actor: os_user(),
            ..Default::default()
        }
    }

    /// Opens the database; a refusal says which command mends it.
    async fn open_store(&self) -> anyhow::Result<Store> {
        Store::open(self.store_options())
            .await
            .map_err(|e| commands::with_hint(e.into()))
    }
}

/// The operating-system user running the command, as recorded with runs and changes.
fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .or_else(user_of_this_process)
        .unwrap_or_else(|| "unknown user".to_string())
}

/// The name of this process's user from the system's account list (where no login shell
/// set USER: a service, a container), else `uid N`.
fn user_of_this_process() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_string())
    });
    Some(name.unwrap_or_else(|| format!("uid {uid}")))
}

/// Colour only where a person reads it: stderr is a terminal and NO_COLOR is not set.
fn log_colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    give_back_freed_memory_soon();
    let cli = Cli::parse();
    // A service logs what it does; a command only what went wrong.
    let default_level = match cli.command {
        Command::Serve(_) | Command::Worker(_) | Command::Lookup(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("USERSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().with_current_span(true).init();
    } else {
        logs.with_ansi(log_colours()).init();
    }
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
            eprintln!("error: {}", usersync_engine::error_text(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_allocator_option_set_at_start_is_mimalloc_3s_purge_delay() {
        unsafe extern "C" {
            fn mi_version() -> std::ffi::c_int;
            fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
        }
        // SAFETY: plain reads of the allocator's version and options.
        let (version, delay) =
            unsafe { (mi_version(), mi_option_get(super::MI_OPTION_PURGE_DELAY)) };
        assert_eq!(
            version / 10_000,
            3,
            "mimalloc {version}: check the option's number"
        );
        // Its default, before `main` sets it: 1,000 ms in mimalloc 3.
        assert!(
            std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() || delay == 1_000,
            "the purge delay reads {delay}"
        );
    }
}
