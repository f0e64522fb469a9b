//! Reader for CPIO "newc" archives (the initramfs format), without allocation.
//!
//! Format (Linux `Documentation/driver-api/early-userspace/buffer-format.rst`): every entry is a
//! 110-byte ASCII header — the magic `070701` (or `070702`, which adds a checksum of the file
//! data) and 13 fields of 8 hex digits — then the NUL-terminated name, padded so that header and
//! name together are a multiple of 4 bytes, then the file data, padded to a multiple of 4. The
//! last entry is named `TRAILER!!!`; writers usually pad the archive with zeros after it.
//!
//! [`Archive::new`] validates the whole archive once, so that the accessors afterwards need no
//! error paths: the kernel checks the initrd at boot and then walks it freely. The accessors
//! re-parse headers on the fly instead of keeping an index, because there is no heap to keep one
//! in; lookups are linear (and [`Archive::read_dir`] quadratic) in the number of entries, which
//! is fine for an initramfs of a few hundred files.
//!
//! Paths are stored normalised: a leading `/` or `./` and a trailing `/` are dropped, and `.`
//! (what `find . | cpio -o` writes for the root) becomes the empty path, the root directory.
//! Names with an empty, `.` or `..` component in the middle are rejected, so that every path
//! handed out is canonical and nothing can escape the root when the archive is unpacked.
//! Directories that are only implied by deeper paths (`a/b/c` without `a/b`) can still be found
//! and listed: they appear as synthesised entries with mode `drwxr-xr-x`.
//!
//! Hard links (several entries sharing an inode number) are not merged: each entry is reported
//! as written. When a path occurs twice, the later entry wins, as when Linux unpacks it.

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
    /// A non-zero byte after the `TRAILER!!!` entry (only zero padding may follow it).
    TrailingData {
        /// The first non-zero byte.
        offset: usize,
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
            | CpioError::TrailingData { offset } => offset,
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
            CpioError::TrailingData { offset } => write!(
                f,
                "unexpected data at offset {offset:#x} after the {TRAILER} entry"
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

/// Why [`Archive::read_dir`] could not list a path.
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

    fn implicit_dir(path: &'a str) -> Self {
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

/// A validated newc archive. See the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    data: &'a [u8],
    len: usize,
    total_bytes: usize,
}

impl<'a> Archive<'a> {
    /// Validates the whole archive — every header, name, data range, the `070702` checksums,
    /// the trailer, and that only zeros follow it — so that no accessor can fail later.
    pub fn new(data: &'a [u8]) -> Result<Self, CpioError> {
        Self::validate(data, true)
    }

    /// Like [`Archive::new`] but does not verify the data checksums of `070702` entries (for
    /// writers that leave the `check` field zero, or to save the pass over the data).
    pub fn new_ignoring_checksums(data: &'a [u8]) -> Result<Self, CpioError> {
        Self::validate(data, false)
    }

    fn validate(data: &'a [u8], verify: bool) -> Result<Self, CpioError> {
        let mut offset = 0;
        let mut len = 0;
        let mut total_bytes = 0usize;
        loop {
            let rec = parse(data, offset, verify)?;
            if rec.is_trailer() {
                // Zero padding may follow; anything else (e.g. a second, concatenated archive)
                // would be silently ignored by the accessors, so it is refused.
                let rest = data.get(rec.name_end..).unwrap_or(&[]);
                if let Some(i) = rest.iter().position(|&b| b != 0) {
                    return Err(CpioError::TrailingData {
                        offset: rec.name_end + i,
                    });
                }
                break;
            }
            let path = normalise(rec.name).ok_or(CpioError::BadPath {
                offset,
                name: EntryName::new(rec.name),
            })?;
            if !path.is_empty() {
                len += 1;
                total_bytes = total_bytes.saturating_add(rec.data.len());
            }
            offset = rec.next;
        }
        Ok(Self {
            data,
            len,
            total_bytes,
        })
    }

    /// All entries in archive order, without the trailer and without root entries (`.`), which
    /// [`Archive::find`] still returns for `""`.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            skip_root: true,
            ..self.raw()
        }
    }

    /// Every entry including root entries.
    fn raw(&self) -> Entries<'a> {
        Entries {
            raw: RawIter {
                data: self.data,
                offset: 0,
                done: false,
            },
            skip_root: false,
        }
    }

    /// The entry at `path`. Leading `/` and `./`, repeated and trailing `/` and `.` components
    /// are ignored; `""` and `"/"` name the root. If the archive has the path twice the later
    /// entry is returned. A directory that exists only as a prefix of other paths, and the root
    /// when the archive has no `.` entry, are returned as a synthesised `drwxr-xr-x` entry.
    pub fn find(&self, path: &str) -> Option<Entry<'a>> {
        let mut explicit = None;
        let mut implicit = if components(path).next().is_none() {
            Some("")
        } else {
            None
        };
        for entry in self.raw() {
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

    /// The direct children of the directory at `path` (normalised as in [`Archive::find`]), each
    /// once, in order of first appearance, including implicit subdirectories.
    pub fn read_dir(&self, path: &str) -> Result<ReadDir<'a, '_>, LookupError> {
        let dir = self.find(path).ok_or(LookupError::NotFound)?;
        if dir.kind() != Kind::Dir {
            return Err(LookupError::NotADirectory);
        }
        Ok(ReadDir {
            archive: self,
            dir: dir.path,
            iter: self.raw(),
            seen: 0,
        })
    }

    /// Number of entries [`Archive::entries`] yields.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the archive has no entries besides the trailer (and root entries).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sum of the data lengths of all entries (file contents and symlink targets).
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
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
            let entry = self.raw.next()?;
            if !(self.skip_root && entry.path.is_empty()) {
                return Some(entry);
            }
        }
    }
}

