//! The REST API over HTTP, on SQLite and PostgreSQL: a real server on a loopback port, a
//! simulated tenant, tokens made as the CLI makes them.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use usersync_core::Role;
use usersync_engine::{Engine, EngineOptions};
use usersync_sim::{SimConfig, Simulator};
use usersync_store::Store;
use usersync_store::testing::{discard, open_fresh};

mod common;

usersync_store::on_both_backends!(
    a_customer_admin_reaches_nothing_of_another_customer,
    every_error_kind_is_answered_in_one_shape,
    a_refusing_failing_or_broken_tenant_and_broken_data_answer_by_kind,
    a_source_reconnects_with_a_new_secret_as_far_as_its_role_allows,
    a_connection_is_tested_and_a_removed_user_restored_through_the_api,
    preview_sync_and_a_users_list_walked_by_cursor,
    a_token_reaches_no_further_than_its_maker,
    options_and_filters_are_set_through_the_api,
    what_the_cli_does_the_api_does,
);

struct Api {
    sim: Simulator,
    store: Store,
    engine: Engine,
    url: String,
    base: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The OpenAPI document the server serves: every answer is checked against it.
    contract: common::contract::Contract,
    /// Contoso: a connected tenant. Fabrikam: a domain and a user added by hand.
    contoso: i64,
    fabrikam: i64,
    source: i64,
}

async fn api(url: String) -> Api {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let store = open_fresh(&url).await;
    let contoso = store.add_customer("Contoso").await.unwrap().id;
    let source = common::connect_tenant(&store, contoso, &sim).await;
    let engine = Engine::new(
        store.clone(),
        EngineOptions {
            actor: "test".into(),
            ..EngineOptions::default()
        },
    );
    let fabrikam = engine.add_customer("Fabrikam").await.unwrap().id;
    engine
        .add_domain("Fabrikam", "fabrikam.example")
        .await
        .unwrap();
    engine
        .add_user(usersync_engine::NewUser {
            customer: "Fabrikam".into(),
            address: "ann@fabrikam.example".into(),
            display_name: Some("Ann".into()),
            mailbox_type: usersync_core::MailboxType::User,
        })
        .await
        .unwrap();
    let router_engine = engine.clone();
    let (base, stop) =
        common::serve(|_| usersync_web::router(router_engine, usersync_web::WebOptions::default()))
            .await;
    let base = format!("{base}/api/v1");
    let document = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Api {
        contract: common::contract::Contract::new(document),
        sim,
        store,
        engine,
        url,
        base,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        stop: Some(stop),
        contoso,
        fabrikam,
        source,
    }
}

impl Api {
    async fn token(&self, role: Role, customer: Option<&str>) -> String {
        self.engine
            .create_token("test", role, customer)
            .await
            .unwrap()
            .token
            .expose()
            .to_string()
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() && status == StatusCode::NO_CONTENT {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"))
        };
        self.contract
            .check(method.as_str(), path, status.as_u16(), &value);
        (status, value)
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(Some(token), Method::GET, path, None).await
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Some(token), Method::POST, path, Some(body)).await
    }

    async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.sim.shutdown().await;
        self.store.close().await;
        discard(&self.url).await;
    }
}

/// The error of an answer: its code and field.
fn error(body: &Value) -> (&str, Option<&str>) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (e["code"].as_str().unwrap(), e["field"].as_str())
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

