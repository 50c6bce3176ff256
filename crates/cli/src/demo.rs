//! `usersync demo`: the whole product on a simulated tenant, with nothing to set up.

use std::process::ExitCode;

use clap::Args;
use usersync_engine::{Engine, NewOffice365, Office365Settings, RunOutcome};
use usersync_sim::{SimConfig, Simulator};
use usersync_store::{RunStatus, SecretString};

use crate::progress::TerminalProgress;
use crate::{Cli, outln};

/// The demo's own database, made anew on each run, unless --database names another.
const DEMO_DATABASE: &str = "usersync-demo.db";
const CUSTOMER: &str = "Contoso (demo)";
/// The console account the demo makes (its password is new on each run).
const DEMO_ACCOUNT: &str = "demo@usersync.example";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Users in the simulated tenant.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Seed of the simulated tenant.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// End after the tour instead of serving the console (for scripts).
    #[arg(long)]
    no_serve: bool,
    /// Where the console listens after the tour (another free port when it is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
}

pub async fn run(cli: &Cli, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let mut options = cli.store_options();
    let own_database = cli.database == usersync_store::DEFAULT_DATABASE_URL;
    if own_database {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{DEMO_DATABASE}{suffix}"));
        }
        options.url = format!("sqlite://{DEMO_DATABASE}");
    }
    let database = options.url.clone();
    let engine = Engine::new(
        usersync_store::Store::open(options).await?,
        cli.engine_options(),
    );

    outln!(
        "1. Starting the bundled Microsoft 365 simulator with {} users...",
        args.users
    );
    let sim = Simulator::start(SimConfig {
        users: args.users,
        seed: args.seed,
        ..SimConfig::default()
    })
    .await?;
    let info = sim.info().clone();
    outln!("   tenant {} at {}", info.tenant_id, info.graph_url);

    outln!("2. Creating the customer '{CUSTOMER}' with the tenant's mail domains...");
    let customer = engine.add_customer(CUSTOMER).await?;
    for domain in &info.mail_domains {
        engine.add_domain(&customer.name, domain).await?;
        outln!("   + {domain}");
    }

    outln!("3. Connecting the tenant as an office365 source...");
    let source = engine
        .add_office365_source(NewOffice365 {
            customer: customer.name.clone(),
            tenant_id: info.tenant_id.clone(),
            settings: Office365Settings::new(&info.client_id, &info.authority_url, &info.graph_url),
            client_secret: SecretString::new(info.client_secret.clone()),
        })
        .await?;
    outln!("   source #{} (client secret stored encrypted)", source.id);

    outln!("4. Preview (changes nothing):");
    let preview = step(
        engine
            .preview(source.id, &TerminalProgress::new(true))
            .await?,
    )?;
    summary(&preview);
    let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
    for skip in &preview.plan.skip {
        *reasons.entry(skip.code.as_str()).or_default() += 1;
    }
    for (code, n) in reasons {
        outln!("     skipped {n:>4} x {code}");
    }

    outln!("5. Sync & Save:");
    let first = step(engine.sync(source.id, &TerminalProgress::new(true)).await?)?;
    summary(&first);

    outln!("6. Changing the tenant: one user deleted, one added, one given a new alias...");
    let tenant = sim.tenant();
    let synced: Vec<_> = tenant
        .users()
        .into_iter()
        .filter(|u| {
            first
                .plan
                .add
                .iter()
                .any(|a| a.source_object_id.as_deref() == Some(u.id.as_str()))
        })
        .collect();
    if let [gone, changed, ..] = synced.as_slice() {
        tenant.delete_user(&gone.id)?;
        outln!("   - deleted {}", gone.display_name);
        let domain = info.mail_domains.first().cloned().unwrap_or_default();
        let alias = format!(
            "{}.alias@{domain}",
            changed.id.split('-').next().unwrap_or("x")
        );
        tenant.update_user(&changed.id, |u| {
            u.proxy_addresses.push(format!("smtp:{alias}"))
        })?;
        outln!("   ~ {} gets the alias {alias}", changed.display_name);
    }
    let newcomer = tenant.new_member("Demo Newcomer");
    tenant.add_user(newcomer)?;
    outln!("   + added Demo Newcomer");

    outln!("7. Sync & Save again:");
    let second = step(engine.sync(source.id, &TerminalProgress::new(true)).await?)?;
    summary(&second);
    for u in &second.plan.remove {
        outln!("     removed {} (kept as removed, restorable)", u.address);
    }
    for u in &second.plan.update {
        outln!(
            "     updated {}: {}",
            u.address,
            u.changes.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }

    if !args.no_serve {
        // The console, on this database and this simulator, until Ctrl-C.
        let password = usersync_engine::random_token();
        let account = engine
            .create_account(
                DEMO_ACCOUNT,
                &SecretString::new(password.clone()),
                usersync_core::Role::ProviderAdmin,
                None,
            )
            .await?;
        outln!(
            "\n8. The console: sign in as {} with the password {password}",
            account.email
        );
        outln!(
            "   (the tenant's administrator for \"Connect Office 365\" is admin@{})",
            info.mail_domains.first().cloned().unwrap_or_default()
        );
        let app = usersync_engine::Office365App {
            client_id: info.client_id.clone(),
            client_secret: SecretString::new(info.client_secret.clone()),
            authority_url: info.authority_url.clone(),
            graph_url: info.graph_url.clone(),
        };
        let code = crate::serve::serve_demo(engine.clone(), args.listen, app).await;
        sim.shutdown().await;
        engine.close().await;
        return code;
    }
    sim.shutdown().await;
    engine.close().await;
    let db = if own_database {
        format!(" --database sqlite://{DEMO_DATABASE}")
    } else {
        String::new()
    };
    // Name the binary that ran (after `cargo run` it is not on the PATH).
    let me = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let cwd = std::env::current_dir().ok()?;
            Some(
                exe.strip_prefix(&cwd)
                    .map(|p| p.to_path_buf())
                    .unwrap_or(exe),
            )
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "usersync".into());
    outln!("\nDone. The directory is in {database}. Look at it with:");
    outln!("  {me}{db} users list --customer '{CUSTOMER}'");
    outln!("  {me}{db} users list --customer '{CUSTOMER}' --include-removed --json");
    outln!("  {me}{db} runs list");
    outln!("  {me}{db} runs show {}", second.run_id);
    outln!(
        "Run a simulator of your own with `{me} sim --users 1000` and connect it as in README.md."
    );
    Ok(ExitCode::SUCCESS)
}

fn step(outcome: RunOutcome) -> anyhow::Result<RunOutcome> {
    if outcome.status == RunStatus::Failed {
        anyhow::bail!(
            "run {} failed: {}",
            outcome.run_id,
            outcome.error.unwrap_or_default()
        );
    }
    Ok(outcome)
}

fn summary(o: &RunOutcome) {
    outln!(
        "   run {}: {} to add, {} to update, {} to remove, {} skipped ({} users and {} groups read with {} requests in {} ms)",
        o.run_id,
        o.plan.add.len(),
        o.plan.update.len(),
        o.plan.remove.len(),
        o.plan.skip.len(),
        o.stats.read_users,
        o.stats.read_groups,
        o.stats.requests,
        o.stats.duration_ms
    );
    match (o.stats.read_mode.as_deref(), o.stats.read_detail.as_deref()) {
        (Some("delta"), Some(detail)) => {
            outln!("     read only what changed since the last sync (delta): {detail}")
        }
        (Some("full"), Some(detail)) => outln!("     read the whole tenant: {detail}"),
        _ => {}
    }
}
