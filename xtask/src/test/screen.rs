//! Screen console scenarios: QEMU's ramfb screenshot against the same lines drawn on the host
//! by the same renderer (levitate-screen), a `simple-framebuffer` in reserved RAM read back
//! through the monitor's `pmemsave`, framebuffer nodes the kernel must refuse, `xtask memmap`
//! on the Pixel 6 tree with the splash buffer, and `run --screenshot`'s error paths.
//!
//! The comparisons are exact: a text row of the kernel's screen must hold the very pixels the
//! host draws for that line, so a wrong stride, pixel format or mapping shows as a mismatch.

use super::harness::{
    boot, boot_with_monitor, check_commands, command_outputs, qemu_dtb_with, stress_says, Expect,
    Outcome, Says, Tally,
};
use crate::picture::{self, Picture};
use crate::qemu::RunOptions;
use crate::Result;
use levitate_screen::{palette, PixelFormat, Rgb, Screen, Surface};
use std::path::Path;
use std::process::{Command, Stdio};

pub fn run(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    println!("== screen console: ramfb screenshot, simple-framebuffer, bad nodes, --screenshot");
    let work = work.join("screen");
    std::fs::create_dir_all(&work)?;
    // QEMU's usual window, and the Pixel 6 panel's size (its 32-pixel font) on ramfb.
    ramfb_screenshot(tally, image, &work, base, None)?;
    ramfb_screenshot(tally, image, &work, base, Some((1080, 2400)))?;
    for fb in [RESERVED_R5G6B5, REG_A8R8G8B8] {
        simple_framebuffer(tally, image, &work, base, &fb)?;
    }
    bad_nodes(tally, image, &work, base)?;
    memmap_splash(tally)?;
    screenshot_cli(tally, &work)?;
    screenshot_errors(tally, &work)?;
    Ok(())
}

/// What the kernel's `screen: WxH FORMAT stride S at 0xADDR (ORIGIN)` log line says.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ScreenLine {
    width: usize,
    height: usize,
    format: PixelFormat,
    stride: usize,
    base: u64,
    origin: String,
}

/// Reads the kernel's screen line (kernel/src/screen) from the boot log.
fn screen_line(log: &str) -> Option<ScreenLine> {
    log.lines().find_map(|l| {
        let rest = &l[l.find("screen: ")? + "screen: ".len()..];
        let mut words = rest.split_whitespace();
        let (w, h) = words.next()?.split_once('x')?;
        let format = PixelFormat::from_name(words.next()?.as_bytes())?;
        (words.next()? == "stride").then_some(())?;
        let stride = words.next()?.parse().ok()?;
        (words.next()? == "at").then_some(())?;
        let base = u64::from_str_radix(words.next()?.strip_prefix("0x")?, 16).ok()?;
        let origin = words.collect::<Vec<_>>().join(" ");
        Some(ScreenLine {
            width: w.parse().ok()?,
            height: h.parse().ok()?,
            format,
            stride,
            base,
            origin: origin.trim_matches(|c| c == '(' || c == ')').to_string(),
        })
    })
}

/// A screen's pixels as its format stores them, whichever way they were read.
struct Frame {
    width: usize,
    height: usize,
    format: PixelFormat,
    /// Row-major pixel values.
    px: Vec<u32>,
}

impl Frame {
    /// From QEMU's screendump: QEMU converted the guest's pixels to 8-bit RGB; encoding them
    /// back in the format is exact for the 8-bit formats and for r5g6b5 (QEMU widens by
    /// repeating the top bits, `encode` keeps the top bits).
    fn from_picture(p: &Picture, format: PixelFormat) -> Self {
        let px = p
            .rgb
            .chunks_exact(3)
            .map(|c| format.encode(c[0], c[1], c[2]))
            .collect();
        Frame {
            width: p.width,
            height: p.height,
            format,
            px,
        }
    }

    /// From guest memory read back with `pmemsave`: little-endian pixels, `stride` bytes a
    /// row. `None` when the bytes are too few.
    fn from_memory(bytes: &[u8], fb: &ScreenLine) -> Option<Self> {
        let bpp = fb.format.bytes_per_pixel() as usize;
        if bytes.len() < fb.stride * fb.height {
            return None;
        }
        let mut px = Vec::with_capacity(fb.width * fb.height);
        for y in 0..fb.height {
            for x in 0..fb.width {
                let at = y * fb.stride + x * bpp;
                let mut v = [0u8; 4];
                v[..bpp].copy_from_slice(&bytes[at..at + bpp]);
                px.push(u32::from_le_bytes(v));
            }
        }
        Some(Frame {
            width: fb.width,
            height: fb.height,
            format: fb.format,
            px,
        })
    }

    fn row(&self, y: usize) -> &[u32] {
        &self.px[y * self.width..(y + 1) * self.width]
    }
}

/// The screen the kernel lays out on a frame of this size, drawn on the host.
struct HostScreen {
    buf: Vec<u8>,
    width: usize,
    height: usize,
    format: PixelFormat,
}

