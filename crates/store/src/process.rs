//! Which process owns a running run, and whether that process still lives: a run whose
//! process was killed (kill -9, power loss) must not stay "running" for ever.

use serde::Serialize;

/// The process that executes a run: host, pid, and an identity that survives pid reuse
/// and reboots: on Linux `MACHINE:PID_NAMESPACE:BOOT:START_TICK` (the machine id, the
/// pid namespace's inode, the boot id and the process's start tick).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOwner {
    pub host: String,
    pub pid: u32,
    /// Empty where the system does not tell (then only the heartbeat decides).
    #[serde(skip)]
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

    /// Whether the owner is certainly gone: `Some(false)` when it ran in this machine's
    /// pid namespace and its process no longer exists, the pid now belongs to another
    /// process, or the machine rebooted since. `None` when this process cannot tell: the
    /// owner ran elsewhere (another host, another machine under the same host name, a
    /// container with its own pids), or there is no `/proc`; then its heartbeat decides.
    pub fn is_alive(&self) -> Option<bool> {
        if self.host != host_name() {
            return None;
        }
        let (machine, namespace, boot, _) = split_identity(&self.started)?;
        let (here_machine, here_namespace, here_boot) = place()?;
        if machine != here_machine || namespace != here_namespace {
            return None;
        }
        if boot != here_boot {
            return Some(false);
        }
        let now = process_identity(self.pid);
        Some(now.as_deref() == Some(self.started.as_str()))
    }
}

/// The four parts of an identity, when it has them.
fn split_identity(identity: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = identity.split(':');
    let found = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then_some(found)
}

/// Where processes of this one's kind live: machine id, pid namespace, boot id.
fn place() -> Option<(String, String, String)> {
    let machine = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .ok()?
        .to_string_lossy()
        .trim_start_matches("pid:")
        .trim_matches(['[', ']'])
        .to_string();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some((machine, namespace, boot.trim().to_string()))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `MACHINE:PID_NAMESPACE:BOOT:START_TICK` of a process of this pid namespace on Linux;
/// `None` where there is no such process (or no `/proc`).
fn process_identity(pid: u32) -> Option<String> {
    let (machine, namespace, boot) = place()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = start_tick(&stat)?;
    Some(format!("{machine}:{namespace}:{boot}:{start}"))
}

/// Field 22 of `/proc/PID/stat` (the start time in clock ticks since boot). The second
/// field is the command name in parentheses and may itself hold spaces and parentheses.
pub(crate) fn start_tick(stat: &str) -> Option<u64> {
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
