/** @file
  Test stand-in for EDK2's <PiMm.h> (see Uefi.h in this directory): the
  multi-phase procedure types and the MM entry context, under EDK2's names.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#ifndef STUB_PI_MM_H_
#define STUB_PI_MM_H_

#include <Uefi.h>

typedef VOID (EFIAPI *EFI_AP_PROCEDURE)(IN OUT VOID *Buffer);
typedef EFI_STATUS (EFIAPI *EFI_AP_PROCEDURE2)(IN VOID *ProcedureArgument);

typedef EFI_STATUS (EFIAPI *EFI_MM_STARTUP_THIS_AP)(
  IN EFI_AP_PROCEDURE  Procedure,
  IN UINTN             CpuNumber,
  IN OUT VOID          *ProcArguments OPTIONAL
  );

/* Defined here so that a header which redefined it would fail to compile. */
typedef struct {
  EFI_MM_STARTUP_THIS_AP  MmStartupThisAp;
  UINTN                   CurrentlyExecutingCpu;
  UINTN                   NumberOfCpus;
  UINTN                   *CpuSaveStateSize;
  VOID                    **CpuSaveState;
} EFI_MM_ENTRY_CONTEXT;

#endif
