//! Allocation of the ports handed to children (`GRPC_PORT`, `HEALTH_PORT`) from a range.

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;

use crate::reconcile::{PortNeeds, Ports, ProcessId, RequestedPorts};

#[derive(Debug, thiserror::Error)]
#[error("no free port left in {start}-{end} for {id} ({allocated} are allocated to processes)")]
pub struct PortsExhausted {
    pub id: ProcessId,
    pub start: u16,
    pub end: u16,
    pub allocated: usize,
}

/// Hands out ports that are free on the host and not held by another id.
#[derive(Debug)]
pub struct PortAllocator {
    range: RangeInclusive<u16>,
    /// Port → the id holding it.
    holders: HashMap<u16, ProcessId>,
    /// Where the next search starts, so that released ports are not reused at once.
    cursor: u16,
}

impl PortAllocator {
    pub fn new(range: RangeInclusive<u16>) -> PortAllocator {
        let cursor = *range.start();
        PortAllocator {
            range,
            holders: HashMap::new(),
            cursor,
        }
    }

    /// Records that `id` holds `ports` (from a previous run) without checking them.
    pub fn claim(&mut self, id: &ProcessId, ports: Ports) {
        // 0 means "none allocated" (a process that never started).
        for port in [ports.grpc, ports.health] {
            if port != 0 {
                self.holders.insert(port, id.clone());
            }
        }
    }

    /// Ports for `id`, only the ones it `needs` (0 for the others): its previous ports when
    /// still usable, else the requested ones when free, else fresh ones from the range.
    pub fn allocate(
        &mut self,
        id: &ProcessId,
        previous: Option<Ports>,
        requested: RequestedPorts,
        needs: PortNeeds,
    ) -> Result<Ports, PortsExhausted> {
        let grpc = if needs.grpc {
            self.pick(id, requested.grpc, previous.map(|p| p.grpc), None)?
        } else {
            0
        };
        let health = if needs.health {
            let sibling = (grpc != 0).then_some(grpc);
            match self.pick(id, requested.health, previous.map(|p| p.health), sibling) {
                Ok(port) => port,
                Err(exhausted) => {
                    // The gRPC port just taken goes back with the error: no start holds it.
                    self.give_back(id, Ports { grpc, health: 0 }, previous);
                    return Err(exhausted);
                }
            }
        } else {
            0
        };
        // Ports this id held before and no longer uses go back to the pool.
        if let Some(previous) = previous {
            for port in [previous.grpc, previous.health] {
                if port != grpc && port != health && self.holders.get(&port) == Some(id) {
                    self.holders.remove(&port);
                }
            }
        }
        Ok(Ports { grpc, health })
    }

    /// Gives back every port `id` holds.
    pub fn release(&mut self, id: &ProcessId) {
        self.holders.retain(|_, holder| holder != id);
    }

    /// Undoes an `allocate` for `id` whose start did not happen: the ports it `took` go back,
    /// and the ports it held before (`kept`, its record's) are its own again unless another id
    /// took one since; the next `allocate` for it then starts from where it was.
    pub fn give_back(&mut self, id: &ProcessId, took: Ports, kept: Option<Ports>) {
        let kept = kept.unwrap_or(Ports { grpc: 0, health: 0 });
        for port in [took.grpc, took.health] {
            if port != 0
                && port != kept.grpc
                && port != kept.health
                && self.holders.get(&port) == Some(id)
            {
                self.holders.remove(&port);
            }
        }
        for port in [kept.grpc, kept.health] {
            if port != 0 {
                self.holders.entry(port).or_insert_with(|| id.clone());
            }
        }
    }

    /// How many ports `id` holds.
    #[cfg(test)]
    pub fn held_by(&self, id: &ProcessId) -> usize {
        self.holders.values().filter(|holder| *holder == id).count()
    }

