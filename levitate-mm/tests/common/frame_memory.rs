//! A host model of frame contents for allocator tests, shared by the unit tests (through
//! `src/test_support.rs`) and the integration tests: each frame is a fill byte plus at most one
//! byte written on its own, enough to model zeroing, poisoning and a stray write (a use after
//! free) without 4 KiB per frame. The includer brings `Pfn`, `PhysAddr`, `FrameMemory` and
//! `HashMap` into scope.

use super::{FrameMemory, HashMap, Pfn, PhysAddr};

/// What a frame nobody wrote reads as: neither zero nor the poison.
pub const GARBAGE: u8 = 0x5a;

/// Frame contents in host memory.
#[derive(Default)]
pub struct TestMemory {
    frames: HashMap<u64, (u8, Option<(u64, u8)>)>,
}

impl TestMemory {
    /// Writes one byte (a use after free, when the frame is free).
    pub fn write(&mut self, addr: PhysAddr, byte: u8) {
        let frame = self
            .frames
            .entry(addr.pfn().as_u64())
            .or_insert((GARBAGE, None));
        frame.1 = Some((addr.page_offset(), byte));
    }

    /// Reads one byte.
    pub fn read(&self, addr: PhysAddr) -> u8 {
        match self.frames.get(&addr.pfn().as_u64()) {
            None => GARBAGE,
            Some(&(_, Some((offset, byte)))) if offset == addr.page_offset() => byte,
            Some(&(fill, _)) => fill,
        }
    }

    /// Whether the frame holds a byte written on its own (not yet filled over).
    pub fn is_scribbled(&self, pfn: u64) -> bool {
        self.frames.get(&pfn).is_some_and(|f| f.1.is_some())
    }
}

impl FrameMemory for TestMemory {
    fn fill(&mut self, first: Pfn, frames: u64, byte: u8) {
        for pfn in first.as_u64()..first.as_u64() + frames {
            self.frames.insert(pfn, (byte, None));
        }
    }

    fn find_not(&self, first: Pfn, frames: u64, byte: u8) -> Option<PhysAddr> {
        (first.as_u64()..first.as_u64() + frames).find_map(|pfn| {
            let base = Pfn::new(pfn).addr();
            let (fill, stray) = self.frames.get(&pfn).copied().unwrap_or((GARBAGE, None));
            match stray {
                Some((0, b)) if fill != byte && b == byte => Some(base + 1),
                _ if fill != byte => Some(base),
                Some((offset, b)) if b != byte => Some(base + offset),
                _ => None,
            }
        })
    }
}
