//! EDK2's counting semaphore (SmmCpuSyncLib `InternalWaitForSemaphore`,
//! `InternalReleaseSemaphore`, `InternalLockdownSemaphore`), BEHAVIOUR.md §6.6.

use super::atomic::{AtomicU32, Ordering};

/// The "locked" value: a locked semaphore can no longer be released.
pub const SEMAPHORE_LOCKED: u32 = u32::MAX;

/// A 32-bit counting semaphore with lock-down.
///
/// EDK2 counterpart: the `volatile UINT32 *` semaphores of SmmCpuSyncLib
/// (the arrival counter and the per-CPU `Run` semaphores).
#[repr(C)]
pub struct Semaphore(AtomicU32);

impl Semaphore {
    pub fn new(value: u32) -> Self {
        Semaphore(AtomicU32::new(value))
    }

    /// Take one count if there is one; `false` when the count is zero (or
    /// the semaphore is locked, which can never be "taken").
    ///
    /// This is the non-blocking half of `WaitForSemaphore`; callers loop on
    /// it with [`super::pause`].
    pub fn try_wait(&self) -> bool {
        // Relaxed is enough for the first look: the value only feeds the
        // compare-exchange below, which is the operation that synchronises.
        let mut value = self.0.load(Ordering::Relaxed);
        loop {
            if value == 0 || value == SEMAPHORE_LOCKED {
                return false;
            }
            // Acquire on success: everything the releasing CPU wrote before
            // its Release increment (mailbox contents, flags) is visible to
            // us once we took its count. Relaxed on failure: we only retry.
            match self.0.compare_exchange_weak(
                value,
                value - 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => value = now,
            }
        }
    }

    /// Add one count unless locked. Returns the new count, or `None` when
    /// the semaphore is locked (EDK2 returns 0 in that case).
    pub fn release(&self) -> Option<u32> {
        let mut value = self.0.load(Ordering::Relaxed);
        loop {
            if value == SEMAPHORE_LOCKED || value == SEMAPHORE_LOCKED - 1 {
                // LOCKED - 1 would turn into LOCKED: EDK2 treats that as
                // locked as well (it cannot happen with < 2^32-1 CPUs).
                return None;
            }
            // AcqRel on success: Release publishes this CPU's earlier writes
            // to whoever takes the count (paired with the Acquire of
            // `try_wait`/`lock_down`); Acquire keeps the RMW chain of all
            // releasers ordered for a later `lock_down` that reads it.
            match self.0.compare_exchange_weak(
                value,
                value + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(value + 1),
                Err(now) => value = now,
            }
        }
    }

    /// Take one count without waiting for it to be available; used for
    /// check-out. `None` when locked; `Some(false)` when already zero.
    pub fn decrement_unless_locked(&self) -> Option<bool> {
        let mut value = self.0.load(Ordering::Relaxed);
        loop {
            if value == SEMAPHORE_LOCKED {
                return None;
            }
            if value == 0 {
                return Some(false);
            }
            // AcqRel: a check-out is ordered against the lock-down exactly
            // like a check-in (the BSP must see a consistent count).
            match self.0.compare_exchange_weak(
                value,
                value - 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(true),
                Err(now) => value = now,
            }
        }
    }

    /// Lock the semaphore and return the count it held.
    pub fn lock_down(&self) -> u32 {
        // AcqRel: Acquire makes every check-in counted in the returned value
        // visible to the locking CPU; Release orders the lock before what the
        // locker does next (late CPUs that fail to check in see it).
        self.0.swap(SEMAPHORE_LOCKED, Ordering::AcqRel)
    }

    /// Current value (may be [`SEMAPHORE_LOCKED`]).
    pub fn value(&self) -> u32 {
        // Acquire: callers that decide on the value (arrival counts) must see
        // what the CPUs that incremented it wrote before.
        self.0.load(Ordering::Acquire)
    }

    /// Set the value (reset at the end of an SMI, initialisation).
    pub fn set(&self, value: u32) {
        // Release: the reset is published together with every earlier write
        // of the resetting CPU (the end-of-SMI state).
        self.0.store(value, Ordering::Release)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn wait_release_lock() {
        let s = Semaphore::new(0);
        assert!(!s.try_wait());
        assert_eq!(s.release(), Some(1));
        assert_eq!(s.release(), Some(2));
        assert!(s.try_wait());
        assert_eq!(s.value(), 1);
        assert_eq!(s.lock_down(), 1);
        assert_eq!(s.release(), None);
        assert!(!s.try_wait());
        assert_eq!(s.decrement_unless_locked(), None);
        assert_eq!(s.value(), SEMAPHORE_LOCKED);
        s.set(0);
        assert_eq!(s.decrement_unless_locked(), Some(false));
        assert_eq!(s.release(), Some(1));
        assert_eq!(s.decrement_unless_locked(), Some(true));
        assert_eq!(s.value(), 0);
    }

    #[test]
    fn release_below_locked_is_refused() {
        let s = Semaphore::new(SEMAPHORE_LOCKED - 1);
        assert_eq!(s.release(), None);
        assert_eq!(s.value(), SEMAPHORE_LOCKED - 1);
    }
}
