//! The initramfs: the CPIO newc archive the bootloader loaded (found through `/chosen`
//! `linux,initrd-start`/`-end`, kept reserved by the memory map), read in place.

use crate::memory;
use core::fmt;
use levitate_mm::cpio::{Archive, CpioError};
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
    /// The bytes are not a valid newc archive.
    Corrupt(CpioError),
}

impl fmt::Display for InitramfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => write!(f, "no initramfs: the bootloader passed no initrd"),
            Self::NotMapped(r) => write!(f, "initramfs at {r:?} is not in mapped RAM"),
            Self::Corrupt(e) => write!(f, "corrupt initramfs: {e}"),
        }
    }
}

static ARCHIVE: Once<Result<Archive<'static>, InitramfsError>> = Once::new();

fn find() -> Result<Archive<'static>, InitramfsError> {
    let map = memory::map();
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
            memory::linear(initrd.base).cast_const(),
            initrd.size as usize,
        )
    };
    Archive::new(bytes).map_err(InitramfsError::Corrupt)
}

/// Finds and checks the archive; logs what it found. Called once at boot.
pub fn init() {
    let result = ARCHIVE.call_once(find);
    match result {
        Ok(a) => log::info!(
            "initramfs: {} entries, {} bytes of data",
            a.len(),
            a.total_bytes()
        ),
        Err(InitramfsError::Absent) => log::info!("initramfs: none"),
        Err(e) => log::error!("{e}"),
    }
}

/// The archive, or why there is none.
pub fn get() -> Result<&'static Archive<'static>, InitramfsError> {
    match ARCHIVE.get() {
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
        Ok(())
    }
);
