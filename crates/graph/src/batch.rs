//! JSON `$batch`: groups of 20 GET sub-requests, throttled sub-requests
//! retried on their own, and the per-user lookups built on it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::task::JoinSet;
use tracing::{debug, warn};
use url::Url;

use crate::client::{
    GraphClient, Progress, StatsCounters, encode_path_segment, parse_json, parse_retry_after,
};
use crate::error::{self, GraphError, GraphErrorBody, url_without_query};

/// Graph's limit of sub-requests per `$batch`.
pub const BATCH_SIZE: usize = 20;

const SUB_RETRYABLE: [u16; 3] = [429, 503, 504];

/// One sub-response of a `$batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchResponse {
    /// Index of the request in the input of [`GraphClient::batch_get`], as a string.
    pub id: String,
    /// The relative URL that was requested.
    pub url: String,
    /// HTTP status of the sub-response (after retries of 429/503/504).
    pub status: u16,
    /// Sub-response headers (names as Graph sent them).
    pub headers: HashMap<String, String>,
    /// Sub-response body (`Null` when there was none).
    pub body: serde_json::Value,
}

impl BatchResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The Graph error code in the body, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.body
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(|c| c.as_str())
    }
}

/// Per-id results of a `$batch`-based lookup.
#[derive(Debug, Default)]
pub struct BatchOutcome<T> {
    /// Answers, by the id that was asked for.
    pub results: HashMap<String, T>,
    /// Ids whose lookup failed (e.g. 403 for one mailbox, or still throttled
    /// after all retries), with the reason.
    pub errors: HashMap<String, GraphError>,
}

#[derive(Deserialize)]
struct Envelope {
    responses: Option<Vec<RawSub>>,
}

#[derive(Deserialize)]
struct RawSub {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    headers: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    body: Option<serde_json::Value>,
}

impl GraphClient {
    /// The generic `$batch` of GET requests. `relative_urls` are relative to
    /// `/v1.0` (e.g. `/users/{id}/manager?$select=id`). They are sent in
    /// groups of 20 (the groups run concurrently within the in-flight bound);
    /// sub-responses with 429/503/504 are retried on their own (honouring
    /// their `Retry-After`) up to the retry policy's bound, after which the
    /// last sub-response is returned as is. Returns one response per input,
    /// in input order.
    pub async fn batch_get(
        &self,
        relative_urls: Vec<String>,
    ) -> Result<Vec<BatchResponse>, GraphError> {
        self.batch_get_with_progress(relative_urls, &|_| {}).await
    }

    /// [`GraphClient::batch_get`] with `progress(responses so far)`.
    pub async fn batch_get_with_progress(
        &self,
        relative_urls: Vec<String>,
        progress: Progress<'_>,
    ) -> Result<Vec<BatchResponse>, GraphError> {
        let n = relative_urls.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let requests: Vec<(usize, String)> = relative_urls
            .into_iter()
            .map(|u| {
                if u.starts_with('/') {
                    u
                } else {
                    format!("/{u}")
                }
            })
            .enumerate()
            .collect();
        let mut set = JoinSet::new();
        for chunk in requests.chunks(BATCH_SIZE) {
            let client = self.clone();
            let chunk = chunk.to_vec();
            set.spawn(async move { client.run_batch(chunk).await });
        }
        let mut results: Vec<Option<BatchResponse>> = vec![None; n];
        let mut done = 0usize;
        while let Some(joined) = set.join_next().await {
            let responses = match joined {
                Ok(r) => r?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("a $batch task was cancelled: {e}"),
            };
            for r in responses {
                let i: usize = r.id.parse().expect("ids are indices");
                if results[i].replace(r).is_none() {
                    done += 1;
                }
            }
            progress(done);
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every request got a response"))
            .collect())
    }

