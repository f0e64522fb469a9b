//! The kernel heap's unsafe shell, host-built so `cargo test` and the bench run the code the
//! kernel runs. The decisions live in `levitate_mm::slab` (size classes, slab bookkeeping),
//! `levitate_mm::slab::runs` (medium blocks as page runs in spans) and
//! `levitate_mm::slab::segments` (growth, placement, release), which never touch memory; this
//! crate holds the pointers: it turns those layers' addresses into blocks, runs one
//! linked_list_allocator heap per segment for what neither serves (over 256 KiB, aligned past
//! a page, or what the slabs and spans had no room for), and maps and unmaps the window's
//! pages through a [`Mapper`] (the kernel: frames and page tables; the bench and tests: plain
//! memory).
//!
//! # The window
//!
//! ```text
//! base                                                                                  base + size
//! | records | slab pages (<= limit, <= 1 GiB) | spans (<= limit, <= 1 GiB) | segments (the rest) |
//! ```
//!
//! The record area holds the slabs' chunks (24 KiB per 2 MiB of slab pages) and the spans'
//! (8 KiB per 2 MiB of spans), each mapped on first use and kept, and the table of the
//! segments' live blocks (`levitate_mm::slab::blocks`: 16 bytes a block, mapped a page at a
//! time as segment blocks are handed out and given back as they are freed, at most a 64th of
//! the limit). Blocks of 16 B to 2 KiB go
//! to the slabs, 2 KiB to 256 KiB aligned to at most a page to a run of pages in a 1 MiB span
//! (O(1) both ways: a bucket bitmap, records outside the blocks), the rest to the segments.
//! Every byte mapped (records, slab pages, spans, segments) counts against the limit. A
//! request the slabs or spans cannot serve (window or limit used up: a span is mapped whole)
//! goes to the segments, so those layers are fast paths, never a reason to fail. Growth that
//! would pass the limit first gives back every empty segment, span and slab page, then grows
//! by exactly the need.
//!
//! # Idle memory
//!
//! A block over 256 KiB gets a segment of its own, so freeing it gives its memory back at
//! once and no small block left behind can pin it. A free that empties a span or a shared
//! segment gives it back at once unless it is the one reserve of its kind (one span; one
//! segment of at most 1 MiB); a free that leaves more than [`SLAB_RETAIN_HIGH`] slab pages
//! empty unmaps a few at a time down to [`SLAB_RETAIN_LOW`]. [`Heap::reclaim`] (memory
//! pressure) gives back every empty segment, span and slab page beyond those reserves; a
//! request at the limit takes the reserves too. A `Mapper::unmap` that cannot run now (page
//! tables busy) leaves the memory mapped and empty; the next free or reclaim tries again.
//!
//! # Misuse
//!
//! [`Heap::free`] refuses, changing nothing, a free of an address outside the heap; on the
//! slab path one not at a slot start, of a slot already free, or with a layout of another
//! class; on the span path one not at the first page of a live block, of a block already free,
//! or with a layout of another page count or aligned past a page; on the segment path one not
//! aligned as its layout says, running past its segment, or not matching a live block's
//! record (inside a block, where no block lives: a double free, or with another size or
//! alignment than the block was allocated with). Every segment block has its record, checked
//! before linked_list_allocator sees the free (that crate trusts its caller: it panics on a
//! freed block that overlaps a hole, and corrupts its list on one that does not). A segment
//! block is handed out only once its record is stored: with no page for the table, the
//! allocation fails cleanly.
#![no_std]

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests;

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use levitate_mm::slab::blocks::{BlockMisuse, BlockRecord, BlockTable};
use levitate_mm::slab::runs::{
    RunChunk, RunError, RunHeap, RunMisuse, RunStats, SpanSource, MAX_RUN_CHUNKS, RETAIN_SPANS,
    RUN_CHUNK_BYTES, RUN_CHUNK_PAGES, SPAN_BYTES,
};
use levitate_mm::slab::segments::{GrowError, Plan, Segments, DEDICATED_MIN};
use levitate_mm::slab::{
    PageSource, RecordChunk, SlabError, SlabHeap, SlabMisuse, SlabStats, CHUNK_BYTES, CHUNK_PAGES,
    MAX_CHUNKS, MAX_SMALL, PAGE,
};
use linked_list_allocator::hole::HoleList;
use linked_list_allocator::Heap as List;

/// A free that leaves more empty slab pages than this unmaps the surplus ...
pub const SLAB_RETAIN_HIGH: usize = 64;
/// ... down to this many (64 KiB kept for the next burst).
pub const SLAB_RETAIN_LOW: usize = 16;
const SLAB_ALIGN: usize = 2 << 20;
/// The segment blocks' table may take this share of the limit (a 64th: room for a live
/// segment block per KiB of limit; 16 MiB at the 1 GiB limit, for a million blocks).
const BLOCK_TABLE_SHARE: usize = 64;
/// Pages of the block table a free keeps beyond its need (no map and unmap at a page edge).
const BLOCK_TABLE_SPARE: usize = 1;

