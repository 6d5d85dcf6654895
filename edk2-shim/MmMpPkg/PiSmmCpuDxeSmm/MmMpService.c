/** @file
  PiSmmCpuDxeSmm's multi-processor services on mm-mp.

  This one file takes the place of MpService.c, SmmMp.c and CpuService.c in
  UefiCpuPkg/PiSmmCpuDxeSmm (tools/mmmp-edk2.py swap edits the INF). It
  defines every function and global the rest of the driver uses from those
  three files and implements them on the mm-mp library:

  * SmiRendezvous (called by SmiEntry.nasm on every CPU at every SMI): the
    first-SMI initialisation and CR2 handling stay here, the rendezvous is
    MmMpSmiRendezvous;
  * EFI_MM_MP_PROTOCOL (mSmmMp), EFI_SMM_CPU_SERVICE_PROTOCOL
    (mSmmCpuService), EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL, gMmst's
    MmStartupThisAp and the driver-internal broadcast: thin forwarders to
    the protocols that live inside the mm-mp instance;
  * the start-up path (InitializeMpServiceData, InitializeMpSyncData, also
    the S3 resume path), which reads the usual PCDs into MM_MP_CONFIG and
    fills MM_MP_PLATFORM with SmmCpuFeaturesLib, SmmCpuPlatformHookLib,
    LocalApicLib, MtrrLib, TimerLib and CpuExceptionHandlerLib.

  The mapping is documented in docs/INTEGRATION.md of the mm-mp repository.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#include "PiSmmCpuCommon.h"
#include <Library/MmMpLib.h>
#include <Protocol/MmMpInstance.h>

//
// Globals the rest of PiSmmCpuDxeSmm reads (PiSmmCpuCommon.h).
//
UINT64                       gPhyMask;
SMM_DISPATCHER_MP_SYNC_DATA  *mSmmMpSyncData = NULL;
SMM_CPU_SEMAPHORES           mSmmCpuSemaphores;
UINTN                        mSemaphoreSize;
SPIN_LOCK                    *mPFLock                  = NULL;
UINT32                       *mPackageFirstThreadIndex = NULL;

//
// The mm-mp instance and what it was built from.
//
STATIC MM_MP_INSTANCE             *mMmMpInstance;
STATIC VOID                       *mMmMpRegion;
STATIC UINTN                      mMmMpRegionPages;
STATIC MM_MP_CONFIG               mMmMpConfig;
STATIC MM_MP_PLATFORM             mMmMpPlatform;
STATIC UINTN                      mSmmMpSyncDataSize;
STATIC BOOLEAN                    mMachineCheckSupported;
STATIC UINT32                     mPackageCount;
STATIC MTRR_SETTINGS              gSmiMtrrs;
STATIC MTRR_SETTINGS              *mSavedMtrrs;
STATIC volatile BOOLEAN           mProcessorTableChanged;
STATIC MM_MP_INSTANCE_PROTOCOL    mMmMpInstanceProtocol;
STATIC EFI_HANDLE                 mMmMpInstanceHandle;
STATIC CONST EFI_GUID             mMmMpInstanceProtocolGuid = MM_MP_INSTANCE_PROTOCOL_GUID;

//
// Performance counter extended to a monotonic 64-bit tick count.
//
STATIC UINT64           mCounterStart;
STATIC UINT64           mCounterEnd;
STATIC BOOLEAN          mCounterUp;
STATIC volatile UINT64  mTicks;

//
// Machine-check MSR bits (Intel SDM vol. 4): IA32_MCG_CAP.MCG_LMCE_P,
// IA32_FEATURE_CONTROL.LMCE_ON, IA32_MCG_EXT_CTL.LMCE_EN,
// IA32_MCG_STATUS.LMCE_S.
//
#define MMMP_MSR_MCG_CAP            0x179
#define MMMP_MSR_MCG_STATUS         0x17A
#define MMMP_MSR_FEATURE_CONTROL    0x03A
#define MMMP_MSR_MCG_EXT_CTL        0x4D0
#define MMMP_MCG_CAP_LMCE_P         BIT27
#define MMMP_FEATURE_CONTROL_LMCE   BIT20
#define MMMP_MCG_EXT_CTL_LMCE_EN    BIT0
#define MMMP_MCG_STATUS_LMCE_S      BIT3

/* ---------------------------------------------------------------------------
   EFI_MM_MP_PROTOCOL, EFI_SMM_CPU_SERVICE_PROTOCOL and the rendezvous
   protocol as installed by PiSmmCpuCommon.c: forwarders to the instance's
   own protocols (whose members find the instance from their This).
   ------------------------------------------------------------------------- */

STATIC
EFI_MM_MP_PROTOCOL *
LibMp (
  VOID
  )
{
  return MmMpGetMmMpProtocol (mMmMpInstance);
}

STATIC
EFI_SMM_CPU_SERVICE_PROTOCOL *
LibCpu (
  VOID
  )
{
  return MmMpGetCpuServiceProtocol (mMmMpInstance);
}

STATIC
EFI_STATUS
EFIAPI
SwapGetNumberOfProcessors (
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  OUT      UINTN               *NumberOfProcessors
  )
{
  EFI_MM_MP_PROTOCOL  *Mp;

  Mp = LibMp ();
  return (Mp == NULL) ? EFI_NOT_READY : Mp->GetNumberOfProcessors (Mp, NumberOfProcessors);
}

STATIC
EFI_STATUS
EFIAPI
SwapDispatchProcedure (
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN       EFI_AP_PROCEDURE2   Procedure,
  IN       UINTN               CpuNumber,
  IN       UINTN               TimeoutInMicroseconds,
  IN OUT   VOID                *ProcedureArguments OPTIONAL,
  IN OUT   MM_COMPLETION       *Token OPTIONAL,
  IN OUT   EFI_STATUS          *CPUStatus OPTIONAL
  )
{
  EFI_MM_MP_PROTOCOL  *Mp;

  Mp = LibMp ();
  if (Mp == NULL) {
    return EFI_NOT_READY;
  }

  return Mp->DispatchProcedure (Mp, Procedure, CpuNumber, TimeoutInMicroseconds, ProcedureArguments, Token, CPUStatus);
}

