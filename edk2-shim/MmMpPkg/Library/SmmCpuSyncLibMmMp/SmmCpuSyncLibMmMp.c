/** @file
  SmmCpuSyncLib instance on mm-mp (docs/BEHAVIOUR.md §7): the context lives in SMRAM
  pages from MemoryAllocationLib; every semaphore operation is the
  library's MmMpSync* function, the same code the mm-mp rendezvous uses.

  Differences from UefiCpuPkg's instance, on purpose: invalid arguments
  (NULL context, CPU index out of range) are ignored or reported with a
  status instead of ASSERTing, and SmmCpuSyncContextInit reports a size
  overflow as RETURN_BUFFER_TOO_SMALL.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#include <PiMm.h>
#include <Library/BaseLib.h>
#include <Library/DebugLib.h>
#include <Library/MemoryAllocationLib.h>
#include <Library/SmmCpuSyncLib.h>
#include <Library/SynchronizationLib.h>
#include <mm_mp.h>

//
// The allocation: one header line (pages to free), then the MmMp context
// on the next line so that it is aligned to the cache-line size.
//
typedef struct {
  UINTN    Pages;
  UINTN    LineSize;
} SYNC_ALLOCATION;

/**
  Cache-line size for the semaphores: SynchronizationLib's spin-lock
  granularity rounded up to a power of two, at least 64 bytes, at most
  2 KiB (the context must start in the first page of its allocation).
**/
STATIC
UINTN
SyncLineSize (
  VOID
  )
{
  UINTN  Line;
  UINTN  Wanted;

  Wanted = GetSpinLockProperties ();
  Line   = 64;
  while (Line < Wanted && Line < SIZE_2KB) {
    Line <<= 1;
  }

  return Line;
}

STATIC
SYNC_ALLOCATION *
AllocationOf (
  IN SMM_CPU_SYNC_CONTEXT  *Context
  )
{
  UINT8  *Base;

  //
  // The context starts one page-aligned line after the header; the header
  // is at the start of the page that holds the context.
  //
  Base = (UINT8 *)((UINTN)Context & ~(UINTN)EFI_PAGE_MASK);
  return (SYNC_ALLOCATION *)Base;
}

RETURN_STATUS
EFIAPI
SmmCpuSyncContextInit (
  IN   UINTN                 NumberOfCpus,
  OUT  SMM_CPU_SYNC_CONTEXT  **Context
  )
{
  EFI_STATUS          Status;
  UINTN               Line;
  UINTN               Size;
  UINTN               Pages;
  SYNC_ALLOCATION     *Allocation;
  MM_MP_SYNC_CONTEXT  *Sync;

  if (Context == NULL) {
    return RETURN_INVALID_PARAMETER;
  }

  *Context = NULL;
  if (NumberOfCpus == 0) {
    return RETURN_INVALID_PARAMETER;
  }

  Line   = SyncLineSize ();
  Status = MmMpSyncGetRequiredSize (NumberOfCpus, Line, &Size);
  if (Status == EFI_OUT_OF_RESOURCES) {
    return RETURN_BUFFER_TOO_SMALL;
  }

  if (EFI_ERROR (Status)) {
    return Status;
  }

  if (Size > MAX_UINTN - Line - EFI_PAGE_SIZE) {
    return RETURN_BUFFER_TOO_SMALL;
  }

  Pages      = EFI_SIZE_TO_PAGES (Size + Line);
  Allocation = AllocatePages (Pages);
  if (Allocation == NULL) {
    return RETURN_OUT_OF_RESOURCES;
  }

  Allocation->Pages    = Pages;
  Allocation->LineSize = Line;
  Status               = MmMpSyncContextInit ((UINT8 *)Allocation + Line, Size, NumberOfCpus, Line, &Sync);
  if (EFI_ERROR (Status)) {
    FreePages (Allocation, Pages);
    return Status;
  }

  *Context = (SMM_CPU_SYNC_CONTEXT *)Sync;
  return RETURN_SUCCESS;
}

VOID
EFIAPI
SmmCpuSyncContextDeinit (
  IN OUT SMM_CPU_SYNC_CONTEXT  *Context
  )
{
  SYNC_ALLOCATION  *Allocation;

  if (Context == NULL) {
    return;
  }

  Allocation = AllocationOf (Context);
  FreePages (Allocation, Allocation->Pages);
}

VOID
EFIAPI
SmmCpuSyncContextReset (
  IN OUT SMM_CPU_SYNC_CONTEXT  *Context
  )
{
  MmMpSyncContextReset ((MM_MP_SYNC_CONTEXT *)Context);
}

UINTN
EFIAPI
SmmCpuSyncGetArrivedCpuCount (
  IN  SMM_CPU_SYNC_CONTEXT  *Context
  )
{
  return MmMpSyncGetArrivedCpuCount ((MM_MP_SYNC_CONTEXT *)Context);
}

RETURN_STATUS
EFIAPI
SmmCpuSyncCheckInCpu (
  IN OUT SMM_CPU_SYNC_CONTEXT  *Context,
  IN     UINTN                 CpuIndex
  )
{
  return MmMpSyncCheckInCpu ((MM_MP_SYNC_CONTEXT *)Context, CpuIndex);
}

RETURN_STATUS
EFIAPI
SmmCpuSyncCheckOutCpu (
  IN OUT SMM_CPU_SYNC_CONTEXT  *Context,
  IN     UINTN                 CpuIndex
  )
{
  return MmMpSyncCheckOutCpu ((MM_MP_SYNC_CONTEXT *)Context, CpuIndex);
}

VOID
EFIAPI
SmmCpuSyncLockDoor (
  IN OUT SMM_CPU_SYNC_CONTEXT  *Context,
  IN     UINTN                 CpuIndex,
  OUT UINTN                    *CpuCount
  )
{
  MmMpSyncLockDoor ((MM_MP_SYNC_CONTEXT *)Context, CpuIndex, CpuCount);
}

VOID
EFIAPI
SmmCpuSyncWaitForAPs (
  IN OUT SMM_CPU_SYNC_CONTEXT  *Context,
  IN     UINTN                 NumberOfAPs,
  IN     UINTN                 BspIndex
  )
{
  MmMpSyncWaitForAPs ((MM_MP_SYNC_CONTEXT *)Context, NumberOfAPs, BspIndex);
}

VOID
EFIAPI
SmmCpuSyncReleaseOneAp   (
  IN OUT SMM_CPU_SYNC_CONTEXT  *Context,
  IN     UINTN                 CpuIndex,
  IN     UINTN                 BspIndex
  )
{
  MmMpSyncReleaseOneAp ((MM_MP_SYNC_CONTEXT *)Context, CpuIndex, BspIndex);
}

VOID
EFIAPI
SmmCpuSyncWaitForBsp (
  IN OUT SMM_CPU_SYNC_CONTEXT  *Context,
  IN     UINTN                 CpuIndex,
  IN     UINTN                 BspIndex
  )
{
  MmMpSyncWaitForBsp ((MM_MP_SYNC_CONTEXT *)Context, CpuIndex, BspIndex);
}

VOID
EFIAPI
SmmCpuSyncReleaseBsp (
  IN OUT SMM_CPU_SYNC_CONTEXT  *Context,
  IN     UINTN                 CpuIndex,
  IN     UINTN                 BspIndex
  )
{
  MmMpSyncReleaseBsp ((MM_MP_SYNC_CONTEXT *)Context, CpuIndex, BspIndex);
}
