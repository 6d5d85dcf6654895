//! SmmCpuSyncLib-compatible semaphores (BEHAVIOUR.md §7, §6.6, §11 `MmMpSync*`).
//!
//! EDK2 counterpart: `UefiCpuPkg/Library/SmmCpuSyncLib` (the
//! `SMM_CPU_SYNC_CONTEXT` and its eleven functions).
//!
//! Two pieces:
//! * [`SyncView`] — the operations, as methods on a borrowed view of one
//!   arrival counter, one "arrived upon lock" word and one run semaphore per
//!   CPU. The view does not care where those live: the stand-alone context
//!   below, the SMI engine's own region, or a `Vec` in a loom model. One
//!   implementation serves all of them.
//! * [`SyncContext`] — a stand-alone context placed in caller memory
//!   (`MmMpSyncGetRequiredSize`, `MmMpSyncContextInit`):
//!
//! ```text
//! [SyncContext header: magic, CPUs, line, layout, upon-lock word]
//! [arrival counter]            one line
//! [run semaphore] x CPUs       one line each
//! ```
//!
//! Every line is `CacheLineSize` bytes (0 means 64; else a power of two
//! >= 16, the `MM_MP_CONFIG` rule).
//!
//! Differences from EDK2 (all are **[DIFF]**, each repeated on its method):
//! EDK2 `ASSERT`s on bad indices and then indexes memory anyway in release
//! builds; here an out-of-range CPU index never reaches memory — status
//! functions return `EFI_INVALID_PARAMETER`, the others do nothing. No
//! function blocks forever on a caller mistake that can be detected
//! (check-out with nobody checked in, waiting for more APs than exist).

use core::ffi::c_void;
use core::mem::{align_of, size_of};

use crate::efi::Status;
use crate::memory::{is_aligned, ArrayLayout, Carver, Strided, DEFAULT_LINE, MIN_LINE};
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sync::{Semaphore, SEMAPHORE_LOCKED};

static_assertions::const_assert!(align_of::<SyncContext>() <= MIN_LINE);
static_assertions::const_assert!(align_of::<Semaphore>() <= MIN_LINE);
// The header fits one default line, so a context is 2 + NumberOfCpus lines.
#[cfg(not(loom))]
static_assertions::const_assert!(size_of::<SyncContext>() <= DEFAULT_LINE);

/// `SyncContext::magic` of an initialised context.
const MAGIC: u64 = u64::from_le_bytes(*b"MMMPSYNC");

/// The largest `NumberOfCpus` a context accepts: the arrival counter is a
/// 32-bit semaphore whose all-ones value means "locked", and `LOCKED - 1`
/// cannot be reached by a release either (see `Semaphore::release`).
pub const MAX_SYNC_CPUS: usize = (SEMAPHORE_LOCKED - 1) as usize;

// ---------------------------------------------------------------------------
// The operations
// ---------------------------------------------------------------------------

/// A borrowed view of the semaphores of one SmmCpuSyncLib context.
///
/// * `counter` — the arrival counter (EDK2 `CpuCount`): check-in releases
///   it, check-out takes it, the door lock locks it down.
/// * `upon_lock` — the count recorded when the door was locked (EDK2
///   `ArrivedCpuCountUponLock`).
/// * `runs` — one run semaphore per CPU (EDK2 `CpuSem[i].Run`). An AP's
///   own semaphore is the BSP→AP channel; the BSP's own semaphore is the
///   AP→BSP channel (every AP releases it, the BSP takes the counts).
///
/// Every method is safe for any argument: an out-of-range CPU index is a
/// no-op or `EFI_INVALID_PARAMETER`, never a memory access.
pub struct SyncView<'a> {
    counter: &'a Semaphore,
    upon_lock: &'a AtomicU32,
    runs: Strided<'a, Semaphore>,
    cpus: usize,
}

/// Take as many counts as are available now from `run`, up to
/// `*remaining`, decrementing `*remaining` for each; `true` once it is 0.
/// The body of `try_wait_for_aps`, also used by the rendezvous engine,
/// which has the BSP's run semaphore at hand.
#[inline(always)]
pub fn take_counts(run: &Semaphore, remaining: &mut u32) -> bool {
    while *remaining > 0 && run.try_wait() {
        *remaining -= 1;
    }
    *remaining == 0
}

