//! Runtime knobs for tests and benchmarks: throttling, fault injection and
//! request statistics. All are shared by plain requests and `$batch`
//! sub-requests, which is what makes a 429 inside a 200 batch possible.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Throttling of Graph requests (the token endpoint is never throttled).
/// Throttled requests get 429 TooManyRequests with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// Every Nth Graph request (counting `$batch` sub-requests, not the batch
    /// itself) is answered with 429.
    pub every_nth: Option<u64>,
    /// Requests beyond this many per (fixed, one-second) window get 429.
    pub per_second: Option<u32>,
    /// Value of the `Retry-After` header, in seconds.
    pub retry_after_secs: u64,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            every_nth: None,
            per_second: None,
            retry_after_secs: 1,
        }
    }
}

impl Throttle {
    pub fn off() -> Throttle {
        Throttle::default()
    }
    pub fn every_nth(n: u64, retry_after_secs: u64) -> Throttle {
        Throttle {
            every_nth: Some(n.max(1)),
            retry_after_secs,
            ..Throttle::default()
        }
    }
    pub fn per_second(limit: u32, retry_after_secs: u64) -> Throttle {
        Throttle {
            per_second: Some(limit),
            retry_after_secs,
            ..Throttle::default()
        }
    }
    pub fn is_off(&self) -> bool {
        self.every_nth.is_none() && self.per_second.is_none()
    }
}

/// Which of the matching requests a [`Fault`] hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultWhen {
    Always,
    /// Only the Nth matching request (1-based).
    Nth(u64),
    /// The first N matching requests.
    FirstN(u64),
    /// Every Nth matching request.
    EveryNth(u64),
}

/// What a [`Fault`] does to the requests it hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this status and a Graph error body (503 →
    /// ServiceUnavailable, 500 → InternalServerError, 429 → TooManyRequests...).
    Status {
        status: u16,
        retry_after_secs: Option<u64>,
    },
    /// Delay the response (then answer normally), e.g. to test client timeouts.
    Delay(Duration),
}

/// An injected fault. Matches requests whose path starts with `path_prefix`
/// (e.g. "/v1.0/users"; `$batch` sub-requests are matched as "/v1.0" + their
/// url) and, if set, whose decoded query string contains `query_contains`
/// (e.g. "$skiptoken"). Also applies to the token endpoint if the prefix
/// matches its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub path_prefix: String,
    pub query_contains: Option<String>,
    pub when: FaultWhen,
    pub action: FaultAction,
}

impl Fault {
    /// Every matching request fails with `status`.
    pub fn status(path_prefix: &str, status: u16) -> Fault {
        Fault {
            path_prefix: path_prefix.to_string(),
            query_contains: None,
            when: FaultWhen::Always,
            action: FaultAction::Status {
                status,
                retry_after_secs: None,
            },
        }
    }
    /// Every matching request fails with 503 ServiceUnavailable.
    pub fn service_unavailable(path_prefix: &str) -> Fault {
        Fault::status(path_prefix, 503)
    }
    /// Every matching request is delayed by `by`.
    pub fn delay(path_prefix: &str, by: Duration) -> Fault {
        Fault {
            action: FaultAction::Delay(by),
            ..Fault::status(path_prefix, 503)
        }
    }
    /// Only requests whose decoded query contains `s` (e.g. "$skiptoken").
    pub fn with_query(mut self, s: &str) -> Fault {
        self.query_contains = Some(s.to_string());
        self
    }
    pub fn nth(mut self, n: u64) -> Fault {
        self.when = FaultWhen::Nth(n);
        self
    }
    pub fn first(mut self, n: u64) -> Fault {
        self.when = FaultWhen::FirstN(n);
        self
    }
    pub fn every(mut self, n: u64) -> Fault {
        self.when = FaultWhen::EveryNth(n.max(1));
        self
    }
    /// Adds a `Retry-After` header to a status fault.
    pub fn retry_after(mut self, secs: u64) -> Fault {
        if let FaultAction::Status {
            retry_after_secs, ..
        } = &mut self.action
        {
            *retry_after_secs = Some(secs);
        }
        self
    }
}

