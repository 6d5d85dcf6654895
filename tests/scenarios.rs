//! BEHAVIOUR.md §10.1–§10.3, §10.7, §10.8 on the simulated machine (one thread per
//! CPU, SMI sources, IPIs delivered through the platform hook), in
//! traditional and relaxed mode, with 4 and 8 CPUs; plus the engine's
//! options (MTRR rounds, election hook, SMI-blocked CPUs, rendezvous
//! protocol).
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use mm_mp::efi::{Boolean, MmCompletion, Status};
use mm_mp::ffi::MmMpGetRendezvousProtocol;

const SIZES: [usize; 2] = [4, 8];
const MODES: [bool; 2] = [false, true];

fn ptr(r: &Arc<Record>) -> *mut std::ffi::c_void {
    Arc::as_ptr(r) as *mut std::ffi::c_void
}

fn wait_for_all(sim: &Sim, blocking: bool) -> Status {
    // SAFETY: valid instance; our own protocol.
    unsafe {
        let p = MmMpGetRendezvousProtocol(sim.inst);
        ((*p).wait_for_all_processor)(p, Boolean::from(blocking))
    }
}

/// Handler used by most scenarios: broadcast with a status array and
/// count the APs that were in the set; record the BSP.
struct Tally {
    rec: Arc<Record>,
    in_set: AtomicUsize,
    bsps: std::sync::Mutex<Vec<usize>>,
}

fn tally(sim: &Sim, wait_present: bool) -> Arc<Tally> {
    let n = sim.opts.cpus;
    let t = Arc::new(Tally {
        rec: Arc::from(Record::new(n)),
        in_set: AtomicUsize::new(0),
        bsps: std::sync::Mutex::new(Vec::new()),
    });
    let t2 = t.clone();
    sim.set_handler(move |sim, bsp| {
        t2.bsps.lock().unwrap().push(bsp);
        if wait_present {
            let live: Vec<usize> = (0..n)
                .filter(|&c| c != bsp && !sim.dead[c].load(Ordering::SeqCst))
                .collect();
            sim.pump_until(|| live.iter().all(|&c| sim.joined(c)));
        }
        let mut st = vec![Status(0); n];
        let r = sim.broadcast(p2(proc_count), 0, ptr(&t2.rec), None, Some(&mut st));
        if r == Status::SUCCESS {
            let members = st.iter().filter(|&&s| s != Status::NOT_STARTED).count();
            t2.in_set.fetch_add(members, Ordering::SeqCst);
        }
    });
    t
}

/// §10.1 broadcast SMI: every CPU enters at once, no IPI is needed.
#[test]
fn broadcast_smi() {
    for relaxed in MODES {
        for n in SIZES {
            let m = Machine::start(
                Options::new(n)
                    .relaxed(relaxed)
                    .clock(Clock::Real)
                    .timeout_us(1_000_000),
            );
            let t = tally(m.sim, relaxed);
            for i in 1..=20 {
                m.broadcast_smi();
                m.wait_smis(i, 60);
                m.assert_balanced();
            }
            assert_eq!(
                t.in_set.load(Ordering::SeqCst),
                20 * (n - 1),
                "n={n} relaxed={relaxed}"
            );
            assert_eq!(t.rec.total(), 20 * (n - 1));
            let s = m.stats();
            assert_eq!(s.smis, 20);
            assert_eq!(s.ipis_sent, 0, "no IPI with broadcast SMIs");
            assert_eq!(s.broadcasts, 20);
        }
    }
}

