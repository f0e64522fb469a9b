//! LZ4 decompression for the initramfs: the block format and the "legacy" frame format that
//! `lz4 -l` writes and that Android ramdisks and `Image.lz4` use (Linux's
//! `lib/decompress_unlz4.c` reads the same). Safe code, no allocation: the caller sizes the
//! output with [`legacy_decoded_len`], which checks the whole stream, and then decodes into it
//! with [`decode_legacy`].
//!
//! Legacy frame (lz4 `doc/lz4_Frame_format.md`, "Legacy frame"): the magic 0x184C2102
//! (little-endian), then blocks, each a 4-byte little-endian compressed size followed by one
//! independent LZ4 block that decodes to at most 8 MiB. The stream ends at the end of the
//! input; the magic may appear again where a block size would (concatenated streams, as the
//! bootloader makes by appending the boot ramdisk to the vendor ramdisk). As a kernel extension,
//! a block size of 0 ends the stream and only zero padding may follow it.
//!
//! Block format (lz4 `doc/lz4_Block_format.md`): sequences of a token (high nibble: literal
//! count, low nibble: match length - 4, 15 meaning "more length bytes follow, each added, until
//! one is not 255"), the literals, a 2-byte little-endian match offset (1..=65535, back into
//! what this block has produced) and any extra match length bytes. The last sequence has
//! literals only.

use core::fmt;

/// The legacy frame's magic number, as the first 4 bytes of the stream (little-endian).
pub const LEGACY_MAGIC: u32 = 0x184C_2102;
/// The most a legacy block decodes to.
pub const LEGACY_BLOCK_MAX: usize = 8 << 20;
/// The largest compressed block that can decode to [`LEGACY_BLOCK_MAX`]: LZ4's
/// `LZ4_COMPRESSBOUND(n) = n + n/255 + 16`. Linux refuses larger chunk sizes too.
pub const LEGACY_COMPRESSED_MAX: usize = LEGACY_BLOCK_MAX + LEGACY_BLOCK_MAX / 255 + 16;

/// Why a stream cannot be decoded. Offsets are from the start of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lz4Error {
    /// The input does not start with [`LEGACY_MAGIC`].
    NotLegacy,
    /// The input ends inside a block size, a block or a sequence.
    Truncated {
        /// Where the incomplete part starts.
        offset: usize,
    },
    /// A block size word larger than any 8 MiB block compresses to.
    BlockTooLarge {
        /// Where the size word is.
        offset: usize,
        /// The size it gives.
        size: u32,
    },
    /// A match refers to bytes before the start of its block (or has offset 0).
    BadMatchOffset {
        /// Where the offset field is.
        offset: usize,
    },
    /// A block decodes to more than 8 MiB (or more than the output holds).
    OutputTooLarge {
        /// The block's start.
        offset: usize,
    },
    /// Non-zero bytes after a zero block size (the end of the stream).
    TrailingData {
        /// The first such byte.
        offset: usize,
    },
}

impl fmt::Display for Lz4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotLegacy => write!(f, "not an LZ4 legacy stream (no magic 0x184c2102)"),
            Self::Truncated { offset } => write!(f, "LZ4 stream truncated at offset {offset:#x}"),
            Self::BlockTooLarge { offset, size } => write!(
                f,
                "LZ4 block size {size:#x} at offset {offset:#x} exceeds the legacy maximum {LEGACY_COMPRESSED_MAX:#x}"
            ),
            Self::BadMatchOffset { offset } => write!(
                f,
                "LZ4 match at offset {offset:#x} refers outside its block"
            ),
            Self::OutputTooLarge { offset } => write!(
                f,
                "LZ4 block at offset {offset:#x} decodes to more than 8 MiB"
            ),
            Self::TrailingData { offset } => write!(
                f,
                "non-zero data at offset {offset:#x} after the end of the LZ4 stream"
            ),
        }
    }
}

/// Whether `data` starts with the legacy frame magic.
pub fn is_legacy(data: &[u8]) -> bool {
    read_u32(data, 0) == Some(LEGACY_MAGIC)
}

/// How many bytes the legacy stream decodes to. Checks the whole stream, so a
/// [`decode_legacy`] into that many bytes cannot fail.
pub fn legacy_decoded_len(input: &[u8]) -> Result<usize, Lz4Error> {
    walk_legacy(input, &mut Count(0))
}

/// Decodes the legacy stream into `out`; returns the bytes written. `out` must hold
/// [`legacy_decoded_len`] bytes; a shorter one is [`Lz4Error::OutputTooLarge`].
pub fn decode_legacy(input: &[u8], out: &mut [u8]) -> Result<usize, Lz4Error> {
    walk_legacy(input, &mut Write { out, at: 0 })
}

