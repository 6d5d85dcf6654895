//! Layer 1 — EFI ABI types (BEHAVIOUR.md §1). No logic lives here.
//!
//! Transposed from the PI specification and EDK2's headers the way r-efi
//! does it: `#[repr(C)]` structs, raw pointers, `Option<fn>` for nullable
//! callbacks and newtypes (`Status`, `Boolean`) instead of Rust enums for
//! anything that comes in from C. Every struct has compile-time size and
//! offset assertions for X64 (the numbers of BEHAVIOUR.md §1).
//!
//! Items marked `#[cfg(not(mm_mp_edk2))]` are always compiled in Rust (the
//! `mm_mp_edk2` cfg is never set); cbindgen turns that attribute into
//! `#if !defined(MM_MP_EDK2_TYPES)` so that, inside EDK2, the header reuses
//! EDK2's own definitions instead of redefining them.

use core::ffi::c_void;

/// `EFI_STATUS`: a `UINTN` whose top bit marks an error.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub usize);

const ERROR_BIT: usize = 1 << (usize::BITS - 1);

/// The error encoding of BEHAVIOUR.md §1.2 for a `UINTN` of `bits` bits.
pub const fn encode_error(bits: u32, code: u64) -> u64 {
    (1u64 << (bits - 1)) | code
}

impl Status {
    pub const SUCCESS: Status = Status(0);
    pub const INVALID_PARAMETER: Status = Status(ERROR_BIT | 2);
    pub const UNSUPPORTED: Status = Status(ERROR_BIT | 3);
    pub const BUFFER_TOO_SMALL: Status = Status(ERROR_BIT | 5);
    pub const NOT_READY: Status = Status(ERROR_BIT | 6);
    pub const DEVICE_ERROR: Status = Status(ERROR_BIT | 7);
    pub const OUT_OF_RESOURCES: Status = Status(ERROR_BIT | 9);
    pub const NOT_FOUND: Status = Status(ERROR_BIT | 14);
    pub const TIMEOUT: Status = Status(ERROR_BIT | 18);
    pub const NOT_STARTED: Status = Status(ERROR_BIT | 19);
    pub const ALREADY_STARTED: Status = Status(ERROR_BIT | 20);
    pub const ABORTED: Status = Status(ERROR_BIT | 21);

    /// `EFI_ERROR (Status)`.
    pub const fn is_error(self) -> bool {
        self.0 & ERROR_BIT != 0
    }
}

impl core::fmt::Debug for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match *self {
            Status::SUCCESS => "EFI_SUCCESS",
            Status::INVALID_PARAMETER => "EFI_INVALID_PARAMETER",
            Status::UNSUPPORTED => "EFI_UNSUPPORTED",
            Status::BUFFER_TOO_SMALL => "EFI_BUFFER_TOO_SMALL",
            Status::NOT_READY => "EFI_NOT_READY",
            Status::DEVICE_ERROR => "EFI_DEVICE_ERROR",
            Status::OUT_OF_RESOURCES => "EFI_OUT_OF_RESOURCES",
            Status::NOT_FOUND => "EFI_NOT_FOUND",
            Status::TIMEOUT => "EFI_TIMEOUT",
            Status::NOT_STARTED => "EFI_NOT_STARTED",
            Status::ALREADY_STARTED => "EFI_ALREADY_STARTED",
            Status::ABORTED => "EFI_ABORTED",
            _ => return write!(f, "Status({:#x})", self.0),
        };
        f.write_str(name)
    }
}

/// `BOOLEAN`: one byte, 0 = FALSE, anything else = TRUE when read.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Boolean(pub u8);

impl Boolean {
    pub const FALSE: Boolean = Boolean(0);
    pub const TRUE: Boolean = Boolean(1);

    pub const fn get(self) -> bool {
        self.0 != 0
    }
}

impl From<bool> for Boolean {
    fn from(b: bool) -> Self {
        Boolean(b as u8)
    }
}

/// `EFI_GUID`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

/// gEfiMmMpProtocolGuid.
pub const MM_MP_PROTOCOL_GUID: Guid = Guid {
    data1: 0x5d54_50d7,
    data2: 0x990c,
    data3: 0x4180,
    data4: [0xa8, 0x03, 0x8e, 0x63, 0xf0, 0x60, 0x83, 0x07],
};
/// gEfiSmmCpuServiceProtocolGuid.
pub const SMM_CPU_SERVICE_PROTOCOL_GUID: Guid = Guid {
    data1: 0x1d20_2cab,
    data2: 0xc8ab,
    data3: 0x4d5c,
    data4: [0x94, 0xf7, 0x3c, 0xfc, 0xc0, 0xd3, 0xd3, 0x35],
};
/// gEdkiiSmmCpuRendezvousProtocolGuid.
pub const SMM_CPU_RENDEZVOUS_PROTOCOL_GUID: Guid = Guid {
    data1: 0xaa00_d50b,
    data2: 0x4911,
    data3: 0x428f,
    data4: [0xb9, 0x1a, 0xa5, 0x9d, 0xdb, 0x13, 0xe2, 0x4c],
};

