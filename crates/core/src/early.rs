//! Planning a whole read while its pages still arrive, so that the adds of a first sync
//! are written as the read goes and not all after it (issue 9: the time of a first sync
//! close to the slower of reading and writing, not their sum).
//!
//! An object can be planned on its own, before the rest of the tenant is read, when
//! nothing else can bear on its plan: no entry of the directory holds an address it claims
//! or belongs to it, and no other object of the tenant claims one of its addresses. Its
//! plan is then an add whatever the rest of the tenant holds (rules 1-7 are about the
//! object alone; rule 8 has nobody to weigh it against). The first condition is known when
//! its page arrives; the second only when the last page has: an object planned early that
//! a later object contests is planned again with the rest ([`EarlyPlan::finish`]).
//!
//! Options whose plan depends on other objects (group memberships, managers, console
//! groups from tenant groups) plan nothing early ([`EarlyPlan::new`]).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::address::EmailAddress;
use crate::mapping::MappingContext;
use crate::model::DirectoryUser;
use crate::plan::{Plan, desired_entries, plan_within};
use crate::snapshot::{SourceSnapshot, SourceUser};

/// What the objects read so far claim, and which of them were planned early.
#[derive(Debug)]
pub struct EarlyPlan {
    /// Every address of the directory (as address or alias, any entry, removed ones too).
    held: HashSet<EmailAddress>,
    /// The objects that have an entry of this source.
    with_entry: HashSet<String>,
    /// Each address claimed so far, by the first object claiming it.
    claimed: HashMap<EmailAddress, String>,
    /// Objects claiming an address another object claims.
    contested: HashSet<String>,
    /// Objects planned early (each an add).
    planned: HashSet<String>,
}

/// What [`EarlyPlan::finish`] decided: the early adds that stand, and those planned again.
#[derive(Debug, Default)]
pub struct Settled {
    /// Objects whose early add stands.
    pub kept: HashSet<String>,
    /// Objects planned early whose add is withdrawn (contested, or changed after).
    pub withdrawn: Vec<String>,
}

/// Whether a plan of the source reads group memberships (filters on `memberOf`, selected
/// groups, console groups from tenant groups): the read then fetches them.
pub fn needs_memberships(ctx: &MappingContext) -> bool {
    let options = &ctx.options;
    !options.selected_groups.is_empty()
        || options.include_groups
        || !options.group_map.is_empty()
        || ctx.rules.iter().any(|r| r.expression.mentions_member_of())
}

impl EarlyPlan {
    /// Early planning against `directory` (every entry of the customer), or `None` when the
    /// options make an object's plan depend on others.
    pub fn new(directory: &[DirectoryUser], ctx: &MappingContext) -> Option<EarlyPlan> {
        if crate::scope::whole_because(ctx).is_some() || needs_memberships(ctx) {
            return None;
        }
        let mut held = HashSet::with_capacity(directory.len());
        let mut with_entry = HashSet::new();
        for entry in directory {
            held.insert(entry.address.clone());
            held.extend(entry.aliases.iter().cloned());
            if entry.is_managed_by(ctx.source_id)
                && let Some(object) = &entry.source_object_id
            {
                with_entry.insert(object.clone());
            }
        }
        Some(EarlyPlan {
            held,
            with_entry,
            claimed: HashMap::new(),
            contested: HashSet::new(),
            planned: HashSet::new(),
        })
    }

    /// Takes users the read holds for good (none of them seen before) and returns the adds
    /// that can be written now.
    pub fn take(&mut self, users: Vec<SourceUser>, ctx: &MappingContext) -> Vec<DirectoryUser> {
        let page = SourceSnapshot {
            users,
            ..SourceSnapshot::default()
        };
        let mut skips = Vec::new();
        let desired = desired_entries(&page, ctx, None, &mut skips);
        let mut free: Vec<String> = Vec::new();
        for entry in &desired {
            let object = entry.source_object_id.clone().unwrap_or_default();
            let mut alone = !self.with_entry.contains(&object);
            for address in std::iter::once(&entry.address).chain(&entry.aliases) {
                alone &= !self.held.contains(address);
                match self.claimed.entry(address.clone()) {
                    Entry::Occupied(first) if *first.get() != object => {
                        self.contested.insert(first.get().clone());
                        self.contested.insert(object.clone());
                    }
                    Entry::Occupied(_) => alone = false,
                    Entry::Vacant(slot) => {
                        slot.insert(object.clone());
                    }
                }
            }
            if alone {
                free.push(object);
            }
        }
        let free: HashSet<String> = free
            .into_iter()
            .filter(|o| !self.contested.contains(o))
            .collect();
        if free.is_empty() {
            return Vec::new();
        }
        let plan = plan_within(&page, &[], ctx, Some(&free));
        let troubled: HashSet<&str> = plan
            .skip
            .iter()
            .chain(&plan.warnings)
            .map(|s| s.source_object_id.as_str())
            .collect();
        let adds: Vec<DirectoryUser> = plan
            .add
            .iter()
            .filter(|a| {
                a.source_object_id
                    .as_deref()
                    .is_some_and(|o| !troubled.contains(o))
            })
            .cloned()
            .collect();
        self.planned
            .extend(adds.iter().filter_map(|a| a.source_object_id.clone()));
        adds
    }

