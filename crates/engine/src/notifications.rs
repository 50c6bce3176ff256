//! Change notifications: sources with `notifications=true` hold Graph subscriptions on
//! users and groups (made when `usersync serve` has a public URL, renewed before they
//! expire, deleted when the option is turned off or the source removed). A genuine
//! notification (its clientState checked) queues a delta run of its source, debounced:
//! the notifications of a few seconds make one run. Lifecycle notifications are handled:
//! `reauthorizationRequired` renews, `subscriptionRemoved` subscribes again, `missed`
//! queues a run.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;
use usersync_core::SourceKind;
use usersync_store::{Enqueued, NewJob, NewSubscription, RunReason, SecretString, SourceRecord};

use crate::{Engine, EngineError};

/// The resources a source watches.
const RESOURCES: [&str; 2] = ["users", "groups"];
/// How long a subscription is asked for (Graph allows up to 29 days on users and groups).
pub const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(3 * 24 * 3600);
/// A subscription is renewed when less than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);
/// Notifications within this long of the first make one run.
pub const DEBOUNCE: Duration = Duration::from_secs(3);

/// Path of the notification URL under the public URL.
pub const NOTIFICATION_PATH: &str = "/graph/notifications";
/// Path of the lifecycle notification URL under the public URL.
pub const LIFECYCLE_PATH: &str = "/graph/lifecycle";

/// Sources notified and not yet queued, each with when its run is due (the debounce);
/// and how long a subscription renewed on Graph's request is asked for.
#[derive(Debug)]
pub struct Inbox {
    pending: Mutex<HashMap<i64, Instant>>,
    debounce: Duration,
    timing: SubscriptionTiming,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new(DEBOUNCE, SubscriptionTiming::default())
    }
}

impl Inbox {
    pub fn new(debounce: Duration, timing: SubscriptionTiming) -> Inbox {
        Inbox {
            pending: Mutex::new(HashMap::new()),
            debounce,
            timing,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A change of `source_id` was notified: its run is due a debounce from the first
    /// notification (later ones do not move it).
    pub fn note(&self, source_id: i64) {
        let due = Instant::now() + self.debounce;
        self.pending().entry(source_id).or_insert(due);
    }

    /// Sources whose run is due, taken out of the inbox.
    fn take_due(&self) -> Vec<i64> {
        let now = Instant::now();
        let mut pending = self.pending();
        let due: Vec<i64> = pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            pending.remove(id);
        }
        due
    }

    /// Put back for later (a run of the source was in progress).
    fn later(&self, source_id: i64, after: Duration) {
        let due = Instant::now() + after;
        self.pending().entry(source_id).or_insert(due);
    }

    /// How many sources wait for their run.
    pub fn waiting(&self) -> usize {
        self.pending().len()
    }
}

/// One entry of a notification request (change or lifecycle).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Notification {
    subscription_id: String,
    client_state: Option<String>,
    lifecycle_event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    value: Vec<Notification>,
}

/// What a notification request held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Received {
    /// Genuine notifications: their source's run is queued (debounced).
    pub accepted: usize,
    /// Notifications whose clientState was not their subscription's: ignored.
    pub refused: usize,
    /// Notifications of subscriptions this service does not hold: ignored.
    pub unknown: usize,
}

/// How long subscriptions are asked for, and when they are renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionTiming {
    pub lifetime: Duration,
    /// Renewed when less than this is left.
    pub renew_before: Duration,
}

impl Default for SubscriptionTiming {
    fn default() -> Self {
        SubscriptionTiming {
            lifetime: SUBSCRIPTION_LIFETIME,
            renew_before: RENEW_BEFORE,
        }
    }
}

/// What one source's subscriptions should be.
#[derive(Clone, Copy)]
struct Target<'a> {
    wants: bool,
    url: Option<&'a str>,
    public_url: Option<&'a Url>,
    timing: SubscriptionTiming,
}

/// What keeping the subscriptions did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriptionReport {
    pub made: usize,
    pub renewed: usize,
    pub deleted: usize,
    /// Sources whose subscriptions could not be made or renewed, and why.
    pub errors: Vec<String>,
}

