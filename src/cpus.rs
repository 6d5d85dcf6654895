//! Per-CPU state and the processor table (EDK2 `gSmmCpuPrivate->
//! ProcessorInfo`, `mSmmMpSyncData->CpuData[i].Present`, the hot-plug
//! `Operation` array), one cache line per CPU.

use crate::efi::{
    CpuPhysicalLocation, CpuPhysicalLocation2, ExtendedProcessorInformation, ProcessorInformation,
    INVALID_APIC_ID,
};
use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Pending CPU operations (BEHAVIOUR.md §5.1).
pub const OP_NONE: u32 = 0;
pub const OP_ADD: u32 = 1;
pub const OP_REMOVE: u32 = 2;
pub const OP_SWITCH_BSP: u32 = 3;

/// One CPU's state, in two parts of 64 bytes each (two lines at the
/// default line size): the first is what the CPU itself writes as it
/// steps through its phases, the second what other CPUs read about it
/// (present, pending operation, processor record) and the BSP's scratch
/// about it. A CPU stepping through its phases then never pulls the second
/// part away from a BSP reading it, nor the BSP the first part away from
/// the CPU (docs/ARCHITECTURE.md, "Rules from the measurements").
#[repr(C)]
pub struct CpuState {
    // -- written by this CPU as it steps (bytes 0..64) --
    /// Rendezvous state machine position of this CPU (written by itself).
    pub phase: AtomicU32,
    /// BSP: barrier arrivals still expected. AP: unused.
    pub remaining: AtomicU32,
    /// AP: the BSP of the SMI it joined.
    pub bsp: AtomicU32,
    /// AP: the last broadcast tag it dealt with (ran it, or found itself
    /// not a member): the dispatch loop looks no further while the
    /// descriptor shows this tag.
    pub broadcast_seen: AtomicU32,
    /// Start tick of this CPU's current timed wait.
    pub wait_start: AtomicU64,
    /// BSP: the expected-CPU count of the arrival wait as last counted
    /// (0: not counted yet); kept between looks and SMIs so that the
    /// wait does not read every CPU's state on every look.
    pub arrival_expected: AtomicU32,
    /// BSP: looks at the arrival counter, for the periodic recount.
    pub arrival_looks: AtomicU32,
    _own_line: [u64; 4],
    // -- read by other CPUs, and the BSP's scratch (bytes 64..128) --
    /// Checked into the current SMI and in (or entering) the dispatch loop.
    pub present: AtomicBool,
    /// Hot-added, its first SMI not taken yet (BEHAVIOUR.md §5.3): set by
    /// AddProcessor, cleared by that first `rendezvous_step`, which returns
    /// at once without joining the rendezvous.
    needs_init: AtomicBool,
    /// Pending operation (`OP_*`).
    pending_op: AtomicU8,
    /// The BSP's copy of the tag of the last call posted to this CPU's
    /// mailbox (`mailbox::Channel`): the BSP checks and waits on calls
    /// without reading the request line the AP polls.
    pub posted: AtomicU32,
    /// The last tag the BSP saw done on this CPU's busy flag: while it
    /// equals `posted` the mailbox is known free without reading the busy
    /// flag (a line the AP writes).
    pub known_done: AtomicU32,
    /// `Flags::smi_seq` when this CPU took its init-only SMI: the BSP of
    /// that SMI must not wait for it (it will not check in).
    init_seq: AtomicU32,
    // The processor table record, field by field so that it can be read
    // while hot-plug changes a slot.
    apic_id: AtomicU64,
    status_flag: AtomicU32,
    location: [AtomicU32; 3],
    location2: [AtomicU32; 6],
}

// The split holds for the real atomics (loom's are larger).
#[cfg(not(loom))]
static_assertions::const_assert_eq!(core::mem::offset_of!(CpuState, present), 64);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(core::mem::size_of::<CpuState>(), 128);

impl CpuState {
    pub fn new(info: &ProcessorInformation) -> Self {
        let l = info.location;
        let l2 = info.location2();
        CpuState {
            phase: AtomicU32::new(0),
            remaining: AtomicU32::new(0),
            bsp: AtomicU32::new(u32::MAX),
            broadcast_seen: AtomicU32::new(0),
            wait_start: AtomicU64::new(0),
            arrival_expected: AtomicU32::new(0),
            arrival_looks: AtomicU32::new(0),
            _own_line: [0; 4],
            present: AtomicBool::new(false),
            posted: AtomicU32::new(0),
            known_done: AtomicU32::new(0),
            pending_op: AtomicU8::new(OP_NONE as u8),
            needs_init: AtomicBool::new(false),
            init_seq: AtomicU32::new(u32::MAX),
            apic_id: AtomicU64::new(info.processor_id),
            status_flag: AtomicU32::new(info.status_flag),
            location: [
                AtomicU32::new(l.package),
                AtomicU32::new(l.core),
                AtomicU32::new(l.thread),
            ],
            location2: [
                AtomicU32::new(l2.package),
                AtomicU32::new(l2.module),
                AtomicU32::new(l2.tile),
                AtomicU32::new(l2.die),
                AtomicU32::new(l2.core),
                AtomicU32::new(l2.thread),
            ],
        }
    }

