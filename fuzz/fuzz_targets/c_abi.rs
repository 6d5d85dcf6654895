//! Fuzzing the C ABI: the input bytes choose a small machine
//! (2–4 CPUs, traditional or relaxed, a tiny token pool, hot-plug on or
//! off, a clock or none) and a sequence of exported calls with arbitrary
//! arguments — inside SMIs (run by the BSP from MmFoundationEntry, APs
//! stepped deterministically on this thread), outside SMIs and "from an
//! AP". After every call the target checks what BEHAVIOUR.md guarantees:
//! * the status is one BEHAVIOUR.md lists for that call (and EFI_NOT_READY outside
//!   an SMI for the BSP-only services, EFI_INVALID_PARAMETER from an AP);
//! * an error status leaves the caller's token and CPUStatus variables
//!   untouched (bad input changes nothing);
//! * GetNumberOfProcessors never changes, statistics never go down;
//! * every procedure runs at most as often as calls started it, and a
//!   blocking call that succeeded ran exactly once;
//! * after every SMI, every run semaphore and the arrival counter are 0;
//! * the `MmMpSync*` exports (SmmCpuSyncLib, BEHAVIOUR.md §7) on a
//!   stand-alone context: every status, the arrived count, every run
//!   semaphore and the bytes around the context follow a shadow model of
//!   §7, including NULL contexts, a NULL `CpuCount` and out-of-range
//!   indices.
//!
//! A violated check panics, which libFuzzer reports as a crash. Built with
//! debug assertions and overflow checks (fuzz/Cargo.toml), so an
//! arithmetic overflow in the library is a crash too.
#![no_main]

#[path = "../../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use common::*;
use libfuzzer_sys::fuzz_target;
use mm_mp::efi::{MmCompletion, Status};
use mm_mp::ffi::*;
use mm_mp::sync::SEMAPHORE_LOCKED;
use mm_mp::sync_lib::SyncContext;

/// Bytes → values, never failing (missing bytes read as zero).
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn done(&self) -> bool {
        self.data.is_empty()
    }
    /// A CPU number: mostly in range, sometimes just out, all ones, huge.
    fn cpu(&mut self, cpus: usize) -> usize {
        match self.byte() {
            b @ 0..=199 => b as usize % (cpus + 1),
            200..=219 => usize::MAX,
            220..=239 => usize::MAX / 2 + self.byte() as usize,
            b => (b as usize) << 24,
        }
    }
    fn timeout(&mut self) -> usize {
        match self.byte() % 8 {
            0..=5 => 0,
            6 => 1 + self.byte() as usize,
            _ => usize::MAX,
        }
    }
}

/// How a call passes its token.
#[derive(Clone, Copy)]
enum TokenArg {
    /// Blocking call.
    Null,
    /// A fresh variable holding NULL.
    Fresh,
    /// A variable holding the last handle this target saw (maybe live,
    /// maybe stale).
    Reused,
    /// A forged value.
    Forged(usize),
}

fn token_arg(inp: &mut Input) -> TokenArg {
    match inp.byte() % 6 {
        0 | 1 => TokenArg::Null,
        2 | 3 => TokenArg::Fresh,
        4 => TokenArg::Reused,
        _ => TokenArg::Forged(inp.byte() as usize * 0x0100_0001),
    }
}

#[derive(Default)]
struct Seen {
    /// Handles returned by successful non-blocking calls.
    tokens: Vec<MmCompletion>,
    /// Upper bound of procedure runs the calls so far may cause.
    may_run: usize,
    /// Runs that must have happened (blocking successes).
    must_run: usize,
    /// CPUStatus storage handed to the library: an AP writes it when its
    /// procedure ends, possibly after the call returned, so it lives until
    /// the SMI is over.
    keep: Vec<Box<[Status]>>,
    /// The stand-alone sync context, made by the first sync call.
    sync: Option<SyncShadow>,
}

/// Bytes around a sync context, and its unused tail, hold this.
const GUARD: u8 = 0xA5;

/// A `MM_MP_SYNC_CONTEXT` in fuzzer memory and what BEHAVIOUR.md §7 says
/// its state is.
struct SyncShadow {
    mem: Vec<u8>,
    /// Where the context starts in `mem`, and its size.
    off: usize,
    size: usize,
    ctx: *mut MmMpSyncContext,
    cpus: usize,
    /// Arrival count (live while the door is open).
    count: usize,
    locked: bool,
    /// The count recorded by the first LockDoor.
    at_lock: usize,
    /// Counts on each run semaphore.
    runs: Vec<u32>,
}

