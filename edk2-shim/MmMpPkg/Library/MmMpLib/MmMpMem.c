/** @file
  The C memory functions the mm-mp Rust object calls, under the names the
  firmware build gives them (firmware/Makefile renames memcpy, memset,
  memmove, memcmp and bcmp), on BaseMemoryLib. Private names: no clash with
  CompilerIntrinsicsLib, CryptoPkg's IntrinsicLib or anything else that
  defines memcpy in the same module.

  These use the toolchain's C calling convention, which is the one the
  object calls them with: System V for the ELF object (GCC, CLANGDWARF),
  Microsoft x64 for the COFF object (CLANGPDB, Visual Studio). They are
  deliberately not EFIAPI.

  In its own file so that an archive member with only these functions is
  pulled in once, whichever MmMpPkg library a module links first.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#include <Base.h>
#include <Library/BaseMemoryLib.h>

VOID *
MmMpMemCopy (
  VOID        *Destination,
  CONST VOID  *Source,
  UINTN       Length
  )
{
  return CopyMem (Destination, Source, Length);
}

VOID *
MmMpMemMove (
  VOID        *Destination,
  CONST VOID  *Source,
  UINTN       Length
  )
{
  //
  // CopyMem handles overlapping buffers.
  //
  return CopyMem (Destination, Source, Length);
}

VOID *
MmMpMemSet (
  VOID   *Buffer,
  INT32  Value,
  UINTN  Length
  )
{
  return SetMem (Buffer, Length, (UINT8)Value);
}

INT32
MmMpMemCompare (
  CONST VOID  *Left,
  CONST VOID  *Right,
  UINTN       Length
  )
{
  INTN  Difference;

  if (Length == 0) {
    return 0;
  }

  Difference = CompareMem (Left, Right, Length);
  return (Difference < 0) ? -1 : ((Difference > 0) ? 1 : 0);
}

INT32
MmMpMemBcmp (
  CONST VOID  *Left,
  CONST VOID  *Right,
  UINTN       Length
  )
{
  return MmMpMemCompare (Left, Right, Length);
}
