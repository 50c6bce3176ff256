//! The console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver), signing in and finding a synced user. Needs Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them); without them the test says so and skips,
//! unless USERSYNC_REQUIRE_BROWSER=1 (set by `.ci/run`), when it fails.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use usersync_core::Role;
use usersync_engine::{Engine, EngineOptions};
use usersync_sim::{SimConfig, Simulator};
use usersync_store::SecretString;
use usersync_store::testing::{discard, fresh_sqlite_url, open_fresh};

const PASSWORD: &str = "a long enough password";

/// chromedriver on a loopback port, stopped with the test.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<Driver> {
    let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    if !std::path::Path::new(&program).exists() {
        let why = format!(
            "{program} is missing: apt-get install -y chromium chromium-driver (.ci/run does)"
        );
        if std::env::var("USERSYNC_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&program)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Driver { child, url })
}

#[tokio::test]
async fn an_admin_signs_in_and_finds_a_synced_user_in_the_browser() {
    let Some(driver) = chromedriver() else { return };
    // The tenant has not consented to the app yet: "Connect Office 365" asks for it.
    let sim = Simulator::start(SimConfig {
        consented: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let info = sim.info().clone();
    let url = fresh_sqlite_url();
    let store = open_fresh(&url).await;
    let engine = Engine::new(
        store.clone(),
        EngineOptions {
            actor: "test".into(),
            ..EngineOptions::default()
        },
    );
    let (stop_workers, stopped_workers) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(usersync_engine::run_service(
        engine.clone(),
        usersync_engine::ServiceOptions {
            workers: 1,
            scheduler: false,
            poll: Duration::from_millis(200),
            grace: Duration::from_secs(5),
            notifications: None,
        },
        std::sync::Arc::new(usersync_engine::Metrics::default()),
        stopped_workers,
    ));
    // Someone in Sales, whom a filter sends to the group Sales.
    let seller = format!("sam.seller@{}", info.mail_domains[0]);
    let mut sam = usersync_sim::SimUser::member("Sam Seller", &seller);
    sam.department = Some("Sales".into());
    sim.tenant().add_user(sam).unwrap();
    // The tenant's users' addresses, which the preview must list.
    let wanted_hint = format!("@{}", info.mail_domains[0]);
    engine
        .create_account(
            "admin@example.com",
            &SecretString::new(PASSWORD),
            Role::ProviderAdmin,
            None,
        )
        .await
        .unwrap();

    let router_engine = engine.clone();
    let app_info = info.clone();
    let (base, stop) = common::serve(|base| {
        let info = app_info;
        let options = usersync_web::WebOptions {
            secure_cookies: false,
            public_url: Some(base.parse().unwrap()),
            office365: Some(usersync_engine::Office365App {
                client_id: info.client_id.clone(),
                client_secret: SecretString::new(info.client_secret.clone()),
                authority_url: info.authority_url.clone(),
                graph_url: info.graph_url.clone(),
            }),
        };
        usersync_web::router(router_engine, options)
    })
    .await;

    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": ["--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--window-size=1280,900"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    let domain = info.mail_domains[0].clone();
    let walk = async {
        // Signed out, the console sends to the sign-in form, then back.
        browser.goto(&format!("{base}/audit")).await?;
        let path = browser.current_url().await?.path().to_string();
        assert_eq!(path, "/sign-in");
        browser
            .find(Locator::Id("email"))
            .await?
            .send_keys("admin@example.com")
            .await?;
        browser
            .find(Locator::Id("password"))
            .await?
            .send_keys("wrong password!!")
            .await?;
        browser.find(Locator::Id("sign-in")).await?.click().await?;
        let problem = browser
            .wait()
            .for_element(Locator::Id("sign-in-error"))
            .await?;
        assert!(
            problem
                .text()
                .await?
                .contains("the e-mail or the password is wrong")
        );
        // The e-mail stays; the password is typed again.
        browser
            .find(Locator::Id("password"))
            .await?
            .send_keys(PASSWORD)
            .await?;
        browser.find(Locator::Id("sign-in")).await?.click().await?;
        browser.wait().for_element(Locator::Id("audit")).await?;
        assert_eq!(browser.current_url().await?.path(), "/audit");

        // A customer and its domains, added in the console.
        browser.goto(&format!("{base}/")).await?;
        browser.wait().for_element(Locator::Id("customer-name")).await?.send_keys("Contoso").await?;
        browser.find(Locator::Css("form.inline button")).await?.click().await?;
        let heading = browser.wait().for_element(Locator::Css("h1")).await?.text().await?;
        assert_eq!(heading, "Contoso");
        for name in &info.mail_domains {
            browser.wait().for_element(Locator::Id("domain-name")).await?.send_keys(name).await?;
            browser.find(Locator::Css("form.inline button")).await?.click().await?;
            browser.wait().for_element(Locator::Id("domains")).await?;
        }
        let domains = browser.find(Locator::Id("domains")).await?.text().await?;
        assert!(info.mail_domains.iter().all(|d| domains.contains(d.as_str())), "{domains}");
        let contoso = engine.customer("Contoso").await.unwrap().id;

        // The domain's User Sync tab: "Add", "Office 365", "Connect Office 365", and
        // Microsoft's consent (the simulator's pages) as its administrator.
        let user_sync = Locator::Css(&format!("a[href$='/domains/{domain}/user-sync']"));
        browser.find(user_sync).await?.click().await?;
        browser
            .wait()
            .for_element(Locator::Id("add-source"))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .for_element(Locator::Id("connect-office365"))
            .await?
            .click()
            .await?;
        let account = browser.wait().for_element(Locator::Id("account")).await?;
        account.send_keys(&format!("admin@{domain}")).await?;
        browser.find(Locator::Id("next")).await?.click().await?;
        let who = browser.wait().for_element(Locator::Id("signed-in")).await?;
        assert_eq!(who.text().await?, format!("admin@{domain} (admin)"));
        browser.find(Locator::Id("accept")).await?.click().await?;
        let connected = browser.wait().for_element(Locator::Id("connected")).await?;
        assert_eq!(connected.text().await?, "Connected to Office 365");
        shot(&browser, "connected").await;
        let tenant = browser.find(Locator::Id("tenant-id")).await?.text().await?;
        assert_eq!(tenant, info.tenant_id);
        let checks = browser.find(Locator::Id("checks")).await?.text().await?;
        assert!(
            checks.contains("User.Read.All") && !checks.contains("missing"),
            "{checks}"
        );
        browser
            .find(Locator::Id("test-connection"))
            .await?
            .click()
            .await?;
        browser.wait().for_element(Locator::Id("connected")).await?;
        let source = engine.sources(Some("Contoso"), false).await.unwrap()[0].id;
        browser
            .find(Locator::Id("back-to-customer"))
            .await?
            .click()
            .await?;
        let sources = browser
            .wait()
            .for_element(Locator::Id("sources"))
            .await?
            .text()
            .await?;
        assert!(sources.contains(&info.tenant_id), "{sources}");
        browser
            .find(Locator::Css(&format!(
                "a[href$='/domains/{domain}/user-sync']"
            )))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .for_element(Locator::Id(&format!("source-{source}")))
            .await?;
        let tab = browser
            .find(Locator::Css("nav.tabs [aria-current=page]"))
            .await?
            .text()
            .await?;
        assert_eq!(tab, "User Sync");
        shot(&browser, "user-sync-tab").await;
        browser
            .find(Locator::Id(&format!("preview-{source}")))
            .await?
            .click()
            .await?;
        let status = browser
            .wait()
            .for_element(Locator::Id("run-status"))
            .await?;
        assert_eq!(status.text().await?, "succeeded");
        assert!(
            browser.source().await?.contains(wanted_hint.as_str()),
            "the preview lists the tenant's users"
        );
        shot(&browser, "preview").await;
        browser.back().await?;
        let switch = browser
            .wait()
            .for_element(Locator::Id(&format!("auto-sync-{source}")))
            .await?;
        assert_eq!(switch.attr("aria-checked").await?.as_deref(), Some("false"));
        switch.click().await?;
        let switch = browser
            .wait()
            .for_element(Locator::Css(&format!(
                "#auto-sync-{source}[aria-checked=true]"
            )))
            .await?;
        assert_eq!(switch.text().await?, "On");
        // A tenant far away: the sync takes seconds, so its page is seen before it ends.
        sim.set_latency(Duration::from_millis(400));
        browser
            .find(Locator::Id(&format!("sync-{source}")))
            .await?
            .click()
            .await?;
        // The run's page follows the queued run without being reloaded by hand, until it
        // shows the report of the finished sync.
        let status = browser
            .wait()
            .for_element(Locator::Id("run-status"))
            .await?;
        let first = status.text().await?;
        assert!(["queued", "running"].contains(&first.as_str()), "{first}");
        browser
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css("#run-status.succeeded"))
            .await?;
        browser
            .wait()
            .for_element(Locator::XPath("//h2[starts-with(., 'Added')]"))
            .await?;
        shot(&browser, "run-report").await;

        // Filters: a rule with a destination group made for it; after the next Sync &
        // Save the tenant's Sales people are in that group.
        browser.back().await?;
        browser.refresh().await?;
        browser
            .wait()
            .for_element(Locator::Id(&format!("filters-{source}")))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .for_element(Locator::Id("rule"))
            .await?
            .send_keys("department equals Sales")
            .await?;
        browser
            .find(Locator::Id("group"))
            .await?
            .send_keys("Sales")
            .await?;
        browser
            .find(Locator::Id("create-group"))
            .await?
            .click()
            .await?;
        browser.find(Locator::Id("add-rule")).await?.click().await?;
        let rules = browser
            .wait()
            .for_element(Locator::Id("rules"))
            .await?
            .text()
            .await?;
        assert!(
            rules.contains("department equals Sales") && rules.contains("Sales"),
            "{rules}"
        );
        browser.back().await?;
        browser.back().await?;
        browser.refresh().await?;
        browser
            .wait()
            .for_element(Locator::Id(&format!("sync-{source}")))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css("#run-status.succeeded"))
            .await?;
        browser
            .goto(&format!("{base}/customers/{contoso}/users?group=Sales"))
            .await?;
        let table = browser
            .wait()
            .for_element(Locator::Id("users"))
            .await?
            .text()
            .await?;
        assert!(table.contains(&seller), "{table}");

        // Users: search by part of the name, in any case.
        let users = store.users(contoso, false).await.unwrap();
        let wanted = users[users.len() / 2].clone();
        browser.goto(&format!("{base}/customers/{contoso}")).await?;
        browser
            .find(Locator::LinkText("Users"))
            .await?
            .click()
            .await?;
        browser.wait().for_element(Locator::Id("search")).await?;
        let part = wanted
            .display_name
            .split_whitespace()
            .last()
            .unwrap()
            .to_uppercase();
        browser
            .find(Locator::Id("search"))
            .await?
            .send_keys(&part)
            .await?;
        browser
            .find(Locator::Css("form.filters button"))
            .await?
            .click()
            .await?;
        // The searched page, not the table of the page before it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !browser.current_url().await?.as_str().contains("search=") {
            assert!(Instant::now() < deadline, "the search was not sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let table = browser.wait().for_element(Locator::Id("users")).await?;
        let text = table.text().await?;
        assert!(text.contains(wanted.address.as_str()), "{part}: {text}");
        let rows = browser.find_all(Locator::Css("#users tbody tr")).await?;
        assert!(
            !rows.is_empty() && rows.len() < users.len(),
            "the search narrowed the list"
        );
        shot(&browser, "users").await;

        // The run's report, from the customer page.
        browser
            .find(Locator::LinkText("Contoso"))
            .await?
            .click()
            .await?;
        browser
            .find(Locator::XPath(
                "(//table[@id='sources']//a[contains(@class, 'succeeded') and starts-with(normalize-space(.), 'sync')])[last()]",
            ))
            .await?
            .click()
            .await?;
        let status = browser
            .wait()
            .for_element(Locator::Id("run-status"))
            .await?;
        assert_eq!(status.text().await?, "succeeded");
        let page = browser.source().await?;
        assert!(
            page.contains(wanted.address.as_str()),
            "the report lists the added user"
        );

        // Many users gone at once: the sync holds their removals until someone confirms.
        let tenant = sim.tenant();
        let gone: Vec<String> = tenant.users().into_iter().take(25).map(|u| u.id).collect();
        for id in &gone {
            tenant.delete_user(id).unwrap();
        }
        browser.goto(&format!("{base}/customers/{contoso}/domains/{domain}/user-sync")).await?;
        browser.wait().for_element(Locator::Id(&format!("sync-{source}"))).await?.click().await?;
        let confirm = browser
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Id("confirm-removals"))
            .await?;
        let status = browser.find(Locator::Id("run-status")).await?.text().await?;
        assert_eq!(status, "held");
        shot(&browser, "held-run").await;
        confirm.click().await?;
        let status = browser
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css("#run-status.succeeded"))
            .await?;
        assert_eq!(status.text().await?, "succeeded");
        let removed = browser.find(Locator::XPath("//dt[.='Removed']/following-sibling::dd[1]")).await?.text().await?;
        assert!(removed.parse::<usize>().unwrap() >= 20, "removed {removed}");

        // The setup wizard resumes at its first step, and says which step it is.
        browser.goto(&format!("{base}/sources/{source}/setup")).await?;
        let title = browser.wait().for_element(Locator::Id("step-title")).await?.text().await?;
        assert_eq!(title, "Automatic sync");
        let switch = browser.find(Locator::Id("auto_sync")).await?;
        assert_eq!(switch.prop("checked").await?.as_deref(), Some("true"), "the switch turned on earlier");
        shot(&browser, "wizard-step").await;
        browser.find(Locator::Id("save-next")).await?.click().await?;
        let title = browser.wait().for_element(Locator::Css("#step-title")).await?;
        assert_eq!(title.text().await?, "Email method");

        // Signing out ends the session.
        browser
            .find(Locator::Css("form.signout button"))
            .await?
            .click()
            .await?;
        browser.wait().for_element(Locator::Id("sign-in")).await?;
        browser.goto(&format!("{base}/")).await?;
        assert_eq!(browser.current_url().await?.path(), "/sign-in");
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    if walk.is_err() {
        // Where the walk stopped, for whoever reads the failure.
        let at = browser.current_url().await.map(|u| u.to_string());
        let page = browser.source().await.unwrap_or_default();
        eprintln!(
            "the browser was at {at:?}:\n{}",
            &page[..page.len().min(3000)]
        );
    }
    let _ = browser.close().await;
    let _ = stop.send(());
    let _ = stop_workers.send(true);
    let _ = workers.await;
    sim.shutdown().await;
    engine.close().await;
    discard(&url).await;
    walk.expect("the walk through the console");
}

/// With USERSYNC_SCREENSHOTS=DIR, the page as the browser shows it, saved as DIR/NAME.png
/// (the README's pictures are taken so: `USERSYNC_SCREENSHOTS=docs/screenshots`).
async fn shot(browser: &fantoccini::Client, name: &str) {
    let Ok(dir) = std::env::var("USERSYNC_SCREENSHOTS") else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}
