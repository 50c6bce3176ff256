//! Human output: readable tables and summaries. JSON output is the structs themselves.

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;
use usersync_core::plan::FieldValue;
use usersync_core::{DirectoryUser, Plan};
use usersync_engine::RunOutcome;
use usersync_store::{Customer, Domain, RunRecord, RunStats, RunStatus, SourceRecord};

/// Rows of one kind shown in a human report before "... and N more".
const SHOWN: usize = 50;

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_HORIZONTAL_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

fn more(total: usize) {
    if total > SHOWN {
        println!("  ... and {} more (use --json to see all)", total - SHOWN);
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub fn customers_table(customers: &[Customer]) {
    if customers.is_empty() {
        println!("No customers yet. Add one with `usersync customer add NAME`.");
        return;
    }
    let mut t = table(&["id", "name", "created"]);
    for c in customers {
        t.add_row(vec![c.id.to_string(), c.name.clone(), c.created_at.clone()]);
    }
    println!("{t}");
}

pub fn domains_table(domains: &[Domain]) {
    if domains.is_empty() {
        println!("No domains yet. Add one with `usersync domain add DOMAIN --customer NAME`.");
        return;
    }
    let mut t = table(&[
        "domain",
        "customer",
        "added",
        "reject unlisted",
        "protect listed only",
        "since",
    ]);
    for d in domains {
        let origin = match (d.origin, d.source_id) {
            (usersync_store::DomainOrigin::Source, Some(s)) => format!("imported by source #{s}"),
            (usersync_store::DomainOrigin::Source, None) => "imported".to_string(),
            _ => "by hand".to_string(),
        };
        t.add_row(vec![
            d.name.to_string(),
            d.customer.clone(),
            origin,
            yes_no(d.reject_unlisted).into(),
            yes_no(d.protect_listed_only).into(),
            d.created_at.clone(),
        ]);
    }
    println!("{t}");
}

pub fn sources_table(sources: &[SourceRecord]) {
    if sources.is_empty() {
        println!(
            "No sources yet. Add one with `usersync source add office365 --customer NAME --tenant TENANT_ID`."
        );
        return;
    }
    let mut t = table(&["id", "customer", "kind", "tenant", "graph"]);
    for s in sources {
        let graph = s
            .settings
            .get("graph_url")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        t.add_row(vec![
            s.id.to_string(),
            s.customer.clone(),
            s.kind.to_string(),
            s.tenant_id.clone(),
            graph.to_string(),
        ]);
    }
    println!("{t}");
}

pub fn source_details(s: &SourceRecord) {
    println!("Source #{} ({}) of '{}'", s.id, s.kind, s.customer);
    println!("  tenant:        {}", s.tenant_id);
    if let Some(settings) = s.settings.as_object() {
        for (key, value) in settings.iter().filter(|(k, _)| *k != "options") {
            println!("  {:<14} {}", format!("{key}:"), plain(value));
        }
    }
    let options: usersync_core::SourceOptions = s
        .settings
        .get("options")
        .and_then(|o| serde_json::from_value(o.clone()).ok())
        .unwrap_or_default();
    println!(
        "  options (change with `usersync source set {} KEY=VALUE`):",
        s.id
    );
    for (key, value) in options.entries() {
        println!("    {key:<22} {value}");
    }
    println!(
        "  client secret: {}",
        if s.has_secret {
            "stored (encrypted)"
        } else {
            "none"
        }
    );
    println!("  created:       {}", s.created_at);
}

fn plain(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

pub fn groups_table(groups: &[usersync_store::Group]) {
    let mut t = table(&["group", "from", "members", "first members"]);
    for g in groups {
        let from = match (&g.tenant_group_id, g.source_id) {
            (Some(_), Some(s)) => format!("tenant group (source #{s})"),
            _ => "console".to_string(),
        };
        let first: Vec<&str> = g.members.iter().take(3).map(String::as_str).collect();
        let more = if g.members.len() > 3 { ", ..." } else { "" };
        t.add_row(vec![
            g.name.clone(),
            from,
            g.members.len().to_string(),
            format!("{}{more}", first.join(", ")),
        ]);
    }
    println!("{t}");
}

pub fn rules_table(rules: &[usersync_core::FilterRule]) {
    if rules.is_empty() {
        println!(
            "No filter rules: every user goes to Main. Add one with `usersync filter add SOURCE_ID --group NAME 'RULE'`."
        );
        return;
    }
    let mut t = table(&["#", "rule id", "group", "rule"]);
    for (i, r) in rules.iter().enumerate() {
        t.add_row(vec![
            (i + 1).to_string(),
            r.id.to_string(),
            r.group.clone(),
            r.expression.to_string(),
        ]);
    }
    println!("{t}");
}

pub fn users_table(users: &[DirectoryUser]) {
    if users.is_empty() {
        println!("No users.");
        return;
    }
    let mut t = table(&[
        "address", "name", "type", "billable", "aliases", "group", "status", "source",
    ]);
    for u in users {
        t.add_row(vec![
            u.address.to_string(),
            u.display_name.clone(),
            u.mailbox_type.to_string(),
            yes_no(u.billable).into(),
            u.aliases
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            u.group.clone(),
            u.status.to_string(),
            u.source_id.map_or("by hand".into(), |s| format!("#{s}")),
        ]);
    }
    println!("{t}");
    let billable = users.iter().filter(|u| u.billable).count();
    println!("{} users, {} billable.", users.len(), billable);
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
    println!(
        "Preview (run {run_id}): {} to add, {} to update, {} to remove, {} skipped. Nothing was changed.",
        plan.add.len(),
        plan.update.len(),
        plan.remove.len(),
        plan.skip.len()
    );
    plan_tables(plan);
    notes(stats);
}

fn plan_tables(plan: &Plan) {
    if !plan.add.is_empty() {
        println!("\nAdd:");
        let mut t = table(&[
            "address",
            "name",
            "type",
            "billable",
            "aliases",
            "group",
            "placed by",
        ]);
        for u in plan.add.iter().take(SHOWN) {
            t.add_row(vec![
                u.address.to_string(),
                u.display_name.clone(),
                u.mailbox_type.to_string(),
                yes_no(u.billable).into(),
                u.aliases.len().to_string(),
                u.group.clone(),
                u.placed_by.clone().unwrap_or_else(|| "default".into()),
            ]);
        }
        println!("{t}");
        more(plan.add.len());
    }
    if !plan.update.is_empty() {
        println!("\nUpdate:");
        let mut t = table(&["address", "field", "before", "after"]);
        for u in plan.update.iter().take(SHOWN) {
            let mut first = true;
            let label = if u.linked {
                " (linked)"
            } else if u.restored {
                " (restored)"
            } else {
                ""
            };
            for (field, change) in &u.changes {
                let address = if first {
                    format!("{}{label}", u.address)
                } else {
                    String::new()
                };
                first = false;
                t.add_row(vec![
                    address,
                    field.clone(),
                    value_text(&change.0),
                    value_text(&change.1),
                ]);
            }
        }
        println!("{t}");
        more(plan.update.len());
    }
    if !plan.remove.is_empty() {
        println!("\nRemove (kept as removed, restorable):");
        let mut t = table(&["address", "name", "type"]);
        for u in plan.remove.iter().take(SHOWN) {
            t.add_row(vec![
                u.address.to_string(),
                u.display_name.clone(),
                u.mailbox_type.to_string(),
            ]);
        }
        println!("{t}");
        more(plan.remove.len());
    }
    if !plan.import_domains.is_empty() {
        let names: Vec<String> = plan.import_domains.iter().map(|d| d.to_string()).collect();
        println!("\nDomains to import: {}", names.join(", "));
    }
    if let Some(groups) = &plan.groups {
        println!("\nConsole groups from tenant groups:");
        let mut t = table(&["group", "tenant group", "members"]);
        for g in groups.iter().take(SHOWN) {
            t.add_row(vec![
                g.name.clone(),
                g.tenant_group_name.clone(),
                g.members.len().to_string(),
            ]);
        }
        println!("{t}");
        more(groups.len());
    }
    if !plan.skip.is_empty() {
        println!("\nSkip:");
        let mut t = table(&["name", "reason"]);
        for s in plan.skip.iter().take(SHOWN) {
            t.add_row(vec![s.name.clone(), s.reason.clone()]);
        }
        println!("{t}");
        more(plan.skip.len());
    }
}

fn notes(stats: &RunStats) {
    for note in &stats.notes {
        println!("Note: {note}");
    }
}

pub fn sync_report(outcome: &RunOutcome) {
    match outcome.status {
        RunStatus::Failed => {
            eprintln!(
                "Sync failed (run {}); nothing was changed: {}",
                outcome.run_id,
                outcome.error.as_deref().unwrap_or("unknown error")
            );
        }
        _ => {
            let p = &outcome.plan;
            println!(
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
            notes(&outcome.stats);
            if !p.skip.is_empty() {
                println!(
                    "See why each was skipped: `usersync runs show {}`.",
                    outcome.run_id
                );
            }
        }
    }
}

pub fn runs_table(runs: &[RunRecord]) {
    if runs.is_empty() {
        println!("No runs yet. Try `usersync preview SOURCE_ID`.");
        return;
    }
    let mut t = table(&[
        "run", "source", "customer", "kind", "status", "started", "added", "updated", "removed",
        "skipped", "error",
    ]);
    for r in runs {
        t.add_row(vec![
            r.id.to_string(),
            format!("#{}", r.source_id),
            r.customer.clone(),
            r.kind.as_str().into(),
            r.status.as_str().into(),
            r.started_at.clone(),
            r.added.to_string(),
            r.updated.to_string(),
            r.removed.to_string(),
            r.skipped.to_string(),
            shorten(r.error.as_deref().unwrap_or_default(), 60),
        ]);
    }
    println!("{t}");
}

/// The start of a long text for a table cell; the whole text is one command away.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}... (runs show)")
}

pub fn run_details(r: &RunRecord) {
    println!(
        "Run {} of source #{} ('{}'): {} {}",
        r.id,
        r.source_id,
        r.customer,
        r.kind.as_str(),
        r.status.as_str()
    );
    println!("  started:  {}", r.started_at);
    println!("  finished: {}", r.finished_at.as_deref().unwrap_or("-"));
    if let Some(s) = &r.stats {
        println!(
            "  read:     {} users, {} groups, {} requests ({} throttled), {:.1} s",
            s.read_users,
            s.read_groups,
            s.requests,
            s.throttled,
            s.duration_ms as f64 / 1000.0
        );
        notes(s);
    }
    println!(
        "  counts:   {} added, {} updated ({} linked), {} removed, {} skipped",
        r.added, r.updated, r.linked, r.removed, r.skipped
    );
    if let Some(e) = &r.error {
        println!("  error:    {e}");
    }
    if let Some(plan) = &r.plan {
        plan_tables(plan);
    }
}
