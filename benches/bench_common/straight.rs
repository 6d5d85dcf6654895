//! The straight-line reference of figure [2]: BEHAVIOUR.md §6's rendezvous of two
//! CPUs written as straight-line code, doing on the path of a 2-CPU SMI
//! exactly the shared-memory operations BEHAVIOUR.md §6 and §6.6 prescribe, and
//! nothing else.
//!
//! Per SMI and CPU: sample "BSP inside"; check in on the arrival counter
//! (a BEHAVIOUR.md §6.6 semaphore release); mark the own mailbox free if it is not;
//! elect (traditional: first come by compare-exchange, tried only while
//! no BSP is elected; relaxed: CPU 0 is the fixed BSP). BSP: "BSP inside", present; traditional: wait for both
//! check-ins, "all in sync", lock the door, #1, release #2 to the present
//! AP, #7; (empty handlers); wait until the present AP's mailbox is free;
//! relaxed: "all in sync", lock the door, wait until the counted AP is
//! present; clear "BSP inside", release #8; not present; #13; forget the
//! BSP; reopen the counter; clear "all in sync". AP: wait for "BSP
//! inside"; present; traditional: #1, take #2, #7; take #8 and look at
//! "BSP inside"; not present; #13; wait for the end.
//!
//! Every flag, semaphore and counter has a 128-byte line of its own (the
//! best placement: no false sharing at all); semaphores are BEHAVIOUR.md §6.6's
//! (release: load, refuse the locked value, compare-exchange; wait: spin
//! until non-zero, then compare-exchange down). Missing on purpose, as
//! none of it is a shared-memory operation BEHAVIOUR.md requires: platform hooks,
//! timeouts, statistics, the startup procedure, tokens, broadcasts,
//! pending CPU operations. What mm-mp's SMI costs above this code is the
//! price of those and of its general, steppable engine; what this code
//! costs above one ping-pong per round is the algorithm's, written
//! directly. It is a reference, not a proven lower bound: a cleverer
//! ordering of the same operations can beat it (mm-mp's SMI comes out
//! below it in the usual host mode, docs/PERFORMANCE.md [2]).

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, Ordering};

/// The locked value of a BEHAVIOUR.md §6.6 semaphore; also "no BSP".
const LOCKED: u32 = u32::MAX;
const NO_BSP: u32 = u32::MAX;

/// One 32-bit word on a line of its own.
#[repr(align(128))]
struct Word(AtomicU32);

impl Word {
    const fn new(v: u32) -> Word {
        Word(AtomicU32::new(v))
    }

    fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, v: u32) {
        self.0.store(v, Ordering::Release)
    }

    /// BEHAVIOUR.md §6.6 release: `false` when the semaphore is locked.
    fn release(&self) -> bool {
        let mut v = self.0.load(Ordering::Acquire);
        loop {
            if v == LOCKED {
                return false;
            }
            match self
                .0
                .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
    }

    /// BEHAVIOUR.md §6.6 wait.
    fn wait(&self) {
        loop {
            let v = self.0.load(Ordering::Acquire);
            if v != 0
                && v != LOCKED
                && self
                    .0
                    .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            spin_loop();
        }
    }

    fn until(&self, ready: impl Fn(u32) -> bool) -> u32 {
        loop {
            let v = self.get();
            if ready(v) {
                return v;
            }
            spin_loop();
        }
    }
}

/// The arrival counter and the count it held when the door was locked.
#[repr(align(128))]
struct Arrival {
    counter: Word,
    upon_lock: AtomicU32,
}

pub struct Straight {
    relaxed: bool,
    arrival: Arrival,
    bsp_index: Word,
    inside: Word,
    all_in_sync: Word,
    run: [Word; 2],
    present: [Word; 2],
    busy: [Word; 2],
}

