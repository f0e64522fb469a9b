//! Device-tree lookups beyond what the fdt crate offers, with no allocation: walking the tree
//! with each node's ancestors at hand, paths and `/aliases`, cell sizes, `reg` decoding and
//! translation of bus addresses to CPU physical addresses through `ranges`
//! (Devicetree Specification v0.4, 2.3.5 `#address-cells`/`#size-cells`, 2.3.8 `ranges`).

use crate::addr::PhysAddr;
use fdt::node::FdtNode;
use fdt::Fdt;

/// Deepest node the walkers follow; deeper subtrees are skipped.
pub const MAX_DEPTH: usize = 16;

/// A node with the chain of its ancestors (root first), so cell sizes and `ranges` of every
/// enclosing bus are at hand.
#[derive(Clone, Copy)]
pub struct Located<'b, 'a> {
    /// The node itself.
    pub node: FdtNode<'b, 'a>,
    ancestors: [Option<FdtNode<'b, 'a>>; MAX_DEPTH],
    depth: usize,
}

/// A big-endian u32 cell at index `i` of a property value.
fn cell(value: &[u8], i: usize) -> Option<u32> {
    let b = value.get(i * 4..i * 4 + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads a number of `cells` cells (1 or 2; more do not fit a physical address).
fn read_cells(value: &[u8], at: usize, cells: usize) -> Option<u64> {
    match cells {
        0 => Some(0),
        1 => cell(value, at).map(u64::from),
        2 => Some((u64::from(cell(value, at)?) << 32) | u64::from(cell(value, at + 1)?)),
        _ => None,
    }
}

/// `#address-cells` and `#size-cells` a node declares for its children (spec defaults 2 and 1).
pub fn child_cell_sizes(node: &FdtNode<'_, '_>) -> (usize, usize) {
    let get = |name: &str, default: usize| {
        node.property(name)
            .and_then(|p| cell(p.value, 0))
            .map_or(default, |v| v as usize)
    };
    (get("#address-cells", 2), get("#size-cells", 1))
}

/// The `(address, size)` pairs of a `reg`-like property value with the given cell sizes.
/// Trailing bytes that do not form a whole entry are ignored.
pub fn reg_entries(
    value: &[u8],
    address_cells: usize,
    size_cells: usize,
) -> impl Iterator<Item = (u64, u64)> + '_ {
    let stride = address_cells + size_cells;
    let count = if stride == 0 || address_cells > 2 || size_cells > 2 {
        0
    } else {
        value.len() / (stride * 4)
    };
    (0..count).filter_map(move |i| {
        let at = i * stride;
        Some((
            read_cells(value, at, address_cells)?,
            read_cells(value, at + address_cells, size_cells)?,
        ))
    })
}

impl<'b, 'a> Located<'b, 'a> {
    /// The root node, located.
    pub fn root(fdt: &'b Fdt<'a>) -> Option<Self> {
        Some(Self {
            node: fdt.find_node("/")?,
            ancestors: [None; MAX_DEPTH],
            depth: 0,
        })
    }

    /// The node's parent, if it is not the root.
    pub fn parent(&self) -> Option<FdtNode<'b, 'a>> {
        self.depth.checked_sub(1).and_then(|d| self.ancestors[d])
    }

    /// The node's ancestors, root first.
    pub fn ancestors(&self) -> impl DoubleEndedIterator<Item = FdtNode<'b, 'a>> + '_ {
        self.ancestors[..self.depth].iter().flatten().copied()
    }

    fn child(&self, node: FdtNode<'b, 'a>) -> Option<Self> {
        if self.depth == MAX_DEPTH {
            return None;
        }
        let mut next = *self;
        next.ancestors[self.depth] = Some(self.node);
        next.depth += 1;
        next.node = node;
        Some(next)
    }

    /// The cell sizes that apply to this node's `reg` (its parent's declaration).
    pub fn reg_cell_sizes(&self) -> (usize, usize) {
        self.parent().map_or((2, 1), |p| child_cell_sizes(&p))
    }

    /// The node's `reg` entries in its parent's address space, untranslated.
    pub fn raw_reg(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let (ac, sc) = self.reg_cell_sizes();
        let value: &'a [u8] = self.node.property("reg").map_or(&[], |p| p.value);
        reg_entries(value, ac, sc)
    }

    /// Translates an address in this node's parent bus space to a CPU physical address by
    /// applying every enclosing bus's `ranges`. `None` when a bus has no `ranges` (no mapping
    /// exists, spec 2.3.8) or the address falls outside all of them.
    pub fn translate(&self, mut addr: u64) -> Option<PhysAddr> {
        // Walk buses from the innermost (the node's parent) up to, not including, the root.
        for level in (1..self.depth).rev() {
            let bus = self.ancestors[level]?;
            let bus_parent = self.ancestors[level - 1]?;
            let (child_ac, child_sc) = child_cell_sizes(&bus);
            let (parent_ac, _) = child_cell_sizes(&bus_parent);
            let ranges = bus.property("ranges")?.value;
            if ranges.is_empty() {
                continue; // identity mapping
            }
            let stride = child_ac + parent_ac + child_sc;
            if stride == 0 || child_ac > 2 || parent_ac > 2 || child_sc > 2 {
                return None;
            }
            let mut mapped = None;
            for i in 0..ranges.len() / (stride * 4) {
                let at = i * stride;
                let child = read_cells(ranges, at, child_ac)?;
                let parent = read_cells(ranges, at + child_ac, parent_ac)?;
                let len = read_cells(ranges, at + child_ac + parent_ac, child_sc)?;
                if addr >= child && addr - child < len {
                    mapped = Some(parent.checked_add(addr - child)?);
                    break;
                }
            }
            addr = mapped?;
        }
        Some(PhysAddr::new(addr))
    }

    /// The first `reg` entry as a CPU physical address and size.
    pub fn mmio(&self) -> Option<(PhysAddr, u64)> {
        let (addr, size) = self.raw_reg().next()?;
        Some((self.translate(addr)?, size))
    }

    /// Whether the node's `status` is "okay" (or absent, which means okay).
    pub fn is_enabled(&self) -> bool {
        match self.node.property("status").and_then(|p| p.as_str()) {
            None => true,
            Some(s) => s == "okay" || s == "ok",
        }
    }
}

