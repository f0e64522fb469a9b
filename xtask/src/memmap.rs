//! `cargo xtask memmap DTB [--json] [--svg FILE] [--kernel BASE:SIZE] [--dtb-base BASE]
//! [--pa-bits N]`: the kernel's own memory-map code (levitate-mm) run on a device tree file.
//! [`check_tree`] runs the same code for `cargo xtask run --dtb`.

use crate::{bail, Result};
use levitate_mm::addr::PhysAddr;
use levitate_mm::dtb::{check, pack};
use levitate_mm::mem_map::{self, Placement, PAGE_STRUCT_SIZE};
use levitate_mm::memmap::{Addressable, BuildOptions, KnownRegions, MemoryMap};
use levitate_mm::region::Region;
use levitate_mm::report::{Size, Table};
use lexopt::ValueExt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask memmap DTB [--json] [--svg FILE] [--kernel BASE:SIZE] \
                     [--dtb-base BASE] [--pa-bits N]";

/// The kernel's linear map covers physical addresses below this (levitate-hal/src/layout.rs
/// `LINEAR_SIZE`, 128 TiB; kernel/src/mm/memory.rs asserts the two agree).
pub const LINEAR_END: u64 = 1 << 47;

/// `--pa-bits` when absent: a 48-bit CPU, the most the kernel's tables address.
pub const DEFAULT_PA_BITS: u8 = 48;

/// What the kernel would allow on a CPU with `pa_bits` physical address bits.
pub fn kernel_addressable(pa_bits: u8) -> Addressable {
    Addressable {
        pa_bits,
        linear_end: LINEAR_END,
    }
}

/// Parses `--pa-bits`: a size ID_AA64MMFR0_EL1.PARange can report.
fn parse_pa_bits(s: &str) -> Result<u8> {
    let valid: Vec<u8> = (0..=7)
        .filter_map(Addressable::pa_bits_from_parange)
        .collect();
    match s.trim().parse::<u8>() {
        Ok(n) if valid.contains(&n) => Ok(n),
        _ => {
            let list: Vec<String> = valid.iter().map(u8::to_string).collect();
            bail!(
                "bad --pa-bits `{s}`: expected a physical address size ID_AA64MMFR0_EL1.PARange \
                 can report ({})",
                list.join(", ")
            )
        }
    }
}

fn parse_u64(s: &str, what: &str) -> Result<u64> {
    let t = s.trim().replace('_', "");
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|_| {
        crate::Error(format!(
            "bad {what} `{s}`: expected a number such as 0x40200000"
        ))
    })
}

struct Options {
    dtb: PathBuf,
    json: bool,
    svg: Option<PathBuf>,
    kernel: Option<Region>,
    dtb_base: Option<u64>,
    pa_bits: u8,
}

fn parse(parser: &mut lexopt::Parser) -> Result<Options> {
    use lexopt::Arg::{Long, Value};
    let (mut dtb, mut json, mut svg, mut kernel, mut dtb_base) = (None, false, None, None, None);
    let mut pa_bits = DEFAULT_PA_BITS;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("json") => json = true,
            Long("svg") => svg = Some(PathBuf::from(parser.value()?)),
            Long("kernel") => {
                let v = parser.value()?.string()?;
                let Some((base, size)) = v.split_once(':') else {
                    bail!("bad --kernel `{v}`: expected BASE:SIZE, e.g. 0x40200000:0x200000");
                };
                kernel = Some(Region::new(
                    PhysAddr::new(parse_u64(base, "--kernel base")?),
                    parse_u64(size, "--kernel size")?,
                ));
            }
            Long("dtb-base") => {
                dtb_base = Some(parse_u64(&parser.value()?.string()?, "--dtb-base")?)
            }
            Long("pa-bits") => pa_bits = parse_pa_bits(&parser.value()?.string()?)?,
            Value(v) if dtb.is_none() => dtb = Some(PathBuf::from(v)),
            other => bail!("{} ({USAGE})", other.unexpected()),
        }
    }
    let Some(dtb) = dtb else {
        bail!("no device tree given ({USAGE})")
    };
    Ok(Options {
        dtb,
        json,
        svg,
        kernel,
        dtb_base,
        pa_bits,
    })
}