STATIC
EFI_STATUS
EFIAPI
SwapBroadcastProcedure (
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN       EFI_AP_PROCEDURE2   Procedure,
  IN       UINTN               TimeoutInMicroseconds,
  IN OUT   VOID                *ProcedureArguments OPTIONAL,
  IN OUT   MM_COMPLETION       *Token OPTIONAL,
  IN OUT   EFI_STATUS          *CPUStatus OPTIONAL
  )
{
  EFI_MM_MP_PROTOCOL  *Mp;

  Mp = LibMp ();
  if (Mp == NULL) {
    return EFI_NOT_READY;
  }

  return Mp->BroadcastProcedure (Mp, Procedure, TimeoutInMicroseconds, ProcedureArguments, Token, CPUStatus);
}

STATIC
EFI_STATUS
EFIAPI
SwapSetStartupProcedure (
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN       EFI_AP_PROCEDURE    Procedure,
  IN OUT   VOID                *ProcedureArguments OPTIONAL
  )
{
  EFI_MM_MP_PROTOCOL  *Mp;

  Mp = LibMp ();
  return (Mp == NULL) ? EFI_NOT_READY : Mp->SetStartupProcedure (Mp, Procedure, ProcedureArguments);
}

STATIC
EFI_STATUS
EFIAPI
SwapCheckForProcedure (
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN       MM_COMPLETION       Token
  )
{
  EFI_MM_MP_PROTOCOL  *Mp;

  Mp = LibMp ();
  return (Mp == NULL) ? EFI_NOT_READY : Mp->CheckForProcedure (Mp, Token);
}

STATIC
EFI_STATUS
EFIAPI
SwapWaitForProcedure (
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN       MM_COMPLETION       Token
  )
{
  EFI_MM_MP_PROTOCOL  *Mp;

  Mp = LibMp ();
  return (Mp == NULL) ? EFI_NOT_READY : Mp->WaitForProcedure (Mp, Token);
}

EFI_MM_MP_PROTOCOL  mSmmMp = {
  EFI_MM_MP_PROTOCOL_REVISION,
  0,
  SwapGetNumberOfProcessors,
  SwapDispatchProcedure,
  SwapBroadcastProcedure,
  SwapSetStartupProcedure,
  SwapCheckForProcedure,
  SwapWaitForProcedure
};

STATIC
EFI_STATUS
EFIAPI
SwapGetProcessorInfo (
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN       UINTN                         ProcessorNumber,
  OUT      EFI_PROCESSOR_INFORMATION     *ProcessorInfoBuffer
  )
{
  EFI_SMM_CPU_SERVICE_PROTOCOL  *Cpu;

  Cpu = LibCpu ();
  return (Cpu == NULL) ? EFI_NOT_READY : Cpu->GetProcessorInfo (Cpu, ProcessorNumber, ProcessorInfoBuffer);
}

STATIC
EFI_STATUS
EFIAPI
SwapSwitchBsp (
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN       UINTN                         ProcessorNumber
  )
{
  EFI_SMM_CPU_SERVICE_PROTOCOL  *Cpu;

  Cpu = LibCpu ();
  return (Cpu == NULL) ? EFI_NOT_READY : Cpu->SwitchBsp (Cpu, ProcessorNumber);
}

STATIC
EFI_STATUS
EFIAPI
SwapAddProcessor (
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN       UINT64                        ProcessorId,
  OUT      UINTN                         *ProcessorNumber
  )
{
  EFI_SMM_CPU_SERVICE_PROTOCOL  *Cpu;
  EFI_STATUS                    Status;

  Cpu = LibCpu ();
  if (Cpu == NULL) {
    return EFI_NOT_READY;
  }

  Status = Cpu->AddProcessor (Cpu, ProcessorId, ProcessorNumber);
  if (!EFI_ERROR (Status)) {
    mProcessorTableChanged = TRUE;
  }

  return Status;
}

STATIC
EFI_STATUS
EFIAPI
SwapRemoveProcessor (
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN       UINTN                         ProcessorNumber
  )
{
  EFI_SMM_CPU_SERVICE_PROTOCOL  *Cpu;
  EFI_STATUS                    Status;

  Cpu = LibCpu ();
  if (Cpu == NULL) {
    return EFI_NOT_READY;
  }

  Status = Cpu->RemoveProcessor (Cpu, ProcessorNumber);
  if (!EFI_ERROR (Status)) {
    mProcessorTableChanged = TRUE;
  }

  return Status;
}

STATIC
EFI_STATUS
EFIAPI
SwapWhoAmI (
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  OUT      UINTN                         *ProcessorNumber
  )
{
  EFI_SMM_CPU_SERVICE_PROTOCOL  *Cpu;

  Cpu = LibCpu ();
  return (Cpu == NULL) ? EFI_NOT_READY : Cpu->WhoAmI (Cpu, ProcessorNumber);
}

/**
  EFI_SMM_CPU_SERVICE_PROTOCOL.RegisterExceptionHandler: the SMM IDT is
  CpuExceptionHandlerLib's. Also called directly by SmmProfile.c and
  PageTbl.c with This = &mSmmCpuService.
**/
EFI_STATUS
EFIAPI
SmmRegisterExceptionHandler (
  IN EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN EFI_EXCEPTION_TYPE            ExceptionType,
  IN EFI_CPU_INTERRUPT_HANDLER     InterruptHandler
  )
{
  return RegisterCpuInterruptHandler (ExceptionType, InterruptHandler);
}

EFI_SMM_CPU_SERVICE_PROTOCOL  mSmmCpuService = {
  SwapGetProcessorInfo,
  SwapSwitchBsp,
  SwapAddProcessor,
  SwapRemoveProcessor,
  SwapWhoAmI,
  SmmRegisterExceptionHandler
};

