//! The Microsoft identity platform side: the v2.0 token endpoint for the
//! client credentials grant (with Entra ID's error shapes and AADSTS codes),
//! OpenID metadata, and bearer-token validation for Graph requests.

use crate::server::Shared;
use crate::tenant::Tenant;
use crate::util::{aad_time, b64url, new_guid, parse_query, unix_now};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// Issued tokens, for every tenant of the simulator.
pub(crate) struct AuthState {
    tokens: Mutex<HashMap<String, Issued>>,
    lifetime: Mutex<Duration>,
    /// Authorization codes of delegated sign-ins, until redeemed.
    codes: Mutex<HashMap<String, PendingCode>>,
    /// Refresh tokens handed out; each stays valid when a new one is handed out.
    refresh: Mutex<HashMap<String, RefreshGrant>>,
}

/// An authorization code: what the sign-in agreed to, for the token request to match.
pub(crate) struct PendingCode {
    pub tenant: usize,
    pub client_id: String,
    pub redirect_uri: String,
    /// The PKCE challenge (S256) of the authorization request, when it had one.
    pub challenge: Option<String>,
    pub account: String,
    pub expires: Instant,
    pub redeemed: bool,
}

struct RefreshGrant {
    tenant: usize,
    client_id: String,
    account: String,
    revoked: bool,
}

struct Issued {
    expires: Instant,
    /// Index of the tenant the token was issued for: Graph answers from it.
    tenant: usize,
}

/// One tenant's consent to the app and the application permissions granted.
pub(crate) struct Grant {
    configured: Vec<String>,
    granted: RwLock<Vec<String>>,
    consented: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a bearer token was refused.
pub(crate) enum TokenProblem {
    Empty,
    Malformed,
    Unknown,
    Expired,
}

impl TokenProblem {
    pub(crate) fn message(&self) -> &'static str {
        match self {
            TokenProblem::Empty => "Access token is empty.",
            TokenProblem::Malformed => {
                "IDX14100: JWT is not well formed, there are no dots (.).\nThe token needs to be in JWS or JWE Compact Serialization Format. (JWS): 'EncodedHeader.EncodedPayload.EncodedSignature'. (JWE): 'EncodedProtectedHeader.EncodedEncryptedKey.EncodedInitializationVector.EncodedCiphertext.EncodedAuthenticationTag'."
            }
            TokenProblem::Unknown => "Access token validation failure. Invalid audience.",
            TokenProblem::Expired => "Lifetime validation failed, the token is expired.",
        }
    }
}

impl Grant {
    pub(crate) fn new(granted: Vec<String>, consented: bool) -> Grant {
        Grant {
            configured: granted.clone(),
            granted: RwLock::new(granted),
            consented: AtomicBool::new(consented),
        }
    }

    pub(crate) fn granted(&self) -> Vec<String> {
        self.granted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn has_any(&self, perms: &[&str]) -> bool {
        let g = self.granted.read().unwrap_or_else(|e| e.into_inner());
        perms
            .iter()
            .any(|p| g.iter().any(|x| x.eq_ignore_ascii_case(p)))
    }

    pub(crate) fn set_denied(&self, denied: &[&str]) {
        let mut g = self.granted.write().unwrap_or_else(|e| e.into_inner());
        *g = self
            .configured
            .iter()
            .filter(|p| !denied.iter().any(|d| d.eq_ignore_ascii_case(p)))
            .cloned()
            .collect();
    }

    pub(crate) fn set_consented(&self, c: bool) {
        self.consented.store(c, Ordering::Relaxed);
    }

    fn consented(&self) -> bool {
        self.consented.load(Ordering::Relaxed)
    }
}

impl AuthState {
    pub(crate) fn new(lifetime: Duration) -> AuthState {
        AuthState {
            tokens: Mutex::new(HashMap::new()),
            lifetime: Mutex::new(lifetime),
            codes: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashMap::new()),
        }
    }

    /// A new authorization code for what a sign-in agreed to (valid 10 minutes, once).
    pub(crate) fn issue_code(&self, mut pending: PendingCode) -> String {
        let bytes: [u8; 32] = rand::random();
        let code = format!("1.sim-code.{}", b64url(&bytes));
        pending.expires = Instant::now() + Duration::from_secs(600);
        pending.redeemed = false;
        lock(&self.codes).insert(code.clone(), pending);
        code
    }

    fn issue_refresh(&self, tenant: usize, client_id: &str, account: &str) -> String {
        let bytes: [u8; 48] = rand::random();
        let token = format!("1.sim-rt.{}", b64url(&bytes));
        lock(&self.refresh).insert(
            token.clone(),
            RefreshGrant {
                tenant,
                client_id: client_id.to_string(),
                account: account.to_string(),
                revoked: false,
            },
        );
        token
    }

