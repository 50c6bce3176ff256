//! `/api/v1`: one handler per operation, each a call of [`usersync_engine::Access`].

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use usersync_core::{DirectoryUser, FilterRule, MailboxType, Role, UserStatus};
use usersync_engine::{ConnectionReport, PlanReport, RunOutcome, SourceRemovalOutcome};
use usersync_store::{
    ApiToken, AuditEntry, Customer, Domain, Enqueued, Group, RunRecord, RunStatus, SourceRecord,
    UserQuery,
};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::paging::{Page, PageParams};
use crate::{ApiError, WebState};

type State = Arc<WebState>;
type Result<T> = std::result::Result<T, ApiError>;

/// The API's routes and its OpenAPI document, made from the same handlers: a route
/// cannot be served without being described. The document is served at
/// `/api/v1/openapi.json` (no token needed: it holds no data).
pub fn routes() -> Router<State> {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(customers, add_customer))
        .routes(routes!(customer, set_customer))
        .routes(routes!(groups, add_group))
        .routes(routes!(domains, add_domain))
        .routes(routes!(users, add_user))
        .routes(routes!(restore_user))
        .routes(routes!(sources, add_source))
        .routes(routes!(source, remove_source))
        .routes(routes!(set_secret))
        .routes(routes!(reconnect))
        .routes(routes!(preview))
        .routes(routes!(sync))
        .routes(routes!(source_runs))
        .routes(routes!(options, set_options))
        .routes(routes!(filters, add_filter))
        .routes(routes!(remove_filter, move_filter))
        .routes(routes!(test_source))
        .routes(routes!(run))
        .routes(routes!(confirm))
        .routes(routes!(cancel))
        .routes(routes!(audit))
        .routes(routes!(tokens, create_token))
        .routes(routes!(revoke_token))
        .split_for_parts();
    let document: Arc<str> = crate::openapi::finish(doc).into();
    router
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    document.to_string(),
                )
            }),
        )
        .fallback(|| async {
            ApiError::not_found("no such API endpoint; the API's paths start with /api/v1/")
        })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "usersync",
        description = "The REST API of usersync: customers, their domains and users, Microsoft 365 sources, previews, syncs and their runs, the audit log and API tokens. Every request carries `Authorization: Bearer TOKEN` (`usersync token create`). Lists are pages: `?limit=N&cursor=C` in, `{\"items\": [...], \"next_cursor\": C}` out, without `next_cursor` on the last page. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}` with the status that fits the code."
    ),
    servers((url = "/api/v1")),
    tags(
        (name = "customers", description = "Customers, their domains and console groups"),
        (name = "users", description = "A customer's directory"),
        (name = "sources", description = "Microsoft 365 tenants connected to a customer: options, filters, preview and sync"),
        (name = "runs", description = "Previews and syncs, queued, running or done"),
        (name = "audit", description = "Who changed what"),
        (name = "tokens", description = "API tokens"),
    )
)]
struct ApiDoc;

/// A JSON body whose faults are answered in the API's error format, naming the field.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(body_error(rejection)),
        }
    }
}

fn body_error(rejection: JsonRejection) -> ApiError {
    let text = rejection.body_text();
    // serde's text names the field: "missing field `name`", "unknown field `x`".
    let field = text
        .split('`')
        .nth(1)
        .filter(|_| text.contains("field `"))
        .map(str::to_string);
    let mut error = ApiError::invalid(field.as_deref(), text);
    if matches!(rejection, JsonRejection::MissingJsonContentType(_)) {
        error.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        error.code = "unsupported_media_type";
        error.message = "send the body as JSON (Content-Type: application/json)".into();
    }
    error
}

fn id_key(id: i64) -> String {
    format!("{id:020}")
}

// Customers.

