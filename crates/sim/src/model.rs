//! The public directory object types (users, groups, domains, SKUs) and
//! their Graph JSON shapes: property tables, `$select` resolution and the
//! streaming serializers used by every endpoint.

use crate::util::{Obj, iso_time, new_guid, unix_now};
use serde::{Deserialize, Serialize};

/// `userType` of a user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UserType {
    #[default]
    Member,
    Guest,
}

impl UserType {
    pub fn as_str(self) -> &'static str {
        match self {
            UserType::Member => "Member",
            UserType::Guest => "Guest",
        }
    }
}

/// Exchange Online's `mailboxSettings.userPurpose`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UserPurpose {
    #[default]
    User,
    Shared,
    Room,
    Equipment,
}

impl UserPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            UserPurpose::User => "user",
            UserPurpose::Shared => "shared",
            UserPurpose::Room => "room",
            UserPurpose::Equipment => "equipment",
        }
    }
}

/// SKU id of Microsoft 365 E3 (`SPE_E3`); every generated tenant owns it, so
/// helpers can hand out a licence without knowing the tenant.
pub const SKU_SPE_E3: &str = "05e9a617-0261-4cee-bb44-138d3ef5d965";

/// A user as the directory holds it. Field names mirror Graph's properties.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimUser {
    /// Object id (GUID). Left empty, `add_user` assigns one.
    pub id: String,
    pub user_principal_name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    /// Primary SMTP address; `None` for users without a mailbox.
    pub mail: Option<String>,
    pub mail_nickname: Option<String>,
    /// `SMTP:` primary (exactly one when mail-enabled), `smtp:` aliases, `SIP:`, `X500:`.
    pub proxy_addresses: Vec<String>,
    pub other_mails: Vec<String>,
    pub account_enabled: bool,
    pub user_type: UserType,
    /// SKU ids (`assignedLicenses[].skuId`; `disabledPlans` is always empty).
    pub assigned_licenses: Vec<String>,
    pub company_name: Option<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub office_location: Option<String>,
    pub business_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub preferred_language: Option<String>,
    pub usage_location: Option<String>,
    pub employee_id: Option<String>,
    pub created_date_time: String,
    /// Guests: "Accepted" or "PendingAcceptance".
    pub external_user_state: Option<String>,
    /// Guests: "Invitation".
    pub creation_type: Option<String>,
    /// `None`: no Exchange Online mailbox, so `/mailboxSettings` answers 404
    /// MailboxNotEnabledForRESTAPI as Exchange does.
    pub user_purpose: Option<UserPurpose>,
    /// Object id of the manager (`/users/{id}/manager`).
    pub manager_id: Option<String>,
}

fn split_name(display_name: &str) -> (Option<String>, Option<String>) {
    match display_name.split_once(' ') {
        Some((g, s)) => (Some(g.to_string()), Some(s.to_string())),
        None => (Some(display_name.to_string()), None),
    }
}

impl SimUser {
    /// A licensed (Microsoft 365 E3), enabled member with a user mailbox whose
    /// UPN, `mail` and `SMTP:` primary are all `address`.
    pub fn member(display_name: &str, address: &str) -> SimUser {
        let (given, surname) = split_name(display_name);
        let local = address.split('@').next().unwrap_or(address).to_string();
        SimUser {
            id: new_guid(),
            user_principal_name: address.to_string(),
            display_name: display_name.to_string(),
            given_name: given,
            surname,
            mail: Some(address.to_string()),
            mail_nickname: Some(local),
            proxy_addresses: vec![format!("SMTP:{address}")],
            account_enabled: true,
            user_type: UserType::Member,
            assigned_licenses: vec![SKU_SPE_E3.to_string()],
            preferred_language: Some("en-US".into()),
            usage_location: Some("US".into()),
            created_date_time: iso_time(unix_now(), "Z"),
            user_purpose: Some(UserPurpose::User),
            ..SimUser::default()
        }
    }

