//! A text console over a rectangle of a [`Surface`]: glyphs from `noto-sans-mono-bitmap`,
//! line wrap, scrolling, `\r`, `\n`, tab, backspace, and ANSI escape sequences swallowed (the
//! shell's line editor sends some; the screen mirrors what a terminal would show).

use crate::surface::{Rgb, Surface};
use noto_sans_mono_bitmap::{get_raster, get_raster_width, FontWeight, RasterHeight};

/// The glyph sizes the crate was built with, largest first.
pub const SIZES: [RasterHeight; 4] = [
    RasterHeight::Size32,
    RasterHeight::Size24,
    RasterHeight::Size20,
    RasterHeight::Size16,
];

/// Pixels per column for a size.
pub fn glyph_width(size: RasterHeight) -> usize {
    get_raster_width(FontWeight::Regular, size)
}

/// What the byte parser is in the middle of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    /// Plain text.
    None,
    /// After ESC.
    Start,
    /// Inside a CSI sequence (ESC `[`), until a final byte 0x40..=0x7e (ECMA-48 5.4).
    Csi,
    /// Inside an OSC string (ESC `]`), until BEL or ESC `\`.
    Osc,
    /// ESC inside an OSC string: `\` ends it.
    OscEsc,
}

/// Where and how text is drawn; the surface itself is passed to each call so that one owner
/// (the screen) holds it.
#[derive(Clone, Debug)]
pub struct TextArea {
    /// First pixel row of the area.
    pub top: usize,
    /// Pixel rows in the area.
    pub height: usize,
    size: RasterHeight,
    cols: usize,
    rows: usize,
    col: usize,
    row: usize,
    /// Text colour.
    pub fg: Rgb,
    /// Background colour.
    pub bg: Rgb,
    escape: Escape,
    /// Times the area scrolled (a caller copying damage to a scan-out buffer compares it).
    scrolls: u64,
    /// Ring mode: scrolling moves no pixels, text row `r` is stored in pixel row band
    /// `(first + r) % rows` (see [`TextArea::set_ring`]).
    ring: bool,
    /// In ring mode, the stored row that holds text row 0.
    first: usize,
    /// Partial UTF-8 sequence.
    utf8: [u8; 4],
    utf8_len: usize,
}

impl TextArea {
    /// An area of `height` rows from pixel row `top`, `width` pixels wide, in glyph `size`.
    pub fn new(
        top: usize,
        height: usize,
        width: usize,
        size: RasterHeight,
        fg: Rgb,
        bg: Rgb,
    ) -> Self {
        let cols = (width / glyph_width(size)).max(1);
        let rows = (height / size.val()).max(1);
        Self {
            top,
            height,
            size,
            cols,
            rows,
            col: 0,
            row: 0,
            fg,
            bg,
            escape: Escape::None,
            scrolls: 0,
            ring: false,
            first: 0,
            utf8: [0; 4],
            utf8_len: 0,
        }
    }

    /// Columns and rows of text.
    pub fn grid(&self) -> (usize, usize) {
        (self.cols, self.rows)
    }

    /// The cursor (column, row).
    pub fn cursor(&self) -> (usize, usize) {
        (self.col, self.row)
    }

    /// How many times the area has scrolled: when it changes, every row of the area moved.
    pub fn scrolls(&self) -> u64 {
        self.scrolls
    }

    /// Ring mode on or off (off by default). In ring mode a scroll clears one row instead of
    /// moving the whole area up: the buffer then holds the rows rotated, text row `r` in
    /// stored row [`TextArea::stored_row`]`(r)`, and whoever shows the buffer (the kernel,
    /// copying a shadow to the scan-out buffer) puts them back in order. Switching clears
    /// nothing; call it before writing.
    pub fn set_ring(&mut self, on: bool) {
        self.ring = on;
        self.first = 0;
    }

    /// The stored row that holds text row `row` (itself unless in ring mode).
    pub fn stored_row(&self, row: usize) -> usize {
        if self.ring {
            (self.first + row) % self.rows
        } else {
            row
        }
    }

    /// The glyph size.
    pub fn size(&self) -> RasterHeight {
        self.size
    }

    /// Clears the area and homes the cursor.
    pub fn clear(&mut self, s: &mut Surface<'_>) {
        s.fill(0, self.top, s.width(), self.height, self.bg);
        self.col = 0;
        self.row = 0;
        self.first = 0;
    }

    /// Draws `c` at a cell, background included. Characters the font lacks show as `?`.
    pub fn draw_cell(&self, s: &mut Surface<'_>, col: usize, row: usize, c: char) {
        let pen = Pen {
            size: self.size,
            fg: self.fg,
            bg: self.bg,
        };
        draw_glyph(
            s,
            col * glyph_width(self.size),
            self.top + self.stored_row(row) * self.size.val(),
            c,
            pen,
        );
    }

