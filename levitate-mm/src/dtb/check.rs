//! Full structural check of a flattened device tree blob (DTB), run before the blob is handed to
//! the `fdt` crate.
//!
//! The blob comes from firmware or a boot loader, so the kernel cannot trust it. `fdt` 0.1.5
//! trusts its input in many places: it slices with unchecked offsets, `unwrap`s and `expect`s
//! while walking, and keeps fixed-size state. A malformed blob can make it panic, recurse
//! until the stack overflows, or loop forever. [`check`] walks the whole blob once, in O(n)
//! time, without allocating. If it returns `Ok`, every `fdt` accessor we audited can walk the
//! blob without panicking (apart from accessors that panic by design when a node is missing;
//! see below).
//!
//! # What is checked (Devicetree Specification v0.4, chapter 5 "Flattened Devicetree (DTB) Format")
//!
//! * §5.2 header: the buffer holds the 40-byte (v17) header, the magic is `0xd00dfeed`,
//!   `totalsize` is at least the header size and fits in the buffer, and
//!   `version >= 16 && last_comp_version <= 17` (the range libfdt supports, §5.1).
//! * §5.2/§5.6 block layout: the memory reservation map, structure block and strings block lie
//!   inside `totalsize` (without overflow) and after the header, don't overlap each other, and
//!   the map is 8-byte aligned and the structure block 4-byte aligned.
//! * §5.3 memory reservation map: a `(0, 0)` entry ends it before it runs into another
//!   block or past `totalsize`.
//! * §5.4 structure block: every token is 4-byte aligned and inside the block, node names
//!   are NUL-terminated inside the block, property values lie inside the block, property
//!   name offsets point at a non-empty, NUL-terminated name inside the strings block (§5.5),
//!   the root node comes first, `FDT_BEGIN_NODE`/`FDT_END_NODE` balance, nesting is at most
//!   [`MAX_DEPTH`], properties come before child nodes (§5.4.2), only `FDT_NOP` may follow the
//!   root node, and an `FDT_END` token ends the tree. Bytes after `FDT_END` inside
//!   `size_dt_struct` are ignored. Unknown tokens are rejected, with their offset.
//!
//! # Extra rules that guard against `fdt` 0.1.5 weaknesses
//!
//! Each rule below rejects input that is malformed, or at least unusual, and that makes a
//! specific `fdt` 0.1.5 code path fail. The error variant that each rule produces is listed.
//!
//! * **Header v17 layout always** ([`FdtError::NoStructSize`]). `fdt` always reads the
//!   `size_dt_struct` field, which only exists from v17 on, and slices the structure block with
//!   it. A version-16 blob is accepted only if that field holds a valid size anyway. A zero
//!   there (dtc's padding) is reported as missing.
//! * **Unknown tokens** ([`FdtError::UnknownToken`]). Besides being required by §5.4.1, this
//!   matters because `fdt` 0.1.5 defines `FDT_END` as 5 instead of 9. Token 5 is rejected, so
//!   that definition never fires. `fdt` stops at the real `FDT_END` (9) only because 9 is not
//!   `FDT_BEGIN_NODE`, which is why nothing but `FDT_NOP` may sit between the root's
//!   `FDT_END_NODE` and `FDT_END`.
//! * **No `FDT_NOP` inside the root node** ([`FdtError::NopInsideNode`]). `fdt`'s
//!   `skip_current_node` (used by `find_node`, `children`) accepts a NOP only directly before
//!   `FDT_END_NODE`, and `assert!`s (panics) if a property or child follows one. `all_nodes`
//!   stops early, without an error, at a NOP between properties or before `FDT_END_NODE`.
//!   NOPs before the root node and after it closes are harmless and allowed. dtc never emits
//!   NOPs, but real firmware does: libfdt's `fdt_nop_property`/`fdt_nop_node` leave them, and
//!   QEMU (`-dtb`), U-Boot and Android boot loaders use those to delete nodes. Such a blob
//!   passes [`check_relaxed`], the same check with NOPs allowed anywhere a token may start,
//!   and [`super::pack`] copies it without the NOPs into a blob that passes [`check`].
//! * **Properties before children** ([`FdtError::PropertyAfterChild`]). Required by §5.4.2;
//!   `skip_current_node` panics otherwise.
//! * **Depth at most [`MAX_DEPTH`]** ([`FdtError::TooDeep`]). `all_nodes` keeps parents in a
//!   `[_; 64]` array indexed from 1 and panics past 63 open nodes. `skip_current_node` and
//!   `find_node` recurse once per level.
//! * **Root node name empty** ([`FdtError::RootNameNotEmpty`]). `find_node("/")` only matches
//!   an empty (or `@...`) root name, and `Fdt::root()` / `find_all_nodes` `expect`/`unwrap`
//!   that it is found.
//! * **Node names valid UTF-8, non-root names non-empty** ([`FdtError::NodeNameNotUtf8`],
//!   [`FdtError::EmptyNodeName`]). `all_nodes` and `skip_current_node` `unwrap` the UTF-8
//!   conversion. `all_nodes` would report an empty-named child as `/`.
//! * **Strings block valid UTF-8, and names start on a character boundary**
//!   ([`FdtError::StringsNotUtf8`], [`FdtError::PropertyNameNotUtf8`]). `Fdt::str_at_offset`
//!   `expect`s every property name to be UTF-8. Checking the whole block once keeps the check
//!   O(n), even though names may share suffixes (dtc merges them). The cost is that a stray
//!   non-UTF-8 byte in an unused string is also rejected.
//! * **`#address-cells` / `#size-cells` exactly 4 bytes and at most [`MAX_CELLS`]**
//!   ([`FdtError::BadCellsLength`], [`FdtError::CellsOutOfRange`]). `FdtNode::cell_sizes`
//!   `expect`s 4 bytes. Larger values are meaningless (§2.3.5) and would overflow
//!   `raw_reg`'s `cells * 4` on 32-bit hosts. In the root node both must be 1 or 2:
//!   `Memory::regions` `unwrap`s `reg()`, which is `None` when the parent's cells exceed 2.
//!   In `/cpus`, `#address-cells` must be 1 or 2: `CpuIds::first`/`all` panic on other values.
//! * **No `reg` under `#address-cells = #size-cells = 0`** ([`FdtError::RegWithZeroCells`]).
//!   `FdtNode::raw_reg` then yields empty entries forever (an infinite iterator).
//! * **`/memory*` and `/cpus/cpu*` nodes have `reg`, and a cpu's `reg` holds whole addresses**
//!   ([`FdtError::MissingReg`], [`FdtError::BadCpuReg`]). Both are required by §3.4/§3.8.
//!   `Memory::regions` and `Cpu::ids` `unwrap`/`expect` the property, and `CpuIds::first`
//!   `unwrap`s a read of `#address-cells` cells.
//! * **String properties read by `fdt` are real strings** ([`FdtError::BadStringProperty`]).
//!   `compatible`, `model`, `bootargs`, `stdout-path` and `stdin-path` must be non-empty,
//!   NUL-terminated UTF-8 (§2.2.4.2 `<string>`/`<stringlist>`). `Compatible::first` `expect`s
//!   a NUL and `unwrap`s UTF-8, `Root::model` `unwrap`s UTF-8, and `Chosen::bootargs`/`stdout`/
//!   `stdin` compute `len - 1`, which underflows and panics on an empty value.
//! * **Numeric properties read by `fdt` have the sizes it expects** ([`FdtError::BadPropertyLength`]).
//!   `clock-frequency` and `timebase-frequency` must be 4 or 8 bytes (`Cpu::clock_frequency`
//!   hits `unreachable!()` otherwise). `initial_mapped_area` must be at least 20 bytes
//!   (`Memory::initial_mapped_area` `expect`s them).
//! * **Aliases are absolute paths under relative names** ([`FdtError::BadAlias`]). In
//!   `/aliases`, names must not start with `/` and values must (§3.3). `Fdt::find_node` falls
//!   back to resolving an unknown path as an alias, and resolving recurses into `find_node`.
//!   An alias cycle (`a = "b"`, `b = "a"`, or `x = "x"`) would overflow the stack. With this
//!   rule, resolution stops after one step.
//!
//! Node-specific rules apply to every node `fdt` could pick: `fdt` matches `/cpus`,
//! `/memory` and `/aliases` by the node name before any `@`, at depth 1. The string and size
//! rules apply in every node, because `/chosen` can also be reached through an alias.
//!
//! # Not guarded (caller's job)
//!
//! * `Fdt::chosen`, `memory`, `cpus`, `root().model()`, `root().compatible()`, and
//!   `Cpu::clock_frequency`/`timebase_frequency` panic by design when the node or property is
//!   missing. Check first with `find_node`/`property`.
//! * `fdt` ignores `totalsize` when reading the memory reservation map. That is harmless after
//!   this check, because the map's terminator lies inside `totalsize`.
//! * `Fdt::memory()` returns only the first `/memory*` node. Use `find_all_nodes("/memory")`
//!   to see every bank.
//! * Semantics beyond what `fdt` needs to stay safe, such as `reg` sizes outside `/cpus`,
//!   phandle references, `ranges` and interrupt specifiers, are not checked here.

