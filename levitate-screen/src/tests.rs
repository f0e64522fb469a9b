//! Host tests of the renderer against expected pixels: glyph placement, wrap, scrolling,
//! control characters, every pixel format, clipping at odd sizes, and a whole 1080x2400
//! a8r8g8b8 screen as the Pixel 6 splash buffer holds it.

use super::*;
use noto_sans_mono_bitmap::{get_raster, FontWeight};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const S16: RasterHeight = RasterHeight::Size16;
const FG: Rgb = Rgb(0xff, 0xff, 0xff);
const BG: Rgb = Rgb(0, 0, 0x40);

/// A surface of `cols` x `rows` 16-pixel cells in `format`, with `pad` spare bytes at the end
/// of each row and after the last, all set to 0xaa so that stray writes show.
fn buffer(
    cols: usize,
    rows: usize,
    pad: usize,
    format: PixelFormat,
) -> (Vec<u8>, usize, usize, usize) {
    let (w, h) = (cols * 7, rows * 16);
    let stride = w * format.bytes_per_pixel() as usize + pad;
    (vec![0xaa; stride * h + pad], w, h, stride)
}

/// The pixel value a cell pixel must hold for glyph `c` at (dx, dy).
fn expected(format: PixelFormat, c: char, dx: usize, dy: usize) -> u32 {
    let g = get_raster(c, FontWeight::Regular, S16).unwrap();
    let p = BG.blend(FG, g.pixel(dx, dy).unwrap());
    format.encode(p.0, p.1, p.2)
}

/// Asserts that the cell at (col, row) of a 16-pixel area at the top shows `c`.
fn assert_cell(s: &Surface<'_>, col: usize, row: usize, c: char) {
    for dy in 0..16 {
        for dx in 0..7 {
            let (x, y) = (col * 7 + dx, row * 16 + dy);
            assert_eq!(
                s.raw(x, y),
                Some(expected(s.format(), c, dx, dy)),
                "cell ({col},{row}) pixel ({dx},{dy}) should show {c:?}"
            );
        }
    }
}

fn area(s: &Surface<'_>) -> TextArea {
    TextArea::new(0, s.height(), s.width(), S16, FG, BG)
}

#[test]
fn glyphs_are_placed_cell_by_cell() {
    let (mut buf, w, h, stride) = buffer(4, 2, 0, PixelFormat::X8R8G8B8);
    let mut s = Surface::new(&mut buf, w, h, stride, PixelFormat::X8R8G8B8).unwrap();
    let mut t = area(&s);
    t.clear(&mut s);
    t.write_bytes(&mut s, b"AB\nc");
    assert_cell(&s, 0, 0, 'A');
    assert_cell(&s, 1, 0, 'B');
    assert_cell(&s, 0, 1, 'c');
    assert_cell(&s, 2, 0, ' ');
    assert_eq!(t.cursor(), (1, 1));
    // 'A' is not blank: the test would not notice a glyph drawn as background.
    assert!((0..16).any(|y| (0..7).any(|x| s.raw(x, y) != Some(expected(s.format(), ' ', 0, 0)))));
}

#[test]
fn long_lines_wrap_and_the_last_row_scrolls() {
    let (mut buf, w, h, stride) = buffer(3, 2, 0, PixelFormat::X8R8G8B8);
    let mut s = Surface::new(&mut buf, w, h, stride, PixelFormat::X8R8G8B8).unwrap();
    let mut t = area(&s);
    t.clear(&mut s);
    t.write_bytes(&mut s, b"abcd");
    assert_cell(&s, 0, 1, 'd');
    assert_eq!(t.cursor(), (1, 1));
    t.write_bytes(&mut s, b"\nxy");
    // "abc" scrolled away; "d" moved up; "xy" on the last row.
    assert_cell(&s, 0, 0, 'd');
    assert_cell(&s, 1, 0, ' ');
    assert_cell(&s, 0, 1, 'x');
    assert_cell(&s, 1, 1, 'y');
    assert_cell(&s, 2, 1, ' ');
}

