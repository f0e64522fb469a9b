//! Packs a folder (normally `initramfs/`) into a deterministic CPIO newc archive for `-initrd`.
//!
//! The output depends only on the folder's names, contents, file types and permission bits:
//! mtimes are 0, owners are root, inode numbers count up from 1 in archive order, and entries
//! come in a fixed order. So an unchanged folder gives byte-identical archives, and
//! [`write_archive`] can skip rewriting the file (which keeps its mtime, and anything keyed on
//! it, stable).

use crate::{bail, Result};
use levitate_mm::cpio::{S_IFDIR, S_IFLNK, S_IFREG, TRAILER};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Archives are padded with zeros to a multiple of this, like GNU cpio's default block size.
const BLOCK: usize = 512;

/// Packs the contents of `dir` (not `dir` itself: paths are relative, e.g. `etc/motd`).
///
/// Entries are in depth-first order with each directory's children sorted by name, so every
/// directory precedes its contents and the contents of a directory are contiguous. Regular
/// files, directories and symlinks (whose data is the target) are packed; any other file type is
/// an error naming the path.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>> {
    let meta = with_path(dir, fs::metadata(dir))?;
    if !meta.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let mut writer = Writer {
        out: Vec::new(),
        next_ino: 1,
    };
    pack_children(dir, "", &mut writer)?;
    // The trailer conventionally has inode 0 and a link count of 1 (as GNU cpio writes it).
    writer.header(0, 0, 1, TRAILER, &[])?;
    let len = writer.out.len().next_multiple_of(BLOCK);
    writer.out.resize(len, 0);
    Ok(writer.out)
}

/// One entry for [`pack_entries`]: archive path, mode (type and permission bits), data.
pub type RawEntry<'a> = (&'a str, u32, &'a [u8]);

/// Packs `entries` as written — in this order, duplicates and all — into one archive with a
/// trailer, padded to [`BLOCK`]: for test archives that no folder on disk gives (thousands of
/// files, archives to concatenate, names and contents chosen byte by byte). Concatenating
/// outputs gives a valid multi-archive initrd, since each ends on a block boundary.
pub fn pack_entries(entries: &[RawEntry<'_>]) -> Result<Vec<u8>> {
    let mut writer = Writer {
        out: Vec::new(),
        next_ino: 1,
    };
    for &(name, mode, data) in entries {
        if name == TRAILER {
            bail!("{name}: the name is reserved by cpio");
        }
        writer.entry(mode, 1, name, data)?;
    }
    writer.header(0, 0, 1, TRAILER, &[])?;
    let len = writer.out.len().next_multiple_of(BLOCK);
    writer.out.resize(len, 0);
    Ok(writer.out)
}

/// Packs `dir` into `out`, writing only when the bytes differ from what `out` holds. The file is
/// replaced by a rename, so a reader never sees a half-written archive.
pub fn write_archive(dir: &Path, out: &Path) -> Result<()> {
    let bytes = pack_dir(dir)?;
    match fs::read(out) {
        Ok(old) if old == bytes => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => bail!("{}: {e}", out.display()),
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        with_path(parent, fs::create_dir_all(parent))?;
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    with_path(Path::new(&tmp), fs::write(&tmp, &bytes))?;
    with_path(out, fs::rename(&tmp, out))?;
    Ok(())
}

/// Appends the entries below `dir`, whose archive path is `prefix` (empty for the root).
fn pack_children(dir: &Path, prefix: &str, writer: &mut Writer) -> Result<()> {
    let mut names = with_path(dir, fs::read_dir(dir))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    // Sorting by the raw name (bytes on Unix) rather than the locale keeps the order the same
    // on every machine.
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let Some(name) = name.to_str() else {
            bail!("{}: file name is not valid UTF-8", path.display());
        };
        if prefix.is_empty() && name == TRAILER {
            // The reader would take it for the end of the archive.
            bail!("{}: the name {TRAILER} is reserved by cpio", path.display());
        }
        let archive_path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        // `symlink_metadata` so that symlinks are packed as links, not followed.
        let meta = with_path(&path, fs::symlink_metadata(&path))?;
        let file_type = meta.file_type();
        let perm = permission_bits(&meta);
        if file_type.is_dir() {
            // A directory's link count is 2 (its entry in the parent and its own `.`); the
            // subdirectories' `..` are not counted, as with most cpio writers.
            writer.entry(S_IFDIR | perm, 2, &archive_path, &[])?;
            pack_children(&path, &archive_path, writer)?;
        } else if file_type.is_file() {
            let data = with_path(&path, fs::read(&path))?;
            writer.entry(S_IFREG | perm, 1, &archive_path, &data)?;
        } else if file_type.is_symlink() {
            let target = with_path(&path, fs::read_link(&path))?;
            writer.entry(
                S_IFLNK | perm,
                1,
                &archive_path,
                &link_bytes(&path, &target)?,
            )?;
        } else {
            bail!(
                "{}: cannot pack a {} into the initramfs (only regular files, directories and \
                 symlinks)",
                path.display(),
                describe(&file_type)
            );
        }
    }
    Ok(())
}

/// Accumulates the archive and numbers the inodes.
struct Writer {
    out: Vec<u8>,
    next_ino: u32,
}

impl Writer {
    /// Appends an entry with the next inode number.
    fn entry(&mut self, mode: u32, nlink: u32, name: &str, data: &[u8]) -> Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(ino, mode, nlink, name, data)
    }

    /// Appends a header, the NUL-terminated name and the data, each padded to 4 bytes.
    fn header(&mut self, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) -> Result<()> {
        let Ok(filesize) = u32::try_from(data.len()) else {
            bail!(
                "{name}: {} bytes is too large for a cpio archive",
                data.len()
            );
        };
        let namesize = name.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [ino, mode, 0, 0, nlink, 0, filesize, 0, 0, 0, 0, namesize, 0];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        let len = self.out.len().next_multiple_of(4);
        self.out.resize(len, 0);
    }
}

