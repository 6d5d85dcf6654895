/** @file
  EFIAPI and C API check for include/mm_mp.h (BEHAVIOUR.md §1.1, §11), run by
  tests/c_header.rs on x86_64 with
    -std=c11 -Wall -Wextra -Werror -Werror=incompatible-pointer-types

  1. At compile time: every exported function and every function-pointer
     member or procedure typedef of the header is assigned to (and from) a
     pointer type spelled with an explicit __attribute__((ms_abi)), never
     with the header's EFIAPI. If the header lost EFIAPI anywhere, GCC sees a
     SysV function where an ms_abi one is expected and the build fails.
     Member names and layouts are the ones of BEHAVIOUR.md §11 / §1.4-§1.6.
  2. At run time: the exports are called with bad arguments and must return
     the statuses BEHAVIOUR.md §11 names; then one single-CPU SMI runs the MM MP
     services from MmFoundationEntry.

  The driver passes -DMM_MP_HAS_<Function>=1 for the BEHAVIOUR.md §11 functions the
  header declares that are not yet in every version of it.
**/

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm_mp.h"

#if !defined(__x86_64__) || !defined(__GNUC__)
#error "efiapi_check.c checks the X64 ms_abi convention: build it on x86_64 with GCC or Clang"
#endif

#if defined(MM_MP_EDK2_TYPES)
#error "this test is for the standalone mode"
#endif

/* Spelled out on purpose: the test must not trust the header's EFIAPI. */
#define MSABI __attribute__((ms_abi))

/* ------------------------------------------------------------------------
   Layouts (BEHAVIOUR.md §1.2-§1.6, §11)
   ------------------------------------------------------------------------ */

_Static_assert (sizeof (UINTN) == 8, "X64");
_Static_assert (sizeof (BOOLEAN) == 1, "BOOLEAN");
_Static_assert (sizeof (EFI_GUID) == 16 && _Alignof (EFI_GUID) == 4, "EFI_GUID");

_Static_assert (EFI_SUCCESS == 0, "status");
_Static_assert (EFI_INVALID_PARAMETER == 0x8000000000000002ULL, "status");
_Static_assert (EFI_UNSUPPORTED == 0x8000000000000003ULL, "status");
_Static_assert (EFI_BUFFER_TOO_SMALL == 0x8000000000000005ULL, "status");
_Static_assert (EFI_NOT_READY == 0x8000000000000006ULL, "status");
_Static_assert (EFI_DEVICE_ERROR == 0x8000000000000007ULL, "status");
_Static_assert (EFI_OUT_OF_RESOURCES == 0x8000000000000009ULL, "status");
_Static_assert (EFI_NOT_FOUND == 0x800000000000000EULL, "status");
_Static_assert (EFI_TIMEOUT == 0x8000000000000012ULL, "status");
_Static_assert (EFI_NOT_STARTED == 0x8000000000000013ULL, "status");
_Static_assert (EFI_ALREADY_STARTED == 0x8000000000000014ULL, "status");
_Static_assert (EFI_ABORTED == 0x8000000000000015ULL, "status");
_Static_assert (EFI_ERROR (EFI_ABORTED) && !EFI_ERROR (EFI_SUCCESS), "EFI_ERROR");

_Static_assert (MM_MP_CONFIG_REVISION == 1, "revision");
_Static_assert (MM_MP_PLATFORM_REVISION == 1, "revision");
_Static_assert (MM_MP_SYNC_MODE_TRADITIONAL == 0, "sync mode");
_Static_assert (MM_MP_SYNC_MODE_RELAXED == 1, "sync mode");
_Static_assert (EFI_MM_MP_PROTOCOL_REVISION == 0, "revision");
_Static_assert (EFI_MM_MP_TIMEOUT_SUPPORTED == 1, "attribute");
_Static_assert (INVALID_APIC_ID == 0xFFFFFFFFFFFFFFFFULL, "INVALID_APIC_ID");

_Static_assert (sizeof (EFI_PROCESSOR_INFORMATION) == 48, "EFI_PROCESSOR_INFORMATION");
_Static_assert (_Alignof (EFI_PROCESSOR_INFORMATION) == 8, "EFI_PROCESSOR_INFORMATION");
_Static_assert (offsetof (EFI_PROCESSOR_INFORMATION, ProcessorId) == 0, "");
_Static_assert (offsetof (EFI_PROCESSOR_INFORMATION, StatusFlag) == 8, "");
_Static_assert (offsetof (EFI_PROCESSOR_INFORMATION, Location) == 12, "");
_Static_assert (offsetof (EFI_PROCESSOR_INFORMATION, ExtendedInformation) == 24, "");
_Static_assert (offsetof (EFI_PROCESSOR_INFORMATION, ExtendedInformation.Location2.Thread) == 44, "");
_Static_assert (sizeof (EFI_CPU_PHYSICAL_LOCATION) == 12, "");
_Static_assert (sizeof (EFI_CPU_PHYSICAL_LOCATION2) == 24, "");

_Static_assert (sizeof (EFI_MM_MP_PROTOCOL) == 56, "EFI_MM_MP_PROTOCOL");
_Static_assert (offsetof (EFI_MM_MP_PROTOCOL, Attributes) == 4, "");
_Static_assert (offsetof (EFI_MM_MP_PROTOCOL, GetNumberOfProcessors) == 8, "");
_Static_assert (offsetof (EFI_MM_MP_PROTOCOL, DispatchProcedure) == 16, "");
_Static_assert (offsetof (EFI_MM_MP_PROTOCOL, BroadcastProcedure) == 24, "");
_Static_assert (offsetof (EFI_MM_MP_PROTOCOL, SetStartupProcedure) == 32, "");
_Static_assert (offsetof (EFI_MM_MP_PROTOCOL, CheckForProcedure) == 40, "");
_Static_assert (offsetof (EFI_MM_MP_PROTOCOL, WaitForProcedure) == 48, "");

