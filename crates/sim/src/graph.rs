//! Microsoft Graph v1.0 routes: users, groups, delta queries, members,
//! manager, mailbox settings, domains, organization, subscribed SKUs; query
//! options ($select, $top, $skiptoken, $filter subset, $count, $expand=manager)
//! and Graph's error shapes. Requests go through `serve`, which applies
//! faults, authentication (the token names the tenant to answer from),
//! throttling and statistics; `$batch` sub-requests use the same path.

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

const USER_READ: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "User.ReadBasic.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const GROUP_READ: &[&str] = &[
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
    fn json(body: String) -> GResp {
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

pub(crate) fn unauthorized(req: &GReq<'_>, p: &TokenProblem) -> GResp {
    error(req, 401, "InvalidAuthenticationToken", p.message())
}

// ---------------------------------------------------------------------------
// Query options

#[derive(Default)]
struct Query {
    select: Option<String>,
    top: Option<String>,
    skip: Option<String>,
    skiptoken: Option<String>,
    deltatoken: Option<String>,
    filter: Option<String>,
    count: Option<String>,
    orderby: Option<String>,
    search: Option<String>,
    expand: Option<String>,
}

impl Query {
    fn parse(req: &GReq<'_>) -> Result<Query, GResp> {
        let mut q = Query::default();
        for (k, v) in parse_query(req.raw_query) {
            let dollar = k.starts_with('$');
            let name = k.trim_start_matches('$').to_ascii_lowercase();
            let slot = match name.as_str() {
                "select" => &mut q.select,
                "top" => &mut q.top,
                "skip" => &mut q.skip,
                "skiptoken" => &mut q.skiptoken,
                "deltatoken" => &mut q.deltatoken,
                "filter" => &mut q.filter,
                "count" => &mut q.count,
                "orderby" => &mut q.orderby,
                "search" => &mut q.search,
                "expand" => &mut q.expand,
                "format" => continue,
                _ if dollar => {
                    return Err(error(
                        req,
                        400,
                        "BadRequest",
                        &format!(
                            "Query option '{k}' is not allowed. Make sure that the query option is supported by the service."
                        ),
                    ));
                }
                // Graph ignores custom (non-$) query parameters.
                _ => continue,
            };
            if slot.is_some() {
                return Err(error(
                    req,
                    400,
                    "BadRequest",
                    &format!(
                        "Query option '${name}' was specified more than once, but it must be specified at most once."
                    ),
                ));
            }
            *slot = Some(v);
        }
        Ok(q)
    }
}

fn page_size(req: &GReq<'_>, top: Option<&str>) -> Result<usize, GResp> {
    let Some(t) = top else {
        return Ok(DEFAULT_PAGE);
    };
    let n: i64 = t.trim().parse().map_err(|_| {
        error(
            req,
            400,
            "BadRequest",
            &format!("Invalid value '{t}' for query option '$top'."),
        )
    })?;
    if !(1..=MAX_PAGE as i64).contains(&n) {
        return Err(bad_request(
            req,
            &format!("Invalid page size specified: '{n}'. Must be between 1 and 999 inclusive."),
        ));
    }
    Ok(n as usize)
}

/// `Prefer: odata.maxpagesize=N`, if present.
fn prefer_max_page(h: &HeaderMap) -> Option<usize> {
    h.get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("odata.maxpagesize")
                .then(|| v.trim().trim_matches('"').parse::<usize>().ok())
                .flatten()
        })
        .map(|n| n.clamp(1, MAX_PAGE))
}

fn capped(cx: &Ctx<'_>, n: usize) -> usize {
    match cx.page_cap() {
        Some(c) => n.min(c.max(1)),
        None => n,
    }
}