/**
  EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL.WaitForAllProcessor (docs/BEHAVIOUR.md §6.7); also
  called by PiSmmCpuDxeSmm.c at ready-to-lock.
**/
EFI_STATUS
EFIAPI
SmmCpuRendezvous (
  IN EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL  *This,
  IN BOOLEAN                            BlockingMode
  )
{
  EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL  *Rendezvous;

  Rendezvous = MmMpGetRendezvousProtocol (mMmMpInstance);
  if (Rendezvous == NULL) {
    return EFI_NOT_READY;
  }

  return Rendezvous->WaitForAllProcessor (Rendezvous, BlockingMode);
}

STATIC EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL  mSmmCpuRendezvousService = {
  SmmCpuRendezvous
};

/**
  Install EFI_SMM_CPU_SERVICE_PROTOCOL and EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL
  (PiSmmCpuCommon.c calls this after installing EFI_MM_MP_PROTOCOL).
**/
EFI_STATUS
InitializeSmmCpuServices (
  IN EFI_HANDLE  Handle
  )
{
  EFI_STATUS  Status;

  Status = gMmst->MmInstallProtocolInterface (
                    &Handle,
                    &gEfiSmmCpuServiceProtocolGuid,
                    EFI_NATIVE_INTERFACE,
                    &mSmmCpuService
                    );
  ASSERT_EFI_ERROR (Status);
  if (EFI_ERROR (Status)) {
    return Status;
  }

  Status = gMmst->MmInstallProtocolInterface (
                    &Handle,
                    &gEdkiiSmmCpuRendezvousProtocolGuid,
                    EFI_NATIVE_INTERFACE,
                    &mSmmCpuRendezvousService
                    );
  ASSERT_EFI_ERROR (Status);
  return Status;
}

/* ---------------------------------------------------------------------------
   gMmst->MmStartupThisAp and the driver-internal dispatch helpers.
   ------------------------------------------------------------------------- */

EFI_STATUS
EFIAPI
SmmStartupThisAp (
  IN      EFI_AP_PROCEDURE  Procedure,
  IN      UINTN             CpuIndex,
  IN OUT  VOID              *ProcArguments OPTIONAL
  )
{
  return MmMpStartupThisAp (mMmMpInstance, Procedure, CpuIndex, ProcArguments);
}

EFI_STATUS
EFIAPI
SmmBlockingStartupThisAp (
  IN      EFI_AP_PROCEDURE  Procedure,
  IN      UINTN             CpuIndex,
  IN OUT  VOID              *ProcArguments OPTIONAL
  )
{
  return MmMpBlockingStartupThisAp (mMmMpInstance, Procedure, CpuIndex, ProcArguments);
}

/**
  Run Procedure on every present AP (SmmCpuMemoryManagement.c flushes TLBs
  with it). Same contract as EFI_MM_MP_PROTOCOL.BroadcastProcedure.
**/
EFI_STATUS
InternalSmmStartupAllAPs (
  IN       EFI_AP_PROCEDURE2  Procedure,
  IN       UINTN              TimeoutInMicroseconds,
  IN OUT   VOID               *ProcedureArguments OPTIONAL,
  IN OUT   MM_COMPLETION      *Token,
  IN OUT   EFI_STATUS         *CPUStatus
  )
{
  return SwapBroadcastProcedure (&mSmmMp, Procedure, TimeoutInMicroseconds, ProcedureArguments, Token, CPUStatus);
}

/* ---------------------------------------------------------------------------
   MM_MP_PLATFORM callbacks on the usual EDK2 libraries.
   ------------------------------------------------------------------------- */

/**
  TimerLib's performance counter may be narrow and wrap (the ACPI PM timer
  has 24 or 32 bits); mm-mp wants a monotonic 64-bit count. Every call adds
  the distance travelled since the last observed raw value. Waits call this
  continuously, so the counter never wraps twice between two calls while
  a timeout is being measured.
**/
STATIC
UINT64
EFIAPI
PlatformGetTicks (
  IN VOID  *Context
  )
{
  UINT64  Old;
  UINT64  Raw;
  UINT64  Range;
  UINT64  LastRaw;
  UINT64  Delta;

  Range = (mCounterUp ? (mCounterEnd - mCounterStart) : (mCounterStart - mCounterEnd)) + 1;
  do {
    Old     = mTicks;
    Raw     = GetPerformanceCounter ();
    LastRaw = Old % Range;
    //
    // Position of Raw inside [0, Range), counting up.
    //
    Raw   = mCounterUp ? (Raw - mCounterStart) : (mCounterStart - Raw);
    Raw   = Raw % Range;
    Delta = (Raw >= LastRaw) ? (Raw - LastRaw) : (Range - LastRaw + Raw);
  } while (InterlockedCompareExchange64 ((UINT64 *)&mTicks, Old, Old + Delta) != Old);

  return Old + Delta;
}

STATIC
UINT64
EFIAPI
PlatformGetApicId (
  IN VOID  *Context
  )
{
  return GetApicId ();
}

STATIC
VOID
EFIAPI
PlatformSendSmiIpi (
  IN VOID    *Context,
  IN UINT64  ApicId
  )
{
  SendSmiIpi ((UINT32)ApicId);
}

STATIC
BOOLEAN
EFIAPI
PlatformIsValidSmi (
  IN VOID  *Context
  )
{
  return PlatformValidSmi ();
}

STATIC
BOOLEAN
EFIAPI
PlatformClearTopLevelSmiStatus (
  IN VOID  *Context
  )
{
  return ClearTopLevelSmiStatus ();
}

STATIC
EFI_STATUS
EFIAPI
PlatformBspElection (
  IN  VOID     *Context,
  OUT BOOLEAN  *IsBsp
  )
{
  return PlatformSmmBspElection (IsBsp);
}

STATIC
VOID
EFIAPI
PlatformRendezvousEntry (
  IN VOID   *Context,
  IN UINTN  CpuIndex
  )
{
  SmmCpuFeaturesRendezvousEntry (CpuIndex);
}