_Static_assert (sizeof (EFI_SMM_CPU_SERVICE_PROTOCOL) == 48, "EFI_SMM_CPU_SERVICE_PROTOCOL");
_Static_assert (offsetof (EFI_SMM_CPU_SERVICE_PROTOCOL, GetProcessorInfo) == 0, "");
_Static_assert (offsetof (EFI_SMM_CPU_SERVICE_PROTOCOL, SwitchBsp) == 8, "");
_Static_assert (offsetof (EFI_SMM_CPU_SERVICE_PROTOCOL, AddProcessor) == 16, "");
_Static_assert (offsetof (EFI_SMM_CPU_SERVICE_PROTOCOL, RemoveProcessor) == 24, "");
_Static_assert (offsetof (EFI_SMM_CPU_SERVICE_PROTOCOL, WhoAmI) == 32, "");
_Static_assert (offsetof (EFI_SMM_CPU_SERVICE_PROTOCOL, RegisterExceptionHandler) == 40, "");
_Static_assert (sizeof (EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL) == 8, "");
_Static_assert (sizeof (EFI_SYSTEM_CONTEXT) == 8, "EFI_SYSTEM_CONTEXT");
_Static_assert (sizeof (MM_COMPLETION) == 8, "MM_COMPLETION");

_Static_assert (sizeof (MM_MP_CONFIG) == 64, "MM_MP_CONFIG");
_Static_assert (offsetof (MM_MP_CONFIG, NumberOfCpus) == 4, "");
_Static_assert (offsetof (MM_MP_CONFIG, MaxTokens) == 8, "");
_Static_assert (offsetof (MM_MP_CONFIG, CacheLineSize) == 12, "");
_Static_assert (offsetof (MM_MP_CONFIG, SyncMode) == 16, "");
_Static_assert (offsetof (MM_MP_CONFIG, BspIndex) == 20, "");
_Static_assert (offsetof (MM_MP_CONFIG, BspElection) == 24, "");
_Static_assert (offsetof (MM_MP_CONFIG, HotPlugSupport) == 25, "");
_Static_assert (offsetof (MM_MP_CONFIG, BlockingStartupThisAp) == 26, "");
_Static_assert (offsetof (MM_MP_CONFIG, ConfigureMtrrs) == 27, "");
_Static_assert (offsetof (MM_MP_CONFIG, Reserved) == 28, "");
_Static_assert (offsetof (MM_MP_CONFIG, ApSyncTimeoutUs) == 32, "");
_Static_assert (offsetof (MM_MP_CONFIG, ApSyncTimeout2Us) == 40, "");
_Static_assert (offsetof (MM_MP_CONFIG, ProcessorInfo) == 48, "");
_Static_assert (offsetof (MM_MP_CONFIG, HotPlugApicId) == 56, "");

_Static_assert (sizeof (MM_MP_PLATFORM) == 24 + 20 * 8, "MM_MP_PLATFORM");
_Static_assert (offsetof (MM_MP_PLATFORM, Context) == 8, "");
_Static_assert (offsetof (MM_MP_PLATFORM, TicksPerSecond) == 16, "");
_Static_assert (offsetof (MM_MP_PLATFORM, GetTicks) == 24, "");
_Static_assert (offsetof (MM_MP_PLATFORM, CpuPause) == 32, "");
_Static_assert (offsetof (MM_MP_PLATFORM, MmFoundationEntry) == 24 + 15 * 8, "");
_Static_assert (offsetof (MM_MP_PLATFORM, Log) == 24 + 19 * 8, "");

/* ------------------------------------------------------------------------
   ms_abi pointer types, written without EFIAPI
   ------------------------------------------------------------------------ */

typedef EFI_STATUS (MSABI *MS_AP_PROCEDURE2)(VOID *ProcedureArgument);
typedef VOID (MSABI *MS_AP_PROCEDURE)(VOID *Buffer);
typedef VOID (MSABI *MS_CPU_INTERRUPT_HANDLER)(EFI_EXCEPTION_TYPE Type, EFI_SYSTEM_CONTEXT Ctx);

/* Initialises a variable of the ms_abi function-pointer type TYPE with VALUE:
   with -Werror=incompatible-pointer-types this only compiles if VALUE has
   exactly that type, calling convention included. */
#define CHECK_ASSIGN(TYPE, VALUE, NAME)  __typeof__ (TYPE) Check_##NAME = (VALUE); (void)Check_##NAME

/* -- callbacks and procedures defined here, all ms_abi -- */

static EFI_STATUS MSABI Proc2 (VOID *Arg);
static VOID MSABI Proc (VOID *Arg);
static VOID MSABI Handler (EFI_EXCEPTION_TYPE Type, EFI_SYSTEM_CONTEXT Ctx) { (void)Type; (void)Ctx; }

