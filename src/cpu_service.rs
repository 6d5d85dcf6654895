//! EFI_SMM_CPU_SERVICE_PROTOCOL and CPU hot-plug (BEHAVIOUR.md §5). EDK2
//! counterpart: CpuService.c of PiSmmCpuDxeSmm (`SmmGetProcessorInfo`,
//! `SmmSwitchBsp`, `SmmAddProcessor`, `SmmRemoveProcessor`, `SmmWhoAmI`,
//! `SmmRegisterExceptionHandler`) plus the pending-operation handling of
//! MpService.c (`BSPHandler`, "apply pending CPU operations").
//!
//! Writers (Add, Remove, SwitchBsp, the end-of-SMI application) take
//! `Control::hot_plug_lock`, so the table and the APIC ID map have one
//! writer at a time even if a procedure on an AP calls the service.
//! Readers (GetProcessorInfo, WhoAmI, the rendezvous) take no lock.
//!
//! [`ApicMap`] is WhoAmI's O(1) lookup ([DIFF]: EDK2 scans the table).

use crate::cpus::{CpuState, OP_ADD, OP_NONE, OP_REMOVE, OP_SWITCH_BSP};
use crate::efi::{
    CpuInterruptHandler, ExceptionType, ExtendedProcessorInformation, ProcessorInformation, Status,
    INVALID_APIC_ID,
};
use crate::instance::{Instance, NO_BSP};
use crate::memory::Strided;
use crate::stats::Counter;
use crate::sync::atomic::{AtomicU64, Ordering};

/// An unused map entry (ends a probe sequence).
const MAP_EMPTY: u64 = 0;
/// A removed entry (probing continues past it; reused by inserts).
const MAP_TOMBSTONE: u64 = 1 << 32;
const LOW: u64 = 0xFFFF_FFFF;
/// Fibonacci hashing multiplier (2^64 / golden ratio, odd).
const HASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// Open-addressing (linear probing) map from APIC ID to slot, living in
/// the instance region: a power-of-two number of `AtomicU64` entries, at
/// least twice the number of slots, so at most half of them are live.
///
/// Entry encoding: `0` empty; `1 << 32` tombstone; else
/// `(low 32 bits of the APIC ID) << 32 | (slot + 1)`. Slot numbers are
/// below `NumberOfCpus` ≤ 2^32 − 1, so `slot + 1` fits the low half and is
/// never 0. The high half is only a tag: a hit is confirmed against the
/// slot's record, so 64-bit APIC IDs work too.
///
/// Concurrency: one writer (the hot-plug lock), lock-free readers.
/// Invariant: for every live entry at position `q` whose home is `h`,
/// positions `h..q` are non-empty (live or tombstone). Inserts only fill
/// empty or tombstone entries; a removal writes a tombstone and turns
/// tombstones back into empty entries only when the entry after them is
/// empty (nothing can live behind an empty entry in its probe sequence),
/// so the invariant holds at every instant and a lookup of a key that is
/// live for the whole lookup always finds it. A lookup racing with the
/// insertion or removal of its own key sees the map before or after.
pub struct ApicMap<'a> {
    entries: Strided<'a, AtomicU64>,
}

impl<'a> ApicMap<'a> {
    pub fn new(entries: Strided<'a, AtomicU64>) -> Self {
        ApicMap { entries }
    }

    fn mask(&self) -> usize {
        // The length is a power of two >= 2 (Layout::compute).
        self.entries.len().wrapping_sub(1)
    }

    fn home(&self, apic_id: u64) -> usize {
        let bits = self.entries.len().trailing_zeros();
        if bits == 0 {
            return 0;
        }
        (apic_id.wrapping_mul(HASH_MUL) >> (64 - bits)) as usize & self.mask()
    }

    fn load(&self, index: usize) -> u64 {
        // Acquire pairs with the writer's Release stores: a reader that
        // sees an entry sees the record written before it was published.
        self.entries
            .get(index)
            .map_or(MAP_EMPTY, |e| e.load(Ordering::Acquire))
    }

    fn store(&self, index: usize, value: u64) {
        if let Some(e) = self.entries.get(index) {
            // Release: see `load`.
            e.store(value, Ordering::Release)
        }
    }

    fn pack(apic_id: u64, slot: usize) -> u64 {
        ((apic_id & LOW) << 32) | ((slot as u64).wrapping_add(1) & LOW)
    }

