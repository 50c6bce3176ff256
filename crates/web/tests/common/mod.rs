//! What the web tests share: a simulated tenant connected to a customer, and the console
//! and API served on a loopback port.
#![allow(dead_code)]

pub mod contract;

use usersync_core::DomainName;
use usersync_engine::{NewOffice365Source, Office365Settings, connect_office365};
use usersync_sim::Simulator;
use usersync_store::{DomainOrigin, SecretString, Store};

/// The simulator's tenant connected to `customer_id` (with the tenant's mail domains):
/// the source's id.
pub async fn connect_tenant(store: &Store, customer_id: i64, sim: &Simulator) -> i64 {
    let info = sim.info().clone();
    for domain in &info.mail_domains {
        store
            .add_domain(
                customer_id,
                &DomainName::parse(domain).unwrap(),
                DomainOrigin::Manual,
            )
            .await
            .unwrap();
    }
    connect_office365(
        store,
        NewOffice365Source {
            customer_id,
            tenant_id: info.tenant_id.clone(),
            settings: Office365Settings::new(&info.client_id, &info.authority_url, &info.graph_url),
            client_secret: SecretString::new(info.client_secret.clone()),
        },
    )
    .await
    .unwrap()
    .id
}

/// Serves the router `make` builds for its base URL on 127.0.0.1 (port 0), until the
/// sender is used or dropped: the base URL and the sender.
pub async fn serve(
    make: impl FnOnce(&str) -> axum::Router,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = make(&base);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (base, stop)
}