    /// A shared mailbox as Exchange creates it: disabled, unlicensed.
    pub fn shared_mailbox(display_name: &str, address: &str) -> SimUser {
        SimUser::resource(display_name, address, UserPurpose::Shared)
    }

    /// A room or equipment mailbox (disabled, unlicensed).
    pub fn resource(display_name: &str, address: &str, purpose: UserPurpose) -> SimUser {
        SimUser {
            given_name: None,
            surname: None,
            account_enabled: false,
            assigned_licenses: vec![],
            user_purpose: Some(purpose),
            ..SimUser::member(display_name, address)
        }
    }

    /// An invited guest: UPN `local_ext.domain#EXT#@{initial_domain}`.
    pub fn guest(display_name: &str, external_mail: &str, initial_domain: &str) -> SimUser {
        let upn = format!("{}#EXT#@{initial_domain}", external_mail.replace('@', "_"));
        SimUser {
            user_principal_name: upn,
            user_type: UserType::Guest,
            assigned_licenses: vec![],
            other_mails: vec![external_mail.to_string()],
            external_user_state: Some("Accepted".into()),
            creation_type: Some("Invitation".into()),
            user_purpose: None,
            usage_location: None,
            ..SimUser::member(display_name, external_mail)
        }
    }

    /// Adds an `smtp:` alias.
    pub fn with_alias(mut self, address: &str) -> SimUser {
        self.proxy_addresses.push(format!("smtp:{address}"));
        self
    }

    /// Uses a UPN different from the primary SMTP address.
    pub fn with_upn(mut self, upn: &str) -> SimUser {
        self.user_principal_name = upn.to_string();
        self
    }

    /// The primary SMTP address from `proxyAddresses` (the `SMTP:` entry).
    pub fn primary_smtp(&self) -> Option<&str> {
        self.proxy_addresses
            .iter()
            .find_map(|p| p.strip_prefix("SMTP:"))
    }
}

/// What kind of group a [`SimGroup`] is, derived from its flags as Graph
/// clients must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupKind {
    Distribution,
    Microsoft365,
    MailEnabledSecurity,
    Security,
}

/// A group. `members` holds the object ids of direct members (users or groups).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimGroup {
    pub id: String,
    pub display_name: String,
    pub description: Option<String>,
    pub mail: Option<String>,
    pub mail_nickname: String,
    pub mail_enabled: bool,
    pub security_enabled: bool,
    pub group_types: Vec<String>,
    pub proxy_addresses: Vec<String>,
    pub visibility: Option<String>,
    pub created_date_time: String,
    pub members: Vec<String>,
}

impl SimGroup {
    fn mail_group(display_name: &str, mail: &str) -> SimGroup {
        let nick = mail.split('@').next().unwrap_or(mail).to_string();
        SimGroup {
            id: new_guid(),
            display_name: display_name.to_string(),
            mail: Some(mail.to_string()),
            mail_nickname: nick,
            mail_enabled: true,
            proxy_addresses: vec![format!("SMTP:{mail}")],
            created_date_time: iso_time(unix_now(), "Z"),
            ..SimGroup::default()
        }
    }
    /// A distribution list: mail-enabled, not security-enabled, no group types.
    pub fn distribution_list(display_name: &str, mail: &str) -> SimGroup {
        SimGroup::mail_group(display_name, mail)
    }
    /// A Microsoft 365 group (`groupTypes: ["Unified"]`).
    pub fn microsoft365(display_name: &str, mail: &str) -> SimGroup {
        SimGroup {
            group_types: vec!["Unified".into()],
            visibility: Some("Private".into()),
            ..SimGroup::mail_group(display_name, mail)
        }
    }
    /// A mail-enabled security group.
    pub fn mail_enabled_security(display_name: &str, mail: &str) -> SimGroup {
        SimGroup {
            security_enabled: true,
            ..SimGroup::mail_group(display_name, mail)
        }
    }
    /// A plain security group: no mail.
    pub fn security(display_name: &str) -> SimGroup {
        SimGroup {
            id: new_guid(),
            display_name: display_name.to_string(),
            mail_nickname: crate::util::new_guid()[..8].to_string(),
            security_enabled: true,
            created_date_time: iso_time(unix_now(), "Z"),
            ..SimGroup::default()
        }
    }
    pub fn with_members(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> SimGroup {
        self.members.extend(ids.into_iter().map(Into::into));
        self
    }
    pub fn kind(&self) -> GroupKind {
        if self
            .group_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case("Unified"))
        {
            GroupKind::Microsoft365
        } else if self.mail_enabled && self.security_enabled {
            GroupKind::MailEnabledSecurity
        } else if self.mail_enabled {
            GroupKind::Distribution
        } else {
            GroupKind::Security
        }
    }
}

