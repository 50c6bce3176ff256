//! Typed errors. None of them ever contains the client secret or an access
//! token; URLs in errors carry no query string.

use url::Url;

/// Everything that can go wrong talking to the identity platform or Graph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The configuration is unusable (nothing was sent).
    #[error("invalid configuration: {field} {problem}")]
    Config {
        /// The offending [`crate::GraphConfig`] field (or argument).
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// The token endpoint refused to issue an access token.
    #[error(
        "cannot obtain an access token for tenant {tenant}: {explanation} (OAuth error \"{error}\", HTTP {status})"
    )]
    Token {
        /// Tenant the token was requested for.
        tenant: String,
        /// HTTP status of the token endpoint's answer.
        status: u16,
        /// The OAuth `error` field (`invalid_client`, `unauthorized_client`, ...).
        error: String,
        /// The first AADSTS code (`error_codes[0]`, or parsed from the description).
        aadsts: Option<u32>,
        /// Classification of the problem.
        kind: TokenErrorKind,
        /// Human explanation of what to fix.
        explanation: String,
        /// The server's `error_description` (first line).
        description: String,
    },

    /// Graph answered 403: the app lacks an application permission (or, for
    /// mailboxes, Exchange refuses access).
    #[error(
        "{endpoint} needs the application permission {permission}, which was not granted to the app in this tenant (Graph said: {message})"
    )]
    Forbidden {
        /// Normalised endpoint, e.g. `/users` or `/users/{id}/mailboxSettings`.
        endpoint: String,
        /// The permission(s) that grant access, e.g. `User.Read.All (or Directory.Read.All)`.
        permission: String,
        /// Graph's error code and message.
        message: String,
    },

    /// Graph kept answering 401 even with a freshly acquired token.
    #[error(
        "{url}: the access token was rejected (HTTP 401 {code}) even after acquiring a new one: {message}"
    )]
    Unauthorized {
        /// Request URL without its query.
        url: String,
        /// Graph error code, e.g. `InvalidAuthenticationToken`.
        code: String,
        /// Graph error message.
        message: String,
    },

    /// Graph answered 404.
    #[error("{url}: not found ({code}: {message})")]
    NotFound {
        /// Request URL without its query.
        url: String,
        /// Graph error code, e.g. `Request_ResourceNotFound`.
        code: String,
        /// Graph error message.
        message: String,
    },

    /// A delta link is no longer usable; a full synchronisation (a delta
    /// round without a previous link) is needed.
    #[error(
        "{url}: the delta link is no longer valid, a full resynchronisation is needed ({code}: {message})"
    )]
    DeltaExpired {
        /// Request URL without its query.
        url: String,
        /// Graph error code.
        code: String,
        /// Graph error message.
        message: String,
    },

    /// Still throttled/unavailable (429, 503 or 504) after all retries.
    #[error(
        "{url}: still throttled or unavailable (last HTTP {status}) after {attempts} attempts, giving up"
    )]
    Throttled {
        /// Request URL without its query.
        url: String,
        /// Last HTTP status seen (429, 503 or 504).
        status: u16,
        /// Attempts made (first try + retries).
        attempts: u32,
        /// The last answer's Retry-After, when it had one: when to try again.
        retry_after: Option<std::time::Duration>,
    },

    /// Any other unsuccessful HTTP answer.
    #[error("{url}: HTTP {status} {code}: {message}")]
    Server {
        /// Request URL without its query.
        url: String,
        /// HTTP status.
        status: u16,
        /// Graph error code (empty if the body had none).
        code: String,
        /// Graph error message (or the start of a non-JSON body).
        message: String,
        /// Graph's `request-id` response header, useful for Microsoft support.
        request_id: Option<String>,
    },

    /// The request could not be sent or its answer could not be read
    /// (connection refused, timeout, TLS, reset), after retries if retryable.
    #[error(
        "{url}: transport error after {attempts} attempt(s): {}",
        error_chain(source)
    )]
    Transport {
        /// Request URL without its query.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The underlying error (its URL removed).
        #[source]
        source: reqwest::Error,
    },

    /// A successful answer that is not what Graph returns: invalid JSON, a
    /// page without `value`, a foreign `@odata.nextLink`, a missing
    /// `$batch` sub-response, ...
    #[error("{url}: malformed response: {detail}")]
    Malformed {
        /// Request URL without its query.
        url: String,
        /// What is wrong.
        detail: String,
    },
}