#[test]
fn carriage_return_backspace_tab_and_escapes() {
    let (mut buf, w, h, stride) = buffer(12, 1, 0, PixelFormat::R5G6B5);
    let mut s = Surface::new(&mut buf, w, h, stride, PixelFormat::R5G6B5).unwrap();
    let mut t = area(&s);
    t.clear(&mut s);
    t.write_bytes(&mut s, b"xyz\rA\x08\x08B\tC\x1b[1;31mD\x1b]0;title\x07E");
    assert_cell(&s, 0, 0, 'B');
    assert_cell(&s, 1, 0, 'y');
    assert_cell(&s, 8, 0, 'C');
    assert_cell(&s, 9, 0, 'D');
    assert_cell(&s, 10, 0, 'E');
    assert_eq!(t.cursor(), (11, 0));
}

#[test]
fn utf8_and_missing_glyphs() {
    let (mut buf, w, h, stride) = buffer(4, 1, 0, PixelFormat::X8R8G8B8);
    let mut s = Surface::new(&mut buf, w, h, stride, PixelFormat::X8R8G8B8).unwrap();
    let mut t = area(&s);
    t.clear(&mut s);
    // U+2500 is not in the crate's ranges; 0xff is no UTF-8 at all.
    t.write_bytes(&mut s, "a\u{2500}".as_bytes());
    t.write_bytes(&mut s, b"\xffb");
    assert_cell(&s, 0, 0, 'a');
    assert_cell(&s, 1, 0, '?');
    assert_cell(&s, 2, 0, '?');
    assert_cell(&s, 3, 0, 'b');
}

#[test]
fn every_format_writes_its_own_bytes_and_nothing_past_a_row() {
    for format in PixelFormat::ALL {
        let (mut buf, w, h, stride) = buffer(2, 1, 5, format);
        let total = buf.len();
        {
            let mut s = Surface::new(&mut buf, w, h, stride, format).unwrap();
            let mut t = area(&s);
            t.clear(&mut s);
            t.write_bytes(&mut s, b"H");
            assert_cell(&s, 0, 0, 'H');
            // Fully lit and blank pixels are exactly the format's encoding of the colours.
            let bpp = format.bytes_per_pixel() as usize;
            let px = |s: &Surface<'_>, x: usize, y: usize| {
                s.bytes()[y * stride + x * bpp..][..bpp].to_vec()
            };
            assert_eq!(
                px(&s, 13, 0),
                format.encode(BG.0, BG.1, BG.2).to_le_bytes()[..bpp]
            );
        }
        for row in 0..h {
            let pad =
                &buf[row * stride + w * format.bytes_per_pixel() as usize..(row + 1) * stride];
            assert!(
                pad.iter().all(|&b| b == 0xaa),
                "{format}: row {row} padding written"
            );
        }
        assert!(
            buf[stride * h..total].iter().all(|&b| b == 0xaa),
            "{format}: past the end"
        );
    }
}

#[test]
fn exact_encodings_for_known_colours() {
    let mut buf = vec![0u8; 4 * 4];
    let mut s = Surface::new(&mut buf, 2, 2, 8, PixelFormat::A8R8G8B8).unwrap();
    s.put(1, 1, Rgb(0x12, 0x34, 0x56));
    assert_eq!(&s.bytes()[12..16], &[0x56, 0x34, 0x12, 0xff]);
    let mut buf = vec![0u8; 4];
    let mut s = Surface::new(&mut buf, 2, 1, 4, PixelFormat::R5G6B5).unwrap();
    s.put(1, 0, Rgb(0xff, 0, 0));
    assert_eq!(&s.bytes()[2..4], &[0x00, 0xf8]);
}

#[test]
fn bad_geometry_is_refused() {
    let mut buf = vec![0u8; 100];
    assert_eq!(
        Surface::new(&mut buf, 0, 1, 4, PixelFormat::X8R8G8B8).err(),
        Some(SurfaceError::Empty)
    );
    assert_eq!(
        Surface::new(&mut buf, 5, 1, 16, PixelFormat::X8R8G8B8).err(),
        Some(SurfaceError::StrideTooSmall)
    );
    assert_eq!(
        Surface::new(&mut buf, 4, 7, 16, PixelFormat::X8R8G8B8).err(),
        Some(SurfaceError::TooShort)
    );
    assert_eq!(
        Surface::new(&mut buf, usize::MAX, 1, 16, PixelFormat::X8R8G8B8).err(),
        Some(SurfaceError::StrideTooSmall)
    );
}