    /// After the last page: the early adds that stand, given the whole `snapshot` and the
    /// objects the read `changed` after handing them over (a mailbox type read later).
    /// The rest of the plan is [`plan_rest`] with the objects kept.
    pub fn finish(
        mut self,
        snapshot: &SourceSnapshot,
        ctx: &MappingContext,
        changed: &HashSet<String>,
    ) -> Settled {
        // Every object not planned early claims its addresses now: users the read did not
        // hand over, groups, extra addresses.
        let rest = everything_but(snapshot, ctx, &self.planned);
        let mut skips = Vec::new();
        for entry in desired_entries(snapshot, ctx, Some(&rest), &mut skips) {
            let object = entry.source_object_id.unwrap_or_default();
            for address in std::iter::once(entry.address).chain(entry.aliases) {
                if let Some(first) = self.claimed.get(&address)
                    && *first != object
                {
                    self.contested.insert(first.clone());
                }
            }
        }
        let present: HashSet<&str> = snapshot.users.iter().map(|u| u.id.as_str()).collect();
        let mut settled = Settled::default();
        for object in self.planned {
            if self.contested.contains(&object)
                || changed.contains(&object)
                || !present.contains(object.as_str())
            {
                settled.withdrawn.push(object);
            } else {
                settled.kept.insert(object);
            }
        }
        settled.withdrawn.sort();
        settled
    }
}

/// Every object of `snapshot` (users, groups, extra addresses) but `except`.
fn everything_but(
    snapshot: &SourceSnapshot,
    ctx: &MappingContext,
    except: &HashSet<String>,
) -> HashSet<String> {
    snapshot
        .users
        .iter()
        .map(|u| u.id.clone())
        .chain(snapshot.groups.iter().map(|g| g.id.clone()))
        .chain(
            ctx.options
                .extra_addresses
                .iter()
                .map(crate::plan::extra_object_id),
        )
        .filter(|o| !except.contains(o))
        .collect()
}