    fn pick(
        &mut self,
        id: &ProcessId,
        requested: Option<u16>,
        previous: Option<u16>,
        taken_by_sibling: Option<u16>,
    ) -> Result<u16, PortsExhausted> {
        // Port 0 is "none" in a record and "any" to bind(2): never a port to hand out.
        for candidate in [requested, previous]
            .into_iter()
            .flatten()
            .filter(|port| *port != 0)
        {
            if Some(candidate) != taken_by_sibling && self.usable_by(id, candidate) {
                self.holders.insert(candidate, id.clone());
                return Ok(candidate);
            }
        }
        let (start, end) = (*self.range.start(), *self.range.end());
        let size = u32::from(end - start) + 1;
        for step in 0..size {
            let offset = (u32::from(self.cursor - start) + step) % size;
            // `offset < size` and `start + size - 1 == end`, so the sum fits in a u16.
            let candidate = start + offset as u16;
            if Some(candidate) != taken_by_sibling
                && !self.holders.contains_key(&candidate)
                && is_free(candidate)
            {
                self.cursor = if candidate == end {
                    start
                } else {
                    candidate + 1
                };
                self.holders.insert(candidate, id.clone());
                return Ok(candidate);
            }
        }
        Err(PortsExhausted {
            id: id.clone(),
            start,
            end,
            allocated: self.holders.len(),
        })
    }

    fn usable_by(&self, id: &ProcessId, port: u16) -> bool {
        match self.holders.get(&port) {
            Some(holder) if holder != id => false,
            _ => is_free(port),
        }
    }
}