static UINT64 MSABI PGetTicks (VOID *C) { (void)C; return 0; }
static VOID MSABI PCpuPause (VOID *C) { (void)C; }
static UINT64 MSABI PGetApicId (VOID *C) { (void)C; return 0; }
static VOID MSABI PSendSmiIpi (VOID *C, UINT64 A) { (void)C; (void)A; }
static BOOLEAN MSABI PIsValidSmi (VOID *C) { (void)C; return TRUE; }
static BOOLEAN MSABI PClearTopLevelSmiStatus (VOID *C) { (void)C; return TRUE; }
static EFI_STATUS MSABI PBspElection (VOID *C, BOOLEAN *B) { (void)C; (void)B; return EFI_UNSUPPORTED; }
static VOID MSABI PCpuHook (VOID *C, UINTN I) { (void)C; (void)I; }
static BOOLEAN MSABI PIsSyncAlwaysNeeded (VOID *C) { (void)C; return FALSE; }
static VOID MSABI PCounts (VOID *C, UINT32 *D, UINT32 *B, UINT32 *X) { (void)C; *D = *B = *X = 0; }
static VOID MSABI PMmFoundationEntry (VOID *C, UINTN Bsp);
static EFI_STATUS MSABI PGetProcessorLocation (VOID *C, UINT64 A, EFI_CPU_PHYSICAL_LOCATION *L,
                                              EFI_CPU_PHYSICAL_LOCATION2 *L2)
{
  (void)C; (void)A; (void)L; (void)L2; return EFI_NOT_FOUND;
}
static EFI_STATUS MSABI PRegisterExceptionHandler (VOID *C, INTN T, EFI_CPU_INTERRUPT_HANDLER H)
{
  (void)C; (void)T; (void)H; return EFI_UNSUPPORTED;
}
static VOID MSABI PFatal (VOID *C, CONST CHAR8 *M);
static VOID MSABI PLog (VOID *C, UINTN Level, CONST CHAR8 *M) { (void)C; (void)Level; (void)M; }

/* Every MM_MP_PLATFORM member: read it into an ms_abi pointer, write an
   ms_abi function into it. */
static VOID
CheckPlatformTypes (MM_MP_PLATFORM *P)
{
  CHECK_ASSIGN (UINT64 (MSABI *)(VOID *), P->GetTicks, GetTicks);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *), P->CpuPause, CpuPause);
  CHECK_ASSIGN (UINT64 (MSABI *)(VOID *), P->GetApicId, GetApicId);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINT64), P->SendSmiIpi, SendSmiIpi);
  CHECK_ASSIGN (BOOLEAN (MSABI *)(VOID *), P->IsValidSmi, IsValidSmi);
  CHECK_ASSIGN (BOOLEAN (MSABI *)(VOID *), P->ClearTopLevelSmiStatus, ClearTopLevelSmiStatus);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(VOID *, BOOLEAN *), P->BspElection, BspElection);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINTN), P->RendezvousEntry, RendezvousEntry);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINTN), P->RendezvousExit, RendezvousExit);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINTN), P->BeforeMmiHandler, BeforeMmiHandler);
  CHECK_ASSIGN (BOOLEAN (MSABI *)(VOID *), P->IsSyncAlwaysNeeded, IsSyncAlwaysNeeded);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINT32 *, UINT32 *, UINT32 *),
                P->GetSmmDelayedBlockedDisabledCount, GetSmmDelayedBlockedDisabledCount);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINTN), P->MtrrSave, MtrrSave);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINTN), P->MtrrReplace, MtrrReplace);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINTN), P->MtrrRestore, MtrrRestore);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINTN), P->MmFoundationEntry, MmFoundationEntry);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(VOID *, UINT64, EFI_CPU_PHYSICAL_LOCATION *,
                                     EFI_CPU_PHYSICAL_LOCATION2 *),
                P->GetProcessorLocation, GetProcessorLocation);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(VOID *, INTN, MS_CPU_INTERRUPT_HANDLER),
                P->RegisterExceptionHandler, RegisterExceptionHandler);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, CONST CHAR8 *), P->Fatal, Fatal);
  CHECK_ASSIGN (VOID (MSABI *)(VOID *, UINTN, CONST CHAR8 *), P->Log, Log);

  P->GetTicks = PGetTicks;
  P->CpuPause = PCpuPause;
  P->GetApicId = PGetApicId;
  P->SendSmiIpi = PSendSmiIpi;
  P->IsValidSmi = PIsValidSmi;
  P->ClearTopLevelSmiStatus = PClearTopLevelSmiStatus;
  P->BspElection = PBspElection;
  P->RendezvousEntry = PCpuHook;
  P->RendezvousExit = PCpuHook;
  P->BeforeMmiHandler = PCpuHook;
  P->IsSyncAlwaysNeeded = PIsSyncAlwaysNeeded;
  P->GetSmmDelayedBlockedDisabledCount = PCounts;
  P->MtrrSave = PCpuHook;
  P->MtrrReplace = PCpuHook;
  P->MtrrRestore = PCpuHook;
  P->MmFoundationEntry = PMmFoundationEntry;
  P->GetProcessorLocation = PGetProcessorLocation;
  P->RegisterExceptionHandler = PRegisterExceptionHandler;
  P->Fatal = PFatal;
  P->Log = PLog;
}

/* Procedure typedefs, both directions. */
static VOID
CheckProcedureTypes (VOID)
{
  EFI_AP_PROCEDURE2          P2 = Proc2;
  EFI_AP_PROCEDURE           P1 = Proc;
  EFI_CPU_INTERRUPT_HANDLER  H  = Handler;
  MS_AP_PROCEDURE2           B2 = P2;
  MS_AP_PROCEDURE            B1 = P1;
  MS_CPU_INTERRUPT_HANDLER   BH = H;

  (void)B2; (void)B1; (void)BH;
}

/* Protocol members: read each into an ms_abi pointer with its signature
   (BEHAVIOUR.md §1.4-§1.5). */
