//! The HTTP core: token cache, retries, throttling gate, in-flight bound,
//! paging and the typed list/delta calls.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use crate::config::{GraphConfig, RetryPolicy};
use crate::error::{self, GraphError, GraphErrorBody, url_without_query};
use crate::model::{
    Delta, DeltaEntry, DeltaItem, DirectoryObject, Domain, GROUP_PROPERTIES, Group, HasId,
    Organization, SubscribedSku, USER_PROPERTIES, User,
};

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

/// An access token. Its `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
struct AccessToken(Arc<str>);

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

struct CachedToken {
    token: AccessToken,
    refresh_at: Instant,
    expires_at: Instant,
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

/// A 2xx answer.
pub(crate) struct RawResponse {
    pub body: Bytes,
}

#[derive(Deserialize)]
struct Page<T> {
    value: Option<Vec<T>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
}

const GRAPH_RETRYABLE: [u16; 3] = [429, 503, 504];
const TOKEN_RETRYABLE: [u16; 5] = [429, 500, 502, 503, 504];
/// Refresh this long before expiry (or at 80% of a shorter lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

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

    // ----------------------------------------------------------------- typed calls

    /// All users: `GET /v1.0/users?$select=..&$top=999`, every page.
    /// An empty `select` means [`USER_PROPERTIES`].
    pub async fn list_users(
        &self,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Vec<User>, GraphError> {
        self.get_all(&users_path(select, ""), progress).await
    }

    /// All users with their manager's id inline (`$expand=manager($select=id)`, in
    /// [`User::manager`]): managers at no extra request per user.
    pub async fn list_users_with_manager(
        &self,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Vec<User>, GraphError> {
        self.get_all(
            &users_path(select, "&$expand=manager($select=id)"),
            progress,
        )
        .await
    }

    /// All groups: `GET /v1.0/groups?$select=..&$top=999`, every page.
    /// An empty `select` means [`GROUP_PROPERTIES`].
    pub async fn list_groups(
        &self,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Vec<Group>, GraphError> {
        let select = if select.is_empty() {
            GROUP_PROPERTIES
        } else {
            select
        };
        self.get_all(
            &format!("/groups?$select={}&$top=999", select.join(",")),
            progress,
        )
        .await
    }

    /// Direct (`members`) or nested (`transitiveMembers`) members of a group,
    /// `$select=id` (the `@odata.type` is always returned), every page.
    pub async fn group_members(
        &self,
        group_id: &str,
        transitive: bool,
    ) -> Result<Vec<DirectoryObject>, GraphError> {
        let rel = if transitive {
            "transitiveMembers"
        } else {
            "members"
        };
        self.get_all(
            &format!(
                "/groups/{}/{rel}?$select=id&$top=999",
                encode_path_segment(group_id)
            ),
            &|_| {},
        )
        .await
    }

    /// How many users the tenant has: `GET /v1.0/users/$count` with `ConsistencyLevel:
    /// eventual` (an advanced query). One cheap request; eventually consistent, so an
    /// estimate, e.g. for a progress bar.
    pub async fn count_users(&self) -> Result<u64, GraphError> {
        let url = self.v1_url("/users/$count")?;
        let resp = self
            .graph_request_with(Method::GET, &url, None, &[("ConsistencyLevel", "eventual")])
            .await?;
        std::str::from_utf8(&resp.body)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| GraphError::Malformed {
                url: url_without_query(&url),
                detail: "the answer to $count is not a number".into(),
            })
    }

    /// The tenant's domains: `GET /v1.0/domains`.
    pub async fn list_domains(&self) -> Result<Vec<Domain>, GraphError> {
        self.get_all("/domains", &|_| {}).await
    }

    /// The tenant itself: `GET /v1.0/organization`.
    pub async fn organization(&self) -> Result<Organization, GraphError> {
        let orgs: Vec<Organization> = self.get_all("/organization", &|_| {}).await?;
        orgs.into_iter()
            .next()
            .ok_or_else(|| GraphError::Malformed {
                url: format!("{}/organization", self.inner.v1),
                detail: "the answer lists no organization".into(),
            })
    }

    /// The licenses the tenant bought: `GET /v1.0/subscribedSkus`.
    pub async fn subscribed_skus(&self) -> Result<Vec<SubscribedSku>, GraphError> {
        self.get_all("/subscribedSkus", &|_| {}).await
    }

    /// A users delta round. Without `from`: a full round
    /// (`GET /v1.0/users/delta?$select=..`); with `from` (the `delta_link` of
    /// a previous round): the changes since. Reads every page.
    /// An empty `select` means [`USER_PROPERTIES`].
    /// Fails with [`GraphError::DeltaExpired`] when Graph no longer accepts `from`.
    pub async fn users_delta(
        &self,
        from: Option<&str>,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Delta<User>, GraphError> {
        let select = if select.is_empty() {
            USER_PROPERTIES
        } else {
            select
        };
        self.delta("users", from, select, progress).await
    }

    /// A groups delta round, like [`GraphClient::users_delta`]. Include
    /// `members` in `select` to receive `members@delta`. When Graph splits a
    /// group's member changes over several entries, they are merged into one
    /// [`DeltaItem::Changed`]. An empty `select` means [`GROUP_PROPERTIES`]
    /// plus `members`.
    pub async fn groups_delta(
        &self,
        from: Option<&str>,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Delta<Group>, GraphError> {
        let default: Vec<&str> = GROUP_PROPERTIES
            .iter()
            .copied()
            .chain(std::iter::once("members"))
            .collect();
        let select = if select.is_empty() {
            &default[..]
        } else {
            select
        };
        let delta = self
            .delta::<Group>("groups", from, select, progress)
            .await?;
        Ok(merge_group_delta(delta))
    }

    async fn delta<T: DeserializeOwned + HasId>(
        &self,
        collection: &str,
        from: Option<&str>,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Delta<T>, GraphError> {
        let start = match from {
            Some(link) => {
                let url = Url::parse(link).map_err(|e| GraphError::Config {
                    field: "delta_link",
                    problem: format!("is not an absolute URL: {e}"),
                })?;
                self.check_origin(&url, "the delta link")?;
                url
            }
            None => self.v1_url(&format!("/{collection}/delta?$select={}", select.join(",")))?,
        };
        let start_for_error = url_without_query(&start);
        let (entries, delta_link) = self.get_pages::<DeltaEntry<T>>(start, progress).await?;
        let delta_link = delta_link.ok_or_else(|| GraphError::Malformed {
            url: start_for_error,
            detail: "the last delta page has neither @odata.nextLink nor @odata.deltaLink".into(),
        })?;
        let items = entries
            .into_iter()
            .map(|e| match e.removed {
                Some(r) => DeltaItem::Removed {
                    id: e.item.object_id().to_owned(),
                    reason: r.reason,
                },
                None => DeltaItem::Changed(e.item),
            })
            .collect();
        Ok(Delta { items, delta_link })
    }

    /// Generic paging: `GET {graph}/v1.0{path_and_query}` and every
    /// `@odata.nextLink` after it; `progress(count so far)` after each page.
    /// `path_and_query` may also be an absolute URL on the Graph host.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        progress: Progress<'_>,
    ) -> Result<Vec<T>, GraphError> {
        let url = if path_and_query.starts_with("http://") || path_and_query.starts_with("https://")
        {
            let u = Url::parse(path_and_query).map_err(|e| GraphError::Config {
                field: "path_and_query",
                problem: format!("is not a valid URL: {e}"),
            })?;
            self.check_origin(&u, "the URL")?;
            u
        } else {
            self.v1_url(path_and_query)?
        };
        Ok(self.get_pages(url, progress).await?.0)
    }

    /// `GET {graph}/v1.0{path_and_query}` of a single object (no paging).
    pub async fn get_one<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<T, GraphError> {
        let url = self.v1_url(path_and_query)?;
        let resp = self.graph_request(Method::GET, &url, None).await?;
        parse_json(&url, &resp.body)
    }

    // ----------------------------------------------------------------- internals

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

    async fn get_pages<T: DeserializeOwned>(
        &self,
        start: Url,
        progress: Progress<'_>,
    ) -> Result<(Vec<T>, Option<String>), GraphError> {
        let mut url = start;
        let mut items: Vec<T> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        seen.insert(url.to_string());
        let mut pages = 0usize;
        loop {
            let resp = self.graph_request(Method::GET, &url, None).await?;
            let page: Page<T> = parse_json(&url, &resp.body)?;
            let value = page.value.ok_or_else(|| GraphError::Malformed {
                url: url_without_query(&url),
                detail: "the page has no \"value\" array".into(),
            })?;
            pages += 1;
            items.extend(value);
            progress(items.len());
            debug!(url = %url_without_query(&url), page = pages, items = items.len(), "page read");
            match page.next_link {
                Some(next) => {
                    let next_url = url.join(&next).map_err(|e| GraphError::Malformed {
                        url: url_without_query(&url),
                        detail: format!("@odata.nextLink is not a valid URL: {e}"),
                    })?;
                    self.check_origin(&next_url, "@odata.nextLink")?;
                    if !seen.insert(next_url.to_string()) {
                        return Err(GraphError::Malformed {
                            url: url_without_query(&url),
                            detail: "@odata.nextLink repeats an earlier page (paging loop)".into(),
                        });
                    }
                    url = next_url;
                }
                None => return Ok((items, page.delta_link)),
            }
        }
    }

    async fn wait_throttle_gate(&self) {
        loop {
            let until = *self
                .inner
                .throttled_until
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    fn extend_throttle_gate(&self, until: Instant) {
        let mut g = self
            .inner
            .throttled_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if g.is_none_or(|t| t < until) {
            *g = Some(until);
        }
    }

    /// Sends one Graph request with the in-flight bound, retries (429/503/504,
    /// transport errors) and one token refresh on 401. Returns only 2xx
    /// answers; everything else becomes a typed error.
    pub(crate) async fn graph_request(
        &self,
        method: Method,
        url: &Url,
        json_body: Option<&[u8]>,
    ) -> Result<RawResponse, GraphError> {
        self.graph_request_with(method, url, json_body, &[]).await
    }

    /// [`GraphClient::graph_request`] with extra request headers.
    pub(crate) async fn graph_request_with(
        &self,
        method: Method,
        url: &Url,
        json_body: Option<&[u8]>,
        extra_headers: &[(&'static str, &'static str)],
    ) -> Result<RawResponse, GraphError> {
        let stats = &self.inner.stats;
        let mut retries = Retries::new(&self.inner.config.retry, stats, url);
        let mut reauthenticated = false;
        loop {
            self.wait_throttle_gate().await;
            let token = self.access_token().await?;
            let started = std::time::Instant::now();
            let result = {
                let _permit = self
                    .inner
                    .semaphore
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                StatsCounters::add(&stats.requests, 1);
                debug!(method = %method, url = %url_without_query(url), attempt = retries.attempt(), "graph request");
                let mut rb = self
                    .inner
                    .http
                    .request(method.clone(), url.clone())
                    .bearer_auth(&*token.0)
                    .header(ACCEPT, "application/json");
                if let Some(b) = json_body {
                    rb = rb.header(CONTENT_TYPE, "application/json").body(b.to_vec());
                }
                for (name, value) in extra_headers {
                    rb = rb.header(*name, *value);
                }
                send_and_read(rb).await
            };
            let (status, headers, body) = match result {
                Ok(r) => r,
                Err(e) => {
                    retries.after_transport_error(e, "graph request").await?;
                    continue;
                }
            };
            debug!(method = %method, url = %url_without_query(url), status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "graph response");
            if status.is_success() {
                return Ok(RawResponse { body });
            }
            let code = status.as_u16();
            if code == 401 && !reauthenticated {
                warn!(url = %url_without_query(url), "access token rejected (401), acquiring a new one");
                self.invalidate_token(&token).await;
                reauthenticated = true;
                continue;
            }
            if GRAPH_RETRYABLE.contains(&code) {
                StatsCounters::add(&stats.throttled, 1);
                let (wait, told) = retries.wait_for(code, &headers)?;
                if code == 429 && told {
                    // Every request of this client waits as long: the tenant said so.
                    self.extend_throttle_gate(Instant::now() + wait);
                }
                retries.sleep(wait, code, "graph request").await;
                continue;
            }
            let request_id = headers
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let err_body = GraphErrorBody::parse(&body);
            return Err(error::http_error(url, code, &err_body, request_id));
        }
    }

    // ----------------------------------------------------------------- tokens

    async fn access_token(&self) -> Result<AccessToken, GraphError> {
        let mut guard = self.inner.token.lock().await;
        let now = Instant::now();
        if let Some(cached) = guard.as_ref()
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        match self.fetch_token().await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *guard = Some(fresh);
                Ok(token)
            }
            Err(e) => {
                // A failed early renewal: keep using the current token while it
                // is still valid, and try again a little later.
                if let Some(cached) = guard.as_mut() {
                    let now = Instant::now();
                    if now + Duration::from_secs(30) < cached.expires_at {
                        warn!(error = %e, "token renewal failed; using the current token until it expires");
                        cached.refresh_at = now + Duration::from_secs(30);
                        return Ok(cached.token.clone());
                    }
                }
                *guard = None;
                Err(e)
            }
        }
    }

    async fn invalidate_token(&self, rejected: &AccessToken) {
        let mut guard = self.inner.token.lock().await;
        if guard.as_ref().is_some_and(|c| &c.token == rejected) {
            *guard = None;
        }
    }

    async fn fetch_token(&self) -> Result<CachedToken, GraphError> {
        let cfg = &self.inner.config;
        let policy = &cfg.retry;
        let stats = &self.inner.stats;
        let url = &self.inner.token_url;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &cfg.client_id)
            .append_pair("client_secret", cfg.client_secret.expose_secret())
            .append_pair("scope", &self.inner.scope)
            .append_pair("grant_type", "client_credentials")
            .finish();
        let mut retries = Retries::new(policy, stats, url);
        loop {
            StatsCounters::add(&stats.token_requests, 1);
            debug!(url = %url_without_query(url), attempt = retries.attempt(), "token request");
            let requested_at = Instant::now();
            let rb = self
                .inner
                .http
                .post(url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(ACCEPT, "application/json")
                .body(form.clone());
            let (status, headers, body) = match send_and_read(rb).await {
                Ok(r) => r,
                Err(e) => {
                    retries.after_transport_error(e, "token request").await?;
                    continue;
                }
            };
            let code = status.as_u16();
            if status.is_success() {
                debug!(status = code, "token acquired");
                return parse_token(url, &body, requested_at);
            }
            if TOKEN_RETRYABLE.contains(&code) {
                if code == 429 {
                    StatsCounters::add(&stats.throttled, 1);
                }
                let (wait, _) = retries.wait_for(code, &headers)?;
                retries.sleep(wait, code, "token request").await;
                continue;
            }
            let err = error::token_error(
                &cfg.tenant_id,
                &cfg.client_id,
                &self.inner.scope,
                cfg.authority_url.as_str().trim_end_matches('/'),
                code,
                &body,
                cfg.client_secret.expose_secret(),
            );
            // The error goes back to the caller, which reports it; a warning would say it twice.
            debug!(error = %err, "token request refused");
            return Err(err);
        }
    }
}

fn parse_token(url: &Url, body: &[u8], requested_at: Instant) -> Result<CachedToken, GraphError> {
    let malformed = |detail: &str| GraphError::Malformed {
        url: url_without_query(url),
        detail: detail.to_owned(),
    };
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| malformed("the token answer is not valid JSON"))?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("the token answer has no access_token"))?;
    // v2.0 sends a number; the v1.0 endpoint (and some proxies) a string.
    let expires_in = match v.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .unwrap_or(300);
    let lifetime = Duration::from_secs(expires_in);
    let margin = if lifetime >= REFRESH_MARGIN * 5 {
        REFRESH_MARGIN
    } else {
        lifetime / 5
    };
    Ok(CachedToken {
        token: AccessToken(Arc::from(token)),
        refresh_at: requested_at + (lifetime - margin),
        expires_at: requested_at + lifetime,
    })
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

async fn send_and_read(
    rb: reqwest::RequestBuilder,
) -> Result<(StatusCode, HeaderMap, Bytes), reqwest::Error> {
    let resp = rb.send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?.to_vec();
    Ok((status, headers, body))
}

/// The retries of one request, to Graph or to the token endpoint, by the client's policy:
/// transport errors after a backoff (a refused connection only a few times), throttled
/// or unavailable answers after their Retry-After (capped) or a backoff; then the error.
struct Retries<'a> {
    policy: &'a RetryPolicy,
    stats: &'a StatsCounters,
    url: &'a Url,
    done: u32,
}

impl<'a> Retries<'a> {
    fn new(policy: &'a RetryPolicy, stats: &'a StatsCounters, url: &'a Url) -> Self {
        Retries {
            policy,
            stats,
            url,
            done: 0,
        }
    }

    /// The number of the attempt being made (1 for the first).
    fn attempt(&self) -> u32 {
        self.done + 1
    }

    /// After a transport error: waits and returns to try again, or the error when it will
    /// not heal or the retries are spent.
    async fn after_transport_error(
        &mut self,
        error: reqwest::Error,
        what: &str,
    ) -> Result<(), GraphError> {
        let error = error.without_url();
        if !is_retryable_transport(&error) || self.done >= transport_retries(&error, self.policy) {
            return Err(GraphError::Transport {
                url: url_without_query(self.url),
                attempts: self.attempt(),
                source: error,
            });
        }
        let wait = self.policy.backoff(self.done);
        warn!(url = %url_without_query(self.url), error = %error, wait_ms = wait.as_millis() as u64, retry = self.attempt(), "{what}: transport error, retrying");
        self.count_and_sleep(wait).await;
        Ok(())
    }

    /// After a throttled or unavailable answer: how long to wait (Retry-After, capped, or
    /// a backoff) and whether the server said so; the error once the retries are spent.
    fn wait_for(&self, status: u16, headers: &HeaderMap) -> Result<(Duration, bool), GraphError> {
        let retry_after = header_retry_after(headers);
        if self.done >= self.policy.max_retries {
            return Err(GraphError::Throttled {
                url: url_without_query(self.url),
                status,
                attempts: self.attempt(),
                retry_after,
            });
        }
        Ok(match retry_after {
            Some(d) => (d.min(self.policy.max_retry_after), true),
            None => (self.policy.backoff(self.done), false),
        })
    }

    /// Waits `wait` before the next attempt after a `status` answer.
    async fn sleep(&mut self, wait: Duration, status: u16, what: &str) {
        warn!(url = %url_without_query(self.url), status, wait_ms = wait.as_millis() as u64, retry = self.attempt(), "{what}: throttled or unavailable, retrying");
        self.count_and_sleep(wait).await;
    }

    async fn count_and_sleep(&mut self, wait: Duration) {
        StatsCounters::add(&self.stats.retries, 1);
        tokio::time::sleep(wait).await;
        self.done += 1;
    }
}

/// How many retries a transport error gets. A refused connection (nothing listens there)
/// rarely heals within a sync's patience, so it gets a few quick tries rather than the full
/// policy, which would keep an operator waiting for over a minute to learn the URL is wrong.
fn transport_retries(e: &reqwest::Error, policy: &RetryPolicy) -> u32 {
    if e.is_connect() && !e.is_timeout() {
        policy.max_retries.min(CONNECT_RETRIES)
    } else {
        policy.max_retries
    }
}

const CONNECT_RETRIES: u32 = 3;

fn is_retryable_transport(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() || e.is_status() {
        return false;
    }
    // A certificate problem will not go away by retrying.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.to_string().to_ascii_lowercase().contains("certificate") {
            return false;
        }
        source = s.source();
    }
    true
}