use core::fmt;

/// The FDT magic number, stored big-endian at offset 0 (§5.2).
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the version-17 header, the only layout the `fdt` crate understands (§5.2).
pub const HEADER_SIZE: usize = 40;
/// Oldest `version` accepted (the field is the version the blob was written as).
pub const FIRST_SUPPORTED_VERSION: u32 = 16;
/// Newest `last_comp_version` accepted (the oldest version a blob claims compatibility with).
pub const LAST_SUPPORTED_VERSION: u32 = 17;
/// Maximum number of nodes open at once, the root included. Real trees are under 10 deep.
/// `fdt` 0.1.5 panics past 63, and recurses once per level.
pub const MAX_DEPTH: usize = 32;
/// Largest `#address-cells`/`#size-cells` value accepted (PCI uses 3, nothing uses more).
pub const MAX_CELLS: u32 = 4;

// Structure block tokens (§5.4.1).
const FDT_BEGIN_NODE: u32 = 0x1;
const FDT_END_NODE: u32 = 0x2;
const FDT_PROP: u32 = 0x3;
const FDT_NOP: u32 = 0x4;
const FDT_END: u32 = 0x9;

/// Size of one memory reservation entry: big-endian `u64` address and `u64` size (§5.3.2).
const RSV_ENTRY_SIZE: usize = 16;

/// Properties that `fdt` parses as strings and panics on if they are malformed.
const STRING_PROPS: [&str; 5] = [
    "compatible",
    "model",
    "bootargs",
    "stdout-path",
    "stdin-path",
];

/// The parsed FDT header (§5.2). All fields are in native byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Size of the whole blob in bytes.
    pub totalsize: u32,
    /// Offset of the structure block from the start of the blob.
    pub off_dt_struct: u32,
    /// Offset of the strings block from the start of the blob.
    pub off_dt_strings: u32,
    /// Offset of the memory reservation map from the start of the blob.
    pub off_mem_rsvmap: u32,
    /// Format version the blob was written in.
    pub version: u32,
    /// Oldest format version the blob is backwards compatible with.
    pub last_comp_version: u32,
    /// Physical ID of the boot CPU.
    pub boot_cpuid_phys: u32,
    /// Length of the strings block in bytes.
    pub size_dt_strings: u32,
    /// Length of the structure block in bytes.
    pub size_dt_struct: u32,
}

impl Header {
    /// Reads the header fields. `blob` must hold at least [`HEADER_SIZE`] bytes.
    fn parse(blob: &[u8]) -> Self {
        let field = |index: usize| be32(blob, 4 * index).unwrap_or(0);
        Self {
            totalsize: field(1),
            off_dt_struct: field(2),
            off_dt_strings: field(3),
            off_mem_rsvmap: field(4),
            version: field(5),
            last_comp_version: field(6),
            boot_cpuid_phys: field(7),
            size_dt_strings: field(8),
            size_dt_struct: field(9),
        }
    }
}

/// One of the three data blocks that the header points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The memory reservation map (§5.3).
    MemRsvmap,
    /// The structure block (§5.4).
    Struct,
    /// The strings block (§5.5).
    Strings,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Block::MemRsvmap => "memory reservation map",
            Block::Struct => "structure block",
            Block::Strings => "strings block",
        })
    }
}

/// Why a blob was rejected.
///
/// Offsets named `offset` in structure-walk errors are relative to the start of the structure
/// block. Layout and memory-reservation errors use offsets from the start of the blob.
/// `nameoff` is relative to the strings block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtError {
    /// The buffer is shorter than the bytes that are needed to read the header.
    BufferTooShort { len: usize, needed: usize },
    /// The first word is not [`FDT_MAGIC`].
    BadMagic { found: u32 },
    /// `totalsize` is larger than the buffer.
    Truncated { totalsize: u32, buffer_len: usize },
    /// `totalsize` cannot even hold the header.
    TotalSizeTooSmall { totalsize: u32 },
    /// Version outside the supported range.
    UnsupportedVersion {
        version: u32,
        last_comp_version: u32,
    },
    /// A pre-v17 header without the `size_dt_struct` field, which `fdt` needs.
    NoStructSize { version: u32 },
    /// A block starts inside the header.
    BlockOverlapsHeader { block: Block, offset: u32 },
    /// A block extends past `totalsize`.
    BlockOutOfBounds {
        block: Block,
        offset: u32,
        size: u32,
        totalsize: u32,
    },
    /// A block is not aligned as §5.6 requires.
    MisalignedBlock {
        block: Block,
        offset: u32,
        align: u32,
    },
    /// Two blocks share bytes.
    BlocksOverlap { first: Block, second: Block },
    /// No `(0, 0)` entry before `limit` (the next block or `totalsize`).
    UnterminatedRsvmap { offset: u32, limit: u32 },
    /// The strings block is not valid UTF-8 from `offset` on (offset within the block).
    StringsNotUtf8 { offset: u32 },
    /// A token, property header or node name runs past the end of the structure block.
    StructOverrun { offset: u32 },
    /// The structure block ends without an `FDT_END` token.
    MissingEnd { offset: u32 },
    /// A token that is not defined by §5.4.1.
    UnknownToken { offset: u32, token: u32 },
    /// Something other than `FDT_NOP`/`FDT_BEGIN_NODE` before the root node.
    RootNotFirst { offset: u32, token: u32 },
    /// A node, property or `FDT_END_NODE` after the root node was closed.
    TokenAfterRoot { offset: u32, token: u32 },
    /// `FDT_END` while `depth` nodes are still open.
    EndInsideNode { offset: u32, depth: u32 },
    /// `FDT_NOP` inside the root node (see the module docs).
    NopInsideNode { offset: u32 },
    /// Nesting deeper than `max` nodes.
    TooDeep { offset: u32, max: u32 },
    /// A property after a child node of the same node.
    PropertyAfterChild { offset: u32 },
    /// A node name with no NUL before the end of the structure block.
    UnterminatedNodeName { offset: u32 },
    /// A node name that is not valid UTF-8.
    NodeNameNotUtf8 { offset: u32 },
    /// A non-root node with an empty name.
    EmptyNodeName { offset: u32 },
    /// A root node whose name is not empty.
    RootNameNotEmpty { offset: u32 },
    /// A property value that runs past the end of the structure block.
    PropertyValueOutOfBounds { offset: u32, len: u32 },
    /// A property name offset outside the strings block.
    NameOffsetOutOfBounds {
        offset: u32,
        nameoff: u32,
        size: u32,
    },
    /// A property name with no NUL before the end of the strings block.
    UnterminatedPropertyName { offset: u32, nameoff: u32 },
    /// A property name that is empty.
    EmptyPropertyName { offset: u32, nameoff: u32 },
    /// A property name offset that points into the middle of a UTF-8 character.
    PropertyNameNotUtf8 { offset: u32, nameoff: u32 },
    /// An `#address-cells`/`#size-cells` value that is not exactly 4 bytes.
    BadCellsLength {
        offset: u32,
        name: &'static str,
        len: u32,
    },
    /// An `#address-cells`/`#size-cells` value outside `min..=max`.
    CellsOutOfRange {
        offset: u32,
        name: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },
    /// A string property that is empty, not NUL-terminated or not UTF-8.
    BadStringProperty { offset: u32, name: &'static str },
    /// A numeric property whose length is not what `fdt` expects.
    BadPropertyLength {
        offset: u32,
        name: &'static str,
        len: u32,
        expected: &'static str,
    },
    /// An `/aliases` entry whose name starts with `/` or whose value is not an absolute path.
    BadAlias { offset: u32 },
    /// A `reg` property under a parent with `#address-cells = #size-cells = 0`.
    RegWithZeroCells { offset: u32 },
    /// A cpu node's `reg` that is empty or does not hold a whole number of addresses.
    BadCpuReg {
        offset: u32,
        len: u32,
        address_cells: u32,
    },
    /// A `/memory*` or `/cpus/cpu*` node without `reg` (offset of its `FDT_BEGIN_NODE`).
    MissingReg { offset: u32 },
    /// The output buffer given to [`super::pack::pack_into`] holds `got` bytes, but the packed
    /// blob needs `needed`.
    OutputTooSmall { needed: usize, got: usize },
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FdtError::*;
        match *self {
            BufferTooShort { len, needed } => {
                write!(
                    f,
                    "buffer too short for an FDT header: {len} bytes, need {needed}"
                )
            }
            BadMagic { found } => {
                write!(f, "bad magic {found:#010x} (expected {FDT_MAGIC:#010x})")
            }
            Truncated {
                totalsize,
                buffer_len,
            } => write!(
                f,
                "blob truncated: header says {totalsize} bytes, buffer has {buffer_len}"
            ),
            TotalSizeTooSmall { totalsize } => write!(
                f,
                "totalsize {totalsize} is smaller than the {HEADER_SIZE}-byte header"
            ),
            UnsupportedVersion {
                version,
                last_comp_version,
            } => write!(
                f,
                "unsupported FDT version {version} (last compatible {last_comp_version}); \
                 need version >= {FIRST_SUPPORTED_VERSION} and last compatible <= \
                 {LAST_SUPPORTED_VERSION}"
            ),
            NoStructSize { version } => write!(
                f,
                "version {version} header has no size_dt_struct field (the v17 layout is needed)"
            ),
            BlockOverlapsHeader { block, offset } => {
                write!(f, "{block} at offset {offset:#x} overlaps the header")
            }
            BlockOutOfBounds {
                block,
                offset,
                size,
                totalsize,
            } => write!(
                f,
                "{block} at offset {offset:#x} with size {size:#x} ends past totalsize \
                 {totalsize:#x}"
            ),
            MisalignedBlock {
                block,
                offset,
                align,
            } => {
                write!(
                    f,
                    "{block} at offset {offset:#x} is not {align}-byte aligned"
                )
            }
            BlocksOverlap { first, second } => write!(f, "{first} overlaps the {second}"),
            UnterminatedRsvmap { offset, limit } => write!(
                f,
                "memory reservation map at offset {offset:#x} has no (0, 0) terminator before \
                 offset {limit:#x}"
            ),
            StringsNotUtf8 { offset } => {
                write!(
                    f,
                    "strings block is not valid UTF-8 at strings offset {offset:#x}"
                )
            }
            StructOverrun { offset } => {
                write!(
                    f,
                    "structure block ends inside the token at struct offset {offset:#x}"
                )
            }
            MissingEnd { offset } => write!(
                f,
                "structure block ends at struct offset {offset:#x} without an FDT_END token"
            ),
            UnknownToken { offset, token } => {
                write!(f, "unknown token {token:#x} at struct offset {offset:#x}")
            }
            RootNotFirst { offset, token } => write!(
                f,
                "token {token:#x} at struct offset {offset:#x} comes before the root node"
            ),
            TokenAfterRoot { offset, token } => write!(
                f,
                "token {token:#x} at struct offset {offset:#x} comes after the root node closed"
            ),
            EndInsideNode { offset, depth } => write!(
                f,
                "FDT_END at struct offset {offset:#x} while {depth} node(s) are still open"
            ),
            NopInsideNode { offset } => write!(
                f,
                "FDT_NOP inside the tree at struct offset {offset:#x} (the fdt crate cannot \
                 skip it)"
            ),
            TooDeep { offset, max } => write!(
                f,
                "node at struct offset {offset:#x} nests deeper than {max} levels"
            ),
            PropertyAfterChild { offset } => write!(
                f,
                "property at struct offset {offset:#x} follows a child node"
            ),
            UnterminatedNodeName { offset } => {
                write!(f, "unterminated node name at struct offset {offset:#x}")
            }
            NodeNameNotUtf8 { offset } => {
                write!(
                    f,
                    "node name at struct offset {offset:#x} is not valid UTF-8"
                )
            }
            EmptyNodeName { offset } => {
                write!(
                    f,
                    "non-root node at struct offset {offset:#x} has an empty name"
                )
            }
            RootNameNotEmpty { offset } => {
                write!(
                    f,
                    "root node at struct offset {offset:#x} has a non-empty name"
                )
            }
            PropertyValueOutOfBounds { offset, len } => write!(
                f,
                "property at struct offset {offset:#x} with length {len:#x} runs past the \
                 structure block"
            ),
            NameOffsetOutOfBounds {
                offset,
                nameoff,
                size,
            } => write!(
                f,
                "property at struct offset {offset:#x} has name offset {nameoff:#x} outside \
                 the {size:#x}-byte strings block"
            ),
            UnterminatedPropertyName { offset, nameoff } => write!(
                f,
                "property at struct offset {offset:#x} has an unterminated name at strings \
                 offset {nameoff:#x}"
            ),
            EmptyPropertyName { offset, nameoff } => write!(
                f,
                "property at struct offset {offset:#x} has an empty name at strings offset \
                 {nameoff:#x}"
            ),
            PropertyNameNotUtf8 { offset, nameoff } => write!(
                f,
                "property at struct offset {offset:#x} has a name offset {nameoff:#x} inside a \
                 UTF-8 character"
            ),
            BadCellsLength { offset, name, len } => write!(
                f,
                "property \"{name}\" at struct offset {offset:#x} is {len} bytes long, not 4"
            ),
            CellsOutOfRange {
                offset,
                name,
                value,
                min,
                max,
            } => write!(
                f,
                "property \"{name}\" at struct offset {offset:#x} is {value}, outside \
                 {min}..={max}"
            ),
            BadStringProperty { offset, name } => write!(
                f,
                "property \"{name}\" at struct offset {offset:#x} is not a non-empty, \
                 NUL-terminated UTF-8 string"
            ),
            BadPropertyLength {
                offset,
                name,
                len,
                expected,
            } => write!(
                f,
                "property \"{name}\" at struct offset {offset:#x} is {len} bytes long, expected \
                 {expected}"
            ),
            BadAlias { offset } => write!(
                f,
                "alias at struct offset {offset:#x} must have a relative name and an absolute \
                 path value"
            ),
            RegWithZeroCells { offset } => write!(
                f,
                "\"reg\" at struct offset {offset:#x} under #address-cells = #size-cells = 0"
            ),
            BadCpuReg {
                offset,
                len,
                address_cells,
            } => write!(
                f,
                "cpu \"reg\" at struct offset {offset:#x} is {len} bytes long, not a non-zero \
                 multiple of {address_cells} cell(s)"
            ),
            MissingReg { offset } => write!(
                f,
                "memory or cpu node at struct offset {offset:#x} has no \"reg\" property"
            ),
            OutputTooSmall { needed, got } => write!(
                f,
                "output buffer of {got} bytes is too small for the {needed}-byte packed blob"
            ),
        }
    }
}