fn split_select(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn user_select(req: &GReq<'_>, select: Option<&str>) -> Result<Vec<UP>, GResp> {
    let Some(s) = select else {
        return Ok(USER_DEFAULT.to_vec());
    };
    let mut out = Vec::new();
    for name in split_select(s) {
        let p = user_prop(name).ok_or_else(|| {
            bad_request(
                req,
                &format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.user'."
                ),
            )
        })?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Group `$select`; `members` is allowed (and reported) only for delta.
fn group_select(
    req: &GReq<'_>,
    select: Option<&str>,
    allow_members: bool,
) -> Result<(Vec<GP>, bool), GResp> {
    let Some(s) = select else {
        return Ok((group_default(), allow_members));
    };
    let mut out = Vec::new();
    let mut members = false;
    for name in split_select(s) {
        if allow_members && name.eq_ignore_ascii_case("members") {
            members = true;
            continue;
        }
        let p = group_prop(name).ok_or_else(|| {
            bad_request(
                req,
                &format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.group'."
                ),
            )
        })?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok((out, members))
}

/// User and group projections of a directoryObject `$select`.
type ObjectSelect = (Vec<UP>, Vec<GP>);

/// `$select` on directoryObject collections (members, memberOf): a name must
/// exist on user or group.
fn object_select(req: &GReq<'_>, select: Option<&str>) -> Result<Option<ObjectSelect>, GResp> {
    let Some(s) = select else {
        return Ok(None);
    };
    let (mut us, mut gs) = (Vec::new(), Vec::new());
    for name in split_select(s) {
        let u = user_prop(name);
        let g = group_prop(name);
        if u.is_none() && g.is_none() {
            return Err(bad_request(
                req,
                &format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.directoryObject'."
                ),
            ));
        }
        if let Some(u) = u.filter(|u| !us.contains(u)) {
            us.push(u);
        }
        if let Some(g) = g.filter(|g| !gs.contains(g)) {
            gs.push(g);
        }
    }
    us.sort();
    gs.sort();
    Ok(Some((us, gs)))
}

/// `$expand=manager` or `manager($select=...)`; returns the manager's projection.
fn parse_expand(req: &GReq<'_>, expand: Option<&str>) -> Result<Option<Vec<UP>>, GResp> {
    let Some(e) = expand.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let (nav, inner) = match e.split_once('(') {
        Some((n, rest)) => (n.trim(), Some(rest.trim_end_matches(')'))),
        None => (e, None),
    };
    if !nav.eq_ignore_ascii_case("manager") {
        return Err(bad_request(
            req,
            &format!(
                "Could not find a navigation property named '{nav}' on type 'microsoft.graph.user'."
            ),
        ));
    }
    let select = inner.and_then(|i| {
        i.split(';').find_map(|o| {
            let (k, v) = o.split_once('=')?;
            k.trim()
                .trim_start_matches('$')
                .eq_ignore_ascii_case("select")
                .then_some(v)
        })
    });
    let mut props = user_select(req, select)?;
    if !props.contains(&UP::Id) {
        props.insert(0, UP::Id);
    }
    Ok(Some(props))
}

// ---------------------------------------------------------------------------
// Paging state carried in $skiptoken / $deltatoken

#[derive(Serialize, Deserialize, Default, Clone)]
struct PageState {
    /// Tenant fingerprint, so a token from another simulator is refused.
    t: u32,
    /// Resource the token belongs to.
    r: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    /// Page size.
    n: usize,
    /// Position: an ordinal, an offset or a change sequence.
    c: u64,
    /// Delta: baseline sequence of the round.
    #[serde(default)]
    ds: u64,
    /// Delta: last sequence included in the round.
    #[serde(default)]
    du: u64,
    /// Delta: this round is the initial full enumeration.
    #[serde(default)]
    di: bool,
}

fn fingerprint(cx: &Ctx<'_>) -> u32 {
    (crate::util::hash_lower(&cx.tenant.bp.tenant_id) & 0xffff_ffff) as u32
}

impl PageState {
    fn encode(&self) -> String {
        b64url(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
    fn decode(cx: &Ctx<'_>, req: &GReq<'_>, token: &str, res: &str) -> Result<PageState, GResp> {
        let st: Option<PageState> =
            b64url_decode(token.trim()).and_then(|b| serde_json::from_slice(&b).ok());
        match st {
            Some(st) if st.t == fingerprint(cx) && st.r == res => Ok(st),
            _ => Err(bad_request(
                req,
                "The specified page token value has expired or is invalid.",
            )),
        }
    }
}

fn context(req: &GReq<'_>, what: &str) -> String {
    format!("{}/v1.0/$metadata#{what}", req.base)
}

fn context_with_select(req: &GReq<'_>, set: &str, select: Option<&str>) -> String {
    match select {
        Some(s) => context(
            req,
            &format!("{set}({})", split_select(s).collect::<Vec<_>>().join(",")),
        ),
        None => context(req, set),
    }
}

/// Link back to this endpoint with the original query options plus a token.
fn link(req: &GReq<'_>, token_name: &str, token: &str, keep_query: bool) -> String {
    let mut url = format!("{}{}?", req.base, req.path);
    if keep_query {
        for part in req.raw_query.split('&').filter(|p| !p.is_empty()) {
            let k = url_decode(part.split('=').next().unwrap_or(""));
            let k = k.trim_start_matches('$');
            if k.eq_ignore_ascii_case("skiptoken") || k.eq_ignore_ascii_case("deltatoken") {
                continue;
            }
            url.push_str(part);
            url.push('&');
        }
    }
    url.push_str(token_name);
    url.push('=');
    url.push_str(token);
    url
}

/// `{"@odata.context", ["@odata.count"], ["@odata.nextLink" | "@odata.deltaLink"], "value"}`.
fn collection(ctx: &str, count: Option<u64>, link: Option<(&str, String)>, items: &str) -> String {
    let mut out = String::with_capacity(items.len() + 512);
    let mut o = Obj::start(&mut out);
    o.str("@odata.context", ctx);
    if let Some(c) = count {
        o.num("@odata.count", c as i64);
    }
    if let Some((k, v)) = &link {
        o.str(k, v);
    }
    {
        let buf = o.nested("value");
        buf.push('[');
        buf.push_str(items);
        buf.push(']');
    }
    o.end();
    out
}

fn comma(items: &mut String) {
    if !items.is_empty() {
        items.push(',');
    }
}

fn write_user(
    items: &mut String,
    dir: &Directory,
    u: &SimUser,
    props: &[UP],
    odata_type: bool,
    expand: Option<&[UP]>,
) {
    let mut o = Obj::start(items);
    if odata_type {
        o.str("@odata.type", "#microsoft.graph.user");
    }
    for p in props {
        write_user_prop(&mut o, u, *p);
    }
    if let Some(mp) = expand
        && let Some(m) = u
            .manager_id
            .as_deref()
            .and_then(|m| dir.user_ord(m))
            .and_then(|o| dir.user(o))
    {
        let buf = o.nested("manager");
        let mut mo = Obj::start(buf);
        mo.str("@odata.type", "#microsoft.graph.user");
        for p in mp {
            write_user_prop(&mut mo, &m, *p);
        }
        mo.end();
    }
    o.end();
}

fn write_group(items: &mut String, g: &SimGroup, props: &[GP], odata_type: bool) {
    let mut o = Obj::start(items);
    if odata_type {
        o.str("@odata.type", "#microsoft.graph.group");
    }
    for p in props {
        write_group_prop(&mut o, g, *p);
    }
    o.end();
}

// ---------------------------------------------------------------------------
// $filter (the common subset: eq/ne/startswith/in, and/or/not, parentheses)

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return None,
                        Some('\'') if cs.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            v.push(*c);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let st = i;
                while i < cs.len() && !matches!(cs[i], ' ' | '\t' | '(' | ')' | ',' | '\'') {
                    i += 1;
                }
                out.push(Tok::Ident(cs[st..i].iter().collect()));
            }
        }
    }
    Some(out)
}

#[derive(Debug, Clone)]
enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// property, operator (eq/ne/startswith/in), literals
    Cmp(String, String, Vec<serde_json::Value>),
}

