//! The screen console, portable and host-tested: a text console over a framebuffer with a
//! status band (uptime, MemFree/MemTotal, pressure, CPUs online) on top and a strip beneath
//! it that draws the physical memory map as coloured spans. Everything is drawn from plain
//! values the caller passes in; nothing here knows the kernel, owns memory or uses `unsafe`.
//!
//! Layout, top to bottom: the band (one text row, inverse colours), a gap, the memory strip
//! (one text row high), a gap, then the text area down to the bottom edge.
//!
//! Its own crate rather than a module of levitate-mm: a font and a text console are not memory
//! management, and keeping them apart keeps levitate-mm small; it depends on levitate-mm only
//! for the [`PixelFormat`] of the device-tree binding.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod surface;
pub mod text;

#[cfg(test)]
mod tests;

pub use levitate_mm::dtb::framebuffer::PixelFormat;
pub use noto_sans_mono_bitmap::RasterHeight;
pub use surface::{Rgb, Surface, SurfaceError};
pub use text::TextArea;

use core::fmt::{self, Write};

/// Colours, matching `cargo xtask memmap --svg` (xtask/src/memmap.rs) where it has one.
pub mod palette {
    use super::Rgb;
    /// Text.
    pub const FG: Rgb = Rgb::hex(0xd0d0d0);
    /// Background.
    pub const BG: Rgb = Rgb::hex(0x101018);
    /// The status band's background.
    pub const BAND: Rgb = Rgb::hex(0x284868);
    /// The status band's text.
    pub const BAND_FG: Rgb = Rgb::hex(0xffffff);
    /// RAM not otherwise described (the SVG's bar, `#ddd`).
    pub const RAM: Rgb = Rgb::hex(0xdddddd);
    /// Usable and free (the SVG's usable, `#7c7`).
    pub const FREE: Rgb = Rgb::hex(0x77cc77);
    /// Reserved, mapped (the SVG's `#e93`).
    pub const RESERVED: Rgb = Rgb::hex(0xee9933);
    /// Reserved `no-map` (the SVG's `#d44`).
    pub const NO_MAP: Rgb = Rgb::hex(0xdd4444);
    /// The frame metadata array (the SVG's `#48c`).
    pub const MEM_MAP: Rgb = Rgb::hex(0x4488cc);
    /// The kernel image (the SVG draws it as reserved; the strip tells it apart).
    pub const KERNEL: Rgb = Rgb::hex(0x9966cc);
    /// Allocated frames, by owner index (cycled).
    pub const OWNERS: [Rgb; 6] = [
        Rgb::hex(0x226699),
        Rgb::hex(0xcccc44),
        Rgb::hex(0x44cccc),
        Rgb::hex(0xcc66aa),
        Rgb::hex(0x888888),
        Rgb::hex(0x66aa33),
    ];
}

/// The values the status band shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status<'a> {
    /// Milliseconds since boot.
    pub uptime_ms: u64,
    /// Free bytes.
    pub mem_free: u64,
    /// Total bytes.
    pub mem_total: u64,
    /// The pressure level's name.
    pub pressure: &'a str,
    /// CPUs online.
    pub cpus_online: u32,
    /// CPUs the tree describes.
    pub cpus_total: u32,
}

impl fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.uptime_ms / 1000;
        write!(
            f,
            "up {}:{:02}:{:02}.{}  MemFree {} / {}  pressure {}  CPUs {}/{}",
            s / 3600,
            s / 60 % 60,
            s % 60,
            self.uptime_ms % 1000 / 100,
            Mib(self.mem_free),
            Mib(self.mem_total),
            self.pressure,
            self.cpus_online,
            self.cpus_total
        )
    }
}

/// Bytes in MiB with one decimal.
struct Mib(u64);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = self.0 / (1 << 20) * 10 + self.0 % (1 << 20) * 10 / (1 << 20);
        write!(f, "{}.{} MiB", tenths / 10, tenths % 10)
    }
}