impl<'a> SyncView<'a> {
    /// A view over semaphores that live elsewhere; the number of CPUs is
    /// the length of `runs`.
    pub fn new(
        counter: &'a Semaphore,
        upon_lock: &'a AtomicU32,
        runs: Strided<'a, Semaphore>,
    ) -> Self {
        let cpus = runs.len();
        SyncView {
            counter,
            upon_lock,
            runs,
            cpus,
        }
    }

    /// Number of CPUs (run semaphores) of the context.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Whether `cpu` and `bsp` are both CPUs of this context and different
    /// CPUs: EDK2's `ASSERT`s of ReleaseOneAp / WaitForBsp / ReleaseBsp.
    /// The C wrappers of `ReleaseOneAp` and `ReleaseBsp`, which receive
    /// both indices, do nothing when this is false (**[DIFF]**: EDK2
    /// asserts, then releases the semaphore anyway — with `CpuIndex ==
    /// BspIndex` that plants a count on the AP→BSP channel).
    pub fn is_pair(&self, cpu: usize, bsp: usize) -> bool {
        cpu < self.cpus && bsp < self.cpus && cpu != bsp
    }

    /// The arrival counter (diagnostics, tests, the SMI engine).
    pub fn counter(&self) -> &'a Semaphore {
        self.counter
    }

    /// Run semaphore of `cpu`, `None` when out of range (diagnostics, tests,
    /// the SMI engine).
    pub fn run(&self, cpu: usize) -> Option<&'a Semaphore> {
        self.runs.get(cpu)
    }

    /// `SmmCpuSyncContextReset`: the arrival count goes back to 0 and the
    /// door opens. The run semaphores are not touched: a correct flow has
    /// balanced every release with a wait, so they are already 0
    /// (BEHAVIOUR.md §6.6). Called by one CPU once every CPU is ready to leave the SMI.
    pub fn reset(&self) {
        // Relaxed store, published by the Release of `set` just below: a
        // CPU that reads the reopened counter (Acquire in `value`) also
        // reads upon-lock = 0. EDK2 clears the upon-lock count first too.
        self.upon_lock.store(0, Ordering::Relaxed);
        self.counter.set(0);
    }

    /// `SmmCpuSyncGetArrivedCpuCount`: the count recorded by the door lock
    /// once the door is locked, else the live count.
    ///
    /// A CPU other than the locker that reads while the lock is being taken
    /// may get the count the locker sampled just before its lock (at most a
    /// few check-ins/check-outs older): EDK2 behaves the same way. The
    /// locker itself, and everyone after it returned, reads the final count.
    pub fn arrived_count(&self) -> usize {
        let value = self.counter.value();
        if value == SEMAPHORE_LOCKED {
            // Having seen LOCKED (Acquire, from the locker's Release swap)
            // we see at least the sample `lock_door` stored before the swap.
            // Acquire here pairs with the Release store of the exact count:
            // who reads it also sees what the locker did before.
            self.upon_lock.load(Ordering::Acquire) as usize
        } else {
            value as usize
        }
    }

    /// `SmmCpuSyncCheckInCpu`: count this CPU in.
    ///
    /// * `EFI_SUCCESS` — counted.
    /// * `EFI_ABORTED` — the door is locked; not counted.
    /// * `EFI_INVALID_PARAMETER` — `cpu` is not a CPU of this context
    ///   (**[DIFF]**: EDK2 asserts, then counts it anyway).
    ///
    /// Like EDK2, a CPU that checks in twice is counted twice.
    pub fn check_in(&self, cpu: usize) -> Status {
        if cpu >= self.cpus {
            return Status::INVALID_PARAMETER;
        }
        match self.counter.release() {
            Some(_) => Status::SUCCESS,
            None => Status::ABORTED,
        }
    }

    /// `SmmCpuSyncCheckOutCpu`: take back an earlier check-in (error paths,
    /// e.g. an AP that gives up waiting for the BSP).
    ///
    /// * `EFI_SUCCESS` — the count went down by one.
    /// * `EFI_ABORTED` — the door is locked; nothing changed.
    /// * `EFI_INVALID_PARAMETER` — `cpu` is not a CPU of this context
    ///   (**[DIFF]**: EDK2 asserts), or the count is 0 so no CPU can be
    ///   checked in (**[DIFF]**: EDK2 spins until some other CPU checks in
    ///   and then takes that CPU's count, leaving the arrival count one
    ///   short; here nothing changes and the call returns at once).
    pub fn check_out(&self, cpu: usize) -> Status {
        if cpu >= self.cpus {
            return Status::INVALID_PARAMETER;
        }
        match self.counter.decrement_unless_locked() {
            Some(true) => Status::SUCCESS,
            Some(false) => Status::INVALID_PARAMETER,
            None => Status::ABORTED,
        }
    }

    /// `SmmCpuSyncLockDoor`: lock the arrival counter so that later
    /// check-ins and check-outs fail with `EFI_ABORTED`; record and return
    /// the number of CPUs checked in at the moment of locking.
    ///
    /// Like EDK2, the count is sampled into the upon-lock word *before* the
    /// lock, so a CPU that sees the locked counter never reads the 0 left by
    /// the last reset; the sample is overwritten with the exact count right
    /// after the lock.
    ///
    /// **[DIFF]** Locking an already locked door returns the count recorded
    /// by the first lock and changes nothing. EDK2 records all ones
    /// (0xFFFFFFFF) as the count, which `GetArrivedCpuCount` then reports.
    ///
    /// Only the elected BSP locks the door (EDK2's contract). If two CPUs
    /// race to lock anyway, the door is locked exactly once and both calls
    /// return, but the loser's pre-lock sample may overwrite the recorded
    /// count (the door itself stays consistent).
    ///
    /// EDK2 only asserts the `CpuIndex` argument of `SmmCpuSyncLockDoor`
    /// and never uses it; the lock does not depend on it.
    pub fn lock_door(&self) -> usize {
        let now = self.counter.value();
        if now == SEMAPHORE_LOCKED {
            // Acquire: as in `arrived_count`.
            return self.upon_lock.load(Ordering::Acquire) as usize;
        }
        // Relaxed: the AcqRel swap right after publishes this sample; anyone
        // whose Acquire load of the counter sees LOCKED also sees it (or
        // the exact count stored below). The loom model
        // `check_in_races_lock_door` fails without this sample.
        self.upon_lock.store(now, Ordering::Relaxed);
        let count = self.counter.lock_down();
        if count == SEMAPHORE_LOCKED {
            // Another CPU locked between our look and our swap (outside
            // the contract, see above). Acquire: as in `arrived_count`.
            return self.upon_lock.load(Ordering::Acquire) as usize;
        }
        // Release: a reader whose Acquire load returns the exact count also
        // sees everything this CPU did before locking.
        self.upon_lock.store(count, Ordering::Release);
        count as usize
    }

    /// Non-blocking half of `SmmCpuSyncWaitForBsp`: take one release from
    /// this AP's run semaphore. `true` when taken.
    ///
    /// **[DIFF]** An out-of-range `cpu` has nothing to wait for: `true` at
    /// once, nothing touched (a stepping caller never spins forever on it).
    pub fn try_wait_for_bsp(&self, cpu: usize) -> bool {
        match self.runs.get(cpu) {
            Some(run) => run.try_wait(),
            None => true,
        }
    }

    /// `SmmCpuSyncReleaseBsp` (AP side): give the BSP one count on its own
    /// run semaphore. Out-of-range `bsp`: nothing happens (**[DIFF]**).
    pub fn release_bsp(&self, bsp: usize) {
        if let Some(run) = self.runs.get(bsp) {
            // A locked run semaphore (never produced by this API) refuses
            // the release, as in EDK2.
            let _ = run.release();
        }
    }

    /// `SmmCpuSyncReleaseOneAp` (BSP side): give AP `cpu` one count on its
    /// run semaphore. Out-of-range `cpu`: nothing happens (**[DIFF]**).
    pub fn release_one_ap(&self, cpu: usize) {
        if let Some(run) = self.runs.get(cpu) {
            let _ = run.release();
        }
    }

    /// Non-blocking form of `SmmCpuSyncWaitForAPs`: take as many counts as
    /// are available now from the BSP's run semaphore, up to `*remaining`,
    /// decrementing `*remaining` for each. `true` once `*remaining` is 0.
    ///
    /// **[DIFF]** An out-of-range `bsp` has nothing to wait for: `true` at
    /// once, `*remaining` untouched.
    pub fn try_wait_for_aps(&self, bsp: usize, remaining: &mut u32) -> bool {
        let Some(run) = self.runs.get(bsp) else {
            return true;
        };
        take_counts(run, remaining)
    }

    /// `SmmCpuSyncWaitForAPs`: the BSP takes `n` counts from its own run
    /// semaphore (one per AP that called `release_bsp`), calling `pause`
    /// between attempts.
    ///
    /// **[DIFF]** `bsp` out of range, or `n >= cpus` (more APs than exist:
    /// EDK2 asserts `NumberOfAPs < NumberOfCpus`, then may wait forever):
    /// returns at once, nothing taken.
    pub fn wait_for_aps(&self, n: usize, bsp: usize, pause: impl Fn()) {
        if bsp >= self.cpus || n >= self.cpus {
            return;
        }
        let Ok(mut remaining) = u32::try_from(n) else {
            return;
        };
        while !self.try_wait_for_aps(bsp, &mut remaining) {
            pause();
        }
    }

    /// `SmmCpuSyncWaitForBsp`: AP `cpu` takes one count from its own run
    /// semaphore, calling `pause` between attempts.
    ///
    /// **[DIFF]** `cpu` or `bsp` out of range, or `cpu == bsp` (EDK2 asserts
    /// all three; with `cpu == bsp` it would steal a count from the AP→BSP
    /// channel): returns at once, nothing taken.
    pub fn wait_for_bsp(&self, cpu: usize, bsp: usize, pause: impl Fn()) {
        if !self.is_pair(cpu, bsp) {
            return;
        }
        while !self.try_wait_for_bsp(cpu) {
            pause();
        }
    }
}

