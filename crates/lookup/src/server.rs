//! The socketmap server: many requests per connection, answered from the tables in
//! memory; and the task that keeps the tables in step with the directory.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use usersync_engine::Engine;

use crate::netstring;
use crate::tables::{DomainEntry, LookupTables, Reply, microsoft365_route};

/// How the service answers.
#[derive(Debug, Clone)]
pub struct LookupOptions {
    /// The separator of an address's extension (`ann+news@`); `None`: none.
    pub delimiter: Option<char>,
    /// How often the directory is asked whether it changed.
    pub poll: Duration,
    /// A whole reload at least this often, whatever the sign said.
    pub reload_every: Duration,
}

impl Default for LookupOptions {
    fn default() -> Self {
        LookupOptions {
            delimiter: Some('+'),
            poll: Duration::from_millis(500),
            reload_every: Duration::from_secs(60),
        }
    }
}

/// The tables as last loaded; `None` until the first load (every answer is then TEMP, so
/// that mail waits instead of bouncing).
#[derive(Debug, Default)]
pub struct LookupService {
    tables: RwLock<Option<Arc<LookupTables>>>,
    delimiter: Option<char>,
}

impl LookupService {
    pub fn new(delimiter: Option<char>) -> Arc<LookupService> {
        Arc::new(LookupService {
            tables: RwLock::new(None),
            delimiter,
        })
    }

    /// The tables now answering, once loaded.
    pub fn tables(&self) -> Option<Arc<LookupTables>> {
        self.tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Answers from `tables` from now on.
    pub fn replace(&self, tables: LookupTables) {
        *self
            .tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(tables));
    }

    /// The answer to one request.
    pub fn answer(&self, request: &[u8]) -> Reply {
        let Ok(request) = std::str::from_utf8(request) else {
            return Reply::Perm("the request is not UTF-8".into());
        };
        match self.tables() {
            Some(tables) => tables.answer(request, self.delimiter),
            None => Reply::Temp("the directory is not loaded yet".into()),
        }
    }
}

/// The directory made into tables.
pub async fn load(engine: &Engine) -> Result<LookupTables, usersync_engine::EngineError> {
    let data = engine.lookup_data().await?;
    let domains = data.domains.into_iter().map(|d| DomainEntry {
        route: d
            .route
            .or_else(|| d.microsoft365.then(|| microsoft365_route(&d.name))),
        name: d.name,
        reject_unlisted: d.reject_unlisted,
    });
    Ok(LookupTables::new(domains, data.addresses))
}

/// Keeps `service`'s tables in step with the directory until `stop`: loads them, then
/// reloads them when the directory's version moves (and at least every `reload_every`).
/// A failed load keeps the tables there are (the last good copy).
pub async fn keep_loaded(
    engine: Engine,
    service: Arc<LookupService>,
    options: LookupOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut loaded: Option<(i64, Instant)> = None;
    loop {
        let version = engine.directory_version().await;
        let due = match (&loaded, &version) {
            (None, _) => true,
            (Some((v, at)), Ok(now)) => now != v || at.elapsed() >= options.reload_every,
            (Some(_), Err(_)) => false,
        };
        if let Err(e) = &version {
            tracing::warn!(error = %usersync_engine::error_text(e), "the directory is not readable; answering from the last copy");
        }
        if due && let Ok(version) = version {
            let started = Instant::now();
            match load(&engine).await {
                Ok(tables) => {
                    let (addresses, domains) = tables.len();
                    service.replace(tables);
                    tracing::info!(
                        addresses,
                        domains,
                        ms = started.elapsed().as_millis() as u64,
                        "lookup tables loaded"
                    );
                    loaded = Some((version, Instant::now()));
                }
                Err(e) => tracing::warn!(
                    error = %usersync_engine::error_text(&e),
                    "the lookup tables could not be loaded; answering from the last copy"
                ),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(options.poll) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Answers socketmap requests on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    service: Arc<LookupService>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let service = service.clone();
                connections.spawn(async move {
                    if let Err(e) = connection(stream, &service).await {
                        tracing::debug!(%peer, error = %e, "lookup connection ended");
                    }
                });
            }
            _ = stop.changed() => {
                if *stop.borrow() {
                    connections.abort_all();
                    return Ok(());
                }
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// One client: netstrings in, netstrings out, in order, until it hangs up.
async fn connection(mut stream: TcpStream, service: &LookupService) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..read]);
        let mut taken = 0;
        loop {
            match netstring::decode(&buf[taken..]) {
                Ok(Some((request, used))) => {
                    out.extend_from_slice(&netstring::encode(&service.answer(request).to_wire()));
                    taken += used;
                }
                Ok(None) => break,
                Err(e) => {
                    // Not socketmap: nothing more can be read in step.
                    out.extend_from_slice(&netstring::encode(&format!("PERM {e}")));
                    stream.write_all(&out).await?;
                    return Ok(());
                }
            }
        }
        buf.drain(..taken);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}
