//! Deterministic tests: one thread plays every CPU, stepping each one's
//! rendezvous state machine in the order the test picks (BEHAVIOUR.md §10.4 and
//! every [DIFF] of BEHAVIOUR.md §2).
mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use mm_mp::efi::{MmCompletion, Status, MM_MP_TIMEOUT_SUPPORTED};

fn arc_record(n: usize) -> Arc<Record> {
    Arc::from(Record::new(n))
}

fn arg(r: &Arc<Record>) -> *mut std::ffi::c_void {
    Arc::as_ptr(r) as *mut std::ffi::c_void
}

/// BEHAVIOUR.md §10.4: Dispatch(AP1,&A); Dispatch(AP2,&B); Dispatch(AP3,&C);
/// Check(A) must find A; checks in any order.
#[test]
fn scenario_10_4_several_tokens_checked_in_any_order() {
    let sim = Sim::new(Options::new(4));
    let rec = arc_record(4);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, bsp| {
        c.eq("bsp", bsp, 0);
        let (mut a, mut b, mut t3): (MmCompletion, MmCompletion, MmCompletion) =
            (NULL_TOKEN, NULL_TOKEN, NULL_TOKEN);
        let mut sa = Status(0);
        let mut sb = Status(0);
        let mut sc = Status(0);
        c.eq(
            "dispatch A",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), Some(&mut a), Some(&mut sa)),
            Status::SUCCESS,
        );
        c.eq(
            "dispatch B",
            sim.dispatch(p2(proc_count), 2, 0, arg(&r), Some(&mut b), Some(&mut sb)),
            Status::SUCCESS,
        );
        c.eq(
            "dispatch C",
            sim.dispatch(p2(proc_count), 3, 0, arg(&r), Some(&mut t3), Some(&mut sc)),
            Status::SUCCESS,
        );
        c.that(
            "handles distinct and non-null",
            !a.is_null() && a != b && b != t3 && a != t3,
        );
        c.eq("CPUStatus A before start", sa, Status::NOT_READY);
        c.eq(
            "Check(A) before any AP ran",
            sim.check(a),
            Status::NOT_READY,
        );
        c.eq(
            "Check(C) before any AP ran",
            sim.check(t3),
            Status::NOT_READY,
        );
        sim.step(3);
        c.eq("Check(C) after AP3 ran", sim.check(t3), Status::SUCCESS);
        c.eq("CPUStatus C", sc, Status::SUCCESS);
        c.eq("Check(A) still running", sim.check(a), Status::NOT_READY);
        sim.step(1);
        c.eq("Check(A) after AP1 ran", sim.check(a), Status::SUCCESS);
        c.eq("Check(A) again", sim.check(a), Status::SUCCESS);
        c.eq("Wait(B) pumps AP2", sim.wait(b), Status::SUCCESS);
        c.eq("CPUStatus B", sb, Status::SUCCESS);
        c.eq("runs", r.runs(), vec![0, 1, 1, 1]);
    });
    sim.smi_stepped(&[0, 1, 2, 3]);
    checks.assert_ok(14);
    assert_eq!(sim.foundation_calls.load(Ordering::SeqCst), 1);
}

/// [DIFF] §2: services outside an SMI → EFI_NOT_READY (EDK2 hangs or
/// corrupts state); Check/Wait find no live token.
#[test]
fn services_outside_smi_are_not_ready() {
    let sim = Sim::new(Options::new(4));
    let rec = arc_record(4);
    let mut t: MmCompletion = NULL_TOKEN;
    let mut st = [Status(7); 4];
    assert_eq!(
        sim.dispatch(p2(proc_count), 1, 0, arg(&rec), None, None),
        Status::NOT_READY
    );
    assert_eq!(
        sim.dispatch(p2(proc_count), 1, 0, arg(&rec), Some(&mut t), None),
        Status::NOT_READY
    );
    assert!(t.is_null(), "token not written");
    assert_eq!(
        sim.broadcast(p2(proc_count), 0, arg(&rec), None, Some(&mut st)),
        Status::NOT_READY
    );
    assert_eq!(st, [Status(7); 4], "status array not written");
    assert_eq!(
        sim.startup_this_ap(p1(legacy_count), 1, arg(&rec)),
        Status::NOT_READY
    );
    assert_eq!(
        sim.blocking_startup_this_ap(p1(legacy_count), 1, arg(&rec)),
        Status::NOT_READY
    );
    assert_eq!(
        sim.check(0x1000_0001usize as MmCompletion),
        Status::NOT_FOUND
    );
    assert_eq!(
        sim.wait(0x1000_0001usize as MmCompletion),
        Status::NOT_FOUND
    );
    assert_eq!(sim.number_of_processors(), (Status::SUCCESS, 4));
    assert_eq!(sim.set_startup(None, std::ptr::null_mut()), Status::SUCCESS);
    assert_eq!(sim.current_bsp(), usize::MAX);
    assert_eq!(rec.total(), 0);
}

/// [DIFF] §2: a call made from an AP (identified through GetApicId) →
/// EFI_INVALID_PARAMETER, nothing started.
#[test]
fn calls_from_an_ap_are_rejected() {
    let sim = Sim::new(Options::new(3));
    let rec = arc_record(3);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _bsp| {
        sim.as_cpu(1, || {
            c.eq(
                "dispatch from AP",
                sim.dispatch(p2(proc_count), 2, 0, arg(&r), None, None),
                Status::INVALID_PARAMETER,
            );
            c.eq(
                "broadcast from AP",
                sim.broadcast(p2(proc_count), 0, arg(&r), None, None),
                Status::INVALID_PARAMETER,
            );
            c.eq(
                "startup from AP",
                sim.startup_this_ap(p1(legacy_count), 2, arg(&r)),
                Status::INVALID_PARAMETER,
            );
        });
        c.eq("nothing ran", r.total(), 0);
        c.eq(
            "from the BSP it works",
            sim.dispatch(p2(proc_count), 2, 0, arg(&r), None, None),
            Status::SUCCESS,
        );
    });
    sim.smi_stepped(&[0, 1, 2]);
    checks.assert_ok(5);
    assert_eq!(rec.runs(), vec![0, 0, 1]);
}