/// Decodes one raw LZ4 block (at most 8 MiB of output) into `out`; returns the bytes written.
pub fn decode_block(input: &[u8], out: &mut [u8]) -> Result<usize, Lz4Error> {
    let mut sink = Write { out, at: 0 };
    block(input, 0, &mut sink)?;
    Ok(sink.at)
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Where decoded bytes go: counted only, or written.
trait Sink {
    /// Bytes produced so far (over all blocks).
    fn len(&self) -> usize;
    /// Appends `bytes`; false when there is no room.
    fn literals(&mut self, bytes: &[u8]) -> bool;
    /// Appends `len` bytes copied from `distance` bytes back (may overlap what it writes);
    /// false when there is no room. The caller has checked `distance` against the block.
    fn copy_back(&mut self, distance: usize, len: usize) -> bool;
}

struct Count(usize);

impl Sink for Count {
    fn len(&self) -> usize {
        self.0
    }
    fn literals(&mut self, bytes: &[u8]) -> bool {
        self.0 += bytes.len();
        true
    }
    fn copy_back(&mut self, _distance: usize, len: usize) -> bool {
        self.0 += len;
        true
    }
}

struct Write<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Sink for Write<'_> {
    fn len(&self) -> usize {
        self.at
    }
    fn literals(&mut self, bytes: &[u8]) -> bool {
        let Some(dst) = self.out.get_mut(self.at..self.at + bytes.len()) else {
            return false;
        };
        dst.copy_from_slice(bytes);
        self.at += bytes.len();
        true
    }
    fn copy_back(&mut self, distance: usize, len: usize) -> bool {
        if self.at + len > self.out.len() || distance > self.at {
            return false;
        }
        let from = self.at - distance;
        if distance >= len {
            self.out.copy_within(from..from + len, self.at);
        } else {
            // Overlapping: the match repeats the last `distance` bytes, byte by byte.
            for i in 0..len {
                self.out[self.at + i] = self.out[from + i];
            }
        }
        self.at += len;
        true
    }
}

fn walk_legacy(input: &[u8], sink: &mut impl Sink) -> Result<usize, Lz4Error> {
    if !is_legacy(input) {
        return Err(Lz4Error::NotLegacy);
    }
    let mut at = 4;
    while at < input.len() {
        let Some(size) = read_u32(input, at) else {
            trailing(input, at)?;
            break;
        };
        if size == LEGACY_MAGIC {
            at += 4; // another stream concatenated onto this one
            continue;
        }
        if size == 0 {
            trailing(input, at)?;
            break;
        }
        if size as usize > LEGACY_COMPRESSED_MAX {
            return Err(Lz4Error::BlockTooLarge { offset: at, size });
        }
        let start = at + 4;
        let data = input
            .get(start..start + size as usize)
            .ok_or(Lz4Error::Truncated { offset: at })?;
        block(data, start, sink)?;
        at = start + size as usize;
    }
    Ok(sink.len())
}

/// The end of the stream at `at`: only zero bytes may follow.
fn trailing(input: &[u8], at: usize) -> Result<(), Lz4Error> {
    match input[at..].iter().position(|&b| b != 0) {
        None => Ok(()),
        // Fewer than 4 bytes that are not all padding: a cut-off size word.
        Some(i) if input.len() - at < 4 => Err(Lz4Error::Truncated { offset: at + i }),
        Some(i) => Err(Lz4Error::TrailingData { offset: at + i }),
    }
}

