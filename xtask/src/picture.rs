//! Screen pictures: reading the binary PPM (P6) that QEMU's `screendump` writes and writing
//! it as a PNG (the `png` crate), for `cargo xtask run --screenshot` and the screen scenarios.

use crate::{bail, Result};
use std::path::Path;

/// An 8-bit RGB picture, rows top to bottom, 3 bytes a pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// What a PPM header says: the picture's size and where its pixels start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PpmHeader {
    pub width: usize,
    pub height: usize,
    /// Byte offset of the first pixel.
    pub data_at: usize,
}

impl PpmHeader {
    /// The whole file's length: header and pixels.
    pub fn file_len(&self) -> usize {
        self.data_at + self.width * self.height * 3
    }
}

/// Reads the header of a binary PPM (netpbm's ppm(5)): `P6`, width, height and maxval as
/// decimal numbers separated by whitespace, `#` comments to the end of a line between them,
/// then exactly one whitespace byte before the pixels. Only maxval 255 (one byte a sample) is
/// accepted: it is what QEMU writes. `None` when the header is not all there yet.
pub fn ppm_header(bytes: &[u8]) -> std::result::Result<Option<PpmHeader>, String> {
    if bytes.len() < 2 {
        return Ok(None);
    }
    if &bytes[..2] != b"P6" {
        return Err("not a binary PPM (no P6 magic)".into());
    }
    let mut at = 2;
    let mut fields = [0usize; 3];
    for field in &mut fields {
        // Whitespace and comments before the number.
        loop {
            match bytes.get(at) {
                None => return Ok(None),
                Some(b'#') => {
                    while bytes.get(at).is_some_and(|&b| b != b'\n') {
                        at += 1;
                    }
                }
                Some(b) if b.is_ascii_whitespace() => at += 1,
                Some(_) => break,
            }
        }
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == bytes.len() {
            return Ok(None);
        }
        if at == start || at - start > 9 {
            return Err(format!("bad PPM header number at byte {start}"));
        }
        // Nine digits or fewer always parse.
        *field = std::str::from_utf8(&bytes[start..at])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad PPM header number at byte {start}"))?;
    }
    let [width, height, maxval] = fields;
    if maxval != 255 {
        return Err(format!("PPM maxval {maxval}, only 255 is read"));
    }
    if width == 0 || height == 0 {
        return Err(format!("PPM of {width}x{height} pixels"));
    }
    match bytes.get(at) {
        None => Ok(None),
        Some(b) if b.is_ascii_whitespace() => Ok(Some(PpmHeader {
            width,
            height,
            data_at: at + 1,
        })),
        Some(_) => Err("PPM maxval is not followed by whitespace".into()),
    }
}

/// Reads a whole binary PPM.
pub fn from_ppm(bytes: &[u8]) -> Result<Picture> {
    let header = ppm_header(bytes)?.ok_or("PPM header is cut short")?;
    if bytes.len() < header.file_len() {
        bail!(
            "PPM of {}x{} is cut short: {} of {} bytes",
            header.width,
            header.height,
            bytes.len(),
            header.file_len()
        );
    }
    Ok(Picture {
        width: header.width,
        height: header.height,
        rgb: bytes[header.data_at..header.file_len()].to_vec(),
    })
}