/// [DIFF] §2.2/§2.3: *Token holding a running call → EFI_ALREADY_STARTED.
#[test]
fn live_token_is_already_started() {
    let sim = Sim::new(Options::new(4));
    let rec = arc_record(4);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        let mut t: MmCompletion = NULL_TOKEN;
        c.eq(
            "first",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), Some(&mut t), None),
            Status::SUCCESS,
        );
        let first = t;
        c.eq(
            "dispatch reusing live token",
            sim.dispatch(p2(proc_count), 2, 0, arg(&r), Some(&mut t), None),
            Status::ALREADY_STARTED,
        );
        c.eq(
            "broadcast reusing live token",
            sim.broadcast(p2(proc_count), 0, arg(&r), Some(&mut t), None),
            Status::ALREADY_STARTED,
        );
        c.eq("token unchanged", t, first);
        sim.step(1);
        c.eq(
            "finished token may be reused",
            sim.dispatch(p2(proc_count), 2, 0, arg(&r), Some(&mut t), None),
            Status::SUCCESS,
        );
        c.that("new handle", t != first);
        c.eq("wait", sim.wait(t), Status::SUCCESS);
    });
    sim.smi_stepped(&[0, 1, 2, 3]);
    checks.assert_ok(7);
    assert_eq!(rec.runs(), vec![0, 1, 1, 0]);
}

/// [DIFF] §2.2/§2.3: a busy AP → EFI_NOT_READY (EDK2 spins), nothing changed.
/// The tokens in use are checked against the handler's own count of the
/// tokens it was handed, and through the pool of two: after the refused
/// calls exactly one more non-blocking call gets a token (§3: every slot
/// in use and none recyclable → EFI_OUT_OF_RESOURCES).
#[test]
fn busy_ap_is_not_ready_and_nothing_changes() {
    let sim = Sim::new(Options::new(4).tokens(2));
    let rec = arc_record(4);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        // Tokens this handler was handed in this SMI. None of their calls
        // completes before the last check of `in_use` (the APs are only
        // stepped by the waits at the end), so none can be recycled and
        // each is still in use.
        let mut handed_out = 0usize;
        let mut a: MmCompletion = NULL_TOKEN;
        c.eq(
            "A",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), Some(&mut a), None),
            Status::SUCCESS,
        );
        handed_out += 1;
        c.eq(
            "tokens in use: A's",
            sim.instance().tokens().in_use(),
            handed_out,
        );
        let mut b: MmCompletion = NULL_TOKEN;
        let mut sb = Status(0x77);
        c.eq(
            "second to busy AP",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), Some(&mut b), Some(&mut sb)),
            Status::NOT_READY,
        );
        c.eq(
            "blocking to busy AP",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), None, None),
            Status::NOT_READY,
        );
        c.eq("token untouched", b, NULL_TOKEN);
        c.eq("status untouched", sb, Status(0x77));
        let mut st = [Status(0x55); 4];
        let mut t: MmCompletion = NULL_TOKEN;
        c.eq(
            "broadcast with a busy AP",
            sim.broadcast(p2(proc_count), 0, arg(&r), Some(&mut t), Some(&mut st)),
            Status::NOT_READY,
        );
        c.eq("status array untouched", st, [Status(0x55); 4]);
        c.eq(
            "no token taken by the refused calls",
            sim.instance().tokens().in_use(),
            handed_out,
        );
        let mut b2: MmCompletion = NULL_TOKEN;
        c.eq(
            "AP2 not claimed, the pool's second token free",
            sim.dispatch(p2(proc_count), 2, 0, arg(&r), Some(&mut b2), None),
            Status::SUCCESS,
        );
        handed_out += 1;
        c.eq(
            "tokens in use: A's and B2's",
            sim.instance().tokens().in_use(),
            handed_out,
        );
        let mut x: MmCompletion = NULL_TOKEN;
        c.eq(
            "the pool of two is used up",
            sim.dispatch(p2(proc_count), 3, 0, arg(&r), Some(&mut x), None),
            Status::OUT_OF_RESOURCES,
        );
        c.eq("no handle on OUT_OF_RESOURCES", x, NULL_TOKEN);
        c.eq("wait B2", sim.wait(b2), Status::SUCCESS);
        c.eq("wait A", sim.wait(a), Status::SUCCESS);
        c.eq(
            "AP1 free again",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), None, None),
            Status::SUCCESS,
        );
    });
    sim.smi_stepped(&[0, 1, 2, 3]);
    checks.assert_ok(15);
    assert_eq!(rec.runs(), vec![0, 2, 1, 0]);
}

