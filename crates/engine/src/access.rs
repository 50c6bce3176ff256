//! Who is asking, and what they may reach: console accounts (passwords as Argon2id
//! hashes), their sessions, API tokens, and [`Access`], the one place where every surface
//! (console pages and the REST API) has what a principal asks for checked before the
//! engine does it.
//!
//! Objects of a customer the principal does not see are reported as not existing (the
//! same error as for an id nobody has), so nobody learns what another customer holds.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use usersync_core::{EmailAddress, Grant, Role};
use usersync_store::{
    Account, ApiToken, AuditEntry, AuditQuery, Customer, Domain, RunRecord, RunStatus,
    SecretString, SourceRecord, StoreError, UserQuery,
};

use crate::{Engine, EngineError, NoProgress, Progress, RunOutcome};

/// How long a console session lasts without signing in again.
pub const SESSION_TTL_SECS: i64 = 12 * 3600;

/// Shortest password an account may have.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Who is asking: a signed-in account or an API token, with what it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// As the audit log names it: the account's e-mail, or `token #ID NAME`.
    pub name: String,
    pub grant: Grant,
    pub kind: PrincipalKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    Account(i64),
    Token(i64),
}

impl Principal {
    fn of_account(account: &Account) -> Principal {
        Principal {
            name: account.email.clone(),
            grant: account.grant(),
            kind: PrincipalKind::Account(account.id),
        }
    }

    fn of_token(token: &ApiToken) -> Principal {
        Principal {
            name: format!("token #{} {}", token.id, token.name),
            grant: token.grant(),
            kind: PrincipalKind::Token(token.id),
        }
    }
}

/// A session just started: its secret (the cookie's value, shown to nobody else) and the
/// token its forms carry.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: SecretString,
    pub csrf_token: String,
    pub principal: Principal,
}

/// A live session.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub principal: Principal,
    pub csrf_token: String,
}

/// A token just made: its text, shown this once, and its record.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: SecretString,
    pub record: ApiToken,
}

/// Failed sign-ins allowed per account, and per client address, in
/// [`SIGN_IN_FAILURE_WINDOW_SECS`]; then even the right password waits.
pub const SIGN_IN_FAILURES_PER_ACCOUNT: i64 = 5;
pub const SIGN_IN_FAILURES_PER_ADDRESS: i64 = 20;
pub const SIGN_IN_FAILURE_WINDOW_SECS: i64 = 15 * 60;

/// The random text of a session or token: 32 bytes, URL-safe base64, with a prefix that
/// says what it is (so one found in a log or a repository is recognised).
fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A random token for a form (32 bytes, URL-safe base64).
pub fn random_token() -> String {
    random_secret("")
}

/// What the store keeps of a session's or a token's text.
pub(crate) fn digest(secret: &str) -> String {
    let hash = Sha256::digest(secret.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn argon2() -> Argon2<'static> {
    // OWASP's first choice for Argon2id: 19 MiB, 2 passes, 1 lane.
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).unwrap_or_default(),
    )
}

fn hash_password(password: &str) -> Result<String, EngineError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| EngineError::Conflict(format!("password salt: {e}")))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| EngineError::config("password", e.to_string()))
}

fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash of no password, checked when the account does not exist, so that an unknown
/// e-mail takes as long to refuse as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_secret("")).unwrap_or_default())
}

fn refused() -> EngineError {
    EngineError::Unauthenticated("the e-mail or the password is wrong".into())
}