fn header_retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// `/users?$select=..[extra]&$top=999`; an empty `select` means [`USER_PROPERTIES`].
fn users_path(select: &[&str], extra: &str) -> String {
    let select = if select.is_empty() {
        USER_PROPERTIES
    } else {
        select
    };
    format!("/users?$select={}{extra}&$top=999", select.join(","))
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

/// Parses a `Retry-After` value: delay seconds (integer or decimal) or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() && f >= 0.0 {
            return Some(Duration::from_secs_f64(f.min(1e9)));
        }
        return None;
    }
    httpdate::parse_http_date(v)
        .ok()
        .map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
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

/// Merges repeated `Changed` entries of one group (Graph splits large
/// `members@delta` lists) into the first one.
fn merge_group_delta(delta: Delta<Group>) -> Delta<Group> {
    let mut items: Vec<DeltaItem<Group>> = Vec::with_capacity(delta.items.len());
    let mut open: HashMap<String, usize> = HashMap::new();
    for item in delta.items {
        match item {
            DeltaItem::Changed(g) => match open.get(&g.id) {
                Some(&i) => {
                    if let DeltaItem::Changed(prev) = &mut items[i] {
                        merge_group(prev, g);
                    }
                }
                None => {
                    open.insert(g.id.clone(), items.len());
                    items.push(DeltaItem::Changed(g));
                }
            },
            DeltaItem::Removed { id, reason } => {
                open.remove(&id);
                items.push(DeltaItem::Removed { id, reason });
            }
        }
    }
    Delta {
        items,
        delta_link: delta.delta_link,
    }
}

