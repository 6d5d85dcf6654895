/* Calls every export of mm_mp.h once, so that a link with
   -Wl,--gc-sections keeps exactly what a firmware module using the whole
   API pulls in from libmm_mp.a (benches/perf.rs, section [6]). The
   protocol members are reached through the templates that MmMpInitialize
   copies. Built and linked by the bench only; never run. */
#include <stddef.h>
#include "mm_mp.h"

volatile UINTN Sink;

int
main (
  void
  )
{
  UINTN  Size = 0;
  UINTN  Count = 0;
  EFI_STATUS  Result;

  Sink += (UINTN)MmMpGetRequiredSize (NULL, &Size);
  Sink += (UINTN)MmMpInitialize (NULL, 0, NULL, NULL, NULL);
  MmMpSmiRendezvous (NULL, 0);
  Sink += (UINTN)MmMpGetMmMpProtocol (NULL);
  Sink += (UINTN)MmMpStartupThisAp (NULL, NULL, 0, NULL);
  Sink += (UINTN)MmMpBlockingStartupThisAp (NULL, NULL, 0, NULL);
  Sink += MmMpGetCurrentBsp (NULL);
  Sink += (UINTN)MmMpGetTokenResult (NULL, NULL, &Result);
  Sink += (UINTN)MmMpGetStatistics (NULL, NULL);
  Sink += (UINTN)MmMpGetRendezvousProtocol (NULL);
  Sink += (UINTN)MmMpGetCpuServiceProtocol (NULL);
  Sink += (UINTN)MmMpSyncGetRequiredSize (0, 0, &Size);
  Sink += (UINTN)MmMpSyncContextInit (NULL, 0, 0, 0, NULL);
  MmMpSyncContextReset (NULL);
  Sink += MmMpSyncGetArrivedCpuCount (NULL);
  Sink += (UINTN)MmMpSyncCheckInCpu (NULL, 0);
  Sink += (UINTN)MmMpSyncCheckOutCpu (NULL, 0);
  MmMpSyncLockDoor (NULL, 0, &Count);
  MmMpSyncWaitForAPs (NULL, 0, 0);
  MmMpSyncReleaseOneAp (NULL, 0, 1);
  MmMpSyncWaitForBsp (NULL, 0, 1);
  MmMpSyncReleaseBsp (NULL, 0, 1);
  return (int)(Sink & 1);
}
