//! Planning: source snapshot + current directory -> a [`Plan`] of adds, updates, removals
//! and skips (rules 8 and 9 of PRODUCT.md). Applying it is the store's job.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::address::EmailAddress;
use crate::filter::{GroupNames, first_match};
use crate::mapping::{MappingContext, SkipReason, map_group, map_user};
use crate::model::{DirectoryUser, MailboxType, UserStatus};
use crate::options::GroupType;
use crate::snapshot::SourceSnapshot;

/// One value of a changed field, as the user would read it in JSON.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    Null,
    Bool(bool),
    Int(i64),
    Text(String),
    List(Vec<String>),
}

impl From<Option<String>> for FieldValue {
    fn from(v: Option<String>) -> Self {
        v.map_or(FieldValue::Null, FieldValue::Text)
    }
}

impl From<Option<crate::Shared>> for FieldValue {
    fn from(v: Option<crate::Shared>) -> Self {
        v.map_or(FieldValue::Null, |t| FieldValue::Text(t.to_string()))
    }
}

/// A field's value before and after; serialises as `[before, after]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change(pub FieldValue, pub FieldValue);

/// An existing directory entry that the sync changes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedUpdate {
    /// The entry's current address.
    pub address: EmailAddress,
    pub changes: BTreeMap<String, Change>,
    /// True when an unmanaged console user is adopted by the source (rule 8: "linked").
    #[serde(default)]
    pub linked: bool,
    /// True when a removed entry comes back.
    #[serde(default)]
    pub restored: bool,
    /// The store row and the entry as it will be; needed to apply, not to read.
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub after: Option<DirectoryUser>,
    /// The address comes from an entry this plan removes (its object left the tenant):
    /// what applies instead if that removal is held.
    #[serde(skip)]
    pub unless_held: Option<Box<HeldFallback>>,
}

/// What an update that takes a removed entry's address becomes when the removal is held:
/// the entry keeps its address, with a warning saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFallback {
    /// The entry whose removal frees the address.
    pub holder_id: i64,
    pub update: Option<PlannedUpdate>,
    pub warning: Skip,
}

/// A source object that is not imported, and why; in [`Plan::warnings`], an object that is
/// imported but not quite as the source has it, and what was left out.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    pub source_object_id: String,
    pub name: String,
    pub code: String,
    pub reason: String,
}

impl Skip {
    fn new(source_object_id: &str, name: Option<&str>, reason: &SkipReason) -> Self {
        Skip {
            source_object_id: source_object_id.to_string(),
            name: name.unwrap_or(source_object_id).to_string(),
            code: reason.code().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// What a sync would do: the preview shows it, Sync & Save applies all of it or none.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub add: Vec<DirectoryUser>,
    pub update: Vec<PlannedUpdate>,
    pub remove: Vec<DirectoryUser>,
    /// Source objects that are not synced, each with the reason.
    pub skip: Vec<Skip>,
    /// Source objects that are synced, but with something the source lists left out (an
    /// alias, a new address) because another entry holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Skip>,
    /// Removed entries deleted for good because a live user now takes their address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purge: Vec<DirectoryUser>,
    /// Tenant domains added to the customer first (option import_domains).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub import_domains: Vec<crate::address::DomainName>,
    /// Console groups made from tenant groups, with their members as they will be
    /// (options include_groups and group_map). `None` when the source manages no groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<PlannedGroup>>,
    /// Removals the deletion safeguard holds: not applied until an operator confirms them
    /// (`runs confirm`), which applies those the tenant still agrees with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<DirectoryUser>,
}

/// A console group kept in step with a tenant group.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedGroup {
    /// The console group's name: the tenant group's, or where group_map sends it.
    pub name: String,
    pub tenant_group_id: String,
    pub tenant_group_name: String,
    /// True when group_map maps it onto an existing console group.
    pub mapped: bool,
    /// Synced members (transitively), by address, sorted.
    pub members: Vec<EmailAddress>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.update.is_empty()
            && self.remove.is_empty()
            && self.purge.is_empty()
            && self.import_domains.is_empty()
    }

    pub fn linked(&self) -> usize {
        self.update.iter().filter(|u| u.linked).count()
    }
}

/// The deletion safeguard of rule 9: a run that would remove more than `percent` % of the
/// source's users, and at least `minimum` of them, stops until an operator confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Safeguard {
    pub percent: u32,
    pub minimum: usize,
}

impl Default for Safeguard {
    fn default() -> Self {
        Safeguard {
            percent: 10,
            minimum: 20,
        }
    }
}

impl Safeguard {
    /// Why the plan's removals must wait for a confirmation, if they must. `managed` is how
    /// many active entries the source manages before the run. The text says what was
    /// found; how to confirm is for the surface to say.
    pub fn check(&self, plan: &Plan, managed: usize) -> Option<String> {
        let removing = plan.remove.len();
        if removing > 0 && removing == managed {
            return Some(format!(
                "deletion safeguard: this sync would remove every one of the source's {managed} users \
                 (did the source return nobody, or are the customer's domains missing?)"
            ));
        }
        let over_share = removing as u128 * 100 > managed as u128 * u128::from(self.percent);
        (removing >= self.minimum && over_share).then(|| {
            format!(
                "deletion safeguard: this sync would remove {removing} of the source's {managed} users \
                 (more than {}% and at least {})",
                self.percent, self.minimum
            )
        })
    }

    /// The threshold as `deletion_threshold` takes it: `PERCENT,MIN`.
    pub fn parse(key: &str, value: &str) -> Result<Safeguard, crate::options::OptionError> {
        let bad = || crate::options::OptionError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected: "use PERCENT,MIN, e.g. 10,20: removals are held when they are more than \
                       PERCENT % (1 to 100) of the source's users and at least MIN (1 or more)"
                .to_string(),
        };
        let (percent, minimum) = value.split_once(',').ok_or_else(bad)?;
        let percent: u32 = percent
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| bad())?;
        let minimum: usize = minimum.trim().parse().map_err(|_| bad())?;
        if !(1..=100).contains(&percent) || minimum == 0 {
            return Err(bad());
        }
        Ok(Safeguard { percent, minimum })
    }
}

impl std::fmt::Display for Safeguard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.percent, self.minimum)
    }
}

impl Plan {
    /// Moves every removal to [`Plan::held`]: the deletion safeguard holds them until an
    /// operator confirms; adds and updates still apply.
    pub fn hold_removals(&mut self) {
        let removals = std::mem::take(&mut self.remove);
        self.held.extend(removals);
    }

    /// Updates that take the address of an entry whose removal is now held keep their
    /// address instead (with a warning), and the held entry is not purged: call after
    /// moving removals to [`Plan::held`].
    pub fn keep_addresses_of_held(&mut self) {
        let held: HashSet<i64> = self.held.iter().filter_map(|u| u.id).collect();
        if held.is_empty() {
            return;
        }
        let mut kept = Vec::with_capacity(self.update.len());
        for update in std::mem::take(&mut self.update) {
            match update.unless_held {
                Some(fallback) if held.contains(&fallback.holder_id) => {
                    let fallback = *fallback;
                    self.purge.retain(|p| p.id != Some(fallback.holder_id));
                    self.warnings.push(fallback.warning);
                    kept.extend(fallback.update);
                }
                _ => kept.push(update),
            }
        }
        self.update = kept;
    }

    /// Keeps held only the removals whose entries `confirmed` lists (by entry id): those
    /// were held before and confirmed; the others wait again.
    pub fn release_confirmed(&mut self, confirmed: &HashSet<i64>) {
        let (go, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.remove)
            .into_iter()
            .partition(|u| u.id.is_some_and(|id| confirmed.contains(&id)));
        self.remove = go;
        self.held.extend(stay);
    }
}

/// Plans one sync of `ctx.source_id` from a full read of the source.
///
/// `directory` is every entry of the customer, of every source and none, removed ones too:
/// rule 8 needs the unmanaged and other sources' entries, and removed entries of the same
/// address are restored rather than added twice.
pub fn plan_sync(
    snapshot: &SourceSnapshot,
    directory: &[DirectoryUser],
    ctx: &MappingContext,
) -> Plan {
    plan_within(snapshot, directory, ctx, None)
}

