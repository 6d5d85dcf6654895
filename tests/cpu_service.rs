//! EFI_SMM_CPU_SERVICE_PROTOCOL and CPU hot-plug (BEHAVIOUR.md §5): every row of
//! §5.2, the §5.3 timing (pending operations applied at SMI exit, a
//! hot-added CPU's init-only first SMI), the MM MP interaction (BEHAVIOUR.md §2
//! "present AP"), hot-add / hot-remove / SwitchBsp / WhoAmI on the
//! simulated machine in both sync modes with 4 and 8 CPUs, and a long
//! add/remove cycle checking for stale state.
mod common;

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use mm_mp::cpus::{OP_ADD, OP_NONE, OP_REMOVE, OP_SWITCH_BSP};
use mm_mp::efi::{ProcessorInformation, Status, SystemContext, INVALID_APIC_ID};
use mm_mp::ffi::MmMpGetCpuServiceProtocol;

const SIZES: [usize; 2] = [4, 8];
const MODES: [bool; 2] = [false, true];

fn ptr<T>(r: &Arc<T>) -> *mut c_void {
    Arc::as_ptr(r) as *mut c_void
}

fn op(sim: &Sim, cpu: usize) -> u32 {
    sim.instance().cpu(cpu).unwrap().pending_op()
}

/// Run `f` as the handler of one SMI with every non-empty CPU on real
/// threads, fixed BSP 0 (traditional: every AP present in the handler).
fn in_smi(sim: &Sim, f: impl Fn(&Sim, usize) + Send + Sync + 'static) {
    sim.set_handler(f);
    sim.smi_all();
}

#[test]
fn protocol_pointer() {
    let sim = Sim::new(Options::new(2));
    // SAFETY: NULL and a garbage instance are rejected.
    unsafe {
        assert!(MmMpGetCpuServiceProtocol(std::ptr::null_mut()).is_null());
        let mut junk = [0u64; 64];
        assert!(MmMpGetCpuServiceProtocol(junk.as_mut_ptr() as *mut _).is_null());
    }
    let cs = sim.cs();
    // NULL `This` on every member.
    let mut n = 0usize;
    let mut info = ProcessorInformation::EMPTY;
    // SAFETY: NULL This is rejected before anything is touched.
    unsafe {
        let null = std::ptr::null();
        assert_eq!(
            (cs.get_processor_info)(null, 0, &mut info),
            Status::INVALID_PARAMETER
        );
        assert_eq!((cs.switch_bsp)(null, 0), Status::INVALID_PARAMETER);
        assert_eq!(
            (cs.add_processor)(null, 5, &mut n),
            Status::INVALID_PARAMETER
        );
        assert_eq!((cs.remove_processor)(null, 0), Status::INVALID_PARAMETER);
        assert_eq!((cs.who_am_i)(null, &mut n), Status::INVALID_PARAMETER);
        assert_eq!(
            (cs.register_exception_handler)(std::ptr::null_mut(), 0, None),
            Status::INVALID_PARAMETER
        );
    }
}

/// §5.2 GetProcessorInfo: every row.
#[test]
fn get_processor_info_rows() {
    let sim = Sim::new(Options::new(4).empty(&[2]));
    let table = processor_table(&sim.opts);
    assert_eq!(sim.processor_info(4).0, Status::INVALID_PARAMETER);
    assert_eq!(sim.processor_info(usize::MAX).0, Status::INVALID_PARAMETER);
    let cs = sim.cs();
    // SAFETY: our protocol; NULL buffer is rejected.
    let st = unsafe { (cs.get_processor_info)(cs, 0, std::ptr::null_mut()) };
    assert_eq!(st, Status::INVALID_PARAMETER);
    assert_eq!(sim.processor_info(2).0, Status::NOT_FOUND);
    for c in [0, 1, 3] {
        let (st, info) = sim.processor_info(c);
        assert_eq!(st, Status::SUCCESS);
        assert_eq!(info.processor_id, table[c].processor_id);
        assert_eq!(info.status_flag, table[c].status_flag);
        assert_eq!(info.location, table[c].location);
        assert_eq!(info.location2(), table[c].location2());
    }
}

