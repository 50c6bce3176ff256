//! Typed Graph objects. Every field is optional or defaulted (a JSON `null`
//! counts as missing) and unknown fields are ignored, so a Graph answer with
//! more, fewer or null properties never fails to parse.

use serde::{Deserialize, Deserializer, Serialize};

/// The user properties a directory sync reads (`$select` of [`crate::GraphClient::list_users`]).
pub const USER_PROPERTIES: &[&str] = &[
    "id",
    "userPrincipalName",
    "mail",
    "proxyAddresses",
    "displayName",
    "givenName",
    "surname",
    "accountEnabled",
    "assignedLicenses",
    "userType",
    "companyName",
    "jobTitle",
    "department",
];

/// The group properties a directory sync reads.
pub const GROUP_PROPERTIES: &[&str] = &[
    "id",
    "displayName",
    "mail",
    "mailEnabled",
    "securityEnabled",
    "groupTypes",
    "proxyAddresses",
    "mailNickname",
];

/// Deserialises `null` as `T::default()`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A `microsoft.graph.user`. Serialised (the source mirror keeps users so) without the
/// properties it lacks: they read back as absent, the same as `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    /// Object id (GUID).
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    /// e.g. `["SMTP:primary@contoso.com", "smtp:alias@contoso.com"]`.
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub proxy_addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_enabled: Option<bool>,
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub assigned_licenses: Vec<AssignedLicense>,
    /// `Member` or `Guest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_enabled: Option<bool>,
    /// The manager, when read with `$expand=manager($select=id)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<DirectoryObject>,
}

/// A license assigned to a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AssignedLicense {
    /// The SKU's GUID (see [`SubscribedSku::sku_id`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku_id: Option<String>,
    /// Service plan GUIDs disabled for this user.
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub disabled_plans: Vec<String>,
}

/// A `microsoft.graph.group`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Group {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    pub mail_enabled: Option<bool>,
    pub security_enabled: Option<bool>,
    /// e.g. `["Unified"]` for Microsoft 365 groups, `["DynamicMembership"]`.
    #[serde(deserialize_with = "null_default")]
    pub group_types: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub proxy_addresses: Vec<String>,
    pub mail_nickname: Option<String>,
    /// Member changes in a groups delta round (`members@delta`; only when
    /// `members` is selected). Empty outside delta queries.
    #[serde(
        rename = "members@delta",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub members_delta: Vec<MemberDelta>,
}

/// One entry of a group's `members@delta`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberDelta {
    /// e.g. `#microsoft.graph.user`.
    #[serde(rename = "@odata.type")]
    pub odata_type: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Present when the member was removed from the group.
    #[serde(rename = "@removed", skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
}

impl MemberDelta {
    /// Whether the member was removed from the group (rather than added).
    pub fn is_removed(&self) -> bool {
        self.removed.is_some()
    }
}

/// The `@removed` annotation of delta queries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Removed {
    /// `changed` (soft-deleted, restorable) or `deleted` (permanently deleted).
    #[serde(deserialize_with = "null_default")]
    pub reason: String,
}

/// A `microsoft.graph.directoryObject` (e.g. a group member).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DirectoryObject {
    /// e.g. `#microsoft.graph.user`, `#microsoft.graph.group`.
    #[serde(rename = "@odata.type")]
    pub odata_type: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    pub display_name: Option<String>,
}

impl DirectoryObject {
    /// The object type without the OData prefix, e.g. `user`, `group`,
    /// `device`, `orgContact`, `servicePrincipal`.
    pub fn kind(&self) -> Option<&str> {
        self.odata_type.as_deref().map(|t| {
            t.trim_start_matches('#')
                .trim_start_matches("microsoft.graph.")
        })
    }
}

/// A `microsoft.graph.domain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Domain {
    /// The domain name, e.g. `contoso.com`.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    pub is_verified: Option<bool>,
    pub is_default: Option<bool>,
    pub is_initial: Option<bool>,
    /// e.g. `["Email", "OfficeCommunicationsOnline"]`.
    #[serde(deserialize_with = "null_default")]
    pub supported_services: Vec<String>,
    /// `Managed` or `Federated`.
    pub authentication_type: Option<String>,
}

/// A `microsoft.graph.organization` (the tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Organization {
    /// The tenant id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    pub display_name: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub verified_domains: Vec<VerifiedDomain>,
}

/// One of the organization's verified domains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VerifiedDomain {
    pub name: Option<String>,
    pub is_default: Option<bool>,
    pub is_initial: Option<bool>,
    /// e.g. `Email, OfficeCommunicationsOnline`.
    pub capabilities: Option<String>,
    /// `Managed` or `Federated`.
    #[serde(rename = "type")]
    pub domain_type: Option<String>,
}

