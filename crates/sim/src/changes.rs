//! Random tenant changes, for benchmarks and acceptance checks that change a tenant
//! between syncs from another process: `POST /_sim/changes` with
//! `{"tenant_id", "percent", "seed"}` makes that share of changes (of the users there are)
//! and answers with what it changed, counted by kind. The same seed on the same tenant
//! makes the same changes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::SimError;
use crate::directory::TenantHandle;
use crate::model::{SimUser, UserPurpose};

/// What to change.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangeRequest {
    pub tenant_id: String,
    /// Changes to make, as a percentage of the tenant's users (at least one when above 0).
    pub percent: f64,
    #[serde(default)]
    pub seed: u64,
}

/// What was changed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    pub added: usize,
    pub renamed: usize,
    pub aliases: usize,
    pub licences: usize,
    pub accounts: usize,
    pub memberships: usize,
    pub group_renames: usize,
    pub deleted: usize,
    pub restored: usize,
    pub types: usize,
    /// Two users swapping their primary addresses.
    pub swaps: usize,
    /// Three users each taking the next one's address, the last a new one.
    pub rename_chains: usize,
}

impl ChangeCounts {
    pub fn total(&self) -> usize {
        self.added
            + self.renamed
            + self.aliases
            + self.licences
            + self.accounts
            + self.memberships
            + self.group_renames
            + self.deleted
            + self.restored
            + self.types
            + self.swaps
            + self.rename_chains
    }
}

/// The kinds, each drawn with the same chance.
const KINDS: usize = 12;

