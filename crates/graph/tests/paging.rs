mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::json;
use usersync_graph::{DirectoryObject, GraphError, User};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Mounts 3 user pages: a,b -> c,d -> e (skiptokens p2, p3).
async fn mount_three_pages(server: &MockServer) {
    let uri = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param_is_missing("$skiptoken"))
        .and(query_param("$top", "999"))
        .and(query_param(
            "$select",
            "id,userPrincipalName,mail,proxyAddresses,displayName,givenName,surname,accountEnabled,assignedLicenses,userType,companyName,jobTitle,department",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(users_page(
            &["a", "b"],
            Some(format!("{uri}/v1.0/users?$select=id&$top=999&$skiptoken=p2")),
        )))
        .expect(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "p2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(users_page(
            &["c", "d"],
            Some(format!(
                "{uri}/v1.0/users?$select=id&$top=999&$skiptoken=p3"
            )),
        )))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "p3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(users_page(&["e"], None)))
        .mount(server)
        .await;
}

fn ids(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.id.as_str()).collect()
}

#[tokio::test]
async fn pages_are_followed_with_progress() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    mount_three_pages(&server).await;
    let client = client(&server);
    let seen = Mutex::new(Vec::new());
    let users = client
        .list_users(usersync_graph::USER_PROPERTIES, &|n| {
            seen.lock().unwrap().push(n)
        })
        .await
        .unwrap();
    assert_eq!(ids(&users), ["a", "b", "c", "d", "e"]);
    assert_eq!(*seen.lock().unwrap(), [2, 4, 5]);
    let a = &users[0];
    assert_eq!(a.user_principal_name.as_deref(), Some("a@contoso.com"));
    assert_eq!(a.account_enabled, Some(true));
    assert_eq!(a.proxy_addresses, ["SMTP:a@contoso.com"]);
    assert_eq!(a.assigned_licenses[0].sku_id.as_deref(), Some("sku-1"));
    assert_eq!(client.stats().requests, 3);
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn retry_after_seconds_mid_paging() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "p2"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(graph_error("TooManyRequests", "Too many requests")),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    mount_three_pages(&server).await;
    let client = client(&server);
    let started = Instant::now();
    let users = client.list_users(&[], &no_progress).await.unwrap();
    assert_eq!(ids(&users), ["a", "b", "c", "d", "e"]);
    // The fast test policy would back off for < 50 ms; Retry-After says 1 s.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    let stats = client.stats();
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.retries, 1);
    assert_eq!(stats.requests, 4);
}

#[tokio::test]
async fn retry_after_http_date_mid_paging() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "p3"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", when.as_str()))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    mount_three_pages(&server).await;
    let client = client(&server);
    let started = Instant::now();
    let users = client.list_users(&[], &no_progress).await.unwrap();
    assert_eq!(users.len(), 5);
    // An HTTP date has a 1 s resolution: at least ~1 s must have been waited.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().throttled, 1);
}

#[tokio::test]
async fn service_unavailable_backs_off_then_succeeds() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "p2"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "p3"))
        .respond_with(ResponseTemplate::new(504))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    mount_three_pages(&server).await;
    let client = client(&server);
    let users = client.list_users(&[], &no_progress).await.unwrap();
    assert_eq!(users.len(), 5);
    let stats = client.stats();
    assert_eq!(stats.retries, 3);
    assert_eq!(stats.throttled, 3);
    assert_eq!(stats.requests, 6);
}

#[tokio::test]
async fn a_page_that_always_fails_gives_up_with_a_typed_error() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "p2"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(1)
        .expect(4) // first attempt + max_retries (3)
        .mount(&server)
        .await;
    mount_three_pages(&server).await;
    let client = client(&server);
    let err = client.list_users(&[], &no_progress).await.unwrap_err();
    match &err {
        GraphError::Throttled {
            url,
            status,
            attempts,
            ..
        } => {
            assert_eq!(*status, 503);
            assert_eq!(*attempts, 4);
            assert_eq!(url, &format!("{}/v1.0/users", server.uri()));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("after 4 attempts"), "{err}");
}