async fn a_customer_admin_reaches_nothing_of_another_customer(url: String) {
    let api = api(url).await;
    let provider = api.token(Role::ProviderAdmin, None).await;
    api.engine
        .sync(api.source, &usersync_engine::NoProgress)
        .await
        .unwrap();
    let run = api.engine.runs(Some(api.source), &[], 1).await.unwrap()[0].id;
    let fabrikam = api.token(Role::CustomerAdmin, Some("fabrikam")).await;

    let (status, all) = api.get(&provider, "/customers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&all), ["Contoso", "Fabrikam"]);
    let (_, own) = api.get(&fabrikam, "/customers").await;
    assert_eq!(names(&own), ["Fabrikam"]);
    let (status, users) = api
        .get(&fabrikam, &format!("/customers/{}/users", api.fabrikam))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(users["items"][0]["address"], "ann@fabrikam.example");

    // Everything of Contoso's answers as if it did not exist, as an id nobody has does.
    let c = api.contoso;
    for path in [
        format!("/customers/{c}"),
        format!("/customers/{c}/users"),
        format!("/customers/{c}/domains"),
        format!("/customers/{c}/sources"),
        format!("/sources/{}", api.source),
        format!("/sources/{}/runs", api.source),
        format!("/runs/{run}"),
        format!("/audit?customer_id={c}"),
        "/customers/999999".to_string(),
    ] {
        let (status, body) = api.get(&fabrikam, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(error(&body).0, "not_found", "{path}");
        assert!(
            !body.to_string().contains("Contoso"),
            "{path} leaks: {body}"
        );
    }
    for (path, body) in [
        (
            format!("/customers/{c}/domains"),
            json!({"name": "stolen.example"}),
        ),
        (format!("/sources/{}/sync", api.source), json!({})),
        (format!("/sources/{}/preview", api.source), json!({})),
        (format!("/runs/{run}/confirm"), json!({})),
    ] {
        let (status, answer) = api.post(&fabrikam, &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
    // Its own audit log holds nothing of Contoso's.
    let (_, audit) = api.get(&fabrikam, "/audit").await;
    let entries = audit["items"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e["customer_id"] == api.fabrikam),
        "{audit}"
    );
    // The provider sees the run, and Contoso's users.
    let (status, seen) = api.get(&provider, &format!("/runs/{run}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["status"], "succeeded");
    api.close().await;
}

/// The errors that come from beyond the request: the tenant refuses, fails or cannot be
/// reached, stored data cannot be read.
async fn a_refusing_failing_or_broken_tenant_and_broken_data_answer_by_kind(url: String) {
    let api = api(url).await;
    let provider = api.token(Role::ProviderAdmin, None).await;
    let options = format!("/sources/{}/options", api.source);
    let select = json!({"selected_groups": ["Sales"]});
    let patch = |body: Value| api.call(Some(&provider), Method::PATCH, &options, Some(body));

    // Consent withdrawn in the tenant: the check of the named group cannot read it.
    api.sim.set_consented(false);
    let (status, body) = patch(select.clone()).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::BAD_GATEWAY, "tenant_refused"),
        "{body}"
    );
    api.sim.set_consented(true);

    // Graph failing on its side (5xx): try again later.
    api.sim
        .inject_fault(usersync_sim::Fault::status("/v1.0/groups", 500));
    let (status, body) = patch(select.clone()).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{body}"
    );
    // Graph refusing the request itself: a fault of ours, not the tenant's.
    api.sim.clear_faults();
    api.sim
        .inject_fault(usersync_sim::Fault::status("/v1.0/groups", 400));
    let (status, body) = patch(select.clone()).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        "{body}"
    );
    api.sim.clear_faults();
    // Nothing of it changed the options.
    let (_, now) = api.get(&provider, &options).await;
    assert_eq!(now["selected_groups"], "", "{now}");

    // A source whose stored settings are not readable.
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&api.url).await.unwrap();
    // The id is ours, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sources SET settings = 'not json' WHERE id = {}",
        api.source
    )))
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    let (status, body) = api
        .get(&provider, &format!("/sources/{}", api.source))
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
        "{body}"
    );
    api.close().await;
}

