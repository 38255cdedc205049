//! Admission of new QUIC connections before they authenticate: a plain
//! state machine (no I/O, no clock) that the accept loop drives.
//!
//! The threat: connections that finish (or merely start) the TLS handshake
//! and then say nothing. Without a separate budget they fill
//! `max_connections` and every honest client is refused. The rules:
//!
//! 1. **Per address.** At most `max_connections_per_ip` connections from one
//!    IP address. When an address is at its cap, its oldest unauthenticated
//!    connection makes room; only an address whose connections are all
//!    authenticated is refused.
//! 2. **Address validation.** Once half of the pre-auth budget is in use, an
//!    Initial from an unvalidated address is answered with a QUIC Retry:
//!    a spoofed source address cannot complete it.
//! 3. **Pre-auth budget.** At most `max_unauthenticated_connections`
//!    connections between accept and `Welcome`; beyond, the *oldest*
//!    unauthenticated connection is evicted to admit the new one.
//! 4. **Total.** At most `max_connections`; when full, the oldest
//!    unauthenticated connection is evicted, and only a relay whose
//!    connections are all authenticated refuses.
//!
//! Evicting the oldest rather than refusing the newest means an attacker
//! who holds connections open cannot lock honest clients out, even from the
//! same address (a NAT, or loopback in tests): an honest client completes
//! its handshake and `Auth` within a round trip or two, long before the
//! attacker's flood reaches it in the eviction order. The handshake timeout
//! bounds how long any silent connection lives at all.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The numbers the rules use.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Connections in total.
    pub max_connections: usize,
    /// Connections not yet authenticated.
    pub max_unauthenticated: usize,
    /// Connections per remote IP address.
    pub max_per_ip: usize,
}

/// What to do with a new connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accept it as connection `id`, after closing the connections in
    /// `evict` (oldest unauthenticated first).
    Accept {
        /// The new connection's id.
        id: u64,
        /// Unauthenticated connections to close to make room.
        evict: Vec<u64>,
    },
    /// Answer with a QUIC Retry (address validation) and decide again when
    /// the client comes back with the token.
    Retry,
    /// Refuse it; the reason is for the log.
    Refuse(&'static str),
}

#[derive(Debug)]
struct Conn {
    ip: IpAddr,
    authenticated: bool,
}

