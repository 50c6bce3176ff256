//! The console: pages rendered on the server (askama templates, compiled in), a session
//! cookie after sign-in, a CSRF token in every form, no script. Every page goes through
//! [`Access`], as the API does.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use usersync_core::{MailboxType, UserStatus};
use usersync_engine::{Access, EngineError, ErrorKind, error_text};
use usersync_store::{RunStatus, SecretString, UserQuery};

use crate::WebState;

type AppState = Arc<WebState>;

const SESSION_COOKIE: &str = "usersync_session";
const SIGN_IN_COOKIE: &str = "usersync_sign_in";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/customers", post(add_customer))
        .route("/customers/{id}", get(customer))
        .route("/customers/{id}/domains", post(add_domain))
        .route("/customers/{id}/users", get(users))
        .route("/customers/{id}/users/restore", post(restore_user))
        .route("/customers/{id}/domains/{domain}/user-sync", get(user_sync))
        .route("/customers/{id}/sources/new", get(add_source))
        .route("/customers/{id}/connect/office365", post(connect))
        .route("/connect/office365/callback", get(connected))
        .route("/sources/{id}/test", post(test_connection))
        .route("/sources/{id}/auto-sync", post(auto_sync))
        .route("/sources/{id}/preview", post(preview))
        .route("/sources/{id}/sync", post(sync))
        .route("/sources/{id}/runs", get(run_history))
        .route("/runs/{id}", get(run))
        .route("/runs/{id}/progress", get(run_progress))
        .route("/static/run.js", get(run_script))
        .route("/sources/{id}/setup", get(crate::wizard::resume))
        .route(
            "/sources/{id}/setup/{step}",
            get(crate::wizard::show).post(crate::wizard::save),
        )
        .route(
            "/sources/{id}/filters",
            get(crate::wizard::filters).post(crate::wizard::add_filter),
        )
        .route(
            "/sources/{id}/filters/{rule}/remove",
            post(crate::wizard::remove_filter),
        )
        .route(
            "/sources/{id}/filters/{rule}/move",
            post(crate::wizard::move_filter),
        )
        .route("/runs/{id}/confirm", post(confirm))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/audit", get(audit))
        .route("/tokens", get(tokens).post(make_token))
        .route("/tokens/{id}/revoke", post(revoke_token))
        .route("/static/console.css", get(stylesheet))
}

/// Who the page is shown to, for the header.
pub(crate) struct Who {
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) csrf: String,
}

/// A signed-in request: what its principal may do, and its session's CSRF token.
pub(crate) struct Signed {
    pub(crate) access: Access,
    pub(crate) csrf: String,
}

impl Signed {
    pub(crate) fn who(&self) -> Option<Who> {
        let p = self.access.principal();
        Some(Who {
            name: p.name.clone(),
            role: p.grant.role.to_string(),
            csrf: self.csrf.clone(),
        })
    }

    /// Refuses a form whose token is not this session's.
    pub(crate) fn check(&self, csrf: &str) -> Result<(), Page> {
        if same(csrf, &self.csrf) {
            Ok(())
        } else {
            Err(Page::message(
                StatusCode::FORBIDDEN,
                self.who(),
                "The form has expired",
                "The form did not carry this session's token (it was opened before you signed in \
                 again, or it came from another site). Nothing was changed: reload the page and \
                 try again.",
            ))
        }
    }
}

/// Compares two secrets in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_sign_in = || {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            Redirect::to(&format!("/sign-in?next={}", encode(next))).into_response()
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_sign_in());
        };
        match state.engine.session(token).await {
            Ok(Some(live)) => Ok(Signed {
                access: state.engine.access(live.principal),
                csrf: live.csrf_token,
            }),
            Ok(None) => Err(to_sign_in()),
            Err(e) => Err(Page::error(None, e).into_response()),
        }
    }
}

/// The client's address, when the server was started with connect info.
pub struct ClientAddress(Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// A query-string value, percent-encoded.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A page to answer with: rendered HTML and its status.
pub(crate) struct Page {
    status: StatusCode,
    html: Result<String, askama::Error>,
}

impl Page {
    pub(crate) fn ok(template: impl Template) -> Page {
        Page {
            status: StatusCode::OK,
            html: template.render(),
        }
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }

    fn message(status: StatusCode, who: Option<Who>, heading: &str, text: &str) -> Page {
        Page::ok(MessagePage {
            who,
            heading: heading.to_string(),
            text: text.to_string(),
        })
        .with_status(status)
    }

    /// An engine error as a page: not found (also for what another customer holds),
    /// forbidden, or what went wrong.
    pub(crate) fn error(who: Option<Who>, error: EngineError) -> Page {
        let text = error_text(&error);
        match error.kind() {
            ErrorKind::NotFound => Page::message(
                StatusCode::NOT_FOUND,
                who,
                "Not found",
                "There is nothing here, or nothing you may see.",
            ),
            ErrorKind::Forbidden => Page::message(StatusCode::FORBIDDEN, who, "Not allowed", &text),
            ErrorKind::Conflict => Page::message(StatusCode::CONFLICT, who, "Not done", &text),
            ErrorKind::Invalid => {
                Page::message(StatusCode::UNPROCESSABLE_ENTITY, who, "Not done", &text)
            }
            _ => {
                tracing::warn!(error = %text, "console page failed");
                Page::message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    who,
                    "Something went wrong",
                    &text,
                )
            }
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self.html {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "a console template did not render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered",
                )
                    .into_response()
            }
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    who: Option<Who>,
    heading: String,
    text: String,
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/console.css"),
    )
        .into_response()
}