/**
  Copy the library's processor table back into gSmmCpuPrivate->ProcessorInfo
  (read by the save-state code and SMM profile) and recount mNumberOfCpus,
  after an SMI that added or removed CPUs.
**/
STATIC
VOID
MirrorProcessorTable (
  VOID
  )
{
  EFI_SMM_CPU_SERVICE_PROTOCOL  *Cpu;
  EFI_PROCESSOR_INFORMATION     Info;
  MM_MP_HOT_PLUG_STATISTICS     Stats;
  UINTN                         Index;
  UINTN                         Count;

  Cpu = LibCpu ();
  if (Cpu == NULL) {
    return;
  }

  Count = 0;
  for (Index = 0; Index < mMaxNumberOfCpus; Index++) {
    if (!EFI_ERROR (Cpu->GetProcessorInfo (Cpu, Index, &Info))) {
      CopyMem (&gSmmCpuPrivate->ProcessorInfo[Index], &Info, sizeof (Info));
      Count++;
    } else {
      gSmmCpuPrivate->ProcessorInfo[Index].ProcessorId = INVALID_APIC_ID;
    }
  }

  mNumberOfCpus = Count;
  if (!EFI_ERROR (MmMpGetHotPlugStatistics (mMmMpInstance, &Stats))) {
    DEBUG ((
      DEBUG_INFO,
      "mm-mp: processor table: %u CPUs present (%lu added, %lu removed since start)\n",
      (UINT32)Count,
      Stats.CpusAdded,
      Stats.CpusRemoved
      ));
  }
}

STATIC
VOID
EFIAPI
PlatformRendezvousExit (
  IN VOID   *Context,
  IN UINTN  CpuIndex
  )
{
  //
  // Pending hot-plug operations were applied before the final barrier;
  // the CPU that was BSP mirrors them.
  //
  if (mProcessorTableChanged &&
      (CpuIndex == gSmmCpuPrivate->SmmCoreEntryContext.CurrentlyExecutingCpu))
  {
    mProcessorTableChanged = FALSE;
    MirrorProcessorTable ();
  }

  SmmCpuFeaturesRendezvousExit (CpuIndex);
}

STATIC
VOID
EFIAPI
PlatformBeforeMmiHandler (
  IN VOID   *Context,
  IN UINTN  CpuIndex
  )
{
  SmmCpuPlatformHookBeforeMmiHandler ();
}

/**
  Local machine check (LMCE) enabled by the OS: IA32_MCG_CAP.MCG_LMCE_P,
  IA32_FEATURE_CONTROL.LMCE_ON and IA32_MCG_EXT_CTL.LMCE_EN all set.
**/
STATIC
BOOLEAN
LmceOsEnabled (
  VOID
  )
{
  if ((AsmReadMsr64 (MMMP_MSR_MCG_CAP) & MMMP_MCG_CAP_LMCE_P) == 0) {
    return FALSE;
  }

  if ((AsmReadMsr64 (MMMP_MSR_FEATURE_CONTROL) & MMMP_FEATURE_CONTROL_LMCE) == 0) {
    return FALSE;
  }

  return (BOOLEAN)((AsmReadMsr64 (MMMP_MSR_MCG_EXT_CTL) & MMMP_MCG_EXT_CTL_LMCE_EN) != 0);
}

/**
  "Sync needed": the BSP waits for all APs unless a local machine check
  was signalled to this CPU only (then the other CPUs may never come).
**/
STATIC
BOOLEAN
EFIAPI
PlatformIsSyncAlwaysNeeded (
  IN VOID  *Context
  )
{
  if (IsCpuSyncAlwaysNeeded ()) {
    return TRUE;
  }

  if (!mMachineCheckSupported || !LmceOsEnabled ()) {
    return TRUE;
  }

  return (BOOLEAN)((AsmReadMsr64 (MMMP_MSR_MCG_STATUS) & MMMP_MCG_STATUS_LMCE_S) == 0);
}

/**
  TRUE for the lowest-numbered present CPU of its package: package-scope
  SMM registers are read through one thread per package.
**/
STATIC
BOOLEAN
IsFirstThreadOfPackage (
  IN UINTN  CpuIndex
  )
{
  UINT32  Package;

  Package = gSmmCpuPrivate->ProcessorInfo[CpuIndex].Location.Package;
  if ((mPackageFirstThreadIndex == NULL) || (Package >= mPackageCount)) {
    return FALSE;
  }

  if (mPackageFirstThreadIndex[Package] == MAX_UINT32) {
    mPackageFirstThreadIndex[Package] = (UINT32)CpuIndex;
  }

  return (BOOLEAN)(mPackageFirstThreadIndex[Package] == CpuIndex);
}

STATIC
VOID
EFIAPI
PlatformGetDelayedBlockedDisabled (
  IN  VOID    *Context,
  OUT UINT32  *Delayed,
  OUT UINT32  *Blocked,
  OUT UINT32  *Disabled
  )
{
  UINTN  Index;

  for (Index = 0; Index < mMaxNumberOfCpus; Index++) {
    if (gSmmCpuPrivate->ProcessorInfo[Index].ProcessorId == INVALID_APIC_ID) {
      continue;
    }

    if (!IsFirstThreadOfPackage (Index)) {
      continue;
    }

    if (Delayed != NULL) {
      *Delayed += (UINT32)SmmCpuFeaturesGetSmmRegister (Index, SmmRegSmmDelayed);
    }

    if (Blocked != NULL) {
      *Blocked += (UINT32)SmmCpuFeaturesGetSmmRegister (Index, SmmRegSmmBlocked);
    }

    if (Disabled != NULL) {
      *Disabled += (UINT32)SmmCpuFeaturesGetSmmRegister (Index, SmmRegSmmEnable);
    }
  }
}

STATIC
VOID
EFIAPI
PlatformMtrrSave (
  IN VOID   *Context,
  IN UINTN  CpuIndex
  )
{
  MtrrGetAllMtrrs (&mSavedMtrrs[CpuIndex]);
}

