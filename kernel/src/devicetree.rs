//! The device tree the bootloader passed: mapping it, checking it before any parser trusts it,
//! and finding the platform's console and PSCI conduit in it. Nothing here assumes QEMU.

use core::fmt;
use fdt::Fdt;
use levitate_hal::arch::aarch64::mmu::{early, MapError};
use levitate_hal::arch::aarch64::psci::Conduit;
use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::dtb::check::{self, FdtError};
use levitate_mm::dtb::devices::{self, ConsoleSource};
use levitate_mm::dtb::pack;
use levitate_mm::dtb::tree::{self, Located};
use spin::Once;

/// The bound on the header's `totalsize` (levitate-mm says why it is not booting.rst's 2 MiB).
const MAX_DTB_SIZE: usize = check::MAX_TOTAL_SIZE;

/// Why the device tree cannot be used.
#[derive(Debug)]
pub enum DtbError {
    /// x0 was 0: the bootloader passed no device tree.
    Missing,
    /// The address is not 8-byte aligned.
    Misaligned(PhysAddr),
    /// Mapping it failed.
    Map(MapError),
    /// The header announces more than booting.rst allows.
    TooLarge(usize),
    /// The blob is malformed.
    Corrupt(FdtError),
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "no device tree: the bootloader passed x0 = 0"),
            Self::Misaligned(pa) => write!(f, "device tree at {pa} is not 8-byte aligned"),
            Self::Map(e) => write!(f, "cannot map the device tree: {e}"),
            Self::TooLarge(n) => {
                write!(
                    f,
                    "device tree claims {n} bytes, more than the 2 MiB boot protocol limit"
                )
            }
            Self::Corrupt(e) => write!(f, "corrupt device tree: {e}"),
        }
    }
}

/// The checked device tree.
pub struct DeviceTree {
    /// The packed copy the kernel parses (heap, NOPs removed, checked).
    pub blob: &'static [u8],
    /// Physical address of the bootloader's blob.
    pub phys: PhysAddr,
    /// Size of the bootloader's blob (its header's `totalsize`).
    pub original_size: usize,
}

static DT: Once<DeviceTree> = Once::new();

/// Maps the bootloader's blob at `pa`, checks its structure, and keeps a packed copy (NOP
/// tokens removed: QEMU and libfdt-based bootloaders NOP out nodes they edit, and the fdt
/// crate cannot parse them) for `get`.
pub fn init(pa: PhysAddr) -> Result<&'static DeviceTree, DtbError> {
    if pa.as_u64() == 0 {
        return Err(DtbError::Missing);
    }
    if !pa.is_aligned(8) {
        return Err(DtbError::Misaligned(pa));
    }
    // Map the page holding the header first to learn the size, then the whole blob.
    let first_len = PAGE_SIZE - pa.page_offset();
    let va = early::map_boot_window(pa, first_len).map_err(DtbError::Map)?;
    // SAFETY: `va` maps `first_len` readable bytes of the blob (just mapped, read-only, never
    // unmapped); the header needs at most 40 of them.
    let head = unsafe { core::slice::from_raw_parts(va.as_u64() as *const u8, first_len as usize) };
    let size = check::total_size(head).map_err(DtbError::Corrupt)?;
    if size > MAX_DTB_SIZE {
        return Err(DtbError::TooLarge(size));
    }
    let va = early::map_boot_window(pa, size as u64).map_err(DtbError::Map)?;
    // SAFETY: `[va, va + size)` is now mapped read-only for the kernel's lifetime and nothing
    // writes to the blob.
    let original = unsafe { core::slice::from_raw_parts(va.as_u64() as *const u8, size) };
    let packed_len = pack::packed_size(original).map_err(DtbError::Corrupt)?;
    let mut copy = alloc::vec![0u8; packed_len];
    pack::pack_into(original, &mut copy).map_err(DtbError::Corrupt)?;
    let blob: &'static [u8] = alloc::boxed::Box::leak(copy.into_boxed_slice());
    Ok(DT.call_once(|| DeviceTree {
        blob,
        phys: pa,
        original_size: size,
    }))
}

