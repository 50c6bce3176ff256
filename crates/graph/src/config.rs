//! Client configuration: clouds, credentials, retry policy.

use std::fmt;
use std::time::Duration;

use url::Url;

use crate::error::GraphError;

/// Authority (login) URL of the global Azure cloud.
pub const GLOBAL_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
/// Microsoft Graph URL of the global Azure cloud.
pub const GLOBAL_GRAPH_URL: &str = "https://graph.microsoft.com";
/// Authority URL of Azure US Government (GCC High / DoD).
pub const US_GOVERNMENT_AUTHORITY_URL: &str = "https://login.microsoftonline.us";
/// Microsoft Graph URL of Azure US Government (GCC High).
pub const US_GOVERNMENT_GRAPH_URL: &str = "https://graph.microsoft.us";
/// Authority URL of Azure China (operated by 21Vianet).
pub const CHINA_AUTHORITY_URL: &str = "https://login.chinacloudapi.cn";
/// Microsoft Graph URL of Azure China (operated by 21Vianet).
pub const CHINA_GRAPH_URL: &str = "https://microsoftgraph.chinacloudapi.cn";

/// Default number of requests in flight per client (i.e. per tenant).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Default timeout of one HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A national (or the global) Microsoft cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cloud {
    /// login.microsoftonline.com + graph.microsoft.com
    Global,
    /// login.microsoftonline.us + graph.microsoft.us
    UsGovernment,
    /// login.chinacloudapi.cn + microsoftgraph.chinacloudapi.cn
    China,
}

impl Cloud {
    /// The authority (token issuer) base URL of this cloud.
    pub fn authority_url(self) -> Url {
        let s = match self {
            Cloud::Global => GLOBAL_AUTHORITY_URL,
            Cloud::UsGovernment => US_GOVERNMENT_AUTHORITY_URL,
            Cloud::China => CHINA_AUTHORITY_URL,
        };
        Url::parse(s).expect("constant URL is valid")
    }

    /// The Microsoft Graph base URL of this cloud.
    pub fn graph_url(self) -> Url {
        let s = match self {
            Cloud::Global => GLOBAL_GRAPH_URL,
            Cloud::UsGovernment => US_GOVERNMENT_GRAPH_URL,
            Cloud::China => CHINA_GRAPH_URL,
        };
        Url::parse(s).expect("constant URL is valid")
    }
}

/// The application's client secret. Its `Debug` prints `***`; it has no
/// `Display`. Use [`ClientSecret::expose_secret`] to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret value.
    pub fn new(secret: impl Into<String>) -> Self {
        ClientSecret(secret.into())
    }

    /// The secret value. Never log or display it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for ClientSecret {
    fn from(s: String) -> Self {
        ClientSecret(s)
    }
}

impl From<&str> for ClientSecret {
    fn from(s: &str) -> Self {
        ClientSecret(s.to_owned())
    }
}

/// How throttled (429), unavailable (503), timed-out (504) and failed
/// (connect/timeout) requests are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; after that a typed error is returned.
    pub max_retries: u32,
    /// First back-off delay when the server sent no `Retry-After`; doubles per retry.
    pub base_delay: Duration,
    /// Cap of the exponential back-off.
    pub max_delay: Duration,
    /// Cap of a server-sent `Retry-After` (a sanity bound; the server's value is
    /// honoured up to this).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Exponential back-off with jitter for the given retry (0 = first retry):
    /// `min(max_delay, base_delay * 2^retry)`, of which a random half is added
    /// to the other half ("equal jitter").
    pub fn backoff(&self, retry: u32) -> Duration {
        use rand::Rng;
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(30)));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        let jitter_ms = half.as_millis().min(u64::MAX as u128) as u64;
        let jitter = if jitter_ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
        };
        half + jitter
    }
}

/// Everything a [`crate::GraphClient`] needs to talk to one tenant.
#[derive(Clone)]
pub struct GraphConfig {
    /// e.g. `https://login.microsoftonline.com`; the token endpoint is
    /// `{authority_url}/{tenant_id}/oauth2/v2.0/token`.
    pub authority_url: Url,
    /// e.g. `https://graph.microsoft.com`; requests go to `{graph_url}/v1.0/...`
    /// and the token scope is `{graph_url}/.default`.
    pub graph_url: Url,
    /// Directory (tenant) id, a GUID or a verified domain name.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// Client secret value.
    pub client_secret: ClientSecret,
    /// Requests in flight at once for this client (default 4).
    pub max_in_flight: usize,
    /// Retry policy for throttling and transient failures.
    pub retry: RetryPolicy,
    /// Extra PEM-encoded root certificates to trust (e.g. a simulator's
    /// self-signed certificate). Each entry may hold several certificates.
    pub extra_root_certificates_pem: Vec<Vec<u8>>,
    /// Timeout of one HTTP request (default 60 s).
    pub request_timeout: Duration,
    /// As whom the client signs in: the application (default) or an administrator.
    pub sign_in: SignIn,
}

