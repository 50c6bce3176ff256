//! The application's operations on customers, domains, users, groups, filters, sources and
//! the audit log: one method each, typed requests and results, every rule here (none in a
//! surface). The CLI calls these today; the web console and the REST API will call the same.

use serde::Serialize;
use usersync_core::filter::FilterRule;
use usersync_core::mapping::manual_user;
use usersync_core::{DirectoryUser, DomainName, EmailAddress, MailboxType};
use usersync_store::{
    AuditEntry, AuditQuery, Customer, Domain, DomainOrigin, Group, SecretString, SourceRecord,
    StoreError,
};

use crate::office365::{NewOffice365Source, Office365Settings};
use crate::{Engine, EngineError};

/// A user to add by hand.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub customer: String,
    pub address: String,
    pub display_name: Option<String>,
    pub mailbox_type: MailboxType,
}

/// A Microsoft 365 tenant to connect to a customer.
#[derive(Debug, Clone)]
pub struct NewOffice365 {
    pub customer: String,
    pub tenant_id: String,
    pub settings: Office365Settings,
    pub client_secret: SecretString,
}

/// A destination route as Postfix's transport maps take it (`TRANSPORT:NEXTHOP`), or
/// `None` for an empty one (the default route).
fn check_route(route: &str) -> Result<Option<String>, EngineError> {
    if route.is_empty() {
        return Ok(None);
    }
    let fix = "use TRANSPORT:NEXTHOP, such as smtp:[mx.example.net]:25 (empty for the default)";
    let Some((transport, nexthop)) = route.split_once(':') else {
        return Err(EngineError::config(
            "route",
            format!("'{route}' names no transport; {fix}"),
        ));
    };
    let transport_ok = !transport.is_empty()
        && transport
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let nexthop_ok = !nexthop.is_empty()
        && !nexthop
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',');
    if !transport_ok || !nexthop_ok {
        return Err(EngineError::config("route", format!("'{route}': {fix}")));
    }
    Ok(Some(route.to_string()))
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditRequest {
    pub customer: Option<String>,
    /// RFC 3339 (`2026-11-30T10:00:00Z`), a date (`2026-11-30`), or an age (`30m`, `12h`,
    /// `7d`): entries at or after it.
    pub since: Option<String>,
    pub limit: i64,
}

/// A customer setting, `KEY=VALUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CustomerSetting {
    /// Days removed users are kept before they are purged.
    Retention(i64),
}

impl CustomerSetting {
    /// Every key `customer set` takes.
    pub const KEYS: &'static [&'static str] = &["retention"];

    /// `retention=30d` (or `30`: days).
    pub fn parse(assignment: &str) -> Result<CustomerSetting, EngineError> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| {
            EngineError::config(
                "setting",
                format!(
                    "'{assignment}' is not KEY=VALUE; keys: {}",
                    Self::KEYS.join(", ")
                ),
            )
        })?;
        match key.trim() {
            "retention" => {
                let v = value.trim().to_ascii_lowercase();
                let digits = v.strip_suffix('d').unwrap_or(&v);
                let days: i64 = digits.parse().map_err(|_| {
                    EngineError::config(
                        "retention",
                        format!("'{value}' is not a number of days; use e.g. retention=30d"),
                    )
                })?;
                if !(1..=3650).contains(&days) {
                    return Err(EngineError::config(
                        "retention",
                        format!("{days} days is out of range; give 1 to 3650 days (e.g. 30d)"),
                    ));
                }
                Ok(CustomerSetting::Retention(days))
            }
            other => Err(EngineError::config(
                other,
                format!("unknown customer setting; keys: {}", Self::KEYS.join(", ")),
            )),
        }
    }
}

/// `--since` as RFC 3339 UTC text that the log's times compare with.
pub(crate) fn since_text(text: &str, now: time::OffsetDateTime) -> Result<String, EngineError> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    let bad = || {
        EngineError::config(
            "since",
            format!(
                "'{text}' is not a time; use 2026-11-30T10:00:00Z, a date such as 2026-11-30, \
                 or an age such as 30m, 12h or 7d"
            ),
        )
    };
    let at = if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        t
    } else if let Ok(d) = time::Date::parse(
        text,
        &time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        d.midnight().assume_utc()
    } else {
        let (number, unit) =
            text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
        let n: i64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "m" | "min" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(bad()),
        };
        now - time::Duration::seconds(seconds)
    };
    let at = at.to_offset(time::UtcOffset::UTC);
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .map_err(|_| bad())
}

