//! Pure device-tree policy the kernel applies at boot, host-tested on real trees: which node
//! is the console and which driver takes it, where a device's registers are, and which CPUs
//! `/cpus` lists (Devicetree Specification v0.4: 3.3 `/chosen` `stdout-path`, 2.3.1
//! `compatible`, 3.7 `/cpus` and `cpu` nodes).

use super::tree::{self, Located};
use crate::addr::PhysAddr;
use fdt::Fdt;

/// A device node a driver accepts, with its registers translated to a CPU physical address.
#[derive(Clone, Copy)]
pub struct Found<'b, 'a> {
    /// The node.
    pub node: Located<'b, 'a>,
    /// Index into the driver table the caller passed.
    pub driver: usize,
    /// The `compatible` string that matched.
    pub compatible: &'a str,
    /// The first `reg` entry, translated through every enclosing bus's `ranges`.
    pub phys: PhysAddr,
    /// Its size.
    pub size: u64,
}

/// Which driver accepts `node`: the node's `compatible` list is read most specific first
/// (spec 2.3.1) and the first string any driver lists decides; disabled nodes and nodes
/// without translatable `reg` are accepted by none.
pub fn match_driver<'b, 'a>(node: &Located<'b, 'a>, drivers: &[&[&str]]) -> Option<Found<'b, 'a>> {
    if !node.is_enabled() {
        return None;
    }
    let compatible = node.node.property("compatible")?.value;
    let (driver, compatible) = compatible
        .split(|&b| b == 0)
        .filter_map(|s| core::str::from_utf8(s).ok())
        .find_map(|s| {
            drivers
                .iter()
                .position(|list| list.contains(&s))
                .map(|d| (d, s))
        })?;
    let (phys, size) = node.mmio()?;
    Some(Found {
        node: *node,
        driver,
        compatible,
        phys,
        size,
    })
}

/// How the console was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleSource {
    /// `/chosen/stdout-path` names it.
    StdoutPath,
    /// The first node (depth first) a driver accepts: `stdout-path` was missing or named no
    /// node a driver accepts.
    FirstAccepted,
}

/// Why no console was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoConsole<'a> {
    /// What `/chosen/stdout-path` named, if anything.
    pub stdout_path: Option<&'a str>,
}

/// Picks the console: the node `/chosen/stdout-path` names (a path or an alias, `:options`
/// ignored) if a driver in `drivers` accepts it, else the first enabled node any driver
/// accepts. Each entry of `drivers` is one driver's `compatible` list.
pub fn select_console<'b, 'a>(
    fdt: &'b Fdt<'a>,
    drivers: &[&[&str]],
) -> Result<(Found<'b, 'a>, ConsoleSource), NoConsole<'a>> {
    let stdout_path = tree::stdout_path(fdt);
    if let Some(found) = stdout_path
        .and_then(|p| tree::find_path(fdt, p))
        .and_then(|n| match_driver(&n, drivers))
    {
        return Ok((found, ConsoleSource::StdoutPath));
    }
    tree::find_map(fdt, |n| match_driver(n, drivers))
        .map(|f| (f, ConsoleSource::FirstAccepted))
        .ok_or(NoConsole { stdout_path })
}

/// The first enabled node compatible with one of `compatible`, with its registers.
pub fn find_enabled<'b, 'a>(fdt: &'b Fdt<'a>, compatible: &[&str]) -> Option<Found<'b, 'a>> {
    tree::find_map(fdt, |n| match_driver(n, &[compatible]))
}

/// Calls `f` on every enabled node compatible with one of `compatible`, depth first, until
/// it returns `false`.
pub fn each_enabled<'b, 'a>(
    fdt: &'b Fdt<'a>,
    compatible: &[&str],
    mut f: impl FnMut(Found<'b, 'a>) -> bool,
) {
    tree::find_map(fdt, |n| {
        let found = match_driver(n, &[compatible])?;
        (!f(found)).then_some(())
    });
}

/// A u32 property of a node (one cell).
pub fn u32_property(node: &Located<'_, '_>, name: &str) -> Option<u32> {
    let v = node.node.property(name)?.value;
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// One `cpu` node of `/cpus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuNode<'a> {
    /// Node name, e.g. `cpu@100`.
    pub name: &'a str,
    /// Its MPIDR affinity fields (`reg`: Aff3 in bits 39:32 when `#address-cells` is 2,
    /// Aff2..Aff0 in bits 23:0, as the Arm CPU binding says).
    pub mpidr: u64,
    /// `enable-method`, e.g. "psci".
    pub enable_method: Option<&'a str>,
}

/// The MPIDR affinity bits a `cpu` node's `reg` may hold (Aff3, Aff2, Aff1, Aff0).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Every child of `/cpus` with `device_type = "cpu"` and a readable `reg`, in tree order;
/// `reg` is read with `/cpus`'s `#address-cells` (1 or 2; `#size-cells` is 0 there).
/// Entries whose `reg` sets bits outside the affinity fields are skipped: no CPU has such an
/// MPIDR, so starting one could only fail.
pub fn cpu_nodes<'b, 'a>(fdt: &'b Fdt<'a>) -> impl Iterator<Item = CpuNode<'a>> + 'b {
    let cpus = tree::find_path(fdt, "/cpus");
    let address_cells = cpus
        .as_ref()
        .map_or(1, |c| tree::child_cell_sizes(&c.node).0);
    cpus.into_iter()
        .flat_map(|c| c.node.children())
        .filter_map(move |node| {
            if node.property("device_type").and_then(|p| p.as_str()) != Some("cpu") {
                return None;
            }
            let reg = node.property("reg")?.value;
            let (mpidr, _) = tree::reg_entries(reg, address_cells, 0).next()?;
            if mpidr & !MPIDR_AFFINITY_MASK != 0 {
                return None;
            }
            Some(CpuNode {
                name: node.name,
                mpidr,
                enable_method: node.property("enable-method").and_then(|p| p.as_str()),
            })
        })
}

/// The rate of the clock a node names `clock_name` in `clock-names`, when its provider is a
/// `fixed-clock` (the only kind whose rate the tree itself states): the `clocks` list is
/// walked entry by entry, each provider's `#clock-cells` saying how many cells follow its
/// phandle (clock binding, Documentation/devicetree/bindings/clock/clock-bindings.txt).
pub fn fixed_clock_rate(fdt: &Fdt<'_>, node: &Located<'_, '_>, clock_name: &str) -> Option<u32> {
    let index = node
        .node
        .property("clock-names")?
        .value
        .split(|&b| b == 0)
        .position(|n| n == clock_name.as_bytes())?;
    let cells = node.node.property("clocks")?.value;
    let cell = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            cells.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    let mut at = 0;
    for entry in 0..=index {
        let provider = fdt.find_phandle(cell(at)?)?;
        let provider_cells = provider
            .property("#clock-cells")
            .and_then(|p| p.value.get(..4))
            .map_or(0, |v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize);
        if entry == index {
            let fixed = provider
                .compatible()
                .is_some_and(|c| c.all().any(|s| s == "fixed-clock"));
            return fixed
                .then(|| provider.property("clock-frequency")?.as_usize())
                .flatten()
                .and_then(|hz| u32::try_from(hz).ok());
        }
        at += 1 + provider_cells;
    }
    None
}
