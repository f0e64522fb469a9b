//! Concatenated CPIO archives and the index, against a model: random concatenations (with
//! NUL padding between archives, paths written twice, `./` and `/` prefixes, root entries) must
//! read like a map from path to its last entry, lookups and listings must match the model's,
//! and a corrupt later archive must be refused naming that archive. The index's complexity is
//! checked by counting its steps (never by timing): building is O(n log n) and a listing costs
//! at most a constant times the entries below the directory.

use levitate_mm::cpio::{
    Archive, ArchiveError, Checksums, CpioError, Entry, Kind, LookupError, Slot, S_IFDIR, S_IFLNK,
    S_IFREG, TRAILER,
};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A newc writer: one archive at a time, appended to `out`.
#[derive(Default)]
struct Writer {
    out: Vec<u8>,
    ino: u32,
}

impl Writer {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad(4);
        self.out.extend_from_slice(data);
        self.pad(4);
    }

    /// Ends an archive: the trailer, without padding after its name (as some writers leave
    /// it), so the NULs before the next archive also do the alignment.
    fn trailer(&mut self) {
        self.entry(TRAILER, 0, &[]);
        self.out.truncate(self.out.len() - 1); // 110 + 11 bytes: one byte of padding
    }

    fn pad(&mut self, to: usize) {
        self.out.resize(self.out.len().next_multiple_of(to), 0);
    }
}

/// One entry as a test writes it.
#[derive(Clone, Debug)]
struct Item {
    /// The name as stored, possibly with a `./` or `/` prefix, or `.` for the root.
    name: String,
    mode: u32,
    data: Vec<u8>,
}

impl Item {
    fn canonical(&self) -> &str {
        let name = self.name.trim_start_matches("./").trim_start_matches('/');
        if name == "." {
            ""
        } else {
            name
        }
    }
}

/// What the archive should read as: each path's last entry.
struct Model {
    paths: BTreeMap<String, (u32, Vec<u8>)>,
}

impl Model {
    fn new<'a>(items: impl IntoIterator<Item = &'a Item>) -> Self {
        let mut paths = BTreeMap::new();
        for item in items {
            if !item.canonical().is_empty() {
                paths.insert(item.canonical().to_owned(), (item.mode, item.data.clone()));
            }
        }
        Self { paths }
    }

    fn below<'m>(&'m self, dir: &'m str) -> impl Iterator<Item = &'m str> + 'm {
        self.paths.keys().map(String::as_str).filter(move |p| {
            dir.is_empty() || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
        })
    }

    /// (mode, data) of `path`: its last entry, or a synthesised directory.
    fn find(&self, path: &str) -> Option<(u32, Vec<u8>)> {
        if let Some(e) = self.paths.get(path) {
            return Some(e.clone());
        }
        let implied = path.is_empty() || self.below(path).next().is_some();
        implied.then(|| (S_IFDIR | 0o755, Vec::new()))
    }

    /// The children of `dir` in component order, or why it cannot be listed.
    fn read_dir(&self, dir: &str) -> Result<Vec<String>, LookupError> {
        let (mode, _) = self.find(dir).ok_or(LookupError::NotFound)?;
        if mode & 0o170_000 != S_IFDIR {
            return Err(LookupError::NotADirectory);
        }
        let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
        let mut children: Vec<String> = self
            .below(dir)
            .map(|p| {
                let rest = &p[skip..];
                p[..skip + rest.find('/').unwrap_or(rest.len())].to_owned()
            })
            .collect();
        children.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        children.dedup();
        Ok(children)
    }

    /// Every directory the model has, explicit or implied, the root included.
    fn dirs(&self) -> Vec<String> {
        let mut dirs = vec![String::new()];
        for p in self.paths.keys() {
            let mut at = 0;
            while let Some(i) = p[at..].find('/') {
                dirs.push(p[..at + i].to_owned());
                at += i + 1;
            }
            dirs.push(p.clone());
        }
        dirs.sort();
        dirs.dedup();
        dirs.retain(|d| matches!(self.find(d), Some((m, _)) if m & 0o170_000 == S_IFDIR));
        dirs
    }
}