/// The largest `totalsize` the kernel accepts. booting.rst says the blob "must not exceed 2
/// megabytes in size", but QEMU's `-dtb` path grows a 1 MiB tree to just over 2 MiB
/// (fdt_open_into with slack), so the kernel takes up to 8 MiB: a sanity bound on the header,
/// not the protocol's. `cargo xtask run --dtb` refuses larger trees before booting.
pub const MAX_TOTAL_SIZE: usize = 8 << 20;

/// Reads `totalsize` from the start of a blob so the caller knows how much to map before
/// calling [`check`]. Only the first 8 bytes are needed. The magic must match and the size
/// must at least cover the header.
pub fn total_size(first_bytes: &[u8]) -> Result<usize, FdtError> {
    let (Some(magic), Some(totalsize)) = (be32(first_bytes, 0), be32(first_bytes, 4)) else {
        return Err(FdtError::BufferTooShort {
            len: first_bytes.len(),
            needed: 8,
        });
    };
    if magic != FDT_MAGIC {
        return Err(FdtError::BadMagic { found: magic });
    }
    if (totalsize as usize) < HEADER_SIZE {
        return Err(FdtError::TotalSizeTooSmall { totalsize });
    }
    Ok(totalsize as usize)
}

/// Checks the whole blob (see the module docs for the rules) and returns its header.
///
/// `blob` may be longer than `totalsize`. Only the first `totalsize` bytes are examined.
/// If this returns `Ok`, the blob is safe to hand to the `fdt` crate.
pub fn check(blob: &[u8]) -> Result<Header, FdtError> {
    let layout = layout(blob)?;
    walk_struct(layout.structure, &layout.strings, Mode::Strict, |_| {})?;
    Ok(layout.header)
}

/// [`check`], except that `FDT_NOP` tokens are allowed anywhere a token may start: inside
/// nodes, between properties and child nodes, as well as before the root node and after it.
/// Devicetree Specification v0.4 §5.4.1 says an `FDT_NOP` "will be ignored by any program
/// parsing the device tree", and libfdt-based boot loaders (and QEMU with `-dtb`) leave them
/// where they deleted properties or nodes.
///
/// A blob that passes only this check is **not** safe for the `fdt` crate (see the module
/// docs). Copy it with [`super::pack::pack_into`] first, which removes the NOPs.
pub fn check_relaxed(blob: &[u8]) -> Result<Header, FdtError> {
    let layout = layout(blob)?;
    walk_struct(layout.structure, &layout.strings, Mode::AllowNops, |_| {})?;
    Ok(layout.header)
}

/// Which `FDT_NOP` tokens the structure walk accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Only before the root node and after it closes ([`check`]): safe for `fdt`.
    Strict,
    /// Anywhere a token may start ([`check_relaxed`], [`super::pack`]).
    AllowNops,
}

/// A blob whose header and block layout are valid: everything [`check`] verifies before it
/// walks the structure block.
pub(crate) struct Layout<'a> {
    pub(crate) header: Header,
    /// The memory reservation map, up to and including its `(0, 0)` terminator.
    pub(crate) rsvmap: &'a [u8],
    /// The structure block, exactly `size_dt_struct` bytes.
    pub(crate) structure: &'a [u8],
    /// The strings block, checked to be UTF-8.
    pub(crate) strings: Strings<'a>,
}

