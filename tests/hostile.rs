//! Hostile input (proptest): no input to an exported function panics or
//! writes out of bounds; bad input gets the status BEHAVIOUR.md §11 names and
//! changes nothing.
mod common;

use std::ffi::c_void;

use common::*;
use mm_mp::efi::{Boolean, MmCompletion, ProcessorInformation, Status};
use mm_mp::ffi::*;
use mm_mp::platform::{MmMpConfig, MmMpPlatform};
use proptest::prelude::*;

unsafe extern "efiapi" fn noop_entry(_c: *mut c_void, _b: usize) {}

fn base_platform() -> MmMpPlatform {
    let o = Options::new(1);
    let mut p = platform(&o, std::ptr::null_mut());
    p.mm_foundation_entry = Some(noop_entry);
    p.cpu_pause = None;
    p
}

#[derive(Debug, Clone)]
struct Cfg {
    revision: u32,
    cpus: u32,
    tokens: u32,
    line: u32,
    mode: u32,
    bsp: u32,
    election: bool,
    prev_rev: u32,
    foundation: bool,
    misalign: usize,
    shrink: usize,
}

fn cfg_strategy() -> impl Strategy<Value = Cfg> {
    (
        prop_oneof![Just(1u32), any::<u32>()],
        prop_oneof![0u32..40, any::<u32>()],
        prop_oneof![0u32..70, any::<u32>()],
        prop_oneof![
            Just(0u32),
            Just(16),
            Just(32),
            Just(64),
            Just(128),
            any::<u32>()
        ],
        prop_oneof![0u32..3, any::<u32>()],
        prop_oneof![0u32..40, any::<u32>()],
        any::<bool>(),
        prop_oneof![Just(1u32), any::<u32>()],
        prop_oneof![Just(true), Just(true), Just(false)],
        prop_oneof![Just(0usize), Just(0), 1usize..64],
        prop_oneof![Just(0usize), Just(0), 1usize..200],
    )
        .prop_map(
            |(
                revision,
                cpus,
                tokens,
                line,
                mode,
                bsp,
                election,
                prev_rev,
                foundation,
                misalign,
                shrink,
            )| Cfg {
                revision,
                cpus,
                tokens,
                line,
                mode,
                bsp,
                election,
                prev_rev,
                foundation,
                misalign,
                shrink,
            },
        )
}

