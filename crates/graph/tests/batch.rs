mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use usersync_graph::GraphError;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A `$batch` endpoint answering each sub-request through `answer`, and
/// recording the sub-request URLs of every POST.
struct BatchResponder<F> {
    posts: Arc<Mutex<Vec<Vec<String>>>>,
    answer: F,
}

impl<F> Respond for BatchResponder<F>
where
    F: Fn(&str, usize) -> (u16, Value, Value) + Send + Sync,
{
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = req.body_json().unwrap();
        let requests = body["requests"].as_array().unwrap();
        assert!(requests.len() <= 20, "more than 20 sub-requests");
        let urls: Vec<String> = requests
            .iter()
            .map(|r| {
                assert_eq!(r["method"], "GET");
                r["url"].as_str().unwrap().to_owned()
            })
            .collect();
        let mut posts = self.posts.lock().unwrap();
        let responses: Vec<Value> = requests
            .iter()
            .map(|r| {
                let url = r["url"].as_str().unwrap();
                let seen_before = posts.iter().flatten().filter(|u| *u == url).count();
                let (status, headers, body) = (self.answer)(url, seen_before);
                json!({"id": r["id"], "status": status, "headers": headers, "body": body})
            })
            .rev() // Graph does not promise any order
            .collect();
        posts.push(urls);
        ResponseTemplate::new(200).set_body_json(json!({"responses": responses}))
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

async fn mount_batch<F>(server: &MockServer, answer: F) -> Arc<Mutex<Vec<Vec<String>>>>
where
    F: Fn(&str, usize) -> (u16, Value, Value) + Send + Sync + 'static,
{
    let posts = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .respond_with(BatchResponder {
            posts: posts.clone(),
            answer,
        })
        .mount(server)
        .await;
    posts
}

#[tokio::test]
async fn batch_of_45_with_one_throttled_sub_response() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let posts = mount_batch(&server, |url, seen_before| {
        if url.starts_with("/users/user-7/") && seen_before == 0 {
            (
                429,
                json!({"Retry-After": "1"}),
                graph_error("TooManyRequests", "Please retry"),
            )
        } else if url.starts_with("/users/user-3/") {
            (
                404,
                json!({}),
                graph_error("ErrorItemNotFound", "no mailbox"),
            )
        } else if url.starts_with("/users/user-4/") {
            (
                200,
                json!({"Content-Type": "application/json"}),
                json!({"@odata.context": "x", "userPurpose": "shared"}),
            )
        } else if url.starts_with("/users/user-5/") {
            (
                403,
                json!({}),
                graph_error("ErrorAccessDenied", "Access is denied."),
            )
        } else {
            (200, json!({}), json!({"userPurpose": "user"}))
        }
    })
    .await;
    let client = client(&server);
    let progress = Mutex::new(Vec::new());
    let started = Instant::now();
    let outcome = client
        .mailbox_purposes(&ids(45), &|n| progress.lock().unwrap().push(n))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured"
    );

    let posts = posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 4, "3 batches + 1 retry: {posts:?}");
    let mut sizes: Vec<usize> = posts[..3].iter().map(Vec::len).collect();
    sizes.sort();
    assert_eq!(sizes, [5, 20, 20]);
    assert_eq!(
        posts[3],
        ["/users/user-7/mailboxSettings?$select=userPurpose"]
    );

    assert_eq!(outcome.results.len(), 44);
    assert_eq!(outcome.results["user-0"].as_deref(), Some("user"));
    assert_eq!(outcome.results["user-7"].as_deref(), Some("user"));
    assert_eq!(outcome.results["user-3"], None);
    assert_eq!(outcome.results["user-4"].as_deref(), Some("shared"));
    assert_eq!(outcome.errors.len(), 1);
    assert!(matches!(
        &outcome.errors["user-5"],
        GraphError::Forbidden { permission, .. } if permission == "MailboxSettings.Read"
    ));

    let progress = progress.lock().unwrap().clone();
    assert_eq!(progress.last(), Some(&45));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]));

    let stats = client.stats();
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.batch_sub_requests, 46);
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.retries, 1);
}

