//! Change notifications: `POST/GET/PATCH/DELETE /v1.0/subscriptions` for `users` and
//! `groups`, the validation handshake (the notification URL must echo `validationToken`
//! as `text/plain` within 10 seconds), notifications sent to `notificationUrl` when the
//! tenant changes, and lifecycle notifications (`reauthorizationRequired`,
//! `subscriptionRemoved`, `missed`) sent on demand to `lifecycleNotificationUrl`.
//!
//! Graph requires https notification URLs; the simulator also takes plain http on a
//! loopback host, so that tests need no certificate.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::directory::Change;
use crate::graph::{GReq, GResp, error};
use crate::server::Shared;
use crate::tenant::Tenant;

/// Graph's longest subscription on users and groups: 41,760 minutes (29 days).
pub const MAX_MINUTES: i64 = 41_760;
/// How long the notification URL has to answer the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One subscription of a tenant.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub id: String,
    /// `users` or `groups`.
    pub resource: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub client_state: Option<String>,
    pub expires: OffsetDateTime,
    /// The directory's change sequence notified up to.
    pub seen: u64,
}

impl Subscription {
    fn json(&self, base: &str) -> Value {
        json!({
            "@odata.context": format!("{base}/v1.0/$metadata#subscriptions/$entity"),
            "id": self.id,
            "resource": self.resource,
            "applicationId": Value::Null,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": iso(self.expires),
            "includeResourceData": false,
            "latestSupportedTlsVersion": "v1_2",
        })
    }

    fn wants(&self, change: &str) -> bool {
        self.change_type.split(',').any(|c| c.trim() == change)
    }
}

fn iso(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

fn bad(req: &GReq<'_>, message: &str) -> GResp {
    error(req, 400, "InvalidRequest", message)
}

/// The HTTP client that calls notification URLs.
fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(HANDSHAKE_TIMEOUT)
                .build()
                .unwrap_or_default()
        })
        .clone()
}

/// Graph's handshake: POST `url?validationToken=...`; the answer must be 200 with the
/// token as its text, within 10 seconds.
async fn handshake(url: &str) -> Result<(), String> {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    );
    let answer = client()
        .post(url)
        .query(&[("validationToken", token.as_str())])
        .header("content-type", "text/plain; charset=utf-8")
        .send()
        .await
        .map_err(|e| format!("the notification endpoint did not answer: {e}"))?;
    let status = answer.status();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("the notification endpoint answered {status}"));
    }
    if !content_type.starts_with("text/plain") {
        return Err(format!(
            "the validation answer must be text/plain, not '{content_type}'"
        ));
    }
    if text != token {
        return Err("the validation answer did not echo the validationToken".into());
    }
    Ok(())
}

/// `/v1.0/subscriptions[/{id}]` for the tenant the token names.
pub(crate) async fn handle(
    shared: &Shared,
    tenant: &Arc<Tenant>,
    req: &GReq<'_>,
    body: &[u8],
) -> GResp {
    let rest = req.path[5..].trim_start_matches('/');
    let mut parts = rest.splitn(2, '/');
    let _ = parts.next();
    let id = parts.next().filter(|s| !s.is_empty());
    let method = req.method;
    match (method, id) {
        ("POST", None) => create(shared, tenant, req, body).await,
        ("GET", None) => {
            let subs = tenant.subscriptions();
            let value: Vec<Value> = subs.iter().map(|s| s.json(req.base)).collect();
            GResp::json(
                json!({
                    "@odata.context": format!("{}/v1.0/$metadata#subscriptions", req.base),
                    "value": value,
                })
                .to_string(),
            )
        }
        ("GET", Some(id)) => match tenant.subscriptions().iter().find(|s| s.id == id) {
            Some(s) => GResp::json(s.json(req.base).to_string()),
            None => not_found(req, id),
        },
        ("PATCH", Some(id)) => renew(tenant, req, id, body),
        ("DELETE", Some(id)) => {
            let mut subs = tenant.subscriptions();
            let before = subs.len();
            subs.retain(|s| s.id != id);
            if subs.len() == before {
                return not_found(req, id);
            }
            GResp {
                status: 204,
                headers: vec![],
                content_type: "text/plain",
                body: String::new(),
            }
        }
        _ => error(
            req,
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        ),
    }
}