/// Whether a node name matches a path component: exactly, or by the name before `@` when the
/// component has no unit address.
fn name_matches(name: &str, component: &str) -> bool {
    name == component || (!component.contains('@') && name.split('@').next() == Some(component))
}

/// Finds a node by absolute path (`/soc@0/serial@10a00000`) or alias (`serial0`).
pub fn find_path<'b, 'a>(fdt: &'b Fdt<'a>, path: &str) -> Option<Located<'b, 'a>> {
    let path = if path.starts_with('/') {
        path
    } else {
        let aliases = fdt.find_node("/aliases")?;
        let target = aliases.property(path)?.as_str()?;
        if !target.starts_with('/') {
            return None; // an alias must name a full path; never recurse
        }
        target
    };
    let mut at = Located::root(fdt)?;
    for component in path.split('/').filter(|c| !c.is_empty()) {
        let child = at
            .node
            .children()
            .find(|c| name_matches(c.name, component))?;
        at = at.child(child)?;
    }
    Some(at)
}

/// Visits nodes depth first (root first) with their ancestors until `f` returns `Some`.
pub fn find_map<'b, 'a, T>(
    fdt: &'b Fdt<'a>,
    mut f: impl FnMut(&Located<'b, 'a>) -> Option<T>,
) -> Option<T> {
    fn visit<'b, 'a, T>(
        at: &Located<'b, 'a>,
        f: &mut impl FnMut(&Located<'b, 'a>) -> Option<T>,
    ) -> Option<T> {
        if let Some(found) = f(at) {
            return Some(found);
        }
        for child in at.node.children() {
            if let Some(next) = at.child(child) {
                if let Some(found) = visit(&next, f) {
                    return Some(found);
                }
            }
        }
        None
    }
    visit(&Located::root(fdt)?, &mut f)
}

