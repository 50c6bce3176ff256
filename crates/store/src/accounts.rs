//! Console accounts, their sign-in sessions, and API tokens. The store keeps hashes only:
//! an account's Argon2id password hash, and the SHA-256 hash of each session's and token's
//! random text (the engine makes and checks both; the text is shown once to its holder).

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use usersync_core::{Grant, Role};

use crate::audit::Change;
use crate::{Store, StoreError, now, parse_enum, query_dyn};

/// A console account (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: i64,
    /// Lower-cased.
    pub email: String,
    pub role: Role,
    pub customer_id: Option<i64>,
    /// The customer's name, when bound to one.
    pub customer: Option<String>,
    pub created_at: String,
    pub disabled: bool,
}

impl Account {
    pub fn grant(&self) -> Grant {
        Grant {
            role: self.role,
            customer_id: self.customer_id,
        }
    }
}

/// An API token as listed (never with its text or hash).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub customer_id: Option<i64>,
    pub customer: Option<String>,
    /// Who made it (an account's e-mail, or the operating-system user of `token create`).
    pub created_by: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl ApiToken {
    pub fn grant(&self) -> Grant {
        Grant {
            role: self.role,
            customer_id: self.customer_id,
        }
    }
}

/// A signed-in session: its account and the token its forms must carry.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub account: Account,
    pub csrf_token: String,
    /// Seconds left, on the database's clock.
    pub expires_in: i64,
}

const ACCOUNT_COLUMNS: &str = "a.id, a.email, a.role, a.customer_id, c.name AS customer, \
     a.created_at, a.disabled_at";

const TOKEN_COLUMNS: &str = "t.id, t.name, t.role, t.customer_id, c.name AS customer, \
     t.created_by, t.created_at, t.last_used_at, t.revoked_at";

fn account_from(row: &AnyRow) -> Result<Account, StoreError> {
    let role: String = row.try_get("role")?;
    let disabled: Option<String> = row.try_get("disabled_at")?;
    Ok(Account {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        role: parse_enum(&role, "accounts.role")?,
        customer_id: row.try_get("customer_id")?,
        customer: row.try_get("customer")?,
        created_at: row.try_get("created_at")?,
        disabled: disabled.is_some(),
    })
}

fn token_from(row: &AnyRow) -> Result<ApiToken, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: parse_enum(&role, "api_tokens.role")?,
        customer_id: row.try_get("customer_id")?,
        customer: row.try_get("customer")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn scope_text(grant: &Grant, customer: Option<&str>) -> serde_json::Value {
    serde_json::json!({ "role": grant.role, "customer": customer })
}

