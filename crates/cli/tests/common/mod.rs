//! Shared set-up of the CLI tests: the `usersync` binary, run as a user would, against a
//! fresh database and (where needed) the simulated tenant.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The key every test command uses, unless a test is about keys.
pub const TEST_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[derive(Clone)]
pub struct Cli {
    pub database: String,
    pub env: Vec<(String, String)>,
    /// Environment variables removed from the command's environment.
    pub unset: Vec<String>,
    pub dir: Option<std::path::PathBuf>,
}

impl Cli {
    /// A command line on `database` with the test key and nothing else.
    pub fn new(database: &str) -> Cli {
        Cli {
            database: database.to_string(),
            env: vec![("USERSYNC_SECRET_KEY".into(), TEST_KEY.into())],
            unset: vec![],
            dir: None,
        }
    }

    /// A command line whose environment names the simulated tenant's app registration.
    pub fn connected_to(database: &str, info: &usersync_sim::SimInfo) -> Cli {
        let mut cli = Cli::new(database);
        for (k, v) in [
            ("USERSYNC_M365_CLIENT_ID", &info.client_id),
            ("USERSYNC_M365_CLIENT_SECRET", &info.client_secret),
            ("USERSYNC_M365_AUTHORITY_URL", &info.authority_url),
            ("USERSYNC_M365_GRAPH_URL", &info.graph_url),
        ] {
            cli.env.push((k.to_string(), v.to_string()));
        }
        cli
    }

    /// Sets (or replaces) an environment variable of the commands.
    pub fn with_env(mut self, key: &str, value: &str) -> Cli {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Removes an environment variable from the commands.
    pub fn without_env(mut self, key: &str) -> Cli {
        self.env.retain(|(k, _)| k != key);
        self.unset.push(key.to_string());
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_usersync"));
        cmd.arg("--database").arg(&self.database).args(args);
        for k in [
            "USERSYNC_DATABASE_URL",
            "USERSYNC_SECRET_KEY",
            "USERSYNC_SECRET_KEY_FILE",
            "USERSYNC_LOG",
            "NO_COLOR",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.unset {
            cmd.env_remove(k);
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run usersync")
    }

    /// Runs with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run usersync");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn ok_json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "usersync {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "usersync {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "usersync {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs a command in a terminal of `columns` columns (through `script`), as a person
    /// at a terminal would; returns what the terminal showed.
    pub fn on_terminal(&self, args: &[&str], columns: usize) -> String {
        let mut line = format!(
            "{} --database '{}'",
            env!("CARGO_BIN_EXE_usersync"),
            self.database
        );
        for a in args {
            line.push_str(&format!(" '{a}'"));
        }
        let mut cmd = Command::new("script");
        cmd.args([
            "-qefc",
            &format!("stty cols {columns} rows 50; {line}"),
            "/dev/null",
        ]);
        for k in [
            "USERSYNC_DATABASE_URL",
            "USERSYNC_LOG",
            "NO_COLOR",
            "COLUMNS",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.stdin(Stdio::null()).output().expect("run script");
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
    }
}

/// A sim's app-registration environment for the `usersync` command.
pub fn sim_env(info: &usersync_sim::SimInfo) -> Vec<(String, String)> {
    Cli::connected_to("", info).env
}

/// A tenant set up from the command line: customer "Contoso" with the tenant's mail
/// domains and the tenant connected; returns the source id.
pub fn connect(cli: &Cli, info: &usersync_sim::SimInfo) -> String {
    cli.ok_json(&["customer", "add", "Contoso", "--json"]);
    for domain in &info.mail_domains {
        cli.ok_json(&["domain", "add", domain, "--customer", "Contoso", "--json"]);
    }
    add_source(cli, &info.tenant_id)
}

/// `usersync source add office365 --customer Contoso --tenant TENANT`; the new source's id.
pub fn add_source(cli: &Cli, tenant: &str) -> String {
    cli.ok_json(&[
        "source",
        "add",
        "office365",
        "--customer",
        "Contoso",
        "--tenant",
        tenant,
        "--json",
    ])["id"]
        .to_string()
}

/// Runs each named test (an async function of a database URL) on SQLite and on
/// PostgreSQL, then drops its database. A multi-thread runtime: the simulator serves
/// requests while the test blocks on the command. The PostgreSQL one skips, saying so,
/// when no server answers (see `usersync_store::testing::fresh_postgres_url`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let url = usersync_store::testing::fresh_sqlite_url();
                super::$name(url.clone()).await;
                usersync_store::testing::discard(&url).await;
            }
        )+ }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(url) = usersync_store::testing::fresh_postgres_url() else { return };
                super::$name(url.clone()).await;
                usersync_store::testing::discard(&url).await;
            }
        )+ }
    };
}
