//! Layer 6 — the C boundary (SPEC §11). Every export is `extern "efiapi"`
//! (EFIAPI in the header), turns raw C arguments into a call of the core
//! layer, and contains no logic of its own.

use core::ffi::c_void;
use core::mem::offset_of;

use crate::efi::{
    ApProcedure, ApProcedure2, Boolean, MmCompletion, MmMpProtocol, SmmCpuRendezvousProtocol,
    Status, MM_MP_PROTOCOL_REVISION,
};
use crate::instance::{validate, Instance};
use crate::platform::{MmMpConfig, MmMpPlatform};
use crate::stats::Counter;

/// `MM_MP_INSTANCE`: opaque handle of one mm-mp instance. It lives at the
/// start of the buffer given to MmMpInitialize.
pub struct MmMpInstance {
    _opaque: [u8; 0],
}

/// # Safety
/// A non-null pointer must come from MmMpInitialize (or be readable).
unsafe fn instance<'a>(ptr: *const MmMpInstance) -> Option<&'a Instance> {
    // SAFETY: forwarded contract; `from_ptr` rejects NULL and non-instances.
    unsafe { Instance::from_ptr(ptr as *const Instance) }
}

/// The instance that embeds `this` (an EFI_MM_MP_PROTOCOL it handed out).
///
/// # Safety
/// A non-null `this` must be a protocol returned by MmMpGetMmMpProtocol.
unsafe fn from_mm_mp<'a>(this: *const MmMpProtocol) -> Option<&'a Instance> {
    if this.is_null() {
        return None;
    }
    let base = (this as usize).checked_sub(offset_of!(Instance, mm_mp))?;
    // SAFETY: the protocol is embedded in an instance at this offset
    // (caller's contract); `from_ptr` checks the magic.
    unsafe { Instance::from_ptr(base as *const Instance) }
}

