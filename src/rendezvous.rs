//! The SMI rendezvous (SPEC §6): entry, BSP election, BSP and AP paths.
//! EDK2 counterpart: `SmiRendezvous`, `BSPHandler`, `APHandler` and
//! `SmmWaitForApArrival` of MpService.c.
//!
//! Every CPU's path is a state machine: [`Instance::rendezvous_step`]
//! advances the calling CPU as far as it can without waiting and returns
//! [`Poll::Pending`] where EDK2 would spin. `MmMpSmiRendezvous` is the
//! loop `while step() == Pending { CpuPause() }`. The same code therefore
//! runs on real CPUs, on host threads, and in deterministic tests where
//! one thread steps every simulated CPU in the order the test picks.
//!
//! Phase numbers are stored per CPU in `CpuState::phase`.

use crate::instance::{Instance, NO_BSP};
use crate::platform::{Deadline, LOG_WARN};
use crate::sync::atomic::Ordering;

/// Result of one step.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Poll {
    /// The CPU has to wait; call `rendezvous_step` again later.
    Pending,
    /// The CPU may leave SMM.
    Ready,
}

/// Not in an SMI (or just left it).
pub const PHASE_IDLE: u32 = 0;
/// Checked in too late (door locked): wait for the SMI to end (§6.2.4).
pub const PHASE_LATE: u32 = 1;
/// AP: waiting for "BSP inside", first timeout (§6.4.1).
pub const PHASE_AP_WAIT_BSP: u32 = 2;
/// AP: sent the BSP an SMI IPI, second timeout (§6.4.1).
pub const PHASE_AP_WAIT_BSP2: u32 = 3;
/// AP, traditional: arrived at barrier 1, waiting for the release (§6.4.2).
pub const PHASE_AP_SYNC: u32 = 4;
/// AP: in the dispatch loop (§6.4.3).
pub const PHASE_AP_LOOP: u32 = 5;
/// AP: arrived at the final barrier, waiting for the end of the SMI (§6.2.7).
pub const PHASE_AP_EXIT: u32 = 6;
/// BSP, traditional: waiting for APs to arrive, first timeout (§6.5).
pub const PHASE_BSP_ARRIVAL: u32 = 10;
/// BSP: SMI IPIs sent, second timeout (§6.5).
pub const PHASE_BSP_ARRIVAL2: u32 = 11;
/// BSP, traditional: barrier 1 (§6.3.2).
pub const PHASE_BSP_SYNC1: u32 = 12;
/// BSP, traditional: barrier after the before-MMI hook (§6.3.3).
pub const PHASE_BSP_SYNC2: u32 = 13;
/// BSP: handlers ran; waiting for every AP to be free (§6.3.4).
pub const PHASE_BSP_WAIT_FREE: u32 = 14;
/// BSP, relaxed: door locked, waiting for checked-in APs to be present (§6.3.5).
pub const PHASE_BSP_WAIT_PRESENT: u32 = 15;
/// BSP: final barrier, waiting for every AP to leave its handler (§6.3.8).
pub const PHASE_BSP_FINAL: u32 = 16;

impl Instance {
    /// `MmMpSmiRendezvous`: the whole rendezvous of one CPU for one SMI.
    /// Returns when the CPU may leave SMM. A CPU index out of range or of an
    /// empty slot returns at once and touches nothing.
    pub fn smi_rendezvous(&self, cpu: usize) {
        while self.rendezvous_step(cpu) == Poll::Pending {
            self.platform.pause();
        }
    }

    /// Advance CPU `cpu` through its rendezvous as far as it can go without
    /// waiting. See the module documentation.
    pub fn rendezvous_step(&self, cpu: usize) -> Poll {
        let Some(state) = self.cpu(cpu) else {
            return Poll::Ready;
        };
        // Relaxed: the phase is only ever touched by its own CPU.
        let mut phase = state.phase.load(Ordering::Relaxed);
        if phase == PHASE_IDLE && state.is_empty() {
            return Poll::Ready;
        }
        loop {
            let next = match phase {
                PHASE_IDLE => self.entry(cpu),
                PHASE_LATE => self.late(cpu),
                PHASE_AP_WAIT_BSP | PHASE_AP_WAIT_BSP2 => self.ap_wait_bsp(cpu, phase),
                PHASE_AP_SYNC => self.ap_sync(cpu),
                PHASE_AP_LOOP => self.ap_loop(cpu),
                PHASE_AP_EXIT => self.ap_exit(cpu),
                PHASE_BSP_ARRIVAL | PHASE_BSP_ARRIVAL2 => self.bsp_arrival(cpu, phase),
                PHASE_BSP_SYNC1 => self.bsp_sync1(cpu),
                PHASE_BSP_SYNC2 => self.bsp_sync2(cpu),
                PHASE_BSP_WAIT_FREE => self.bsp_wait_free(cpu),
                PHASE_BSP_WAIT_PRESENT => self.bsp_wait_present(cpu),
                PHASE_BSP_FINAL => self.bsp_final(cpu),
                // Unknown phase: only reachable if the region was
                // overwritten. Leave SMM rather than loop.
                _ => Step::Leave,
            };
            match next {
                Step::Wait => return Poll::Pending,
                Step::Go(p) => {
                    state.phase.store(p, Ordering::Relaxed);
                    phase = p;
                }
                Step::Leave => {
                    state.phase.store(PHASE_IDLE, Ordering::Relaxed);
                    self.platform.rendezvous_exit(cpu);
                    return Poll::Ready;
                }
            }
        }
    }

