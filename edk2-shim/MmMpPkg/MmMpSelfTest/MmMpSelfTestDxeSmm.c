/** @file
  MmMpSelfTest's entry point in traditional MM (DXE_SMM_DRIVER).

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#include <PiMm.h>

EFI_STATUS
MmMpSelfTestStart (
  VOID
  );

EFI_STATUS
EFIAPI
MmMpSelfTestEntry (
  IN EFI_HANDLE        ImageHandle,
  IN EFI_SYSTEM_TABLE  *SystemTable
  )
{
  return MmMpSelfTestStart ();
}