#[tokio::test]
async fn malformed_json_page_fails_naming_the_url() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "p2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(r#"{"value": [{"id": "c"}, "#, "application/json"),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    mount_three_pages(&server).await;
    let client = client(&server);
    let err = client.list_users(&[], &no_progress).await.unwrap_err();
    match &err {
        GraphError::Malformed { url, detail } => {
            assert_eq!(url, &format!("{}/v1.0/users", server.uri()));
            assert!(detail.contains("invalid JSON"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("skiptoken"));
}

#[tokio::test]
async fn page_without_value_fails() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "p3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"@odata.context": "x"})))
        .with_priority(1)
        .mount(&server)
        .await;
    mount_three_pages(&server).await;
    let client = client(&server);
    let err = client.list_users(&[], &no_progress).await.unwrap_err();
    assert!(
        matches!(&err, GraphError::Malformed { detail, .. } if detail.contains("no \"value\"")),
        "{err:?}"
    );
}

#[tokio::test]
async fn wrongly_typed_value_fails() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"value": [{"id": "a", "accountEnabled": "yes"}]})),
        )
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client.list_users(&[], &no_progress).await.unwrap_err();
    assert!(
        matches!(&err, GraphError::Malformed { detail, .. } if detail.contains("unexpected JSON content")),
        "{err:?}"
    );
}

#[tokio::test]
async fn next_link_to_a_foreign_host_is_refused() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(users_page(
            &["a"],
            Some("https://evil.example.com/v1.0/users?$skiptoken=x".into()),
        )))
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client.list_users(&[], &no_progress).await.unwrap_err();
    match &err {
        GraphError::Malformed { url, detail } => {
            assert_eq!(url, "https://evil.example.com/v1.0/users");
            assert!(detail.contains("refusing to send the access token"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn next_link_loop_is_detected() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let uri = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/groups"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"id": "g"}],
            "@odata.nextLink": format!("{uri}/v1.0/groups?$skiptoken=same"),
        })))
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client.list_groups(&[], &no_progress).await.unwrap_err();
    assert!(matches!(err, GraphError::Malformed { .. }), "{err:?}");
}

async fn forbidden_on(p: &str) -> GraphError {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path(p))
        .respond_with(ResponseTemplate::new(403).set_body_json(graph_error(
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )))
        .expect(1) // 403 is not retried
        .mount(&server)
        .await;
    let client = client(&server);
    match p {
        "/v1.0/users" => client.list_users(&[], &no_progress).await.map(|_| ()),
        "/v1.0/groups" => client.list_groups(&[], &no_progress).await.map(|_| ()),
        "/v1.0/groups/g-1/members" => client.group_members("g-1", false).await.map(|_| ()),
        "/v1.0/groups/g-1/transitiveMembers" => client.group_members("g-1", true).await.map(|_| ()),
        "/v1.0/domains" => client.list_domains().await.map(|_| ()),
        "/v1.0/organization" => client.organization().await.map(|_| ()),
        "/v1.0/subscribedSkus" => client.subscribed_skus().await.map(|_| ()),
        _ => unreachable!(),
    }
    .unwrap_err()
}

