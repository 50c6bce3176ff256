mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;
use usersync_graph::{GraphClient, GraphError, TokenErrorKind, User};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn token_is_acquired_once_and_reused() {
    let server = MockServer::start().await;
    let scope = format!("{}/.default", server.uri());
    let encoded_scope: String = url::form_urlencoded::byte_serialize(scope.as_bytes()).collect();
    Mock::given(method("POST"))
        .and(path(token_path()))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains(format!("client_id={CLIENT_ID}")))
        .and(body_string_contains(format!("scope={encoded_scope}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(TOKEN, 3599)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(users_page(&["a", "b"], None)))
        .expect(3)
        .mount(&server)
        .await;
    let client = client(&server);
    for _ in 0..3 {
        let users = client.list_users(&[], &no_progress).await.unwrap();
        assert_eq!(users.len(), 2);
    }
    let stats = client.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.requests, 3);
}

#[tokio::test]
async fn token_is_renewed_before_expiry() {
    let server = MockServer::start().await;
    let count = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path(token_path()))
        .respond_with(CountingToken {
            count: count.clone(),
            expires_in: 2, // short lifetime: renewed at 80%, i.e. after 1.6 s
            delay: Duration::ZERO,
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/domains"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"value": [{"id": "contoso.com"}]})),
        )
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/domains"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(client.list_domains().await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.list_domains().await.unwrap().len(), 1); // still tok-1
    tokio::time::sleep(Duration::from_millis(1300)).await; // 1.8 s > 1.6 s, < 2 s expiry
    assert_eq!(client.list_domains().await.unwrap().len(), 0); // tok-2
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let server = MockServer::start().await;
    let count = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path(token_path()))
        .respond_with(CountingToken {
            count: count.clone(),
            expires_in: 3599,
            delay: Duration::from_millis(300),
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/domains"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(8)
        .mount(&server)
        .await;
    let client = client(&server);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let c = client.clone();
        set.spawn(async move { c.list_domains().await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(client.stats().token_requests, 1);
}

async fn token_failure(status: u16, body: serde_json::Value) -> GraphError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(token_path()))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .expect(1) // 4xx answers are not retried
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client.list_users(&[], &no_progress).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(SECRET), "secret leaked: {text}");
    err
}

fn aad_body(error: &str, code: u32, description: &str) -> serde_json::Value {
    json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2024-01-01 00:00:00Z"),
        "error_codes": [code],
        "timestamp": "2024-01-01 00:00:00Z",
        "trace_id": "0000",
        "correlation_id": "1111",
        "error_uri": "https://login.microsoftonline.com/error?code=0",
    })
}

