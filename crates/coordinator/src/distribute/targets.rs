//! Which nodes a task runs on, and why the others are skipped.
//!
//! A pull or create goes to every online, non-draining Ollama node by default,
//! skipping those whose models disk has no room for the model (its size as a node
//! that holds it reports it; at least [`MIN_FREE_BYTES`] when no node does). An
//! operator may name nodes (by id, machine name or display name), ask for all, or
//! for a number of them (those without the model and with the most free disk
//! first). A copy or delete goes to the nodes that hold the model.

use llm_router_common::{ApiKind, Node, NodeId, NodeStatus, canonical_model_name};

use super::task::PartPlan;
pub use crate::config::PullTargets;

/// Free disk a node needs for a model of unknown size.
pub const MIN_FREE_BYTES: u64 = 1 << 30;

/// Which nodes to use, as a request says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NodeChoice {
    /// The coordinator's default (`--pull-targets`).
    #[default]
    Default,
    /// Every fitting node, with no check of free disk.
    All,
    /// These nodes (ids, machine or display names).
    Named(Vec<String>),
    /// This many nodes.
    Count(usize),
}

/// A choice that names no node of the fleet, or more than one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadNodeName {
    #[error(
        "no node is called {0:?} (use an id, a machine name or a display name from GET /api/agents)"
    )]
    Unknown(String),
    #[error("{} nodes are called {name:?}: name one by its id ({})", .ids.len(), ids_list(.ids))]
    Ambiguous { name: String, ids: Vec<NodeId> },
}

fn ids_list(ids: &[NodeId]) -> String {
    ids.iter()
        .map(NodeId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The parts of a pull or create of `model` on `nodes`.
pub fn for_new_model(
    nodes: &[Node],
    model: &str,
    choice: &NodeChoice,
    policy: PullTargets,
) -> Result<Vec<PartPlan>, BadNodeName> {
    let canonical = canonical_model_name(model);
    let needed = nodes
        .iter()
        .flat_map(|n| &n.facts.models)
        .filter(|m| canonical_model_name(&m.name) == canonical)
        .filter_map(|m| m.size)
        .max();
    let check_disk = policy == PullTargets::FreeDisk && *choice != NodeChoice::All;
    let fit = |node: &Node, named: bool| -> Option<String> {
        if let Some(reason) = unusable(node, named) {
            return Some(reason);
        }
        if check_disk {
            return no_room(node, needed);
        }
        None
    };
    let plan = |node: &Node, skipped| PartPlan {
        node_id: node.facts.id,
        name: node.facts.machine_name.clone(),
        skipped,
    };
    match choice {
        NodeChoice::Default | NodeChoice::All => Ok(nodes
            .iter()
            .filter(|n| n.facts.api_kind == ApiKind::Ollama)
            .map(|n| plan(n, fit(n, false)))
            .collect()),
        NodeChoice::Named(names) => named(nodes, names)
            .map(|chosen| chosen.into_iter().map(|n| plan(n, fit(n, true))).collect()),
        NodeChoice::Count(count) => {
            let mut fitting: Vec<&Node> =
                nodes.iter().filter(|n| fit(n, false).is_none()).collect();
            let holds = |n: &Node| {
                n.facts
                    .models
                    .iter()
                    .any(|m| canonical_model_name(&m.name) == canonical)
            };
            fitting.sort_by_key(|n| {
                let free = n.metrics.as_ref().and_then(|m| m.models_disk_free_bytes);
                (
                    holds(n),
                    std::cmp::Reverse(free.unwrap_or(0)),
                    n.facts.machine_name.clone(),
                )
            });
            Ok(fitting
                .into_iter()
                .take(*count)
                .map(|n| plan(n, None))
                .collect())
        }
    }
}

/// The parts of a copy or delete of `model`: the nodes that hold it.
pub fn holders(
    nodes: &[Node],
    model: &str,
    choice: &NodeChoice,
) -> Result<Vec<PartPlan>, BadNodeName> {
    let canonical = canonical_model_name(model);
    let chosen: Vec<&Node> = match choice {
        NodeChoice::Named(names) => named(nodes, names)?,
        _ => nodes.iter().collect(),
    };
    Ok(chosen
        .into_iter()
        .filter(|n| {
            n.facts
                .models
                .iter()
                .any(|m| canonical_model_name(&m.name) == canonical)
        })
        .map(|n| PartPlan {
            node_id: n.facts.id,
            name: n.facts.machine_name.clone(),
            skipped: match n.status {
                NodeStatus::Offline => Some("offline: do it there when the node is back".into()),
                _ if n.facts.api_kind != ApiKind::Ollama => {
                    Some("an OpenAI-style server: the router cannot manage its models".into())
                }
                _ => None,
            },
        })
        .collect())
}

fn named<'a>(nodes: &'a [Node], names: &[String]) -> Result<Vec<&'a Node>, BadNodeName> {
    let mut chosen: Vec<&Node> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        let by_id = nodes.iter().find(|n| n.facts.id.to_string() == name);
        let by_name: Vec<&Node> = nodes
            .iter()
            .filter(|n| {
                n.facts.machine_name == name || n.facts.display_name.as_deref() == Some(name)
            })
            .collect();
        let node = match (by_id, by_name.as_slice()) {
            (Some(node), _) => node,
            (None, [node]) => *node,
            (None, []) => return Err(BadNodeName::Unknown(name.to_owned())),
            (None, several) => {
                return Err(BadNodeName::Ambiguous {
                    name: name.to_owned(),
                    ids: several.iter().map(|n| n.facts.id).collect(),
                });
            }
        };
        if !chosen.iter().any(|c| c.facts.id == node.facts.id) {
            chosen.push(node);
        }
    }
    Ok(chosen)
}

