//! Mapping rules 1 to 5 of PRODUCT.md: which source objects become console entries, with
//! which address, aliases, type and billable flag.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::{DomainName, EmailAddress};
use crate::filter::FilterRule;
use crate::model::{DirectoryUser, EmailMethod, MailboxType, UserStatus};
use crate::options::SourceOptions;
use crate::snapshot::{Shared, SourceGroup, SourceUser};

/// The name of the group every customer has and every unrouted user goes to.
pub const MAIN_GROUP: &str = "Main";

/// What a mapping needs to know about the source and the customer it feeds.
#[derive(Debug, Clone)]
pub struct MappingContext {
    pub source_id: i64,
    /// The customer's console domains: only addresses in these are synced (rule 1).
    pub domains: BTreeSet<DomainName>,
    /// The source's options (rule 7).
    pub options: SourceOptions,
    /// The console group that users no filter routes go to.
    pub default_group: String,
    /// The source's filter rules, in order (rule 6).
    pub rules: Vec<FilterRule>,
}

impl MappingContext {
    pub fn new(source_id: i64, domains: BTreeSet<DomainName>, options: SourceOptions) -> Self {
        MappingContext {
            source_id,
            domains,
            options,
            default_group: MAIN_GROUP.to_string(),
            rules: Vec::new(),
        }
    }
}

/// Why a source object is not imported; every skip in a plan carries one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SkipReason {
    /// The email method found no address at all.
    NoAddress { method: EmailMethod },
    /// No `mail` and no `smtp:` proxy address: the account has no mailbox, so it receives no
    /// mail to protect (rule 2); only email method `upn` syncs it.
    NoMailbox,
    /// The chosen address is not a valid e-mail address.
    InvalidAddress { text: String },
    /// Addresses in `*.onmicrosoft.com` are never synced (rule 1).
    OnlyOnMicrosoft { address: EmailAddress },
    /// The address is in a domain the customer does not have in the console (rule 1).
    NotInSyncedDomain { address: EmailAddress },
    /// Another object of the same source maps to the same address.
    DuplicateAddress {
        address: EmailAddress,
        other_object_id: String,
    },
    /// The address belongs to a console user managed by another source (rule 8).
    ManagedByOtherSource {
        address: EmailAddress,
        source_id: i64,
    },
    /// The address belongs to a console user that cannot be adopted.
    HeldByConsoleUser { address: EmailAddress },
    /// A guest account, and the source excludes guests (the default).
    Guest,
    /// A user mailbox without a licence, and the source excludes unlicensed users.
    Unlicensed,
    /// A disabled user account, and the source excludes disabled accounts.
    Disabled,
    /// The address, or one of its aliases, is on the source's deny list.
    DenyList { address: EmailAddress },
    /// The user is in none of the source's selected groups.
    NotInSelectedGroups,
    /// No filter rule matches, and the source imports only matching users.
    NoMatchingFilter,
    /// Gone from the source, but kept because the source does not remove deleted users.
    KeptNotRemoved,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoAddress { method } => {
                write!(f, "no address found with email method {method}")
            }
            SkipReason::NoMailbox => f.write_str(
                "no mailbox: the account has no mail address and no smtp: proxy address \
                 (only email method upn syncs such accounts)",
            ),
            SkipReason::InvalidAddress { text } => write!(f, "'{text}' is not a valid address"),
            SkipReason::OnlyOnMicrosoft { address } => write!(
                f,
                "{address} is in *.onmicrosoft.com, which is never synced"
            ),
            SkipReason::NotInSyncedDomain { address } => write!(
                f,
                "{address} is not in a synced domain (add the domain {} to the customer to sync it)",
                address.domain()
            ),
            SkipReason::DuplicateAddress {
                address,
                other_object_id,
            } => write!(
                f,
                "{address} is also the address of source object {other_object_id}"
            ),
            SkipReason::ManagedByOtherSource { address, source_id } => write!(
                f,
                "conflict: {address} is managed by another source (#{source_id}) and is left alone"
            ),
            SkipReason::HeldByConsoleUser { address } => write!(
                f,
                "{address} is already used by another entry of this customer"
            ),
            SkipReason::Guest => f.write_str("a guest account (exclude_guests is on)"),
            SkipReason::Unlicensed => {
                f.write_str("a user without a licence (exclude_unlicensed is on)")
            }
            SkipReason::Disabled => f.write_str("a disabled account (exclude_disabled is on)"),
            SkipReason::DenyList { address } => write!(f, "{address} is on the deny list"),
            SkipReason::NotInSelectedGroups => {
                f.write_str("not a member of any selected group (selected_groups)")
            }
            SkipReason::NoMatchingFilter => {
                f.write_str("no filter rule matches (only_matching is on)")
            }
            SkipReason::KeptNotRemoved => {
                f.write_str("gone from the source; kept because remove_deleted is off")
            }
        }
    }
}

