//! Finding the framebuffer the boot loader left scanning out: `simple-framebuffer` nodes under
//! `/chosen` (Linux Documentation/devicetree/bindings/display/simple-framebuffer.yaml), checked
//! before anything draws, and the one board entry that supplies a buffer the stock tree of a
//! known phone does not describe.
//!
//! Property values come from firmware: every one is checked and a bad one is a [`Rejected`]
//! naming the node and the problem, never a panic. What [`discover`] returns says nothing about
//! RAM; [`Framebuffer::check_in`] checks the buffer against the memory map's RAM.

use crate::addr::PhysAddr;
use crate::dtb::tree;
use crate::region::Region;
use core::fmt;
use fdt::node::FdtNode;
use fdt::Fdt;

/// The pixel formats of the binding's `format` property that Levitate draws. Names read from
/// the most significant bit down; pixels are stored little-endian, as Linux's simplefb
/// (`SIMPLEFB_FORMATS`, DRM fourccs) and QEMU's ramfb read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 16 bits: red 15..11, green 10..5, blue 4..0.
    R5G6B5,
    /// 32 bits: unused 31..24, red 23..16, green 15..8, blue 7..0.
    X8R8G8B8,
    /// 32 bits: alpha 31..24, red 23..16, green 15..8, blue 7..0.
    A8R8G8B8,
    /// 32 bits: unused 31..30, red 29..20, green 19..10, blue 9..0.
    X2R10G10B10,
    /// 32 bits: alpha 31..30, red 29..20, green 19..10, blue 9..0.
    A2R10G10B10,
}

impl PixelFormat {
    /// Every format, for tests and tables.
    pub const ALL: [PixelFormat; 5] = [
        PixelFormat::R5G6B5,
        PixelFormat::X8R8G8B8,
        PixelFormat::A8R8G8B8,
        PixelFormat::X2R10G10B10,
        PixelFormat::A2R10G10B10,
    ];

