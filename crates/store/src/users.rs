//! The console directory: reading a customer's users and applying a plan to them.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use usersync_core::{DirectoryUser, EmailAddress, MailboxType, Plan, UserStatus};

use crate::audit::{By, Change, record, record_adds};
use crate::bulk::{Bulk, Cell, bind_rows};
use crate::open_apply::OpenApply;
use crate::runs::{RunEnd, RunLease, RunStats, RunStatus, Settle, finish};
use crate::{
    Backend, Store, StoreError, in_json, now, param, parse_enum, query_dyn, values_clause,
};

/// Ids per statement that names users by id (`IN (…)`).
const CHUNK: usize = 400;

/// What applying a plan changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ApplyCounts {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
}

/// Marks a change of a customer's directory made outside a plan, so that a plan made
/// before it is made again.
pub(crate) async fn bump_directory(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    customer_id: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE customers SET directory_version = directory_version + 1 WHERE id = $1")
        .bind(customer_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A plan to apply, with the run it belongs to and what the run's end means.
#[derive(Debug, Clone, Copy)]
pub struct Apply<'a> {
    pub lease: RunLease,
    pub customer_id: i64,
    pub source_id: Option<i64>,
    pub plan: &'a Plan,
    /// The version of the customer's directory the plan was made from.
    pub directory_version: i64,
    /// `succeeded`, or `held` when the safeguard holds the plan's removals.
    pub status: RunStatus,
    /// Why it was held.
    pub error: Option<&'a str>,
    pub settle: Settle<'a>,
    /// What the run read, for its source's mirror: written with the plan or not at all.
    pub mirror: Option<&'a crate::MirrorWrite>,
    /// Objects of that write made as they are written (a whole read's users).
    pub mirror_rows: Option<&'a dyn crate::MirrorRows>,
}

/// The version a customer's directory is at (0 before its first change).
pub(crate) async fn directory_version(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    customer_id: i64,
) -> Result<i64, StoreError> {
    Ok(
        sqlx::query("SELECT directory_version FROM customers WHERE id = $1")
            .bind(customer_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get("directory_version"))
            .transpose()?
            .unwrap_or_default(),
    )
}

/// Rows written by one run beyond which PostgreSQL's statistics are refreshed at once,
/// when they are also a fifth of what the statistics counted ([`Store::stale`]).
const ANALYZE_AFTER: usize = 10_000;

/// The columns of an update's row of new values (see `apply`).
const UPDATE_COLUMNS: &[&str] = &[
    "id",
    "address",
    "display_name",
    "given_name",
    "surname",
    "mailbox_type",
    "billable",
    "group_id",
    "source_id",
    "source_object_id",
    "status",
    "removed_at",
    "updated_at",
    "manager",
];

/// Parameters `start` to `start + count - 1`, an `IN (...)` list's.
fn params(backend: Backend, start: usize, count: usize) -> String {
    (start..start + count)
        .map(|n| param(backend, n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Users with their group's name, as [`user_from`] reads them.
const SELECT_USERS: &str = "SELECT u.id, u.address, u.display_name, u.given_name, u.surname, \
     u.mailbox_type, u.billable, g.name AS group_name, u.source_id, u.source_object_id, u.status, \
     u.manager, u.services FROM users u JOIN console_groups g ON g.id = u.group_id";

/// Which of a customer's entries a page lists.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Part of the address or display name, any case.
    pub search: Option<String>,
    pub status: Option<UserStatus>,
    pub mailbox_type: Option<MailboxType>,
    /// A console group's name, any case.
    pub group: Option<String>,
    /// The last address of the page before.
    pub after: Option<String>,
    /// Entries per page (1 to 1,000).
    pub limit: i64,
}

fn user_from(row: &AnyRow, aliases: Vec<EmailAddress>) -> Result<DirectoryUser, StoreError> {
    let address: String = row.try_get("address")?;
    let mailbox_type: String = row.try_get("mailbox_type")?;
    let status: String = row.try_get("status")?;
    let billable: i64 = row.try_get("billable")?;
    let manager: Option<String> = row.try_get("manager")?;
    let services: Option<String> = row.try_get("services")?;
    Ok(DirectoryUser {
        id: Some(row.try_get("id")?),
        address: EmailAddress::stored(&address).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        display_name: row.try_get("display_name")?,
        given_name: row
            .try_get::<Option<String>, _>("given_name")?
            .map(Into::into),
        surname: row.try_get::<Option<String>, _>("surname")?.map(Into::into),
        mailbox_type: parse_enum(&mailbox_type, "users.mailbox_type")?,
        billable: billable != 0,
        aliases,
        group: row.try_get("group_name")?,
        source_id: row.try_get("source_id")?,
        source_object_id: row.try_get("source_object_id")?,
        status: parse_enum(&status, "users.status")?,
        manager: manager
            .map(|m| EmailAddress::stored(&m))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        services: services
            .and_then(|s| serde_json::from_str(&s).ok())
            .map(std::sync::Arc::new),
        placed_by: None,
    })
}

impl Store {
    /// Every entry of a customer, removed ones too, ordered by address.
    pub async fn directory(&self, customer_id: i64) -> Result<Vec<DirectoryUser>, StoreError> {
        self.users(customer_id, true).await
    }

    /// [`Store::directory`] with the version it is at: a plan made from it applies only
    /// while the directory is still at that version ([`Apply::directory_version`]).
    pub async fn directory_versioned(
        &self,
        customer_id: i64,
    ) -> Result<(Vec<DirectoryUser>, i64), StoreError> {
        self.read_users(customer_id, true).await
    }

    /// A customer's users ordered by address; removed ones only when asked.
    pub async fn users(
        &self,
        customer_id: i64,
        include_removed: bool,
    ) -> Result<Vec<DirectoryUser>, StoreError> {
        Ok(self.read_users(customer_id, include_removed).await?.0)
    }

    /// One page of a customer's entries by address, after `query.after` (a cursor: the last
    /// address of the page before), and whether more follow.
    pub async fn users_page(
        &self,
        customer_id: i64,
        query: &UserQuery,
    ) -> Result<(Vec<DirectoryUser>, bool), StoreError> {
        let mut sql = format!("{SELECT_USERS} WHERE u.customer_id = $1");
        let mut binds: Vec<String> = Vec::new();
        let mut next = |value: String, sql: &mut String, clause: &str| {
            binds.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", binds.len() + 1)));
        };
        if let Some(after) = &query.after {
            next(after.clone(), &mut sql, " AND u.address > ?");
        }
        if let Some(status) = query.status {
            next(status.as_str().into(), &mut sql, " AND u.status = ?");
        }
        if let Some(kind) = query.mailbox_type {
            next(kind.as_str().into(), &mut sql, " AND u.mailbox_type = ?");
        }
        if let Some(group) = &query.group {
            next(group.to_lowercase(), &mut sql, " AND LOWER(g.name) = ?");
        }
        if let Some(search) = query
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let pattern = format!(
                "%{}%",
                search
                    .to_lowercase()
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            binds.push(pattern);
            let n = binds.len() + 1;
            sql.push_str(&format!(
                " AND (LOWER(u.address) LIKE ${n} ESCAPE '\\' OR LOWER(u.display_name) LIKE ${n} ESCAPE '\\')"
            ));
        }
        let limit = query.limit.clamp(1, 1000);
        sql.push_str(&format!(" ORDER BY u.address LIMIT {}", limit + 1));
        let mut q = query_dyn(&sql).bind(customer_id);
        for value in binds {
            q = q.bind(value);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let more = rows.len() as i64 > limit;
        let mut users = Vec::with_capacity(rows.len().min(limit as usize));
        for row in rows.iter().take(limit as usize) {
            let id: i64 = row.try_get("id")?;
            users.push(user_from(row, self.aliases_of(id).await?)?);
        }
        Ok((users, more))
    }

    /// One entry's aliases, sorted.
    async fn aliases_of(&self, id: i64) -> Result<Vec<EmailAddress>, StoreError> {
        sqlx::query("SELECT address FROM user_aliases WHERE user_id = $1 ORDER BY address")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let address: String = r.try_get("address")?;
                EmailAddress::stored(&address).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// One entry, by its id, removed or not.
    pub async fn user(&self, id: i64) -> Result<Option<DirectoryUser>, StoreError> {
        let Some(row) = query_dyn(&format!("{SELECT_USERS} WHERE u.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        user_from(&row, self.aliases_of(id).await?).map(Some)
    }

    async fn read_users(
        &self,
        customer_id: i64,
        include_removed: bool,
    ) -> Result<(Vec<DirectoryUser>, i64), StoreError> {
        let status_filter = if include_removed {
            ""
        } else {
            " AND u.status = 'active'"
        };
        // Aliases and users in one snapshot, so a sync committing in between cannot pair
        // one state's users with another's aliases.
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        // Rows taken in as they arrive: all of a large directory's rows at once, as the
        // driver holds them, were twice the users they make (1.5 GB at 900,000 users).
        let mut aliases: HashMap<i64, Vec<EmailAddress>> = HashMap::new();
        let mut rows = query_dyn(&format!(
            "SELECT a.user_id, a.address FROM user_aliases a JOIN users u ON u.id = a.user_id \
             WHERE u.customer_id = $1{status_filter} ORDER BY a.user_id, a.address"
        ))
        .bind(customer_id)
        .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            let address: String = row.try_get("address")?;
            aliases.entry(row.try_get("user_id")?).or_default().push(
                EmailAddress::stored(&address).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        drop(rows);
        let mut users = Vec::new();
        let mut rows = query_dyn(&format!(
            "{SELECT_USERS} WHERE u.customer_id = $1{status_filter} ORDER BY u.address"
        ))
        .bind(customer_id)
        .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            let id: i64 = row.try_get("id")?;
            users.push(user_from(&row, aliases.remove(&id).unwrap_or_default())?);
        }
        drop(rows);
        let version = directory_version(&mut tx, customer_id).await?;
        tx.commit().await?;
        Ok((users, version))
    }

    /// The entries a delta run plans against (see `usersync_core::scope`): those of
    /// `objects` that `source_id` manages, and those holding one of `addresses` as their
    /// address or an alias; removed ones too, ordered by address, with the directory's
    /// version (read in one snapshot).
    pub async fn directory_entries(
        &self,
        customer_id: i64,
        source_id: i64,
        objects: &[String],
        addresses: &[EmailAddress],
    ) -> Result<(Vec<DirectoryUser>, i64), StoreError> {
        let b = self.backend;
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let started = std::time::Instant::now();
        let mut ids: Vec<i64> = Vec::new();
        let list = |items: Vec<&str>| serde_json::Value::from(items).to_string();
        if !objects.is_empty() {
            // By the index of object ids alone (`users_by_object`): naming the source too
            // made SQLite walk the source's entries by the index of sources instead. Other
            // sources' entries with one of these ids are left out here.
            let sql = format!(
                "SELECT id, source_id FROM users WHERE source_object_id IN ({})",
                in_json(b, 1, false)
            );
            let query = query_dyn(&sql).bind(list(objects.iter().map(String::as_str).collect()));
            for row in query.fetch_all(&mut *tx).await? {
                if row.try_get::<Option<i64>, _>("source_id")? == Some(source_id) {
                    ids.push(row.try_get("id")?);
                }
            }
        }
        let by_object_ms = started.elapsed().as_millis() as u64;
        let mut collect = |rows: Vec<AnyRow>, column: &str| -> Result<(), StoreError> {
            for row in rows {
                ids.push(row.try_get(column)?);
            }
            Ok(())
        };
        // Each lookup by its own index (an alias joined to its user made SQLite walk the
        // customer's users, asking each for every address); other customers' entries an
        // alias lookup finds are left out when the entries are read.
        if !addresses.is_empty() {
            let addresses = list(addresses.iter().map(EmailAddress::as_str).collect());
            let sql = format!(
                "SELECT id FROM users WHERE customer_id = {} AND address IN ({})",
                param(b, 1),
                in_json(b, 2, false)
            );
            let query = query_dyn(&sql).bind(customer_id).bind(&addresses);
            collect(query.fetch_all(&mut *tx).await?, "id")?;
            let sql = format!(
                "SELECT user_id FROM user_aliases WHERE address IN ({})",
                in_json(b, 1, false)
            );
            collect(
                query_dyn(&sql).bind(&addresses).fetch_all(&mut *tx).await?,
                "user_id",
            )?;
        }
        let by_address_ms = started.elapsed().as_millis() as u64 - by_object_ms;
        ids.sort_unstable();
        ids.dedup();
        let ids = serde_json::Value::from(ids).to_string();
        let mut aliases: HashMap<i64, Vec<EmailAddress>> = HashMap::new();
        let rows = query_dyn(&format!(
            "{SELECT_USERS} WHERE u.customer_id = {} AND u.id IN ({})",
            param(b, 1),
            in_json(b, 2, true)
        ))
        .bind(customer_id)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        // The customer's entries only (an alias lookup also finds other customers').
        let ours: Vec<i64> = rows
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        let ours = serde_json::Value::from(ours).to_string();
        for row in query_dyn(&format!(
            "SELECT user_id, address FROM user_aliases WHERE user_id IN ({}) ORDER BY user_id, address",
            in_json(b, 1, true)
        ))
        .bind(&ours)
        .fetch_all(&mut *tx)
        .await?
        {
            let address: String = row.try_get("address")?;
            aliases.entry(row.try_get("user_id")?).or_default().push(
                EmailAddress::stored(&address).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        let version = directory_version(&mut tx, customer_id).await?;
        tx.commit().await?;
        tracing::debug!(
            objects = objects.len(),
            addresses = addresses.len(),
            by_object_ms,
            by_address_ms,
            read_ms = started.elapsed().as_millis() as u64 - by_object_ms - by_address_ms,
            "directory entries looked up"
        );
        let mut users = rows
            .iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                user_from(row, aliases.remove(&id).unwrap_or_default())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Addresses are unique in a customer's directory: no stable sort's buffer needed.
        users.sort_unstable_by(|a, b| a.address.cmp(&b.address));
        Ok((users, version))
    }

    /// How many active entries `source_id` manages in the customer's directory (the
    /// deletion safeguard's base).
    pub async fn managed_count(
        &self,
        customer_id: i64,
        source_id: i64,
    ) -> Result<usize, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users WHERE source_id = $1 AND customer_id = $2 AND status = 'active'",
        )
        .bind(source_id)
        .bind(customer_id)
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n as usize)
    }

    /// Adds a user by hand: no source manages it, so no sync changes or removes it.
    pub async fn add_manual_user(
        &self,
        customer_id: i64,
        user: &DirectoryUser,
    ) -> Result<DirectoryUser, StoreError> {
        let group: Option<i64> =
            sqlx::query("SELECT id FROM console_groups WHERE customer_id = $1 AND name = $2")
                .bind(customer_id)
                .bind(&user.group)
                .fetch_optional(&self.pool)
                .await?
                .map(|row| row.try_get("id"))
                .transpose()?;
        let group = group.ok_or_else(|| StoreError::not_found("group", &user.group))?;
        let mut tx = self.write_tx().await?;
        let stamp = now();
        let row = sqlx::query(
            "INSERT INTO users (customer_id, address, display_name, given_name, surname, \
             mailbox_type, billable, group_id, source_id, source_object_id, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9, $10, $10) RETURNING id",
        )
        .bind(customer_id)
        .bind(user.address.as_str())
        .bind(&user.display_name)
        .bind(user.given_name.as_deref())
        .bind(user.surname.as_deref())
        .bind(user.mailbox_type.as_str())
        .bind(i64::from(user.billable))
        .bind(group)
        .bind(UserStatus::Active.as_str())
        .bind(&stamp)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if StoreError::is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "{} is already an entry of this customer (perhaps a removed one, which can be restored)",
                    user.address
                ))
            } else {
                e.into()
            }
        })?;
        let id: i64 = row.try_get("id")?;
        bump_directory(&mut tx, customer_id).await?;
        for alias in &user.aliases {
            sqlx::query("INSERT INTO user_aliases (user_id, address) VALUES ($1, $2)")
                .bind(id)
                .bind(alias.as_str())
                .execute(&mut *tx)
                .await?;
        }
        self.audit_now(
            &mut tx,
            &[Change::new(Some(customer_id), "user.add", &user.address).after(user_summary(user))],
        )
        .await?;
        tx.commit().await?;
        Ok(DirectoryUser {
            id: Some(id),
            source_id: None,
            source_object_id: None,
            status: UserStatus::Active,
            ..user.clone()
        })
    }

    /// Applies a plan and records its run's outcome (`succeeded`, or `held` with the
    /// removals the safeguard holds) and what it means for the source, in one transaction:
    /// all of it or none. Refused with [`StoreError::DirectoryChanged`] when the customer's
    /// directory is no longer the one the plan was made from (plan again), and with a
    /// conflict when the run's lease is no longer the caller's. Applies of one customer
    /// take turns. The time it takes is added to `stats` (`apply_ms`, `duration_ms`).
    pub async fn apply_plan(
        &self,
        apply: &Apply<'_>,
        stats: &mut RunStats,
    ) -> Result<ApplyCounts, StoreError> {
        self.apply(apply, stats, false, None).await
    }

    /// [`Store::apply_plan`] in a transaction opened before the plan was whole, holding
    /// the adds written while the source was read ([`Store::open_apply`]).
    pub async fn apply_plan_open(
        &self,
        apply: &Apply<'_>,
        stats: &mut RunStats,
        open: OpenApply,
    ) -> Result<ApplyCounts, StoreError> {
        self.apply(apply, stats, false, Some(open)).await
    }

    /// Applies the plan of removing a source (its users' removals) and marks the source
    /// removed, in one transaction with the run's outcome.
    pub async fn apply_source_removal(
        &self,
        apply: &Apply<'_>,
        stats: &mut RunStats,
    ) -> Result<ApplyCounts, StoreError> {
        self.apply(apply, stats, true, None).await
    }

    async fn apply(
        &self,
        apply: &Apply<'_>,
        stats: &mut RunStats,
        remove_source: bool,
        open: Option<OpenApply>,
    ) -> Result<ApplyCounts, StoreError> {
        let Apply {
            lease,
            customer_id,
            source_id,
            plan,
            directory_version,
            status,
            error,
            settle,
            mirror,
            mirror_rows,
        } = *apply;
        let open = match open {
            Some(open) => open,
            None => {
                self.open_apply(lease, customer_id, directory_version)
                    .await?
            }
        };
        let OpenApply {
            mut tx,
            started,
            stamp,
            actor,
            mut groups,
            added,
            aliases: early_aliases,
            ..
        } = open;
        crate::open_apply::take_version(&mut tx, customer_id, source_id, directory_version).await?;
        let mut changes: Vec<Change> = Vec::new();
        let customer = Some(customer_id);
        let lap = |phase: &str| {
            tracing::debug!(
                phase,
                ms = started.elapsed().as_millis() as u64,
                "applying the plan"
            )
        };
        let by = By {
            actor: &actor,
            run_id: Some(lease.run_id),
        };
        if let Some(mirror) = mirror {
            crate::mirror::write_mirror(&mut tx, self.backend, &self.db_now(), mirror, mirror_rows)
                .await?;
            lap("mirrored");
        }

        for domain in &plan.import_domains {
            sqlx::query(
                "INSERT INTO domains (customer_id, name, origin, source_id, created_at) VALUES ($1, $2, 'source', $3, $4)",
            )
            .bind(customer_id)
            .bind(domain.as_str())
            .bind(source_id)
            .bind(&stamp)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if StoreError::is_unique_violation(&e) {
                    StoreError::Conflict(format!("the domain {domain} was added elsewhere while the sync ran; run it again"))
                } else {
                    e.into()
                }
            })?;
            changes.push(
                Change::new(customer, "domain.add", domain)
                    .after(serde_json::json!({"origin": "source", "source_id": source_id})),
            );
        }

        // Group names the plan uses, created when missing (filters name their destination).
        let wanted = plan.add.iter().map(|u| &u.group).chain(
            plan.update
                .iter()
                .filter_map(|u| u.after.as_ref().map(|a| &a.group)),
        );
        ensure_groups(
            &mut tx,
            customer_id,
            &stamp,
            &mut groups,
            wanted,
            &mut changes,
        )
        .await?;
        let group_id = |name: &str| groups.get(name).copied().unwrap_or_default();

        // Addresses that change hands in this plan (two users swapping addresses, a chain
        // of renames, a new user taking the address another leaves): each row that moves
        // first gets a placeholder, so no statement sees one address on two rows.
        let moving: Vec<i64> = plan
            .update
            .iter()
            .filter(|u| u.after.as_ref().is_some_and(|a| a.address != u.address))
            .map(|u| u.id)
            .collect();
        for chunk in moving.chunks(CHUNK) {
            let sql = format!(
                "UPDATE users SET address = '~moving~' || CAST(id AS TEXT) WHERE id IN ({})",
                params(self.backend, 1, chunk.len())
            );
            let mut query = query_dyn(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
        }

        // Adds, many rows per statement: a first sync of 100,000 users is the common case.
        let mut new_aliases: Vec<(i64, &EmailAddress)> =
            early_aliases.iter().map(|(id, a)| (*id, a)).collect();
        // In address order: each insert lands beside the last in the index of addresses.
        let mut adds: Vec<&DirectoryUser> = plan
            .add
            .iter()
            .filter(|u| {
                u.source_object_id
                    .as_ref()
                    .is_none_or(|o| !added.contains_key(o))
            })
            .collect();
        adds.sort_unstable_by(|a, b| a.address.as_str().cmp(b.address.as_str()));
        let ids = insert_users(
            &mut tx,
            self.backend,
            customer_id,
            &stamp,
            &groups,
            &adds,
            &by,
            &mut changes,
            None,
        )
        .await?;
        for (u, id) in adds.iter().zip(ids) {
            new_aliases.extend(u.aliases.iter().map(|a| (id, a)));
        }

        // Removed entries whose address a live user takes now go first, freeing it.
        // (An entry this plan removes whose address another takes goes at once too.)
        for u in &plan.purge {
            sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(u.id)
                .execute(&mut *tx)
                .await?;
            changes.push(
                Change::new(customer, "user.purge", &u.address)
                    .before(serde_json::json!({"status": u.status.as_str()}))
                    .after(serde_json::json!({"why": "a live user takes the address"})),
            );
        }

        lap("added");
        // Updates, many rows per statement (a change of group or licence touches
        // thousands of users at once): the new values as a table joined to the rows by id.
        // Each address that changes hands holds a placeholder by now, so no row of a
        // statement meets another's address.
        let now_s = self.db_now();
        let mut updates = Vec::with_capacity(plan.update.len());
        let mut new_lists: Vec<i64> = Vec::new();
        for update in &plan.update {
            let Some(after) = &update.after else { continue };
            let action = if update.restored {
                "user.restore"
            } else if update.linked {
                "user.link"
            } else {
                "user.update"
            };
            let (old, new): (serde_json::Map<_, _>, serde_json::Map<_, _>) = update
                .changes
                .iter()
                .map(|(k, c)| ((k.clone(), json_of(&c.0)), (k.clone(), json_of(&c.1))))
                .unzip();
            changes.push(
                Change::new(customer, action, &update.address)
                    .before(old)
                    .after(new),
            );
            flush(&mut tx, self.backend, &by, &mut changes, false).await?;
            if update.changes.contains_key("aliases") {
                new_lists.push(update.id);
                new_aliases.extend(after.aliases.iter().map(|a| (update.id, a)));
            }
            updates.push((update.id, after));
        }
        let per = Bulk::rows_for(self.backend, UPDATE_COLUMNS.len());
        for chunk in updates.chunks(per) {
            let sql = format!(
                "WITH v ({}) AS (VALUES {}) UPDATE users SET address = v.address, \
                 display_name = v.display_name, given_name = v.given_name, surname = v.surname, \
                 mailbox_type = v.mailbox_type, billable = v.billable, group_id = v.group_id, \
                 source_id = v.source_id, source_object_id = v.source_object_id, \
                 status = v.status, removed_at = v.removed_at, updated_at = v.updated_at, \
                 manager = v.manager, removed_epoch = CASE WHEN v.status = 'removed' \
                 THEN COALESCE(users.removed_epoch, {now_s}) ELSE NULL END \
                 FROM v WHERE users.id = v.id",
                UPDATE_COLUMNS.join(", "),
                values_clause(self.backend, chunk.len(), UPDATE_COLUMNS.len()),
            );
            let rows = chunk.iter().map(|(id, after)| {
                let removed_at = (after.status == UserStatus::Removed).then_some(stamp.as_str());
                vec![
                    Cell::from(*id),
                    Cell::from(after.address.as_str()),
                    Cell::from(after.display_name.as_str()),
                    Cell::from(after.given_name.as_deref()),
                    Cell::from(after.surname.as_deref()),
                    Cell::from(after.mailbox_type.as_str()),
                    Cell::from(i64::from(after.billable)),
                    Cell::from(group_id(&after.group)),
                    Cell::from(after.source_id),
                    Cell::from(after.source_object_id.as_deref()),
                    Cell::from(after.status.as_str()),
                    Cell::from(removed_at),
                    Cell::from(stamp.as_str()),
                    Cell::Owned(after.manager.as_ref().map(|m| m.to_string())),
                ]
            });
            bind_rows(query_dyn(&sql), UPDATE_COLUMNS.len(), rows)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in new_lists.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM user_aliases WHERE user_id IN ({})",
                params(self.backend, 1, chunk.len())
            );
            let mut query = query_dyn(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
        }
        lap("updated");
        insert_aliases(&mut tx, self.backend, &new_aliases).await?;

        lap("aliases");
        // Rule 9: removal is a soft delete; the entry stays, restorable.
        if let (true, Some(source_id)) = (remove_source, source_id) {
            // Every active user of the source, as it is now: what the plan lists, unless a
            // sync changed them since it was made.
            let done = query_dyn(
                &format!("UPDATE users SET status = $1, removed_at = $2, updated_at = $2, removed_epoch = {} \
                 WHERE source_id = $3 AND status = 'active'", self.db_now()),
            )
            .bind(UserStatus::Removed.as_str())
            .bind(&stamp)
            .bind(source_id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != plan.remove.len() as u64 {
                return Err(StoreError::Conflict(format!(
                    "the users of source #{source_id} changed while it was being removed (a sync \
                     ran); nothing was changed, remove it again"
                )));
            }
        }
        let removals = if remove_source {
            &[][..]
        } else {
            &plan.remove[..]
        };
        for chunk in plan.remove.chunks(CHUNK) {
            changes.extend(chunk.iter().map(|u| {
                Change::new(customer, "user.remove", &u.address)
                    .before(serde_json::json!({"status": "active"}))
                    .after(serde_json::json!({"status": "removed"}))
            }));
            flush(&mut tx, self.backend, &by, &mut changes, false).await?;
        }
        for chunk in removals.chunks(CHUNK) {
            let ids: Vec<i64> = chunk.iter().filter_map(|u| u.id).collect();
            let sql = format!(
                "UPDATE users SET status = {}, removed_at = {}, updated_at = {}, removed_epoch = {} WHERE id IN ({})",
                param(self.backend, 1),
                param(self.backend, 2),
                param(self.backend, 3),
                self.db_now(),
                params(self.backend, 4, ids.len())
            );
            let mut query = query_dyn(&sql)
                .bind(UserStatus::Removed.as_str())
                .bind(&stamp)
                .bind(&stamp);
            for id in ids {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }

        if let (Some(groups), Some(source_id)) = (&plan.groups, source_id) {
            changes.extend(apply_groups(&mut tx, customer_id, source_id, groups, &stamp).await?);
        }

        lap("removed and grouped");
        // After the first successful sync, the domains the source covers reject mail to
        // unlisted addresses and protect listed mailboxes only (as Mail Assure does); once.
        if let Some(source_id) = source_id {
            let protected = sqlx::query(
                "UPDATE domains SET reject_unlisted = 1, protect_listed_only = 1, protection_applied = 1, \
                 source_id = COALESCE(source_id, $2) \
                 WHERE customer_id = $1 AND protection_applied = 0 AND EXISTS (SELECT 1 FROM users u \
                 WHERE u.customer_id = domains.customer_id AND u.source_id = $2 AND u.status = 'active' \
                 AND u.address LIKE '%@' || domains.name) RETURNING name",
            )
            .bind(customer_id)
            .bind(source_id)
            .fetch_all(&mut *tx)
            .await?;
            for row in &protected {
                let name: String = row.try_get("name")?;
                changes.push(
                    Change::new(customer, "domain.set", name)
                        .before(serde_json::json!({"reject_unlisted": false, "protect_listed_only": false}))
                        .after(serde_json::json!({"reject_unlisted": true, "protect_listed_only": true})),
                );
            }
        }

        if let (true, Some(source_id)) = (remove_source, source_id) {
            crate::sources::mark_removed(&mut tx, source_id, &stamp).await?;
            changes.push(
                Change::new(
                    customer,
                    "source.remove",
                    crate::sources::source_object(source_id),
                )
                .after(
                    serde_json::json!({"users": "removed with it", "removed": plan.remove.len()}),
                ),
            );
        }
        flush(&mut tx, self.backend, &by, &mut changes, true).await?;
        lap("audited");

        // The wait for the write lock counts: it is part of what the run took.
        stats.apply_ms = started.elapsed().as_millis() as u64;
        stats.duration_ms += stats.apply_ms;
        finish(
            &mut tx,
            &lease,
            &RunEnd {
                status,
                plan: Some(plan),
                stats,
                error,
            },
        )
        .await?;
        if let Some(source_id) = source_id {
            self.settle_source(&mut tx, source_id, lease.run_id, &settle)
                .await?;
        }
        lap("recorded");
        tx.commit().await?;
        lap("committed");
        self.checkpoint_soon();
        let written = plan.add.len()
            + mirror.map_or(0, |m| m.upserts.len())
            + mirror_rows.map_or(0, |r| r.len());
        if self.backend == Backend::Postgres && written >= ANALYZE_AFTER {
            // PostgreSQL plans the next run's lookups from table statistics, which its
            // autovacuum refreshes only a while after a large write: until then it takes
            // a first sync's million mirror rows for a hundred and scans them all. They
            // are refreshed after the commit, while the run reports; the next run of this
            // handle (and `close`) waits for that (`statistics_current`).
            let held = self.statistics.clone().lock_owned().await;
            let store = self.clone();
            let span = tracing::Span::current();
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let started = std::time::Instant::now();
                    if store.stale(written).await {
                        if let Err(e) = sqlx::query("ANALYZE users, user_aliases, mirror_objects")
                            .execute(&store.pool)
                            .await
                        {
                            tracing::debug!(error = %e, "statistics not refreshed");
                        }
                        tracing::debug!(
                            ms = started.elapsed().as_millis() as u64,
                            "statistics refreshed"
                        );
                    }
                    drop(held);
                },
                span,
            ));
        }
        Ok(ApplyCounts {
            added: plan.add.len(),
            updated: plan.update.len(),
            removed: plan.remove.len(),
        })
    }
}

