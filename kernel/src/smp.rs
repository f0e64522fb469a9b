//! Secondary CPUs: started with PSCI CPU_ON from the device tree's `/cpus` (enable-method
//! "psci", the conduit from `/psci`), each with its own kernel stack and exception stack (guard
//! pages below both), per-CPU records indexed by the CPU's identity (`percpu`: its index in
//! TPIDR_EL1), and a mailbox for work the boot CPU hands out (`run_on_all`).

use crate::mm::{paging, stacks};
use crate::{devicetree, power};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use levitate_hal::arch::aarch64::{cpu, psci, timer};
use levitate_hal::layout::KIMAGE_VBASE;
use levitate_mm::dtb::devices;
use spin::Mutex;

pub use crate::percpu::MAX_CPUS;

/// What a CPU is doing, for `cpus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Not started (or failed to start).
    Offline = 0,
    /// Waiting for work.
    Idle = 1,
    /// Running a job.
    Busy = 2,
    /// The boot CPU, running the shell.
    Shell = 3,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Idle,
            2 => State::Busy,
            3 => State::Shell,
            _ => State::Offline,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Offline => "offline",
            State::Idle => "idle",
            State::Busy => "running a job",
            State::Shell => "running the shell",
        }
    }
}

/// A unit of work for one CPU: `func(arg)`, whose result the boot CPU collects.
#[derive(Clone, Copy)]
pub struct Job {
    /// What to run.
    pub func: fn(usize) -> u64,
    /// Its argument.
    pub arg: usize,
}

/// Per-CPU data, one entry per CPU index (`percpu::index`).
pub struct PerCpu {
    /// Logical CPU number (0 = boot CPU).
    pub index: usize,
    /// MPIDR affinity.
    pub mpidr: AtomicU64,
    state: AtomicU8,
    /// Set by the CPU itself once it runs Rust code.
    online: AtomicBool,
    /// Who owns the slot during start-up (`Claim`): the boot CPU and the starting CPU race
    /// on it with compare-and-swap, so a CPU that misses its deadline can never come up in a
    /// slot the boot CPU has given up on (or handed to another CPU).
    claim: AtomicU8,
    /// Work waiting for this CPU. Taken by the CPU, filled by the boot CPU: a short critical
    /// section on both sides, never held while running the job.
    mailbox: Mutex<Option<Job>>,
    result: AtomicU64,
    done: AtomicBool,
    /// Jobs completed.
    pub jobs: AtomicU64,
}

impl PerCpu {
    const fn new(index: usize) -> Self {
        Self {
            index,
            mpidr: AtomicU64::new(0),
            state: AtomicU8::new(State::Offline as u8),
            online: AtomicBool::new(false),
            claim: AtomicU8::new(Claim::Free as u8),
            mailbox: Mutex::new(None),
            result: AtomicU64::new(0),
            done: AtomicBool::new(false),
            jobs: AtomicU64::new(0),
        }
    }

    /// What the CPU is doing.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }
}

/// Start-up ownership of a per-CPU slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Claim {
    /// Never handed to a CPU, or handed to one the firmware refused to start (it never runs,
    /// so the slot and its stacks may go to the next CPU).
    Free = 0,
    /// CPU_ON succeeded; the CPU has until its deadline to move the slot to `Online`.
    Starting = 1,
    /// The CPU took the slot in time.
    Online = 2,
    /// The deadline passed first. The slot, its stacks and its boot block now belong to a CPU
    /// that may still be running somewhere in its start-up path: never reused. If the CPU
    /// does arrive it finds this and turns itself off.
    Abandoned = 3,
}

static CPUS: [PerCpu; MAX_CPUS] = {
    let mut cpus = [const { PerCpu::new(0) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        cpus[i] = PerCpu::new(i);
        i += 1;
    }
    cpus
};

/// CPUs brought up (boot CPU included).
static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// The register block boot.S's `secondary_entry` reads with the MMU off. Layout shared with
/// boot.S.
#[repr(C, align(64))]
struct SecondaryBoot {
    ttbr1: u64,
    stack_top: u64,
    exception_stack_top: u64,
    /// TPIDR_EL1's value for the CPU (`percpu::tpidr_for`), also passed to `secondary_main`.
    percpu: u64,
    entry: u64,
}

/// One block per CPU, written by the boot CPU before CPU_ON (cleaned to PoC) and read once by
/// that CPU. Guarded by the start sequence, not a lock: CPUs start one at a time.
static BOOT_BLOCKS: Mutex<[SecondaryBoot; MAX_CPUS]> = Mutex::new(
    [const {
        SecondaryBoot {
            ttbr1: 0,
            stack_top: 0,
            exception_stack_top: 0,
            percpu: 0,
            entry: 0,
        }
    }; MAX_CPUS],
);

/// This CPU's data.
pub fn current() -> &'static PerCpu {
    &CPUS[crate::percpu::index()]
}

