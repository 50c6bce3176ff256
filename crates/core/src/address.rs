//! E-mail addresses and domain names, always lower-case and checked once at the edge.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Why a text is not an address or a domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("'{0}' is not an e-mail address: it needs exactly one '@' with text on both sides")]
    NotAnAddress(String),
    #[error("'{text}' is not a domain name: {problem}")]
    NotADomain {
        text: String,
        problem: DomainProblem,
    },
    #[error("'{address}' is not an e-mail address: its domain '{domain}' is not valid: {problem}")]
    BadDomain {
        address: String,
        domain: String,
        problem: DomainProblem,
    },
}

/// What is wrong with a domain name, worded to follow "is not a domain name: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainProblem {
    Empty,
    IpAddress,
    /// The last label is a number: no mail domain ends so, but IP addresses written
    /// short (`10.1`) or out of range (`1.2.3.300`) do.
    NumericEnd(String),
    Whitespace,
    Underscore,
    NoDot,
    EmptyLabel,
    LabelTooLong {
        label: String,
        length: usize,
    },
    HyphenAtEdge(String),
    TooLong(usize),
    Character(char),
    /// Non-ASCII text that IDNA cannot turn into punycode, or an `xn--` label that does
    /// not decode.
    NotInternational,
}

impl fmt::Display for DomainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const GIVE: &str = "give the mail domain, such as example.com";
        match self {
            DomainProblem::Empty => write!(f, "it is empty; {GIVE}"),
            DomainProblem::IpAddress => write!(f, "it is an IP address; {GIVE}"),
            DomainProblem::NumericEnd(label) => write!(
                f,
                "it ends in the number '{label}', like an IP address; {GIVE}"
            ),
            DomainProblem::Whitespace => write!(
                f,
                "it contains a space, which a mail domain never has; {GIVE}"
            ),
            DomainProblem::Underscore => f.write_str("'_' is not allowed in a mail domain"),
            DomainProblem::NoDot => f.write_str("it needs at least one '.', such as example.com"),
            DomainProblem::EmptyLabel => write!(
                f,
                "it has an empty part (a leading '.' or two dots in a row); {GIVE}"
            ),
            DomainProblem::LabelTooLong { label, length } => write!(
                f,
                "the part '{label}' is {length} characters long; \
                 a part between dots has at most {MAX_LABEL}"
            ),
            DomainProblem::HyphenAtEdge(label) => write!(
                f,
                "the part '{label}' starts or ends with '-', which a mail domain does not allow"
            ),
            DomainProblem::TooLong(length) => write!(
                f,
                "it is {length} characters long; a domain name has at most {MAX_NAME}"
            ),
            DomainProblem::Character(c) => write!(
                f,
                "'{c}' is not allowed in a mail domain; use letters, digits, '-' and '.'"
            ),
            DomainProblem::NotInternational => {
                f.write_str("it is not a valid internationalised domain name; check its spelling")
            }
        }
    }
}

/// DNS limits (RFC 1035), counted on the punycode form that DNS sees.
const MAX_LABEL: usize = 63;
const MAX_NAME: usize = 253;

