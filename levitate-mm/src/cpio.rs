//! Reader for CPIO "newc" archives (the initramfs format), without allocation.
//!
//! Format (Linux `Documentation/driver-api/early-userspace/buffer-format.rst`): every entry is a
//! 110-byte ASCII header — the magic `070701` (or `070702`, which adds a checksum of the file
//! data) and 13 fields of 8 hex digits — then the NUL-terminated name, padded so that header and
//! name together are a multiple of 4 bytes, then the file data, padded to a multiple of 4. The
//! last entry is named `TRAILER!!!`; writers usually pad the archive with zeros after it.
//!
//! **Concatenation.** As the same document allows (`initramfs := ("\0" | cpio_archive)*`),
//! several archives may follow each other, with any number of NUL bytes between them; the next
//! archive must start on a 4-byte boundary of the whole buffer (Linux's `do_reset` calls
//! anything else "broken padding"). Android's bootloader builds its initrd this way, vendor
//! ramdisk first, then the boot ramdisk. Levitate is stricter than Linux in one way: every
//! archive must end with its `TRAILER!!!` (Linux also takes an archive that just stops), so a
//! truncated archive is an error rather than silently missing files. A compressed archive
//! (Linux's `lib/decompress.c` magics) is reported as such; only uncompressed ones are read.
//!
//! **Fail closed.** [`Archive::open`] validates every archive of the concatenation, so that the
//! accessors afterwards need no error paths. If a later archive is corrupt, the whole buffer is
//! refused, not just the bad part: a later archive exists to add and *override* files, so using
//! the good first part alone would serve an old file where the packer meant a new one, and the
//! mix would be one nobody built. (Linux keeps what it unpacked before the error and prints
//! "Initramfs unpacking failed"; Levitate would rather not boot a half-applied initramfs.) The
//! error names the archive, where it starts, and the offset of the problem.
//!
//! **Lookups.** [`Archive`] itself needs no memory: [`Archive::entries`] walks the headers and
//! [`Archive::find`] is linear. For listings, [`Archive::index`] builds an [`Index`] in storage
//! the caller provides ([`Archive::len`] slots of [`Slot`], e.g. on the kernel heap): the
//! entries sorted by path in O(n log n), one slot per entry, with each path's last entry kept.
//! In it [`Index::find`] is a binary search and [`Index::read_dir`] visits each child once,
//! skipping the child's own subtree with a galloping search, so listing a directory costs at
//! most a constant times the number of entries below it (the root: the whole archive), never
//! quadratic. Both count their steps ([`Index::build_steps`], [`ReadDir::steps`]) so that tests
//! can check the complexity by counting instead of timing.
//!
//! Paths are stored normalised: a leading `/` or `./` and a trailing `/` are dropped, and `.`
//! (what `find . | cpio -o` writes for the root) becomes the empty path, the root directory.
//! Names with an empty, `.` or `..` component in the middle are rejected, so that every path
//! handed out is canonical and nothing can escape the root when the archive is unpacked.
//! Directories that are only implied by deeper paths (`a/b/c` without `a/b`) can still be found
//! and listed: they appear as synthesised entries with mode `drwxr-xr-x`.
//!
//! Hard links (several entries sharing an inode number) are not merged: each entry is reported
//! as written. When a path occurs twice, in one archive or in two, the later entry wins, as when
//! Linux unpacks it.

use core::cmp::Ordering;
use core::fmt;

/// Mask of the file-type bits of a mode.
pub const S_IFMT: u32 = 0o170_000;
/// Type bits of a directory.
pub const S_IFDIR: u32 = 0o040_000;
/// Type bits of a regular file.
pub const S_IFREG: u32 = 0o100_000;
/// Type bits of a symbolic link.
pub const S_IFLNK: u32 = 0o120_000;

/// Size of an entry header: the 6-byte magic and 13 eight-digit hex fields.
pub const HEADER_SIZE: usize = 110;
/// Name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

const MAGIC_NEWC: &[u8; 6] = b"070701";
const MAGIC_CRC: &[u8; 6] = b"070702";

/// Header fields in order, as named in error messages.
const FIELDS: [&str; 13] = [
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
];
const F_MODE: usize = 1;
const F_MTIME: usize = 5;
const F_FILESIZE: usize = 6;
const F_NAMESIZE: usize = 11;
const F_CHECK: usize = 12;

/// Mode given to directories that exist only as a prefix of other paths.
const IMPLICIT_DIR_MODE: u32 = S_IFDIR | 0o755;

/// Why [`Archive::new`] rejected an archive. Offsets are byte offsets into the archive; for
/// problems inside an entry it is the offset of that entry's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// The archive (or the zero padding at its end) ends before a `TRAILER!!!` entry.
    MissingTrailer {
        /// Where the next header was expected.
        offset: usize,
    },
    /// Fewer than [`HEADER_SIZE`] bytes are left for a header.
    TruncatedHeader {
        /// Start of the header.
        offset: usize,
        /// Bytes present.
        available: usize,
    },
    /// The header does not start with `070701` or `070702`.
    BadMagic {
        /// Start of the header.
        offset: usize,
    },
    /// A header field is not exactly 8 hex digits.
    BadHex {
        /// Start of the header.
        offset: usize,
        /// The field's name, e.g. `"filesize"`.
        field: &'static str,
    },
    /// The name (`namesize` bytes) runs past the end of the archive.
    NameOutOfBounds {
        /// Start of the header.
        offset: usize,
        /// The header's `namesize`.
        namesize: u32,
    },
    /// The name is empty, lacks its terminating NUL, or has a NUL inside.
    NameNotTerminated {
        /// Start of the header.
        offset: usize,
    },
    /// The name is not valid UTF-8.
    NameNotUtf8 {
        /// Start of the header.
        offset: usize,
    },
    /// The name is empty or has an empty, `.` or `..` component after normalisation.
    BadPath {
        /// Start of the header.
        offset: usize,
        /// The name as stored.
        name: EntryName,
    },
    /// The file data (or the padding before it) runs past the end of the archive.
    DataOutOfBounds {
        /// Start of the header.
        offset: usize,
        /// The name as stored.
        name: EntryName,
        /// The header's `filesize`.
        filesize: u32,
    },
    /// A `070702` entry whose data does not sum to the header's `check` field.
    ChecksumMismatch {
        /// Start of the header.
        offset: usize,
        /// The name as stored.
        name: EntryName,
        /// The header's `check` field.
        expected: u32,
        /// The sum of the data bytes.
        actual: u32,
    },
    /// After a `TRAILER!!!` and its NUL padding, the next archive of a concatenation does not
    /// start on a 4-byte boundary of the buffer.
    Misaligned {
        /// The first non-zero byte after the trailer.
        offset: usize,
    },
    /// The data at a header's place starts with a compressor's magic number.
    Compressed {
        /// Start of the compressed data.
        offset: usize,
        /// The compressor, e.g. `"gzip"` or `"lz4"`.
        format: &'static str,
    },
}

impl CpioError {
    /// The byte offset the error refers to.
    pub fn offset(&self) -> usize {
        match *self {
            CpioError::MissingTrailer { offset }
            | CpioError::TruncatedHeader { offset, .. }
            | CpioError::BadMagic { offset }
            | CpioError::BadHex { offset, .. }
            | CpioError::NameOutOfBounds { offset, .. }
            | CpioError::NameNotTerminated { offset }
            | CpioError::NameNotUtf8 { offset }
            | CpioError::BadPath { offset, .. }
            | CpioError::DataOutOfBounds { offset, .. }
            | CpioError::ChecksumMismatch { offset, .. }
            | CpioError::Misaligned { offset }
            | CpioError::Compressed { offset, .. } => offset,
        }
    }
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpioError::MissingTrailer { offset } => write!(
                f,
                "archive ends at offset {offset:#x} without a {TRAILER} entry"
            ),
            CpioError::TruncatedHeader { offset, available } => write!(
                f,
                "truncated header at offset {offset:#x} ({available} of {HEADER_SIZE} bytes present)"
            ),
            CpioError::BadMagic { offset } => {
                write!(f, "bad magic at offset {offset:#x} (expected 070701)")
            }
            CpioError::BadHex { offset, field } => write!(
                f,
                "header at offset {offset:#x}: field '{field}' is not 8 hex digits"
            ),
            CpioError::NameOutOfBounds { offset, namesize } => write!(
                f,
                "header at offset {offset:#x}: name ({namesize} bytes) runs past the end of the archive"
            ),
            CpioError::NameNotTerminated { offset } => write!(
                f,
                "header at offset {offset:#x}: name is not a non-empty NUL-terminated string"
            ),
            CpioError::NameNotUtf8 { offset } => {
                write!(f, "header at offset {offset:#x}: name is not valid UTF-8")
            }
            CpioError::BadPath { offset, name } => write!(
                f,
                "entry '{name}' at offset {offset:#x}: path is empty or has an empty, '.' or '..' component"
            ),
            CpioError::DataOutOfBounds { offset, name, .. } => write!(
                f,
                "entry '{name}' at offset {offset:#x}: data runs past the end of the archive"
            ),
            CpioError::ChecksumMismatch {
                offset,
                name,
                expected,
                actual,
            } => write!(
                f,
                "entry '{name}' at offset {offset:#x}: data checksum {actual:#010x} does not match the header's {expected:#010x}"
            ),
            CpioError::Misaligned { offset } => write!(
                f,
                "data at offset {offset:#x} after a {TRAILER} entry is not 4-byte aligned (the next archive must start on a 4-byte boundary)"
            ),
            CpioError::Compressed { offset, format } => write!(
                f,
                "{format}-compressed data at offset {offset:#x}: only uncompressed newc archives are supported"
            ),
        }
    }
}