/// Maps and unmaps page-aligned stretches of the heap's window (the kernel maps fresh frames
/// there; the bench and the tests use plain memory).
pub trait Mapper {
    /// Makes `[at, at + bytes)` (page multiples, inside the window, not mapped now) readable
    /// and writable memory; false when it cannot (out of frames), with nothing mapped.
    fn map(&mut self, at: usize, bytes: usize) -> bool;
    /// Gives `[at, at + bytes)` (mapped by one or more adjacent `map` calls, no live block in
    /// it) back; false, with nothing done, when it cannot now (the kernel's page tables are
    /// busy).
    fn unmap(&mut self, at: usize, bytes: usize) -> bool;
}

/// A free refused; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// The slab layer refused it (not at a slot start, double free, wrong size).
    Slab(SlabMisuse),
    /// The medium-block layer refused it (not a block start, double free, wrong size).
    Run(RunMisuse),
    /// The address is in no slab and no segment of this heap.
    Foreign { addr: usize },
    /// A segment block not aligned as its layout says.
    Misaligned { addr: usize, align: usize },
    /// A segment block whose layout runs past its segment's end.
    PastSegment { addr: usize, size: usize },
    /// The segments' block records refused it (inside a block, no live block there: a
    /// double free, another size or alignment).
    Block(BlockMisuse),
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Slab(m) => m.fmt(f),
            Self::Run(m) => m.fmt(f),
            Self::Block(m) => m.fmt(f),
            Self::Foreign { addr } => write!(f, "{addr:#x} is in no part of the heap"),
            Self::Misaligned { addr, align } => {
                write!(f, "{addr:#x} is not aligned to {align} as its layout says")
            }
            Self::PastSegment { addr, size } => {
                write!(
                    f,
                    "a {size}-byte block at {addr:#x} would run past its segment"
                )
            }
        }
    }
}

/// What the heap holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes mapped: records, slab pages, segments.
    pub mapped: usize,
    /// Bytes in live blocks (slab objects at their class size, medium blocks at their
    /// pages, segment blocks as linked_list_allocator counts them).
    pub used: usize,
    /// The most bytes the heap may map.
    pub limit: usize,
    /// The slab layer's counters.
    pub slab: SlabStats,
    /// The medium-block layer's counters (its spans are in `mapped`, `growths`, `releases`).
    pub runs: RunStats,
    /// Bytes of records mapped: the slabs' and the medium blocks' chunks (kept for the heap's
    /// life) and the segment blocks' table (it follows the live segment blocks).
    pub record_bytes: usize,
    /// Live segments and their bytes.
    pub segments: usize,
    pub segment_bytes: usize,
    /// Live blocks in segments (one record each).
    pub segment_blocks: usize,
    /// Segments and spans mapped, and given back.
    pub growths: u64,
    pub releases: u64,
    /// Small or medium requests the slabs or spans could not take (window or limit used up),
    /// served by segments.
    pub slab_fallbacks: u64,
    /// Requests refused (the limit or the frames could not cover them).
    pub failures: u64,
    /// Frees refused as misuse.
    pub refused: u64,
}

/// Bytes given back by a reclaim, and whether something could not be given back now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub bytes: usize,
    pub busy: bool,
}

/// Why a request failed, for the caller's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The limit has no room for it, even after giving back every empty part.
    Limit { need: usize, room: usize },
    /// The mapper had no memory for it.
    OutOfMemory { bytes: usize },
    /// The window has no gap for it.
    Window { need: usize },
    /// The heap has no window yet.
    NoWindow,
    /// The segment blocks' table is at its most pages: a block handed out now would go
    /// unrecorded, so its misuse would go unseen.
    Records { live: usize },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Limit { need, room } => write!(
                f,
                "needs {need} bytes mapped but only {room} are left under the limit"
            ),
            Self::OutOfMemory { bytes } => write!(f, "no memory to map {bytes} bytes"),
            Self::Window { need } => write!(f, "no {need}-byte gap left in the heap's window"),
            Self::NoWindow => write!(f, "the heap has no window yet"),
            Self::Records { live } => write!(
                f,
                "the table of large blocks is full ({live} live); none can be recorded"
            ),
        }
    }
}

/// The heap: slabs for small blocks, page runs in spans for medium ones,
/// linked_list_allocator segments for the rest, over one window.
pub struct Heap<M: Mapper> {
    slab: SlabHeap<'static>,
    runs: RunHeap<'static>,
    segs: Segments<List>,
    mapper: M,
    records_base: usize,
    run_records_base: usize,
    /// A record per live segment block, in pages of the record area from `blocks_base`.
    blocks: BlockTable,
    blocks_base: usize,
    record_bytes: usize,
    limit: usize,
    /// The segment the last large block came from (tried first).
    hint: usize,
    growths: u64,
    releases: u64,
    slab_fallbacks: u64,
    failures: u64,
    refused: u64,
    last_error: Option<AllocError>,
}

