//! Interrupt specifiers of Arm GIC device trees: the interrupt ID space (`IntId`), the cells of
//! an `interrupts` property decoded into an ID and a trigger, and the `interrupt-parent` chain
//! (Devicetree Specification v0.4, 2.4 "Interrupts and Interrupt Mapping"; Linux bindings
//! `interrupt-controller/arm,gic.yaml` and `arm,gic-v3.yaml`).
//!
//! A GIC specifier has three cells, `<type number flags>`: type 0 is an SPI (number 0-987,
//! IntId 32 + number), type 1 a PPI (number 0-15, IntId 16 + number); flags bits 3:0 are the
//! trigger (1 edge rising, 2 edge falling, 4 level high, 8 level low) and, for GICv2 PPIs,
//! bits 15:8 a CPU mask. GICv3 trees may use four cells (gs101 does): the fourth is the phandle
//! of a PPI partition (`ppi-partitions`) or 0. Extended SPI/PPI ranges (types 2 and 3) are not
//! supported and are reported as such.

use super::tree::Located;
use core::fmt;
use fdt::node::FdtNode;
use fdt::Fdt;

/// A GIC interrupt ID (IHI 0069 2.2 "INTIDs"): SGIs 0-15, PPIs 16-31, SPIs 32-1019; 1020-1023
/// are special (1023: spurious, no interrupt pending).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntId(u32);

/// Which range an interrupt ID is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKind {
    /// Software-generated (0-15).
    Sgi,
    /// Private peripheral, one per CPU (16-31).
    Ppi,
    /// Shared peripheral (32-1019).
    Spi,
}

impl IntId {
    /// One past the largest interrupt ID the dispatch table knows (SPIs end at 1019).
    pub const LIMIT: u32 = 1020;
    /// The ID an acknowledge returns when nothing is pending (IHI 0069 2.2.1).
    pub const SPURIOUS: u32 = 1023;

    /// An interrupt ID below `LIMIT`.
    pub const fn new(id: u32) -> Option<Self> {
        if id < Self::LIMIT {
            Some(Self(id))
        } else {
            None
        }
    }
    /// SGI `n` (0-15).
    pub const fn sgi(n: u32) -> Option<Self> {
        if n < 16 {
            Some(Self(n))
        } else {
            None
        }
    }
    /// PPI `n` (0-15) as the device tree numbers it: IntId 16 + n.
    pub const fn ppi(n: u32) -> Option<Self> {
        if n < 16 {
            Some(Self(16 + n))
        } else {
            None
        }
    }
    /// SPI `n` (0-987) as the device tree numbers it: IntId 32 + n.
    pub const fn spi(n: u32) -> Option<Self> {
        if n < Self::LIMIT - 32 {
            Some(Self(32 + n))
        } else {
            None
        }
    }
    /// The raw number.
    pub const fn as_u32(self) -> u32 {
        self.0
    }
    /// The raw number as an index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
    /// The range this ID is in.
    pub const fn kind(self) -> IntKind {
        match self.0 {
            0..=15 => IntKind::Sgi,
            16..=31 => IntKind::Ppi,
            _ => IntKind::Spi,
        }
    }
    /// Whether the interrupt is private to each CPU (SGI or PPI: banked per CPU).
    pub const fn is_private(self) -> bool {
        self.0 < 32
    }
}

impl fmt::Display for IntId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            IntKind::Sgi => write!(f, "{} (SGI {})", self.0, self.0),
            IntKind::Ppi => write!(f, "{} (PPI {})", self.0, self.0 - 16),
            IntKind::Spi => write!(f, "{} (SPI {})", self.0, self.0 - 32),
        }
    }
}

/// How an interrupt signals. The GIC itself knows only level-sensitive and edge-triggered
/// (GICD_ICFGR, IHI 0069 12.9.9); polarity is the board's wiring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Edge-triggered (flags 1 or 2).
    Edge,
    /// Level-sensitive (flags 4 or 8, or 0 = "as configured", which the GIC resets to level
    /// for PPIs and Linux leaves alone).
    Level,
}

impl Trigger {
    /// The word `irqs` prints, as Linux's /proc/interrupts does.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Edge => "Edge",
            Trigger::Level => "Level",
        }
    }
}

/// One decoded GIC interrupt specifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Specifier {
    /// The interrupt ID.
    pub intid: IntId,
    /// Its trigger.
    pub trigger: Trigger,
    /// The PPI partition phandle of a 4-cell specifier (0 and 3-cell specifiers: `None`).
    pub partition: Option<u32>,
}

