//! The stage graph: building it from `needs`, finding cycles, ordering stages and walking
//! edges. Edges point from a stage to the stages that need it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::dag::model::Dag;

/// Builds the graph for `stage_count` stages and `edges` (upstream, downstream) by stage
/// index. Node `i` holds stage `i`.
pub(crate) fn build_graph(
    stage_count: usize,
    edges: &[(usize, usize)],
) -> (DiGraph<usize, ()>, Vec<NodeIndex>) {
    let mut graph = DiGraph::with_capacity(stage_count, edges.len());
    let nodes: Vec<NodeIndex> = (0..stage_count).map(|i| graph.add_node(i)).collect();
    for &(from, to) in edges {
        graph.add_edge(nodes[from], nodes[to], ());
    }
    (graph, nodes)
}

/// Returns one cycle (as stage indices, first repeated at the end) per strongly connected
/// group of stages, starting from the group's first stage in file order. Iterative
/// (Kosaraju), so a chain of 10,000s of stages cannot overflow the stack.
pub(crate) fn find_cycles(graph: &DiGraph<usize, ()>) -> Vec<Vec<usize>> {
    let mut in_component = vec![usize::MAX; graph.node_count()];
    let mut cycles = Vec::new();
    for (id, component) in petgraph::algo::kosaraju_scc(graph).into_iter().enumerate() {
        if component.len() < 2 {
            continue;
        }
        for node in &component {
            in_component[node.index()] = id;
        }
        let Some(&start) = component.iter().min_by_key(|n| graph[**n]) else {
            continue;
        };
        if let Some(path) = shortest_cycle_through(graph, start, &in_component, id) {
            cycles.push(path.into_iter().map(|n| graph[n]).collect());
        }
    }
    cycles.sort();
    cycles
}

/// Breadth-first search from `start` back to itself, staying inside one component.
fn shortest_cycle_through(
    graph: &DiGraph<usize, ()>,
    start: NodeIndex,
    in_component: &[usize],
    component: usize,
) -> Option<Vec<NodeIndex>> {
    let mut parent: Vec<Option<NodeIndex>> = vec![None; graph.node_count()];
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph
            .neighbors_directed(node, Direction::Outgoing)
            .collect();
        next.sort_by_key(|n| graph[*n]);
        for succ in next {
            if succ == start {
                let mut back = Vec::new();
                let mut cur = node;
                while cur != start {
                    back.push(cur);
                    cur = parent[cur.index()]?;
                }
                let mut path = vec![start];
                path.extend(back.into_iter().rev());
                path.push(start);
                return Some(path);
            }
            if in_component[succ.index()] == component && parent[succ.index()].is_none() {
                parent[succ.index()] = Some(node);
                queue.push_back(succ);
            }
        }
    }
    None
}

/// A topological order of the stages, picking the earliest stage in file order whenever
/// several are ready. Stages on a cycle are left out.
pub(crate) fn topological_order(graph: &DiGraph<usize, ()>) -> Vec<usize> {
    let mut waiting: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = graph
        .node_indices()
        .filter(|n| waiting[n.index()] == 0)
        .map(|n| Reverse(n.index()))
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(graph[NodeIndex::new(i)]);
        for succ in graph.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
            waiting[succ.index()] -= 1;
            if waiting[succ.index()] == 0 {
                ready.push(Reverse(succ.index()));
            }
        }
    }
    order
}

impl Dag {
    /// Returns the index in `stages` of the stage called `name`.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name.as_str() == name)
    }

    /// Returns the stages stage `idx` needs, in file order.
    pub fn upstream(&self, idx: usize) -> Vec<usize> {
        self.neighbours(idx, Direction::Incoming)
    }

    /// Returns the stages that need stage `idx`, in file order.
    pub fn downstream(&self, idx: usize) -> Vec<usize> {
        self.neighbours(idx, Direction::Outgoing)
    }

    fn neighbours(&self, idx: usize, direction: Direction) -> Vec<usize> {
        let Some(&node) = self.nodes.get(idx) else {
            return Vec::new();
        };
        let mut found: Vec<usize> = self
            .graph
            .neighbors_directed(node, direction)
            .map(|n| self.graph[n])
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Returns each stage's level: 0 for stages that need nothing, otherwise one more than
    /// the highest level among the stages it needs.
    pub fn levels(&self) -> Vec<usize> {
        let mut level = vec![0usize; self.stages.len()];
        for &i in &self.topo_order {
            for up in self.upstream(i) {
                level[i] = level[i].max(level[up] + 1);
            }
        }
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topological_order_prefers_file_order() {
        // 0 -> 2, 1 -> 2, 3 independent
        let (graph, _) = build_graph(4, &[(0, 2), (1, 2)]);
        assert_eq!(topological_order(&graph), vec![0, 1, 2, 3]);
        let (graph, _) = build_graph(3, &[(2, 0), (2, 1)]);
        assert_eq!(topological_order(&graph), vec![2, 0, 1]);
    }

    #[test]
    fn cycles_are_reported_once_per_group_with_their_path() {
        // 0 -> 1 -> 2 -> 0, and 3 <-> 4, 5 alone
        let (graph, _) = build_graph(6, &[(0, 1), (1, 2), (2, 0), (3, 4), (4, 3), (1, 5)]);
        assert_eq!(find_cycles(&graph), vec![vec![0, 1, 2, 0], vec![3, 4, 3]]);
    }
}
