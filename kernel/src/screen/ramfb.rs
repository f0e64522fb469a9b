//! QEMU's `ramfb` display: a framebuffer in guest RAM that the guest hands to QEMU by writing
//! a `RAMFBCfg` into the fw_cfg file `etc/ramfb` (hw/display/ramfb.c; QEMU docs/specs/
//! fw_cfg.rst). Used only when the tree describes no framebuffer. QEMU virt exposes fw_cfg
//! as `qemu,fw-cfg-mmio`, with the DMA interface; the file exists only when QEMU runs with
//! `-device ramfb`.
//!
//! Two steps, because of the boot order: `probe` (before the final page tables, so that the
//! registers can be `ioremap`ped and stay mapped) finds the device and the file; `configure`
//! (once frames exist) allocates the buffer and writes the record.

use crate::{devicetree, frames, memory};
use alloc::format;
use alloc::string::String;
use levitate_hal::arch::aarch64::mmu::early;
use levitate_hal::drivers::fw_cfg::{self, DmaError, FwCfg};
use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::buddy::Owner;
use levitate_mm::dtb::devices;
use levitate_mm::dtb::framebuffer::PixelFormat;
use levitate_mm::fw_cfg::{self as format, File, RamfbCfg, FILE_ENTRY_SIZE};
use spin::Mutex;

/// The device and its `etc/ramfb` file (when it has one). Boot takes it in `probe` and
/// `configure`, the in-kernel tests after boot; no interrupt handler ever does, so a plain
/// spin lock (no IRQ masking needed). Lock order: before the heap and frame locks (the DMA
/// frame is allocated while it is held); it is never taken under another lock.
static FOUND: Mutex<Option<(FwCfg, Option<File>, PhysAddr)>> = Mutex::new(None);

/// The mode the kernel asks for unless `screen=WxH` says otherwise. ramfb takes any size
/// from 16x16 up; 1024x768 is QEMU's usual default window and leaves 93 columns of 11x24
/// glyphs.
pub const DEFAULT_MODE: (u32, u32) = (1024, 768);
/// The format: XR24 (x8r8g8b8, little-endian), which ramfb's pixman table knows.
pub const FORMAT: PixelFormat = PixelFormat::X8R8G8B8;

/// Most directory entries read (QEMU virt has a few dozen files).
const MAX_FILES: u32 = 256;

/// How long a DMA transfer may take before it counts as failed.
const DMA_TIMEOUT_MS: u64 = 100;

/// Finds fw_cfg in the tree, maps its registers, checks the signature and the DMA feature and
/// looks `etc/ramfb` up. `Err` says why there is no ramfb, in words for the boot log.
pub fn probe() -> Result<(), String> {
    let fdt = devicetree::fdt();
    let found = devices::find_enabled(&fdt, fw_cfg::COMPATIBLE)
        .ok_or("no simple-framebuffer node and no qemu,fw-cfg-mmio device")?;
    if found.size < fw_cfg::MMIO_SIZE {
        return Err(format!(
            "fw_cfg at {} has {:#x} bytes of registers, fewer than {:#x}",
            found.phys,
            found.size,
            fw_cfg::MMIO_SIZE
        ));
    }
    let va = early::ioremap(found.phys, fw_cfg::MMIO_SIZE)
        .map_err(|e| format!("cannot map fw_cfg at {}: {e}", found.phys))?;
    // SAFETY: `va` maps the fw_cfg registers as Device memory for the kernel's lifetime
    // (ioremap windows are never unmapped and the final tables re-map them), and no other
    // driver uses this device.
    let dev = unsafe { FwCfg::new(va.as_u64() as usize) };
    if !dev.has_signature() {
        return Err(format!("fw_cfg at {}: no \"QEMU\" signature", found.phys));
    }
    if dev.features() & format::FEATURE_DMA == 0 {
        return Err(format!(
            "fw_cfg at {}: no DMA interface (ramfb is configured through DMA)",
            found.phys
        ));
    }
    let file = find_file(&dev, format::RAMFB_FILE);
    // Kept with or without the file: the in-kernel tests drive its DMA path.
    *FOUND.lock() = Some((dev, file, found.phys));
    let file = file.ok_or("fw_cfg has no etc/ramfb file: no display (QEMU needs -device ramfb)")?;
    if (file.size as usize) < format::RAMFB_CFG_SIZE {
        return Err(format!(
            "fw_cfg etc/ramfb is {} bytes, not {}",
            file.size,
            format::RAMFB_CFG_SIZE
        ));
    }
    Ok(())
}