struct FilterParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl FilterParser {
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Option<Filter> {
        let mut l = self.and()?;
        while self.peek_kw("or") {
            self.pos += 1;
            l = Filter::Or(Box::new(l), Box::new(self.and()?));
        }
        Some(l)
    }
    fn and(&mut self) -> Option<Filter> {
        let mut l = self.primary()?;
        while self.peek_kw("and") {
            self.pos += 1;
            l = Filter::And(Box::new(l), Box::new(self.primary()?));
        }
        Some(l)
    }
    fn literal(&mut self) -> Option<serde_json::Value> {
        match self.next()? {
            Tok::Str(s) => Some(serde_json::Value::String(s)),
            Tok::Ident(s) => match s.to_ascii_lowercase().as_str() {
                "true" => Some(true.into()),
                "false" => Some(false.into()),
                "null" => Some(serde_json::Value::Null),
                _ => {
                    if let Ok(n) = s.parse::<i64>() {
                        Some(n.into())
                    } else if uuid::Uuid::parse_str(&s).is_ok() {
                        Some(serde_json::Value::String(s))
                    } else {
                        None
                    }
                }
            },
            _ => None,
        }
    }
    fn primary(&mut self) -> Option<Filter> {
        match self.next()? {
            Tok::LParen => {
                let f = self.or()?;
                (self.next()? == Tok::RParen).then_some(f)
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("not") => {
                Some(Filter::Not(Box::new(self.primary()?)))
            }
            Tok::Ident(f)
                if (f.eq_ignore_ascii_case("startswith") || f.eq_ignore_ascii_case("endswith"))
                    && self.toks.get(self.pos) == Some(&Tok::LParen) =>
            {
                self.pos += 1;
                let Tok::Ident(prop) = self.next()? else {
                    return None;
                };
                (self.next()? == Tok::Comma).then_some(())?;
                let lit = self.literal()?;
                (self.next()? == Tok::RParen).then_some(())?;
                Some(Filter::Cmp(prop, f.to_ascii_lowercase(), vec![lit]))
            }
            Tok::Ident(prop) => {
                let Tok::Ident(op) = self.next()? else {
                    return None;
                };
                let op = op.to_ascii_lowercase();
                match op.as_str() {
                    "eq" | "ne" => Some(Filter::Cmp(prop, op, vec![self.literal()?])),
                    "in" => {
                        (self.next()? == Tok::LParen).then_some(())?;
                        let mut lits = vec![self.literal()?];
                        loop {
                            match self.next()? {
                                Tok::Comma => lits.push(self.literal()?),
                                Tok::RParen => break,
                                _ => return None,
                            }
                        }
                        Some(Filter::Cmp(prop, op, lits))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

fn parse_filter(req: &GReq<'_>, f: Option<&str>, resource: &str) -> Result<Option<Filter>, GResp> {
    let Some(f) = f.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let bad = || bad_request(req, &format!("Invalid filter clause: {f}"));
    let toks = tokenize(f).ok_or_else(bad)?;
    let mut p = FilterParser { toks, pos: 0 };
    let filter = p.or().ok_or_else(bad)?;
    if p.pos != p.toks.len() {
        return Err(bad());
    }
    // Only scalar properties the simulator models can be filtered.
    fn check(f: &Filter, ok: &dyn Fn(&str) -> bool) -> Option<String> {
        match f {
            Filter::And(a, b) | Filter::Or(a, b) => check(a, ok).or_else(|| check(b, ok)),
            Filter::Not(a) => check(a, ok),
            Filter::Cmp(p, _, _) => (!ok(p)).then(|| p.clone()),
        }
    }
    let ok: &dyn Fn(&str) -> bool = if resource == "User" {
        &|p: &str| {
            user_prop(p).is_some_and(|u| {
                !matches!(
                    u,
                    UP::Null(_)
                        | UP::Empty(_)
                        | UP::AssignedLicenses
                        | UP::ProxyAddresses
                        | UP::BusinessPhones
                        | UP::OtherMails
                )
            })
        }
    } else {
        &|p: &str| {
            group_prop(p)
                .is_some_and(|g| !matches!(g, GP::Null(_) | GP::Empty(_) | GP::ProxyAddresses))
        }
    };
    if let Some(p) = check(&filter, ok) {
        return Err(error(
            req,
            400,
            "Request_UnsupportedQuery",
            &format!(
                "Unsupported or invalid query filter clause specified for property '{p}' of resource '{resource}'."
            ),
        ));
    }
    Ok(Some(filter))
}

fn eval_filter(f: &Filter, get: &dyn Fn(&str) -> serde_json::Value) -> bool {
    use serde_json::Value;
    let eq = |a: &Value, b: &Value| match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    };
    match f {
        Filter::And(a, b) => eval_filter(a, get) && eval_filter(b, get),
        Filter::Or(a, b) => eval_filter(a, get) || eval_filter(b, get),
        Filter::Not(a) => !eval_filter(a, get),
        Filter::Cmp(p, op, lits) => {
            let v = get(p);
            match op.as_str() {
                "eq" => eq(&v, &lits[0]),
                "ne" => !eq(&v, &lits[0]),
                "in" => lits.iter().any(|l| eq(&v, l)),
                "startswith" | "endswith" => match (&v, &lits[0]) {
                    (Value::String(s), Value::String(x)) => {
                        let (s, x) = (s.to_lowercase(), x.to_lowercase());
                        if op == "startswith" {
                            s.starts_with(&x)
                        } else {
                            s.ends_with(&x)
                        }
                    }
                    _ => false,
                },
                _ => false,
            }
        }
    }
}

fn user_matches(f: Option<&Filter>, u: &SimUser) -> bool {
    let Some(f) = f else { return true };
    eval_filter(f, &|name| {
        let Some(p) = user_prop(name) else {
            return serde_json::Value::Null;
        };
        let mut buf = String::new();
        let mut o = Obj::start(&mut buf);
        write_user_prop(&mut o, u, p);
        o.end();
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&buf)
            .ok()
            .and_then(|m| m.into_iter().next().map(|(_, v)| v))
            .unwrap_or_default()
    })
}

fn group_matches(f: Option<&Filter>, g: &SimGroup) -> bool {
    let Some(f) = f else { return true };
    eval_filter(f, &|name| {
        let Some(p) = group_prop(name) else {
            return serde_json::Value::Null;
        };
        let mut buf = String::new();
        let mut o = Obj::start(&mut buf);
        write_group_prop(&mut o, g, p);
        o.end();
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&buf)
            .ok()
            .and_then(|m| m.into_iter().next().map(|(_, v)| v))
            .unwrap_or_default()
    })
}

/// Delta only supports `id eq '...'` (possibly or-ed).
fn delta_id_filter(req: &GReq<'_>, f: Option<&str>) -> Result<Option<Vec<String>>, GResp> {
    let Some(f) = f.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let toks = tokenize(f).ok_or_else(|| unsupported(req))?;
    let mut p = FilterParser { toks, pos: 0 };
    let filter = p.or().ok_or_else(|| unsupported(req))?;
    fn ids(f: &Filter, out: &mut Vec<String>) -> bool {
        match f {
            Filter::Or(a, b) => ids(a, out) && ids(b, out),
            Filter::Cmp(p, op, lits) if p.eq_ignore_ascii_case("id") && op == "eq" => {
                lits.iter().all(|l| match l.as_str() {
                    Some(s) => {
                        out.push(s.to_lowercase());
                        true
                    }
                    None => false,
                })
            }
            _ => false,
        }
    }
    let mut out = Vec::new();
    if !ids(&filter, &mut out) || p.pos != p.toks.len() {
        return Err(unsupported(req));
    }
    Ok(Some(out))
}

// ---------------------------------------------------------------------------
// Routing

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn route(cx: &Ctx<'_>, req: &GReq<'_>) -> GResp {
    let segs: Vec<String> = req.path[5..]
        .split('/')
        .filter(|s| !s.is_empty())
        .map(path_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    if s.is_empty() {
        return error(req, 400, "BadRequest", "Invalid request.");
    }
    let known = matches!(
        s[0].to_ascii_lowercase().as_str(),
        "users" | "groups" | "domains" | "organization" | "subscribedskus"
    );
    if !known {
        return error(
            req,
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{}'.", s[0]),
        );
    }
    if req.method != "GET" {
        return error(
            req,
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        );
    }
    let q = match Query::parse(req) {
        Ok(q) => q,
        Err(e) => return e,
    };
    let r = match s.as_slice() {
        [u] if eq(u, "users") => list_users(cx, req, &q),
        [u, d] if eq(u, "users") && is_delta(d) => users_delta(cx, req, &q),
        [u, c] if eq(u, "users") && eq(c, "$count") => {
            count(cx, req, USER_READ, |d| d.user_count())
        }
        [u, id] if eq(u, "users") => get_user(cx, req, &q, id),
        [u, id, m] if eq(u, "users") && eq(m, "manager") => manager(cx, req, &q, id),
        [u, id, m, rest @ .., c]
            if eq(u, "users")
                && (eq(m, "memberOf") || eq(m, "transitiveMemberOf"))
                && eq(c, "$count")
                && rest.iter().all(|c| eq(c, "microsoft.graph.group")) =>
        {
            member_of_count(cx, req, id, eq(m, "transitiveMemberOf"))
        }
        [u, id, m, rest @ ..]
            if eq(u, "users")
                && (eq(m, "memberOf") || eq(m, "transitiveMemberOf"))
                && rest.iter().all(|c| eq(c, "microsoft.graph.group")) =>
        {
            // Only groups are modelled, so the group cast changes nothing.
            member_of(cx, req, &q, id, eq(m, "transitiveMemberOf"))
        }
        [u, id, m] if eq(u, "users") && eq(m, "mailboxSettings") => mailbox(cx, req, id, None),
        [u, id, m, p] if eq(u, "users") && eq(m, "mailboxSettings") => {
            mailbox(cx, req, id, Some(p))
        }
        [g] if eq(g, "groups") => list_groups(cx, req, &q),
        [g, d] if eq(g, "groups") && is_delta(d) => groups_delta(cx, req, &q),
        [g, c] if eq(g, "groups") && eq(c, "$count") => count(cx, req, GROUP_READ, |d| {
            let mut n = 0;
            let mut from = 0;
            while let Some((o, _)) = d.next_group(from) {
                n += 1;
                from = o + 1;
            }
            n
        }),
        [g, id] if eq(g, "groups") => get_group(cx, req, &q, id),
        [g, id, m, rest @ .., c]
            if eq(g, "groups")
                && (eq(m, "members") || eq(m, "transitiveMembers"))
                && eq(c, "$count")
                && rest.len() <= 1 =>
        {
            members_count(
                cx,
                req,
                id,
                eq(m, "transitiveMembers"),
                rest.first().copied(),
            )
        }
        [g, id, m, rest @ ..]
            if eq(g, "groups")
                && (eq(m, "members") || eq(m, "transitiveMembers"))
                && rest.len() <= 1 =>
        {
            members(
                cx,
                req,
                &q,
                id,
                eq(m, "transitiveMembers"),
                rest.first().copied(),
            )
        }
        [d] if eq(d, "domains") => domains(cx, req, None),
        [d, id] if eq(d, "domains") => domains(cx, req, Some(id)),
        [o] if eq(o, "organization") => organization(cx, req, None),
        [o, id] if eq(o, "organization") => organization(cx, req, Some(id)),
        [k] if eq(k, "subscribedSkus") => skus(cx, req),
        _ => Err(error(
            req,
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{}'.", s[s.len() - 1]),
        )),
    };
    r.unwrap_or_else(|e| e)
}

fn need(cx: &Ctx<'_>, req: &GReq<'_>, perms: &[&str]) -> Result<(), GResp> {
    if cx.has_any(perms) {
        Ok(())
    } else {
        Err(denied(req))
    }
}

fn reject_unsupported(req: &GReq<'_>, q: &Query) -> Result<(), GResp> {
    if q.skip.is_some() {
        return Err(bad_request(req, "'$skip' is not supported by the service."));
    }
    if q.orderby.is_some() || q.search.is_some() {
        return Err(unsupported(req));
    }
    Ok(())
}

fn wants_count(req: &GReq<'_>, q: &Query) -> Result<bool, GResp> {
    match q.count.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => {
            let eventual = header_str(req.headers, "consistencylevel")
                .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
            if eventual {
                Ok(true)
            } else {
                Err(bad_request(req, "$count is not currently supported."))
            }
        }
        Some(v) => Err(bad_request(
            req,
            &format!("Invalid value '{v}' for $count."),
        )),
    }
}

fn count(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    perms: &[&str],
    f: impl Fn(&Directory) -> u64,
) -> Result<GResp, GResp> {
    need(cx, req, perms)?;
    need_eventual(req)?;
    Ok(count_body(f(&cx.dir())))
}

/// `$count` on directory objects is an advanced query: it needs
/// `ConsistencyLevel: eventual`.
fn need_eventual(req: &GReq<'_>) -> Result<(), GResp> {
    if header_str(req.headers, "consistencylevel")
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
    {
        Ok(())
    } else {
        Err(bad_request(req, "$count is not currently supported."))
    }
}

/// The `text/plain` body of a `/$count` segment.
fn count_body(n: u64) -> GResp {
    GResp {
        status: 200,
        headers: vec![],
        content_type: "text/plain",
        body: n.to_string(),
    }
}

fn list_users(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    reject_unsupported(req, q)?;
    let st = match &q.skiptoken {
        Some(t) => PageState::decode(cx, req, t, "users")?,
        None => PageState {
            t: fingerprint(cx),
            r: "users".into(),
            s: q.select.clone(),
            f: q.filter.clone(),
            x: q.expand.clone(),
            n: page_size(req, q.top.as_deref())?,
            ..PageState::default()
        },
    };
    let props = user_select(req, st.s.as_deref())?;
    let filter = parse_filter(req, st.f.as_deref(), "User")?;
    let expand = parse_expand(req, st.x.as_deref())?;
    let want_count = wants_count(req, q)?;
    let size = capped(cx, st.n);
    let dir = cx.dir();
    let mut items = String::with_capacity(size * 512);
    let mut cursor = st.c;
    let mut n = 0;
    while n < size {
        let Some((ord, u)) = dir.next_user(cursor) else {
            break;
        };
        cursor = ord + 1;
        if user_matches(filter.as_ref(), &u) {
            comma(&mut items);
            write_user(&mut items, &dir, &u, &props, false, expand.as_deref());
            n += 1;
        }
    }
    let mut more = false;
    while let Some((ord, u)) = dir.next_user(cursor) {
        if user_matches(filter.as_ref(), &u) {
            more = true;
            break;
        }
        cursor = ord + 1;
    }
    let total = if want_count {
        Some(match &filter {
            None => dir.user_count(),
            Some(f) => {
                let mut c = 0;
                let mut from = 0;
                while let Some((ord, u)) = dir.next_user(from) {
                    c += u64::from(user_matches(Some(f), &u));
                    from = ord + 1;
                }
                c
            }
        })
    } else {
        None
    };
    let next = more.then(|| {
        let token = PageState {
            c: cursor,
            ..st.clone()
        }
        .encode();
        ("@odata.nextLink", link(req, "$skiptoken", &token, true))
    });
    let ctx = context_with_select(req, "users", st.s.as_deref());
    Ok(GResp::json(collection(&ctx, total, next, &items)))
}

fn get_user(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query, key: &str) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    let dir = cx.dir();
    let ord = dir.user_ord(key).ok_or_else(|| not_found(req, key))?;
    let u = dir.user(ord).ok_or_else(|| not_found(req, key))?;
    // mailboxSettings may be selected on a single user.
    let mut with_mailbox = false;
    let select = q.select.as_deref().map(|s| {
        split_select(s)
            .filter(|p| {
                let m = eq(p, "mailboxSettings");
                with_mailbox |= m;
                !m
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    let select = select.filter(|s| !s.is_empty() || !with_mailbox);
    let props = user_select(req, select.as_deref())?;
    let expand = parse_expand(req, q.expand.as_deref())?;
    let mut body = String::with_capacity(1024);
    write_user(&mut body, &dir, &u, &props, false, expand.as_deref());
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&body).unwrap_or_default();
    if with_mailbox {
        if !cx.has_any(MAILBOX_READ) {
            return Err(mailbox_denied(req));
        }
        if let Some(m) = mailbox_json(&u) {
            v.insert("mailboxSettings".into(), m);
        }
    }
    let mut out = serde_json::Map::new();
    let ctx = format!(
        "{}/$entity",
        context_with_select(req, "users", q.select.as_deref())
    );
    out.insert("@odata.context".into(), ctx.into());
    out.extend(v);
    Ok(GResp::json(serde_json::Value::Object(out).to_string()))
}

fn manager(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query, key: &str) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    let dir = cx.dir();
    let ord = dir.user_ord(key).ok_or_else(|| not_found(req, key))?;
    let u = dir.user(ord).ok_or_else(|| not_found(req, key))?;
    let m = u
        .manager_id
        .as_deref()
        .and_then(|m| dir.user_ord(m))
        .and_then(|o| dir.user(o))
        .ok_or_else(|| not_found(req, "manager"))?;
    let props = user_select(req, q.select.as_deref())?;
    let mut body = String::with_capacity(1024);
    let mut o = Obj::start(&mut body);
    o.str("@odata.context", &context(req, "directoryObjects/$entity"));
    o.str("@odata.type", "#microsoft.graph.user");
    for p in &props {
        write_user_prop(&mut o, &m, *p);
    }
    o.end();
    Ok(GResp::json(body))
}

fn users_delta(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    if q.orderby.is_some() || q.search.is_some() || q.count.is_some() || q.skip.is_some() {
        return Err(unsupported(req));
    }
    let dir = cx.dir();
    let prefer = prefer_max_page(req.headers);
    let mut st = if let Some(t) = &q.skiptoken {
        PageState::decode(cx, req, t, "udelta")?
    } else if let Some(t) = &q.deltatoken {
        if eq(t, "latest") {
            let st = PageState {
                t: fingerprint(cx),
                r: "udelta".into(),
                s: q.select.clone(),
                f: q.filter.clone(),
                x: q.expand.clone(),
                n: prefer.unwrap_or(DEFAULT_PAGE),
                ds: dir.seq,
                ..PageState::default()
            };
            let ctx = context_with_select(req, "users", st.s.as_deref());
            let l = link(req, "$deltatoken", &st.encode(), false);
            return Ok(GResp::json(collection(
                &ctx,
                None,
                Some(("@odata.deltaLink", l)),
                "",
            )));
        }
        let mut st = PageState::decode(cx, req, t, "udelta")?;
        st.du = dir.seq;
        st.c = 0;
        st.di = false;
        st
    } else {
        PageState {
            t: fingerprint(cx),
            r: "udelta".into(),
            s: q.select.clone(),
            f: q.filter.clone(),
            x: q.expand.clone(),
            n: prefer.unwrap_or(DEFAULT_PAGE),
            c: 0,
            ds: 0,
            du: dir.seq,
            di: true,
        }
    };
    if let Some(p) = prefer {
        st.n = p;
    }
    if st.x.is_some() {
        return Err(unsupported(req));
    }
    let mut props = user_select(req, st.s.as_deref())?;
    if !props.contains(&UP::Id) {
        props.insert(0, UP::Id);
    }
    let ids = delta_id_filter(req, st.f.as_deref())?;
    let id_ok = |id: &str| {
        ids.as_ref()
            .is_none_or(|v| v.iter().any(|x| x.eq_ignore_ascii_case(id)))
    };
    let size = capped(cx, st.n);
    let mut items = String::with_capacity(size * 512);
    let mut n = 0;
    let more;
    if st.di {
        let mut cursor = st.c;
        while n < size {
            let Some((ord, u)) = dir.next_user(cursor) else {
                break;
            };
            cursor = ord + 1;
            if id_ok(&u.id) {
                comma(&mut items);
                write_user(&mut items, &dir, &u, &props, false, None);
                n += 1;
            }
        }
        more = dir.next_user(cursor).is_some();
        st.c = cursor;
    } else {
        let mut it = dir.user_changes(st.ds, st.du, st.c).peekable();
        while n < size {
            let Some((seq, ch)) = it.next() else { break };
            st.c = seq;
            match ch {
                Change::New(u) if id_ok(&u.id) => {
                    comma(&mut items);
                    write_user(&mut items, &dir, &u, &props, false, None);
                    n += 1;
                }
                Change::Updated(u, since) if id_ok(&u.id) => {
                    let ord = dir.user_ord(&u.id).unwrap_or_default();
                    let changed = dir.user_changed_props(ord, since);
                    let mut these: Vec<UP> = props
                        .iter()
                        .copied()
                        .filter(|p| *p == UP::Id || changed.contains(p))
                        .collect();
                    these.sort();
                    comma(&mut items);
                    write_user(&mut items, &dir, &u, &these, false, None);
                    n += 1;
                }
                Change::Removed(t) if id_ok(&t.id) => {
                    comma(&mut items);
                    write_removed(&mut items, &t.id, t.reason, None);
                    n += 1;
                }
                _ => {}
            }
        }
        more = it.peek().is_some();
    }
    delta_page(req, "users", &st, more, &items, prefer, size)
}

fn write_removed(items: &mut String, id: &str, reason: &str, odata_type: Option<&str>) {
    let mut o = Obj::start(items);
    if let Some(t) = odata_type {
        o.str("@odata.type", t);
    }
    o.str("id", id);
    let buf = o.nested("@removed");
    let mut r = Obj::start(buf);
    r.str("reason", reason);
    r.end();
    o.end();
}

fn list_groups(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    reject_unsupported(req, q)?;
    if q.expand.is_some() {
        return Err(unsupported(req));
    }
    let st = match &q.skiptoken {
        Some(t) => PageState::decode(cx, req, t, "groups")?,
        None => PageState {
            t: fingerprint(cx),
            r: "groups".into(),
            s: q.select.clone(),
            f: q.filter.clone(),
            n: page_size(req, q.top.as_deref())?,
            ..PageState::default()
        },
    };
    let (props, _) = group_select(req, st.s.as_deref(), false)?;
    let filter = parse_filter(req, st.f.as_deref(), "Group")?;
    let want_count = wants_count(req, q)?;
    let size = capped(cx, st.n);
    let dir = cx.dir();
    let mut items = String::new();
    let mut cursor = st.c;
    let mut n = 0;
    let mut total = 0u64;
    let mut more = false;
    let mut from = 0;
    while let Some((ord, rec)) = dir.next_group(from) {
        from = ord + 1;
        if !group_matches(filter.as_ref(), &rec.group) {
            continue;
        }
        total += 1;
        if ord < st.c {
            continue;
        }
        if n < size {
            comma(&mut items);
            write_group(&mut items, &rec.group, &props, false);
            n += 1;
            cursor = ord + 1;
        } else {
            more = true;
            if !want_count {
                break;
            }
        }
    }
    let next = more.then(|| {
        let token = PageState {
            c: cursor,
            ..st.clone()
        }
        .encode();
        ("@odata.nextLink", link(req, "$skiptoken", &token, true))
    });
    let ctx = context_with_select(req, "groups", st.s.as_deref());
    Ok(GResp::json(collection(
        &ctx,
        want_count.then_some(total),
        next,
        &items,
    )))
}

fn get_group(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query, key: &str) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    let (props, _) = group_select(req, q.select.as_deref(), false)?;
    let dir = cx.dir();
    let rec = dir
        .group_ord(key)
        .and_then(|o| dir.group(o))
        .ok_or_else(|| not_found(req, key))?;
    let mut body = String::new();
    let mut o = Obj::start(&mut body);
    o.str(
        "@odata.context",
        &format!(
            "{}/$entity",
            context_with_select(req, "groups", q.select.as_deref())
        ),
    );
    for p in &props {
        write_group_prop(&mut o, &rec.group, *p);
    }
    o.end();
    Ok(GResp::json(body))
}

fn write_member_ref(items: &mut String, dir: &Directory, m: MemberRef, removed: bool) {
    let t = match m {
        MemberRef::User(_) => "#microsoft.graph.user",
        MemberRef::Group(_) => "#microsoft.graph.group",
    };
    let id = dir.member_id(m);
    if removed {
        write_removed(items, &id, "deleted", Some(t));
    } else {
        let mut o = Obj::start(items);
        o.str("@odata.type", t);
        o.str("id", &id);
        o.end();
    }
}

fn groups_delta(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    if q.orderby.is_some()
        || q.search.is_some()
        || q.count.is_some()
        || q.skip.is_some()
        || q.expand.is_some()
    {
        return Err(unsupported(req));
    }
    let dir = cx.dir();
    let prefer = prefer_max_page(req.headers);
    let fresh = |ds: u64| PageState {
        t: fingerprint(cx),
        r: "gdelta".into(),
        s: q.select.clone(),
        f: q.filter.clone(),
        n: prefer.unwrap_or(DEFAULT_PAGE),
        ds,
        ..PageState::default()
    };
    let mut st = if let Some(t) = &q.skiptoken {
        PageState::decode(cx, req, t, "gdelta")?
    } else if let Some(t) = &q.deltatoken {
        if eq(t, "latest") {
            let st = fresh(dir.seq);
            let ctx = context_with_select(req, "groups", st.s.as_deref());
            let l = link(req, "$deltatoken", &st.encode(), false);
            return Ok(GResp::json(collection(
                &ctx,
                None,
                Some(("@odata.deltaLink", l)),
                "",
            )));
        }
        let mut st = PageState::decode(cx, req, t, "gdelta")?;
        st.du = dir.seq;
        st.c = 0;
        st.di = false;
        st
    } else {
        PageState {
            du: dir.seq,
            di: true,
            ..fresh(0)
        }
    };
    if let Some(p) = prefer {
        st.n = p;
    }
    let (mut props, want_members) = group_select(req, st.s.as_deref(), true)?;
    if !props.contains(&GP::Id) {
        props.insert(0, GP::Id);
    }
    let ids = delta_id_filter(req, st.f.as_deref())?;
    let id_ok = |id: &str| {
        ids.as_ref()
            .is_none_or(|v| v.iter().any(|x| x.eq_ignore_ascii_case(id)))
    };
    let size = capped(cx, st.n);
    let mut items = String::new();
    let mut n = 0;
    let write_full = |items: &mut String, rec: &crate::directory::GroupRec| {
        let mut o = Obj::start(items);
        for p in &props {
            write_group_prop(&mut o, &rec.group, *p);
        }
        if want_members {
            let buf = o.nested("members@delta");
            buf.push('[');
            let mut inner = String::new();
            for m in &rec.members {
                comma(&mut inner);
                write_member_ref(&mut inner, &dir, *m, false);
            }
            buf.push_str(&inner);
            buf.push(']');
        }
        o.end();
    };
    let more;
    if st.di {
        let mut cursor = st.c;
        while n < size {
            let Some((ord, rec)) = dir.next_group(cursor) else {
                break;
            };
            cursor = ord + 1;
            if id_ok(&rec.group.id) {
                comma(&mut items);
                write_full(&mut items, rec);
                n += 1;
            }
        }
        more = dir.next_group(cursor).is_some();
        st.c = cursor;
    } else {
        let mut it = dir.group_changes(st.ds, st.du, st.c).peekable();
        while n < size {
            let Some((seq, ord, ch)) = it.next() else {
                break;
            };
            st.c = seq;
            match ch {
                Change::New(g) if id_ok(&g.id) => {
                    if let Some(rec) = dir.group(ord) {
                        comma(&mut items);
                        write_full(&mut items, rec);
                        n += 1;
                    }
                }
                Change::Updated(g, since) if id_ok(&g.id) => {
                    let Some(rec) = dir.group(ord) else { continue };
                    comma(&mut items);
                    let mut o = Obj::start(&mut items);
                    for p in &props {
                        if *p == GP::Id || rec.changed.iter().any(|(q, s)| q == p && *s > since) {
                            write_group_prop(&mut o, &rec.group, *p);
                        }
                    }
                    if want_members {
                        let mut changes: Vec<(&MemberRef, &(u64, bool))> = rec
                            .member_changes
                            .iter()
                            .filter(|(_, (s, _))| *s > since)
                            .collect();
                        changes.sort_by_key(|(_, (s, _))| *s);
                        if !changes.is_empty() {
                            let mut inner = String::new();
                            for (m, (_, present)) in changes {
                                comma(&mut inner);
                                write_member_ref(&mut inner, &dir, *m, !present);
                            }
                            let buf = o.nested("members@delta");
                            buf.push('[');
                            buf.push_str(&inner);
                            buf.push(']');
                        }
                    }
                    o.end();
                    n += 1;
                }
                Change::Removed(t) if id_ok(&t.id) => {
                    comma(&mut items);
                    write_removed(&mut items, &t.id, t.reason, None);
                    n += 1;
                }
                _ => {}
            }
        }
        more = it.peek().is_some();
    }
    delta_page(req, "groups", &st, more, &items, prefer, size)
}

/// The end of a delta page: a nextLink while the round has more, else the deltaLink that
/// starts the next round; and the page size applied when the client asked for one.
fn delta_page(
    req: &GReq<'_>,
    collection_name: &str,
    st: &PageState,
    more: bool,
    items: &str,
    prefer: Option<usize>,
    size: usize,
) -> Result<GResp, GResp> {
    let ctx = context_with_select(req, collection_name, st.s.as_deref());
    let l = if more {
        (
            "@odata.nextLink",
            link(req, "$skiptoken", &st.encode(), false),
        )
    } else {
        let next_round = PageState {
            ds: st.du,
            du: 0,
            c: 0,
            di: false,
            ..st.clone()
        };
        (
            "@odata.deltaLink",
            link(req, "$deltatoken", &next_round.encode(), false),
        )
    };
    let mut resp = GResp::json(collection(&ctx, None, Some(l), items));
    if let Some(p) = prefer {
        resp.headers.push((
            "preference-applied",
            format!("odata.maxpagesize={}", p.min(size)),
        ));
    }
    Ok(resp)
}

fn members(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    q: &Query,
    key: &str,
    transitive: bool,
    cast: Option<&str>,
) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    reject_unsupported(req, q)?;
    if q.filter.is_some() || q.expand.is_some() {
        return Err(unsupported(req));
    }
    let want_user = member_cast(req, cast)?;
    let res = format!(
        "{}:{}:{}",
        if transitive { "tm" } else { "m" },
        key.to_lowercase(),
        cast.unwrap_or("")
    );
    let st = match &q.skiptoken {
        Some(t) => PageState::decode(cx, req, t, &res)?,
        None => PageState {
            t: fingerprint(cx),
            r: res,
            s: q.select.clone(),
            n: page_size(req, q.top.as_deref())?,
            ..PageState::default()
        },
    };
    let sel = object_select(req, st.s.as_deref())?;
    let want_count = wants_count(req, q)?;
    let dir = cx.dir();
    let ord = dir.group_ord(key).ok_or_else(|| not_found(req, key))?;
    let list = member_list(&dir, ord, transitive, want_user);
    let size = capped(cx, st.n);
    let start = (st.c as usize).min(list.len());
    let end = (start + size).min(list.len());
    let mut items = String::with_capacity((end - start) * 400);
    write_objects(&mut items, &dir, &list[start..end], sel.as_ref());
    let next = (end < list.len()).then(|| {
        let token = PageState {
            c: end as u64,
            ..st.clone()
        }
        .encode();
        ("@odata.nextLink", link(req, "$skiptoken", &token, true))
    });
    let set = match want_user {
        None => "directoryObjects",
        Some(true) => "users",
        Some(false) => "groups",
    };
    let ctx = context_with_select(req, set, st.s.as_deref());
    Ok(GResp::json(collection(
        &ctx,
        want_count.then_some(list.len() as u64),
        next,
        &items,
    )))
}

/// The type cast segment after `members`: `Some(true)` users only,
/// `Some(false)` groups only.
fn member_cast(req: &GReq<'_>, cast: Option<&str>) -> Result<Option<bool>, GResp> {
    match cast.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("microsoft.graph.user") => Ok(Some(true)),
        Some("microsoft.graph.group") => Ok(Some(false)),
        Some(other) => Err(error(
            req,
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{other}'."),
        )),
    }
}

/// Direct or transitive members of a group, optionally only users or groups.
fn member_list(
    dir: &Directory,
    ord: u64,
    transitive: bool,
    want_user: Option<bool>,
) -> Vec<MemberRef> {
    let list: Vec<MemberRef> = if transitive {
        dir.transitive_members(ord)
    } else {
        dir.group(ord)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    };
    list.into_iter()
        .filter(|m| match want_user {
            None => true,
            Some(u) => matches!(m, MemberRef::User(_)) == u,
        })
        .collect()
}

/// `GET /groups/{id}/members[/microsoft.graph.user|group]/$count` (and
/// `transitiveMembers`), as Graph serves it with `ConsistencyLevel: eventual`.
fn members_count(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    key: &str,
    transitive: bool,
    cast: Option<&str>,
) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    let want_user = member_cast(req, cast)?;
    need_eventual(req)?;
    let dir = cx.dir();
    let ord = dir.group_ord(key).ok_or_else(|| not_found(req, key))?;
    Ok(count_body(
        member_list(&dir, ord, transitive, want_user).len() as u64,
    ))
}

/// The groups a user is a direct or transitive member of.
fn user_groups(dir: &Directory, ord: u64, transitive: bool) -> Vec<u64> {
    let mut groups = dir.member_of(MemberRef::User(ord));
    if transitive {
        let mut i = 0;
        while i < groups.len() {
            for p in dir.member_of(MemberRef::Group(groups[i])) {
                if !groups.contains(&p) {
                    groups.push(p);
                }
            }
            i += 1;
        }
    }
    groups
}

/// `GET /users/{id}/memberOf[/microsoft.graph.group]/$count` (and
/// `transitiveMemberOf`).
fn member_of_count(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    key: &str,
    transitive: bool,
) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    need_eventual(req)?;
    let dir = cx.dir();
    let ord = dir.user_ord(key).ok_or_else(|| not_found(req, key))?;
    Ok(count_body(user_groups(&dir, ord, transitive).len() as u64))
}

