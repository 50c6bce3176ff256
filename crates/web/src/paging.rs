//! Cursor paging of lists: `?limit=N&cursor=C` in, `{"items": [...], "next_cursor": C}`
//! out (no `next_cursor` on the last page). A cursor is opaque to clients.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiError;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// How many items a page holds: 1 to 1000, 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the page before; none for the first page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::invalid(
                Some("limit"),
                format!("{n} is out of range; give 1 to {MAX_LIMIT}"),
            )),
        }
    }

    /// The id the cursor of an id-ordered list carries.
    pub fn after_id(&self) -> Result<Option<i64>, ApiError> {
        self.after()?
            .map(|text| {
                text.parse::<i64>().map_err(|_| {
                    ApiError::invalid(
                        Some("cursor"),
                        "not a cursor of this list; give next_cursor of the page before",
                    )
                })
            })
            .transpose()
    }

    /// The key the cursor carries.
    pub fn after(&self) -> Result<Option<String>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            Some("cursor"),
                            "not a cursor of this list; give next_cursor of the page before",
                        )
                    })
            })
            .transpose()
    }
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts (`?cursor=`); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page whose next one starts after `last` when `more` follow.
    pub fn new(items: Vec<T>, more: bool, last: impl Fn(&T) -> String) -> Page<T> {
        let next_cursor = if more {
            items.last().map(|t| URL_SAFE_NO_PAD.encode(last(t)))
        } else {
            None
        };
        Page { items, next_cursor }
    }

    /// A page of `limit` items from a list read with one more than `limit`, whose
    /// presence says that more follow.
    pub fn of_one_more(mut items: Vec<T>, limit: i64, last: impl Fn(&T) -> String) -> Page<T> {
        let more = items.len() as i64 > limit;
        items.truncate(limit.max(0) as usize);
        Page::new(items, more, last)
    }

    /// A page of a list held whole, ordered by `key` (compared as text).
    pub fn of_sorted(
        all: Vec<T>,
        params: &PageParams,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>, ApiError> {
        let limit = params.limit()? as usize;
        let after = params.after()?;
        let mut rest: Vec<T> = match &after {
            Some(a) => all.into_iter().filter(|t| key(t) > *a).collect(),
            None => all,
        };
        let more = rest.len() > limit;
        rest.truncate(limit);
        Ok(Page::new(rest, more, key))
    }
}