/// Marks the boot CPU as CPU 0 and points its TPIDR_EL1 at its data.
pub fn init_boot_cpu() {
    let me = &CPUS[0];
    me.mpidr.store(cpu::mpidr(), Ordering::Relaxed);
    me.online.store(true, Ordering::Release);
    me.set_state(State::Shell);
    crate::percpu::set_boot_cpu();
}

/// Every CPU brought online, in index order.
pub fn cpus() -> impl Iterator<Item = &'static PerCpu> {
    CPUS.iter().filter(|c| c.online.load(Ordering::Acquire))
}

/// CPUs online.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

extern "C" {
    fn secondary_entry();
}

/// Starts every other CPU the device tree lists with enable-method "psci".
pub fn start_secondaries() {
    let Some(conduit) = power::conduit() else {
        log::warn!("smp: no PSCI conduit: staying on one CPU");
        return;
    };
    let fdt = devicetree::fdt();
    let me = cpu::mpidr() & devices::MPIDR_AFFINITY_MASK;
    let image_phys = levitate_hal::arch::aarch64::mmu::early::image_phys()
        .expect("boot order invariant: early mapper set up")
        .as_u64();
    let entry_pa = secondary_entry as *const () as u64 - KIMAGE_VBASE + image_phys;
    let timeout_ms = crate::boot_info().args.cpu_start_timeout_ms;
    let mut next = 1;
    // `devices::cpu_nodes` (host-tested on the Pixel 6, Juno and QEMU trees) reads each
    // `cpu` node's `reg` with `/cpus`'s #address-cells, 1 or 2.
    for node in devices::cpu_nodes(&fdt) {
        let mpidr = node.mpidr;
        if mpidr == me {
            continue;
        }
        let method = node.enable_method;
        if method != Some("psci") {
            log::warn!(
                "smp: {} has enable-method {:?}, not psci: not started",
                node.name,
                method
            );
            continue;
        }
        if next == MAX_CPUS {
            log::warn!("smp: more than {MAX_CPUS} CPUs; the rest stay off");
            break;
        }
        match start_one(next, mpidr, conduit, entry_pa, image_phys, timeout_ms) {
            Ok(()) => next += 1,
            Err(e @ StartError::Late { .. }) => {
                log::warn!(
                    "smp: {} (MPIDR {mpidr:#x}) {e}; slot cpu{next} is given up, not reused",
                    node.name
                );
                next += 1;
            }
            Err(e) => log::warn!("smp: {} (MPIDR {mpidr:#x}) did not start: {e}", node.name),
        }
    }
    log::info!("smp: {} CPUs online", online());
}

/// Why a secondary CPU is not online.
#[derive(Debug)]
enum StartError {
    /// No memory for its stacks.
    NoStack,
    /// The firmware refused CPU_ON: the CPU never runs, its slot is reused.
    Refused(psci::PsciError),
    /// CPU_ON succeeded but the CPU missed its deadline; AFFINITY_INFO's view of it then.
    Late {
        timeout_ms: u64,
        affinity: Result<psci::AffinityState, psci::PsciError>,
    },
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoStack => write!(f, "no memory for its stacks"),
            Self::Refused(e) => write!(f, "PSCI CPU_ON refused: {e}"),
            Self::Late {
                timeout_ms,
                affinity,
            } => {
                write!(
                    f,
                    "did not come online within {timeout_ms} ms (PSCI AFFINITY_INFO: "
                )?;
                match affinity {
                    Ok(state) => write!(f, "{})", state.as_str()),
                    Err(e) => write!(f, "{e})"),
                }
            }
        }
    }
}

/// Kernel and exception stacks per slot, allocated the first time the slot is used and kept:
/// a slot whose CPU the firmware refused is reused with the same stacks (so a tree listing
/// many CPUs that never start cannot eat memory), and an abandoned slot keeps them for
/// ever (its CPU may be running on them). Only the boot CPU touches it, while starting CPUs.
static SLOT_STACKS: Mutex<[Option<(stacks::KernelStack, stacks::KernelStack)>; MAX_CPUS]> =
    Mutex::new([None; MAX_CPUS]);

