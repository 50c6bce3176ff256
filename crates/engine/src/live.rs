//! Where the runs executing in this process stand (phase, items done, total), so that a
//! console can show a running sync's progress. On PostgreSQL, where several processes
//! (`usersync worker`) share the runs, each also writes it to the run's row every
//! [`PROGRESS_EVERY`], for the consoles of the other processes; on SQLite a run executing
//! in another process shows its status only (its writer holds the database's one write
//! lock for long stretches).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::Progress;

/// A running run's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveProgress {
    /// The current phase: "reading users and groups", "planning", "saving" ...
    pub phase: String,
    /// Items of the phase done so far.
    pub done: u64,
    /// What the phase counts to, when the source can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// How often a run's progress is written for other processes.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes `run_id`'s progress to its row while it executes here, when it changed.
pub(crate) async fn write_progress(live: Arc<LiveRuns>, store: usersync_store::Store, run_id: i64) {
    let mut last = None;
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    loop {
        ticks.tick().await;
        let Some(now) = live.get(run_id) else { return };
        if last.as_ref() == Some(&now) {
            continue;
        }
        if let Ok(text) = serde_json::to_string(&now)
            && let Err(e) = store.set_run_progress(run_id, &text).await
        {
            tracing::debug!(run = run_id, error = %e, "progress not written");
        }
        last = Some(now);
    }
}

/// The progress of every run executing in this process, by run id.
#[derive(Debug, Default)]
pub(crate) struct LiveRuns {
    runs: Mutex<HashMap<i64, LiveProgress>>,
}

impl LiveRuns {
    pub(crate) fn get(&self, run_id: i64) -> Option<LiveProgress> {
        self.lock().get(&run_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, LiveProgress>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A progress that keeps `run_id`'s standing here until it is dropped.
    pub(crate) fn watch(self: &Arc<Self>, run_id: i64) -> RunProgress {
        self.lock().insert(run_id, LiveProgress::default());
        RunProgress {
            live: self.clone(),
            run_id,
        }
    }
}

/// The [`Progress`] of one run, kept in [`LiveRuns`].
pub(crate) struct RunProgress {
    live: Arc<LiveRuns>,
    run_id: i64,
}

impl RunProgress {
    fn update(&self, f: impl FnOnce(&mut LiveProgress)) {
        if let Some(p) = self.live.lock().get_mut(&self.run_id) {
            f(p);
        }
    }
}

impl Progress for RunProgress {
    fn phase(&self, name: &str) {
        self.update(|p| {
            *p = LiveProgress {
                phase: name.to_string(),
                done: 0,
                total: None,
            }
        });
    }

    fn advance(&self, count: usize) {
        self.update(|p| p.done += count as u64);
    }

    fn total(&self, total: u64) {
        self.update(|p| p.total = Some(total));
    }
}

impl Drop for RunProgress {
    fn drop(&mut self) {
        self.live.lock().remove(&self.run_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_followed_phase_by_phase_until_it_ends() {
        let live = Arc::new(LiveRuns::default());
        let progress = live.watch(7);
        progress.phase("reading users and groups");
        progress.total(100);
        progress.advance(40);
        progress.advance(2);
        assert_eq!(
            live.get(7),
            Some(LiveProgress {
                phase: "reading users and groups".into(),
                done: 42,
                total: Some(100),
            })
        );
        progress.phase("planning");
        assert_eq!(live.get(7).unwrap().done, 0);
        drop(progress);
        assert_eq!(live.get(7), None);
    }
}
