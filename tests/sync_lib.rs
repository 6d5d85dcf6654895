//! SmmCpuSyncLib-compatible semaphores (BEHAVIOUR.md §7, §11 `MmMpSync*`) with
//! real threads: N = 2, 4, 8 CPU threads (on any host, yielding while they
//! wait) play EDK2's flow thousands of times over one context in caller
//! memory, plus the single-CPU edge cases of the API.
#![cfg(not(loom))]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use mm_mp::efi::Status;
use mm_mp::sync::SEMAPHORE_LOCKED;
use mm_mp::sync_lib::{required_size, SyncContext, SyncView};

/// A context in a zeroed, line-aligned heap buffer (the caller's memory).
struct Region {
    ptr: *mut u8,
    layout: Layout,
    ctx: *const SyncContext,
}

// SAFETY: the buffer is only reached through `&SyncContext`, which is Sync
// (its mutable state is atomics); the Region owns the allocation.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    fn new(cpus: usize, line: usize) -> Region {
        let size = required_size(cpus, line).unwrap();
        let layout = Layout::from_size_align(size, if line == 0 { 64 } else { line }).unwrap();
        // SAFETY: size > 0 (at least three lines).
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        let mut ctx = std::ptr::null_mut();
        // SAFETY: `ptr` is valid for `size` bytes and owned by the Region.
        let st = unsafe { SyncContext::init(ptr as *mut c_void, size, cpus, line, &mut ctx) };
        assert_eq!(st, Status::SUCCESS);
        assert_eq!(ctx as *mut u8, ptr);
        Region { ptr, layout, ctx }
    }

    fn ctx(&self) -> &SyncContext {
        // SAFETY: built by `init` in memory this Region owns.
        unsafe { SyncContext::from_ptr(self.ctx) }.unwrap()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn runs_all_zero(v: &SyncView<'_>) -> bool {
    (0..v.cpus()).all(|i| v.run(i).unwrap().value() == 0)
}

/// Barrier rounds (release one AP each / wait for APs) per SMI.
const BARRIERS: usize = 2;

/// Who does what in SMI `round` of an `n`-CPU machine. The BSP rotates so
/// that every CPU's run semaphore serves as the AP→BSP channel in turn
/// (BEHAVIOUR.md §6.6: the BSP can change from one SMI to the next).
struct Roles {
    bsp: usize,
    /// Checks in only after the door is locked (ABORTED, not counted).
    late: Option<usize>,
    /// Checks in, checks out, checks in again before the lock.
    flaky: Option<usize>,
    expected: usize,
}

fn roles(n: usize, round: usize) -> Roles {
    let bsp = round % n;
    let late = (round % 7 == 3).then_some((bsp + 1) % n);
    let flaky = Some((bsp + n - 1) % n).filter(|&c| round % 5 == 1 && c != bsp && Some(c) != late);
    Roles {
        bsp,
        late,
        flaky,
        expected: n - usize::from(late.is_some()),
    }
}

struct Shared {
    region: Region,
    /// Last round whose SMI the BSP finished (after its reset) + 1.
    epoch: AtomicUsize,
    /// Round + 1 once the late CPU of that round saw ABORTED.
    late_ack: AtomicUsize,
    /// Round + 1 once the flaky CPU of that round checked in for good.
    flaky_ack: AtomicUsize,
    /// Per CPU: the barrier it last passed (written before `release_bsp`).
    marks: Vec<AtomicUsize>,
    /// Set when a CPU thread panics, so the others stop spinning.
    failed: AtomicBool,
}

impl Shared {
    /// The pause of every wait: yield, and give up if another CPU failed.
    fn pause(&self) {
        assert!(!self.failed.load(Ordering::Relaxed), "another CPU failed");
        thread::yield_now();
    }

    fn spin_until(&self, mut cond: impl FnMut() -> bool) {
        while !cond() {
            self.pause();
        }
    }
}

/// Marks the machine failed when its CPU thread unwinds.
struct FailGuard<'a>(&'a AtomicBool);

impl Drop for FailGuard<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

