//! The planner: which node keeps which model warm.
//!
//! # Formulation
//!
//! Models `m` have a demand `λ_m` (requests per second, smoothed) and a mean
//! work `w_m` (completion tokens per request). Node `n` holds a set of models
//! on disk, can keep `k_n` of them in memory, generates `s_n` requests at
//! once (its slots) at `v_{n,m}` tokens per second after a first token of
//! `t_{n,m}` seconds. Serving only `m`, it completes
//!
//! ```text
//! μ_{n,m} = s_n / (t_{n,m} + w_m / v_{n,m})      requests per second.
//! ```
//!
//! A plan gives every node a set `S_n` of at most `k_n` models it holds. A
//! node with several planned models splits its time between them in
//! proportion to their demand, so model `m` gets the capacity
//!
//! ```text
//! C_m = Σ_{n : m ∈ S_n}  μ_{n,m} · λ_m / Σ_{m' ∈ S_n} λ_{m'}
//! ```
//!
//! and the headroom `h_m = C_m / λ_m` (above 1: its demand fits). The plan
//! first minimises the demand left with no capacity at all, `Σ λ_m` over
//! the models it gives no node (there are more models than room in memory:
//! the rare ones are left out, to be loaded where a request finds room, not
//! the popular ones); then it maximises the smallest headroom, then the next
//! smallest, and so on (the headrooms sorted ascending, compared
//! lexicographically): every model gets room before any gets more, and when
//! the fleet cannot carry the demand all models fall short by as even a
//! factor as whole nodes allow.
//!
//! It is found by a greedy start (the fastest nodes first, each to the model
//! with the least headroom so far) and a local search that moves one node's
//! model at a time while that improves the ranking; the same search also runs
//! from the plan in force, and the better of the two results is the candidate.
//!
//! **Hysteresis**: the candidate replaces the plan in force only if it cuts
//! the demand left with no capacity by more than [`HYSTERESIS`], or leaves as
//! much and raises the smallest headroom `h` by more than that, or by a
//! fifth of that where the plan in force is not saturated (`h > 1`) and
//! the move at least halves the queueing `h` implies
//! (`1 / (h − 1)`, the mean wait in service times of a queue at utilisation
//! `1 / h`): from 1.09 to 1.34, say, which cuts the wait from 11 service
//! times to 3. Demand that wobbles by ±20% therefore keeps the plan, and
//! with it the nodes warm; moving a model costs a load that stalls a node.
//! What the plan in force no longer can be is repaired without that test:
//! a node that left, a model no longer held there, a model with no demand
//! left (it leaves the plan), a node with room and nothing planned.

/// How much a new plan must raise the smallest headroom to replace the plan in force.
pub const HYSTERESIS: f64 = 0.25;
/// How much a plan must cut the queueing its smallest headroom implies to
/// replace the plan in force on a smaller gain than [`HYSTERESIS`].
pub const QUEUEING_GAIN: f64 = 2.0;
/// Rounds of the local search at most (each tries every single-node move).
const MAX_ROUNDS: usize = 64;
/// Fleets up to this size also try two nodes trading models (quadratic).
const SWAP_SEARCH_NODES: usize = 64;
/// Headrooms closer than this (relative) count as equal.
const EPSILON: f64 = 1e-9;

/// The demand for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub model: String,
    /// Requests per second.
    pub rate: f64,
}

/// What one node can do.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Requests per second the node completes for each model of the demand
    /// list when it serves only that model (`μ_{n,m}`), `None` where it does
    /// not hold the model.
    pub rates: Vec<Option<f64>>,
    /// Models it can keep in memory at once (`k_n`, at least 1).
    pub memory: usize,
}

/// Models (indices into the demand list) planned on each node.
pub type Assignment = Vec<Vec<usize>>;

/// The planner's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub assignment: Assignment,
    /// Headroom per model of the demand list (`None` where no node holds it).
    pub headroom: Vec<Option<f64>>,
    /// `C_m` per model of the demand list, under the assignment.
    pub capacity: Vec<f64>,
    /// Whether the assignment differs from the one in force.
    pub changed: bool,
    /// Why it is what it is, for people.
    pub reason: String,
}

