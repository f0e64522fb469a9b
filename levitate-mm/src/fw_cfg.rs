//! The byte formats of QEMU's firmware configuration device (fw_cfg) that the kernel needs
//! to drive the `ramfb` display: the file directory, the DMA access descriptor and the
//! `RAMFBCfg` record, all big-endian (QEMU docs/specs/fw_cfg.rst; hw/display/ramfb.c).
//! Pure encoding and parsing, host-tested; the register accesses live in
//! levitate-hal/src/drivers/fw_cfg.rs.

use crate::addr::PhysAddr;

/// The signature item: reading it gives the four bytes `QEMU` (fw_cfg.rst, "Signature").
pub const KEY_SIGNATURE: u16 = 0x0000;
/// The feature bitmap (`FW_CFG_ID`): a little-endian u32; bit 1 says the DMA interface exists.
pub const KEY_ID: u16 = 0x0001;
/// The file directory (`FW_CFG_FILE_DIR`).
pub const KEY_FILE_DIR: u16 = 0x0019;
/// What the signature item reads as.
pub const SIGNATURE: [u8; 4] = *b"QEMU";
/// `FW_CFG_ID` bit: traditional (port or MMIO data register) interface.
pub const FEATURE_TRADITIONAL: u32 = 1 << 0;
/// `FW_CFG_ID` bit: DMA interface.
pub const FEATURE_DMA: u32 = 1 << 1;
/// What the DMA address register reads as when the DMA interface exists ("QEMU CFG").
pub const DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;

/// DMA control bits (fw_cfg.rst, "FWCfgDmaAccess"): set by the device on failure.
pub const DMA_CTL_ERROR: u32 = 0x01;
/// Read the selected item into guest memory.
pub const DMA_CTL_READ: u32 = 0x02;
/// Skip bytes of the selected item.
pub const DMA_CTL_SKIP: u32 = 0x04;
/// Select the item in bits 31..16 first.
pub const DMA_CTL_SELECT: u32 = 0x08;
/// Write guest memory into the selected item.
pub const DMA_CTL_WRITE: u32 = 0x10;

/// Bytes of one file directory entry: BE32 size, BE16 select, BE16 reserved, 56-byte name.
pub const FILE_ENTRY_SIZE: usize = 64;
/// Bytes of a file name field (NUL-padded).
pub const FILE_NAME_SIZE: usize = 56;

/// The file the ramfb device reads its configuration from.
pub const RAMFB_FILE: &str = "etc/ramfb";

/// One entry of the file directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct File {
    /// The item's size in bytes.
    pub size: u32,
    /// The key that selects it.
    pub select: u16,
}

/// Why a directory could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirError {
    /// Fewer than the four bytes of the count.
    Short,
}

/// The number of entries a directory says it has (its first four bytes, BE32).
pub fn dir_count(header: &[u8]) -> Result<u32, DirError> {
    let b: [u8; 4] = header
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(DirError::Short)?;
    Ok(u32::from_be_bytes(b))
}

/// Decodes one 64-byte directory entry into its name (up to the first NUL) and [`File`];
/// `None` when `entry` is not 64 bytes or the name is not UTF-8.
pub fn parse_entry(entry: &[u8]) -> Option<(&str, File)> {
    if entry.len() != FILE_ENTRY_SIZE {
        return None;
    }
    let size = u32::from_be_bytes(entry[0..4].try_into().ok()?);
    let select = u16::from_be_bytes(entry[4..6].try_into().ok()?);
    let name = &entry[8..];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let name = core::str::from_utf8(&name[..end]).ok()?;
    Some((name, File { size, select }))
}

/// Looks `wanted` up in a whole directory (count, then entries); entries past the bytes
/// given are not read, so a count larger than the data cannot run past it.
pub fn find_file(dir: &[u8], wanted: &str) -> Result<Option<File>, DirError> {
    let count = dir_count(dir)? as usize;
    Ok(dir[4..]
        .chunks_exact(FILE_ENTRY_SIZE)
        .take(count)
        .filter_map(parse_entry)
        .find(|(name, _)| *name == wanted)
        .map(|(_, f)| f))
}

/// The DMA access descriptor the device reads from guest memory: BE32 control, BE32
/// length, BE64 address (16 bytes, fw_cfg.rst "FWCfgDmaAccess").
pub fn dma_access(control: u32, length: u32, address: PhysAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&control.to_be_bytes());
    out[4..8].copy_from_slice(&length.to_be_bytes());
    out[8..16].copy_from_slice(&address.as_u64().to_be_bytes());
    out
}

/// The control word that selects `key` and writes `length` bytes to it.
pub const fn select_write(key: u16) -> u32 {
    ((key as u32) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE
}

/// Bytes of a `RAMFBCfg` (packed).
pub const RAMFB_CFG_SIZE: usize = 28;

/// ramfb's configuration: where the framebuffer is and how it is laid out (hw/display/ramfb.c
/// `struct RAMFBCfg`, packed, every field big-endian; the device accepts the DRM fourccs
/// that QEMU's pixman table knows, XR24 among them, and refuses `stride` smaller than a row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamfbCfg {
    /// Guest physical address of the buffer.
    pub addr: PhysAddr,
    /// DRM fourcc (`drm_fourcc.h`), e.g. XR24 = 0x34325258.
    pub fourcc: u32,
    /// Flags (none defined: 0).
    pub flags: u32,
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes per row.
    pub stride: u32,
}