/// The admission state.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    next_id: u64,
    conns: HashMap<u64, Conn>,
    /// Unauthenticated connections by id, i.e. by age (ids only grow).
    pending: BTreeMap<u64, IpAddr>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    /// An empty state.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            next_id: 0,
            conns: HashMap::new(),
            pending: BTreeMap::new(),
            per_ip: HashMap::new(),
        }
    }

    /// Connections open (accepted and not yet closed).
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// Connections open and not yet authenticated.
    pub fn unauthenticated(&self) -> usize {
        self.pending.len()
    }

    /// Decides about a new connection from `ip`; `validated` is whether its
    /// address is proven (it came back with a Retry token), `may_retry`
    /// whether a Retry can still be sent.
    pub fn on_incoming(&mut self, ip: IpAddr, validated: bool, may_retry: bool) -> Decision {
        let l = self.limits;
        // Planned evictions, so one connection is never counted twice.
        let mut evict: Vec<u64> = Vec::new();
        let ip_count = self.per_ip.get(&ip).copied().unwrap_or(0);
        if ip_count >= l.max_per_ip {
            match self.oldest_pending(|p| p == ip, &evict) {
                Some(id) => evict.push(id),
                None => return Decision::Refuse("connection limit per address reached"),
            }
        }
        if !validated && may_retry && self.pending.len() * 2 >= l.max_unauthenticated {
            return Decision::Retry;
        }
        let pending_after = |evict: &Vec<u64>| self.pending.len() - evict.len();
        if pending_after(&evict) >= l.max_unauthenticated {
            match self.oldest_pending(|_| true, &evict) {
                Some(id) => evict.push(id),
                None => return Decision::Refuse("pre-authentication limit reached"),
            }
        }
        if self.conns.len() - evict.len() >= l.max_connections {
            match self.oldest_pending(|_| true, &evict) {
                Some(id) => evict.push(id),
                None => return Decision::Refuse("connection limit reached"),
            }
        }
        for id in &evict {
            self.on_closed(*id);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                ip,
                authenticated: false,
            },
        );
        self.pending.insert(id, ip);
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Decision::Accept { id, evict }
    }

    fn oldest_pending(&self, want: impl Fn(IpAddr) -> bool, skip: &[u64]) -> Option<u64> {
        self.pending
            .iter()
            .find(|(id, ip)| want(**ip) && !skip.contains(id))
            .map(|(id, _)| *id)
    }

    /// Connection `id` sent a valid `Auth` and got `Welcome`: it leaves the
    /// pre-auth budget and can no longer be evicted.
    pub fn on_authenticated(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.authenticated = true;
            self.pending.remove(&id);
        }
    }

    /// Connection `id` ended (or was evicted). Idempotent.
    pub fn on_closed(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            if !c.authenticated {
                self.pending.remove(&id);
            }
            if let Some(n) = self.per_ip.get_mut(&c.ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&c.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn adm(total: usize, unauth: usize, per_ip: usize) -> Admission {
        Admission::new(AdmissionLimits {
            max_connections: total,
            max_unauthenticated: unauth,
            max_per_ip: per_ip,
        })
    }

    fn accept(a: &mut Admission, ip: IpAddr) -> (u64, Vec<u64>) {
        match a.on_incoming(ip, true, false) {
            Decision::Accept { id, evict } => (id, evict),
            d => panic!("expected accept, got {d:?}"),
        }
    }

    #[test]
    fn silent_connections_are_evicted_oldest_first_when_full() {
        let mut a = adm(50, 100, 1000);
        for i in 0..50 {
            assert_eq!(accept(&mut a, A), (i, vec![]));
        }
        // Full: the honest 51st, from the same address, evicts the oldest.
        assert_eq!(accept(&mut a, A), (50, vec![0]));
        a.on_authenticated(50);
        // Ten more silent ones each evict the next oldest, never the
        // authenticated one.
        for i in 0..10 {
            assert_eq!(accept(&mut a, A).1, vec![1 + i]);
        }
        assert_eq!(a.open(), 50);
        assert_eq!(a.unauthenticated(), 49);
    }

    #[test]
    fn all_authenticated_means_refuse() {
        let mut a = adm(3, 10, 10);
        for _ in 0..3 {
            let (id, _) = accept(&mut a, A);
            a.on_authenticated(id);
        }
        assert_eq!(
            a.on_incoming(B, true, false),
            Decision::Refuse("connection limit reached")
        );
        a.on_closed(0);
        assert!(matches!(
            a.on_incoming(B, true, false),
            Decision::Accept { .. }
        ));
    }

    #[test]
    fn pre_auth_budget_evicts_before_the_total_is_reached() {
        let mut a = adm(100, 4, 100);
        for _ in 0..4 {
            accept(&mut a, A);
        }
        assert_eq!(accept(&mut a, B), (4, vec![0]));
        assert_eq!(a.unauthenticated(), 4);
    }

    #[test]
    fn per_address_cap_evicts_that_address_only() {
        let mut a = adm(100, 100, 2);
        let (b0, _) = accept(&mut a, B);
        accept(&mut a, A);
        accept(&mut a, A);
        // A is at its cap: its own oldest goes, B's older one stays.
        assert_eq!(accept(&mut a, A), (3, vec![1]));
        a.on_authenticated(2);
        a.on_authenticated(3);
        assert_eq!(
            a.on_incoming(A, true, false),
            Decision::Refuse("connection limit per address reached")
        );
        assert!(a.pending.contains_key(&b0));
    }

    #[test]
    fn retry_once_half_the_pre_auth_budget_is_used() {
        let mut a = adm(100, 4, 100);
        assert!(matches!(
            a.on_incoming(A, false, true),
            Decision::Accept { .. }
        ));
        assert!(matches!(
            a.on_incoming(A, false, true),
            Decision::Accept { .. }
        ));
        assert_eq!(a.on_incoming(A, false, true), Decision::Retry);
        // Validated (came back with the token), or no Retry possible: decided.
        assert!(matches!(
            a.on_incoming(A, true, true),
            Decision::Accept { .. }
        ));
        assert!(matches!(
            a.on_incoming(A, false, false),
            Decision::Accept { .. }
        ));
    }

    #[test]
    fn close_is_idempotent_and_frees_everything() {
        let mut a = adm(10, 10, 10);
        let (id, _) = accept(&mut a, A);
        a.on_closed(id);
        a.on_closed(id);
        a.on_authenticated(id);
        assert_eq!((a.open(), a.unauthenticated()), (0, 0));
        assert!(a.per_ip.is_empty());
    }
}