impl Engine {
    // Customers.

    /// Adds a customer with its group Main.
    pub async fn add_customer(&self, name: &str) -> Result<Customer, EngineError> {
        Ok(self.store.add_customer(name).await?)
    }

    pub async fn customers(&self) -> Result<Vec<Customer>, EngineError> {
        Ok(self.store.list_customers().await?)
    }

    /// A customer by name, written in any case.
    pub async fn customer(&self, name: &str) -> Result<Customer, EngineError> {
        Ok(self.store.customer_by_name(name).await?)
    }

    /// Changes settings of a customer (`retention=30d`), all or none.
    pub async fn set_customer(
        &self,
        name: &str,
        assignments: &[String],
    ) -> Result<Customer, EngineError> {
        let settings = assignments
            .iter()
            .map(|a| CustomerSetting::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        if settings.is_empty() {
            return Err(EngineError::config(
                "setting",
                format!(
                    "give at least one KEY=VALUE; keys: {}",
                    CustomerSetting::KEYS.join(", ")
                ),
            ));
        }
        let mut customer = self.customer(name).await?;
        for setting in settings {
            customer = match setting {
                CustomerSetting::Retention(days) => {
                    self.store.set_customer_retention(customer.id, days).await?
                }
            };
        }
        Ok(customer)
    }

    // Domains.

    /// Gives a customer a mail domain by hand.
    pub async fn add_domain(&self, customer: &str, domain: &str) -> Result<Domain, EngineError> {
        let customer = self.customer(customer).await?;
        let name = parse_domain(domain)?;
        Ok(self
            .store
            .add_domain(customer.id, &name, DomainOrigin::Manual)
            .await?)
    }

    pub async fn domain(&self, domain: &str) -> Result<Domain, EngineError> {
        Ok(self.store.domain(&parse_domain(domain)?).await?)
    }

    /// Sets a domain's settings from `KEY=VALUE` texts, all or none. The one setting is
    /// `route`: where its mail goes on, a Postfix transport such as `smtp:[mx.example.net]:25`
    /// (empty: back to the default, a Microsoft 365 domain's Exchange Online host).
    pub async fn set_domain(
        &self,
        domain: &str,
        assignments: &[String],
    ) -> Result<Domain, EngineError> {
        let name = parse_domain(domain)?;
        let mut route = None;
        for assignment in assignments {
            let Some((key, value)) = assignment.split_once('=') else {
                return Err(EngineError::config(
                    "setting",
                    format!(
                        "'{assignment}' is not KEY=VALUE, such as route=smtp:[mx.example.net]:25"
                    ),
                ));
            };
            match key.trim() {
                "route" => route = Some(check_route(value.trim())?),
                other => {
                    return Err(EngineError::config(
                        other,
                        format!("a domain has no setting '{other}'; the one setting is route"),
                    ));
                }
            }
        }
        let Some(route) = route else {
            return Err(EngineError::config(
                "setting",
                "give a setting, such as route=smtp:[mx.example.net]:25",
            ));
        };
        Ok(self.store.set_domain_route(&name, route.as_deref()).await?)
    }

    pub async fn domains(&self, customer: &str) -> Result<Vec<Domain>, EngineError> {
        let customer = self.customer(customer).await?;
        Ok(self.store.list_domains(customer.id).await?)
    }

    // Users and groups.

    /// Adds a user by hand: no source manages it, so no sync changes or removes it.
    pub async fn add_user(&self, new: NewUser) -> Result<DirectoryUser, EngineError> {
        let customer = self.customer(&new.customer).await?;
        let address = EmailAddress::parse(&new.address)
            .map_err(|e| EngineError::config("address", e.to_string()))?;
        let user = manual_user(address, new.display_name, new.mailbox_type);
        Ok(self.store.add_manual_user(customer.id, &user).await?)
    }

    /// A customer's users, ordered by address; removed ones when asked.
    pub async fn users(
        &self,
        customer: &str,
        include_removed: bool,
    ) -> Result<Vec<DirectoryUser>, EngineError> {
        let customer = self.customer(customer).await?;
        Ok(self.store.users(customer.id, include_removed).await?)
    }

    /// Brings a removed user back, kept by hand from now on (until a tenant lists the
    /// address again and its source takes it over).
    pub async fn restore_user(
        &self,
        customer: &str,
        address: &str,
    ) -> Result<DirectoryUser, EngineError> {
        let customer = self.customer(customer).await?;
        let address = EmailAddress::parse(address)
            .map_err(|e| EngineError::config("address", e.to_string()))?;
        match self.store.restore_user(customer.id, &address).await {
            Err(StoreError::NotFound { .. }) => Err(EngineError::Store(StoreError::NotFound {
                what: "user",
                name: format!("{address}' of customer '{}", customer.name),
            })),
            other => Ok(other?),
        }
    }

    pub async fn groups(&self, customer: &str) -> Result<Vec<Group>, EngineError> {
        let customer = self.customer(customer).await?;
        Ok(self.store.list_groups(customer.id).await?)
    }

    pub async fn add_group(&self, customer: &str, name: &str) -> Result<Customer, EngineError> {
        let customer = self.customer(customer).await?;
        self.store.add_group(customer.id, name).await?;
        Ok(customer)
    }

    // The mail system's lookups.

    /// The protected domains and every active address with its aliases, as the mail
    /// system's lookups hold them (`usersync-lookup`).
    pub async fn lookup_data(&self) -> Result<usersync_store::LookupData, EngineError> {
        Ok(self.store.lookup_data().await?)
    }

    /// A number that grows with every change of users and domains.
    pub async fn directory_version(&self) -> Result<i64, EngineError> {
        Ok(self.store.directory_version().await?)
    }

    // Sources and their filters.

    /// Connects a Microsoft 365 tenant to a customer; nothing is stored when a setting is
    /// wrong. The connection is not tested here: [`Engine::test_source`] does that.
    pub async fn add_office365_source(
        &self,
        new: NewOffice365,
    ) -> Result<SourceRecord, EngineError> {
        self.add_office365_source_with(new, None).await
    }

    /// [`Engine::add_office365_source`], with a delegated sign-in's refresh token.
    pub(crate) async fn add_office365_source_with(
        &self,
        new: NewOffice365,
        refresh_token: Option<SecretString>,
    ) -> Result<SourceRecord, EngineError> {
        let customer = self.customer(&new.customer).await?;
        crate::office365::connect_office365_with(
            &self.store,
            NewOffice365Source {
                customer_id: customer.id,
                tenant_id: new.tenant_id,
                settings: new.settings,
                client_secret: new.client_secret,
            },
            refresh_token,
        )
        .await
    }

    /// Sources of one customer (by name) or of all; removed ones when asked.
    pub async fn sources(
        &self,
        customer: Option<&str>,
        include_removed: bool,
    ) -> Result<Vec<SourceRecord>, EngineError> {
        let customer_id = match customer {
            Some(name) => Some(self.customer(name).await?.id),
            None => None,
        };
        Ok(self
            .store
            .list_sources(customer_id, include_removed)
            .await?)
    }

    pub async fn source(&self, source_id: i64) -> Result<SourceRecord, EngineError> {
        Ok(self.store.source(source_id).await?)
    }

    /// A source's filter rules, first to last.
    pub async fn filter_rules(&self, source_id: i64) -> Result<Vec<FilterRule>, EngineError> {
        self.store.source(source_id).await?;
        Ok(self.store.filter_rules(source_id).await?)
    }

    pub async fn remove_filter_rule(
        &self,
        source_id: i64,
        rule_id: i64,
    ) -> Result<(), EngineError> {
        Ok(self.store.remove_filter_rule(source_id, rule_id).await?)
    }

    /// Moves a rule to 1-based position `to`; returns the rules in their new order.
    pub async fn move_filter_rule(
        &self,
        source_id: i64,
        rule_id: i64,
        to: usize,
    ) -> Result<Vec<FilterRule>, EngineError> {
        self.store.move_filter_rule(source_id, rule_id, to).await?;
        self.filter_rules(source_id).await
    }

    /// Forgets every stored secret (after the key was lost); returns the sources that held
    /// one, which need theirs again.
    pub async fn forget_secrets(&self) -> Result<Vec<SourceRecord>, EngineError> {
        let holding: Vec<SourceRecord> = self
            .store
            .list_sources(None, false)
            .await?
            .into_iter()
            .filter(|s| s.has_secret)
            .collect();
        self.store.forget_secrets().await?;
        Ok(holding)
    }

    // The audit log.

    /// Entries of the audit log, newest first.
    pub async fn audit(&self, request: &AuditRequest) -> Result<Vec<AuditEntry>, EngineError> {
        let customer_id = match &request.customer {
            Some(name) => Some(self.customer(name).await?.id),
            None => None,
        };
        let since = request
            .since
            .as_deref()
            .map(|s| since_text(s, time::OffsetDateTime::now_utc()))
            .transpose()?;
        if request.limit < 1 {
            return Err(EngineError::config("limit", "give 1 or more entries"));
        }
        Ok(self
            .store
            .audit_log(&AuditQuery {
                customer_id,
                since,
                before_id: None,
                limit: request.limit,
            })
            .await?)
    }

    /// The daily purge of removed users past their customer's retention, when it is due
    /// (any process may call it; one does the work, once a day). Logs what it did.
    pub async fn purge_due(&self) -> Option<usersync_store::PurgeReport> {
        match self.store.purge_due().await {
            Ok(Some(report)) => {
                tracing::info!(
                    purged = report.purged.len(),
                    stamped = report.stamped,
                    "purged removed users past their customer's retention"
                );
                Some(report)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %crate::error_text(&e), "the daily purge failed; it is tried again");
                None
            }
        }
    }