// ---------------------------------------------------------------------------
// The stand-alone context in caller memory
// ---------------------------------------------------------------------------

/// Where the semaphores of a stand-alone context live, relative to its
/// start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct SyncLayout {
    counter: usize,
    runs: ArrayLayout,
    total: usize,
}

impl SyncLayout {
    fn compute(cpus: usize, line: usize) -> Option<SyncLayout> {
        let mut c = Carver::new(line);
        // The header is the first area, at offset 0.
        c.area(size_of::<SyncContext>())?;
        let counter = c.area(size_of::<Semaphore>())?;
        let runs = c.array(size_of::<Semaphore>(), cpus, true)?;
        let total = c.finish()?;
        Some(SyncLayout {
            counter,
            runs,
            total,
        })
    }
}

/// Validate `(NumberOfCpus, CacheLineSize)`; returns the line size in
/// force and the layout.
fn validate(cpus: usize, line: usize) -> Result<(usize, SyncLayout), Status> {
    if cpus == 0 || cpus > MAX_SYNC_CPUS {
        return Err(Status::INVALID_PARAMETER);
    }
    let line = match line {
        0 => DEFAULT_LINE,
        n if n.is_power_of_two() && n >= MIN_LINE => n,
        _ => return Err(Status::INVALID_PARAMETER),
    };
    let layout = SyncLayout::compute(cpus, line).ok_or(Status::OUT_OF_RESOURCES)?;
    Ok((line, layout))
}