/// §5.2 SwitchBsp: every row, inside an SMI (current BSP 0).
#[test]
fn switch_bsp_rows() {
    let sim = Sim::new(Options::new(4).empty(&[3]).hot_plug(true).fixed_bsp(0));
    let checks = Checks::new();
    let c = checks.clone();
    in_smi(&sim, move |sim, bsp| {
        c.eq("bsp", bsp, 0);
        c.eq("n", sim.switch_bsp(4), Status::INVALID_PARAMETER);
        c.eq("MAX", sim.switch_bsp(usize::MAX), Status::INVALID_PARAMETER);
        c.eq("empty", sim.switch_bsp(3), Status::NOT_FOUND);
        c.eq("current BSP", sim.switch_bsp(0), Status::UNSUPPORTED);
        c.eq("remove 2", sim.remove_processor(2), Status::SUCCESS);
        c.eq(
            "pending remove: empty now",
            sim.switch_bsp(2),
            Status::NOT_FOUND,
        );
        c.eq("ok", sim.switch_bsp(1), Status::SUCCESS);
        c.eq("op", op(sim, 1), OP_SWITCH_BSP);
        c.eq("pending op", sim.switch_bsp(1), Status::UNSUPPORTED);
        c.eq(
            "candidate",
            sim.instance()
                .control()
                .bsp_candidate
                .load(Ordering::SeqCst),
            1,
        );
    });
    checks.assert_ok(10);
    // Applied (cleared) at SMI exit.
    assert_eq!(op(&sim, 1), OP_NONE);
    assert_eq!(op(&sim, 2), OP_NONE);
}

/// §5.2 SwitchBsp takes effect only with BSP election.
#[test]
fn switch_bsp_without_election_has_no_effect() {
    let sim = Sim::new(Options::new(4).fixed_bsp(0));
    let bsps = Arc::new(Mutex::new(Vec::new()));
    let b = bsps.clone();
    sim.set_handler(move |sim, bsp| {
        b.lock().unwrap().push((bsp, sim.switch_bsp(2)));
    });
    sim.smi_all();
    sim.smi_all();
    let got = bsps.lock().unwrap().clone();
    assert_eq!(got, vec![(0, Status::SUCCESS), (0, Status::SUCCESS)]);
}

/// §5.2 AddProcessor: every row.
#[test]
fn add_processor_rows() {
    // Hot-plug disabled.
    let sim = Sim::new(Options::new(4).empty(&[3]));
    sim.set_hot_plug_id(3, 0x777);
    assert_eq!(sim.add_processor(0x777).0, Status::UNSUPPORTED);

    let sim = Sim::new(Options::new(4).empty(&[2, 3]).hot_plug(true));
    let cs = sim.cs();
    // SAFETY: our protocol; NULL out-pointer is rejected.
    let st = unsafe { (cs.add_processor)(cs, 0x777, std::ptr::null_mut()) };
    assert_eq!(st, Status::INVALID_PARAMETER);
    assert_eq!(
        sim.add_processor(INVALID_APIC_ID).0,
        Status::INVALID_PARAMETER
    );
    assert_eq!(sim.add_processor(apic(1)).0, Status::ALREADY_STARTED);
    // No slot reserved for that APIC ID.
    assert_eq!(sim.add_processor(0x777).0, Status::INVALID_PARAMETER);
    // Reserved, but for a populated slot: not empty, no slot.
    sim.set_hot_plug_id(1, 0x778);
    assert_eq!(sim.add_processor(0x778).0, Status::INVALID_PARAMETER);
    // Reserved slot 3.
    sim.set_hot_plug_id(3, 0x777);
    let (st, n) = sim.add_processor(0x777);
    assert_eq!((st, n), (Status::SUCCESS, 3));
    assert_eq!(op(&sim, 3), OP_ADD);
    let (st, info) = sim.processor_info(3);
    assert_eq!(st, Status::SUCCESS);
    assert_eq!(info.processor_id, 0x777);
    assert_eq!(info.status_flag, 0);
    let (l, l2) = location_of(0x777);
    assert_eq!(info.location, l);
    assert_eq!(info.location2(), l2);
    assert_eq!(sim.add_processor(0x777).0, Status::ALREADY_STARTED);
    // WhoAmI finds the new CPU (map updated).
    assert_eq!(
        sim.instance().slot_of_apic_id(0x777),
        Some(3),
        "APIC ID map"
    );

    // Without the location hook: zero locations.
    let sim = Sim::new(
        Options::new(2)
            .empty(&[1])
            .hot_plug(true)
            .location_hook(false),
    );
    sim.set_hot_plug_id(1, 0x900);
    assert_eq!(sim.add_processor(0x900), (Status::SUCCESS, 1));
    let info = sim.processor_info(1).1;
    assert_eq!(info.location, Default::default());
    assert_eq!(info.location2(), Default::default());

    // Without the HotPlugApicId array: no slot.
    let sim = Sim::new(
        Options::new(2)
            .empty(&[1])
            .hot_plug(true)
            .hot_plug_array(false),
    );
    sim.set_hot_plug_id(1, 0x900);
    assert_eq!(sim.add_processor(0x900).0, Status::INVALID_PARAMETER);
}

