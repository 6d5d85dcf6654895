//! The instance: one SMM CPU driver's worth of MP state, living entirely
//! inside the caller's buffer (EDK2 `mSmmMpSyncData` + `gSmmCpuPrivate`'s
//! MP parts + the token list + the protocol structs).
//!
//! Region layout (see `Layout`), every area on its own cache line:
//! ```text
//! [Instance header: settings, platform copy, protocols, startup procedure]
//! [arrival counter]            spun on by the BSP, bumped by every CPU
//! [flags: BSP inside, SMI sequence, current BSP]   polled by every CPU
//! [all in sync]                polled by APs leaving, written by the BSP
//! [control: BSP index, SwitchBsp candidate, counts]  the BSP's; APs
//!                              read it only to elect
//! [token pool state]           written by the BSP
//! [statistics]                 counters
//! [run semaphore]  x NumberOfCpus    one line each
//! [mailbox]        x NumberOfCpus    one line each (the call; BSP-written)
//! [busy flags]     x NumberOfCpus    one line each (mailbox and broadcast
//!                                     completion words; AP-written)
//! [CPU state]      x NumberOfCpus    one line each
//! [broadcast descriptor]       the call and its tag; polled by the APs
//! [broadcasts in flight]       lowered by the APs
//! [present bits]   x NumberOfCpus/32 words, packed (AP RMWs)
//! [members]        x NumberOfCpus/32 words, packed (BSP-written, AP-read)
//! [snapshot]       x NumberOfCpus/32 words, packed (BSP scratch)
//! [mailbox posts]              BSP scratch
//! [token]          x MaxTokens       packed
//! [APIC ID map]    x power of two >= 2 x NumberOfCpus, 8 bytes each, packed
//! ```

use core::ffi::c_void;
use core::mem::{align_of, size_of};

use crate::broadcast::{words_for, Broadcasts, Descriptor, MailboxPosts};
use crate::cpu_service::ApicMap;
use crate::cpus::CpuState;
use crate::efi::{
    MmMpProtocol, ProcessorInformation, SmmCpuRendezvousProtocol, SmmCpuServiceProtocol, Status,
    INVALID_APIC_ID,
};
use crate::mailbox::{Channel, Mailbox};
use crate::memory::{is_aligned, ArrayLayout, Carver, Strided, DEFAULT_LINE, MIN_LINE};
use crate::platform::{
    MmMpConfig, MmMpPlatform, MM_MP_CONFIG_REVISION, MM_MP_PLATFORM_REVISION,
    MM_MP_SYNC_MODE_RELAXED,
};
use crate::stats::Stats;
use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{BusyFlag, Semaphore};
use crate::sync_lib::SyncView;
use crate::tokens::{PoolState, Token, TokenPool, MAX_TOKENS};

const MAGIC: u64 = u64::from_le_bytes(*b"MMMPINST");
/// `bsp_index` value when no BSP is elected.
pub const NO_BSP: u32 = u32::MAX;

static_assertions::const_assert!(align_of::<Instance>() <= MIN_LINE);
static_assertions::const_assert!(align_of::<Mailbox>() <= MIN_LINE);
static_assertions::const_assert!(align_of::<BusyFlag>() <= MIN_LINE);
static_assertions::const_assert!(align_of::<CpuState>() <= MIN_LINE);
static_assertions::const_assert!(align_of::<Token>() <= 8);

/// Immutable settings derived from `MM_MP_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Settings {
    pub number_of_cpus: usize,
    pub max_tokens: usize,
    pub line: usize,
    pub relaxed: bool,
    pub bsp_election: bool,
    pub hot_plug: bool,
    pub blocking_startup_this_ap: bool,
    pub configure_mtrrs: bool,
    pub fixed_bsp: usize,
    pub timeout1_us: u64,
    pub timeout2_us: u64,
    pub hot_plug_apic_id: *mut u64,
}

/// Where everything lives, relative to the start of the region.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Layout {
    pub arrival: usize,
    pub flags: usize,
    /// EDK2 `AllCpusInSync` (an `AtomicBool`).
    pub all_in_sync: usize,
    pub control: usize,
    pub pool: usize,
    pub stats: usize,
    pub run: ArrayLayout,
    pub mailbox: ArrayLayout,
    pub busy: ArrayLayout,
    /// The broadcast flags: the second word of each busy line.
    pub broadcast_flag: ArrayLayout,
    pub cpu: ArrayLayout,
    pub descriptor: usize,
    pub in_flight: usize,
    pub present: ArrayLayout,
    pub members: ArrayLayout,
    pub snapshot: ArrayLayout,
    pub posts: usize,
    pub token: ArrayLayout,
    /// WhoAmI's APIC ID → slot hash table (`cpu_service::ApicMap`).
    pub apic_map: ArrayLayout,
    pub total: usize,
}

