//! `usersync bench --service fleet|idle`: the service measured as an operator runs it.
//!
//! fleet: many simulated tenants, every source due at once, `serve` (SQLite) or `serve` and
//! two `worker` processes (PostgreSQL) as children of the bench; the time until every source
//! has synced. idle: many sources of which none is due; the claim and scheduling latency on
//! the empty queue, and the CPU an idle `serve` takes.
//!
//! The simulator runs in the bench process; the database is fresh and set up through
//! `Engine` methods only; it is dropped at the end.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use usersync_engine::{Engine, EngineOptions, NewOffice365, Office365Settings};
use usersync_sim::{SimConfig, SimInfo, Simulator};
use usersync_store::{KeySource, RunOwner, RunStatus, SecretString, Store, StoreOptions};

use crate::outln;
use crate::output::print_json;

/// What `--service` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// Tenants all due at once: time until every source has synced.
    Fleet,
    /// Sources none of which is due: claim latency and idle CPU of the scheduler.
    Idle,
}

/// The goals.
const FLEET_GOAL_S: f64 = 120.0;
const IDLE_GOAL_PERCENT: f64 = 1.0;
/// A fleet that has not synced by then is reported failed.
const FLEET_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Runs each child process executes at once (`--workers`).
const WORKERS_PER_PROCESS: usize = 2;
/// Tenants set up at once (the store serialises SQLite's writes anyway).
const SETUP_PARALLEL: usize = 8;
/// Calls timed for each latency figure.
const LATENCY_SAMPLES: usize = 200;