/// An entry name copied into an error, so that [`CpioError`] does not borrow the archive.
/// Names longer than [`EntryName::CAPACITY`] bytes are cut at a character boundary and shown
/// with a trailing `...`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    buf: [u8; EntryName::CAPACITY],
    len: u8,
    truncated: bool,
}

impl EntryName {
    /// Bytes kept of a name.
    pub const CAPACITY: usize = 64;

    fn new(name: &str) -> Self {
        let mut len = name.len().min(Self::CAPACITY);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0; Self::CAPACITY];
        buf[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self {
            buf,
            len: len as u8,
            truncated: len < name.len(),
        }
    }

    /// The kept part of the name.
    pub fn as_str(&self) -> &str {
        // Always succeeds: the copy ends at a character boundary of a `str`.
        core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether the name was longer than [`EntryName::CAPACITY`] bytes.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Why [`Index::read_dir`] could not list a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// Nothing in the archive has that path, not even as a directory prefix.
    NotFound,
    /// The path exists but is not a directory.
    NotADirectory,
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LookupError::NotFound => "no such file or directory",
            LookupError::NotADirectory => "not a directory",
        })
    }
}

/// What an entry is, from the type bits of its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file; `data` is its contents.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; `data` is the target.
    Symlink,
    /// A device node, FIFO, socket or unknown type.
    Other,
}

/// One archive member. `data` borrows from the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Normalised path: no leading `/` or `./`, no trailing `/`; empty for the root.
    pub path: &'a str,
    /// Type and permission bits, as in `st_mode`.
    pub mode: u32,
    /// File contents, or the target of a symlink.
    pub data: &'a [u8],
    /// Modification time in seconds since the epoch.
    pub mtime: u32,
}

impl<'a> Entry<'a> {
    /// The kind of entry, from the type bits of `mode`.
    pub fn kind(&self) -> Kind {
        match self.mode & S_IFMT {
            S_IFREG => Kind::File,
            S_IFDIR => Kind::Dir,
            S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    /// The last path component; empty for the root.
    pub fn name(&self) -> &'a str {
        match self.path.rfind('/') {
            Some(slash) => self.path.get(slash + 1..).unwrap_or(""),
            None => self.path,
        }
    }

    /// The target of a symlink, if this is one and the target is UTF-8.
    pub fn link_target(&self) -> Option<&'a str> {
        match self.kind() {
            Kind::Symlink => core::str::from_utf8(self.data).ok(),
            _ => None,
        }
    }

    /// The mode as `ls -l` shows it, e.g. `-rw-r--r--` or `drwxr-xr-x`.
    pub fn mode_string(&self) -> ModeString {
        ModeString::new(self.mode)
    }

    const fn implicit_dir(path: &'a str) -> Self {
        Self {
            path,
            mode: IMPLICIT_DIR_MODE,
            data: &[],
            mtime: 0,
        }
    }
}

/// A mode rendered like `ls -l` (ten ASCII characters), including setuid, setgid and sticky
/// bits (`s`/`S`, `t`/`T`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ModeString([u8; 10]);

impl ModeString {
    /// Renders `mode` (type and permission bits).
    pub fn new(mode: u32) -> Self {
        let kind = match mode & S_IFMT {
            S_IFREG => b'-',
            S_IFDIR => b'd',
            S_IFLNK => b'l',
            0o020_000 => b'c',
            0o060_000 => b'b',
            0o010_000 => b'p',
            0o140_000 => b's',
            _ => b'?',
        };
        let mut s = [b'-'; 10];
        s[0] = kind;
        // (shift of the rwx triple, special bit, letter used for the special bit)
        let triples = [(6, 0o4000, b's'), (3, 0o2000, b's'), (0, 0o1000, b't')];
        for (i, (shift, special, letter)) in triples.into_iter().enumerate() {
            let bits = (mode >> shift) & 7;
            let at = 1 + 3 * i;
            if bits & 4 != 0 {
                s[at] = b'r';
            }
            if bits & 2 != 0 {
                s[at + 1] = b'w';
            }
            let exec = bits & 1 != 0;
            s[at + 2] = match (mode & special != 0, exec) {
                (true, true) => letter,
                (true, false) => letter.to_ascii_uppercase(),
                (false, true) => b'x',
                (false, false) => b'-',
            };
        }
        Self(s)
    }

    /// The ten characters.
    pub fn as_str(&self) -> &str {
        // Always succeeds: only ASCII is ever stored.
        core::str::from_utf8(&self.0).unwrap_or("??????????")
    }
}

impl fmt::Display for ModeString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for ModeString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.as_str())
    }
}

/// Which `070702` data checksums [`Archive::open`] verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksums {
    /// Sum every `070702` entry's data and compare it with the header.
    Verify,
    /// Skip the sums (for writers that leave the `check` field zero, or to save the pass).
    Ignore,
}

/// A [`CpioError`] placed in a concatenation of archives: which archive it is in and where
/// that archive starts. It displays as the bare [`CpioError`] for the first archive, so a
/// single archive's messages read as before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveError {
    /// Which archive of the concatenation, counting from 1.
    pub archive: usize,
    /// Byte offset where that archive starts.
    pub start: usize,
    /// What is wrong, with the offset of the problem.
    pub error: CpioError,
}

impl ArchiveError {
    /// The byte offset of the problem (not of the archive).
    pub fn offset(&self) -> usize {
        self.error.offset()
    }
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.archive <= 1 {
            write!(f, "{}", self.error)
        } else {
            // Fail closed: a later archive overrides files of earlier ones, so the good part
            // alone is not what was packed.
            write!(
                f,
                "archive {} of the concatenation (starting at offset {:#x}): {} (none of it is used)",
                self.archive, self.start, self.error
            )
        }
    }
}

/// A validated newc archive, or a concatenation of them. See the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    /// The archives up to the end of the last trailer's name (the padding after it cut off).
    data: &'a [u8],
    len: usize,
    total_bytes: usize,
    archives: usize,
}

impl<'a> Archive<'a> {
    /// Validates the whole buffer — every archive's headers, names, data ranges, `070702`
    /// checksums and trailer, and that only NUL padding lies between and after them — so that
    /// no accessor can fail later. The error is the problem alone; [`Archive::open`] also says
    /// which archive of a concatenation it is in.
    pub fn new(data: &'a [u8]) -> Result<Self, CpioError> {
        Self::open(data, Checksums::Verify).map_err(|e| e.error)
    }

    /// Like [`Archive::new`] but does not verify the data checksums of `070702` entries.
    pub fn new_ignoring_checksums(data: &'a [u8]) -> Result<Self, CpioError> {
        Self::open(data, Checksums::Ignore).map_err(|e| e.error)
    }