impl SkipReason {
    /// A short, stable name for scripts and counts.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::NoAddress { .. } => "no_address",
            SkipReason::NoMailbox => "no_mailbox",
            SkipReason::InvalidAddress { .. } => "invalid_address",
            SkipReason::OnlyOnMicrosoft { .. } => "only_onmicrosoft",
            SkipReason::NotInSyncedDomain { .. } => "not_in_synced_domain",
            SkipReason::DuplicateAddress { .. } => "duplicate_address",
            SkipReason::ManagedByOtherSource { .. } => "managed_by_other_source",
            SkipReason::HeldByConsoleUser { .. } => "address_held",
            SkipReason::Guest => "guest",
            SkipReason::Unlicensed => "unlicensed",
            SkipReason::Disabled => "disabled",
            SkipReason::DenyList { .. } => "deny_list",
            SkipReason::NotInSelectedGroups => "not_in_selected_groups",
            SkipReason::NoMatchingFilter => "no_matching_filter",
            SkipReason::KeptNotRemoved => "kept_not_removed",
        }
    }
}

/// The entry a source user should have in the console (rules 1 to 5), or why it has none.
pub fn map_user(user: &SourceUser, ctx: &MappingContext) -> Result<DirectoryUser, SkipReason> {
    let options = &ctx.options;
    let mailbox_type = user_type(user);
    // Shared, room and equipment mailboxes are disabled, unlicensed accounts by nature:
    // the account options are about people, so they leave resource mailboxes alone.
    let is_person = matches!(mailbox_type, MailboxType::User | MailboxType::Unlicensed);
    if options.exclude_guests && user.is_guest() {
        return Err(SkipReason::Guest);
    }
    // Before the account options: an account without a mailbox is skipped for that,
    // whatever else is true of it, and the reason is the one that explains it.
    if options.email_method != EmailMethod::Upn && !has_mailbox(user) {
        return Err(SkipReason::NoMailbox);
    }
    if options.exclude_disabled && is_person && !user.is_enabled() {
        return Err(SkipReason::Disabled);
    }
    if options.exclude_unlicensed && is_person && !user.is_licensed() {
        return Err(SkipReason::Unlicensed);
    }
    let address = primary_address(user, ctx)?;
    if let Some(denied) = denied_address(user, &address, options) {
        return Err(SkipReason::DenyList { address: denied });
    }
    let aliases = aliases(&user.proxy_addresses, &address, ctx);
    Ok(DirectoryUser {
        id: None,
        display_name: display_name(user.display_name.as_deref(), &address),
        given_name: non_empty_shared(user.given_name.as_ref()),
        surname: non_empty_shared(user.surname.as_ref()),
        billable: is_billable(mailbox_type, user),
        mailbox_type,
        aliases,
        group: ctx.default_group.clone(),
        source_id: Some(ctx.source_id),
        source_object_id: Some(user.id.clone()),
        status: UserStatus::Active,
        manager: None,
        services: None,
        placed_by: None,
        address,
    })
}

