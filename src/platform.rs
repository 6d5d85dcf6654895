//! The integrator's side: `MM_MP_CONFIG` and `MM_MP_PLATFORM` (BEHAVIOUR.md §8,
//! §11) and safe wrappers around every callback. An absent (NULL) optional
//! callback means "feature off" with the default BEHAVIOUR.md §8 names, never a crash.
//!
//! The tables are copied into the instance by `MmMpInitialize`; the
//! wrappers here read the copy.

use core::ffi::{c_void, CStr};

use crate::efi::{
    Boolean, CpuInterruptHandler, CpuPhysicalLocation, CpuPhysicalLocation2, ExceptionType,
    ProcessorInformation, Status,
};
use crate::sync::PauseFn;

/// `MM_MP_CONFIG_REVISION`.
pub const MM_MP_CONFIG_REVISION: u32 = 1;
/// `MM_MP_PLATFORM_REVISION`.
pub const MM_MP_PLATFORM_REVISION: u32 = 1;
/// `MM_MP_SYNC_MODE_TRADITIONAL`: every arriving CPU rendezvous before any handler runs.
pub const MM_MP_SYNC_MODE_TRADITIONAL: u32 = 0;
/// `MM_MP_SYNC_MODE_RELAXED`: the BSP runs handlers at once; APs join as they arrive.
pub const MM_MP_SYNC_MODE_RELAXED: u32 = 1;

/// `MM_MP_CONFIG` (docs/BEHAVIOUR.md §11). EDK2 counterpart: the PcdCpuSmm* PCDs and
/// `gSmmCpuPrivate->ProcessorInfo` that PiSmmCpuDxeSmm reads at start-up.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MmMpConfig {
    pub revision: u32,
    pub number_of_cpus: u32,
    pub max_tokens: u32,
    pub cache_line_size: u32,
    pub sync_mode: u32,
    pub bsp_index: u32,
    pub bsp_election: Boolean,
    pub hot_plug_support: Boolean,
    pub blocking_startup_this_ap: Boolean,
    pub configure_mtrrs: Boolean,
    pub reserved: u32,
    pub ap_sync_timeout_us: u64,
    pub ap_sync_timeout2_us: u64,
    pub processor_info: *const ProcessorInformation,
    pub hot_plug_apic_id: *mut u64,
}

/// `MM_MP_PLATFORM` (docs/BEHAVIOUR.md §8, §11). EDK2 counterpart: SmmCpuFeaturesLib,
/// SmmCpuPlatformHookLib, LocalApicLib, TimerLib, MtrrLib and the
/// `SmmCoreEntry` pointer PiSmmCpuDxeSmm calls.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MmMpPlatform {
    pub revision: u32,
    pub reserved: u32,
    pub context: *mut c_void,
    pub ticks_per_second: u64,
    pub get_ticks: Option<unsafe extern "efiapi" fn(context: *mut c_void) -> u64>,
    pub cpu_pause: PauseFn,
    pub get_apic_id: Option<unsafe extern "efiapi" fn(context: *mut c_void) -> u64>,
    pub send_smi_ipi: Option<unsafe extern "efiapi" fn(context: *mut c_void, apic_id: u64)>,
    pub is_valid_smi: Option<unsafe extern "efiapi" fn(context: *mut c_void) -> Boolean>,
    pub clear_top_level_smi_status:
        Option<unsafe extern "efiapi" fn(context: *mut c_void) -> Boolean>,
    pub bsp_election:
        Option<unsafe extern "efiapi" fn(context: *mut c_void, is_bsp: *mut Boolean) -> Status>,
    pub rendezvous_entry: Option<unsafe extern "efiapi" fn(context: *mut c_void, cpu_index: usize)>,
    pub rendezvous_exit: Option<unsafe extern "efiapi" fn(context: *mut c_void, cpu_index: usize)>,
    pub before_mmi_handler:
        Option<unsafe extern "efiapi" fn(context: *mut c_void, cpu_index: usize)>,
    pub is_sync_always_needed: Option<unsafe extern "efiapi" fn(context: *mut c_void) -> Boolean>,
    pub get_smm_delayed_blocked_disabled_count: Option<
        unsafe extern "efiapi" fn(
            context: *mut c_void,
            delayed: *mut u32,
            blocked: *mut u32,
            disabled: *mut u32,
        ),
    >,
    pub mtrr_save: Option<unsafe extern "efiapi" fn(context: *mut c_void, cpu_index: usize)>,
    pub mtrr_replace: Option<unsafe extern "efiapi" fn(context: *mut c_void, cpu_index: usize)>,
    pub mtrr_restore: Option<unsafe extern "efiapi" fn(context: *mut c_void, cpu_index: usize)>,
    pub mm_foundation_entry:
        Option<unsafe extern "efiapi" fn(context: *mut c_void, bsp_index: usize)>,
    pub get_processor_location: Option<
        unsafe extern "efiapi" fn(
            context: *mut c_void,
            apic_id: u64,
            location: *mut CpuPhysicalLocation,
            location2: *mut CpuPhysicalLocation2,
        ) -> Status,
    >,
    pub register_exception_handler: Option<
        unsafe extern "efiapi" fn(
            context: *mut c_void,
            exception_type: ExceptionType,
            handler: CpuInterruptHandler,
        ) -> Status,
    >,
    pub fatal:
        Option<unsafe extern "efiapi" fn(context: *mut c_void, message: *const core::ffi::c_char)>,
    pub log: Option<
        unsafe extern "efiapi" fn(
            context: *mut c_void,
            level: usize,
            message: *const core::ffi::c_char,
        ),
    >,
}