/// Where the layout puts things, as the host renderer decides it for a size.
#[derive(Clone, Copy, Debug)]
struct Layout {
    line: usize,
    text_top: usize,
    rows: usize,
    band: (usize, usize),
    strip: (usize, usize),
}

impl HostScreen {
    fn new(width: usize, height: usize, format: PixelFormat) -> Self {
        let bpp = format.bytes_per_pixel() as usize;
        HostScreen {
            buf: vec![0; width * bpp * height],
            width,
            height,
            format,
        }
    }

    fn screen(&mut self) -> Screen<'_> {
        let bpp = self.format.bytes_per_pixel() as usize;
        let surface = Surface::new(
            &mut self.buf,
            self.width,
            self.height,
            self.width * bpp,
            self.format,
        )
        .expect("the host buffer fits its own geometry");
        Screen::new(surface)
    }

    fn layout(&mut self) -> Layout {
        let s = self.screen();
        let line = s.font().val();
        let text_top = s.text().top;
        Layout {
            line,
            text_top,
            rows: s.text().grid().1,
            band: (0, line),
            strip: s.strip_rows(),
        }
    }

    /// The pixel rows `line` occupies when written at the start of a text row of a fresh
    /// screen (more than one text row when it wraps).
    fn text_rows(&mut self, line: &str) -> Vec<Vec<u32>> {
        let (w, format) = (self.width, self.format);
        let mut s = self.screen();
        s.write_str(line);
        let (col, row) = s.text().cursor();
        let rows = if col == 0 && row > 0 { row } else { row + 1 };
        let top = s.text().top;
        let height = s.font().val();
        let surface = s.surface();
        (top..top + rows * height)
            .map(|y| {
                (0..w)
                    .map(|x| surface.raw(x, y).unwrap_or(format.encode(0, 0, 0)))
                    .collect()
            })
            .collect()
    }
}

/// The lines a command printed, as the console shows them (no trailing empty line).
fn printed_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

/// Checks that `lines`, drawn by the host renderer, stand on consecutive text rows of the
/// frame, exactly. Says which line is missing when not.
fn lines_on_screen(frame: &Frame, lines: &[&str]) -> std::result::Result<(), String> {
    if lines.is_empty() {
        return Err("no lines to look for".into());
    }
    let mut host = HostScreen::new(frame.width, frame.height, frame.format);
    let l = host.layout();
    let blocks: Vec<Vec<Vec<u32>>> = lines.iter().map(|t| host.text_rows(t)).collect();
    let matches_at = |block: &[Vec<u32>], text_row: usize| {
        let y0 = l.text_top + text_row * l.line;
        y0 + block.len() <= frame.height
            && block
                .iter()
                .enumerate()
                .all(|(dy, want)| frame.row(y0 + dy) == &want[..])
    };
    let total: usize = blocks.iter().map(|b| b.len() / l.line).sum();
    for first in 0..l.rows.saturating_sub(total - 1) {
        let mut row = first;
        let all = blocks.iter().all(|b| {
            let ok = matches_at(b, row);
            row += b.len() / l.line;
            ok
        });
        if all {
            return Ok(());
        }
    }
    // Diagnose: the first line found nowhere on the screen, and how close the best row is.
    for (text, block) in lines.iter().zip(&blocks) {
        if !(0..l.rows).any(|r| matches_at(block, r)) {
            let best = (0..l.rows)
                .map(|r| {
                    let y0 = l.text_top + r * l.line;
                    let same = block
                        .iter()
                        .enumerate()
                        .filter(|(dy, _)| y0 + dy < frame.height)
                        .map(|(dy, want)| {
                            want.iter()
                                .zip(frame.row(y0 + dy))
                                .filter(|(a, b)| a == b)
                                .count()
                        })
                        .sum::<usize>();
                    (same, r)
                })
                .max()
                .unwrap_or((0, 0));
            let all = block.len() * frame.width;
            return Err(format!(
                "{text:?} is on no text row of the screen (best: row {} with {} of {all} \
                 pixels the same)",
                best.1, best.0
            ));
        }
    }
    Err("every line is on the screen, but not on consecutive rows in order".into())
}