async fn run_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/run.js"),
    )
        .into_response()
}

// Signing in and out.

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    who: Option<Who>,
    csrf: String,
    next: String,
    email: String,
    problem: Option<String>,
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

/// Only a path of this site is a place to go after signing in.
fn local(next: Option<&str>) -> String {
    match next {
        // No "//host", no backslash, and no whitespace or control character (browsers
        // drop tabs and newlines from URLs: "/\t/evil.example" would become "//evil.example").
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n
                    .chars()
                    .any(|c| c == '\\' || c.is_whitespace() || c.is_control()) =>
        {
            n.into()
        }
        _ => "/".into(),
    }
}

fn cookie_header(state: &WebState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The sign-in form, with a token of its own in a cookie and the form (a sign-in cannot be
/// forged from another site either).
async fn sign_in_page(State(state): State<AppState>, Query(q): Query<Next>) -> Response {
    sign_in_form(
        &state,
        local(q.next.as_deref()),
        String::new(),
        None,
        StatusCode::OK,
    )
}

fn sign_in_form(
    state: &WebState,
    next: String,
    email: String,
    problem: Option<String>,
    status: StatusCode,
) -> Response {
    let csrf = usersync_engine::random_token();
    let page = Page::ok(SignInPage {
        who: None,
        csrf: csrf.clone(),
        next,
        email,
        problem,
    })
    .with_status(status);
    let mut response = page.into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(state, SIGN_IN_COOKIE, &csrf, 900),
    );
    response
}

#[derive(Deserialize)]
struct SignInForm {
    email: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = local(form.next.as_deref());
    let email = form.email.trim().to_lowercase();
    let again = |problem: String, status| {
        sign_in_form(&state, next.clone(), email.clone(), Some(problem), status)
    };
    if !cookie(&headers, SIGN_IN_COOKIE).is_some_and(|c| same(c, &form.csrf)) {
        return again(
            "The sign-in form expired. Sign in again.".into(),
            StatusCode::FORBIDDEN,
        );
    }
    // Failed sign-ins are limited per account and per client address (the engine
    // counts them in the database, for every process).
    let address = address.map(|a| a.to_string());
    match state
        .engine
        .sign_in(
            &email,
            &SecretString::new(form.password),
            address.as_deref(),
        )
        .await
    {
        Ok(session) => {
            let mut response = Redirect::to(&next).into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                cookie_header(
                    &state,
                    SESSION_COOKIE,
                    session.token.expose(),
                    usersync_engine::SESSION_TTL_SECS,
                ),
            );
            headers.append(
                header::SET_COOKIE,
                cookie_header(&state, SIGN_IN_COOKIE, "", 0),
            );
            response
        }
        Err(e) if e.kind() == ErrorKind::Unauthenticated => {
            again(error_text(&e), StatusCode::UNAUTHORIZED)
        }
        Err(e) if e.kind() == ErrorKind::Limited => {
            again(error_text(&e), StatusCode::TOO_MANY_REQUESTS)
        }
        Err(e) => Page::error(None, e).into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    signed: Signed,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = state.engine.sign_out(token).await
    {
        return Page::error(signed.who(), e).into_response();
    }
    let mut response = Redirect::to("/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(&state, SESSION_COOKIE, "", 0),
    );
    response
}

// Customers.

struct CustomerRow {
    id: i64,
    name: String,
    sources: usize,
    created: String,
}

struct AttentionRow {
    id: i64,
    customer_id: i64,
    customer: String,
    tenant: String,
    status: String,
    last_error: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    who: Option<Who>,
    csrf: String,
    customers: Vec<CustomerRow>,
    attention: Vec<AttentionRow>,
    may_add: bool,
    form_name: String,
    form_error: Option<String>,
}

async fn home(signed: Signed) -> Page {
    home_page(&signed, String::new(), None).await
}

async fn home_page(signed: &Signed, form_name: String, form_error: Option<String>) -> Page {
    let customers = match signed.access.customers().await {
        Ok(c) => c,
        Err(e) => return Page::error(signed.who(), e),
    };
    let mut rows = Vec::new();
    let mut attention = Vec::new();
    for c in customers {
        let sources = signed.access.sources(c.id).await.unwrap_or_default();
        for s in &sources {
            if let Some(status) = attention_of(s) {
                attention.push(AttentionRow {
                    id: s.id,
                    customer_id: c.id,
                    customer: c.name.clone(),
                    tenant: s.tenant_id.clone(),
                    status,
                    last_error: s.health.last_error.clone(),
                });
            }
        }
        rows.push(CustomerRow {
            id: c.id,
            name: c.name,
            sources: sources.len(),
            created: short_time(&c.created_at),
        });
    }
    let may_add = signed.access.principal().grant.administers();
    let status = if form_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Page::ok(HomePage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        customers: rows,
        attention,
        may_add,
        form_name,
        form_error,
    })
    .with_status(status)
}