/// Plans `nodes` for `demand`, starting from `current` (the plan in force,
/// or what the nodes have in memory when there is none yet).
pub fn plan(demand: &[Demand], nodes: &[Capacity], current: &Assignment) -> Decision {
    let problem = Problem::new(demand, nodes);
    let kept = problem.repair(current);
    let repaired = kept != *current;
    let candidate = {
        let from_kept = problem.improve(kept.clone());
        let from_greedy = problem.improve(problem.greedy());
        if problem
            .rank_of(&from_greedy)
            .better_than(&problem.rank_of(&from_kept))
        {
            from_greedy
        } else {
            from_kept
        }
    };
    let old = problem.rank_of(&kept);
    let new = problem.rank_of(&candidate);
    let (assignment, reason) = if candidate == kept {
        let reason = if repaired {
            "repaired: nodes, models or demand changed".to_owned()
        } else {
            "unchanged: no better plan".to_owned()
        };
        (kept, reason)
    } else if new.worth_switching_from(&old) {
        let reason = format!(
            "replanned: smallest headroom {} → {}",
            shown(old.smallest()),
            shown(new.smallest())
        );
        (candidate, reason)
    } else {
        let reason = format!(
            "kept: the best other plan raises the smallest headroom only from {} to {} \
             (below the {:.0}% needed to move a model)",
            shown(old.smallest()),
            shown(new.smallest()),
            HYSTERESIS * 100.0
        );
        (kept, reason)
    };
    let changed = assignment != *current;
    problem.decision(assignment, changed, reason)
}

/// No plan (yet), for `reason`; `had_plan`: whether one was in force.
pub fn unplanned(
    demand: &[Demand],
    nodes: &[Capacity],
    had_plan: bool,
    reason: String,
) -> Decision {
    Problem::new(demand, nodes).decision(vec![Vec::new(); nodes.len()], had_plan, reason)
}

/// The mean wait in a queue served at utilisation `1 / headroom`, in
/// service times (`ρ / (1 − ρ)`, as in an M/M/1 queue): endless at or past
/// saturation.
fn queueing(headroom: f64) -> f64 {
    if headroom <= 1.0 {
        f64::INFINITY
    } else {
        1.0 / (headroom - 1.0)
    }
}

fn shown(value: Option<f64>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| format!("{v:.2}"))
}

fn serves(node: &Capacity, model: usize) -> bool {
    node.rates
        .get(model)
        .copied()
        .flatten()
        .is_some_and(|r| r > 0.0)
}

/// A change the local search tries.
#[derive(Debug, Clone, Copy)]
enum Move {
    /// Node, slot, new model.
    Replace(usize, usize, usize),
    /// Node a's slot i trades with node b's slot j.
    Swap(usize, usize, usize, usize),
}

/// Each model's capacity under an assignment, kept up to date one node at a
/// time: a move changes the capacities of the models of the nodes it
/// touches only, so trying it costs a few models' worth of arithmetic, not
/// a pass over the fleet.
#[derive(Debug, Clone)]
struct Tally {
    capacity: Vec<f64>,
    /// How many nodes serve each model. A model none serves has a capacity
    /// of exactly 0, whatever rounding the updates left behind.
    serving: Vec<u32>,
}

impl Tally {
    fn capacity(&self, model: usize) -> f64 {
        if self.serving[model] == 0 {
            0.0
        } else {
            self.capacity[model]
        }
    }
}

/// One planning problem, with what every evaluation reads worked out once.
struct Problem<'a> {
    demand: &'a [Demand],
    nodes: &'a [Capacity],
    /// Whether any node holds each model (one none holds stays out of the ranking).
    held: Vec<bool>,
}

impl<'a> Problem<'a> {
    fn new(demand: &'a [Demand], nodes: &'a [Capacity]) -> Self {
        let held = (0..demand.len())
            .map(|m| nodes.iter().any(|n| serves(n, m)))
            .collect();
        Self {
            demand,
            nodes,
            held,
        }
    }

    fn wanted(&self, model: usize) -> bool {
        self.demand[model].rate > 0.0
    }

    /// Adds (`sign` 1) or takes away (`sign` −1) what node `n` serving
    /// `models` gives each of them: its rate for the model, times the
    /// model's share of the demand on the node.
    fn apply(&self, tally: &mut Tally, n: usize, models: &[usize], sign: f64) {
        let total: f64 = models.iter().map(|&m| self.demand[m].rate).sum();
        for &m in models {
            let share = if total > 0.0 {
                self.demand[m].rate / total
            } else {
                1.0 / models.len() as f64
            };
            tally.capacity[m] += sign * self.nodes[n].rates[m].unwrap_or(0.0) * share;
            if sign > 0.0 {
                tally.serving[m] += 1;
            } else {
                tally.serving[m] -= 1;
            }
        }
    }

