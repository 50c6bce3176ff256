//! Planning a delta run by what changed: the objects a delta read found changed, the
//! objects the last plan left with an address conflict, and, closed over, every object
//! holding an address they claim. Planned against the entries of those objects and the
//! entries holding their addresses ([`crate::plan::plan_within`]), they get the adds,
//! updates, removals and purges a plan of the whole tenant against the whole directory
//! would give them; every other object's plan is empty, because nothing it depends on
//! changed. What each object depends on beyond itself decides when this holds:
//!
//! - its groups (filters on `memberOf`, selected groups): the source puts the members of a
//!   changed group, before and after the change, among the changed objects;
//! - the addresses of others (rule 8): the scope is closed over the entries holding the
//!   addresses its objects claim, and objects that lost an address to another entry are
//!   kept in the scope of every run until they settle ([`unsettled`]);
//! - the options, filters and domains: the plan records a fingerprint of them
//!   ([`basis`]), and any change makes the next plan whole;
//! - managers' addresses and console groups' member lists (options `import_managers`,
//!   `include_groups`, `group_map`) depend on objects that did not change: planned whole
//!   ([`whole_because`]).

use std::collections::{BTreeSet, HashSet};

use crate::address::EmailAddress;
use crate::mapping::MappingContext;
use crate::plan::{Plan, desired_entries};
use crate::snapshot::SourceSnapshot;

/// Why a delta run's plan must take in every object, or `None` when planning what changed
/// gives the same answer.
pub fn whole_because(ctx: &MappingContext) -> Option<&'static str> {
    let options = &ctx.options;
    if options.import_managers {
        return Some("managers are imported (a manager's new address changes its reports)");
    }
    if options.include_groups || !options.group_map.is_empty() {
        return Some("console groups are kept from tenant groups (their member lists)");
    }
    None
}

/// A fingerprint of everything a plan depends on besides the tenant and the directory:
/// the customer's domains, the source's options and filter rules. A plan made under
/// another fingerprint may differ for any object, so the next plan is whole.
pub fn basis(ctx: &MappingContext) -> String {
    // FNV-1a over the context's debug form: every field is ordered (sets and lists), so
    // the same context gives the same text.
    let text = format!("{ctx:?}");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("v1:{hash:016x}")
}

/// The addresses the objects of `scope` claim (primary addresses and aliases, before any
/// conflict is settled): the entries holding them belong in the directory they are
/// planned against.
pub fn claimed_addresses(
    snapshot: &SourceSnapshot,
    ctx: &MappingContext,
    scope: &HashSet<String>,
) -> BTreeSet<EmailAddress> {
    let mut skips = Vec::new();
    let mut addresses = BTreeSet::new();
    for entry in desired_entries(snapshot, ctx, Some(scope), &mut skips) {
        addresses.extend(entry.aliases);
        addresses.insert(entry.address);
    }
    addresses
}

/// The objects this plan left with an address conflict: skipped because another entry
/// holds their address, or synced without an address or alias another entry holds. A
/// change elsewhere can settle them (the holder moves or goes), so every delta run plans
/// them again until they settle.
pub fn unsettled(plan: &Plan) -> BTreeSet<String> {
    const CONFLICTS: &[&str] = &[
        "duplicate_address",
        "managed_by_other_source",
        "address_held",
    ];
    plan.skip
        .iter()
        .filter(|s| CONFLICTS.contains(&s.code.as_str()))
        .chain(plan.warnings.iter())
        .map(|s| s.source_object_id.clone())
        .collect()
}

/// The objects a delta run plans and the directory entries it plans them against, grown
/// until closed: each round says which entries to load ([`Scope::wanted`]), and the
/// entries loaded bring the objects they belong to ([`Scope::take`]).
#[derive(Debug, Default)]
pub struct Scope {
    objects: HashSet<String>,
    /// Objects whose entries were asked for.
    asked_objects: HashSet<String>,
    /// Objects whose entry is loaded.
    with_entry: HashSet<String>,
    /// Addresses whose holders were asked for.
    asked_addresses: HashSet<EmailAddress>,
    /// Entries loaded, by row id.
    entries: std::collections::BTreeMap<i64, crate::model::DirectoryUser>,
}

