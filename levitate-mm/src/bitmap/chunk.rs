//! One 2 MiB chunk: which of its 512 frames are in use, where each run starts, which frames
//! have ever started a run, each run's owner, and the hints that keep searches short.

use super::bits::{self, Bits, BITS, WORDS};
use super::error::RunHolder;
use crate::addr::Pfn;
use crate::buddy::Owner;

/// "No chunk" in a list link or slot index.
pub(super) const NIL: u16 = u16::MAX;

/// Owners are stored in four bits per frame (read only at run starts).
const OWNER_BITS: u32 = 4;
const OWNER_WORDS: usize = BITS as usize * OWNER_BITS as usize / 64;
const _: () = assert!(
    Owner::COUNT <= 1 << OWNER_BITS,
    "an owner must fit four bits"
);

/// A chunk's state. A run is a maximal stretch of used frames that starts at a `starts` bit
/// and ends before the next `starts` bit or free frame: so its length is recorded nowhere
/// and a free can check the length it is given exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Chunk {
    /// First frame number (a multiple of 512); `u64::MAX` for an unused slot.
    pub base: u64,
    /// Frames in use.
    pub used: Bits,
    /// The first frame of every allocated run.
    pub starts: Bits,
    /// Frames that started a run since the chunk was taken from the buddy: a free at one of
    /// them that is no longer a run start is a double free, not a stray address.
    pub ever: Bits,
    /// Each run's owner, four bits per frame, at the run's first frame.
    owners: [u64; OWNER_WORDS],
    /// Free frames.
    pub free: u16,
    /// Every frame below it is in use: searches start here.
    pub hint: u16,
    /// At least the longest free run (1..=512 while `free > 0`), the key of the list the
    /// chunk is on. Only an upper bound: allocations leave it alone, a search that fails
    /// lowers it, a free raises it to the run it merged into.
    pub bound: u16,
    /// Next chunk (slot) on the same list, or the next spare slot; [`NIL`] ends either.
    pub next: u16,
    /// Previous chunk on the same list.
    pub prev: u16,
}

impl Chunk {
    /// An unused slot.
    pub const EMPTY: Chunk = Chunk {
        base: u64::MAX,
        used: [0; WORDS],
        starts: [0; WORDS],
        ever: [0; WORDS],
        owners: [0; OWNER_WORDS],
        free: 0,
        hint: 0,
        bound: 0,
        next: NIL,
        prev: NIL,
    };

    /// A chunk just taken from the buddy: all free.
    pub fn fresh(base: Pfn) -> Chunk {
        Chunk {
            base: base.as_u64(),
            free: BITS as u16,
            bound: BITS as u16,
            ..Chunk::EMPTY
        }
    }

    /// An unused slot on the spare stack, linked to `next`.
    pub const fn spare(next: u16) -> Chunk {
        Chunk {
            next,
            ..Chunk::EMPTY
        }
    }

    /// Frame `i` of the chunk.
    pub const fn pfn(&self, i: u32) -> Pfn {
        Pfn::new(self.base + i as u64)
    }

    /// The owner recorded at frame `i` (meaningful at run starts).
    pub fn owner_at(&self, i: u32) -> Owner {
        let shift = (i % 16) * OWNER_BITS;
        let value = (self.owners[(i / 16) as usize] >> shift) & 0xf;
        Owner::from_u8(value as u8).unwrap_or(Owner::Other)
    }

    /// The raw owner value at frame `i`, for the invariant checker.
    pub fn raw_owner_at(&self, i: u32) -> u8 {
        ((self.owners[(i / 16) as usize] >> ((i % 16) * OWNER_BITS)) & 0xf) as u8
    }

    fn set_owner(&mut self, i: u32, owner: Owner) {
        let shift = (i % 16) * OWNER_BITS;
        let word = &mut self.owners[(i / 16) as usize];
        *word = (*word & !(0xf << shift)) | (owner as u64) << shift;
    }

    /// One past the last frame of the run that starts at `start`: the next run start or free
    /// frame after it, or the chunk's end.
    pub fn run_end(&self, start: u32) -> u32 {
        bits::next_set(start + 1, |w| self.starts[w] | !self.used[w])
    }

    /// The run that holds used frame `i`: its start and length.
    pub fn run_holding(&self, i: u32) -> Option<(u32, u32)> {
        if !bits::get(&self.used, i) {
            return None;
        }
        // Every used frame lies in a run, and its run's start is the last start at or below it.
        let start = bits::prev_set(&self.starts, i + 1)?;
        Some((start, self.run_end(start) - start))
    }

    /// What holds frame `i`, for an error report.
    pub fn holder(&self, i: u32) -> RunHolder {
        match self.run_holding(i) {
            Some((start, frames)) => RunHolder::Run {
                addr: self.pfn(start).addr(),
                frames: u64::from(frames),
                owner: self.owner_at(start),
            },
            None => RunHolder::Free,
        }
    }

    /// Marks `start..start + n` (free) as a run of `owner`'s. `first_free` is the first free
    /// frame the search saw: the hint moves there, or past the run when the run starts there.
    pub fn take(&mut self, start: u32, n: u32, owner: Owner, first_free: u32) {
        bits::set_range(&mut self.used, start, n);
        bits::set(&mut self.starts, start);
        bits::set(&mut self.ever, start);
        self.set_owner(start, owner);
        self.free -= n as u16;
        self.hint = if first_free == start {
            start + n
        } else {
            first_free
        } as u16;
    }

    /// Frees the run `start..start + n` (checked by the caller) and returns the length of the
    /// free run it is now part of.
    pub fn give_back(&mut self, start: u32, n: u32) -> u32 {
        bits::clear_range(&mut self.used, start, n);
        bits::clear(&mut self.starts, start);
        self.free += n as u16;
        self.hint = self.hint.min(start as u16);
        let (lo, hi) = bits::free_extent(&self.used, start, start + n);
        hi - lo
    }
}