impl Store {
    /// Adds a console account; its e-mail is unique (compared lower-cased).
    pub async fn add_account(
        &self,
        email: &str,
        password_hash: &str,
        grant: &Grant,
    ) -> Result<Account, StoreError> {
        let email = email.trim().to_lowercase();
        let mut tx = self.write_tx().await?;
        let taken = sqlx::query("SELECT id FROM accounts WHERE email = $1")
            .bind(&email)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "an account for {email} exists already"
            )));
        }
        let customer = match grant.customer_id {
            Some(id) => Some(self.customer_name_in(&mut tx, id).await?),
            None => None,
        };
        let row = sqlx::query(
            "INSERT INTO accounts (email, password_hash, role, customer_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&email)
        .bind(password_hash)
        .bind(grant.role.as_str())
        .bind(grant.customer_id)
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        self.audit_now(
            &mut tx,
            &[Change::new(grant.customer_id, "account.add", &email)
                .after(scope_text(grant, customer.as_deref()))],
        )
        .await?;
        let account = account_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(account)
    }

    /// How many accounts there are (the first is made from the command line).
    pub async fn count_accounts(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM accounts")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// An account and its password hash, by e-mail (any case).
    pub async fn account_for_sign_in(
        &self,
        email: &str,
    ) -> Result<Option<(Account, String)>, StoreError> {
        let row = query_dyn(&format!(
            "SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a \
             LEFT JOIN customers c ON c.id = a.customer_id WHERE a.email = $1"
        ))
        .bind(email.trim().to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((account_from(&r)?, r.try_get("password_hash")?)))
            .transpose()
    }

    /// Every account, by e-mail.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = query_dyn(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a \
             LEFT JOIN customers c ON c.id = a.customer_id ORDER BY a.email"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(account_from).collect()
    }

    /// Starts a session of `account_id`, kept `ttl_secs`.
    /// Failed sign-ins of `key` (an account or a client address) in the last
    /// `window_secs`, by every process of the database: how many, and the seconds until
    /// the oldest of them leaves the window.
    pub async fn sign_in_failures(
        &self,
        key: &str,
        window_secs: i64,
    ) -> Result<(i64, i64), StoreError> {
        let now = self.db_now();
        let row = query_dyn(&format!(
            "SELECT COUNT(*) AS n, MIN(at) AS oldest, {now} AS now FROM sign_in_failures \
             WHERE key = $1 AND at > {now} - $2"
        ))
        .bind(key)
        .bind(window_secs)
        .fetch_one(&self.pool)
        .await?;
        let count: i64 = row.try_get("n")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        let now: i64 = row.try_get("now")?;
        Ok((count, oldest.map_or(0, |o| (o + window_secs - now).max(1))))
    }

    /// Counts a sign-in attempt against each key (its account, its client address) from
    /// now on, before its password is checked: parallel attempts see each other.
    pub async fn begin_sign_in_attempt(
        &self,
        keys: &[&str],
        attempt: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        // A day of them is more than any window needs.
        query_dyn(&format!(
            "DELETE FROM sign_in_failures WHERE at < {} - 86400",
            self.db_now()
        ))
        .execute(&mut *tx)
        .await?;
        for key in keys {
            query_dyn(&format!(
                "INSERT INTO sign_in_failures (key, at, attempt) VALUES ($1, {}, $2)",
                self.db_now()
            ))
            .bind(*key)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An attempt that did not fail (it signed in, or never got to the password): it
    /// counts no more; with `forget`, neither do the earlier failures of that key.
    pub async fn end_sign_in_attempt(
        &self,
        attempt: &str,
        forget: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sign_in_failures WHERE attempt = $1 OR key = $2")
            .bind(attempt)
            .bind(forget.unwrap_or(""))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn add_session(
        &self,
        account_id: i64,
        token_hash: &str,
        csrf_token: &str,
        ttl_secs: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        // Sessions that ran out go when a new one starts.
        query_dyn(&format!(
            "DELETE FROM sessions WHERE expires_at <= {}",
            self.db_now()
        ))
        .execute(&mut *tx)
        .await?;
        query_dyn(&format!(
            "INSERT INTO sessions (token_hash, account_id, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, {} + $5)",
            self.db_now()
        ))
        .bind(token_hash)
        .bind(account_id)
        .bind(csrf_token)
        .bind(now())
        .bind(ttl_secs)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live session with this token hash, of an account not disabled.
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = query_dyn(&format!(
            "SELECT {ACCOUNT_COLUMNS}, s.csrf_token, s.expires_at - {now} AS expires_in \
             FROM sessions s JOIN accounts a ON a.id = s.account_id \
             LEFT JOIN customers c ON c.id = a.customer_id \
             WHERE s.token_hash = $1 AND s.expires_at > {now} AND a.disabled_at IS NULL",
            now = self.db_now()
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                account: account_from(&r)?,
                csrf_token: r.try_get("csrf_token")?,
                expires_in: r.try_get("expires_in")?,
            })
        })
        .transpose()
    }

    /// Ends a session (signing out); ending one that is gone is not an error.
    pub async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keeps a new API token's hash.
    pub async fn add_api_token(
        &self,
        name: &str,
        token_hash: &str,
        grant: &Grant,
    ) -> Result<ApiToken, StoreError> {
        let mut tx = self.write_tx().await?;
        let customer = match grant.customer_id {
            Some(id) => Some(self.customer_name_in(&mut tx, id).await?),
            None => None,
        };
        let row = sqlx::query(
            "INSERT INTO api_tokens (token_hash, name, role, customer_id, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(token_hash)
        .bind(name)
        .bind(grant.role.as_str())
        .bind(grant.customer_id)
        .bind(self.actor.to_string())
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        self.audit_now(
            &mut tx,
            &[Change::new(
                grant.customer_id,
                "token.add",
                format!("token #{id} {name}"),
            )
            .after(scope_text(grant, customer.as_deref()))],
        )
        .await?;
        let token = token_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The token with this hash when it is not revoked; its last use is set to now.
    pub async fn use_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = query_dyn(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t LEFT JOIN customers c ON c.id = t.customer_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut token = token_from(&row)?;
        let stamp = now();
        // The time of last use is a hint: a busy database does not fail the request.
        if token
            .last_used_at
            .as_deref()
            .is_none_or(|t| t.get(..16) != stamp.get(..16))
        {
            let written = sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(&stamp)
                .bind(token.id)
                .execute(&self.pool)
                .await;
            if let Err(e) = written {
                tracing::debug!(error = %e, token = token.id, "last use of a token not written");
            }
            token.last_used_at = Some(stamp);
        }
        Ok(Some(token))
    }

    /// API tokens, of one customer or of all, newest first (revoked ones included).
    pub async fn api_tokens(&self, customer_id: Option<i64>) -> Result<Vec<ApiToken>, StoreError> {
        let filter = if customer_id.is_some() {
            "WHERE t.customer_id = $1"
        } else {
            ""
        };
        let mut q = query_dyn(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t LEFT JOIN customers c ON c.id = t.customer_id \
             {filter} ORDER BY t.id DESC"
        ));
        if let Some(id) = customer_id {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(token_from).collect()
    }

    /// One API token by id.
    pub async fn api_token(&self, id: i64) -> Result<ApiToken, StoreError> {
        let mut conn = self.pool.acquire().await?;
        token_in(&mut conn, id).await
    }

    /// Revokes a token: it authenticates nothing from now on.
    pub async fn revoke_api_token(&self, id: i64) -> Result<ApiToken, StoreError> {
        let mut tx = self.write_tx().await?;
        let token = token_in(&mut tx, id).await?;
        if token.revoked_at.is_some() {
            return Ok(token);
        }
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.audit_now(
            &mut tx,
            &[Change::new(
                token.customer_id,
                "token.revoke",
                format!("token #{id} {}", token.name),
            )],
        )
        .await?;
        let token = token_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(token)
    }

    async fn customer_name_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: i64,
    ) -> Result<String, StoreError> {
        let row = sqlx::query("SELECT name FROM customers WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "customer",
                name: format!("#{id}"),
            })?;
        Ok(row.try_get("name")?)
    }
}

/// The one row `select` (with `$1` the id) finds, as `from` makes it; `what` names it
/// when there is none.
async fn one_in<T>(
    conn: &mut sqlx::AnyConnection,
    select: &str,
    id: i64,
    what: &'static str,
    from: fn(&AnyRow) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let row = query_dyn(select)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what,
            name: format!("#{id}"),
        })?;
    from(&row)
}

async fn account_in(conn: &mut sqlx::AnyConnection, id: i64) -> Result<Account, StoreError> {
    let select = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a LEFT JOIN customers c ON c.id = a.customer_id \
         WHERE a.id = $1"
    );
    one_in(conn, &select, id, "account", account_from).await
}

async fn token_in(conn: &mut sqlx::AnyConnection, id: i64) -> Result<ApiToken, StoreError> {
    let select = format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens t LEFT JOIN customers c ON c.id = t.customer_id \
         WHERE t.id = $1"
    );
    one_in(conn, &select, id, "token", token_from).await
}
