/** @file
  MmMpSelfTest: exercises EFI_MM_MP_PROTOCOL and the SMM CPU service on
  every AP during a real SMI and prints one summary line through DEBUG:

    MmMpSelfTest: N passed, M failed (K [DIFF] checks: D differ from mm-mp, S skipped)

  It runs on stock EDK2 as well as on mm-mp. Checks whose expected result
  is one of mm-mp's deliberate differences from EDK2 ([DIFF] in the mm-mp
  repository's docs/BEHAVIOUR.md) are counted apart: on mm-mp they count as passed/failed like the others;
  on stock EDK2 a different result is reported as "differ", never as a
  failure, and checks that would hang stock EDK2 are skipped there.

  The checks run in a root MMI handler, which the MM core calls inside
  every SMI: the first call runs them, the second (a later SMI) checks
  the startup procedure and prints the summary. The entry points are in
  MmMpSelfTestDxeSmm.c (traditional MM, DXE_SMM_DRIVER) and
  MmMpSelfTestStandaloneMm.c (Standalone MM, MM_STANDALONE).

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#include <PiMm.h>
#include <Library/BaseLib.h>
#include <Library/BaseMemoryLib.h>
#include <Library/DebugLib.h>
#include <Library/MemoryAllocationLib.h>
#include <Library/MmServicesTableLib.h>
#include <Library/SynchronizationLib.h>
#include <Protocol/MmMp.h>
#include <Protocol/SmmCpuService.h>
#include <Protocol/MmMpInstance.h>

//
// Bounded busy waits (no time source is assumed): CpuPause iterations.
//
#define SPIN_LIMIT  200000000ULL

typedef struct {
  volatile UINT32    Runs;
  volatile UINTN     Who;
  volatile UINT32    StartupRuns;
} CPU_RECORD;

STATIC EFI_MM_MP_PROTOCOL            *mMp;
STATIC EFI_SMM_CPU_SERVICE_PROTOCOL  *mCpu;
STATIC MM_MP_INSTANCE_PROTOCOL       *mMmMp;
STATIC CPU_RECORD                    *mRecords;
STATIC BOOLEAN                       *mPopulated;
STATIC UINTN                         mCpus;
STATIC UINTN                         mPopulatedCount;
STATIC UINTN                         mPassed;
STATIC UINTN                         mFailed;
STATIC UINTN                         mDiffChecks;
STATIC UINTN                         mDiffers;
STATIC UINTN                         mSkipped;
STATIC EFI_HANDLE                    mRootHandle;
STATIC volatile BOOLEAN              mRelease;
STATIC UINTN                         mHandlerCalls;
STATIC CONST EFI_GUID                mMmMpInstanceGuid = MM_MP_INSTANCE_PROTOCOL_GUID;

/**
  Find the populated slots: a hot-plug platform has NumberOfCpus slots
  (PcdCpuMaxLogicalProcessorNumber), of which only the present CPUs hold
  an APIC ID; GetProcessorInfo gives EFI_NOT_FOUND for the others.
**/
STATIC
VOID
FindPopulatedSlots (
  VOID
  )
{
  EFI_PROCESSOR_INFORMATION  Info;
  UINTN                      Index;

  mPopulatedCount = 0;
  for (Index = 0; Index < mCpus; Index++) {
    mPopulated[Index] = (BOOLEAN)(!EFI_ERROR (mCpu->GetProcessorInfo (mCpu, Index, &Info)) &&
                                  (Info.ProcessorId != MAX_UINT64));
    if (mPopulated[Index]) {
      mPopulatedCount++;
    }
  }
}

/**
  The first populated AP after Skip1 (and other than Skip2), or mCpus.
**/
STATIC
UINTN
NextAp (
  IN UINTN  Skip1,
  IN UINTN  Skip2
  )
{
  UINTN  Step;
  UINTN  Index;

  for (Step = 1; Step < mCpus; Step++) {
    Index = (Skip1 + Step) % mCpus;
    if (mPopulated[Index] && (Index != Skip2)) {
      return Index;
    }
  }

  return mCpus;
}

/**
  Record one check. Diff = TRUE marks a [DIFF] check: on stock EDK2 a
  mismatch counts as "differ", not as a failure.
**/
STATIC
VOID
Check (
  IN BOOLEAN      Ok,
  IN BOOLEAN      Diff,
  IN CONST CHAR8  *What,
  IN EFI_STATUS   Status
  )
{
  if (Diff) {
    mDiffChecks++;
  }

  if (Ok) {
    mPassed++;
    return;
  }

  if (Diff && (mMmMp == NULL)) {
    mDiffers++;
    DEBUG ((DEBUG_INFO, "MmMpSelfTest: [DIFF] %a: stock EDK2 gives %r\n", What, Status));
    return;
  }

  mFailed++;
  DEBUG ((DEBUG_ERROR, "MmMpSelfTest: FAILED %a (%r)\n", What, Status));
}

