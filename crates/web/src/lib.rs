//! usersync-web: the REST API (`/api/v1`) over the application layer. Every handler takes
//! an [`usersync_engine::Access`] (who asks, checked in one place) and calls one of its
//! operations; no product rule lives here, only HTTP: paths, JSON, status codes, paging.
//!
//! Architecture invariant: a handler never reaches the engine or the store but through
//! `Access`, so a customer admin can reach nothing of another customer's, in the API as in
//! the console.

mod api;
mod auth;
mod console;
mod error;
mod openapi;
mod paging;
mod wizard;

use std::sync::Arc;

use usersync_engine::Engine;

pub use error::ApiError;

/// How the console and the API are served.
#[derive(Debug, Clone, Default)]
pub struct WebOptions {
    /// Cookies only over https: on when the public URL is https.
    pub secure_cookies: bool,
    /// Where the console is reached from outside (Microsoft sends administrators back
    /// there after consent); without it, the host each request names.
    pub public_url: Option<url::Url>,
    /// The provider's app registration that "Connect Office 365" uses; without it the
    /// console explains how to configure one.
    pub office365: Option<usersync_engine::Office365App>,
}

/// What every request handler shares.
#[derive(Debug)]
pub struct WebState {
    pub engine: Engine,
    pub(crate) secure_cookies: bool,
    pub(crate) public_url: Option<url::Url>,
    pub(crate) office365: Option<usersync_engine::Office365App>,
}

/// The console and the REST API, to be merged into the service's router. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so that failed sign-ins are
/// also limited per client address.
pub fn router(engine: Engine, options: WebOptions) -> axum::Router {
    let state = Arc::new(WebState {
        engine,
        secure_cookies: options.secure_cookies,
        public_url: options.public_url,
        office365: options.office365,
    });
    axum::Router::new()
        .merge(console::routes())
        .nest("/api/v1", api::routes())
        .with_state(state)
        .layer(axum::middleware::map_response(security_headers))
}

/// The Content-Security-Policy of every page; `$extra` joins `form-action` (the one page
/// whose form leads to Microsoft's consent page adds the identity platform's origin).
macro_rules! const_format_csp {
    ($extra:expr) => {
        concat!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; ",
            "form-action 'self'",
            $extra,
            "; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
        )
    };
}

/// The policy with `origin` allowed as a form's destination.
pub(crate) fn csp_with_form_target(origin: &str) -> String {
    const_format_csp!("").replacen(
        "form-action 'self'",
        &format!("form-action 'self' {origin}"),
        1,
    )
}

/// Headers every answer carries: no script or style from elsewhere, no inline script,
/// never framed, no type sniffing, no referrer to other sites.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = response.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(const_format_csp!("")),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