/// Makes `percent` % random changes (of the tenant's user count) with `seed`.
pub fn random_changes(
    tenant: &TenantHandle,
    percent: f64,
    seed: u64,
) -> Result<ChangeCounts, SimError> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(SimError::Invalid(format!(
            "percent must be between 0 and 100, not {percent}"
        )));
    }
    let mut counts = ChangeCounts::default();
    let users = tenant.user_count();
    let wanted = ((users as f64) * percent / 100.0).round() as usize;
    let wanted = if percent > 0.0 { wanted.max(1) } else { 0 };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut deleted: Vec<String> = Vec::new();
    let domain = tenant.default_domain();
    let mut serial = 0usize;
    // Users with a mailbox, read once and kept up to date here (reading the tenant at each
    // change would cost a pass over it per change).
    let mut ids: Vec<String> = tenant
        .users()
        .into_iter()
        .filter(|u| u.mail.is_some())
        .map(|u| u.id)
        .collect();
    // Groups by id, read once (a copy of every group and its members at each change made
    // 1 % of a 1,000,000-user tenant take minutes).
    let group_ids: Vec<String> = tenant.groups().into_iter().map(|g| g.id).collect();
    while counts.total() < wanted {
        serial += 1;
        if ids.len() < 3 {
            ids.push(add(tenant, &mut rng, seed, serial)?);
            counts.added += 1;
            continue;
        }
        // A user as it is now.
        let pick = |rng: &mut ChaCha8Rng| -> Option<SimUser> {
            tenant.user(&ids[rng.random_range(0..ids.len())])
        };
        let kind = rng.random_range(0..KINDS);
        match kind {
            0 => {
                ids.push(add(tenant, &mut rng, seed, serial)?);
                counts.added += 1;
            }
            1 => {
                let Some(u) = pick(&mut rng) else { continue };
                tenant.update_user(&u.id, |u| {
                    u.display_name = format!("{} Renamed{serial}", u.display_name)
                })?;
                counts.renamed += 1;
            }
            2 => {
                let Some(u) = pick(&mut rng) else { continue };
                let local = u
                    .mail
                    .as_deref()
                    .and_then(|m| m.split('@').next())
                    .unwrap_or("x");
                let alias = format!("smtp:{local}.a{seed}x{serial}@{domain}");
                tenant.update_user(&u.id, |u| {
                    match u
                        .proxy_addresses
                        .iter()
                        .position(|p| p.starts_with("smtp:"))
                    {
                        Some(i) if serial.is_multiple_of(2) => {
                            u.proxy_addresses.remove(i);
                        }
                        _ => u.proxy_addresses.push(alias),
                    }
                })?;
                counts.aliases += 1;
            }
            3 => {
                let Some(u) = pick(&mut rng) else { continue };
                let sku = tenant.skus().first().map(|s| s.sku_id.clone());
                tenant.update_user(&u.id, |u| {
                    if u.assigned_licenses.is_empty() {
                        u.assigned_licenses.extend(sku);
                    } else {
                        u.assigned_licenses.clear();
                    }
                })?;
                counts.licences += 1;
            }
            4 => {
                let Some(u) = pick(&mut rng) else { continue };
                tenant.update_user(&u.id, |u| u.account_enabled = !u.account_enabled)?;
                counts.accounts += 1;
            }
            5 | 6 => {
                if group_ids.is_empty() {
                    continue;
                }
                let Some(g) = tenant.group(&group_ids[rng.random_range(0..group_ids.len())]) else {
                    continue;
                };
                if kind == 6 {
                    tenant.rename_group(&g.id, &format!("{} Renamed{serial}", g.display_name))?;
                    counts.group_renames += 1;
                } else {
                    let Some(u) = pick(&mut rng) else { continue };
                    if g.members.contains(&u.id) {
                        tenant.remove_member(&g.id, &u.id)?;
                    } else {
                        tenant.add_member(&g.id, &u.id)?;
                    }
                    counts.memberships += 1;
                }
            }
            7 => {
                let at = rng.random_range(0..ids.len());
                let id = ids.swap_remove(at);
                tenant.delete_user(&id)?;
                deleted.push(id);
                counts.deleted += 1;
            }
            8 => match deleted.pop() {
                Some(id) => {
                    tenant.restore_user(&id)?;
                    ids.push(id);
                    counts.restored += 1;
                }
                None => continue,
            },
            9 => {
                let Some(u) = pick(&mut rng) else { continue };
                let purposes = [
                    UserPurpose::User,
                    UserPurpose::Shared,
                    UserPurpose::Room,
                    UserPurpose::Equipment,
                ];
                let next = purposes[rng.random_range(0..purposes.len())];
                tenant.update_user(&u.id, |u| u.user_purpose = Some(next))?;
                counts.types += 1;
            }
            10 => {
                let (Some(a), Some(b)) = (pick(&mut rng), pick(&mut rng)) else {
                    continue;
                };
                if a.id == b.id {
                    continue;
                }
                set_primary(tenant, &a.id, b.mail.as_deref().unwrap_or_default())?;
                set_primary(tenant, &b.id, a.mail.as_deref().unwrap_or_default())?;
                counts.swaps += 1;
            }
            _ => {
                let (Some(a), Some(b), Some(c)) = (pick(&mut rng), pick(&mut rng), pick(&mut rng))
                else {
                    continue;
                };
                if a.id == b.id || b.id == c.id || a.id == c.id {
                    continue;
                }
                let fresh = format!("chain{seed}x{serial}@{domain}");
                set_primary(tenant, &a.id, b.mail.as_deref().unwrap_or_default())?;
                set_primary(tenant, &b.id, c.mail.as_deref().unwrap_or_default())?;
                set_primary(tenant, &c.id, &fresh)?;
                counts.rename_chains += 1;
            }
        }
    }
    Ok(counts)
}

/// Adds a new member whose object id comes from the seed too (so that the same seed makes
/// the same tenant); returns the id.
fn add(
    tenant: &TenantHandle,
    rng: &mut ChaCha8Rng,
    seed: u64,
    serial: usize,
) -> Result<String, SimError> {
    let mut user = tenant.new_member(&format!("Changed User{seed}x{serial}"));
    user.id = uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string();
    tenant.add_user(user)
}

/// Gives a user a new primary SMTP address (`mail` and the `SMTP:` entry); its old
/// primary address is gone, its aliases stay.
fn set_primary(tenant: &TenantHandle, id: &str, address: &str) -> Result<(), SimError> {
    let address = address.to_string();
    tenant.update_user(id, move |u| {
        u.proxy_addresses.retain(|p| !p.starts_with("SMTP:"));
        u.proxy_addresses.insert(0, format!("SMTP:{address}"));
        u.mail = Some(address);
    })
}
