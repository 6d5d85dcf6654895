//! Per-instance statistics (BEHAVIOUR.md §11): what happened, readable by the
//! integrator through `MmMpGetStatistics`. Counters only grow; each is a
//! Relaxed `fetch_add` — they order nothing, and a reader only needs each
//! counter's own value.

use crate::sync::atomic::{AtomicU64, Ordering};

/// Which counter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Counter {
    /// SMIs handled (one per BSP run).
    Smis,
    /// SMIs that were not valid and had no BSP inside.
    SpuriousSmis,
    /// CPUs that came after the door was locked.
    LateCpus,
    /// SMI IPIs sent (by the BSP to absent CPUs, by APs to a missing BSP).
    IpisSent,
    /// Waits that ended by a timeout (arrival, BSP wait, MM MP calls).
    Timeouts,
    /// APs marked lost (procedure still running past the exit timeout).
    LostAps,
    /// DispatchProcedure and StartupThisAp calls that started a procedure.
    Dispatches,
    /// BroadcastProcedure calls that started procedures.
    Broadcasts,
    /// AddProcessor operations applied at the end of an SMI.
    CpusAdded,
    /// RemoveProcessor operations applied at the end of an SMI.
    CpusRemoved,
}

const COUNTERS: usize = 10;

#[repr(C)]
pub struct Stats {
    counters: [AtomicU64; COUNTERS],
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            counters: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub fn bump(&self, c: Counter) {
        self.add(c, 1)
    }

    pub fn add(&self, c: Counter, n: u64) {
        // Relaxed: statistics (module documentation).
        self.counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        // Relaxed: statistics (module documentation).
        self.counters[c as usize].load(Ordering::Relaxed)
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}