impl RamfbCfg {
    /// The 28 bytes the device reads.
    pub fn encode(&self) -> [u8; RAMFB_CFG_SIZE] {
        let mut out = [0u8; RAMFB_CFG_SIZE];
        out[0..8].copy_from_slice(&self.addr.as_u64().to_be_bytes());
        out[8..12].copy_from_slice(&self.fourcc.to_be_bytes());
        out[12..16].copy_from_slice(&self.flags.to_be_bytes());
        out[16..20].copy_from_slice(&self.width.to_be_bytes());
        out[20..24].copy_from_slice(&self.height.to_be_bytes());
        out[24..28].copy_from_slice(&self.stride.to_be_bytes());
        out
    }
}

/// The mode sizes `parse_mode` accepts, per side: ramfb refuses less than 16 pixels, and
/// 4096 keeps a 32-bit buffer at 64 MiB.
pub const MODE_RANGE: core::ops::RangeInclusive<u32> = 16..=4096;

/// A `WxH` mode (the `screen=` boot argument), both sides in [`MODE_RANGE`].
pub fn parse_mode(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    let side = |v: &str| {
        // Plain decimal digits only: no sign, no spaces.
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse::<u32>().ok().filter(|n| MODE_RANGE.contains(n))
    };
    Some((side(w)?, side(h)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn entry(name: &str, size: u32, select: u16) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&size.to_be_bytes());
        e.extend_from_slice(&select.to_be_bytes());
        e.extend_from_slice(&[0, 0]);
        let mut n = [0u8; FILE_NAME_SIZE];
        n[..name.len()].copy_from_slice(name.as_bytes());
        e.extend_from_slice(&n);
        e
    }

    fn dir(entries: &[(&str, u32, u16)], count: u32) -> Vec<u8> {
        let mut d = count.to_be_bytes().to_vec();
        for &(n, s, k) in entries {
            d.extend(entry(n, s, k));
        }
        d
    }

    #[test]
    fn the_ramfb_file_is_found_by_name() {
        let d = dir(
            &[
                ("bootorder", 0, 0x20),
                ("etc/ramfb", 28, 0x27),
                ("etc/ramfb2", 4, 0x28),
            ],
            3,
        );
        assert_eq!(
            find_file(&d, RAMFB_FILE),
            Ok(Some(File {
                size: 28,
                select: 0x27
            }))
        );
        assert_eq!(find_file(&d, "etc/none"), Ok(None));
    }

    #[test]
    fn a_count_past_the_data_reads_only_the_data() {
        let d = dir(&[("etc/ramfb", 28, 0x27)], 1000);
        assert_eq!(find_file(&d, RAMFB_FILE).unwrap().unwrap().select, 0x27);
        // Fewer entries than the data holds: the rest is not looked at.
        let d = dir(&[("a", 1, 1), ("etc/ramfb", 28, 0x27)], 1);
        assert_eq!(find_file(&d, RAMFB_FILE), Ok(None));
        assert_eq!(find_file(&[0, 0], RAMFB_FILE), Err(DirError::Short));
        // A truncated entry is ignored, never read past.
        let mut d = dir(&[("etc/ramfb", 28, 0x27)], 2);
        d.truncate(4 + 40);
        assert_eq!(find_file(&d, RAMFB_FILE), Ok(None));
    }

    #[test]
    fn entries_decode_big_endian_with_nul_padded_names() {
        let e = entry("etc/ramfb", 0x0102_0304, 0x0506);
        let (name, f) = parse_entry(&e).unwrap();
        assert_eq!(name, "etc/ramfb");
        assert_eq!(f.size, 0x0102_0304);
        assert_eq!(f.select, 0x0506);
        assert_eq!(parse_entry(&e[..63]), None);
        let mut bad = e.clone();
        bad[8] = 0xff;
        assert_eq!(parse_entry(&bad), None);
    }

    #[test]
    fn ramfb_cfg_is_28_big_endian_bytes() {
        let cfg = RamfbCfg {
            addr: PhysAddr::new(0x0000_0001_4800_0000),
            fourcc: 0x3432_5258,
            flags: 0,
            width: 1024,
            height: 768,
            stride: 4096,
        };
        assert_eq!(
            cfg.encode(),
            [
                0x00, 0x00, 0x00, 0x01, 0x48, 0x00, 0x00, 0x00, // addr
                0x34, 0x32, 0x52, 0x58, // fourcc "XR24" read as a BE32
                0, 0, 0, 0, // flags
                0x00, 0x00, 0x04, 0x00, // width
                0x00, 0x00, 0x03, 0x00, // height
                0x00, 0x00, 0x10, 0x00, // stride
            ]
        );
    }

    #[test]
    fn dma_access_is_big_endian() {
        let c = select_write(0x0027);
        assert_eq!(c, 0x0027_0018);
        assert_eq!(
            dma_access(c, 28, PhysAddr::new(0x4000_1000)),
            [0x00, 0x27, 0x00, 0x18, 0, 0, 0, 28, 0, 0, 0, 0, 0x40, 0x00, 0x10, 0x00]
        );
    }

    #[test]
    fn modes_parse_within_range() {
        assert_eq!(parse_mode("1024x768"), Some((1024, 768)));
        assert_eq!(parse_mode("1080x2400"), Some((1080, 2400)));
        assert_eq!(parse_mode("16x4096"), Some((16, 4096)));
        for bad in [
            "",
            "x",
            "1024",
            "1024x",
            "x768",
            "15x768",
            "1024x4097",
            "+1024x768",
            "1024x-1",
            "1024 x768",
            "1024x768x2",
            "99999999999x1",
        ] {
            assert_eq!(parse_mode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn xr24_is_the_x8r8g8b8_fourcc() {
        use crate::dtb::framebuffer::PixelFormat;
        assert_eq!(PixelFormat::X8R8G8B8.fourcc(), 0x3432_5258);
    }
}
