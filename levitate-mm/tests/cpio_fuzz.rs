//! Fuzz-style tests for `levitate_mm::cpio`: every truncation of a sample archive and thousands
//! of deterministic random mutations must be rejected or give an archive whose accessors all
//! work. The accessors run under `catch_unwind` so that a panic is reported together with the
//! mutation that caused it.

use levitate_mm::cpio::{
    Archive, Index, Kind, LookupError, Slot, HEADER_SIZE, S_IFDIR, S_IFLNK, S_IFREG,
};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A minimal newc writer; it records where each header starts so that mutations can aim at
/// header fields.
#[derive(Default)]
struct Builder {
    out: Vec<u8>,
    headers: Vec<usize>,
}

impl Builder {
    fn entry(&mut self, magic: &str, name: &str, mode: u32, data: &[u8]) {
        self.headers.push(self.out.len());
        let check = if magic == "070702" {
            data.iter().map(|&b| u32::from(b)).sum()
        } else {
            0
        };
        let fields = [
            self.headers.len() as u32,
            mode,
            0,
            0,
            1,
            0x6500_0000,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            check,
        ];
        self.out.extend_from_slice(magic.as_bytes());
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad(4);
        self.out.extend_from_slice(data);
        self.pad(4);
    }

    fn pad(&mut self, to: usize) {
        self.out.resize(self.out.len().next_multiple_of(to), 0);
    }
}

/// The archive the tests mutate, with the offsets of its headers and where the trailer's name
/// ends (the shortest valid prefix).
struct Sample {
    bytes: Vec<u8>,
    headers: Vec<usize>,
    min_len: usize,
}

fn sample() -> Sample {
    let mut b = Builder::default();
    b.entry("070701", ".", S_IFDIR | 0o755, b"");
    b.entry("070701", "etc", S_IFDIR | 0o755, b"");
    b.entry(
        "070701",
        "etc/motd",
        S_IFREG | 0o644,
        b"Welcome to Levitate\n",
    );
    b.entry("070701", "./bin/sh", S_IFREG | 0o755, b"\x7fELF not really");
    b.entry("070701", "sbin/init", S_IFLNK | 0o777, b"/bin/sh");
    b.entry("070702", "usr/share/doc/a.txt", S_IFREG | 0o600, b"checked");
    b.entry("070701", "usr/share/doc/empty", S_IFREG | 0o644, b"");
    b.entry("070701", "/dev/console", 0o020_600, b"");
    b.entry("070701", "etc/motd", S_IFREG | 0o644, b"second copy");
    b.entry("070701", "usr/", S_IFDIR | 0o755, b"");
    let trailer = b.out.len();
    b.entry("070701", "TRAILER!!!", 0, b"");
    b.pad(512);
    Sample {
        bytes: b.out,
        headers: b.headers,
        min_len: trailer + HEADER_SIZE + "TRAILER!!!".len() + 1,
    }
}

/// Calls every accessor of an accepted archive and of its index and checks that the results
/// are consistent: every entry can be found (the same by the index and by the linear scan),
/// every directory listed, and all data lies inside `bytes`.
fn exercise(bytes: &[u8], archive: &Archive<'_>) {
    let mut storage = vec![Slot::EMPTY; archive.len()];
    let index = archive.index(&mut storage).expect("len() slots suffice");
    exercise_index(bytes, archive, &index);
}

fn exercise_index(bytes: &[u8], archive: &Archive<'_>, index: &Index<'_, '_>) {
    let range = bytes.as_ptr_range();
    let inside = |d: &[u8]| {
        d.is_empty() || (range.contains(&d.as_ptr()) && d.as_ptr_range().end <= range.end)
    };
    let mut count = 0;
    let mut total = 0;
    let mut scratch = String::new();
    for e in archive.entries() {
        count += 1;
        total += e.data.len();
        assert!(inside(e.data));
        assert!(!e.path.is_empty() && !e.path.starts_with('/') && !e.path.ends_with('/'));
        assert!(e.path.ends_with(e.name()));
        let found = index.find(e.path).expect("an entry's own path is found");
        assert_eq!(found.path, e.path);
        assert_eq!(Some(found), archive.find(e.path));
        assert!(inside(found.data));
        scratch.clear();
        write!(
            scratch,
            "{} {:?} {:?}",
            e.mode_string(),
            e.kind(),
            e.link_target()
        )
        .unwrap();
        // Every ancestor is a directory unless a file entry shadows it, and lists its child.
        let mut parent = e.path;
        while let Some(slash) = parent.rfind('/') {
            let child = parent;
            parent = &parent[..slash];
            match index.read_dir(parent) {
                Ok(list) => {
                    let mut hits = 0;
                    for c in list {
                        assert!(inside(c.data));
                        hits += usize::from(c.path == child);
                    }
                    assert_eq!(hits, 1, "{child} listed once in {parent}");
                }
                Err(LookupError::NotADirectory) => {
                    assert_ne!(index.find(parent).unwrap().kind(), Kind::Dir)
                }
                Err(LookupError::NotFound) => panic!("parent {parent} of {child} not found"),
            }
        }
        if e.kind() == Kind::Dir {
            for c in index.read_dir(e.path).unwrap() {
                assert!(inside(c.data));
            }
        }
    }
    assert_eq!(count, archive.len());
    assert_eq!(total, archive.total_bytes());
    assert!(index.len() <= count);
    if let Ok(root) = index.read_dir("/") {
        assert_eq!(root.filter(|c| c.path.contains('/')).count(), 0);
    }
}