fn check_password(password: &str) -> Result<(), EngineError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(EngineError::config(
            "password",
            format!("give at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

impl Engine {
    /// Makes a console account. `customer` binds it to one customer (a customer admin
    /// needs one; a read-only account may have one; a provider admin has none).
    pub async fn create_account(
        &self,
        email: &str,
        password: &SecretString,
        role: Role,
        customer: Option<&str>,
    ) -> Result<Account, EngineError> {
        let email =
            EmailAddress::parse(email).map_err(|e| EngineError::config("email", e.to_string()))?;
        check_password(password.expose())?;
        let grant = self.grant_for(role, customer).await?;
        let secret = password.expose().to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&secret))
            .await
            .map_err(|e| EngineError::Conflict(format!("password hashing stopped: {e}")))??;
        Ok(self
            .store
            .add_account(email.as_str(), &hash, &grant)
            .await?)
    }

    /// How many console accounts exist.
    pub async fn count_accounts(&self) -> Result<i64, EngineError> {
        Ok(self.store.count_accounts().await?)
    }

    /// Checks an e-mail and password and starts a session. Unknown e-mail, wrong password
    /// and disabled account are one and the same refusal.
    pub async fn sign_in(
        &self,
        email: &str,
        password: &SecretString,
        client: Option<&str>,
    ) -> Result<NewSession, EngineError> {
        // Failed sign-ins are counted in the database, so that every process of it holds
        // the same line; an attempt counts from before its password is checked, so that
        // parallel attempts cannot all pass under the limit.
        let account_key = format!("account:{}", email.trim().to_lowercase());
        let address_key = client.map(|a| format!("address:{a}"));
        let keys: Vec<&str> = std::iter::once(account_key.as_str())
            .chain(address_key.as_deref())
            .collect();
        let attempt = random_secret("");
        self.store.begin_sign_in_attempt(&keys, &attempt).await?;
        for (key, allowed) in [
            (Some(&account_key), SIGN_IN_FAILURES_PER_ACCOUNT),
            (address_key.as_ref(), SIGN_IN_FAILURES_PER_ADDRESS),
        ] {
            let Some(key) = key else { continue };
            let (attempts, wait) = self
                .store
                .sign_in_failures(key, SIGN_IN_FAILURE_WINDOW_SECS)
                .await?;
            // This attempt is among them.
            if attempts > allowed {
                self.store.end_sign_in_attempt(&attempt, None).await?;
                let minutes = (wait.max(1) as u64).div_ceil(60);
                return Err(EngineError::Limited(format!(
                    "Too many failed sign-ins. Try again in {minutes} minute(s)."
                )));
            }
        }
        let signed_in = self.check_password(email, password).await;
        match &signed_in {
            Ok(_) => {
                self.store
                    .end_sign_in_attempt(&attempt, Some(&account_key))
                    .await?
            }
            // A failure: the attempt stays counted.
            Err(EngineError::Unauthenticated(_)) => {}
            Err(_) => self.store.end_sign_in_attempt(&attempt, None).await?,
        }
        signed_in
    }

    async fn check_password(
        &self,
        email: &str,
        password: &SecretString,
    ) -> Result<NewSession, EngineError> {
        let found = self.store.account_for_sign_in(email).await?;
        let (account, hash) = match found {
            Some((account, hash)) => (Some(account), hash),
            None => (None, decoy_hash().to_string()),
        };
        let secret = password.expose().to_string();
        let matches = tokio::task::spawn_blocking(move || password_matches(&secret, &hash))
            .await
            .unwrap_or(false);
        let account = match account {
            Some(a) if matches && !a.disabled => a,
            _ => return Err(refused()),
        };
        let token = random_secret("uss_");
        let csrf_token = random_secret("");
        self.store
            .add_session(account.id, &digest(&token), &csrf_token, SESSION_TTL_SECS)
            .await?;
        Ok(NewSession {
            token: SecretString::new(token),
            csrf_token,
            principal: Principal::of_account(&account),
        })
    }

    /// The session a cookie names, when it is live.
    pub async fn session(&self, token: &str) -> Result<Option<LiveSession>, EngineError> {
        Ok(self
            .store
            .session(&digest(token))
            .await?
            .map(|s| LiveSession {
                principal: Principal::of_account(&s.account),
                csrf_token: s.csrf_token,
            }))
    }

    /// Ends the session a cookie names.
    pub async fn sign_out(&self, token: &str) -> Result<(), EngineError> {
        Ok(self.store.end_session(&digest(token)).await?)
    }

    /// The principal of an API token (`Authorization: Bearer TOKEN`), when it is live.
    pub async fn token_principal(&self, token: &str) -> Result<Option<Principal>, EngineError> {
        if !token.starts_with("ust_") {
            return Ok(None);
        }
        Ok(self
            .store
            .use_api_token(&digest(token))
            .await?
            .map(|t| Principal::of_token(&t)))
    }

    /// Makes an API token from the command line (the operating-system user is its maker).
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        customer: Option<&str>,
    ) -> Result<NewToken, EngineError> {
        let grant = self.grant_for(role, customer).await?;
        self.make_token(name, &grant).await
    }

    async fn make_token(&self, name: &str, grant: &Grant) -> Result<NewToken, EngineError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(EngineError::config(
                "name",
                "give the token a name of 1 to 100 characters (what uses it)",
            ));
        }
        let token = random_secret("ust_");
        let record = self
            .store
            .add_api_token(name, &digest(&token), grant)
            .await?;
        Ok(NewToken {
            token: SecretString::new(token),
            record,
        })
    }

    async fn grant_for(&self, role: Role, customer: Option<&str>) -> Result<Grant, EngineError> {
        let customer_id = match customer {
            Some(name) => Some(self.customer(name).await?.id),
            None => None,
        };
        Grant::new(role, customer_id).map_err(|e| EngineError::config("customer", e.to_string()))
    }

    /// What `principal` may do: every operation of a console page or an API endpoint goes
    /// through this, acting (in the audit log) as the principal.
    pub fn access(&self, principal: Principal) -> Access {
        let mut options = self.options.clone();
        options.actor = principal.name.clone();
        let mut engine = Engine::new(self.store.clone(), options);
        engine.live = self.live.clone();
        Access { engine, principal }
    }
}

