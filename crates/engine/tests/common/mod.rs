//! Shared set-up of the engine's tests: a simulated tenant connected to a fresh store.
#![allow(dead_code)]

use std::time::Duration;

use usersync_core::DomainName;
use usersync_engine::{
    Engine, EngineOptions, NewOffice365Source, Office365Settings, connect_office365,
};
use usersync_graph::RetryPolicy;
use usersync_sim::{SimConfig, SimUser, Simulator};
use usersync_store::testing::{discard, open_fresh};
use usersync_store::{DomainOrigin, SecretString, Store};

/// Runs each named test (a function of a database URL) on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[tokio::test] async fn $name() { super::$name(usersync_store::testing::fresh_sqlite_url()).await } )+ }
        mod postgres { $(#[tokio::test] async fn $name() {
            let Some(url) = usersync_store::testing::fresh_postgres_url() else { return };
            super::$name(url).await
        } )+ }
    };
}

/// A store with a customer, the simulated tenant's mail domains and a connected source.
pub struct World {
    pub sim: Simulator,
    pub store: Store,
    pub engine: Engine,
    pub customer: i64,
    pub source: i64,
    pub url: String,
    /// The tenant's first mail domain.
    pub domain: String,
}

pub async fn world(url: String, config: SimConfig) -> World {
    world_with(url, config, |_| {}).await
}

pub async fn world_with(
    url: String,
    config: SimConfig,
    tweak: impl FnOnce(&mut NewOffice365Source),
) -> World {
    let sim = Simulator::start(config).await.unwrap();
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
    let mut new = NewOffice365Source {
        customer_id: customer,
        tenant_id: info.tenant_id.clone(),
        settings: Office365Settings::new(&info.client_id, &info.authority_url, &info.graph_url),
        client_secret: SecretString::new(info.client_secret.clone()),
    };
    tweak(&mut new);
    let source = connect_office365(&store, new).await.unwrap().id;
    // Short back-offs keep failure tests quick; Retry-After from the server is still honoured.
    // Every sync that can write adds while its read goes on does (a tenant of the tests is
    // small): the tests check that path; the CLI's tests check the other.
    let engine = Engine::new(
        store.clone(),
        EngineOptions {
            max_in_flight: 4,
            early_writes_from: 1,
            early_writes_below_rate: f64::INFINITY,
            retry: RetryPolicy {
                max_retries: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_retry_after: Duration::from_secs(2),
            },
            ..EngineOptions::default()
        },
    );
    let domain = info.mail_domains[0].clone();
    World {
        domain,
        sim,
        store,
        engine,
        customer,
        source,
        url,
    }
}

impl World {
    pub async fn addresses(&self, include_removed: bool) -> Vec<String> {
        self.store
            .users(self.customer, include_removed)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.address.to_string())
            .collect()
    }

    pub async fn set(&self, options: &[&str]) {
        let texts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        self.engine
            .set_source_options(self.source, &texts)
            .await
            .unwrap();
    }

    pub fn add(&self, name: &str, local: &str, job: &str) -> String {
        let mut u = SimUser::member(name, &format!("{local}@{}", self.domain));
        u.job_title = Some(job.to_string());
        self.sim.tenant().add_user(u).unwrap()
    }

    pub async fn close(self) {
        self.sim.shutdown().await;
        self.store.close().await;
        discard(&self.url).await;
    }
}
