//! The kernel symbol table: function names for fault reports and backtraces.
//!
//! `cargo xtask` writes the table into the image's `.ksyms` section after linking (the section
//! is reserved at a fixed size by the kernel, so patching it moves nothing). Format, all
//! little-endian:
//!
//! ```text
//! header   magic "KSYM", version u32 = 1, count u32, names_len u32
//! entries  count x { offset u32 (from KIMAGE_VBASE), size u32, name_off u32, name_len u32 },
//!          sorted by offset
//! names    names_len bytes of UTF-8, demangled without hashes
//! ```

use crate::layout::KIMAGE_VBASE;

const MAGIC: &[u8; 4] = b"KSYM";
const VERSION: u32 = 1;
const HEADER: usize = 16;
const ENTRY: usize = 16;

/// A parsed view of a symbol table.
#[derive(Clone, Copy)]
pub struct SymbolTable<'a> {
    entries: &'a [u8],
    names: &'a [u8],
    count: usize,
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> SymbolTable<'a> {
    /// Parses a table; `None` when the bytes are not a well-formed table (e.g. never patched).
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.get(..4)? != MAGIC || le32(bytes, 4)? != VERSION {
            return None;
        }
        let count = le32(bytes, 8)? as usize;
        let names_len = le32(bytes, 12)? as usize;
        let entries_end = HEADER.checked_add(count.checked_mul(ENTRY)?)?;
        let entries = bytes.get(HEADER..entries_end)?;
        let names = bytes.get(entries_end..entries_end.checked_add(names_len)?)?;
        Some(Self {
            entries,
            names,
            count,
        })
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn entry(&self, i: usize) -> (u32, u32, u32, u32) {
        let e = &self.entries[i * ENTRY..(i + 1) * ENTRY];
        let f = |k: usize| u32::from_le_bytes([e[k], e[k + 1], e[k + 2], e[k + 3]]);
        (f(0), f(4), f(8), f(12))
    }

    /// The symbol containing `image_offset` (an offset from the image base) and the offset
    /// into it.
    pub fn lookup_offset(&self, image_offset: u64) -> Option<(&'a str, u64)> {
        let off = u32::try_from(image_offset).ok()?;
        // Last entry whose start is <= off.
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 <= off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let (start, size, name_off, name_len) = self.entry(lo.checked_sub(1)?);
        if off - start >= size.max(1) {
            return None;
        }
        let name = self
            .names
            .get(name_off as usize..name_off as usize + name_len as usize)?;
        Some((core::str::from_utf8(name).ok()?, u64::from(off - start)))
    }

    /// The symbol containing kernel virtual address `addr`.
    pub fn lookup(&self, addr: u64) -> Option<(&'a str, u64)> {
        self.lookup_offset(addr.checked_sub(KIMAGE_VBASE)?)
    }
}

/// Bytes reserved in the image for the symbol table. xtask refuses to build when the table
/// outgrows it.
pub const KSYMS_RESERVE: usize = 768 * 1024;

/// The reservation itself: zeros in the image file that xtask overwrites. Never read through
/// this static (the compiler knows it as zeros); `kernel_table` reads the section by address.
#[cfg(target_os = "none")]
#[used]
#[link_section = ".ksyms"]
static KSYMS_SPACE: [u8; KSYMS_RESERVE] = [0; KSYMS_RESERVE];

/// The running kernel's symbol table, if xtask patched one in.
#[cfg(target_os = "none")]
pub fn kernel_table() -> Option<SymbolTable<'static>> {
    extern "C" {
        static __ksyms_start: u8;
        static __ksyms_end: u8;
    }
    // SAFETY: the linker script brackets the `.ksyms` section, which lives in the read-only
    // part of the mapped image for the kernel's lifetime, with these two symbols. Reading it
    // through their addresses (not through a Rust static) keeps the compiler from assuming the
    // zeros it was compiled with.
    let bytes = unsafe {
        let start = core::ptr::addr_of!(__ksyms_start);
        let end = core::ptr::addr_of!(__ksyms_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    };
    SymbolTable::parse(bytes)
}

/// Resolves a kernel address to `(function, offset)`, when the kernel has a symbol table.
pub fn resolve(addr: u64) -> Option<(&'static str, u64)> {
    #[cfg(target_os = "none")]
    {
        kernel_table()?.lookup(addr)
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = addr;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn build(symbols: &[(u32, u32, &str)]) -> Vec<u8> {
        let mut names = Vec::new();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(symbols.len() as u32).to_le_bytes());
        let total: usize = symbols.iter().map(|s| s.2.len()).sum();
        out.extend_from_slice(&(total as u32).to_le_bytes());
        for (off, size, name) in symbols {
            out.extend_from_slice(&off.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&(names.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            names.extend_from_slice(name.as_bytes());
        }
        out.extend_from_slice(&names);
        out
    }

    #[test]
    fn lookup_finds_containing_symbol() {
        let bytes = build(&[(0x100, 0x20, "a"), (0x120, 0x10, "b"), (0x200, 0x8, "c")]);
        let t = SymbolTable::parse(&bytes).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(KIMAGE_VBASE + 0x100), Some(("a", 0)));
        assert_eq!(t.lookup(KIMAGE_VBASE + 0x11f), Some(("a", 0x1f)));
        assert_eq!(t.lookup(KIMAGE_VBASE + 0x124), Some(("b", 4)));
        assert_eq!(t.lookup(KIMAGE_VBASE + 0x130), None, "gap between b and c");
        assert_eq!(
            t.lookup(KIMAGE_VBASE + 0xff),
            None,
            "before the first symbol"
        );
        assert_eq!(t.lookup(0x1000), None, "below the image");
        assert_eq!(t.lookup(KIMAGE_VBASE + 0x207), Some(("c", 7)));
    }

    #[test]
    fn rejects_garbage() {
        assert!(SymbolTable::parse(&[0; 64]).is_none());
        let mut bytes = build(&[(0, 4, "x")]);
        bytes.truncate(bytes.len() - 1);
        assert!(SymbolTable::parse(&bytes).is_none(), "names cut short");
        let mut huge = build(&[]);
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SymbolTable::parse(&huge).is_none(), "count past the end");
    }
}