/// `MM_MP_SYNC_CONTEXT`: the header of a stand-alone SmmCpuSyncLib
/// context, at the start of the caller's buffer (opaque to C).
#[repr(C)]
pub struct SyncContext {
    magic: u64,
    line: usize,
    /// Offsets of the semaphores; `layout.runs.len` is the number of CPUs.
    layout: SyncLayout,
    /// EDK2 `ArrivedCpuCountUponLock`. The only atomic outside
    /// `Semaphore`; its orderings are justified where it is used
    /// ([`SyncView::reset`], [`SyncView::lock_door`],
    /// [`SyncView::arrived_count`]).
    upon_lock: AtomicU32,
}

/// `MmMpSyncGetRequiredSize`: bytes a context for `cpus` CPUs with lines of
/// `line` bytes (0 = 64) needs.
///
/// Errors (the caller-memory variant's rules, aligned with
/// `MmMpGetRequiredSize`/`MmMpInitialize` of BEHAVIOUR.md §11 rather than with
/// EDK2's allocating `SmmCpuSyncContextInit`, which reports a size overflow
/// as `BUFFER_TOO_SMALL`):
/// * `EFI_INVALID_PARAMETER` — `cpus` is 0 or above [`MAX_SYNC_CPUS`]
///   (the 32-bit counter could not count them), or `line` is neither 0 nor
///   a power of two >= 16;
/// * `EFI_OUT_OF_RESOURCES` — the size does not fit the address space.
pub fn required_size(cpus: usize, line: usize) -> Result<usize, Status> {
    validate(cpus, line).map(|(_, layout)| layout.total)
}

