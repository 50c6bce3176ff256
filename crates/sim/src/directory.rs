//! The live directory: the generated tenant plus every change made since,
//! with a change sequence number per object and tombstones for deleted ones
//! so that delta tokens keep working. [`TenantHandle`] is the in-process
//! mutation API tests use between syncs.

use crate::SimError;
use crate::generate::{Blueprint, Generated, MemberRef};
use crate::model::{GP, SimDomain, SimGroup, SimSku, SimUser, UP, group_diff, user_diff};
use crate::tenant::Tenant;
use crate::util::{hash_lower, new_guid};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub(crate) struct Tombstone {
    pub id: String,
    pub seq: u64,
    /// "changed" (soft-deleted, restorable) or "deleted" (gone for good), as
    /// Graph reports in `@removed.reason`.
    pub reason: &'static str,
    /// A soft-deleted user as it was, for a restore (as from Entra ID's recycle bin).
    pub user: Option<Box<SimUser>>,
}

pub(crate) struct UserRec {
    pub user: SimUser,
    pub created_seq: u64,
    pub seq: u64,
    /// When each property last changed (only properties ever changed).
    pub changed: Vec<(UP, u64)>,
}

pub(crate) enum UserSlot {
    Live(Box<UserRec>),
    Gone(Tombstone),
}

pub(crate) struct GroupRec {
    /// `members` is kept empty here; membership lives in `members`.
    pub group: SimGroup,
    pub created_seq: u64,
    pub seq: u64,
    pub changed: Vec<(GP, u64)>,
    pub members: Vec<MemberRef>,
    /// Latest membership change per member: (seq, is member now).
    pub member_changes: HashMap<MemberRef, (u64, bool)>,
}

pub(crate) enum GroupSlot {
    Live(Box<GroupRec>),
    Gone(Tombstone),
}

