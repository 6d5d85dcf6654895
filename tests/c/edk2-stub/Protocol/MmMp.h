/** @file
  Test stand-in for EDK2's <Protocol/MmMp.h> (see ../Uefi.h): the MM MP
  protocol under EDK2's names, laid out as PI volume 4 describes it.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#ifndef STUB_PROTOCOL_MM_MP_H_
#define STUB_PROTOCOL_MM_MP_H_

#include <PiMm.h>

#define EFI_MM_MP_PROTOCOL_GUID \
  { 0x5d5450d7, 0x990c, 0x4180, { 0xa8, 0x03, 0x8e, 0x63, 0xf0, 0x60, 0x83, 0x07 } }

#define EFI_MM_MP_PROTOCOL_REVISION  0x00
#define EFI_MM_MP_TIMEOUT_SUPPORTED  0x01

typedef VOID *MM_COMPLETION;

typedef struct {
  MM_COMPLETION  Completion;
  EFI_STATUS     Status;
} MM_DISPATCH_COMPLETION_TOKEN;

typedef struct _EFI_MM_MP_PROTOCOL EFI_MM_MP_PROTOCOL;

typedef EFI_STATUS (EFIAPI *EFI_MM_GET_NUMBER_OF_PROCESSORS)(
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  OUT UINTN                    *NumberOfProcessors
  );

typedef EFI_STATUS (EFIAPI *EFI_MM_DISPATCH_PROCEDURE)(
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN EFI_AP_PROCEDURE2         Procedure,
  IN UINTN                     CpuNumber,
  IN UINTN                     TimeoutInMicroseconds,
  IN OUT VOID                  *ProcedureArguments OPTIONAL,
  IN OUT MM_COMPLETION         *Token,
  IN OUT EFI_STATUS            *CPUStatus
  );

typedef EFI_STATUS (EFIAPI *EFI_MM_BROADCAST_PROCEDURE)(
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN EFI_AP_PROCEDURE2         Procedure,
  IN UINTN                     TimeoutInMicroseconds,
  IN OUT VOID                  *ProcedureArguments OPTIONAL,
  IN OUT MM_COMPLETION         *Token,
  IN OUT EFI_STATUS            *CPUStatus
  );

typedef EFI_STATUS (EFIAPI *EFI_MM_SET_STARTUP_PROCEDURE)(
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN EFI_AP_PROCEDURE          Procedure,
  IN OUT VOID                  *ProcedureArguments OPTIONAL
  );

typedef EFI_STATUS (EFIAPI *EFI_CHECK_FOR_PROCEDURE)(
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN MM_COMPLETION             Token
  );

typedef EFI_STATUS (EFIAPI *EFI_WAIT_FOR_PROCEDURE)(
  IN CONST EFI_MM_MP_PROTOCOL  *This,
  IN MM_COMPLETION             Token
  );

struct _EFI_MM_MP_PROTOCOL {
  UINT32                           Revision;
  UINT32                           Attributes;
  EFI_MM_GET_NUMBER_OF_PROCESSORS  GetNumberOfProcessors;
  EFI_MM_DISPATCH_PROCEDURE        DispatchProcedure;
  EFI_MM_BROADCAST_PROCEDURE       BroadcastProcedure;
  EFI_MM_SET_STARTUP_PROCEDURE     SetStartupProcedure;
  EFI_CHECK_FOR_PROCEDURE          CheckForProcedure;
  EFI_WAIT_FOR_PROCEDURE           WaitForProcedure;
};

#endif