fn not_found(req: &GReq<'_>, id: &str) -> GResp {
    error(
        req,
        404,
        "ResourceNotFound",
        &format!("The object was not found: subscription '{id}'"),
    )
}

fn expiration(req: &GReq<'_>, body: &Value) -> Result<OffsetDateTime, GResp> {
    let text = body["expirationDateTime"]
        .as_str()
        .ok_or_else(|| bad(req, "expirationDateTime is required."))?;
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        bad(
            req,
            &format!("expirationDateTime '{text}' is not a date and time."),
        )
    })?;
    let now = OffsetDateTime::now_utc();
    if at <= now {
        return Err(bad(
            req,
            "Subscription expiration can only be in the future.",
        ));
    }
    if at > now + time::Duration::minutes(MAX_MINUTES) {
        return Err(bad(
            req,
            &format!(
                "Subscription expiration can only be {MAX_MINUTES} minutes in the future for this resource."
            ),
        ));
    }
    Ok(at)
}

async fn create(shared: &Shared, tenant: &Arc<Tenant>, req: &GReq<'_>, body: &[u8]) -> GResp {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return bad(req, "The request body is not JSON.");
    };
    let resource = body["resource"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_ascii_lowercase();
    let permission = match resource.as_str() {
        "users" => crate::graph::USER_READ,
        "groups" => crate::graph::GROUP_READ,
        other => {
            return bad(
                req,
                &format!(
                    "Resource '{other}' is not supported; the simulator takes users and groups."
                ),
            );
        }
    };
    if !tenant.grant.has_any(permission) {
        return error(
            req,
            403,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: Insufficient privileges to complete the operation.]",
        );
    }
    let change_type = body["changeType"].as_str().unwrap_or_default().to_string();
    if change_type.is_empty()
        || !change_type
            .split(',')
            .all(|c| matches!(c.trim(), "created" | "updated" | "deleted"))
    {
        return bad(
            req,
            "changeType must be a comma-separated list of created, updated and deleted.",
        );
    }
    let notification_url = body["notificationUrl"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let lifecycle_url = body["lifecycleNotificationUrl"]
        .as_str()
        .map(str::to_string);
    for url in std::iter::once(&notification_url).chain(lifecycle_url.as_ref()) {
        match url::Url::parse(url) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && loopback(&u)) => {}
            _ => {
                return bad(
                    req,
                    &format!("The notification URL '{url}' must be an https URL."),
                );
            }
        }
    }
    let client_state = body["clientState"].as_str().map(str::to_string);
    if client_state.as_ref().is_some_and(|c| c.len() > 128) {
        return bad(req, "clientState must be at most 128 characters.");
    }
    let expires = match expiration(req, &body) {
        Ok(at) => at,
        Err(e) => return e,
    };
    for url in std::iter::once(&notification_url).chain(lifecycle_url.as_ref()) {
        if let Err(why) = handshake(url).await {
            return bad(
                req,
                &format!("Subscription validation request failed. {why}"),
            );
        }
    }
    let sub = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        resource,
        change_type,
        notification_url,
        lifecycle_url,
        client_state,
        expires,
        seen: tenant.dir().seq,
    };
    let answer = sub.json(req.base);
    tenant.subscriptions().push(sub);
    shared.notifier_wake();
    let mut resp = GResp::json(answer.to_string());
    resp.status = 201;
    resp
}

fn renew(tenant: &Tenant, req: &GReq<'_>, id: &str, body: &[u8]) -> GResp {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return bad(req, "The request body is not JSON.");
    };
    let expires = match expiration(req, &body) {
        Ok(at) => at,
        Err(e) => return e,
    };
    let mut subs = tenant.subscriptions();
    match subs.iter_mut().find(|s| s.id == id) {
        Some(s) => {
            s.expires = expires;
            GResp::json(s.json(req.base).to_string())
        }
        None => not_found(req, id),
    }
}

