//! Timing checks for large tenants. Ignored by default; run with
//! `cargo test -p usersync-sim --release --test perf -- --ignored --nocapture`.

use serde_json::Value;
use std::time::Instant;
use usersync_sim::{SimConfig, Simulator};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn serve_100k_users() {
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let sim = Simulator::start(SimConfig {
        users: 100_000,
        seed: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    println!(
        "start (generate 100k users): {:?} (generation {:?}), RSS +{} MiB",
        t0.elapsed(),
        sim.generation_time(),
        (rss_kib() - rss0) / 1024
    );
    let info = sim.info().clone();
    let http = reqwest::Client::new();
    let tok: Value = http
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
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tok["access_token"].as_str().unwrap().to_string();
    let list = format!(
        "{}/v1.0/users?$top=999&$select=id,userPrincipalName,mail,proxyAddresses,displayName,givenName,surname,accountEnabled,userType,assignedLicenses,department,jobTitle,companyName",
        info.graph_url
    );
    for (label, first) in [
        ("/users $top=999 (warm-up)", list.clone()),
        (
            "/users $top=999",
            format!(
                "{}/v1.0/users?$top=999&$select=id,userPrincipalName,mail,proxyAddresses,displayName,givenName,surname,accountEnabled,userType,assignedLicenses,department,jobTitle,companyName",
                info.graph_url
            ),
        ),
        (
            "/users/delta maxpagesize=999",
            format!(
                "{}/v1.0/users/delta?$select=id,userPrincipalName,mail,proxyAddresses,displayName,accountEnabled,userType,assignedLicenses",
                info.graph_url
            ),
        ),
    ] {
        let t = Instant::now();
        let mut url = first;
        let (mut n, mut pages, mut bytes) = (0, 0, 0);
        loop {
            let body = http
                .get(&url)
                .bearer_auth(&token)
                .header("Prefer", "odata.maxpagesize=999")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            bytes += body.len();
            // Only the server is measured: count items and find the link
            // (written before "value") without parsing the page.
            let text = std::str::from_utf8(&body).unwrap();
            n += text.matches("\"userPrincipalName\":").count();
            pages += 1;
            let head = &text[..text.find("\"value\":").unwrap()];
            let head: Value =
                serde_json::from_str(&format!("{}}}", head.trim_end_matches(','))).unwrap();
            match head["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => break,
            }
        }
        println!(
            "{label}: {n} users in {pages} pages, {} MiB, {:?} (server + transfer)",
            bytes / (1 << 20),
            t.elapsed()
        );
        assert_eq!(n, 100_000);
    }
    println!("RSS after serving: +{} MiB", (rss_kib() - rss0) / 1024);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn serve_1000_tenants_of_1000_users() {
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let sim = Simulator::start(SimConfig {
        tenants: 1000,
        users: 1000,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    println!(
        "start (1000 tenants, first generated): {:?}, RSS +{} MiB",
        t0.elapsed(),
        (rss_kib() - rss0) / 1024
    );
    let http = reqwest::Client::new();
    let t = Instant::now();
    let mut users = 0;
    for info in sim.tenants() {
        let tok: Value = http
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
            .unwrap()
            .json()
            .await
            .unwrap();
        let count: u64 = http
            .get(format!("{}/v1.0/users/$count", info.graph_url))
            .bearer_auth(tok["access_token"].as_str().unwrap())
            .header("ConsistencyLevel", "eventual")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .parse()
            .unwrap();
        users += count;
    }
    assert_eq!(users, 1_000_000);
    assert_eq!(sim.generated_tenants(), 1000);
    println!(
        "token + $count in every tenant (generates each): {:?}, RSS +{} MiB",
        t.elapsed(),
        (rss_kib() - rss0) / 1024
    );
    sim.shutdown().await;
}