/// As whom a client signs in to the tenant.
#[derive(Debug, Clone, Default)]
pub enum SignIn {
    /// As the application itself (client credentials): its application permissions,
    /// granted by admin consent.
    #[default]
    Application,
    /// As an administrator who signed in (delegated; the authorization code flow): the
    /// refresh token of that sign-in, exchanged for each access token.
    Delegated(RefreshToken),
}

/// A delegated sign-in's refresh token, shared with whoever keeps it: the identity
/// platform hands out a new one with each access token, and the keeper is told. Its
/// `Debug` prints `***`.
#[derive(Clone)]
pub struct RefreshToken {
    current: std::sync::Arc<std::sync::Mutex<ClientSecret>>,
    keeper: Option<std::sync::Arc<Keeper>>,
}

/// What is told each new refresh token.
type Keeper = dyn Fn(&ClientSecret) + Send + Sync;

impl RefreshToken {
    pub fn new(token: impl Into<ClientSecret>) -> Self {
        RefreshToken {
            current: std::sync::Arc::new(std::sync::Mutex::new(token.into())),
            keeper: None,
        }
    }

    /// Calls `keeper` with each new token the identity platform hands out (to store it).
    pub fn kept_by(mut self, keeper: impl Fn(&ClientSecret) + Send + Sync + 'static) -> Self {
        self.keeper = Some(std::sync::Arc::new(keeper));
        self
    }

    /// The token to use now.
    pub fn current(&self) -> ClientSecret {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Takes the new token of an answer; tells the keeper when it changed.
    pub(crate) fn renew(&self, token: ClientSecret) {
        {
            let mut current = self
                .current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *current == token {
                return;
            }
            *current = token.clone();
        }
        if let Some(keeper) = &self.keeper {
            keeper(&token);
        }
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(***)")
    }
}

impl fmt::Debug for GraphConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphConfig")
            .field("authority_url", &self.authority_url.as_str())
            .field("graph_url", &self.graph_url.as_str())
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry", &self.retry)
            .field(
                "extra_root_certificates_pem",
                &format_args!("[{} PEM bundle(s)]", self.extra_root_certificates_pem.len()),
            )
            .field("request_timeout", &self.request_timeout)
            .field("sign_in", &self.sign_in)
            .finish()
    }
}

impl GraphConfig {
    /// Configuration for the global Azure cloud.
    pub fn global(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<ClientSecret>,
    ) -> Self {
        Self::for_cloud(Cloud::Global, tenant_id, client_id, secret)
    }

    /// Configuration for Azure US Government.
    pub fn us_government(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<ClientSecret>,
    ) -> Self {
        Self::for_cloud(Cloud::UsGovernment, tenant_id, client_id, secret)
    }

    /// Configuration for Azure China (21Vianet).
    pub fn china(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<ClientSecret>,
    ) -> Self {
        Self::for_cloud(Cloud::China, tenant_id, client_id, secret)
    }

    /// Configuration for the given cloud.
    pub fn for_cloud(
        cloud: Cloud,
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<ClientSecret>,
    ) -> Self {
        Self::with_urls(
            cloud.authority_url(),
            cloud.graph_url(),
            tenant_id,
            client_id,
            secret,
        )
    }