impl Store {
    /// Whether `written` rows are a fifth or more of the rows PostgreSQL's statistics
    /// count in the users and mirror tables (none before their first `ANALYZE`). A delta
    /// run over a large tenant writes a few percent: its own autovacuum keeps up with that,
    /// and an `ANALYZE` of a million rows after each such run cost it a second.
    async fn stale(&self, written: usize) -> bool {
        let counted: Result<f64, sqlx::Error> = sqlx::query(
            "SELECT CAST(COALESCE(SUM(GREATEST(reltuples, 0)), 0) AS DOUBLE PRECISION) AS n \
             FROM pg_class WHERE oid IN (CAST('users' AS regclass), CAST('mirror_objects' AS regclass))",
        )
        .fetch_one(&self.pool)
        .await
        .and_then(|row| row.try_get("n"));
        match counted {
            Ok(n) => written as f64 >= n / 5.0,
            Err(e) => {
                tracing::debug!(error = %e, "table statistics not read");
                true
            }
        }
    }
}

/// Console groups kept in step with tenant groups: found by tenant group id (so a rename in
/// the tenant renames it), else adopted by name, else created; members replaced.
async fn apply_groups(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    customer_id: i64,
    source_id: i64,
    groups: &[usersync_core::PlannedGroup],
    stamp: &str,
) -> Result<Vec<Change>, StoreError> {
    let mut changes = Vec::new();
    let customer = Some(customer_id);
    let mut user_ids: HashMap<String, i64> = HashMap::new();
    for row in
        sqlx::query("SELECT id, address FROM users WHERE customer_id = $1 AND status = 'active'")
            .bind(customer_id)
            .fetch_all(&mut **tx)
            .await?
    {
        user_ids.insert(row.try_get("address")?, row.try_get("id")?);
    }
    let mut kept: Vec<i64> = Vec::new();
    let mut group_names: HashMap<i64, String> = HashMap::new();
    let mut members_of: HashMap<i64, std::collections::BTreeSet<i64>> = HashMap::new();
    for g in groups {
        let by_tenant_id = if g.mapped {
            None
        } else {
            sqlx::query(
                "SELECT id, name FROM console_groups WHERE customer_id = $1 AND source_id = $2 AND source_object_id = $3",
            )
            .bind(customer_id)
            .bind(source_id)
            .bind(&g.tenant_group_id)
            .fetch_optional(&mut **tx)
            .await?
        };
        let by_name =
            sqlx::query("SELECT id FROM console_groups WHERE customer_id = $1 AND name = $2")
                .bind(customer_id)
                .bind(&g.name)
                .fetch_optional(&mut **tx)
                .await?;
        let id: i64 = match (by_tenant_id, by_name) {
            (Some(row), None) => {
                // Renamed in the tenant: the console group follows.
                let id: i64 = row.try_get("id")?;
                let old: String = row.try_get("name")?;
                changes.push(
                    Change::new(customer, "group.rename", &g.name)
                        .before(serde_json::json!({"name": old}))
                        .after(serde_json::json!({"name": g.name})),
                );
                sqlx::query("UPDATE console_groups SET name = $1 WHERE id = $2")
                    .bind(&g.name)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                id
            }
            (Some(row), Some(_)) => row.try_get("id")?,
            (None, Some(row)) => row.try_get("id")?,
            (None, None) => {
                changes.push(
                    Change::new(customer, "group.add", &g.name)
                        .after(serde_json::json!({"tenant_group": g.tenant_group_name})),
                );
                sqlx::query(
                    "INSERT INTO console_groups (customer_id, name, created_at, source_id, source_object_id) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(customer_id)
                .bind(&g.name)
                .bind(stamp)
                .bind(source_id)
                .bind((!g.mapped).then_some(g.tenant_group_id.as_str()))
                .fetch_one(&mut **tx)
                .await?
                .try_get("id")?
            }
        };
        kept.push(id);
        group_names.insert(id, g.name.clone());
        // Two tenant groups mapped onto one console group share it: members are the union.
        members_of.entry(id).or_default().extend(
            g.members
                .iter()
                .filter_map(|a| user_ids.get(a.as_str()).copied()),
        );
    }
    let address_of: HashMap<i64, &String> = user_ids.iter().map(|(a, id)| (*id, a)).collect();
    for (group_id, members) in &members_of {
        let current: std::collections::BTreeSet<i64> =
            sqlx::query("SELECT user_id FROM group_members WHERE group_id = $1")
                .bind(group_id)
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|r| r.try_get("user_id"))
                .collect::<Result<_, _>>()?;
        if &current == members {
            continue;
        }
        let names = |ids: Vec<&i64>| -> Vec<String> {
            let mut v: Vec<String> = ids
                .into_iter()
                .map(|id| {
                    address_of
                        .get(id)
                        .map_or_else(|| format!("user {id}"), |a| a.to_string())
                })
                .collect();
            v.sort();
            v
        };
        changes.push(
            Change::new(customer, "group.members", &group_names[group_id])
                .before(serde_json::json!({"left": names(current.difference(members).collect())}))
                .after(
                    serde_json::json!({"joined": names(members.difference(&current).collect())}),
                ),
        );
        sqlx::query("DELETE FROM group_members WHERE group_id = $1")
            .bind(group_id)
            .execute(&mut **tx)
            .await?;
        for user_id in members {
            sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)")
                .bind(group_id)
                .bind(user_id)
                .execute(&mut **tx)
                .await?;
        }
    }
    // Groups this source made from tenant groups that it no longer plans: emptied, and
    // deleted when nobody has them as their group.
    let stale = sqlx::query(
        "SELECT id, name FROM console_groups WHERE customer_id = $1 AND source_id = $2 AND source_object_id IS NOT NULL",
    )
    .bind(customer_id)
    .bind(source_id)
    .fetch_all(&mut **tx)
    .await?;
    for row in stale {
        let id: i64 = row.try_get("id")?;
        if kept.contains(&id) {
            continue;
        }
        sqlx::query("DELETE FROM group_members WHERE group_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let deleted = sqlx::query(
            "DELETE FROM console_groups WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM users WHERE group_id = $1)",
        )
        .bind(id)
        .execute(&mut **tx)
        .await?;
        let name: String = row.try_get("name")?;
        changes.push(if deleted.rows_affected() == 1 {
            Change::new(customer, "group.remove", &name)
                .after(serde_json::json!({"why": "the tenant group is no longer synced"}))
        } else {
            Change::new(customer, "group.update", &name).after(
                serde_json::json!({"members": [], "why": "the tenant group is no longer synced; kept as the group of some users"}),
            )
        });
    }
    Ok(changes)
}