/// One notification of a change, as Graph sends it (without resource data).
fn notification(sub: &Subscription, tenant_id: &str, change: &str, kind: &str, id: &str) -> Value {
    let (set, odata_type) = match kind {
        "users" => ("Users", "#Microsoft.Graph.User"),
        _ => ("Groups", "#Microsoft.Graph.Group"),
    };
    json!({
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": iso(sub.expires),
        "changeType": change,
        "resource": format!("{set}/{id}"),
        "resourceData": {
            "@odata.type": odata_type,
            "@odata.id": format!("{set}/{id}"),
            "id": id,
            "organizationId": tenant_id,
        },
        "clientState": sub.client_state,
        "tenantId": tenant_id,
    })
}

/// What changed in the tenant since each subscription's last notification, sent to its
/// URL; expired subscriptions are dropped. Called by the notifier task.
pub(crate) async fn notify(tenant: &Tenant) {
    let now = OffsetDateTime::now_utc();
    let batches: Vec<(String, Vec<Value>)> = {
        let mut subs = tenant.subscriptions();
        subs.retain(|s| s.expires > now);
        if subs.is_empty() {
            return;
        }
        let dir = tenant.dir();
        let tenant_id = tenant.bp.tenant_id.clone();
        let mut out = Vec::new();
        for sub in subs.iter_mut() {
            if sub.seen >= dir.seq {
                continue;
            }
            let mut values = Vec::new();
            let mut push = |change: &str, id: &str| {
                if sub.wants(change) {
                    values.push(notification(sub, &tenant_id, change, &sub.resource, id));
                }
            };
            if sub.resource == "users" {
                for (_, ch) in dir.user_changes(sub.seen, dir.seq, 0) {
                    match ch {
                        Change::New(u) => push("created", &u.id),
                        Change::Updated(u, _) => push("updated", &u.id),
                        Change::Removed(t) => push("deleted", &t.id),
                    }
                }
            } else {
                for (_, _, ch) in dir.group_changes(sub.seen, dir.seq, 0) {
                    match ch {
                        Change::New(g) => push("created", &g.id),
                        Change::Updated(g, _) => push("updated", &g.id),
                        Change::Removed(t) => push("deleted", &t.id),
                    }
                }
            }
            sub.seen = dir.seq;
            if !values.is_empty() {
                out.push((sub.notification_url.clone(), values));
            }
        }
        out
    };
    for (url, values) in batches {
        // Graph sends up to a few hundred notifications per request.
        for chunk in values.chunks(100) {
            post(&url, json!({"value": chunk})).await;
        }
    }
}

async fn post(url: &str, body: Value) {
    for attempt in 0..3u32 {
        match client().post(url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::debug!(%url, status = %r.status(), "a notification was refused"),
            Err(e) => tracing::debug!(%url, error = %e, "a notification was not delivered"),
        }
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
}

/// Sends a lifecycle notification to the subscription's lifecycle URL (the notification
/// URL when it has none). `subscriptionRemoved` also deletes the subscription, as Graph
/// does when it removes one.
pub(crate) async fn lifecycle(tenant: &Tenant, id: &str, event: &str) -> Result<(), String> {
    let (url, body) = {
        let mut subs = tenant.subscriptions();
        let Some(sub) = subs.iter().find(|s| s.id == id).cloned() else {
            return Err(format!("no subscription {id}"));
        };
        if event == "subscriptionRemoved" {
            subs.retain(|s| s.id != id);
        }
        let body = json!({"value": [{
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": iso(sub.expires),
            "tenantId": tenant.bp.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }]});
        (sub.lifecycle_url.unwrap_or(sub.notification_url), body)
    };
    post(&url, body).await;
    Ok(())
}

/// The notifier: wakes when told (a subscription was made) and every 200 ms, and sends
/// what changed in each tenant with subscriptions.
pub(crate) async fn notifier(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.notifier.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for tenant in &shared.tenants {
            if tenant.has_subscriptions() {
                notify(tenant).await;
            }
        }
    }
}

/// Requests to `/v1.0/subscriptions` come here from the router (they need the body).
pub(crate) fn is_subscriptions(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower == "/v1.0/subscriptions" || lower.starts_with("/v1.0/subscriptions/")
}