/// §5.2 RemoveProcessor: every row, inside an SMI (current BSP 0).
#[test]
fn remove_processor_rows() {
    let sim = Sim::new(Options::new(4).empty(&[3]));
    assert_eq!(sim.remove_processor(1), Status::UNSUPPORTED, "disabled");

    let sim = Sim::new(Options::new(4).empty(&[3]).hot_plug(true).fixed_bsp(0));
    let checks = Checks::new();
    let c = checks.clone();
    in_smi(&sim, move |sim, bsp| {
        c.eq("bsp", bsp, 0);
        c.eq("n", sim.remove_processor(4), Status::INVALID_PARAMETER);
        c.eq(
            "MAX",
            sim.remove_processor(usize::MAX),
            Status::INVALID_PARAMETER,
        );
        c.eq("empty", sim.remove_processor(3), Status::INVALID_PARAMETER);
        c.eq("current BSP", sim.remove_processor(0), Status::UNSUPPORTED);
        c.eq("switch 1", sim.switch_bsp(1), Status::SUCCESS);
        c.eq("pending op", sim.remove_processor(1), Status::UNSUPPORTED);
        c.eq("ok", sim.remove_processor(2), Status::SUCCESS);
        c.eq("op", op(sim, 2), OP_REMOVE);
        c.eq("empty at once", sim.processor_info(2).0, Status::NOT_FOUND);
        c.eq("hot-plug id", sim.hot_plug_id(2), INVALID_APIC_ID);
        c.eq(
            "WhoAmI of the removed CPU",
            sim.as_cpu(2, || sim.who_am_i().0),
            Status::NOT_FOUND,
        );
        c.eq(
            "again: empty",
            sim.remove_processor(2),
            Status::INVALID_PARAMETER,
        );
    });
    checks.assert_ok(12);
    assert_eq!(op(&sim, 2), OP_NONE);
    assert_eq!(sim.instance().apic_map().live(), 2);

    // Without the HotPlugApicId array: the slot is emptied, and there is
    // no entry to write.
    let sim = Sim::new(
        Options::new(4)
            .hot_plug(true)
            .hot_plug_array(false)
            .fixed_bsp(0),
    );
    let checks = Checks::new();
    let c = checks.clone();
    in_smi(&sim, move |sim, _| {
        c.eq("no array: ok", sim.remove_processor(2), Status::SUCCESS);
        c.eq("emptied", sim.processor_info(2).0, Status::NOT_FOUND);
    });
    checks.assert_ok(2);
    assert_eq!(
        sim.hot_plug_id(2),
        apic(2),
        "the platform's array untouched"
    );
}

/// §5.2 WhoAmI: every row.
#[test]
fn who_am_i_rows() {
    let sim = Sim::new(Options::new(8).empty(&[5]));
    let cs = sim.cs();
    // SAFETY: our protocol; NULL is rejected.
    let st = unsafe { (cs.who_am_i)(cs, std::ptr::null_mut()) };
    assert_eq!(st, Status::INVALID_PARAMETER);
    for c in 0..8 {
        let got = sim.as_cpu(c, || sim.who_am_i());
        if c == 5 {
            assert_eq!(got.0, Status::NOT_FOUND);
        } else {
            assert_eq!(got, (Status::SUCCESS, c));
        }
    }
    // An APIC ID the table does not know.
    assert_eq!(sim.as_cpu(NONE, || sim.who_am_i().0), Status::NOT_FOUND);
    assert_eq!(sim.as_cpu(100, || sim.who_am_i().0), Status::NOT_FOUND);
    // No GetApicId hook.
    let mut o = Options::new(2);
    o.apic_hook = false;
    let sim = Sim::new(o);
    assert_eq!(sim.as_cpu(0, || sim.who_am_i().0), Status::NOT_FOUND);
}

unsafe extern "efiapi" fn handler(_t: isize, _c: SystemContext) {}