/// What a round of [`Scope::wanted`] asks the directory for: the entries of these objects
/// (managed by the source) and the entries holding these addresses (as address or alias).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub objects: Vec<String>,
    pub addresses: Vec<EmailAddress>,
}

impl Scope {
    /// A scope of the objects a delta read found changed and those left unsettled.
    pub fn new(changed: impl IntoIterator<Item = String>) -> Self {
        Scope {
            objects: changed.into_iter().collect(),
            ..Scope::default()
        }
    }

    /// The entries still to load, or `None` when the scope is closed.
    pub fn wanted(&mut self, snapshot: &SourceSnapshot, ctx: &MappingContext) -> Option<Wanted> {
        let new: HashSet<String> = self
            .objects
            .difference(&self.asked_objects)
            .cloned()
            .collect();
        if new.is_empty() {
            return None;
        }
        let addresses: Vec<EmailAddress> = claimed_addresses(snapshot, ctx, &new)
            .into_iter()
            .filter(|a| self.asked_addresses.insert(a.clone()))
            .collect();
        self.asked_objects.extend(new.iter().cloned());
        // An object that came with a loaded entry has that entry (one object, one entry):
        // only the others are looked up (a lookup by object walks the source's entries).
        let mut objects: Vec<String> = new
            .into_iter()
            .filter(|o| !self.with_entry.contains(o))
            .collect();
        objects.sort();
        Some(Wanted { objects, addresses })
    }

    /// Takes entries the directory gave for a round: entries of the source bring their
    /// objects into the scope (they may move, or be removed, with it).
    pub fn take(&mut self, entries: Vec<crate::model::DirectoryUser>, source_id: i64) {
        for entry in entries {
            if entry.is_managed_by(source_id)
                && let Some(object) = &entry.source_object_id
            {
                self.objects.insert(object.clone());
                self.with_entry.insert(object.clone());
            }
            if let Some(id) = entry.id {
                self.entries.insert(id, entry);
            }
        }
    }

    /// The objects to plan.
    pub fn objects(&self) -> &HashSet<String> {
        &self.objects
    }