fn cpu_thread(sh: &Shared, n: usize, cpu: usize, rounds: usize) {
    let _guard = FailGuard(&sh.failed);
    let v = sh.region.ctx().view();
    let pause = || sh.pause();
    for round in 0..rounds {
        let r = roles(n, round);
        if r.late == Some(cpu) {
            sh.spin_until(|| v.counter().value() == SEMAPHORE_LOCKED);
            assert_eq!(v.check_in(cpu), Status::ABORTED, "late check-in");
            assert_eq!(v.check_out(cpu), Status::ABORTED, "late check-out");
            sh.late_ack.store(round + 1, Ordering::Release);
            sh.spin_until(|| sh.epoch.load(Ordering::Acquire) > round);
            continue;
        }
        assert_eq!(v.check_in(cpu), Status::SUCCESS);
        if r.flaky == Some(cpu) {
            assert_eq!(v.check_out(cpu), Status::SUCCESS);
            assert_eq!(v.check_in(cpu), Status::SUCCESS);
            sh.flaky_ack.store(round + 1, Ordering::Release);
        }
        let participants = || (0..n).filter(|&c| c != r.bsp && Some(c) != r.late);
        if cpu == r.bsp {
            // The flaky CPU's transient count must not trigger the lock.
            if r.flaky.is_some() {
                sh.spin_until(|| sh.flaky_ack.load(Ordering::Acquire) == round + 1);
            }
            // Before the lock the live count never exceeds who can arrive.
            sh.spin_until(|| {
                let a = v.arrived_count();
                assert!(a <= r.expected, "round {round}: {a} > {}", r.expected);
                a == r.expected
            });
            assert_eq!(v.lock_door(), r.expected);
            assert_eq!(v.arrived_count(), r.expected);
            // Everyone who checked in consumed last SMI's final release
            // (the late CPU may still be on its way out of the last SMI).
            assert!(
                (0..n)
                    .filter(|&c| Some(c) != r.late)
                    .all(|c| v.run(c).unwrap().value() == 0),
                "round {round}: run semaphore left over"
            );
            // The door is shut for the BSP too; nothing changes.
            assert_eq!(v.check_in(cpu), Status::ABORTED);
            assert_eq!(v.check_out(cpu), Status::ABORTED);
            assert_eq!(v.lock_door(), r.expected, "second lock");
            assert_eq!(v.arrived_count(), r.expected);
            // Hostile indices in the middle of an SMI touch nothing.
            assert_eq!(v.check_in(n), Status::INVALID_PARAMETER);
            assert_eq!(v.check_out(usize::MAX), Status::INVALID_PARAMETER);
            v.release_one_ap(n);
            v.release_bsp(usize::MAX);
            v.wait_for_bsp(cpu, cpu, || unreachable!());
            v.wait_for_aps(n, cpu, || unreachable!());
            for b in 0..BARRIERS {
                for ap in participants() {
                    v.release_one_ap(ap);
                }
                v.wait_for_aps(r.expected - 1, r.bsp, pause);
                for ap in participants() {
                    assert_eq!(
                        sh.marks[ap].load(Ordering::Relaxed),
                        round * BARRIERS + b + 1
                    );
                }
            }
            if r.late.is_some() {
                sh.spin_until(|| sh.late_ack.load(Ordering::Acquire) == round + 1);
            }
            assert!(runs_all_zero(&v), "round {round}: unbalanced before reset");
            assert_eq!(v.arrived_count(), r.expected, "late CPU not counted");
            v.reset();
            assert_eq!(v.arrived_count(), 0);
            sh.epoch.store(round + 1, Ordering::Release);
            for ap in participants() {
                v.release_one_ap(ap); // "leave SMM"
            }
        } else {
            for b in 0..BARRIERS {
                v.wait_for_bsp(cpu, r.bsp, pause);
                sh.marks[cpu].store(round * BARRIERS + b + 1, Ordering::Relaxed);
                v.release_bsp(r.bsp);
            }
            v.wait_for_bsp(cpu, r.bsp, pause);
        }
    }
}

