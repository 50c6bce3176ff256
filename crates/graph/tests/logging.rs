//! Log output check, alone in its binary: tracing caches per-callsite
//! interest process-wide, which other tests running without a subscriber
//! would spoil.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use usersync_graph::{ClientSecret, GraphClient, GraphError};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secret_and_token_never_leak() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();

    let server = MockServer::start().await;
    // first token request fails, echoing the secret in its description
    Mock::given(method("POST"))
        .and(path(token_path()))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": format!("AADSTS7000215: Invalid client secret provided: {SECRET}"),
            "error_codes": [7000215],
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .respond_with(ResponseTemplate::new(401).set_body_json(graph_error(
            "InvalidAuthenticationToken",
            "Access token is empty.",
        )))
        .mount(&server)
        .await;

    let cfg = config(&server);
    let client = GraphClient::new(cfg.clone()).unwrap();
    let token_err = client.list_users(&[], &no_progress).await.unwrap_err();
    let auth_err = client.list_users(&[], &no_progress).await.unwrap_err();
    assert!(matches!(token_err, GraphError::Token { .. }));
    assert!(matches!(auth_err, GraphError::Unauthorized { .. }));

    let everything = format!(
        "{cfg:?}\n{client:?}\n{token_err}\n{token_err:?}\n{auth_err}\n{auth_err:?}\n{:?}\n{:?}",
        cfg.client_secret,
        ClientSecret::new(SECRET),
    );
    assert!(everything.contains("***"));
    assert!(!everything.contains(SECRET), "{everything}");
    assert!(!everything.contains(TOKEN), "{everything}");

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("graph request"), "debug per request: {logs}");
    assert!(logs.contains("retrying"), "warn on retry: {logs}");
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
}