/// §2.2/§2.3 "busy" across the two ways a call reaches an AP (the
/// broadcast descriptor and the mailbox, docs/PERFORMANCE.md [3]): an AP
/// still running a broadcast refuses a dispatch, one that finished its
/// share takes one while the others still run, and a broadcast waits for
/// both kinds of call to be over.
#[test]
fn broadcast_and_dispatch_see_each_other_busy() {
    let sim = Sim::new(Options::new(4));
    let rec = arc_record(4);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        let mut b1 = NULL_TOKEN;
        c.eq(
            "broadcast 1",
            sim.broadcast(p2(proc_count), 0, arg(&r), Some(&mut b1), None),
            Status::SUCCESS,
        );
        c.eq(
            "dispatch to an AP running the broadcast",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), None, None),
            Status::NOT_READY,
        );
        let mut t = NULL_TOKEN;
        c.eq(
            "broadcast while one runs",
            sim.broadcast(p2(proc_count), 0, arg(&r), Some(&mut t), None),
            Status::NOT_READY,
        );
        c.eq("no token", t, NULL_TOKEN);
        sim.step(1); // AP1 runs its share
        let mut d = NULL_TOKEN;
        c.eq(
            "dispatch to AP1, done with its share",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), Some(&mut d), None),
            Status::SUCCESS,
        );
        c.eq(
            "broadcast 1 still running",
            sim.check(b1),
            Status::NOT_READY,
        );
        sim.step(2);
        sim.step(3);
        c.eq("broadcast 1 done", sim.check(b1), Status::SUCCESS);
        c.eq(
            "broadcast while AP1 runs a dispatched call",
            sim.broadcast(p2(proc_count), 0, arg(&r), None, None),
            Status::NOT_READY,
        );
        sim.step(1);
        c.eq("dispatch done", sim.check(d), Status::SUCCESS);
        c.eq(
            "blocking broadcast once all are free",
            sim.broadcast(p2(proc_count), 0, arg(&r), None, None),
            Status::SUCCESS,
        );
    });
    sim.smi_stepped(&[0, 1, 2, 3]);
    checks.assert_ok(10);
    assert_eq!(rec.runs(), vec![0, 3, 2, 2]);
}

/// §2.5/§2.7: a non-blocking broadcast whose deadline passes before its
/// members started: CheckForProcedure times every member out (TIMEOUT in
/// their CPUStatus), the members then skip the call without running it,
/// and the next broadcast runs everywhere.
#[test]
fn broadcast_token_times_out_members_that_never_started() {
    let sim = Sim::new(Options::new(3).clock(Clock::Manual { per_pause: 0 }));
    let rec = arc_record(3);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        let mut st = [Status(0); 3];
        let mut t = NULL_TOKEN;
        c.eq(
            "broadcast, 10 us",
            sim.broadcast(p2(proc_count), 10, arg(&r), Some(&mut t), Some(&mut st)),
            Status::SUCCESS,
        );
        sim.advance(1_000_000);
        c.eq("Check after the deadline", sim.check(t), Status::TIMEOUT);
        c.eq(
            "statuses",
            st,
            [Status::NOT_STARTED, Status::TIMEOUT, Status::TIMEOUT],
        );
        c.eq(
            "members still busy until they look",
            sim.broadcast(p2(proc_count), 0, arg(&r), None, None),
            Status::NOT_READY,
        );
        sim.step(1);
        sim.step(2);
        c.eq("nothing ran", r.runs(), vec![0, 0, 0]);
        c.eq(
            "statuses kept",
            [st[1], st[2]],
            [Status::TIMEOUT, Status::TIMEOUT],
        );
        c.eq(
            "next broadcast",
            sim.broadcast(p2(proc_count), 0, arg(&r), None, None),
            Status::SUCCESS,
        );
    });
    sim.smi_stepped(&[0, 1, 2]);
    checks.assert_ok(7);
    assert_eq!(rec.runs(), vec![0, 1, 1]);
}

/// [DIFF] §2.2/§3: no token free → EFI_OUT_OF_RESOURCES (EDK2 dereferences
/// NULL); a completed token is recycled only once its completion was seen.
#[test]
fn token_exhaustion_and_recycling() {
    let sim = Sim::new(Options::new(4).tokens(2));
    let rec = arc_record(4);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        let (mut a, mut b, mut t3) = (NULL_TOKEN, NULL_TOKEN, NULL_TOKEN);
        c.eq(
            "A",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), Some(&mut a), None),
            Status::SUCCESS,
        );
        c.eq(
            "B",
            sim.dispatch(p2(proc_count), 2, 0, arg(&r), Some(&mut b), None),
            Status::SUCCESS,
        );
        c.eq(
            "C: pool exhausted",
            sim.dispatch(p2(proc_count), 3, 0, arg(&r), Some(&mut t3), None),
            Status::OUT_OF_RESOURCES,
        );
        c.eq("C: token untouched", t3, NULL_TOKEN);
        sim.step(1);
        c.eq(
            "A done but not observed: still exhausted",
            sim.dispatch(p2(proc_count), 3, 0, arg(&r), Some(&mut t3), None),
            Status::OUT_OF_RESOURCES,
        );
        c.eq(
            "broadcast: busy AP2 is checked before the pool",
            sim.broadcast(p2(proc_count), 0, arg(&r), Some(&mut t3), None),
            Status::NOT_READY,
        );
        sim.step(2);
        c.eq(
            "broadcast: out of resources",
            sim.broadcast(p2(proc_count), 0, arg(&r), Some(&mut t3), None),
            Status::OUT_OF_RESOURCES,
        );
        c.eq(
            "AP3 was not left claimed",
            sim.dispatch(p2(proc_count), 3, 0, arg(&r), None, None),
            Status::SUCCESS,
        );
        c.eq("Check(A)", sim.check(a), Status::SUCCESS);
        c.eq(
            "C after A observed",
            sim.dispatch(p2(proc_count), 3, 0, arg(&r), Some(&mut t3), None),
            Status::SUCCESS,
        );
        c.eq("A's handle is stale now", sim.check(a), Status::NOT_FOUND);
        c.eq("B still valid", sim.wait(b), Status::SUCCESS);
        c.eq("C valid", sim.wait(t3), Status::SUCCESS);
        // A long dispatch-then-wait loop never runs out (BEHAVIOUR.md §3).
        for i in 0..50 {
            let mut t = NULL_TOKEN;
            c.eq(
                &format!("loop {i}"),
                sim.dispatch(p2(proc_count), 1 + i % 3, 0, arg(&r), Some(&mut t), None),
                Status::SUCCESS,
            );
            c.eq(&format!("loop wait {i}"), sim.wait(t), Status::SUCCESS);
        }
    });
    sim.smi_stepped(&[0, 1, 2, 3]);
    checks.assert_ok(113);
    assert_eq!(rec.total(), 4 + 50);
}