/// The device tree. Panics if called before `init` succeeded (a boot-order bug).
pub fn get() -> &'static DeviceTree {
    DT.get()
        .expect("boot order invariant: devicetree::init must succeed before devicetree::get")
}

/// A parser over the checked blob.
pub fn fdt() -> Fdt<'static> {
    Fdt::new(get().blob).expect("device tree invariant: a checked blob parses")
}

/// Why no console could be set up.
#[derive(Debug)]
pub enum ConsoleError {
    /// Neither `stdout-path` nor any node names a UART a console driver accepts.
    NoConsole {
        /// What `/chosen/stdout-path` named, if anything.
        stdout_path: Option<&'static str>,
    },
    /// The UART's registers could not be mapped.
    Map(MapError),
}

/// Every `compatible` the console drivers accept, for messages: "arm,pl011, google,...".
struct Supported;

impl fmt::Display for Supported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = crate::console::DRIVER_COMPATIBLES
            .iter()
            .flat_map(|l| l.iter());
        for (i, c) in all.enumerate() {
            write!(f, "{}{c}", if i == 0 { "" } else { ", " })?;
        }
        Ok(())
    }
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoConsole {
                stdout_path: Some(p),
            } => write!(
                f,
                "no console: stdout-path {p} is not a supported UART and no enabled node is \
                 compatible with a console driver ({Supported})"
            ),
            Self::NoConsole { stdout_path: None } => write!(
                f,
                "no console: no stdout-path and no enabled node is compatible with a console \
                 driver ({Supported})"
            ),
            Self::Map(e) => write!(f, "cannot map the console: {e}"),
        }
    }
}

/// Where the console was found, for the boot log and the `console` command.
pub struct ConsoleInfo {
    /// Physical address of the registers.
    pub phys: PhysAddr,
    /// Whether it came from stdout-path (else from the first node a driver accepts).
    pub from_stdout_path: bool,
    /// The `compatible` string the driver matched.
    pub compatible: &'static str,
    /// The node's path name (its name, e.g. `serial@10a00000`).
    pub node: &'static str,
}

static CONSOLE_INFO: Once<ConsoleInfo> = Once::new();

/// Where the console is, once `find_console` succeeded.
pub fn console_info() -> Option<&'static ConsoleInfo> {
    CONSOLE_INFO.get()
}

/// Finds the console (`levitate_mm::dtb::devices::select_console` over the console drivers'
/// `compatible` lists: the node `/chosen/stdout-path` names if a driver accepts it, else the
/// first enabled node one does), maps its registers and brings its driver up. Runs before the
/// memory map exists: it needs only the early mapper and the boot heap.
pub fn find_console() -> Result<(crate::console::Device, &'static ConsoleInfo), ConsoleError> {
    let fdt = fdt();
    let (found, source) = devices::select_console(&fdt, &crate::console::DRIVER_COMPATIBLES)
        .map_err(|e| ConsoleError::NoConsole {
            stdout_path: e.stdout_path,
        })?;
    let driver = &crate::console::DRIVERS[found.driver];
    let va = early::ioremap(found.phys, driver.mmio_size).map_err(ConsoleError::Map)?;
    let fifo_size = devices::u32_property(&found.node, "samsung,uart-fifosize");
    // SAFETY: `va` maps the device's `mmio_size` bytes of registers as Device memory, just
    // mapped by ioremap for this driver alone and never unmapped.
    let device = unsafe { (driver.probe)(va.as_usize(), fifo_size) };
    let info = CONSOLE_INFO.call_once(|| ConsoleInfo {
        phys: found.phys,
        from_stdout_path: source == ConsoleSource::StdoutPath,
        compatible: found.compatible,
        node: found.node.node.name,
    });
    Ok((device, info))
}

/// The PSCI conduit from `/psci`'s `method`, if the tree describes PSCI.
pub fn psci_conduit() -> Option<Conduit> {
    let fdt = fdt();
    let node = tree::find_map(&fdt, |n| {
        tree::is_compatible(&n.node, &["arm,psci", "arm,psci-0.2", "arm,psci-1.0"])
            .then_some(n.node)
    })?;
    Conduit::from_method(node.property("method")?.as_str()?)
}