/// The application as one principal may use it. Every lookup checks that the principal
/// sees the object's customer (else: not found), and every change that it may change
/// things (else: forbidden).
#[derive(Debug, Clone)]
pub struct Access {
    engine: Engine,
    principal: Principal,
}

fn not_found(what: &'static str, name: impl ToString) -> EngineError {
    EngineError::Store(StoreError::NotFound {
        what,
        name: name.to_string(),
    })
}

impl Access {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The engine, acting as the principal (for this crate's operations that check first).
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    fn grant(&self) -> &Grant {
        &self.principal.grant
    }

    /// Whether the principal may change things (a read-only one may not: `Forbidden`).
    pub fn may_change(&self) -> Result<(), EngineError> {
        if self.grant().changes() {
            Ok(())
        } else {
            Err(EngineError::Forbidden(format!(
                "{} is read-only: it cannot change anything",
                self.principal.name
            )))
        }
    }

    fn may_administer(&self) -> Result<(), EngineError> {
        if self.grant().administers() {
            Ok(())
        } else {
            Err(EngineError::Forbidden(
                "only a provider admin may do this".into(),
            ))
        }
    }

    // Customers.

    /// The customers the principal sees, by name.
    pub async fn customers(&self) -> Result<Vec<Customer>, EngineError> {
        let all = self.engine.customers().await?;
        Ok(all
            .into_iter()
            .filter(|c| self.grant().sees(c.id))
            .collect())
    }

    /// One customer the principal sees.
    pub async fn customer(&self, id: i64) -> Result<Customer, EngineError> {
        if !self.grant().sees(id) {
            return Err(not_found("customer", format!("#{id}")));
        }
        match self.engine.store.customer(id).await {
            Err(StoreError::NotFound { .. }) => Err(not_found("customer", format!("#{id}"))),
            other => Ok(other?),
        }
    }

    pub async fn add_customer(&self, name: &str) -> Result<Customer, EngineError> {
        self.may_administer()?;
        self.engine.add_customer(name).await
    }

    /// Changes a customer's settings (`retention=30d`), all or none.
    pub async fn set_customer(
        &self,
        customer_id: i64,
        assignments: &[String],
    ) -> Result<Customer, EngineError> {
        self.may_change()?;
        let customer = self.customer(customer_id).await?;
        self.engine.set_customer(&customer.name, assignments).await
    }

    // Domains.

    pub async fn domains(&self, customer_id: i64) -> Result<Vec<Domain>, EngineError> {
        let customer = self.customer(customer_id).await?;
        self.engine.domains(&customer.name).await
    }

    pub async fn add_domain(&self, customer_id: i64, name: &str) -> Result<Domain, EngineError> {
        self.may_change()?;
        let customer = self.customer(customer_id).await?;
        self.engine.add_domain(&customer.name, name).await
    }

    // Users.

    /// A page of a customer's users (see [`UserQuery`]) and whether more follow.
    pub async fn users(
        &self,
        customer_id: i64,
        query: &UserQuery,
    ) -> Result<(Vec<usersync_core::DirectoryUser>, bool), EngineError> {
        self.customer(customer_id).await?;
        Ok(self.engine.store.users_page(customer_id, query).await?)
    }

    /// Adds a user by hand (no sync changes or removes it).
    pub async fn add_user(
        &self,
        customer_id: i64,
        address: &str,
        display_name: Option<String>,
        mailbox_type: usersync_core::MailboxType,
    ) -> Result<usersync_core::DirectoryUser, EngineError> {
        self.may_change()?;
        let customer = self.customer(customer_id).await?;
        self.engine
            .add_user(crate::NewUser {
                customer: customer.name,
                address: address.to_string(),
                display_name,
                mailbox_type,
            })
            .await
    }

    pub async fn restore_user(
        &self,
        customer_id: i64,
        address: &str,
    ) -> Result<usersync_core::DirectoryUser, EngineError> {
        self.may_change()?;
        let customer = self.customer(customer_id).await?;
        self.engine.restore_user(&customer.name, address).await
    }

    /// A customer's console groups (the "Destination" of filters), with their members.
    pub async fn groups(
        &self,
        customer_id: i64,
    ) -> Result<Vec<usersync_store::Group>, EngineError> {
        let customer = self.customer(customer_id).await?;
        self.engine.groups(&customer.name).await
    }

    /// Adds a console group (e.g. a filter's destination).
    pub async fn add_group(
        &self,
        customer_id: i64,
        name: &str,
    ) -> Result<usersync_store::Group, EngineError> {
        self.may_change()?;
        let customer = self.customer(customer_id).await?;
        self.engine.add_group(&customer.name, name).await?;
        let groups = self.engine.groups(&customer.name).await?;
        groups
            .into_iter()
            .find(|g| usersync_core::same_name(&g.name, name.trim()))
            .ok_or_else(|| not_found("group", name))
    }

    // Sources and runs.

    /// Connects a Microsoft 365 tenant with an app registration's credentials (what
    /// `usersync source add office365` does), then tests the connection.
    pub async fn add_office365_source(
        &self,
        customer_id: i64,
        tenant_id: &str,
        app: &crate::Office365App,
    ) -> Result<(SourceRecord, crate::ConnectionReport), EngineError> {
        self.may_change()?;
        let customer = self.customer(customer_id).await?;
        // Other endpoints than Microsoft's (a national cloud, a test double) are the
        // provider's to choose: the service calls them.
        self.may_use_endpoints(Some(&app.authority_url), Some(&app.graph_url))?;
        let added = self
            .engine
            .add_office365_source(crate::NewOffice365 {
                customer: customer.name,
                tenant_id: tenant_id.to_string(),
                settings: crate::Office365Settings::new(
                    &app.client_id,
                    &app.authority_url,
                    &app.graph_url,
                ),
                client_secret: app.client_secret.clone(),
            })
            .await;
        let record = self.owner_hidden(added, tenant_id.trim())?;
        let report = self.engine.test_source(record.id).await?;
        Ok((record, report))
    }

    /// Other endpoints than Microsoft's (a national cloud, a test double) are the
    /// provider's to choose: the service calls them.
    fn may_use_endpoints(
        &self,
        authority_url: Option<&str>,
        graph_url: Option<&str>,
    ) -> Result<(), EngineError> {
        let is = |url: Option<&str>, microsoft: &str| {
            url.is_none_or(|u| u.trim_end_matches('/') == microsoft.trim_end_matches('/'))
        };
        let microsoft = is(authority_url, usersync_graph::GLOBAL_AUTHORITY_URL)
            && is(graph_url, usersync_graph::GLOBAL_GRAPH_URL);
        if !microsoft && !self.grant().administers() {
            return Err(EngineError::Forbidden(
                "only a provider admin may connect a tenant at other endpoints than Microsoft's"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Changes how a source connects (`usersync source reconnect`): its app registration
    /// and endpoints, and the new app's secret when given; then tests the connection.
    /// A file on the server (`ca_file`) or plain HTTP is the provider's to allow.
    pub async fn reconnect_source(
        &self,
        source_id: i64,
        change: crate::Reconnect,
        client_secret: Option<SecretString>,
    ) -> Result<(SourceRecord, crate::ConnectionReport), EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.may_use_endpoints(change.authority_url.as_deref(), change.graph_url.as_deref())?;
        if (change.ca_file.is_some() || change.allow_insecure_http == Some(true))
            && !self.grant().administers()
        {
            return Err(EngineError::Forbidden(
                "only a provider admin may trust a CA file or plain HTTP for a source".into(),
            ));
        }
        if let Some(secret) = &client_secret
            && secret.expose().trim().is_empty()
        {
            return Err(EngineError::config(
                "client_secret",
                "the secret is empty; paste the secret's value (not its id) from the app registration",
            ));
        }
        let record = self.engine.reconnect_source(source_id, change).await?;
        if let Some(secret) = client_secret {
            self.engine.set_source_secret(source_id, secret).await?;
        }
        let report = self.engine.test_source(record.id).await?;
        Ok((record, report))
    }

    /// Replaces a source's client secret.
    pub async fn set_source_secret(
        &self,
        source_id: i64,
        secret: SecretString,
    ) -> Result<(), EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.engine.set_source_secret(source_id, secret).await
    }

    /// Removes a source (its users through the deletion safeguard, or kept unmanaged).
    pub async fn remove_source(
        &self,
        source_id: i64,
        keep_users: bool,
        confirm_removals: bool,
    ) -> Result<crate::SourceRemovalOutcome, EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.engine
            .remove_source(source_id, keep_users, confirm_removals)
            .await
    }

    /// Cancels a queued or running run.
    pub async fn cancel(&self, run_id: i64) -> Result<RunStatus, EngineError> {
        self.may_change()?;
        self.run(run_id).await?;
        self.engine.cancel(run_id).await
    }

    pub async fn sources(&self, customer_id: i64) -> Result<Vec<SourceRecord>, EngineError> {
        let customer = self.customer(customer_id).await?;
        self.engine.sources(Some(&customer.name), false).await
    }

    /// A source of a customer the principal sees.
    pub async fn source(&self, source_id: i64) -> Result<SourceRecord, EngineError> {
        let record = match self.engine.source(source_id).await {
            Err(EngineError::Store(StoreError::NotFound { .. })) => None,
            other => Some(other?),
        };
        match record {
            Some(r) if self.grant().sees(r.customer_id) => Ok(r),
            _ => Err(not_found("source", format!("#{source_id}"))),
        }
    }

    /// The source's options (the setup wizard's answers).
    pub async fn source_options(
        &self,
        source_id: i64,
    ) -> Result<usersync_core::SourceOptions, EngineError> {
        self.source(source_id).await?;
        self.engine.source_options(source_id).await
    }

    /// Sets options of a source (`auto_sync=true`, ...), all or none.
    pub async fn set_source_options(
        &self,
        source_id: i64,
        assignments: &[String],
    ) -> Result<usersync_core::SourceOptions, EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.engine.set_source_options(source_id, assignments).await
    }

    /// How far the console's setup wizard got for the source.
    pub async fn setup_step(&self, source_id: i64) -> Result<Option<String>, EngineError> {
        self.source(source_id).await?;
        self.engine.setup_step(source_id).await
    }

    pub async fn set_setup_step(&self, source_id: i64, step: &str) -> Result<(), EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.engine.set_setup_step(source_id, step).await
    }