STATIC
VOID
EFIAPI
PlatformMtrrReplace (
  IN VOID   *Context,
  IN UINTN  CpuIndex
  )
{
  SmmCpuFeaturesDisableSmrr ();
  MtrrSetAllMtrrs (&gSmiMtrrs);
}

STATIC
VOID
EFIAPI
PlatformMtrrRestore (
  IN VOID   *Context,
  IN UINTN  CpuIndex
  )
{
  SmmCpuFeaturesReenableSmrr ();
  MtrrSetAllMtrrs (&mSavedMtrrs[CpuIndex]);
}

/**
  The BSP's part of the SMI: the MM core entry with the usual pre and
  post tasks of PiSmmCpuDxeSmm.
**/
STATIC
VOID
EFIAPI
PlatformMmFoundationEntry (
  IN VOID   *Context,
  IN UINTN  BspIndex
  )
{
  gSmmCpuPrivate->SmmCoreEntryContext.CurrentlyExecutingCpu = BspIndex;
  if (mSmmProfileEnabled) {
    SmmProfileRecordSmiNum ();
  }

  PerformPreTasks ();
  if (gSmmCpuPrivate->SmmCoreEntry != NULL) {
    gSmmCpuPrivate->SmmCoreEntry (&gSmmCpuPrivate->SmmCoreEntryContext);
  }

  PerformRemainingTasks ();
}

STATIC
EFI_STATUS
EFIAPI
PlatformGetProcessorLocation (
  IN  VOID                        *Context,
  IN  UINT64                      ApicId,
  OUT EFI_CPU_PHYSICAL_LOCATION   *Location,
  OUT EFI_CPU_PHYSICAL_LOCATION2  *Location2
  )
{
  GetProcessorLocationByApicId ((UINT32)ApicId, &Location->Package, &Location->Core, &Location->Thread);
  GetProcessorLocation2ByApicId (
    (UINT32)ApicId,
    &Location2->Package,
    &Location2->Die,
    &Location2->Tile,
    &Location2->Module,
    &Location2->Core,
    &Location2->Thread
    );
  return EFI_SUCCESS;
}

STATIC
EFI_STATUS
EFIAPI
PlatformRegisterExceptionHandler (
  IN VOID                       *Context,
  IN EFI_EXCEPTION_TYPE         ExceptionType,
  IN EFI_CPU_INTERRUPT_HANDLER  Handler
  )
{
  return RegisterCpuInterruptHandler (ExceptionType, Handler);
}

/* ---------------------------------------------------------------------------
   Start-up and S3.
   ------------------------------------------------------------------------- */

/**
  Fill MM_MP_CONFIG from the PCDs and the processor table, and
  MM_MP_PLATFORM from the libraries above.
**/
STATIC
VOID
BuildConfig (
  VOID
  )
{
  BOOLEAN  RelaxedMode;
  UINT64   Timeout;
  UINT64   Timeout2;
  UINTN    Index;
  UINTN    Line;
  UINT64   Frequency;
  UINT32   Tokens;

  RelaxedMode = FALSE;
  Timeout     = 0;
  Timeout2    = 0;
  GetSmmCpuSyncConfigData (&RelaxedMode, &Timeout, &Timeout2);

  Line = 64;
  while ((Line < GetSpinLockProperties ()) && (Line < SIZE_4KB)) {
    Line <<= 1;
  }

  Tokens = FixedPcdGet32 (PcdCpuSmmMpTokenCountPerChunk);
  if (Tokens < 2 * (UINT32)mMaxNumberOfCpus) {
    Tokens = 2 * (UINT32)mMaxNumberOfCpus;
  }

  ZeroMem (&mMmMpConfig, sizeof (mMmMpConfig));
  mMmMpConfig.Revision              = MM_MP_CONFIG_REVISION;
  mMmMpConfig.NumberOfCpus          = (UINT32)gSmmCpuPrivate->SmmCoreEntryContext.NumberOfCpus;
  mMmMpConfig.MaxTokens             = Tokens;
  mMmMpConfig.CacheLineSize         = (UINT32)Line;
  mMmMpConfig.SyncMode              = RelaxedMode ? MM_MP_SYNC_MODE_RELAXED : MM_MP_SYNC_MODE_TRADITIONAL;
  mMmMpConfig.BspElection           = FeaturePcdGet (PcdCpuSmmEnableBspElection);
  mMmMpConfig.HotPlugSupport        = FeaturePcdGet (PcdCpuHotPlugSupport);
  mMmMpConfig.BlockingStartupThisAp = FeaturePcdGet (PcdCpuSmmBlockStartupThisAp);
  mMmMpConfig.ConfigureMtrrs        = SmmCpuFeaturesNeedConfigureMtrrs ();
  mMmMpConfig.ApSyncTimeoutUs       = Timeout;
  mMmMpConfig.ApSyncTimeout2Us      = Timeout2;
  mMmMpConfig.ProcessorInfo         = gSmmCpuPrivate->ProcessorInfo;
  mMmMpConfig.HotPlugApicId         = mMmMpConfig.HotPlugSupport ? mCpuHotPlugData.ApicId : NULL;
  mMmMpConfig.BspIndex              = 0;
  if (!mMmMpConfig.BspElection) {
    //
    // The BSP is fixed: the CPU running this (the boot processor).
    //
    for (Index = 0; Index < mMmMpConfig.NumberOfCpus; Index++) {
      if (gSmmCpuPrivate->ProcessorInfo[Index].ProcessorId == GetApicId ()) {
        mMmMpConfig.BspIndex = (UINT32)Index;
        break;
      }
    }
  }

  Frequency = GetPerformanceCounterProperties (&mCounterStart, &mCounterEnd);
  mCounterUp = (BOOLEAN)(mCounterEnd >= mCounterStart);

  ZeroMem (&mMmMpPlatform, sizeof (mMmMpPlatform));
  mMmMpPlatform.Revision                          = MM_MP_PLATFORM_REVISION;
  mMmMpPlatform.TicksPerSecond                    = Frequency;
  mMmMpPlatform.GetTicks                          = (Frequency != 0) ? PlatformGetTicks : NULL;
  mMmMpPlatform.GetApicId                         = PlatformGetApicId;
  mMmMpPlatform.SendSmiIpi                        = PlatformSendSmiIpi;
  mMmMpPlatform.IsValidSmi                        = PlatformIsValidSmi;
  mMmMpPlatform.ClearTopLevelSmiStatus            = PlatformClearTopLevelSmiStatus;
  mMmMpPlatform.BspElection                       = PlatformBspElection;
  mMmMpPlatform.RendezvousEntry                   = PlatformRendezvousEntry;
  mMmMpPlatform.RendezvousExit                    = PlatformRendezvousExit;
  mMmMpPlatform.BeforeMmiHandler                  = PlatformBeforeMmiHandler;
  mMmMpPlatform.IsSyncAlwaysNeeded                = PlatformIsSyncAlwaysNeeded;
  mMmMpPlatform.GetSmmDelayedBlockedDisabledCount = PlatformGetDelayedBlockedDisabled;
  if (mMmMpConfig.ConfigureMtrrs) {
    mMmMpPlatform.MtrrSave    = PlatformMtrrSave;
    mMmMpPlatform.MtrrReplace = PlatformMtrrReplace;
    mMmMpPlatform.MtrrRestore = PlatformMtrrRestore;
  }

  mMmMpPlatform.MmFoundationEntry        = PlatformMmFoundationEntry;
  mMmMpPlatform.GetProcessorLocation     = PlatformGetProcessorLocation;
  mMmMpPlatform.RegisterExceptionHandler = PlatformRegisterExceptionHandler;
  mMmMpPlatform.Fatal                    = MmMpLibFatal;
  mMmMpPlatform.Log                      = MmMpLibLog;
}