async fn a_source_reconnects_with_a_new_secret_as_far_as_its_role_allows(url: String) {
    let api = api(url).await;
    let provider = api.token(Role::ProviderAdmin, None).await;
    let admin = api.token(Role::CustomerAdmin, Some("Contoso")).await;
    let reader = api.token(Role::ReadOnly, None).await;
    let path = format!("/sources/{}/reconnect", api.source);
    let info = api.sim.info().clone();

    // A wrong secret: the answer says the sign-in fails, and never repeats the secret.
    let (status, body) = api
        .post(&admin, &path, json!({"client_secret": "wr0ng-s3cret"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains("wr0ng-s3cret"), "{body}");
    let sign_in = &body["connection"]["checks"][0];
    assert_ne!(sign_in["status"], "granted", "{body}");
    // The right one: every permission granted again.
    let (status, body) = api
        .post(
            &admin,
            &path,
            json!({"client_id": info.client_id, "client_secret": info.client_secret}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains(&info.client_secret), "{body}");
    let checks = body["connection"]["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .all(|c| c["status"] == "granted" || c["required"] == false),
        "{body}"
    );
    assert_eq!(
        body["source"]["settings"]["client_id"],
        info.client_id.as_str()
    );

    // Other endpoints are the provider's to choose; a reader changes nothing; an empty
    // change says what to give.
    let elsewhere = json!({"authority_url": "https://login.example.net"});
    let (status, body) = api.post(&admin, &path, elsewhere.clone()).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, _) = api
        .post(&reader, &path, json!({"client_secret": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api.post(&provider, &path, json!({})).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
    );
    let (status, body) = api
        .post(&provider, &path, json!({"client_secret": " "}))
        .await;
    assert_eq!(error(&body), ("invalid", Some("client_secret")), "{status}");
    // Fabrikam's admin does not see Contoso's source.
    let other = api.token(Role::CustomerAdmin, Some("Fabrikam")).await;
    let (status, _) = api.post(&other, &path, json!({"client_secret": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nor learns that Contoso has the tenant, trying to connect it too: refused, naming
    // no customer and no source (the provider admin is told).
    let connect =
        json!({"tenant_id": info.tenant_id, "client_id": info.client_id, "client_secret": "x"});
    let (status, body) = api
        .post(
            &other,
            &format!("/customers/{}/sources", api.fabrikam),
            connect.clone(),
        )
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::CONFLICT, "conflict"),
        "{body}"
    );
    let text = body.to_string();
    assert!(
        !text.contains("Contoso") && !text.contains("source #"),
        "{text}"
    );
    let (status, body) = api
        .post(
            &provider,
            &format!("/customers/{}/sources", api.fabrikam),
            connect,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.to_string().contains("Contoso"), "{body}");
    // The audit log says who reconnected it.
    let (_, audit) = api.get(&provider, "/audit?limit=50").await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("source."))
                && e["actor"].as_str().is_some_and(|a| a.contains("token"))),
        "{audit}"
    );
    api.close().await;
}

async fn a_connection_is_tested_and_a_removed_user_restored_through_the_api(url: String) {
    let api = api(url).await;
    let admin = api.token(Role::CustomerAdmin, Some("Contoso")).await;
    let reader = api.token(Role::ReadOnly, None).await;
    let test = format!("/sources/{}/test", api.source);

    // "Test connection": each permission, granted or missing; it calls the tenant, so
    // a reader may not (as for a preview).
    let (status, _) = api.post(&reader, &test, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, report) = api.post(&admin, &test, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["status"] == "granted"), "{report}");
    api.sim.set_denied_permissions(&["MailboxSettings.Read"]);
    let (_, report) = api.post(&admin, &test, json!({})).await;
    let missing: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "missing")
        .map(|c| c["permission"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["MailboxSettings.Read"], "{report}");
    api.sim.set_denied_permissions(&[]);

    // A user deleted in the tenant is removed by the next sync, and restored here.
    api.engine
        .sync(api.source, &usersync_engine::NoProgress)
        .await
        .unwrap();
    let users = format!("/customers/{}/users", api.contoso);
    let (_, page) = api.get(&admin, &format!("{users}?limit=1")).await;
    let address = page["items"][0]["address"].as_str().unwrap().to_string();
    let object = page["items"][0]["source_object_id"]
        .as_str()
        .unwrap()
        .to_string();
    api.sim.tenant().delete_user(&object).unwrap();
    api.engine
        .sync(api.source, &usersync_engine::NoProgress)
        .await
        .unwrap();
    let (_, removed) = api
        .get(&admin, &format!("{users}?status=removed&search={address}"))
        .await;
    assert_eq!(
        removed["items"][0]["address"],
        address.as_str(),
        "{removed}"
    );
    let restore = format!("{users}/{address}/restore");
    let (status, _) = api.post(&reader, &restore, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a reader restores nothing");
    let (status, user) = api.post(&admin, &restore, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["status"], "active");
    assert_eq!(user["address"], address.as_str());
    let (status, body) = api
        .post(
            &admin,
            &format!("{users}/nobody@nowhere.example/restore"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::NOT_FOUND, "not_found")
    );
    api.close().await;
}

async fn every_error_kind_is_answered_in_one_shape(url: String) {
    let api = api(url).await;
    let provider = api.token(Role::ProviderAdmin, None).await;
    let reader = api.token(Role::ReadOnly, None).await;

    // No token, a wrong one, a revoked one: 401, with the scheme to use.
    let (status, body) = api.call(None, Method::GET, "/customers", None).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let (status, _) = api.get("ust_not-a-token", "/customers").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let revoked = api
        .engine
        .create_token("old", Role::ReadOnly, None)
        .await
        .unwrap();
    let (status, _) = api
        .call(
            Some(&provider),
            Method::DELETE,
            &format!("/tokens/{}", revoked.record.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.get(revoked.token.expose(), "/customers").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = api
        .http
        .get(format!("{}/customers", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    // Bad input names its field.
    let (status, body) = api.post(&provider, "/customers", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error(&body), ("invalid", Some("name")));
    let (status, body) = api
        .post(&provider, "/customers", json!({"name": "  "}))
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, ("invalid", Some("name")))
    );
    let path = format!("/customers/{}/domains", api.fabrikam);
    let (status, body) = api
        .post(&provider, &path, json!({"name": "not a domain"}))
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, ("invalid", Some("name")))
    );
    let path = format!("/customers/{}/users?limit=0", api.fabrikam);
    let (status, body) = api.get(&provider, &path).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, ("invalid", Some("limit")))
    );
    let path = format!("/customers/{}/users?type=robot", api.fabrikam);
    let (_, body) = api.get(&provider, &path).await;
    assert_eq!(error(&body), ("invalid", Some("type")));
    let path = format!("/customers/{}/users?cursor=%%%", api.fabrikam);
    let (_, body) = api.get(&provider, &path).await;
    assert_eq!(error(&body), ("invalid", Some("cursor")));
    let response = api
        .http
        .post(format!("{}/customers", api.base))
        .bearer_auth(&provider)
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error(&body), ("unsupported_media_type", None));
    api.contract.check("POST", "/customers", 415, &body);

    // A conflict, a refusal, nothing there.
    let (status, body) = api
        .post(&provider, "/customers", json!({"name": "contoso"}))
        .await;
    assert_eq!((status, error(&body).0), (StatusCode::CONFLICT, "conflict"));
    let (status, body) = api
        .post(&reader, "/customers", json!({"name": "Northwind"}))
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let path = format!("/sources/{}/sync", api.source);
    let (status, _) = api.post(&reader, &path, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api.get(&provider, "/nothing/here").await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, body) = api.post(&provider, "/runs/424242/confirm", json!({})).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::NOT_FOUND, "not_found")
    );

    // A run that is not held has no removals to confirm.
    api.engine
        .sync(api.source, &usersync_engine::NoProgress)
        .await
        .unwrap();
    let run = api.engine.runs(Some(api.source), &[], 1).await.unwrap()[0].id;
    let (status, body) = api
        .post(&provider, &format!("/runs/{run}/confirm"), json!({}))
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::CONFLICT, "conflict"),
        "{body}"
    );

    // A made customer, and who made it in the audit log.
    let (status, made) = api
        .post(&provider, "/customers", json!({"name": "Northwind"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(made["name"], "Northwind");
    let (_, audit) = api.get(&provider, "/audit?limit=5").await;
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "customer.add" && e["object"] == "Northwind")
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(
        entry["actor"].as_str().unwrap().starts_with("token #"),
        "{entry}"
    );
    api.close().await;
}

async fn preview_sync_and_a_users_list_walked_by_cursor(url: String) {
    let api = api(url).await;
    let provider = api.token(Role::ProviderAdmin, None).await;
    let path = format!("/sources/{}/preview", api.source);
    let (status, preview) = api.post(&provider, &path, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let adds = preview["plan"]["counts"]["add"].as_u64().unwrap();
    assert!(adds > 10, "{preview}");
    assert_eq!(
        preview["plan"]["add"].as_array().unwrap().len() as u64,
        adds
    );
    assert!(
        api.store
            .users(api.contoso, false)
            .await
            .unwrap()
            .is_empty(),
        "a preview wrote users"
    );

    // Sync & Save is queued; a worker (here: this process) executes it.
    let path = format!("/sources/{}/sync", api.source);
    let (status, queued) = api.post(&provider, &path, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["status"], "queued");
    let run = queued["run_id"].as_i64().unwrap();
    let (_, body) = api.get(&provider, &format!("/runs/{run}")).await;
    assert_eq!(body["status"], "queued");
    let outcome = api
        .engine
        .sync(api.source, &usersync_engine::NoProgress)
        .await
        .unwrap();
    assert_eq!(outcome.run_id, run, "the queued run was the one executed");
    let (_, body) = api.get(&provider, &format!("/runs/{run}")).await;
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["added"].as_u64(), Some(adds));

    // The users, three at a time, walk the whole list once, in order.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/customers/{}/users?limit=3", api.contoso);
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = api.get(&provider, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for u in page["items"].as_array().unwrap() {
            seen.push(u["address"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let all: Vec<String> = api
        .store
        .users(api.contoso, false)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.address.to_string())
        .collect();
    assert_eq!(seen, all);
    assert_eq!(pages, all.len().div_ceil(3));
    // Search and type filters.
    let first = &all[0];
    let local = first.split('@').next().unwrap().to_uppercase();
    let path = format!("/customers/{}/users?search={local}", api.contoso);
    let (_, found) = api.get(&provider, &path).await;
    let found: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["address"].as_str().unwrap())
        .collect();
    assert!(found.contains(&first.as_str()), "{found:?}");
    let path = format!("/customers/{}/users?type=shared&limit=1000", api.contoso);
    let (_, shared) = api.get(&provider, &path).await;
    let shared = shared["items"].as_array().unwrap();
    assert!(shared.iter().all(|u| u["type"] == "shared"), "{shared:?}");
    let want = api
        .store
        .users(api.contoso, false)
        .await
        .unwrap()
        .iter()
        .filter(|u| u.mailbox_type == usersync_core::MailboxType::Shared)
        .count();
    assert_eq!(shared.len(), want);

    // The source's runs and the audit log are pages too, newest first, walked by cursor.
    for (list, key) in [
        (format!("/sources/{}/runs", api.source), "id"),
        ("/audit".to_string(), "id"),
    ] {
        let (_, whole) = api.get(&provider, &format!("{list}?limit=1000")).await;
        let whole: Vec<i64> = whole["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_i64().unwrap())
            .collect();
        assert!(whole.len() >= 2, "{list}: {whole:?}");
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("{list}?limit=1&cursor={c}"),
                None => format!("{list}?limit=1"),
            };
            let (status, page) = api.get(&provider, &path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            walked.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r[key].as_i64().unwrap()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(walked, whole, "{list}: every entry once, in order");
        let (_, body) = api
            .get(&provider, &format!("{list}?cursor=bm90IGFuIGlk"))
            .await;
        assert_eq!(error(&body), ("invalid", Some("cursor")), "{list}");
    }
    let (status, held) = api
        .get(
            &provider,
            &format!("/sources/{}/runs?status=succeeded", api.source),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        held["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "succeeded"),
        "{held}"
    );
    let (_, body) = api
        .get(
            &provider,
            &format!("/sources/{}/runs?status=finished", api.source),
        )
        .await;
    assert_eq!(error(&body), ("invalid", Some("status")));
    api.close().await;
}

async fn a_token_reaches_no_further_than_its_maker(url: String) {
    let api = api(url).await;
    let admin = api.token(Role::CustomerAdmin, Some("Fabrikam")).await;
    let f = api.fabrikam;
    let (status, made) = api
        .post(
            &admin,
            "/tokens",
            json!({"name": "ci", "role": "read_only", "customer_id": f}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let reader = made["token"].as_str().unwrap().to_string();
    assert!(reader.starts_with("ust_"));
    let (status, _) = api.get(&reader, &format!("/customers/{f}/users")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .post(
            &admin,
            "/tokens",
            json!({"name": "x", "role": "provider_admin"}),
        )
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let (status, _) = api
        .post(
            &admin,
            "/tokens",
            json!({"name": "x", "role": "read_only", "customer_id": api.contoso}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api
        .post(
            &admin,
            "/tokens",
            json!({"name": "x", "role": "owner", "customer_id": f}),
        )
        .await;
    assert_eq!(error(&body), ("invalid", Some("role")), "{status} {body}");
    // Listing shows no token's text or hash.
    let (_, list) = api.get(&admin, "/tokens").await;
    assert!(!list.to_string().contains(&reader), "{list}");
    assert!(!list.to_string().contains("hash"), "{list}");
    let _ = &api.store;
    api.close().await;
}

async fn options_and_filters_are_set_through_the_api(url: String) {
    let api = api(url).await;
    let provider = api.token(Role::ProviderAdmin, None).await;
    let reader = api.token(Role::ReadOnly, None).await;
    let options = format!("/sources/{}/options", api.source);
    let (status, now) = api.get(&provider, &options).await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!(now["auto_sync"], "false");
    let (status, set) = api
        .call(
            Some(&provider),
            Method::PATCH,
            &options,
            Some(json!({"auto_sync": true, "interval": "2h"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(
        (set["auto_sync"].as_str(), set["interval"].as_str()),
        (Some("true"), Some("2h"))
    );
    // A bad value names its option, and nothing of the request is kept.
    let (status, body) = api
        .call(
            Some(&provider),
            Method::PATCH,
            &options,
            Some(json!({"auto_sync": false, "interval": "1m"})),
        )
        .await;
    assert_eq!(
        (status, error(&body)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ("invalid", Some("interval"))
        ),
        "{body}"
    );
    let (_, now) = api.get(&provider, &options).await;
    assert_eq!(
        (now["auto_sync"].as_str(), now["interval"].as_str()),
        (Some("true"), Some("2h"))
    );
    let (_, body) = api
        .call(
            Some(&provider),
            Method::PATCH,
            &options,
            Some(json!({"colour": "blue"})),
        )
        .await;
    assert_eq!(error(&body), ("invalid", Some("colour")), "{body}");
    let (status, _) = api
        .call(
            Some(&reader),
            Method::PATCH,
            &options,
            Some(json!({"auto_sync": false})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A filter with a destination group: the tenant's Sales people land in it.
    let domain = api.sim.info().mail_domains[0].clone();
    let mut seller = usersync_sim::SimUser::member("Sam Seller", &format!("sam.seller@{domain}"));
    seller.department = Some("Sales".into());
    api.sim.tenant().add_user(seller).unwrap();
    let filters = format!("/sources/{}/filters", api.source);
    let (status, body) = api
        .post(
            &provider,
            &filters,
            json!({"group": "Sales", "rule": "department equals"}),
        )
        .await;
    assert_eq!(
        (status, error(&body).1),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("rule")),
        "{body}"
    );
    let (status, rule) = api
        .post(
            &provider,
            &filters,
            json!({"group": "Sales", "rule": "department equals Sales", "create_group": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let (_, list) = api.get(&provider, &filters).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    api.engine
        .sync(api.source, &usersync_engine::NoProgress)
        .await
        .unwrap();
    let (_, sales) = api
        .get(
            &provider,
            &format!("/customers/{}/users?group=sales", api.contoso),
        )
        .await;
    let sales: Vec<&str> = sales["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["address"].as_str().unwrap())
        .collect();
    assert!(
        sales.contains(&format!("sam.seller@{domain}").as_str()),
        "{sales:?}"
    );
    // A second rule moved to the top: first match wins, so order is kept as asked.
    let (_, second) = api
        .post(
            &provider,
            &filters,
            json!({"group": "Main", "rule": "userType equals Guest"}),
        )
        .await;
    let (status, moved) = api
        .call(
            Some(&provider),
            Method::PATCH,
            &format!("{filters}/{}", second["id"]),
            Some(json!({"position": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let order: Vec<i64> = moved["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        order,
        [second["id"].as_i64().unwrap(), rule["id"].as_i64().unwrap()]
    );
    let (status, _) = api
        .call(
            Some(&provider),
            Method::DELETE,
            &format!("{filters}/{}", second["id"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .call(
            Some(&provider),
            Method::DELETE,
            &format!("{filters}/{}", rule["id"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = api.get(&provider, &filters).await;
    assert!(list["items"].as_array().unwrap().is_empty(), "{list}");
    api.close().await;
}

async fn what_the_cli_does_the_api_does(url: String) {
    let api = api(url).await;
    let provider = api.token(Role::ProviderAdmin, None).await;
    let f = api.fabrikam;
    let info = api.sim.info().clone();

    // Customer settings, users and groups added by hand.
    let (status, c) = api
        .call(
            Some(&provider),
            Method::PATCH,
            &format!("/customers/{f}"),
            Some(json!({"retention": "45d"})),
        )
        .await;
    assert_eq!(
        (status, c["retention_days"].as_i64()),
        (StatusCode::OK, Some(45)),
        "{c}"
    );
    let (status, body) = api
        .call(
            Some(&provider),
            Method::PATCH,
            &format!("/customers/{f}"),
            Some(json!({"retention": "forever"})),
        )
        .await;
    assert_eq!(
        (status, error(&body)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ("invalid", Some("retention"))
        )
    );
    let users = format!("/customers/{f}/users");
    let (status, bob) = api
        .post(
            &provider,
            &users,
            json!({"address": "bob@fabrikam.example", "display_name": "Bob", "type": "shared"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bob}");
    assert_eq!(
        (bob["type"].as_str(), bob["billable"].as_bool()),
        (Some("shared"), Some(false))
    );
    let (_, body) = api
        .post(&provider, &users, json!({"address": "not an address"}))
        .await;
    assert_eq!(error(&body), ("invalid", Some("address")), "{body}");
    let (status, group) = api
        .post(
            &provider,
            &format!("/customers/{f}/groups"),
            json!({"name": "Sales"}),
        )
        .await;
    assert_eq!(
        (status, group["name"].as_str()),
        (StatusCode::CREATED, Some("Sales")),
        "{group}"
    );
    let (_, groups) = api.get(&provider, &format!("/customers/{f}/groups")).await;
    let names: Vec<&str> = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Main", "Sales"]);

    // Endpoints other than Microsoft's are the provider's to choose; a preview is not a
    // read-only principal's to start.
    let admin = api.token(Role::CustomerAdmin, Some("Fabrikam")).await;
    let (status, body) = api
        .post(&admin, &format!("/customers/{f}/sources"), json!({
            "tenant_id": info.tenant_id, "client_id": info.client_id, "client_secret": "x",
            "authority_url": "https://attacker.example", "graph_url": "https://attacker.example",
        }))
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let reader = api.token(Role::ReadOnly, None).await;
    let (status, _) = api
        .post(
            &reader,
            &format!("/sources/{}/preview", api.source),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A tenant belongs to one customer: Fabrikam gets it once Contoso's source is gone.
    let new_source = json!({
        "tenant_id": info.tenant_id, "client_id": info.client_id, "client_secret": info.client_secret,
        "authority_url": info.authority_url, "graph_url": info.graph_url,
    });
    let sources = format!("/customers/{f}/sources");
    let (status, body) = api.post(&provider, &sources, new_source.clone()).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::CONFLICT, "conflict"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Contoso"),
        "{body}"
    );
    let (status, removed) = api
        .call(
            Some(&provider),
            Method::DELETE,
            &format!("/sources/{}?keep_users=true", api.source),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    let (status, made) = api.post(&provider, &sources, new_source).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert!(
        !made.to_string().contains(&info.client_secret),
        "the secret is never sent back"
    );
    let checks = made["connection"]["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .all(|c| c["status"] == "granted" || c["required"] == false),
        "{made}"
    );
    let source = made["source"]["id"].as_i64().unwrap();

    // A wrong secret fails the run, naming the cause; the right one mends it.
    let secret = format!("/sources/{source}/secret");
    let (status, _) = api
        .call(
            Some(&provider),
            Method::PUT,
            &secret,
            Some(json!({"client_secret": "wrong"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, run) = api
        .post(&provider, &format!("/sources/{source}/preview"), json!({}))
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    let (status, _) = api
        .call(
            Some(&provider),
            Method::PUT,
            &secret,
            Some(json!({"client_secret": info.client_secret})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, run) = api
        .post(&provider, &format!("/sources/{source}/preview"), json!({}))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");

    // A queued sync can be cancelled.
    let (_, queued) = api
        .post(&provider, &format!("/sources/{source}/sync"), json!({}))
        .await;
    let run = queued["run_id"].as_i64().unwrap();
    let (status, cancelled) = api
        .post(&provider, &format!("/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{cancelled}"
    );
    // The audit log says who cancelled it.
    let (_, audit) = api.get(&provider, "/audit?limit=5").await;
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "run.cancel")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(entry["object"], format!("run {run}"));
    assert!(
        entry["actor"].as_str().unwrap().contains("token"),
        "{entry}"
    );
    api.close().await;
}
