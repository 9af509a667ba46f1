//! `llm-router models | pull | rm | nodes`: the fleet from a terminal, through a
//! running coordinator's management API.
//!
//! `pull` starts a task (`POST /api/models/pull`), shows one progress bar per node
//! while it polls `GET /api/tasks/{id}`, and cancels it on Ctrl-C
//! (`DELETE /api/tasks/{id}`). Exit codes: 0 when every node succeeded, 1 when
//! some failed, 130 when cancelled.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use llm_router_common::{Node, canonical_model_name};
use serde_json::{Value, json};

use super::call;
use crate::config::Remote;

/// How often `pull` asks for the task's progress.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long a cancelled pull is waited for before the summary.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Exit status when every node succeeded.
pub const SUCCESS: u8 = 0;
/// Exit status when some node failed.
pub const FAILED: u8 = 1;
/// Exit status after Ctrl-C (128 + SIGINT, as shells report it).
pub const CANCELLED: u8 = 130;

fn base(remote: &Remote) -> &str {
    remote.coordinator_url.trim_end_matches('/')
}

async fn fetch_nodes(remote: &Remote) -> anyhow::Result<Vec<Node>> {
    let url = format!("{}/api/agents", base(remote));
    let answer = call(
        hyper::Method::GET,
        &url,
        remote.admin_token.as_deref(),
        None,
    )
    .await?;
    serde_json::from_value(answer).context("unexpected answer to GET /api/agents")
}