/// §10.2 unicast SMI from the BSP: traditional pulls the others in with
/// SMI IPIs; relaxed runs at once and pulls them in on request
/// (WaitForAllProcessor).
#[test]
fn unicast_smi_from_the_bsp() {
    for relaxed in MODES {
        for n in SIZES {
            let m = Machine::start(
                Options::new(n)
                    .relaxed(relaxed)
                    .clock(Clock::Real)
                    .timeouts_us(50_000, 10_000_000),
            );
            let results = Arc::new(std::sync::Mutex::new(Vec::new()));
            let rec: Arc<Record> = Arc::from(Record::new(n));
            let (res, r) = (results.clone(), rec.clone());
            m.sim.set_handler(move |sim, bsp| {
                let mut out = vec![bsp];
                if relaxed {
                    out.push(wait_for_all(sim, false).0);
                    out.push(wait_for_all(sim, true).0);
                    sim.pump_until(|| (0..n).all(|c| c == bsp || sim.joined(c)));
                } else {
                    out.push(wait_for_all(sim, true).0);
                }
                let mut st = vec![Status(0); n];
                sim.broadcast(p2(proc_count), 0, ptr(&r), None, Some(&mut st));
                out.push(st.iter().filter(|&&s| s == Status::SUCCESS).count());
                res.lock().unwrap().push(out);
            });
            m.unicast_smi(0);
            m.wait_smis(1, 60);
            m.assert_balanced();
            let got = results.lock().unwrap().clone();
            if relaxed {
                assert_eq!(
                    got,
                    vec![vec![0, Status::TIMEOUT.0, Status::SUCCESS.0, n - 1]],
                    "n={n}: BSP alone, then all pulled in"
                );
            } else {
                assert_eq!(
                    got,
                    vec![vec![0, Status::SUCCESS.0, n - 1]],
                    "n={n}: all pulled in before handlers"
                );
            }
            assert!(m.stats().ipis_sent >= (n - 1) as u64);
        }
    }
}

/// §10.3 SMI triggered by an AP: with a fixed BSP the AP pulls the BSP in
/// with an SMI IPI; with election the AP becomes the BSP.
#[test]
fn smi_from_an_ap() {
    for relaxed in MODES {
        for n in SIZES {
            for election in [false, true] {
                let mut o = Options::new(n)
                    .relaxed(relaxed)
                    .clock(Clock::Real)
                    .timeouts_us(50_000, 10_000_000);
                if !election {
                    o = o.fixed_bsp(0);
                }
                let m = Machine::start(o);
                let t = tally(m.sim, false);
                m.unicast_smi(1);
                m.wait_smis(1, 60);
                m.assert_balanced();
                let bsps = t.bsps.lock().unwrap().clone();
                assert_eq!(
                    bsps,
                    vec![if election { 1 } else { 0 }],
                    "n={n} relaxed={relaxed}"
                );
                let ipis = m.sim.ipis.lock().unwrap().clone();
                if !election {
                    assert!(ipis.contains(&apic(0)), "the AP sent the BSP an SMI IPI");
                }
                if !relaxed {
                    assert_eq!(
                        t.in_set.load(Ordering::SeqCst),
                        n - 1,
                        "traditional: everyone pulled in"
                    );
                }
            }
        }
    }
}

/// §10.3 as OVMF runs it without broadcast SMIs: relaxed mode, election,
/// and a platform hook that names CPU 0 the only BSP (OVMF's names the
/// boot CPU). An SMI raised on an AP alone (an OS writing a UEFI variable
/// there) finds no BSP; after the first timeout the AP sends the last
/// SMI's BSP an SMI IPI, that CPU comes in, wins the election and runs the
/// handlers: the MMI is not lost. [DIFF] EDK2's AP gives up without an
/// IPI (the BSP is not known) and the MMI never runs.
#[test]
fn smi_on_an_ap_the_platform_will_not_elect() {
    for n in [2, 4] {
        let m = Machine::start(
            Options::new(n)
                .relaxed(true)
                .clock(Clock::Real)
                .timeout_us(20_000),
        );
        m.sim.preferred_bsp.store(0, Ordering::SeqCst);
        let t = tally(m.sim, false);
        m.unicast_smi(0);
        m.wait_smis(1, 60);
        assert!(m.sim.ipis.lock().unwrap().is_empty(), "n={n}: no AP asked");
        for k in 2..=4 {
            let ap = 1 + k % (n - 1);
            m.unicast_smi(ap);
            m.wait_smis(k, 60);
            m.assert_balanced();
            assert_eq!(
                *t.bsps.lock().unwrap(),
                vec![0; k],
                "n={n}: SMI {k} raised on CPU {ap}"
            );
        }
        let ipis = m.sim.ipis.lock().unwrap().clone();
        assert!(
            ipis.len() >= 3 && ipis.iter().all(|&a| a == apic(0)),
            "n={n}: {ipis:?}"
        );
        assert_eq!(m.stats().smis, 4);
    }
}