/// Request counters. `http_requests` counts every HTTP request the server
/// received (token, Graph, `$batch` envelopes); `graph_requests` counts Graph
/// resource requests including `$batch` sub-requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub http_requests: u64,
    pub token_requests: u64,
    pub graph_requests: u64,
    pub batch_requests: u64,
    pub batch_subrequests: u64,
    /// 429 responses served by the throttle (not by faults).
    pub throttled: u64,
    /// Requests hit by an injected fault.
    pub faults: u64,
    /// Requests answered with a status >= 400 (incl. 429s and faults).
    pub errors: u64,
    /// Graph requests by endpoint kind ("users", "users.delta",
    /// "users.mailboxSettings", "groups.members", "$batch", "token", ...).
    pub by_endpoint: BTreeMap<String, u64>,
}

struct ThrottleState {
    cfg: Throttle,
    count: u64,
    window: Instant,
    in_window: u32,
}

pub(crate) struct Knobs {
    throttle: Mutex<ThrottleState>,
    faults: Mutex<Vec<(Fault, u64)>>,
    stats: Mutex<SimStats>,
    pub latency: Mutex<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Knobs {
    pub(crate) fn new(throttle: Throttle, latency: Duration) -> Knobs {
        Knobs {
            throttle: Mutex::new(ThrottleState {
                cfg: throttle,
                count: 0,
                window: Instant::now(),
                in_window: 0,
            }),
            faults: Mutex::new(Vec::new()),
            stats: Mutex::new(SimStats::default()),
            latency: Mutex::new(latency),
        }
    }

    pub(crate) fn set_throttle(&self, t: Throttle) {
        let mut s = lock(&self.throttle);
        s.cfg = t;
        s.count = 0;
        s.in_window = 0;
        s.window = Instant::now();
    }

    /// `Some(retry_after)` if this Graph request is to be throttled.
    pub(crate) fn throttle(&self) -> Option<u64> {
        let mut s = lock(&self.throttle);
        if s.cfg.is_off() {
            return None;
        }
        s.count += 1;
        let retry = s.cfg.retry_after_secs;
        if let Some(n) = s.cfg.every_nth
            && s.count.is_multiple_of(n)
        {
            return Some(retry);
        }
        if let Some(limit) = s.cfg.per_second {
            let now = Instant::now();
            if now.duration_since(s.window) >= Duration::from_secs(1) {
                s.window = now;
                s.in_window = 0;
            }
            if s.in_window >= limit {
                return Some(retry);
            }
            s.in_window += 1;
        }
        None
    }

    pub(crate) fn add_fault(&self, f: Fault) {
        lock(&self.faults).push((f, 0));
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// The first fault that hits this request, if any.
    pub(crate) fn fault(&self, path: &str, decoded_query: &str) -> Option<FaultAction> {
        let mut faults = lock(&self.faults);
        for (f, seen) in faults.iter_mut() {
            if !path.starts_with(&f.path_prefix) {
                continue;
            }
            if let Some(q) = &f.query_contains
                && !decoded_query.contains(q.as_str())
            {
                continue;
            }
            *seen += 1;
            let hit = match f.when {
                FaultWhen::Always => true,
                FaultWhen::Nth(n) => *seen == n,
                FaultWhen::FirstN(n) => *seen <= n,
                FaultWhen::EveryNth(n) => seen.is_multiple_of(n),
            };
            if hit {
                return Some(f.action.clone());
            }
        }
        None
    }

    pub(crate) fn record(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut lock(&self.stats));
    }

    pub(crate) fn stats(&self) -> SimStats {
        lock(&self.stats).clone()
    }

    pub(crate) fn reset_stats(&self) {
        *lock(&self.stats) = SimStats::default();
    }

    pub(crate) fn latency(&self) -> Duration {
        *lock(&self.latency)
    }
}
