//! The screen console: the framebuffer the boot loader left scanning out (a
//! `simple-framebuffer` node or the board entry, found by `levitate_mm::dtb::framebuffer`) or
//! QEMU's ramfb (`ramfb`), with levitate-screen's status band, memory strip and a text area
//! that mirrors everything the serial console prints. Input stays on the serial console.
//!
//! Drawing goes to a cacheable shadow (frames mapped in the upper half of the screen
//! window), with the text area in levitate-screen's ring mode so that a scroll moves no
//! pixels; the rows that changed are then copied to the scan-out buffer, in order: at once
//! for the band and strip, and for console text by the tick (at most every 40 ms, once the
//! tick runs; at once before that and on the panic path). Nothing ever reads the scan-out
//! buffer, which is uncached on real hardware and slow to read.
//!
//! The scan-out buffer is mapped once into its own window (`layout::SCREEN_BASE`):
//! - memory outside the linear map (a `no-map` reservation: the tree's `splash` node, or the
//!   reservation levitate-mm adds for a framebuffer node) as **Normal Non-cacheable**: writes
//!   reach memory without cache maintenance, so the display engine, which reads memory and
//!   does not snoop the CPU caches, sees them (ARM ARM B2.7.2, Normal memory cacheability;
//!   non-cacheable accesses are made to the point of coherency). No cacheable alias exists,
//!   because the linear map leaves no-map memory out (a mismatched-attribute alias, B2.8,
//!   would lose that guarantee).
//! - memory the linear map already maps cacheable (ramfb's frames from the allocator, or a
//!   framebuffer a tree reserved without `no-map`) as **Normal Write-Back**, the same
//!   attributes as that alias, with each copied range cleaned to the point of coherency
//!   (`dc cvac`, B2.7 / D7.5 cache maintenance) so that a non-snooping reader sees it. QEMU
//!   reads guest RAM directly; under KVM it reads through the host's cacheable mapping, where
//!   a non-cacheable guest alias would be the incoherent one.
//!
//! Before the screen comes up nothing is kept (the logger has no ring buffer): the text area
//! starts with the lines printed from then on.

pub mod ramfb;

use crate::mm::{frames, paging, physmem, pressure};
use crate::{devicetree, smp};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use levitate_hal::arch::aarch64::mmu::{Attributes, MemoryKind};
use levitate_hal::arch::aarch64::{cpu, timer};
use levitate_hal::layout;
use levitate_hal::sync::{IrqSafeMutex, IrqSafeMutexGuard};
use levitate_mm::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use levitate_mm::buddy::Owner;
use levitate_mm::dtb::devices;
use levitate_mm::dtb::framebuffer::{self, Discovery, Framebuffer, Origin, PixelFormat};
use levitate_mm::memmap::Source;
use levitate_mm::region::Region;
use levitate_screen::{Screen, Span, SpanKind, Status, Surface};
use spin::Once;

/// Where the screen came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A `simple-framebuffer` node (its name).
    SimpleFramebuffer(&'static str),
    /// The board entry for this root `compatible`.
    Board(&'static str),
    /// QEMU's ramfb, configured by the kernel (the fw_cfg key of `etc/ramfb`).
    Ramfb(u16),
}

/// What the `screen` command reports; fixed once the screen is up.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes per row.
    pub stride: u32,
    /// Pixel format.
    pub format: PixelFormat,
    /// First byte of the scan-out buffer.
    pub base: PhysAddr,
    /// Where it came from.
    pub kind: Kind,
    /// The memory type of its mapping.
    pub memory: MemoryKind,
    /// Copies are cleaned to the point of coherency (a cacheable mapping the reader does not
    /// snoop).
    pub clean: bool,
    /// Where it is mapped.
    pub va: VirtAddr,
    /// levitate-screen's layout for this size.
    pub layout: levitate_screen::Layout,
}

/// Why there is no screen, once boot decided (for the `screen` command).
static NO_SCREEN: Once<String> = Once::new();

/// The screen's facts, once it is up.
static INFO: Once<Info> = Once::new();

