//! The listener: binds, builds the router, runs the accept loop (plain HTTP
//! or TLS, HTTP/1.1 and HTTP/2) and owns the [`Simulator`] handle.

use crate::auth::AuthState;
use crate::directory::{Directory, TenantHandle};
use crate::knobs::{Fault, Knobs, SimStats, Throttle};
use crate::{SimConfig, SimError, SimInfo};
use axum::Router;
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// State shared by all request handlers.
pub(crate) struct Shared {
    pub dir: Arc<RwLock<Directory>>,
    pub knobs: Knobs,
    pub auth: AuthState,
    /// `scheme://host:port` the server listens on.
    pub base_url: String,
    pub scheme: &'static str,
    /// Listening on 0.0.0.0/[::]: links then follow the request's Host.
    pub wildcard: bool,
    /// 0 = no cap.
    pub page_cap: AtomicUsize,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Shared {
    pub(crate) fn dir(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.dir.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Base URL for links in a response to a request with this Host header.
    pub(crate) fn base_for(&self, host: Option<&str>) -> String {
        match host {
            Some(h) if self.wildcard && !h.is_empty() => format!("{}://{h}", self.scheme),
            _ => self.base_url.clone(),
        }
    }

    pub(crate) fn page_cap(&self) -> Option<usize> {
        match self.page_cap.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }
}

/// A running simulator. Dropping it stops the server too; `shutdown` also
/// waits until it has stopped.
pub struct Simulator {
    shared: Arc<Shared>,
    info: crate::SimInfo,
    ca_pem: Option<String>,
    addr: std::net::SocketAddr,
    task: Option<JoinHandle<()>>,
    generated_in: Duration,
}

impl Simulator {
    /// Generates the tenant, binds `config.listen` and starts serving.
    pub async fn start(config: SimConfig) -> Result<Simulator, SimError> {
        crate::check_tenant_size(config.users)?;
        let t0 = Instant::now();
        let dir = Directory::new(config.users, config.seed);
        let generated_in = t0.elapsed();
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let wildcard = addr.ip().is_unspecified();
        let host = if wildcard {
            "127.0.0.1".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let scheme = if config.tls { "https" } else { "http" };
        let base_url = format!("{scheme}://{host}:{}", addr.port());
        let (acceptor, ca_pem) = if config.tls {
            let (acceptor, pem) = crate::tls::acceptor(addr.ip())?;
            if let Some(path) = &config.tls_cert_out {
                std::fs::write(path, &pem)?;
            }
            (Some(acceptor), Some(pem))
        } else {
            (None, None)
        };
        let bp = &dir.bp;
        let info = SimInfo {
            authority_url: base_url.clone(),
            graph_url: base_url.clone(),
            tenant_id: bp.tenant_id.clone(),
            client_id: bp.client_id.clone(),
            client_secret: bp.client_secret.clone(),
            domains: bp.domains.iter().map(|d| d.id.clone()).collect(),
            mail_domains: bp.mail_domains.clone(),
            initial_domain: bp.initial_domain.clone(),
        };
        let mut permissions: Vec<String> = config.permissions.clone().unwrap_or_else(|| {
            crate::DEFAULT_PERMISSIONS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        permissions.retain(|p| {
            !config
                .denied_permissions
                .iter()
                .any(|d| d.eq_ignore_ascii_case(p))
        });
        let shared = Arc::new(Shared {
            tenant_id: info.tenant_id.clone(),
            client_id: info.client_id.clone(),
            client_secret: info.client_secret.clone(),
            dir: Arc::new(RwLock::new(dir)),
            knobs: Knobs::new(config.throttle.clone(), config.latency),
            auth: AuthState::new(permissions, config.consented, config.token_lifetime),
            base_url,
            scheme,
            wildcard,
            page_cap: AtomicUsize::new(config.page_size_cap.unwrap_or(0)),
        });
        let router = router(shared.clone());
        let task = tokio::spawn(accept_loop(listener, acceptor, router));
        tracing::debug!(%addr, ?generated_in, "simulator listening");
        Ok(Simulator {
            shared,
            info,
            ca_pem,
            addr,
            task: Some(task),
            generated_in,
        })
    }

    pub fn info(&self) -> &SimInfo {
        &self.info
    }
    /// The address actually bound.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }
    /// How long generating the tenant took.
    pub fn generation_time(&self) -> Duration {
        self.generated_in
    }
    /// In-process access to the tenant (add/change/delete users and groups).
    pub fn tenant(&self) -> TenantHandle {
        TenantHandle {
            dir: self.shared.dir.clone(),
        }
    }
    pub fn stats(&self) -> SimStats {
        self.shared.knobs.stats()
    }
    pub fn reset_stats(&self) {
        self.shared.knobs.reset_stats()
    }
    /// PEM of the CA that signed the server certificate (TLS only); trust it
    /// in the client.
    pub fn ca_certificate_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }
    pub fn set_throttle(&self, t: Throttle) {
        self.shared.knobs.set_throttle(t)
    }
    pub fn inject_fault(&self, f: Fault) {
        self.shared.knobs.add_fault(f)
    }
    pub fn clear_faults(&self) {
        self.shared.knobs.clear_faults()
    }
    pub fn set_latency(&self, latency: Duration) {
        *self
            .shared
            .knobs
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = latency;
    }
    /// `None` removes the cap.
    pub fn set_page_size_cap(&self, cap: Option<usize>) {
        self.shared
            .page_cap
            .store(cap.unwrap_or(0), Ordering::Relaxed);
    }
    /// Replaces the set of removed permissions (relative to the configured grant).
    pub fn set_denied_permissions(&self, denied: &[&str]) {
        self.shared.auth.set_denied(denied)
    }
    /// Currently granted application permissions.
    pub fn permissions(&self) -> Vec<String> {
        self.shared.auth.granted()
    }
    pub fn set_consented(&self, consented: bool) {
        self.shared.auth.set_consented(consented)
    }
    /// Lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.auth.set_lifetime(lifetime)
    }
    /// Makes every token issued so far expired (401 "Lifetime validation
    /// failed"), to test renewal.
    pub fn expire_tokens(&self) {
        self.shared.auth.expire_all()
    }
    /// Stops the server and closes open connections.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    /// A dropped simulator stops listening (without waiting for it).
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            any(crate::auth::token_endpoint),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(crate::auth::openid_configuration),
        )
        .fallback(crate::graph::entry)
        .with_state(shared)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
) {
    // Connections live in the set so aborting this task closes them all.
    let mut conns = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        conns.spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                    Err(e) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection error: {e}");
            }
        });
    }
}