    /// The format named by a `format` value (the binding's spelling), if Levitate draws it.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name().as_bytes() == name)
    }

    /// The binding's name for the format.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::R5G6B5 => "r5g6b5",
            PixelFormat::X8R8G8B8 => "x8r8g8b8",
            PixelFormat::A8R8G8B8 => "a8r8g8b8",
            PixelFormat::X2R10G10B10 => "x2r10g10b10",
            PixelFormat::A2R10G10B10 => "a2r10g10b10",
        }
    }

    /// Bytes one pixel takes.
    pub const fn bytes_per_pixel(self) -> u32 {
        match self {
            PixelFormat::R5G6B5 => 2,
            _ => 4,
        }
    }

    /// The pixel value of an opaque 8-bit-per-channel colour (alpha, where the format has it,
    /// all ones: the binding says nothing of blending, and an opaque pixel shows on any
    /// panel).
    pub const fn encode(self, r: u8, g: u8, b: u8) -> u32 {
        let (r, g, b) = (r as u32, g as u32, b as u32);
        // Widening 8 to 10 bits repeats the top bits, so 0xff becomes 0x3ff (full scale).
        const fn ten(c: u32) -> u32 {
            (c << 2) | (c >> 6)
        }
        match self {
            PixelFormat::R5G6B5 => ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3),
            PixelFormat::X8R8G8B8 => (r << 16) | (g << 8) | b,
            PixelFormat::A8R8G8B8 => 0xff00_0000 | (r << 16) | (g << 8) | b,
            PixelFormat::X2R10G10B10 => (ten(r) << 20) | (ten(g) << 10) | ten(b),
            PixelFormat::A2R10G10B10 => 0xc000_0000 | (ten(r) << 20) | (ten(g) << 10) | ten(b),
        }
    }

    /// The DRM fourcc of the format (include/uapi/drm/drm_fourcc.h), as QEMU's ramfb takes it.
    pub const fn fourcc(self) -> u32 {
        const fn code(s: &[u8; 4]) -> u32 {
            u32::from_le_bytes(*s)
        }
        match self {
            PixelFormat::R5G6B5 => code(b"RG16"),
            PixelFormat::X8R8G8B8 => code(b"XR24"),
            PixelFormat::A8R8G8B8 => code(b"AR24"),
            PixelFormat::X2R10G10B10 => code(b"XR30"),
            PixelFormat::A2R10G10B10 => code(b"AR30"),
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a framebuffer description came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A `simple-framebuffer` node of the tree (its name).
    Tree(&'a str),
    /// The board entry for this root `compatible` ([`BOARDS`]).
    Board(&'static str),
    /// A buffer the kernel set up itself (QEMU's ramfb).
    Kernel,
}

/// A framebuffer that passed every check that needs no memory map: a whole buffer of
/// `stride * height` bytes inside `region`, rows of at least `width` pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framebuffer<'a> {
    /// The memory the description names (`reg`, or the `memory-region` node's `reg`).
    pub region: Region,
    /// Visible pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes from one row to the next.
    pub stride: u32,
    /// How a pixel is stored.
    pub format: PixelFormat,
    /// Where the description came from.
    pub origin: Origin<'a>,
}

impl<'a> Framebuffer<'a> {
    /// Checks a description (the rules of [`Problem`]) and builds the framebuffer.
    pub fn new(
        region: Region,
        width: u32,
        height: u32,
        stride: u32,
        format: PixelFormat,
        origin: Origin<'a>,
    ) -> Result<Self, Problem> {
        if width == 0 || height == 0 || stride == 0 || region.size == 0 {
            return Err(Problem::ZeroSize);
        }
        let row = u64::from(width) * u64::from(format.bytes_per_pixel());
        if u64::from(stride) < row {
            return Err(Problem::StrideTooSmall { stride, row });
        }
        // Both factors fit in 32 bits, so the product fits in 64.
        let needed = u64::from(stride) * u64::from(height);
        if needed > region.size {
            return Err(Problem::BeyondReg {
                needed,
                size: region.size,
            });
        }
        if region.base.as_u64().checked_add(region.size).is_none() {
            return Err(Problem::PastTop);
        }
        Ok(Self {
            region,
            width,
            height,
            stride,
            format,
            origin,
        })
    }

    /// The bytes the panel scans out: `stride * height` from the base.
    pub fn used(&self) -> Region {
        Region::new(
            self.region.base,
            u64::from(self.stride) * u64::from(self.height),
        )
    }

    /// Whether the scanned-out bytes lie wholly in `ram` (sorted, merged ranges, as
    /// [`crate::memmap::MemoryMap::memory`] gives them). The kernel draws only into RAM it
    /// knows: a buffer elsewhere could be device registers.
    pub fn check_in(&self, ram: &[Region]) -> Result<(), Problem> {
        let used = self.used();
        if ram
            .iter()
            .any(|r| r.base <= used.base && used.end() <= r.end())
        {
            Ok(())
        } else {
            Err(Problem::OutsideRam { region: used })
        }
    }
}

/// Why a framebuffer description gives no screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A property the binding requires is absent.
    Missing {
        /// Its name.
        property: &'static str,
    },
    /// A number property is not one cell.
    BadLength {
        /// Its name.
        property: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// `reg` (or the `memory-region` node's) is not one whole entry in a cell size that can
    /// describe a physical range.
    BadReg,
    /// `memory-region` is not one phandle, or names no node with a `reg`.
    BadMemoryRegion,
    /// `format` is not one of the formats Levitate draws (or not a string).
    UnknownFormat,
    /// `width`, `height`, `stride` or the memory is zero.
    ZeroSize,
    /// A row is shorter than `width` pixels.
    StrideTooSmall {
        /// The given stride.
        stride: u32,
        /// `width` times the bytes per pixel.
        row: u64,
    },
    /// `stride * height` is more than the memory holds.
    BeyondReg {
        /// `stride * height`.
        needed: u64,
        /// The memory's size.
        size: u64,
    },
    /// The memory runs past the top of the address space.
    PastTop,
    /// The scanned-out bytes are not wholly in RAM.
    OutsideRam {
        /// `stride * height` bytes from the base.
        region: Region,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::Missing { property } => write!(f, "no '{property}'"),
            Problem::BadLength { property, len } => {
                write!(f, "'{property}' is {len} bytes, not one cell")
            }
            Problem::BadReg => f.write_str("'reg' is not one address and size"),
            Problem::BadMemoryRegion => {
                f.write_str("'memory-region' names no reserved-memory node with a 'reg'")
            }
            Problem::UnknownFormat => f.write_str(
                "unknown 'format' (r5g6b5, x8r8g8b8, a8r8g8b8, x2r10g10b10, a2r10g10b10 are drawn)",
            ),
            Problem::ZeroSize => f.write_str("zero width, height, stride or memory size"),
            Problem::StrideTooSmall { stride, row } => {
                write!(f, "stride {stride} is less than a row of {row} bytes")
            }
            Problem::BeyondReg { needed, size } => write!(
                f,
                "stride * height = {needed:#x} bytes, more than the {size:#x} bytes of memory"
            ),
            Problem::PastTop => f.write_str("memory runs past the top of the address space"),
            Problem::OutsideRam { region } => write!(
                f,
                "buffer {:#x}-{:#x} is not in RAM",
                region.base.as_u64(),
                region.end().saturating_sub(1)
            ),
        }
    }
}

/// A node that describes a framebuffer the kernel will not draw on, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected<'a> {
    /// The node's name (or the board's compatible).
    pub node: &'a str,
    /// What is wrong.
    pub problem: Problem,
    /// The memory the node names, when it could be decoded: still scanned out by the display
    /// engine, so still kept from the allocators.
    pub region: Option<Region>,
}