/**
  (Re)build the mm-mp instance and the EDK2-visible sync data. Called at
  start-up by InitializeMpServiceData and on S3 resume by InitializeSmm.
**/
VOID
EFIAPI
InitializeMpSyncData (
  VOID
  )
{
  EFI_STATUS  Status;
  UINTN       Size;
  UINTN       Index;
  UINTN       Cpus;

  if (mSmmMpSyncData == NULL) {
    return;
  }

  Cpus = gSmmCpuPrivate->SmmCoreEntryContext.NumberOfCpus;
  ZeroMem (mSmmMpSyncData, mSmmMpSyncDataSize);
  mSmmMpSyncData->CpuData       = (SMM_CPU_DATA_BLOCK *)(mSmmMpSyncData + 1);
  mSmmMpSyncData->CandidateBsp  = (BOOLEAN *)(mSmmMpSyncData->CpuData + Cpus);
  mSmmMpSyncData->InsideSmm     = mSmmCpuSemaphores.SemaphoreGlobal.InsideSmm;
  mSmmMpSyncData->AllCpusInSync = mSmmCpuSemaphores.SemaphoreGlobal.AllCpusInSync;
  for (Index = 0; Index < Cpus; Index++) {
    mSmmMpSyncData->CpuData[Index].Busy    = (SPIN_LOCK *)((UINTN)mSmmCpuSemaphores.SemaphoreCpu.Busy + mSemaphoreSize * Index);
    mSmmMpSyncData->CpuData[Index].Present = (BOOLEAN *)((UINTN)mSmmCpuSemaphores.SemaphoreCpu.Present + mSemaphoreSize * Index);
    *(mSmmMpSyncData->CpuData[Index].Present) = FALSE;
  }

  BuildConfig ();
  mSmmMpSyncData->BspIndex          = mMmMpConfig.BspElection ? MAX_UINT32 : mMmMpConfig.BspIndex;
  mSmmMpSyncData->EffectiveSyncMode = (mMmMpConfig.SyncMode == MM_MP_SYNC_MODE_RELAXED) ?
                                      MmCpuSyncModeRelaxedAp : MmCpuSyncModeTradition;

  Status = MmMpGetRequiredSize (&mMmMpConfig, &Size);
  if (EFI_ERROR (Status)) {
    DEBUG ((DEBUG_ERROR, "mm-mp: MmMpGetRequiredSize: %r\n", Status));
    CpuDeadLoop ();
    return;
  }

  if (mMmMpRegion == NULL) {
    mMmMpRegionPages = EFI_SIZE_TO_PAGES (Size);
    mMmMpRegion      = AllocatePages (mMmMpRegionPages);
    if (mMmMpRegion == NULL) {
      DEBUG ((DEBUG_ERROR, "mm-mp: no SMRAM for %u bytes\n", Size));
      CpuDeadLoop ();
      return;
    }
  }

  Status = MmMpInitialize (mMmMpRegion, EFI_PAGES_TO_SIZE (mMmMpRegionPages), &mMmMpConfig, &mMmMpPlatform, &mMmMpInstance);
  if (EFI_ERROR (Status)) {
    DEBUG ((DEBUG_ERROR, "mm-mp: MmMpInitialize: %r\n", Status));
    CpuDeadLoop ();
    return;
  }

  mSmmMp.Revision   = LibMp ()->Revision;
  mSmmMp.Attributes = LibMp ()->Attributes;
  DEBUG ((
    DEBUG_INFO,
    "mm-mp: %u CPUs, %a mode, election %a, %u tokens, %u bytes of SMRAM, timeouts %lu/%lu us%a\n",
    mMmMpConfig.NumberOfCpus,
    (mMmMpConfig.SyncMode == MM_MP_SYNC_MODE_RELAXED) ? "relaxed" : "traditional",
    mMmMpConfig.BspElection ? "on" : "off",
    mMmMpConfig.MaxTokens,
    Size,
    mMmMpConfig.ApSyncTimeoutUs,
    mMmMpConfig.ApSyncTimeout2Us,
    (mMmMpPlatform.GetTicks != NULL) ? "" : " (no time source)"
    ));
}