    /// APIC ID of the slot (`INVALID_APIC_ID` when empty).
    pub fn apic_id(&self) -> u64 {
        // Acquire: a CPU that sees a newly added APIC ID also sees the rest
        // of the record written before it (Release in `set_record`).
        self.apic_id.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.apic_id() == INVALID_APIC_ID
    }

    /// Whether this CPU is a present AP candidate: checked in, non-empty,
    /// no pending removal (BEHAVIOUR.md §2 "present AP", minus the BSP test).
    pub fn is_present(&self) -> bool {
        // Acquire pairs with the Release store the AP makes when it marks
        // itself present: a BSP that sees it may dispatch to it.
        self.present.load(Ordering::Acquire)
    }

    pub fn set_present(&self, present: bool) {
        // Release: see `is_present`.
        self.present.store(present, Ordering::Release)
    }

    pub fn pending_op(&self) -> u32 {
        // Acquire pairs with the Release in `set_pending_op`: operations are
        // recorded under the hot-plug lock, possibly by another CPU than the
        // BSP that reads them (Dispatch, Broadcast, the end of the SMI).
        u32::from(self.pending_op.load(Ordering::Acquire))
    }

    /// Record or clear a pending operation (`OP_*`), under the hot-plug lock.
    pub fn set_pending_op(&self, op: u32) {
        // Release: see `pending_op`.
        // OP_* values fit a byte; anything else is stored as "none".
        let op = u8::try_from(op).unwrap_or(OP_NONE as u8);
        self.pending_op.store(op, Ordering::Release)
    }

    /// Whether the slot was hot-added and has not taken its first SMI.
    pub fn needs_init(&self) -> bool {
        // Acquire pairs with the Release stores of `set_needs_init` and
        // `take_init` (the BSP reads it when it counts expected CPUs).
        self.needs_init.load(Ordering::Acquire)
    }

    /// AddProcessor: the slot's next SMI only initialises it.
    pub fn set_needs_init(&self, v: bool) {
        // Release: see `needs_init`.
        self.needs_init.store(v, Ordering::Release)
    }

    /// The CPU's own first SMI, in SMI number `seq` (`Flags::smi_seq`):
    /// record `seq`, then clear the flag; `true` if it was set.
    pub fn take_init_in(&self, seq: u32) -> bool {
        // Release, and before the AcqRel swap below: a BSP that sees the
        // flag cleared (Acquire in `needs_init`) also sees `init_seq`.
        self.init_seq.store(seq, Ordering::Release);
        self.take_init()
    }

    /// The SMI number of this CPU's init-only SMI (`u32::MAX`: none yet).
    pub fn init_seq(&self) -> u32 {
        // Acquire: pairs with the Release in `take_init_in`.
        self.init_seq.load(Ordering::Acquire)
    }

    /// The CPU's own first SMI: clear the flag; `true` if it was set.
    pub fn take_init(&self) -> bool {
        // AcqRel: the clear is seen by the BSP's Acquire load (the CPU is
        // initialised); the Acquire half sees AddProcessor's record.
        self.needs_init.swap(false, Ordering::AcqRel)
    }

    /// A copy of the record (BEHAVIOUR.md §1.6).
    pub fn record(&self) -> ProcessorInformation {
        // Relaxed for the fields: ordered after the Acquire of `apic_id`.
        let r = |a: &AtomicU32| a.load(Ordering::Relaxed);
        let processor_id = self.apic_id();
        ProcessorInformation {
            processor_id,
            status_flag: r(&self.status_flag),
            location: CpuPhysicalLocation {
                package: r(&self.location[0]),
                core: r(&self.location[1]),
                thread: r(&self.location[2]),
            },
            extended_information: ExtendedProcessorInformation {
                location2: CpuPhysicalLocation2 {
                    package: r(&self.location2[0]),
                    module: r(&self.location2[1]),
                    tile: r(&self.location2[2]),
                    die: r(&self.location2[3]),
                    core: r(&self.location2[4]),
                    thread: r(&self.location2[5]),
                },
            },
        }
    }

    /// Overwrite the record (AddProcessor / RemoveProcessor).
    pub fn set_record(&self, info: &ProcessorInformation) {
        let w = |a: &AtomicU32, v: u32| a.store(v, Ordering::Relaxed);
        let l2 = info.location2();
        // Relaxed stores, published by the Release store of the APIC ID.
        w(&self.status_flag, info.status_flag);
        w(&self.location[0], info.location.package);
        w(&self.location[1], info.location.core);
        w(&self.location[2], info.location.thread);
        w(&self.location2[0], l2.package);
        w(&self.location2[1], l2.module);
        w(&self.location2[2], l2.tile);
        w(&self.location2[3], l2.die);
        w(&self.location2[4], l2.core);
        w(&self.location2[5], l2.thread);
        self.apic_id.store(info.processor_id, Ordering::Release);
    }
}
