/** @file
  EDK2 mode of include/mm_mp.h (BEHAVIOUR.md §11), driven by tests/c_header.rs with
  -Itests/c/edk2-stub (our own minimal stand-ins for EDK2's headers) and
    -std=c99 -pedantic -Wall -Wextra -Werror -Werror=incompatible-pointer-types
  (C99 makes even an identical typedef repeated an error, so any type the
  header redefined instead of reusing fails the build), and again with
  -std=c11.

  It includes only <Uefi.h> and <PiMm.h>, as an MM driver would, then the
  header, and checks that:
  * the header noticed EDK2 (MM_MP_EDK2_TYPES) and pulled in the three
    protocol headers itself;
  * its declarations use EDK2's types (UINTN is the stub's unsigned long
    long, not the host's uintptr_t; protocol and procedure types are the
    stub's);
  * the library, called through those EDK2-typed declarations, answers with
    the statuses of BEHAVIOUR.md §11.
**/

#include <Uefi.h>
#include <PiMm.h>

#include "mm_mp.h"

#if !defined(MM_MP_EDK2_TYPES)
#error "mm_mp.h did not detect the EDK2 headers"
#endif
#if !defined(STUB_PROTOCOL_MM_MP_H_) || !defined(STUB_PROTOCOL_MP_SERVICE_H_) || \
    !defined(STUB_PROTOCOL_SMM_CPU_SERVICE_H_)
#error "mm_mp.h did not include the EDK2 protocol headers"
#endif

/* C99-friendly static assertions. */
#define STATIC_CHECK(Name, Cond)  typedef char StaticCheck_##Name[(Cond) ? 1 : -1]

STATIC_CHECK (UintnIsEdk2s, __builtin_types_compatible_p (UINTN, unsigned long long));
STATIC_CHECK (StatusIsEdk2s, __builtin_types_compatible_p (EFI_STATUS, RETURN_STATUS));
STATIC_CHECK (InvalidParameter, EFI_INVALID_PARAMETER == 0x8000000000000002ULL);
STATIC_CHECK (ConfigSize, sizeof (MM_MP_CONFIG) == 64);
STATIC_CHECK (PlatformSize, sizeof (MM_MP_PLATFORM) == 24 + 20 * 8);
STATIC_CHECK (ProcessorInfoIsEdk2s,
              __builtin_types_compatible_p (__typeof__ (((MM_MP_CONFIG *)0)->ProcessorInfo),
                                            CONST EFI_PROCESSOR_INFORMATION *));

/* Protocol getters return EDK2's protocol types. */
typedef EFI_MM_MP_PROTOCOL *(EFIAPI *GET_MM_MP)(MM_MP_INSTANCE *Instance);
typedef EFI_STATUS (EFIAPI *STARTUP_THIS_AP)(MM_MP_INSTANCE *Instance, EFI_AP_PROCEDURE Procedure,
                                            UINTN CpuIndex, VOID *ProcArguments);
typedef EFI_STATUS (EFIAPI *GET_TOKEN_RESULT)(MM_MP_INSTANCE *Instance, MM_COMPLETION Token,
                                             EFI_STATUS *Result);

static VOID EFIAPI
FoundationEntry (VOID *Context, UINTN BspIndex)
{
  (void)Context;
  (void)BspIndex;
}

static EFI_STATUS EFIAPI
RegisterHandler (VOID *Context, INTN ExceptionType, EFI_CPU_INTERRUPT_HANDLER Handler)
{
  (void)Context;
  (void)ExceptionType;
  (void)Handler;
  return EFI_UNSUPPORTED;
}

static EFI_STATUS EFIAPI
GetLocation (VOID *Context, UINT64 ApicId, EFI_CPU_PHYSICAL_LOCATION *Location,
             EFI_CPU_PHYSICAL_LOCATION2 *Location2)
{
  (void)Context;
  (void)ApicId;
  (void)Location;
  (void)Location2;
  return EFI_NOT_FOUND;
}

/* Cache-line aligned storage for a small instance, without C11 features. */
static union {
  UINT8   Bytes[64 * 1024];
  UINT64  Align;
} mRegion __attribute__((aligned (64)));

int
main (void)
{
  GET_MM_MP                  GetMmMp = MmMpGetMmMpProtocol;
  STARTUP_THIS_AP            Startup = MmMpStartupThisAp;
  GET_TOKEN_RESULT           TokenResult = MmMpGetTokenResult;
  EFI_PROCESSOR_INFORMATION  Info[2];
  MM_MP_CONFIG               Config;
  MM_MP_PLATFORM             Platform;
  MM_MP_INSTANCE             *Instance = NULL;
  EFI_MM_MP_PROTOCOL         *Mp;
  UINTN                      Size = 0;
  UINTN                      Count = 0;
  EFI_STATUS                 Result;
  UINTN                      Index;
  int                        Failures = 0;
  UINT8                      *Bytes;

  Bytes = (UINT8 *)&Config;
  for (Index = 0; Index < sizeof (Config); Index++) {
    Bytes[Index] = 0;
  }
  Bytes = (UINT8 *)&Platform;
  for (Index = 0; Index < sizeof (Platform); Index++) {
    Bytes[Index] = 0;
  }
  Bytes = (UINT8 *)Info;
  for (Index = 0; Index < sizeof (Info); Index++) {
    Bytes[Index] = 0;
  }
  Info[0].ProcessorId = 0;
  Info[0].StatusFlag  = PROCESSOR_AS_BSP_BIT | PROCESSOR_ENABLED_BIT | PROCESSOR_HEALTH_STATUS_BIT;
  Info[1].ProcessorId = INVALID_APIC_ID;

  Config.Revision      = MM_MP_CONFIG_REVISION;
  Config.NumberOfCpus  = 2;
  Config.MaxTokens     = 4;
  Config.CacheLineSize = 64;
  Config.SyncMode      = MM_MP_SYNC_MODE_RELAXED;
  Config.BspElection   = TRUE;
  Config.ProcessorInfo = Info;
  Config.HotPlugApicId = NULL;

  Platform.Revision                 = MM_MP_PLATFORM_REVISION;
  Platform.MmFoundationEntry        = FoundationEntry;
  Platform.RegisterExceptionHandler = RegisterHandler;
  Platform.GetProcessorLocation     = GetLocation;

  if (MmMpGetRequiredSize (NULL, &Size) != EFI_INVALID_PARAMETER) {
    Failures++;
  }
  if ((MmMpGetRequiredSize (&Config, &Size) != EFI_SUCCESS) || (Size > sizeof (mRegion))) {
    Failures++;
  } else if (MmMpInitialize (mRegion.Bytes, Size, &Config, &Platform, &Instance) != EFI_SUCCESS) {
    Failures++;
  } else {
    Mp = GetMmMp (Instance);
    if ((Mp == NULL) || (Mp->GetNumberOfProcessors (Mp, &Count) != EFI_SUCCESS) || (Count != 2)) {
      Failures++;
    }
    if (Startup (Instance, NULL, 1, NULL) != EFI_NOT_READY) {
      Failures++;
    }
    if (TokenResult (Instance, (MM_COMPLETION)(UINTN)0x1234, &Result) != EFI_NOT_FOUND) {
      Failures++;
    }
  }

  return Failures == 0 ? 0 : 1;
}
