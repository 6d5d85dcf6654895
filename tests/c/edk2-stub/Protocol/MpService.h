/** @file
  Test stand-in for EDK2's <Protocol/MpService.h> (see ../Uefi.h): the
  processor information record under EDK2's names.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#ifndef STUB_PROTOCOL_MP_SERVICE_H_
#define STUB_PROTOCOL_MP_SERVICE_H_

#include <PiMm.h>

#define PROCESSOR_AS_BSP_BIT         0x00000001
#define PROCESSOR_ENABLED_BIT        0x00000002
#define PROCESSOR_HEALTH_STATUS_BIT  0x00000004

typedef struct {
  UINT32  Package;
  UINT32  Core;
  UINT32  Thread;
} EFI_CPU_PHYSICAL_LOCATION;

typedef struct {
  UINT32  Package;
  UINT32  Module;
  UINT32  Tile;
  UINT32  Die;
  UINT32  Core;
  UINT32  Thread;
} EFI_CPU_PHYSICAL_LOCATION2;

typedef union {
  EFI_CPU_PHYSICAL_LOCATION2  Location2;
} EXTENDED_PROCESSOR_INFORMATION;

typedef struct {
  UINT64                          ProcessorId;
  UINT32                          StatusFlag;
  EFI_CPU_PHYSICAL_LOCATION       Location;
  EXTENDED_PROCESSOR_INFORMATION  ExtendedInformation;
} EFI_PROCESSOR_INFORMATION;

#endif
