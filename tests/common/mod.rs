//! The simulated machine shared by the host tests.
//!
//! * CPUs are numbered slots; CPU `i` has APIC ID `apic(i)` (deliberately
//!   not equal to `i`).
//! * `GetApicId` answers with the CPU the current thread plays
//!   (`CURRENT_CPU`), so caller checks work in both modes below.
//! * Real-thread mode: [`Sim::smi`] runs one thread per arriving CPU, each
//!   calling `MmMpSmiRendezvous`; `CpuPause` yields.
//! * Deterministic mode: [`Sim::smi_stepped`] plays every CPU on the test
//!   thread, calling `rendezvous_step` in the order the test picks; while a
//!   CPU waits inside a service (blocking dispatch, Wait), `CpuPause` steps
//!   the other CPUs. Handlers can also step a CPU explicitly
//!   ([`Sim::step`]) to pick an exact interleaving.
//! * Time: a manual clock (advanced by the test or by each pause) or none.
#![allow(dead_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use mm_mp::efi::{
    ApProcedure, ApProcedure2, Boolean, CpuInterruptHandler, CpuPhysicalLocation,
    CpuPhysicalLocation2, ExceptionType, ExtendedProcessorInformation, MmCompletion, MmMpProtocol,
    ProcessorInformation, SmmCpuServiceProtocol, Status, INVALID_APIC_ID,
};
use mm_mp::ffi::*;
use mm_mp::platform::{MmMpConfig, MmMpPlatform, MM_MP_CONFIG_REVISION, MM_MP_PLATFORM_REVISION};
use mm_mp::{Instance, Poll};

pub const NONE: usize = usize::MAX;

thread_local! {
    /// The CPU the current thread is playing.
    pub static CURRENT_CPU: Cell<usize> = const { Cell::new(NONE) };
}

pub fn current_cpu() -> usize {
    CURRENT_CPU.with(|c| c.get())
}

pub fn apic(cpu: usize) -> u64 {
    0x100 + cpu as u64 * 2
}

/// How time behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Clock {
    /// No time source: no timeouts (EDK2 behaviour).
    None,
    /// Ticks advance only when the test (or a pause, by `per_pause`) says so.
    Manual { per_pause: u64 },
    /// Real monotonic nanoseconds.
    Real,
}

/// Options of a simulated machine.
#[derive(Clone, Debug)]
pub struct Options {
    pub cpus: usize,
    pub tokens: u32,
    pub line: u32,
    pub relaxed: bool,
    pub election: bool,
    pub fixed_bsp: u32,
    pub blocking_startup: bool,
    pub clock: Clock,
    /// `ApSyncTimeoutUs`, the first arrival timeout.
    pub timeout_us: u64,
    /// `ApSyncTimeout2Us`; `None`: the same as the first.
    pub timeout2_us: Option<u64>,
    pub empty: Vec<usize>,
    /// Install a GetApicId hook (caller checks).
    pub apic_hook: bool,
    /// Install an IsSyncAlwaysNeeded hook answering `Sim::sync_needed`.
    pub sync_needed_hook: bool,
    pub mtrrs: bool,
    /// `MM_MP_CONFIG.HotPlugSupport`.
    pub hot_plug_support: bool,
    /// Pass the Sim's HotPlugApicId array (`Sim::hot_plug_ids`) in the config.
    pub hot_plug_array: bool,
    /// Install the GetProcessorLocation hook (`location_of`).
    pub location_hook: bool,
    /// Install the RegisterExceptionHandler hook (`Sim::exception_handlers`).
    pub exception_hook: bool,
}

impl Options {
    pub fn new(cpus: usize) -> Self {
        Options {
            cpus,
            tokens: 64,
            line: 64,
            relaxed: false,
            election: true,
            fixed_bsp: 0,
            blocking_startup: false,
            clock: Clock::None,
            timeout_us: 1000,
            timeout2_us: None,
            empty: Vec::new(),
            apic_hook: true,
            sync_needed_hook: false,
            mtrrs: false,
            hot_plug_support: false,
            hot_plug_array: true,
            location_hook: true,
            exception_hook: true,
        }
    }
    pub fn hot_plug(mut self, h: bool) -> Self {
        self.hot_plug_support = h;
        self
    }
    pub fn hot_plug_array(mut self, a: bool) -> Self {
        self.hot_plug_array = a;
        self
    }
    pub fn location_hook(mut self, l: bool) -> Self {
        self.location_hook = l;
        self
    }
    pub fn exception_hook(mut self, e: bool) -> Self {
        self.exception_hook = e;
        self
    }
    pub fn mtrrs(mut self, m: bool) -> Self {
        self.mtrrs = m;
        self
    }
    pub fn sync_needed_hook(mut self, h: bool) -> Self {
        self.sync_needed_hook = h;
        self
    }
    pub fn timeout_us(mut self, t: u64) -> Self {
        self.timeout_us = t;
        self
    }
    /// Distinct first and second timeouts. A short first and a long second
    /// timeout keep a test that pulls CPUs in with SMI IPIs quick without
    /// making it depend on how soon a loaded host schedules their threads.
    pub fn timeouts_us(mut self, first: u64, second: u64) -> Self {
        self.timeout_us = first;
        self.timeout2_us = Some(second);
        self
    }
    pub fn relaxed(mut self, r: bool) -> Self {
        self.relaxed = r;
        self
    }
    pub fn fixed_bsp(mut self, bsp: u32) -> Self {
        self.election = false;
        self.fixed_bsp = bsp;
        self
    }
    pub fn tokens(mut self, n: u32) -> Self {
        self.tokens = n;
        self
    }
    pub fn clock(mut self, c: Clock) -> Self {
        self.clock = c;
        self
    }
    pub fn empty(mut self, slots: &[usize]) -> Self {
        self.empty = slots.to_vec();
        self
    }
    pub fn blocking_startup(mut self, b: bool) -> Self {
        self.blocking_startup = b;
        self
    }
}