impl SyncContext {
    /// `MmMpSyncContextInit`: build a context for `cpus` CPUs in `buffer`.
    ///
    /// Checks, in this order (nothing is written to `buffer` on any error):
    /// * `buffer` or `out` NULL, `cpus`/`line` invalid (see
    ///   [`required_size`]) → `EFI_INVALID_PARAMETER`;
    /// * size arithmetic overflow → `EFI_OUT_OF_RESOURCES`;
    /// * `buffer` not aligned to the line size → `EFI_INVALID_PARAMETER`;
    /// * `size` below [`required_size`] → `EFI_BUFFER_TOO_SMALL`.
    ///
    /// On success `*out` is the context (= `buffer`); on error, when `out`
    /// is not NULL, `*out` is NULL (EDK2's documented contract for
    /// `SmmCpuSyncContextInit`; its code actually leaves it unset, or
    /// pointing at freed pool when the second allocation fails).
    ///
    /// Every semaphore starts at 0 and the door is open.
    ///
    /// # Safety
    /// A non-null `buffer` must be valid for writes of `size` bytes and not
    /// be used for anything else while the context lives; a non-null `out`
    /// must be valid for a pointer-sized write (any alignment).
    pub unsafe fn init(
        buffer: *mut c_void,
        size: usize,
        cpus: usize,
        line: usize,
        out: *mut *mut SyncContext,
    ) -> Status {
        if out.is_null() {
            return Status::INVALID_PARAMETER;
        }
        // SAFETY: `out` is non-null and valid for a pointer-sized write by
        // the caller's contract; unaligned write because C callers may hand
        // us any address.
        let fail = |status: Status| unsafe {
            out.write_unaligned(core::ptr::null_mut());
            status
        };
        if buffer.is_null() {
            return fail(Status::INVALID_PARAMETER);
        }
        let (line, layout) = match validate(cpus, line) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        if !is_aligned(buffer as usize, line) {
            return fail(Status::INVALID_PARAMETER);
        }
        if size < layout.total {
            return fail(Status::BUFFER_TOO_SMALL);
        }
        let base = buffer as *mut u8;
        // SAFETY: `base` is valid for `layout.total <= size` bytes of
        // writes and aligned to `line`; every offset comes from `layout`
        // (checked arithmetic, each area inside `total`, on a line
        // boundary, so aligned for `Semaphore` and `SyncContext`, whose
        // alignments are <= MIN_LINE <= line as asserted above). `write`
        // does not read or drop the old bytes.
        unsafe {
            (base.add(layout.counter) as *mut Semaphore).write(Semaphore::new(0));
            for i in 0..cpus {
                (base.add(layout.runs.offset + i * layout.runs.stride) as *mut Semaphore)
                    .write(Semaphore::new(0));
            }
            (base as *mut SyncContext).write(SyncContext {
                magic: MAGIC,
                line,
                layout,
                upon_lock: AtomicU32::new(0),
            });
            out.write_unaligned(base as *mut SyncContext);
        }
        Status::SUCCESS
    }

