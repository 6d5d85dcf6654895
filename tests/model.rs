//! Model-based testing: a plain reference model of BEHAVIOUR.md §2–§5
//! and random call sequences (proptest, with shrinking) played against the
//! real library through the C ABI (the protocol members and
//! the `MmMp*` exports) on the deterministic stepped machine.
//!
//! * The model ([`Model`]) knows nothing of the library's code: slots,
//!   records, pending operations, who is present, which AP runs which call,
//!   the token pool of BEHAVIOUR.md §3 (capacity, recycling of observed completed
//!   tokens, oldest first), CPUStatus words, procedure run counts,
//!   statistics and time. For every call it predicts the status BEHAVIOUR.md names
//!   and the effects; after every call the whole observable state is
//!   compared ([`Runner::compare`]). Any difference fails the case and
//!   proptest shrinks the sequence.
//! * Sequences mix calls outside an SMI and inside one (each SMI has a
//!   random set of arriving CPUs; absent ones are reported SMI-blocked so
//!   the traditional-mode BSP does not wait for them), calls from APs,
//!   explicit AP steps (a procedure runs exactly when its AP is stepped),
//!   time jumps past token deadlines, hostile arguments (out-of-range and
//!   all-ones CPU numbers, NULL pointers, forged, stale and reused token
//!   variables), hot-plug (platform reservations, Add/Remove/SwitchBsp, the
//!   first init-only SMI) and small token pools (exhaustion).
//! * `MM_MP_MODEL_CASES` sets the number of sequences (default 800 here;
//!   docs/RELIABILITY.md records a long run).
//!
//! Reproducibility: the sequences come from a fixed seed
//! ([`DEFAULT_SEED`]), so every run of the default test plays the same
//! sequences. `MM_MP_MODEL_SEED` overrides it (decimal or `0x` hex, or
//! `random` for a seed taken from the clock, to explore new sequences);
//! the seed in use is printed at the start (`--nocapture` shows it). A
//! failure prints the seed, the reason, the minimal (shrunk) sequence one
//! operation per line, and the command that replays it. proptest also
//! appends the failing case's own seed to
//! `tests/model.proptest-regressions` (proptest's regression file, next to
//! this one); every later run, whatever its seed, replays the cases of
//! that file first. Commit the file with the fix, so that the case stays
//! in the suite.
//!
//! Determinism: while the handler runs, every AP is frozen (the pause hook
//! never steps it) except the ones a blocking call must wait for, so the
//! model knows exactly which procedures ran. Where the library's pump may
//! complete several APs of one broadcast in an order the model does not
//! fix, the token's overall result is checked against the set of possible
//! first failures.
mod common;

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use mm_mp::efi::{MmCompletion, ProcessorInformation, Status, INVALID_APIC_ID};
use mm_mp::ffi::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestError, TestRunner};

// -- procedures and their counters ---------------------------------------------

/// What the procedures did, per CPU. Lives as long as the case.
struct Counters {
    runs: Vec<AtomicUsize>,
    legacy: Vec<AtomicUsize>,
    startup: Vec<AtomicUsize>,
    rets: Vec<Status>,
}

impl Counters {
    fn new(rets: Vec<Status>) -> Arc<Counters> {
        let n = rets.len();
        let z = |_| AtomicUsize::new(0);
        Arc::new(Counters {
            runs: (0..n).map(z).collect(),
            legacy: (0..n).map(z).collect(),
            startup: (0..n).map(z).collect(),
            rets,
        })
    }
    fn read(v: &[AtomicUsize]) -> Vec<usize> {
        v.iter().map(|a| a.load(Ordering::SeqCst)).collect()
    }
}

fn counters<'a>(arg: *mut c_void) -> Option<&'a Counters> {
    // SAFETY: the runner passes a live `Counters` (or NULL, checked).
    (!arg.is_null()).then(|| unsafe { &*(arg as *const Counters) })
}

/// EFI_AP_PROCEDURE2: count, return this CPU's configured status.
unsafe extern "efiapi" fn proc_ret(arg: *mut c_void) -> Status {
    let c = counters(arg).expect("procedure argument");
    let cpu = current_cpu();
    c.runs[cpu].fetch_add(1, Ordering::SeqCst);
    c.rets[cpu]
}

/// EFI_AP_PROCEDURE (MmStartupThisAp).
unsafe extern "efiapi" fn proc_legacy(arg: *mut c_void) {
    let c = counters(arg).expect("procedure argument");
    c.legacy[current_cpu()].fetch_add(1, Ordering::SeqCst);
}

/// The startup procedure (BEHAVIOUR.md §2.4): counts when given an argument.
unsafe extern "efiapi" fn proc_startup(arg: *mut c_void) {
    if let Some(c) = counters(arg) {
        c.startup[current_cpu()].fetch_add(1, Ordering::SeqCst);
    }
}

// -- the operations ------------------------------------------------------------

/// A CPU number argument.
#[derive(Clone, Copy, Debug)]
enum CpuArg {
    /// 0..8: the slots and a few past the end.
    Idx(u8),
    AllOnes,
    Any(usize),
}

/// A token value passed by value (Check, Wait, GetTokenResult, SetVar).
#[derive(Clone, Copy, Debug)]
enum Val {
    Null,
    /// The current content of token variable k.
    Var(u8),
    /// A value never issued (almost surely).
    Forged(usize),
    /// The k-th handle ever issued (live or stale).
    Issued(u8),
}

/// An APIC ID argument.
#[derive(Clone, Copy, Debug)]
enum ApicArg {
    /// `apic(k)` for k in 0..8 (slots and CPUs the table never had).
    Cpu(u8),
    Invalid,
    Any(u64),
}

#[derive(Clone, Debug)]
enum Op {
    /// Outside: start an SMI (arrivals chosen by `mask`, order rotated by
    /// `rot`). Inside: end it, and with `reopen` start the next one at once.
    Toggle {
        mask: u8,
        rot: u8,
        reopen: bool,
    },
    Dispatch {
        cpu: CpuArg,
        null_proc: bool,
        timeout: u16,
        token: Option<u8>,
        status: Option<u8>,
    },
    Broadcast {
        null_proc: bool,
        timeout: u16,
        token: Option<u8>,
        status: Option<u8>,
    },
    Check(Val),
    Wait(Val),
    Result {
        val: Val,
        null_out: bool,
    },
    Startup {
        cpu: CpuArg,
        null_proc: bool,
        always_blocking: bool,
    },
    SetStartup {
        proc_: bool,
        arg: bool,
    },
    NumProcs {
        null_out: bool,
    },
    ProcInfo {
        cpu: CpuArg,
        null_out: bool,
    },
    Switch(CpuArg),
    Add {
        apic: ApicArg,
        null_out: bool,
    },
    Remove(CpuArg),
    WhoAmI {
        null_out: bool,
    },
    /// The platform's hot-plug handler reserves slot k for an APIC ID.
    Reserve {
        slot: u8,
        apic: ApicArg,
    },
    /// A hot-added CPU takes its first (init-only) SMI.
    InitCpu(u8),
    /// Step AP k once (runs its posted call).
    Step(u8),
    /// Time moves on (µs).
    Advance(u32),
    SetVar {
        var: u8,
        val: Val,
    },
    /// The inner call is made by CPU k (GetApicId answers for it).
    AsCpu(u8, Box<Op>),
}

/// How often each (call, expected status) pair was checked, over the run.
static COVERAGE: Mutex<std::collections::BTreeMap<String, usize>> =
    Mutex::new(std::collections::BTreeMap::new());