impl SyncShadow {
    fn new(cpus: usize) -> SyncShadow {
        let mut size = 0usize;
        // SAFETY: valid out-pointer.
        let st = unsafe { MmMpSyncGetRequiredSize(cpus, 64, &mut size) };
        assert_eq!(st, Status::SUCCESS, "MmMpSyncGetRequiredSize({cpus})");
        let mut mem = vec![GUARD; size + 192];
        let off = (64 - mem.as_ptr() as usize % 64) % 64 + 64;
        let mut ctx = std::ptr::null_mut();
        // SAFETY: `size` bytes at a 64-aligned offset inside `mem`.
        let st = unsafe {
            MmMpSyncContextInit(
                mem.as_mut_ptr().add(off) as *mut c_void,
                size,
                cpus,
                64,
                &mut ctx,
            )
        };
        assert_eq!(st, Status::SUCCESS, "MmMpSyncContextInit({cpus})");
        SyncShadow {
            mem,
            off,
            size,
            ctx,
            cpus,
            count: 0,
            locked: false,
            at_lock: 0,
            runs: vec![0; cpus],
        }
    }

    fn pair(&self, cpu: usize, bsp: usize) -> bool {
        cpu < self.cpus && bsp < self.cpus && cpu != bsp
    }

    /// The context agrees with the shadow, and nothing outside it changed.
    fn check(&self, what: &str) {
        let arrived = if self.locked {
            self.at_lock
        } else {
            self.count
        };
        // SAFETY: the context lives in `self.mem`.
        let got = unsafe { MmMpSyncGetArrivedCpuCount(self.ctx) };
        assert_eq!(got, arrived, "{what}: arrived count");
        // SAFETY: made by MmMpSyncContextInit in `self.mem`, alive.
        let view = unsafe { SyncContext::from_ptr(self.ctx as *const SyncContext) }
            .expect("the context is still valid")
            .view();
        let counter = if self.locked {
            SEMAPHORE_LOCKED
        } else {
            self.count as u32
        };
        assert_eq!(view.counter().value(), counter, "{what}: arrival counter");
        for (cpu, &n) in self.runs.iter().enumerate() {
            assert_eq!(
                view.run(cpu).map(|s| s.value()),
                Some(n),
                "{what}: run semaphore of CPU {cpu}"
            );
        }
        let outside = self.mem[..self.off]
            .iter()
            .chain(&self.mem[self.off + self.size..]);
        assert!(
            outside.into_iter().all(|&b| b == GUARD),
            "{what}: wrote outside the context"
        );
    }
}

/// A CPUStatus array of `n` sentinels that outlives the SMI.
fn status_storage(seen: &Shared, n: usize) -> *mut Status {
    let mut b = vec![Status(0x5a5a); n].into_boxed_slice();
    let p = b.as_mut_ptr();
    seen.0.lock().unwrap().keep.push(b);
    p
}

// SAFETY (for the Send/Sync impls): the handles are opaque integers the
// library hands out; the target never dereferences them. The sync
// context pointer points into the `SyncShadow` that owns it, and every
// CPU of the stepped machine runs on the one fuzzing thread.
struct Shared(Mutex<Seen>);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

const PROCEDURE_STATUSES: &[Status] = &[
    Status::SUCCESS,
    Status::INVALID_PARAMETER,
    Status::NOT_READY,
    Status::ALREADY_STARTED,
    Status::OUT_OF_RESOURCES,
    Status::TIMEOUT,
    Status::NOT_STARTED,
];

/// `MM_MP_FUZZ_TRACE=1` prints every call and its status (triage).
fn trace(in_smi: bool, what: std::fmt::Arguments) {
    if std::env::var_os("MM_MP_FUZZ_TRACE").is_some() {
        eprintln!("{} {what}", if in_smi { "  smi:" } else { "outside:" });
    }
}

fn allowed(what: &str, got: Status, set: &[Status]) {
    assert!(set.contains(&got), "{what}: status {got:?} not in {set:?}");
}