#[test]
fn status_line_text() {
    let st = Status {
        uptime_ms: 3_723_456,
        mem_free: 900 << 20 | 1 << 19,
        mem_total: 1 << 30,
        pressure: "low",
        cpus_online: 3,
        cpus_total: 4,
    };
    assert_eq!(
        std::format!("{st}"),
        "up 1:02:03.4  MemFree 900.5 MiB / 1024.0 MiB  pressure low  CPUs 3/4"
    );
}

/// The Pixel 6 splash buffer: 1080x2400, stride 4320, a8r8g8b8.
#[test]
fn renders_the_pixel6_splash_buffer() {
    let (w, h, stride) = (1080, 2400, 4320);
    let mut buf = vec![0u8; stride * h];
    let s = Surface::new(&mut buf, w, h, stride, PixelFormat::A8R8G8B8).unwrap();
    let mut screen = Screen::new(s);
    assert_eq!(screen.font(), RasterHeight::Size32);
    assert_eq!(screen.text().grid().0, 1080 / 14);
    assert!(screen.text().grid().1 >= 70);
    screen.draw_status(&Status {
        uptime_ms: 1500,
        mem_free: 7 << 30,
        mem_total: 8 << 30,
        pressure: "none",
        cpus_online: 8,
        cpus_total: 8,
    });
    let ram = [
        (0x8000_0000u64, 0x8000_0000u64),
        (0x8_8000_0000, 0x1_8000_0000),
    ];
    let spans = [
        Span {
            base: 0x8000_0000,
            size: 0x8000_0000,
            kind: SpanKind::Free,
        },
        Span {
            base: 0xfac0_0000,
            size: 0x9e_3400,
            kind: SpanKind::NoMap,
        },
        Span {
            base: 0x8_8000_0000,
            size: 0x200_0000,
            kind: SpanKind::MemMap,
        },
    ];
    screen.draw_memory(&ram, &spans);
    screen.write_str("meminfo\nMemTotal:  8388608 kB\n");
    let s = screen.surface();
    let enc = |c: Rgb| PixelFormat::A8R8G8B8.encode(c.0, c.1, c.2);
    // Band: its far right pixel is band colour (the text is shorter than the width).
    assert_eq!(s.raw(1079, 0), Some(enc(palette::BAND)));
    // Strip: the first RAM range is 1/4 of the RAM, so its first pixels are free and the
    // splash (at 0xfac00000, 98% into it) lies near x = 265.
    let (top, _) = screen.strip_rows();
    assert_eq!(s.raw(0, top), Some(enc(palette::FREE)));
    let splash_x = ((0xfac0_0000u64 - 0x8000_0000) * (1080 - 2) / (8 << 30)) as usize;
    assert_eq!(s.raw(splash_x, top), Some(enc(palette::NO_MAP)));
    // After the 2-pixel gap, the second range starts with the mem_map, then plain RAM.
    assert_eq!(s.raw(1080 / 4 + 2 + 1, top), Some(enc(palette::MEM_MAP)));
    assert_eq!(s.raw(1079, top), Some(enc(palette::RAM)));
    // Text: the 'm' of "meminfo" in the first text cell, pixel for pixel.
    let text_top = screen.text().top;
    let g = get_raster('m', FontWeight::Regular, RasterHeight::Size32).unwrap();
    for dy in 0..32 {
        for dx in 0..14 {
            let p = palette::BG.blend(palette::FG, g.pixel(dx, dy).unwrap());
            assert_eq!(s.raw(dx, text_top + dy), Some(enc(p)));
        }
    }
    assert_eq!(screen.text().cursor(), (0, 2));
}

#[test]
fn a_1024x768_screen_gets_24_pixel_glyphs() {
    let mut buf = vec![0u8; 1024 * 4 * 768];
    let s = Surface::new(&mut buf, 1024, 768, 4096, PixelFormat::X8R8G8B8).unwrap();
    let screen = Screen::new(s);
    assert_eq!(screen.font(), RasterHeight::Size24);
    assert_eq!(screen.text().grid().0, 1024 / 11);
}

