//! Bulk inserts: many rows in one multi-row `VALUES` statement, values bound.
//!
//! Measured on PostgreSQL with a first sync of 100,000 users: sending the rows instead as
//! one JSON parameter unpacked by the server (`jsonb_array_elements`) saved a tenth on
//! the users and lost as much on the mirror's large objects, so both databases take bound
//! values. (`COPY` is not reachable through sqlx's `Any` driver, and cannot return ids.)

use crate::{Backend, query_dyn, values_clause};

/// One value of a row.
#[derive(Debug, Clone)]
pub(crate) enum Cell<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Owned(Option<String>),
}

impl From<i64> for Cell<'_> {
    fn from(v: i64) -> Self {
        Cell::Int(Some(v))
    }
}

impl From<Option<i64>> for Cell<'_> {
    fn from(v: Option<i64>) -> Self {
        Cell::Int(v)
    }
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(v: &'a str) -> Self {
        Cell::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Cell<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Cell::Text(v)
    }
}

/// An `INSERT INTO table (columns) VALUES … tail` for many rows at once.
pub(crate) struct Bulk {
    pub backend: Backend,
    pub table: &'static str,
    pub columns: &'static [&'static str],
    /// What follows the rows: `ON CONFLICT …`, `RETURNING …`, or nothing.
    pub tail: &'static str,
}

impl Bulk {
    /// Rows per statement: under SQLite's 32,766 and PostgreSQL's 65,535 parameters, and
    /// few enough that the statement's text stays small.
    pub fn rows_per_statement(&self) -> usize {
        Bulk::rows_for(self.backend, self.columns.len())
    }

    /// Rows of `columns` values per statement on `backend` (see `rows_per_statement`).
    pub fn rows_for(backend: Backend, columns: usize) -> usize {
        let parameters = match backend {
            Backend::Sqlite => 32_000,
            Backend::Postgres => 65_000,
        };
        (parameters / columns).min(4000)
    }

    /// The statement for `rows` (each as long as `columns`), values bound.
    pub fn query<'a>(
        &self,
        rows: impl ExactSizeIterator<Item = Vec<Cell<'a>>>,
    ) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {} {}",
            self.table,
            self.columns.join(", "),
            values_clause(self.backend, rows.len(), self.columns.len()),
            self.tail
        );
        bind_rows(query_dyn(&sql), self.columns.len(), rows)
    }
}

/// `query` with the values of `rows` (each `columns` long) bound in order.
pub(crate) fn bind_rows<'a>(
    mut query: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>,
    columns: usize,
    rows: impl Iterator<Item = Vec<Cell<'a>>>,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    for row in rows {
        debug_assert_eq!(row.len(), columns);
        for cell in row {
            query = match cell {
                Cell::Int(v) => query.bind(v),
                Cell::Text(v) => query.bind(v.map(str::to_string)),
                Cell::Owned(v) => query.bind(v),
            };
        }
    }
    query
}