impl GraphError {
    /// Whether this is a 403 [`GraphError::Forbidden`].
    pub fn is_forbidden(&self) -> bool {
        matches!(self, GraphError::Forbidden { .. })
    }

    /// Whether this is a [`GraphError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, GraphError::NotFound { .. })
    }
}

/// `outer: inner: root` of an error and its sources.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Classification of a token endpoint error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// The client secret is wrong (or is the secret's id instead of its value).
    InvalidClientSecret,
    /// The client secret has expired.
    ExpiredClientSecret,
    /// The application is unknown in the tenant: not consented, or wrong client id.
    AppNotConsented,
    /// Admin consent for the requested permissions is missing.
    ConsentRequired,
    /// The tenant does not exist (in this cloud) or the tenant id is invalid.
    TenantNotFound,
    /// The requested scope is not valid.
    InvalidScope,
    /// Microsoft Graph is not known in the tenant (usually: wrong cloud).
    ResourceNotFound,
    /// The application is disabled.
    AppDisabled,
    /// A Conditional Access policy blocks the application.
    BlockedByConditionalAccess,
    /// A delegated sign-in is no longer valid (revoked, expired, the administrator's
    /// password reset, or a new sign-in required): the administrator signs in again.
    SignInExpired,
    /// Anything else.
    Other,
}

/// Builds a [`GraphError::Token`] from a token endpoint error answer.
pub(crate) fn token_error(
    tenant: &str,
    client_id: &str,
    scope: &str,
    authority: &str,
    status: u16,
    body: &[u8],
    secret: &str,
) -> GraphError {
    #[derive(serde::Deserialize, Default)]
    struct Body {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
        #[serde(default)]
        error_codes: Option<Vec<u32>>,
    }
    let parsed: Body = serde_json::from_slice(body).unwrap_or_default();
    let error = parsed.error.unwrap_or_else(|| "unknown".to_owned());
    let description_full = parsed
        .error_description
        .unwrap_or_else(|| body_excerpt(body));
    let description = redact(description_full.lines().next().unwrap_or("").trim(), secret);
    let aadsts = parsed
        .error_codes
        .and_then(|c| c.first().copied())
        .or_else(|| parse_aadsts(&description));

    use TokenErrorKind::*;
    let kind = match aadsts {
        Some(7000215) => InvalidClientSecret,
        Some(7000222) => ExpiredClientSecret,
        Some(700016) => AppNotConsented,
        Some(65001) => ConsentRequired,
        Some(90002) | Some(900023) | Some(90072) | Some(50059) => TenantNotFound,
        Some(70011) | Some(1002012) => InvalidScope,
        Some(500011) => ResourceNotFound,
        Some(7000112) => AppDisabled,
        Some(53003) => BlockedByConditionalAccess,
        Some(50173) | Some(70008) | Some(700082) | Some(50076) | Some(50079) | Some(54005)
        | Some(70000) => SignInExpired,
        _ => match error.as_str() {
            "invalid_client" => InvalidClientSecret,
            "unauthorized_client" => AppNotConsented,
            "invalid_scope" => InvalidScope,
            "consent_required" | "interaction_required" => ConsentRequired,
            _ => Other,
        },
    };
    let code = aadsts.map(|c| format!(" (AADSTS{c})")).unwrap_or_default();
    let explanation = match kind {
        InvalidClientSecret => format!(
            "the client secret is wrong or expired{code}: create a new client secret for application {client_id} and update the configuration (copy the secret's value, not its id)"
        ),
        ExpiredClientSecret => format!(
            "the client secret has expired{code}: create a new client secret for application {client_id} and update the configuration"
        ),
        AppNotConsented => format!(
            "the application {client_id} is not consented in tenant {tenant}{code}: a global administrator must grant admin consent (or the client id is wrong)"
        ),
        ConsentRequired => format!(
            "admin consent is missing in tenant {tenant}{code}: a global administrator must grant admin consent to application {client_id}"
        ),
        TenantNotFound => format!(
            "tenant {tenant} was not found{code}: check the tenant id or domain, and that the tenant belongs to this cloud ({authority})"
        ),
        InvalidScope => format!(
            "the scope {scope} is not valid{code}: check that the Graph URL belongs to the same cloud as the authority"
        ),
        ResourceNotFound => format!(
            "Microsoft Graph ({scope}) is not known in tenant {tenant}{code}: the Graph URL probably belongs to another cloud than the tenant"
        ),
        AppDisabled => format!(
            "the application {client_id} is disabled in tenant {tenant}{code}: an administrator must enable its enterprise application"
        ),
        BlockedByConditionalAccess => format!(
            "a Conditional Access policy in tenant {tenant} blocks application {client_id}{code}"
        ),
        SignInExpired => format!(
            "the administrator's sign-in for tenant {tenant} is no longer valid{code} (revoked, expired or the password was reset): connect the source again and sign in"
        ),
        Other => {
            if description.is_empty() {
                format!("the token endpoint refused the request{code}")
            } else {
                format!("the token endpoint refused the request{code}: {description}")
            }
        }
    };
    GraphError::Token {
        tenant: tenant.to_owned(),
        status,
        error,
        aadsts,
        kind,
        explanation,
        description,
    }
}

