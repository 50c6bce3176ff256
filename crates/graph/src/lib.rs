//! A thin, robust client for the Microsoft identity platform and Microsoft
//! Graph v1.0, reading a Microsoft 365 tenant for directory sync.
//!
//! * Tokens: OAuth 2.0 client credentials against
//!   `{authority}/{tenant}/oauth2/v2.0/token` with scope `{graph}/.default`,
//!   cached and renewed 5 minutes before expiry (at 80 % of shorter
//!   lifetimes); concurrent callers share one renewal.
//! * Requests: at most [`GraphConfig::max_in_flight`] at once per client;
//!   429/503/504 and connect/timeout errors are retried honouring
//!   `Retry-After` (seconds or HTTP date) or with capped exponential back-off
//!   with jitter, up to [`RetryPolicy::max_retries`]; a 401 renews the token
//!   once.
//! * Paging through `@odata.nextLink`, delta rounds through
//!   `@odata.deltaLink`, `$batch` in groups of 20 with throttled
//!   sub-requests retried on their own.
//! * Typed errors ([`GraphError`]) that say what to fix; the client secret
//!   and access tokens never appear in errors, `Debug` output or logs.
//!
//! This crate knows Graph only; it returns typed Graph objects ([`User`],
//! [`Group`], ...).
//!
//! ```no_run
//! # async fn demo() -> Result<(), usersync_graph::GraphError> {
//! use usersync_graph::{GraphClient, GraphConfig, USER_PROPERTIES};
//!
//! let config = GraphConfig::global("contoso.onmicrosoft.com", "app-id", "secret-value");
//! let client = GraphClient::new(config)?;
//! let users = client
//!     .list_users(USER_PROPERTIES, &|n| eprintln!("{n} users"))
//!     .await?;
//! let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
//! let purposes = client.mailbox_purposes(&ids, &|_| {}).await?;
//! let delta = client.users_delta(None, USER_PROPERTIES, &|_| {}).await?;
//! // keep delta.delta_link for the next round
//! # let _ = (purposes, delta);
//! # Ok(())
//! # }
//! ```

mod batch;
mod client;
mod config;
mod error;
mod model;

pub use batch::{BATCH_SIZE, BatchOutcome, BatchResponse};
pub use client::{
    ClientStats, GraphClient, NewSubscription, Progress, Subscription, parse_retry_after,
};
pub use config::{
    CHINA_AUTHORITY_URL, CHINA_GRAPH_URL, ClientSecret, Cloud, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_REQUEST_TIMEOUT, GLOBAL_AUTHORITY_URL, GLOBAL_GRAPH_URL, GraphConfig, RefreshToken,
    RetryPolicy, SignIn, US_GOVERNMENT_AUTHORITY_URL, US_GOVERNMENT_GRAPH_URL,
};
pub use error::{GraphError, TokenErrorKind};
pub use model::{
    AssignedLicense, Delta, DeltaItem, DirectoryObject, Domain, GROUP_PROPERTIES, Group,
    MemberDelta, Organization, PrepaidUnits, Removed, SubscribedSku, USER_PROPERTIES, User,
    VerifiedDomain,
};
