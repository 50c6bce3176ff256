//! The Microsoft 365 source: its settings, its connection test, and reads over Microsoft
//! Graph (`read.rs`: whole or by delta over the source mirror, `mirror.rs`).

mod mirror;
mod read;

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use url::Url;
use usersync_core::{
    ClientId, Interner, SourceGroup, SourceKind, SourceOptions, SourceUser, TenantId,
};
use usersync_graph::{ClientSecret, GROUP_PROPERTIES, GraphClient, GraphConfig, RetryPolicy};
use usersync_store::{Mirror, NewSource, SecretString, SourceRecord, Store};

use crate::EngineError;
use crate::source::{
    CheckStatus, ConnectionReport, FailureKind, PermissionCheck, Progress, Source, SourceError,
    SourceRead,
};

fn not_checked(permission: &str, needed_for: &str, required: bool) -> PermissionCheck {
    PermissionCheck {
        permission: permission.to_string(),
        needed_for: needed_for.to_string(),
        status: CheckStatus::NotChecked,
        required,
        detail: None,
    }
}

/// The stored settings of an `office365` source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Office365Settings {
    /// The multi-tenant application's client id.
    pub client_id: String,
    /// `https://login.microsoftonline.com` for the global cloud.
    pub authority_url: String,
    /// `https://graph.microsoft.com` for the global cloud.
    pub graph_url: String,
    /// A PEM file of extra root certificates to trust (a private cloud or the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Plain `http://` endpoints on a host other than loopback were allowed explicitly
    /// (`--allow-insecure-http`): the secret and tokens travel unencrypted there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
    #[serde(default)]
    pub options: SourceOptions,
    /// The last step of the console's setup wizard saved for this source (it resumes
    /// after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_step: Option<String>,
    /// It signs in as the administrator who connected it (delegated permissions, with
    /// the refresh token of that sign-in, kept sealed) instead of as the application.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delegated: bool,
}

impl Office365Settings {
    /// Settings for an app registration at the given endpoints, with default options.
    pub fn new(
        client_id: impl Into<String>,
        authority_url: impl Into<String>,
        graph_url: impl Into<String>,
    ) -> Self {
        Office365Settings {
            client_id: client_id.into(),
            authority_url: authority_url.into(),
            graph_url: graph_url.into(),
            ca_file: None,
            allow_insecure_http: false,
            options: SourceOptions::default(),
            setup_step: None,
            delegated: false,
        }
    }

    /// Checks the connection settings: a client id that is a GUID, endpoints that are
    /// URLs (https, or http on loopback only unless allowed), a CA file with a certificate.
    pub fn check(&self) -> Result<(), EngineError> {
        ClientId::parse(&self.client_id).map_err(|e| {
            let problem = e.to_string();
            let problem = problem
                .strip_prefix("--client-id: ")
                .unwrap_or(&problem)
                .to_string();
            EngineError::config(
                "--client-id",
                format!("{problem} (or set USERSYNC_M365_CLIENT_ID)"),
            )
        })?;
        endpoint(
            Endpoint::Authority,
            &self.authority_url,
            self.allow_insecure_http,
        )?;
        endpoint(Endpoint::Graph, &self.graph_url, self.allow_insecure_http)?;
        if let Some(path) = &self.ca_file {
            certificates_in(path)?;
        }
        Ok(())
    }
}

/// The PEM file's contents, refused unless it holds at least one certificate.
fn certificates_in(path: &std::path::Path) -> Result<Vec<u8>, EngineError> {
    let pem = std::fs::read(path).map_err(|e| {
        EngineError::config("--ca-file", format!("cannot read {}: {e}", path.display()))
    })?;
    let text = String::from_utf8_lossy(&pem);
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(EngineError::config(
            "--ca-file",
            format!(
                "{} holds no PEM certificate (a block starting with -----BEGIN CERTIFICATE-----); \
                 give the CA certificate that signed the server's, in PEM form",
                path.display()
            ),
        ));
    }
    Ok(pem)
}