type Handler = Box<dyn Fn(&Sim, usize) + Send + Sync>;
/// See `Sim::tick_hook`.
pub type TickHook = Box<dyn Fn(&Sim) -> bool + Send + Sync>;

/// Deterministic scheduler state.
#[derive(Default)]
struct Sched {
    /// Stepping order (CPU indices, cycled).
    order: Vec<usize>,
    next: usize,
    done: Vec<bool>,
    /// CPUs whose step is on the (single) stack right now.
    active: Vec<usize>,
    /// Inside a stepped SMI (pause hook steps other CPUs).
    enabled: bool,
    /// CPUs the pause hook must not step (a CPU "stuck" elsewhere).
    frozen: Vec<usize>,
}

pub struct Sim {
    pub opts: Options,
    buf: *mut u8,
    buf_layout: Layout,
    pub inst: *mut MmMpInstance,
    handler: Mutex<Option<Handler>>,
    pub ticks: AtomicU64,
    start: std::time::Instant,
    pub ipis: Mutex<Vec<u64>>,
    /// The clock's ticks when each of `ipis` was sent.
    pub ipi_ticks: Mutex<Vec<u64>>,
    pub logs: Mutex<Vec<String>>,
    stepping: AtomicBool,
    pub entries: AtomicUsize,
    pub exits: AtomicUsize,
    /// BeforeMmiHandler calls.
    pub before_mmi: AtomicUsize,
    /// What the IsSyncAlwaysNeeded hook answers (with `sync_needed_hook`).
    pub sync_needed: AtomicBool,
    pub foundation_calls: AtomicUsize,
    pub smi_valid: AtomicBool,
    /// Machine mode: an SMI source is pending (IsValidSmi answers it when
    /// `source_validity` is set; ClearTopLevelSmiStatus clears it).
    pub source: AtomicBool,
    pub source_validity: AtomicBool,
    /// Per CPU: an SMI is pending for it (set by SMI sources and IPIs).
    pub pending: Vec<AtomicBool>,
    /// Per CPU: its thread is inside MmMpSmiRendezvous.
    pub in_smm: Vec<AtomicBool>,
    /// Per CPU: it takes no SMI (a missing CPU).
    pub dead: Vec<AtomicBool>,
    /// Deliver SMI IPIs by setting `pending` (machine mode).
    pub deliver_ipis: AtomicBool,
    /// Per CPU MTRR hook calls: save, replace, restore.
    pub mtrr_calls: Vec<[AtomicUsize; 3]>,
    /// The MTRR hooks and BeforeMmiHandler in the order they were
    /// called: 0 save, 1 replace, 2 restore, 3 BeforeMmiHandler (the
    /// latter only when MTRR swapping is configured).
    pub mtrr_log: Mutex<Vec<usize>>,
    /// BspElection hook: CPU the platform names (NONE = no preference).
    pub preferred_bsp: AtomicUsize,
    /// GetSmmDelayedBlockedDisabledCount: blocked CPUs reported.
    pub blocked: AtomicUsize,
    /// The platform's HotPlugApicId array (EDK2 CPU_HOT_PLUG_DATA.ApicId):
    /// `apic(i)` for populated slots, INVALID_APIC_ID for free ones. Owned
    /// here so the pointer in the config stays valid.
    pub hot_plug_ids: Box<[AtomicU64]>,
    /// RegisterExceptionHandler hook calls: (type, handler address).
    pub exception_handlers: Mutex<Vec<(ExceptionType, usize)>>,
    /// Pause watchdog: when non-zero, more than this many `CpuPause` calls
    /// since the last `Sim::reset_watchdog` abort the process (a test whose
    /// expectation is wrong must not spin for ever inside a callback, where
    /// a panic cannot unwind).
    pub pause_limit: AtomicU64,
    pauses: AtomicU64,
    sched: Mutex<Sched>,
    /// Called on every GetTicks until it returns `true` (then removed).
    pub tick_hook: Mutex<Option<TickHook>>,
}

// SAFETY (test code): the instance is shared by design; the raw buffer is
// owned by the Sim and freed in Drop after every thread is joined.
unsafe impl Sync for Sim {}
unsafe impl Send for Sim {}

fn sim_of<'a>(ctx: *mut c_void) -> &'a Sim {
    // SAFETY: every callback gets the context we registered: a live Sim.
    unsafe { &*(ctx as *const Sim) }
}

unsafe extern "efiapi" fn cb_ticks(ctx: *mut c_void) -> u64 {
    let sim = sim_of(ctx);
    // A test's hook runs first: it may step other CPUs at the exact moment
    // a CPU reads the clock (deterministic races).
    let hook = sim.tick_hook.lock().unwrap().take();
    if let Some(h) = hook {
        if !h(sim) {
            *sim.tick_hook.lock().unwrap() = Some(h);
        }
    }
    match sim.opts.clock {
        Clock::Real => sim.start.elapsed().as_nanos() as u64,
        _ => sim.ticks.load(Ordering::SeqCst),
    }
}

unsafe extern "efiapi" fn cb_pause(ctx: *mut c_void) {
    let sim = sim_of(ctx);
    let limit = sim.pause_limit.load(Ordering::Relaxed);
    if limit != 0 && sim.pauses.fetch_add(1, Ordering::Relaxed) >= limit {
        eprintln!("pause watchdog: more than {limit} pauses in one call");
        std::process::abort();
    }
    if let Clock::Manual { per_pause } = sim.opts.clock {
        sim.ticks.fetch_add(per_pause, Ordering::SeqCst);
    }
    if !sim.step_someone_else() {
        std::thread::yield_now();
    }
}