impl Layout {
    /// The layout for a configuration, or `None` on arithmetic overflow.
    pub fn compute(cpus: usize, tokens: usize, line: usize) -> Option<Layout> {
        let mut c = Carver::new(line);
        let header = c.area(size_of::<Instance>())?;
        debug_assert_eq!(header, 0);
        let arrival = c.area(size_of::<Semaphore>())?;
        let flags = c.area(size_of::<Flags>())?;
        let all_in_sync = c.area(size_of::<AtomicBool>())?;
        let control = c.area(size_of::<Control>())?;
        let pool = c.area(size_of::<PoolState>())?;
        let stats = c.area(size_of::<Stats>())?;
        let run = c.array(size_of::<Semaphore>(), cpus, true)?;
        let mailbox = c.array(size_of::<Mailbox>(), cpus, true)?;
        // Two completion words per line: the mailbox's, then the broadcast's.
        let busy = c.array(2 * size_of::<BusyFlag>(), cpus, true)?;
        let broadcast_flag = ArrayLayout {
            offset: busy.offset + size_of::<BusyFlag>(),
            ..busy
        };
        let cpu = c.array(size_of::<CpuState>(), cpus, true)?;
        let descriptor = c.area(size_of::<Descriptor>())?;
        let in_flight = c.area(size_of::<AtomicU32>())?;
        let words = words_for(cpus)?;
        let present = c.array(size_of::<AtomicU32>(), words, false)?;
        let members = c.array(size_of::<AtomicU64>(), words, false)?;
        let snapshot = c.array(size_of::<AtomicU32>(), words, false)?;
        let posts = c.area(size_of::<MailboxPosts>())?;
        let token = c.array(size_of::<Token>(), tokens, false)?;
        let map_len = cpus.checked_mul(2)?.checked_next_power_of_two()?;
        let apic_map = c.array(size_of::<AtomicU64>(), map_len, false)?;
        let total = c.finish()?;
        Some(Layout {
            arrival,
            flags,
            all_in_sync,
            control,
            pool,
            stats,
            run,
            mailbox,
            busy,
            broadcast_flag,
            cpu,
            descriptor,
            in_flight,
            present,
            members,
            snapshot,
            posts,
            token,
            apic_map,
            total,
        })
    }
}

/// The rendezvous flags every CPU polls, on a line of their own: the
/// BSP's other start- and end-of-SMI stores (`Control`) and the election's
/// compare-exchanges do not pull this line away from the polling CPUs
/// (docs/ARCHITECTURE.md, "Rules from the measurements"). EDK2's
/// `AllCpusInSync` has a line of its own
/// too (`Instance::all_in_sync`): the APs read "BSP inside" while they
/// enter and leave the dispatch loop, at the moments the BSP sets and
/// clears "all in sync".
#[repr(C)]
pub struct Flags {
    /// EDK2 `InsideSmm`: the BSP is in the SMI (services open).
    pub bsp_inside: AtomicBool,
    /// Number of SMIs ended (stored by the BSP before the arrival counter
    /// reopens): tells a CPU whether the SMI it sampled ended meanwhile.
    /// Here and not in `Control`: every CPU reads it at entry, and an AP
    /// that has seen "BSP inside" must not need the control line, which
    /// the BSP writes meanwhile (docs/ARCHITECTURE.md, "Rules from the
    /// measurements").
    pub smi_seq: AtomicU32,
    /// The BSP of the SMI in progress as reported to callers.
    pub current_bsp: AtomicUsize,
}