/// §5.2 RegisterExceptionHandler: forwarded; no hook → UNSUPPORTED.
#[test]
fn register_exception_handler_rows() {
    let sim = Sim::new(Options::new(2));
    let cs = sim.cs() as *const _ as *mut mm_mp::efi::SmmCpuServiceProtocol;
    // SAFETY: our protocol.
    let st = unsafe { ((*cs).register_exception_handler)(cs, 14, Some(handler)) };
    assert_eq!(st, Status::SUCCESS);
    let got = sim.exception_handlers.lock().unwrap().clone();
    assert_eq!(got, vec![(14, handler as *const () as usize)]);

    let sim = Sim::new(Options::new(2).exception_hook(false));
    let cs = sim.cs() as *const _ as *mut mm_mp::efi::SmmCpuServiceProtocol;
    // SAFETY: our protocol.
    let st = unsafe { ((*cs).register_exception_handler)(cs, 14, Some(handler)) };
    assert_eq!(st, Status::UNSUPPORTED);
}

// -- the machine ---------------------------------------------------------------

/// Per-CPU answers of WhoAmI called from a broadcast procedure.
struct Who {
    sim: &'static Sim,
    answers: Vec<AtomicUsize>,
}

unsafe extern "efiapi" fn proc_who_am_i(arg: *mut c_void) -> Status {
    // SAFETY: tests pass a live `Who`.
    let w = unsafe { &*(arg as *const Who) };
    let (st, n) = w.sim.who_am_i();
    if st != Status::SUCCESS {
        return st;
    }
    if let Some(a) = w.answers.get(current_cpu()) {
        a.store(n, Ordering::SeqCst);
    }
    Status::SUCCESS
}

/// Wait (in the handler) until every live AP is present: relaxed mode
/// runs the handlers before the APs arrive.
fn wait_present(sim: &Sim, bsp: usize) {
    let n = sim.opts.cpus;
    let live: Vec<usize> = (0..n)
        .filter(|&c| {
            c != bsp && !sim.dead[c].load(Ordering::SeqCst) && sim.instance().is_expected(c)
        })
        .collect();
    sim.pump_until(|| live.iter().all(|&c| sim.joined(c)));
}

/// A hot-plug machine; `fixed_bsp`: BSP 0 without election.
fn machine(n: usize, relaxed: bool, empty: &[usize], fixed_bsp: bool) -> Machine {
    let mut o = Options::new(n)
        .relaxed(relaxed)
        .hot_plug(true)
        .empty(empty)
        .clock(Clock::Real)
        .timeout_us(1_000_000);
    if fixed_bsp {
        o = o.fixed_bsp(0);
    }
    Machine::start(o)
}

/// WhoAmI on every CPU: the BSP in the handler, each AP through a
/// broadcast procedure; the answer is the CPU's index.
#[test]
fn who_am_i_on_every_cpu() {
    for relaxed in MODES {
        for n in SIZES {
            let m = machine(n, relaxed, &[], false);
            let who = Arc::new(Who {
                sim: m.sim,
                answers: (0..n).map(|_| AtomicUsize::new(NONE)).collect(),
            });
            let checks = Checks::new();
            let (c, w) = (checks.clone(), who.clone());
            m.sim.set_handler(move |sim, bsp| {
                c.eq("BSP", sim.who_am_i(), (Status::SUCCESS, bsp));
                wait_present(sim, bsp);
                let mut st = vec![Status(0x77); n];
                c.eq(
                    "broadcast",
                    sim.broadcast(p2(proc_who_am_i), 0, ptr(&w), None, Some(&mut st)),
                    Status::SUCCESS,
                );
                for (i, s) in st.iter().enumerate() {
                    if i != bsp {
                        c.eq("AP status", *s, Status::SUCCESS);
                    }
                }
                if let Some(a) = w.answers.get(bsp) {
                    a.store(bsp, Ordering::SeqCst);
                }
            });
            m.broadcast_smi();
            m.wait_smis(1, 60);
            m.assert_balanced();
            checks.assert_ok(n + 1);
            for (i, a) in who.answers.iter().enumerate() {
                assert_eq!(a.load(Ordering::SeqCst), i, "n={n} relaxed={relaxed}");
            }
        }
    }
}

/// Counts the procedure runs of one broadcast and what the handler saw.
struct Seen {
    rec: Arc<Record>,
    results: Mutex<Vec<String>>,
}

