//! Memory commands: meminfo, buddyinfo, memcheck, pt, stress.

use super::CmdError;
use crate::mm::{frames, heap, paging, physmem};
use crate::println;
use crate::smp::MAX_CPUS;
use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use levitate_hal::arch::aarch64::mmu::walk::{self, Half, ReadTables};
use levitate_hal::VirtAddr;
use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::buddy::{AllocError, Owner, Request};

fn no_args(args: &[&str]) -> Result<(), CmdError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(CmdError::Usage)
    }
}

fn stats() -> Result<levitate_mm::buddy::Stats, CmdError> {
    frames::stats().ok_or_else(|| CmdError::Failed("the frame allocator is not running".into()))
}

/// /proc/meminfo-style totals, in kB, from the buddy's per-owner accounting.
pub fn meminfo(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    let s = stats()?;
    // RAM ranges from the tree, clipped and disjoint, so their sum fits; saturate regardless.
    let ram = physmem::map()
        .memory()
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.size));
    let kb = |frames: u64| frames * PAGE_SIZE / 1024;
    let row = |name: &str, v: u64| println!("{:<16}{v:>12} kB", format!("{name}:"));
    row("MemTotal", ram / 1024);
    row("MemFree", kb(s.free_frames));
    row("MemManaged", kb(s.managed_frames));
    row(
        "Reserved",
        (ram / 1024).saturating_sub(kb(s.managed_frames)),
    );
    // An owner's frames: blocks from the buddy, single frames from the per-CPU caches, and
    // runs from the bitmap layer.
    let (cache, parked) = frames::cache_stats();
    let runs = frames::run_stats();
    let owned =
        |o: Owner| s.allocated_to(o) + cache.handed_out_to(o).max(0) as u64 + runs.allocated_to(o);
    row("PageTables", kb(owned(Owner::PageTable)));
    row("KernelHeap", kb(owned(Owner::Heap)));
    row("KernelStacks", kb(owned(Owner::Stack)));
    row("Kernel", kb(owned(Owner::Kernel)));
    row("Dma", kb(owned(Owner::Dma)));
    row("Test", kb(owned(Owner::Test)));
    row("Other", kb(owned(Owner::Other)));
    row("FrameCaches", kb(parked));
    row("BitmapFree", kb(runs.frames_free));
    println!(
        "{:<16}{:>12}    (hits {}, refills {}, drains {}; bitmap fallbacks {})",
        "BitmapChunks:",
        s.allocated_to(Owner::Bitmap) / 512,
        cache.hits,
        cache.refills,
        cache.drains,
        runs.fallbacks
    );
    let used = s.managed_frames.saturating_sub(s.free_frames);
    println!(
        "{:<16}{:>12}    ({}% used; medium >= 60%, high >= 80%, critical >= 95%)",
        "Pressure:",
        crate::mm::pressure::level().as_str(),
        (used * 100).checked_div(s.managed_frames).unwrap_or(100)
    );
    let f = s.fragmentation();
    println!(
        "{:<16}{:>8}.{:03}    (unusable free space index, order 9)",
        "Fragmentation:",
        f / 1000,
        f % 1000
    );
    println!("{:<16}{:>12}", "MisuseRefused:", frames::refused_frees());
    println!("{:<16}{:>12}", "AllocFailures:", s.alloc_failures);
    println!(
        "{:<16}{:>12}",
        "Poisoning:",
        if s.poisoning { "on" } else { "off" }
    );
    Ok(())
}

/// Free blocks per order, as /proc/buddyinfo.
pub fn buddyinfo(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    println!("{}", stats()?.buddyinfo());
    Ok(())
}