fn write_objects(
    items: &mut String,
    dir: &Directory,
    list: &[MemberRef],
    sel: Option<&ObjectSelect>,
) {
    let gdefault = group_default();
    for m in list {
        match m {
            MemberRef::User(o) => {
                if let Some(u) = dir.user(*o) {
                    comma(items);
                    let props = sel.map(|s| s.0.as_slice()).unwrap_or(USER_DEFAULT);
                    write_user(items, dir, &u, props, true, None);
                }
            }
            MemberRef::Group(o) => {
                if let Some(rec) = dir.group(*o) {
                    comma(items);
                    let props = sel.map(|s| s.1.as_slice()).unwrap_or(&gdefault);
                    write_group(items, &rec.group, props, true);
                }
            }
        }
    }
}

fn member_of(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    q: &Query,
    key: &str,
    transitive: bool,
) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    reject_unsupported(req, q)?;
    if q.filter.is_some() || q.expand.is_some() {
        return Err(unsupported(req));
    }
    let res = format!(
        "{}:{}",
        if transitive { "tmo" } else { "mo" },
        key.to_lowercase()
    );
    let st = match &q.skiptoken {
        Some(t) => PageState::decode(cx, req, t, &res)?,
        None => PageState {
            t: fingerprint(cx),
            r: res,
            s: q.select.clone(),
            n: page_size(req, q.top.as_deref())?,
            ..PageState::default()
        },
    };
    let sel = object_select(req, st.s.as_deref())?;
    let dir = cx.dir();
    let ord = dir.user_ord(key).ok_or_else(|| not_found(req, key))?;
    let groups = user_groups(&dir, ord, transitive);
    let list: Vec<MemberRef> = groups.into_iter().map(MemberRef::Group).collect();
    let size = capped(cx, st.n);
    let start = (st.c as usize).min(list.len());
    let end = (start + size).min(list.len());
    let mut items = String::new();
    write_objects(&mut items, &dir, &list[start..end], sel.as_ref());
    let next = (end < list.len()).then(|| {
        let token = PageState {
            c: end as u64,
            ..st.clone()
        }
        .encode();
        ("@odata.nextLink", link(req, "$skiptoken", &token, true))
    });
    let ctx = context_with_select(req, "directoryObjects", st.s.as_deref());
    Ok(GResp::json(collection(&ctx, None, next, &items)))
}

