//! The console's model: mailbox types, statuses, email methods and directory users.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::address::EmailAddress;

/// A value that is not one of an enum's names; carries the valid names for the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {what}; use one of: {}", valid.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub valid: Vec<&'static str>,
}

/// Declares an enum with snake_case names used in the CLI, JSON and the database alike.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let wanted = s.trim().to_ascii_lowercase();
                $(if wanted == $text { return Ok($name::$variant); })+
                Err(UnknownValue { what: $what, value: s.to_string(), valid: vec![$($text),+] })
            }
        }
    };
}

named_enum! {
    /// What kind of mailbox an entry is; only `user` can be billable.
    MailboxType, "mailbox type" {
        User => "user",
        Shared => "shared",
        Room => "room",
        Equipment => "equipment",
        DistributionList => "distribution_list",
        /// A Microsoft 365 group mailbox.
        Group => "group",
        /// A mail-enabled security group.
        SecurityGroup => "security_group",
        Unlicensed => "unlicensed",
    }
}

named_enum! {
    /// A console account's or an API token's role (see [`crate::access`]).
    Role, "role" {
        /// The provider's staff: every customer, every change.
        ProviderAdmin => "provider_admin",
        /// One customer's admin: that customer only, changes included.
        CustomerAdmin => "customer_admin",
        /// Reads what its scope holds (every customer, or one), changes nothing.
        ReadOnly => "read_only",
    }
}

named_enum! {
    /// Whether a directory user is live or soft-deleted (kept, restorable).
    UserStatus, "user status" {
        Active => "active",
        Removed => "removed",
    }
}

named_enum! {
    /// How a source chooses a user's primary address (rule 2).
    EmailMethod, "email method" {
        /// The `SMTP:` entry of proxyAddresses, then `mail`, then the UPN. The default.
        PrimarySmtp => "primary_smtp",
        Mail => "mail",
        /// "User Principal Name only".
        Upn => "upn",
    }
}

named_enum! {
    /// The kind of a user source.
    SourceKind, "source kind" {
        Office365 => "office365",
    }
}

// The enum is declared by a macro that derives the same traits for every enum, so the
// default is written out here.
#[allow(clippy::derivable_impls)]
impl Default for EmailMethod {
    fn default() -> Self {
        EmailMethod::PrimarySmtp
    }
}

/// One entry of the console directory: a protected address and what the console knows of it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    /// The user's id; absent for an entry a plan is about to add.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<i64>,
    pub address: EmailAddress,
    pub display_name: String,
    /// The given name as the source has it (in memory, one copy shared with the
    /// source's user it was mapped from).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub given_name: Option<crate::Shared>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub surname: Option<crate::Shared>,
    #[serde(rename = "type")]
    pub mailbox_type: MailboxType,
    pub billable: bool,
    /// Other addresses of the same mailbox, sorted and without duplicates.
    pub aliases: Vec<EmailAddress>,
    /// The console group the user is in.
    pub group: String,
    pub source_id: Option<i64>,
    pub source_object_id: Option<String>,
    pub status: UserStatus,
    /// The manager's address, when the source imports managers and the manager is synced.
    #[serde(default)]
    pub manager: Option<EmailAddress>,
    /// Services and locale settings, given when a sync creates the mailbox and never
    /// changed by a sync after that (one copy shared by all the entries a plan adds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<std::sync::Arc<crate::options::MailboxDefaults>>,
    /// In a plan: which filter rule (or the default) chose the user's group. Not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_by: Option<String>,
}

impl DirectoryUser {
    /// Whether a sync may change this entry: users added by hand are never touched.
    pub fn is_managed_by(&self, source_id: i64) -> bool {
        self.source_id == Some(source_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_round_trip_and_unknown_names_list_the_valid_ones() {
        for t in MailboxType::ALL {
            assert_eq!(t.as_str().parse::<MailboxType>().unwrap(), *t);
        }
        assert_eq!("UPN".parse::<EmailMethod>().unwrap(), EmailMethod::Upn);
        let err = "smtp".parse::<EmailMethod>().unwrap_err().to_string();
        assert_eq!(
            err,
            "'smtp' is not a valid email method; use one of: primary_smtp, mail, upn"
        );
    }
}
