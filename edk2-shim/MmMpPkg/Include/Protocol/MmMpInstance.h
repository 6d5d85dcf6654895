/** @file
  MM_MP_INSTANCE_PROTOCOL: installed by the PiSmmCpuDxeSmm swap of MmMpPkg
  next to EFI_MM_MP_PROTOCOL. Its presence means mm-mp serves the MM MP
  protocol; it gives the instance and the statistics functions so that a
  driver (the MmMpSelfTest) needs no link to the library.

  Revision 2 adds GetHotPlugStatistics at the end: check Revision before
  calling it.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#ifndef MM_MP_INSTANCE_PROTOCOL_H_
#define MM_MP_INSTANCE_PROTOCOL_H_

#include <mm_mp.h>

#define MM_MP_INSTANCE_PROTOCOL_GUID \
  { 0x2b9c7e41, 0x5d0a, 0x4f6e, { 0x9a, 0x13, 0x7c, 0x2e, 0x48, 0xb1, 0x06, 0xd5 } }

#define MM_MP_INSTANCE_PROTOCOL_REVISION  2

typedef
EFI_STATUS
(EFIAPI *MM_MP_INSTANCE_GET_STATISTICS)(
  IN  MM_MP_INSTANCE    *Instance,
  OUT MM_MP_STATISTICS  *Statistics
  );

typedef
EFI_STATUS
(EFIAPI *MM_MP_INSTANCE_GET_HOT_PLUG_STATISTICS)(
  IN  MM_MP_INSTANCE             *Instance,
  OUT MM_MP_HOT_PLUG_STATISTICS  *Statistics
  );

typedef struct {
  UINT32                                    Revision;
  UINT32                                    Reserved;
  MM_MP_INSTANCE                            *Instance;
  MM_MP_INSTANCE_GET_STATISTICS             GetStatistics;
  MM_MP_INSTANCE_GET_HOT_PLUG_STATISTICS    GetHotPlugStatistics; // revision 2
} MM_MP_INSTANCE_PROTOCOL;

extern EFI_GUID  gMmMpPkgInstanceProtocolGuid;

#endif
