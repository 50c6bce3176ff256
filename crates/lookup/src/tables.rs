//! The maps the mail system asks, held in memory, and their answers: pure, no I/O.

use std::collections::{HashMap, HashSet};

/// One protected domain as the lookups see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEntry {
    /// Lower-case, without a trailing dot.
    pub name: String,
    /// Mail to addresses not listed is rejected (switched on by the domain's first sync);
    /// off, every address of the domain is accepted.
    pub reject_unlisted: bool,
    /// Where its mail goes on (a Postfix transport, `smtp:[host]:25`), when known.
    pub route: Option<String>,
}

/// The destination route of a Microsoft 365 domain: its Exchange Online MX host, the
/// domain with its dots made hyphens under `mail.protection.outlook.com`, as Microsoft's
/// admin centre shows it (`contoso.com` -> `contoso-com.mail.protection.outlook.com`).
pub fn microsoft365_route(domain: &str) -> String {
    format!(
        "smtp:[{}.mail.protection.outlook.com]:25",
        domain
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .replace('.', "-")
    )
}

/// An answer, as socketmap sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    NotFound,
    /// Try again later (the mail is deferred, not bounced).
    Temp(String),
    /// The request is wrong: no retry mends it.
    Perm(String),
}

impl Reply {
    /// The reply's text inside its netstring.
    pub fn to_wire(&self) -> String {
        match self {
            Reply::Ok(data) => format!("OK {data}"),
            Reply::NotFound => "NOTFOUND ".to_string(),
            Reply::Temp(reason) => format!("TEMP {reason}"),
            Reply::Perm(reason) => format!("PERM {reason}"),
        }
    }
}

/// The map names a request may ask.
pub const MAPS: &[&str] = &["recipients", "domains", "transport"];

/// Every protected domain and every active address (aliases included), lower-case.
#[derive(Debug, Default)]
pub struct LookupTables {
    domains: HashMap<Box<str>, (bool, Option<Box<str>>)>,
    recipients: HashSet<Box<str>>,
}

impl LookupTables {
    pub fn new(
        domains: impl IntoIterator<Item = DomainEntry>,
        addresses: impl IntoIterator<Item = String>,
    ) -> LookupTables {
        let domains = domains
            .into_iter()
            .map(|d| {
                (
                    d.name.trim_end_matches('.').to_ascii_lowercase().into(),
                    (d.reject_unlisted, d.route.map(String::into_boxed_str)),
                )
            })
            .collect();
        let recipients = addresses
            .into_iter()
            .map(|a| a.to_lowercase().into_boxed_str())
            .collect();
        LookupTables {
            domains,
            recipients,
        }
    }