/// Runs every invariant checker and, with poisoning on, checks that every free block the
/// buddy holds still carries the poison (a write into a free frame is a use after free).
/// Frames parked in a per-CPU cache or free inside a bitmap chunk are not scanned here: they
/// are checked when they are allocated.
pub fn memcheck(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    physmem::map()
        .validate()
        .map_err(|e| CmdError::Failed(format!("memory map: {e}")))?;
    frames::validate().map_err(|e| CmdError::Failed(format!("frame allocator: {e}")))?;
    // The scan reads every free frame once (about a second per GiB on QEMU), in chunks of
    // 1 MiB, each under the buddy's lock (so interrupts are masked only a few ms at a time).
    let scanned = match frames::scan_poison() {
        None => None,
        Some(Ok(free)) => Some(free),
        Some(Err(AllocError::UseAfterFree { addr, block, order })) => {
            return Err(CmdError::Failed(format!(
                "poison: {addr} was written while free (order-{order} block at {block})"
            )))
        }
        Some(Err(e)) => return Err(CmdError::Failed(format!("poison: {e}"))),
    };
    let s = stats()?;
    let blocks: u64 = s.free_blocks().iter().sum();
    match scanned {
        Some(free) => println!(
            "memcheck: ok ({} free frames in {blocks} blocks, {} allocated; poison intact in the buddy's {free} free frames)",
            s.free_frames,
            s.allocated_frames()
        ),
        None => println!(
            "memcheck: ok ({} free frames in {blocks} blocks, {} allocated)",
            s.free_frames,
            s.allocated_frames()
        ),
    }
    Ok(())
}

levitate_hal::ktest!(
    fn memcheck_finds_a_write_into_a_free_frame() -> KtestResult {
        use levitate_hal::kassert;
        use levitate_mm::buddy::FrameMemory;
        if !stats().is_ok_and(|s| s.poisoning) {
            // Without poisoning there is nothing to scan; memcheck must still pass.
            kassert!(memcheck(&[]).is_ok());
            return Ok(());
        }
        kassert!(memcheck(&[]).is_ok(), "memcheck fails before the write");
        // An order-1 block goes straight back to the buddy (single frames park in a cache).
        let block = frames::alloc(Request::new(1, Owner::Test));
        kassert!(block.is_ok());
        let addr = block.as_ref().map_or(PhysAddr::new(0), |b| b.addr);
        kassert!(block.is_ok_and(|b| frames::free(b).is_ok()));
        let at = addr + PAGE_SIZE + 0x88;
        // SAFETY: deliberately writes one byte of a free frame (usable RAM, mapped in the
        // linear map, held by nobody while the buddy keeps it free) to play a use after free;
        // the poison is restored below, before anything can allocate it.
        unsafe { physmem::linear(at).write_volatile(0x11) };
        let found = memcheck(&[]);
        frames::LinearMemory.fill(addr.pfn(), 2, levitate_mm::buddy::POISON);
        // The freed block may have merged with its buddies: only the byte's address is fixed.
        let want = format!("poison: {at} was written while free (");
        kassert!(
            matches!(&found, Err(CmdError::Failed(why)) if why.starts_with(&want)),
            "memcheck did not name the byte written while free"
        );
        kassert!(
            memcheck(&[]).is_ok(),
            "memcheck fails after the poison is back"
        );
        Ok(())
    }
);

