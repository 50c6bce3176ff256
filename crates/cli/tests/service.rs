//! `usersync serve` and `usersync worker` as processes: health and metrics, run-now, a
//! clean SIGTERM, a worker killed mid-run whose run another worker completes, and several
//! processes on one PostgreSQL database running each due source once.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use usersync_sim::{SimConfig, Simulator};

/// A `serve` or `worker` process, killed if the test ends early.
struct Service {
    child: Child,
    /// The HTTP listener's address (serve only).
    address: Option<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn start(cli: &Cli, args: &[&str]) -> Service {
        let mut child = cli
            .command(args)
            .env("USERSYNC_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut address = None;
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        // The banner says where it listens, then that it runs.
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("Listening on http://") {
                address = rest.split_whitespace().next().map(str::to_string);
            }
            if line.contains("running with") {
                break;
            }
        }
        // Keep draining stderr so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Service { child, address }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (up to a minute); its exit code.
    fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the process did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One HTTP/1.1 request to the listener: (status, body).
    fn request(&self, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(self.address.as_ref().unwrap()).unwrap();
        let body = json.unwrap_or("");
        let content_type = if json.is_some() {
            "Content-Type: application/json\r\n"
        } else {
            ""
        };
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// GET a path of the HTTP listener: (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, None)
    }

    /// An API request with `Authorization: Bearer TOKEN`: (status, JSON body).
    fn api(&self, token: &str, method: &str, path: &str) -> (u16, Value) {
        let mut stream = std::net::TcpStream::connect(self.address.as_ref().unwrap()).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

/// Polls until `check` holds, up to `limit`.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_of(cli: &Cli, id: &Value) -> Value {
    cli.ok_json(&["runs", "show", &id.to_string(), "--json"])
}

async fn serve_answers_health_runs_what_is_queued_and_stops_cleanly(database: String) {
    let sim = Simulator::start(SimConfig {
        users: 200,
        seed: 41,
        page_size_cap: Some(50),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cli = Cli::connected_to(&database, sim.info());
    let id = connect(&cli, sim.info());
    let mut serve = Service::start(
        &cli,
        &["serve", "--listen", "127.0.0.1:0", "--workers", "2"],
    );
    assert_eq!(serve.get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(serve.get("/readyz").0, 200);

    let done = cli.ok_json(&["source", "run-now", &id, "--wait", "--json"]);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["reason"], "run-now");
    assert!(done["added"].as_i64().unwrap() > 100);
    let (status, metrics) = serve.get("/metrics");
    assert_eq!(status, 200);
    for line in [
        "usersync_runs_total{kind=\"sync\",status=\"succeeded\"} 1",
        "usersync_queue_depth 0",
        "usersync_up 1",
        "usersync_run_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(metrics.contains("usersync_graph_requests_total "));

    // SIGTERM while a run is in flight: it finishes, then the process exits 0.
    sim.set_latency(Duration::from_millis(300));
    sim.tenant()
        .add_user(sim.tenant().new_member("Late Arrival"))
        .unwrap();
    let queued = cli.ok_json(&["source", "run-now", &id, "--json"]);
    let run = queued["run_id"].clone();
    eventually("the run starts", Duration::from_secs(30), || {
        run_of(&cli, &run)["status"] == "running"
    });
    serve.signal("TERM");
    assert_eq!(serve.wait(), 0, "a clean stop");
    let finished = run_of(&cli, &run);
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["added"], 1);
    sim.shutdown().await;
}

async fn a_worker_killed_mid_run_leaves_it_to_another_that_applies_it_once(database: String) {
    let sim = Simulator::start(SimConfig {
        users: 600,
        seed: 42,
        page_size_cap: Some(50),
        latency: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cli = Cli::connected_to(&database, sim.info());
    let id = connect(&cli, sim.info());
    let first = Service::start(&cli, &["worker", "--workers", "1"]);
    let queued = cli.ok_json(&["source", "run-now", &id, "--json"]);
    let run = queued["run_id"].clone();
    eventually(
        "the first worker claims the run",
        Duration::from_secs(30),
        || {
            let r = run_of(&cli, &run);
            r["status"] == "running" && r["owner"]["pid"] == first.pid()
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let killed = first.pid();
    drop(first); // SIGKILL, mid-read
    sim.set_latency(Duration::ZERO);
    let second = Service::start(&cli, &["worker", "--workers", "1"]);
    eventually(
        "another worker completes the run",
        Duration::from_secs(60),
        || run_of(&cli, &run)["status"] == "succeeded",
    );
    let done = run_of(&cli, &run);
    assert_eq!(done["attempts"], 2, "{done}");
    assert_ne!(done["owner"]["pid"], killed);
    assert_eq!(
        cli.ok_json(&["runs", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "one run, taken over, not a second one"
    );
    let users = cli.ok_json(&["users", "list", "--customer", "Contoso", "--json"]);
    assert_eq!(
        users.as_array().unwrap().len() as i64,
        done["added"].as_i64().unwrap(),
        "applied once and whole"
    );
    drop(second);
    sim.shutdown().await;
}

/// Change notifications end to end: `serve` subscribes the source (the simulator's
/// handshake reaches its notification URL), a change in the tenant reaches the directory
/// within seconds through a debounced delta run, a forged clientState is refused,
/// subscriptions are renewed, lifecycle events handled, and turning the option off
/// deletes them.
async fn notifications_bring_a_tenant_change_through_serve(database: String) {
    let sim = Simulator::start(SimConfig {
        users: 60,
        seed: 43,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cli = Cli::connected_to(&database, sim.info());
    let id = connect(&cli, sim.info());
    cli.ok_json(&["source", "set", &id, "notifications=true", "--json"]);
    let first = cli.ok_json(&["sync", &id, "--json"]);
    assert_eq!(first["status"], "succeeded", "{first}");
    // Subscriptions are asked for 2 minutes and renewed with less than 110 s left: the
    // keeper (every second) renews at once, so renewal shows within the test.
    let serve = Service::start(
        &cli,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--subscriptions-every",
            "1s",
            "--subscription-lifetime",
            "120s",
            "--subscription-renew-before",
            "110s",
        ],
    );
    eventually(
        "users and groups are subscribed",
        Duration::from_secs(30),
        || sim.subscriptions().len() == 2,
    );
    let subs = sim.subscriptions();
    let mut resources: Vec<&str> = subs.iter().map(|s| s.1.as_str()).collect();
    resources.sort();
    assert_eq!(resources, ["groups", "users"]);
    let users_sub = subs.iter().find(|s| s.1 == "users").unwrap().clone();

    // Five changes in quick succession: one notified run brings them all.
    let tenant = sim.tenant();
    for i in 0..5 {
        tenant
            .add_user(tenant.new_member(&format!("Notified Person {i}")))
            .unwrap();
    }
    let started = Instant::now();
    eventually(
        "the changes reach the directory",
        Duration::from_secs(60),
        || {
            let users = cli.ok_json(&["users", "list", "--customer", "Contoso", "--json"]);
            users
                .as_array()
                .unwrap()
                .iter()
                .filter(|u| {
                    u["display_name"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("Notified Person")
                })
                .count()
                == 5
        },
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?}");
    std::thread::sleep(Duration::from_secs(4));
    let runs = cli.ok_json(&["runs", "list", "--limit", "50", "--json"]);
    let notified: Vec<&Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == "notification")
        .collect();
    assert_eq!(notified.len(), 1, "one debounced run: {runs}");
    let run = run_of(&cli, &notified[0]["id"]);
    assert_eq!(run["stats"]["read_mode"], "delta", "{run}");

    // A notification with another clientState is refused and queues nothing.
    let forged = format!(
        r#"{{"value":[{{"subscriptionId":"{}","clientState":"guessed","changeType":"updated","resource":"Users/x"}}]}}"#,
        users_sub.0
    );
    assert_eq!(
        serve
            .request("POST", "/graph/notifications", Some(&forged))
            .0,
        403
    );
    // The handshake is answered as Graph expects.
    let (status, body) = serve.request(
        "POST",
        "/graph/notifications?validationToken=abc%20123",
        None,
    );
    assert_eq!((status, body.as_str()), (200, "abc 123"));

    // Renewed: the subscription's expiry moves on.
    eventually(
        "the subscription is renewed",
        Duration::from_secs(30),
        || {
            sim.subscriptions()
                .iter()
                .any(|s| s.0 == users_sub.0 && s.2 > users_sub.2)
        },
    );

    // Graph removed a subscription: it is made again.
    sim.lifecycle_event(&users_sub.0, "subscriptionRemoved")
        .await
        .unwrap();
    eventually(
        "a removed subscription is made again",
        Duration::from_secs(30),
        || {
            let now = sim.subscriptions();
            now.len() == 2 && now.iter().all(|s| s.0 != users_sub.0)
        },
    );
    // Graph asks for reauthorization: taken (its clientState checked) and renewed.
    let accepted = |serve: &Service| -> u64 {
        let (_, metrics) = serve.get("/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("usersync_notifications_accepted_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = accepted(&serve);
    let renewed_sub = sim
        .subscriptions()
        .into_iter()
        .find(|s| s.1 == "users")
        .unwrap();
    sim.lifecycle_event(&renewed_sub.0, "reauthorizationRequired")
        .await
        .unwrap();
    eventually("reauthorization is taken", Duration::from_secs(30), || {
        accepted(&serve) > before
    });
    // A missed notification queues a run.
    let groups_sub = sim
        .subscriptions()
        .into_iter()
        .find(|s| s.1 == "groups")
        .unwrap();
    sim.lifecycle_event(&groups_sub.0, "missed").await.unwrap();
    eventually(
        "a missed notification queues a run",
        Duration::from_secs(30),
        || {
            let runs = cli.ok_json(&["runs", "list", "--limit", "50", "--json"]);
            runs.as_array()
                .unwrap()
                .iter()
                .filter(|r| r["reason"] == "notification")
                .count()
                >= 2
        },
    );
    let (_, metrics) = serve.get("/metrics");
    assert!(
        metrics.contains("usersync_notifications_refused_total 1"),
        "{metrics}"
    );

    // Turned off: the subscriptions are deleted at Graph.
    cli.ok_json(&["source", "set", &id, "notifications=false", "--json"]);
    eventually(
        "the subscriptions are deleted",
        Duration::from_secs(30),
        || sim.subscriptions().is_empty(),
    );
    drop(serve);
    sim.shutdown().await;
}

/// The entry points of the console's issue: `admin create` (password on stdin), `token
/// create --json`, and a Sync & Save through the API of `serve`, run by its workers.
async fn a_token_made_on_the_command_line_syncs_through_the_api_of_serve(database: String) {
    let sim = Simulator::start(SimConfig {
        users: 120,
        seed: 7,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cli = Cli::connected_to(&database, sim.info());
    let id = connect(&cli, sim.info());

    let mut admin = cli
        .command(&["admin", "create", "Admin@Example.com", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    admin
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .unwrap();
    let out = admin.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let account: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(account["email"], "admin@example.com");
    assert_eq!(account["role"], "provider_admin");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("password"));
    // A short password is refused, naming the field; the second account for one e-mail too.
    let mut short = cli
        .command(&["admin", "create", "b@example.com"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    short.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = short.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password: give at least 12 characters"));
    let refused = cli.fails(&["token", "create", "--role", "customer_admin"]);
    assert!(refused.contains("--customer"), "{refused}");

    let made = cli.ok_json(&["token", "create", "--role", "provider_admin", "--json"]);
    let token = made["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ust_"), "{made}");
    let listed = cli.run(&["token", "list"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&token));

    let serve = Service::start(
        &cli,
        &["serve", "--listen", "127.0.0.1:0", "--workers", "1"],
    );
    let (status, body) = serve.api("ust_wrong", "GET", "/api/v1/customers");
    assert_eq!(status, 401, "{body}");
    let (status, queued) = serve.api(&token, "POST", &format!("/api/v1/sources/{id}/sync"));
    assert_eq!(status, 202, "{queued}");
    let run = queued["run_id"].as_i64().unwrap();
    let mut last = Value::Null;
    eventually("the queued sync succeeds", Duration::from_secs(60), || {
        last = serve.api(&token, "GET", &format!("/api/v1/runs/{run}")).1;
        last["status"] == "succeeded"
    });
    assert!(last["added"].as_i64().unwrap() > 50, "{last}");
    assert_eq!(last["requested_by"], format!("token #{} api", made["id"]));
    sim.shutdown().await;
}

on_both_backends!(
    a_token_made_on_the_command_line_syncs_through_the_api_of_serve,
    notifications_bring_a_tenant_change_through_serve,
    serve_answers_health_runs_what_is_queued_and_stops_cleanly,
    a_worker_killed_mid_run_leaves_it_to_another_that_applies_it_once,
);

/// Fifty due sources, two schedulers and three worker processes on one PostgreSQL
/// database: every source is synced exactly once for its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_on_postgres_sync_each_due_source_exactly_once() {
    use sqlx::Connection;
    let Some(database) = usersync_store::testing::fresh_postgres_url() else {
        return;
    };
    const SOURCES: usize = 50;
    let sim = Simulator::start(SimConfig {
        users: 20,
        seed: 43,
        tenants: SOURCES,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cli = Cli::new(&database);
    for (i, tenant) in sim.tenants().iter().enumerate() {
        let customer = format!("Customer {i}");
        cli.ok_json(&["customer", "add", &customer, "--json"]);
        for domain in &tenant.mail_domains {
            cli.ok_json(&["domain", "add", domain, "--customer", &customer, "--json"]);
        }
        let tenant_cli = Cli::connected_to(&database, tenant);
        tenant_cli.ok_json(&[
            "source",
            "add",
            "office365",
            "--customer",
            &customer,
            "--tenant",
            &tenant.tenant_id,
            "--no-test",
            "--json",
        ]);
    }
    // Every source's slot has come (as if the service had been down for a while).
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&database).await.unwrap();
    sqlx::query("UPDATE sources SET interval_secs = 3600, next_run_at = 0")
        .execute(&mut db)
        .await
        .unwrap();
    let services = vec![
        Service::start(
            &cli,
            &["serve", "--listen", "127.0.0.1:0", "--workers", "1"],
        ),
        Service::start(
            &cli,
            &["serve", "--listen", "127.0.0.1:0", "--workers", "1"],
        ),
        Service::start(&cli, &["worker", "--workers", "2"]),
        Service::start(&cli, &["worker", "--workers", "2"]),
        Service::start(&cli, &["worker", "--workers", "2"]),
    ];
    eventually("every source synced", Duration::from_secs(240), || {
        let runs = cli.ok_json(&[
            "runs",
            "list",
            "--status",
            "succeeded",
            "--limit",
            "500",
            "--json",
        ]);
        runs.as_array().unwrap().len() >= SOURCES
    });
    // A moment more: a second run of any source would show now.
    std::thread::sleep(Duration::from_secs(2));
    let runs = cli.ok_json(&["runs", "list", "--limit", "500", "--json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), SOURCES, "one run per source: {runs:?}");
    let mut sources: Vec<i64> = runs
        .iter()
        .map(|r| r["source_id"].as_i64().unwrap())
        .collect();
    sources.sort();
    sources.dedup();
    assert_eq!(sources.len(), SOURCES);
    assert!(
        runs.iter()
            .all(|r| r["status"] == "succeeded" && r["reason"] == "schedule")
    );
    let owners: std::collections::BTreeSet<i64> = runs
        .iter()
        .filter_map(|r| r["owner"]["pid"].as_i64())
        .collect();
    assert!(owners.len() >= 2, "the work was shared: {owners:?}");
    drop(services);
    db.close().await.unwrap();
    usersync_store::testing::discard(&database).await;
    sim.shutdown().await;
}
