//! The transaction that applies a run's plan, opened before the plan is whole: a sync
//! that plans users as its read hands them over (see `usersync_core::early`) writes their
//! adds into it while later pages still arrive, and the rest of the plan follows in the
//! same transaction ([`Store::apply_plan_open`]). Nothing is seen before the commit, and
//! a read that fails, or a plan that is not applied, rolls back everything it wrote.

use std::collections::HashMap;
use std::time::Instant;

use sqlx::Row;
use usersync_core::{DirectoryUser, EmailAddress};

use crate::audit::{By, record_adds};
use crate::runs::RunLease;
use crate::users::{ensure_groups, insert_aliases, insert_users};
use crate::{Backend, Store, StoreError, in_json, query_dyn};

/// An apply under way: its transaction (the directory version taken, the source checked),
/// and the adds written so far.
pub struct OpenApply {
    pub(crate) tx: sqlx::Transaction<'static, sqlx::Any>,
    pub(crate) backend: Backend,
    pub(crate) customer_id: i64,
    pub(crate) run_id: i64,
    pub(crate) started: Instant,
    pub(crate) stamp: String,
    pub(crate) actor: String,
    /// The customer's console groups, by name.
    pub(crate) groups: HashMap<String, i64>,
    /// Adds written, by object id: the row id, the address, and the id of the add's audit
    /// entry (an add taken back takes its entry by id: looked up by run and address, on
    /// PostgreSQL it read every entry of the run, 0.1 s at 90,000).
    pub(crate) added: HashMap<String, (i64, EmailAddress, i64)>,
    /// Aliases of the adds written, not inserted yet: they go in whole statements (a
    /// statement of another length is prepared anew), the rest with the plan's.
    pub(crate) aliases: Vec<(i64, EmailAddress)>,
}

impl std::fmt::Debug for OpenApply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenApply")
            .field("run_id", &self.run_id)
            .field("added", &self.added.len())
            .finish()
    }
}

impl Store {
    /// Opens the transaction that applies a plan made from `directory_version` of the
    /// customer's directory: fails with `DirectoryChanged` when another apply came first.
    /// On SQLite it holds the one writer until it ends; on PostgreSQL other applies go on
    /// beside it.
    pub async fn open_apply(
        &self,
        lease: RunLease,
        customer_id: i64,
        directory_version: i64,
    ) -> Result<OpenApply, StoreError> {
        let started = Instant::now();
        let mut tx = self.write_tx().await?;
        // The version is taken (and the source checked) when the plan is applied: then
        // the customer's and the source's rows are locked only for the apply, not for the
        // rest of a read. A plan made from another version is refused now already.
        if crate::users::directory_version(&mut tx, customer_id).await? != directory_version {
            return Err(StoreError::DirectoryChanged { customer_id });
        }
        let actor = run_actor(&mut tx, lease.run_id).await?;
        let mut groups = HashMap::new();
        for row in sqlx::query("SELECT id, name FROM console_groups WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_all(&mut *tx)
            .await?
        {
            groups.insert(row.try_get("name")?, row.try_get("id")?);
        }
        Ok(OpenApply {
            tx,
            backend: self.backend,
            customer_id,
            run_id: lease.run_id,
            started,
            stamp: crate::now(),
            actor,
            groups,
            added: HashMap::new(),
            aliases: Vec::new(),
        })
    }
}

/// Aliases per statement (of two columns: as many as `Bulk` puts in one).
const ALIASES_PER_STATEMENT: usize = 4000;

/// Who the run's changes are recorded as: whoever asked for it, else usersync.
pub(crate) async fn run_actor(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    run_id: i64,
) -> Result<String, StoreError> {
    Ok(
        sqlx::query("SELECT COALESCE(requested_by, 'usersync') AS actor FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("actor"))
            .transpose()?
            .unwrap_or_else(|| "usersync".into()),
    )
}

/// Takes the customer's directory at `directory_version` for this apply (the row stays
/// locked on PostgreSQL until the commit: applies of one customer take turns), and checks
/// that the source was not removed meanwhile (touching its row, so that a removal and a
/// sync of one source take turns too).
pub(crate) async fn take_version(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    customer_id: i64,
    source_id: Option<i64>,
    directory_version: i64,
) -> Result<(), StoreError> {
    let current = sqlx::query(
        "UPDATE customers SET directory_version = directory_version + 1 \
         WHERE id = $1 AND directory_version = $2",
    )
    .bind(customer_id)
    .bind(directory_version)
    .execute(&mut **tx)
    .await?;
    if current.rows_affected() == 0 {
        return Err(StoreError::DirectoryChanged { customer_id });
    }
    if let Some(source_id) = source_id {
        let live = sqlx::query(
            "UPDATE sources SET sync_state = sync_state WHERE id = $1 AND removed_at IS NULL",
        )
        .bind(source_id)
        .execute(&mut **tx)
        .await?;
        if live.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "source #{source_id} was removed while this run worked on it; nothing was applied"
            )));
        }
    }
    Ok(())
}