fn parse_number(s: &str) -> Option<u64> {
    let t = s.replace('_', "");
    match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

/// Reads translation tables through the linear map, and only where it maps RAM (memory
/// outside it is refused, never touched): for the tables TTBR0_EL1 points to, which are not the
/// kernel's own (`paging` neither built nor locks them; they are the boot identity map in the
/// image's BSS, written once before the MMU came on).
struct LinearTables {
    mapped: levitate_mm::region::RegionSet<{ levitate_mm::memmap::MAX_USABLE }>,
}

impl ReadTables for LinearTables {
    fn entry(&mut self, table: PhysAddr, index: usize) -> Option<u64> {
        let start = table.as_u64();
        let inside = start.is_multiple_of(PAGE_SIZE)
            && index < 512
            && self.mapped.iter().any(|r| {
                r.contains(start)
                    && start
                        .checked_add(PAGE_SIZE - 1)
                        .is_some_and(|last| r.contains(last))
            });
        if !inside {
            return None;
        }
        let slot = physmem::linear(table).cast::<u64>();
        // SAFETY: the table's page is RAM the linear map maps (checked above), `index` is
        // inside it, and the read is an aligned 64-bit load; a table page being rewritten
        // could only give a stale descriptor, which a diagnostic may show.
        Some(unsafe { slot.add(index).read_volatile() })
    }
}

/// Walks `ADDR` through the tables the hardware would use: TTBR0_EL1's for the lower half,
/// TTBR1_EL1's (the kernel's) for the upper half.
pub fn pt(args: &[&str]) -> Result<(), CmdError> {
    let [addr] = args else {
        return Err(CmdError::Usage);
    };
    let va = VirtAddr::new(parse_number(addr).ok_or(CmdError::Usage)?);
    if !paging::ready() {
        return Err(CmdError::Failed(
            "the final page tables are not live".into(),
        ));
    }
    let mapped = physmem::linear_ranges(&physmem::map())
        .map_err(|e| CmdError::Failed(format!("the linear map's ranges: {e}")))?;
    let Some(half) = Half::of(va) else {
        // Neither base register translates it: no table is read, and the walk says so.
        println!(
            "{}",
            walk::walk_with(&mut LinearTables { mapped }, PhysAddr::new(0), va)
        );
        return Ok(());
    };
    let root = walk::live::root(half);
    let walked = match half {
        // The kernel's tables, under their lock (they change as the heap and stacks map).
        Half::Upper => {
            if root != paging::root() {
                println!(
                    "note: TTBR1_EL1 holds {root}, not the kernel's tables at {}; walking the kernel's",
                    paging::root()
                );
            }
            paging::walk(va)
        }
        Half::Lower => walk::walk_with(&mut LinearTables { mapped }, root, va),
    };
    println!("{walked}");
    if walk::live::walks_disabled(half) {
        println!(
            "TCR_EL1.EPD{} = 1: the hardware reads no {} table, so every {}-half address faults \
             (translation fault, level 0) whatever the tables above say",
            half as u8,
            half.register(),
            half.name()
        );
    }
    Ok(())
}

/// A small xorshift generator: the stress commands need variety, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn pattern(addr: PhysAddr) -> u64 {
    addr.as_u64().rotate_left(17) ^ 0x5bd1_e995_1234_abcd
}

/// Something `stress frames` holds: a buddy block (`order`) or a run of frames.
struct Held {
    addr: PhysAddr,
    frames: u64,
    order: Option<u8>,
    /// The CPU that allocated it (a free elsewhere counts as cross-CPU).
    cpu: usize,
}

/// Writes the pattern into every frame held (first and last word of each).
fn fill(h: &Held) {
    for i in 0..h.frames {
        let frame = h.addr + i * PAGE_SIZE;
        let p = physmem::linear(frame).cast::<u64>();
        // SAFETY: the frame belongs to `h`, allocated to this command, in the linear map.
        unsafe {
            p.write_volatile(pattern(frame));
            p.add(511).write_volatile(!pattern(frame));
        }
    }
}

/// Counts frames whose pattern changed.
fn check(h: &Held) -> u64 {
    (0..h.frames)
        .filter(|i| {
            let frame = h.addr + i * PAGE_SIZE;
            let p = physmem::linear(frame).cast::<u64>();
            // SAFETY: as in `fill`.
            let (a, b) = unsafe { (p.read_volatile(), p.add(511).read_volatile()) };
            a != pattern(frame) || b != !pattern(frame)
        })
        .count() as u64
}

/// Most operations `stress frames` runs on each CPU: about an hour under QEMU. Ctrl-C stops
/// any run sooner.
pub const MAX_STRESS_OPS: u64 = 100_000_000;

/// Runs this long or longer print their progress at every tenth.
const PROGRESS_FROM: u64 = 100_000;

/// How often (in operations) the shell's CPU looks for Ctrl-C.
const POLL_EVERY: u64 = 256;

/// Most items one worker holds at once.
const LIVE_CAPACITY: usize = 256;

/// Most items in flight between CPUs.
const EXCHANGE_CAPACITY: usize = 1024;

/// Held items handed from one CPU to another during `stress frames`, to be checked and freed
/// there. Its room is reserved before the run, so a push never grows the heap while the stress
/// holds most of memory. Each worker takes the lock for one push or pop, with no other lock
/// held; interrupts are masked, so no handler can want it.
static EXCHANGE: spin::Mutex<Vec<Held>> = spin::Mutex::new(Vec::new());