levitate_hal::ktest!(
    fn live_tree_has_memory_and_console() -> KtestResult {
        let fdt = fdt();
        let has_memory = fdt
            .all_nodes()
            .any(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"));
        levitate_hal::kassert!(has_memory, "no /memory node in the live tree");
        levitate_hal::kassert!(tree::stdout_path(&fdt).is_some());
        levitate_hal::kassert!(psci_conduit().is_some(), "no PSCI conduit");
        Ok(())
    }
);

levitate_hal::ktest!(
    fn check_rejects_corrupted_copies_of_live_tree() -> KtestResult {
        extern crate alloc;
        let blob = get().blob;
        levitate_hal::kassert!(check::check(blob).is_ok());
        // Truncations and a bad magic must be refused by the same check boot uses.
        for cut in [0, 4, 39, 40, blob.len() / 2, blob.len() - 1] {
            levitate_hal::kassert!(
                check::check(&blob[..cut]).is_err(),
                "truncated blob accepted"
            );
        }
        let mut copy = alloc::vec::Vec::from(blob);
        copy[0] ^= 0xff;
        levitate_hal::kassert!(check::check(&copy).is_err(), "bad magic accepted");
        Ok(())
    }
);

/// Where the interrupt controller was found, for the boot log.
pub struct GicInfo {
    /// The node's path.
    pub path: alloc::string::String,
    /// Physical address of the distributor.
    pub dist: PhysAddr,
    /// The controller's phandle, which `interrupts` properties resolve to.
    pub phandle: Option<u32>,
}

/// Why the interrupt controller or an interrupt of the tree is unusable.
#[derive(Debug)]
pub enum IrqTreeError {
    /// A GIC node lacks a `reg` entry the binding requires (or it does not translate).
    MissingReg {
        /// The node's path.
        node: alloc::string::String,
        /// Which block.
        what: &'static str,
    },
    /// Mapping a register block failed.
    Map(MapError),
    /// A node's `interrupts` cannot be used.
    Interrupts {
        /// The node's path.
        node: alloc::string::String,
        /// Why.
        why: levitate_mm::dtb::interrupts::InterruptError,
    },
}

impl fmt::Display for IrqTreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingReg { node, what } => {
                write!(f, "{node}: no usable `reg` entry for the {what}")
            }
            Self::Map(e) => write!(f, "cannot map the interrupt controller: {e}"),
            Self::Interrupts { node, why } => write!(f, "{node}: bad `interrupts`: {why}"),
        }
    }
}

/// A located node's full path, for messages.
pub fn path_of(n: &Located<'_, '_>) -> alloc::string::String {
    let mut path = alloc::string::String::new();
    for a in n.ancestors().skip(1) {
        path.push('/');
        path.push_str(a.name);
    }
    path.push('/');
    if n.parent().is_some() {
        path.push_str(n.node.name);
    }
    path
}

/// The `reg` entries of a node, translated to CPU physical addresses.
fn translated_regs<'n>(
    n: &'n Located<'_, '_>,
) -> impl Iterator<Item = Option<(PhysAddr, u64)>> + 'n {
    n.raw_reg().map(|(a, s)| n.translate(a).map(|pa| (pa, s)))
}

