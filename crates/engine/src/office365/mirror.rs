//! The tenant as the last applied run read it (the source mirror): Graph users and groups
//! with what the sync learnt about them (mailbox types, direct members), loaded from the
//! store, merged with delta rounds, and compared object by object to say what to write.
//!
//! Merging never takes a partial object for a whole one: an incremental round carries only
//! the properties that changed, so they are laid over the mirrored object; an object the
//! mirror lacks is taken only when every selected property came with it, and read whole
//! otherwise.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use usersync_graph::{GROUP_PROPERTIES, Group, USER_PROPERTIES, User};
use usersync_store::{Mirror, MirrorObject, MirrorWrite};

/// The shape of the mirror this code writes; another shape is read again whole.
pub(super) const CURSOR_VERSION: u32 = 3;

pub(super) const USER: &str = "user";
pub(super) const GROUP: &str = "group";

/// Where the mirror's delta rounds continue, and what they read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cursor {
    pub v: u32,
    /// The Graph endpoint and app the links belong to: another one starts again whole.
    pub graph_url: String,
    pub client_id: String,
    pub users_link: String,
    pub groups_link: String,
    /// Groups' direct members are mirrored (and in the groups delta).
    pub memberships: bool,
    /// Users' managers are mirrored (and in the users delta, `manager@delta`).
    #[serde(default)]
    pub managers: bool,
    /// Users mirrored, and those of them whose mailbox type is not known yet: a delta run
    /// reads only the users it needs from the mirror while every type is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untyped: Option<u64>,
}

/// A mirrored user: Graph's properties (`u`, as Graph names them), and its mailbox type
/// once read. Nested, not flattened: a mirror of 100,000 users reads back much faster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MirrorUser {
    /// Boxed: a table of 1,000,000 users is half empty slots, each as large as the value.
    #[serde(rename = "u")]
    pub user: Box<User>,
    /// `mailboxSettings.userPurpose`; `""` when the account has no mailbox; absent when
    /// not read yet.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// When the mailbox type was read (Unix seconds): the daily reconciliation reads the
    /// oldest again, a budget a day, since a type can change without a delta saying so.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub purpose_at: Option<i64>,
}

impl MirrorUser {
    /// Its mailbox type is still to be read: it has an address, and no known type.
    pub fn pending(&self) -> bool {
        self.purpose.is_none()
            && (self.user.mail.is_some() || !self.user.proxy_addresses.is_empty())
    }
}

/// A member of a group, as the mirror keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Member {
    pub id: String,
    /// A nested group (its members are members too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group: bool,
}

/// A mirrored group (`g`), with its direct members (`m`) when memberships are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MirrorGroup {
    #[serde(rename = "g")]
    pub group: Group,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
}

/// The tenant's users and groups by id.
#[derive(Debug, Clone, Default)]
pub(super) struct Tenant {
    pub users: HashMap<String, MirrorUser>,
    pub groups: HashMap<String, MirrorGroup>,
}

/// A stored mirror, read back.
pub(super) struct Loaded {
    pub generation: i64,
    pub cursor: Cursor,
    pub full_age_secs: i64,
    pub tenant: Tenant,
}

impl Loaded {
    /// The stored mirror as this code reads it, or why it cannot be trusted.
    pub fn from_store(mirror: Mirror) -> Result<Loaded, (i64, String)> {
        let generation = mirror.generation;
        let cursor: Cursor = serde_json::from_value(mirror.cursor)
            .map_err(|e| (generation, format!("its cursor does not read ({e})")))?;
        if cursor.v != CURSOR_VERSION {
            return Err((
                generation,
                format!(
                    "it was written in another shape (version {}, this version reads {CURSOR_VERSION})",
                    cursor.v
                ),
            ));
        }
        let mut tenant = Tenant::default();
        tenant.take(mirror.objects).map_err(|e| (generation, e))?;
        Ok(Loaded {
            generation,
            cursor,
            full_age_secs: mirror.full_age_secs,
            tenant,
        })
    }
}

/// A mirrored object read back (moved straight into the tenant's maps, so the sizes of
/// its variants do not matter).
#[allow(clippy::large_enum_variant)]
enum Parsed {
    User(MirrorUser),
    Group(MirrorGroup),
}

