//! Memory commands: meminfo, buddyinfo, memcheck, pt, stress.

use super::CmdError;
use crate::{frames, heap, memory, paging, println};
use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
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
    let ram: u64 = memory::map().memory().iter().map(|r| r.size).sum();
    let kb = |frames: u64| frames * PAGE_SIZE / 1024;
    let row = |name: &str, v: u64| println!("{:<16}{v:>12} kB", format!("{name}:"));
    row("MemTotal", ram / 1024);
    row("MemFree", kb(s.free_frames));
    row("MemManaged", kb(s.managed_frames));
    row("Reserved", ram / 1024 - kb(s.managed_frames));
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
    let used = s.managed_frames - s.free_frames;
    println!(
        "{:<16}{:>12}    ({}% used; medium >= 60%, high >= 80%, critical >= 95%)",
        "Pressure:",
        crate::pressure::level().as_str(),
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
    memory::map()
        .validate()
        .map_err(|e| CmdError::Failed(format!("memory map: {e}")))?;
    frames::validate().map_err(|e| CmdError::Failed(format!("frame allocator: {e}")))?;
    // The scan holds the buddy's lock, so no block leaves or joins the free lists meanwhile;
    // it reads every free frame once (about a second per GiB on QEMU).
    let poison = frames::with(|b| {
        b.poisoning().then(|| {
            (
                b.find_use_after_free(&frames::LinearMemory),
                b.stats().free_frames,
            )
        })
    });
    let scanned = match poison {
        None => None,
        Some((None, free)) => Some(free),
        Some((Some(AllocError::UseAfterFree { addr, block, order }), _)) => {
            return Err(CmdError::Failed(format!(
                "poison: {addr} was written while free (order-{order} block at {block})"
            )))
        }
        Some((Some(e), _)) => return Err(CmdError::Failed(format!("poison: {e}"))),
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
        unsafe { memory::linear(at).write_volatile(0x11) };
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

/// Walks the kernel's tables for a virtual address.
pub fn pt(args: &[&str]) -> Result<(), CmdError> {
    let [addr] = args else {
        return Err(CmdError::Usage);
    };
    let va = parse_number(addr).ok_or(CmdError::Usage)?;
    if !paging::ready() {
        return Err(CmdError::Failed(
            "the final page tables are not live".into(),
        ));
    }
    println!("{}", paging::walk(VirtAddr::new(va)));
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
}

/// Writes the pattern into every frame held (first and last word of each).
fn fill(h: &Held) {
    for i in 0..h.frames {
        let frame = h.addr + i * PAGE_SIZE;
        let p = memory::linear(frame).cast::<u64>();
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
            let p = memory::linear(frame).cast::<u64>();
            // SAFETY: as in `fill`.
            let (a, b) = unsafe { (p.read_volatile(), p.add(511).read_volatile()) };
            a != pattern(frame) || b != !pattern(frame)
        })
        .count() as u64
}

/// Held items handed from one CPU to another during `stress frames`, to be checked and freed
/// there.
static EXCHANGE: spin::Mutex<Vec<Held>> = spin::Mutex::new(Vec::new());
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static REMOTE_FREES: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Checks a held item's pattern and frees it; returns the errors found.
fn check_and_free(h: Held) -> u64 {
    let mut errors = check(&h);
    let freed = match h.order {
        Some(order) => frames::free_raw(h.addr, order).is_ok(),
        None => frames::free_frames(h.addr, h.frames).is_ok(),
    };
    if !freed {
        errors += 1;
    }
    FREES.fetch_add(1, Ordering::Relaxed);
    errors
}

/// Allocates something of a random kind: single frames (per-CPU caches), runs of 2..=511
/// (bitmap layer), or buddy blocks up to 2 MiB.
fn alloc_random(r: u64) -> Option<Held> {
    match r >> 8 & 15 {
        0..=7 => frames::alloc_frames(1, Owner::Test, false)
            .ok()
            .map(|run| Held {
                addr: run.addr,
                frames: 1,
                order: None,
            }),
        8..=12 => {
            let n = 2 + (r >> 16) % 120;
            frames::alloc_frames(n, Owner::Test, false)
                .ok()
                .map(|run| Held {
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
                    addr: b.addr,
                    frames: b.frames(),
                    order: Some(order),
                })
        }
        _ => frames::alloc(Request::new(9, Owner::Test))
            .ok()
            .map(|b| Held {
                addr: b.addr,
                frames: b.frames(),
                order: Some(9),
            }),
    }
}

/// One CPU's share of `stress frames`: `n` random operations; returns the errors it saw.
fn stress_worker(n: usize) -> u64 {
    let me = crate::smp::current().index as u64;
    let mut rng =
        Rng(0x9e37_79b9_7f4a_7c15 ^ (me << 32) ^ levitate_hal::arch::aarch64::timer::ticks());
    let mut live: Vec<Held> = Vec::new();
    let mut errors = 0;
    for _ in 0..n {
        let r = rng.next();
        if r.is_multiple_of(8) {
            // Cross-CPU traffic: hand something over, or free what another CPU allocated.
            if r & 16 != 0 {
                if let Some(h) = live.pop() {
                    EXCHANGE.lock().push(h);
                }
            } else if let Some(h) = EXCHANGE.lock().pop() {
                errors += check_and_free(h);
                REMOTE_FREES.fetch_add(1, Ordering::Relaxed);
            }
        } else if live.is_empty() || (!r.is_multiple_of(3) && live.len() < 256) {
            match alloc_random(r) {
                Some(h) => {
                    fill(&h);
                    live.push(h);
                    ALLOCS.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    REFUSED.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            let h = live.swap_remove((r >> 16) as usize % live.len());
            errors += check_and_free(h);
        }
    }
    for h in live.drain(..) {
        errors += check_and_free(h);
    }
    errors
}

fn stress_frames(n: u64) -> Result<(), CmdError> {
    // Compare like with like: what the caches hold counts as free memory here.
    frames::drain_caches();
    let start = stats()?.free_frames;
    for c in [&ALLOCS, &FREES, &REMOTE_FREES, &REFUSED] {
        c.store(0, Ordering::Relaxed);
    }
    let results = crate::smp::run_on_all(stress_worker, n as usize);
    let cpus = results.iter().flatten().count();
    let mut errors: u64 = results.iter().flatten().sum();
    // Whatever is still in flight between CPUs.
    let leftovers: Vec<Held> = core::mem::take(&mut *EXCHANGE.lock());
    for h in leftovers {
        errors += check_and_free(h);
        REMOTE_FREES.fetch_add(1, Ordering::Relaxed);
    }
    if frames::validate().is_err() {
        errors += 1;
    }
    frames::drain_caches();
    let end = stats()?.free_frames;
    println!(
        "stress frames: {n} operations on each of {cpus} CPUs: {} allocations (single frames, runs of 2..121 frames, blocks), {} frees ({} on another CPU than the allocation), {} refused for lack of memory",
        ALLOCS.load(Ordering::Relaxed),
        FREES.load(Ordering::Relaxed),
        REMOTE_FREES.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed)
    );
    println!("errors: {errors}");
    println!(
        "MemFree: {} kB before, {} kB after{}",
        start * 4,
        end * 4,
        if start == end {
            " (back to its starting value)"
        } else {
            " (CHANGED)"
        }
    );
    if errors > 0 || start != end {
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
        bytes += size as u64;
        allocations += 1;
        live.push(v);
    }
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
    let after = heap::stats();
    println!(
        "stress heap: {allocations} allocations, {bytes} bytes; heap grew {} times to {} KiB (limit {} KiB)",
        after.growths - before.growths,
        after.size / 1024,
        after.limit / 1024
    );
    println!("errors: {errors}");
    if errors > 0 {
        return Err(CmdError::Failed("heap memory was corrupted".into()));
    }
    Ok(())
}

/// `stress frames N` / `stress heap BYTES`.
pub fn stress(args: &[&str]) -> Result<(), CmdError> {
    match args {
        ["frames", n] => stress_frames(parse_number(n).filter(|&n| n > 0).ok_or(CmdError::Usage)?),
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
