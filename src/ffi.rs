//! Layer 6 — the C boundary (BEHAVIOUR.md §11). Every export is `extern "efiapi"`
//! (EFIAPI in the header), turns raw C arguments into a call of the core
//! layer, and contains no logic of its own.

use core::ffi::c_void;
use core::mem::offset_of;

use crate::efi::{
    ApProcedure, ApProcedure2, Boolean, CpuInterruptHandler, ExceptionType, MmCompletion,
    MmMpProtocol, ProcessorInformation, SmmCpuRendezvousProtocol, SmmCpuServiceProtocol, Status,
    MM_MP_PROTOCOL_REVISION,
};
use crate::instance::{validate, Instance};
use crate::platform::{MmMpConfig, MmMpPlatform};
use crate::stats::Counter;
use crate::sync_lib::{required_size as sync_required_size, SyncContext};

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
    // SAFETY: forwarded contract.
    unsafe { embedding(this as usize, offset_of!(Instance, mm_mp)) }
}

/// The instance whose protocol at `offset` is `this` (NULL → `None`).
///
/// # Safety
/// A non-zero `this` must be a protocol embedded in an instance at
/// `offset` (one the instance handed out).
unsafe fn embedding<'a>(this: usize, offset: usize) -> Option<&'a Instance> {
    if this == 0 {
        return None;
    }
    let base = this.checked_sub(offset)?;
    // SAFETY: the protocol is embedded in an instance at this offset
    // (caller's contract); `from_ptr` checks the magic.
    unsafe { Instance::from_ptr(base as *const Instance) }
}