/// §10.5 hot-add on the machine: the new CPU's slot starts empty and dead;
/// the platform reserves the slot (HotPlugApicId); AddProcessor in one
/// SMI's handler; the CPU's first SMI only initialises it; from the next
/// SMI it is an ordinary AP and runs a broadcast procedure.
#[test]
fn hot_add() {
    for relaxed in MODES {
        for n in SIZES {
            let new = n - 1;
            let m = machine(n, relaxed, &[new], true);
            let checks = Checks::new();
            let rec: Arc<Record> = Arc::from(Record::new(n));

            // SMI 1: AddProcessor.
            m.sim.set_hot_plug_id(new, apic(new));
            let (c, r) = (checks.clone(), rec.clone());
            m.sim.set_handler(move |sim, bsp| {
                wait_present(sim, bsp);
                c.eq("add", sim.add_processor(apic(new)), (Status::SUCCESS, new));
                c.eq("op", op(sim, new), OP_ADD);
                c.eq("count", sim.number_of_processors(), (Status::SUCCESS, n));
                c.eq(
                    "not present yet: dispatch",
                    sim.dispatch(p2(proc_count), new, 0, ptr(&r), None, None),
                    Status::INVALID_PARAMETER,
                );
                let mut st = vec![Status(0x77); n];
                c.eq(
                    "broadcast",
                    sim.broadcast(p2(proc_count), 0, ptr(&r), None, Some(&mut st)),
                    Status::SUCCESS,
                );
                c.eq("new CPU not in the set", st[new], Status::NOT_STARTED);
            });
            m.broadcast_smi();
            m.wait_smis(1, 60);
            m.assert_balanced();
            checks.assert_ok(6);
            let inst = m.sim.instance();
            assert_eq!(op(m.sim, new), OP_NONE, "Add applied at SMI exit");
            assert!(inst.cpu(new).unwrap().needs_init());
            assert!(!inst.is_expected(new), "not expected before its init SMI");
            assert_eq!(rec.runs()[new], 0);
            assert_eq!(rec.total(), n - 2);

            // Its first SMI (the platform's relocation SMI): init only.
            let entries = m.sim.entries.load(Ordering::SeqCst);
            m.revive(new);
            m.sim.pending[new].store(true, Ordering::SeqCst);
            m.wait_smis(1, 60);
            while inst.cpu(new).unwrap().needs_init() {
                std::thread::yield_now();
            }
            m.wait_smis(1, 60);
            m.assert_balanced();
            assert_eq!(
                m.sim.entries.load(Ordering::SeqCst),
                entries,
                "the init SMI does not join the rendezvous"
            );
            assert_eq!(m.sim.foundation_calls.load(Ordering::SeqCst), 1);
            // An init SMI taken between two SMIs counts for the next one: its
            // BSP does not wait for the new CPU (`Instance::is_expected`);
            // from the SMI after that, it is expected.
            assert!(!inst.is_expected(new), "not waited for in the next SMI");
            m.sim.set_handler(|_, _| {});
            m.broadcast_smi();
            m.wait_smis(2, 60);
            m.assert_balanced();
            assert!(inst.is_expected(new));

            // SMI 2: an ordinary AP.
            let who = Arc::new(Who {
                sim: m.sim,
                answers: (0..n).map(|_| AtomicUsize::new(NONE)).collect(),
            });
            let seen = Arc::new(Seen {
                rec: Arc::from(Record::new(n)),
                results: Mutex::new(Vec::new()),
            });
            let (c, s, w) = (checks.clone(), seen.clone(), who.clone());
            m.sim.set_handler(move |sim, bsp| {
                wait_present(sim, bsp);
                let mut st = vec![Status(0x77); n];
                c.eq(
                    "broadcast",
                    sim.broadcast(p2(proc_count), 0, ptr(&s.rec), None, Some(&mut st)),
                    Status::SUCCESS,
                );
                c.eq("new CPU ran it", st[new], Status::SUCCESS);
                c.eq(
                    "who",
                    sim.broadcast(p2(proc_who_am_i), 0, ptr(&w), None, None),
                    Status::SUCCESS,
                );
                s.results.lock().unwrap().push(format!("bsp {bsp}"));
            });
            m.broadcast_smi();
            m.wait_smis(3, 60);
            m.assert_balanced();
            checks.assert_ok(9);
            assert_eq!(seen.rec.total(), n - 1, "n={n} relaxed={relaxed}");
            assert_eq!(seen.rec.runs()[new], 1);
            assert_eq!(who.answers[new].load(Ordering::SeqCst), new);
            let s = m.stats();
            assert_eq!(s.timeouts, 0, "n={n} relaxed={relaxed}: {s:?}");
            assert_eq!(s.smis, 3);
        }
    }
}