    /// Configuration with explicit authority and Graph URLs, e.g. a simulator
    /// at `http://127.0.0.1:PORT` for both. Plain `http` is accepted only for
    /// loopback hosts (the client secret would otherwise travel in clear text).
    pub fn with_urls(
        authority_url: Url,
        graph_url: Url,
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<ClientSecret>,
    ) -> Self {
        GraphConfig {
            authority_url,
            graph_url,
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: secret.into(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retry: RetryPolicy::default(),
            extra_root_certificates_pem: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            sign_in: SignIn::Application,
        }
    }

    /// The token endpoint: `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> Result<Url, GraphError> {
        let s = format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority_url.as_str().trim_end_matches('/'),
            self.tenant_id
        );
        Url::parse(&s).map_err(|e| GraphError::Config {
            field: "authority_url",
            problem: format!("cannot build the token endpoint URL: {e}"),
        })
    }

    /// The OAuth scope requested: `{graph_url}/.default`, e.g.
    /// `https://graph.microsoft.com/.default`.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.graph_url.as_str().trim_end_matches('/'))
    }

    /// `{graph_url}/v1.0`, without a trailing slash.
    pub fn graph_v1_base(&self) -> String {
        format!("{}/v1.0", self.graph_url.as_str().trim_end_matches('/'))
    }

    /// Checks the configuration; [`crate::GraphClient::new`] calls this.
    pub fn validate(&self) -> Result<(), GraphError> {
        check_base_url("authority_url", &self.authority_url)?;
        check_base_url("graph_url", &self.graph_url)?;
        let tenant = self.tenant_id.trim();
        if tenant.is_empty() {
            return Err(GraphError::Config {
                field: "tenant_id",
                problem:
                    "is empty; expected the directory (tenant) id GUID or a verified domain name"
                        .into(),
            });
        }
        if tenant != self.tenant_id
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(GraphError::Config {
                field: "tenant_id",
                problem: format!(
                    "{:?} is not a tenant id: expected a GUID or a domain name (letters, digits, '-', '.')",
                    self.tenant_id
                ),
            });
        }
        if self.client_id.trim().is_empty() {
            return Err(GraphError::Config {
                field: "client_id",
                problem: "is empty; expected the application (client) id".into(),
            });
        }
        if self.client_secret.is_empty() {
            return Err(GraphError::Config {
                field: "client_secret",
                problem: "is empty".into(),
            });
        }
        if self.max_in_flight == 0 {
            return Err(GraphError::Config {
                field: "max_in_flight",
                problem: "must be at least 1".into(),
            });
        }
        if self.request_timeout.is_zero() {
            return Err(GraphError::Config {
                field: "request_timeout",
                problem: "must be greater than zero".into(),
            });
        }
        Ok(())
    }
}

fn check_base_url(field: &'static str, url: &Url) -> Result<(), GraphError> {
    let problem = |p: String| Err(GraphError::Config { field, problem: p });
    match url.scheme() {
        "https" => {}
        "http" => {
            if !is_loopback(url) {
                return problem(format!(
                    "{url} uses plain http to a non-loopback host; use https (http is only accepted for a local simulator on 127.0.0.1/localhost)"
                ));
            }
        }
        other => {
            return problem(format!(
                "{url} has scheme {other:?}; expected https (or http for a local simulator)"
            ));
        }
    }
    if url.host().is_none() {
        return problem(format!("{url} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return problem(format!("{url} must not have a query or fragment"));
    }
    Ok(())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_and_scope() {
        let c = GraphConfig::global("contoso.onmicrosoft.com", "app", "s3cret");
        assert_eq!(c.scope(), "https://graph.microsoft.com/.default");
        assert_eq!(
            c.token_url().unwrap().as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(c.graph_v1_base(), "https://graph.microsoft.com/v1.0");
        c.validate().unwrap();
        let us = GraphConfig::us_government("t", "a", "s");
        assert_eq!(us.scope(), "https://graph.microsoft.us/.default");
        assert_eq!(
            us.authority_url.as_str(),
            "https://login.microsoftonline.us/"
        );
        let cn = GraphConfig::china("t", "a", "s");
        assert_eq!(
            cn.scope(),
            "https://microsoftgraph.chinacloudapi.cn/.default"
        );
        assert_eq!(cn.authority_url.as_str(), "https://login.chinacloudapi.cn/");
    }

    #[test]
    fn validation() {
        let mut c = GraphConfig::global("t", "a", "s");
        c.authority_url = Url::parse("ftp://example.com").unwrap();
        assert!(matches!(
            c.validate(),
            Err(GraphError::Config {
                field: "authority_url",
                ..
            })
        ));
        c.authority_url = Url::parse("http://login.example.com").unwrap();
        assert!(c.validate().is_err());
        c.authority_url = Url::parse("http://127.0.0.1:8080").unwrap();
        c.graph_url = Url::parse("http://localhost:8080/").unwrap();
        c.validate().unwrap();
        c.max_in_flight = 0;
        assert!(c.validate().is_err());
        c.max_in_flight = 1;
        c.tenant_id = "a/b".into();
        assert!(c.validate().is_err());
        c.tenant_id = "t".into();
        c.client_secret = ClientSecret::new("");
        assert!(c.validate().is_err());
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
        };
        for i in 0..40 {
            let d = p.backoff(i);
            assert!(d <= Duration::from_secs(1), "{d:?}");
        }
        let d0 = p.backoff(0);
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
    }

    #[test]
    fn secret_debug() {
        let c = GraphConfig::global("t", "a", "hunter2-secret");
        let s = format!("{c:?} {:?}", c.client_secret);
        assert!(!s.contains("hunter2"));
        assert!(s.contains("***"));
    }
}
