//! The bad-input matrix: ONE table with every
//! invalid-argument row of BEHAVIOUR.md §2, §4, §5, §7 and §11. Each row makes one
//! call through the C ABI, asserts the status BEHAVIOUR.md names and that the
//! observable state is unchanged: a [`Snapshot`] taken before and after
//! (every slot's GetProcessorInfo, GetNumberOfProcessors, the statistics,
//! the current BSP, the state and result of the live and stale tokens of
//! the fixture, WhoAmI, the platform's HotPlugApicId array, procedure run
//! counts and CPUStatus words, the protocol structs, and — below the C API —
//! the arrival counter, run semaphores and pending operations). Rows of
//! §7 compare the sync context's bytes and arrived count; rows of §11
//! (sizing and initialisation) compare the caller's buffer and out-values.
//!
//! Rows run where BEHAVIOUR.md places them: outside an SMI, or inside one of four
//! stepped SMIs whose handler first builds the state the row needs (a busy
//! AP with a running token, a full pool, an AP with a pending removal, an
//! absent AP, an empty slot, no AP at all).
mod common;

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use mm_mp::efi::{
    Boolean, CpuInterruptHandler, MmCompletion, ProcessorInformation, Status, SystemContext,
    INVALID_APIC_ID,
};
use mm_mp::ffi::*;
use mm_mp::platform::{MmMpConfig, MmMpPlatform};

const N: usize = 6;
/// Slot layout of the main fixture: 0 BSP, 1 busy AP, 2 free AP,
/// 3 present AP removed in the SMI (phase A), 4 absent, 5 empty.
const BUSY: usize = 1;
const FREE: usize = 2;
const REMOVED: usize = 3;
const ABSENT: usize = 4;
const EMPTY: usize = 5;

/// Where a row runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ctx {
    /// Outside any SMI, main fixture.
    Outside,
    /// Outside, on an instance without hot-plug support nor hooks.
    Bare,
    /// Inside SMI phase A: AP1 busy with running token T1 (pool of one:
    /// full), AP3 present with a pending removal, AP4 absent, slot 5 empty.
    A,
    /// Phase B: AP1 busy with T1, no removal in the set.
    B,
    /// Phase C: every AP free, the pool holds one completed, unobserved token.
    C,
    /// Phase D: only the BSP arrived.
    D,
    /// No instance: sizing / initialisation / sync context rows.
    Raw,
}

type Call = Box<dyn Fn(&Fix) -> Option<Status>>;

/// The table (only used on the test thread, which plays every CPU).
struct Rows(Vec<Row>);

// SAFETY (test code): see `Rows`.
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}

struct Row {
    ctx: Ctx,
    spec: &'static str,
    what: &'static str,
    call: Call,
    /// `None` for VOID functions (only "nothing changed" is asserted).
    want: Option<Status>,
    /// `"Function.Parameter"` (names as in include/mm_mp.h) when the row
    /// passes NULL for exactly that pointer parameter, every other argument
    /// valid: `every_pointer_parameter_has_a_null_row` checks that every
    /// pointer parameter of every export and protocol member has one.
    null: Option<&'static str>,
}

impl Row {
    /// Marks the row as the NULL case of `key` (`"Function.Parameter"`).
    fn null(mut self, key: &'static str) -> Row {
        self.null = Some(key);
        self
    }
}

/// What rows can refer to.
struct Fix {
    sim: Box<Sim>,
    bare: Box<Sim>,
    rec: Arc<Record>,
    /// Token variable holding the running T1 (phases A, B).
    live: Mutex<MmCompletion>,
    /// A handle of an earlier SMI.
    stale: Mutex<MmCompletion>,
    /// CPUStatus word of T1.
    status: Mutex<Status>,
    sync: SyncFix,
}

// SAFETY (test code): the fixture is used from the test thread only (the
// stepped SMIs run their handler on it).
unsafe impl Send for Fix {}
unsafe impl Sync for Fix {}

/// A sync context (BEHAVIOUR.md §7) with 4 CPUs: two checked in, door locked.
struct SyncFix {
    mem: Vec<u8>,
    off: usize,
    size: usize,
    /// A second, open context.
    open_mem: Vec<u8>,
    open_off: usize,
}

impl SyncFix {
    fn locked(&self) -> *mut MmMpSyncContext {
        self.mem[self.off..].as_ptr() as *mut MmMpSyncContext
    }
    fn open(&self) -> *mut MmMpSyncContext {
        self.open_mem[self.open_off..].as_ptr() as *mut MmMpSyncContext
    }
}

/// A context of `cpus` CPUs; with `lock_after = Some(k)`, CPUs 0..k
/// checked in and the door locked.
fn sync_context(cpus: usize, lock_after: Option<usize>) -> (Vec<u8>, usize, usize) {
    let (mem, off, size, ctx) = new_sync_context(cpus);
    if let Some(k) = lock_after {
        for c in 0..k {
            // SAFETY: a context we just made.
            assert_eq!(unsafe { MmMpSyncCheckInCpu(ctx, c) }, Status::SUCCESS);
        }
        let mut count = 0usize;
        // SAFETY: as above.
        unsafe { MmMpSyncLockDoor(ctx, 0, &mut count) };
        assert_eq!(count, k);
    }
    (mem, off, size)
}

// -- the snapshot ----------------------------------------------------------------

#[derive(Debug, PartialEq, Eq, Clone)]
struct Snapshot {
    infos: Vec<(Status, Vec<u8>)>,
    nprocs: (Status, usize),
    stats: MmMpStatistics,
    bsp: usize,
    /// (Check, GetTokenResult, *Result) of the fixture's live and stale handles.
    tokens: Vec<(Status, Status, Status)>,
    who: (Status, usize),
    hot_plug_ids: Vec<u64>,
    runs: Vec<usize>,
    status: Status,
    protocols: Vec<u8>,
    semaphores: Vec<u32>,
    pending: Vec<u32>,
    sync: Vec<u8>,
    sync_counts: (usize, usize),
}

fn bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a live, plain-data value.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
        .to_vec()
}

fn snapshot(f: &Fix, sim: &Sim) -> Snapshot {
    let infos = (0..sim.opts.cpus)
        .map(|c| {
            let (st, info) = sim.processor_info(c);
            (st, bytes::<ProcessorInformation>(&info))
        })
        .collect();
    let mut stats = MmMpStatistics::default();
    // SAFETY: valid instance and out-pointer.
    unsafe { MmMpGetStatistics(sim.inst, &mut stats) };
    let tokens = [*f.live.lock().unwrap(), *f.stale.lock().unwrap()]
        .iter()
        .map(|&t| {
            let (rs, rv) = sim.token_result(t);
            (sim.check(t), rs, rv)
        })
        .collect();
    let inst = sim.instance();
    let mut semaphores = vec![inst.arrival().value()];
    semaphores.extend((0..sim.opts.cpus).map(|c| inst.run_sem(c).unwrap().value()));
    // SAFETY: valid instance; the protocols live in it.
    let protocols = unsafe {
        let mut p = bytes(&*MmMpGetMmMpProtocol(sim.inst));
        p.extend(bytes(&*MmMpGetCpuServiceProtocol(sim.inst)));
        p.extend(bytes(&*MmMpGetRendezvousProtocol(sim.inst)));
        p
    };
    let s = &f.sync;
    // SAFETY: the fixture's contexts.
    let sync_counts = unsafe {
        (
            MmMpSyncGetArrivedCpuCount(s.locked()),
            MmMpSyncGetArrivedCpuCount(s.open()),
        )
    };
    let mut sync = s.mem.clone();
    sync.extend(&s.open_mem);
    Snapshot {
        infos,
        nprocs: sim.number_of_processors(),
        stats,
        bsp: sim.current_bsp(),
        tokens,
        who: sim.who_am_i(),
        hot_plug_ids: (0..sim.opts.cpus).map(|c| sim.hot_plug_id(c)).collect(),
        runs: f.rec.runs(),
        status: *f.status.lock().unwrap(),
        protocols,
        semaphores,
        pending: (0..sim.opts.cpus)
            .map(|c| inst.cpu(c).unwrap().pending_op())
            .collect(),
        sync,
        sync_counts,
    }
}

// -- raw-pointer helpers -----------------------------------------------------------

fn arg(f: &Fix) -> *mut c_void {
    Arc::as_ptr(&f.rec) as *mut c_void
}

fn dispatch(
    f: &Fix,
    p: bool,
    cpu: usize,
    timeout: usize,
    token: *mut MmCompletion,
) -> Option<Status> {
    let mp = f.sim.mp();
    let proc_ = if p { p2(proc_count) } else { None };
    // SAFETY: our protocol; token NULL or a fixture variable.
    Some(unsafe {
        (mp.dispatch_procedure)(mp, proc_, cpu, timeout, arg(f), token, std::ptr::null_mut())
    })
}

fn broadcast(
    f: &Fix,
    p: bool,
    timeout: usize,
    token: *mut MmCompletion,
    status: *mut Status,
) -> Option<Status> {
    let mp = f.sim.mp();
    let proc_ = if p { p2(proc_count) } else { None };
    // SAFETY: our protocol; pointers NULL or valid for NumberOfCpus entries.
    Some(unsafe { (mp.broadcast_procedure)(mp, proc_, timeout, arg(f), token, status) })
}

fn startup(f: &Fix, p: bool, cpu: usize, blocking: bool) -> Option<Status> {
    let proc_ = if p { p1(legacy_count) } else { None };
    // SAFETY: valid instance.
    Some(unsafe {
        if blocking {
            MmMpBlockingStartupThisAp(f.sim.inst, proc_, cpu, arg(f))
        } else {
            MmMpStartupThisAp(f.sim.inst, proc_, cpu, arg(f))
        }
    })
}

/// A failing broadcast with a token variable holding `token` and a status
/// array: neither may be written.
fn broadcast_writes_nothing(f: &Fix, token: MmCompletion) -> Option<Status> {
    let mut st = [Status(7); N];
    let s = with_token(token, |t| broadcast(f, true, 0, t, st.as_mut_ptr()));
    assert_eq!(st, [Status(7); N], "status array written");
    s
}

