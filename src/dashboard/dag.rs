//! A Job's step graph drawn on the server as SVG: a pure layout (each step in the
//! column after its deepest dependency, spec order within a column) and its markup,
//! one `<g>` per step coloured by phase through a CSS class. Server-side, so the
//! graph needs no JavaScript, costs the page nothing to lay out, and is tested here.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::html::escape;

/// One node: a step's name, what it depends on, and its phase's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub depends_on: Vec<String>,
    pub phase: String,
}

/// Where each node sits: (column, row), in the nodes' order.
pub fn layout(nodes: &[Node]) -> Vec<(usize, usize)> {
    let columns = columns(nodes);
    let mut next_row: BTreeMap<usize, usize> = BTreeMap::new();
    columns
        .into_iter()
        .map(|c| {
            let row = next_row.entry(c).or_insert(0);
            *row += 1;
            (c, *row - 1)
        })
        .collect()
}

/// Each node's column: one past its deepest dependency's. Unknown dependencies are
/// ignored; a node on a cycle (an invalid spec) stays where the cycle was found.
fn columns(nodes: &[Node]) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut column = vec![0usize; nodes.len()];
    // Longest path by relaxation: at most n rounds, fewer when nothing moves.
    for _ in 0..nodes.len() {
        let mut moved = false;
        for (i, n) in nodes.iter().enumerate() {
            let want = n
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()))
                .map(|&d| column[d] + 1)
                .max()
                .unwrap_or(0)
                .min(nodes.len());
            if want > column[i] {
                column[i] = want;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    column
}

const W: usize = 168;
const H: usize = 44;
const GAP_X: usize = 48;
const GAP_Y: usize = 14;

fn origin((col, row): (usize, usize)) -> (usize, usize) {
    (8 + col * (W + GAP_X), 8 + row * (H + GAP_Y))
}

/// The graph as an `<svg>` element (role `img`, labelled; each step a link to its
/// section of the page).
pub fn svg(nodes: &[Node]) -> String {
    let places = layout(nodes);
    let cols = places.iter().map(|p| p.0 + 1).max().unwrap_or(0);
    let rows = places.iter().map(|p| p.1 + 1).max().unwrap_or(0);
    let (width, height) = (16 + cols * (W + GAP_X), 16 + rows * (H + GAP_Y));
    let mut out = format!(
        r#"<svg class="dag" role="img" aria-labelledby="dag-title" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"><title id="dag-title">Step graph: {} steps</title>"#,
        nodes.len()
    );
    edges(&mut out, nodes, &places);
    for (n, &place) in nodes.iter().zip(&places) {
        node(&mut out, n, place);
    }
    out.push_str("</svg>");
    out
}

fn edges(out: &mut String, nodes: &[Node], places: &[(usize, usize)]) {
    let at: BTreeMap<&str, (usize, usize)> = nodes
        .iter()
        .zip(places)
        .map(|(n, &p)| (n.name.as_str(), p))
        .collect();
    for (n, &place) in nodes.iter().zip(places) {
        let (x2, y2) = origin(place);
        for from in n.depends_on.iter().filter_map(|d| at.get(d.as_str())) {
            let (x1, y1) = origin(*from);
            let (x1, y1, y2) = (x1 + W, y1 + H / 2, y2 + H / 2);
            let mid = (x1 + x2) / 2;
            let _ = write!(
                out,
                r#"<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"/>"#
            );
        }
    }
}

fn node(out: &mut String, n: &Node, place: (usize, usize)) {
    let (x, y) = origin(place);
    let name = escape(&n.name);
    let phase = escape(&n.phase);
    let class = phase.to_ascii_lowercase();
    let label = shorten(&n.name, 20);
    let _ = write!(
        out,
        r##"<a href="#step-{name}"><g class="node phase-{class}" data-step="{name}" data-phase="{phase}"><title>{name}: {phase}</title><rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6"/><text x="{tx}" y="{ty1}">{label}</text><text class="phase" x="{tx}" y="{ty2}">{phase}</text></g></a>"##,
        label = escape(&label),
        tx = x + 10,
        ty1 = y + 18,
        ty2 = y + 35,
    );
}

/// At most `max` characters, an ellipsis standing for the rest.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, deps: &[&str], phase: &str) -> Node {
        Node {
            name: name.into(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            phase: phase.into(),
        }
    }

    #[test]
    fn steps_sit_one_column_past_their_deepest_dependency() {
        // a → b → d, a → c, c → d; e alone; d listed before its dependency c.
        let nodes = [
            n("a", &[], "Succeeded"),
            n("b", &["a"], "Running"),
            n("d", &["b", "c"], "Pending"),
            n("c", &["a"], "Succeeded"),
            n("e", &[], "Pending"),
        ];
        assert_eq!(layout(&nodes), [(0, 0), (1, 0), (2, 0), (1, 1), (0, 1)]);
    }

    #[test]
    fn cycles_and_unknown_dependencies_end_the_layout_anyway() {
        let nodes = [n("a", &["b"], "Pending"), n("b", &["a", "zz"], "Pending")];
        let places = layout(&nodes);
        assert_eq!(places.len(), 2);
        assert!(places.iter().all(|p| p.0 <= nodes.len()), "{places:?}");
        assert_eq!(layout(&[n("x", &["missing"], "Pending")]), [(0, 0)]);
    }

    #[test]
    fn the_svg_draws_each_step_with_its_phase_and_each_dependency_as_an_edge() {
        let svg = svg(&[
            n("build", &[], "Succeeded"),
            n("test", &["build"], "Running"),
        ]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(
            svg.contains(
                r#"class="node phase-succeeded" data-step="build" data-phase="Succeeded""#
            )
        );
        assert!(
            svg.contains(r#"class="node phase-running" data-step="test" data-phase="Running""#)
        );
        assert_eq!(svg.matches(r#"class="edge""#).count(), 1);
        assert!(svg.contains("Step graph: 2 steps"));
    }

    #[test]
    fn step_names_are_escaped_and_long_ones_shortened() {
        let svg = svg(&[n("<script>&\"x\"-and-a-very-long-tail", &[], "Pending")]);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;&amp;&quot;x&quot;"), "{svg}");
        assert!(svg.contains('…'));
        assert_eq!(shorten("short", 20), "short");
    }

    #[test]
    fn two_hundred_steps_lay_out_in_a_bounded_number_of_columns() {
        // A chain of 10 and 190 steps fanned out of its head: 10 columns.
        let mut nodes: Vec<Node> = (0..10)
            .map(|i| {
                let dep = (i > 0).then(|| format!("s{}", i - 1));
                n(&format!("s{i}"), &[], "Pending").with(dep)
            })
            .collect();
        nodes.extend((0..190).map(|i| n(&format!("f{i}"), &["s0"], "Pending")));
        let places = layout(&nodes);
        assert_eq!(places.iter().map(|p| p.0).max(), Some(9));
        assert_eq!(places.iter().filter(|p| p.0 == 1).count(), 191);
    }

    impl Node {
        fn with(mut self, dep: Option<String>) -> Node {
            self.depends_on.extend(dep);
            self
        }
    }
}