fn mailbox_denied(req: &GReq<'_>) -> GResp {
    error(
        req,
        403,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    )
}

fn mailbox_json(u: &SimUser) -> Option<serde_json::Value> {
    let purpose = u.user_purpose?;
    let tz = time_zone_for(u);
    let lang = u
        .preferred_language
        .clone()
        .unwrap_or_else(|| "en-US".into());
    let lang_name = match lang.as_str() {
        "en-GB" => "English (United Kingdom)",
        "de-DE" => "German (Germany)",
        _ => "English (United States)",
    };
    let (date_format, time_format) = match lang.as_str() {
        "en-GB" => ("dd/MM/yyyy", "HH:mm"),
        "de-DE" => ("dd.MM.yyyy", "HH:mm"),
        _ => ("M/d/yyyy", "h:mm tt"),
    };
    let archive: String = u.id.replace('-', "").chars().rev().collect();
    Some(serde_json::json!({
        "archiveFolder": format!("AAMkA{archive}AAA="),
        "timeZone": tz,
        "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
        "dateFormat": date_format,
        "timeFormat": time_format,
        "userPurpose": purpose.as_str(),
        "automaticRepliesSetting": {
            "status": "disabled",
            "externalAudience": "all",
            "internalReplyMessage": "",
            "externalReplyMessage": "",
            "scheduledStartDateTime": {"dateTime": "2024-01-01T00:00:00.0000000", "timeZone": "UTC"},
            "scheduledEndDateTime": {"dateTime": "2024-01-02T00:00:00.0000000", "timeZone": "UTC"}
        },
        "language": {"locale": lang, "displayName": lang_name},
        "workingHours": {
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "startTime": "08:00:00.0000000",
            "endTime": "17:00:00.0000000",
            "timeZone": {"name": tz}
        }
    }))
}

