//! `usersync bench`: full syncs of simulated tenants into each database, with figures.
//!
//! Each case runs in a child process of its own (so its peak memory is its own), and the
//! simulator in another, so the figures are the sync's, not the simulator's.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::Args;
use serde::{Deserialize, Serialize};
use usersync_engine::{Engine, EngineOptions, NewOffice365, NoProgress, Office365Settings};
use usersync_store::{KeySource, RunStatus, SecretString, Store, StoreOptions};

use crate::output::print_json;
use crate::{Cli, outln};

/// The key that seals the bench databases' secrets (a throwaway: the databases are dropped).
pub(crate) const BENCH_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Tenant sizes the full-sync bench syncs when `--users` is not given.
const DEFAULT_USERS: [usize; 2] = [10_000, 100_000];

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tenant sizes to sync, comma-separated [default: 10000,100000]. With --service: users
    /// in each tenant [default: 1000 for fleet, 5 for idle].
    #[arg(long, value_delimiter = ',')]
    users: Option<Vec<usize>>,
    /// Measure the service instead of one sync: `fleet` (tenants all due at once, time
    /// until every source has synced, with `serve` and on PostgreSQL 2 `worker`s) or
    /// `idle` (sources none of which is due: claim latency and idle CPU of `serve`).
    #[arg(long, value_enum)]
    service: Option<crate::fleet::Service>,
    /// With --service: tenants (one customer and source each) [default: 1000 for fleet,
    /// 10000 for idle].
    #[arg(long, requires = "service")]
    tenants: Option<usize>,
    /// With --service idle: seconds the idle `serve` is watched.
    #[arg(long, default_value_t = 30, requires = "service")]
    idle_secs: u64,
    /// Databases to sync into, comma-separated: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// The PostgreSQL server for the postgres cases; a fresh database is made on it.
    #[arg(
        long,
        env = "USERSYNC_BENCH_POSTGRES",
        default_value = "postgres://root@127.0.0.1:5432"
    )]
    postgres: String,
    /// Delay every simulator answer by this many milliseconds (a tenant far away): the
    /// table then puts the bound 1.2 x sequential pages x round trip beside the full sync.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// At most this many runs after the first to read the mailbox types left (20,000 a
    /// run): a 1,000,000-user tenant needs 50; the delta figures do not depend on them.
    #[arg(long, default_value_t = 20)]
    typing_runs: usize,
    /// Measure the mail system's lookups instead (usersync lookup serve): lookups per
    /// second and their latency over --connections, against this many addresses.
    #[arg(long, value_name = "ADDRESSES", conflicts_with = "service")]
    lookup: Option<usize>,
    /// With --lookup: connections asking at once, one case each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,50",
        requires = "lookup"
    )]
    connections: Vec<usize>,
    /// With --lookup: lookups per case.
    #[arg(long, default_value_t = 200_000, requires = "lookup")]
    lookups: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Run one case in this process (used by the bench itself).
    #[arg(long, hide = true)]
    one: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Figures {
    users: usize,
    backend: String,
    status: String,
    /// The whole sync: token, every page, planning and the commit.
    wall_s: f64,
    /// The same user and group pages fetched by a bare HTTP client (token, then each page
    /// after the last, bodies read and dropped): what the network and the tenant allow.
    bare_fetch_s: f64,
    bare_fetch_pages: usize,
    /// With a latency: 1.2 x (sequential user pages of 999) x the round trip, the bound
    /// the first sync is measured against.
    latency_bound_s: Option<f64>,
    read_s: f64,
    plan_s: f64,
    apply_s: f64,
    requests: u64,
    /// Peak memory up to the end of the first sync.
    peak_rss_mb: f64,
    /// Peak memory of the whole case: the typing runs, the re-sync, the delta run and the
    /// whole read after it too.
    peak_rss_all_mb: f64,
    added: usize,
    skipped: usize,
    /// Runs after the first until every mailbox type was read (a budget per run).
    typing_runs: usize,
    /// A sync of the unchanged tenant (a delta run: nothing to apply).
    resync_s: f64,
    resync_requests: u64,
    /// A sync after 1 % of the tenant changed (`POST /_sim/changes`): a delta run.
    delta_s: f64,
    /// The delta run's read (mirror loaded, delta rounds merged), plan and apply.
    delta_read_s: f64,
    delta_plan_s: f64,
    delta_apply_s: f64,
    delta_requests: u64,
    /// Changes the simulator made, and what the delta run applied.
    delta_changes: usize,
    delta_applied: usize,
    /// A whole read of the same tenant afterwards (`delta=false`), for the request ratio,
    /// and what it still applied (address swaps and rename chains take a second sync).
    full_requests: u64,
    full_applied: usize,
    full_s: f64,
}