    /// Turn a C context pointer into a reference: NULL, a misaligned
    /// pointer, a wrong magic word, or a header whose layout is not the one
    /// its own `(cpus, line)` give or whose address is not on a line
    /// → `None`.
    ///
    /// # Safety
    /// A non-null, aligned `ptr` must point to readable memory of at least
    /// `size_of::<SyncContext>()` bytes; if it is a context built by
    /// [`SyncContext::init`], that context must live for `'a`.
    pub unsafe fn from_ptr<'a>(ptr: *const SyncContext) -> Option<&'a SyncContext> {
        if ptr.is_null() || !is_aligned(ptr as usize, align_of::<SyncContext>()) {
            return None;
        }
        // SAFETY: `magic` is a plain u64 inside readable memory by the
        // caller's contract; volatile so the check is not folded away on a
        // pointer the compiler believes to be valid.
        let magic = unsafe { core::ptr::addr_of!((*ptr).magic).read_volatile() };
        if magic != MAGIC {
            return None;
        }
        // SAFETY: non-null, aligned, readable, and carrying the magic word
        // that only `init` writes, after every semaphore is in place.
        let ctx = unsafe { &*ptr };
        match validate(ctx.cpus(), ctx.line) {
            Ok((line, layout))
                if line == ctx.line && layout == ctx.layout && is_aligned(ptr as usize, line) =>
            {
                Some(ctx)
            }
            _ => None,
        }
    }

    /// Number of CPUs of the context.
    pub fn cpus(&self) -> usize {
        self.layout.runs.len
    }

    /// The cache-line size in force (0 at init became 64).
    pub fn line(&self) -> usize {
        self.line
    }

    /// Bytes the context occupies.
    pub fn size(&self) -> usize {
        self.layout.total
    }

    /// The operations, over this context's semaphores.
    pub fn view(&self) -> SyncView<'_> {
        let base = self as *const SyncContext as *const u8;
        // SAFETY: `init` wrote a `Semaphore` at `layout.counter` inside the
        // region this header starts; `from_ptr`/`init` are the only ways to
        // get a `&SyncContext` outside this module, and both guarantee the
        // region lives as long as the reference.
        let counter = unsafe { &*(base.add(self.layout.counter) as *const Semaphore) };
        // SAFETY: `layout.runs` describes the `cpus` run semaphores `init`
        // wrote, one per line, in the same region; they are atomics and
        // only ever shared.
        let runs = unsafe { Strided::new(base, self.layout.runs) };
        SyncView::new(counter, &self.upon_lock, runs)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use std::vec::Vec;

    /// A zeroed, `align`-aligned heap buffer.
    struct Buf {
        ptr: *mut u8,
        layout: Layout,
    }

    impl Buf {
        fn new(size: usize, align: usize) -> Buf {
            let layout = Layout::from_size_align(size.max(1), align).unwrap();
            // SAFETY: non-zero size.
            let ptr = unsafe { alloc_zeroed(layout) };
            assert!(!ptr.is_null());
            Buf { ptr, layout }
        }
        fn bytes(&self) -> &[u8] {
            // SAFETY: `ptr` is a live allocation of `layout.size()` bytes.
            unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
        }
    }

