//! A tiny flattened-device-tree writer for unit tests (Devicetree Specification v0.4, chapter
//! 5): enough to describe memory nodes, `/reserved-memory`, `/chosen` and `/memreserve/`
//! entries without a dtc at test time.

use std::vec::Vec;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_END: u32 = 9;

/// A tree under construction. `new` opens the root node; `build` closes it.
pub struct Tree {
    structure: Vec<u8>,
    strings: Vec<u8>,
    reservations: Vec<(u64, u64)>,
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

/// Big-endian cells as bytes.
pub fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

impl Tree {
    /// A root node with the given cell sizes.
    pub fn new(address_cells: u32, size_cells: u32) -> Self {
        let mut t = Tree {
            structure: Vec::new(),
            strings: Vec::new(),
            reservations: Vec::new(),
        };
        t = t.begin("");
        t.cells("#address-cells", &[address_cells])
            .cells("#size-cells", &[size_cells])
    }

    /// A `/memreserve/` entry.
    pub fn memreserve(mut self, base: u64, size: u64) -> Self {
        self.reservations.push((base, size));
        self
    }

    pub fn begin(mut self, name: &str) -> Self {
        self.structure
            .extend_from_slice(&FDT_BEGIN_NODE.to_be_bytes());
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        pad4(&mut self.structure);
        self
    }

    pub fn end(mut self) -> Self {
        self.structure
            .extend_from_slice(&FDT_END_NODE.to_be_bytes());
        self
    }

    pub fn prop(mut self, name: &str, value: &[u8]) -> Self {
        let nameoff = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.structure.extend_from_slice(&FDT_PROP.to_be_bytes());
        self.structure
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.structure.extend_from_slice(&nameoff.to_be_bytes());
        self.structure.extend_from_slice(value);
        pad4(&mut self.structure);
        self
    }

    pub fn cells(self, name: &str, values: &[u32]) -> Self {
        self.prop(name, &cells(values))
    }

    pub fn string(self, name: &str, value: &str) -> Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.prop(name, &v)
    }

    /// A `device_type = "memory"` node with a raw `reg`.
    pub fn memory(self, name: &str, reg: &[u32]) -> Self {
        self.begin(name)
            .string("device_type", "memory")
            .cells("reg", reg)
            .end()
    }

    /// Closes the root and lays the blob out as dtc does (header, map, structure, strings).
    pub fn build(self) -> Vec<u8> {
        let mut t = self.end();
        t.structure.extend_from_slice(&FDT_END.to_be_bytes());
        let mut rsv = Vec::new();
        for (base, size) in t.reservations.iter().chain([(0, 0)].iter()) {
            rsv.extend_from_slice(&base.to_be_bytes());
            rsv.extend_from_slice(&size.to_be_bytes());
        }
        let off_rsv = 40u32;
        let off_struct = off_rsv + rsv.len() as u32;
        let off_strings = off_struct + t.structure.len() as u32;
        let total = off_strings + t.strings.len() as u32;
        let header = [
            0xd00d_feed,
            total,
            off_struct,
            off_strings,
            off_rsv,
            17,
            16,
            0,
            t.strings.len() as u32,
            t.structure.len() as u32,
        ];
        let mut blob = cells(&header);
        blob.extend_from_slice(&rsv);
        blob.extend_from_slice(&t.structure);
        blob.extend_from_slice(&t.strings);
        blob
    }
}