fn edk2_flow(n: usize, rounds: usize) {
    let sh = Arc::new(Shared {
        region: Region::new(n, 0),
        epoch: AtomicUsize::new(0),
        late_ack: AtomicUsize::new(0),
        flaky_ack: AtomicUsize::new(0),
        marks: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        failed: AtomicBool::new(false),
    });
    let threads: Vec<_> = (0..n)
        .map(|cpu| {
            let sh = sh.clone();
            thread::spawn(move || cpu_thread(&sh, n, cpu, rounds))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let v = sh.region.ctx().view();
    assert!(runs_all_zero(&v));
    assert_eq!(v.arrived_count(), 0);
    assert_eq!(v.counter().value(), 0);
}

#[test]
fn edk2_flow_2_cpus() {
    edk2_flow(2, 5000);
}

#[test]
fn edk2_flow_4_cpus() {
    edk2_flow(4, 3000);
}

#[test]
fn edk2_flow_8_cpus() {
    edk2_flow(8, 2000);
}

/// Check-ins racing the door lock: the locked count is exactly the number
/// of check-ins that returned SUCCESS, and stays so.
#[test]
fn check_in_races_lock_door() {
    const N: usize = 8;
    let region = Arc::new(Region::new(N, 128));
    for _ in 0..300 {
        let aps: Vec<_> = (1..N)
            .map(|cpu| {
                let region = region.clone();
                thread::spawn(move || region.ctx().view().check_in(cpu))
            })
            .collect();
        let v = region.ctx().view();
        assert_eq!(v.check_in(0), Status::SUCCESS);
        thread::yield_now();
        let locked = v.lock_door();
        let admitted = 1 + aps
            .into_iter()
            .map(|t| t.join().unwrap())
            .inspect(|st| assert!(*st == Status::SUCCESS || *st == Status::ABORTED))
            .filter(|st| *st == Status::SUCCESS)
            .count();
        assert_eq!(locked, admitted);
        assert_eq!(v.arrived_count(), admitted);
        v.reset();
    }
}

#[test]
fn arrived_count_check_out_and_reset() {
    let region = Region::new(4, 64);
    let v = region.ctx().view();
    assert_eq!(v.cpus(), 4);
    assert_eq!(v.arrived_count(), 0);
    assert_eq!(
        v.check_out(0),
        Status::INVALID_PARAMETER,
        "nobody to check out"
    );
    for cpu in 0..4 {
        assert_eq!(v.check_in(cpu), Status::SUCCESS);
        assert_eq!(v.arrived_count(), cpu + 1);
    }
    assert_eq!(v.check_out(3), Status::SUCCESS);
    assert_eq!(v.check_out(2), Status::SUCCESS);
    assert_eq!(v.arrived_count(), 2);
    assert_eq!(v.lock_door(), 2);
    assert_eq!(v.counter().value(), SEMAPHORE_LOCKED);
    assert_eq!(v.arrived_count(), 2);
    assert_eq!(v.check_in(3), Status::ABORTED);
    assert_eq!(v.check_out(0), Status::ABORTED);
    assert_eq!(v.arrived_count(), 2);
    v.reset();
    assert_eq!(v.arrived_count(), 0);
    assert_eq!(v.lock_door(), 0, "an empty SMI locks at 0");
    assert_eq!(v.arrived_count(), 0);
    v.reset();
    assert_eq!(v.check_in(1), Status::SUCCESS);
    assert_eq!(v.arrived_count(), 1);
}

/// Blocking waits call the pause closure while they wait and take exactly
/// the counts they were asked for.
#[test]
fn blocking_waits_pause_and_count() {
    let region = Arc::new(Region::new(3, 0));
    let pauses = AtomicUsize::new(0);
    let releaser = {
        let region = region.clone();
        thread::spawn(move || {
            let v = region.ctx().view();
            for _ in 0..3 {
                thread::sleep(std::time::Duration::from_millis(2));
                v.release_bsp(1);
            }
            v.release_one_ap(2);
        })
    };
    let v = region.ctx().view();
    v.wait_for_aps(2, 1, || {
        pauses.fetch_add(1, Ordering::Relaxed);
        thread::yield_now();
    });
    assert!(pauses.load(Ordering::Relaxed) > 0);
    v.wait_for_bsp(2, 1, thread::yield_now);
    releaser.join().unwrap();
    // Three releases, two taken: one stays for the next wait.
    assert_eq!(v.run(1).unwrap().value(), 1);
    v.wait_for_aps(1, 1, || unreachable!("a count is there"));
    assert!(runs_all_zero(&v));
}

#[test]
fn hostile_indices_and_pointers() {
    let region = Region::new(2, 16);
    let ctx = region.ctx();
    assert_eq!((ctx.cpus(), ctx.line()), (2, 16));
    let v = ctx.view();
    let snapshot =
        // SAFETY: the Region's buffer, `size` bytes.
        || unsafe { std::slice::from_raw_parts(region.ptr, ctx.size()) }.to_vec();
    let before = snapshot();
    for bad in [2usize, 3, 64, usize::MAX >> 1, usize::MAX] {
        assert_eq!(v.check_in(bad), Status::INVALID_PARAMETER);
        assert_eq!(v.check_out(bad), Status::INVALID_PARAMETER);
        v.release_one_ap(bad);
        v.release_bsp(bad);
        assert!(v.try_wait_for_bsp(bad));
        let mut remaining = 7;
        assert!(v.try_wait_for_aps(bad, &mut remaining));
        assert_eq!(remaining, 7);
        v.wait_for_aps(1, bad, || unreachable!());
        v.wait_for_aps(bad, 0, || unreachable!());
        v.wait_for_bsp(bad, 0, || unreachable!());
        v.wait_for_bsp(0, bad, || unreachable!());
        assert!(!v.is_pair(bad, 0) && !v.is_pair(1, bad));
    }
    v.wait_for_bsp(0, 0, || unreachable!("cpu == bsp"));
    assert!(v.is_pair(0, 1) && v.is_pair(1, 0) && !v.is_pair(0, 0));
    assert_eq!(before, snapshot(), "no byte of the context changed");

    // Pointers that are not contexts.
    // SAFETY: NULL and misaligned pointers are rejected before any read.
    unsafe {
        assert!(SyncContext::from_ptr(std::ptr::null()).is_none());
        assert!(SyncContext::from_ptr(region.ptr.add(4) as *const SyncContext).is_none());
    }
    let garbage = [0x5au64; 32];
    // SAFETY: readable, aligned, 256 bytes (more than the header).
    assert!(unsafe { SyncContext::from_ptr(garbage.as_ptr() as *const SyncContext) }.is_none());
    // The run semaphores are not a context either.
    // SAFETY: inside the Region, aligned, readable.
    assert!(
        unsafe { SyncContext::from_ptr(region.ptr.add(ctx.size() - 16) as *const _) }.is_none()
    );
}

#[test]
fn init_checks_and_sizes() {
    assert_eq!(required_size(0, 0), Err(Status::INVALID_PARAMETER));
    assert_eq!(required_size(1, 24), Err(Status::INVALID_PARAMETER));
    assert_eq!(required_size(1, usize::MAX), Err(Status::INVALID_PARAMETER));
    assert_eq!(
        required_size(usize::MAX, 64),
        Err(Status::INVALID_PARAMETER)
    );
    assert_eq!(
        required_size(1, 1 << (usize::BITS - 1)),
        Err(Status::OUT_OF_RESOURCES)
    );
    for (cpus, line) in [(1usize, 0usize), (2, 16), (5, 32), (16, 64), (3, 256)] {
        let line_used = if line == 0 { 64 } else { line };
        let size = required_size(cpus, line).unwrap();
        assert_eq!(size % line_used, 0);
        assert!(size >= (cpus + 1) * line_used + 48);
        let region = Region::new(cpus, line);
        assert_eq!(region.ctx().size(), size);
        assert_eq!(region.ctx().line(), line_used);
        let v = region.ctx().view();
        // Each semaphore on its own line.
        let mut addrs: Vec<usize> = (0..cpus)
            .map(|i| v.run(i).unwrap() as *const _ as usize)
            .collect();
        addrs.push(v.counter() as *const _ as usize);
        addrs.sort_unstable();
        assert!(addrs.iter().all(|a| a % line_used == 0));
        assert!(addrs.windows(2).all(|w| w[1] - w[0] >= line_used));
        assert!(addrs[0] > region.ptr as usize);
        assert!(*addrs.last().unwrap() < region.ptr as usize + size);
    }
}