/// One call chosen by the input; `in_smi`: made by the BSP inside an SMI.
fn one_call(sim: &Sim, inp: &mut Input, seen: &Shared, rec: &Record, in_smi: bool) {
    let cpus = sim.opts.cpus;
    let arg = rec as *const Record as *mut c_void;
    let op = inp.byte() % 15;
    match op {
        0 | 1 => {
            // DispatchProcedure
            let cpu = inp.cpu(cpus);
            let timeout = inp.timeout();
            let targ = token_arg(inp);
            let with_status = inp.byte() % 2 == 0;
            let null_proc = inp.byte() % 16 == 0;
            let before = seen
                .0
                .lock()
                .unwrap()
                .tokens
                .last()
                .copied()
                .unwrap_or(NULL_TOKEN);
            let mut token: MmCompletion = match targ {
                TokenArg::Null | TokenArg::Fresh => NULL_TOKEN,
                TokenArg::Reused => before,
                TokenArg::Forged(v) => v as MmCompletion,
            };
            let token_in = token;
            let status_ptr = status_storage(seen, 1);
            // SAFETY: storage kept alive in `seen` until the SMI is over.
            let cpu_status = unsafe { &mut *status_ptr };
            let st = sim.dispatch(
                if null_proc { None } else { p2(proc_count) },
                cpu,
                timeout,
                arg,
                if matches!(targ, TokenArg::Null) {
                    None
                } else {
                    Some(&mut token)
                },
                if with_status { Some(cpu_status) } else { None },
            );
            // SAFETY: as above; read after the call.
            let cpu_status = unsafe { status_ptr.read_volatile() };
            trace(
                in_smi,
                format_args!(
                    "Dispatch(cpu {cpu:#x}, timeout {timeout}, null proc {null_proc}) -> {st:?}"
                ),
            );
            allowed("Dispatch", st, PROCEDURE_STATUSES);
            if !in_smi {
                assert_eq!(st, Status::NOT_READY, "Dispatch outside an SMI");
            }
            if st != Status::SUCCESS && st != Status::TIMEOUT {
                assert_eq!(token, token_in, "Dispatch {st:?} wrote *Token");
                assert_eq!(
                    cpu_status,
                    Status(0x5a5a),
                    "Dispatch {st:?} wrote CPUStatus"
                );
            }
            let mut s = seen.0.lock().unwrap();
            if st == Status::SUCCESS || st == Status::TIMEOUT {
                s.may_run += 1;
            }
            if st == Status::SUCCESS {
                if matches!(targ, TokenArg::Null) {
                    s.must_run += 1;
                    if with_status {
                        assert_eq!(cpu_status, Status::SUCCESS, "blocking CPUStatus");
                    }
                } else {
                    assert!(!token.is_null(), "non-blocking Dispatch gave a NULL handle");
                    s.tokens.push(token);
                }
            }
        }
        2 => {
            // BroadcastProcedure
            let timeout = inp.timeout();
            let targ = token_arg(inp);
            let with_status = inp.byte() % 2 == 0;
            let statuses_ptr = status_storage(seen, cpus);
            // SAFETY: storage kept alive in `seen` until the SMI is over.
            let statuses = unsafe { std::slice::from_raw_parts_mut(statuses_ptr, cpus) };
            let mut token: MmCompletion = match targ {
                TokenArg::Forged(v) => v as MmCompletion,
                TokenArg::Reused => seen
                    .0
                    .lock()
                    .unwrap()
                    .tokens
                    .last()
                    .copied()
                    .unwrap_or(NULL_TOKEN),
                _ => NULL_TOKEN,
            };
            let token_in = token;
            let st = sim.broadcast(
                p2(proc_count),
                timeout,
                arg,
                if matches!(targ, TokenArg::Null) {
                    None
                } else {
                    Some(&mut token)
                },
                if with_status {
                    Some(&mut *statuses)
                } else {
                    None
                },
            );
            trace(
                in_smi,
                format_args!("Broadcast(timeout {timeout}) -> {st:?}"),
            );
            allowed("Broadcast", st, PROCEDURE_STATUSES);
            if !in_smi {
                assert_eq!(st, Status::NOT_READY, "Broadcast outside an SMI");
            }
            if st != Status::SUCCESS && st != Status::TIMEOUT {
                assert_eq!(token, token_in, "Broadcast {st:?} wrote *Token");
                // SAFETY: storage kept alive in `seen`.
                let now = unsafe { std::slice::from_raw_parts(statuses_ptr, cpus) };
                assert!(
                    now.iter().all(|&x| x == Status(0x5a5a)),
                    "Broadcast {st:?} wrote CPUStatus"
                );
            }
            let mut s = seen.0.lock().unwrap();
            if st == Status::SUCCESS || st == Status::TIMEOUT {
                s.may_run += cpus;
            }
            if st == Status::SUCCESS && !matches!(targ, TokenArg::Null) {
                s.tokens.push(token);
            }
        }
        3 | 4 => {
            // CheckForProcedure / WaitForProcedure on a seen, forged or NULL handle
            let t = match inp.byte() % 4 {
                0 => NULL_TOKEN,
                1 => (inp.byte() as usize * 0x0100_0003) as MmCompletion,
                _ => {
                    let s = seen.0.lock().unwrap();
                    if s.tokens.is_empty() {
                        NULL_TOKEN
                    } else {
                        s.tokens[inp.byte() as usize % s.tokens.len()]
                    }
                }
            };
            let st = if op == 3 { sim.check(t) } else { sim.wait(t) };
            trace(
                in_smi,
                format_args!(
                    "{}({t:?}) -> {st:?}",
                    if op == 3 { "Check" } else { "Wait" }
                ),
            );
            allowed(
                "Check/Wait",
                st,
                &[
                    Status::SUCCESS,
                    Status::NOT_READY,
                    Status::NOT_FOUND,
                    Status::INVALID_PARAMETER,
                    Status::TIMEOUT,
                ],
            );
            if t.is_null() {
                assert_eq!(st, Status::INVALID_PARAMETER, "Check/Wait(NULL)");
            } else if !in_smi {
                assert_eq!(st, Status::NOT_FOUND, "Check/Wait outside an SMI");
            }
            if op == 4 {
                assert_ne!(st, Status::NOT_READY, "Wait returned NOT_READY");
            }
            let (rs, _) = sim.token_result(t);
            allowed(
                "GetTokenResult",
                rs,
                &[
                    Status::SUCCESS,
                    Status::NOT_READY,
                    Status::NOT_FOUND,
                    Status::INVALID_PARAMETER,
                ],
            );
        }
        5 => {
            // SetStartupProcedure (NULL/NULL, NULL/arg, proc/arg)
            let st = match inp.byte() % 3 {
                0 => sim.set_startup(None, std::ptr::null_mut()),
                1 => {
                    let st = sim.set_startup(None, arg);
                    assert_eq!(st, Status::INVALID_PARAMETER, "SetStartup(NULL, args)");
                    st
                }
                _ => sim.set_startup(p1(legacy_startup), std::ptr::null_mut()),
            };
            allowed(
                "SetStartupProcedure",
                st,
                &[Status::SUCCESS, Status::INVALID_PARAMETER],
            );
        }
        6 => {
            // MmStartupThisAp (blocking or not per config) / EDK2's blocking variant
            let cpu = inp.cpu(cpus);
            let blocking = inp.byte() % 2 == 0;
            let st = if blocking {
                sim.blocking_startup_this_ap(p1(legacy_count), cpu, arg)
            } else {
                sim.startup_this_ap(p1(legacy_count), cpu, arg)
            };
            trace(
                in_smi,
                format_args!("StartupThisAp(cpu {cpu:#x}, blocking {blocking}) -> {st:?}"),
            );
            allowed("StartupThisAp", st, PROCEDURE_STATUSES);
            if !in_smi {
                assert_eq!(st, Status::NOT_READY, "StartupThisAp outside an SMI");
            }
            let mut s = seen.0.lock().unwrap();
            if st == Status::SUCCESS {
                s.may_run += 1;
                if blocking {
                    s.must_run += 1;
                }
            }
        }
        7 => {
            let (st, n) = sim.number_of_processors();
            assert_eq!((st, n), (Status::SUCCESS, cpus), "GetNumberOfProcessors");
        }
        8 => {
            let n = inp.cpu(cpus);
            let (st, info) = sim.processor_info(n);
            allowed(
                "GetProcessorInfo",
                st,
                &[
                    Status::SUCCESS,
                    Status::INVALID_PARAMETER,
                    Status::NOT_FOUND,
                ],
            );
            if n >= cpus {
                assert_eq!(st, Status::INVALID_PARAMETER, "GetProcessorInfo({n})");
                assert_eq!(
                    info.processor_id, 0x5a5a,
                    "GetProcessorInfo({n}) wrote the buffer"
                );
            }
        }
        9 if matches!(sim.opts.clock, Clock::None) => {
            // Without a time source a pending SwitchBsp whose candidate
            // never enters the next SMI keeps everyone waiting, as BEHAVIOUR.md
            // §6.1/§2.7 say (only the candidate may win, waits unbounded).
            // The stepped machine enters each CPU once, so that happens
            // here: SwitchBsp is only fuzzed with a clock.
        }
        9 => {
            let n = inp.cpu(cpus);
            let st = sim.switch_bsp(n);
            allowed(
                "SwitchBsp",
                st,
                &[
                    Status::SUCCESS,
                    Status::INVALID_PARAMETER,
                    Status::NOT_FOUND,
                    Status::UNSUPPORTED,
                    Status::NOT_READY,
                ],
            );
        }
        10 => {
            let apic_id = match inp.byte() % 4 {
                0 => u64::MAX,
                b => (b as u64) * 0x10 + inp.byte() as u64 % (cpus as u64 + 2),
            };
            if inp.byte() % 2 == 0 {
                let slot = inp.byte() as usize % cpus;
                sim.set_hot_plug_id(slot, apic_id);
            }
            let (st, _) = sim.add_processor(apic_id);
            trace(in_smi, format_args!("AddProcessor({apic_id:#x}) -> {st:?}"));
            allowed(
                "AddProcessor",
                st,
                &[
                    Status::SUCCESS,
                    Status::INVALID_PARAMETER,
                    Status::ALREADY_STARTED,
                    Status::UNSUPPORTED,
                ],
            );
        }
        11 => {
            let n = inp.cpu(cpus);
            let st = sim.remove_processor(n);
            trace(in_smi, format_args!("RemoveProcessor({n:#x}) -> {st:?}"));
            allowed(
                "RemoveProcessor",
                st,
                &[
                    Status::SUCCESS,
                    Status::INVALID_PARAMETER,
                    Status::NOT_FOUND,
                    Status::UNSUPPORTED,
                ],
            );
        }
        14 => sync_call(inp, seen, in_smi),
        12 => {
            let (st, n) = sim.who_am_i();
            allowed(
                "WhoAmI",
                st,
                &[Status::SUCCESS, Status::NOT_FOUND, Status::UNSUPPORTED],
            );
            if st == Status::SUCCESS {
                assert!(n < cpus, "WhoAmI gave {n}");
            }
        }
        _ => {
            // The same BSP-only services "from an AP" (BEHAVIOUR.md §2: INVALID_PARAMETER
            // when the caller can be identified as an AP; NOT_READY outside an SMI).
            let bsp = sim.current_bsp();
            let ap = if bsp == usize::MAX {
                1
            } else {
                (bsp + 1) % cpus
            };
            let target = inp.cpu(cpus);
            let st = sim.as_cpu(ap, || {
                sim.dispatch(p2(proc_count), target, 0, arg, None, None)
            });
            let want = if in_smi {
                Status::INVALID_PARAMETER
            } else {
                Status::NOT_READY
            };
            assert_eq!(st, want, "Dispatch from AP {ap}");
            let st = sim.as_cpu(ap, || sim.broadcast(p2(proc_count), 0, arg, None, None));
            assert_eq!(st, want, "Broadcast from AP {ap}");
        }
    }
}

