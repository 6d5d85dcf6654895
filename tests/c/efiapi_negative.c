/** @file
  Negative EFIAPI check, driven by tests/c_header.rs on x86_64: compiled
  once per CASE with
    -std=c11 -Wall -Wextra -Werror -Werror=incompatible-pointer-types
  CASE 0 must compile (the file is otherwise valid); every other CASE mixes
  a plain (SysV) function-pointer type with the header's EFIAPI ones and must
  FAIL to compile. If one compiled, EFIAPI would not really be ms_abi, and
  efiapi_check.c's positive checks would prove nothing.
**/

#include "mm_mp.h"

#ifndef CASE
#error "compile with -DCASE=<n>"
#endif

static EFI_STATUS SysvProcedure (VOID *Arg) { (void)Arg; return EFI_SUCCESS; }
static UINT64 SysvGetTicks (VOID *Context) { (void)Context; return 0; }
static EFI_STATUS EFIAPI EfiProcedure (VOID *Arg) { (void)Arg; return EFI_SUCCESS; }

int
main (void)
{
  MM_MP_PLATFORM      Platform = { 0 };
  EFI_MM_MP_PROTOCOL  *Mp = 0;

  (void)SysvProcedure; (void)SysvGetTicks; (void)EfiProcedure; (void)Platform; (void)Mp;

#if CASE == 0
  /* control: everything EFIAPI */
  EFI_AP_PROCEDURE2 P = EfiProcedure;
  EFI_STATUS (EFIAPI *G)(CONST MM_MP_CONFIG *, UINTN *) = MmMpGetRequiredSize;
  (void)P; (void)G;
#elif CASE == 1
  /* an export through a SysV pointer */
  EFI_STATUS (*G)(CONST MM_MP_CONFIG *, UINTN *) = MmMpGetRequiredSize;
  (void)G;
#elif CASE == 2
  /* a SysV callback in the platform table */
  Platform.GetTicks = SysvGetTicks;
#elif CASE == 3
  /* a SysV procedure where EFI_AP_PROCEDURE2 is expected */
  EFI_AP_PROCEDURE2 P = SysvProcedure;
  (void)P;
#elif CASE == 4
  /* a protocol member through a SysV pointer */
  EFI_STATUS (*N)(CONST EFI_MM_MP_PROTOCOL *, UINTN *) = Mp->GetNumberOfProcessors;
  (void)N;
#elif CASE == 5
  /* an export returning a pointer, through a SysV pointer */
  EFI_MM_MP_PROTOCOL *(*G)(MM_MP_INSTANCE *) = MmMpGetMmMpProtocol;
  (void)G;
#else
#error "unknown CASE"
#endif
  return 0;
}