fn entry_matches(e: &Entry<'_>, expected: &(u32, Vec<u8>)) -> bool {
    e.mode == expected.0 && e.data == expected.1.as_slice()
}

/// Writes `archives`, each followed by `padding[i]` NUL bytes after its (aligned) end.
/// Returns the buffer and where each archive starts.
fn concatenate(archives: &[Vec<Item>], padding: &[usize]) -> (Vec<u8>, Vec<usize>) {
    let mut w = Writer::default();
    let mut starts = Vec::new();
    for (i, items) in archives.iter().enumerate() {
        starts.push(w.out.len());
        for item in items {
            w.entry(&item.name, item.mode, &item.data);
        }
        w.trailer();
        w.pad(4);
        let extra = padding.get(i).copied().unwrap_or(0);
        w.out.resize(w.out.len() + 4 * extra, 0);
    }
    (w.out, starts)
}

fn item() -> impl Strategy<Value = Item> {
    // Few distinct names, so that paths collide within and across archives; `a-b` sorts between
    // `a` and `a/...` in byte order, which the index order must not be fooled by.
    let component = prop_oneof!["[ab]", Just("a-b".to_owned()), Just("c".to_owned())];
    let path = proptest::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let prefix = prop_oneof![4 => Just(""), 1 => Just("./"), 1 => Just("/")];
    let kind = prop_oneof![
        3 => Just(S_IFREG | 0o644),
        2 => Just(S_IFDIR | 0o755),
        1 => Just(S_IFLNK | 0o777),
    ];
    let data = proptest::collection::vec(any::<u8>(), 0..6);
    prop_oneof![
        20 => (prefix, path, kind, data).prop_map(|(pre, path, mode, data)| Item {
            name: format!("{pre}{path}"),
            data: if mode & 0o170_000 == S_IFDIR { Vec::new() } else { data },
            mode,
        }),
        1 => Just(Item { name: ".".into(), mode: S_IFDIR | 0o700, data: Vec::new() }),
    ]
}

