//! Hostile input (proptest): no input to an exported function panics or
//! writes out of bounds; bad input gets the status BEHAVIOUR.md §11 names and
//! changes nothing. Hostile hot-plug: the APIC ID map behind WhoAmI keeps
//! finding every CPU with the table full and through hundreds of
//! remove/add cycles with changing APIC IDs.
mod common;

use std::ffi::c_void;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use common::*;
use mm_mp::efi::{Boolean, MmCompletion, ProcessorInformation, Status, INVALID_APIC_ID};
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
        prop_oneof![
            0u32..70,
            any::<u32>(),
            (DOCUMENTED_MAX_TOKENS - 2)..(DOCUMENTED_MAX_TOKENS + 3)
        ],
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

/// The largest `MaxTokens` BEHAVIOUR.md §3 and §11 allow: 2^24 − 1 where
/// UINTN is 64 bits, 2^12 − 1 where it is 32 bits (the slot field of a
/// handle). Written from the contract, not taken from the library.
const DOCUMENTED_MAX_TOKENS: u32 = if cfg!(target_pointer_width = "64") {
    (1 << 24) - 1
} else {
    (1 << 12) - 1
};

/// The outcome BEHAVIOUR.md §11 predicts for a configuration, before buffer checks.
fn expected(c: &Cfg) -> Option<Status> {
    let line_ok = c.line == 0 || (c.line.is_power_of_two() && c.line >= 16);
    if c.revision != 1
        || c.cpus == 0
        || c.tokens == 0
        || c.tokens > DOCUMENTED_MAX_TOKENS
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

/// BEHAVIOUR.md §3, §11: MaxTokens 1 … 2^24 − 1 on X64 (2^12 − 1 on IA32).
/// Both sides of both ends, and the token storage the caller supplies
/// grows by the documented 48 bytes per token up to the last valid value.
#[test]
fn max_tokens_limit_is_the_documented_one() {
    let table = processor_table(&Options::new(2));
    let size = |tokens: u32| {
        let mut c = config(&Options::new(2), &table);
        c.max_tokens = tokens;
        let mut size = 0x5a5ausize;
        // SAFETY: valid pointers.
        let st = unsafe { MmMpGetRequiredSize(&c, &mut size) };
        (st, size)
    };
    let max = DOCUMENTED_MAX_TOKENS;
    for bad in [0, max + 1, max + 2, u32::MAX] {
        assert_eq!(
            size(bad),
            (Status::INVALID_PARAMETER, 0x5a5a),
            "MaxTokens {bad}"
        );
    }
    let (st_low, low) = size(1);
    let (st_below, below) = size(max - 4);
    let (st_max, at_max) = size(max);
    assert_eq!(
        (st_low, st_below, st_max),
        (Status::SUCCESS, Status::SUCCESS, Status::SUCCESS),
        "MaxTokens 1, {} and {max} are valid",
        max - 4
    );
    // 48 bytes per token, the pool packed (docs/ARCHITECTURE.md, the
    // region): four tokens are three whole 64-byte lines.
    assert_eq!(
        at_max - below,
        4 * 48,
        "four more tokens are 192 more bytes of caller storage"
    );
    assert!(
        at_max - low >= (max as usize - 1) * 48,
        "storage for {max} tokens"
    );
}

// -- the APIC ID map behind WhoAmI ---------------------------------------------------

/// Runs `f` on a thread of its own and fails when it has not finished
/// after `secs` seconds, so that a lookup or insertion that probes for
/// ever fails the test instead of hanging it. A panic in `f` is passed on.
fn bounded<R: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => {
            worker.join().unwrap();
            r
        }
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it ends"),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: not finished after {secs} s (an APIC ID map probe that never ends)")
        }
    }
}

/// The APIC ID a slot holds, and the CPU number `v` with `apic(v)` equal
/// to it when there is one: the Sim's GetApicId answers `apic(v)` for a
/// thread playing CPU `v`, so WhoAmI can be asked as that CPU.
#[derive(Clone, Copy, Debug)]
struct Held {
    id: u64,
    caller: Option<usize>,
}

