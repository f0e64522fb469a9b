//! The initramfs: the CPIO newc archive (or concatenation of archives, as Android's bootloader
//! passes it) the bootloader loaded, found through `/chosen` `linux,initrd-start`/`-end`, kept
//! reserved by the memory map, and read in place. At boot it is validated once and indexed on
//! the kernel heap ([`levitate_mm::cpio::Index`]: one slot per entry, sorted by path), so that
//! lookups are binary searches and listings linear in what they list.
//!
//! An initrd that starts with the LZ4 legacy magic (as Android's LZ4-compressed ramdisks do,
//! and the bootloader's concatenation of vendor and boot ramdisks) is decompressed onto the
//! heap first, as Linux's `init/initramfs.c` does through `lib/decompress_unlz4.c`; any
//! other compressor is refused by the CPIO reader with its name.

use crate::mm::physmem;
use alloc::vec::Vec;
use core::fmt;
use levitate_mm::cpio::{Archive, ArchiveError, Checksums, Index, Slot};
use levitate_mm::lz4::{self, Lz4Error};
use levitate_mm::memmap::Source;
use levitate_mm::region::Region;
use spin::Once;

/// Why there is no archive to read.
#[derive(Clone, Copy, Debug)]
pub enum InitramfsError {
    /// The bootloader passed no initrd.
    Absent,
    /// The initrd lies (partly) in a no-map region or outside RAM, so it is not mapped.
    NotMapped(Region),
    /// The bytes are not a valid newc archive (or one of the concatenated ones is not).
    Corrupt(ArchiveError),
    /// The initrd is an LZ4 legacy stream that does not decode.
    Lz4(Lz4Error),
    /// The heap could not hold the decompressed archive.
    NoMemoryToDecompress {
        /// Bytes the archive decompresses to.
        bytes: usize,
    },
    /// The heap could not hold the index.
    NoMemory {
        /// Entries to index.
        entries: usize,
        /// Bytes the index needs.
        bytes: usize,
    },
}

impl fmt::Display for InitramfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => write!(f, "no initramfs: the bootloader passed no initrd"),
            Self::NotMapped(r) => write!(f, "initramfs at {r:?} is not in mapped RAM"),
            // A corrupt later archive fails the whole initrd closed (the error says so).
            Self::Corrupt(e) => write!(f, "corrupt initramfs: {e}"),
            Self::Lz4(e) => write!(f, "corrupt initramfs: {e}; the initrd is not used"),
            Self::NoMemoryToDecompress { bytes } => write!(
                f,
                "initramfs: no memory to decompress the LZ4 initrd ({bytes} bytes)"
            ),
            Self::NoMemory { entries, bytes } => write!(
                f,
                "initramfs: no memory for the index of {entries} entries ({bytes} bytes)"
            ),
        }
    }
}

/// The indexed archive, set once at boot (`Once`: written by the boot CPU before the shell or
/// any other CPU reads it, read-only afterwards, so no lock is needed to read it).
static INITRAMFS: Once<Result<Index<'static, 'static>, InitramfsError>> = Once::new();

fn find() -> Result<Index<'static, 'static>, InitramfsError> {
    let map = physmem::map();
    let initrd = map
        .reserved()
        .iter()
        .find(|r| r.source == Source::Initrd)
        .map(|r| r.region)
        .ok_or(InitramfsError::Absent)?;
    // The reservation is the initrd as described, clipped to RAM; it must lie wholly in RAM
    // that the linear map covers (RAM outside no-map regions).
    let in_ram = map
        .memory()
        .iter()
        .any(|m| m.base <= initrd.base && initrd.end() <= m.end());
    let in_no_map = map
        .reserved()
        .iter()
        .any(|r| r.no_map && r.region.overlaps(&initrd));
    if !in_ram || in_no_map || initrd.is_empty() {
        return Err(InitramfsError::NotMapped(initrd));
    }
    // SAFETY: the initrd is reserved (never handed out), inside mapped RAM (checked above), and
    // nothing writes to it; the slice lives as long as the kernel.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            physmem::linear(initrd.base).cast_const(),
            initrd.size as usize,
        )
    };
    let bytes = decompress(bytes)?;
    let archive = Archive::open(bytes, Checksums::Verify).map_err(InitramfsError::Corrupt)?;
    // The index lives as long as the kernel, like the archive it points into.
    let entries = archive.len();
    let no_memory = InitramfsError::NoMemory {
        entries,
        bytes: entries.saturating_mul(core::mem::size_of::<Slot<'_>>()),
    };
    let mut slots = Vec::new();
    slots.try_reserve_exact(entries).map_err(|_| no_memory)?;
    slots.resize(entries, Slot::EMPTY);
    let slots: &'static mut [Slot<'static>] = slots.leak();
    // Cannot fail: the storage has `len()` slots.
    archive.index(slots).ok_or(no_memory)
}

/// The archive itself: `initrd` when it is not LZ4-compressed, else its decompression, on the
/// heap for the rest of the kernel's life (the index points into it).
fn decompress(initrd: &'static [u8]) -> Result<&'static [u8], InitramfsError> {
    if !lz4::is_legacy(initrd) {
        return Ok(initrd);
    }
    // The first pass checks the whole stream, so the second cannot fail on the input.
    let len = lz4::legacy_decoded_len(initrd).map_err(InitramfsError::Lz4)?;
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| InitramfsError::NoMemoryToDecompress { bytes: len })?;
    out.resize(len, 0u8);
    lz4::decode_legacy(initrd, &mut out).map_err(InitramfsError::Lz4)?;
    log::info!(
        "initramfs: LZ4 legacy, {} bytes decompressed to {len}",
        initrd.len()
    );
    Ok(out.leak())
}

/// Finds and checks the archive; logs what it found. Called once at boot.
pub fn init() {
    let result = INITRAMFS.call_once(find);
    match result {
        Ok(index) => {
            let a = index.archive();
            log::info!(
                "initramfs: {} entries, {} bytes of data",
                a.len(),
                a.total_bytes()
            );
            if a.archives() > 1 {
                log::info!(
                    "initramfs: {} concatenated archives, {} distinct paths (later entries override earlier ones)",
                    a.archives(),
                    index.len()
                );
            }
            log::info!(
                "initramfs: index of {} paths, {} bytes on the heap",
                index.len(),
                a.len() * core::mem::size_of::<Slot<'_>>()
            );
        }
        Err(InitramfsError::Absent) => log::info!("initramfs: none"),
        Err(e) => log::error!("{e}"),
    }
}

/// The indexed archive, or why there is none.
pub fn get() -> Result<&'static Index<'static, 'static>, InitramfsError> {
    match INITRAMFS.get() {
        Some(Ok(a)) => Ok(a),
        Some(Err(e)) => Err(*e),
        None => Err(InitramfsError::Absent),
    }
}

levitate_hal::ktest!(
    fn initramfs_holds_the_sample_files() -> KtestResult {
        let archive = get();
        levitate_hal::kassert!(archive.is_ok(), "no initramfs in the test boot");
        let archive = archive.unwrap();
        let hello = archive.find("hello.txt");
        levitate_hal::kassert!(hello.is_some(), "hello.txt missing");
        levitate_hal::kassert!(hello.unwrap().data.starts_with(b"Hello"));
        levitate_hal::kassert!(archive.read_dir("/etc").is_ok());
        levitate_hal::kassert!(archive.find("/no/such/file").is_none());
        // The index agrees with the linear scan of the archive for every entry.
        for e in archive.archive().entries() {
            levitate_hal::kassert_eq!(archive.find(e.path), archive.archive().find(e.path));
        }
        Ok(())
    }
);