/// [DIFF] §2.3 step 4: one snapshot of the present APs. In relaxed mode an
/// AP that arrives during a broadcast is not part of it and is not released
/// with a stale mailbox.
#[test]
fn broadcast_uses_one_snapshot_in_relaxed_mode() {
    let sim = Sim::new(Options::new(4).relaxed(true));
    let rec = arc_record(4);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, bsp| {
        c.eq("BSP", bsp, 0);
        sim.step(1); // AP1 arrives and enters its dispatch loop
        let mut st = [Status(0x33); 4];
        let mut t = NULL_TOKEN;
        c.eq(
            "broadcast",
            sim.broadcast(p2(proc_count), 0, arg(&r), Some(&mut t), Some(&mut st)),
            Status::SUCCESS,
        );
        c.eq(
            "status array",
            st,
            [
                Status::NOT_STARTED,
                Status::NOT_READY,
                Status::NOT_STARTED,
                Status::NOT_STARTED,
            ],
        );
        sim.step(2); // AP2 arrives mid-call
        sim.step(2);
        c.eq("AP2 ran nothing", r.runs()[2], 0);
        c.eq("not done yet", sim.check(t), Status::NOT_READY);
        sim.step(1);
        c.eq("done", sim.check(t), Status::SUCCESS);
        c.eq(
            "statuses",
            st,
            [
                Status::NOT_STARTED,
                Status::SUCCESS,
                Status::NOT_STARTED,
                Status::NOT_STARTED,
            ],
        );
        c.eq("runs", r.runs(), vec![0, 1, 0, 0]);
        // A new broadcast now includes AP2.
        c.eq(
            "second broadcast",
            sim.broadcast(p2(proc_count), 0, arg(&r), None, None),
            Status::SUCCESS,
        );
        c.eq("runs after", r.runs(), vec![0, 2, 1, 0]);
    });
    sim.smi_stepped(&[0, 1, 2]);
    checks.assert_ok(9);
}

/// [DIFF] §2.3: CPUStatus NULL → no status written anywhere (EDK2 leaves a
/// stale pointer in the mailbox and the AP writes through it).
#[test]
fn broadcast_without_status_array_writes_nothing() {
    let sim = Sim::new(Options::new(4));
    let rec = arc_record(4);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        let mut st = [Status(1); 4];
        c.eq(
            "first",
            sim.broadcast(p2(proc_fail_odd), 0, arg(&r), None, Some(&mut st)),
            Status::SUCCESS,
        );
        c.eq(
            "statuses",
            st,
            [
                Status::NOT_STARTED,
                Status::DEVICE_ERROR,
                Status::SUCCESS,
                Status::DEVICE_ERROR,
            ],
        );
        let mut st2 = [Status(0x99); 4];
        st = st2;
        c.eq(
            "second, NULL status",
            sim.broadcast(p2(proc_count), 0, arg(&r), None, None),
            Status::SUCCESS,
        );
        let mut d = Status(0x42);
        c.eq(
            "dispatch with status",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), None, Some(&mut d)),
            Status::SUCCESS,
        );
        c.eq("dispatch status", d, Status::SUCCESS);
        c.eq(
            "dispatch without status",
            sim.dispatch(p2(proc_fail_odd), 1, 0, arg(&r), None, None),
            Status::SUCCESS,
        );
        c.eq("old arrays untouched", st, [Status(0x99); 4]);
        c.eq("old dispatch status untouched", d, Status::SUCCESS);
        st2[0] = Status(0);
        c.eq("st2", st2[0], Status(0));
    });
    sim.smi_stepped(&[0, 1, 2, 3]);
    checks.assert_ok(8);
}

/// [DIFF] §2.7: with a time source, a blocking call past its deadline →
/// EFI_TIMEOUT with CPUStatus EFI_TIMEOUT; the AP stays busy; a procedure
/// that had not started does not run later.
#[test]
fn blocking_dispatch_times_out_and_ap_stays_busy() {
    let sim = Sim::new(Options::new(3).clock(Clock::Manual { per_pause: 1_000 }));
    assert_eq!(
        sim.mp().attributes & MM_MP_TIMEOUT_SUPPORTED,
        MM_MP_TIMEOUT_SUPPORTED
    );
    let rec = arc_record(3);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        sim.freeze(1, true); // AP1 does not get to run
        let mut s = Status(0);
        c.eq(
            "blocking, 50 us",
            sim.dispatch(p2(proc_count), 1, 50, arg(&r), None, Some(&mut s)),
            Status::TIMEOUT,
        );
        c.eq("CPUStatus", s, Status::TIMEOUT);
        c.eq(
            "AP1 still busy",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), None, None),
            Status::NOT_READY,
        );
        sim.freeze(1, false);
        sim.step(1); // AP1 finally looks at its mailbox: abandoned, so it does not run it
        c.eq("abandoned call never ran", r.runs()[1], 0);
        c.eq("status not overwritten", s, Status::TIMEOUT);
        c.eq(
            "AP1 free again",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), None, Some(&mut s)),
            Status::SUCCESS,
        );
        c.eq("status", s, Status::SUCCESS);
        // Broadcast with a deadline: AP2 frozen, AP1 runs.
        sim.freeze(2, true);
        let mut st = [Status(0); 3];
        c.eq(
            "broadcast times out",
            sim.broadcast(p2(proc_count), 20, arg(&r), None, Some(&mut st)),
            Status::TIMEOUT,
        );
        c.eq(
            "statuses",
            st,
            [Status::NOT_STARTED, Status::SUCCESS, Status::TIMEOUT],
        );
        sim.freeze(2, false);
    });
    sim.smi_stepped(&[0, 1, 2]);
    checks.assert_ok(9);
    assert_eq!(rec.runs(), vec![0, 2, 0]);
}