    /// Validates as [`Archive::new`] does, reporting an error with the archive it is in.
    pub fn open(data: &'a [u8], checksums: Checksums) -> Result<Self, ArchiveError> {
        let verify = checksums == Checksums::Verify;
        let mut offset = 0;
        let mut start = 0;
        let mut archives = 1;
        let mut len = 0;
        let mut total_bytes = 0usize;
        loop {
            let at = |error| ArchiveError {
                archive: archives,
                start,
                error,
            };
            let rec = parse(data, offset, verify).map_err(at)?;
            if rec.is_trailer() {
                match next_archive(data, rec.name_end) {
                    Ok(None) => {
                        return Ok(Self {
                            data: data.get(..rec.name_end).unwrap_or(data),
                            len,
                            total_bytes,
                            archives,
                        })
                    }
                    Ok(Some(next)) => {
                        archives += 1;
                        start = next;
                        offset = next;
                        continue;
                    }
                    Err(error) => {
                        return Err(ArchiveError {
                            archive: archives + 1,
                            start: error.offset(),
                            error,
                        })
                    }
                }
            }
            let path = normalise(rec.name).ok_or(CpioError::BadPath {
                offset,
                name: EntryName::new(rec.name),
            });
            if !path.map_err(at)?.is_empty() {
                len += 1;
                total_bytes = total_bytes.saturating_add(rec.data.len());
            }
            offset = rec.next;
        }
    }

    /// All entries in buffer order, across concatenated archives, as written (a path stored
    /// twice is yielded twice), without trailers and root entries (`.`), which
    /// [`Archive::find`] still returns for `""`.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            raw: self.raw(),
            skip_root: true,
        }
    }

    /// Every entry including root entries, with the offset of its header.
    fn raw(&self) -> RawIter<'a> {
        RawIter {
            data: self.data,
            offset: 0,
            done: false,
        }
    }

    /// The entry at `path`, by a linear scan (use an [`Index`] for many lookups). Leading `/`
    /// and `./`, repeated and trailing `/` and `.` components are ignored; `""` and `"/"` name
    /// the root. If the path occurs twice the later entry is returned. A directory that exists
    /// only as a prefix of other paths, and the root when there is no `.` entry, are returned
    /// as a synthesised `drwxr-xr-x` entry.
    pub fn find(&self, path: &str) -> Option<Entry<'a>> {
        let mut explicit = None;
        let mut implicit = if components(path).next().is_none() {
            Some("")
        } else {
            None
        };
        for (_, entry) in self.raw() {
            if let Some((matched, rest)) = match_prefix(entry.path, path) {
                if rest.is_empty() {
                    explicit = Some(entry);
                } else if implicit.is_none() {
                    implicit = Some(matched);
                }
            }
        }
        explicit.or_else(|| implicit.map(Entry::implicit_dir))
    }

    /// Sorts the entries into `storage` for fast lookups and listings: O(n log n) steps, and
    /// [`Archive::len`] slots of `storage` (so the memory is proportional to the number of
    /// entries). `None` if `storage` has fewer slots than that; extra slots are left unused.
    pub fn index<'s>(&self, storage: &'s mut [Slot<'a>]) -> Option<Index<'a, 's>> {
        let slots = storage.get_mut(..self.len)?;
        let mut root = None;
        let mut filled = 0;
        for (header, entry) in self.raw() {
            if entry.path.is_empty() {
                // Root entries (`.`) are kept aside: the root is not a child of anything.
                root = Some(entry);
                continue;
            }
            *slots.get_mut(filled)? = Slot { entry, header };
            filled += 1;
        }
        if filled != slots.len() {
            // Cannot happen: validation counted exactly these entries.
            return None;
        }
        let mut steps = 0u64;
        // Headers are at increasing offsets, so equal paths end up in archive order.
        slots.sort_unstable_by(|a, b| {
            steps += 1;
            cmp_paths(a.entry.path, b.entry.path).then(a.header.cmp(&b.header))
        });
        // Keep the last (latest) slot of each run of equal paths, compacting to the front.
        let mut kept = 0;
        for i in 0..slots.len() {
            steps += 1;
            let path = slots.get(i).map(|s| s.entry.path);
            if slots.get(i + 1).map(|s| s.entry.path) != path {
                slots.swap(kept, i);
                kept += 1;
            }
        }
        let slots: &'s [Slot<'a>] = slots;
        Some(Index {
            archive: *self,
            slots: slots.get(..kept)?,
            root,
            build_steps: steps,
        })
    }

    /// Number of entries [`Archive::entries`] yields (all archives, duplicates included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the archives have no entries besides trailers (and root entries).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sum of the data lengths of all entries (file contents and symlink targets), including
    /// entries that a later one with the same path overrides.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// How many archives were concatenated (1 for a plain archive).
    pub fn archives(&self) -> usize {
        self.archives
    }
}

/// Iterator over the entries of an [`Archive`], from [`Archive::entries`].
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    raw: RawIter<'a>,
    skip_root: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        loop {
            let (_, entry) = self.raw.next()?;
            if !(self.skip_root && entry.path.is_empty()) {
                return Some(entry);
            }
        }
    }
}

/// Walks the headers of a validated archive, from one archive of a concatenation into the
/// next, yielding each entry with its header's offset. It stops at the last trailer or at the
/// first error; the latter cannot happen after validation, but stopping keeps this path free
/// of panics anyway.
#[derive(Clone, Debug)]
struct RawIter<'a> {
    data: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Iterator for RawIter<'a> {
    type Item = (usize, Entry<'a>);

    fn next(&mut self) -> Option<(usize, Entry<'a>)> {
        while !self.done {
            let header = self.offset;
            let Ok(rec) = parse(self.data, header, false) else {
                break;
            };
            if rec.is_trailer() {
                match next_archive(self.data, rec.name_end) {
                    Ok(Some(next)) => {
                        self.offset = next;
                        continue;
                    }
                    _ => break,
                }
            }
            let Some(path) = normalise(rec.name) else {
                break;
            };
            self.offset = rec.next;
            let entry = Entry {
                path,
                mode: rec.mode,
                data: rec.data,
                mtime: rec.mtime,
            };
            return Some((header, entry));
        }
        self.done = true;
        None
    }
}

/// One entry of an [`Index`]. Callers only provide storage for them: `vec![Slot::EMPTY; n]`
/// or an array, of [`Archive::len`] slots.
#[derive(Clone, Copy, Debug)]
pub struct Slot<'a> {
    entry: Entry<'a>,
    /// Offset of the entry's header: the order of equal paths.
    header: usize,
}

impl<'a> Slot<'a> {
    /// An unused slot.
    pub const EMPTY: Slot<'a> = Slot {
        entry: Entry::implicit_dir(""),
        header: 0,
    };
}

/// The entries of an [`Archive`] sorted by path, one per path (the last one written), built by
/// [`Archive::index`]. Paths are ordered component by component, so that a directory is
/// directly followed by everything below it: `a`, `a/b`, `a/b/c`, `a-z`.
#[derive(Clone, Copy, Debug)]
pub struct Index<'a, 's> {
    archive: Archive<'a>,
    slots: &'s [Slot<'a>],
    /// The last root (`.`) entry, if the archive has one.
    root: Option<Entry<'a>>,
    build_steps: u64,
}

impl<'a> Index<'a, '_> {
    /// The archive the index was built from.
    pub fn archive(&self) -> &Archive<'a> {
        &self.archive
    }

    /// Number of distinct paths (not counting the root or implicit directories).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no path is stored besides the root.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The entry of each distinct path, in index order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        self.slots.iter().map(|s| s.entry)
    }

    /// Comparisons and moves made while building the index: O(n log n).
    pub fn build_steps(&self) -> u64 {
        self.build_steps
    }

    /// The entry at `path`, as [`Archive::find`] finds it, in O(log n) steps.
    pub fn find(&self, path: &str) -> Option<Entry<'a>> {
        self.lookup(path, &mut 0)
    }

    fn lookup(&self, query: &str, steps: &mut u64) -> Option<Entry<'a>> {
        if components(query).next().is_none() {
            return Some(self.root.unwrap_or(Entry::implicit_dir("")));
        }
        // The first path not before the query: the query itself if it is stored, otherwise
        // the first path below it if there is any (a subtree directly follows its root).
        let at = self.slots.partition_point(|s| {
            *steps += 1;
            cmp_query(s.entry.path, query) == Ordering::Less
        });
        let next = self.slots.get(at)?;
        match match_prefix(next.entry.path, query)? {
            (_, "") => Some(next.entry),
            (matched, _) => Some(Entry::implicit_dir(matched)),
        }
    }

    /// The direct children of the directory at `path` (normalised as in [`Archive::find`]),
    /// each once, in index order, including implicit subdirectories. Listing costs O(log n)
    /// steps to find the directory, then at most a constant times the number of entries below
    /// it ([`ReadDir::steps`]).
    pub fn read_dir(&self, path: &str) -> Result<ReadDir<'a, '_>, LookupError> {
        let mut steps = 0;
        let dir = self.lookup(path, &mut steps).ok_or(LookupError::NotFound)?;
        if dir.kind() != Kind::Dir {
            return Err(LookupError::NotADirectory);
        }
        // Everything below `dir` comes right after `dir` itself (which may not be stored).
        let start = self.slots.partition_point(|s| {
            steps += 1;
            cmp_paths(s.entry.path, dir.path) != Ordering::Greater
        });
        Ok(ReadDir {
            slots: self.slots.get(start..).unwrap_or(&[]),
            dir: dir.path,
            pos: 0,
            steps,
        })
    }
}