/// Rendezvous-wide state (EDK2 `SMM_DISPATCHER_MP_SYNC_DATA`), one line.
#[repr(C)]
pub struct Control {
    /// Whether every expected CPU arrived this SMI (BEHAVIOUR.md §6.5, §6.7).
    pub all_arrived: AtomicBool,
    /// EDK2 `BspIndex`: the elected (or fixed) BSP, `NO_BSP` when none.
    pub bsp_index: AtomicU32,
    /// Number of CPUs counted when the door was locked (SmmCpuSyncLib's
    /// `ArrivedCpuCountUponLock`, owned by the `SyncView`).
    pub upon_lock: AtomicU32,
    /// SwitchBsp: the only CPU that may win the next election (`NO_BSP`: any).
    pub bsp_candidate: AtomicU32,
    /// With election: the BSP of the last SMI that ended (`NO_BSP` before
    /// the first). Only a hint, for an AP that waited in vain for a BSP:
    /// it sends that CPU an SMI IPI (`rendezvous::ap_wait_bsp`).
    pub last_bsp: AtomicU32,
    /// APs marked lost in the current SMI (they no longer take part in barriers).
    pub lost_count: AtomicU32,
    /// The platform's "sync needed" answer for the current SMI.
    pub sync_needed: AtomicBool,
    /// Serialises the CPU service writers (AddProcessor, RemoveProcessor,
    /// SwitchBsp, applying pending operations): one writer of the
    /// processor table and the APIC ID map at a time, whoever calls.
    pub hot_plug_lock: AtomicBool,
    /// Set with every pending CPU operation, cleared when the end of an
    /// SMI applies them: the end of an SMI does not read every CPU's state
    /// to find out that there is nothing to apply.
    pub ops_pending: AtomicBool,
}

/// The instance header (first bytes of the caller's buffer).
#[repr(C)]
pub struct Instance {
    magic: u64,
    pub settings: Settings,
    pub platform: MmMpPlatform,
    pub layout: Layout,
    pub mm_mp: MmMpProtocol,
    pub rendezvous_protocol: SmmCpuRendezvousProtocol,
    pub cpu_service: SmmCpuServiceProtocol,
    pub startup_procedure: AtomicUsize,
    pub startup_argument: AtomicUsize,
}

// SAFETY: every field that changes after initialisation is an atomic; the
// raw pointers in `settings` and `platform` are the integrator's (context,
// hot-plug array) and are only passed back to its callbacks or read with
// volatile loads, which the integrator allows from any CPU (BEHAVIOUR.md §11).
unsafe impl Sync for Instance {}
// SAFETY: as above; nothing in the instance is tied to one thread.
unsafe impl Send for Instance {}

/// Validate a configuration and return its settings and layout.
pub fn validate(config: &MmMpConfig) -> Result<(Settings, Layout), Status> {
    if config.revision != MM_MP_CONFIG_REVISION
        || config.number_of_cpus == 0
        || config.max_tokens == 0
        || config.max_tokens > MAX_TOKENS
        || config.sync_mode > MM_MP_SYNC_MODE_RELAXED
        || (!config.bsp_election.get() && config.bsp_index >= config.number_of_cpus)
        || config.processor_info.is_null()
    {
        return Err(Status::INVALID_PARAMETER);
    }
    let line = match config.cache_line_size {
        0 => DEFAULT_LINE,
        n if n.is_power_of_two() && n as usize >= MIN_LINE => n as usize,
        _ => return Err(Status::INVALID_PARAMETER),
    };
    let cpus = config.number_of_cpus as usize;
    let tokens = config.max_tokens as usize;
    let layout = Layout::compute(cpus, tokens, line).ok_or(Status::OUT_OF_RESOURCES)?;
    let settings = Settings {
        number_of_cpus: cpus,
        max_tokens: tokens,
        line,
        relaxed: config.sync_mode == MM_MP_SYNC_MODE_RELAXED,
        bsp_election: config.bsp_election.get(),
        hot_plug: config.hot_plug_support.get(),
        blocking_startup_this_ap: config.blocking_startup_this_ap.get(),
        configure_mtrrs: config.configure_mtrrs.get(),
        fixed_bsp: config.bsp_index as usize,
        timeout1_us: config.ap_sync_timeout_us,
        timeout2_us: config.ap_sync_timeout2_us,
        hot_plug_apic_id: config.hot_plug_apic_id,
    };
    Ok((settings, layout))
}