/// Validates `bytes` and exercises the result; a panic anywhere fails the test with `what`.
/// Returns whether the archive was accepted.
fn check(bytes: &[u8], what: &dyn Fn() -> String) -> bool {
    let result = catch_unwind(AssertUnwindSafe(|| match Archive::new(bytes) {
        Ok(archive) => {
            exercise(bytes, &archive);
            true
        }
        Err(e) => {
            // The message must render, and the offset must point into (or just past) the input.
            assert!(!e.to_string().is_empty());
            assert!(e.offset() <= bytes.len(), "{e}");
            false
        }
    }));
    match result {
        Ok(accepted) => accepted,
        Err(_) => panic!("cpio panicked on {}", what()),
    }
}

/// xorshift64*: deterministic, so a failure names a reproducible mutation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn sample_is_valid() {
    let s = sample();
    let a = Archive::new(&s.bytes).unwrap();
    assert!(check(&s.bytes, &|| "the unmodified sample".into()));
    assert_eq!(a.len(), 9);
    assert_eq!(a.find("etc/motd").unwrap().data, b"second copy");
    assert_eq!(a.find("/usr/share").unwrap().kind(), Kind::Dir);
    let mut storage = vec![Slot::EMPTY; a.len()];
    let index = a.index(&mut storage).unwrap();
    assert_eq!(index.find("etc/motd").unwrap().data, b"second copy");
    let root: Vec<_> = index.read_dir("").unwrap().map(|e| e.path).collect();
    assert_eq!(root, ["bin", "dev", "etc", "sbin", "usr"]);
}

#[test]
fn every_truncation() {
    let s = sample();
    for len in 0..=s.bytes.len() {
        let accepted = check(&s.bytes[..len], &|| {
            format!("the sample cut to {len} bytes")
        });
        assert_eq!(accepted, len >= s.min_len, "cut to {len} bytes");
    }
}

#[test]
fn random_byte_mutations() {
    let s = sample();
    let mut rng = Rng(0x5eed_c910);
    let mut accepted = 0;
    const ROUNDS: usize = 6000;
    for round in 0..ROUNDS {
        let mut bytes = s.bytes.clone();
        let mut log = String::new();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len());
            let old = bytes[at];
            let new = match rng.below(4) {
                0 => old ^ (1 << rng.below(8)),
                1 => b"0123456789abcdefABCDEF/.\0"[rng.below(25)],
                2 => rng.next() as u8,
                _ => 0,
            };
            bytes[at] = new;
            write!(log, " [{at:#x}] {old:#04x}->{new:#04x}").unwrap();
        }
        if check(&bytes, &|| format!("round {round}:{log}")) {
            accepted += 1;
        }
    }
    // Mutations in names, data and padding keep the archive valid often enough that the
    // accessors really get exercised on odd input.
    assert!(accepted > ROUNDS / 10, "only {accepted} accepted");
}

#[test]
fn random_header_field_mutations() {
    let s = sample();
    let mut rng = Rng(0x00f1_e1d5);
    let mut accepted = 0;
    const ROUNDS: usize = 6000;
    for round in 0..ROUNDS {
        let mut bytes = s.bytes.clone();
        let header = s.headers[rng.below(s.headers.len())];
        let field = rng.below(13);
        // Small values and values near the current one hit the interesting bounds checks.
        let at = header + 6 + 8 * field;
        let current =
            u32::from_str_radix(std::str::from_utf8(&bytes[at..at + 8]).unwrap(), 16).unwrap();
        let value = match rng.below(4) {
            0 => rng.below(64) as u32,
            1 => current.wrapping_add(rng.below(9) as u32).wrapping_sub(4),
            2 => rng.next() as u32,
            _ => u32::MAX - rng.below(4) as u32,
        };
        bytes[at..at + 8].copy_from_slice(format!("{value:08x}").as_bytes());
        if check(&bytes, &|| {
            format!("round {round}: header {header:#x} field {field} = {value:#x}")
        }) {
            accepted += 1;
        }
    }
    assert!(accepted > ROUNDS / 10, "only {accepted} accepted");
}

#[test]
fn splices_and_random_buffers() {
    let s = sample();
    let mut rng = Rng(0xabad_1dea);
    for round in 0..2000 {
        let mut bytes = s.bytes.clone();
        let what = match rng.below(3) {
            0 => {
                // Delete a run, shifting everything after it.
                let at = rng.below(bytes.len());
                let n = 1 + rng.below(8.min(bytes.len() - at));
                bytes.drain(at..at + n);
                format!("delete {n} at {at:#x}")
            }
            1 => {
                // Duplicate a run, e.g. part of a header.
                let at = rng.below(bytes.len());
                let n = 1 + rng.below(16.min(bytes.len() - at));
                let run: Vec<u8> = bytes[at..at + n].to_vec();
                let to = rng.below(bytes.len());
                bytes.splice(to..to, run);
                format!("copy {n} from {at:#x} to {to:#x}")
            }
            _ => {
                // A header-shaped random buffer.
                let len = rng.below(400);
                bytes = (0..len)
                    .map(|i| match i {
                        0..=5 => b"070701"[i],
                        _ => b"0123456789abcdef\0/"[rng.below(18)],
                    })
                    .collect();
                format!("random buffer of {len} bytes")
            }
        };
        check(&bytes, &|| format!("round {round}: {what}"));
    }
}