static VOID
CheckProtocolTypes (EFI_MM_MP_PROTOCOL *Mp, EFI_SMM_CPU_SERVICE_PROTOCOL *Cs,
                    EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL *Rv)
{
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_MM_MP_PROTOCOL *, UINTN *),
                Mp->GetNumberOfProcessors, GetNumberOfProcessors);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_MM_MP_PROTOCOL *, MS_AP_PROCEDURE2, UINTN, UINTN,
                                     VOID *, MM_COMPLETION *, EFI_STATUS *),
                Mp->DispatchProcedure, DispatchProcedure);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_MM_MP_PROTOCOL *, MS_AP_PROCEDURE2, UINTN,
                                     VOID *, MM_COMPLETION *, EFI_STATUS *),
                Mp->BroadcastProcedure, BroadcastProcedure);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_MM_MP_PROTOCOL *, MS_AP_PROCEDURE, VOID *),
                Mp->SetStartupProcedure, SetStartupProcedure);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_MM_MP_PROTOCOL *, MM_COMPLETION),
                Mp->CheckForProcedure, CheckForProcedure);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_MM_MP_PROTOCOL *, MM_COMPLETION),
                Mp->WaitForProcedure, WaitForProcedure);

  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_SMM_CPU_SERVICE_PROTOCOL *, UINTN,
                                     EFI_PROCESSOR_INFORMATION *),
                Cs->GetProcessorInfo, GetProcessorInfo);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_SMM_CPU_SERVICE_PROTOCOL *, UINTN),
                Cs->SwitchBsp, SwitchBsp);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_SMM_CPU_SERVICE_PROTOCOL *, UINT64, UINTN *),
                Cs->AddProcessor, AddProcessor);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_SMM_CPU_SERVICE_PROTOCOL *, UINTN),
                Cs->RemoveProcessor, RemoveProcessor);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST EFI_SMM_CPU_SERVICE_PROTOCOL *, UINTN *),
                Cs->WhoAmI, WhoAmI);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(EFI_SMM_CPU_SERVICE_PROTOCOL *, EFI_EXCEPTION_TYPE,
                                     MS_CPU_INTERRUPT_HANDLER),
                Cs->RegisterExceptionHandler, CsRegisterExceptionHandler);

  CHECK_ASSIGN (EFI_STATUS (MSABI *)(EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL *, BOOLEAN),
                Rv->WaitForAllProcessor, WaitForAllProcessor);
}

/* Every exported function of BEHAVIOUR.md §11 (the ones this header has). */
static VOID
CheckExportTypes (VOID)
{
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(CONST MM_MP_CONFIG *, UINTN *), MmMpGetRequiredSize,
                MmMpGetRequiredSize);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(VOID *, UINTN, CONST MM_MP_CONFIG *, CONST MM_MP_PLATFORM *,
                                     MM_MP_INSTANCE **),
                MmMpInitialize, MmMpInitialize);
  CHECK_ASSIGN (VOID (MSABI *)(MM_MP_INSTANCE *, UINTN), MmMpSmiRendezvous, MmMpSmiRendezvous);
  CHECK_ASSIGN (EFI_MM_MP_PROTOCOL *(MSABI *)(MM_MP_INSTANCE *), MmMpGetMmMpProtocol,
                MmMpGetMmMpProtocol);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(MM_MP_INSTANCE *, MS_AP_PROCEDURE, UINTN, VOID *),
                MmMpStartupThisAp, MmMpStartupThisAp);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(MM_MP_INSTANCE *, MS_AP_PROCEDURE, UINTN, VOID *),
                MmMpBlockingStartupThisAp, MmMpBlockingStartupThisAp);
  CHECK_ASSIGN (UINTN (MSABI *)(MM_MP_INSTANCE *), MmMpGetCurrentBsp, MmMpGetCurrentBsp);
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(MM_MP_INSTANCE *, MM_COMPLETION, EFI_STATUS *),
                MmMpGetTokenResult, MmMpGetTokenResult);
#if MM_MP_HAS_MmMpGetCpuServiceProtocol
  CHECK_ASSIGN (EFI_SMM_CPU_SERVICE_PROTOCOL *(MSABI *)(MM_MP_INSTANCE *),
                MmMpGetCpuServiceProtocol, MmMpGetCpuServiceProtocol);
#endif
#if MM_MP_HAS_MmMpGetRendezvousProtocol
  CHECK_ASSIGN (EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL *(MSABI *)(MM_MP_INSTANCE *),
                MmMpGetRendezvousProtocol, MmMpGetRendezvousProtocol);
#endif
#if MM_MP_HAS_MmMpGetStatistics
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(MM_MP_INSTANCE *, MM_MP_STATISTICS *), MmMpGetStatistics,
                MmMpGetStatistics);
#endif
#if MM_MP_HAS_MmMpGetHotPlugStatistics
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(MM_MP_INSTANCE *, MM_MP_HOT_PLUG_STATISTICS *), MmMpGetHotPlugStatistics,
                MmMpGetHotPlugStatistics);
#endif
#if MM_MP_HAS_MmMpSyncGetRequiredSize
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(UINTN, UINTN, UINTN *), MmMpSyncGetRequiredSize,
                MmMpSyncGetRequiredSize);
#endif
#if MM_MP_HAS_MmMpSyncContextInit
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(VOID *, UINTN, UINTN, UINTN, MM_MP_SYNC_CONTEXT **),
                MmMpSyncContextInit, MmMpSyncContextInit);
#endif
#if MM_MP_HAS_MmMpSyncContextReset
  CHECK_ASSIGN (VOID (MSABI *)(MM_MP_SYNC_CONTEXT *), MmMpSyncContextReset, MmMpSyncContextReset);
#endif
#if MM_MP_HAS_MmMpSyncGetArrivedCpuCount
  CHECK_ASSIGN (UINTN (MSABI *)(MM_MP_SYNC_CONTEXT *), MmMpSyncGetArrivedCpuCount,
                MmMpSyncGetArrivedCpuCount);