/// Why a source needs someone to look at it, when it does.
fn attention_of(s: &usersync_store::SourceRecord) -> Option<String> {
    if let Some(why) = &s.health.attention {
        Some(format!("needs attention: {why}"))
    } else {
        s.health
            .hold_run_id
            .map(|run| format!("removals held (run {run})"))
    }
}

/// A field's value as a person reads it in a plan.
fn shown(value: &usersync_core::plan::FieldValue) -> String {
    use usersync_core::plan::FieldValue;
    match value {
        FieldValue::Null => "(none)".into(),
        FieldValue::Bool(b) => if *b { "yes" } else { "no" }.into(),
        FieldValue::Int(n) => n.to_string(),
        FieldValue::Text(t) => t.clone(),
        FieldValue::List(l) if l.is_empty() => "(none)".into(),
        FieldValue::List(l) => l.join(", "),
    }
}

fn short_time(rfc3339: &str) -> String {
    rfc3339
        .replace('T', " ")
        .trim_end_matches('Z')
        .chars()
        .take(16)
        .collect()
}

#[derive(Deserialize)]
struct NameForm {
    name: String,
    csrf: String,
}

async fn add_customer(signed: Signed, Form(form): Form<NameForm>) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    match signed.access.add_customer(&form.name).await {
        Ok(c) => Redirect::to(&format!("/customers/{}", c.id)).into_response(),
        Err(e) if matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Conflict) => {
            home_page(&signed, form.name, Some(error_text(&e)))
                .await
                .into_response()
        }
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

struct DomainRow {
    name: String,
    origin: String,
    reject_unlisted: bool,
}

struct RunLink {
    id: i64,
    kind: String,
    status: String,
    when: String,
}

struct SourceRow {
    id: i64,
    tenant: String,
    status: String,
    runs: Vec<RunLink>,
}

#[derive(Template)]
#[template(path = "customer.html")]
struct CustomerPage {
    who: Option<Who>,
    csrf: String,
    customer: usersync_store::Customer,
    domains: Vec<DomainRow>,
    sources: Vec<SourceRow>,
    may_change: bool,
    form_name: String,
    form_error: Option<String>,
}

async fn customer(signed: Signed, Path(id): Path<i64>) -> Page {
    customer_page(&signed, id, String::new(), None).await
}

async fn customer_page(
    signed: &Signed,
    id: i64,
    form_name: String,
    form_error: Option<String>,
) -> Page {
    let loaded = async {
        let customer = signed.access.customer(id).await?;
        let domains = signed.access.domains(id).await?;
        let mut sources = Vec::new();
        for s in signed.access.sources(id).await? {
            let runs = signed.access.runs(s.id, &[], 5).await?;
            sources.push(SourceRow {
                id: s.id,
                tenant: s.tenant_id.clone(),
                status: attention_of(&s).unwrap_or_else(|| "connected".into()),
                runs: runs.into_iter().map(run_link).collect(),
            });
        }
        Ok::<_, EngineError>((customer, domains, sources))
    };
    let (customer, domains, sources) = match loaded.await {
        Ok(l) => l,
        Err(e) => return Page::error(signed.who(), e),
    };
    let status = if form_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Page::ok(CustomerPage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        customer,
        domains: domains
            .into_iter()
            .map(|d| DomainRow {
                name: d.name.to_string(),
                origin: match d.origin {
                    usersync_store::DomainOrigin::Manual => "by hand".into(),
                    usersync_store::DomainOrigin::Source => "from the tenant".into(),
                },
                reject_unlisted: d.reject_unlisted,
            })
            .collect(),
        sources,
        may_change: signed.access.principal().grant.changes(),
        form_name,
        form_error,
    })
    .with_status(status)
}

async fn add_domain(signed: Signed, Path(id): Path<i64>, Form(form): Form<NameForm>) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    match signed.access.add_domain(id, &form.name).await {
        Ok(_) => Redirect::to(&format!("/customers/{id}")).into_response(),
        Err(e) if matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Conflict) => {
            customer_page(&signed, id, form.name, Some(error_text(&e)))
                .await
                .into_response()
        }
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

// A domain's "User Sync" tab.

struct SyncSource {
    id: i64,
    tenant: String,
    status: String,
    status_class: &'static str,
    auto_sync: bool,
    interval: String,
    next_run: Option<String>,
    runs: Vec<RunLink>,
}

#[derive(Template)]
#[template(path = "user_sync.html")]
struct UserSyncPage {
    who: Option<Who>,
    csrf: String,
    customer: usersync_store::Customer,
    domain: String,
    sources: Vec<SyncSource>,
    may_change: bool,
    back: String,
    message: Option<String>,
}