/// Stored objects read back, not yet in a tenant: a whole mirror is parsed a part at a
/// time on other threads while the store sends the next part.
pub(super) struct ParsedObjects(Vec<(String, Parsed)>);

impl ParsedObjects {
    /// Parses `objects`, or says which one does not read.
    pub fn of(objects: Vec<MirrorObject>) -> Result<ParsedObjects, String> {
        parse_objects(objects).map(ParsedObjects)
    }
}

/// Reads stored objects back on every core (at 100,000 users, a third of a delta run was
/// this on one), or says which one does not read.
fn parse_objects(objects: Vec<MirrorObject>) -> Result<Vec<(String, Parsed)>, String> {
    fn parse(o: MirrorObject) -> Result<(String, Parsed), String> {
        let bad = |e: serde_json::Error| format!("{} {} does not read ({e})", o.kind, o.id);
        let parsed = match o.kind.as_str() {
            USER => Parsed::User(serde_json::from_str(&o.data).map_err(bad)?),
            GROUP => Parsed::Group(serde_json::from_str(&o.data).map_err(bad)?),
            other => return Err(format!("it holds objects of an unknown kind '{other}'")),
        };
        Ok((o.id, parsed))
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || objects.len() < 10_000 {
        return objects.into_iter().map(parse).collect();
    }
    let per = objects.len().div_ceil(threads);
    let mut parts: Vec<Vec<MirrorObject>> = Vec::with_capacity(threads);
    let mut rest = objects;
    while rest.len() > per {
        let tail = rest.split_off(per);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                scope.spawn(move || part.into_iter().map(parse).collect::<Result<Vec<_>, _>>())
            })
            .collect();
        let mut out = Vec::new();
        for handle in handles {
            // A panic in serde_json is a bug: carry it on.
            out.extend(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))?,
            );
        }
        Ok(out)
    })
}

/// Whether a change of these user properties can change the mailbox type.
const PURPOSE_PROPERTIES: &[&str] = &[
    "accountEnabled",
    "assignedLicenses",
    "mail",
    "proxyAddresses",
];

/// The `id` of a raw Graph object (empty when it has none).
pub(super) fn raw_id(raw: &Map<String, Value>) -> &str {
    raw.get("id").and_then(Value::as_str).unwrap_or_default()
}

/// A raw object carries every property the sync selects: it can stand for the whole.
pub(super) fn is_whole(raw: &Map<String, Value>, properties: &[&str]) -> bool {
    properties.iter().all(|p| raw.contains_key(*p))
}