/// Checks the header and the placement of the three blocks (§5.2, §5.3, §5.6) and the
/// strings block's encoding, and returns the blocks.
pub(crate) fn layout(blob: &[u8]) -> Result<Layout<'_>, FdtError> {
    if blob.len() < HEADER_SIZE {
        return Err(FdtError::BufferTooShort {
            len: blob.len(),
            needed: HEADER_SIZE,
        });
    }
    let magic = be32(blob, 0).unwrap_or(0);
    if magic != FDT_MAGIC {
        return Err(FdtError::BadMagic { found: magic });
    }
    let header = Header::parse(blob);
    let totalsize = header.totalsize;
    if (totalsize as usize) < HEADER_SIZE {
        return Err(FdtError::TotalSizeTooSmall { totalsize });
    }
    if totalsize as usize > blob.len() {
        return Err(FdtError::Truncated {
            totalsize,
            buffer_len: blob.len(),
        });
    }
    if header.version < FIRST_SUPPORTED_VERSION || header.last_comp_version > LAST_SUPPORTED_VERSION
    {
        return Err(FdtError::UnsupportedVersion {
            version: header.version,
            last_comp_version: header.last_comp_version,
        });
    }
    // A real v16 header is 36 bytes and ends before size_dt_struct; dtc leaves the 4 bytes
    // where that field would be as padding (zero) before the 8-aligned map. `fdt` reads the
    // field regardless, so such a blob is refused with a clear reason.
    if header.version < 17 && header.size_dt_struct == 0 {
        return Err(FdtError::NoStructSize {
            version: header.version,
        });
    }
    // From here on nothing past `totalsize` is looked at.
    let blob = &blob[..totalsize as usize];

    let structure = block_range(
        Block::Struct,
        header.off_dt_struct,
        header.size_dt_struct,
        4,
        totalsize,
    )?;
    let strings = block_range(
        Block::Strings,
        header.off_dt_strings,
        header.size_dt_strings,
        1,
        totalsize,
    )?;
    let rsvmap = rsvmap_range(blob, header.off_mem_rsvmap, &structure, &strings)?;

    // §5.6 only orders the blocks loosely, but nothing legitimate shares bytes between them.
    // A shared byte would let a property value edit rewrite a name or a token.
    let blocks = [
        (Block::MemRsvmap, &rsvmap),
        (Block::Struct, &structure),
        (Block::Strings, &strings),
    ];
    for (i, (first, a)) in blocks.iter().enumerate() {
        for (second, b) in &blocks[i + 1..] {
            if !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end {
                return Err(FdtError::BlocksOverlap {
                    first: *first,
                    second: *second,
                });
            }
        }
    }

    Ok(Layout {
        header,
        rsvmap: &blob[rsvmap],
        structure: &blob[structure],
        strings: Strings::new(&blob[strings])?,
    })
}

/// Reads a big-endian `u32` at `off`, or `None` if it does not fit.
fn be32(bytes: &[u8], off: usize) -> Option<u32> {
    let word = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// Rounds `n` up to the next multiple of 4 (the structure block's token alignment, §5.4.1).
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Validates a block's placement (§5.2, §5.6) and returns its byte range within the blob.
fn block_range(
    block: Block,
    offset: u32,
    size: u32,
    align: u32,
    totalsize: u32,
) -> Result<core::ops::Range<usize>, FdtError> {
    if (offset as usize) < HEADER_SIZE {
        return Err(FdtError::BlockOverlapsHeader { block, offset });
    }
    // Add in u64 so a huge offset plus a huge size cannot wrap around.
    if u64::from(offset) + u64::from(size) > u64::from(totalsize) {
        return Err(FdtError::BlockOutOfBounds {
            block,
            offset,
            size,
            totalsize,
        });
    }
    if !offset.is_multiple_of(align) {
        return Err(FdtError::MisalignedBlock {
            block,
            offset,
            align,
        });
    }
    Ok(offset as usize..offset as usize + size as usize)
}

/// Walks the memory reservation map (§5.3) up to its `(0, 0)` terminator and returns the range
/// it occupies. The map has no size field, so it may run up to the next block that starts
/// after it, or to `totalsize` if none does.
fn rsvmap_range(
    blob: &[u8],
    offset: u32,
    structure: &core::ops::Range<usize>,
    strings: &core::ops::Range<usize>,
) -> Result<core::ops::Range<usize>, FdtError> {
    let start = block_range(Block::MemRsvmap, offset, 0, 8, blob.len() as u32)?.start;
    let limit = [structure, strings]
        .into_iter()
        .filter(|b| !b.is_empty() && b.start >= start)
        .map(|b| b.start)
        .fold(blob.len(), usize::min);
    let mut pos = start;
    loop {
        if pos + RSV_ENTRY_SIZE > limit {
            return Err(FdtError::UnterminatedRsvmap {
                offset,
                limit: limit as u32,
            });
        }
        let entry = &blob[pos..pos + RSV_ENTRY_SIZE];
        pos += RSV_ENTRY_SIZE;
        if entry.iter().all(|&b| b == 0) {
            return Ok(start..pos);
        }
    }
}

/// The strings block (§5.5), with what we need to check each name offset in O(1).
pub(crate) struct Strings<'a> {
    bytes: &'a [u8],
    /// Index of the last NUL. A name at `nameoff` is terminated iff `nameoff <= last_nul`.
    last_nul: Option<usize>,
}

impl<'a> Strings<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, FdtError> {
        // One UTF-8 pass over the whole block. Any name that starts on a character boundary
        // and ends at a NUL is then valid UTF-8, whatever suffix sharing dtc did.
        if let Err(e) = core::str::from_utf8(bytes) {
            return Err(FdtError::StringsNotUtf8 {
                offset: e.valid_up_to() as u32,
            });
        }
        Ok(Self {
            bytes,
            last_nul: bytes.iter().rposition(|&b| b == 0),
        })
    }

    /// The whole block.
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Checks the name at `nameoff` for the property at struct offset `offset`, and returns the
    /// block from `nameoff` on (the name, its NUL, and whatever follows).
    fn name_at(&self, offset: u32, nameoff: u32) -> Result<&'a [u8], FdtError> {
        let Some(tail) = self.bytes.get(nameoff as usize..).filter(|t| !t.is_empty()) else {
            let size = self.bytes.len() as u32;
            return Err(FdtError::NameOffsetOutOfBounds {
                offset,
                nameoff,
                size,
            });
        };
        if self.last_nul.is_none_or(|nul| (nameoff as usize) > nul) {
            return Err(FdtError::UnterminatedPropertyName { offset, nameoff });
        }
        if tail[0] == 0 {
            return Err(FdtError::EmptyPropertyName { offset, nameoff });
        }
        // A UTF-8 continuation byte (0b10xx_xxxx) means the offset points mid-character.
        if tail[0] & 0xc0 == 0x80 {
            return Err(FdtError::PropertyNameNotUtf8 { offset, nameoff });
        }
        Ok(tail)
    }
}

/// Whether the NUL-terminated name at the start of `tail` is exactly `name`.
fn name_is(tail: &[u8], name: &str) -> bool {
    tail.len() > name.len() && tail.starts_with(name.as_bytes()) && tail[name.len()] == 0
}

/// What a node is, as far as the `fdt`-specific rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Root,
    /// A depth-1 node whose base name (before `@`) is `cpus`.
    Cpus,
    /// A child of a [`Kind::Cpus`] node whose base name is `cpu`.
    Cpu,
    /// A depth-1 node whose base name is `memory`.
    Memory,
    /// A depth-1 node whose base name is `aliases`.
    Aliases,
    Other,
}

/// Per-open-node state kept on a fixed stack of [`MAX_DEPTH`] entries.
#[derive(Debug, Clone, Copy)]
struct Level {
    kind: Kind,
    /// This node's `#address-cells`/`#size-cells`, i.e. its children's cell sizes. They start
    /// at the defaults of §2.3.5 (2 and 1), which are also `fdt`'s `CellSizes::default()`.
    address_cells: u32,
    size_cells: u32,
}

const DEFAULT_LEVEL: Level = Level {
    kind: Kind::Other,
    address_cells: 2,
    size_cells: 1,
};

/// Where the walk is relative to the root node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    BeforeRoot,
    InTree,
    AfterRoot,
}