/// The entry a mail-enabled group should have; `None` for groups without mail (rule 4).
pub fn map_group(
    group: &SourceGroup,
    ctx: &MappingContext,
) -> Option<Result<DirectoryUser, SkipReason>> {
    if !group.mail_enabled {
        return None;
    }
    let chosen = smtp_primary(&group.proxy_addresses).or_else(|| non_empty(group.mail.as_deref()));
    let Some(text) = chosen else {
        return Some(Err(SkipReason::NoAddress {
            method: EmailMethod::PrimarySmtp,
        }));
    };
    let address = match checked_address(&text, ctx) {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    let mailbox_type = group_type(group);
    Some(Ok(DirectoryUser {
        id: None,
        display_name: display_name(group.display_name.as_deref(), &address),
        given_name: None,
        surname: None,
        mailbox_type,
        billable: false,
        aliases: aliases(&group.proxy_addresses, &address, ctx),
        group: ctx.default_group.clone(),
        source_id: Some(ctx.source_id),
        source_object_id: Some(group.id.clone()),
        status: UserStatus::Active,
        manager: None,
        services: None,
        placed_by: None,
        address,
    }))
}

/// Rule 4 for groups: Microsoft 365 groups, mail-enabled security groups, distribution lists.
pub fn group_type(group: &SourceGroup) -> MailboxType {
    if group.is_microsoft365() {
        MailboxType::Group
    } else if group.security_enabled {
        MailboxType::SecurityGroup
    } else {
        MailboxType::DistributionList
    }
}

/// Rule 4 for users: `userPurpose` when known, otherwise a disabled, unlicensed account is
/// a shared mailbox (that is how Exchange creates them).
pub fn user_type(user: &SourceUser) -> MailboxType {
    let purpose = user.user_purpose.as_deref().map(str::to_ascii_lowercase);
    match purpose.as_deref() {
        Some("shared") => MailboxType::Shared,
        Some("room") => MailboxType::Room,
        Some("equipment") => MailboxType::Equipment,
        Some("user") | Some("linked") if !user.is_licensed() => MailboxType::Unlicensed,
        Some("user") | Some("linked") => MailboxType::User,
        _ if !user.is_licensed() && !user.is_enabled() => MailboxType::Shared,
        _ if !user.is_licensed() => MailboxType::Unlicensed,
        _ => MailboxType::User,
    }
}

/// An entry added by hand: no source manages it, it is in the group Main, and it is
/// billable when it is a user mailbox (rule 5; nothing says it is unlicensed or disabled).
pub fn manual_user(
    address: EmailAddress,
    display_name: Option<String>,
    mailbox_type: MailboxType,
) -> DirectoryUser {
    DirectoryUser {
        id: None,
        display_name: display_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| address.to_string()),
        given_name: None,
        surname: None,
        mailbox_type,
        billable: mailbox_type == MailboxType::User,
        aliases: vec![],
        group: MAIN_GROUP.into(),
        source_id: None,
        source_object_id: None,
        status: UserStatus::Active,
        manager: None,
        services: None,
        placed_by: None,
        address,
    }
}

/// Rule 5: only licensed, enabled, regular user mailboxes are billable.
pub fn is_billable(mailbox_type: MailboxType, user: &SourceUser) -> bool {
    mailbox_type == MailboxType::User && user.is_licensed() && user.is_enabled()
}

/// The first of the user's addresses (primary, then any SMTP proxy) on the deny list.
fn denied_address(
    user: &SourceUser,
    primary: &EmailAddress,
    options: &SourceOptions,
) -> Option<EmailAddress> {
    if options.deny_list.is_empty() {
        return None;
    }
    let proxies = user.proxy_addresses.iter().filter_map(|p| {
        let (prefix, rest) = p.split_once(':')?;
        prefix
            .eq_ignore_ascii_case("smtp")
            .then(|| EmailAddress::parse(rest).ok())
            .flatten()
    });
    std::iter::once(primary.clone())
        .chain(
            user.mail
                .as_deref()
                .and_then(|m| EmailAddress::parse(m).ok()),
        )
        .chain(proxies)
        .find(|a| options.deny_list.contains(a))
}

/// Rule 2: Exchange gives every mail recipient a `mail` address and an `smtp:` proxy
/// address; an account with neither is a sign-in only (a service or admin account).
fn has_mailbox(user: &SourceUser) -> bool {
    non_empty(user.mail.as_deref()).is_some()
        || user.proxy_addresses.iter().any(|p| {
            p.split_once(':').is_some_and(|(prefix, rest)| {
                prefix.eq_ignore_ascii_case("smtp") && !rest.trim().is_empty()
            })
        })
}

/// Rule 2: the primary address by the source's email method, checked against rule 1.
fn primary_address(user: &SourceUser, ctx: &MappingContext) -> Result<EmailAddress, SkipReason> {
    let mail = || non_empty(user.mail.as_deref());
    let upn = || non_empty(user.user_principal_name.as_deref());
    let chosen = match ctx.options.email_method {
        EmailMethod::PrimarySmtp => smtp_primary(&user.proxy_addresses)
            .or_else(mail)
            .or_else(upn),
        EmailMethod::Mail => mail(),
        EmailMethod::Upn => upn(),
    };
    let text = chosen.ok_or(SkipReason::NoAddress {
        method: ctx.options.email_method,
    })?;
    checked_address(&text, ctx)
}

