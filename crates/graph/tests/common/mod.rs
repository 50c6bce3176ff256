#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use url::Url;
use usersync_graph::{GraphClient, GraphConfig, RetryPolicy};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
pub const SECRET: &str = "Sup3r~S3cret.Value_Xyz";
pub const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOi.test-access-token";

pub fn token_path() -> String {
    format!("/{TENANT}/oauth2/v2.0/token")
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(5),
    }
}

pub fn config(server: &MockServer) -> GraphConfig {
    let uri = Url::parse(&server.uri()).unwrap();
    let mut c = GraphConfig::with_urls(uri.clone(), uri, TENANT, CLIENT_ID, SECRET);
    c.retry = fast_retry();
    c.request_timeout = Duration::from_secs(10);
    c
}

pub fn client(server: &MockServer) -> GraphClient {
    GraphClient::new(config(server)).unwrap()
}

pub fn token_body(token: &str, expires_in: u64) -> Value {
    json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": token,
    })
}

/// Mounts a token endpoint that always hands out [`TOKEN`] for an hour.
pub async fn mount_token(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(token_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(TOKEN, 3599)))
        .mount(server)
        .await;
}

/// Hands out `tok-1`, `tok-2`, ... with the given lifetime.
pub struct CountingToken {
    pub count: Arc<AtomicUsize>,
    pub expires_in: u64,
    pub delay: Duration,
}

impl Respond for CountingToken {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200)
            .set_body_json(token_body(&format!("tok-{n}"), self.expires_in))
            .set_delay(self.delay)
    }
}

pub fn users_page(ids: &[&str], next: Option<String>) -> Value {
    let value: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "userPrincipalName": format!("{id}@contoso.com"),
                "displayName": format!("User {id}"),
                "accountEnabled": true,
                "proxyAddresses": [format!("SMTP:{id}@contoso.com")],
                "assignedLicenses": [{"skuId": "sku-1", "disabledPlans": []}],
                "businessPhones": [],
                "someFutureProperty": {"nested": [1, 2, 3]},
            })
        })
        .collect();
    let mut page = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
        "value": value,
    });
    if let Some(n) = next {
        page["@odata.nextLink"] = Value::String(n);
    }
    page
}

pub fn graph_error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "innerError": {"date": "2024-01-01T00:00:00", "request-id": "r-1", "client-request-id": "c-1"}}})
}

pub fn no_progress(_: usize) {}
