//! The SMI rendezvous engine (BEHAVIOUR.md §6): entry, BSP election, BSP and AP
//! paths in traditional and relaxed mode, MTRR rounds, arrival timeouts
//! with SMI IPIs, bounded exit. EDK2 counterpart: `SmiRendezvous`,
//! `BSPHandler`, `APHandler`, `SmmWaitForApArrival` of MpService.c.
//!
//! Every CPU's path is a state machine: [`Instance::rendezvous_step`]
//! advances the calling CPU as far as it can without waiting and returns
//! [`Poll::Pending`] where EDK2 would spin; `MmMpSmiRendezvous` runs the
//! same driver (`run`) with a `CpuPause` where the step would return. The
//! same code therefore runs on real CPUs, on host threads, and in
//! deterministic tests where one thread steps every simulated CPU in the
//! order the test picks.
//!
//! Barrier rounds are numbered as in EDK2 (#1 … #13): an AP "signals"
//! (one count on the BSP's run semaphore), the BSP "waits" for one count
//! per active AP, then "releases" (one count on each present AP's run
//! semaphore). The "gathered" flow (traditional mode, or any mode with
//! MTRR swapping) uses the barriers; the relaxed flow does not.

use core::ops::ControlFlow;

use crate::cpus::CpuState;
use crate::efi::Status;
use crate::instance::{Instance, NO_BSP};
use crate::platform::{Deadline, LOG_ERROR, LOG_WARN};
use crate::stats::Counter;
use crate::sync::atomic::Ordering;
use crate::sync::{Abandon, Semaphore, SEMAPHORE_LOCKED};
use crate::sync_lib::take_counts;

/// Result of one step.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Poll {
    /// The CPU has to wait; call `rendezvous_step` again later.
    Pending,
    /// The CPU may leave SMM.
    Ready,
}

/// Phase numbers (stored per CPU in `CpuState::phase`).
pub mod phase {
    /// Not in an SMI.
    pub const IDLE: u32 = 0;
    /// Checked in too late (door locked): wait for the SMI to end (§6.2.4).
    pub const LATE: u32 = 1;
    /// AP: waiting for "BSP inside", first timeout (§6.4.1).
    pub const AP_WAIT_BSP: u32 = 2;
    /// AP: SMI IPI sent to the BSP, second timeout (§6.4.1).
    pub const AP_WAIT_BSP2: u32 = 3;
    /// AP, gathered: signalled #1, waiting for release #2 (§6.4.2).
    pub const AP_SYNC: u32 = 4;
    /// AP, MTRR: saved and signalled #3, waiting for #4.
    pub const AP_MTRR_SAVED: u32 = 5;
    /// AP, MTRR: replaced and signalled #5, waiting for #6.
    pub const AP_MTRR_REPLACED: u32 = 6;
    /// AP: dispatch loop (§6.4.3), waiting for #8 or a procedure.
    pub const AP_LOOP: u32 = 7;
    /// AP, MTRR: signalled #9, waiting for #10 (§6.4.4).
    pub const AP_MTRR_EXIT: u32 = 8;
    /// AP, MTRR: restored and signalled #11, waiting for #12.
    pub const AP_MTRR_RESTORED: u32 = 9;
    /// AP: signalled #13, waiting for the end of the SMI (§6.2.7).
    pub const AP_EXIT: u32 = 10;
    /// BSP, gathered: waiting for APs, first timeout (§6.5).
    pub const BSP_ARRIVAL: u32 = 20;
    /// BSP: SMI IPIs sent, second timeout (§6.5).
    pub const BSP_ARRIVAL2: u32 = 21;
    /// BSP, gathered: waiting #1 (§6.3.2).
    pub const BSP_SYNC1: u32 = 22;
    /// BSP, MTRR: saved, waiting #3.
    pub const BSP_MTRR_SAVED: u32 = 23;
    /// BSP, MTRR: replaced, waiting #5.
    pub const BSP_MTRR_REPLACED: u32 = 24;
    /// BSP, gathered: waiting #7, then the handlers (§6.3.3–4).
    pub const BSP_SYNC2: u32 = 25;
    /// BSP: handlers ran; waiting for every AP to be free (§6.3.4).
    pub const BSP_WAIT_FREE: u32 = 26;
    /// BSP, relaxed: door locked, waiting for checked-in APs (§6.3.5).
    pub const BSP_WAIT_PRESENT: u32 = 27;
    /// BSP, MTRR: waiting #9 (§6.3.7).
    pub const BSP_MTRR_EXIT: u32 = 28;
    /// BSP, MTRR: restored, waiting #11.
    pub const BSP_MTRR_RESTORED: u32 = 29;
    /// BSP: waiting #13, every AP left its handler (§6.3.8).
    pub const BSP_FINAL: u32 = 30;
}

use phase::*;

/// `CpuState::wait_start` of a timed wait whose clock is not read yet.
const NOT_STARTED: u64 = u64::MAX;

/// The arrival wait counts the expected CPUs afresh every this many looks
/// (`all_arrived_except_blocked`).
const RECOUNT: u32 = 64;

/// What a phase handler decided.
enum Step {
    /// Stay in the current phase; nothing more to do now.
    Wait,
    /// Move to another phase and keep going.
    Go(u32),
    /// Done with this SMI: run the exit hook and return Ready.
    Leave,
}

/// Where the arrival wait (BEHAVIOUR.md §6.5) stands.
enum Arrival {
    Waiting,
    /// Moved on to the second timeout (IPIs sent).
    SecondRound,
    /// Finished; `true` when every expected CPU arrived.
    Done(bool),
}

/// The stepping CPU's own lines, looked up once per `smi_rendezvous` (or
/// `rendezvous_step`) instead of at every use: a per-CPU lookup is a bounds
/// check and a multiply, and the phases use these on every step
/// (docs/ARCHITECTURE.md, "Rules from the measurements").
struct Me<'a> {
    cpu: usize,
    state: &'a CpuState,
    /// This CPU's run semaphore.
    run: &'a Semaphore,
}

