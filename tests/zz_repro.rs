mod common;
use common::*;
#[test]
fn repro() {
    let sim = Sim::new(Options::new(3).hot_plug(true).tokens(4));
    let st = sim.remove_processor(0);
    eprintln!("remove(0) outside SMI: {st:?}");
    sim.set_handler(move |_sim, b| eprintln!("handler bsp={b}"));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.smi_stepped(&[0, 1, 2])));
    eprintln!("smi 1: {}", if r.is_ok() { "ok" } else { "HANG" });
    if r.is_err() {
        std::mem::forget(sim);
        return;
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.smi_stepped(&[0, 1, 2])));
    eprintln!("smi 2: {}", if r.is_ok() { "ok" } else { "HANG" });
    if r.is_err() {
        std::mem::forget(sim);
    }
}