/// Reads the directory entry by entry through the data register (no buffer for the whole of
/// it) and returns the named file.
fn find_file(dev: &FwCfg, wanted: &str) -> Option<File> {
    dev.select(format::KEY_FILE_DIR);
    let mut count = [0u8; 4];
    dev.read(&mut count);
    let count = format::dir_count(&count).ok()?.min(MAX_FILES);
    let mut entry = [0u8; FILE_ENTRY_SIZE];
    (0..count).find_map(|_| {
        dev.read(&mut entry);
        format::parse_entry(&entry)
            .filter(|(name, _)| *name == wanted)
            .map(|(_, f)| f)
    })
}

/// A configured ramfb: the buffer QEMU now shows.
pub struct Ramfb {
    /// The buffer's first byte.
    pub base: PhysAddr,
    /// Frames allocated for it.
    pub frames: u64,
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes per row.
    pub stride: u32,
    /// The file's key, for the report.
    pub select: u16,
}

/// Allocates a zeroed buffer (contiguous frames, owner DMA: the device reads them) and
/// writes its `RAMFBCfg` to `etc/ramfb`. `Ok(None)` when `probe` found no ramfb.
pub fn configure() -> Result<Option<Ramfb>, String> {
    let found = FOUND.lock();
    let Some((dev, Some(file), _)) = found.as_ref() else {
        return Ok(None);
    };
    let (dev, file) = (dev, *file);
    let (width, height) = crate::boot_info().args.screen.unwrap_or(DEFAULT_MODE);
    let stride = width * FORMAT.bytes_per_pixel();
    let bytes = u64::from(stride) * u64::from(height);
    let pages = bytes.div_ceil(PAGE_SIZE);
    let run = frames::alloc_frames(pages, Owner::Dma, true)
        .map_err(|e| format!("no {bytes:#x} bytes of contiguous frames for ramfb: {e}"))?;
    let cfg = RamfbCfg {
        addr: run.addr,
        fourcc: FORMAT.fourcc(),
        flags: 0,
        width,
        height,
        stride,
    };
    match write_file(dev, file.select, &cfg.encode()) {
        Ok(()) => Ok(Some(Ramfb {
            base: run.addr,
            frames: pages,
            width,
            height,
            stride,
            select: file.select,
        })),
        Err(e) => {
            let _ = frames::free_frames(run.addr, pages);
            Err(e)
        }
    }
}

/// Writes `data` to the item `select` by one DMA transfer. The descriptor and the data sit
/// in one frame of normal RAM (descriptor at 0, data at 64), which the device reads as a DMA
/// master; the frame is freed afterwards.
fn write_file(dev: &FwCfg, select: u16, data: &[u8]) -> Result<(), String> {
    const DATA_AT: u64 = 64;
    let run = frames::alloc_frames(1, Owner::Dma, true)
        .map_err(|e| format!("no frame for the fw_cfg DMA descriptor: {e}"))?;
    let va = memory::linear(run.addr);
    // SAFETY: a frame just allocated (zeroed) for this transfer alone, in the linear map;
    // `data` is 28 bytes, well inside it past the descriptor.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), va.add(DATA_AT as usize), data.len()) };
    let access = format::dma_access(
        format::select_write(select),
        data.len() as u32,
        run.addr + DATA_AT,
    );
    // SAFETY: `va` maps `run.addr` (normal memory, page aligned) for this call alone, and the
    // descriptor names the 28 bytes just written in the same frame.
    let result = unsafe { dev.dma(va, run.addr, access, DMA_TIMEOUT_MS) };
    let _ = frames::free_frames(run.addr, 1);
    result.map_err(|e| match e {
        DmaError::Device => format!("fw_cfg DMA write to key {select:#x} failed (device error)"),
        DmaError::Timeout => {
            format!("fw_cfg DMA write to key {select:#x} did not complete in {DMA_TIMEOUT_MS} ms")
        }
    })
}

levitate_hal::ktest!(
    fn a_dma_write_to_a_read_only_item_is_refused() -> KtestResult {
        // QEMU virt always has fw_cfg (with or without -device ramfb): its DMA path reports
        // the device's error bit as an error instead of hanging or claiming success.
        let found = FOUND.lock();
        let Some((dev, _, _)) = found.as_ref() else {
            return Ok(()); // not QEMU
        };
        let r = write_file(dev, format::KEY_SIGNATURE, b"nope");
        levitate_hal::kassert!(
            r.as_ref().is_err_and(|e| e.contains("(device error)")),
            "writing the signature item was not refused by the device"
        );
        levitate_hal::kassert!(dev.has_signature(), "the signature changed");
        Ok(())
    }
);
