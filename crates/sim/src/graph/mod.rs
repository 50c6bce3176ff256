//! Microsoft Graph v1.0 routes: users, groups, delta queries, members,
//! manager, mailbox settings, domains, organization, subscribed SKUs; query
//! options ($select, $top, $skiptoken, $filter subset, $count, $expand=manager)
//! and Graph's error shapes. Requests go through `serve`, which applies
//! faults, authentication (the token names the tenant to answer from),
//! throttling and statistics; `$batch` sub-requests use the same path.

mod delta;
mod filter;
mod groups;
mod paging;
mod query;
mod resources;
mod routes;
mod users;

use delta::*;
use filter::*;
use groups::*;
use paging::*;
use query::*;
use resources::*;
use routes::*;
use users::*;

use crate::auth::TokenProblem;
use crate::directory::{Change, Directory};
use crate::generate::MemberRef;
use crate::knobs::FaultAction;
use crate::model::{
    GP, SimGroup, SimUser, UP, USER_DEFAULT, group_default, group_prop, time_zone_for, user_prop,
    write_group_prop, write_user_prop,
};
use crate::server::Shared;
use crate::tenant::Tenant;
use crate::util::{
    Obj, b64url, b64url_decode, iso_time, new_guid, parse_query, unix_now, url_decode,
};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLockReadGuard};

pub(crate) const JSON_CT: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

pub(crate) const USER_READ: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "User.ReadBasic.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
pub(crate) const GROUP_READ: &[&str] = &[
    "Group.Read.All",
    "Group.ReadWrite.All",
    "GroupMember.Read.All",
    "GroupMember.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const DOMAIN_READ: &[&str] = &[
    "Domain.Read.All",
    "Domain.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const ORG_READ: &[&str] = &[
    "Organization.Read.All",
    "Organization.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const SKU_READ: &[&str] = &[
    "Organization.Read.All",
    "Organization.ReadWrite.All",
    "LicenseAssignment.Read.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const MAILBOX_READ: &[&str] = &["MailboxSettings.Read", "MailboxSettings.ReadWrite"];

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;

/// One Graph request, from HTTP or from a `$batch` entry.
pub(crate) struct GReq<'a> {
    pub method: &'a str,
    /// Full path, starting with "/v1.0".
    pub path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    pub base: &'a str,
    pub request_id: String,
    pub client_request_id: String,
}

/// A Graph response before it becomes HTTP (or a `$batch` entry).
pub(crate) struct GResp {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub content_type: &'static str,
    pub body: String,
}

impl GResp {
    pub(crate) fn json(body: String) -> GResp {
        GResp {
            status: 200,
            headers: vec![],
            content_type: JSON_CT,
            body,
        }
    }