fn gigabytes(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// `llm-router nodes`.
pub async fn nodes(remote: &Remote) -> anyhow::Result<u8> {
    let nodes = fetch_nodes(remote).await?;
    if nodes.is_empty() {
        println!("no nodes registered at {}", base(remote));
        return Ok(SUCCESS);
    }
    let rows: Vec<[String; 8]> = nodes
        .iter()
        .map(|n| {
            let free = n
                .metrics
                .as_ref()
                .and_then(|m| m.models_disk_free_bytes)
                .map_or_else(|| "-".into(), gigabytes);
            let kind = format!(
                "{}{}",
                n.facts.api_kind.as_str(),
                if n.facts.agentless { " (no agent)" } else { "" }
            );
            [
                n.facts.shown_name().to_owned(),
                n.status.as_str().to_owned(),
                kind,
                n.facts.models.len().to_string(),
                n.facts.loaded_models.len().to_string(),
                n.in_flight.to_string(),
                free,
                n.facts.api_url.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "STATUS",
            "KIND",
            "MODELS",
            "LOADED",
            "IN FLIGHT",
            "FREE DISK",
            "URL",
        ],
        &rows,
    );
    Ok(SUCCESS)
}

/// One node's copy of a model, for the matrix.
struct Held {
    column: usize,
    size: Option<u64>,
    digest: Option<String>,
}

/// `llm-router models`: models down, nodes across.
pub async fn models(remote: &Remote) -> anyhow::Result<u8> {
    let nodes = fetch_nodes(remote).await?;
    let mut models: BTreeMap<String, Vec<Held>> = BTreeMap::new();
    for (column, node) in nodes.iter().enumerate() {
        for model in &node.facts.models {
            models
                .entry(canonical_model_name(&model.name))
                .or_default()
                .push(Held {
                    column,
                    size: model.size,
                    digest: model.digest.clone(),
                });
        }
    }
    if models.is_empty() {
        println!("no models on the fleet's {} nodes", nodes.len());
        return Ok(SUCCESS);
    }
    let mut header = vec!["MODEL".to_owned(), "SIZE".to_owned()];
    header.extend(nodes.iter().map(|n| n.facts.machine_name.clone()));
    header.push(String::new());
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|(name, holders)| {
            let size = holders.iter().filter_map(|h| h.size).max();
            let mut digests: Vec<&String> =
                holders.iter().filter_map(|h| h.digest.as_ref()).collect();
            digests.sort();
            digests.dedup();
            let mut row = vec![name.clone(), size.map_or_else(|| "-".into(), gigabytes)];
            row.extend(nodes.iter().enumerate().map(|(column, node)| {
                if !holders.iter().any(|h| h.column == column) {
                    "-".to_owned()
                } else if node
                    .facts
                    .loaded_models
                    .iter()
                    .any(|l| canonical_model_name(&l.name) == *name)
                {
                    "loaded".to_owned()
                } else {
                    "held".to_owned()
                }
            }));
            row.push(if digests.len() > 1 {
                "digests differ".into()
            } else {
                String::new()
            });
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print_table(&header, &rows);
    Ok(SUCCESS)
}

fn print_table<R: AsRef<[String]>>(header: &[&str], rows: &[R]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.as_ref().iter().map(String::as_str).collect());
    }
}

/// `llm-router pull MODEL`.
pub async fn pull(
    remote: &Remote,
    model: &str,
    nodes: Vec<String>,
    count: Option<u32>,
    all: bool,
) -> anyhow::Result<u8> {
    let mut body = json!({ "model": model });
    if !nodes.is_empty() {
        body["nodes"] = json!(nodes);
    } else if let Some(count) = count {
        body["nodes"] = json!({ "count": count });
    } else if all {
        body["nodes"] = json!("all");
    }
    let token = remote.admin_token.as_deref();
    let url = format!("{}/api/models/pull", base(remote));
    let task = call(hyper::Method::POST, &url, token, Some(body)).await?;
    let id = task["id"]
        .as_str()
        .context("the coordinator sent no task id")?
        .to_owned();
    let task_url = format!("{}/api/tasks/{id}", base(remote));
    let bars = Bars::new(&task);
    let mut cancelled = false;
    let mut latest = task;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut every = tokio::time::interval(POLL_EVERY);
    loop {
        bars.show(&latest);
        if latest["state"] != "running" {
            break;
        }
        tokio::select! {
            _ = every.tick() => {}
            _ = &mut ctrl_c, if !cancelled => {
                cancelled = true;
                bars.println("cancelling…");
                call(hyper::Method::DELETE, &task_url, token, None).await?;
                latest = wait_for_end(&task_url, token).await?;
                continue;
            }
        }
        latest = call(hyper::Method::GET, &task_url, token, None).await?;
    }
    bars.finish();
    Ok(summary(&latest, cancelled))
}

async fn wait_for_end(url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    loop {
        let task = call(hyper::Method::GET, url, token, None).await?;
        if task["state"] != "running" || tokio::time::Instant::now() >= deadline {
            return Ok(task);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Prints what happened on each node; returns the exit status.
fn summary(task: &Value, cancelled: bool) -> u8 {
    let parts = task["nodes"].as_array().cloned().unwrap_or_default();
    let model = task["model"].as_str().unwrap_or("?");
    let mut done = 0;
    for part in &parts {
        let name = part["name"].as_str().unwrap_or("?");
        let state = part["state"].as_str().unwrap_or("?");
        let error = part["error"].as_str().unwrap_or("");
        match state {
            "succeeded" => {
                done += 1;
                println!("  ok       {name}");
            }
            "cancelled" => println!("  cancelled {name}"),
            other => println!("  {other:<8} {name}: {error}"),
        }
    }
    let started = parts.iter().filter(|p| p["state"] != "skipped").count();
    let secs = task["elapsed_secs"].as_f64().unwrap_or(0.0);
    println!("pulled {model} onto {done} of {started} nodes in {secs:.1} s");
    if cancelled {
        CANCELLED
    } else if task["state"] == "succeeded" {
        SUCCESS
    } else {
        FAILED
    }
}

/// One progress bar per node of a task.
struct Bars {
    multi: MultiProgress,
    bars: Vec<(String, ProgressBar)>,
}

impl Bars {
    fn new(task: &Value) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template(
            "{prefix:<16} [{bar:30}] {decimal_bytes:>10}/{decimal_total_bytes:<10} {decimal_bytes_per_sec:>12} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bars = task["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["state"] != "skipped")
            .map(|part| {
                let id = part["node_id"].as_str().unwrap_or("").to_owned();
                let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(part["name"].as_str().unwrap_or("?").to_owned());
                (id, bar)
            })
            .collect();
        Self { multi, bars }
    }

    fn show(&self, task: &Value) {
        for part in task["nodes"].as_array().into_iter().flatten() {
            let id = part["node_id"].as_str().unwrap_or("");
            let Some((_, bar)) = self.bars.iter().find(|(bar_id, _)| bar_id == id) else {
                continue;
            };
            bar.set_length(part["total_bytes"].as_u64().unwrap_or(0));
            bar.set_position(part["completed_bytes"].as_u64().unwrap_or(0));
            let status = match (part["state"].as_str(), part["error"].as_str()) {
                (Some("failed"), Some(error)) => format!("failed: {error}"),
                _ => part["status"].as_str().unwrap_or("").to_owned(),
            };
            bar.set_message(status);
        }
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    fn finish(&self) {
        for (_, bar) in &self.bars {
            bar.abandon();
        }
    }
}

/// `llm-router rm MODEL`.
pub async fn rm(remote: &Remote, model: &str, nodes: Vec<String>) -> anyhow::Result<u8> {
    let mut body = json!({ "model": model });
    if !nodes.is_empty() {
        body["nodes"] = json!(nodes);
    }
    let token = remote.admin_token.as_deref();
    let url = format!("{}/api/models/delete", base(remote));
    let task = call(hyper::Method::POST, &url, token, Some(body)).await?;
    let id = task["id"]
        .as_str()
        .context("the coordinator sent no task id")?;
    let task = wait_for_end(&format!("{}/api/tasks/{id}", base(remote)), token).await?;
    let mut status = SUCCESS;
    for part in task["nodes"].as_array().into_iter().flatten() {
        let name = part["name"].as_str().unwrap_or("?");
        match part["state"].as_str() {
            Some("succeeded") => println!("deleted {model} from {name}"),
            Some(state) => {
                status = FAILED;
                let error = part["error"].as_str().unwrap_or("");
                println!("{state} on {name}: {error}");
            }
            None => {}
        }
    }
    Ok(status)
}
