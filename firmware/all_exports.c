/** @file
  Calls every function mm-mp exports and every member of every protocol it
  produces, so that a link of this program against the firmware build of
  the library pulls in everything a firmware image can reach. The
  no-reachable-panic check (firmware/check-no-panic.sh) links it with
  -Wl,--gc-sections and then looks for panic machinery in the result.

  It also runs: one CPU, one SMI, the MM MP services called from
  MmFoundationEntry (on a single-CPU machine every AP target is invalid, so
  most calls return an error status; the point is that they are
  reached, and the few statuses checked below catch a broken link).
**/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm_mp.h"

static int Failures;

#define EXPECT(Cond)                                                  \
  do {                                                                \
    if (!(Cond)) {                                                    \
      fprintf (stderr, "all_exports: %s:%d: %s\n", __FILE__, __LINE__, \
               #Cond);                                                \
      Failures++;                                                     \
    }                                                                 \
  } while (0)

static MM_MP_INSTANCE *mInstance;

static EFI_STATUS EFIAPI
EmptyProcedure2 (VOID *Argument)
{
  (VOID)Argument;
  return EFI_SUCCESS;
}

static VOID EFIAPI
EmptyProcedure (VOID *Argument)
{
  (VOID)Argument;
}

static VOID EFIAPI
ExceptionHandler (EFI_EXCEPTION_TYPE Type, EFI_SYSTEM_CONTEXT Context)
{
  (VOID)Type;
  (VOID)Context;
}

static UINT64 EFIAPI
GetApicId (VOID *Context)
{
  (VOID)Context;
  return 0;
}

static VOID EFIAPI
Fatal (VOID *Context, CONST CHAR8 *Message)
{
  (VOID)Context;
  fprintf (stderr, "all_exports: Fatal: %s\n", Message);
  abort ();
}

static VOID EFIAPI
Foundation (VOID *Context, UINTN BspIndex)
{
  EFI_MM_MP_PROTOCOL                 *Mp;
  EFI_SMM_CPU_SERVICE_PROTOCOL       *Cpu;
  EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL  *Rendezvous;
  UINTN                              Count;
  UINTN                              Who;
  MM_COMPLETION                      Token;
  EFI_STATUS                         Status;
  EFI_STATUS                         Result;
  EFI_PROCESSOR_INFORMATION          Info;

  (VOID)Context;
  Mp         = MmMpGetMmMpProtocol (mInstance);
  Cpu        = MmMpGetCpuServiceProtocol (mInstance);
  Rendezvous = MmMpGetRendezvousProtocol (mInstance);
  EXPECT (BspIndex == 0);
  EXPECT (MmMpGetCurrentBsp (mInstance) == 0);

  EXPECT (Mp->GetNumberOfProcessors (Mp, &Count) == EFI_SUCCESS && Count == 1);
  Token = NULL;
  EXPECT (Mp->DispatchProcedure (Mp, EmptyProcedure2, 1, 0, NULL, &Token, &Status) == EFI_INVALID_PARAMETER);
  EXPECT (Mp->BroadcastProcedure (Mp, EmptyProcedure2, 0, NULL, &Token, NULL) == EFI_NOT_STARTED);
  EXPECT (Mp->SetStartupProcedure (Mp, EmptyProcedure, NULL) == EFI_SUCCESS);
  EXPECT (Mp->SetStartupProcedure (Mp, NULL, NULL) == EFI_SUCCESS);
  EXPECT (Mp->CheckForProcedure (Mp, (MM_COMPLETION)(UINTN)0x12345) == EFI_NOT_FOUND);
  EXPECT (Mp->WaitForProcedure (Mp, (MM_COMPLETION)(UINTN)0x12345) == EFI_NOT_FOUND);
  EXPECT (MmMpGetTokenResult (mInstance, (MM_COMPLETION)(UINTN)0x12345, &Result) == EFI_NOT_FOUND);
  EXPECT (MmMpStartupThisAp (mInstance, EmptyProcedure, 1, NULL) == EFI_INVALID_PARAMETER);
  EXPECT (MmMpBlockingStartupThisAp (mInstance, EmptyProcedure, 1, NULL) == EFI_INVALID_PARAMETER);

  EXPECT (Cpu->GetProcessorInfo (Cpu, 0, &Info) == EFI_SUCCESS && Info.ProcessorId == 0);
  EXPECT (Cpu->SwitchBsp (Cpu, 0) == EFI_UNSUPPORTED);
  EXPECT (Cpu->AddProcessor (Cpu, 7, &Who) == EFI_UNSUPPORTED);
  EXPECT (Cpu->RemoveProcessor (Cpu, 0) == EFI_UNSUPPORTED);
  EXPECT (Cpu->WhoAmI (Cpu, &Who) == EFI_SUCCESS && Who == 0);
  EXPECT (Cpu->RegisterExceptionHandler (Cpu, 14, ExceptionHandler) == EFI_UNSUPPORTED);

  /* All APs (none) arrived: docs/BEHAVIOUR.md §6.7 row 1. */
  EXPECT (Rendezvous->WaitForAllProcessor (Rendezvous, TRUE) == EFI_SUCCESS);
}

int
main (void)
{
  static EFI_PROCESSOR_INFORMATION  Processors[1];
  MM_MP_CONFIG                      Config;
  MM_MP_PLATFORM                    Platform;
  MM_MP_STATISTICS                  Stats;
  MM_MP_HOT_PLUG_STATISTICS         HotPlug;
  MM_MP_SYNC_CONTEXT                *Sync;
  UINTN                             Size;
  UINTN                             Count;
  VOID                              *Buffer;
  VOID                              *SyncBuffer;

  memset (&Config, 0, sizeof Config);
  memset (&Platform, 0, sizeof Platform);
  Processors[0].ProcessorId = 0;
  Processors[0].StatusFlag  = 0x7; /* BSP, enabled, healthy */
  Config.Revision           = MM_MP_CONFIG_REVISION;
  Config.NumberOfCpus       = 1;
  Config.MaxTokens          = 4;
  Config.SyncMode           = MM_MP_SYNC_MODE_TRADITIONAL;
  Config.BspElection        = TRUE;
  Config.ProcessorInfo      = Processors;
  Platform.Revision         = MM_MP_PLATFORM_REVISION;
  Platform.GetApicId        = GetApicId;
  Platform.MmFoundationEntry = Foundation;
  Platform.Fatal            = Fatal;

  EXPECT (MmMpGetRequiredSize (NULL, &Size) == EFI_INVALID_PARAMETER);
  EXPECT (MmMpGetRequiredSize (&Config, &Size) == EFI_SUCCESS);
  Buffer = aligned_alloc (64, (Size + 63) & ~(UINTN)63);
  if (Buffer == NULL) {
    return 2;
  }

  EXPECT (MmMpInitialize (Buffer, Size - 1, &Config, &Platform, &mInstance) == EFI_BUFFER_TOO_SMALL);
  EXPECT (MmMpInitialize (Buffer, Size, &Config, &Platform, &mInstance) == EFI_SUCCESS);
  EXPECT (MmMpGetCurrentBsp (mInstance) == (UINTN)-1);

  MmMpSmiRendezvous (mInstance, 0);
  MmMpSmiRendezvous (mInstance, 5); /* out of range: returns at once */

  EXPECT (MmMpGetStatistics (mInstance, &Stats) == EFI_SUCCESS && Stats.Smis == 1);
  EXPECT (MmMpGetHotPlugStatistics (mInstance, &HotPlug) == EFI_SUCCESS && HotPlug.CpusAdded == 0);

  /* SmmCpuSyncLib-compatible semaphores: one CPU checks in, locks, checks
     the count, and runs every barrier call against itself. */
  EXPECT (MmMpSyncGetRequiredSize (2, 64, &Size) == EFI_SUCCESS);
  SyncBuffer = aligned_alloc (64, (Size + 63) & ~(UINTN)63);
  if (SyncBuffer == NULL) {
    return 2;
  }

  EXPECT (MmMpSyncContextInit (SyncBuffer, Size, 2, 64, &Sync) == EFI_SUCCESS);
  EXPECT (MmMpSyncCheckInCpu (Sync, 1) == EFI_SUCCESS);
  EXPECT (MmMpSyncCheckOutCpu (Sync, 1) == EFI_SUCCESS);
  EXPECT (MmMpSyncCheckInCpu (Sync, 0) == EFI_SUCCESS);
  EXPECT (MmMpSyncGetArrivedCpuCount (Sync) == 1);
  Count = 0;
  MmMpSyncLockDoor (Sync, 0, &Count);
  EXPECT (Count == 1);
  EXPECT (MmMpSyncCheckInCpu (Sync, 1) == EFI_ABORTED);
  MmMpSyncReleaseOneAp (Sync, 1, 0);
  MmMpSyncWaitForBsp (Sync, 1, 0);
  MmMpSyncReleaseBsp (Sync, 1, 0);
  MmMpSyncWaitForAPs (Sync, 1, 0);
  MmMpSyncContextReset (Sync);
  EXPECT (MmMpSyncGetArrivedCpuCount (Sync) == 0);

  free (SyncBuffer);
  free (Buffer);
  if (Failures != 0) {
    fprintf (stderr, "all_exports: %d check(s) failed\n", Failures);
    return 1;
  }

  printf ("all_exports: every export and protocol member called, all checks passed\n");
  return 0;
}