/// The slab layer's view of the mapper: one page at a time, records at their fixed place,
/// everything within the room left under the limit.
struct Source<'m, M: Mapper> {
    mapper: &'m mut M,
    room: usize,
    records_base: usize,
    record_bytes: &'m mut usize,
}

impl<M: Mapper> PageSource<'static> for Source<'_, M> {
    fn map(&mut self, addr: usize) -> bool {
        if self.room < PAGE || !self.mapper.map(addr, PAGE) {
            return false;
        }
        self.room -= PAGE;
        true
    }

    fn unmap(&mut self, addr: usize) -> bool {
        self.mapper.unmap(addr, PAGE)
    }

    fn records(&mut self, chunk: usize) -> Option<&'static mut RecordChunk> {
        let at = self.records_base + chunk * CHUNK_BYTES;
        if self.room < CHUNK_BYTES || !self.mapper.map(at, CHUNK_BYTES) {
            return None;
        }
        self.room -= CHUNK_BYTES;
        *self.record_bytes += CHUNK_BYTES;
        // SAFETY: `init`'s contract: the mapper just made [at, at + CHUNK_BYTES) valid memory
        // of the window's record area that stays valid for the heap's life (record chunks are
        // never unmapped); each chunk index is asked for once, so this is the only reference
        // to it. `at` is page aligned (the area starts on a page, chunks are page multiples),
        // more than SlabPage's alignment; any bit pattern is a valid SlabPage (integers only).
        Some(unsafe { &mut *(at as *mut RecordChunk) })
    }
}

/// The medium-block layer's view of the mapper: whole spans, records at their fixed place,
/// everything within the room left under the limit.
struct Spans<'m, M: Mapper> {
    mapper: &'m mut M,
    room: usize,
    records_base: usize,
    record_bytes: &'m mut usize,
}

impl<M: Mapper> SpanSource<'static> for Spans<'_, M> {
    fn map_span(&mut self, addr: usize) -> bool {
        if self.room < SPAN_BYTES || !self.mapper.map(addr, SPAN_BYTES) {
            return false;
        }
        self.room -= SPAN_BYTES;
        true
    }

    fn unmap_span(&mut self, addr: usize) -> bool {
        self.mapper.unmap(addr, SPAN_BYTES)
    }

    fn run_records(&mut self, chunk: usize) -> Option<&'static mut RunChunk> {
        // Records are asked for just before their first span: without room for both, take
        // neither (records stay for the heap's life).
        let at = self.records_base + chunk * RUN_CHUNK_BYTES;
        if self.room < RUN_CHUNK_BYTES + SPAN_BYTES || !self.mapper.map(at, RUN_CHUNK_BYTES) {
            return None;
        }
        self.room -= RUN_CHUNK_BYTES;
        *self.record_bytes += RUN_CHUNK_BYTES;
        // SAFETY: `init`'s contract: the mapper just made [at, at + RUN_CHUNK_BYTES) valid
        // memory of the window's record area that stays valid for the heap's life (record
        // chunks are never unmapped); each chunk index is asked for once, so this is the only
        // reference to it. `at` is page aligned (the run records start on a page, chunks are
        // page multiples); any bit pattern is a valid RunPage (integers only).
        Some(unsafe { &mut *(at as *mut RunChunk) })
    }
}

/// The medium-block layer's source over `$heap`'s mapper, with `$room` bytes left under the
/// limit (a macro, not a method, so the borrow stays on the two fields it takes).
macro_rules! spans {
    ($heap:ident, $room:expr) => {
        Spans {
            mapper: &mut $heap.mapper,
            room: $room,
            records_base: $heap.run_records_base,
            record_bytes: &mut $heap.record_bytes,
        }
    };
}

impl<M: Mapper> Heap<M> {
    /// A heap with no window: every request fails until [`Self::init`].
    pub const fn new(mapper: M) -> Self {
        Self {
            slab: SlabHeap::empty(),
            runs: RunHeap::empty(),
            segs: Segments::empty(),
            mapper,
            records_base: 0,
            run_records_base: 0,
            blocks: BlockTable::empty(),
            blocks_base: 0,
            record_bytes: 0,
            limit: 0,
            hint: 0,
            growths: 0,
            releases: 0,
            slab_fallbacks: 0,
            failures: 0,
            refused: 0,
            last_error: None,
        }
    }

