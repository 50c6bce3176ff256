//! The `usersync` command as scripts use it: every named command, its JSON and exit codes.
//!
//! The simulator runs in the test process while the command blocks on its child, so
//! these tests use a multi-thread runtime: one worker serves the simulator.

mod common;

use std::process::Command;

use common::{Cli, add_source, connect};
use serde_json::Value;
use usersync_sim::{SimConfig, Simulator};

async fn the_commands_scripts_use_work_end_to_end(database: String) {
    let sim = Simulator::start(SimConfig {
        users: 60,
        seed: 5,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let info = sim.info().clone();
    let cli = Cli::connected_to(&database, &info);
    let customer = cli.ok_json(&["customer", "add", "Contoso", "--json"]);
    assert_eq!(customer["name"], "Contoso");
    for domain in &info.mail_domains {
        cli.ok_json(&["domain", "add", domain, "--customer", "Contoso", "--json"]);
    }
    let source = cli.ok_json(&[
        "source",
        "add",
        "office365",
        "--customer",
        "Contoso",
        "--tenant",
        &info.tenant_id,
        "--json",
    ]);
    let id = source["id"].as_i64().expect("source id").to_string();
    let shown = cli.ok_json(&["source", "show", &id, "--json"]);
    assert!(
        !shown.to_string().contains(&info.client_secret),
        "the secret was printed"
    );

    let preview = cli.ok_json(&["preview", &id, "--json"]);
    for key in ["add", "update", "remove", "skip"] {
        assert!(preview[key].is_array(), "preview has no {key}: {preview}");
    }
    let to_add = preview["add"].as_array().unwrap().len();
    assert!(to_add > 0);
    let skip = &preview["skip"][0];
    for key in ["source_object_id", "name", "reason"] {
        assert!(skip[key].is_string(), "a skip has no {key}: {skip}");
    }
    assert_eq!(
        cli.ok_json(&["users", "list", "--customer", "Contoso", "--json"]),
        Value::Array(vec![])
    );

    let sync = cli.ok_json(&["sync", &id, "--json"]);
    assert_eq!(sync["status"], "succeeded");
    assert_eq!(sync["added"].as_u64().unwrap() as usize, to_add);
    assert!(sync["error"].is_null());
    let users = cli.ok_json(&["users", "list", "--customer", "Contoso", "--json"]);
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), to_add);
    for key in [
        "address",
        "display_name",
        "type",
        "billable",
        "aliases",
        "group",
        "status",
        "source_id",
        "source_object_id",
    ] {
        assert!(
            users[0].get(key).is_some(),
            "a user has no {key}: {}",
            users[0]
        );
    }
    assert_eq!(users[0]["group"], "Main");
    assert_eq!(users[0]["status"], "active");

    // A user deleted in the tenant leaves the list, and stays visible with --include-removed.
    let gone = users.iter().find(|u| u["type"] == "user").unwrap();
    sim.tenant()
        .delete_user(gone["source_object_id"].as_str().unwrap())
        .unwrap();
    let sync2 = cli.ok_json(&["sync", &id, "--json"]);
    assert_eq!(sync2["removed"], 1);
    let active = cli.ok_json(&["users", "list", "--customer", "Contoso", "--json"]);
    assert!(
        !active
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["address"] == gone["address"])
    );
    let all = cli.ok_json(&[
        "users",
        "list",
        "--customer",
        "Contoso",
        "--include-removed",
        "--json",
    ]);
    let removed = all
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["address"] == gone["address"])
        .unwrap();
    assert_eq!(removed["status"], "removed");

    let runs = cli.ok_json(&["runs", "list", "--source", &id, "--json"]);
    assert_eq!(runs.as_array().unwrap().len(), 3);
    let run_id = sync2["run_id"].as_i64().unwrap().to_string();
    let run = cli.ok_json(&["runs", "show", &run_id, "--json"]);
    assert_eq!(run["plan"]["remove"][0]["address"], gone["address"]);

    // Human output into a pipe: one row per user, tab-separated, for grep, cut and awk.
    let table = cli.run(&["users", "list", "--customer", "Contoso"]);
    let text = String::from_utf8_lossy(&table.stdout);
    let active = active.as_array().unwrap();
    assert_eq!(text.lines().count(), active.len(), "{text}");
    let first: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
    assert_eq!(first[0], active[0]["address"], "{text}");
    assert!(
        !text.contains('─') && !text.trim_start().starts_with('['),
        "{text}"
    );

    // One tenant belongs to one customer.
    cli.ok_json(&["customer", "add", "Fabrikam", "--json"]);
    let out = cli.run(&[
        "source",
        "add",
        "office365",
        "--customer",
        "Fabrikam",
        "--tenant",
        &info.tenant_id,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'Contoso'"));

    // A wrong secret: a failed run, exit code 1, the reason named, the secret never printed.
    let other = Simulator::start(SimConfig {
        users: 10,
        seed: 6,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut bad = cli.clone();
    for (k, v) in bad.env.iter_mut() {
        match k.as_str() {
            "USERSYNC_M365_CLIENT_SECRET" => *v = "wrong-secret-value".into(),
            "USERSYNC_M365_AUTHORITY_URL" => *v = other.info().authority_url.clone(),
            "USERSYNC_M365_GRAPH_URL" => *v = other.info().graph_url.clone(),
            "USERSYNC_M365_CLIENT_ID" => *v = other.info().client_id.clone(),
            _ => {}
        }
    }
    bad.ok_json(&[
        "domain",
        "add",
        &other.info().mail_domains[0],
        "--customer",
        "Fabrikam",
        "--json",
    ]);
    let source = bad.ok_json(&[
        "source",
        "add",
        "office365",
        "--customer",
        "Fabrikam",
        "--tenant",
        &other.info().tenant_id,
        "--json",
    ]);
    let out = bad.run(&["sync", &source["id"].to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let failed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("AADSTS7000215"),
        "{failed}"
    );
    let everything = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!everything.contains("wrong-secret-value"));
    assert_eq!(
        bad.ok_json(&["users", "list", "--customer", "Fabrikam", "--json"]),
        Value::Array(vec![])
    );
    other.shutdown().await;

    sim.shutdown().await;
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5";

async fn bad_input_is_refused_with_the_field_and_the_fix(database: String) {
    let cli = Cli::new(&database);
    let out = cli.run(&["domain", "add", "example.com", "--customer", "Nobody"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("customer 'Nobody' does not exist") && err.contains("usersync customer add"),
        "{err}"
    );

    cli.ok_json(&["customer", "add", "Contoso", "--json"]);
    let out = cli.run(&["domain", "add", "not a domain", "--customer", "Contoso"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a domain name"));

    // A domain's route for the mail system: a transport, or empty for the default.
    cli.ok_json(&[
        "domain",
        "add",
        "route.example",
        "--customer",
        "Contoso",
        "--json",
    ]);
    let set = cli.ok_json(&[
        "domain",
        "set",
        "route.example",
        "route=smtp:[mx.example.net]:25",
        "--json",
    ]);
    assert_eq!(set["route"], "smtp:[mx.example.net]:25", "{set}");
    let out = cli.run(&["domain", "set", "route.example", "route=mx.example.net"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("route") && err.contains("TRANSPORT:NEXTHOP"),
        "{err}"
    );
    let cleared = cli.ok_json(&["domain", "set", "route.example", "route=", "--json"]);
    assert!(cleared.get("route").is_none(), "{cleared}");

    let out = cli.run(&[
        "source",
        "add",
        "office365",
        "--customer",
        "Contoso",
        "--tenant",
        TENANT,
        "--client-id",
        APP,
        "--email-method",
        "smtp",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("primary_smtp, mail, upn"), "{err}");

    let out = cli.run(&[
        "source",
        "add",
        "office365",
        "--customer",
        "Contoso",
        "--tenant",
        TENANT,
        "--client-id",
        APP,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("USERSYNC_M365_CLIENT_SECRET"), "{err}");
    assert_eq!(
        cli.ok_json(&["source", "list", "--json"]),
        Value::Array(vec![]),
        "nothing is stored"
    );
}

#[test]
fn the_demo_runs_with_no_flags_and_shows_a_removal() {
    let dir = std::env::temp_dir().join(format!("usersync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(["demo", "--no-serve"])
        .current_dir(&dir)
        .env_remove("USERSYNC_DATABASE_URL")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("removed ") && text.contains("kept as removed"),
        "{text}"
    );
    assert!(dir.join("usersync-demo.db").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// Without --no-serve the demo goes on serving the console, with a sign-in it prints,
/// until it is stopped.
#[test]
fn the_demo_then_serves_the_console_with_the_sign_in_it_prints() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = std::env::temp_dir().join(format!("usersync-demo-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(["demo", "--users", "60", "--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .env_remove("USERSYNC_DATABASE_URL")
        .env("USERSYNC_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut password = None;
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in stdout.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split_once("with the password ") {
            password = Some(rest.1.trim().to_string());
            break;
        }
    }
    // Read on: a closed pipe would end the demo (as `usersync … | head` ends a command).
    std::thread::spawn(move || for _ in stdout {});
    let password = password.expect("the demo prints a password");
    let mut address = None;
    let mut said = Vec::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("Listening on http://") {
            address = rest.split_whitespace().next().map(str::to_string);
            break;
        }
        said.push(line);
    }
    std::thread::spawn(move || for _ in stderr {});
    let address = address.unwrap_or_else(|| {
        panic!(
            "the demo did not say where the console listens:\n{}",
            said.join("\n")
        )
    });
    let request = |text: String| {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream.write_all(text.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let form = request(format!(
        "GET /sign-in HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    ));
    let cookie = form
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let csrf = cookie.split_once('=').unwrap().1.to_string();
    let body = format!(
        "email=demo%40usersync.example&password={}&csrf={csrf}&next=%2F",
        password.replace('-', "%2D")
    );
    let signed = request(format!(
        "POST /sign-in HTTP/1.1\r\nHost: {address}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(signed.starts_with("HTTP/1.1 303"), "{signed}");
    let session = signed
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find(|c| c.starts_with("usersync_session="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let home = request(format!(
        "GET / HTTP/1.1\r\nHost: {address}\r\nCookie: {session}\r\nConnection: close\r\n\r\n"
    ));
    assert!(
        home.starts_with("HTTP/1.1 200") && home.contains("Contoso (demo)"),
        "{home}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "a clean stop");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_shows_where_each_setting_comes_from_and_masks_secrets() {
    let out = Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(["config", "--json"])
        .env("USERSYNC_M365_CLIENT_SECRET", "hunter2-secret")
        .env(
            "USERSYNC_DATABASE_URL",
            "postgres://app:dbpassword@db.example:5432/usersync",
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("hunter2-secret") && !text.contains("dbpassword"),
        "{text}"
    );
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        config["m365.client_secret"]["from"],
        "env USERSYNC_M365_CLIENT_SECRET"
    );
    assert_eq!(
        config["database"]["value"],
        "postgres://app:***@db.example:5432/usersync"
    );
    assert_eq!(
        config["m365.graph_url"]["value"],
        "https://graph.microsoft.com"
    );
}

async fn the_wizard_options_work_from_the_command_line(database: String) {
    let sim = Simulator::start(SimConfig {
        users: 40,
        seed: 8,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let info = sim.info().clone();
    let cli = Cli::connected_to(&database, &info);
    cli.ok_json(&["customer", "add", "Contoso", "--json"]);
    cli.ok_json(&[
        "domain",
        "add",
        &info.mail_domains[0],
        "--customer",
        "Contoso",
        "--json",
    ]);
    let id = add_source(&cli, &info.tenant_id);

    // Options: set, shown, and a bad one refused with the valid keys, changing nothing.
    let options = cli.ok_json(&[
        "source",
        "set",
        &id,
        "import_domains=true",
        "exclude_guests=true",
        "interval=1d",
        "--json",
    ]);
    assert_eq!(options["import_domains"], true);
    assert_eq!(options["interval_minutes"], 1440);
    let out = cli.run(&["source", "set", &id, "only_matching=true", "colour=blue"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown option 'colour'") && err.contains("exclude_unlicensed"),
        "{err}"
    );
    let shown = cli.ok_json(&["source", "show", &id, "--json"]);
    assert_eq!(
        shown["settings"]["options"]["only_matching"], false,
        "a refused set changes nothing"
    );

    // Filters: a bad rule names its fault; a new group needs --create-group.
    let out = cli.run(&[
        "filter",
        "add",
        &id,
        "--group",
        "Drivers",
        "jobtitel equals Driver",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field 'jobtitel'"));
    let out = cli.run(&[
        "filter",
        "add",
        &id,
        "--group",
        "Drivers",
        "jobTitle equals Driver",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--create-group"));
    let r1 = cli.ok_json(&[
        "filter",
        "add",
        &id,
        "--group",
        "Drivers",
        "--create-group",
        "jobTitle equals Driver",
        "--json",
    ]);
    let r2 = cli.ok_json(&[
        "filter",
        "add",
        &id,
        "--group",
        "Main",
        "accountEnabled is_true",
        "--json",
    ]);
    assert!(
        cli.run(&["filter", "move", &id, &r2["id"].to_string(), "--to", "1"])
            .status
            .success()
    );
    let rules = cli.ok_json(&["filter", "list", &id, "--json"]);
    assert_eq!(rules[0]["id"], r2["id"]);
    let moved = cli.ok_json(&[
        "filter",
        "move",
        &id,
        &r1["id"].to_string(),
        "--to",
        "1",
        "--json",
    ]);
    assert_eq!(moved[0]["id"], r1["id"]);
    cli.ok_json(&[
        "filter",
        "move",
        &id,
        &r2["id"].to_string(),
        "--to",
        "1",
        "--json",
    ]);
    assert_eq!(rules[1]["expression"], "jobTitle equals Driver");
    assert!(
        cli.run(&["filter", "remove", &id, &r2["id"].to_string()])
            .status
            .success()
    );
    assert_eq!(
        cli.ok_json(&["filter", "list", &id, "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let _ = r1;

    // Preview shows every option's effect: imported domains, who placed whom, skip reasons.
    let preview = cli.ok_json(&["preview", &id, "--json"]);
    assert_eq!(
        preview["import_domains"].as_array().unwrap().len(),
        info.mail_domains.len() - 1
    );
    assert!(
        preview["add"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["placed_by"].is_string())
    );
    let codes: Vec<&str> = preview["skip"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["code"].as_str())
        .collect();
    assert!(codes.contains(&"guest"), "{codes:?}");

    let sync = cli.ok_json(&["sync", &id, "--json"]);
    assert_eq!(sync["status"], "succeeded");
    let domain = cli.ok_json(&["domain", "show", &info.mail_domains[1], "--json"]);
    assert_eq!(domain["origin"], "source");
    assert_eq!(domain["reject_unlisted"], true);
    assert_eq!(domain["protect_listed_only"], true);
    let groups = cli.ok_json(&["groups", "list", "--customer", "Contoso", "--json"]);
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, ["Drivers", "Main"]);
    assert!(!groups[1]["members"].as_array().unwrap().is_empty());
    sim.shutdown().await;
}

/// Retention, restore and the audit log from the command line: who did what, as a script
/// reads it.
async fn removed_users_restore_and_the_audit_log(database: String) {
    let sim = Simulator::start(SimConfig {
        users: 20,
        seed: 9,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let info = sim.info().clone();
    let cli = Cli::connected_to(&database, &info).with_env("USER", "carol");
    let id = connect(&cli, &info);
    let customer = cli.ok_json(&["customer", "set", "contoso", "retention=14d", "--json"]);
    assert_eq!(customer["retention_days"], 14);
    let error = cli.fails(&["customer", "set", "Contoso", "retention=never"]);
    assert!(
        error.contains("retention") && error.contains("30d"),
        "{error}"
    );
    let error = cli.fails(&["customer", "set", "Nobody", "retention=7d"]);
    assert!(
        error.contains("customer 'Nobody' does not exist")
            && error.contains("usersync customer list"),
        "{error}"
    );

    let preview = cli.ok_json(&["preview", &id, "--json"]);
    let to_add = preview["counts"]["add"].as_u64().unwrap();
    assert_eq!(to_add as usize, preview["add"].as_array().unwrap().len());
    assert!(preview["held"].as_array().unwrap().is_empty());
    let sync = cli.ok_json(&["sync", &id, "--json"]);
    assert_eq!(sync["added"].as_u64().unwrap(), to_add);

    // One user leaves the tenant: removed, then restored by hand.
    let gone = sim
        .tenant()
        .users()
        .into_iter()
        .find(|u| {
            u.mail
                .as_deref()
                .is_some_and(|m| preview["add"].to_string().contains(&m.to_lowercase()))
        })
        .unwrap();
    let address = gone.mail.clone().unwrap().to_lowercase();
    sim.tenant().delete_user(&gone.id).unwrap();
    let sync = cli.ok_json(&["sync", &id, "--json"]);
    assert_eq!(sync["removed"], 1);
    let restored = cli.ok_json(&[
        "users",
        "restore",
        &address,
        "--customer",
        "Contoso",
        "--json",
    ]);
    assert_eq!(restored["status"], "active");
    assert!(restored["source_id"].is_null(), "kept by hand: {restored}");
    let error = cli.fails(&["users", "restore", &address, "--customer", "Contoso"]);
    assert!(error.contains("is not removed"), "{error}");
    let error = cli.fails(&["users", "add", &address, "--customer", "Contoso"]);
    assert!(error.contains("already an entry"), "{error}");

    // The log, newest first: the restore by carol, the sync's removal by its run.
    let log = cli.ok_json(&["audit", "--customer", "Contoso", "--json"]);
    let log = log.as_array().unwrap();
    assert_eq!(log[0]["action"], "user.restore");
    assert_eq!(log[0]["actor"], "carol");
    assert_eq!(log[0]["object"], address.as_str());
    assert!(log[0]["run_id"].is_null());
    assert_eq!(log[1]["action"], "user.remove");
    assert_eq!(log[1]["run_id"], sync["run_id"]);
    assert_eq!(log[1]["actor"], "carol", "the run was carol's");
    let adds = log.iter().filter(|e| e["action"] == "user.add").count();
    assert_eq!(
        adds as u64, to_add,
        "one entry per user the first sync added"
    );
    let first = log.last().unwrap();
    assert_eq!(
        (first["action"].as_str(), first["actor"].as_str()),
        (Some("customer.add"), Some("carol"))
    );
    let secret = log
        .iter()
        .find(|e| e["action"] == "source.add")
        .expect("the source's connection is in the log");
    assert!(
        !secret.to_string().contains(&info.client_secret),
        "the secret is never logged"
    );
    assert_eq!(
        cli.ok_json(&["audit", "--limit", "1", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let error = cli.fails(&["audit", "--since", "last tuesday"]);
    assert!(error.contains("since"), "{error}");
    let table = cli.run(&["audit", "--customer", "Contoso", "--limit", "2"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines().next().unwrap().contains("user.restore"),
        "{text}"
    );
    sim.shutdown().await;
}

on_both_backends!(
    removed_users_restore_and_the_audit_log,
    the_commands_scripts_use_work_end_to_end,
    bad_input_is_refused_with_the_field_and_the_fix,
    the_wizard_options_work_from_the_command_line,
);