    // -- helpers ------------------------------------------------------------

    fn timed_wait_start(&self, cpu: usize) {
        if let Some(s) = self.cpu(cpu) {
            // Relaxed: private to this CPU.
            s.wait_start.store(self.platform.now(), Ordering::Relaxed);
        }
    }

    /// Whether this CPU's timed wait begun with `timed_wait_start` has
    /// lasted `us` microseconds (never without a time source).
    fn timed_out(&self, cpu: usize, us: u64) -> bool {
        let Some(s) = self.cpu(cpu) else { return true };
        let Some(full) = self.platform.deadline_after_us(us) else {
            return false;
        };
        let (_, ticks) = full.parts();
        // Relaxed: private to this CPU.
        let start = s.wait_start.load(Ordering::Relaxed);
        self.platform
            .expired(Some(Deadline::from_parts(start, ticks)))
    }

    /// Take `remaining` counts from this CPU's run semaphore (barrier).
    fn count_down(&self, cpu: usize) -> bool {
        let (Some(state), Some(run)) = (self.cpu(cpu), self.run_sem(cpu)) else {
            return true;
        };
        // Relaxed: `remaining` is private to the BSP.
        let mut remaining = state.remaining.load(Ordering::Relaxed);
        while remaining > 0 && run.try_wait() {
            remaining -= 1;
        }
        state.remaining.store(remaining, Ordering::Relaxed);
        remaining == 0
    }

    fn set_remaining(&self, cpu: usize, n: u32) {
        if let Some(s) = self.cpu(cpu) {
            // Relaxed: private to the BSP.
            s.remaining.store(n, Ordering::Relaxed);
        }
    }

    /// EDK2 `ReleaseAllAPs`: one count on the run semaphore of every present AP.
    fn release_present_aps(&self, bsp: usize) {
        for (i, s) in self.cpus().iter() {
            if i != bsp && s.is_present() {
                if let Some(run) = self.run_sem(i) {
                    let _ = run.release();
                }
            }
        }
    }

    /// Number of CPUs expected at rendezvous: the non-empty slots.
    fn expected_cpus(&self) -> u32 {
        self.cpus().iter().filter(|(_, s)| !s.is_empty()).count() as u32
    }

