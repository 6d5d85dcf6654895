//! The bench's machine: an mm-mp instance with a minimal platform (no
//! hooks but GetApicId, CpuPause and MmFoundationEntry), played either by
//! pinned threads (latency) or stepped on one thread (callgrind), as the
//! `Sim` of tests/common does.

pub mod codesize;
pub mod straight;

use std::alloc::{alloc_zeroed, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mm_mp::efi::{Boolean, MmMpProtocol, ProcessorInformation, Status, INVALID_APIC_ID};
use mm_mp::ffi::*;
use mm_mp::platform::{MmMpConfig, MmMpPlatform, MM_MP_CONFIG_REVISION, MM_MP_PLATFORM_REVISION};
use mm_mp::{Instance, Poll};

thread_local! {
    /// The CPU this thread plays (GetApicId answers with it).
    static CURRENT: Cell<usize> = const { Cell::new(usize::MAX) };
}

pub fn apic(cpu: usize) -> u64 {
    0x100 + cpu as u64 * 2
}

/// Pin the calling thread to one core (sched_setaffinity).
pub fn pin_to(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read/write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity to core {core}");
    }
}

#[derive(Clone, Copy)]
pub struct Opts {
    pub cpus: usize,
    pub tokens: u32,
    pub relaxed: bool,
    /// First-come BSP election; else CPU 0 is the fixed BSP.
    pub election: bool,
    /// CpuPause spins (pinned threads, one per core); else it yields.
    pub spin: bool,
    /// A time source (the TSC) and 20 ms sync timeouts (long enough that a
    /// preempted BSP thread does not make the AP give up; see
    /// docs/RELIABILITY.md, "A hang found by the benchmarks").
    pub clock: bool,
    /// CpuPause steps CPU 1 once (one thread plays both CPUs: a blocking
    /// call of the BSP makes progress under callgrind).
    pub step_cpu1_on_pause: bool,
    /// MmFoundationEntry does nothing at all (no closure behind a lock):
    /// the "empty handler" of the rendezvous figure [2]. `set_foundation`
    /// has no effect then.
    pub empty_foundation: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            cpus: 2,
            tokens: 64,
            relaxed: false,
            election: false,
            spin: false,
            clock: false,
            step_cpu1_on_pause: false,
            empty_foundation: false,
        }
    }
}

type Foundation = Box<dyn FnMut(&MmMpProtocol, usize) + Send>;

struct Inner {
    inst: *mut MmMpInstance,
    mp: *const MmMpProtocol,
    opts: Opts,
    foundation: Mutex<Option<Foundation>>,
}

// SAFETY: the instance is shared between CPUs by design (all its state is
// atomics); the buffer is never freed (bench process lifetime).
unsafe impl Send for Inner {}
// SAFETY: as above.
unsafe impl Sync for Inner {}

#[derive(Clone)]
pub struct Machine(Arc<Inner>);

unsafe extern "efiapi" fn cb_apic(_ctx: *mut c_void) -> u64 {
    let c = CURRENT.with(|c| c.get());
    if c == usize::MAX {
        INVALID_APIC_ID
    } else {
        apic(c)
    }
}

unsafe extern "efiapi" fn cb_ticks(_ctx: *mut c_void) -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second, measured once against the monotonic clock.
fn tsc_hz() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        let t0 = Instant::now();
        // SAFETY: as in `cb_ticks`.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: as in `cb_ticks`.
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        ((c1 - c0) as f64 / t0.elapsed().as_secs_f64()) as u64
    })
}

unsafe extern "efiapi" fn cb_pause_spin(_ctx: *mut c_void) {
    std::hint::spin_loop();
}

unsafe extern "efiapi" fn cb_pause_yield(_ctx: *mut c_void) {
    std::thread::yield_now();
}

unsafe extern "efiapi" fn cb_pause_step(ctx: *mut c_void) {
    // SAFETY: the context is the machine's Inner, alive for the process.
    let inner = unsafe { &*(ctx as *const Inner) };
    // SAFETY: initialised before any SMI.
    let inst = unsafe { Instance::from_ptr(inner.inst as *const Instance) }.unwrap();
    let prev = CURRENT.with(|c| c.replace(1));
    inst.rendezvous_step(1);
    CURRENT.with(|c| c.set(prev));
}

unsafe extern "efiapi" fn cb_foundation_empty(_ctx: *mut c_void, _bsp: usize) {}