/// What the page after a change says was done: a code and the source it was done to,
/// never text from the URL (a link could make the console say anything).
#[derive(Deserialize, Default)]
struct Message {
    done: Option<String>,
    source: Option<i64>,
}

async fn user_sync(
    signed: Signed,
    Path((id, domain)): Path<(i64, String)>,
    Query(q): Query<Message>,
) -> Page {
    let loaded = async {
        let customer = signed.access.customer(id).await?;
        let domains = signed.access.domains(id).await?;
        let Some(domain) = domains
            .into_iter()
            .find(|d| d.name.as_str().eq_ignore_ascii_case(&domain))
        else {
            return Err(EngineError::Store(usersync_store::StoreError::NotFound {
                what: "domain",
                name: domain,
            }));
        };
        let mut sources = Vec::new();
        let mut message = None;
        for s in signed.access.sources(id).await? {
            let options = signed.access.source_options(s.id).await?;
            if q.done.as_deref() == Some("auto-sync") && q.source == Some(s.id) {
                message = Some(if options.auto_sync {
                    format!(
                        "Automatic User Sync is on: every {}.",
                        usersync_core::options::format_interval(options.interval_minutes)
                    )
                } else {
                    "Automatic User Sync is off.".to_string()
                });
            }
            let runs = signed.access.runs(s.id, &[], 5).await?;
            let attention = attention_of(&s);
            sources.push(SyncSource {
                id: s.id,
                tenant: s.tenant_id.clone(),
                status_class: if attention.is_some() {
                    "attention"
                } else {
                    "ok"
                },
                status: attention.unwrap_or_else(|| "Connected to Office 365".into()),
                auto_sync: options.auto_sync,
                interval: usersync_core::options::format_interval(options.interval_minutes),
                next_run: s.health.next_run_at.as_deref().map(short_time),
                runs: runs.into_iter().map(run_link).collect(),
            });
        }
        Ok::<_, EngineError>((customer, domain.name.to_string(), sources, message))
    };
    let (customer, domain, sources, message) = match loaded.await {
        Ok(l) => l,
        Err(e) => return Page::error(signed.who(), e),
    };
    let back = format!("/customers/{}/domains/{domain}/user-sync", customer.id);
    Page::ok(UserSyncPage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        customer,
        domain,
        sources,
        may_change: signed.access.principal().grant.changes(),
        back,
        message,
    })
}

fn run_link(r: usersync_store::RunRecord) -> RunLink {
    RunLink {
        id: r.id,
        kind: r.kind.to_string(),
        status: r.status.to_string(),
        when: short_time(&r.started_at),
    }
}

#[derive(Deserialize)]
struct SwitchForm {
    csrf: String,
    enabled: bool,
    back: Option<String>,
}