/// The outcome BEHAVIOUR.md §11 predicts for a configuration, before buffer checks.
fn expected(c: &Cfg) -> Option<Status> {
    let line_ok = c.line == 0 || (c.line.is_power_of_two() && c.line >= 16);
    if c.revision != 1
        || c.cpus == 0
        || c.tokens == 0
        || c.tokens > mm_mp::tokens::MAX_TOKENS
        || !line_ok
        || c.mode > 1
        || (!c.election && c.bsp >= c.cpus)
    {
        return Some(Status::INVALID_PARAMETER);
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn initialize_never_misbehaves(c in cfg_strategy()) {
        let table: Vec<ProcessorInformation> = (0..c.cpus.min(64)).map(|i| {
            let mut p = ProcessorInformation::EMPTY;
            p.processor_id = i as u64;
            p
        }).collect();
        // Configurations with more CPUs than the table are only sized, never initialised.
        let cfg = MmMpConfig {
            revision: c.revision,
            number_of_cpus: c.cpus,
            max_tokens: c.tokens,
            cache_line_size: c.line,
            sync_mode: c.mode,
            bsp_index: c.bsp,
            bsp_election: Boolean::from(c.election),
            hot_plug_support: Boolean::FALSE,
            blocking_startup_this_ap: Boolean::FALSE,
            configure_mtrrs: Boolean::FALSE,
            reserved: 0,
            ap_sync_timeout_us: 0,
            ap_sync_timeout2_us: 0,
            processor_info: table.as_ptr(),
            hot_plug_apic_id: std::ptr::null_mut(),
        };
        let mut size = 0x5a5a_usize;
        // SAFETY: valid pointers.
        let st = unsafe { MmMpGetRequiredSize(&cfg, &mut size) };
        match expected(&c) {
            Some(e) => {
                prop_assert_eq!(st, e);
                prop_assert_eq!(size, 0x5a5a, "size untouched on error");
            }
            None => {
                if st == Status::OUT_OF_RESOURCES {
                    prop_assert_eq!(size, 0x5a5a);
                    return Ok(());
                }
                prop_assert_eq!(st, Status::SUCCESS);
                prop_assert!(size >= 64 + c.cpus as usize * 3 * 16);
            }
        }
        if st != Status::SUCCESS || c.cpus > 64 || size > (1 << 26) {
            return Ok(());
        }
        let mut plat = base_platform();
        plat.revision = c.prev_rev;
        if !c.foundation {
            plat.mm_foundation_entry = None;
        }
        let line = if c.line == 0 { 64 } else { c.line as usize };
        let mut mem = vec![0xA5u8; size + 256 + line];
        let start = mem.as_ptr() as usize;
        let aligned = start.div_ceil(line) * line - start;
        let off = aligned + c.misalign;
        let avail = size.saturating_sub(c.shrink);
        let mut inst: *mut MmMpInstance = std::ptr::null_mut();
        // SAFETY: `avail` bytes at `off` are inside `mem`.
        let st = unsafe {
            MmMpInitialize(mem.as_mut_ptr().add(off) as *mut c_void, avail, &cfg, &plat, &mut inst)
        };
        let want = if c.prev_rev != 1 || !c.foundation || c.misalign % line != 0 {
            Status::INVALID_PARAMETER
        } else if c.shrink > 0 {
            Status::BUFFER_TOO_SMALL
        } else {
            Status::SUCCESS
        };
        prop_assert_eq!(st, want);
        if st != Status::SUCCESS {
            prop_assert!(mem.iter().all(|&b| b == 0xA5), "nothing written on error");
            prop_assert!(inst.is_null());
        } else {
            prop_assert!(mem[off + size..].iter().all(|&b| b == 0xA5), "nothing written past the region");
            prop_assert!(mem[..off].iter().all(|&b| b == 0xA5), "nothing written before the region");
        }
    }

    /// Random service calls with hostile arguments from the BSP of a real
    /// (stepped) SMI: every status is one BEHAVIOUR.md allows and nothing breaks.
    #[test]
    fn services_take_any_argument(calls in proptest::collection::vec((0u8..7, any::<usize>(), any::<usize>(), any::<bool>()), 1..40)) {
        let sim = Sim::new(Options::new(4).tokens(3));
        let rec: std::sync::Arc<Record> = std::sync::Arc::from(Record::new(4));
        let checks = Checks::new();
        let (r, c) = (rec.clone(), checks.clone());
        sim.set_handler(move |sim, _bsp| {
            let mut live: Vec<MmCompletion> = Vec::new();
            for (op, a, b, flag) in &calls {
                let cpu = if *flag { a % 6 } else { *a };
                let arg = std::sync::Arc::as_ptr(&r) as *mut c_void;
                let st = match op {
                    0 => {
                        let mut t: MmCompletion = NULL_TOKEN;
                        let st = sim.dispatch(p2(proc_count), cpu, b % 2, arg, flag.then_some(&mut t), None);
                        if st == Status::SUCCESS && *flag { live.push(t); }
                        st
                    }
                    1 => {
                        let mut t: MmCompletion = NULL_TOKEN;
                        // A non-blocking call's status array must outlive
                        // the call (the APs write it after the handler
                        // returned): leaked, a few bytes per case.
                        let arr: &'static mut [Status; 4] = Box::leak(Box::new([Status(0); 4]));
                        let st = sim.broadcast(p2(proc_count), 0, arg, flag.then_some(&mut t), Some(arr));
                        if st == Status::SUCCESS && *flag { live.push(t); }
                        st
                    }
                    2 => sim.check(*b as MmCompletion),
                    3 => sim.check(live.get(a % live.len().max(1)).copied().unwrap_or(NULL_TOKEN)),
                    4 => sim.wait(live.get(a % live.len().max(1)).copied().unwrap_or(NULL_TOKEN)),
                    5 => sim.startup_this_ap(p1(legacy_count), cpu, arg),
                    _ => sim.token_result(*b as MmCompletion).0,
                };
                let allowed = [Status::SUCCESS, Status::INVALID_PARAMETER, Status::NOT_READY, Status::NOT_FOUND,
                    Status::OUT_OF_RESOURCES, Status::ALREADY_STARTED, Status::NOT_STARTED];
                c.that(&format!("op {op} -> {st:?}"), allowed.contains(&st));
            }
        });
        sim.smi_stepped(&[0, 1, 2, 3]);
        checks.assert_ok(1);
        for cpu in 0..4 {
            prop_assert_eq!(sim.instance().run_sem(cpu).unwrap().value(), 0);
        }
    }
}

/// NULL and garbage instance / protocol pointers are rejected.
#[test]
fn null_instances_are_rejected() {
    let mut n = 0usize;
    // SAFETY: NULL is the input under test.
    unsafe {
        assert!(MmMpGetMmMpProtocol(std::ptr::null_mut()).is_null());
        MmMpSmiRendezvous(std::ptr::null_mut(), 0);
        assert_eq!(MmMpGetCurrentBsp(std::ptr::null_mut()), usize::MAX);
        assert_eq!(
            MmMpStartupThisAp(std::ptr::null_mut(), None, 0, std::ptr::null_mut()),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            MmMpBlockingStartupThisAp(std::ptr::null_mut(), None, 0, std::ptr::null_mut()),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            MmMpGetTokenResult(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            MmMpGetRequiredSize(std::ptr::null(), &mut n),
            Status::INVALID_PARAMETER
        );
        // A buffer that is not an instance (no magic).
        let junk = vec![0u64; 512];
        let p = junk.as_ptr() as *mut MmMpInstance;
        assert!(MmMpGetMmMpProtocol(p).is_null());
        MmMpSmiRendezvous(p, 0);
        assert_eq!(MmMpGetCurrentBsp(p), usize::MAX);
    }
    // Protocol members with a NULL This.
    let sim = Sim::new(Options::new(2));
    let mp = sim.mp();
    // SAFETY: NULL This is the input under test.
    unsafe {
        assert_eq!(
            (mp.get_number_of_processors)(std::ptr::null(), &mut n),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            (mp.check_for_procedure)(std::ptr::null(), 1 as MmCompletion),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            (mp.wait_for_procedure)(std::ptr::null(), 1 as MmCompletion),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            (mp.set_startup_procedure)(std::ptr::null(), None, std::ptr::null_mut()),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            (mp.dispatch_procedure)(
                std::ptr::null(),
                None,
                0,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            (mp.broadcast_procedure)(
                std::ptr::null(),
                None,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            Status::INVALID_PARAMETER
        );
    }
    // Rendezvous with a CPU index out of range or of an empty slot returns at once.
    let sim = Sim::new(Options::new(3).empty(&[2]));
    // SAFETY: valid instance.
    unsafe {
        MmMpSmiRendezvous(sim.inst, 3);
        MmMpSmiRendezvous(sim.inst, usize::MAX);
        MmMpSmiRendezvous(sim.inst, 2);
    }
    assert_eq!(sim.instance().arrival().value(), 0, "touched nothing");
    assert_eq!(sim.entries.load(std::sync::atomic::Ordering::SeqCst), 0);
}