    // The service and the process.

    /// Refuses to go on unless this process's key opens the database's secrets (every
    /// `serve` and `worker` checks it at start).
    pub async fn require_key(&self) -> Result<(), EngineError> {
        Ok(self.store.require_key().await?)
    }

    /// Whether the database answers and its schema is the one this binary expects.
    pub async fn ready(&self) -> Result<(), EngineError> {
        Ok(self.store.ready().await?)
    }

    /// How the queue and the schedule stand, for metrics.
    pub async fn queue_stats(&self) -> Result<usersync_store::QueueStats, EngineError> {
        Ok(self.store.queue_stats().await?)
    }

    /// The key file this process generated to seal a secret (to be backed up), if it did.
    pub fn generated_key_file(&self) -> Option<std::path::PathBuf> {
        self.store.key().generated_file().map(|p| p.to_path_buf())
    }

    /// Where the key that seals secrets comes from, in words.
    pub fn key_description(&self) -> String {
        self.store.key().describe()
    }

    /// Closes the database connections.
    pub async fn close(&self) {
        self.store.close().await
    }

    /// Completes a "database is busy" error with who holds the database.
    pub async fn explain(&self, error: EngineError) -> EngineError {
        match error {
            EngineError::Store(e) => EngineError::Store(self.store.explain(e).await),
            other => other,
        }
    }
}

