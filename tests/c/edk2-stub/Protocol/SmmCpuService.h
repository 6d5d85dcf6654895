/** @file
  Test stand-in for EDK2's <Protocol/SmmCpuService.h> (see ../Uefi.h): the
  SMM CPU service and rendezvous protocols, plus the exception-handler types
  EDK2 takes from its debug-support protocol header.

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#ifndef STUB_PROTOCOL_SMM_CPU_SERVICE_H_
#define STUB_PROTOCOL_SMM_CPU_SERVICE_H_

#include <Protocol/MpService.h>

/* Exception handler types. */
typedef INTN EFI_EXCEPTION_TYPE;

typedef struct { UINT64 Rip; } STUB_SYSTEM_CONTEXT_X64;
typedef struct { UINT32 Eip; } STUB_SYSTEM_CONTEXT_IA32;

typedef union {
  STUB_SYSTEM_CONTEXT_IA32  *SystemContextIa32;
  STUB_SYSTEM_CONTEXT_X64   *SystemContextX64;
} EFI_SYSTEM_CONTEXT;

typedef VOID (EFIAPI *EFI_CPU_INTERRUPT_HANDLER)(
  IN CONST EFI_EXCEPTION_TYPE  InterruptType,
  IN CONST EFI_SYSTEM_CONTEXT  SystemContext
  );

/* SMM CPU service protocol. */
#define EFI_SMM_CPU_SERVICE_PROTOCOL_GUID \
  { 0x1d202cab, 0xc8ab, 0x4d5c, { 0x94, 0xf7, 0x3c, 0xfc, 0xc0, 0xd3, 0xd3, 0x35 } }

typedef struct _EFI_SMM_CPU_SERVICE_PROTOCOL EFI_SMM_CPU_SERVICE_PROTOCOL;

typedef EFI_STATUS (EFIAPI *EFI_SMM_GET_PROCESSOR_INFO)(
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN UINTN                               ProcessorNumber,
  OUT EFI_PROCESSOR_INFORMATION          *ProcessorInfoBuffer
  );

typedef EFI_STATUS (EFIAPI *EFI_SMM_SWITCH_BSP)(
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN UINTN                               ProcessorNumber
  );

typedef EFI_STATUS (EFIAPI *EFI_SMM_ADD_PROCESSOR)(
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN UINT64                              ProcessorId,
  OUT UINTN                              *ProcessorNumber
  );

typedef EFI_STATUS (EFIAPI *EFI_SMM_REMOVE_PROCESSOR)(
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN UINTN                               ProcessorNumber
  );

typedef EFI_STATUS (EFIAPI *EFI_SMM_WHOAMI)(
  IN CONST EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  OUT UINTN                              *ProcessorNumber
  );

typedef EFI_STATUS (EFIAPI *EFI_SMM_REGISTER_EXCEPTION_HANDLER)(
  IN EFI_SMM_CPU_SERVICE_PROTOCOL  *This,
  IN EFI_EXCEPTION_TYPE            ExceptionType,
  IN EFI_CPU_INTERRUPT_HANDLER     InterruptHandler
  );

struct _EFI_SMM_CPU_SERVICE_PROTOCOL {
  EFI_SMM_GET_PROCESSOR_INFO          GetProcessorInfo;
  EFI_SMM_SWITCH_BSP                  SwitchBsp;
  EFI_SMM_ADD_PROCESSOR               AddProcessor;
  EFI_SMM_REMOVE_PROCESSOR            RemoveProcessor;
  EFI_SMM_WHOAMI                      WhoAmI;
  EFI_SMM_REGISTER_EXCEPTION_HANDLER  RegisterExceptionHandler;
};

/* SMM CPU rendezvous protocol. */
#define EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL_GUID \
  { 0xaa00d50b, 0x4911, 0x428f, { 0xb9, 0x1a, 0xa5, 0x9d, 0xdb, 0x13, 0xe2, 0x4c } }

typedef struct _EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL;

typedef EFI_STATUS (EFIAPI *EDKII_WAIT_FOR_ALL_PROCESSOR)(
  IN EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL  *This,
  IN BOOLEAN                            BlockingMode
  );

struct _EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL {
  EDKII_WAIT_FOR_ALL_PROCESSOR  WaitForAllProcessor;
};

#endif
