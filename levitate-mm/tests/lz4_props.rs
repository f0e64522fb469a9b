//! The LZ4 legacy decoder against an independent encoder (lz4_flex): whatever it compresses,
//! in however many blocks and concatenated streams, decodes to the original; and no input,
//! however broken, makes the decoder panic or write past what it measured.

use levitate_mm::lz4::{decode_legacy, legacy_decoded_len, LEGACY_MAGIC};
use proptest::prelude::*;

/// A legacy stream of `data` in blocks of `block` bytes, compressed by lz4_flex.
fn legacy(data: &[u8], block: usize) -> Vec<u8> {
    let mut out = LEGACY_MAGIC.to_le_bytes().to_vec();
    for chunk in data.chunks(block) {
        let c = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(&c);
    }
    out
}

fn roundtrip(stream: &[u8]) -> Vec<u8> {
    let len = legacy_decoded_len(stream).expect("a valid stream measures");
    let mut out = vec![0u8; len];
    assert_eq!(decode_legacy(stream, &mut out), Ok(len));
    out
}

/// Data that compresses: runs, repeats at many distances, and noise.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<u8>(), 1usize..300, 0u8..3), 0..200).prop_map(|parts| {
        let mut v: Vec<u8> = Vec::new();
        for (byte, n, kind) in parts {
            match kind {
                0 => v.extend(std::iter::repeat_n(byte, n)),
                1 if !v.is_empty() => {
                    let from = v.len().saturating_sub(n * 7 % 70_000 + 1);
                    let piece: Vec<u8> = v[from..].iter().take(n).copied().collect();
                    v.extend(piece);
                }
                _ => v.extend((0..n).map(|i| byte.wrapping_mul(i as u8).wrapping_add(31))),
            }
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn what_lz4_flex_compresses_decodes(data in data(), block in 1usize..5000) {
        prop_assert_eq!(roundtrip(&legacy(&data, block)), data);
    }

    #[test]
    fn concatenated_and_padded_streams_decode(a in data(), b in data(), pad in 0usize..64) {
        let mut stream = legacy(&a, 4096);
        stream.extend(legacy(&b, 1000));
        stream.extend(std::iter::repeat_n(0u8, pad));
        let mut want = a.clone();
        want.extend(&b);
        prop_assert_eq!(roundtrip(&stream), want);
    }

    #[test]
    fn corrupt_streams_never_panic(data in data(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut stream = legacy(&data, 777);
        for (at, byte) in flips {
            let at = 4 + at % (stream.len() - 3).max(1);
            if at < stream.len() {
                stream[at] ^= byte | 1;
            }
        }
        stream.truncate(4 + cut % (stream.len() - 3));
        if let Ok(len) = legacy_decoded_len(&stream) {
            // A stream that measures decodes into exactly that many bytes.
            let mut out = vec![0u8; len];
            prop_assert_eq!(decode_legacy(&stream, &mut out), Ok(len));
        }
    }
}

#[test]
fn a_stock_sized_block_of_8_mib_decodes() {
    let data: Vec<u8> = (0..(8u32 << 20) + 12345)
        .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
        .collect();
    assert_eq!(roundtrip(&legacy(&data, 8 << 20)), data);
}