/// Iterator over the children of a directory, from [`Index::read_dir`].
#[derive(Clone, Debug)]
pub struct ReadDir<'a, 'i> {
    /// The slots from the directory's first descendant on.
    slots: &'i [Slot<'a>],
    dir: &'a str,
    /// The next child's first slot.
    pos: usize,
    steps: u64,
}

impl ReadDir<'_, '_> {
    /// Slots looked at so far, including the search for the directory.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The end of the run of slots below (or at) `root`, which starts at `from`: a galloping
    /// search (probe 1, 2, 4, ... slots ahead, then bisect the last gap), so skipping a subtree
    /// of `s` slots takes O(log s) steps and a listing no more than its slots.
    fn end_of_subtree(&mut self, from: usize, root: &str) -> usize {
        let slots = self.slots;
        let within = |s: &Slot<'_>| is_within(s.entry.path, root);
        let mut inside = from;
        let mut step = 1usize;
        let outside = loop {
            let probe = from.saturating_add(step);
            let Some(slot) = slots.get(probe) else {
                break slots.len();
            };
            self.steps += 1;
            if !within(slot) {
                break probe;
            }
            inside = probe;
            step = step.saturating_mul(2);
        };
        let gap = slots.get(inside + 1..outside).unwrap_or(&[]);
        inside
            + 1
            + gap.partition_point(|s| {
                self.steps += 1;
                within(s)
            })
    }
}

impl<'a> Iterator for ReadDir<'a, '_> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let first = self.slots.get(self.pos)?.entry;
        self.steps += 1;
        // The first slot past the directory's subtree ends the listing.
        let child = child_of(self.dir, first.path)?;
        self.pos = self.end_of_subtree(self.pos, child);
        // A child's own entry, when stored, is the first slot of its subtree.
        Some(if first.path.len() == child.len() {
            first
        } else {
            Entry::implicit_dir(child)
        })
    }
}

/// One parsed header with its name and data.
struct Record<'a> {
    name: &'a str,
    mode: u32,
    mtime: u32,
    data: &'a [u8],
    /// End of the name including its NUL (before padding).
    name_end: usize,
    /// Offset of the next header.
    next: usize,
}

impl Record<'_> {
    fn is_trailer(&self) -> bool {
        self.name == TRAILER
    }
}

/// Parses the entry at `offset`. The trailer's data and padding are not looked at: validation
/// only requires zeros after its name.
fn parse(data: &[u8], offset: usize, verify: bool) -> Result<Record<'_>, CpioError> {
    let rest = data.get(offset..).unwrap_or(&[]);
    if rest.iter().all(|&b| b == 0) {
        // Covers both a clean end and the zero padding writers add, in which a trailer was
        // expected rather than a magic number.
        return Err(CpioError::MissingTrailer {
            offset: offset.min(data.len()),
        });
    }
    if !rest.starts_with(b"0707") {
        if let Some(format) = compression(rest) {
            return Err(CpioError::Compressed { offset, format });
        }
    }
    let Some(header) = rest.get(..HEADER_SIZE) else {
        return Err(CpioError::TruncatedHeader {
            offset,
            available: rest.len(),
        });
    };
    let magic = header.get(..6).unwrap_or(&[]);
    let crc = magic == MAGIC_CRC;
    if magic != MAGIC_NEWC && !crc {
        return Err(CpioError::BadMagic { offset });
    }
    let mut fields = [0u32; 13];
    for (i, field) in fields.iter_mut().enumerate() {
        let digits = header.get(6 + 8 * i..14 + 8 * i).unwrap_or(&[]);
        *field = hex8(digits).ok_or(CpioError::BadHex {
            offset,
            field: FIELDS[i],
        })?;
    }
    let namesize = fields[F_NAMESIZE];
    let filesize = fields[F_FILESIZE];

    let name_start = offset + HEADER_SIZE;
    let name_end = name_start.checked_add(namesize as usize);
    let Some(name_bytes) = name_end.and_then(|end| data.get(name_start..end)) else {
        return Err(CpioError::NameOutOfBounds { offset, namesize });
    };
    let name_end = name_start + name_bytes.len();
    let Some((&0, name)) = name_bytes.split_last() else {
        return Err(CpioError::NameNotTerminated { offset });
    };
    if name.contains(&0) {
        return Err(CpioError::NameNotTerminated { offset });
    }
    let name = core::str::from_utf8(name).map_err(|_| CpioError::NameNotUtf8 { offset })?;

    let mut rec = Record {
        name,
        mode: fields[F_MODE],
        mtime: fields[F_MTIME],
        data: &[],
        name_end,
        next: name_end,
    };
    if rec.is_trailer() {
        return Ok(rec);
    }
    let data_start = align4(name_end);
    let data_end = data_start.and_then(|start| start.checked_add(filesize as usize));
    let (Some(file), Some(next)) = (
        data_start
            .zip(data_end)
            .and_then(|(start, end)| data.get(start..end)),
        data_end.and_then(align4),
    ) else {
        return Err(CpioError::DataOutOfBounds {
            offset,
            name: EntryName::new(name),
            filesize,
        });
    };
    if crc && verify {
        let actual = file
            .iter()
            .fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b)));
        if actual != fields[F_CHECK] {
            return Err(CpioError::ChecksumMismatch {
                offset,
                name: EntryName::new(name),
                expected: fields[F_CHECK],
                actual,
            });
        }
    }
    rec.data = file;
    rec.next = next;
    Ok(rec)
}

/// Where the archive after a trailer whose name ends at `after` starts: the first non-NUL
/// byte, which must be 4-byte aligned (buffer-format.rst: `cpio_file := ALGN(4) + ...`, and
/// Linux's `do_reset` refuses "broken padding"); `None` if only NULs follow.
fn next_archive(data: &[u8], after: usize) -> Result<Option<usize>, CpioError> {
    let rest = data.get(after..).unwrap_or(&[]);
    match rest.iter().position(|&b| b != 0) {
        None => Ok(None),
        Some(i) if (after + i).is_multiple_of(4) => Ok(Some(after + i)),
        Some(i) => Err(CpioError::Misaligned { offset: after + i }),
    }
}

/// The compressor whose magic number `data` starts with, from the table Linux uses to pick an
/// initramfs decompressor (`lib/decompress.c`, `compressed_formats`).
fn compression(data: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&[u8], &str); 8] = [
        (b"\x1f\x8b", "gzip"),
        (b"\x1f\x9e", "gzip"),
        (b"BZh", "bzip2"),
        (b"\x5d\x00", "lzma"),
        (b"\xfd\x37", "xz"),
        (b"\x89\x4c", "lzo"),
        (b"\x02\x21", "lz4"),
        (b"\x28\xb5", "zstd"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| data.starts_with(magic))
        .map(|&(_, name)| name)
}

/// Parses exactly 8 hex digits (either case, no sign or prefix).
fn hex8(digits: &[u8]) -> Option<u32> {
    if digits.len() != 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(acc << 4 | v)
    })
}

fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

/// The stored form of an entry name: leading `/` and `./` and trailing `/` dropped, `.` for the
/// root becomes `""`. `None` for names that are empty or have an empty, `.` or `..` component
/// left, which a canonical path never has.
fn normalise(name: &str) -> Option<&str> {
    if name.is_empty() {
        return None;
    }
    let mut path = name;
    loop {
        if let Some(rest) = path.strip_prefix('/') {
            path = rest;
        } else if let Some(rest) = path.strip_prefix("./") {
            path = rest;
        } else {
            break;
        }
    }
    let path = path.trim_end_matches('/');
    if path == "." || path.is_empty() {
        return Some("");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    Some(path)
}

/// The components of a lookup path, skipping empty and `.` components so that `/a//./b/` and
/// `a/b` are the same path.
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// If the canonical `path` is at or below the lookup path `query`, returns the part of `path`
/// naming `query` and the remainder after it (without its leading `/`; empty for an exact
/// match).
fn match_prefix<'p>(path: &'p str, query: &str) -> Option<(&'p str, &'p str)> {
    let mut rest = path;
    for (i, comp) in components(query).enumerate() {
        if i > 0 {
            rest = rest.strip_prefix('/')?;
        }
        rest = rest.strip_prefix(comp)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
    }
    let matched = path.get(..path.len() - rest.len())?;
    Some((matched, rest.strip_prefix('/').unwrap_or(rest)))
}

