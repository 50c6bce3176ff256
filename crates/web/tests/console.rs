//! The console over HTTP, on SQLite and PostgreSQL: sign-in and its limits, the session
//! cookie, CSRF on every form, the security headers, and nobody seeing another customer's
//! pages. (The browser walk-through is in `browser.rs`.)

mod common;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use usersync_core::Role;
use usersync_engine::{Engine, EngineOptions, NoProgress};
use usersync_sim::{SimConfig, Simulator};
use usersync_store::SecretString;
use usersync_store::testing::{discard, open_fresh};

usersync_store::on_both_backends!(
    signing_in_sets_a_session_that_every_form_checks,
    a_customer_admin_sees_only_its_own_customer_in_the_console,
    failed_sign_ins_are_limited_per_account,
    the_user_sync_tab_previews_switches_and_syncs,
    connect_office365_goes_through_microsofts_consent_and_back,
    connect_office365_delegated_signs_in_with_pkce_and_keeps_the_sign_in_sealed,
    the_setup_wizard_saves_each_step_and_resumes,
    api_tokens_are_made_once_shown_and_revoked_in_the_console,
    a_running_sync_shows_its_phase_and_counts,
    users_are_paged_filtered_and_restored_in_the_console,
);

const PASSWORD: &str = "a long enough password";

