//! Reading a tenant: whole, or only what changed since the mirror (delta rounds), then the
//! mailbox types not yet known, then the snapshot the core plans from and the mirror
//! write that goes with the plan.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::stream::{self, StreamExt};
use serde_json::{Map, Value};
use tracing::Instrument;
use usersync_core::{Interner, SourceDomain, SourceSnapshot, SourceUser};
use usersync_graph::{GROUP_PROPERTIES, GraphError, USER_PROPERTIES};
use usersync_store::{Mirror, Store};

use super::mirror::{
    CURSOR_VERSION, Cursor, Kept, Loaded, Member, Merged, MirrorGroup, MirrorUser, ParsedObjects,
    Tenant, UserRows,
};
use super::{Office365Source, dedup_by_id, source_group, source_user};
use crate::source::{Progress, ReadMode, SourceError, SourceRead};

/// Mirrored objects parsed at a time when a whole mirror is read (each part's text is let
/// go once it is parsed).
const LOAD_PART: usize = 50_000;

/// Users of the largest tenant whose first read writes its users' mirror objects as it
/// hands them over (see `stream_users`).
const EARLY_MIRROR_MAX: usize = 250_000;

/// Pages of users read ahead of the ones being taken in.
const PAGES_AHEAD: usize = 4;

/// Users per page of `/users` (the most Graph gives).
const USER_PAGE: usize = 999;

/// Mailbox-type lookups per round of `$batch` calls (100 batches of 20).
const PURPOSE_CHUNK: usize = 2000;

/// Mailbox-type lookups started while the users' pages arrive, in groups of this many (two
/// `$batch` requests of 20).
const EARLY_CHUNK: usize = 40;

/// What the lookups made during a whole read did.
#[derive(Debug, Default)]
struct Early {
    /// Mailboxes asked for (counted against the run's budget).
    asked: usize,
    /// MailboxSettings.Read is not granted: no more lookups this run.
    forbidden: bool,
    failed: usize,
    notes: Vec<String>,
    /// The users handed over go with their mirror objects (a first read: every user is
    /// new to a mirror that holds none).
    mirror: bool,
}

impl Early {
    /// Takes the answer of one group of lookups into the users.
    fn take(
        &mut self,
        outcome: Result<usersync_graph::BatchOutcome<Option<String>>, GraphError>,
        users: &mut HashMap<String, MirrorUser>,
        failure: &mut Option<GraphError>,
    ) {
        match outcome {
            Ok(outcome) => {
                let now = unix_now();
                if let (0, Some(e)) = (self.failed, outcome.errors.values().next()) {
                    self.notes.push(format!(
                        "the mailbox type of some users could not be read (for example: {e}); their type was guessed from licence and sign-in state, and is asked again next run"
                    ));
                }
                self.failed += outcome.errors.len();
                for (id, purpose) in outcome.results {
                    if let Some(u) = users.get_mut(&id) {
                        u.purpose = Some(purpose.unwrap_or_default());
                        u.purpose_at = Some(now);
                    }
                }
            }
            Err(e) if e.is_forbidden() => self.forbidden = true,
            Err(e) => {
                if failure.is_none() {
                    *failure = Some(e);
                }
            }
        }
    }
}