impl OpenApply {
    /// Adds per call of [`OpenApply::add`] that keep every statement the same length, so
    /// that each is prepared once: give it multiples of this, and the rest last.
    pub const ADDS_PER_WRITE: usize = 4000;

    /// How many adds are written.
    pub fn added(&self) -> usize {
        self.added.len()
    }

    /// The objects whose add is written.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.added.keys().map(String::as_str)
    }

    /// Writes these adds (users new to the directory, each of an object not added yet),
    /// with their aliases, console groups and audit entries.
    pub async fn add(&mut self, adds: &[DirectoryUser]) -> Result<(), StoreError> {
        let mut adds: Vec<&DirectoryUser> = adds
            .iter()
            .filter(|u| u.source_object_id.is_some())
            .collect();
        if adds.is_empty() {
            return Ok(());
        }
        adds.sort_unstable_by(|a, b| a.address.as_str().cmp(b.address.as_str()));
        let mut changes = Vec::new();
        let mut entries = HashMap::new();
        ensure_groups(
            &mut self.tx,
            self.customer_id,
            &self.stamp,
            &mut self.groups,
            adds.iter().map(|u| &u.group),
            &mut changes,
        )
        .await?;
        let by = By {
            actor: &self.actor,
            run_id: Some(self.run_id),
        };
        let ids = insert_users(
            &mut self.tx,
            self.backend,
            self.customer_id,
            &self.stamp,
            &self.groups,
            &adds,
            &by,
            &mut changes,
            Some(&mut entries),
        )
        .await?;
        record_adds(&mut self.tx, self.backend, &by, &changes, &mut entries).await?;
        self.aliases.extend(
            adds.iter()
                .zip(&ids)
                .flat_map(|(u, id)| u.aliases.iter().map(move |a| (*id, a.clone()))),
        );
        let whole = self.aliases.len() - self.aliases.len() % ALIASES_PER_STATEMENT;
        let ready: Vec<(i64, &EmailAddress)> = self.aliases[..whole]
            .iter()
            .map(|(id, a)| (*id, a))
            .collect();
        insert_aliases(&mut self.tx, self.backend, &ready).await?;
        self.aliases.drain(..whole);
        for (u, id) in adds.iter().zip(ids) {
            let object = u.source_object_id.clone().unwrap_or_default();
            let entry = entries.get(u.address.as_str()).copied().ok_or_else(|| {
                StoreError::Corrupt(format!("no audit entry came back for {}", u.address))
            })?;
            self.added.insert(object, (id, u.address.clone(), entry));
        }
        Ok(())
    }

    /// Writes objects of the source's mirror that the read holds for good (a first read's
    /// users, as its pages arrive); the rest of the mirror, its head with the generation
    /// checked, goes with the plan. Objects written again later replace these.
    pub async fn mirror(
        &mut self,
        source_id: i64,
        rows: Vec<crate::MirrorObject>,
    ) -> Result<(), StoreError> {
        crate::mirror::write_objects(&mut self.tx, self.backend, source_id, rows).await
    }

    /// Takes back the adds of these objects (planned again with the rest of the plan):
    /// their rows, aliases and audit entries.
    pub async fn withdraw(&mut self, objects: &[String]) -> Result<(), StoreError> {
        let taken: Vec<(i64, EmailAddress, i64)> = objects
            .iter()
            .filter_map(|o| self.added.remove(o))
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        let gone: std::collections::HashSet<i64> = taken.iter().map(|t| t.0).collect();
        self.aliases.retain(|(id, _)| !gone.contains(id));
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
        let ids = serde_json::to_string(&taken.iter().map(|t| t.0).collect::<Vec<_>>())
            .map_err(corrupt)?;
        let entries = serde_json::to_string(&taken.iter().map(|t| t.2).collect::<Vec<_>>())
            .map_err(corrupt)?;
        // The aliases go with their users (ON DELETE CASCADE).
        query_dyn(&format!(
            "DELETE FROM users WHERE id IN ({})",
            in_json(self.backend, 1, true)
        ))
        .bind(ids)
        .execute(&mut *self.tx)
        .await?;
        query_dyn(&format!(
            "DELETE FROM audit_log WHERE id IN ({})",
            in_json(self.backend, 1, true)
        ))
        .bind(entries)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
