//! The Microsoft 365 source: its settings, and a full read over Microsoft Graph.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use url::Url;
use usersync_core::{
    SourceDomain, SourceGroup, SourceKind, SourceOptions, SourceSnapshot, SourceUser,
};
use usersync_graph::{
    ClientSecret, GROUP_PROPERTIES, GraphClient, GraphConfig, RetryPolicy, USER_PROPERTIES,
};
use usersync_store::{NewSource, SecretString, SourceRecord, Store};

use crate::EngineError;
use crate::source::{Progress, Source, SourceError, SourceRead};

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
    #[serde(default)]
    pub options: SourceOptions,
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
            options: SourceOptions::default(),
        }
    }
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
    // Tenant ids (GUIDs and domain names alike) are case-insensitive: one form is stored,
    // so one tenant cannot be connected twice under two spellings.
    let tenant = new.tenant_id.trim().to_ascii_lowercase();
    let tenant = tenant.as_str();
    if tenant.is_empty() || tenant.contains('/') || tenant.contains(char::is_whitespace) {
        return Err(EngineError::config(
            "--tenant",
            "give the tenant id (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47) or its initial domain",
        ));
    }
    if new.settings.client_id.trim().is_empty() {
        return Err(EngineError::config(
            "--client-id",
            "give the application (client) id of the app registered in Microsoft Entra ID, or set USERSYNC_M365_CLIENT_ID",
        ));
    }
    if new.client_secret.expose().trim().is_empty() {
        return Err(EngineError::config(
            "USERSYNC_M365_CLIENT_SECRET",
            "set the client secret of the app in this environment variable (it is stored encrypted, never printed)",
        ));
    }
    parse_endpoint("--authority-url", &new.settings.authority_url)?;
    parse_endpoint("--graph-url", &new.settings.graph_url)?;
    if let Some(path) = &new.settings.ca_file {
        std::fs::read(path).map_err(|e| {
            EngineError::config("--ca-file", format!("cannot read {}: {e}", path.display()))
        })?;
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
        })
        .await?)
}

/// Sets options of a source from `KEY=VALUE` texts, all or none, and returns them.
pub async fn set_source_options(
    store: &Store,
    source_id: i64,
    assignments: &[String],
) -> Result<SourceOptions, EngineError> {
    let record = store.source(source_id).await?;
    let mut settings: Office365Settings = serde_json::from_value(record.settings.clone())
        .map_err(|e| EngineError::config("source settings", e.to_string()))?;
    let options = settings.options.apply(assignments)?;
    // group_map maps onto existing console groups: a name that is not one is refused.
    let groups = store.list_groups(record.customer_id).await?;
    for (_, console) in &options.group_map {
        if !groups.iter().any(|g| g.name == *console) {
            let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            return Err(EngineError::config(
                "group_map",
                format!(
                    "the console group '{console}' does not exist in '{}'; existing groups: {}. \
                     Create it with `usersync groups add '{console}' --customer '{}'`",
                    record.customer,
                    names.join(", "),
                    record.customer
                ),
            ));
        }
    }
    settings.options = options;
    let value = serde_json::to_value(&settings)
        .map_err(|e| EngineError::config("source settings", e.to_string()))?;
    store.set_source_settings(source_id, &value).await?;
    Ok(settings.options)
}

fn parse_endpoint(field: &str, text: &str) -> Result<Url, EngineError> {
    let url = Url::parse(text).map_err(|e| {
        EngineError::config(
            field,
            format!("'{text}' is not a URL ({e}); use e.g. https://login.microsoftonline.com"),
        )
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(EngineError::config(
            field,
            format!("'{text}' must start with https://"),
        ));
    }
    Ok(url)
}

/// What a read must fetch beyond users, groups and domains; each costs requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadNeeds {
    /// Transitive group memberships (filters on memberOf, selected groups).
    pub memberships: bool,
    /// `mailboxSettings.userPurpose` of every mailbox, through `$batch` (rule 4).
    pub purposes: bool,
    /// Each user's manager, inline with the user pages (`$expand=manager`).
    pub managers: bool,
}

