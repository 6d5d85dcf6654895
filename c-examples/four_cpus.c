/** @file
  four_cpus: a host program that plays a 4-CPU machine with 4 pthreads and
  drives mm-mp through its C API (include/mm_mp.h, BEHAVIOUR.md §11), the way an
  EDK2 SMM CPU driver would:

  * CPU i is thread i with APIC ID i; GetApicId answers with the calling
    thread's APIC ID (a thread-local), CpuPause yields, GetTicks reads
    CLOCK_MONOTONIC in nanoseconds (TicksPerSecond = 1e9, so the instance
    supports timeouts).
  * "Raising an SMI" makes every CPU thread call MmMpSmiRendezvous with its
    own index (a broadcast SMI: all CPUs enter at once). CPU 0 is the BSP;
    MmFoundationEntry, which runs the "MMI handlers", uses the
    EFI_MM_MP_PROTOCOL the instance provides.
  * Two SMIs are raised, the second right after the first, to show that
    state (tokens, the startup procedure) behaves across SMIs.
  * The second SMI also uses EFI_SMM_CPU_SERVICE_PROTOCOL: GetProcessorInfo
    of every CPU (printed) and WhoAmI on every CPU, on the APs through a
    broadcast procedure (BEHAVIOUR.md §5.2).

  Every status is compared with what BEHAVIOUR.md §2-§4 and §11 say; the program
  prints what happened and exits with 1 if anything differs.

  Build and run: make run (see Makefile).

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#define _POSIX_C_SOURCE  200809L /* pthread barriers, clock_gettime */

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm_mp.h"

#define CPU_COUNT      4
#define SMI_COUNT      2
#define WAIT_LIMIT_NS  5000000000ULL /* bound of the example's own waits */

/* ------------------------------------------------------------------------
   Bookkeeping
   ------------------------------------------------------------------------ */

static int  mFailures;