    /// The planner's answer for `assignment`, with each model's capacity
    /// and headroom under it.
    fn decision(&self, assignment: Assignment, changed: bool, reason: String) -> Decision {
        let tally = self.tally(&assignment);
        Decision {
            headroom: self.headroom(&tally),
            capacity: (0..self.demand.len()).map(|m| tally.capacity(m)).collect(),
            changed,
            assignment,
            reason,
        }
    }

    fn tally(&self, assignment: &Assignment) -> Tally {
        let mut tally = Tally {
            capacity: vec![0.0; self.demand.len()],
            serving: vec![0; self.demand.len()],
        };
        for (n, models) in assignment.iter().enumerate() {
            self.apply(&mut tally, n, models, 1.0);
        }
        tally
    }

    /// Headroom per model; `None` for a model no node holds or nobody asks for.
    fn headroom(&self, tally: &Tally) -> Vec<Option<f64>> {
        (0..self.demand.len())
            .map(|m| {
                (self.held[m] && self.wanted(m)).then(|| tally.capacity(m) / self.demand[m].rate)
            })
            .collect()
    }

    fn rank(&self, tally: &Tally) -> Rank {
        let rooms = self.headroom(tally);
        let unserved = rooms
            .iter()
            .zip(self.demand)
            .filter(|(room, _)| room.is_some_and(|h| h <= 0.0))
            .map(|(_, d)| d.rate)
            .sum();
        let mut headrooms: Vec<f64> = rooms.into_iter().flatten().collect();
        headrooms.sort_by(f64::total_cmp);
        Rank {
            unserved,
            headrooms,
        }
    }

    fn rank_of(&self, assignment: &Assignment) -> Rank {
        self.rank(&self.tally(assignment))
    }