#[utoipa::path(get, path = "/customers", tag = "customers", params(PageParams), responses((status = 200, description = "The customers the caller sees, by id", body = Page<Customer>)))]
async fn customers(Caller(access): Caller, Query(page): Query<PageParams>) -> Result<Response> {
    let all = access.customers().await?;
    let mut all = all;
    all.sort_by_key(|c| c.id);
    Ok(Json(Page::of_sorted(all, &page, |c| id_key(c.id))?).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCustomer {
    name: String,
}

#[utoipa::path(post, path = "/customers", tag = "customers", request_body = NewCustomer, responses((status = 201, description = "The customer added", body = Customer)))]
async fn add_customer(Caller(access): Caller, Body(new): Body<NewCustomer>) -> Result<Response> {
    let customer = access
        .add_customer(&new.name)
        .await
        .map_err(|e| named(e, "name"))?;
    Ok((StatusCode::CREATED, Json(customer)).into_response())
}

/// An invalid-input error of a body with one field, named as the client sent it.
fn named(error: usersync_engine::EngineError, field: &str) -> ApiError {
    let mut api = ApiError::from(error);
    if api.code == "invalid" {
        api.field = Some(field.to_string());
    }
    api
}

#[utoipa::path(get, path = "/customers/{id}", tag = "customers", params(("id" = i64, Path, description = "The customer's id")), responses((status = 200, description = "The customer", body = Customer)))]
async fn customer(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    Ok(Json(access.customer(id).await?).into_response())
}

/// `{"retention": "30d"}`: a customer's settings, all or none.
#[utoipa::path(patch, path = "/customers/{id}", tag = "customers", params(("id" = i64, Path, description = "The customer's id")), request_body(content = HashMap<String, serde_json::Value>, description = "Settings as `usersync customer set` takes them: `{\"retention\": \"30d\"}`"), responses((status = 200, description = "The customer with its settings", body = Customer)))]
async fn set_customer(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Body(changes): Body<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response> {
    let assignments: Vec<String> = changes
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            )
        })
        .collect();
    Ok(Json(access.set_customer(id, &assignments).await?).into_response())
}

#[utoipa::path(get, path = "/customers/{id}/groups", tag = "customers", params(("id" = i64, Path, description = "The customer's id")), responses((status = 200, description = "The customer's console groups, whole", body = Page<Group>)))]
async fn groups(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    Ok(Json(Page {
        items: access.groups(id).await?,
        next_cursor: None,
    })
    .into_response())
}