/// Writes the changes held so far to the audit log when there are many of them (or when
/// `all`), and lets go of them.
/// Creates the console groups of these names that `groups` lacks (filters name their
/// destination), each with its audit entry.
pub(crate) async fn ensure_groups<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    customer_id: i64,
    stamp: &str,
    groups: &mut HashMap<String, i64>,
    names: impl Iterator<Item = &'a String>,
    changes: &mut Vec<Change>,
) -> Result<(), StoreError> {
    for name in names {
        if !groups.contains_key(name) {
            let row = sqlx::query(
                "INSERT INTO console_groups (customer_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(customer_id)
            .bind(name)
            .bind(stamp)
            .fetch_one(&mut **tx)
            .await?;
            groups.insert(name.clone(), row.try_get("id")?);
            changes.push(Change::new(Some(customer_id), "group.add", name));
        }
    }
    Ok(())
}

/// Inserts new users (`adds`, in address order: each lands beside the last in the index of
/// addresses), many rows per statement; returns their row ids in the same order. Their
/// audit entries are written as they go.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_users(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    customer_id: i64,
    stamp: &str,
    groups: &HashMap<String, i64>,
    adds: &[&DirectoryUser],
    by: &By<'_>,
    changes: &mut Vec<Change>,
    mut entries: Option<&mut HashMap<String, i64>>,
) -> Result<Vec<i64>, StoreError> {
    let customer = Some(customer_id);
    let group_id = |name: &str| groups.get(name).copied().unwrap_or_default();
    let mut out = Vec::with_capacity(adds.len());
    let users = Bulk {
        backend,
        table: "users",
        columns: &[
            "customer_id",
            "address",
            "display_name",
            "given_name",
            "surname",
            "mailbox_type",
            "billable",
            "group_id",
            "source_id",
            "source_object_id",
            "status",
            "created_at",
            "updated_at",
            "manager",
            "services",
        ],
        tail: "RETURNING id, address",
    };
    for chunk in adds.chunks(users.rows_per_statement()) {
        let query = users.query(chunk.iter().map(|u| {
            vec![
                Cell::from(customer_id),
                Cell::from(u.address.as_str()),
                Cell::from(u.display_name.as_str()),
                Cell::from(u.given_name.as_deref()),
                Cell::from(u.surname.as_deref()),
                Cell::from(u.mailbox_type.as_str()),
                Cell::from(i64::from(u.billable)),
                Cell::from(group_id(&u.group)),
                Cell::from(u.source_id),
                Cell::from(u.source_object_id.as_deref()),
                Cell::from(UserStatus::Active.as_str()),
                Cell::from(stamp),
                Cell::from(stamp),
                Cell::Owned(u.manager.as_ref().map(|m| m.to_string())),
                Cell::Owned(
                    u.services
                        .as_ref()
                        .and_then(|v| serde_json::to_string(v).ok()),
                ),
            ]
        }));
        let rows = query.fetch_all(&mut **tx).await.map_err(|e| {
            if StoreError::is_unique_violation(&e) {
                StoreError::Conflict(
                    "an address of the plan was taken while the sync ran; run it again".into(),
                )
            } else {
                e.into()
            }
        })?;
        let ids: HashMap<String, i64> = rows
            .iter()
            .map(|r| Ok((r.try_get("address")?, r.try_get("id")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        for u in chunk {
            let id = ids
                .get(u.address.as_str())
                .copied()
                .ok_or_else(|| StoreError::Corrupt(format!("no id came back for {}", u.address)))?;
            out.push(id);
        }
        changes.extend(
            chunk
                .iter()
                .map(|u| Change::new(customer, "user.add", &u.address).after(user_summary(u))),
        );
        flush_keeping(tx, backend, by, changes, false, entries.as_deref_mut()).await?;
    }

    Ok(out)
}

/// Inserts aliases (user id, address), many rows per statement.
pub(crate) async fn insert_aliases(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    aliases: &[(i64, &EmailAddress)],
) -> Result<(), StoreError> {
    let rows = Bulk {
        backend,
        table: "user_aliases",
        columns: &["user_id", "address"],
        tail: "",
    };
    for chunk in aliases.chunks(rows.rows_per_statement()) {
        rows.query(
            chunk
                .iter()
                .map(|(id, address)| vec![Cell::from(*id), Cell::from(address.as_str())]),
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn flush(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    by: &By<'_>,
    changes: &mut Vec<Change>,
    all: bool,
) -> Result<(), StoreError> {
    flush_keeping(tx, backend, by, changes, all, None).await
}

/// [`flush`], keeping the ids of `user.add` entries in `entries` when given.
async fn flush_keeping(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    by: &By<'_>,
    changes: &mut Vec<Change>,
    all: bool,
    entries: Option<&mut HashMap<String, i64>>,
) -> Result<(), StoreError> {
    if all || changes.len() >= 2000 {
        match entries {
            Some(entries) => record_adds(tx, backend, by, changes, entries).await?,
            None => record(tx, backend, by, changes).await?,
        }
        changes.clear();
    }
    Ok(())
}

/// A user as the audit log shows it when it is added.
pub(crate) fn user_summary(u: &DirectoryUser) -> serde_json::Value {
    serde_json::json!({
        "display_name": u.display_name,
        "type": u.mailbox_type,
        "billable": u.billable,
        "group": u.group,
        "aliases": u.aliases,
        "source_id": u.source_id,
    })
}

fn json_of(v: &usersync_core::plan::FieldValue) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use crate::{Backend, values_clause};

    #[test]
    fn values_clause_numbers_parameters_row_by_row() {
        assert_eq!(
            values_clause(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values_clause(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