/// Adds the file name to an I/O error, which on its own does not say which file failed.
fn with_path<T>(path: &Path, result: io::Result<T>) -> Result<T> {
    result.map_err(|e| format!("{}: {e}", path.display()).into())
}

#[cfg(unix)]
fn permission_bits(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    // Permissions plus setuid, setgid and sticky; the type bits are set from the file type.
    meta.mode() & 0o7777
}

#[cfg(not(unix))]
fn permission_bits(meta: &fs::Metadata) -> u32 {
    // No Unix modes here: use what a typical checkout has.
    let ro = meta.permissions().readonly();
    match (meta.is_dir() || meta.file_type().is_symlink(), ro) {
        (true, _) => 0o755,
        (false, false) => 0o644,
        (false, true) => 0o444,
    }
}

#[cfg(unix)]
fn link_bytes(_path: &Path, target: &Path) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    Ok(target.as_os_str().as_bytes().to_vec())
}

#[cfg(not(unix))]
fn link_bytes(path: &Path, target: &Path) -> Result<Vec<u8>> {
    match target.to_str() {
        Some(t) => Ok(t.replace('\\', "/").into_bytes()),
        None => bail!("{}: symlink target is not valid UTF-8", path.display()),
    }
}

#[cfg(unix)]
fn describe(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn describe(_file_type: &fs::FileType) -> &'static str {
    "special file"
}