/**
  Procedure run on APs: count the run and ask the CPU service who we are.
**/
STATIC
EFI_STATUS
EFIAPI
RecordProcedure (
  IN OUT VOID  *Argument
  )
{
  CPU_RECORD  *Record;
  UINTN       Who;

  Record = Argument;
  Who    = MAX_UINTN;
  if (!EFI_ERROR (mCpu->WhoAmI (mCpu, &Who))) {
    Record->Who = Who;
  }

  InterlockedIncrement ((UINT32 *)&Record->Runs);
  return EFI_SUCCESS;
}

/**
  Broadcast procedure: one shared argument, so each AP finds its record.
**/
STATIC
EFI_STATUS
EFIAPI
BroadcastProcedure (
  IN OUT VOID  *Argument
  )
{
  UINTN  Who;

  if (EFI_ERROR (mCpu->WhoAmI (mCpu, &Who)) || (Who >= mCpus)) {
    return EFI_DEVICE_ERROR;
  }

  return RecordProcedure (&mRecords[Who]);
}

/**
  Holds its AP until the BSP sets mRelease (busy-AP check).
**/
STATIC
EFI_STATUS
EFIAPI
HoldProcedure (
  IN OUT VOID  *Argument
  )
{
  UINT64  Spins;

  for (Spins = 0; !mRelease && Spins < SPIN_LIMIT; Spins++) {
    CpuPause ();
  }

  return EFI_SUCCESS;
}

STATIC
VOID
EFIAPI
LegacyProcedure (
  IN OUT VOID  *Argument
  )
{
  RecordProcedure (Argument);
}

STATIC
VOID
EFIAPI
StartupProcedure (
  IN OUT VOID  *Argument
  )
{
  UINTN  Who;

  if (!EFI_ERROR (mCpu->WhoAmI (mCpu, &Who)) && (Who < mCpus)) {
    InterlockedIncrement ((UINT32 *)&mRecords[Who].StartupRuns);
  }
}

STATIC
VOID
ResetRecords (
  VOID
  )
{
  UINTN  Index;

  for (Index = 0; Index < mCpus; Index++) {
    mRecords[Index].Runs = 0;
    mRecords[Index].Who  = MAX_UINTN;
  }
}

/**
  Every populated AP except Bsp ran exactly once, on itself; the BSP and
  empty slots did not run it.
**/
STATIC
BOOLEAN
EveryApRanOnce (
  IN UINTN  Bsp
  )
{
  UINTN  Index;

  for (Index = 0; Index < mCpus; Index++) {
    if ((Index == Bsp) || !mPopulated[Index]) {
      if (mRecords[Index].Runs != 0) {
        return FALSE;
      }
    } else if ((mRecords[Index].Runs != 1) || (mRecords[Index].Who != Index)) {
      return FALSE;
    }
  }

  return TRUE;
}

