//! ELF to flat arm64 Image, the kernel symbol table written into the image's `.ksyms`
//! section (format: levitate-hal/src/ksyms.rs), and the names of the in-kernel tests the
//! `.ktest` section registers (so `cargo xtask test` knows what a ktest boot must report).

use crate::{bail, Result};
use object::elf::{FileHeader64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol, SymbolKind};

/// Link address of the image (linker.ld KIMAGE_VBASE).
pub const KIMAGE_VBASE: u64 = 0xffff_ffff_8000_0000;
/// Offset of the arm64 Image magic ("ARM\x64") in the header.
const MAGIC_OFFSET: usize = 0x38;

/// A finished Image.
pub struct Image {
    /// The file contents.
    pub bytes: Vec<u8>,
    /// How many symbols the table holds.
    pub symbols: usize,
}

/// Lays the ELF's loadable segments out flat from KIMAGE_VBASE and patches in the symbols.
pub fn make_image(elf: &[u8]) -> Result<Image> {
    let header = FileHeader64::<Endianness>::parse(elf).map_err(|e| format!("kernel ELF: {e}"))?;
    let endian = header.endian()?;
    let mut bytes = Vec::new();
    for ph in header.program_headers(endian, elf)? {
        if ph.p_type(endian) != PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let vaddr = ph.p_vaddr(endian);
        if vaddr < KIMAGE_VBASE {
            bail!("segment at {vaddr:#x} lies below the image base {KIMAGE_VBASE:#x}");
        }
        let at = (vaddr - KIMAGE_VBASE) as usize;
        let data = ph
            .data(endian, elf)
            .map_err(|_| "segment data out of the file".to_string())?;
        if bytes.len() < at + data.len() {
            bytes.resize(at + data.len(), 0);
        }
        bytes[at..at + data.len()].copy_from_slice(data);
    }
    if bytes.get(MAGIC_OFFSET..MAGIC_OFFSET + 4) != Some(b"ARM\x64") {
        bail!("the linked kernel does not start with an arm64 Image header");
    }

    let file = object::File::parse(elf)?;
    let table = symbol_table(&file);
    let section = file
        .section_by_name(".ksyms")
        .ok_or("the kernel has no .ksyms section")?;
    let (addr, size) = (section.address(), section.size() as usize);
    if table.bytes.len() > size {
        bail!(
            "the symbol table needs {} bytes but .ksyms reserves {size}; raise KSYMS_RESERVE in levitate-hal/src/ksyms.rs",
            table.bytes.len()
        );
    }
    let at = (addr - KIMAGE_VBASE) as usize;
    if at + table.bytes.len() > bytes.len() {
        bail!(".ksyms is not inside the image file");
    }
    bytes[at..at + table.bytes.len()].copy_from_slice(&table.bytes);
    Ok(Image {
        bytes,
        symbols: table.count,
    })
}

struct Table {
    bytes: Vec<u8>,
    count: usize,
}

fn symbol_table(file: &object::File<'_>) -> Table {
    let mut syms: Vec<(u64, u64, String)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.address() >= KIMAGE_VBASE)
        .filter_map(|s| {
            let name = s.name().ok()?;
            if name.is_empty() || name.starts_with('$') {
                return None; // mapping symbols ($x, $d) are not functions
            }
            let demangled = format!("{:#}", rustc_demangle::demangle(name));
            Some((s.address() - KIMAGE_VBASE, s.size(), demangled))
        })
        .collect();
    syms.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    syms.dedup_by_key(|s| s.0);

    let mut names = Vec::new();
    let mut entries = Vec::new();
    for (off, size, name) in &syms {
        entries.extend_from_slice(&(*off as u32).to_le_bytes());
        entries.extend_from_slice(&(*size as u32).to_le_bytes());
        entries.extend_from_slice(&(names.len() as u32).to_le_bytes());
        entries.extend_from_slice(&(name.len() as u32).to_le_bytes());
        names.extend_from_slice(name.as_bytes());
    }
    let mut bytes = Vec::with_capacity(16 + entries.len() + names.len());
    bytes.extend_from_slice(b"KSYM");
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&(syms.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(names.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&entries);
    bytes.extend_from_slice(&names);
    Table {
        bytes,
        count: syms.len(),
    }
}

