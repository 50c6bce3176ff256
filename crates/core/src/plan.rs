//! Planning: source snapshot + current directory -> a [`Plan`] of adds, updates, removals
//! and skips (rules 8 and 9 of PRODUCT.md). Applying it is the store's job.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::address::EmailAddress;
use crate::mapping::{MappingContext, SkipReason, map_group, map_user};
use crate::model::{DirectoryUser, UserStatus};
use crate::snapshot::SourceSnapshot;

/// One value of a changed field, as the user would read it in JSON.
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

/// A field's value before and after; serialises as `[before, after]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change(pub FieldValue, pub FieldValue);

/// An existing directory entry that the sync changes.
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
}

/// A source object that is not imported, and why.
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub add: Vec<DirectoryUser>,
    pub update: Vec<PlannedUpdate>,
    pub remove: Vec<DirectoryUser>,
    pub skip: Vec<Skip>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.update.is_empty() && self.remove.is_empty()
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
    /// Why the plan must wait for a confirmation, if it must. `managed` is how many active
    /// entries the source manages before the run.
    pub fn check(&self, plan: &Plan, managed: usize) -> Option<String> {
        let removing = plan.remove.len();
        let over_share = removing as u128 * 100 > managed as u128 * u128::from(self.percent);
        (removing >= self.minimum && over_share).then(|| {
            format!(
                "deletion safeguard: this sync would remove {removing} of the source's {managed} users \
                 (more than {}% and at least {}); nothing was applied. Check the plan with \
                 `usersync runs show RUN_ID` or a preview, then confirm with `--confirm-removals`",
                self.percent, self.minimum
            )
        })
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
    let mut plan = Plan::default();

    // Rules 1-5: what the source says each object should be.
    let mut desired: Vec<DirectoryUser> = Vec::with_capacity(snapshot.users.len());
    for user in &snapshot.users {
        match map_user(user, ctx) {
            Ok(entry) => desired.push(entry),
            Err(reason) => {
                plan.skip
                    .push(Skip::new(&user.id, user.display_name.as_deref(), &reason))
            }
        }
    }
    for group in &snapshot.groups {
        match map_group(group, ctx) {
            Some(Ok(entry)) => desired.push(entry),
            Some(Err(reason)) => {
                plan.skip
                    .push(Skip::new(&group.id, group.display_name.as_deref(), &reason))
            }
            None => {}
        }
    }

    // Two source objects cannot own one address: the first (by object id) keeps it.
    desired.sort_by(|a, b| a.source_object_id.cmp(&b.source_object_id));
    let mut owner_of: HashMap<EmailAddress, String> = HashMap::with_capacity(desired.len());
    desired.retain(|entry| {
        let object_id = entry.source_object_id.clone().unwrap_or_default();
        match owner_of.get(&entry.address) {
            Some(other) => {
                let reason = SkipReason::DuplicateAddress {
                    address: entry.address.clone(),
                    other_object_id: other.clone(),
                };
                plan.skip
                    .push(Skip::new(&object_id, Some(&entry.display_name), &reason));
                false
            }
            None => {
                owner_of.insert(entry.address.clone(), object_id);
                true
            }
        }
    });

    let by_object: HashMap<&str, &DirectoryUser> = directory
        .iter()
        .filter(|e| e.is_managed_by(ctx.source_id))
        .filter_map(|e| Some((e.source_object_id.as_deref()?, e)))
        .collect();
    let by_address: HashMap<&EmailAddress, &DirectoryUser> =
        directory.iter().map(|e| (&e.address, e)).collect();
    let desired_objects: HashSet<&str> = desired
        .iter()
        .filter_map(|e| e.source_object_id.as_deref())
        .collect();
    let mut matched: HashSet<i64> = HashSet::with_capacity(desired.len());

    for entry in &desired {
        let object_id = entry.source_object_id.as_deref().unwrap_or_default();
        let current = match by_object.get(object_id) {
            Some(current) => {
                // The object is known; if its new address is still held by another row
                // (even a removed one), moving onto it would give one address two entries.
                if let Some(holder) = by_address.get(&entry.address)
                    && holder.id != current.id
                {
                    plan.skip.push(conflict(object_id, entry, holder));
                    matched.insert(current.id.unwrap_or_default());
                    continue;
                }
                Some(*current)
            }
            None => match by_address.get(&entry.address) {
                Some(holder) if can_take_over(holder, ctx, &desired_objects) => Some(*holder),
                Some(holder) => {
                    plan.skip.push(conflict(object_id, entry, holder));
                    continue;
                }
                None => None,
            },
        };
        match current {
            None => plan.add.push(entry.clone()),
            Some(current) => {
                let id = current.id.unwrap_or_default();
                matched.insert(id);
                let changes = diff(current, entry);
                if !changes.is_empty() {
                    plan.update.push(PlannedUpdate {
                        address: current.address.clone(),
                        linked: current.source_id.is_none(),
                        restored: current.status == UserStatus::Removed,
                        changes,
                        id,
                        after: Some(DirectoryUser {
                            id: Some(id),
                            ..entry.clone()
                        }),
                    });
                }
            }
        }
    }

    // Rule 9: managed entries the source no longer has are removed (soft delete).
    for current in directory {
        let id = current.id.unwrap_or_default();
        if current.is_managed_by(ctx.source_id)
            && current.status == UserStatus::Active
            && !matched.contains(&id)
        {
            plan.remove.push(current.clone());
        }
    }

    plan.add.sort_by(|a, b| a.address.cmp(&b.address));
    plan.update.sort_by(|a, b| a.address.cmp(&b.address));
    plan.remove.sort_by(|a, b| a.address.cmp(&b.address));
    plan.skip
        .sort_by(|a, b| (&a.name, &a.source_object_id).cmp(&(&b.name, &b.source_object_id)));
    plan
}