/// `EFI_MM_MP_PROTOCOL_REVISION`.
pub const MM_MP_PROTOCOL_REVISION: u32 = 0;
/// `EFI_MM_MP_TIMEOUT_SUPPORTED` (bit of `Attributes`).
pub const MM_MP_TIMEOUT_SUPPORTED: u32 = 0x1;

/// `EFI_AP_PROCEDURE`: the old void procedure (StartupThisAp, startup procedure).
#[cfg(not(mm_mp_edk2))]
pub type ApProcedure = Option<unsafe extern "efiapi" fn(buffer: *mut c_void)>;

/// `EFI_AP_PROCEDURE2`: the MM MP procedure that returns a status.
#[cfg(not(mm_mp_edk2))]
pub type ApProcedure2 =
    Option<unsafe extern "efiapi" fn(procedure_argument: *mut c_void) -> Status>;

/// `MM_COMPLETION`: an opaque handle (ours encodes a token slot and a sequence number).
#[cfg(not(mm_mp_edk2))]
pub type MmCompletion = *mut c_void;

/// `INVALID_APIC_ID`: marks an empty or removed processor slot.
pub const INVALID_APIC_ID: u64 = u64::MAX;

/// `EFI_PROCESSOR_INFORMATION.StatusFlag` bits.
pub const PROCESSOR_AS_BSP_BIT: u32 = 0x1;
pub const PROCESSOR_ENABLED_BIT: u32 = 0x2;
pub const PROCESSOR_HEALTH_STATUS_BIT: u32 = 0x4;

/// `EFI_CPU_PHYSICAL_LOCATION`.
#[cfg(not(mm_mp_edk2))]
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CpuPhysicalLocation {
    pub package: u32,
    pub core: u32,
    pub thread: u32,
}

/// `EFI_CPU_PHYSICAL_LOCATION2`.
#[cfg(not(mm_mp_edk2))]
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CpuPhysicalLocation2 {
    pub package: u32,
    pub module: u32,
    pub tile: u32,
    pub die: u32,
    pub core: u32,
    pub thread: u32,
}

/// `EXTENDED_PROCESSOR_INFORMATION`.
#[cfg(not(mm_mp_edk2))]
#[repr(C)]
#[derive(Clone, Copy)]
pub union ExtendedProcessorInformation {
    pub location2: CpuPhysicalLocation2,
}

/// `EFI_PROCESSOR_INFORMATION` (48 bytes).
#[cfg(not(mm_mp_edk2))]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessorInformation {
    pub processor_id: u64,
    pub status_flag: u32,
    pub location: CpuPhysicalLocation,
    pub extended_information: ExtendedProcessorInformation,
}

impl ProcessorInformation {
    /// A record for an empty slot.
    pub const EMPTY: ProcessorInformation = ProcessorInformation {
        processor_id: INVALID_APIC_ID,
        status_flag: 0,
        location: CpuPhysicalLocation {
            package: 0,
            core: 0,
            thread: 0,
        },
        extended_information: ExtendedProcessorInformation {
            location2: CpuPhysicalLocation2 {
                package: 0,
                module: 0,
                tile: 0,
                die: 0,
                core: 0,
                thread: 0,
            },
        },
    };

    /// The Location2 member of the union (the only one).
    pub fn location2(&self) -> CpuPhysicalLocation2 {
        // SAFETY: the union has exactly one member, so every bit pattern of
        // it is a valid `CpuPhysicalLocation2` (six plain u32).
        unsafe { self.extended_information.location2 }
    }
}

/// `EFI_SYSTEM_CONTEXT`: a union of architecture context pointers, passed by
/// value; only its size matters here.
#[cfg(not(mm_mp_edk2))]
#[repr(C)]
#[derive(Clone, Copy)]
pub union SystemContext {
    pub system_context_x64: *mut c_void,
    pub system_context_ia32: *mut c_void,
}

/// `EFI_EXCEPTION_TYPE` (INTN).
#[cfg(not(mm_mp_edk2))]
pub type ExceptionType = isize;