/// Plans the objects of `scope` only (a delta run, see [`crate::scope`]), or every object
/// when `scope` is `None`. `directory` then holds the entries of the scope's objects and
/// every entry holding an address they claim; planned against the whole directory, the
/// same objects would get the same adds, updates, removals and purges.
pub fn plan_within(
    snapshot: &SourceSnapshot,
    directory: &[DirectoryUser],
    ctx: &MappingContext,
    scope: Option<&HashSet<String>>,
) -> Plan {
    let mut plan = Plan::default();
    let mut desired = desired_entries(snapshot, ctx, scope, &mut plan.skip);
    plan_desired(snapshot, directory, ctx, &mut desired, plan)
}

/// Rules 1-7: what the source says each object (of `scope`, or every one) should be; the
/// objects that are not synced go to `skips` with the reason.
pub(crate) fn desired_entries(
    snapshot: &SourceSnapshot,
    ctx: &MappingContext,
    scope: Option<&HashSet<String>>,
    skips: &mut Vec<Skip>,
) -> Vec<DirectoryUser> {
    let in_scope = |id: &str| scope.is_none_or(|s| s.contains(id));
    let selected = selected_group_ids(snapshot, ctx);
    let names = GroupNames::new(&snapshot.groups);
    // Room for every object (grown past it, the vector would double).
    let mut desired: Vec<DirectoryUser> = Vec::with_capacity(scope.map_or(
        snapshot.users.len() + snapshot.groups.len() + ctx.options.extra_addresses.len(),
        HashSet::len,
    ));
    for user in snapshot.users.iter().filter(|u| in_scope(&u.id)) {
        let mapped = map_user(user, ctx).and_then(|entry| match &selected {
            Some(groups) if !user.member_of.iter().any(|g| groups.contains(g.as_str())) => {
                Err(SkipReason::NotInSelectedGroups)
            }
            _ => route(entry, user, ctx, &names),
        });
        match mapped {
            Ok(entry) => desired.push(entry),
            Err(reason) => skips.push(Skip::new(&user.id, user.display_name.as_deref(), &reason)),
        }
    }
    // Group mailboxes and extra addresses are not people: filters and selections are about
    // users, so these go to the default group, and say so when rules exist.
    let unfiltered = |mut entry: DirectoryUser| {
        if !ctx.rules.is_empty() {
            entry.placed_by = Some(format!("not filtered (a group address) -> {}", entry.group));
        }
        entry
    };
    for group in snapshot.groups.iter().filter(|g| in_scope(&g.id)) {
        match map_group(group, ctx) {
            Some(Ok(entry)) => desired.push(unfiltered(entry)),
            Some(Err(reason)) => {
                skips.push(Skip::new(&group.id, group.display_name.as_deref(), &reason))
            }
            None => {}
        }
    }
    for address in &ctx.options.extra_addresses {
        let object_id = extra_object_id(address);
        if !in_scope(&object_id) {
            continue;
        }
        match extra_address_entry(address, ctx) {
            Ok(entry) => desired.push(unfiltered(entry)),
            Err(reason) => skips.push(Skip::new(&object_id, Some(address.as_str()), &reason)),
        }
    }
    desired
}

/// Rules 8 and 9 over the desired entries: each one added, updated or left, the managed
/// entries nobody wants removed.
fn plan_desired(
    snapshot: &SourceSnapshot,
    directory: &[DirectoryUser],
    ctx: &MappingContext,
    desired: &mut Vec<DirectoryUser>,
    mut plan: Plan,
) -> Plan {
    let by_object: HashMap<&str, &DirectoryUser> = directory
        .iter()
        .filter(|e| e.is_managed_by(ctx.source_id))
        .filter_map(|e| Some((e.source_object_id.as_deref()?, e)))
        .collect();
    let by_address: HashMap<&EmailAddress, &DirectoryUser> =
        directory.iter().map(|e| (&e.address, e)).collect();

    // One object is one entry; and two objects cannot own one address: the one that owns
    // it in the console already keeps it, else the first by object id.
    let owns_now = |e: &DirectoryUser| {
        e.source_object_id
            .as_deref()
            .and_then(|o| by_object.get(o))
            .is_some_and(|current| current.address == e.address)
    };
    // Sorted through an order of indices: keys borrowed, not a copy of every object id.
    let owns: Vec<bool> = desired.iter().map(owns_now).collect();
    let mut order: Vec<usize> = (0..desired.len()).collect();
    order.sort_by(|&a, &b| {
        (!owns[a], &desired[a].source_object_id).cmp(&(!owns[b], &desired[b].source_object_id))
    });
    drop(owns);
    crate::order::put_in_order(desired, order);
    // Decided over borrowed keys first, then applied: at 100,000 users, maps of cloned
    // addresses and ids were a large share of a sync's peak memory.
    let mut keep = vec![true; desired.len()];
    {
        let mut objects: HashSet<&str> = HashSet::with_capacity(desired.len());
        let mut owner_of: HashMap<&str, &str> = HashMap::with_capacity(desired.len());
        for (i, entry) in desired.iter().enumerate() {
            let object_id = entry.source_object_id.as_deref().unwrap_or_default();
            if !objects.insert(object_id) {
                keep[i] = false;
            } else if let Some(other) = owner_of.get(entry.address.as_str()) {
                let reason = SkipReason::DuplicateAddress {
                    address: entry.address.clone(),
                    other_object_id: other.to_string(),
                };
                plan.skip
                    .push(Skip::new(object_id, Some(&entry.display_name), &reason));
                keep[i] = false;
            } else {
                owner_of.insert(entry.address.as_str(), object_id);
            }
        }
    }
    let mut index = 0;
    desired.retain(|_| {
        index += 1;
        keep[index - 1]
    });
    drop_conflicting_aliases(desired, directory, ctx, &mut plan);
    settle_managers_and_services(desired, snapshot, ctx);

    let desired_objects: HashSet<&str> = desired
        .iter()
        .filter_map(|e| e.source_object_id.as_deref())
        .collect();
    let mut matched: HashSet<i64> = HashSet::with_capacity(desired.len());
    let row = |e: &DirectoryUser| e.id.unwrap_or_default();
    let vacating = vacating_moves(desired, &by_object, &by_address, ctx, &desired_objects);

    // The entries added, by index: moved into the plan once `desired` is no longer needed
    // (a first sync's copy of every entry was a fifth of its peak memory).
    let mut added: Vec<bool> = vec![false; desired.len()];
    for (i, entry) in desired.iter().enumerate() {
        let object_id = entry.source_object_id.as_deref().unwrap_or_default();
        let current = by_object.get(object_id).copied();
        let holder = by_address
            .get(&entry.address)
            .copied()
            .filter(|h| current.is_none_or(|c| c.id != h.id));
        let mut keeps_address_of = None;
        let mut fallback = None;
        let target = match (current, holder) {
            (None, None) => {
                added[i] = true;
                continue;
            }
            (Some(current), None) => current,
            (Some(current), Some(holder))
                if holder.status == UserStatus::Active && vacating.contains(&row(current)) =>
            {
                // The holder moves to another address in this same plan (two users
                // swapping addresses, a chain of renames): both moves apply together. Or
                // its object left the tenant: this plan removes it, and it is purged as a
                // removed entry whose address a live user takes is; unless the removal is
                // held, then this entry keeps its address (`keep_addresses_of_held`).
                if holder
                    .source_object_id
                    .as_deref()
                    .is_none_or(|o| !desired_objects.contains(o))
                {
                    let mut kept = entry.clone();
                    kept.aliases.retain(|a| *a != current.address);
                    kept.address = current.address.clone();
                    let changes = diff(current, &kept);
                    let id = row(current);
                    let update = (!changes.is_empty()).then(|| PlannedUpdate {
                        address: current.address.clone(),
                        linked: current.source_id.is_none(),
                        restored: current.status == UserStatus::Removed,
                        changes,
                        id,
                        after: Some(DirectoryUser {
                            id: Some(id),
                            ..kept
                        }),
                        unless_held: None,
                    });
                    fallback = Some(Box::new(HeldFallback {
                        holder_id: row(holder),
                        update,
                        warning: address_kept(object_id, entry, current, holder, ctx),
                    }));
                    plan.purge.push(holder.clone());
                }
                current
            }
            (Some(current), Some(holder)) => {
                if holder.status == UserStatus::Removed
                    && !matched.contains(&row(holder))
                    && can_take_over(holder, ctx, &desired_objects)
                {
                    // A removed entry holds the address the user moves to: the address
                    // belongs to someone live now, so the removed entry is purged.
                    matched.insert(row(holder));
                    plan.purge.push(holder.clone());
                } else {
                    // Keep the current address, apply everything else, and say why: the
                    // object is still synced, so this is a warning, not a skip.
                    plan.warnings
                        .push(address_kept(object_id, entry, current, holder, ctx));
                    keeps_address_of = Some(current);
                }
                current
            }
            (None, Some(holder)) if vacating.contains(&row(holder)) => {
                // A new object takes the address another one leaves in this plan.
                added[i] = true;
                continue;
            }
            (None, Some(holder)) => {
                if matched.contains(&row(holder)) || !can_take_over(holder, ctx, &desired_objects) {
                    plan.skip.push(conflict(object_id, entry, holder));
                    continue;
                }
                holder
            }
        };
        let mut wanted = entry.clone();
        if let Some(current) = keeps_address_of {
            wanted.aliases.retain(|a| *a != current.address);
            wanted.address = current.address.clone();
        }
        let id = row(target);
        matched.insert(id);
        let changes = diff(target, &wanted);
        if !changes.is_empty() {
            plan.update.push(PlannedUpdate {
                address: target.address.clone(),
                linked: target.source_id.is_none(),
                restored: target.status == UserStatus::Removed,
                changes,
                id,
                after: Some(DirectoryUser {
                    id: Some(id),
                    ..wanted
                }),
                unless_held: fallback,
            });
        }
    }

    // Rule 9: managed entries the source no longer has are removed (soft delete), unless
    // the source keeps them.
    for current in directory {
        if current.is_managed_by(ctx.source_id)
            && current.status == UserStatus::Active
            && !matched.contains(&row(current))
        {
            if ctx.options.remove_deleted {
                plan.remove.push(current.clone());
            } else {
                plan.skip.push(Skip::new(
                    current.source_object_id.as_deref().unwrap_or_default(),
                    Some(&current.display_name),
                    &SkipReason::KeptNotRemoved,
                ));
            }
        }
    }

    // An object skipped after an alias of it was dropped is not synced at all: its skip
    // says so, and a warning about the alias would only suggest it was.
    let skipped: HashSet<&str> = plan
        .skip
        .iter()
        .map(|s| s.source_object_id.as_str())
        .collect();
    plan.warnings
        .retain(|w| !skipped.contains(w.source_object_id.as_str()));

    plan.groups = plan_groups(snapshot, desired, ctx);
    drop((desired_objects, vacating, by_object, by_address, matched));
    // In place: a first sync adds nearly every entry, and a second buffer of them is 300 MB
    // at 1,000,000 users.
    let mut index = 0;
    desired.retain(|_| {
        index += 1;
        added[index - 1]
    });
    if plan.add.is_empty() {
        plan.add = std::mem::take(desired);
    } else {
        plan.add.append(desired);
    }

    // No two adds share an address (the second was skipped above), so an unstable sort
    // gives the one order, without the stable sort's buffer of half the list (132 MB of
    // adds at 1,000,000).
    plan.add.sort_unstable_by(|a, b| a.address.cmp(&b.address));
    plan.update.sort_by(|a, b| a.address.cmp(&b.address));
    plan.remove.sort_by(|a, b| a.address.cmp(&b.address));
    for list in [&mut plan.skip, &mut plan.warnings] {
        list.sort_by(|a, b| (&a.name, &a.source_object_id).cmp(&(&b.name, &b.source_object_id)));
    }
    plan
}

