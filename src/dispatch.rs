//! The MM MP services (BEHAVIOUR.md §2) and the legacy MmStartupThisAp (BEHAVIOUR.md §4).
//! EDK2 counterpart: SmmMp.c and the `InternalSmmStartupThisAp` /
//! `InternalSmmStartupAllAPs` family of MpService.c.
//!
//! Every service takes C-style raw pointers (the FFI layer passes them
//! through untouched) and returns the status BEHAVIOUR.md names; it validates
//! every pointer and index before using it.

use core::ffi::c_void;

use crate::broadcast::Broadcasts;
use crate::cpus::OP_REMOVE;
use crate::efi::{ApProcedure, ApProcedure2, MmCompletion, Status};
use crate::instance::Instance;
use crate::mailbox::{Call, Channel, Claim, KIND_LEGACY, KIND_PROCEDURE2};
use crate::platform::Deadline;
use crate::stats::Counter;
use crate::sync::atomic::Ordering;
use crate::sync::Abandon;
use crate::tokens::{Token, TokenState};

/// Write a status word of the caller's (null = nothing to write).
///
/// # Safety
/// A non-null `target` must be valid for a write.
unsafe fn put(target: *mut Status, value: Status) {
    if !target.is_null() {
        // SAFETY: non-null and valid by the caller's contract; volatile
        // because APs and the BSP hand these words to each other.
        unsafe { target.write_volatile(value) }
    }
}

impl Instance {
    /// EFI_MM_MP_PROTOCOL.GetNumberOfProcessors (BEHAVIOUR.md §2.1).
    ///
    /// # Safety
    /// A non-null `number_of_processors` must be valid for a write.
    pub unsafe fn get_number_of_processors(&self, number_of_processors: *mut usize) -> Status {
        if number_of_processors.is_null() {
            return Status::INVALID_PARAMETER;
        }
        // SAFETY: non-null, valid by the caller's contract.
        unsafe { number_of_processors.write(self.number_of_cpus()) };
        Status::SUCCESS
    }

    /// SetStartupProcedure (BEHAVIOUR.md §2.4).
    pub fn set_startup_procedure(&self, procedure: ApProcedure, argument: *mut c_void) -> Status {
        if procedure.is_none() && !argument.is_null() {
            return Status::INVALID_PARAMETER;
        }
        // Relaxed for the argument: published by the Release store of the
        // procedure, which every CPU reads with Acquire before the argument.
        self.startup_argument
            .store(argument as usize, Ordering::Relaxed);
        self.startup_procedure
            .store(procedure.map_or(0, |f| f as usize), Ordering::Release);
        Status::SUCCESS
    }

    /// Run the registered startup procedure on the calling CPU (BEHAVIOUR.md §6.2.1).
    pub fn run_startup_procedure(&self) {
        // Acquire pairs with the Release store in `set_startup_procedure`.
        let procedure = self.startup_procedure.load(Ordering::Acquire);
        if procedure == 0 {
            return;
        }
        let argument = self.startup_argument.load(Ordering::Relaxed) as *mut c_void;
        // SAFETY: only `set_startup_procedure` stores a non-zero value, and
        // it stores an `EFI_AP_PROCEDURE` converted to usize.
        let f: unsafe extern "efiapi" fn(*mut c_void) = unsafe { core::mem::transmute(procedure) };
        // SAFETY: the caller registered this procedure and argument to be
        // called on every CPU at every SMI (EDK2 semantics).
        unsafe { f(argument) }
    }

    /// Common opening of the BSP-only services: an SMI must be in progress
    /// and the caller must not be a known AP. Returns the current BSP.
    #[inline(always)]
    fn bsp_call(&self) -> Result<usize, Status> {
        if !self.in_smi() {
            return Err(Status::NOT_READY);
        }
        let bsp = self.current_bsp();
        if bsp >= self.number_of_cpus() || self.caller_is_ap(bsp) {
            return Err(Status::INVALID_PARAMETER);
        }
        Ok(bsp)
    }

    /// Checks 1–5 of BEHAVIOUR.md §2.2 (shared with §4).
    #[inline(always)]
    fn check_target(&self, cpu: usize, bsp: usize) -> Result<(), Status> {
        if cpu == bsp {
            return Err(Status::INVALID_PARAMETER);
        }
        let state = self.cpu(cpu).ok_or(Status::INVALID_PARAMETER)?;
        if state.is_empty() || !state.is_present() || state.pending_op() == OP_REMOVE {
            return Err(Status::INVALID_PARAMETER);
        }
        Ok(())
    }

