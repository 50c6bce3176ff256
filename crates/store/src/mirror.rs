//! Source mirrors: per source, the tenant objects as the last applied run read them and
//! the source's cursor (its delta links and what it read), so that the next run reads only
//! what changed. The store keeps objects as opaque text keyed by kind and id; what they
//! hold is the source's business. A mirror is written in the transaction that applies the
//! plan made from it (never ahead of the directory, never behind it).

use sqlx::Row;

use crate::bulk::{Bulk, Cell};
use crate::{Backend, Store, StoreError, in_json, now, param, query_dyn};

/// One mirrored object: a user or a group of the source, as the source's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorObject {
    /// `user` or `group` (a source may use other kinds).
    pub kind: String,
    /// The source's id of the object.
    pub id: String,
    pub data: String,
    /// The source has more to read about it (a mailbox type not known yet): found by
    /// [`Store::mirror_pending`] without reading the rest.
    pub pending: bool,
}

/// A source's mirror as stored.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub source_id: i64,
    /// Grows with each write; a write names the generation it was made from.
    pub generation: i64,
    /// The source's own state: delta links, what was read, for which endpoint.
    pub cursor: serde_json::Value,
    /// When the source was last read whole (seconds on the database's clock).
    pub full_at: i64,
    /// Seconds since then, on the database's clock.
    pub full_age_secs: i64,
    pub objects: Vec<MirrorObject>,
    /// What the plan applied with this mirror depended on; `None`: the next plan is whole.
    pub planned: Option<MirrorPlan>,
}

/// What the plan applied with a mirror depended on, so that the next run can plan only
/// what changed: see `usersync_core::scope`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MirrorPlan {
    /// `usersync_core::scope::basis` of the plan's context.
    pub basis: String,
    /// Objects the plan left with an address conflict, planned again by the next run.
    pub unsettled: Vec<String>,
}

/// What a run changes in its source's mirror; applied with the run's plan.
#[derive(Debug, Clone, Default)]
pub struct MirrorWrite {
    pub source_id: i64,
    /// The generation the run read; `None` when there was no mirror.
    pub base: Option<i64>,
    pub cursor: serde_json::Value,
    /// The run read the whole source (`full_at` becomes now).
    pub full: bool,
    /// Every object of the source goes first (a mirror the source could not trust).
    pub replace: bool,
    pub upserts: Vec<MirrorObject>,
    /// `(kind, id)` of objects gone from the source.
    pub deletes: Vec<(String, String)>,
    /// What the plan applied with this write depended on; `None` makes the next plan whole.
    pub planned: Option<MirrorPlan>,
}

/// Objects of a mirror write made as they are written, a statement's worth at a time, so
/// that a whole read's objects are never all held as text at once (at 1,000,000 users that
/// text was most of a gigabyte).
pub trait MirrorRows: Send + Sync + std::fmt::Debug {
    /// How many objects there are.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The objects of `range` still to be written, in key order: those written already
    /// in the transaction (see [`crate::OpenApply::mirror`]) may be left out.
    fn rows(&self, range: std::ops::Range<usize>) -> Result<Vec<MirrorObject>, String>;
}

impl MirrorWrite {
    /// Nothing but the cursor changes.
    pub fn is_cursor_only(&self) -> bool {
        !self.replace && self.upserts.is_empty() && self.deletes.is_empty()
    }
}

impl Store {
    /// The mirror of a source, or `None` before its first applied run.
    pub async fn mirror(&self, source_id: i64) -> Result<Option<Mirror>, StoreError> {
        let Some(mut mirror) = self.mirror_head(source_id).await? else {
            return Ok(None);
        };
        mirror.objects = self.mirror_objects(source_id, None, None).await?;
        Ok(Some(mirror))
    }