/// Why a specifier or an `interrupts` property is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// The controller's `#interrupt-cells` is missing or not 3 or 4.
    UnsupportedCells(Option<u32>),
    /// The property is empty or its length is not a whole number of specifiers.
    BadLength {
        /// Bytes in the property.
        len: usize,
        /// Cells per specifier.
        cells: usize,
    },
    /// The type cell is neither 0 (SPI) nor 1 (PPI).
    UnknownType(u32),
    /// The number is out of range for its type.
    OutOfRange {
        /// The type cell.
        kind: u32,
        /// The number cell.
        number: u32,
    },
    /// The trigger bits are not one of 0, 1, 2, 4, 8.
    BadTrigger(u32),
    /// There is no specifier at the index asked for.
    NoSuchIndex(usize),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedCells(Some(n)) => {
                write!(f, "#interrupt-cells = {n}, expected 3 or 4 for a GIC")
            }
            Self::UnsupportedCells(None) => write!(f, "the controller has no #interrupt-cells"),
            Self::BadLength { len, cells } => write!(
                f,
                "`interrupts` is {len} bytes, not a non-empty multiple of {cells} cells"
            ),
            Self::UnknownType(t) => write!(
                f,
                "interrupt type {t} is not 0 (SPI) or 1 (PPI) (extended ranges unsupported)"
            ),
            Self::OutOfRange { kind, number } => write!(
                f,
                "{} number {number} is out of range",
                if *kind == 0 { "SPI" } else { "PPI" }
            ),
            Self::BadTrigger(t) => write!(f, "trigger flags {t:#x} are not 1, 2, 4 or 8"),
            Self::NoSuchIndex(i) => write!(f, "`interrupts` has no entry {i}"),
        }
    }
}

/// The `#interrupt-cells` values a GIC may declare.
fn check_cells(cells: Option<u32>) -> Result<usize, SpecError> {
    match cells {
        Some(3) => Ok(3),
        Some(4) => Ok(4),
        other => Err(SpecError::UnsupportedCells(other)),
    }
}

/// Decodes one GIC specifier of 3 or 4 cells.
pub fn parse_specifier(cells: &[u32]) -> Result<Specifier, SpecError> {
    let (kind, number, flags) = match cells {
        [k, n, f] | [k, n, f, _] => (*k, *n, *f),
        _ => return Err(SpecError::UnsupportedCells(Some(cells.len() as u32))),
    };
    let intid = match kind {
        0 => IntId::spi(number),
        1 => IntId::ppi(number),
        other => return Err(SpecError::UnknownType(other)),
    }
    .ok_or(SpecError::OutOfRange { kind, number })?;
    let trigger = match flags & 0xf {
        1 | 2 => Trigger::Edge,
        0 | 4 | 8 => Trigger::Level,
        other => return Err(SpecError::BadTrigger(other)),
    };
    let partition = match cells {
        [_, _, _, p] if *p != 0 => Some(*p),
        _ => None,
    };
    Ok(Specifier {
        intid,
        trigger,
        partition,
    })
}

/// Decodes entry `index` of an `interrupts` property value whose controller declares
/// `interrupt_cells`. The whole property must be well formed, not only the entry asked for.
pub fn parse_interrupts(
    value: &[u8],
    interrupt_cells: Option<u32>,
    index: usize,
) -> Result<Specifier, SpecError> {
    let cells = check_cells(interrupt_cells)?;
    let stride = cells * 4;
    if value.is_empty() || !value.len().is_multiple_of(stride) {
        return Err(SpecError::BadLength {
            len: value.len(),
            cells,
        });
    }
    let count = value.len() / stride;
    let mut found = Err(SpecError::NoSuchIndex(index));
    for i in 0..count {
        let mut words = [0u32; 4];
        for (c, w) in words.iter_mut().enumerate().take(cells) {
            let at = i * stride + c * 4;
            *w = u32::from_be_bytes([value[at], value[at + 1], value[at + 2], value[at + 3]]);
        }
        let spec = parse_specifier(&words[..cells])?;
        if i == index {
            found = Ok(spec);
        }
    }
    found
}