fn checked_address(text: &str, ctx: &MappingContext) -> Result<EmailAddress, SkipReason> {
    let address = EmailAddress::parse(text).map_err(|_| SkipReason::InvalidAddress {
        text: text.to_string(),
    })?;
    if address.is_onmicrosoft() {
        return Err(SkipReason::OnlyOnMicrosoft { address });
    }
    if !ctx.domains.iter().any(|d| address.is_in(d)) {
        return Err(SkipReason::NotInSyncedDomain { address });
    }
    Ok(address)
}

/// The `SMTP:` (upper-case prefix) entry of proxyAddresses: Exchange's primary address.
fn smtp_primary(proxy_addresses: &[String]) -> Option<String> {
    proxy_addresses
        .iter()
        .find_map(|p| p.strip_prefix("SMTP:"))
        .and_then(|a| non_empty(Some(a)))
}

/// Rule 3: the other SMTP entries in a synced domain, sorted; SIP, X500, SPO and others ignored.
fn aliases(
    proxy_addresses: &[String],
    primary: &EmailAddress,
    ctx: &MappingContext,
) -> Vec<EmailAddress> {
    let set: BTreeSet<EmailAddress> = proxy_addresses
        .iter()
        .filter_map(|p| {
            let (prefix, rest) = p.split_once(':')?;
            prefix.eq_ignore_ascii_case("smtp").then_some(rest)
        })
        .filter_map(|a| EmailAddress::parse(a).ok())
        .filter(|a| a != primary && !a.is_onmicrosoft() && ctx.domains.iter().any(|d| a.is_in(d)))
        .collect();
    set.into_iter().collect()
}

fn display_name(name: Option<&str>, address: &EmailAddress) -> String {
    non_empty(name).unwrap_or_else(|| address.to_string())
}