    fn newline(&mut self, s: &mut Surface<'_>) {
        self.col = 0;
        if self.row + 1 < self.rows {
            self.row += 1;
            return;
        }
        // Scroll the area up one text row and clear the last one.
        self.scrolls += 1;
        let line = self.size.val();
        if self.ring {
            // The old first row becomes the new last row.
            let last = self.first;
            self.first = (self.first + 1) % self.rows;
            s.fill(0, self.top + last * line, s.width(), line, self.bg);
            return;
        }
        s.move_rows(self.top + line, self.top, (self.rows - 1) * line);
        s.fill(
            0,
            self.top + (self.rows - 1) * line,
            s.width(),
            line,
            self.bg,
        );
    }

    fn put_char(&mut self, s: &mut Surface<'_>, c: char) {
        match c {
            '\n' => self.newline(s),
            '\r' => self.col = 0,
            '\t' => {
                let next = (self.col / 8 + 1) * 8;
                if next >= self.cols {
                    self.newline(s);
                } else {
                    self.col = next;
                }
            }
            // Backspace moves left, as a terminal does; the shell erases with "\x08 \x08".
            '\u{8}' => self.col = self.col.saturating_sub(1),
            c if c.is_control() => {}
            c => {
                if self.col >= self.cols {
                    self.newline(s);
                }
                self.draw_cell(s, self.col, self.row, c);
                self.col += 1;
            }
        }
    }

    /// Draws bytes as a terminal shows them: UTF-8 (invalid bytes as `?`), escape sequences
    /// consumed, control characters other than the ones above ignored.
    pub fn write_bytes(&mut self, s: &mut Surface<'_>, bytes: &[u8]) {
        for &b in bytes {
            self.escape = match (self.escape, b) {
                (Escape::None, 0x1b) => Escape::Start,
                (Escape::None, _) => {
                    self.feed_utf8(s, b);
                    Escape::None
                }
                (Escape::Start, b'[') => Escape::Csi,
                (Escape::Start, b']') => Escape::Osc,
                (Escape::Start, _) => Escape::None,
                (Escape::Csi, 0x40..=0x7e) => Escape::None,
                (Escape::Csi, _) => Escape::Csi,
                (Escape::Osc, 0x07) => Escape::None,
                (Escape::Osc, 0x1b) => Escape::OscEsc,
                (Escape::Osc, _) => Escape::Osc,
                (Escape::OscEsc, b'\\') => Escape::None,
                (Escape::OscEsc, _) => Escape::Osc,
            };
        }
    }

    fn feed_utf8(&mut self, s: &mut Surface<'_>, b: u8) {
        if self.utf8_len == 0 && b < 0x80 {
            self.put_char(s, b as char);
            return;
        }
        if self.utf8_len == self.utf8.len() || (self.utf8_len > 0 && b & 0xc0 != 0x80) {
            // A broken sequence: show it as one `?` and start again with this byte.
            self.utf8_len = 0;
            self.put_char(s, '?');
            return self.feed_utf8(s, b);
        }
        self.utf8[self.utf8_len] = b;
        self.utf8_len += 1;
        match core::str::from_utf8(&self.utf8[..self.utf8_len]) {
            Ok(text) => {
                self.utf8_len = 0;
                if let Some(c) = text.chars().next() {
                    self.put_char(s, c);
                }
            }
            Err(e) if e.error_len().is_some() => {
                self.utf8_len = 0;
                self.put_char(s, '?');
            }
            Err(_) => {} // incomplete: wait for more
        }
    }
}

/// How glyphs are drawn: size and colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pen {
    /// Glyph size.
    pub size: RasterHeight,
    /// Text colour.
    pub fg: Rgb,
    /// Cell background.
    pub bg: Rgb,
}

/// Draws one glyph cell with its top left corner at (x, y), clipped to the surface.
pub fn draw_glyph(s: &mut Surface<'_>, x: usize, y: usize, c: char, pen: Pen) {
    let Some(glyph) = get_raster(c, FontWeight::Regular, pen.size)
        .or_else(|| get_raster('?', FontWeight::Regular, pen.size))
    else {
        return;
    };
    // Most of a glyph's pixels are pure background or pure text: those skip the blend and
    // the encoding (the console draws every character it prints, under its lock).
    let format = s.format();
    let encode = |c: Rgb| format.encode(c.0, c.1, c.2);
    let (bg, fg) = (encode(pen.bg), encode(pen.fg));
    for (dy, row) in glyph.rows().enumerate() {
        for (dx, &alpha) in row.iter().enumerate() {
            let v = match alpha {
                0 => bg,
                255 => fg,
                a => encode(pen.bg.blend(pen.fg, a)),
            };
            s.put_raw(x + dx, y + dy, v);
        }
    }
}

/// Draws a line of text from (x, y), at most `max_cols` cells, clipped to the surface.
pub fn draw_text(s: &mut Surface<'_>, x: usize, y: usize, text: &str, max_cols: usize, pen: Pen) {
    let w = glyph_width(pen.size);
    for (i, c) in text.chars().take(max_cols).enumerate() {
        draw_glyph(s, x + i * w, y, c, pen);
    }
}