    pub(crate) fn into_response(self, req: &GReq<'_>) -> Response {
        let mut resp = Response::new(Body::from(self.body));
        *resp.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let h = resp.headers_mut();
        let mut set = |k: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        };
        set("content-type", self.content_type);
        set("cache-control", "no-cache");
        set("request-id", &req.request_id);
        set("client-request-id", &req.client_request_id);
        set("odata-version", "4.0");
        set(
            "x-ms-ags-diagnostic",
            r#"{"ServerInfo":{"DataCenter":"West Europe","Slice":"E","Ring":"5","ScaleUnit":"001","RoleInstance":"SIM-0001"}}"#,
        );
        set("strict-transport-security", "max-age=31536000");
        if self.status == 401 {
            set(
                "www-authenticate",
                r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000""#,
            );
        }
        for (k, v) in &self.headers {
            set(k, v);
        }
        resp
    }
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {...}}}`.
pub(crate) fn error(req: &GReq<'_>, status: u16, code: &str, message: &str) -> GResp {
    let mut body = String::with_capacity(256);
    body.push_str("{\"error\":");
    let mut o = Obj::start(&mut body);
    o.str("code", code);
    o.str("message", message);
    {
        let buf = o.nested("innerError");
        let mut i = Obj::start(buf);
        i.str("date", &iso_time(unix_now(), ""));
        i.str("request-id", &req.request_id);
        i.str("client-request-id", &req.client_request_id);
        i.end();
    }
    o.end();
    body.push('}');
    GResp {
        status,
        headers: vec![],
        content_type: JSON_CT,
        body,
    }
}

fn not_found(req: &GReq<'_>, what: &str) -> GResp {
    error(
        req,
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn bad_request(req: &GReq<'_>, message: &str) -> GResp {
    error(req, 400, "Request_BadRequest", message)
}

fn unsupported(req: &GReq<'_>) -> GResp {
    error(req, 400, "Request_UnsupportedQuery", "Unsupported Query.")
}

fn denied(req: &GReq<'_>) -> GResp {
    error(
        req,
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

pub(crate) fn throttled(req: &GReq<'_>, retry_after: u64) -> GResp {
    let mut r = error(req, 429, "TooManyRequests", "Too many requests");
    r.headers.push(("retry-after", retry_after.to_string()));
    r
}

fn fault_response(req: &GReq<'_>, status: u16, retry_after: Option<u64>) -> GResp {
    let (code, msg) = match status {
        400 => ("BadRequest", "Bad request"),
        401 => (
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        ),
        403 => (
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ),
        404 => ("Request_ResourceNotFound", "Resource not found."),
        429 => ("TooManyRequests", "Too many requests"),
        500 => ("InternalServerError", "Internal server error"),
        502 => ("BadGateway", "Bad gateway"),
        503 => ("ServiceUnavailable", "Service Unavailable"),
        504 => ("GatewayTimeout", "Gateway timeout"),
        _ => ("UnknownError", "An unknown error occurred."),
    };
    let mut r = error(req, status, code, msg);
    if let Some(s) = retry_after {
        r.headers.push(("retry-after", s.to_string()));
    }
    r
}

/// Endpoint kind for statistics.
pub(crate) fn classify(path: &str) -> String {
    let segs: Vec<&str> = path
        .trim_start_matches("/v1.0")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let is = |i: usize, s: &str| segs.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
    let delta = |i: usize| segs.get(i).is_some_and(|x| is_delta(x));
    match segs.first().map(|s| s.to_ascii_lowercase()) {
        Some(r) if r == "users" || r == "groups" => {
            if segs.len() == 1 {
                r
            } else if delta(1) {
                format!("{r}.delta")
            } else if segs.len() == 2 {
                if is(1, "$count") {
                    format!("{r}.count")
                } else {
                    format!("{r}.get")
                }
            } else {
                let mut sub = segs[2].to_string();
                if let Some(c) = sub.get(..1) {
                    let c = c.to_ascii_lowercase();
                    sub.replace_range(..1, &c);
                }
                format!("{r}.{sub}")
            }
        }
        Some(r) => r,
        None => "root".into(),
    }
}

fn is_delta(seg: &str) -> bool {
    let s = seg.to_ascii_lowercase();
    matches!(
        s.as_str(),
        "delta" | "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()"
    )
}

fn path_decode(s: &str) -> String {
    url_decode(&s.replace('+', "%2B"))
}

fn header_str<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The axum fallback: every request that is not the token endpoint.
pub(crate) async fn entry(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.knobs.record(|s| s.http_requests += 1);
    let latency = shared.knobs.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let base = shared.base_for(header_str(&headers, "host"));
    let request_id = new_guid();
    let client_request_id = header_str(&headers, "client-request-id")
        .map(str::to_string)
        .unwrap_or_else(|| request_id.clone());
    let path = uri.path();
    let req = GReq {
        method: method.as_str(),
        path,
        raw_query: uri.query().unwrap_or(""),
        headers: &headers,
        base: &base,
        request_id,
        client_request_id,
    };
    let lower = path.to_ascii_lowercase();
    if lower != "/v1.0" && !lower.starts_with("/v1.0/") {
        let seg = path.split('/').find(|s| !s.is_empty()).unwrap_or("");
        let resp = if seg.eq_ignore_ascii_case("beta") {
            error(&req, 400, "BadRequest", "The simulator only serves v1.0.")
        } else {
            error(&req, 400, "BadRequest", &format!("Invalid version: {seg}"))
        };
        shared.knobs.record(|s| s.errors += 1);
        return resp.into_response(&req);
    }
    if lower == "/v1.0/$batch" {
        return crate::batch::handle(&shared, &req, &body).await;
    }
    if crate::subscriptions::is_subscriptions(path) {
        return subscriptions(&shared, &req, &body)
            .await
            .into_response(&req);
    }
    serve(&shared, &req, None).await.into_response(&req)
}

/// What a Graph route answers from: the tenant the bearer token was issued
/// for (Graph v1.0 paths name no tenant) and the simulator-wide settings.
struct Ctx<'a> {
    shared: &'a Shared,
    tenant: &'a Tenant,
}

impl Ctx<'_> {
    fn dir(&self) -> RwLockReadGuard<'_, Directory> {
        self.tenant.dir()
    }
    fn has_any(&self, perms: &[&str]) -> bool {
        self.tenant.grant.has_any(perms)
    }
    fn page_cap(&self) -> Option<usize> {
        self.shared.page_cap()
    }
}

/// Faults, authentication, throttling, statistics, then routing. `tenant` is
/// given for `$batch` sub-requests, whose envelope's token named it; otherwise
/// the request's own bearer token names it.
pub(crate) async fn serve(shared: &Shared, req: &GReq<'_>, tenant: Option<&Tenant>) -> GResp {
    let kind = classify(req.path);
    shared.knobs.record(|s| {
        s.graph_requests += 1;
        *s.by_endpoint.entry(kind).or_default() += 1;
    });
    let resp = serve_inner(shared, req, tenant).await;
    if resp.status >= 400 {
        shared.knobs.record(|s| s.errors += 1);
    }
    resp
}

async fn serve_inner(shared: &Shared, req: &GReq<'_>, tenant: Option<&Tenant>) -> GResp {
    match shared.knobs.fault(req.path, &url_decode(req.raw_query)) {
        Some(FaultAction::Status {
            status,
            retry_after_secs,
        }) => {
            shared.knobs.record(|s| s.faults += 1);
            return fault_response(req, status, retry_after_secs);
        }
        Some(FaultAction::Delay(d)) => {
            shared.knobs.record(|s| s.faults += 1);
            tokio::time::sleep(d).await;
        }
        None => {}
    }
    let tenant = match tenant {
        Some(t) => t,
        None => match shared.auth.check(header_str(req.headers, "authorization")) {
            Ok(index) => &shared.tenants[index],
            Err(p) => return unauthorized(req, &p),
        },
    };
    if let Some(retry) = shared.knobs.throttle() {
        shared.knobs.record(|s| s.throttled += 1);
        return throttled(req, retry);
    }
    route(&Ctx { shared, tenant }, req)
}

/// `/v1.0/subscriptions`: faults, authentication and throttling as for any request, then
/// the subscription routes (which need the body and call the notification URL).
async fn subscriptions(shared: &Shared, req: &GReq<'_>, body: &[u8]) -> GResp {
    shared.knobs.record(|s| s.graph_requests += 1);
    if let Some(FaultAction::Status {
        status,
        retry_after_secs,
    }) = shared.knobs.fault(req.path, &url_decode(req.raw_query))
    {
        shared.knobs.record(|s| s.faults += 1);
        return fault_response(req, status, retry_after_secs);
    }
    let index = match shared.auth.check(header_str(req.headers, "authorization")) {
        Ok(index) => index,
        Err(p) => return unauthorized(req, &p),
    };
    if let Some(retry) = shared.knobs.throttle() {
        shared.knobs.record(|s| s.throttled += 1);
        return throttled(req, retry);
    }
    crate::subscriptions::handle(shared, &shared.tenants[index], req, body).await
}

pub(crate) fn unauthorized(req: &GReq<'_>, p: &TokenProblem) -> GResp {
    error(req, 401, "InvalidAuthenticationToken", p.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_kinds() {
        assert_eq!(classify("/v1.0/users"), "users");
        assert_eq!(classify("/v1.0/users/delta"), "users.delta");
        assert_eq!(
            classify("/v1.0/users/x/mailboxSettings/userPurpose"),
            "users.mailboxSettings"
        );
        assert_eq!(classify("/v1.0/groups/x/members"), "groups.members");
        assert_eq!(classify("/v1.0/users/abc"), "users.get");
    }

    #[test]
    fn prefer_header() {
        let mut h = HeaderMap::new();
        h.insert(
            "prefer",
            HeaderValue::from_static("return=minimal, odata.maxpagesize=50"),
        );
        assert_eq!(prefer_max_page(&h), Some(50));
    }
}
