//! The `MmMpSync*` exports (BEHAVIOUR.md §7, §11) through the C ABI: set-up rules,
//! hostile arguments, and EDK2's BSP/AP flow on real threads.
mod common;

use std::ffi::c_void;

use mm_mp::efi::Status;
use mm_mp::ffi::*;

fn context(cpus: usize) -> (Vec<u8>, *mut MmMpSyncContext) {
    let (mem, _, _, ctx) = common::new_sync_context(cpus);
    (mem, ctx)
}

#[test]
fn set_up_rules() {
    let mut size = 0usize;
    // SAFETY: NULL and valid pointers are the inputs under test.
    unsafe {
        assert_eq!(
            MmMpSyncGetRequiredSize(4, 64, std::ptr::null_mut()),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            MmMpSyncGetRequiredSize(0, 64, &mut size),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            MmMpSyncGetRequiredSize(4, 48, &mut size),
            Status::INVALID_PARAMETER
        );
        assert!(MmMpSyncGetRequiredSize(usize::MAX / 2, 64, &mut size).is_error());
        assert_eq!(MmMpSyncGetRequiredSize(4, 0, &mut size), Status::SUCCESS);
        assert!(size >= 5 * 64, "counter + 4 run semaphores, one line each");
        let mut mem = vec![0xA5u8; size + 128];
        let off = (64 - mem.as_ptr() as usize % 64) % 64;
        let buf = mem.as_mut_ptr().add(off) as *mut c_void;
        let mut ctx = std::ptr::null_mut();
        assert_eq!(
            MmMpSyncContextInit(buf, size - 1, 4, 64, &mut ctx),
            Status::BUFFER_TOO_SMALL
        );
        assert_eq!(
            MmMpSyncContextInit(
                (buf as *mut u8).add(8) as *mut c_void,
                size,
                4,
                64,
                &mut ctx
            ),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            MmMpSyncContextInit(std::ptr::null_mut(), size, 4, 64, &mut ctx),
            Status::INVALID_PARAMETER
        );
        assert!(mem.iter().all(|&b| b == 0xA5), "nothing written on error");
        // NULL context: no-ops and INVALID_PARAMETER, never a crash.
        let null = std::ptr::null_mut();
        MmMpSyncContextReset(null);
        assert_eq!(MmMpSyncGetArrivedCpuCount(null), 0);
        assert_eq!(MmMpSyncCheckInCpu(null, 0), Status::INVALID_PARAMETER);
        assert_eq!(MmMpSyncCheckOutCpu(null, 0), Status::INVALID_PARAMETER);
        MmMpSyncLockDoor(null, 0, &mut size);
        MmMpSyncWaitForAPs(null, 1, 0);
        MmMpSyncReleaseOneAp(null, 1, 0);
        MmMpSyncWaitForBsp(null, 1, 0);
        MmMpSyncReleaseBsp(null, 1, 0);
    }
}

#[test]
fn check_in_lock_and_hostile_indices() {
    let (_mem, ctx) = context(4);
    // SAFETY: valid context from MmMpSyncContextInit.
    unsafe {
        assert_eq!(MmMpSyncCheckInCpu(ctx, 0), Status::SUCCESS);
        assert_eq!(MmMpSyncCheckInCpu(ctx, 1), Status::SUCCESS);
        assert_eq!(MmMpSyncCheckInCpu(ctx, 4), Status::INVALID_PARAMETER);
        assert_eq!(
            MmMpSyncCheckInCpu(ctx, usize::MAX),
            Status::INVALID_PARAMETER
        );
        assert_eq!(MmMpSyncGetArrivedCpuCount(ctx), 2);
        assert_eq!(MmMpSyncCheckOutCpu(ctx, 1), Status::SUCCESS);
        assert_eq!(MmMpSyncCheckInCpu(ctx, 2), Status::SUCCESS);
        let mut count = 0usize;
        MmMpSyncLockDoor(ctx, 0, &mut count);
        assert_eq!(count, 2);
        assert_eq!(MmMpSyncCheckInCpu(ctx, 3), Status::ABORTED, "door locked");
        assert_eq!(MmMpSyncCheckOutCpu(ctx, 2), Status::ABORTED, "door locked");
        assert_eq!(MmMpSyncGetArrivedCpuCount(ctx), 2, "count at lock time");
        // Hostile pairs change nothing (no count planted anywhere).
        MmMpSyncReleaseOneAp(ctx, 0, 0);
        MmMpSyncReleaseOneAp(ctx, 9, 0);
        MmMpSyncReleaseBsp(ctx, 1, 1);
        MmMpSyncReleaseBsp(ctx, 1, 9);
        MmMpSyncWaitForAPs(ctx, 4, 0); // more APs than CPUs: returns at once
        MmMpSyncWaitForBsp(ctx, 2, 2); // same CPU: returns at once
        MmMpSyncContextReset(ctx);
        assert_eq!(MmMpSyncGetArrivedCpuCount(ctx), 0);
        assert_eq!(
            MmMpSyncCheckInCpu(ctx, 3),
            Status::SUCCESS,
            "door open again"
        );
    }
}

/// EDK2's flow (BSP: ReleaseOneAp → AP: WaitForBsp; AP: ReleaseBsp → BSP:
/// WaitForAPs) through the exports, 3 CPUs, many rounds.
#[test]
fn edk2_flow_through_the_exports() {
    const ROUNDS: usize = 200;
    let (_mem, ctx) = context(3);
    let addr = ctx as usize;
    let aps: Vec<_> = (1..3)
        .map(|cpu| {
            std::thread::spawn(move || {
                let ctx = addr as *mut MmMpSyncContext;
                for _ in 0..ROUNDS {
                    // SAFETY: the context outlives the threads (joined below).
                    unsafe {
                        MmMpSyncReleaseBsp(ctx, cpu, 0);
                        MmMpSyncWaitForBsp(ctx, cpu, 0);
                    }
                }
            })
        })
        .collect();
    for _ in 0..ROUNDS {
        // SAFETY: valid context.
        unsafe {
            MmMpSyncWaitForAPs(ctx, 2, 0);
            MmMpSyncReleaseOneAp(ctx, 1, 0);
            MmMpSyncReleaseOneAp(ctx, 2, 0);
        }
    }
    for t in aps {
        t.join().unwrap();
    }
    // Every run semaphore is back at 0: one more round would block, so
    // check through the Rust view of the same context.
    // SAFETY: valid context.
    let c = unsafe { mm_mp::sync_lib::SyncContext::from_ptr(ctx as *const _) }.unwrap();
    for cpu in 0..3 {
        assert_eq!(c.view().run(cpu).unwrap().value(), 0);
    }
}

/// BEHAVIOUR.md §7: the largest NumberOfCpus a sync context takes is
/// 2^32 − 2 (the arrival counter's all-ones value means "locked").
#[test]
fn sync_context_size_at_the_cpu_limit() {
    let mut size = 0usize;
    // SAFETY: valid out-pointer.
    let st = unsafe { MmMpSyncGetRequiredSize((1usize << 32) - 2, 64, &mut size) };
    assert_eq!(st, Status::SUCCESS);
    assert!(size >= ((1usize << 32) - 2) * 64);
}
