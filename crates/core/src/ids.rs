//! Microsoft Entra ID identifiers an operator types in (a tenant, the app's client id),
//! checked at the edge so a typo is refused with its field instead of failing at Microsoft.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::DomainName;

/// Why a text is not the identifier its field needs. `field` is how the surface names it:
/// the CLI's flag by default, another surface sets its own with [`IdError::in_field`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "{field}: '{text}' is neither a tenant id (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47) \
         nor a domain name such as contoso.onmicrosoft.com"
    )]
    NotATenant { field: &'static str, text: String },
    #[error(
        "{field}: '{text}' is not an application (client) id: it is a GUID such as \
         00000000-0000-0000-0000-000000000000, shown on the app registration's Overview page in \
         Microsoft Entra ID"
    )]
    NotAClientId { field: &'static str, text: String },
}

impl IdError {
    /// The same refusal under the name another surface gives the field (`tenant_id` in JSON).
    pub fn in_field(self, field: &'static str) -> Self {
        match self {
            IdError::NotATenant { text, .. } => IdError::NotATenant { field, text },
            IdError::NotAClientId { text, .. } => IdError::NotAClientId { field, text },
        }
    }
}

/// `8-4-4-4-12` hex digits in any case, lower-cased: Entra shows GUIDs upper- or lower-case,
/// and a tenant must compare equal however it was pasted.
fn guid(text: &str) -> Option<String> {
    let groups: Vec<&str> = text.split('-').collect();
    let shape_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()));
    shape_ok.then(|| text.to_ascii_lowercase())
}

/// A Microsoft 365 tenant: its id (a GUID, lower-case) or one of its domains
/// (`contoso.onmicrosoft.com`); Microsoft's sign-in endpoints take either.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let trimmed = text.trim();
        if let Some(id) = guid(trimmed) {
            return Ok(TenantId(id));
        }
        DomainName::parse(trimmed)
            .map(|d| TenantId(d.into()))
            .map_err(|_| IdError::NotATenant {
                field: "--tenant",
                text: text.to_string(),
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for a tenant id, false for a domain name: only the id stays the same when the
    /// tenant's domains change.
    pub fn is_guid(&self) -> bool {
        guid(&self.0).is_some()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TenantId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}

/// The application (client) id of the app registration usersync signs in as: a GUID,
/// lower-case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        guid(text.trim())
            .map(ClientId)
            .ok_or_else(|| IdError::NotAClientId {
                field: "--client-id",
                text: text.to_string(),
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ClientId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ClientId> for String {
    fn from(value: ClientId) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MICROSOFT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn a_tenant_id_is_a_guid_in_any_case_stored_lower_case() {
        let t = TenantId::parse(" 72F988BF-86F1-41AF-91AB-2D7CD011DB47 ").unwrap();
        assert_eq!(t.as_str(), MICROSOFT);
        assert!(t.is_guid());
    }

    #[test]
    fn a_tenant_can_be_named_by_one_of_its_domains() {
        let t = TenantId::parse("Contoso.onmicrosoft.com").unwrap();
        assert_eq!(t.to_string(), "contoso.onmicrosoft.com");
        assert!(!t.is_guid());
    }

    #[test]
    fn a_tenant_that_is_neither_is_refused_naming_the_field_and_both_forms() {
        assert_eq!(
            TenantId::parse("xyz").unwrap_err().to_string(),
            "--tenant: 'xyz' is neither a tenant id (a GUID such as \
             72f988bf-86f1-41af-91ab-2d7cd011db47) nor a domain name such as \
             contoso.onmicrosoft.com"
        );
        for bad in [
            "72f988bf-86f1-41af-91ab-2d7cd011db4",
            "72f988bf86f141af91ab2d7cd011db47",
            "72f988bf-86f1-41af-91ab-2d7cd011db4g",
            "{72f988bf-86f1-41af-91ab-2d7cd011db47}",
            "",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_client_id_is_a_guid_and_nothing_else() {
        assert_eq!(
            ClientId::parse("00000000-0000-0000-0000-00000000000A")
                .unwrap()
                .as_str(),
            "00000000-0000-0000-0000-00000000000a"
        );
        assert_eq!(
            ClientId::parse("app").unwrap_err().to_string(),
            "--client-id: 'app' is not an application (client) id: it is a GUID such as \
             00000000-0000-0000-0000-000000000000, shown on the app registration's Overview \
             page in Microsoft Entra ID"
        );
        assert!(ClientId::parse("contoso.onmicrosoft.com").is_err());
    }

    #[test]
    fn another_surface_can_name_the_field_its_own_way() {
        let e = TenantId::parse("xyz").unwrap_err().in_field("tenant_id");
        assert!(e.to_string().starts_with("tenant_id: 'xyz'"), "{e}");
    }

    #[test]
    fn ids_are_plain_strings_in_json_and_checked_when_read() {
        let t = TenantId::parse(MICROSOFT).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            format!("\"{MICROSOFT}\"")
        );
        let back: TenantId = serde_json::from_str("\"CONTOSO.onmicrosoft.com\"").unwrap();
        assert_eq!(back.as_str(), "contoso.onmicrosoft.com");
        assert!(serde_json::from_str::<ClientId>("\"app\"").is_err());
        let c: ClientId = serde_json::from_str(&format!("\"{MICROSOFT}\"")).unwrap();
        assert_eq!(c.to_string(), MICROSOFT);
    }
}
