//! Human output: tables (see `table.rs`) and summaries; JSON output is the structs themselves.
//! Everything for stdout goes through [`outln!`], so a closed pipe (`usersync users list |
//! head`) ends the command quietly, as with every Unix tool.

use std::io::Write;

use serde::Serialize;
use usersync_core::plan::FieldValue;
use usersync_core::{DirectoryUser, Plan, Skip};
use usersync_engine::{CheckStatus, ConnectionReport, RunOutcome, SourceRemovalOutcome};
use usersync_store::{Customer, Domain, RunRecord, RunStats, RunStatus, SourceRecord};

use crate::table::{Mode, Table};

/// `println!` for stdout that ends the process quietly when the reader went away.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::write_line(format_args!($($arg)*)) };
}

/// Writes one line to stdout. A closed pipe ends the command at once, quietly, with the
/// status a Unix tool killed by SIGPIPE has (141): `| head` is fine, and a script that asks
/// (`set -o pipefail`) still learns the output was cut. Any other write error ends it
/// with a message.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        let _ = writeln!(std::io::stderr(), "error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Rows of one kind shown in a human report before "... and N more".
const SHOWN: usize = 50;

/// A hint for people: on stdout for a terminal, on stderr when stdout is a pipe (so the
/// pipe holds rows only).
fn hint(text: &str) {
    if Mode::of_stdout() == Mode::Plain {
        eprintln!("{text}");
    } else {
        outln!("{text}");
    }
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn more(total: usize) {
    if total > SHOWN {
        hint(&format!(
            "  ... and {} more (use --json to see all)",
            total - SHOWN
        ));
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// An RFC 3339 time as people read it: to the second, UTC.
pub fn time(rfc3339: &str) -> String {
    match rfc3339.get(..19) {
        Some(t) if rfc3339.len() > 19 => t.replace('T', " "),
        _ => rfc3339.replace('T', " "),
    }
}

pub fn customers_table(customers: &[Customer]) {
    if customers.is_empty() {
        hint("No customers yet. Add one with `usersync customer add NAME`.");
        return;
    }
    let mut t = Table::new()
        .keep("id")
        .shorten("name")
        .drop("retention", 2)
        .drop("created", 1);
    for c in customers {
        t.row(vec![
            c.id.to_string(),
            c.name.clone(),
            format!("{}d", c.retention_days),
            time(&c.created_at),
        ]);
    }
    t.print();
}

pub fn accounts_table(accounts: &[usersync_store::Account]) {
    if accounts.is_empty() {
        hint("No console accounts yet. Make the first with `usersync admin create EMAIL`.");
        return;
    }
    let mut t = Table::new()
        .keep("id")
        .shorten("email")
        .keep("role")
        .shorten("customer")
        .drop("created", 1);
    for a in accounts {
        t.row(vec![
            a.id.to_string(),
            a.email.clone(),
            format!("{}{}", a.role, if a.disabled { " (disabled)" } else { "" }),
            a.customer
                .clone()
                .unwrap_or_else(|| "every customer".into()),
            time(&a.created_at),
        ]);
    }
    t.print();
}

pub fn tokens_table(tokens: &[usersync_store::ApiToken]) {
    if tokens.is_empty() {
        hint("No API tokens yet. Make one with `usersync token create --role ROLE`.");
        return;
    }
    let mut t = Table::new()
        .keep("id")
        .shorten("name")
        .keep("role")
        .shorten("customer")
        .keep("last used")
        .drop("created", 1);
    for k in tokens {
        t.row(vec![
            k.id.to_string(),
            k.name.clone(),
            match &k.revoked_at {
                Some(_) => format!("{} (revoked)", k.role),
                None => k.role.to_string(),
            },
            k.customer
                .clone()
                .unwrap_or_else(|| "every customer".into()),
            k.last_used_at
                .as_deref()
                .map(time)
                .unwrap_or_else(|| "never".into()),
            time(&k.created_at),
        ]);
    }
    t.print();
}

pub fn domains_table(domains: &[Domain]) {
    if domains.is_empty() {
        hint("No domains yet. Add one with `usersync domain add DOMAIN --customer NAME`.");
        return;
    }
    let mut t = Table::new()
        .keep("domain")
        .shorten("customer")
        .keep("added")
        .keep("reject unlisted")
        .keep("protect listed only")
        .drop("since", 1);
    for d in domains {
        let origin = match (d.origin, d.source_id) {
            (usersync_store::DomainOrigin::Source, Some(s)) => format!("source #{s}"),
            (usersync_store::DomainOrigin::Source, None) => "imported".to_string(),
            _ => "by hand".to_string(),
        };
        t.row(vec![
            d.name.to_string(),
            d.customer.clone(),
            origin,
            yes_no(d.reject_unlisted).into(),
            yes_no(d.protect_listed_only).into(),
            time(&d.created_at),
        ]);
    }
    t.print();
}

pub fn sources_table(sources: &[SourceRecord]) {
    if sources.is_empty() {
        hint(
            "No sources yet. Add one with `usersync source add office365 --customer NAME --tenant TENANT_ID`.",
        );
        return;
    }
    let mut t = Table::new()
        .keep("id")
        .shorten("customer")
        .keep("kind")
        .keep("tenant")
        .keep("status")
        .drop("graph", 1);
    for s in sources {
        let graph = s
            .settings
            .get("graph_url")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let status = source_status(s);
        t.row(vec![
            s.id.to_string(),
            s.customer.clone(),
            s.kind.to_string(),
            s.tenant_id.clone(),
            status,
            graph.to_string(),
        ]);
    }
    t.print();
}

/// A source's state in a few words: removed, needs attention, removals held, no secret,
/// connected.
fn source_status(s: &SourceRecord) -> String {
    let h = &s.health;
    match &s.removed_at {
        Some(when) => format!("removed {}", time(when)),
        None if h.attention.is_some() => "needs attention".to_string(),
        None if h.hold_run_id.is_some() => {
            format!("removals held (run {})", h.hold_run_id.unwrap_or_default())
        }
        None if !s.has_secret => "no secret".to_string(),
        None => "connected".to_string(),
    }
}

pub fn source_details(s: &SourceRecord) {
    outln!("Source #{} ({}) of '{}'", s.id, s.kind, s.customer);
    outln!("  tenant:        {}", s.tenant_id);
    if let Some(when) = &s.removed_at {
        outln!("  removed:       {}", time(when));
    }
    let h = &s.health;
    outln!("  status:        {}", source_status(s));
    if let Some(attention) = &h.attention {
        outln!(
            "  attention:     since {}: {attention}",
            h.attention_since.as_deref().map(time).unwrap_or_default()
        );
    }
    if let Some(held) = h.hold_run_id {
        outln!(
            "  held:          removals held since run {held}; see `usersync runs show {held}`, apply with `usersync runs confirm RUN_ID`"
        );
    }
    if h.failures > 0 {
        outln!(
            "  failures:      {} in a row; last: {}",
            h.failures,
            h.last_error.as_deref().unwrap_or("-")
        );
    }
    outln!(
        "  next sync:     {}",
        h.next_run_at
            .as_deref()
            .map(time)
            .unwrap_or_else(|| "by hand (auto_sync=false)".into())
    );
    if let Some(when) = &h.last_success_at {
        outln!("  last success:  {}", time(when));
    }
    if let Some(settings) = s.settings.as_object() {
        for (key, value) in settings.iter().filter(|(k, _)| *k != "options") {
            outln!("  {:<14} {}", format!("{key}:"), plain(value));
        }
    }
    let options: usersync_core::SourceOptions = s
        .settings
        .get("options")
        .and_then(|o| serde_json::from_value(o.clone()).ok())
        .unwrap_or_default();
    outln!(
        "  options (change with `usersync source set {} KEY=VALUE`):",
        s.id
    );
    for (key, value) in options.entries() {
        outln!("    {key:<22} {value}");
    }
    outln!(
        "  client secret: {}",
        if s.has_secret {
            "stored (encrypted)".to_string()
        } else {
            format!("none (set it with `usersync source set-secret {}`)", s.id)
        }
    );
    outln!("  created:       {}", time(&s.created_at));
}

fn plain(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

pub fn groups_table(groups: &[usersync_store::Group]) {
    let mut t = Table::new()
        .keep("group")
        .drop("from", 2)
        .keep("members")
        .shorten("first members");
    for g in groups {
        let from = match (&g.tenant_group_id, g.source_id) {
            (Some(_), Some(s)) => format!("tenant group (source #{s})"),
            _ => "console".to_string(),
        };
        let first: Vec<&str> = g.members.iter().take(3).map(String::as_str).collect();
        let more = if g.members.len() > 3 { ", ..." } else { "" };
        t.row(vec![
            g.name.clone(),
            from,
            g.members.len().to_string(),
            format!("{}{more}", first.join(", ")),
        ]);
    }
    t.print();
}

pub fn rules_table(rules: &[usersync_core::FilterRule]) {
    if rules.is_empty() {
        hint(
            "No filter rules: every user goes to Main. Add one with `usersync filter add SOURCE_ID --group NAME 'RULE'`.",
        );
        return;
    }
    let mut t = Table::new()
        .keep("#")
        .keep("rule id")
        .keep("group")
        .shorten("rule");
    for (i, r) in rules.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string(),
            r.id.to_string(),
            r.group.clone(),
            r.expression.to_string(),
        ]);
    }
    t.print();
}

pub fn users_table(users: &[DirectoryUser]) {
    if users.is_empty() {
        hint("No users.");
        return;
    }
    let mut t = Table::new()
        .keep("address")
        .shorten("name")
        .keep("type")
        .keep("billable")
        .drop("aliases", 2)
        .drop("group", 4)
        .drop("status", 3)
        .drop("source", 1);
    for u in users {
        t.row(vec![
            u.address.to_string(),
            u.display_name.clone(),
            u.mailbox_type.to_string(),
            yes_no(u.billable).into(),
            u.aliases
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(","),
            u.group.clone(),
            u.status.to_string(),
            u.source_id.map_or("by hand".into(), |s| format!("#{s}")),
        ]);
    }
    t.print();
    let billable = users.iter().filter(|u| u.billable).count();
    hint(&format!("{} users, {} billable.", users.len(), billable));
}

fn value_text(v: &FieldValue) -> String {
    match v {
        FieldValue::Null => "-".into(),
        FieldValue::Bool(b) => yes_no(*b).into(),
        FieldValue::Int(i) => i.to_string(),
        FieldValue::Text(s) => s.clone(),
        FieldValue::List(l) if l.is_empty() => "(none)".into(),
        FieldValue::List(l) => l.join(", "),
    }
}

pub fn plan_report(plan: &Plan, run_id: i64, stats: &RunStats) {
    outln!(
        "Preview (run {run_id}): {} to add, {} to update, {} to remove, {} skipped. Nothing was changed.",
        plan.add.len(),
        plan.update.len(),
        plan.remove.len(),
        plan.skip.len()
    );
    plan_tables(plan);
    read_mode(stats);
    notes(stats);
}

/// A section of a plan: on a terminal a title and a table; into a pipe its rows, each
/// starting with the section's name (`add`, `update`, ...), so one stream can be grepped.
fn section(title: &str, name: &'static str, table: Table) {
    if table.is_empty() {
        return;
    }
    match Mode::of_stdout() {
        Mode::Plain => {
            for line in table.render(Mode::Plain) {
                outln!("{name}\t{line}");
            }
        }
        terminal => {
            outln!();
            outln!("{title}");
            for line in table.render(terminal) {
                outln!("{line}");
            }
        }
    }
}

fn plan_tables(plan: &Plan) {
    let mut t = Table::new()
        .keep("address")
        .shorten("name")
        .keep("type")
        .keep("billable")
        .drop("aliases", 2)
        .keep("group")
        .drop("placed by", 1);
    for u in plan.add.iter().take(SHOWN) {
        t.row(vec![
            u.address.to_string(),
            u.display_name.clone(),
            u.mailbox_type.to_string(),
            yes_no(u.billable).into(),
            u.aliases.len().to_string(),
            u.group.clone(),
            u.placed_by.clone().unwrap_or_else(|| "default".into()),
        ]);
    }
    section("Add:", "add", t);
    more(plan.add.len());

    let mut t = Table::new()
        .keep("address")
        .keep("field")
        .shorten("before")
        .shorten("after");
    for u in plan.update.iter().take(SHOWN) {
        let label = if u.linked {
            " (linked)"
        } else if u.restored {
            " (restored)"
        } else {
            ""
        };
        // Every row names its address: a row must make sense alone (grep, sort).
        for (field, change) in &u.changes {
            t.row(vec![
                format!("{}{label}", u.address),
                field.clone(),
                value_text(&change.0),
                value_text(&change.1),
            ]);
        }
    }
    section("Update:", "update", t);
    more(plan.update.len());

    let mut t = Table::new().keep("address").shorten("name").keep("type");
    for u in plan.remove.iter().take(SHOWN) {
        t.row(vec![
            u.address.to_string(),
            u.display_name.clone(),
            u.mailbox_type.to_string(),
        ]);
    }
    section("Remove (kept as removed, restorable):", "remove", t);
    more(plan.remove.len());

    if !plan.import_domains.is_empty() {
        let names: Vec<String> = plan.import_domains.iter().map(|d| d.to_string()).collect();
        outln!();
        outln!("Domains to import: {}", names.join(", "));
    }
    if let Some(groups) = &plan.groups {
        let mut t = Table::new()
            .keep("group")
            .shorten("tenant group")
            .keep("members");
        for g in groups.iter().take(SHOWN) {
            t.row(vec![
                g.name.clone(),
                g.tenant_group_name.clone(),
                g.members.len().to_string(),
            ]);
        }
        section("Console groups from tenant groups:", "group", t);
        more(groups.len());
    }
    section("Skip:", "skip", skips_table(&plan.skip));
    more(plan.skip.len());
    section(
        "Synced with a warning:",
        "warning",
        skips_table(&plan.warnings),
    );
    more(plan.warnings.len());
}

fn skips_table(items: &[Skip]) -> Table {
    let mut t = Table::new()
        .shorten("name")
        .drop("code", 1)
        .shorten("reason");
    for s in items.iter().take(SHOWN) {
        t.row(vec![s.name.clone(), s.code.clone(), s.reason.clone()]);
    }
    t
}

fn notes(stats: &RunStats) {
    for note in &stats.notes {
        outln!("Note: {note}");
    }
}

/// How the run read its source: only what changed, or the whole tenant and why.
fn read_mode(stats: &RunStats) {
    match (stats.read_mode.as_deref(), stats.read_detail.as_deref()) {
        (Some("delta"), Some(detail)) => outln!("Read what changed since the last sync: {detail}."),
        (Some("full"), Some(detail)) => outln!("Read the whole tenant: {detail}."),
        _ => {}
    }
    if let Some(planned) = stats.planned_objects {
        outln!(
            "Planned the {planned} objects that changed, share an address with them or had a conflict \
             (the skips and warnings are theirs; the last whole plan lists the others)."
        );
    }
    if let Some(written) = stats.written_while_reading {
        outln!("Planned and wrote {written} adds while the tenant was still being read.");
    }
}

/// The command that mends a failed run, when the engine knows one.
pub fn remedy_hint(outcome: &RunOutcome, source_id: Option<i64>) {
    let id = source_id.map_or("SOURCE_ID".to_string(), |i| i.to_string());
    let hint = match outcome.remedy {
        Some(usersync_engine::Remedy::SetSecret) => {
            format!("Set the source's client secret with `usersync source set-secret {id}`.")
        }
        Some(usersync_engine::Remedy::GrantConsent) => format!(
            "Grant the app admin consent (and the permissions it lacks) in the tenant, then check with `usersync source test {id}`."
        ),
        Some(usersync_engine::Remedy::AddDomain) => {
            "Add the customer's mail domains with `usersync domain add DOMAIN --customer NAME`."
                .to_string()
        }
        None => return,
    };
    eprintln!("{hint}");
}

pub fn sync_report(outcome: &RunOutcome, source_id: Option<i64>) {
    match outcome.status {
        RunStatus::Failed => {
            eprintln!(
                "Sync failed (run {}); nothing was changed: {}",
                outcome.run_id,
                outcome.error.as_deref().unwrap_or("unknown error")
            );
            remedy_hint(outcome, source_id);
        }
        RunStatus::Queued => {
            eprintln!(
                "Not synced (run {}): {}. A worker (`usersync serve`) runs it then, or run this command again.",
                outcome.run_id,
                outcome
                    .error
                    .as_deref()
                    .unwrap_or("the tenant is throttled")
            );
        }
        _ => {
            let p = &outcome.plan;
            outln!(
                "Synced (run {}): {} added, {} updated ({} linked), {} removed, {} skipped, in {:.1} s with {} requests.",
                outcome.run_id,
                p.add.len(),
                p.update.len(),
                p.linked(),
                p.remove.len(),
                p.skip.len(),
                outcome.stats.duration_ms as f64 / 1000.0,
                outcome.stats.requests
            );
            read_mode(&outcome.stats);
            notes(&outcome.stats);
            if !p.warnings.is_empty() {
                outln!(
                    "{} synced with a warning (an alias or a new address left out).",
                    p.warnings.len()
                );
            }
            if !p.skip.is_empty() || !p.warnings.is_empty() {
                outln!(
                    "See why each was skipped: `usersync runs show {}`.",
                    outcome.run_id
                );
            }
            if outcome.status == RunStatus::Held {
                outln!(
                    "Held {} removal(s): {}. Check them with `usersync runs show {}`, then apply them with `usersync runs confirm {}`.",
                    p.held.len(),
                    outcome.error.as_deref().unwrap_or("deletion safeguard"),
                    outcome.run_id,
                    outcome.run_id
                );
            }
        }
    }
}

/// The command that shows or fixes what an error is about, for a person at a terminal
/// (the engine's messages name no commands: each surface has its own way to say it).
pub fn error_hint(error: &usersync_engine::EngineError) -> Option<String> {
    use usersync_engine::EngineError;
    use usersync_store::StoreError;
    let text = match error {
        EngineError::Store(StoreError::NotFound { what, .. }) => match *what {
            "customer" => {
                "`usersync customer list` shows the customers; `usersync customer add NAME` adds one"
            }
            "domain" => "`usersync domain list --customer NAME` shows a customer's domains",
            "source" => "`usersync source list` shows the sources",
            "run" => "`usersync runs list` shows the runs",
            "filter rule" => "`usersync filter list SOURCE_ID` shows the rules of a source",
            "group" => {
                "`usersync groups list --customer NAME` shows the groups; add --create-group to create it with the rule"
            }
            "user" => "`usersync users list --customer NAME --include-removed` shows the users",
            _ => return None,
        },
        EngineError::Store(StoreError::KeyLost { .. }) => {
            "`usersync key reset` forgets the stored secrets; then `usersync source set-secret SOURCE_ID` for each source"
        }
        EngineError::Store(StoreError::SecretUnreadable { source_id, .. }) => {
            return Some(format!("`usersync source set-secret {source_id}`"));
        }
        EngineError::Config { field, .. } if field == "source" => {
            "`usersync source list` shows the sources in use"
        }
        EngineError::Config { field, .. } if field == "group_map" => {
            "`usersync groups add NAME --customer CUSTOMER` adds a console group"
        }
        EngineError::Store(StoreError::Conflict(text)) if text.contains("can be restored") => {
            "`usersync users restore ADDRESS --customer NAME` brings a removed user back"
        }
        _ => return None,
    };
    Some(text.to_string())
}

pub fn audit_table(entries: &[usersync_store::AuditEntry]) {
    if entries.is_empty() {
        hint("No changes recorded (for this customer, since then).");
        return;
    }
    let mut t = Table::new()
        .keep("at")
        .keep("by")
        .drop("run", 3)
        .drop("customer", 2)
        .keep("action")
        .keep("object")
        .shorten("change");
    let short = |v: &Option<serde_json::Value>| match v {
        None => String::new(),
        Some(v) => v.to_string(),
    };
    for e in entries {
        let change = match (&e.before, &e.after) {
            (Some(_), Some(_)) => format!("{} -> {}", short(&e.before), short(&e.after)),
            (None, Some(_)) => short(&e.after),
            (Some(_), None) => format!("was {}", short(&e.before)),
            (None, None) => String::new(),
        };
        t.row(vec![
            time(&e.at),
            e.actor.clone(),
            e.run_id.map(|r| r.to_string()).unwrap_or_default(),
            e.customer.clone().unwrap_or_default(),
            e.action.clone(),
            e.object.clone(),
            change,
        ]);
    }
    t.print();
}

pub fn runs_table(runs: &[RunRecord]) {
    if runs.is_empty() {
        hint("No runs yet. Try `usersync preview SOURCE_ID`.");
        return;
    }
    let mut t = Table::new()
        .keep("run")
        .keep("source")
        .drop("customer", 2)
        .keep("kind")
        .keep("status")
        .keep("started")
        .keep("changes")
        .terminal_only()
        .keep("added")
        .plain_only()
        .keep("updated")
        .plain_only()
        .keep("removed")
        .plain_only()
        .keep("skipped")
        .shorten("error");
    for r in runs {
        t.row(vec![
            r.id.to_string(),
            format!("#{}", r.source_id),
            r.customer.clone(),
            r.kind.as_str().into(),
            r.status.as_str().into(),
            time(&r.started_at),
            if r.held > 0 {
                format!(
                    "+{} ~{} -{} ({} held)",
                    r.added, r.updated, r.removed, r.held
                )
            } else {
                format!("+{} ~{} -{}", r.added, r.updated, r.removed)
            },
            r.added.to_string(),
            r.updated.to_string(),
            r.removed.to_string(),
            r.skipped.to_string(),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    t.print();
}

pub fn run_details(r: &RunRecord) {
    outln!(
        "Run {} of source #{} ('{}'): {} {}",
        r.id,
        r.source_id,
        r.customer,
        r.kind.as_str(),
        r.status.as_str()
    );
    outln!("  started:  {}", time(&r.started_at));
    outln!(
        "  finished: {}",
        r.finished_at
            .as_deref()
            .map(time)
            .unwrap_or_else(|| "-".into())
    );
    if let Some(owner) = &r.owner {
        outln!("  process:  pid {} on {}", owner.pid, owner.host);
    }
    if let Some(by) = &r.requested_by {
        outln!("  by:       {by} ({}, attempt {})", r.reason, r.attempts);
    }
    if let Some(held) = r.confirms {
        outln!("  confirms: the removals held by run {held}");
    }
    if let Some(s) = &r.stats {
        outln!(
            "  read:     {} users, {} groups, {} requests ({} throttled)",
            s.read_users,
            s.read_groups,
            s.requests,
            s.throttled,
        );
        if let (Some(mode), Some(detail)) = (&s.read_mode, &s.read_detail) {
            outln!("  mode:     {mode} ({detail})");
        }
        match (s.planned_objects, s.mirror_read) {
            (Some(planned), read) => outln!(
                "  planned:  {planned} objects (what changed, and those sharing its addresses){}",
                read.map(|r| format!("; {r} read from the mirror"))
                    .unwrap_or_default()
            ),
            (None, Some(read)) => outln!("  planned:  every object; {read} read from the mirror"),
            (None, None) => {}
        }
        outln!(
            "  time:     {:.1} s (read {:.1} s, plan {:.1} s, apply {:.1} s)",
            s.duration_ms as f64 / 1000.0,
            s.read_ms as f64 / 1000.0,
            s.plan_ms as f64 / 1000.0,
            s.apply_ms as f64 / 1000.0
        );
        notes(s);
    }
    outln!(
        "  counts:   {} added, {} updated ({} linked), {} removed, {} skipped",
        r.added,
        r.updated,
        r.linked,
        r.removed,
        r.skipped
    );
    if let Some(e) = &r.error {
        let label = if r.status == RunStatus::Held {
            "held:    "
        } else {
            "error:   "
        };
        outln!("  {label} {e}");
    }
    if r.status == RunStatus::Held {
        outln!(
            "  {} removal(s) held; apply them with `usersync runs confirm {}`, or change the threshold (`usersync source set {} deletion_threshold=PERCENT,MIN`).",
            r.held,
            r.id,
            r.source_id
        );
    }
    if let Some(plan) = &r.plan {
        plan_tables(plan);
    }
}

/// A connection test, check by check.
pub fn connection_report(source_id: i64, report: &ConnectionReport) {
    let mut t = Table::new()
        .keep("permission")
        .keep("status")
        .shorten("needed for")
        .shorten("detail");
    for c in &report.checks {
        let status = match (c.status, c.required) {
            (CheckStatus::Missing, false) => "missing (optional)".to_string(),
            (s, _) => s.as_str().to_string(),
        };
        t.row(vec![
            c.permission.clone(),
            status,
            c.needed_for.clone(),
            c.detail.clone().unwrap_or_default(),
        ]);
    }
    t.print();
    let missing: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Missing)
        .map(|c| c.permission.as_str())
        .collect();
    if report.is_ready() {
        hint(&format!(
            "Source #{source_id} can sync{}.",
            if missing.is_empty() {
                String::new()
            } else {
                format!(" ({} not granted: see above)", missing.join(", "))
            }
        ));
    } else {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.required && c.status != CheckStatus::Granted)
            .map(|c| c.permission.as_str())
            .collect();
        hint(&format!(
            "Source #{source_id} cannot sync yet: {} not working. Grant the missing application \
             permissions to the app and admin consent in the tenant; a wrong or expired secret is \
             replaced with `usersync source set-secret {source_id}`.",
            failed.join(", ")
        ));
    }
}

pub fn removal_report(outcome: &SourceRemovalOutcome) {
    match (outcome.status, outcome.run_id) {
        (RunStatus::Failed, Some(run)) => eprintln!(
            "Source #{} was not removed (run {run}); nothing was changed: {}.\n\
             To remove it and its users, add --confirm-removals; to keep its users, --keep-users.",
            outcome.source_id,
            outcome.error.as_deref().unwrap_or("unknown error")
        ),
        (_, None) => outln!(
            "Removed source #{}; its {} users stay and no sync changes them any more.",
            outcome.source_id,
            outcome.unmanaged
        ),
        (_, Some(run)) => outln!(
            "Removed source #{} (run {run}): {} users removed (kept as removed, restorable).",
            outcome.source_id,
            outcome.removed
        ),
    }
}
