//! A task's progress as the Ollama client that started it expects it: the lines
//! one Ollama sends (`{"status", "digest", "total", "completed"}`), with each
//! layer's bytes summed over the nodes, so one bar covers the whole fleet.
//!
//! A node that has not reached a layer yet counts with the size others report for
//! it, so totals hold still; `completed` never goes backwards. Statuses that
//! belong to the end of a pull ("verifying sha256 digest", "writing manifest") are
//! held back until every node is done, then the last line is `success`, or an
//! error naming the nodes that failed and why.

use bytes::{BufMut as _, BytesMut};
use serde::Serialize;

use super::task::{PartState, Task, TaskKind, TaskState};

/// What the client has been sent so far.
#[derive(Debug, Default)]
pub struct OllamaProgress {
    statuses_sent: usize,
    held_back: Vec<String>,
    /// Digest, total and completed as last sent.
    layers: Vec<(String, u64, u64)>,
}

#[derive(Serialize)]
struct Line<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<u64>,
}

fn push_line(out: &mut BytesMut, line: &impl Serialize) {
    let mut writer = out.writer();
    if serde_json::to_writer(&mut writer, line).is_ok() {
        writer.into_inner().put_u8(b'\n');
    }
}

fn is_closing_status(status: &str) -> bool {
    ["verifying", "writing", "removing"]
        .iter()
        .any(|prefix| status.starts_with(prefix))
}

impl OllamaProgress {
    /// Appends to `out` the lines for what changed since the last call.
    pub fn changes(&mut self, task: &Task, out: &mut BytesMut) {
        for status in task.statuses_from(self.statuses_sent) {
            self.statuses_sent += 1;
            if is_closing_status(&status) {
                self.held_back.push(status);
            } else {
                push_line(
                    out,
                    &Line {
                        status: &status,
                        digest: None,
                        total: None,
                        completed: None,
                    },
                );
            }
        }
        let per_part = task.layers();
        let mut digests: Vec<&str> = Vec::new();
        for layer in per_part.iter().flatten() {
            if !digests.contains(&layer.digest.as_str()) {
                digests.push(&layer.digest);
            }
        }
        for digest in digests {
            let sizes: Vec<Option<(u64, u64)>> = per_part
                .iter()
                .map(|layers| {
                    layers
                        .iter()
                        .find(|l| l.digest == digest)
                        .map(|l| (l.total, l.completed))
                })
                .collect();
            let known = sizes.iter().flatten().map(|(t, _)| *t).max().unwrap_or(0);
            let total: u64 = sizes.iter().map(|s| s.map_or(known, |(t, _)| t)).sum();
            let completed: u64 = sizes.iter().flatten().map(|(_, c)| *c).sum();
            let sent = match self.layers.iter_mut().find(|(d, _, _)| d == digest) {
                Some(sent) => sent,
                None => {
                    self.layers.push((digest.to_owned(), 0, 0));
                    self.layers.last_mut().expect("just pushed")
                }
            };
            let total = total.max(sent.1);
            let completed = completed.max(sent.2).min(total);
            if (total, completed) == (sent.1, sent.2) {
                continue;
            }
            sent.1 = total;
            sent.2 = completed;
            let short = digest.strip_prefix("sha256:").unwrap_or(digest);
            let status = format!("pulling {}", short.get(..12).unwrap_or(short));
            push_line(
                out,
                &Line {
                    status: &status,
                    digest: Some(digest),
                    total: Some(total),
                    completed: Some(completed),
                },
            );
        }
    }

    /// Appends the last lines of a finished task: the held-back statuses and
    /// `success`, or the error.
    pub fn finish(&mut self, task: &Task, out: &mut BytesMut) {
        self.changes(task, out);
        if task.state() == TaskState::Succeeded {
            for status in std::mem::take(&mut self.held_back) {
                push_line(
                    out,
                    &Line {
                        status: &status,
                        digest: None,
                        total: None,
                        completed: None,
                    },
                );
            }
            push_line(
                out,
                &Line {
                    status: "success",
                    digest: None,
                    total: None,
                    completed: None,
                },
            );
        } else {
            push_line(out, &serde_json::json!({ "error": failure(task) }));
        }
    }
}