STATIC
VOID
RunInSmiChecks (
  VOID
  )
{
  EFI_STATUS                         Status;
  EFI_STATUS                         CpuStatus;
  EFI_STATUS                         *Statuses;
  MM_COMPLETION                      *Tokens;
  MM_COMPLETION                      Token;
  MM_COMPLETION                      Live;
  EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL  *Rendezvous;
  EFI_PROCESSOR_INFORMATION          Info;
  UINTN                              Count;
  UINTN                              Bsp;
  UINTN                              Index;
  UINTN                              Pending;
  UINTN                              Ap;
  UINTN                              Other;
  BOOLEAN                            AllOk;
  UINT64                             Spins;

  Bsp    = gMmst->CurrentlyExecutingCpu;
  Status = mMp->GetNumberOfProcessors (mMp, &Count);
  Check (!EFI_ERROR (Status) && Count == gMmst->NumberOfCpus && Count == mCpus, FALSE, "GetNumberOfProcessors", Status);

  Status = mCpu->WhoAmI (mCpu, &Index);
  Check (!EFI_ERROR (Status) && Index == Bsp, FALSE, "WhoAmI on the BSP", Status);

  //
  // Gather the APs (relaxed mode: they may still be arriving).
  //
  Status = gMmst->MmLocateProtocol (&gEdkiiSmmCpuRendezvousProtocolGuid, NULL, (VOID **)&Rendezvous);
  if (!EFI_ERROR (Status)) {
    Status = Rendezvous->WaitForAllProcessor (Rendezvous, TRUE);
    Check (!EFI_ERROR (Status), FALSE, "WaitForAllProcessor (TRUE)", Status);
  }

  //
  // Processor information of every slot: a record for each populated
  // one, EFI_NOT_FOUND for an empty one (a hot-plug platform's free
  // slots), and at least the BSP populated.
  //
  AllOk = (BOOLEAN)(Bsp < mCpus && mPopulated[Bsp]);
  for (Index = 0; Index < mCpus; Index++) {
    Status = mCpu->GetProcessorInfo (mCpu, Index, &Info);
    if (mPopulated[Index] ? (EFI_ERROR (Status) || (Info.ProcessorId == MAX_UINT64)) : (Status != EFI_NOT_FOUND)) {
      DEBUG ((DEBUG_ERROR, "MmMpSelfTest: GetProcessorInfo (%u): %r\n", Index, Status));
      AllOk = FALSE;
    }
  }

  Check (AllOk, FALSE, "GetProcessorInfo of every slot", EFI_SUCCESS);

  //
  // Invalid arguments (docs/BEHAVIOUR.md §2.2, §2.3, §2.4, §2.5).
  //
  Status = mMp->DispatchProcedure (mMp, RecordProcedure, Bsp, 0, &mRecords[Bsp], NULL, NULL);
  Check (Status == EFI_INVALID_PARAMETER, FALSE, "Dispatch to the BSP", Status);
  Status = mMp->DispatchProcedure (mMp, RecordProcedure, mCpus, 0, NULL, NULL, NULL);
  Check (Status == EFI_INVALID_PARAMETER, FALSE, "Dispatch to CPU NumberOfCpus", Status);
  Ap = NextAp (Bsp, Bsp);
  if (Ap < mCpus) {
    Status = mMp->DispatchProcedure (mMp, NULL, Ap, 0, NULL, NULL, NULL);
    Check (Status == EFI_INVALID_PARAMETER, FALSE, "Dispatch of NULL", Status);
  }

  for (Index = 0; Index < mCpus && mPopulated[Index]; Index++) {
  }

  if (Index < mCpus) {
    Status = mMp->DispatchProcedure (mMp, RecordProcedure, Index, 0, &mRecords[Index], NULL, NULL);
    Check (Status == EFI_INVALID_PARAMETER && mRecords[Index].Runs == 0, FALSE, "Dispatch to an empty slot", Status);
  }

  Status = mMp->BroadcastProcedure (mMp, NULL, 0, NULL, NULL, NULL);
  Check (Status == EFI_INVALID_PARAMETER, FALSE, "Broadcast of NULL", Status);
  Status = mMp->CheckForProcedure (mMp, NULL);
  Check (Status == EFI_INVALID_PARAMETER, FALSE, "CheckForProcedure (NULL)", Status);
  Status = mMp->WaitForProcedure (mMp, NULL);
  Check (Status == EFI_INVALID_PARAMETER, FALSE, "WaitForProcedure (NULL)", Status);
  Status = mMp->SetStartupProcedure (mMp, NULL, &mRecords[0]);
  Check (Status == EFI_INVALID_PARAMETER, FALSE, "SetStartupProcedure (NULL, args)", Status);
  if (((mMp->Attributes & EFI_MM_MP_TIMEOUT_SUPPORTED) == 0) && (Ap < mCpus)) {
    Status = mMp->DispatchProcedure (mMp, RecordProcedure, Ap, 1000, NULL, NULL, NULL);
    Check (Status == EFI_INVALID_PARAMETER, FALSE, "Timeout without EFI_MM_MP_TIMEOUT_SUPPORTED", Status);
  }

  if (Ap >= mCpus) {
    DEBUG ((DEBUG_INFO, "MmMpSelfTest: one CPU, no AP to dispatch to\n"));
    return;
  }

  Statuses = AllocateZeroPool (sizeof (EFI_STATUS) * mCpus);
  Tokens   = AllocateZeroPool (sizeof (MM_COMPLETION) * mCpus);
  if ((Statuses == NULL) || (Tokens == NULL)) {
    Check (FALSE, FALSE, "AllocatePool", EFI_OUT_OF_RESOURCES);
    return;
  }

  //
  // Blocking dispatch to every AP.
  //
  ResetRecords ();
  AllOk = TRUE;
  for (Index = 0; Index < mCpus; Index++) {
    if ((Index == Bsp) || !mPopulated[Index]) {
      continue;
    }

    CpuStatus = EFI_NOT_READY;
    Status    = mMp->DispatchProcedure (mMp, RecordProcedure, Index, 0, &mRecords[Index], NULL, &CpuStatus);
    if (EFI_ERROR (Status) || (CpuStatus != EFI_SUCCESS)) {
      DEBUG ((DEBUG_ERROR, "MmMpSelfTest: blocking Dispatch to CPU %u: %r / %r\n", Index, Status, CpuStatus));
      AllOk = FALSE;
    }
  }

  Check (AllOk && EveryApRanOnce (Bsp), FALSE, "blocking DispatchProcedure on every AP", EFI_SUCCESS);

  //
  // Non-blocking dispatch to every AP, then check the tokens in reverse
  // order until all are done (docs/BEHAVIOUR.md §10.4).
  //
  ResetRecords ();
  AllOk = TRUE;
  for (Index = 0; Index < mCpus; Index++) {
    Tokens[Index]   = NULL;
    Statuses[Index] = EFI_NOT_READY;
    if ((Index == Bsp) || !mPopulated[Index]) {
      continue;
    }

    Status = mMp->DispatchProcedure (mMp, RecordProcedure, Index, 0, &mRecords[Index], &Tokens[Index], &Statuses[Index]);
    if (EFI_ERROR (Status) || (Tokens[Index] == NULL)) {
      AllOk = FALSE;
    }
  }

  for (Spins = 0, Pending = mPopulatedCount - 1; AllOk && Pending > 0 && Spins < SPIN_LIMIT; Spins++) {
    Pending = 0;
    for (Index = mCpus; Index-- > 0;) {
      if ((Index == Bsp) || (Tokens[Index] == NULL)) {
        continue;
      }

      Status = mMp->CheckForProcedure (mMp, Tokens[Index]);
      if (Status == EFI_NOT_READY) {
        Pending++;
      } else if (Status == EFI_SUCCESS) {
        Tokens[Index] = NULL;
      } else {
        AllOk = FALSE;
      }
    }
  }

  for (Index = 0; Index < mCpus; Index++) {
    if ((Index != Bsp) && mPopulated[Index] && (Statuses[Index] != EFI_SUCCESS)) {
      AllOk = FALSE;
    }
  }

  Check (AllOk && Pending == 0 && EveryApRanOnce (Bsp), FALSE, "non-blocking DispatchProcedure + CheckForProcedure", EFI_SUCCESS);

  //
  // Blocking broadcast with a status array: SUCCESS for every AP,
  // EFI_NOT_STARTED for the caller (docs/BEHAVIOUR.md §2.3 step 9).
  //
  ResetRecords ();
  for (Index = 0; Index < mCpus; Index++) {
    Statuses[Index] = EFI_NOT_READY;
  }

  Status = mMp->BroadcastProcedure (mMp, BroadcastProcedure, 0, NULL, NULL, Statuses);
  AllOk  = (BOOLEAN)(Status == EFI_SUCCESS && Statuses[Bsp] == EFI_NOT_STARTED);
  for (Index = 0; Index < mCpus; Index++) {
    if ((Index != Bsp) && mPopulated[Index] && (Statuses[Index] != EFI_SUCCESS)) {
      AllOk = FALSE;
    }
  }

  Check (AllOk && EveryApRanOnce (Bsp), FALSE, "blocking BroadcastProcedure with status array", Status);

  //
  // Broadcast with a token, then WaitForProcedure.
  //
  ResetRecords ();
  Token  = NULL;
  Status = mMp->BroadcastProcedure (mMp, BroadcastProcedure, 0, NULL, &Token, NULL);
  if (!EFI_ERROR (Status)) {
    Status = mMp->WaitForProcedure (mMp, Token);
  }

  Check (Status == EFI_SUCCESS && EveryApRanOnce (Bsp), FALSE, "BroadcastProcedure with token + WaitForProcedure", Status);

  //
  // gMmst->MmStartupThisAp to the next AP (blocking or not, per platform
  // PCD): wait for the record with a bounded spin.
  //
  ResetRecords ();
  Status = gMmst->MmStartupThisAp (LegacyProcedure, Ap, &mRecords[Ap]);
  for (Spins = 0; !EFI_ERROR (Status) && mRecords[Ap].Runs == 0 && Spins < SPIN_LIMIT; Spins++) {
    CpuPause ();
  }

  Check (!EFI_ERROR (Status) && mRecords[Ap].Runs == 1 && mRecords[Ap].Who == Ap, FALSE, "gMmst->MmStartupThisAp", Status);
  //
  // Let a non-blocking MmStartupThisAp finish before using the AP again.
  //
  for (Spins = 0; Spins < 100000; Spins++) {
    CpuPause ();
  }

  //
  // [DIFF] A token variable that still holds a live token: mm-mp refuses
  // with EFI_ALREADY_STARTED (docs/BEHAVIOUR.md §2.2); EDK2 overwrites it.
  //
  mRelease = FALSE;
  Live     = NULL;
  Status   = mMp->DispatchProcedure (mMp, HoldProcedure, Ap, 0, NULL, &Live, NULL);
  if (!EFI_ERROR (Status)) {
    //
    // Needs a third CPU: another populated AP to dispatch to.
    //
    Other = NextAp (Ap, Bsp);
    if (Other < mCpus) {
      Token  = Live;
      Status = mMp->DispatchProcedure (mMp, RecordProcedure, Other, 0, &mRecords[Other], &Token, NULL);
      Check (Status == EFI_ALREADY_STARTED, TRUE, "Dispatch with a live token in *Token", Status);
      if ((Status == EFI_SUCCESS) && (Token != Live)) {
        mMp->WaitForProcedure (mMp, Token);
      }
    }

    //
    // [DIFF] A busy AP: mm-mp returns EFI_NOT_READY at once; EDK2 spins
    // until the AP is free, which here would never happen (skipped there).
    //
    if (mMmMp != NULL) {
      Status = mMp->DispatchProcedure (mMp, RecordProcedure, Ap, 0, &mRecords[Ap], NULL, NULL);
      Check (Status == EFI_NOT_READY, TRUE, "Dispatch to a busy AP", Status);
    } else {
      mDiffChecks++;
      mSkipped++;
    }

    mRelease = TRUE;
    Status   = mMp->WaitForProcedure (mMp, Live);
    Check (Status == EFI_SUCCESS, FALSE, "WaitForProcedure of the held AP", Status);
  } else {
    Check (FALSE, FALSE, "Dispatch of the hold procedure", Status);
  }

  FreePool (Statuses);
  FreePool (Tokens);
}