/// A domain of the tenant (`/domains`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimDomain {
    pub id: String,
    pub authentication_type: String,
    pub is_default: bool,
    pub is_initial: bool,
    pub is_verified: bool,
    pub is_root: bool,
    pub supported_services: Vec<String>,
}

impl SimDomain {
    pub fn supports_email(&self) -> bool {
        self.supported_services.iter().any(|s| s == "Email")
    }
}

/// A subscribed SKU. `consumed_units` is kept equal to the number of users
/// the SKU is assigned to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimSku {
    pub sku_id: String,
    pub sku_part_number: String,
    pub capability_status: String,
    pub applies_to: String,
    pub consumed_units: i64,
    pub prepaid_enabled: i64,
    pub prepaid_suspended: i64,
    pub prepaid_warning: i64,
    pub prepaid_locked_out: i64,
    /// (servicePlanId, servicePlanName)
    pub service_plans: Vec<(String, String)>,
}

// ---------------------------------------------------------------------------
// Property tables

/// A user property that can be named in `$select`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum UP {
    Id,
    AccountEnabled,
    AssignedLicenses,
    BusinessPhones,
    CompanyName,
    CreatedDateTime,
    CreationType,
    Department,
    DisplayName,
    EmployeeId,
    ExternalUserState,
    GivenName,
    JobTitle,
    Mail,
    MailNickname,
    MobilePhone,
    OfficeLocation,
    OtherMails,
    PreferredLanguage,
    ProxyAddresses,
    Surname,
    UsageLocation,
    UserPrincipalName,
    UserType,
    /// The manager, in delta rounds only (`$select=manager` there): `manager@delta`.
    Manager,
    /// A real Graph property the simulator does not model: null.
    Null(&'static str),
    /// A real collection-valued property the simulator does not model: [].
    Empty(&'static str),
}

const USER_PROPS: &[(&str, UP)] = &[
    ("id", UP::Id),
    ("accountEnabled", UP::AccountEnabled),
    ("assignedLicenses", UP::AssignedLicenses),
    ("businessPhones", UP::BusinessPhones),
    ("companyName", UP::CompanyName),
    ("createdDateTime", UP::CreatedDateTime),
    ("creationType", UP::CreationType),
    ("department", UP::Department),
    ("displayName", UP::DisplayName),
    ("employeeId", UP::EmployeeId),
    ("externalUserState", UP::ExternalUserState),
    ("givenName", UP::GivenName),
    ("jobTitle", UP::JobTitle),
    ("mail", UP::Mail),
    ("mailNickname", UP::MailNickname),
    ("mobilePhone", UP::MobilePhone),
    ("officeLocation", UP::OfficeLocation),
    ("otherMails", UP::OtherMails),
    ("preferredLanguage", UP::PreferredLanguage),
    ("proxyAddresses", UP::ProxyAddresses),
    ("surname", UP::Surname),
    ("usageLocation", UP::UsageLocation),
    ("userPrincipalName", UP::UserPrincipalName),
    ("userType", UP::UserType),
    ("ageGroup", UP::Null("ageGroup")),
    ("city", UP::Null("city")),
    (
        "consentProvidedForMinor",
        UP::Null("consentProvidedForMinor"),
    ),
    ("country", UP::Null("country")),
    ("deletedDateTime", UP::Null("deletedDateTime")),
    ("employeeHireDate", UP::Null("employeeHireDate")),
    ("employeeType", UP::Null("employeeType")),
    (
        "externalUserStateChangeDateTime",
        UP::Null("externalUserStateChangeDateTime"),
    ),
    ("faxNumber", UP::Null("faxNumber")),
    (
        "lastPasswordChangeDateTime",
        UP::Null("lastPasswordChangeDateTime"),
    ),
    (
        "legalAgeGroupClassification",
        UP::Null("legalAgeGroupClassification"),
    ),
    (
        "onPremisesDistinguishedName",
        UP::Null("onPremisesDistinguishedName"),
    ),
    ("onPremisesDomainName", UP::Null("onPremisesDomainName")),
    ("onPremisesImmutableId", UP::Null("onPremisesImmutableId")),
    (
        "onPremisesLastSyncDateTime",
        UP::Null("onPremisesLastSyncDateTime"),
    ),
    (
        "onPremisesSamAccountName",
        UP::Null("onPremisesSamAccountName"),
    ),
    (
        "onPremisesSecurityIdentifier",
        UP::Null("onPremisesSecurityIdentifier"),
    ),
    ("onPremisesSyncEnabled", UP::Null("onPremisesSyncEnabled")),
    (
        "onPremisesUserPrincipalName",
        UP::Null("onPremisesUserPrincipalName"),
    ),
    ("passwordPolicies", UP::Null("passwordPolicies")),
    ("postalCode", UP::Null("postalCode")),
    ("preferredDataLocation", UP::Null("preferredDataLocation")),
    ("showInAddressList", UP::Null("showInAddressList")),
    ("state", UP::Null("state")),
    ("streetAddress", UP::Null("streetAddress")),
    ("assignedPlans", UP::Empty("assignedPlans")),
    ("identities", UP::Empty("identities")),
    ("imAddresses", UP::Empty("imAddresses")),
    (
        "licenseAssignmentStates",
        UP::Empty("licenseAssignmentStates"),
    ),
    ("provisionedPlans", UP::Empty("provisionedPlans")),
];

/// Graph's default user projection when no `$select` is given.
pub(crate) const USER_DEFAULT: &[UP] = &[
    UP::BusinessPhones,
    UP::DisplayName,
    UP::GivenName,
    UP::JobTitle,
    UP::Mail,
    UP::MobilePhone,
    UP::OfficeLocation,
    UP::PreferredLanguage,
    UP::Surname,
    UP::UserPrincipalName,
    UP::Id,
];

pub(crate) fn user_prop(name: &str) -> Option<UP> {
    USER_PROPS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, p)| *p)
}

