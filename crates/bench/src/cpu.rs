//! CPU time spent by a part of the benchmark, read from `/proc`: threads of
//! this process by name (a server runtime started here), or whole processes
//! (nginx's master and its workers).
//!
//! Times come from `schedstat` (nanoseconds on a CPU) where the kernel has
//! it, else from `stat`'s user and system ticks.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a path's CPU time is read.
#[derive(Debug, Clone)]
pub enum CpuSource {
    /// Threads of this process with one of these names (as `/proc` shows
    /// them: cut to 15 bytes).
    Threads(Vec<&'static str>),
    /// A process and its children.
    ProcessTree(u32),
}

impl CpuSource {
    /// CPU time used so far, or `None` where `/proc` cannot tell (not Linux).
    pub fn used(&self) -> Option<Duration> {
        match self {
            CpuSource::Threads(names) => {
                let mut total = Duration::ZERO;
                for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
                    let dir = task.path();
                    let Some(name) = read_trimmed(&dir.join("comm")) else {
                        continue;
                    };
                    if names.iter().any(|n| name == n.get(..15).unwrap_or(n)) {
                        total += task_time(&dir).unwrap_or_default();
                    }
                }
                Some(total)
            }
            CpuSource::ProcessTree(root) => {
                let mut total = Duration::ZERO;
                for pid in process_tree(*root) {
                    let dir = PathBuf::from(format!("/proc/{pid}"));
                    // A process's own schedstat covers only its main thread;
                    // its threads' entries add up to all of it.
                    let Ok(tasks) = std::fs::read_dir(dir.join("task")) else {
                        continue;
                    };
                    for task in tasks.flatten() {
                        total += task_time(&task.path()).unwrap_or_default();
                    }
                }
                Some(total)
            }
        }
    }
}

/// `root` and every process whose parent is in the tree.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = read_trimmed(&entry.path().join("stat")).and_then(|s| parent_of(&s))
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for &(pid, ppid) in &parents {
            if tree.contains(&ppid) && !tree.contains(&pid) {
                tree.push(pid);
                grew = true;
            }
        }
    }
    tree
}

/// The parent pid in a `stat` line (the field after the state, which
/// follows the parenthesised name, which may itself hold spaces).
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of one thread (a `/proc/.../task/TID` folder).
fn task_time(dir: &Path) -> Option<Duration> {
    if let Some(ns) = read_trimmed(&dir.join("schedstat"))
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    {
        return Some(Duration::from_nanos(ns));
    }
    let stat = read_trimmed(&dir.join("stat"))?;
    ticks_of(&stat).map(|ticks| Duration::from_millis(ticks * 10))
}

/// User plus system ticks in a `stat` line (fields 14 and 15; the kernel's
/// user-visible tick is 1/100 s).
fn ticks_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_the_name_are_read() {
        let stat = "4242 (nginx: worker) S 4240 4240 4240 0 -1 4194624 97 0 0 0 31 7 0 0 20 0 1 0";
        assert_eq!(parent_of(stat), Some(4240));
        assert_eq!(ticks_of(stat), Some(38));
    }

    #[test]
    fn a_busy_thread_of_this_process_is_counted_by_its_name() {
        let source = CpuSource::Threads(vec!["cpu-test-spin"]);
        let before = source.used().unwrap();
        // The spinning thread waits, still alive, until it has been counted.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (spun_tx, spun_rx) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while started.elapsed() < Duration::from_millis(50) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                spun_tx.send(()).unwrap();
                rx.recv().ok();
            })
            .unwrap();
        spun_rx.recv().unwrap();
        let during = source.used().unwrap();
        tx.send(()).unwrap();
        spinner.join().unwrap();
        assert!(
            during >= before + Duration::from_millis(20),
            "{before:?} then {during:?}"
        );
    }

    #[test]
    fn this_process_is_its_own_tree() {
        let me = std::process::id();
        let used = CpuSource::ProcessTree(me).used().unwrap();
        assert!(used > Duration::ZERO);
    }
}