    /// `current` with what it can no longer be taken out: models a node
    /// does not hold or nobody asks for, more models than fit; then every
    /// node with room left gets the neediest models it holds.
    fn repair(&self, current: &Assignment) -> Assignment {
        let mut assignment: Assignment = self
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let mut models: Vec<usize> = current.get(n).cloned().unwrap_or_default();
                models.retain(|&m| m < self.demand.len() && self.wanted(m) && serves(node, m));
                models.dedup();
                models.truncate(node.memory.max(1));
                models
            })
            .collect();
        self.fill(&mut assignment);
        assignment
    }

    fn greedy(&self) -> Assignment {
        let mut assignment = vec![Vec::new(); self.nodes.len()];
        self.fill(&mut assignment);
        assignment
    }

    /// Node indices, the fastest (best rate for any demanded model) first.
    fn fastest_first(&self) -> Vec<usize> {
        let best: Vec<f64> = self
            .nodes
            .iter()
            .map(|node| {
                (0..self.demand.len())
                    .filter(|&m| self.wanted(m))
                    .filter_map(|m| node.rates.get(m).copied().flatten())
                    .fold(0.0_f64, f64::max)
            })
            .collect();
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by(|&a, &b| best[b].total_cmp(&best[a]).then(a.cmp(&b)));
        order
    }

    /// Gives each node's free memory, the fastest nodes first, to the held
    /// models with the least headroom so far.
    fn fill(&self, assignment: &mut Assignment) {
        let mut tally = self.tally(assignment);
        for n in self.fastest_first() {
            let node = &self.nodes[n];
            while assignment[n].len() < node.memory.max(1) {
                let neediest = (0..self.demand.len())
                    .filter(|&m| self.wanted(m) && serves(node, m))
                    .filter(|m| !assignment[n].contains(m))
                    .min_by(|&a, &b| {
                        // Least headroom; among equals (none yet), the most asked for.
                        let h = |m: usize| tally.capacity(m) / self.demand[m].rate;
                        h(a).total_cmp(&h(b))
                            .then(self.demand[b].rate.total_cmp(&self.demand[a].rate))
                            .then(a.cmp(&b))
                    });
                let Some(m) = neediest else { break };
                self.apply(&mut tally, n, &assignment[n], -1.0);
                assignment[n].push(m);
                self.apply(&mut tally, n, &assignment[n], 1.0);
            }
        }
    }

    /// Local search: the best single change (one node's model replaced by
    /// another it holds, or, on fleets up to [`SWAP_SEARCH_NODES`], two
    /// nodes trading models) while it improves the ranking.
    fn improve(&self, mut assignment: Assignment) -> Assignment {
        for _ in 0..MAX_ROUNDS {
            // Counted afresh each round, so updates cannot drift.
            let tally = self.tally(&assignment);
            let mut best = self.rank(&tally);
            let mut best_move = None;
            let mut trial = tally.clone();
            for (n, node) in self.nodes.iter().enumerate() {
                for slot in 0..assignment[n].len() {
                    for m in 0..self.demand.len() {
                        if !self.wanted(m) || !serves(node, m) || assignment[n].contains(&m) {
                            continue;
                        }
                        trial.clone_from(&tally);
                        self.apply(&mut trial, n, &assignment[n], -1.0);
                        let previous = std::mem::replace(&mut assignment[n][slot], m);
                        self.apply(&mut trial, n, &assignment[n], 1.0);
                        assignment[n][slot] = previous;
                        let ranked = self.rank(&trial);
                        if ranked.better_than(&best) {
                            best = ranked;
                            best_move = Some(Move::Replace(n, slot, m));
                        }
                    }
                }
            }
            if self.nodes.len() <= SWAP_SEARCH_NODES {
                // Two nodes trading models, which no single move can reach
                // when each model needs at least one node.
                for a in 0..self.nodes.len() {
                    for b in a + 1..self.nodes.len() {
                        for i in 0..assignment[a].len() {
                            for j in 0..assignment[b].len() {
                                let (ma, mb) = (assignment[a][i], assignment[b][j]);
                                if ma == mb
                                    || !serves(&self.nodes[a], mb)
                                    || !serves(&self.nodes[b], ma)
                                    || assignment[a].contains(&mb)
                                    || assignment[b].contains(&ma)
                                {
                                    continue;
                                }
                                trial.clone_from(&tally);
                                self.apply(&mut trial, a, &assignment[a], -1.0);
                                self.apply(&mut trial, b, &assignment[b], -1.0);
                                assignment[a][i] = mb;
                                assignment[b][j] = ma;
                                self.apply(&mut trial, a, &assignment[a], 1.0);
                                self.apply(&mut trial, b, &assignment[b], 1.0);
                                assignment[a][i] = ma;
                                assignment[b][j] = mb;
                                let ranked = self.rank(&trial);
                                if ranked.better_than(&best) {
                                    best = ranked;
                                    best_move = Some(Move::Swap(a, i, b, j));
                                }
                            }
                        }
                    }
                }
            }
            match best_move {
                Some(Move::Replace(n, slot, m)) => assignment[n][slot] = m,
                Some(Move::Swap(a, i, b, j)) => {
                    let ma = assignment[a][i];
                    assignment[a][i] = assignment[b][j];
                    assignment[b][j] = ma;
                }
                None => break,
            }
        }
        assignment
    }
}

/// What plans are compared by: first the demand left with no capacity at
/// all (requests per second of models held somewhere but planned nowhere),
/// less is better; then the headrooms of every model, sorted ascending.
#[derive(Debug, Clone, PartialEq)]
struct Rank {
    unserved: f64,
    headrooms: Vec<f64>,
}

impl Rank {
    fn smallest(&self) -> Option<f64> {
        self.headrooms.first().copied()
    }

    fn better_than(&self, other: &Rank) -> bool {
        let tolerance = EPSILON * self.unserved.max(other.unserved).max(1.0);
        if (self.unserved - other.unserved).abs() > tolerance {
            return self.unserved < other.unserved;
        }
        for (a, b) in self.headrooms.iter().zip(&other.headrooms) {
            let tolerance = EPSILON * a.abs().max(b.abs()).max(1.0);
            if (a - b).abs() > tolerance {
                return a > b;
            }
        }
        false
    }