unsafe extern "efiapi" fn cb_apic(_ctx: *mut c_void) -> u64 {
    let c = current_cpu();
    if c == NONE {
        INVALID_APIC_ID
    } else {
        apic(c)
    }
}

unsafe extern "efiapi" fn cb_ipi(ctx: *mut c_void, apic_id: u64) {
    let sim = sim_of(ctx);
    sim.ipis.lock().unwrap().push(apic_id);
    sim.ipi_ticks
        .lock()
        .unwrap()
        .push(sim.ticks.load(Ordering::SeqCst));
    if sim.deliver_ipis.load(Ordering::SeqCst) {
        if let Some(p) = sim.pending.get(cpu_of_apic(apic_id)) {
            p.store(true, Ordering::SeqCst);
        }
    }
}

unsafe extern "efiapi" fn cb_valid(ctx: *mut c_void) -> Boolean {
    let sim = sim_of(ctx);
    if sim.source_validity.load(Ordering::SeqCst) {
        return Boolean::from(sim.source.load(Ordering::SeqCst));
    }
    Boolean::from(sim.smi_valid.load(Ordering::SeqCst))
}

unsafe extern "efiapi" fn cb_clear_status(ctx: *mut c_void) -> Boolean {
    Boolean::from(sim_of(ctx).source.swap(false, Ordering::SeqCst))
}

/// `Sim::preferred_bsp` value: the election hook answers TRUE to every CPU
/// that asks.
pub const EVERY_CPU: usize = usize::MAX - 1;

unsafe extern "efiapi" fn cb_election(ctx: *mut c_void, is_bsp: *mut Boolean) -> Status {
    let want = sim_of(ctx).preferred_bsp.load(Ordering::SeqCst);
    if want == NONE {
        return Status::NOT_READY;
    }
    // SAFETY: the library passes a valid out-pointer.
    unsafe { *is_bsp = Boolean::from(want == EVERY_CPU || current_cpu() == want) };
    Status::SUCCESS
}

unsafe extern "efiapi" fn cb_counts(
    ctx: *mut c_void,
    delayed: *mut u32,
    blocked: *mut u32,
    disabled: *mut u32,
) {
    // SAFETY: the library passes valid out-pointers.
    unsafe {
        *delayed = 0;
        *blocked = sim_of(ctx).blocked.load(Ordering::SeqCst) as u32;
        *disabled = 0;
    }
}

fn mtrr(ctx: *mut c_void, cpu: usize, which: usize) {
    let sim = sim_of(ctx);
    if let Some(c) = sim.mtrr_calls.get(cpu) {
        c[which].fetch_add(1, Ordering::SeqCst);
    }
    sim.mtrr_log.lock().unwrap().push(which);
}

unsafe extern "efiapi" fn cb_mtrr_save(ctx: *mut c_void, cpu: usize) {
    mtrr(ctx, cpu, 0)
}

unsafe extern "efiapi" fn cb_mtrr_replace(ctx: *mut c_void, cpu: usize) {
    mtrr(ctx, cpu, 1)
}

unsafe extern "efiapi" fn cb_mtrr_restore(ctx: *mut c_void, cpu: usize) {
    mtrr(ctx, cpu, 2)
}

/// The location the GetProcessorLocation hook reports for an APIC ID.
pub fn location_of(apic_id: u64) -> (CpuPhysicalLocation, CpuPhysicalLocation2) {
    let c = cpu_of_apic(apic_id) as u32;
    (
        CpuPhysicalLocation {
            package: 1,
            core: c,
            thread: 7,
        },
        CpuPhysicalLocation2 {
            package: 1,
            module: 2,
            tile: 3,
            die: 4,
            core: c,
            thread: 7,
        },
    )
}

unsafe extern "efiapi" fn cb_location(
    _ctx: *mut c_void,
    apic_id: u64,
    location: *mut CpuPhysicalLocation,
    location2: *mut CpuPhysicalLocation2,
) -> Status {
    let (l, l2) = location_of(apic_id);
    // SAFETY: the library passes valid out-pointers.
    unsafe {
        *location = l;
        *location2 = l2;
    }
    Status::SUCCESS
}

unsafe extern "efiapi" fn cb_register_exception(
    ctx: *mut c_void,
    exception_type: ExceptionType,
    handler: CpuInterruptHandler,
) -> Status {
    let h = handler.map_or(0, |f| f as usize);
    sim_of(ctx)
        .exception_handlers
        .lock()
        .unwrap()
        .push((exception_type, h));
    Status::SUCCESS
}

pub fn cpu_of_apic(apic_id: u64) -> usize {
    (apic_id.wrapping_sub(0x100) / 2) as usize
}

