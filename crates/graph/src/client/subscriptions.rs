//! Change-notification subscriptions: create (Graph first calls the notification URL with
//! a validation token, which the receiver must echo), renew and delete.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{GraphClient, encode_path_segment};
use crate::error::GraphError;

/// What to subscribe to. Not `Debug`: the clientState is a shared secret.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSubscription {
    /// `users` or `groups`.
    pub resource: String,
    /// e.g. `created,updated,deleted`.
    pub change_type: String,
    pub notification_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_notification_url: Option<String>,
    /// Sent back with every notification, so the receiver knows it is genuine.
    pub client_state: String,
    /// RFC 3339; users and groups allow at most 41,760 minutes ahead.
    pub expiration_date_time: String,
}

/// A subscription as Graph answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subscription {
    pub id: String,
    pub resource: String,
    pub expiration_date_time: String,
    pub notification_url: String,
}

impl GraphClient {
    /// `POST /v1.0/subscriptions`.
    pub async fn create_subscription(
        &self,
        new: &NewSubscription,
    ) -> Result<Subscription, GraphError> {
        let url = self.v1_url("/subscriptions")?;
        let body = serde_json::to_vec(new).map_err(|e| GraphError::Config {
            field: "subscription",
            problem: e.to_string(),
        })?;
        let answer = self.graph_request(Method::POST, &url, Some(&body)).await?;
        parse(&url, &answer.body)
    }

    /// `PATCH /v1.0/subscriptions/{id}` with a new expiry (also renews an authorization
    /// Graph asked to renew with `reauthorizationRequired`).
    pub async fn renew_subscription(
        &self,
        id: &str,
        expiration_date_time: &str,
    ) -> Result<Subscription, GraphError> {
        let url = self.v1_url(&format!("/subscriptions/{}", encode_path_segment(id)))?;
        let body = serde_json::json!({ "expirationDateTime": expiration_date_time }).to_string();
        let answer = self
            .graph_request(Method::PATCH, &url, Some(body.as_bytes()))
            .await?;
        parse(&url, &answer.body)
    }

    /// `DELETE /v1.0/subscriptions/{id}`; one Graph no longer has counts as deleted.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        let url = self.v1_url(&format!("/subscriptions/{}", encode_path_segment(id)))?;
        match self.graph_request(Method::DELETE, &url, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn parse(url: &url::Url, body: &[u8]) -> Result<Subscription, GraphError> {
    serde_json::from_slice(body).map_err(|e| GraphError::Malformed {
        url: crate::error::url_without_query(url),
        detail: format!("not a subscription: {e}"),
    })
}