fn slot_stacks(index: usize) -> Result<(stacks::KernelStack, stacks::KernelStack), StartError> {
    let mut slots = SLOT_STACKS.lock();
    if let Some(pair) = slots[index] {
        return Ok(pair);
    }
    let stack = stacks::new(cpu_name(index, false), 64 << 10).map_err(|_| StartError::NoStack)?;
    let exc = stacks::new(cpu_name(index, true), 16 << 10).map_err(|_| StartError::NoStack)?;
    slots[index] = Some((stack, exc));
    Ok((stack, exc))
}

fn start_one(
    index: usize,
    mpidr: u64,
    conduit: psci::Conduit,
    entry_pa: u64,
    image_phys: u64,
    timeout_ms: u64,
) -> Result<(), StartError> {
    let (stack, exc) = slot_stacks(index)?;
    let percpu = &CPUS[index];
    debug_assert_eq!(percpu.claim.load(Ordering::Relaxed), Claim::Free as u8);
    percpu.mpidr.store(mpidr, Ordering::Relaxed);
    percpu.claim.store(Claim::Starting as u8, Ordering::Release);
    let block_pa = {
        let mut blocks = BOOT_BLOCKS.lock();
        let b = &mut blocks[index];
        *b = SecondaryBoot {
            ttbr1: paging::root().as_u64(),
            stack_top: stack.top,
            exception_stack_top: exc.top,
            percpu: crate::percpu::tpidr_for(index),
            entry: secondary_main as *const () as u64,
        };
        let va = b as *const SecondaryBoot as u64;
        // The secondary reads the block with its caches off.
        cpu::clean_dcache_to_poc(va, core::mem::size_of::<SecondaryBoot>() as u64);
        va - KIMAGE_VBASE + image_phys
    };
    if let Err(e) = psci::cpu_on(conduit, mpidr, entry_pa, block_pa) {
        percpu.claim.store(Claim::Free as u8, Ordering::Release);
        return Err(StartError::Refused(e));
    }
    let deadline = timer::ticks() + timer::frequency() / 1000 * timeout_ms;
    while !percpu.online.load(Ordering::Acquire) {
        if timer::ticks() >= deadline {
            // Whoever moves the claim first decides: if the CPU got there, it is online after
            // all; otherwise the slot is abandoned and the CPU will find that out.
            match percpu.claim.compare_exchange(
                Claim::Starting as u8,
                Claim::Abandoned as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Err(StartError::Late {
                        timeout_ms,
                        affinity: psci::affinity_info(conduit, mpidr),
                    })
                }
                Err(_) => {
                    // `Online`: it claimed the slot and sets `online` next.
                    while !percpu.online.load(Ordering::Acquire) {
                        core::hint::spin_loop();
                    }
                    break;
                }
            }
        }
        core::hint::spin_loop();
    }
    ONLINE.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

fn cpu_name(index: usize, exception: bool) -> &'static str {
    const KERNEL: [&str; MAX_CPUS] = [
        "cpu0", "cpu1", "cpu2", "cpu3", "cpu4", "cpu5", "cpu6", "cpu7", "cpu8", "cpu9", "cpu10",
        "cpu11", "cpu12", "cpu13", "cpu14", "cpu15",
    ];
    const EXCEPTION: [&str; MAX_CPUS] = [
        "exception cpu0",
        "exception cpu1",
        "exception cpu2",
        "exception cpu3",
        "exception cpu4",
        "exception cpu5",
        "exception cpu6",
        "exception cpu7",
        "exception cpu8",
        "exception cpu9",
        "exception cpu10",
        "exception cpu11",
        "exception cpu12",
        "exception cpu13",
        "exception cpu14",
        "exception cpu15",
    ];
    if exception {
        EXCEPTION[index]
    } else {
        KERNEL[index]
    }
}

