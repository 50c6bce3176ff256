//! `usersync serve` and `usersync worker`: the scheduler and workers as a long-running
//! process, with /healthz, /readyz and /metrics for the service manager and Prometheus.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use clap::Args;
use tokio::sync::watch;
use usersync_engine::{
    DURATION_BUCKETS, Engine, Inbox, LIFECYCLE_PATH, Metrics, NOTIFICATION_PATH,
    NotificationService, ServiceOptions, SubscriptionTiming, run_service,
};

use crate::parse_duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP listener (/healthz, /readyz, /metrics, Graph change
    /// notifications); port 0 picks one.
    #[arg(long, env = "USERSYNC_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The URL this service is reached at from outside [default: http://LISTEN]. Microsoft
    /// Graph sends change notifications to PUBLIC_URL/graph/notifications (it wants https;
    /// the simulator also takes http on loopback).
    #[arg(long, env = "USERSYNC_PUBLIC_URL")]
    public_url: Option<url::Url>,
    /// How often change-notification subscriptions are checked (made, renewed, deleted).
    #[arg(long, default_value = "60s", value_parser = parse_duration, hide = true)]
    subscriptions_every: Duration,
    /// How long change-notification subscriptions are asked for (Graph allows 29 days).
    #[arg(long, default_value = "72h", value_parser = parse_duration, hide = true)]
    subscription_lifetime: Duration,
    /// Subscriptions are renewed when less than this is left.
    #[arg(long, default_value = "24h", value_parser = parse_duration, hide = true)]
    subscription_renew_before: Duration,
    /// The provider's multi-tenant app registration (application id) with which
    /// "Connect Office 365" in the console connects tenants; its secret is read from
    /// USERSYNC_M365_CLIENT_SECRET, and PUBLIC_URL/connect/office365/callback must be one
    /// of its redirect URIs.
    #[arg(long, env = "USERSYNC_M365_CLIENT_ID")]
    m365_client_id: Option<String>,
    /// The identity platform the app signs in at.
    #[arg(
        long,
        env = "USERSYNC_M365_AUTHORITY_URL",
        default_value = "https://login.microsoftonline.com"
    )]
    m365_authority_url: String,
    /// Microsoft Graph.
    #[arg(
        long,
        env = "USERSYNC_M365_GRAPH_URL",
        default_value = "https://graph.microsoft.com"
    )]
    m365_graph_url: String,
    /// Also answer Postfix's socketmap lookups here (what `usersync lookup serve` does),
    /// e.g. 127.0.0.1:10027.
    #[arg(long, env = "USERSYNC_LOOKUP_LISTEN")]
    lookup_listen: Option<SocketAddr>,
    /// With --lookup-listen: the separator of an address's extension; empty for none.
    #[arg(long, env = "USERSYNC_LOOKUP_DELIMITER", default_value = "+")]
    lookup_delimiter: String,
    #[command(flatten)]
    workers: WorkerArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Runs executing at once in this process.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// After SIGTERM, how long runs in flight may take to finish before they are given
    /// back to the queue, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    grace: Duration,
    /// How often an idle worker (and the scheduler) looks for work.
    #[arg(long, default_value = "1s", value_parser = parse_duration, hide = true)]
    poll: Duration,
}

struct App {
    engine: Engine,
    metrics: Arc<Metrics>,
    inbox: Arc<Inbox>,
}

/// Where `serve` listens and is reached.
struct Http {
    office365: Option<usersync_engine::Office365App>,
    /// The socketmap lookups' listener and extension separator, when they are served.
    lookup: Option<(SocketAddr, Option<char>)>,
    listen: SocketAddr,
    public_url: Option<url::Url>,
    subscriptions_every: Duration,
    timing: SubscriptionTiming,
}

/// `usersync serve`: HTTP listener, scheduler and workers.
pub async fn serve(engine: Engine, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.public_url
        && !matches!(url.scheme(), "http" | "https")
    {
        anyhow::bail!(
            "--public-url: '{url}' must be an http or https URL, such as https://usersync.example.com"
        );
    }
    let office365 = match &args.m365_client_id {
        None => None,
        Some(client_id) => {
            let secret = std::env::var("USERSYNC_M365_CLIENT_SECRET")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--m365-client-id: the app's secret is missing; set USERSYNC_M365_CLIENT_SECRET"
                    )
                })?;
            let app = usersync_engine::Office365App {
                client_id: client_id.clone(),
                client_secret: usersync_store::SecretString::new(secret),
                authority_url: args.m365_authority_url.clone(),
                graph_url: args.m365_graph_url.clone(),
            };
            app.check()?;
            Some(app)
        }
    };
    let lookup = match args.lookup_listen {
        Some(listen) => Some((
            listen,
            crate::lookup::delimiter(&args.lookup_delimiter).context("--lookup-delimiter")?,
        )),
        None => None,
    };
    let http = Http {
        office365,
        lookup,
        listen: args.listen,
        public_url: args.public_url.clone(),
        subscriptions_every: args.subscriptions_every,
        timing: SubscriptionTiming {
            lifetime: args.subscription_lifetime,
            renew_before: args.subscription_renew_before,
        },
    };
    run(engine, &args.workers, true, Some(http)).await
}

