//! What a source read: plain records with the Graph property names, source-neutral enough
//! that an LDAP source can fill them too.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Text that many users of a source share (a licence's SKU, a department, a job title, a
/// manager's id, `Member`): one copy however many users hold it.
pub type Shared = Arc<str>;

/// Hands out one [`Shared`] copy of each distinct text. A read of 1,000,000 users holds a
/// few thousand departments, titles and SKUs; as a `String` each user held its own (about
/// 150 MB at that size).
#[derive(Debug, Default)]
pub struct Interner(HashSet<Shared>);

impl Interner {
    pub fn text(&mut self, text: &str) -> Shared {
        if let Some(shared) = self.0.get(text) {
            return shared.clone();
        }
        let shared: Shared = text.into();
        self.0.insert(shared.clone());
        shared
    }

    pub fn option(&mut self, text: Option<String>) -> Option<Shared> {
        text.map(|t| self.text(&t))
    }
}

/// One user object of the source, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceUser {
    /// The source's immutable object id (Graph `id`).
    pub id: String,
    pub user_principal_name: Option<String>,
    pub mail: Option<String>,
    /// Graph `proxyAddresses`: `SMTP:primary`, `smtp:alias`, `SIP:...`, `X500:...`.
    pub proxy_addresses: Vec<String>,
    pub display_name: Option<String>,
    /// Given names and surnames repeat across a tenant: one copy of each is held.
    pub given_name: Option<Shared>,
    pub surname: Option<Shared>,
    pub account_enabled: Option<bool>,
    /// SKU ids of the assigned licences.
    pub assigned_licenses: Vec<Shared>,
    /// `Member` or `Guest`.
    pub user_type: Option<Shared>,
    pub company_name: Option<Shared>,
    pub job_title: Option<Shared>,
    pub department: Option<Shared>,
    pub mail_enabled: Option<bool>,
    /// `mailboxSettings.userPurpose` (`user`, `shared`, `room`, `equipment`, ...) when it was read.
    pub user_purpose: Option<Shared>,
    /// Object id of the user's manager, when managers were read.
    pub manager_id: Option<Shared>,
    /// Ids of the groups the user belongs to, directly or through nested groups, when
    /// memberships were read (filters on `memberOf`, selected groups, group options).
    #[serde(default)]
    pub member_of: Vec<String>,
}

impl SourceUser {
    pub fn is_guest(&self) -> bool {
        self.user_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("guest"))
    }

    pub fn is_licensed(&self) -> bool {
        !self.assigned_licenses.is_empty()
    }

    /// A missing `accountEnabled` counts as enabled: Graph omits it only when not selected.
    pub fn is_enabled(&self) -> bool {
        self.account_enabled.unwrap_or(true)
    }
}

/// Sorts `users` by id, and `beside` (one item per user) with them: no copy of either is
/// made (at 1,000,000 users, each copy of the users was 400 MB).
pub fn sort_users_beside<T>(users: &mut [SourceUser], beside: &mut [T]) {
    assert_eq!(users.len(), beside.len(), "one item beside each user");
    let mut order: Vec<usize> = (0..users.len()).collect();
    order.sort_unstable_by(|&a, &b| users[a].id.cmp(&users[b].id));
    crate::order::put_in_order(users, order.clone());
    crate::order::put_in_order(beside, order);
}

/// One group object of the source, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceGroup {
    pub id: String,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    pub mail_enabled: bool,
    pub security_enabled: bool,
    /// Graph `groupTypes`: contains `Unified` for a Microsoft 365 group.
    pub group_types: Vec<String>,
    pub proxy_addresses: Vec<String>,
    /// Object ids of the direct members, when members were read.
    pub member_ids: Vec<String>,
}

impl SourceGroup {
    pub fn is_microsoft365(&self) -> bool {
        self.group_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case("unified"))
    }
}

/// One domain of the source's tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDomain {
    pub name: String,
    pub is_verified: bool,
    pub is_initial: bool,
    /// Graph `supportedServices`, e.g. `Email`, `OfficeCommunicationsOnline`.
    pub supported_services: Vec<String>,
}

/// Everything one full read of a source returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSnapshot {
    pub users: Vec<SourceUser>,
    pub groups: Vec<SourceGroup>,
    pub domains: Vec<SourceDomain>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_held_once() {
        let mut texts = Interner::default();
        let a = texts.text("Sales");
        let b = texts.option(Some("Sales".to_string())).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*texts.text("Support"), "Support");
        assert!(!Arc::ptr_eq(&a, &texts.text("sales")), "case is kept");
    }

    #[test]
    fn users_are_sorted_with_what_stands_beside_them() {
        let user = |id: &str| SourceUser {
            id: id.into(),
            ..Default::default()
        };
        let mut users = vec![user("c"), user("a"), user("b")];
        let mut beside = vec![3, 1, 2];
        sort_users_beside(&mut users, &mut beside);
        let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(beside, [1, 2, 3]);
    }
}