unsafe extern "efiapi" fn legacy_startup(_arg: *mut c_void) {}

/// The `MmMpSync*` exports on one context pointer. Only ever made from a
/// `SyncShadow`'s live context or from NULL, so that the calls are safe.
#[derive(Clone, Copy)]
struct SyncApi(*mut MmMpSyncContext);

impl SyncApi {
    fn reset(self) {
        // SAFETY: `self.0` is NULL or a live context (see `SyncApi`).
        unsafe { MmMpSyncContextReset(self.0) }
    }
    fn arrived(self) -> usize {
        // SAFETY: as in `reset`.
        unsafe { MmMpSyncGetArrivedCpuCount(self.0) }
    }
    fn check_in(self, cpu: usize) -> Status {
        // SAFETY: as in `reset`.
        unsafe { MmMpSyncCheckInCpu(self.0, cpu) }
    }
    fn check_out(self, cpu: usize) -> Status {
        // SAFETY: as in `reset`.
        unsafe { MmMpSyncCheckOutCpu(self.0, cpu) }
    }
    fn lock_door(self, cpu: usize, count: Option<&mut usize>) {
        let out = count.map_or(std::ptr::null_mut(), |c| c as *mut usize);
        // SAFETY: as in `reset`; `out` is NULL or a live local.
        unsafe { MmMpSyncLockDoor(self.0, cpu, out) }
    }
    fn wait_for_aps(self, aps: usize, bsp: usize) {
        // SAFETY: as in `reset`.
        unsafe { MmMpSyncWaitForAPs(self.0, aps, bsp) }
    }
    fn release_one_ap(self, cpu: usize, bsp: usize) {
        // SAFETY: as in `reset`.
        unsafe { MmMpSyncReleaseOneAp(self.0, cpu, bsp) }
    }
    fn wait_for_bsp(self, cpu: usize, bsp: usize) {
        // SAFETY: as in `reset`.
        unsafe { MmMpSyncWaitForBsp(self.0, cpu, bsp) }
    }
    fn release_bsp(self, cpu: usize, bsp: usize) {
        // SAFETY: as in `reset`.
        unsafe { MmMpSyncReleaseBsp(self.0, cpu, bsp) }
    }
}