    /// Whether this plan is enough better than `old` to move models: it
    /// serves demand that had no capacity (a quarter of it at least), or
    /// it serves as much and raises the smallest headroom by [`HYSTERESIS`],
    /// or by less where that divides the queueing it implies by
    /// [`QUEUEING_GAIN`]: close to saturation (not past it, where estimates
    /// are least sure) a small gain in headroom is a large one in waiting.
    fn worth_switching_from(&self, old: &Rank) -> bool {
        let tolerance = EPSILON * self.unserved.max(old.unserved).max(1.0);
        if self.unserved > old.unserved + tolerance {
            return false;
        }
        if self.unserved < old.unserved - tolerance {
            return self.unserved <= old.unserved * (1.0 - HYSTERESIS);
        }
        let served = |rank: &Rank| rank.headrooms.iter().copied().find(|&h| h > 0.0);
        match (served(self), served(old)) {
            (Some(new), Some(old)) => {
                new > old * (1.0 + HYSTERESIS)
                    || (old > 1.0
                        && new > old * (1.0 + HYSTERESIS / 5.0)
                        && queueing(old) > queueing(new) * QUEUEING_GAIN)
            }
            (Some(_), None) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(rates: &[f64]) -> Vec<Demand> {
        rates
            .iter()
            .enumerate()
            .map(|(i, &rate)| Demand {
                model: format!("m{i}"),
                rate,
            })
            .collect()
    }

    fn node(rates: &[Option<f64>], memory: usize) -> Capacity {
        Capacity {
            rates: rates.to_vec(),
            memory,
        }
    }

    fn sorted(mut a: Assignment) -> Assignment {
        for models in &mut a {
            models.sort_unstable();
        }
        a
    }

    #[test]
    fn the_fast_node_takes_the_busy_model_and_the_slow_one_the_other() {
        // m0: 8 req/s, m1: 1 req/s; the fast node does 10/s, the slow one 2/s.
        let d = demand(&[8.0, 1.0]);
        let nodes = [
            node(&[Some(2.0), Some(2.0)], 1),
            node(&[Some(10.0), Some(10.0)], 1),
        ];
        // Starting with the fast node on the small model, the wrong way round.
        let decision = plan(&d, &nodes, &vec![vec![0], vec![1]]);
        assert_eq!(decision.assignment, vec![vec![1], vec![0]]);
        assert!(decision.changed);
        let h = decision.headroom;
        assert!((h[0].unwrap() - 10.0 / 8.0).abs() < 1e-9, "{h:?}");
        assert!((h[1].unwrap() - 2.0).abs() < 1e-9, "{h:?}");
    }

    #[test]
    fn with_more_models_than_room_the_rare_ones_are_left_out_not_the_popular_ones() {
        // Three nodes that keep one model each; four models, the last rare.
        let d = demand(&[5.0, 4.0, 3.0, 0.1]);
        let all = || node(&[Some(10.0), Some(10.0), Some(10.0), Some(10.0)], 1);
        let nodes = [all(), all(), all()];
        // Whatever they start with (here: the rare model in place of a popular one).
        for start in [
            vec![vec![0], vec![1], vec![3]],
            vec![vec![3], vec![], vec![]],
            vec![vec![]; 3],
        ] {
            let decision = plan(&d, &nodes, &start);
            let mut planned: Vec<usize> = decision.assignment.concat();
            planned.sort_unstable();
            assert_eq!(planned, vec![0, 1, 2], "from {start:?}: {decision:?}");
            assert_eq!(decision.headroom[3], Some(0.0));
        }
    }

    #[test]
    fn a_model_only_slow_nodes_hold_keeps_them_and_the_fast_node_serves_the_rest() {
        // m0 is on slow nodes 0 and 1 and on the fast node 2, which also holds m1 and m2.
        let d = demand(&[1.5, 3.0, 3.0]);
        let nodes = [
            node(&[Some(1.0), None, None], 1),
            node(&[Some(1.0), None, None], 1),
            node(&[Some(8.0), Some(8.0), Some(8.0)], 1),
            node(&[None, Some(4.0), Some(4.0)], 1),
        ];
        let decision = plan(&d, &nodes, &vec![Vec::new(); 4]);
        assert_eq!(decision.assignment[0], vec![0]);
        assert_eq!(decision.assignment[1], vec![0]);
        // The fast node and node 3 split m1 and m2 between them.
        let mut rest = vec![decision.assignment[2][0], decision.assignment[3][0]];
        rest.sort_unstable();
        assert_eq!(rest, vec![1, 2]);
        assert!(decision.headroom.iter().all(|h| h.unwrap() >= 1.3));
    }

    #[test]
    fn an_impossible_demand_degrades_every_model_evenly() {
        // Four equal nodes of 1 req/s, two models asking 4 req/s each.
        let d = demand(&[4.0, 4.0]);
        let nodes = vec![node(&[Some(1.0), Some(1.0)], 1); 4];
        let decision = plan(&d, &nodes, &vec![vec![0]; 4]);
        let on = |m: usize| {
            decision
                .assignment
                .iter()
                .filter(|s| s.contains(&m))
                .count()
        };
        assert_eq!((on(0), on(1)), (2, 2));
        assert_eq!(decision.headroom, vec![Some(0.5), Some(0.5)]);
    }

    #[test]
    fn nodes_with_room_for_two_models_keep_both_warm() {
        let d = demand(&[1.0, 1.0]);
        let nodes = [node(&[Some(4.0), Some(4.0)], 2)];
        let decision = plan(&d, &nodes, &vec![vec![0]]);
        assert_eq!(sorted(decision.assignment), vec![vec![0, 1]]);
        assert_eq!(decision.headroom, vec![Some(2.0), Some(2.0)]);
    }

    #[test]
    fn a_model_nobody_asks_for_leaves_the_plan() {
        let d = demand(&[2.0, 0.0]);
        let nodes = [
            node(&[Some(4.0), Some(4.0)], 1),
            node(&[Some(4.0), Some(4.0)], 1),
        ];
        let decision = plan(&d, &nodes, &vec![vec![0], vec![1]]);
        assert_eq!(decision.assignment, vec![vec![0], vec![0]]);
        assert_eq!(decision.headroom, vec![Some(4.0), None]);
    }

    #[test]
    fn demand_jitter_of_twenty_percent_never_changes_the_plan() {
        let nodes = [
            node(&[Some(8.0), Some(8.0), None], 1),
            node(&[None, Some(6.0), Some(6.0)], 1),
            node(&[Some(4.0), None, Some(4.0)], 1),
            node(&[Some(2.5), Some(2.5), None], 1),
        ];
        let base = [5.0, 3.0, 2.0];
        let settled = plan(&demand(&base), &nodes, &vec![Vec::new(); 4]).assignment;
        // A fixed sequence of factors between 0.8 and 1.2 (no clock, no seed needed).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..500 {
            let jittered: Vec<f64> = base
                .iter()
                .map(|r| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    r * (0.8 + 0.4 * (x % 10_000) as f64 / 10_000.0)
                })
                .collect();
            let decision = plan(&demand(&jittered), &nodes, &settled);
            assert_eq!(
                decision.assignment, settled,
                "{jittered:?}: {}",
                decision.reason
            );
            assert!(!decision.changed);
        }
    }