/// The first Rust code on a secondary CPU (boot.S set its stacks, TPIDR_EL1 and vectors).
extern "C" fn secondary_main(index: usize) -> ! {
    let percpu = &CPUS[index];
    cpu::disable_lower_half();
    if percpu
        .claim
        .compare_exchange(
            Claim::Starting as u8,
            Claim::Online as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // Too late: the boot CPU gave up on this slot. Touch nothing of it and leave.
        leave_abandoned_slot();
    }
    timer::enable_event_stream();
    // This CPU's interrupt controller interface and tick, then IRQs unmasked.
    crate::tick::start_cpu_interrupts();
    percpu.set_state(State::Idle);
    percpu.online.store(true, Ordering::Release);
    crate::percpu::mark_online(percpu.index);
    loop {
        // An idle CPU answers a frame-stash hold at once: the holder's event wakes it here.
        crate::mm::frames::serve_holds();
        let job = percpu.mailbox.lock().take();
        match job {
            Some(job) => {
                percpu.set_state(State::Busy);
                let r = (job.func)(job.arg);
                percpu.result.store(r, Ordering::Relaxed);
                percpu.jobs.fetch_add(1, Ordering::Relaxed);
                percpu.set_state(State::Idle);
                percpu.done.store(true, Ordering::Release);
                cpu::send_event();
            }
            None => aarch64_cpu::asm::wfe(),
        }
    }
}

/// The end of a CPU that came up after its deadline: it turns itself off through PSCI
/// CPU_OFF (DEN0022 5.5), or, if the firmware refuses, waits for events forever with
/// interrupts masked. Its stacks stay allocated to its abandoned slot.
fn leave_abandoned_slot() -> ! {
    if let Some(conduit) = power::conduit() {
        let _ = psci::cpu_off(conduit);
    }
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Runs `func(arg)` on every online CPU at once (the caller's included) and returns the
/// results, indexed by CPU, for `online()` CPUs.
pub fn run_on_all(func: fn(usize) -> u64, arg: usize) -> [Option<u64>; MAX_CPUS] {
    let mut results = [None; MAX_CPUS];
    let others: heapless_list::List = CPUS[1..]
        .iter()
        .filter(|c| c.online.load(Ordering::Acquire))
        .map(|c| c.index)
        .collect();
    for &i in others.as_slice() {
        let c = &CPUS[i];
        c.done.store(false, Ordering::Release);
        *c.mailbox.lock() = Some(Job { func, arg });
    }
    cpu::send_event();
    let me = current();
    results[me.index] = Some(func(arg));
    me.jobs.fetch_add(1, Ordering::Relaxed);
    for &i in others.as_slice() {
        let c = &CPUS[i];
        while !c.done.load(Ordering::Acquire) {
            aarch64_cpu::asm::wfe();
        }
        results[i] = Some(c.result.load(Ordering::Relaxed));
    }
    results
}

/// Hands `func(arg)` to online CPU `index` (not the caller) without waiting for it; false when
/// that CPU is not online or not idle. Its result is never collected (the `panic
/// --console-stuck` command uses it for a job that never ends).
pub fn start_detached(index: usize, func: fn(usize) -> u64, arg: usize) -> bool {
    let Some(c) = CPUS.get(index) else {
        return false;
    };
    if index == current().index || !c.online.load(Ordering::Acquire) || c.state() != State::Idle {
        return false;
    }
    c.done.store(false, Ordering::Release);
    *c.mailbox.lock() = Some(Job { func, arg });
    cpu::send_event();
    true
}

/// A tiny fixed list of CPU indices (no allocation on the dispatch path).
mod heapless_list {
    use super::MAX_CPUS;

    /// Up to MAX_CPUS indices.
    pub struct List {
        items: [usize; MAX_CPUS],
        len: usize,
    }

    impl List {
        /// The indices.
        pub fn as_slice(&self) -> &[usize] {
            &self.items[..self.len]
        }
    }

    impl FromIterator<usize> for List {
        fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
            let mut l = List {
                items: [0; MAX_CPUS],
                len: 0,
            };
            for i in iter.into_iter().take(MAX_CPUS) {
                l.items[l.len] = i;
                l.len += 1;
            }
            l
        }
    }
}

levitate_hal::ktest!(
    fn every_listed_cpu_comes_online_and_runs_jobs() -> KtestResult {
        let fdt = devicetree::fdt();
        let listed = fdt
            .all_nodes()
            .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("cpu"))
            .count();
        levitate_hal::kassert_eq!(online(), listed.min(MAX_CPUS));
        let results = run_on_all(|arg| (current().index * 1000 + arg) as u64, 7);
        for (i, r) in results.iter().enumerate().take(online()) {
            levitate_hal::kassert_eq!(*r, Some((i * 1000 + 7) as u64));
        }
        Ok(())
    }
);