impl Instance {
    /// The own lines of CPU `cpu`; `None` for an index out of range.
    #[inline(always)]
    fn me(&self, cpu: usize) -> Option<Me<'_>> {
        Some(Me {
            cpu,
            state: self.cpu(cpu)?,
            run: self.run_sem(cpu)?,
        })
    }

    /// `MmMpSmiRendezvous`: the whole rendezvous of one CPU for one SMI.
    /// Returns when the CPU may leave SMM. A CPU index out of range or of an
    /// empty slot returns at once and touches nothing.
    pub fn smi_rendezvous(&self, cpu: usize) {
        if let Some(me) = self.me(cpu) {
            self.run(&me, false);
        }
    }

    /// Advance CPU `cpu` through its rendezvous as far as it can go without
    /// waiting. See the module documentation.
    pub fn rendezvous_step(&self, cpu: usize) -> Poll {
        match self.me(cpu) {
            Some(me) => self.run(&me, true),
            None => Poll::Ready,
        }
    }

    /// Take the CPU whose lines `me` holds through its phases. `stepping`:
    /// return `Pending` where it has to wait (`rendezvous_step`); else pause
    /// and look again until it may leave SMM (`smi_rendezvous`).
    ///
    /// The phases are taken in their order (`phases_in_order`), each handler
    /// by a direct call: a `match` on the phase at every hand-off made a
    /// 2-CPU SMI 4–7 % (traditional) and 8–9 % (relaxed) slower
    /// (docs/ARCHITECTURE.md, "Rules from the measurements"). The one move
    /// back to an earlier phase (an AP whose give-up is refused joins after
    /// all) starts the order again.
    fn run(&self, me: &Me, stepping: bool) -> Poll {
        if self.no_rendezvous(me) {
            return Poll::Ready;
        }
        loop {
            // Relaxed: the phase is only ever touched by its own CPU.
            let before = me.state.phase.load(Ordering::Relaxed);
            let mut p = before;
            if let ControlFlow::Break(poll) = self.phases_in_order(me, &mut p, stepping) {
                if poll == Poll::Ready {
                    self.leave(me);
                }
                return poll;
            }
            if p == before {
                // No phase of that number: only reachable if the region was
                // overwritten. Leave SMM rather than loop.
                self.leave(me);
                return Poll::Ready;
            }
        }
    }

    /// Every phase in the order an SMI passes them: each held (`hold`) when
    /// it is the CPU's phase `*p`, until it moves on. Every flow moves
    /// forward in this order (the numbering of `phase`) except the refused
    /// give-up; see `run`. Breaks with `Ready` when the CPU is to leave SMM,
    /// with `Pending` when `stepping` and it has to wait.
    fn phases_in_order(&self, me: &Me, p: &mut u32, stepping: bool) -> ControlFlow<Poll> {
        let s = stepping;
        self.hold(me, p, s, IDLE, |i, m| i.entry(m))?;
        self.hold(me, p, s, LATE, |i, _| i.late())?;
        self.hold(me, p, s, AP_WAIT_BSP, |i, m| i.ap_wait_bsp(m, AP_WAIT_BSP))?;
        self.hold(me, p, s, AP_WAIT_BSP2, |i, m| {
            i.ap_wait_bsp(m, AP_WAIT_BSP2)
        })?;
        self.hold(me, p, s, AP_SYNC, |i, m| i.ap_sync(m))?;
        self.hold(me, p, s, AP_MTRR_SAVED, |i, m| i.ap_mtrr_saved(m))?;
        self.hold(me, p, s, AP_MTRR_REPLACED, |i, m| i.ap_mtrr_replaced(m))?;
        self.hold(me, p, s, AP_LOOP, |i, m| i.ap_loop(m))?;
        self.hold(me, p, s, AP_MTRR_EXIT, |i, m| i.ap_mtrr_exit(m))?;
        self.hold(me, p, s, AP_MTRR_RESTORED, |i, m| i.ap_mtrr_restored(m))?;
        self.hold(me, p, s, AP_EXIT, |i, _| i.wait_end_of_smi())?;
        self.hold(me, p, s, BSP_ARRIVAL, |i, m| i.bsp_arrival(m, BSP_ARRIVAL))?;
        self.hold(me, p, s, BSP_ARRIVAL2, |i, m| {
            i.bsp_arrival(m, BSP_ARRIVAL2)
        })?;
        self.hold(me, p, s, BSP_SYNC1, |i, m| i.bsp_sync1(m))?;
        self.hold(me, p, s, BSP_MTRR_SAVED, |i, m| i.bsp_mtrr_saved(m))?;
        self.hold(me, p, s, BSP_MTRR_REPLACED, |i, m| i.bsp_mtrr_replaced(m))?;
        self.hold(me, p, s, BSP_SYNC2, |i, m| i.bsp_sync2(m))?;
        self.hold(me, p, s, BSP_WAIT_FREE, |i, m| i.bsp_wait_free(m))?;
        self.hold(me, p, s, BSP_WAIT_PRESENT, |i, m| i.bsp_wait_present(m))?;
        self.hold(me, p, s, BSP_MTRR_EXIT, |i, m| i.bsp_mtrr_exit(m))?;
        self.hold(me, p, s, BSP_MTRR_RESTORED, |i, m| i.bsp_mtrr_restored(m))?;
        self.hold(me, p, s, BSP_FINAL, |i, m| i.bsp_final(m))
    }

    /// If `*p` is `phase`: run its handler until it moves on (`*p` becomes
    /// the next phase and the order goes on), pausing between calls unless
    /// `stepping`. Else go on at once.
    #[inline(always)]
    fn hold(
        &self,
        me: &Me,
        p: &mut u32,
        stepping: bool,
        phase: u32,
        handler: impl Fn(&Self, &Me) -> Step,
    ) -> ControlFlow<Poll> {
        if *p != phase {
            return ControlFlow::Continue(());
        }
        loop {
            match handler(self, me) {
                Step::Wait if stepping => return ControlFlow::Break(Poll::Pending),
                Step::Wait => {
                    if self.pause_in(me, phase) {
                        return ControlFlow::Break(Poll::Ready);
                    }
                }
                Step::Go(next) => {
                    // Relaxed: the phase is only ever touched by its own CPU.
                    me.state.phase.store(next, Ordering::Relaxed);
                    *p = next;
                    return ControlFlow::Continue(());
                }
                Step::Leave => return ControlFlow::Break(Poll::Ready),
            }
        }
    }

    /// Wait between two steps of a CPU in phase `phase`: at least one
    /// `CpuPause`. In the dispatch loop the CPU then waits right here for a
    /// call or a run count and runs the calls itself (`ap_loop_spin`).
    /// Returns `true` when a call came back lost: the CPU must leave at
    /// once, as `ap_loop` does.
    fn pause_in(&self, me: &Me, phase: u32) -> bool {
        self.platform.pause();
        phase == AP_LOOP && self.ap_loop_spin(me)
    }

    /// The dispatch loop's spin: reads only the request tag, the broadcast
    /// tag and the run semaphore (lines the BSP writes; the broadcast line
    /// changes only when a broadcast is published) — not its own CPU state or busy
    /// flag, which the BSP reads: a spin that also reads a line another CPU
    /// reads or writes loses it to that CPU on every access (migratory
    /// sharing) and costs a pipeline flush per snoop (docs/ARCHITECTURE.md,
    /// "Rules from the measurements"). What this AP finished last it keeps in a local. Runs the
    /// calls; returns on a run count (#8) or when a call came back lost
    /// (`true`).
    fn ap_loop_spin(&self, me: &Me) -> bool {
        let Some(m) = self.mailbox(me.cpu) else {
            return false;
        };
        let run = me.run;
        let mut seen = m.completed();
        loop {
            let tag = m.posted();
            if seen != Some(tag) {
                let tokens = self.tokens();
                if m.run(tag, |link| tokens.by_link(link)) {
                    return true;
                }
                // `run` ended the call (DONE for `tag`), or it was abandoned.
                seen = Some(tag);
            } else if let Some(lost) = self.ap_broadcast(me) {
                if lost {
                    return true;
                }
            } else if run.value() != 0 {
                return false;
            } else {
                self.platform.pause();
            }
        }
    }

    /// AP `cpu` in the dispatch loop: run the broadcast it is a member of
    /// and has not run, if any. `None`: nothing to run; else whether it came
    /// back lost. While the descriptor shows the tag this AP last dealt
    /// with (kept in its own CPU state) that is two loads.
    #[inline(always)]
    fn ap_broadcast(&self, me: &Me) -> Option<bool> {
        // Relaxed: private to this CPU.
        if self.descriptor().published() == me.state.broadcast_seen.load(Ordering::Relaxed) {
            return None;
        }
        self.ap_broadcast_look(me.cpu)
    }

    /// `ap_broadcast` once the descriptor shows a new tag. One copy for the
    /// dispatch loop's spin and its step.
    #[inline(never)]
    fn ap_broadcast_look(&self, cpu: usize) -> Option<bool> {
        let state = self.cpu(cpu)?;
        // Relaxed: private to this CPU.
        let before = state.broadcast_seen.load(Ordering::Relaxed);
        let mut seen = Some(before);
        // Two views: the first reduces to what `pending` reads (the whole
        // set is built only when there is a call to run).
        let pending = self.broadcasts().pending(cpu, &mut seen);
        let result = pending.map(|tag| {
            let tokens = self.tokens();
            let lost = self.broadcasts().run(cpu, tag, |link| tokens.by_link(link));
            seen = Some(tag);
            lost
        });
        if let Some(tag) = seen.filter(|&t| t != before) {
            // Relaxed: private to this CPU.
            state.broadcast_seen.store(tag, Ordering::Relaxed);
        }
        result
    }

    // -- helpers ------------------------------------------------------------

    /// Whether this CPU, not in an SMI yet, takes no part in this one: an
    /// empty slot, or a hot-added CPU's first SMI (BEHAVIOUR.md §5.3), which only
    /// initialises it and does not check in (the counter is untouched). The
    /// SMI number is recorded so that a rendezvous running at the same time
    /// does not wait for this CPU (`is_expected`).
    fn no_rendezvous(&self, me: &Me) -> bool {
        let state = me.state;
        // Relaxed: the phase is only ever touched by its own CPU.
        if state.phase.load(Ordering::Relaxed) != IDLE {
            return false;
        }
        state.is_empty()
            || (state.needs_init()
                && state.take_init_in(self.flags().smi_seq.load(Ordering::Acquire)))
    }

    /// Done with this SMI: back to IDLE, platform "rendezvous exit" hook.
    fn leave(&self, me: &Me) {
        // Relaxed: the phase is only ever touched by its own CPU.
        me.state.phase.store(IDLE, Ordering::Relaxed);
        self.platform.rendezvous_exit(me.cpu);
    }

    fn gathered(&self) -> bool {
        !self.settings.relaxed || self.settings.configure_mtrrs
    }

    /// Begin a timed wait of this CPU. The clock is read on the wait's
    /// first unmet check (`timed_out`), so a wait that is over at once —
    /// the common case — costs no time-source call.
    fn timed_wait_start(&self, s: &CpuState) {
        // Relaxed: private to this CPU.
        s.wait_start.store(NOT_STARTED, Ordering::Relaxed);
    }

    /// Whether the timed wait of the CPU whose state is `s`, begun with
    /// `timed_wait_start`, has lasted `us` microseconds (never without a
    /// time source).
    fn timed_out(&self, s: &CpuState, us: u64) -> bool {
        let Some(ticks) = self.platform.ticks_for_us(us) else {
            return false;
        };
        // Relaxed: private to this CPU.
        let start = s.wait_start.load(Ordering::Relaxed);
        if start == NOT_STARTED {
            // A clock reading of NOT_STARTED itself is taken one tick early.
            let now = self.platform.now().min(NOT_STARTED - 1);
            s.wait_start.store(now, Ordering::Relaxed);
            return false;
        }
        self.platform
            .expired(Some(Deadline::from_parts(start, ticks)))
    }

    /// APs that take part in the barriers: checked in at the door, not lost.
    fn active_aps(&self) -> u32 {
        let control = self.control();
        // Relaxed: both written by the BSP itself (the only reader).
        let door = self.sync().arrived_count() as u32;
        let lost = control.lost_count.load(Ordering::Relaxed);
        door.saturating_sub(1).saturating_sub(lost)
    }

    /// Start a barrier wait of the BSP for every active AP.
    fn expect_signals(&self, me: &Me) {
        // Relaxed: private to the BSP.
        me.state
            .remaining
            .store(self.active_aps(), Ordering::Relaxed);
    }

    /// Take the counts still expected from the BSP's run semaphore
    /// (`SmmCpuSyncWaitForAPs`, one step).
    fn signals_in(&self, me: &Me) -> bool {
        // Relaxed: `remaining` is private to the BSP.
        let mut remaining = me.state.remaining.load(Ordering::Relaxed);
        let done = take_counts(me.run, &mut remaining);
        me.state.remaining.store(remaining, Ordering::Relaxed);
        done
    }

    /// EDK2 `ReleaseAllAPs`: one count on the run semaphore of every
    /// present AP (lost APs are no longer present). The CPU states and run
    /// semaphores are walked side by side (`SmmCpuSyncReleaseOneAp` for
    /// each, without its lookup).
    fn release_present_aps(&self, me: &Me) {
        for ((i, s), (_, run)) in self.cpus().iter().zip(self.run_sems().iter()) {
            if i != me.cpu && s.is_present() {
                // A locked run semaphore (never produced by this API)
                // refuses the release, as in EDK2.
                let _ = run.release();
            }
        }
    }

    /// EDK2 `SmmCpuSyncReleaseBsp`: one count on the BSP's run semaphore.
    fn signal_bsp(&self, me: &Me) {
        // Relaxed: private to this CPU.
        let bsp = me.state.bsp.load(Ordering::Relaxed) as usize;
        self.sync().release_bsp(bsp);
    }

    /// `SmmCpuSyncWaitForBsp`, one step: take a count from this AP's run
    /// semaphore.
    fn take_run(&self, me: &Me) -> bool {
        me.run.try_wait()
    }

    /// CPUs that should come to a rendezvous: non-empty slots whose AP is
    /// not lost in an earlier SMI, hot-added ones once initialised (EDK2
    /// `mNumberOfCpus`; `Instance::is_expected`).
    fn expected_cpus(&self) -> u32 {
        (0..self.number_of_cpus())
            .filter(|&i| self.is_expected(i))
            .count() as u32
    }

    /// EDK2 `AllCpusInSmmExceptBlockedDisabled`, counting the expected
    /// CPUs now.
    fn all_arrived_now(&self) -> bool {
        let arrived = self.arrival().value();
        if arrived != SEMAPHORE_LOCKED && arrived as usize >= self.number_of_cpus() {
            // Every slot checked in: no need to look at each CPU's state
            // (the expected CPUs are a subset of the slots).
            return true;
        }
        if arrived == SEMAPHORE_LOCKED {
            // The door is locked: the count at the lock is what arrived.
            return self.sync().arrived_count() as u32 >= self.expected_cpus();
        }
        self.arrived_enough(arrived, self.expected_cpus())
    }

    /// `all_arrived_now` for one look of a wait, by the BSP whose state is
    /// `bsp`.
    ///
    /// Counting the expected CPUs reads every CPU's state, mailbox and
    /// broadcast lines — lines the arriving CPUs write as they check in —
    /// so the count is kept between looks (`CpuState::arrival_expected`)
    /// and made again only every `RECOUNT` looks and before any `true`.
    /// The answer `true` always rests on a fresh count, as in EDK2; a
    /// `false` may rest on a count up to `RECOUNT` looks old, so the wait
    /// decides with `all_arrived_now` (`arrival_wait`). Every kept count
    /// is dropped where a CPU stops being expected (removed, marked lost:
    /// `forget_arrival_counts`). Polling the arriving CPU's lines on every
    /// look delayed its check-in (docs/ARCHITECTURE.md, "Rules from the
    /// measurements").
    fn all_arrived_except_blocked(&self, bsp: &CpuState) -> bool {
        let arrived = self.arrival().value();
        if arrived != SEMAPHORE_LOCKED && arrived as usize >= self.number_of_cpus() {
            return true;
        }
        if arrived == SEMAPHORE_LOCKED {
            return self.all_arrived_now();
        }
        // Relaxed: both private to this CPU.
        let looks = bsp.arrival_looks.load(Ordering::Relaxed);
        bsp.arrival_looks
            .store(looks.wrapping_add(1), Ordering::Relaxed);
        let mut expected = bsp.arrival_expected.load(Ordering::Relaxed);
        if looks % RECOUNT == 0 {
            expected = self.expected_cpus();
            bsp.arrival_expected.store(expected, Ordering::Relaxed);
        }
        if !self.arrived_enough(arrived, expected) {
            return false;
        }
        let expected = self.expected_cpus();
        bsp.arrival_expected.store(expected, Ordering::Relaxed);
        self.arrived_enough(arrived, expected)
    }

    /// Whether `arrived` CPUs, with the platform's blocked and disabled
    /// ones, make up `expected`.
    fn arrived_enough(&self, arrived: u32, expected: u32) -> bool {
        if arrived >= expected {
            return true;
        }
        let (_, blocked, disabled) = self.platform.delayed_blocked_disabled();
        arrived.saturating_add(blocked).saturating_add(disabled) >= expected
    }

    /// One look at the arrival wait of BEHAVIOUR.md §6.5 (EDK2 `SmmWaitForApArrival`)
    /// for the BSP `cpu`, in round `second` (after the IPIs) or the first.
    fn arrival_wait(&self, cpu: usize, state: &CpuState, second: bool) -> Arrival {
        let all = self.all_arrived_except_blocked(state);
        if !second {
            // Relaxed: written by this CPU at SMI entry.
            let needed = self.control().sync_needed.load(Ordering::Relaxed);
            if !all && needed && !self.timed_out(state, self.settings.timeout1_us) {
                return Arrival::Waiting;
            }
            // Deciding: on a fresh count (see `all_arrived_except_blocked`).
            let all = all || self.all_arrived_now();
            let arrived = self.arrival().value();
            if arrived == SEMAPHORE_LOCKED
                || arrived as usize >= self.number_of_cpus()
                || arrived >= self.expected_cpus()
            {
                return Arrival::Done(all);
            }
            for (i, s) in self.cpus().iter() {
                if i != cpu && self.is_expected(i) && !s.is_present() {
                    self.platform.send_smi_ipi(s.apic_id());
                    self.stats().bump(Counter::IpisSent);
                }
            }
            self.timed_wait_start(state);
            return Arrival::SecondRound;
        }
        if !all && !self.timed_out(state, self.settings.timeout2_us) {
            return Arrival::Waiting;
        }
        let all = all || self.all_arrived_now();
        if !all {
            self.stats().bump(Counter::Timeouts);
            self.log(
                LOG_ERROR,
                c"mm-mp: not every CPU arrived at the SMI rendezvous",
            );
        }
        Arrival::Done(all)
    }

    // -- §6.2 entry -----------------------------------------------------------

    fn entry(&self, me: &Me) -> Step {
        let cpu = me.cpu;
        let control = self.control();
        self.run_startup_procedure();
        self.platform.rendezvous_entry(me.cpu);
        // Acquire: pairs with the BSP's Release increment at SMI end.
        let seq = self.flags().smi_seq.load(Ordering::Acquire);
        let valid = self.platform.is_valid_smi();
        // Sampled after the validity check: the BSP may clear the SMI
        // source after it checked in (EDK2 comment in SmiRendezvous).
        let mut bsp_inside = self.in_smi();
        if !valid && !bsp_inside {
            self.stats().bump(Counter::SpuriousSmis);
            return Step::Leave;
        }
        if self.sync().check_in(cpu) != Status::SUCCESS {
            self.stats().bump(Counter::LateCpus);
            return Step::Go(LATE);
        }
        // [DIFF] The SMI we saw in progress may have ended between the
        // sample and the check-in (relaxed mode: the BSP can finish before
        // a CPU of the same SMI checks in). Then we checked into the next
        // SMI: sample again instead of waiting for a BSP that is gone
        // (EDK2 recovers only by timing out).
        // Acquire: our check-in read the counter the BSP reopened after
        // bumping the sequence, so a changed sequence is visible here.
        if bsp_inside && self.flags().smi_seq.load(Ordering::Acquire) != seq {
            bsp_inside = self.in_smi();
            if !valid && !bsp_inside {
                let _ = self.sync().check_out(cpu);
                self.stats().bump(Counter::SpuriousSmis);
                return Step::Leave;
            }
        }
        if let Some(m) = self.mailbox(cpu) {
            m.reset_free();
        }
        if !bsp_inside && self.settings.bsp_election {
            // Acquire: pairs with SwitchBsp's Release store of the candidate.
            let candidate = control.bsp_candidate.load(Ordering::Acquire);
            if candidate == NO_BSP || candidate as usize == cpu {
                match self.platform.bsp_election_preference() {
                    // The platform names this CPU: it is the BSP (EDK2
                    // stores the index without a compare-exchange).
                    // Release: as the CAS below.
                    Some(true) => control.bsp_index.store(cpu as u32, Ordering::Release),
                    Some(false) => {}
                    None => {
                        // First come wins. AcqRel: the winner's later
                        // writes are ordered after the election; losers
                        // read the winner's index below.
                        let _ = control.bsp_index.compare_exchange(
                            NO_BSP,
                            cpu as u32,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    }
                }
            }
        }
        // With "BSP inside" seen this CPU is an AP whoever the BSP is, and
        // it does not read the control line at all: the BSP writes that
        // line between the arrivals and #2, and an AP reading it there
        // took it away from the BSP on the SMI's critical path. Without
        // election the index never changes after init, so it is not read
        // either: the BSP writes the line as it enters, just before "BSP
        // inside" (docs/ARCHITECTURE.md, "Rules from the measurements").
        if !bsp_inside {
            let bsp = if self.settings.bsp_election {
                // Acquire: pairs with the election above (ours or a winner's).
                control.bsp_index.load(Ordering::Acquire) as usize
            } else {
                self.settings.fixed_bsp
            };
            if bsp == cpu {
                return self.bsp_enter(me);
            }
        }
        self.timed_wait_start(me.state);
        Step::Go(AP_WAIT_BSP)
    }

    /// Late CPUs and APs at the end: leave once the BSP ended the SMI.
    fn late(&self) -> Step {
        if self.in_smi() {
            return Step::Wait;
        }
        self.wait_end_of_smi()
    }

    fn wait_end_of_smi(&self) -> Step {
        // Acquire: pairs with the BSP's final Release store.
        if self.all_in_sync().load(Ordering::Acquire) {
            Step::Wait
        } else {
            Step::Leave
        }
    }

    // -- §6.3 BSP path ----------------------------------------------------------

    fn bsp_enter(&self, me: &Me) -> Step {
        let control = self.control();
        // A pending SwitchBsp is consumed by this election (EDK2 clears
        // SwitchBsp and CandidateBsp[] here). Relaxed: BSP-only until the
        // next election, which this SMI's final Release store precedes.
        control.bsp_candidate.store(NO_BSP, Ordering::Relaxed);
        control.lost_count.store(0, Ordering::Relaxed);
        control.all_arrived.store(false, Ordering::Relaxed);
        control
            .sync_needed
            .store(self.platform.is_sync_needed(), Ordering::Relaxed);
        // Release: everything before (check-in, election) is visible to a
        // CPU that sees "BSP inside" or reads the current BSP.
        self.flags().current_bsp.store(me.cpu, Ordering::Release);
        self.flags().bsp_inside.store(true, Ordering::Release);
        // After "BSP inside": the statistics line may sit with the last
        // SMI's BSP, and the APs need not wait for it.
        self.stats().bump(Counter::Smis);
        me.state.set_present(true);
        self.platform.clear_top_level_smi_status();
        if !self.gathered() {
            self.platform.before_mmi_handler(me.cpu);
            return self.bsp_run_handlers(me);
        }
        self.timed_wait_start(me.state);
        Step::Go(BSP_ARRIVAL)
    }

    /// §6.3 step 2 + §6.5: wait for arrivals, lock the door.
    fn bsp_arrival(&self, me: &Me, current: u32) -> Step {
        let all = match self.arrival_wait(me.cpu, me.state, current == BSP_ARRIVAL2) {
            Arrival::Waiting => return Step::Wait,
            Arrival::SecondRound => return Step::Go(BSP_ARRIVAL2),
            Arrival::Done(all) => all,
        };
        let control = self.control();
        control.all_arrived.store(all, Ordering::Relaxed);
        // Release: latecomers that see the flag also see the locked door.
        self.all_in_sync().store(true, Ordering::Release);
        self.sync().lock_door();
        self.expect_signals(me);
        Step::Go(BSP_SYNC1)
    }

    fn bsp_sync1(&self, me: &Me) -> Step {
        if !self.signals_in(me) {
            return Step::Wait;
        }
        self.release_present_aps(me); // #2
        self.expect_signals(me);
        if self.settings.configure_mtrrs {
            self.platform.mtrr_save(me.cpu);
            return Step::Go(BSP_MTRR_SAVED);
        }
        self.platform.before_mmi_handler(me.cpu);
        Step::Go(BSP_SYNC2)
    }

    fn bsp_mtrr_saved(&self, me: &Me) -> Step {
        if !self.signals_in(me) {
            return Step::Wait; // #3
        }
        self.release_present_aps(me); // #4
        self.expect_signals(me);
        self.platform.mtrr_replace(me.cpu);
        Step::Go(BSP_MTRR_REPLACED)
    }

    fn bsp_mtrr_replaced(&self, me: &Me) -> Step {
        if !self.signals_in(me) {
            return Step::Wait; // #5
        }
        self.release_present_aps(me); // #6
        self.expect_signals(me);
        self.platform.before_mmi_handler(me.cpu);
        Step::Go(BSP_SYNC2)
    }

    fn bsp_sync2(&self, me: &Me) -> Step {
        if !self.signals_in(me) {
            return Step::Wait; // #7
        }
        self.bsp_run_handlers(me)
    }

    /// §6.3 step 4: run the MMI handlers through the foundation entry.
    fn bsp_run_handlers(&self, me: &Me) -> Step {
        self.platform.mm_foundation_entry(me.cpu);
        self.timed_wait_start(me.state);
        Step::Go(BSP_WAIT_FREE)
    }

    /// §6.3 step 4: wait until every present AP is free; with a time
    /// source, APs still busy after the second timeout are marked lost.
    fn bsp_wait_free(&self, me: &Me) -> Step {
        let busy =
            |i: usize| self.mailbox(i).is_some_and(|m| !m.is_free()) || !self.broadcast_free(i);
        let any_busy = self
            .cpus()
            .iter()
            .any(|(i, s)| i != me.cpu && s.is_present() && busy(i));
        if any_busy {
            if !self.timed_out(me.state, self.settings.timeout2_us) {
                return Step::Wait;
            }
            let mut finishing = false;
            for (i, s) in self.cpus().iter() {
                if i == me.cpu || !s.is_present() || !busy(i) {
                    continue;
                }
                finishing |= !self.mark_lost(i);
            }
            if finishing {
                return Step::Wait;
            }
        }
        if !self.gathered() {
            // Release: as in `bsp_arrival`.
            self.all_in_sync().store(true, Ordering::Release);
            self.sync().lock_door();
            return Step::Go(BSP_WAIT_PRESENT);
        }
        self.bsp_release_loop(me)
    }

    /// Mark AP `ap` lost (its procedure, from its mailbox or a broadcast,
    /// outlived the exit timeout). Returns `false` when it turned out to be
    /// finishing right now (not lost).
    fn mark_lost(&self, ap: usize) -> bool {
        let (Some(mailbox), Some(state)) = (self.mailbox(ap), self.cpu(ap)) else {
            return true;
        };
        let broadcasts = self.broadcasts();
        // An AP runs at most one of the two: the BSP posts to a mailbox
        // only when its AP is free of broadcasts, and broadcasts only to
        // APs with free mailboxes.
        let (verdict, target, link) = if !mailbox.is_free() {
            (
                mailbox.mark_lost(),
                mailbox.status_target(),
                mailbox.token(),
            )
        } else if !broadcasts.is_free_for(ap) {
            let tag = broadcasts.tag();
            (
                broadcasts.give_up(ap, tag, true),
                broadcasts.status_slot(ap),
                broadcasts.token(),
            )
        } else {
            return true;
        };
        match verdict {
            Abandon::Abandoned => {
                if !target.is_null() {
                    // SAFETY: validated when the call was posted; the AP
                    // lost the race for it, so the BSP owns it now.
                    unsafe { target.write_volatile(Status::TIMEOUT) };
                }
                if let Some(token) = self.tokens().by_link(link) {
                    token.mark_timed_out();
                }
            }
            Abandon::AlreadyAbandoned => {}
            Abandon::Finishing => return false,
            Abandon::AlreadyFree => return true,
        }
        state.set_present(false);
        self.broadcasts().leave(ap);
        self.forget_arrival_counts();
        // Relaxed: BSP-only counter (see `active_aps`).
        let control = self.control();
        let lost = control.lost_count.load(Ordering::Relaxed);
        control.lost_count.store(lost + 1, Ordering::Relaxed);
        self.stats().bump(Counter::LostAps);
        self.stats().bump(Counter::Timeouts);
        self.log(
            LOG_ERROR,
            c"mm-mp: an AP procedure outlived the SMI; AP marked lost",
        );
        true
    }

    fn bsp_wait_present(&self, me: &Me) -> Step {
        let present = self.cpus().iter().filter(|(_, s)| s.is_present()).count() as u32;
        // The BSP counts itself, hence "more than the active AP count".
        if present <= self.active_aps() {
            return Step::Wait;
        }
        self.bsp_release_loop(me)
    }

    /// §6.3 step 6: close the services, release APs from the loop (#8).
    fn bsp_release_loop(&self, me: &Me) -> Step {
        // Release: an AP that wakes and sees "BSP inside" cleared also sees
        // every result of the SMI.
        self.flags().bsp_inside.store(false, Ordering::Release);
        self.release_present_aps(me);
        self.expect_signals(me);
        if self.settings.configure_mtrrs {
            return Step::Go(BSP_MTRR_EXIT);
        }
        self.bsp_before_final(me)
    }

    fn bsp_mtrr_exit(&self, me: &Me) -> Step {
        if !self.signals_in(me) {
            return Step::Wait; // #9
        }
        self.release_present_aps(me); // #10
        self.expect_signals(me);
        self.platform.mtrr_restore(me.cpu);
        Step::Go(BSP_MTRR_RESTORED)
    }

    fn bsp_mtrr_restored(&self, me: &Me) -> Step {
        if !self.signals_in(me) {
            return Step::Wait; // #11
        }
        self.release_present_aps(me); // #12
        self.bsp_before_final(me)
    }

    /// §6.3 step 8: pending CPU operations, BSP not present, wait #13.
    fn bsp_before_final(&self, me: &Me) -> Step {
        // The services closed with "BSP inside" and every present AP is
        // free (lost ones no longer touch tokens): the tokens of this SMI
        // end here, while the APs leave, not after the last barrier.
        self.tokens().reset();
        self.apply_pending_operations();
        me.state.set_present(false);
        self.expect_signals(me);
        Step::Go(BSP_FINAL)
    }

    /// §6.3 step 9.
    fn bsp_final(&self, me: &Me) -> Step {
        if !self.signals_in(me) {
            return Step::Wait; // #13
        }
        let control = self.control();
        if self.settings.bsp_election {
            control.bsp_index.store(NO_BSP, Ordering::Relaxed);
            // Relaxed: a hint read only by an AP whose wait for a BSP timed
            // out (see `ap_ipi_target`); any value it reads is checked.
            control.last_bsp.store(me.cpu as u32, Ordering::Relaxed);
        }
        // The BSP at its last step is the only writer of the sequence (the
        // next SMI's BSP checks in only after the reset below), so a load
        // and a store do what a locked add would, without the lock's wait
        // for this line, which the APs read. Relaxed load: the value was
        // last written by this CPU or ordered before its check-in by the
        // reset's Release. Release store: a CPU whose check-in reads the
        // reopened counter sees the new sequence (see `entry`).
        let flags = self.flags();
        let seq = flags.smi_seq.load(Ordering::Relaxed);
        flags.smi_seq.store(seq.wrapping_add(1), Ordering::Release);
        // Before the counter reopens: a CPU that checks in after the reset
        // may be the next SMI's BSP and store its own index here (the
        // reset's Release orders this store before that one).
        flags.current_bsp.store(usize::MAX, Ordering::Relaxed);
        self.sync().reset();
        // Release: the last store of the SMI; every CPU waiting on it sees
        // the whole end-of-SMI state.
        self.all_in_sync().store(false, Ordering::Release);
        Step::Leave
    }

    // -- §6.4 AP path -------------------------------------------------------------

    fn ap_wait_bsp(&self, me: &Me, current: u32) -> Step {
        if !self.in_smi() {
            if current == AP_WAIT_BSP {
                if !self.timed_out(me.state, self.settings.timeout1_us) {
                    return Step::Wait;
                }
                if let Some(apic_id) = self.ap_ipi_target(me) {
                    self.platform.send_smi_ipi(apic_id);
                    self.stats().bump(Counter::IpisSent);
                    self.timed_wait_start(me.state);
                    return Step::Go(AP_WAIT_BSP2);
                }
                // No CPU to ask: give up without an IPI (EDK2).
                return self.ap_give_up(me);
            }
            if !self.timed_out(me.state, self.settings.timeout2_us) {
                return Step::Wait;
            }
            return self.ap_give_up(me);
        }
        let bsp = self.current_bsp();
        // Relaxed: private to this CPU.
        me.state.bsp.store(bsp as u32, Ordering::Relaxed);
        me.state.set_present(true);
        // After the flag: a broadcast that misses the bit treats this AP
        // as arriving just after it (relaxed mode); its dispatches see it.
        self.broadcasts().join(me.cpu);
        if !self.gathered() {
            self.platform.before_mmi_handler(me.cpu);
            return Step::Go(AP_LOOP);
        }
        self.signal_bsp(me); // #1
        Step::Go(AP_SYNC)
    }

    /// §6.4 step 1: the CPU an AP that waited in vain for "BSP inside"
    /// sends an SMI IPI to (its APIC ID): the elected or fixed BSP if
    /// there is one; else, with election, the only CPU that may win (a
    /// pending SwitchBsp's candidate) or the BSP of the last SMI.
    ///
    /// [DIFF] EDK2 sends an IPI only to an elected BSP, so an SMI that
    /// enters one CPU which may not become BSP (relaxed mode without
    /// broadcast SMIs, and a platform election hook that names another
    /// CPU, as OVMF's names the boot CPU) is dropped after the first
    /// timeout: the MMI it carried never runs. Here the likely BSP is
    /// pulled in and runs it (BEHAVIOUR.md §10.3: the AP must pull in the BSP).
    fn ap_ipi_target(&self, me: &Me) -> Option<u64> {
        let control = self.control();
        // Acquire: pairs with the election.
        let mut bsp = control.bsp_index.load(Ordering::Acquire);
        if bsp == NO_BSP && self.settings.bsp_election {
            // Acquire: pairs with SwitchBsp's Release store.
            bsp = control.bsp_candidate.load(Ordering::Acquire);
            if bsp == NO_BSP {
                // Relaxed: a hint; the slot is checked below.
                bsp = control.last_bsp.load(Ordering::Relaxed);
            }
        }
        if bsp == NO_BSP || bsp as usize == me.cpu {
            return None;
        }
        self.cpu(bsp as usize)
            .filter(|s| !s.is_empty())
            .map(|s| s.apic_id())
    }

    /// The BSP never came: check out and leave once no SMI is in sync.
    ///
    /// The BSP may have come after all, between our last look at "BSP
    /// inside" and the check-out: then the door is locked, the check-out
    /// is refused, and that BSP counted this CPU and waits for it (relaxed:
    /// for its Present flag; traditional: at the barrier). Leaving would
    /// hang it, so the CPU joins the SMI instead ("BSP inside" is set from
    /// before the lock until every counted CPU has joined). EDK2 ignores
    /// the refused check-out and hangs there.
    fn ap_give_up(&self, me: &Me) -> Step {
        if self.sync().check_out(me.cpu) == Status::ABORTED && self.in_smi() {
            return Step::Go(AP_WAIT_BSP);
        }
        self.stats().bump(Counter::Timeouts);
        self.log(LOG_WARN, c"mm-mp: AP gave up waiting for the BSP");
        Step::Go(AP_EXIT)
    }

    fn ap_sync(&self, me: &Me) -> Step {
        if !self.take_run(me) {
            return Step::Wait; // #2
        }
        if self.settings.configure_mtrrs {
            self.platform.mtrr_save(me.cpu);
            self.signal_bsp(me); // #3
            return Step::Go(AP_MTRR_SAVED);
        }
        self.ap_before_loop(me)
    }

    fn ap_mtrr_saved(&self, me: &Me) -> Step {
        if !self.take_run(me) {
            return Step::Wait; // #4
        }
        self.platform.mtrr_replace(me.cpu);
        self.signal_bsp(me); // #5
        Step::Go(AP_MTRR_REPLACED)
    }

    fn ap_mtrr_replaced(&self, me: &Me) -> Step {
        if !self.take_run(me) {
            return Step::Wait; // #6
        }
        self.ap_before_loop(me)
    }

    fn ap_before_loop(&self, me: &Me) -> Step {
        self.platform.before_mmi_handler(me.cpu);
        self.signal_bsp(me); // #7
        Step::Go(AP_LOOP)
    }

    /// §6.4 step 3: the dispatch loop. A procedure comes through the
    /// mailbox (its new tag, `Channel::pending`) or the broadcast
    /// descriptor (`Broadcasts::pending`), the end of the loop as
    /// release #8 on the run semaphore. The BSP releases #8 only after every
    /// present AP finished its call, so a count on the run semaphore never
    /// overtakes a procedure.
    fn ap_loop(&self, me: &Me) -> Step {
        let Some(m) = self.mailbox(me.cpu) else {
            return Step::Leave;
        };
        loop {
            if let Some(tag) = m.pending() {
                let tokens = self.tokens();
                if m.run(tag, |link| tokens.by_link(link)) {
                    // Marked lost: the SMI went on without us. Leave
                    // without touching its state.
                    return Step::Leave;
                }
                continue;
            }
            if let Some(lost) = self.ap_broadcast(me) {
                if lost {
                    return Step::Leave; // as above
                }
                continue;
            }
            if !self.take_run(me) {
                return Step::Wait; // #8 or a procedure
            }
            // The count is #8: the BSP cleared "BSP inside" before it
            // (Release; our count's Acquire sees it). A count while the SMI
            // is still open can only come from an overwritten region: it
            // is dropped and the loop goes on.
            if !self.in_smi() {
                break;
            }
        }
        if self.settings.configure_mtrrs {
            self.signal_bsp(me); // #9
            return Step::Go(AP_MTRR_EXIT);
        }
        self.ap_leave_handler(me)
    }

    fn ap_mtrr_exit(&self, me: &Me) -> Step {
        if !self.take_run(me) {
            return Step::Wait; // #10
        }
        self.platform.mtrr_restore(me.cpu);
        self.signal_bsp(me); // #11
        Step::Go(AP_MTRR_RESTORED)
    }

    fn ap_mtrr_restored(&self, me: &Me) -> Step {
        if !self.take_run(me) {
            return Step::Wait; // #12
        }
        self.ap_leave_handler(me)
    }

    /// §6.4 step 4: not present, signal #13, wait for the end.
    fn ap_leave_handler(&self, me: &Me) -> Step {
        // The present flag and the broadcast bit are cleared before #13:
        // once the BSP has counted every AP's #13 it ends the SMI, and the
        // next SMI's snapshot and target checks read them as "checked in
        // to this SMI". Loom does not see this order (its models never
        // snapshot between an AP's #13 and the next SMI), so it stands on
        // this argument.
        me.state.set_present(false);
        self.broadcasts().leave(me.cpu);
        self.signal_bsp(me); // #13
        Step::Go(AP_EXIT)
    }

    // -- §6.7 EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL -------------------------------

    /// `WaitForAllProcessor (BlockingMode)` (BEHAVIOUR.md §6.7).
    pub fn wait_for_all_processor(&self, blocking: bool) -> Status {
        let control = self.control();
        // Relaxed: written by the BSP, which is the caller (handlers run on it).
        if self.in_smi() && control.all_arrived.load(Ordering::Relaxed) {
            return Status::SUCCESS;
        }
        if !blocking || self.gathered() || !self.in_smi() {
            return Status::TIMEOUT;
        }
        let bsp = self.current_bsp();
        // The BSP's state exists while an SMI is in progress (it stored its
        // own index before "BSP inside"); without it there is nothing to
        // time the wait with.
        let Some(state) = self.cpu(bsp) else {
            return Status::TIMEOUT;
        };
        self.timed_wait_start(state);
        let mut second = false;
        let all = loop {
            match self.arrival_wait(bsp, state, second) {
                Arrival::Waiting => self.platform.pause(),
                Arrival::SecondRound => second = true,
                Arrival::Done(all) => break all,
            }
        };
        control.all_arrived.store(all, Ordering::Relaxed);
        if all {
            Status::SUCCESS
        } else {
            Status::TIMEOUT
        }
    }
}