unsafe extern "efiapi" fn cb_entry(ctx: *mut c_void, _cpu: usize) {
    sim_of(ctx).entries.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "efiapi" fn cb_exit(ctx: *mut c_void, _cpu: usize) {
    sim_of(ctx).exits.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "efiapi" fn cb_before_mmi(ctx: *mut c_void, _cpu: usize) {
    let sim = sim_of(ctx);
    sim.before_mmi.fetch_add(1, Ordering::SeqCst);
    if sim.opts.mtrrs {
        sim.mtrr_log.lock().unwrap().push(3);
    }
}

unsafe extern "efiapi" fn cb_sync_needed(ctx: *mut c_void) -> Boolean {
    Boolean::from(sim_of(ctx).sync_needed.load(Ordering::SeqCst))
}

unsafe extern "efiapi" fn cb_foundation(ctx: *mut c_void, bsp: usize) {
    let sim = sim_of(ctx);
    sim.foundation_calls.fetch_add(1, Ordering::SeqCst);
    let guard = sim.handler.lock().unwrap();
    if let Some(h) = guard.as_ref() {
        h(sim, bsp);
    }
}

unsafe extern "efiapi" fn cb_log(ctx: *mut c_void, _level: usize, msg: *const std::ffi::c_char) {
    // SAFETY: the library passes NUL-terminated static strings.
    let s = unsafe { std::ffi::CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    sim_of(ctx).logs.lock().unwrap().push(s);
}

pub fn processor_table(opts: &Options) -> Vec<ProcessorInformation> {
    (0..opts.cpus)
        .map(|i| {
            let mut p = ProcessorInformation::EMPTY;
            if !opts.empty.contains(&i) {
                p.processor_id = apic(i);
                p.status_flag = 0x6;
                p.location = CpuPhysicalLocation {
                    package: 0,
                    core: i as u32,
                    thread: 0,
                };
                p.extended_information = ExtendedProcessorInformation {
                    location2: mm_mp::efi::CpuPhysicalLocation2 {
                        core: i as u32,
                        ..Default::default()
                    },
                };
            }
            p
        })
        .collect()
}

pub fn config(opts: &Options, table: &[ProcessorInformation]) -> MmMpConfig {
    MmMpConfig {
        revision: MM_MP_CONFIG_REVISION,
        number_of_cpus: opts.cpus as u32,
        max_tokens: opts.tokens,
        cache_line_size: opts.line,
        sync_mode: opts.relaxed as u32,
        bsp_index: opts.fixed_bsp,
        bsp_election: Boolean::from(opts.election),
        hot_plug_support: Boolean::from(opts.hot_plug_support),
        blocking_startup_this_ap: Boolean::from(opts.blocking_startup),
        configure_mtrrs: Boolean::from(opts.mtrrs),
        reserved: 0,
        ap_sync_timeout_us: opts.timeout_us,
        ap_sync_timeout2_us: opts.timeout2_us.unwrap_or(opts.timeout_us),
        processor_info: table.as_ptr(),
        hot_plug_apic_id: std::ptr::null_mut(),
    }
}

pub fn platform(opts: &Options, ctx: *mut c_void) -> MmMpPlatform {
    MmMpPlatform {
        revision: MM_MP_PLATFORM_REVISION,
        reserved: 0,
        context: ctx,
        ticks_per_second: if opts.clock == Clock::None {
            0
        } else {
            1_000_000_000
        },
        get_ticks: if opts.clock == Clock::None {
            None
        } else {
            Some(cb_ticks)
        },
        cpu_pause: Some(cb_pause),
        get_apic_id: if opts.apic_hook { Some(cb_apic) } else { None },
        send_smi_ipi: Some(cb_ipi),
        is_valid_smi: Some(cb_valid),
        clear_top_level_smi_status: Some(cb_clear_status),
        bsp_election: Some(cb_election),
        rendezvous_entry: Some(cb_entry),
        rendezvous_exit: Some(cb_exit),
        before_mmi_handler: Some(cb_before_mmi),
        is_sync_always_needed: if opts.sync_needed_hook {
            Some(cb_sync_needed)
        } else {
            None
        },
        get_smm_delayed_blocked_disabled_count: Some(cb_counts),
        mtrr_save: Some(cb_mtrr_save),
        mtrr_replace: Some(cb_mtrr_replace),
        mtrr_restore: Some(cb_mtrr_restore),
        mm_foundation_entry: Some(cb_foundation),
        get_processor_location: if opts.location_hook {
            Some(cb_location)
        } else {
            None
        },
        register_exception_handler: if opts.exception_hook {
            Some(cb_register_exception)
        } else {
            None
        },
        fatal: None,
        log: Some(cb_log),
    }
}

impl Sim {
    pub fn new(opts: Options) -> Box<Sim> {
        let table = processor_table(&opts);
        let mut cfg = config(&opts, &table);
        let mut size = 0usize;
        // SAFETY: valid pointers to locals.
        let st = unsafe { MmMpGetRequiredSize(&cfg, &mut size) };
        assert_eq!(st, Status::SUCCESS);
        let line = if opts.line == 0 {
            64
        } else {
            opts.line as usize
        };
        let buf_layout = Layout::from_size_align(size, line).unwrap();
        // SAFETY: non-zero size.
        let buf = unsafe { alloc_zeroed(buf_layout) };
        let mut sim = Box::new(Sim {
            opts: opts.clone(),
            buf,
            buf_layout,
            inst: std::ptr::null_mut(),
            handler: Mutex::new(None),
            ticks: AtomicU64::new(1000),
            start: std::time::Instant::now(),
            ipis: Mutex::new(Vec::new()),
            ipi_ticks: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
            stepping: AtomicBool::new(false),
            entries: AtomicUsize::new(0),
            exits: AtomicUsize::new(0),
            before_mmi: AtomicUsize::new(0),
            sync_needed: AtomicBool::new(true),
            foundation_calls: AtomicUsize::new(0),
            smi_valid: AtomicBool::new(true),
            source: AtomicBool::new(false),
            source_validity: AtomicBool::new(false),
            pending: (0..opts.cpus).map(|_| AtomicBool::new(false)).collect(),
            in_smm: (0..opts.cpus).map(|_| AtomicBool::new(false)).collect(),
            dead: (0..opts.cpus).map(|_| AtomicBool::new(false)).collect(),
            deliver_ipis: AtomicBool::new(false),
            mtrr_calls: (0..opts.cpus).map(|_| Default::default()).collect(),
            mtrr_log: Mutex::new(Vec::new()),
            preferred_bsp: AtomicUsize::new(NONE),
            blocked: AtomicUsize::new(0),
            hot_plug_ids: table
                .iter()
                .map(|p| AtomicU64::new(p.processor_id))
                .collect(),
            exception_handlers: Mutex::new(Vec::new()),
            pause_limit: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            sched: Mutex::new(Sched::default()),
            tick_hook: Mutex::new(None),
        });
        if opts.hot_plug_array {
            // AtomicU64 has the layout of u64; the Sim owns the array for
            // the instance's whole life.
            cfg.hot_plug_apic_id = sim.hot_plug_ids.as_ptr() as *mut u64;
        }
        let ctx = &*sim as *const Sim as *mut c_void;
        let plat = platform(&opts, ctx);
        let mut inst = std::ptr::null_mut();
        // SAFETY: buffer of the required size, aligned; tables valid.
        let st = unsafe { MmMpInitialize(buf as *mut c_void, size, &cfg, &plat, &mut inst) };
        assert_eq!(st, Status::SUCCESS);
        sim.inst = inst;
        sim
    }

    pub fn instance(&self) -> &Instance {
        // SAFETY: initialised in `new`, lives as long as the Sim.
        unsafe { Instance::from_ptr(self.inst as *const Instance) }.unwrap()
    }

    pub fn mp(&self) -> &MmMpProtocol {
        // SAFETY: valid instance.
        unsafe { &*MmMpGetMmMpProtocol(self.inst) }
    }

    pub fn set_handler(&self, h: impl Fn(&Sim, usize) + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Some(Box::new(h));
    }

    pub fn advance(&self, ticks: u64) {
        self.ticks.fetch_add(ticks, Ordering::SeqCst);
    }

    // -- real threads ---------------------------------------------------------

    /// One SMI on real threads: every CPU in `cpus` enters (all at once).
    pub fn smi(&self, cpus: &[usize]) {
        std::thread::scope(|s| {
            for &c in cpus {
                s.spawn(move || {
                    CURRENT_CPU.with(|cc| cc.set(c));
                    // SAFETY: valid instance.
                    unsafe { MmMpSmiRendezvous(self.inst, c) };
                    CURRENT_CPU.with(|cc| cc.set(NONE));
                });
            }
        });
    }

    /// One SMI where every non-empty slot enters.
    pub fn smi_all(&self) {
        let cpus: Vec<usize> = (0..self.opts.cpus)
            .filter(|c| !self.opts.empty.contains(c))
            .collect();
        self.smi(&cpus);
    }

    // -- deterministic stepping --------------------------------------------------

    /// Step CPU `cpu` once on this thread; returns whether it left SMM.
    pub fn step(&self, cpu: usize) -> bool {
        {
            let mut s = self.sched.lock().unwrap();
            assert!(
                !s.active.contains(&cpu),
                "CPU {cpu} is already on the stack"
            );
            s.active.push(cpu);
        }
        let prev = CURRENT_CPU.with(|c| c.replace(cpu));
        let ready = self.instance().rendezvous_step(cpu) == Poll::Ready;
        CURRENT_CPU.with(|c| c.set(prev));
        let mut s = self.sched.lock().unwrap();
        s.active.retain(|&c| c != cpu);
        if ready && cpu < s.done.len() {
            s.done[cpu] = true;
        }
        ready
    }

    /// Called from the pause hook: step the next runnable CPU of the order.
    fn step_someone_else(&self) -> bool {
        if !self.stepping.load(Ordering::SeqCst) {
            return false;
        }
        let pick = {
            let mut s = self.sched.lock().unwrap();
            if !s.enabled || s.order.is_empty() {
                return false;
            }
            let n = s.order.len();
            let mut pick = None;
            for k in 0..n {
                let c = s.order[(s.next + k) % n];
                if !s.done[c] && !s.active.contains(&c) && !s.frozen.contains(&c) {
                    pick = Some(c);
                    s.next = (s.next + k + 1) % n;
                    break;
                }
            }
            pick
        };
        match pick {
            Some(c) => {
                self.step(c);
                true
            }
            None => false,
        }
    }

    /// One SMI played on this thread, CPUs stepped round-robin in `order`
    /// (CPUs not in `order` never arrive). Panics after `limit` rounds.
    pub fn smi_stepped(&self, order: &[usize]) {
        self.schedule(order, None);
        let mut rounds = 0;
        loop {
            let all_done = {
                let s = self.sched.lock().unwrap();
                order.iter().all(|&c| s.done[c])
            };
            if all_done {
                break;
            }
            rounds += 1;
            assert!(rounds < 1_000_000, "stepped SMI did not finish");
            for &c in order {
                let skip = self.sched.lock().unwrap().done[c];
                if !skip {
                    self.step(c);
                }
            }
            if let Clock::Manual { per_pause } = self.opts.clock {
                self.advance(per_pause);
            }
        }
        self.unschedule();
    }

    /// One SMI of CPU `cpu` as in production (`MmMpSmiRendezvous` on this
    /// thread) while its pauses step the CPUs of `order` round-robin.
    /// Returns when `cpu` left SMM; `stepped_done` tells which of the
    /// others did.
    pub fn smi_here(&self, cpu: usize, order: &[usize]) {
        self.schedule(order, Some(cpu));
        let prev = CURRENT_CPU.with(|c| c.replace(cpu));
        // SAFETY: valid instance.
        unsafe { MmMpSmiRendezvous(self.inst, cpu) };
        CURRENT_CPU.with(|c| c.set(prev));
        self.unschedule();
    }

    /// Whether stepped CPU `cpu` left SMM in the last scheduled SMI.
    pub fn stepped_done(&self, cpu: usize) -> bool {
        self.sched.lock().unwrap().done.get(cpu) == Some(&true)
    }

    /// Let the pause hook step the CPUs of `order`; `running` is a CPU on
    /// this thread's stack that it must not step.
    fn schedule(&self, order: &[usize], running: Option<usize>) {
        {
            let mut s = self.sched.lock().unwrap();
            s.order = order.to_vec();
            s.next = 0;
            s.done = vec![false; self.opts.cpus];
            s.active = running.into_iter().collect();
            s.enabled = true;
        }
        self.stepping.store(true, Ordering::SeqCst);
    }

    fn unschedule(&self) {
        {
            let mut s = self.sched.lock().unwrap();
            s.active.clear();
            s.enabled = false;
        }
        self.stepping.store(false, Ordering::SeqCst);
    }

    /// Start a new watchdog period (see `pause_limit`).
    pub fn reset_watchdog(&self) {
        self.pauses.store(0, Ordering::Relaxed);
    }

    /// Keep the pause hook from stepping `cpu` (or allow it again).
    pub fn freeze(&self, cpu: usize, frozen: bool) {
        let mut s = self.sched.lock().unwrap();
        s.frozen.retain(|&c| c != cpu);
        if frozen {
            s.frozen.push(cpu);
        }
    }

    /// Run `f` as if CPU `cpu` were calling (GetApicId answers for it).
    pub fn as_cpu<R>(&self, cpu: usize, f: impl FnOnce() -> R) -> R {
        let prev = CURRENT_CPU.with(|c| c.replace(cpu));
        let r = f();
        CURRENT_CPU.with(|c| c.set(prev));
        r
    }

    /// Whether AP `cpu` is present for every service: its present flag
    /// (what DispatchProcedure checks) and its broadcast bit (what a
    /// broadcast's snapshot reads). The AP sets the bit just after the flag
    /// (`Broadcasts::join`); a broadcast between the two does not include
    /// it yet, so a test that waits for APs before broadcasting to them
    /// waits for this (with real threads the AP can be preempted between
    /// the two stores).
    pub fn joined(&self, cpu: usize) -> bool {
        let inst = self.instance();
        let (word, bit) = mm_mp::broadcast::bit_of(cpu);
        inst.cpu(cpu).is_some_and(|s| s.is_present())
            && inst
                .broadcasts()
                .present
                .get(word)
                .is_some_and(|w| w.load(Ordering::Acquire) & bit != 0)
    }

    /// Pause until `cond` holds, stepping other CPUs (deterministic mode).
    pub fn pump_until(&self, mut cond: impl FnMut() -> bool) {
        for _ in 0..1_000_000 {
            if cond() {
                return;
            }
            // SAFETY: context is this Sim.
            unsafe { cb_pause(self as *const Sim as *mut c_void) };
        }
        panic!("condition never held");
    }

    // -- protocol calls through the C ABI -------------------------------------

    pub fn dispatch(
        &self,
        p: ApProcedure2,
        cpu: usize,
        timeout: usize,
        arg: *mut c_void,
        token: Option<&mut MmCompletion>,
        status: Option<&mut Status>,
    ) -> Status {
        let mp = self.mp();
        // SAFETY: calling our own protocol with valid or NULL pointers.
        unsafe {
            (mp.dispatch_procedure)(
                mp,
                p,
                cpu,
                timeout,
                arg,
                token.map_or(std::ptr::null_mut(), |t| t as *mut _),
                status.map_or(std::ptr::null_mut(), |s| s as *mut _),
            )
        }
    }

    pub fn broadcast(
        &self,
        p: ApProcedure2,
        timeout: usize,
        arg: *mut c_void,
        token: Option<&mut MmCompletion>,
        status: Option<&mut [Status]>,
    ) -> Status {
        let mp = self.mp();
        // SAFETY: calling our own protocol with valid or NULL pointers.
        unsafe {
            (mp.broadcast_procedure)(
                mp,
                p,
                timeout,
                arg,
                token.map_or(std::ptr::null_mut(), |t| t as *mut _),
                status.map_or(std::ptr::null_mut(), |s| s.as_mut_ptr()),
            )
        }
    }

    pub fn check(&self, token: MmCompletion) -> Status {
        let mp = self.mp();
        // SAFETY: our protocol.
        unsafe { (mp.check_for_procedure)(mp, token) }
    }

    pub fn wait(&self, token: MmCompletion) -> Status {
        let mp = self.mp();
        // SAFETY: our protocol.
        unsafe { (mp.wait_for_procedure)(mp, token) }
    }

    pub fn token_result(&self, token: MmCompletion) -> (Status, Status) {
        let mut r = Status(0x5a5a);
        // SAFETY: valid instance and out-pointer.
        let st = unsafe { MmMpGetTokenResult(self.inst, token, &mut r) };
        (st, r)
    }

    pub fn startup_this_ap(&self, p: ApProcedure, cpu: usize, arg: *mut c_void) -> Status {
        // SAFETY: valid instance.
        unsafe { MmMpStartupThisAp(self.inst, p, cpu, arg) }
    }

    pub fn blocking_startup_this_ap(&self, p: ApProcedure, cpu: usize, arg: *mut c_void) -> Status {
        // SAFETY: valid instance.
        unsafe { MmMpBlockingStartupThisAp(self.inst, p, cpu, arg) }
    }

    pub fn set_startup(&self, p: ApProcedure, arg: *mut c_void) -> Status {
        let mp = self.mp();
        // SAFETY: our protocol.
        unsafe { (mp.set_startup_procedure)(mp, p, arg) }
    }

    pub fn number_of_processors(&self) -> (Status, usize) {
        let mp = self.mp();
        let mut n = 0usize;
        // SAFETY: our protocol.
        let st = unsafe { (mp.get_number_of_processors)(mp, &mut n) };
        (st, n)
    }

    pub fn current_bsp(&self) -> usize {
        // SAFETY: valid instance.
        unsafe { MmMpGetCurrentBsp(self.inst) }
    }

    // -- EFI_SMM_CPU_SERVICE_PROTOCOL through the C ABI -------------------------

    pub fn cs(&self) -> &SmmCpuServiceProtocol {
        // SAFETY: valid instance; the protocol lives in it.
        unsafe { &*MmMpGetCpuServiceProtocol(self.inst) }
    }

    /// The platform's hot-plug handler reserves `slot` for `apic_id`.
    pub fn set_hot_plug_id(&self, slot: usize, apic_id: u64) {
        self.hot_plug_ids[slot].store(apic_id, Ordering::SeqCst);
    }

    pub fn hot_plug_id(&self, slot: usize) -> u64 {
        self.hot_plug_ids[slot].load(Ordering::SeqCst)
    }

    pub fn processor_info(&self, n: usize) -> (Status, ProcessorInformation) {
        let cs = self.cs();
        let mut info = ProcessorInformation::EMPTY;
        info.processor_id = 0x5a5a;
        // SAFETY: our protocol, valid out-pointer.
        let st = unsafe { (cs.get_processor_info)(cs, n, &mut info) };
        (st, info)
    }

    pub fn switch_bsp(&self, n: usize) -> Status {
        let cs = self.cs();
        // SAFETY: our protocol.
        unsafe { (cs.switch_bsp)(cs, n) }
    }

    pub fn add_processor(&self, apic_id: u64) -> (Status, usize) {
        let cs = self.cs();
        let mut n = NONE;
        // SAFETY: our protocol, valid out-pointer.
        let st = unsafe { (cs.add_processor)(cs, apic_id, &mut n) };
        (st, n)
    }

    pub fn remove_processor(&self, n: usize) -> Status {
        let cs = self.cs();
        // SAFETY: our protocol.
        unsafe { (cs.remove_processor)(cs, n) }
    }

    pub fn who_am_i(&self) -> (Status, usize) {
        let cs = self.cs();
        let mut n = NONE;
        // SAFETY: our protocol, valid out-pointer.
        let st = unsafe { (cs.who_am_i)(cs, &mut n) };
        (st, n)
    }
    /// Every run semaphore and the arrival counter back at zero (between
    /// SMIs).
    pub fn assert_balanced(&self) {
        let inst = self.instance();
        for c in 0..self.opts.cpus {
            assert_eq!(
                inst.run_sem(c).unwrap().value(),
                0,
                "run semaphore of CPU {c}"
            );
        }
        assert_eq!(inst.arrival().value(), 0, "arrival counter");
    }

    /// MM_MP_STATISTICS through the C ABI.
    pub fn stats(&self) -> MmMpStatistics {
        let mut s = MmMpStatistics::default();
        // SAFETY: valid instance and out-pointer.
        assert_eq!(
            unsafe { MmMpGetStatistics(self.inst, &mut s) },
            Status::SUCCESS
        );
        s
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; no thread uses it now.
        unsafe { dealloc(self.buf, self.buf_layout) }
    }
}

// -- procedures ----------------------------------------------------------------

/// Shared record of what procedures did: per-CPU run counts.
pub struct Record {
    pub runs: Vec<AtomicUsize>,
    pub ret: AtomicUsize,
    pub gate: AtomicBool,
    /// Gated procedures that have started (and may be waiting at the gate).
    pub started: AtomicUsize,
}

impl Record {
    pub fn new(cpus: usize) -> Box<Record> {
        Box::new(Record {
            runs: (0..cpus).map(|_| AtomicUsize::new(0)).collect(),
            ret: AtomicUsize::new(0),
            gate: AtomicBool::new(true),
            started: AtomicUsize::new(0),
        })
    }
    pub fn arg(&self) -> *mut c_void {
        self as *const Record as *mut c_void
    }
    pub fn runs(&self) -> Vec<usize> {
        self.runs.iter().map(|r| r.load(Ordering::SeqCst)).collect()
    }
    pub fn total(&self) -> usize {
        self.runs().iter().sum()
    }
}

fn record_of<'a>(arg: *mut c_void) -> &'a Record {
    // SAFETY: tests pass a live Record as the argument.
    unsafe { &*(arg as *const Record) }
}

/// Counts a run on the current CPU, returns `Record::ret`.
pub unsafe extern "efiapi" fn proc_count(arg: *mut c_void) -> Status {
    let r = record_of(arg);
    r.runs[current_cpu()].fetch_add(1, Ordering::SeqCst);
    Status(r.ret.load(Ordering::SeqCst))
}

/// Returns EFI_DEVICE_ERROR on odd CPUs, success on even ones.
pub unsafe extern "efiapi" fn proc_fail_odd(arg: *mut c_void) -> Status {
    let r = record_of(arg);
    let c = current_cpu();
    r.runs[c].fetch_add(1, Ordering::SeqCst);
    if c % 2 == 1 {
        Status::DEVICE_ERROR
    } else {
        Status::SUCCESS
    }
}

/// Spins (yielding) until the record's gate opens, then counts.
pub unsafe extern "efiapi" fn proc_gated(arg: *mut c_void) -> Status {
    let r = record_of(arg);
    r.started.fetch_add(1, Ordering::SeqCst);
    while !r.gate.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    r.runs[current_cpu()].fetch_add(1, Ordering::SeqCst);
    Status::SUCCESS
}

/// Old-style void procedure: counts a run.
pub unsafe extern "efiapi" fn legacy_count(arg: *mut c_void) {
    let r = record_of(arg);
    r.runs[current_cpu()].fetch_add(1, Ordering::SeqCst);
}

pub fn p2(f: unsafe extern "efiapi" fn(*mut c_void) -> Status) -> ApProcedure2 {
    Some(f)
}

pub fn p1(f: unsafe extern "efiapi" fn(*mut c_void)) -> ApProcedure {
    Some(f)
}

pub const NULL_TOKEN: MmCompletion = std::ptr::null_mut();

/// An out-pointer argument: NULL when `null`, else `v`.
pub fn out_or_null<T>(null: bool, v: &mut T) -> *mut T {
    if null {
        std::ptr::null_mut()
    } else {
        v
    }
}

/// Collects expectation failures inside callbacks (a panic there would
/// abort the process: callbacks are `extern "efiapi"`, which cannot unwind).
#[derive(Default)]
pub struct Checks {
    failures: Mutex<Vec<String>>,
    count: AtomicUsize,
}

impl Checks {
    pub fn new() -> std::sync::Arc<Checks> {
        std::sync::Arc::new(Checks::default())
    }
    pub fn eq<T: PartialEq + std::fmt::Debug>(&self, what: &str, got: T, want: T) {
        self.count.fetch_add(1, Ordering::SeqCst);
        if got != want {
            self.failures
                .lock()
                .unwrap()
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }
    pub fn that(&self, what: &str, cond: bool) {
        self.eq(what, cond, true)
    }
    /// Asserts no failure and that at least `min` checks ran.
    pub fn assert_ok(&self, min: usize) {
        let f = self.failures.lock().unwrap();
        assert!(f.is_empty(), "{} failed checks:\n{}", f.len(), f.join("\n"));
        let n = self.count.load(Ordering::SeqCst);
        assert!(n >= min, "only {n} checks ran, expected at least {min}");
    }
}

// -- SmmCpuSyncLib contexts (BEHAVIOUR.md §7) in test memory ------------------------------

/// A fresh `MM_MP_SYNC_CONTEXT` for `cpus` CPUs (64-byte lines) built by
/// the C export in a Vec: (memory, offset of the context, its size, the
/// context pointer). The Vec must outlive the pointer.
pub fn new_sync_context(cpus: usize) -> (Vec<u8>, usize, usize, *mut MmMpSyncContext) {
    let mut size = 0usize;
    // SAFETY: valid out-pointer.
    assert_eq!(
        unsafe { MmMpSyncGetRequiredSize(cpus, 64, &mut size) },
        Status::SUCCESS
    );
    let mut mem = vec![0u8; size + 64];
    let off = (64 - mem.as_ptr() as usize % 64) % 64;
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
    assert_eq!(st, Status::SUCCESS);
    (mem, off, size, ctx)
}

// -- the persistent machine: one thread per CPU taking SMIs ------------------

/// A running machine: every CPU is a thread that enters SMM when an SMI is
/// pending for it (SMI sources and delivered IPIs set `Sim::pending`).
pub struct Machine {
    pub sim: &'static Sim,
    stop: std::sync::Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Machine {
    pub fn start(opts: Options) -> Machine {
        let sim: &'static Sim = Box::leak(Sim::new(opts));
        sim.source_validity.store(true, Ordering::SeqCst);
        sim.deliver_ipis.store(true, Ordering::SeqCst);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        // Every slot has a thread; empty slots start dead (a CPU that can be
        // hot-added later: `Machine::revive`).
        for &c in &sim.opts.empty {
            if let Some(d) = sim.dead.get(c) {
                d.store(true, Ordering::SeqCst);
            }
        }
        let threads = (0..sim.opts.cpus)
            .map(|c| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    CURRENT_CPU.with(|cc| cc.set(c));
                    while !stop.load(Ordering::SeqCst) {
                        if !sim.dead[c].load(Ordering::SeqCst)
                            && sim.pending[c].load(Ordering::SeqCst)
                        {
                            sim.in_smm[c].store(true, Ordering::SeqCst);
                            sim.pending[c].store(false, Ordering::SeqCst);
                            // SAFETY: valid instance for the machine's life.
                            unsafe { MmMpSmiRendezvous(sim.inst, c) };
                            sim.in_smm[c].store(false, Ordering::SeqCst);
                        } else {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        Machine { sim, stop, threads }
    }

    /// A dead CPU comes to life (hot-plugged): no stale SMI pending.
    pub fn revive(&self, cpu: usize) {
        self.sim.pending[cpu].store(false, Ordering::SeqCst);
        self.sim.dead[cpu].store(false, Ordering::SeqCst);
    }

    /// The CPU takes no more SMIs (ejected); waits until it left SMM.
    pub fn kill(&self, cpu: usize) {
        self.sim.dead[cpu].store(true, Ordering::SeqCst);
        while self.sim.in_smm[cpu].load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        self.sim.pending[cpu].store(false, Ordering::SeqCst);
    }

    /// Broadcast SMI (BEHAVIOUR.md §10.1): every live CPU gets it.
    pub fn broadcast_smi(&self) {
        self.sim.source.store(true, Ordering::SeqCst);
        for p in &self.sim.pending {
            p.store(true, Ordering::SeqCst);
        }
    }

    /// Unicast SMI to one CPU (BEHAVIOUR.md §10.2 from the BSP, §10.3 from an AP).
    pub fn unicast_smi(&self, cpu: usize) {
        self.sim.source.store(true, Ordering::SeqCst);
        self.sim.pending[cpu].store(true, Ordering::SeqCst);
    }

    /// Whether no CPU is in SMM and no SMI is pending for a live CPU.
    pub fn idle(&self) -> bool {
        (0..self.sim.opts.cpus).all(|c| {
            let pending = self.sim.pending[c].load(Ordering::SeqCst)
                && !self.sim.dead[c].load(Ordering::SeqCst);
            !pending && !self.sim.in_smm[c].load(Ordering::SeqCst)
        })
    }

    /// Wait until `smis` foundation entries happened in total and the
    /// machine is idle. Panics after `secs` seconds.
    pub fn wait_smis(&self, smis: usize, secs: u64) {
        let t = std::time::Instant::now();
        loop {
            if self.sim.foundation_calls.load(Ordering::SeqCst) >= smis && self.idle() {
                return;
            }
            assert!(
                t.elapsed().as_secs() < secs,
                "machine did not settle: {} SMIs",
                self.sim.foundation_calls.load(Ordering::SeqCst)
            );
            std::thread::yield_now();
        }
    }

    /// Every run semaphore and the arrival counter back at zero.
    pub fn assert_balanced(&self) {
        self.sim.assert_balanced();
    }

    pub fn stats(&self) -> MmMpStatistics {
        self.sim.stats()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
