//! E-mail addresses and domain names, always lower-case and checked once at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a text is not an address or a domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("'{0}' is not an e-mail address: it needs exactly one '@' with text on both sides")]
    NotAnAddress(String),
    #[error(
        "'{0}' is not a domain name: use letters, digits, '-' and at least one '.', such as example.com"
    )]
    NotADomain(String),
}

/// A mail domain such as `example.com`: lower-case, without surrounding spaces or a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let labels_ok = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if name.len() > 253 || !name.contains('.') || !labels_ok {
            return Err(AddressError::NotADomain(text.to_string()));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Microsoft's initial domains (`contoso.onmicrosoft.com`) are never synced (rule 1).
    pub fn is_onmicrosoft(&self) -> bool {
        self.0 == "onmicrosoft.com" || self.0.ends_with(".onmicrosoft.com")
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DomainName {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DomainName> for String {
    fn from(value: DomainName) -> Self {
        value.0
    }
}

/// One mailbox address, lower-case: addresses are compared and stored lower-case (rule 2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let lower = text.trim().to_lowercase();
        let mut parts = lower.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AddressError::NotAnAddress(text.to_string()));
        };
        if local.is_empty() || local.chars().any(char::is_whitespace) {
            return Err(AddressError::NotAnAddress(text.to_string()));
        }
        let domain =
            DomainName::parse(domain).map_err(|_| AddressError::NotAnAddress(text.to_string()))?;
        // Rebuilt from the normalised domain, so `a@contoso.com.` is `a@contoso.com`.
        Ok(Self(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit('@').next().unwrap_or_default()
    }

    pub fn is_in(&self, domain: &DomainName) -> bool {
        self.domain() == domain.as_str()
    }

    pub fn is_onmicrosoft(&self) -> bool {
        let d = self.domain();
        d == "onmicrosoft.com" || d.ends_with(".onmicrosoft.com")
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_stored_lower_case() {
        let a = EmailAddress::parse("  Anne.Smith@Contoso.COM ").unwrap();
        assert_eq!(a.as_str(), "anne.smith@contoso.com");
        assert_eq!(a.domain(), "contoso.com");
        assert_eq!(
            EmailAddress::parse("a@Contoso.com.").unwrap().as_str(),
            "a@contoso.com"
        );
    }

    #[test]
    fn text_without_exactly_one_at_is_refused() {
        for bad in [
            "anne",
            "@contoso.com",
            "anne@",
            "a@b@c.com",
            "an ne@contoso.com",
            "a@nodot",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn domains_are_lower_case_and_need_a_dot() {
        assert_eq!(
            DomainName::parse("Contoso.COM.").unwrap().as_str(),
            "contoso.com"
        );
        assert!(DomainName::parse("localhost").is_err());
        assert!(DomainName::parse("bad domain.com").is_err());
        assert!(DomainName::parse("-x.com").is_err());
    }

    #[test]
    fn onmicrosoft_domains_are_recognised() {
        assert!(
            DomainName::parse("contoso.onmicrosoft.com")
                .unwrap()
                .is_onmicrosoft()
        );
        assert!(
            !DomainName::parse("onmicrosoft.contoso.com")
                .unwrap()
                .is_onmicrosoft()
        );
        assert!(
            EmailAddress::parse("a@contoso.onmicrosoft.com")
                .unwrap()
                .is_onmicrosoft()
        );
    }
}