/// §10.7 late AP, traditional: it arrives after the door is locked, does
/// not join, does not disturb the SMI, and leaves when the BSP ends it.
#[test]
fn late_ap_traditional() {
    for n in SIZES {
        let sim = Sim::new(
            Options::new(n)
                .clock(Clock::Manual { per_pause: 100_000 })
                .timeout_us(1_000),
        );
        let late = n - 1;
        let checks = Checks::new();
        let rec: Arc<Record> = Arc::from(Record::new(n));
        let (c, r) = (checks.clone(), rec.clone());
        sim.set_handler(move |sim, _| {
            sim.step(late); // arrives now: the door is locked
            c.eq(
                "late CPU is LATE",
                sim.instance()
                    .cpu(late)
                    .unwrap()
                    .phase
                    .load(Ordering::SeqCst),
                mm_mp::rendezvous::phase::LATE,
            );
            let mut st = vec![Status(0); n];
            c.eq(
                "broadcast",
                sim.broadcast(p2(proc_count), 0, ptr(&r), None, Some(&mut st)),
                Status::SUCCESS,
            );
            c.eq("late CPU not in the set", st[late], Status::NOT_STARTED);
            c.eq(
                "dispatch to it",
                sim.dispatch(p2(proc_count), late, 0, ptr(&r), None, None),
                Status::INVALID_PARAMETER,
            );
            c.eq("not all arrived", wait_for_all(sim, true), Status::TIMEOUT);
        });
        let order: Vec<usize> = (0..n - 1).collect();
        sim.smi_stepped(&order);
        // The late CPU leaves once the SMI is over.
        assert!(sim.step(late), "late CPU leaves after the SMI");
        checks.assert_ok(5);
        assert_eq!(rec.runs()[late], 0);
        let inst = sim.instance();
        assert_eq!(inst.arrival().value(), 0);
        for c in 0..n {
            assert_eq!(inst.run_sem(c).unwrap().value(), 0);
        }
        let mut s = mm_mp::ffi::MmMpStatistics::default();
        // SAFETY: valid instance and out-pointer.
        unsafe { mm_mp::ffi::MmMpGetStatistics(sim.inst, &mut s) };
        assert_eq!((s.late_cpus, s.smis), (1, 1));
        assert!(s.timeouts >= 1 && s.ipis_sent >= 1);
    }
}

/// §10.7 late AP, relaxed: it checks in after the BSP locked the door at
/// the end of the handlers; it neither joins nor disturbs the SMI.
#[test]
fn late_ap_relaxed() {
    for n in SIZES {
        let sim = Sim::new(Options::new(n).relaxed(true).fixed_bsp(0));
        let late = n - 1;
        sim.smi_stepped(&[]); // no CPU: only sets up the scheduler
        assert!(!sim.step(1)); // AP1 checks in, waits for the BSP
        assert!(!sim.step(0)); // BSP: handlers, door locked, waits for AP1 to be present
        assert!(!sim.step(late)); // too late: door locked
        assert_eq!(
            sim.instance()
                .cpu(late)
                .unwrap()
                .phase
                .load(Ordering::SeqCst),
            mm_mp::rendezvous::phase::LATE
        );
        let (mut bsp_done, mut ap_done, mut late_done) = (false, false, false);
        for _ in 0..10 {
            ap_done = ap_done || sim.step(1);
            if !late_done {
                late_done = sim.step(late);
                assert!(
                    !late_done || bsp_done,
                    "the late CPU leaves only after the SMI"
                );
            }
            bsp_done = bsp_done || sim.step(0);
        }
        assert!(bsp_done && ap_done && late_done);
        assert_eq!(sim.foundation_calls.load(Ordering::SeqCst), 1);
        let inst = sim.instance();
        assert_eq!(inst.arrival().value(), 0);
        for c in 0..n {
            assert_eq!(inst.run_sem(c).unwrap().value(), 0);
        }
        let mut s = mm_mp::ffi::MmMpStatistics::default();
        // SAFETY: valid instance and out-pointer.
        unsafe { mm_mp::ffi::MmMpGetStatistics(sim.inst, &mut s) };
        assert_eq!((s.late_cpus, s.smis), (1, 1), "n={n}");
    }
}