fn merge_group(into: &mut Group, more: Group) {
    fn take<T>(a: &mut Option<T>, b: Option<T>) {
        if b.is_some() {
            *a = b;
        }
    }
    take(&mut into.display_name, more.display_name);
    take(&mut into.mail, more.mail);
    take(&mut into.mail_enabled, more.mail_enabled);
    take(&mut into.security_enabled, more.security_enabled);
    take(&mut into.mail_nickname, more.mail_nickname);
    if !more.group_types.is_empty() {
        into.group_types = more.group_types;
    }
    if !more.proxy_addresses.is_empty() {
        into.proxy_addresses = more.proxy_addresses;
    }
    into.members_delta.extend(more.members_delta);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        let later = now + Duration::from_secs(10);
        let d = parse_retry_after(&httpdate::fmt_http_date(later), now).unwrap();
        assert!(
            d <= Duration::from_secs(10) && d >= Duration::from_secs(8),
            "{d:?}"
        );
        let earlier = now - Duration::from_secs(10);
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(earlier), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn encode_segment() {
        assert_eq!(encode_path_segment("abc-123"), "abc-123");
        assert_eq!(
            encode_path_segment("j.doe_x.com#EXT#@t.onmicrosoft.com"),
            "j.doe_x.com%23EXT%23@t.onmicrosoft.com"
        );
        assert_eq!(encode_path_segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn token_lifetime() {
        let u = Url::parse("http://127.0.0.1/t/oauth2/v2.0/token").unwrap();
        let now = Instant::now();
        let t = parse_token(&u, br#"{"access_token":"x","expires_in":3599}"#, now).unwrap();
        assert_eq!(t.refresh_at - now, Duration::from_secs(3299));
        let t = parse_token(&u, br#"{"access_token":"x","expires_in":"10"}"#, now).unwrap();
        assert_eq!(t.refresh_at - now, Duration::from_secs(8));
        assert!(parse_token(&u, br#"{"expires_in":10}"#, now).is_err());
        assert_eq!(format!("{:?}", t.token), "***");
    }

    #[test]
    fn group_merge() {
        let g = |id: &str, m: &str| Group {
            id: id.into(),
            members_delta: vec![crate::model::MemberDelta {
                id: m.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = merge_group_delta(Delta {
            items: vec![
                DeltaItem::Changed(g("a", "1")),
                DeltaItem::Changed(g("b", "2")),
                DeltaItem::Changed(g("a", "3")),
            ],
            delta_link: "x".into(),
        });
        assert_eq!(d.items.len(), 2);
        assert_eq!(d.items[0].changed().unwrap().members_delta.len(), 2);
    }
}
