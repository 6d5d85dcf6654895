/** @file
  MmMpLib: the mm-mp static library (mm_mp.h) plus the firmware glue every
  module using it needs: MM_MP_PLATFORM Fatal and Log hooks on DebugLib.

  The memory functions the Rust object calls (MmMpMemCopy, MmMpMemSet,
  MmMpMemMove, MmMpMemCompare, MmMpMemBcmp; the firmware build renames
  memcpy & co. to these) are part of the library instance and need nothing
  from the caller.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#ifndef MM_MP_LIB_H_
#define MM_MP_LIB_H_

#include <mm_mp.h>

/**
  MM_MP_PLATFORM.Fatal for firmware: prints the message with DEBUG_ERROR,
  ASSERTs, then CpuDeadLoop (). Context is ignored.
**/
VOID
EFIAPI
MmMpLibFatal (
  IN VOID         *Context,
  IN CONST CHAR8  *Message
  );

/**
  MM_MP_PLATFORM.Log for firmware: DEBUG ((Level, "%a\n", Message)). The
  library's levels are DebugLib's (DEBUG_INFO, DEBUG_WARN, DEBUG_ERROR).
  Context is ignored.
**/
VOID
EFIAPI
MmMpLibLog (
  IN VOID         *Context,
  IN UINTN        Level,
  IN CONST CHAR8  *Message
  );

#endif