#[utoipa::path(post, path = "/customers/{id}/groups", tag = "customers", params(("id" = i64, Path, description = "The customer's id")), request_body = NewCustomer, responses((status = 201, description = "The group added", body = Group)))]
async fn add_group(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Body(new): Body<NewCustomer>,
) -> Result<Response> {
    let group = access
        .add_group(id, &new.name)
        .await
        .map_err(|e| named(e, "name"))?;
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

// Domains.

#[utoipa::path(get, path = "/customers/{id}/domains", tag = "customers", params(("id" = i64, Path, description = "The customer's id"), PageParams), responses((status = 200, description = "The customer's domains, by name", body = Page<Domain>)))]
async fn domains(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Query(page): Query<PageParams>,
) -> Result<Response> {
    let all = access.domains(id).await?;
    Ok(Json(Page::of_sorted(all, &page, |d| d.name.to_string())?).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewDomain {
    name: String,
}

#[utoipa::path(post, path = "/customers/{id}/domains", tag = "customers", params(("id" = i64, Path, description = "The customer's id")), request_body = NewDomain, responses((status = 201, description = "The domain added", body = Domain)))]
async fn add_domain(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Body(new): Body<NewDomain>,
) -> Result<Response> {
    let domain = access
        .add_domain(id, &new.name)
        .await
        .map_err(|e| named(e, "name"))?;
    Ok((StatusCode::CREATED, Json(domain)).into_response())
}

// Users.

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UserParams {
    search: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    mailbox_type: Option<String>,
    group: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/customers/{id}/users", tag = "users", params(("id" = i64, Path, description = "The customer's id"), UserParams), responses((status = 200, description = "A page of the customer's users, by address", body = Page<DirectoryUser>)))]
async fn users(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Query(params): Query<UserParams>,
) -> Result<Response> {
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let parse_status = |s: &str| {
        s.parse::<UserStatus>()
            .map_err(|e| ApiError::invalid(Some("status"), e.to_string()))
    };
    let parse_type = |s: &str| {
        s.parse::<MailboxType>()
            .map_err(|e| ApiError::invalid(Some("type"), e.to_string()))
    };
    let query = UserQuery {
        search: params.search,
        status: params.status.as_deref().map(parse_status).transpose()?,
        mailbox_type: params.mailbox_type.as_deref().map(parse_type).transpose()?,
        group: params.group,
        after: page.after()?,
        limit: page.limit()?,
    };
    let (users, more) = access.users(id, &query).await?;
    Ok(Json(Page::new(users, more, |u| u.address.to_string())).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    address: String,
    display_name: Option<String>,
    #[serde(rename = "type", default)]
    mailbox_type: Option<String>,
}

/// A user added by hand: no sync changes or removes it.
#[utoipa::path(post, path = "/customers/{id}/users", tag = "users", params(("id" = i64, Path, description = "The customer's id")), request_body = NewUser, responses((status = 201, description = "The user added", body = DirectoryUser)))]
async fn add_user(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Body(new): Body<NewUser>,
) -> Result<Response> {
    let mailbox_type = match new.mailbox_type.as_deref() {
        None => MailboxType::User,
        Some(t) => t.parse().map_err(|e: usersync_core::UnknownValue| {
            ApiError::invalid(Some("type"), e.to_string())
        })?,
    };
    let user = access
        .add_user(id, &new.address, new.display_name, mailbox_type)
        .await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

#[utoipa::path(post, path = "/customers/{id}/users/{address}/restore", tag = "users", params(("id" = i64, Path, description = "The customer's id"), ("address" = String, Path, description = "The removed user's address")), responses((status = 200, description = "The user, active again", body = DirectoryUser)))]
async fn restore_user(
    Caller(access): Caller,
    Path((id, address)): Path<(i64, String)>,
) -> Result<Response> {
    Ok(Json(access.restore_user(id, &address).await?).into_response())
}

// Sources and runs.

#[utoipa::path(get, path = "/customers/{id}/sources", tag = "sources", params(("id" = i64, Path, description = "The customer's id"), PageParams), responses((status = 200, description = "The customer's sources, by id", body = Page<SourceRecord>)))]
async fn sources(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Query(page): Query<PageParams>,
) -> Result<Response> {
    let all = access.sources(id).await?;
    Ok(Json(Page::of_sorted(all, &page, |s| id_key(s.id))?).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSource {
    /// The tenant's id (a GUID) or one of its domains.
    tenant_id: String,
    client_id: String,
    client_secret: String,
    #[serde(default = "global_authority")]
    authority_url: String,
    #[serde(default = "global_graph")]
    graph_url: String,
}

fn global_authority() -> String {
    "https://login.microsoftonline.com".into()
}

fn global_graph() -> String {
    "https://graph.microsoft.com".into()
}

#[derive(Serialize, ToSchema)]
struct Connected {
    source: usersync_store::SourceRecord,
    connection: usersync_engine::ConnectionReport,
}

/// Connects a tenant with an app registration's credentials (`source add office365`);
/// the answer has the connection test.
#[utoipa::path(post, path = "/customers/{id}/sources", tag = "sources", params(("id" = i64, Path, description = "The customer's id")), request_body = NewSource, responses((status = 201, description = "The source connected, with its connection test", body = Connected)))]
async fn add_source(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Body(new): Body<NewSource>,
) -> Result<Response> {
    let app = usersync_engine::Office365App {
        client_id: new.client_id,
        client_secret: usersync_store::SecretString::new(new.client_secret),
        authority_url: new.authority_url,
        graph_url: new.graph_url,
    };
    let (source, connection) = access
        .add_office365_source(id, &new.tenant_id, &app)
        .await?;
    Ok((StatusCode::CREATED, Json(Connected { source, connection })).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Secret {
    client_secret: String,
}

#[utoipa::path(put, path = "/sources/{id}/secret", tag = "sources", params(("id" = i64, Path, description = "The source's id")), request_body = Secret, responses((status = 204, description = "The secret is stored (encrypted); it is never sent back")))]
async fn set_secret(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Body(secret): Body<Secret>,
) -> Result<Response> {
    access
        .set_source_secret(id, usersync_store::SecretString::new(secret.client_secret))
        .await
        .map_err(|e| named(e, "client_secret"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Reconnect {
    /// The app registration's client id; give its `client_secret` with it.
    client_id: Option<String>,
    client_secret: Option<String>,
    /// The identity platform, for a national cloud (Microsoft's when not given).
    authority_url: Option<String>,
    graph_url: Option<String>,
}

/// Changes how a source connects (`usersync source reconnect`): another app registration,
/// a new secret, a national cloud's endpoints; the tenant, options and users stay. The
/// answer has the connection test.
#[utoipa::path(post, path = "/sources/{id}/reconnect", tag = "sources", params(("id" = i64, Path, description = "The source's id")), request_body = Reconnect, responses((status = 200, description = "The source as it now connects, with its connection test", body = Connected)))]
async fn reconnect(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Body(change): Body<Reconnect>,
) -> Result<Response> {
    if change.client_id.is_none()
        && change.client_secret.is_none()
        && change.authority_url.is_none()
        && change.graph_url.is_none()
    {
        return Err(ApiError::invalid(
            None,
            "give what changes: client_id and client_secret, authority_url, graph_url",
        ));
    }
    let (source, connection) = access
        .reconnect_source(
            id,
            usersync_engine::Reconnect {
                client_id: change.client_id,
                authority_url: change.authority_url,
                graph_url: change.graph_url,
                ca_file: None,
                allow_insecure_http: None,
            },
            change.client_secret.map(usersync_store::SecretString::new),
        )
        .await?;
    Ok(Json(Connected { source, connection }).into_response())
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct Removal {
    #[serde(default)]
    keep_users: bool,
    #[serde(default)]
    confirm_removals: bool,
}

/// Removes a source: its users removed through the deletion safeguard, or kept
/// unmanaged with `?keep_users=true`.
#[utoipa::path(delete, path = "/sources/{id}", tag = "sources", params(("id" = i64, Path, description = "The source's id"), Removal), responses((status = 200, description = "What removing the source did", body = SourceRemovalOutcome)))]
async fn remove_source(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Query(how): Query<Removal>,
) -> Result<Response> {
    Ok(Json(
        access
            .remove_source(id, how.keep_users, how.confirm_removals)
            .await?,
    )
    .into_response())
}

#[utoipa::path(get, path = "/sources/{id}", tag = "sources", params(("id" = i64, Path, description = "The source's id")), responses((status = 200, description = "The source (never its secret)", body = SourceRecord)))]
async fn source(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    Ok(Json(access.source(id).await?).into_response())
}

// Options and filters (the setup wizard's answers).

/// Every option of a source with its value as `usersync source set` takes it
/// (`{"auto_sync": "true", "interval": "6h", ...}`).
fn option_values(
    options: &usersync_core::SourceOptions,
) -> serde_json::Map<String, serde_json::Value> {
    options
        .entries()
        .into_iter()
        .map(|(key, value)| (key.to_string(), serde_json::Value::String(value)))
        .collect()
}

#[utoipa::path(get, path = "/sources/{id}/options", tag = "sources", params(("id" = i64, Path, description = "The source's id")), responses((status = 200, description = "Every option with its value as `usersync source set` takes it", body = BTreeMap<String, String>)))]
async fn options(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    Ok(Json(option_values(&access.source_options(id).await?)).into_response())
}

/// `{"key": value, ...}` as `usersync source set` takes `KEY=VALUE`: all or none.
#[utoipa::path(patch, path = "/sources/{id}/options", tag = "sources", params(("id" = i64, Path, description = "The source's id")), request_body(content = HashMap<String, serde_json::Value>, description = "Options to set, all or none: `{\"auto_sync\": true, \"interval\": \"6h\"}`; a list may be an array"), responses((status = 200, description = "Every option with its value, after the change", body = BTreeMap<String, String>)))]
async fn set_options(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Body(changes): Body<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response> {
    if changes.is_empty() {
        return Err(ApiError::invalid(
            None,
            "give at least one option, e.g. {\"auto_sync\": true}",
        ));
    }
    let assignments: Vec<String> = changes
        .iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            format!("{key}={text}")
        })
        .collect();
    let options = access.set_source_options(id, &assignments).await?;
    Ok(Json(option_values(&options)).into_response())
}

#[utoipa::path(get, path = "/sources/{id}/filters", tag = "sources", params(("id" = i64, Path, description = "The source's id")), responses((status = 200, description = "The source's filter rules, in order", body = Page<FilterRule>)))]
async fn filters(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    Ok(Json(Page {
        items: access.filter_rules(id).await?,
        next_cursor: None,
    })
    .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewFilter {
    /// The destination console group.
    group: String,
    /// The rule, in the filter language (`department eq 'Sales'`).
    rule: String,
    #[serde(default)]
    create_group: bool,
}

#[utoipa::path(post, path = "/sources/{id}/filters", tag = "sources", params(("id" = i64, Path, description = "The source's id")), request_body = NewFilter, responses((status = 201, description = "The rule added, last in order", body = FilterRule)))]
async fn add_filter(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Body(new): Body<NewFilter>,
) -> Result<Response> {
    let rule = access
        .add_filter_rule(id, &new.group, &new.rule, new.create_group)
        .await
        .map_err(|e| {
            let mut api = ApiError::from(e);
            if api.code == "invalid" && api.field.is_none() {
                api.field = Some("rule".into());
            }
            api
        })?;
    Ok((StatusCode::CREATED, Json(rule)).into_response())
}

#[utoipa::path(delete, path = "/sources/{id}/filters/{rule}", tag = "sources", params(("id" = i64, Path, description = "The source's id"), ("rule" = i64, Path, description = "The rule's id")), responses((status = 204, description = "The rule is removed")))]
async fn remove_filter(
    Caller(access): Caller,
    Path((id, rule)): Path<(i64, i64)>,
) -> Result<Response> {
    access.remove_filter_rule(id, rule).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MoveFilter {
    /// The 1-based position the rule takes.
    position: usize,
}

#[utoipa::path(patch, path = "/sources/{id}/filters/{rule}", tag = "sources", params(("id" = i64, Path, description = "The source's id"), ("rule" = i64, Path, description = "The rule's id")), request_body = MoveFilter, responses((status = 200, description = "The source's rules in their new order", body = Page<FilterRule>)))]
async fn move_filter(
    Caller(access): Caller,
    Path((id, rule)): Path<(i64, i64)>,
    Body(to): Body<MoveFilter>,
) -> Result<Response> {
    let rules = access.move_filter_rule(id, rule, to.position).await?;
    Ok(Json(Page {
        items: rules,
        next_cursor: None,
    })
    .into_response())
}

/// "Test connection": each permission the sync needs, granted or missing.
#[utoipa::path(post, path = "/sources/{id}/test", tag = "sources", params(("id" = i64, Path, description = "The source's id")), responses((status = 200, description = "Each permission the sync needs, granted or missing", body = ConnectionReport)))]
async fn test_source(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    Ok(Json(access.test_source(id).await?).into_response())
}

/// A run just made, with its plan when it has one.
#[derive(Serialize, ToSchema)]
struct Outcome<'a> {
    #[serde(flatten)]
    outcome: &'a RunOutcome,
    plan: PlanReport<'a>,
}

#[utoipa::path(post, path = "/sources/{id}/preview", tag = "sources", params(("id" = i64, Path, description = "The source's id")), responses((status = 200, description = "The preview run with what a sync would do; nothing is applied", body = Outcome)))]
async fn preview(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    let outcome = access.preview(id).await?;
    let body = Outcome {
        outcome: &outcome,
        plan: PlanReport::new(outcome.run_id, &outcome.plan),
    };
    Ok(Json(body).into_response())
}

#[derive(Serialize, ToSchema)]
struct Queued {
    run_id: i64,
    /// `queued` (a new run), `folded` (a queued run of the source took the request) or
    /// `running` (a run of the source is in progress already).
    status: &'static str,
}

/// Sync & Save: queued for a worker of `usersync serve`; the answer names the run to
/// follow at /api/v1/runs/{id}.
#[utoipa::path(post, path = "/sources/{id}/sync", tag = "sources", params(("id" = i64, Path, description = "The source's id")), responses((status = 202, description = "The run that takes the request", body = Queued)))]
async fn sync(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    let (run_id, status) = match access.run_now(id).await? {
        Enqueued::Queued(run) => (run, "queued"),
        Enqueued::Folded(run) => (run, "folded"),
        Enqueued::Running(run) => (run, "running"),
    };
    Ok((StatusCode::ACCEPTED, Json(Queued { run_id, status })).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunParams {
    /// Only runs of these statuses, comma-separated: queued, running, succeeded, failed,
    /// held, cancelled.
    status: Option<String>,
    /// How many runs a page holds: 1 to 1000, 100 when not given.
    limit: Option<i64>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/sources/{id}/runs", tag = "runs", params(("id" = i64, Path, description = "The source's id"), RunParams), responses((status = 200, description = "The source's runs, newest first", body = Page<RunRecord>)))]
async fn source_runs(
    Caller(access): Caller,
    Path(id): Path<i64>,
    Query(params): Query<RunParams>,
) -> Result<Response> {
    let statuses = match params.status.as_deref() {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim().parse::<RunStatus>().map_err(|()| {
                    let valid: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::invalid(
                        Some("status"),
                        format!(
                            "'{s}' is not a run status; use one of: {}",
                            valid.join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let runs = access
        .runs_before(id, &statuses, page.after_id()?, limit + 1)
        .await?;
    Ok(Json(Page::of_one_more(runs, limit, |r| r.id.to_string())).into_response())
}

#[utoipa::path(get, path = "/runs/{id}", tag = "runs", params(("id" = i64, Path, description = "The run's id")), responses((status = 200, description = "The run with its plan and errors", body = RunRecord)))]
async fn run(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    Ok(Json(access.run(id).await?).into_response())
}

/// "Confirm removals" of a held run: applies them now (the tenant is read again).
#[utoipa::path(post, path = "/runs/{id}/confirm", tag = "runs", params(("id" = i64, Path, description = "The held run's id")), responses((status = 200, description = "The confirming run, with what it applied", body = Outcome)))]
async fn confirm(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    let outcome = access.confirm(id).await?;
    let body = Outcome {
        outcome: &outcome,
        plan: PlanReport::new(outcome.run_id, &outcome.plan),
    };
    Ok(Json(body).into_response())
}

/// Cancels a queued or running run: `{"run_id", "status": "cancelled", "was"}` (a
/// running one applies nothing from now on).
#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs", params(("id" = i64, Path, description = "The run's id")), responses((status = 200, description = "The run, cancelled", body = Cancelled)))]
async fn cancel(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    let was = access.cancel(id).await?;
    let run = access.run(id).await?;
    let body = Cancelled {
        run_id: id,
        status: run.status,
        was,
    };
    Ok(Json(body).into_response())
}

#[derive(Serialize, ToSchema)]
struct Cancelled {
    run_id: i64,
    /// `cancelled`.
    status: RunStatus,
    /// What the run was before: `queued` or `running`.
    was: RunStatus,
}

// The audit log.

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// One customer's entries (a customer's token sees its own only).
    customer_id: Option<i64>,
    /// Only entries since: RFC 3339, or a duration back such as 7d.
    since: Option<String>,
    /// How many entries a page holds: 1 to 1000, 100 when not given.
    limit: Option<i64>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditParams), responses((status = 200, description = "Entries of the audit log, newest first", body = Page<AuditEntry>)))]
async fn audit(Caller(access): Caller, Query(params): Query<AuditParams>) -> Result<Response> {
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let entries = access
        .audit_before(
            params.customer_id,
            params.since.as_deref(),
            page.after_id()?,
            limit + 1,
        )
        .await?;
    Ok(Json(Page::of_one_more(entries, limit, |e| e.id.to_string())).into_response())
}

// API tokens.

#[utoipa::path(get, path = "/tokens", tag = "tokens", params(PageParams), responses((status = 200, description = "The API tokens the caller administers (never their text)", body = Page<ApiToken>)))]
async fn tokens(Caller(access): Caller, Query(page): Query<PageParams>) -> Result<Response> {
    let mut all = access.tokens().await?;
    all.sort_by_key(|t| t.id);
    Ok(Json(Page::of_sorted(all, &page, |t: &ApiToken| id_key(t.id))?).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    customer_id: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct Made {
    /// Shown this once; the service keeps only its hash.
    token: String,
    #[serde(flatten)]
    record: ApiToken,
}

#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = NewToken, responses((status = 201, description = "The token, shown this once", body = Made)))]
async fn create_token(Caller(access): Caller, Body(new): Body<NewToken>) -> Result<Response> {
    let role: Role = new
        .role
        .parse()
        .map_err(|e: usersync_core::UnknownValue| ApiError::invalid(Some("role"), e.to_string()))?;
    let made = access
        .create_token(&new.name, role, new.customer_id)
        .await?;
    let body = Made {
        token: made.token.expose().to_string(),
        record: made.record,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = i64, Path, description = "The token's id")), responses((status = 200, description = "The token, revoked", body = ApiToken)))]
async fn revoke_token(Caller(access): Caller, Path(id): Path<i64>) -> Result<Response> {
    Ok(Json(access.revoke_token(id).await?).into_response())
}