static mut LATE_SIM: *const Sim = std::ptr::null();
static mut LATE_TOKEN: MmCompletion = std::ptr::null_mut();
static mut LATE_CHECK: Status = Status(0);

/// Runs on AP1: time passes, the BSP checks (and times the call out)
/// while this procedure is still running; then it returns an error that
/// must be discarded.
unsafe extern "efiapi" fn proc_outlives_deadline(_arg: *mut std::ffi::c_void) -> Status {
    // SAFETY: set by the test before the SMI, single-threaded test.
    let sim = unsafe { &*LATE_SIM };
    sim.advance(1_000_000);
    // SAFETY: as above.
    let token = unsafe { LATE_TOKEN };
    let st = sim.as_cpu(0, || sim.check(token));
    // SAFETY: as above.
    unsafe { LATE_CHECK = st };
    Status::DEVICE_ERROR
}

/// [DIFF] §2.7: a non-blocking call whose AP returns after the deadline:
/// Check reports EFI_TIMEOUT and the late status is discarded.
#[test]
fn late_result_is_discarded_after_timeout() {
    let sim = Sim::new(Options::new(2).clock(Clock::Manual { per_pause: 0 }));
    // SAFETY: single-threaded deterministic test; the Sim outlives the SMI.
    unsafe { LATE_SIM = &*sim };
    let checks = Checks::new();
    let c = checks.clone();
    sim.set_handler(move |sim, _| {
        let mut t = NULL_TOKEN;
        let mut s = Status(0);
        c.eq(
            "dispatch",
            sim.dispatch(
                p2(proc_outlives_deadline),
                1,
                100,
                std::ptr::null_mut(),
                Some(&mut t),
                Some(&mut s),
            ),
            Status::SUCCESS,
        );
        // SAFETY: single-threaded.
        unsafe { LATE_TOKEN = t };
        sim.step(1);
        // SAFETY: single-threaded.
        c.eq(
            "Check inside the procedure",
            unsafe { LATE_CHECK },
            Status::TIMEOUT,
        );
        c.eq("late status discarded", s, Status::TIMEOUT);
        c.eq("Check after", sim.check(t), Status::TIMEOUT);
        c.eq("Wait after", sim.wait(t), Status::TIMEOUT);
        c.eq(
            "result",
            sim.token_result(t),
            (Status::SUCCESS, Status::TIMEOUT),
        );
        let rec = Record::new(2);
        c.eq(
            "AP free after its procedure returned",
            sim.dispatch(p2(proc_count), 1, 0, rec.arg(), None, None),
            Status::SUCCESS,
        );
        c.eq("it ran", rec.runs(), vec![0, 1]);
    });
    sim.smi_stepped(&[0, 1]);
    checks.assert_ok(7);
}

/// §2.7: without a time source a non-zero timeout is invalid (EDK2).
#[test]
fn no_time_source_no_timeouts() {
    let sim = Sim::new(Options::new(2));
    assert_eq!(sim.mp().attributes & MM_MP_TIMEOUT_SUPPORTED, 0);
    let rec = arc_record(2);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        c.eq(
            "dispatch timeout",
            sim.dispatch(p2(proc_count), 1, 10, arg(&r), None, None),
            Status::INVALID_PARAMETER,
        );
        c.eq(
            "broadcast timeout",
            sim.broadcast(p2(proc_count), 10, arg(&r), None, None),
            Status::INVALID_PARAMETER,
        );
    });
    sim.smi_stepped(&[0, 1]);
    checks.assert_ok(2);
    assert_eq!(rec.total(), 0);
}

/// §2.4: the startup procedure runs on every CPU at every SMI entry.
#[test]
fn startup_procedure_runs_on_every_cpu() {
    let sim = Sim::new(Options::new(4));
    let rec = arc_record(4);
    assert_eq!(sim.set_startup(None, arg(&rec)), Status::INVALID_PARAMETER);
    assert_eq!(
        sim.set_startup(p1(legacy_count), arg(&rec)),
        Status::SUCCESS
    );
    sim.smi_stepped(&[2, 0, 3, 1]);
    assert_eq!(rec.runs(), vec![1, 1, 1, 1]);
    sim.smi_stepped(&[0, 1, 2, 3]);
    assert_eq!(rec.runs(), vec![2, 2, 2, 2]);
    assert_eq!(sim.set_startup(None, std::ptr::null_mut()), Status::SUCCESS);
    sim.smi_stepped(&[0, 1, 2, 3]);
    assert_eq!(rec.runs(), vec![2, 2, 2, 2]);
}

/// §4 [DIFF]: MmStartupThisAp to a busy AP waits for it instead of
/// overwriting its queued call; the void procedure is wrapped.
#[test]
fn startup_this_ap_waits_for_busy_ap_and_loses_nothing() {
    let sim = Sim::new(Options::new(3));
    let rec = arc_record(3);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        c.eq(
            "first",
            sim.startup_this_ap(p1(legacy_count), 1, arg(&r)),
            Status::SUCCESS,
        );
        c.eq("queued, not run", r.runs()[1], 0);
        c.eq(
            "second waits for AP1",
            sim.startup_this_ap(p1(legacy_count), 1, arg(&r)),
            Status::SUCCESS,
        );
        c.eq("first ran", r.runs()[1] >= 1, true);
        c.eq(
            "out of range",
            sim.startup_this_ap(p1(legacy_count), 3, arg(&r)),
            Status::INVALID_PARAMETER,
        );
        c.eq(
            "huge index",
            sim.startup_this_ap(p1(legacy_count), usize::MAX, arg(&r)),
            Status::INVALID_PARAMETER,
        );
        c.eq(
            "blocking",
            sim.blocking_startup_this_ap(p1(legacy_count), 2, arg(&r)),
            Status::SUCCESS,
        );
        c.eq("blocking ran", r.runs()[2], 1);
    });
    sim.smi_stepped(&[0, 1, 2]);
    checks.assert_ok(8);
    assert_eq!(rec.runs(), vec![0, 2, 1]);
}