STATIC
VOID
PrintSummary (
  VOID
  )
{
  MM_MP_STATISTICS           Stats;
  MM_MP_HOT_PLUG_STATISTICS  HotPlug;

  DEBUG ((
    DEBUG_INFO,
    "MmMpSelfTest: %u passed, %u failed (%u [DIFF] checks: %u differ from mm-mp, %u skipped; %a)\n",
    mPassed,
    mFailed,
    mDiffChecks,
    mDiffers,
    mSkipped,
    (mMmMp != NULL) ? "mm-mp" : "stock EDK2"
    ));
  ZeroMem (&HotPlug, sizeof (HotPlug));
  if ((mMmMp != NULL) && (mMmMp->Revision >= 2)) {
    mMmMp->GetHotPlugStatistics (mMmMp->Instance, &HotPlug);
  }

  if ((mMmMp != NULL) && !EFI_ERROR (mMmMp->GetStatistics (mMmMp->Instance, &Stats))) {
    DEBUG ((
      DEBUG_INFO,
      "MmMpSelfTest: mm-mp statistics: %lu SMIs, %lu spurious, %lu late CPUs, %lu IPIs, %lu timeouts, %lu lost APs, %lu dispatches, %lu broadcasts, %lu CPUs added, %lu CPUs removed\n",
      Stats.Smis,
      Stats.SpuriousSmis,
      Stats.LateCpus,
      Stats.IpisSent,
      Stats.Timeouts,
      Stats.LostAps,
      Stats.Dispatches,
      Stats.Broadcasts,
      HotPlug.CpusAdded,
      HotPlug.CpusRemoved
      ));
  }
}