/// Size of one `levitate_hal::ktest::Ktest` descriptor: `name: &'static str` (pointer, then
/// length) and `run: fn()`, 8 bytes each, `#[repr(C)]`.
const KTEST_DESCRIPTOR: usize = 24;

/// The names of the in-kernel tests a kernel ELF registers, in link order (the order the
/// kernel's runner runs them). Empty for a build without the `ktest` feature.
pub fn ktest_names(elf: &[u8]) -> Result<Vec<String>> {
    let file = object::File::parse(elf)?;
    let Some(section) = file.section_by_name(".ktest") else {
        return Ok(Vec::new());
    };
    let descriptors = section
        .data()
        .map_err(|e| format!("kernel ELF .ktest: {e}"))?;
    // The names live in .rodata; look them up by link address in any allocated section.
    let read = |addr: u64, len: u64| -> Option<Vec<u8>> {
        file.sections().find_map(|s| {
            let offset = addr.checked_sub(s.address())?;
            let end = offset.checked_add(len)?;
            if end > s.size() {
                return None;
            }
            let data = s.data().ok()?;
            data.get(offset as usize..end as usize).map(<[u8]>::to_vec)
        })
    };
    decode_ktests(descriptors, read)
}

/// Decodes the `.ktest` descriptors; `read(addr, len)` returns the image bytes at a link
/// address.
fn decode_ktests(
    descriptors: &[u8],
    read: impl Fn(u64, u64) -> Option<Vec<u8>>,
) -> Result<Vec<String>> {
    if !descriptors.len().is_multiple_of(KTEST_DESCRIPTOR) {
        bail!(
            ".ktest holds {} bytes, not a whole number of {KTEST_DESCRIPTOR}-byte descriptors \
             (did levitate_hal::ktest::Ktest change? update xtask/src/image.rs)",
            descriptors.len()
        );
    }
    let word = |d: &[u8], i: usize| {
        u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8-byte slice"))
    };
    descriptors
        .chunks_exact(KTEST_DESCRIPTOR)
        .enumerate()
        .map(|(i, d)| {
            let (ptr, len) = (word(d, 0), word(d, 1));
            let name = (len > 0 && len < 4096)
                .then(|| read(ptr, len))
                .flatten()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            name.ok_or_else(|| {
                format!(
                    "ktest descriptor {i} names no readable string (pointer {ptr:#x}, length {len})"
                )
                .into()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(ptr: u64, len: u64, run: u64) -> Vec<u8> {
        [ptr, len, run]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    /// A fake rodata at 0x1000 holding "a::one" and "b::two".
    fn rodata(addr: u64, len: u64) -> Option<Vec<u8>> {
        let data = b"a::oneb::two";
        let at = addr.checked_sub(0x1000)? as usize;
        data.get(at..at + len as usize).map(<[u8]>::to_vec)
    }

    #[test]
    fn ktest_names_are_decoded_in_link_order() {
        let mut section = descriptor(0x1006, 6, 0xdead);
        section.extend(descriptor(0x1000, 6, 0xbeef));
        assert_eq!(
            decode_ktests(&section, rodata).unwrap(),
            ["b::two", "a::one"]
        );
        assert!(decode_ktests(&[], rodata).unwrap().is_empty());
    }

    #[test]
    fn broken_ktest_sections_are_errors() {
        let one = descriptor(0x1000, 6, 0);
        assert!(decode_ktests(&one[..20], rodata).is_err());
        // A name outside the image, an empty name, a name past the end.
        for bad in [
            descriptor(0x9000, 6, 0),
            descriptor(0x1000, 0, 0),
            descriptor(0x100a, 6, 0),
        ] {
            assert!(decode_ktests(&bad, rodata).is_err());
        }
    }
}
