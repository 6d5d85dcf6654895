/** @file
  Test stand-in for EDK2's <Uefi.h>, written for mm-mp's header test
  (tests/c/edk2_mode.c). It is NOT EDK2: it declares only what
  include/mm_mp.h needs, under the names EDK2 uses, the way an X64 GCC
  build of EDK2 sees them (MDE_CPU_X64, EFIAPI = ms_abi, UINTN = unsigned
  long long rather than the host's uintptr_t).

  SPDX-License-Identifier: BSD-2-Clause-Patent
**/

#ifndef STUB_UEFI_H_
#define STUB_UEFI_H_

/* ProcessorBind.h part. -DSTUB_NO_MDE_CPU leaves the CPU macro out, so the
   test can check the explicit MM_MP_USE_EDK2_TYPES switch. */
#ifndef STUB_NO_MDE_CPU
#define MDE_CPU_X64
#endif

typedef unsigned long long  UINT64;
typedef long long           INT64;
typedef unsigned int        UINT32;
typedef int                 INT32;
typedef unsigned short      UINT16;
typedef short               INT16;
typedef unsigned char       UINT8;
typedef signed char         INT8;
typedef unsigned char       BOOLEAN;
typedef char                CHAR8;
typedef unsigned short      CHAR16;
typedef UINT64              UINTN;
typedef INT64               INTN;

#define EFIAPI  __attribute__((ms_abi))
#define MAX_BIT 0x8000000000000000ULL

/* Base.h part. */
#define VOID     void
#define CONST    const
#define IN
#define OUT
#define OPTIONAL
#define TRUE     ((BOOLEAN)(1==1))
#define FALSE    ((BOOLEAN)(0==1))
#define NULL     ((VOID *) 0)

typedef struct {
  UINT32  Data1;
  UINT16  Data2;
  UINT16  Data3;
  UINT8   Data4[8];
} GUID;

typedef UINTN RETURN_STATUS;
#define ENCODE_ERROR(StatusCode)  ((RETURN_STATUS)(MAX_BIT | (StatusCode)))
#define RETURN_ERROR(StatusCode)  (((INTN)(RETURN_STATUS)(StatusCode)) < 0)

/* UefiBaseType.h part. */
typedef GUID           EFI_GUID;
typedef RETURN_STATUS  EFI_STATUS;
#define EFI_ERROR(A)   RETURN_ERROR (A)

#define EFI_SUCCESS            ((RETURN_STATUS) 0)
#define EFI_INVALID_PARAMETER  ENCODE_ERROR (2)
#define EFI_UNSUPPORTED        ENCODE_ERROR (3)
#define EFI_BUFFER_TOO_SMALL   ENCODE_ERROR (5)
#define EFI_NOT_READY          ENCODE_ERROR (6)
#define EFI_DEVICE_ERROR       ENCODE_ERROR (7)
#define EFI_OUT_OF_RESOURCES   ENCODE_ERROR (9)
#define EFI_NOT_FOUND          ENCODE_ERROR (14)
#define EFI_TIMEOUT            ENCODE_ERROR (18)
#define EFI_NOT_STARTED        ENCODE_ERROR (19)
#define EFI_ALREADY_STARTED    ENCODE_ERROR (20)
#define EFI_ABORTED            ENCODE_ERROR (21)

#endif