/// "Enable Automatic User Sync": the source's auto_sync option.
async fn auto_sync(signed: Signed, Path(id): Path<i64>, Form(form): Form<SwitchForm>) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    let setting = format!("auto_sync={}", form.enabled);
    match signed.access.set_source_options(id, &[setting]).await {
        Ok(_) => {
            let back = local(form.back.as_deref());
            let sep = if back.contains('?') { '&' } else { '?' };
            Redirect::to(&format!("{back}{sep}done=auto-sync&source={id}")).into_response()
        }
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

/// "Preview": read now, shown as the run's report (nothing written to the directory).
async fn preview(signed: Signed, Path(id): Path<i64>, Form(form): Form<CsrfForm>) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    match signed.access.preview(id).await {
        Ok(outcome) => Redirect::to(&format!("/runs/{}", outcome.run_id)).into_response(),
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

/// "Sync & Save": queued for the workers; the run's page follows it.
async fn sync(signed: Signed, Path(id): Path<i64>, Form(form): Form<CsrfForm>) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    match signed.access.run_now(id).await {
        Ok(
            usersync_store::Enqueued::Queued(run)
            | usersync_store::Enqueued::Folded(run)
            | usersync_store::Enqueued::Running(run),
        ) => Redirect::to(&format!("/runs/{run}")).into_response(),
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

// Adding an Office 365 source: "Connect Office 365", Microsoft's consent, and back.

/// Where Microsoft sends the administrator back.
pub const CALLBACK_PATH: &str = "/connect/office365/callback";

#[derive(Template)]
#[template(path = "connect.html")]
struct ConnectPage {
    who: Option<Who>,
    csrf: String,
    customer: usersync_store::Customer,
    redirect_uri: String,
    problem: Option<String>,
    right_url: Option<String>,
}

/// The console's public base URL, and the host this request came to.
fn public_base(state: &WebState, headers: &HeaderMap) -> (String, Option<String>) {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let base = match &state.public_url {
        Some(url) => url.as_str().trim_end_matches('/').to_string(),
        None => format!("http://{}", host.as_deref().unwrap_or("127.0.0.1:8080")),
    };
    (base, host)
}

async fn add_source(
    State(state): State<AppState>,
    headers: HeaderMap,
    signed: Signed,
    Path(id): Path<i64>,
) -> Response {
    let customer = match signed.access.customer(id).await {
        Ok(c) => c,
        Err(e) => return Page::error(signed.who(), e).into_response(),
    };
    if let Err(e) = signed.access.may_change() {
        return Page::error(signed.who(), e).into_response();
    }
    let (base, host) = public_base(&state, &headers);
    let redirect_uri = format!("{base}{CALLBACK_PATH}");
    let mut problem = None;
    let mut right_url = None;
    if state.office365.is_none() {
        problem = Some(
            "This console has no Microsoft 365 app registration to connect tenants with: start \
             `usersync serve` with USERSYNC_M365_CLIENT_ID and USERSYNC_M365_CLIENT_SECRET (the \
             provider's multi-tenant app, with this console's callback as a redirect URI)."
                .to_string(),
        );
    } else if let (Some(url), Some(host)) = (&state.public_url, &host) {
        let expected = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or("")),
            None => url.host_str().unwrap_or("").to_string(),
        };
        if !expected.eq_ignore_ascii_case(host) {
            problem = Some(format!(
                "This console is opened as {host}, but it is set up to be reached at {base} \
                 (--public-url), and Microsoft sends the administrator back there. Open it \
                 there to connect Office 365."
            ));
            right_url = Some(format!("{base}/customers/{id}/sources/new"));
        }
    }
    let origin = state
        .office365
        .as_ref()
        .and_then(|app| url::Url::parse(&app.authority_url).ok())
        .map(|u| u.origin().ascii_serialization());
    let mut response = Page::ok(ConnectPage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        customer,
        redirect_uri,
        problem,
        right_url,
    })
    .into_response();
    // The form's answer leads on to Microsoft: the policy lets it go there.
    if let Some(origin) = origin
        && let Ok(value) = HeaderValue::from_str(&crate::csp_with_form_target(&origin))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

#[derive(Deserialize)]
struct ConnectForm {
    csrf: String,
    tenant: Option<String>,
    /// `application` (admin consent, the default) or `delegated` (the administrator's
    /// sign-in, kept).
    mode: Option<String>,
}

/// "Connect Office 365": off to Microsoft's consent page.
async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    signed: Signed,
    Path(id): Path<i64>,
    Form(form): Form<ConnectForm>,
) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    let Some(app) = &state.office365 else {
        return Redirect::to(&format!("/customers/{id}/sources/new")).into_response();
    };
    let (base, _) = public_base(&state, &headers);
    let redirect_uri = format!("{base}{CALLBACK_PATH}");
    let access = &signed.access;
    let tenant = form.tenant.as_deref();
    let started = match form.mode.as_deref() {
        None | Some("application") => {
            access
                .start_consent(app, id, tenant, &redirect_uri, &signed.csrf)
                .await
        }
        Some("delegated") => {
            access
                .start_delegated_sign_in(app, id, tenant, &redirect_uri, &signed.csrf)
                .await
        }
        Some(other) => Err(EngineError::Config {
            field: "mode".into(),
            problem: format!("'{other}' is not a way to sign in; choose application or delegated"),
        }),
    };
    match started {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

struct CheckRow {
    permission: String,
    needed_for: String,
    status: String,
    required: bool,
    detail: Option<String>,
}

#[derive(Template)]
#[template(path = "connected.html")]
struct ConnectedPage {
    who: Option<Who>,
    csrf: String,
    customer: String,
    customer_id: i64,
    source_id: i64,
    tenant_id: String,
    tenant_name: String,
    /// It signs in as the administrator who connected it.
    delegated: bool,
    ready: bool,
    checks: Vec<CheckRow>,
    may_change: bool,
}

fn connected_page(
    signed: &Signed,
    record: &usersync_store::SourceRecord,
    report: usersync_engine::ConnectionReport,
) -> Page {
    Page::ok(ConnectedPage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        customer: record.customer.clone(),
        customer_id: record.customer_id,
        source_id: record.id,
        tenant_id: record.tenant_id.clone(),
        tenant_name: report
            .tenant_name
            .clone()
            .unwrap_or_else(|| "(its name could not be read)".into()),
        delegated: record.settings["delegated"] == true,
        ready: report.is_ready(),
        checks: report
            .checks
            .into_iter()
            .map(|c| CheckRow {
                permission: c.permission,
                needed_for: c.needed_for,
                status: c.status.as_str().to_string(),
                required: c.required,
                detail: c.detail,
            })
            .collect(),
        may_change: signed.access.principal().grant.changes(),
    })
}

/// Microsoft's answer: connected (with each permission checked), or why not.
async fn connected(
    State(state): State<AppState>,
    signed: Signed,
    Query(answer): Query<usersync_engine::ConsentAnswer>,
) -> Page {
    let Some(app) = &state.office365 else {
        return Page::message(
            StatusCode::NOT_FOUND,
            signed.who(),
            "Not found",
            "This console connects no tenants (no app registration is configured).",
        );
    };
    match signed
        .access
        .finish_consent(app, &answer, &signed.csrf)
        .await
    {
        Ok((record, report)) => connected_page(&signed, &record, report),
        Err(e) if matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Conflict) => Page::message(
            if e.kind() == ErrorKind::Conflict {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            },
            signed.who(),
            "Office 365 was not connected",
            &error_text(&e),
        ),
        Err(e) => Page::error(signed.who(), e),
    }
}