/// Walks the structure block token by token (§5.4). `s` is exactly the block. `mode` says
/// where `FDT_NOP` may appear.
///
/// Every token except `FDT_NOP`, up to and including `FDT_END`, is passed to `emit` once it
/// has been checked, in order, with its operands and padding (a node's name, a property's
/// length, name offset and value). Concatenated, they form the structure block without NOPs
/// and without the bytes after `FDT_END`. Returns their total length. If the walk fails,
/// `emit` has seen only part of the block.
pub(crate) fn walk_struct(
    s: &[u8],
    strings: &Strings<'_>,
    mode: Mode,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, FdtError> {
    let mut levels = [DEFAULT_LEVEL; MAX_DEPTH];
    let mut depth = 0usize; // number of open nodes; levels[depth - 1] is the innermost
    let mut phase = Phase::BeforeRoot;
    // State of the innermost open node's property section.
    let mut begin_off = 0u32; // its FDT_BEGIN_NODE, for MissingReg
    let mut after_child = false; // a child has closed, so no more properties may follow
    let mut has_reg = false;
    let mut off = 0usize;
    let mut kept = 0usize; // bytes passed to `emit`

    loop {
        let tok_off = off as u32;
        let Some(token) = be32(s, off) else {
            return Err(if off >= s.len() {
                FdtError::MissingEnd { offset: tok_off }
            } else {
                FdtError::StructOverrun { offset: tok_off }
            });
        };
        off += 4;
        match (phase, token) {
            (Phase::BeforeRoot | Phase::AfterRoot, FDT_NOP) => {}
            // §5.4.1: a NOP carries no data and does not change the walk's state.
            (Phase::InTree, FDT_NOP) if mode == Mode::AllowNops => {}
            (Phase::InTree, FDT_NOP) => return Err(FdtError::NopInsideNode { offset: tok_off }),
            (Phase::BeforeRoot, FDT_BEGIN_NODE) => {
                let name = node_name(s, &mut off, tok_off)?;
                if !name.is_empty() {
                    return Err(FdtError::RootNameNotEmpty { offset: tok_off });
                }
                levels[0] = Level {
                    kind: Kind::Root,
                    ..DEFAULT_LEVEL
                };
                depth = 1;
                phase = Phase::InTree;
                (begin_off, after_child, has_reg) = (tok_off, false, false);
            }
            (Phase::InTree, FDT_BEGIN_NODE) => {
                if !after_child {
                    // The first child ends the parent's property section.
                    props_done(levels[depth - 1].kind, has_reg, begin_off)?;
                }
                if depth == MAX_DEPTH {
                    return Err(FdtError::TooDeep {
                        offset: tok_off,
                        max: MAX_DEPTH as u32,
                    });
                }
                let name = node_name(s, &mut off, tok_off)?;
                if name.is_empty() {
                    return Err(FdtError::EmptyNodeName { offset: tok_off });
                }
                let base = name.split('@').next().unwrap_or(name);
                let kind = match (levels[depth - 1].kind, base) {
                    (Kind::Root, "cpus") => Kind::Cpus,
                    (Kind::Root, "memory") => Kind::Memory,
                    (Kind::Root, "aliases") => Kind::Aliases,
                    (Kind::Cpus, "cpu") => Kind::Cpu,
                    _ => Kind::Other,
                };
                levels[depth] = Level {
                    kind,
                    ..DEFAULT_LEVEL
                };
                depth += 1;
                (begin_off, after_child, has_reg) = (tok_off, false, false);
            }
            (Phase::InTree, FDT_END_NODE) => {
                if !after_child {
                    props_done(levels[depth - 1].kind, has_reg, begin_off)?;
                }
                depth -= 1;
                if depth == 0 {
                    phase = Phase::AfterRoot;
                }
                // Back in the parent, which has now had a child.
                after_child = true;
            }
            (Phase::InTree, FDT_PROP) => {
                if after_child {
                    return Err(FdtError::PropertyAfterChild { offset: tok_off });
                }
                let (Some(len), Some(nameoff)) = (be32(s, off), be32(s, off + 4)) else {
                    return Err(FdtError::StructOverrun { offset: tok_off });
                };
                off += 8;
                let value = s
                    .get(off..)
                    .and_then(|rest| rest.get(..len as usize))
                    .ok_or(FdtError::PropertyValueOutOfBounds {
                        offset: tok_off,
                        len,
                    })?;
                off = align4(off + value.len());
                let name = strings.name_at(tok_off, nameoff)?;
                let parent = if depth >= 2 {
                    levels[depth - 2]
                } else {
                    DEFAULT_LEVEL
                };
                let node = &mut levels[depth - 1];
                check_property(tok_off, name, value, node, parent, &mut has_reg)?;
            }
            (Phase::InTree, FDT_END) => {
                return Err(FdtError::EndInsideNode {
                    offset: tok_off,
                    depth: depth as u32,
                });
            }
            (Phase::AfterRoot, FDT_END) => {}
            (Phase::BeforeRoot, FDT_END_NODE | FDT_PROP | FDT_END) => {
                return Err(FdtError::RootNotFirst {
                    offset: tok_off,
                    token,
                });
            }
            (Phase::AfterRoot, FDT_BEGIN_NODE | FDT_END_NODE | FDT_PROP) => {
                return Err(FdtError::TokenAfterRoot {
                    offset: tok_off,
                    token,
                });
            }
            (_, token) => {
                return Err(FdtError::UnknownToken {
                    offset: tok_off,
                    token,
                })
            }
        }
        if token != FDT_NOP {
            // The padding after a name or value may reach past the block's end; then the
            // next token read fails, so the walk ends with an error and skipping is harmless.
            if let Some(bytes) = s.get(tok_off as usize..off) {
                kept += bytes.len();
                emit(bytes);
            }
        }
        // Every other arm returns an error on FDT_END.
        if token == FDT_END {
            return Ok(kept);
        }
    }
}

/// Reads the NUL-terminated node name at `*off` (just after `FDT_BEGIN_NODE` at `tok_off`).
/// Moves `*off` to the next token, past the name's padding (§5.4.1).
fn node_name<'a>(s: &'a [u8], off: &mut usize, tok_off: u32) -> Result<&'a str, FdtError> {
    let rest = s.get(*off..).unwrap_or_default();
    let Some(len) = rest.iter().position(|&b| b == 0) else {
        return Err(FdtError::UnterminatedNodeName { offset: tok_off });
    };
    let name = core::str::from_utf8(&rest[..len])
        .map_err(|_| FdtError::NodeNameNotUtf8 { offset: tok_off })?;
    *off = align4(*off + len + 1);
    Ok(name)
}

/// Checks, when a node's property section ends, the properties it must have had.
fn props_done(kind: Kind, has_reg: bool, begin_off: u32) -> Result<(), FdtError> {
    if matches!(kind, Kind::Memory | Kind::Cpu) && !has_reg {
        return Err(FdtError::MissingReg { offset: begin_off });
    }
    Ok(())
}