impl Instance {
    /// `MmMpInitialize` (BEHAVIOUR.md §11): validate everything, then build the
    /// instance in `buffer`. Nothing is written on error.
    ///
    /// # Safety
    /// Non-null pointers must be valid: `buffer` for `buffer_size` bytes of
    /// writes, `config`/`platform` for reads, `config.processor_info` for
    /// `number_of_cpus` records. The buffer must not be used for anything
    /// else while the instance lives.
    pub unsafe fn initialize(
        buffer: *mut c_void,
        buffer_size: usize,
        config: *const MmMpConfig,
        platform: *const MmMpPlatform,
        instance: *mut *mut Instance,
    ) -> Status {
        if buffer.is_null() || config.is_null() || platform.is_null() || instance.is_null() {
            return Status::INVALID_PARAMETER;
        }
        // SAFETY: non-null, valid for reads by the caller's contract;
        // copied so the caller may free its tables afterwards.
        let (config, platform) = unsafe { (config.read_unaligned(), platform.read_unaligned()) };
        if platform.revision != MM_MP_PLATFORM_REVISION || platform.mm_foundation_entry.is_none() {
            return Status::INVALID_PARAMETER;
        }
        let (settings, layout) = match validate(&config) {
            Ok(v) => v,
            Err(e) => return e,
        };
        if !settings.bsp_election {
            // SAFETY: fixed_bsp < number_of_cpus was validated and the
            // caller's array has number_of_cpus records.
            let bsp = unsafe {
                config
                    .processor_info
                    .add(settings.fixed_bsp)
                    .read_unaligned()
            };
            if bsp.processor_id == INVALID_APIC_ID {
                return Status::INVALID_PARAMETER;
            }
        }
        if !is_aligned(buffer as usize, settings.line) {
            return Status::INVALID_PARAMETER;
        }
        if buffer_size < layout.total {
            return Status::BUFFER_TOO_SMALL;
        }

        let base = buffer as *mut u8;
        // SAFETY (whole block): `base` is valid for `layout.total` bytes
        // (checked against buffer_size), aligned to the line size; every
        // offset below comes from `layout`, computed with checked
        // arithmetic so that each object lies inside the region, aligned
        // (line-aligned areas, 8-byte token stride, every type's alignment
        // <= 16 asserted above). `ptr::write` does not read the old bytes.
        unsafe {
            let header = Instance {
                magic: 0,
                settings,
                platform,
                layout,
                mm_mp: crate::ffi::MM_MP_PROTOCOL_TEMPLATE,
                rendezvous_protocol: crate::ffi::RENDEZVOUS_PROTOCOL_TEMPLATE,
                cpu_service: crate::ffi::CPU_SERVICE_PROTOCOL_TEMPLATE,
                startup_procedure: AtomicUsize::new(0),
                startup_argument: AtomicUsize::new(0),
            };
            (base as *mut Instance).write(header);
            (base.add(layout.arrival) as *mut Semaphore).write(Semaphore::new(0));
            (base.add(layout.flags) as *mut Flags).write(Flags {
                bsp_inside: AtomicBool::new(false),
                smi_seq: AtomicU32::new(0),
                current_bsp: AtomicUsize::new(usize::MAX),
            });
            (base.add(layout.all_in_sync) as *mut AtomicBool).write(AtomicBool::new(false));
            (base.add(layout.control) as *mut Control).write(Control {
                all_arrived: AtomicBool::new(false),
                bsp_index: AtomicU32::new(if settings.bsp_election {
                    NO_BSP
                } else {
                    settings.fixed_bsp as u32
                }),
                upon_lock: AtomicU32::new(0),
                bsp_candidate: AtomicU32::new(NO_BSP),
                last_bsp: AtomicU32::new(NO_BSP),
                lost_count: AtomicU32::new(0),
                sync_needed: AtomicBool::new(true),
                hot_plug_lock: AtomicBool::new(false),
                ops_pending: AtomicBool::new(false),
            });
            (base.add(layout.stats) as *mut Stats).write(Stats::new());
            (base.add(layout.pool) as *mut PoolState).write(PoolState::new());
            for i in 0..settings.number_of_cpus {
                let info: ProcessorInformation = config.processor_info.add(i).read_unaligned();
                (base.add(layout.run.offset + i * layout.run.stride) as *mut Semaphore)
                    .write(Semaphore::new(0));
                (base.add(layout.mailbox.offset + i * layout.mailbox.stride) as *mut Mailbox)
                    .write(Mailbox::new());
                (base.add(layout.busy.offset + i * layout.busy.stride) as *mut BusyFlag)
                    .write(BusyFlag::new());
                (base.add(layout.broadcast_flag.offset + i * layout.broadcast_flag.stride)
                    as *mut BusyFlag)
                    .write(BusyFlag::new());
                (base.add(layout.cpu.offset + i * layout.cpu.stride) as *mut CpuState)
                    .write(CpuState::new(&info));
            }
            (base.add(layout.descriptor) as *mut Descriptor).write(Descriptor::new());
            (base.add(layout.in_flight) as *mut AtomicU32).write(AtomicU32::new(0));
            (base.add(layout.posts) as *mut MailboxPosts).write(MailboxPosts::new());
            for i in 0..layout.present.len {
                (base.add(layout.present.offset + i * layout.present.stride) as *mut AtomicU32)
                    .write(AtomicU32::new(0));
                (base.add(layout.members.offset + i * layout.members.stride) as *mut AtomicU64)
                    .write(AtomicU64::new(0));
                (base.add(layout.snapshot.offset + i * layout.snapshot.stride) as *mut AtomicU32)
                    .write(AtomicU32::new(0));
            }
            for i in 0..settings.max_tokens {
                (base.add(layout.token.offset + i * layout.token.stride) as *mut Token)
                    .write(Token::new());
            }
            for i in 0..layout.apic_map.len {
                (base.add(layout.apic_map.offset + i * layout.apic_map.stride) as *mut AtomicU64)
                    .write(AtomicU64::new(0));
            }
            let inst = &mut *(base as *mut Instance);
            inst.mm_mp.attributes = if inst.platform.has_time_source() {
                crate::efi::MM_MP_TIMEOUT_SUPPORTED
            } else {
                0
            };
            let map = inst.apic_map();
            for (i, s) in inst.cpus().iter() {
                if !s.is_empty() {
                    // Cannot fail: the map has at least two entries per CPU.
                    let _ = map.insert(s.apic_id(), i);
                }
            }
            inst.magic = MAGIC;
            instance.write(inst);
        }
        Status::SUCCESS
    }