/// Lays the properties present in `patch` over `into` (a `null` clears); `id` and OData
/// annotations are left alone.
fn overlay<T: Serialize + serde::de::DeserializeOwned>(
    into: &T,
    patch: &Map<String, Value>,
) -> Result<T, serde_json::Error> {
    let mut value = serde_json::to_value(into)?;
    if let Value::Object(map) = &mut value {
        for (k, v) in patch {
            if k == "id" || k.contains('@') {
                continue;
            }
            map.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(value)
}

/// A user's manager as the mirror keeps it: the id only.
pub(super) fn manager_ref(id: String) -> usersync_graph::DirectoryObject {
    usersync_graph::DirectoryObject {
        id,
        ..Default::default()
    }
}

/// A user read from Graph as the mirror keeps it, so that it compares equal whichever way
/// it was read and is made again whole from the snapshot's record ([`graph_user`]): only
/// the id of its manager (as a delta round gives it), and of its licences only the SKUs
/// (the sync reads nothing else of them).
pub(super) fn mirrored_form(user: &mut User) {
    user.manager = user
        .manager
        .take()
        .filter(|m| !m.id.is_empty())
        .map(|m| manager_ref(m.id));
    user.assigned_licenses.retain(|l| l.sku_id.is_some());
    for licence in &mut user.assigned_licenses {
        licence.disabled_plans = Vec::new();
    }
    // Lists as parsed hold room for four (192 bytes for one licence). Cut to size as the
    // page arrives, the room freed is taken again by the next pages; freed only when the
    // snapshot is made, it stayed as holes among the text the snapshot keeps (at
    // 1,000,000 users, about 150 MB resident to the end of the run).
    user.assigned_licenses.shrink_to_fit();
    user.proxy_addresses.shrink_to_fit();
}

/// The Graph user a snapshot's record was made from (by [`super::source_user`], of a user
/// in [`mirrored_form`]).
pub(super) fn graph_user(s: &usersync_core::SourceUser) -> User {
    User {
        id: s.id.clone(),
        user_principal_name: s.user_principal_name.clone(),
        mail: s.mail.clone(),
        proxy_addresses: s.proxy_addresses.clone(),
        display_name: s.display_name.clone(),
        given_name: s.given_name.as_deref().map(str::to_string),
        surname: s.surname.as_deref().map(str::to_string),
        account_enabled: s.account_enabled,
        assigned_licenses: s
            .assigned_licenses
            .iter()
            .map(|sku| usersync_graph::AssignedLicense {
                sku_id: Some(sku.to_string()),
                disabled_plans: Vec::new(),
            })
            .collect(),
        user_type: s.user_type.as_deref().map(str::to_string),
        company_name: s.company_name.as_deref().map(str::to_string),
        job_title: s.job_title.as_deref().map(str::to_string),
        department: s.department.as_deref().map(str::to_string),
        mail_enabled: s.mail_enabled,
        manager: s
            .manager_id
            .as_deref()
            .map(|id| manager_ref(id.to_string())),
    }
}

/// What the mirror keeps of a user beyond the snapshot's record: that it has no mailbox
/// (a type read as `""`), and when its type was read.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Kept {
    pub no_mailbox: bool,
    pub purpose_at: Option<i64>,
}

impl Kept {
    pub fn of(user: &MirrorUser) -> Kept {
        Kept {
            no_mailbox: user.purpose.as_deref() == Some(""),
            purpose_at: user.purpose_at,
        }
    }
}

/// The mirror objects of a whole read's users, made from the snapshot when written.
#[derive(Debug)]
pub(super) struct UserRows {
    /// Beside each of the snapshot's users, in its order.
    pub kept: Vec<Kept>,
}

impl crate::source::SnapshotMirror for UserRows {
    fn len(&self) -> usize {
        self.kept.len()
    }

    fn rows(
        &self,
        users: &[usersync_core::SourceUser],
        from: usize,
        wanted: &dyn Fn(&usersync_core::SourceUser) -> bool,
    ) -> Result<Vec<MirrorObject>, String> {
        let kept = self
            .kept
            .get(from..from + users.len())
            .ok_or("the read's users changed after it")?;
        users
            .iter()
            .zip(kept)
            .filter(|(s, _)| wanted(s))
            .map(|(s, k)| {
                let purpose = match (&s.user_purpose, k.no_mailbox) {
                    (Some(p), _) => Some(p.to_string()),
                    (None, true) => Some(String::new()),
                    (None, false) => None,
                };
                let user = MirrorUser {
                    user: Box::new(graph_user(s)),
                    purpose,
                    purpose_at: k.purpose_at,
                };
                object(USER, &s.id, &user, user.pending()).map_err(|e| e.to_string())
            })
            .collect()
    }
}

/// `manager@delta` of a users delta entry: `Some(None)` when the manager was removed,
/// `Some(Some(id))` when it is someone, `None` when the entry does not say.
fn manager_change(
    patch: &mut Map<String, Value>,
) -> Result<Option<Option<String>>, serde_json::Error> {
    let Some(v) = patch.remove("manager@delta") else {
        return Ok(None);
    };
    let entries: Vec<usersync_graph::MemberDelta> = serde_json::from_value(v)?;
    Ok(Some(
        entries
            .into_iter()
            .filter(|e| !e.is_removed())
            .map(|e| e.id)
            .next_back(),
    ))
}

/// What a delta round did to the mirror.
#[derive(Debug, Default)]
pub(super) struct Merged {
    /// Objects the round named but the mirror lacks and that came partial: read whole.
    pub users_to_read: Vec<String>,
    pub groups_to_read: Vec<String>,
    pub users_changed: usize,
    pub users_removed: usize,
    pub groups_changed: usize,
    pub groups_removed: usize,
    /// Users whose groups may have changed: the members (through nested groups too) of
    /// the groups the round changed, before and after the change.
    pub members: HashSet<String>,
    /// Of the users the round named, how many the mirror held (a partial read).
    pub found: usize,
    /// Members of changed groups read from the mirror besides (a partial read).
    pub found_members: usize,
    /// Of the users read from the mirror, those whose type was still to be read.
    pub pending: HashSet<String>,
}

impl Merged {
    /// What the round held, for the run's read detail.
    pub fn describe(&self) -> String {
        format!(
            "{} user and {} group changes, of which {} users and {} groups removed",
            self.users_changed, self.groups_changed, self.users_removed, self.groups_removed
        )
    }
}

impl Tenant {
    /// Merges one users delta round.
    pub fn merge_users(
        &mut self,
        items: Vec<usersync_graph::DeltaItem<Map<String, Value>>>,
        merged: &mut Merged,
    ) -> Result<(), serde_json::Error> {
        for item in items {
            match item {
                usersync_graph::DeltaItem::Removed { id, .. } => {
                    // "changed" (in the recycle bin, restorable) and "deleted" alike: the
                    // user is no longer in the tenant; a restore brings it back whole.
                    if self.users.remove(&id).is_some() {
                        merged.users_removed += 1;
                    }
                    merged.users_to_read.retain(|x| x != &id);
                }
                usersync_graph::DeltaItem::Changed(mut patch) => {
                    let id = raw_id(&patch).to_string();
                    let manager = manager_change(&mut patch)?;
                    if id.is_empty() {
                        continue;
                    }
                    merged.users_changed += 1;
                    match self.users.get(&id) {
                        Some(old) => {
                            let mut user: User = overlay(&*old.user, &patch)?;
                            user.id = id.clone();
                            if let Some(manager) = manager {
                                user.manager = manager.map(manager_ref);
                            }
                            mirrored_form(&mut user);
                            let (mut purpose, mut purpose_at) =
                                (old.purpose.clone(), old.purpose_at);
                            let touched = PURPOSE_PROPERTIES.iter().any(|p| patch.contains_key(*p));
                            if touched && purpose_inputs(&user) != purpose_inputs(&old.user) {
                                // Licence or account state changed: the type is read again.
                                (purpose, purpose_at) = (None, None);
                            }
                            self.users.insert(
                                id,
                                MirrorUser {
                                    user: Box::new(user),
                                    purpose,
                                    purpose_at,
                                },
                            );
                        }
                        None if is_whole(&patch, USER_PROPERTIES) => {
                            let mut user: User = serde_json::from_value(Value::Object(patch))?;
                            user.manager = manager.flatten().map(manager_ref);
                            mirrored_form(&mut user);
                            merged.users_to_read.retain(|x| x != &id);
                            self.users.insert(
                                id,
                                MirrorUser {
                                    user: Box::new(user),
                                    ..MirrorUser::default()
                                },
                            );
                        }
                        None => {
                            if !merged.users_to_read.contains(&id) {
                                merged.users_to_read.push(id);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Merges one groups delta round (`members@delta` adds and removes direct members).
    pub fn merge_groups(
        &mut self,
        items: Vec<usersync_graph::DeltaItem<Map<String, Value>>>,
        memberships: bool,
        merged: &mut Merged,
    ) -> Result<(), serde_json::Error> {
        for item in items {
            match item {
                usersync_graph::DeltaItem::Removed { id, .. } => {
                    if self.groups.remove(&id).is_some() {
                        merged.groups_removed += 1;
                    }
                    merged.groups_to_read.retain(|x| x != &id);
                }
                usersync_graph::DeltaItem::Changed(mut patch) => {
                    let id = raw_id(&patch).to_string();
                    if id.is_empty() {
                        continue;
                    }
                    merged.groups_changed += 1;
                    let member_changes = match patch.remove("members@delta") {
                        Some(v) => serde_json::from_value::<Vec<usersync_graph::MemberDelta>>(v)?,
                        None => Vec::new(),
                    };
                    let (mut group, known) = match self.groups.get(&id) {
                        Some(old) => {
                            let mut group: MirrorGroup = old.clone();
                            group.group = overlay(&old.group, &patch)?;
                            group.group.id = id.clone();
                            (group, true)
                        }
                        None if is_whole(&patch, GROUP_PROPERTIES) => {
                            let group: Group = serde_json::from_value(Value::Object(patch))?;
                            let members = memberships.then(Vec::new);
                            (MirrorGroup { group, members }, false)
                        }
                        None => {
                            if !merged.groups_to_read.contains(&id) {
                                merged.groups_to_read.push(id);
                            }
                            continue;
                        }
                    };
                    if !known {
                        merged.groups_to_read.retain(|x| x != &id);
                    }
                    if let Some(members) = &mut group.members {
                        for m in member_changes {
                            members.retain(|x| x.id != m.id);
                            if !m.is_removed() {
                                let is_group = m
                                    .odata_type
                                    .as_deref()
                                    .is_some_and(|t| t.ends_with("group"));
                                members.push(Member {
                                    id: m.id,
                                    group: is_group,
                                });
                            }
                        }
                    }
                    self.groups.insert(id, group);
                }
            }
        }
        Ok(())
    }

    /// Takes stored objects in, or says which one does not read.
    pub fn take(&mut self, objects: Vec<MirrorObject>) -> Result<(), String> {
        self.insert(ParsedObjects::of(objects)?);
        Ok(())
    }

    /// Takes objects in that were parsed apart from it (see [`ParsedObjects`]).
    pub fn insert(&mut self, objects: ParsedObjects) {
        for (id, parsed) in objects.0 {
            match parsed {
                Parsed::User(mut u) => {
                    // (A mirror written before licences were kept as SKUs alone.)
                    mirrored_form(&mut u.user);
                    self.users.insert(id, u);
                }
                Parsed::Group(g) => {
                    self.groups.insert(id, g);
                }
            }
        }
    }

    /// Users that have an address but no known mailbox type.
    pub fn untyped(&self) -> usize {
        self.users.values().filter(|u| u.pending()).count()
    }

    /// The users a group holds, directly or through nested groups.
    pub fn members_deep(&self, group_id: &str, into: &mut HashSet<String>) {
        self.each_member(group_id, |id| {
            into.insert(id.to_string());
        });
    }

    /// Calls `f` with each user a group holds, directly or through nested groups, once.
    fn each_member<'a>(&'a self, group_id: &'a str, mut f: impl FnMut(&'a str)) {
        let Some(members) = self.groups.get(group_id).and_then(|g| g.members.as_ref()) else {
            return;
        };
        let mut seen: HashSet<&str> = HashSet::from([group_id]);
        let mut stack: Vec<&Member> = members.iter().collect();
        while let Some(m) = stack.pop() {
            if !seen.insert(m.id.as_str()) {
                continue;
            }
            if m.group {
                if let Some(nested) = self.groups.get(&m.id).and_then(|n| n.members.as_ref()) {
                    stack.extend(nested.iter());
                }
            } else {
                f(m.id.as_str());
            }
        }
    }

    /// Ids of the groups each user belongs to, directly or through nested groups.
    pub fn member_of(&self) -> HashMap<&str, Vec<String>> {
        let mut member_of: HashMap<&str, Vec<String>> = HashMap::new();
        for gid in self.groups.keys() {
            self.each_member(gid, |id| {
                if let Some((key, _)) = self.users.get_key_value(id) {
                    member_of.entry(key.as_str()).or_default().push(gid.clone());
                }
            });
        }
        for groups in member_of.values_mut() {
            groups.sort();
        }
        member_of
    }

    /// The mirror writes that turn `old` into `self` (a whole read): changed and new
    /// objects, and the ids gone.
    /// Without `users`, users are left to [`UserRows`] (every one is new to the mirror).
    pub fn writes_full(&self, old: &Tenant, users: bool) -> Result<Writes, serde_json::Error> {
        let changed: Vec<(&String, &MirrorUser)> = self
            .users
            .iter()
            .filter(|(id, u)| users && old.users.get(*id) != Some(*u))
            .collect();
        let mut upserts = objects(USER, &changed)?;
        for (id, g) in &self.groups {
            if old.groups.get(id) != Some(g) {
                upserts.push(object(GROUP, id, g, false)?);
            }
        }
        let mut deletes: Vec<(String, String)> = old
            .users
            .keys()
            .filter(|id| !self.users.contains_key(*id))
            .map(|id| (USER.to_string(), id.clone()))
            .collect();
        deletes.extend(
            old.groups
                .keys()
                .filter(|id| !self.groups.contains_key(*id))
                .map(|id| (GROUP.to_string(), id.clone())),
        );
        Ok((upserts, deletes))
    }

    /// The mirror writes of a delta round: the objects it touched, as they are now.
    pub fn writes_touched(
        &self,
        users: &HashSet<String>,
        groups: &HashSet<String>,
    ) -> Result<Writes, serde_json::Error> {
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for id in users {
            match self.users.get(id) {
                Some(u) => upserts.push(object(USER, id, u, u.pending())?),
                None => deletes.push((USER.to_string(), id.clone())),
            }
        }
        for id in groups {
            match self.groups.get(id) {
                Some(g) => upserts.push(object(GROUP, id, g, false)?),
                None => deletes.push((GROUP.to_string(), id.clone())),
            }
        }
        Ok((upserts, deletes))
    }

    /// How `self` (the tenant read whole) differs from `old` (the mirror), for the run's
    /// notes: counts by kind and a few ids.
    pub fn differences(&self, old: &Tenant) -> Option<String> {
        let mut parts = Vec::new();
        let mut examples = Vec::new();
        let mut count = |what: &str, ids: Vec<&String>| {
            if !ids.is_empty() {
                parts.push(format!("{} {what}", ids.len()));
                examples.extend(ids.into_iter().take(3).cloned());
            }
        };
        count(
            "users missing from the mirror",
            self.users
                .keys()
                .filter(|id| !old.users.contains_key(*id))
                .collect(),
        );
        count(
            "users gone from the tenant",
            old.users
                .keys()
                .filter(|id| !self.users.contains_key(*id))
                .collect(),
        );
        count(
            "users that differ",
            self.users
                .iter()
                .filter(|(id, u)| old.users.get(*id).is_some_and(|o| o.user != u.user))
                .map(|(id, _)| id)
                .collect(),
        );
        count(
            "groups missing from the mirror",
            self.groups
                .keys()
                .filter(|id| !old.groups.contains_key(*id))
                .collect(),
        );
        count(
            "groups gone from the tenant",
            old.groups
                .keys()
                .filter(|id| !self.groups.contains_key(*id))
                .collect(),
        );
        count(
            "groups that differ",
            self.groups
                .iter()
                .filter(|(id, g)| old.groups.get(*id).is_some_and(|o| o != *g))
                .map(|(id, _)| id)
                .collect(),
        );
        (!parts.is_empty()).then(|| {
            examples.sort();
            examples.truncate(5);
            format!(
                "reconciliation: the mirror differed from the tenant ({}; for example {}); corrected",
                parts.join(", "),
                examples.join(", ")
            )
        })
    }
}

/// Keeps the mailbox type `old` knew of the same user when its licence and account state
/// are the same.
pub(super) fn keep_purpose(user: &mut MirrorUser, old: &MirrorUser) {
    if purpose_inputs(&old.user) == purpose_inputs(&user.user) {
        user.purpose = old.purpose.clone();
        user.purpose_at = old.purpose_at;
    }
}

/// Objects to write and `(kind, id)` of objects to delete.
pub(super) type Writes = (Vec<MirrorObject>, Vec<(String, String)>);

/// Many objects of one kind, serialised on every core (a first sync writes them all: a
/// second at 1,000,000 users on one).
fn objects(
    kind: &str,
    items: &[(&String, &MirrorUser)],
) -> Result<Vec<MirrorObject>, serde_json::Error> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || items.len() < 10_000 {
        return items
            .iter()
            .map(|(id, v)| object(kind, id, v, v.pending()))
            .collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(id, v)| object(kind, id, v, v.pending()))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for part in parts {
            // A panic in serde_json is a bug: carry it on.
            out.extend(
                part.join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))?,
            );
        }
        Ok(out)
    })
}

/// A user's mirror object, as a whole read writes it.
pub(super) fn user_object(user: &MirrorUser) -> Result<MirrorObject, serde_json::Error> {
    object(USER, &user.user.id, user, user.pending())
}

fn object<T: Serialize>(
    kind: &str,
    id: &str,
    value: &T,
    pending: bool,
) -> Result<MirrorObject, serde_json::Error> {
    let mut data = serde_json::to_string(value)?;
    // The buffer grew by doubling: at 1,000,000 users the slack was hundreds of MB.
    data.shrink_to_fit();
    Ok(MirrorObject {
        kind: kind.to_string(),
        id: id.to_string(),
        data,
        pending,
    })
}

/// What the mailbox type depends on: sign-in, licences, and whether the account has a
/// mailbox at all. Which addresses it has does not: a renamed mailbox, or one that gained
/// or lost an alias (a swap, a chain of renames), keeps the type read before.
type PurposeInputs<'a> = (Option<bool>, Vec<Option<&'a str>>, bool);

