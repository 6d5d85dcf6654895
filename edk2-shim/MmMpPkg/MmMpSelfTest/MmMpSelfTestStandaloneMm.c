/** @file
  MmMpSelfTest's entry point in Standalone MM (MM_STANDALONE).

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#include <PiMm.h>

EFI_STATUS
MmMpSelfTestStart (
  VOID
  );

EFI_STATUS
EFIAPI
MmMpSelfTestStandaloneMmEntry (
  IN EFI_HANDLE           ImageHandle,
  IN EFI_MM_SYSTEM_TABLE  *MmSystemTable
  )
{
  return MmMpSelfTestStart ();
}