    /// Gives the heap its window `[base, base + size)` and lets it map up to `limit` bytes of
    /// it. Call once. Panics when `base` is not 2 MiB aligned (a setup error, not input).
    ///
    /// # Safety
    /// The window is reserved for this heap alone, and memory the mapper maps there stays
    /// valid (not unmapped, not used by anything else) until the heap unmaps it through the
    /// mapper, for as long as the heap is used: the heap keeps `'static` references to the
    /// record chunks it maps there and hands out blocks in it.
    pub unsafe fn init(&mut self, mapper_base: usize, size: usize, limit: usize) {
        assert!(
            mapper_base.is_multiple_of(SLAB_ALIGN),
            "heap window at {mapper_base:#x} is not 2 MiB aligned"
        );
        self.limit = limit;
        // Slab pages and medium-block spans: as many as the limit allows (up to 1 GiB each),
        // within a quarter of the window each; the segments get the rest.
        let part = |reach: usize| {
            limit
                .min(size / 4)
                .min(reach)
                .next_multiple_of(SLAB_ALIGN)
                .min(reach)
        };
        let slab_bytes = part(MAX_CHUNKS * CHUNK_PAGES * PAGE);
        let run_bytes = part(MAX_RUN_CHUNKS * RUN_CHUNK_PAGES * PAGE);
        let slab_records = slab_bytes / (CHUNK_PAGES * PAGE) * CHUNK_BYTES;
        let run_records = run_bytes / (RUN_CHUNK_PAGES * PAGE) * RUN_CHUNK_BYTES;
        let table_pages = (limit / BLOCK_TABLE_SHARE).div_ceil(PAGE).max(1);
        let table_bytes = table_pages * PAGE;
        let records = (slab_records + run_records + table_bytes).next_multiple_of(SLAB_ALIGN);
        self.records_base = mapper_base;
        self.run_records_base = mapper_base + slab_records;
        self.blocks_base = self.run_records_base + run_records;
        let slab_base = mapper_base + records;
        let run_base = slab_base + slab_bytes;
        let segs_base = run_base + run_bytes;
        let fits = segs_base <= mapper_base + size;
        let (pages, spans) = if fits {
            (slab_bytes / PAGE, run_bytes / SPAN_BYTES)
        } else {
            (0, 0)
        };
        self.slab = SlabHeap::new(slab_base, pages).unwrap_or_else(SlabHeap::empty);
        self.slab.set_retain(SLAB_RETAIN_LOW, SLAB_RETAIN_HIGH);
        self.runs = RunHeap::new(run_base, spans).unwrap_or_else(RunHeap::empty);
        self.runs.set_retain(RETAIN_SPANS);
        // Without room for slabs and spans, the table alone before the segments.
        let segs_base = if fits {
            segs_base
        } else {
            self.blocks_base = mapper_base;
            mapper_base + table_bytes
        };
        let table_fits = segs_base <= mapper_base + size;
        self.blocks = BlockTable::new(if table_fits { table_pages } else { 0 });
        self.segs
            .set_window(segs_base, (mapper_base + size).saturating_sub(segs_base));
    }

    /// Maps the idle reserve now (16 empty slab pages, one empty span for medium blocks, or a
    /// shared segment of the smallest growth step when there is no span window), so the
    /// first objects after boot do not map memory inside whatever asked for them (an
    /// interrupt handler, a measurement of free frames).
    /// False when the limit or the frames do not allow it.
    pub fn prime(&mut self) -> bool {
        // A few empty slab pages first (SLAB_RETAIN_LOW of them, made by filling and
        // freeing them), so the first small objects of a new class map nothing either.
        let two_k = Layout::from_size_align(MAX_SMALL, 8).unwrap_or(Layout::new::<u8>());
        let mut held = [None; 2 * SLAB_RETAIN_LOW];
        for slot in held.iter_mut() {
            *slot = self.alloc(two_k);
        }
        for p in held.into_iter().flatten() {
            // SAFETY: a block just allocated above with this layout, not used since.
            let _ = unsafe { self.free(p, two_k) };
        }
        if self.runs.stats().empty_spans > 0 {
            return true;
        }
        if self.runs.window().1 > 0 {
            // One page-sized block maps a span; freed, the span stays as the reserve.
            let page = Layout::from_size_align(PAGE, PAGE).unwrap_or(Layout::new::<u8>());
            let room = self.room();
            let mut src = spans!(self, room);
            if let Ok(addr) = self.runs.alloc(PAGE, PAGE, &mut src) {
                let _ = self.runs.free(addr, page.size(), page.align(), &mut src);
                return self.runs.stats().empty_spans > 0;
            }
            return false;
        }
        if self.segs.iter().any(|s| !s.dedicated) {
            return true;
        }
        self.grow(Layout::new::<u8>()).is_ok()
    }

    /// The mapper (for the caller's own figures).
    pub fn mapper(&self) -> &M {
        &self.mapper
    }

    /// The mapper, mutable (the caller may change how it maps, never what is mapped).
    pub fn mapper_mut(&mut self) -> &mut M {
        &mut self.mapper
    }