/// Tokens are reset at SMI exit: a handle from an earlier SMI is stale.
#[test]
fn handles_do_not_survive_the_smi() {
    let sim = Sim::new(Options::new(2));
    let rec = arc_record(2);
    let saved = Arc::new(std::sync::Mutex::new(0usize));
    let checks = Checks::new();
    let (r, c, s) = (rec.clone(), checks.clone(), saved.clone());
    sim.set_handler(move |sim, bsp| {
        let old = *s.lock().unwrap() as MmCompletion;
        if !old.is_null() {
            c.eq("old handle in new SMI", sim.check(old), Status::NOT_FOUND);
            c.eq(
                "old handle result",
                sim.token_result(old).0,
                Status::NOT_FOUND,
            );
        }
        let mut t = NULL_TOKEN;
        c.eq(
            "dispatch",
            sim.dispatch(p2(proc_count), 1 - bsp, 0, arg(&r), Some(&mut t), None),
            Status::SUCCESS,
        );
        c.eq("wait", sim.wait(t), Status::SUCCESS);
        *s.lock().unwrap() = t as usize;
    });
    sim.smi_stepped(&[0, 1]);
    let old = *saved.lock().unwrap() as MmCompletion;
    assert_eq!(sim.check(old), Status::NOT_FOUND, "after the SMI");
    sim.smi_stepped(&[1, 0]);
    checks.assert_ok(6);
}

/// Every stepping order of 3 CPUs completes one SMI and leaves the run
/// semaphores balanced (a new SMI can start right after).
#[test]
fn every_arrival_order_completes() {
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for relaxed in [false, true] {
        let sim = Sim::new(Options::new(3).relaxed(relaxed));
        let rec = arc_record(3);
        let checks = Checks::new();
        let (r, c) = (rec.clone(), checks.clone());
        sim.set_handler(move |sim, _| {
            let st = sim.broadcast(p2(proc_count), 0, arg(&r), None, None);
            // Relaxed: the BSP runs at once, before any AP arrived.
            let want = if relaxed {
                Status::NOT_STARTED
            } else {
                Status::SUCCESS
            };
            c.eq("broadcast", st, want);
        });
        for o in orders {
            sim.smi_stepped(&o);
            for cpu in 0..3 {
                assert_eq!(
                    sim.instance().run_sem(cpu).unwrap().value(),
                    0,
                    "run semaphore {cpu} balanced"
                );
            }
            assert_eq!(sim.instance().arrival().value(), 0);
        }
        let calls = sim.foundation_calls.load(Ordering::SeqCst);
        if relaxed {
            // A CPU stepped after the BSP finished alone starts an SMI of
            // its own (it arrived after the SMI ended).
            assert!((6..=18).contains(&calls), "{calls}");
        } else {
            assert_eq!(calls, 6);
        }
        checks.assert_ok(calls);
        if !relaxed {
            // Traditional: every AP is in the loop before handlers run, and
            // the first arriver of each order is the BSP (2 orders each).
            assert_eq!(rec.runs(), vec![4, 4, 4]);
        }
    }
}

/// Two CPUs, fixed BSP 0, 10 µs timeouts on a manual clock advanced by
/// `per_pause` per pause; the handler dispatches a counting procedure to
/// AP 1 (non-blocking: the tests step the BSP) if the AP is present.
fn give_up_race(relaxed: bool, per_pause: u64) -> (Box<Sim>, Arc<Record>) {
    let sim = Sim::new(
        Options::new(2)
            .relaxed(relaxed)
            .fixed_bsp(0)
            .clock(Clock::Manual { per_pause })
            .timeout_us(10),
    );
    let rec = arc_record(2);
    let r = rec.clone();
    sim.set_handler(move |sim, _| {
        // Traditional: the AP is in (it joined at the barrier). Relaxed:
        // the handler runs at once, before the AP can mark itself present.
        if sim.instance().cpu(1).unwrap().is_present() {
            let mut t: MmCompletion = NULL_TOKEN;
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), Some(&mut t), None);
        }
    });
    (sim, rec)
}

/// The end of a `give_up_race` SMI: the AP joined (traditional: and ran
/// the procedure), left, and nothing is left counted.
fn assert_joined(sim: &Sim, rec: &Record, relaxed: bool) {
    let want = if relaxed { vec![0, 0] } else { vec![0, 1] };
    assert_eq!(
        rec.runs(),
        want,
        "relaxed={relaxed}; traditional: the AP joined and ran the procedure"
    );
    assert!(!sim.instance().cpu(1).unwrap().is_present());
    assert_eq!(sim.instance().arrival().value(), 0);
    assert_eq!(sim.instance().run_sem(1).unwrap().value(), 0);
}

/// Found by the benchmarks under load: an AP gives up waiting
/// for the BSP in the very moment the BSP comes in and locks the door
/// with the AP counted. The AP's check-out is then refused; if it left,
/// the relaxed BSP would wait forever for its Present flag (EDK2 does).
/// Deterministic: the BSP is stepped from inside the AP's last clock read,
/// between its "BSP inside?" look and its check-out. Now the AP joins.
#[test]
fn ap_giving_up_as_the_bsp_locks_the_door_joins_instead() {
    for relaxed in [true, false] {
        let (sim, rec) = give_up_race(relaxed, 0);
        // The AP arrives alone and waits for the BSP; its first timeout
        // sends the BSP an SMI IPI; then its second timeout runs out.
        assert!(!sim.step(1));
        sim.advance(1_000_000);
        assert!(!sim.step(1));
        assert_eq!(sim.ipis.lock().unwrap().len(), 1);
        sim.advance(1_000_000);
        // The clock read that decides the give-up: the BSP enters now.
        *sim.tick_hook.lock().unwrap() = Some(Box::new(|sim: &Sim| {
            sim.step(0);
            true
        }));
        let (mut ap_done, mut bsp_done) = (sim.step(1), false);
        for _ in 0..10_000 {
            if ap_done && bsp_done {
                break;
            }
            bsp_done = bsp_done || sim.step(0);
            ap_done = ap_done || sim.step(1);
        }
        assert!(
            ap_done && bsp_done,
            "relaxed={relaxed}: the SMI did not end"
        );
        assert_joined(&sim, &rec, relaxed);
    }
}

