//! Which earlier binding holds a host port, in O(log n) per binding.
//!
//! Comparing every binding with every other is quadratic: ten thousand
//! components on one port took minutes and printed fifty million lines.
//! Here each binding asks one question, "is any host port in my range
//! already held on an address I would share, and by whom?", of a map that
//! remembers, for every port, the first binding that held it.
//!
//! Addresses overlap as [`PortBinding::conflicts_with`] says: the same
//! address, or the unspecified address of the same family against any.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::model::{PortBinding, Protocol};

/// Host ports held so far, each with the owner that took it first.
#[derive(Debug)]
pub(crate) struct HostPorts<O> {
    /// Per protocol and address (the unspecified one included).
    by_address: HashMap<(Protocol, IpAddr), Painted<O>>,
    /// Per protocol and address family, every address together: what a
    /// binding on the unspecified address clashes with.
    by_family: HashMap<(Protocol, bool), Painted<O>>,
    /// How many bindings were held, so that two maps can tell which of
    /// their owners came first.
    held: usize,
}

impl<O> Default for HostPorts<O> {
    fn default() -> Self {
        Self {
            by_address: HashMap::new(),
            by_family: HashMap::new(),
            held: 0,
        }
    }
}

impl<O: Clone> HostPorts<O> {
    /// The owner of a held port that `b` would also bind, if any. For a
    /// single port that is the first binding that took it; for a range, the
    /// first holder of some port in it. Port 0 (the engine picks) clashes
    /// with nothing.
    pub(crate) fn clash(&self, b: &PortBinding) -> Option<&O> {
        if b.host_port == 0 {
            return None;
        }
        let (lo, hi) = (u32::from(b.host_port), u32::from(b.host_port_end));
        let family = (b.protocol, b.host_ip.is_ipv4());
        if b.host_ip.is_unspecified() {
            return self.by_family.get(&family)?.owner_in(lo, hi);
        }
        let own = self
            .by_address
            .get(&(b.protocol, b.host_ip))
            .and_then(|p| p.held_in(lo, hi));
        let any = self
            .by_address
            .get(&(b.protocol, unspecified(b.host_ip)))
            .and_then(|p| p.held_in(lo, hi));
        // Of two holders, the one held first.
        match (own, any) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a.1 } else { b.1 }),
            (a, b) => a.or(b).map(|(_, o)| o),
        }
    }

    /// Records `b` as held by `owner` wherever nothing held it before.
    pub(crate) fn hold(&mut self, b: &PortBinding, owner: O) {
        if b.host_port == 0 {
            return;
        }
        let (lo, hi) = (u32::from(b.host_port), u32::from(b.host_port_end));
        let order = self.held;
        self.held += 1;
        self.by_address
            .entry((b.protocol, b.host_ip))
            .or_default()
            .paint(lo, hi, order, owner.clone());
        self.by_family
            .entry((b.protocol, b.host_ip.is_ipv4()))
            .or_default()
            .paint(lo, hi, order, owner);
    }
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::from([0u8; 4]),
        IpAddr::V6(_) => IpAddr::from([0u16; 8]),
    }
}

/// Port ranges painted by their first owner.
///
/// `painted` holds disjoint segments, each with the owner that first covered
/// it (and the order it was held in, to pick the earlier of two maps); `covered`
/// holds their union, merged, so that painting a range visits only the
/// gaps: every segment of `covered` that a new range spans is merged into
/// it and never visited again, which keeps painting amortised O(log n).
#[derive(Debug)]
struct Painted<O> {
    /// Segment start -> (end, order, owner); disjoint.
    painted: BTreeMap<u32, (u32, usize, O)>,
    /// Union start -> end; disjoint and never adjacent.
    covered: BTreeMap<u32, u32>,
}

impl<O> Default for Painted<O> {
    fn default() -> Self {
        Self {
            painted: BTreeMap::new(),
            covered: BTreeMap::new(),
        }
    }
}

impl<O: Clone> Painted<O> {
    /// A segment overlapping `lo..=hi`: the one starting last at or before
    /// `hi` overlaps if any does, since the segments are disjoint.
    fn held_in(&self, lo: u32, hi: u32) -> Option<(usize, &O)> {
        let (_, (end, order, owner)) = self.painted.range(..=hi).next_back()?;
        (*end >= lo).then_some((*order, owner))
    }

    fn owner_in(&self, lo: u32, hi: u32) -> Option<&O> {
        self.held_in(lo, hi).map(|(_, o)| o)
    }