/// Whether a node's `compatible` list contains any of `wanted`.
pub fn is_compatible(node: &FdtNode<'_, '_>, wanted: &[&str]) -> bool {
    node.property("compatible").is_some_and(|p| {
        p.value
            .split(|&b| b == 0)
            .any(|s| wanted.iter().any(|w| w.as_bytes() == s))
    })
}

/// The `/chosen` `stdout-path` (or legacy `linux,stdout-path`) without its `:options` suffix.
pub fn stdout_path<'a>(fdt: &Fdt<'a>) -> Option<&'a str> {
    let chosen = fdt.find_node("/chosen")?;
    let raw = chosen
        .property("stdout-path")
        .or_else(|| chosen.property("linux,stdout-path"))?
        .as_str()?;
    raw.split(':').next()
}

/// A `/chosen` string property, e.g. `bootargs`.
pub fn chosen_str<'a>(fdt: &Fdt<'a>, name: &str) -> Option<&'a str> {
    fdt.find_node("/chosen")?.property(name)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(name: &str) -> std::vec::Vec<u8> {
        std::fs::read(std::format!(
            "{}/tests/dtbs/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn qemu_console_by_stdout_path() {
        let b = blob("qemu-virt-1g.dtb");
        let fdt = Fdt::new(&b).unwrap();
        let path = stdout_path(&fdt).unwrap();
        assert_eq!(path, "/pl011@9000000");
        let uart = find_path(&fdt, path).unwrap();
        assert!(is_compatible(&uart.node, &["arm,pl011"]));
        assert_eq!(uart.mmio(), Some((PhysAddr::new(0x900_0000), 0x1000)));
    }

    #[test]
    fn pixel6_console_through_ranges_and_alias() {
        let b = blob("gs101-oriole.dtb");
        let fdt = Fdt::new(&b).unwrap();
        let path = stdout_path(&fdt).unwrap();
        assert_eq!(path, "/soc@0/usi@10a000c0/serial@10a00000");
        let uart = find_path(&fdt, path).unwrap();
        assert!(is_compatible(&uart.node, &["google,gs101-uart"]));
        let by_alias = find_path(&fdt, "serial0").unwrap();
        assert_eq!(by_alias.node.name, uart.node.name);
        // The UART sits under /soc, whose `ranges` map bus addresses 1:1 here.
        assert_eq!(uart.mmio().map(|m| m.0), Some(PhysAddr::new(0x10a0_0000)));
    }

    #[test]
    fn first_compatible_by_walk() {
        let b = blob("juno.dtb");
        let fdt = Fdt::new(&b).unwrap();
        let found = find_map(&fdt, |n| {
            is_compatible(&n.node, &["arm,pl011"]).then(|| n.mmio())
        });
        assert!(matches!(found, Some(Some(_))));
    }

    #[test]
    fn reg_entries_cell_sizes() {
        let v = [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        let got: std::vec::Vec<_> = reg_entries(&v, 2, 1).collect();
        assert_eq!(got, [(1 << 32 | 2, 3)]);
        assert_eq!(
            reg_entries(&v, 3, 1).count(),
            0,
            "3 address cells unsupported"
        );
        assert_eq!(
            reg_entries(&v, 1, 1).count(),
            1,
            "trailing partial entry ignored"
        );
    }

    #[test]
    fn missing_paths_and_bad_aliases() {
        let b = blob("qemu-virt-1g.dtb");
        let fdt = Fdt::new(&b).unwrap();
        assert!(find_path(&fdt, "/nope").is_none());
        assert!(find_path(&fdt, "serial9").is_none());
        assert!(find_path(&fdt, "/").is_some());
    }
}
