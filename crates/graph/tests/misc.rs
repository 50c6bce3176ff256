mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use usersync_graph::{DeltaItem, GraphClient, GraphConfig, GraphError, Group, User};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

// ------------------------------------------------------------------ in-flight bound

/// Records when each request arrived; answers after `delay`.
struct Recorder {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    delay: Duration,
}

impl Respond for Recorder {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.arrivals.lock().unwrap().push(Instant::now());
        ResponseTemplate::new(200)
            .set_body_json(json!({"value": [{"id": "contoso.com"}]}))
            .set_delay(self.delay)
    }
}

/// Largest number of requests in flight at once, given that each one stays
/// in flight for (at least) `delay` after it arrived.
fn max_in_flight(arrivals: &[Instant], delay: Duration) -> usize {
    let window = delay.mul_f64(0.9);
    arrivals
        .iter()
        .map(|&t| {
            arrivals
                .iter()
                .filter(|&&s| s <= t && t.duration_since(s) < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn run_in_flight(limit: usize, calls: usize) -> usize {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let delay = Duration::from_millis(200);
    Mock::given(method("GET"))
        .and(path("/v1.0/domains"))
        .respond_with(Recorder {
            arrivals: arrivals.clone(),
            delay,
        })
        .mount(&server)
        .await;
    let mut cfg = config(&server);
    cfg.max_in_flight = limit;
    let client = GraphClient::new(cfg).unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let c = client.clone();
        set.spawn(async move { c.list_domains().await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().unwrap().len(), 1);
    }
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), calls);
    max_in_flight(&arrivals, delay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_are_bounded() {
    assert_eq!(run_in_flight(3, 12).await, 3);
    assert_eq!(run_in_flight(1, 4).await, 1);
    // the default is 4
    assert_eq!(GraphConfig::global("t", "c", "s").max_in_flight, 4);
}

// ------------------------------------------------------------------ delta

#[tokio::test]
async fn users_delta_full_then_incremental() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let uri = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .and(query_param("$select", "id,displayName"))
        .and(query_param_is_missing("$skiptoken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"id": "u1", "displayName": "One"}],
            "@odata.nextLink": format!("{uri}/v1.0/users/delta?$skiptoken=s2"),
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .and(query_param("$skiptoken", "s2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [
                {"id": "u2", "displayName": "Two"},
                {"id": "u3", "@removed": {"reason": "changed"}},
            ],
            "@odata.deltaLink": format!("{uri}/v1.0/users/delta?$deltatoken=d1"),
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .and(query_param("$deltatoken", "d1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"id": "u1", "@removed": {"reason": "deleted"}}],
            "@odata.deltaLink": format!("{uri}/v1.0/users/delta?$deltatoken=d2"),
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .and(query_param("$deltatoken", "expired"))
        .respond_with(ResponseTemplate::new(410).set_body_json(graph_error(
            "SyncStateNotFound",
            "The sync state is not found.",
        )))
        .mount(&server)
        .await;
    let client = client(&server);
    let progress = Mutex::new(Vec::new());
    let full = client
        .users_delta(None, &["id", "displayName"], &|n| {
            progress.lock().unwrap().push(n)
        })
        .await
        .unwrap();
    assert_eq!(*progress.lock().unwrap(), [1, 3]);
    assert_eq!(
        full.delta_link,
        format!("{uri}/v1.0/users/delta?$deltatoken=d1")
    );
    assert_eq!(full.items.len(), 3);
    assert!(matches!(&full.items[0], DeltaItem::Changed(User { id, .. }) if id == "u1"));
    assert_eq!(
        full.items[2],
        DeltaItem::Removed {
            id: "u3".into(),
            reason: "changed".into()
        }
    );
    let next = client
        .users_delta(Some(&full.delta_link), &[], &no_progress)
        .await
        .unwrap();
    assert_eq!(
        next.delta_link,
        format!("{uri}/v1.0/users/delta?$deltatoken=d2")
    );
    assert_eq!(
        next.items,
        [DeltaItem::Removed {
            id: "u1".into(),
            reason: "deleted".into()
        }]
    );
    let err = client
        .users_delta(
            Some(&format!("{uri}/v1.0/users/delta?$deltatoken=expired")),
            &[],
            &no_progress,
        )
        .await
        .unwrap_err();
    match &err {
        GraphError::DeltaExpired { url, code, .. } => {
            assert_eq!(code, "SyncStateNotFound");
            assert!(!url.contains("expired"), "no query in {url}");
        }
        other => panic!("{other:?}"),
    }
    // a delta link on another host is refused before sending anything
    let err = client
        .users_delta(
            Some("https://evil.example.com/v1.0/users/delta?$deltatoken=x"),
            &[],
            &no_progress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn delta_without_delta_link_is_malformed() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client
        .users_delta(None, &[], &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn groups_delta_merges_split_member_lists() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    let uri = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/delta"))
        .and(query_param_is_missing("$skiptoken"))
        .and(query_param(
            "$select",
            "id,displayName,mail,mailEnabled,securityEnabled,groupTypes,proxyAddresses,mailNickname,members",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{
                "id": "g1", "displayName": "Sales", "groupTypes": ["Unified"], "mailEnabled": true,
                "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "u1"}],
            }],
            "@odata.nextLink": format!("{uri}/v1.0/groups/delta?$skiptoken=2"),
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/delta"))
        .and(query_param("$skiptoken", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [
                {"id": "g1", "members@delta": [
                    {"@odata.type": "#microsoft.graph.user", "id": "u2", "@removed": {"reason": "deleted"}}
                ]},
                {"id": "g2", "@removed": {"reason": "changed"}},
            ],
            "@odata.deltaLink": format!("{uri}/v1.0/groups/delta?$deltatoken=x"),
        })))
        .mount(&server)
        .await;
    let client = client(&server);
    let delta = client.groups_delta(None, &[], &no_progress).await.unwrap();
    assert_eq!(delta.items.len(), 2);
    let g: &Group = delta.items[0].changed().unwrap();
    assert_eq!(g.display_name.as_deref(), Some("Sales"));
    assert_eq!(g.group_types, ["Unified"]);
    assert_eq!(g.members_delta.len(), 2);
    assert!(!g.members_delta[0].is_removed());
    assert!(g.members_delta[1].is_removed());
    assert!(matches!(&delta.items[1], DeltaItem::Removed { id, .. } if id == "g2"));
}

// ------------------------------------------------------------------ secrets

#[test]
fn config_errors_are_typed() {
    let mut cfg = GraphConfig::global("contoso.onmicrosoft.com", "app", "s");
    cfg.authority_url = url::Url::parse("ftp://login.example.com").unwrap();
    let err = GraphClient::new(cfg).unwrap_err();
    assert!(
        matches!(
            err,
            GraphError::Config {
                field: "authority_url",
                ..
            }
        ),
        "{err:?}"
    );
    let mut cfg = GraphConfig::global("contoso.onmicrosoft.com", "app", "s");
    cfg.extra_root_certificates_pem = vec![b"not a pem".to_vec()];
    let err = GraphClient::new(cfg).unwrap_err();
    assert!(
        matches!(
            err,
            GraphError::Config {
                field: "extra_root_certificates_pem",
                ..
            }
        ),
        "{err:?}"
    );
    GraphClient::new(GraphConfig::us_government("t", "a", "s")).unwrap();
    GraphClient::new(GraphConfig::china("t", "a", "s")).unwrap();
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let client = GraphClient::new(GraphConfig::global("t", "a", "s")).unwrap();
    assert_send(client.list_users(&[], &no_progress));
    assert_send(client.list_groups(&[], &no_progress));
    assert_send(client.group_members("g", true));
    assert_send(client.users_delta(None, &[], &no_progress));
    assert_send(client.groups_delta(None, &[], &no_progress));
    assert_send(client.mailbox_purposes(&[], &no_progress));
    assert_send(client.managers(&[], &no_progress));
    assert_send(client.batch_get(Vec::new()));
    assert_send(client.get_all::<User>("/users", &no_progress));
    assert_send(client.organization());
    fn assert_sync<T: Send + Sync + Clone>(_: &T) {}
    assert_sync(&client);
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<GraphError>();
}