/// A task that is stopped when its handle goes.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The source refused a delta link (expired, or of another schema): read whole.
fn expired(error: &SourceError) -> bool {
    matches!(
        error.downcast_ref::<GraphError>(),
        Some(GraphError::DeltaExpired { .. })
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Why a run reads the whole tenant rather than what changed.
struct Whole {
    reason: String,
    /// A scheduled reconciliation: what changed is read first, and what the whole read
    /// finds beyond it is reported as a difference between the mirror and the tenant.
    reconcile: bool,
}

impl Office365Source {
    fn group_select(&self) -> Vec<&'static str> {
        let mut select: Vec<&str> = GROUP_PROPERTIES.to_vec();
        if self.needs.memberships {
            select.push("members");
        }
        select
    }

    fn uses_delta(&self) -> bool {
        self.needs.delta
    }

    /// What the users delta selects: the synced properties, and `manager` when managers
    /// are imported (it comes as `manager@delta`).
    fn user_select(&self) -> Vec<&'static str> {
        let mut select: Vec<&str> = USER_PROPERTIES.to_vec();
        if self.needs.managers {
            select.push("manager");
        }
        select
    }

    /// Whether this run reads the whole tenant, and why.
    fn whole_because(&self, loaded: Option<&Loaded>, untrusted: Option<&str>) -> Option<Whole> {
        let whole = |reason: String| {
            Some(Whole {
                reason,
                reconcile: false,
            })
        };
        if !self.needs.delta {
            return whole("delta reads are off for this source (delta=false)".into());
        }
        if let Some(why) = untrusted {
            return whole(format!("the mirror could not be trusted: {why}"));
        }
        let Some(loaded) = loaded else {
            return whole("the first read of this source".into());
        };
        let c = &loaded.cursor;
        if c.users_link.is_empty() || c.groups_link.is_empty() {
            return whole("the last run did not keep delta links".into());
        }
        if c.graph_url != self.graph_url || c.client_id != self.client_id {
            return whole("the source's endpoint or app changed since the mirror was read".into());
        }
        if self.needs.managers && !c.managers {
            return whole(
                "the source's options now need managers, which the mirror does not hold".into(),
            );
        }
        if self.needs.memberships && !c.memberships {
            return whole(
                "the source's options now need group memberships, which the mirror does not hold"
                    .into(),
            );
        }
        if loaded.full_age_secs >= self.needs.full_every_secs {
            return Some(Whole {
                reason: format!(
                    "the daily reconciliation (the last whole read was {} ago; full_sync_every)",
                    age(loaded.full_age_secs)
                ),
                reconcile: true,
            });
        }
        None
    }

    /// Reads the tenant, by delta over `mirror` when it can, else whole.
    pub(super) async fn read_tenant(
        &self,
        mirror: Option<Mirror>,
        partial: bool,
        handover: Option<crate::source::EarlyUsers>,
        progress: &dyn Progress,
    ) -> Result<SourceRead, SourceError> {
        progress.phase("reading domains");
        // A source's first read takes its delta links beside the domains: one round trip
        // less before the first page (a later read first decides whether it reads whole).
        let (domains, mut links) = if mirror.is_none() && self.uses_delta() {
            let (domains, links) = tokio::join!(self.client.list_domains(), self.delta_links());
            (domains?, Some(links?))
        } else {
            (self.client.list_domains().await?, None)
        };
        // The mirror's head alone: a delta run reads from it only the users it needs.
        let (mirror, from_store) = match (mirror, &self.store) {
            (Some(head), Some(store)) if head.objects.is_empty() => {
                if partial
                    && let Some(read) = self.read_partial(store, &head, &domains, progress).await?
                {
                    return Ok(read);
                }
                (Some(head), Some(store))
            }
            (mirror, _) => (mirror, None),
        };
        let mut mirror_read = mirror.as_ref().map(|m| m.objects.len());
        let mut notes = Vec::new();
        let parsing = std::time::Instant::now();
        let (mut loaded, mut untrusted) = match mirror.map(Loaded::from_store) {
            None => (None, None),
            Some(Ok(l)) => (Some(l), None),
            Some(Err(bad)) => (None, Some(bad)),
        };
        // The whole mirror, taken in as the store sends it: parsed a part at a time (on
        // other threads, while the next part arrives), so that its text is never all held
        // beside what it parses into.
        if let (Some(store), Some(l)) = (from_store, loaded.as_mut()) {
            let mut parts = store.mirror_stream(self.source_id).chunks(LOAD_PART);
            let mut objects = 0;
            let mut parsing: Option<tokio::task::JoinHandle<Result<ParsedObjects, String>>> = None;
            loop {
                let next = parts.next().await;
                if let Some(parsed) = parsing.take() {
                    // (A panic in serde_json is a bug: carried on.)
                    let parsed = match parsed.await {
                        Ok(parsed) => parsed,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => Err(e.to_string()),
                    };
                    match parsed {
                        Ok(parsed) => l.tenant.insert(parsed),
                        Err(bad) => {
                            untrusted = Some((l.generation, bad));
                            break;
                        }
                    }
                }
                let Some(part) = next else { break };
                let part = part.into_iter().collect::<Result<Vec<_>, _>>()?;
                objects += part.len();
                parsing = Some(tokio::task::spawn_blocking(move || ParsedObjects::of(part)));
            }
            mirror_read = Some(objects);
            if untrusted.is_some() {
                loaded = None;
            }
        }
        tracing::debug!(
            ms = parsing.elapsed().as_millis() as u64,
            objects = mirror_read,
            "mirror read and parsed"
        );
        let base = loaded
            .as_ref()
            .map(|l| l.generation)
            .or(untrusted.as_ref().map(|u| u.0));
        let whole = self.whole_because(loaded.as_ref(), untrusted.as_ref().map(|u| u.1.as_str()));
        let reconciling = whole.as_ref().is_some_and(|w| w.reconcile);
        let replace = untrusted.is_some();

        // Mailbox types a whole read asks for while its pages still arrive.
        let mut early = Early {
            mirror: loaded.is_none() && !replace,
            ..Early::default()
        };
        let (mut tenant, cursor, old, touched, mode) =
            match (whole, loaded) {
                (None, Some(mut loaded)) => {
                    match self
                        .read_changes(&mut loaded.tenant, &loaded.cursor, None, progress)
                        .await
                    {
                        Ok((cursor, mut merged, (users, groups))) => {
                            let touched = (users, groups, std::mem::take(&mut merged.members));
                            let changes = merged.describe();
                            (
                                loaded.tenant,
                                cursor,
                                None,
                                Some(touched),
                                ReadMode::Delta { changes },
                            )
                        }
                        Err(e) if expired(&e) => {
                            let reason = format!("the delta link was refused ({e})");
                            let (tenant, cursor) = self
                                .read_whole(
                                    Some(&loaded.tenant),
                                    &mut early,
                                    handover,
                                    links.take(),
                                    progress,
                                )
                                .await?;
                            (
                                tenant,
                                cursor,
                                Some(loaded.tenant),
                                None,
                                ReadMode::Full { reason },
                            )
                        }
                        Err(e) => return Err(e),
                    }
                }
                (whole, mut loaded) => {
                    let whole = whole.unwrap_or(Whole {
                        reason: "the first read of this source".into(),
                        reconcile: false,
                    });
                    // A reconciliation first takes what changed, so that what the whole read
                    // finds beyond it is a difference the delta rounds missed.
                    let mut compare = false;
                    if let (true, Some(l)) = (whole.reconcile, loaded.as_mut()) {
                        match self
                            .read_changes(&mut l.tenant, &l.cursor.clone(), None, progress)
                            .await
                        {
                            Ok(_) => compare = true,
                            Err(e) if expired(&e) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    let old = loaded.map(|l| l.tenant);
                    let (tenant, cursor) = self
                        .read_whole(old.as_ref(), &mut early, handover, links.take(), progress)
                        .await?;
                    if let (Some(old), true) = (&old, compare) {
                        notes.push(tenant.differences(old).unwrap_or_else(|| {
                            "reconciliation: the mirror matched the tenant".into()
                        }));
                    }
                    (
                        tenant,
                        cursor,
                        old,
                        None,
                        ReadMode::Full {
                            reason: whole.reason,
                        },
                    )
                }
            };
        let mut touched = touched;
        // A reconciliation also reads again the mailbox types read longest ago (a type
        // can change without the account changing, so without a delta saying so).
        let refresh = matches!(&mode, ReadMode::Full { .. }) && reconciling;
        notes.append(&mut early.notes);
        let typed = if early.forbidden {
            Vec::new()
        } else {
            let budget = self.needs.purpose_budget.saturating_sub(early.asked);
            self.purposes(&mut tenant, refresh, budget, 0, &mut notes, progress)
                .await?
        };
        let changed_after: HashSet<String> = match touched.as_mut() {
            Some((users, _, _)) => {
                users.extend(typed);
                HashSet::new()
            }
            None => typed.into_iter().collect(),
        };
        let mut cursor = cursor;
        cursor.users = Some(tenant.users.len() as u64);
        cursor.untyped = Some(tenant.untyped() as u64);
        let writing = std::time::Instant::now();
        // A whole read with no mirror to compare with writes every user: their objects are
        // made from the snapshot when written, not held here as text beside it.
        let every_user = touched.is_none() && old.is_none();
        let writes = match &touched {
            Some((users, groups, _)) => tenant.writes_touched(users, groups),
            None => tenant.writes_full(old.as_ref().unwrap_or(&Tenant::default()), !every_user),
        }
        .map_err(|e| SourceError::from(format!("the mirror could not be written: {e}")))?;
        drop(old);
        let full = matches!(mode, ReadMode::Full { .. });
        let mirror = super::mirror::write(self.source_id, base, &cursor, full, replace, writes);
        let written_ms = writing.elapsed().as_millis() as u64;
        let (snapshot, user_rows) = snapshot_kept(tenant, domains, every_user);
        tracing::debug!(
            mirror_ms = written_ms,
            snapshot_ms = writing.elapsed().as_millis() as u64 - written_ms,
            "mirror writes and snapshot made"
        );
        // What a plan of this read depends on that changed: the objects the round named,
        // those whose type was read, and the members of changed groups.
        let changed = touched.map(|(users, groups, members)| {
            let mut changed = users;
            changed.extend(groups);
            changed.extend(members);
            changed
        });
        let stats = self.client.stats();
        let users_total = Some(snapshot.users.len() as u64);
        let mirror_read = mirror_read.map(|n| n as u64);
        Ok(SourceRead {
            changed,
            more: None,
            users_total,
            mirror_read,
            snapshot,
            requests: stats.requests + stats.token_requests,
            throttled: stats.throttled,
            notes,
            mode,
            mirror: Some(mirror),
            changed_after,
            mirror_users: user_rows.map(|r| std::sync::Arc::new(r) as _),
        })
    }

    /// The whole tenant: users, groups and (when needed) each group's direct members, with
    /// delta links taken first so that nothing changed during the read is missed.
    async fn read_whole(
        &self,
        old: Option<&Tenant>,
        early: &mut Early,
        handover: Option<crate::source::EarlyUsers>,
        links: Option<(String, String)>,
        progress: &dyn Progress,
    ) -> Result<(Tenant, Cursor), SourceError> {
        let (users_link, groups_link) = match links {
            Some(links) => links,
            None if self.uses_delta() => self.delta_links().await?,
            None => (String::new(), String::new()),
        };
        progress.phase("reading users and groups");
        // The total, for a bar with the time left: one cheap request beside the pages; a
        // tenant that refuses it ($count needs an advanced query) only gets a spinner.
        let counted = AtomicUsize::new(usize::MAX);
        let total = async {
            if let Ok(n) = self.client.count_users().await {
                progress.total(n);
                counted.store(n as usize, Ordering::Relaxed);
            }
        };
        // Users and groups page independently; reading both at once halves the wait. The
        // users go into the tenant as their pages arrive, and mailbox types are asked
        // meanwhile (see `stream_users`).
        let (users, groups, ()) = tokio::join!(
            self.stream_users(old, early, handover, &counted, progress),
            self.client.list_groups(GROUP_PROPERTIES, &|_| {}),
            total
        );
        let (users, mut groups) = (users?, groups?);
        // A server may repeat an object across pages (Graph does in some paging states);
        // one object is one entry, so keep each id once.
        dedup_by_id(&mut groups, |g| &g.id);
        let mut tenant = Tenant {
            users,
            ..Tenant::default()
        };
        let mut members = if self.needs.memberships {
            self.members(groups.iter().map(|g| g.id.clone()).collect(), progress)
                .await?
        } else {
            HashMap::new()
        };
        for group in groups {
            let m = members.remove(&group.id);
            tenant
                .groups
                .insert(group.id.clone(), MirrorGroup { group, members: m });
        }
        let cursor = Cursor {
            v: CURSOR_VERSION,
            graph_url: self.graph_url.clone(),
            client_id: self.client_id.clone(),
            users_link,
            groups_link,
            memberships: self.needs.memberships,
            managers: self.needs.managers,
            users: None,
            untyped: None,
        };
        Ok((tenant, cursor))
    }

    /// The users' and the groups' delta links as of now (`$deltatoken=latest`), taken
    /// before a whole read so that nothing changed during it is missed.
    async fn delta_links(&self) -> Result<(String, String), GraphError> {
        let (user_select, group_select) = (self.user_select(), self.group_select());
        let (users, groups) = tokio::join!(
            self.client.delta_latest("users", &user_select),
            self.client.delta_latest("groups", &group_select),
        );
        Ok((users?, groups?))
    }

    /// Every user, page by page: each goes into the map as its page arrives (its mailbox
    /// type kept from `old` when its licence and account state are the same), and the
    /// disabled or unlicensed mailboxes whose type is unknown (the likeliest shared, room
    /// and equipment mailboxes) are asked for it while later pages still load, within the
    /// budget. A user repeated across pages is kept once.
    ///
    /// The other mailboxes whose type is unknown are asked early too, as far as the budget
    /// has room beside the disabled and unlicensed ones still to come: once `$count` has
    /// answered (`counted`), that many are expected in the pages left, at the rate seen so
    /// far with a margin. (A tenant far away then waits for none of these after its last
    /// page; if the estimate falls short, the last disabled or unlicensed ones wait for the
    /// next run.)
    async fn stream_users(
        &self,
        old: Option<&Tenant>,
        early: &mut Early,
        handover: Option<crate::source::EarlyUsers>,
        counted: &AtomicUsize,
        progress: &dyn Progress,
    ) -> Result<HashMap<String, MirrorUser>, SourceError> {
        // Users held for good go to `handover`: at once when their type is known or will
        // not be asked this run, else when their lookup answers (see `Source::read`).
        let texts = std::sync::Mutex::new(Interner::default());
        // Mirror objects go early only into a mirror that stays small: written in the
        // order the pages come (random ids), a large one's index outgrows the database's
        // cache, and they cost more than they save (a first sync of 1,000,000 users 20 ms
        // away: its writes ended 40 s after its last page). A larger tenant's are written
        // sorted, with the plan. (Until `$count` answers, or when it is refused, the size
        // is not known: they go early.)
        let mirror_early = early.mirror;
        let mirror_early =
            |counted: usize| mirror_early && (counted == usize::MAX || counted <= EARLY_MIRROR_MAX);
        let hand = |users: &HashMap<String, MirrorUser>, ids: &[String]| {
            // (A run that plans after the read closes it: no more copies are made.)
            if let Some(to) = &handover
                && !ids.is_empty()
                && !to.is_closed()
            {
                let mut texts = texts.lock().unwrap_or_else(|e| e.into_inner());
                // A page's worth at a time: the run plans and writes each while the next
                // is made (the others held back until the budget is spent can be tens of
                // thousands).
                for part in ids.chunks(USER_PAGE) {
                    let mut handed = crate::source::Handed::default();
                    for u in part.iter().filter_map(|id| users.get(id)) {
                        handed.users.push(handed_over(u, &mut texts));
                        // (One that does not serialise is left to the end, and fails there.)
                        if mirror_early(counted.load(Ordering::Relaxed))
                            && let Ok(row) = super::mirror::user_object(u)
                        {
                            handed.mirror.push(row);
                        }
                    }
                    let _ = to.send(handed);
                }
            }
        };
        // A few pages ahead at most: a reader faster than what is done with its pages
        // (a whole re-read, compared with the mirror as it goes) would otherwise hold the
        // tenant's pages parsed, waiting (at 1,000,000 users, 600 MB more at the peak).
        let (pages_tx, mut pages_rx) =
            tokio::sync::mpsc::channel::<Vec<usersync_graph::User>>(PAGES_AHEAD);
        // The pages are read by a task of their own: what is done with a page (handing its
        // users over, planning and writing them) never holds up the request for the next
        // one (it did: a hand-over of 40,000 users held one page 300 ms, 100 ms away).
        let reader = {
            let client = self.client.clone();
            let managers = self.needs.managers;
            let task = tokio::spawn(
                async move {
                    client
                        .each_user_page(USER_PROPERTIES, managers, |page| {
                            let to = pages_tx.clone();
                            async move {
                                let _ = to.send(page).await;
                            }
                        })
                        .await
                }
                .instrument(tracing::Span::current()),
            );
            // (Stopped when the read is: a failure elsewhere, or the run given up.)
            let mut task = AbortOnDrop(task);
            async move {
                match (&mut task.0).await {
                    Ok(read) => read.map_err(SourceError::from),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => Err(SourceError::from(format!(
                        "the read of the users' pages stopped: {e}"
                    ))),
                }
            }
        };
        let budget = self.needs.purpose_budget;
        let started = std::time::Instant::now();
        let consumer = async {
            let mut users: HashMap<String, MirrorUser> = HashMap::new();
            let mut queue: Vec<String> = Vec::new();
            // Enabled, licensed mailboxes (likely of type `user`) whose type is unknown and
            // not asked yet; and how many disabled or unlicensed ones the pages so far held.
            let mut others: Vec<String> = Vec::new();
            let mut likely_seen = 0usize;
            let mut asking = stream::FuturesUnordered::new();
            // Groups of lookups waiting for a slot: the lookups leave two requests in
            // flight to the pages (a page queued behind lookups delays every page after it:
            // 100 ms away, a fifth more time for the pages).
            let mut waiting: std::collections::VecDeque<Vec<String>> = Default::default();
            let slots = (self.client.config().max_in_flight.saturating_sub(2)
                / EARLY_CHUNK.div_ceil(usersync_graph::BATCH_SIZE))
            .max(1);
            let mut failure: Option<GraphError> = None;
            let launch = |ids: Vec<String>| {
                let client = self.client.clone();
                async move {
                    let outcome = client.mailbox_purposes(&ids, &|_| {}).await;
                    (ids, outcome)
                }
            };
            let mut pages_done = false;
            loop {
                tokio::select! {
                    page = pages_rx.recv(), if !pages_done => {
                        let Some(page) = page else {
                            pages_done = true;
                            tracing::debug!(
                                users = users.len(),
                                ms = started.elapsed().as_millis() as u64,
                                lookups_left = asking.len(),
                                "user pages read"
                            );
                            // The others not asked: the lookups after the pages may take
                            // some with what the budget leaves (the read says which,
                            // `changed_after`).
                            hand(&users, &std::mem::take(&mut others));
                            // The last lookups, fewer than a group.
                            if !queue.is_empty() {
                                waiting.push_back(std::mem::take(&mut queue));
                            }
                            while asking.len() < slots && let Some(ids) = waiting.pop_front() {
                                asking.push(launch(ids));
                            }
                            continue;
                        };
                        // Sized once for the tenant `$count` gave: grown by doubling, the
                        // table was held twice while it moved (at 1,000,000 users, 225 MB).
                        let total = counted.load(Ordering::Relaxed);
                        if total != usize::MAX && users.capacity() < total.min(4_000_000) {
                            users.reserve(total.min(4_000_000) - users.len());
                        }
                        let mut settled: Vec<String> = Vec::new();
                        for mut user in page {
                            if users.contains_key(&user.id) {
                                continue;
                            }
                            super::mirror::mirrored_form(&mut user);
                            let mut mirrored = MirrorUser {
                                user: Box::new(user),
                                ..MirrorUser::default()
                            };
                            if let Some(o) = old.and_then(|o| o.users.get(&mirrored.user.id)) {
                                super::mirror::keep_purpose(&mut mirrored, o);
                            }
                            let u = &mirrored.user;
                            let likely_not_user = u.account_enabled == Some(false)
                                || u.assigned_licenses.is_empty();
                            let unknown = mirrored.purpose.is_none()
                                && (u.mail.is_some() || !u.proxy_addresses.is_empty());
                            if unknown && likely_not_user {
                                likely_seen += 1;
                                if early.asked < budget && !early.forbidden {
                                    queue.push(u.id.clone());
                                    early.asked += 1;
                                } else {
                                    settled.push(u.id.clone());
                                }
                            } else if unknown {
                                others.push(u.id.clone());
                            } else {
                                settled.push(u.id.clone());
                            }
                            users.insert(mirrored.user.id.clone(), mirrored);
                        }
                        progress.advance(users.len());
                        hand(&users, &settled);
                        let total = counted.load(Ordering::Relaxed);
                        if total != usize::MAX && !early.forbidden && !others.is_empty() {
                            let left = total.saturating_sub(users.len());
                            // The likely ones expected in the pages left, a quarter more.
                            let expected = (likely_seen * left).div_ceil(users.len().max(1));
                            let reserve = expected + expected / 4 + EARLY_CHUNK;
                            let room = budget.saturating_sub(early.asked + reserve);
                            let take = room.min(others.len());
                            queue.extend(others.drain(..take));
                            early.asked += take;
                        }
                        // Once the budget is spent, the others are asked no more this run.
                        if early.asked >= budget || early.forbidden {
                            hand(&users, &std::mem::take(&mut others));
                        }
                        while queue.len() >= EARLY_CHUNK {
                            waiting.push_back(queue.drain(..EARLY_CHUNK).collect());
                        }
                        while asking.len() < slots && let Some(ids) = waiting.pop_front() {
                            asking.push(launch(ids));
                        }
                    }
                    Some((ids, outcome)) = asking.next(), if !asking.is_empty() => {
                        early.take(outcome, &mut users, &mut failure);
                        hand(&users, &ids);
                        while asking.len() < slots && let Some(ids) = waiting.pop_front() {
                            asking.push(launch(ids));
                        }
                    }
                    else => break,
                }
            }
            (users, failure)
        };
        let (read, (users, failure)) = tokio::join!(reader, consumer);
        tracing::debug!(
            asked = early.asked,
            ms = started.elapsed().as_millis() as u64,
            "users read, early mailbox types asked"
        );
        read?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        if early.forbidden {
            self.purposes_forbidden(&mut early.notes);
        }
        Ok(users)
    }

    /// Each group's direct members (users and nested groups), several groups at a time.
    async fn members(
        &self,
        ids: Vec<String>,
        progress: &dyn Progress,
    ) -> Result<HashMap<String, Vec<Member>>, GraphError> {
        progress.phase("reading group memberships");
        let client = self.client.clone();
        // Owned futures: the client bounds requests in flight; this keeps that many queued.
        let mut pending = stream::iter(ids)
            .map(move |id| {
                let client = client.clone();
                async move { client.group_members(&id, false).await.map(|m| (id, m)) }
            })
            .buffer_unordered(8);
        let mut out = HashMap::new();
        while let Some(result) = pending.next().await {
            let (id, list) = result?;
            let members = list
                .into_iter()
                .filter(|m| matches!(m.kind(), Some("user") | Some("group")))
                .map(|m| Member {
                    group: m.kind() == Some("group"),
                    id: m.id,
                })
                .collect();
            out.insert(id, members);
            progress.advance(out.len());
        }
        Ok(out)
    }

    /// One delta round of users and of groups from the cursor's links, merged into
    /// `tenant`; objects that came partial and are not mirrored are read whole. Returns
    /// the cursor for the next round and the ids the round touched.
    async fn read_changes(
        &self,
        tenant: &mut Tenant,
        cursor: &Cursor,
        load: Option<&Store>,
        progress: &dyn Progress,
    ) -> Result<(Cursor, Merged, (HashSet<String>, HashSet<String>)), SourceError> {
        progress.phase("reading changes");
        let report = |n: usize| progress.advance(n);
        let (users, groups) = tokio::join!(
            self.client
                .delta_raw("users", Some(&cursor.users_link), &[], &report),
            self.client
                .delta_raw("groups", Some(&cursor.groups_link), &[], &|_| {}),
        );
        let (users, groups) = (users?, groups?);
        let mut touched_users: HashSet<String> = users.items.iter().map(item_id).collect();
        let mut touched_groups: HashSet<String> = groups.items.iter().map(item_id).collect();
        let mut merged = Merged::default();
        // A tenant read from the mirror in part: the users the round names, as they were.
        if let Some(store) = load {
            merged.found = self
                .load_users(
                    store,
                    tenant,
                    touched_users.iter().cloned().collect(),
                    &mut merged.pending,
                )
                .await?;
        }
        let corrupt = |e: serde_json::Error| GraphError::Malformed {
            url: "a delta round".into(),
            detail: e.to_string(),
        };
        tenant
            .merge_users(users.items, &mut merged)
            .map_err(corrupt)?;
        // The members of a changed group before the change: they may have left it.
        if cursor.memberships {
            for id in &touched_groups {
                tenant.members_deep(id, &mut merged.members);
            }
        }
        tenant
            .merge_groups(groups.items, cursor.memberships, &mut merged)
            .map_err(corrupt)?;
        // Objects the round named only in part and the mirror lacks (a restore, a mirror
        // that missed them): read whole, never taken from the part.
        for id in std::mem::take(&mut merged.users_to_read) {
            let expand = if cursor.managers {
                "&$expand=manager($select=id)"
            } else {
                ""
            };
            let path = format!("/users/{id}?$select={}{expand}", USER_PROPERTIES.join(","));
            match self.client.get_one::<Map<String, Value>>(&path).await {
                Ok(raw) => {
                    let mut user: usersync_graph::User =
                        serde_json::from_value(Value::Object(raw)).map_err(corrupt)?;
                    super::mirror::mirrored_form(&mut user);
                    tenant.users.insert(
                        id.clone(),
                        MirrorUser {
                            user: Box::new(user),
                            ..MirrorUser::default()
                        },
                    );
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            touched_users.insert(id);
        }
        for id in std::mem::take(&mut merged.groups_to_read) {
            let path = format!("/groups/{id}?$select={}", GROUP_PROPERTIES.join(","));
            match self.client.get_one::<usersync_graph::Group>(&path).await {
                Ok(group) => {
                    let members = if cursor.memberships {
                        Some(
                            self.members(vec![id.clone()], progress)
                                .await?
                                .remove(&id)
                                .unwrap_or_default(),
                        )
                    } else {
                        None
                    };
                    tenant
                        .groups
                        .insert(id.clone(), MirrorGroup { group, members });
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            touched_groups.insert(id);
        }
        // And after: they may have joined it, or its name changed under them.
        if cursor.memberships {
            for id in &touched_groups {
                tenant.members_deep(id, &mut merged.members);
            }
        }
        if let Some(store) = load {
            let unchanged: Vec<String> = merged
                .members
                .iter()
                .filter(|id| !touched_users.contains(*id) && !tenant.users.contains_key(*id))
                .cloned()
                .collect();
            merged.found_members = self
                .load_users(store, tenant, unchanged, &mut merged.pending)
                .await?;
        }
        let next = Cursor {
            users_link: users.delta_link,
            groups_link: groups.delta_link,
            ..cursor.clone()
        };
        Ok((next, merged, (touched_users, touched_groups)))
    }

    /// Reads these users from the store's mirror into `tenant` (those it holds); returns
    /// how many it held.
    async fn load_users(
        &self,
        store: &Store,
        tenant: &mut Tenant,
        ids: Vec<String>,
        pending: &mut HashSet<String>,
    ) -> Result<usize, SourceError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let objects = store
            .mirror_objects(self.source_id, Some(super::mirror::USER), Some(&ids))
            .await?;
        let found = objects.len();
        pending.extend(objects.iter().filter(|o| o.pending).map(|o| o.id.clone()));
        tenant.take(objects).map_err(|e| Box::new(Untrusted(e)))?;
        Ok(found)
    }

    /// A delta run that reads from the mirror only what it needs: the groups, the users
    /// the round names and the members of changed groups; the others stay in the store
    /// and are read on demand ([`SourceRead::more`]). `None` when this run cannot (it
    /// reads whole, a mailbox type is still unknown, the mirror does not read, the delta
    /// link was refused): the caller then reads as usual.
    async fn read_partial(
        &self,
        store: &Store,
        head: &Mirror,
        domains: &[usersync_graph::Domain],
        progress: &dyn Progress,
    ) -> Result<Option<SourceRead>, SourceError> {
        let Ok(mut loaded) = Loaded::from_store(head.clone()) else {
            return Ok(None);
        };
        if self.whole_because(Some(&loaded), None).is_some() {
            return Ok(None);
        }
        let Some(users_before) = loaded.cursor.users else {
            return Ok(None);
        };
        let loading = std::time::Instant::now();
        let groups = store
            .mirror_objects(self.source_id, Some(super::mirror::GROUP), None)
            .await?;
        let groups_read = groups.len();
        if loaded.tenant.take(groups).is_err() {
            return Ok(None);
        }
        let cursor = loaded.cursor.clone();
        let (mut cursor, mut merged, (mut users, groups)) = match self
            .read_changes(&mut loaded.tenant, &cursor, Some(store), progress)
            .await
        {
            Ok(read) => read,
            Err(e) if expired(&e) || e.downcast_ref::<Untrusted>().is_some() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut tenant = loaded.tenant;
        // Mailbox types still to read: this run's share of them, found by their flag.
        let budget = self.needs.purpose_budget;
        let pending_before = store
            .mirror_pending_count(self.source_id, super::mirror::USER)
            .await?;
        let mut pending_read = 0;
        if budget > 0 && pending_before > merged.pending.len() as u64 {
            let batch: Vec<_> = store
                .mirror_pending(
                    self.source_id,
                    super::mirror::USER,
                    budget + merged.pending.len(),
                )
                .await?
                .into_iter()
                .filter(|o| !tenant.users.contains_key(&o.id))
                .collect();
            pending_read = batch.len();
            merged.pending.extend(batch.iter().map(|o| o.id.clone()));
            if tenant.take(batch).is_err() {
                return Ok(None);
            }
        }
        let mut notes = Vec::new();
        let elsewhere = pending_before.saturating_sub(merged.pending.len() as u64) as usize;
        let typed = self
            .purposes(&mut tenant, false, budget, elsewhere, &mut notes, progress)
            .await?;
        users.extend(typed);
        let present = users
            .iter()
            .filter(|id| tenant.users.contains_key(*id))
            .count();
        let users_now = (users_before + present as u64).saturating_sub(merged.found as u64);
        cursor.users = Some(users_now);
        // Types still to read: those of the mirror, less the ones read (or gone), plus the
        // new ones.
        let pending_now: HashSet<&String> = tenant
            .users
            .iter()
            .filter(|(_, u)| u.pending())
            .map(|(id, _)| id)
            .collect();
        let settled = merged
            .pending
            .iter()
            .filter(|id| !pending_now.contains(id))
            .count() as u64;
        let arrived = pending_now
            .iter()
            .filter(|id| !merged.pending.contains(**id))
            .count() as u64;
        cursor.untyped = Some((pending_before + arrived).saturating_sub(settled));
        let writes = tenant
            .writes_touched(&users, &groups)
            .map_err(|e| SourceError::from(format!("the mirror could not be written: {e}")))?;
        let mirror = super::mirror::write(
            self.source_id,
            Some(loaded.generation),
            &cursor,
            false,
            false,
            writes,
        );
        let changes = merged.describe();
        let mut changed: HashSet<String> = users.clone();
        changed.extend(groups);
        changed.extend(std::mem::take(&mut merged.members));
        let more = MirrorUsers {
            store: store.clone(),
            source_id: self.source_id,
            groups: std::sync::Arc::new(tenant.groups.clone()),
            touched: users,
        };
        let snapshot = snapshot(tenant, domains.to_vec());
        tracing::debug!(
            ms = loading.elapsed().as_millis() as u64,
            users = snapshot.users.len(),
            groups = snapshot.groups.len(),
            "changes read over the mirror's groups and the users they name"
        );
        let stats = self.client.stats();
        Ok(Some(SourceRead {
            snapshot,
            requests: stats.requests + stats.token_requests,
            throttled: stats.throttled,
            notes,
            mode: ReadMode::Delta { changes },
            mirror: Some(mirror),
            changed: Some(changed),
            more: Some(std::sync::Arc::new(more)),
            users_total: Some(users_now),
            mirror_read: Some(
                (groups_read + merged.found + merged.found_members + pending_read) as u64,
            ),
            changed_after: HashSet::new(),
            mirror_users: None,
        }))
    }

    /// Reads the mailbox types not yet known, up to the per-run budget, disabled and
    /// unlicensed accounts first (the ones most likely shared, room or equipment); with
    /// `refresh`, what the budget leaves goes to the types read longest ago.
    /// Without MailboxSettings.Read, a note instead. Returns the ids whose type was read.
    async fn purposes(
        &self,
        tenant: &mut Tenant,
        refresh: bool,
        budget: usize,
        elsewhere: usize,
        notes: &mut Vec<String>,
        progress: &dyn Progress,
    ) -> Result<Vec<String>, SourceError> {
        let mut wanted: Vec<(&String, bool)> = tenant
            .users
            .iter()
            .filter(|(_, u)| u.purpose.is_none())
            // No mail address, no mailbox to ask about.
            .filter(|(_, u)| u.user.mail.is_some() || !u.user.proxy_addresses.is_empty())
            .map(|(id, u)| {
                let enabled = u.user.account_enabled != Some(false);
                (id, enabled && !u.user.assigned_licenses.is_empty())
            })
            .collect();
        // Disabled or unlicensed first, then by id so that runs go through the rest in turn.
        wanted.sort_unstable_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        // Those of `tenant` beyond the budget, and those a partial read left in the store.
        let left = wanted.len().saturating_sub(budget) + elsewhere;
        let mut ids: Vec<String> = wanted
            .into_iter()
            .take(budget)
            .map(|(id, _)| id.clone())
            .collect();
        if refresh && ids.len() < budget {
            let mut known: Vec<(i64, &String)> = tenant
                .users
                .iter()
                .filter(|(_, u)| u.purpose.is_some())
                .filter(|(_, u)| u.user.mail.is_some() || !u.user.proxy_addresses.is_empty())
                .map(|(id, u)| (u.purpose_at.unwrap_or(0), id))
                .collect();
            known.sort_unstable();
            let room = budget - ids.len();
            ids.extend(known.into_iter().take(room).map(|(_, id)| id.clone()));
        }
        // Said even when the budget went on lookups made while the pages arrived.
        if left > 0 {
            notes.push(format!(
                "the mailbox types of {left} mailboxes are not read yet (purpose_budget={} a run); \
                 the next runs read them, and until then their type is guessed from licence and sign-in",
                self.needs.purpose_budget
            ));
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        progress.phase("reading mailbox types");
        let now = unix_now();
        let mut read = Vec::with_capacity(ids.len());
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
                    for (id, purpose) in outcome.results {
                        if let Some(u) = tenant.users.get_mut(&id) {
                            // No mailbox: kept as known-none, so it is not asked again.
                            u.purpose = Some(purpose.unwrap_or_default());
                            u.purpose_at = Some(now);
                            read.push(id);
                        }
                    }
                }
                Err(e) if e.is_forbidden() => {
                    self.purposes_forbidden(notes);
                    return Ok(read);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if failed > 0 {
            notes.push(format!(
                "the mailbox type of {failed} users could not be read (for example: {}); their type was guessed from licence and sign-in state, and is asked again next run",
                example.unwrap_or_default()
            ));
        }
        Ok(read)
    }
}

fn item_id(item: &usersync_graph::DeltaItem<Map<String, Value>>) -> String {
    match item {
        usersync_graph::DeltaItem::Changed(raw) => super::mirror::raw_id(raw).to_string(),
        usersync_graph::DeltaItem::Removed { id, .. } => id.clone(),
    }
}

/// A mirror's users that a partial read left in the store, read on demand: as this run
/// has them, since the run changed none of them (those it changed are in its snapshot,
/// or gone).
#[derive(Debug)]
struct MirrorUsers {
    store: Store,
    source_id: i64,
    groups: std::sync::Arc<HashMap<String, MirrorGroup>>,
    touched: HashSet<String>,
}

#[async_trait::async_trait]
impl crate::source::MoreObjects for MirrorUsers {
    async fn users(&self, ids: Option<&[String]>) -> Result<Vec<SourceUser>, crate::EngineError> {
        let objects = self
            .store
            .mirror_objects(self.source_id, Some(super::mirror::USER), ids)
            .await?;
        let mut tenant = Tenant {
            users: HashMap::new(),
            groups: (*self.groups).clone(),
        };
        tenant.take(objects).map_err(|e| {
            usersync_store::StoreError::Corrupt(format!(
                "the mirror of source #{}: {e}",
                self.source_id
            ))
        })?;
        tenant.users.retain(|id, _| !self.touched.contains(id));
        Ok(snapshot(tenant, Vec::new()).users)
    }
}

/// A mirrored object that does not read: the run reads the tenant whole instead.
#[derive(Debug, thiserror::Error)]
#[error("the mirror could not be read: {0}")]
struct Untrusted(String);

/// A user as the snapshot will hold it (without group memberships: a run that plans
/// early reads none).
fn handed_over(u: &MirrorUser, texts: &mut Interner) -> SourceUser {
    planned_user(*u.user.clone(), u.purpose.as_deref(), texts)
}

/// A mirrored user as the core plans it, with its mailbox type when a lookup gave one.
fn planned_user(
    user: usersync_graph::User,
    purpose: Option<&str>,
    texts: &mut Interner,
) -> SourceUser {
    let mut s = source_user(user, texts);
    s.user_purpose = purpose.filter(|p| !p.is_empty()).map(|p| texts.text(p));
    s
}

/// What the core plans from: the tenant's users (with mailbox type and memberships) and
/// groups in a stable order, and its domains.
fn snapshot(tenant: Tenant, domains: Vec<usersync_graph::Domain>) -> SourceSnapshot {
    snapshot_kept(tenant, domains, false).0
}

/// The snapshot, and with `keep` what the mirror keeps of its users beyond it (the
/// [`UserRows`] that write them).
fn snapshot_kept(
    tenant: Tenant,
    domains: Vec<usersync_graph::Domain>,
    keep: bool,
) -> (SourceSnapshot, Option<UserRows>) {
    // Consumes the tenant: at 100,000 users a copy of every user was a large share of a
    // read's peak memory.
    let mut member_of: HashMap<String, Vec<String>> = tenant
        .member_of()
        .into_iter()
        .map(|(id, groups)| (id.to_string(), groups))
        .collect();
    let Tenant {
        users: mirrored,
        groups: mirrored_groups,
    } = tenant;
    let mut kept: Vec<Kept> = Vec::with_capacity(if keep { mirrored.len() } else { 0 });
    let mut texts = Interner::default();
    // Each user is made over in the order it was read into memory, so that what it leaves
    // free is whole pages the allocator gives back as the work goes on: in the table's
    // order every page stayed half full to the end (at 1,000,000 users, 370 MB more at
    // the read's peak).
    let mut mirrored: Vec<MirrorUser> = mirrored.into_values().collect();
    mirrored.sort_unstable_by_key(|u| std::ptr::from_ref::<usersync_graph::User>(&u.user).addr());
    let mut users: Vec<SourceUser> = mirrored
        .into_iter()
        .map(|u| {
            if keep {
                kept.push(Kept::of(&u));
            }
            let mut s = planned_user(*u.user, u.purpose.as_deref(), &mut texts);
            s.member_of = member_of.remove(&s.id).unwrap_or_default();
            s
        })
        .collect();
    if keep {
        usersync_core::sort_users_beside(&mut users, &mut kept);
    } else {
        users.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    }
    let mut groups: Vec<_> = mirrored_groups
        .into_values()
        .map(|g| source_group(g.group))
        .collect();
    groups.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let snapshot = SourceSnapshot {
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
    };
    (snapshot, keep.then_some(UserRows { kept }))
}

fn age(secs: i64) -> String {
    if secs >= 2 * 86400 {
        format!("{} days", secs / 86400)
    } else if secs >= 3600 {
        format!("{} hours", secs / 3600)
    } else {
        format!("{} minutes", secs / 60)
    }
}