pub async fn run(_cli: &Cli, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(addresses) = args.lookup {
        return crate::bench_lookup::run(addresses, &args.connections, args.lookups, args.json)
            .await;
    }
    if let Some(service) = args.service {
        return crate::fleet::run(&crate::fleet::Request {
            service,
            tenants: args.tenants,
            users: args.users.as_deref(),
            backends: &args.backends,
            postgres: &args.postgres,
            idle_secs: args.idle_secs,
            json: args.json,
        })
        .await;
    }
    let sizes = args.users.as_deref().unwrap_or(&DEFAULT_USERS);
    if args.one {
        let users = *sizes.first().unwrap_or(&10_000);
        let backend = args
            .backends
            .first()
            .cloned()
            .unwrap_or_else(|| "sqlite".into());
        let figures = one_case(
            users,
            &backend,
            &args.postgres,
            args.latency_ms,
            args.typing_runs,
        )
        .await?;
        outln!("{}", serde_json::to_string(&figures)?);
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe()?;
    let mut all = Vec::new();
    for &users in sizes {
        for backend in &args.backends {
            if !args.json {
                eprintln!("bench: {users} users into {backend}...");
            }
            let output = Command::new(&exe)
                .args([
                    "bench",
                    "--one",
                    "--users",
                    &users.to_string(),
                    "--backends",
                    backend,
                    "--postgres",
                    &args.postgres,
                    "--latency-ms",
                    &args.latency_ms.to_string(),
                    "--typing-runs",
                    &args.typing_runs.to_string(),
                ])
                .stderr(Stdio::inherit())
                .output()?;
            let line = String::from_utf8_lossy(&output.stdout);
            let figures: Figures = serde_json::from_str(line.trim()).map_err(|e| {
                anyhow::anyhow!("the {users}-user {backend} case did not finish ({e}): {line}")
            })?;
            all.push(figures);
        }
    }
    if args.json {
        print_json(&all)?;
    } else {
        let mut t = crate::table::Table::new()
            .keep("users")
            .keep("database")
            .keep("status")
            .keep("full sync (s)")
            .keep("bare fetch (s)")
            .keep("x bare")
            .keep("latency bound (s)")
            .keep("read")
            .keep("plan")
            .keep("apply")
            .keep("requests")
            .keep("peak MB")
            .keep("peak all MB")
            .keep("added")
            .keep("skipped")
            .keep("typing runs")
            .keep("re-sync (s)")
            .keep("1% delta (s)")
            .keep("read/plan/apply")
            .keep("delta req / whole req")
            .keep("left for whole");
        for f in &all {
            t.row(vec![
                f.users.to_string(),
                f.backend.clone(),
                f.status.clone(),
                format!("{:.2}", f.wall_s),
                format!("{:.2}", f.bare_fetch_s),
                format!("{:.2}", f.wall_s / f.bare_fetch_s.max(1e-9)),
                f.latency_bound_s
                    .map_or("-".to_string(), |b| format!("{b:.2}")),
                format!("{:.2}", f.read_s),
                format!("{:.2}", f.plan_s),
                format!("{:.2}", f.apply_s),
                f.requests.to_string(),
                format!("{:.0}", f.peak_rss_mb),
                format!("{:.0}", f.peak_rss_all_mb),
                f.added.to_string(),
                f.skipped.to_string(),
                f.typing_runs.to_string(),
                format!("{:.2}", f.resync_s),
                format!("{:.2}", f.delta_s),
                format!(
                    "{:.2}/{:.2}/{:.2}",
                    f.delta_read_s, f.delta_plan_s, f.delta_apply_s
                ),
                format!(
                    "{} / {} ({:.1} %)",
                    f.delta_requests,
                    f.full_requests,
                    100.0 * f.delta_requests as f64 / f.full_requests.max(1) as f64
                ),
                f.full_applied.to_string(),
            ]);
        }
        t.print();
        outln!(
            "Goal of a full sync of 100,000 new users: at most 1.5 x the bare fetch into SQLite, 2 x into PostgreSQL."
        );
        outln!(
            "Goal of a delta run with 1 % changes on 100,000 users: under 1 s and under 5 % of a whole read's requests."
        );
        outln!(
            "Goal: 100,000 users in 10 s or less with 300 MB or less peak memory ({} cores).",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON line `usersync sim` prints on start.
#[derive(Debug, Deserialize)]
struct SimInfoLine {
    authority_url: String,
    graph_url: String,
    tenant_id: String,
    client_id: String,
    client_secret: String,
    mail_domains: Vec<String>,
}

/// The simulator in a child process; killed when dropped.
struct SimProcess(std::process::Child);

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn one_case(
    users: usize,
    backend: &str,
    postgres: &str,
    latency_ms: u64,
    max_typing_runs: usize,
) -> anyhow::Result<Figures> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "sim",
            "--users",
            &users.to_string(),
            "--seed",
            "42",
            "--latency-ms",
            &latency_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no simulator output"))?;
    let sim = SimProcess(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let info: SimInfoLine = serde_json::from_str(&line)
        .map_err(|e| anyhow::anyhow!("the simulator did not start: {e}: {line}"))?;

    let suffix = format!("{}_{}", std::process::id(), users);
    let (url, cleanup): (String, Box<dyn FnOnce()>) = match backend {
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!("usersync-bench-{suffix}"));
            std::fs::create_dir_all(&dir)?;
            let url = format!("sqlite://{}", dir.join("bench.db").display());
            (
                url,
                Box::new(move || {
                    let _ = std::fs::remove_dir_all(dir);
                }),
            )
        }
        "postgres" => (
            format!("{postgres}/usersync_bench_{suffix}"),
            Box::new(|| {}),
        ),
        other => anyhow::bail!("unknown backend '{other}': use sqlite or postgres"),
    };
    let mut options = StoreOptions::new(&url);
    options.key = KeySource::Base64(BENCH_KEY.into());
    let engine = Engine::new(Store::open(options).await?, EngineOptions::default());
    let customer = engine.add_customer("Bench").await?;
    for domain in &info.mail_domains {
        engine.add_domain(&customer.name, domain).await?;
    }
    let source = engine
        .add_office365_source(NewOffice365 {
            customer: customer.name.clone(),
            tenant_id: info.tenant_id.clone(),
            settings: Office365Settings::new(&info.client_id, &info.authority_url, &info.graph_url),
            client_secret: SecretString::new(info.client_secret.clone()),
        })
        .await?;
    // The floor: the same user and group pages fetched by a bare HTTP client, one after
    // another, bodies read and nothing else done with them.
    let bare = bare_fetch(&info).await?;
    let started = Instant::now();
    let outcome = engine.sync(source.id, &NoProgress).await?;
    let wall_s = started.elapsed().as_secs_f64();
    let peak_rss_mb = peak_rss_mb();
    // Mailbox types are read up to a budget per run (20,000): the runs after the first
    // read the rest; the figures below are for a tenant whose types are all known.
    let untyped = |o: &usersync_engine::RunOutcome| {
        o.stats.notes.iter().any(|n| n.contains("are not read yet"))
    };
    let mut typing_runs = 0;
    let mut types_left = untyped(&outcome);
    while types_left && typing_runs < max_typing_runs {
        let settle = engine.sync(source.id, &NoProgress).await?;
        typing_runs += 1;
        types_left = untyped(&settle);
    }
    let started = Instant::now();
    let again = engine.sync(source.id, &NoProgress).await?;
    let resync_s = started.elapsed().as_secs_f64();
    // 1 % of the tenant changes, from outside as an acceptance check would do it.
    #[derive(Deserialize)]
    struct Changed {
        counts: usersync_sim::ChangeCounts,
    }
    let changes: Changed = reqwest::Client::new()
        .post(format!(
            "{}/_sim/changes",
            info.graph_url.trim_end_matches('/')
        ))
        .json(&serde_json::json!({"tenant_id": info.tenant_id, "percent": 1.0, "seed": 7}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let started = Instant::now();
    let delta = engine.sync(source.id, &NoProgress).await?;
    let delta_s = started.elapsed().as_secs_f64();
    // The same tenant read whole, for comparison (its plan is empty: the delta run applied).
    engine
        .set_source_options(source.id, &["delta=false".to_string()])
        .await?;
    let started = Instant::now();
    let whole = engine.sync(source.id, &NoProgress).await?;
    let full_s = started.elapsed().as_secs_f64();
    let peak_rss_all_mb = self::peak_rss_mb();
    engine.close().await;
    drop(sim);
    if backend == "postgres" {
        usersync_store::testing::discard(&url).await;
    }
    cleanup();
    let applied = |o: &usersync_engine::RunOutcome| {
        o.plan.add.len() + o.plan.update.len() + o.plan.remove.len()
    };
    let status = if outcome.status == RunStatus::Succeeded
        && again.status == RunStatus::Succeeded
        && (again.plan.is_empty() || types_left)
        && delta.stats.read_mode.as_deref() == Some("delta")
    {
        if types_left {
            // --typing-runs stopped short: the re-sync and the delta run still type mailboxes.
            "ok (mailbox types still being read)".to_string()
        } else {
            "ok".to_string()
        }
    } else {
        format!(
            "failed: {}",
            outcome
                .error
                .or(again.error)
                .or(delta.error.clone())
                .unwrap_or_else(|| {
                    "the re-sync was not empty, or the run after the changes was not a delta run"
                        .into()
                })
        )
    };
    Ok(Figures {
        users,
        backend: backend.to_string(),
        status,
        wall_s,
        bare_fetch_s: bare.seconds,
        bare_fetch_pages: bare.pages,
        latency_bound_s: (latency_ms > 0)
            .then(|| 1.2 * users.div_ceil(999) as f64 * latency_ms as f64 / 1000.0),
        read_s: outcome.stats.read_ms as f64 / 1000.0,
        plan_s: outcome.stats.plan_ms as f64 / 1000.0,
        apply_s: outcome.stats.apply_ms as f64 / 1000.0,
        requests: outcome.stats.requests,
        peak_rss_mb,
        peak_rss_all_mb,
        added: outcome.plan.add.len(),
        skipped: outcome.plan.skip.len(),
        typing_runs,
        resync_s,
        resync_requests: again.stats.requests,
        delta_s,
        delta_read_s: delta.stats.read_ms as f64 / 1000.0,
        delta_plan_s: delta.stats.plan_ms as f64 / 1000.0,
        delta_apply_s: delta.stats.apply_ms as f64 / 1000.0,
        delta_requests: delta.stats.requests,
        delta_changes: changes.counts.total(),
        delta_applied: applied(&delta),
        full_requests: whole.stats.requests,
        full_applied: applied(&whole),
        full_s,
    })
}

struct BareFetch {
    seconds: f64,
    pages: usize,
}

/// Fetches every page of users and of groups the way a first sync asks for them, with a
/// bare HTTP client: a token, then `GET` after `GET` following `@odata.nextLink`.
async fn bare_fetch(info: &SimInfoLine) -> anyhow::Result<BareFetch> {
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }
    let http = reqwest::Client::new();
    let started = Instant::now();
    let token: Token = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            info.authority_url.trim_end_matches('/'),
            info.tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", info.client_secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let graph = info.graph_url.trim_end_matches('/');
    let mut pages = 0;
    for first in [
        format!(
            "{graph}/v1.0/users?$select={}&$top=999",
            usersync_graph::USER_PROPERTIES.join(",")
        ),
        format!(
            "{graph}/v1.0/groups?$select={}&$top=999",
            usersync_graph::GROUP_PROPERTIES.join(",")
        ),
    ] {
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let body = http
                .get(&url)
                .bearer_auth(&token.access_token)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            pages += 1;
            // Only the link is looked for (Graph writes it before the values).
            next = next_link(&body);
        }
    }
    Ok(BareFetch {
        seconds: started.elapsed().as_secs_f64(),
        pages,
    })
}

/// A page's `@odata.nextLink`: looked for at its head, else the page is parsed.
fn next_link(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(rename = "@odata.nextLink")]
        next: Option<String>,
    }
    const KEY: &[u8] = b"\"@odata.nextLink\":\"";
    let head = &body[..body.len().min(4096)];
    if let Some(at) = head.windows(KEY.len()).position(|w| w == KEY) {
        let rest = &head[at + KEY.len()..];
        if let Some(end) = rest.iter().position(|&b| b == b'"') {
            let raw = format!("\"{}\"", String::from_utf8_lossy(&rest[..end]));
            return serde_json::from_str(&raw).ok();
        }
    }
    serde_json::from_slice::<Page>(body)
        .ok()
        .and_then(|p| p.next)
}

/// The process's peak resident memory (VmHWM), in MB; 0 where /proc is not there.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn the_next_link_is_found_at_the_head_of_a_page_or_by_parsing_it() {
        let head = br#"{"@odata.context":"x","@odata.nextLink":"http://127.0.0.1:1/v1.0/users?$skiptoken=a%2Fb","value":[{"id":"1"}]}"#;
        assert_eq!(
            next_link(head).as_deref(),
            Some("http://127.0.0.1:1/v1.0/users?$skiptoken=a%2Fb")
        );
        let tail = format!(
            r#"{{"value":[{}],"@odata.nextLink":"http://h/next"}}"#,
            vec![r#"{"id":"1"}"#; 1000].join(",")
        );
        assert_eq!(next_link(tail.as_bytes()).as_deref(), Some("http://h/next"));
        assert_eq!(next_link(br#"{"value":[]}"#), None);
    }
}