/// Walks the headers of a validated archive. It stops at the trailer or at the first error; the
/// latter cannot happen after validation, but stopping keeps this path free of panics anyway.
#[derive(Clone, Debug)]
struct RawIter<'a> {
    data: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Iterator for RawIter<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if self.done {
            return None;
        }
        let rec = match parse(self.data, self.offset, false) {
            Ok(rec) if !rec.is_trailer() => rec,
            _ => {
                self.done = true;
                return None;
            }
        };
        let Some(path) = normalise(rec.name) else {
            self.done = true;
            return None;
        };
        self.offset = rec.next;
        Some(Entry {
            path,
            mode: rec.mode,
            data: rec.data,
            mtime: rec.mtime,
        })
    }
}

/// Iterator over the children of a directory, from [`Archive::read_dir`].
#[derive(Clone, Debug)]
pub struct ReadDir<'a, 'r> {
    archive: &'r Archive<'a>,
    dir: &'a str,
    iter: Entries<'a>,
    /// Entries consumed from `iter` before the current one.
    seen: usize,
}

impl<'a> Iterator for ReadDir<'a, '_> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        for entry in self.iter.by_ref() {
            let index = self.seen;
            self.seen += 1;
            let Some(child) = child_of(self.dir, entry.path) else {
                continue;
            };
            // Report each child once, where it first appears (several entries below an
            // implicit directory, or a path stored twice, give the same child).
            let dir = self.dir;
            let earlier = self.archive.raw().take(index);
            if earlier
                .map(|e| child_of(dir, e.path))
                .any(|c| c == Some(child))
            {
                continue;
            }
            // `find` picks the last explicit entry or synthesises the directory.
            return self.archive.find(child);
        }
        None
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

/// The direct child of the canonical directory `dir` that the canonical `path` lies in (as a
/// prefix of `path`), or `None` if `path` is not strictly below `dir`.
fn child_of<'p>(dir: &str, path: &'p str) -> Option<&'p str> {
    let (_, rest) = match_prefix(path, dir)?;
    if rest.is_empty() {
        return None;
    }
    let component = rest.find('/').unwrap_or(rest.len());
    path.get(..path.len() - rest.len() + component)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::string::{String, ToString};
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
        assert_eq!(a.read_dir("").unwrap().count(), 0);
        assert_eq!(a.find("/").unwrap().kind(), Kind::Dir);
        assert_eq!(a.read_dir("x").err(), Some(LookupError::NotFound));
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
        assert_eq!(paths(a.read_dir("/").unwrap()), ["etc", "usr"]);
        assert_eq!(paths(a.read_dir("./etc/").unwrap()), ["etc/motd"]);
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
        let dir = a.find("a/b").unwrap();
        assert_eq!(dir.kind(), Kind::Dir);
        assert_eq!(dir.path, "a/b");
        assert_eq!(dir.mode_string().as_str(), "drwxr-xr-x");
        assert_eq!(dir.data, b"");
        assert_eq!(a.find("/").unwrap().mode, S_IFDIR | 0o755);
        assert_eq!(paths(a.read_dir("").unwrap()), ["a", "top"]);
        assert_eq!(paths(a.read_dir("a").unwrap()), ["a/b", "a/e"]);
        assert_eq!(
            paths(a.read_dir("a/b").unwrap()),
            ["a/b/c", "a/b/d", "a/b/f"]
        );
        assert_eq!(paths(a.read_dir("a/b/f").unwrap()), ["a/b/f/g"]);
        assert_eq!(a.read_dir("a/b/c").err(), Some(LookupError::NotADirectory));
        assert_eq!(a.read_dir("a/x").err(), Some(LookupError::NotFound));
        assert_eq!(a.read_dir("a/b/c/d").err(), Some(LookupError::NotFound));
        assert_eq!(a.find("a/b/c/d"), None);
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
        let children: Vec<_> = a.read_dir("d").unwrap().collect();
        assert_eq!(paths(children.iter().copied()), ["d/x", "d/y"]);
        // The explicit directory entry is preferred over the synthesised one.
        assert_eq!(children[0].mode, S_IFDIR | 0o755);
        assert_eq!(children[0].mtime, 1_700_000_000);
        assert_eq!(children[1].data, b"new");
        assert_eq!(a.find("d/y").unwrap().data, b"new");
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
        assert_eq!(a.find("x").unwrap().kind(), Kind::File);
        assert_eq!(a.read_dir("x").err(), Some(LookupError::NotADirectory));
        assert_eq!(a.find("x/y").unwrap().data, b"below a file");
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
        long[4000] = 1;
        assert_eq!(
            Archive::new(&long).unwrap_err(),
            CpioError::TrailingData { offset: 4000 }
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
                    let parent = path.rfind('/').map_or("", |i| &path[..i]);
                    if let Ok(dir) = a.read_dir(parent) {
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
