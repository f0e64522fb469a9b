//! Android boot images for the Pixel 6 (`cargo xtask image`), and the fastboot flow that boots
//! them (`cargo xtask boot`, in [`boot`]).
//!
//! Layouts follow AOSP `system/tools/mkbootimg` `include/bootimg/bootimg.h`:
//!
//! ```text
//! boot.img v4         header (1584 bytes) | kernel | ramdisk            each padded to 4096
//! vendor_boot.img v4  header (2128 bytes) | vendor ramdisks | dtb | vendor ramdisk table
//!                     | bootconfig (empty)                              each padded to 4096
//! ```
//!
//! The kernel is the arm64 Image compressed as the stock `Image.lz4` is (LZ4 legacy frame), or
//! gzip, or raw; the ramdisk is the initramfs CPIO in an LZ4 legacy frame, like the stock
//! ramdisks (the bootloader concatenates the vendor ramdisks and the boot ramdisk, and the
//! kernel decompresses what it is given: kernel/src/initramfs.rs).

pub mod boot;

use crate::{bail, kernel, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Every section of a v3/v4 boot image starts on a 4096-byte page (bootimg.h `page_size`
/// is fixed for boot v3+; vendor_boot states it and mkbootimg uses 4096).
pub const PAGE: usize = 4096;
/// `boot_img_hdr_v4` size: the v3 header (1580) plus `signature_size`.
pub const BOOT_HEADER_SIZE: usize = 1584;
/// `vendor_boot_img_hdr_v4` size: the v3 header (2112) plus the ramdisk table and bootconfig
/// fields.
pub const VENDOR_HEADER_SIZE: usize = 2128;
/// `vendor_ramdisk_table_entry_v4`: size, offset, type, name[32], board_id[16] (u32s).
pub const RAMDISK_ENTRY_SIZE: usize = 108;
/// `BOOT_ARGS_SIZE + BOOT_EXTRA_ARGS_SIZE` (boot v3/v4 `cmdline`).
const BOOT_CMDLINE_SIZE: usize = 512 + 1024;
/// `VENDOR_BOOT_ARGS_SIZE`.
const VENDOR_CMDLINE_SIZE: usize = 2048;
/// `VENDOR_RAMDISK_TYPE_PLATFORM`: the type mkbootimg gives a plain `--vendor_ramdisk`.
const RAMDISK_TYPE_PLATFORM: u32 = 1;
/// The Pixel 6's boot_a/boot_b and vendor_boot_a/_b partitions are 64 MiB each.
pub const PARTITION_SIZE: usize = 64 << 20;
/// A device tree the kernel accepts is at most 2 MiB (booting.rst).
const DTB_MAX: usize = 2 << 20;

/// `os_version`: Android 12.0.0, patch level 2021-10, the release the Pixel 6 shipped with.
/// bootimg.h: `(A << 14 | B << 7 | C) << 11 | (Y - 2000) << 4 | M`.
pub const OS_VERSION: u32 = ((12 << 14) << 11) | ((2021 - 2000) << 4) | 10;

/// mkbootimg's default load addresses (base 0x10000000 plus its default offsets). The Pixel
/// bootloader places the images itself; the fields are filled as mkbootimg fills them.
const KERNEL_ADDR: u32 = 0x1000_8000;
const RAMDISK_ADDR: u32 = 0x1100_0000;
const TAGS_ADDR: u32 = 0x1000_0100;
const DTB_ADDR: u64 = 0x11f0_0000;

/// The arm64 Image's magic ("ARM\x64") sits at 0x38; `image_size` at 0x10 (booting.rst).
const ARM64_MAGIC_AT: usize = 0x38;

/// How the kernel is stored in boot.img.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// LZ4 legacy frame, as the stock `Image.lz4`.
    Lz4,
    /// gzip (`Image.gz`).
    Gz,
    /// The Image as it is.
    Raw,
}

impl KernelFormat {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "lz4" => Self::Lz4,
            "gz" => Self::Gz,
            "raw" => Self::Raw,
            other => bail!("unknown kernel format `{other}` (lz4, gz or raw)"),
        })
    }
}