/// Whether a sync may take over an existing entry that holds an address it wants (rule 8):
/// unmanaged entries are adopted; removed entries are restored; an entry of this same source
/// whose object is gone (deleted and re-created in the tenant) is re-linked.
fn can_take_over(
    holder: &DirectoryUser,
    ctx: &MappingContext,
    desired_objects: &HashSet<&str>,
) -> bool {
    match holder.source_id {
        None => true,
        Some(_) if holder.status == UserStatus::Removed => true,
        Some(id) if id == ctx.source_id => holder
            .source_object_id
            .as_deref()
            .is_none_or(|o| !desired_objects.contains(o)),
        Some(_) => false,
    }
}

fn conflict(object_id: &str, entry: &DirectoryUser, holder: &DirectoryUser) -> Skip {
    let reason = match holder.source_id {
        Some(source_id) if !holder.is_managed_by(entry.source_id.unwrap_or_default()) => {
            SkipReason::ManagedByOtherSource {
                address: entry.address.clone(),
                source_id,
            }
        }
        _ => SkipReason::DuplicateAddress {
            address: entry.address.clone(),
            other_object_id: holder.source_object_id.clone().unwrap_or_default(),
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
    use crate::address::DomainName;
    use crate::mapping::MAIN_GROUP;
    use crate::model::{EmailMethod, MailboxType};
    use crate::snapshot::SourceUser;

    const SOURCE: i64 = 1;

    fn ctx() -> MappingContext {
        MappingContext {
            source_id: SOURCE,
            domains: [DomainName::parse("contoso.com").unwrap()].into(),
            email_method: EmailMethod::PrimarySmtp,
            default_group: MAIN_GROUP.into(),
        }
    }

    fn user(id: &str, address: &str) -> SourceUser {
        SourceUser {
            id: id.into(),
            mail: Some(address.into()),
            proxy_addresses: vec![format!("SMTP:{address}")],
            display_name: Some(id.to_uppercase()),
            account_enabled: Some(true),
            assigned_licenses: vec!["e3".into()],
            ..SourceUser::default()
        }
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

    fn manual(address: &str) -> DirectoryUser {
        DirectoryUser {
            id: Some(100),
            address: EmailAddress::parse(address).unwrap(),
            display_name: "By hand".into(),
            given_name: None,
            surname: None,
            mailbox_type: MailboxType::User,
            billable: true,
            aliases: vec![],
            group: MAIN_GROUP.into(),
            source_id: None,
            source_object_id: None,
            status: UserStatus::Active,
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
            why.contains("20 of the source's 100") && why.contains("--confirm-removals"),
            "{why}"
        );
        // An empty read would remove everyone: stopped.
        assert!(guard.check(&plan_removing(500), 500).is_some());
    }

    #[test]
    fn two_users_swapping_addresses_is_a_conflict_not_a_corruption() {
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
        assert_eq!(plan.skip.len(), 2);
    }
}
