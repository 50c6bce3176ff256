//! End-to-end tests over real HTTP(S) with reqwest.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use usersync_sim::{Fault, SimConfig, SimGroup, SimUser, Simulator, Throttle, UserPurpose};

async fn start(cfg: SimConfig) -> Simulator {
    Simulator::start(cfg).await.expect("simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn token_request(sim: &Simulator, form: &[(&str, &str)]) -> (StatusCode, Value) {
    token_request_for(sim, &sim.info().tenant_id.clone(), form).await
}

async fn token_request_for(
    sim: &Simulator,
    tenant: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let url = format!("{}/{tenant}/oauth2/v2.0/token", sim.info().authority_url);
    let r = client().post(url).form(form).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

fn good_form(sim: &Simulator) -> Vec<(&'static str, String)> {
    let i = sim.info();
    vec![
        ("grant_type", "client_credentials".into()),
        ("client_id", i.client_id.clone()),
        ("client_secret", i.client_secret.clone()),
        ("scope", "https://graph.microsoft.com/.default".into()),
    ]
}

async fn token(sim: &Simulator) -> String {
    let form = good_form(sim);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = token_request(sim, &form).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

struct Graph {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Graph {
    async fn new(sim: &Simulator) -> Graph {
        Graph {
            http: client(),
            base: sim.info().graph_url.clone(),
            token: token(sim).await,
        }
    }
    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/v1.0{path}", self.base)
        }
    }
    async fn get_full(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut rb = self.http.get(self.url(path)).bearer_auth(&self.token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let h = r.headers().clone();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, h, v)
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.get_full(path, &[]).await;
        (s, v)
    }
    async fn ok(&self, path: &str) -> Value {
        let (s, v) = self.get(path).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }
    /// Follows nextLinks; returns all items and the number of pages.
    async fn all(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Vec<Value>, usize, Option<String>) {
        let mut items = Vec::new();
        let mut url = path.to_string();
        let mut pages = 0;
        loop {
            let (s, _, v) = self.get_full(&url, headers).await;
            assert_eq!(s, 200, "{url}: {v}");
            pages += 1;
            items.extend(v["value"].as_array().unwrap().iter().cloned());
            match v["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => {
                    return (
                        items,
                        pages,
                        v["@odata.deltaLink"].as_str().map(String::from),
                    );
                }
            }
        }
    }
}

fn assert_graph_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    let inner = &v["error"]["innerError"];
    assert!(
        inner["date"].is_string()
            && inner["request-id"].is_string()
            && inner["client-request-id"].is_string(),
        "{v}"
    );
}

#[tokio::test]
async fn token_success_and_errors() {
    let sim = start(SimConfig {
        users: 10,
        ..SimConfig::default()
    })
    .await;
    let i = sim.info().clone();
    let form = good_form(&sim);
    let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, b) = token_request(&sim, &f).await;
    assert_eq!(s, 200);
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["expires_in"], 3600);
    assert_eq!(b["ext_expires_in"], 3600);
    assert_eq!(b["access_token"].as_str().unwrap().split('.').count(), 3);

    // The tenant may also be addressed by a verified domain name.
    let (s, _) = token_request_for(&sim, &i.initial_domain, &f).await;
    assert_eq!(s, 200);

    let check = |b: &Value, error: &str, code: u64| {
        assert_eq!(b["error"], error, "{b}");
        assert_eq!(b["error_codes"], json!([code]), "{b}");
        let d = b["error_description"].as_str().unwrap();
        assert!(d.starts_with(&format!("AADSTS{code}: ")), "{d}");
        for k in ["timestamp", "trace_id", "correlation_id"] {
            assert!(b[k].is_string(), "{k} in {b}");
        }
    };
    let with = |k: &'static str, v: &'static str| {
        let mut f = f.clone();
        f.retain(|(n, _)| *n != k);
        if !v.is_empty() {
            f.push((k, v));
        }
        f
    };
    let (s, b) = token_request(&sim, &with("client_secret", "wrong")).await;
    assert_eq!(s, 401);
    check(&b, "invalid_client", 7000215);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("Invalid client secret provided")
    );

    let (s, b) = token_request(&sim, &with("scope", "User.Read.All")).await;
    assert_eq!(s, 400);
    check(&b, "invalid_scope", 1002012);

    let (s, b) = token_request(
        &sim,
        &with("client_id", "11111111-2222-3333-4444-555555555555"),
    )
    .await;
    assert_eq!(s, 400);
    check(&b, "unauthorized_client", 700016);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("was not found in the directory")
    );

    let (s, b) = token_request(&sim, &with("grant_type", "password")).await;
    assert_eq!(s, 400);
    check(&b, "unsupported_grant_type", 70003);

    let (s, b) = token_request_for(&sim, "00000000-1111-2222-3333-444444444444", &f).await;
    assert_eq!(s, 400);
    check(&b, "invalid_request", 90002);

    let (s, b) = token_request(&sim, &with("client_secret", "")).await;
    assert_eq!(s, 401);
    check(&b, "invalid_client", 7000218);

    sim.set_consented(false);
    let (s, b) = token_request(&sim, &f).await;
    assert_eq!(s, 400);
    check(&b, "unauthorized_client", 700016);
    sim.shutdown().await;

    // Consent can also be off from the start.
    let sim = start(SimConfig {
        users: 5,
        consented: false,
        ..SimConfig::default()
    })
    .await;
    let form = good_form(&sim);
    let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, b) = token_request(&sim, &f).await;
    assert_eq!(s, 400);
    check(&b, "unauthorized_client", 700016);
    sim.shutdown().await;
}