fn mailbox(cx: &Ctx<'_>, req: &GReq<'_>, key: &str, sub: Option<&str>) -> Result<GResp, GResp> {
    // Exchange checks its own permission and answers in its own words.
    if !cx.has_any(MAILBOX_READ) {
        return Err(mailbox_denied(req));
    }
    let dir = cx.dir();
    let u = dir.user_ord(key).and_then(|o| dir.user(o)).ok_or_else(|| {
        error(
            req,
            404,
            "ErrorInvalidUser",
            &format!("The requested user '{key}' is invalid."),
        )
    })?;
    let no_mailbox = || {
        error(
            req,
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    };
    let settings = mailbox_json(&u).ok_or_else(no_mailbox)?;
    let ctx_base = format!(
        "{}/v1.0/$metadata#users('{}')/mailboxSettings",
        req.base, u.id
    );
    let mut out = serde_json::Map::new();
    match sub {
        None => {
            out.insert("@odata.context".into(), ctx_base.into());
            if let serde_json::Value::Object(m) = settings {
                out.extend(m);
            }
        }
        Some(p) => {
            let (name, v) = settings
                .as_object()
                .and_then(|m| m.iter().find(|(k, _)| eq(k, p)))
                .ok_or_else(|| {
                    error(
                        req,
                        400,
                        "BadRequest",
                        &format!("Resource not found for the segment '{p}'."),
                    )
                })?;
            out.insert("@odata.context".into(), format!("{ctx_base}/{name}").into());
            match v {
                serde_json::Value::Object(m) => out.extend(m.clone()),
                other => {
                    out.insert("value".into(), other.clone());
                }
            }
        }
    }
    Ok(GResp::json(serde_json::Value::Object(out).to_string()))
}

/// Applies `$select` to small, serde-built collections.
fn select_values(
    req: &GReq<'_>,
    items: Vec<serde_json::Value>,
    type_name: &str,
) -> Result<Vec<serde_json::Value>, GResp> {
    let q = Query::parse(req)?;
    let Some(sel) = q.select else {
        return Ok(items);
    };
    let names: Vec<&str> = split_select(&sel).collect();
    let Some(first) = items.first().and_then(|v| v.as_object()) else {
        return Ok(items);
    };
    let mut keys = Vec::new();
    for n in &names {
        match first.keys().find(|k| eq(k, n)) {
            Some(k) => keys.push(k.clone()),
            None => {
                return Err(bad_request(
                    req,
                    &format!(
                        "Could not find a property named '{n}' on type 'microsoft.graph.{type_name}'."
                    ),
                ));
            }
        }
    }
    Ok(items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::Object(m) => {
                serde_json::Value::Object(m.into_iter().filter(|(k, _)| keys.contains(k)).collect())
            }
            v => v,
        })
        .collect())
}