/// BEHAVIOUR.md §5.2: every populated slot is found by its APIC ID
/// (WhoAmI where GetApicId can answer with that ID, the map lookup below
/// the C API for every ID), GetProcessorInfo agrees, and the IDs of
/// removed CPUs are found nowhere. docs/ARCHITECTURE.md: the map has a
/// power-of-two length of at least 2 × NumberOfCpus entries and is at
/// most half full.
fn assert_every_cpu_found(sim: &Sim, held: &[Option<Held>], gone: &[Held], what: &str) {
    let inst = sim.instance();
    let cpus = sim.opts.cpus;
    for (slot, h) in held.iter().enumerate() {
        let (st, info) = sim.processor_info(slot);
        match h {
            Some(h) => {
                assert_eq!(
                    (st, info.processor_id),
                    (Status::SUCCESS, h.id),
                    "{what}: record of slot {slot}"
                );
                assert_eq!(
                    inst.slot_of_apic_id(h.id),
                    Some(slot),
                    "{what}: lookup of APIC ID {:#x} (slot {slot})",
                    h.id
                );
                if let Some(v) = h.caller {
                    assert_eq!(
                        sim.as_cpu(v, || sim.who_am_i()),
                        (Status::SUCCESS, slot),
                        "{what}: WhoAmI on the CPU with APIC ID {:#x}",
                        h.id
                    );
                }
            }
            None => assert_eq!(st, Status::NOT_FOUND, "{what}: empty slot {slot}"),
        }
    }
    for g in gone {
        if held.iter().flatten().any(|h| h.id == g.id) {
            continue;
        }
        assert_eq!(
            inst.slot_of_apic_id(g.id),
            None,
            "{what}: removed APIC ID {:#x} still found",
            g.id
        );
        if let Some(v) = g.caller {
            assert_eq!(
                sim.as_cpu(v, || sim.who_am_i()).0,
                Status::NOT_FOUND,
                "{what}: WhoAmI on a removed CPU"
            );
        }
    }
    // Foreign IDs: the probe ends, nothing found. Those whose low half is
    // 1 share it with a tombstone's tag, which marks no slot.
    for id in [0xF00D_0001]
        .into_iter()
        .chain((0..16).map(|k| (k << 32) | 1))
    {
        assert_eq!(inst.slot_of_apic_id(id), None, "{what}: foreign ID {id:#x}");
    }
    let len = inst.layout.apic_map.len;
    let live = inst.apic_map().live();
    assert!(
        len.is_power_of_two() && len >= 2 * cpus,
        "{what}: the map has {len} entries for {cpus} CPUs, the rule is a power of two >= {}",
        2 * cpus
    );
    assert_eq!(
        live,
        held.iter().flatten().count(),
        "{what}: live map entries"
    );
    assert!(live * 2 <= len, "{what}: {live} of {len} entries live");
}

/// The end of an SMI applies the pending Add and Remove operations
/// (BEHAVIOUR.md §5.3); CPU 0 is the only one to arrive (relaxed mode).
fn end_of_smi(sim: &Sim) {
    sim.smi_stepped(&[0]);
    for slot in 0..sim.opts.cpus {
        assert_eq!(
            sim.instance().cpu(slot).unwrap().pending_op(),
            mm_mp::cpus::OP_NONE,
            "slot {slot}: operation applied"
        );
    }
}

/// Hot-plug on a `cpus`-slot machine whose upper half starts empty: every
/// empty slot is hot-added (every slot of the table used), then `cycles`
/// remove/add cycles, each giving the slots a new APIC ID: mostly one
/// slot, every tenth cycle every odd slot at once, and every third cycle
/// a 64-bit ID whose low 32 bits equal those of another live CPU's ID (a
/// map tag shared by two live entries). CPU 0 stays: it is the BSP.
/// Returns the most tombstones the map held after a cycle.
fn map_churn(cpus: usize, cycles: usize) -> usize {
    let empty: Vec<usize> = (cpus.div_ceil(2)..cpus).collect();
    let sim = Sim::new(
        Options::new(cpus)
            .hot_plug(true)
            .relaxed(true)
            .empty(&empty),
    );
    let mut held: Vec<Option<Held>> = (0..cpus)
        .map(|s| {
            (!empty.contains(&s)).then_some(Held {
                id: apic(s),
                caller: Some(s),
            })
        })
        .collect();
    let mut gone: Vec<Held> = Vec::new();
    let mut next = cpus;
    let mut fresh = || {
        next += 1;
        Held {
            id: apic(next),
            caller: Some(next),
        }
    };
    let add = |sim: &Sim, slot: usize, h: Held| {
        sim.set_hot_plug_id(slot, h.id);
        assert_eq!(
            sim.add_processor(h.id),
            (Status::SUCCESS, slot),
            "AddProcessor({:#x}) into slot {slot}",
            h.id
        );
    };
    assert_every_cpu_found(&sim, &held, &gone, &format!("{cpus} CPUs, initial"));
    assert_eq!(
        sim.instance().apic_map().tombstones(),
        0,
        "{cpus} CPUs: a map nothing was removed from has no tombstone"
    );
    let mut most_tombstones = 0;
    for &slot in &empty {
        let h = fresh();
        add(&sim, slot, h);
        held[slot] = Some(h);
    }
    end_of_smi(&sim);
    assert_every_cpu_found(&sim, &held, &gone, &format!("{cpus} CPUs, table full"));
    for cycle in 0..cycles {
        let what = format!("{cpus} CPUs, cycle {cycle}");
        let victims: Vec<usize> = if cycle % 10 == 9 {
            (1..cpus).step_by(2).collect()
        } else {
            vec![1 + cycle % (cpus - 1)]
        };
        for &slot in &victims {
            assert_eq!(
                sim.remove_processor(slot),
                Status::SUCCESS,
                "{what}: remove {slot}"
            );
            assert_eq!(sim.hot_plug_id(slot), INVALID_APIC_ID);
            gone.push(held[slot].take().unwrap());
        }
        end_of_smi(&sim);
        let recent = &gone[gone.len().saturating_sub(64)..];
        assert_every_cpu_found(&sim, &held, recent, &format!("{what}, removed {victims:?}"));
        for &slot in &victims {
            let h = if cycle % 3 == 2 {
                // Same map tag as the live CPU of slot 0.
                let low = held[0].unwrap().id & 0xFFFF_FFFF;
                Held {
                    id: (((cycle * cpus + slot) as u64 + 1) << 32) | low,
                    caller: None,
                }
            } else {
                fresh()
            };
            add(&sim, slot, h);
            held[slot] = Some(h);
        }
        end_of_smi(&sim);
        assert_every_cpu_found(&sim, &held, recent, &format!("{what}, added {victims:?}"));
        let map = sim.instance().apic_map();
        assert!(map.live() + map.tombstones() <= sim.instance().layout.apic_map.len);
        most_tombstones = most_tombstones.max(map.tombstones());
    }
    assert_every_cpu_found(&sim, &held, &gone, &format!("{cpus} CPUs, at the end"));
    most_tombstones
}

