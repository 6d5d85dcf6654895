//! mm-mp performance figures (docs/PERFORMANCE.md).
//!
//! `cargo bench --bench perf` prints every figure with its ratio and target:
//!
//! 1. dispatch round trip vs a raw cache-line ping-pong (2 pinned threads);
//! 2. one SMI rendezvous per sync mode, in ping-pongs per barrier round;
//! 3. BSP instructions of a non-blocking BroadcastProcedure (callgrind);
//! 4. CheckForProcedure instructions with 1 vs 1,024 live tokens (callgrind);
//! 5. SMRAM bytes per CPU and per token (MmMpGetRequiredSize);
//! 6. linked code size of every export (firmware flags, --gc-sections).
//!
//! Arguments (after `--`): section names to run (`latency`, `rendezvous`,
//! `callgrind`, `footprint`, `codesize`; default all), `--runs N` (latency
//! repetitions, default 7). `--child MODE N` is the single-threaded program
//! that callgrind runs (see `child`).
//!
//! Timings are ratios measured within one run, interleaved with their
//! reference (the machine is shared). Instruction counts come from
//! `valgrind --tool=callgrind --toggle-collect=<measured function>`, so they
//! do not depend on load.

mod bench_common;

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bench_common::*;
use mm_mp::efi::{MmCompletion, MmMpProtocol, Status};
use mm_mp::ffi::*;

// ---------------------------------------------------------------------------
// Targets (docs/PERFORMANCE.md)
// ---------------------------------------------------------------------------

const TARGET_DISPATCH: f64 = 1.3;
const TARGET_ROUND: f64 = 1.3;
const TARGET_BROADCAST: f64 = 3.0;
const TARGET_TOKENS: f64 = 1.1;
const TARGET_PER_CPU: f64 = 370.0;
const TARGET_PER_TOKEN: f64 = 104.0;

/// A ping-pong slower than this means the two virtual CPUs are not both
/// running (the host time-shares them): the ratios then compare scheduler
/// hand-offs, not cache-line transfers.
const TIME_SHARED_NS: f64 = 200.0;

/// Say so when the reference ping-pong shows time-shared CPUs.
fn warn_if_time_shared(ping_pong_ns: f64) {
    if ping_pong_ns > TIME_SHARED_NS {
        println!(
            "  WARNING: ping-pong {ping_pong_ns:.0} ns: the two CPUs are time-shared by the host; the ratios above are not meaningful, run again later"
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "holds"
    } else {
        "MISSED"
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let mode = args.get(i + 1).expect("--child MODE N");
        let n: usize = args.get(i + 2).expect("--child MODE N").parse().unwrap();
        child(mode, n);
        return;
    }
    let mut runs = 7usize;
    let mut sections: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {}
            "--runs" => runs = it.next().expect("--runs N").parse().unwrap(),
            s if !s.starts_with('-') => sections.push(s.to_string()),
            _ => {}
        }
    }
    let want = |s: &str| sections.is_empty() || sections.iter().any(|x| x == s);
    println!("mm-mp performance; {}", machine_line());
    if want("latency") {
        latency(runs);
    }
    if want("rendezvous") {
        rendezvous(runs);
    }
    if want("callgrind") {
        callgrind();
    }
    if want("footprint") {
        footprint();
    }
    if want("codesize") {
        codesize();
    }
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cpu}, {n} CPUs, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

// ---------------------------------------------------------------------------
// 1. Ping-pong and dispatch round trip
// ---------------------------------------------------------------------------
//
// Method: the two threads alternate short batches of the measured
// operation and of the reference ping-pong (BATCHES pairs, each batch
// BATCH operations, ~0.1 ms) and each batch's time is recorded. The figure
// of a run is the median, over the pairs, of measured batch / the ping-pong
// batch next to it: both halves of a pair run within a fraction of a
// millisecond on the same two cores, so the shared machine's load and the
// placement of the virtual CPUs cancel out, and the median ignores pairs
// hit by a preemption. The best batches are printed too (the minimum of the
// dispatch batches is bimodal: a few batches run at ~1x a ping-pong).