/// A token variable that must not be written by a failing call: a fresh
/// local holding `init`; returns the status, and INVALID_PARAMETER-like
/// detection of a write is folded into the row by comparing afterwards.
fn with_token(
    init: MmCompletion,
    mut call: impl FnMut(*mut MmCompletion) -> Option<Status>,
) -> Option<Status> {
    let mut t = init;
    let st = call(&mut t);
    assert_eq!(t, init, "the token variable was written by a failing call");
    st
}

unsafe extern "efiapi" fn handler(_t: isize, _c: SystemContext) {}
unsafe extern "efiapi" fn noop_entry(_c: *mut c_void, _b: usize) {}

fn row(
    ctx: Ctx,
    spec: &'static str,
    what: &'static str,
    want: Option<Status>,
    call: impl Fn(&Fix) -> Option<Status> + 'static,
) -> Row {
    Row {
        ctx,
        spec,
        what,
        call: Box::new(call),
        want,
        null: None,
    }
}

const INV: Option<Status> = Some(Status::INVALID_PARAMETER);

#[allow(clippy::vec_init_then_push)]
fn rows() -> Vec<Row> {
    use Ctx::*;
    let mut r = Vec::new();
    const ALL_ONES: usize = usize::MAX;
    const T0: MmCompletion = NULL_TOKEN;
    // §2 general: outside an SMI, from an AP.
    r.push(row(
        Outside,
        "§2",
        "Dispatch outside an SMI",
        Some(Status::NOT_READY),
        |f| with_token(T0, |t| dispatch(f, true, FREE, 0, t)),
    ));
    r.push(row(
        Outside,
        "§2",
        "Dispatch outside an SMI, NULL procedure",
        Some(Status::NOT_READY),
        |f| dispatch(f, false, ALL_ONES, 0, std::ptr::null_mut()),
    ));
    r.push(row(
        Outside,
        "§2",
        "Broadcast outside an SMI",
        Some(Status::NOT_READY),
        |f| broadcast_writes_nothing(f, T0),
    ));
    r.push(row(
        Outside,
        "§2/§4",
        "MmStartupThisAp outside an SMI",
        Some(Status::NOT_READY),
        |f| startup(f, true, FREE, false),
    ));
    r.push(row(
        Outside,
        "§2/§4",
        "BlockingStartupThisAp outside an SMI",
        Some(Status::NOT_READY),
        |f| startup(f, true, FREE, true),
    ));
    r.push(row(
        Outside,
        "§2",
        "Check outside an SMI (stale handle)",
        Some(Status::NOT_FOUND),
        |f| Some(f.sim.check(*f.stale.lock().unwrap())),
    ));
    r.push(row(
        Outside,
        "§2",
        "Wait outside an SMI (stale handle)",
        Some(Status::NOT_FOUND),
        |f| Some(f.sim.wait(*f.stale.lock().unwrap())),
    ));
    r.push(row(A, "§2", "Dispatch from an AP", INV, |f| {
        f.sim
            .as_cpu(FREE, || with_token(T0, |t| dispatch(f, true, BUSY, 0, t)))
    }));
    r.push(row(A, "§2", "Broadcast from an AP", INV, |f| {
        f.sim.as_cpu(FREE, || {
            broadcast(f, true, 0, std::ptr::null_mut(), std::ptr::null_mut())
        })
    }));
    r.push(row(A, "§2/§4", "MmStartupThisAp from an AP", INV, |f| {
        f.sim.as_cpu(FREE, || startup(f, true, BUSY, false))
    }));
    // §2.1
    r.push(
        row(Outside, "§2.1", "GetNumberOfProcessors NULL", INV, |f| {
            let mp = f.sim.mp();
            // SAFETY: NULL is the input under test.
            Some(unsafe { (mp.get_number_of_processors)(mp, std::ptr::null_mut()) })
        })
        .null("GetNumberOfProcessors.NumberOfProcessors"),
    );
    // §2.2 checks 1-7, in order (procedure, CPU, timeout), then the [DIFF] rows.
    for (spec, what, p, cpu, timeout) in [
        ("§2.2 1", "Dispatch CpuNumber = NumberOfCpus", true, N, 0),
        ("§2.2 1", "Dispatch CpuNumber all ones", true, ALL_ONES, 0),
        (
            "§2.2 1",
            "Dispatch CpuNumber huge, NULL procedure",
            false,
            1 << 40,
            0,
        ),
        ("§2.2 2", "Dispatch to the BSP", true, 0, 0),
        ("§2.2 3", "Dispatch to an empty slot", true, EMPTY, 0),
        ("§2.2 4", "Dispatch to an absent AP", true, ABSENT, 0),
        (
            "§2.2 5",
            "Dispatch to an AP with a pending removal",
            true,
            REMOVED,
            0,
        ),
        (
            "§2.2 6",
            "Dispatch with a timeout, no time source",
            true,
            FREE,
            1000,
        ),
        ("§2.2 7", "Dispatch NULL procedure", false, FREE, 0),
    ] {
        let rw = row(A, spec, what, INV, move |f| {
            with_token(T0, |t| dispatch(f, p, cpu, timeout, t))
        });
        r.push(if !p && cpu == FREE {
            rw.null("DispatchProcedure.Procedure")
        } else {
            rw
        });
    }
    r.push(row(
        A,
        "§2.2 [DIFF]",
        "Dispatch, *Token is a running call",
        Some(Status::ALREADY_STARTED),
        |f| {
            let live = *f.live.lock().unwrap();
            with_token(live, |t| dispatch(f, true, FREE, 0, t))
        },
    ));
    r.push(row(
        A,
        "§2.2 [DIFF]",
        "Dispatch to a busy AP (blocking)",
        Some(Status::NOT_READY),
        |f| dispatch(f, true, BUSY, 0, std::ptr::null_mut()),
    ));
    r.push(row(
        A,
        "§2.2 [DIFF]",
        "Dispatch to a busy AP (non-blocking)",
        Some(Status::NOT_READY),
        |f| with_token(T0, |t| dispatch(f, true, BUSY, 0, t)),
    ));
    r.push(row(
        A,
        "§2.2 [DIFF]",
        "Dispatch, no token free",
        Some(Status::OUT_OF_RESOURCES),
        |f| with_token(T0, |t| dispatch(f, true, FREE, 0, t)),
    ));
    r.push(row(
        C,
        "§2.2 [DIFF]",
        "Dispatch, pool full of unobserved tokens",
        Some(Status::OUT_OF_RESOURCES),
        |f| with_token(T0, |t| dispatch(f, true, FREE, 0, t)),
    ));
    r.push(row(D, "§2.2 4", "Dispatch with no AP present", INV, |f| {
        with_token(T0, |t| dispatch(f, true, FREE, 0, t))
    }));
    // §2.3
    r.push(row(
        A,
        "§2.3 1",
        "Broadcast with a timeout, no time source",
        INV,
        |f| broadcast(f, true, 5, std::ptr::null_mut(), std::ptr::null_mut()),
    ));
    r.push(
        row(A, "§2.3 2", "Broadcast NULL procedure", INV, |f| {
            broadcast(f, false, 0, std::ptr::null_mut(), std::ptr::null_mut())
        })
        .null("BroadcastProcedure.Procedure"),
    );
    r.push(row(
        A,
        "§2.3 3",
        "Broadcast, *Token is a running call",
        Some(Status::ALREADY_STARTED),
        |f| {
            let live = *f.live.lock().unwrap();
            with_token(live, |t| broadcast(f, true, 0, t, std::ptr::null_mut()))
        },
    ));
    for (ctx, spec, what, want) in [
        (
            A,
            "§2.3 5",
            "Broadcast, an AP of the set has a pending removal",
            INV,
        ),
        (
            B,
            "§2.3 6",
            "Broadcast, an AP of the set is busy",
            Some(Status::NOT_READY),
        ),
        (
            D,
            "§2.3 7",
            "Broadcast, no AP present",
            Some(Status::NOT_STARTED),
        ),
        (
            C,
            "§2.3 8",
            "Broadcast, no token free",
            Some(Status::OUT_OF_RESOURCES),
        ),
    ] {
        r.push(row(ctx, spec, what, want, |f| {
            broadcast_writes_nothing(f, T0)
        }));
    }
    // §2.4
    r.push(
        row(
            Outside,
            "§2.4",
            "SetStartupProcedure NULL procedure, non-NULL argument",
            INV,
            |f| Some(f.sim.set_startup(None, arg(f))),
        )
        .null("SetStartupProcedure.Procedure"),
    );
    r.push(row(
        A,
        "§2.4",
        "SetStartupProcedure NULL procedure, non-NULL argument (in SMI)",
        INV,
        |f| Some(f.sim.set_startup(None, arg(f))),
    ));
    // §2.5 / §2.6 / extension
    for (ctx, name) in [(A, "in SMI"), (Outside, "outside")] {
        let _ = name;
        r.push(
            row(ctx, "§2.5", "Check NULL token", INV, |f| {
                Some(f.sim.check(NULL_TOKEN))
            })
            .null("CheckForProcedure.Token"),
        );
        r.push(
            row(ctx, "§2.6", "Wait NULL token", INV, |f| {
                Some(f.sim.wait(NULL_TOKEN))
            })
            .null("WaitForProcedure.Token"),
        );
        r.push(
            row(ctx, "§11", "GetTokenResult NULL token", INV, |f| {
                Some(f.sim.token_result(NULL_TOKEN).0)
            })
            .null("MmMpGetTokenResult.Token"),
        );
    }
    for (v, what) in [
        (1usize, "Check forged handle 1"),
        (usize::MAX, "Check forged handle all ones"),
        (0xdead_beef, "Check forged handle"),
        (
            (1usize << 24) | 1,
            "Check forged handle (slot 0, sequence 1)",
        ),
        (
            (1usize << 24) | 0xff_ffff,
            "Check forged handle (slot out of range)",
        ),
    ] {
        r.push(row(A, "§2.5", what, Some(Status::NOT_FOUND), move |f| {
            Some(f.sim.check(v as MmCompletion))
        }));
        r.push(row(A, "§2.6", what, Some(Status::NOT_FOUND), move |f| {
            Some(f.sim.wait(v as MmCompletion))
        }));
        r.push(row(A, "§11", what, Some(Status::NOT_FOUND), move |f| {
            Some(f.sim.token_result(v as MmCompletion).0)
        }));
    }
    r.push(row(
        A,
        "§2.5",
        "Check stale handle (earlier SMI)",
        Some(Status::NOT_FOUND),
        |f| Some(f.sim.check(*f.stale.lock().unwrap())),
    ));
    r.push(row(
        A,
        "§2.6",
        "Wait stale handle (earlier SMI)",
        Some(Status::NOT_FOUND),
        |f| Some(f.sim.wait(*f.stale.lock().unwrap())),
    ));
    r.push(row(
        A,
        "§11",
        "GetTokenResult stale handle",
        Some(Status::NOT_FOUND),
        |f| Some(f.sim.token_result(*f.stale.lock().unwrap()).0),
    ));
    r.push(
        row(A, "§11", "GetTokenResult NULL Result", INV, |f| {
            // SAFETY: valid instance; NULL Result is the input under test.
            Some(unsafe {
                MmMpGetTokenResult(f.sim.inst, *f.live.lock().unwrap(), std::ptr::null_mut())
            })
        })
        .null("MmMpGetTokenResult.Result"),
    );
    r.push(row(
        A,
        "§2.5",
        "Check from an AP of a running token (no side effect)",
        Some(Status::NOT_READY),
        |f| {
            f.sim
                .as_cpu(FREE, || Some(f.sim.check(*f.live.lock().unwrap())))
        },
    ));
    // §4
    // §4: the checks of §2.2 (1-5, 7) for both MmStartupThisAp exports.
    for (spec, what, p, cpu, blocking) in [
        (
            "§4 (§2.2 1)",
            "MmStartupThisAp CpuIndex = NumberOfCpus",
            true,
            N,
            false,
        ),
        (
            "§4 (§2.2 1)",
            "MmStartupThisAp CpuIndex all ones",
            true,
            ALL_ONES,
            false,
        ),
        (
            "§4 (§2.2 1)",
            "BlockingStartupThisAp CpuIndex all ones",
            true,
            ALL_ONES,
            true,
        ),
        ("§4 (§2.2 2)", "MmStartupThisAp to the BSP", true, 0, false),
        (
            "§4 (§2.2 3)",
            "MmStartupThisAp to an empty slot",
            true,
            EMPTY,
            false,
        ),
        (
            "§4 (§2.2 4)",
            "MmStartupThisAp to an absent AP",
            true,
            ABSENT,
            false,
        ),
        (
            "§4 (§2.2 5)",
            "MmStartupThisAp to an AP with a pending removal",
            true,
            REMOVED,
            false,
        ),
        (
            "§4 (§2.2 7)",
            "MmStartupThisAp NULL procedure",
            false,
            FREE,
            false,
        ),
        (
            "§4 (§2.2 7)",
            "BlockingStartupThisAp NULL procedure",
            false,
            FREE,
            true,
        ),
    ] {
        let rw = row(A, spec, what, INV, move |f| startup(f, p, cpu, blocking));
        r.push(match (p, blocking) {
            (false, false) => rw.null("MmMpStartupThisAp.Procedure"),
            (false, true) => rw.null("MmMpBlockingStartupThisAp.Procedure"),
            _ => rw,
        });
    }
    // §5.2
    let info = |f: &Fix, n: usize, null: bool| {
        let cs = f.sim.cs();
        let mut i = ProcessorInformation::EMPTY;
        i.processor_id = 0x5a5a;
        let out = out_or_null(null, &mut i);
        // SAFETY: our protocol; `out` NULL or a local.
        let st = unsafe { (cs.get_processor_info)(cs, n, out) };
        assert_eq!(i.processor_id, 0x5a5a, "buffer written on error");
        Some(st)
    };
    r.push(row(
        Outside,
        "§5.2 GetProcessorInfo",
        "number = NumberOfCpus",
        INV,
        move |f| info(f, N, false),
    ));
    r.push(row(
        Outside,
        "§5.2 GetProcessorInfo",
        "number all ones",
        INV,
        move |f| info(f, usize::MAX, false),
    ));
    r.push(
        row(
            Outside,
            "§5.2 GetProcessorInfo",
            "NULL buffer",
            INV,
            move |f| info(f, 0, true),
        )
        .null("GetProcessorInfo.ProcessorInfoBuffer"),
    );
    r.push(row(
        Outside,
        "§5.2 GetProcessorInfo",
        "empty slot",
        Some(Status::NOT_FOUND),
        move |f| info(f, EMPTY, false),
    ));
    r.push(row(
        A,
        "§5.2 GetProcessorInfo",
        "slot removed in this SMI",
        Some(Status::NOT_FOUND),
        move |f| info(f, REMOVED, false),
    ));
    for (ctx, what, want, n) in [
        (Outside, "number = NumberOfCpus", INV, N),
        (Outside, "number all ones", INV, usize::MAX),
        (Outside, "empty slot", Some(Status::NOT_FOUND), EMPTY),
        (A, "the current BSP", Some(Status::UNSUPPORTED), 0),
        (
            B,
            "a slot with a pending operation (Add)",
            Some(Status::UNSUPPORTED),
            REMOVED,
        ),
        (
            A,
            "a slot removed in this SMI (empty)",
            Some(Status::NOT_FOUND),
            REMOVED,
        ),
    ] {
        r.push(row(ctx, "§5.2 SwitchBsp", what, want, move |f| {
            Some(f.sim.switch_bsp(n))
        }));
    }
    let add = |f: &Fix, id: u64, null: bool| {
        let cs = f.sim.cs();
        let mut n = NONE;
        let out = out_or_null(null, &mut n);
        // SAFETY: our protocol; `out` NULL or a local.
        let st = unsafe { (cs.add_processor)(cs, id, out) };
        assert_eq!(n, NONE, "ProcessorNumber written on error");
        Some(st)
    };
    r.push(row(
        Bare,
        "§5.2 AddProcessor",
        "hot-plug disabled",
        Some(Status::UNSUPPORTED),
        move |f| {
            let cs = f.bare.cs();
            let mut n = NONE;
            // SAFETY: our protocol, valid out-pointer.
            let st = unsafe { (cs.add_processor)(cs, apic(9), &mut n) };
            assert_eq!(n, NONE);
            Some(st)
        },
    ));
    r.push(
        row(
            Outside,
            "§5.2 AddProcessor",
            "NULL ProcessorNumber",
            INV,
            move |f| add(f, apic(EMPTY), true),
        )
        .null("AddProcessor.ProcessorNumber"),
    );
    r.push(row(
        Outside,
        "§5.2 AddProcessor",
        "ProcessorId = INVALID_APIC_ID",
        INV,
        move |f| add(f, INVALID_APIC_ID, false),
    ));
    r.push(row(
        Outside,
        "§5.2 AddProcessor",
        "ProcessorId already in the table",
        Some(Status::ALREADY_STARTED),
        move |f| add(f, apic(FREE), false),
    ));
    r.push(row(
        Outside,
        "§5.2 AddProcessor",
        "no slot reserved for the APIC ID",
        INV,
        move |f| add(f, apic(40), false),
    ));
    r.push(row(
        A,
        "§5.2 AddProcessor",
        "slot reserved but removed in this SMI",
        INV,
        move |f| {
            f.sim.set_hot_plug_id(REMOVED, apic(41));
            let s = add(f, apic(41), false);
            f.sim.set_hot_plug_id(REMOVED, INVALID_APIC_ID);
            s
        },
    ));
    r.push(row(
        Bare,
        "§5.2 RemoveProcessor",
        "hot-plug disabled",
        Some(Status::UNSUPPORTED),
        |f| Some(f.bare.remove_processor(1)),
    ));
    for (ctx, what, want, n) in [
        (Outside, "number = NumberOfCpus", INV, N),
        (Outside, "number all ones", INV, usize::MAX),
        (Outside, "empty slot", INV, EMPTY),
        (A, "the current BSP", Some(Status::UNSUPPORTED), 0),
        (A, "slot already removed (empty)", INV, REMOVED),
        (
            B,
            "a slot with a pending operation (Add)",
            Some(Status::UNSUPPORTED),
            REMOVED,
        ),
    ] {
        r.push(row(ctx, "§5.2 RemoveProcessor", what, want, move |f| {
            Some(f.sim.remove_processor(n))
        }));
    }
    r.push(row(
        B,
        "§5.2 AddProcessor",
        "ProcessorId added in this SMI",
        Some(Status::ALREADY_STARTED),
        move |f| add(f, apic(REMOVED), false),
    ));
    r.push(
        row(Outside, "§5.2 WhoAmI", "NULL ProcessorNumber", INV, |f| {
            let cs = f.sim.cs();
            // SAFETY: NULL is the input under test.
            Some(unsafe { (cs.who_am_i)(cs, std::ptr::null_mut()) })
        })
        .null("WhoAmI.ProcessorNumber"),
    );
    r.push(row(
        Outside,
        "§5.2 WhoAmI",
        "caller's APIC ID not in the table",
        Some(Status::NOT_FOUND),
        |f| Some(f.sim.as_cpu(40, || f.sim.who_am_i()).0),
    ));
    r.push(row(
        A,
        "§5.2 WhoAmI",
        "caller is the removed CPU",
        Some(Status::NOT_FOUND),
        |f| Some(f.sim.as_cpu(REMOVED, || f.sim.who_am_i()).0),
    ));
    r.push(row(
        Bare,
        "§5.2 RegisterExceptionHandler",
        "no platform hook",
        Some(Status::UNSUPPORTED),
        |f| {
            let cs = f.bare.cs();
            let h: CpuInterruptHandler = Some(handler);
            // SAFETY: our protocol.
            Some(unsafe { (cs.register_exception_handler)(cs as *const _ as *mut _, 14, h) })
        },
    ));
    r.push(row(
        Outside,
        "§11",
        "non-instance: protocol getters NULL, GetCurrentBsp all ones",
        None,
        |f| {
            let junk = [0u64; 256];
            for p in [
                junk.as_ptr() as *mut MmMpInstance,
                (f.sim.inst as usize + 64) as *mut MmMpInstance,
            ] {
                // SAFETY: junk and a misplaced pointer into a live region are the inputs.
                unsafe {
                    assert!(MmMpGetMmMpProtocol(p).is_null());
                    assert!(MmMpGetCpuServiceProtocol(p).is_null());
                    assert!(MmMpGetRendezvousProtocol(p).is_null());
                    assert_eq!(MmMpGetCurrentBsp(p), usize::MAX);
                    MmMpSmiRendezvous(p, 0);
                }
            }
            None
        },
    ));
    r.push(row(
        Outside,
        "§11",
        "SmiRendezvous CpuIndex = NumberOfCpus / all ones / empty slot",
        None,
        |f| {
            // SAFETY: valid instance; the indices are the inputs under test.
            unsafe {
                MmMpSmiRendezvous(f.sim.inst, N);
                MmMpSmiRendezvous(f.sim.inst, usize::MAX);
                MmMpSmiRendezvous(f.sim.inst, EMPTY);
            }
            None
        },
    ));
    // §7: the sync context (locked: 2 of 4 checked in; open: nobody).
    r.push(row(
        Outside,
        "§7",
        "SyncCheckInCpu door locked",
        Some(Status::ABORTED),
        |f| {
            // SAFETY: the fixture's context.
            Some(unsafe { MmMpSyncCheckInCpu(f.sync.locked(), 2) })
        },
    ));
    r.push(row(
        Outside,
        "§7",
        "SyncCheckOutCpu door locked",
        Some(Status::ABORTED),
        |f| {
            // SAFETY: the fixture's context.
            Some(unsafe { MmMpSyncCheckOutCpu(f.sync.locked(), 0) })
        },
    ));
    for (idx, what) in [
        (4usize, "SyncCheckInCpu CpuIndex = NumberOfCpus"),
        (usize::MAX, "SyncCheckInCpu CpuIndex all ones"),
    ] {
        r.push(row(Outside, "§7", what, INV, move |f| {
            // SAFETY: the fixture's context.
            Some(unsafe { MmMpSyncCheckInCpu(f.sync.open(), idx) })
        }));
    }
    r.push(row(
        Outside,
        "§7",
        "SyncCheckOutCpu CpuIndex out of range",
        INV,
        |f| {
            // SAFETY: the fixture's context.
            Some(unsafe { MmMpSyncCheckOutCpu(f.sync.open(), 4) })
        },
    ));
    r.push(row(
        Outside,
        "§7 [DIFF]",
        "SyncCheckOutCpu with nobody checked in",
        INV,
        |f| {
            // SAFETY: the fixture's context.
            Some(unsafe { MmMpSyncCheckOutCpu(f.sync.open(), 1) })
        },
    ));
    r.push(row(
        Outside,
        "§7",
        "VOID calls with bad indices change nothing",
        None,
        |f| {
            let (o, l) = (f.sync.open(), f.sync.locked());
            // SAFETY: the fixture's contexts; every index is out of
            // range or BSP == AP, so nothing may wait or change.
            unsafe {
                for c in [o, l] {
                    MmMpSyncReleaseOneAp(c, 4, 0);
                    MmMpSyncReleaseOneAp(c, 1, 1);
                    MmMpSyncReleaseOneAp(c, usize::MAX, 0);
                    MmMpSyncReleaseBsp(c, 1, 4);
                    MmMpSyncReleaseBsp(c, 2, 2);
                    MmMpSyncWaitForBsp(c, 4, 0);
                    MmMpSyncWaitForBsp(c, 1, 1);
                    MmMpSyncWaitForAPs(c, 1, 4);
                    MmMpSyncWaitForAPs(c, 0, 0);
                }
            }
            None
        },
    ));
    r.push(row(
        Outside,
        "§7 [DIFF]",
        "SyncLockDoor twice keeps the first count",
        None,
        |f| {
            let mut n = 0usize;
            // SAFETY: the fixture's context.
            unsafe { MmMpSyncLockDoor(f.sync.locked(), 0, &mut n) };
            assert_eq!(n, 2);
            None
        },
    ));
    // §7 / §11 sizing of sync contexts.
    let sync_size = |cpus: usize, line: usize| {
        let mut s = 0x5a5ausize;
        // SAFETY: valid out-pointer.
        let st = unsafe { MmMpSyncGetRequiredSize(cpus, line, &mut s) };
        assert_eq!(s, 0x5a5a, "Size written on error");
        Some(st)
    };
    r.push(
        row(Raw, "§11 SyncGetRequiredSize", "NULL Size", INV, |_| {
            // SAFETY: NULL is the input under test.
            Some(unsafe { MmMpSyncGetRequiredSize(4, 64, std::ptr::null_mut()) })
        })
        .null("MmMpSyncGetRequiredSize.Size"),
    );
    r.push(row(
        Raw,
        "§11 SyncGetRequiredSize",
        "NumberOfCpus 0",
        INV,
        move |_| sync_size(0, 64),
    ));
    r.push(row(
        Raw,
        "§11 SyncGetRequiredSize",
        "CacheLineSize 48",
        INV,
        move |_| sync_size(4, 48),
    ));
    r.push(row(
        Raw,
        "§11 SyncGetRequiredSize",
        "CacheLineSize 8",
        INV,
        move |_| sync_size(4, 8),
    ));
    r.push(row(
        Raw,
        "§11 SyncGetRequiredSize",
        "NumberOfCpus all ones",
        INV,
        move |_| sync_size(usize::MAX, 64),
    ));
    r.push(row(
        Raw,
        "§11 SyncGetRequiredSize",
        "NumberOfCpus 2^32 - 1, one above the documented limit",
        INV,
        move |_| sync_size((1usize << 32) - 1, 64),
    ));
    let sync_init = |shift: usize, size_delta: isize, cpus: usize, line: usize, null_buf: bool| {
        let mut need = 0usize;
        // SAFETY: valid out-pointer.
        unsafe { MmMpSyncGetRequiredSize(4, 64, &mut need) };
        let mut mem = vec![0xA5u8; need + 256];
        let off = (64 - mem.as_ptr() as usize % 64) % 64 + shift;
        let buf = if null_buf {
            std::ptr::null_mut()
        } else {
            mem[off..].as_mut_ptr() as *mut c_void
        };
        let mut ctx = 0x1234usize as *mut MmMpSyncContext;
        // SAFETY: the buffer is inside `mem`.
        let st = unsafe {
            MmMpSyncContextInit(
                buf,
                (need as isize + size_delta) as usize,
                cpus,
                line,
                &mut ctx,
            )
        };
        assert!(mem.iter().all(|&b| b == 0xA5), "buffer written on error");
        assert!(ctx.is_null(), "*Context is NULL on error");
        Some(st)
    };
    r.push(
        row(Raw, "§11 SyncContextInit", "NULL Buffer", INV, move |_| {
            sync_init(0, 0, 4, 64, true)
        })
        .null("MmMpSyncContextInit.Buffer"),
    );
    r.push(
        row(Raw, "§11 SyncContextInit", "NULL Context", INV, |_| {
            let mut mem = vec![0xA5u8; 4096];
            let off = (64 - mem.as_ptr() as usize % 64) % 64;
            // SAFETY: NULL Context is the input under test.
            let st = unsafe {
                MmMpSyncContextInit(
                    mem[off..].as_mut_ptr() as *mut c_void,
                    2048,
                    4,
                    64,
                    std::ptr::null_mut(),
                )
            };
            assert!(mem.iter().all(|&b| b == 0xA5));
            Some(st)
        })
        .null("MmMpSyncContextInit.Context"),
    );
    r.push(row(
        Raw,
        "§11 SyncContextInit",
        "NumberOfCpus 0",
        INV,
        move |_| sync_init(0, 0, 0, 64, false),
    ));
    r.push(row(
        Raw,
        "§11 SyncContextInit",
        "CacheLineSize 24",
        INV,
        move |_| sync_init(0, 0, 4, 24, false),
    ));
    r.push(row(
        Raw,
        "§11 SyncContextInit",
        "Buffer not on a cache line",
        INV,
        move |_| sync_init(8, 0, 4, 64, false),
    ));
    r.push(row(
        Raw,
        "§11 SyncContextInit",
        "BufferSize one byte short",
        Some(Status::BUFFER_TOO_SMALL),
        move |_| sync_init(0, -1, 4, 64, false),
    ));
    // §11 MmMpGetRequiredSize / MmMpInitialize.
    type Tweak = fn(&mut MmMpConfig, &mut MmMpPlatform);
    fn fixed_bsp_empty(c: &mut MmMpConfig, _: &mut MmMpPlatform) {
        c.bsp_election = Boolean::FALSE;
        c.bsp_index = 1;
        // SAFETY: `init_case` keeps the table alive for the call; the cast
        // only drops the const of its own Vec's pointer.
        unsafe {
            (c.processor_info as *mut ProcessorInformation)
                .add(1)
                .write(ProcessorInformation::EMPTY)
        };
    }
    let invalid: Vec<(&'static str, Tweak)> = vec![
        ("config Revision 0", |c, _| c.revision = 0),
        ("config Revision 2", |c, _| c.revision = 2),
        ("NumberOfCpus 0", |c, _| c.number_of_cpus = 0),
        ("MaxTokens 0", |c, _| c.max_tokens = 0),
        ("MaxTokens above the handle encoding", |c, _| {
            c.max_tokens = u32::MAX
        }),
        ("CacheLineSize 48", |c, _| c.cache_line_size = 48),
        ("CacheLineSize 8", |c, _| c.cache_line_size = 8),
        ("SyncMode 2", |c, _| c.sync_mode = 2),
        ("SyncMode all ones", |c, _| c.sync_mode = u32::MAX),
        ("BspIndex = NumberOfCpus without election", |c, _| {
            c.bsp_election = Boolean::FALSE;
            c.bsp_index = c.number_of_cpus;
        }),
        ("NULL ProcessorInfo", |c, _| {
            c.processor_info = std::ptr::null()
        }),
        ("platform Revision 0", |_, p| p.revision = 0),
        (
            "fixed BspIndex names an empty slot (decision)",
            fixed_bsp_empty,
        ),
        ("missing MmFoundationEntry", |_, p| {
            p.mm_foundation_entry = None
        }),
    ];
    let mut cases: Vec<(&'static str, Tweak, Status)> = invalid
        .into_iter()
        .map(|(what, tweak)| (what, tweak, Status::INVALID_PARAMETER))
        .collect();
    cases.push((
        "size arithmetic overflows",
        |c, _| {
            c.number_of_cpus = u32::MAX;
            c.cache_line_size = 1 << 31;
        },
        Status::OUT_OF_RESOURCES,
    ));
    for (what, tweak, want) in cases {
        r.push(row(Raw, "§11 Initialize", what, Some(want), move |_| {
            init_case(tweak, 0, 0, false)
        }));
    }
    r.push(
        row(Raw, "§11 Initialize", "NULL Config", INV, |_| init_null(0))
            .null("MmMpInitialize.Config"),
    );
    r.push(
        row(Raw, "§11 Initialize", "NULL Platform", INV, |_| {
            init_null(1)
        })
        .null("MmMpInitialize.Platform"),
    );
    r.push(
        row(Raw, "§11 Initialize", "NULL Buffer", INV, |_| init_null(2))
            .null("MmMpInitialize.Buffer"),
    );
    r.push(
        row(Raw, "§11 Initialize", "NULL Instance", INV, |_| {
            init_null(3)
        })
        .null("MmMpInitialize.Instance"),
    );
    r.push(
        row(Raw, "§11 GetRequiredSize", "NULL Size", INV, |_| {
            init_null(4)
        })
        .null("MmMpGetRequiredSize.Size"),
    );
    r.push(
        row(Raw, "§11 GetRequiredSize", "NULL Config", INV, |_| {
            init_null(5)
        })
        .null("MmMpGetRequiredSize.Config"),
    );
    r.push(row(
        Raw,
        "§11 Initialize",
        "Buffer not on a cache line",
        INV,
        |_| init_case(|_, _| {}, 8, 0, false),
    ));
    r.push(row(
        Raw,
        "§11 Initialize",
        "BufferSize one byte short",
        Some(Status::BUFFER_TOO_SMALL),
        |_| init_case(|_, _| {}, 0, 1, false),
    ));
    r.push(row(
        Raw,
        "§11 Initialize",
        "BufferSize 0",
        Some(Status::BUFFER_TOO_SMALL),
        |_| init_case(|_, _| {}, 0, 0, true),
    ));
    null_rows(&mut r);
    r
}

/// `*out` holds `init` before the call and must hold it after: an
/// out-parameter that a failing call must not write.
fn out_untouched<T: Copy + PartialEq + std::fmt::Debug>(
    init: T,
    what: &str,
    call: impl FnOnce(*mut T) -> Status,
) -> Option<Status> {
    let mut v = init;
    let st = call(&mut v);
    assert_eq!(v, init, "{what} written by a failing call");
    Some(st)
}

/// NULL in one pointer parameter, every other argument valid, for the
/// pointer parameters not covered by the rows above (BEHAVIOUR.md §2, §5.2,
/// §6.7, §7, §11). A row runs where a call with that pointer valid would
/// act: the BSP-only services inside an SMI with a free AP, Check/Wait
/// with a running token. Parameters for which NULL is an accepted value
/// are in [`NULL_ALLOWED`] and `null_where_the_contract_allows_it`.
fn null_rows(r: &mut Vec<Row>) {
    use Ctx::*;
    fn null_this() -> *const mm_mp::efi::MmMpProtocol {
        std::ptr::null()
    }
    fn null_cs() -> *const mm_mp::efi::SmmCpuServiceProtocol {
        std::ptr::null()
    }
    fn null_inst() -> *mut MmMpInstance {
        std::ptr::null_mut()
    }
    fn null_sync() -> *mut MmMpSyncContext {
        std::ptr::null_mut()
    }
    // EFI_MM_MP_PROTOCOL (§2 general rule 1).
    r.push(
        row(C, "§2.1", "GetNumberOfProcessors NULL This", INV, |f| {
            let mp = f.sim.mp();
            out_untouched(0x5a5ausize, "NumberOfProcessors", |n| {
                // SAFETY: NULL This is the input under test.
                unsafe { (mp.get_number_of_processors)(null_this(), n) }
            })
        })
        .null("GetNumberOfProcessors.This"),
    );
    r.push(
        row(C, "§2.2", "DispatchProcedure NULL This", INV, |f| {
            let mp = f.sim.mp();
            with_token(T0_NULL, |t| {
                out_untouched(Status(7), "CPUStatus", |st| {
                    // SAFETY: NULL This is the input under test; the rest are valid.
                    unsafe {
                        (mp.dispatch_procedure)(null_this(), p2(proc_count), FREE, 0, arg(f), t, st)
                    }
                })
            })
        })
        .null("DispatchProcedure.This"),
    );
    r.push(
        row(C, "§2.3", "BroadcastProcedure NULL This", INV, |f| {
            let mp = f.sim.mp();
            let mut st = [Status(7); N];
            let s = with_token(T0_NULL, |t| {
                // SAFETY: NULL This is the input under test; the rest are valid.
                Some(unsafe {
                    (mp.broadcast_procedure)(
                        null_this(),
                        p2(proc_count),
                        0,
                        arg(f),
                        t,
                        st.as_mut_ptr(),
                    )
                })
            });
            assert_eq!(st, [Status(7); N], "status array written");
            s
        })
        .null("BroadcastProcedure.This"),
    );
    r.push(
        row(C, "§2.4", "SetStartupProcedure NULL This", INV, |f| {
            let mp = f.sim.mp();
            // SAFETY: NULL This is the input under test; the rest are valid.
            Some(unsafe { (mp.set_startup_procedure)(null_this(), p1(legacy_count), arg(f)) })
        })
        .null("SetStartupProcedure.This"),
    );
    r.push(
        row(
            A,
            "§2.5",
            "CheckForProcedure NULL This (running token)",
            INV,
            |f| {
                let mp = f.sim.mp();
                let live = *f.live.lock().unwrap();
                // SAFETY: NULL This is the input under test; the token is live.
                Some(unsafe { (mp.check_for_procedure)(null_this(), live) })
            },
        )
        .null("CheckForProcedure.This"),
    );
    r.push(
        row(
            A,
            "§2.6",
            "WaitForProcedure NULL This (running token)",
            INV,
            |f| {
                let mp = f.sim.mp();
                let live = *f.live.lock().unwrap();
                // SAFETY: NULL This is the input under test; the token is live.
                Some(unsafe { (mp.wait_for_procedure)(null_this(), live) })
            },
        )
        .null("WaitForProcedure.This"),
    );
    // EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL (§6.7).
    r.push(
        row(D, "§6.7", "WaitForAllProcessor NULL This", INV, |f| {
            // SAFETY: the fixture's protocol gives the member.
            let p = unsafe { &*MmMpGetRendezvousProtocol(f.sim.inst) };
            // SAFETY: NULL This is the input under test.
            Some(unsafe { (p.wait_for_all_processor)(std::ptr::null_mut(), Boolean::TRUE) })
        })
        .null("WaitForAllProcessor.This"),
    );
    // EFI_SMM_CPU_SERVICE_PROTOCOL (§5.2).
    r.push(
        row(Outside, "§5.2", "GetProcessorInfo NULL This", INV, |f| {
            let cs = f.sim.cs();
            let mut i = ProcessorInformation::EMPTY;
            i.processor_id = 0x5a5a;
            // SAFETY: NULL This is the input under test; the buffer is valid.
            let st = unsafe { (cs.get_processor_info)(null_cs(), FREE, &mut i) };
            assert_eq!(i.processor_id, 0x5a5a, "buffer written on error");
            Some(st)
        })
        .null("GetProcessorInfo.This"),
    );
    r.push(
        row(Outside, "§5.2", "SwitchBsp NULL This", INV, |f| {
            let cs = f.sim.cs();
            // SAFETY: NULL This is the input under test.
            Some(unsafe { (cs.switch_bsp)(null_cs(), FREE) })
        })
        .null("SwitchBsp.This"),
    );
    r.push(
        row(Outside, "§5.2", "AddProcessor NULL This", INV, |f| {
            let cs = f.sim.cs();
            f.sim.set_hot_plug_id(EMPTY, apic(EMPTY));
            let s = out_untouched(NONE, "ProcessorNumber", |n| {
                // SAFETY: NULL This is the input under test; the slot is reserved.
                unsafe { (cs.add_processor)(null_cs(), apic(EMPTY), n) }
            });
            f.sim.set_hot_plug_id(EMPTY, INVALID_APIC_ID);
            s
        })
        .null("AddProcessor.This"),
    );
    r.push(
        row(Outside, "§5.2", "RemoveProcessor NULL This", INV, |f| {
            let cs = f.sim.cs();
            // SAFETY: NULL This is the input under test.
            Some(unsafe { (cs.remove_processor)(null_cs(), FREE) })
        })
        .null("RemoveProcessor.This"),
    );
    r.push(
        row(Outside, "§5.2", "WhoAmI NULL This", INV, |f| {
            let cs = f.sim.cs();
            f.sim.as_cpu(FREE, || {
                out_untouched(NONE, "ProcessorNumber", |n| {
                    // SAFETY: NULL This is the input under test.
                    unsafe { (cs.who_am_i)(null_cs(), n) }
                })
            })
        })
        .null("WhoAmI.This"),
    );
    r.push(
        row(
            Outside,
            "§5.2",
            "RegisterExceptionHandler NULL This",
            INV,
            |f| {
                let cs = f.sim.cs();
                let before = f.sim.exception_handlers.lock().unwrap().len();
                // SAFETY: NULL This is the input under test.
                let st = unsafe {
                    (cs.register_exception_handler)(std::ptr::null_mut(), 14, Some(handler))
                };
                let after = f.sim.exception_handlers.lock().unwrap().len();
                assert_eq!(before, after, "the platform hook was called");
                Some(st)
            },
        )
        .null("RegisterExceptionHandler.This"),
    );
    // §11 exports taking an instance.
    r.push(
        row(Outside, "§6", "SmiRendezvous NULL Instance", None, |_| {
            // SAFETY: NULL is the input under test; BEHAVIOUR.md §6: returns at once.
            unsafe { MmMpSmiRendezvous(null_inst(), 0) };
            None
        })
        .null("MmMpSmiRendezvous.Instance"),
    );
    r.push(
        row(
            C,
            "§11",
            "protocol getter NULL Instance: MM MP",
            None,
            |_| {
                // SAFETY: NULL is the input under test.
                assert!(unsafe { MmMpGetMmMpProtocol(null_inst()) }.is_null());
                None
            },
        )
        .null("MmMpGetMmMpProtocol.Instance"),
    );
    r.push(
        row(
            C,
            "§11",
            "protocol getter NULL Instance: CPU service",
            None,
            |_| {
                // SAFETY: NULL is the input under test.
                assert!(unsafe { MmMpGetCpuServiceProtocol(null_inst()) }.is_null());
                None
            },
        )
        .null("MmMpGetCpuServiceProtocol.Instance"),
    );
    r.push(
        row(
            C,
            "§11",
            "protocol getter NULL Instance: rendezvous",
            None,
            |_| {
                // SAFETY: NULL is the input under test.
                assert!(unsafe { MmMpGetRendezvousProtocol(null_inst()) }.is_null());
                None
            },
        )
        .null("MmMpGetRendezvousProtocol.Instance"),
    );
    r.push(
        row(
            C,
            "§11",
            "GetCurrentBsp NULL Instance (in an SMI)",
            None,
            |_| {
                // SAFETY: NULL is the input under test.
                assert_eq!(unsafe { MmMpGetCurrentBsp(null_inst()) }, usize::MAX);
                None
            },
        )
        .null("MmMpGetCurrentBsp.Instance"),
    );
    r.push(
        row(C, "§4", "MmStartupThisAp NULL Instance", INV, |f| {
            // SAFETY: NULL is the input under test; the rest are valid.
            Some(unsafe { MmMpStartupThisAp(null_inst(), p1(legacy_count), FREE, arg(f)) })
        })
        .null("MmMpStartupThisAp.Instance"),
    );
    r.push(
        row(C, "§4", "BlockingStartupThisAp NULL Instance", INV, |f| {
            // SAFETY: NULL is the input under test; the rest are valid.
            Some(unsafe { MmMpBlockingStartupThisAp(null_inst(), p1(legacy_count), FREE, arg(f)) })
        })
        .null("MmMpBlockingStartupThisAp.Instance"),
    );
    r.push(
        row(
            A,
            "§11",
            "GetTokenResult NULL Instance (running token)",
            INV,
            |f| {
                let live = *f.live.lock().unwrap();
                out_untouched(Status(0x5a5a), "Result", |res| {
                    // SAFETY: NULL is the input under test; the rest are valid.
                    unsafe { MmMpGetTokenResult(null_inst(), live, res) }
                })
            },
        )
        .null("MmMpGetTokenResult.Instance"),
    );
    r.push(
        row(Outside, "§11", "GetStatistics NULL Instance", INV, |_| {
            let init = MmMpStatistics {
                smis: 0x5a5a,
                ..Default::default()
            };
            out_untouched(init, "Statistics", |s| {
                // SAFETY: NULL is the input under test.
                unsafe { MmMpGetStatistics(null_inst(), s) }
            })
        })
        .null("MmMpGetStatistics.Instance"),
    );
    r.push(
        row(Outside, "§11", "GetStatistics NULL Statistics", INV, |f| {
            // SAFETY: NULL is the input under test.
            Some(unsafe { MmMpGetStatistics(f.sim.inst, std::ptr::null_mut()) })
        })
        .null("MmMpGetStatistics.Statistics"),
    );
    r.push(
        row(
            Outside,
            "§11",
            "GetHotPlugStatistics NULL Instance",
            INV,
            |_| {
                let init = MmMpHotPlugStatistics {
                    cpus_added: 0x5a5a,
                    cpus_removed: 0x5a5a,
                };
                out_untouched(init, "Statistics", |h| {
                    // SAFETY: NULL is the input under test.
                    unsafe { MmMpGetHotPlugStatistics(null_inst(), h) }
                })
            },
        )
        .null("MmMpGetHotPlugStatistics.Instance"),
    );
    r.push(
        row(
            Outside,
            "§11",
            "GetHotPlugStatistics NULL Statistics",
            INV,
            |f| {
                // SAFETY: NULL is the input under test.
                Some(unsafe { MmMpGetHotPlugStatistics(f.sim.inst, std::ptr::null_mut()) })
            },
        )
        .null("MmMpGetHotPlugStatistics.Statistics"),
    );
    // §7: the MmMpSync* exports with a NULL context; every other argument
    // is one a valid context would act on.
    r.push(
        row(
            Outside,
            "§7",
            "SyncContextReset NULL Context",
            None,
            |_| {
                // SAFETY: NULL is the input under test.
                unsafe { MmMpSyncContextReset(null_sync()) };
                None
            },
        )
        .null("MmMpSyncContextReset.Context"),
    );
    r.push(
        row(
            Outside,
            "§7",
            "SyncGetArrivedCpuCount NULL Context",
            None,
            |_| {
                // SAFETY: NULL is the input under test.
                assert_eq!(unsafe { MmMpSyncGetArrivedCpuCount(null_sync()) }, 0);
                None
            },
        )
        .null("MmMpSyncGetArrivedCpuCount.Context"),
    );
    r.push(
        row(Outside, "§7", "SyncCheckInCpu NULL Context", INV, |_| {
            // SAFETY: NULL is the input under test.
            Some(unsafe { MmMpSyncCheckInCpu(null_sync(), 0) })
        })
        .null("MmMpSyncCheckInCpu.Context"),
    );
    r.push(
        row(Outside, "§7", "SyncCheckOutCpu NULL Context", INV, |_| {
            // SAFETY: NULL is the input under test.
            Some(unsafe { MmMpSyncCheckOutCpu(null_sync(), 0) })
        })
        .null("MmMpSyncCheckOutCpu.Context"),
    );
    r.push(
        row(Outside, "§7", "SyncLockDoor NULL Context", None, |_| {
            let mut n = 0x5a5ausize;
            // SAFETY: NULL is the input under test; CpuCount is valid.
            unsafe { MmMpSyncLockDoor(null_sync(), 0, &mut n) };
            assert_eq!(n, 0x5a5a, "CpuCount written for a NULL context");
            None
        })
        .null("MmMpSyncLockDoor.Context"),
    );
    r.push(
        row(
            Outside,
            "§7 [DIFF]",
            "SyncLockDoor NULL CpuCount on a locked door changes nothing",
            None,
            |f| {
                // SAFETY: the fixture's context; NULL CpuCount is the input
                // under test (BEHAVIOUR.md §7: not written when NULL).
                unsafe { MmMpSyncLockDoor(f.sync.locked(), 0, std::ptr::null_mut()) };
                None
            },
        )
        .null("MmMpSyncLockDoor.CpuCount"),
    );
    r.push(
        row(Outside, "§7", "SyncWaitForAPs NULL Context", None, |_| {
            // SAFETY: NULL is the input under test; with a context this
            // would wait for one AP, which no one releases.
            unsafe { MmMpSyncWaitForAPs(null_sync(), 1, 0) };
            None
        })
        .null("MmMpSyncWaitForAPs.Context"),
    );
    r.push(
        row(
            Outside,
            "§7",
            "SyncReleaseOneAp NULL Context",
            None,
            |_| {
                // SAFETY: NULL is the input under test.
                unsafe { MmMpSyncReleaseOneAp(null_sync(), 1, 0) };
                None
            },
        )
        .null("MmMpSyncReleaseOneAp.Context"),
    );
    r.push(
        row(Outside, "§7", "SyncWaitForBsp NULL Context", None, |_| {
            // SAFETY: NULL is the input under test; with a context this
            // would wait for a release no one gives.
            unsafe { MmMpSyncWaitForBsp(null_sync(), 1, 0) };
            None
        })
        .null("MmMpSyncWaitForBsp.Context"),
    );
    r.push(
        row(Outside, "§7", "SyncReleaseBsp NULL Context", None, |_| {
            // SAFETY: NULL is the input under test.
            unsafe { MmMpSyncReleaseBsp(null_sync(), 1, 0) };
            None
        })
        .null("MmMpSyncReleaseBsp.Context"),
    );
}

/// The token value the NULL-This rows start their token variable with.
const T0_NULL: MmCompletion = NULL_TOKEN;

fn base_tables() -> (Vec<ProcessorInformation>, MmMpConfig, MmMpPlatform) {
    let o = Options::new(4);
    let table = processor_table(&o);
    let c = config(&o, &table);
    let mut p = platform(&o, std::ptr::null_mut());
    p.mm_foundation_entry = Some(noop_entry);
    (table, c, p)
}

/// Initialize with a tweaked configuration: the status, with the buffer
/// and *Instance checked untouched (BEHAVIOUR.md §11: nothing is written on error).
fn init_case(
    tweak: fn(&mut MmMpConfig, &mut MmMpPlatform),
    shift: usize,
    short: usize,
    zero: bool,
) -> Option<Status> {
    let (table, mut c, mut p) = base_tables();
    c.processor_info = table.as_ptr();
    tweak(&mut c, &mut p);
    let mut size = 0x5a5ausize;
    // SAFETY: valid pointers (ProcessorInfo may be NULL: the input).
    let sst = unsafe { MmMpGetRequiredSize(&c, &mut size) };
    let (_, good, _) = base_tables();
    let mut need = 0usize;
    // SAFETY: valid pointers.
    unsafe {
        MmMpGetRequiredSize(
            &{
                let mut g = good;
                g.processor_info = table.as_ptr();
                g
            },
            &mut need,
        )
    };
    if sst != Status::SUCCESS {
        assert_eq!(size, 0x5a5a, "Size written on error");
    }
    let mut mem = vec![0xA5u8; need + 256];
    let off = (64 - mem.as_ptr() as usize % 64) % 64 + shift;
    let len = if zero { 0 } else { need - short };
    let mut inst = 0x1234usize as *mut MmMpInstance;
    // SAFETY: `len` bytes at `off` are inside `mem`.
    let st = unsafe {
        MmMpInitialize(
            mem[off..].as_mut_ptr() as *mut c_void,
            len,
            &c,
            &p,
            &mut inst,
        )
    };
    assert!(mem.iter().all(|&b| b == 0xA5), "buffer written on error");
    assert_eq!(inst as usize, 0x1234, "*Instance written on error");
    if sst != Status::SUCCESS {
        assert_eq!(sst, st, "GetRequiredSize and Initialize agree");
    }
    Some(st)
}

fn init_null(which: u8) -> Option<Status> {
    let (table, mut c, p) = base_tables();
    c.processor_info = table.as_ptr();
    let mut size = 0usize;
    // SAFETY: valid pointers.
    unsafe { MmMpGetRequiredSize(&c, &mut size) };
    let mut mem = vec![0xA5u8; size + 64];
    let off = (64 - mem.as_ptr() as usize % 64) % 64;
    let buf = mem[off..].as_mut_ptr() as *mut c_void;
    let mut inst = 0x1234usize as *mut MmMpInstance;
    let mut sz = 0x5a5ausize;
    // SAFETY: the NULL argument is the input under test; the rest are valid.
    let st = unsafe {
        match which {
            0 => MmMpInitialize(buf, size, std::ptr::null(), &p, &mut inst),
            1 => MmMpInitialize(buf, size, &c, std::ptr::null(), &mut inst),
            2 => MmMpInitialize(std::ptr::null_mut(), size, &c, &p, &mut inst),
            3 => MmMpInitialize(buf, size, &c, &p, std::ptr::null_mut()),
            4 => MmMpGetRequiredSize(&c, std::ptr::null_mut()),
            _ => MmMpGetRequiredSize(std::ptr::null(), &mut sz),
        }
    };
    assert!(mem.iter().all(|&b| b == 0xA5), "buffer written on error");
    assert_eq!(inst as usize, 0x1234);
    assert_eq!(sz, 0x5a5a);
    Some(st)
}

/// Run the rows of `ctx` with before/after snapshots; failures collected.
fn run_rows(
    f: &Fix,
    sim: &Sim,
    rows: &Rows,
    ctx: Ctx,
    failures: &Mutex<Vec<String>>,
    ran: &Mutex<usize>,
) {
    for r in rows.0.iter().filter(|r| r.ctx == ctx) {
        let before = (ctx != Ctx::Raw).then(|| snapshot(f, sim));
        let got = (r.call)(f);
        let after = (ctx != Ctx::Raw).then(|| snapshot(f, sim));
        *ran.lock().unwrap() += 1;
        if got != r.want {
            failures.lock().unwrap().push(format!(
                "{} {} ({ctx:?}): got {got:?}, documented {:?}",
                r.spec, r.what, r.want
            ));
        }
        if before != after {
            failures.lock().unwrap().push(format!(
                "{} {} ({ctx:?}): state changed\n  before {before:?}\n  after  {after:?}",
                r.spec, r.what
            ));
        }
    }
}

#[test]
fn every_invalid_argument_row() {
    let start = std::time::Instant::now();
    let rows = Arc::new(Rows(rows()));
    let (mem, off, size) = sync_context(4, Some(2));
    let (open_mem, open_off, _) = sync_context(4, None);
    let f = Arc::new(Fix {
        sim: Sim::new(Options::new(N).tokens(1).hot_plug(true).empty(&[EMPTY])),
        bare: Sim::new(Options::new(2).hot_plug(false).exception_hook(false)),
        rec: Arc::from(Record::new(N)),
        live: Mutex::new(NULL_TOKEN),
        stale: Mutex::new(NULL_TOKEN),
        status: Mutex::new(Status(0)),
        sync: SyncFix {
            mem,
            off,
            size,
            open_mem,
            open_off,
        },
    });
    let _ = f.sync.size;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let ran = Arc::new(Mutex::new(0usize));
    let sim: &Sim = &f.sim;

    // SMI 0: make a handle that is stale afterwards.
    let f2 = f.clone();
    sim.set_handler(move |sim, _| {
        let mut t = NULL_TOKEN;
        assert_eq!(
            sim.dispatch(p2(proc_count), FREE, 0, arg(&f2), Some(&mut t), None),
            Status::SUCCESS
        );
        assert_eq!(sim.wait(t), Status::SUCCESS);
        *f2.stale.lock().unwrap() = t;
    });
    sim.smi_stepped(&[0, 1, 2, 3, 4]);

    run_rows(&f, sim, &rows, Ctx::Outside, &failures, &ran);
    run_rows(&f, &f.bare, &rows, Ctx::Bare, &failures, &ran);
    run_rows(&f, sim, &rows, Ctx::Raw, &failures, &ran);

    // Phases A–D: each SMI builds its state, then runs its rows.
    for (phase, order, blocked) in [
        (Ctx::A, vec![0, 1, 2, 3], 1),
        (Ctx::B, vec![0, 1, 2], 1),
        (Ctx::C, vec![0, 1, 2], 1),
        (Ctx::D, vec![0], 3),
    ] {
        sim.blocked.store(blocked, Ordering::SeqCst);
        let (f2, rows2, fl, rn) = (f.clone(), rows.clone(), failures.clone(), ran.clone());
        sim.set_handler(move |sim, bsp| {
            assert_eq!(bsp, 0);
            let mut live = NULL_TOKEN;
            let mut st = f2.status.lock().unwrap();
            let target = &mut *st as *mut Status;
            match phase {
                Ctx::A | Ctx::B => {
                    // SAFETY: the status word lives in the fixture.
                    let r = sim.dispatch(
                        p2(proc_count),
                        BUSY,
                        0,
                        arg(&f2),
                        Some(&mut live),
                        Some(unsafe { &mut *target }),
                    );
                    assert_eq!(r, Status::SUCCESS);
                    if phase == Ctx::A {
                        assert_eq!(sim.remove_processor(REMOVED), Status::SUCCESS);
                    } else {
                        // The removed slot is hot-added again: pending Add.
                        sim.set_hot_plug_id(REMOVED, apic(REMOVED));
                        assert_eq!(sim.add_processor(apic(REMOVED)), (Status::SUCCESS, REMOVED));
                    }
                }
                Ctx::C => {
                    let r = sim.dispatch(p2(proc_count), BUSY, 0, arg(&f2), Some(&mut live), None);
                    assert_eq!(r, Status::SUCCESS);
                    assert!(!sim.step(BUSY));
                    live = NULL_TOKEN; // completed, never observed: not recyclable
                }
                _ => {}
            }
            drop(st);
            *f2.live.lock().unwrap() = live;
            for c in 0..N {
                sim.freeze(c, true);
            }
            run_rows(&f2, sim, &rows2, phase, &fl, &rn);
            for c in 0..N {
                sim.freeze(c, false);
            }
            *f2.live.lock().unwrap() = NULL_TOKEN;
        });
        sim.smi_stepped(&order);
        // Back outside: the SMI's effects are over; the phase's pending
        // operations were applied.
    }
    let failures = failures.lock().unwrap();
    let ran = *ran.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {ran} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(ran, rows.0.len(), "every row ran");
    eprintln!(
        "bad-input matrix: {ran} rows, {:.2} s",
        start.elapsed().as_secs_f64()
    );
}

// -- NULL in every pointer parameter -------------------------------------------------

/// Pointer parameters for which BEHAVIOUR.md makes NULL an accepted value
/// (`"Function.Parameter"`, names as in include/mm_mp.h), with the
/// documented effect checked by `null_where_the_contract_allows_it`:
/// procedure arguments are passed through, a NULL `Token` makes the call
/// blocking (§2.2, §2.3), a NULL `CpuStatus` means no status is written,
/// a NULL exception handler is forwarded to the platform (§5.2), and a
/// NULL `CpuCount` still locks the door (§7).
const NULL_ALLOWED: &[&str] = &[
    "DispatchProcedure.ProcedureArguments",
    "DispatchProcedure.Token",
    "DispatchProcedure.CpuStatus",
    "BroadcastProcedure.ProcedureArguments",
    "BroadcastProcedure.Token",
    "BroadcastProcedure.CpuStatus",
    "SetStartupProcedure.ProcedureArguments",
    "MmMpStartupThisAp.ProcArguments",
    "MmMpBlockingStartupThisAp.ProcArguments",
    "RegisterExceptionHandler.InterruptHandler",
    "MmMpSyncLockDoor.CpuCount",
];

/// Parameter types of include/mm_mp.h that are pointers without a `*`.
const POINTER_TYPEDEFS: &[&str] = &[
    "EFI_AP_PROCEDURE",
    "EFI_AP_PROCEDURE2",
    "MM_COMPLETION",
    "EFI_CPU_INTERRUPT_HANDLER",
];

/// `"Function.Parameter"` for every pointer parameter of a parameter list
/// written as in the header (`TYPE Name, TYPE *Name, ...`).
fn pointer_parameters_of(function: &str, params: &str, out: &mut Vec<String>) {
    for p in params.split(',') {
        let words: Vec<&str> = p.split_whitespace().collect();
        let Some(last) = words.last() else { continue };
        let name = last.trim_start_matches('*');
        let pointer = p.contains('*') || words.iter().any(|w| POINTER_TYPEDEFS.contains(w));
        if pointer && name != "VOID" {
            out.push(format!("{function}.{name}"));
        }
    }
}

/// Every pointer parameter of every function include/mm_mp.h exports and
/// of every member of the three protocol structs it defines.
fn header_pointer_parameters() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mm_mp.h");
    let header = std::fs::read_to_string(path).expect("include/mm_mp.h");
    let mut out = Vec::new();
    // Exports: "EFIAPI\nName (\n  TYPE  Name,\n ...\n  );".
    for chunk in header.split("\nEFIAPI\n").skip(1) {
        let Some((name, rest)) = chunk.split_once(" (\n") else {
            continue;
        };
        let params = rest.split(");").next().unwrap_or("");
        pointer_parameters_of(name.trim(), params, &mut out);
    }
    // Protocol members: "RET (EFIAPI *Name)(params);" inside the structs.
    for protocol in [
        "EFI_MM_MP_PROTOCOL",
        "EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL",
        "EFI_SMM_CPU_SERVICE_PROTOCOL",
    ] {
        let open = format!("struct {protocol} {{");
        let body = header
            .split(&open)
            .nth(1)
            .and_then(|b| b.split("};").next())
            .unwrap_or_else(|| panic!("no struct {protocol} in the header"));
        for member in body.split("(EFIAPI *").skip(1) {
            let (name, rest) = member.split_once(")(").expect("member pointer");
            let params = rest.split(");").next().unwrap_or("");
            pointer_parameters_of(name, params, &mut out);
        }
    }
    out
}

