//! Change notifications over real HTTP: the handshake, notifications when the tenant
//! changes, renewal, deletion and lifecycle events, against a receiver on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use usersync_sim::{SimConfig, Simulator};

#[derive(Default)]
struct Seen {
    handshakes: usize,
    notifications: Vec<Value>,
    /// Answer the handshake wrongly.
    refuse: bool,
}

type Shared = Arc<Mutex<Seen>>;

async fn receive(
    State(seen): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: String,
) -> axum::response::Response {
    let mut s = seen.lock().unwrap();
    if let Some(token) = q.get("validationToken") {
        s.handshakes += 1;
        if s.refuse {
            return (axum::http::StatusCode::OK, "not the token").into_response();
        }
        return ([("content-type", "text/plain")], token.clone()).into_response();
    }
    if let Ok(v) = serde_json::from_str::<Value>(&body) {
        s.notifications
            .extend(v["value"].as_array().cloned().unwrap_or_default());
    }
    axum::http::StatusCode::ACCEPTED.into_response()
}

async fn receiver() -> (String, Shared, tokio::task::JoinHandle<()>) {
    let seen: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen, task)
}

async fn token(sim: &Simulator) -> String {
    let i = sim.info();
    let v: Value = reqwest::Client::new()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            i.authority_url, i.tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", i.client_id.as_str()),
            ("client_secret", i.client_secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

fn in_minutes(m: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::minutes(m))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn wait_for(seen: &Shared, what: impl Fn(&Seen) -> bool) {
    for _ in 0..100 {
        if what(&seen.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out; seen {:?}", seen.lock().unwrap().notifications);
}

#[tokio::test]
async fn subscriptions_handshake_notify_renew_and_end() {
    let sim = Simulator::start(SimConfig {
        users: 20,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (url, seen, task) = receiver().await;
    let http = reqwest::Client::new();
    let base = format!("{}/v1.0/subscriptions", sim.info().graph_url);
    let bearer = format!("Bearer {}", token(&sim).await);
    let create = |body: Value| {
        http.post(&base)
            .header("authorization", &bearer)
            .json(&body)
            .send()
    };

    // A receiver that does not echo the token: refused, nothing made.
    seen.lock().unwrap().refuse = true;
    let r = create(
        json!({"changeType": "created,updated,deleted", "notificationUrl": url,
        "resource": "users", "expirationDateTime": in_minutes(60), "clientState": "s3cret"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("validation"),
        "{body}"
    );
    assert!(sim.subscriptions().is_empty());
    seen.lock().unwrap().refuse = false;

    // Too long, or not https anywhere but loopback.
    let r = create(
        json!({"changeType": "updated", "notificationUrl": url, "resource": "users",
        "expirationDateTime": in_minutes(50_000)}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = create(
        json!({"changeType": "updated", "notificationUrl": "http://example.com/hook",
        "resource": "users", "expirationDateTime": in_minutes(60)}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    let r = create(
        json!({"changeType": "created,updated,deleted", "notificationUrl": url,
        "lifecycleNotificationUrl": url, "resource": "users",
        "expirationDateTime": in_minutes(60), "clientState": "s3cret"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let sub: Value = r.json().await.unwrap();
    let id = sub["id"].as_str().unwrap().to_string();
    assert_eq!(sub["clientState"], "s3cret");
    assert_eq!(
        seen.lock().unwrap().handshakes,
        3,
        "two refused tries... and two URLs"
    );

    // A change in the tenant: a notification with the clientState.
    let tenant = sim.tenant();
    let newcomer = tenant.new_member("Nora Notified");
    let new_id = tenant.add_user(newcomer).unwrap();
    wait_for(&seen, |s| !s.notifications.is_empty()).await;
    let n = seen.lock().unwrap().notifications[0].clone();
    assert_eq!(n["subscriptionId"], id.as_str());
    assert_eq!(n["clientState"], "s3cret");
    assert_eq!(n["changeType"], "created");
    assert_eq!(n["resourceData"]["id"], new_id.as_str());
    assert_eq!(n["tenantId"], sim.info().tenant_id.as_str());

    // Renewal moves the expiry; lifecycle events reach the lifecycle URL.
    let r = http
        .patch(format!("{base}/{id}"))
        .header("authorization", &bearer)
        .json(&json!({"expirationDateTime": in_minutes(120)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.lifecycle_event(&id, "reauthorizationRequired")
        .await
        .unwrap();
    wait_for(&seen, |s| {
        s.notifications
            .iter()
            .any(|n| n["lifecycleEvent"] == "reauthorizationRequired")
    })
    .await;

    // Deleted: no more notifications, and a second delete is 404.
    let r = http
        .delete(format!("{base}/{id}"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let before = seen.lock().unwrap().notifications.len();
    tenant.delete_user(&new_id).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(seen.lock().unwrap().notifications.len(), before);
    let r = http
        .delete(format!("{base}/{id}"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    task.abort();
    sim.shutdown().await;
}