    /// Turn a C instance pointer into a reference, rejecting NULL and
    /// anything that is not an initialised instance.
    ///
    /// # Safety
    /// A non-null `ptr` must point to readable memory of at least the size
    /// of the header (an instance returned by `MmMpInitialize`).
    pub unsafe fn from_ptr<'a>(ptr: *const Instance) -> Option<&'a Instance> {
        if ptr.is_null() || !is_aligned(ptr as usize, align_of::<Instance>()) {
            return None;
        }
        // SAFETY: non-null and aligned; readable by the caller's contract.
        let inst = unsafe { &*ptr };
        // SAFETY: `magic` is a plain u64 read; volatile so the check is not
        // folded away on a pointer the compiler believes to be valid.
        let magic = unsafe { core::ptr::addr_of!(inst.magic).read_volatile() };
        (magic == MAGIC).then_some(inst)
    }

    fn base(&self) -> *const u8 {
        self as *const Instance as *const u8
    }

    #[inline(always)]
    fn at<T>(&self, offset: usize) -> &T {
        // SAFETY: `offset` is one of the layout's single-object areas
        // (arrival, control, pool), initialised by `initialize` with a `T`
        // of the matching type, inside the region this header starts.
        unsafe { &*(self.base().add(offset) as *const T) }
    }