    fn paint(&mut self, lo: u32, hi: u32, order: usize, owner: O) {
        // The union segments that touch lo..=hi (overlap or adjacency).
        let first = self
            .covered
            .range(..lo)
            .next_back()
            .filter(|(_, &end)| end + 1 >= lo)
            .map(|(&start, _)| start)
            .unwrap_or(lo);
        let touching: Vec<(u32, u32)> = self
            .covered
            .range(first..=hi + 1)
            .map(|(&s, &e)| (s, e))
            .collect();
        let mut from = lo;
        for &(start, end) in &touching {
            if start > from {
                self.painted.insert(from, (start - 1, order, owner.clone()));
            }
            from = from.max(end + 1);
            self.covered.remove(&start);
        }
        if from <= hi {
            self.painted.insert(from, (hi, order, owner));
        }
        let start = touching.first().map_or(lo, |&(s, _)| s.min(lo));
        let end = touching.last().map_or(hi, |&(_, e)| e.max(hi));
        self.covered.insert(start, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(ip: &str, port: u16, end: u16) -> PortBinding {
        PortBinding {
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: ip.parse().unwrap(),
            host_port: port,
            host_port_end: end,
        }
    }

    #[test]
    fn a_single_port_clashes_with_its_first_owner() {
        let mut held = HostPorts::default();
        held.hold(&binding("0.0.0.0", 8080, 8080), "a");
        assert_eq!(held.clash(&binding("0.0.0.0", 8080, 8080)), Some(&"a"));
        held.hold(&binding("0.0.0.0", 8080, 8080), "b");
        assert_eq!(held.clash(&binding("0.0.0.0", 8080, 8080)), Some(&"a"));
        assert_eq!(held.clash(&binding("0.0.0.0", 8081, 8081)), None);
    }

    #[test]
    fn addresses_overlap_as_conflicts_with_says() {
        let mut held = HostPorts::default();
        held.hold(&binding("127.0.0.1", 80, 80), "lo");
        assert_eq!(held.clash(&binding("127.0.0.2", 80, 80)), None);
        assert_eq!(held.clash(&binding("0.0.0.0", 80, 80)), Some(&"lo"));
        assert_eq!(held.clash(&binding("::", 80, 80)), None);
        held.hold(&binding("0.0.0.0", 81, 81), "any");
        assert_eq!(held.clash(&binding("127.0.0.9", 81, 81)), Some(&"any"));
    }

    #[test]
    fn the_earlier_of_an_own_address_and_the_unspecified_one_is_named() {
        let mut held = HostPorts::default();
        held.hold(&binding("0.0.0.0", 80, 80), "first");
        held.hold(&binding("127.0.0.1", 80, 80), "second");
        assert_eq!(held.clash(&binding("127.0.0.1", 80, 80)), Some(&"first"));
    }

    #[test]
    fn ranges_clash_when_they_overlap_and_not_when_they_touch() {
        let mut held = HostPorts::default();
        held.hold(&binding("0.0.0.0", 8000, 8010), "r");
        assert_eq!(held.clash(&binding("0.0.0.0", 8010, 8020)), Some(&"r"));
        assert_eq!(held.clash(&binding("0.0.0.0", 7990, 7999)), None);
        assert_eq!(held.clash(&binding("0.0.0.0", 8011, 8011)), None);
        assert_eq!(held.clash(&binding("0.0.0.0", 1, 65535)), Some(&"r"));
    }

    #[test]
    fn port_zero_holds_and_clashes_with_nothing() {
        let mut held = HostPorts::default();
        held.hold(&binding("0.0.0.0", 0, 0), "zero");
        assert_eq!(held.clash(&binding("0.0.0.0", 0, 0)), None);
    }

    #[test]
    fn painting_over_held_ports_keeps_their_first_owners() {
        let mut held = HostPorts::default();
        held.hold(&binding("0.0.0.0", 10, 10), "a");
        held.hold(&binding("0.0.0.0", 20, 20), "b");
        held.hold(&binding("0.0.0.0", 1, 65535), "wide");
        assert_eq!(held.clash(&binding("0.0.0.0", 10, 10)), Some(&"a"));
        assert_eq!(held.clash(&binding("0.0.0.0", 20, 20)), Some(&"b"));
        assert_eq!(held.clash(&binding("0.0.0.0", 15, 15)), Some(&"wide"));
        assert_eq!(held.clash(&binding("0.0.0.0", 65535, 65535)), Some(&"wide"));
    }

    /// Against the pairwise definition, on every small layout of ranges.
    #[test]
    fn a_clash_is_found_exactly_when_some_earlier_binding_conflicts() {
        let ips = ["0.0.0.0", "127.0.0.1", "127.0.0.2"];
        let mut bindings = Vec::new();
        for ip in ips {
            for lo in 1..=4u16 {
                for hi in lo..=4 {
                    bindings.push(binding(ip, lo, hi));
                }
            }
        }
        // Many orders of a few bindings each, deterministic.
        let mut seed = 7u64;
        for _ in 0..2000 {
            let mut held = HostPorts::default();
            let mut earlier: Vec<PortBinding> = Vec::new();
            for _ in 0..5 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let b = bindings[(seed >> 33) as usize % bindings.len()].clone();
                let expected = earlier.iter().position(|e| e.conflicts_with(&b));
                let found: Option<usize> = held.clash(&b).copied();
                assert_eq!(
                    found.is_some(),
                    expected.is_some(),
                    "{b:?} after {earlier:?}"
                );
                if let Some(i) = found {
                    assert!(
                        earlier[i].conflicts_with(&b),
                        "{b:?} named {:?}",
                        earlier[i]
                    );
                }
                held.hold(&b, earlier.len());
                earlier.push(b);
            }
        }
    }
}