/// Every pointer parameter of every export and protocol member in
/// include/mm_mp.h has a row of the matrix passing NULL for it alone, or
/// is one where BEHAVIOUR.md accepts NULL ([`NULL_ALLOWED`]). A new export
/// or parameter fails this test until it has its NULL case.
#[test]
fn every_pointer_parameter_has_a_null_row() {
    use std::collections::BTreeSet;
    let want: BTreeSet<String> = header_pointer_parameters().into_iter().collect();
    // The header has 26 exports and 13 protocol members.
    assert!(want.len() >= 50, "header parsing found only {want:?}");
    let rows = rows();
    let rejected: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.null)
        .map(String::from)
        .collect();
    let accepted: BTreeSet<String> = NULL_ALLOWED.iter().map(|s| s.to_string()).collect();
    let have: BTreeSet<String> = rejected.union(&accepted).cloned().collect();
    let missing: Vec<_> = want.difference(&have).collect();
    let unknown: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "pointer parameters without a NULL case: {missing:?}; NULL cases naming no parameter of the header: {unknown:?}"
    );
}

/// Counts runs of the procedures below that received a NULL argument, per
/// CPU (the procedures of the common module need a `Record` argument).
static NULL_ARG_RUNS: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

unsafe extern "efiapi" fn proc_null_arg(arg: *mut c_void) -> Status {
    if !arg.is_null() {
        return Status::DEVICE_ERROR;
    }
    NULL_ARG_RUNS[current_cpu()].fetch_add(1, Ordering::SeqCst);
    Status::SUCCESS
}

