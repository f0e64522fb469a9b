//! `screen`: what the screen console is (mode, format, where, how it is mapped, the font and
//! text grid), and a fresh draw of its status band and memory strip.

use super::CmdError;
use crate::println;
use crate::screen::{self, Kind};
use levitate_hal::arch::aarch64::mmu::MemoryKind;
use levitate_mm::report::Size;

/// `screen`: the report, then the band and strip redrawn.
pub fn screen(args: &[&str]) -> Result<(), CmdError> {
    if !args.is_empty() {
        return Err(CmdError::Usage);
    }
    let Some(info) = screen::info() else {
        println!(
            "screen: no screen ({})",
            screen::why_none().unwrap_or("not set up")
        );
        return Ok(());
    };
    let bytes = u64::from(info.stride) * u64::from(info.height);
    println!(
        "mode:     {}x{} {}, stride {} bytes ({} bytes per pixel)",
        info.width,
        info.height,
        info.format,
        info.stride,
        info.format.bytes_per_pixel()
    );
    println!(
        "buffer:   {:#x}-{:#x} ({})",
        info.base.as_u64(),
        info.base.as_u64() + bytes - 1,
        Size(bytes)
    );
    let source = match info.kind {
        Kind::SimpleFramebuffer(_) => "the device tree's node",
        Kind::Board(_) => "the board entry: the tree has no framebuffer node",
        Kind::Ramfb(_) => "QEMU fw_cfg etc/ramfb, set up by the kernel",
    };
    println!("source:   {}, {source}", screen::kind_name(info.kind));
    if let Kind::Ramfb(select) = info.kind {
        println!("          fw_cfg key {select:#06x}");
    }
    let how = match (info.memory, info.clean) {
        (MemoryKind::NormalUncached, _) => " (non-cacheable)",
        (_, true) => " (write-back), cleaned to PoC after each copy",
        (_, false) => " (write-back; QEMU reads guest RAM coherently, no clean needed)",
    };
    println!("mapping:  {:#x}, {}{how}", info.va.as_u64(), info.memory);
    println!("drawing:  into a cacheable shadow; changed rows copied to the buffer");
    let l = info.layout;
    println!(
        "font:     noto-sans-mono-bitmap {}x{} (regular)",
        l.glyph_width,
        l.font.val()
    );
    println!(
        "text:     {} columns x {} rows from pixel row {}, column {}",
        l.grid.0, l.grid.1, l.text_top, l.text_left
    );
    if let (Some(band), Some(strip)) = (l.band, l.strip) {
        println!(
            "band:     pixel rows {}-{}; memory strip {}-{}",
            band.0,
            band.0 + band.1 - 1,
            strip.0,
            strip.0 + strip.1 - 1
        );
    }
    screen::refresh_status();
    screen::redraw_memory();
    Ok(())
}