/// `usersync demo`'s console: the service on `listen` (another free port when it is
/// taken), with "Connect Office 365" using `office365`, until Ctrl-C.
pub(crate) async fn serve_demo(
    engine: Engine,
    listen: SocketAddr,
    office365: usersync_engine::Office365App,
) -> anyhow::Result<ExitCode> {
    let listen = match std::net::TcpListener::bind(listen) {
        Ok(free) => {
            drop(free);
            listen
        }
        Err(_) => {
            eprintln!("{listen} is taken; the console takes another port.");
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let http = Http {
        office365: Some(office365),
        lookup: None,
        listen,
        public_url: None,
        subscriptions_every: Duration::from_secs(60),
        timing: SubscriptionTiming::default(),
    };
    let workers = WorkerArgs {
        workers: 2,
        grace: Duration::from_secs(5),
        poll: Duration::from_millis(500),
    };
    run(engine, &workers, true, Some(http)).await
}

/// `usersync worker`: workers only (more machines on one PostgreSQL database).
pub async fn worker(engine: Engine, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    run(engine, args, false, None).await
}

async fn run(
    engine: Engine,
    args: &WorkerArgs,
    scheduler: bool,
    http_options: Option<Http>,
) -> anyhow::Result<ExitCode> {
    // Every process on the database must open its secrets: refused now, not at the first run.
    engine.require_key().await?;
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = watch::channel(false);
    let mut http = None;
    let mut notifications = None;
    let mut lookups = None;
    if let Some((listen, delimiter)) = http_options.as_ref().and_then(|o| o.lookup) {
        lookups = Some(
            crate::lookup::start(&engine, listen, delimiter, stopped.clone())
                .await
                .context("--lookup-listen")?,
        );
    }
    if let Some(options) = http_options {
        let listen = options.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e} (--listen)"))?;
        let address = listener.local_addr()?;
        let inbox = Arc::new(Inbox::new(usersync_engine::DEBOUNCE, options.timing));
        let public_url = match options.public_url {
            Some(url) => url,
            None => url::Url::parse(&format!("http://{address}"))?,
        };
        let secure_cookies = public_url.scheme() == "https";
        let web = usersync_web::WebOptions {
            secure_cookies,
            public_url: Some(public_url.clone()),
            office365: options.office365,
        };
        notifications = Some(NotificationService {
            public_url,
            inbox: inbox.clone(),
            keep_every: options.subscriptions_every,
            timing: options.timing,
        });
        let app = Arc::new(App {
            engine: engine.clone(),
            metrics: metrics.clone(),
            inbox,
        });
        let router = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route("/readyz", axum::routing::get(readyz))
            .route("/metrics", axum::routing::get(metrics_text))
            .route(NOTIFICATION_PATH, axum::routing::post(notified))
            .route(LIFECYCLE_PATH, axum::routing::post(lifecycle))
            .with_state(app)
            .merge(usersync_web::router(engine.clone(), web));
        let mut until = stopped.clone();
        http = Some(tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, service)
                .with_graceful_shutdown(async move {
                    let _ = until.wait_for(|s| *s).await;
                })
                .await;
        }));
        eprintln!(
            "Listening on http://{address} (the console, the REST API at /api/v1, /healthz, /readyz, /metrics)."
        );
        if let Some(n) = &notifications {
            eprintln!(
                "Graph change notifications are received at {} (sources with notifications=true).",
                usersync_engine::endpoint(&n.public_url, NOTIFICATION_PATH)
            );
        }
    }
    let options = ServiceOptions {
        workers: usize::from(args.workers),
        scheduler,
        poll: args.poll,
        grace: args.grace,
        notifications,
    };
    eprintln!(
        "{} with {} worker(s); SIGTERM or Ctrl-C stops it (runs in flight get {} s to finish).",
        if scheduler {
            "Scheduler running"
        } else {
            "Worker running"
        },
        options.workers,
        args.grace.as_secs()
    );
    let service = tokio::spawn(run_service(engine.clone(), options, metrics, stopped));
    signal().await;
    eprintln!("Stopping: no new runs are started.");
    let _ = stop.send(true);
    let _ = service.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    if let Some(running) = lookups {
        let _ = running.server.await;
        let _ = running.loader.await;
    }
    engine.close().await;
    eprintln!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGTERM (the service manager) or SIGINT (Ctrl-C).
pub(crate) async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Graph's validation handshake: the token comes back as plain text, at once.
fn handshake(query: &HashMap<String, String>) -> Option<axum::response::Response> {
    query.get("validationToken").map(|token| {
        (
            StatusCode::OK,
            [
                ("content-type", "text/plain; charset=utf-8"),
                ("x-content-type-options", "nosniff"),
            ],
            token.clone(),
        )
            .into_response()
    })
}