/// What connecting a tenant needs.
#[derive(Debug, Clone)]
pub struct NewOffice365Source {
    pub customer_id: i64,
    pub tenant_id: String,
    pub settings: Office365Settings,
    pub client_secret: SecretString,
}

/// Checks the settings and stores the source; nothing is stored when a setting is wrong.
pub async fn connect_office365(
    store: &Store,
    new: NewOffice365Source,
) -> Result<SourceRecord, EngineError> {
    connect_office365_with(store, new, None).await
}

/// [`connect_office365`], with the refresh token of a delegated sign-in stored (sealed)
/// in the same transaction as the source.
pub(crate) async fn connect_office365_with(
    store: &Store,
    new: NewOffice365Source,
    refresh_token: Option<SecretString>,
) -> Result<SourceRecord, EngineError> {
    if new.settings.delegated && refresh_token.is_none() {
        return Err(EngineError::config(
            "delegated",
            "a delegated source is connected by an administrator's sign-in (Connect Office 365 in the console)",
        ));
    }
    // Tenant ids (GUIDs and domain names alike) are case-insensitive: one form is stored,
    // so one tenant cannot be connected twice under two spellings.
    let tenant = TenantId::parse(&new.tenant_id).map_err(|e| {
        let problem = e.to_string();
        EngineError::config(
            "--tenant",
            problem
                .strip_prefix("--tenant: ")
                .unwrap_or(&problem)
                .to_string(),
        )
    })?;
    new.settings.check()?;
    new.settings.options.validate()?;
    if new.client_secret.expose().trim().is_empty() {
        return Err(EngineError::config(
            "USERSYNC_M365_CLIENT_SECRET",
            "set the client secret of the app in this environment variable (it is stored encrypted, never printed)",
        ));
    }
    let settings = serde_json::to_value(&new.settings)
        .map_err(|e| EngineError::config("settings", e.to_string()))?;
    Ok(store
        .add_source(NewSource {
            customer_id: new.customer_id,
            kind: SourceKind::Office365,
            tenant_id: tenant.to_string(),
            settings,
            secret: Some(new.client_secret),
            refresh_token,
        })
        .await?)
}

/// Which endpoint a URL is for: each has its own flag and example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Authority,
    Graph,
}

impl Endpoint {
    fn field(self) -> &'static str {
        match self {
            Endpoint::Authority => "--authority-url",
            Endpoint::Graph => "--graph-url",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Endpoint::Authority => {
                "https://login.microsoftonline.com (the identity platform; national clouds have their own, such as https://login.microsoftonline.us)"
            }
            Endpoint::Graph => {
                "https://graph.microsoft.com (Microsoft Graph, not the sign-in URL; national clouds have their own, such as https://graph.microsoft.us)"
            }
        }
    }
}

