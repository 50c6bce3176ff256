//! "Connect Office 365": the admin-consent round trip of the identity platform. The
//! console sends the customer's administrator to
//! `{authority}/{tenant or organizations}/v2.0/adminconsent?client_id&redirect_uri&state`;
//! Microsoft sends them back to the redirect URI with `tenant`, `admin_consent=True` and
//! the `state`, or with `error` and `error_description`. The state is sealed with the
//! store's key (it names the customer, is bound to the browser session that asked, and
//! expires), so any `serve` process of the database can take the answer.
//!
//! Delegated mode signs in as the administrator instead: the authorization code flow
//! (`{authority}/{tenant or organizations}/oauth2/v2.0/authorize`, PKCE with S256, the
//! verifier kept in the sealed state), then the code is redeemed for an access token and
//! a refresh token; the tenant is the signed-in administrator's (Graph's organization),
//! and the refresh token is stored sealed with the source, never shown.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use usersync_core::TenantId;
use usersync_store::{SecretString, SourceRecord, StoreError};

use crate::office365::Office365Settings;
use crate::{Access, ConnectionReport, EngineError, NewOffice365};

/// How long an administrator has to answer Microsoft's consent page.
pub const CONSENT_TTL_SECS: i64 = 30 * 60;

const STATE_CONTEXT: &str = "office365.admin_consent.state";

/// The provider's multi-tenant app registration, with which the console connects tenants.
#[derive(Debug, Clone)]
pub struct Office365App {
    pub client_id: String,
    pub client_secret: SecretString,
    /// The identity platform, e.g. `https://login.microsoftonline.com`.
    pub authority_url: String,
    /// Microsoft Graph, e.g. `https://graph.microsoft.com`.
    pub graph_url: String,
}

impl Office365App {
    fn settings(&self) -> Office365Settings {
        Office365Settings::new(&self.client_id, &self.authority_url, &self.graph_url)
    }

    /// Checks the registration's settings as a new source's are checked.
    pub fn check(&self) -> Result<(), EngineError> {
        self.settings().check()
    }
}

/// What Microsoft's redirect brought back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConsentAnswer {
    /// A delegated sign-in's authorization code.
    pub code: Option<String>,
    pub tenant: Option<String>,
    pub admin_consent: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ConsentState {
    customer_id: i64,
    /// The browser session that asked (a digest of its CSRF token).
    session: String,
    /// Seconds since the epoch after which the answer is refused.
    expires: i64,
    /// A delegated sign-in: what its token request must repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delegated: Option<DelegatedRequest>,
}

#[derive(Serialize, Deserialize)]
struct DelegatedRequest {
    /// The PKCE code verifier (its S256 digest went to the authorize request).
    verifier: String,
    redirect_uri: String,
    /// The tenant asked for (`organizations`: the administrator's own): the code is
    /// redeemed there, and the tenant signed in to must be it.
    tenant: String,
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The tenant of the identity platform's paths: the one named (an id or a domain), else
/// `organizations` (the administrator's own).
fn tenant_path(hint: Option<&str>) -> Result<String, EngineError> {
    match hint.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if t.eq_ignore_ascii_case("organizations") => Ok("organizations".into()),
        Some(t) => Ok(TenantId::parse(t)
            .map_err(|e| EngineError::config("tenant", e.to_string()))?
            .to_string()),
        None => Ok("organizations".into()),
    }
}

/// A page of the identity platform for `tenant`: `{authority}/{tenant}/{path}`.
fn authority_page(app: &Office365App, tenant: &str, path: &str) -> Result<url::Url, EngineError> {
    url::Url::parse(&format!(
        "{}/{tenant}/{path}",
        app.authority_url.trim_end_matches('/')
    ))
    .map_err(|e| EngineError::config("authority_url", e.to_string()))
}

/// What a delegated sign-in asks for: the app's Graph permissions as configured in its
/// registration, and a refresh token.
fn delegated_scope(app: &Office365App) -> String {
    format!(
        "{}/.default offline_access",
        app.graph_url.trim_end_matches('/')
    )
}

fn consent_error(problem: impl Into<String>) -> EngineError {
    EngineError::config("consent", problem)
}