/// What each worker holds, one slot per CPU (only that CPU's worker locks its slot during a
/// run; the shell reserves the room before and empties it after).
static LIVE: [spin::Mutex<Vec<Held>>; MAX_CPUS] =
    [const { spin::Mutex::new(Vec::new()) }; MAX_CPUS];

/// Set to stop every worker: the shell's CPU sets it when Ctrl-C arrives.
static STOP: AtomicBool = AtomicBool::new(false);

/// The CPU that runs the shell: it polls the console and prints progress.
static SHELL_CPU: AtomicUsize = AtomicUsize::new(0);

/// One worker's counts for a run, written by that worker (a remote free counts where it
/// happens: frames taken on one CPU may be given back on another).
struct WorkerCounts {
    ops: AtomicU64,
    allocs: AtomicU64,
    frees: AtomicU64,
    remote_frees: AtomicU64,
    refused: AtomicU64,
    /// Frames the stress's allocations handed to it.
    taken: AtomicU64,
    /// Frames it gave back with a free the allocator accepted.
    given: AtomicU64,
}

impl WorkerCounts {
    const fn new() -> Self {
        Self {
            ops: AtomicU64::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            remote_frees: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            given: AtomicU64::new(0),
        }
    }

    fn counters(&self) -> [&AtomicU64; 7] {
        [
            &self.ops,
            &self.allocs,
            &self.frees,
            &self.remote_frees,
            &self.refused,
            &self.taken,
            &self.given,
        ]
    }
}

static WORKERS: [WorkerCounts; MAX_CPUS] = [const { WorkerCounts::new() }; MAX_CPUS];

fn my_counts() -> &'static WorkerCounts {
    &WORKERS[crate::smp::current().index]
}

fn sum(field: impl Fn(&WorkerCounts) -> &AtomicU64) -> u64 {
    WORKERS
        .iter()
        .map(|w| field(w).load(Ordering::Relaxed))
        .sum()
}

/// Checks a held item's pattern and frees it; returns the errors found (changed frames, and a
/// refused free, whose frames are then not given back).
fn check_and_free(h: Held) -> u64 {
    let mut errors = check(&h);
    let freed = match h.order {
        Some(order) => frames::free_raw(h.addr, order).is_ok(),
        None => frames::free_frames(h.addr, h.frames).is_ok(),
    };
    let counts = my_counts();
    counts.frees.fetch_add(1, Ordering::Relaxed);
    if freed {
        counts.given.fetch_add(h.frames, Ordering::Relaxed);
    } else {
        errors += 1;
    }
    errors
}

/// Allocates something of a random kind: single frames (per-CPU caches), runs of 2..=121
/// (bitmap layer), or buddy blocks up to 2 MiB.
fn alloc_random(r: u64) -> Option<Held> {
    let cpu = crate::smp::current().index;
    match r >> 8 & 15 {
        0..=7 => frames::alloc_frames(1, Owner::Test, false)
            .ok()
            .map(|run| Held {
                cpu,
                addr: run.addr,
                frames: 1,
                order: None,
            }),
        8..=12 => {
            let n = 2 + (r >> 16) % 120;
            frames::alloc_frames(n, Owner::Test, false)
                .ok()
                .map(|run| Held {
                    cpu,
                    addr: run.addr,
                    frames: run.frames,
                    order: None,
                })
        }
        13 | 14 => {
            let order = ((r >> 16) % 5) as u8;
            frames::alloc(Request::new(order, Owner::Test))
                .ok()
                .map(|b| Held {
                    cpu,
                    addr: b.addr,
                    frames: b.frames(),
                    order: Some(order),
                })
        }
        _ => frames::alloc(Request::new(9, Owner::Test))
            .ok()
            .map(|b| Held {
                cpu,
                addr: b.addr,
                frames: b.frames(),
                order: Some(9),
            }),
    }
}

