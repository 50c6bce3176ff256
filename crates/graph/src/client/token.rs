//! Tokens: OAuth 2.0 client credentials, cached and renewed before expiry; concurrent
//! callers share one renewal.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::transport::{Retries, send_and_read};
use super::{GraphClient, StatsCounters};
use crate::config::{ClientSecret, SignIn};
use crate::error::{self, GraphError, url_without_query};

/// An access token. Its `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct AccessToken(pub(super) Arc<str>);

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

pub(super) struct CachedToken {
    token: AccessToken,
    refresh_at: Instant,
    expires_at: Instant,
}

const TOKEN_RETRYABLE: [u16; 5] = [429, 500, 502, 503, 504];
/// Refresh this long before expiry (or at 80% of a shorter lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl GraphClient {
    pub(super) async fn access_token(&self) -> Result<AccessToken, GraphError> {
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

    pub(super) async fn invalidate_token(&self, rejected: &AccessToken) {
        let mut guard = self.inner.token.lock().await;
        if guard.as_ref().is_some_and(|c| &c.token == rejected) {
            *guard = None;
        }
    }

    async fn fetch_token(&self) -> Result<CachedToken, GraphError> {
        let cfg = &self.inner.config;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &cfg.client_id)
            .append_pair("client_secret", cfg.client_secret.expose_secret())
            .extend_pairs(match &cfg.sign_in {
                SignIn::Application => vec![
                    ("scope", self.inner.scope.clone()),
                    ("grant_type", "client_credentials".into()),
                ],
                SignIn::Delegated(refresh) => vec![
                    ("scope", format!("{} offline_access", self.inner.scope)),
                    ("grant_type", "refresh_token".into()),
                    (
                        "refresh_token",
                        refresh.current().expose_secret().to_string(),
                    ),
                ],
            })
            .finish();
        self.request_token(form).await
    }

    /// Redeems the authorization code of a delegated sign-in (with the PKCE verifier of
    /// its request and the redirect URI it was sent to): from then on the client signs in
    /// as that administrator. `config.sign_in` must be [`SignIn::Delegated`]; its refresh
    /// token (any placeholder until now) is renewed with the one the answer carries.
    pub async fn redeem_authorization_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<(), GraphError> {
        let cfg = &self.inner.config;
        let SignIn::Delegated(_) = &cfg.sign_in else {
            return Err(GraphError::Config {
                field: "sign_in",
                problem: "an authorization code is redeemed by a delegated client".into(),
            });
        };
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &cfg.client_id)
            .append_pair("client_secret", cfg.client_secret.expose_secret())
            .append_pair("scope", &format!("{} offline_access", self.inner.scope))
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", code_verifier)
            .finish();
        let fresh = self.request_token(form).await?;
        *self.inner.token.lock().await = Some(fresh);
        Ok(())
    }

    /// One token request with its retries; a delegated client keeps the new refresh
    /// token of the answer.
    async fn request_token(&self, form: String) -> Result<CachedToken, GraphError> {
        let cfg = &self.inner.config;
        let policy = &cfg.retry;
        let stats = &self.inner.stats;
        let url = &self.inner.token_url;
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
                let token = parse_token(url, &body, requested_at)?;
                if let SignIn::Delegated(refresh) = &cfg.sign_in {
                    let renewed = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["refresh_token"].as_str().map(str::to_string))
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| GraphError::Malformed {
                            url: url_without_query(url),
                            detail: "the token answer has no refresh_token (was offline_access granted?)".into(),
                        })?;
                    refresh.renew(ClientSecret::new(renewed));
                }
                return Ok(token);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