    /// Bytes mapped: records, slab pages, spans, segments.
    pub fn mapped(&self) -> usize {
        self.record_bytes
            + self.slab.stats().mapped_pages() as usize * PAGE
            + self.runs.stats().spans as usize * SPAN_BYTES
            + self.segs.mapped()
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.mapped())
    }

    /// Why the last request that failed failed.
    pub fn last_error(&self) -> Option<AllocError> {
        self.last_error
    }

    /// Whether `addr` lies in the slab pages, the span window or a segment.
    pub fn contains(&self, addr: usize) -> bool {
        self.slab.contains(addr) || self.runs.contains(addr) || self.segs.find(addr).is_some()
    }

    /// A block for `layout`, or `None` when neither the slabs, the spans nor the segments
    /// (after growing as far as the limit and the mapper allow) can serve it.
    #[inline]
    pub fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let (size, align) = (layout.size().max(1), layout.align());
        let room = self.room();
        let mut src = Source {
            mapper: &mut self.mapper,
            room,
            records_base: self.records_base,
            record_bytes: &mut self.record_bytes,
        };
        match self.slab.alloc(size, align, &mut src) {
            Ok(addr) => return NonNull::new(addr as *mut u8),
            Err(SlabError::NotSmall) => {}
            Err(SlabError::OutOfPages) => return self.alloc_small_slow(layout),
        }
        self.alloc_medium(layout, room)
    }

    /// Blocks of 2 KiB to 256 KiB aligned to at most a page: a run of pages in a span.
    #[inline]
    fn alloc_medium(&mut self, layout: Layout, room: usize) -> Option<NonNull<u8>> {
        let (size, align) = (layout.size().max(1), layout.align());
        let mut src = spans!(self, room);
        match self.runs.alloc(size, align, &mut src) {
            Ok(addr) => NonNull::new(addr as *mut u8),
            Err(RunError::NotRun) => self.alloc_large(layout),
            Err(RunError::OutOfSpans) => self.alloc_medium_slow(layout),
        }
    }

    /// A medium request no span could take: give back empty segments and slab pages (they
    /// may be what holds the limit), try again, else serve it from the segments.
    #[cold]
    fn alloc_medium_slow(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if self.release_all_empty().bytes > 0 {
            let room = self.room();
            let mut src = spans!(self, room);
            if let Ok(addr) = self
                .runs
                .alloc(layout.size().max(1), layout.align(), &mut src)
            {
                return NonNull::new(addr as *mut u8);
            }
        }
        self.slab_fallbacks += 1;
        self.alloc_large(layout)
    }

    /// A small request the slabs could not take: give back empty segments (they may be what
    /// holds the limit), try again, else serve it from the segments.
    #[cold]
    fn alloc_small_slow(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let spans = {
            let mut src = spans!(self, 0);
            self.runs.release_empty(0, &mut src)
        };
        if self.release_empty_segments().bytes + spans > 0 {
            let room = self.room();
            let mut src = Source {
                mapper: &mut self.mapper,
                room,
                records_base: self.records_base,
                record_bytes: &mut self.record_bytes,
            };
            if let Ok(addr) = self
                .slab
                .alloc(layout.size().max(1), layout.align(), &mut src)
            {
                return NonNull::new(addr as *mut u8);
            }
        }
        self.slab_fallbacks += 1;
        self.alloc_large(layout)
    }

    /// A block from the segments, recorded in the block table before it is handed out.
    fn alloc_large(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if let Err(e) = self.reserve_block_record() {
            self.failures += 1;
            self.last_error = Some(e);
            return None;
        }
        let p = self.alloc_in_segments(layout)?;
        let addr = p.as_ptr() as usize;
        let (table, recs) = self.block_table();
        if table
            .insert(recs, addr, layout.size(), layout.align())
            .is_ok()
        {
            return Some(p);
        }
        // Not reachable: the reserve made room (no trim takes the last free slot) and a list
        // never hands out a block overlapping a live one. Rather than hand out a block whose
        // misuse would go unseen, give it back and fail.
        if let Some(seg) = self.segs.find(addr).and_then(|i| self.segs.get_mut(i)) {
            // SAFETY: the block was just allocated from this segment's list with this layout
            // and never handed out.
            unsafe { seg.payload.deallocate(p, layout) };
        }
        self.failures += 1;
        self.last_error = Some(AllocError::Records {
            live: self.blocks.len(),
        });
        None
    }

    /// Makes room for one more block record: maps a page of the table when it is full (at
    /// the limit, after giving back every empty part).
    fn reserve_block_record(&mut self) -> Result<(), AllocError> {
        if self.blocks.has_room() {
            return Ok(());
        }
        if self.limit == 0 {
            return Err(AllocError::NoWindow);
        }
        let page = self
            .blocks
            .grow_page()
            .map_err(|f| AllocError::Records { live: f.records })?;
        if self.room() < PAGE {
            self.release_all_empty();
            if self.room() < PAGE {
                return Err(AllocError::Limit {
                    need: PAGE,
                    room: self.room(),
                });
            }
        }
        if !self.mapper.map(self.blocks_base + page * PAGE, PAGE) {
            return Err(AllocError::OutOfMemory { bytes: PAGE });
        }
        self.blocks.page_mapped();
        self.record_bytes += PAGE;
        Ok(())
    }

    /// The block table and its records (the pages mapped for it).
    fn block_table(&mut self) -> (&mut BlockTable, &mut [BlockRecord]) {
        let n = self.blocks.capacity();
        let recs: &mut [BlockRecord] = if n == 0 {
            &mut []
        } else {
            // SAFETY: `init`'s contract: the table's first `pages` pages at `blocks_base`
            // (page aligned: the record area starts on a page and the chunks before it are
            // page multiples, more than BlockRecord's 8) were mapped by the mapper for the
            // table alone and stay mapped until `trim_block_table` unmaps the last one, after
            // the table has stopped counting it; the slice borrows `self` mutably, so it is
            // the only reference; any bit pattern is a valid BlockRecord (two integers).
            unsafe { core::slice::from_raw_parts_mut(self.blocks_base as *mut BlockRecord, n) }
        };
        (&mut self.blocks, recs)
    }

    /// The block table's records, to read.
    fn block_records(&self) -> &[BlockRecord] {
        let n = self.blocks.capacity();
        if n == 0 {
            return &[];
        }
        // SAFETY: as in `block_table`; shared for as long as `self` is borrowed.
        unsafe { core::slice::from_raw_parts(self.blocks_base as *const BlockRecord, n) }
    }

    /// Unmaps the block table's pages beyond its records, room for one more and `spare`
    /// pages. Returns the bytes given back and whether an unmap could not run now.
    fn trim_block_table(&mut self, spare: usize) -> Reclaimed {
        let mut r = Reclaimed::default();
        while let Some(page) = self.blocks.surplus_page(spare) {
            if !self.mapper.unmap(self.blocks_base + page * PAGE, PAGE) {
                r.busy = true;
                break;
            }
            self.blocks.page_unmapped();
            self.record_bytes -= PAGE;
            r.bytes += PAGE;
        }
        r
    }

    fn alloc_in_segments(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // Big blocks get a segment of their own; the rest first-fit over the shared ones,
        // the one that served last first.
        let alone = levitate_mm::slab::segments::need_for(layout.size(), layout.align())
            .is_none_or(|n| n >= DEDICATED_MIN);
        if !alone {
            // A segment with fewer free bytes than the request cannot hold it: skip its walk.
            let size = layout.size();
            if let Some(seg) = self
                .segs
                .get_mut(self.hint)
                .filter(|s| !s.dedicated && s.payload.free() >= size)
            {
                if let Ok(p) = seg.payload.allocate_first_fit(layout) {
                    return Some(p);
                }
            }
            let hint = self.hint;
            for (i, seg) in self.segs.iter_mut().enumerate() {
                if i == hint || seg.dedicated || seg.payload.free() < size {
                    continue;
                }
                if let Ok(p) = seg.payload.allocate_first_fit(layout) {
                    self.hint = i;
                    return Some(p);
                }
            }
        }
        match self.grow(layout) {
            Ok(i) => {
                self.hint = i;
                let seg = self.segs.get_mut(i)?;
                match seg.payload.allocate_first_fit(layout) {
                    Ok(p) => Some(p),
                    Err(()) => {
                        // The growth was sized for this request; not fitting is a bug in
                        // the need computation, reported as a failure rather than a panic.
                        self.failures += 1;
                        self.last_error = Some(AllocError::Window {
                            need: layout.size(),
                        });
                        None
                    }
                }
            }
            Err(e) => {
                self.failures += 1;
                self.last_error = Some(e);
                None
            }
        }
    }

    /// Maps a new segment (or extends the highest) for `layout`; at the limit, first gives
    /// back every empty part. Returns the segment's index.
    fn grow(&mut self, layout: Layout) -> Result<usize, AllocError> {
        let (size, align) = (layout.size().max(1), layout.align());
        if self.limit == 0 {
            return Err(AllocError::NoWindow);
        }
        let plan = match self.segs.plan(size, align, self.room()) {
            Ok(p) => p,
            Err(GrowError::Limit { .. }) => {
                self.release_all_empty();
                self.segs
                    .plan(size, align, self.room())
                    .map_err(|e| match e {
                        GrowError::Limit { need, room } => AllocError::Limit { need, room },
                        GrowError::Window { need } => AllocError::Window { need },
                    })?
            }
            Err(GrowError::Window { need }) => return Err(AllocError::Window { need }),
        };
        if !self.map_plan(plan) {
            // Out of frames for the generous step: try the exact need once.
            let need = levitate_mm::slab::segments::need_for(size, align)
                .ok_or(AllocError::Window { need: size })?;
            let exact = Plan {
                bytes: need,
                ..plan
            };
            if need >= plan.bytes || !self.map_plan(exact) {
                return Err(AllocError::OutOfMemory { bytes: need });
            }
            return Ok(self.add_segment(exact));
        }
        Ok(self.add_segment(plan))
    }

    fn map_plan(&mut self, plan: Plan) -> bool {
        self.mapper.map(plan.at, plan.bytes)
    }

    fn add_segment(&mut self, plan: Plan) -> usize {
        self.growths += 1;
        match plan.extend {
            Some(i) => {
                if let Some(seg) = self.segs.get_mut(i) {
                    // SAFETY: the mapper just mapped [plan.at, plan.at + bytes), which starts
                    // at this segment's end (the plan extends the highest segment, whose end
                    // is the start of the free rest of the window).
                    unsafe { seg.payload.extend(plan.bytes) };
                }
                self.segs.add(plan, List::empty())
            }
            None => {
                // SAFETY: the mapper just mapped [plan.at, plan.at + bytes) for this segment
                // alone (the plan took a gap between segments); it stays valid until the
                // segment is unmapped, which happens only when it holds no block.
                let list = unsafe { List::new(plan.at as *mut u8, plan.bytes) };
                self.segs.add(plan, list)
            }
        }
    }

    /// Frees `ptr`, allocated by [`Self::alloc`] with `layout`. Refuses (changing nothing)
    /// what the checks in the crate docs catch.
    ///
    /// # Safety
    /// If `ptr` is a live block of this heap, `layout` must be the one it was allocated with
    /// (a size of another class or page count is caught on the slab and span paths, any other
    /// size or alignment on the segment path; a size of the same class or page count is
    /// harmless). After this returns `Ok`, the block is not used again.
    #[inline]
    pub unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), Misuse> {
        let addr = ptr.as_ptr() as usize;
        let (size, align) = (layout.size().max(1), layout.align());
        if self.slab.contains(addr) {
            // The page source only when pages are to go back, as for the runs below.
            return match self.slab.free_object(addr, size, align) {
                Ok(trim) => {
                    if trim {
                        let mut src = Source {
                            mapper: &mut self.mapper,
                            room: 0,
                            records_base: self.records_base,
                            record_bytes: &mut self.record_bytes,
                        };
                        self.slab.trim(&mut src);
                    }
                    Ok(())
                }
                Err(m) => {
                    self.refused += 1;
                    Err(Misuse::Slab(m))
                }
            };
        }
        if self.runs.contains(addr) {
            // The span source only when a span is to go back (rarely): building it is stores
            // the common free need not make.
            return match self.runs.free_block(addr, size, align) {
                Ok(release) => {
                    if release {
                        let mut src = spans!(self, 0);
                        self.runs.release_surplus(&mut src);
                    }
                    Ok(())
                }
                Err(m) => {
                    self.refused += 1;
                    Err(Misuse::Run(m))
                }
            };
        }
        // SAFETY: the caller's contract, checked as far as the segments can.
        unsafe { self.free_large(ptr, layout) }
    }

    /// # Safety
    /// As [`Self::free`].
    unsafe fn free_large(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), Misuse> {
        let addr = ptr.as_ptr() as usize;
        let Some(i) = self.segs.find(addr) else {
            self.refused += 1;
            return Err(Misuse::Foreign { addr });
        };
        let emptied = {
            let Some(seg) = self.segs.get_mut(i) else {
                unreachable!("find returned a live index")
            };
            if !addr.is_multiple_of(layout.align()) {
                self.refused += 1;
                return Err(Misuse::Misaligned {
                    addr,
                    align: layout.align(),
                });
            }
            if addr.saturating_add(layout.size()) > seg.start + seg.size {
                self.refused += 1;
                return Err(Misuse::PastSegment {
                    addr,
                    size: layout.size(),
                });
            }
            let (table, recs) = self.block_table();
            match table.find(recs, addr, layout.size(), layout.align()) {
                Ok(r) => {
                    table.remove(recs, r);
                }
                Err(m) => {
                    self.refused += 1;
                    return Err(Misuse::Block(m));
                }
            }
            let Some(seg) = self.segs.get_mut(i) else {
                unreachable!("find returned a live index")
            };
            // SAFETY: the record just dropped says a block of exactly this layout starts
            // here, handed out by this segment's list (records lie in their segments) and not
            // freed since; the caller's contract says nothing else uses it now.
            unsafe { seg.payload.deallocate(ptr, layout) };
            seg.payload.used() == 0
        };
        if emptied {
            self.release_surplus_segments();
        }
        self.trim_block_table(BLOCK_TABLE_SPARE);
        Ok(())
    }

    /// Gives back empty segments beyond the policy's reserve (after a free emptied one).
    fn release_surplus_segments(&mut self) {
        while let Some(i) = self.segs.surplus_empty(|l| l.used() == 0) {
            if !self.release_segment(i) {
                break;
            }
        }
    }

    fn release_segment(&mut self, i: usize) -> bool {
        let Some(seg) = self.segs.get(i) else {
            return false;
        };
        if !self.mapper.unmap(seg.start, seg.size) {
            return false;
        }
        self.segs.remove(i);
        self.releases += 1;
        self.hint = 0;
        true
    }

    fn release_empty_segments(&mut self) -> Reclaimed {
        let mut r = Reclaimed::default();
        let mut skip = 0;
        // Walk by index: a release shifts the later segments down.
        while skip < self.segs.len() {
            let found = (skip..self.segs.len())
                .find(|&i| self.segs.get(i).is_some_and(|s| s.payload.used() == 0));
            let Some(i) = found else { break };
            let size = self.segs.get(i).map_or(0, |s| s.size);
            if self.release_segment(i) {
                r.bytes += size;
                skip = i;
            } else {
                r.busy = true;
                skip = i + 1;
            }
        }
        r
    }

    /// Gives back what is empty beyond the idle reserve (memory pressure): every empty
    /// segment but the one small reserve, every empty span but one, every empty slab page but
    /// [`SLAB_RETAIN_LOW`]. The reserve (at most 1 MiB, 1 MiB and 64 KiB) stays so that the next small or medium request, maybe
    /// in an interrupt handler, maps nothing; a request at the limit takes it too
    /// ([`Self::release_all_empty`]).
    pub fn reclaim(&mut self) -> Reclaimed {
        let mut r = Reclaimed::default();
        while let Some(i) = self.segs.surplus_empty(|l| l.used() == 0) {
            let size = self.segs.get(i).map_or(0, |s| s.size);
            if !self.release_segment(i) {
                r.busy = true;
                break;
            }
            r.bytes += size;
        }
        let mut src = Source {
            mapper: &mut self.mapper,
            room: 0,
            records_base: self.records_base,
            record_bytes: &mut self.record_bytes,
        };
        let surplus = (self.slab.stats().empty_pages as usize).saturating_sub(SLAB_RETAIN_LOW);
        let pages = self.slab.release_empty(SLAB_RETAIN_LOW, &mut src);
        r.bytes += pages * PAGE;
        r.busy |= pages < surplus;
        let surplus = (self.runs.stats().empty_spans as usize).saturating_sub(RETAIN_SPANS);
        let mut src = spans!(self, 0);
        let spans = self.runs.release_empty(RETAIN_SPANS, &mut src);
        r.bytes += spans * SPAN_BYTES;
        r.busy |= spans < surplus;
        let t = self.trim_block_table(0);
        r.bytes += t.bytes;
        r.busy |= t.busy;
        r
    }

    /// Gives back every empty segment and every empty slab page, the reserve too (a request
    /// at the limit; the bench's and tests' final figure).
    pub fn release_all_empty(&mut self) -> Reclaimed {
        let mut r = self.release_empty_segments();
        let mut src = Source {
            mapper: &mut self.mapper,
            room: 0,
            records_base: self.records_base,
            record_bytes: &mut self.record_bytes,
        };
        let empty = self.slab.stats().empty_pages as usize;
        let pages = self.slab.release_empty(0, &mut src);
        r.bytes += pages * PAGE;
        r.busy |= pages < empty;
        let empty = self.runs.stats().empty_spans as usize;
        let mut src = spans!(self, 0);
        let spans = self.runs.release_empty(0, &mut src);
        r.bytes += spans * SPAN_BYTES;
        r.busy |= spans < empty;
        let t = self.trim_block_table(0);
        r.bytes += t.bytes;
        r.busy |= t.busy;
        r
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let slab = self.slab.stats();
        let runs = self.runs.stats();
        let seg_used: usize = self.segs.iter().map(|s| s.payload.used()).sum();
        Stats {
            mapped: self.mapped(),
            used: slab.class_bytes as usize + runs.used_pages as usize * PAGE + seg_used,
            limit: self.limit,
            slab,
            runs,
            record_bytes: self.record_bytes,
            segments: self.segs.len(),
            segment_bytes: self.segs.mapped(),
            segment_blocks: self.blocks.len(),
            growths: self.growths + runs.spans_mapped,
            releases: self.releases + runs.spans_released,
            slab_fallbacks: self.slab_fallbacks,
            failures: self.failures,
            refused: self.refused,
        }
    }

    /// Checks the slab layer's, the spans' and the segments' invariants, that every
    /// segment's list covers exactly its segment, and that the block records account for
    /// every byte the lists have handed out (each record inside its segment, their sizes as
    /// linked_list_allocator rounds them adding up to the list's `used`).
    pub fn validate(&self) -> Result<(), &'static str> {
        self.slab.validate()?;
        self.runs.validate()?;
        self.segs.validate()?;
        let recs = self.block_records();
        self.blocks.validate(recs)?;
        let mut recorded = 0;
        for seg in self.segs.iter() {
            let bottom = seg.payload.bottom() as usize;
            let end = seg.start + seg.size;
            if bottom < seg.start || seg.payload.top() as usize != end {
                return Err("a segment's list does not cover its segment");
            }
            let mut used = 0;
            for r in self.blocks.within(recs, seg.start, end) {
                if r.start().saturating_add(r.size()) > end {
                    return Err("a block record runs past its segment");
                }
                let l = Layout::from_size_align(r.size(), r.align())
                    .and_then(HoleList::align_layout)
                    .map_err(|_| "a block record's layout is not valid")?;
                used += l.size();
                recorded += 1;
            }
            if used != seg.payload.used() {
                return Err("a segment's block records do not add up to its list's used bytes");
            }
        }
        if recorded != self.blocks.len() {
            return Err("a block record lies in no segment");
        }
        if self.mapped() > self.limit {
            return Err("more mapped than the limit");
        }
        Ok(())
    }
}