/// Whether the screen is up: the one relaxed load the console pays when there is none.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The tick runs on CPU 0 and copies console text to the scan-out buffer (set by its first
/// call): from then on console writes only draw into the shadow, and a burst of lines costs
/// one copy per tick instead of one per line.
static TICKING: AtomicBool = AtomicBool::new(false);
/// Console text was drawn into the shadow and not copied yet (the tick looks at this before
/// it try-locks the screen).
static PENDING: AtomicBool = AtomicBool::new(false);

/// How often the tick copies pending console text at most: 25 times a second is smooth to
/// the eye, and a scrolled 1080x2400 text area (10 MB) copied on every 100 Hz tick would eat
/// CPU 0's time in interrupt context.
const FLUSH_PERIOD_MS: u64 = 40;
/// Counter value at the last copy from the tick.
static LAST_FLUSH: AtomicU64 = AtomicU64::new(0);

/// Counter value at the last status redraw from the tick.
static LAST_STATUS: AtomicU64 = AtomicU64::new(0);
/// CPUs the tree lists, counted once at init (for the band).
static CPUS_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Bytes of RAM, summed once at init (for the band).
static MEM_TOTAL: AtomicU64 = AtomicU64::new(0);

/// The drawing state: levitate-screen over the shadow, and the scan-out mapping.
struct State {
    screen: Screen<'static>,
    /// The scan-out buffer's mapping (`layout::SCREEN_BASE` + the base's page offset).
    scanout: *mut u8,
    /// Bytes of the scan-out buffer drawn (`stride * height`).
    bytes: usize,
    stride: usize,
    /// Clean copied ranges to the point of coherency (a cacheable mapping).
    clean: bool,
    /// Pixel rows drawn in the shadow and not yet copied (from, to).
    dirty: Option<(usize, usize)>,
}

// SAFETY: `scanout` points at the screen window mapping, which lives for the kernel's
// lifetime and is reached only under `SCREEN`'s lock.
unsafe impl Send for State {}

/// The screen. Protects the shadow, the text area's cursor and the scan-out buffer.
/// Lock order: after `CONSOLE` (the console mirrors its output while holding its own lock,
/// so the text on the screen is in the same order as on the UART), and a leaf: nothing is
/// locked, allocated or printed while it is held (callers gather what they draw first).
/// IRQ-safe: an `IrqSafeMutex`, so IRQ+FIQ are masked while it is held and the tick hook on
/// the same CPU never finds it held by the code it interrupted; the hook only try-locks it
/// anyway, to skip a redraw rather than wait for another CPU. The panic path only try-locks
/// it (and skips the screen when it is busy), so a panic while drawing cannot deadlock.
static SCREEN: IrqSafeMutex<Option<State>> = IrqSafeMutex::new(None);

/// The screen's facts, or `None`.
pub fn info() -> Option<&'static Info> {
    INFO.get()
}

/// Why there is no screen, when boot found none.
pub fn why_none() -> Option<&'static str> {
    NO_SCREEN.get().map(String::as_str)
}

/// Logs that there is no screen and keeps the reason for `screen`. A warning when the
/// firmware described something unusable, info when there simply is nothing.
fn none(reason: String, warn: bool) {
    if warn {
        log::warn!("screen: no framebuffer: {reason}");
    } else {
        log::info!("screen: no framebuffer: {reason}");
    }
    NO_SCREEN.call_once(|| reason);
}

/// Boot, before the final page tables: when the tree describes no framebuffer, looks for
/// QEMU's ramfb (its fw_cfg registers must be `ioremap`ped now).
pub fn probe() {
    let fdt = devicetree::fdt();
    if !matches!(framebuffer::discover(&fdt), Discovery::None) {
        return;
    }
    if let Err(reason) = ramfb::probe() {
        none(reason, false);
    }
}