fn parse_aadsts(description: &str) -> Option<u32> {
    let i = description.find("AADSTS")?;
    let digits: String = description[i + 6..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Replaces every occurrence of `secret` in `text` by `***`.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "***")
    }
}

/// The start of a (non-JSON) body, for error messages.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    let mut out: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// `scheme://host[:port]/path`, i.e. the URL without query and fragment.
pub(crate) fn url_without_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {...}}}`.
#[derive(Debug, Default)]
pub(crate) struct GraphErrorBody {
    pub code: String,
    pub message: String,
}

impl GraphErrorBody {
    pub fn parse(body: &[u8]) -> GraphErrorBody {
        #[derive(serde::Deserialize)]
        struct Outer {
            error: Option<Inner>,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            #[serde(default)]
            code: Option<String>,
            #[serde(default)]
            message: Option<String>,
        }
        match serde_json::from_slice::<Outer>(body) {
            Ok(Outer { error: Some(inner) }) => GraphErrorBody {
                code: inner.code.unwrap_or_default(),
                message: inner.message.unwrap_or_default(),
            },
            _ => GraphErrorBody {
                code: String::new(),
                message: body_excerpt(body),
            },
        }
    }

    pub fn from_json(value: &serde_json::Value) -> GraphErrorBody {
        let err = value.get("error");
        let get = |k: &str| {
            err.and_then(|e| e.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        GraphErrorBody {
            code: get("code"),
            message: get("message"),
        }
    }

    fn describe(&self) -> String {
        match (self.code.is_empty(), self.message.is_empty()) {
            (true, true) => "no details".to_owned(),
            (true, false) => self.message.clone(),
            (false, true) => self.code.clone(),
            (false, false) => format!("{}: {}", self.code, self.message),
        }
    }
}

/// Normalises a Graph URL to an endpoint label: the path after `/v1.0`, ids
/// replaced by `{id}`, e.g. `/users/{id}/mailboxSettings`.
pub(crate) fn endpoint_label(url: &Url) -> String {
    endpoint_label_of_path(url.path())
}

pub(crate) fn endpoint_label_of_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let start = segments
        .iter()
        .position(|s| *s == "v1.0" || *s == "beta")
        .map(|i| i + 1)
        .unwrap_or(0);
    let mut out = String::new();
    let mut prev = "";
    for seg in &segments[start..] {
        out.push('/');
        let is_collection = matches!(
            prev,
            "users"
                | "groups"
                | "members"
                | "transitiveMembers"
                | "domains"
                | "organization"
                | "subscribedSkus"
                | "directoryObjects"
        );
        if is_collection && !seg.starts_with("delta") && !seg.starts_with('$') {
            out.push_str("{id}");
        } else {
            out.push_str(seg);
        }
        prev = seg;
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The application permission(s) that give access to an endpoint label.
pub(crate) fn permission_for(endpoint: &str) -> &'static str {
    let lower = endpoint.to_ascii_lowercase();
    if lower.contains("/mailboxsettings") {
        "MailboxSettings.Read"
    } else if lower.starts_with("/groups/{id}/members")
        || lower.starts_with("/groups/{id}/transitivemembers")
    {
        "GroupMember.Read.All (or Group.Read.All, Directory.Read.All)"
    } else if lower.starts_with("/groups") {
        "Group.Read.All (or Directory.Read.All)"
    } else if lower.starts_with("/users") {
        "User.Read.All (or Directory.Read.All)"
    } else if lower.starts_with("/domains") {
        "Domain.Read.All (or Directory.Read.All)"
    } else if lower.starts_with("/organization") || lower.starts_with("/subscribedskus") {
        "Organization.Read.All (or Directory.Read.All)"
    } else {
        "Directory.Read.All (or a narrower permission for this endpoint)"
    }
}

/// Maps an unsuccessful, non-retryable Graph answer to an error.
pub(crate) fn http_error(
    url: &Url,
    status: u16,
    body: &GraphErrorBody,
    request_id: Option<String>,
) -> GraphError {
    let u = url_without_query(url);
    let code_lower = body.code.to_ascii_lowercase();
    if status == 410
        || code_lower.contains("syncstatenotfound")
        || code_lower.contains("resyncrequired")
        || code_lower.contains("syncstateinvalid")
    {
        return GraphError::DeltaExpired {
            url: u,
            code: body.code.clone(),
            message: body.message.clone(),
        };
    }
    match status {
        403 => {
            let endpoint = endpoint_label(url);
            let permission = permission_for(&endpoint).to_owned();
            GraphError::Forbidden {
                endpoint,
                permission,
                message: body.describe(),
            }
        }
        404 => GraphError::NotFound {
            url: u,
            code: body.code.clone(),
            message: body.message.clone(),
        },
        401 => GraphError::Unauthorized {
            url: u,
            code: body.code.clone(),
            message: body.message.clone(),
        },
        _ => GraphError::Server {
            url: u,
            status,
            code: body.code.clone(),
            message: body.message.clone(),
            request_id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let u = Url::parse("https://graph.microsoft.com/v1.0/users?$select=id&$top=999").unwrap();
        assert_eq!(endpoint_label(&u), "/users");
        let u =
            Url::parse("https://graph.microsoft.com/v1.0/users/abc-123/mailboxSettings").unwrap();
        assert_eq!(endpoint_label(&u), "/users/{id}/mailboxSettings");
        let u = Url::parse("https://graph.microsoft.com/v1.0/groups/g1/transitiveMembers").unwrap();
        assert_eq!(endpoint_label(&u), "/groups/{id}/transitiveMembers");
        let u = Url::parse("https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x").unwrap();
        assert_eq!(endpoint_label(&u), "/users/delta");
        assert_eq!(
            permission_for("/users"),
            "User.Read.All (or Directory.Read.All)"
        );
        assert_eq!(
            permission_for("/users/{id}/mailboxSettings"),
            "MailboxSettings.Read"
        );
        assert!(permission_for("/groups/{id}/members").starts_with("GroupMember.Read.All"));
        assert!(permission_for("/domains").starts_with("Domain.Read.All"));
        assert!(permission_for("/organization").starts_with("Organization.Read.All"));
        assert!(permission_for("/subscribedSkus").starts_with("Organization.Read.All"));
    }

    #[test]
    fn forbidden_message() {
        let u = Url::parse("https://graph.microsoft.com/v1.0/users?$top=999").unwrap();
        let e = http_error(
            &u,
            403,
            &GraphErrorBody {
                code: "Authorization_RequestDenied".into(),
                message: "Insufficient privileges to complete the operation.".into(),
            },
            None,
        );
        assert!(e.to_string().starts_with(
            "/users needs the application permission User.Read.All (or Directory.Read.All), which was not granted to the app in this tenant"
        ), "{e}");
    }

    #[test]
    fn url_strip() {
        let u =
            Url::parse("https://user:pw@graph.microsoft.com/v1.0/users?$skiptoken=abc#f").unwrap();
        assert_eq!(
            url_without_query(&u),
            "https://graph.microsoft.com/v1.0/users"
        );
    }

    #[test]
    fn token_errors() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app 'x'. mysecret\r\nTrace ID: 1","error_codes":[7000215]}"#;
        let e = token_error("t", "app", "s", "a", 401, body, "mysecret");
        let s = e.to_string();
        assert!(
            s.contains("the client secret is wrong or expired (AADSTS7000215)"),
            "{s}"
        );
        assert!(!format!("{e:?}").contains("mysecret"));
        let body = br#"{"error":"invalid_request","error_description":"AADSTS90002: Tenant 'x' not found."}"#;
        match token_error("x", "app", "s", "a", 400, body, "zz") {
            GraphError::Token { aadsts, kind, .. } => {
                assert_eq!(aadsts, Some(90002));
                assert_eq!(kind, TokenErrorKind::TenantNotFound);
            }
            other => panic!("{other:?}"),
        }
        match token_error("x", "app", "s", "a", 502, b"<html>bad gateway</html>", "zz") {
            GraphError::Token {
                kind, description, ..
            } => {
                assert_eq!(kind, TokenErrorKind::Other);
                assert!(description.contains("bad gateway"));
            }
            other => panic!("{other:?}"),
        }
    }
}
