//! The identity platform's admin-consent pages, as an administrator meets them:
//! `GET /{tenant}/v2.0/adminconsent?client_id&redirect_uri&state` asks who signs in, then
//! shows the permissions the app wants with "Accept" and "Cancel". Accepting consents the
//! tenant to the app (its token endpoint then issues tokens) and redirects back with
//! `admin_consent=True&tenant=ID&state`; "Cancel" redirects back with `error=access_denied`
//! and an AADSTS65004 description. An account that is not a global administrator is
//! refused with AADSTS90094, as Microsoft refuses it.
//!
//! The authorization code flow of a delegated client goes the same way:
//! `GET /{tenant}/oauth2/v2.0/authorize?client_id&response_type=code&redirect_uri&scope&state
//! &code_challenge&code_challenge_method=S256` asks who signs in and shows the same
//! consent; "Accept" redirects back with `code` and `state` (the token endpoint redeems
//! the code once, within 10 minutes, with the PKCE verifier and the same redirect URI).
//!
//! Accounts: `admin@` any of the tenant's domains is its global administrator; any other
//! address in one of its domains is a user without that role; an address in no tenant's
//! domains does not exist (AADSTS50034). No password is asked: the simulator tests the
//! flow, not credentials.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::server::Shared;
use crate::tenant::Tenant;

/// The application permissions the app is granted on consent, as the page lists them.
const PERMISSIONS: &[(&str, &str)] = &[
    ("User.Read.All", "Read all users' full profiles"),
    ("Group.Read.All", "Read all groups"),
    ("GroupMember.Read.All", "Read all group memberships"),
    ("Domain.Read.All", "Read domains"),
    ("Organization.Read.All", "Read organization information"),
    ("MailboxSettings.Read", "Read all user mailbox settings"),
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body>\
         <div class=\"brand\">Microsoft 365 simulator · identity platform</div>\
         <main>{body}</main></body></html>",
        title = escape(title)
    );
    (status, Html(html)).into_response()
}

fn error_page(code: u32, text: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Sign in",
        &format!(
            "<h1>Sorry, but we're having trouble signing you in.</h1>\
             <p id=\"error\">AADSTS{code}: {}</p>",
            escape(text)
        ),
    )
}

/// Hidden inputs carrying the request's parameters through the pages.
fn hidden(params: &HashMap<String, String>, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|k| params.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape(v)
            )
        })
        .collect()
}

/// The refusal of an account of another tenant than the one the path names.
fn outside(shared: &Shared, tenant: &str, home: &Tenant, account: &str) -> Option<Response> {
    shared
        .tenant_named(tenant)
        .is_some_and(|t| !std::ptr::eq(t, home))
        .then(|| {
            error_page(
                50_020,
                &format!(
                    "User account '{account}' from identity provider does not exist in tenant '{tenant}' and cannot access the application in that tenant."
                ),
            )
        })
}

/// Whether the account is a global administrator: `admin@` one of its tenant's domains.
fn is_admin(account: &str) -> bool {
    account
        .split_once('@')
        .is_some_and(|(local, _)| local.eq_ignore_ascii_case("admin"))
}

/// The tenant an account signs in to: the one holding its domain.
fn tenant_of<'a>(shared: &'a Shared, account: &str) -> Option<&'a Arc<Tenant>> {
    let domain = account.rsplit_once('@')?.1.to_ascii_lowercase();
    shared.tenants.iter().find(|t| {
        t.bp.domains
            .iter()
            .any(|d| d.id.eq_ignore_ascii_case(&domain))
    })
}

/// The redirect URI, or the error page (AADSTS code and text) that refuses it.
fn checked_redirect(
    shared: &Shared,
    params: &HashMap<String, String>,
) -> Result<url::Url, (u32, String)> {
    let Some(uri) = params.get("redirect_uri") else {
        return Err((
            900_144,
            "The request body must contain the following parameter: 'redirect_uri'.".into(),
        ));
    };
    let registered = shared
        .redirect_uris
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let listed = registered.is_empty() || registered.iter().any(|r| r == uri);
    match url::Url::parse(uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && listed => Ok(u),
        _ => Err((
            50_011,
            format!(
                "The redirect URI '{uri}' specified in the request does not match the redirect URIs configured for the application."
            ),
        )),
    }
}