    /// The mirror of a source without its objects (read them with
    /// [`Store::mirror_objects`]), or `None` before its first applied run.
    pub async fn mirror_head(&self, source_id: i64) -> Result<Option<Mirror>, StoreError> {
        let head = query_dyn(&format!(
            "SELECT generation, cursor, full_at, {} - full_at AS age, planned FROM source_mirrors WHERE source_id = $1",
            self.db_now()
        ))
        .bind(source_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(head) = head else { return Ok(None) };
        let cursor: String = head.try_get("cursor")?;
        let cursor = serde_json::from_str(&cursor)
            .map_err(|e| StoreError::Corrupt(format!("source_mirrors.cursor: {e}")))?;
        // One that does not read is as good as none: the next plan is whole.
        let planned: Option<String> = head.try_get("planned")?;
        let planned = planned.and_then(|p| serde_json::from_str(&p).ok());
        Ok(Some(Mirror {
            source_id,
            generation: head.try_get("generation")?,
            cursor,
            full_at: head.try_get("full_at")?,
            full_age_secs: head.try_get("age")?,
            objects: Vec::new(),
            planned,
        }))
    }

    /// Mirrored objects of a source: of one kind or all, of some ids or all.
    pub async fn mirror_objects(
        &self,
        source_id: i64,
        kind: Option<&str>,
        ids: Option<&[String]>,
    ) -> Result<Vec<MirrorObject>, StoreError> {
        let b = self.backend;
        let p = |n: usize| param(b, n);
        let mut sql = format!(
            "SELECT kind, object_id, data, pending FROM mirror_objects WHERE source_id = {}",
            p(1)
        );
        if kind.is_some() {
            sql.push_str(&format!(" AND kind = {}", p(2)));
        }
        if ids.is_some() {
            let n = if kind.is_some() { 3 } else { 2 };
            sql.push_str(&format!(" AND object_id IN ({})", in_json(b, n, false)));
        }
        if ids.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        let mut query = query_dyn(&sql).bind(source_id);
        if let Some(kind) = kind {
            query = query.bind(kind);
        }
        if let Some(ids) = ids {
            query = query.bind(serde_json::Value::from(ids.to_vec()).to_string());
        }
        let mut objects = Vec::new();
        for row in query.fetch_all(&self.pool).await? {
            objects.push(object_from(&row)?);
        }
        Ok(objects)
    }

    /// Every mirrored object of a source, as the database sends them: a reader that takes
    /// them in as they come never holds the text of a whole large mirror at once (1.3 GB
    /// at 1,000,000 users).
    pub fn mirror_stream(
        &self,
        source_id: i64,
    ) -> impl futures_util::Stream<Item = Result<MirrorObject, StoreError>> + Send + '_ {
        use futures_util::StreamExt;
        query_dyn("SELECT kind, object_id, data, pending FROM mirror_objects WHERE source_id = $1")
            .bind(source_id)
            .fetch(&self.pool)
            .map(|row| object_from(&row?))
    }

    /// At most `limit` objects of a kind that are pending, in id order.
    pub async fn mirror_pending(
        &self,
        source_id: i64,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<MirrorObject>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, object_id, data, pending FROM mirror_objects \
             WHERE source_id = $1 AND kind = $2 AND pending = 1 ORDER BY object_id LIMIT $3",
        )
        .bind(source_id)
        .bind(kind)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(object_from).collect()
    }

    /// How many objects of a kind are pending.
    pub async fn mirror_pending_count(
        &self,
        source_id: i64,
        kind: &str,
    ) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM mirror_objects WHERE source_id = $1 AND kind = $2 AND pending = 1",
        )
        .bind(source_id)
        .bind(kind)
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n as u64)
    }

    /// Writes a mirror change on its own (outside a run): repairs, and tests that make a
    /// mirror differ from its tenant.
    pub async fn write_mirror(&self, write: &MirrorWrite) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        write_mirror(&mut tx, self.backend, &self.db_now(), write, None).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn object_from(row: &sqlx::any::AnyRow) -> Result<MirrorObject, StoreError> {
    let pending: i64 = row.try_get("pending")?;
    Ok(MirrorObject {
        kind: row.try_get("kind")?,
        id: row.try_get("object_id")?,
        data: row.try_get("data")?,
        pending: pending != 0,
    })
}

/// Rows per statement: SQLite binds at most 32,766 parameters, 4 per row.
const ROWS: usize = 2000;