#[tokio::test]
async fn client_secret_basic_is_accepted() {
    let sim = start(SimConfig {
        users: 5,
        ..SimConfig::default()
    })
    .await;
    let i = sim.info();
    let r = client()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            i.authority_url, i.tenant_id
        ))
        .basic_auth(&i.client_id, Some(&i.client_secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_errors_401() {
    let sim = start(SimConfig {
        users: 5,
        token_lifetime: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let g = Graph::new(&sim).await;
    let url = format!("{}/v1.0/users", sim.info().graph_url);
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_graph_error(&r.json().await.unwrap(), "InvalidAuthenticationToken");
    let r = client()
        .get(&url)
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_graph_error(&r.json().await.unwrap(), "InvalidAuthenticationToken");
    assert_eq!(g.get("/users").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, v) = g.get("/users").await;
    assert_eq!(s, 401);
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"));
    // A renewed token works again; expire_tokens() forces renewal.
    let g = Graph::new(&sim).await;
    sim.set_token_lifetime(Duration::from_secs(3600));
    let g2 = Graph::new(&sim).await;
    assert_eq!(g2.get("/users").await.0, 200);
    sim.expire_tokens();
    assert_eq!(g2.get("/users").await.0, 401);
    drop(g);
    sim.shutdown().await;
}

#[tokio::test]
async fn users_paging_select_and_cap() {
    let sim = start(SimConfig {
        users: 250,
        seed: 5,
        ..SimConfig::default()
    })
    .await;
    let g = Graph::new(&sim).await;
    let first = g.ok("/users").await;
    assert_eq!(first["value"].as_array().unwrap().len(), 100);
    assert!(
        first["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#users")
    );
    // Graph's default projection.
    let u0 = first["value"][0].as_object().unwrap();
    let keys: HashSet<&str> = u0.keys().map(String::as_str).collect();
    assert!(
        keys.contains("userPrincipalName")
            && keys.contains("id")
            && keys.contains("businessPhones")
    );
    assert!(!keys.contains("proxyAddresses") && !keys.contains("accountEnabled"));

    let (all, pages, _) = g.all("/users?$select=id,userPrincipalName,mail,proxyAddresses,accountEnabled,userType,assignedLicenses&$top=999", &[]).await;
    assert_eq!(all.len(), 250);
    assert_eq!(pages, 1);
    let obj = all[0].as_object().unwrap();
    assert_eq!(obj.len(), 7, "{obj:?}");
    let ids: HashSet<&str> = all.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 250);

    // The nextLink works on its own and is absolute with our scheme/host/port.
    let (all2, pages, _) = g.all("/users?$select=id,displayName&$top=60", &[]).await;
    assert_eq!(all2.len(), 250);
    assert_eq!(pages, 5);
    let p = g.ok("/users?$top=60&$select=id").await;
    let next = p["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{}/v1.0/users?", sim.info().graph_url)),
        "{next}"
    );
    assert!(next.contains("$skiptoken="));

    // Server-side cap beats $top.
    sim.set_page_size_cap(Some(40));
    let (all3, pages, _) = g.all("/users?$top=999&$select=id", &[]).await;
    assert_eq!(all3.len(), 250);
    assert_eq!(pages, 7);
    sim.set_page_size_cap(None);

    // Bad options.
    let (s, v) = g.get("/users?$top=1000").await;
    assert_eq!(s, 400);
    assert_graph_error(&v, "Request_BadRequest");
    assert!(v["error"]["message"].as_str().unwrap().contains("999"));
    let (s, v) = g.get("/users?$select=id,bogus").await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error"]["message"],
        "Could not find a property named 'bogus' on type 'microsoft.graph.user'."
    );
    let (s, _) = g.get("/users?$skip=5").await;
    assert_eq!(s, 400);

    // Single user by id and by UPN, 404 for unknown.
    let one = &all[3];
    let id = one["id"].as_str().unwrap();
    let upn = one["userPrincipalName"].as_str().unwrap();
    let v = g.ok(&format!("/users/{id}?$select=id,mail")).await;
    assert_eq!(v["id"], id);
    assert!(v["@odata.context"].as_str().unwrap().contains("$entity"));
    let by_upn = g.ok(&format!("/users/{}", upn.replace('#', "%23"))).await;
    assert_eq!(by_upn["id"], id);
    let (s, v) = g.get("/users/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(s, 404);
    assert_graph_error(&v, "Request_ResourceNotFound");

    // $filter subset and $count.
    let (guests, _, _) = g
        .all(
            "/users?$filter=userType%20eq%20'Guest'&$select=id,userType",
            &[],
        )
        .await;
    assert!(!guests.is_empty() && guests.iter().all(|u| u["userType"] == "Guest"));
    let (s, _, v) = g
        .get_full(
            "/users?$count=true&$top=1",
            &[("ConsistencyLevel", "eventual")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["@odata.count"], 250);
    sim.shutdown().await;
}

#[tokio::test]
async fn generated_tenant_shape_over_graph() {
    let sim = start(SimConfig {
        users: 25,
        seed: 11,
        ..SimConfig::default()
    })
    .await;
    let g = Graph::new(&sim).await;
    let sel =
        "$select=id,userPrincipalName,mail,proxyAddresses,userType,accountEnabled,assignedLicenses";
    let (users, _, _) = g.all(&format!("/users?{sel}"), &[]).await;
    assert_eq!(users.len(), 25);
    let mut purposes = HashSet::new();
    let mut no_mailbox = 0;
    let mut shared_signing_in = 0;
    for u in &users {
        let id = u["id"].as_str().unwrap();
        let (s, v) = g.get(&format!("/users/{id}/mailboxSettings")).await;
        if s == 404 {
            assert_graph_error(&v, "MailboxNotEnabledForRESTAPI");
            no_mailbox += 1;
            continue;
        }
        assert_eq!(s, 200, "{v}");
        assert!(v["timeZone"].is_string());
        let p = v["userPurpose"].as_str().unwrap().to_string();
        let single = g
            .ok(&format!("/users/{id}/mailboxSettings/userPurpose"))
            .await;
        assert_eq!(single["value"], p.as_str());
        if p == "shared" {
            // Most shared mailboxes are disabled and unlicensed; real tenants also have
            // some with a licence and sign-in allowed, and so does a generated one.
            let signs_in = u["accountEnabled"] == true;
            assert_eq!(signs_in, u["assignedLicenses"] != json!([]), "{u}");
            shared_signing_in += usize::from(signs_in);
        }
        purposes.insert(p);
    }
    assert_eq!(purposes.len(), 4, "{purposes:?}");
    assert!(no_mailbox >= 2);
    assert!(shared_signing_in >= 1);
    assert!(
        users.iter().any(|u| u["userType"] == "Guest"
            && u["userPrincipalName"].as_str().unwrap().contains("#EXT#@"))
    );

    let domains = g.ok("/domains").await;
    let d = domains["value"].as_array().unwrap();
    assert!(
        d.iter()
            .any(|x| x["isInitial"] == true
                && x["id"].as_str().unwrap().ends_with(".onmicrosoft.com"))
    );
    assert!(d.iter().any(|x| x["isVerified"] == false));
    assert!(d.iter().any(|x| x["isDefault"] == true));
    let org = g.ok("/organization").await;
    assert_eq!(org["value"][0]["id"], sim.info().tenant_id.as_str());
    assert!(org["value"][0]["verifiedDomains"].as_array().unwrap().len() >= 4);
    let skus = g.ok("/subscribedSkus").await;
    let consumed: i64 = skus["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["consumedUnits"].as_i64().unwrap())
        .sum();
    let assigned: usize = users
        .iter()
        .map(|u| u["assignedLicenses"].as_array().unwrap().len())
        .sum();
    assert_eq!(consumed as usize, assigned);
    assert!(skus["value"][0]["prepaidUnits"]["enabled"].is_i64());

    // Groups, members with @odata.type, nested groups, memberOf, manager.
    let (groups, _, _) = g
        .all(
            "/groups?$select=id,displayName,mail,mailEnabled,securityEnabled,groupTypes",
            &[],
        )
        .await;
    assert!(groups.len() >= 5);
    assert!(groups.iter().any(|x| x["groupTypes"] == json!(["Unified"])));
    assert!(
        groups
            .iter()
            .any(|x| x["mailEnabled"] == false && x["mail"].is_null())
    );
    let mut saw_nested = false;
    for grp in &groups {
        let gid = grp["id"].as_str().unwrap();
        let (members, _, _) = g
            .all(
                &format!("/groups/{gid}/members?$select=id,displayName"),
                &[],
            )
            .await;
        for m in &members {
            let t = m["@odata.type"].as_str().unwrap();
            assert!(t == "#microsoft.graph.user" || t == "#microsoft.graph.group");
            saw_nested |= t == "#microsoft.graph.group";
        }
        let (trans, _, _) = g
            .all(&format!("/groups/{gid}/transitiveMembers"), &[])
            .await;
        assert!(trans.len() >= members.len());
    }
    assert!(saw_nested);
    let mut managers = 0;
    for u in &users {
        let id = u["id"].as_str().unwrap();
        let (s, v) = g.get(&format!("/users/{id}/manager")).await;
        match s.as_u16() {
            200 => {
                managers += 1;
                assert_eq!(v["@odata.type"], "#microsoft.graph.user");
            }
            404 => assert_graph_error(&v, "Request_ResourceNotFound"),
            other => panic!("{other}"),
        }
        let mo = g.ok(&format!("/users/{id}/memberOf")).await;
        for m in mo["value"].as_array().unwrap() {
            assert_eq!(m["@odata.type"], "#microsoft.graph.group");
        }
    }
    assert!(managers > 10);
    sim.shutdown().await;
}

#[tokio::test]
async fn deterministic_generation() {
    let a = start(SimConfig {
        users: 120,
        seed: 77,
        ..SimConfig::default()
    })
    .await;
    let b = start(SimConfig {
        users: 120,
        seed: 77,
        ..SimConfig::default()
    })
    .await;
    let c = start(SimConfig {
        users: 120,
        seed: 78,
        ..SimConfig::default()
    })
    .await;
    assert_eq!(a.info().tenant_id, b.info().tenant_id);
    assert_eq!(a.info().client_secret, b.info().client_secret);
    assert_eq!(a.info().domains, b.info().domains);
    assert_ne!(a.info().tenant_id, c.info().tenant_id);
    assert_eq!(a.tenant().users(), b.tenant().users());
    assert_eq!(a.tenant().groups(), b.tenant().groups());
    let sel =
        "/users?$top=999&$select=id,userPrincipalName,proxyAddresses,assignedLicenses,department";
    let ga = Graph::new(&a).await;
    let gb = Graph::new(&b).await;
    assert_eq!(ga.all(sel, &[]).await.0, gb.all(sel, &[]).await.0);
    for s in [a, b, c] {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn users_delta_rounds() {
    let sim = start(SimConfig {
        users: 230,
        seed: 3,
        ..SimConfig::default()
    })
    .await;
    let g = Graph::new(&sim).await;
    let t = sim.tenant();
    let prefer = [("Prefer", "odata.maxpagesize=50")];
    let (initial, pages, delta) = g
        .all(
            "/users/delta?$select=id,displayName,mail,userPrincipalName",
            &prefer,
        )
        .await;
    assert_eq!(initial.len(), 230);
    assert_eq!(pages, 5);
    let delta = delta.expect("deltaLink on the last page");
    assert!(delta.contains("$deltatoken="));

    // Nothing changed: empty round with a fresh deltaLink.
    let (none, _, delta) = g.all(&delta, &[]).await;
    assert!(none.is_empty());
    let delta = delta.unwrap();

    let anne = t.new_member("Anne Newhire");
    let anne_id = t.add_user(anne.clone()).unwrap();
    let victim = initial[10]["id"].as_str().unwrap().to_string();
    let changed = initial[20]["id"].as_str().unwrap().to_string();
    t.update_user(&changed, |u| u.display_name = "Renamed Person".into())
        .unwrap();
    t.delete_user(&victim).unwrap();
    let purged = initial[30]["id"].as_str().unwrap().to_string();
    t.delete_user_permanently(&purged).unwrap();

    let (changes, _, delta2) = g.all(&delta, &[]).await;
    let by_id: HashMap<&str, &Value> = changes
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c))
        .collect();
    assert_eq!(changes.len(), 4, "{changes:?}");
    let a = by_id[anne_id.as_str()];
    assert_eq!(a["mail"], anne.mail.unwrap());
    assert_eq!(a["displayName"], "Anne Newhire");
    let c = by_id[changed.as_str()];
    assert_eq!(c["displayName"], "Renamed Person");
    assert!(c.get("mail").is_none(), "only changed properties: {c}");
    assert_eq!(by_id[victim.as_str()]["@removed"]["reason"], "changed");
    assert_eq!(by_id[purged.as_str()]["@removed"]["reason"], "deleted");

    // Changes show up in /users too.
    let (s, _) = g.get(&format!("/users/{victim}")).await;
    assert_eq!(s, 404);
    let v = g.ok(&format!("/users/{changed}?$select=displayName")).await;
    assert_eq!(v["displayName"], "Renamed Person");
    let (all, _, _) = g.all("/users?$top=999&$select=id", &[]).await;
    assert_eq!(all.len(), 230 + 1 - 2);

    // Later rounds only see later changes; paging works inside a round.
    for k in 0..7 {
        let u = t.new_member(&format!("Bulk User{k}"));
        t.add_user(u).unwrap();
    }
    let (later, pages, delta3) = g
        .all(&delta2.unwrap(), &[("Prefer", "odata.maxpagesize=3")])
        .await;
    assert_eq!(later.len(), 7);
    assert_eq!(pages, 3);
    // An empty round after changes happened (a reversed range used to panic).
    let delta3 = delta3.unwrap();
    let (empty, _, _) = g.all(&delta3, &[]).await;
    assert!(empty.is_empty());

    // A soft-deleted user restored from the recycle bin comes back whole, in /users and
    // in the next round; one deleted for good cannot be restored.
    let before = t.user(&changed).unwrap();
    t.delete_user(&changed).unwrap();
    assert!(t.restore_user(&purged).is_err(), "deleted for good");
    assert!(t.restore_user(&anne_id).is_err(), "not deleted");
    let (gone, _, delta4) = g.all(&delta3, &[]).await;
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["@removed"]["reason"], "changed");
    t.restore_user(&changed).unwrap();
    assert_eq!(t.user(&changed).unwrap(), before);
    let (back, _, _) = g.all(&delta4.unwrap(), &[]).await;
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["id"], changed.as_str());
    assert_eq!(back[0]["displayName"], "Renamed Person");
    assert_eq!(
        back[0]["mail"],
        before.mail.clone().unwrap(),
        "a whole object"
    );
    assert!(back[0].get("@removed").is_none());
    let v = g.ok(&format!("/users/{changed}?$select=displayName")).await;
    assert_eq!(v["displayName"], "Renamed Person");

    // $deltatoken=latest gives a deltaLink without data.
    let v = g.ok("/users/delta?$deltatoken=latest").await;
    assert!(v["value"].as_array().unwrap().is_empty());
    assert!(v["@odata.deltaLink"].is_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn groups_delta_with_members() {
    let sim = start(SimConfig {
        users: 60,
        seed: 8,
        ..SimConfig::default()
    })
    .await;
    let g = Graph::new(&sim).await;
    let t = sim.tenant();
    let (initial, _, delta) = g
        .all("/groups/delta?$select=displayName,mail,members", &[])
        .await;
    assert_eq!(initial.len(), t.groups().len());
    let with_members = initial
        .iter()
        .find(|x| x["members@delta"].as_array().is_some_and(|m| !m.is_empty()))
        .unwrap();
    let m0 = &with_members["members@delta"][0];
    assert!(
        m0["@odata.type"]
            .as_str()
            .unwrap()
            .starts_with("#microsoft.graph.")
    );
    assert!(m0["id"].is_string());

    let groups = t.groups();
    let target = groups.iter().find(|x| x.members.len() >= 2).unwrap();
    let users = t.users();
    let outsider = users
        .iter()
        .find(|u| !target.members.contains(&u.id))
        .unwrap();
    let leaving = target
        .members
        .iter()
        .find(|m| users.iter().any(|u| &u.id == *m))
        .unwrap()
        .clone();
    t.add_member(&target.id, &outsider.id).unwrap();
    t.remove_member(&target.id, &leaving).unwrap();
    let renamed = &groups[0];
    t.rename_group(&renamed.id, "Renamed Group").unwrap();
    let new_group = t
        .add_group(
            SimGroup::distribution_list("New DL", &format!("new-dl@{}", t.default_domain()))
                .with_members([outsider.id.clone()]),
        )
        .unwrap();
    let doomed = groups
        .iter()
        .find(|x| x.id != target.id && x.id != renamed.id)
        .unwrap();
    t.delete_group(&doomed.id).unwrap();

    let (changes, _, _) = g.all(&delta.unwrap(), &[]).await;
    let by_id: HashMap<&str, &Value> = changes
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c))
        .collect();
    let tg = by_id[target.id.as_str()];
    let md = tg["members@delta"].as_array().unwrap();
    assert!(
        md.iter()
            .any(|m| m["id"] == outsider.id.as_str() && m.get("@removed").is_none())
    );
    assert!(
        md.iter()
            .any(|m| m["id"] == leaving.as_str() && m["@removed"]["reason"] == "deleted")
    );
    assert_eq!(by_id[renamed.id.as_str()]["displayName"], "Renamed Group");
    let ng = by_id[new_group.as_str()];
    assert_eq!(ng["displayName"], "New DL");
    assert_eq!(ng["members@delta"][0]["id"], outsider.id.as_str());
    assert!(by_id[doomed.id.as_str()]["@removed"].is_object());

    let (members, _, _) = g
        .all(&format!("/groups/{}/members?$select=id", target.id), &[])
        .await;
    assert!(members.iter().any(|m| m["id"] == outsider.id.as_str()));
    assert!(!members.iter().any(|m| m["id"] == leaving.as_str()));
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_requests() {
    let sim = start(SimConfig {
        users: 40,
        seed: 2,
        ..SimConfig::default()
    })
    .await;
    let g = Graph::new(&sim).await;
    let users = sim.tenant().users();
    let reqs: Vec<Value> = users
        .iter()
        .take(5)
        .enumerate()
        .map(|(i, u)| json!({"id": (i + 1).to_string(), "method": "GET", "url": format!("/users/{}/mailboxSettings", u.id)}))
        .chain([json!({"id": "6", "method": "GET", "url": "/users?$top=5&$select=id", "headers": {"ConsistencyLevel": "eventual"}})])
        .collect();
    let url = format!("{}/v1.0/$batch", sim.info().graph_url);
    let post = |body: Value| g.http.post(&url).bearer_auth(&g.token).json(&body).send();
    let r = post(json!({"requests": reqs})).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let responses = v["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 6);
    for resp in responses {
        let status = resp["status"].as_u64().unwrap();
        assert!(status == 200 || status == 404, "{resp}");
        assert!(resp["headers"].is_object());
        if resp["id"] == "6" {
            assert_eq!(resp["body"]["value"].as_array().unwrap().len(), 5);
        }
    }

    // More than 20 is refused.
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users"}))
        .collect();
    let r = post(json!({"requests": many})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_graph_error(&r.json().await.unwrap(), "BadRequest");

    // Throttling applies per sub-request: a 429 inside a 200 batch.
    sim.set_throttle(Throttle::every_nth(2, 7));
    let two: Vec<Value> = (1..=2).map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/{}", users[i].id)})).collect();
    let r = post(json!({"requests": two})).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let throttled: Vec<&Value> = v["responses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 429)
        .collect();
    assert_eq!(throttled.len(), 1, "{v}");
    assert_eq!(throttled[0]["headers"]["Retry-After"], "7");
    assert_eq!(throttled[0]["body"]["error"]["code"], "TooManyRequests");
    sim.set_throttle(Throttle::off());

    // Permissions apply per sub-request too.
    sim.set_denied_permissions(&["MailboxSettings.Read"]);
    let one = vec![
        json!({"id": "a", "method": "GET", "url": format!("users/{}/mailboxSettings", users[0].id)}),
    ];
    let v: Value = post(json!({"requests": one}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["responses"][0]["status"], 403);
    assert_eq!(
        v["responses"][0]["body"]["error"]["code"],
        "ErrorAccessDenied"
    );
    let stats = sim.stats();
    assert!(stats.batch_requests >= 3 && stats.batch_subrequests >= 9);
    sim.shutdown().await;
}

#[tokio::test]
async fn throttling_faults_permissions_and_stats() {
    let sim = start(SimConfig {
        users: 30,
        ..SimConfig::default()
    })
    .await;
    let g = Graph::new(&sim).await;
    sim.reset_stats();

    sim.set_throttle(Throttle::every_nth(3, 4));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (s, h, v) = g.get_full("/users?$top=1", &[]).await;
        if s == 429 {
            assert_eq!(h["retry-after"], "4");
            assert_graph_error(&v, "TooManyRequests");
        }
        statuses.push(s.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
    sim.set_throttle(Throttle::per_second(2, 1));
    let mut n429 = 0;
    for _ in 0..5 {
        n429 += u32::from(g.get("/users?$top=1").await.0 == 429);
    }
    assert!(n429 >= 2, "{n429}");
    sim.set_throttle(Throttle::off());

    // A 503 on every page after the first.
    sim.inject_fault(
        Fault::service_unavailable("/v1.0/users")
            .with_query("$skiptoken")
            .retry_after(2),
    );
    let first = g.ok("/users?$top=5").await;
    let next = first["@odata.nextLink"].as_str().unwrap();
    for _ in 0..2 {
        let (s, h, v) = g.get_full(next, &[]).await;
        assert_eq!(s, 503);
        assert_eq!(h["retry-after"], "2");
        assert_graph_error(&v, "ServiceUnavailable");
    }
    sim.clear_faults();
    assert_eq!(g.get(next).await.0, 200);
    // The Nth request to a path fails once.
    sim.inject_fault(Fault::status("/v1.0/groups", 500).nth(2));
    let s: Vec<u16> = [
        g.get("/groups").await.0,
        g.get("/groups").await.0,
        g.get("/groups").await.0,
    ]
    .iter()
    .map(|s| s.as_u16())
    .collect();
    assert_eq!(s, [200, 500, 200]);
    sim.clear_faults();

    // Permissions.
    sim.set_denied_permissions(&["User.Read.All", "Directory.Read.All"]);
    let (s, v) = g.get("/users").await;
    assert_eq!(s, 403);
    assert_graph_error(&v, "Authorization_RequestDenied");
    assert_eq!(
        v["error"]["message"],
        "Insufficient privileges to complete the operation."
    );
    sim.set_denied_permissions(&["MailboxSettings.Read"]);
    let id = sim.tenant().users()[0].id.clone();
    let (s, v) = g.get(&format!("/users/{id}/mailboxSettings")).await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["code"], "ErrorAccessDenied");
    assert_eq!(
        v["error"]["message"],
        "Access is denied. Check credentials and try again."
    );
    sim.set_denied_permissions(&[]);

    // Unknown segments / bad paths.
    let (s, v) = g.get("/nonsense").await;
    assert_eq!(s, 400);
    assert_graph_error(&v, "BadRequest");

    let st = sim.stats();
    assert_eq!(st.throttled, 2 + n429 as u64);
    assert!(st.faults >= 3);
    assert!(st.by_endpoint["users"] >= 11);
    assert!(st.http_requests >= st.graph_requests);
    sim.shutdown().await;
}

#[tokio::test]
async fn tenant_mutation_api() {
    let sim = start(SimConfig {
        users: 20,
        ..SimConfig::default()
    })
    .await;
    let t = sim.tenant();
    let domain = t.default_domain();
    assert!(sim.info().mail_domains.contains(&domain));
    let before = t.user_count();
    let u = SimUser::member("Zed Example", &format!("zed@{domain}"))
        .with_alias(&format!("zed.example@{domain}"))
        .with_upn(&format!("zed@{}", t.initial_domain()));
    let id = t.add_user(u).unwrap();
    assert_eq!(t.user_count(), before + 1);
    assert!(
        t.add_user(SimUser::member(
            "Dup",
            &format!("zed@{}", t.initial_domain())
        ))
        .is_err()
    );
    t.update_user(&id, |u| u.user_purpose = Some(UserPurpose::Shared))
        .unwrap();
    assert_eq!(t.user(&id).unwrap().user_purpose, Some(UserPurpose::Shared));
    let e3 = t
        .skus()
        .iter()
        .find(|s| s.sku_part_number == "SPE_E3")
        .unwrap()
        .consumed_units;
    t.update_user(&id, |u| u.assigned_licenses.clear()).unwrap();
    let e3_after = t
        .skus()
        .iter()
        .find(|s| s.sku_part_number == "SPE_E3")
        .unwrap()
        .consumed_units;
    assert_eq!(e3_after, e3 - 1);
    let gid = t
        .add_group(SimGroup::security("Temp SG").with_members([id.clone()]))
        .unwrap();
    assert_eq!(t.group(&gid).unwrap().members, vec![id.clone()]);
    t.delete_user(&id).unwrap();
    assert!(t.group(&gid).unwrap().members.is_empty());
    assert!(t.user(&id).is_none());
    t.delete_group(&gid).unwrap();
    assert!(t.group(&gid).is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn tls_with_exposed_ca() {
    let dir = std::env::temp_dir().join(format!("usersync-sim-ca-{}.pem", std::process::id()));
    let sim = start(SimConfig {
        users: 10,
        tls: true,
        tls_cert_out: Some(dir.clone()),
        ..SimConfig::default()
    })
    .await;
    let info = sim.info().clone();
    assert!(info.graph_url.starts_with("https://127.0.0.1:"));
    let pem = sim.ca_certificate_pem().unwrap();
    assert_eq!(std::fs::read_to_string(&dir).unwrap(), pem);
    let _ = std::fs::remove_file(&dir);

    // Untrusted by default.
    let plain = reqwest::Client::new();
    assert!(
        plain
            .get(format!("{}/v1.0/users", info.graph_url))
            .send()
            .await
            .is_err()
    );

    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            info.authority_url, info.tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", info.client_secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tok: Value = r.json().await.unwrap();
    let v: Value = http
        .get(format!("{}/v1.0/users?$top=3&$select=id", info.graph_url))
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["@odata.nextLink"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    sim.shutdown().await;
}

/// What Microsoft's Graph SDK for Python (crates/sim/tests/msgraph_sdk)
/// relies on: the scope its auth provider derives from the Graph URL (host,
/// no port), `$count` on member relationships, v1.0-only organization shape.
#[tokio::test]
async fn graph_sdk_expectations() {
    let sim = start(SimConfig {
        users: 30,
        seed: 5,
        ..SimConfig::default()
    })
    .await;
    let info = sim.info().clone();
    let origin = info.graph_url.rsplit_once(':').unwrap().0.to_string();
    let mut form = good_form(&sim);
    form[3].1 = format!("{origin}/.default");
    let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, v) = token_request(&sim, &f).await;
    assert_eq!(s, 200, "{v}");
    form[3].1 = format!("{origin}:1/.default");
    let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, v) = token_request(&sim, &f).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"], "invalid_resource");

    let g = Graph::new(&sim).await;
    let eventual = [("ConsistencyLevel", "eventual")];
    let (groups, _, _) = g.all("/groups?$select=id", &[]).await;
    let mut checked_users = 0;
    for grp in &groups {
        let gid = grp["id"].as_str().unwrap();
        let (members, _, _) = g.all(&format!("/groups/{gid}/members"), &[]).await;
        for (path, want) in [
            ("members/$count", members.len()),
            (
                "members/microsoft.graph.user/$count",
                members
                    .iter()
                    .filter(|m| m["@odata.type"] == "#microsoft.graph.user")
                    .count(),
            ),
        ] {
            let (s, h, v) = g
                .get_full(&format!("/groups/{gid}/{path}"), &eventual)
                .await;
            assert_eq!(s, 200, "{path}: {v}");
            assert!(
                h["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
            );
            assert_eq!(v, Value::from(want as u64), "{path}");
        }
        let (trans, _, _) = g
            .all(&format!("/groups/{gid}/transitiveMembers"), &[])
            .await;
        let (_, _, v) = g
            .get_full(
                &format!("/groups/{gid}/transitiveMembers/$count"),
                &eventual,
            )
            .await;
        assert_eq!(v, Value::from(trans.len() as u64));
        if let Some(uid) = members
            .iter()
            .find(|m| m["@odata.type"] == "#microsoft.graph.user")
            .and_then(|m| m["id"].as_str())
            && checked_users < 3
        {
            checked_users += 1;
            let mo = g.ok(&format!("/users/{uid}/memberOf")).await;
            let (s, _, v) = g
                .get_full(&format!("/users/{uid}/memberOf/$count"), &eventual)
                .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v, Value::from(mo["value"].as_array().unwrap().len() as u64));
        }
    }
    assert!(checked_users > 0);
    // Like /users/$count, relationship counts need ConsistencyLevel: eventual.
    let gid = groups[0]["id"].as_str().unwrap();
    let (s, v) = g.get(&format!("/groups/{gid}/members/$count")).await;
    assert_eq!(s, 400, "{v}");
    let (s, _, v) = g
        .get_full(
            "/groups/00000000-0000-0000-0000-000000000001/members/$count",
            &eventual,
        )
        .await;
    assert_eq!(s, 404, "{v}");

    // v1.0 organization has no directorySizeQuota (a beta property).
    let org = g.ok("/organization").await;
    assert!(org["value"][0].get("directorySizeQuota").is_none(), "{org}");
    sim.shutdown().await;
}

/// `POST /_sim/changes` on the simulator's own address.
async fn post_changes(sim: &Simulator, body: Value) -> (StatusCode, Value) {
    let url = format!("http://{}/_sim/changes", sim.local_addr());
    let resp = client().post(url).json(&body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn random_changes_from_another_process() {
    let config = || SimConfig {
        users: 200,
        seed: 4,
        ..SimConfig::default()
    };
    let sim = start(config()).await;
    let twin = start(config()).await;
    let g = Graph::new(&sim).await;
    let (_, _, delta) = g.all("/users/delta?$select=id,mail,displayName", &[]).await;
    let tenant_id = sim.info().tenant_id.clone();
    let request = json!({"tenant_id": tenant_id, "percent": 10, "seed": 7});

    let (status, answer) = post_changes(&sim, request.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changes"], 20, "10 % of 200 users: {answer}");
    let counts = answer["counts"].as_object().unwrap();
    let total: u64 = counts.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 20);
    let kinds = counts.values().filter(|v| v.as_u64() != Some(0)).count();
    assert!(kinds >= 5, "several kinds of change: {answer}");

    // The same seed on the same tenant makes the same changes.
    let (_, again) = post_changes(&twin, request).await;
    assert_eq!(again["counts"], answer["counts"]);
    let shape = |s: &Simulator| {
        let mut users: Vec<(String, Option<String>, String)> = s
            .tenant()
            .users()
            .into_iter()
            .map(|u| (u.id, u.mail, u.display_name))
            .collect();
        users.sort();
        users
    };
    assert_eq!(shape(&sim), shape(&twin));

    // A delta round sees them.
    let (changed, _, _) = g.all(&delta.unwrap(), &[]).await;
    assert!(!changed.is_empty());

    // Bad requests change nothing and say why.
    let before = shape(&sim);
    let (status, answer) = post_changes(
        &sim,
        json!({"tenant_id": tenant_id, "percent": 200, "seed": 1}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("percent"));
    let (status, _) =
        post_changes(&sim, json!({"tenant_id": "nobody.example", "percent": 1})).await;
    assert_eq!(status, 404);
    let (status, _) = post_changes(&sim, json!({"percent": 1})).await;
    assert_eq!(status, 400);
    assert_eq!(shape(&sim), before);
    sim.shutdown().await;
    twin.shutdown().await;
}