/// One `MmMpSync*` call on the input's stand-alone context (made with
/// 1–4 CPUs by the first such call), predicted by the shadow model of
/// BEHAVIOUR.md §7. A wait is only made once the counts it needs are there:
/// the single fuzzing thread cannot release it while it spins.
fn sync_call(inp: &mut Input, seen: &Shared, in_smi: bool) {
    let mut s = seen.0.lock().unwrap();
    let sh = s
        .sync
        .get_or_insert_with(|| SyncShadow::new(1 + inp.byte() as usize % 4));
    let cpus = sh.cpus;
    let api = SyncApi(sh.ctx);
    let op = inp.byte() % 10;
    let (a, b) = (inp.cpu(cpus), inp.cpu(cpus));
    trace(
        in_smi,
        format_args!("Sync op {op} ({a:#x}, {b:#x}) on {cpus} CPUs"),
    );
    match op {
        0 => {
            api.reset();
            sh.count = 0;
            sh.locked = false;
            sh.at_lock = 0;
        }
        1 => {
            let want = if sh.locked { sh.at_lock } else { sh.count };
            assert_eq!(api.arrived(), want, "SyncGetArrivedCpuCount");
        }
        2 => {
            let st = api.check_in(a);
            let want = if a >= cpus {
                Status::INVALID_PARAMETER
            } else if sh.locked {
                Status::ABORTED
            } else {
                sh.count += 1;
                Status::SUCCESS
            };
            assert_eq!(st, want, "SyncCheckInCpu({a:#x})");
        }
        3 => {
            let st = api.check_out(a);
            let want = if a >= cpus {
                Status::INVALID_PARAMETER
            } else if sh.locked {
                Status::ABORTED
            } else if sh.count == 0 {
                Status::INVALID_PARAMETER
            } else {
                sh.count -= 1;
                Status::SUCCESS
            };
            assert_eq!(st, want, "SyncCheckOutCpu({a:#x})");
        }
        4 => {
            if !sh.locked {
                sh.locked = true;
                sh.at_lock = sh.count;
            }
            if b % 2 == 0 {
                api.lock_door(a, None);
            } else {
                let mut n = 0x5a5ausize;
                api.lock_door(a, Some(&mut n));
                assert_eq!(n, sh.at_lock, "SyncLockDoor CpuCount");
            }
        }
        5 => {
            // WaitForAPs(NumberOfAPs = a, BspIndex = b).
            if b < cpus && a < cpus && sh.runs[b] < a as u32 {
                // The missing signals come from another CPU first.
                let from = (b + 1) % cpus;
                for _ in sh.runs[b]..a as u32 {
                    api.release_bsp(from, b);
                    sh.runs[b] += 1;
                }
            }
            api.wait_for_aps(a, b);
            if b < cpus && a < cpus {
                sh.runs[b] -= a as u32;
            }
        }
        6 => {
            api.release_one_ap(a, b);
            if sh.pair(a, b) {
                sh.runs[a] += 1;
            }
        }
        7 => {
            // WaitForBsp(CpuIndex = a, BspIndex = b).
            if sh.pair(a, b) && sh.runs[a] == 0 {
                api.release_one_ap(a, b);
                sh.runs[a] += 1;
            }
            api.wait_for_bsp(a, b);
            if sh.pair(a, b) {
                sh.runs[a] -= 1;
            }
        }
        8 => {
            api.release_bsp(a, b);
            if sh.pair(a, b) {
                sh.runs[b] += 1;
            }
        }
        _ => {
            // A NULL context: statuses INVALID_PARAMETER, count 0, the
            // rest does nothing and writes no out-pointer.
            let null = SyncApi(std::ptr::null_mut());
            match b % 10 {
                0 => null.reset(),
                1 => assert_eq!(null.arrived(), 0, "SyncGetArrivedCpuCount(NULL)"),
                2 => assert_eq!(null.check_in(a), Status::INVALID_PARAMETER),
                3 => assert_eq!(null.check_out(a), Status::INVALID_PARAMETER),
                4 => {
                    let mut n = 0x5a5ausize;
                    null.lock_door(a, Some(&mut n));
                    assert_eq!(n, 0x5a5a, "SyncLockDoor(NULL) wrote CpuCount");
                }
                5 => null.wait_for_aps(1, a),
                6 => null.release_one_ap(a, 0),
                7 => null.wait_for_bsp(a, 0),
                8 => null.release_bsp(a, 0),
                _ => null.lock_door(a, None),
            }
        }
    }
    sh.check(&format!("sync op {op} ({a:#x}, {b:#x})"));
}