#[tokio::test]
async fn all_forbidden_mailboxes_fail_the_call() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    mount_batch(&server, |_, _| {
        (
            403,
            json!({}),
            graph_error(
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ),
        )
    })
    .await;
    let client = client(&server);
    let err = client
        .mailbox_purposes(&ids(25), &no_progress)
        .await
        .unwrap_err();
    match &err {
        GraphError::Forbidden {
            endpoint,
            permission,
            message,
        } => {
            assert_eq!(endpoint, "/users/{id}/mailboxSettings");
            assert_eq!(permission, "MailboxSettings.Read");
            assert!(message.contains("ErrorAccessDenied"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("MailboxSettings.Read"));
}

#[tokio::test]
async fn managers_map_404_to_none() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let posts = mount_batch(&server, |url, _| {
        assert!(url.ends_with("/manager?$select=id"), "{url}");
        if url.contains("user-1/") {
            (
                404,
                json!({}),
                graph_error("Request_ResourceNotFound", "no manager"),
            )
        } else {
            (
                200,
                json!({}),
                json!({"@odata.type": "#microsoft.graph.user", "id": "boss"}),
            )
        }
    })
    .await;
    let client = client(&server);
    let mut input = ids(3);
    input.push("user-0".into()); // duplicates are asked once
    let managers = client.managers(&input, &no_progress).await.unwrap();
    assert_eq!(managers.len(), 3);
    assert_eq!(managers["user-0"].as_deref(), Some("boss"));
    assert_eq!(managers["user-1"], None);
    assert_eq!(posts.lock().unwrap().iter().flatten().count(), 3);
}

#[tokio::test]
async fn managers_fail_on_other_errors() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    mount_batch(&server, |_, _| {
        (
            403,
            json!({}),
            graph_error("Authorization_RequestDenied", "Insufficient privileges"),
        )
    })
    .await;
    let client = client(&server);
    let err = client.managers(&ids(2), &no_progress).await.unwrap_err();
    match err {
        GraphError::Forbidden {
            endpoint,
            permission,
            ..
        } => {
            assert_eq!(endpoint, "/users/{id}/manager");
            assert!(permission.starts_with("User.Read.All"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn persistently_throttled_sub_requests_are_returned_as_such() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let posts = mount_batch(&server, |url, _| {
        if url.starts_with("/users/x/") {
            (503, json!({}), Value::Null)
        } else {
            (200, json!({}), json!({"id": url}))
        }
    })
    .await;
    let client = client(&server);
    let urls: Vec<String> = vec!["/users/a/manager".into(), "users/x/manager".into()];
    let responses = client.batch_get(urls).await.unwrap();
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0].status, 200);
    assert_eq!(responses[0].body["id"], "/users/a/manager");
    assert_eq!(responses[1].status, 503);
    assert_eq!(responses[1].url, "/users/x/manager");
    // 1 + max_retries (3) POSTs, the retries carrying only the throttled one.
    {
        let posts = posts.lock().unwrap();
        assert_eq!(posts.len(), 4);
        assert!(posts[1..].iter().all(|p| p.len() == 1));
    }
    // and mailbox lookups report it per id
    let outcome = client
        .mailbox_purposes(&["a".into(), "x".into()], &no_progress)
        .await
        .unwrap();
    assert_eq!(outcome.results["a"], None); // body has no userPurpose
    assert!(matches!(
        outcome.errors["x"],
        GraphError::Throttled {
            status: 503,
            attempts: 4,
            ..
        }
    ));
}

#[tokio::test]
async fn batch_post_itself_is_retried_and_input_order_kept() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_batch(&server, |url, _| (200, json!({}), json!({"url": url}))).await;
    let client = client(&server);
    let urls: Vec<String> = (0..50).map(|i| format!("/users/u{i}?$select=id")).collect();
    let responses = client.batch_get(urls.clone()).await.unwrap();
    let got: Vec<&str> = responses
        .iter()
        .map(|r| r.body["url"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = urls.iter().map(String::as_str).collect();
    assert_eq!(got, want);
    let index_ids: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(
        responses.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        index_ids
    );
    assert_eq!(client.stats().requests, 4);
    assert!(client.batch_get(Vec::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_sub_response_is_malformed() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"responses": [
                {"id": "0", "status": 200, "body": {}}
            ]})),
        )
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client
        .batch_get(vec!["/users/a".into(), "/users/b".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::Malformed { .. }), "{err:?}");
}