impl Access {
    /// The URL of Microsoft's admin-consent page for connecting a tenant to `customer_id`;
    /// `tenant_hint` (an id or a domain) skips the choice of directory, else the
    /// administrator's own is used (`organizations`). `session` binds the answer to the
    /// browser that asked.
    pub async fn start_consent(
        &self,
        app: &Office365App,
        customer_id: i64,
        tenant_hint: Option<&str>,
        redirect_uri: &str,
        session: &str,
    ) -> Result<String, EngineError> {
        let (tenant, sealed) = self
            .consent_request(app, customer_id, tenant_hint, session, None)
            .await?;
        let mut url = authority_page(app, &tenant, "v2.0/adminconsent")?;
        url.query_pairs_mut()
            .append_pair("client_id", &app.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", &sealed);
        Ok(url.to_string())
    }

    /// The URL of Microsoft's sign-in for connecting a tenant in delegated mode: the
    /// authorization code flow with PKCE; the source will sign in as that administrator.
    pub async fn start_delegated_sign_in(
        &self,
        app: &Office365App,
        customer_id: i64,
        tenant_hint: Option<&str>,
        redirect_uri: &str,
        session: &str,
    ) -> Result<String, EngineError> {
        use sha2::Digest;
        let verifier = crate::access::random_token(); // 43 characters: a valid PKCE verifier
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let tenant = tenant_path(tenant_hint)?;
        let request = DelegatedRequest {
            verifier,
            redirect_uri: redirect_uri.to_string(),
            tenant: tenant.clone(),
        };
        let (tenant, sealed) = self
            .consent_request(app, customer_id, Some(&tenant), session, Some(request))
            .await?;
        let mut url = authority_page(app, &tenant, "oauth2/v2.0/authorize")?;
        url.query_pairs_mut()
            .append_pair("client_id", &app.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_mode", "query")
            .append_pair("scope", &delegated_scope(app))
            .append_pair("state", &sealed)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("prompt", "select_account");
        Ok(url.to_string())
    }

    /// Checks who asks and for which customer; the tenant path and the sealed state.
    async fn consent_request(
        &self,
        app: &Office365App,
        customer_id: i64,
        tenant_hint: Option<&str>,
        session: &str,
        delegated: Option<DelegatedRequest>,
    ) -> Result<(String, String), EngineError> {
        self.may_change()?;
        self.customer(customer_id).await?;
        app.check()?;
        let tenant = tenant_path(tenant_hint)?;
        let state = ConsentState {
            customer_id,
            session: crate::access::digest(session),
            expires: now_secs() + CONSENT_TTL_SECS,
            delegated,
        };
        let text = serde_json::to_string(&state)
            .map_err(|e| consent_error(format!("the request could not be made: {e}")))?;
        let sealed = self
            .engine()
            .store()
            .key()
            .seal(&SecretString::new(text), STATE_CONTEXT)?;
        Ok((tenant, sealed))
    }

    /// Takes Microsoft's answer: on consent, connects the tenant to the customer the
    /// request named (refused when another customer has it) and tests the connection.
    pub async fn finish_consent(
        &self,
        app: &Office365App,
        answer: &ConsentAnswer,
        session: &str,
    ) -> Result<(SourceRecord, ConnectionReport), EngineError> {
        let sealed = answer.state.as_deref().ok_or_else(|| {
            consent_error("the answer carries no state; start again from Connect Office 365")
        })?;
        let state: ConsentState = self
            .engine()
            .store()
            .key()
            .open(sealed, STATE_CONTEXT)
            .ok()
            .and_then(|text| serde_json::from_str(text.expose()).ok())
            .ok_or_else(|| consent_error("the answer's state is not one this console made; start again from Connect Office 365"))?;
        if state.session != crate::access::digest(session) {
            return Err(consent_error(
                "the answer belongs to another sign-in; start again from Connect Office 365 in this browser",
            ));
        }
        if state.expires < now_secs() {
            return Err(consent_error(
                "the consent took longer than 30 minutes; start again from Connect Office 365",
            ));
        }
        self.may_change()?;
        let customer = self.customer(state.customer_id).await?;
        if let Some(error) = &answer.error {
            let description = answer
                .error_description
                .as_deref()
                .unwrap_or("no description");
            let hint = if description.contains("AADSTS65004") || error == "access_denied" {
                " The administrator declined (Cancel): nothing was connected."
            } else if description.contains("AADSTS90094") {
                " Only a global administrator of the tenant can consent for it."
            } else {
                ""
            };
            return Err(consent_error(format!(
                "Microsoft 365 answered {error}: {description}.{hint}"
            )));
        }
        if let Some(request) = &state.delegated {
            let code = answer.code.as_deref().ok_or_else(|| {
                consent_error("Microsoft 365 sent no authorization code; start again")
            })?;
            return self
                .finish_delegated_sign_in(app, customer.name, code, request)
                .await;
        }
        if !answer
            .admin_consent
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("true"))
        {
            return Err(consent_error(
                "Microsoft 365 did not say the administrator consented; start again",
            ));
        }
        let tenant = answer
            .tenant
            .as_deref()
            .ok_or_else(|| consent_error("Microsoft 365 did not say which tenant consented"))?;
        let tenant = TenantId::parse(tenant)
            .map_err(|e| consent_error(format!("the tenant Microsoft 365 named: {e}")))?;
        // The redirect is not signed: whoever holds a state could name any tenant. A token
        // for that tenant proves the app's consent there before anything is kept.
        crate::office365::tenant_grants_a_token(
            &app.settings(),
            tenant.as_str(),
            &app.client_secret,
        )
        .await?;
        self.connect_consented(customer.name, &tenant, app.settings(), app, None)
            .await
    }

    /// Redeems a delegated sign-in's code, finds the administrator's tenant and connects
    /// it with the sign-in's refresh token.
    async fn finish_delegated_sign_in(
        &self,
        app: &Office365App,
        customer: String,
        code: &str,
        request: &DelegatedRequest,
    ) -> Result<(SourceRecord, ConnectionReport), EngineError> {
        let mut settings = app.settings();
        settings.delegated = true;
        let mut config =
            crate::office365::graph_config(&settings, &request.tenant, &app.client_secret)?;
        // Filled by the answer to the code.
        let refresh = usersync_graph::RefreshToken::new("");
        config.sign_in = usersync_graph::SignIn::Delegated(refresh.clone());
        let client = usersync_graph::GraphClient::new(config)
            .map_err(|e| EngineError::config("office365 source", e.to_string()))?;
        client
            .redeem_authorization_code(code, &request.redirect_uri, &request.verifier)
            .await
            .map_err(|e| EngineError::Tenant {
                what: "Microsoft 365 did not accept the sign-in",
                error: Box::new(e),
            })?;
        let organization = client
            .organization()
            .await
            .map_err(|e| EngineError::Tenant {
                what: "the signed-in administrator's tenant could not be read",
                error: Box::new(e),
            })?;
        let tenant = TenantId::parse(&organization.id)
            .map_err(|e| consent_error(format!("the tenant Microsoft 365 signed in to: {e}")))?;
        // An administrator who is a guest elsewhere could sign in to another tenant than
        // the one asked for: only the one asked for is connected.
        if request.tenant != "organizations" {
            let asked = request.tenant.to_ascii_lowercase();
            let same = asked == tenant.as_str().to_ascii_lowercase()
                || organization
                    .verified_domains
                    .iter()
                    .filter_map(|d| d.name.as_deref())
                    .any(|d| d.eq_ignore_ascii_case(&asked));
            if !same {
                return Err(consent_error(format!(
                    "the administrator signed in to the tenant {tenant}, not to {asked} as asked; \
                     start again and sign in with an account of {asked}"
                )));
            }
        }
        let token = SecretString::new(refresh.current().expose_secret());
        self.connect_consented(customer, &tenant, settings, app, Some(token))
            .await
    }

    /// Connects a tenant that consented (refused when another customer has it) and tests
    /// the connection.
    async fn connect_consented(
        &self,
        customer: String,
        tenant: &TenantId,
        settings: Office365Settings,
        app: &Office365App,
        refresh_token: Option<SecretString>,
    ) -> Result<(SourceRecord, ConnectionReport), EngineError> {
        let added = self
            .engine()
            .add_office365_source_with(
                NewOffice365 {
                    customer,
                    tenant_id: tenant.to_string(),
                    settings,
                    client_secret: app.client_secret.clone(),
                },
                refresh_token,
            )
            .await;
        let record = self.owner_hidden(added, tenant.as_str())?;
        let report = self.engine().test_source(record.id).await?;
        Ok((record, report))
    }

    /// A tenant another customer has is named, with that customer, only to whoever sees
    /// every customer: to a customer's admin the owner is another customer's data.
    pub(crate) fn owner_hidden(
        &self,
        added: Result<SourceRecord, EngineError>,
        tenant: &str,
    ) -> Result<SourceRecord, EngineError> {
        match added {
            Err(EngineError::Store(StoreError::Conflict(_)))
                if !self.principal().grant.sees_all() =>
            {
                Err(EngineError::Conflict(format!(
                    "the tenant {tenant} is connected to another customer already; one tenant \
                     belongs to one customer (ask your provider)"
                )))
            }
            other => other,
        }
    }

    /// Tests a source's connection: each permission the sync needs, granted or missing.
    /// It calls the tenant, as a preview does: not for read-only principals.
    pub async fn test_source(&self, source_id: i64) -> Result<ConnectionReport, EngineError> {
        self.source(source_id).await?;
        self.may_change()?;
        self.engine().test_source(source_id).await
    }
}
