//! The memory map as a table a person reads. The kernel's `memmap` shell command and the
//! host's `cargo xtask memmap` print the same text from this one formatter.

use crate::mem_map::{Placement, PAGE_STRUCT_SIZE};
use crate::memmap::MemoryMap;
use crate::region::Region;
use core::fmt;

/// A byte count in the largest binary unit it reaches: exact when that unit divides it
/// ("2 MiB"), else with one decimal, rounded down ("1.5 GiB", "226.3 MiB").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        let b = self.0;
        let text_width = f.width();
        let mut buf = Buf::default();
        let r = if let Some((unit, size)) = UNITS.iter().find(|(_, s)| b >= *s) {
            if b.is_multiple_of(*size) {
                fmt::write(&mut buf, format_args!("{} {unit}", b / size))
            } else {
                // One decimal without floating point: tenths, rounded down.
                let tenths = u128::from(b) * 10 / u128::from(*size);
                fmt::write(
                    &mut buf,
                    format_args!("{}.{} {unit}", tenths / 10, tenths % 10),
                )
            }
        } else {
            fmt::write(&mut buf, format_args!("{b} B"))
        };
        r?;
        match text_width {
            Some(w) => write!(f, "{:>w$}", buf.as_str()),
            None => f.write_str(buf.as_str()),
        }
    }
}

/// A small stack buffer for padding formatted sizes.
#[derive(Default)]
struct Buf {
    bytes: [u8; 32],
    len: usize,
}

impl Buf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// One range as `0x0000000040000000-0x000000007fffffff  1 GiB` (inclusive end, as Linux
/// prints /proc/iomem).
pub struct Span(pub Region);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        let last = r.end().saturating_sub(1).max(r.base.as_u64());
        write!(
            f,
            "{:#014x}-{:#014x} {:>10}",
            r.base.as_u64(),
            last,
            Size(r.size)
        )
    }
}

/// The whole map as text: RAM, reservations with names and flags, usable ranges, the
/// mem_map's place, totals and warnings.
pub struct Table<'m, 'a> {
    /// The map.
    pub map: &'m MemoryMap<'a>,
    /// The mem_map, once placed.
    pub mem_map: Option<&'m Placement>,
}

impl fmt::Display for Table<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map;
        writeln!(f, "RAM")?;
        for r in map.memory() {
            writeln!(f, "  {}", Span(*r))?;
        }
        writeln!(f, "reserved")?;
        if map.reserved().is_empty() {
            writeln!(f, "  (none)")?;
        }
        for r in map.reserved() {
            write!(
                f,
                "  {}  {:<15} {}",
                Span(r.region),
                r.source.as_str(),
                r.name
            )?;
            if r.no_map {
                write!(f, " [no-map]")?;
            }
            if r.reusable {
                write!(f, " [reusable]")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "usable")?;
        if map.usable().is_empty() {
            writeln!(f, "  (none)")?;
        }
        for r in map.usable() {
            writeln!(f, "  {}", Span(*r))?;
        }
        if let Some(p) = self.mem_map {
            writeln!(f, "mem_map")?;
            writeln!(
                f,
                "  {}  {} frames x {} bytes, {} sections",
                Span(p.region),
                p.layout.frames(),
                PAGE_STRUCT_SIZE,
                p.layout.sections().len()
            )?;
        }
        let t = map.totals();
        writeln!(
            f,
            "total: RAM {}, reserved {}, usable {}, no-map {}",
            Size(t.memory),
            Size(t.reserved),
            Size(t.usable),
            Size(t.no_map)
        )?;
        let warnings = map.warnings();
        if !warnings.is_empty() || map.dropped_warnings() > 0 {
            writeln!(f, "warnings")?;
            for w in warnings {
                writeln!(f, "  {w}")?;
            }
            if map.dropped_warnings() > 0 {
                writeln!(f, "  ... and {} more", map.dropped_warnings())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn sizes() {
        assert_eq!(format!("{}", Size(1 << 30)), "1 GiB");
        assert_eq!(format!("{}", Size(128 << 20)), "128 MiB");
        assert_eq!(format!("{}", Size(0x1800)), "6 KiB");
        assert_eq!(format!("{}", Size(1536 << 20)), "1.5 GiB");
        assert_eq!(format!("{}", Size(231_828 << 10)), "226.3 MiB");
        assert_eq!(format!("{}", Size((3 << 29) + 512)), "1.5 GiB");
        assert_eq!(format!("{}", Size(7)), "7 B");
        assert_eq!(format!("{}", Size(0)), "0 B");
        assert_eq!(format!("{:>8}", Size(4096)), "   4 KiB");
    }

    #[test]
    fn spans_are_inclusive() {
        let s = format!("{}", Span(Region::from_bounds(0x4000_0000, 0x8000_0000)));
        assert_eq!(s, "0x000040000000-0x00007fffffff      1 GiB");
    }
}