/// The `fdt`-specific property rules from the module docs. `name` is the strings block from
/// the property's name on. `node` is the node that holds the property, `parent` its parent.
fn check_property(
    offset: u32,
    name: &[u8],
    value: &[u8],
    node: &mut Level,
    parent: Level,
    has_reg: &mut bool,
) -> Result<(), FdtError> {
    let len = value.len() as u32;
    for cells in ["#address-cells", "#size-cells"] {
        if !name_is(name, cells) {
            continue;
        }
        let [a, b, c, d] = value else {
            return Err(FdtError::BadCellsLength {
                offset,
                name: cells,
                len,
            });
        };
        let v = u32::from_be_bytes([*a, *b, *c, *d]);
        let is_address = cells == "#address-cells";
        let (min, max) = match node.kind {
            Kind::Root => (1, 2),
            Kind::Cpus if is_address => (1, 2),
            _ => (0, MAX_CELLS),
        };
        if !(min..=max).contains(&v) {
            return Err(FdtError::CellsOutOfRange {
                offset,
                name: cells,
                value: v,
                min,
                max,
            });
        }
        if is_address {
            node.address_cells = v;
        } else {
            node.size_cells = v;
        }
    }
    if name_is(name, "reg") {
        if parent.address_cells == 0 && parent.size_cells == 0 {
            return Err(FdtError::RegWithZeroCells { offset });
        }
        if node.kind == Kind::Cpu {
            // The parent is a `/cpus` node, so address_cells is 1 or 2 here; the zero test
            // only keeps the division obviously safe.
            let unit = 4 * parent.address_cells as usize;
            if unit == 0 || value.is_empty() || !value.len().is_multiple_of(unit) {
                let address_cells = parent.address_cells;
                return Err(FdtError::BadCpuReg {
                    offset,
                    len,
                    address_cells,
                });
            }
        }
        *has_reg = true;
    }
    for string in STRING_PROPS {
        if name_is(name, string)
            && (value.last() != Some(&0) || core::str::from_utf8(value).is_err())
        {
            return Err(FdtError::BadStringProperty {
                offset,
                name: string,
            });
        }
    }
    for freq in ["clock-frequency", "timebase-frequency"] {
        if name_is(name, freq) && len != 4 && len != 8 {
            let expected = "4 or 8";
            return Err(FdtError::BadPropertyLength {
                offset,
                name: freq,
                len,
                expected,
            });
        }
    }
    if name_is(name, "initial_mapped_area") && len < 20 {
        let (name, expected) = ("initial_mapped_area", "at least 20");
        return Err(FdtError::BadPropertyLength {
            offset,
            name,
            len,
            expected,
        });
    }
    if node.kind == Kind::Aliases && (name[0] == b'/' || value.first() != Some(&b'/')) {
        return Err(FdtError::BadAlias { offset });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    /// A tiny FDT writer for tests: header, memory reservation map, structure block and
    /// strings block, laid out as dtc does.
    #[derive(Default)]
    pub(crate) struct Builder {
        pub(crate) rsv: Vec<(u64, u64)>,
        pub(crate) structure: Vec<u8>,
        pub(crate) strings: Vec<u8>,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        pub(crate) fn token(&mut self, t: u32) -> &mut Self {
            self.structure.extend_from_slice(&t.to_be_bytes());
            self
        }

        pub(crate) fn begin(&mut self, name: &str) -> &mut Self {
            self.begin_raw(name.as_bytes())
        }

        pub(crate) fn begin_raw(&mut self, name: &[u8]) -> &mut Self {
            self.token(FDT_BEGIN_NODE);
            self.structure.extend_from_slice(name);
            self.structure.push(0);
            self.pad()
        }

        pub(crate) fn end_node(&mut self) -> &mut Self {
            self.token(FDT_END_NODE)
        }

        pub(crate) fn nop(&mut self) -> &mut Self {
            self.token(FDT_NOP)
        }

        pub(crate) fn end(&mut self) -> &mut Self {
            self.token(FDT_END)
        }

        pub(crate) fn pad(&mut self) -> &mut Self {
            while !self.structure.len().is_multiple_of(4) {
                self.structure.push(0);
            }
            self
        }

        /// Adds `name` to the strings block (reusing an existing copy) and returns its offset.
        pub(crate) fn string(&mut self, name: &str) -> u32 {
            let mut needle = name.as_bytes().to_vec();
            needle.push(0);
            if let Some(pos) = self.strings.windows(needle.len()).position(|w| w == needle) {
                return pos as u32;
            }
            let pos = self.strings.len() as u32;
            self.strings.extend_from_slice(&needle);
            pos
        }

        pub(crate) fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            let nameoff = self.string(name);
            self.prop_raw(value.len() as u32, nameoff, value)
        }

        pub(crate) fn prop_u32(&mut self, name: &str, v: u32) -> &mut Self {
            self.prop(name, &v.to_be_bytes())
        }

        pub(crate) fn prop_raw(&mut self, len: u32, nameoff: u32, value: &[u8]) -> &mut Self {
            self.token(FDT_PROP).token(len).token(nameoff);
            self.structure.extend_from_slice(value);
            self.pad()
        }

        /// Header offsets dtc would use: map at 40, structure after it, strings last.
        pub(crate) fn build(&self) -> Vec<u8> {
            let off_rsv = HEADER_SIZE;
            let off_struct = off_rsv + (self.rsv.len() + 1) * RSV_ENTRY_SIZE;
            let off_strings = off_struct + self.structure.len();
            let total = off_strings + self.strings.len();
            let mut blob = Vec::new();
            for v in [
                FDT_MAGIC,
                total as u32,
                off_struct as u32,
                off_strings as u32,
                off_rsv as u32,
                17,
                16,
                0,
                self.strings.len() as u32,
                self.structure.len() as u32,
            ] {
                blob.extend_from_slice(&v.to_be_bytes());
            }
            for &(a, s) in self.rsv.iter().chain([(0, 0)].iter()) {
                blob.extend_from_slice(&a.to_be_bytes());
                blob.extend_from_slice(&s.to_be_bytes());
            }
            blob.extend_from_slice(&self.structure);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    /// An open root node with the usual properties, ready for more properties or children.
    pub(crate) fn open_root() -> Builder {
        let mut b = Builder::new();
        b.begin("")
            .prop_u32("#address-cells", 2)
            .prop_u32("#size-cells", 2)
            .prop("compatible", b"test,board\0");
        b
    }

    /// Adds a memory node, then closes the root and the structure block.
    pub(crate) fn finish(mut b: Builder) -> Vec<u8> {
        b.begin("memory@40000000")
            .prop("device_type", b"memory\0")
            .prop(
                "reg",
                &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0],
            )
            .end_node()
            .end_node()
            .end();
        b.build()
    }

    fn minimal() -> Vec<u8> {
        finish(open_root())
    }

    fn set32(blob: &mut [u8], off: usize, v: u32) {
        blob[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn get32(blob: &[u8], off: usize) -> u32 {
        be32(blob, off).unwrap()
    }

    /// Offset of the structure block in a built blob.
    fn struct_off(blob: &[u8]) -> usize {
        get32(blob, 8) as usize
    }

    fn with_root_prop(name: &str, value: &[u8]) -> Result<Header, FdtError> {
        let mut b = open_root();
        b.prop(name, value);
        check(&finish(b))
    }

    fn with_node_prop(node: &str, name: &str, value: &[u8]) -> Result<Header, FdtError> {
        let mut b = open_root();
        b.begin(node).prop(name, value).end_node();
        check(&finish(b))
    }

    #[test]
    fn minimal_blob_passes() {
        let blob = minimal();
        let h = check(&blob).unwrap();
        assert_eq!(h.totalsize as usize, blob.len());
        assert_eq!(h.version, 17);
        assert_eq!(total_size(&blob).unwrap(), blob.len());
        // Extra bytes after totalsize are not examined.
        let mut longer = blob.clone();
        longer.extend_from_slice(&[0xff; 13]);
        assert_eq!(check(&longer), Ok(h));
    }

    #[test]
    fn nops_outside_root_and_trailing_bytes_are_fine() {
        let mut b = Builder::new();
        b.nop().nop();
        b.begin("").end_node().nop().end();
        // Garbage after FDT_END inside size_dt_struct is ignored.
        b.token(0xdead_beef);
        b.rsv.push((0x8000_0000, 0x1000));
        assert!(check(&b.build()).is_ok());
    }

    #[test]
    fn buffer_too_short() {
        let blob = minimal();
        assert_eq!(
            check(&blob[..39]),
            Err(FdtError::BufferTooShort {
                len: 39,
                needed: 40
            })
        );
        assert_eq!(
            total_size(&blob[..7]),
            Err(FdtError::BufferTooShort { len: 7, needed: 8 })
        );
        assert_eq!(total_size(&blob[..8]), Ok(blob.len()));
    }

    #[test]
    fn bad_magic() {
        let mut blob = minimal();
        set32(&mut blob, 0, 0x1234_5678);
        let err = check(&blob).unwrap_err();
        assert_eq!(err, FdtError::BadMagic { found: 0x1234_5678 });
        assert_eq!(
            err.to_string(),
            "bad magic 0x12345678 (expected 0xd00dfeed)"
        );
        assert_eq!(total_size(&blob), Err(err));
    }

    #[test]
    fn truncated() {
        let mut blob = minimal();
        set32(&mut blob, 4, 4096);
        let err = check(&blob[..100]).unwrap_err();
        assert_eq!(
            err,
            FdtError::Truncated {
                totalsize: 4096,
                buffer_len: 100
            }
        );
        assert_eq!(
            err.to_string(),
            "blob truncated: header says 4096 bytes, buffer has 100"
        );
    }

    #[test]
    fn total_size_too_small() {
        let mut blob = minimal();
        set32(&mut blob, 4, 39);
        assert_eq!(
            check(&blob),
            Err(FdtError::TotalSizeTooSmall { totalsize: 39 })
        );
        assert_eq!(
            total_size(&blob),
            Err(FdtError::TotalSizeTooSmall { totalsize: 39 })
        );
    }

    #[test]
    fn unsupported_version() {
        let mut blob = minimal();
        set32(&mut blob, 20, 15);
        assert_eq!(
            check(&blob),
            Err(FdtError::UnsupportedVersion {
                version: 15,
                last_comp_version: 16
            })
        );
        let mut blob = minimal();
        set32(&mut blob, 24, 18);
        assert_eq!(
            check(&blob),
            Err(FdtError::UnsupportedVersion {
                version: 17,
                last_comp_version: 18
            })
        );
        // A real v16 header (dtc -V 16) ends before size_dt_struct, which reads as 0.
        let mut blob = minimal();
        set32(&mut blob, 20, 16);
        set32(&mut blob, 36, 0);
        assert_eq!(check(&blob), Err(FdtError::NoStructSize { version: 16 }));
        // Version 16 with a valid size_dt_struct field and newer versions are accepted.
        let mut blob = minimal();
        set32(&mut blob, 20, 16);
        assert!(check(&blob).is_ok());
        set32(&mut blob, 20, 20);
        assert!(check(&blob).is_ok());
    }

    #[test]
    fn block_overlaps_header() {
        let mut blob = minimal();
        set32(&mut blob, 8, 36);
        assert_eq!(
            check(&blob),
            Err(FdtError::BlockOverlapsHeader {
                block: Block::Struct,
                offset: 36
            })
        );
        let mut blob = minimal();
        set32(&mut blob, 16, 0);
        assert_eq!(
            check(&blob),
            Err(FdtError::BlockOverlapsHeader {
                block: Block::MemRsvmap,
                offset: 0
            })
        );
    }

    #[test]
    fn block_out_of_bounds() {
        let blob = minimal();
        let total = blob.len() as u32;
        let mut bad = blob.clone();
        set32(&mut bad, 36, 0xffff_fff0); // size_dt_struct: offset + size would wrap in u32
        let offset = get32(&blob, 8);
        assert_eq!(
            check(&bad),
            Err(FdtError::BlockOutOfBounds {
                block: Block::Struct,
                offset,
                size: 0xffff_fff0,
                totalsize: total
            })
        );
        let mut bad = blob.clone();
        set32(&mut bad, 32, get32(&blob, 32) + 1); // size_dt_strings
        assert!(matches!(
            check(&bad),
            Err(FdtError::BlockOutOfBounds {
                block: Block::Strings,
                ..
            })
        ));
        let mut bad = blob.clone();
        set32(&mut bad, 16, total + 8);
        assert!(matches!(
            check(&bad),
            Err(FdtError::BlockOutOfBounds {
                block: Block::MemRsvmap,
                ..
            })
        ));
    }

    #[test]
    fn misaligned_blocks() {
        let mut blob = minimal();
        set32(&mut blob, 16, 44);
        assert_eq!(
            check(&blob),
            Err(FdtError::MisalignedBlock {
                block: Block::MemRsvmap,
                offset: 44,
                align: 8
            })
        );
        let mut blob = minimal();
        let off = get32(&blob, 8) + 2;
        set32(&mut blob, 8, off);
        let size = get32(&blob, 36) - 2;
        set32(&mut blob, 36, size);
        assert_eq!(
            check(&blob),
            Err(FdtError::MisalignedBlock {
                block: Block::Struct,
                offset: off,
                align: 4
            })
        );
    }

    #[test]
    fn blocks_overlap() {
        let mut blob = minimal();
        // Strings block moved to start inside the structure block.
        let s = struct_off(&blob) as u32;
        set32(&mut blob, 12, s + 8);
        assert_eq!(
            check(&blob),
            Err(FdtError::BlocksOverlap {
                first: Block::Struct,
                second: Block::Strings
            })
        );
        // Memory reservation map placed after the structure block's start, inside it: its
        // terminator search stops at the strings block and the map overlaps the structure.
        let mut b = Builder::new();
        b.begin("").prop("pad", &[0; 32]).end_node().end();
        let mut blob = b.build();
        set32(&mut blob, 16, s + 8);
        assert_eq!(
            check(&blob),
            Err(FdtError::BlocksOverlap {
                first: Block::MemRsvmap,
                second: Block::Struct
            })
        );
    }

    #[test]
    fn unterminated_rsvmap() {
        let mut b = open_root();
        b.rsv.push((0x1000, 0x1000));
        let mut blob = finish(b);
        // Overwrite the (0, 0) terminator; the next bytes are the structure block.
        let term = HEADER_SIZE + RSV_ENTRY_SIZE;
        blob[term..term + 16].fill(0xaa);
        let limit = struct_off(&blob) as u32;
        assert_eq!(
            check(&blob),
            Err(FdtError::UnterminatedRsvmap { offset: 40, limit })
        );
    }

    #[test]
    fn strings_not_utf8() {
        let mut b = open_root();
        b.prop("bad\u{e9}name", &[]);
        let mut blob = finish(b);
        // Turn the 2-byte UTF-8 sequence into a lone continuation byte.
        let pos = blob.windows(3).rposition(|w| w == b"bad").unwrap() + 3;
        blob[pos] = b'x';
        let strings_start = get32(&blob, 12) as usize;
        assert_eq!(
            check(&blob),
            Err(FdtError::StringsNotUtf8 {
                offset: (pos + 1 - strings_start) as u32
            })
        );
    }

    #[test]
    fn struct_overrun_and_missing_end() {
        let mut b = Builder::new();
        b.begin("").end_node().end();
        let mut blob = b.build();
        // Structure block size cut by 2: the FDT_END token straddles the end.
        let size = get32(&blob, 36);
        set32(&mut blob, 36, size - 2);
        assert_eq!(
            check(&blob),
            Err(FdtError::StructOverrun { offset: size - 4 })
        );
        set32(&mut blob, 36, size - 4);
        assert_eq!(check(&blob), Err(FdtError::MissingEnd { offset: size - 4 }));
        // A property header cut short.
        let mut b = Builder::new();
        b.begin("").token(FDT_PROP).token(0);
        assert_eq!(
            check(&b.build()),
            Err(FdtError::StructOverrun { offset: 8 })
        );
        // An empty structure block.
        let b = Builder::new();
        assert_eq!(check(&b.build()), Err(FdtError::MissingEnd { offset: 0 }));
    }

    #[test]
    fn unknown_token() {
        let mut b = open_root();
        let at = b.structure.len() as u32;
        b.token(5);
        assert_eq!(
            check(&finish(b)),
            Err(FdtError::UnknownToken {
                offset: at,
                token: 5
            })
        );
        let mut b = Builder::new();
        b.begin("").end_node().token(0x77);
        assert_eq!(
            check(&b.build()),
            Err(FdtError::UnknownToken {
                offset: 12,
                token: 0x77
            })
        );
    }

    #[test]
    fn root_not_first() {
        let mut b = Builder::new();
        b.nop().end_node();
        assert_eq!(
            check(&b.build()),
            Err(FdtError::RootNotFirst {
                offset: 4,
                token: FDT_END_NODE
            })
        );
        let mut b = Builder::new();
        b.end();
        assert_eq!(
            check(&b.build()),
            Err(FdtError::RootNotFirst {
                offset: 0,
                token: FDT_END
            })
        );
    }

    #[test]
    fn token_after_root() {
        for (token, extra) in [(FDT_BEGIN_NODE, 4), (FDT_END_NODE, 0), (FDT_PROP, 8)] {
            let mut b = Builder::new();
            b.begin("").end_node().nop().token(token);
            for _ in 0..extra / 4 {
                b.token(0);
            }
            b.end();
            assert_eq!(
                check(&b.build()),
                Err(FdtError::TokenAfterRoot { offset: 16, token })
            );
        }
    }

    #[test]
    fn end_inside_node() {
        let mut b = open_root();
        b.begin("a");
        let at = b.structure.len() as u32;
        b.end();
        assert_eq!(
            check(&b.build()),
            Err(FdtError::EndInsideNode {
                offset: at,
                depth: 2
            })
        );
    }

    #[test]
    fn nop_inside_node() {
        let mut b = open_root();
        let at = b.structure.len() as u32;
        b.nop();
        let blob = finish(b);
        assert_eq!(check(&blob), Err(FdtError::NopInsideNode { offset: at }));
        // The relaxed walk skips it and checks the rest as usual.
        let h = check_relaxed(&blob).unwrap();
        assert_eq!(h.totalsize as usize, blob.len());
    }

    #[test]
    fn too_deep() {
        // MAX_DEPTH open nodes, root included, is the limit.
        let nested = |levels: usize| {
            let mut b = Builder::new();
            b.begin("");
            for _ in 1..levels {
                b.begin("n");
            }
            for _ in 0..levels {
                b.end_node();
            }
            b.end();
            b.build()
        };
        assert!(check(&nested(MAX_DEPTH)).is_ok());
        let blob = nested(MAX_DEPTH + 1);
        let offset = (8 * MAX_DEPTH) as u32;
        assert_eq!(
            check(&blob),
            Err(FdtError::TooDeep {
                offset,
                max: MAX_DEPTH as u32
            })
        );
    }

    #[test]
    fn property_after_child() {
        let mut b = open_root();
        b.begin("child").end_node();
        let at = b.structure.len() as u32;
        b.prop("late", &[]);
        assert_eq!(
            check(&finish(b)),
            Err(FdtError::PropertyAfterChild { offset: at })
        );
    }

    #[test]
    fn node_name_errors() {
        // Unterminated: the name runs to the end of the block (no strings block follows).
        let mut b = Builder::new();
        b.begin("");
        b.token(FDT_BEGIN_NODE);
        b.structure.extend_from_slice(b"abcd");
        assert_eq!(
            check(&b.build()),
            Err(FdtError::UnterminatedNodeName { offset: 8 })
        );

        let mut b = open_root();
        let at = b.structure.len() as u32;
        b.begin_raw(b"bad\xff").end_node();
        assert_eq!(
            check(&finish(b)),
            Err(FdtError::NodeNameNotUtf8 { offset: at })
        );

        let mut b = open_root();
        let at = b.structure.len() as u32;
        b.begin("").end_node();
        assert_eq!(
            check(&finish(b)),
            Err(FdtError::EmptyNodeName { offset: at })
        );

        let mut b = Builder::new();
        b.begin("/").end_node().end();
        let err = check(&b.build()).unwrap_err();
        assert_eq!(err, FdtError::RootNameNotEmpty { offset: 0 });
        assert_eq!(
            err.to_string(),
            "root node at struct offset 0x0 has a non-empty name"
        );
    }

    #[test]
    fn property_value_out_of_bounds() {
        let mut b = open_root();
        let at = b.structure.len() as u32;
        let nameoff = b.string("x");
        b.prop_raw(0x1000, nameoff, &[]);
        assert_eq!(
            check(&finish(b)),
            Err(FdtError::PropertyValueOutOfBounds {
                offset: at,
                len: 0x1000
            })
        );
        let mut b = open_root();
        b.prop_raw(u32::MAX, 0, &[]);
        assert!(matches!(
            check(&finish(b)),
            Err(FdtError::PropertyValueOutOfBounds { len: u32::MAX, .. })
        ));
    }

    #[test]
    fn property_name_errors() {
        let mut b = open_root();
        let at = b.structure.len() as u32;
        b.prop_raw(0, 0x1_0000, &[]);
        let blob = finish(b);
        let size = get32(&blob, 32);
        assert_eq!(
            check(&blob),
            Err(FdtError::NameOffsetOutOfBounds {
                offset: at,
                nameoff: 0x1_0000,
                size
            })
        );

        let mut b = open_root();
        let at = b.structure.len() as u32;
        // finish() adds these names; register them first so "noterm" stays last.
        b.string("device_type");
        b.string("reg");
        let nameoff = b.strings.len() as u32;
        b.strings.extend_from_slice(b"noterm");
        b.prop_raw(0, nameoff, &[]);
        assert_eq!(
            check(&finish(b)),
            Err(FdtError::UnterminatedPropertyName {
                offset: at,
                nameoff
            })
        );

        let mut b = open_root();
        let at = b.structure.len() as u32;
        let nameoff = b.strings.len() as u32;
        b.strings.push(0);
        b.prop_raw(0, nameoff, &[]);
        assert_eq!(
            check(&finish(b)),
            Err(FdtError::EmptyPropertyName {
                offset: at,
                nameoff
            })
        );

        let mut b = open_root();
        let at = b.structure.len() as u32;
        let nameoff = b.string("caf\u{e9}") + 4; // the second byte of 'é'
        b.prop_raw(0, nameoff, &[]);
        assert_eq!(
            check(&finish(b)),
            Err(FdtError::PropertyNameNotUtf8 {
                offset: at,
                nameoff
            })
        );
    }

    #[test]
    fn suffix_shared_names_are_fine() {
        // dtc may point a name into the tail of a longer one.
        let mut b = open_root();
        let nameoff = b.string("linux,phandle") + 6;
        b.prop_raw(4, nameoff, &[0, 0, 0, 1]);
        assert!(check(&finish(b)).is_ok());
    }

    #[test]
    fn cells_rules() {
        assert!(matches!(
            with_node_prop("bus", "#address-cells", &[0, 0, 1]),
            Err(FdtError::BadCellsLength {
                name: "#address-cells",
                len: 3,
                ..
            })
        ));
        assert!(matches!(
            with_node_prop("bus", "#size-cells", &[0, 0, 0, 0, 0, 0, 0, 1]),
            Err(FdtError::BadCellsLength {
                name: "#size-cells",
                len: 8,
                ..
            })
        ));
        assert!(matches!(
            with_node_prop("bus", "#address-cells", &5u32.to_be_bytes()),
            Err(FdtError::CellsOutOfRange {
                value: 5,
                min: 0,
                max: 4,
                ..
            })
        ));
        assert!(with_node_prop("pci", "#address-cells", &3u32.to_be_bytes()).is_ok());
        assert!(with_node_prop("intc", "#address-cells", &0u32.to_be_bytes()).is_ok());
        // Root: 1 or 2 only.
        assert!(matches!(
            with_root_prop("#size-cells", &3u32.to_be_bytes()),
            Err(FdtError::CellsOutOfRange {
                name: "#size-cells",
                value: 3,
                min: 1,
                max: 2,
                ..
            })
        ));
        assert!(matches!(
            with_root_prop("#address-cells", &0u32.to_be_bytes()),
            Err(FdtError::CellsOutOfRange {
                value: 0,
                min: 1,
                max: 2,
                ..
            })
        ));
        // /cpus: #address-cells 1 or 2 (#size-cells is conventionally 0).
        assert!(matches!(
            with_node_prop("cpus", "#address-cells", &3u32.to_be_bytes()),
            Err(FdtError::CellsOutOfRange {
                value: 3,
                min: 1,
                max: 2,
                ..
            })
        ));
        assert!(with_node_prop("cpus", "#size-cells", &0u32.to_be_bytes()).is_ok());
    }

    #[test]
    fn reg_with_zero_cells() {
        let mut b = open_root();
        b.begin("intc")
            .prop_u32("#address-cells", 0)
            .prop_u32("#size-cells", 0);
        b.begin("child");
        let at = b.structure.len() as u32;
        b.prop("reg", &[]).end_node().end_node();
        assert_eq!(
            check(&finish(b)),
            Err(FdtError::RegWithZeroCells { offset: at })
        );
    }

    #[test]
    fn cpu_rules() {
        let cpus = |reg: Option<&[u8]>, cells: u32| {
            let mut b = open_root();
            b.begin("cpus")
                .prop_u32("#address-cells", cells)
                .prop_u32("#size-cells", 0);
            b.begin("cpu-map").end_node(); // not a cpu node: no reg needed
            b.begin("cpu@0");
            if let Some(reg) = reg {
                b.prop("reg", reg);
            }
            b.end_node().end_node();
            check(&finish(b))
        };
        assert!(cpus(Some(&[0, 0, 0, 1]), 1).is_ok());
        assert!(cpus(Some(&[0, 0, 0, 1, 0, 0, 0, 2]), 1).is_ok());
        assert!(cpus(Some(&[0, 0, 0, 0, 0, 0, 0, 1]), 2).is_ok());
        assert!(matches!(
            cpus(Some(&[0, 0, 0, 1]), 2),
            Err(FdtError::BadCpuReg {
                len: 4,
                address_cells: 2,
                ..
            })
        ));
        assert!(matches!(
            cpus(Some(&[]), 1),
            Err(FdtError::BadCpuReg {
                len: 0,
                address_cells: 1,
                ..
            })
        ));
        assert!(matches!(cpus(None, 1), Err(FdtError::MissingReg { .. })));
    }

    #[test]
    fn memory_needs_reg() {
        let mut b = open_root();
        let at = b.structure.len() as u32;
        b.begin("memory@80000000")
            .prop("device_type", b"memory\0")
            .begin("sub")
            .end_node();
        b.end_node();
        assert_eq!(check(&finish(b)), Err(FdtError::MissingReg { offset: at }));
        // Only depth-1 nodes named memory count.
        let mut b = open_root();
        b.begin("soc").begin("memory@0").end_node().end_node();
        assert!(check(&finish(b)).is_ok());
        let mut b = open_root();
        b.begin("memory-controller@0").end_node();
        assert!(check(&finish(b)).is_ok());
    }

    #[test]
    fn string_properties() {
        for name in STRING_PROPS {
            assert!(with_node_prop("chosen", name, b"ok\0").is_ok(), "{name}");
            for bad in [&b""[..], b"no-nul", b"bad\xff\0"] {
                assert!(
                    matches!(
                        with_node_prop("chosen", name, bad),
                        Err(FdtError::BadStringProperty { name: n, .. }) if n == name
                    ),
                    "{name} {bad:?}"
                );
            }
        }
        // A string list is fine.
        assert!(with_root_prop("model", b"a\0b\0").is_ok());
    }

    #[test]
    fn numeric_property_lengths() {
        for name in ["clock-frequency", "timebase-frequency"] {
            assert!(with_node_prop("cpus", name, &[0; 4]).is_ok());
            assert!(with_node_prop("cpus", name, &[0; 8]).is_ok());
            assert!(matches!(
                with_node_prop("cpus", name, &[0; 2]),
                Err(FdtError::BadPropertyLength {
                    len: 2,
                    expected: "4 or 8",
                    ..
                })
            ));
        }
        assert!(matches!(
            with_node_prop("memory@0", "initial_mapped_area", &[0; 16]),
            Err(FdtError::BadPropertyLength {
                name: "initial_mapped_area",
                len: 16,
                ..
            })
        ));
    }

    #[test]
    fn aliases() {
        assert!(with_node_prop("aliases", "serial0", b"/soc/serial@0\0").is_ok());
        for (name, value) in [("serial0", &b"serial1\0"[..]), ("/x", b"/x\0"), ("e", b"")] {
            assert!(
                matches!(
                    with_node_prop("aliases", name, value),
                    Err(FdtError::BadAlias { .. })
                ),
                "{name}"
            );
        }
        // Not /aliases: no rule.
        assert!(with_node_prop("soc", "serial0", b"serial1\0").is_ok());
    }

    #[test]
    fn display_is_one_line() {
        let samples = [
            FdtError::BufferTooShort { len: 1, needed: 40 },
            FdtError::BlockOutOfBounds {
                block: Block::Strings,
                offset: 1,
                size: 2,
                totalsize: 3,
            },
            FdtError::BlocksOverlap {
                first: Block::MemRsvmap,
                second: Block::Struct,
            },
            FdtError::UnterminatedRsvmap {
                offset: 40,
                limit: 56,
            },
            FdtError::UnknownToken {
                offset: 0x40,
                token: 7,
            },
            FdtError::CellsOutOfRange {
                offset: 8,
                name: "#size-cells",
                value: 9,
                min: 0,
                max: 4,
            },
            FdtError::BadPropertyLength {
                offset: 8,
                name: "x",
                len: 1,
                expected: "4 or 8",
            },
            FdtError::UnterminatedNodeName { offset: 0x40 },
        ];
        for e in samples {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{s}");
        }
        assert_eq!(
            FdtError::UnterminatedNodeName { offset: 0x40 }.to_string(),
            "unterminated node name at struct offset 0x40"
        );
    }
}