/// Properties whose values differ between `a` and `b` (for delta).
pub(crate) fn user_diff(a: &SimUser, b: &SimUser) -> Vec<UP> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident => $p:expr),* $(,)?) => { $( if a.$f != b.$f { out.push($p); } )* };
    }
    cmp!(
        account_enabled => UP::AccountEnabled,
        assigned_licenses => UP::AssignedLicenses,
        business_phones => UP::BusinessPhones,
        company_name => UP::CompanyName,
        creation_type => UP::CreationType,
        department => UP::Department,
        display_name => UP::DisplayName,
        employee_id => UP::EmployeeId,
        external_user_state => UP::ExternalUserState,
        given_name => UP::GivenName,
        job_title => UP::JobTitle,
        mail => UP::Mail,
        mail_nickname => UP::MailNickname,
        mobile_phone => UP::MobilePhone,
        office_location => UP::OfficeLocation,
        other_mails => UP::OtherMails,
        preferred_language => UP::PreferredLanguage,
        proxy_addresses => UP::ProxyAddresses,
        surname => UP::Surname,
        usage_location => UP::UsageLocation,
        user_principal_name => UP::UserPrincipalName,
        user_type => UP::UserType,
        manager_id => UP::Manager,
    );
    out
}

pub(crate) fn write_user_prop(o: &mut Obj<'_>, u: &SimUser, p: UP) {
    match p {
        UP::Id => o.str("id", &u.id),
        UP::AccountEnabled => o.bool("accountEnabled", u.account_enabled),
        UP::AssignedLicenses => {
            let buf = o.nested("assignedLicenses");
            buf.push('[');
            for (i, sku) in u.assigned_licenses.iter().enumerate() {
                if i > 0 {
                    buf.push(',');
                }
                buf.push_str("{\"disabledPlans\":[],\"skuId\":");
                crate::util::push_json_str(buf, sku);
                buf.push('}');
            }
            buf.push(']');
        }
        UP::BusinessPhones => o.strs("businessPhones", &u.business_phones),
        UP::CompanyName => o.opt_str("companyName", u.company_name.as_deref()),
        UP::CreatedDateTime => o.str("createdDateTime", &u.created_date_time),
        UP::CreationType => o.opt_str("creationType", u.creation_type.as_deref()),
        UP::Department => o.opt_str("department", u.department.as_deref()),
        UP::DisplayName => o.str("displayName", &u.display_name),
        UP::EmployeeId => o.opt_str("employeeId", u.employee_id.as_deref()),
        UP::ExternalUserState => o.opt_str("externalUserState", u.external_user_state.as_deref()),
        UP::GivenName => o.opt_str("givenName", u.given_name.as_deref()),
        UP::JobTitle => o.opt_str("jobTitle", u.job_title.as_deref()),
        UP::Mail => o.opt_str("mail", u.mail.as_deref()),
        UP::MailNickname => o.opt_str("mailNickname", u.mail_nickname.as_deref()),
        UP::MobilePhone => o.opt_str("mobilePhone", u.mobile_phone.as_deref()),
        UP::OfficeLocation => o.opt_str("officeLocation", u.office_location.as_deref()),
        UP::OtherMails => o.strs("otherMails", &u.other_mails),
        UP::PreferredLanguage => o.opt_str("preferredLanguage", u.preferred_language.as_deref()),
        UP::ProxyAddresses => o.strs("proxyAddresses", &u.proxy_addresses),
        UP::Surname => o.opt_str("surname", u.surname.as_deref()),
        UP::UsageLocation => o.opt_str("usageLocation", u.usage_location.as_deref()),
        UP::UserPrincipalName => o.str("userPrincipalName", &u.user_principal_name),
        UP::UserType => o.str("userType", u.user_type.as_str()),
        UP::Manager => {
            // As Graph's users delta: the manager's id, or an empty list when it has none.
            let buf = o.nested("manager@delta");
            buf.push('[');
            if let Some(m) = &u.manager_id {
                buf.push_str("{\"@odata.type\":\"#microsoft.graph.user\",\"id\":");
                crate::util::push_json_str(buf, m);
                buf.push('}');
            }
            buf.push(']');
        }
        UP::Null(n) => o.null(n),
        UP::Empty(n) => o.raw(n, "[]"),
    }
}