/// Writes `write` in `tx`: refused with a conflict when another run wrote the mirror
/// since `write.base` was read.
pub(crate) async fn write_mirror(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    db_now: &str,
    write: &MirrorWrite,
    more: Option<&dyn MirrorRows>,
) -> Result<(), StoreError> {
    let cursor = write.cursor.to_string();
    let planned = write
        .planned
        .as_ref()
        .map(|p| serde_json::to_string(p).unwrap_or_default());
    let stamp = now();
    let written = match write.base {
        Some(generation) => query_dyn(&format!(
            "UPDATE source_mirrors SET generation = generation + 1, cursor = $1, updated_at = $2, \
                 full_at = CASE WHEN $3 = 1 THEN {db_now} ELSE full_at END, planned = $6 \
                 WHERE source_id = $4 AND generation = $5"
        ))
        .bind(&cursor)
        .bind(&stamp)
        .bind(i64::from(write.full))
        .bind(write.source_id)
        .bind(generation)
        .bind(&planned)
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1,
        None => {
            let inserted = query_dyn(&format!(
                "INSERT INTO source_mirrors (source_id, generation, cursor, full_at, updated_at, planned) \
                 VALUES ($1, 1, $2, CASE WHEN $3 = 1 THEN {db_now} ELSE 0 END, $4, $5)"
            ))
            .bind(write.source_id)
            .bind(&cursor)
            .bind(i64::from(write.full))
            .bind(&stamp)
            .bind(&planned)
            .execute(&mut **tx)
            .await;
            match inserted {
                Ok(_) => true,
                Err(e) if StoreError::is_unique_violation(&e) => false,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if !written {
        return Err(StoreError::Conflict(format!(
            "another run of source #{} saved what it read first; nothing of this run was applied, run it again",
            write.source_id
        )));
    }
    if write.replace {
        sqlx::query("DELETE FROM mirror_objects WHERE source_id = $1")
            .bind(write.source_id)
            .execute(&mut **tx)
            .await?;
    }
    for chunk in write.deletes.chunks(ROWS) {
        // Keys as (kind, id) rows of one statement; both databases compare row values.
        // Anonymous parameters on SQLite (see `values_clause`).
        let (first, pairs): (&str, Vec<String>) = match backend {
            Backend::Sqlite => ("?", vec!["(?, ?)".to_string(); chunk.len()]),
            Backend::Postgres => (
                "$1",
                (0..chunk.len())
                    .map(|i| format!("(${}, ${})", 2 * i + 2, 2 * i + 3))
                    .collect(),
            ),
        };
        let sql = format!(
            "DELETE FROM mirror_objects WHERE source_id = {first} AND (kind, object_id) IN (VALUES {})",
            pairs.join(", ")
        );
        let mut query = query_dyn(&sql).bind(write.source_id);
        for (kind, id) in chunk {
            query = query.bind(kind.as_str()).bind(id.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    // In key order: each insert lands beside the last (a first sync writes every object).
    let mut upserts: Vec<&MirrorObject> = write.upserts.iter().collect();
    upserts.sort_unstable_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
    let objects = objects_bulk(backend);
    let per = objects.rows_per_statement();
    for chunk in upserts.chunks(per) {
        objects
            .query(chunk.iter().map(|o| {
                vec![
                    Cell::from(write.source_id),
                    Cell::from(o.kind.as_str()),
                    Cell::from(o.id.as_str()),
                    Cell::from(o.data.as_str()),
                    Cell::from(i64::from(o.pending)),
                ]
            }))
            .execute(&mut **tx)
            .await?;
    }
    let Some(more) = more else { return Ok(()) };
    // Each statement's objects are made while the one before runs (in SQLite's thread, or
    // PostgreSQL's process). A range may give fewer objects than it spans (those written
    // already): they are gathered up to a whole statement, so that each is prepared once.
    let total = more.len();
    let make = |from: usize| -> Result<(Vec<MirrorObject>, usize), StoreError> {
        let mut rows = Vec::new();
        let mut at = from;
        while rows.len() < per && at < total {
            let end = (at + per - rows.len()).min(total);
            rows.extend(more.rows(at..end).map_err(|e| {
                StoreError::Corrupt(format!("the source mirror could not be written: {e}"))
            })?);
            at = end;
        }
        Ok((rows, at))
    };
    let (mut rows, mut from) = make(0)?;
    while !rows.is_empty() {
        let statement = objects_statement(&objects, write.source_id, rows).execute(&mut **tx);
        let (done, made) = tokio::join!(statement, async { make(from) });
        done?;
        (rows, from) = made?;
    }
    Ok(())
}

/// The statement that writes mirror objects: new ones, or over those of the same key.
fn objects_bulk(backend: Backend) -> Bulk {
    Bulk {
        backend,
        table: "mirror_objects",
        columns: &["source_id", "kind", "object_id", "data", "pending"],
        tail: "ON CONFLICT (source_id, kind, object_id) DO UPDATE SET data = excluded.data, \
               pending = excluded.pending",
    }
}

fn objects_statement(
    objects: &Bulk,
    source_id: i64,
    rows: Vec<MirrorObject>,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    objects.query(rows.into_iter().map(|o| {
        vec![
            Cell::from(source_id),
            Cell::Owned(Some(o.kind)),
            Cell::Owned(Some(o.id)),
            Cell::Owned(Some(o.data)),
            Cell::from(i64::from(o.pending)),
        ]
    }))
}

/// Writes objects of a source's mirror ahead of its head (see [`crate::OpenApply::mirror`]),
/// in key order, a statement's worth at a time.
pub(crate) async fn write_objects(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    source_id: i64,
    mut rows: Vec<MirrorObject>,
) -> Result<(), StoreError> {
    rows.sort_unstable_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
    let objects = objects_bulk(backend);
    let per = objects.rows_per_statement();
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(per));
        objects_statement(&objects, source_id, rows)
            .execute(&mut **tx)
            .await?;
        rows = rest;
    }
    Ok(())
}

/// A removed source's mirror goes with it.
pub(crate) async fn drop_mirror(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    source_id: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mirror_objects WHERE source_id = $1")
        .bind(source_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM source_mirrors WHERE source_id = $1")
        .bind(source_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
