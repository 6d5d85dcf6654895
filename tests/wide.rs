//! Machines wider than one word of the library's CPU bit sets (32 CPUs per
//! word): every CPU past the first word takes part in broadcasts, gets its
//! status written and completes its share of a token, in both sync
//! modes. One thread plays every CPU.
mod common;

use std::sync::Arc;

use common::*;
use mm_mp::efi::Status;

/// One word and one CPU; two words and a part of a third.
const SIZES: [usize; 2] = [33, 70];

fn wide_broadcasts(cpus: usize, relaxed: bool) {
    let sim = Sim::new(Options::new(cpus).relaxed(relaxed));
    let rec: Arc<Record> = Arc::from(Record::new(cpus));
    let checks = Checks::new();
    let (r, c) = (rec.clone(), checks.clone());
    sim.set_handler(move |sim, bsp| {
        c.eq("BSP", bsp, 0);
        // Relaxed mode broadcasts to the APs present: let every AP arrive.
        for ap in 1..cpus {
            sim.step(ap);
        }
        let arg = Arc::as_ptr(&r) as *mut std::ffi::c_void;

        // Blocking, with a status array.
        let mut st = vec![Status(0x77); cpus];
        c.eq(
            "blocking broadcast",
            sim.broadcast(p2(proc_fail_odd), 0, arg, None, Some(&mut st)),
            Status::SUCCESS,
        );
        let want: Vec<Status> = (0..cpus)
            .map(|cpu| match cpu {
                0 => Status::NOT_STARTED,
                _ if cpu % 2 == 1 => Status::DEVICE_ERROR,
                _ => Status::SUCCESS,
            })
            .collect();
        c.eq("statuses of every CPU", st.clone(), want);
        let once: Vec<usize> = (0..cpus).map(|cpu| usize::from(cpu != 0)).collect();
        c.eq("each AP ran once", r.runs(), once);

        // With a token: it completes only when the last AP of the last word
        // has finished.
        let mut t = NULL_TOKEN;
        let mut st = vec![Status(0x77); cpus];
        c.eq(
            "token broadcast",
            sim.broadcast(p2(proc_count), 0, arg, Some(&mut t), Some(&mut st)),
            Status::SUCCESS,
        );
        c.eq("token done", sim.wait(t), Status::SUCCESS);
        c.that(
            "every AP's status written",
            st.iter().skip(1).all(|s| *s == Status::SUCCESS),
        );
        let twice: Vec<usize> = (0..cpus).map(|cpu| 2 * usize::from(cpu != 0)).collect();
        c.eq("each AP ran twice", r.runs(), twice);

        // One dispatch to the last CPU of every word.
        let mut last_of_words: Vec<usize> = [31, 32, 63, 64, cpus - 1]
            .into_iter()
            .filter(|&c| c < cpus)
            .collect();
        last_of_words.dedup();
        for &cpu in &last_of_words {
            let mut s = Status(0x77);
            c.eq(
                "dispatch",
                sim.dispatch(p2(proc_count), cpu, 0, arg, None, Some(&mut s)),
                Status::SUCCESS,
            );
            c.eq("dispatch status", s, Status::SUCCESS);
            c.eq("dispatched CPU ran", r.runs()[cpu], 3);
        }
    });
    let order: Vec<usize> = (0..cpus).collect();
    sim.smi_stepped(&order);
    checks.assert_ok(7);
    let dispatched = if cpus > 64 { 5 } else { 2 };
    assert_eq!(rec.total(), 2 * (cpus - 1) + dispatched);
    sim.assert_balanced();
}

#[test]
fn broadcasts_reach_every_word_traditional() {
    for cpus in SIZES {
        wide_broadcasts(cpus, false);
    }
}

#[test]
fn broadcasts_reach_every_word_relaxed() {
    for cpus in SIZES {
        wide_broadcasts(cpus, true);
    }
}