/// A group property that can be named in `$select`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum GP {
    Id,
    CreatedDateTime,
    Description,
    DisplayName,
    GroupTypes,
    Mail,
    MailEnabled,
    MailNickname,
    ProxyAddresses,
    SecurityEnabled,
    Visibility,
    Null(&'static str),
    Empty(&'static str),
}

const GROUP_PROPS: &[(&str, GP)] = &[
    ("id", GP::Id),
    ("deletedDateTime", GP::Null("deletedDateTime")),
    ("classification", GP::Null("classification")),
    ("createdDateTime", GP::CreatedDateTime),
    ("creationOptions", GP::Empty("creationOptions")),
    ("description", GP::Description),
    ("displayName", GP::DisplayName),
    ("expirationDateTime", GP::Null("expirationDateTime")),
    ("groupTypes", GP::GroupTypes),
    ("isAssignableToRole", GP::Null("isAssignableToRole")),
    ("mail", GP::Mail),
    ("mailEnabled", GP::MailEnabled),
    ("mailNickname", GP::MailNickname),
    ("membershipRule", GP::Null("membershipRule")),
    (
        "membershipRuleProcessingState",
        GP::Null("membershipRuleProcessingState"),
    ),
    ("onPremisesDomainName", GP::Null("onPremisesDomainName")),
    (
        "onPremisesLastSyncDateTime",
        GP::Null("onPremisesLastSyncDateTime"),
    ),
    ("onPremisesNetBiosName", GP::Null("onPremisesNetBiosName")),
    (
        "onPremisesSamAccountName",
        GP::Null("onPremisesSamAccountName"),
    ),
    (
        "onPremisesSecurityIdentifier",
        GP::Null("onPremisesSecurityIdentifier"),
    ),
    ("onPremisesSyncEnabled", GP::Null("onPremisesSyncEnabled")),
    ("preferredDataLocation", GP::Null("preferredDataLocation")),
    ("preferredLanguage", GP::Null("preferredLanguage")),
    ("proxyAddresses", GP::ProxyAddresses),
    ("renewedDateTime", GP::Null("renewedDateTime")),
    (
        "resourceBehaviorOptions",
        GP::Empty("resourceBehaviorOptions"),
    ),
    (
        "resourceProvisioningOptions",
        GP::Empty("resourceProvisioningOptions"),
    ),
    ("securityEnabled", GP::SecurityEnabled),
    ("securityIdentifier", GP::Null("securityIdentifier")),
    ("theme", GP::Null("theme")),
    ("visibility", GP::Visibility),
    (
        "onPremisesProvisioningErrors",
        GP::Empty("onPremisesProvisioningErrors"),
    ),
    (
        "serviceProvisioningErrors",
        GP::Empty("serviceProvisioningErrors"),
    ),
];

/// Graph's default group projection: every non-navigation property.
pub(crate) fn group_default() -> Vec<GP> {
    GROUP_PROPS.iter().map(|(_, p)| *p).collect()
}

pub(crate) fn group_prop(name: &str) -> Option<GP> {
    GROUP_PROPS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, p)| *p)
}