/// Reads the screen again until `shown` holds, for a few seconds at most: the kernel copies
/// console text to the scan-out buffer from its tick, so the last lines reach it up to a tick
/// after the serial port. The last reading is returned either way; the caller's checks say
/// what is wrong with it.
fn until_shown<T>(mut read: impl FnMut() -> Result<T>, shown: impl Fn(&T) -> bool) -> Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    loop {
        let got = read()?;
        if shown(&got) || std::time::Instant::now() >= deadline {
            return Ok(got);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The status band exists (mostly its colour, some text on it) and the memory strip holds
/// only the strip's colours, among them `required`.
fn band_and_strip(frame: &Frame, required: &[(&str, Rgb)]) -> std::result::Result<(), String> {
    let mut host = HostScreen::new(frame.width, frame.height, frame.format);
    let l = host.layout();
    let enc = |c: Rgb| frame.format.encode(c.0, c.1, c.2);
    let mut problems = Vec::new();
    let band: Vec<u32> = (l.band.0..l.band.0 + l.band.1)
        .flat_map(|y| frame.row(y).iter().copied())
        .collect();
    let in_band = band.iter().filter(|&&p| p == enc(palette::BAND)).count();
    if in_band * 2 < band.len() {
        problems.push(format!(
            "the status band is not there: {in_band} of {} pixels of its rows have its colour",
            band.len()
        ));
    } else if in_band == band.len() {
        problems.push("the status band has no text".to_string());
    }
    let allowed: Vec<u32> = [
        palette::BG,
        palette::RAM,
        palette::FREE,
        palette::RESERVED,
        palette::NO_MAP,
        palette::MEM_MAP,
        palette::KERNEL,
    ]
    .into_iter()
    .chain(palette::OWNERS)
    .map(enc)
    .collect();
    let strip: Vec<u32> = (l.strip.0..l.strip.0 + l.strip.1)
        .flat_map(|y| frame.row(y).iter().copied())
        .collect();
    if let Some(p) = strip.iter().find(|p| !allowed.contains(p)) {
        problems.push(format!(
            "the memory strip has a pixel {p:#x} in none of its colours"
        ));
    }
    for (name, colour) in required {
        if !strip.contains(&enc(*colour)) {
            problems.push(format!("the memory strip shows no {name}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Every pixel of the text area is the console's background, its text colour, or a blend of
/// the two (the glyphs' anti-aliasing): nothing else wrote into it.
fn text_area_clean(frame: &Frame) -> std::result::Result<(), String> {
    let mut host = HostScreen::new(frame.width, frame.height, frame.format);
    let l = host.layout();
    let blends: std::collections::HashSet<u32> = (0..=255u8)
        .map(|a| {
            let c = palette::BG.blend(palette::FG, a);
            frame.format.encode(c.0, c.1, c.2)
        })
        .collect();
    for y in l.text_top..frame.height {
        if let Some(x) = frame.row(y).iter().position(|p| !blends.contains(p)) {
            return Err(format!(
                "pixel ({x}, {y}) of the text area is {:#x}, not a blend of text over \
                 background: something else wrote there",
                frame.row(y)[x]
            ));
        }
    }
    Ok(())
}

/// The output of the first run of `cmd`.
fn output_of<'a>(out: &'a Outcome, cmd: &str) -> &'a str {
    command_outputs(&out.output, cmd)
        .first()
        .copied()
        .unwrap_or("")
}

/// Joins the problems of several checks into one verdict.
fn all_of(results: Vec<std::result::Result<(), String>>) -> std::result::Result<(), String> {
    let problems: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Boots with ramfb, runs `meminfo`, takes a screenshot, and holds it against the host
/// rendering: meminfo's lines on consecutive text rows, pixel for pixel; the band and strip.
/// `mode` is a `screen=WxH` boot argument; `None`: the kernel's default, 1024x768.
fn ramfb_screenshot(
    tally: &mut Tally,
    image: &Path,
    work: &Path,
    base: &RunOptions,
    mode: Option<(u32, u32)>,
) -> Result<()> {
    let (w, h) = mode.unwrap_or((1024, 768));
    let name = &format!(
        "ramfb {w}x{h}: the screenshot after `meminfo` holds its lines as the host draws them"
    );
    let mut opts = RunOptions {
        ramfb: true,
        ..base.clone()
    };
    if mode.is_some() {
        opts.bootargs = format!("{} screen={w}x{h}", opts.bootargs);
    }
    let want_line = format!("screen: {w}x{h} x8r8g8b8 stride {} at 0x", w * 4);
    let ppm = work.join(format!("ramfb-{w}x{h}.ppm"));
    let (out, shot) = match boot_with_monitor(image, &opts, &["meminfo"], |m, text| {
        let lines = printed_lines(
            command_outputs(text, "meminfo")
                .first()
                .copied()
                .unwrap_or(""),
        );
        let fb = screen_line(text);
        until_shown(
            || m.screendump(&ppm),
            |shot| {
                fb.as_ref().is_some_and(|fb| {
                    (shot.width, shot.height) == (fb.width, fb.height)
                        && lines_on_screen(&Frame::from_picture(shot, fb.format), &lines).is_ok()
                })
            },
        )
    }) {
        Ok(r) => r,
        Err(e) => {
            tally.record(
                name,
                Err(format!("the boot or the screendump failed: {}", e.0)),
            );
            return Ok(());
        }
    };
    let says = [Says::new("meminfo", &["MemTotal:", "MemFree:"])];
    let mut results = vec![check_commands(
        &out,
        &Expect {
            code: 0,
            contains: &[&want_line, "(ramfb)"],
            absent: &["PANIC", "screen: no framebuffer"],
        },
        &says,
    )];
    match (shot, screen_line(&out.output)) {
        (Some(shot), Some(fb)) => {
            // A picture to look at when it fails.
            let _ = picture::write_png(&shot, &work.join(format!("ramfb-{w}x{h}.png")));
            if (shot.width, shot.height) != (fb.width, fb.height) {
                results.push(Err(format!(
                    "the screenshot is {}x{}, the kernel said {}x{}",
                    shot.width, shot.height, fb.width, fb.height
                )));
            } else {
                let frame = Frame::from_picture(&shot, fb.format);
                let lines = printed_lines(output_of(&out, "meminfo"));
                results.push(lines_on_screen(&frame, &lines));
                results.push(band_and_strip(
                    &frame,
                    &[
                        ("free RAM", palette::FREE),
                        ("kernel", palette::KERNEL),
                        ("mem_map", palette::MEM_MAP),
                    ],
                ));
            }
        }
        (None, _) => results.push(Err("no screenshot (the shell never finished)".into())),
        (_, None) => results.push(Err("no `screen: WxH FORMAT stride S at ADDR` line".into())),
    }
    tally.record(name, all_of(results));
    Ok(())
}

/// A `simple-framebuffer` for the `--dtb` scenarios.
struct FbNode {
    label: &'static str,
    base: u64,
    /// Bytes the node's memory holds (more than the picture: the rest is a witness).
    size: u64,
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
    /// Through `memory-region` to a no-map /reserved-memory node; else `reg` alone (the
    /// kernel must keep it from the allocator itself).
    reserved_node: bool,
}

/// 640x480 r5g6b5 with padded rows, in a no-map reserved-memory node.
const RESERVED_R5G6B5: FbNode = FbNode {
    label: "memory-region, r5g6b5, padded stride",
    base: 0x7e00_0000,
    size: 0x10_0000,
    width: 640,
    height: 480,
    stride: 1344,
    format: PixelFormat::R5G6B5,
    reserved_node: true,
};

/// 800x600 a8r8g8b8 named by `reg` alone.
const REG_A8R8G8B8: FbNode = FbNode {
    label: "reg only, a8r8g8b8",
    base: 0x7e00_0000,
    size: 0x20_0000,
    width: 800,
    height: 600,
    stride: 3200,
    format: PixelFormat::A8R8G8B8,
    reserved_node: false,
};

impl FbNode {
    fn overlay(&self) -> String {
        let (base, size) = (self.base, self.size);
        let props = format!(
            "compatible = \"simple-framebuffer\";\n width = <{}>; height = <{}>; stride = <{}>;\n \
             format = \"{}\";",
            self.width,
            self.height,
            self.stride,
            self.format.name()
        );
        let cells = |v: u64| format!("{:#x} {:#x}", v >> 32, v & 0xffff_ffff);
        if self.reserved_node {
            format!(
                "/ {{\n reserved-memory {{\n  #address-cells = <2>;\n  #size-cells = <2>;\n  \
                 ranges;\n  fb_mem: framebuffer@{base:x} {{\n   reg = <{} {}>;\n   no-map;\n  \
                 }};\n }};\n chosen {{\n  framebuffer@{base:x} {{\n   {props}\n   \
                 memory-region = <&fb_mem>;\n  }};\n }};\n}};\n",
                cells(base),
                cells(size)
            )
        } else {
            format!(
                "/ {{\n chosen {{\n  #address-cells = <2>;\n  #size-cells = <2>;\n  \
                 framebuffer@{base:x} {{\n   {props}\n   reg = <{} {}>;\n  }};\n }};\n}};\n",
                cells(base),
                cells(size)
            )
        }
    }

    fn used(&self) -> u64 {
        (self.stride * self.height) as u64
    }
}

/// A pattern no console pixel and no poisoned frame looks like.
fn witness(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(0x9e37_79b1).rotate_right(13) as u8 ^ 0x5a)
        .collect()
}

/// A `-device loader` that puts `file` at `addr` before the kernel runs.
fn loader(file: &Path, addr: u64) -> Vec<std::ffi::OsString> {
    vec![
        "-device".into(),
        format!("loader,file={},addr={addr:#x},force-raw=on", file.display()).into(),
    ]
}

/// A `--dtb` tree with a simple-framebuffer in RAM: the kernel draws its console there (read
/// back with `pmemsave`, decoded at the node's format, meminfo's lines compared with the host
/// rendering); the node's memory beyond the picture holds a witness pattern that `poison`
/// (every free frame overwritten at boot, every freed one after) and `stress frames` must
/// leave alone, so no frame of the node was ever the allocator's.
fn simple_framebuffer(
    tally: &mut Tally,
    image: &Path,
    work: &Path,
    base: &RunOptions,
    fb: &FbNode,
) -> Result<()> {
    let name = format!(
        "simple-framebuffer ({}): the console draws into it, no frame of it is handed out",
        fb.label
    );
    let tag = if fb.reserved_node { "reserved" } else { "reg" };
    let dtb = qemu_dtb_with(work, &format!("simplefb-{tag}"), &fb.overlay())?;
    let tail = (fb.size - fb.used()) as usize;
    let pattern = witness(tail);
    let pattern_file = work.join(format!("simplefb-{tag}-witness.bin"));
    std::fs::write(&pattern_file, &pattern)?;
    let mut opts = RunOptions {
        dtb: Some(dtb),
        bootargs: "poison".into(),
        ..base.clone()
    };
    opts.extra
        .extend(loader(&pattern_file, fb.base + fb.used()));
    let dump = work.join(format!("simplefb-{tag}.bin"));
    let commands = ["memmap", "stress frames 3000", "meminfo"];
    let line = ScreenLine {
        width: fb.width,
        height: fb.height,
        format: fb.format,
        stride: fb.stride,
        base: fb.base,
        origin: String::new(),
    };
    let (out, saved) = match boot_with_monitor(image, &opts, &commands, |m, text| {
        let lines = printed_lines(
            command_outputs(text, "meminfo")
                .first()
                .copied()
                .unwrap_or(""),
        );
        until_shown(
            || m.pmemsave(fb.base, fb.size, &dump),
            |bytes| {
                Frame::from_memory(bytes, &line)
                    .is_some_and(|f| lines_on_screen(&f, &lines).is_ok())
            },
        )
    }) {
        Ok(r) => r,
        Err(e) => {
            tally.record(
                &name,
                Err(format!("the boot or the pmemsave failed: {}", e.0)),
            );
            return Ok(());
        }
    };
    let want_line = format!(
        "screen: {}x{} {} stride {} at {:#x}",
        fb.width,
        fb.height,
        fb.format.name(),
        fb.stride,
        fb.base
    );
    let range = format!("{:#014x}-{:#014x}", fb.base, fb.base + fb.size - 1);
    let memmap_has = [range.as_str()];
    let says = [
        Says::new("memmap", &memmap_has),
        stress_says("stress frames 3000"),
        Says::new("meminfo", &["MemTotal:"]),
    ];
    let mut results = vec![check_commands(
        &out,
        &Expect {
            code: 0,
            contains: &[&want_line],
            absent: &["PANIC", "screen: no framebuffer"],
        },
        &says,
    )];
    match saved {
        None => results.push(Err("no memory saved (the shell never finished)".into())),
        Some(bytes) => {
            let used = fb.used() as usize;
            if bytes.len() < fb.size as usize {
                results.push(Err(format!("pmemsave gave {} bytes", bytes.len())));
            } else {
                if bytes[used..fb.size as usize] != pattern[..] {
                    let first = bytes[used..]
                        .iter()
                        .zip(&pattern)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    results.push(Err(format!(
                        "the node's memory past the picture was written at {:#x}: a frame of \
                         it was handed out",
                        fb.base + (used + first) as u64
                    )));
                }
                let frame = Frame::from_memory(&bytes, &line).expect("size checked above");
                let lines = printed_lines(output_of(&out, "meminfo"));
                results.push(lines_on_screen(&frame, &lines));
                results.push(text_area_clean(&frame));
                results.push(band_and_strip(
                    &frame,
                    &[("free RAM", palette::FREE), ("kernel", palette::KERNEL)],
                ));
                if let Ok(png) = frame_picture(&frame) {
                    let _ = picture::write_png(&png, &work.join(format!("simplefb-{tag}.png")));
                }
            }
        }
    }
    tally.record(&name, all_of(results));
    Ok(())
}

/// A frame as an RGB picture, for a person to look at when a check fails.
fn frame_picture(frame: &Frame) -> std::result::Result<Picture, String> {
    let rgb = frame
        .px
        .iter()
        .flat_map(|&v| {
            let (r, g, b) = match frame.format {
                PixelFormat::R5G6B5 => {
                    let (r, g, b) = ((v >> 11) & 0x1f, (v >> 5) & 0x3f, v & 0x1f);
                    (
                        (r << 3) | (r >> 2),
                        (g << 2) | (g >> 4),
                        (b << 3) | (b >> 2),
                    )
                }
                PixelFormat::X8R8G8B8 | PixelFormat::A8R8G8B8 => {
                    ((v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
                }
                PixelFormat::X2R10G10B10 | PixelFormat::A2R10G10B10 => {
                    ((v >> 22) & 0xff, (v >> 12) & 0xff, (v >> 2) & 0xff)
                }
            };
            [r as u8, g as u8, b as u8]
        })
        .collect();
    Ok(Picture {
        width: frame.width,
        height: frame.height,
        rgb,
    })
}

/// Framebuffer nodes the kernel must refuse: a warning, no screen, the serial shell intact.
fn bad_nodes(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    // (what, node properties, the problem the warning names)
    let cases: [(&str, &str, &str); 5] = [
        (
            "zero width",
            "reg = <0x0 0x7e000000 0x0 0x100000>; width = <0>; height = <480>; \
             stride = <2560>; format = \"a8r8g8b8\";",
            "zero width, height, stride or memory size",
        ),
        (
            "stride * height beyond reg",
            "reg = <0x0 0x7e000000 0x0 0x1000>; width = <640>; height = <480>; \
             stride = <2560>; format = \"a8r8g8b8\";",
            "more than the 0x1000 bytes of memory",
        ),
        (
            "unknown format",
            "reg = <0x0 0x7e000000 0x0 0x100000>; width = <640>; height = <480>; \
             stride = <2560>; format = \"y8u8v8\";",
            "unknown 'format'",
        ),
        (
            "memory outside RAM",
            "reg = <0x0 0xa0000000 0x0 0x12c000>; width = <640>; height = <480>; \
             stride = <2560>; format = \"a8r8g8b8\";",
            "is not in RAM",
        ),
        (
            // QEMU loads the Image 2 MiB into RAM (hw/arm/boot.c, KERNEL_LOAD_ADDR).
            "memory over the kernel image",
            "reg = <0x0 0x40200000 0x0 0x12c000>; width = <640>; height = <480>; \
             stride = <2560>; format = \"a8r8g8b8\";",
            "overlaps the",
        ),
    ];
    for (i, (what, props, problem)) in cases.iter().enumerate() {
        let overlay = format!(
            "/ {{\n chosen {{\n  #address-cells = <2>;\n  #size-cells = <2>;\n  \
             framebuffer@0 {{\n   compatible = \"simple-framebuffer\";\n   {props}\n  }};\n \
             }};\n}};\n"
        );
        let dtb = qemu_dtb_with(work, &format!("simplefb-bad-{i}"), &overlay)?;
        let opts = RunOptions {
            dtb: Some(dtb),
            ..base.clone()
        };
        let out = boot(image, &opts, "screen\nmeminfo\npoweroff\n")?;
        let says = [
            Says::new("screen", &["no screen"]),
            Says::new("meminfo", &["MemTotal:", "MemFree:"]),
        ];
        let commands = check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &[],
                absent: &["PANIC", "screen: 640x480"],
            },
            &says,
        );
        // The warning (kernel/src/screen): one WARN line naming the node and the problem.
        let warned = out
            .output
            .lines()
            .any(|l| {
                l.contains("WARN")
                    && l.contains("screen: no framebuffer: framebuffer 'framebuffer@0'")
                    && l.contains(problem)
            })
            .then_some(())
            .ok_or_else(|| format!("no WARN line `screen: no framebuffer: ... {problem}`"));
        tally.record(
            &format!("simple-framebuffer with {what}: warned, no screen, the shell works"),
            all_of(vec![warned, commands]),
        );
    }
    Ok(())
}

/// `xtask memmap` on the Pixel 6 trees (the project's copies of ../shared/dtbs): with the
/// splash nodes the buffer is the no-map `splash` reservation; the stock tree's memory map
/// gets the same range from the board entry.
fn memmap_splash(tally: &mut Tally) -> Result<()> {
    let dir = crate::workspace_root().join("levitate-mm/tests/dtbs");
    for (file, want) in [
        (
            "gs101-oriole.SYNTHETIC-memory-fb.dtb",
            "0x0000fac00000-0x0000fb5e33ff    9.8 MiB  reserved-memory splash@fac00000 [no-map]",
        ),
        (
            "gs101-oriole.SYNTHETIC-memory.dtb",
            "0x0000fac00000-0x0000fb5e33ff    9.8 MiB  framebuffer     google,gs101-oriole [no-map]",
        ),
    ] {
        let name = format!("xtask memmap {file}: the splash buffer is reserved no-map");
        let path = dir.join(file);
        if !path.is_file() {
            tally.record(&name, Err(format!("{} is missing", path.display())));
            continue;
        }
        let out = Command::new(std::env::current_exe()?)
            .arg("memmap")
            .arg(&path)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result = (out.status.success() && stdout.lines().any(|l| l.trim() == want))
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "status {:?}, no line {want:?} in:\n{stdout}{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        tally.record(&name, result);
    }
    Ok(())
}

/// `printf 'meminfo\npoweroff\n' | cargo xtask run --screenshot FILE.png`: the PNG is the
/// screen after meminfo (its lines on its rows, read back from the PNG), and the held-back
/// `poweroff` still ends the run cleanly afterwards.
fn screenshot_cli(tally: &mut Tally, work: &Path) -> Result<()> {
    let name = "run --screenshot: the PNG shows meminfo's lines, then poweroff ends the run";
    let png = work.join("cli-meminfo.png");
    let _ = std::fs::remove_file(&png);
    let mut child = Command::new(std::env::current_exe()?)
        .args(["run", "--screenshot"])
        .arg(&png)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, b"meminfo\npoweroff\n")?;
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut results = Vec::new();
    if out.status.code() != Some(0) {
        results.push(Err(format!(
            "status {:?}: {}",
            out.status.code(),
            super::harness::tail(&stderr, 10)
        )));
    }
    // The poweroff came after the screenshot, as the shell's answer to it shows.
    if command_outputs(&stdout, "poweroff").is_empty() {
        results.push(Err("the held-back poweroff never reached the shell".into()));
    }
    match read_png(&png) {
        Err(e) => results.push(Err(e)),
        Ok(p) => match screen_line(&stdout) {
            None => results.push(Err("no `screen:` line in the boot log".into())),
            Some(fb) if (p.width, p.height) != (fb.width, fb.height) => results.push(Err(format!(
                "the PNG is {}x{}, the screen {}x{}",
                p.width, p.height, fb.width, fb.height
            ))),
            Some(fb) => {
                let meminfo = command_outputs(&stdout, "meminfo");
                let lines = printed_lines(meminfo.first().copied().unwrap_or(""));
                results.push(lines_on_screen(&Frame::from_picture(&p, fb.format), &lines));
            }
        },
    }
    tally.record(name, all_of(results));
    Ok(())
}

/// Decodes a PNG of 8-bit RGB or indexed colour to RGB.
fn read_png(path: &Path) -> std::result::Result<Picture, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("no PNG at {}: {e}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    // An indexed PNG (what xtask writes for a text screen) comes out as RGB.
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| format!("bad PNG: {e}"))?;
    let size = reader.output_buffer_size().ok_or("PNG too large")?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("bad PNG: {e}"))?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "PNG is {:?} {:?}, not 8-bit RGB",
            info.color_type, info.bit_depth
        ));
    }
    buf.truncate(info.buffer_size());
    Ok(Picture {
        width: info.width as usize,
        height: info.height as usize,
        rgb: buf,
    })
}