/// One CPU's share of `stress frames`: up to `n` random operations (fewer once `STOP` is set);
/// returns the errors it saw. On the shell's CPU it also watches for Ctrl-C and prints
/// progress.
fn stress_worker(n: usize) -> u64 {
    let n = n as u64;
    let me = crate::smp::current().index;
    let shell = me == SHELL_CPU.load(Ordering::Relaxed);
    let counts = &WORKERS[me];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15
        ^ ((me as u64) << 32)
        ^ levitate_hal::arch::aarch64::timer::ticks());
    let mut guard = LIVE[me].lock();
    let live: &mut Vec<Held> = &mut guard;
    let tenth = if n >= PROGRESS_FROM { n / 10 } else { 0 };
    let mut errors = 0;
    let mut done = 0;
    while done < n && !STOP.load(Ordering::Relaxed) {
        if shell && done % POLL_EVERY == 0 && crate::console::interrupted() {
            STOP.store(true, Ordering::Relaxed);
            break;
        }
        if shell && tenth > 0 && done > 0 && done % tenth == 0 {
            println!(
                "stress frames: {}% ({done} of {n} operations on cpu{me}; Ctrl-C stops)",
                done / tenth * 10
            );
        }
        done += 1;
        let r = rng.next();
        if r.is_multiple_of(8) {
            // Cross-CPU traffic: hand something over, or free what another CPU allocated.
            if r & 16 != 0 {
                if let Some(h) = live.pop() {
                    let mut exchange = EXCHANGE.lock();
                    if exchange.len() < exchange.capacity() {
                        exchange.push(h);
                    } else {
                        drop(exchange);
                        live.push(h);
                    }
                }
            } else {
                let popped = EXCHANGE.lock().pop();
                if let Some(h) = popped {
                    if h.cpu != me {
                        counts.remote_frees.fetch_add(1, Ordering::Relaxed);
                    }
                    errors += check_and_free(h);
                }
            }
        } else if live.is_empty() || (!r.is_multiple_of(3) && live.len() < LIVE_CAPACITY) {
            match alloc_random(r) {
                Some(h) => {
                    fill(&h);
                    counts.taken.fetch_add(h.frames, Ordering::Relaxed);
                    counts.allocs.fetch_add(1, Ordering::Relaxed);
                    live.push(h);
                }
                None => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            let h = live.swap_remove((r >> 16) as usize % live.len());
            errors += check_and_free(h);
        }
    }
    counts.ops.store(done, Ordering::Relaxed);
    for h in live.drain(..) {
        errors += check_and_free(h);
    }
    errors
}

/// Where the managed frames are, by cause, in frames: what `stress frames` compares before
/// and after. Every allocated frame is in exactly one cause, so a change in MemFree is the sum
/// of the changes of the causes.
#[derive(Clone, Copy)]
struct Usage {
    free: u64,
    by_cause: [i64; CAUSES.len()],
}

/// The causes, as `stress frames` names them. The last one is the stress's own.
const CAUSES: [&str; 9] = [
    "heap",
    "page tables",
    "stacks",
    "kernel",
    "dma",
    "other",
    "frames parked in per-CPU caches",
    "free space in bitmap chunks",
    "owner test",
];

impl Usage {
    fn now() -> Result<Self, CmdError> {
        let s = stats()?;
        let (cache, _) = frames::cache_stats();
        let runs = frames::run_stats();
        let buddy = |o: Owner| s.allocated_to(o) as i64;
        let owned = |o: Owner| buddy(o) + cache.handed_out_to(o) + runs.allocated_to(o) as i64;
        let handed_out: i64 = Owner::ALL.iter().map(|&o| cache.handed_out_to(o)).sum();
        let in_runs: i64 = Owner::ALL
            .iter()
            .map(|&o| runs.allocated_to(o) as i64)
            .sum();
        Ok(Self {
            free: s.free_frames,
            by_cause: [
                owned(Owner::Heap),
                owned(Owner::PageTable),
                owned(Owner::Stack),
                owned(Owner::Kernel),
                owned(Owner::Dma),
                owned(Owner::Other),
                buddy(Owner::FrameCache) - handed_out,
                buddy(Owner::Bitmap) - in_runs,
                owned(Owner::Test),
            ],
        })
    }
}