/// Whether nothing listens on the port on loopback or on all addresses.
fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: PortNeeds = PortNeeds {
        grpc: true,
        health: true,
    };

    fn id(name: &str) -> ProcessId {
        ProcessId::new(name).unwrap()
    }

    /// An allocator of a port that was free a moment ago and the `span` ports after it.
    fn from_a_free_port(span: u16) -> PortAllocator {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let start = probe.local_addr().unwrap().port();
        drop(probe);
        PortAllocator::new(start..=start.saturating_add(span))
    }

    #[test]
    fn a_process_that_needs_no_port_gets_none_and_gives_back_what_it_held() {
        let mut allocator = from_a_free_port(1);
        let both = allocator
            .allocate(&id("a"), None, RequestedPorts::default(), BOTH)
            .unwrap();
        let none = allocator
            .allocate(
                &id("a"),
                Some(both),
                RequestedPorts::default(),
                PortNeeds::default(),
            )
            .unwrap();
        assert_eq!(none, Ports { grpc: 0, health: 0 });
        let health_only = PortNeeds {
            grpc: false,
            health: true,
        };
        let other = allocator
            .allocate(&id("b"), None, RequestedPorts::default(), health_only)
            .unwrap();
        assert_eq!(other.grpc, 0);
        assert_ne!(other.health, 0, "the ports `a` gave back are free again");
    }

    #[test]
    fn ports_are_distinct_stable_for_an_id_and_skip_ports_in_use() {
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let busy_port = busy.local_addr().unwrap().port();
        let start = busy_port;
        let mut allocator = PortAllocator::new(start..=start.saturating_add(20));
        let first = allocator
            .allocate(&id("a"), None, RequestedPorts::default(), BOTH)
            .unwrap();
        assert_ne!(first.grpc, busy_port, "a port in use is never handed out");
        assert_ne!(first.health, busy_port);
        assert_ne!(first.grpc, first.health);
        let second = allocator
            .allocate(&id("b"), None, RequestedPorts::default(), BOTH)
            .unwrap();
        assert!(![first.grpc, first.health].contains(&second.grpc));
        assert!(![first.grpc, first.health].contains(&second.health));
        let again = allocator
            .allocate(&id("a"), Some(first), RequestedPorts::default(), BOTH)
            .unwrap();
        assert_eq!(again, first, "a restart keeps its ports");
    }

    #[test]
    fn a_requested_port_is_used_when_free_and_replaced_when_busy() {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let free_port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut allocator =
            PortAllocator::new(free_port.saturating_add(1)..=free_port.saturating_add(30));
        let requested = RequestedPorts {
            grpc: None,
            health: Some(free_port),
        };
        let ports = allocator.allocate(&id("a"), None, requested, BOTH).unwrap();
        assert_eq!(ports.health, free_port);
        let other = allocator.allocate(&id("b"), None, requested, BOTH).unwrap();
        assert_ne!(
            other.health, free_port,
            "a port held by another id is not shared"
        );
    }

    #[test]
    fn ports_given_back_are_free_again_and_the_ports_held_before_are_held_again() {
        let mut allocator = from_a_free_port(30);
        // A first start that did not happen: everything it took is free again.
        let took = allocator
            .allocate(&id("a"), None, RequestedPorts::default(), BOTH)
            .unwrap();
        allocator.give_back(&id("a"), took, None);
        assert!(allocator.holders.is_empty(), "{:?}", allocator.holders);
        // A start of an id with a record: what its record holds stays its own.
        let held = allocator
            .allocate(&id("b"), None, RequestedPorts::default(), BOTH)
            .unwrap();
        let requested = RequestedPorts {
            grpc: Some(took.grpc),
            health: None,
        };
        let moved = allocator
            .allocate(&id("b"), Some(held), requested, BOTH)
            .unwrap();
        assert_eq!(moved.grpc, took.grpc);
        assert_eq!(moved.health, held.health);
        assert!(
            !allocator.holders.contains_key(&held.grpc),
            "released by the move"
        );
        allocator.give_back(&id("b"), moved, Some(held));
        let mut holders: Vec<u16> = allocator.holders.keys().copied().collect();
        holders.sort_unstable();
        let mut expected = vec![held.grpc, held.health];
        expected.sort_unstable();
        assert_eq!(holders, expected);
        // A port of the record that another id took meanwhile stays that id's.
        let moved = allocator
            .allocate(&id("b"), Some(held), requested, BOTH)
            .unwrap();
        allocator.claim(
            &id("c"),
            Ports {
                grpc: held.grpc,
                health: 0,
            },
        );
        allocator.give_back(&id("b"), moved, Some(held));
        assert_eq!(allocator.holders.get(&held.grpc), Some(&id("c")));
        assert_eq!(allocator.holders.get(&held.health), Some(&id("b")));
        assert!(!allocator.holders.contains_key(&moved.grpc));
    }

    #[test]
    fn a_start_that_gets_only_one_of_its_two_ports_holds_neither() {
        // One port: the gRPC port is found, the health port is not.
        let mut allocator = from_a_free_port(0);
        allocator
            .allocate(&id("a"), None, RequestedPorts::default(), BOTH)
            .unwrap_err();
        assert!(allocator.holders.is_empty(), "{:?}", allocator.holders);
        // Every retry finds the same one port free, instead of one fewer each time.
        let grpc_only = PortNeeds {
            grpc: true,
            health: false,
        };
        let ports = allocator
            .allocate(&id("b"), None, RequestedPorts::default(), grpc_only)
            .unwrap();
        assert_ne!(ports.grpc, 0);
    }

    #[test]
    fn port_zero_is_never_handed_out() {
        let mut allocator = from_a_free_port(10);
        let none = Ports { grpc: 0, health: 0 };
        allocator.claim(&id("a"), none);
        let requested = RequestedPorts {
            grpc: Some(0),
            health: Some(0),
        };
        let ports = allocator
            .allocate(&id("a"), Some(none), requested, BOTH)
            .unwrap();
        assert_ne!(ports.grpc, 0);
        assert_ne!(ports.health, 0);
    }

    #[test]
    fn an_exhausted_range_is_an_error_that_names_the_range() {
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = busy.local_addr().unwrap().port();
        let mut allocator = PortAllocator::new(port..=port);
        let error = allocator
            .allocate(&id("a"), None, RequestedPorts::default(), BOTH)
            .unwrap_err();
        assert!(
            error.to_string().contains(&format!("{port}-{port}")),
            "{error}"
        );
    }
}