/// An arm64 Image that runs `code` (at offset 0x40) and nothing else.
fn tiny_image(code: &[u32]) -> Vec<u8> {
    let mut img = vec![0u8; 0x40];
    img[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b +0x40
    img[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes()); // image_size
    img[0x18..0x20].copy_from_slice(&0xau64.to_le_bytes()); // LE, 4K pages, anywhere
    img[0x38..0x3c].copy_from_slice(b"ARM\x64");
    for c in code {
        img.extend_from_slice(&c.to_le_bytes());
    }
    img
}

/// `cargo xtask run --screenshot` refuses what it cannot do, clearly and with status 1: an
/// unwritable path and a name without .png before building anything, a QEMU without ramfb,
/// a kernel that powers off before its prompt, and one that never prompts (the bounded wait).
fn screenshot_errors(tally: &mut Tally, work: &Path) -> Result<()> {
    let xtask = std::env::current_exe()?;
    let run = |args: &[&std::ffi::OsStr],
               env: &[(&str, std::ffi::OsString)]|
     -> Result<(Option<i32>, String)> {
        let mut cmd = Command::new(&xtask);
        cmd.arg("run").args(args).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let refused = |(code, err): (Option<i32>, String), want: &str| {
        if code == Some(1) && err.contains(want) {
            Ok(())
        } else {
            Err(format!("status {code:?}, stderr lacks {want:?}:\n{err}"))
        }
    };
    let unwritable = work.join("no-such-dir/shot.png");
    tally.record(
        "run --screenshot into a missing directory: a clear error, status 1",
        refused(
            run(&["--screenshot".as_ref(), unwritable.as_os_str()], &[])?,
            "cannot write it",
        ),
    );
    tally.record(
        "run --screenshot with a name not ending in .png: a clear error, status 1",
        refused(
            run(&["--screenshot".as_ref(), work.as_os_str()], &[])?,
            "must end in .png",
        ),
    );
    let dir_png = work.join("a-directory.png");
    std::fs::create_dir_all(&dir_png)?;
    tally.record(
        "run --screenshot onto a directory named .png: a clear error, status 1",
        refused(
            run(&["--screenshot".as_ref(), dir_png.as_os_str()], &[])?,
            "cannot write it",
        ),
    );
    tally.record(
        "run --display --screenshot: refused, status 1",
        refused(
            run(
                &[
                    "--display".as_ref(),
                    "--screenshot".as_ref(),
                    work.join("x.png").as_os_str(),
                ],
                &[],
            )?,
            "do not go together",
        ),
    );
    // A QEMU without ramfb: a stand-in on PATH that answers --version and lists no ramfb.
    let fake = work.join("fake-qemu");
    std::fs::create_dir_all(&fake)?;
    let script = fake.join("qemu-system-aarch64");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$*\" in\n  *--version*) echo 'QEMU emulator version 7.2.0' ;;\n  \
         *help*) echo 'name \"virtio-gpu-device\", bus virtio-bus' ;;\n  *) exit 1 ;;\nesac\n",
    )?;
    let mut perms = std::fs::metadata(&script)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms)?;
    let path = std::env::join_paths(std::iter::once(fake.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    tally.record(
        "run --screenshot with a QEMU that has no ramfb: a clear error, status 1",
        refused(
            run(
                &["--screenshot".as_ref(), work.join("x.png").as_os_str()],
                &[("PATH", path)],
            )?,
            "no ramfb display device",
        ),
    );
    // Kernels that never reach the prompt, booted in place of Levitate (`-- -kernel`, the last
    // -kernel wins).
    let off = work.join("poweroff-at-once.img");
    // movz x0, #0x8; movk x0, #0x8400, lsl #16; hvc #0: PSCI SYSTEM_OFF (QEMU virt at EL1
    // takes PSCI calls by HVC).
    std::fs::write(&off, tiny_image(&[0xd280_0100, 0xf2b0_8000, 0xd400_0002]))?;
    let png = work.join("never.png");
    let _ = std::fs::remove_file(&png);
    let exited = run(
        &[
            "--screenshot".as_ref(),
            png.as_os_str(),
            "--".as_ref(),
            "-kernel".as_ref(),
            off.as_os_str(),
        ],
        &[],
    )?;
    tally.record(
        "run --screenshot with a kernel that powers off before its prompt: a clear error",
        refused(exited, "QEMU exited before").and_then(|()| {
            (!png.exists())
                .then_some(())
                .ok_or_else(|| "a PNG was written anyway".to_string())
        }),
    );
    let spin = work.join("spin-forever.img");
    std::fs::write(&spin, tiny_image(&[0x1400_0000]))?; // b .
    let hung = run(
        &[
            "--screenshot".as_ref(),
            png.as_os_str(),
            "--".as_ref(),
            "-kernel".as_ref(),
            spin.as_os_str(),
        ],
        &[("XTASK_PROMPT_TIMEOUT", "3".into())],
    )?;
    tally.record(
        "run --screenshot with a kernel that never prompts: a bounded wait, a clear error",
        refused(hung, "showed no shell prompt").and_then(|()| {
            (!png.exists())
                .then_some(())
                .ok_or_else(|| "a PNG was written anyway".to_string())
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_line_is_read_field_by_field() {
        let log = "[    0.05] INFO  screen: 1024x768 x8r8g8b8 stride 4096 at 0x47e00000 (ramfb)\n";
        assert_eq!(
            screen_line(log),
            Some(ScreenLine {
                width: 1024,
                height: 768,
                format: PixelFormat::X8R8G8B8,
                stride: 4096,
                base: 0x47e0_0000,
                origin: "ramfb".into(),
            })
        );
        assert_eq!(
            screen_line("screen: no framebuffer: none in the tree\n"),
            None
        );
    }

    /// The comparison finds lines drawn by the renderer and refuses a frame with the wrong
    /// stride or format: the property the QEMU scenarios rely on.
    #[test]
    fn lines_are_found_exactly_and_a_wrong_stride_or_format_is_not() {
        let (w, h) = (640, 480);
        for format in [PixelFormat::X8R8G8B8, PixelFormat::R5G6B5] {
            let bpp = format.bytes_per_pixel() as usize;
            let stride = w * bpp + 64;
            let mut buf = vec![0u8; stride * h];
            {
                let surface = Surface::new(&mut buf, w, h, stride, format).unwrap();
                let mut s = Screen::new(surface);
                s.write_str("boot log\nlevitate> meminfo\nMemTotal: 1 kB\nMemFree: 0 kB\n");
            }
            let fb = ScreenLine {
                width: w,
                height: h,
                format,
                stride,
                base: 0,
                origin: String::new(),
            };
            let frame = Frame::from_memory(&buf, &fb).unwrap();
            let lines = ["MemTotal: 1 kB", "MemFree: 0 kB"];
            assert_eq!(lines_on_screen(&frame, &lines), Ok(()));
            assert!(text_area_clean(&frame).is_ok());
            // Out of order, or a line that is not there.
            assert!(lines_on_screen(&frame, &["MemFree: 0 kB", "MemTotal: 1 kB"]).is_err());
            let e = lines_on_screen(&frame, &["MemTotal: 2 kB"]).unwrap_err();
            assert!(e.contains("on no text row"), "{e}");
            // Read with the stride of unpadded rows, or as another format.
            let skewed = Frame::from_memory(
                &buf,
                &ScreenLine {
                    stride: w * bpp,
                    ..fb.clone()
                },
            )
            .unwrap();
            assert!(lines_on_screen(&skewed, &lines).is_err());
            let other = if format == PixelFormat::R5G6B5 {
                PixelFormat::X8R8G8B8
            } else {
                PixelFormat::X2R10G10B10
            };
            let reformatted = Frame::from_memory(
                &buf,
                &ScreenLine {
                    format: other,
                    width: w * bpp / 4,
                    ..fb.clone()
                },
            )
            .unwrap();
            assert!(lines_on_screen(&reformatted, &lines).is_err());
        }
    }

    #[test]
    fn foreign_pixels_in_the_text_area_are_found() {
        let (w, h) = (640, 480);
        let mut buf = vec![0u8; w * 4 * h];
        {
            let surface = Surface::new(&mut buf, w, h, w * 4, PixelFormat::A8R8G8B8).unwrap();
            let mut s = Screen::new(surface);
            s.write_str("text\n");
        }
        let at = (h - 1) * w * 4 + 8;
        buf[at..at + 4].copy_from_slice(&0xaaaa_aaaau32.to_le_bytes());
        let fb = ScreenLine {
            width: w,
            height: h,
            format: PixelFormat::A8R8G8B8,
            stride: w * 4,
            base: 0,
            origin: String::new(),
        };
        let e = text_area_clean(&Frame::from_memory(&buf, &fb).unwrap()).unwrap_err();
        assert!(e.contains("(2, 479)"), "{e}");
    }
}