#endif
#if MM_MP_HAS_MmMpSyncCheckInCpu
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(MM_MP_SYNC_CONTEXT *, UINTN), MmMpSyncCheckInCpu,
                MmMpSyncCheckInCpu);
#endif
#if MM_MP_HAS_MmMpSyncCheckOutCpu
  CHECK_ASSIGN (EFI_STATUS (MSABI *)(MM_MP_SYNC_CONTEXT *, UINTN), MmMpSyncCheckOutCpu,
                MmMpSyncCheckOutCpu);
#endif
#if MM_MP_HAS_MmMpSyncLockDoor
  CHECK_ASSIGN (VOID (MSABI *)(MM_MP_SYNC_CONTEXT *, UINTN, UINTN *), MmMpSyncLockDoor,
                MmMpSyncLockDoor);
#endif
#if MM_MP_HAS_MmMpSyncWaitForAPs
  CHECK_ASSIGN (VOID (MSABI *)(MM_MP_SYNC_CONTEXT *, UINTN, UINTN), MmMpSyncWaitForAPs,
                MmMpSyncWaitForAPs);
#endif
#if MM_MP_HAS_MmMpSyncReleaseOneAp
  CHECK_ASSIGN (VOID (MSABI *)(MM_MP_SYNC_CONTEXT *, UINTN, UINTN), MmMpSyncReleaseOneAp,
                MmMpSyncReleaseOneAp);
#endif
#if MM_MP_HAS_MmMpSyncWaitForBsp
  CHECK_ASSIGN (VOID (MSABI *)(MM_MP_SYNC_CONTEXT *, UINTN, UINTN), MmMpSyncWaitForBsp,
                MmMpSyncWaitForBsp);
#endif
#if MM_MP_HAS_MmMpSyncReleaseBsp
  CHECK_ASSIGN (VOID (MSABI *)(MM_MP_SYNC_CONTEXT *, UINTN, UINTN), MmMpSyncReleaseBsp,
                MmMpSyncReleaseBsp);
#endif
}

/* ------------------------------------------------------------------------
   Run-time checks
   ------------------------------------------------------------------------ */

static int  mFailures;
static int  mChecks;

static const char *
StatusName (EFI_STATUS S)
{
  switch (S) {
    case EFI_SUCCESS:           return "EFI_SUCCESS";
    case EFI_INVALID_PARAMETER: return "EFI_INVALID_PARAMETER";
    case EFI_UNSUPPORTED:       return "EFI_UNSUPPORTED";
    case EFI_BUFFER_TOO_SMALL:  return "EFI_BUFFER_TOO_SMALL";
    case EFI_NOT_READY:         return "EFI_NOT_READY";
    case EFI_DEVICE_ERROR:      return "EFI_DEVICE_ERROR";
    case EFI_OUT_OF_RESOURCES:  return "EFI_OUT_OF_RESOURCES";
    case EFI_NOT_FOUND:         return "EFI_NOT_FOUND";
    case EFI_TIMEOUT:           return "EFI_TIMEOUT";
    case EFI_NOT_STARTED:       return "EFI_NOT_STARTED";
    case EFI_ALREADY_STARTED:   return "EFI_ALREADY_STARTED";
    case EFI_ABORTED:           return "EFI_ABORTED";
    default:                    return "(unknown status)";
  }
}

#define EXPECT_STATUS(CALL, EXPECTED)  ExpectStatus ((CALL), (EXPECTED), #CALL, __LINE__)
#define EXPECT(COND)                   Expect ((COND) != 0, #COND, __LINE__)

static VOID
ExpectStatus (EFI_STATUS Got, EFI_STATUS Expected, const char *What, int Line)
{
  mChecks++;
  if (Got != Expected) {
    mFailures++;
    fprintf (stderr, "efiapi_check.c:%d: %s\n  returned %s (0x%llx), expected %s\n", Line, What,
             StatusName (Got), (unsigned long long)Got, StatusName (Expected));
  }
}

static VOID
Expect (int Ok, const char *What, int Line)
{
  mChecks++;
  if (!Ok) {
    mFailures++;
    fprintf (stderr, "efiapi_check.c:%d: check failed: %s\n", Line, What);
  }
}

static VOID MSABI
PFatal (VOID *C, CONST CHAR8 *M)
{
  (void)C;
  fprintf (stderr, "Fatal hook: %s\n", M);
  abort ();
}

static EFI_STATUS MSABI
Proc2 (VOID *Arg)
{
  (void)Arg;
  return EFI_SUCCESS;
}

static VOID MSABI
Proc (VOID *Arg)
{
  (void)Arg;
}

/* State of the single-CPU SMI run. */
static MM_MP_INSTANCE  *mInstance;
static int             mFoundationRuns;

