//! `usersync lookup serve`, and the same lookups in `usersync serve` when it is given
//! `--lookup-listen`: the Postfix socketmap lookups of usersync-lookup as a service.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use usersync_engine::Engine;
use usersync_lookup::{LookupOptions, LookupService};

#[derive(Debug, clap::Args)]
pub struct LookupServeArgs {
    /// Where to listen; Postfix's maps name it: socketmap:inet:ADDR:MAP.
    #[arg(long, env = "USERSYNC_LOOKUP_LISTEN", default_value = usersync_lookup::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The separator of an address's extension (ann+news@ is ann@); empty for none.
    #[arg(long, env = "USERSYNC_LOOKUP_DELIMITER", default_value = "+")]
    delimiter: String,
}

/// The separator of an address's extension, from its option's text.
pub fn delimiter(text: &str) -> anyhow::Result<Option<char>> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (None, _) => Ok(None),
        (Some(c), None) if !c.is_alphanumeric() && c != '@' && !c.is_whitespace() => Ok(Some(c)),
        _ => anyhow::bail!(
            "--delimiter: '{text}' is not one separator character such as + or - (empty for none)"
        ),
    }
}

/// The running lookups: the listener's task and the loader's.
pub struct Running {
    pub server: JoinHandle<std::io::Result<()>>,
    pub loader: JoinHandle<()>,
}

/// Listens on `listen` and answers from the directory until `stopped`.
pub async fn start(
    engine: &Engine,
    listen: SocketAddr,
    delimiter: Option<char>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Running> {
    let service = LookupService::new(delimiter);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for lookups"))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "Answering Postfix socketmap lookups on {addr} (maps: {}):",
        usersync_lookup::MAPS.join(", ")
    );
    eprintln!("  relay_domains = socketmap:inet:{addr}:domains");
    eprintln!("  relay_recipient_maps = socketmap:inet:{addr}:recipients");
    eprintln!("  transport_maps = socketmap:inet:{addr}:transport");
    let loader = tokio::spawn(usersync_lookup::keep_loaded(
        engine.clone(),
        service.clone(),
        LookupOptions {
            delimiter,
            ..LookupOptions::default()
        },
        stopped.clone(),
    ));
    let server = tokio::spawn(usersync_lookup::serve(listener, service, stopped));
    Ok(Running { server, loader })
}

/// `usersync lookup serve`: the lookups alone, until Ctrl-C or SIGTERM.
pub async fn serve(engine: Engine, args: &LookupServeArgs) -> anyhow::Result<ExitCode> {
    let delimiter = delimiter(&args.delimiter)?;
    let (stop, stopped) = watch::channel(false);
    let running = start(&engine, args.listen, delimiter, stopped)
        .await
        .context("--listen")?;
    eprintln!("SIGTERM or Ctrl-C stops it.");
    crate::serve::signal().await;
    let _ = stop.send(true);
    let _ = running.server.await;
    let _ = running.loader.await;
    engine.close().await;
    Ok(ExitCode::SUCCESS)
}
