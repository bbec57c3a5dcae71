//! A layered layout of a DAG (longest-path layers, one barycenter sweep to order each layer)
//! drawn as inline SVG. Linear in nodes and edges apart from sorting each layer, so a graph
//! of thousands of nodes lays out in milliseconds; `for_each` instances arrive here already
//! grouped into one node per stage.

use maud::{Markup, html};

use super::encode_segment;

/// One node to draw.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// The stage name (the group of its instances).
    pub(super) name: String,
    /// The colour class: a stage state.
    pub(super) state: String,
    /// A second line, e.g. `×300 · 120 running`.
    pub(super) counts: String,
}

const NODE_W: f64 = 180.0;
const NODE_H: f64 = 44.0;
const GAP_X: f64 = 60.0;
const GAP_Y: f64 = 18.0;

/// Where each node goes: (layer, position in the layer).
pub(super) fn layers(n: usize, edges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut children = vec![Vec::new(); n];
    let mut parents = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for &(from, to) in edges {
        if from < n && to < n && from != to {
            children[from].push(to);
            parents[to].push(from);
            indegree[to] += 1;
        }
    }
    // Longest path from the sources, in topological order (Kahn); a node on a cycle (which a
    // validated DAG has not) stays in layer 0.
    let mut layer = vec![0usize; n];
    let mut queue: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut head = 0;
    while head < queue.len() {
        let u = queue[head];
        head += 1;
        for &v in &children[u] {
            layer[v] = layer[v].max(layer[u] + 1);
            indegree[v] -= 1;
            if indegree[v] == 0 {
                queue.push(v);
            }
        }
    }
    let depth = layer.iter().copied().max().map_or(0, |d| d + 1);
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, &l) in layer.iter().enumerate() {
        by_layer[l].push(i);
    }
    // Order each layer by the mean position of its parents, so edges cross less.
    let mut position = vec![0usize; n];
    for members in &mut by_layer {
        let mut keyed: Vec<(f64, usize)> = members
            .iter()
            .map(|&v| {
                let ps = &parents[v];
                let key = if ps.is_empty() {
                    v as f64
                } else {
                    ps.iter().map(|&p| position[p] as f64).sum::<f64>() / ps.len() as f64
                };
                (key, v)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (pos, &(_, v)) in keyed.iter().enumerate() {
            position[v] = pos;
        }
        *members = keyed.into_iter().map(|(_, v)| v).collect();
    }
    (0..n).map(|i| (layer[i], position[i])).collect()
}

/// The graph as inline SVG; each node links to `link(name)` when given.
pub(super) fn svg(
    nodes: &[Node],
    edges: &[(usize, usize)],
    link: Option<&dyn Fn(&str) -> String>,
) -> Markup {
    let placed = layers(nodes.len(), edges);
    let depth = placed.iter().map(|p| p.0 + 1).max().unwrap_or(0);
    let mut per_layer = vec![0usize; depth];
    for &(l, _) in &placed {
        per_layer[l] += 1;
    }
    let tallest = per_layer.iter().copied().max().unwrap_or(0);
    let width = depth as f64 * (NODE_W + GAP_X) - GAP_X + 8.0;
    let height = tallest as f64 * (NODE_H + GAP_Y) - GAP_Y + 8.0;
    // Centre each layer vertically.
    let xy = |i: usize| {
        let (l, p) = placed[i];
        let offset = (tallest - per_layer[l]) as f64 * (NODE_H + GAP_Y) / 2.0;
        (
            4.0 + l as f64 * (NODE_W + GAP_X),
            4.0 + offset + p as f64 * (NODE_H + GAP_Y),
        )
    };
    let mut paths = String::new();
    for &(from, to) in edges {
        if from >= nodes.len() || to >= nodes.len() {
            continue;
        }
        let (x1, y1) = xy(from);
        let (x2, y2) = xy(to);
        let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2.0, x2, y2 + NODE_H / 2.0);
        let mid = (sx + ex) / 2.0;
        paths.push_str(&format!(
            "M{sx:.0} {sy:.0}C{mid:.0} {sy:.0} {mid:.0} {ey:.0} {ex:.0} {ey:.0}"
        ));
    }
    html! {
        svg.graph xmlns="http://www.w3.org/2000/svg" width=(format!("{width:.0}")) height=(format!("{height:.0}"))
            viewBox=(format!("0 0 {width:.0} {height:.0}")) role="img" aria-label="stage graph" {
            path.edge d=(paths) {}
            @for (i, node) in nodes.iter().enumerate() {
                @let (x, y) = xy(i);
                g class={ "node " (node.state) } data-group=(node.name)
                    transform=(format!("translate({x:.0},{y:.0})")) {
                    @if let Some(link) = link {
                        a href=(link(&node.name)) {
                            (node_body(node))
                        }
                    } @else {
                        (node_body(node))
                    }
                }
            }
        }
    }
}

fn node_body(node: &Node) -> Markup {
    let label: String = if node.name.chars().count() > 24 {
        node.name.chars().take(23).chain(['…']).collect()
    } else {
        node.name.clone()
    };
    html! {
        title { (node.name) }
        rect width=(NODE_W) height=(NODE_H) rx="6" {}
        text x="10" y="18" { (label) }
        text.counts x="10" y="35" font-size="11" { (node.counts) }
    }
}

/// A link to a stage's anchor in a run's table.
pub(super) fn stage_anchor(name: &str) -> String {
    format!("#stage-{}", encode_segment(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_follow_the_longest_path_and_parents_order_children() {
        // a -> b -> d, a -> c -> d, a -> d, e alone.
        let edges = [(0, 1), (1, 3), (0, 2), (2, 3), (0, 3)];
        let placed = layers(5, &edges);
        assert_eq!(placed[0].0, 0);
        assert_eq!(placed[1].0, 1);
        assert_eq!(placed[2].0, 1);
        assert_eq!(placed[3].0, 2, "d sits after its longest path");
        assert_eq!(placed[4].0, 0);
        let mut layer0: Vec<_> = [0, 4].iter().map(|&i| placed[i].1).collect();
        layer0.sort();
        assert_eq!(layer0, vec![0, 1]);
    }

    #[test]
    fn a_wide_graph_lays_out_quickly() {
        let n = 20_000;
        let edges: Vec<_> = (1..n).map(|i| (i / 2, i)).collect();
        let started = std::time::Instant::now();
        let placed = layers(n, &edges);
        assert!(started.elapsed().as_millis() < 2_000);
        assert_eq!(placed[n - 1].0, 15, "depth of node i is floor(log2 i) + 1");
    }

    #[test]
    fn names_are_escaped_in_the_svg() {
        let nodes = vec![Node {
            name: "<script>x</script>".into(),
            state: "running".into(),
            counts: "1".into(),
        }];
        let svg = svg(&nodes, &[], None).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }
}