unsafe extern "efiapi" fn cb_foundation(ctx: *mut c_void, bsp: usize) {
    // SAFETY: the context is the machine's Inner, alive for the process.
    let inner = unsafe { &*(ctx as *const Inner) };
    let taken = inner.foundation.lock().unwrap().take();
    if let Some(mut f) = taken {
        // SAFETY: the protocol lives inside the instance.
        f(unsafe { &*inner.mp }, bsp);
        *inner.foundation.lock().unwrap() = Some(f);
    }
}

pub fn processor_table(cpus: usize) -> Vec<ProcessorInformation> {
    (0..cpus)
        .map(|i| {
            let mut p = ProcessorInformation::EMPTY;
            p.processor_id = apic(i);
            p.status_flag = 0x6;
            p
        })
        .collect()
}

pub fn config(
    cpus: u32,
    tokens: u32,
    relaxed: bool,
    election: bool,
    table: *const ProcessorInformation,
) -> MmMpConfig {
    MmMpConfig {
        revision: MM_MP_CONFIG_REVISION,
        number_of_cpus: cpus,
        max_tokens: tokens,
        cache_line_size: std::env::var("MM_MP_BENCH_LINE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        sync_mode: relaxed as u32,
        bsp_index: 0,
        bsp_election: Boolean::from(election),
        hot_plug_support: Boolean::FALSE,
        blocking_startup_this_ap: Boolean::FALSE,
        configure_mtrrs: Boolean::FALSE,
        reserved: 0,
        ap_sync_timeout_us: 0,
        ap_sync_timeout2_us: 0,
        processor_info: table,
        hot_plug_apic_id: std::ptr::null_mut(),
    }
}

impl Machine {
    pub fn new(opts: Opts) -> Machine {
        let table = processor_table(opts.cpus);
        let mut cfg = config(
            opts.cpus as u32,
            opts.tokens,
            opts.relaxed,
            opts.election,
            table.as_ptr(),
        );
        if opts.clock {
            cfg.ap_sync_timeout_us = 20_000;
            cfg.ap_sync_timeout2_us = 20_000;
        }
        let mut size = 0usize;
        // SAFETY: valid locals.
        assert_eq!(
            unsafe { MmMpGetRequiredSize(&cfg, &mut size) },
            Status::SUCCESS
        );
        // SAFETY: non-zero size; never freed (the bench process owns it).
        let buf = unsafe { alloc_zeroed(Layout::from_size_align(size, 4096).unwrap()) };
        let inner = Arc::new(Inner {
            inst: std::ptr::null_mut(),
            mp: std::ptr::null(),
            opts,
            foundation: Mutex::new(None),
        });
        let plat = MmMpPlatform {
            revision: MM_MP_PLATFORM_REVISION,
            reserved: 0,
            context: Arc::as_ptr(&inner) as *mut c_void,
            ticks_per_second: if opts.clock { tsc_hz() } else { 0 },
            get_ticks: if opts.clock { Some(cb_ticks) } else { None },
            cpu_pause: Some(if opts.step_cpu1_on_pause {
                cb_pause_step
            } else if opts.spin {
                cb_pause_spin
            } else {
                cb_pause_yield
            }),
            get_apic_id: Some(cb_apic),
            send_smi_ipi: None,
            is_valid_smi: None,
            clear_top_level_smi_status: None,
            bsp_election: None,
            rendezvous_entry: None,
            rendezvous_exit: None,
            before_mmi_handler: None,
            is_sync_always_needed: None,
            get_smm_delayed_blocked_disabled_count: None,
            mtrr_save: None,
            mtrr_replace: None,
            mtrr_restore: None,
            mm_foundation_entry: Some(if opts.empty_foundation {
                cb_foundation_empty
            } else {
                cb_foundation
            }),
            get_processor_location: None,
            register_exception_handler: None,
            fatal: None,
            log: None,
        };
        let mut inst = std::ptr::null_mut();
        // SAFETY: buffer of the required size, page aligned; tables valid.
        let st = unsafe { MmMpInitialize(buf as *mut c_void, size, &cfg, &plat, &mut inst) };
        assert_eq!(st, Status::SUCCESS);
        // SAFETY: valid instance.
        let mp = unsafe { MmMpGetMmMpProtocol(inst) } as *const MmMpProtocol;
        // Nobody else holds the Arc yet; the context pointer stays valid
        // because the Arc's allocation does not move.
        let p = Arc::as_ptr(&inner) as *mut Inner;
        // SAFETY: sole owner at this point (no other clone, no callback
        // can run before an SMI).
        unsafe {
            (*p).inst = inst;
            (*p).mp = mp;
        }
        Machine(inner)
    }

    pub fn clone_handle(&self) -> Machine {
        self.clone()
    }

    pub fn set_foundation(&self, f: impl FnMut(&MmMpProtocol, usize) + Send + 'static) {
        *self.0.foundation.lock().unwrap() = Some(Box::new(f));
    }

    fn instance(&self) -> &Instance {
        // SAFETY: initialised in `new`.
        unsafe { Instance::from_ptr(self.0.inst as *const Instance) }.unwrap()
    }

    pub fn statistics(&self) -> MmMpStatistics {
        // SAFETY: an all-zero MmMpStatistics is valid (plain integers).
        let mut s: MmMpStatistics = unsafe { std::mem::zeroed() };
        // SAFETY: valid instance and local.
        assert_eq!(
            unsafe { MmMpGetStatistics(self.0.inst, &mut s) },
            Status::SUCCESS
        );
        s
    }

    /// Step CPU `cpu` once on this thread, as that CPU.
    pub fn step(&self, cpu: usize) -> bool {
        let prev = CURRENT.with(|c| c.replace(cpu));
        let ready = self.instance().rendezvous_step(cpu) == Poll::Ready;
        CURRENT.with(|c| c.set(prev));
        ready
    }

    /// One SMI of every CPU played on this thread: the fixed BSP (CPU 0)
    /// first, then every AP, round robin until all left.
    pub fn smi_stepped(&self) {
        let order: Vec<usize> = (0..self.0.opts.cpus).collect();
        self.smi_stepped_in(&order);
    }

    /// One SMI of the CPUs in `order`, stepped round robin in that order.
    pub fn smi_stepped_in(&self, order: &[usize]) {
        let mut done = vec![false; order.len()];
        for _ in 0..1_000_000 {
            for (&c, d) in order.iter().zip(done.iter_mut()) {
                if !*d {
                    *d = self.step(c);
                }
            }
            if done.iter().all(|&d| d) {
                return;
            }
        }
        panic!("stepped SMI did not finish");
    }

    /// One SMI: CPU 0 on this thread pinned to core 0, CPUs 1..=aps on
    /// threads pinned to core 1.
    pub fn smi_pinned(&self, aps: usize, _unused: bool) {
        let threads: Vec<_> = (1..=aps)
            .map(|c| {
                let m = self.clone();
                std::thread::spawn(move || {
                    pin_to(1);
                    CURRENT.with(|x| x.set(c));
                    m.smi(c);
                })
            })
            .collect();
        pin_to(0);
        CURRENT.with(|x| x.set(0));
        self.smi(0);
        CURRENT.with(|x| x.set(usize::MAX));
        for t in threads {
            t.join().unwrap();
        }
    }

    /// One SMI of CPU `cpu` on the calling thread (`MmMpSmiRendezvous`).
    pub fn smi(&self, cpu: usize) {
        // SAFETY: valid instance.
        unsafe { MmMpSmiRendezvous(self.0.inst, cpu) }
    }
}

/// `batches` times: `smis` SMIs back to back on two CPUs (`smi(0)` on a
/// thread on core 0, `smi(1)` on one on core 1), timed on CPU 0 and passed
/// to `smi_batch` (nanoseconds), then `bsp_other` on CPU 0's thread and
/// `ap_other` on CPU 1's, with a barrier after them. With `gate`, CPU 1
/// announces each entry and CPU 0 enters only after the announcement (the
/// SMI reaching both CPUs).
pub fn smi_batches_pinned(
    batches: usize,
    smis: u64,
    gate: bool,
    smi: impl Fn(usize) + Sync,
    mut smi_batch: impl FnMut(f64),
    mut bsp_other: impl FnMut(),
    mut ap_other: impl FnMut() + Send,
) {
    let announced = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        let (announced, done, smi) = (&announced, &done, &smi);
        s.spawn(move || {
            pin_to(1);
            CURRENT.with(|x| x.set(1));
            let mut n = 0;
            for b in 0..batches as u64 {
                for _ in 0..smis {
                    n += 1;
                    announced.store(n, Ordering::Release);
                    smi(1);
                }
                ap_other();
                while done.load(Ordering::Acquire) < b + 1 {
                    std::hint::spin_loop();
                }
            }
        });
        pin_to(0);
        CURRENT.with(|x| x.set(0));
        let mut n = 0;
        for b in 0..batches as u64 {
            let start = Instant::now();
            for _ in 0..smis {
                n += 1;
                if gate {
                    while announced.load(Ordering::Acquire) < n {
                        std::hint::spin_loop();
                    }
                }
                smi(0);
            }
            smi_batch(start.elapsed().as_nanos() as f64);
            bsp_other();
            done.store(b + 1, Ordering::Release);
        }
        CURRENT.with(|x| x.set(usize::MAX));
    });
}
