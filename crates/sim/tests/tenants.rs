//! One simulator serving many tenants, over real HTTP: each tenant has its
//! own credentials, domains and users, a token carries its tenant, and Graph
//! answers from that tenant's directory.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use usersync_sim::{SimConfig, SimInfo, Simulator};

async fn start(tenants: usize, users: usize) -> Simulator {
    Simulator::start(SimConfig {
        tenants,
        users,
        seed: 5,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Asks `endpoint`'s token endpoint for a token with `creds`' app credentials.
async fn token_request(endpoint: &SimInfo, creds: &SimInfo) -> (StatusCode, Value) {
    let url = format!(
        "{}/{}/oauth2/v2.0/token",
        endpoint.authority_url, endpoint.tenant_id
    );
    let r = client()
        .post(url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", creds.client_id.as_str()),
            ("client_secret", creds.client_secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn token(info: &SimInfo) -> String {
    let (status, body) = token_request(info, info).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn get(info: &SimInfo, token: &str, path: &str) -> (StatusCode, Value) {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{}/v1.0{path}", info.graph_url)
    };
    let r = client()
        .get(url)
        .bearer_auth(token)
        .header("ConsistencyLevel", "eventual")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn ok(info: &SimInfo, token: &str, path: &str) -> Value {
    let (status, body) = get(info, token, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Every user of the token's tenant, following nextLinks.
async fn all_users(info: &SimInfo, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = "/users?$top=20&$select=id,userPrincipalName".to_string();
    loop {
        let page = ok(info, token, &url).await;
        out.extend(page["value"].as_array().unwrap().iter().cloned());
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => return out,
        }
    }
}

fn assert_aad_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let d = body["error_description"].as_str().unwrap();
    assert!(d.starts_with(&format!("AADSTS{code}: ")), "{d}");
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[k].is_string(), "{k} in {body}");
    }
}

#[tokio::test]
async fn one_tenant_is_served_by_default_with_the_first_tenant_as_its_info() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    assert_eq!(sim.tenants(), std::slice::from_ref(sim.info()));
    assert!(sim.tenant_at(1).is_none());
    assert_eq!(sim.generated_tenants(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn zero_tenants_are_refused() {
    let err = Simulator::start(SimConfig {
        tenants: 0,
        ..SimConfig::default()
    })
    .await
    .err()
    .expect("no simulator without tenants");
    assert!(err.to_string().contains("--tenants 0"), "{err}");
}

#[tokio::test]
async fn each_tenant_has_its_own_credentials_domains_and_users() {
    let sim = start(3, 40).await;
    let tenants = sim.tenants().to_vec();
    assert_eq!(tenants.len(), 3);
    assert_eq!(&tenants[0], sim.info());
    let mut ids = HashSet::new();
    let mut domains = HashSet::new();
    let mut users = HashSet::new();
    for (k, t) in tenants.iter().enumerate() {
        // One listener serves them all.
        assert_eq!(t.authority_url, tenants[0].authority_url);
        assert_eq!(t.graph_url, tenants[0].graph_url);
        assert!(ids.insert(t.tenant_id.clone()));
        assert!(ids.insert(t.client_id.clone()));
        assert!(ids.insert(t.client_secret.clone()));
        for d in &t.domains {
            assert!(domains.insert(d.clone()), "domain {d} of tenant {k} again");
        }
        if k > 0 {
            assert!(t.initial_domain.starts_with(&format!("t{k}")), "{t:?}");
            assert!(t.mail_domains[0].starts_with(&format!("t{k}-")), "{t:?}");
        }

        let token = token(t).await;
        assert_eq!(claims(&token)["tid"], t.tenant_id.as_str());
        assert_eq!(claims(&token)["appid"], t.client_id.as_str());

        let listed = all_users(t, &token).await;
        assert_eq!(listed.len(), 40);
        for u in &listed {
            assert!(
                users.insert(u["id"].as_str().unwrap().to_string()),
                "{u} in two tenants"
            );
            let upn = u["userPrincipalName"].as_str().unwrap().to_lowercase();
            let domain = upn.rsplit('@').next().unwrap();
            assert!(t.domains.iter().any(|d| d == domain), "{upn} not in {t:?}");
        }
        let served = ok(t, &token, "/domains").await;
        let served: Vec<&str> = served["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(served, t.domains);
        let org = ok(t, &token, "/organization").await;
        assert_eq!(org["value"][0]["id"], t.tenant_id.as_str());
        // The tenant may also be addressed by a verified domain name.
        let by_domain = SimInfo {
            tenant_id: t.initial_domain.clone(),
            ..t.clone()
        };
        let (status, body) = token_request(&by_domain, t).await;
        assert_eq!(status, 200, "{body}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn one_tenants_credentials_are_refused_at_another_tenants_token_endpoint() {
    let sim = start(3, 10).await;
    let (a, b) = (sim.tenants()[0].clone(), sim.tenants()[1].clone());

    let (status, body) = token_request(&b, &a).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "unauthorized_client", 700016);
    let d = body["error_description"].as_str().unwrap();
    assert!(
        d.contains(&format!("Application with identifier '{}'", a.client_id)),
        "{d}"
    );

    // B's app with A's secret: B's app is found, the secret is wrong.
    let mixed = SimInfo {
        client_secret: a.client_secret.clone(),
        ..b.clone()
    };
    let (status, body) = token_request(&b, &mixed).await;
    assert_eq!(status, 401);
    assert_aad_error(&body, "invalid_client", 7000215);
    sim.shutdown().await;
}

#[tokio::test]
async fn graph_answers_from_the_tenant_the_token_was_issued_for() {
    let sim = start(3, 30).await;
    let (a, b) = (sim.tenants()[0].clone(), sim.tenants()[1].clone());
    let (token_a, token_b) = (token(&a).await, token(&b).await);

    // Graph v1.0 paths name no tenant: the same URL answers per token.
    let org_a = ok(&a, &token_a, "/organization").await;
    let org_b = ok(&b, &token_b, "/organization").await;
    assert_eq!(org_a["value"][0]["id"], a.tenant_id.as_str());
    assert_eq!(org_b["value"][0]["id"], b.tenant_id.as_str());

    // B's objects do not exist for A's token.
    let b_user = sim.tenant_at(1).unwrap().users()[0].clone();
    let (status, body) = get(&a, &token_a, &format!("/users/{}", b_user.id)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(
        &a,
        &token_a,
        &format!("/users/{}", b_user.user_principal_name),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let got = ok(&b, &token_b, &format!("/users/{}", b_user.id)).await;
    assert_eq!(
        got["userPrincipalName"],
        b_user.user_principal_name.as_str()
    );

    // A page link of A's listing is no page of B's.
    let page = ok(&a, &token_a, "/users?$top=5").await;
    let next = page["@odata.nextLink"].as_str().unwrap();
    let (status, body) = get(&b, &token_b, next).await;
    assert_eq!(status, 400, "{body}");

    // $batch sub-requests answer from the envelope token's tenant.
    let r = client()
        .post(format!("{}/v1.0/$batch", b.graph_url))
        .bearer_auth(&token_b)
        .json(&json!({"requests": [
            {"id": "1", "method": "GET", "url": "/organization"},
            {"id": "2", "method": "GET", "url": format!("/users/{}", b_user.id)},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let batch: Value = r.json().await.unwrap();
    for resp in batch["responses"].as_array().unwrap() {
        assert_eq!(resp["status"], 200, "{resp}");
        if resp["id"] == "1" {
            assert_eq!(resp["body"]["value"][0]["id"], b.tenant_id.as_str());
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn changes_and_consent_apply_to_one_tenant_only() {
    let sim = start(3, 10).await;
    let (a, c) = (sim.tenants()[0].clone(), sim.tenants()[2].clone());
    let tenant_c = sim.tenant_at(2).unwrap();
    assert_eq!(tenant_c.tenant_id(), c.tenant_id);
    let id = tenant_c
        .add_user(tenant_c.new_member("Anne Smith"))
        .unwrap();

    let token_c = token(&c).await;
    let token_a = token(&a).await;
    assert_eq!(all_users(&c, &token_c).await.len(), 11);
    assert_eq!(all_users(&a, &token_a).await.len(), 10);
    let (status, _) = get(&a, &token_a, &format!("/users/{id}")).await;
    assert_eq!(status, 404);

    tenant_c.set_denied_permissions(&["User.Read.All", "Directory.Read.All"]);
    let (status, body) = get(&c, &token_c, "/users").await;
    assert_eq!(status, 403, "{body}");
    ok(&a, &token_a, "/users").await;
    assert!(!tenant_c.permissions().iter().any(|p| p == "User.Read.All"));
    assert!(sim.permissions().iter().any(|p| p == "User.Read.All"));

    tenant_c.set_consented(false);
    let (status, body) = token_request(&c, &c).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "unauthorized_client", 700016);
    token(&a).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tenants_of_a_thousand_users_start_without_generating_them() {
    let sim = start(1000, 1000).await;
    assert_eq!(sim.tenants().len(), 1000);
    // Only the first tenant is generated at start.
    assert_eq!(sim.generated_tenants(), 1);
    let ids: HashSet<&str> = sim.tenants().iter().map(|t| t.tenant_id.as_str()).collect();
    assert_eq!(ids.len(), 1000);
    let domains: HashSet<&str> = sim
        .tenants()
        .iter()
        .flat_map(|t| t.domains.iter().map(String::as_str))
        .collect();
    assert_eq!(domains.len(), 1000 * sim.info().domains.len());

    // A token needs no directory; the first Graph read generates it.
    let last = sim.tenants()[999].clone();
    let token = token(&last).await;
    assert_eq!(sim.generated_tenants(), 1);
    let count = ok(&last, &token, "/users/$count").await;
    assert_eq!(count, 1000);
    assert_eq!(sim.generated_tenants(), 2);
    sim.shutdown().await;
}