    /// Revokes every refresh token (an administrator's password reset, a sign-out
    /// everywhere): delegated clients must sign in again.
    pub(crate) fn revoke_refresh_tokens(&self) {
        for grant in lock(&self.refresh).values_mut() {
            grant.revoked = true;
        }
    }

    /// Every refresh token handed out so far (for tests that look for one at rest).
    pub(crate) fn refresh_tokens(&self) -> Vec<String> {
        lock(&self.refresh).keys().cloned().collect()
    }

    pub(crate) fn set_lifetime(&self, d: Duration) {
        *lock(&self.lifetime) = d;
    }

    pub(crate) fn expire_all(&self) {
        let now = Instant::now();
        for t in lock(&self.tokens).values_mut() {
            t.expires = now;
        }
    }

    /// Checks an `Authorization` header value; a valid token gives the index
    /// of the tenant it was issued for.
    pub(crate) fn check(&self, authorization: Option<&str>) -> Result<usize, TokenProblem> {
        let value = authorization.unwrap_or("").trim();
        let token = match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => "",
        };
        if token.is_empty() {
            return Err(TokenProblem::Empty);
        }
        match lock(&self.tokens).get(token) {
            Some(t) if Instant::now() < t.expires => Ok(t.tenant),
            Some(_) => Err(TokenProblem::Expired),
            None if !token.contains('.') => Err(TokenProblem::Malformed),
            None => Err(TokenProblem::Unknown),
        }
    }

    fn issue(&self, tenant: &Tenant) -> (String, u64) {
        let (tenant_id, client_id) = (&tenant.bp.tenant_id, &tenant.bp.client_id);
        let lifetime = *lock(&self.lifetime);
        let now = unix_now();
        let secs = lifetime.as_secs().max(1);
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": "usersync-sim"});
        let payload = json!({
            "aud": "https://graph.microsoft.com",
            "iss": format!("https://sts.windows.net/{tenant_id}/"),
            "iat": now, "nbf": now, "exp": now + secs,
            "app_displayname": "usersync",
            "appid": client_id,
            "appidacr": "1",
            "idtyp": "app",
            "roles": tenant.grant.granted(),
            "tid": tenant_id,
            "uti": new_guid(),
            "ver": "1.0",
        });
        let sig: [u8; 32] = rand::random();
        let token = format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(payload.to_string().as_bytes()),
            b64url(&sig)
        );
        let mut tokens = lock(&self.tokens);
        if tokens.len() > 10_000 {
            let now = Instant::now();
            tokens.retain(|_, t| t.expires > now);
        }
        tokens.insert(
            token.clone(),
            Issued {
                expires: Instant::now() + lifetime,
                tenant: tenant.index,
            },
        );
        (token, lifetime.as_secs())
    }
}

/// An identity platform error response.
fn aad_error(
    status: StatusCode,
    error: &str,
    code: u32,
    message: &str,
    correlation: &str,
) -> Response {
    let trace = new_guid();
    let ts = aad_time(unix_now());
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {ts}"
        ),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store, no-cache"),
            (header::PRAGMA, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn tenant_not_found(tenant: &str, corr: &str) -> Response {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
        corr,
    )
}