/// Signed kB from a signed frame count.
fn kb(frames: i64) -> i64 {
    frames * (PAGE_SIZE / 1024) as i64
}

fn stress_frames(n: u64) -> Result<(), CmdError> {
    // Room for the bookkeeping first: once the stress holds most of memory, a heap growth
    // could fail, and the stress must not be the one to panic on it.
    let online = crate::smp::online();
    let reserve =
        |v: &mut Vec<Held>, room: usize| v.try_reserve_exact(room.saturating_sub(v.len()));
    let room = reserve(&mut EXCHANGE.lock(), EXCHANGE_CAPACITY).is_ok()
        && LIVE[..online]
            .iter()
            .all(|l| reserve(&mut l.lock(), LIVE_CAPACITY).is_ok());
    if !room {
        return Err(CmdError::Failed(
            "no heap left for the stress's own bookkeeping".into(),
        ));
    }
    for w in &WORKERS {
        for c in w.counters() {
            c.store(0, Ordering::Relaxed);
        }
    }
    STOP.store(false, Ordering::Relaxed);
    SHELL_CPU.store(crate::smp::current().index, Ordering::Relaxed);
    let tick_errors_before = tick_stress_errors();
    let tick_allocations_before = tick_stress_allocations();
    // Compare like with like: what the caches hold counts as free memory here, and the tick's
    // stress (which frees all it takes before it returns) is paused for the snapshot.
    let pause = frames::pause_tick_stress();
    frames::drain_caches();
    let heap_before = heap::stats();
    let before = Usage::now()?;
    drop(pause);

    let results = crate::smp::run_on_all(stress_worker, n as usize);
    let cpus = results.iter().flatten().count();
    let mut errors: u64 = results.iter().flatten().sum();
    // Whatever is still in flight between CPUs.
    let leftovers: Vec<Held> = EXCHANGE.lock().drain(..).collect();
    let me = crate::smp::current().index;
    for h in leftovers {
        if h.cpu != me {
            my_counts().remote_frees.fetch_add(1, Ordering::Relaxed);
        }
        errors += check_and_free(h);
    }
    if let Err(e) = frames::validate() {
        println!("stress frames: the frame allocator's checker failed: {e}");
        errors += 1;
    }
    let pause = frames::pause_tick_stress();
    frames::drain_caches();
    let after = Usage::now()?;
    let heap_after = heap::stats();
    drop(pause);
    if frames::tick_stress_enabled() {
        let tick_errors = tick_stress_errors() - tick_errors_before;
        println!(
            "tick stress: {} allocations in interrupt context (masked), {tick_errors} errors",
            tick_stress_allocations() - tick_allocations_before
        );
        errors += tick_errors;
    }

    let stopped = STOP.load(Ordering::Relaxed);
    let ops = sum(|w| &w.ops);
    let what = if stopped {
        format!("stopped by Ctrl-C after {ops} operations on {cpus} CPUs ({n} asked for on each)")
    } else {
        format!("{n} operations on each of {cpus} CPUs")
    };
    println!(
        "stress frames: {what}: {} allocations (single frames, runs of 2..121 frames, blocks), {} frees ({} on another CPU than the allocation), {} refused for lack of memory",
        sum(|w| &w.allocs),
        sum(|w| &w.frees),
        sum(|w| &w.remote_frees),
        sum(|w| &w.refused),
    );
    for (i, w) in WORKERS
        .iter()
        .enumerate()
        .filter(|(_, w)| w.ops.load(Ordering::Relaxed) > 0)
    {
        println!(
            "  cpu{i}: {} operations, took {} frames, gave back {}",
            w.ops.load(Ordering::Relaxed),
            w.taken.load(Ordering::Relaxed),
            w.given.load(Ordering::Relaxed)
        );
    }
    // The stress's own loss: frames it took and did not give back, and what the allocator
    // still counts for its owner.
    let (taken, given) = (sum(|w| &w.taken), sum(|w| &w.given));
    let test = CAUSES.len() - 1;
    let test_change = after.by_cause[test] - before.by_cause[test];
    println!(
        "frames: {taken} taken and {given} given back by the stress; owner test {} kB before, {} kB after",
        kb(before.by_cause[test]),
        kb(after.by_cause[test])
    );
    if taken != given {
        println!(
            "stress frames: {} frames the stress took were not given back",
            taken.abs_diff(given)
        );
        errors += 1;
    }
    if test_change != 0 {
        println!(
            "stress frames: the allocator counts {} kB more for owner test than before",
            kb(test_change)
        );
        errors += 1;
    }

    // Everything else that moved MemFree, by cause: not the stress's frames, so not an error.
    let free_change = after.free as i64 - before.free as i64;
    let mut explained = 0;
    let mut causes = alloc::string::String::new();
    for (i, name) in CAUSES.iter().enumerate().take(test) {
        let change = after.by_cause[i] - before.by_cause[i];
        explained += change;
        if change == 0 {
            continue;
        }
        if !causes.is_empty() {
            causes.push_str(", ");
        }
        let verb = if change > 0 { "took" } else { "gave back" };
        causes.push_str(&format!("{name} {verb} {} kB", kb(change.abs())));
        if i == 0 {
            causes.push_str(&format!(
                " ({} growths, {} segments released)",
                heap_after.growths.saturating_sub(heap_before.growths),
                heap_after.releases.saturating_sub(heap_before.releases)
            ));
        }
    }
    let unexplained = free_change + explained + test_change;
    println!(
        "MemFree: {} kB before, {} kB after{}",
        kb(before.free as i64),
        kb(after.free as i64),
        if free_change == 0 {
            " (back to its starting value)".into()
        } else if test_change == 0 && unexplained == 0 {
            format!(
                " ({:+} kB, none of it the stress's: {causes})",
                kb(free_change)
            )
        } else {
            format!(
                " ({:+} kB: {causes}; the stress's own are above)",
                kb(free_change)
            )
        }
    );
    if unexplained != 0 {
        println!(
            "stress frames: {} kB of MemFree's change is in no owner's count",
            kb(unexplained)
        );
        errors += 1;
    }
    println!("errors: {errors}");
    if errors > 0 {
        return Err(CmdError::Failed("frames were corrupted or lost".into()));
    }
    Ok(())
}