    #[inline(always)]
    fn array<T>(&self, layout: ArrayLayout) -> Strided<'_, T> {
        // SAFETY: `layout` is one of the arrays placed and initialised by
        // `initialize` with elements of type `T`; the region lives as long
        // as the instance, and every element is only shared (atomics).
        unsafe { Strided::new(self.base(), layout) }
    }

    #[inline(always)]
    pub fn arrival(&self) -> &Semaphore {
        self.at(self.layout.arrival)
    }

    #[inline(always)]
    pub fn flags(&self) -> &Flags {
        self.at(self.layout.flags)
    }

    /// EDK2 `AllCpusInSync`: door locked; cleared last at SMI exit.
    #[inline(always)]
    pub fn all_in_sync(&self) -> &AtomicBool {
        self.at(self.layout.all_in_sync)
    }

    #[inline(always)]
    pub fn control(&self) -> &Control {
        self.at(self.layout.control)
    }

    #[inline(always)]
    pub fn stats(&self) -> &Stats {
        self.at(self.layout.stats)
    }

    /// The SmmCpuSyncLib-compatible view of this instance's arrival counter
    /// and run semaphores: the engine synchronises through the same code as
    /// the `MmMpSync*` API (one implementation).
    pub fn sync(&self) -> SyncView<'_> {
        SyncView::new(
            self.arrival(),
            &self.control().upon_lock,
            self.array::<Semaphore>(self.layout.run),
        )
    }

    #[inline(always)]
    pub fn run_sem(&self, cpu: usize) -> Option<&Semaphore> {
        self.array::<Semaphore>(self.layout.run).get(cpu)
    }

    /// CPU `cpu`'s mailbox: its request line, its busy flag, the BSP's
    /// copy of its last tag, and the BSP's count of posts.
    #[inline(always)]
    pub fn mailbox(&self, cpu: usize) -> Option<Channel<'_>> {
        Some(Channel::new(
            self.mailboxes().get(cpu)?,
            self.busy_flags().get(cpu)?,
            self.cpu(cpu)?,
            self.at(self.layout.posts),
        ))
    }

    /// The broadcast descriptor.
    #[inline(always)]
    pub fn descriptor(&self) -> &Descriptor {
        self.at(self.layout.descriptor)
    }

    /// The broadcast machinery (`broadcast::Broadcasts`).
    #[inline(always)]
    pub fn broadcasts(&self) -> Broadcasts<'_> {
        Broadcasts {
            descriptor: self.descriptor(),
            in_flight: self.at(self.layout.in_flight),
            present: self.array(self.layout.present),
            snapshot: self.array(self.layout.snapshot),
            members: self.array(self.layout.members),
            posts: self.at(self.layout.posts),
            flags: self.array(self.layout.broadcast_flag),
        }
    }

    /// Whether `cpu` is free of broadcasts (one load while none is in
    /// flight: the dispatch fast path's check).
    #[inline(always)]
    pub fn broadcast_free(&self, cpu: usize) -> bool {
        // Acquire: as `Broadcasts::is_free_for`.
        self.at::<AtomicU32>(self.layout.in_flight)
            .load(Ordering::Acquire)
            == 0
            || self.broadcast_free_slow(cpu)
    }

    /// `broadcast_free` while broadcasts are in flight. EFIAPI: the
    /// blocking dispatch path is inlined into an EFIAPI entry point, and a
    /// call from there into System V code would make that entry save
    /// xmm6–15 on every call (docs/PERFORMANCE.md [6]).
    #[inline(never)]
    extern "efiapi" fn broadcast_free_slow(&self, cpu: usize) -> bool {
        self.broadcasts().is_free_for(cpu)
    }

    #[inline(always)]
    pub fn cpu(&self, cpu: usize) -> Option<&CpuState> {
        self.array::<CpuState>(self.layout.cpu).get(cpu)
    }

    /// Every CPU's mailbox (in CPU order).
    #[inline(always)]
    pub fn mailboxes(&self) -> Strided<'_, Mailbox> {
        self.array(self.layout.mailbox)
    }

    /// Every CPU's mailbox busy flag (in CPU order).
    #[inline(always)]
    pub fn busy_flags(&self) -> Strided<'_, BusyFlag> {
        self.array(self.layout.busy)
    }

    /// Every CPU's run semaphore (in CPU order).
    pub fn run_sems(&self) -> Strided<'_, Semaphore> {
        self.array(self.layout.run)
    }

    #[inline(always)]
    pub fn cpus(&self) -> Strided<'_, CpuState> {
        self.array(self.layout.cpu)
    }

    /// WhoAmI's APIC ID → slot map.
    pub fn apic_map(&self) -> ApicMap<'_> {
        ApicMap::new(self.array(self.layout.apic_map))
    }

    pub fn tokens(&self) -> TokenPool<'_> {
        TokenPool {
            state: self.at(self.layout.pool),
            tokens: self.array(self.layout.token),
        }
    }

    #[inline(always)]
    pub fn number_of_cpus(&self) -> usize {
        self.settings.number_of_cpus
    }

    /// Whether an SMI is in progress (the BSP is inside; services open).
    #[inline(always)]
    pub fn in_smi(&self) -> bool {
        // Acquire pairs with the BSP's Release store when it enters: a
        // caller that sees the SMI also sees its start-of-SMI state.
        self.flags().bsp_inside.load(Ordering::Acquire)
    }

    /// The BSP of the SMI in progress, `usize::MAX` outside an SMI.
    #[inline(always)]
    pub fn current_bsp(&self) -> usize {
        // Acquire: pairs with the BSP's Release store at SMI entry/exit.
        self.flags().current_bsp.load(Ordering::Acquire)
    }

    /// Whether the caller is known not to be the current BSP (BEHAVIOUR.md §2: the
    /// platform's GetApicId tells who calls; without it we cannot tell).
    #[inline(always)]
    pub fn caller_is_ap(&self, bsp: usize) -> bool {
        match (self.platform.apic_id(), self.cpu(bsp)) {
            (Some(me), Some(b)) => me != b.apic_id(),
            _ => false,
        }
    }

    /// Send a message to the integrator's log.
    pub fn log(&self, level: usize, message: &core::ffi::CStr) {
        self.platform.log(level, message)
    }
}