/// The direct child of the canonical directory `dir` (`""` for the root) that the canonical
/// `path` lies in, as a prefix of `path`; `None` if `path` is not strictly below `dir`.
fn child_of<'p>(dir: &str, path: &'p str) -> Option<&'p str> {
    let rest = if dir.is_empty() {
        path
    } else {
        path.strip_prefix(dir)?.strip_prefix('/')?
    };
    if rest.is_empty() {
        return None;
    }
    let component = rest.find('/').unwrap_or(rest.len());
    path.get(..path.len() - rest.len() + component)
}

/// Whether the canonical `path` is the canonical `root` or lies below it.
fn is_within(path: &str, root: &str) -> bool {
    match path.strip_prefix(root) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The index order of two canonical paths: component by component, a prefix first. Comparing
/// the bytes with `/` taken as the smallest byte gives exactly that order (components never
/// contain `/` or NUL), without splitting.
fn cmp_paths(a: &str, b: &str) -> Ordering {
    let key = |byte: u8| if byte == b'/' { 0 } else { byte };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// [`cmp_paths`] between a canonical path and a lookup path that may not be canonical.
fn cmp_query(path: &str, query: &str) -> Ordering {
    components(path).cmp(components(query))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::string::{String, ToString};
    use std::vec;
    use std::vec::Vec;

    /// Writes newc archives for the tests, with control over every field.
    struct Builder {
        out: Vec<u8>,
        ino: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                out: Vec::new(),
                ino: 1,
            }
        }

        /// Appends a header with the given magic, name bytes (NUL added) and data, with
        /// `namesize`/`filesize` taken from them.
        fn raw(&mut self, magic: &str, name: &[u8], mode: u32, data: &[u8], check: u32) -> usize {
            let offset = self.out.len();
            let fields = [
                self.ino,
                mode,
                0,
                0,
                1,
                1_700_000_000,
                data.len() as u32,
                0,
                0,
                0,
                0,
                name.len() as u32 + 1,
                check,
            ];
            self.ino += 1;
            self.out.extend_from_slice(magic.as_bytes());
            for f in fields {
                self.out.extend_from_slice(format!("{f:08x}").as_bytes());
            }
            self.out.extend_from_slice(name);
            self.out.push(0);
            self.pad();
            self.out.extend_from_slice(data);
            self.pad();
            offset
        }

        fn pad(&mut self) {
            while !self.out.len().is_multiple_of(4) {
                self.out.push(0);
            }
        }

        fn file(&mut self, name: &str, data: &[u8]) -> usize {
            self.raw("070701", name.as_bytes(), S_IFREG | 0o644, data, 0)
        }

        fn dir(&mut self, name: &str) -> usize {
            self.raw("070701", name.as_bytes(), S_IFDIR | 0o755, &[], 0)
        }

        fn symlink(&mut self, name: &str, target: &str) -> usize {
            self.raw(
                "070701",
                name.as_bytes(),
                S_IFLNK | 0o777,
                target.as_bytes(),
                0,
            )
        }

        fn crc_file(&mut self, name: &str, data: &[u8]) -> usize {
            let sum = data.iter().map(|&b| u32::from(b)).sum();
            self.raw("070702", name.as_bytes(), S_IFREG | 0o600, data, sum)
        }

        fn finish(mut self) -> Vec<u8> {
            self.raw("070701", TRAILER.as_bytes(), 0, &[], 0);
            self.out
        }

        fn finish_padded(self, block: usize) -> Vec<u8> {
            let mut out = self.finish();
            out.resize(out.len().next_multiple_of(block), 0);
            out
        }
    }

    /// Overwrites header field `index` of the header at `at` with `value` (8 characters).
    fn set_field(archive: &mut [u8], at: usize, index: usize, value: &str) {
        assert_eq!(value.len(), 8);
        let start = at + 6 + 8 * index;
        archive[start..start + 8].copy_from_slice(value.as_bytes());
    }

    fn paths<'a>(it: impl Iterator<Item = Entry<'a>>) -> Vec<&'a str> {
        it.map(|e| e.path).collect()
    }

    /// Storage for the index of `a`.
    fn storage<'a>(a: &Archive<'a>) -> Vec<Slot<'a>> {
        vec![Slot::EMPTY; a.len()]
    }

    /// `Index::find`, checked against the linear `Archive::find`.
    fn find<'a>(ix: &Index<'a, '_>, path: &str) -> Option<Entry<'a>> {
        let found = ix.find(path);
        assert_eq!(found, ix.archive().find(path), "{path:?}");
        found
    }

    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        b.dir("etc");
        b.file("etc/motd", b"Welcome to Levitate\n");
        b.file("hello.txt", b"hi");
        b.symlink("greeting", "hello.txt");
        b.file("empty", b"");
        b.finish_padded(512)
    }

    #[test]
    fn reads_entries() {
        let bytes = sample();
        let a = Archive::new(&bytes).unwrap();
        assert_eq!(a.len(), 5);
        assert!(!a.is_empty());
        assert_eq!(a.total_bytes(), 20 + 2 + 9);
        assert_eq!(
            paths(a.entries()),
            ["etc", "etc/motd", "hello.txt", "greeting", "empty"]
        );
        let motd = a.find("etc/motd").unwrap();
        assert_eq!(motd.data, b"Welcome to Levitate\n");
        assert_eq!(motd.kind(), Kind::File);
        assert_eq!(motd.name(), "motd");
        assert_eq!(motd.mtime, 1_700_000_000);
        assert_eq!(motd.mode, 0o100644);
        assert_eq!(a.find("etc").unwrap().kind(), Kind::Dir);
        let link = a.find("greeting").unwrap();
        assert_eq!(link.kind(), Kind::Symlink);
        assert_eq!(link.link_target(), Some("hello.txt"));
        assert_eq!(motd.link_target(), None);
        assert_eq!(a.find("empty").unwrap().data, b"");
        assert_eq!(a.find("nope"), None);
        assert_eq!(a.find("etc/motd/x"), None);
        assert_eq!(a.find("et"), None);
    }

    #[test]
    fn entry_data_borrows_from_the_archive() {
        let bytes = sample();
        let a = Archive::new(&bytes).unwrap();
        let range = bytes.as_ptr_range();
        for e in a.entries() {
            assert!(range.contains(&e.data.as_ptr()) || e.data.is_empty());
        }
    }

    #[test]
    fn empty_archive_is_just_a_trailer() {
        let bytes = Builder::new().finish();
        let a = Archive::new(&bytes).unwrap();
        assert!(a.is_empty());
        assert_eq!(a.total_bytes(), 0);
        assert_eq!(a.entries().count(), 0);
        assert_eq!(a.archives(), 1);
        let mut s = storage(&a);
        let ix = a.index(&mut s).unwrap();
        assert!(ix.is_empty());
        assert_eq!(ix.read_dir("").unwrap().count(), 0);
        assert_eq!(find(&ix, "/").unwrap().kind(), Kind::Dir);
        assert_eq!(ix.read_dir("x").err(), Some(LookupError::NotFound));
    }

    #[test]
    fn path_normalisation() {
        let mut b = Builder::new();
        b.dir(".");
        b.dir("./etc/");
        b.file("/etc/motd", b"m");
        b.file(".//./usr", b"u");
        let bytes = b.finish();
        let a = Archive::new(&bytes).unwrap();
        // The root entry is not listed but is what `find("")` returns.
        assert_eq!(paths(a.entries()), ["etc", "etc/motd", "usr"]);
        assert_eq!(a.len(), 3);
        for q in [
            "etc/motd",
            "/etc/motd",
            "./etc/motd",
            "etc/motd/",
            "etc//motd",
            "//etc/./motd",
        ] {
            assert_eq!(a.find(q).map(|e| e.path), Some("etc/motd"), "{q}");
        }
        for q in ["", "/", ".", "./", "//"] {
            let root = a.find(q).unwrap();
            assert_eq!((root.path, root.name(), root.kind()), ("", "", Kind::Dir));
            assert_eq!(root.mtime, 1_700_000_000, "the explicit root entry");
        }
        assert_eq!(a.find("etc/../etc/motd"), None);
        let mut s = storage(&a);
        let ix = a.index(&mut s).unwrap();
        for q in [
            "etc/motd",
            "//etc/./motd",
            "",
            "./",
            "etc/../etc/motd",
            "etc/",
        ] {
            find(&ix, q);
        }
        assert_eq!(paths(ix.read_dir("/").unwrap()), ["etc", "usr"]);
        assert_eq!(paths(ix.read_dir("./etc/").unwrap()), ["etc/motd"]);
    }

    #[test]
    fn implicit_directories() {
        let mut b = Builder::new();
        b.file("a/b/c", b"c");
        b.file("a/b/d", b"d");
        b.file("a/e", b"e");
        b.file("top", b"t");
        b.file("a/b/f/g", b"g");
        let bytes = b.finish();
        let a = Archive::new(&bytes).unwrap();
        let mut s = storage(&a);
        let ix = a.index(&mut s).unwrap();
        let dir = find(&ix, "a/b").unwrap();
        assert_eq!(dir.kind(), Kind::Dir);
        assert_eq!(dir.path, "a/b");
        assert_eq!(dir.mode_string().as_str(), "drwxr-xr-x");
        assert_eq!(dir.data, b"");
        assert_eq!(find(&ix, "/").unwrap().mode, S_IFDIR | 0o755);
        assert_eq!(paths(ix.read_dir("").unwrap()), ["a", "top"]);
        assert_eq!(paths(ix.read_dir("a").unwrap()), ["a/b", "a/e"]);
        assert_eq!(
            paths(ix.read_dir("a/b").unwrap()),
            ["a/b/c", "a/b/d", "a/b/f"]
        );
        assert_eq!(paths(ix.read_dir("a/b/f").unwrap()), ["a/b/f/g"]);
        assert_eq!(ix.read_dir("a/b/c").err(), Some(LookupError::NotADirectory));
        assert_eq!(ix.read_dir("a/x").err(), Some(LookupError::NotFound));
        assert_eq!(ix.read_dir("a/b/c/d").err(), Some(LookupError::NotFound));
        assert_eq!(find(&ix, "a/b/c/d"), None);
        assert_eq!(find(&ix, "a/"), find(&ix, "a"));
        // Implicit directories are not entries.
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn read_dir_lists_each_child_once_and_later_entries_win() {
        let mut b = Builder::new();
        b.file("d/x/1", b"1");
        b.dir("d/x");
        b.file("d/y", b"old");
        b.file("d/x/2", b"2");
        b.file("d/y", b"new");
        b.dir("d");
        let bytes = b.finish();
        let a = Archive::new(&bytes).unwrap();
        let mut s = storage(&a);
        let ix = a.index(&mut s).unwrap();
        assert_eq!(ix.len(), 5, "d/x/1 d/x d/y d/x/2 d");
        let children: Vec<_> = ix.read_dir("d").unwrap().collect();
        assert_eq!(paths(children.iter().copied()), ["d/x", "d/y"]);
        // The explicit directory entry is preferred over the synthesised one.
        assert_eq!(children[0].mode, S_IFDIR | 0o755);
        assert_eq!(children[0].mtime, 1_700_000_000);
        assert_eq!(children[1].data, b"new");
        assert_eq!(find(&ix, "d/y").unwrap().data, b"new");
        // `entries` reports the archive as written.
        assert_eq!(a.entries().count(), 6);
    }

    #[test]
    fn file_shadowing_a_directory_is_not_listable() {
        let mut b = Builder::new();
        b.file("x", b"file");
        b.file("x/y", b"below a file");
        let bytes = b.finish();
        let a = Archive::new(&bytes).unwrap();
        let mut s = storage(&a);
        let ix = a.index(&mut s).unwrap();
        assert_eq!(find(&ix, "x").unwrap().kind(), Kind::File);
        assert_eq!(ix.read_dir("x").err(), Some(LookupError::NotADirectory));
        assert_eq!(find(&ix, "x/y").unwrap().data, b"below a file");
        // The root lists `x` once, though two paths lie in it.
        assert_eq!(paths(ix.read_dir("").unwrap()), ["x"]);
    }

    #[test]
    fn checksums() {
        let mut b = Builder::new();
        b.crc_file("sum", b"\xff\xff\x01");
        let good = b.finish();
        let a = Archive::new(&good).unwrap();
        assert_eq!(a.find("sum").unwrap().data, b"\xff\xff\x01");
        let mut bad = good.clone();
        set_field(&mut bad, 0, F_CHECK, "00000000");
        assert_eq!(
            Archive::new(&bad).unwrap_err(),
            CpioError::ChecksumMismatch {
                offset: 0,
                name: EntryName::new("sum"),
                expected: 0,
                actual: 0x1ff,
            }
        );
        assert_eq!(
            Archive::new(&bad).unwrap_err().to_string(),
            "entry 'sum' at offset 0x0: data checksum 0x000001ff does not match the header's 0x00000000"
        );
        assert!(Archive::new_ignoring_checksums(&bad).is_ok());
        // The check field of plain newc entries is not looked at.
        let mut b = Builder::new();
        b.raw("070701", b"f", S_IFREG | 0o644, b"abc", 0xdead_beef);
        assert!(Archive::new(&b.finish()).is_ok());
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let mut b = Builder::new();
        let at = b.raw("070701", b"f", 0o100644, b"", 0);
        let mut bytes = b.finish();
        set_field(&mut bytes, at, F_MTIME, "ABCDEF12");
        assert_eq!(
            Archive::new(&bytes).unwrap().find("f").unwrap().mtime,
            0xabcdef12
        );
    }

    #[test]
    fn trailer_padding() {
        // Zeros after the trailer are fine, in any amount, and so is a missing final padding.
        let mut b = Builder::new();
        b.file("f", b"x");
        let trailer_name_end = b.out.len() + HEADER_SIZE + TRAILER.len() + 1;
        let bytes = b.finish();
        assert!(bytes.len() > trailer_name_end);
        assert_eq!(bytes[trailer_name_end - 1], 0);
        for len in trailer_name_end..bytes.len() {
            assert!(Archive::new(&bytes[..len]).is_ok(), "{len}");
        }
        let mut long = bytes.clone();
        long.resize(4096 + 3, 0);
        assert!(Archive::new(&long).is_ok());
        // A non-zero byte after the padding starts a second archive, which must be one.
        long[4000] = 1;
        let err = Archive::open(&long, Checksums::Verify).unwrap_err();
        assert_eq!(
            err,
            ArchiveError {
                archive: 2,
                start: 4000,
                error: CpioError::TruncatedHeader {
                    offset: 4000,
                    available: 99
                }
            }
        );
        assert_eq!(Archive::new(&long).unwrap_err(), err.error);
        assert_eq!(
            err.to_string(),
            "archive 2 of the concatenation (starting at offset 0xfa0): truncated header at offset 0xfa0 (99 of 110 bytes present) (none of it is used)"
        );
        long[4000] = 0;
        long[4001] = 1;
        let err = Archive::open(&long, Checksums::Verify).unwrap_err();
        assert_eq!(err.error, CpioError::Misaligned { offset: 4001 });
        assert_eq!((err.archive, err.start, err.offset()), (2, 4001, 4001));
        assert_eq!(
            err.error.to_string(),
            "data at offset 0xfa1 after a TRAILER!!! entry is not 4-byte aligned (the next archive must start on a 4-byte boundary)"
        );
    }

    #[test]
    fn missing_trailer() {
        assert_eq!(
            Archive::new(b"").unwrap_err(),
            CpioError::MissingTrailer { offset: 0 }
        );
        assert_eq!(
            Archive::new(&[0; 512]).unwrap_err(),
            CpioError::MissingTrailer { offset: 0 }
        );
        let mut b = Builder::new();
        b.file("f", b"data");
        let mut bytes = b.out.clone();
        let end = bytes.len();
        assert_eq!(
            Archive::new(&bytes).unwrap_err(),
            CpioError::MissingTrailer { offset: end }
        );
        bytes.resize(1024, 0);
        let err = Archive::new(&bytes).unwrap_err();
        assert_eq!(err, CpioError::MissingTrailer { offset: end });
        assert_eq!(
            err.to_string(),
            format!("archive ends at offset {end:#x} without a TRAILER!!! entry")
        );
    }

    #[test]
    fn truncated_header() {
        let bytes = sample();
        assert_eq!(
            Archive::new(&bytes[..50]).unwrap_err(),
            CpioError::TruncatedHeader {
                offset: 0,
                available: 50
            }
        );
        let mut b = Builder::new();
        b.file("f", b"");
        let end = b.out.len();
        let bytes = b.finish();
        let err = Archive::new(&bytes[..end + 7]).unwrap_err();
        assert_eq!(
            err,
            CpioError::TruncatedHeader {
                offset: end,
                available: 7
            }
        );
        assert_eq!(err.offset(), end);
        assert_eq!(
            err.to_string(),
            format!("truncated header at offset {end:#x} (7 of 110 bytes present)")
        );
    }

    #[test]
    fn bad_magic() {
        let mut b = Builder::new();
        b.file("etc/motd", &[b'x'; 392]);
        let at = b.out.len();
        assert_eq!(at, 0x200);
        let mut bytes = b.finish();
        bytes[at + 5] = b'7';
        let err = Archive::new(&bytes).unwrap_err();
        assert_eq!(err, CpioError::BadMagic { offset: 0x200 });
        assert_eq!(
            err.to_string(),
            "bad magic at offset 0x200 (expected 070701)"
        );
        // The old binary and "odc" formats are not accepted either.
        let mut odc = b"070707".to_vec();
        odc.resize(200, b'0');
        assert_eq!(
            Archive::new(&odc).unwrap_err(),
            CpioError::BadMagic { offset: 0 }
        );
    }

    #[test]
    fn bad_hex_in_every_field() {
        for (i, name) in FIELDS.iter().enumerate() {
            for bad in ["0000000g", "+0000001", " 0000001", "0x000001", "0000000\0"] {
                let mut bytes = sample();
                set_field(&mut bytes, 0, i, bad);
                let err = Archive::new(&bytes).unwrap_err();
                assert_eq!(
                    err,
                    CpioError::BadHex {
                        offset: 0,
                        field: name
                    },
                    "{bad}"
                );
                assert_eq!(
                    err.to_string(),
                    format!("header at offset 0x0: field '{name}' is not 8 hex digits")
                );
            }
        }
    }

    #[test]
    fn name_errors() {
        // Name running past the end of the archive.
        let mut bytes = sample();
        set_field(&mut bytes, 0, F_NAMESIZE, "00001000");
        assert_eq!(
            Archive::new(&bytes).unwrap_err(),
            CpioError::NameOutOfBounds {
                offset: 0,
                namesize: 0x1000
            }
        );
        set_field(&mut bytes, 0, F_NAMESIZE, "ffffffff");
        assert!(matches!(
            Archive::new(&bytes).unwrap_err(),
            CpioError::NameOutOfBounds { offset: 0, .. }
        ));
        // Zero-length name, a name without its NUL, and a NUL inside the name.
        for size in ["00000000", "00000003"] {
            let mut bytes = sample();
            set_field(&mut bytes, 0, F_NAMESIZE, size);
            assert_eq!(
                Archive::new(&bytes).unwrap_err(),
                CpioError::NameNotTerminated { offset: 0 },
                "{size}"
            );
        }
        let mut b = Builder::new();
        b.raw("070701", b"a\0b", S_IFREG, b"", 0);
        assert_eq!(
            Archive::new(&b.finish()).unwrap_err(),
            CpioError::NameNotTerminated { offset: 0 }
        );
        let mut b = Builder::new();
        b.file("ok", b"");
        let at = b.raw("070701", b"\xffbad", S_IFREG, b"", 0);
        let err = Archive::new(&b.finish()).unwrap_err();
        assert_eq!(err, CpioError::NameNotUtf8 { offset: at });
        assert_eq!(
            err.to_string(),
            format!("header at offset {at:#x}: name is not valid UTF-8")
        );
    }

    #[test]
    fn bad_paths() {
        for name in ["", "..", "../x", "a/../b", "a//b", "a/./b", "a/.", "/.."] {
            let mut b = Builder::new();
            b.file(name, b"");
            let err = Archive::new(&b.finish()).unwrap_err();
            assert_eq!(
                err,
                CpioError::BadPath {
                    offset: 0,
                    name: EntryName::new(name)
                },
                "{name:?}"
            );
        }
        let mut b = Builder::new();
        b.file("a/../b", b"");
        assert_eq!(
            Archive::new(&b.finish()).unwrap_err().to_string(),
            "entry 'a/../b' at offset 0x0: path is empty or has an empty, '.' or '..' component"
        );
        // Names that merely contain dots are fine.
        let mut b = Builder::new();
        b.file("...", b"");
        b.file(".hidden/..x", b"");
        assert!(Archive::new(&b.finish()).is_ok());
    }

    #[test]
    fn data_out_of_bounds() {
        let mut b = Builder::new();
        b.file("hello.txt", b"hi");
        let at = b.file("etc/motd", b"motd");
        assert_eq!(at, 0x7c);
        let mut bytes = b.finish();
        set_field(&mut bytes, at, F_FILESIZE, "00010000");
        let err = Archive::new(&bytes).unwrap_err();
        assert_eq!(
            err,
            CpioError::DataOutOfBounds {
                offset: at,
                name: EntryName::new("etc/motd"),
                filesize: 0x10000
            }
        );
        assert_eq!(
            err.to_string(),
            "entry 'etc/motd' at offset 0x7c: data runs past the end of the archive"
        );
        set_field(&mut bytes, at, F_FILESIZE, "ffffffff");
        assert!(matches!(
            Archive::new(&bytes).unwrap_err(),
            CpioError::DataOutOfBounds { .. }
        ));
        // Cut inside the padding before the data and inside the data.
        let mut b = Builder::new();
        b.file("ff", b"12345");
        let bytes = b.finish();
        for len in [HEADER_SIZE + 3, HEADER_SIZE + 5, HEADER_SIZE + 4 + 4] {
            assert!(
                matches!(
                    Archive::new(&bytes[..len]).unwrap_err(),
                    CpioError::DataOutOfBounds { offset: 0, .. }
                ),
                "{len}"
            );
        }
    }

    #[test]
    fn long_names_are_cut_in_errors() {
        let name: String = "é".repeat(40); // 80 bytes
        let mut b = Builder::new();
        b.raw("070701", name.as_bytes(), S_IFREG, b"", 0);
        let mut bytes = b.finish();
        set_field(&mut bytes, 0, F_FILESIZE, "00100000");
        let CpioError::DataOutOfBounds { name: cut, .. } = Archive::new(&bytes).unwrap_err() else {
            panic!("wrong error");
        };
        assert!(cut.is_truncated());
        assert_eq!(cut.as_str(), "é".repeat(32));
        assert_eq!(cut.to_string(), format!("{}...", "é".repeat(32)));
        let short = EntryName::new("motd");
        assert!(!short.is_truncated());
        assert_eq!(format!("{short:?}"), "\"motd\"");
    }

    #[test]
    fn mode_strings() {
        let cases = [
            (S_IFREG | 0o644, "-rw-r--r--"),
            (S_IFDIR | 0o755, "drwxr-xr-x"),
            (S_IFLNK | 0o777, "lrwxrwxrwx"),
            (S_IFREG | 0o4755, "-rwsr-xr-x"),
            (S_IFREG | 0o2644, "-rw-r-Sr--"),
            (S_IFDIR | 0o1777, "drwxrwxrwt"),
            (S_IFDIR | 0o1776, "drwxrwxrwT"),
            (0o020_620, "crw--w----"),
            (0o060_660, "brw-rw----"),
            (0o010_600, "prw-------"),
            (0o140_755, "srwxr-xr-x"),
            (0o000_000, "?---------"),
        ];
        for (mode, s) in cases {
            let m = ModeString::new(mode);
            assert_eq!(m.as_str(), s, "{mode:o}");
            assert_eq!(m.to_string(), s);
        }
        assert_eq!(
            format!("{:>12}|", ModeString::new(S_IFREG)),
            "  ----------|"
        );
        let bytes = sample();
        let a = Archive::new(&bytes).unwrap();
        assert_eq!(
            a.find("etc/motd").unwrap().mode_string().as_str(),
            "-rw-r--r--"
        );
        assert_eq!(
            a.find("greeting").unwrap().mode_string().to_string(),
            "lrwxrwxrwx"
        );
    }

    #[test]
    fn other_kinds() {
        let mut b = Builder::new();
        b.raw("070701", b"dev/null", 0o020_666, b"", 0);
        let bytes = b.finish();
        let a = Archive::new(&bytes).unwrap();
        assert_eq!(a.find("dev/null").unwrap().kind(), Kind::Other);
        assert_eq!(a.find("dev").unwrap().kind(), Kind::Dir);
    }

    #[test]
    fn lookup_error_messages() {
        assert_eq!(
            LookupError::NotFound.to_string(),
            "no such file or directory"
        );
        assert_eq!(LookupError::NotADirectory.to_string(), "not a directory");
    }

    #[test]
    fn helpers() {
        assert_eq!(hex8(b"0000001f"), Some(31));
        assert_eq!(hex8(b"FFFFFFFF"), Some(u32::MAX));
        assert_eq!(hex8(b"0000001"), None);
        assert_eq!(normalise("./"), Some(""));
        assert_eq!(normalise("/"), Some(""));
        assert_eq!(normalise("a/b//"), Some("a/b"));
        assert_eq!(match_prefix("a/b/c", "a"), Some(("a", "b/c")));
        assert_eq!(match_prefix("a/b/c", "a/b/c"), Some(("a/b/c", "")));
        assert_eq!(match_prefix("a/bc", "a/b"), None);
        assert_eq!(match_prefix("a", ""), Some(("", "a")));
        assert_eq!(child_of("", "a/b"), Some("a"));
        assert_eq!(child_of("a", "a/b/c"), Some("a/b"));
        assert_eq!(child_of("a", "a"), None);
        assert_eq!(child_of("a", "ab/c"), None);
        assert!(is_within("a/b", "a") && is_within("a", "a"));
        assert!(!is_within("ab", "a") && !is_within("a", "a/b"));
        assert_eq!(compression(b"\x1f\x8b\x08"), Some("gzip"));
        assert_eq!(compression(b"\x02\x21\x4c\x18"), Some("lz4"));
        assert_eq!(compression(b"070701"), None);
    }

    #[test]
    fn index_order_keeps_subtrees_together() {
        // Byte order would put `a-z` between `a` and `a/b`; the index order does not.
        let mut sorted = ["a/b", "a-z", "a", "a/b/c", "b", "a/b-c", "a/b/c/d", "a0"];
        sorted.sort_unstable_by(|x, y| cmp_paths(x, y));
        assert_eq!(
            sorted,
            ["a", "a/b", "a/b/c", "a/b/c/d", "a/b-c", "a-z", "a0", "b"]
        );
        for x in sorted {
            for y in sorted {
                assert_eq!(cmp_paths(x, y), cmp_query(x, y), "{x} {y}");
                assert_eq!(cmp_paths(x, y), x.split('/').cmp(y.split('/')), "{x} {y}");
            }
        }
        assert_eq!(cmp_query("a/b", "//a/./b/"), Ordering::Equal);
    }

    #[test]
    fn concatenated_archives() {
        let mut first = Builder::new();
        first.dir("etc");
        first.file("etc/motd", b"vendor motd");
        first.file("vendor.txt", b"only in the first");
        let mut bytes = first.finish();
        // Pad to a word boundary (the trailer's name ends unaligned), then some more NULs.
        bytes.resize(bytes.len().next_multiple_of(4) + 8, 0);
        let second_at = bytes.len();
        let mut second = Builder::new();
        second.file("etc/motd", b"boot motd");
        second.file("init", b"#!");
        bytes.extend(second.finish_padded(512));
        let a = Archive::new(&bytes).unwrap();
        assert_eq!(a.archives(), 2);
        assert_eq!(a.len(), 5);
        assert_eq!(
            paths(a.entries()),
            ["etc", "etc/motd", "vendor.txt", "etc/motd", "init"]
        );
        let mut s = storage(&a);
        let ix = a.index(&mut s).unwrap();
        assert_eq!(ix.len(), 4);
        assert_eq!(find(&ix, "etc/motd").unwrap().data, b"boot motd");
        assert_eq!(find(&ix, "vendor.txt").unwrap().data, b"only in the first");
        assert_eq!(
            paths(ix.read_dir("").unwrap()),
            ["etc", "init", "vendor.txt"]
        );
        assert_eq!(paths(ix.read_dir("etc").unwrap()), ["etc/motd"]);

        // A corrupt second archive refuses the whole buffer, naming the archive and offsets.
        let mut bad = bytes.clone();
        bad[second_at + 1] = b'8';
        let err = Archive::open(&bad, Checksums::Verify).unwrap_err();
        assert_eq!(
            (err.archive, err.start, err.error),
            (2, second_at, CpioError::BadMagic { offset: second_at })
        );
        assert_eq!(
            err.to_string(),
            format!(
                "archive 2 of the concatenation (starting at offset {second_at:#x}): bad magic at offset {second_at:#x} (expected 070701) (none of it is used)"
            )
        );
        // A second archive cut short, in the data of its first entry.
        let cut = &bytes[..second_at + 125];
        let err = Archive::open(cut, Checksums::Verify).unwrap_err();
        assert_eq!((err.archive, err.start), (2, second_at));
        assert!(
            matches!(err.error, CpioError::DataOutOfBounds { .. }),
            "{err}"
        );
        // An error in the first archive displays as before.
        let err = Archive::open(&bad[second_at..], Checksums::Verify).unwrap_err();
        assert_eq!(err.to_string(), "bad magic at offset 0x0 (expected 070701)");
    }

    #[test]
    fn compressed_archives_are_named() {
        let mut bytes = Builder::new().finish();
        bytes.resize(512, 0);
        bytes.extend_from_slice(b"\x02\x21\x4c\x18 an lz4 legacy frame");
        let err = Archive::open(&bytes, Checksums::Verify).unwrap_err();
        assert_eq!(
            err.error,
            CpioError::Compressed {
                offset: 512,
                format: "lz4"
            }
        );
        assert_eq!(
            err.error.to_string(),
            "lz4-compressed data at offset 0x200: only uncompressed newc archives are supported"
        );
        assert_eq!(
            Archive::new(b"\x1f\x8b\x08\x00").unwrap_err(),
            CpioError::Compressed {
                offset: 0,
                format: "gzip"
            }
        );
    }

    #[test]
    fn index_needs_enough_storage() {
        let bytes = sample();
        let a = Archive::new(&bytes).unwrap();
        let mut small = vec![Slot::EMPTY; a.len() - 1];
        assert!(a.index(&mut small).is_none());
        let mut large = vec![Slot::EMPTY; a.len() + 3];
        let ix = a.index(&mut large).unwrap();
        assert_eq!(ix.len(), a.len());
        assert_eq!(
            paths(ix.entries()),
            ["empty", "etc", "etc/motd", "greeting", "hello.txt"]
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn component() -> impl Strategy<Value = String> {
            "[a-c]{1,2}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Any list of files round-trips, `find` sees the last copy of each path, and every
            /// path's parents can be listed and contain it.
            #[test]
            fn round_trip(files in proptest::collection::vec(
                (proptest::collection::vec(component(), 1..4), proptest::collection::vec(any::<u8>(), 0..9)),
                0..12,
            )) {
                let mut b = Builder::new();
                let files: Vec<(String, Vec<u8>)> =
                    files.into_iter().map(|(c, d)| (c.join("/"), d)).collect();
                for (path, data) in &files {
                    b.crc_file(path, data);
                }
                let bytes = b.finish_padded(512);
                let a = Archive::new(&bytes).unwrap();
                prop_assert_eq!(a.len(), files.len());
                for (e, (path, data)) in a.entries().zip(&files) {
                    prop_assert_eq!(e.path, path.as_str());
                    prop_assert_eq!(e.data, data.as_slice());
                }
                for (path, _) in &files {
                    let found = a.find(path).unwrap();
                    // A file whose path is also a prefix of another file stays a file.
                    let last = files.iter().rev().find(|(p, _)| p == path).unwrap();
                    prop_assert_eq!(found.data, last.1.as_slice());
                    let mut storage = storage(&a);
                    let ix = a.index(&mut storage).unwrap();
                    prop_assert_eq!(find(&ix, path), Some(found));
                    let parent = path.rfind('/').map_or("", |i| &path[..i]);
                    if let Ok(dir) = ix.read_dir(parent) {
                        let listed: Vec<_> = dir.map(|e| e.path).collect();
                        prop_assert!(listed.contains(&path.as_str()));
                        let mut unique = listed.clone();
                        unique.sort_unstable();
                        unique.dedup();
                        prop_assert_eq!(unique.len(), listed.len());
                    }
                }
            }
        }
    }
}