/// A notification request's answer: 202 when something was taken, 403 when every
/// notification failed its clientState check, 400 for a body that is not one.
fn answer(
    app: &App,
    received: Result<usersync_engine::Received, usersync_engine::EngineError>,
) -> axum::response::Response {
    match received {
        Ok(r) => {
            app.metrics.add(|m| {
                m.notifications_accepted += r.accepted as u64;
                m.notifications_refused += r.refused as u64;
            });
            if r.accepted == 0 && r.refused > 0 {
                (StatusCode::FORBIDDEN, "clientState mismatch\n").into_response()
            } else {
                StatusCode::ACCEPTED.into_response()
            }
        }
        Err(e) if e.kind() == usersync_engine::ErrorKind::Invalid => {
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %usersync_engine::error_text(&e), "a notification could not be handled");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn notified(
    State(app): State<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    if let Some(echo) = handshake(&query) {
        return echo;
    }
    let received = app.engine.receive_notifications(&app.inbox, &body).await;
    answer(&app, received)
}

async fn lifecycle(
    State(app): State<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    if let Some(echo) = handshake(&query) {
        return echo;
    }
    let received = app.engine.receive_lifecycle(&app.inbox, &body).await;
    answer(&app, received)
}

async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    match app.engine.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", usersync_engine::error_text(&e)),
        ),
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> impl IntoResponse {
    let m = app.metrics.snapshot();
    let mut out = String::new();
    let metric = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(
            out,
            "# HELP usersync_{name} {help}\n# TYPE usersync_{name} {kind}"
        );
    };
    metric(
        &mut out,
        "runs_total",
        "counter",
        "Runs finished by this process, by kind and status.",
    );
    for ((kind, status), n) in &m.runs {
        let _ = writeln!(
            out,
            "usersync_runs_total{{kind=\"{kind}\",status=\"{status}\"}} {n}"
        );
    }
    metric(
        &mut out,
        "run_duration_seconds",
        "histogram",
        "How long runs executed by this process took.",
    );
    let mut cumulative = 0;
    for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
        cumulative += m.duration_buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "usersync_run_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "usersync_run_duration_seconds_bucket{{le=\"+Inf\"}} {}\nusersync_run_duration_seconds_sum {:.3}\nusersync_run_duration_seconds_count {}",
        m.duration_count, m.duration_sum, m.duration_count
    );
    let counters = [
        (
            "graph_requests_total",
            "Requests made to Microsoft Graph by runs of this process.",
            m.graph_requests,
        ),
        (
            "graph_throttled_total",
            "Graph requests answered 429/503 and retried.",
            m.throttled,
        ),
        (
            "runs_requeued_throttled_total",
            "Runs given back to the queue because the tenant throttled them (no attempt spent).",
            m.requeued_throttled,
        ),
        (
            "claims_total",
            "Runs claimed by the workers of this process.",
            m.claims,
        ),
        (
            "scheduled_total",
            "Syncs queued by this process's scheduler.",
            m.scheduled,
        ),
        (
            "notifications_accepted_total",
            "Graph change notifications taken (their source's delta run queued, debounced).",
            m.notifications_accepted,
        ),
        (
            "notifications_refused_total",
            "Graph change notifications refused: their clientState was not their subscription's.",
            m.notifications_refused,
        ),
        (
            "notified_runs_total",
            "Runs queued by change notifications.",
            m.notified_runs,
        ),
        (
            "users_purged_total",
            "Removed users deleted for good by this process's daily purge (past their customer's retention).",
            m.purged,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP usersync_{name} {help}\n# TYPE usersync_{name} counter\nusersync_{name} {value}"
        );
    }
    match app.engine.queue_stats().await {
        Ok(q) => {
            let gauges = [
                ("queue_depth", "Runs queued and due now.", q.queued_due),
                (
                    "queue_waiting",
                    "Runs queued for later (retries after throttling).",
                    q.queued_later,
                ),
                (
                    "runs_running",
                    "Runs executing now, in every process.",
                    q.running,
                ),
                (
                    "schedule_most_overdue_seconds",
                    "How late the most overdue source is.",
                    q.most_overdue_secs,
                ),
                (
                    "sources_needing_attention",
                    "Sources that failed 3 runs in a row or lost consent.",
                    q.needs_attention,
                ),
            ];
            for (name, help, value) in gauges {
                let _ = writeln!(
                    out,
                    "# HELP usersync_{name} {help}\n# TYPE usersync_{name} gauge\nusersync_{name} {value}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP usersync_up Whether the database answers.\n# TYPE usersync_up gauge\nusersync_up 1"
            );
        }
        Err(e) => {
            tracing::warn!(error = %usersync_engine::error_text(&e), "metrics: the database did not answer");
            let _ = writeln!(
                out,
                "# HELP usersync_up Whether the database answers.\n# TYPE usersync_up gauge\nusersync_up 0"
            );
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