/* One CPU, BSP 0: the services' argument checks inside a real SMI. */
static VOID MSABI
PMmFoundationEntry (VOID *C, UINTN Bsp)
{
  EFI_MM_MP_PROTOCOL  *Mp;
  UINTN               N;
  MM_COMPLETION       Token;
  EFI_STATUS          Statuses[1];

  (void)C;
  if (mInstance == NULL) {
    return; /* the type-check table above is never run */
  }

  mFoundationRuns++;
  Mp = MmMpGetMmMpProtocol (mInstance);
  EXPECT (Bsp == 0);
  EXPECT (MmMpGetCurrentBsp (mInstance) == 0);
  EXPECT_STATUS (Mp->GetNumberOfProcessors (Mp, &N), EFI_SUCCESS);
  EXPECT (N == 1);
  /* the BSP itself and an index out of range */
  EXPECT_STATUS (Mp->DispatchProcedure (Mp, Proc2, 0, 0, NULL, NULL, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (Mp->DispatchProcedure (Mp, Proc2, 7, 0, NULL, NULL, NULL), EFI_INVALID_PARAMETER);
  /* no AP present */
  Statuses[0] = EFI_SUCCESS;
  EXPECT_STATUS (Mp->BroadcastProcedure (Mp, Proc2, 0, NULL, NULL, Statuses), EFI_NOT_STARTED);
  EXPECT_STATUS (Mp->BroadcastProcedure (Mp, NULL, 0, NULL, NULL, NULL), EFI_INVALID_PARAMETER);
  /* timeouts need a time source; this instance has none */
  EXPECT_STATUS (Mp->BroadcastProcedure (Mp, Proc2, 10, NULL, NULL, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (Mp->CheckForProcedure (Mp, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (Mp->WaitForProcedure (Mp, NULL), EFI_INVALID_PARAMETER);
  Token = (MM_COMPLETION)(UINTN)0x5a5a5a5a5a5aULL;
  EXPECT_STATUS (Mp->CheckForProcedure (Mp, Token), EFI_NOT_FOUND);
  EXPECT_STATUS (Mp->WaitForProcedure (Mp, Token), EFI_NOT_FOUND);
  EXPECT_STATUS (MmMpStartupThisAp (mInstance, Proc, 0, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (MmMpStartupThisAp (mInstance, Proc, 3, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (MmMpBlockingStartupThisAp (mInstance, NULL, 0, NULL), EFI_INVALID_PARAMETER);
#if MM_MP_HAS_MmMpGetRendezvousProtocol
  {
    /* BEHAVIOUR.md §6.7: with no AP at all, every AP has arrived */
    EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL  *Rv = MmMpGetRendezvousProtocol (mInstance);

    EXPECT (Rv != NULL);
    if (Rv != NULL) {
      EXPECT_STATUS (Rv->WaitForAllProcessor (Rv, TRUE), EFI_SUCCESS);
      EXPECT_STATUS (Rv->WaitForAllProcessor (Rv, FALSE), EFI_SUCCESS);
    }
  }
#endif
#if MM_MP_HAS_MmMpGetCpuServiceProtocol
  {
    /* BEHAVIOUR.md §5.2 argument checks */
    EFI_SMM_CPU_SERVICE_PROTOCOL  *Cs = MmMpGetCpuServiceProtocol (mInstance);
    EFI_PROCESSOR_INFORMATION     Record;
    UINTN                         Number = 99;

    EXPECT (Cs != NULL);
    if (Cs != NULL) {
      EXPECT_STATUS (Cs->GetProcessorInfo (Cs, 1, &Record), EFI_INVALID_PARAMETER);
      EXPECT_STATUS (Cs->GetProcessorInfo (Cs, 0, NULL), EFI_INVALID_PARAMETER);
      EXPECT_STATUS (Cs->GetProcessorInfo (Cs, 0, &Record), EFI_SUCCESS);
      EXPECT (Record.ProcessorId == 0);
      EXPECT_STATUS (Cs->WhoAmI (Cs, NULL), EFI_INVALID_PARAMETER);
      EXPECT_STATUS (Cs->WhoAmI (Cs, &Number), EFI_SUCCESS); /* GetApicId answers 0 */
      EXPECT (Number == 0);
      EXPECT_STATUS (Cs->SwitchBsp (Cs, 1), EFI_INVALID_PARAMETER);
      EXPECT_STATUS (Cs->AddProcessor (Cs, 5, &Number), EFI_UNSUPPORTED); /* no hot-plug */
      EXPECT_STATUS (Cs->RemoveProcessor (Cs, 0), EFI_UNSUPPORTED);
      EXPECT_STATUS (Cs->RegisterExceptionHandler (Cs, 0, Handler), EFI_UNSUPPORTED);
    }
  }
#endif
}

static VOID
FillPlatform (MM_MP_PLATFORM *P)
{
  memset (P, 0, sizeof (*P));
  P->Revision = MM_MP_PLATFORM_REVISION;
  P->MmFoundationEntry = PMmFoundationEntry;
  P->GetApicId = PGetApicId; /* always CPU 0 (APIC ID 0): the only CPU that calls */
  P->Fatal = PFatal;
}

static VOID
FillConfig (MM_MP_CONFIG *C, EFI_PROCESSOR_INFORMATION *Info, UINT32 Cpus)
{
  UINT32  I;

  memset (Info, 0, sizeof (*Info) * Cpus);
  for (I = 0; I < Cpus; I++) {
    Info[I].ProcessorId = I;
    Info[I].StatusFlag = PROCESSOR_ENABLED_BIT | PROCESSOR_HEALTH_STATUS_BIT |
                         (I == 0 ? PROCESSOR_AS_BSP_BIT : 0);
  }
  memset (C, 0, sizeof (*C));
  C->Revision = MM_MP_CONFIG_REVISION;
  C->NumberOfCpus = Cpus;
  C->MaxTokens = 4;
  C->CacheLineSize = 64;
  C->SyncMode = MM_MP_SYNC_MODE_TRADITIONAL;
  C->BspIndex = 0;
  C->BspElection = FALSE;
  C->ProcessorInfo = Info;
}

static int
Untouched (const unsigned char *Buf, size_t Size)
{
  size_t  I;

  for (I = 0; I < Size; I++) {
    if (Buf[I] != 0xA5) {
      return 0;
    }
  }
  return 1;
}

/* MmMpInitialize must fail with Expected and leave Buffer untouched. */
#define EXPECT_INIT_FAILS(BUF, SIZE, CFG, PLAT, EXPECTED)                              \
  do {                                                                                 \
    MM_MP_INSTANCE  *Inst_ = NULL;                                                     \
    memset (Region, 0xA5, RegionSize);                                                 \
    EXPECT_STATUS (MmMpInitialize ((BUF), (SIZE), (CFG), (PLAT), &Inst_), (EXPECTED)); \
    EXPECT (Untouched (Region, RegionSize));                                           \
  } while (0)

int
main (void)
{
  MM_MP_CONFIG                       Config, Bad;
  MM_MP_PLATFORM                     Platform, BadPlatform;
  EFI_PROCESSOR_INFORMATION          Info[2];
  UINTN                              Size = 0, Size2 = 0, Bsp;
  unsigned char                      *Region;
  size_t                             RegionSize;
  MM_MP_INSTANCE                     *Instance = NULL;
  EFI_MM_MP_PROTOCOL                 *Mp;
  EFI_SMM_CPU_SERVICE_PROTOCOL       CsDummy;
  EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL  RvDummy;
  EFI_GUID                           MpGuid = EFI_MM_MP_PROTOCOL_GUID;
  EFI_STATUS                         Result;
  UINTN                              N;

  /* compile-time table; never run for real */
  if (mFailures < 0) {
    memset (&CsDummy, 0, sizeof (CsDummy));
    memset (&RvDummy, 0, sizeof (RvDummy));
    CheckPlatformTypes (&Platform);
    CheckProcedureTypes ();
    CheckProtocolTypes (NULL, &CsDummy, &RvDummy);
    CheckExportTypes ();
  }

  EXPECT (MpGuid.Data1 == 0x5d5450d7 && MpGuid.Data4[7] == 0x07);

  /* -- MmMpGetRequiredSize -- */
  FillConfig (&Config, Info, 1);
  FillPlatform (&Platform);
  EXPECT_STATUS (MmMpGetRequiredSize (NULL, &Size), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (MmMpGetRequiredSize (&Config, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (MmMpGetRequiredSize (&Config, &Size), EFI_SUCCESS);
  EXPECT (Size > 0);
  Bad = Config;
  Bad.Revision = 0;
  EXPECT_STATUS (MmMpGetRequiredSize (&Bad, &Size2), EFI_INVALID_PARAMETER);
  FillConfig (&Config, Info, 2);
  EXPECT_STATUS (MmMpGetRequiredSize (&Config, &Size2), EFI_SUCCESS);
  EXPECT (Size2 > Size);
  Size = Size2;

  /* one region (cache-line aligned) big enough for every attempt below */
  RegionSize = (size_t)Size + 64;
  Region = aligned_alloc (64, (RegionSize + 63) & ~(size_t)63);
  if (Region == NULL) {
    fprintf (stderr, "out of memory\n");
    return 2;
  }

  /* -- MmMpInitialize: every rejected argument of BEHAVIOUR.md §11 -- */
  EXPECT_INIT_FAILS (NULL, Size, &Config, &Platform, EFI_INVALID_PARAMETER);
  EXPECT_INIT_FAILS (Region, Size, NULL, &Platform, EFI_INVALID_PARAMETER);
  EXPECT_INIT_FAILS (Region, Size, &Config, NULL, EFI_INVALID_PARAMETER);
  memset (Region, 0xA5, RegionSize);
  EXPECT_STATUS (MmMpInitialize (Region, Size, &Config, &Platform, NULL), EFI_INVALID_PARAMETER);
  EXPECT (Untouched (Region, RegionSize));
  EXPECT_INIT_FAILS (Region + 8, Size, &Config, &Platform, EFI_INVALID_PARAMETER);   /* misaligned */
  EXPECT_INIT_FAILS (Region + 32, Size, &Config, &Platform, EFI_INVALID_PARAMETER);  /* misaligned */
  EXPECT_INIT_FAILS (Region, Size - 1, &Config, &Platform, EFI_BUFFER_TOO_SMALL);
  EXPECT_INIT_FAILS (Region, 0, &Config, &Platform, EFI_BUFFER_TOO_SMALL);

  Bad = Config; Bad.Revision = MM_MP_CONFIG_REVISION + 1;
  EXPECT_INIT_FAILS (Region, Size, &Bad, &Platform, EFI_INVALID_PARAMETER);
  Bad = Config; Bad.NumberOfCpus = 0;
  EXPECT_INIT_FAILS (Region, Size, &Bad, &Platform, EFI_INVALID_PARAMETER);
  Bad = Config; Bad.MaxTokens = 0;
  EXPECT_INIT_FAILS (Region, Size, &Bad, &Platform, EFI_INVALID_PARAMETER);
  Bad = Config; Bad.CacheLineSize = 48;
  EXPECT_INIT_FAILS (Region, Size, &Bad, &Platform, EFI_INVALID_PARAMETER);
  Bad = Config; Bad.SyncMode = 2;
  EXPECT_INIT_FAILS (Region, Size, &Bad, &Platform, EFI_INVALID_PARAMETER);
  Bad = Config; Bad.BspIndex = 2;
  EXPECT_INIT_FAILS (Region, Size, &Bad, &Platform, EFI_INVALID_PARAMETER);
  BadPlatform = Platform; BadPlatform.Revision = 0;
  EXPECT_INIT_FAILS (Region, Size, &Config, &BadPlatform, EFI_INVALID_PARAMETER);
  BadPlatform = Platform; BadPlatform.MmFoundationEntry = NULL;
  EXPECT_INIT_FAILS (Region, Size, &Config, &BadPlatform, EFI_INVALID_PARAMETER);

  /* -- a 2-CPU instance without time source: services outside an SMI -- */
  EXPECT_STATUS (MmMpInitialize (Region, Size, &Config, &Platform, &Instance), EFI_SUCCESS);
  EXPECT (Instance != NULL);
  EXPECT (MmMpGetMmMpProtocol (NULL) == NULL);
  Mp = MmMpGetMmMpProtocol (Instance);
  EXPECT (Mp != NULL);
  if (Mp == NULL) {
    return 1;
  }
  EXPECT (Mp->Revision == EFI_MM_MP_PROTOCOL_REVISION);
  EXPECT ((Mp->Attributes & EFI_MM_MP_TIMEOUT_SUPPORTED) == 0);
  EXPECT_STATUS (Mp->GetNumberOfProcessors (Mp, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (Mp->GetNumberOfProcessors (Mp, &N), EFI_SUCCESS);
  EXPECT (N == 2);
  EXPECT_STATUS (Mp->DispatchProcedure (Mp, Proc2, 1, 0, NULL, NULL, NULL), EFI_NOT_READY);
  EXPECT_STATUS (Mp->BroadcastProcedure (Mp, Proc2, 0, NULL, NULL, NULL), EFI_NOT_READY);
  EXPECT_STATUS (Mp->SetStartupProcedure (Mp, NULL, &N), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (Mp->SetStartupProcedure (Mp, Proc, NULL), EFI_SUCCESS);
  EXPECT_STATUS (Mp->SetStartupProcedure (Mp, NULL, NULL), EFI_SUCCESS);
  EXPECT_STATUS (Mp->CheckForProcedure (Mp, (MM_COMPLETION)(UINTN)0x1234), EFI_NOT_FOUND);
  EXPECT_STATUS (MmMpStartupThisAp (NULL, Proc, 1, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (MmMpStartupThisAp (Instance, Proc, 1, NULL), EFI_NOT_READY);
  EXPECT_STATUS (MmMpBlockingStartupThisAp (NULL, Proc, 1, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (MmMpBlockingStartupThisAp (Instance, Proc, 1, NULL), EFI_NOT_READY);
  EXPECT (MmMpGetCurrentBsp (NULL) == MAX_UINTN);
  EXPECT (MmMpGetCurrentBsp (Instance) == MAX_UINTN);
  EXPECT_STATUS (MmMpGetTokenResult (NULL, (MM_COMPLETION)(UINTN)1, &Result), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (MmMpGetTokenResult (Instance, NULL, &Result), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (MmMpGetTokenResult (Instance, (MM_COMPLETION)(UINTN)1, NULL), EFI_INVALID_PARAMETER);
  EXPECT_STATUS (MmMpGetTokenResult (Instance, (MM_COMPLETION)(UINTN)0x1234, &Result), EFI_NOT_FOUND);
#if MM_MP_HAS_MmMpGetRendezvousProtocol
  EXPECT (MmMpGetRendezvousProtocol (NULL) == NULL);
  EXPECT (MmMpGetRendezvousProtocol (Instance) != NULL);
#endif
#if MM_MP_HAS_MmMpGetCpuServiceProtocol
  EXPECT (MmMpGetCpuServiceProtocol (NULL) == NULL);
  EXPECT (MmMpGetCpuServiceProtocol (Instance) != NULL);
#endif
#if MM_MP_HAS_MmMpGetStatistics
  {
    MM_MP_STATISTICS  Stats;

    EXPECT_STATUS (MmMpGetStatistics (NULL, &Stats), EFI_INVALID_PARAMETER);
    EXPECT_STATUS (MmMpGetStatistics (Instance, NULL), EFI_INVALID_PARAMETER);
    EXPECT_STATUS (MmMpGetStatistics (Instance, &Stats), EFI_SUCCESS);
    EXPECT (Stats.Revision == MM_MP_STATISTICS_REVISION && Stats.Smis == 0);
  }
#endif
#if MM_MP_HAS_MmMpGetHotPlugStatistics
  {
    MM_MP_HOT_PLUG_STATISTICS  HotPlug;

    EXPECT_STATUS (MmMpGetHotPlugStatistics (NULL, &HotPlug), EFI_INVALID_PARAMETER);
    EXPECT_STATUS (MmMpGetHotPlugStatistics (Instance, NULL), EFI_INVALID_PARAMETER);
    EXPECT_STATUS (MmMpGetHotPlugStatistics (Instance, &HotPlug), EFI_SUCCESS);
    EXPECT (HotPlug.CpusAdded == 0 && HotPlug.CpusRemoved == 0);
  }
#endif
  /* must return at once without touching anything */
  MmMpSmiRendezvous (NULL, 0);
  MmMpSmiRendezvous (Instance, 2);
  MmMpSmiRendezvous (Instance, MAX_UINTN);

  /* -- a 1-CPU instance: one real SMI on this thread -- */
  FillConfig (&Config, Info, 1);
  EXPECT_STATUS (MmMpGetRequiredSize (&Config, &Size), EFI_SUCCESS);
  EXPECT_STATUS (MmMpInitialize (Region, Size, &Config, &Platform, &mInstance), EFI_SUCCESS);
  if (mInstance != NULL) {
    MmMpSmiRendezvous (mInstance, 0);
    EXPECT (mFoundationRuns == 1);
    Bsp = MmMpGetCurrentBsp (mInstance);
    EXPECT (Bsp == MAX_UINTN);
    MmMpSmiRendezvous (mInstance, 0);
    EXPECT (mFoundationRuns == 2);
#if MM_MP_HAS_MmMpGetStatistics
    {
      MM_MP_STATISTICS  Stats;

      EXPECT_STATUS (MmMpGetStatistics (mInstance, &Stats), EFI_SUCCESS);
      EXPECT (Stats.Smis == 2);
    }
#endif
  }

  free (Region);
  if (mFailures != 0) {
    fprintf (stderr, "efiapi_check: %d of %d checks FAILED\n", mFailures, mChecks);
    return 1;
  }
  printf ("efiapi_check: %d checks passed\n", mChecks);
  return 0;
}
