//! A pixel buffer with its geometry and format: the one place that turns a colour into bytes.
//! Every drawing call clips to the buffer, so a caller's arithmetic cannot write outside it.

use levitate_mm::dtb::framebuffer::PixelFormat;

/// An 8-bit-per-channel colour; the surface converts it to its format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#rrggbb` as a number, for palettes written as the SVG writes them.
    pub const fn hex(v: u32) -> Self {
        Rgb((v >> 16) as u8, (v >> 8) as u8, v as u8)
    }

    /// The mix of `self` (at `alpha` 0) and `over` (at `alpha` 255), per channel, rounded.
    pub const fn blend(self, over: Rgb, alpha: u8) -> Rgb {
        const fn mix(a: u8, b: u8, t: u8) -> u8 {
            let (a, b, t) = (a as u32, b as u32, t as u32);
            ((a * (255 - t) + b * t + 127) / 255) as u8
        }
        Rgb(
            mix(self.0, over.0, alpha),
            mix(self.1, over.1, alpha),
            mix(self.2, over.2, alpha),
        )
    }
}

/// Why a buffer cannot be drawn on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SurfaceError {
    /// Zero width or height.
    Empty,
    /// A row of `width` pixels does not fit in `stride` bytes.
    StrideTooSmall,
    /// `stride * height` is more than the buffer's length.
    TooShort,
}

/// A framebuffer in memory: `height` rows of `stride` bytes, `width` pixels drawn per row.
pub struct Surface<'a> {
    buf: &'a mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
}

impl<'a> Surface<'a> {
    /// Checks the geometry against the buffer.
    pub fn new(
        buf: &'a mut [u8],
        width: usize,
        height: usize,
        stride: usize,
        format: PixelFormat,
    ) -> Result<Self, SurfaceError> {
        if width == 0 || height == 0 {
            return Err(SurfaceError::Empty);
        }
        let bpp = format.bytes_per_pixel() as usize;
        if width.checked_mul(bpp).is_none_or(|row| row > stride) {
            return Err(SurfaceError::StrideTooSmall);
        }
        if stride.checked_mul(height).is_none_or(|n| n > buf.len()) {
            return Err(SurfaceError::TooShort);
        }
        Ok(Self {
            buf,
            width,
            height,
            stride,
            format,
        })
    }

    /// Visible pixels per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Bytes per row.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The bytes, for a caller that must flush them (cache cleans) or compare them.
    pub fn bytes(&self) -> &[u8] {
        self.buf
    }

    /// Writes one encoded pixel; outside the surface, nothing.
    #[inline]
    pub(crate) fn put_raw(&mut self, x: usize, y: usize, value: u32) {
        if x >= self.width || y >= self.height {
            return;
        }
        // Pixels are little-endian (simplefb, DRM fourccs). Fixed-size copies: this runs for
        // every pixel of every glyph.
        if self.format.bytes_per_pixel() == 2 {
            let at = y * self.stride + x * 2;
            if let Some(px) = self.buf.get_mut(at..at + 2) {
                px.copy_from_slice(&(value as u16).to_le_bytes());
            }
        } else {
            let at = y * self.stride + x * 4;
            if let Some(px) = self.buf.get_mut(at..at + 4) {
                px.copy_from_slice(&value.to_le_bytes());
            }
        }
    }

    /// Sets one pixel; outside the surface, nothing.
    pub fn put(&mut self, x: usize, y: usize, colour: Rgb) {
        let v = self.format.encode(colour.0, colour.1, colour.2);
        self.put_raw(x, y, v);
    }

    /// The pixel value stored at (x, y), as the format encodes it.
    pub fn raw(&self, x: usize, y: usize) -> Option<u32> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let bpp = self.format.bytes_per_pixel() as usize;
        let at = y * self.stride + x * bpp;
        let mut v = [0u8; 4];
        v[..bpp].copy_from_slice(&self.buf[at..at + bpp]);
        Some(u32::from_le_bytes(v))
    }

    /// Fills a rectangle, clipped to the surface.
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, colour: Rgb) {
        let v = self.format.encode(colour.0, colour.1, colour.2);
        let bpp = self.format.bytes_per_pixel() as usize;
        let x_end = x.saturating_add(w).min(self.width);
        let y_end = y.saturating_add(h).min(self.height);
        if x >= x_end {
            return;
        }
        let bytes = v.to_le_bytes();
        for row in y..y_end {
            let start = row * self.stride + x * bpp;
            let end = row * self.stride + x_end * bpp;
            for px in self.buf[start..end].chunks_exact_mut(bpp) {
                px.copy_from_slice(&bytes[..bpp]);
            }
        }
    }

    /// Moves rows `from..from + count` to start at row `to` (ranges may overlap), clipped.
    pub fn move_rows(&mut self, from: usize, to: usize, count: usize) {
        let count = count
            .min(self.height.saturating_sub(from))
            .min(self.height.saturating_sub(to));
        if count == 0 || from == to {
            return;
        }
        let src = from * self.stride..(from + count) * self.stride;
        self.buf.copy_within(src, to * self.stride);
    }
}
