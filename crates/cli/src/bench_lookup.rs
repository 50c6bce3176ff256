//! `usersync bench --lookup`: socketmap lookups per second and their latency, over one
//! connection and over many at once, against a directory of N addresses; the memory the
//! tables take and the time they take to build.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use usersync_lookup::{DomainEntry, LookupService, LookupTables, decode, encode};

use crate::outln;

const DOMAINS: usize = 100;

#[derive(Debug, Serialize)]
struct LookupFigures {
    addresses: usize,
    connections: usize,
    lookups: usize,
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    tables_mb: f64,
    build_s: f64,
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / (1024.0 * 1024.0))
}

fn address(n: usize) -> String {
    format!("user{n}@d{}.example", n % DOMAINS)
}

/// One client asking `lookups` requests one after another, as Postfix does: the latency
/// of each.
async fn client(addr: std::net::SocketAddr, lookups: usize, seed: usize, space: usize) -> Vec<u32> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    let mut latencies = Vec::with_capacity(lookups);
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..lookups {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Half the keys are listed, half not (twice the directory's range).
        let n = (x % (2 * space as u64)) as usize;
        let request = encode(&format!("recipients {}", address(n)));
        let started = Instant::now();
        stream.write_all(&request).await.unwrap();
        loop {
            if let Some((_, used)) = decode(&buf).unwrap() {
                buf.drain(..used);
                break;
            }
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the service hung up");
            buf.extend_from_slice(&chunk[..read]);
        }
        latencies.push(started.elapsed().as_micros() as u32);
    }
    latencies
}

pub async fn run(
    addresses: usize,
    connections: &[usize],
    lookups: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let before = rss_mb();
    let started = Instant::now();
    let domains = (0..DOMAINS).map(|d| DomainEntry {
        name: format!("d{d}.example"),
        reject_unlisted: true,
        route: Some(usersync_lookup::microsoft365_route(&format!(
            "d{d}.example"
        ))),
    });
    let tables = LookupTables::new(domains, (0..addresses).map(address));
    let build_s = started.elapsed().as_secs_f64();
    let tables_mb = rss_mb() - before;
    let service = LookupService::new(Some('+'));
    service.replace(tables);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(usersync_lookup::serve(listener, service, stopped));
    let mut all = Vec::new();
    for &c in connections {
        let each = (lookups / c.max(1)).max(1);
        let started = Instant::now();
        let clients: Vec<_> = (0..c)
            .map(|i| tokio::spawn(client(addr, each, i + 1, addresses)))
            .collect();
        let mut latencies = Vec::with_capacity(each * c);
        for handle in clients {
            latencies.extend(handle.await?);
        }
        let elapsed = started.elapsed().max(Duration::from_micros(1));
        latencies.sort_unstable();
        let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64;
        all.push(LookupFigures {
            addresses,
            connections: c,
            lookups: latencies.len(),
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50_us: pick(0.5),
            p99_us: pick(0.99),
            max_us: pick(1.0),
            tables_mb,
            build_s,
        });
    }
    let _ = stop.send(true);
    let _ = server.await;
    if json {
        outln!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        let mut t = crate::table::Table::new()
            .keep("addresses")
            .keep("connections")
            .keep("lookups")
            .keep("per second")
            .keep("p50 (us)")
            .keep("p99 (us)")
            .keep("max (us)")
            .keep("tables MB")
            .keep("build (s)");
        for f in &all {
            t.row(vec![
                f.addresses.to_string(),
                f.connections.to_string(),
                f.lookups.to_string(),
                format!("{:.0}", f.per_second),
                format!("{:.0}", f.p50_us),
                format!("{:.0}", f.p99_us),
                format!("{:.0}", f.max_us),
                format!("{:.0}", f.tables_mb),
                format!("{:.2}", f.build_s),
            ]);
        }
        t.print();
        outln!(
            "Client and service share this machine's cores: the rate is what both together reach."
        );
    }
    Ok(ExitCode::SUCCESS)
}