/// The phandle of a node's interrupt parent: its own `interrupt-parent`, else the nearest
/// ancestor's (Devicetree Specification 2.4.1: the property is inherited).
pub fn interrupt_parent_phandle(at: &Located<'_, '_>) -> Option<u32> {
    let own = |n: &FdtNode<'_, '_>| {
        n.property("interrupt-parent")
            .and_then(|p| p.value.get(..4))
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    own(&at.node).or_else(|| at.ancestors().rev().find_map(|n| own(&n)))
}

/// A node's `phandle` (or legacy `linux,phandle`).
pub fn phandle(node: &FdtNode<'_, '_>) -> Option<u32> {
    node.property("phandle")
        .or_else(|| node.property("linux,phandle"))
        .and_then(|p| p.value.get(..4))
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A node's `#interrupt-cells`.
pub fn interrupt_cells(node: &FdtNode<'_, '_>) -> Option<u32> {
    node.property("#interrupt-cells")
        .and_then(|p| p.value.get(..4))
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Why a node's interrupt cannot be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptError {
    /// The node has no `interrupts` property.
    NoInterrupts,
    /// Neither the node nor an ancestor names an interrupt parent.
    NoParent,
    /// The interrupt parent phandle names no node.
    DanglingParent(u32),
    /// The interrupt parent is not the controller the kernel drives.
    OtherController(u32),
    /// The property is malformed.
    Spec(SpecError),
}

impl fmt::Display for InterruptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoInterrupts => write!(f, "no `interrupts` property"),
            Self::NoParent => write!(f, "no interrupt-parent on the node or its ancestors"),
            Self::DanglingParent(p) => write!(f, "interrupt-parent <{p:#x}> names no node"),
            Self::OtherController(p) => write!(
                f,
                "interrupt-parent <{p:#x}> is not the GIC (nested controllers are unsupported)"
            ),
            Self::Spec(e) => write!(f, "{e}"),
        }
    }
}