    #[test]
    fn a_real_shift_in_demand_moves_a_model() {
        let nodes = [
            node(&[Some(10.0), Some(10.0)], 1),
            node(&[Some(2.0), Some(2.0)], 1),
        ];
        let first = plan(&demand(&[8.0, 1.0]), &nodes, &vec![Vec::new(); 2]).assignment;
        assert_eq!(first, vec![vec![0], vec![1]]);
        // The popular model changes.
        let after = plan(&demand(&[1.0, 8.0]), &nodes, &first);
        assert_eq!(after.assignment, vec![vec![1], vec![0]]);
        assert!(
            after.changed && after.reason.starts_with("replanned"),
            "{}",
            after.reason
        );
    }

    #[test]
    fn near_saturation_a_smaller_gain_in_headroom_moves_a_model() {
        let swap = |slow: f64, fast: f64| {
            let nodes = [
                node(&[Some(slow), Some(10.0)], 1),
                node(&[Some(fast), Some(10.0)], 1),
            ];
            plan(&demand(&[1.0, 1.0]), &nodes, &vec![vec![0], vec![1]]).changed
        };
        // 1.09 → 1.34 is 23% more headroom, and a quarter of the queueing.
        assert!(swap(1.09, 1.34));
        // 2.18 → 2.68 is as much more headroom, and little less queueing.
        assert!(!swap(2.18, 2.68));
    }

    #[test]
    fn a_model_no_node_holds_is_left_out_of_the_ranking() {
        let d = demand(&[1.0, 5.0]);
        let nodes = [node(&[Some(2.0), None], 1)];
        let decision = plan(&d, &nodes, &vec![Vec::new()]);
        assert_eq!(decision.assignment, vec![vec![0]]);
        assert_eq!(decision.headroom, vec![Some(2.0), None]);
    }
}
