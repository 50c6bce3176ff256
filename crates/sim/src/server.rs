//! The listener: binds, builds the router, runs the accept loop (plain HTTP
//! or TLS, HTTP/1.1 and HTTP/2) and owns the [`Simulator`] handle.

use crate::auth::{AuthState, Grant};
use crate::directory::TenantHandle;
use crate::generate::Blueprint;
use crate::knobs::{Fault, Knobs, SimStats, Throttle};
use crate::tenant::Tenant;
use crate::{SimConfig, SimError, SimInfo};
use axum::Router;
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// State shared by all request handlers.
pub(crate) struct Shared {
    pub tenants: Vec<Arc<Tenant>>,
    /// Tenant index by lower-cased tenant id and verified domain name, the
    /// names the token endpoint accepts in its path.
    names: HashMap<String, usize>,
    pub knobs: Knobs,
    pub auth: AuthState,
    /// `scheme://host:port` the server listens on.
    pub base_url: String,
    pub scheme: &'static str,
    /// Listening on 0.0.0.0/[::]: links then follow the request's Host.
    pub wildcard: bool,
    /// 0 = no cap.
    pub page_cap: AtomicUsize,
    /// Wakes the change-notification sender.
    pub notifier: tokio::sync::Notify,
    /// The app registration's redirect URIs; empty: any http(s) URI is taken.
    pub redirect_uris: std::sync::RwLock<Vec<String>>,
}

impl Shared {
    /// Lets the notification sender look for changes now.
    pub(crate) fn notifier_wake(&self) {
        self.notifier.notify_one();
    }

    /// The tenant a token endpoint path names, by id or verified domain.
    pub(crate) fn tenant_named(&self, name: &str) -> Option<&Tenant> {
        let index = *self.names.get(&name.to_ascii_lowercase())?;
        Some(&self.tenants[index])
    }

    /// A handle on the tenant of that id or verified domain.
    pub(crate) fn tenant_handle(&self, name: &str) -> Option<TenantHandle> {
        let index = *self.names.get(&name.to_ascii_lowercase())?;
        Some(TenantHandle {
            tenant: self.tenants[index].clone(),
        })
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
    /// One per tenant, in tenant order.
    infos: Vec<SimInfo>,
    ca_pem: Option<String>,
    addr: std::net::SocketAddr,
    task: Option<JoinHandle<()>>,
    /// Sends change notifications to subscribers.
    notifier: JoinHandle<()>,
    generated_in: Duration,
}

impl Simulator {
    /// Generates the first tenant, binds `config.listen` and starts serving.
    /// Further tenants (`config.tenants`) are generated on first use.
    pub async fn start(config: SimConfig) -> Result<Simulator, SimError> {
        crate::check_tenant_size(config.users, config.tenants)?;
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
        let tenants: Vec<Arc<Tenant>> = (0..config.tenants)
            .map(|index| {
                let bp = Blueprint::for_tenant(config.users as u64, config.seed, index);
                let grant = Grant::new(permissions.clone(), config.consented);
                Arc::new(Tenant::new(index, bp, grant))
            })
            .collect();
        let mut names = HashMap::new();
        for t in &tenants {
            names.insert(t.bp.tenant_id.to_ascii_lowercase(), t.index);
            for d in t.bp.domains.iter().filter(|d| d.is_verified) {
                names.insert(d.id.to_ascii_lowercase(), t.index);
            }
        }
        // The first tenant is generated now, as the single tenant always
        // was: `generation_time` measures it and no first request waits.
        let t0 = Instant::now();
        tenants[0].directory();
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
        let infos = tenants.iter().map(|t| t.info(&base_url)).collect();
        let shared = Arc::new(Shared {
            tenants,
            names,
            knobs: Knobs::new(config.throttle.clone(), config.latency),
            auth: AuthState::new(config.token_lifetime),
            base_url,
            scheme,
            wildcard,
            page_cap: AtomicUsize::new(config.page_size_cap.unwrap_or(0)),
            notifier: tokio::sync::Notify::new(),
            redirect_uris: std::sync::RwLock::new(Vec::new()),
        });
        let notifier = tokio::spawn(crate::subscriptions::notifier(shared.clone()));
        let router = router(shared.clone());
        let task = tokio::spawn(accept_loop(listener, acceptor, router));
        tracing::debug!(%addr, tenants = config.tenants, ?generated_in, "simulator listening");
        Ok(Simulator {
            shared,
            infos,
            ca_pem,
            addr,
            task: Some(task),
            notifier,
            generated_in,
        })
    }