const TOKEN_VARS: usize = 4;
const STATUS_VARS: usize = 3;
const ARRAYS: usize = 2;
const SENTINEL: Status = Status(0x5a5a_5a5a);

fn cpu_arg() -> impl Strategy<Value = CpuArg> {
    prop_oneof![
        10 => (0u8..4).prop_map(CpuArg::Idx),
        3 => (4u8..8).prop_map(CpuArg::Idx),
        1 => Just(CpuArg::AllOnes),
        1 => any::<usize>().prop_map(CpuArg::Any),
    ]
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        1 => Just(Val::Null),
        8 => (0..TOKEN_VARS as u8).prop_map(Val::Var),
        1 => any::<usize>().prop_map(Val::Forged),
        3 => any::<u8>().prop_map(Val::Issued),
    ]
}

fn apic_arg() -> impl Strategy<Value = ApicArg> {
    prop_oneof![
        8 => (0u8..8).prop_map(ApicArg::Cpu),
        1 => Just(ApicArg::Invalid),
        1 => any::<u64>().prop_map(ApicArg::Any),
    ]
}

fn timeout() -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(0u16), 1 => Just(1), 1 => Just(500), 1 => Just(2000)]
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![1 => Just(None), 3 => s.prop_map(Some)]
}

/// A call that may also be made by an AP.
fn call_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (cpu_arg(), prop::bool::weighted(0.05), timeout(), opt(0..TOKEN_VARS as u8), opt(0..STATUS_VARS as u8))
            .prop_map(|(cpu, null_proc, timeout, token, status)| Op::Dispatch { cpu, null_proc, timeout, token, status }),
        4 => (prop::bool::weighted(0.05), timeout(), opt(0..TOKEN_VARS as u8), opt(0..ARRAYS as u8))
            .prop_map(|(null_proc, timeout, token, status)| Op::Broadcast { null_proc, timeout, token, status }),
        5 => val().prop_map(Op::Check),
        3 => (val(), prop::bool::weighted(0.1)).prop_map(|(val, null_out)| Op::Result { val, null_out }),
        3 => (cpu_arg(), prop::bool::weighted(0.05), any::<bool>())
            .prop_map(|(cpu, null_proc, always_blocking)| Op::Startup { cpu, null_proc, always_blocking }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(proc_, arg)| Op::SetStartup { proc_, arg }),
        1 => prop::bool::weighted(0.3).prop_map(|null_out| Op::NumProcs { null_out }),
        1 => (cpu_arg(), prop::bool::weighted(0.2)).prop_map(|(cpu, null_out)| Op::ProcInfo { cpu, null_out }),
        2 => cpu_arg().prop_map(Op::Switch),
        2 => (apic_arg(), prop::bool::weighted(0.1)).prop_map(|(apic, null_out)| Op::Add { apic, null_out }),
        1 => cpu_arg().prop_map(Op::Remove),
        1 => prop::bool::weighted(0.2).prop_map(|null_out| Op::WhoAmI { null_out }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (prop_oneof![Just(0xffu8), any::<u8>()], any::<u8>(), prop::bool::weighted(0.7))
            .prop_map(|(mask, rot, reopen)| Op::Toggle { mask, rot, reopen }),
        30 => call_op(),
        3 => val().prop_map(Op::Wait),
        6 => (0u8..8).prop_map(Op::Step),
        2 => (0u8..8, apic_arg()).prop_map(|(slot, apic)| Op::Reserve { slot, apic }),
        1 => (0u8..8).prop_map(Op::InitCpu),
        3 => prop_oneof![Just(0u32), Just(1), Just(499), Just(500), Just(3000)].prop_map(Op::Advance),
        1 => (0..TOKEN_VARS as u8, val()).prop_map(|(var, val)| Op::SetVar { var, val }),
        3 => ((0u8..8), call_op()).prop_map(|(c, o)| Op::AsCpu(c, Box::new(o))),
    ]
}

/// A machine configuration.
#[derive(Clone, Debug)]
struct Cfg {
    cpus: usize,
    relaxed: bool,
    tokens: u32,
    time: bool,
    hot_plug: bool,
    blocking_startup: bool,
    empty_mask: u8,
    rets: Vec<u8>,
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        (2usize..=5, any::<bool>()),
        1u32..=4,
        any::<bool>(),
        prop::bool::weighted(0.8),
        any::<bool>(),
        any::<u8>(),
        prop::collection::vec(0u8..3, 5),
    )
        .prop_map(
            |((cpus, relaxed), tokens, time, hot_plug, blocking_startup, empty_mask, rets)| Cfg {
                cpus,
                relaxed,
                tokens,
                time,
                hot_plug,
                blocking_startup,
                // Slot 0 is never empty at start (some CPU must take SMIs).
                empty_mask: empty_mask & 0b1_1110,
                rets,
            },
        )
}

// -- the model -----------------------------------------------------------------

const OP_NONE: u32 = 0;
const OP_ADD: u32 = 1;
const OP_REMOVE: u32 = 2;
const OP_SWITCH: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TState {
    Running,
    Done,
    TimedOut,
}

#[derive(Clone, Debug)]
struct MToken {
    id: u64,
    handle: usize,
    left: Vec<usize>,
    state: TState,
    observed: bool,
    /// Possible overall results (one element unless completion order was
    /// left to the library's pump).
    result: Vec<Status>,
    /// (start, ticks).
    deadline: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    None,
    Var(usize),
    Array(usize, usize),
}

#[derive(Clone, Debug)]
struct MCall {
    token: Option<u64>,
    target: Target,
    legacy: bool,
    abandoned: bool,
}