/**
  Compute the size of the buffer MmMpInitialize needs for a configuration.

  @param[in]  Config  The configuration (only its sizing fields and validity matter).
  @param[out] Size    Receives the required size in bytes.

  @retval EFI_SUCCESS            *Size was written.
  @retval EFI_INVALID_PARAMETER  Config or Size is NULL, or Config is invalid (SPEC §11).
  @retval EFI_OUT_OF_RESOURCES   The size does not fit in a UINTN.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpGetRequiredSize(
    Config: *const MmMpConfig,
    Size: *mut usize,
) -> Status {
    if Config.is_null() || Size.is_null() {
        return Status::INVALID_PARAMETER;
    }
    // SAFETY: non-null; the caller passes a readable MM_MP_CONFIG.
    let config = unsafe { Config.read_unaligned() };
    match validate(&config) {
        Ok((_, layout)) => {
            // SAFETY: non-null; the caller passes a writable UINTN.
            unsafe { Size.write_unaligned(layout.total) };
            Status::SUCCESS
        }
        Err(e) => e,
    }
}

/**
  Build an mm-mp instance inside Buffer (SMRAM the caller owns).

  Config and Platform are copied; the caller may free them afterwards.
  Nothing is written to Buffer on error.

  @param[in]  Buffer      Memory for the instance, aligned to the cache-line size.
  @param[in]  BufferSize  Its size in bytes (at least MmMpGetRequiredSize).
  @param[in]  Config      The configuration.
  @param[in]  Platform    The platform callbacks (MmFoundationEntry required).
  @param[out] Instance    Receives the instance.

  @retval EFI_SUCCESS            The instance is ready.
  @retval EFI_INVALID_PARAMETER  A NULL pointer, a bad Revision, an invalid field,
                                 a missing MmFoundationEntry or a misaligned Buffer.
  @retval EFI_BUFFER_TOO_SMALL   BufferSize is below the required size.
  @retval EFI_OUT_OF_RESOURCES   The size arithmetic overflows.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpInitialize(
    Buffer: *mut c_void,
    BufferSize: usize,
    Config: *const MmMpConfig,
    Platform: *const MmMpPlatform,
    Instance: *mut *mut MmMpInstance,
) -> Status {
    // SAFETY: forwarded contract (see Instance::initialize).
    unsafe {
        crate::instance::Instance::initialize(
            Buffer,
            BufferSize,
            Config,
            Platform,
            Instance as *mut *mut crate::instance::Instance,
        )
    }
}

/**
  Run the SMI rendezvous for one CPU. Every CPU calls this at every SMI
  with its own index; it returns when that CPU may leave SMM.

  @param[in] Instance  The instance (NULL: returns at once).
  @param[in] CpuIndex  The calling CPU's slot; out of range or empty: returns at once.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSmiRendezvous(Instance: *mut MmMpInstance, CpuIndex: usize) {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL.
    if let Some(inst) = unsafe { instance(Instance) } {
        inst.smi_rendezvous(CpuIndex)
    }
}

/**
  The EFI_MM_MP_PROTOCOL embedded in the instance (install it with gMmst).

  @param[in] Instance  The instance.

  @return The protocol, or NULL when Instance is not an instance.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpGetMmMpProtocol(
    Instance: *mut MmMpInstance,
) -> *mut MmMpProtocol {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL.
    match unsafe { instance(Instance) } {
        Some(inst) => &inst.mm_mp as *const MmMpProtocol as *mut MmMpProtocol,
        None => core::ptr::null_mut(),
    }
}

/**
  gMmst->MmStartupThisAp: run a (void) procedure on one AP. Blocks or not
  according to MM_MP_CONFIG.BlockingStartupThisAp; waits for a busy AP
  (bounded by ApSyncTimeoutUs with a time source).

  @retval EFI_SUCCESS            The procedure was started (or, blocking, has run).
  @retval EFI_NOT_READY          No SMI is in progress.
  @retval EFI_INVALID_PARAMETER  NULL Instance or Procedure, caller is an AP, bad CpuIndex
                                 (out of range, the BSP, empty, absent, pending removal).
  @retval EFI_TIMEOUT            The AP stayed busy past the sync timeout.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpStartupThisAp(
    Instance: *mut MmMpInstance,
    Procedure: ApProcedure,
    CpuIndex: usize,
    ProcArguments: *mut c_void,
) -> Status {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL.
    match unsafe { instance(Instance) } {
        Some(inst) => inst.startup_this_ap(
            Procedure,
            CpuIndex,
            ProcArguments,
            inst.settings.blocking_startup_this_ap,
        ),
        None => Status::INVALID_PARAMETER,
    }
}

/**
  EDK2's SmmBlockingStartupThisAp: as MmMpStartupThisAp, always blocking.
  Same return values.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpBlockingStartupThisAp(
    Instance: *mut MmMpInstance,
    Procedure: ApProcedure,
    CpuIndex: usize,
    ProcArguments: *mut c_void,
) -> Status {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL.
    match unsafe { instance(Instance) } {
        Some(inst) => inst.startup_this_ap(Procedure, CpuIndex, ProcArguments, true),
        None => Status::INVALID_PARAMETER,
    }
}

/**
  The BSP of the SMI in progress.

  @return Its CPU index, or MAX_UINTN outside an SMI or for a NULL Instance.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpGetCurrentBsp(Instance: *mut MmMpInstance) -> usize {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL.
    match unsafe { instance(Instance) } {
        Some(inst) => inst.current_bsp(),
        None => usize::MAX,
    }
}

/**
  The overall result of a non-blocking call: EFI_SUCCESS if every
  procedure returned success, else the first failure, EFI_TIMEOUT if the
  call timed out.

  @retval EFI_SUCCESS            The call finished; *Result holds its result.
  @retval EFI_NOT_READY          Still running.
  @retval EFI_NOT_FOUND          Token is not a live handle of this SMI.
  @retval EFI_INVALID_PARAMETER  Instance, Token or Result is NULL.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpGetTokenResult(
    Instance: *mut MmMpInstance,
    Token: MmCompletion,
    Result: *mut Status,
) -> Status {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL, and a
    // writable Result or NULL.
    match unsafe { instance(Instance) } {
        Some(inst) => unsafe { inst.get_token_result(Token, Result) },
        None => Status::INVALID_PARAMETER,
    }
}

/// `MM_MP_STATISTICS_REVISION`.
pub const MM_MP_STATISTICS_REVISION: u32 = 1;

/// `MM_MP_STATISTICS`: what the instance has seen since initialisation.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct MmMpStatistics {
    /// MM_MP_STATISTICS_REVISION.
    pub revision: u32,
    pub reserved: u32,
    /// SMIs handled (one per BSP run).
    pub smis: u64,
    /// Invalid SMIs with no BSP inside (every CPU left at once).
    pub spurious_smis: u64,
    /// CPUs that arrived after the door was locked.
    pub late_cpus: u64,
    /// SMI IPIs sent to absent CPUs or to a missing BSP.
    pub ipis_sent: u64,
    /// Waits ended by a timeout (arrival, BSP wait, MM MP calls, lost APs).
    pub timeouts: u64,
    /// APs whose procedure outlived an SMI (marked lost).
    pub lost_aps: u64,
    /// Procedures started by DispatchProcedure / StartupThisAp.
    pub dispatches: u64,
    /// BroadcastProcedure calls that started procedures.
    pub broadcasts: u64,
}

/**
  Read the instance's statistics.

  @param[in]  Instance    The instance.
  @param[out] Statistics  Receives the counters.

  @retval EFI_SUCCESS            *Statistics was written.
  @retval EFI_INVALID_PARAMETER  Instance or Statistics is NULL.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpGetStatistics(
    Instance: *mut MmMpInstance,
    Statistics: *mut MmMpStatistics,
) -> Status {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL.
    let Some(inst) = (unsafe { instance(Instance) }) else {
        return Status::INVALID_PARAMETER;
    };
    if Statistics.is_null() {
        return Status::INVALID_PARAMETER;
    }
    let s = inst.stats();
    let value = MmMpStatistics {
        revision: MM_MP_STATISTICS_REVISION,
        reserved: 0,
        smis: s.get(Counter::Smis),
        spurious_smis: s.get(Counter::SpuriousSmis),
        late_cpus: s.get(Counter::LateCpus),
        ipis_sent: s.get(Counter::IpisSent),
        timeouts: s.get(Counter::Timeouts),
        lost_aps: s.get(Counter::LostAps),
        dispatches: s.get(Counter::Dispatches),
        broadcasts: s.get(Counter::Broadcasts),
    };
    // SAFETY: non-null; the caller passes a writable MM_MP_STATISTICS.
    unsafe { Statistics.write_unaligned(value) };
    Status::SUCCESS
}

/**
  The EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL embedded in the instance (install
  it with gMmst). WaitForAllProcessor follows SPEC §6.7.

  @param[in] Instance  The instance.

  @return The protocol, or NULL when Instance is not an instance.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpGetRendezvousProtocol(
    Instance: *mut MmMpInstance,
) -> *mut SmmCpuRendezvousProtocol {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL.
    match unsafe { instance(Instance) } {
        Some(inst) => &inst.rendezvous_protocol as *const SmmCpuRendezvousProtocol as *mut _,
        None => core::ptr::null_mut(),
    }
}

unsafe extern "efiapi" fn rendezvous_wait_for_all_processor(
    this: *mut SmmCpuRendezvousProtocol,
    blocking_mode: Boolean,
) -> Status {
    if this.is_null() {
        return Status::INVALID_PARAMETER;
    }
    let Some(base) = (this as usize).checked_sub(offset_of!(Instance, rendezvous_protocol)) else {
        return Status::INVALID_PARAMETER;
    };
    // SAFETY: `this` is the protocol embedded in an instance at this
    // offset (it came from MmMpGetRendezvousProtocol); the magic is checked.
    match unsafe { Instance::from_ptr(base as *const Instance) } {
        Some(inst) => inst.wait_for_all_processor(blocking_mode.get()),
        None => Status::INVALID_PARAMETER,
    }
}

/// The rendezvous protocol every instance embeds.
pub const RENDEZVOUS_PROTOCOL_TEMPLATE: SmmCpuRendezvousProtocol = SmmCpuRendezvousProtocol {
    wait_for_all_processor: rendezvous_wait_for_all_processor,
};

// ---------------------------------------------------------------------------
// EFI_MM_MP_PROTOCOL members
// ---------------------------------------------------------------------------

unsafe extern "efiapi" fn mm_get_number_of_processors(
    this: *const MmMpProtocol,
    number_of_processors: *mut usize,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL); the out-pointer is the caller's.
    match unsafe { from_mm_mp(this) } {
        Some(inst) => unsafe { inst.get_number_of_processors(number_of_processors) },
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn mm_dispatch_procedure(
    this: *const MmMpProtocol,
    procedure: ApProcedure2,
    cpu_number: usize,
    timeout_in_microseconds: usize,
    procedure_arguments: *mut c_void,
    token: *mut MmCompletion,
    cpu_status: *mut Status,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL); pointers are the caller's.
    match unsafe { from_mm_mp(this) } {
        Some(inst) => unsafe {
            inst.dispatch_procedure(
                procedure,
                cpu_number,
                timeout_in_microseconds,
                procedure_arguments,
                token,
                cpu_status,
            )
        },
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn mm_broadcast_procedure(
    this: *const MmMpProtocol,
    procedure: ApProcedure2,
    timeout_in_microseconds: usize,
    procedure_arguments: *mut c_void,
    token: *mut MmCompletion,
    cpu_status: *mut Status,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL); pointers are the caller's.
    match unsafe { from_mm_mp(this) } {
        Some(inst) => unsafe {
            inst.broadcast_procedure(
                procedure,
                timeout_in_microseconds,
                procedure_arguments,
                token,
                cpu_status,
            )
        },
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn mm_set_startup_procedure(
    this: *const MmMpProtocol,
    procedure: ApProcedure,
    procedure_arguments: *mut c_void,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL).
    match unsafe { from_mm_mp(this) } {
        Some(inst) => inst.set_startup_procedure(procedure, procedure_arguments),
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn mm_check_for_procedure(
    this: *const MmMpProtocol,
    token: MmCompletion,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL).
    match unsafe { from_mm_mp(this) } {
        Some(inst) => inst.check_for_procedure(token),
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn mm_wait_for_procedure(
    this: *const MmMpProtocol,
    token: MmCompletion,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL).
    match unsafe { from_mm_mp(this) } {
        Some(inst) => inst.wait_for_procedure(token),
        None => Status::INVALID_PARAMETER,
    }
}

/// The protocol every instance embeds (Attributes set at initialisation).
pub const MM_MP_PROTOCOL_TEMPLATE: MmMpProtocol = MmMpProtocol {
    revision: MM_MP_PROTOCOL_REVISION,
    attributes: 0,
    get_number_of_processors: mm_get_number_of_processors,
    dispatch_procedure: mm_dispatch_procedure,
    broadcast_procedure: mm_broadcast_procedure,
    set_startup_procedure: mm_set_startup_procedure,
    check_for_procedure: mm_check_for_procedure,
    wait_for_procedure: mm_wait_for_procedure,
};

/// Firmware builds (panic = "abort", no std): the library has no reachable
/// panic (every index is checked, no unwrap on input), so this only ends
/// the CPU if a bug slips through. There is no global state to find the
/// platform's Fatal hook from, so it parks the CPU.
#[cfg(all(not(test), not(loom), panic = "abort"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Precompiled `core` refers to the unwinding personality routine from its
/// unwind tables even in `panic = "abort"` builds; nothing ever calls it.
/// Defined here so C and EDK2 links resolve it.
#[cfg(all(not(test), not(loom), panic = "abort"))]
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