fn parse_domain(text: &str) -> Result<DomainName, EngineError> {
    DomainName::parse(text).map_err(|e| EngineError::config("domain", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_dates_and_ages() {
        let now = time::macros::datetime!(2026-11-30 10:00:00 UTC);
        assert_eq!(
            since_text("2026-11-29T08:30:00Z", now).unwrap(),
            "2026-11-29T08:30:00Z"
        );
        assert_eq!(
            since_text("2026-11-01", now).unwrap(),
            "2026-11-01T00:00:00Z"
        );
        assert_eq!(since_text("90m", now).unwrap(), "2026-11-30T08:30:00Z");
        assert_eq!(since_text("7d", now).unwrap(), "2026-11-23T10:00:00Z");
        let error = since_text("yesterday", now).unwrap_err();
        assert_eq!(error.field().as_deref(), Some("since"));
    }

    #[test]
    fn retention_is_days_in_range() {
        assert_eq!(
            CustomerSetting::parse("retention=30d").unwrap(),
            CustomerSetting::Retention(30)
        );
        assert_eq!(
            CustomerSetting::parse("retention=7").unwrap(),
            CustomerSetting::Retention(7)
        );
        for bad in ["retention=0d", "retention=month", "retention", "colour=red"] {
            let error = CustomerSetting::parse(bad).unwrap_err();
            assert!(error.field().is_some(), "{bad}: {error}");
        }
    }
}