fn purpose_inputs(u: &User) -> PurposeInputs<'_> {
    (
        u.account_enabled,
        u.assigned_licenses
            .iter()
            .map(|l| l.sku_id.as_deref())
            .collect(),
        u.mail.is_some() || !u.proxy_addresses.is_empty(),
    )
}

/// A mirror write from the objects and the cursor.
pub(super) fn write(
    source_id: i64,
    base: Option<i64>,
    cursor: &Cursor,
    full: bool,
    replace: bool,
    (upserts, deletes): Writes,
) -> MirrorWrite {
    MirrorWrite {
        source_id,
        base,
        cursor: serde_json::to_value(cursor).unwrap_or_default(),
        full,
        replace,
        upserts,
        deletes,
        planned: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use usersync_graph::DeltaItem;

    fn raw(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn whole_user(id: &str, mail: &str) -> Map<String, Value> {
        let mut m = Map::new();
        for p in USER_PROPERTIES {
            m.insert((*p).into(), Value::Null);
        }
        m.insert("id".into(), json!(id));
        m.insert("mail".into(), json!(mail));
        m.insert("department".into(), json!("Sales"));
        m.insert("accountEnabled".into(), json!(true));
        m
    }

    #[test]
    fn a_user_written_from_the_snapshot_is_the_user_read() {
        use crate::source::SnapshotMirror;
        let mut raw = whole_user("1", "a@x.com");
        raw.insert(
            "proxyAddresses".into(),
            json!(["SMTP:a@x.com", "smtp:b@x.com"]),
        );
        raw.insert(
            "assignedLicenses".into(),
            json!([{"skuId": "s1", "disabledPlans": ["p1"]}, {"skuId": null}]),
        );
        raw.insert("manager".into(), json!({"id": "m", "displayName": "M"}));
        raw.insert("userType".into(), json!("Member"));
        let mut user: User = serde_json::from_value(Value::Object(raw)).unwrap();
        mirrored_form(&mut user);
        assert_eq!(user.assigned_licenses.len(), 1);
        // Held to the end of the read: no room beyond what it holds.
        assert_eq!(user.assigned_licenses.capacity(), 1);
        assert_eq!(user.proxy_addresses.capacity(), 2);
        for (purpose, purpose_at) in [
            (None, None),
            (Some(""), Some(1_700_000_000)),
            (Some("shared"), Some(1_700_000_001)),
        ] {
            let read = MirrorUser {
                user: Box::new(user.clone()),
                purpose: purpose.map(str::to_string),
                purpose_at,
            };
            let mut record = super::super::source_user(*read.user.clone(), &mut Default::default());
            record.user_purpose = purpose.filter(|p| !p.is_empty()).map(Into::into);
            let rows = UserRows {
                kept: vec![Kept::default(), Kept::of(&read)],
            };
            let written = rows
                .rows(std::slice::from_ref(&record), 1, &|_| true)
                .unwrap();
            // The same as the object a first read writes as it hands the user over.
            let direct = user_object(&read).unwrap();
            assert_eq!(written[0].id, direct.id);
            assert_eq!(written[0].data, direct.data, "{purpose:?}");
            assert_eq!(written[0].pending, direct.pending);
            assert_eq!(
                serde_json::from_str::<MirrorUser>(&written[0].data).unwrap(),
                read
            );
        }
        // Rows asked beyond what it was made for are refused, not made up.
        let rows = UserRows { kept: Vec::new() };
        assert!(rows.rows(&[record_of_nobody()], 0, &|_| true).is_err());
    }

    fn record_of_nobody() -> usersync_core::SourceUser {
        usersync_core::SourceUser::default()
    }

    #[test]
    fn a_partial_change_is_laid_over_the_mirrored_user() {
        let mut t = Tenant::default();
        let mut m = Merged::default();
        t.merge_users(vec![DeltaItem::Changed(whole_user("1", "a@x.com"))], &mut m)
            .unwrap();
        t.users.get_mut("1").unwrap().purpose = Some("shared".into());
        // Only the department changed, and it was cleared: mail stays, purpose stays.
        t.merge_users(
            vec![DeltaItem::Changed(raw(
                json!({"id": "1", "department": null}),
            ))],
            &mut m,
        )
        .unwrap();
        let u = &t.users["1"];
        assert_eq!(u.user.mail.as_deref(), Some("a@x.com"));
        assert_eq!(u.user.department, None);
        assert_eq!(u.purpose.as_deref(), Some("shared"));
        // Renamed, with a new alias: the same mailbox, whose type is not read again.
        t.merge_users(
            vec![DeltaItem::Changed(raw(json!({
                "id": "1",
                "mail": "b@x.com",
                "proxyAddresses": ["SMTP:b@x.com", "smtp:a@x.com"]
            })))],
            &mut m,
        )
        .unwrap();
        assert_eq!(t.users["1"].user.mail.as_deref(), Some("b@x.com"));
        assert_eq!(t.users["1"].purpose.as_deref(), Some("shared"));
        // Sign-in changed: the mailbox type is read again.
        t.merge_users(
            vec![DeltaItem::Changed(raw(
                json!({"id": "1", "accountEnabled": false}),
            ))],
            &mut m,
        )
        .unwrap();
        assert_eq!(t.users["1"].purpose, None);
        assert_eq!(t.users["1"].user.account_enabled, Some(false));
    }

    #[test]
    fn a_partial_object_the_mirror_lacks_is_read_whole() {
        let mut t = Tenant::default();
        let mut m = Merged::default();
        t.merge_users(
            vec![DeltaItem::Changed(raw(
                json!({"id": "9", "department": "X"}),
            ))],
            &mut m,
        )
        .unwrap();
        assert!(t.users.is_empty());
        assert_eq!(m.users_to_read, vec!["9".to_string()]);
        // Removed later in the same round: nothing to read.
        t.merge_users(
            vec![DeltaItem::Removed {
                id: "9".into(),
                reason: "changed".into(),
            }],
            &mut m,
        )
        .unwrap();
        assert!(m.users_to_read.is_empty());
    }

    #[test]
    fn nested_groups_count_their_members() {
        let mut t = Tenant::default();
        for id in ["u1", "u2"] {
            t.users.insert(id.into(), MirrorUser::default());
        }
        let g = |members: Vec<Member>| MirrorGroup {
            members: Some(members),
            ..Default::default()
        };
        let user = |id: &str| Member {
            id: id.into(),
            group: false,
        };
        let group = |id: &str| Member {
            id: id.into(),
            group: true,
        };
        t.groups
            .insert("outer".into(), g(vec![user("u1"), group("inner")]));
        t.groups
            .insert("inner".into(), g(vec![user("u2"), group("outer")]));
        let m = t.member_of();
        assert_eq!(m["u1"], vec!["inner", "outer"]);
        assert_eq!(m["u2"], vec!["inner", "outer"]);
    }

    #[test]
    fn mirrored_objects_read_back_the_same() {
        let u = MirrorUser {
            user: serde_json::from_value(Value::Object(whole_user("1", "a@x.com"))).unwrap(),
            purpose: Some(String::new()),
            purpose_at: Some(1_700_000_000),
        };
        let text = serde_json::to_string(&u).unwrap();
        assert_eq!(serde_json::from_str::<MirrorUser>(&text).unwrap(), u);
        // What a user lacks is not written (a mirror of 1,000,000 users is smaller by
        // much), and reads back as lacking.
        let sparse = MirrorUser {
            user: Box::new(User {
                id: "2".into(),
                mail: Some("b@x.com".into()),
                assigned_licenses: vec![usersync_graph::AssignedLicense {
                    sku_id: Some("sku".into()),
                    disabled_plans: Vec::new(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = serde_json::to_string(&sparse).unwrap();
        assert_eq!(
            text,
            r#"{"u":{"id":"2","mail":"b@x.com","assignedLicenses":[{"skuId":"sku"}]}}"#
        );
        assert_eq!(serde_json::from_str::<MirrorUser>(&text).unwrap(), sparse);
        let g = MirrorGroup {
            group: Group {
                id: "g".into(),
                display_name: Some("G".into()),
                ..Default::default()
            },
            members: Some(vec![Member {
                id: "1".into(),
                group: false,
            }]),
        };
        let text = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<MirrorGroup>(&text).unwrap(), g);
    }
}