fn value_collection(req: &GReq<'_>, set: &str, items: Vec<serde_json::Value>) -> GResp {
    let body = serde_json::json!({
        "@odata.context": context(req, set),
        "value": items,
    });
    GResp::json(body.to_string())
}

fn single(req: &GReq<'_>, set: &str, item: serde_json::Value) -> GResp {
    let mut out = serde_json::Map::new();
    out.insert(
        "@odata.context".into(),
        context(req, &format!("{set}/$entity")).into(),
    );
    if let serde_json::Value::Object(m) = item {
        out.extend(m);
    }
    GResp::json(serde_json::Value::Object(out).to_string())
}

fn domains(cx: &Ctx<'_>, req: &GReq<'_>, key: Option<&str>) -> Result<GResp, GResp> {
    need(cx, req, DOMAIN_READ)?;
    let dir = cx.dir();
    let items: Vec<serde_json::Value> = dir
        .bp
        .domains
        .iter()
        .map(|d| {
            serde_json::json!({
                "authenticationType": d.authentication_type,
                "availabilityStatus": null,
                "id": d.id,
                "isAdminManaged": true,
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "isRoot": d.is_root,
                "isVerified": d.is_verified,
                "passwordNotificationWindowInDays": 14,
                "passwordValidityPeriodInDays": 2_147_483_647,
                "supportedServices": d.supported_services,
                "state": null,
            })
        })
        .collect();
    let items = select_values(req, items, "domain")?;
    match key {
        None => Ok(value_collection(req, "domains", items)),
        Some(k) => items
            .into_iter()
            .find(|v| v["id"].as_str().is_some_and(|id| eq(id, k)))
            .map(|v| single(req, "domains", v))
            .ok_or_else(|| not_found(req, k)),
    }
}