/// §10.6 hot-remove on the machine: RemoveProcessor in a handler; in that
/// SMI Dispatch to it and Broadcast fail (pending removal); after the SMI
/// the CPU is ejected and later SMIs neither expect nor include it.
#[test]
fn hot_remove() {
    for relaxed in MODES {
        for n in SIZES {
            let victim = n - 1;
            let m = machine(n, relaxed, &[], true);
            let checks = Checks::new();
            let rec: Arc<Record> = Arc::from(Record::new(n));
            let (c, r) = (checks.clone(), rec.clone());
            m.sim.set_handler(move |sim, bsp| {
                wait_present(sim, bsp);
                c.eq("remove", sim.remove_processor(victim), Status::SUCCESS);
                c.eq(
                    "dispatch",
                    sim.dispatch(p2(proc_count), victim, 0, ptr(&r), None, None),
                    Status::INVALID_PARAMETER,
                );
                c.eq(
                    "broadcast",
                    sim.broadcast(p2(proc_count), 0, ptr(&r), None, None),
                    Status::INVALID_PARAMETER,
                );
                c.eq("info", sim.processor_info(victim).0, Status::NOT_FOUND);
                c.eq("hot-plug id", sim.hot_plug_id(victim), INVALID_APIC_ID);
                c.eq("count", sim.number_of_processors(), (Status::SUCCESS, n));
            });
            let smis = 1;
            m.broadcast_smi();
            m.wait_smis(smis, 60);
            assert!(m.sim.instance().cpu(victim).unwrap().is_empty());
            assert_eq!(op(m.sim, victim), OP_NONE);
            m.kill(victim);
            m.assert_balanced();
            checks.assert_ok(6);
            assert_eq!(rec.total(), 0);
            assert!(!m.sim.instance().is_expected(victim));

            let rec2: Arc<Record> = Arc::from(Record::new(n));
            let (c, r) = (checks.clone(), rec2.clone());
            m.sim.set_handler(move |sim, bsp| {
                wait_present(sim, bsp);
                let mut st = vec![Status(0x77); n];
                c.eq(
                    "broadcast after",
                    sim.broadcast(p2(proc_count), 0, ptr(&r), None, Some(&mut st)),
                    Status::SUCCESS,
                );
                c.eq("victim not in the set", st[victim], Status::NOT_STARTED);
            });
            for k in 1..=3 {
                m.broadcast_smi();
                m.wait_smis(smis + k, 60);
                m.assert_balanced();
            }
            checks.assert_ok(12);
            assert_eq!(rec2.total(), 3 * (n - 2), "n={n} relaxed={relaxed}");
            assert_eq!(rec2.runs()[victim], 0);
            let s = m.stats();
            assert_eq!(s.timeouts, 0, "n={n} relaxed={relaxed}: {s:?}");
            assert_eq!(s.ipis_sent, 0);
        }
    }
}

/// §5.2 SwitchBsp across SMIs: the next SMI's BSP is the target; the one
/// after that is elected freely again.
#[test]
fn switch_bsp_across_smis() {
    for relaxed in MODES {
        for n in SIZES {
            let m = machine(n, relaxed, &[], false);
            let bsps = Arc::new(Mutex::new(Vec::new()));
            let targets = Arc::new(Mutex::new(Vec::new()));
            let checks = Checks::new();
            let (b, t, c) = (bsps.clone(), targets.clone(), checks.clone());
            let round = Arc::new(AtomicUsize::new(0));
            m.sim.set_handler(move |sim, bsp| {
                // No late AP may start an SMI of its own after this one.
                wait_present(sim, bsp);
                b.lock().unwrap().push(bsp);
                let k = round.fetch_add(1, Ordering::SeqCst);
                if k < 3 {
                    // A different CPU each time.
                    let target = (bsp + 1 + k) % n;
                    c.eq("switch", sim.switch_bsp(target), Status::SUCCESS);
                    c.eq("again", sim.switch_bsp(target), Status::UNSUPPORTED);
                    t.lock().unwrap().push(target);
                }
            });
            for i in 1..=4 {
                m.broadcast_smi();
                m.wait_smis(i, 60);
                m.assert_balanced();
            }
            checks.assert_ok(6);
            let bsps = bsps.lock().unwrap().clone();
            let targets = targets.lock().unwrap().clone();
            assert_eq!(bsps.len(), 4);
            assert_eq!(&bsps[1..4], &targets[..], "n={n} relaxed={relaxed}");
            assert_eq!(
                m.sim
                    .instance()
                    .control()
                    .bsp_candidate
                    .load(Ordering::SeqCst),
                u32::MAX,
                "candidate consumed"
            );
            for c in 0..n {
                assert_eq!(op(m.sim, c), OP_NONE);
            }
        }
    }
}