impl MCall {
    fn new(token: Option<u64>, target: Target, legacy: bool) -> Self {
        MCall {
            token,
            target,
            legacy,
            abandoned: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MStats {
    smis: u64,
    timeouts: u64,
    dispatches: u64,
    broadcasts: u64,
}

struct Model {
    n: usize,
    cap: usize,
    time: bool,
    hot_plug: bool,
    blocking_startup: bool,
    now: u64,
    records: Vec<ProcessorInformation>,
    pending: Vec<u32>,
    needs_init: Vec<bool>,
    /// SMI number (the library's count of ended SMIs) when the CPU took
    /// its init-only first SMI.
    init_seq: Vec<Option<u32>>,
    smi_seq: u32,
    hp_ids: Vec<u64>,
    candidate: Option<usize>,
    in_smi: bool,
    bsp: usize,
    present: Vec<bool>,
    busy: Vec<Option<MCall>>,
    pool: Vec<MToken>,
    next_id: u64,
    issued: Vec<usize>,
    runs: Vec<usize>,
    legacy: Vec<usize>,
    startup: Vec<usize>,
    startup_counts: bool,
    rets: Vec<Status>,
    status_vars: Vec<Status>,
    arrays: Vec<Vec<Status>>,
    token_vars: Vec<usize>,
    result_out: Status,
    stats: MStats,
    /// The CPU making the current call (NONE outside an SMI by default).
    caller: usize,
}

fn empty_rec(r: &ProcessorInformation) -> bool {
    r.processor_id == INVALID_APIC_ID
}

impl Model {
    fn empty(&self, s: usize) -> bool {
        empty_rec(&self.records[s])
    }

    fn current_bsp(&self) -> usize {
        if self.in_smi {
            self.bsp
        } else {
            NONE
        }
    }

    /// BEHAVIOUR.md §2 "caller is an AP", as far as GetApicId tells.
    fn caller_is_ap(&self) -> bool {
        let me = if self.caller == NONE {
            INVALID_APIC_ID
        } else {
            apic(self.caller)
        };
        me != self.records[self.bsp].processor_id
    }

    fn bsp_call(&self) -> Result<(), Status> {
        if !self.in_smi {
            return Err(Status::NOT_READY);
        }
        if self.caller_is_ap() {
            return Err(Status::INVALID_PARAMETER);
        }
        Ok(())
    }

    /// BEHAVIOUR.md §2.2 checks 1–5.
    fn check_target(&self, cpu: usize) -> Result<(), Status> {
        if cpu == self.bsp
            || cpu >= self.n
            || self.empty(cpu)
            || !self.present[cpu]
            || self.pending[cpu] == OP_REMOVE
        {
            return Err(Status::INVALID_PARAMETER);
        }
        Ok(())
    }

    /// BEHAVIOUR.md §2.2 checks 6–7 and the live-token check (§2.3 1–3 alike).
    fn check_call(
        &self,
        timeout: u16,
        null_proc: bool,
        token_var: Option<usize>,
    ) -> Result<(), Status> {
        if timeout != 0 && !self.time {
            return Err(Status::INVALID_PARAMETER);
        }
        if null_proc {
            return Err(Status::INVALID_PARAMETER);
        }
        if self.token_running(token_var) {
            return Err(Status::ALREADY_STARTED);
        }
        Ok(())
    }

    fn find(&self, handle: usize) -> Option<usize> {
        if handle == 0 {
            return None;
        }
        self.pool.iter().position(|t| t.handle == handle)
    }

    fn token_running(&self, var: Option<usize>) -> bool {
        var.and_then(|k| self.find(self.token_vars[k]))
            .is_some_and(|i| self.pool[i].state == TState::Running)
    }

    /// BEHAVIOUR.md §3: a fresh slot, else recycle the oldest observed completed one.
    fn alloc(&mut self, participants: Vec<usize>, timeout_us: u64) -> Option<u64> {
        if self.pool.len() >= self.cap {
            let i = self
                .pool
                .iter()
                .position(|t| t.observed && t.state != TState::Running)?;
            self.pool.remove(i);
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline =
            (self.time && timeout_us != 0).then(|| (self.now, (timeout_us * 1000).max(1)));
        self.pool.push(MToken {
            id,
            handle: 0,
            left: participants,
            state: TState::Running,
            observed: false,
            result: vec![Status::SUCCESS],
            deadline,
        });
        Some(id)
    }

    fn token_mut(&mut self, id: u64) -> Option<&mut MToken> {
        self.pool.iter_mut().find(|t| t.id == id)
    }

    fn write(&mut self, target: Target, value: Status) {
        match target {
            Target::None => {}
            Target::Var(k) => self.status_vars[k] = value,
            Target::Array(a, i) => self.arrays[a][i] = value,
        }
    }

    /// AP `cpu` runs (or, abandoned, drops) its posted call. Returns the
    /// status it published, if any.
    fn complete(&mut self, cpu: usize) -> Option<Status> {
        let call = self.busy[cpu].take()?;
        if call.abandoned {
            return None;
        }
        let status = if call.legacy {
            self.legacy[cpu] += 1;
            Status::SUCCESS
        } else {
            self.runs[cpu] += 1;
            self.rets[cpu]
        };
        self.write(call.target, status);
        if let Some(id) = call.token {
            if let Some(t) = self.token_mut(id) {
                t.left.retain(|&c| c != cpu);
                if status.is_error() && t.result == [Status::SUCCESS] {
                    t.result = vec![status];
                }
                if t.left.is_empty() && t.state == TState::Running {
                    t.state = TState::Done;
                }
            }
        }
        Some(status)
    }

    /// Several APs complete in an order the model does not fix.
    fn complete_unordered(&mut self, cpus: &[usize], token: Option<u64>) {
        let before = token
            .and_then(|id| self.pool.iter().find(|t| t.id == id))
            .map(|t| t.result.clone());
        let mut failures = Vec::new();
        for &c in cpus {
            if let Some(s) = self.complete(c) {
                if s.is_error() && !failures.contains(&s) {
                    failures.push(s);
                }
            }
        }
        if let (Some(id), Some(before)) = (token, before) {
            if before == [Status::SUCCESS] && !failures.is_empty() {
                if let Some(t) = self.token_mut(id) {
                    t.result = failures;
                }
            }
        }
    }

    fn expired(&self, deadline: Option<(u64, u64)>) -> bool {
        deadline.is_some_and(|(start, ticks)| self.now.wrapping_sub(start) >= ticks)
    }

    /// Check/Wait/GetTokenResult's look at a token (BEHAVIOUR.md §2.5, §2.7).
    fn poll(&mut self, handle: usize) -> Option<usize> {
        let i = self.find(handle)?;
        if self.pool[i].state == TState::Running
            && self.expired(self.pool[i].deadline)
            && self.in_smi
            && !self.caller_is_ap()
        {
            let id = self.pool[i].id;
            for c in 0..self.n {
                let abandon = matches!(&self.busy[c], Some(call) if call.token == Some(id) && !call.abandoned);
                if abandon {
                    let target = self.busy[c].as_ref().map_or(Target::None, |b| b.target);
                    if let Some(call) = self.busy[c].as_mut() {
                        call.abandoned = true;
                    }
                    self.write(target, Status::TIMEOUT);
                }
            }
            self.pool[i].state = TState::TimedOut;
            self.pool[i].observed = true;
            self.stats.timeouts += 1;
        }
        if self.pool[i].state != TState::Running {
            self.pool[i].observed = true;
        }
        Some(i)
    }

    fn check(&mut self, handle: usize) -> Status {
        if handle == 0 {
            return Status::INVALID_PARAMETER;
        }
        match self.poll(handle).map(|i| self.pool[i].state) {
            None => Status::NOT_FOUND,
            Some(TState::Done) => Status::SUCCESS,
            Some(TState::TimedOut) => Status::TIMEOUT,
            Some(TState::Running) => Status::NOT_READY,
        }
    }

    /// APs still running the token of `handle` (what Wait pumps).
    fn runners_of(&self, handle: usize) -> Vec<usize> {
        self.find(handle)
            .map_or(Vec::new(), |i| self.pool[i].left.clone())
    }

    /// Whether the BSP waits for slot `s` (BEHAVIOUR.md §5.3): non-empty, past its
    /// init-only first SMI — which must not have been taken for the SMI at
    /// hand (it never checks in to that one) — and not added in this SMI.
    fn expected_cpu(&self, s: usize) -> bool {
        !self.empty(s)
            && !self.needs_init[s]
            && self.init_seq[s] != Some(self.smi_seq)
            && self.pending[s] != OP_ADD
    }

    /// A hot-added CPU takes its init-only first SMI now.
    fn take_init(&mut self, s: usize) {
        self.needs_init[s] = false;
        self.init_seq[s] = Some(self.smi_seq);
    }

    /// CPUs that may take an SMI (a CPU hot-added outside an SMI that
    /// already took its first SMI waits for its Add to be applied: it is
    /// kept out so the BSP's arrival count stays exact).
    fn eligible(&self, s: usize) -> bool {
        !self.empty(s) && (self.pending[s] != OP_ADD || self.needs_init[s])
    }

    fn slot_of_apic(&self, a: u64) -> Option<usize> {
        if a == INVALID_APIC_ID {
            return None;
        }
        (0..self.n).find(|&s| self.records[s].processor_id == a)
    }
}

// -- the runner: real calls + model + comparison -------------------------------

struct Runner {
    model: Model,
    ops: VecDeque<Op>,
    ctr: Arc<Counters>,
    token_vars: Box<[MmCompletion]>,
    status_vars: Box<[Status]>,
    arrays: Vec<Box<[Status]>>,
    result_out: Box<Status>,
    failure: Option<String>,
    step_no: usize,
    /// The SMI just ended; start the next one at once with (mask, rot).
    reopen: Option<(u8, u8)>,
}

// SAFETY (test code): the raw buffers are owned by the runner and only used
// on the test thread (the stepped machine plays every CPU on it).
unsafe impl Send for Runner {}

fn cpu_of(a: CpuArg) -> usize {
    match a {
        CpuArg::Idx(i) => i as usize,
        CpuArg::AllOnes => usize::MAX,
        CpuArg::Any(v) => v,
    }
}

fn apic_of(a: ApicArg) -> u64 {
    match a {
        ApicArg::Cpu(k) => apic(k as usize),
        ApicArg::Invalid => INVALID_APIC_ID,
        ApicArg::Any(v) => v,
    }
}

impl Runner {
    fn fail(&mut self, what: String) {
        if self.failure.is_none() {
            self.failure = Some(format!("op #{}: {what}", self.step_no));
        }
    }

    fn expect(&mut self, what: &str, got: Status, want: Status) {
        *COVERAGE
            .lock()
            .unwrap()
            .entry(format!("{what} -> {want:?}"))
            .or_insert(0) += 1;
        if got != want {
            self.fail(format!("{what}: library {got:?}, model {want:?}"));
        }
    }

    fn value(&self, v: Val) -> usize {
        match v {
            Val::Null => 0,
            Val::Var(k) => self.model.token_vars[k as usize],
            Val::Forged(x) => x,
            Val::Issued(k) => {
                let is = &self.model.issued;
                if is.is_empty() {
                    0x7777
                } else {
                    is[k as usize % is.len()]
                }
            }
        }
    }

    fn token_ptr(&mut self, k: Option<u8>) -> *mut MmCompletion {
        match k {
            // SAFETY: k < TOKEN_VARS, in bounds of the runner's array.
            Some(k) => unsafe { self.token_vars.as_mut_ptr().add(k as usize) },
            None => std::ptr::null_mut(),
        }
    }

    /// Which APs a blocking call may pump: everyone else stays frozen.
    fn thaw(&self, sim: &Sim, cpus: &[usize]) {
        for c in 0..self.model.n {
            sim.freeze(c, !cpus.contains(&c));
        }
    }

    /// Run one operation on the library and on the model; compare.
    fn exec(&mut self, sim: &Sim, op: &Op) {
        sim.reset_watchdog();
        match op {
            Op::AsCpu(c, inner) => {
                let c = *c as usize % self.model.n;
                let prev = self.model.caller;
                self.model.caller = c;
                sim.as_cpu(c, || self.exec(sim, inner));
                self.model.caller = prev;
            }
            Op::Toggle { .. } => {}
            Op::Dispatch {
                cpu,
                null_proc,
                timeout,
                token,
                status,
            } => self.dispatch(sim, cpu_of(*cpu), *null_proc, *timeout, *token, *status),
            Op::Broadcast {
                null_proc,
                timeout,
                token,
                status,
            } => self.broadcast(sim, *null_proc, *timeout, *token, *status),
            Op::Check(v) => {
                let h = self.value(*v);
                let mp = sim.mp();
                // SAFETY: our protocol; the token is passed by value.
                let got = unsafe { (mp.check_for_procedure)(mp, h as MmCompletion) };
                let want = self.model.check(h);
                self.expect("CheckForProcedure", got, want);
            }
            Op::Wait(v) => {
                let h = self.value(*v);
                // Wait pumps exactly the APs still running this token.
                let runners = self.model.runners_of(h);
                self.thaw(sim, &runners);
                let mp = sim.mp();
                // SAFETY: our protocol; the token is passed by value.
                let got = unsafe { (mp.wait_for_procedure)(mp, h as MmCompletion) };
                self.thaw(sim, &[]);
                let mut want = self.model.check(h);
                if want == Status::NOT_READY {
                    let id = self.model.find(h).map(|i| self.model.pool[i].id);
                    self.model.complete_unordered(&runners, id);
                    want = self.model.check(h);
                }
                self.expect("WaitForProcedure", got, want);
            }
            Op::Result { val, null_out } => {
                let h = self.value(*val);
                *self.result_out = SENTINEL;
                let out = if *null_out {
                    std::ptr::null_mut()
                } else {
                    &mut *self.result_out as *mut Status
                };
                // SAFETY: valid instance; `out` is NULL or our Box.
                let got = unsafe { MmMpGetTokenResult(sim.inst, h as MmCompletion, out) };
                let m = &mut self.model;
                m.result_out = SENTINEL;
                let want = if h == 0 || *null_out {
                    Status::INVALID_PARAMETER
                } else {
                    match m.poll(h) {
                        None => Status::NOT_FOUND,
                        Some(i) => match m.pool[i].state {
                            TState::Running => Status::NOT_READY,
                            TState::TimedOut => {
                                m.result_out = Status::TIMEOUT;
                                Status::SUCCESS
                            }
                            TState::Done => {
                                let r = m.pool[i].result.clone();
                                // One of the possible first failures.
                                m.result_out = if r.contains(&self.result_out) {
                                    *self.result_out
                                } else {
                                    r[0]
                                };
                                Status::SUCCESS
                            }
                        },
                    }
                };
                self.expect("MmMpGetTokenResult", got, want);
            }
            Op::Startup {
                cpu,
                null_proc,
                always_blocking,
            } => {
                let cpu = cpu_of(*cpu);
                let blocking = *always_blocking || self.model.blocking_startup;
                if cpu < self.model.n {
                    self.thaw(sim, &[cpu]);
                }
                let p = if *null_proc { None } else { p1(proc_legacy) };
                let arg = Arc::as_ptr(&self.ctr) as *mut c_void;
                // SAFETY: valid instance; the argument outlives the case.
                let got = unsafe {
                    if *always_blocking {
                        MmMpBlockingStartupThisAp(sim.inst, p, cpu, arg)
                    } else {
                        MmMpStartupThisAp(sim.inst, p, cpu, arg)
                    }
                };
                self.thaw(sim, &[]);
                let m = &mut self.model;
                let want = match m.bsp_call().and_then(|_| m.check_target(cpu)) {
                    Err(e) => e,
                    Ok(()) if *null_proc => Status::INVALID_PARAMETER,
                    Ok(()) => {
                        // A busy AP is waited for (BEHAVIOUR.md §4): its call ends first.
                        m.complete(cpu);
                        m.stats.dispatches += 1;
                        m.busy[cpu] = Some(MCall::new(None, Target::None, true));
                        if blocking {
                            m.complete(cpu);
                        }
                        Status::SUCCESS
                    }
                };
                self.expect("MmStartupThisAp", got, want);
            }
            Op::SetStartup { proc_, arg } => {
                let p = if *proc_ { p1(proc_startup) } else { None };
                let a = if *arg {
                    Arc::as_ptr(&self.ctr) as *mut c_void
                } else {
                    std::ptr::null_mut()
                };
                let got = sim.set_startup(p, a);
                let want = if !*proc_ && *arg {
                    Status::INVALID_PARAMETER
                } else {
                    self.model.startup_counts = *proc_ && *arg;
                    Status::SUCCESS
                };
                self.expect("SetStartupProcedure", got, want);
            }
            Op::NumProcs { null_out } => {
                let mp = sim.mp();
                let mut n = 0x5a5ausize;
                let out = out_or_null(*null_out, &mut n);
                // SAFETY: our protocol; `out` is NULL or a local.
                let got = unsafe { (mp.get_number_of_processors)(mp, out) };
                let (want, wn) = if *null_out {
                    (Status::INVALID_PARAMETER, 0x5a5a)
                } else {
                    (Status::SUCCESS, self.model.n)
                };
                self.expect("GetNumberOfProcessors", got, want);
                if n != wn {
                    self.fail(format!("GetNumberOfProcessors wrote {n}, model {wn}"));
                }
            }
            Op::ProcInfo { cpu, null_out } => {
                let cpu = cpu_of(*cpu);
                let cs = sim.cs();
                let mut info = ProcessorInformation::EMPTY;
                info.processor_id = 0x5a5a;
                let out = out_or_null(*null_out, &mut info);
                // SAFETY: our protocol; `out` is NULL or a local.
                let got = unsafe { (cs.get_processor_info)(cs, cpu, out) };
                let m = &self.model;
                let want = if cpu >= m.n || *null_out {
                    Status::INVALID_PARAMETER
                } else if m.empty(cpu) {
                    Status::NOT_FOUND
                } else {
                    Status::SUCCESS
                };
                self.expect("GetProcessorInfo", got, want);
                if want == Status::SUCCESS
                    && got == want
                    && !same_record(&info, &self.model.records[cpu])
                {
                    self.fail(format!("GetProcessorInfo({cpu}) record differs"));
                }
            }
            Op::Switch(cpu) => {
                let cpu = cpu_of(*cpu);
                let got = sim.switch_bsp(cpu);
                let m = &mut self.model;
                let want = if cpu >= m.n {
                    Status::INVALID_PARAMETER
                } else if m.empty(cpu) {
                    Status::NOT_FOUND
                } else if m.pending[cpu] != OP_NONE || m.current_bsp() == cpu {
                    Status::UNSUPPORTED
                } else {
                    m.pending[cpu] = OP_SWITCH;
                    m.candidate = Some(cpu);
                    Status::SUCCESS
                };
                self.expect("SwitchBsp", got, want);
            }
            Op::Add { apic: a, null_out } => {
                let a = apic_of(*a);
                let cs = sim.cs();
                let mut slot = NONE;
                let out = out_or_null(*null_out, &mut slot);
                // SAFETY: our protocol; `out` is NULL or a local.
                let got = unsafe { (cs.add_processor)(cs, a, out) };
                let m = &mut self.model;
                let mut want_slot = NONE;
                let want = if !m.hot_plug {
                    Status::UNSUPPORTED
                } else if *null_out || a == INVALID_APIC_ID {
                    Status::INVALID_PARAMETER
                } else if m.slot_of_apic(a).is_some() {
                    Status::ALREADY_STARTED
                } else if let Some(s) =
                    (0..m.n).find(|&s| m.empty(s) && m.pending[s] == OP_NONE && m.hp_ids[s] == a)
                {
                    let (l, l2) = location_of(a);
                    let mut r = ProcessorInformation::EMPTY;
                    r.processor_id = a;
                    r.status_flag = 0;
                    r.location = l;
                    r.extended_information.location2 = l2;
                    m.records[s] = r;
                    m.needs_init[s] = true;
                    m.pending[s] = OP_ADD;
                    want_slot = s;
                    Status::SUCCESS
                } else {
                    Status::INVALID_PARAMETER
                };
                self.expect("AddProcessor", got, want);
                if slot != want_slot {
                    self.fail(format!("AddProcessor wrote slot {slot}, model {want_slot}"));
                }
            }
            Op::Remove(cpu) => {
                let cpu = cpu_of(*cpu);
                let got = sim.remove_processor(cpu);
                let m = &mut self.model;
                let want = if !m.hot_plug {
                    Status::UNSUPPORTED
                } else if cpu >= m.n || m.empty(cpu) {
                    Status::INVALID_PARAMETER
                } else if m.current_bsp() == cpu || m.pending[cpu] != OP_NONE {
                    Status::UNSUPPORTED
                } else {
                    m.pending[cpu] = OP_REMOVE;
                    m.records[cpu].processor_id = INVALID_APIC_ID;
                    m.needs_init[cpu] = false;
                    m.hp_ids[cpu] = INVALID_APIC_ID;
                    // BEHAVIOUR.md §5.2: a removed CPU cannot win
                    // the next election, so its SwitchBsp is cancelled.
                    if m.candidate == Some(cpu) {
                        m.candidate = None;
                    }
                    Status::SUCCESS
                };
                self.expect("RemoveProcessor", got, want);
            }
            Op::WhoAmI { null_out } => {
                let cs = sim.cs();
                let mut slot = NONE;
                let out = out_or_null(*null_out, &mut slot);
                // SAFETY: our protocol; `out` is NULL or a local.
                let got = unsafe { (cs.who_am_i)(cs, out) };
                let m = &self.model;
                let me = if m.caller == NONE {
                    INVALID_APIC_ID
                } else {
                    apic(m.caller)
                };
                let (want, ws) = if *null_out {
                    (Status::INVALID_PARAMETER, NONE)
                } else {
                    match m.slot_of_apic(me) {
                        Some(s) => (Status::SUCCESS, s),
                        None => (Status::NOT_FOUND, NONE),
                    }
                };
                self.expect("WhoAmI", got, want);
                if slot != ws {
                    self.fail(format!("WhoAmI wrote {slot}, model {ws}"));
                }
            }
            Op::Reserve { slot, apic: a } => {
                let s = *slot as usize % self.model.n;
                let a = apic_of(*a);
                sim.set_hot_plug_id(s, a);
                self.model.hp_ids[s] = a;
            }
            Op::InitCpu(k) => {
                let s = *k as usize % self.model.n;
                if self.model.needs_init[s] && !self.model.empty(s) {
                    if !sim.step(s) {
                        self.fail(format!(
                            "first SMI of hot-added CPU {s} did not return at once"
                        ));
                    }
                    self.model.take_init(s);
                }
            }
            Op::Step(k) => {
                let s = *k as usize % self.model.n;
                let m = &self.model;
                if m.in_smi && s != m.bsp && m.present[s] {
                    sim.step(s);
                    self.model.complete(s);
                }
            }
            Op::Advance(us) => {
                sim.advance(*us as u64 * 1000);
                self.model.now = self.model.now.wrapping_add(*us as u64 * 1000);
            }
            Op::SetVar { var, val } => {
                let v = self.value(*val);
                self.token_vars[*var as usize] = v as MmCompletion;
                self.model.token_vars[*var as usize] = v;
            }
        }
    }

    fn dispatch(
        &mut self,
        sim: &Sim,
        cpu: usize,
        null_proc: bool,
        timeout: u16,
        token: Option<u8>,
        status: Option<u8>,
    ) {
        if cpu < self.model.n {
            self.thaw(sim, &[cpu]);
        }
        let tp = self.token_ptr(token);
        let sp = match status {
            // SAFETY: in bounds of the runner's array.
            Some(k) => unsafe { self.status_vars.as_mut_ptr().add(k as usize) },
            None => std::ptr::null_mut(),
        };
        let p = if null_proc { None } else { p2(proc_ret) };
        let arg = Arc::as_ptr(&self.ctr) as *mut c_void;
        let mp = sim.mp();
        // SAFETY: our protocol; token and status point into the runner's
        // arrays, which outlive every call of the case.
        let got = unsafe { (mp.dispatch_procedure)(mp, p, cpu, timeout as usize, arg, tp, sp) };
        self.thaw(sim, &[]);
        let m = &mut self.model;
        let tv = token.map(|k| k as usize);
        let target = status.map_or(Target::None, |k| Target::Var(k as usize));
        let want = (|| {
            m.bsp_call()?;
            m.check_target(cpu)?;
            m.check_call(timeout, null_proc, tv)?;
            if m.busy[cpu].is_some() {
                return Err(Status::NOT_READY);
            }
            let id = match tv {
                Some(_) => Some(
                    m.alloc(vec![cpu], timeout as u64)
                        .ok_or(Status::OUT_OF_RESOURCES)?,
                ),
                None => None,
            };
            m.write(target, Status::NOT_READY);
            m.busy[cpu] = Some(MCall::new(id, target, false));
            m.stats.dispatches += 1;
            if id.is_none() {
                m.complete(cpu);
            }
            Ok(id)
        })();
        self.settle("DispatchProcedure", got, want, tv);
    }

    fn broadcast(
        &mut self,
        sim: &Sim,
        null_proc: bool,
        timeout: u16,
        token: Option<u8>,
        status: Option<u8>,
    ) {
        let members: Vec<usize> = {
            let m = &self.model;
            (0..m.n)
                .filter(|&i| {
                    m.in_smi
                        && i != m.bsp
                        && m.present[i]
                        && !(m.empty(i) && m.pending[i] != OP_REMOVE)
                })
                .collect()
        };
        self.thaw(sim, &members);
        let tp = self.token_ptr(token);
        let sp = match status {
            Some(a) => self.arrays[a as usize].as_mut_ptr(),
            None => std::ptr::null_mut(),
        };
        let p = if null_proc { None } else { p2(proc_ret) };
        let arg = Arc::as_ptr(&self.ctr) as *mut c_void;
        let mp = sim.mp();
        // SAFETY: our protocol; the status array has NumberOfCpus entries
        // and, like the token variable, outlives every call of the case.
        let got = unsafe { (mp.broadcast_procedure)(mp, p, timeout as usize, arg, tp, sp) };
        self.thaw(sim, &[]);
        let m = &mut self.model;
        let tv = token.map(|k| k as usize);
        let want = (|| {
            m.bsp_call()?;
            m.check_call(timeout, null_proc, tv)?;
            if members.iter().any(|&i| m.pending[i] == OP_REMOVE) {
                return Err(Status::INVALID_PARAMETER);
            }
            if members.iter().any(|&i| m.busy[i].is_some()) {
                return Err(Status::NOT_READY);
            }
            if members.is_empty() {
                return Err(Status::NOT_STARTED);
            }
            let id = match tv {
                Some(_) => Some(
                    m.alloc(members.clone(), timeout as u64)
                        .ok_or(Status::OUT_OF_RESOURCES)?,
                ),
                None => None,
            };
            if let Some(a) = status {
                for i in 0..m.n {
                    let v = if members.contains(&i) {
                        Status::NOT_READY
                    } else {
                        Status::NOT_STARTED
                    };
                    m.arrays[a as usize][i] = v;
                }
            }
            for &i in &members {
                let target = status.map_or(Target::None, |a| Target::Array(a as usize, i));
                m.busy[i] = Some(MCall::new(id, target, false));
            }
            m.stats.broadcasts += 1;
            if id.is_none() {
                m.complete_unordered(&members, None);
            }
            Ok(id)
        })();
        self.settle("BroadcastProcedure", got, want, tv);
    }

    /// Compare a Dispatch/Broadcast status; on success with a token, take
    /// the handle the library wrote.
    fn settle(
        &mut self,
        what: &str,
        got: Status,
        want: Result<Option<u64>, Status>,
        tv: Option<usize>,
    ) {
        match want {
            Err(e) => self.expect(what, got, e),
            Ok(id) => {
                self.expect(what, got, Status::SUCCESS);
                if let (Some(id), Some(k)) = (id, tv) {
                    self.new_handle(id, k);
                }
            }
        }
    }

    /// The library handed out a handle for model token `id` in variable k.
    fn new_handle(&mut self, id: u64, k: usize) {
        let h = self.token_vars[k] as usize;
        if h == 0 {
            self.fail("a NULL handle was issued".into());
        }
        if self.model.pool.iter().any(|t| t.handle == h) {
            self.fail(format!("handle {h:#x} issued twice in one SMI"));
        }
        if let Some(t) = self.model.token_mut(id) {
            t.handle = h;
        }
        self.model.token_vars[k] = h;
        self.model.issued.push(h);
    }

    /// The whole observable state against the model.
    fn compare(&mut self, sim: &Sim) {
        let m = &self.model;
        let mut diffs = Vec::new();
        let eq = |diffs: &mut Vec<String>, what: &str, a: String, b: String| {
            if a != b {
                diffs.push(format!("{what}: library {a}, model {b}"));
            }
        };
        let ctr = &self.ctr;
        for (what, lib, model) in [
            ("procedure runs", Counters::read(&ctr.runs), &m.runs),
            ("legacy runs", Counters::read(&ctr.legacy), &m.legacy),
            ("startup runs", Counters::read(&ctr.startup), &m.startup),
        ] {
            eq(&mut diffs, what, format!("{lib:?}"), format!("{model:?}"));
        }
        eq(
            &mut diffs,
            "CPUStatus words",
            format!("{:?}", self.status_vars),
            format!("{:?}", m.status_vars),
        );
        for a in 0..ARRAYS {
            eq(
                &mut diffs,
                "CPUStatus array",
                format!("{:?}", self.arrays[a]),
                format!("{:?}", m.arrays[a]),
            );
        }
        let tv: Vec<usize> = self.token_vars.iter().map(|&t| t as usize).collect();
        eq(
            &mut diffs,
            "token variables",
            format!("{tv:x?}"),
            format!("{:x?}", m.token_vars),
        );
        if *self.result_out != m.result_out {
            eq(
                &mut diffs,
                "GetTokenResult *Result",
                format!("{:?}", *self.result_out),
                format!("{:?}", m.result_out),
            );
        }
        let mut s = MmMpStatistics::default();
        // SAFETY: valid instance and out-pointer.
        unsafe { MmMpGetStatistics(sim.inst, &mut s) };
        let got = MStats {
            smis: s.smis,
            timeouts: s.timeouts,
            dispatches: s.dispatches,
            broadcasts: s.broadcasts,
        };
        eq(
            &mut diffs,
            "statistics",
            format!("{got:?}"),
            format!("{:?}", m.stats),
        );
        eq(
            &mut diffs,
            "lost/late/spurious",
            format!("{:?}", (s.lost_aps, s.late_cpus, s.spurious_smis)),
            "(0, 0, 0)".into(),
        );
        eq(
            &mut diffs,
            "current BSP",
            format!("{}", sim.current_bsp()),
            format!("{}", m.current_bsp()),
        );
        eq(
            &mut diffs,
            "NumberOfProcessors",
            format!("{:?}", sim.number_of_processors()),
            format!("{:?}", (Status::SUCCESS, m.n)),
        );
        for c in 0..m.n {
            let (st, info) = sim.processor_info(c);
            let want = if m.empty(c) {
                Status::NOT_FOUND
            } else {
                Status::SUCCESS
            };
            if st != want || (st == Status::SUCCESS && !same_record(&info, &m.records[c])) {
                diffs.push(format!(
                    "GetProcessorInfo({c}): library {st:?} {:#x}, model {want:?} {:#x}",
                    info.processor_id, m.records[c].processor_id
                ));
            }
            eq(
                &mut diffs,
                &format!("HotPlugApicId[{c}]"),
                format!("{:#x}", sim.hot_plug_id(c)),
                format!("{:#x}", m.hp_ids[c]),
            );
            let inst = sim.instance();
            let st = inst.cpu(c).unwrap();
            eq(
                &mut diffs,
                &format!("pending op of {c}"),
                format!("{}", st.pending_op()),
                format!("{}", m.pending[c]),
            );
            eq(
                &mut diffs,
                &format!("needs-init of {c}"),
                format!("{}", st.needs_init()),
                format!("{}", m.needs_init[c]),
            );
        }
        if !diffs.is_empty() {
            self.fail(diffs.join("; "));
        }
    }

    /// Ops inside the SMI (called from the MM foundation entry on the BSP).
    fn run_inside(&mut self, sim: &Sim) {
        self.thaw(sim, &[]);
        // The handler runs on the BSP.
        self.model.caller = self.model.bsp;
        // Relaxed (BEHAVIOUR.md §6.1): the BSP runs the handlers at once; the APs of
        // this SMI join the dispatch loop as they arrive. Let every arriving
        // AP get there first, so presence is what the model says.
        let inst = sim.instance();
        let m = &self.model;
        let aps: Vec<usize> = (0..m.n).filter(|&c| m.present[c] && c != m.bsp).collect();
        for ap in aps {
            for _ in 0..4 {
                if inst.cpu(ap).is_some_and(|s| s.is_present()) {
                    break;
                }
                sim.step(ap);
            }
            if !inst.cpu(ap).is_some_and(|s| s.is_present()) {
                self.fail(format!("AP {ap} of this SMI never became present"));
            }
        }
        while self.failure.is_none() {
            let Some(op) = self.ops.pop_front() else {
                break;
            };
            self.step_no += 1;
            if let Op::Toggle { mask, rot, reopen } = op {
                if reopen {
                    self.reopen = Some((mask, rot));
                }
                break;
            }
            self.exec(sim, &op);
            self.compare(sim);
        }
        // Leave no call in flight: each busy AP is stepped once, in order.
        for c in 0..self.model.n {
            if self.model.busy[c].is_some() {
                sim.step(c);
                self.model.complete(c);
            }
        }
        for c in 0..self.model.n {
            sim.freeze(c, false);
        }
        self.model.caller = NONE;
    }
}

fn same_record(a: &ProcessorInformation, b: &ProcessorInformation) -> bool {
    let bytes = |p: &ProcessorInformation| {
        // SAFETY: ProcessorInformation is 48 bytes of plain integers with no
        // padding (BEHAVIOUR.md §1.6; asserted in src/efi.rs).
        unsafe {
            std::slice::from_raw_parts(
                p as *const _ as *const u8,
                std::mem::size_of::<ProcessorInformation>(),
            )
        }
        .to_vec()
    };
    bytes(a) == bytes(b)
}

/// Start an SMI on the model and the machine, run the ops inside, end it.
fn run_smi(sim: &Sim, runner: &Arc<Mutex<Runner>>, mask: u8, rot: u8) {
    let (order, has_bsp) = {
        let mut r = runner.lock().unwrap();
        let m = &mut r.model;
        let n = m.n;
        let mut arrivals: Vec<usize> = (0..n)
            .filter(|&s| m.eligible(s) && mask & (1 << s) != 0)
            .collect();
        if let Some(c) = m.candidate {
            if m.eligible(c) && !arrivals.contains(&c) {
                arrivals.push(c);
            }
        }
        // The candidate must take part as an ordinary CPU: if it was never
        // initialised, its first SMI happens now (as in OVMF, inside the
        // hot-plug SMI).
        // Init-only first SMIs of hot-added CPUs (the candidate's too: it
        // must take part as an ordinary CPU) are played before the SMI, as
        // in OVMF inside the hot-plug SMI: they return at once, and the
        // handler could otherwise run in the BSP's first step, before them.
        let pre_init: Vec<usize> = (0..n)
            .filter(|&s| {
                !m.empty(s) && m.needs_init[s] && (arrivals.contains(&s) || m.candidate == Some(s))
            })
            .collect();
        for &s in &pre_init {
            m.take_init(s);
        }
        // A CPU that took its init SMI for this SMI is not waited for; it
        // could still join, which would make the arrival count depend on
        // the interleaving, so it stays out — unless it is the SwitchBsp
        // candidate, which then arrives last (everyone else checked in).
        let candidate = m.candidate.filter(|&c| arrivals.contains(&c));
        arrivals.retain(|&s| m.expected_cpu(s) || Some(s) == candidate);
        if arrivals.is_empty() {
            if let Some(s) = (0..n).find(|&s| m.expected_cpu(s)) {
                arrivals.push(s);
            }
        }
        arrivals.sort_unstable();
        let k = if arrivals.is_empty() {
            0
        } else {
            rot as usize % arrivals.len()
        };
        arrivals.rotate_left(k);
        if let Some(c) = candidate.filter(|&c| !m.expected_cpu(c)) {
            arrivals.retain(|&s| s != c);
            arrivals.push(c);
        }
        let normal = arrivals.clone();
        let bsp = candidate.or(normal.first().copied());
        // The absent expected CPUs are reported SMI-blocked so the
        // traditional BSP does not wait for them.
        let expected: Vec<usize> = (0..n).filter(|&s| m.expected_cpu(s)).collect();
        let blocked = expected.iter().filter(|s| !normal.contains(s)).count();
        if let Some(b) = bsp {
            m.in_smi = true;
            m.bsp = b;
            m.candidate = None;
            m.stats.smis += 1;
            for &s in &normal {
                m.present[s] = true;
                if m.startup_counts {
                    m.startup[s] += 1;
                }
            }
        }
        sim.blocked.store(blocked, Ordering::SeqCst);
        for &c in &pre_init {
            sim.step(c);
        }
        (arrivals, bsp.is_some())
    };
    let r2 = runner.clone();
    sim.set_handler(move |sim, _bsp| {
        let mut r = r2.lock().unwrap();
        r.run_inside(sim);
    });
    sim.smi_stepped(&order);
    let mut r = runner.lock().unwrap();
    let m = &mut r.model;
    if has_bsp {
        // BEHAVIOUR.md §5.3 / §6.3 steps 8–9.
        for p in m.pending.iter_mut() {
            *p = OP_NONE;
        }
        m.pool.clear();
        m.smi_seq = m.smi_seq.wrapping_add(1);
        m.present.iter_mut().for_each(|p| *p = false);
        m.in_smi = false;
        m.bsp = NONE;
    }
}

fn run_case(c: &Cfg, ops: &[Op]) -> Result<(), TestCaseError> {
    let empty: Vec<usize> = (0..c.cpus)
        .filter(|&s| c.empty_mask & (1 << s) != 0)
        .collect();
    let opts = Options::new(c.cpus)
        .tokens(c.tokens)
        .clock(if c.time {
            Clock::Manual { per_pause: 0 }
        } else {
            Clock::None
        })
        .hot_plug(c.hot_plug)
        .blocking_startup(c.blocking_startup)
        .relaxed(c.relaxed)
        .empty(&empty);
    let table = processor_table(&opts);
    let sim = Sim::new(opts);
    sim.pause_limit.store(200_000, Ordering::Relaxed);
    let rets: Vec<Status> = (0..c.cpus)
        .map(|i| match c.rets[i] {
            0 => Status::SUCCESS,
            1 => Status::DEVICE_ERROR,
            _ => Status(Status::ABORTED.0 + 0x100 + i),
        })
        .collect();
    let n = c.cpus;
    let model = Model {
        n,
        cap: c.tokens as usize,
        time: c.time,
        hot_plug: c.hot_plug,
        blocking_startup: c.blocking_startup,
        now: sim.ticks.load(Ordering::SeqCst),
        records: table.clone(),
        pending: vec![OP_NONE; n],
        needs_init: vec![false; n],
        init_seq: vec![None; n],
        smi_seq: 0,
        hp_ids: table.iter().map(|r| r.processor_id).collect(),
        candidate: None,
        in_smi: false,
        bsp: NONE,
        present: vec![false; n],
        busy: vec![None; n],
        pool: Vec::new(),
        next_id: 1,
        issued: Vec::new(),
        runs: vec![0; n],
        legacy: vec![0; n],
        startup: vec![0; n],
        startup_counts: false,
        rets: rets.clone(),
        status_vars: vec![SENTINEL; STATUS_VARS],
        arrays: vec![vec![SENTINEL; n]; ARRAYS],
        token_vars: vec![0; TOKEN_VARS],
        result_out: SENTINEL,
        stats: MStats::default(),
        caller: NONE,
    };
    let runner = Arc::new(Mutex::new(Runner {
        model,
        ops: ops.iter().cloned().collect(),
        ctr: Counters::new(rets),
        token_vars: vec![std::ptr::null_mut(); TOKEN_VARS].into_boxed_slice(),
        status_vars: vec![SENTINEL; STATUS_VARS].into_boxed_slice(),
        arrays: (0..ARRAYS)
            .map(|_| vec![SENTINEL; n].into_boxed_slice())
            .collect(),
        result_out: Box::new(SENTINEL),
        failure: None,
        step_no: 0,
        reopen: None,
    }));
    // Attributes follow the time source (BEHAVIOUR.md §2.7).
    prop_assert_eq!(sim.mp().attributes, c.time as u32);
    loop {
        let next = {
            let mut r = runner.lock().unwrap();
            if r.failure.is_some() {
                break;
            }
            if let Some(smi) = r.reopen.take() {
                Some(smi)
            } else {
                let Some(op) = r.ops.pop_front() else { break };
                r.step_no += 1;
                match op {
                    Op::Toggle { mask, rot, .. } => Some((mask, rot)),
                    op => {
                        r.exec(&sim, &op);
                        r.compare(&sim);
                        None
                    }
                }
            }
        };
        if let Some((mask, rot)) = next {
            run_smi(&sim, &runner, mask, rot);
            let mut r = runner.lock().unwrap();
            r.compare(&sim);
            let inst = sim.instance();
            let balanced = inst.arrival().value() == 0
                && (0..n).all(|c| inst.run_sem(c).unwrap().value() == 0);
            if !balanced {
                r.fail("semaphores not back at zero after the SMI".into());
            }
        }
    }
    let r = runner.lock().unwrap();
    if let Some(f) = &r.failure {
        return Err(TestCaseError::fail(f.clone()));
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("MM_MP_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(800)
}

/// The seed of the sequences when `MM_MP_MODEL_SEED` is not set.
const DEFAULT_SEED: u64 = 0x6d6d_6d70_0000_0001;

/// `MM_MP_MODEL_SEED`: unset → [`DEFAULT_SEED`]; a decimal or `0x` hex
/// number → that seed; `random` → a seed from the clock.
fn seed() -> u64 {
    let Ok(v) = std::env::var("MM_MP_MODEL_SEED") else {
        return DEFAULT_SEED;
    };
    let v = v.trim();
    if v == "random" {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_secs() ^ ((t.subsec_nanos() as u64) << 32);
    }
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.unwrap_or_else(|_| {
        panic!("MM_MP_MODEL_SEED={v:?}: expected a decimal or 0x hex number, or `random`")
    })
}

/// The command that plays the same sequences again.
fn replay_command(seed: u64, cases: u32) -> String {
    format!(
        "MM_MP_MODEL_SEED={seed:#x} MM_MP_MODEL_CASES={cases} \
         cargo test --release --test model library_follows_the_model -- --nocapture"
    )
}

/// BEHAVIOUR.md §2–§5 against the model, `MM_MP_MODEL_CASES` random sequences.
#[test]
fn library_follows_the_model() {
    let start = std::time::Instant::now();
    let cases = cases();
    let seed = seed();
    eprintln!(
        "model: seed {seed:#x}, {cases} sequences; replay: {}",
        replay_command(seed, cases)
    );
    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        max_shrink_iters: 4096,
        ..Config::default()
    });
    let ops_done = AtomicUsize::new(0);
    // Most sequences start with an SMI (calls outside one are one status).
    let ops = (
        prop::bool::weighted(0.8),
        any::<u8>(),
        prop::collection::vec(op(), 1..120),
    )
        .prop_map(|(smi, rot, mut ops)| {
            if smi {
                ops.insert(
                    0,
                    Op::Toggle {
                        mask: 0xff,
                        rot,
                        reopen: true,
                    },
                );
            }
            ops
        });
    let result = runner.run(&(cfg(), ops), |(c, ops)| {
        ops_done.fetch_add(ops.len(), Ordering::Relaxed);
        run_case(&c, &ops)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, (c, ops))) => {
            let steps: Vec<String> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| format!("  {:>3}. {op:?}", i + 1))
                .collect();
            panic!(
                "model: FAILED with seed {seed:#x}: {reason}\n\
                 minimal failing sequence, {} operations on {c:?}:\n{}\n\
                 replay: {}\n\
                 (the case was also added to tests/model.proptest-regressions, \
                 which every later run replays first)",
                ops.len(),
                steps.join("\n"),
                replay_command(seed, cases)
            );
        }
        Err(e) => panic!("model: seed {seed:#x}: {e}"),
    }
    let cov = COVERAGE.lock().unwrap();
    for (k, v) in cov.iter() {
        eprintln!("  {v:>9}  {k}");
    }
    // The generator must keep reaching the interesting rows (a model test
    // that only ever sees INVALID_PARAMETER would prove little).
    if cases >= 300 {
        for row in [
            "DispatchProcedure -> EFI_SUCCESS",
            "DispatchProcedure -> EFI_NOT_READY",
            "DispatchProcedure -> EFI_ALREADY_STARTED",
            "DispatchProcedure -> EFI_OUT_OF_RESOURCES",
            "BroadcastProcedure -> EFI_SUCCESS",
            "BroadcastProcedure -> EFI_NOT_STARTED",
            "BroadcastProcedure -> EFI_ALREADY_STARTED",
            "CheckForProcedure -> EFI_SUCCESS",
            "CheckForProcedure -> EFI_NOT_READY",
            "CheckForProcedure -> EFI_TIMEOUT",
            "CheckForProcedure -> EFI_NOT_FOUND",
            "WaitForProcedure -> EFI_SUCCESS",
            "MmMpGetTokenResult -> EFI_SUCCESS",
            "MmStartupThisAp -> EFI_SUCCESS",
            "AddProcessor -> EFI_SUCCESS",
            "RemoveProcessor -> EFI_SUCCESS",
            "SwitchBsp -> EFI_SUCCESS",
            "WhoAmI -> EFI_SUCCESS",
        ] {
            assert!(
                cov.get(row).copied().unwrap_or(0) > 0,
                "never reached: {row}"
            );
        }
    }
    eprintln!(
        "model: {cases} sequences, {} operations, {:.1} s",
        ops_done.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
}
