//! Counting who holds a bounded resource (serving slots, pending chat requests, open
//! chats), in total and per remote address, so that one address can never take every
//! place. A place is held by a [`Slot`] and given back when it drops, whatever path the
//! holder leaves by.

use crate::net::address_key;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Why a place was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Every place is taken.
    Total,
    /// The asking address (its /64 for IPv6) holds its share already.
    Address,
}

/// Holders of one resource: how many in all, and how many per address key.
#[derive(Default)]
pub(crate) struct Gauge {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: usize,
    per_addr: HashMap<IpAddr, usize>,
}

impl Gauge {
    /// Take a place for `ip` (`None`: a local holder, counted in the total only), unless
    /// that makes more than `max_total` in all or `max_per_addr` for `ip`'s key.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        max_total: usize,
        max_per_addr: usize,
    ) -> Result<Slot, Full> {
        let key = ip.map(address_key);
        let mut state = self.state.lock();
        if state.total >= max_total {
            return Err(Full::Total);
        }
        if let Some(k) = key {
            let held = state.per_addr.entry(k).or_insert(0);
            if *held >= max_per_addr {
                return Err(Full::Address);
            }
            *held += 1;
        }
        state.total += 1;
        Ok(Slot {
            gauge: self.clone(),
            key,
        })
    }

    /// Whether [`try_acquire`](Self::try_acquire) would give a place now (without taking
    /// one: for refusing early, before work that a place is only needed after).
    pub fn check(
        &self,
        ip: Option<IpAddr>,
        max_total: usize,
        max_per_addr: usize,
    ) -> Result<(), Full> {
        let state = self.state.lock();
        if state.total >= max_total {
            return Err(Full::Total);
        }
        let held = ip.map_or(0, |ip| {
            state.per_addr.get(&address_key(ip)).copied().unwrap_or(0)
        });
        if ip.is_some() && held >= max_per_addr {
            return Err(Full::Address);
        }
        Ok(())
    }

    /// How many places are held now.
    pub fn total(&self) -> usize {
        self.state.lock().total
    }
}

/// One held place; dropping it gives the place back.
pub(crate) struct Slot {
    gauge: Arc<Gauge>,
    key: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.gauge.state.lock();
        state.total -= 1;
        if let Some(k) = self.key {
            if let Some(held) = state.per_addr.get_mut(&k) {
                *held -= 1;
                if *held == 0 {
                    state.per_addr.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_total_and_per_address_and_places_come_back() {
        let g = Arc::new(Gauge::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let a1 = g.try_acquire(Some(a), 4, 2).unwrap();
        let _a2 = g.try_acquire(Some(a), 4, 2).unwrap();
        assert_eq!(g.try_acquire(Some(a), 4, 2).err(), Some(Full::Address));
        let _b1 = g.try_acquire(Some(b), 4, 2).unwrap();
        let _b2 = g.try_acquire(Some(b_same_64), 4, 2).unwrap();
        assert_eq!(g.try_acquire(Some(b), 4, 2).err(), Some(Full::Total));
        assert_eq!(g.total(), 4);
        drop(a1);
        assert_eq!(g.total(), 3);
        assert_eq!(g.try_acquire(Some(b), 4, 2).err(), Some(Full::Address));
        let _local = g.try_acquire(None, 4, 2).unwrap();
        assert_eq!(g.try_acquire(None, 4, 2).err(), Some(Full::Total));
    }
}