/// The same race with the AP in `MmMpSmiRendezvous`, which takes the
/// phases in their order: the refused give-up sends the AP back
/// to an earlier phase, out of that order, and the SMI must still end with
/// the AP joined. The AP runs on this thread; its pauses step the BSP,
/// which enters from inside the clock read that decides the give-up.
#[test]
fn ap_in_smi_rendezvous_joins_after_a_refused_give_up() {
    for relaxed in [true, false] {
        // Every pause passes a whole timeout.
        let (sim, rec) = give_up_race(relaxed, 1_000_000);
        // The AP's clock reads after its IPI: the first starts the second
        // timeout, the second decides it.
        let reads = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n = reads.clone();
        sim.freeze(0, true);
        *sim.tick_hook.lock().unwrap() = Some(Box::new(move |sim: &Sim| {
            if sim.ipis.lock().unwrap().is_empty() || n.fetch_add(1, Ordering::SeqCst) == 0 {
                return false;
            }
            sim.freeze(0, false);
            sim.step(0);
            true
        }));
        sim.smi_here(1, &[0]);
        assert_eq!(reads.load(Ordering::SeqCst), 2, "relaxed={relaxed}");
        assert_eq!(sim.ipis.lock().unwrap().len(), 1);
        assert!(
            sim.stepped_done(0),
            "relaxed={relaxed}: the AP left, the BSP's SMI did not end"
        );
        assert_joined(&sim, &rec, relaxed);
    }
}

/// §2.3: a warning (non-zero, error bit clear) returned by a procedure is
/// written to the CPU's CPUStatus entry but is not a failure: the token's
/// overall result stays EFI_SUCCESS. A failure becomes the result.
#[test]
fn a_warning_is_not_a_failure() {
    const WARN: Status = Status(1); // EFI_WARN_UNKNOWN_GLYPH
    let sim = Sim::new(Options::new(4));
    let rec = arc_record(4);
    rec.ret.store(WARN.0, Ordering::SeqCst);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, _| {
        let mut t = NULL_TOKEN;
        let mut st = [Status(0x77); 4];
        c.eq(
            "broadcast",
            sim.broadcast(p2(proc_count), 0, arg(&r), Some(&mut t), Some(&mut st)),
            Status::SUCCESS,
        );
        c.eq("done", sim.wait(t), Status::SUCCESS);
        c.eq("statuses", st, [Status::NOT_STARTED, WARN, WARN, WARN]);
        c.eq("result", sim.token_result(t).1, Status::SUCCESS);

        let mut d = NULL_TOKEN;
        let mut s = Status(0x77);
        c.eq(
            "dispatch",
            sim.dispatch(p2(proc_count), 2, 0, arg(&r), Some(&mut d), Some(&mut s)),
            Status::SUCCESS,
        );
        c.eq("dispatch done", sim.wait(d), Status::SUCCESS);
        c.eq("dispatch status", s, WARN);
        c.eq("dispatch result", sim.token_result(d).1, Status::SUCCESS);

        let mut f = NULL_TOKEN;
        c.eq(
            "failing broadcast",
            sim.broadcast(p2(proc_fail_odd), 0, arg(&r), Some(&mut f), None),
            Status::SUCCESS,
        );
        c.eq("failing done", sim.wait(f), Status::SUCCESS);
        c.eq(
            "failure result",
            sim.token_result(f).1,
            Status::DEVICE_ERROR,
        );
    });
    sim.smi_stepped(&[0, 1, 2, 3]);
    checks.assert_ok(11);
}

/// BEHAVIOUR.md §8, the hooks: RendezvousEntry, BeforeMmiHandler and
/// RendezvousExit run once on every CPU that takes part in an SMI.
#[test]
fn entry_before_handler_and_exit_hooks_once_per_cpu() {
    for relaxed in [false, true] {
        let sim = Sim::new(Options::new(4).relaxed(relaxed));
        for smi in 1..=2 {
            sim.smi_stepped(&[0, 1, 2, 3]);
            let counts = [
                sim.entries.load(Ordering::SeqCst),
                sim.before_mmi.load(Ordering::SeqCst),
                sim.exits.load(Ordering::SeqCst),
            ];
            assert_eq!(counts, [4 * smi; 3], "relaxed {relaxed}, SMI {smi}");
        }
    }
}