    /// Opening of the single-target services (BEHAVIOUR.md §2.2 checks 1–5 after
    /// the BSP-only checks, shared with §4).
    #[inline(always)]
    fn target_call(&self, cpu: usize) -> Result<(), Status> {
        let bsp = self.bsp_call()?;
        self.check_target(cpu, bsp)
    }

    /// Post a DispatchProcedure call on a claimed mailbox: CPUStatus to
    /// EFI_NOT_READY before the AP can start (BEHAVIOUR.md §2.2), then the call,
    /// then the statistics.
    ///
    /// # Safety
    /// A non-null `cpu_status` must be valid for writes until the call
    /// completes.
    #[inline(always)]
    unsafe fn post_procedure(
        &self,
        mailbox: Channel<'_>,
        claim: Claim,
        procedure: usize,
        argument: *mut c_void,
        cpu_status: *mut Status,
        token: u32,
    ) {
        // SAFETY: caller's contract on `cpu_status`.
        unsafe { put(cpu_status, Status::NOT_READY) };
        mailbox.post(
            claim,
            &Call {
                procedure,
                argument,
                kind: KIND_PROCEDURE2,
                status: cpu_status,
                token,
            },
        );
        self.stats().bump(Counter::Dispatches);
    }

    /// Whether `*token` holds a handle of a call that is still running.
    ///
    /// # Safety
    /// A non-null `token` must be valid for a read.
    unsafe fn token_in_use(&self, token: *mut MmCompletion) -> bool {
        if token.is_null() {
            return false;
        }
        // SAFETY: non-null, valid by the caller's contract.
        let handle = unsafe { token.read_volatile() } as usize;
        matches!(self.tokens().lookup(handle), Some((_, t)) if t.state() == TokenState::Running)
    }

    /// Wait until the call in flight on `cpu` finished, or time it out.
    /// One copy for every caller but the blocking fast path.
    #[inline(never)]
    fn wait_call(&self, cpu: usize, deadline: Option<Deadline>) -> Status {
        match self.mailbox(cpu) {
            Some(mailbox) => self.wait_on(mailbox, deadline),
            None => Status::INVALID_PARAMETER,
        }
    }

    /// Wait until the call in flight on `mailbox` finished, or time it out.
    #[inline(always)]
    fn wait_on(&self, mailbox: Channel<'_>, deadline: Option<Deadline>) -> Status {
        let tag = mailbox.current();
        self.wait_for(
            deadline,
            || mailbox.is_done(tag),
            || mailbox.abandon(),
            || mailbox.status_target(),
        )
    }

    /// Wait until `done()`, or after the deadline `abandon()` the call and
    /// report EFI_TIMEOUT in its status word (`target()`) if that won.
    #[inline(always)]
    fn wait_for(
        &self,
        deadline: Option<Deadline>,
        done: impl Fn() -> bool,
        abandon: impl Fn() -> Abandon,
        target: impl Fn() -> *mut Status,
    ) -> Status {
        loop {
            if done() {
                return Status::SUCCESS;
            }
            if self.platform.expired(deadline) {
                match abandon() {
                    Abandon::Abandoned => {
                        // SAFETY: the status target was validated when the
                        // call was posted; we now own it (the AP lost the race).
                        unsafe { put(target(), Status::TIMEOUT) };
                        self.stats().bump(Counter::Timeouts);
                        return Status::TIMEOUT;
                    }
                    Abandon::AlreadyAbandoned => return Status::TIMEOUT,
                    Abandon::AlreadyFree => return Status::SUCCESS,
                    // The AP is storing its result: wait for DONE.
                    Abandon::Finishing => {}
                }
            }
            self.platform.pause();
        }
    }

    /// Claim CPU `cpu`'s mailbox for a call: free of its last call and of
    /// broadcasts (BEHAVIOUR.md §2.2 "busy").
    #[inline(always)]
    fn claim(&self, cpu: usize, mailbox: Channel<'_>) -> Option<Claim> {
        if !self.broadcast_free(cpu) {
            return None;
        }
        mailbox.try_claim()
    }