fn non_empty(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// [`non_empty`] of shared text: the same copy when there was nothing to trim.
fn non_empty_shared(text: Option<&Shared>) -> Option<Shared> {
    let text = text?;
    match text.trim() {
        "" => None,
        trimmed if trimmed.len() == text.len() => Some(text.clone()),
        trimmed => Some(trimmed.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(method: EmailMethod) -> MappingContext {
        MappingContext::new(
            7,
            ["contoso.com", "fabrikam.com"]
                .iter()
                .map(|d| DomainName::parse(d).unwrap())
                .collect(),
            SourceOptions {
                email_method: method,
                ..SourceOptions::default()
            },
        )
    }

    fn with(options: &[&str]) -> MappingContext {
        let mut c = ctx(EmailMethod::PrimarySmtp);
        let texts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        c.options = c.options.apply(&texts).unwrap();
        c
    }

    #[test]
    fn rule7_guests_are_skipped_by_default_and_imported_when_asked() {
        let mut guest = anne();
        guest.user_type = Some("Guest".into());
        assert_eq!(map_user(&guest, &with(&[])), Err(SkipReason::Guest));
        assert!(map_user(&guest, &with(&["exclude_guests=false"])).is_ok());
    }

    #[test]
    fn rule7_unlicensed_and_disabled_people_can_be_excluded_but_not_shared_mailboxes() {
        let mut unlicensed = anne();
        unlicensed.assigned_licenses.clear();
        assert!(map_user(&unlicensed, &with(&[])).is_ok());
        assert_eq!(
            map_user(&unlicensed, &with(&["exclude_unlicensed=true"])),
            Err(SkipReason::Unlicensed)
        );
        let mut disabled = anne();
        disabled.account_enabled = Some(false);
        assert_eq!(
            map_user(&disabled, &with(&["exclude_disabled=true"])),
            Err(SkipReason::Disabled)
        );
        // A shared mailbox is a disabled, unlicensed account: both options leave it alone.
        let mut shared = anne();
        shared.assigned_licenses.clear();
        shared.account_enabled = Some(false);
        let entry = map_user(
            &shared,
            &with(&["exclude_unlicensed=true", "exclude_disabled=true"]),
        )
        .unwrap();
        assert_eq!(entry.mailbox_type, MailboxType::Shared);
    }

    #[test]
    fn rule7_the_deny_list_matches_the_address_and_its_aliases() {
        assert_eq!(
            map_user(&anne(), &with(&["deny_list=Anne.Smith@contoso.com"])),
            Err(SkipReason::DenyList {
                address: addr("anne.smith@contoso.com")
            })
        );
        assert_eq!(
            map_user(&anne(), &with(&["deny_list=a.smith@contoso.com"]))
                .unwrap_err()
                .code(),
            "deny_list"
        );
        assert!(map_user(&anne(), &with(&["deny_list=bob@contoso.com"])).is_ok());
    }

    /// An enabled, unlicensed account that signs in but has no mailbox: no mail, no
    /// smtp: proxy address, only a UPN in a synced domain.
    fn service_account() -> SourceUser {
        SourceUser {
            id: "u-svc".into(),
            user_principal_name: Some("svc.backup@contoso.com".into()),
            proxy_addresses: vec!["SIP:svc.backup@contoso.com".into()],
            display_name: Some("Backup Service".into()),
            account_enabled: Some(true),
            user_type: Some("Member".into()),
            ..SourceUser::default()
        }
    }

    #[test]
    fn rule2_an_enabled_unlicensed_account_without_mail_is_skipped_as_no_mailbox() {
        let u = service_account();
        for method in [EmailMethod::PrimarySmtp, EmailMethod::Mail] {
            let skip = map_user(&u, &ctx(method)).unwrap_err();
            assert_eq!(skip, SkipReason::NoMailbox, "{method}");
            assert_eq!(skip.code(), "no_mailbox");
            assert!(
                skip.to_string().starts_with("no mailbox: ")
                    && skip.to_string().contains("only email method upn"),
                "{skip}"
            );
        }
        let mut blank = u.clone();
        blank.mail = Some("  ".into());
        blank.proxy_addresses.push("smtp:".into());
        assert_eq!(
            map_user(&blank, &ctx(EmailMethod::PrimarySmtp)),
            Err(SkipReason::NoMailbox)
        );
    }

    #[test]
    fn rule2_the_upn_method_still_syncs_an_account_without_a_mailbox() {
        let entry = map_user(&service_account(), &ctx(EmailMethod::Upn)).unwrap();
        assert_eq!(entry.address, addr("svc.backup@contoso.com"));
        assert_eq!(entry.mailbox_type, MailboxType::Unlicensed);
    }

    #[test]
    fn rule2_mail_or_an_smtp_proxy_in_any_case_is_a_mailbox() {
        let mut with_mail = service_account();
        with_mail.mail = Some("svc.backup@contoso.com".into());
        assert!(map_user(&with_mail, &ctx(EmailMethod::Mail)).is_ok());
        let mut with_proxy = service_account();
        with_proxy
            .proxy_addresses
            .push("Smtp:svc.backup@contoso.com".into());
        // It has a mailbox, so it is not no_mailbox; the mail method then finds no mail.
        assert_eq!(
            map_user(&with_proxy, &ctx(EmailMethod::Mail))
                .unwrap_err()
                .code(),
            "no_address"
        );
        assert_eq!(
            map_user(&with_proxy, &ctx(EmailMethod::PrimarySmtp))
                .unwrap()
                .address,
            addr("svc.backup@contoso.com")
        );
    }

    #[test]
    fn rule2_no_mailbox_comes_after_the_guest_check_and_before_the_account_options() {
        let mut guest = service_account();
        guest.user_type = Some("Guest".into());
        assert_eq!(map_user(&guest, &with(&[])), Err(SkipReason::Guest));
        let mut disabled = service_account();
        disabled.account_enabled = Some(false);
        disabled.assigned_licenses.push("sku-e3".into());
        assert_eq!(
            map_user(
                &disabled,
                &with(&["exclude_disabled=true", "exclude_unlicensed=true"])
            ),
            Err(SkipReason::NoMailbox)
        );
        assert_eq!(
            map_user(&service_account(), &with(&["exclude_unlicensed=true"])),
            Err(SkipReason::NoMailbox)
        );
    }

    #[test]
    fn rule2_mail_enabled_groups_are_not_checked_for_a_mailbox() {
        let g = SourceGroup {
            id: "g-2".into(),
            display_name: Some("Sales".into()),
            mail: Some("sales@contoso.com".into()),
            mail_enabled: true,
            ..SourceGroup::default()
        };
        assert!(map_group(&g, &ctx(EmailMethod::Mail)).unwrap().is_ok());
    }

    fn anne() -> SourceUser {
        SourceUser {
            id: "u-1".into(),
            user_principal_name: Some("anne@contoso.onmicrosoft.com".into()),
            mail: Some("Anne.Smith@fabrikam.com".into()),
            proxy_addresses: vec![
                "SMTP:Anne.Smith@Contoso.com".into(),
                "smtp:anne@fabrikam.com".into(),
                "smtp:a.smith@contoso.com".into(),
                "smtp:anne@contoso.onmicrosoft.com".into(),
                "smtp:anne@elsewhere.org".into(),
                "SIP:anne@contoso.com".into(),
                "X500:/o=ExchangeLabs/ou=Exchange/cn=Recipients/cn=anne".into(),
                "SPO:SPO_1234@SPO_5678".into(),
            ],
            display_name: Some("Anne Smith".into()),
            given_name: Some("Anne".into()),
            surname: Some("Smith".into()),
            account_enabled: Some(true),
            assigned_licenses: vec!["sku-e3".into()],
            user_type: Some("Member".into()),
            ..SourceUser::default()
        }
    }

    fn addr(a: &str) -> EmailAddress {
        EmailAddress::parse(a).unwrap()
    }

    #[test]
    fn rule1_addresses_outside_the_customers_domains_are_skipped() {
        let mut u = anne();
        u.proxy_addresses = vec!["SMTP:anne@elsewhere.org".into()];
        assert_eq!(
            map_user(&u, &ctx(EmailMethod::PrimarySmtp)),
            Err(SkipReason::NotInSyncedDomain {
                address: addr("anne@elsewhere.org")
            })
        );
    }

    #[test]
    fn rule1_onmicrosoft_addresses_are_never_synced() {
        let mut c = ctx(EmailMethod::Upn);
        c.domains
            .insert(DomainName::parse("contoso.onmicrosoft.com").unwrap());
        let skip = map_user(&anne(), &c).unwrap_err();
        assert_eq!(skip.code(), "only_onmicrosoft");
        // ...and an onmicrosoft alias never becomes an alias either.
        let user = map_user(&anne(), &ctx(EmailMethod::PrimarySmtp)).unwrap();
        assert!(user.aliases.iter().all(|a| !a.is_onmicrosoft()));
    }

    #[test]
    fn rule2_primary_smtp_takes_the_upper_case_smtp_entry_lower_cased() {
        let user = map_user(&anne(), &ctx(EmailMethod::PrimarySmtp)).unwrap();
        assert_eq!(user.address, addr("anne.smith@contoso.com"));
    }

    #[test]
    fn rule2_primary_smtp_falls_back_to_mail_then_upn() {
        let mut u = anne();
        u.proxy_addresses.retain(|p| !p.starts_with("SMTP:"));
        let c = ctx(EmailMethod::PrimarySmtp);
        assert_eq!(
            map_user(&u, &c).unwrap().address,
            addr("anne.smith@fabrikam.com")
        );
        u.mail = None;
        u.user_principal_name = Some("anne@fabrikam.com".into());
        assert_eq!(map_user(&u, &c).unwrap().address, addr("anne@fabrikam.com"));
        u.user_principal_name = None;
        assert_eq!(
            map_user(&u, &c),
            Err(SkipReason::NoAddress {
                method: EmailMethod::PrimarySmtp
            })
        );
    }

    #[test]
    fn rule2_mail_and_upn_methods_use_only_their_property() {
        let u = anne();
        assert_eq!(
            map_user(&u, &ctx(EmailMethod::Mail)).unwrap().address,
            addr("anne.smith@fabrikam.com")
        );
        let mut u2 = anne();
        u2.user_principal_name = Some("ASmith@Contoso.com".into());
        assert_eq!(
            map_user(&u2, &ctx(EmailMethod::Upn)).unwrap().address,
            addr("asmith@contoso.com")
        );
        u2.mail = None;
        assert_eq!(
            map_user(&u2, &ctx(EmailMethod::Mail)).unwrap_err().code(),
            "no_address"
        );
    }

    #[test]
    fn rule3_aliases_are_the_other_smtp_entries_in_synced_domains_sorted() {
        let user = map_user(&anne(), &ctx(EmailMethod::PrimarySmtp)).unwrap();
        assert_eq!(
            user.aliases,
            vec![addr("a.smith@contoso.com"), addr("anne@fabrikam.com")]
        );
    }

    #[test]
    fn rule3_with_another_email_method_the_smtp_primary_becomes_an_alias() {
        let user = map_user(&anne(), &ctx(EmailMethod::Mail)).unwrap();
        assert_eq!(user.address, addr("anne.smith@fabrikam.com"));
        assert!(user.aliases.contains(&addr("anne.smith@contoso.com")));
        assert!(!user.aliases.contains(&user.address));
    }

    #[test]
    fn rule4_user_purpose_decides_the_type_when_known() {
        let mut u = anne();
        for (purpose, t) in [
            ("shared", MailboxType::Shared),
            ("room", MailboxType::Room),
            ("equipment", MailboxType::Equipment),
            ("user", MailboxType::User),
        ] {
            u.user_purpose = Some(purpose.into());
            assert_eq!(user_type(&u), t, "{purpose}");
        }
    }

    #[test]
    fn rule4_without_purpose_a_disabled_unlicensed_account_is_shared() {
        let mut u = anne();
        u.assigned_licenses.clear();
        u.account_enabled = Some(false);
        assert_eq!(user_type(&u), MailboxType::Shared);
        u.account_enabled = Some(true);
        assert_eq!(user_type(&u), MailboxType::Unlicensed);
        u.assigned_licenses.push("sku".into());
        u.account_enabled = Some(false);
        assert_eq!(user_type(&u), MailboxType::User);
    }

    #[test]
    fn rule4_mail_enabled_groups_get_their_group_type() {
        let c = ctx(EmailMethod::PrimarySmtp);
        let mut g = SourceGroup {
            id: "g-1".into(),
            display_name: Some("Sales".into()),
            mail: Some("sales@contoso.com".into()),
            mail_enabled: true,
            security_enabled: false,
            group_types: vec!["Unified".into()],
            proxy_addresses: vec![
                "SMTP:sales@contoso.com".into(),
                "smtp:sales@fabrikam.com".into(),
            ],
            member_ids: vec![],
        };
        let entry = map_group(&g, &c).unwrap().unwrap();
        assert_eq!(entry.mailbox_type, MailboxType::Group);
        assert_eq!(entry.aliases, vec![addr("sales@fabrikam.com")]);
        assert!(!entry.billable);
        g.group_types.clear();
        assert_eq!(group_type(&g), MailboxType::DistributionList);
        g.security_enabled = true;
        assert_eq!(group_type(&g), MailboxType::SecurityGroup);
        g.mail_enabled = false;
        assert!(map_group(&g, &c).is_none());
    }

    #[test]
    fn rule5_only_licensed_enabled_user_mailboxes_are_billable() {
        let c = ctx(EmailMethod::PrimarySmtp);
        assert!(map_user(&anne(), &c).unwrap().billable);
        let mut disabled = anne();
        disabled.account_enabled = Some(false);
        assert!(!map_user(&disabled, &c).unwrap().billable);
        let mut shared = anne();
        shared.user_purpose = Some("shared".into());
        assert!(!map_user(&shared, &c).unwrap().billable);
        let mut unlicensed = anne();
        unlicensed.assigned_licenses.clear();
        let entry = map_user(&unlicensed, &c).unwrap();
        assert_eq!(entry.mailbox_type, MailboxType::Unlicensed);
        assert!(!entry.billable);
    }

    #[test]
    fn names_are_kept_and_a_missing_display_name_falls_back_to_the_address() {
        let mut u = anne();
        u.display_name = Some("  ".into());
        u.given_name = None;
        let entry = map_user(&u, &ctx(EmailMethod::PrimarySmtp)).unwrap();
        assert_eq!(entry.display_name, "anne.smith@contoso.com");
        assert_eq!(entry.given_name, None);
        assert_eq!(entry.surname.as_deref(), Some("Smith"));
        assert_eq!(entry.source_object_id.as_deref(), Some("u-1"));
    }

    #[test]
    fn names_are_trimmed_and_otherwise_shared_with_the_source_user() {
        let mut u = anne();
        u.given_name = Some(" Anne ".into());
        u.surname = Some("\t".into());
        let entry = map_user(&u, &ctx(EmailMethod::PrimarySmtp)).unwrap();
        assert_eq!(entry.given_name.as_deref(), Some("Anne"));
        assert_eq!(entry.surname, None);
        // Nothing to trim: the entry holds the snapshot's copy, not one of its own.
        let u = anne();
        let entry = map_user(&u, &ctx(EmailMethod::PrimarySmtp)).unwrap();
        let (Some(read), Some(mapped)) = (&u.surname, &entry.surname) else {
            panic!("a surname was mapped");
        };
        assert!(Shared::ptr_eq(read, mapped));
    }
}