/// "Test connection".
async fn test_connection(signed: Signed, Path(id): Path<i64>, Form(form): Form<CsrfForm>) -> Page {
    if let Err(page) = signed.check(&form.csrf) {
        return page;
    }
    let tested = async {
        let record = signed.access.source(id).await?;
        let report = signed.access.test_source(id).await?;
        Ok::<_, EngineError>((record, report))
    };
    match tested.await {
        Ok((record, report)) => connected_page(&signed, &record, report),
        Err(e) => Page::error(signed.who(), e),
    }
}

// Users.

struct UserRow {
    address: String,
    name: String,
    kind: String,
    group: String,
    status: String,
    removed: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    who: Option<Who>,
    csrf: String,
    customer: usersync_store::Customer,
    users: Vec<UserRow>,
    types: Vec<String>,
    selected_type: String,
    status: String,
    search: String,
    group: String,
    next: Option<String>,
    message: Option<String>,
    may_change: bool,
}

#[derive(Deserialize, Default)]
struct UsersQuery {
    search: Option<String>,
    #[serde(rename = "type")]
    mailbox_type: Option<String>,
    status: Option<String>,
    group: Option<String>,
    after: Option<String>,
    restored: Option<String>,
}

const USERS_PER_PAGE: i64 = 50;

async fn users(signed: Signed, Path(id): Path<i64>, Query(q): Query<UsersQuery>) -> Page {
    let customer = match signed.access.customer(id).await {
        Ok(c) => c,
        Err(e) => return Page::error(signed.who(), e),
    };
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let status = nonempty(&q.status).unwrap_or_else(|| "active".into());
    let query = UserQuery {
        search: nonempty(&q.search),
        status: match status.as_str() {
            "any" => None,
            s => s.parse::<UserStatus>().ok().or(Some(UserStatus::Active)),
        },
        mailbox_type: nonempty(&q.mailbox_type).and_then(|t| t.parse::<MailboxType>().ok()),
        group: nonempty(&q.group),
        after: nonempty(&q.after),
        limit: USERS_PER_PAGE,
    };
    let (users, more) = match signed.access.users(id, &query).await {
        Ok(page) => page,
        Err(e) => return Page::error(signed.who(), e),
    };
    let next = more.then(|| {
        let last = users
            .last()
            .map(|u| u.address.to_string())
            .unwrap_or_default();
        format!(
            "/customers/{id}/users?search={}&type={}&status={}&group={}&after={}",
            encode(query.search.as_deref().unwrap_or("")),
            query.mailbox_type.map(|t| t.as_str()).unwrap_or(""),
            encode(&status),
            encode(query.group.as_deref().unwrap_or("")),
            encode(&last)
        )
    });
    let shown_active: Vec<String> = users
        .iter()
        .filter(|u| u.status == UserStatus::Active)
        .map(|u| u.address.to_string())
        .collect();
    Page::ok(UsersPage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        customer,
        users: users
            .into_iter()
            .map(|u| UserRow {
                address: u.address.to_string(),
                name: u.display_name.clone(),
                kind: u.mailbox_type.to_string(),
                group: u.group.clone(),
                status: u.status.to_string(),
                removed: u.status == UserStatus::Removed,
            })
            .collect(),
        types: MailboxType::ALL
            .iter()
            .map(|t| t.as_str().to_string())
            .collect(),
        selected_type: query
            .mailbox_type
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        status,
        search: query.search.unwrap_or_default(),
        group: query.group.unwrap_or_default(),
        next,
        // Said only of a user the page shows active: never text from the URL alone.
        message: q
            .restored
            .filter(|a| {
                shown_active
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(a.trim()))
            })
            .map(|a| format!("{} is active again, kept by hand from now on.", a.trim())),
        may_change: signed.access.principal().grant.changes(),
    })
}

#[derive(Deserialize)]
struct RestoreForm {
    address: String,
    csrf: String,
}