const BATCH: u64 = 1000;
const BATCHES: usize = 300;

/// The ping-pong line: the pinger stores an odd value, the echo side
/// answers with the next even one.
#[repr(align(128))]
pub struct Line(AtomicU64);

static PING: Line = Line(AtomicU64::new(0));

/// Pinger: `rounds` round trips starting at sequence `base`; nanoseconds.
fn ping(base: u64, rounds: u64) -> f64 {
    let start = Instant::now();
    for i in base..base + rounds {
        PING.0.store(2 * i + 1, Ordering::Release);
        while PING.0.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    start.elapsed().as_nanos() as f64
}

/// Echo side of `ping(base, rounds)`.
fn echo(base: u64, rounds: u64) {
    for i in base..base + rounds {
        let odd = 2 * i + 1;
        while PING.0.load(Ordering::Acquire) != odd {
            std::hint::spin_loop();
        }
        PING.0.store(odd + 1, Ordering::Release);
    }
}

/// `(base, rounds)` for the echo procedure run on the AP.
struct EchoArgs(u64, u64);

unsafe extern "efiapi" fn echo_procedure(argument: *mut std::ffi::c_void) -> Status {
    // SAFETY: the BSP passes a live EchoArgs and waits for this call.
    let a = unsafe { &*(argument as *const EchoArgs) };
    echo(a.0, a.1);
    Status::SUCCESS
}

unsafe extern "efiapi" fn empty_procedure(_argument: *mut std::ffi::c_void) -> Status {
    Status::SUCCESS
}

/// Per-batch nanoseconds per operation: (measured, ping-pong).
#[derive(Default)]
struct Batches {
    measured: Vec<f64>,
    ping: Vec<f64>,
}

impl Batches {
    fn min_ratio(&self) -> (f64, f64, f64) {
        let m = self.measured.iter().cloned().fold(f64::MAX, f64::min);
        let p = self.ping.iter().cloned().fold(f64::MAX, f64::min);
        (m, p, m / p)
    }

    fn median_pair_ratio(&self) -> f64 {
        let mut r: Vec<f64> = self
            .measured
            .iter()
            .zip(&self.ping)
            .map(|(m, p)| m / p)
            .collect();
        median(&mut r)
    }
}

/// One SMI on two pinned CPUs; the BSP alternates ping-pong batches (the
/// AP echoes from a dispatched procedure) with batches of blocking
/// DispatchProcedure calls of an empty procedure to the AP.
fn dispatch_run() -> Batches {
    let m = Machine::new(Opts {
        cpus: 2,
        spin: true,
        ..Opts::default()
    });
    let result = Arc::new(std::sync::Mutex::new(Batches::default()));
    {
        let result = result.clone();
        m.set_foundation(move |mp: &MmMpProtocol, _bsp| {
            PING.0.store(0, Ordering::SeqCst);
            let mut b = Batches::default();
            let mut seq = 0;
            // The measured call: blocking DispatchProcedure of the empty
            // procedure to CPU 1.
            // SAFETY: valid protocol; blocking call, NULL token/status.
            let dispatch_empty = || unsafe {
                (mp.dispatch_procedure)(
                    mp,
                    Some(empty_procedure),
                    1,
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            for _ in 0..BATCHES {
                let args = EchoArgs(seq, BATCH);
                let mut token: MmCompletion = std::ptr::null_mut();
                // SAFETY: valid protocol; `args` and `token` outlive the
                // call (waited for below).
                let st = unsafe {
                    (mp.dispatch_procedure)(
                        mp,
                        Some(echo_procedure),
                        1,
                        0,
                        &args as *const EchoArgs as *mut std::ffi::c_void,
                        &mut token,
                        std::ptr::null_mut(),
                    )
                };
                assert_eq!(st, Status::SUCCESS);
                b.ping.push(ping(seq, BATCH) / BATCH as f64);
                seq += BATCH;
                // SAFETY: valid protocol and token.
                assert_eq!(
                    unsafe { (mp.wait_for_procedure)(mp, token) },
                    Status::SUCCESS
                );
                // The token completes just before the AP marks itself free
                // (BEHAVIOUR.md §2.2's order): until then a dispatch to it is
                // EFI_NOT_READY. One untimed call waits that out.
                loop {
                    let st = dispatch_empty();
                    if st != Status::NOT_READY {
                        assert_eq!(st, Status::SUCCESS);
                        break;
                    }
                }
                let start = Instant::now();
                for _ in 0..BATCH {
                    assert_eq!(dispatch_empty(), Status::SUCCESS);
                }
                b.measured
                    .push(start.elapsed().as_nanos() as f64 / BATCH as f64);
            }
            *result.lock().unwrap() = b;
        });
    }
    m.smi_pinned(1, false);
    let b = std::mem::take(&mut *result.lock().unwrap());
    b
}

fn latency(runs: usize) {
    println!("\n[1] dispatch round trip (blocking DispatchProcedure, empty procedure, BSP core 0 -> AP core 1)");
    let (mut pp, mut dp, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let b = dispatch_run();
        let (d, p, best) = b.min_ratio();
        let x = b.median_pair_ratio();
        println!(
            "    run {r}: dispatch / ping-pong = {x:.2} (median of {BATCHES} batch pairs); best batches: dispatch {d:.1} ns, ping-pong {p:.1} ns ({best:.2})"
        );
        pp.push(p);
        dp.push(d);
        ratio.push(x);
    }
    let r = median(&mut ratio);
    println!(
        "  dispatch round trip: {:.2}x a ping-pong, median of {runs} runs (best batches {:.1} ns vs {:.1} ns) (target <= {TARGET_DISPATCH}x: {})",
        r,
        median(&mut dp),
        median(&mut pp),
        verdict(r <= TARGET_DISPATCH)
    );
    warn_if_time_shared(median(&mut pp));
}

// ---------------------------------------------------------------------------
// 2. Rendezvous round
// ---------------------------------------------------------------------------

/// Barrier rounds (BSP -> AP -> BSP hand-offs) an SMI needs on two CPUs
/// without MTRR swapping, EDK2's BSPHandler/APHandler:
/// * traditional: "BSP inside" -> #1; #2 -> #7; #8 -> #13; end -> next check-in;
/// * relaxed: "BSP inside" -> Present; #8 -> #13; end -> next check-in.
const ROUNDS_TRADITIONAL: f64 = 4.0;
const ROUNDS_RELAXED: f64 = 3.0;
/// SMIs per batch.
const SMI_BATCH: u64 = 200;

/// Batches of back-to-back SMIs on two pinned CPUs (both in every SMI)
/// alternating with ping-pong batches on the same two threads.
fn smi_run(relaxed: bool, batches: usize) -> (Batches, MmMpStatistics) {
    let m = Machine::new(Opts {
        cpus: 2,
        spin: true,
        relaxed,
        // Relaxed: the BSP does not wait for arrivals, so CPU 0 is the fixed
        // BSP and enters only once CPU 1 announced its entry (the SMI
        // reaching both CPUs); traditional: first-come election. The time
        // source lets an AP that arrived after its SMI ended (preempted
        // between announcing and checking in) give up after 40 ms instead
        // of waiting for ever; such a batch is simply not the fastest.
        election: !relaxed,
        clock: true,
        // The empty handler of the figure: no closure behind a lock.
        empty_foundation: true,
        ..Opts::default()
    });
    let b = smi_batches(relaxed, batches, |cpu| m.smi(cpu));
    (b, m.statistics())
}

/// The same batches with `straight::Straight` in place of mm-mp (BEHAVIOUR.md §6
/// as straight-line code, docs/PERFORMANCE.md [2]): the same threads, gate
/// and ping-pong.
fn straight_run(relaxed: bool, batches: usize) -> Batches {
    let f = straight::Straight::new(relaxed);
    smi_batches(relaxed, batches, |cpu| f.smi(cpu))
}

/// `batches` batches of `SMI_BATCH` SMIs (`smi(cpu)` on each pinned CPU;
/// in relaxed mode CPU 0 enters once CPU 1 announced its entry),
/// alternating with ping-pong batches on the same two threads.
fn smi_batches(relaxed: bool, batches: usize, smi: impl Fn(usize) + Sync) -> Batches {
    PING.0.store(0, Ordering::SeqCst);
    let mut b = Batches::default();
    let (mut seq, mut echo_seq) = (0, 0);
    let mut measured = Vec::new();
    smi_batches_pinned(
        batches,
        SMI_BATCH,
        relaxed,
        smi,
        |ns| measured.push(ns / SMI_BATCH as f64),
        || {
            b.ping.push(ping(seq, BATCH) / BATCH as f64);
            seq += BATCH;
        },
        || {
            echo(echo_seq, BATCH);
            echo_seq += BATCH;
        },
    );
    b.measured = measured;
    b
}

fn rendezvous(runs: usize) {
    println!(
        "\n[2] rendezvous round (full SMI on 2 pinned CPUs, back to back, empty MmFoundationEntry)"
    );
    for (name, relaxed, rounds) in [
        ("traditional", false, ROUNDS_TRADITIONAL),
        ("relaxed", true, ROUNDS_RELAXED),
    ] {
        if std::env::var("MM_MP_BENCH_MODE").is_ok_and(|m| m != name) {
            continue;
        }
        let (mut per_round, mut smi_ns, mut pps) = (Vec::new(), Vec::new(), Vec::new());
        let (mut straight_round, mut over_straight) = (Vec::new(), Vec::new());
        for r in 0..runs {
            let (b, stats) = smi_run(relaxed, BATCHES / 2);
            let (ns, p, best) = b.min_ratio();
            let x = b.median_pair_ratio() / rounds;
            println!(
                "    run {r}: {name}: {x:.2} ping-pongs per round (median of {} batch pairs); best batches {ns:.0} ns/SMI, ping-pong {p:.1} ns ({:.2}); SMIs {}, late {}, spurious {}",
                BATCHES / 2,
                best / rounds,
                stats.smis, stats.late_cpus, stats.spurious_smis
            );
            let f = straight_run(relaxed, BATCHES / 2).median_pair_ratio() / rounds;
            println!(
                "    run {r}: {name} straight-line: {f:.2} ping-pongs per round; mm-mp / straight-line {:.2}",
                x / f
            );
            per_round.push(x);
            smi_ns.push(ns);
            pps.push(p);
            straight_round.push(f);
            over_straight.push(x / f);
        }
        let x = median(&mut per_round);
        println!(
            "  {name}: {:.2} ping-pongs per SMI / {rounds} rounds = {x:.2} per round, median of {runs} runs (best batches {:.0} ns/SMI, ping-pong {:.1} ns) (target <= {TARGET_ROUND}: {})",
            x * rounds,
            median(&mut smi_ns),
            median(&mut pps),
            verdict(x <= TARGET_ROUND)
        );
        let f = median(&mut straight_round);
        println!(
            "  {name}-straight: {:.2} ping-pongs per SMI = {f:.2} per round: BEHAVIOUR.md §6 as straight-line code (mm-mp / straight-line {:.2}, median of the runs' ratios)",
            f * rounds,
            median(&mut over_straight)
        );
        warn_if_time_shared(median(&mut pps));
    }
}

// ---------------------------------------------------------------------------
// 3, 4. Instruction counts under callgrind
// ---------------------------------------------------------------------------

/// Calls of the measured function per child run (the count is divided by it).
const MEASURED_CALLS: u64 = 8;

/// The measured broadcast: a non-blocking BroadcastProcedure without a
/// status array, through the protocol (what a caller pays).
///
/// # Safety
/// `mp` must be a live protocol and `token` valid for a write.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn mmmp_bench_measured_broadcast(
    mp: *const MmMpProtocol,
    token: *mut MmCompletion,
) -> Status {
    // SAFETY: the caller's contract.
    unsafe {
        ((*mp).broadcast_procedure)(
            mp,
            Some(empty_procedure),
            0,
            std::ptr::null_mut(),
            token,
            std::ptr::null_mut(),
        )
    }
}

/// The measured token check.
///
/// # Safety
/// `mp` must be a live protocol.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn mmmp_bench_measured_check(
    mp: *const MmMpProtocol,
    token: MmCompletion,
) -> Status {
    // SAFETY: the caller's contract.
    unsafe { ((*mp).check_for_procedure)(mp, token) }
}

/// The measured blocking dispatch (both CPUs' instructions: the BSP's
/// CpuPause steps the AP).
///
/// # Safety
/// `mp` must be a live protocol.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn mmmp_bench_measured_dispatch(mp: *const MmMpProtocol) -> Status {
    // SAFETY: the caller's contract.
    unsafe {
        ((*mp).dispatch_procedure)(
            mp,
            Some(empty_procedure),
            1,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

/// One SMI of both CPUs, stepped on this thread, CPU 1 first (in relaxed
/// mode CPU 0, the fixed BSP, must find it checked in, as in the timed loop).
#[no_mangle]
#[inline(never)]
pub extern "C" fn mmmp_bench_measured_smi(m: &Machine) {
    m.smi_stepped_in(&[1, 0]);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn mmmp_bench_measured_smi1(m: &Machine) {
    m.smi(0);
}

/// The single-threaded program callgrind runs: an SMI stepped on this
/// thread (the `Sim` approach of tests/common), the measured calls made
/// from the BSP's MmFoundationEntry.
fn child(mode: &str, n: usize) {
    match mode {
        // n = present APs.
        "broadcast" => {
            let m = Machine::new(Opts {
                cpus: n + 1,
                tokens: 64,
                election: false,
                ..Opts::default()
            });
            let m2 = m.clone_handle();
            m.set_foundation(move |mp, _bsp| {
                for _ in 0..MEASURED_CALLS {
                    let mut token: MmCompletion = std::ptr::null_mut();
                    // SAFETY: live protocol and local token.
                    let st = unsafe { mmmp_bench_measured_broadcast(mp, &mut token) };
                    assert_eq!(st, Status::SUCCESS);
                    // Every AP runs the procedure, then the token is done.
                    for ap in 1..=n {
                        m2.step(ap);
                    }
                    // SAFETY: valid protocol.
                    let st = unsafe { (mp.check_for_procedure)(mp, token) };
                    assert_eq!(st, Status::SUCCESS);
                }
            });
            m.smi_stepped();
        }
        // n = live tokens; the newest one is checked while running.
        "tokens" => {
            let m = Machine::new(Opts {
                cpus: 2,
                tokens: n.max(1) as u32,
                election: false,
                ..Opts::default()
            });
            let m2 = m.clone_handle();
            m.set_foundation(move |mp, _bsp| {
                let mut last: MmCompletion = std::ptr::null_mut();
                for i in 0..n {
                    let mut token: MmCompletion = std::ptr::null_mut();
                    // SAFETY: valid protocol and locals.
                    let st = unsafe {
                        (mp.dispatch_procedure)(
                            mp,
                            Some(empty_procedure),
                            1,
                            0,
                            std::ptr::null_mut(),
                            &mut token,
                            std::ptr::null_mut(),
                        )
                    };
                    assert_eq!(st, Status::SUCCESS);
                    if i + 1 < n {
                        m2.step(1); // completes it; the token stays live
                    }
                    last = token;
                }
                for _ in 0..MEASURED_CALLS {
                    // SAFETY: live protocol.
                    let st = unsafe { mmmp_bench_measured_check(mp, last) };
                    assert_eq!(st, Status::NOT_READY);
                }
                m2.step(1);
            });
            m.smi_stepped();
        }
        // Whole SMIs of 2 CPUs stepped on this thread (n = 1: relaxed).
        "smi" => {
            let m = Machine::new(Opts {
                cpus: 2,
                relaxed: n == 1,
                ..Opts::default()
            });
            m.set_foundation(|_, _| {});
            for _ in 0..MEASURED_CALLS {
                mmmp_bench_measured_smi(&m);
            }
        }
        // Whole SMIs of 1 CPU through MmMpSmiRendezvous, as a CPU runs
        // them (n = 1: relaxed): the BSP's own work per SMI, without the
        // stepping of the "smi" mode.
        "smi1" => {
            let m = Machine::new(Opts {
                cpus: 1,
                relaxed: n == 1,
                election: n != 1,
                clock: true,
                empty_foundation: true,
                ..Opts::default()
            });
            for _ in 0..MEASURED_CALLS {
                mmmp_bench_measured_smi1(&m);
            }
        }
        // Blocking dispatch to CPU 1, both sides on this thread.
        "dispatch" => {
            let m = Machine::new(Opts {
                cpus: 2,
                step_cpu1_on_pause: true,
                ..Opts::default()
            });
            m.set_foundation(move |mp, _bsp| {
                for _ in 0..MEASURED_CALLS {
                    // SAFETY: live protocol.
                    let st = unsafe { mmmp_bench_measured_dispatch(mp) };
                    assert_eq!(st, Status::SUCCESS);
                }
            });
            let _ = n;
            m.smi_stepped();
        }
        _ => panic!("unknown child mode {mode}"),
    }
}

/// Instructions per measured call of `child(mode, n)`, or None without valgrind.
fn callgrind_count(mode: &str, n: usize, function: &str) -> Option<f64> {
    callgrind_counts(mode, n, function).map(|(all, _)| all)
}

/// (all instructions, the library's own) per measured call: the second
/// sums the self cost of `mm_mp::` functions (callgrind_annotate), leaving
/// out the bench's stepping harness and platform callbacks.
fn callgrind_counts(mode: &str, n: usize, function: &str) -> Option<(f64, f64)> {
    let exe = std::env::current_exe().ok()?;
    let out =
        std::env::temp_dir().join(format!("mm-mp-callgrind-{}-{mode}-{n}", std::process::id()));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect={function}"))
        .arg(&exe)
        .args(["--child", mode, &n.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        println!("    callgrind run {mode} {n} failed: {status}");
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    let total: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let own = Command::new("callgrind_annotate")
        .args(["--inclusive=no", "--threshold=100"])
        .arg(&out)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains(":mm_mp::"))
                .filter_map(|l| l.split_whitespace().next())
                .filter_map(|v| v.replace(',', "").parse::<f64>().ok())
                .sum::<f64>()
        })
        .unwrap_or(f64::NAN);
    let _ = std::fs::remove_file(&out);
    Some((total / MEASURED_CALLS as f64, own / MEASURED_CALLS as f64))
}

fn callgrind() {
    println!("\n[3] broadcast scaling (BSP instructions of a non-blocking BroadcastProcedure, no status array; callgrind)");
    let mut base = None;
    let mut at255 = None;
    for n in [1usize, 16, 255, 1023] {
        match callgrind_count("broadcast", n, "mmmp_bench_measured_broadcast") {
            Some(ir) => {
                let b = *base.get_or_insert(ir);
                if n == 255 {
                    at255 = Some(ir / b);
                }
                println!("    {n:5} APs: {ir:9.0} instructions = {:.2}x 1 AP", ir / b);
            }
            None => {
                println!("    valgrind not available: skipped");
                return;
            }
        }
    }
    if let Some(r) = at255 {
        println!(
            "  255 APs: {r:.2}x the cost of 1 AP (target <= {TARGET_BROADCAST}x: {})",
            verdict(r <= TARGET_BROADCAST)
        );
    }
    println!(
        "\n[1b, 2b] instructions on the critical path (both CPUs stepped on one thread; callgrind)"
    );
    if let Some((ir, own)) = callgrind_counts("dispatch", 1, "mmmp_bench_measured_dispatch") {
        println!(
            "    blocking dispatch round trip (BSP + AP): {ir:.0} instructions, {own:.0} in mm_mp"
        );
    }
    for (name, n) in [("traditional", 0), ("relaxed", 1)] {
        if let Some((ir, own)) = callgrind_counts("smi", n, "mmmp_bench_measured_smi") {
            println!(
                "    one {name} SMI of 2 CPUs (both CPUs): {ir:.0} instructions, {own:.0} in mm_mp"
            );
        }
        if let Some((ir, own)) = callgrind_counts("smi1", n, "mmmp_bench_measured_smi1") {
            println!(
                "    one {name} SMI of 1 CPU through MmMpSmiRendezvous: {ir:.0} instructions, {own:.0} in mm_mp"
            );
        }
    }
    println!("\n[4] token validation (CheckForProcedure of the newest, running token; callgrind)");
    let one = callgrind_count("tokens", 1, "mmmp_bench_measured_check");
    let many = callgrind_count("tokens", 1024, "mmmp_bench_measured_check");
    if let (Some(a), Some(b)) = (one, many) {
        println!("    1 live token: {a:.0} instructions; 1024 live tokens: {b:.0} instructions");
        let r = b / a;
        println!(
            "  1024 vs 1 live token: {r:.2}x (target <= {TARGET_TOKENS}x: {})",
            verdict(r <= TARGET_TOKENS)
        );
    }
}

// ---------------------------------------------------------------------------
// 5. SMRAM footprint
// ---------------------------------------------------------------------------

fn required(cpus: u32, tokens: u32) -> usize {
    let table = processor_table(cpus as usize);
    let mut cfg = config(cpus, tokens, false, false, table.as_ptr());
    cfg.cache_line_size = 64;
    let mut size = 0usize;
    // SAFETY: valid locals.
    let st = unsafe { MmMpGetRequiredSize(&cfg, &mut size) };
    assert_eq!(st, Status::SUCCESS);
    size
}

fn footprint() {
    println!("\n[5] SMRAM footprint (MmMpGetRequiredSize, 64-byte lines, difference method)");
    // Powers of two: the APIC ID map has 2^k >= 2 x NumberOfCpus entries.
    let per_cpu = (required(2048, 64) - required(1024, 64)) as f64 / 1024.0;
    let per_token = (required(64, 2048) - required(64, 1024)) as f64 / 1024.0;
    let fixed = required(1, 1) as f64;
    println!("    1 CPU, 1 token: {fixed:.0} bytes");
    println!(
        "  per CPU: {per_cpu:.0} bytes (target <= {TARGET_PER_CPU}: {})",
        verdict(per_cpu <= TARGET_PER_CPU)
    );
    println!(
        "  per token: {per_token:.0} bytes (target <= {TARGET_PER_TOKEN}: {})",
        verdict(per_token <= TARGET_PER_TOKEN)
    );
}

// ---------------------------------------------------------------------------
// 6. Code size
// ---------------------------------------------------------------------------

fn codesize() {
    println!("\n[6] code size (firmware flags, C program calling every export, -Wl,--gc-sections)");
    match bench_common::codesize::measure() {
        Ok(r) => {
            println!(
                "    from libmm_mp.a: text {} + rodata {} + data {} + bss {} bytes (eh_frame {} not counted)",
                r.text, r.rodata, r.data, r.bss, r.eh_frame
            );
            println!(
                "  linked size (text+rodata+data): {} bytes ({:.1} KiB)",
                r.text + r.rodata + r.data,
                (r.text + r.rodata + r.data) as f64 / 1024.0
            );
        }
        Err(e) => println!("    skipped: {e}"),
    }
    black_box(());
}