/// `EFI_CPU_INTERRUPT_HANDLER`.
#[cfg(not(mm_mp_edk2))]
pub type CpuInterruptHandler =
    Option<unsafe extern "efiapi" fn(interrupt_type: ExceptionType, system_context: SystemContext)>;

/// `EFI_MM_MP_PROTOCOL` (PI vol. 4), 56 bytes.
#[cfg(not(mm_mp_edk2))]
#[repr(C)]
pub struct MmMpProtocol {
    pub revision: u32,
    pub attributes: u32,
    pub get_number_of_processors: unsafe extern "efiapi" fn(
        this: *const MmMpProtocol,
        number_of_processors: *mut usize,
    ) -> Status,
    pub dispatch_procedure: unsafe extern "efiapi" fn(
        this: *const MmMpProtocol,
        procedure: ApProcedure2,
        cpu_number: usize,
        timeout_in_microseconds: usize,
        procedure_arguments: *mut c_void,
        token: *mut MmCompletion,
        cpu_status: *mut Status,
    ) -> Status,
    pub broadcast_procedure: unsafe extern "efiapi" fn(
        this: *const MmMpProtocol,
        procedure: ApProcedure2,
        timeout_in_microseconds: usize,
        procedure_arguments: *mut c_void,
        token: *mut MmCompletion,
        cpu_status: *mut Status,
    ) -> Status,
    pub set_startup_procedure: unsafe extern "efiapi" fn(
        this: *const MmMpProtocol,
        procedure: ApProcedure,
        procedure_arguments: *mut c_void,
    ) -> Status,
    pub check_for_procedure:
        unsafe extern "efiapi" fn(this: *const MmMpProtocol, token: MmCompletion) -> Status,
    pub wait_for_procedure:
        unsafe extern "efiapi" fn(this: *const MmMpProtocol, token: MmCompletion) -> Status,
}

/// `EFI_SMM_CPU_SERVICE_PROTOCOL` (EDK2 UefiCpuPkg), 48 bytes.
#[cfg(not(mm_mp_edk2))]
#[repr(C)]
pub struct SmmCpuServiceProtocol {
    pub get_processor_info: unsafe extern "efiapi" fn(
        this: *const SmmCpuServiceProtocol,
        processor_number: usize,
        processor_info_buffer: *mut ProcessorInformation,
    ) -> Status,
    pub switch_bsp: unsafe extern "efiapi" fn(
        this: *const SmmCpuServiceProtocol,
        processor_number: usize,
    ) -> Status,
    pub add_processor: unsafe extern "efiapi" fn(
        this: *const SmmCpuServiceProtocol,
        processor_id: u64,
        processor_number: *mut usize,
    ) -> Status,
    pub remove_processor: unsafe extern "efiapi" fn(
        this: *const SmmCpuServiceProtocol,
        processor_number: usize,
    ) -> Status,
    pub who_am_i: unsafe extern "efiapi" fn(
        this: *const SmmCpuServiceProtocol,
        processor_number: *mut usize,
    ) -> Status,
    pub register_exception_handler: unsafe extern "efiapi" fn(
        this: *mut SmmCpuServiceProtocol,
        exception_type: ExceptionType,
        interrupt_handler: CpuInterruptHandler,
    ) -> Status,
}

/// `EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL`, 8 bytes.
#[cfg(not(mm_mp_edk2))]
#[repr(C)]
pub struct SmmCpuRendezvousProtocol {
    pub wait_for_all_processor: unsafe extern "efiapi" fn(
        this: *mut SmmCpuRendezvousProtocol,
        blocking_mode: Boolean,
    ) -> Status,
}

/// `EFI_MM_ENTRY_CONTEXT` (BEHAVIOUR.md §1.7), for integrators that fill gMmst.
#[repr(C)]
pub struct MmEntryContext {
    pub mm_startup_this_ap: Option<
        unsafe extern "efiapi" fn(
            procedure: ApProcedure,
            cpu_number: usize,
            proc_arguments: *mut c_void,
        ) -> Status,
    >,
    pub currently_executing_cpu: usize,
    pub number_of_cpus: usize,
    pub cpu_save_state_size: *mut usize,
    pub cpu_save_state: *mut *mut c_void,
}