fn check_after_smi(sim: &Sim, before: &MmMpStatistics) {
    let after = sim.stats();
    for (name, b, a) in [
        ("smis", before.smis, after.smis),
        ("spurious", before.spurious_smis, after.spurious_smis),
        ("late", before.late_cpus, after.late_cpus),
        ("ipis", before.ipis_sent, after.ipis_sent),
        ("timeouts", before.timeouts, after.timeouts),
        ("lost", before.lost_aps, after.lost_aps),
        ("dispatches", before.dispatches, after.dispatches),
        ("broadcasts", before.broadcasts, after.broadcasts),
    ] {
        assert!(a >= b, "statistics.{name} went down: {b} -> {a}");
    }
    sim.assert_balanced();
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input { data };
    let cfg = inp.byte();
    let cpus = 2 + (cfg % 3) as usize;
    let mut opts = Options::new(cpus)
        .relaxed(cfg & 0x04 != 0)
        .tokens(1 + (inp.byte() % 4) as u32)
        .hot_plug(cfg & 0x08 != 0)
        .blocking_startup(cfg & 0x10 != 0);
    // No time source means unbounded waits (BEHAVIOUR.md §2.7, as in EDK2). The
    // stepped machine enters every CPU exactly once per SMI and delivers
    // no IPIs, so a CPU that arrives after its SMI ended (possible once
    // hot-plug changes who is expected) starts a rendezvous that waits
    // forever for CPUs that already left. Hot-plug is fuzzed with a clock.
    if cfg & 0x20 != 0 || cfg & 0x08 != 0 {
        opts = opts.clock(Clock::Manual { per_pause: 7 }).timeout_us(50);
    }
    let sim = Sim::new(opts);
    let rec = Arc::new(*Record::new(cpus));
    let seen = Arc::new(Shared(Mutex::new(Seen::default())));

    for _smi in 0..3 {
        // Calls outside an SMI.
        for _ in 0..(inp.byte() % 3) {
            one_call(&sim, &mut inp, &seen, &rec, false);
        }
        if inp.done() {
            break;
        }
        // An SMI: the BSP makes up to 16 calls from MmFoundationEntry.
        let calls = 1 + inp.byte() % 16;
        let script: Vec<u8> = (0..(calls as usize * 8)).map(|_| inp.byte()).collect();
        let (r, s) = (rec.clone(), seen.clone());
        sim.set_handler(move |sim, _bsp| {
            let mut inner = Input { data: &script };
            for _ in 0..calls {
                one_call(sim, &mut inner, &s, &r, true);
            }
        });
        let before = sim.stats();
        let order: Vec<usize> = (0..cpus).collect();
        trace(false, format_args!("SMI ({calls} calls)"));
        sim.smi_stepped(&order);
        check_after_smi(&sim, &before);
        let mut s = seen.0.lock().unwrap();
        s.keep.clear();
        let runs = rec.total();
        assert!(
            runs <= s.may_run,
            "{runs} procedure runs, at most {} started",
            s.may_run
        );
        assert!(
            runs >= s.must_run,
            "{runs} procedure runs, {} blocking calls succeeded",
            s.must_run
        );
    }
});