static const char *
StatusName (EFI_STATUS Status)
{
  switch (Status) {
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

/* Prints "  <what> -> <status>" and counts a failure if it is not Expected. */
static EFI_STATUS
Expect (const char *What, EFI_STATUS Got, EFI_STATUS Expected)
{
  if (Got == Expected) {
    printf ("  %-58s -> %s\n", What, StatusName (Got));
  } else {
    printf ("  %-58s -> %s   ** expected %s **\n", What, StatusName (Got), StatusName (Expected));
    mFailures++;
  }
  return Got;
}

static VOID
ExpectTrue (const char *What, int Ok)
{
  printf ("  %-58s    %s\n", What, Ok ? "ok" : "** WRONG **");
  if (!Ok) {
    mFailures++;
  }
}

/* ------------------------------------------------------------------------
   The simulated machine: platform callbacks
   ------------------------------------------------------------------------ */

/* APIC ID of the CPU the calling thread plays (the main thread plays none). */
static _Thread_local UINT64  tApicId = INVALID_APIC_ID;

static UINT64
NowNs (VOID)
{
  struct timespec  Ts;

  clock_gettime (CLOCK_MONOTONIC, &Ts);
  return (UINT64)Ts.tv_sec * 1000000000ULL + (UINT64)Ts.tv_nsec;
}

static UINT64 EFIAPI
PlatformGetTicks (VOID *Context)
{
  (void)Context;
  return NowNs ();
}

static VOID EFIAPI
PlatformCpuPause (VOID *Context)
{
  (void)Context;
  sched_yield ();
}

static UINT64 EFIAPI
PlatformGetApicId (VOID *Context)
{
  (void)Context;
  return tApicId;
}

static VOID EFIAPI
PlatformFatal (VOID *Context, CONST CHAR8 *Message)
{
  (void)Context;
  fprintf (stderr, "four_cpus: mm-mp reported a fatal error: %s\n", Message);
  abort ();
}

static VOID EFIAPI
PlatformLog (VOID *Context, UINTN Level, CONST CHAR8 *Message)
{
  (void)Context;
  if (getenv ("FOUR_CPUS_LOG") != NULL) {
    fprintf (stderr, "  [mm-mp log 0x%lx] %s\n", (unsigned long)Level, Message);
  }
}

static VOID EFIAPI MmFoundationEntry (VOID *Context, UINTN BspIndex);

/* ------------------------------------------------------------------------
   Procedures run on APs (all EFIAPI)
   ------------------------------------------------------------------------ */

/* Which CPU ran a procedure, and what it should return. */
typedef struct {
  const char           *Name;
  EFI_STATUS           Return;
  atomic_int           Runs;
  _Atomic UINT64       RanOn;  /* APIC ID of the last CPU that ran it */
  atomic_uint          CpuMask;
  atomic_int           *Gate;  /* if not NULL: spin until *Gate != 0 */
} PROCEDURE_ARGS;

static VOID
Record (PROCEDURE_ARGS *Args)
{
  if (Args->Gate != NULL) {
    while (atomic_load (Args->Gate) == 0) {
      sched_yield ();
    }
  }
  atomic_store (&Args->RanOn, tApicId);
  atomic_fetch_or (&Args->CpuMask, 1u << (unsigned)tApicId);
  atomic_fetch_add (&Args->Runs, 1);
}

/* EFI_AP_PROCEDURE2: the MM MP protocol's procedure type. */
static EFI_STATUS EFIAPI
Procedure2 (VOID *ProcedureArgument)
{
  PROCEDURE_ARGS  *Args = ProcedureArgument;

  Record (Args);
  return Args->Return;
}

/* EFI_AP_PROCEDURE2 for a broadcast in which CPU 2 fails. */
static EFI_STATUS EFIAPI
FailOnCpu2 (VOID *ProcedureArgument)
{
  Record (ProcedureArgument);
  return tApicId == 2 ? EFI_DEVICE_ERROR : EFI_SUCCESS;
}

/* EFI_AP_PROCEDURE: the old void type of gMmst->MmStartupThisAp. */
static VOID EFIAPI
OldStyleProcedure (VOID *Buffer)
{
  Record (Buffer);
}

/* EFI_AP_PROCEDURE2: WhoAmI on the calling AP; the answer is stored per
   APIC ID (= CPU index in this example). */
static _Atomic UINTN  mWhoAmI[CPU_COUNT];

static EFI_STATUS EFIAPI
WhoAmIProcedure (VOID *ProcedureArgument)
{
  EFI_SMM_CPU_SERVICE_PROTOCOL  *Cs = ProcedureArgument;
  UINTN                         Number = MAX_UINTN;
  EFI_STATUS                    Status;

  Status = Cs->WhoAmI (Cs, &Number);
  if (Status == EFI_SUCCESS && tApicId < CPU_COUNT) {
    atomic_store (&mWhoAmI[tApicId], Number);
  }
  return Status;
}

/* Startup procedure: every CPU runs it at the start of every SMI. */
static atomic_int  mStartupRuns;

static VOID EFIAPI
StartupProcedure (VOID *Buffer)
{
  (void)Buffer;
  atomic_fetch_add (&mStartupRuns, 1);
}

static VOID
ResetArgs (PROCEDURE_ARGS *Args, const char *Name, EFI_STATUS Return, atomic_int *Gate)
{
  Args->Name   = Name;
  Args->Return = Return;
  Args->Gate   = Gate;
  atomic_store (&Args->Runs, 0);
  atomic_store (&Args->RanOn, INVALID_APIC_ID);
  atomic_store (&Args->CpuMask, 0u);
}

/* Waits (bounded) until Args ran Runs times. */
static int
WaitForRuns (PROCEDURE_ARGS *Args, int Runs)
{
  UINT64  Start = NowNs ();

  while (atomic_load (&Args->Runs) < Runs) {
    if (NowNs () - Start > WAIT_LIMIT_NS) {
      return 0;
    }
    sched_yield ();
  }
  return 1;
}

/* ------------------------------------------------------------------------
   The MMI handlers: what the BSP does in each SMI
   ------------------------------------------------------------------------ */

static MM_MP_INSTANCE  *mInstance;
static int             mSmiNumber;
static MM_COMPLETION   mStaleToken;   /* a token of SMI 1, checked in SMI 2 */

static VOID
FirstSmi (EFI_MM_MP_PROTOCOL *Mp)
{
  static PROCEDURE_ARGS  A, B, C, D, E;
  static atomic_int      Gate;
  UINTN                  Count = 0;
  EFI_STATUS             CpuStatus, StatusB, StatusC;
  EFI_STATUS             Statuses[CPU_COUNT];
  MM_COMPLETION          TokenB = NULL, TokenC = NULL, TokenE = NULL;
  EFI_STATUS             Overall = EFI_ABORTED;
  UINTN                  Index;
  char                   Line[96];

  Expect ("GetNumberOfProcessors", Mp->GetNumberOfProcessors (Mp, &Count), EFI_SUCCESS);
  ExpectTrue ("  ... NumberOfProcessors == 4", Count == CPU_COUNT);
  printf ("  EFI_MM_MP_PROTOCOL Revision %u, Attributes 0x%x (timeouts %s)\n",
          Mp->Revision, Mp->Attributes,
          (Mp->Attributes & EFI_MM_MP_TIMEOUT_SUPPORTED) ? "supported" : "not supported");
  ExpectTrue ("  ... timeouts supported (a time source was given)",
              (Mp->Attributes & EFI_MM_MP_TIMEOUT_SUPPORTED) != 0);

  /* blocking dispatch */
  ResetArgs (&A, "A", EFI_SUCCESS, NULL);
  CpuStatus = EFI_ABORTED;
  Expect ("DispatchProcedure (A, CPU 1, blocking)",
          Mp->DispatchProcedure (Mp, Procedure2, 1, 0, &A, NULL, &CpuStatus), EFI_SUCCESS);
  ExpectTrue ("  ... A ran once, on CPU 1, CPUStatus EFI_SUCCESS",
              atomic_load (&A.Runs) == 1 && atomic_load (&A.RanOn) == 1 && CpuStatus == EFI_SUCCESS);

  /* non-blocking dispatches with tokens; B waits for a gate so that its
     first check deterministically finds it running */
  atomic_store (&Gate, 0);
  ResetArgs (&B, "B", EFI_SUCCESS, &Gate);
  ResetArgs (&C, "C", EFI_SUCCESS, NULL);
  StatusB = StatusC = EFI_ABORTED;
  Expect ("DispatchProcedure (B, CPU 2, token)",
          Mp->DispatchProcedure (Mp, Procedure2, 2, 0, &B, &TokenB, &StatusB), EFI_SUCCESS);
  Expect ("DispatchProcedure (C, CPU 3, token)",
          Mp->DispatchProcedure (Mp, Procedure2, 3, 0, &C, &TokenC, &StatusC), EFI_SUCCESS);
  ExpectTrue ("  ... two distinct tokens", TokenB != NULL && TokenC != NULL && TokenB != TokenC);
  Expect ("CheckForProcedure (B) while B waits at its gate",
          Mp->CheckForProcedure (Mp, TokenB), EFI_NOT_READY);
  ExpectTrue ("  ... B's CPUStatus is EFI_NOT_READY meanwhile", StatusB == EFI_NOT_READY);
  Expect ("DispatchProcedure (A, CPU 2) while CPU 2 is busy",
          Mp->DispatchProcedure (Mp, Procedure2, 2, 0, &A, NULL, NULL), EFI_NOT_READY);
  Expect ("WaitForProcedure (C)", Mp->WaitForProcedure (Mp, TokenC), EFI_SUCCESS);
  ExpectTrue ("  ... C ran on CPU 3, CPUStatus EFI_SUCCESS",
              atomic_load (&C.RanOn) == 3 && StatusC == EFI_SUCCESS);
  atomic_store (&Gate, 1);
  Expect ("WaitForProcedure (B) after opening the gate", Mp->WaitForProcedure (Mp, TokenB),
          EFI_SUCCESS);
  Expect ("CheckForProcedure (B) again", Mp->CheckForProcedure (Mp, TokenB), EFI_SUCCESS);
  ExpectTrue ("  ... B ran on CPU 2, CPUStatus EFI_SUCCESS",
              atomic_load (&B.RanOn) == 2 && StatusB == EFI_SUCCESS);
  mStaleToken = TokenB;

  /* blocking broadcast with a status array */
  ResetArgs (&D, "D", EFI_SUCCESS, NULL);
  for (Index = 0; Index < CPU_COUNT; Index++) {
    Statuses[Index] = EFI_ABORTED;
  }
  Expect ("BroadcastProcedure (D, blocking, CPUStatus[4])",
          Mp->BroadcastProcedure (Mp, Procedure2, 0, &D, NULL, Statuses), EFI_SUCCESS);
  for (Index = 0; Index < CPU_COUNT; Index++) {
    snprintf (Line, sizeof (Line), "  ... CPUStatus[%lu] (%s)", (unsigned long)Index,
              Index == 0 ? "the BSP itself" : "AP");
    Expect (Line, Statuses[Index], Index == 0 ? EFI_NOT_STARTED : EFI_SUCCESS);
  }
  ExpectTrue ("  ... D ran on CPUs 1, 2 and 3 (mask 0xe)", atomic_load (&D.CpuMask) == 0xe);

  /* non-blocking broadcast with a token; CPU 2's procedure fails */
  ResetArgs (&E, "E", EFI_SUCCESS, NULL);
  for (Index = 0; Index < CPU_COUNT; Index++) {
    Statuses[Index] = EFI_ABORTED;
  }
  Expect ("BroadcastProcedure (E, token, CPUStatus[4])",
          Mp->BroadcastProcedure (Mp, FailOnCpu2, 0, &E, &TokenE, Statuses), EFI_SUCCESS);
  Expect ("WaitForProcedure (E)", Mp->WaitForProcedure (Mp, TokenE), EFI_SUCCESS);
  Expect ("MmMpGetTokenResult (E)", MmMpGetTokenResult (mInstance, TokenE, &Overall), EFI_SUCCESS);
  Expect ("  ... overall result of E (CPU 2 failed)", Overall, EFI_DEVICE_ERROR);
  Expect ("  ... CPUStatus[2]", Statuses[2], EFI_DEVICE_ERROR);
  Expect ("  ... CPUStatus[3]", Statuses[3], EFI_SUCCESS);

  /* gMmst->MmStartupThisAp with an old-style void procedure: non-blocking
     here (MM_MP_CONFIG.BlockingStartupThisAp is FALSE, as EDK2's default) */
  ResetArgs (&A, "A", EFI_SUCCESS, NULL);
  Expect ("MmMpStartupThisAp (void procedure, CPU 3)",
          MmMpStartupThisAp (mInstance, OldStyleProcedure, 3, &A), EFI_SUCCESS);
  ExpectTrue ("  ... it ran on CPU 3", WaitForRuns (&A, 1) && atomic_load (&A.RanOn) == 3);
  ResetArgs (&A, "A", EFI_SUCCESS, NULL);
  Expect ("MmMpBlockingStartupThisAp (void procedure, CPU 1)",
          MmMpBlockingStartupThisAp (mInstance, OldStyleProcedure, 1, &A), EFI_SUCCESS);
  ExpectTrue ("  ... it had run on CPU 1 when the call returned",
              atomic_load (&A.Runs) == 1 && atomic_load (&A.RanOn) == 1);

  /* some bad calls */
  Expect ("DispatchProcedure to the BSP itself",
          Mp->DispatchProcedure (Mp, Procedure2, 0, 0, &A, NULL, NULL), EFI_INVALID_PARAMETER);
  Expect ("DispatchProcedure to CPU 4 (out of range)",
          Mp->DispatchProcedure (Mp, Procedure2, 4, 0, &A, NULL, NULL), EFI_INVALID_PARAMETER);
  Expect ("CheckForProcedure (NULL)", Mp->CheckForProcedure (Mp, NULL), EFI_INVALID_PARAMETER);

  /* every CPU will run this at the start of the next SMI */
  atomic_store (&mStartupRuns, 0);
  Expect ("SetStartupProcedure (for the next SMIs)",
          Mp->SetStartupProcedure (Mp, StartupProcedure, NULL), EFI_SUCCESS);
}

/* EFI_SMM_CPU_SERVICE_PROTOCOL: the processor table and WhoAmI. */
static VOID
CpuServices (EFI_MM_MP_PROTOCOL *Mp)
{
  EFI_SMM_CPU_SERVICE_PROTOCOL  *Cs = MmMpGetCpuServiceProtocol (mInstance);
  EFI_PROCESSOR_INFORMATION     Info;
  EFI_STATUS                    Statuses[CPU_COUNT];
  UINTN                         Index;
  UINTN                         Number = MAX_UINTN;
  char                          Line[96];

  ExpectTrue ("MmMpGetCpuServiceProtocol", Cs != NULL);
  if (Cs == NULL) {
    return;
  }
  for (Index = 0; Index < CPU_COUNT; Index++) {
    snprintf (Line, sizeof (Line), "GetProcessorInfo (%lu)", (unsigned long)Index);
    if (Expect (Line, Cs->GetProcessorInfo (Cs, Index, &Info), EFI_SUCCESS) != EFI_SUCCESS) {
      continue;
    }
    printf ("  ... ProcessorId %llu, StatusFlag 0x%x, Package %u Core %u Thread %u\n",
            (unsigned long long)Info.ProcessorId, Info.StatusFlag, Info.Location.Package,
            Info.Location.Core, Info.Location.Thread);
    ExpectTrue ("  ... as given to MmMpInitialize",
                Info.ProcessorId == Index && Info.Location.Core == Index &&
                Info.ExtendedInformation.Location2.Core == Index &&
                Info.StatusFlag == (PROCESSOR_ENABLED_BIT | PROCESSOR_HEALTH_STATUS_BIT |
                                    (Index == 0 ? PROCESSOR_AS_BSP_BIT : 0)));
  }
  Expect ("GetProcessorInfo (4): out of range", Cs->GetProcessorInfo (Cs, CPU_COUNT, &Info),
          EFI_INVALID_PARAMETER);

  Expect ("WhoAmI on the BSP", Cs->WhoAmI (Cs, &Number), EFI_SUCCESS);
  printf ("  ... BSP: WhoAmI = %lu\n", (unsigned long)Number);
  ExpectTrue ("  ... is CPU 0", Number == 0);
  for (Index = 0; Index < CPU_COUNT; Index++) {
    atomic_store (&mWhoAmI[Index], MAX_UINTN);
  }
  Expect ("BroadcastProcedure (WhoAmI on every AP)",
          Mp->BroadcastProcedure (Mp, WhoAmIProcedure, 0, Cs, NULL, Statuses), EFI_SUCCESS);
  for (Index = 1; Index < CPU_COUNT; Index++) {
    Number = atomic_load (&mWhoAmI[Index]);
    printf ("  ... CPU %lu (APIC ID %lu): WhoAmI %s, ProcessorNumber %lu\n",
            (unsigned long)Index, (unsigned long)Index, StatusName (Statuses[Index]),
            (unsigned long)Number);
    ExpectTrue ("  ... the AP's own index", Statuses[Index] == EFI_SUCCESS && Number == Index);
  }
}

static VOID
SecondSmi (EFI_MM_MP_PROTOCOL *Mp)
{
  static PROCEDURE_ARGS  A;
  EFI_STATUS             Result;

  ExpectTrue ("startup procedure ran on all 4 CPUs at SMI entry",
              atomic_load (&mStartupRuns) == CPU_COUNT);
  Expect ("CheckForProcedure (token B of SMI #1)", Mp->CheckForProcedure (Mp, mStaleToken),
          EFI_NOT_FOUND);
  Expect ("MmMpGetTokenResult (token B of SMI #1)",
          MmMpGetTokenResult (mInstance, mStaleToken, &Result), EFI_NOT_FOUND);
  ResetArgs (&A, "A", EFI_SUCCESS, NULL);
  Expect ("DispatchProcedure (A, CPU 2, blocking)",
          Mp->DispatchProcedure (Mp, Procedure2, 2, 0, &A, NULL, NULL), EFI_SUCCESS);
  ExpectTrue ("  ... A ran on CPU 2", atomic_load (&A.RanOn) == 2);
  Expect ("SetStartupProcedure (NULL, NULL): deregister",
          Mp->SetStartupProcedure (Mp, NULL, NULL), EFI_SUCCESS);
  CpuServices (Mp);
}

/* MM_MP_PLATFORM.MmFoundationEntry: the BSP runs the MMI handlers here. */
static VOID EFIAPI
MmFoundationEntry (VOID *Context, UINTN BspIndex)
{
  EFI_MM_MP_PROTOCOL  *Mp = MmMpGetMmMpProtocol (mInstance);

  (void)Context;
  printf ("  MmFoundationEntry on CPU %llu (BspIndex %lu, MmMpGetCurrentBsp %lu)\n",
          (unsigned long long)tApicId, (unsigned long)BspIndex,
          (unsigned long)MmMpGetCurrentBsp (mInstance));
  ExpectTrue ("  ... the BSP is CPU 0", BspIndex == 0 && MmMpGetCurrentBsp (mInstance) == 0);
  if (mSmiNumber == 1) {
    FirstSmi (Mp);
  } else {
    SecondSmi (Mp);
  }
}

/* ------------------------------------------------------------------------
   CPU threads and the SMI source
   ------------------------------------------------------------------------ */

static pthread_barrier_t  mSmiStart;  /* main + CPUs: an SMI is raised */
static pthread_barrier_t  mSmiEnd;    /* main + CPUs: every CPU left SMM */

static void *
CpuThread (void *Arg)
{
  UINTN  Index = (UINTN)Arg;
  int    Smi;

  tApicId = Index;
  for (Smi = 0; Smi < SMI_COUNT; Smi++) {
    pthread_barrier_wait (&mSmiStart);
    MmMpSmiRendezvous (mInstance, Index);
    pthread_barrier_wait (&mSmiEnd);
  }
  return NULL;
}

int
main (void)
{
  EFI_PROCESSOR_INFORMATION  Info[CPU_COUNT];
  MM_MP_CONFIG               Config;
  MM_MP_PLATFORM             Platform;
  UINTN                      Size = 0;
  VOID                       *Buffer;
  pthread_t                  Threads[CPU_COUNT];
  UINTN                      Index;
  EFI_MM_MP_PROTOCOL         *Mp;
  static PROCEDURE_ARGS      Unused;

  memset (Info, 0, sizeof (Info));
  for (Index = 0; Index < CPU_COUNT; Index++) {
    Info[Index].ProcessorId     = Index; /* APIC ID */
    Info[Index].StatusFlag      = PROCESSOR_ENABLED_BIT | PROCESSOR_HEALTH_STATUS_BIT |
                                  (Index == 0 ? PROCESSOR_AS_BSP_BIT : 0);
    Info[Index].Location.Core   = (UINT32)Index;
    Info[Index].ExtendedInformation.Location2.Core = (UINT32)Index;
  }

  memset (&Config, 0, sizeof (Config));
  Config.Revision              = MM_MP_CONFIG_REVISION;
  Config.NumberOfCpus          = CPU_COUNT;
  Config.MaxTokens             = 16;
  Config.CacheLineSize         = 64;
  Config.SyncMode              = MM_MP_SYNC_MODE_TRADITIONAL;
  Config.BspElection           = FALSE;
  Config.BspIndex              = 0;
  Config.BlockingStartupThisAp = FALSE;
  Config.ApSyncTimeoutUs       = 5000000; /* generous: valgrind runs threads one at a time */
  Config.ApSyncTimeout2Us      = 5000000;
  Config.ProcessorInfo         = Info;

  memset (&Platform, 0, sizeof (Platform));
  Platform.Revision          = MM_MP_PLATFORM_REVISION;
  Platform.TicksPerSecond    = 1000000000ULL;
  Platform.GetTicks          = PlatformGetTicks;
  Platform.CpuPause          = PlatformCpuPause;
  Platform.GetApicId         = PlatformGetApicId;
  Platform.MmFoundationEntry = MmFoundationEntry;
  Platform.Fatal             = PlatformFatal;
  Platform.Log               = PlatformLog;

  printf ("four_cpus: mm-mp with %d CPUs (APIC IDs 0-%d), CPU 0 is the BSP\n", CPU_COUNT,
          CPU_COUNT - 1);
  if (Expect ("MmMpGetRequiredSize", MmMpGetRequiredSize (&Config, &Size), EFI_SUCCESS)
      != EFI_SUCCESS) {
    return 1;
  }
  Buffer = aligned_alloc (64, (Size + 63) & ~(UINTN)63);
  if (Buffer == NULL) {
    fprintf (stderr, "four_cpus: out of memory\n");
    return 1;
  }
  printf ("  instance needs %lu bytes\n", (unsigned long)Size);
  if (Expect ("MmMpInitialize", MmMpInitialize (Buffer, Size, &Config, &Platform, &mInstance),
              EFI_SUCCESS) != EFI_SUCCESS) {
    free (Buffer);
    return 1;
  }
  /* the tables were copied: scribbling over ours must not matter */
  memset (&Platform, 0, sizeof (Platform));
  memset (Info, 0xff, sizeof (Info));

  Mp = MmMpGetMmMpProtocol (mInstance);
  ExpectTrue ("MmMpGetCurrentBsp outside an SMI is MAX_UINTN",
              MmMpGetCurrentBsp (mInstance) == MAX_UINTN);
  Expect ("DispatchProcedure outside an SMI",
          Mp->DispatchProcedure (Mp, Procedure2, 1, 0, &Unused, NULL, NULL), EFI_NOT_READY);

  pthread_barrier_init (&mSmiStart, NULL, CPU_COUNT + 1);
  pthread_barrier_init (&mSmiEnd, NULL, CPU_COUNT + 1);
  for (Index = 0; Index < CPU_COUNT; Index++) {
    if (pthread_create (&Threads[Index], NULL, CpuThread, (void *)Index) != 0) {
      fprintf (stderr, "four_cpus: pthread_create failed\n");
      return 1;
    }
  }

  for (mSmiNumber = 1; mSmiNumber <= SMI_COUNT; mSmiNumber++) {
    printf ("SMI #%d (broadcast: all %d CPUs enter)\n", mSmiNumber, CPU_COUNT);
    fflush (stdout);
    pthread_barrier_wait (&mSmiStart);
    pthread_barrier_wait (&mSmiEnd);
    printf ("  every CPU left SMM\n");
  }

  for (Index = 0; Index < CPU_COUNT; Index++) {
    pthread_join (Threads[Index], NULL);
  }
  pthread_barrier_destroy (&mSmiStart);
  pthread_barrier_destroy (&mSmiEnd);

  ExpectTrue ("MmMpGetCurrentBsp after the SMIs is MAX_UINTN",
              MmMpGetCurrentBsp (mInstance) == MAX_UINTN);
  free (Buffer);

  if (mFailures != 0) {
    printf ("four_cpus: %d check(s) FAILED\n", mFailures);
    return 1;
  }
  printf ("four_cpus: all checks passed\n");
  return 0;
}