    /// Runs one group of at most 20 sub-requests, retrying throttled ones.
    async fn run_batch(
        &self,
        requests: Vec<(usize, String)>,
    ) -> Result<Vec<BatchResponse>, GraphError> {
        let batch_url = self.v1_url("/$batch")?;
        let policy = self.inner.config.retry.clone();
        let mut pending = requests;
        let mut out = Vec::with_capacity(pending.len());
        let mut retries = 0u32;
        loop {
            let body = serde_json::json!({
                "requests": pending
                    .iter()
                    .map(|(i, u)| serde_json::json!({"id": i.to_string(), "method": "GET", "url": u}))
                    .collect::<Vec<_>>()
            });
            let body = serde_json::to_vec(&body).expect("JSON values serialise");
            StatsCounters::add(&self.inner.stats.batch_sub_requests, pending.len() as u64);
            debug!(sub_requests = pending.len(), retry = retries, "$batch");
            let resp = self
                .graph_request(Method::POST, &batch_url, Some(&body))
                .await?;
            let envelope: Envelope = parse_json(&batch_url, &resp.body)?;
            let subs = envelope.responses.ok_or_else(|| GraphError::Malformed {
                url: url_without_query(&batch_url),
                detail: "the $batch answer has no \"responses\" array".into(),
            })?;
            let mut by_id: HashMap<String, RawSub> = HashMap::new();
            for sub in subs {
                let id = match &sub.id {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => continue,
                };
                by_id.insert(id, sub);
            }
            let mut throttled: Vec<(usize, String)> = Vec::new();
            let mut wait: Option<Duration> = None;
            for (i, url) in pending {
                let id = i.to_string();
                let sub = by_id.remove(&id).ok_or_else(|| GraphError::Malformed {
                    url: url_without_query(&batch_url),
                    detail: format!(
                        "the $batch answer has no response for request {id} ({})",
                        strip_query(&url)
                    ),
                })?;
                let status = sub.status.ok_or_else(|| GraphError::Malformed {
                    url: url_without_query(&batch_url),
                    detail: format!("the $batch sub-response {id} has no status"),
                })?;
                let headers: HashMap<String, String> = sub
                    .headers
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, v)
                    })
                    .collect();
                let response = BatchResponse {
                    id,
                    url: url.clone(),
                    status,
                    headers,
                    body: sub.body.unwrap_or(serde_json::Value::Null),
                };
                if SUB_RETRYABLE.contains(&status) {
                    StatsCounters::add(&self.inner.stats.throttled, 1);
                    if retries < policy.max_retries {
                        if let Some(ra) = response
                            .header("retry-after")
                            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()))
                        {
                            let ra = ra.min(policy.max_retry_after);
                            wait = Some(wait.map_or(ra, |w| w.max(ra)));
                        }
                        throttled.push((i, url));
                        continue;
                    }
                }
                out.push(response);
            }
            if throttled.is_empty() {
                return Ok(out);
            }
            let wait = wait.unwrap_or_else(|| policy.backoff(retries));
            warn!(
                sub_requests = throttled.len(),
                wait_ms = wait.as_millis() as u64,
                retry = retries + 1,
                "$batch sub-requests throttled or unavailable, retrying them"
            );
            StatsCounters::add(&self.inner.stats.retries, throttled.len() as u64);
            tokio::time::sleep(wait).await;
            retries += 1;
            pending = throttled;
        }
    }

    /// The typed error of an unsuccessful sub-response.
    fn sub_error(&self, r: &BatchResponse) -> GraphError {
        let url = self
            .v1_url(&r.url)
            .unwrap_or_else(|_| Url::parse("http://invalid/").expect("valid"));
        if SUB_RETRYABLE.contains(&r.status) {
            return GraphError::Throttled {
                url: url_without_query(&url),
                status: r.status,
                attempts: self.inner.config.retry.max_retries + 1,
                retry_after: None,
            };
        }
        let body = GraphErrorBody::from_json(&r.body);
        error::http_error(
            &url,
            r.status,
            &body,
            r.header("request-id").map(str::to_owned),
        )
    }

    /// Each user's mailbox purpose (`user`, `shared`, `room`, `equipment`,
    /// `linked`, `others`) via `$batch` of
    /// `GET /users/{id}/mailboxSettings?$select=userPurpose`. A user without
    /// a mailbox (404, `MailboxNotEnabledForRESTAPI`) maps to `None`. Other
    /// per-user failures land in [`BatchOutcome::errors`]; but if *every*
    /// answer is 403 the call fails with [`GraphError::Forbidden`] naming
    /// `MailboxSettings.Read`, so the caller can fall back.
    pub async fn mailbox_purposes(
        &self,
        user_ids: &[String],
        progress: Progress<'_>,
    ) -> Result<BatchOutcome<Option<String>>, GraphError> {
        let ids = dedup(user_ids);
        let urls = ids
            .iter()
            .map(|id| {
                format!(
                    "/users/{}/mailboxSettings?$select=userPurpose",
                    encode_path_segment(id)
                )
            })
            .collect();
        let responses = self.batch_get_with_progress(urls, progress).await?;
        if !responses.is_empty() && responses.iter().all(|r| r.status == 403) {
            let body = GraphErrorBody::from_json(&responses[0].body);
            let message = if body.code.is_empty() {
                body.message
            } else {
                format!("{}: {}", body.code, body.message)
            };
            return Err(GraphError::Forbidden {
                endpoint: "/users/{id}/mailboxSettings".into(),
                permission: "MailboxSettings.Read".into(),
                message,
            });
        }
        let mut outcome = BatchOutcome {
            results: HashMap::new(),
            errors: HashMap::new(),
        };
        for (id, r) in ids.into_iter().zip(responses) {
            if r.is_success() {
                let purpose = r
                    .body
                    .get("userPurpose")
                    .or_else(|| r.body.get("value"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                outcome.results.insert(id, purpose);
            } else if r.status == 404
                || r.error_code()
                    .is_some_and(|c| c.eq_ignore_ascii_case("MailboxNotEnabledForRESTAPI"))
            {
                outcome.results.insert(id, None);
            } else {
                outcome.errors.insert(id, self.sub_error(&r));
            }
        }
        Ok(outcome)
    }

    /// Each user's manager id via `$batch` of `GET /users/{id}/manager?$select=id`;
    /// no manager (404) maps to `None`. Any other failure fails the call.
    pub async fn managers(
        &self,
        user_ids: &[String],
        progress: Progress<'_>,
    ) -> Result<HashMap<String, Option<String>>, GraphError> {
        let ids = dedup(user_ids);
        let urls = ids
            .iter()
            .map(|id| format!("/users/{}/manager?$select=id", encode_path_segment(id)))
            .collect();
        let responses = self.batch_get_with_progress(urls, progress).await?;
        let mut out = HashMap::with_capacity(ids.len());
        for (id, r) in ids.into_iter().zip(responses) {
            if r.is_success() {
                let manager = r.body.get("id").and_then(|v| v.as_str()).map(str::to_owned);
                out.insert(id, manager);
            } else if r.status == 404 {
                out.insert(id, None);
            } else {
                return Err(self.sub_error(&r));
            }
        }
        Ok(out)
    }
}

fn dedup(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

fn strip_query(u: &str) -> &str {
    u.split('?').next().unwrap_or(u)
}
