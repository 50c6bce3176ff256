//! Which process owns a running run, and whether that process still lives: a run whose
//! process was killed (kill -9, power loss) must not stay "running" for ever.

use serde::Serialize;

/// The process that executes a run: host, pid, and an identity that survives pid reuse
/// and reboots (on Linux the boot id and the process's start tick).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOwner {
    pub host: String,
    pub pid: u32,
    /// Empty where the system does not tell (then only the heartbeat decides).
    pub started: String,
}

impl RunOwner {
    /// This process.
    pub fn this_process() -> RunOwner {
        let pid = std::process::id();
        RunOwner {
            host: host_name(),
            pid,
            started: process_identity(pid).unwrap_or_default(),
        }
    }

    /// Whether the owner is certainly gone: `Some(false)` when it ran on this host and its
    /// process no longer exists (or the pid now belongs to another process, or the host
    /// rebooted); `None` when this host cannot tell (another host, or no `/proc`).
    pub fn is_alive(&self) -> Option<bool> {
        if self.host != host_name() || self.started.is_empty() {
            return None;
        }
        // This host has /proc if it recorded an identity; no identity now means no process.
        let now = process_identity(self.pid);
        Some(now.as_deref() == Some(self.started.as_str()))
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `BOOT_ID:START_TICK` of a process on Linux; `None` where there is no such process (or
/// no `/proc`).
fn process_identity(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = start_tick(&stat)?;
    Some(format!("{}:{start}", boot.trim()))
}

/// Field 22 of `/proc/PID/stat` (the start time in clock ticks since boot). The second
/// field is the command name in parentheses and may itself hold spaces and parentheses.
fn start_tick(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // after_name starts with field 3 (the state).
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_tick_is_read_after_a_command_name_with_spaces() {
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_tick(stat), Some(987654));
    }

    #[test]
    fn this_process_is_alive_and_a_gone_one_is_not() {
        let me = RunOwner::this_process();
        if me.started.is_empty() {
            return; // no /proc here: only heartbeats decide
        }
        assert_eq!(me.is_alive(), Some(true));
        let reused = RunOwner {
            started: format!("{}0", me.started),
            ..me.clone()
        };
        assert_eq!(
            reused.is_alive(),
            Some(false),
            "a reused pid is another process"
        );
        let elsewhere = RunOwner {
            host: "some-other-host".into(),
            ..me
        };
        assert_eq!(elsewhere.is_alive(), None);
    }
}
