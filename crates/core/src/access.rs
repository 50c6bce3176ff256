//! Who may do what (PRODUCT.md "Who may do what"): the roles of console accounts and API
//! tokens, and the two questions every surface asks through the application layer: may
//! this principal see that customer, and may it change things there.

use serde::Serialize;

pub use crate::model::Role;

impl Role {
    /// Whether the role needs one customer (a customer admin does), may have one (read
    /// only: one customer or all) or may not (a provider admin sees every customer).
    pub fn scope_rule(self) -> ScopeRule {
        match self {
            Role::ProviderAdmin => ScopeRule::Forbidden,
            Role::CustomerAdmin => ScopeRule::Required,
            Role::ReadOnly => ScopeRule::Optional,
        }
    }
}

/// Whether a role is bound to one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeRule {
    Required,
    Optional,
    Forbidden,
}

/// What a principal may reach: its role and, when bound to one, its customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub role: Role,
    pub customer_id: Option<i64>,
}

/// Why a grant cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("a customer_admin belongs to one customer; name it (--customer NAME)")]
    CustomerMissing,
    #[error("a provider_admin reaches every customer; leave the customer out")]
    CustomerNotAllowed,
}

impl Grant {
    /// A grant, checked against its role's scope rule.
    pub fn new(role: Role, customer_id: Option<i64>) -> Result<Grant, GrantError> {
        match (role.scope_rule(), customer_id) {
            (ScopeRule::Required, None) => Err(GrantError::CustomerMissing),
            (ScopeRule::Forbidden, Some(_)) => Err(GrantError::CustomerNotAllowed),
            _ => Ok(Grant { role, customer_id }),
        }
    }

    /// Whether the principal may see the customer's objects. Where it may not, surfaces
    /// answer as if the object did not exist (404), never "forbidden": nobody learns what
    /// another customer holds.
    pub fn sees(&self, customer_id: i64) -> bool {
        self.customer_id.is_none_or(|own| own == customer_id)
    }

    /// Whether the principal sees every customer (the provider's view).
    pub fn sees_all(&self) -> bool {
        self.customer_id.is_none()
    }

    /// Whether the principal may change what it sees.
    pub fn changes(&self) -> bool {
        matches!(self.role, Role::ProviderAdmin | Role::CustomerAdmin)
    }

    /// Whether the principal may change what belongs to no customer or to all: customers
    /// themselves, accounts, tokens of other scopes.
    pub fn administers(&self) -> bool {
        self.role == Role::ProviderAdmin
    }

    /// Whether this principal may hand out `other` (a token or an account): never more
    /// than it holds itself.
    pub fn may_grant(&self, other: &Grant) -> bool {
        match self.role {
            Role::ProviderAdmin => true,
            Role::CustomerAdmin => {
                other.role != Role::ProviderAdmin
                    && other.customer_id.is_some()
                    && other.customer_id == self.customer_id
            }
            Role::ReadOnly => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_from_their_names_in_any_case() {
        assert_eq!(
            "Customer_Admin".parse::<Role>().unwrap(),
            Role::CustomerAdmin
        );
        let err = "owner".parse::<Role>().unwrap_err().to_string();
        assert!(
            err.contains("provider_admin, customer_admin, read_only"),
            "{err}"
        );
    }

    #[test]
    fn a_customer_admin_needs_its_customer_and_a_provider_admin_has_none() {
        assert_eq!(
            Grant::new(Role::CustomerAdmin, None),
            Err(GrantError::CustomerMissing)
        );
        assert_eq!(
            Grant::new(Role::ProviderAdmin, Some(1)),
            Err(GrantError::CustomerNotAllowed)
        );
        assert!(Grant::new(Role::ReadOnly, None).is_ok());
        assert!(Grant::new(Role::ReadOnly, Some(3)).is_ok());
    }

    #[test]
    fn a_customer_admin_sees_and_changes_its_own_customer_only() {
        let admin = Grant::new(Role::CustomerAdmin, Some(7)).unwrap();
        assert!(admin.sees(7) && !admin.sees(8) && !admin.sees_all());
        assert!(admin.changes() && !admin.administers());
        let reader = Grant::new(Role::ReadOnly, None).unwrap();
        assert!(reader.sees(7) && reader.sees(8) && !reader.changes());
        let provider = Grant::new(Role::ProviderAdmin, None).unwrap();
        assert!(provider.sees_all() && provider.changes() && provider.administers());
    }

    #[test]
    fn nobody_grants_more_than_it_holds() {
        let admin = Grant::new(Role::CustomerAdmin, Some(7)).unwrap();
        let own_reader = Grant::new(Role::ReadOnly, Some(7)).unwrap();
        let other_reader = Grant::new(Role::ReadOnly, Some(8)).unwrap();
        let all_reader = Grant::new(Role::ReadOnly, None).unwrap();
        let provider = Grant::new(Role::ProviderAdmin, None).unwrap();
        assert!(admin.may_grant(&own_reader) && admin.may_grant(&admin));
        assert!(!admin.may_grant(&other_reader) && !admin.may_grant(&all_reader));
        assert!(!admin.may_grant(&provider));
        assert!(provider.may_grant(&admin));
        assert!(!own_reader.may_grant(&own_reader));
    }
}