/// A `microsoft.graph.subscribedSku` (a license the tenant bought).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscribedSku {
    /// The SKU's GUID.
    pub sku_id: Option<String>,
    /// e.g. `ENTERPRISEPACK`.
    pub sku_part_number: Option<String>,
    pub consumed_units: Option<i64>,
    #[serde(deserialize_with = "null_default")]
    pub prepaid_units: PrepaidUnits,
    /// `Enabled`, `Warning`, `Suspended`, `Deleted`, `LockedOut`.
    pub capability_status: Option<String>,
    /// `User` or `Company`.
    pub applies_to: Option<String>,
}

/// License unit counts of a [`SubscribedSku`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PrepaidUnits {
    pub enabled: Option<i64>,
    pub suspended: Option<i64>,
    pub warning: Option<i64>,
    pub locked_out: Option<i64>,
}

/// Result of a delta round: the changes and the link for the next round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta<T> {
    /// Changes in the order Graph returned them.
    pub items: Vec<DeltaItem<T>>,
    /// The `@odata.deltaLink` to pass as `from` next time.
    pub delta_link: String,
}

/// One change of a delta round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaItem<T> {
    /// Created or updated (only changed properties may be present in an
    /// incremental round; a full round returns all selected properties).
    Changed(T),
    /// Deleted: `reason` is `changed` (soft-deleted, restorable) or `deleted`
    /// (permanently).
    Removed { id: String, reason: String },
}

impl<T> DeltaItem<T> {
    /// The changed object, if this is not a removal.
    pub fn changed(&self) -> Option<&T> {
        match self {
            DeltaItem::Changed(t) => Some(t),
            DeltaItem::Removed { .. } => None,
        }
    }
}

/// Objects with a directory object id.
pub(crate) trait HasId {
    fn object_id(&self) -> &str;
}

impl HasId for User {
    fn object_id(&self) -> &str {
        &self.id
    }
}

impl HasId for serde_json::Map<String, serde_json::Value> {
    fn object_id(&self) -> &str {
        self.get("id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }
}

impl HasId for Group {
    fn object_id(&self) -> &str {
        &self.id
    }
}

/// A raw delta entry as Graph sends it.
#[derive(Deserialize)]
pub(crate) struct DeltaEntry<T> {
    #[serde(rename = "@removed", default)]
    pub removed: Option<Removed>,
    #[serde(flatten)]
    pub item: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_user() {
        let u: User = serde_json::from_str(
            r#"{"id":"1","proxyAddresses":null,"assignedLicenses":[{"skuId":"s","disabledPlans":null}],
                "accountEnabled":true,"unknown":{"x":1},"mail":null,"businessPhones":[]}"#,
        )
        .unwrap();
        assert_eq!(u.id, "1");
        assert!(u.proxy_addresses.is_empty());
        assert_eq!(u.assigned_licenses[0].sku_id.as_deref(), Some("s"));
        assert_eq!(u.account_enabled, Some(true));
        let u: User = serde_json::from_str("{}").unwrap();
        assert_eq!(u, User::default());
    }

    #[test]
    fn group_delta_entry() {
        let e: DeltaEntry<Group> = serde_json::from_str(
            r##"{"id":"g","displayName":"G","members@delta":[{"@odata.type":"#microsoft.graph.user","id":"u1"},{"@odata.type":"#microsoft.graph.user","id":"u2","@removed":{"reason":"deleted"}}]}"##,
        )
        .unwrap();
        assert!(e.removed.is_none());
        assert_eq!(e.item.members_delta.len(), 2);
        assert!(e.item.members_delta[1].is_removed());
        let e: DeltaEntry<User> =
            serde_json::from_str(r#"{"id":"u","@removed":{"reason":"changed"}}"#).unwrap();
        assert_eq!(e.removed.unwrap().reason, "changed");
    }

    #[test]
    fn directory_object_kind() {
        let o: DirectoryObject =
            serde_json::from_str(r##"{"@odata.type":"#microsoft.graph.group","id":"g"}"##).unwrap();
        assert_eq!(o.kind(), Some("group"));
    }

    #[test]
    fn sku() {
        let s: SubscribedSku = serde_json::from_str(
            r#"{"skuId":"x","skuPartNumber":"ENTERPRISEPACK","consumedUnits":3,"prepaidUnits":{"enabled":25,"suspended":0,"warning":0,"lockedOut":0}}"#,
        )
        .unwrap();
        assert_eq!(s.prepaid_units.enabled, Some(25));
        assert_eq!(s.consumed_units, Some(3));
    }
}