    /// DispatchProcedure without token and without timeout: the blocking
    /// hand-off docs/PERFORMANCE.md [1] measures. Same checks in the same
    /// order as [`Instance::dispatch_procedure`] (checks 6 and the token's
    /// ALREADY_STARTED cannot apply), written so that everything inlines
    /// into the EFIAPI entry point: no call into System V code there, so
    /// the entry point saves no xmm registers, and no call on the path
    /// from "the AP is done" to "the next call is posted".
    ///
    /// # Safety
    /// A non-null `cpu_status` must be valid for writes until return.
    #[inline(always)]
    pub unsafe fn dispatch_blocking(
        &self,
        procedure: ApProcedure2,
        cpu: usize,
        argument: *mut c_void,
        cpu_status: *mut Status,
    ) -> Status {
        if let Err(e) = self.target_call(cpu) {
            return e;
        }
        let (Some(procedure), Some(mailbox)) = (procedure, self.mailbox(cpu)) else {
            return Status::INVALID_PARAMETER;
        };
        let Some(claim) = self.claim(cpu, mailbox) else {
            return Status::NOT_READY;
        };
        // SAFETY: caller's contract on `cpu_status`.
        unsafe { self.post_procedure(mailbox, claim, procedure as usize, argument, cpu_status, 0) };
        self.wait_on(mailbox, None)
    }