/**
  The checks of one SMI (the first in which the handler below runs): every
  CPU the rendezvous brought in is there. Registers the startup procedure
  for the finish.
**/
STATIC
VOID
StartChecks (
  VOID
  )
{
  EFI_STATUS  Status;

  FindPopulatedSlots ();
  DEBUG ((
    DEBUG_INFO,
    "MmMpSelfTest: %u CPU slots, %u populated, BSP %u, MM MP by %a\n",
    mCpus,
    mPopulatedCount,
    gMmst->CurrentlyExecutingCpu,
    (mMmMp != NULL) ? "mm-mp" : "stock EDK2"
    ));

  RunInSmiChecks ();

  //
  // The startup procedure: registered now, checked at a later SMI.
  //
  Status = mMp->SetStartupProcedure (mMp, StartupProcedure, NULL);
  Check (Status == EFI_SUCCESS, FALSE, "SetStartupProcedure", Status);
}

/**
  At a later SMI: the startup procedure ran on the BSP of this SMI;
  deregister everything and print the summary.
**/
STATIC
VOID
FinishChecks (
  VOID
  )
{
  EFI_STATUS  Status;
  UINTN       Bsp;
  UINTN       Ran;
  UINTN       Index;

  Bsp = gMmst->CurrentlyExecutingCpu;
  Ran = 0;
  for (Index = 0; Index < mCpus; Index++) {
    if (mRecords[Index].StartupRuns != 0) {
      Ran++;
    }
  }

  Check (Bsp < mCpus && mRecords[Bsp].StartupRuns != 0, FALSE, "startup procedure ran at a later SMI", EFI_NOT_STARTED);
  DEBUG ((DEBUG_INFO, "MmMpSelfTest: startup procedure ran on %u of %u CPUs by a later SMI\n", Ran, mPopulatedCount));

  Status = mMp->SetStartupProcedure (mMp, NULL, NULL);
  Check (Status == EFI_SUCCESS, FALSE, "SetStartupProcedure (NULL, NULL)", Status);

  gMmst->MmiHandlerUnRegister (mRootHandle);
  PrintSummary ();
}