/// BEHAVIOUR.md §5.2 WhoAmI and docs/ARCHITECTURE.md's APIC ID map: with
/// every slot of the table used and through 300 remove/add cycles per
/// machine, every CPU is found by its APIC ID and no removed ID is; the
/// map keeps at least twice as many entries as slots.
#[test]
fn apic_map_full_table_and_churn() {
    let mut tombstones = 0;
    for cpus in [2, 3, 5, 6, 7, 8, 12, 16, 31, 33, 64] {
        tombstones += bounded(&format!("APIC ID map, {cpus} CPUs"), 120, move || {
            map_churn(cpus, 300)
        });
    }
    // A removal inside a run of entries leaves a tombstone (the probes of
    // the entries after it must go on): the churn makes some.
    assert!(tombstones > 0, "no tombstone in any churned map");
}

/// The map rule for every NumberOfCpus from 1 to 130: at least two
/// entries per slot, and WhoAmI finds every CPU of a full table.
#[test]
fn apic_map_is_sized_for_every_cpu_count() {
    bounded("APIC ID map sizes", 120, || {
        for cpus in 1..=130 {
            let sim = Sim::new(Options::new(cpus));
            let held: Vec<Option<Held>> = (0..cpus)
                .map(|s| {
                    Some(Held {
                        id: apic(s),
                        caller: Some(s),
                    })
                })
                .collect();
            assert_every_cpu_found(&sim, &held, &[], &format!("{cpus} CPUs"));
        }
    });
}

/// BEHAVIOUR.md §2.7: a time source is TicksPerSecond ≠ 0 *and* GetTicks
/// ≠ NULL. A platform that gives only one of them has none: the protocol
/// does not advertise timeouts.
#[test]
fn half_a_time_source_is_none() {
    for (ticks_per_second, get_ticks) in [(0, true), (1_000_000, false), (1_000_000, true)] {
        let opts = Options::new(1).tokens(1);
        let table = processor_table(&opts);
        let cfg = config(&opts, &table);
        let mut plat = base_platform();
        plat.ticks_per_second = ticks_per_second;
        plat.get_ticks = get_ticks.then_some(constant_ticks);
        let mut size = 0;
        // SAFETY: valid pointers.
        assert_eq!(
            unsafe { MmMpGetRequiredSize(&cfg, &mut size) },
            Status::SUCCESS
        );
        let mut mem = vec![0u8; size + 64];
        let off = (mem.as_ptr() as usize).next_multiple_of(64) - mem.as_ptr() as usize;
        let mut inst: *mut MmMpInstance = std::ptr::null_mut();
        // SAFETY: `size` bytes at `off` are inside `mem`, 64-byte aligned.
        let st = unsafe {
            MmMpInitialize(
                mem.as_mut_ptr().add(off) as *mut c_void,
                size,
                &cfg,
                &plat,
                &mut inst,
            )
        };
        assert_eq!(st, Status::SUCCESS);
        // SAFETY: an instance MmMpInitialize returned.
        let mp = unsafe { &*MmMpGetMmMpProtocol(inst) };
        let timed = ticks_per_second != 0 && get_ticks;
        assert_eq!(
            mp.attributes & mm_mp::efi::MM_MP_TIMEOUT_SUPPORTED != 0,
            timed,
            "TicksPerSecond {ticks_per_second}, GetTicks {get_ticks}"
        );
    }
}

unsafe extern "efiapi" fn constant_ticks(_ctx: *mut c_void) -> u64 {
    7
}