/// One entry of a delta change round.
pub(crate) enum Change<'a, T: Clone> {
    /// Created after the round's baseline: the whole object.
    New(Cow<'a, T>),
    /// Existing object: only properties changed after the baseline.
    Updated(Cow<'a, T>, u64),
    Removed(&'a Tombstone),
}

pub(crate) struct Directory {
    pub bp: Blueprint,
    pub seq: u64,
    base_ids: HashMap<u128, u32>,
    base_upns: HashMap<u64, u32>,
    users: BTreeMap<u64, UserSlot>,
    extra_ids: HashMap<String, u64>,
    extra_upns: HashMap<String, u64>,
    user_changes: BTreeMap<u64, u64>,
    next_user: u64,
    live_users: u64,
    groups: BTreeMap<u64, GroupSlot>,
    group_ids: HashMap<String, u64>,
    group_changes: BTreeMap<u64, u64>,
    next_group: u64,
    member_of: HashMap<MemberRef, Vec<u64>>,
    pub skus: Vec<SimSku>,
}

impl Directory {
    pub(crate) fn new(bp: Blueprint) -> Directory {
        let g = Generated::from_blueprint(bp);
        let mut member_of: HashMap<MemberRef, Vec<u64>> =
            HashMap::with_capacity(g.blueprint.n as usize);
        let mut groups = BTreeMap::new();
        let mut group_ids = HashMap::new();
        for (ord, (group, members)) in g.groups.into_iter().zip(g.members).enumerate() {
            let ord = ord as u64;
            for m in &members {
                member_of.entry(*m).or_default().push(ord);
            }
            group_ids.insert(group.id.to_lowercase(), ord);
            groups.insert(
                ord,
                GroupSlot::Live(Box::new(GroupRec {
                    group,
                    created_seq: 0,
                    seq: 0,
                    changed: vec![],
                    members,
                    member_changes: HashMap::new(),
                })),
            );
        }
        let n = g.blueprint.n;
        Directory {
            next_group: groups.len() as u64,
            bp: g.blueprint,
            seq: 0,
            base_ids: g.user_ids,
            base_upns: g.user_upns,
            users: BTreeMap::new(),
            extra_ids: HashMap::new(),
            extra_upns: HashMap::new(),
            user_changes: BTreeMap::new(),
            next_user: n,
            live_users: n,
            groups,
            group_ids,
            group_changes: BTreeMap::new(),
            member_of,
            skus: g.skus,
        }
    }

    // ----- users: reads

    /// Resolves an object id or a user principal name to a live user.
    pub(crate) fn user_ord(&self, key: &str) -> Option<u64> {
        let ord = self.user_ord_any(key)?;
        matches!(self.users.get(&ord), None | Some(UserSlot::Live(_))).then_some(ord)
    }

    /// Like `user_ord` but also finds deleted users.
    fn user_ord_any(&self, key: &str) -> Option<u64> {
        if let Ok(u) = uuid::Uuid::parse_str(key) {
            if let Some(o) = self.base_ids.get(&u.as_u128()) {
                return Some(u64::from(*o));
            }
            return self.extra_ids.get(&u.to_string()).copied();
        }
        let lower = key.to_lowercase();
        if let Some(o) = self.extra_upns.get(&lower) {
            return Some(*o);
        }
        let o = u64::from(*self.base_upns.get(&hash_lower(key))?);
        // Changed users are indexed in `extra_upns`; their generated UPN no
        // longer counts. Otherwise rule out a hash collision.
        (!self.users.contains_key(&o)
            && self
                .bp
                .user(o)
                .user_principal_name
                .eq_ignore_ascii_case(key))
        .then_some(o)
    }

    pub(crate) fn user(&self, ord: u64) -> Option<Cow<'_, SimUser>> {
        match self.users.get(&ord) {
            Some(UserSlot::Live(r)) => Some(Cow::Borrowed(&r.user)),
            Some(UserSlot::Gone(_)) => None,
            None if ord < self.bp.n => Some(Cow::Owned(self.bp.user(ord))),
            None => None,
        }
    }

    pub(crate) fn user_id(&self, ord: u64) -> String {
        match self.users.get(&ord) {
            Some(UserSlot::Live(r)) => r.user.id.clone(),
            Some(UserSlot::Gone(t)) => t.id.clone(),
            None => self.bp.user_id(ord),
        }
    }

    /// The first live user at or after ordinal `from`, in listing order.
    pub(crate) fn next_user(&self, from: u64) -> Option<(u64, Cow<'_, SimUser>)> {
        let mut ord = from;
        while ord < self.bp.n {
            match self.users.get(&ord) {
                None => return Some((ord, Cow::Owned(self.bp.user(ord)))),
                Some(UserSlot::Live(r)) => return Some((ord, Cow::Borrowed(&r.user))),
                Some(UserSlot::Gone(_)) => ord += 1,
            }
        }
        self.users.range(ord..).find_map(|(o, s)| match s {
            UserSlot::Live(r) => Some((*o, Cow::Borrowed(&r.user))),
            UserSlot::Gone(_) => None,
        })
    }

    pub(crate) fn user_count(&self) -> u64 {
        self.live_users
    }

    /// Changes to users with sequence in `(since, until]`, starting after
    /// sequence `after`, in sequence order.
    pub(crate) fn user_changes(
        &self,
        since: u64,
        until: u64,
        after: u64,
    ) -> impl Iterator<Item = (u64, Change<'_, SimUser>)> + '_ {
        let lo = since.max(after) + 1;
        // BTreeMap::range panics on a reversed range; an empty window is normal.
        (lo <= until)
            .then(|| self.user_changes.range(lo..=until))
            .into_iter()
            .flatten()
            .filter_map(move |(seq, ord)| match self.users.get(ord)? {
                UserSlot::Live(r) if r.created_seq > since => {
                    Some((*seq, Change::New(Cow::Borrowed(&r.user))))
                }
                UserSlot::Live(r) => Some((*seq, Change::Updated(Cow::Borrowed(&r.user), since))),
                UserSlot::Gone(t) => Some((*seq, Change::Removed(t))),
            })
    }

    /// Properties of user `id` changed after `since`.
    pub(crate) fn user_changed_props(&self, ord: u64, since: u64) -> Vec<UP> {
        match self.users.get(&ord) {
            Some(UserSlot::Live(r)) => r
                .changed
                .iter()
                .filter(|(_, s)| *s > since)
                .map(|(p, _)| *p)
                .collect(),
            _ => vec![],
        }
    }

    /// Direct reports of `ord`, which only the caller needs when deleting.
    fn direct_reports(&self, ord: u64, id: &str) -> Vec<u64> {
        let mut out: Vec<u64> = (ord * 8 + 1..=ord * 8 + 8)
            .filter(|c| {
                *c < self.bp.n && !self.users.contains_key(c) && self.bp.manager(*c) == Some(ord)
            })
            .collect();
        out.extend(self.users.iter().filter_map(|(o, s)| match s {
            UserSlot::Live(r) if r.user.manager_id.as_deref() == Some(id) => Some(*o),
            _ => None,
        }));
        out
    }

    // ----- users: writes

    fn bump(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn count_licences(&mut self, u: &SimUser, delta: i64) {
        for l in &u.assigned_licenses {
            if let Some(s) = self
                .skus
                .iter_mut()
                .find(|s| s.sku_id.eq_ignore_ascii_case(l))
            {
                s.consumed_units += delta;
            }
        }
    }

    fn check_upn_free(&self, upn: &str, except: Option<u64>) -> Result<(), SimError> {
        if upn.is_empty() {
            return Err(SimError::Invalid("userPrincipalName is required".into()));
        }
        match self.user_ord(upn) {
            Some(o) if Some(o) != except => Err(SimError::Conflict(format!(
                "Another object with the same value for property userPrincipalName already exists: {upn}"
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) fn add_user(&mut self, mut u: SimUser) -> Result<String, SimError> {
        if u.id.is_empty() {
            u.id = new_guid();
        }
        u.id = uuid::Uuid::parse_str(&u.id)
            .map_err(|_| SimError::Invalid(format!("id '{}' is not a GUID", u.id)))?
            .to_string();
        if self.user_ord_any(&u.id).is_some() || self.group_ids.contains_key(&u.id) {
            return Err(SimError::Conflict(format!(
                "object id {} already exists",
                u.id
            )));
        }
        self.check_upn_free(&u.user_principal_name, None)?;
        let ord = self.next_user;
        self.next_user += 1;
        let seq = self.bump();
        self.count_licences(&u, 1);
        self.extra_ids.insert(u.id.clone(), ord);
        self.extra_upns
            .insert(u.user_principal_name.to_lowercase(), ord);
        let id = u.id.clone();
        self.users.insert(
            ord,
            UserSlot::Live(Box::new(UserRec {
                user: u,
                created_seq: seq,
                seq,
                changed: vec![],
            })),
        );
        self.user_changes.insert(seq, ord);
        self.live_users += 1;
        Ok(id)
    }

    fn not_found(key: &str) -> SimError {
        SimError::NotFound(format!("no such object: {key}"))
    }

    /// Stores `new` as user `ord`; bumps its sequence if a Graph property changed.
    fn put_user(&mut self, ord: u64, new: SimUser) {
        let old = self.user(ord).map(Cow::into_owned).unwrap_or_default();
        let diff = user_diff(&old, &new);
        self.count_licences(&old, -1);
        self.count_licences(&new, 1);
        if old.user_principal_name != new.user_principal_name || !self.users.contains_key(&ord) {
            let lo = old.user_principal_name.to_lowercase();
            if self.extra_upns.get(&lo) == Some(&ord) {
                self.extra_upns.remove(&lo);
            }
            self.extra_upns
                .insert(new.user_principal_name.to_lowercase(), ord);
        }
        if ord >= self.bp.n {
            self.extra_ids.insert(new.id.clone(), ord);
        }
        let seq = if diff.is_empty() {
            None
        } else {
            Some(self.bump())
        };
        let rec = match self.users.remove(&ord) {
            Some(UserSlot::Live(mut r)) => {
                r.user = new;
                r
            }
            _ => Box::new(UserRec {
                user: new,
                created_seq: 0,
                seq: 0,
                changed: vec![],
            }),
        };
        let mut rec = rec;
        if let Some(seq) = seq {
            self.user_changes.remove(&rec.seq);
            rec.seq = seq;
            self.user_changes.insert(seq, ord);
            for p in diff {
                match rec.changed.iter_mut().find(|(q, _)| *q == p) {
                    Some(e) => e.1 = seq,
                    None => rec.changed.push((p, seq)),
                }
            }
        }
        self.users.insert(ord, UserSlot::Live(rec));
    }

    pub(crate) fn update_user(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut SimUser),
    ) -> Result<(), SimError> {
        let ord = self.user_ord(key).ok_or_else(|| Self::not_found(key))?;
        let mut u = self
            .user(ord)
            .ok_or_else(|| Self::not_found(key))?
            .into_owned();
        let id = u.id.clone();
        f(&mut u);
        u.id = id;
        self.check_upn_free(&u.user_principal_name, Some(ord))?;
        self.put_user(ord, u);
        Ok(())
    }

    pub(crate) fn delete_user(&mut self, key: &str, permanent: bool) -> Result<(), SimError> {
        let ord = self.user_ord_any(key).ok_or_else(|| Self::not_found(key))?;
        if let Some(UserSlot::Gone(t)) = self.users.get(&ord) {
            if !permanent || t.reason == "deleted" {
                return Err(Self::not_found(key));
            }
            let old = t.seq;
            let seq = self.bump();
            if let Some(UserSlot::Gone(t)) = self.users.get_mut(&ord) {
                t.reason = "deleted";
                t.seq = seq;
                t.user = None;
            }
            self.user_changes.remove(&old);
            self.user_changes.insert(seq, ord);
            return Ok(());
        }
        let user = self
            .user(ord)
            .ok_or_else(|| Self::not_found(key))?
            .into_owned();
        // As in Entra ID: a deleted user leaves its groups and its reports
        // lose their manager.
        let me = MemberRef::User(ord);
        for g in self.member_of.get(&me).cloned().unwrap_or_default() {
            let _ = self.change_membership(g, me, false);
        }
        for r in self.direct_reports(ord, &user.id) {
            if let Some(mut u) = self.user(r).map(Cow::into_owned) {
                u.manager_id = None;
                self.put_user(r, u);
            }
        }
        self.count_licences(&user, -1);
        let old_seq = match self.users.get(&ord) {
            Some(UserSlot::Live(r)) => r.seq,
            _ => 0,
        };
        let seq = self.bump();
        self.user_changes.remove(&old_seq);
        self.user_changes.insert(seq, ord);
        self.users.insert(
            ord,
            UserSlot::Gone(Tombstone {
                id: user.id.clone(),
                seq,
                reason: if permanent { "deleted" } else { "changed" },
                user: (!permanent).then(|| Box::new(user.clone())),
            }),
        );
        let lo = user.user_principal_name.to_lowercase();
        if self.extra_upns.get(&lo) == Some(&ord) {
            self.extra_upns.remove(&lo);
        }
        self.live_users -= 1;
        Ok(())
    }

    /// Restores a soft-deleted user as it was when deleted (its group memberships are
    /// not restored); delta reports it as a new object again.
    pub(crate) fn restore_user(&mut self, key: &str) -> Result<(), SimError> {
        let ord = self.user_ord_any(key).ok_or_else(|| Self::not_found(key))?;
        let (old, user) = match self.users.get(&ord) {
            Some(UserSlot::Gone(t)) => match &t.user {
                Some(user) => (t.seq, user.as_ref().clone()),
                None => return Err(Self::not_found(key)),
            },
            _ => {
                return Err(SimError::Conflict(format!(
                    "the user {key} is not deleted: nothing to restore"
                )));
            }
        };
        self.check_upn_free(&user.user_principal_name, Some(ord))?;
        let seq = self.bump();
        self.user_changes.remove(&old);
        self.user_changes.insert(seq, ord);
        self.count_licences(&user, 1);
        self.extra_upns
            .insert(user.user_principal_name.to_lowercase(), ord);
        self.users.insert(
            ord,
            UserSlot::Live(Box::new(UserRec {
                user,
                created_seq: seq,
                seq,
                changed: vec![],
            })),
        );
        self.live_users += 1;
        Ok(())
    }

    // ----- groups: reads

    pub(crate) fn group_ord(&self, key: &str) -> Option<u64> {
        let id = uuid::Uuid::parse_str(key).ok()?.to_string();
        let ord = *self.group_ids.get(&id)?;
        matches!(self.groups.get(&ord), Some(GroupSlot::Live(_))).then_some(ord)
    }

    pub(crate) fn group(&self, ord: u64) -> Option<&GroupRec> {
        match self.groups.get(&ord)? {
            GroupSlot::Live(r) => Some(r),
            GroupSlot::Gone(_) => None,
        }
    }

    pub(crate) fn next_group(&self, from: u64) -> Option<(u64, &GroupRec)> {
        self.groups.range(from..).find_map(|(o, s)| match s {
            GroupSlot::Live(r) => Some((*o, &**r)),
            GroupSlot::Gone(_) => None,
        })
    }

    pub(crate) fn group_changes(
        &self,
        since: u64,
        until: u64,
        after: u64,
    ) -> impl Iterator<Item = (u64, u64, Change<'_, SimGroup>)> + '_ {
        let lo = since.max(after) + 1;
        (lo <= until)
            .then(|| self.group_changes.range(lo..=until))
            .into_iter()
            .flatten()
            .filter_map(move |(seq, ord)| match self.groups.get(ord)? {
                GroupSlot::Live(r) if r.created_seq > since => {
                    Some((*seq, *ord, Change::New(Cow::Borrowed(&r.group))))
                }
                GroupSlot::Live(r) => {
                    Some((*seq, *ord, Change::Updated(Cow::Borrowed(&r.group), since)))
                }
                GroupSlot::Gone(t) => Some((*seq, *ord, Change::Removed(t))),
            })
    }

    pub(crate) fn member_id(&self, m: MemberRef) -> String {
        match m {
            MemberRef::User(o) => self.user_id(o),
            MemberRef::Group(o) => match self.groups.get(&o) {
                Some(GroupSlot::Live(r)) => r.group.id.clone(),
                Some(GroupSlot::Gone(t)) => t.id.clone(),
                None => String::new(),
            },
        }
    }

    /// Direct and nested members, each once, breadth first.
    pub(crate) fn transitive_members(&self, ord: u64) -> Vec<MemberRef> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from([ord]);
        seen.insert(MemberRef::Group(ord));
        while let Some(g) = queue.pop_front() {
            let Some(rec) = self.group(g) else { continue };
            for m in &rec.members {
                if seen.insert(*m) {
                    out.push(*m);
                    if let MemberRef::Group(c) = m {
                        queue.push_back(*c);
                    }
                }
            }
        }
        out
    }

    /// Groups `m` is a direct member of.
    pub(crate) fn member_of(&self, m: MemberRef) -> Vec<u64> {
        let mut v = self.member_of.get(&m).cloned().unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Resolves a user or group key (id; UPN for users).
    pub(crate) fn resolve(&self, key: &str) -> Option<MemberRef> {
        if let Some(o) = self.group_ord(key) {
            return Some(MemberRef::Group(o));
        }
        self.user_ord(key).map(MemberRef::User)
    }

    pub(crate) fn public_group(&self, rec: &GroupRec) -> SimGroup {
        let mut g = rec.group.clone();
        g.members = rec.members.iter().map(|m| self.member_id(*m)).collect();
        g
    }

    // ----- groups: writes

    fn touch_group(&mut self, ord: u64) -> u64 {
        let seq = self.bump();
        if let Some(GroupSlot::Live(r)) = self.groups.get_mut(&ord) {
            let old = r.seq;
            r.seq = seq;
            self.group_changes.remove(&old);
            self.group_changes.insert(seq, ord);
        }
        seq
    }

    fn change_membership(&mut self, g: u64, m: MemberRef, add: bool) -> Result<(), SimError> {
        let Some(GroupSlot::Live(rec)) = self.groups.get(&g) else {
            return Err(SimError::NotFound("no such group".into()));
        };
        let present = rec.members.contains(&m);
        if add && present {
            return Err(SimError::Conflict(
                "One or more added object references already exist for the following modified properties: 'members'.".into(),
            ));
        }
        if !add && !present {
            return Err(SimError::NotFound("not a member of the group".into()));
        }
        if add && m == MemberRef::Group(g) {
            return Err(SimError::Invalid(
                "a group cannot be a member of itself".into(),
            ));
        }
        let seq = self.touch_group(g);
        if let Some(GroupSlot::Live(rec)) = self.groups.get_mut(&g) {
            if add {
                rec.members.push(m);
            } else {
                rec.members.retain(|x| *x != m);
            }
            rec.member_changes.insert(m, (seq, add));
        }
        let parents = self.member_of.entry(m).or_default();
        if add {
            parents.push(g);
        } else {
            parents.retain(|x| *x != g);
        }
        Ok(())
    }

    pub(crate) fn add_member(&mut self, group: &str, member: &str) -> Result<(), SimError> {
        let g = self
            .group_ord(group)
            .ok_or_else(|| Self::not_found(group))?;
        let m = self
            .resolve(member)
            .ok_or_else(|| Self::not_found(member))?;
        self.change_membership(g, m, true)
    }

    pub(crate) fn remove_member(&mut self, group: &str, member: &str) -> Result<(), SimError> {
        let g = self
            .group_ord(group)
            .ok_or_else(|| Self::not_found(group))?;
        let m = self
            .resolve(member)
            .ok_or_else(|| Self::not_found(member))?;
        self.change_membership(g, m, false)
    }

    pub(crate) fn add_group(&mut self, mut g: SimGroup) -> Result<String, SimError> {
        if g.id.is_empty() {
            g.id = new_guid();
        }
        g.id = uuid::Uuid::parse_str(&g.id)
            .map_err(|_| SimError::Invalid(format!("id '{}' is not a GUID", g.id)))?
            .to_string();
        if self.group_ids.contains_key(&g.id) || self.user_ord_any(&g.id).is_some() {
            return Err(SimError::Conflict(format!(
                "object id {} already exists",
                g.id
            )));
        }
        let members: Vec<MemberRef> = std::mem::take(&mut g.members)
            .iter()
            .map(|k| self.resolve(k).ok_or_else(|| Self::not_found(k)))
            .collect::<Result<_, _>>()?;
        let ord = self.next_group;
        self.next_group += 1;
        let seq = self.bump();
        let id = g.id.clone();
        self.group_ids.insert(id.clone(), ord);
        self.groups.insert(
            ord,
            GroupSlot::Live(Box::new(GroupRec {
                group: g,
                created_seq: seq,
                seq,
                changed: vec![],
                members: Vec::new(),
                member_changes: HashMap::new(),
            })),
        );
        self.group_changes.insert(seq, ord);
        for m in members {
            self.change_membership(ord, m, true)?;
        }
        Ok(id)
    }

    pub(crate) fn update_group(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut SimGroup),
    ) -> Result<(), SimError> {
        let ord = self.group_ord(key).ok_or_else(|| Self::not_found(key))?;
        let old = self.public_group(self.group(ord).ok_or_else(|| Self::not_found(key))?);
        let mut new = old.clone();
        f(&mut new);
        new.id = old.id.clone();
        let want: Vec<MemberRef> = new
            .members
            .iter()
            .map(|k| self.resolve(k).ok_or_else(|| Self::not_found(k)))
            .collect::<Result<_, _>>()?;
        let have = self
            .group(ord)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        let diff = group_diff(&old, &new);
        if !diff.is_empty() {
            let seq = self.touch_group(ord);
            if let Some(GroupSlot::Live(r)) = self.groups.get_mut(&ord) {
                new.members.clear();
                r.group = new;
                for p in diff {
                    match r.changed.iter_mut().find(|(q, _)| *q == p) {
                        Some(e) => e.1 = seq,
                        None => r.changed.push((p, seq)),
                    }
                }
            }
        }
        for m in have.iter().filter(|m| !want.contains(m)) {
            self.change_membership(ord, *m, false)?;
        }
        for m in want.iter().filter(|m| !have.contains(m)) {
            self.change_membership(ord, *m, true)?;
        }
        Ok(())
    }

    pub(crate) fn delete_group(&mut self, key: &str) -> Result<(), SimError> {
        let ord = self.group_ord(key).ok_or_else(|| Self::not_found(key))?;
        let me = MemberRef::Group(ord);
        for p in self.member_of.get(&me).cloned().unwrap_or_default() {
            let _ = self.change_membership(p, me, false);
        }
        let Some(GroupSlot::Live(rec)) = self.groups.remove(&ord) else {
            return Err(Self::not_found(key));
        };
        for m in &rec.members {
            if let Some(v) = self.member_of.get_mut(m) {
                v.retain(|x| *x != ord);
            }
        }
        let seq = self.bump();
        self.group_changes.remove(&rec.seq);
        self.group_changes.insert(seq, ord);
        // Microsoft 365 groups go to the recycle bin; others are gone at once.
        let reason = if rec.group.kind() == crate::model::GroupKind::Microsoft365 {
            "changed"
        } else {
            "deleted"
        };
        self.groups.insert(
            ord,
            GroupSlot::Gone(Tombstone {
                id: rec.group.id.clone(),
                seq,
                reason,
                user: None,
            }),
        );
        Ok(())
    }
}

/// In-process access to a simulated tenant. Cheap to clone; every change is
/// visible to the next Graph read and to delta queries. A tenant not yet
/// generated is generated by its handle's first use.
#[derive(Clone)]
pub struct TenantHandle {
    pub(crate) tenant: Arc<Tenant>,
}

impl TenantHandle {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.tenant.dir()
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.tenant
            .directory()
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's id (a GUID), as in [`crate::SimInfo::tenant_id`].
    pub fn tenant_id(&self) -> String {
        self.tenant.bp.tenant_id.clone()
    }
    /// Whether this tenant has consented to the app; if not, its token
    /// endpoint answers unauthorized_client (AADSTS700016).
    pub fn set_consented(&self, consented: bool) {
        self.tenant.grant.set_consented(consented)
    }
    /// Replaces the set of permissions removed from this tenant's grant
    /// (relative to the configured grant).
    pub fn set_denied_permissions(&self, denied: &[&str]) {
        self.tenant.grant.set_denied(denied)
    }
    /// Application permissions currently granted in this tenant.
    pub fn permissions(&self) -> Vec<String> {
        self.tenant.grant.granted()
    }

    /// All live users in listing order (materializes every user).
    pub fn users(&self) -> Vec<SimUser> {
        let d = self.read();
        let mut out = Vec::with_capacity(d.user_count() as usize);
        let mut from = 0;
        while let Some((ord, u)) = d.next_user(from) {
            out.push(u.into_owned());
            from = ord + 1;
        }
        out
    }
    pub fn user_count(&self) -> usize {
        self.read().user_count() as usize
    }
    /// A user by object id or user principal name.
    pub fn user(&self, id_or_upn: &str) -> Option<SimUser> {
        let d = self.read();
        d.user_ord(id_or_upn)
            .and_then(|o| d.user(o))
            .map(Cow::into_owned)
    }
    /// Adds a user (an empty `id` gets a fresh GUID) and returns its id.
    pub fn add_user(&self, user: SimUser) -> Result<String, SimError> {
        self.write().add_user(user)
    }
    /// Changes any properties of a user (the id cannot change).
    pub fn update_user(
        &self,
        id_or_upn: &str,
        f: impl FnOnce(&mut SimUser),
    ) -> Result<(), SimError> {
        self.write().update_user(id_or_upn, f)
    }
    /// Deletes a user as Entra ID does (soft delete: delta reports
    /// `"@removed": {"reason": "changed"}`); it also leaves its groups.
    pub fn delete_user(&self, id_or_upn: &str) -> Result<(), SimError> {
        self.write().delete_user(id_or_upn, false)
    }
    /// Expires every delta token issued so far, as Graph does after it has kept a token's
    /// change state for a while: the next round from one answers 410 Gone
    /// (`syncStateNotFound`), and the client must read whole again.
    pub fn expire_delta_tokens(&self) {
        self.tenant
            .delta_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    /// Restores a soft-deleted user (delta reports it again, as a new object).
    pub fn restore_user(&self, id: &str) -> Result<(), SimError> {
        self.write().restore_user(id)
    }
    /// Deletes a user permanently, or purges a soft-deleted one
    /// (`"reason": "deleted"`).
    pub fn delete_user_permanently(&self, id_or_upn: &str) -> Result<(), SimError> {
        self.write().delete_user(id_or_upn, true)
    }
    pub fn groups(&self) -> Vec<SimGroup> {
        let d = self.read();
        let mut out = Vec::new();
        let mut from = 0;
        while let Some((ord, rec)) = d.next_group(from) {
            out.push(d.public_group(rec));
            from = ord + 1;
        }
        out
    }
    pub fn group(&self, id: &str) -> Option<SimGroup> {
        let d = self.read();
        d.group_ord(id)
            .and_then(|o| d.group(o))
            .map(|r| d.public_group(r))
    }
    /// Adds a group with its `members` (ids of users or groups); returns its id.
    pub fn add_group(&self, group: SimGroup) -> Result<String, SimError> {
        self.write().add_group(group)
    }
    /// Changes a group's properties and/or its `members` list.
    pub fn update_group(&self, id: &str, f: impl FnOnce(&mut SimGroup)) -> Result<(), SimError> {
        self.write().update_group(id, f)
    }
    pub fn rename_group(&self, id: &str, display_name: &str) -> Result<(), SimError> {
        let name = display_name.to_string();
        self.update_group(id, move |g| g.display_name = name)
    }
    /// Deletes a group (Microsoft 365 groups are soft-deleted: reason "changed").
    pub fn delete_group(&self, id: &str) -> Result<(), SimError> {
        self.write().delete_group(id)
    }
    /// Adds a user (id or UPN) or group (id) to a group.
    pub fn add_member(&self, group_id: &str, member: &str) -> Result<(), SimError> {
        self.write().add_member(group_id, member)
    }
    pub fn remove_member(&self, group_id: &str, member: &str) -> Result<(), SimError> {
        self.write().remove_member(group_id, member)
    }
    pub fn domains(&self) -> Vec<SimDomain> {
        self.read().bp.domains.clone()
    }
    /// Adds a domain to the tenant, as an administrator verifying a new one does.
    pub fn add_domain(&self, domain: SimDomain) {
        let mut d = self.write();
        if domain.is_verified && domain.supports_email() {
            d.bp.mail_domains.push(domain.id.clone());
        }
        d.bp.domains.push(domain);
    }
    /// Verified, Email-capable custom domains; the default domain first.
    pub fn mail_domains(&self) -> Vec<String> {
        self.read().bp.mail_domains.clone()
    }
    pub fn default_domain(&self) -> String {
        self.read().bp.mail_domains[0].clone()
    }
    /// `<name>.onmicrosoft.com`.
    pub fn initial_domain(&self) -> String {
        self.read().bp.initial_domain.clone()
    }
    pub fn organization_name(&self) -> String {
        self.read().bp.org_name.clone()
    }
    pub fn skus(&self) -> Vec<SimSku> {
        self.read().skus.clone()
    }
    /// A new licensed member in the default domain with an address no one
    /// uses yet (not added: pass it to [`TenantHandle::add_user`]).
    pub fn new_member(&self, display_name: &str) -> SimUser {
        let d = self.read();
        let base: String = display_name
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(".")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            .collect();
        let base = if base.is_empty() {
            "user".to_string()
        } else {
            base
        };
        let domain = &d.bp.mail_domains[0];
        // Generated users may hold `first.last` as an alias in any domain, so
        // such names get a `.N` suffix, a shape generation never produces.
        let first = base.split('.').next().unwrap_or("");
        let mut n = usize::from(crate::generate::is_first_name(first));
        loop {
            let local = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let addr = format!("{local}@{domain}");
            if d.user_ord(&addr).is_none() {
                let mut u = SimUser::member(display_name, &addr);
                u.proxy_addresses
                    .push(format!("smtp:{local}@{}", d.bp.initial_domain));
                return u;
            }
            n += 1;
        }
    }
    /// The current change sequence number (grows with every change).
    pub fn change_seq(&self) -> u64 {
        self.read().seq
    }
}