/// A mail domain such as `example.com`: lower-case, without surrounding spaces or a trailing
/// dot; an internationalised name is kept in its punycode form (`xn--bcher-kva.de`), the one
/// DNS and mail headers carry, so both spellings compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        Self::check(text)
            .map(Self)
            .map_err(|problem| AddressError::NotADomain {
                text: text.to_string(),
                problem,
            })
    }

    fn check(text: &str) -> Result<String, DomainProblem> {
        let name = text.trim();
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(DomainProblem::Empty);
        }
        if name.chars().any(char::is_whitespace) {
            return Err(DomainProblem::Whitespace);
        }
        // Before IDNA, which would map or refuse ':' and '[' without saying why.
        let unbracketed = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if unbracketed.parse::<Ipv6Addr>().is_ok() || unbracketed.parse::<Ipv4Addr>().is_ok() {
            return Err(DomainProblem::IpAddress);
        }
        // Allowed in DNS records (`_dmarc`) but never in a host or mail domain.
        if name.contains('_') {
            return Err(DomainProblem::Underscore);
        }
        if name.split('.').any(str::is_empty) {
            return Err(DomainProblem::EmptyLabel);
        }
        let ascii = idna::domain_to_ascii_cow(name.as_bytes(), idna::AsciiDenyList::STD3)
            .map_err(|_| {
                name.chars()
                    .find(|c| c.is_ascii() && !is_ldh(*c) && *c != '.')
                    .map_or(DomainProblem::NotInternational, DomainProblem::Character)
            })?
            .into_owned();
        if !ascii.contains('.') {
            return Err(DomainProblem::NoDot);
        }
        for label in ascii.split('.') {
            if label.is_empty() {
                return Err(DomainProblem::EmptyLabel);
            }
            if label.len() > MAX_LABEL {
                return Err(DomainProblem::LabelTooLong {
                    label: label.to_string(),
                    length: label.len(),
                });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(DomainProblem::HyphenAtEdge(label.to_string()));
            }
            if let Some(c) = label.chars().find(|c| !is_ldh(*c)) {
                return Err(DomainProblem::Character(c));
            }
        }
        if ascii.len() > MAX_NAME {
            return Err(DomainProblem::TooLong(ascii.len()));
        }
        let last = ascii.rsplit('.').next().unwrap_or_default();
        if last.chars().all(|c| c.is_ascii_digit()) {
            return Err(DomainProblem::NumericEnd(last.to_string()));
        }
        Ok(ascii.to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Microsoft's initial domains (`contoso.onmicrosoft.com`) are never synced (rule 1).
    pub fn is_onmicrosoft(&self) -> bool {
        self.0 == "onmicrosoft.com" || self.0.ends_with(".onmicrosoft.com")
    }
}

/// Letters, digits and hyphen: what a DNS host label may hold.
fn is_ldh(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl DomainName {
    /// A domain read back from storage (the database, a stored plan or options): what
    /// [`DomainName::parse`] accepts, and also what earlier versions accepted (`_`, a
    /// numeric last label), so that data stored before the rules grew stricter still loads.
    /// Input is checked with `parse`; this is only for reading.
    pub fn stored(text: &str) -> Result<Self, AddressError> {
        Self::parse(text).or_else(|e| legacy_domain(text).map(Self).ok_or(e))
    }
}

/// The domain rules before IP addresses, `_` and numeric last labels were refused.
fn legacy_domain(text: &str) -> Option<String> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    (name.len() <= MAX_NAME && name.contains('.') && labels_ok).then_some(name)
}