/// Whether `resource` names the simulator itself as the Graph resource: a
/// client that derives the scope from its configured Graph URL (as for
/// national clouds) asks for `{scheme}://{host}[:{port}]/.default`. Microsoft's
/// SDKs (Kiota's Azure Identity provider) derive it from the host alone,
/// dropping the port, because Entra ID rejects ports in `.default` scopes.
fn is_own_resource(base_url: &str, resource: &str) -> bool {
    let base = base_url.trim_end_matches('/');
    if resource.eq_ignore_ascii_case(base) {
        return true;
    }
    // `base` is always `scheme://host:port`; the host may be `[v6]`.
    match base.rsplit_once(':') {
        Some((origin, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            resource.eq_ignore_ascii_case(origin)
        }
        _ => false,
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token_endpoint(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.knobs.record(|s| {
        s.http_requests += 1;
        s.token_requests += 1;
        *s.by_endpoint.entry("token".into()).or_default() += 1;
    });
    let latency = shared.knobs.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = format!("/{tenant}/oauth2/v2.0/token");
    let resp = match shared.knobs.fault(&path, "") {
        Some(crate::knobs::FaultAction::Status { status, .. }) => aad_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "temporarily_unavailable",
            50_196,
            "The server is temporarily unavailable.",
            &new_guid(),
        ),
        Some(crate::knobs::FaultAction::Delay(d)) => {
            tokio::time::sleep(d).await;
            token_response(&shared, &tenant, &method, &headers, &body)
        }
        None => token_response(&shared, &tenant, &method, &headers, &body),
    };
    if resp.status().as_u16() >= 400 {
        shared.knobs.record(|s| s.errors += 1);
    }
    resp
}

fn token_response(
    shared: &Shared,
    tenant_name: &str,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let corr = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(new_guid);
    if method != Method::POST {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900_561,
            "The endpoint only accepts POST requests. Received a GET request.",
            &corr,
        );
    }
    // The path names the tenant by id or by one of its verified domains; a delegated
    // grant may name none (`organizations`): its code or refresh token says which.
    let any_tenant = matches!(
        tenant_name.to_ascii_lowercase().as_str(),
        "organizations" | "common"
    );
    let named = shared.tenant_named(tenant_name);
    if named.is_none() && !any_tenant {
        return tenant_not_found(tenant_name, &corr);
    }
    let form: HashMap<String, String> = parse_query(&String::from_utf8_lossy(body))
        .into_iter()
        .collect();
    let param = |k: &str| form.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let missing = |name: &str| {
        aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900_144,
            &format!("The request body must contain the following parameter: '{name}'."),
            &corr,
        )
    };
    // client_secret_basic is accepted as well as client_secret_post.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (crate::util::url_decode(a), crate::util::url_decode(b)))
        });
    let Some(grant) = param("grant_type") else {
        return missing("grant_type");
    };
    if grant == "authorization_code" || grant == "refresh_token" {
        let client_id = param("client_id")
            .map(str::to_string)
            .or_else(|| basic.as_ref().map(|(a, _)| a.clone()));
        let secret = param("client_secret")
            .map(str::to_string)
            .or_else(|| basic.map(|(_, b)| b));
        return delegated_grant(shared, named, grant, &form, client_id, secret, &corr);
    }
    let Some(tenant) = named else {
        return tenant_not_found(tenant_name, &corr);
    };
    if grant != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70_003,
            &format!("The app requested an unsupported grant type '{grant}'."),
            &corr,
        );
    }
    let client_id = param("client_id")
        .map(str::to_string)
        .or_else(|| basic.as_ref().map(|(a, _)| a.clone()));
    let Some(client_id) = client_id else {
        return missing("client_id");
    };
    let Some(scope) = param("scope") else {
        return missing("scope");
    };
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.len() != 1 || !scopes[0].to_ascii_lowercase().ends_with("/.default") {
        let code = if scopes.len() == 1 { 1_002_012 } else { 70_011 };
        let msg = if code == 1_002_012 {
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            )
        } else {
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            )
        };
        return aad_error(StatusCode::BAD_REQUEST, "invalid_scope", code, &msg, &corr);
    }
    let resource = scopes[0][..scopes[0].len() - "/.default".len()].trim_end_matches('/');
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !resource.eq_ignore_ascii_case("https://graph.microsoft.com")
        && !resource.eq_ignore_ascii_case(GRAPH_APP_ID)
        && !is_own_resource(&shared.base_for(host), resource)
    {
        let name = &tenant.bp.org_name;
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500_011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {name}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
            &corr,
        );
    }
    // Another tenant's app is unknown here, exactly as in Entra ID.
    if !client_id.eq_ignore_ascii_case(&tenant.bp.client_id) || !tenant.grant.consented() {
        let name = &tenant.bp.org_name;
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{name}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
            &corr,
        );
    }
    let secret = param("client_secret")
        .map(str::to_string)
        .or_else(|| basic.map(|(_, b)| b));
    let Some(secret) = secret else {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            &corr,
        );
    };
    if secret != tenant.bp.client_secret {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                tenant.bp.client_id
            ),
            &corr,
        );
    }
    let (token, expires_in) = shared.auth.issue(tenant);
    let body = json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": token,
    });
    token_answer(&body)
}