/**
  Locks and flags the rest of the driver shares with this file, each on its
  own spin-lock-sized line: PFLock (PageTbl.c), the code-access-check lock,
  and the per-CPU Present flags read by the save-state code.
**/
STATIC
VOID
InitializeSmmCpuSemaphores (
  VOID
  )
{
  UINTN  Cpus;
  UINTN  Line;
  UINTN  Total;
  UINT8  *Block;

  Line  = GetSpinLockProperties ();
  Cpus  = gSmmCpuPrivate->SmmCoreEntryContext.NumberOfCpus;
  Total = Line * (4 + 2 * Cpus);
  Block = AllocatePages (EFI_SIZE_TO_PAGES (Total));
  ASSERT (Block != NULL);
  if (Block == NULL) {
    CpuDeadLoop ();
    return;
  }

  ZeroMem (Block, Total);
  mSmmCpuSemaphores.SemaphoreGlobal.InsideSmm           = (BOOLEAN *)Block;
  mSmmCpuSemaphores.SemaphoreGlobal.AllCpusInSync       = (BOOLEAN *)(Block + Line);
  mSmmCpuSemaphores.SemaphoreGlobal.PFLock              = (SPIN_LOCK *)(Block + 2 * Line);
  mSmmCpuSemaphores.SemaphoreGlobal.CodeAccessCheckLock = (SPIN_LOCK *)(Block + 3 * Line);
  mSmmCpuSemaphores.SemaphoreCpu.Busy                   = (SPIN_LOCK *)(Block + 4 * Line);
  mSmmCpuSemaphores.SemaphoreCpu.Present                = (BOOLEAN *)(Block + (4 + Cpus) * Line);

  mPFLock                       = mSmmCpuSemaphores.SemaphoreGlobal.PFLock;
  mConfigSmmCodeAccessCheckLock = mSmmCpuSemaphores.SemaphoreGlobal.CodeAccessCheckLock;
  InitializeSpinLock (mPFLock);
  InitializeSpinLock (mConfigSmmCodeAccessCheckLock);
  mSemaphoreSize = Line;
}

/**
  Install MM_MP_INSTANCE_PROTOCOL so that the self-test (and anyone) can
  tell mm-mp serves the MM MP protocol and read its statistics.
**/
STATIC
VOID
InstallInstanceProtocol (
  VOID
  )
{
  EFI_STATUS  Status;

  if (mMmMpInstanceHandle != NULL) {
    return;
  }

  mMmMpInstanceProtocol.Revision      = MM_MP_INSTANCE_PROTOCOL_REVISION;
  mMmMpInstanceProtocol.Instance      = mMmMpInstance;
  mMmMpInstanceProtocol.GetStatistics        = MmMpGetStatistics;
  mMmMpInstanceProtocol.GetHotPlugStatistics = MmMpGetHotPlugStatistics;
  Status                                     = gMmst->MmInstallProtocolInterface (
                                                        &mMmMpInstanceHandle,
                                                        (EFI_GUID *)&mMmMpInstanceProtocolGuid,
                                                        EFI_NATIVE_INTERFACE,
                                                        &mMmMpInstanceProtocol
                                                        );
  ASSERT_EFI_ERROR (Status);
}

/**
  Initialize global data for MP synchronization: the mm-mp instance, page
  tables, GDT/TSS and the SMI entry of every CPU.

  @param Stacks             Base address of SMI stack buffer for all processors.
  @param StackSize          Stack size for each processor in SMM.
  @param ShadowStackSize    Shadow Stack size for each processor in SMM.

  @return The CR3 of the SMM page tables.
**/
UINT32
InitializeMpServiceData (
  IN VOID   *Stacks,
  IN UINTN  StackSize,
  IN UINTN  ShadowStackSize
  )
{
  UINT32                          Cr3;
  UINTN                           Index;
  UINT8                           *GdtTssTables;
  UINTN                           GdtTableStepSize;
  CPUID_VERSION_INFO_EDX          RegEdx;
  UINT32                          MaxExtendedFunction;
  CPUID_VIR_PHY_ADDRESS_SIZE_EAX  AddressSize;
  UINTN                           Cpus;

  AsmCpuid (CPUID_VERSION_INFO, NULL, NULL, NULL, &RegEdx.Uint32);
  mMachineCheckSupported = (BOOLEAN)(RegEdx.Bits.MCA == 1);

  InitializeSmmCpuSemaphores ();

  Cpus               = gSmmCpuPrivate->SmmCoreEntryContext.NumberOfCpus;
  mSmmMpSyncDataSize = sizeof (SMM_DISPATCHER_MP_SYNC_DATA) + (sizeof (SMM_CPU_DATA_BLOCK) + sizeof (BOOLEAN)) * Cpus;
  mSmmMpSyncData     = AllocatePages (EFI_SIZE_TO_PAGES (mSmmMpSyncDataSize));
  mSavedMtrrs        = AllocateZeroPool (sizeof (MTRR_SETTINGS) * Cpus);
  ASSERT (mSmmMpSyncData != NULL && mSavedMtrrs != NULL);
  if ((mSmmMpSyncData == NULL) || (mSavedMtrrs == NULL)) {
    CpuDeadLoop ();
    return 0;
  }

  InitializeMpSyncData ();
  InstallInstanceProtocol ();

  //
  // Physical address mask for the page tables (above the virtual address
  // limit is not supported, as in EDK2).
  //
  AsmCpuid (CPUID_EXTENDED_FUNCTION, &MaxExtendedFunction, NULL, NULL, NULL);
  if (MaxExtendedFunction >= CPUID_VIR_PHY_ADDRESS_SIZE) {
    AsmCpuid (CPUID_VIR_PHY_ADDRESS_SIZE, &AddressSize.Uint32, NULL, NULL, NULL);
  } else {
    AddressSize.Bits.PhysicalAddressBits = 36;
  }

  gPhyMask  = LShiftU64 (1, AddressSize.Bits.PhysicalAddressBits) - 1;
  gPhyMask &= 0xfffffffffffff000ULL;

  Cr3          = SmmInitPageTable ();
  GdtTssTables = InitGdt (Cr3, &GdtTableStepSize);
  for (Index = 0; Index < mMaxNumberOfCpus; Index++) {
    InstallSmiHandler (
      Index,
      (UINT32)mCpuHotPlugData.SmBase[Index],
      (VOID *)((UINTN)Stacks + (StackSize + ShadowStackSize) * Index),
      StackSize,
      (UINTN)(GdtTssTables + GdtTableStepSize * Index),
      gcSmiGdtr.Limit + 1,
      gcSmiIdtr.Base,
      gcSmiIdtr.Limit + 1,
      Cr3
      );
  }

  ZeroMem (&gSmiMtrrs, sizeof (gSmiMtrrs));
  MtrrGetAllMtrrs (&gSmiMtrrs);
  return Cr3;
}