impl TryFrom<String> for DomainName {
    type Error = AddressError;
    /// Deserialising reads stored data: see [`DomainName::stored`].
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::stored(&value)
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
        if local.is_empty() || domain.is_empty() || local.chars().any(char::is_whitespace) {
            return Err(AddressError::NotAnAddress(text.to_string()));
        }
        let domain = DomainName::parse(domain).map_err(|e| match e {
            AddressError::NotADomain {
                text: domain,
                problem,
            } => AddressError::BadDomain {
                address: text.to_string(),
                domain,
                problem,
            },
            other => other,
        })?;
        // Rebuilt from the normalised domain, so `a@contoso.com.` is `a@contoso.com` and
        // `anne@bücher.de` is `anne@xn--bcher-kva.de`.
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

impl EmailAddress {
    /// An address read back from storage: what [`EmailAddress::parse`] accepts, and also
    /// what earlier versions accepted in the domain part (see [`DomainName::stored`]).
    pub fn stored(text: &str) -> Result<Self, AddressError> {
        Self::parse(text).or_else(|e| {
            let lower = text.trim().to_lowercase();
            let (local, domain) = lower.split_once('@').ok_or_else(|| e.clone())?;
            if local.is_empty() || domain.contains('@') || local.chars().any(char::is_whitespace) {
                return Err(e);
            }
            let domain = legacy_domain(domain).ok_or(e)?;
            Ok(Self(format!("{local}@{domain}")))
        })
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = AddressError;
    /// Deserialising reads stored data: see [`EmailAddress::stored`].
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::stored(&value)
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

    fn domain_error(text: &str) -> String {
        match DomainName::parse(text) {
            Ok(d) => panic!("{text} was accepted as {d}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_name_without_a_dot_is_refused_saying_it_needs_one() {
        assert_eq!(
            domain_error("localhost"),
            "'localhost' is not a domain name: it needs at least one '.', such as example.com"
        );
    }

    #[test]
    fn ip_addresses_are_refused_as_ip_addresses() {
        assert_eq!(
            domain_error("10.0.0.1"),
            "'10.0.0.1' is not a domain name: it is an IP address; give the mail domain, such as example.com"
        );
        for ip in [
            "[::1]",
            "::1",
            "2001:db8::1",
            "[10.0.0.1]",
            " 192.168.1.10. ",
        ] {
            assert!(domain_error(ip).contains("it is an IP address"), "{ip}");
        }
    }

    #[test]
    fn a_name_ending_in_a_number_is_refused_like_an_ip_address() {
        for (text, number) in [("10.1", "1"), ("1.2.3.300", "300"), ("example.123", "123")] {
            let e = domain_error(text);
            assert!(e.contains(&format!("ends in the number '{number}'")), "{e}");
        }
        assert!(DomainName::parse("123.example.com").is_ok());
    }

    #[test]
    fn underscores_are_refused_by_name() {
        assert_eq!(
            domain_error("a_b.com"),
            "'a_b.com' is not a domain name: '_' is not allowed in a mail domain"
        );
        assert!(domain_error("_dmarc.contoso.com").contains("'_'"));
    }

    #[test]
    fn spaces_inside_a_name_are_refused_and_surrounding_ones_trimmed() {
        for text in [
            "bad domain.com",
            "contoso .com",
            "contoso.\tcom",
            "con\u{a0}toso.com",
        ] {
            assert!(
                domain_error(text).contains("it contains a space"),
                "{text:?}"
            );
        }
        assert_eq!(
            DomainName::parse("  contoso.com ").unwrap().as_str(),
            "contoso.com"
        );
    }

    #[test]
    fn empty_parts_between_dots_are_refused() {
        for text in ["a..com", ".a.com", "a.com..", ".", ""] {
            let e = domain_error(text);
            assert!(
                e.contains("empty part") || e.contains("it is empty"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn other_characters_hyphens_at_edges_and_overlong_parts_are_refused_by_name() {
        assert!(domain_error("-x.com").contains("the part '-x' starts or ends with '-'"));
        assert!(domain_error("contoso.com:25").contains("':' is not allowed"));
        assert!(domain_error("a!b.com").contains("'!' is not allowed"));
        let long = format!("{}.com", "a".repeat(64));
        assert!(domain_error(&long).contains("is 64 characters long"));
        let very_long = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(domain_error(&very_long).contains("at most 253"));
    }

    #[test]
    fn internationalised_domains_are_stored_in_punycode() {
        let d = DomainName::parse("Bücher.de").unwrap();
        assert_eq!(d.as_str(), "xn--bcher-kva.de");
        assert_eq!(DomainName::parse("XN--BCHER-KVA.de").unwrap(), d);
        assert!(domain_error("xn--zz.de").contains("internationalised"));
    }

    #[test]
    fn an_address_in_an_international_domain_keeps_its_local_part_lower_cased() {
        assert_eq!(
            EmailAddress::parse("Anne@Bücher.de").unwrap().as_str(),
            "anne@xn--bcher-kva.de"
        );
        assert_eq!(
            EmailAddress::parse("Ännchen@bücher.de").unwrap().as_str(),
            "ännchen@xn--bcher-kva.de"
        );
    }

    #[test]
    fn an_address_with_a_bad_domain_says_what_is_wrong_with_the_domain() {
        assert_eq!(
            EmailAddress::parse("anne@a_b.com").unwrap_err().to_string(),
            "'anne@a_b.com' is not an e-mail address: its domain 'a_b.com' is not valid: \
             '_' is not allowed in a mail domain"
        );
        let e = EmailAddress::parse("anne@[10.0.0.1]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("it is an IP address"), "{e}");
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

    #[test]
    fn data_stored_under_the_earlier_rules_still_loads() {
        assert!(DomainName::parse("mail_relay.contoso.com").is_err());
        assert_eq!(
            DomainName::stored("Mail_Relay.contoso.com")
                .unwrap()
                .as_str(),
            "mail_relay.contoso.com"
        );
        assert_eq!(
            EmailAddress::stored("anne@mail_relay.contoso.com")
                .unwrap()
                .as_str(),
            "anne@mail_relay.contoso.com"
        );
        let from_json: EmailAddress = serde_json::from_str("\"bob@host.10\"").unwrap();
        assert_eq!(from_json.as_str(), "bob@host.10");
        assert!(DomainName::stored("no dot").is_err());
        assert!(EmailAddress::stored("not an address").is_err());
    }
}