async fn restore_user(
    signed: Signed,
    Path(id): Path<i64>,
    Form(form): Form<RestoreForm>,
) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    match signed.access.restore_user(id, &form.address).await {
        Ok(u) => Redirect::to(&format!(
            "/customers/{id}/users?search={}&status=any&restored={}",
            encode(u.address.as_str()),
            encode(u.address.as_str())
        ))
        .into_response(),
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

// Runs.

struct Section {
    title: &'static str,
    rows: Vec<(String, String)>,
}

struct RunView {
    id: i64,
    customer: String,
    source_id: i64,
    kind: String,
    status: String,
    reason: String,
    requested_by: String,
    started_at: String,
    finished_at: String,
    added: i64,
    updated: i64,
    removed: i64,
    held: i64,
    skipped: i64,
    error: Option<String>,
    confirmable: bool,
    /// Queued or running: the page follows it.
    live: bool,
    sections: Vec<Section>,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    who: Option<Who>,
    csrf: String,
    run: RunView,
    may_change: bool,
}

async fn run(signed: Signed, Path(id): Path<i64>) -> Page {
    let r = match signed.access.run(id).await {
        Ok(r) => r,
        Err(e) => return Page::error(signed.who(), e),
    };
    let mut sections = Vec::new();
    if let Some(plan) = &r.plan {
        // An added user also says which filter rule (or the default) placed it.
        let user = |u: &usersync_core::DirectoryUser| {
            let placed = u
                .placed_by
                .as_deref()
                .map(|rule| format!(" · placed by {rule}"))
                .unwrap_or_default();
            (
                u.address.to_string(),
                format!(
                    "{} · {} · {}{placed}",
                    u.display_name, u.mailbox_type, u.group
                ),
            )
        };
        sections.push(Section {
            title: "Added",
            rows: plan.add.iter().map(user).collect(),
        });
        sections.push(Section {
            title: "Updated",
            rows: plan
                .update
                .iter()
                .map(|u| {
                    let fields: Vec<String> = u
                        .changes
                        .iter()
                        .map(|(field, change)| {
                            format!("{field}: {} → {}", shown(&change.0), shown(&change.1))
                        })
                        .collect();
                    (u.address.to_string(), fields.join("; "))
                })
                .collect(),
        });
        sections.push(Section {
            title: "Removed",
            rows: plan.remove.iter().map(user).collect(),
        });
        sections.push(Section {
            title: "Held removals",
            rows: plan.held.iter().map(user).collect(),
        });
        sections.push(Section {
            title: "Skipped",
            rows: plan
                .skip
                .iter()
                .map(|s| (s.name.clone(), s.reason.clone()))
                .collect(),
        });
        sections.retain(|s| !s.rows.is_empty());
    }
    let confirmable = r.status == RunStatus::Held && signed.access.principal().grant.changes();
    Page::ok(RunPage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        may_change: signed.access.principal().grant.changes(),
        run: RunView {
            id: r.id,
            customer: r.customer,
            source_id: r.source_id,
            kind: r.kind.to_string(),
            status: r.status.to_string(),
            reason: r.reason,
            requested_by: r.requested_by.unwrap_or_else(|| "—".into()),
            started_at: short_time(&r.started_at),
            finished_at: r
                .finished_at
                .as_deref()
                .map(short_time)
                .unwrap_or_else(|| "—".into()),
            added: r.added,
            updated: r.updated,
            removed: r.removed,
            held: r.held,
            skipped: r.skipped,
            error: r.error,
            confirmable,
            live: !r.status.is_final(),
            sections,
        },
    })
}