    /// How many addresses and domains it holds.
    pub fn len(&self) -> (usize, usize) {
        (self.recipients.len(), self.domains.len())
    }

    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty() && self.domains.is_empty()
    }

    /// The answer to `request` (`MAP KEY`). `delimiter` separates an address's extension
    /// (`ann+news@` is `ann@`).
    pub fn answer(&self, request: &str, delimiter: Option<char>) -> Reply {
        let Some((map, key)) = request.split_once(' ') else {
            return Reply::Perm(format!(
                "the request is not 'MAP KEY'; maps: {}",
                MAPS.join(", ")
            ));
        };
        let key = key.trim().to_lowercase();
        match map {
            "recipients" => self.recipient(&key, delimiter),
            "domains" => match self.domains.get(key.trim_end_matches('.')) {
                Some(_) => Reply::Ok("ok".into()),
                None => Reply::NotFound,
            },
            "transport" => match self.domains.get(key.trim_end_matches('.')) {
                Some((_, Some(route))) => Reply::Ok(route.to_string()),
                _ => Reply::NotFound,
            },
            other => Reply::Perm(format!("no map '{other}'; maps: {}", MAPS.join(", "))),
        }
    }

    fn recipient(&self, key: &str, delimiter: Option<char>) -> Reply {
        let Some((local, domain)) = key.rsplit_once('@') else {
            return Reply::NotFound;
        };
        if local.is_empty() {
            // `@domain`: a catch-all, which a protected domain never has.
            return Reply::NotFound;
        }
        let Some((reject_unlisted, _)) = self.domains.get(domain.trim_end_matches('.')) else {
            return Reply::NotFound;
        };
        if !reject_unlisted || self.recipients.contains(key) {
            return Reply::Ok("ok".into());
        }
        // `ann+news@`: the address without its extension.
        if let Some(d) = delimiter
            && let Some((base, _)) = local.split_once(d)
            && !base.is_empty()
            && self
                .recipients
                .contains(format!("{base}@{domain}").as_str())
        {
            return Reply::Ok("ok".into());
        }
        Reply::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> LookupTables {
        LookupTables::new(
            [
                DomainEntry {
                    name: "contoso.com".into(),
                    reject_unlisted: true,
                    route: Some(microsoft365_route("contoso.com")),
                },
                DomainEntry {
                    name: "Fabrikam.example.".into(),
                    reject_unlisted: false,
                    route: None,
                },
            ],
            [
                "ann@contoso.com".to_string(),
                "Sales@Contoso.com".to_string(),
                "a+b@contoso.com".to_string(),
            ],
        )
    }

    #[test]
    fn recipients_are_listed_addresses_of_protected_domains() {
        let t = tables();
        let ok = Reply::Ok("ok".into());
        assert_eq!(t.answer("recipients ann@contoso.com", Some('+')), ok);
        assert_eq!(t.answer("recipients ANN@Contoso.COM", Some('+')), ok);
        assert_eq!(
            t.answer("recipients sales@contoso.com", Some('+')),
            ok,
            "an alias"
        );
        assert_eq!(t.answer("recipients ann+news@contoso.com", Some('+')), ok);
        assert_eq!(
            t.answer("recipients ann+news@contoso.com", None),
            Reply::NotFound,
            "no delimiter, no extension"
        );
        assert_eq!(t.answer("recipients ann-news@contoso.com", Some('-')), ok);
        assert_eq!(
            t.answer("recipients a+b@contoso.com", Some('+')),
            ok,
            "listed as is"
        );
        assert_eq!(
            t.answer("recipients bob@contoso.com", Some('+')),
            Reply::NotFound
        );
        assert_eq!(
            t.answer("recipients +x@contoso.com", Some('+')),
            Reply::NotFound
        );
        assert_eq!(
            t.answer("recipients @contoso.com", Some('+')),
            Reply::NotFound
        );
        assert_eq!(t.answer("recipients ann", Some('+')), Reply::NotFound);
        assert_eq!(
            t.answer("recipients ann@other.com", Some('+')),
            Reply::NotFound
        );
        // A domain not rejecting unlisted addresses yet takes any of them.
        assert_eq!(t.answer("recipients who@fabrikam.example", Some('+')), ok);
    }

    #[test]
    fn domains_and_routes() {
        let t = tables();
        assert_eq!(
            t.answer("domains contoso.com", None),
            Reply::Ok("ok".into())
        );
        assert_eq!(
            t.answer("domains fabrikam.example.", None),
            Reply::Ok("ok".into())
        );
        assert_eq!(t.answer("domains other.com", None), Reply::NotFound);
        assert_eq!(
            t.answer("transport contoso.com", None),
            Reply::Ok("smtp:[contoso-com.mail.protection.outlook.com]:25".into())
        );
        assert_eq!(
            t.answer("transport fabrikam.example", None),
            Reply::NotFound
        );
        assert_eq!(t.answer("transport ann@contoso.com", None), Reply::NotFound);
        assert_eq!(
            microsoft365_route("My-Company.co.uk"),
            "smtp:[my-company-co-uk.mail.protection.outlook.com]:25"
        );
    }

    #[test]
    fn a_wrong_request_is_refused_for_good() {
        let t = tables();
        assert!(
            matches!(t.answer("users ann@contoso.com", None), Reply::Perm(m) if m.contains("recipients"))
        );
        assert!(matches!(t.answer("recipients", None), Reply::Perm(_)));
        assert_eq!(Reply::NotFound.to_wire(), "NOTFOUND ");
        assert_eq!(Reply::Temp("loading".into()).to_wire(), "TEMP loading");
    }
}
