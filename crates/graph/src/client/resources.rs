//! The typed list calls: users, groups and members, domains, the organization, licences.

use reqwest::Method;

use crate::error::{GraphError, url_without_query};
use crate::model::{
    DirectoryObject, Domain, GROUP_PROPERTIES, Group, Organization, SubscribedSku, USER_PROPERTIES,
    User,
};

use super::{GraphClient, Progress, encode_path_segment};

impl GraphClient {
    /// All users: `GET /v1.0/users?$select=..&$top=999`, every page.
    /// An empty `select` means [`USER_PROPERTIES`].
    pub async fn list_users(
        &self,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Vec<User>, GraphError> {
        self.get_all(&users_path(select, ""), progress).await
    }

    /// All users with their manager's id inline (`$expand=manager($select=id)`, in
    /// [`User::manager`]): managers at no extra request per user.
    pub async fn list_users_with_manager(
        &self,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Vec<User>, GraphError> {
        self.get_all(
            &users_path(select, "&$expand=manager($select=id)"),
            progress,
        )
        .await
    }

    /// Every user, a page at a time: `each` gets each page's users as it arrives (with
    /// `with_manager`, each user's manager id inline, as [`GraphClient::list_users_with_manager`]);
    /// the next page is asked for once the future it returns is done.
    pub async fn each_user_page<F: std::future::Future<Output = ()>>(
        &self,
        select: &[&str],
        with_manager: bool,
        each: impl FnMut(Vec<User>) -> F,
    ) -> Result<(), GraphError> {
        let extra = if with_manager {
            "&$expand=manager($select=id)"
        } else {
            ""
        };
        let url = self.v1_url(&users_path(select, extra))?;
        self.for_each_page(url, &[], each).await.map(|_| ())
    }

    /// All groups: `GET /v1.0/groups?$select=..&$top=999`, every page.
    /// An empty `select` means [`GROUP_PROPERTIES`].
    pub async fn list_groups(
        &self,
        select: &[&str],
        progress: Progress<'_>,
    ) -> Result<Vec<Group>, GraphError> {
        let select = if select.is_empty() {
            GROUP_PROPERTIES
        } else {
            select
        };
        self.get_all(
            &format!("/groups?$select={}&$top=999", select.join(",")),
            progress,
        )
        .await
    }

    /// Direct (`members`) or nested (`transitiveMembers`) members of a group,
    /// `$select=id` (the `@odata.type` is always returned), every page.
    pub async fn group_members(
        &self,
        group_id: &str,
        transitive: bool,
    ) -> Result<Vec<DirectoryObject>, GraphError> {
        let rel = if transitive {
            "transitiveMembers"
        } else {
            "members"
        };
        self.get_all(
            &format!(
                "/groups/{}/{rel}?$select=id&$top=999",
                encode_path_segment(group_id)
            ),
            &|_| {},
        )
        .await
    }

    /// How many users the tenant has: `GET /v1.0/users/$count` with `ConsistencyLevel:
    /// eventual` (an advanced query). One cheap request; eventually consistent, so an
    /// estimate, e.g. for a progress bar.
    pub async fn count_users(&self) -> Result<u64, GraphError> {
        let url = self.v1_url("/users/$count")?;
        let resp = self
            .graph_request_with(Method::GET, &url, None, &[("ConsistencyLevel", "eventual")])
            .await?;
        std::str::from_utf8(&resp.body)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| GraphError::Malformed {
                url: url_without_query(&url),
                detail: "the answer to $count is not a number".into(),
            })
    }

    /// The tenant's domains: `GET /v1.0/domains`.
    pub async fn list_domains(&self) -> Result<Vec<Domain>, GraphError> {
        self.get_all("/domains", &|_| {}).await
    }

    /// The tenant itself: `GET /v1.0/organization`.
    pub async fn organization(&self) -> Result<Organization, GraphError> {
        let orgs: Vec<Organization> = self.get_all("/organization", &|_| {}).await?;
        orgs.into_iter()
            .next()
            .ok_or_else(|| GraphError::Malformed {
                url: format!("{}/organization", self.inner.v1),
                detail: "the answer lists no organization".into(),
            })
    }

    /// The licenses the tenant bought: `GET /v1.0/subscribedSkus`.
    pub async fn subscribed_skus(&self) -> Result<Vec<SubscribedSku>, GraphError> {
        self.get_all("/subscribedSkus", &|_| {}).await
    }
}

/// `/users?$select=..[extra]&$top=999`; an empty `select` means [`USER_PROPERTIES`].
fn users_path(select: &[&str], extra: &str) -> String {
    let select = if select.is_empty() {
        USER_PROPERTIES
    } else {
        select
    };
    format!("/users?$select={}{extra}&$top=999", select.join(","))
}