fn concatenation() -> impl Strategy<Value = (Vec<Vec<Item>>, Vec<usize>)> {
    (
        proptest::collection::vec(proptest::collection::vec(item(), 0..10), 1..5),
        proptest::collection::vec(0usize..4, 5),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A concatenation reads as the model says: entries in order, each path's last entry,
    /// the same listings, from the index and from the linear scan alike.
    #[test]
    fn concatenation_matches_the_model((archives, padding) in concatenation()) {
        let (bytes, _) = concatenate(&archives, &padding);
        let all: Vec<&Item> = archives.iter().flatten().collect();
        let model = Model::new(all.iter().copied());
        let a = Archive::open(&bytes, Checksums::Verify).unwrap();
        prop_assert_eq!(a.archives(), archives.len());
        let written: Vec<&str> = all.iter().map(|i| i.canonical()).filter(|p| !p.is_empty()).collect();
        prop_assert_eq!(a.entries().map(|e| e.path).collect::<Vec<_>>(), written.clone());
        prop_assert_eq!(a.len(), written.len());

        let mut storage = vec![Slot::EMPTY; a.len()];
        let index = a.index(&mut storage).unwrap();
        prop_assert_eq!(index.len(), model.paths.len());
        let indexed: Vec<&str> = index.entries().map(|e| e.path).collect();
        let mut sorted: Vec<&str> = model.paths.keys().map(String::as_str).collect();
        sorted.sort_by(|x, y| x.split('/').cmp(y.split('/')));
        prop_assert_eq!(indexed, sorted);
        for (path, expected) in &model.paths {
            let found = index.find(path).unwrap();
            prop_assert!(entry_matches(&found, expected), "{path}: {found:?}");
            prop_assert_eq!(Some(found), a.find(path));
            prop_assert_eq!(index.find(&format!("/{path}/")), Some(found));
        }
        let root = all.iter().rev().find(|i| i.canonical().is_empty());
        prop_assert_eq!(index.find("/").unwrap().mode, root.map_or(S_IFDIR | 0o755, |r| r.mode));
        for dir in model.dirs() {
            let listed: Vec<Entry<'_>> = index.read_dir(&dir).unwrap().collect();
            let names: Vec<&str> = listed.iter().map(|e| e.path).collect();
            prop_assert_eq!(&names, &model.read_dir(&dir).unwrap(), "listing {:?}", dir);
            for e in &listed {
                prop_assert!(entry_matches(e, &model.find(e.path).unwrap()), "{e:?}");
            }
        }
        // Paths that are files, or missing, are not listed.
        for probe in ["a", "b", "c", "a/a", "a-b", "a/a-b/b", "zz", "a/zz"] {
            let got = index.read_dir(probe).map(|d| d.map(|e| e.path.to_owned()).collect::<Vec<_>>());
            prop_assert_eq!(got, model.read_dir(probe), "{}", probe);
            prop_assert_eq!(index.find(probe).map(|e| (e.mode, e.data.to_vec())), model.find(probe));
        }
    }

    /// A corrupt later archive refuses the buffer and names that archive and its offset.
    #[test]
    fn corrupt_later_archive_is_named((archives, padding) in concatenation(), pick in any::<prop::sample::Index>()) {
        prop_assume!(archives.len() >= 2);
        let (mut bytes, starts) = concatenate(&archives, &padding);
        let k = 1 + pick.index(archives.len() - 1);
        bytes[starts[k] + 3] = b'x';
        let err = Archive::open(&bytes, Checksums::Verify).unwrap_err();
        prop_assert_eq!(err, ArchiveError {
            archive: k + 1,
            start: starts[k],
            error: CpioError::BadMagic { offset: starts[k] },
        });
        let prefix = format!(
            "archive {} of the concatenation (starting at offset {:#x}): ", k + 1, starts[k]
        );
        prop_assert!(err.to_string().starts_with(&prefix), "{}", err);
        prop_assert_eq!(Archive::new(&bytes).unwrap_err(), err.error);
        // One NUL too few or too many before it: a misaligned archive.
        let mut shifted = concatenate(&archives, &padding).0;
        shifted.insert(starts[k], 0);
        let err = Archive::open(&shifted, Checksums::Verify).unwrap_err();
        prop_assert_eq!((err.archive, err.error), (k + 1, CpioError::Misaligned { offset: starts[k] + 1 }));
    }
}

/// Shapes of archive with `n` entries, each listed from `dir`; returns (bytes, dir, entries
/// below `dir`).
fn shapes(n: usize) -> Vec<(&'static str, Vec<u8>, &'static str, usize)> {
    let mut out = Vec::new();
    let mut flat = Writer::default();
    for i in 0..n {
        flat.entry(&format!("f{i:06}"), S_IFREG | 0o644, b"x");
    }
    flat.trailer();
    out.push(("flat root", flat.out, "", n));

    let mut sub = Writer::default();
    sub.entry("many", S_IFDIR | 0o755, &[]);
    for i in 0..n - 1 {
        sub.entry(&format!("many/f{i:06}"), S_IFREG | 0o644, b"x");
    }
    sub.trailer();
    out.push(("flat subdirectory", sub.out, "many", n - 1));

    // Shuffled (a multiplicative permutation), so the sort sees no runs.
    let mut shuffled = Writer::default();
    for i in 0..n {
        shuffled.entry(&format!("f{:06}", (i * 7919) % n), S_IFREG | 0o644, b"x");
    }
    shuffled.trailer();
    out.push(("shuffled root", shuffled.out, "", n));

    // Reverse order and every file twice, in two archives.
    let mut twice = Writer::default();
    for round in 0..2 {
        for i in (0..n / 2).rev() {
            twice.entry(&format!("d/f{i:06}"), S_IFREG | 0o644, &[round]);
        }
        twice.trailer();
        twice.pad(4);
    }
    out.push(("duplicates across archives", twice.out, "d", n / 2));

    // sqrt(n) directories of sqrt(n) files, only implied by the files' paths.
    let side = (n as f64).sqrt() as usize;
    let mut tree = Writer::default();
    for d in 0..side {
        for f in 0..side {
            tree.entry(&format!("d{d:04}/f{f:04}"), S_IFREG | 0o644, b"");
        }
    }
    tree.trailer();
    out.push((
        "implicit directories at the root",
        tree.out.clone(),
        "",
        side * side,
    ));
    out.push(("one implicit directory", tree.out, "d0007", side));

    // A deep chain: every directory has a file and a subdirectory.
    let mut deep = Writer::default();
    let mut path = String::from("x");
    for _ in 0..n / 2 {
        deep.entry(&format!("{path}/file"), S_IFREG | 0o644, b"");
        path.push_str("/x");
    }
    deep.trailer();
    out.push(("deep chain", deep.out, "x/x/x", n / 2 - 2));
    out
}

/// Building costs O(n log n) steps, and listing a directory at most a constant times the
/// entries below it (plus a logarithmic search for the directory), for every shape and size.
/// Counting steps keeps this independent of the machine's speed.
#[test]
fn index_and_listing_take_n_log_n_and_linear_steps() {
    let mut per_entry = BTreeMap::new();
    for n in [1000, 4000, 16000] {
        let log_n = (n as f64).log2().ceil() as u64;
        for (shape, bytes, dir, below) in shapes(n) {
            let a = Archive::new(&bytes).unwrap();
            let mut storage = vec![Slot::EMPTY; a.len()];
            let index = a.index(&mut storage).unwrap();
            let entries = a.len() as u64;
            assert!(
                index.build_steps() <= 2 * entries * log_n + entries,
                "{shape}, n = {n}: {} steps to build",
                index.build_steps()
            );
            let mut listing = index.read_dir(dir).unwrap();
            let count = listing.by_ref().count();
            assert!(
                count > 0 && count <= below,
                "{shape}, n = {n}: {count} children"
            );
            let steps = listing.steps();
            assert!(
                steps <= 4 * below as u64 + 4 * log_n + 8,
                "{shape}, n = {n}: {steps} steps to list {count} children of {below} entries"
            );
            per_entry
                .entry(shape)
                .or_insert_with(Vec::new)
                .push(steps as f64 / below as f64);
        }
    }
    // And the cost per entry does not grow with n (quadratic listing would grow 4x per step).
    for (shape, ratios) in per_entry {
        for pair in ratios.windows(2) {
            assert!(pair[1] <= pair[0] * 1.5 + 0.1, "{shape}: {ratios:?}");
        }
    }
}

#[test]
fn listing_order_is_by_component() {
    let mut w = Writer::default();
    for name in ["a-b", "a/x", "a", "a/b-c", "a/b/c", "a.txt"] {
        w.entry(name, S_IFREG | 0o644, b"");
    }
    w.trailer();
    let a = Archive::new(&w.out).unwrap();
    let mut storage = vec![Slot::EMPTY; a.len()];
    let index = a.index(&mut storage).unwrap();
    let root: Vec<_> = index.read_dir("").unwrap().map(|e| e.path).collect();
    assert_eq!(root, ["a", "a-b", "a.txt"]);
    // `a` is a file here, so its subtree is not listable but is found.
    assert_eq!(index.read_dir("a").err(), Some(LookupError::NotADirectory));
    assert_eq!(index.find("a/b").unwrap().kind(), Kind::Dir);
    let sub: Vec<_> = index.read_dir("a/b").unwrap().map(|e| e.path).collect();
    assert_eq!(sub, ["a/b/c"]);
    assert_eq!(
        "a/b".split('/').cmp("a-b".split('/')),
        Ordering::Less,
        "the order the index keeps"
    );
}