/**
  Compute the size of the buffer MmMpInitialize needs for a configuration.

  @param[in]  Config  The configuration (only its sizing fields and validity matter).
  @param[out] Size    Receives the required size in bytes.

  @retval EFI_SUCCESS            *Size was written.
  @retval EFI_INVALID_PARAMETER  Config or Size is NULL, or Config is invalid (docs/BEHAVIOUR.md §11).
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
    let status = unsafe {
        crate::instance::Instance::initialize(
            Buffer,
            BufferSize,
            Config,
            Platform,
            Instance as *mut *mut crate::instance::Instance,
        )
    };
    #[cfg(all(not(test), not(loom), panic = "abort"))]
    if status == Status::SUCCESS {
        // SAFETY: on success Initialize wrote a valid pointer to *Instance
        // (non-NULL, checked by Initialize before anything was written).
        let created = unsafe { Instance.read_unaligned() };
        fatal_route::remember(created as *mut crate::instance::Instance);
    }
    status
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

/// `MM_MP_HOT_PLUG_STATISTICS`: the CPU hot-plug operations the instance
/// applied since initialisation. A structure of its own, so that
/// `MM_MP_STATISTICS` keeps its size for callers built against it.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct MmMpHotPlugStatistics {
    /// AddProcessor operations applied at the end of an SMI (the new CPU
    /// is expected at rendezvous from then on).
    pub cpus_added: u64,
    /// RemoveProcessor operations applied at the end of an SMI (the slot
    /// was emptied by the call; the CPU was ejected at that SMI's exit).
    pub cpus_removed: u64,
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
  Read the CPU hot-plug operations the instance applied (AddProcessor and
  RemoveProcessor take effect at the end of the SMI that called them).

  @param[in]  Instance    The instance.
  @param[out] Statistics  Receives the counters.

  @retval EFI_SUCCESS            *Statistics was written.
  @retval EFI_INVALID_PARAMETER  Instance or Statistics is NULL.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpGetHotPlugStatistics(
    Instance: *mut MmMpInstance,
    Statistics: *mut MmMpHotPlugStatistics,
) -> Status {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL.
    let Some(inst) = (unsafe { instance(Instance) }) else {
        return Status::INVALID_PARAMETER;
    };
    if Statistics.is_null() {
        return Status::INVALID_PARAMETER;
    }
    let s = inst.stats();
    let value = MmMpHotPlugStatistics {
        cpus_added: s.get(Counter::CpusAdded),
        cpus_removed: s.get(Counter::CpusRemoved),
    };
    // SAFETY: non-null; the caller passes a writable MM_MP_HOT_PLUG_STATISTICS.
    unsafe { Statistics.write_unaligned(value) };
    Status::SUCCESS
}

/**
  The EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL embedded in the instance (install
  it with gMmst). WaitForAllProcessor follows docs/BEHAVIOUR.md §6.7.

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
    // SAFETY: `this` is the protocol embedded in an instance (it came from
    // MmMpGetRendezvousProtocol) or NULL; the magic is checked.
    match unsafe { embedding(this as usize, offset_of!(Instance, rendezvous_protocol)) } {
        Some(inst) => inst.wait_for_all_processor(blocking_mode.get()),
        None => Status::INVALID_PARAMETER,
    }
}

/// The rendezvous protocol every instance embeds.
pub const RENDEZVOUS_PROTOCOL_TEMPLATE: SmmCpuRendezvousProtocol = SmmCpuRendezvousProtocol {
    wait_for_all_processor: rendezvous_wait_for_all_processor,
};

/**
  The EFI_SMM_CPU_SERVICE_PROTOCOL embedded in the instance (install it
  with gMmst). Its members follow docs/BEHAVIOUR.md §5.2: GetProcessorInfo, SwitchBsp,
  AddProcessor, RemoveProcessor, WhoAmI, RegisterExceptionHandler.

  @param[in] Instance  The instance.

  @return The protocol, or NULL when Instance is not an instance.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpGetCpuServiceProtocol(
    Instance: *mut MmMpInstance,
) -> *mut SmmCpuServiceProtocol {
    // SAFETY: caller passes an instance from MmMpInitialize or NULL.
    match unsafe { instance(Instance) } {
        Some(inst) => &inst.cpu_service as *const SmmCpuServiceProtocol as *mut _,
        None => core::ptr::null_mut(),
    }
}

/// The instance that embeds `this` (an EFI_SMM_CPU_SERVICE_PROTOCOL it
/// handed out).
///
/// # Safety
/// A non-null `this` must be a protocol returned by MmMpGetCpuServiceProtocol.
unsafe fn from_cpu_service<'a>(this: *const SmmCpuServiceProtocol) -> Option<&'a Instance> {
    // SAFETY: forwarded contract.
    unsafe { embedding(this as usize, offset_of!(Instance, cpu_service)) }
}

unsafe extern "efiapi" fn cs_get_processor_info(
    this: *const SmmCpuServiceProtocol,
    processor_number: usize,
    processor_info_buffer: *mut ProcessorInformation,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL); the buffer is the caller's.
    match unsafe { from_cpu_service(this) } {
        Some(inst) => unsafe { inst.get_processor_info(processor_number, processor_info_buffer) },
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn cs_switch_bsp(
    this: *const SmmCpuServiceProtocol,
    processor_number: usize,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL).
    match unsafe { from_cpu_service(this) } {
        Some(inst) => inst.switch_bsp(processor_number),
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn cs_add_processor(
    this: *const SmmCpuServiceProtocol,
    processor_id: u64,
    processor_number: *mut usize,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL); the out-pointer is the caller's.
    match unsafe { from_cpu_service(this) } {
        Some(inst) => unsafe { inst.add_processor(processor_id, processor_number) },
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn cs_remove_processor(
    this: *const SmmCpuServiceProtocol,
    processor_number: usize,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL).
    match unsafe { from_cpu_service(this) } {
        Some(inst) => inst.remove_processor(processor_number),
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn cs_who_am_i(
    this: *const SmmCpuServiceProtocol,
    processor_number: *mut usize,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL); the out-pointer is the caller's.
    match unsafe { from_cpu_service(this) } {
        Some(inst) => unsafe { inst.who_am_i(processor_number) },
        None => Status::INVALID_PARAMETER,
    }
}

unsafe extern "efiapi" fn cs_register_exception_handler(
    this: *mut SmmCpuServiceProtocol,
    exception_type: ExceptionType,
    interrupt_handler: CpuInterruptHandler,
) -> Status {
    // SAFETY: `this` is our protocol (or NULL).
    match unsafe { from_cpu_service(this) } {
        Some(inst) => inst.register_exception_handler(exception_type, interrupt_handler),
        None => Status::INVALID_PARAMETER,
    }
}

/// The CPU service protocol every instance embeds.
pub const CPU_SERVICE_PROTOCOL_TEMPLATE: SmmCpuServiceProtocol = SmmCpuServiceProtocol {
    get_processor_info: cs_get_processor_info,
    switch_bsp: cs_switch_bsp,
    add_processor: cs_add_processor,
    remove_processor: cs_remove_processor,
    who_am_i: cs_who_am_i,
    register_exception_handler: cs_register_exception_handler,
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
    let Some(inst) = (unsafe { from_mm_mp(this) }) else {
        return Status::INVALID_PARAMETER;
    };
    if token.is_null() && timeout_in_microseconds == 0 {
        // The blocking hand-off, inlined here (Instance::dispatch_blocking).
        // SAFETY: the caller's pointers, as the protocol defines them.
        return unsafe {
            inst.dispatch_blocking(procedure, cpu_number, procedure_arguments, cpu_status)
        };
    }
    // SAFETY: as above.
    unsafe {
        dispatch_general(
            inst,
            procedure,
            cpu_number,
            timeout_in_microseconds,
            procedure_arguments,
            token,
            cpu_status,
        )
    }
}

/// DispatchProcedure with a token or a timeout. EFIAPI too, so that the
/// entry point above calls no System V function (it would have to save
/// xmm6–15 on every call, the blocking ones included).
///
/// # Safety
/// As `Instance::dispatch_procedure`.
#[inline(never)]
unsafe extern "efiapi" fn dispatch_general(
    inst: &Instance,
    procedure: ApProcedure2,
    cpu_number: usize,
    timeout_in_microseconds: usize,
    procedure_arguments: *mut c_void,
    token: *mut MmCompletion,
    cpu_status: *mut Status,
) -> Status {
    // SAFETY: forwarded contract.
    unsafe {
        inst.dispatch_procedure(
            procedure,
            cpu_number,
            timeout_in_microseconds,
            procedure_arguments,
            token,
            cpu_status,
        )
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

// ---------------------------------------------------------------------------
// SmmCpuSyncLib-compatible semaphores in caller memory (BEHAVIOUR.md §7, §11)
// ---------------------------------------------------------------------------

/// `MM_MP_SYNC_CONTEXT`: opaque SmmCpuSyncLib-compatible context living at
/// the start of the buffer given to MmMpSyncContextInit.
pub struct MmMpSyncContext {
    _opaque: [u8; 0],
}

/// # Safety
/// A non-null pointer must come from MmMpSyncContextInit (or be readable).
unsafe fn sync_context<'a>(ptr: *const MmMpSyncContext) -> Option<&'a SyncContext> {
    // SAFETY: forwarded contract; `from_ptr` rejects NULL and non-contexts.
    unsafe { SyncContext::from_ptr(ptr as *const SyncContext) }
}

/// The pause of the stand-alone semaphores: the pause instruction (EDK2's
/// `CpuPause`); there is no platform table behind a sync context.
fn spin() {
    core::hint::spin_loop()
}

/**
  Size of the buffer MmMpSyncContextInit needs: a header, the arrival
  counter and one run semaphore per CPU, each on its own cache line.

  @param[in]  NumberOfCpus   CPUs of the context (>= 1).
  @param[in]  CacheLineSize  0 = 64, else a power of two >= 16.
  @param[out] Size           Receives the size in bytes.

  @retval EFI_SUCCESS            *Size was written.
  @retval EFI_INVALID_PARAMETER  Size is NULL, NumberOfCpus is 0 or too large, bad CacheLineSize.
  @retval EFI_OUT_OF_RESOURCES   The size does not fit in a UINTN.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncGetRequiredSize(
    NumberOfCpus: usize,
    CacheLineSize: usize,
    Size: *mut usize,
) -> Status {
    if Size.is_null() {
        return Status::INVALID_PARAMETER;
    }
    match sync_required_size(NumberOfCpus, CacheLineSize) {
        Ok(n) => {
            // SAFETY: non-null; the caller passes a writable UINTN.
            unsafe { Size.write_unaligned(n) };
            Status::SUCCESS
        }
        Err(e) => e,
    }
}

/**
  Build a sync context in caller memory (EDK2 SmmCpuSyncContextInit without
  the allocation). Nothing is written to Buffer on error.

  @retval EFI_SUCCESS            *Context is ready, every semaphore 0.
  @retval EFI_INVALID_PARAMETER  NULL Buffer or Context, bad NumberOfCpus or
                                 CacheLineSize, Buffer not aligned to the line.
  @retval EFI_BUFFER_TOO_SMALL   BufferSize below MmMpSyncGetRequiredSize.
  @retval EFI_OUT_OF_RESOURCES   The size does not fit in a UINTN.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncContextInit(
    Buffer: *mut c_void,
    BufferSize: usize,
    NumberOfCpus: usize,
    CacheLineSize: usize,
    Context: *mut *mut MmMpSyncContext,
) -> Status {
    // SAFETY: forwarded contract (see SyncContext::init).
    unsafe {
        SyncContext::init(
            Buffer,
            BufferSize,
            NumberOfCpus,
            CacheLineSize,
            Context as *mut *mut SyncContext,
        )
    }
}

/**
  SmmCpuSyncContextReset: arrival count back to 0, door open; run
  semaphores untouched (they must already be balanced). NULL: nothing.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncContextReset(Context: *mut MmMpSyncContext) {
    // SAFETY: caller passes a context from MmMpSyncContextInit or NULL.
    if let Some(c) = unsafe { sync_context(Context) } {
        c.view().reset()
    }
}

/**
  SmmCpuSyncGetArrivedCpuCount: the count at lock time once the door is
  locked, else the live count. NULL Context: 0.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncGetArrivedCpuCount(Context: *mut MmMpSyncContext) -> usize {
    // SAFETY: caller passes a context from MmMpSyncContextInit or NULL.
    unsafe { sync_context(Context) }.map_or(0, |c| c.view().arrived_count())
}

/**
  SmmCpuSyncCheckInCpu.

  @retval EFI_SUCCESS            Checked in.
  @retval EFI_ABORTED            The door is locked.
  @retval EFI_INVALID_PARAMETER  NULL Context or CpuIndex out of range.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncCheckInCpu(
    Context: *mut MmMpSyncContext,
    CpuIndex: usize,
) -> Status {
    // SAFETY: caller passes a context from MmMpSyncContextInit or NULL.
    unsafe { sync_context(Context) }
        .map_or(Status::INVALID_PARAMETER, |c| c.view().check_in(CpuIndex))
}

/**
  SmmCpuSyncCheckOutCpu (error paths of a CPU that checked in).

  @retval EFI_SUCCESS            Checked out.
  @retval EFI_ABORTED            The door is locked.
  @retval EFI_INVALID_PARAMETER  NULL Context or CpuIndex out of range.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncCheckOutCpu(
    Context: *mut MmMpSyncContext,
    CpuIndex: usize,
) -> Status {
    // SAFETY: caller passes a context from MmMpSyncContextInit or NULL.
    unsafe { sync_context(Context) }
        .map_or(Status::INVALID_PARAMETER, |c| c.view().check_out(CpuIndex))
}

/**
  SmmCpuSyncLockDoor: lock the door; *CpuCount receives the number of CPUs
  that checked in (NULL CpuCount: not written). NULL Context: nothing.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncLockDoor(
    Context: *mut MmMpSyncContext,
    CpuIndex: usize,
    CpuCount: *mut usize,
) {
    let _ = CpuIndex;
    // SAFETY: caller passes a context from MmMpSyncContextInit or NULL.
    if let Some(c) = unsafe { sync_context(Context) } {
        let count = c.view().lock_door();
        if !CpuCount.is_null() {
            // SAFETY: non-null; the caller passes a writable UINTN.
            unsafe { CpuCount.write_unaligned(count) };
        }
    }
}

/**
  SmmCpuSyncWaitForAPs: the BSP waits for NumberOfAPs signals on its run
  semaphore. Out-of-range arguments return at once.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncWaitForAPs(
    Context: *mut MmMpSyncContext,
    NumberOfAPs: usize,
    BspIndex: usize,
) {
    // SAFETY: caller passes a context from MmMpSyncContextInit or NULL.
    if let Some(c) = unsafe { sync_context(Context) } {
        c.view().wait_for_aps(NumberOfAPs, BspIndex, spin)
    }
}

/**
  SmmCpuSyncReleaseOneAp: the BSP releases AP CpuIndex. Nothing happens
  unless both indices are in range and different.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncReleaseOneAp(
    Context: *mut MmMpSyncContext,
    CpuIndex: usize,
    BspIndex: usize,
) {
    // SAFETY: caller passes a context from MmMpSyncContextInit or NULL.
    if let Some(c) = unsafe { sync_context(Context) } {
        let v = c.view();
        if v.is_pair(CpuIndex, BspIndex) {
            v.release_one_ap(CpuIndex)
        }
    }
}

/**
  SmmCpuSyncWaitForBsp: AP CpuIndex waits for the BSP's release. Returns at
  once unless both indices are in range and different.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncWaitForBsp(
    Context: *mut MmMpSyncContext,
    CpuIndex: usize,
    BspIndex: usize,
) {
    // SAFETY: caller passes a context from MmMpSyncContextInit or NULL.
    if let Some(c) = unsafe { sync_context(Context) } {
        c.view().wait_for_bsp(CpuIndex, BspIndex, spin)
    }
}

/**
  SmmCpuSyncReleaseBsp: AP CpuIndex signals the BSP. Nothing happens unless
  both indices are in range and different.
**/
#[no_mangle]
pub unsafe extern "efiapi" fn MmMpSyncReleaseBsp(
    Context: *mut MmMpSyncContext,
    CpuIndex: usize,
    BspIndex: usize,
) {
    // SAFETY: caller passes a context from MmMpSyncContextInit or NULL.
    if let Some(c) = unsafe { sync_context(Context) } {
        let v = c.view();
        if v.is_pair(CpuIndex, BspIndex) {
            v.release_bsp(BspIndex)
        }
    }
}