/// What a span of the memory strip is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// Reserved, mapped.
    Reserved,
    /// Reserved `no-map`.
    NoMap,
    /// The frame metadata array.
    MemMap,
    /// The kernel image.
    Kernel,
    /// Free in the page allocator.
    Free,
    /// Allocated, by owner index.
    Allocated(u8),
}

impl SpanKind {
    /// Its colour.
    pub fn colour(self) -> Rgb {
        match self {
            SpanKind::Reserved => palette::RESERVED,
            SpanKind::NoMap => palette::NO_MAP,
            SpanKind::MemMap => palette::MEM_MAP,
            SpanKind::Kernel => palette::KERNEL,
            SpanKind::Free => palette::FREE,
            SpanKind::Allocated(i) => palette::OWNERS[i as usize % palette::OWNERS.len()],
        }
    }
}

/// A range of physical memory and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub base: u64,
    /// Bytes.
    pub size: u64,
    /// What it is.
    pub kind: SpanKind,
}

/// A `fmt::Write` into a fixed buffer that drops what does not fit.
struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Line<N> {
    fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        // Only whole `&str`s are copied in, so this cannot fail; be safe anyway.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut b = [0; 4];
            let e = c.encode_utf8(&mut b);
            if self.len + e.len() > N {
                break;
            }
            self.buf[self.len..self.len + e.len()].copy_from_slice(e.as_bytes());
            self.len += e.len();
        }
        Ok(())
    }
}

/// Pixels between the band, the strip and the text.
const GAP: usize = 4;

/// Where everything goes on a `width` x `height` screen: what [`Screen::new`] uses, public
/// so that a host program (the screenshot tests) can find the text rows in a screenshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The glyph size: each text row is `font.val()` pixels high.
    pub font: RasterHeight,
    /// Pixels per text column ([`text::glyph_width`] of `font`).
    pub glyph_width: usize,
    /// Pixel row of text row 0 (0 when the screen is too small for the band and strip).
    pub text_top: usize,
    /// Pixel column of text column 0.
    pub text_left: usize,
    /// Text columns and rows.
    pub grid: (usize, usize),
    /// Pixel rows of the status band (top, height), if shown.
    pub band: Option<(usize, usize)>,
    /// Pixel rows of the memory strip (top, height), if shown.
    pub strip: Option<(usize, usize)>,
}

/// The layout of a `width` x `height` screen: the largest glyph size that leaves at least
/// 64 columns and 24 text rows under the band and strip (else the smallest), the band on
/// row 0, a gap, the strip, a gap, then the text area from the left edge down to the bottom.
pub fn layout(width: usize, height: usize) -> Layout {
    let (w, h) = (width, height);
    let font = text::SIZES
        .into_iter()
        .find(|&s| {
            let reserved = 2 * s.val() + 2 * GAP;
            w / text::glyph_width(s) >= 64 && h.saturating_sub(reserved) / s.val() >= 24
        })
        .unwrap_or(RasterHeight::Size16);
    let line = font.val();
    let bands = h >= 3 * line + 2 * GAP;
    let text_top = if bands { 2 * line + 2 * GAP } else { 0 };
    let gw = text::glyph_width(font);
    Layout {
        font,
        glyph_width: gw,
        text_top,
        text_left: 0,
        grid: ((w / gw).max(1), (h.saturating_sub(text_top) / line).max(1)),
        band: bands.then_some((0, line)),
        strip: bands.then_some((line + GAP, line)),
    }
}

/// The whole screen: band, strip and text area over one surface.
pub struct Screen<'a> {
    surface: Surface<'a>,
    text: TextArea,
    size: RasterHeight,
}

impl<'a> Screen<'a> {
    /// Lays the screen out on `surface` ([`layout`]) and clears it.
    pub fn new(mut surface: Surface<'a>) -> Self {
        let (w, h) = (surface.width(), surface.height());
        let l = layout(w, h);
        let mut text = TextArea::new(
            l.text_top,
            h - l.text_top,
            w,
            l.font,
            palette::FG,
            palette::BG,
        );
        surface.fill(0, 0, w, h, palette::BG);
        text.clear(&mut surface);
        Self {
            surface,
            text,
            size: l.font,
        }
    }