impl fmt::Display for Rejected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "framebuffer '{}': {}; no screen console",
            self.node, self.problem
        )
    }
}

/// What [`discover`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery<'a> {
    /// No framebuffer node and no board entry (QEMU: try ramfb).
    None,
    /// A node is there but disabled: the boot loader left no buffer scanning out.
    Disabled(&'a str),
    /// A framebuffer to draw on, once [`Framebuffer::check_in`] agrees.
    Found(Framebuffer<'a>),
    /// A node that cannot be drawn on.
    Rejected(Rejected<'a>),
}

impl<'a> Discovery<'a> {
    /// The memory to keep from the allocators: the described buffer, whether or not it can
    /// be drawn on (the display engine may scan it out either way).
    pub fn reserve(&self) -> Option<Region> {
        match self {
            Discovery::Found(fb) => Some(fb.region),
            Discovery::Rejected(r) => r.region,
            Discovery::None | Discovery::Disabled(_) => None,
        }
    }
}

/// A board whose stock tree may not describe the buffer its boot loader leaves on. Keyed on
/// the root `compatible`; the only place a board name chooses behaviour (docs/pixel6.md).
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// The root `compatible` entry that selects it.
    pub compatible: &'static str,
    /// The buffer's base.
    pub base: u64,
    /// Visible pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes per row.
    pub stride: u32,
    /// Pixel format.
    pub format: PixelFormat,
}

/// Known boards. Pixel 6 (oriole): the splash buffer of later mainline oriole trees
/// (`framebuffer@fac00000` and the no-map `splash@fac00000` reserved-memory node), which the
/// boot loader leaves the panel scanning out. Untested on a phone.
pub const BOARDS: &[Board] = &[Board {
    compatible: "google,gs101-oriole",
    base: 0xfac0_0000,
    width: 1080,
    height: 2400,
    stride: 4320,
    format: PixelFormat::A8R8G8B8,
}];

/// One big-endian cell, or why not.
fn one_cell(node: &FdtNode<'_, '_>, property: &'static str) -> Result<u32, Problem> {
    let p = node
        .property(property)
        .ok_or(Problem::Missing { property })?;
    match *p.value {
        [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(Problem::BadLength {
            property,
            len: p.value.len(),
        }),
    }
}

/// Whether `status` is absent, "okay" or "ok" (spec 2.3.4).
fn enabled(node: &FdtNode<'_, '_>) -> bool {
    node.property("status").is_none_or(|p| {
        matches!(
            p.value.split(|&b| b == 0).next().unwrap_or(&[]),
            b"okay" | b"ok"
        )
    })
}

/// The one `reg` entry of a `reg` value, in the given cell sizes.
fn single_reg(
    value: &[u8],
    (address_cells, size_cells): (usize, usize),
) -> Result<Region, Problem> {
    if !(1..=2).contains(&address_cells)
        || !(1..=2).contains(&size_cells)
        || value.len() != (address_cells + size_cells) * 4
    {
        return Err(Problem::BadReg);
    }
    let (base, size) = tree::reg_entries(value, address_cells, size_cells)
        .next()
        .ok_or(Problem::BadReg)?;
    if size == 0 {
        return Err(Problem::ZeroSize);
    }
    if base.checked_add(size).is_none() {
        return Err(Problem::PastTop);
    }
    Ok(Region::new(PhysAddr::new(base), size))
}

/// The memory a `memory-region` phandle names: the `reg` of the node with that `phandle`
/// (in its parent's cell sizes, normally `/reserved-memory`'s).
fn memory_region(fdt: &Fdt<'_>, value: &[u8]) -> Result<Region, Problem> {
    let [a, b, c, d] = *value else {
        return Err(Problem::BadMemoryRegion);
    };
    let wanted = u32::from_be_bytes([a, b, c, d]);
    let target = tree::find_map(fdt, |at| {
        let p = at
            .node
            .property("phandle")
            .or_else(|| at.node.property("linux,phandle"))?;
        (p.value == wanted.to_be_bytes()).then(|| {
            let reg = at.node.property("reg")?;
            single_reg(reg.value, at.reg_cell_sizes()).ok()
        })
    });
    target.flatten().ok_or(Problem::BadMemoryRegion)
}

/// Reads one enabled `simple-framebuffer` node. `cells` are the cell sizes its `reg` uses.
fn read_node<'a>(
    fdt: &Fdt<'a>,
    node: &FdtNode<'_, 'a>,
    cells: (usize, usize),
) -> Result<Framebuffer<'a>, Rejected<'a>> {
    let reject = |problem, region| Rejected {
        node: node.name,
        problem,
        region,
    };
    // simple-framebuffer.yaml: with `memory-region`, that node's memory is the buffer and
    // `reg` may be left out (Linux's simplefb then ignores `reg`).
    let region = match node.property("memory-region") {
        Some(p) => memory_region(fdt, p.value),
        None => match node.property("reg") {
            Some(reg) => single_reg(reg.value, cells),
            None => Err(Problem::Missing { property: "reg" }),
        },
    }
    .map_err(|p| reject(p, None))?;
    let keep = Some(region);
    let width = one_cell(node, "width").map_err(|p| reject(p, keep))?;
    let height = one_cell(node, "height").map_err(|p| reject(p, keep))?;
    let stride = one_cell(node, "stride").map_err(|p| reject(p, keep))?;
    let format = node
        .property("format")
        .ok_or(Problem::Missing { property: "format" })
        .and_then(|p| {
            // A string: its bytes up to the NUL that must end it.
            let name = p.value.strip_suffix(&[0]).ok_or(Problem::UnknownFormat)?;
            PixelFormat::from_name(name).ok_or(Problem::UnknownFormat)
        })
        .map_err(|p| reject(p, keep))?;
    Framebuffer::new(
        region,
        width,
        height,
        stride,
        format,
        Origin::Tree(node.name),
    )
    .map_err(|p| reject(p, keep))
}

/// Finds the framebuffer: the first `simple-framebuffer` child of `/chosen` (the binding
/// requires them there, named `framebuffer@<address>`). An enabled node is read and checked;
/// with only disabled ones, none. With no node at all, the board entry whose `compatible` the
/// root carries, if any. A tree that describes a framebuffer, even a bad one, always wins over
/// the board entry.
pub fn discover<'a>(fdt: &Fdt<'a>) -> Discovery<'a> {
    let Some(root) = fdt.find_node("/") else {
        return Discovery::None;
    };
    let chosen = root
        .children()
        .find(|n| n.name == "chosen" || n.name.starts_with("chosen@"));
    if let Some(chosen) = chosen {
        // The nodes' `reg` uses /chosen's cell sizes; Linux (of_n_addr_cells) looks up the
        // tree when /chosen declares none, so do we.
        let cells = if chosen.property("#address-cells").is_some() {
            tree::child_cell_sizes(&chosen)
        } else {
            tree::child_cell_sizes(&root)
        };
        let mut disabled = None;
        for node in chosen
            .children()
            .filter(|n| tree::is_compatible(n, &["simple-framebuffer"]))
        {
            if !enabled(&node) {
                disabled.get_or_insert(node.name);
                continue;
            }
            return match read_node(fdt, &node, cells) {
                Ok(fb) => Discovery::Found(fb),
                Err(r) => Discovery::Rejected(r),
            };
        }
        if let Some(name) = disabled {
            return Discovery::Disabled(name);
        }
    }
    match BOARDS
        .iter()
        .find(|b| tree::is_compatible(&root, &[b.compatible]))
    {
        Some(b) => {
            let region = Region::new(
                PhysAddr::new(b.base),
                u64::from(b.stride) * u64::from(b.height),
            );
            match Framebuffer::new(
                region,
                b.width,
                b.height,
                b.stride,
                b.format,
                Origin::Board(b.compatible),
            ) {
                Ok(fb) => Discovery::Found(fb),
                Err(problem) => Discovery::Rejected(Rejected {
                    node: b.compatible,
                    problem,
                    region: Some(region),
                }),
            }
        }
        None => Discovery::None,
    }
}

#[cfg(test)]
mod tests;