/// A u32 or u64 (one or two cells) property.
fn cells_u64(node: &fdt::node::FdtNode<'_, '_>, name: &str) -> Option<u64> {
    let v = node.property(name)?.value;
    match v.len() {
        4 => Some(u64::from(u32::from_be_bytes(v.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(v.try_into().ok()?)),
        _ => None,
    }
}

/// Finds the first enabled GICv2 or GICv3 node (under the root or any bus), translates its
/// `reg` through `ranges` and maps the blocks the driver uses through `early::ioremap` (the
/// final page tables map these windows again). `Ok(None)`: the tree has no GIC.
///
/// GICv3 binding (arm,gic-v3.yaml): `reg` = distributor, then `#redistributor-regions`
/// (default 1) redistributor regions, then optional CPU/hypervisor/virtual interfaces;
/// `redistributor-stride` optional. GICv2 (arm,gic.yaml): distributor, CPU interface, ...
pub fn find_gic() -> Result<Option<(levitate_hal::drivers::gic::Gic, GicInfo)>, IrqTreeError> {
    use levitate_hal::drivers::gic::{self, v2, v3, Gic, RedistRegion, MAX_REDIST_REGIONS};
    use levitate_mm::dtb::interrupts;
    let fdt = fdt();
    let found = tree::find_map(&fdt, |n| {
        if !n.is_enabled() {
            return None;
        }
        if tree::is_compatible(&n.node, gic::COMPATIBLE_V3) {
            Some((3u8, *n))
        } else if tree::is_compatible(&n.node, gic::COMPATIBLE_V2) {
            Some((2u8, *n))
        } else {
            None
        }
    });
    let Some((version, node)) = found else {
        return Ok(None);
    };
    let path = path_of(&node);
    let missing = |what| IrqTreeError::MissingReg {
        node: path.clone(),
        what,
    };
    let mut regs = translated_regs(&node);
    let (dist_pa, _) = regs
        .next()
        .flatten()
        .ok_or_else(|| missing("distributor"))?;
    let phandle = interrupts::phandle(&node.node);
    let map = |pa, size| early::ioremap(pa, size).map_err(IrqTreeError::Map);
    let gic = if version == 2 {
        let (cpu_pa, _) = regs
            .next()
            .flatten()
            .ok_or_else(|| missing("CPU interface"))?;
        let dist = map(dist_pa, v2::DIST_SIZE)?;
        let cpu = map(cpu_pa, v2::CPU_SIZE)?;
        // SAFETY: both blocks were just mapped as Device memory by ioremap for this driver
        // alone and are never unmapped.
        unsafe { Gic::new_v2(dist.as_usize(), cpu.as_usize()) }
    } else {
        let count = cells_u64(&node.node, "#redistributor-regions").unwrap_or(1) as usize;
        let stride = cells_u64(&node.node, "redistributor-stride").unwrap_or(0) as usize;
        // Map at most what 16 CPUs' GICv4 redistributors (4 frames each) need per region:
        // QEMU describes room for 123 CPUs in 15 MiB.
        let cap = (gic::MAX_CPUS * 4 * v3::FRAME_SIZE) as u64;
        let mut regions = [RedistRegion { va: 0, len: 0 }; MAX_REDIST_REGIONS];
        let mut used = 0;
        for _ in 0..count.clamp(1, MAX_REDIST_REGIONS) {
            let (pa, size) = regs
                .next()
                .flatten()
                .ok_or_else(|| missing("redistributors"))?;
            let len = size.min(cap);
            let va = map(pa, len)?;
            regions[used] = RedistRegion {
                va: va.as_usize(),
                len: len as usize,
            };
            used += 1;
        }
        let dist = map(dist_pa, v3::DIST_SIZE)?;
        // SAFETY: the distributor and every region were just mapped as Device memory by
        // ioremap for this driver alone, with the lengths given, and are never unmapped.
        unsafe { Gic::new_v3(dist.as_usize(), &regions[..used], stride) }
    };
    Ok(Some((
        gic,
        GicInfo {
            path,
            dist: dist_pa,
            phandle,
        },
    )))
}

/// The generic timer's virtual-timer interrupt (`interrupts` entry 2 of the first enabled
/// `arm,armv8-timer`: secure physical, non-secure physical, virtual, hypervisor; Linux binding
/// arm,arch_timer.yaml). `Ok(None)`: no timer node.
pub fn find_timer_irq(
    gic_phandle: Option<u32>,
) -> Result<Option<levitate_mm::dtb::interrupts::Specifier>, IrqTreeError> {
    use levitate_mm::dtb::interrupts::{self, InterruptError};
    let fdt = fdt();
    let Some(node) = tree::find_map(&fdt, |n| {
        (n.is_enabled() && tree::is_compatible(&n.node, &["arm,armv8-timer", "arm,armv7-timer"]))
            .then_some(*n)
    }) else {
        return Ok(None);
    };
    let err = |why| IrqTreeError::Interrupts {
        node: path_of(&node),
        why,
    };
    // A controller without a phandle cannot be anyone's interrupt parent.
    let gic = gic_phandle.ok_or_else(|| err(InterruptError::NoParent))?;
    interrupts::node_interrupt(&fdt, &node, gic, 2)
        .map(Some)
        .map_err(err)
}