/**
  Tokens and the StartupThisAp wrappers live in the mm-mp region; only the
  private structure's list head is kept consistent.
**/
VOID
InitializeDataForMmMp (
  VOID
  )
{
  InitializeListHead (&gSmmCpuPrivate->TokenList);
  gSmmCpuPrivate->FirstFreeToken = NULL;
  gSmmCpuPrivate->ApWrapperFunc  = NULL;
}

/**
  One entry per package (max package ID + 1), MAX_UINT32 = not chosen yet;
  the first present thread seen for a package reads its SMM registers.
**/
VOID
InitPackageFirstThreadIndexInfo (
  VOID
  )
{
  UINTN   Index;
  UINT32  MaxPackage;

  MaxPackage = 0;
  for (Index = 0; Index < mNumberOfCpus; Index++) {
    if (gSmmCpuPrivate->ProcessorInfo[Index].Location.Package > MaxPackage) {
      MaxPackage = gSmmCpuPrivate->ProcessorInfo[Index].Location.Package;
    }
  }

  mPackageFirstThreadIndex = AllocatePool (sizeof (UINT32) * (MaxPackage + 1));
  ASSERT (mPackageFirstThreadIndex != NULL);
  if (mPackageFirstThreadIndex == NULL) {
    return;
  }

  mPackageCount = MaxPackage + 1;
  SetMem32 (mPackageFirstThreadIndex, sizeof (UINT32) * mPackageCount, MAX_UINT32);
}

EFI_STATUS
EFIAPI
RegisterSmmEntry (
  IN CONST EFI_SMM_CONFIGURATION_PROTOCOL  *This,
  IN EFI_SMM_ENTRY_POINT                   SmmEntryPoint
  )
{
  gSmmCpuPrivate->SmmCoreEntry = SmmEntryPoint;
  return EFI_SUCCESS;
}

/* ---------------------------------------------------------------------------
   The SMI entry (SmiEntry.nasm calls these on every CPU).
   ------------------------------------------------------------------------- */

/**
  Load DR6/DR7 from the save state before SMM C code runs (PcdCpuSmmDebug),
  so that hardware breakpoints set outside SMM work inside.
**/
VOID
EFIAPI
CpuSmmDebugEntry (
  IN UINTN  CpuIndex
  )
{
  SMRAM_SAVE_STATE_MAP  *State;

  if (!FeaturePcdGet (PcdCpuSmmDebug) || (CpuIndex >= mMaxNumberOfCpus)) {
    return;
  }

  State = (SMRAM_SAVE_STATE_MAP *)gSmmCpuPrivate->CpuSaveState[CpuIndex];
  if (mSmmSaveStateRegisterLma == EFI_SMM_SAVE_STATE_REGISTER_LMA_32BIT) {
    AsmWriteDr6 (State->x86._DR6);
    AsmWriteDr7 (State->x86._DR7);
  } else {
    AsmWriteDr6 ((UINTN)State->x64._DR6);
    AsmWriteDr7 ((UINTN)State->x64._DR7);
  }
}

/**
  Store DR6/DR7 back into the save state on the way out (PcdCpuSmmDebug).
**/
VOID
EFIAPI
CpuSmmDebugExit (
  IN UINTN  CpuIndex
  )
{
  SMRAM_SAVE_STATE_MAP  *State;

  if (!FeaturePcdGet (PcdCpuSmmDebug) || (CpuIndex >= mMaxNumberOfCpus)) {
    return;
  }

  State = (SMRAM_SAVE_STATE_MAP *)gSmmCpuPrivate->CpuSaveState[CpuIndex];
  if (mSmmSaveStateRegisterLma == EFI_SMM_SAVE_STATE_REGISTER_LMA_32BIT) {
    State->x86._DR7 = (UINT32)AsmReadDr7 ();
    State->x86._DR6 = (UINT32)AsmReadDr6 ();
  } else {
    State->x64._DR7 = AsmReadDr7 ();
    State->x64._DR6 = AsmReadDr6 ();
  }
}

/**
  Every CPU, every SMI. The first SMI of a CPU only initialises it (SMBASE
  relocation, S3 resume); every later one is mm-mp's rendezvous. While a
  CPU is inside, its Present flag is set so that the save-state services
  may read its state.

  @param CpuIndex  The CPU's index (from its SMI entry stub).
**/
VOID
EFIAPI
SmiRendezvous (
  IN UINTN  CpuIndex
  )
{
  UINTN  Cr2;

  if ((CpuIndex >= mMaxNumberOfCpus) || (mSmmInitialized == NULL)) {
    return;
  }

  //
  // A page fault inside SMM (on-demand paging above 4 GiB) overwrites CR2.
  //
  Cr2 = 0;
  SaveCr2 (&Cr2);

  if (!mSmmInitialized[CpuIndex]) {
    InitializeSmm ();
    RestoreCr2 (Cr2);
    mSmmInitialized[CpuIndex] = TRUE;
    return;
  }

  if (mSmmProfileEnabled) {
    ActivateSmmProfile (CpuIndex);
  }

  *(mSmmMpSyncData->CpuData[CpuIndex].Present) = TRUE;
  MmMpSmiRendezvous (mMmMpInstance, CpuIndex);
  *(mSmmMpSyncData->CpuData[CpuIndex].Present) = FALSE;

  RestoreCr2 (Cr2);
}