/// 3 → 4 → 3 CPUs, many times: add in one SMI, init SMI, join and run a
/// procedure in the next SMI where it is removed, eject. No stale state:
/// table, APIC ID map, expected count, pending operations, semaphores.
#[test]
fn add_remove_cycle() {
    const CYCLES: usize = 1000;
    for relaxed in MODES {
        let n = 4;
        let new = 3;
        let m = machine(n, relaxed, &[new], false);
        let inst = m.sim.instance();
        let checks = Checks::new();
        let rec: Arc<Record> = Arc::from(Record::new(n));
        let phase = Arc::new(AtomicUsize::new(0));
        let (c, r, p) = (checks.clone(), rec.clone(), phase.clone());
        m.sim.set_handler(move |sim, bsp| {
            let phase = p.load(Ordering::SeqCst);
            if phase == 2 {
                // The SMI right after the init SMI (see `hot_add`).
            } else if phase == 0 {
                wait_present(sim, bsp);
                c.eq("add", sim.add_processor(apic(new)), (Status::SUCCESS, new));
            } else {
                wait_present(sim, bsp);
                let mut st = vec![Status(0x77); n];
                c.eq(
                    "broadcast",
                    sim.broadcast(p2(proc_count), 0, ptr(&r), None, Some(&mut st)),
                    Status::SUCCESS,
                );
                if bsp != new {
                    c.eq("new CPU ran", st[new], Status::SUCCESS);
                }
                if bsp == new {
                    // It won the election: switch away, remove next time.
                    c.eq("switch", sim.switch_bsp((bsp + 1) % n), Status::SUCCESS);
                } else {
                    c.eq("remove", sim.remove_processor(new), Status::SUCCESS);
                }
            }
        });
        let mut smis = 0;
        for cycle in 0..CYCLES {
            // The platform reserves the slot, the OS raises the hot-plug SMI.
            m.sim.set_hot_plug_id(new, apic(new));
            phase.store(0, Ordering::SeqCst);
            m.broadcast_smi();
            smis += 1;
            m.wait_smis(smis, 60);
            assert_eq!(op(m.sim, new), OP_NONE);
            // Init SMI.
            m.revive(new);
            m.sim.pending[new].store(true, Ordering::SeqCst);
            while inst.cpu(new).unwrap().needs_init() {
                std::thread::yield_now();
            }
            m.wait_smis(smis, 60);
            phase.store(2, Ordering::SeqCst);
            m.broadcast_smi();
            smis += 1;
            m.wait_smis(smis, 60);
            // Join, run, get removed (the removal waits if it was the BSP).
            phase.store(1, Ordering::SeqCst);
            loop {
                m.broadcast_smi();
                smis += 1;
                m.wait_smis(smis, 60);
                if inst.cpu(new).unwrap().is_empty() {
                    break;
                }
            }
            m.kill(new);
            m.assert_balanced();
            assert_eq!(op(m.sim, new), OP_NONE, "cycle {cycle}");
            let map = inst.apic_map();
            assert_eq!(map.live(), 3, "cycle {cycle}: live map entries");
            assert!(map.tombstones() <= 1, "cycle {cycle}: tombstones pile up");
            let expected = (0..n).filter(|&i| inst.is_expected(i)).count();
            assert_eq!(expected, 3, "cycle {cycle}");
            assert_eq!(m.sim.hot_plug_id(new), INVALID_APIC_ID);
        }
        checks.assert_ok(CYCLES * 4);
        assert!(rec.runs()[new] >= CYCLES);
        let s = m.stats();
        assert_eq!(s.timeouts, 0, "relaxed={relaxed}: {s:?}");
        // Every add and every removal applied at an SMI's end, once.
        let mut h = mm_mp::ffi::MmMpHotPlugStatistics::default();
        // SAFETY: valid instance and out-pointer.
        let st = unsafe { mm_mp::ffi::MmMpGetHotPlugStatistics(m.sim.inst, &mut h) };
        assert_eq!(st, Status::SUCCESS);
        assert_eq!(
            (h.cpus_added, h.cpus_removed),
            (CYCLES as u64, CYCLES as u64),
            "{h:?}"
        );
        for c in 0..3 {
            assert_eq!(m.sim.as_cpu(c, || m.sim.who_am_i()), (Status::SUCCESS, c));
        }
        assert_eq!(m.sim.as_cpu(new, || m.sim.who_am_i()).0, Status::NOT_FOUND);
    }
}