struct Console {
    engine: Engine,
    url: String,
    base: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A browser's worth of state: the cookies it was given.
#[derive(Default)]
struct Jar(HashMap<String, String>);

impl Jar {
    fn take(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || text.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_string(), value.to_string());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The value of a hidden input named `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

async fn console(url: String) -> Console {
    console_with(url, None).await
}

/// A console whose "Connect Office 365" uses `app`, reached at its loopback address.
async fn console_with(url: String, app: Option<usersync_engine::Office365App>) -> Console {
    let store = open_fresh(&url).await;
    let engine = Engine::new(
        store,
        EngineOptions {
            actor: "test".into(),
            ..EngineOptions::default()
        },
    );
    engine.add_customer("Contoso").await.unwrap();
    engine.add_customer("Fabrikam").await.unwrap();
    engine
        .add_domain("Fabrikam", "fabrikam.example")
        .await
        .unwrap();
    let secret = SecretString::new(PASSWORD);
    engine
        .create_account("admin@example.com", &secret, Role::ProviderAdmin, None)
        .await
        .unwrap();
    engine
        .create_account(
            "ann@contoso.example",
            &secret,
            Role::CustomerAdmin,
            Some("Contoso"),
        )
        .await
        .unwrap();
    let router_engine = engine.clone();
    let (base, stop) = common::serve(|base| {
        let options = usersync_web::WebOptions {
            secure_cookies: false,
            public_url: Some(base.parse().unwrap()),
            office365: app,
        };
        usersync_web::router(router_engine, options)
    })
    .await;
    Console {
        engine,
        url,
        base,
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        stop: Some(stop),
    }
}

impl Console {
    async fn get(&self, jar: &mut Jar, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", jar.header())
            .send()
            .await
            .unwrap();
        jar.take(&response);
        (response.status(), response.text().await.unwrap())
    }

    async fn post(&self, jar: &mut Jar, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", jar.header())
            .form(form)
            .send()
            .await
            .unwrap();
        jar.take(&response);
        response
    }

    /// A read-only account of every customer, signed in.
    async fn reader(&self) -> Jar {
        self.engine
            .create_account(
                "reader@example.com",
                &SecretString::new(PASSWORD),
                Role::ReadOnly,
                None,
            )
            .await
            .unwrap();
        let mut jar = Jar::default();
        self.sign_in(&mut jar, "reader@example.com", PASSWORD).await;
        jar
    }

    /// Signs in as `email`; the jar then holds the session.
    async fn sign_in(&self, jar: &mut Jar, email: &str, password: &str) -> reqwest::Response {
        let (_, page) = self.get(jar, "/sign-in").await;
        let csrf = hidden(&page, "csrf");
        self.post(
            jar,
            "/sign-in",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &csrf),
                ("next", "/"),
            ],
        )
        .await
    }

    async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.engine.close().await;
        discard(&self.url).await;
    }
}

async fn signing_in_sets_a_session_that_every_form_checks(url: String) {
    let console = console(url).await;
    let mut jar = Jar::default();
    // Signed out, a page sends to the sign-in, keeping where it was going.
    let (status, _) = console.get(&mut jar, "/customers/1").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let response = console
        .http
        .get(format!("{}/customers/1", console.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["location"], "/sign-in?next=/customers/1");

    let response = console
        .sign_in(&mut jar, "Admin@Example.com", PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("usersync_session="))
        .expect("a session cookie");
    for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "http: no Secure flag: {cookie}");
    let (status, home) = console.get(&mut jar, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        home.contains("Contoso") && home.contains("Fabrikam"),
        "{home}"
    );
    assert!(home.contains("admin@example.com"));

    // Every answer carries the security headers.
    let response = console
        .http
        .get(format!("{}/", console.base))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");

    // A form without the session's token changes nothing.
    let response = console
        .post(
            &mut jar,
            "/customers",
            &[("name", "Northwind"), ("csrf", "forged")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Nothing was changed")
    );
    let names: Vec<String> = console
        .engine
        .customers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["Contoso", "Fabrikam"]);
    // With it, the customer is added, and the audit log names who did it.
    let csrf = hidden(&home, "csrf");
    let response = console
        .post(
            &mut jar,
            "/customers",
            &[("name", "Northwind"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, audit) = console.get(&mut jar, "/audit").await;
    assert!(
        audit.contains("admin@example.com") && audit.contains("customer.add"),
        "{audit}"
    );
    // A bad domain is shown next to its field, with what was typed.
    let fabrikam = console.engine.customer("Fabrikam").await.unwrap().id;
    let response = console
        .post(
            &mut jar,
            &format!("/customers/{fabrikam}/domains"),
            &[("name", "not a domain"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(page.contains("id=\"domain-name-error\""), "{page}");
    assert!(page.contains("value=\"not a domain\""), "{page}");

    // Signing out ends the session: its cookie no longer opens a page.
    let session = jar.0.get("usersync_session").cloned().unwrap();
    let response = console
        .post(&mut jar, "/sign-out", &[("csrf", &csrf)])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let mut old = Jar::default();
    old.0.insert("usersync_session".into(), session);
    let (status, _) = console.get(&mut old, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    console.close().await;
}

async fn a_customer_admin_sees_only_its_own_customer_in_the_console(url: String) {
    let console = console(url).await;
    let mut jar = Jar::default();
    let response = console
        .sign_in(&mut jar, "ann@contoso.example", PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, home) = console.get(&mut jar, "/").await;
    assert!(
        home.contains("Contoso") && !home.contains("Fabrikam"),
        "{home}"
    );
    assert!(
        !home.contains("New customer"),
        "a customer admin adds no customers"
    );
    let fabrikam = console.engine.customer("Fabrikam").await.unwrap().id;
    // Fabrikam has a tenant, a sync and a filter rule: none of them is Ann's to see.
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let source = common::connect_tenant(console.engine.store(), fabrikam, &sim).await;
    let run = console
        .engine
        .sync(source, &NoProgress)
        .await
        .unwrap()
        .run_id;
    let rule = console
        .engine
        .add_filter_rule(source, "Sales", "department equals Sales", true)
        .await
        .unwrap()
        .id;
    let domain = &sim.info().mail_domains[0];
    for path in [
        format!("/customers/{fabrikam}"),
        format!("/customers/{fabrikam}/users"),
        format!("/customers/{fabrikam}/domains/{domain}/user-sync"),
        format!("/customers/{fabrikam}/sources/new"),
        format!("/sources/{source}/runs"),
        format!("/sources/{source}/setup"),
        format!("/sources/{source}/setup/automatic"),
        format!("/sources/{source}/filters"),
        format!("/runs/{run}"),
        format!("/runs/{run}/progress"),
        "/customers/424242".to_string(),
        "/runs/424242".to_string(),
    ] {
        let (status, page) = console.get(&mut jar, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            !page.contains("Fabrikam") && !page.contains(domain.as_str()),
            "{path}"
        );
    }
    let csrf = hidden(&home, "csrf");
    for path in [
        format!("/sources/{source}/sync"),
        format!("/sources/{source}/preview"),
        format!("/sources/{source}/test"),
        format!("/sources/{source}/auto-sync"),
        format!("/sources/{source}/filters/{rule}/remove"),
        format!("/runs/{run}/cancel"),
    ] {
        let response = console
            .post(
                &mut jar,
                &path,
                &[
                    ("csrf", csrf.as_str()),
                    ("enabled", "true"),
                    ("position", "1"),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "POST {path}");
    }
    assert_eq!(console.engine.filter_rules(source).await.unwrap().len(), 1);
    sim.shutdown().await;
    let response = console
        .post(
            &mut jar,
            &format!("/customers/{fabrikam}/domains"),
            &[("name", "stolen.example"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (_, audit) = console.get(&mut jar, "/audit").await;
    assert!(!audit.contains("fabrikam.example"), "{audit}");
    console.close().await;
}

async fn failed_sign_ins_are_limited_per_account(url: String) {
    let console = console(url).await;
    let mut jar = Jar::default();
    let response = console
        .sign_in(&mut jar, "admin@example.com", "wrong password!")
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("the e-mail or the password is wrong"),
        "{page}"
    );
    assert!(
        page.contains("value=\"admin@example.com\""),
        "the e-mail is kept: {page}"
    );
    // An unknown account is refused in the same words.
    let response = console
        .sign_in(&mut jar, "nobody@example.com", PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("the e-mail or the password is wrong")
    );
    for _ in 0..4 {
        console
            .sign_in(&mut jar, "admin@example.com", "wrong password!")
            .await;
    }
    // Five failures: even the right password waits.
    let response = console
        .sign_in(&mut jar, "admin@example.com", PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
    // Another process of the same database holds the same line.
    let engine = console.engine.clone();
    let (base, stop) =
        common::serve(|_| usersync_web::router(engine, usersync_web::WebOptions::default())).await;
    let other = Console {
        engine: console.engine.clone(),
        url: console.url.clone(),
        base,
        http: console.http.clone(),
        stop: Some(stop),
    };
    let response = other
        .sign_in(&mut Jar::default(), "admin@example.com", PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(other);
    // Another account is not held back by it.
    let response = console
        .sign_in(&mut jar, "ann@contoso.example", PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // A sign-in form from elsewhere (no matching cookie) is refused.
    let response = console
        .http
        .post(format!("{}/sign-in", console.base))
        .form(&[
            ("email", "admin@example.com"),
            ("password", PASSWORD),
            ("csrf", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    console.close().await;
}

async fn the_user_sync_tab_previews_switches_and_syncs(url: String) {
    let console = console(url).await;
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let info = sim.info().clone();
    let store = console.engine.store().clone();
    let contoso = console.engine.customer("Contoso").await.unwrap().id;
    let source = connected(&console, &sim).await;
    let domain = &info.mail_domains[0];
    let tab = format!("/customers/{contoso}/domains/{domain}/user-sync");
    let mut jar = Jar::default();
    console
        .sign_in(&mut jar, "admin@example.com", PASSWORD)
        .await;
    let (status, page) = console.get(&mut jar, &tab).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for words in [
        "User Sources",
        "Connected to Office 365",
        "Enable Automatic User Sync",
        "Preview",
        "Manual Sync",
        "Sync &amp; Save",
    ] {
        assert!(page.contains(words), "{words} missing: {page}");
    }
    assert!(page.contains("aria-checked=\"false\""), "{page}");
    let csrf = hidden(&page, "csrf");

    // The switch turns automatic sync on, and says so.
    let response = console
        .post(
            &mut jar,
            &format!("/sources/{source}/auto-sync"),
            &[
                ("csrf", csrf.as_str()),
                ("enabled", "true"),
                ("back", tab.as_str()),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let back = response.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(&tab), "{back}");
    assert!(
        console
            .engine
            .source_options(source)
            .await
            .unwrap()
            .auto_sync
    );
    let (_, page) = console.get(&mut jar, &back).await;
    assert!(page.contains("Automatic User Sync is on"), "{page}");
    assert!(page.contains("aria-checked=\"true\""), "{page}");
    // The message is the console's own, not text a link carries.
    let (_, page) = console
        .get(&mut jar, &format!("{tab}?done=Call+0800+now"))
        .await;
    assert!(!page.contains("Call 0800 now"), "{page}");

    // Preview: the run's report, and nothing in the directory; each added user says
    // which rule placed it.
    console
        .engine
        .add_filter_rule(source, "Sales", "department equals Sales", true)
        .await
        .unwrap();
    let response = console
        .post(
            &mut jar,
            &format!("/sources/{source}/preview"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let report = response.headers()["location"].to_str().unwrap().to_string();
    let (_, page) = console.get(&mut jar, &report).await;
    assert!(
        page.contains("preview run") && page.contains(">succeeded<"),
        "{page}"
    );
    assert!(page.contains("Added"), "{page}");
    assert!(
        page.contains("placed by rule") && page.contains("placed by no rule matched"),
        "{page}"
    );
    assert!(store.users(contoso, false).await.unwrap().is_empty());

    // Sync & Save is queued; its page follows it with a script, until a worker ran it.
    let response = console
        .post(
            &mut jar,
            &format!("/sources/{source}/sync"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let run_page = response.headers()["location"].to_str().unwrap().to_string();
    let (_, page) = console.get(&mut jar, &run_page).await;
    assert!(page.contains("<script src=\"/static/run.js\""), "{page}");
    let (_, progress) = console.get(&mut jar, &format!("{run_page}/progress")).await;
    let progress: serde_json::Value = serde_json::from_str(&progress).unwrap();
    assert_eq!(
        (progress["status"].as_str(), progress["final"].as_bool()),
        (Some("queued"), Some(false))
    );
    let outcome = console.engine.sync(source, &NoProgress).await.unwrap();
    assert_eq!(format!("/runs/{}", outcome.run_id), run_page);
    let (_, progress) = console.get(&mut jar, &format!("{run_page}/progress")).await;
    let progress: serde_json::Value = serde_json::from_str(&progress).unwrap();
    assert_eq!(progress["final"], true);
    assert!(progress["added"].as_i64().unwrap() > 10, "{progress}");
    let (_, page) = console.get(&mut jar, &run_page).await;
    assert!(
        !page.contains("run.js"),
        "a finished run's page does not follow it"
    );

    // A read-only account sees the tab without its buttons, and cannot press them.
    let mut reader = console.reader().await;
    let (_, page) = console.get(&mut reader, &tab).await;
    assert!(
        !page.contains("Sync &amp; Save") && page.contains("Automatic User Sync: on"),
        "{page}"
    );
    let csrf = hidden(&page, "csrf");
    let response = console
        .post(
            &mut reader,
            &format!("/sources/{source}/sync"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    sim.shutdown().await;
    console.close().await;
}

/// A tenant that has not consented yet, a console that connects tenants with the
/// simulator's app registration, and its provider admin signed in: the simulator, the
/// console, Contoso's id and the admin's browser.
async fn connecting(url: String) -> (Simulator, Console, i64, Jar) {
    let sim = Simulator::start(SimConfig {
        consented: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let info = sim.info().clone();
    let app = usersync_engine::Office365App {
        client_id: info.client_id.clone(),
        client_secret: SecretString::new(info.client_secret.clone()),
        authority_url: info.authority_url.clone(),
        graph_url: info.graph_url.clone(),
    };
    let console = console_with(url, Some(app)).await;
    let contoso = console.engine.customer("Contoso").await.unwrap().id;
    let mut jar = Jar::default();
    console
        .sign_in(&mut jar, "admin@example.com", PASSWORD)
        .await;
    (sim, console, contoso, jar)
}

/// Follows Microsoft's side of the consent by hand: the simulator's pages, as a browser
/// would submit them.
async fn connect_office365_goes_through_microsofts_consent_and_back(url: String) {
    let (sim, console, contoso, mut jar) = connecting(url).await;
    let info = sim.info().clone();
    let (status, page) = console
        .get(&mut jar, &format!("/customers/{contoso}/sources/new"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Connect Office 365"), "{page}");
    let callback = format!("{}/connect/office365/callback", console.base);
    assert!(
        page.contains(&callback),
        "the redirect URI is shown: {page}"
    );
    // The app registration lists the console's callback, as Microsoft's must.
    sim.set_redirect_uris(std::slice::from_ref(&callback));
    // Opened under another name than its public URL, the page says so and links there
    // instead of offering a button whose callback would not come back here.
    let port = console.base.rsplit(':').next().unwrap();
    let response = console
        .http
        .get(format!("{}/customers/{contoso}/sources/new", console.base))
        .header("cookie", jar.header())
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    let other = response.text().await.unwrap();
    assert!(
        other.contains("set up to be reached at") && other.contains("id=\"right-url\""),
        "{other}"
    );
    assert!(!other.contains("id=\"connect-office365\""), "{other}");
    let csrf = hidden(&page, "csrf");

    // "Connect Office 365" sends the browser to the admin-consent endpoint.
    let consent = start(&console, &mut jar, contoso, &csrf).await;
    assert_eq!(consent.path(), "/organizations/v2.0/adminconsent");
    let query: HashMap<String, String> = consent.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], info.client_id);
    assert_eq!(query["redirect_uri"], callback);
    let sim_http = &console.http;
    let sign_in = sim_http.get(consent.clone()).send().await.unwrap();
    assert!(sign_in.text().await.unwrap().contains("Sign in"));
    // A redirect URI the registration does not list is refused, as Microsoft does.
    let mut elsewhere = consent.clone();
    elsewhere
        .query_pairs_mut()
        .clear()
        .extend_pairs(query.iter().map(|(k, v)| {
            (
                k.as_str(),
                if k == "redirect_uri" {
                    "https://evil.example/cb"
                } else {
                    v.as_str()
                },
            )
        }));
    let refused = sim_http.get(elsewhere).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("AADSTS50011"));

    // A user who is not a global administrator is refused, as Microsoft refuses them.
    let domain = &info.mail_domains[0];
    let mut as_user = consent.clone();
    as_user
        .query_pairs_mut()
        .append_pair("account", &format!("someone@{domain}"));
    let refused = sim_http.get(as_user).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("AADSTS90094"));

    // The administrator sees the permissions, and "Cancel" connects nothing.
    let admin = format!("admin@{domain}");
    let mut as_admin = consent.clone();
    as_admin.query_pairs_mut().append_pair("account", &admin);
    let page = sim_http
        .get(as_admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("{admin} (admin)")), "{page}");
    assert!(page.contains("Accept") && page.contains("Cancel") && page.contains("User.Read.All"));
    let decide = |decision: &'static str, query: HashMap<String, String>| {
        let url = consent
            .join("/organizations/v2.0/adminconsent/decide")
            .unwrap();
        let admin = admin.clone();
        async move {
            let mut form: Vec<(String, String)> = query.into_iter().collect();
            form.push(("account".into(), admin));
            form.push(("decision".into(), decision.into()));
            let response = sim_http.post(url).form(&form).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            response.headers()["location"].to_str().unwrap().to_string()
        }
    };
    let back = decide("cancel", query.clone()).await;
    assert!(
        back.starts_with(&callback) && back.contains("error=access_denied"),
        "{back}"
    );
    let path = back.strip_prefix(&console.base).unwrap().to_string();
    let (status, page) = console.get(&mut jar, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("AADSTS65004") && page.contains("declined"),
        "{page}"
    );
    assert!(
        console
            .engine
            .sources(Some("Contoso"), false)
            .await
            .unwrap()
            .is_empty()
    );

    // An answer made up by hand (the redirect is not signed) names a tenant that never
    // consented: refused, nothing kept.
    let consent = start(&console, &mut jar, contoso, &csrf).await;
    let state: HashMap<String, String> = consent.query_pairs().into_owned().collect();
    let mut forged = reqwest::Url::parse(&callback).unwrap();
    forged
        .query_pairs_mut()
        .append_pair("admin_consent", "True")
        .append_pair("tenant", "3f2504e0-4f89-11d3-9a0c-0305e82c3301")
        .append_pair("state", &state["state"]);
    let path = forged
        .as_str()
        .strip_prefix(&console.base)
        .unwrap()
        .to_string();
    let (status, page) = console.get(&mut jar, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("has not consented"), "{page}");
    // A state changed on the way is not one this console made.
    let mut chars: Vec<char> = state["state"].chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
    let tampered_state: String = chars.into_iter().collect();
    let mut tampered = reqwest::Url::parse(&callback).unwrap();
    tampered
        .query_pairs_mut()
        .append_pair("admin_consent", "True")
        .append_pair("tenant", &info.tenant_id)
        .append_pair("state", &tampered_state);
    let path = tampered
        .as_str()
        .strip_prefix(&console.base)
        .unwrap()
        .to_string();
    let (status, page) = console.get(&mut jar, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("not one this console made"), "{page}");
    assert!(
        console
            .engine
            .sources(Some("Contoso"), false)
            .await
            .unwrap()
            .is_empty()
    );

    // "Accept": back in the console, connected, each permission granted.
    let consent = start(&console, &mut jar, contoso, &csrf).await;
    let query: HashMap<String, String> = consent.query_pairs().into_owned().collect();
    let back = decide("accept", query).await;
    assert!(
        back.contains("admin_consent=True") && back.contains(&info.tenant_id),
        "{back}"
    );
    let path = back.strip_prefix(&console.base).unwrap().to_string();
    // The answer belongs to this browser's sign-in: another session's is refused.
    let mut other = Jar::default();
    console
        .sign_in(&mut other, "admin@example.com", PASSWORD)
        .await;
    let (status, page) = console.get(&mut other, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("another sign-in"), "{page}");
    let (status, page) = console.get(&mut jar, &path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Connected to Office 365"), "{page}");
    assert!(
        page.contains(&info.tenant_id) && page.contains("granted"),
        "{page}"
    );
    assert!(
        !page.contains("missing") && !page.contains(&info.client_secret),
        "{page}"
    );
    let sources = console
        .engine
        .sources(Some("Contoso"), false)
        .await
        .unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].tenant_id, info.tenant_id);
    // The source syncs with the app's credentials.
    console.engine.add_domain("Contoso", domain).await.unwrap();
    let outcome = console
        .engine
        .sync(sources[0].id, &NoProgress)
        .await
        .unwrap();
    assert!(
        outcome.error.is_none() && outcome.stats.requests > 0,
        "{:?}",
        outcome.error
    );

    // The same tenant for another customer is refused, naming the customer that has it.
    let fabrikam = console.engine.customer("Fabrikam").await.unwrap().id;
    let response = console
        .post(
            &mut jar,
            &format!("/customers/{fabrikam}/connect/office365"),
            &[("csrf", csrf.as_str()), ("tenant", info.tenant_id.as_str())],
        )
        .await;
    let consent = reqwest::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        consent.path(),
        format!("/{}/v2.0/adminconsent", info.tenant_id)
    );
    let query: HashMap<String, String> = consent.query_pairs().into_owned().collect();
    let back = decide("accept", query).await;
    let path = back.strip_prefix(&console.base).unwrap().to_string();
    let (status, page) = console.get(&mut jar, &path).await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(page.contains("Contoso"), "{page}");
    sim.shutdown().await;
    console.close().await;
}

/// Delegated mode: the authorization code flow with PKCE on the simulator's pages, the
/// code redeemed once, the refresh token kept sealed and renewed by every sign-in.
async fn connect_office365_delegated_signs_in_with_pkce_and_keeps_the_sign_in_sealed(url: String) {
    let (sim, console, contoso, mut jar) = connecting(url).await;
    let info = sim.info().clone();
    let (_, page) = console
        .get(&mut jar, &format!("/customers/{contoso}/sources/new"))
        .await;
    assert!(page.contains("id=\"mode-delegated\""), "{page}");
    let csrf = hidden(&page, "csrf");
    let callback = format!("{}/connect/office365/callback", console.base);
    sim.set_redirect_uris(std::slice::from_ref(&callback));

    // "Connect Office 365", delegated: Microsoft's authorize endpoint, with a PKCE
    // challenge (its verifier stays sealed in the state) and a refresh token asked for.
    let response = console
        .post(
            &mut jar,
            &format!("/customers/{contoso}/connect/office365"),
            &[
                ("csrf", csrf.as_str()),
                ("tenant", ""),
                ("mode", "delegated"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let authorize = reqwest::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(authorize.path(), "/organizations/oauth2/v2.0/authorize");
    let query: HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["code_challenge"].len(), 43, "a SHA-256 digest");
    assert_eq!(query["redirect_uri"], callback);
    assert!(query["scope"].contains("offline_access"), "{query:?}");

    // The administrator signs in and accepts.
    let domain = &info.mail_domains[0];
    let admin = format!("admin@{domain}");
    let mut as_admin = authorize.clone();
    as_admin.query_pairs_mut().append_pair("account", &admin);
    let page = console
        .http
        .get(as_admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("{admin} (admin)")), "{page}");
    let mut form: Vec<(String, String)> = query.clone().into_iter().collect();
    form.push(("flow".into(), "authorize".into()));
    form.push(("account".into(), admin.clone()));
    form.push(("decision".into(), "accept".into()));
    let decided = console
        .http
        .post(
            authorize
                .join("/organizations/oauth2/v2.0/authorize/decide")
                .unwrap(),
        )
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), StatusCode::SEE_OTHER);
    let back = decided.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(&callback), "{back}");
    let answer: HashMap<String, String> = reqwest::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(answer["state"], query["state"]);

    // Without the verifier, or with another one, the code is worth nothing.
    let token_url = format!("{}/organizations/oauth2/v2.0/token", info.authority_url);
    for (verifier, code) in [
        (None, "AADSTS50148"),
        (Some("x".repeat(43)), "AADSTS501481"),
    ] {
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("client_id", info.client_id.clone()),
            ("client_secret", info.client_secret.clone()),
            ("code", answer["code"].clone()),
            ("redirect_uri", callback.clone()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        let refused = console
            .http
            .post(&token_url)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(refused.text().await.unwrap().contains(code));
    }

    // Back in the console: connected, signing in as that administrator.
    let path = back.strip_prefix(&console.base).unwrap().to_string();
    let (status, page) = console.get(&mut jar, &path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Connected to Office 365"), "{page}");
    assert!(
        page.contains(&info.tenant_id) && !page.contains("missing"),
        "{page}"
    );
    assert!(page.contains("(delegated)"), "{page}");
    // The code is redeemed once: the same answer again connects nothing more.
    let (status, page) = console.get(&mut jar, &path).await;
    assert_ne!(status, StatusCode::OK, "{page}");
    assert!(page.contains("AADSTS54005"), "{page}");
    let sources = console
        .engine
        .sources(Some("Contoso"), false)
        .await
        .unwrap();
    assert_eq!(sources.len(), 1);
    let source = &sources[0];
    assert_eq!(source.tenant_id, info.tenant_id);
    assert_eq!(source.settings["delegated"], true);

    // The refresh token is stored sealed: no token the simulator handed out is in the
    // database's column, nor in what the source shows.
    let store = console.engine.store();
    let kept = store
        .source_refresh_token(source.id)
        .await
        .unwrap()
        .unwrap();
    let issued = sim.refresh_tokens_issued();
    assert!(issued.iter().any(|t| t == kept.expose()));
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&console.url).await.unwrap();
    let at_rest: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT refresh_token FROM sources WHERE id = {}",
        source.id
    )))
    .fetch_one(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    assert!(
        issued.iter().all(|t| !at_rest.contains(t.as_str())),
        "sealed at rest"
    );
    let shown = serde_json::to_string(source).unwrap();
    assert!(
        issued.iter().all(|t| !shown.contains(t.as_str())),
        "{shown}"
    );

    // The source syncs as the administrator; each sign-in renews the refresh token,
    // and the newest is kept.
    console.engine.add_domain("Contoso", domain).await.unwrap();
    let outcome = console.engine.sync(source.id, &NoProgress).await.unwrap();
    assert!(
        outcome.error.is_none() && outcome.stats.requests > 0,
        "{:?}",
        outcome.error
    );
    let mut renewed = false;
    for _ in 0..50 {
        let now = store
            .source_refresh_token(source.id)
            .await
            .unwrap()
            .unwrap();
        if now.expose() != kept.expose() {
            renewed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(renewed, "the refresh token of the sync's sign-in is kept");

    // The administrator's sign-in revoked (a password reset): the connection test says
    // so, and how to mend it.
    sim.revoke_refresh_tokens();
    let report = console.engine.test_source(source.id).await.unwrap();
    assert!(!report.is_ready(), "{report:?}");
    let text = format!("{report:?}");
    assert!(
        text.contains("AADSTS50173") && text.contains("connect the source again"),
        "{text}"
    );
    sim.shutdown().await;
    console.close().await;
}

/// "Connect Office 365" on `customer`: where it sends the browser.
async fn start(console: &Console, jar: &mut Jar, customer: i64, csrf: &str) -> reqwest::Url {
    let path = format!("/customers/{customer}/connect/office365");
    let response = console
        .post(jar, &path, &[("csrf", csrf), ("tenant", "")])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    reqwest::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap()
}

/// Contoso connected to a simulated tenant (with its mail domains): the source's id.
async fn connected(console: &Console, sim: &Simulator) -> i64 {
    let contoso = console.engine.customer("Contoso").await.unwrap().id;
    common::connect_tenant(console.engine.store(), contoso, sim).await
}

async fn the_setup_wizard_saves_each_step_and_resumes(url: String) {
    let console = console(url).await;
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let source = connected(&console, &sim).await;
    let mut jar = Jar::default();
    console
        .sign_in(&mut jar, "admin@example.com", PASSWORD)
        .await;
    let (status, _) = console
        .get(&mut jar, &format!("/sources/{source}/setup"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, page) = console
        .get(&mut jar, &format!("/sources/{source}/setup/automatic"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Step 1 of 14") && page.contains("Enable Automatic User Sync"),
        "{page}"
    );
    let csrf = hidden(&page, "csrf");
    let step = |name: &str| format!("/sources/{source}/setup/{name}");

    // A bad interval is shown beside its field, with what was typed; nothing is saved.
    let response = console
        .post(
            &mut jar,
            &step("automatic"),
            &[
                ("csrf", csrf.as_str()),
                ("auto_sync", "true"),
                ("interval", "2m"),
                ("action", "next"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("id=\"interval-error\"") && page.contains("value=\"2m\""),
        "{page}"
    );
    assert!(
        !console
            .engine
            .source_options(source)
            .await
            .unwrap()
            .auto_sync
    );
    let response = console
        .post(
            &mut jar,
            &step("automatic"),
            &[
                ("csrf", csrf.as_str()),
                ("auto_sync", "true"),
                ("interval", "2h"),
                ("action", "next"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], step("email").as_str());
    let options = console.engine.source_options(source).await.unwrap();
    assert!(options.auto_sync && options.interval_minutes == 120);

    // "Save and leave", then the wizard resumes after the last step saved.
    let response = console
        .post(
            &mut jar,
            &step("email"),
            &[
                ("csrf", csrf.as_str()),
                ("email_method", "mail"),
                ("action", "leave"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = console
        .http
        .get(format!("{}/sources/{source}/setup", console.base))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["location"], step("groups").as_str());
    assert_eq!(
        console
            .engine
            .source_options(source)
            .await
            .unwrap()
            .email_method,
        usersync_core::EmailMethod::Mail
    );
    // A switch left off is saved off; several boxes are kept together.
    console
        .post(
            &mut jar,
            &step("accounts"),
            &[
                ("csrf", csrf.as_str()),
                ("exclude_disabled", "true"),
                ("action", "next"),
            ],
        )
        .await;
    console
        .post(
            &mut jar,
            &step("group-types"),
            &[
                ("csrf", csrf.as_str()),
                ("group_types", "m365"),
                ("group_types", "security"),
                ("action", "next"),
            ],
        )
        .await;
    let options = console.engine.source_options(source).await.unwrap();
    assert!(options.exclude_disabled && !options.exclude_guests && !options.exclude_unlicensed);
    assert_eq!(options.group_types.len(), 2);

    // The test sync previews with these settings.
    let response = console
        .post(
            &mut jar,
            &step("test"),
            &[("csrf", csrf.as_str()), ("action", "preview")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("id=\"test-result\"") && page.contains("to add"),
        "{page}"
    );
    assert!(
        console
            .engine
            .store()
            .users(console.engine.customer("Contoso").await.unwrap().id, false)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, page) = console.get(&mut jar, &step("done")).await;
    assert!(page.contains("interval") && page.contains("2h"), "{page}");

    // Filters: a rule with a destination group made for it; a bad rule is shown.
    let filters = format!("/sources/{source}/filters");
    let response = console
        .post(
            &mut jar,
            &filters,
            &[
                ("csrf", csrf.as_str()),
                ("rule", "department equals"),
                ("group", "Sales"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("id=\"filter-error\"") && page.contains("value=\"department equals\""),
        "{page}"
    );
    let response = console
        .post(
            &mut jar,
            &filters,
            &[
                ("csrf", csrf.as_str()),
                ("rule", "department equals Sales"),
                ("group", "Sales"),
                ("create_group", "true"),
            ],
        )
        .await;
    let status = response.status();
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "{}",
        response.text().await.unwrap()
    );
    let (_, page) = console.get(&mut jar, &filters).await;
    assert!(
        page.contains("department equals") && page.contains("<td>Sales</td>"),
        "{page}"
    );
    // A second rule, moved up to be first: first match wins, so order matters.
    let response = console
        .post(
            &mut jar,
            &filters,
            &[
                ("csrf", csrf.as_str()),
                ("rule", "jobTitle contains Manager"),
                ("group", "Main"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let rules = console.engine.filter_rules(source).await.unwrap();
    assert_eq!(rules.len(), 2);
    let (_, page) = console.get(&mut jar, &filters).await;
    let (first, second) = (rules[0].id, rules[1].id);
    assert!(
        page.contains(&format!("id=\"up-{second}\""))
            && page.contains(&format!("id=\"down-{first}\""))
            && !page.contains(&format!("id=\"up-{first}\""))
            && !page.contains(&format!("id=\"down-{second}\"")),
        "{page}"
    );
    let response = console
        .post(
            &mut jar,
            &format!("{filters}/{second}/move"),
            &[("csrf", csrf.as_str()), ("position", "1")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let moved: Vec<i64> = console
        .engine
        .filter_rules(source)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(moved, vec![second, first]);
    let response = console
        .post(
            &mut jar,
            &format!("{filters}/{second}/move"),
            &[("position", "2")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "no CSRF token");
    for rule in [first, second] {
        let response = console
            .post(
                &mut jar,
                &format!("{filters}/{rule}/remove"),
                &[("csrf", csrf.as_str())],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }
    assert!(
        console
            .engine
            .filter_rules(source)
            .await
            .unwrap()
            .is_empty()
    );

    // A read-only account changes nothing.
    let mut reader = console.reader().await;
    let (_, page) = console.get(&mut reader, &step("automatic")).await;
    let csrf = hidden(&page, "csrf");
    let response = console
        .post(
            &mut reader,
            &step("automatic"),
            &[
                ("csrf", csrf.as_str()),
                ("interval", "3h"),
                ("action", "next"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    sim.shutdown().await;
    console.close().await;
}

async fn api_tokens_are_made_once_shown_and_revoked_in_the_console(url: String) {
    let console = console(url).await;
    let mut jar = Jar::default();
    console
        .sign_in(&mut jar, "ann@contoso.example", PASSWORD)
        .await;
    let (status, page) = console.get(&mut jar, "/tokens").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        !page.contains("value=\"provider_admin\""),
        "a customer admin hands out no more than it holds"
    );
    assert!(!page.contains("every customer</option>"), "{page}");
    let csrf = hidden(&page, "csrf");
    let contoso = console
        .engine
        .customer("Contoso")
        .await
        .unwrap()
        .id
        .to_string();
    let response = console
        .post(
            &mut jar,
            "/tokens",
            &[
                ("csrf", csrf.as_str()),
                ("name", "export"),
                ("role", "read_only"),
                ("customer_id", contoso.as_str()),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    let start = page.find("<code id=\"new-token\">").unwrap() + "<code id=\"new-token\">".len();
    let token = page[start..].split('<').next().unwrap().to_string();
    assert!(token.starts_with("ust_"), "{token}");
    // It works, shows once, and goes when revoked.
    let principal = console
        .engine
        .token_principal(&token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(principal.grant.role, Role::ReadOnly);
    let (_, page) = console.get(&mut jar, "/tokens").await;
    assert!(!page.contains(&token) && page.contains("export"), "{page}");
    // Asking for more than it holds is refused, in words.
    let response = console
        .post(
            &mut jar,
            "/tokens",
            &[
                ("csrf", csrf.as_str()),
                ("name", "x"),
                ("role", "provider_admin"),
                ("customer_id", ""),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("id=\"token-error\"")
    );
    let id = console.engine.store().api_tokens(None).await.unwrap()[0].id;
    let response = console
        .post(
            &mut jar,
            &format!("/tokens/{id}/revoke"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        console
            .engine
            .token_principal(&token)
            .await
            .unwrap()
            .is_none()
    );
    console.close().await;
}

/// A sync run by `serve`'s workers (here: this process's) shows where it stands.
async fn a_running_sync_shows_its_phase_and_counts(url: String) {
    let console = console(url).await;
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let source = connected(&console, &sim).await;
    // On PostgreSQL the workers are another process's (an engine of their own, sharing
    // only the database): the console reads the progress they write to the run's row.
    let worker_engine = if console.url.starts_with("postgres") {
        Engine::new(console.engine.store().clone(), EngineOptions::default())
    } else {
        console.engine.clone()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(usersync_engine::run_service(
        worker_engine,
        usersync_engine::ServiceOptions {
            workers: 1,
            scheduler: false,
            poll: Duration::from_millis(100),
            grace: Duration::from_secs(5),
            notifications: None,
        },
        std::sync::Arc::new(usersync_engine::Metrics::default()),
        stopped,
    ));
    // Far away: each request takes long enough to be seen (by another process, which
    // learns it once a second, longer).
    sim.set_latency(Duration::from_millis(
        if console.url.starts_with("postgres") {
            700
        } else {
            300
        },
    ));
    let mut jar = Jar::default();
    console
        .sign_in(&mut jar, "admin@example.com", PASSWORD)
        .await;
    let (_, page) = console.get(&mut jar, "/").await;
    let csrf = hidden(&page, "csrf");
    let response = console
        .post(
            &mut jar,
            &format!("/sources/{source}/sync"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    let run_page = response.headers()["location"].to_str().unwrap().to_string();
    let mut phases = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = console.get(&mut jar, &format!("{run_page}/progress")).await;
        let p: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(phase) = p["live"]["phase"].as_str().filter(|s| !s.is_empty())
            && phases.last().map(String::as_str) != Some(phase)
        {
            phases.push(phase.to_string());
        }
        if p["final"] == true {
            assert_eq!(p["status"], "succeeded", "{p}");
            assert!(
                p.get("live").is_none(),
                "an ended run has no live progress: {p}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not end: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        phases.iter().any(|p| p.starts_with("reading")),
        "the reading phase was seen: {phases:?}"
    );
    let _ = stop.send(true);
    let _ = workers.await;
    sim.shutdown().await;
    console.close().await;
}

async fn users_are_paged_filtered_and_restored_in_the_console(url: String) {
    let console = console(url).await;
    let sim = Simulator::start(SimConfig {
        users: 140,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let source = connected(&console, &sim).await;
    console.engine.sync(source, &NoProgress).await.unwrap();
    let contoso = console.engine.customer("Contoso").await.unwrap().id;
    let all = console.engine.store().users(contoso, false).await.unwrap();
    assert!(all.len() > 50, "more than one page: {}", all.len());
    let mut jar = Jar::default();
    console
        .sign_in(&mut jar, "admin@example.com", PASSWORD)
        .await;

    // Pages of 50, in order, "Next page" to the end.
    let mut seen = Vec::new();
    let mut path = format!("/customers/{contoso}/users");
    for pages in 1.. {
        assert!(
            pages <= all.len().div_ceil(50),
            "more pages than users allow: {path}"
        );
        let (status, page) = console.get(&mut jar, &path).await;
        assert_eq!(status, StatusCode::OK);
        let rows = page.matches("<tr><td>").count();
        assert!(rows <= 50, "{rows} rows on a page");
        for u in &all {
            if page.contains(&format!("<tr><td>{}</td>", u.address)) && !seen.contains(&u.address) {
                seen.push(u.address.clone());
            }
        }
        let Some(at) = page.find("id=\"next-page\"") else {
            break;
        };
        let href = page[..at].rsplit("href=\"").next().unwrap();
        path = href
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&")
            .replace("&#38;", "&");
    }
    assert_eq!(seen.len(), all.len(), "every user once");

    // The type filter.
    let (_, page) = console
        .get(&mut jar, &format!("/customers/{contoso}/users?type=shared"))
        .await;
    let shared = all
        .iter()
        .filter(|u| u.mailbox_type == usersync_core::MailboxType::Shared)
        .count();
    assert_eq!(
        page.matches("<td>shared</td>").count(),
        shared.min(50),
        "{page}"
    );

    // A user gone from the tenant is removed; "Restore" brings it back.
    let gone = sim
        .tenant()
        .users()
        .into_iter()
        .find(|u| {
            all.iter()
                .any(|a| a.source_object_id.as_deref() == Some(u.id.as_str()))
        })
        .unwrap();
    let address = all
        .iter()
        .find(|a| a.source_object_id.as_deref() == Some(gone.id.as_str()))
        .unwrap()
        .address
        .to_string();
    sim.tenant().delete_user(&gone.id).unwrap();
    console.engine.sync(source, &NoProgress).await.unwrap();
    let (_, page) = console
        .get(
            &mut jar,
            &format!("/customers/{contoso}/users?status=removed"),
        )
        .await;
    assert!(
        page.contains(&address) && page.contains(">Restore<"),
        "{page}"
    );
    let csrf = hidden(&page, "csrf");
    let response = console
        .post(
            &mut jar,
            &format!("/customers/{contoso}/users/restore"),
            &[("csrf", csrf.as_str()), ("address", address.as_str())],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let back = response.headers()["location"].to_str().unwrap().to_string();
    let (_, page) = console.get(&mut jar, &back).await;
    assert!(page.contains("is active again"), "{page}");
    let (_, page) = console
        .get(
            &mut jar,
            &format!("/customers/{contoso}/users?restored=Your+account+is+locked"),
        )
        .await;
    assert!(!page.contains("account is locked"), "{page}");
    let restored = console.engine.store().users(contoso, false).await.unwrap();
    assert!(
        restored.iter().any(|u| u.address.as_str() == address),
        "{address} is active again"
    );

    // A queued run can be cancelled from its page.
    let (_, page) = console.get(&mut jar, "/").await;
    let csrf = hidden(&page, "csrf");
    let response = console
        .post(
            &mut jar,
            &format!("/sources/{source}/sync"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    let run_page = response.headers()["location"].to_str().unwrap().to_string();
    let (_, page) = console.get(&mut jar, &run_page).await;
    assert!(page.contains("id=\"cancel-run\""), "{page}");
    let response = console
        .post(
            &mut jar,
            &format!("{run_page}/cancel"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, page) = console.get(&mut jar, &run_page).await;
    assert!(page.contains(">cancelled<"), "{page}");
    sim.shutdown().await;
    console.close().await;
}
