//! In-kernel tests of the screen console. The ktest matrix boots without `-device ramfb`, so
//! each test checks what holds without a screen too (boot decided and said why; the window
//! maps; the command answers) and, with a screen, reads the shadow and the scan-out buffer
//! back.

use super::*;
use levitate_hal::{kassert, kassert_eq};
use levitate_screen::text::{self, Pen};
use levitate_screen::{palette, RasterHeight};

/// Pixel bytes of `c` drawn alone in one cell, as the text area draws it.
fn reference_cell(c: char, size: RasterHeight, format: PixelFormat) -> Vec<u8> {
    let (w, h) = (text::glyph_width(size), size.val());
    let stride = w * format.bytes_per_pixel() as usize;
    let mut buf = alloc::vec![0u8; stride * h];
    let mut s = Surface::new(&mut buf, w, h, stride, format).expect("a cell-sized surface");
    let pen = Pen {
        size,
        fg: palette::FG,
        bg: palette::BG,
    };
    text::draw_glyph(&mut s, 0, 0, c, pen);
    buf
}

/// Whether the cell at (`col`, `row`) of the text area holds `expected` in `bytes` (a buffer
/// laid out like the screen).
fn cell_matches(info: &Info, bytes: &[u8], col: usize, row: usize, expected: &[u8]) -> bool {
    let l = info.layout;
    let bpp = info.format.bytes_per_pixel() as usize;
    let cell_w = l.glyph_width * bpp;
    let x = (l.text_left + col * l.glyph_width) * bpp;
    (0..l.font.val()).all(|dy| {
        let y = l.text_top + row * l.font.val() + dy;
        let at = y * info.stride as usize + x;
        bytes.get(at..at + cell_w) == expected.get(dy * cell_w..(dy + 1) * cell_w)
    })
}

levitate_hal::ktest!(
    fn console_text_lands_in_the_shadow_and_the_scanout_buffer() -> KtestResult {
        let Some(info) = info() else {
            // No screen: boot must have decided so and said why.
            kassert!(why_none().is_some(), "no screen and no reason recorded");
            kassert!(mirror(false).is_none(), "a mirror without a screen");
            return Ok(());
        };
        const MARKER: &str = "Wq#8";
        crate::print!("\nscreen ktest {MARKER}");
        sync();
        let found = {
            let mut guard = SCREEN.lock();
            let state = guard.as_mut().expect("info is set only with a state");
            let (col, row) = state.screen.text().cursor();
            let start = col - MARKER.len();
            // SAFETY: the scan-out mapping holds `bytes` bytes for the kernel's lifetime;
            // read under the lock that serialises every writer.
            let scanout = unsafe { core::slice::from_raw_parts(state.scanout, state.bytes) };
            let shadow = state.screen.surface().bytes();
            // The shadow holds the text rows rotated (ring mode); the scan-out buffer in order.
            let stored = state.screen.text().stored_row(row);
            MARKER.chars().enumerate().all(|(i, c)| {
                let want = reference_cell(c, info.layout.font, info.format);
                cell_matches(info, shadow, start + i, stored, &want)
                    && cell_matches(info, scanout, start + i, row, &want)
            })
        };
        crate::println!();
        kassert!(found, "the marker's cells differ from the reference glyphs");
        Ok(())
    }
);

levitate_hal::ktest!(
    fn the_screen_window_maps_memory_non_cacheable() -> KtestResult {
        if let Some(info) = info() {
            let t = paging::translate(info.va);
            kassert!(
                t.is_some_and(|t| t.pa == info.base
                    && t.attrs.kind == info.memory
                    && t.attrs.writable
                    && !t.attrs.executable),
                "the framebuffer's mapping is not what `screen` reports"
            );
        }
        // The window itself, with or without a screen: a frame mapped Normal Non-cacheable
        // far above any framebuffer reads back what was written.
        let run = frames::alloc_frames(1, levitate_mm::buddy::Owner::Test, true);
        kassert!(run.is_ok(), "no frame for the test");
        let run = run.unwrap();
        let va = VirtAddr::new(layout::SCREEN_BASE + layout::SCREEN_SIZE - PAGE_SIZE);
        let attrs = Attributes {
            kind: MemoryKind::NormalUncached,
            writable: true,
            executable: false,
        };
        kassert!(paging::map(va, run.addr, PAGE_SIZE, attrs).is_ok());
        let t = paging::translate(va);
        kassert!(t.is_some_and(|t| t.attrs.kind == MemoryKind::NormalUncached));
        let p = va.as_u64() as *mut u32;
        // SAFETY: the page was just mapped to a frame allocated for this test.
        let back = unsafe {
            p.write_volatile(0x00c0_ffee);
            p.read_volatile()
        };
        kassert_eq!(back, 0x00c0_ffee);
        kassert!(paging::unmap(va, PAGE_SIZE).is_ok());
        kassert!(frames::free_frames(run.addr, 1).is_ok());
        Ok(())
    }
);

levitate_hal::ktest!(
    fn the_status_band_is_redrawn_from_the_tick() -> KtestResult {
        let Some(info) = info() else { return Ok(()) };
        let Some((top, h)) = info.layout.band else {
            return Ok(());
        };
        if crate::tick::hz().is_none() {
            return Ok(()); // no tick, no redraw
        }
        let band = |state: &State| {
            let s = info.stride as usize;
            state.screen.surface().bytes()[top * s..(top + h) * s].to_vec()
        };
        let before = band(SCREEN.lock().as_ref().expect("state"));
        // The uptime shows tenths of a second and the hook redraws every half second: the
        // band changes within a few seconds however slow the host is.
        let start = timer::ticks();
        let mut changed = false;
        while !changed && timer::ticks().wrapping_sub(start) < timer::frequency() * 5 {
            aarch64_cpu::asm::wfe();
            changed = band(SCREEN.lock().as_ref().expect("state")) != before;
        }
        kassert!(changed, "the band was not redrawn in 5 s");
        // Its background is the band colour.
        let raw = SCREEN
            .lock()
            .as_ref()
            .and_then(|s| s.screen.surface().raw(info.width as usize - 1, top));
        kassert_eq!(
            raw,
            Some(
                info.format
                    .encode(palette::BAND.0, palette::BAND.1, palette::BAND.2)
            )
        );
        Ok(())
    }
);

levitate_hal::ktest!(
    fn owner_samples_cover_usable_memory_only() -> KtestResult {
        let map = physmem::map();
        let ram = ram_banks(&map);
        let usable: Vec<Region> = map.usable().to_vec();
        drop(map);
        let spans = sample_owners(&ram, &usable, 640);
        kassert!(!spans.is_empty(), "no usable memory sampled");
        kassert!(
            spans.iter().any(|s| s.kind == SpanKind::Free),
            "no free column"
        );
        for s in &spans {
            kassert!(
                usable.iter().any(|u| u.contains(s.base & !(PAGE_SIZE - 1))),
                "a span starts outside usable memory"
            );
        }
        Ok(())
    }
);

levitate_hal::ktest!(
    fn the_screen_command_takes_no_arguments() -> KtestResult {
        let cmd = crate::shell::find("screen");
        kassert!(cmd.is_some(), "no screen command");
        let cmd = cmd.unwrap();
        kassert!(matches!(
            (cmd.run)(&["1024x768"]),
            Err(crate::shell::CmdError::Usage)
        ));
        // With or without a screen, the report itself succeeds.
        kassert!((cmd.run)(&[]).is_ok());
        Ok(())
    }
);