#[cfg(target_pointer_width = "64")]
mod x64_layout {
    use super::*;
    use core::mem::{offset_of, size_of};
    use static_assertions::const_assert_eq;
    const_assert_eq!(offset_of!(MmMpConfig, bsp_election), 24);
    const_assert_eq!(offset_of!(MmMpConfig, reserved), 28);
    const_assert_eq!(offset_of!(MmMpConfig, ap_sync_timeout_us), 32);
    const_assert_eq!(offset_of!(MmMpConfig, processor_info), 48);
    const_assert_eq!(size_of::<MmMpConfig>(), 64);
    const_assert_eq!(offset_of!(MmMpPlatform, context), 8);
    const_assert_eq!(offset_of!(MmMpPlatform, get_ticks), 24);
    const_assert_eq!(offset_of!(MmMpPlatform, log), 24 + 19 * 8);
    const_assert_eq!(size_of::<MmMpPlatform>(), 24 + 20 * 8);
}

/// Debug levels passed to the `Log` hook (EDK2 `DEBUG_*` values).
pub const LOG_INFO: usize = 0x0000_0040;
pub const LOG_WARN: usize = 0x0000_0002;
pub const LOG_ERROR: usize = 0x8000_0000;

/// A point in time after which a wait gives up (only with a time source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    start: u64,
    ticks: u64,
}

impl Deadline {
    /// Rebuild a deadline stored as (start, ticks).
    pub fn from_parts(start: u64, ticks: u64) -> Self {
        Deadline { start, ticks }
    }

    /// (start, ticks), for storing in atomics.
    pub fn parts(self) -> (u64, u64) {
        (self.start, self.ticks)
    }
}

impl MmMpPlatform {
    /// Whether the integrator gave a time source (timeouts supported).
    pub fn has_time_source(&self) -> bool {
        self.ticks_per_second != 0 && self.get_ticks.is_some()
    }

    /// Current tick count; 0 without a time source.
    pub fn now(&self) -> u64 {
        match self.get_ticks {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            Some(f) => unsafe { f(self.context) },
            None => 0,
        }
    }

    /// A deadline `us` microseconds from now; `None` when there is no time
    /// source or `us` is 0 (wait for ever, as EDK2).
    pub fn deadline_after_us(&self, us: u64) -> Option<Deadline> {
        let ticks = self.ticks_for_us(us)?;
        Some(Deadline {
            start: self.now(),
            ticks,
        })
    }

    /// How many ticks `us` microseconds last (at least 1); `None` when
    /// there is no time source or `us` is 0.
    pub fn ticks_for_us(&self, us: u64) -> Option<u64> {
        if us == 0 || !self.has_time_source() {
            return None;
        }
        // No 128-bit arithmetic in firmware: saturate instead. A saturated
        // deadline is ~584 years at 1 GHz, i.e. "never".
        let ticks = us.saturating_mul(self.ticks_per_second) / 1_000_000;
        Some(ticks.max(1))
    }

    /// Whether `deadline` has passed (never for `None`).
    pub fn expired(&self, deadline: Option<Deadline>) -> bool {
        match deadline {
            Some(d) => self.now().wrapping_sub(d.start) >= d.ticks,
            None => false,
        }
    }

    /// One step of a wait loop.
    #[inline]
    pub fn pause(&self) {
        // SAFETY: the integrator supplied this callback in MM_MP_PLATFORM
        // together with `context`; BEHAVIOUR.md §11 lets it be called from any CPU
        // at any time with that context.
        unsafe { crate::sync::pause(self.cpu_pause, self.context) }
    }

    /// APIC ID of the calling CPU, when the platform can tell.
    pub fn apic_id(&self) -> Option<u64> {
        // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
        self.get_apic_id.map(|f| unsafe { f(self.context) })
    }

    /// Send a directed SMI to `apic_id` (no-op without the hook).
    pub fn send_smi_ipi(&self, apic_id: u64) {
        if let Some(f) = self.send_smi_ipi {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            unsafe { f(self.context, apic_id) }
        }
    }

    /// Whether the current SMI is valid (TRUE without the hook).
    pub fn is_valid_smi(&self) -> bool {
        match self.is_valid_smi {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            Some(f) => unsafe { f(self.context) }.get(),
            None => true,
        }
    }