    /// The entries to plan them against, ordered by address as the directory is.
    pub fn entries(&self) -> Vec<crate::model::DirectoryUser> {
        let mut entries: Vec<_> = self.entries.values().cloned().collect();
        entries.sort_by(|a, b| a.address.cmp(&b.address));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::DomainName;
    use crate::model::DirectoryUser;
    use crate::plan::{plan_sync, plan_within};
    use crate::snapshot::SourceUser;
    use crate::testing::{SOURCE, ctx};

    fn user(id: &str, address: &str, aliases: &[&str]) -> SourceUser {
        crate::testing::user(id, address, aliases)
    }

    fn tenant(users: Vec<SourceUser>) -> SourceSnapshot {
        SourceSnapshot {
            users,
            ..SourceSnapshot::default()
        }
    }

    /// The directory a first sync of `snapshot` leaves, and that sync's plan.
    fn synced(snapshot: &SourceSnapshot) -> (Vec<DirectoryUser>, Plan) {
        let plan = plan_sync(snapshot, &[], &ctx());
        let directory = plan
            .add
            .iter()
            .enumerate()
            .map(|(i, e)| DirectoryUser {
                id: Some(i as i64 + 1),
                ..e.clone()
            })
            .collect();
        (directory, plan)
    }

    /// The plan of what changed, its scope closed over `directory` as a store would load it.
    fn scoped(
        snapshot: &SourceSnapshot,
        directory: &[DirectoryUser],
        changed: &[&str],
        last: &Plan,
    ) -> (Plan, HashSet<String>) {
        let ctx = ctx();
        let mut scope = Scope::new(changed.iter().map(|c| c.to_string()).chain(unsettled(last)));
        while let Some(wanted) = scope.wanted(snapshot, &ctx) {
            let rows = directory
                .iter()
                .filter(|e| {
                    (e.is_managed_by(SOURCE)
                        && wanted
                            .objects
                            .contains(e.source_object_id.as_ref().unwrap()))
                        || wanted.addresses.contains(&e.address)
                        || e.aliases.iter().any(|a| wanted.addresses.contains(a))
                })
                .cloned()
                .collect();
            scope.take(rows, SOURCE);
        }
        let plan = plan_within(snapshot, &scope.entries(), &ctx, Some(scope.objects()));
        (plan, scope.objects().clone())
    }

    fn effects(plan: &Plan) -> String {
        serde_json::to_string(&(&plan.add, &plan.update, &plan.remove, &plan.purge)).unwrap()
    }

    fn before() -> Vec<SourceUser> {
        vec![
            user("a", "a@contoso.com", &[]),
            user("b", "b@contoso.com", &[]),
            user("c", "c@contoso.com", &[]),
            user("d", "d@contoso.com", &[]),
            user("e", "e@contoso.com", &[]),
            user("f", "f@contoso.com", &["f.alias@contoso.com"]),
            user("g", "dup@contoso.com", &[]),
            user("h", "dup@contoso.com", &[]),
            user("quiet", "quiet@contoso.com", &[]),
        ]
    }

    fn change(users: &mut [SourceUser], id: &str, address: &str, aliases: &[&str]) {
        let u = users.iter_mut().find(|u| u.id == id).unwrap();
        *u = user(id, address, aliases);
    }

    #[test]
    fn planning_what_changed_gives_what_planning_everything_gives() {
        let first = tenant(before());
        let (directory, last) = synced(&first);
        assert_eq!(
            unsettled(&last),
            BTreeSet::from(["h".to_string()]),
            "h lost dup@ to g"
        );
        let mut users = before();
        // Two users swap addresses, a chain of renames, a user leaves, the holder of a
        // contested address moves away, a new user takes another's alias as its address.
        change(&mut users, "a", "b@contoso.com", &[]);
        change(&mut users, "b", "a@contoso.com", &[]);
        change(&mut users, "c", "c2@contoso.com", &[]);
        change(&mut users, "d", "c@contoso.com", &[]);
        change(&mut users, "g", "g@contoso.com", &[]);
        users.retain(|u| u.id != "e");
        users.push(user("n", "f.alias@contoso.com", &[]));
        let now = tenant(users);
        let whole = plan_sync(&now, &directory, &ctx());
        let (part, objects) = scoped(
            &now,
            &directory,
            &["a", "b", "c", "d", "e", "g", "n"],
            &last,
        );
        assert_eq!(effects(&part), effects(&whole));
        assert!(!whole.is_empty());
        assert!(
            objects.contains("h") && objects.contains("f"),
            "{objects:?}"
        );
        assert!(
            !objects.contains("quiet"),
            "an object nothing touched is not planned"
        );
        for skip in part.skip.iter().chain(&part.warnings) {
            assert!(
                whole.skip.contains(skip) || whole.warnings.contains(skip),
                "{skip:?} is not in the whole plan"
            );
        }
        assert!(unsettled(&part).is_subset(&unsettled(&whole)));
    }

    #[test]
    fn a_changed_context_changes_the_basis() {
        let a = ctx();
        let mut b = ctx();
        assert_eq!(basis(&a), basis(&b));
        b.options.exclude_guests = !b.options.exclude_guests;
        assert_ne!(basis(&a), basis(&b));
        let mut c = ctx();
        c.domains.insert(DomainName::parse("fabrikam.com").unwrap());
        assert_ne!(basis(&a), basis(&c));
    }
}