pub(crate) fn group_diff(a: &SimGroup, b: &SimGroup) -> Vec<GP> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident => $p:expr),* $(,)?) => { $( if a.$f != b.$f { out.push($p); } )* };
    }
    cmp!(
        description => GP::Description,
        display_name => GP::DisplayName,
        group_types => GP::GroupTypes,
        mail => GP::Mail,
        mail_enabled => GP::MailEnabled,
        mail_nickname => GP::MailNickname,
        proxy_addresses => GP::ProxyAddresses,
        security_enabled => GP::SecurityEnabled,
        visibility => GP::Visibility,
    );
    out
}

pub(crate) fn write_group_prop(o: &mut Obj<'_>, g: &SimGroup, p: GP) {
    match p {
        GP::Id => o.str("id", &g.id),
        GP::CreatedDateTime => o.str("createdDateTime", &g.created_date_time),
        GP::Description => o.opt_str("description", g.description.as_deref()),
        GP::DisplayName => o.str("displayName", &g.display_name),
        GP::GroupTypes => o.strs("groupTypes", &g.group_types),
        GP::Mail => o.opt_str("mail", g.mail.as_deref()),
        GP::MailEnabled => o.bool("mailEnabled", g.mail_enabled),
        GP::MailNickname => o.str("mailNickname", &g.mail_nickname),
        GP::ProxyAddresses => o.strs("proxyAddresses", &g.proxy_addresses),
        GP::SecurityEnabled => o.bool("securityEnabled", g.security_enabled),
        GP::Visibility => o.opt_str("visibility", g.visibility.as_deref()),
        GP::Null(n) => o.null(n),
        GP::Empty(n) => o.raw(n, "[]"),
    }
}

/// Time zone shown in mailbox settings, from the usage location.
pub(crate) fn time_zone_for(u: &SimUser) -> &'static str {
    match u.usage_location.as_deref() {
        Some("GB") => "GMT Standard Time",
        Some("DE") => "W. Europe Standard Time",
        Some("US") if u.id.as_bytes().first().is_some_and(|b| b % 2 == 0) => {
            "Eastern Standard Time"
        }
        _ => "Pacific Standard Time",
    }
}