impl Straight {
    pub fn new(relaxed: bool) -> Straight {
        Straight {
            relaxed,
            arrival: Arrival {
                counter: Word::new(0),
                upon_lock: AtomicU32::new(0),
            },
            bsp_index: Word::new(NO_BSP),
            inside: Word::new(0),
            all_in_sync: Word::new(0),
            run: [Word::new(0), Word::new(0)],
            present: [Word::new(0), Word::new(0)],
            busy: [Word::new(0), Word::new(0)],
        }
    }

    /// One SMI of CPU `cpu` (0 or 1); returns when it may leave.
    pub fn smi(&self, cpu: usize) {
        if self.relaxed && cpu == 0 {
            // The bench's gate, completed: the fixed BSP enters once the AP
            // has checked in, not only announced its entry. Without
            // timeouts an AP that checked in after this SMI ended would
            // wait for ever for a BSP that waits for its next announcement
            // (mm-mp's AP gives up after its timeout instead: the "late"
            // count of the mm-mp runs). The check-in just below needs the
            // counter's line anyway.
            self.arrival.counter.until(|v| v != 0);
        }
        let inside = self.inside.get() != 0;
        if !self.arrival.counter.release() {
            // Late: the door is locked; wait for the end of the SMI.
            self.all_in_sync.until(|v| v == 0);
            return;
        }
        if self.busy[cpu].0.load(Ordering::Relaxed) != 0 {
            self.busy[cpu].set(0);
        }
        let bsp = if self.relaxed {
            0
        } else {
            // First come wins; a look first, so that the second CPU
            // does not take the line away from the winner.
            if !inside && self.bsp_index.0.load(Ordering::Relaxed) == NO_BSP {
                let _ = self.bsp_index.0.compare_exchange(
                    NO_BSP,
                    cpu as u32,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            self.bsp_index.get()
        };
        if !inside && bsp == cpu as u32 {
            self.bsp(cpu);
        } else {
            self.ap(cpu, bsp as usize);
        }
    }

    fn lock_door(&self) -> u32 {
        let now = self.arrival.counter.get();
        self.arrival.upon_lock.store(now, Ordering::Relaxed);
        self.arrival.counter.0.swap(LOCKED, Ordering::AcqRel);
        now
    }

    fn bsp(&self, me: usize) {
        let ap = 1 - me;
        self.inside.set(1);
        self.present[me].set(1);
        let mut checked_in = 2;
        if !self.relaxed {
            self.arrival.counter.until(|v| v >= 2);
            self.all_in_sync.set(1);
            self.lock_door();
            self.run[me].wait(); // #1
            if self.present[ap].get() != 0 {
                self.run[ap].release(); // #2
            }
            self.run[me].wait(); // #7
        }
        // (the MMI handlers)
        while self.present[ap].get() != 0 && self.busy[ap].get() != 0 {
            spin_loop();
        }
        if self.relaxed {
            self.all_in_sync.set(1);
            checked_in = self.lock_door();
            while self.present[ap].get() + 1 < checked_in {
                spin_loop();
            }
        }
        self.inside.set(0);
        if self.present[ap].get() != 0 {
            self.run[ap].release(); // #8
        }
        self.present[me].set(0);
        if checked_in > 1 {
            self.run[me].wait(); // #13
        }
        if !self.relaxed {
            self.bsp_index.0.store(NO_BSP, Ordering::Relaxed);
        }
        self.arrival.upon_lock.store(0, Ordering::Relaxed);
        self.arrival.counter.set(0);
        self.all_in_sync.set(0);
    }

    fn ap(&self, me: usize, bsp: usize) {
        self.inside.until(|v| v != 0);
        self.present[me].set(1);
        if !self.relaxed {
            self.run[bsp].release(); // #1
            self.run[me].wait(); // #2
            self.run[bsp].release(); // #7
        }
        // The dispatch loop: a count is #8 once "BSP inside" is cleared.
        loop {
            self.run[me].wait();
            if self.inside.get() == 0 {
                break;
            }
        }
        self.present[me].set(0);
        self.run[bsp].release(); // #13
        self.all_in_sync.until(|v| v == 0);
    }
}