    /// EFI_MM_MP_PROTOCOL.DispatchProcedure (BEHAVIOUR.md §2.2).
    ///
    /// # Safety
    /// Non-null `token` and `cpu_status` must be valid for reads and writes
    /// until the call completes (blocking: until return).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn dispatch_procedure(
        &self,
        procedure: ApProcedure2,
        cpu: usize,
        timeout_us: usize,
        argument: *mut c_void,
        token: *mut MmCompletion,
        cpu_status: *mut Status,
    ) -> Status {
        if let Err(e) = self.target_call(cpu) {
            return e;
        }
        if timeout_us != 0 && !self.platform.has_time_source() {
            return Status::INVALID_PARAMETER;
        }
        let Some(procedure) = procedure else {
            return Status::INVALID_PARAMETER;
        };
        // SAFETY: caller's contract on `token`.
        if unsafe { self.token_in_use(token) } {
            return Status::ALREADY_STARTED;
        }
        let Some(mailbox) = self.mailbox(cpu) else {
            return Status::INVALID_PARAMETER;
        };
        let Some(claim) = self.claim(cpu, mailbox) else {
            return Status::NOT_READY;
        };
        let deadline = self.platform.deadline_after_us(timeout_us as u64);
        let mut link = 0;
        let mut handle = 0;
        if !token.is_null() {
            match self.tokens().alloc(1, deadline) {
                Some((slot, h)) => {
                    link = slot as u32 + 1;
                    handle = h;
                }
                // The claim wrote nothing: dropping it changes nothing.
                None => return Status::OUT_OF_RESOURCES,
            }
        }
        // SAFETY: caller's contract on `cpu_status`.
        unsafe {
            self.post_procedure(
                mailbox,
                claim,
                procedure as usize,
                argument,
                cpu_status,
                link,
            )
        };
        if !token.is_null() {
            // SAFETY: non-null, valid by the caller's contract.
            unsafe { token.write_volatile(handle as MmCompletion) };
            return Status::SUCCESS;
        }
        self.wait_call(cpu, deadline)
    }

    /// EFI_MM_MP_PROTOCOL.BroadcastProcedure (BEHAVIOUR.md §2.3).
    ///
    /// # Safety
    /// A non-null `token` must be valid for reads and writes; a non-null
    /// `cpu_status` must be an array of NumberOfCpus status words, valid
    /// until the call completes.
    pub unsafe fn broadcast_procedure(
        &self,
        procedure: ApProcedure2,
        timeout_us: usize,
        argument: *mut c_void,
        token: *mut MmCompletion,
        cpu_status: *mut Status,
    ) -> Status {
        let bsp = match self.bsp_call() {
            Ok(b) => b,
            Err(e) => return e,
        };
        if timeout_us != 0 && !self.platform.has_time_source() {
            return Status::INVALID_PARAMETER;
        }
        let Some(procedure) = procedure else {
            return Status::INVALID_PARAMETER;
        };
        // SAFETY: caller's contract on `token`.
        if unsafe { self.token_in_use(token) } {
            return Status::ALREADY_STARTED;
        }
        // One snapshot of the present APs; every later step uses only it.
        // The BSP's work is one bit per CPU, 32 per word, unless CPU
        // operations are pending or a CPU of the set may be busy
        // (docs/PERFORMANCE.md [3], src/broadcast.rs).
        let broadcasts = self.broadcasts();
        let count = broadcasts.snapshot(bsp);
        if self.removal_in_snapshot(broadcasts) {
            return Status::INVALID_PARAMETER;
        }
        if broadcasts.snapshot_busy(|i| self.mailbox(i).is_some_and(|m| !m.is_free())) {
            return Status::NOT_READY;
        }
        if count == 0 {
            return Status::NOT_STARTED;
        }
        let deadline = self.platform.deadline_after_us(timeout_us as u64);
        let mut link = 0;
        let mut handle = 0;
        if !token.is_null() {
            match self.tokens().alloc(count, deadline) {
                Some((slot, h)) => {
                    link = slot as u32 + 1;
                    handle = h;
                }
                None => return Status::OUT_OF_RESOURCES,
            }
        }
        if !cpu_status.is_null() {
            for i in 0..self.number_of_cpus() {
                let value = if broadcasts.in_snapshot(i) {
                    Status::NOT_READY
                } else {
                    Status::NOT_STARTED
                };
                // SAFETY: `cpu_status` has NumberOfCpus entries and i < NumberOfCpus.
                unsafe { put(cpu_status.add(i), value) };
            }
        }
        let tag = broadcasts.publish(
            &Call {
                procedure: procedure as usize,
                argument,
                kind: KIND_PROCEDURE2,
                status: cpu_status,
                token: link,
            },
            count,
        );
        self.stats().bump(Counter::Broadcasts);
        if !token.is_null() {
            // SAFETY: non-null, valid by the caller's contract.
            unsafe { token.write_volatile(handle as MmCompletion) };
            return Status::SUCCESS;
        }
        let mut result = Status::SUCCESS;
        broadcasts.for_each_member(|i| {
            let status = self.wait_for(
                deadline,
                || broadcasts.flag_free(i, tag),
                || broadcasts.give_up(i, tag, false),
                || broadcasts.status_slot(i),
            );
            if status == Status::TIMEOUT {
                result = Status::TIMEOUT;
            }
        });
        result
    }

    /// BEHAVIOUR.md §2.3 step 5: whether a CPU of the snapshot has a pending
    /// removal. Only looked for while CPU operations are pending.
    #[inline(always)]
    fn removal_in_snapshot(&self, broadcasts: Broadcasts<'_>) -> bool {
        // Acquire pairs with the Release in `set_pending`.
        if !self.control().ops_pending.load(Ordering::Acquire) {
            return false;
        }
        let mut removal = false;
        broadcasts.for_each_in_snapshot(|i| {
            removal |= self.cpu(i).is_some_and(|s| s.pending_op() == OP_REMOVE);
        });
        removal
    }

    /// Time out every AP still running the call of token `slot`.
    /// Returns the token's state afterwards.
    fn expire_token(&self, slot: usize, token: &Token) -> TokenState {
        let link = slot as u32 + 1;
        for i in 0..self.number_of_cpus() {
            let Some(mailbox) = self.mailbox(i) else {
                continue;
            };
            if mailbox.token() != link {
                continue;
            }
            loop {
                match mailbox.abandon() {
                    Abandon::Abandoned => {
                        // SAFETY: validated when posted; ours now.
                        unsafe { put(mailbox.status_target(), Status::TIMEOUT) };
                        break;
                    }
                    Abandon::Finishing => self.platform.pause(),
                    Abandon::AlreadyFree | Abandon::AlreadyAbandoned => break,
                }
            }
        }
        let broadcasts = self.broadcasts();
        if broadcasts.token() == link {
            let tag = broadcasts.tag();
            broadcasts.for_each_member(|i| loop {
                match broadcasts.give_up(i, tag, false) {
                    Abandon::Abandoned => {
                        // SAFETY: validated when published; ours now.
                        unsafe { put(broadcasts.status_slot(i), Status::TIMEOUT) };
                        break;
                    }
                    Abandon::Finishing => self.platform.pause(),
                    Abandon::AlreadyFree | Abandon::AlreadyAbandoned => break,
                }
            });
        }
        if token.state() == TokenState::Running {
            token.mark_timed_out();
            self.stats().bump(Counter::Timeouts);
        }
        token.state()
    }

    /// Look at a token: its state, applying its deadline when the caller
    /// may act for the BSP. `None` = not a live handle.
    fn poll_token(&self, handle: MmCompletion) -> Option<(&Token, TokenState)> {
        let (slot, token) = self.tokens().lookup(handle as usize)?;
        let mut state = token.state();
        if state == TokenState::Running
            && self.platform.expired(token.deadline())
            && self.in_smi()
            && !self.caller_is_ap(self.current_bsp())
        {
            state = self.expire_token(slot, token);
        }
        if state != TokenState::Running {
            token.mark_observed();
        }
        Some((token, state))
    }

    /// EFI_MM_MP_PROTOCOL.CheckForProcedure (BEHAVIOUR.md §2.5).
    pub fn check_for_procedure(&self, token: MmCompletion) -> Status {
        if token.is_null() {
            return Status::INVALID_PARAMETER;
        }
        match self.poll_token(token) {
            None => Status::NOT_FOUND,
            Some((_, TokenState::Done)) => Status::SUCCESS,
            Some((_, TokenState::TimedOut)) => Status::TIMEOUT,
            Some((_, TokenState::Running)) => Status::NOT_READY,
        }
    }

    /// EFI_MM_MP_PROTOCOL.WaitForProcedure (BEHAVIOUR.md §2.6).
    pub fn wait_for_procedure(&self, token: MmCompletion) -> Status {
        loop {
            let status = self.check_for_procedure(token);
            if status != Status::NOT_READY {
                return status;
            }
            self.platform.pause();
        }
    }

    /// `MmMpGetTokenResult`: NOT_FOUND / NOT_READY / SUCCESS with the
    /// overall result (SUCCESS, the first failure, or EFI_TIMEOUT).
    ///
    /// # Safety
    /// A non-null `result` must be valid for a write.
    pub unsafe fn get_token_result(&self, token: MmCompletion, result: *mut Status) -> Status {
        if token.is_null() || result.is_null() {
            return Status::INVALID_PARAMETER;
        }
        let value = match self.poll_token(token) {
            None => return Status::NOT_FOUND,
            Some((_, TokenState::Running)) => return Status::NOT_READY,
            Some((t, TokenState::Done)) => t.result(),
            Some((_, TokenState::TimedOut)) => Status::TIMEOUT,
        };
        // SAFETY: non-null, valid by the caller's contract.
        unsafe { result.write(value) };
        Status::SUCCESS
    }

    /// gMmst->MmStartupThisAp (`blocking` = PcdCpuSmmBlockStartupThisAp)
    /// and EDK2's internal SmmBlockingStartupThisAp (BEHAVIOUR.md §4).
    pub fn startup_this_ap(
        &self,
        procedure: ApProcedure,
        cpu: usize,
        argument: *mut c_void,
        blocking: bool,
    ) -> Status {
        if let Err(e) = self.target_call(cpu) {
            return e;
        }
        let Some(procedure) = procedure else {
            return Status::INVALID_PARAMETER;
        };
        let Some(mailbox) = self.mailbox(cpu) else {
            return Status::INVALID_PARAMETER;
        };
        // EDK2 waits for a busy AP; we bound that wait by the sync timeout
        // when there is a time source, and never overwrite a busy mailbox.
        let deadline = self.platform.deadline_after_us(self.settings.timeout1_us);
        let claim = loop {
            if let Some(claim) = self.claim(cpu, mailbox) {
                break claim;
            }
            if self.platform.expired(deadline) {
                self.stats().bump(Counter::Timeouts);
                return Status::TIMEOUT;
            }
            self.platform.pause();
        };
        self.stats().bump(Counter::Dispatches);
        mailbox.post(
            claim,
            &Call {
                procedure: procedure as usize,
                argument,
                kind: KIND_LEGACY,
                status: core::ptr::null_mut(),
                token: 0,
            },
        );
        if blocking {
            return self.wait_call(cpu, None);
        }
        Status::SUCCESS
    }
}