proptest! {
    /// Any size, format and text: no panic, and nothing outside the visible pixels changes.
    #[test]
    fn odd_sizes_clip(
        w in 1usize..40, h in 1usize..90, pad in 0usize..7, f in 0usize..5,
        text in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let format = PixelFormat::ALL[f];
        let bpp = format.bytes_per_pixel() as usize;
        let stride = w * bpp + pad;
        let mut buf = vec![0xaa; stride * h + 3];
        {
            let s = Surface::new(&mut buf, w, h, stride, format).unwrap();
            let mut screen = Screen::new(s);
            screen.write_bytes(&text);
            screen.draw_status(&Status { uptime_ms: 1, mem_free: 1, mem_total: 2, pressure: "x", cpus_online: 1, cpus_total: 1 });
            screen.draw_memory(&[(0, 100), (1000, 5)], &[Span { base: 0, size: 1 << 40, kind: SpanKind::Kernel }]);
            let (c, r) = screen.text().cursor();
            let (cols, rows) = screen.text().grid();
            prop_assert!(c <= cols && r < rows);
        }
        for row in 0..h {
            prop_assert!(buf[row * stride + w * bpp..(row + 1) * stride].iter().all(|&b| b == 0xaa));
        }
        prop_assert!(buf[stride * h..].iter().all(|&b| b == 0xaa));
    }
}

#[test]
fn layout_is_what_the_screen_uses() {
    // The screenshot tests find text rows from `layout` alone; it must agree with `Screen`.
    for (w, h) in [
        (1024, 768),
        (1080, 2400),
        (640, 480),
        (800, 600),
        (320, 200),
        (100, 30),
    ] {
        let format = PixelFormat::X8R8G8B8;
        let stride = w * 4;
        let mut buf = vec![0u8; stride * h];
        let screen = Screen::new(Surface::new(&mut buf, w, h, stride, format).unwrap());
        let l = layout(w, h);
        assert_eq!(l.font, screen.font(), "{w}x{h}");
        assert_eq!(l.text_top, screen.text().top, "{w}x{h}");
        assert_eq!(l.grid, screen.text().grid(), "{w}x{h}");
        assert_eq!(l.glyph_width, text::glyph_width(l.font));
        assert_eq!(l.strip, l.band.map(|_| screen.strip_rows()));
    }
    let l = layout(1024, 768);
    assert_eq!(
        (l.glyph_width, l.font.val(), l.text_top, l.grid),
        (11, 24, 56, (93, 29))
    );
    let l = layout(1080, 2400);
    assert_eq!(l.font.val(), 32);
    assert_eq!(l.band, Some((0, 32)));
}

#[test]
fn scrolling_is_counted() {
    let (mut buf, w, h, stride) = buffer(8, 2, 0, PixelFormat::X8R8G8B8);
    let mut s = Surface::new(&mut buf, w, h, stride, PixelFormat::X8R8G8B8).unwrap();
    let mut t = area(&s);
    t.write_bytes(&mut s, b"a\n");
    assert_eq!(t.scrolls(), 0);
    t.write_bytes(&mut s, b"b\nc\n");
    assert_eq!(t.scrolls(), 2);
}

/// The pixel rows of text row `row` as `t` stores them in `s`.
fn text_row<'b>(s: &'b Surface<'_>, t: &TextArea, row: usize) -> &'b [u8] {
    let line = t.size().val();
    let at = (t.top + t.stored_row(row) * line) * s.stride();
    &s.bytes()[at..at + line * s.stride()]
}

proptest! {
    #[test]
    fn ring_mode_stores_the_same_rows_rotated(
        text in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\x08'), Just(b'\t'), 0x20u8..0x7f], 0..400)
    ) {
        let format = PixelFormat::R5G6B5;
        let (mut a, w, h, stride) = buffer(9, 4, 6, format);
        let mut b = a.clone();
        let mut plain = Surface::new(&mut a, w, h, stride, format).unwrap();
        let mut ringed = Surface::new(&mut b, w, h, stride, format).unwrap();
        let (mut tp, mut tr) = (area(&plain), area(&ringed));
        tr.set_ring(true);
        tp.clear(&mut plain);
        tr.clear(&mut ringed);
        tp.write_bytes(&mut plain, &text);
        tr.write_bytes(&mut ringed, &text);
        prop_assert_eq!(tp.cursor(), tr.cursor());
        prop_assert_eq!(tp.scrolls(), tr.scrolls());
        for row in 0..tp.grid().1 {
            prop_assert_eq!(text_row(&plain, &tp, row), text_row(&ringed, &tr, row));
        }
    }
}