/// Why `node` cannot take a new model at all. A node named by the operator may be
/// draining (preparing a node before it takes traffic).
fn unusable(node: &Node, named: bool) -> Option<String> {
    if node.facts.api_kind != ApiKind::Ollama {
        return Some("an OpenAI-style server: it cannot pull Ollama models".into());
    }
    match node.status {
        NodeStatus::Offline => Some("offline".into()),
        NodeStatus::Draining if !named => Some("draining".into()),
        _ => None,
    }
}

/// Why `node`'s models disk has no room for a model of `needed` bytes, when it reports its space.
fn no_room(node: &Node, needed: Option<u64>) -> Option<String> {
    let free = node.metrics.as_ref()?.models_disk_free_bytes?;
    let want = needed.map_or(MIN_FREE_BYTES, |size| size + size / 20);
    (free < want).then(|| match needed {
        Some(size) => format!(
            "not enough free disk: {} free in the models folder, the model needs {}",
            gigabytes(free),
            gigabytes(size)
        ),
        None => format!(
            "not enough free disk: {} free in the models folder (at least {} wanted)",
            gigabytes(free),
            gigabytes(MIN_FREE_BYTES)
        ),
    })
}

fn gigabytes(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_router_common::{ModelInfo, NodeMetrics};

    fn node(name: &str, status: NodeStatus, free: Option<u64>, models: &[(&str, u64)]) -> Node {
        let json = serde_json::json!({
            "id": uuid::Uuid::new_v4(), "machine_name": name, "ip_address": "127.0.0.1",
            "api_url": "http://127.0.0.1:1", "status": status, "draining": status == NodeStatus::Draining,
            "registered_at": "2026-01-01T00:00:00Z", "last_seen": "2026-01-01T00:00:00Z",
            "uptime_secs": 0, "system_info": {"cpu_cores": 1, "total_memory_bytes": 1, "gpus": []},
            "models": [], "loaded_models": [], "tags": [], "notes": "", "in_flight": 0
        });
        let mut node: Node = serde_json::from_value(json).unwrap();
        node.metrics = Some(NodeMetrics {
            models_disk_free_bytes: free,
            ..NodeMetrics::default()
        });
        node.facts.models = models
            .iter()
            .map(|(m, size)| ModelInfo {
                size: Some(*size),
                ..ModelInfo::named(*m)
            })
            .collect();
        node
    }

    fn skipped(plans: &[PartPlan]) -> Vec<(&str, Option<&str>)> {
        plans
            .iter()
            .map(|p| (p.name.as_str(), p.skipped.as_deref()))
            .collect()
    }

    #[test]
    fn the_default_skips_nodes_without_room_offline_and_draining_ones() {
        let gb = 1_000_000_000;
        let nodes = [
            node("a", NodeStatus::Online, Some(50 * gb), &[("m", 4 * gb)]),
            node("b", NodeStatus::Online, Some(2 * gb), &[]),
            node("c", NodeStatus::Offline, Some(50 * gb), &[]),
            node("d", NodeStatus::Draining, Some(50 * gb), &[]),
            node("e", NodeStatus::Online, None, &[]),
        ];
        let plans =
            for_new_model(&nodes, "m", &NodeChoice::Default, PullTargets::FreeDisk).unwrap();
        assert_eq!(
            skipped(&plans),
            [
                ("a", None),
                (
                    "b",
                    Some(
                        "not enough free disk: 2.0 GB free in the models folder, the model needs 4.0 GB"
                    )
                ),
                ("c", Some("offline")),
                ("d", Some("draining")),
                ("e", None),
            ]
        );
        let all = for_new_model(&nodes, "m", &NodeChoice::Default, PullTargets::All).unwrap();
        assert_eq!(all[1].skipped, None);
    }

    #[test]
    fn named_nodes_may_be_draining_and_unknown_names_are_errors() {
        let nodes = [
            node("a", NodeStatus::Online, None, &[]),
            node("d", NodeStatus::Draining, None, &[]),
        ];
        let names = NodeChoice::Named(vec!["d".into(), nodes[0].facts.id.to_string()]);
        let plans = for_new_model(&nodes, "m", &names, PullTargets::FreeDisk).unwrap();
        assert_eq!(skipped(&plans), [("d", None), ("a", None)]);
        let unknown = NodeChoice::Named(vec!["zz".into()]);
        assert_eq!(
            for_new_model(&nodes, "m", &unknown, PullTargets::FreeDisk).unwrap_err(),
            BadNodeName::Unknown("zz".into())
        );
    }

    #[test]
    fn a_name_two_nodes_share_is_refused_with_their_ids() {
        let nodes = [
            node("twin", NodeStatus::Online, None, &[]),
            node("twin", NodeStatus::Online, None, &[]),
        ];
        let twin = NodeChoice::Named(vec!["twin".into()]);
        let error = for_new_model(&nodes, "m", &twin, PullTargets::FreeDisk).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("2 nodes are called \"twin\""), "{message}");
        assert!(
            message.contains(&nodes[1].facts.id.to_string()),
            "{message}"
        );
        // Its id still picks one.
        let one = NodeChoice::Named(vec![nodes[1].facts.id.to_string()]);
        let plans = for_new_model(&nodes, "m", &one, PullTargets::FreeDisk).unwrap();
        assert_eq!(plans.len(), 1);
    }

    #[test]
    fn a_count_prefers_nodes_without_the_model_and_with_more_room() {
        let gb = 1_000_000_000;
        let nodes = [
            node("holder", NodeStatus::Online, Some(90 * gb), &[("m", gb)]),
            node("small", NodeStatus::Online, Some(10 * gb), &[]),
            node("big", NodeStatus::Online, Some(80 * gb), &[]),
        ];
        let plans =
            for_new_model(&nodes, "m", &NodeChoice::Count(2), PullTargets::FreeDisk).unwrap();
        assert_eq!(skipped(&plans), [("big", None), ("small", None)]);
    }

    #[test]
    fn holders_are_the_nodes_with_the_model_and_offline_ones_are_skipped() {
        let nodes = [
            node("a", NodeStatus::Online, None, &[("m:latest", 1)]),
            node("b", NodeStatus::Offline, None, &[("m", 1)]),
            node("c", NodeStatus::Online, None, &[("other", 1)]),
        ];
        let plans = holders(&nodes, "m", &NodeChoice::Default).unwrap();
        assert_eq!(
            skipped(&plans),
            [
                ("a", None),
                ("b", Some("offline: do it there when the node is back"))
            ]
        );
    }
}
