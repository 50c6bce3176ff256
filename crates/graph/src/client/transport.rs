//! Requests: the in-flight bound, the throttling gate, retries of transport errors and of
//! throttled or unavailable answers (one path for Graph and the token endpoint), one
//! token renewal on 401, and typed errors for the rest.

use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::{Bytes, GraphClient, StatsCounters};
use crate::config::RetryPolicy;
use crate::error::{self, GraphError, GraphErrorBody, url_without_query};

/// A 2xx answer.
pub(crate) struct RawResponse {
    pub body: Bytes,
}

const GRAPH_RETRYABLE: [u16; 3] = [429, 503, 504];

impl GraphClient {
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
}

pub(super) async fn send_and_read(
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
pub(super) struct Retries<'a> {
    policy: &'a RetryPolicy,
    stats: &'a StatsCounters,
    url: &'a Url,
    done: u32,
}

impl<'a> Retries<'a> {
    pub(super) fn new(policy: &'a RetryPolicy, stats: &'a StatsCounters, url: &'a Url) -> Self {
        Retries {
            policy,
            stats,
            url,
            done: 0,
        }
    }

    /// The number of the attempt being made (1 for the first).
    pub(super) fn attempt(&self) -> u32 {
        self.done + 1
    }

    /// After a transport error: waits and returns to try again, or the error when it will
    /// not heal or the retries are spent.
    pub(super) async fn after_transport_error(
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
    pub(super) fn wait_for(
        &self,
        status: u16,
        headers: &HeaderMap,
    ) -> Result<(Duration, bool), GraphError> {
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
    pub(super) async fn sleep(&mut self, wait: Duration, status: u16, what: &str) {
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
}
