//! loom models of the SmmCpuSyncLib-compatible semaphores (BEHAVIOUR.md §7, §6.6).
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --target-dir target/loom --test loom_sync`.
//!
//! They drive the library's own `SyncView` — the code the SMI engine and
//! the `MmMpSync*` exports run — over semaphores kept in a `Vec` (loom's
//! atomics cannot live in a raw caller buffer the way firmware's do).
//!
//! The pause closure of a waiting CPU is "sleep until woken" (a loom
//! `Notify` per CPU, signalled by whoever released or counted something
//! for it) instead of a yield: several CPUs spinning with `yield_now` at
//! once give loom endless yield ping-pong paths ("exceeded maximum number
//! of branches"). Every wait still starts with a non-blocking attempt at
//! an arbitrary point relative to the release, so the paths where only the
//! semaphore orders the data (no notification in between) are explored,
//! and a lost release shows up as a loom deadlock.
#![cfg(loom)]

use std::mem::size_of;
use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use loom::sync::Notify;
use loom::thread;

use mm_mp::efi::Status;
use mm_mp::memory::{ArrayLayout, Strided};
use mm_mp::sync::{Semaphore, SEMAPHORE_LOCKED};
use mm_mp::sync_lib::SyncView;

/// The semaphores of one context, plus per-CPU plain data cells that the
/// barrier must order (loom reports any unsynchronised access to them).
struct Machine {
    counter: Semaphore,
    upon_lock: AtomicU32,
    runs: Vec<Semaphore>,
    /// Written by the BSP before it releases AP i, read by AP i after.
    to_ap: Vec<UnsafeCell<u32>>,
    /// Written by AP i before it releases the BSP, read by the BSP after.
    to_bsp: Vec<UnsafeCell<u32>>,
    /// The pause of CPU i: sleep until someone released or counted
    /// something CPU i waits for (see the module comment).
    wake: Vec<Notify>,
}

// SAFETY: the cells are only touched on the sides of a semaphore hand-off
// (the property under test; loom checks every access).
unsafe impl Sync for Machine {}
// SAFETY: as above.
unsafe impl Send for Machine {}

impl Machine {
    fn new(cpus: usize) -> Arc<Machine> {
        Arc::new(Machine {
            counter: Semaphore::new(0),
            upon_lock: AtomicU32::new(0),
            runs: (0..cpus).map(|_| Semaphore::new(0)).collect(),
            to_ap: (0..cpus).map(|_| UnsafeCell::new(0)).collect(),
            to_bsp: (0..cpus).map(|_| UnsafeCell::new(0)).collect(),
            wake: (0..cpus).map(|_| Notify::new()).collect(),
        })
    }

    fn view(&self) -> SyncView<'_> {
        let layout = ArrayLayout {
            offset: 0,
            stride: size_of::<Semaphore>(),
            len: self.runs.len(),
        };
        // SAFETY: `runs` is a live Vec of `len` Semaphores, `stride` apart,
        // only shared (atomics), living as long as `self`.
        let runs = unsafe { Strided::new(self.runs.as_ptr() as *const u8, layout) };
        SyncView::new(&self.counter, &self.upon_lock, runs)
    }
}

const BSP: usize = 0;

/// The SMI state of the barrier models: BSP + 2 APs checked in, the door
/// locked at 3 (check-in racing the lock is modelled below).
fn locked_machine() -> Arc<Machine> {
    let m = Machine::new(3);
    let v = m.view();
    for cpu in 0..3 {
        assert_eq!(v.check_in(cpu), Status::SUCCESS);
    }
    assert_eq!(v.lock_door(), 3);
    m
}

/// First half of a barrier round, BSP → APs (ReleaseOneAp → WaitForBsp):
/// both APs wait on their own run semaphore while the BSP writes each
/// one's data and releases it; each AP sees its data; both end at 0.
#[test]
fn barrier_bsp_releases_two_aps() {
    loom::model(|| {
        let m = locked_machine();
        let aps: Vec<_> = (1..3)
            .map(|cpu| {
                let m = m.clone();
                thread::spawn(move || {
                    m.view().wait_for_bsp(cpu, BSP, || m.wake[cpu].wait());
                    // SAFETY: the BSP wrote this before releasing us.
                    let got = m.to_ap[cpu].with(|p| unsafe { *p });
                    assert_eq!(got, 10 + cpu as u32);
                })
            })
            .collect();
        let v = m.view();
        for ap in 1..3 {
            // SAFETY: AP `ap` reads this only after our release.
            m.to_ap[ap].with_mut(|p| unsafe { *p = 10 + ap as u32 });
            v.release_one_ap(ap);
            m.wake[ap].notify();
        }
        for ap in aps {
            ap.join().unwrap();
        }
        assert!(m.runs.iter().all(|s| s.value() == 0));
    });
}

/// Second half, APs → BSP (ReleaseBsp → WaitForAPs): both APs write their
/// data and release the BSP's run semaphore concurrently while the BSP
/// waits for 2 (it is the only waiter, so it may spin with a yield); the
/// BSP sees both, its semaphore ends at 0, and reset reopens the door.
#[test]
fn barrier_two_aps_release_bsp() {
    loom::model(|| {
        let m = locked_machine();
        let aps: Vec<_> = (1..3)
            .map(|cpu| {
                let m = m.clone();
                thread::spawn(move || {
                    // SAFETY: the BSP reads this only after our release.
                    m.to_bsp[cpu].with_mut(|p| unsafe { *p = 20 + cpu as u32 });
                    m.view().release_bsp(BSP);
                })
            })
            .collect();
        let v = m.view();
        v.wait_for_aps(2, BSP, thread::yield_now);
        for ap in 1..3 {
            // SAFETY: AP `ap` wrote this before releasing us.
            let got = m.to_bsp[ap].with(|p| unsafe { *p });
            assert_eq!(got, 20 + ap as u32);
        }
        for ap in aps {
            ap.join().unwrap();
        }
        assert!(m.runs.iter().all(|s| s.value() == 0));
        v.reset();
        assert_eq!(v.arrived_count(), 0);
        assert_eq!(v.check_in(1), Status::SUCCESS);
    });
}

/// Both halves as one round, so the APs' releases of the BSP can overlap
/// the BSP still releasing the other AP (about 5 s at
/// LOOM_MAX_PREEMPTIONS=3; the halves above take well under a second).
#[test]
fn barrier_round_bsp_and_two_aps() {
    loom::model(|| {
        let m = locked_machine();
        let aps: Vec<_> = (1..3)
            .map(|cpu| {
                let m = m.clone();
                thread::spawn(move || {
                    let v = m.view();
                    v.wait_for_bsp(cpu, BSP, || m.wake[cpu].wait());
                    // SAFETY: the BSP wrote this before releasing us.
                    let got = m.to_ap[cpu].with(|p| unsafe { *p });
                    assert_eq!(got, 10 + cpu as u32);
                    // SAFETY: the BSP reads this only after our release.
                    m.to_bsp[cpu].with_mut(|p| unsafe { *p = 20 + cpu as u32 });
                    v.release_bsp(BSP);
                })
            })
            .collect();
        let v = m.view();
        for ap in 1..3 {
            // SAFETY: AP `ap` reads this only after our release.
            m.to_ap[ap].with_mut(|p| unsafe { *p = 10 + ap as u32 });
            v.release_one_ap(ap);
            m.wake[ap].notify();
        }
        v.wait_for_aps(2, BSP, thread::yield_now);
        for ap in 1..3 {
            // SAFETY: AP `ap` wrote this before releasing us.
            let got = m.to_bsp[ap].with(|p| unsafe { *p });
            assert_eq!(got, 20 + ap as u32);
        }
        for ap in aps {
            ap.join().unwrap();
        }
        assert!(m.runs.iter().all(|s| s.value() == 0));
    });
}

/// Two APs check in while the BSP (already checked in) locks the door:
/// the locked count is exactly 1 + the number of SUCCESS results, a
/// refused AP is not counted, and any AP reading the arrived count after
/// its check-in sees at least the BSP (never an unrecorded 0).
#[test]
fn check_in_races_lock_door() {
    loom::model(|| {
        let m = Machine::new(3);
        let aps: Vec<_> = (1..3)
            .map(|cpu| {
                let m = m.clone();
                thread::spawn(move || {
                    let v = m.view();
                    let st = v.check_in(cpu);
                    assert!(st == Status::SUCCESS || st == Status::ABORTED);
                    let seen = v.arrived_count();
                    assert!((1..=3).contains(&seen), "saw {seen}");
                    if st == Status::ABORTED {
                        // Refused: the door was locked, the BSP counted.
                        assert_eq!(v.counter().value(), SEMAPHORE_LOCKED);
                    }
                    st
                })
            })
            .collect();
        let v = m.view();
        assert_eq!(v.check_in(BSP), Status::SUCCESS);
        let locked = v.lock_door();
        let admitted = 1 + aps
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&st| st == Status::SUCCESS)
            .count();
        assert_eq!(locked, admitted);
        assert_eq!(v.arrived_count(), admitted);
        assert_eq!(v.check_in(1), Status::ABORTED);
        assert_eq!(v.arrived_count(), admitted);
    });
}

/// A check-out racing the lock: either it happened first (not counted) or
/// it is refused (counted); the count is never off by one.
#[test]
fn check_out_races_lock_door() {
    loom::model(|| {
        let m = Machine::new(2);
        let v = m.view();
        assert_eq!(v.check_in(BSP), Status::SUCCESS);
        assert_eq!(v.check_in(1), Status::SUCCESS);
        let ap = {
            let m = m.clone();
            thread::spawn(move || m.view().check_out(1))
        };
        let locked = v.lock_door();
        let st = ap.join().unwrap();
        match st {
            Status::SUCCESS => assert_eq!(locked, 1),
            Status::ABORTED => assert_eq!(locked, 2),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(v.arrived_count(), locked);
    });
}
