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
use levitate_mm::dtb::tree;
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