/// Why a task did not succeed, naming each node that failed.
pub fn failure(task: &Task) -> String {
    let parts = task.part_states();
    let started = parts.iter().filter(|p| p.2 != PartState::Skipped).count();
    let failed: Vec<String> = parts
        .iter()
        .filter(|p| matches!(p.2, PartState::Failed | PartState::Cancelled))
        .map(|(_, name, _, error)| format!("{name}: {}", error.as_deref().unwrap_or("failed")))
        .collect();
    let what = match task.kind {
        TaskKind::Pull => "pulling",
        TaskKind::Create => "creating",
        TaskKind::Copy => "copying",
        TaskKind::Delete => "deleting",
    };
    if task.state() == TaskState::Cancelled {
        return format!("{what} {} was cancelled", task.model);
    }
    format!(
        "{what} {} failed on {} of {started} nodes: {}",
        task.model,
        failed.len(),
        failed.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llm_router_common::NodeId;
    use tokio::sync::watch;

    use super::*;
    use crate::distribute::task::PartPlan;

    fn task(names: &[&str]) -> Task {
        let plans = names
            .iter()
            .map(|n| PartPlan {
                node_id: NodeId::new_v4(),
                name: (*n).to_owned(),
                skipped: None,
            })
            .collect();
        Task::new(
            TaskKind::Pull,
            "m".into(),
            None,
            plans,
            Arc::new(watch::Sender::new(0)),
        )
    }

    fn lines(out: &BytesMut) -> Vec<serde_json::Value> {
        std::str::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn layers_are_summed_over_nodes_with_a_steady_total() {
        let t = task(&["a", "b"]);
        let mut progress = OllamaProgress::default();
        let mut out = BytesMut::new();
        t.progress(0, "pulling manifest", None);
        t.progress(
            0,
            "pulling 0123456789ab",
            Some(("sha256:0123456789abcdef", 100, 40)),
        );
        progress.changes(&t, &mut out);
        t.progress(
            1,
            "pulling 0123456789ab",
            Some(("sha256:0123456789abcdef", 100, 10)),
        );
        t.progress(0, "verifying sha256 digest", None);
        progress.changes(&t, &mut out);
        progress.changes(&t, &mut out);
        let sent = lines(&out);
        assert_eq!(sent[0]["status"], "pulling manifest");
        assert_eq!(sent[1]["status"], "pulling 0123456789ab");
        assert_eq!(
            (sent[1]["total"].as_u64(), sent[1]["completed"].as_u64()),
            (Some(200), Some(40))
        );
        assert_eq!(
            (sent[2]["total"].as_u64(), sent[2]["completed"].as_u64()),
            (Some(200), Some(50))
        );
        assert_eq!(
            sent.len(),
            3,
            "no repeats, and the closing status is held back: {sent:?}"
        );
        t.end_part(0, PartState::Succeeded, None);
        t.end_part(1, PartState::Succeeded, None);
        out.clear();
        progress.finish(&t, &mut out);
        let end = lines(&out);
        assert_eq!(end[0]["completed"].as_u64(), Some(200));
        assert_eq!(end[1]["status"], "verifying sha256 digest");
        assert_eq!(end.last().unwrap()["status"], "success");
    }

    #[test]
    fn a_failed_node_ends_the_stream_with_an_error_naming_it() {
        let t = task(&["a", "b"]);
        t.end_part(0, PartState::Succeeded, None);
        t.end_part(1, PartState::Failed, Some("disk full".into()));
        let mut out = BytesMut::new();
        OllamaProgress::default().finish(&t, &mut out);
        let end = lines(&out);
        assert_eq!(
            end.last().unwrap()["error"],
            "pulling m failed on 1 of 2 nodes: b: disk full"
        );
    }
}