/// Boot, once frames and the final page tables exist: finds or configures the framebuffer,
/// maps it, starts the console mirror and draws the band and strip.
pub fn init() {
    if NO_SCREEN.get().is_some() {
        return;
    }
    let fdt = devicetree::fdt();
    let (fb, kind) = match framebuffer::discover(&fdt) {
        Discovery::Found(fb) => {
            let kind = match fb.origin {
                Origin::Tree(name) => Kind::SimpleFramebuffer(name),
                Origin::Board(c) => Kind::Board(c),
                Origin::Kernel => Kind::Ramfb(0),
            };
            let node = match kind {
                Kind::SimpleFramebuffer(n) | Kind::Board(n) => n,
                Kind::Ramfb(_) => "ramfb",
            };
            let ram: Vec<Region> = physmem::map().memory().to_vec();
            if let Err(problem) = fb.check_in(&ram) {
                return none(format!("framebuffer '{node}': {problem}"), true);
            }
            if let Some(why) = clash(fb.used()) {
                return none(format!("framebuffer '{node}': {why}; not drawn on"), true);
            }
            (fb, kind)
        }
        Discovery::Rejected(r) => return none(format!("{r}"), true),
        Discovery::Disabled(name) => {
            return none(
                format!("framebuffer '{name}' is disabled (status): no screen console"),
                false,
            )
        }
        Discovery::None => match ramfb::configure() {
            Ok(Some(r)) => {
                let region = Region::new(r.base, r.frames * PAGE_SIZE);
                let fb = Framebuffer::new(
                    region,
                    r.width,
                    r.height,
                    r.stride,
                    ramfb::FORMAT,
                    Origin::Kernel,
                );
                match fb {
                    Ok(fb) => (fb, Kind::Ramfb(r.select)),
                    Err(p) => return none(format!("ramfb: {p}"), true),
                }
            }
            Ok(None) => return none("no simple-framebuffer node and no ramfb".into(), false),
            Err(reason) => return none(reason, true),
        },
    };
    if let Err(reason) = bring_up(&fb, kind) {
        none(reason, true);
    }
}

/// What a firmware-described buffer must not overlap, in words: memory the kernel itself
/// uses (its image, the device tree, the initrd, early allocations, the mem_map) or hands
/// out. Drawing there would overwrite the kernel; a reserved-memory node (the `splash`
/// region) or the framebuffer reservation itself is where a buffer belongs.
fn clash(used: Region) -> Option<String> {
    let map = physmem::map();
    if let Some(r) = map.reserved().iter().find(|r| {
        matches!(
            r.source,
            Source::Kernel | Source::Dtb | Source::Initrd | Source::Early | Source::MemMap
        ) && r.region.overlaps(&used)
    }) {
        return Some(format!(
            "buffer {} overlaps the {} at {}",
            range(used),
            r.source,
            range(r.region)
        ));
    }
    map.usable().iter().find(|u| u.overlaps(&used)).map(|u| {
        format!(
            "buffer {} overlaps memory the allocator hands out ({})",
            levitate_mm::report::Span(used),
            levitate_mm::report::Span(*u)
        )
    })
}

/// `0xSTART-0xLAST`, for messages.
fn range(r: Region) -> String {
    format!("{:#x}-{:#x}", r.base.as_u64(), r.end().saturating_sub(1))
}

/// Whether `region` lies wholly in memory the linear map covers (cacheable).
fn in_linear_map(region: Region) -> bool {
    let map = physmem::map();
    physmem::linear_ranges(&map).is_ok_and(|set| {
        set.iter()
            .any(|r| r.base <= region.base && region.end() <= r.end())
    })
}

/// Where the shadow is mapped: the upper half of the screen window (the framebuffer is
/// mapped from its start, and `bring_up` refuses one larger than half the window).
const SHADOW_BASE: u64 = layout::SCREEN_BASE + layout::SCREEN_SIZE / 2;

/// The shadow: zeroed frames (owner kernel) mapped Normal write-back at `SHADOW_BASE`,
/// contiguous in virtual addresses only, taken in blocks of at most 2 MiB so that a large
/// screen needs no large contiguous run. Not from the kernel heap, which stays free of one
/// multi-megabyte object that would never be freed. On failure everything is given back.
fn map_shadow(bytes: u64) -> Result<&'static mut [u8], String> {
    const BLOCK_FRAMES: u64 = 512;
    let frames_needed = bytes.div_ceil(PAGE_SIZE);
    let mut done = 0;
    while done < frames_needed {
        let n = (frames_needed - done).min(BLOCK_FRAMES);
        let va = VirtAddr::new(SHADOW_BASE + done * PAGE_SIZE);
        let mapped = frames::alloc_frames(n, Owner::Kernel, true)
            .map_err(|e| format!("no frames for the shadow buffer: {e}"))
            .and_then(|run| {
                paging::map(va, run.addr, n * PAGE_SIZE, Attributes::KERNEL_DATA).map_err(|e| {
                    let _ = frames::free_frames(run.addr, n);
                    format!("cannot map the shadow buffer: {e}")
                })
            });
        if let Err(e) = mapped {
            unmap_shadow(done);
            return Err(e);
        }
        done += n;
    }
    // SAFETY: `bytes` bytes from SHADOW_BASE were just mapped read-write to zeroed frames
    // allocated for the shadow alone; they stay mapped for the kernel's lifetime and this is
    // the only reference made to them.
    Ok(unsafe { core::slice::from_raw_parts_mut(SHADOW_BASE as *mut u8, bytes as usize) })
}