fn organization(cx: &Ctx<'_>, req: &GReq<'_>, key: Option<&str>) -> Result<GResp, GResp> {
    need(cx, req, ORG_READ)?;
    let dir = cx.dir();
    let bp = &dir.bp;
    let verified: Vec<serde_json::Value> = bp
        .domains
        .iter()
        .filter(|d| d.is_verified)
        .map(|d| {
            let caps: Vec<&str> = d
                .supported_services
                .iter()
                .map(String::as_str)
                .filter(|s| matches!(*s, "Email" | "OfficeCommunicationsOnline"))
                .collect();
            serde_json::json!({
                "capabilities": if caps.is_empty() { "None".to_string() } else { caps.join(", ") },
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "name": d.id,
                "type": d.authentication_type,
            })
        })
        .collect();
    let org = serde_json::json!({
        "id": bp.tenant_id,
        "deletedDateTime": null,
        "businessPhones": ["+1 425 555 0100"],
        "city": "Redmond",
        "country": null,
        "countryLetterCode": "US",
        "createdDateTime": "2019-01-01T00:00:00Z",
        "displayName": bp.org_name,
        "marketingNotificationEmails": [],
        "onPremisesLastSyncDateTime": null,
        "onPremisesSyncEnabled": null,
        "postalCode": "98052",
        "preferredLanguage": "en",
        "privacyProfile": null,
        "securityComplianceNotificationMails": [],
        "securityComplianceNotificationPhones": [],
        "state": "WA",
        "street": "1 Microsoft Way",
        "technicalNotificationMails": [format!("admin@{}", bp.mail_domains[0])],
        "tenantType": "AAD",
        "assignedPlans": [],
        "provisionedPlans": [],
        "verifiedDomains": verified,
    });
    let items = select_values(req, vec![org], "organization")?;
    match key {
        None => Ok(value_collection(req, "organization", items)),
        Some(k) if eq(k, &bp.tenant_id) => Ok(single(
            req,
            "organization",
            items.into_iter().next().unwrap_or_default(),
        )),
        Some(k) => Err(not_found(req, k)),
    }
}

fn skus(cx: &Ctx<'_>, req: &GReq<'_>) -> Result<GResp, GResp> {
    need(cx, req, SKU_READ)?;
    let dir = cx.dir();
    let bp = &dir.bp;
    let items: Vec<serde_json::Value> = dir
        .skus
        .iter()
        .map(|s| {
            let mut r = crate::util::Rng::new(0, 99, crate::util::hash_lower(&s.sku_id));
            serde_json::json!({
                "accountName": bp.org_name,
                "accountId": bp.tenant_id,
                "appliesTo": s.applies_to,
                "capabilityStatus": s.capability_status,
                "consumedUnits": s.consumed_units,
                "id": format!("{}_{}", bp.tenant_id, s.sku_id),
                "skuId": s.sku_id,
                "skuPartNumber": s.sku_part_number,
                "subscriptionIds": [r.guid().to_string()],
                "prepaidUnits": {
                    "enabled": s.prepaid_enabled,
                    "suspended": s.prepaid_suspended,
                    "warning": s.prepaid_warning,
                    "lockedOut": s.prepaid_locked_out,
                },
                "servicePlans": s.service_plans.iter().map(|(id, name)| serde_json::json!({
                    "servicePlanId": id,
                    "servicePlanName": name,
                    "provisioningStatus": "Success",
                    "appliesTo": "User",
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let items = select_values(req, items, "subscribedSku")?;
    Ok(value_collection(req, "subscribedSkus", items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_evaluate() {
        let toks = tokenize(
            "accountEnabled eq true and (startswith(mail,'an') or userType in ('Guest','x'))",
        )
        .unwrap();
        let f = FilterParser { toks, pos: 0 }.or().unwrap();
        let get = |p: &str| match p {
            "accountEnabled" => serde_json::Value::Bool(true),
            "mail" => "Anne@x.com".into(),
            _ => "Member".into(),
        };
        assert!(eval_filter(&f, &get));
        let toks = tokenize("userType eq 'Guest'").unwrap();
        let f = FilterParser { toks, pos: 0 }.or().unwrap();
        assert!(!eval_filter(&f, &get));
    }

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