/**
  Root MMI handler: the MM core calls it once in every SMI, inside the SMI
  and after the rendezvous. Its first call runs the checks, its second (a
  later SMI, whose entry ran the startup procedure) finishes. Driver entry
  points do not always run inside an SMI (Standalone MM dispatches them
  from the MM core's start-up), a root handler always does.
**/
STATIC
EFI_STATUS
EFIAPI
SelfTestHandler (
  IN EFI_HANDLE  DispatchHandle,
  IN CONST VOID  *Context OPTIONAL,
  IN OUT VOID    *CommBuffer OPTIONAL,
  IN OUT UINTN   *CommBufferSize OPTIONAL
  )
{
  mHandlerCalls++;
  if (mHandlerCalls == 1) {
    StartChecks ();
  } else if (mHandlerCalls == 2) {
    FinishChecks ();
  }

  return EFI_WARN_INTERRUPT_SOURCE_QUIESCED;
}

/**
  What both entry points do (MmMpSelfTestDxeSmm.c, traditional MM;
  MmMpSelfTestStandaloneMm.c, Standalone MM): find the protocols, set up
  the records and register the root handler that runs the checks.
**/
EFI_STATUS
MmMpSelfTestStart (
  VOID
  )
{
  EFI_STATUS  Status;

  Status = gMmst->MmLocateProtocol (&gEfiMmMpProtocolGuid, NULL, (VOID **)&mMp);
  if (EFI_ERROR (Status)) {
    DEBUG ((DEBUG_ERROR, "MmMpSelfTest: no EFI_MM_MP_PROTOCOL: %r\n", Status));
    return Status;
  }

  Status = gMmst->MmLocateProtocol (&gEfiSmmCpuServiceProtocolGuid, NULL, (VOID **)&mCpu);
  if (EFI_ERROR (Status)) {
    DEBUG ((DEBUG_ERROR, "MmMpSelfTest: no EFI_SMM_CPU_SERVICE_PROTOCOL: %r\n", Status));
    return Status;
  }

  if (EFI_ERROR (gMmst->MmLocateProtocol ((EFI_GUID *)&mMmMpInstanceGuid, NULL, (VOID **)&mMmMp))) {
    mMmMp = NULL;
  }

  mCpus      = gMmst->NumberOfCpus;
  mRecords   = AllocateZeroPool (sizeof (CPU_RECORD) * mCpus);
  mPopulated = AllocateZeroPool (sizeof (BOOLEAN) * mCpus);
  if ((mRecords == NULL) || (mPopulated == NULL)) {
    return EFI_OUT_OF_RESOURCES;
  }

  Status = gMmst->MmiHandlerRegister (SelfTestHandler, NULL, &mRootHandle);
  if (EFI_ERROR (Status)) {
    DEBUG ((DEBUG_ERROR, "MmMpSelfTest: MmiHandlerRegister: %r\n", Status));
  }

  return Status;
}
