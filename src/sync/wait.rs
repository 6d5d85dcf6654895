//! How a CPU waits: the platform's `CpuPause` if it has one, else the
//! pause instruction. Under loom every wait is a yield so that spin loops
//! terminate in the model.

use core::ffi::c_void;

/// `VOID (EFIAPI *CpuPause)(VOID *Context)`.
pub type PauseFn = Option<unsafe extern "efiapi" fn(context: *mut c_void)>;

/// One step of a wait loop.
#[inline]
pub fn pause(hook: PauseFn, context: *mut c_void) {
    #[cfg(loom)]
    {
        let _ = (hook, context);
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    match hook {
        // SAFETY: the integrator supplied this callback in MM_MP_PLATFORM
        // together with `context`; the contract of SPEC §11 is that it may
        // be called from any CPU at any time with that context.
        Some(f) => unsafe { f(context) },
        None => core::hint::spin_loop(),
    }
}
