/** @file
  MmMpLib glue: Fatal and Log hooks for MM_MP_PLATFORM on DebugLib. The
  library's messages carry their own "mm-mp: " prefix.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#include <PiMm.h>
#include <Library/BaseLib.h>
#include <Library/DebugLib.h>
#include <Library/MmMpLib.h>

VOID
EFIAPI
MmMpLibFatal (
  IN VOID         *Context,
  IN CONST CHAR8  *Message
  )
{
  DEBUG ((DEBUG_ERROR, "%a (fatal)\n", Message));
  ASSERT (FALSE);
  CpuDeadLoop ();
}

VOID
EFIAPI
MmMpLibLog (
  IN VOID         *Context,
  IN UINTN        Level,
  IN CONST CHAR8  *Message
  )
{
  DEBUG ((Level, "%a\n", Message));
}
