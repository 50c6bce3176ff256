//! One tenant of a simulator that may serve many: its identity and domains
//! (cheap, made at start), the app's grant in it, and its directory, which is
//! generated on first use so that a thousand tenants cost little until they
//! are read.

use crate::SimInfo;
use crate::auth::Grant;
use crate::directory::Directory;
use crate::generate::Blueprint;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};

pub(crate) struct Tenant {
    /// Position among the simulator's tenants; tokens carry it.
    pub index: usize,
    /// Identity, names and domains. The directory generates from a copy.
    pub bp: Blueprint,
    pub grant: Grant,
    dir: OnceLock<Arc<RwLock<Directory>>>,
    /// Delta tokens carry the epoch they were issued in; a token of an earlier epoch has
    /// expired (Graph keeps change state for a limited time).
    pub delta_epoch: std::sync::atomic::AtomicU64,
    /// Change-notification subscriptions on the tenant's users and groups.
    subscriptions: std::sync::Mutex<Vec<crate::subscriptions::Subscription>>,
}

impl Tenant {
    pub(crate) fn new(index: usize, bp: Blueprint, grant: Grant) -> Tenant {
        Tenant {
            index,
            bp,
            grant,
            dir: OnceLock::new(),
            delta_epoch: std::sync::atomic::AtomicU64::new(0),
            subscriptions: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The tenant's subscriptions, locked.
    pub(crate) fn subscriptions(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<crate::subscriptions::Subscription>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn has_subscriptions(&self) -> bool {
        !self.subscriptions().is_empty()
    }

    /// The directory, generated now if this is its first use.
    pub(crate) fn directory(&self) -> &Arc<RwLock<Directory>> {
        self.dir.get_or_init(|| {
            let t0 = std::time::Instant::now();
            let dir = Directory::new(self.bp.clone());
            tracing::debug!(tenant = self.index, elapsed = ?t0.elapsed(), "tenant generated");
            Arc::new(RwLock::new(dir))
        })
    }

    pub(crate) fn dir(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory().read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_generated(&self) -> bool {
        self.dir.get().is_some()
    }

    /// What a client needs to connect to this tenant on a server at `base_url`.
    pub(crate) fn info(&self, base_url: &str) -> SimInfo {
        let bp = &self.bp;
        SimInfo {
            authority_url: base_url.to_string(),
            graph_url: base_url.to_string(),
            tenant_id: bp.tenant_id.clone(),
            client_id: bp.client_id.clone(),
            client_secret: bp.client_secret.clone(),
            domains: bp.domains.iter().map(|d| d.id.clone()).collect(),
            mail_domains: bp.mail_domains.clone(),
            initial_domain: bp.initial_domain.clone(),
        }
    }
}