// ---------------------------------------------------------------------------
// Layout assertions (BEHAVIOUR.md §1). The X64 numbers are checked on 64-bit targets;
// IA32 only has to compile.
// ---------------------------------------------------------------------------
static_assertions::const_assert_eq!(encode_error(64, 2), 0x8000_0000_0000_0002);
static_assertions::const_assert_eq!(encode_error(64, 0x15), 0x8000_0000_0000_0015);
static_assertions::const_assert_eq!(encode_error(32, 2), 0x8000_0002);
static_assertions::const_assert_eq!(encode_error(32, 0x12), 0x8000_0012);
static_assertions::const_assert_eq!(
    Status::INVALID_PARAMETER.0 as u64,
    encode_error(usize::BITS, 2)
);
static_assertions::const_assert_eq!(Status::UNSUPPORTED.0 as u64, encode_error(usize::BITS, 3));
static_assertions::const_assert_eq!(
    Status::BUFFER_TOO_SMALL.0 as u64,
    encode_error(usize::BITS, 5)
);
static_assertions::const_assert_eq!(Status::NOT_READY.0 as u64, encode_error(usize::BITS, 6));
static_assertions::const_assert_eq!(Status::DEVICE_ERROR.0 as u64, encode_error(usize::BITS, 7));
static_assertions::const_assert_eq!(
    Status::OUT_OF_RESOURCES.0 as u64,
    encode_error(usize::BITS, 9)
);
static_assertions::const_assert_eq!(Status::NOT_FOUND.0 as u64, encode_error(usize::BITS, 0xE));
static_assertions::const_assert_eq!(Status::TIMEOUT.0 as u64, encode_error(usize::BITS, 0x12));
static_assertions::const_assert_eq!(
    Status::NOT_STARTED.0 as u64,
    encode_error(usize::BITS, 0x13)
);
static_assertions::const_assert_eq!(
    Status::ALREADY_STARTED.0 as u64,
    encode_error(usize::BITS, 0x14)
);
static_assertions::const_assert_eq!(Status::ABORTED.0 as u64, encode_error(usize::BITS, 0x15));

static_assertions::assert_eq_size!(Boolean, u8);
static_assertions::assert_eq_size!(Guid, [u8; 16]);
static_assertions::const_assert_eq!(core::mem::align_of::<Guid>(), 4);
static_assertions::assert_eq_size!(Status, usize);
static_assertions::assert_eq_size!(MmCompletion, usize);
static_assertions::assert_eq_size!(ApProcedure, usize);
static_assertions::assert_eq_size!(ApProcedure2, usize);
static_assertions::assert_eq_size!(CpuPhysicalLocation, [u8; 12]);
static_assertions::assert_eq_size!(CpuPhysicalLocation2, [u8; 24]);

#[cfg(target_pointer_width = "64")]
mod x64_layout {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};
    use static_assertions::const_assert_eq;

    const_assert_eq!(size_of::<ProcessorInformation>(), 48);
    const_assert_eq!(align_of::<ProcessorInformation>(), 8);
    const_assert_eq!(offset_of!(ProcessorInformation, processor_id), 0);
    const_assert_eq!(offset_of!(ProcessorInformation, status_flag), 8);
    const_assert_eq!(offset_of!(ProcessorInformation, location), 12);
    const_assert_eq!(offset_of!(ProcessorInformation, extended_information), 24);

    const_assert_eq!(size_of::<MmMpProtocol>(), 56);
    const_assert_eq!(offset_of!(MmMpProtocol, revision), 0);
    const_assert_eq!(offset_of!(MmMpProtocol, attributes), 4);
    const_assert_eq!(offset_of!(MmMpProtocol, get_number_of_processors), 8);
    const_assert_eq!(offset_of!(MmMpProtocol, dispatch_procedure), 16);
    const_assert_eq!(offset_of!(MmMpProtocol, broadcast_procedure), 24);
    const_assert_eq!(offset_of!(MmMpProtocol, set_startup_procedure), 32);
    const_assert_eq!(offset_of!(MmMpProtocol, check_for_procedure), 40);
    const_assert_eq!(offset_of!(MmMpProtocol, wait_for_procedure), 48);

    const_assert_eq!(size_of::<SmmCpuServiceProtocol>(), 48);
    const_assert_eq!(offset_of!(SmmCpuServiceProtocol, get_processor_info), 0);
    const_assert_eq!(offset_of!(SmmCpuServiceProtocol, switch_bsp), 8);
    const_assert_eq!(offset_of!(SmmCpuServiceProtocol, add_processor), 16);
    const_assert_eq!(offset_of!(SmmCpuServiceProtocol, remove_processor), 24);
    const_assert_eq!(offset_of!(SmmCpuServiceProtocol, who_am_i), 32);
    const_assert_eq!(
        offset_of!(SmmCpuServiceProtocol, register_exception_handler),
        40
    );

    const_assert_eq!(size_of::<SmmCpuRendezvousProtocol>(), 8);
    const_assert_eq!(size_of::<SystemContext>(), 8);
    const_assert_eq!(size_of::<MmEntryContext>(), 40);
    const_assert_eq!(size_of::<Status>(), 8);
}
