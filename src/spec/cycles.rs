//! `dependsOn` cycles in linear time, without recursion.
//!
//! Walking the graph afresh from every component is quadratic on a long
//! chain, and a recursive walk of a 10,000-link chain overflows the stack;
//! Tarjan's algorithm with an explicit stack finds every strongly connected
//! group in one pass, and a breadth-first search inside each group gives
//! its shortest cycle to quote.

use std::collections::{HashMap, VecDeque};

/// One cycle per group of components that depend on each other in a
/// circle: the group's first member (in document order), then the members
/// along the cycle back to it. Groups come in the order of their first
/// members. `edges[i]` are the components `i` depends on; self-edges are
/// the caller's to report and are ignored here.
pub(crate) fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let groups = strongly_connected(edges);
    let mut group_of = vec![0usize; edges.len()];
    for (g, members) in groups.iter().enumerate() {
        for &v in members {
            group_of[v] = g;
        }
    }
    let mut out: Vec<Vec<usize>> = groups
        .iter()
        .filter(|g| g.len() > 1)
        .filter_map(|g| shortest_cycle(edges, *g.iter().min()?, &group_of))
        .collect();
    out.sort_by_key(|c| c[0]);
    out
}

/// Tarjan's strongly connected components, iteratively.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index: Vec<Option<usize>> = vec![None; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut groups = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root].is_some() {
            continue;
        }
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = Some(next);
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (u, ref mut e)) = calls.last_mut() {
            if let Some(&w) = edges[u].get(*e) {
                *e += 1;
                if w == u || w >= n {
                    continue;
                }
                match index[w] {
                    None => {
                        index[w] = Some(next);
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    }
                    Some(iw) if on_stack[w] => low[u] = low[u].min(iw),
                    Some(_) => {}
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[u]);
            }
            if Some(low[u]) == index[u] {
                let mut group = Vec::new();
                while let Some(v) = stack.pop() {
                    on_stack[v] = false;
                    group.push(v);
                    if v == u {
                        break;
                    }
                }
                groups.push(group);
            }
        }
    }
    groups
}

/// The shortest way from `start` back to itself within its group. Visits
/// only the group, so all groups together cost one pass over the graph.
fn shortest_cycle(edges: &[Vec<usize>], start: usize, group_of: &[usize]) -> Option<Vec<usize>> {
    let group = group_of[start];
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(u) = queue.pop_front() {
        for &w in &edges[u] {
            if w == start && u != start {
                let mut path = vec![u];
                let mut at = u;
                while let Some(&p) = parent.get(&at) {
                    path.push(p);
                    at = p;
                }
                path.reverse();
                path.push(start);
                return Some(path);
            }
            if w != start && group_of.get(w) == Some(&group) && !parent.contains_key(&w) {
                parent.insert(w, u);
                queue.push_back(w);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_cycle_is_quoted_from_its_first_member() {
        assert_eq!(cycles(&[vec![1], vec![0]]), [vec![0, 1, 0]]);
    }

    #[test]
    fn a_chain_has_no_cycle() {
        let chain: Vec<Vec<usize>> = (0..10_000)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        assert!(cycles(&chain).is_empty());
    }

    #[test]
    fn a_ring_of_ten_thousand_is_one_cycle_through_all() {
        let n = 10_000;
        let ring: Vec<Vec<usize>> = (0..n).map(|i| vec![(i + 1) % n]).collect();
        let found = cycles(&ring);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), n + 1);
        assert_eq!((found[0][0], found[0][n]), (0, 0));
    }

    #[test]
    fn each_group_is_reported_once_with_its_shortest_cycle() {
        // 0 <-> 1 and 1 -> 2 -> 1: one group {0, 1, 2}; 3 -> 4 -> 3 another.
        let edges = vec![vec![1], vec![0, 2], vec![1], vec![4], vec![3]];
        assert_eq!(cycles(&edges), [vec![0, 1, 0], vec![3, 4, 3]]);
    }

    #[test]
    fn self_edges_and_a_node_leading_into_a_cycle_are_not_cycles() {
        let edges = vec![vec![0, 1], vec![2], vec![1]];
        assert_eq!(cycles(&edges), [vec![1, 2, 1]]);
    }
}