/// Mailbox-type lookups per round of `$batch` calls (100 batches of 20).
const PURPOSE_CHUNK: usize = 2000;

/// A Microsoft 365 tenant read over Graph.
pub struct Office365Source {
    client: GraphClient,
    needs: ReadNeeds,
}

impl Office365Source {
    /// Builds the Graph client for a stored source.
    pub fn new(
        record: &SourceRecord,
        settings: &Office365Settings,
        secret: SecretString,
        max_in_flight: usize,
        retry: RetryPolicy,
    ) -> Result<Self, EngineError> {
        let mut config = GraphConfig::with_urls(
            parse_endpoint("authority_url", &settings.authority_url)?,
            parse_endpoint("graph_url", &settings.graph_url)?,
            record.tenant_id.clone(),
            settings.client_id.clone(),
            ClientSecret::new(secret.expose()),
        );
        config.max_in_flight = max_in_flight;
        config.retry = retry;
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                EngineError::config("ca_file", format!("cannot read {}: {e}", path.display()))
            })?;
            config.extra_root_certificates_pem.push(pem);
        }
        let client = GraphClient::new(config)
            .map_err(|e| EngineError::config("office365 source", e.to_string()))?;
        Ok(Office365Source {
            client,
            needs: ReadNeeds::default(),
        })
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

    /// Each group's transitive members, inverted: user id -> group ids.
    async fn memberships(
        &self,
        groups: &[SourceGroup],
        progress: &dyn Progress,
    ) -> Result<std::collections::HashMap<String, Vec<String>>, SourceError> {
        use futures_util::stream::{self, StreamExt};
        progress.phase("reading group memberships");
        let client = self.client.clone();
        // Owned futures: the client bounds requests in flight; this keeps that many queued.
        let mut pending = stream::iter(groups.iter().map(|g| g.id.clone()).collect::<Vec<_>>())
            .map(move |id| {
                let client = client.clone();
                async move { client.group_members(&id, true).await.map(|m| (id, m)) }
            })
            .buffer_unordered(8);
        let mut lists = Vec::with_capacity(groups.len());
        while let Some(result) = pending.next().await {
            lists.push(result?);
            progress.advance(lists.len());
        }
        let mut member_of: std::collections::HashMap<String, Vec<String>> = Default::default();
        for (group, members) in lists {
            for m in members {
                member_of.entry(m.id).or_default().push(group.clone());
            }
        }
        Ok(member_of)
    }

    /// Mailbox purposes through `$batch`; without MailboxSettings.Read, a note instead.
    async fn purposes(
        &self,
        users: &mut [SourceUser],
        notes: &mut Vec<String>,
        progress: &dyn Progress,
    ) -> Result<(), SourceError> {
        // Only where the answer can change the type: an enabled, licensed account is a user
        // mailbox, while shared, room and equipment mailboxes are disabled, unlicensed
        // accounts (as Exchange creates them). Accounts without a mail address have no
        // mailbox to ask about. This keeps a 100,000-user read to a few hundred $batch calls.
        let ids: Vec<String> = users
            .iter()
            .filter(|u| u.mail.is_some() || !u.proxy_addresses.is_empty())
            .filter(|u| !u.is_enabled() || !u.is_licensed())
            .map(|u| u.id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        progress.phase("reading mailbox types");
        let mut purposes = std::collections::HashMap::with_capacity(ids.len());
        let mut failed = 0usize;
        let mut example = None;
        // In chunks, so the batch responses in memory stay bounded whatever the tenant size.
        for (i, chunk) in ids.chunks(PURPOSE_CHUNK).enumerate() {
            let base = i * PURPOSE_CHUNK;
            let report = |n: usize| progress.advance(base + n);
            match self.client.mailbox_purposes(chunk, &report).await {
                Ok(outcome) => {
                    failed += outcome.errors.len();
                    if example.is_none() {
                        example = outcome.errors.values().next().map(|e| e.to_string());
                    }
                    purposes.extend(outcome.results);
                }
                Err(e) if e.is_forbidden() => {
                    self.purposes_forbidden(notes);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        for u in users.iter_mut() {
            if let Some(purpose) = purposes.remove(&u.id) {
                u.user_purpose = purpose;
            }
        }
        if failed > 0 {
            notes.push(format!(
                "the mailbox type of {failed} users could not be read (for example: {}); their type was guessed from licence and sign-in state",
                example.unwrap_or_default()
            ));
        }
        Ok(())
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

#[async_trait]
impl Source for Office365Source {
    async fn read(&self, progress: &dyn Progress) -> Result<SourceRead, SourceError> {
        progress.phase("reading domains");
        let domains = self.client.list_domains().await?;
        progress.phase("reading users and groups");
        let report = |n: usize| progress.advance(n);
        // Users and groups page independently; reading both at once halves the wait.
        let users = async {
            if self.needs.managers {
                // The manager comes inline with each user: no request per user.
                self.client
                    .list_users_with_manager(USER_PROPERTIES, &report)
                    .await
            } else {
                self.client.list_users(USER_PROPERTIES, &report).await
            }
        };
        let (users, groups) =
            tokio::join!(users, self.client.list_groups(GROUP_PROPERTIES, &|_| {}),);
        let (mut users, mut groups) = (users?, groups?);
        // A server may repeat an object across pages (Graph does in some paging states);
        // one object is one entry, so keep each id once.
        dedup_by_id(&mut users, |u| &u.id);
        dedup_by_id(&mut groups, |g| &g.id);
        let mut users: Vec<SourceUser> = users.into_iter().map(source_user).collect();
        let groups: Vec<SourceGroup> = groups.into_iter().map(source_group).collect();
        let mut notes = Vec::new();
        if self.needs.memberships {
            let mut member_of = self.memberships(&groups, progress).await?;
            for u in users.iter_mut() {
                u.member_of = member_of.remove(&u.id).unwrap_or_default();
            }
        }
        if self.needs.purposes {
            self.purposes(&mut users, &mut notes, progress).await?;
        }
        let stats = self.client.stats();
        Ok(SourceRead {
            snapshot: SourceSnapshot {
                users,
                groups,
                domains: domains
                    .into_iter()
                    .map(|d| SourceDomain {
                        name: d.id,
                        is_verified: d.is_verified.unwrap_or(false),
                        is_initial: d.is_initial.unwrap_or(false),
                        supported_services: d.supported_services,
                    })
                    .collect(),
            },
            requests: stats.requests + stats.token_requests,
            throttled: stats.throttled,
            notes,
        })
    }
}

fn dedup_by_id<T>(items: &mut Vec<T>, id: impl Fn(&T) -> &String) {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items.retain(|item| seen.insert(id(item).clone()));
}

fn source_user(u: usersync_graph::User) -> SourceUser {
    SourceUser {
        id: u.id,
        user_principal_name: u.user_principal_name,
        mail: u.mail,
        proxy_addresses: u.proxy_addresses,
        display_name: u.display_name,
        given_name: u.given_name,
        surname: u.surname,
        account_enabled: u.account_enabled,
        assigned_licenses: u
            .assigned_licenses
            .into_iter()
            .filter_map(|l| l.sku_id)
            .collect(),
        user_type: u.user_type,
        company_name: u.company_name,
        job_title: u.job_title,
        department: u.department,
        mail_enabled: u.mail_enabled,
        user_purpose: None,
        manager_id: u.manager.map(|m| m.id).filter(|id| !id.is_empty()),
        member_of: Vec::new(),
    }
}

fn source_group(g: usersync_graph::Group) -> SourceGroup {
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