    impl Drop for Buf {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.ptr, self.layout) }
        }
    }

    fn make(buf: &Buf, cpus: usize, line: usize) -> &SyncContext {
        let mut out = core::ptr::null_mut();
        // SAFETY: `buf` is valid for its whole size.
        let st =
            unsafe { SyncContext::init(buf.ptr.cast(), buf.layout.size(), cpus, line, &mut out) };
        assert_eq!(st, Status::SUCCESS);
        // SAFETY: just initialised; lives as long as `buf`.
        unsafe { SyncContext::from_ptr(out) }.unwrap()
    }

    #[test]
    fn sizes() {
        // header line + counter line + one line per CPU
        assert_eq!(required_size(1, 0), Ok(3 * 64));
        assert_eq!(required_size(4, 64), Ok(6 * 64));
        assert_eq!(required_size(4, 128), Ok(6 * 128));
        let hdr = size_of::<SyncContext>().next_multiple_of(16);
        assert_eq!(required_size(2, 16), Ok(hdr + 16 + 2 * 16));
        assert_eq!(required_size(0, 64), Err(Status::INVALID_PARAMETER));
        assert_eq!(required_size(1, 48), Err(Status::INVALID_PARAMETER));
        assert_eq!(required_size(1, 8), Err(Status::INVALID_PARAMETER));
        assert_eq!(
            required_size(MAX_SYNC_CPUS + 1, 64),
            Err(Status::INVALID_PARAMETER)
        );
        assert_eq!(
            required_size(1, 1 << (usize::BITS - 1)),
            Err(Status::OUT_OF_RESOURCES)
        );
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            required_size(MAX_SYNC_CPUS, 1 << 40),
            Err(Status::OUT_OF_RESOURCES)
        );
    }

    #[test]
    fn init_errors_write_nothing() {
        let size = required_size(4, 64).unwrap();
        let buf = Buf::new(size + 64, 64);
        let mut out = 1usize as *mut SyncContext;
        let cases: [(*mut c_void, usize, usize, usize, Status); 6] = [
            (
                core::ptr::null_mut(),
                size,
                4,
                64,
                Status::INVALID_PARAMETER,
            ),
            (buf.ptr.cast(), size, 0, 64, Status::INVALID_PARAMETER),
            (buf.ptr.cast(), size, 4, 100, Status::INVALID_PARAMETER),
            // SAFETY (pointer arithmetic only): inside the allocation.
            (
                unsafe { buf.ptr.add(16) }.cast(),
                size,
                4,
                64,
                Status::INVALID_PARAMETER,
            ),
            (buf.ptr.cast(), size - 1, 4, 64, Status::BUFFER_TOO_SMALL),
            (
                buf.ptr.cast(),
                size,
                4,
                1 << (usize::BITS - 1),
                Status::OUT_OF_RESOURCES,
            ),
        ];
        for (b, s, c, l, want) in cases {
            out = 1usize as *mut SyncContext;
            // SAFETY: `b` is NULL or inside `buf` with `s` bytes available.
            let st = unsafe { SyncContext::init(b, s, c, l, &mut out) };
            assert_eq!(st, want);
            assert!(out.is_null());
            assert!(buf.bytes().iter().all(|&x| x == 0));
        }
        // SAFETY: valid buffer; `out` NULL is rejected before any write.
        let st = unsafe { SyncContext::init(buf.ptr.cast(), size, 4, 64, core::ptr::null_mut()) };
        assert_eq!(st, Status::INVALID_PARAMETER);
        assert!(buf.bytes().iter().all(|&x| x == 0));
        let _ = out;
    }

    #[test]
    fn from_ptr_rejects() {
        // SAFETY: NULL is rejected before any read.
        assert!(unsafe { SyncContext::from_ptr(core::ptr::null()) }.is_none());
        let buf = Buf::new(1024, 64);
        // SAFETY: zeroed readable memory; no magic.
        assert!(unsafe { SyncContext::from_ptr(buf.ptr.cast()) }.is_none());
        // SAFETY: misaligned pointers are rejected before any read.
        assert!(unsafe { SyncContext::from_ptr(buf.ptr.add(1).cast()) }.is_none());
        let ctx = make(&buf, 3, 64);
        assert_eq!((ctx.cpus(), ctx.line(), ctx.size()), (3, 64, 5 * 64));
        // Corrupt the line size: the stored layout no longer matches the
        // one (cpus, line) give (`ctx` is not used again).
        // SAFETY: the `line` field of the header lies inside `buf`.
        unsafe {
            buf.ptr
                .add(core::mem::offset_of!(SyncContext, line))
                .cast::<usize>()
                .write(128)
        };
        // SAFETY: readable header.
        assert!(unsafe { SyncContext::from_ptr(buf.ptr.cast()) }.is_none());
    }

    #[test]
    fn lifecycle_single_thread() {
        let size = required_size(4, 0).unwrap();
        let buf = Buf::new(size, 64);
        let ctx = make(&buf, 4, 0);
        let v = ctx.view();
        assert_eq!(v.cpus(), 4);
        assert_eq!(v.arrived_count(), 0);
        for cpu in 0..3 {
            assert_eq!(v.check_in(cpu), Status::SUCCESS);
        }
        assert_eq!(v.arrived_count(), 3);
        assert_eq!(v.check_out(2), Status::SUCCESS);
        assert_eq!(v.arrived_count(), 2);
        assert_eq!(v.lock_door(), 2);
        assert_eq!(v.arrived_count(), 2);
        assert_eq!(v.check_in(3), Status::ABORTED);
        assert_eq!(v.check_out(1), Status::ABORTED);
        assert_eq!(v.lock_door(), 2, "second lock keeps the count");
        assert_eq!(v.arrived_count(), 2);

        // barrier round: BSP 0, AP 1
        v.release_one_ap(1);
        assert!(v.try_wait_for_bsp(1));
        assert!(!v.try_wait_for_bsp(1));
        let mut remaining = 1;
        assert!(!v.try_wait_for_aps(0, &mut remaining));
        v.release_bsp(0);
        assert!(v.try_wait_for_aps(0, &mut remaining));
        assert_eq!(remaining, 0);
        assert!((0..4).all(|i| v.run(i).unwrap().value() == 0));

        v.reset();
        assert_eq!(v.arrived_count(), 0);
        assert_eq!(v.check_in(0), Status::SUCCESS);
        assert_eq!(v.arrived_count(), 1);
    }

    #[test]
    fn try_wait_for_aps_takes_what_is_there() {
        let buf = Buf::new(required_size(4, 64).unwrap(), 64);
        let v = make(&buf, 4, 64).view();
        v.release_bsp(2);
        v.release_bsp(2);
        let mut remaining = 3;
        assert!(!v.try_wait_for_aps(2, &mut remaining));
        assert_eq!(remaining, 1);
        v.release_bsp(2);
        v.release_bsp(2);
        assert!(v.try_wait_for_aps(2, &mut remaining));
        assert_eq!(remaining, 0);
        // the extra count stays for the next wait
        assert_eq!(v.run(2).unwrap().value(), 1);
        let mut zero = 0;
        assert!(v.try_wait_for_aps(2, &mut zero));
        assert_eq!(v.run(2).unwrap().value(), 1);
    }

    #[test]
    fn hostile_indices_touch_nothing() {
        let buf = Buf::new(required_size(2, 64).unwrap(), 64);
        let ctx = make(&buf, 2, 64);
        let v = ctx.view();
        let before: Vec<u8> = buf.bytes().to_vec();
        for bad in [2, 3, usize::MAX / 2, usize::MAX] {
            assert_eq!(v.check_in(bad), Status::INVALID_PARAMETER);
            assert_eq!(v.check_out(bad), Status::INVALID_PARAMETER);
            v.release_bsp(bad);
            v.release_one_ap(bad);
            assert!(v.try_wait_for_bsp(bad));
            let mut r = 5;
            assert!(v.try_wait_for_aps(bad, &mut r));
            assert_eq!(r, 5);
            let never = || panic!("must not wait");
            v.wait_for_aps(1, bad, never);
            v.wait_for_aps(bad, 0, never);
            v.wait_for_bsp(bad, 0, never);
            v.wait_for_bsp(1, bad, never);
            assert!(v.run(bad).is_none());
            assert!(!v.is_pair(bad, 0) && !v.is_pair(0, bad));
        }
        let never = || panic!("must not wait");
        v.wait_for_bsp(1, 1, never);
        v.wait_for_aps(2, 0, never);
        assert_eq!(
            v.check_out(0),
            Status::INVALID_PARAMETER,
            "nobody checked in"
        );
        assert_eq!(before, buf.bytes());
        assert!(v.is_pair(0, 1) && !v.is_pair(1, 1));
        v.wait_for_aps(0, 0, never);
    }
}
