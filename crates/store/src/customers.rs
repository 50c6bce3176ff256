//! Customers, their domains and their console groups.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use usersync_core::mapping::MAIN_GROUP;
use usersync_core::{DomainName, NameKind, check_name, same_name};

use crate::audit::Change;
use crate::{Store, StoreError, now, query_dyn};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    /// Days a removed user is kept (restorable) before it is purged.
    pub retention_days: i64,
}

/// How a domain came to the customer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainOrigin {
    /// Added by an operator.
    Manual,
    /// Imported from a source's tenant.
    Source,
}

impl DomainOrigin {
    fn as_str(self) -> &'static str {
        match self {
            DomainOrigin::Manual => "manual",
            DomainOrigin::Source => "source",
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    pub id: i64,
    pub customer_id: i64,
    pub customer: String,
    pub name: DomainName,
    /// How the domain came to the customer: added by hand or imported from a source.
    pub origin: DomainOrigin,
    /// The source that imported the domain or first synced addresses in it.
    pub source_id: Option<i64>,
    /// Reject mail to addresses not listed (switched on by the first successful sync).
    pub reject_unlisted: bool,
    /// Protect listed mailboxes only (switched on by the first successful sync).
    pub protect_listed_only: bool,
    /// Where its mail goes on (a Postfix transport such as `smtp:[mx.example.net]:25`),
    /// when set by hand; a Microsoft 365 domain's otherwise follows from its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub created_at: String,
}

const DOMAIN_COLUMNS: &str = "d.id, d.customer_id, c.name AS customer, d.name, d.origin, d.source_id, \
     d.reject_unlisted, d.protect_listed_only, d.route, d.created_at";

fn domain_from(row: &AnyRow) -> Result<Domain, StoreError> {
    let name: String = row.try_get("name")?;
    let origin: String = row.try_get("origin")?;
    let reject: i64 = row.try_get("reject_unlisted")?;
    let protect: i64 = row.try_get("protect_listed_only")?;
    Ok(Domain {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        customer: row.try_get("customer")?,
        name: DomainName::stored(&name).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        origin: if origin == "source" {
            DomainOrigin::Source
        } else {
            DomainOrigin::Manual
        },
        source_id: row.try_get("source_id")?,
        reject_unlisted: reject != 0,
        protect_listed_only: protect != 0,
        route: row.try_get("route")?,
        created_at: row.try_get("created_at")?,
    })
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub id: i64,
    pub customer_id: i64,
    pub name: String,
    /// The source that keeps it in step with a tenant group, if any.
    pub source_id: Option<i64>,
    pub tenant_group_id: Option<String>,
    /// Users whose group this is, and members from the tenant group; sorted.
    pub members: Vec<String>,
}

fn customer_from(row: &AnyRow) -> Result<Customer, StoreError> {
    Ok(Customer {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        retention_days: row.try_get("retention_days")?,
    })
}

const CUSTOMER_COLUMNS: &str = "id, name, created_at, retention_days";

/// PostgreSQL advisory lock that serialises adding customers ("customer" in ASCII).
const CUSTOMER_NAMES_LOCK: i64 = 0x0063_7573_746f_6d65;

impl Store {
    /// Creates a customer together with its group "Main". Names are checked (length,
    /// control characters) and unique whatever their case: "contoso" and "Contoso" would
    /// be two customers nobody can tell apart.
    pub async fn add_customer(&self, name: &str) -> Result<Customer, StoreError> {
        let name =
            check_name(NameKind::Customer, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let name = name.as_str();
        let mut tx = self.write_tx().await?;
        if self.backend == crate::Backend::Postgres {
            // Two processes adding "contoso" and "Contoso" at once take turns (SQLite's
            // writers do already), so the check below sees the other's customer.
            sqlx::query("SELECT CAST(pg_advisory_xact_lock($1) AS TEXT) AS locked")
                .bind(CUSTOMER_NAMES_LOCK)
                .fetch_one(&mut *tx)
                .await?;
        }
        for row in sqlx::query("SELECT name FROM customers")
            .fetch_all(&mut *tx)
            .await?
        {
            let existing: String = row.try_get("name")?;
            if same_name(&existing, name) {
                return Err(StoreError::Conflict(format!(
                    "a customer named '{existing}' already exists (names are compared ignoring case)"
                )));
            }
        }
        let created_at = now();
        let row = sqlx::query(
            "INSERT INTO customers (name, created_at) VALUES ($1, $2) RETURNING id, name, created_at, retention_days",
        )
        .bind(name)
        .bind(&created_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if StoreError::is_unique_violation(&e) {
                StoreError::Conflict(format!("a customer named '{name}' already exists"))
            } else {
                e.into()
            }
        })?;
        let customer = customer_from(&row)?;
        sqlx::query(
            "INSERT INTO console_groups (customer_id, name, created_at) VALUES ($1, $2, $3)",
        )
        .bind(customer.id)
        .bind(MAIN_GROUP)
        .bind(&created_at)
        .execute(&mut *tx)
        .await?;
        self.audit_now(
            &mut tx,
            &[
                Change::new(Some(customer.id), "customer.add", &customer.name)
                    .after(serde_json::json!({"retention_days": customer.retention_days})),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// Sets how many days removed users of the customer are kept before they are purged.
    pub async fn set_customer_retention(
        &self,
        customer_id: i64,
        days: i64,
    ) -> Result<Customer, StoreError> {
        if !(1..=3650).contains(&days) {
            return Err(StoreError::Invalid(format!(
                "retention: {days} days is out of range; give 1 to 3650 days"
            )));
        }
        let before = self.customer(customer_id).await?;
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE customers SET retention_days = $1 WHERE id = $2")
            .bind(days)
            .bind(customer_id)
            .execute(&mut *tx)
            .await?;
        self.audit_now(
            &mut tx,
            &[Change::new(Some(customer_id), "customer.set", &before.name)
                .before(serde_json::json!({"retention_days": before.retention_days}))
                .after(serde_json::json!({"retention_days": days}))],
        )
        .await?;
        tx.commit().await?;
        self.customer(customer_id).await
    }

    /// The customer of that name, written in any case.
    pub async fn customer_by_name(&self, name: &str) -> Result<Customer, StoreError> {
        let name = name.trim();
        let exact = query_dyn(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = exact {
            return customer_from(&row);
        }
        let all = self.list_customers().await?;
        let mut matching = all.into_iter().filter(|c| same_name(&c.name, name));
        match (matching.next(), matching.next()) {
            (Some(c), None) => Ok(c),
            _ => Err(StoreError::not_found("customer", name)),
        }
    }

    pub async fn customer(&self, id: i64) -> Result<Customer, StoreError> {
        let row = query_dyn(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("customer", id))?;
        customer_from(&row)
    }

    pub async fn list_customers(&self) -> Result<Vec<Customer>, StoreError> {
        let rows = query_dyn(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(customer_from).collect()
    }

    /// Adds a mail domain to a customer; a domain belongs to one customer only.
    pub async fn add_domain(
        &self,
        customer_id: i64,
        name: &DomainName,
        origin: DomainOrigin,
    ) -> Result<Domain, StoreError> {
        self.add_domain_from(customer_id, name, origin, None).await
    }

    /// Adds a domain, noting the source that imported it.
    pub async fn add_domain_from(
        &self,
        customer_id: i64,
        name: &DomainName,
        origin: DomainOrigin,
        source_id: Option<i64>,
    ) -> Result<Domain, StoreError> {
        if let Some(row) =
            sqlx::query("SELECT c.name FROM domains d JOIN customers c ON c.id = d.customer_id WHERE d.name = $1")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await?
        {
            let owner: String = row.try_get("name")?;
            return Err(StoreError::Conflict(format!(
                "the domain {name} already belongs to the customer '{owner}'"
            )));
        }
        if name.is_onmicrosoft() {
            return Err(StoreError::Invalid(format!(
                "{name} is a Microsoft initial domain; addresses in *.onmicrosoft.com are never synced, so it is not added"
            )));
        }
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO domains (customer_id, name, origin, source_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(customer_id)
        .bind(name.as_str())
        .bind(origin.as_str())
        .bind(source_id)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if StoreError::is_unique_violation(&e) {
                StoreError::Conflict(format!("the domain {name} was added by another process at the same moment"))
            } else {
                e.into()
            }
        })?;
        self.audit_now(
            &mut tx,
            &[Change::new(Some(customer_id), "domain.add", name)
                .after(serde_json::json!({"origin": origin, "source_id": source_id}))],
        )
        .await?;
        tx.commit().await?;
        self.domain(name).await
    }

    /// One domain, by name.
    /// Sets (or with `None` clears) a domain's own destination route.
    pub async fn set_domain_route(
        &self,
        name: &DomainName,
        route: Option<&str>,
    ) -> Result<Domain, StoreError> {
        let before = self.domain(name).await?;
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE domains SET route = $1 WHERE id = $2")
            .bind(route)
            .bind(before.id)
            .execute(&mut *tx)
            .await?;
        self.audit_now(
            &mut tx,
            &[
                Change::new(Some(before.customer_id), "domain.set", name.as_str())
                    .before(serde_json::json!({"route": before.route}))
                    .after(serde_json::json!({"route": route})),
            ],
        )
        .await?;
        tx.commit().await?;
        self.domain(name).await
    }

    pub async fn domain(&self, name: &DomainName) -> Result<Domain, StoreError> {
        let row = query_dyn(&format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains d JOIN customers c ON c.id = d.customer_id WHERE d.name = $1"
        ))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("domain", name))?;
        domain_from(&row)
    }

    pub async fn list_domains(&self, customer_id: i64) -> Result<Vec<Domain>, StoreError> {
        let rows = query_dyn(&format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains d JOIN customers c ON c.id = d.customer_id \
             WHERE d.customer_id = $1 ORDER BY d.name"
        ))
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(domain_from).collect()
    }

    /// Adds a console group by hand.
    pub async fn add_group(&self, customer_id: i64, name: &str) -> Result<(), StoreError> {
        let name =
            check_name(NameKind::Group, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let name = name.as_str();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO console_groups (customer_id, name, created_at) VALUES ($1, $2, $3)",
        )
        .bind(customer_id)
        .bind(name)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if StoreError::is_unique_violation(&e) {
                StoreError::Conflict(format!("the group '{name}' already exists"))
            } else {
                e.into()
            }
        })?;
        self.audit_now(
            &mut tx,
            &[Change::new(Some(customer_id), "group.add", name)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_groups(&self, customer_id: i64) -> Result<Vec<Group>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, customer_id, name, source_id, source_object_id FROM console_groups \
             WHERE customer_id = $1 ORDER BY name",
        )
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        let member_rows = sqlx::query(
            "SELECT u.group_id AS group_id, u.address FROM users u WHERE u.customer_id = $1 AND u.status = 'active' \
             UNION SELECT m.group_id AS group_id, u.address FROM group_members m JOIN users u ON u.id = m.user_id \
             WHERE u.customer_id = $1 AND u.status = 'active'",
        )
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        let mut members: std::collections::HashMap<i64, std::collections::BTreeSet<String>> =
            Default::default();
        for row in &member_rows {
            members
                .entry(row.try_get("group_id")?)
                .or_default()
                .insert(row.try_get("address")?);
        }
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                Ok(Group {
                    id,
                    customer_id: row.try_get("customer_id")?,
                    name: row.try_get("name")?,
                    source_id: row.try_get("source_id")?,
                    tenant_group_id: row.try_get("source_object_id")?,
                    members: members
                        .remove(&id)
                        .map(|m| m.into_iter().collect())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}