/// The boards `--board` names. The kernel binary is the same for both; the board decides
/// only what xtask packs and how it boots it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Board {
    /// QEMU virt.
    Qemu,
    /// Google Pixel 6 (oriole, gs101).
    Pixel6,
}

impl Board {
    /// Parses a `--board` value.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "qemu" => Self::Qemu,
            "pixel6" => Self::Pixel6,
            other => bail!("unknown board `{other}` (qemu or pixel6)"),
        })
    }

    /// The board's name as `--board` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Pixel6 => "pixel6",
        }
    }
}

/// Where `cargo xtask image --board BOARD` writes.
pub fn out_dir(board: Board) -> PathBuf {
    crate::target_dir().join("levitate").join(board.name())
}

/// The mainline device tree for the Pixel 6: the project's own copy of
/// ../shared/dtbs/gs101-oriole.dtb (byte for byte), so a fresh clone has it.
pub fn default_dtb() -> PathBuf {
    crate::workspace_root().join("levitate-mm/tests/dtbs/gs101-oriole.dtb")
}

/// An LZ4 legacy frame (lz4 `-l`, as Linux's `unlz4` and the stock `Image.lz4` have it):
/// the magic 0x184C2102, then per 8 MiB of input a 4-byte little-endian compressed size and
/// one independent LZ4 block.
pub fn lz4_legacy(data: &[u8]) -> Vec<u8> {
    let mut out = levitate_mm::lz4::LEGACY_MAGIC.to_le_bytes().to_vec();
    for chunk in data.chunks(levitate_mm::lz4::LEGACY_BLOCK_MAX) {
        let block = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// gzip at the best compression.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Checks that `image` is an arm64 Image and stores it in `format`.
pub fn pack_kernel(image: &[u8], format: KernelFormat) -> Result<Vec<u8>> {
    if image.get(ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4) != Some(b"ARM\x64") {
        bail!("the kernel is not an arm64 Image (no \"ARM\\x64\" magic at 0x38)");
    }
    Ok(match format {
        KernelFormat::Lz4 => lz4_legacy(image),
        KernelFormat::Gz => gzip(image)?,
        KernelFormat::Raw => image.to_vec(),
    })
}

fn pad_to_page(v: &mut Vec<u8>) {
    v.resize(v.len().next_multiple_of(PAGE), 0);
}

fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// A NUL-terminated string field of `size` bytes.
fn put_str(v: &mut Vec<u8>, what: &str, s: &str, size: usize) -> Result<()> {
    if s.len() >= size {
        bail!(
            "the {what} is {} bytes; the field holds at most {}",
            s.len(),
            size - 1
        );
    }
    if s.contains('\0') {
        bail!("the {what} contains a NUL byte");
    }
    v.extend_from_slice(s.as_bytes());
    v.resize(v.len() + size - s.len(), 0);
    Ok(())
}

fn size_u32(what: &str, len: usize) -> Result<u32> {
    u32::try_from(len)
        .map_err(|_| format!("the {what} ({len} bytes) does not fit a u32 size").into())
}

fn fits_partition(what: &str, image: &[u8]) -> Result<()> {
    if image.len() > PARTITION_SIZE {
        bail!(
            "{what} would be {} bytes ({:.1} MiB), more than the {} MiB partition",
            image.len(),
            image.len() as f64 / f64::from(1u32 << 20),
            PARTITION_SIZE >> 20
        );
    }
    Ok(())
}

/// A boot image, header version 4 (`boot_img_hdr_v4`).
pub fn boot_image(kernel: &[u8], ramdisk: &[u8], cmdline: &str) -> Result<Vec<u8>> {
    // Refuse before copying hundreds of MiB around.
    let total = PAGE + kernel.len().next_multiple_of(PAGE) + ramdisk.len().next_multiple_of(PAGE);
    if total > PARTITION_SIZE {
        bail!(
            "boot.img would be {total} bytes ({:.1} MiB: kernel {} bytes, ramdisk {} bytes), more than the {} MiB boot partition",
            total as f64 / f64::from(1u32 << 20),
            kernel.len(),
            ramdisk.len(),
            PARTITION_SIZE >> 20
        );
    }
    let mut v = Vec::with_capacity(total);
    v.extend_from_slice(b"ANDROID!");
    put_u32(&mut v, size_u32("kernel", kernel.len())?);
    put_u32(&mut v, size_u32("ramdisk", ramdisk.len())?);
    put_u32(&mut v, OS_VERSION);
    put_u32(&mut v, BOOT_HEADER_SIZE as u32);
    for _ in 0..4 {
        put_u32(&mut v, 0); // reserved
    }
    debug_assert_eq!(v.len(), 0x28);
    put_u32(&mut v, 4); // header_version
    put_str(&mut v, "boot.img command line", cmdline, BOOT_CMDLINE_SIZE)?;
    put_u32(&mut v, 0); // signature_size: no boot signature section
    debug_assert_eq!(v.len(), BOOT_HEADER_SIZE);
    pad_to_page(&mut v);
    v.extend_from_slice(kernel);
    pad_to_page(&mut v);
    v.extend_from_slice(ramdisk);
    pad_to_page(&mut v);
    fits_partition("boot.img", &v)?;
    Ok(v)
}

/// A vendor boot image, header version 4 (`vendor_boot_img_hdr_v4`), with one platform
/// vendor ramdisk and the device tree.
pub fn vendor_boot_image(dtb: &[u8], vendor_ramdisk: &[u8], cmdline: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.extend_from_slice(b"VNDRBOOT");
    put_u32(&mut v, 4); // header_version
    put_u32(&mut v, PAGE as u32);
    put_u32(&mut v, KERNEL_ADDR);
    put_u32(&mut v, RAMDISK_ADDR);
    put_u32(&mut v, size_u32("vendor ramdisk", vendor_ramdisk.len())?);
    put_str(
        &mut v,
        "vendor_boot command line",
        cmdline,
        VENDOR_CMDLINE_SIZE,
    )?;
    put_u32(&mut v, TAGS_ADDR);
    put_str(&mut v, "board name", "", 16)?;
    put_u32(&mut v, VENDOR_HEADER_SIZE as u32);
    put_u32(&mut v, size_u32("dtb", dtb.len())?);
    v.extend_from_slice(&DTB_ADDR.to_le_bytes());
    put_u32(&mut v, RAMDISK_ENTRY_SIZE as u32); // vendor_ramdisk_table_size: one entry
    put_u32(&mut v, 1); // vendor_ramdisk_table_entry_num
    put_u32(&mut v, RAMDISK_ENTRY_SIZE as u32);
    put_u32(&mut v, 0); // bootconfig_size
    debug_assert_eq!(v.len(), VENDOR_HEADER_SIZE);
    pad_to_page(&mut v);
    v.extend_from_slice(vendor_ramdisk);
    pad_to_page(&mut v);
    v.extend_from_slice(dtb);
    pad_to_page(&mut v);
    let table_at = v.len();
    put_u32(&mut v, vendor_ramdisk.len() as u32); // ramdisk_size
    put_u32(&mut v, 0); // ramdisk_offset within the vendor ramdisk section
    put_u32(&mut v, RAMDISK_TYPE_PLATFORM);
    put_str(&mut v, "ramdisk name", "", 32)?;
    v.resize(v.len() + 16 * 4, 0); // board_id: any board
    debug_assert_eq!(v.len() - table_at, RAMDISK_ENTRY_SIZE);
    pad_to_page(&mut v);
    fits_partition("vendor_boot.img", &v)?;
    Ok(v)
}

/// Reads `path` as a device tree for vendor_boot: it must parse as a flattened device tree no
/// larger than the kernel accepts. Returns the blob and a warning for the bootloader quirk
/// of a tree without `/chosen/bootargs`.
pub fn read_dtb(path: &Path) -> Result<(Vec<u8>, Option<String>)> {
    let blob = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let fdt = fdt::Fdt::new(&blob)
        .map_err(|e| format!("{} is not a device tree: {e:?}", path.display()))?;
    if fdt.total_size() != blob.len() {
        bail!(
            "{} is not a device tree: its header says {} bytes, the file has {}",
            path.display(),
            fdt.total_size(),
            blob.len()
        );
    }
    if blob.len() > DTB_MAX {
        bail!(
            "{} is {} bytes; the kernel takes a device tree of at most 2 MiB",
            path.display(),
            blob.len()
        );
    }
    let warning = fdt
        .find_node("/chosen")
        .and_then(|c| c.property("bootargs"))
        .is_none()
        .then(|| {
            format!(
                "{} has no /chosen/bootargs; some Pixel bootloader versions expect one",
                path.display()
            )
        });
    Ok((blob, warning))
}

/// What `image` builds.
#[derive(Clone, Debug)]
pub struct ImageOptions {
    pub board: Board,
    pub format: KernelFormat,
    pub vendor_boot: bool,
    pub dtb: Option<PathBuf>,
    pub cmdline: String,
    pub release: bool,
    /// A prebuilt arm64 Image instead of building one.
    pub kernel: Option<PathBuf>,
    /// A CPIO archive instead of the packed `initramfs/`.
    pub initrd: Option<PathBuf>,
    /// Where to write instead of `target/levitate/BOARD`.
    pub out: Option<PathBuf>,
}

impl ImageOptions {
    /// Parses `image`'s (and `boot`'s) options.
    pub fn parse(parser: &mut lexopt::Parser, usage: &str) -> Result<Self> {
        use lexopt::ValueExt;
        let mut o = ImageOptions {
            board: Board::Qemu,
            format: KernelFormat::Lz4,
            vendor_boot: false,
            dtb: None,
            cmdline: String::new(),
            release: false,
            kernel: None,
            initrd: None,
            out: None,
        };
        while let Some(arg) = parser.next()? {
            match arg {
                lexopt::Arg::Long("board") => o.board = Board::parse(&parser.value()?.string()?)?,
                lexopt::Arg::Long("kernel-format") => {
                    o.format = KernelFormat::parse(&parser.value()?.string()?)?
                }
                lexopt::Arg::Long("vendor-boot") => o.vendor_boot = true,
                lexopt::Arg::Long("dtb") => o.dtb = Some(parser.value()?.into()),
                lexopt::Arg::Long("cmdline") => o.cmdline = parser.value()?.string()?,
                lexopt::Arg::Long("release") => o.release = true,
                lexopt::Arg::Long("kernel") => o.kernel = Some(parser.value()?.into()),
                lexopt::Arg::Long("initrd") => o.initrd = Some(parser.value()?.into()),
                lexopt::Arg::Long("out") => o.out = Some(parser.value()?.into()),
                other => bail!("{} (usage: {usage})", other.unexpected()),
            }
        }
        let pixel_only = o.vendor_boot || o.dtb.is_some() || !o.cmdline.is_empty();
        if o.board == Board::Qemu && pixel_only {
            bail!("--vendor-boot, --dtb and --cmdline are for --board pixel6");
        }
        Ok(o)
    }
}

/// What `image` wrote.
pub struct Written {
    /// boot.img (pixel6 only).
    pub boot: Option<PathBuf>,
    /// vendor_boot.img (with `--vendor-boot`).
    pub vendor_boot: Option<PathBuf>,
}

/// Builds (or takes) the kernel and writes the board's images.
pub fn make(o: &ImageOptions) -> Result<Written> {
    let kernel_image = match &o.kernel {
        Some(k) => k.clone(),
        None => {
            kernel::build(kernel::Variant {
                release: o.release,
                ktest: false,
            })?
            .image
        }
    };
    let initrd = match &o.initrd {
        Some(i) => i.clone(),
        None => crate::initramfs::default_archive()?,
    };
    let out = o.out.clone().unwrap_or_else(|| out_dir(o.board));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let image = read(&kernel_image)?;
    let cpio = read(&initrd)?;
    // The archive is checked with the kernel's own reader, as `run --initrd` does.
    levitate_mm::cpio::Archive::open(&cpio, levitate_mm::cpio::Checksums::Verify)
        .map_err(|e| format!("{}: {e}", initrd.display()))?;
    let mut written = Written {
        boot: None,
        vendor_boot: None,
    };
    match o.board {
        Board::Qemu => {
            pack_kernel(&image, KernelFormat::Raw)?;
            let (k, i) = (out.join("Image"), out.join("initramfs.cpio"));
            std::fs::write(&k, &image)?;
            std::fs::write(&i, &cpio)?;
            eprintln!(
                "xtask: {} and {} (boot with: qemu-system-aarch64 -M virt -cpu cortex-a76 -kernel Image -initrd initramfs.cpio, or cargo xtask run)",
                k.display(),
                i.display()
            );
        }
        Board::Pixel6 => {
            // Check the tree before the long part, so a bad --dtb fails at once.
            let dtb = if o.vendor_boot {
                let path = o.dtb.clone().unwrap_or_else(default_dtb);
                let (blob, warning) = read_dtb(&path)?;
                if let Some(w) = warning {
                    eprintln!("xtask: warning: {w}");
                }
                Some((path, blob))
            } else {
                if o.dtb.is_some() {
                    bail!("--dtb goes into vendor_boot.img: add --vendor-boot");
                }
                None
            };
            let packed = pack_kernel(&image, o.format)?;
            let ramdisk = lz4_legacy(&cpio);
            let boot = boot_image(&packed, &ramdisk, &o.cmdline)?;
            let path = out.join("boot.img");
            std::fs::write(&path, &boot)?;
            eprintln!(
                "xtask: {} ({} KiB: kernel {:?} {} KiB from {} KiB, ramdisk LZ4 {} KiB)",
                path.display(),
                boot.len() / 1024,
                o.format,
                packed.len() / 1024,
                image.len() / 1024,
                ramdisk.len() / 1024
            );
            written.boot = Some(path);
            if let Some((dtb_path, blob)) = dtb {
                // The vendor ramdisk is an empty archive (the trailer alone): the boot
                // ramdisk after it carries the files.
                let empty = crate::initramfs::pack_entries(&[])?;
                let vendor = vendor_boot_image(&blob, &lz4_legacy(&empty), "")?;
                let path = out.join("vendor_boot.img");
                std::fs::write(&path, &vendor)?;
                eprintln!(
                    "xtask: {} ({} KiB, device tree {})",
                    path.display(),
                    vendor.len() / 1024,
                    dtb_path.display()
                );
                written.vendor_boot = Some(path);
            }
        }
    }
    Ok(written)
}

const IMAGE_USAGE: &str = "cargo xtask image [--board qemu|pixel6] [--kernel-format lz4|gz|raw] \
[--vendor-boot] [--dtb FILE] [--cmdline ARGS] [--release] [--kernel IMAGE] [--initrd CPIO] [--out DIR]";

/// `cargo xtask image`.
pub fn image_cli(parser: &mut lexopt::Parser) -> Result<ExitCode> {
    let o = ImageOptions::parse(parser, IMAGE_USAGE)?;
    make(&o)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_image(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4].copy_from_slice(b"ARM\x64");
        v
    }

    fn u32_at(v: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(v[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn boot_image_fields_sit_where_bootimg_h_puts_them() {
        let kernel = fake_image(5000);
        let img = boot_image(&kernel, b"rd", "console=ttySAC0").unwrap();
        assert_eq!(&img[..8], b"ANDROID!");
        assert_eq!(u32_at(&img, 8), 5000);
        assert_eq!(u32_at(&img, 12), 2);
        assert_eq!(u32_at(&img, 16), OS_VERSION);
        assert_eq!(u32_at(&img, 20), 1584);
        assert_eq!(u32_at(&img, 0x28), 4);
        assert_eq!(&img[44..59], b"console=ttySAC0");
        assert_eq!(u32_at(&img, 1580), 0);
        // Header page, two kernel pages, one ramdisk page.
        assert_eq!(img.len(), 4 * PAGE);
        assert_eq!(&img[PAGE..PAGE + 5000], &kernel[..]);
        assert_eq!(&img[3 * PAGE..3 * PAGE + 2], b"rd");
    }

    #[test]
    fn vendor_boot_fields_sit_where_bootimg_h_puts_them() {
        let img = vendor_boot_image(b"DTB!", b"ramdisk", "").unwrap();
        assert_eq!(&img[..8], b"VNDRBOOT");
        assert_eq!(u32_at(&img, 8), 4);
        assert_eq!(u32_at(&img, 12), 4096);
        assert_eq!(u32_at(&img, 24), 7);
        assert_eq!(u32_at(&img, 2096), 2128);
        assert_eq!(u32_at(&img, 2100), 4);
        assert_eq!(u32_at(&img, 2112), 108);
        assert_eq!(u32_at(&img, 2116), 1);
        assert_eq!(u32_at(&img, 2120), 108);
        assert_eq!(u32_at(&img, 2124), 0);
        assert_eq!(&img[PAGE..PAGE + 7], b"ramdisk");
        assert_eq!(&img[2 * PAGE..2 * PAGE + 4], b"DTB!");
        assert_eq!(u32_at(&img, 3 * PAGE), 7);
        assert_eq!(u32_at(&img, 3 * PAGE + 8), RAMDISK_TYPE_PLATFORM);
        assert_eq!(img.len(), 4 * PAGE);
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let too_big = fake_image(PARTITION_SIZE);
        let err = boot_image(&too_big, b"", "").unwrap_err().0;
        assert!(err.contains("more than the 64 MiB boot partition"), "{err}");
        let err = pack_kernel(
            b"not a kernel, far too short for a header but long enough..........",
            KernelFormat::Lz4,
        )
        .unwrap_err()
        .0;
        assert!(err.contains("not an arm64 Image"), "{err}");
        let long = "x".repeat(1536);
        assert!(boot_image(&fake_image(64), b"", &long)
            .unwrap_err()
            .0
            .contains("at most 1535"));
        assert!(KernelFormat::parse("xz").is_err());
        assert!(Board::parse("pixel7").is_err());

        let dir = std::env::temp_dir().join(format!("xtask-bootimg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_a_tree = dir.join("garbage.dtb");
        std::fs::write(&not_a_tree, b"\xd0\x0d\xfe\xedgarbage").unwrap();
        let err = read_dtb(&not_a_tree).unwrap_err().0;
        assert!(err.contains("is not a device tree"), "{err}");
        let err = read_dtb(&dir.join("missing.dtb")).unwrap_err().0;
        assert!(err.contains("cannot read"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lz4_legacy_frames_decode_with_the_kernel_decoder() {
        let data: Vec<u8> = (0..20_000_000u32).map(|i| (i / 1000) as u8).collect();
        let frame = lz4_legacy(&data);
        assert_eq!(&frame[..4], &[0x02, 0x21, 0x4c, 0x18]);
        let len = levitate_mm::lz4::legacy_decoded_len(&frame).unwrap();
        let mut out = vec![0; len];
        levitate_mm::lz4::decode_legacy(&frame, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn the_mainline_tree_reads_as_a_device_tree() {
        let path = default_dtb();
        if path.exists() {
            let (blob, _) = read_dtb(&path).unwrap();
            assert!(blob.len() > 1000);
        }
    }
}