/// Online CPUs with their MPIDR and what each is doing.
pub fn cpus(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    for c in crate::smp::cpus() {
        println!(
            "cpu{:<3} MPIDR {:#012x}  {:<18} jobs {}",
            c.index,
            c.mpidr.load(Ordering::Relaxed),
            c.state().as_str(),
            c.jobs.load(Ordering::Relaxed)
        );
    }
    println!("{} online", crate::smp::online());
    Ok(())
}

fn stress_heap(total: u64) -> Result<(), CmdError> {
    let before = heap::stats();
    let tick_errors_before = tick_stress_errors();
    let tick_allocations_before = tick_stress_allocations();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ levitate_hal::arch::aarch64::timer::ticks());
    let mut live: Vec<Vec<u8>> = Vec::new();
    let (mut bytes, mut errors, mut allocations) = (0u64, 0u64, 0u64);
    while bytes < total {
        let r = rng.next();
        // Many small blocks, some medium, a few large (up to a quarter of the total).
        let size = match r & 15 {
            0..=10 => 16 + (r >> 8) % 512,
            11..=14 => 4096 + (r >> 8) % 65536,
            _ => 1 + (r >> 8) % (total / 4).max(1),
        } as usize;
        let mut v: Vec<u8> = Vec::new();
        if v.try_reserve_exact(size).is_err() {
            println!("stress heap: a {size}-byte allocation failed after {bytes} bytes");
            break;
        }
        let seed = (r >> 32) as u8;
        v.extend((0..size).map(|i| seed.wrapping_add(i as u8)));
        bytes = bytes.saturating_add(size as u64);
        allocations += 1;
        live.push(v);
    }
    let peak = heap::stats();
    // Check and free in a shuffled order.
    while !live.is_empty() {
        let v = live.swap_remove(rng.next() as usize % live.len());
        let seed = v[0];
        errors += v
            .iter()
            .enumerate()
            .filter(|(i, &b)| b != seed.wrapping_add(*i as u8))
            .count() as u64;
    }
    // The list itself too (a 2 KiB+ block in some segment), before the figures.
    drop(live);
    let after = heap::stats();
    println!(
        "stress heap: {allocations} allocations, {bytes} bytes; heap grew {} times to {} KiB (limit {} KiB), {} KiB mapped after freeing",
        after.growths.saturating_sub(before.growths),
        peak.size / 1024,
        after.limit / 1024,
        after.size / 1024
    );
    if frames::tick_stress_enabled() {
        let tick_errors = tick_stress_errors() - tick_errors_before;
        println!(
            "tick stress: {} allocations in interrupt context (masked), {tick_errors} errors",
            tick_stress_allocations() - tick_allocations_before
        );
        errors += tick_errors;
    }
    println!("errors: {errors}");
    if errors > 0 {
        return Err(CmdError::Failed("heap memory was corrupted".into()));
    }
    Ok(())
}

