//! Delta rounds: `/users/delta` and `/groups/delta` to their `@odata.deltaLink`, with
//! `@removed` entries and split `members@delta` lists merged.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use url::Url;

use super::{GraphClient, Progress};
use crate::error::{GraphError, url_without_query};
use crate::model::{
    Delta, DeltaEntry, DeltaItem, GROUP_PROPERTIES, Group, HasId, USER_PROPERTIES, User,
};

/// The page size asked of delta rounds (`Prefer: odata.maxpagesize`).
const DELTA_PAGE_SIZE: &str = "odata.maxpagesize=999";

impl GraphClient {
    /// Fails with [`GraphError::DeltaExpired`] when Graph no longer accepts `from`.
    /// A users delta round. Without `from`: a full round
    /// (`GET /v1.0/users/delta?$select=..`); with `from` (the `delta_link` of
    /// a previous round): the changes since. Reads every page.
    /// An empty `select` means [`USER_PROPERTIES`].
    pub async fn users_delta(
        &self,
        from: Option<&str>,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Delta<User>, GraphError> {
        let select = if select.is_empty() {
            USER_PROPERTIES
        } else {
            select
        };
        self.delta("users", from, select, progress).await
    }

    /// A groups delta round, like [`GraphClient::users_delta`]. Include
    /// `members` in `select` to receive `members@delta`. When Graph splits a
    /// group's member changes over several entries, they are merged into one
    /// [`DeltaItem::Changed`]. An empty `select` means [`GROUP_PROPERTIES`]
    /// plus `members`.
    pub async fn groups_delta(
        &self,
        from: Option<&str>,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Delta<Group>, GraphError> {
        let default: Vec<&str> = GROUP_PROPERTIES
            .iter()
            .copied()
            .chain(std::iter::once("members"))
            .collect();
        let select = if select.is_empty() {
            &default[..]
        } else {
            select
        };
        let delta = self
            .delta::<Group>("groups", from, select, progress)
            .await?;
        Ok(merge_group_delta(delta))
    }

    /// A delta round of `collection` (`users` or `groups`) as raw JSON objects, like
    /// [`GraphClient::users_delta`]. In an incremental round an object carries only the
    /// properties that changed, and a property cleared is present as `null`: raw objects
    /// keep that difference, which typed ones lose. Split `members@delta` lists are not
    /// merged here.
    pub async fn delta_raw(
        &self,
        collection: &str,
        from: Option<&str>,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Delta<serde_json::Map<String, serde_json::Value>>, GraphError> {
        self.delta(collection, from, select, progress).await
    }

    /// A delta link that starts now (`$deltatoken=latest`): the next round from it
    /// returns what changes after this call. Reads no objects; taken before a full read
    /// of the collection, so no change made during that read is missed.
    pub async fn delta_latest(
        &self,
        collection: &str,
        select: &[&str],
    ) -> Result<String, GraphError> {
        let start = self.v1_url(&format!(
            "/{collection}/delta?$select={}&$deltatoken=latest",
            select.join(",")
        ))?;
        let start_for_error = url_without_query(&start);
        let (_, link) = self
            .get_pages::<serde_json::Value>(start, &|_| {}, &[])
            .await?;
        link.ok_or_else(|| GraphError::Malformed {
            url: start_for_error,
            detail: "a $deltatoken=latest answer has no @odata.deltaLink".into(),
        })
    }

    async fn delta<T: DeserializeOwned + HasId>(
        &self,
        collection: &str,
        from: Option<&str>,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Delta<T>, GraphError> {
        let start = match from {
            Some(link) => {
                let url = Url::parse(link).map_err(|e| GraphError::Config {
                    field: "delta_link",
                    problem: format!("is not an absolute URL: {e}"),
                })?;
                self.check_origin(&url, "the delta link")?;
                url
            }
            None => self.v1_url(&format!("/{collection}/delta?$select={}", select.join(",")))?,
        };
        let start_for_error = url_without_query(&start);
        // Delta pages hold 100 objects unless asked for more: a round of a thousand changes
        // is then one or two requests, not ten.
        let (entries, delta_link) = self
            .get_pages::<DeltaEntry<T>>(start, progress, &[("prefer", DELTA_PAGE_SIZE)])
            .await?;
        let delta_link = delta_link.ok_or_else(|| GraphError::Malformed {
            url: start_for_error,
            detail: "the last delta page has neither @odata.nextLink nor @odata.deltaLink".into(),
        })?;
        let items = entries
            .into_iter()
            .map(|e| match e.removed {
                Some(r) => DeltaItem::Removed {
                    id: e.item.object_id().to_owned(),
                    reason: r.reason,
                },
                None => DeltaItem::Changed(e.item),
            })
            .collect();
        Ok(Delta { items, delta_link })
    }
}

/// Merges repeated `Changed` entries of one group (Graph splits large
/// `members@delta` lists) into the first one.
fn merge_group_delta(delta: Delta<Group>) -> Delta<Group> {
    let mut items: Vec<DeltaItem<Group>> = Vec::with_capacity(delta.items.len());
    let mut open: HashMap<String, usize> = HashMap::new();
    for item in delta.items {
        match item {
            DeltaItem::Changed(g) => match open.get(&g.id) {
                Some(&i) => {
                    if let DeltaItem::Changed(prev) = &mut items[i] {
                        merge_group(prev, g);
                    }
                }
                None => {
                    open.insert(g.id.clone(), items.len());
                    items.push(DeltaItem::Changed(g));
                }
            },
            DeltaItem::Removed { id, reason } => {
                open.remove(&id);
                items.push(DeltaItem::Removed { id, reason });
            }
        }
    }
    Delta {
        items,
        delta_link: delta.delta_link,
    }
}

fn merge_group(into: &mut Group, more: Group) {
    fn take<T>(a: &mut Option<T>, b: Option<T>) {
        if b.is_some() {
            *a = b;
        }
    }
    take(&mut into.display_name, more.display_name);
    take(&mut into.mail, more.mail);
    take(&mut into.mail_enabled, more.mail_enabled);
    take(&mut into.security_enabled, more.security_enabled);
    take(&mut into.mail_nickname, more.mail_nickname);
    if !more.group_types.is_empty() {
        into.group_types = more.group_types;
    }
    if !more.proxy_addresses.is_empty() {
        into.proxy_addresses = more.proxy_addresses;
    }
    into.members_delta.extend(more.members_delta);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_merge() {
        let g = |id: &str, m: &str| Group {
            id: id.into(),
            members_delta: vec![crate::model::MemberDelta {
                id: m.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = merge_group_delta(Delta {
            items: vec![
                DeltaItem::Changed(g("a", "1")),
                DeltaItem::Changed(g("b", "2")),
                DeltaItem::Changed(g("a", "3")),
            ],
            delta_link: "x".into(),
        });
        assert_eq!(d.items.len(), 2);
        assert_eq!(d.items[0].changed().unwrap().members_delta.len(), 2);
    }
}