/// §10.8 an AP that never arrives: bounded waits, IPIs, a clear status,
/// later SMIs unaffected; once it is back it joins again.
#[test]
fn ap_that_never_arrives() {
    for relaxed in MODES {
        for n in SIZES {
            let m = Machine::start(
                Options::new(n)
                    .relaxed(relaxed)
                    .clock(Clock::Real)
                    .timeout_us(50_000),
            );
            let missing = n - 1;
            m.sim.dead[missing].store(true, Ordering::SeqCst);
            let t = tally(m.sim, relaxed);
            for i in 1..=3 {
                m.broadcast_smi();
                m.wait_smis(i, 60);
                m.assert_balanced();
            }
            assert_eq!(t.in_set.load(Ordering::SeqCst), 3 * (n - 2));
            if !relaxed {
                assert!(m.sim.ipis.lock().unwrap().contains(&apic(missing)));
                assert!(m.stats().timeouts >= 3);
            }
            // It comes back: its stale IPI gives a spurious SMI; then it joins.
            m.sim.dead[missing].store(false, Ordering::SeqCst);
            m.wait_smis(3, 60);
            m.broadcast_smi();
            m.wait_smis(4, 60);
            m.assert_balanced();
            assert_eq!(
                t.in_set.load(Ordering::SeqCst),
                3 * (n - 2) + n - 1,
                "n={n} relaxed={relaxed}"
            );
        }
    }
}

/// §10.8 a BSP that never arrives (fixed BSP): the APs send it an IPI,
/// give up after the second timeout, check out and leave.
#[test]
fn bsp_that_never_arrives() {
    for relaxed in MODES {
        let m = Machine::start(
            Options::new(4)
                .relaxed(relaxed)
                .clock(Clock::Real)
                .timeout_us(50_000)
                .fixed_bsp(0),
        );
        m.sim.dead[0].store(true, Ordering::SeqCst);
        let t = tally(m.sim, false);
        m.broadcast_smi();
        let start = std::time::Instant::now();
        while !(m.idle() && (1..4).all(|c| !m.sim.pending[c].load(Ordering::SeqCst)))
            || start.elapsed().as_millis() < 20
        {
            std::thread::yield_now();
        }
        assert_eq!(m.sim.foundation_calls.load(Ordering::SeqCst), 0);
        m.assert_balanced();
        assert!(m.sim.ipis.lock().unwrap().contains(&apic(0)));
        assert!(m.stats().timeouts >= 3, "each AP timed out");
        // The BSP is back: the next SMI works (its pending IPI starts it).
        m.sim.dead[0].store(false, Ordering::SeqCst);
        m.broadcast_smi();
        m.wait_smis(1, 60);
        m.assert_balanced();
        assert_eq!(t.bsps.lock().unwrap().clone(), vec![0]);
    }
}

/// §10.8 a procedure that never returns: with a time source the BSP marks
/// the AP lost after the second timeout, reports it, and the machine keeps
/// taking SMIs; the AP rejoins once its procedure returns.
#[test]
fn stuck_procedure_is_bounded() {
    for relaxed in MODES {
        for n in SIZES {
            let m = Machine::start(
                Options::new(n)
                    .relaxed(relaxed)
                    .clock(Clock::Real)
                    .timeout_us(50_000),
            );
            let gate: Arc<Record> = Arc::from(Record::new(n));
            gate.gate.store(false, Ordering::SeqCst);
            let status = Arc::new(std::sync::Mutex::new(Status(0)));
            let first = Arc::new(AtomicUsize::new(1));
            let counting: Arc<Record> = Arc::from(Record::new(n));
            let back = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (g, st, f, cnt, back2) = (
                gate.clone(),
                status.clone(),
                first.clone(),
                counting.clone(),
                back.clone(),
            );
            let stuck = 1;
            m.sim.set_handler(move |sim, bsp| {
                if f.swap(0, Ordering::SeqCst) == 1 {
                    sim.pump_until(|| sim.joined(stuck) || bsp == stuck);
                    let mut t: MmCompletion = NULL_TOKEN;
                    // The status word must outlive the SMI: keep it in the Arc.
                    let p = &mut *st.lock().unwrap() as *mut Status;
                    // SAFETY: `p` points into the Arc'd mutex, alive for the test.
                    let target = unsafe { &mut *p };
                    let r = sim.dispatch(
                        p2(proc_gated),
                        stuck,
                        0,
                        Arc::as_ptr(&g) as *mut _,
                        Some(&mut t),
                        Some(target),
                    );
                    assert_eq!(r, Status::SUCCESS);
                } else {
                    let others: Vec<usize> = (0..n)
                        .filter(|&c| c != bsp && (c != stuck || back2.load(Ordering::SeqCst)))
                        .collect();
                    sim.pump_until(|| others.iter().all(|&c| sim.joined(c)));
                    let _ =
                        sim.broadcast(p2(proc_count), 0, Arc::as_ptr(&cnt) as *mut _, None, None);
                }
            });
            // If an assertion fails, let the stuck AP go so the machine can stop.
            let _open = OpenOnDrop(gate.clone());
            // Make sure CPU 0 is the BSP so CPU 1 is an AP.
            m.sim.preferred_bsp.store(0, Ordering::SeqCst);
            m.broadcast_smi();
            let t0 = std::time::Instant::now();
            while m.sim.foundation_calls.load(Ordering::SeqCst) < 1
                || (0..n).any(|c| c != stuck && m.sim.in_smm[c].load(Ordering::SeqCst))
            {
                assert!(
                    t0.elapsed().as_secs() < 30,
                    "SMI with a stuck AP never ended"
                );
                std::thread::yield_now();
            }
            assert_eq!(
                *status.lock().unwrap(),
                Status::TIMEOUT,
                "CPUStatus of the lost call"
            );
            assert_eq!(m.stats().lost_aps, 1);
            assert!(m
                .sim
                .logs
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("lost")));
            // More SMIs while the AP is still stuck.
            for i in 2..=4 {
                m.broadcast_smi();
                let t1 = std::time::Instant::now();
                while m.sim.foundation_calls.load(Ordering::SeqCst) < i
                    || (0..n).any(|c| {
                        c != stuck
                            && (m.sim.in_smm[c].load(Ordering::SeqCst)
                                || m.sim.pending[c].load(Ordering::SeqCst))
                    })
                {
                    assert!(t1.elapsed().as_secs() < 30);
                    std::thread::yield_now();
                }
            }
            assert_eq!(counting.runs()[stuck], 0);
            assert_eq!(counting.total(), 3 * (n - 2), "n={n} relaxed={relaxed}");
            // The procedure returns: the AP leaves without touching anything.
            gate.gate.store(true, Ordering::SeqCst);
            m.wait_smis(4, 60);
            assert_eq!(
                *status.lock().unwrap(),
                Status::TIMEOUT,
                "late status discarded"
            );
            m.sim.pending[stuck].store(false, Ordering::SeqCst);
            back.store(true, Ordering::SeqCst);
            m.broadcast_smi();
            m.wait_smis(5, 60);
            m.assert_balanced();
            assert_eq!(counting.runs()[stuck], 1, "the AP rejoined");
        }
    }
}