    /// A source's filter rules, first to last.
    pub async fn filter_rules(
        &self,
        source_id: i64,
    ) -> Result<Vec<usersync_core::FilterRule>, EngineError> {
        self.source(source_id).await?;
        self.engine.filter_rules(source_id).await
    }

    /// Appends a filter rule sending matching users to the console group `group`
    /// ("Destination"), made when `create_group`.
    pub async fn add_filter_rule(
        &self,
        source_id: i64,
        group: &str,
        rule: &str,
        create_group: bool,
    ) -> Result<usersync_core::FilterRule, EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.engine
            .add_filter_rule(source_id, group, rule, create_group)
            .await
    }

    pub async fn remove_filter_rule(
        &self,
        source_id: i64,
        rule_id: i64,
    ) -> Result<(), EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.engine.remove_filter_rule(source_id, rule_id).await
    }

    /// Moves a rule to 1-based position `to`; the rules in their new order.
    pub async fn move_filter_rule(
        &self,
        source_id: i64,
        rule_id: i64,
        to: usize,
    ) -> Result<Vec<usersync_core::FilterRule>, EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.engine.move_filter_rule(source_id, rule_id, to).await
    }

    /// Preview: reads the source, writes nothing to the directory (the run is recorded).
    pub async fn preview(&self, source_id: i64) -> Result<RunOutcome, EngineError> {
        // A preview is recorded and reads the tenant (its throttling budget): not for
        // read-only principals.
        self.may_change()?;
        self.source(source_id).await?;
        self.engine.preview(source_id, &NoProgress).await
    }

    /// Sync & Save, in this process, with `progress` told how it goes.
    pub async fn sync(
        &self,
        source_id: i64,
        progress: &dyn Progress,
    ) -> Result<RunOutcome, EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.engine.sync(source_id, progress).await
    }

    /// Queues a sync of the source for a worker.
    pub async fn run_now(&self, source_id: i64) -> Result<usersync_store::Enqueued, EngineError> {
        self.may_change()?;
        self.source(source_id).await?;
        self.engine.run_now(source_id).await
    }

    /// A run of a source the principal sees, with its plan.
    pub async fn run(&self, run_id: i64) -> Result<RunRecord, EngineError> {
        let run = match self.engine.run_record(run_id).await {
            Err(EngineError::Store(StoreError::NotFound { .. })) => None,
            other => Some(other?),
        };
        match run {
            // (The run's source says whose it is; a removed source keeps its runs.)
            Some(r) if self.source(r.source_id).await.is_ok() => Ok(r),
            _ => Err(not_found("run", run_id)),
        }
    }

    /// Where a running run of a source the principal sees stands (see
    /// [`Engine::run_progress`]).
    pub async fn live_progress(
        &self,
        run_id: i64,
    ) -> Result<Option<crate::LiveProgress>, EngineError> {
        self.run(run_id).await?;
        Ok(self.engine.run_progress(run_id).await)
    }

    /// The newest runs of a source first.
    pub async fn runs(
        &self,
        source_id: i64,
        statuses: &[RunStatus],
        limit: i64,
    ) -> Result<Vec<RunRecord>, EngineError> {
        self.runs_before(source_id, statuses, None, limit).await
    }

    /// [`Access::runs`], only runs older than `before` (a run id: the last of the page
    /// before).
    pub async fn runs_before(
        &self,
        source_id: i64,
        statuses: &[RunStatus],
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, EngineError> {
        self.source(source_id).await?;
        self.engine
            .runs_before(Some(source_id), statuses, before, limit)
            .await
    }

    /// "Confirm removals" on a held run.
    pub async fn confirm(&self, run_id: i64) -> Result<RunOutcome, EngineError> {
        self.may_change()?;
        self.run(run_id).await?;
        self.engine.confirm(run_id, &NoProgress).await
    }

    // The audit log.

    /// Entries, newest first: of one customer, or (for a principal that sees every
    /// customer) of all.
    pub async fn audit(
        &self,
        customer_id: Option<i64>,
        since: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, EngineError> {
        self.audit_before(customer_id, since, None, limit).await
    }

    /// [`Access::audit`], only entries older than `before_id` (the last of the page
    /// before).
    pub async fn audit_before(
        &self,
        customer_id: Option<i64>,
        since: Option<&str>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, EngineError> {
        let customer_id = match (customer_id, self.grant().customer_id) {
            (Some(id), _) => Some(self.customer(id).await?.id),
            (None, own) => own,
        };
        let since = match since {
            Some(text) => Some(crate::directory::since_text(
                text,
                time::OffsetDateTime::now_utc(),
            )?),
            None => None,
        };
        Ok(self
            .engine
            .store
            .audit_log(&AuditQuery {
                customer_id,
                since,
                before_id,
                limit: limit.clamp(1, 1001),
            })
            .await?)
    }

    // API tokens.

    /// Makes a token of no more reach than the principal's own.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        customer_id: Option<i64>,
    ) -> Result<NewToken, EngineError> {
        self.may_change()?;
        if let Some(id) = customer_id {
            self.customer(id).await?;
        }
        let grant = Grant::new(role, customer_id)
            .map_err(|e| EngineError::config("customer_id", e.to_string()))?;
        if !self.grant().may_grant(&grant) {
            return Err(EngineError::Forbidden(format!(
                "{} cannot make a {} token{}: a token reaches no further than its maker",
                self.principal.name,
                grant.role,
                if grant.customer_id.is_none() {
                    " for every customer"
                } else {
                    ""
                }
            )));
        }
        self.engine.make_token(name, &grant).await
    }

    /// The tokens the principal sees.
    pub async fn tokens(&self) -> Result<Vec<ApiToken>, EngineError> {
        let all = self
            .engine
            .store
            .api_tokens(self.grant().customer_id)
            .await?;
        Ok(all)
    }

    pub async fn revoke_token(&self, id: i64) -> Result<ApiToken, EngineError> {
        self.may_change()?;
        let token = match self.engine.store.api_token(id).await {
            Err(StoreError::NotFound { .. }) => None,
            other => Some(other?),
        };
        match token {
            Some(t)
                if t.customer_id.is_some_and(|c| self.grant().sees(c))
                    || self.grant().sees_all() =>
            {
                Ok(self.engine.store.revoke_api_token(id).await?)
            }
            _ => Err(not_found("token", format!("#{id}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_its_hash_and_nothing_else() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(password_matches("correct horse battery", &hash));
        assert!(!password_matches("correct horse batterx", &hash));
        assert!(!password_matches("correct horse battery", "not a hash"));
    }

    #[test]
    fn secrets_are_random_and_kept_as_digests() {
        let a = random_secret("ust_");
        let b = random_secret("ust_");
        assert_ne!(a, b);
        assert!(a.starts_with("ust_") && a.len() == 4 + 43, "{a}");
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), digest(&b));
    }
}
