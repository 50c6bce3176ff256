//! What the unit tests of planning share: a customer with one domain and a licensed,
//! enabled user with its addresses.

use crate::address::DomainName;
use crate::mapping::MappingContext;
use crate::snapshot::SourceUser;

/// The source the tests plan for.
pub(crate) const SOURCE: i64 = 1;

/// Source #1 of a customer whose one domain is contoso.com, with default options.
pub(crate) fn ctx() -> MappingContext {
    MappingContext::new(
        SOURCE,
        [DomainName::parse("contoso.com").unwrap()].into(),
        crate::options::SourceOptions::default(),
    )
}

/// A licensed, enabled user whose primary SMTP address is `address`, with these aliases.
pub(crate) fn user<A: AsRef<str>>(id: &str, address: &str, aliases: &[A]) -> SourceUser {
    let mut proxy = vec![format!("SMTP:{address}")];
    proxy.extend(aliases.iter().map(|a| format!("smtp:{}", a.as_ref())));
    SourceUser {
        id: id.into(),
        mail: Some(address.into()),
        proxy_addresses: proxy,
        display_name: Some(id.to_uppercase()),
        account_enabled: Some(true),
        assigned_licenses: vec!["e3".into()],
        ..SourceUser::default()
    }
}
