//! How a CPU waits: the platform's `CpuPause` if it has one, else the
//! pause instruction. Under loom every wait is a yield so that spin loops
//! terminate in the model.

use core::ffi::c_void;

/// `VOID (EFIAPI *CpuPause)(VOID *Context)`.
pub type PauseFn = Option<unsafe extern "efiapi" fn(context: *mut c_void)>;

/// One step of a wait loop.
///
/// # Safety
/// `hook`, when present, must be callable with `context` from any CPU at
/// any time (the integrator's `CpuPause` and `Context` of MM_MP_PLATFORM).
#[inline]
pub unsafe fn pause(hook: PauseFn, context: *mut c_void) {
    #[cfg(loom)]
    {
        let _ = (hook, context);
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    match hook {
        // SAFETY: the caller's contract (see above).
        Some(f) => unsafe { f(context) },
        None => core::hint::spin_loop(),
    }
}
