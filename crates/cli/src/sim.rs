//! `usersync sim`: the Microsoft 365 simulator as a long-running process.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::outln;
use usersync_sim::{SimConfig, Simulator, Throttle};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free port (the printed URLs show it).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Users in the generated tenant (in each, with --tenants).
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Seed of the generated tenant: the same users and seed give the same tenant.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tenants served, each with its own id, app credentials, domains and users; the
    /// start line shows the first.
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Write every tenant's connection details here, as a JSON array of objects shaped
    /// like the start line.
    #[arg(long, value_name = "FILE")]
    tenants_out: Option<PathBuf>,
    /// Largest page served, whatever $top asks for.
    #[arg(long)]
    page_size_cap: Option<usize>,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Answer every Nth Graph request with 429 Too Many Requests.
    #[arg(long)]
    throttle_every: Option<u64>,
    /// Answer requests beyond this many per second with 429.
    #[arg(long)]
    throttle_per_second: Option<u32>,
    /// The Retry-After (seconds) of throttled answers.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// Serve HTTPS with a self-signed certificate.
    #[arg(long)]
    tls: bool,
    /// With --tls, write the certificate (PEM) here for clients to trust (--ca-file).
    #[arg(long)]
    tls_cert_out: Option<PathBuf>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime: u64,
    /// Act as a tenant that has not consented to the app (token requests fail).
    #[arg(long)]
    no_consent: bool,
    /// Remove an application permission from the app (repeatable), e.g. MailboxSettings.Read.
    #[arg(long = "deny-permission")]
    deny_permissions: Vec<String>,
    /// A redirect URI of the app registration (repeatable), e.g.
    /// http://127.0.0.1:8080/connect/office365/callback: the consent and sign-in pages then
    /// refuse any other (AADSTS50011). Without it any http(s) URI is taken.
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
}

pub async fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    let config = SimConfig {
        listen: args.listen,
        users: args.users,
        seed: args.seed,
        tenants: args.tenants,
        page_size_cap: args.page_size_cap,
        latency: Duration::from_millis(args.latency_ms),
        throttle: Throttle {
            every_nth: args.throttle_every,
            per_second: args.throttle_per_second,
            retry_after_secs: args.retry_after,
        },
        tls: args.tls,
        tls_cert_out: args.tls_cert_out.clone(),
        token_lifetime: Duration::from_secs(args.token_lifetime),
        consented: !args.no_consent,
        denied_permissions: args.deny_permissions.clone(),
        ..SimConfig::default()
    };
    let sim = Simulator::start(config).await?;
    sim.set_redirect_uris(&args.redirect_uris);
    // Written before the start line, so whoever reads that line finds the file.
    if let Some(path) = &args.tenants_out {
        let json = serde_json::to_vec_pretty(sim.tenants())?;
        write_atomically(path, &json)
            .with_context(|| format!("--tenants-out {}", path.display()))?;
    }
    outln!("{}", serde_json::to_string(sim.info())?);
    if args.tenants > 1 {
        let file = match &args.tenants_out {
            Some(path) => format!("their connection details are in {}", path.display()),
            None => "the start line shows the first (--tenants-out writes them all)".into(),
        };
        eprintln!(
            "Simulator running with {} tenants of {} users each; {file}. Ctrl-C stops it.",
            args.tenants, args.users
        );
    } else {
        eprintln!(
            "Simulator running with {} users; Ctrl-C stops it.",
            args.users
        );
    }
    tokio::signal::ctrl_c().await?;
    let stats = sim.stats();
    sim.shutdown().await;
    eprintln!(
        "Stopped after {} requests ({} throttled).",
        stats.http_requests, stats.throttled
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `contents` to `path` whole or not at all (a temporary file beside it, then
/// a rename), so a script waiting for the file never reads half of it.
fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().context("not a file name")?;
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let written = std::fs::File::create(&temp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e.into());
    }
    Ok(())
}
