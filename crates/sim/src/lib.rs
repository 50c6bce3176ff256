//! A faithful Microsoft 365 simulator: the Microsoft identity platform token
//! endpoint (client credentials) and the parts of Microsoft Graph v1.0 a
//! directory sync reads, over deterministic generated tenants of any size:
//! one, or many behind one listener (`SimConfig::tenants`), each with its own
//! id, app credentials, domains and users; a token carries its tenant and
//! Graph answers from that tenant's directory.
//!
//! ```no_run
//! # async fn demo() -> Result<(), usersync_sim::SimError> {
//! use usersync_sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig { users: 1000, seed: 7, ..SimConfig::default() }).await?;
//! println!("{}", serde_json::to_string(sim.info()).unwrap());
//! let tenant = sim.tenant();
//! let anne = tenant.new_member("Anne Smith");
//! tenant.add_user(anne)?;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Modules: `generate` (tenant generation), `directory` (state, change
//! tracking, [`TenantHandle`]), `tenant` (one tenant's identity, grant and
//! lazily generated directory), `auth` (token endpoint, bearer checks),
//! `graph` (Graph routes), `batch` (`$batch`), `knobs` (throttling, faults,
//! stats), `tls` (self-signed certificates), `server` (listener).

mod auth;
mod batch;
mod changes;
mod consent;
mod directory;
mod generate;
mod graph;
mod knobs;
mod model;
mod server;
mod subscriptions;
mod tenant;
mod tls;
mod util;

pub use changes::{ChangeCounts, ChangeRequest, random_changes};
pub use directory::TenantHandle;
pub use knobs::{Fault, FaultAction, FaultWhen, SimStats, Throttle};
pub use model::{
    GroupKind, SKU_SPE_E3, SimDomain, SimGroup, SimSku, SimUser, UserPurpose, UserType,
};
pub use server::Simulator;

use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Application permissions granted to the simulated app by default.
pub const DEFAULT_PERMISSIONS: &[&str] = &[
    "User.Read.All",
    "Group.Read.All",
    "Domain.Read.All",
    "Organization.Read.All",
    "MailboxSettings.Read",
    "Directory.Read.All",
];

/// Start-up configuration. Everything but the tenants themselves can also be
/// changed at run time through [`Simulator`] methods.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where to listen; default 127.0.0.1:0 (an ephemeral port).
    pub listen: SocketAddr,
    /// Number of generated users, in each tenant (default 50).
    pub users: usize,
    /// Generation seed (default 1). Same (users, seed) → same tenant; the
    /// other tenants derive their seeds from it and their index.
    pub seed: u64,
    /// Number of tenants served (default 1). The first is the tenant of
    /// (users, seed); the others are generated on first use.
    pub tenants: usize,
    /// Server-side maximum page size, applied even when `$top` asks for more.
    pub page_size_cap: Option<usize>,
    /// Added to every HTTP request (token, Graph, `$batch` envelope).
    pub latency: Duration,
    pub throttle: Throttle,
    /// Serve HTTPS with a freshly generated CA and server certificate.
    pub tls: bool,
    /// With `tls`, also write the CA certificate PEM to this file.
    pub tls_cert_out: Option<PathBuf>,
    /// Lifetime of issued access tokens (default one hour).
    pub token_lifetime: Duration,
    /// Whether the tenants have consented to the app; if not, the token
    /// endpoint answers unauthorized_client (AADSTS700016).
    pub consented: bool,
    /// Permissions removed from [`DEFAULT_PERMISSIONS`] (or from `permissions`).
    pub denied_permissions: Vec<String>,
    /// Replaces the default granted permissions when set.
    pub permissions: Option<Vec<String>>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            users: 50,
            seed: 1,
            tenants: 1,
            page_size_cap: None,
            latency: Duration::ZERO,
            throttle: Throttle::default(),
            tls: false,
            tls_cert_out: None,
            token_lifetime: Duration::from_secs(3600),
            consented: true,
            denied_permissions: Vec::new(),
            permissions: None,
        }
    }
}

/// What a client needs to connect to one tenant; printed by the CLI as one
/// JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimInfo {
    /// Root of the server: clients call `{authority_url}/{tenant}/oauth2/v2.0/token`.
    pub authority_url: String,
    /// Root of the server: clients call `{graph_url}/v1.0/users`.
    pub graph_url: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Every domain name of the tenant, including unverified ones and the
    /// initial `<name>.onmicrosoft.com`.
    pub domains: Vec<String>,
    /// Verified custom domains that support Email, default first.
    pub mail_domains: Vec<String>,
    /// The initial `<name>.onmicrosoft.com` domain.
    pub initial_domain: String,
}

/// Memory a generated tenant takes per user (measured: about 280 bytes).
const BYTES_PER_USER: u64 = 300;

/// Refuses tenants that cannot be generated here, before trying: user numbers are 32-bit,
/// and tenants larger than the memory available would abort the process once all are
/// read (tenants after the first are generated on first use, but a schedule reads them all).
pub(crate) fn check_tenant_size(users: usize, tenants: usize) -> Result<(), SimError> {
    if tenants == 0 {
        return Err(SimError::Invalid(
            "--tenants 0: the simulator serves at least one tenant".into(),
        ));
    }
    let users = users as u64;
    if users > u64::from(u32::MAX) {
        return Err(SimError::Invalid(format!(
            "--users {users}: the simulator generates at most {} users",
            u32::MAX
        )));
    }
    let needed = users
        .saturating_mul(tenants as u64)
        .saturating_mul(BYTES_PER_USER);
    if let Some(available) = available_memory()
        && needed > available
    {
        let fit = available / BYTES_PER_USER;
        return Err(SimError::Invalid(if tenants == 1 {
            format!(
                "--users {users}: a generated tenant of that size needs about {} of memory and this \
                 machine has {} available; at most about {fit} users fit",
                bytes_text(needed),
                bytes_text(available),
            )
        } else {
            format!(
                "--tenants {tenants} --users {users}: that many generated tenants need about {} of \
                 memory and this machine has {} available; at most about {} users per tenant fit",
                bytes_text(needed),
                bytes_text(available),
                fit / tenants as u64
            )
        }));
    }
    Ok(())
}

/// `MemAvailable` of `/proc/meminfo`, where there is one.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn bytes_text(bytes: u64) -> String {
    const GB: f64 = 1024.0 * 1024.0 * 1024.0;
    let gb = bytes as f64 / GB;
    if gb >= 1024.0 {
        format!("{:.1} TB", gb / 1024.0)
    } else {
        format!("{gb:.1} GB")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
}