/// The plan of everything the early adds in `kept` leave: every other object against the
/// whole `directory`, with the kept `adds` joined in. It equals the plan of the whole
/// snapshot (the kept objects touch nothing else).
pub fn plan_rest(
    snapshot: &SourceSnapshot,
    directory: &[DirectoryUser],
    ctx: &MappingContext,
    kept: &HashSet<String>,
    adds: Vec<DirectoryUser>,
) -> Plan {
    let rest = everything_but(snapshot, ctx, kept);
    let mut plan = plan_within(snapshot, directory, ctx, Some(&rest));
    // The early adds stay in their own buffer (most of a first sync's adds: a copy of them
    // was a fifth of its peak memory).
    let mut adds = adds;
    adds.retain(|a| {
        a.source_object_id
            .as_ref()
            .is_some_and(|o| kept.contains(o))
    });
    adds.append(&mut plan.add);
    // Their addresses are unique: the unstable sort orders them the same, without the
    // stable sort's buffer of half of them (132 MB at 1,000,000 adds).
    adds.sort_unstable_by(|a, b| a.address.cmp(&b.address));
    plan.add = adds;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DirectoryUser, UserStatus};
    use crate::plan::plan_sync;
    use crate::snapshot::{SourceGroup, SourceUser};
    use crate::testing::{SOURCE, ctx, user};

    /// A small generator (xorshift): tenants whose objects often claim one address.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn address(&mut self) -> String {
            format!("a{}@contoso.com", self.below(60))
        }
    }

    /// The early plan of `snapshot` read in pages of `page`, as a run makes it.
    fn early(
        snapshot: &SourceSnapshot,
        directory: &[DirectoryUser],
        page: usize,
        changed: &HashSet<String>,
    ) -> Option<(Plan, usize)> {
        let ctx = ctx();
        let mut early = EarlyPlan::new(directory, &ctx)?;
        let mut adds = Vec::new();
        for chunk in snapshot.users.chunks(page) {
            adds.extend(early.take(chunk.to_vec(), &ctx));
        }
        let settled = early.finish(snapshot, &ctx, changed);
        let kept = settled.kept.len();
        Some((
            plan_rest(snapshot, directory, &ctx, &settled.kept, adds),
            kept,
        ))
    }

    #[test]
    fn planning_pages_as_they_arrive_gives_what_planning_the_whole_read_gives() {
        let mut kept_any = 0;
        for seed in 1..200u64 {
            let mut rng = Rng(seed * 0x9e37_79b9);
            let users: Vec<SourceUser> = (0..40)
                .map(|i| {
                    let aliases: Vec<String> = (0..rng.below(3)).map(|_| rng.address()).collect();
                    let mut u = user(&format!("u{i:02}"), &rng.address(), &aliases);
                    if rng.below(10) == 0 {
                        u.mail = Some("someone@fabrikam.com".into());
                        u.proxy_addresses.clear();
                    }
                    u
                })
                .collect();
            // A mail-enabled group claiming an address, and entries already there: one of
            // this source (its object in the tenant or gone), one typed by hand.
            let groups = vec![SourceGroup {
                id: "g1".into(),
                display_name: Some("Sales".into()),
                mail: Some(rng.address()),
                mail_enabled: true,
                ..SourceGroup::default()
            }];
            let snapshot = SourceSnapshot {
                users,
                groups,
                ..SourceSnapshot::default()
            };
            let entry = |id: i64, address: String, object: Option<String>| DirectoryUser {
                id: Some(id),
                source_id: object.as_ref().map(|_| SOURCE),
                source_object_id: object,
                status: UserStatus::Active,
                ..crate::mapping::manual_user(
                    EmailAddress::parse(&address).unwrap(),
                    Some("X".into()),
                    crate::model::MailboxType::User,
                )
            };
            let directory = vec![
                entry(1, rng.address(), Some(format!("u{:02}", rng.below(40)))),
                entry(2, rng.address(), Some("gone".into())),
                entry(3, rng.address(), None),
            ];
            let page = 1 + rng.below(15) as usize;
            let changed: HashSet<String> = [format!("u{:02}", rng.below(40))].into();
            let (plan, kept) = early(&snapshot, &directory, page, &changed).unwrap();
            let whole = plan_sync(&snapshot, &directory, &ctx());
            assert_eq!(plan.add, whole.add, "seed {seed}, pages of {page}");
            assert_eq!(plan.update, whole.update, "seed {seed}");
            assert_eq!(plan.remove, whole.remove, "seed {seed}");
            assert_eq!(plan.purge, whole.purge, "seed {seed}");
            let codes = |p: &Plan| {
                let mut s: Vec<_> = p
                    .skip
                    .iter()
                    .chain(&p.warnings)
                    .map(|s| (s.source_object_id.clone(), s.code.clone()))
                    .collect();
                s.sort();
                s
            };
            assert_eq!(codes(&plan), codes(&whole), "seed {seed}");
            kept_any += kept;
        }
        assert!(
            kept_any > 500,
            "objects alone with their addresses are planned early: {kept_any}"
        );
    }

    #[test]
    fn options_that_tie_objects_together_plan_nothing_early() {
        let mut ctx = ctx();
        ctx.options.import_managers = true;
        assert!(EarlyPlan::new(&[], &ctx).is_none());
        let mut ctx = self::ctx();
        ctx.options.selected_groups = vec!["Sales".into()];
        assert!(EarlyPlan::new(&[], &ctx).is_none());
        assert!(EarlyPlan::new(&[], &self::ctx()).is_some());
    }

    #[test]
    fn an_early_add_a_later_page_contests_is_planned_again() {
        let ctx = ctx();
        let mut early = EarlyPlan::new(&[], &ctx).unwrap();
        let first = early.take(vec![user::<&str>("b", "x@contoso.com", &[])], &ctx);
        assert_eq!(first.len(), 1);
        let later = early.take(vec![user("a", "y@contoso.com", &["x@contoso.com"])], &ctx);
        assert!(later.is_empty(), "a claims an address b claimed");
        let snapshot = SourceSnapshot {
            users: vec![
                user("a", "y@contoso.com", &["x@contoso.com"]),
                user::<&str>("b", "x@contoso.com", &[]),
            ],
            ..SourceSnapshot::default()
        };
        let settled = early.finish(&snapshot, &ctx, &HashSet::new());
        assert_eq!(settled.withdrawn, vec!["b".to_string()]);
        assert!(settled.kept.is_empty());
    }
}