/// Regression (found by tests/model.rs): SwitchBsp(c) in one SMI, then
/// RemoveProcessor(c) outside an SMI, left `c` the only CPU allowed to win
/// the next election: no CPU could ever become BSP again (every later SMI
/// hung without a time source, or was abandoned by every AP with one).
/// Removing the candidate now cancels its SwitchBsp.
#[test]
fn removing_the_switch_bsp_candidate_cancels_it() {
    for time in [false, true] {
        let clock = if time {
            Clock::Manual { per_pause: 10_000 }
        } else {
            Clock::None
        };
        let sim = Sim::new(Options::new(4).hot_plug(true).clock(clock));
        let bsps = Arc::new(Mutex::new(Vec::new()));
        let b = bsps.clone();
        sim.set_handler(move |sim, bsp| {
            let mut b = b.lock().unwrap();
            if b.is_empty() {
                assert_eq!(sim.switch_bsp(2), Status::SUCCESS);
            }
            b.push(bsp);
        });
        sim.smi_stepped(&[0, 1, 2, 3]);
        assert_eq!(sim.remove_processor(2), Status::SUCCESS);
        sim.blocked.store(0, Ordering::SeqCst);
        sim.smi_stepped(&[3, 0, 1]);
        sim.smi_stepped(&[1, 3, 0]);
        assert_eq!(*bsps.lock().unwrap(), vec![0, 3, 1], "time source: {time}");
        let mut s = mm_mp::ffi::MmMpStatistics::default();
        // SAFETY: valid instance and out-pointer.
        unsafe { mm_mp::ffi::MmMpGetStatistics(sim.inst, &mut s) };
        assert_eq!((s.smis, s.timeouts), (3, 0));
    }
}

/// Found by the C-ABI fuzzer: a hot-added CPU whose init-only SMI is the
/// same SMI as a rendezvous (the usual case with broadcast SMIs) never
/// checks in to it; the BSP must not wait for it — without a time source
/// it used to wait forever. Deterministic: the new CPU is stepped first,
/// before anyone else arrives. From the next SMI it is an ordinary AP.
/// (Relaxed mode: a CPU stepped after the BSP ended may start an SMI of
/// its own; only each step's first handler call is checked.)
#[test]
fn init_smi_during_a_rendezvous_is_not_waited_for() {
    for relaxed in MODES {
        let new = 2;
        let sim = Sim::new(
            Options::new(3)
                .relaxed(relaxed)
                .hot_plug(true)
                .empty(&[new]),
        );
        sim.set_hot_plug_id(new, apic(new));
        let checks = Checks::new();
        let first = Arc::new(AtomicBool::new(true));
        let (c, f) = (checks.clone(), first.clone());
        sim.set_handler(move |sim, _| {
            if f.swap(false, Ordering::SeqCst) {
                c.eq("add", sim.add_processor(apic(new)), (Status::SUCCESS, new));
            }
        });
        sim.smi_stepped(&[0, 1]);
        // The broadcast SMI that is the new CPU's first: it initialises
        // before CPUs 0 and 1 even arrive. No clock: a wait would hang.
        sim.set_handler(|_, _| {});
        sim.smi_stepped(&[new, 0, 1]);
        assert!(!sim.instance().cpu(new).unwrap().needs_init());
        // The next SMI: an ordinary AP, waited for and running procedures.
        let rec: Arc<Record> = Arc::from(Record::new(3));
        first.store(true, Ordering::SeqCst);
        let (c, r, f) = (checks.clone(), rec.clone(), first.clone());
        sim.set_handler(move |sim, bsp| {
            if !f.swap(false, Ordering::SeqCst) {
                return;
            }
            c.that("expected", sim.instance().is_expected(new));
            // Relaxed: gather the APs first (traditional: already there).
            sim.pump_until(|| (0..3).all(|x| x == bsp || sim.joined(x)));
            let mut st = vec![Status(0x77); 3];
            c.eq(
                "broadcast",
                sim.broadcast(p2(proc_count), 0, ptr(&r), None, Some(&mut st)),
                Status::SUCCESS,
            );
            c.eq("new CPU ran", st[new], Status::SUCCESS);
            c.that("BSP is an old CPU", bsp != new);
        });
        sim.smi_stepped(&[0, 1, new]);
        checks.assert_ok(5);
        assert_eq!(rec.runs()[new], 1);
    }
}