/// Rule 6: the first matching filter rule gives the group; no match goes to the default
/// group, or is skipped when the source imports only matching users.
fn route(
    mut entry: DirectoryUser,
    user: &crate::snapshot::SourceUser,
    ctx: &MappingContext,
    names: &GroupNames,
) -> Result<DirectoryUser, SkipReason> {
    if ctx.rules.is_empty() {
        return Ok(entry);
    }
    match first_match(&ctx.rules, user, names) {
        Some(rule) => {
            entry.group = rule.group.clone();
            entry.placed_by = Some(format!(
                "rule {}: {} -> {}",
                rule.id, rule.expression, rule.group
            ));
            Ok(entry)
        }
        None if ctx.options.only_matching => Err(SkipReason::NoMatchingFilter),
        None => {
            entry.placed_by = Some(format!("no rule matched -> {}", entry.group));
            Ok(entry)
        }
    }
}

/// The ids of the tenant groups `selected_groups` names (by id or display name, of the
/// counted group types); `None` when everyone is selected.
fn selected_group_ids<'a>(
    snapshot: &'a SourceSnapshot,
    ctx: &MappingContext,
) -> Option<HashSet<&'a str>> {
    let wanted = &ctx.options.selected_groups;
    if wanted.is_empty() {
        return None;
    }
    Some(
        snapshot
            .groups
            .iter()
            .filter(|g| ctx.options.group_types.contains(&group_kind(g)))
            .filter(|g| {
                wanted.iter().any(|w| {
                    w.eq_ignore_ascii_case(&g.id)
                        || g.display_name
                            .as_deref()
                            .is_some_and(|n| n.to_lowercase() == w.to_lowercase())
                })
            })
            .map(|g| g.id.as_str())
            .collect(),
    )
}

/// The option `group_types` speaks of three kinds of tenant group.
pub fn group_kind(group: &crate::snapshot::SourceGroup) -> GroupType {
    if group.is_microsoft365() {
        GroupType::M365
    } else if group.security_enabled {
        GroupType::Security
    } else {
        GroupType::Distribution
    }
}

pub(crate) fn extra_object_id(address: &EmailAddress) -> String {
    format!("extra:{address}")
}

/// An extra address (a dynamic distribution list Graph does not show) as an entry.
fn extra_address_entry(
    address: &EmailAddress,
    ctx: &MappingContext,
) -> Result<DirectoryUser, SkipReason> {
    if address.is_onmicrosoft() {
        return Err(SkipReason::OnlyOnMicrosoft {
            address: address.clone(),
        });
    }
    if !ctx.domains.iter().any(|d| address.is_in(d)) {
        return Err(SkipReason::NotInSyncedDomain {
            address: address.clone(),
        });
    }
    Ok(DirectoryUser {
        id: None,
        address: address.clone(),
        display_name: address.to_string(),
        given_name: None,
        surname: None,
        mailbox_type: MailboxType::DistributionList,
        billable: false,
        aliases: Vec::new(),
        group: ctx.default_group.clone(),
        source_id: Some(ctx.source_id),
        source_object_id: Some(extra_object_id(address)),
        status: UserStatus::Active,
        manager: None,
        services: None,
        placed_by: None,
    })
}