    /// Ring mode for the text area ([`TextArea::set_ring`]): scrolling moves no pixels; the
    /// caller that shows the surface puts the text rows back in order.
    pub fn set_ring(&mut self, on: bool) {
        self.text.set_ring(on);
    }

    /// The surface, mutable: for a caller that draws its own (tests) or tracks damage.
    pub fn surface_mut(&mut self) -> &mut Surface<'a> {
        &mut self.surface
    }

    /// The glyph size chosen.
    pub fn font(&self) -> RasterHeight {
        self.size
    }

    /// The text area (grid, cursor).
    pub fn text(&self) -> &TextArea {
        &self.text
    }

    /// The surface, for flushing or comparing.
    pub fn surface(&self) -> &Surface<'a> {
        &self.surface
    }

    /// Whether the band and strip are shown.
    fn has_bands(&self) -> bool {
        self.text.top > 0
    }

    /// Writes text to the console area.
    pub fn write_str(&mut self, s: &str) {
        self.text.write_bytes(&mut self.surface, s.as_bytes());
    }

    /// Writes raw bytes (UTF-8 expected) to the console area.
    pub fn write_bytes(&mut self, b: &[u8]) {
        self.text.write_bytes(&mut self.surface, b);
    }

    /// Redraws the status band.
    pub fn draw_status(&mut self, status: &Status<'_>) {
        if !self.has_bands() {
            return;
        }
        let w = self.surface.width();
        let line = self.size.val();
        self.surface.fill(0, 0, w, line, palette::BAND);
        let mut text = Line::<256>::new();
        let _ = write!(text, " {status}");
        let cols = w / text::glyph_width(self.size);
        text::draw_text(
            &mut self.surface,
            0,
            0,
            text.as_str(),
            cols,
            text::Pen {
                size: self.size,
                fg: palette::BAND_FG,
                bg: palette::BAND,
            },
        );
    }

    /// The strip's pixel rows (top, height).
    pub fn strip_rows(&self) -> (usize, usize) {
        (self.size.val() + GAP, self.size.val())
    }

    /// Redraws the memory strip: each RAM range gets a share of the width proportional to
    /// its size (holes between ranges are left out, a 2-pixel gap marks each), drawn in
    /// [`palette::RAM`]; then each span in order, later ones on top, at least one pixel wide
    /// so that a small reservation still shows.
    pub fn draw_memory(&mut self, ram: &[(u64, u64)], spans: &[Span]) {
        if !self.has_bands() {
            return;
        }
        let (top, height) = self.strip_rows();
        let w = self.surface.width();
        self.surface.fill(0, top, w, height, palette::BG);
        let total: u128 = ram.iter().map(|&(_, s)| u128::from(s)).sum();
        let gaps = 2 * ram.len().saturating_sub(1);
        if total == 0 || w <= gaps {
            return;
        }
        let usable_w = (w - gaps) as u128;
        // Pixel x of byte offset `off` into the concatenated RAM.
        let x_of = |off: u128| (off * usable_w / total) as usize;
        let mut before = 0u128;
        for (i, &(base, size)) in ram.iter().enumerate() {
            let x0 = x_of(before) + 2 * i;
            let x1 = x_of(before + u128::from(size)) + 2 * i;
            self.surface.fill(x0, top, x1 - x0, height, palette::RAM);
            let end = u128::from(base) + u128::from(size);
            for span in spans {
                let (s0, s1) = (
                    u128::from(span.base).max(u128::from(base)),
                    (u128::from(span.base) + u128::from(span.size)).min(end),
                );
                if s0 >= s1 {
                    continue;
                }
                let a = x_of(before + s0 - u128::from(base)) + 2 * i;
                let b = (x_of(before + s1 - u128::from(base)) + 2 * i)
                    .max(a + 1)
                    .min(x1.max(a + 1));
                self.surface.fill(a, top, b - a, height, span.kind.colour());
            }
            before += u128::from(size);
        }
    }
}