fn expiry(from_now: Duration) -> String {
    (OffsetDateTime::now_utc() + from_now)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn client_state() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// `public_url` + `path`, without a doubled slash.
pub fn endpoint(public_url: &Url, path: &str) -> String {
    format!("{}{path}", public_url.as_str().trim_end_matches('/'))
}

impl Engine {
    /// Keeps every source's subscriptions in step with its `notifications` option: made
    /// for the sources that want them (when there is a public URL to receive them),
    /// renewed when less than a day is left, made again for another URL, deleted for
    /// sources that no longer want them. Errors are reported per source, never fatal.
    pub async fn keep_subscriptions(
        &self,
        public_url: Option<&Url>,
        timing: SubscriptionTiming,
    ) -> SubscriptionReport {
        let mut report = SubscriptionReport::default();
        let sources = match self.store.list_sources(None, true).await {
            Ok(s) => s,
            Err(e) => {
                report
                    .errors
                    .push(format!("the sources could not be read: {e}"));
                return report;
            }
        };
        let held = match self.store.subscriptions(None).await {
            Ok(h) => h,
            Err(e) => {
                report
                    .errors
                    .push(format!("the subscriptions could not be read: {e}"));
                return report;
            }
        };
        let url = public_url.map(|u| endpoint(u, NOTIFICATION_PATH));
        for source in &sources {
            let theirs: Vec<_> = held.iter().filter(|s| s.source_id == source.id).collect();
            let wants = source.removed_at.is_none()
                && url.is_some()
                && crate::sources::office365_settings(source)
                    .is_ok_and(|s| s.options.notifications);
            if theirs.is_empty() && !wants {
                continue;
            }
            let target = Target {
                wants,
                url: url.as_deref(),
                public_url,
                timing,
            };
            if let Err(e) = self
                .keep_source_subscriptions(source, &target, &theirs, &mut report)
                .await
            {
                report
                    .errors
                    .push(format!("source #{}: {}", source.id, crate::error_text(&e)));
            }
        }
        report
    }

    async fn keep_source_subscriptions(
        &self,
        source: &SourceRecord,
        target: &Target<'_>,
        theirs: &[&usersync_store::Subscription],
        report: &mut SubscriptionReport,
    ) -> Result<(), EngineError> {
        let Target {
            wants,
            url,
            public_url,
            timing,
        } = *target;
        let client = match source.kind {
            SourceKind::Office365 if source.removed_at.is_none() => {
                Some(self.office365(source).await?.0)
            }
            _ => None,
        };
        for sub in theirs {
            let current = wants && Some(sub.notification_url.as_str()) == url;
            if !current {
                // Turned off, removed, or for another URL: gone at Graph, then here.
                if let Some(client) = &client {
                    client
                        .client()
                        .delete_subscription(&sub.subscription_id)
                        .await
                        .map_err(|error| EngineError::Tenant {
                            what: "deleting a subscription",
                            error: Box::new(error),
                        })?;
                }
                self.store.remove_subscription(&sub.subscription_id).await?;
                report.deleted += 1;
            } else if sub.expires_in < timing.renew_before.as_secs() as i64 {
                let Some(client) = &client else { continue };
                match client
                    .client()
                    .renew_subscription(&sub.subscription_id, &expiry(timing.lifetime))
                    .await
                {
                    Ok(_) => {
                        self.store
                            .renew_subscription(
                                &sub.subscription_id,
                                timing.lifetime.as_secs() as i64,
                            )
                            .await?;
                        report.renewed += 1;
                    }
                    Err(e) if e.is_not_found() => {
                        // Graph no longer has it: made again below.
                        self.store.remove_subscription(&sub.subscription_id).await?;
                    }
                    Err(error) => {
                        return Err(EngineError::Tenant {
                            what: "renewing a subscription",
                            error: Box::new(error),
                        });
                    }
                }
            }
        }
        let (Some(client), Some(url), true) = (client, url, wants) else {
            return Ok(());
        };
        let now_held = self.store.subscriptions(Some(source.id)).await?;
        for resource in RESOURCES {
            if now_held.iter().any(|s| s.resource == resource) {
                continue;
            }
            let state = client_state();
            let made = client
                .client()
                .create_subscription(&usersync_graph::NewSubscription {
                    resource: resource.to_string(),
                    change_type: "created,updated,deleted".into(),
                    notification_url: url.to_string(),
                    lifecycle_notification_url: public_url.map(|u| endpoint(u, LIFECYCLE_PATH)),
                    client_state: state.expose().to_string(),
                    expiration_date_time: expiry(timing.lifetime),
                })
                .await
                .map_err(|error| EngineError::Tenant {
                    what: "subscribing to change notifications",
                    error: Box::new(error),
                })?;
            self.store
                .add_subscription(&NewSubscription {
                    subscription_id: made.id,
                    source_id: source.id,
                    resource: resource.to_string(),
                    notification_url: url.to_string(),
                    client_state: state,
                    expires_in: timing.lifetime.as_secs() as i64,
                })
                .await?;
            report.made += 1;
        }
        Ok(())
    }

    /// Deletes a source's subscriptions at Graph and here (before the source is removed:
    /// afterwards it holds no secret to sign in with). Best effort: a subscription left
    /// at Graph expires by itself, and its notifications are ignored.
    pub(crate) async fn drop_subscriptions(&self, source: &SourceRecord) {
        let Ok(held) = self.store.subscriptions(Some(source.id)).await else {
            return;
        };
        if held.is_empty() {
            return;
        }
        let client = self.office365(source).await.ok().map(|(s, _)| s);
        for sub in held {
            if let Some(client) = &client
                && let Err(e) = client
                    .client()
                    .delete_subscription(&sub.subscription_id)
                    .await
            {
                tracing::warn!(source = source.id, error = %e, "a subscription was not deleted at Graph; it expires by itself");
            }
            let _ = self.store.remove_subscription(&sub.subscription_id).await;
        }
    }

    /// The notifications of a request whose clientState is their subscription's, each
    /// with its subscription; the others counted as refused or unknown.
    async fn genuine(
        &self,
        body: &[u8],
    ) -> Result<(Vec<(usersync_store::Subscription, Notification)>, Received), EngineError> {
        let envelope: Envelope = serde_json::from_slice(body)
            .map_err(|e| EngineError::config("body", format!("not a Graph notification: {e}")))?;
        let mut received = Received::default();
        let mut genuine = Vec::new();
        for n in envelope.value {
            match self
                .store
                .check_notification(&n.subscription_id, n.client_state.as_deref().unwrap_or(""))
                .await?
            {
                None => received.unknown += 1,
                Some((_, false)) => {
                    tracing::warn!(subscription = %n.subscription_id, "a notification with the wrong clientState was ignored");
                    received.refused += 1;
                }
                Some((sub, true)) => {
                    received.accepted += 1;
                    genuine.push((sub, n));
                }
            }
        }
        Ok((genuine, received))
    }

    /// A request to the notification URL: each notification's clientState is checked
    /// against its subscription's; a genuine one notes its source in `inbox`.
    pub async fn receive_notifications(
        &self,
        inbox: &Inbox,
        body: &[u8],
    ) -> Result<Received, EngineError> {
        let (genuine, received) = self.genuine(body).await?;
        for (sub, _) in genuine {
            inbox.note(sub.source_id);
        }
        Ok(received)
    }

    /// A request to the lifecycle URL: `reauthorizationRequired` renews the subscription,
    /// `subscriptionRemoved` forgets it (the next keeping makes it again), `missed`
    /// queues a run of its source (a delta round catches up whatever was missed).
    pub async fn receive_lifecycle(
        &self,
        inbox: &Inbox,
        body: &[u8],
    ) -> Result<Received, EngineError> {
        let (genuine, received) = self.genuine(body).await?;
        for (sub, n) in genuine {
            let event = n.lifecycle_event.unwrap_or_default();
            tracing::info!(source = sub.source_id, %event, "lifecycle notification");
            match event.as_str() {
                "reauthorizationRequired" => {
                    let source = self.store.source(sub.source_id).await?;
                    let (client, _) = self.office365(&source).await?;
                    let lifetime = inbox.timing.lifetime;
                    client
                        .client()
                        .renew_subscription(&sub.subscription_id, &expiry(lifetime))
                        .await
                        .map_err(|error| EngineError::Tenant {
                            what: "renewing a subscription",
                            error: Box::new(error),
                        })?;
                    self.store
                        .renew_subscription(&sub.subscription_id, lifetime.as_secs() as i64)
                        .await?;
                }
                "subscriptionRemoved" => {
                    self.store.remove_subscription(&sub.subscription_id).await?;
                    // Changes may have happened while it was gone.
                    inbox.note(sub.source_id);
                }
                _ => inbox.note(sub.source_id),
            }
        }
        Ok(received)
    }

    /// Queues the runs of notified sources whose debounce is over; a source with a run in
    /// progress waits for it (its run would not see changes made after it read).
    pub async fn queue_notified(&self, inbox: &Inbox) -> usize {
        let mut queued = 0;
        for source_id in inbox.take_due() {
            match self
                .store
                .enqueue_sync(&NewJob {
                    source_id,
                    reason: RunReason::Notification,
                    confirms: None,
                    requested_by: "notification".into(),
                })
                .await
            {
                Ok(Enqueued::Running(_)) => inbox.later(source_id, Duration::from_secs(2)),
                Ok(_) => queued += 1,
                Err(e) => {
                    tracing::warn!(source = source_id, error = %e, "a notified run was not queued");
                }
            }
        }
        queued
    }
}