/// Console groups from tenant groups (include_groups: every group of the counted types;
/// group_map: the mapped ones, onto existing console groups), with their synced members.
fn plan_groups(
    snapshot: &SourceSnapshot,
    desired: &[DirectoryUser],
    ctx: &MappingContext,
) -> Option<Vec<PlannedGroup>> {
    let options = &ctx.options;
    if !options.include_groups && options.group_map.is_empty() {
        return None;
    }
    let address_of: HashMap<&str, &EmailAddress> = desired
        .iter()
        .filter_map(|e| Some((e.source_object_id.as_deref()?, &e.address)))
        .collect();
    let mut members_of: HashMap<&str, Vec<EmailAddress>> = HashMap::new();
    for u in &snapshot.users {
        if let Some(address) = address_of.get(u.id.as_str()) {
            for g in &u.member_of {
                members_of
                    .entry(g.as_str())
                    .or_default()
                    .push((*address).clone());
            }
        }
    }
    let mut groups = Vec::new();
    for g in &snapshot.groups {
        if !options.group_types.contains(&group_kind(g)) {
            continue;
        }
        let tenant_name = g.display_name.clone().unwrap_or_else(|| g.id.clone());
        let mapped = options.group_map.iter().find(|(tenant, _)| {
            tenant.eq_ignore_ascii_case(&g.id)
                || tenant.to_lowercase() == tenant_name.to_lowercase()
        });
        let name = match (mapped, options.include_groups) {
            (Some((_, console)), _) => console.clone(),
            (None, true) => tenant_name.clone(),
            (None, false) => continue,
        };
        let mut members = members_of.remove(g.id.as_str()).unwrap_or_default();
        members.sort();
        members.dedup();
        groups.push(PlannedGroup {
            name,
            tenant_group_id: g.id.clone(),
            tenant_group_name: tenant_name,
            mapped: mapped.is_some(),
            members,
        });
    }
    groups.sort_by(|a, b| (&a.name, &a.tenant_group_id).cmp(&(&b.name, &b.tenant_group_id)));
    Some(groups)
}

/// Managers by address (import_managers; a manager who is not synced has no address here)
/// and the services new mailboxes get (rule 7's new-mailbox defaults).
fn settle_managers_and_services(
    desired: &mut [DirectoryUser],
    snapshot: &SourceSnapshot,
    ctx: &MappingContext,
) {
    // Borrowed, not copied: at 1,000,000 users a copy of every address was 60 MB more at
    // the planning's peak.
    let address_of: HashMap<&str, &EmailAddress> = if ctx.options.import_managers {
        desired
            .iter()
            .filter_map(|e| Some((e.source_object_id.as_deref()?, &e.address)))
            .collect()
    } else {
        HashMap::new()
    };
    let manager_of: HashMap<&str, &str> = if address_of.is_empty() {
        HashMap::new()
    } else {
        snapshot
            .users
            .iter()
            .filter_map(|u| Some((u.id.as_str(), u.manager_id.as_deref()?)))
            .collect()
    };
    let mut resolved: Vec<Option<EmailAddress>> = Vec::with_capacity(desired.len());
    for e in desired.iter() {
        resolved.push(
            e.source_object_id
                .as_deref()
                .and_then(|id| manager_of.get(id))
                .and_then(|m| address_of.get(m).map(|&a| a.clone())),
        );
    }
    drop(address_of);
    let services = std::sync::Arc::new(ctx.options.defaults.clone());
    for (e, manager) in desired.iter_mut().zip(resolved) {
        e.manager = manager;
        e.services = Some(services.clone());
    }
}

/// An alias that is another entry's address, or already another entry's alias, would give
/// one address two mailboxes: it is dropped from the entry that lists it (which is still
/// synced, so the plan warns rather than skips).
fn drop_conflicting_aliases(
    desired: &mut [DirectoryUser],
    directory: &[DirectoryUser],
    ctx: &MappingContext,
    plan: &mut Plan,
) {
    // Who holds each address, and whether as its address or as an alias, over borrowed
    // text: entries of others first (their addresses over their aliases), then every desired
    // entry's own address, then aliases in order (the first to list one keeps it).
    let mut drops: Vec<(usize, EmailAddress, String, Held)> = Vec::new();
    {
        let others: Vec<&DirectoryUser> = directory
            .iter()
            .filter(|e| e.status == UserStatus::Active && !e.is_managed_by(ctx.source_id))
            .collect();
        // The holder of an address as a number (the entries of others, then the desired
        // ones) with a bit for "as an alias", and the table sized for every address there
        // is: at 1,000,000 users a table of borrowed pairs sized by guess was 170 MB at the
        // planning's peak; this one is 50 MB.
        const AS_ALIAS: u32 = 1 << 31;
        let holder_address = |holder: u32| -> &str {
            let i = (holder & !AS_ALIAS) as usize;
            match others.get(i) {
                Some(e) => e.address.as_str(),
                None => desired[i - others.len()].address.as_str(),
            }
        };
        let count = others.iter().map(|e| 1 + e.aliases.len()).sum::<usize>()
            + desired.iter().map(|e| 1 + e.aliases.len()).sum::<usize>();
        let mut owner: HashMap<&str, u32> = HashMap::with_capacity(count);
        let number = |i: usize| u32::try_from(i).expect("fewer than 2^31 entries");
        for (i, e) in others.iter().enumerate() {
            for a in &e.aliases {
                owner.insert(a.as_str(), number(i) | AS_ALIAS);
            }
        }
        for (i, e) in others.iter().enumerate() {
            owner.insert(e.address.as_str(), number(i));
        }
        for (i, e) in desired.iter().enumerate() {
            owner.insert(e.address.as_str(), number(others.len() + i));
        }
        for (i, e) in desired.iter().enumerate() {
            for a in &e.aliases {
                match owner.get(a.as_str()) {
                    Some(&holder) if holder_address(holder) != e.address.as_str() => {
                        let held = if holder & AS_ALIAS == 0 {
                            Held::AsAddress
                        } else {
                            Held::AsAlias
                        };
                        drops.push((i, a.clone(), holder_address(holder).to_string(), held));
                    }
                    Some(_) => {}
                    None => {
                        owner.insert(a.as_str(), number(others.len() + i) | AS_ALIAS);
                    }
                }
            }
        }
    }
    for (i, alias, holder, held) in drops {
        let e = &mut desired[i];
        e.aliases.retain(|a| *a != alias);
        let how = match held {
            Held::AsAddress => format!("it is the address of {holder}"),
            Held::AsAlias => format!("it is already an alias of {holder}"),
        };
        plan.warnings.push(Skip {
            source_object_id: e.source_object_id.clone().unwrap_or_default(),
            name: e.display_name.clone(),
            code: "alias_conflict".into(),
            reason: format!("the alias {alias} of {} was not imported: {how}", e.address),
        });
    }
}

/// How another entry holds an address an alias wants.
#[derive(Clone, Copy)]
enum Held {
    AsAddress,
    AsAlias,
}

/// Whether a sync may take over an existing entry that holds an address it wants (rule 8):
/// unmanaged entries are adopted; removed entries are restored; an entry of this same source
/// whose object is gone (deleted and re-created in the tenant) is re-linked.
/// The rows of this source whose object moves to another address in this plan, and can:
/// the new address is free, held by a removed entry this plan may take over, or held by
/// another row that moves too. Swaps and chains of renames resolve together; a move
/// whose address stays held (by hand, by another source, or by a row that cannot move)
/// blocks, and so does every move that waited for it.
fn vacating_moves(
    desired: &[DirectoryUser],
    by_object: &HashMap<&str, &DirectoryUser>,
    by_address: &HashMap<&EmailAddress, &DirectoryUser>,
    ctx: &MappingContext,
    desired_objects: &HashSet<&str>,
) -> HashSet<i64> {
    // Row id -> the address its object wants now.
    let mut moving: HashMap<i64, &EmailAddress> = desired
        .iter()
        .filter_map(|e| {
            let current = by_object.get(e.source_object_id.as_deref()?)?;
            (current.status == UserStatus::Active && current.address != e.address)
                .then(|| Some((current.id?, &e.address)))
                .flatten()
        })
        .collect();
    loop {
        let blocked: Vec<i64> = moving
            .iter()
            .filter(|(id, wanted)| {
                by_address.get(*wanted).is_some_and(|holder| {
                    let holder_id = holder.id.unwrap_or_default();
                    let leaves = holder.status == UserStatus::Active
                        && holder.is_managed_by(ctx.source_id)
                        && (moving.contains_key(&holder_id)
                            || (ctx.options.remove_deleted
                                && holder
                                    .source_object_id
                                    .as_deref()
                                    .is_none_or(|o| !desired_objects.contains(o))));
                    holder_id != **id
                        && !leaves
                        && !(holder.status == UserStatus::Removed
                            && can_take_over(holder, ctx, desired_objects))
                })
            })
            .map(|(id, _)| *id)
            .collect();
        if blocked.is_empty() {
            break;
        }
        for id in blocked {
            moving.remove(&id);
        }
    }
    moving.into_keys().collect()
}