    /// The slot of `apic_id`, confirmed by `confirm(slot)` (the slot's
    /// record still holds that APIC ID). O(1) expected; bounded by the map
    /// length in any case.
    pub fn lookup(&self, apic_id: u64, confirm: impl Fn(usize) -> bool) -> Option<usize> {
        let mask = self.mask();
        let mut index = self.home(apic_id);
        for _ in 0..self.entries.len() {
            let e = self.load(index);
            if e == MAP_EMPTY {
                return None;
            }
            let slot_plus_1 = e & LOW;
            if slot_plus_1 != 0 && e >> 32 == apic_id & LOW {
                let slot = (slot_plus_1 - 1) as usize;
                if confirm(slot) {
                    return Some(slot);
                }
            }
            index = (index + 1) & mask;
        }
        None
    }

    /// Add `apic_id → slot` (writer only). `false` when the map is full,
    /// which the sizing rules out.
    pub fn insert(&self, apic_id: u64, slot: usize) -> bool {
        let mask = self.mask();
        let mut index = self.home(apic_id);
        for _ in 0..self.entries.len() {
            let e = self.load(index);
            if e == MAP_EMPTY || e == MAP_TOMBSTONE {
                self.store(index, Self::pack(apic_id, slot));
                return true;
            }
            index = (index + 1) & mask;
        }
        false
    }

    /// Remove `apic_id → slot` (writer only); nothing if absent.
    pub fn remove(&self, apic_id: u64, slot: usize) {
        let mask = self.mask();
        let want = Self::pack(apic_id, slot);
        let mut index = self.home(apic_id);
        for _ in 0..self.entries.len() {
            let e = self.load(index);
            if e == MAP_EMPTY {
                return;
            }
            if e == want {
                self.store(index, MAP_TOMBSTONE);
                // Clean up: tombstones directly before an empty entry end
                // no live probe sequence (see the invariant).
                let mut at = index;
                if self.load((at + 1) & mask) == MAP_EMPTY {
                    for _ in 0..self.entries.len() {
                        if self.load(at) != MAP_TOMBSTONE {
                            break;
                        }
                        self.store(at, MAP_EMPTY);
                        at = at.wrapping_sub(1) & mask;
                    }
                }
                return;
            }
            index = (index + 1) & mask;
        }
    }

    /// Live entries (tests and diagnostics).
    pub fn live(&self) -> usize {
        (0..self.entries.len())
            .filter(|&i| {
                let e = self.load(i);
                e & LOW != 0
            })
            .count()
    }

    /// Tombstones (tests and diagnostics).
    pub fn tombstones(&self) -> usize {
        (0..self.entries.len())
            .filter(|&i| self.load(i) == MAP_TOMBSTONE)
            .count()
    }
}

/// Holds `Control::hot_plug_lock` until dropped.
struct HotPlugGuard<'a> {
    inst: &'a Instance,
}

impl Drop for HotPlugGuard<'_> {
    fn drop(&mut self) {
        // Release: the writer's table and map updates happen before the
        // next writer's Acquire of the lock.
        self.inst
            .control()
            .hot_plug_lock
            .store(false, Ordering::Release);
    }
}