/// A token answer, not to be cached (as the identity platform sends it).
fn token_answer(body: &serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store, no-cache"),
            (header::PRAGMA, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn invalid_grant(code: u32, message: &str, corr: &str) -> Response {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        code,
        message,
        corr,
    )
}

/// The authorization code and refresh token grants of a delegated client (a confidential
/// one: its secret is checked as for client credentials).
fn delegated_grant(
    shared: &Shared,
    named: Option<&Tenant>,
    grant: &str,
    form: &HashMap<String, String>,
    client_id: Option<String>,
    secret: Option<String>,
    corr: &str,
) -> Response {
    let param = |k: &str| form.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let missing = |name: &str| {
        aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900_144,
            &format!("The request body must contain the following parameter: '{name}'."),
            corr,
        )
    };
    let Some(client_id) = client_id else {
        return missing("client_id");
    };
    // Which tenant and account the grant is for, from the code or the refresh token.
    let (index, account) = if grant == "authorization_code" {
        let Some(code) = param("code") else {
            return missing("code");
        };
        let mut codes = lock(&shared.auth.codes);
        let Some(pending) = codes.get_mut(code) else {
            return invalid_grant(
                70_000,
                "The provided value for the 'code' parameter is not valid.",
                corr,
            );
        };
        if pending.redeemed {
            return invalid_grant(
                54_005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
                corr,
            );
        }
        if Instant::now() > pending.expires {
            return invalid_grant(
                70_008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
                corr,
            );
        }
        if !pending.client_id.eq_ignore_ascii_case(&client_id) {
            return invalid_grant(
                70_000,
                "The provided value for the 'code' parameter is not valid. The code was issued to another application.",
                corr,
            );
        }
        let redirect = param("redirect_uri").unwrap_or_default();
        if redirect != pending.redirect_uri {
            return invalid_grant(
                500_112,
                &format!(
                    "The reply address '{redirect}' does not match the reply address '{}' provided when requesting Authorization code.",
                    pending.redirect_uri
                ),
                corr,
            );
        }
        if let Some(challenge) = &pending.challenge {
            let Some(verifier) = param("code_verifier") else {
                return invalid_grant(
                    50_148,
                    "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
                    corr,
                );
            };
            use sha2::Digest;
            if b64url(&sha2::Sha256::digest(verifier.as_bytes())) != *challenge {
                return invalid_grant(
                    501_481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                    corr,
                );
            }
        }
        pending.redeemed = true;
        (pending.tenant, pending.account.clone())
    } else {
        let Some(token) = param("refresh_token") else {
            return missing("refresh_token");
        };
        let grants = lock(&shared.auth.refresh);
        let Some(held) = grants.get(token) else {
            return invalid_grant(
                9_002_313,
                "Invalid request. Request is malformed or invalid.",
                corr,
            );
        };
        if held.revoked {
            return invalid_grant(
                50_173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
                corr,
            );
        }
        if !held.client_id.eq_ignore_ascii_case(&client_id) {
            return invalid_grant(
                70_000,
                "The provided value for the 'refresh_token' parameter is not valid. The token was issued to another application.",
                corr,
            );
        }
        (held.tenant, held.account.clone())
    };
    let Some(tenant) = shared.tenants.get(index) else {
        return invalid_grant(70_000, "The grant's tenant is gone.", corr);
    };
    if named.is_some_and(|n| n.index != tenant.index) {
        return invalid_grant(
            700_005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
            corr,
        );
    }
    if !client_id.eq_ignore_ascii_case(&tenant.bp.client_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                tenant.bp.org_name
            ),
            corr,
        );
    }
    match secret {
        None => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7_000_218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                corr,
            );
        }
        Some(s) if s != tenant.bp.client_secret => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7_000_215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                corr,
            );
        }
        Some(_) => {}
    }
    if !tenant.grant.consented() {
        return invalid_grant(
            65_001,
            &format!(
                "The user or administrator has not consented to use the application with ID '{client_id}'. Send an interactive authorization request for this user and resource."
            ),
            corr,
        );
    }
    let (token, expires_in) = shared.auth.issue(tenant);
    let refresh = shared
        .auth
        .issue_refresh(tenant.index, &client_id, &account);
    let body = json!({
        "token_type": "Bearer",
        "scope": "https://graph.microsoft.com/User.Read.All https://graph.microsoft.com/Group.Read.All https://graph.microsoft.com/GroupMember.Read.All https://graph.microsoft.com/.default",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": token,
        "refresh_token": refresh,
    });
    token_answer(&body)
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`, which MSAL-style
/// clients read before asking for a token.
pub(crate) async fn openid_configuration(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared.knobs.record(|s| {
        s.http_requests += 1;
        *s.by_endpoint
            .entry("openid-configuration".into())
            .or_default() += 1;
    });
    let Some(known) = shared.tenant_named(&tenant) else {
        return tenant_not_found(&tenant, &new_guid());
    };
    let base = shared.base_for(headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    let tid = &known.bp.tenant_id;
    let body = json!({
        "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/authorize"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::is_own_resource;

    #[test]
    fn own_resource_with_or_without_port() {
        let base = "https://127.0.0.1:4430";
        assert!(is_own_resource(base, "https://127.0.0.1:4430"));
        assert!(is_own_resource(base, "HTTPS://127.0.0.1"));
        assert!(!is_own_resource(base, "https://127.0.0.1:4431"));
        assert!(!is_own_resource(base, "http://127.0.0.1"));
        assert!(!is_own_resource(base, "https://localhost"));
        assert!(is_own_resource("http://[::1]:80", "http://[::1]"));
        assert!(!is_own_resource("https://", "https"));
    }
}