/// `irqstat`: per CPU, the longest interval interrupts were masked (by an `IrqGuard` that
/// found them open) since boot or the last `irqstat reset`, and where it began; then the
/// tick's allocation stress (`frames::tick_stress`) per CPU. `irqstat stress on|off` turns
/// that stress on or off.
pub fn irqstat(args: &[&str]) -> Result<(), CmdError> {
    use levitate_hal::sync;
    match args {
        [] => {}
        ["reset"] => {
            sync::reset_masked();
            frames::reset_tick_stress();
            println!("irqstat: reset");
            return Ok(());
        }
        ["stress", "on"] => {
            frames::set_tick_stress(true);
            println!("irqstat: tick stress on (every timer tick on every CPU allocates and frees frames and a heap object in its interrupt handler)");
            return Ok(());
        }
        ["stress", "off"] => {
            frames::set_tick_stress(false);
            println!("irqstat: tick stress off");
            return Ok(());
        }
        _ => return Err(CmdError::Usage),
    }
    let hz = levitate_hal::arch::aarch64::timer::frequency();
    println!("CPU     longest masked  sections  where");
    for c in crate::smp::cpus() {
        let r = sync::masked_record(c.index);
        let place = match r.place {
            Some(p) => format!("{}:{}:{}", p.file(), p.line(), p.column()),
            None => "-".into(),
        };
        println!(
            "cpu{:<3} {:>12} us  {:>8}  {place}",
            c.index,
            r.micros(hz),
            r.sections
        );
    }
    let on = frames::tick_stress_enabled();
    println!("tick stress: {}", if on { "on" } else { "off" });
    for c in crate::smp::cpus() {
        let t = frames::tick_stress_counts(c.index);
        println!(
            "cpu{:<3} tick stress: {} runs, {} allocations, {} refused, {} errors",
            c.index, t.runs, t.allocations, t.refused, t.errors
        );
    }
    Ok(())
}

/// The tick stress's errors so far, all CPUs.
fn tick_stress_errors() -> u64 {
    (0..MAX_CPUS)
        .map(|i| frames::tick_stress_counts(i).errors)
        .sum()
}

/// The tick stress's successful allocations so far, all CPUs.
fn tick_stress_allocations() -> u64 {
    (0..MAX_CPUS)
        .map(|i| frames::tick_stress_counts(i).allocations)
        .sum()
}

/// `stress frames N` / `stress heap BYTES`.
pub fn stress(args: &[&str]) -> Result<(), CmdError> {
    match args {
        ["frames", n] => stress_frames(
            parse_number(n)
                .filter(|n| (1..=MAX_STRESS_OPS).contains(n))
                .ok_or(CmdError::Usage)?,
        ),
        ["heap", b] => stress_heap(parse_size(b).filter(|&b| b > 0).ok_or(CmdError::Usage)?),
        _ => Err(CmdError::Usage),
    }
}

/// A byte count with an optional K/M/G suffix.
fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    parse_number(num)?.checked_mul(mult)
}