/// Packs the workspace's `initramfs/` folder into `target/initramfs.cpio` (rewritten only when
/// its contents change) and returns the archive's path.
pub fn default_archive() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let out = crate::target_dir().join("initramfs.cpio");
    write_archive(&root.join("initramfs"), &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use levitate_mm::cpio::{Archive, Checksums, Kind, Slot, HEADER_SIZE};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh folder under the system temp dir, removed on drop. Unique per process and test,
    /// since tests run in parallel and may be run by several users.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "levitate-xtask-initramfs-{}-{tag}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn file(&self, rel: &str, data: &[u8], mode: u32) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
            set_mode(&path, mode);
        }

        fn dir(&self, rel: &str, mode: u32) {
            let path = self.0.join(rel);
            fs::create_dir_all(&path).unwrap();
            set_mode(&path, mode);
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(not(unix))]
    fn set_mode(_path: &Path, _mode: u32) {}

    /// The header fields of every entry, trailer included, read independently of the reader.
    fn headers(bytes: &[u8]) -> Vec<[u32; 13]> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&bytes[at..at + 6], b"070701");
            let mut f = [0; 13];
            for (i, v) in f.iter_mut().enumerate() {
                let s = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                *v = u32::from_str_radix(s, 16).unwrap();
            }
            out.push(f);
            let name = &bytes[at + HEADER_SIZE..at + HEADER_SIZE + f[11] as usize - 1];
            if name == TRAILER.as_bytes() {
                return out;
            }
            let data = (at + HEADER_SIZE + f[11] as usize).next_multiple_of(4);
            at = (data + f[6] as usize).next_multiple_of(4);
        }
    }

    /// A folder with every supported kind of entry, created in the given order of operations.
    fn populate(t: &TempDir, reverse: bool) {
        let mut steps: [fn(&TempDir); 6] = [
            |t| t.file("etc/motd", b"Welcome to Levitate\n", 0o644),
            |t| t.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755),
            |t| t.file("empty", b"", 0o600),
            |t| t.file("a/b/c.txt", b"deep", 0o640),
            |t| t.file("a.txt", b"sorts after the a/ folder's contents", 0o644),
            |t| t.dir("var/empty", 0o700),
        ];
        if reverse {
            steps.reverse();
        }
        for step in steps {
            step(t);
        }
        t.dir("etc", 0o755);
        t.dir("a", 0o755);
        t.dir("a/b", 0o750);
        t.dir("bin", 0o755);
        t.dir("var", 0o755);
        #[cfg(unix)]
        std::os::unix::fs::symlink("etc/motd", t.0.join("motd-link")).unwrap();
    }

    #[test]
    fn round_trip() {
        let t = TempDir::new("round-trip");
        populate(&t, false);
        let bytes = pack_dir(&t.0).unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let archive = Archive::new(&bytes).unwrap();
        // Without Unix modes (and symlinks) only paths, kinds and data can be compared.
        let key = |mode: u32| if cfg!(unix) { mode } else { 0 };
        let entries: Vec<_> = archive
            .entries()
            .map(|e| (e.path, e.kind(), key(e.mode & 0o7777), e.data, e.mtime))
            .collect();
        let expected: Vec<_> = [
            ("a", Kind::Dir, 0o755, &b""[..]),
            ("a/b", Kind::Dir, 0o750, b""),
            ("a/b/c.txt", Kind::File, 0o640, b"deep"),
            (
                "a.txt",
                Kind::File,
                0o644,
                b"sorts after the a/ folder's contents",
            ),
            ("bin", Kind::Dir, 0o755, b""),
            ("bin/hello", Kind::File, 0o755, b"#!/bin/sh\necho hi\n"),
            ("empty", Kind::File, 0o600, b""),
            ("etc", Kind::Dir, 0o755, b""),
            ("etc/motd", Kind::File, 0o644, b"Welcome to Levitate\n"),
            ("motd-link", Kind::Symlink, 0o777, b"etc/motd"),
            ("var", Kind::Dir, 0o755, b""),
            ("var/empty", Kind::Dir, 0o700, b""),
        ]
        .into_iter()
        .filter(|e| cfg!(unix) || e.1 != Kind::Symlink)
        .map(|(path, kind, mode, data)| (path, kind, key(mode), data, 0))
        .collect();
        assert_eq!(entries, expected);
        assert_eq!(archive.len(), expected.len());
        let motd = archive.find("/etc/motd").unwrap();
        if cfg!(unix) {
            assert_eq!(motd.mode_string().as_str(), "-rw-r--r--");
        }
        let mut slots = vec![Slot::EMPTY; archive.len()];
        let index = archive.index(&mut slots).unwrap();
        let listed: Vec<_> = index.read_dir("a").unwrap().map(|e| e.path).collect();
        assert_eq!(listed, ["a/b"]);

        // Header fields the reader does not expose: inodes 1.., root owner, link counts.
        let headers = headers(&bytes);
        assert_eq!(headers.len(), expected.len() + 1);
        for (i, (h, e)) in headers.iter().zip(archive.entries()).enumerate() {
            assert_eq!(h[0], i as u32 + 1, "ino of {}", e.path);
            assert_eq!((h[2], h[3]), (0, 0), "uid/gid of {}", e.path);
            let nlink = if e.kind() == Kind::Dir { 2 } else { 1 };
            assert_eq!(h[4], nlink, "nlink of {}", e.path);
            assert_eq!(h[5], 0, "mtime of {}", e.path);
            assert_eq!(h[7..11], [0; 4], "device numbers of {}", e.path);
            assert_eq!(h[11] as usize, e.path.len() + 1, "namesize of {}", e.path);
            assert_eq!(h[12], 0, "check of {}", e.path);
        }
        assert_eq!(
            headers.last().unwrap(),
            &[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0]
        );
    }

    #[test]
    fn deterministic() {
        let t1 = TempDir::new("det1");
        populate(&t1, false);
        let first = pack_dir(&t1.0).unwrap();
        assert_eq!(pack_dir(&t1.0).unwrap(), first);
        // Same content, created in a different order and at a different time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t2 = TempDir::new("det2");
        populate(&t2, true);
        assert_eq!(pack_dir(&t2.0).unwrap(), first);
        // And any change shows.
        t2.file("etc/motd", b"changed", 0o644);
        assert_ne!(pack_dir(&t2.0).unwrap(), first);
    }

    #[test]
    fn empty_folder_is_just_a_trailer() {
        let t = TempDir::new("empty");
        let bytes = pack_dir(&t.0).unwrap();
        assert_eq!(bytes.len(), BLOCK);
        assert!(Archive::new(&bytes).unwrap().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused() {
        let t = TempDir::new("special");
        t.file("ok", b"", 0o644);
        let sock = t.0.join("sub/control.sock");
        fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = pack_dir(&t.0).unwrap_err().0;
        assert!(err.contains(&sock.display().to_string()), "{err}");
        assert!(err.contains("cannot pack a socket"), "{err}");
    }

    #[test]
    fn bad_folders_are_refused() {
        let t = TempDir::new("bad");
        let missing = t.0.join("missing");
        let err = pack_dir(&missing).unwrap_err().0;
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
        t.file("file", b"x", 0o644);
        let err = pack_dir(&t.0.join("file")).unwrap_err().0;
        assert!(err.ends_with("not a directory"), "{err}");
        t.file(TRAILER, b"", 0o644);
        let err = pack_dir(&t.0).unwrap_err().0;
        assert!(err.contains("is reserved"), "{err}");
    }

    #[test]
    fn write_archive_skips_unchanged_output() {
        let t = TempDir::new("write");
        t.file("src/hello.txt", b"hello", 0o644);
        let src = t.0.join("src");
        let out = t.0.join("out/sub/initramfs.cpio");
        write_archive(&src, &out).unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes, pack_dir(&src).unwrap());

        // Back-date the output; an unchanged folder must leave it alone.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(&out)
            .unwrap()
            .set_modified(old)
            .unwrap();
        write_archive(&src, &out).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().modified().unwrap(), old);

        t.file("src/hello.txt", b"hello again", 0o644);
        write_archive(&src, &out).unwrap();
        assert_ne!(fs::metadata(&out).unwrap().modified().unwrap(), old);
        let bytes = fs::read(&out).unwrap();
        let archive = Archive::new(&bytes).unwrap();
        assert_eq!(archive.find("hello.txt").unwrap().data, b"hello again");
        assert!(!t.0.join("out/sub/initramfs.cpio.tmp").exists());
    }

    #[test]
    fn packed_entries_concatenate() {
        let first = pack_entries(&[
            ("etc", S_IFDIR | 0o755, b""),
            ("etc/motd", S_IFREG | 0o644, b"first"),
        ])
        .unwrap();
        let second = pack_entries(&[("etc/motd", S_IFREG | 0o644, b"second")]).unwrap();
        assert_eq!(first.len() % BLOCK, 0);
        let both = [first.clone(), second].concat();
        let archive = Archive::open(&both, Checksums::Verify).unwrap();
        assert_eq!(archive.archives(), 2);
        assert_eq!(archive.find("etc/motd").unwrap().data, b"second");
        assert_eq!(headers(&first)[0][0], 1, "inodes count from 1");
        assert!(pack_entries(&[(TRAILER, S_IFREG, b"")]).is_err());
    }

    #[test]
    fn repository_initramfs_packs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../initramfs");
        let bytes = pack_dir(&dir).unwrap();
        let archive = Archive::new(&bytes).unwrap();
        assert_eq!(archive.find("README").unwrap().kind(), Kind::File);
    }
}