#[tokio::test]
async fn invalid_client_secret() {
    let err = token_failure(
        401,
        aad_body(
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        ),
    )
    .await;
    match &err {
        GraphError::Token {
            tenant,
            status,
            error,
            aadsts,
            kind,
            description,
            ..
        } => {
            assert_eq!(tenant, TENANT);
            assert_eq!(*status, 401);
            assert_eq!(error, "invalid_client");
            assert_eq!(*aadsts, Some(7000215));
            assert_eq!(*kind, TokenErrorKind::InvalidClientSecret);
            assert!(description.starts_with("AADSTS7000215: Invalid client secret"));
            assert!(!description.contains("Trace ID"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("the client secret is wrong or expired (AADSTS7000215)"),
        "{err}"
    );
}

#[tokio::test]
async fn expired_client_secret() {
    let err = token_failure(
        401,
        aad_body(
            "invalid_client",
            7000222,
            "The provided client secret keys for app 'x' are expired.",
        ),
    )
    .await;
    assert!(matches!(
        err,
        GraphError::Token {
            kind: TokenErrorKind::ExpiredClientSecret,
            aadsts: Some(7000222),
            ..
        }
    ));
    assert!(err.to_string().contains("expired"));
}

#[tokio::test]
async fn app_not_consented() {
    let err = token_failure(
        400,
        aad_body(
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{CLIENT_ID}' was not found in the directory '{TENANT}'."),
        ),
    )
    .await;
    assert!(matches!(
        err,
        GraphError::Token {
            kind: TokenErrorKind::AppNotConsented,
            ..
        }
    ));
    let s = err.to_string();
    assert!(
        s.contains(&format!(
            "the application {CLIENT_ID} is not consented in tenant {TENANT}"
        )),
        "{s}"
    );
    assert!(
        s.contains("a global administrator must grant admin consent"),
        "{s}"
    );
    assert!(s.contains("AADSTS700016"), "{s}");
}

#[tokio::test]
async fn tenant_not_found() {
    let err = token_failure(
        400,
        aad_body(
            "invalid_request",
            90002,
            &format!("Tenant '{TENANT}' not found."),
        ),
    )
    .await;
    assert!(matches!(
        err,
        GraphError::Token {
            kind: TokenErrorKind::TenantNotFound,
            aadsts: Some(90002),
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains(&format!("tenant {TENANT} was not found (AADSTS90002)"))
    );
}

#[tokio::test]
async fn invalid_scope() {
    let err = token_failure(
        400,
        aad_body(
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        ),
    )
    .await;
    assert!(matches!(
        err,
        GraphError::Token {
            kind: TokenErrorKind::InvalidScope,
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains("/.default is not valid (AADSTS70011)"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_token_error_keeps_description_and_redacts_the_secret() {
    let err = token_failure(
        400,
        json!({"error": "invalid_request", "error_description": format!("AADSTS900144: weird thing with {SECRET}")}),
    )
    .await;
    match &err {
        GraphError::Token {
            kind,
            aadsts,
            description,
            ..
        } => {
            assert_eq!(*kind, TokenErrorKind::Other);
            assert_eq!(*aadsts, Some(900144));
            assert!(description.contains("weird thing with ***"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn token_endpoint_unavailable_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(token_path()))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/domains"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&server)
        .await;
    let client = client(&server);
    client.list_domains().await.unwrap();
    assert_eq!(client.stats().token_requests, 3);
}

#[tokio::test]
async fn a_401_renews_the_token_once() {
    let server = MockServer::start().await;
    let count = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path(token_path()))
        .respond_with(CountingToken {
            count: count.clone(),
            expires_in: 3599,
            delay: Duration::ZERO,
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(graph_error(
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        )))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(users_page(&["a"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let users: Vec<User> = client.list_users(&[], &no_progress).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_persistent_401_fails_after_one_renewal() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(token_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(TOKEN, 3599)))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/organization"))
        .respond_with(ResponseTemplate::new(401).set_body_json(graph_error(
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        )))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client.organization().await.unwrap_err();
    match &err {
        GraphError::Unauthorized { url, code, .. } => {
            assert_eq!(code, "InvalidAuthenticationToken");
            assert!(url.ends_with("/v1.0/organization"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains(TOKEN));
}

#[tokio::test]
async fn unreachable_token_endpoint_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let base = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let mut cfg =
        usersync_graph::GraphConfig::with_urls(base.clone(), base, TENANT, CLIENT_ID, SECRET);
    cfg.retry = fast_retry();
    let client = GraphClient::new(cfg).unwrap();
    let err = client.list_domains().await.unwrap_err();
    match &err {
        GraphError::Transport { url, attempts, .. } => {
            assert_eq!(*attempts, 4);
            assert!(url.ends_with("/oauth2/v2.0/token"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains(SECRET));
}

/// A delegated client exchanges its refresh token for each access token and hands the
/// new refresh token of each answer to its keeper.
#[tokio::test]
async fn a_delegated_client_renews_its_refresh_token_and_tells_its_keeper() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(token_path()))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-1"))
        .and(body_string_contains("offline_access"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "expires_in": 3599, "access_token": TOKEN,
            "refresh_token": "rt-2",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keeper = kept.clone();
    let refresh = usersync_graph::RefreshToken::new("rt-1").kept_by(move |t| {
        keeper.lock().unwrap().push(t.expose_secret().to_string());
    });
    let mut config = config(&server);
    config.sign_in = usersync_graph::SignIn::Delegated(refresh.clone());
    assert!(!format!("{config:?}").contains("rt-1"), "never printed");
    let client = GraphClient::new(config).unwrap();
    client.check_credentials().await.unwrap();
    assert_eq!(refresh.current().expose_secret(), "rt-2");
    assert_eq!(*kept.lock().unwrap(), vec!["rt-2".to_string()]);
}

#[tokio::test]
async fn a_delegated_answer_without_a_refresh_token_is_refused() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let mut config = config(&server);
    config.sign_in = usersync_graph::SignIn::Delegated(usersync_graph::RefreshToken::new("rt-1"));
    let client = GraphClient::new(config).unwrap();
    let error = client.check_credentials().await.unwrap_err();
    assert!(
        matches!(&error, GraphError::Malformed { detail, .. } if detail.contains("offline_access")),
        "{error}"
    );
}

#[tokio::test]
async fn a_revoked_sign_in_says_to_sign_in_again() {
    let error = token_failure(
        400,
        json!({"error": "invalid_grant", "error_description": "AADSTS50173: The provided grant has expired due to it being revoked.", "error_codes": [50173]}),
    )
    .await;
    match &error {
        GraphError::Token { kind, .. } => assert_eq!(*kind, TokenErrorKind::SignInExpired),
        other => panic!("{other:?}"),
    }
    assert!(
        error.to_string().contains("connect the source again"),
        "{error}"
    );
}