/// Gives back the first `frames_mapped` frames of a shadow that could not be finished.
fn unmap_shadow(frames_mapped: u64) {
    let mut at = 0;
    while at < frames_mapped {
        let n = (frames_mapped - at).min(512);
        let va = VirtAddr::new(SHADOW_BASE + at * PAGE_SIZE);
        if let Some(t) = paging::translate(va) {
            let _ = paging::unmap(va, n * PAGE_SIZE);
            let _ = frames::free_frames(t.pa, n);
        }
        at += n;
    }
}

/// Maps the buffer, allocates the shadow and installs the state.
fn bring_up(fb: &Framebuffer<'_>, kind: Kind) -> Result<(), String> {
    let used = fb.used();
    let pages = used.page_outward();
    if pages.size > layout::SCREEN_SIZE / 2 {
        return Err(format!(
            "framebuffer of {:#x} bytes is larger than half the {:#x}-byte screen window",
            pages.size,
            layout::SCREEN_SIZE
        ));
    }
    let cacheable = in_linear_map(pages);
    let memory = if cacheable {
        MemoryKind::Normal
    } else {
        MemoryKind::NormalUncached
    };
    let attrs = Attributes {
        kind: memory,
        writable: true,
        executable: false,
    };
    // ramfb's reader is QEMU itself, which reads guest RAM coherently with the vCPU's
    // cacheable stores (TCG models no caches; under KVM the host's mapping is cacheable and
    // hardware-coherent with the guest's), so its copies need no clean; a display engine
    // reading a framebuffer in linear-mapped RAM does not snoop the CPU caches.
    let clean = cacheable && !matches!(kind, Kind::Ramfb(_));
    let bytes = used.size as usize;
    let shadow = map_shadow(used.size)?;
    let window = VirtAddr::new(layout::SCREEN_BASE);
    paging::map(window, pages.base, pages.size, attrs)
        .map_err(|e| format!("cannot map the framebuffer at {}: {e}", used.base))?;
    let offset = (used.base.as_u64() - pages.base.as_u64()) as usize;
    // Framebuffer::new checked the geometry against `used`, which the shadow's size is, so
    // this cannot fail; a broken invariant would leave the window mapped and unused.
    let surface = Surface::new(
        shadow,
        fb.width as usize,
        fb.height as usize,
        fb.stride as usize,
        fb.format,
    )
    .map_err(|e| format!("framebuffer geometry: {e:?}"))?;
    let mut screen = Screen::new(surface);
    screen.set_ring(true);
    let info = Info {
        width: fb.width,
        height: fb.height,
        stride: fb.stride,
        format: fb.format,
        base: used.base,
        kind,
        memory,
        clean,
        va: VirtAddr::new(layout::SCREEN_BASE + offset as u64),
        layout: levitate_screen::layout(fb.width as usize, fb.height as usize),
    };
    let state = State {
        screen,
        scanout: info.va.as_u64() as *mut u8,
        bytes,
        stride: fb.stride as usize,
        clean,
        dirty: None,
    };
    // The whole buffer once: the boot loader's splash (or ramfb's zeroes) is replaced.
    state.flush(0, fb.height as usize);
    let fdt = devicetree::fdt();
    CPUS_TOTAL.store(devices::cpu_nodes(&fdt).count() as u64, Ordering::Relaxed);
    let ram: u64 = physmem::map().memory().iter().map(|r| r.size).sum();
    MEM_TOTAL.store(ram, Ordering::Relaxed);
    INFO.call_once(|| info);
    *SCREEN.lock() = Some(state);
    ACTIVE.store(true, Ordering::Release);
    crate::console::set_mirror(mirror_write);
    log::info!(
        "screen: {}x{} {} stride {} at {:#x} ({})",
        fb.width,
        fb.height,
        fb.format,
        fb.stride,
        used.base.as_u64(),
        kind_name(kind)
    );
    let l = info.layout;
    log::info!(
        "screen: {}x{} text in {}x{} glyphs from pixel row {}; mapped {} at {:#x}{}",
        l.grid.0,
        l.grid.1,
        l.glyph_width,
        l.font.val(),
        l.text_top,
        memory,
        info.va.as_u64(),
        if clean {
            ", cleaned to PoC after each update"
        } else {
            ""
        }
    );
    crate::println!("{}", crate::version_line());
    refresh_status();
    redraw_memory();
    if crate::tick::register_tick_hook(tick).is_err() {
        log::warn!("screen: no tick hook slot left: the status band is drawn only by `screen`");
    }
    Ok(())
}