/// What `memmap` prints, and the picture when asked for.
pub struct Rendered {
    /// The table or the JSON object.
    pub text: String,
    /// The SVG document, when `svg` was requested.
    pub svg: Option<String>,
}

/// Runs the kernel's device-tree check and memory-map code on `blob` (as the kernel does at
/// boot: pack, which checks the structure, then the map, the mem_map's place and `validate`)
/// and hands the result to `f`. Every refusal is an error with the text the kernel would give.
fn with_map<R>(
    blob: &[u8],
    known: &KnownRegions,
    options: &BuildOptions<'_>,
    f: impl FnOnce(&MemoryMap<'_>, &Placement) -> R,
) -> Result<R> {
    // kernel/src/devicetree.rs refuses a header claiming more than this before parsing.
    if let Ok(claimed) = check::total_size(blob) {
        if claimed > check::MAX_TOTAL_SIZE {
            bail!(
                "device tree claims {claimed} bytes, more than the {} the kernel accepts",
                Size(check::MAX_TOTAL_SIZE as u64)
            );
        }
    }
    let size = pack::packed_size(blob).map_err(|e| format!("corrupt device tree: {e}"))?;
    let mut packed = vec![0u8; size];
    pack::pack_into(blob, &mut packed).map_err(|e| format!("corrupt device tree: {e}"))?;
    let fdt = fdt::Fdt::new(&packed).map_err(|e| format!("corrupt device tree: {e:?}"))?;
    let mut map = MemoryMap::from_fdt_with(&fdt, known, options)?;
    let placement = mem_map::place(&mut map)?;
    if let Err(e) = map.validate() {
        bail!("memory map invariant broken: {e}");
    }
    Ok(f(&map, &placement))
}

/// Whether the kernel would accept `blob` as its device tree: `Ok` with the map's warnings,
/// or the error `cargo xtask memmap` prints. `options.ram` stands for a boot loader that
/// rewrites the memory nodes (QEMU's `-dtb`).
pub fn check_tree(
    blob: &[u8],
    known: &KnownRegions,
    options: &BuildOptions<'_>,
) -> Result<Vec<String>> {
    with_map(blob, known, options, |map, _| {
        map.warnings().iter().map(ToString::to_string).collect()
    })
}

/// Runs the kernel's memory-map code on `blob` and renders it.
pub fn render(
    blob: &[u8],
    known: &KnownRegions,
    options: &BuildOptions<'_>,
    as_json: bool,
    with_svg: bool,
) -> Result<Rendered> {
    with_map(blob, known, options, |map, placement| Rendered {
        text: if as_json {
            json(map, placement)
        } else {
            Table {
                map,
                mem_map: Some(placement),
            }
            .to_string()
        },
        svg: with_svg.then(|| svg(map, placement)),
    })
}

/// `cargo xtask memmap`.
pub fn run(parser: &mut lexopt::Parser) -> Result<ExitCode> {
    let o = parse(parser)?;
    let blob =
        std::fs::read(&o.dtb).map_err(|e| format!("cannot read {}: {e}", o.dtb.display()))?;
    let known = KnownRegions {
        dtb: o
            .dtb_base
            .map(|b| Region::new(PhysAddr::new(b), blob.len() as u64)),
        kernel: o.kernel,
    };
    let options = BuildOptions {
        addressable: kernel_addressable(o.pa_bits),
        ram: None,
    };
    let out = render(&blob, &known, &options, o.json, o.svg.is_some())
        .map_err(|e| format!("{}: {}", o.dtb.display(), e.0))?;
    if o.json {
        println!("{}", out.text);
    } else {
        print!("{}", out.text);
    }
    if let (Some(path), Some(svg)) = (&o.svg, &out.svg) {
        std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if !o.json {
            println!("picture: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn ranges(list: &[Region]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|r| format!("{{\"base\":{},\"size\":{}}}", r.base.as_u64(), r.size))
        .collect();
    format!("[{}]", items.join(","))
}

/// The map as one JSON object (integers as JSON numbers).
pub fn json(map: &MemoryMap<'_>, placement: &Placement) -> String {
    let reserved: Vec<String> = map
        .reserved()
        .iter()
        .map(|r| {
            format!(
                "{{\"base\":{},\"size\":{},\"name\":{},\"source\":{},\"no_map\":{},\"reusable\":{}}}",
                r.region.base.as_u64(),
                r.region.size,
                json_str(r.name),
                json_str(r.source.as_str()),
                r.no_map,
                r.reusable
            )
        })
        .collect();
    let warnings: Vec<String> = map
        .warnings()
        .iter()
        .map(|w| json_str(&w.to_string()))
        .collect();
    format!(
        "{{\"memory\":{},\"reserved\":[{}],\"usable\":{},\"mem_map\":{{\"base\":{},\"size\":{},\"frames\":{},\"bytes_per_frame\":{}}},\"warnings\":[{}]}}",
        ranges(map.memory()),
        reserved.join(","),
        ranges(map.usable()),
        placement.region.base.as_u64(),
        placement.region.size,
        placement.layout.frames(),
        PAGE_STRUCT_SIZE,
        warnings.join(",")
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The physical map drawn to scale: one bar per RAM range (each to its own scale, so a 36 GiB
/// hole does not squash everything), usable in green, reservations in red (no-map) or orange,
/// the mem_map in blue, labels under the bar.
pub fn svg(map: &MemoryMap<'_>, placement: &Placement) -> String {
    const W: f64 = 1000.0;
    const LEFT: f64 = 20.0;
    const BAR: f64 = 36.0;
    let mut body = String::new();
    let mut y = 40.0;
    for ram in map.memory() {
        let scale = W / ram.size as f64;
        let x_of = |a: u64| LEFT + (a.saturating_sub(ram.base.as_u64())) as f64 * scale;
        let width = |r: &Region| (r.intersect(ram).size as f64 * scale).max(1.0);
        let _ = writeln!(
            body,
            r##"<text x="{LEFT}" y="{}" class="title">RAM {:#x}-{:#x} ({})</text>"##,
            y - 8.0,
            ram.base.as_u64(),
            ram.end() - 1,
            Size(ram.size)
        );
        let _ = writeln!(
            body,
            r##"<rect x="{LEFT}" y="{y}" width="{W}" height="{BAR}" fill="#ddd" stroke="#333"/>"##
        );
        for u in map.usable().iter().filter(|u| u.overlaps(ram)) {
            let _ = writeln!(
                body,
                r##"<rect x="{:.1}" y="{y}" width="{:.1}" height="{BAR}" fill="#7c7"><title>usable {:#x}-{:#x} ({})</title></rect>"##,
                x_of(u.base.as_u64()),
                width(u),
                u.base.as_u64(),
                u.end() - 1,
                Size(u.size)
            );
        }
        let mut label_y = y + BAR + 14.0;
        for r in map.reserved().iter().filter(|r| r.region.overlaps(ram)) {
            let colour = if r.source.as_str() == "mem_map" {
                "#48c"
            } else if r.no_map {
                "#d44"
            } else {
                "#e93"
            };
            let x = x_of(r.region.base.as_u64().max(ram.base.as_u64()));
            let _ = writeln!(
                body,
                r##"<rect x="{x:.1}" y="{y}" width="{:.1}" height="{BAR}" fill="{colour}"><title>{} ({}) {:#x}-{:#x} {}</title></rect>"##,
                width(&r.region),
                xml(r.name),
                r.source.as_str(),
                r.region.base.as_u64(),
                r.region.end() - 1,
                Size(r.region.size)
            );
            // Labels right of the middle hang to the left of their line, so none runs off.
            let (text_x, anchor) = if x > LEFT + W / 2.0 {
                (x - 2.0, "end")
            } else {
                (x + 2.0, "start")
            };
            let _ = writeln!(
                body,
                r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{colour}"/><text x="{text_x:.1}" y="{label_y}" class="label" text-anchor="{anchor}">{} {}</text>"##,
                y + BAR,
                label_y - 4.0,
                xml(r.name),
                Size(r.region.size)
            );
            label_y += 12.0;
        }
        y = label_y + 40.0;
    }
    let _ = writeln!(
        body,
        r##"<text x="{LEFT}" y="{y}" class="label">green usable, orange reserved, red no-map, blue mem_map ({}, {} frames); each bar is one RAM range to its own scale</text>"##,
        Size(placement.region.size),
        placement.layout.frames()
    );
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="monospace">
<style>.title {{ font-size: 13px; font-weight: bold }} .label {{ font-size: 10px }}</style>
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"##,
        W + 2.0 * LEFT,
        y + 20.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_options() -> BuildOptions<'static> {
        BuildOptions {
            addressable: kernel_addressable(DEFAULT_PA_BITS),
            ram: None,
        }
    }

    fn dtbs() -> Vec<(String, Vec<u8>)> {
        let dir = crate::workspace_root().join("levitate-mm/tests/dtbs");
        let mut all: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "dtb"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        all.sort();
        assert!(all.len() >= 8);
        all
    }

    fn num(v: &serde_json::Value) -> u64 {
        v.as_u64()
            .unwrap_or_else(|| panic!("{v} is not a JSON integer"))
    }

    #[test]
    fn json_for_every_board() {
        for (name, blob) in dtbs() {
            let out = render(
                &blob,
                &KnownRegions::default(),
                &default_options(),
                true,
                true,
            );
            if name == "gs101-oriole.dtb" {
                let e = out.err().expect("the tree without /memory must be refused");
                assert!(e.0.contains("no RAM"), "{name}: {}", e.0);
                continue;
            }
            let out = out.unwrap_or_else(|e| panic!("{name}: {}", e.0));
            let v: serde_json::Value =
                serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let memory: u64 = v["memory"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| num(&r["size"]))
                .sum();
            let usable: u64 = v["usable"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| num(&r["size"]))
                .sum();
            assert!(memory > 0 && usable > 0 && usable < memory, "{name}");
            for r in v["reserved"].as_array().unwrap() {
                num(&r["base"]);
                num(&r["size"]);
                assert!(
                    r["name"].is_string() && r["no_map"].is_boolean() && r["reusable"].is_boolean()
                );
                let source = r["source"].as_str().unwrap();
                assert!(
                    [
                        "memreserve",
                        "reserved-memory",
                        "dynamic",
                        "initrd",
                        "dtb",
                        "kernel",
                        "early",
                        "mem_map",
                        "framebuffer"
                    ]
                    .contains(&source),
                    "{name}: source {source}"
                );
            }
            let mm = &v["mem_map"];
            assert_eq!(num(&mm["bytes_per_frame"]), 16);
            assert!(num(&mm["frames"]) * 16 <= num(&mm["size"]), "{name}");
            assert_eq!(
                num(&mm["frames"]) * 4096,
                usable,
                "{name}: one Page per usable frame"
            );
            assert!(v["warnings"].is_array());
            assert!(out.svg.unwrap().starts_with("<svg"), "{name}");
        }
    }

    #[test]
    fn pixel6_mem_map_fits_in_32_mib() {
        let blob = std::fs::read(
            crate::workspace_root()
                .join("levitate-mm/tests/dtbs/gs101-oriole.SYNTHETIC-memory.dtb"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(
            &render(
                &blob,
                &KnownRegions::default(),
                &default_options(),
                true,
                false,
            )
            .unwrap()
            .text,
        )
        .unwrap();
        assert!(num(&v["mem_map"]["size"]) <= 32 << 20);
        assert_eq!(v["memory"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn known_regions_appear_and_corrupt_trees_are_errors() {
        let blob =
            std::fs::read(crate::workspace_root().join("levitate-mm/tests/dtbs/qemu-virt-1g.dtb"))
                .unwrap();
        let known = KnownRegions {
            dtb: Some(Region::new(PhysAddr::new(0x4800_0000), blob.len() as u64)),
            kernel: Some(Region::new(PhysAddr::new(0x4020_0000), 0x30_0000)),
        };
        let options = default_options();
        let text = render(&blob, &known, &options, false, false).unwrap().text;
        assert!(text.contains("kernel") && text.contains("dtb"), "{text}");
        for cut in [0, 10, 100, blob.len() / 2] {
            assert!(render(&blob[..cut], &known, &options, true, false).is_err());
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn numbers_in_hex_or_decimal() {
        assert_eq!(parse_u64("0x4020_0000", "x").unwrap(), 0x4020_0000);
        assert_eq!(parse_u64("4096", "x").unwrap(), 4096);
        assert!(parse_u64("zz", "x").is_err());
    }
}