/// "Cancel this run": a queued one never runs, a running one applies nothing more.
async fn cancel_run(signed: Signed, Path(id): Path<i64>, Form(form): Form<CsrfForm>) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    match signed.access.cancel(id).await {
        Ok(_) => Redirect::to(&format!("/runs/{id}")).into_response(),
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

async fn confirm(signed: Signed, Path(id): Path<i64>, Form(form): Form<CsrfForm>) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    match signed.access.confirm(id).await {
        Ok(outcome) => Redirect::to(&format!("/runs/{}", outcome.run_id)).into_response(),
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

struct HistoryRow {
    id: i64,
    kind: String,
    status: String,
    reason: String,
    started: String,
    added: i64,
    updated: i64,
    removed: i64,
    held: i64,
    error: String,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct HistoryPage {
    who: Option<Who>,
    source_id: i64,
    customer: String,
    customer_id: i64,
    runs: Vec<HistoryRow>,
}

/// A source's runs, newest first, each with its state.
async fn run_history(signed: Signed, Path(id): Path<i64>) -> Page {
    let loaded = async {
        let record = signed.access.source(id).await?;
        let runs = signed.access.runs(id, &[], 200).await?;
        Ok::<_, EngineError>((record, runs))
    };
    match loaded.await {
        Ok((record, runs)) => Page::ok(HistoryPage {
            who: signed.who(),
            source_id: id,
            customer: record.customer,
            customer_id: record.customer_id,
            runs: runs
                .into_iter()
                .map(|r| HistoryRow {
                    id: r.id,
                    kind: r.kind.to_string(),
                    status: r.status.to_string(),
                    reason: r.reason,
                    started: short_time(&r.started_at),
                    added: r.added,
                    updated: r.updated,
                    removed: r.removed,
                    held: r.held,
                    error: r.error.unwrap_or_default(),
                })
                .collect(),
        }),
        Err(e) => Page::error(signed.who(), e),
    }
}

#[derive(serde::Serialize)]
struct Progress {
    status: String,
    #[serde(rename = "final")]
    is_final: bool,
    added: i64,
    updated: i64,
    removed: i64,
    held: i64,
    /// Phase and counts of a run executing in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<usersync_engine::LiveProgress>,
}

/// Where a run stands, for its page's script.
async fn run_progress(signed: Signed, Path(id): Path<i64>) -> Response {
    match signed.access.run(id).await {
        Ok(r) => axum::Json(Progress {
            status: r.status.to_string(),
            is_final: r.status.is_final(),
            added: r.added,
            updated: r.updated,
            removed: r.removed,
            held: r.held,
            live: signed.access.live_progress(id).await.ok().flatten(),
        })
        .into_response(),
        Err(e) => crate::ApiError::from(e).into_response(),
    }
}

// The audit log.

struct AuditRow {
    at: String,
    actor: String,
    customer: String,
    action: String,
    object: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    who: Option<Who>,
    entries: Vec<AuditRow>,
}

#[derive(Deserialize)]
struct AuditQueryParams {
    customer_id: Option<i64>,
}

async fn audit(signed: Signed, Query(q): Query<AuditQueryParams>) -> Page {
    match signed.access.audit(q.customer_id, None, 200).await {
        Ok(entries) => Page::ok(AuditPage {
            who: signed.who(),
            entries: entries
                .into_iter()
                .map(|e| AuditRow {
                    at: short_time(&e.at),
                    actor: e.actor,
                    customer: e.customer.unwrap_or_default(),
                    action: e.action,
                    object: e.object,
                })
                .collect(),
        }),
        Err(e) => Page::error(signed.who(), e),
    }
}

// API tokens.

struct TokenRow {
    id: i64,
    name: String,
    role: String,
    customer: String,
    created_by: String,
    last_used: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    who: Option<Who>,
    csrf: String,
    tokens: Vec<TokenRow>,
    roles: Vec<&'static str>,
    customers: Vec<(i64, String)>,
    sees_all: bool,
    may_change: bool,
    made: Option<(String, String)>,
    problem: Option<String>,
}

async fn tokens_page(
    signed: &Signed,
    made: Option<(String, String)>,
    problem: Option<String>,
) -> Page {
    let loaded = async {
        let tokens = signed.access.tokens().await?;
        let customers = signed.access.customers().await?;
        Ok::<_, EngineError>((tokens, customers))
    };
    let (tokens, customers) = match loaded.await {
        Ok(l) => l,
        Err(e) => return Page::error(signed.who(), e),
    };
    let grant = signed.access.principal().grant;
    // Roles this principal may hand out (a token reaches no further than its maker).
    let roles: Vec<&'static str> = usersync_core::Role::ALL
        .iter()
        .filter(|r| match grant.role {
            usersync_core::Role::ProviderAdmin => true,
            usersync_core::Role::CustomerAdmin => **r != usersync_core::Role::ProviderAdmin,
            usersync_core::Role::ReadOnly => false,
        })
        .map(|r| r.as_str())
        .collect();
    let status = if problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Page::ok(TokensPage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        tokens: tokens
            .into_iter()
            .map(|t| TokenRow {
                id: t.id,
                name: t.name,
                role: t.role.to_string(),
                customer: t.customer.unwrap_or_else(|| "every customer".into()),
                created_by: t.created_by,
                last_used: t
                    .last_used_at
                    .as_deref()
                    .map(short_time)
                    .unwrap_or_else(|| "never".into()),
                revoked: t.revoked_at.is_some(),
            })
            .collect(),
        roles,
        customers: customers.into_iter().map(|c| (c.id, c.name)).collect(),
        sees_all: grant.sees_all(),
        may_change: grant.changes(),
        made,
        problem,
    })
    .with_status(status)
}

async fn tokens(signed: Signed) -> Page {
    tokens_page(&signed, None, None).await
}

#[derive(Deserialize)]
struct TokenForm {
    csrf: String,
    name: String,
    role: String,
    customer_id: Option<String>,
}

async fn make_token(signed: Signed, Form(form): Form<TokenForm>) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    let role = match form.role.parse::<usersync_core::Role>() {
        Ok(r) => r,
        Err(e) => {
            return tokens_page(&signed, None, Some(e.to_string()))
                .await
                .into_response();
        }
    };
    let customer = form
        .customer_id
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|c| c.parse::<i64>().ok());
    match signed.access.create_token(&form.name, role, customer).await {
        Ok(made) => {
            // Shown this once, on this answer only (never cached: see the headers).
            tokens_page(
                &signed,
                Some((made.record.name.clone(), made.token.expose().to_string())),
                None,
            )
            .await
            .into_response()
        }
        Err(e) if matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Forbidden) => {
            tokens_page(&signed, None, Some(error_text(&e)))
                .await
                .into_response()
        }
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

async fn revoke_token(signed: Signed, Path(id): Path<i64>, Form(form): Form<CsrfForm>) -> Response {
    if let Err(page) = signed.check(&form.csrf) {
        return page.into_response();
    }
    match signed.access.revoke_token(id).await {
        Ok(_) => Redirect::to("/tokens").into_response(),
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::local;

    #[test]
    fn only_a_path_of_this_site_is_a_place_to_go_next() {
        assert_eq!(local(Some("/customers/3?x=1")), "/customers/3?x=1");
        for elsewhere in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "https://evil.example",
            "/ /evil.example",
        ] {
            assert_eq!(local(Some(elsewhere)), "/", "{elsewhere:?}");
        }
        assert_eq!(local(None), "/");
    }
}