/// Entry `index` of the node's `interrupts`, decoded with the cell count of its interrupt
/// parent, which must be the controller whose phandle is `gic_phandle`.
pub fn node_interrupt(
    fdt: &Fdt<'_>,
    at: &Located<'_, '_>,
    gic_phandle: u32,
    index: usize,
) -> Result<Specifier, InterruptError> {
    let value = at
        .node
        .property("interrupts")
        .ok_or(InterruptError::NoInterrupts)?
        .value;
    let parent = interrupt_parent_phandle(at).ok_or(InterruptError::NoParent)?;
    if parent != gic_phandle {
        return Err(if fdt.find_phandle(parent).is_none() {
            InterruptError::DanglingParent(parent)
        } else {
            InterruptError::OtherController(parent)
        });
    }
    let controller = fdt
        .find_phandle(parent)
        .ok_or(InterruptError::DanglingParent(parent))?;
    parse_interrupts(value, interrupt_cells(&controller), index).map_err(InterruptError::Spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtb::tree;
    use proptest::prelude::*;

    fn blob(name: &str) -> std::vec::Vec<u8> {
        std::fs::read(std::format!(
            "{}/tests/dtbs/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn be(cells: &[u32]) -> std::vec::Vec<u8> {
        cells.iter().flat_map(|c| c.to_be_bytes()).collect()
    }

    #[test]
    fn three_and_four_cells() {
        let s = parse_specifier(&[1, 11, 4]).unwrap();
        assert_eq!(s.intid.as_u32(), 27);
        assert_eq!(s.intid.kind(), IntKind::Ppi);
        assert_eq!(s.trigger, Trigger::Level);
        let s = parse_specifier(&[0, 0x2fe, 4, 0]).unwrap();
        assert_eq!(s.intid.as_u32(), 32 + 0x2fe);
        assert_eq!(s.partition, None);
        let s = parse_specifier(&[1, 7, 0xff08, 0x0d]).unwrap();
        assert_eq!((s.intid.as_u32(), s.partition), (23, Some(0x0d)));
        assert_eq!(parse_specifier(&[0, 1, 1]).unwrap().trigger, Trigger::Edge);
    }

    #[test]
    fn bad_specifiers() {
        assert_eq!(
            parse_specifier(&[2, 0, 4]),
            Err(SpecError::UnknownType(2)),
            "extended SPI"
        );
        assert_eq!(
            parse_specifier(&[1, 16, 4]),
            Err(SpecError::OutOfRange {
                kind: 1,
                number: 16
            })
        );
        assert_eq!(
            parse_specifier(&[0, 988, 4]),
            Err(SpecError::OutOfRange {
                kind: 0,
                number: 988
            })
        );
        assert!(parse_specifier(&[0, 987, 4]).is_ok());
        assert_eq!(parse_specifier(&[0, 1, 3]), Err(SpecError::BadTrigger(3)));
        assert!(parse_specifier(&[0, 1]).is_err());
    }

    #[test]
    fn property_lengths() {
        let v = be(&[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]);
        assert_eq!(parse_interrupts(&v, Some(3), 2).unwrap().intid.as_u32(), 27);
        assert_eq!(
            parse_interrupts(&v, Some(3), 4),
            Err(SpecError::NoSuchIndex(4))
        );
        assert_eq!(
            parse_interrupts(&v[..11], Some(3), 0),
            Err(SpecError::BadLength { len: 11, cells: 3 })
        );
        assert!(parse_interrupts(&[], Some(3), 0).is_err());
        assert_eq!(
            parse_interrupts(&v, Some(2), 0),
            Err(SpecError::UnsupportedCells(Some(2)))
        );
        assert_eq!(
            parse_interrupts(&v, None, 0),
            Err(SpecError::UnsupportedCells(None))
        );
        // A bad later entry spoils the property even when an earlier one is asked for.
        let bad = be(&[1, 13, 4, 7, 14, 4]);
        assert_eq!(
            parse_interrupts(&bad, Some(3), 0),
            Err(SpecError::UnknownType(7))
        );
    }

    fn timer_of(name: &str) -> (Specifier, std::vec::Vec<u8>) {
        let b = blob(name);
        let spec = {
            let fdt = Fdt::new(&b).unwrap();
            let gic = tree::find_map(&fdt, |n| {
                tree::is_compatible(&n.node, &["arm,gic-v3", "arm,cortex-a15-gic"])
                    .then(|| phandle(&n.node))
                    .flatten()
            })
            .unwrap();
            let timer = tree::find_map(&fdt, |n| {
                tree::is_compatible(&n.node, &["arm,armv8-timer"]).then_some(*n)
            })
            .unwrap();
            node_interrupt(&fdt, &timer, gic, 2).unwrap()
        };
        (spec, b)
    }

    #[test]
    fn virtual_timer_ppi_from_real_trees() {
        // QEMU (3 cells, parent inherited from the root) and gs101 (4 cells, flags 0xff08).
        for name in [
            "qemu-virt-1g.dtb",
            "qemu-virt-el2-gicv3-2g.dtb",
            "gs101-oriole.dtb",
        ] {
            let (spec, _) = timer_of(name);
            assert_eq!(spec.intid.as_u32(), 27, "{name}");
            assert_eq!(spec.trigger, Trigger::Level, "{name}");
        }
    }

    #[test]
    fn gic_blocks_found_under_a_bus_and_translated() {
        // gs101's GICv3 sits under /soc@0 (4 interrupt cells, one redistributor region);
        // QEMU's at the root. The kernel's find_gic reads `reg` the same way.
        for (name, dist, redist) in [
            (
                "gs101-oriole.dtb",
                0x1040_0000u64,
                (0x1044_0000u64, 0x10_0000u64),
            ),
            (
                "qemu-virt-el2-gicv3-2g.dtb",
                0x800_0000,
                (0x80a_0000, 0xf6_0000),
            ),
        ] {
            let b = blob(name);
            let fdt = Fdt::new(&b).unwrap();
            let gic = tree::find_map(&fdt, |n| {
                tree::is_compatible(&n.node, &["arm,gic-v3"]).then_some(*n)
            })
            .unwrap();
            let regs: std::vec::Vec<_> = gic
                .raw_reg()
                .map(|(a, s)| (gic.translate(a).unwrap().as_u64(), s))
                .collect();
            assert_eq!(regs[0].0, dist, "{name}");
            assert_eq!(regs[1], redist, "{name}");
            assert!(phandle(&gic.node).is_some(), "{name}");
        }
    }

    #[test]
    fn other_parent_is_refused() {
        let b = blob("qemu-virt-1g.dtb");
        let fdt = Fdt::new(&b).unwrap();
        let timer = tree::find_map(&fdt, |n| {
            tree::is_compatible(&n.node, &["arm,armv8-timer"]).then_some(*n)
        })
        .unwrap();
        assert!(matches!(
            node_interrupt(&fdt, &timer, 0xdead, 0),
            Err(InterruptError::OtherController(_) | InterruptError::DanglingParent(_))
        ));
    }

    proptest! {
        #[test]
        fn any_cells_decode_or_fail_cleanly(kind in 0u32..4, number in 0u32..1100,
                                            flags in 0u32..0x10000, part in any::<u32>()) {
            for cells in [&[kind, number, flags][..], &[kind, number, flags, part][..]] {
                match parse_specifier(cells) {
                    Ok(s) => {
                        let base = if kind == 0 { 32 } else { 16 };
                        prop_assert_eq!(s.intid.as_u32(), base + number);
                        prop_assert!(s.intid.as_u32() < IntId::LIMIT);
                        prop_assert!(kind <= 1);
                        prop_assert_eq!(s.intid.is_private(), kind == 1);
                    }
                    Err(_) => prop_assert!(kind > 1 || (kind == 1 && number > 15)
                        || (kind == 0 && number > 987) || ![0, 1, 2, 4, 8].contains(&(flags & 0xf))),
                }
            }
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                 cells in proptest::option::of(0u32..6), index in 0usize..8) {
            let _ = parse_interrupts(&bytes, cells, index);
        }
    }
}