/// Where a panic goes in firmware builds. The library has no reachable
/// panic (CI links every export with `--gc-sections` and finds no panic
/// machinery, `firmware/check-no-panic.sh`); should one slip in, the panic
/// handler ends in the `Fatal` hook of the most recently initialised
/// instance. This pointer is the library's only global, and only this
/// path reads it.
#[cfg(all(not(test), not(loom), panic = "abort"))]
mod fatal_route {
    use core::sync::atomic::{AtomicPtr, Ordering};

    static LAST: AtomicPtr<crate::instance::Instance> = AtomicPtr::new(core::ptr::null_mut());

    pub fn remember(instance: *mut crate::instance::Instance) {
        // Release: publishes the initialised instance to the CPU that
        // reads it in `fatal` (Acquire).
        LAST.store(instance, Ordering::Release);
    }

    pub fn fatal() -> ! {
        // Acquire: pairs with the Release in `remember`.
        let last = LAST.load(Ordering::Acquire);
        // SAFETY: NULL or an instance Initialize returned; `instance`
        // validates the magic word before using it.
        if let Some(inst) = unsafe { super::instance(last as *mut super::MmMpInstance) } {
            inst.platform.fatal(c"mm-mp: internal error (panic)");
        }
        loop {
            core::hint::spin_loop();
        }
    }
}

/// Firmware builds (panic = "abort", no std): the `Fatal` hook, then a
/// pause loop (see `fatal_route`).
#[cfg(all(not(test), not(loom), panic = "abort"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    fatal_route::fatal()
}

/// Precompiled `core` refers to the unwinding personality routine from its
/// unwind tables even in `panic = "abort"` builds; nothing ever calls it.
/// Defined here so C and EDK2 links resolve it.
#[cfg(all(not(test), not(loom), panic = "abort"))]
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