/// BEHAVIOUR.md §6.5: when IsSyncAlwaysNeeded answers FALSE the first
/// arrival round is skipped: a missing CPU is sent its SMI IPI at once,
/// not after `ApSyncTimeoutUs`. Answering TRUE, the first round runs.
#[test]
fn sync_not_needed_skips_the_first_round() {
    const FIRST_US: u64 = 1_000_000;
    const TICKS_PER_US: u64 = 1_000; // the Sim's clock counts nanoseconds
    for needed in [false, true] {
        let sim = Sim::new(
            Options::new(4)
                .clock(Clock::Manual {
                    per_pause: 1_000_000,
                })
                .timeouts_us(FIRST_US, 1_000)
                .sync_needed_hook(true),
        );
        sim.sync_needed.store(needed, Ordering::SeqCst);
        let start = sim.ticks.load(Ordering::SeqCst);
        // CPU 3 never arrives.
        sim.smi_stepped(&[0, 1, 2]);
        // Without the first round, CPUs 1 and 2 may not have checked in
        // yet either: they are sent one too.
        let ipis = sim.ipis.lock().unwrap().clone();
        let at = ipis.iter().position(|&a| a == apic(3));
        let at = at.unwrap_or_else(|| panic!("needed {needed}: no IPI to CPU 3 in {ipis:?}"));
        let after = sim.ipi_ticks.lock().unwrap()[at] - start;
        if needed {
            assert!(after >= FIRST_US * TICKS_PER_US, "IPI after {after} ticks");
        } else {
            assert!(
                after < FIRST_US * TICKS_PER_US / 2,
                "IPI after {after} ticks"
            );
        }
        assert_eq!(sim.stats().timeouts, 1);
    }
}

/// §2.3, relaxed mode: an AP that arrives while a broadcast it is not a
/// member of is in flight is a free target for DispatchProcedure; the
/// broadcast's members are busy until their share is done.
#[test]
fn ap_arriving_during_a_broadcast_takes_a_dispatch() {
    let sim = Sim::new(Options::new(4).relaxed(true));
    let rec = arc_record(4);
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, bsp| {
        c.eq("BSP", bsp, 0);
        sim.step(1); // AP1 arrives: the broadcast's only member
        let mut t = NULL_TOKEN;
        c.eq(
            "broadcast",
            sim.broadcast(p2(proc_count), 0, arg(&r), Some(&mut t), None),
            Status::SUCCESS,
        );
        sim.step(2); // AP2 arrives during the broadcast
        c.eq(
            "member busy",
            sim.dispatch(p2(proc_count), 1, 0, arg(&r), None, None),
            Status::NOT_READY,
        );
        let mut d = NULL_TOKEN;
        c.eq(
            "non-member free",
            sim.dispatch(p2(proc_count), 2, 0, arg(&r), Some(&mut d), None),
            Status::SUCCESS,
        );
        sim.step(2);
        c.eq("dispatch done", sim.check(d), Status::SUCCESS);
        c.eq("broadcast still running", sim.check(t), Status::NOT_READY);
        sim.step(1);
        c.eq("broadcast done", sim.check(t), Status::SUCCESS);
        c.eq("runs", r.runs(), vec![0, 1, 1, 0]);
    });
    sim.smi_stepped(&[0, 1, 2]);
    checks.assert_ok(7);
}

/// §6.1, §6.2: only a CPU that finds no BSP inside takes part in the
/// election. A platform hook that answers TRUE to every CPU that asks
/// makes the first one the BSP; the CPUs arriving after it are APs.
#[test]
fn a_hook_that_names_every_cpu_elects_the_first() {
    for relaxed in [false, true] {
        let sim = Sim::new(Options::new(4).relaxed(relaxed));
        sim.preferred_bsp.store(EVERY_CPU, Ordering::SeqCst);
        let rec = arc_record(4);
        let checks = Checks::new();
        let (r, c) = (rec.clone(), checks.clone());
        sim.set_handler(move |sim, bsp| {
            c.eq("BSP", bsp, 0);
            for ap in 1..4 {
                sim.step(ap);
            }
            c.eq(
                "broadcast",
                sim.broadcast(p2(proc_count), 0, arg(&r), None, None),
                Status::SUCCESS,
            );
            c.eq("current BSP", sim.current_bsp(), 0);
        });
        sim.smi_stepped(&[0, 1, 2, 3]);
        checks.assert_ok(3);
        assert_eq!(rec.runs(), vec![0, 1, 1, 1], "relaxed {relaxed}");
        assert_eq!(sim.foundation_calls.load(Ordering::SeqCst), 1);
        sim.assert_balanced();
    }
}

/// §6.3 steps 2–3, §6.4: the MTRR rounds are barriers. In every SMI each
/// CPU saves, then each replaces, then each calls BeforeMmiHandler, and
/// only after the handlers each restores: no CPU goes on to the next
/// round before every CPU finished the one before.
#[test]
fn mtrr_rounds_are_barriers() {
    for relaxed in [false, true] {
        let sim = Sim::new(Options::new(4).relaxed(relaxed).mtrrs(true));
        for _ in 0..3 {
            sim.smi_stepped(&[0, 1, 2, 3]);
            sim.assert_balanced();
        }
        let log = sim.mtrr_log.lock().unwrap().clone();
        let one_smi: Vec<usize> = [0, 1, 3, 2].iter().flat_map(|&op| [op; 4]).collect();
        assert_eq!(log, one_smi.repeat(3), "relaxed {relaxed}");
    }
}

/// §6.5: the arrival wait ends as soon as every expected CPU checked in:
/// no timeout elapses, no IPI is sent, in every SMI.
#[test]
fn arrival_wait_ends_when_all_arrived() {
    const TIMEOUT_US: u64 = 100_000;
    const TICKS_PER_US: u64 = 1_000;
    let sim = Sim::new(
        Options::new(4)
            .clock(Clock::Manual { per_pause: 1_000 })
            .timeouts_us(TIMEOUT_US, TIMEOUT_US),
    );
    for smi in 1..=3 {
        let start = sim.ticks.load(Ordering::SeqCst);
        // The BSP looks first, then the APs check in one by one.
        sim.smi_stepped(&[0, 1, 2, 3]);
        let took = sim.ticks.load(Ordering::SeqCst) - start;
        assert!(
            took < TIMEOUT_US * TICKS_PER_US / 10,
            "SMI {smi} took {took} ticks"
        );
        assert!(sim.ipis.lock().unwrap().is_empty(), "SMI {smi}: no IPI");
        assert_eq!(sim.stats().timeouts, 0, "SMI {smi}");
    }
}