/// What the bench was asked.
pub struct Request<'a> {
    pub service: Service,
    pub tenants: Option<usize>,
    pub users: Option<&'a [usize]>,
    pub backends: &'a [String],
    pub postgres: &'a str,
    pub idle_secs: u64,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct FleetFigures {
    backend: String,
    tenants: usize,
    users_per_tenant: usize,
    /// The child processes: `serve`, or `serve + 2 worker`.
    processes: String,
    /// Runs executing at once over all processes.
    runs_at_once: usize,
    /// `ok`, or what went wrong.
    status: String,
    /// Customers, domains, sources and options, through the engine.
    setup_s: f64,
    /// One run-now per source.
    enqueue_s: f64,
    /// From spawning the processes until no run is queued or running.
    all_synced_s: Option<f64>,
    goal_s: f64,
    /// all_synced_s / goal_s.
    goal_ratio: Option<f64>,
    runs_succeeded: usize,
    runs_failed: usize,
    /// Held or cancelled.
    runs_other: usize,
    /// Sources without a finished run when the bench stopped waiting.
    sources_unsynced: usize,
    users_added: i64,
    /// CPU seconds of the service's processes until all had synced.
    service_cpu_s: f64,
    /// CPU seconds of the bench process meanwhile: the simulator, mostly.
    simulator_cpu_s: f64,
    syncs_per_s: Option<f64>,
    users_per_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct IdleFigures {
    backend: String,
    sources: usize,
    status: String,
    setup_s: f64,
    /// `claim_runs(1)` on the empty queue, in the bench process.
    claim_ms_median: f64,
    claim_ms_p95: f64,
    /// `enqueue_due(500)` with nothing due, in the bench process.
    enqueue_due_ms_median: f64,
    enqueue_due_ms_p95: f64,
    /// How long the idle `serve` was watched.
    idle_s: f64,
    /// CPU of the idle `serve --workers 2`, in % of one core.
    idle_cpu_percent: f64,
    goal_percent: f64,
    goal_ratio: f64,
    /// Runs that exist after the window (none is due: 0).
    runs_started: usize,
}

pub async fn run(request: &Request<'_>) -> anyhow::Result<std::process::ExitCode> {
    for backend in request.backends {
        if backend != "sqlite" && backend != "postgres" {
            anyhow::bail!("unknown backend '{backend}': use sqlite or postgres");
        }
    }
    let users = match request.users {
        None => None,
        Some([one]) => Some(*one),
        Some(_) => anyhow::bail!("--service takes one --users figure (users per tenant)"),
    };
    let mut ok = true;
    match request.service {
        Service::Fleet => {
            let tenants = request.tenants.unwrap_or(1000).max(1);
            let users = users.unwrap_or(1000);
            let mut all = Vec::new();
            for backend in request.backends {
                eprintln!("bench: fleet of {tenants} tenants x {users} users on {backend}...");
                let figures = fleet(backend, request.postgres, tenants, users).await?;
                ok &= figures.status == "ok";
                all.push(figures);
            }
            if request.json {
                print_json(&all)?;
            } else {
                print_fleet(&all);
            }
        }
        Service::Idle => {
            let tenants = request.tenants.unwrap_or(10_000).max(1);
            let users = users.unwrap_or(5);
            let mut all = Vec::new();
            for backend in request.backends {
                eprintln!("bench: {tenants} idle sources on {backend}...");
                let figures = idle(
                    backend,
                    request.postgres,
                    tenants,
                    users,
                    Duration::from_secs(request.idle_secs.max(1)),
                )
                .await?;
                ok &= figures.status == "ok";
                all.push(figures);
            }
            if request.json {
                print_json(&all)?;
            } else {
                print_idle(&all);
            }
        }
    }
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn print_fleet(all: &[FleetFigures]) {
    let mut t = crate::table::Table::new()
        .keep("database")
        .keep("processes")
        .keep("tenants")
        .keep("users each")
        .keep("status")
        .keep("set-up (s)")
        .keep("all synced (s)")
        .keep("of goal")
        .keep("succeeded")
        .keep("failed")
        .keep("users added")
        .keep("syncs/s");
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    for f in all {
        t.row(vec![
            f.backend.clone(),
            f.processes.clone(),
            f.tenants.to_string(),
            f.users_per_tenant.to_string(),
            f.status.clone(),
            format!("{:.1}", f.setup_s + f.enqueue_s),
            opt(f.all_synced_s, 1),
            opt(f.goal_ratio, 2),
            f.runs_succeeded.to_string(),
            f.runs_failed.to_string(),
            f.users_added.to_string(),
            opt(f.syncs_per_s, 1),
        ]);
    }
    t.print();
    for f in all {
        match f.all_synced_s {
            Some(s) => outln!(
                "{}: seconds until all synced: {s:.1} ({:.2} of the {:.0} s goal); set-up {:.1} s, \
                 run-now {:.1} s; CPU meanwhile: service {:.1} s, simulator and bench {:.1} s.",
                f.backend,
                s / f.goal_s,
                f.goal_s,
                f.setup_s,
                f.enqueue_s,
                f.service_cpu_s,
                f.simulator_cpu_s
            ),
            None => outln!(
                "{}: not all synced ({}); {} of {} sources without a finished run.",
                f.backend,
                f.status,
                f.sources_unsynced,
                f.tenants
            ),
        }
    }
    outln!(
        "Goal: {} tenants of {} users all due at once, every source synced in under {:.0} s ({} cores).",
        all.first().map_or(0, |f| f.tenants),
        all.first().map_or(0, |f| f.users_per_tenant),
        FLEET_GOAL_S,
        cores()
    );
}

fn print_idle(all: &[IdleFigures]) {
    let mut t = crate::table::Table::new()
        .keep("database")
        .keep("sources")
        .keep("status")
        .keep("set-up (s)")
        .keep("claim ms (median)")
        .keep("claim p95")
        .keep("enqueue_due ms (median)")
        .keep("enqueue_due p95")
        .keep("idle CPU %")
        .keep("of goal")
        .keep("runs started");
    for f in all {
        t.row(vec![
            f.backend.clone(),
            f.sources.to_string(),
            f.status.clone(),
            format!("{:.1}", f.setup_s),
            format!("{:.2}", f.claim_ms_median),
            format!("{:.2}", f.claim_ms_p95),
            format!("{:.2}", f.enqueue_due_ms_median),
            format!("{:.2}", f.enqueue_due_ms_p95),
            format!("{:.2}", f.idle_cpu_percent),
            format!("{:.2}", f.goal_ratio),
            f.runs_started.to_string(),
        ]);
    }
    t.print();
    for f in all {
        outln!(
            "{}: idle CPU: {:.2} % of a core over {:.0} s ({:.2} of the {:.0} % goal); claim {:.2} ms, enqueue_due {:.2} ms (medians).",
            f.backend,
            f.idle_cpu_percent,
            f.idle_s,
            f.goal_ratio,
            f.goal_percent,
            f.claim_ms_median,
            f.enqueue_due_ms_median
        );
    }
    outln!(
        "Goal: an idle `serve --workers {WORKERS_PER_PROCESS}` over {} sources (none due) under {IDLE_GOAL_PERCENT:.0} % of a core ({} cores).",
        all.first().map_or(0, |f| f.sources),
        cores()
    );
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A fresh database for one case and its scratch directory (the SQLite file, the
/// children's logs); dropped with [`Scratch::discard`].
struct Scratch {
    dir: PathBuf,
    url: String,
    postgres: bool,
}

impl Scratch {
    fn new(kind: &str, backend: &str, postgres: &str) -> anyhow::Result<Scratch> {
        let suffix = format!("{kind}_{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("usersync-bench-{suffix}-{backend}"));
        std::fs::create_dir_all(&dir)?;
        let url = match backend {
            "sqlite" => format!("sqlite://{}", dir.join("bench.db").display()),
            _ => format!("{}/usersync_bench_{suffix}", postgres.trim_end_matches('/')),
        };
        Ok(Scratch {
            dir,
            url,
            postgres: backend == "postgres",
        })
    }

    async fn open(&self) -> anyhow::Result<Engine> {
        let mut options = StoreOptions::new(&self.url);
        options.key = KeySource::Base64(crate::bench::BENCH_KEY.into());
        Ok(Engine::new(
            Store::open(options).await?,
            EngineOptions::default(),
        ))
    }

    /// Drops the database; keeps the logs when asked (a case that failed).
    async fn discard(self, keep_logs: bool) {
        if self.postgres {
            usersync_store::testing::discard(&self.url).await;
        }
        if keep_logs {
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "log") {
                    let _ = std::fs::remove_file(path);
                }
            }
            eprintln!(
                "bench: the service's logs are kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The service's processes, children of the bench; killed if still running when dropped.
struct Children(Vec<(String, Child, PathBuf)>);

impl Children {
    /// Spawns `usersync --database URL ARGS…`, its stderr to `dir/NAME.log`.
    fn spawn(&mut self, name: &str, url: &str, args: &[&str], dir: &Path) -> anyhow::Result<()> {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(std::env::current_exe()?)
            .arg("--database")
            .arg(url)
            .args(args)
            .env("USERSYNC_SECRET_KEY", crate::bench::BENCH_KEY)
            .env("USERSYNC_LOG", "warn")
            .env_remove("USERSYNC_SECRET_KEY_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        self.0.push((name.to_string(), child, log));
        Ok(())
    }

    /// The first child that has exited, with its status.
    fn exited(&mut self) -> Option<String> {
        self.0.iter_mut().find_map(|(name, child, _)| {
            child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| format!("{name} exited ({status})"))
        })
    }

    /// SIGTERM to each, then waits (up to a minute; then SIGKILL).
    async fn stop(&mut self) {
        for (_, child, _) in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let until = Instant::now() + Duration::from_secs(60);
        for (name, child, _) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= until => {
                        eprintln!("bench: {name} did not stop within a minute of SIGTERM; killed");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }

    /// CPU used by the children still running, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        self.0
            .iter()
            .filter_map(|(_, c, _)| cpu_ticks(c.id()))
            .sum()
    }

    /// The last lines of each child's log, to stderr.
    fn show_logs(&self, lines: usize) {
        for (name, _, log) in &self.0 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            eprintln!(
                "bench: last {} lines of {name}'s stderr ({}):",
                lines.min(all.len()),
                log.display()
            );
            for line in &all[all.len().saturating_sub(lines)..] {
                eprintln!("  {line}");
            }
        }
    }

    /// Warnings and errors the children logged (lines of their stderr beyond the start
    /// and stop messages).
    fn complaints(&self) -> usize {
        self.0
            .iter()
            .map(|(_, _, log)| {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("error"))
                    .count()
            })
            .sum()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Customers, domains, sources and their schedule for every tenant, through the engine, a
/// few tenants at once; returns the source ids in tenant order. `schedule` is applied in
/// two steps: the first interval switches automatic sync on, the second moves the slot
/// to a whole interval from now (a newly scheduled source's first slot comes within a
/// tenth of its interval, which would make some of them due during the measurement).
async fn set_up(
    engine: &Engine,
    tenants: &[SimInfo],
    first: &'static str,
    interval: &'static str,
) -> anyhow::Result<Vec<i64>> {
    let n = tenants.len();
    let step = if n > 2000 { 1000 } else { 100 };
    let mut ids = vec![0; n];
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut done = 0;
    let started = Instant::now();
    while done < n {
        while next < n && set.len() < SETUP_PARALLEL {
            let engine = engine.clone();
            let info = tenants[next].clone();
            let i = next;
            set.spawn(async move {
                let id = set_up_one(&engine, i, &info, first, interval).await?;
                anyhow::Ok((i, id))
            });
            next += 1;
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (i, id) = joined??;
        ids[i] = id;
        done += 1;
        if done % step == 0 || done == n {
            eprintln!(
                "bench: set up {done}/{n} tenants ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(ids)
}

async fn set_up_one(
    engine: &Engine,
    i: usize,
    info: &SimInfo,
    first: &str,
    interval: &str,
) -> anyhow::Result<i64> {
    let customer = engine.add_customer(&format!("Tenant {i:04}")).await?;
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
    engine
        .set_source_options(
            source.id,
            &["auto_sync=true".into(), format!("interval={first}")],
        )
        .await?;
    engine
        .set_source_options(source.id, &[format!("interval={interval}")])
        .await?;
    Ok(source.id)
}

async fn fleet(
    backend: &str,
    postgres: &str,
    tenants: usize,
    users: usize,
) -> anyhow::Result<FleetFigures> {
    let sim = Simulator::start(SimConfig {
        tenants,
        users,
        ..Default::default()
    })
    .await?;
    let scratch = Scratch::new("fleet", backend, postgres)?;
    let mut children = Children(Vec::new());
    let result = fleet_case(&sim, &scratch, &mut children, backend, tenants, users).await;
    children.stop().await;
    let failed = !matches!(&result, Ok(f) if f.status == "ok");
    finish(children, sim, scratch, failed).await;
    result
}

/// After a case: the service's logs when it failed or complained, then the simulator
/// stopped and the database dropped (its logs kept when it failed).
async fn finish(children: Children, sim: Simulator, scratch: Scratch, failed: bool) {
    if failed {
        children.show_logs(30);
    } else if children.complaints() > 0 {
        eprintln!("bench: the service logged warnings or errors:");
        children.show_logs(10);
    }
    drop(children);
    sim.shutdown().await;
    scratch.discard(failed).await;
}

async fn fleet_case(
    sim: &Simulator,
    scratch: &Scratch,
    children: &mut Children,
    backend: &str,
    tenants: usize,
    users: usize,
) -> anyhow::Result<FleetFigures> {
    let engine = scratch.open().await?;
    let started = Instant::now();
    let sources = set_up(&engine, sim.tenants(), "2h", "1h").await?;
    let setup_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for &id in &sources {
        engine.run_now(id).await?;
    }
    let enqueue_s = started.elapsed().as_secs_f64();
    eprintln!("bench: {tenants} syncs queued, due now ({enqueue_s:.1} s); starting the service");

    let workers = WORKERS_PER_PROCESS.to_string();
    let (processes, runs_at_once) = if backend == "postgres" {
        ("serve + 2 worker", 3 * WORKERS_PER_PROCESS)
    } else {
        ("serve", WORKERS_PER_PROCESS)
    };
    let ticks_per_s = clock_ticks();
    let bench_ticks = cpu_ticks(std::process::id()).unwrap_or(0);
    let clock = Instant::now();
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        workers.as_str(),
    ];
    children.spawn("serve", &scratch.url, &serve, &scratch.dir)?;
    if backend == "postgres" {
        for i in 1..=2 {
            let worker = ["worker", "--workers", workers.as_str()];
            children.spawn(&format!("worker-{i}"), &scratch.url, &worker, &scratch.dir)?;
        }
    }

    let mut status = "ok".to_string();
    let mut all_synced_s = None;
    let mut last_note = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(exited) = children.exited() {
            status = format!("failed: {exited}");
            break;
        }
        let q = match engine.queue_stats().await {
            Ok(q) => q,
            Err(e) => {
                eprintln!("bench: queue stats: {}", usersync_engine::error_text(&e));
                continue;
            }
        };
        let open = q.queued_due + q.queued_later + q.running;
        if open == 0 {
            all_synced_s = Some(clock.elapsed().as_secs_f64());
            break;
        }
        if clock.elapsed() >= FLEET_TIMEOUT {
            status = format!(
                "failed: timed out after {} s, {open} runs open",
                FLEET_TIMEOUT.as_secs()
            );
            break;
        }
        if last_note.elapsed() >= Duration::from_secs(5) {
            last_note = Instant::now();
            eprintln!(
                "bench: {:>5.1} s: {}/{tenants} sources done, {} running, {} queued{}",
                clock.elapsed().as_secs_f64(),
                tenants.saturating_sub(open.max(0) as usize),
                q.running,
                q.queued_due,
                if q.queued_later > 0 {
                    format!(", {} waiting (throttled)", q.queued_later)
                } else {
                    String::new()
                }
            );
        }
    }

    let service_cpu_s = children.cpu_ticks() as f64 / ticks_per_s;
    let simulator_cpu_s = cpu_ticks(std::process::id())
        .unwrap_or(0)
        .saturating_sub(bench_ticks) as f64
        / ticks_per_s;
    let finals = [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Held,
        RunStatus::Cancelled,
    ];
    let runs = engine
        .runs(None, &finals, (tenants as i64) * 4 + 100)
        .await?;
    let mut succeeded = 0;
    let mut failed = 0;
    let mut other = 0;
    let mut users_added = 0;
    let mut synced = HashSet::new();
    let mut first_error = None;
    for run in &runs {
        synced.insert(run.source_id);
        users_added += run.added;
        match run.status {
            RunStatus::Succeeded => succeeded += 1,
            RunStatus::Failed => {
                failed += 1;
                if first_error.is_none() {
                    first_error = run.error.clone();
                }
            }
            _ => other += 1,
        }
    }
    let unsynced = sources.iter().filter(|id| !synced.contains(id)).count();
    if status == "ok" && (failed > 0 || other > 0 || unsynced > 0) {
        status = format!(
            "failed: {failed} failed, {other} held or cancelled, {unsynced} sources without a run"
        );
    }
    if let Some(error) = first_error {
        eprintln!("bench: first failed run's error: {error}");
    }
    engine.close().await;
    Ok(FleetFigures {
        backend: backend.to_string(),
        tenants,
        users_per_tenant: users,
        processes: processes.to_string(),
        runs_at_once,
        status,
        setup_s,
        enqueue_s,
        all_synced_s,
        goal_s: FLEET_GOAL_S,
        goal_ratio: all_synced_s.map(|s| s / FLEET_GOAL_S),
        runs_succeeded: succeeded,
        runs_failed: failed,
        runs_other: other,
        sources_unsynced: unsynced,
        users_added,
        service_cpu_s,
        simulator_cpu_s,
        syncs_per_s: all_synced_s.map(|s| succeeded as f64 / s),
        users_per_s: all_synced_s.map(|s| users_added as f64 / s),
    })
}

async fn idle(
    backend: &str,
    postgres: &str,
    tenants: usize,
    users: usize,
    window: Duration,
) -> anyhow::Result<IdleFigures> {
    let sim = Simulator::start(SimConfig {
        tenants,
        users,
        ..Default::default()
    })
    .await?;
    let scratch = Scratch::new("idle", backend, postgres)?;
    let mut children = Children(Vec::new());
    let result = idle_case(&sim, &scratch, &mut children, backend, tenants, window).await;
    children.stop().await;
    let failed = !matches!(&result, Ok(f) if f.status == "ok");
    finish(children, sim, scratch, failed).await;
    result
}

async fn idle_case(
    sim: &Simulator,
    scratch: &Scratch,
    children: &mut Children,
    backend: &str,
    tenants: usize,
    window: Duration,
) -> anyhow::Result<IdleFigures> {
    let engine = scratch.open().await?;
    let started = Instant::now();
    set_up(&engine, sim.tenants(), "12h", "1d").await?;
    let setup_s = started.elapsed().as_secs_f64();

    eprintln!(
        "bench: timing {LATENCY_SAMPLES} claims and {LATENCY_SAMPLES} schedule polls on the empty queue"
    );
    let owner = RunOwner::this_process();
    let store = engine.store();
    let mut claims = Vec::with_capacity(LATENCY_SAMPLES);
    let mut polls = Vec::with_capacity(LATENCY_SAMPLES);
    let mut stray = 0;
    for _ in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        stray += store
            .claim_runs(&owner, 1, Duration::from_secs(120))
            .await?
            .len();
        claims.push(t.elapsed());
        let t = Instant::now();
        stray += store.enqueue_due(500).await?.len();
        polls.push(t.elapsed());
    }

    let workers = WORKERS_PER_PROCESS.to_string();
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        workers.as_str(),
    ];
    children.spawn("serve", &scratch.url, &serve, &scratch.dir)?;
    let pid = children.0[0].1.id();
    eprintln!(
        "bench: serve started (pid {pid}); 5 s to settle, then {} s watched",
        window.as_secs()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut status = "ok".to_string();
    let ticks_per_s = clock_ticks();
    let mut cpu_percent = f64::NAN;
    let mut idle_s = 0.0;
    match cpu_ticks(pid) {
        Some(before) => {
            let t = Instant::now();
            tokio::time::sleep(window).await;
            let after = cpu_ticks(pid);
            idle_s = t.elapsed().as_secs_f64();
            match after {
                Some(after) if children.exited().is_none() => {
                    cpu_percent = (after - before) as f64 / ticks_per_s / idle_s * 100.0;
                }
                _ => status = "failed: serve stopped during the window".into(),
            }
        }
        None => status = "failed: serve stopped before the window".into(),
    }
    if let Some(exited) = children.exited() {
        status = format!("failed: {exited}");
    }
    let runs_started = engine.runs(None, &[], 100).await?.len() + stray;
    if status == "ok" && runs_started > 0 {
        status = format!("failed: {runs_started} runs started");
    }
    engine.close().await;
    let (claim_ms_median, claim_ms_p95) = median_p95(&mut claims);
    let (enqueue_due_ms_median, enqueue_due_ms_p95) = median_p95(&mut polls);
    Ok(IdleFigures {
        backend: backend.to_string(),
        sources: tenants,
        status,
        setup_s,
        claim_ms_median,
        claim_ms_p95,
        enqueue_due_ms_median,
        enqueue_due_ms_p95,
        idle_s,
        idle_cpu_percent: cpu_percent,
        goal_percent: IDLE_GOAL_PERCENT,
        goal_ratio: cpu_percent / IDLE_GOAL_PERCENT,
        runs_started,
    })
}

/// Median and 95th percentile, in milliseconds.
fn median_p95(samples: &mut [Duration]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p95 = (samples.len() * 95).div_ceil(100).saturating_sub(1);
    (ms(samples[samples.len() / 2]), ms(samples[p95]))
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat`, fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p95_of_samples() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        samples.reverse();
        let (median, p95) = median_p95(&mut samples);
        assert_eq!(median, 51.0);
        assert_eq!(p95, 95.0);
    }

    #[test]
    fn cpu_ticks_of_this_process() {
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}
