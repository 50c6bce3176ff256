//! The HTTP core of the Graph client: the client itself, its configuration and
//! statistics; tokens (`token.rs`), requests with retries and the throttling gate
//! (`transport.rs`), paging (`paging.rs`), the typed list calls (`resources.rs`) and delta
//! rounds (`delta.rs`).

mod delta;
mod paging;
mod resources;
mod subscriptions;
mod token;
mod transport;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use url::Url;

use crate::config::GraphConfig;
use crate::error::{GraphError, url_without_query};

pub use subscriptions::{NewSubscription, Subscription};
pub use transport::parse_retry_after;

use token::CachedToken;

type Bytes = Vec<u8>;

/// `progress` callback type: called with the number of items read so far.
pub type Progress<'a> = &'a (dyn Fn(usize) + Send + Sync);

/// Counters of what a client did (since it was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent to Graph (each `$batch` POST counts once).
    pub requests: u64,
    /// HTTP requests sent to the token endpoint.
    pub token_requests: u64,
    /// Sub-requests carried inside `$batch` POSTs (retried ones count again).
    pub batch_sub_requests: u64,
    /// Retries (of requests and of `$batch` sub-requests), excluding the one
    /// re-try after a 401 with a fresh token.
    pub retries: u64,
    /// 429, 503 and 504 answers received (including `$batch` sub-responses).
    pub throttled: u64,
}

#[derive(Default)]
pub(crate) struct StatsCounters {
    pub requests: AtomicU64,
    pub token_requests: AtomicU64,
    pub batch_sub_requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
}

impl StatsCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A Microsoft Graph v1.0 client for one tenant. Cheap to clone; clones share
/// the token, the in-flight bound and the statistics.
#[derive(Clone)]
pub struct GraphClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: GraphConfig,
    http: reqwest::Client,
    token_url: Url,
    scope: String,
    pub v1: String,
    graph_origin: url::Origin,
    semaphore: Semaphore,
    token: Mutex<Option<CachedToken>>,
    pub stats: StatsCounters,
    throttled_until: std::sync::Mutex<Option<Instant>>,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.inner.config;
        f.debug_struct("GraphClient")
            .field("tenant_id", &c.tenant_id)
            .field("client_id", &c.client_id)
            .field("authority_url", &c.authority_url.as_str())
            .field("graph_url", &c.graph_url.as_str())
            .field("max_in_flight", &c.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// Validates the configuration and builds the client (no request is sent).
    pub fn new(config: GraphConfig) -> Result<Self, GraphError> {
        config.validate()?;
        let token_url = config.token_url()?;
        let v1 = config.graph_v1_base();
        let v1_url = Url::parse(&v1).map_err(|e| GraphError::Config {
            field: "graph_url",
            problem: format!("cannot build the Graph v1.0 URL: {e}"),
        })?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(15)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("usersync-graph/", env!("CARGO_PKG_VERSION")));
        for pem in &config.extra_root_certificates_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| GraphError::Config {
                    field: "extra_root_certificates_pem",
                    problem: format!("is not a valid PEM certificate bundle: {e}"),
                })?;
            if certs.is_empty() {
                return Err(GraphError::Config {
                    field: "extra_root_certificates_pem",
                    problem: "contains an entry without any PEM certificate".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| GraphError::Config {
            field: "extra_root_certificates_pem",
            problem: format!("cannot build the HTTP client: {e}"),
        })?;
        let scope = config.scope();
        let semaphore = Semaphore::new(config.max_in_flight);
        Ok(GraphClient {
            inner: Arc::new(Inner {
                http,
                token_url,
                scope,
                graph_origin: v1_url.origin(),
                v1,
                semaphore,
                token: Mutex::new(None),
                stats: StatsCounters::default(),
                throttled_until: std::sync::Mutex::new(None),
                config,
            }),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &GraphConfig {
        &self.inner.config
    }

    /// What the client did so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        ClientStats {
            requests: s.requests.load(Ordering::Relaxed),
            token_requests: s.token_requests.load(Ordering::Relaxed),
            batch_sub_requests: s.batch_sub_requests.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            throttled: s.throttled.load(Ordering::Relaxed),
        }
    }

    /// Acquires a token now (or reuses the cached one), e.g. to check the
    /// credentials before a long run.
    pub async fn check_credentials(&self) -> Result<(), GraphError> {
        self.access_token().await.map(|_| ())
    }

    pub(crate) fn v1_url(&self, path_and_query: &str) -> Result<Url, GraphError> {
        let sep = if path_and_query.starts_with('/') {
            ""
        } else {
            "/"
        };
        let s = format!("{}{sep}{path_and_query}", self.inner.v1);
        Url::parse(&s).map_err(|e| GraphError::Config {
            field: "path_and_query",
            problem: format!("cannot build a Graph URL from {path_and_query:?}: {e}"),
        })
    }

    fn check_origin(&self, url: &Url, what: &str) -> Result<(), GraphError> {
        if url.origin() == self.inner.graph_origin
            || same_loopback_server(url, &self.inner.config.graph_url)
        {
            Ok(())
        } else {
            Err(GraphError::Malformed {
                url: url_without_query(url),
                detail: format!(
                    "{what} points outside the configured Graph URL {}; refusing to send the access token there",
                    self.inner.config.graph_url
                ),
            })
        }
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(url: &Url, body: &[u8]) -> Result<T, GraphError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "unexpected JSON content",
            _ => "invalid JSON",
        };
        GraphError::Malformed {
            url: url_without_query(url),
            detail: format!("{what}: {e}"),
        }
    })
}

/// Whether two URLs name the same local server under different loopback names
/// (`localhost`, `127.0.0.1`, `[::1]`): a stand-in may write either in its links, and the
/// token stays on this machine.
fn same_loopback_server(a: &Url, b: &Url) -> bool {
    let loopback = |u: &Url| match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    loopback(a)
        && loopback(b)
        && a.scheme() == b.scheme()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Percent-encodes one URL path segment (object ids, UPNs such as `a#EXT#@b`).
pub(crate) fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_segment() {
        assert_eq!(encode_path_segment("abc-123"), "abc-123");
        assert_eq!(
            encode_path_segment("j.doe_x.com#EXT#@t.onmicrosoft.com"),
            "j.doe_x.com%23EXT%23@t.onmicrosoft.com"
        );
        assert_eq!(encode_path_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