struct OpenOnDrop(Arc<Record>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.gate.store(true, Ordering::SeqCst);
    }
}

/// MTRR rounds: every CPU saves, replaces and restores once per SMI.
#[test]
fn mtrr_rounds() {
    for relaxed in MODES {
        let n = 4;
        let m = Machine::start(
            Options::new(n)
                .relaxed(relaxed)
                .mtrrs(true)
                .clock(Clock::Real)
                .timeout_us(1_000_000),
        );
        let t = tally(m.sim, false);
        for i in 1..=5 {
            m.broadcast_smi();
            m.wait_smis(i, 60);
            m.assert_balanced();
        }
        for c in 0..n {
            let calls: Vec<usize> = m.sim.mtrr_calls[c]
                .iter()
                .map(|x| x.load(Ordering::SeqCst))
                .collect();
            assert_eq!(calls, vec![5, 5, 5], "CPU {c} relaxed={relaxed}");
        }
        // With MTRR swapping even relaxed mode gathers every AP first.
        assert_eq!(t.in_set.load(Ordering::SeqCst), 5 * (n - 1));
    }
}

/// The platform's BspElection hook names the BSP.
#[test]
fn platform_names_the_bsp() {
    let m = Machine::start(Options::new(4).clock(Clock::Real).timeout_us(1_000_000));
    m.sim.preferred_bsp.store(2, Ordering::SeqCst);
    let t = tally(m.sim, false);
    for i in 1..=10 {
        m.broadcast_smi();
        m.wait_smis(i, 60);
    }
    assert_eq!(t.bsps.lock().unwrap().clone(), vec![2; 10]);
}

/// BEHAVIOUR.md §6.5: CPUs the platform reports SMI-blocked count as arrived, so
/// even without a time source a missing-but-blocked CPU does not hang it.
#[test]
fn blocked_cpus_count_as_arrived() {
    let m = Machine::start(Options::new(4));
    m.sim.dead[3].store(true, Ordering::SeqCst);
    m.sim.blocked.store(1, Ordering::SeqCst);
    let res = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r = res.clone();
    m.sim
        .set_handler(move |sim, _| r.lock().unwrap().push(wait_for_all(sim, true)));
    m.broadcast_smi();
    m.wait_smis(1, 60);
    m.assert_balanced();
    assert_eq!(res.lock().unwrap().clone(), vec![Status::SUCCESS]);
}