    pub fn clear_top_level_smi_status(&self) {
        if let Some(f) = self.clear_top_level_smi_status {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            unsafe {
                f(self.context);
            }
        }
    }

    /// The platform's BSP election preference: `Some(true)` when it names
    /// this CPU the BSP, `Some(false)` when it names another, `None` when
    /// it has no preference (hook absent or not EFI_SUCCESS).
    pub fn bsp_election_preference(&self) -> Option<bool> {
        let f = self.bsp_election?;
        let mut is_bsp = Boolean::FALSE;
        // SAFETY: integrator callback with its own context; `is_bsp` is a
        // valid local the callback may write.
        let status = unsafe { f(self.context, &mut is_bsp) };
        (status == Status::SUCCESS).then_some(is_bsp.get())
    }

    pub fn rendezvous_entry(&self, cpu: usize) {
        if let Some(f) = self.rendezvous_entry {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            unsafe { f(self.context, cpu) }
        }
    }

    pub fn rendezvous_exit(&self, cpu: usize) {
        if let Some(f) = self.rendezvous_exit {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            unsafe { f(self.context, cpu) }
        }
    }

    pub fn before_mmi_handler(&self, cpu: usize) {
        if let Some(f) = self.before_mmi_handler {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            unsafe { f(self.context, cpu) }
        }
    }

    /// Whether this SMI needs the full arrival wait (BEHAVIOUR.md §6.5). The EDK2
    /// glue answers `IsCpuSyncAlwaysNeeded () || !LocalMachineCheck`; no
    /// hook = TRUE (always wait).
    pub fn is_sync_needed(&self) -> bool {
        match self.is_sync_always_needed {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            Some(f) => unsafe { f(self.context) }.get(),
            None => true,
        }
    }

    /// (delayed, blocked, disabled) CPU counts; zeros without the hook.
    pub fn delayed_blocked_disabled(&self) -> (u32, u32, u32) {
        let (mut d, mut b, mut x) = (0u32, 0u32, 0u32);
        if let Some(f) = self.get_smm_delayed_blocked_disabled_count {
            // SAFETY: integrator callback with its own context; the three
            // out-pointers are valid locals.
            unsafe { f(self.context, &mut d, &mut b, &mut x) }
        }
        (d, b, x)
    }

    pub fn mtrr_save(&self, cpu: usize) {
        if let Some(f) = self.mtrr_save {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            unsafe { f(self.context, cpu) }
        }
    }

    pub fn mtrr_replace(&self, cpu: usize) {
        if let Some(f) = self.mtrr_replace {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            unsafe { f(self.context, cpu) }
        }
    }

    pub fn mtrr_restore(&self, cpu: usize) {
        if let Some(f) = self.mtrr_restore {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            unsafe { f(self.context, cpu) }
        }
    }

    /// Runs every MMI handler (required; checked at initialisation).
    pub fn mm_foundation_entry(&self, bsp: usize) {
        if let Some(f) = self.mm_foundation_entry {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            unsafe { f(self.context, bsp) }
        }
    }

    /// The platform's location of `apic_id` (AddProcessor, BEHAVIOUR.md §5.2):
    /// `None` without the hook or when it does not return EFI_SUCCESS.
    pub fn processor_location(
        &self,
        apic_id: u64,
    ) -> Option<(CpuPhysicalLocation, CpuPhysicalLocation2)> {
        let f = self.get_processor_location?;
        let mut location = CpuPhysicalLocation::default();
        let mut location2 = CpuPhysicalLocation2::default();
        // SAFETY: integrator callback with its own context; both
        // out-pointers are valid locals.
        let status = unsafe { f(self.context, apic_id, &mut location, &mut location2) };
        (status == Status::SUCCESS).then_some((location, location2))
    }

    pub fn register_exception_handler(
        &self,
        exception_type: ExceptionType,
        handler: CpuInterruptHandler,
    ) -> Status {
        match self.register_exception_handler {
            // SAFETY: integrator callback with its own context (BEHAVIOUR.md §11).
            Some(f) => unsafe { f(self.context, exception_type, handler) },
            None => Status::UNSUPPORTED,
        }
    }

    /// Report a message through the `Log` hook (dropped without one).
    pub fn log(&self, level: usize, message: &CStr) {
        if let Some(f) = self.log {
            // SAFETY: integrator callback with its own context; the message
            // is NUL-terminated and outlives the call.
            unsafe { f(self.context, level, message.as_ptr()) }
        }
    }

    /// The end of the road: the `Fatal` hook, then a pause loop (SMM has
    /// no one to return to).
    pub fn fatal(&self, message: &CStr) -> ! {
        if let Some(f) = self.fatal {
            // SAFETY: integrator callback with its own context; the message
            // is NUL-terminated and outlives the call.
            unsafe { f(self.context, message.as_ptr()) }
        }
        loop {
            self.pause();
        }
    }
}