fn can_take_over(
    holder: &DirectoryUser,
    ctx: &MappingContext,
    desired_objects: &HashSet<&str>,
) -> bool {
    let object_gone = || {
        holder
            .source_object_id
            .as_deref()
            .is_none_or(|o| !desired_objects.contains(o))
    };
    match holder.source_id {
        None => true,
        Some(id) if id == ctx.source_id => object_gone(),
        Some(_) => holder.status == UserStatus::Removed,
    }
}

/// The warning for an entry that stays synced under its current address because `holder`
/// has the new one.
fn address_kept(
    object_id: &str,
    entry: &DirectoryUser,
    current: &DirectoryUser,
    holder: &DirectoryUser,
    ctx: &MappingContext,
) -> Skip {
    let who = match (holder.source_id, holder.source_object_id.as_deref()) {
        (None, _) => format!("'{}', an entry added by hand", holder.display_name),
        (Some(id), _) if id != ctx.source_id => {
            format!(
                "'{}', an entry of another source (#{id})",
                holder.display_name
            )
        }
        (Some(_), Some(other)) => format!("source object {other}"),
        (Some(_), None) => format!("'{}'", holder.display_name),
    };
    Skip {
        source_object_id: object_id.to_string(),
        name: entry.display_name.clone(),
        code: "address_kept".into(),
        reason: format!(
            "the new address {} is held by {who}, so the entry keeps its current address {} \
             and the rest was applied",
            entry.address, current.address
        ),
    }
}

fn conflict(object_id: &str, entry: &DirectoryUser, holder: &DirectoryUser) -> Skip {
    let reason = match (holder.source_id, &holder.source_object_id) {
        (Some(source_id), _) if !holder.is_managed_by(entry.source_id.unwrap_or_default()) => {
            SkipReason::ManagedByOtherSource {
                address: entry.address.clone(),
                source_id,
            }
        }
        (Some(_), Some(other)) => SkipReason::DuplicateAddress {
            address: entry.address.clone(),
            other_object_id: other.clone(),
        },
        _ => SkipReason::HeldByConsoleUser {
            address: entry.address.clone(),
        },
    };
    Skip::new(object_id, Some(&entry.display_name), &reason)
}