    /// How to connect to the first tenant.
    pub fn info(&self) -> &SimInfo {
        &self.infos[0]
    }
    /// How to connect to each tenant, in order (`config.tenants` entries; the
    /// first is [`Simulator::info`]).
    pub fn tenants(&self) -> &[SimInfo] {
        &self.infos
    }
    /// The address actually bound.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }
    /// How long generating the first tenant took.
    pub fn generation_time(&self) -> Duration {
        self.generated_in
    }
    /// In-process access to the first tenant (add/change/delete users and groups).
    pub fn tenant(&self) -> TenantHandle {
        TenantHandle {
            tenant: self.shared.tenants[0].clone(),
        }
    }
    /// In-process access to tenant `index` (0-based, as in [`Simulator::tenants`]);
    /// `None` past the last tenant.
    pub fn tenant_at(&self, index: usize) -> Option<TenantHandle> {
        let tenant = self.shared.tenants.get(index)?.clone();
        Some(TenantHandle { tenant })
    }
    /// How many tenants have had their directory generated so far: the first
    /// at start, each other one on its first Graph request or in-process read.
    pub fn generated_tenants(&self) -> usize {
        self.shared
            .tenants
            .iter()
            .filter(|t| t.is_generated())
            .count()
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
    /// Replaces the set of removed permissions (relative to the configured
    /// grant) in every tenant; [`TenantHandle::set_denied_permissions`] does
    /// it for one.
    pub fn set_denied_permissions(&self, denied: &[&str]) {
        for t in &self.shared.tenants {
            t.grant.set_denied(denied)
        }
    }
    /// Currently granted application permissions in the first tenant.
    pub fn permissions(&self) -> Vec<String> {
        self.shared.tenants[0].grant.granted()
    }
    /// Consent in every tenant; [`TenantHandle::set_consented`] sets it for one.
    pub fn set_consented(&self, consented: bool) {
        for t in &self.shared.tenants {
            t.grant.set_consented(consented)
        }
    }
    /// Lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.auth.set_lifetime(lifetime)
    }
    /// Registers the app's redirect URIs, as an app registration lists them: the consent
    /// and sign-in pages then refuse any other (AADSTS50011). Until this is called any
    /// http(s) URI is taken, for a simulator started before its console.
    pub fn set_redirect_uris(&self, uris: &[String]) {
        *self
            .shared
            .redirect_uris
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = uris.to_vec();
    }
    /// Revokes every refresh token handed out to delegated clients (an administrator's
    /// password reset): they must sign in again (AADSTS50173).
    pub fn revoke_refresh_tokens(&self) {
        self.shared.auth.revoke_refresh_tokens()
    }
    /// Every refresh token handed out so far, to look for one where it must not be.
    pub fn refresh_tokens_issued(&self) -> Vec<String> {
        self.shared.auth.refresh_tokens()
    }
    /// Makes every token issued so far expired (401 "Lifetime validation
    /// failed"), to test renewal.
    pub fn expire_tokens(&self) {
        self.shared.auth.expire_all()
    }
    /// Stops the server and closes open connections.
    /// Sends a lifecycle notification (`reauthorizationRequired`, `subscriptionRemoved`
    /// or `missed`) for a subscription of any tenant, as Graph does; `subscriptionRemoved`
    /// also deletes it.
    pub async fn lifecycle_event(
        &self,
        subscription_id: &str,
        event: &str,
    ) -> Result<(), SimError> {
        for tenant in &self.shared.tenants {
            if tenant
                .subscriptions()
                .iter()
                .any(|s| s.id == subscription_id)
            {
                return crate::subscriptions::lifecycle(tenant, subscription_id, event)
                    .await
                    .map_err(SimError::Invalid);
            }
        }
        Err(SimError::Invalid(format!(
            "no subscription {subscription_id}"
        )))
    }

    /// The ids of every subscription of every tenant, with their resource (`users`,
    /// `groups`) and expiry (RFC 3339).
    pub fn subscriptions(&self) -> Vec<(String, String, String)> {
        self.shared
            .tenants
            .iter()
            .flat_map(|t| {
                t.subscriptions()
                    .iter()
                    .map(|s| {
                        (
                            s.id.clone(),
                            s.resource.clone(),
                            s.expires
                                .format(&time::format_description::well_known::Rfc3339)
                                .unwrap_or_default(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub async fn shutdown(mut self) {
        self.notifier.abort();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    /// A dropped simulator stops listening (without waiting for it).
    fn drop(&mut self) {
        self.notifier.abort();
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
        .route(
            "/{tenant}/v2.0/adminconsent",
            get(crate::consent::admin_consent),
        )
        .route(
            "/{tenant}/v2.0/adminconsent/decide",
            axum::routing::post(crate::consent::decide),
        )
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(crate::consent::authorize),
        )
        .route(
            "/{tenant}/oauth2/v2.0/authorize/decide",
            axum::routing::post(crate::consent::decide),
        )
        .route("/_sim/changes", axum::routing::post(sim_changes))
        .fallback(crate::graph::entry)
        .with_state(shared)
}

/// `POST /_sim/changes` `{"tenant_id", "percent", "seed"}`: random changes of the tenant
/// (a test facility of the simulator, which listens on loopback unless told otherwise);
/// answers with the counts by kind.
async fn sim_changes(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let answer = |status: axum::http::StatusCode, value: serde_json::Value| {
        (status, axum::Json(value)).into_response()
    };
    let request: crate::ChangeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                axum::http::StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("expected {{\"tenant_id\", \"percent\", \"seed\"}}: {e}")}),
            );
        }
    };
    let Some(tenant) = shared.tenant_handle(&request.tenant_id) else {
        return answer(
            axum::http::StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no tenant {}", request.tenant_id)}),
        );
    };
    let result = tokio::task::spawn_blocking(move || {
        crate::random_changes(&tenant, request.percent, request.seed)
    })
    .await;
    match result {
        Ok(Ok(counts)) => answer(
            axum::http::StatusCode::OK,
            serde_json::json!({"tenant_id": request.tenant_id, "changes": counts.total(), "counts": counts}),
        ),
        Ok(Err(e)) => answer(
            axum::http::StatusCode::BAD_REQUEST,
            serde_json::json!({"error": e.to_string()}),
        ),
        Err(e) => answer(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": e.to_string()}),
        ),
    }
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