/// Which consent round trip a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// `/v2.0/adminconsent`: application permissions for the organization.
    AdminConsent,
    /// `/oauth2/v2.0/authorize`: a delegated sign-in, answered with a code.
    Authorize,
}

impl Flow {
    fn decide_path(self, tenant: &str) -> String {
        match self {
            Flow::AdminConsent => format!("/{tenant}/v2.0/adminconsent/decide"),
            Flow::Authorize => format!("/{tenant}/oauth2/v2.0/authorize/decide"),
        }
    }

    /// The request's parameters each page carries on.
    fn carried(self) -> &'static [&'static str] {
        match self {
            Flow::AdminConsent => &["client_id", "redirect_uri", "state", "scope"],
            Flow::Authorize => &[
                "client_id",
                "redirect_uri",
                "state",
                "scope",
                "response_type",
                "response_mode",
                "code_challenge",
                "code_challenge_method",
                "flow",
            ],
        }
    }
}

/// `GET /{tenant}/v2.0/adminconsent`: who signs in, then what the app asks for.
pub(crate) async fn admin_consent(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    consent_pages(&shared, &tenant, params, Flow::AdminConsent)
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: a delegated sign-in (authorization code flow,
/// PKCE with S256 when the client sends a challenge).
pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Query(mut params): Query<HashMap<String, String>>,
) -> Response {
    if params.get("response_type").map(String::as_str) != Some("code") {
        return error_page(
            900_144,
            "The request body must contain the following parameter: 'response_type' (code).",
        );
    }
    if params.contains_key("code_challenge")
        && params.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return error_page(
            501_491,
            "Invalid code_challenge_method: only S256 is accepted here.",
        );
    }
    params.insert("flow".into(), "authorize".into());
    consent_pages(&shared, &tenant, params, Flow::Authorize)
}