/// The source as the boot log and `screen` name it.
pub fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::SimpleFramebuffer(node) => format!("simple-framebuffer {node}"),
        Kind::Board(c) => format!("board {c}"),
        Kind::Ramfb(_) => "ramfb".into(),
    }
}

impl State {
    /// Copies pixel rows `[from, to)` of the shadow to the same rows of the scan-out buffer
    /// (the band, the strip, the whole screen before any text scrolled).
    fn flush(&self, from: usize, to: usize) {
        self.copy_rows(from, from, to - from.min(to));
    }

    /// Copies `count` pixel rows from shadow row `src` to scan-out row `dst`, clipped.
    fn copy_rows(&self, src: usize, dst: usize, count: usize) {
        let rows = self.bytes / self.stride;
        let count = count
            .min(rows.saturating_sub(src))
            .min(rows.saturating_sub(dst));
        if count == 0 {
            return;
        }
        let len = count * self.stride;
        let (from, to) = (src * self.stride, dst * self.stride);
        let shadow = &self.screen.surface().bytes()[from..from + len];
        // SAFETY: the scan-out mapping covers `bytes` bytes from `scanout` (mapped in
        // `bring_up`, never unmapped), and `to + len <= bytes` (clipped above); only this
        // lock's holder writes it, and the shadow is separate memory.
        unsafe { core::ptr::copy_nonoverlapping(shadow.as_ptr(), self.scanout.add(to), len) };
        if self.clean {
            cpu::clean_dcache_to_poc(self.scanout as u64 + to as u64, len as u64);
        } else {
            // Non-cacheable writes may sit in a write buffer: make them visible to other
            // observers (the display engine) now (ARM ARM B2.3).
            // SAFETY: a barrier only.
            unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
        }
    }

    /// Writes console bytes into the shadow and notes the text rows they changed. The text
    /// area is in ring mode: a scroll clears one stored row and moves nothing, so a line
    /// costs its glyphs, whatever the screen's size; the copy puts the rows in order.
    fn write(&mut self, bytes: &[u8]) {
        let (before, scrolls) = (self.screen.text().cursor().1, self.screen.text().scrolls());
        self.screen.write_bytes(bytes);
        let text = self.screen.text();
        let (from, to) = if text.scrolls() != scrolls {
            (0, text.grid().1)
        } else {
            (before, text.cursor().1 + 1)
        };
        self.dirty = Some(match self.dirty {
            Some((f, t)) => (f.min(from), t.max(to)),
            None => (from, to),
        });
    }

    /// Copies the text rows `write` changed since the last copy, each from where the ring
    /// stores it to where it shows.
    fn flush_dirty(&mut self) {
        let Some((from, to)) = self.dirty.take() else {
            return;
        };
        let text = self.screen.text();
        let (top, line, rows) = (text.top, text.size().val(), text.grid().1);
        for r in from..to.min(rows) {
            self.copy_rows(top + text.stored_row(r) * line, top + r * line, line);
        }
    }
}

/// The CPU holding `SCREEN` (MPIDR with a marker bit), or 0: lets the panic path see that the
/// lock is its own, held further up this CPU's stack (a panic while drawing).
static OWNER: AtomicU64 = AtomicU64::new(0);

fn cpu_tag() -> u64 {
    cpu::mpidr() | 1 << 63
}