/// Decodes one block (`data`, which starts at `base` in the input, for error offsets).
fn block(data: &[u8], base: usize, sink: &mut impl Sink) -> Result<(), Lz4Error> {
    let block_start = sink.len();
    let too_large = Lz4Error::OutputTooLarge { offset: base };
    let mut at = 0;
    let byte = |at: usize| {
        data.get(at)
            .copied()
            .ok_or(Lz4Error::Truncated { offset: base + at })
    };
    // A length nibble of 15 continues in bytes of 255 until one is not; capped so that no
    // sum can overflow (a block never produces more than 8 MiB).
    let extend = |at: &mut usize, mut len: usize| -> Result<usize, Lz4Error> {
        if len == 15 {
            loop {
                let b = byte(*at)?;
                *at += 1;
                len += usize::from(b);
                if len > LEGACY_BLOCK_MAX {
                    return Err(too_large);
                }
                if b != 255 {
                    break;
                }
            }
        }
        Ok(len)
    };
    loop {
        let token = byte(at)?;
        at += 1;
        let literals = extend(&mut at, usize::from(token >> 4))?;
        let lit = data
            .get(at..at + literals)
            .ok_or(Lz4Error::Truncated { offset: base + at })?;
        if sink.len() - block_start + literals > LEGACY_BLOCK_MAX || !sink.literals(lit) {
            return Err(too_large);
        }
        at += literals;
        if at == data.len() {
            return Ok(()); // the last sequence: literals only
        }
        let offset_at = at;
        let distance = usize::from(byte(at)?) | usize::from(byte(at + 1)?) << 8;
        at += 2;
        if distance == 0 || distance > sink.len() - block_start {
            return Err(Lz4Error::BadMatchOffset {
                offset: base + offset_at,
            });
        }
        let len = extend(&mut at, usize::from(token & 0xf))? + 4;
        if sink.len() - block_start + len > LEGACY_BLOCK_MAX || !sink.copy_back(distance, len) {
            return Err(too_large);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(blocks: &[&[u8]]) -> std::vec::Vec<u8> {
        let mut v = LEGACY_MAGIC.to_le_bytes().to_vec();
        for b in blocks {
            v.extend_from_slice(&(b.len() as u32).to_le_bytes());
            v.extend_from_slice(b);
        }
        v
    }

    #[test]
    fn literals_and_overlapping_matches_decode() {
        // "abc" literal, then a match of 9 at distance 3 ("abcabcabc"), then "!" literal.
        let block: &[u8] = &[0x35, b'a', b'b', b'c', 3, 0, 0x10, b'!'];
        let stream = legacy(&[block, block]);
        assert_eq!(legacy_decoded_len(&stream), Ok(26));
        let mut out = [0u8; 26];
        assert_eq!(decode_legacy(&stream, &mut out), Ok(26));
        assert_eq!(&out, b"abcabcabcabc!abcabcabcabc!");
        // Too small an output is an error, not a panic.
        assert_eq!(
            decode_legacy(&stream, &mut [0u8; 20]),
            Err(Lz4Error::OutputTooLarge { offset: 20 })
        );
    }

    #[test]
    fn broken_streams_are_errors() {
        assert_eq!(legacy_decoded_len(b"0707"), Err(Lz4Error::NotLegacy));
        // A match before the block's start (blocks are independent).
        let second: &[u8] = &[0x00, 1, 0];
        let first: &[u8] = &[0x10, b'x'];
        assert_eq!(
            legacy_decoded_len(&legacy(&[first, second])),
            Err(Lz4Error::BadMatchOffset { offset: 15 })
        );
        // A zero offset.
        let zero: &[u8] = &[0x10, b'x', 0, 0];
        assert!(matches!(
            legacy_decoded_len(&legacy(&[zero])),
            Err(Lz4Error::BadMatchOffset { .. })
        ));
        // A block size past the end, a huge size, a cut-off size word.
        let mut cut = legacy(&[first]);
        cut[4] = 9;
        assert_eq!(
            legacy_decoded_len(&cut),
            Err(Lz4Error::Truncated { offset: 4 })
        );
        let mut huge = legacy(&[first]);
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            legacy_decoded_len(&huge),
            Err(Lz4Error::BlockTooLarge { .. })
        ));
        let mut short = legacy(&[first]);
        short.extend_from_slice(&[1, 0]);
        assert!(matches!(
            legacy_decoded_len(&short),
            Err(Lz4Error::Truncated { .. })
        ));
        // A length run of 255s that would exceed 8 MiB.
        let mut long = std::vec![0xf0u8];
        long.extend(core::iter::repeat_n(255u8, LEGACY_BLOCK_MAX / 255 + 2));
        assert!(matches!(
            legacy_decoded_len(&legacy(&[&long])),
            Err(Lz4Error::OutputTooLarge { .. })
        ));
    }

    #[test]
    fn the_end_of_a_stream_may_be_padded_with_zeros_only() {
        let first: &[u8] = &[0x10, b'x'];
        let mut padded = legacy(&[first]);
        padded.extend_from_slice(&[0; 9]);
        assert_eq!(legacy_decoded_len(&padded), Ok(1));
        padded.push(7);
        assert_eq!(
            legacy_decoded_len(&padded),
            Err(Lz4Error::TrailingData { offset: 19 })
        );
        // Concatenated streams: the magic where a block size would be.
        let mut two = legacy(&[first]);
        two.extend(legacy(&[first]));
        assert_eq!(legacy_decoded_len(&two), Ok(2));
    }
}