impl Instance {
    fn hot_plug_lock(&self) -> HotPlugGuard<'_> {
        let lock = &self.control().hot_plug_lock;
        // Acquire (success): see the previous writer's updates. Relaxed
        // (failure): we only retry.
        while lock
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.platform.pause();
        }
        HotPlugGuard { inst: self }
    }

    /// The platform's reserved APIC ID of slot `i` (`HotPlugApicId[i]`),
    /// `None` without the array (or a misaligned one).
    fn hot_plug_apic_id(&self, i: usize) -> Option<u64> {
        let p = self.settings.hot_plug_apic_id;
        if p.is_null() || !crate::memory::is_aligned(p as usize, core::mem::align_of::<u64>()) {
            return None;
        }
        if i >= self.number_of_cpus() {
            return None;
        }
        // SAFETY: the integrator's array has NumberOfCpus aligned entries
        // (BEHAVIOUR.md §11) and lives as long as the instance; volatile because
        // the platform's hot-plug handler writes it.
        Some(unsafe { p.add(i).read_volatile() })
    }

    fn set_hot_plug_apic_id(&self, i: usize, value: u64) {
        let p = self.settings.hot_plug_apic_id;
        if p.is_null() || !crate::memory::is_aligned(p as usize, core::mem::align_of::<u64>()) {
            return;
        }
        if i >= self.number_of_cpus() {
            return;
        }
        // SAFETY: as in `hot_plug_apic_id`; the array is the platform's
        // and writable (`volatile UINT64 *`, EDK2 writes it here too).
        unsafe { p.add(i).write_volatile(value) }
    }

    /// The slot holding `apic_id` in the processor table.
    pub fn slot_of_apic_id(&self, apic_id: u64) -> Option<usize> {
        if apic_id == INVALID_APIC_ID {
            return None;
        }
        self.apic_map().lookup(apic_id, |slot| {
            self.cpu(slot).is_some_and(|s| s.apic_id() == apic_id)
        })
    }

    /// GetProcessorInfo (BEHAVIOUR.md §5.2).
    ///
    /// # Safety
    /// A non-null `buffer` must be writable for one record.
    pub unsafe fn get_processor_info(
        &self,
        number: usize,
        buffer: *mut ProcessorInformation,
    ) -> Status {
        let Some(state) = self.cpu(number) else {
            return Status::INVALID_PARAMETER;
        };
        if buffer.is_null() {
            return Status::INVALID_PARAMETER;
        }
        let record = state.record();
        if record.processor_id == INVALID_APIC_ID {
            return Status::NOT_FOUND;
        }
        // SAFETY: non-null; writable by the caller's contract.
        unsafe { buffer.write_unaligned(record) };
        Status::SUCCESS
    }

    /// SwitchBsp (BEHAVIOUR.md §5.2): the slot becomes the only candidate of the
    /// next election (no effect without election).
    pub fn switch_bsp(&self, number: usize) -> Status {
        let Some(state) = self.cpu(number) else {
            return Status::INVALID_PARAMETER;
        };
        let _guard = self.hot_plug_lock();
        if state.is_empty() {
            return Status::NOT_FOUND;
        }
        if state.pending_op() != OP_NONE || self.current_bsp() == number {
            return Status::UNSUPPORTED;
        }
        self.set_pending(state, OP_SWITCH_BSP);
        // Release: pairs with the election's Acquire load of the candidate.
        self.control()
            .bsp_candidate
            .store(number as u32, Ordering::Release);
        Status::SUCCESS
    }

    /// AddProcessor (BEHAVIOUR.md §5.2, §5.3).
    ///
    /// # Safety
    /// A non-null `number` must be writable.
    pub unsafe fn add_processor(&self, processor_id: u64, number: *mut usize) -> Status {
        if !self.settings.hot_plug {
            return Status::UNSUPPORTED;
        }
        if number.is_null() || processor_id == INVALID_APIC_ID {
            return Status::INVALID_PARAMETER;
        }
        let _guard = self.hot_plug_lock();
        if self.slot_of_apic_id(processor_id).is_some() {
            return Status::ALREADY_STARTED;
        }
        let slot = self.cpus().iter().find(|(i, s)| {
            s.is_empty()
                && s.pending_op() == OP_NONE
                && self.hot_plug_apic_id(*i) == Some(processor_id)
        });
        let Some((i, state)) = slot else {
            return Status::INVALID_PARAMETER;
        };
        let mut record = ProcessorInformation::EMPTY;
        if let Some((location, location2)) = self.platform.processor_location(processor_id) {
            record.location = location;
            record.extended_information = ExtendedProcessorInformation { location2 };
        }
        record.processor_id = processor_id;
        record.status_flag = 0;
        state.set_needs_init(true);
        self.set_pending(state, OP_ADD);
        state.set_record(&record);
        // Cannot fail: at most NumberOfCpus live entries in a map of at
        // least twice that size.
        let _ = self.apic_map().insert(processor_id, i);
        // SAFETY: non-null; writable by the caller's contract.
        unsafe { number.write_unaligned(i) };
        Status::SUCCESS
    }

    /// RemoveProcessor (BEHAVIOUR.md §5.2, §5.3).
    pub fn remove_processor(&self, number: usize) -> Status {
        if !self.settings.hot_plug {
            return Status::UNSUPPORTED;
        }
        let Some(state) = self.cpu(number) else {
            return Status::INVALID_PARAMETER;
        };
        let _guard = self.hot_plug_lock();
        let apic_id = state.apic_id();
        if apic_id == INVALID_APIC_ID {
            return Status::INVALID_PARAMETER;
        }
        if self.current_bsp() == number || state.pending_op() != OP_NONE {
            return Status::UNSUPPORTED;
        }
        self.set_pending(state, OP_REMOVE);
        let mut record = state.record();
        record.processor_id = INVALID_APIC_ID;
        state.set_record(&record);
        state.set_needs_init(false);
        self.set_hot_plug_apic_id(number, INVALID_APIC_ID);
        self.apic_map().remove(apic_id, number);
        self.forget_arrival_counts();
        // A removed CPU can never win the election its SwitchBsp asked for
        // (possible when the SwitchBsp's SMI ended before this call):
        // cancel it, or no CPU could become BSP again. AcqRel/Relaxed as
        // the store in `switch_bsp`; we hold the hot-plug lock.
        let _ = self.control().bsp_candidate.compare_exchange(
            number as u32,
            NO_BSP,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        Status::SUCCESS
    }

    /// WhoAmI (BEHAVIOUR.md §5.2), O(1) through the APIC ID map.
    ///
    /// # Safety
    /// A non-null `number` must be writable.
    pub unsafe fn who_am_i(&self, number: *mut usize) -> Status {
        if number.is_null() {
            return Status::INVALID_PARAMETER;
        }
        let Some(slot) = self
            .platform
            .apic_id()
            .and_then(|a| self.slot_of_apic_id(a))
        else {
            return Status::NOT_FOUND;
        };
        // SAFETY: non-null; writable by the caller's contract.
        unsafe { number.write_unaligned(slot) };
        Status::SUCCESS
    }

    /// RegisterExceptionHandler (BEHAVIOUR.md §5.2): the platform's hook.
    pub fn register_exception_handler(
        &self,
        exception_type: ExceptionType,
        handler: CpuInterruptHandler,
    ) -> Status {
        self.platform
            .register_exception_handler(exception_type, handler)
    }

    /// Record a pending operation of a slot (caller holds the hot-plug lock).
    fn set_pending(&self, state: &CpuState, op: u32) {
        state.set_pending_op(op);
        // Release: the end of the SMI that sees the flag sees the operation.
        self.control().ops_pending.store(true, Ordering::Release);
    }

    /// BEHAVIOUR.md §5.3 / §6.3 step 8: apply the pending operations at the end of
    /// the SMI (BSP, after the APs left the dispatch loop). Add: the slot
    /// is now an ordinary CPU, expected once it took its first SMI. Remove:
    /// the slot was emptied at once and is no longer expected. SwitchBsp:
    /// the candidate was recorded at the call and is consumed by the next
    /// election.
    pub fn apply_pending_operations(&self) {
        // Acquire pairs with the Release in `set_pending`.
        if !self.control().ops_pending.load(Ordering::Acquire) {
            return;
        }
        let _guard = self.hot_plug_lock();
        // Relaxed: under the hot-plug lock, as every `set_pending`.
        self.control().ops_pending.store(false, Ordering::Relaxed);
        for (_, s) in self.cpus().iter() {
            // OP_ADD, OP_REMOVE, OP_SWITCH_BSP: nothing left to do but
            // counting and clearing (see above); an unknown value is
            // dropped too.
            match s.pending_op() {
                OP_NONE => continue,
                OP_ADD => self.stats().bump(Counter::CpusAdded),
                OP_REMOVE => self.stats().bump(Counter::CpusRemoved),
                _ => {}
            }
            s.set_pending_op(OP_NONE);
        }
    }

    /// Drop every CPU's kept count of expected CPUs
    /// (`CpuState::arrival_expected`): one fewer CPU is expected now, and
    /// the next arrival wait, whichever CPU is its BSP, must not wait for
    /// it. Called where a CPU stops being expected (removed, marked lost);
    /// a CPU that becomes expected needs nothing, since the wait counts
    /// afresh before it decides.
    pub fn forget_arrival_counts(&self) {
        for (_, s) in self.cpus().iter() {
            // Relaxed: a hint for the arrival wait (see
            // `all_arrived_except_blocked`); the BSP of the next SMI reads
            // it after the SMI boundary's Release/Acquire pairs.
            s.arrival_expected.store(0, Ordering::Relaxed);
        }
    }

    /// Whether slot `cpu` is expected at a rendezvous: non-empty, not
    /// lost, not hot-added in this SMI and past its first (init) SMI —
    /// which must not be the SMI in progress: a CPU whose init-only SMI
    /// coincides with a rendezvous never checks in to it (found by the
    /// C-ABI fuzzer: without a time source the BSP waited forever). If the
    /// init SMI ran alone between two SMIs, the CPU is not waited for in
    /// the next one either (it may still join); it is from then on.
    pub fn is_expected(&self, cpu: usize) -> bool {
        let Some(s) = self.cpu(cpu) else { return false };
        !s.is_empty()
            && !s.needs_init()
            && s.init_seq() != self.flags().smi_seq.load(Ordering::Acquire)
            && s.pending_op() != OP_ADD
            && !self.mailbox(cpu).is_some_and(|m| m.is_lost())
            && !self.broadcasts().is_lost(cpu)
    }
}