/// Field-by-field differences between the current entry and the desired one.
fn diff(current: &DirectoryUser, desired: &DirectoryUser) -> BTreeMap<String, Change> {
    let mut changes = BTreeMap::new();
    let mut field = |name: &str, before: FieldValue, after: FieldValue| {
        if before != after {
            changes.insert(name.to_string(), Change(before, after));
        }
    };
    let text = |s: &str| FieldValue::Text(s.to_string());
    let list = |l: &[EmailAddress]| FieldValue::List(l.iter().map(|a| a.to_string()).collect());
    field(
        "address",
        text(current.address.as_str()),
        text(desired.address.as_str()),
    );
    field(
        "display_name",
        text(&current.display_name),
        text(&desired.display_name),
    );
    field(
        "given_name",
        current.given_name.clone().into(),
        desired.given_name.clone().into(),
    );
    field(
        "surname",
        current.surname.clone().into(),
        desired.surname.clone().into(),
    );
    field(
        "type",
        text(current.mailbox_type.as_str()),
        text(desired.mailbox_type.as_str()),
    );
    field(
        "billable",
        FieldValue::Bool(current.billable),
        FieldValue::Bool(desired.billable),
    );
    field("aliases", list(&current.aliases), list(&desired.aliases));
    field("group", text(&current.group), text(&desired.group));
    field(
        "manager",
        current.manager.as_ref().map(|m| m.to_string()).into(),
        desired.manager.as_ref().map(|m| m.to_string()).into(),
    );
    field(
        "status",
        text(current.status.as_str()),
        text(desired.status.as_str()),
    );
    field(
        "source_id",
        current.source_id.map_or(FieldValue::Null, FieldValue::Int),
        desired.source_id.map_or(FieldValue::Null, FieldValue::Int),
    );
    field(
        "source_object_id",
        current.source_object_id.clone().into(),
        desired.source_object_id.clone().into(),
    );
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MailboxType;
    use crate::snapshot::SourceUser;

    use crate::testing::{SOURCE, ctx};

    fn user(id: &str, address: &str) -> SourceUser {
        crate::testing::user::<&str>(id, address, &[])
    }

    fn snapshot(users: Vec<SourceUser>) -> SourceSnapshot {
        SourceSnapshot {
            users,
            ..SourceSnapshot::default()
        }
    }

    /// The directory as a store would return it after applying `plan` to an empty one.
    fn stored(entries: Vec<DirectoryUser>) -> Vec<DirectoryUser> {
        entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| DirectoryUser {
                id: Some(i as i64 + 1),
                ..e
            })
            .collect()
    }

    /// The directory after `plan`'s updates (what the store writes).
    fn stored_after(dir: &[DirectoryUser], plan: &Plan) -> Vec<DirectoryUser> {
        dir.iter()
            .map(|e| {
                plan.update
                    .iter()
                    .find(|u| Some(u.id) == e.id)
                    .and_then(|u| u.after.clone())
                    .unwrap_or_else(|| e.clone())
            })
            .collect()
    }

    fn manual(address: &str) -> DirectoryUser {
        DirectoryUser {
            id: Some(100),
            ..crate::mapping::manual_user(
                EmailAddress::parse(address).unwrap(),
                Some("By hand".into()),
                MailboxType::User,
            )
        }
    }

    #[test]
    fn a_first_sync_adds_every_mapped_user_and_skips_the_rest_with_reasons() {
        let snap = snapshot(vec![
            user("b", "bob@contoso.com"),
            user("a", "anne@contoso.com"),
            user("x", "xavier@elsewhere.org"),
        ]);
        let plan = plan_sync(&snap, &[], &ctx());
        let added: Vec<_> = plan.add.iter().map(|u| u.address.as_str()).collect();
        assert_eq!(added, ["anne@contoso.com", "bob@contoso.com"]);
        assert_eq!(plan.skip.len(), 1);
        assert_eq!(plan.skip[0].code, "not_in_synced_domain");
        assert_eq!(plan.skip[0].source_object_id, "x");
    }

    #[test]
    fn an_unchanged_source_plans_nothing() {
        let snap = snapshot(vec![user("a", "anne@contoso.com")]);
        let dir = stored(plan_sync(&snap, &[], &ctx()).add);
        assert!(plan_sync(&snap, &dir, &ctx()).is_empty());
    }

    #[test]
    fn changed_fields_are_listed_with_before_and_after() {
        let snap = snapshot(vec![user("a", "anne@contoso.com")]);
        let dir = stored(plan_sync(&snap, &[], &ctx()).add);
        let mut changed = user("a", "anne.smith@contoso.com");
        changed.proxy_addresses.push("smtp:anne@contoso.com".into());
        changed.account_enabled = Some(false);
        let plan = plan_sync(&snapshot(vec![changed]), &dir, &ctx());
        assert_eq!(plan.update.len(), 1);
        let json = serde_json::to_value(&plan.update[0]).unwrap();
        assert_eq!(json["address"], "anne@contoso.com");
        assert_eq!(
            json["changes"]["address"],
            serde_json::json!(["anne@contoso.com", "anne.smith@contoso.com"])
        );
        assert_eq!(
            json["changes"]["billable"],
            serde_json::json!([true, false])
        );
        assert_eq!(
            json["changes"]["aliases"],
            serde_json::json!([[], ["anne@contoso.com"]])
        );
        assert!(plan.add.is_empty() && plan.remove.is_empty());
    }

    #[test]
    fn rule8_an_unmanaged_user_with_the_same_address_is_linked_not_added() {
        let snap = snapshot(vec![user("a", "anne@contoso.com")]);
        let plan = plan_sync(&snap, &[manual("anne@contoso.com")], &ctx());
        assert!(plan.add.is_empty());
        assert_eq!(plan.update.len(), 1);
        assert!(plan.update[0].linked);
        assert_eq!(
            plan.update[0].changes["source_id"],
            Change(FieldValue::Null, FieldValue::Int(SOURCE))
        );
    }

    #[test]
    fn rule8_an_address_managed_by_another_source_is_a_conflict_left_alone() {
        let mut other = manual("anne@contoso.com");
        other.source_id = Some(2);
        other.source_object_id = Some("zz".into());
        let plan = plan_sync(
            &snapshot(vec![user("a", "anne@contoso.com")]),
            &[other],
            &ctx(),
        );
        assert!(plan.is_empty());
        assert_eq!(plan.skip[0].code, "managed_by_other_source");
    }

    #[test]
    fn users_added_by_hand_are_never_removed() {
        let plan = plan_sync(&snapshot(vec![]), &[manual("hand@contoso.com")], &ctx());
        assert!(plan.is_empty());
    }

    #[test]
    fn rule9_a_user_gone_from_the_source_is_removed_and_restored_when_back() {
        let snap = snapshot(vec![
            user("a", "anne@contoso.com"),
            user("b", "bob@contoso.com"),
        ]);
        let mut dir = stored(plan_sync(&snap, &[], &ctx()).add);
        let plan = plan_sync(&snapshot(vec![user("a", "anne@contoso.com")]), &dir, &ctx());
        assert_eq!(plan.remove.len(), 1);
        assert_eq!(plan.remove[0].address.as_str(), "bob@contoso.com");

        dir[1].status = UserStatus::Removed;
        assert!(plan_sync(&snapshot(vec![user("a", "anne@contoso.com")]), &dir, &ctx()).is_empty());
        let back = plan_sync(&snap, &dir, &ctx());
        assert_eq!(back.update.len(), 1);
        assert!(back.update[0].restored);
        assert!(back.add.is_empty());
    }

    #[test]
    fn a_user_recreated_in_the_tenant_with_a_new_id_takes_over_its_entry() {
        let dir =
            stored(plan_sync(&snapshot(vec![user("a", "anne@contoso.com")]), &[], &ctx()).add);
        let plan = plan_sync(
            &snapshot(vec![user("a2", "anne@contoso.com")]),
            &dir,
            &ctx(),
        );
        assert!(plan.add.is_empty() && plan.remove.is_empty());
        assert_eq!(
            plan.update[0].changes["source_object_id"],
            Change(FieldValue::Text("a".into()), FieldValue::Text("a2".into()))
        );
    }

    #[test]
    fn two_objects_with_one_address_keep_the_first_and_skip_the_other() {
        let plan = plan_sync(
            &snapshot(vec![
                user("b", "anne@contoso.com"),
                user("a", "anne@contoso.com"),
            ]),
            &[],
            &ctx(),
        );
        assert_eq!(plan.add.len(), 1);
        assert_eq!(plan.add[0].source_object_id.as_deref(), Some("a"));
        assert_eq!(plan.skip[0].code, "duplicate_address");
    }

    #[test]
    fn rule9_the_safeguard_stops_mass_removals_but_not_small_ones() {
        let guard = Safeguard::default();
        let plan_removing = |n: usize| Plan {
            remove: (0..n)
                .map(|i| manual(&format!("u{i}@contoso.com")))
                .collect(),
            ..Plan::default()
        };
        // 19 of 20 is most of them, but under the minimum of 20.
        assert_eq!(guard.check(&plan_removing(19), 20), None);
        // 20 of 1,000 is 2 %: under the share.
        assert_eq!(guard.check(&plan_removing(20), 1000), None);
        // 20 of 100 is 20 %: stopped, and the message says how to go on.
        let why = guard.check(&plan_removing(20), 100).unwrap();
        assert!(
            why.contains("20 of the source's 100") && why.contains("more than 10%"),
            "{why}"
        );
        // An empty read would remove everyone: stopped.
        assert!(guard.check(&plan_removing(500), 500).is_some());
    }

    fn with(options: &[&str]) -> MappingContext {
        let mut c = ctx();
        let texts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        c.options = c.options.apply(&texts).unwrap();
        c
    }

    #[test]
    fn a_rename_onto_a_removed_entrys_address_purges_it_instead_of_sticking() {
        let snap = snapshot(vec![
            user("x", "sales@contoso.com"),
            user("y", "yan@contoso.com"),
        ]);
        let mut dir = stored(plan_sync(&snap, &[], &ctx()).add);
        dir.iter_mut()
            .find(|u| u.address.as_str() == "sales@contoso.com")
            .unwrap()
            .status = UserStatus::Removed;
        let plan = plan_sync(
            &snapshot(vec![user("y", "sales@contoso.com")]),
            &dir,
            &ctx(),
        );
        assert_eq!(plan.purge.len(), 1);
        assert_eq!(plan.update.len(), 1);
        assert_eq!(
            plan.update[0].changes["address"],
            Change(
                FieldValue::Text("yan@contoso.com".into()),
                FieldValue::Text("sales@contoso.com".into())
            )
        );
        assert!(plan.skip.is_empty(), "{:?}", plan.skip);
    }

    #[test]
    fn a_rename_onto_a_hand_added_address_keeps_the_old_address_but_applies_the_rest() {
        let snap = snapshot(vec![user("y", "yan@contoso.com")]);
        let mut dir = stored(plan_sync(&snap, &[], &ctx()).add);
        dir.push(manual("sales@contoso.com"));
        let mut renamed = user("y", "sales@contoso.com");
        renamed.account_enabled = Some(false);
        let plan = plan_sync(&snapshot(vec![renamed]), &dir, &ctx());
        assert!(plan.skip.is_empty(), "the entry is synced: {:?}", plan.skip);
        assert_eq!(plan.warnings.len(), 1);
        assert_eq!(plan.warnings[0].code, "address_kept");
        assert_eq!(
            plan.warnings[0].reason,
            "the new address sales@contoso.com is held by 'By hand', an entry added by hand, so \
             the entry keeps its current address yan@contoso.com and the rest was applied"
        );
        let update = &plan.update[0];
        assert!(!update.changes.contains_key("address"));
        assert_eq!(
            update.changes["billable"],
            Change(FieldValue::Bool(true), FieldValue::Bool(false))
        );
    }

    #[test]
    fn one_row_is_never_updated_twice_in_one_plan() {
        let dir =
            stored(plan_sync(&snapshot(vec![user("o1", "anne@contoso.com")]), &[], &ctx()).add);
        let mut dir = dir;
        dir[0].status = UserStatus::Removed;
        let plan = plan_sync(
            &snapshot(vec![
                user("o1", "anne2@contoso.com"),
                user("o2", "anne@contoso.com"),
            ]),
            &dir,
            &ctx(),
        );
        let ids: HashSet<i64> = plan.update.iter().map(|u| u.id).collect();
        assert_eq!(ids.len(), plan.update.len(), "{:?}", plan.update);
        assert_eq!(plan.update.len() + plan.add.len() + plan.skip.len(), 2);
    }

    #[test]
    fn an_alias_that_is_another_entrys_address_is_dropped_and_reported() {
        let mut dora = user("d", "dora@contoso.com");
        dora.proxy_addresses.push("smtp:eve@contoso.com".into());
        dora.proxy_addresses.push("smtp:hand@contoso.com".into());
        dora.proxy_addresses.push("smtp:dora.x@contoso.com".into());
        let plan = plan_sync(
            &snapshot(vec![dora, user("e", "eve@contoso.com")]),
            &[manual("hand@contoso.com")],
            &ctx(),
        );
        let d = plan
            .add
            .iter()
            .find(|u| u.address.as_str() == "dora@contoso.com")
            .unwrap();
        assert_eq!(
            d.aliases,
            vec![EmailAddress::parse("dora.x@contoso.com").unwrap()]
        );
        assert!(plan.skip.is_empty(), "dora is synced: {:?}", plan.skip);
        assert_eq!(
            plan.warnings
                .iter()
                .filter(|s| s.code == "alias_conflict" && s.source_object_id == "d")
                .count(),
            2
        );
    }

    #[test]
    fn an_alias_that_is_another_entrys_address_is_reported_as_its_address() {
        let mut dora = user("d", "dora@contoso.com");
        dora.proxy_addresses.push("smtp:eve@contoso.com".into());
        let plan = plan_sync(
            &snapshot(vec![dora, user("e", "eve@contoso.com")]),
            &[],
            &ctx(),
        );
        assert_eq!(
            plan.warnings[0].reason,
            "the alias eve@contoso.com of dora@contoso.com was not imported: it is the address \
             of eve@contoso.com"
        );
    }

    #[test]
    fn an_alias_that_another_entry_already_lists_is_reported_as_its_alias() {
        let mut dora = user("d", "dora@contoso.com");
        dora.proxy_addresses.push("smtp:sales@contoso.com".into());
        let mut eve = user("e", "eve@contoso.com");
        eve.proxy_addresses.push("smtp:sales@contoso.com".into());
        let mut hand = manual("hand@contoso.com");
        hand.aliases = vec![EmailAddress::parse("info@contoso.com").unwrap()];
        dora.proxy_addresses.push("smtp:info@contoso.com".into());
        let plan = plan_sync(&snapshot(vec![dora, eve]), &[hand], &ctx());
        assert!(plan.skip.is_empty(), "{:?}", plan.skip);
        let reasons: Vec<&str> = plan.warnings.iter().map(|w| w.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "the alias info@contoso.com of dora@contoso.com was not imported: it is already \
                 an alias of hand@contoso.com",
                "the alias sales@contoso.com of eve@contoso.com was not imported: it is already \
                 an alias of dora@contoso.com",
            ]
        );
        assert_eq!(by_address(&plan, "dora@contoso.com").aliases.len(), 1);
    }

    #[test]
    fn an_object_that_is_skipped_gets_no_warning_about_its_aliases() {
        let mut dora = user("d", "dora@contoso.com");
        dora.proxy_addresses.push("smtp:eve@contoso.com".into());
        let mut other = manual("dora@contoso.com");
        other.source_id = Some(2);
        other.source_object_id = Some("zz".into());
        let plan = plan_sync(
            &snapshot(vec![dora, user("e", "eve@contoso.com")]),
            &[other],
            &ctx(),
        );
        assert_eq!(plan.skip.len(), 1);
        assert_eq!(plan.skip[0].code, "managed_by_other_source");
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn warnings_are_left_out_of_the_json_when_there_are_none() {
        let plan = plan_sync(&snapshot(vec![user("a", "anne@contoso.com")]), &[], &ctx());
        let json = serde_json::to_value(&plan).unwrap();
        assert!(json.get("warnings").is_none(), "{json}");
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn a_duplicate_address_stays_with_the_object_that_owns_it_now() {
        let dir = stored(plan_sync(&snapshot(vec![user("b", "bob@contoso.com")]), &[], &ctx()).add);
        let plan = plan_sync(
            &snapshot(vec![
                user("b", "bob@contoso.com"),
                user("a", "bob@contoso.com"),
            ]),
            &dir,
            &ctx(),
        );
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.skip[0].source_object_id, "a");
    }

    #[test]
    fn rule7_with_remove_deleted_off_gone_users_are_reported_and_kept() {
        let snap = snapshot(vec![
            user("a", "anne@contoso.com"),
            user("b", "bob@contoso.com"),
        ]);
        let dir = stored(plan_sync(&snap, &[], &ctx()).add);
        let plan = plan_sync(
            &snapshot(vec![user("a", "anne@contoso.com")]),
            &dir,
            &with(&["remove_deleted=false"]),
        );
        assert!(plan.remove.is_empty());
        assert_eq!(plan.skip[0].code, "kept_not_removed");
        assert_eq!(plan.skip[0].source_object_id, "b");
    }

    #[test]
    fn rule7_extra_addresses_are_kept_as_distribution_lists() {
        let c = with(&["extra_addresses=all-staff@contoso.com,x@elsewhere.org"]);
        let plan = plan_sync(&snapshot(vec![]), &[], &c);
        assert_eq!(plan.add.len(), 1);
        assert_eq!(plan.add[0].mailbox_type, MailboxType::DistributionList);
        assert_eq!(plan.skip[0].code, "not_in_synced_domain");
        let dir = stored(plan.add);
        assert!(plan_sync(&snapshot(vec![]), &dir, &c).is_empty());
        let gone = plan_sync(&snapshot(vec![]), &dir, &ctx());
        assert_eq!(
            gone.remove.len(),
            1,
            "taken off the list, the entry is removed"
        );
    }

    #[test]
    fn rule7_only_members_of_selected_groups_are_imported_by_name_or_id() {
        let mut anne = user("a", "anne@contoso.com");
        anne.member_of = vec!["g-drivers".into()];
        let bob = user("b", "bob@contoso.com");
        let mut snap = snapshot(vec![anne, bob]);
        snap.groups.push(crate::snapshot::SourceGroup {
            id: "g-drivers".into(),
            display_name: Some("All Drivers".into()),
            security_enabled: true,
            ..Default::default()
        });
        for selection in ["selected_groups=all drivers", "selected_groups=g-drivers"] {
            let plan = plan_sync(&snap, &[], &with(&[selection]));
            assert_eq!(plan.add.len(), 1, "{selection}");
            assert_eq!(plan.add[0].address.as_str(), "anne@contoso.com");
            assert_eq!(plan.skip[0].code, "not_in_selected_groups");
        }
        // A group of a type that does not count selects nobody.
        let plan = plan_sync(
            &snap,
            &[],
            &with(&["selected_groups=All Drivers", "group_types=m365"]),
        );
        assert!(plan.add.is_empty());
    }

    #[test]
    fn the_safeguard_stops_a_run_that_would_remove_everyone_even_a_few() {
        let snap = snapshot(vec![
            user("a", "anne@contoso.com"),
            user("b", "bob@contoso.com"),
        ]);
        let dir = stored(plan_sync(&snap, &[], &ctx()).add);
        let plan = plan_sync(&snapshot(vec![]), &dir, &ctx());
        assert!(
            Safeguard::default()
                .check(&plan, 2)
                .unwrap()
                .contains("every one")
        );
    }

    fn rules(texts: &[(&str, &str)]) -> Vec<crate::filter::FilterRule> {
        texts
            .iter()
            .enumerate()
            .map(|(i, (group, text))| crate::filter::FilterRule {
                id: i as i64 + 1,
                group: group.to_string(),
                expression: crate::filter::Expression::parse(text).unwrap(),
            })
            .collect()
    }

    #[test]
    fn rule6_the_first_matching_filter_places_the_user_and_says_so() {
        let mut driver = user("d", "dan@contoso.com");
        driver.job_title = Some("Driver".into());
        let office = user("o", "olga@contoso.com");
        let mut c = ctx();
        c.rules = rules(&[
            ("Drivers", "jobTitle equals driver"),
            ("Everyone", "accountEnabled is_true"),
        ]);
        let plan = plan_sync(&snapshot(vec![driver.clone(), office.clone()]), &[], &c);
        let by = |a: &str| {
            plan.add
                .iter()
                .find(|u| u.address.as_str() == a)
                .unwrap()
                .clone()
        };
        assert_eq!(by("dan@contoso.com").group, "Drivers");
        assert_eq!(by("olga@contoso.com").group, "Everyone");
        assert!(
            by("dan@contoso.com")
                .placed_by
                .unwrap()
                .starts_with("rule 1: jobTitle equals driver")
        );
        let json = serde_json::to_value(&plan.add[0]).unwrap();
        assert!(json["placed_by"].is_string());

        c.rules = rules(&[("Drivers", "jobTitle equals driver")]);
        let plan = plan_sync(&snapshot(vec![driver.clone(), office.clone()]), &[], &c);
        assert_eq!(by_address(&plan, "olga@contoso.com").group, "Main");
        c.options.only_matching = true;
        let plan = plan_sync(&snapshot(vec![driver, office]), &[], &c);
        assert_eq!(plan.add.len(), 1);
        assert_eq!(plan.skip[0].code, "no_matching_filter");
    }

    fn by_address(plan: &Plan, a: &str) -> DirectoryUser {
        plan.add
            .iter()
            .find(|u| u.address.as_str() == a)
            .unwrap()
            .clone()
    }

    #[test]
    fn rule6_a_user_moving_between_filters_changes_group_and_nothing_else() {
        let mut c = ctx();
        c.rules = rules(&[
            ("Drivers", "jobTitle equals Driver"),
            ("Office", "jobTitle equals Clerk"),
        ]);
        let mut dan = user("d", "dan@contoso.com");
        dan.job_title = Some("Driver".into());
        let dir = stored(plan_sync(&snapshot(vec![dan.clone()]), &[], &c).add);
        assert_eq!(dir[0].group, "Drivers");
        dan.job_title = Some("Clerk".into());
        let plan = plan_sync(&snapshot(vec![dan]), &dir, &c);
        assert_eq!(plan.update.len(), 1);
        let changes: Vec<&String> = plan.update[0].changes.keys().collect();
        assert_eq!(changes, ["group"]);
        assert_eq!(
            plan.update[0].changes["group"],
            Change(
                FieldValue::Text("Drivers".into()),
                FieldValue::Text("Office".into())
            )
        );
    }

    #[test]
    fn rule7_managers_are_imported_by_address_and_defaults_go_to_new_mailboxes_only() {
        let boss = user("b", "boss@contoso.com");
        let mut anne = user("a", "anne@contoso.com");
        anne.manager_id = Some("b".into());
        let mut outsider = user("x", "x@contoso.com");
        outsider.manager_id = Some("not-synced".into());
        let snap = snapshot(vec![boss, anne, outsider]);
        let plan = plan_sync(&snap, &[], &ctx());
        assert!(
            plan.add.iter().all(|u| u.manager.is_none()),
            "off by default"
        );

        let c = with(&[
            "import_managers=true",
            "defaults.archiving=true",
            "defaults.timezone=Europe/Paris",
        ]);
        let plan = plan_sync(&snap, &[], &c);
        assert_eq!(
            by_address(&plan, "anne@contoso.com")
                .manager
                .unwrap()
                .as_str(),
            "boss@contoso.com"
        );
        assert_eq!(by_address(&plan, "x@contoso.com").manager, None);
        let services = by_address(&plan, "anne@contoso.com").services.unwrap();
        assert!(services.archiving && services.incoming);
        assert_eq!(services.timezone.as_deref(), Some("Europe/Paris"));

        // Changing the defaults later changes nothing on existing mailboxes.
        let dir = stored(plan.add);
        let later = with(&["import_managers=true", "defaults.archiving=false"]);
        assert!(plan_sync(&snap, &dir, &later).is_empty());
    }

    #[test]
    fn two_users_swapping_addresses_swap_in_one_sync() {
        let dir = stored(
            plan_sync(
                &snapshot(vec![
                    user("a", "anne@contoso.com"),
                    user("b", "bob@contoso.com"),
                ]),
                &[],
                &ctx(),
            )
            .add,
        );
        let plan = plan_sync(
            &snapshot(vec![
                user("a", "bob@contoso.com"),
                user("b", "anne@contoso.com"),
            ]),
            &dir,
            &ctx(),
        );
        assert!(plan.remove.is_empty(), "nobody is removed by a swap");
        assert!(plan.skip.is_empty() && plan.warnings.is_empty(), "{plan:?}");
        let moves: Vec<(&str, &str)> = plan
            .update
            .iter()
            .map(|u| {
                (
                    u.address.as_str(),
                    u.after.as_ref().unwrap().address.as_str(),
                )
            })
            .collect();
        assert_eq!(
            moves,
            [
                ("anne@contoso.com", "bob@contoso.com"),
                ("bob@contoso.com", "anne@contoso.com")
            ]
        );
        // Applied, the next plan has nothing to do.
        let after = stored_after(&dir, &plan);
        let again = plan_sync(
            &snapshot(vec![
                user("a", "bob@contoso.com"),
                user("b", "anne@contoso.com"),
            ]),
            &after,
            &ctx(),
        );
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn a_chain_of_renames_applies_in_one_sync_and_a_new_user_takes_the_address_left() {
        let dir = stored(
            plan_sync(
                &snapshot(vec![
                    user("a", "a@contoso.com"),
                    user("b", "b@contoso.com"),
                    user("c", "c@contoso.com"),
                ]),
                &[],
                &ctx(),
            )
            .add,
        );
        // a takes b's address, b takes c's, c a new one; and a new object takes a's old one.
        let plan = plan_sync(
            &snapshot(vec![
                user("a", "b@contoso.com"),
                user("b", "c@contoso.com"),
                user("c", "d@contoso.com"),
                user("n", "a@contoso.com"),
            ]),
            &dir,
            &ctx(),
        );
        assert!(plan.skip.is_empty() && plan.warnings.is_empty(), "{plan:?}");
        assert_eq!(plan.update.len(), 3);
        assert_eq!(
            plan.add
                .iter()
                .map(|u| u.address.as_str())
                .collect::<Vec<_>>(),
            ["a@contoso.com"]
        );
    }

    #[test]
    fn an_address_left_by_a_deleted_user_is_taken_at_once_unless_the_removal_is_held() {
        let dir = stored(
            plan_sync(
                &snapshot(vec![
                    user("a", "anne@contoso.com"),
                    user("b", "bob@contoso.com"),
                ]),
                &[],
                &ctx(),
            )
            .add,
        );
        // b left the tenant; a took b's address there.
        let tenant = snapshot(vec![user("a", "bob@contoso.com")]);
        let plan = plan_sync(&tenant, &dir, &ctx());
        assert!(plan.warnings.is_empty(), "{plan:?}");
        assert_eq!(plan.remove.len(), 1);
        assert_eq!(
            plan.purge
                .iter()
                .map(|p| p.address.as_str())
                .collect::<Vec<_>>(),
            ["bob@contoso.com"]
        );
        assert_eq!(
            plan.update[0].after.as_ref().unwrap().address.as_str(),
            "bob@contoso.com"
        );
        // The deletion safeguard holds b's removal: a keeps its address, b stays.
        let mut held = plan.clone();
        held.hold_removals();
        held.keep_addresses_of_held();
        assert!(held.purge.is_empty() && held.update.is_empty(), "{held:?}");
        assert_eq!(
            held.warnings
                .iter()
                .map(|w| w.code.as_str())
                .collect::<Vec<_>>(),
            ["address_kept"]
        );
    }

    #[test]
    fn a_swap_with_an_address_held_by_hand_stays_a_warning() {
        let mut dir = stored(
            plan_sync(
                &snapshot(vec![
                    user("a", "anne@contoso.com"),
                    user("b", "bob@contoso.com"),
                ]),
                &[],
                &ctx(),
            )
            .add,
        );
        // Someone added carol by hand: b cannot take her address, so a cannot take b's.
        let mut carol = dir[0].clone();
        carol.id = Some(99);
        carol.address = EmailAddress::parse("carol@contoso.com").unwrap();
        carol.source_id = None;
        carol.source_object_id = None;
        dir.push(carol);
        let plan = plan_sync(
            &snapshot(vec![
                user("a", "bob@contoso.com"),
                user("b", "carol@contoso.com"),
            ]),
            &dir,
            &ctx(),
        );
        let kept: Vec<(&str, &str)> = plan
            .warnings
            .iter()
            .map(|w| (w.source_object_id.as_str(), w.code.as_str()))
            .collect();
        assert_eq!(kept, [("a", "address_kept"), ("b", "address_kept")]);
        assert!(
            plan.update
                .iter()
                .all(|u| u.after.as_ref().unwrap().address == u.address)
        );
    }
}