/// `SCREEN` held, with `OWNER` naming this CPU while the guard lives.
struct Held(IrqSafeMutexGuard<'static, Option<State>>);

impl Held {
    fn new(guard: IrqSafeMutexGuard<'static, Option<State>>) -> Self {
        OWNER.store(cpu_tag(), Ordering::Relaxed);
        Self(guard)
    }

    fn lock() -> Self {
        Self::new(SCREEN.lock())
    }

    fn try_lock() -> Option<Self> {
        SCREEN.try_lock().map(Self::new)
    }

    fn state(&mut self) -> Option<&mut State> {
        self.0.as_mut()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        OWNER.store(0, Ordering::Relaxed);
    }
}

/// The screen lock, held while the console writes, so that what the console prints shows on
/// the screen too. `None` (at the cost of one relaxed load) when there is no screen.
pub struct Mirror {
    held: Held,
    /// Copy at once when dropped (the panic path: no tick may come again).
    now: bool,
}

impl Mirror {
    /// Draws console text (copied to the scan-out buffer when the mirror is dropped, once
    /// per console write).
    pub fn write(&mut self, bytes: &[u8]) {
        if let Some(state) = self.held.state() {
            state.write(bytes);
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let now = self.now || !TICKING.load(Ordering::Relaxed);
        if let Some(state) = self.held.state() {
            if now {
                state.flush_dirty();
            } else if state.dirty.is_some() {
                PENDING.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Copies console text drawn but not yet copied to the scan-out buffer now (the tick does
/// it otherwise within a tick).
#[cfg_attr(not(feature = "ktest"), allow(dead_code))]
pub fn sync() {
    if let Some(state) = Held::lock().state() {
        state.flush_dirty();
    }
}

/// The mirror for one console write (see `Mirror`). On the panic path (`panic`) it never
/// waits: a lock held by this CPU further up the stack (the panic came from drawing code or
/// from a `Display` impl the console was formatting) is taken over, since the interrupted
/// drawing never resumes and the worst a half-done draw leaves is wrong pixels, while the
/// report on the screen is what a phone without a serial cable shows; a lock another CPU
/// holds means no screen for this report (the serial console still gets it).
#[inline]
pub fn mirror(panic: bool) -> Option<Mirror> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    if !panic {
        return Some(Mirror {
            held: Held::lock(),
            now: false,
        });
    }
    if let Some(held) = Held::try_lock() {
        return Some(Mirror { held, now: true });
    }
    if OWNER.load(Ordering::Relaxed) != cpu_tag() {
        return None;
    }
    // SAFETY: the holder is this CPU's own interrupted draw further up the stack, which
    // never runs again (panics do not return); the state is plain integers and pixels, valid
    // whatever point the draw stopped at.
    unsafe { SCREEN.force_unlock() };
    Held::try_lock().map(|held| Mirror { held, now: true })
}

/// The console's mirror (registered with `console::set_mirror`): draws one console write's
/// text, called with the console lock held (lock order: CONSOLE, then SCREEN).
fn mirror_write(bytes: &[u8], panic: bool) {
    if let Some(mut mirror) = mirror(panic) {
        mirror.write(bytes);
    }
}

/// How often the tick redraws the status band.
const STATUS_PERIOD_MS: u64 = 500;

/// The tick hook, on CPU 0 only: copies pending console text, and at most every
/// `STATUS_PERIOD_MS` redraws the band, each unless the screen is busy (try-lock: skip, the
/// next tick retries).
fn tick() {
    if !ACTIVE.load(Ordering::Relaxed) || smp::current().index != 0 {
        return;
    }
    TICKING.store(true, Ordering::Relaxed);
    let now = timer::ticks();
    let due = now.wrapping_sub(LAST_FLUSH.load(Ordering::Relaxed))
        >= timer::frequency() / 1000 * FLUSH_PERIOD_MS;
    if due && PENDING.load(Ordering::Relaxed) {
        LAST_FLUSH.store(now, Ordering::Relaxed);
        if let Some(state) = Held::try_lock().as_mut().and_then(Held::state) {
            PENDING.store(false, Ordering::Relaxed);
            state.flush_dirty();
        }
    }
    let period = timer::frequency() / 1000 * STATUS_PERIOD_MS;
    if now.wrapping_sub(LAST_STATUS.load(Ordering::Relaxed)) < period {
        return;
    }
    LAST_STATUS.store(now, Ordering::Relaxed);
    draw_status(false);
}

/// Redraws the status band now, waiting for the screen (the `screen` command).
pub fn refresh_status() {
    draw_status(true);
}

fn draw_status(wait: bool) {
    // Gathered before the screen lock (a leaf): the buddy's counters under its own lock.
    let (free, _managed) = frames::with(|b| (b.free_frames(), b.managed_frames()));
    let status = Status {
        uptime_ms: timer::uptime_ns() / 1_000_000,
        mem_free: free * PAGE_SIZE,
        mem_total: MEM_TOTAL.load(Ordering::Relaxed),
        pressure: pressure::level().as_str(),
        cpus_online: smp::online() as u32,
        cpus_total: CPUS_TOTAL.load(Ordering::Relaxed) as u32,
    };
    let held = if wait {
        Some(Held::lock())
    } else {
        Held::try_lock()
    };
    let Some(mut held) = held else { return };
    let Some(state) = held.state() else { return };
    state.screen.draw_status(&status);
    if let Some((top, h)) = INFO.get().and_then(|i| i.layout.band) {
        state.flush(top, top + h);
    }
}

/// The RAM banks as (base, size) pairs, as the strip draws them.
fn ram_banks(map: &levitate_mm::memmap::MemoryMap<'_>) -> Vec<(u64, u64)> {
    map.memory()
        .iter()
        .map(|r| (r.base.as_u64(), r.size))
        .collect()
}

/// Redraws the memory strip: RAM, reservations, and the frames' owners sampled once per
/// pixel column (one short buddy lock per column, never one across the mem_map).
pub fn redraw_memory() {
    let Some(info) = INFO.get() else { return };
    let columns = info.width as usize;
    let (ram, usable, reserved) = {
        let map = physmem::map();
        let ram = ram_banks(&map);
        let usable: Vec<Region> = map.usable().to_vec();
        let reserved: Vec<Span> = map
            .reserved()
            .iter()
            .map(|r| Span {
                base: r.region.base.as_u64(),
                size: r.region.size,
                kind: match r.source {
                    Source::Kernel => SpanKind::Kernel,
                    Source::MemMap => SpanKind::MemMap,
                    _ if r.no_map => SpanKind::NoMap,
                    _ => SpanKind::Reserved,
                },
            })
            .collect();
        (ram, usable, reserved)
    };
    let mut spans = sample_owners(&ram, &usable, columns);
    spans.extend(reserved);
    let mut held = Held::lock();
    let Some(state) = held.state() else { return };
    state.screen.draw_memory(&ram, &spans);
    if let Some((top, h)) = info.layout.strip {
        state.flush(top, top + h);
    }
}

/// One span per pixel column of usable memory: free, or allocated to the owner of the frame
/// at the column's start; neighbours of the same kind merged.
fn sample_owners(ram: &[(u64, u64)], usable: &[Region], columns: usize) -> Vec<Span> {
    let total: u128 = ram.iter().map(|&(_, s)| u128::from(s)).sum();
    let mut spans: Vec<Span> = Vec::new();
    if total == 0 || columns == 0 {
        return spans;
    }
    // The physical address at byte `off` of the concatenated RAM ranges.
    let pa_at = |mut off: u128| -> Option<(u64, u64)> {
        for &(base, size) in ram {
            if off < u128::from(size) {
                return Some((base + off as u64, base + size));
            }
            off -= u128::from(size);
        }
        None
    };
    for col in 0..columns {
        let from = total * col as u128 / columns as u128;
        let to = total * (col as u128 + 1) / columns as u128;
        let Some((pa, range_end)) = pa_at(from) else {
            break;
        };
        let size = ((to - from) as u64).min(range_end - pa).max(1);
        let frame = PhysAddr::new(pa & !(PAGE_SIZE - 1));
        if !usable.iter().any(|u| u.contains(frame.as_u64())) {
            continue;
        }
        let kind = match frames::with(|b| b.owner_of(frame)) {
            None => SpanKind::Free,
            Some((owner, _, _)) => SpanKind::Allocated(owner as u8),
        };
        match spans.last_mut() {
            Some(last) if last.kind == kind && last.base + last.size == pa => last.size += size,
            _ => spans.push(Span {
                base: pa,
                size,
                kind,
            }),
        }
    }
    spans
}

#[cfg(feature = "ktest")]
mod tests;
