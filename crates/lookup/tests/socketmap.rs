//! The lookup service over TCP as Postfix speaks to it, on SQLite and PostgreSQL: a
//! simulated tenant synced, then its addresses, domains and route looked up; a change in
//! the tenant reaches the answers after the next sync, with no restart.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usersync_core::DomainName;
use usersync_engine::{Engine, EngineOptions, NewOffice365Source, NoProgress, Office365Settings};
use usersync_lookup::{LookupOptions, LookupService, decode, encode, microsoft365_route};
use usersync_sim::{SimConfig, Simulator};
use usersync_store::testing::{discard, open_fresh};
use usersync_store::{DomainOrigin, SecretString};

usersync_store::on_both_backends!(lookups_answer_from_the_synced_directory_and_follow_its_changes,);

/// A client that sends requests as Postfix does and reads the replies.
struct Client(TcpStream, Vec<u8>);

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        Client(TcpStream::connect(addr).await.unwrap(), Vec::new())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    async fn reply(&mut self) -> String {
        loop {
            if let Some((data, used)) = decode(&self.1).unwrap() {
                let text = String::from_utf8(data.to_vec()).unwrap();
                self.1.drain(..used);
                return text;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut chunk))
                .await
                .expect("a reply within 10 s")
                .unwrap();
            assert!(n > 0, "the service hung up");
            self.1.extend_from_slice(&chunk[..n]);
        }
    }

    async fn ask(&mut self, request: &str) -> String {
        self.send(&encode(request)).await;
        self.reply().await
    }
}

async fn lookups_answer_from_the_synced_directory_and_follow_its_changes(url: String) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let info = sim.info().clone();
    let store = open_fresh(&url).await;
    let customer = store.add_customer("Contoso").await.unwrap().id;
    for domain in &info.mail_domains {
        store
            .add_domain(
                customer,
                &DomainName::parse(domain).unwrap(),
                DomainOrigin::Manual,
            )
            .await
            .unwrap();
    }
    let source = usersync_engine::connect_office365(
        &store,
        NewOffice365Source {
            customer_id: customer,
            tenant_id: info.tenant_id.clone(),
            settings: Office365Settings::new(&info.client_id, &info.authority_url, &info.graph_url),
            client_secret: SecretString::new(info.client_secret.clone()),
        },
    )
    .await
    .unwrap()
    .id;
    let engine = Engine::new(store.clone(), EngineOptions::default());

    // Served before anything is loaded: every answer says "later", never "no such user".
    let service = LookupService::new(Some('+'));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(usersync_lookup::serve(
        listener,
        service.clone(),
        stopped.clone(),
    ));
    let mut client = Client::connect(addr).await;
    let reply = client.ask("recipients anyone@contoso.com").await;
    assert!(reply.starts_with("TEMP "), "{reply}");

    engine.sync(source, &NoProgress).await.unwrap();
    let options = LookupOptions {
        poll: Duration::from_millis(100),
        ..LookupOptions::default()
    };
    let loader = tokio::spawn(usersync_lookup::keep_loaded(
        engine.clone(),
        service.clone(),
        options,
        stopped.clone(),
    ));
    let users = store.users(customer, false).await.unwrap();
    let ann = users
        .iter()
        .find(|u| !u.aliases.is_empty())
        .expect("a synced user with an alias");
    let address = ann.address.to_string();
    let (local, domain) = address.split_once('@').unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .ask(&format!("recipients {address}"))
        .await
        .starts_with("TEMP ")
    {
        assert!(Instant::now() < deadline, "the tables were not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Several requests in one write, and one split over two writes: answered in order.
    let mut batch = Vec::new();
    for request in [
        format!("recipients {address}"),
        format!("recipients {}", address.to_uppercase()),
        format!("recipients {local}+news@{domain}"),
        format!("recipients {}", ann.aliases[0]),
        format!("recipients nobody-here@{domain}"),
        "recipients someone@not-protected.example".to_string(),
        format!("domains {domain}"),
        "domains not-protected.example".to_string(),
        format!("transport {domain}"),
        format!("users {address}"),
    ] {
        batch.extend_from_slice(&encode(&request));
    }
    client.send(&batch).await;
    let mut replies = Vec::new();
    for _ in 0..10 {
        replies.push(client.reply().await);
    }
    assert_eq!(
        &replies[..4],
        ["OK ok", "OK ok", "OK ok", "OK ok"],
        "{replies:?}"
    );
    assert_eq!(&replies[4..6], ["NOTFOUND ", "NOTFOUND "], "{replies:?}");
    assert_eq!(&replies[6..8], ["OK ok", "NOTFOUND "], "{replies:?}");
    assert_eq!(replies[8], format!("OK {}", microsoft365_route(domain)));
    assert!(replies[9].starts_with("PERM "), "{replies:?}");
    let request = encode(&format!("recipients {address}"));
    let (first, rest) = request.split_at(5);
    client.send(first).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.send(rest).await;
    assert_eq!(client.reply().await, "OK ok");

    // A domain's own route, set by hand, then back to Exchange Online's.
    let bad = engine
        .set_domain(domain, &["route=mx.example.net".to_string()])
        .await
        .unwrap_err();
    assert_eq!(bad.field().as_deref(), Some("route"), "{bad}");
    for (setting, wanted) in [
        (
            "route=smtp:[mx.example.net]:2525",
            "OK smtp:[mx.example.net]:2525".to_string(),
        ),
        ("route=", format!("OK {}", microsoft365_route(domain))),
    ] {
        let set = engine
            .set_domain(domain, &[setting.to_string()])
            .await
            .unwrap();
        assert_eq!(set.route.is_some(), setting != "route=");
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.ask(&format!("transport {domain}")).await != wanted {
            assert!(
                Instant::now() < deadline,
                "{setting} did not reach the lookups"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Deleted in the tenant and synced: no longer a recipient, without a restart.
    let object = ann.source_object_id.clone().unwrap();
    sim.tenant().delete_user(&object).unwrap();
    engine.sync(source, &NoProgress).await.unwrap();
    let synced = Instant::now();
    let mut answer = client.ask(&format!("recipients {address}")).await;
    while answer != "NOTFOUND " {
        assert!(synced.elapsed() < Duration::from_secs(10), "still {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = client.ask(&format!("recipients {address}")).await;
    }
    // (How soon is a figure of `usersync bench`, not a test's.)

    // The database gone: the last good copy answers.
    store.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = users.iter().find(|u| u.address != ann.address).unwrap();
    assert_eq!(
        client.ask(&format!("recipients {}", other.address)).await,
        "OK ok"
    );

    // Not socketmap: refused, and the connection ends.
    let mut stranger = Client::connect(addr).await;
    stranger.send(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(stranger.reply().await.starts_with("PERM "));

    let _ = stop.send(true);
    let _ = server.await;
    let _ = loader.await;
    sim.shutdown().await;
    discard(&url).await;
}