unsafe extern "efiapi" fn legacy_null_arg(arg: *mut c_void) {
    if arg.is_null() {
        NULL_ARG_RUNS[current_cpu()].fetch_add(1, Ordering::SeqCst);
    }
}

fn null_arg_runs() -> Vec<usize> {
    NULL_ARG_RUNS
        .iter()
        .map(|r| r.load(Ordering::SeqCst))
        .collect()
}

/// Each parameter of [`NULL_ALLOWED`] passed as NULL, every other argument
/// valid: the call succeeds with the effect BEHAVIOUR.md documents.
#[test]
fn null_where_the_contract_allows_it() {
    let sim = Sim::new(Options::new(4));
    let rec: Arc<Record> = Arc::from(Record::new(4));
    let checks = Checks::new();
    let done: Arc<Mutex<Vec<&'static str>>> = Arc::new(Mutex::new(Vec::new()));
    let (r, c, d) = (rec.clone(), checks.clone(), done.clone());
    sim.set_handler(move |sim, bsp| {
        if bsp != 0 || sim.foundation_calls.load(Ordering::SeqCst) != 1 {
            return;
        }
        let a = Arc::as_ptr(&r) as *mut c_void;
        let null = std::ptr::null_mut::<c_void>();
        let mut t = NULL_TOKEN;
        let mut st = Status(0x77);
        // §2.2: a NULL argument reaches the procedure.
        c.eq(
            "Dispatch(ProcedureArguments NULL)",
            sim.dispatch(p2(proc_null_arg), 1, 0, null, Some(&mut t), Some(&mut st)),
            Status::SUCCESS,
        );
        c.eq("  wait", sim.wait(t), Status::SUCCESS);
        c.eq("  CPUStatus", st, Status::SUCCESS);
        c.eq("  ran with NULL", null_arg_runs(), vec![0, 1, 0, 0]);
        d.lock()
            .unwrap()
            .push("DispatchProcedure.ProcedureArguments");
        // §2.2: NULL Token: blocking, the status is stored before return.
        st = Status(0x77);
        c.eq(
            "Dispatch(Token NULL)",
            sim.dispatch(p2(proc_count), 2, 0, a, None, Some(&mut st)),
            Status::SUCCESS,
        );
        c.eq("  CPUStatus", st, Status::SUCCESS);
        c.eq("  ran", r.runs(), vec![0, 0, 1, 0]);
        d.lock().unwrap().push("DispatchProcedure.Token");
        // §2.2: NULL CPUStatus: nothing written, the call still completes.
        t = NULL_TOKEN;
        c.eq(
            "Dispatch(CpuStatus NULL)",
            sim.dispatch(p2(proc_count), 3, 0, a, Some(&mut t), None),
            Status::SUCCESS,
        );
        c.eq("  wait", sim.wait(t), Status::SUCCESS);
        c.eq("  ran", r.runs(), vec![0, 0, 1, 1]);
        d.lock().unwrap().push("DispatchProcedure.CpuStatus");
        // §2.3, the same three for BroadcastProcedure.
        let mut arr = [Status(0x77); 4];
        t = NULL_TOKEN;
        c.eq(
            "Broadcast(ProcedureArguments NULL)",
            sim.broadcast(p2(proc_null_arg), 0, null, Some(&mut t), Some(&mut arr)),
            Status::SUCCESS,
        );
        c.eq("  wait", sim.wait(t), Status::SUCCESS);
        c.eq(
            "  CPUStatus",
            arr,
            [
                Status::NOT_STARTED,
                Status::SUCCESS,
                Status::SUCCESS,
                Status::SUCCESS,
            ],
        );
        c.eq("  ran with NULL", null_arg_runs(), vec![0, 2, 1, 1]);
        d.lock()
            .unwrap()
            .push("BroadcastProcedure.ProcedureArguments");
        arr = [Status(0x77); 4];
        c.eq(
            "Broadcast(Token NULL)",
            sim.broadcast(p2(proc_count), 0, a, None, Some(&mut arr)),
            Status::SUCCESS,
        );
        c.eq(
            "  CPUStatus",
            arr,
            [
                Status::NOT_STARTED,
                Status::SUCCESS,
                Status::SUCCESS,
                Status::SUCCESS,
            ],
        );
        c.eq("  ran", r.runs(), vec![0, 1, 2, 2]);
        d.lock().unwrap().push("BroadcastProcedure.Token");
        t = NULL_TOKEN;
        c.eq(
            "Broadcast(CpuStatus NULL)",
            sim.broadcast(p2(proc_count), 0, a, Some(&mut t), None),
            Status::SUCCESS,
        );
        c.eq("  wait", sim.wait(t), Status::SUCCESS);
        c.eq("  ran", r.runs(), vec![0, 2, 3, 3]);
        d.lock().unwrap().push("BroadcastProcedure.CpuStatus");
        // §4: a NULL argument reaches the void procedure.
        c.eq(
            "BlockingStartupThisAp(ProcArguments NULL)",
            sim.blocking_startup_this_ap(p1(legacy_null_arg), 2, null),
            Status::SUCCESS,
        );
        c.eq("  ran with NULL", null_arg_runs(), vec![0, 2, 2, 1]);
        d.lock()
            .unwrap()
            .push("MmMpBlockingStartupThisAp.ProcArguments");
        c.eq(
            "StartupThisAp(ProcArguments NULL)",
            sim.startup_this_ap(p1(legacy_null_arg), 3, null),
            Status::SUCCESS,
        );
        sim.pump_until(|| null_arg_runs()[3] == 2);
        c.eq("  ran with NULL", null_arg_runs(), vec![0, 2, 2, 2]);
        d.lock().unwrap().push("MmMpStartupThisAp.ProcArguments");
        // §2.4: registered with a NULL argument; runs from the next SMI on.
        c.eq(
            "SetStartupProcedure(ProcedureArguments NULL)",
            sim.set_startup(p1(legacy_null_arg), null),
            Status::SUCCESS,
        );
    });
    sim.smi_stepped(&[0, 1, 2, 3]);
    checks.assert_ok(25);
    assert_eq!(null_arg_runs(), vec![0, 2, 2, 2]);
    sim.smi_stepped(&[0, 1, 2, 3]);
    assert_eq!(
        null_arg_runs(),
        vec![1, 3, 3, 3],
        "the startup procedure ran once on every CPU, with NULL"
    );
    done.lock()
        .unwrap()
        .push("SetStartupProcedure.ProcedureArguments");
    assert_eq!(sim.set_startup(None, std::ptr::null_mut()), Status::SUCCESS);

    // §5.2: forwarded to the platform's hook, which returns the status.
    let cs = sim.cs();
    // SAFETY: our protocol; a NULL handler is the input under test.
    let st = unsafe { (cs.register_exception_handler)(cs as *const _ as *mut _, 14, None) };
    assert_eq!(st, Status::SUCCESS);
    assert_eq!(*sim.exception_handlers.lock().unwrap(), vec![(14, 0)]);
    done.lock()
        .unwrap()
        .push("RegisterExceptionHandler.InterruptHandler");

    // §7: NULL CpuCount: the door locks and records the count anyway.
    let (_mem, _, _, ctx) = new_sync_context(4);
    // SAFETY: a context we just made; NULL CpuCount is the input under test.
    unsafe {
        for cpu in 0..3 {
            assert_eq!(MmMpSyncCheckInCpu(ctx, cpu), Status::SUCCESS);
        }
        MmMpSyncLockDoor(ctx, 0, std::ptr::null_mut());
        assert_eq!(MmMpSyncGetArrivedCpuCount(ctx), 3, "count at lock time");
        assert_eq!(MmMpSyncCheckInCpu(ctx, 3), Status::ABORTED, "door locked");
        let mut n = 0usize;
        MmMpSyncLockDoor(ctx, 0, &mut n);
        assert_eq!(n, 3, "the second lock reports the first lock's count");
    }
    done.lock().unwrap().push("MmMpSyncLockDoor.CpuCount");

    let mut done = done.lock().unwrap().clone();
    done.sort_unstable();
    let mut want = NULL_ALLOWED.to_vec();
    want.sort_unstable();
    assert_eq!(done, want, "every accepted NULL was exercised");
}