    fn door_aps(&self) -> u32 {
        // Relaxed: written by the BSP itself.
        self.control()
            .door_count
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    // -- §6.2 entry -----------------------------------------------------------

    fn entry(&self, cpu: usize) -> Step {
        let control = self.control();
        self.run_startup_procedure();
        self.platform.rendezvous_entry(cpu);
        let valid = self.platform.is_valid_smi();
        let bsp_inside = self.in_smi();
        if !valid && !bsp_inside {
            return Step::Leave;
        }
        if self.arrival().release().is_none() {
            return Step::Go(PHASE_LATE);
        }
        if let Some(m) = self.mailbox(cpu) {
            m.busy.reset_free();
        }
        if !bsp_inside && self.settings.bsp_election {
            // First come wins unless the platform names the BSP.
            if self.platform.bsp_election_preference() != Some(false) {
                // AcqRel: the winner's later writes are ordered after the
                // election; losers see the winner's index.
                let _ = control.bsp_index.compare_exchange(
                    NO_BSP,
                    cpu as u32,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        }
        // Acquire: pairs with the election CAS above (ours or a winner's).
        let bsp = control.bsp_index.load(Ordering::Acquire);
        if !bsp_inside && bsp == cpu as u32 {
            return self.bsp_enter(cpu);
        }
        self.timed_wait_start(cpu);
        Step::Go(PHASE_AP_WAIT_BSP)
    }

    fn late(&self, _cpu: usize) -> Step {
        // Acquire: pairs with the BSP's final Release store.
        if self.control().all_in_sync.load(Ordering::Acquire) || self.in_smi() {
            Step::Wait
        } else {
            Step::Leave
        }
    }

    // -- §6.3 BSP path ----------------------------------------------------------

    fn bsp_enter(&self, cpu: usize) -> Step {
        let control = self.control();
        // Release: everything before (check-in, election) is visible to a
        // CPU that sees "BSP inside" or reads the current BSP.
        control.current_bsp.store(cpu, Ordering::Release);
        control.all_arrived.store(false, Ordering::Relaxed);
        control.bsp_inside.store(true, Ordering::Release);
        if let Some(s) = self.cpu(cpu) {
            s.set_present(true);
        }
        self.platform.clear_top_level_smi_status();
        if self.settings.relaxed && !self.settings.configure_mtrrs {
            self.platform.before_mmi_handler(cpu);
            return self.bsp_run_handlers(cpu);
        }
        self.timed_wait_start(cpu);
        Step::Go(PHASE_BSP_ARRIVAL)
    }

    /// §6.5: wait for the expected CPUs, then IPIs, then the second timeout.
    fn bsp_arrival(&self, cpu: usize, phase: u32) -> Step {
        let expected = self.expected_cpus();
        let arrived = self.arrival().value();
        let all = arrived != crate::sync::SEMAPHORE_LOCKED && arrived >= expected;
        if !all {
            if phase == PHASE_BSP_ARRIVAL {
                if !self.timed_out(cpu, self.settings.timeout1_us) {
                    return Step::Wait;
                }
                for (i, s) in self.cpus().iter() {
                    if i != cpu && !s.is_empty() && !s.is_present() {
                        self.platform.send_smi_ipi(s.apic_id());
                    }
                }
                self.timed_wait_start(cpu);
                return Step::Go(PHASE_BSP_ARRIVAL2);
            }
            if !self.timed_out(cpu, self.settings.timeout2_us) {
                return Step::Wait;
            }
            self.log(
                LOG_WARN,
                c"mm-mp: not every CPU arrived at the SMI rendezvous",
            );
        }
        let control = self.control();
        control.all_arrived.store(all, Ordering::Relaxed);
        // Release: latecomers that see the flag also see the locked door.
        control.all_in_sync.store(true, Ordering::Release);
        let count = self.arrival().lock_down();
        control.door_count.store(count, Ordering::Relaxed);
        self.set_remaining(cpu, count.saturating_sub(1));
        Step::Go(PHASE_BSP_SYNC1)
    }

    fn bsp_sync1(&self, cpu: usize) -> Step {
        if !self.count_down(cpu) {
            return Step::Wait;
        }
        self.release_present_aps(cpu);
        self.platform.before_mmi_handler(cpu);
        self.set_remaining(cpu, self.door_aps());
        Step::Go(PHASE_BSP_SYNC2)
    }

    fn bsp_sync2(&self, cpu: usize) -> Step {
        if !self.count_down(cpu) {
            return Step::Wait;
        }
        self.bsp_run_handlers(cpu)
    }

    /// §6.3 step 4: run the MMI handlers through the foundation entry.
    fn bsp_run_handlers(&self, cpu: usize) -> Step {
        self.platform.mm_foundation_entry(cpu);
        Step::Go(PHASE_BSP_WAIT_FREE)
    }

    fn bsp_wait_free(&self, cpu: usize) -> Step {
        for (i, s) in self.cpus().iter() {
            if i != cpu && s.is_present() {
                if let Some(m) = self.mailbox(i) {
                    if !m.busy.is_free() {
                        return Step::Wait;
                    }
                }
            }
        }
        if self.settings.relaxed && !self.settings.configure_mtrrs {
            let control = self.control();
            // Release: as in `bsp_arrival`.
            control.all_in_sync.store(true, Ordering::Release);
            let count = self.arrival().lock_down();
            control.door_count.store(count, Ordering::Relaxed);
            return Step::Go(PHASE_BSP_WAIT_PRESENT);
        }
        self.bsp_release_loop(cpu)
    }

    fn bsp_wait_present(&self, cpu: usize) -> Step {
        let present = self.cpus().iter().filter(|(_, s)| s.is_present()).count() as u32;
        // The BSP is present itself, hence "more than the AP count".
        if present <= self.door_aps() {
            return Step::Wait;
        }
        self.bsp_release_loop(cpu)
    }

    /// §6.3 steps 6–8: close the services, release APs from the loop.
    fn bsp_release_loop(&self, cpu: usize) -> Step {
        // Release: an AP that wakes and sees "BSP inside" cleared also sees
        // every result of the SMI.
        self.control().bsp_inside.store(false, Ordering::Release);
        self.release_present_aps(cpu);
        if let Some(s) = self.cpu(cpu) {
            s.set_present(false);
        }
        self.set_remaining(cpu, self.door_aps());
        Step::Go(PHASE_BSP_FINAL)
    }

    fn bsp_final(&self, cpu: usize) -> Step {
        if !self.count_down(cpu) {
            return Step::Wait;
        }
        let control = self.control();
        self.tokens().reset();
        if self.settings.bsp_election {
            control.bsp_index.store(NO_BSP, Ordering::Relaxed);
        }
        control.current_bsp.store(usize::MAX, Ordering::Relaxed);
        self.arrival().set(0);
        // Release: the last store of the SMI; every CPU waiting on it sees
        // the whole end-of-SMI state.
        control.all_in_sync.store(false, Ordering::Release);
        Step::Leave
    }

    // -- §6.4 AP path -------------------------------------------------------------

    fn ap_wait_bsp(&self, cpu: usize, phase: u32) -> Step {
        if !self.in_smi() {
            if phase == PHASE_AP_WAIT_BSP {
                if !self.timed_out(cpu, self.settings.timeout1_us) {
                    return Step::Wait;
                }
                // Acquire: pairs with the election CAS.
                let bsp = self.control().bsp_index.load(Ordering::Acquire) as usize;
                if let Some(b) = self.cpu(bsp) {
                    self.platform.send_smi_ipi(b.apic_id());
                }
                self.timed_wait_start(cpu);
                return Step::Go(PHASE_AP_WAIT_BSP2);
            }
            if !self.timed_out(cpu, self.settings.timeout2_us) {
                return Step::Wait;
            }
            // Give up: the BSP never came. Check out and leave.
            let _ = self.arrival().decrement_unless_locked();
            self.log(LOG_WARN, c"mm-mp: AP gave up waiting for the BSP");
            return Step::Leave;
        }
        let bsp = self.current_bsp();
        let Some(state) = self.cpu(cpu) else {
            return Step::Leave;
        };
        // Relaxed: private to this CPU.
        state.bsp.store(bsp as u32, Ordering::Relaxed);
        state.set_present(true);
        if self.settings.relaxed && !self.settings.configure_mtrrs {
            return Step::Go(PHASE_AP_LOOP);
        }
        self.signal_bsp(cpu);
        Step::Go(PHASE_AP_SYNC)
    }

    /// EDK2 `SmmCpuSyncReleaseBsp`: one count on the BSP's run semaphore.
    fn signal_bsp(&self, cpu: usize) {
        let Some(state) = self.cpu(cpu) else { return };
        // Relaxed: private to this CPU.
        let bsp = state.bsp.load(Ordering::Relaxed) as usize;
        if let Some(run) = self.run_sem(bsp) {
            let _ = run.release();
        }
    }

    fn take_run(&self, cpu: usize) -> bool {
        self.run_sem(cpu).is_some_and(|r| r.try_wait())
    }

    fn ap_sync(&self, cpu: usize) -> Step {
        if !self.take_run(cpu) {
            return Step::Wait;
        }
        self.platform.before_mmi_handler(cpu);
        self.signal_bsp(cpu);
        Step::Go(PHASE_AP_LOOP)
    }

    fn ap_loop(&self, cpu: usize) -> Step {
        loop {
            if !self.take_run(cpu) {
                return Step::Wait;
            }
            if !self.in_smi() {
                break;
            }
            if let Some(m) = self.mailbox(cpu) {
                let tokens = self.tokens();
                m.run(|link| tokens.by_link(link));
            }
        }
        if let Some(s) = self.cpu(cpu) {
            s.set_present(false);
        }
        self.signal_bsp(cpu);
        Step::Go(PHASE_AP_EXIT)
    }

    fn ap_exit(&self, _cpu: usize) -> Step {
        // Acquire: pairs with the BSP's final Release store.
        if self.control().all_in_sync.load(Ordering::Acquire) {
            Step::Wait
        } else {
            Step::Leave
        }
    }
}

/// What a phase handler decided.
enum Step {
    /// Stay in the current phase; nothing more to do now.
    Wait,
    /// Move to another phase and keep going.
    Go(u32),
    /// Done with this SMI: run the exit hook and return Ready.
    Leave,
}