fn consent_pages(
    shared: &Shared,
    tenant: &str,
    params: HashMap<String, String>,
    flow: Flow,
) -> Response {
    let tenant = tenant.to_string();
    let Some(client_id) = params.get("client_id") else {
        return error_page(
            900_144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let redirect = match checked_redirect(shared, &params) {
        Ok(r) => r,
        Err((code, text)) => return error_page(code, &text),
    };
    let any_tenant = matches!(
        tenant.to_ascii_lowercase().as_str(),
        "organizations" | "common"
    );
    if !any_tenant && shared.tenant_named(&tenant).is_none() {
        return error_page(
            90_002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let carried = hidden(&params, flow.carried());
    let Some(account) = params
        .get("account")
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
    else {
        let hint = shared
            .tenant_named(&tenant)
            .map(|t| format!("admin@{}", t.bp.initial_domain))
            .unwrap_or_else(|| "admin@contoso.onmicrosoft.com".into());
        return page(
            StatusCode::OK,
            "Sign in to your account",
            &format!(
                "<h1>Sign in</h1><form method=\"get\">{carried}\
                 <label for=\"account\">Email, phone, or Skype</label>\
                 <input id=\"account\" name=\"account\" type=\"email\" placeholder=\"{hint}\" required autofocus>\
                 <button type=\"submit\" id=\"next\">Next</button></form>",
                hint = escape(&hint)
            ),
        );
    };
    let Some(home) = tenant_of(shared, &account) else {
        return error_page(
            50_034,
            &format!(
                "The user account {account} does not exist in the directory. To sign into this application, the account must be added to the directory."
            ),
        );
    };
    if !any_tenant && let Some(refused) = outside(shared, &tenant, home, &account) {
        return refused;
    }
    let app_known = shared
        .tenants
        .iter()
        .any(|t| t.bp.client_id.eq_ignore_ascii_case(client_id));
    if !app_known {
        return error_page(
            700_016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                home.bp.org_name
            ),
        );
    }
    if !is_admin(&account) {
        return page(
            StatusCode::FORBIDDEN,
            "Need admin approval",
            &format!(
                "<h1>Need admin approval</h1><p>Signed in as {} ({})</p>\
                 <p id=\"error\">AADSTS90094: The grant requires admin permission. \
                 Only a global administrator of {} can consent for the organization.</p>",
                escape(&account),
                escape(&home.bp.org_name),
                escape(&home.bp.org_name)
            ),
        );
    }
    let permissions: String = PERMISSIONS
        .iter()
        .map(|(name, text)| format!("<li>{} <small>({name})</small></li>", escape(text)))
        .collect();
    let mut keys = flow.carried().to_vec();
    keys.push("account");
    let carried = hidden(&params, &keys);
    page(
        StatusCode::OK,
        "Permissions requested",
        &format!(
            "<h1>Permissions requested</h1>\
             <p id=\"signed-in\">{account} (admin)</p>\
             <p>An app wants permission for <b>{org}</b>, to:</p><ul>{permissions}</ul>\
             <p>Accepting grants these permissions for your whole organization. \
             Nobody else in it will be asked.</p>\
             <p class=\"redirect\">You will be sent back to {host}.</p>\
             <form method=\"post\" action=\"{action}\">{carried}\
             <button type=\"submit\" name=\"decision\" value=\"cancel\" id=\"cancel\">Cancel</button>\
             <button type=\"submit\" name=\"decision\" value=\"accept\" id=\"accept\">Accept</button>\
             </form>",
            account = escape(&account),
            org = escape(&home.bp.org_name),
            host = escape(redirect.host_str().unwrap_or("")),
            action = escape(&flow.decide_path(&tenant)),
        ),
    )
}

/// `POST .../adminconsent/decide` and `.../authorize/decide`: "Accept" or "Cancel", then
/// back to the app (with `admin_consent` and `tenant`, or with a `code`).
pub(crate) async fn decide(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    axum::Form(params): axum::Form<HashMap<String, String>>,
) -> Response {
    let mut redirect = match checked_redirect(&shared, &params) {
        Ok(r) => r,
        Err((code, text)) => return error_page(code, &text),
    };
    let account = params.get("account").cloned().unwrap_or_default();
    let Some(home) = tenant_of(&shared, &account) else {
        return error_page(
            50_034,
            &format!("The user account {account} does not exist in the directory."),
        );
    };
    // The page's checks again: a form posted by hand gets no further than the page.
    if let Some(refused) = outside(&shared, &tenant, home, &account) {
        return refused;
    }
    if !is_admin(&account) {
        return page(
            StatusCode::FORBIDDEN,
            "Need admin approval",
            "<p id=\"error\">AADSTS90094: The grant requires admin permission.</p>",
        );
    }
    let state = params.get("state").cloned();
    let mut query: Vec<(String, String)> = Vec::new();
    let authorize = params.get("flow").map(String::as_str) == Some("authorize");
    if params.get("decision").map(String::as_str) == Some("accept") && authorize {
        // Consent on behalf of the organization, then a code for this sign-in.
        home.grant.set_consented(true);
        let code = shared.auth.issue_code(crate::auth::PendingCode {
            tenant: home.index,
            client_id: params.get("client_id").cloned().unwrap_or_default(),
            redirect_uri: params.get("redirect_uri").cloned().unwrap_or_default(),
            challenge: params.get("code_challenge").cloned(),
            account: account.clone(),
            expires: std::time::Instant::now(),
            redeemed: false,
        });
        query.push(("code".into(), code));
        query.push(("session_state".into(), crate::util::new_guid()));
    } else if params.get("decision").map(String::as_str) == Some("accept") {
        home.grant.set_consented(true);
        query.push(("admin_consent".into(), "True".into()));
        query.push(("tenant".into(), home.bp.tenant_id.clone()));
        query.push((
            "scope".into(),
            "https://graph.microsoft.com/.default".into(),
        ));
    } else {
        query.push(("error".into(), "access_denied".into()));
        query.push((
            "error_description".into(),
            "AADSTS65004: User declined to consent to access the app.".into(),
        ));
        query.push(("error_subcode".into(), "cancel".into()));
    }
    if let Some(state) = state {
        query.push(("state".into(), state));
    }
    let text: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let joined = match redirect.query() {
        Some(q) if !q.is_empty() => format!("{q}&{}", text.join("&")),
        _ => text.join("&"),
    };
    redirect.set_query(Some(&joined));
    Redirect::to(redirect.as_str()).into_response()
}