#[tokio::test]
async fn forbidden_names_the_missing_permission() {
    let err = forbidden_on("/v1.0/users").await;
    assert!(
        err.to_string().starts_with(
            "/users needs the application permission User.Read.All (or Directory.Read.All), which was not granted to the app in this tenant"
        ),
        "{err}"
    );
    match &err {
        GraphError::Forbidden {
            endpoint,
            permission,
            message,
        } => {
            assert_eq!(endpoint, "/users");
            assert_eq!(permission, "User.Read.All (or Directory.Read.All)");
            assert!(message.contains("Authorization_RequestDenied"));
        }
        other => panic!("{other:?}"),
    }
    let cases = [
        ("/v1.0/groups", "/groups", "Group.Read.All"),
        (
            "/v1.0/groups/g-1/members",
            "/groups/{id}/members",
            "GroupMember.Read.All",
        ),
        (
            "/v1.0/groups/g-1/transitiveMembers",
            "/groups/{id}/transitiveMembers",
            "GroupMember.Read.All",
        ),
        ("/v1.0/domains", "/domains", "Domain.Read.All"),
        (
            "/v1.0/organization",
            "/organization",
            "Organization.Read.All",
        ),
        (
            "/v1.0/subscribedSkus",
            "/subscribedSkus",
            "Organization.Read.All",
        ),
    ];
    for (p, want_endpoint, want_permission) in cases {
        match forbidden_on(p).await {
            GraphError::Forbidden {
                endpoint,
                permission,
                ..
            } => {
                assert_eq!(endpoint, want_endpoint);
                assert!(permission.starts_with(want_permission), "{p}: {permission}");
            }
            other => panic!("{p}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn not_found_and_other_errors() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/missing/members"))
        .respond_with(ResponseTemplate::new(404).set_body_json(graph_error(
            "Request_ResourceNotFound",
            "Resource 'missing' does not exist or one of its queried reference-property objects are not present.",
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/domains"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("request-id", "req-42")
                .set_body_json(graph_error("BadRequest", "Invalid request")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client.group_members("missing", false).await.unwrap_err();
    assert!(err.is_not_found());
    assert!(
        matches!(&err, GraphError::NotFound { code, .. } if code == "Request_ResourceNotFound")
    );
    let err = client.list_domains().await.unwrap_err();
    match err {
        GraphError::Server {
            status,
            code,
            request_id,
            ..
        } => {
            assert_eq!(status, 400);
            assert_eq!(code, "BadRequest");
            assert_eq!(request_id.as_deref(), Some("req-42"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn members_and_single_objects() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let uri = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/g%231/transitiveMembers"))
        .and(query_param("$select", "id"))
        .and(query_param_is_missing("$skiptoken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"@odata.type": "#microsoft.graph.user", "id": "u1"}],
            "@odata.nextLink": format!("{uri}/v1.0/groups/g%231/transitiveMembers?$select=id&$skiptoken=2"),
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/g%231/transitiveMembers"))
        .and(query_param("$skiptoken", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"@odata.type": "#microsoft.graph.group", "id": "g2"}],
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/organization"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [{
            "id": TENANT, "displayName": "Contoso",
            "verifiedDomains": [{"name": "contoso.com", "isDefault": true, "isInitial": false, "type": "Managed", "capabilities": "Email"}],
            "assignedPlans": [],
        }]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/subscribedSkus"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [{
            "skuId": "sku-1", "skuPartNumber": "ENTERPRISEPACK", "consumedUnits": 12,
            "prepaidUnits": {"enabled": 25, "suspended": 0, "warning": 1, "lockedOut": 0},
            "servicePlans": [{"servicePlanId": "x"}],
        }]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/domains"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"id": "contoso.com", "isVerified": true, "isDefault": true, "isInitial": false,
             "supportedServices": ["Email"], "authenticationType": "Managed", "passwordValidityPeriodInDays": null},
        ]})))
        .mount(&server)
        .await;
    let client = client(&server);
    let members: Vec<DirectoryObject> = client.group_members("g#1", true).await.unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].kind(), Some("user"));
    assert_eq!(members[1].kind(), Some("group"));
    let org = client.organization().await.unwrap();
    assert_eq!(org.display_name.as_deref(), Some("Contoso"));
    assert_eq!(
        org.verified_domains[0].domain_type.as_deref(),
        Some("Managed")
    );
    let skus = client.subscribed_skus().await.unwrap();
    assert_eq!(skus[0].prepaid_units.enabled, Some(25));
    assert_eq!(skus[0].consumed_units, Some(12));
    let domains = client.list_domains().await.unwrap();
    assert_eq!(domains[0].supported_services, ["Email"]);
    assert_eq!(domains[0].is_verified, Some(true));
}

#[tokio::test]
async fn unreachable_graph_is_a_transport_error_after_retries() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = config(&server);
    cfg.graph_url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let client = usersync_graph::GraphClient::new(cfg).unwrap();
    let err = client.list_users(&[], &no_progress).await.unwrap_err();
    match &err {
        GraphError::Transport { url, attempts, .. } => {
            assert_eq!(*attempts, 4);
            assert_eq!(url, &format!("http://127.0.0.1:{port}/v1.0/users"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.stats().retries, 3);
    let text = format!("{err} {err:?}");
    assert!(!text.contains("$select"), "{text}");
    assert!(err.to_string().to_lowercase().contains("connect"), "{err}");
}

#[tokio::test]
async fn a_next_link_naming_the_same_local_server_as_localhost_is_followed() {
    let server = MockServer::start().await;
    let port = server.address().port();
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param_is_missing("$skiptoken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(users_page(
            &["1"],
            Some(format!("http://localhost:{port}/v1.0/users?$skiptoken=2")),
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(users_page(&["2"], None)))
        .mount(&server)
        .await;
    let users = client(&server)
        .get_all::<User>("/users", &|_| {})
        .await
        .unwrap();
    assert_eq!(users.len(), 2);
}
