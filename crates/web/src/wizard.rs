//! The setup wizard of a source (one step per page, resumable) and its "Filters" page with
//! "Destination" groups. Each step edits some of the source's options through
//! `Access::set_source_options` (checked there, all or none); this module only says which
//! options a step shows and how.

use askama::Template;
use axum::Form;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use usersync_engine::{EngineError, ErrorKind, error_text};

use crate::console::{Page, Signed, Who};

/// How an option is asked for.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Switch,
    Text(&'static str),
    Choice(&'static [&'static str]),
    /// Several of these, kept comma-separated.
    Several(&'static [&'static str]),
}

pub(crate) struct Field {
    pub key: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

pub(crate) struct Step {
    pub slug: &'static str,
    pub title: &'static str,
    pub intro: &'static str,
    pub fields: &'static [Field],
}

const fn field(key: &'static str, label: &'static str, help: &'static str, kind: Kind) -> Field {
    Field {
        key,
        label,
        help,
        kind,
    }
}

/// The steps, in order; the last two are the test sync and the summary.
pub(crate) const STEPS: &[Step] = &[
    Step {
        slug: "automatic",
        title: "Automatic sync",
        intro: "Sync this source by itself at an interval, or only when asked (Sync & Save).",
        fields: &[
            field("auto_sync", "Enable Automatic User Sync", "", Kind::Switch),
            field(
                "interval",
                "Interval",
                "How often: 15m at the least; e.g. 30m, 6h, 1d.",
                Kind::Text("6h"),
            ),
        ],
    },
    Step {
        slug: "email",
        title: "Email method",
        intro: "Which of a mailbox's addresses becomes its address in the console.",
        fields: &[field(
            "email_method",
            "Primary address from",
            "primary_smtp: the SMTP: entry of proxyAddresses, then mail, then the UPN (recommended); mail: the mail property; upn: the user principal name.",
            Kind::Choice(&["primary_smtp", "mail", "upn"]),
        )],
    },
    Step {
        slug: "groups",
        title: "Groups",
        intro: "Console groups can follow the tenant's groups, members included.",
        fields: &[field(
            "include_groups",
            "Create console groups from the tenant's groups",
            "",
            Kind::Switch,
        )],
    },
    Step {
        slug: "selected-groups",
        title: "Selected groups",
        intro: "Sync only the members of some tenant groups (members of nested groups too).",
        fields: &[field(
            "selected_groups",
            "Only members of",
            "Tenant group names or ids, comma-separated; empty: everyone.",
            Kind::Text("Sales, Support"),
        )],
    },
    Step {
        slug: "group-map",
        title: "Group mapping",
        intro: "Send the members of a tenant group to an existing console group.",
        fields: &[field(
            "group_map",
            "Mapping",
            "tenant group=>console group, separated by ';'; e.g. Sales=>Sales team.",
            Kind::Text("Sales=>Sales team"),
        )],
    },
    Step {
        slug: "group-types",
        title: "Group types",
        intro: "Which kinds of tenant group count for the group options.",
        fields: &[field(
            "group_types",
            "Group types",
            "Microsoft 365 groups, security groups, distribution lists.",
            Kind::Several(&["m365", "security", "distribution"]),
        )],
    },
    Step {
        slug: "accounts",
        title: "Unlicensed, disabled and guests",
        intro: "Accounts that may not need protection.",
        fields: &[
            field(
                "exclude_unlicensed",
                "Leave out unlicensed accounts",
                "",
                Kind::Switch,
            ),
            field(
                "exclude_disabled",
                "Leave out disabled accounts",
                "",
                Kind::Switch,
            ),
            field("exclude_guests", "Leave out guests", "", Kind::Switch),
        ],
    },
    Step {
        slug: "managers",
        title: "Managers",
        intro: "Keep each user's manager with the user.",
        fields: &[field(
            "import_managers",
            "Import managers",
            "",
            Kind::Switch,
        )],
    },
    Step {
        slug: "addresses",
        title: "Deny list and extra addresses",
        intro: "Addresses never imported, and addresses kept although the tenant does not list them (dynamic distribution lists).",
        fields: &[
            field(
                "deny_list",
                "Never import",
                "Addresses, comma-separated (aliases are matched too).",
                Kind::Text("ceo@contoso.com"),
            ),
            field(
                "extra_addresses",
                "Also keep",
                "Addresses, comma-separated; imported as distribution lists.",
                Kind::Text("all-staff@contoso.com"),
            ),
        ],
    },
    Step {
        slug: "defaults",
        title: "New-mailbox defaults",
        intro: "Settings given to each mailbox a sync creates (never changed by a sync after that).",
        fields: &[
            field(
                "defaults.incoming",
                "Filter incoming mail",
                "",
                Kind::Switch,
            ),
            field(
                "defaults.outgoing",
                "Filter outgoing mail",
                "",
                Kind::Switch,
            ),
            field("defaults.archiving", "Archive mail", "", Kind::Switch),
            field(
                "defaults.timezone",
                "Time zone",
                "An IANA name such as Europe/London; empty: the console's.",
                Kind::Text("Europe/London"),
            ),
            field(
                "defaults.date_format",
                "Date format",
                "",
                Kind::Choice(&["", "dd/mm/yyyy", "mm/dd/yyyy", "yyyy-mm-dd", "dd.mm.yyyy"]),
            ),
            field(
                "defaults.time_format",
                "Time format",
                "",
                Kind::Choice(&["", "24h", "12h"]),
            ),
        ],
    },
    Step {
        slug: "removals",
        title: "Removals",
        intro: "What happens to users gone from the tenant.",
        fields: &[
            field(
                "remove_deleted",
                "Remove users gone from the tenant",
                "Off: they are reported and kept. Removed users stay restorable for the customer's retention.",
                Kind::Switch,
            ),
            field(
                "deletion_threshold",
                "Deletion safeguard",
                "PERCENT,MIN: a run that would remove more than PERCENT % of the source's users, and at least MIN, waits for \"Confirm removals\".",
                Kind::Text("10,20"),
            ),
        ],
    },
    Step {
        slug: "reading",
        title: "Reading the tenant",
        intro: "Which users go where, and how the tenant is read.",
        fields: &[
            field(
                "only_matching",
                "Only users a filter rule matches",
                "Off: users no rule matches go to Main. See Filters.",
                Kind::Switch,
            ),
            field(
                "import_domains",
                "Add the tenant's mail domains to the customer",
                "",
                Kind::Switch,
            ),
            field(
                "delta",
                "Read only what changed since the last run",
                "Delta queries over the source's mirror; off: every run reads the whole tenant.",
                Kind::Switch,
            ),
            field(
                "full_sync_every",
                "Read the whole tenant again every",
                "15m to 7d; the run reports what the mirror missed.",
                Kind::Text("1d"),
            ),
            field(
                "purpose_budget",
                "Mailbox types read per run",
                "For mailboxes whose type (shared, room, equipment) is not yet known; 0: never.",
                Kind::Text("20000"),
            ),
            field(
                "notifications",
                "Sync within a minute of a change (change notifications)",
                "Needs the service's public URL (usersync serve --public-url).",
                Kind::Switch,
            ),
        ],
    },
    Step {
        slug: "test",
        title: "Test sync",
        intro: "A preview with these settings: what a sync would add, update, remove and skip. Nothing is written to the directory.",
        fields: &[],
    },
    Step {
        slug: "done",
        title: "Done",
        intro: "The source is set up. Every setting can be changed here later.",
        fields: &[],
    },
];

/// The last value a form gave for `key` (a checkbox after its hidden default).
fn last(form: &[(String, String)], key: &str) -> Option<String> {
    form.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn step_index(slug: &str) -> Option<usize> {
    STEPS.iter().position(|s| s.slug == slug)
}

/// One input of a step, as the template shows it.
pub(crate) struct Input {
    key: String,
    id: String,
    label: &'static str,
    help: &'static str,
    /// `switch`, `text`, `choice` or `several`.
    kind: &'static str,
    value: String,
    on: bool,
    placeholder: &'static str,
    options: Vec<(String, bool)>,
    error: Option<String>,
}

struct StepLink {
    slug: &'static str,
    title: &'static str,
    current: bool,
}

struct Summary {
    key: &'static str,
    value: String,
}

#[derive(Template)]
#[template(path = "wizard.html")]
struct WizardPage {
    who: Option<Who>,
    csrf: String,
    source_id: i64,
    customer: String,
    customer_id: i64,
    steps: Vec<StepLink>,
    number: usize,
    total: usize,
    title: &'static str,
    intro: &'static str,
    slug: &'static str,
    inputs: Vec<Input>,
    back: Option<&'static str>,
    problem: Option<String>,
    preview: Option<(i64, String)>,
    summary: Vec<Summary>,
}

fn inputs(
    step: &Step,
    values: &[(&'static str, String)],
    error: Option<(&str, String)>,
) -> Vec<Input> {
    step.fields
        .iter()
        .map(|f| {
            let value = values
                .iter()
                .find(|(k, _)| *k == f.key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let chosen: Vec<&str> = value.split(',').map(str::trim).collect();
            let (kind, placeholder, options) = match f.kind {
                Kind::Switch => ("switch", "", Vec::new()),
                Kind::Text(p) => ("text", p, Vec::new()),
                Kind::Choice(all) => (
                    "choice",
                    "",
                    all.iter().map(|o| (o.to_string(), *o == value)).collect(),
                ),
                Kind::Several(all) => (
                    "several",
                    "",
                    all.iter()
                        .map(|o| (o.to_string(), chosen.contains(o)))
                        .collect(),
                ),
            };
            Input {
                key: f.key.to_string(),
                id: f.key.replace('.', "-"),
                label: f.label,
                help: f.help,
                kind,
                on: value == "true",
                value,
                placeholder,
                options,
                error: error
                    .as_ref()
                    .filter(|(k, _)| *k == f.key)
                    .map(|(_, e)| e.clone()),
            }
        })
        .collect()
}

async fn page(
    signed: &Signed,
    source_id: i64,
    index: usize,
    typed: Option<Vec<(&'static str, String)>>,
    problem: Option<(Option<String>, String)>,
    preview: Option<(i64, String)>,
) -> Page {
    let loaded = async {
        let record = signed.access.source(source_id).await?;
        let options = signed.access.source_options(source_id).await?;
        Ok::<_, EngineError>((record, options))
    };
    let (record, options) = match loaded.await {
        Ok(l) => l,
        Err(e) => return Page::error(signed.who(), e),
    };
    let step = &STEPS[index];
    let values = typed.unwrap_or_else(|| options.entries());
    let (field_error, general) = match problem {
        Some((Some(field), text)) if step.fields.iter().any(|f| f.key == field) => {
            (Some((field, text)), None)
        }
        Some((_, text)) => (None, Some(text)),
        None => (None, None),
    };
    let inputs = inputs(
        step,
        &values,
        field_error.as_ref().map(|(k, e)| (k.as_str(), e.clone())),
    );
    let status = if field_error.is_some() || general.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Page::ok(WizardPage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        source_id,
        customer: record.customer.clone(),
        customer_id: record.customer_id,
        steps: STEPS
            .iter()
            .enumerate()
            .map(|(i, s)| StepLink {
                slug: s.slug,
                title: s.title,
                current: i == index,
            })
            .collect(),
        number: index + 1,
        total: STEPS.len(),
        title: step.title,
        intro: step.intro,
        slug: step.slug,
        inputs,
        back: index.checked_sub(1).map(|i| STEPS[i].slug),
        problem: general,
        preview,
        summary: if step.slug == "done" {
            options
                .entries()
                .into_iter()
                .map(|(key, value)| Summary { key, value })
                .collect()
        } else {
            Vec::new()
        },
    })
    .with_status(status)
}

/// `/sources/{id}/setup`: resumes after the last step saved.
pub(crate) async fn resume(signed: Signed, Path(id): Path<i64>) -> Response {
    match signed.access.setup_step(id).await {
        Ok(saved) => {
            let next = saved
                .as_deref()
                .and_then(step_index)
                .map_or(0, |i| (i + 1).min(STEPS.len() - 1));
            Redirect::to(&format!("/sources/{id}/setup/{}", STEPS[next].slug)).into_response()
        }
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

pub(crate) async fn show(signed: Signed, Path((id, slug)): Path<(i64, String)>) -> Page {
    match step_index(&slug) {
        Some(index) => page(&signed, id, index, None, None, None).await,
        None => Page::error(
            signed.who(),
            EngineError::Store(usersync_store::StoreError::NotFound {
                what: "setup step",
                name: slug,
            }),
        ),
    }
}

/// A step's answers: saved (all or none), then on to the next step, or back to the User
/// Sync tab ("Save and leave"; the wizard resumes there later).
pub(crate) async fn save(
    signed: Signed,
    Path((id, slug)): Path<(i64, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let value = |key: &str| last(&form, key);
    if let Err(page) = signed.check(&value("csrf").unwrap_or_default()) {
        return page.into_response();
    }
    let Some(index) = step_index(&slug) else {
        return show(signed, Path((id, slug))).await.into_response();
    };
    let step = &STEPS[index];
    // Every field of the step, as typed (a switch left off and a "several" with nothing
    // ticked send nothing).
    let typed: Vec<(&'static str, String)> = step
        .fields
        .iter()
        .map(|f| {
            let text = match f.kind {
                Kind::Switch => value(f.key).map_or("false".into(), |_| "true".into()),
                Kind::Several(_) => form
                    .iter()
                    .filter(|(k, _)| k == f.key)
                    .map(|(_, v)| v.clone())
                    .collect::<Vec<_>>()
                    .join(","),
                _ => value(f.key).unwrap_or_default(),
            };
            (f.key, text)
        })
        .collect();
    let mut preview = None;
    if step.slug == "test" && value("action").as_deref() == Some("preview") {
        return match signed.access.preview(id).await {
            Ok(outcome) => {
                let counts = format!(
                    "{} to add, {} to update, {} to remove, {} skipped",
                    outcome.plan.add.len(),
                    outcome.plan.update.len(),
                    outcome.plan.remove.len(),
                    outcome.plan.skip.len()
                );
                preview = Some((outcome.run_id, counts));
                page(&signed, id, index, None, None, preview)
                    .await
                    .into_response()
            }
            Err(e) => page(&signed, id, index, None, Some((None, error_text(&e))), None)
                .await
                .into_response(),
        };
    }
    if !typed.is_empty() {
        let assignments: Vec<String> = typed.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Err(e) = signed.access.set_source_options(id, &assignments).await {
            if e.kind() != ErrorKind::Invalid {
                return Page::error(signed.who(), e).into_response();
            }
            let field = e.field();
            return page(
                &signed,
                id,
                index,
                Some(typed),
                Some((field, error_text(&e))),
                preview,
            )
            .await
            .into_response();
        }
    }
    if let Err(e) = signed.access.set_setup_step(id, step.slug).await {
        return Page::error(signed.who(), e).into_response();
    }
    let record = signed.access.source(id).await;
    if value("action").as_deref() == Some("leave") || step.slug == "done" {
        let to = match record {
            Ok(r) => format!("/customers/{}", r.customer_id),
            Err(_) => "/".into(),
        };
        return Redirect::to(&to).into_response();
    }
    let next = STEPS[(index + 1).min(STEPS.len() - 1)].slug;
    Redirect::to(&format!("/sources/{id}/setup/{next}")).into_response()
}

// Filters and their destination groups.

struct RuleRow {
    id: i64,
    position: usize,
    /// Whether it is the last rule (no "Move down").
    last: bool,
    rule: String,
    group: String,
}

#[derive(Template)]
#[template(path = "filters.html")]
struct FiltersPage {
    who: Option<Who>,
    csrf: String,
    source_id: i64,
    customer: String,
    customer_id: i64,
    rules: Vec<RuleRow>,
    groups: Vec<String>,
    form_rule: String,
    form_group: String,
    problem: Option<String>,
    problem_field: String,
}

async fn filters_page(
    signed: &Signed,
    id: i64,
    typed: (String, String),
    problem: Option<(String, String)>,
) -> Page {
    let loaded = async {
        let record = signed.access.source(id).await?;
        let rules = signed.access.filter_rules(id).await?;
        let groups = signed.access.groups(record.customer_id).await?;
        Ok::<_, EngineError>((record, rules, groups))
    };
    let (record, rules, groups) = match loaded.await {
        Ok(l) => l,
        Err(e) => return Page::error(signed.who(), e),
    };
    let count = rules.len();
    let status = if problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Page::ok(FiltersPage {
        who: signed.who(),
        csrf: signed.csrf.clone(),
        source_id: id,
        customer: record.customer.clone(),
        customer_id: record.customer_id,
        rules: rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| RuleRow {
                id: r.id,
                position: i + 1,
                last: i + 1 == count,
                rule: r.expression.to_string(),
                group: r.group,
            })
            .collect(),
        groups: groups.into_iter().map(|g| g.name).collect(),
        form_rule: typed.0,
        form_group: typed.1,
        problem_field: problem.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
        problem: problem.map(|p| p.1),
    })
    .with_status(status)
}

pub(crate) async fn filters(signed: Signed, Path(id): Path<i64>) -> Page {
    filters_page(&signed, id, (String::new(), String::new()), None).await
}

pub(crate) async fn add_filter(
    signed: Signed,
    Path(id): Path<i64>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let value = |key: &str| last(&form, key).unwrap_or_default();
    if let Err(page) = signed.check(&value("csrf")) {
        return page.into_response();
    }
    let (rule, group) = (value("rule"), value("group"));
    let create = value("create_group") == "true";
    match signed
        .access
        .add_filter_rule(id, group.trim(), &rule, create)
        .await
    {
        Ok(_) => Redirect::to(&format!("/sources/{id}/filters")).into_response(),
        Err(e) if e.kind() == ErrorKind::Invalid || e.kind() == ErrorKind::NotFound => {
            let text = error_text(&e);
            let field = if text.contains("group") && !text.contains("memberOf") {
                "group"
            } else {
                "rule"
            };
            filters_page(&signed, id, (rule, group), Some((field.into(), text)))
                .await
                .into_response()
        }
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

/// "Move up" / "Move down": the rule takes the position the form names (1-based).
pub(crate) async fn move_filter(
    signed: Signed,
    Path((id, rule)): Path<(i64, i64)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let value = |key: &str| last(&form, key).unwrap_or_default();
    if let Err(page) = signed.check(&value("csrf")) {
        return page.into_response();
    }
    let Ok(position) = value("position").trim().parse::<usize>() else {
        return filters_page(
            &signed,
            id,
            (String::new(), String::new()),
            Some(("rule".into(), "the new position is not a number".into())),
        )
        .await
        .into_response();
    };
    match signed.access.move_filter_rule(id, rule, position).await {
        Ok(_) => Redirect::to(&format!("/sources/{id}/filters#rule-{rule}")).into_response(),
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

pub(crate) async fn remove_filter(
    signed: Signed,
    Path((id, rule)): Path<(i64, i64)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let csrf = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if let Err(page) = signed.check(&csrf) {
        return page.into_response();
    }
    match signed.access.remove_filter_rule(id, rule).await {
        Ok(()) => Redirect::to(&format!("/sources/{id}/filters")).into_response(),
        Err(e) => Page::error(signed.who(), e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::STEPS;

    #[test]
    fn the_wizard_asks_for_every_option_once() {
        let asked: Vec<&str> = STEPS
            .iter()
            .flat_map(|s| s.fields.iter().map(|f| f.key))
            .collect();
        for key in usersync_core::SourceOptions::KEYS {
            let times = asked.iter().filter(|k| *k == key).count();
            assert_eq!(times, 1, "option {key} is asked {times} times");
        }
        assert_eq!(asked.len(), usersync_core::SourceOptions::KEYS.len());
    }
}
