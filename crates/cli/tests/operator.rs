//! Operator safety, tried as an operator would from the command line: repairing and
//! removing a source, keys, stale runs, a busy database, wrong databases, input that must be
//! refused, and a command that behaves like a Unix tool.
//!
//! The simulator runs in the test process while the command blocks on its child, so these
//! tests use a multi-thread runtime: one worker serves the simulator.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cli, add_source, connect};
use serde_json::Value;
use usersync_sim::{SimConfig, SimUser, Simulator};
use usersync_store::testing::{discard, fresh_sqlite_url};

async fn sim(users: usize, seed: u64) -> Simulator {
    Simulator::start(SimConfig {
        users,
        seed,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn active_users(cli: &Cli) -> Vec<Value> {
    cli.ok_json(&["users", "list", "--customer", "Contoso", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

/// Item 1: a wrong secret is replaced, endpoints changed, the connection tested, and a
/// source removed (through the safeguard, or keeping its users); its tenant connects again.
async fn a_source_is_repaired_tested_and_removed(database: String) {
    let sim = sim(120, 21).await;
    let info = sim.info().clone();
    let cli = Cli::connected_to(&database, &info);
    cli.ok_json(&["customer", "add", "Contoso", "--json"]);
    for domain in &info.mail_domains {
        cli.ok_json(&["domain", "add", domain, "--customer", "Contoso", "--json"]);
    }
    // A wrong secret: the source is added with a warning, and the test says what fails.
    let wrong = cli
        .clone()
        .with_env("USERSYNC_M365_CLIENT_SECRET", "not-the-secret");
    let out = wrong.run(&[
        "source",
        "add",
        "office365",
        "--customer",
        "Contoso",
        "--tenant",
        &info.tenant_id,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains("warning: the connection test failed") && shown.contains("sign-in"),
        "{shown}"
    );
    assert!(!shown.contains("not-the-secret"), "the secret was printed");
    let id = cli.ok_json(&["source", "list", "--json"])[0]["id"].to_string();
    let out = cli.run(&["sync", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("usersync source set-secret {id}")),
        "{}",
        text(&out)
    );

    // The secret is replaced from stdin (no argument, no environment variable).
    let stdin_only = cli.clone().without_env("USERSYNC_M365_CLIENT_SECRET");
    let out = stdin_only.run_with_stdin(
        &["source", "set-secret", &id],
        &format!("{}\n", info.client_secret),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(&info.client_secret));
    let report = cli.ok_json(&["source", "test", &id, "--json"]);
    let checks = report["checks"].as_array().unwrap();
    let permissions: Vec<&str> = checks
        .iter()
        .map(|c| c["permission"].as_str().unwrap())
        .collect();
    assert_eq!(
        permissions,
        [
            "sign-in",
            "User.Read.All",
            "Group.Read.All",
            "Domain.Read.All",
            "MailboxSettings.Read"
        ]
    );
    assert!(checks.iter().all(|c| c["status"] == "granted"), "{report}");
    assert_eq!(cli.ok_json(&["sync", &id, "--json"])["status"], "succeeded");
    let synced = active_users(&cli).len();
    assert!(synced > 40, "{synced}");

    // Reconnect: endpoints are checked like a new source's; the connection is tested.
    let err = cli.fails(&[
        "source",
        "reconnect",
        &id,
        "--graph-url",
        "https://login.microsoftonline.com",
    ]);
    assert!(
        err.contains("--graph-url") && err.contains("https://graph.microsoft.com"),
        "{err}"
    );
    let err = cli.fails(&[
        "source",
        "reconnect",
        &id,
        "--graph-url",
        "http://graph.example.com",
    ]);
    assert!(err.contains("--allow-insecure-http"), "{err}");
    let other_app = "11111111-2222-3333-4444-555555555555";
    let out = cli.run(&["source", "reconnect", &id, "--client-id", other_app]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("usersync source set-secret {id}")),
        "{}",
        text(&out)
    );
    let back = cli.ok_json(&[
        "source",
        "reconnect",
        &id,
        "--client-id",
        &info.client_id,
        "--json",
    ]);
    assert_eq!(
        back["source"]["settings"]["client_id"],
        info.client_id.as_str()
    );

    // Removing a source that manages more users than the safeguard allows: held, and
    // nothing changes; confirmed, its users are removed (restorable) and its runs stay.
    let out = cli.run(&["source", "remove", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--confirm-removals"), "{}", text(&out));
    assert_eq!(
        active_users(&cli).len(),
        synced,
        "a held removal changes nothing"
    );
    let removed = cli.ok_json(&["source", "remove", &id, "--confirm-removals", "--json"]);
    assert_eq!(removed["status"], "succeeded");
    assert_eq!(removed["removed"].as_u64().unwrap() as usize, synced);
    assert!(active_users(&cli).is_empty());
    assert_eq!(
        cli.ok_json(&["source", "list", "--json"]),
        Value::Array(vec![])
    );
    let all = cli.ok_json(&["source", "list", "--include-removed", "--json"]);
    assert!(all[0]["removed_at"].is_string(), "{all}");
    let runs = cli.ok_json(&["runs", "list", "--source", &id, "--json"]);
    assert_eq!(runs[0]["kind"], "remove");
    let err = cli.fails(&["sync", &id]);
    assert!(err.contains("was removed"), "{err}");

    // The tenant can be connected again; its first sync restores the removed users.
    let again = add_source(&cli, &info.tenant_id);
    assert_ne!(again, id);
    let sync = cli.ok_json(&["sync", &again, "--json"]);
    assert_eq!(sync["status"], "succeeded", "{sync}");
    assert_eq!(sync["updated"].as_u64().unwrap() as usize, synced, "{sync}");
    assert_eq!(active_users(&cli).len(), synced);

    // With --keep-users the users stay, no longer managed by any source.
    let kept = cli.ok_json(&["source", "remove", &again, "--keep-users", "--json"]);
    assert_eq!(kept["unmanaged"].as_u64().unwrap() as usize, synced);
    let users = active_users(&cli);
    assert_eq!(users.len(), synced);
    assert!(users.iter().all(|u| u["source_id"].is_null()), "{users:?}");
    sim.shutdown().await;
}

/// Item 1: a permission the tenant did not grant is named; an optional one still syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_test_names_each_missing_permission() {
    let database = fresh_sqlite_url();
    let sim = Simulator::start(SimConfig {
        users: 30,
        seed: 22,
        // Directory.Read.All would cover the domains: the app has the narrow ones only.
        denied_permissions: vec![
            "MailboxSettings.Read".into(),
            "Domain.Read.All".into(),
            "Directory.Read.All".into(),
        ],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cli = Cli::connected_to(&database, sim.info());
    let id = connect(&cli, sim.info());
    let out = cli.run(&["source", "test", &id, "--json"]);
    assert_eq!(out.status.code(), Some(1), "Domain.Read.All is needed");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |p: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["permission"] == p)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("User.Read.All"), "granted");
    assert_eq!(status("Domain.Read.All"), "missing");
    assert_eq!(status("MailboxSettings.Read"), "missing");
    let shown = cli.on_terminal(&["source", "test", &id], 100);
    assert!(
        shown.contains("missing (optional)") && shown.contains("cannot sync yet: Domain.Read.All"),
        "{shown}"
    );
    sim.shutdown().await;
    discard(&database).await;
}

/// Item 2: a database copied without its key file is refused with the key file named; a
/// lost key is reset, the secret set again, and the source syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_database_is_refused_without_its_key_and_a_lost_key_is_reset() {
    let sim = sim(20, 23).await;
    let dir = std::env::temp_dir().join(format!("usersync-key-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("copy")).unwrap();
    let cli = Cli {
        dir: Some(dir.clone()),
        ..Cli::connected_to("sqlite://usersync.db", sim.info())
    }
    .without_env("USERSYNC_SECRET_KEY");
    let config = cli.ok_json(&["config", "--json"]);
    assert!(
        config["secret_key"]["value"]
            .as_str()
            .unwrap()
            .contains("usersync.db.key"),
        "{config}"
    );
    let id = connect(&cli, sim.info());
    assert!(dir.join("usersync.db.key").exists());
    std::fs::copy(dir.join("usersync.db"), dir.join("copy/usersync.db")).unwrap();

    let copy = Cli {
        dir: Some(dir.join("copy")),
        ..cli.clone()
    };
    let err = copy.fails(&["sync", &id]);
    assert!(
        err.contains("the key file usersync.db.key does not exist") && err.contains("key reset"),
        "{err}"
    );
    assert!(
        !dir.join("copy/usersync.db.key").exists(),
        "no key generated"
    );
    // Another key (a file from elsewhere) is refused too, naming it.
    std::fs::write(
        dir.join("copy/other.key"),
        "HxwdHhscGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwI=\n",
    )
    .unwrap();
    let err = copy
        .clone()
        .with_env("USERSYNC_SECRET_KEY_FILE", "other.key")
        .fails(&["customer", "list"]);
    assert!(
        err.contains("the key file other.key") && err.contains("does not open"),
        "{err}"
    );

    let out = copy.run(&["key", "reset"]);
    assert!(
        !out.status.success(),
        "no terminal, no --yes: nothing happens"
    );
    let out = copy.run(&["key", "reset", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("usersync source set-secret {id}")));
    let out = copy.run(&["source", "set-secret", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Generated the key file usersync.db.key"));
    assert_eq!(
        copy.ok_json(&["sync", &id, "--json"])["status"],
        "succeeded"
    );
    // The original, with its own key, still works.
    assert_eq!(cli.ok_json(&["sync", &id, "--json"])["status"], "succeeded");
    sim.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A sync killed with kill -9 does not stay "running": the next command takes it back to
/// the queue (the lost claim counts as an attempt), and the next sync completes that same
/// run, applied once and whole.
async fn a_sync_killed_mid_read_is_taken_back_and_completed_once(database: String) {
    let sim = Simulator::start(SimConfig {
        users: 3000,
        seed: 24,
        page_size_cap: Some(100),
        latency: Duration::from_millis(150),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cli = Cli::connected_to(&database, sim.info());
    let id = connect(&cli, sim.info());
    let mut child = cli
        .command(&["sync", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run is claimed (it is queued first, for a moment), then kill the
    // process without warning.
    let started = Instant::now();
    loop {
        let runs = cli.ok_json(&["runs", "list", "--json"]);
        if runs.as_array().is_some_and(|r| !r.is_empty()) && runs[0]["status"] == "running" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no run started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let runs = cli.ok_json(&["runs", "list", "--json"]);
    assert_eq!(runs[0]["status"], "queued", "{runs}");
    assert_eq!(runs[0]["attempts"], 1, "{runs}");
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("the process running it stopped"),
        "{runs}"
    );
    assert!(active_users(&cli).is_empty(), "nothing was applied");
    let killed = runs[0]["id"].clone();
    let done = cli.ok_json(&["sync", &id, "--json"]);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["run_id"], killed, "the queued run itself is completed");
    let run = cli.ok_json(&["runs", "show", &killed.to_string(), "--json"]);
    assert_eq!(run["attempts"], 2, "{run}");
    assert_eq!(
        cli.ok_json(&["runs", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "one run, not two"
    );
    assert_eq!(
        active_users(&cli).len() as u64,
        done["added"].as_u64().unwrap()
    );
    sim.shutdown().await;
}

/// Runs `command` while `holder` keeps a transaction open, and commits it after `hold`.
async fn run_until_released(
    mut command: std::process::Command,
    holder: &mut sqlx::AnyConnection,
    hold: Duration,
) -> std::process::Output {
    let release = async {
        tokio::time::sleep(hold).await;
        sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
    };
    let (out, ()) = tokio::join!(
        tokio::task::spawn_blocking(move || command.output()),
        release
    );
    out.unwrap().unwrap()
}

/// Item 4: while another process holds the write lock, a write waits its turn and then
/// succeeds; with a short wait it says in one sentence that a sync is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_waits_for_a_busy_sqlite_database_and_explains_a_timeout() {
    use sqlx::Connection;
    let database = fresh_sqlite_url();
    let cli = Cli::new(&database);
    cli.ok_json(&["customer", "add", "Contoso", "--json"]);
    sqlx::any::install_default_drivers();
    let mut writer = sqlx::AnyConnection::connect(&database).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    let out = cli.run(&["customer", "list", "--json"]);
    assert!(out.status.success(), "reads do not wait: {}", text(&out));
    let out = cli.run(&["--busy-timeout", "1s", "customer", "add", "Fabrikam"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("another sync of this database is running")
            && err.contains("within 1 s")
            && err.contains("retry")
            && !err.contains("code: 5"),
        "{err}"
    );
    // With the default wait, the command gets its turn when the other writer commits.
    let out = run_until_released(
        cli.command(&["customer", "add", "Fabrikam", "--json"]),
        &mut writer,
        Duration::from_millis(700),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    writer.close().await.unwrap();
    discard(&database).await;
}

/// Item 8: a statement that waits for a lock is no reason for the database driver to print
/// its whole SQL at the default log level (a losing concurrent sync once wrote a
/// 477,660-byte stderr line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_statement_is_not_logged_at_the_default_level() {
    use sqlx::Connection;
    let Some(database) = usersync_store::testing::fresh_postgres_url() else {
        return;
    };
    let cli = Cli::new(&database);
    cli.ok_json(&["customer", "add", "Contoso", "--json"]);
    sqlx::any::install_default_drivers();
    let mut holder = sqlx::AnyConnection::connect(&database).await.unwrap();
    for sql in ["BEGIN", "LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"] {
        sqlx::query(sql).execute(&mut holder).await.unwrap();
    }
    let out = run_until_released(
        cli.command(&["customer", "add", "Fabrikam"]),
        &mut holder,
        Duration::from_millis(1500),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("slow statement") && !err.contains("SELECT"),
        "{} bytes on stderr: {err}",
        err.len()
    );
    holder.close().await.unwrap();
    discard(&database).await;
}

/// Item 5: databases that are not usersync's are refused at once, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_databases_are_refused_at_once() {
    let dir = std::env::temp_dir().join(format!("usersync-wrongdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "shopping list: milk, eggs\n").unwrap();
    let cli = Cli::new(&format!("sqlite://{}", notes.display()));
    let started = Instant::now();
    let err = cli.fails(&["customer", "list"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.contains("is not an SQLite database"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "shopping list: milk, eggs\n"
    );

    let err = Cli::new("postgres://root@127.0.0.1:5432").fails(&["customer", "list"]);
    assert!(err.contains("names no database"), "{err}");
    // An unreachable server: the URL as given (password masked), the cause once.
    let err = Cli::new("postgres://app:s3cret@127.0.0.1:9/usersync").fails(&["customer", "list"]);
    assert!(
        err.contains("postgres://app:***@127.0.0.1:9/usersync") && !err.contains("s3cret"),
        "{err}"
    );
    assert_eq!(err.matches("refused").count(), 1, "{err}");
    let err = Cli::new("postgres://app:s3cret@[::1:5432/x").fails(&["customer", "list"]);
    assert!(
        err.contains("postgres://app:***@[::1:5432/x") && !err.contains("s3cret"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Item 6: input that would be accepted and cause harm later is refused with the field and
/// the fix, changing nothing.
async fn input_that_should_not_be_accepted_is_refused(database: String) {
    let sim = sim(40, 25).await;
    let info = sim.info().clone();
    let cli = Cli::connected_to(&database, &info);
    cli.ok_json(&["customer", "add", "Contoso", "--json"]);

    let err = cli.fails(&["customer", "add", "contoso"]);
    assert!(err.contains("'Contoso' already exists"), "{err}");
    let err = cli.fails(&["customer", "add", "Bad\u{7}Name"]);
    assert!(err.contains("control character"), "{err}");
    let long = "x".repeat(201);
    let err = cli.fails(&["customer", "add", &long]);
    assert!(err.contains("200"), "{err}");
    assert_eq!(
        cli.ok_json(&["customer", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for (bad, why) in [
        ("10.0.0.1", "IP address"),
        ("mail_server.contoso.com", "'_'"),
        ("contoso", "'.'"),
        ("con toso.com", "space"),
    ] {
        let err = cli.fails(&["domain", "add", bad, "--customer", "Contoso"]);
        assert!(err.contains(why), "{bad}: {err}");
    }
    let idn = cli.ok_json(&[
        "domain",
        "add",
        "Bücher.de",
        "--customer",
        "contoso",
        "--json",
    ]);
    assert_eq!(idn["name"], "xn--bcher-kva.de");

    let add = |tenant: &str, client: &str, extra: &[&str]| {
        let mut args = vec![
            "source",
            "add",
            "office365",
            "--customer",
            "Contoso",
            "--tenant",
            tenant,
            "--client-id",
            client,
        ];
        args.extend_from_slice(extra);
        cli.fails(&args)
    };
    let err = add("my tenant!", &info.client_id, &[]);
    assert!(err.contains("--tenant") && err.contains("GUID"), "{err}");
    let err = add(&info.tenant_id, "my-app", &[]);
    assert!(err.contains("--client-id") && err.contains("GUID"), "{err}");
    let not_pem = std::env::temp_dir().join(format!("usersync-notpem-{}", std::process::id()));
    std::fs::write(&not_pem, "this is no certificate").unwrap();
    let err = add(
        &info.tenant_id,
        &info.client_id,
        &["--ca-file", not_pem.to_str().unwrap()],
    );
    assert!(
        err.contains("--ca-file") && err.contains("no PEM certificate"),
        "{err}"
    );
    std::fs::remove_file(&not_pem).ok();
    let err = add(
        &info.tenant_id,
        &info.client_id,
        &["--authority-url", "http://login.example.com"],
    );
    assert!(err.contains("--allow-insecure-http"), "{err}");
    assert_eq!(
        cli.ok_json(&["source", "list", "--json"]),
        Value::Array(vec![])
    );

    for domain in &info.mail_domains {
        cli.ok_json(&["domain", "add", domain, "--customer", "Contoso", "--json"]);
    }
    let id = add_source(&cli, &info.tenant_id);
    let err = cli.fails(&["source", "set", &id, "defaults.timezone=Mars/Base"]);
    assert!(err.contains("IANA") && err.contains("Mars/Base"), "{err}");
    let set = cli.ok_json(&[
        "source",
        "set",
        &id,
        "defaults.timezone=europe/london",
        "--json",
    ]);
    assert_eq!(set["defaults"]["timezone"], "Europe/London");
    let err = cli.fails(&["source", "set", &id, "selected_groups=No Such Group"]);
    assert!(
        err.contains("selected_groups") && err.contains("'No Such Group'"),
        "{err}"
    );
    let out = cli.run(&["groups", "add", "Staff", "--customer", "Contoso"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = cli.fails(&["source", "set", &id, "group_map=Nowhere=>Staff"]);
    assert!(
        err.contains("group_map") && err.contains("'Nowhere'"),
        "{err}"
    );
    let err = cli.fails(&["groups", "add", "Bad\tGroup", "--customer", "Contoso"]);
    assert!(err.contains("control character"), "{err}");
    let shown = cli.ok_json(&["source", "show", &id, "--json"]);
    assert!(
        shown["settings"]["options"]["selected_groups"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    sim.shutdown().await;
}

/// Item 9: a closed pipe ends the command quietly; tables fit an 80-column terminal with
/// a line per row; logs carry colour only on a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_behaves_like_a_unix_tool() {
    let database = fresh_sqlite_url();
    // Enough users that the list outgrows a pipe's buffer (64 KiB): the reader leaves first.
    let sim = sim(3000, 26).await;
    let info = sim.info().clone();
    let cli = Cli::connected_to(&database, &info);
    let id = connect(&cli, &info);
    // A long display name, so a narrow terminal must shorten something.
    let long = sim
        .tenant()
        .add_user(SimUser::member(
            "Alexandra Konstantinopoulou-Vasilopoulou (Research and Development, Athens)",
            &format!("alexandra.konstantinopoulou@{}", info.mail_domains[0]),
        ))
        .unwrap();
    let _ = long;
    assert_eq!(cli.ok_json(&["sync", &id, "--json"])["status"], "succeeded");

    // `usersync users list | head -1`: the reader goes away after one line.
    let mut child = cli
        .command(&["users", "list", "--customer", "Contoso"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains('\t'));
    }
    let out = child.wait_with_output().unwrap();
    // What a Unix tool killed by SIGPIPE reports: quiet, and not a success.
    assert_eq!(out.status.code(), Some(141));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );

    // On an 80-column terminal: a header and one line per user, addresses whole.
    let users = active_users(&cli);
    let shown = cli.on_terminal(&["users", "list", "--customer", "Contoso"], 80);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].starts_with("ADDRESS"), "{shown}");
    assert_eq!(lines.len(), users.len() + 2, "header, rows, total: {shown}");
    for line in &lines {
        assert!(
            console_width(line) <= 80,
            "{} columns: {line}",
            console_width(line)
        );
    }
    for u in &users {
        let address = u["address"].as_str().unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.split_whitespace().next() == Some(address)),
            "{address} is not whole at the start of a line"
        );
    }
    assert!(!shown.contains('│') && !shown.contains('─'), "{shown}");
    let runs = cli.on_terminal(&["runs", "list"], 80);
    let header = runs.lines().next().unwrap();
    for title in ["RUN", "STATUS", "STARTED"] {
        assert!(header.contains(title), "{runs}");
    }
    let row = runs.lines().nth(1).unwrap();
    assert!(
        row.split("  ")
            .any(|cell| cell.trim().len() == 19 && cell.contains(':')),
        "time to the second: {row}"
    );

    // Logs: no colour codes into a file; colour on a terminal unless NO_COLOR.
    let logged = cli
        .clone()
        .with_env("USERSYNC_LOG", "info")
        .run(&["preview", &id]);
    let err = String::from_utf8_lossy(&logged.stderr);
    assert!(err.contains("INFO"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a file: {err:?}");
    // (--json: no progress bar, whose cursor movements are escape codes too.)
    let on_terminal = cli
        .clone()
        .with_env("USERSYNC_LOG", "info")
        .on_terminal(&["preview", &id, "--json"], 80);
    assert!(
        on_terminal.contains("INFO") && on_terminal.contains('\u{1b}'),
        "{on_terminal:?}"
    );
    let plain = cli
        .clone()
        .with_env("USERSYNC_LOG", "info")
        .with_env("NO_COLOR", "1")
        .on_terminal(&["preview", &id, "--json"], 80);
    assert!(plain.contains("INFO"), "{plain:?}");
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    sim.shutdown().await;
    discard(&database).await;
}

fn console_width(line: &str) -> usize {
    line.chars().count()
}

/// Item 8: an impossible simulator size is refused with a message, not an abort.
#[test]
fn a_simulator_too_large_for_memory_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(["sim", "--users", "100000000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--users 100000000000"), "{err}");
    assert!(
        !err.contains("memory allocation") && !err.contains("panicked"),
        "{err}"
    );
}

on_both_backends!(
    a_source_is_repaired_tested_and_removed,
    a_sync_killed_mid_read_is_taken_back_and_completed_once,
    input_that_should_not_be_accepted_is_refused,
);