/// Encodes a picture as a PNG, compressed hard (a screenshot committed to docs/ should stay
/// small): indexed colour when it has at most 256 colours, else 8-bit RGB, with whichever of
/// no filter and adaptive filtering compresses better (a text screen's flat runs of colour
/// compress best unfiltered; a photo-like picture with adaptive filters).
pub fn to_png(p: &Picture) -> Result<Vec<u8>> {
    let width = u32::try_from(p.width).map_err(|_| "picture too wide for PNG")?;
    let height = u32::try_from(p.height).map_err(|_| "picture too tall for PNG")?;
    let mut palette: Vec<[u8; 3]> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut indexed = Vec::with_capacity(p.width * p.height);
    for px in p.rgb.chunks_exact(3) {
        let c = [px[0], px[1], px[2]];
        let i = *index.entry(c).or_insert_with(|| {
            palette.push(c);
            palette.len() - 1
        });
        if palette.len() > 256 {
            break;
        }
        indexed.push(i as u8);
    }
    let encode = |filter: png::Filter| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::High);
        encoder.set_filter(filter);
        let data = if palette.len() <= 256 {
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_palette(palette.concat());
            &indexed
        } else {
            encoder.set_color(png::ColorType::Rgb);
            &p.rgb
        };
        let mut writer = encoder
            .write_header()
            .map_err(|e| format!("PNG encoder: {e}"))?;
        writer
            .write_image_data(data)
            .map_err(|e| format!("PNG encoder: {e}"))?;
        writer.finish().map_err(|e| format!("PNG encoder: {e}"))?;
        Ok(out)
    };
    let plain = encode(png::Filter::NoFilter)?;
    let adaptive = encode(png::Filter::Adaptive)?;
    Ok(if adaptive.len() < plain.len() {
        adaptive
    } else {
        plain
    })
}

/// Writes a picture to `path` as PNG.
pub fn write_png(p: &Picture, path: &Path) -> Result<()> {
    let bytes = to_png(p)?;
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(w: usize, h: usize, header: &str) -> Vec<u8> {
        let mut v = header.as_bytes().to_vec();
        v.extend((0..w * h * 3).map(|i| (i * 7) as u8));
        v
    }

    #[test]
    fn qemu_style_ppm_reads() {
        // QEMU's ppm_save: "P6\n%d %d\n255\n".
        let bytes = ppm(3, 2, "P6\n3 2\n255\n");
        let p = from_ppm(&bytes).unwrap();
        assert_eq!((p.width, p.height, p.rgb.len()), (3, 2, 18));
        assert_eq!(&p.rgb[3..6], &[21, 28, 35]);
        // Comments and any whitespace between the fields.
        let bytes = ppm(3, 2, "P6 # made by hand\n 3\t2 # size\n255 ");
        assert_eq!(from_ppm(&bytes).unwrap(), p);
    }

    #[test]
    fn partial_and_bad_headers() {
        for partial in ["", "P", "P6", "P6\n3 2", "P6\n3 2\n255"] {
            assert_eq!(ppm_header(partial.as_bytes()), Ok(None), "{partial:?}");
        }
        for bad in [
            "P3\n3 2\n255\n",
            "P6\n3 2\n65535\n",
            "P6\nx 2\n255\n",
            "P6\n0 2\n255\n",
            "P6\n3 2\n255x",
            "P6\n1234567890 2\n255\n",
        ] {
            assert!(ppm_header(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let mut short = ppm(3, 2, "P6\n3 2\n255\n");
        short.pop();
        assert!(from_ppm(&short).unwrap_err().0.contains("cut short"));
    }

    /// Decodes a PNG to 8-bit RGB (palette expanded).
    fn decode(bytes: Vec<u8>) -> (png::ColorType, Picture) {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let stored = reader.info().color_type;
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        let (width, height) = (info.width as usize, info.height as usize);
        (
            stored,
            Picture {
                width,
                height,
                rgb: buf,
            },
        )
    }

    #[test]
    fn png_round_trips_through_the_decoder() {
        // Few colours: indexed.
        let few = Picture {
            width: 5,
            height: 4,
            rgb: (0..60).map(|i| (i % 6 * 40) as u8).collect(),
        };
        assert_eq!(
            decode(to_png(&few).unwrap()),
            (png::ColorType::Indexed, few)
        );
        // More than 256 colours: RGB.
        let many = Picture {
            width: 40,
            height: 20,
            rgb: (0..800u32)
                .flat_map(|i| [i as u8, (i >> 8) as u8, 7])
                .collect(),
        };
        let (stored, back) = decode(to_png(&many).unwrap());
        assert_eq!(stored, png::ColorType::Rgb);
        assert!(back == many, "RGB pixels differ after the round trip");
    }
}