/// An endpoint URL: https, or plain http only on a loopback host (the simulator, a test
/// server) unless `allow_insecure_http`: over http the secret and tokens travel unencrypted.
fn endpoint(which: Endpoint, text: &str, allow_insecure_http: bool) -> Result<Url, EngineError> {
    let field = which.field();
    let url = Url::parse(text).map_err(|e| {
        EngineError::config(
            field,
            format!("'{text}' is not a URL ({e}); use e.g. {}", which.example()),
        )
    })?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(&url) => {}
        "http" => {
            return Err(EngineError::config(
                field,
                format!(
                    "'{text}' is plain http on a host other than this machine: the client secret and \
                     access tokens would travel unencrypted. Use https, or add --allow-insecure-http \
                     if you must (a lab network)"
                ),
            ));
        }
        _ => {
            return Err(EngineError::config(
                field,
                format!(
                    "'{text}' must start with https://, such as {}",
                    which.example()
                ),
            ));
        }
    }
    if which == Endpoint::Graph && url.host_str().is_some_and(|h| h.starts_with("login.")) {
        return Err(EngineError::config(
            field,
            format!(
                "'{text}' looks like a sign-in URL; --graph-url wants Microsoft Graph, such as {}",
                which.example()
            ),
        ));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// What a read must fetch beyond users, groups and domains; each costs requests.
#[derive(Debug, Clone, Copy)]
pub struct ReadNeeds {
    /// Transitive group memberships (filters on memberOf, selected groups).
    pub memberships: bool,
    /// `mailboxSettings.userPurpose` of mailboxes, through `$batch` (rule 4): at most this
    /// many per run, those not yet known first.
    pub purpose_budget: usize,
    /// Each user's manager, inline with the user pages (`$expand=manager`).
    pub managers: bool,
    /// Runs read what changed since the mirror (delta queries) when they can.
    pub delta: bool,
    /// A run reads the whole tenant when the last whole read is older than this.
    pub full_every_secs: i64,
}

impl Default for ReadNeeds {
    fn default() -> Self {
        ReadNeeds {
            memberships: false,
            purpose_budget: usersync_core::options::DEFAULT_PURPOSE_BUDGET as usize,
            managers: false,
            delta: true,
            full_every_secs: 24 * 3600,
        }
    }
}

/// A Microsoft 365 tenant read over Graph.
pub struct Office365Source {
    client: GraphClient,
    needs: ReadNeeds,
    /// The source's id (its mirror's key).
    source_id: i64,
    /// Where and as whom it reads: delta links of another endpoint or app are not used.
    graph_url: String,
    client_id: String,
    /// Where its mirror's objects are read from when a run is given the mirror's head.
    store: Option<Store>,
}

/// How the Graph client of `settings` reaches `tenant_id`: endpoints, app, secret and the
/// extra CA certificates it trusts.
pub(crate) fn graph_config(
    settings: &Office365Settings,
    tenant_id: &str,
    secret: &SecretString,
) -> Result<GraphConfig, EngineError> {
    let mut config = GraphConfig::with_urls(
        endpoint(
            Endpoint::Authority,
            &settings.authority_url,
            settings.allow_insecure_http,
        )?,
        endpoint(
            Endpoint::Graph,
            &settings.graph_url,
            settings.allow_insecure_http,
        )?,
        tenant_id.to_string(),
        settings.client_id.clone(),
        ClientSecret::new(secret.expose()),
    );
    if let Some(path) = &settings.ca_file {
        config
            .extra_root_certificates_pem
            .push(certificates_in(path)?);
    }
    Ok(config)
}

/// Whether the app of `settings` gets a token for `tenant_id` with `secret`: the proof,
/// which the redirect's unsigned `admin_consent=True` is not, that the tenant consented.
pub(crate) async fn tenant_grants_a_token(
    settings: &Office365Settings,
    tenant_id: &str,
    secret: &SecretString,
) -> Result<(), EngineError> {
    let client = GraphClient::new(graph_config(settings, tenant_id, secret)?)
        .map_err(|e| EngineError::config("office365 source", e.to_string()))?;
    client.check_credentials().await.map_err(|e| {
        EngineError::config(
            "consent",
            format!(
                "the tenant {tenant_id} gives the app no access token, so it has not consented: {e}"
            ),
        )
    })
}

impl Office365Source {
    /// Builds the Graph client for a stored source.
    pub fn new(
        record: &SourceRecord,
        settings: &Office365Settings,
        secret: SecretString,
        sign_in: usersync_graph::SignIn,
        max_in_flight: usize,
        retry: RetryPolicy,
    ) -> Result<Self, EngineError> {
        let mut config = graph_config(settings, &record.tenant_id, &secret)?;
        config.sign_in = sign_in;
        config.max_in_flight = max_in_flight;
        config.retry = retry;
        let client = GraphClient::new(config)
            .map_err(|e| EngineError::config("office365 source", e.to_string()))?;
        Ok(Office365Source {
            client,
            needs: ReadNeeds::default(),
            source_id: record.id,
            graph_url: settings.graph_url.clone(),
            client_id: settings.client_id.clone(),
            store: None,
        })
    }

    /// Reads its mirror's objects from `store` when a run is given only the head.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The Graph client (subscriptions and other calls outside a read).
    pub(crate) fn client(&self) -> &GraphClient {
        &self.client
    }

    /// Also fetch what `needs` names on each read.
    pub fn with_needs(mut self, needs: ReadNeeds) -> Self {
        self.needs = needs;
        self
    }

    /// The tenant's groups, e.g. to check the groups a filter rule names.
    pub async fn groups(&self) -> Result<Vec<SourceGroup>, SourceError> {
        let groups = self.client.list_groups(GROUP_PROPERTIES, &|_| {}).await?;
        Ok(groups.into_iter().map(source_group).collect())
    }

    fn purposes_forbidden(&self, notes: &mut Vec<String>) {
        notes.push(
            "MailboxSettings.Read was not granted to the app, so mailbox types were guessed: \
             a disabled, unlicensed account is taken as shared. Grant MailboxSettings.Read \
             (application) and admin consent to read them."
                .into(),
        );
    }
}

impl Office365Source {
    /// One request's worth of a check: granted, missing (403), or failed otherwise.
    async fn probe(
        &self,
        permission: &str,
        needed_for: &str,
        required: bool,
        path: &str,
    ) -> (PermissionCheck, Option<serde_json::Value>) {
        let (status, detail, body) = match self.client.get_one::<serde_json::Value>(path).await {
            Ok(body) => (CheckStatus::Granted, None, Some(body)),
            Err(e) if e.is_forbidden() => (CheckStatus::Missing, Some(e.to_string()), None),
            Err(e) => (CheckStatus::Failed, Some(e.to_string()), None),
        };
        let check = PermissionCheck {
            permission: permission.to_string(),
            needed_for: needed_for.to_string(),
            status,
            required,
            detail,
        };
        (check, body)
    }
}

#[async_trait]
impl Source for Office365Source {
    fn failure_kind(&self, error: &(dyn std::error::Error + Send + Sync + 'static)) -> FailureKind {
        use usersync_graph::TokenErrorKind as T;
        match error.downcast_ref::<usersync_graph::GraphError>() {
            Some(usersync_graph::GraphError::Throttled {
                status: 429 | 503,
                retry_after,
                ..
            }) => FailureKind::Throttled {
                retry_after: *retry_after,
            },
            Some(
                usersync_graph::GraphError::Forbidden { .. }
                | usersync_graph::GraphError::Unauthorized { .. },
            ) => FailureKind::Consent,
            Some(usersync_graph::GraphError::Token {
                kind: T::InvalidClientSecret | T::ExpiredClientSecret,
                ..
            }) => FailureKind::Secret,
            Some(usersync_graph::GraphError::Token {
                kind:
                    T::AppNotConsented
                    | T::ConsentRequired
                    | T::AppDisabled
                    | T::BlockedByConditionalAccess
                    | T::SignInExpired,
                ..
            }) => FailureKind::Consent,
            _ => FailureKind::Other,
        }
    }

    async fn check(&self) -> ConnectionReport {
        let mut checks = Vec::new();
        let sign_in = self.client.check_credentials().await;
        let signed_in = sign_in.is_ok();
        checks.push(PermissionCheck {
            permission: "sign-in".into(),
            needed_for: "an access token for the tenant (client id, client secret, admin consent)"
                .into(),
            status: if signed_in {
                CheckStatus::Granted
            } else {
                CheckStatus::Failed
            },
            required: true,
            detail: sign_in.err().map(|e| e.to_string()),
        });
        let wanted: [(&str, &str, bool, &str); 3] = [
            (
                "User.Read.All",
                "users, their addresses, licences and managers",
                true,
                "/users?$select=id,userPrincipalName&$top=1",
            ),
            (
                "Group.Read.All",
                "groups and their members (group mailboxes, filters, selected groups)",
                true,
                "/groups?$select=id,displayName&$top=1",
            ),
            (
                "Domain.Read.All",
                "the tenant's domains (import_domains)",
                true,
                "/domains",
            ),
        ];
        let mut first_user = None;
        for (permission, needed_for, required, path) in wanted {
            if !signed_in {
                checks.push(not_checked(permission, needed_for, required));
                continue;
            }
            let (check, body) = self.probe(permission, needed_for, required, path).await;
            if permission == "User.Read.All" {
                first_user = body
                    .as_ref()
                    .and_then(|b| b["value"][0]["id"].as_str())
                    .map(str::to_string);
            }
            checks.push(check);
        }
        let mailbox = (
            "MailboxSettings.Read",
            "mailbox types (shared, room, equipment); without it they are guessed",
        );
        match (&first_user, signed_in) {
            (Some(id), true) => {
                let path = format!("/users/{id}/mailboxSettings?$select=userPurpose");
                let (mut check, _) = self.probe(mailbox.0, mailbox.1, false, &path).await;
                // A user without a mailbox answers 404: the permission itself was accepted.
                if check.status == CheckStatus::Failed
                    && check
                        .detail
                        .as_deref()
                        .is_some_and(|d| d.contains("not found"))
                {
                    check.status = CheckStatus::Granted;
                    check.detail = None;
                }
                checks.push(check);
            }
            _ => checks.push(not_checked(mailbox.0, mailbox.1, false)),
        }
        let tenant_name = if signed_in {
            self.client
                .organization()
                .await
                .ok()
                .and_then(|o| o.display_name)
        } else {
            None
        };
        ConnectionReport {
            checks,
            tenant_name,
        }
    }

    async fn read(
        &self,
        mirror: Option<Mirror>,
        partial: bool,
        early: Option<crate::source::EarlyUsers>,
        progress: &dyn Progress,
    ) -> Result<SourceRead, SourceError> {
        self.read_tenant(mirror, partial, early, progress).await
    }
}

pub(super) fn dedup_by_id<T>(items: &mut Vec<T>, id: impl Fn(&T) -> &String) {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items.retain(|item| seen.insert(id(item).clone()));
}

/// The core's record of a user read from Graph; text that many users share is taken
/// from `texts`.
pub(super) fn source_user(u: usersync_graph::User, texts: &mut Interner) -> SourceUser {
    // Lists as parsed hold room for four items (192 bytes for one licence): a snapshot of
    // 1,000,000 users keeps them at their size, made anew (an in-place `collect` would keep
    // the parsed list's room).
    let mut assigned_licenses = Vec::with_capacity(u.assigned_licenses.len());
    for sku in u.assigned_licenses.into_iter().filter_map(|l| l.sku_id) {
        assigned_licenses.push(texts.text(&sku));
    }
    let mut proxy_addresses = u.proxy_addresses;
    proxy_addresses.shrink_to_fit();
    SourceUser {
        id: u.id,
        user_principal_name: u.user_principal_name,
        mail: u.mail,
        proxy_addresses,
        display_name: u.display_name,
        given_name: texts.option(u.given_name),
        surname: texts.option(u.surname),
        account_enabled: u.account_enabled,
        assigned_licenses,
        user_type: texts.option(u.user_type),
        company_name: texts.option(u.company_name),
        job_title: texts.option(u.job_title),
        department: texts.option(u.department),
        mail_enabled: u.mail_enabled,
        user_purpose: None,
        manager_id: texts.option(u.manager.map(|m| m.id).filter(|id| !id.is_empty())),
        member_of: Vec::new(),
    }
}

pub(super) fn source_group(g: usersync_graph::Group) -> SourceGroup {
    SourceGroup {
        id: g.id,
        display_name: g.display_name,
        mail: g.mail,
        mail_enabled: g.mail_enabled.unwrap_or(false),
        security_enabled: g.security_enabled.unwrap_or(false),
        group_types: g.group_types,
        proxy_addresses: g.proxy_addresses,
        member_ids: Vec::new(),
    }
}
