//! The medium-block heap's policy: blocks of 2 KiB to [`MAX_RUN_BYTES`] as runs of whole
//! pages, carved from 1 MiB spans of their own window, found in O(1) by a two-level
//! segregated free structure (TLSF-like: a bitmap of non-empty size buckets, one free list
//! per bucket), with every record kept outside the blocks. Pure bookkeeping over addresses,
//! like the slabs: the shell (`levitate-heap`) maps the spans and the records through
//! [`SpanSource`] and turns the addresses into pointers.
//!
//! # Design
//!
//! * **Spans**: the window is cut into spans of [`SPAN_PAGES`] pages (1 MiB), each mapped
//!   whole when no free run can serve a request and given back whole when every page of it
//!   is free again (a run never crosses a span's edge, so a wholly free span is one free run
//!   of exactly `SPAN_PAGES`). One empty span is kept as a reserve by default
//!   ([`RunHeap::set_retain`]); [`RunHeap::release_empty`] gives back more under pressure.
//! * **Records outside the blocks**: one [`RunPage`] per page of the window, in chunks of
//!   [`RUN_CHUNK_PAGES`] asked of the source when a span of that chunk is first mapped. A
//!   run's first page's record says free or used and the run's length; its last page's
//!   record (for runs of two pages and more) says the same length, so a free finds both
//!   neighbours in O(1) and merges with the free ones; every other record says "inside a
//!   run". A freed block's bytes never steer the allocator.
//! * **Buckets**: runs of 1 to 16 pages have a bucket each (exact fit for the 4-64 KiB blocks
//!   that make most of this size range), longer ones four buckets per doubling. A request
//!   looks in the first bucket whose every run is long enough, then the next non-empty one
//!   (one `trailing_zeros` on the bitmap), takes its first run and puts the tail back.
//! * **Misuse is refused, never followed**: a free of an address not at a page start, not the
//!   first page of a used run, of a run already free, or with a layout of another length
//!   changes nothing and says which ([`RunMisuse`]).

use super::PAGE;
use core::fmt;

/// Pages per span (the unit mapped and given back).
pub const SPAN_PAGES: usize = 256;
/// Bytes per span.
pub const SPAN_BYTES: usize = SPAN_PAGES * PAGE;
/// The largest block served here (64 pages); larger ones go to the segments.
pub const MAX_RUN_BYTES: usize = 256 << 10;
/// Pages described by one chunk of records (two spans).
pub const RUN_CHUNK_PAGES: usize = 512;
/// Most chunks (so at most 1 GiB of window).
pub const MAX_RUN_CHUNKS: usize = 512;
/// One chunk of records, as the [`SpanSource`] provides it.
pub type RunChunk = [RunPage; RUN_CHUNK_PAGES];
/// Bytes of one record chunk (a whole number of pages).
pub const RUN_CHUNK_BYTES: usize = RUN_CHUNK_PAGES * core::mem::size_of::<RunPage>();
/// Empty spans kept mapped by default.
pub const RETAIN_SPANS: usize = 1;

const MAX_SPANS: usize = MAX_RUN_CHUNKS * RUN_CHUNK_PAGES / SPAN_PAGES;
const NONE: u32 = u32::MAX;
/// Exact buckets for runs of 1..=EXACT pages.
const EXACT: usize = 16;
/// Buckets: EXACT exact ones, then four per doubling from 16 to 256 pages (256 alone in the
/// last).
const NBUCKETS: usize = bucket_of(SPAN_PAGES) + 1;
// One bit per bucket in `nonempty`, and a span's pages within one record chunk.
const _: () = assert!(NBUCKETS <= 64 && RUN_CHUNK_PAGES.is_multiple_of(SPAN_PAGES));

/// What a page's record says.
const INSIDE: u8 = 0;
const FREE: u8 = 1;
const USED: u8 = 2;
const TAIL: u8 = 3;

/// The bucket a free run of `pages` (1..=SPAN_PAGES) is listed in.
#[inline]
const fn bucket_of(pages: usize) -> usize {
    if pages <= EXACT {
        pages - 1
    } else {
        let fl = usize::BITS as usize - 1 - pages.leading_zeros() as usize;
        EXACT + (fl - 4) * 4 + ((pages >> (fl - 2)) & 3)
    }
}

/// The first bucket whose every run holds `pages` (1..=SPAN_PAGES).
#[inline]
const fn search_bucket(pages: usize) -> usize {
    if pages <= EXACT {
        pages - 1
    } else {
        let fl = usize::BITS as usize - 1 - pages.leading_zeros() as usize;
        bucket_of(pages + (1 << (fl - 2)) - 1)
    }
}

/// Maps and unmaps the spans of the run window and provides the record chunks (the shell's
/// side). `'a` is how long the records live: as long as the heap.
pub trait SpanSource<'a> {
    /// Maps `[addr, addr + SPAN_BYTES)` read-write; false (nothing mapped) when no frame is
    /// left or the heap's limit is reached.
    fn map_span(&mut self, addr: usize) -> bool;
    /// Unmaps that span and frees its frames; false (nothing done) when it cannot now.
    fn unmap_span(&mut self, addr: usize) -> bool;
    /// The records for pages `chunk * RUN_CHUNK_PAGES ..` of the window, any contents (they
    /// are overwritten before use); `None` when they cannot be had.
    fn run_records(&mut self, chunk: usize) -> Option<&'a mut RunChunk>;
}

/// One page's record, kept outside the page.
#[derive(Clone, Copy, Debug)]
pub struct RunPage {
    /// Next and previous run on the free list of the run's bucket (first page of a free run).
    next: u32,
    prev: u32,
    /// The run's length in pages (first and last page of a run).
    len: u32,
    /// INSIDE, FREE (first page of a free run), USED (first page of a used run) or TAIL.
    what: u8,
}

impl RunPage {
    /// A page inside a run or in no mapped span.
    pub const INSIDE: RunPage = RunPage {
        next: NONE,
        prev: NONE,
        len: 0,
        what: INSIDE,
    };
}

/// Why an allocation was not served here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunError {
    /// Zero-sized, larger than [`MAX_RUN_BYTES`] or aligned past a page: the segments'.
    NotRun,
    /// No free run fits and no span could be mapped (window used up, limit, frames, records):
    /// the caller may try its segments.
    OutOfSpans,
}

/// A free refused, and why. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMisuse {
    /// Inside the run window but not the first page of a used block.
    NotBlockStart { addr: usize },
    /// The block is already free.
    DoubleFree { addr: usize },
    /// The layout given asks for another number of pages than the block has (or another
    /// alignment than this path serves).
    WrongSize {
        addr: usize,
        size: usize,
        pages: usize,
    },
}

impl fmt::Display for RunMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotBlockStart { addr } => {
                write!(f, "{addr:#x} is not the start of a medium block")
            }
            Self::DoubleFree { addr } => write!(f, "double free of the medium block at {addr:#x}"),
            Self::WrongSize { addr, size, pages } => write!(
                f,
                "free of {addr:#x} with size {size}, but it is a {pages}-page block"
            ),
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Blocks live.
    pub blocks: u64,
    /// Pages in live blocks.
    pub used_pages: u64,
    /// Bytes asked for by the live blocks (the rest of their pages is lost to rounding).
    pub requested_bytes: u64,
    /// Spans mapped now, and of them wholly free.
    pub spans: u64,
    pub empty_spans: u64,
    /// Spans mapped, and given back, since the start.
    pub spans_mapped: u64,
    pub spans_released: u64,
    /// Record chunks taken from the source.
    pub record_chunks: u64,
    /// Frees refused.
    pub refused: u64,
}

/// The run bookkeeping over the window `[base, base + spans * SPAN_BYTES)`.
pub struct RunHeap<'a> {
    base: usize,
    /// Spans in the window.
    spans: u32,
    chunks: [Option<&'a mut RunChunk>; MAX_RUN_CHUNKS],
    /// First free run of each bucket.
    heads: [u32; NBUCKETS],
    /// Bit b set: bucket b's list is not empty.
    nonempty: u64,
    /// Bit s set: span s is mapped.
    mapped: [u64; MAX_SPANS / 64],
    /// Empty spans kept by a free (more go back at once).
    retain: u32,
    stats: RunStats,
}

impl fmt::Debug for RunHeap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHeap")
            .field("base", &self.base)
            .field("spans", &self.spans)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Pages for `size` bytes aligned to `align`, if this path serves it.
#[inline]
pub fn pages_for(size: usize, align: usize) -> Option<usize> {
    if size == 0 || size > MAX_RUN_BYTES || align > PAGE {
        return None;
    }
    Some(size.div_ceil(PAGE))
}

impl<'a> RunHeap<'a> {
    /// Bookkeeping for no window (serves nothing); `const` for a static.
    pub const fn empty() -> Self {
        Self {
            base: 0,
            spans: 0,
            chunks: [const { None }; MAX_RUN_CHUNKS],
            heads: [NONE; NBUCKETS],
            nonempty: 0,
            mapped: [0; MAX_SPANS / 64],
            retain: RETAIN_SPANS as u32,
            stats: RunStats {
                blocks: 0,
                used_pages: 0,
                requested_bytes: 0,
                spans: 0,
                empty_spans: 0,
                spans_mapped: 0,
                spans_released: 0,
                record_chunks: 0,
                refused: 0,
            },
        }
    }

    /// Bookkeeping for `spans` spans at `base` (span aligned, at most the records' reach).
    /// `None` when `base` is not span aligned, the window wraps or is too large.
    pub fn new(base: usize, spans: usize) -> Option<Self> {
        if !base.is_multiple_of(SPAN_BYTES) || spans > MAX_SPANS {
            return None;
        }
        base.checked_add(spans.checked_mul(SPAN_BYTES)?)?;
        let mut h = Self::empty();
        h.base = base;
        h.spans = spans as u32;
        Some(h)
    }

    /// Empty spans a free keeps mapped (more go back at once).
    pub fn set_retain(&mut self, spans: usize) {
        self.retain = spans.min(u32::MAX as usize) as u32;
    }

    /// The counters.
    #[inline]
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// The window's first byte and its length in bytes.
    pub fn window(&self) -> (usize, usize) {
        (self.base, self.spans as usize * SPAN_BYTES)
    }

    /// Whether `addr` lies in this window (its frees come here).
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.spans as usize * SPAN_BYTES
    }

    #[inline(always)]
    fn rec(&self, page: u32) -> &RunPage {
        match &self.chunks[page as usize / RUN_CHUNK_PAGES] {
            Some(chunk) => &chunk[page as usize % RUN_CHUNK_PAGES],
            None => unreachable!("run invariant: every page of a mapped span has a record"),
        }
    }

    #[inline(always)]
    fn rec_mut(&mut self, page: u32) -> &mut RunPage {
        match &mut self.chunks[page as usize / RUN_CHUNK_PAGES] {
            Some(chunk) => &mut chunk[page as usize % RUN_CHUNK_PAGES],
            None => unreachable!("run invariant: every page of a mapped span has a record"),
        }
    }

    #[inline(always)]
    fn page_addr(&self, page: u32) -> usize {
        self.base + page as usize * PAGE
    }

    /// A block of `size` bytes aligned to `align` (at most a page): its address.
    #[inline]
    pub fn alloc<S: SpanSource<'a> + ?Sized>(
        &mut self,
        size: usize,
        align: usize,
        src: &mut S,
    ) -> Result<usize, RunError> {
        let pages = pages_for(size, align).ok_or(RunError::NotRun)?;
        let from = search_bucket(pages);
        let mut fit = self.nonempty & (u64::MAX << from);
        if fit == 0 {
            self.add_span(src)?;
            fit = self.nonempty & (u64::MAX << from);
        }
        let bucket = fit.trailing_zeros() as usize;
        let page = self.heads[bucket];
        self.unlink(page, bucket);
        let len = self.rec(page).len as usize;
        if len == SPAN_PAGES {
            self.stats.empty_spans -= 1;
        }
        if len > pages {
            let rest = page + pages as u32;
            self.set_run(rest, len - pages, FREE);
            self.push(rest, len - pages);
        }
        self.set_run(page, pages, USED);
        self.stats.blocks += 1;
        self.stats.used_pages += pages as u64;
        self.stats.requested_bytes += size as u64;
        Ok(self.page_addr(page))
    }

    /// Frees the block at `addr` allocated with `size` and `align` (any layout of the same
    /// page count is taken). A free that leaves more empty spans than the reserve gives the
    /// surplus back through `src`.
    #[inline]
    pub fn free<S: SpanSource<'a> + ?Sized>(
        &mut self,
        addr: usize,
        size: usize,
        align: usize,
        src: &mut S,
    ) -> Result<(), RunMisuse> {
        if self.free_block(addr, size, align)? {
            self.release_surplus(src);
        }
        Ok(())
    }

    /// [`Self::free`] without the release: `Ok(true)` when the free left more empty spans
    /// than the reserve, and the caller should call [`Self::release_surplus`]. For a caller
    /// that builds its span source only then (the kernel heap: on the common path that saves
    /// the stores of building it, which a free queued behind a user's cache-missing store
    /// pays for).
    #[inline]
    pub fn free_block(
        &mut self,
        addr: usize,
        size: usize,
        align: usize,
    ) -> Result<bool, RunMisuse> {
        match self.free_checked(addr, size, align) {
            Ok(()) => Ok(self.stats.empty_spans > u64::from(self.retain)),
            Err(e) => {
                self.stats.refused += 1;
                Err(e)
            }
        }
    }

    /// Gives the empty spans beyond the reserve back through `src`; how many.
    pub fn release_surplus<S: SpanSource<'a> + ?Sized>(&mut self, src: &mut S) -> usize {
        self.release_empty(self.retain as usize, src)
    }

    fn free_checked(&mut self, addr: usize, size: usize, align: usize) -> Result<(), RunMisuse> {
        let offset = addr.wrapping_sub(self.base);
        if offset >= self.spans as usize * SPAN_BYTES || !offset.is_multiple_of(PAGE) {
            return Err(RunMisuse::NotBlockStart { addr });
        }
        let page = (offset / PAGE) as u32;
        let Some(chunk) = &self.chunks[page as usize / RUN_CHUNK_PAGES] else {
            return Err(RunMisuse::NotBlockStart { addr });
        };
        let r = chunk[page as usize % RUN_CHUNK_PAGES];
        match r.what {
            USED => {}
            FREE => return Err(RunMisuse::DoubleFree { addr }),
            _ => return Err(RunMisuse::NotBlockStart { addr }),
        }
        let pages = r.len as usize;
        if pages_for(size, align) != Some(pages) {
            return Err(RunMisuse::WrongSize { addr, size, pages });
        }
        self.stats.blocks -= 1;
        self.stats.used_pages -= pages as u64;
        self.stats.requested_bytes = self.stats.requested_bytes.saturating_sub(size as u64);
        // Merge with free neighbours inside the span. Every record that stops being a run's
        // first or last page is marked INSIDE; `set_run` then writes the merged run's (the
        // block's own first and last records only when a merge moved them inside: otherwise
        // `set_run` overwrites them anyway).
        let span_first = page & !(SPAN_PAGES as u32 - 1);
        let span_end = span_first + SPAN_PAGES as u32;
        let tail = page + pages as u32 - 1;
        let (mut start, mut len) = (page, pages);
        if page > span_first {
            let left = *self.rec(page - 1);
            let head = if left.what == TAIL {
                page - left.len
            } else {
                page - 1
            };
            let h = *self.rec(head);
            if h.what == FREE {
                let left_len = h.len as usize;
                self.unlink(head, bucket_of(left_len));
                self.rec_mut(page - 1).what = INSIDE;
                start = head;
                len += left_len;
            }
        }
        let right = page + pages as u32;
        if right < span_end {
            let r = *self.rec(right);
            if r.what == FREE {
                let right_len = r.len as usize;
                self.unlink(right, bucket_of(right_len));
                self.rec_mut(right).what = INSIDE;
                len += right_len;
            }
        }
        if start != page {
            self.rec_mut(page).what = INSIDE;
        }
        if tail != start && tail != start + len as u32 - 1 {
            self.rec_mut(tail).what = INSIDE;
        }
        self.set_run(start, len, FREE);
        self.push(start, len);
        if len == SPAN_PAGES {
            self.stats.empty_spans += 1;
        }
        Ok(())
    }

    /// Unmaps empty spans beyond `keep` of them (reclaim under pressure, idle release).
    /// Returns how many spans it unmapped; stops early when the source cannot unmap now.
    pub fn release_empty<S: SpanSource<'a> + ?Sized>(&mut self, keep: usize, src: &mut S) -> usize {
        let whole = bucket_of(SPAN_PAGES);
        let mut released = 0;
        while self.stats.empty_spans as usize > keep {
            let page = self.heads[whole];
            if !src.unmap_span(self.page_addr(page)) {
                break;
            }
            self.unlink(page, whole);
            *self.rec_mut(page) = RunPage::INSIDE;
            *self.rec_mut(page + SPAN_PAGES as u32 - 1) = RunPage::INSIDE;
            let span = page as usize / SPAN_PAGES;
            self.mapped[span / 64] &= !(1 << (span % 64));
            self.stats.spans -= 1;
            self.stats.empty_spans -= 1;
            self.stats.spans_released += 1;
            released += 1;
        }
        released
    }

    /// Maps the lowest unmapped span of the window (taking its record chunk if new) as one
    /// free run.
    fn add_span<S: SpanSource<'a> + ?Sized>(&mut self, src: &mut S) -> Result<(), RunError> {
        let span = self
            .mapped
            .iter()
            .enumerate()
            .find(|(_, &w)| w != u64::MAX)
            .map(|(i, &w)| i * 64 + w.trailing_ones() as usize)
            .filter(|&s| s < self.spans as usize)
            .ok_or(RunError::OutOfSpans)?;
        let page = (span * SPAN_PAGES) as u32;
        // The records first: they stay for the heap's life whatever happens next, so a span
        // that cannot be mapped leaves nothing half done.
        let chunk = span * SPAN_PAGES / RUN_CHUNK_PAGES;
        if self.chunks[chunk].is_none() {
            let records = src.run_records(chunk).ok_or(RunError::OutOfSpans)?;
            *records = [RunPage::INSIDE; RUN_CHUNK_PAGES];
            self.chunks[chunk] = Some(records);
            self.stats.record_chunks += 1;
        }
        if !src.map_span(self.page_addr(page)) {
            return Err(RunError::OutOfSpans);
        }
        self.mapped[span / 64] |= 1 << (span % 64);
        self.set_run(page, SPAN_PAGES, FREE);
        self.push(page, SPAN_PAGES);
        self.stats.spans += 1;
        self.stats.empty_spans += 1;
        self.stats.spans_mapped += 1;
        Ok(())
    }

    /// Writes the first and last page records of the run `[page, page + len)`.
    #[inline(always)]
    fn set_run(&mut self, page: u32, len: usize, what: u8) {
        let r = self.rec_mut(page);
        r.what = what;
        r.len = len as u32;
        if len > 1 {
            let t = self.rec_mut(page + len as u32 - 1);
            t.what = TAIL;
            t.len = len as u32;
        }
    }

    #[inline(always)]
    fn push(&mut self, page: u32, len: usize) {
        let bucket = bucket_of(len);
        let head = self.heads[bucket];
        let r = self.rec_mut(page);
        r.next = head;
        r.prev = NONE;
        if head != NONE {
            self.rec_mut(head).prev = page;
        }
        self.heads[bucket] = page;
        self.nonempty |= 1 << bucket;
    }

    #[inline(always)]
    fn unlink(&mut self, page: u32, bucket: usize) {
        let RunPage { next, prev, .. } = *self.rec(page);
        if prev == NONE {
            self.heads[bucket] = next;
            if next == NONE {
                self.nonempty &= !(1 << bucket);
            }
        } else {
            self.rec_mut(prev).next = next;
        }
        if next != NONE {
            self.rec_mut(next).prev = prev;
        }
    }

    /// Checks every invariant: each mapped span is a sequence of runs whose first and last
    /// records agree and whose other records say INSIDE, no two free runs side by side; each
    /// free run is on its bucket's list exactly once, linked both ways, and the bitmap says
    /// which lists are not empty; unmapped spans' records say INSIDE; the counters match.
    /// Returns the first violation found.
    pub fn validate(&self) -> Result<(), &'static str> {
        let (mut free_runs, mut blocks, mut used, mut spans, mut empty) = (0u64, 0, 0, 0, 0);
        for span in 0..self.spans as usize {
            let first = (span * SPAN_PAGES) as u32;
            let end = first + SPAN_PAGES as u32;
            let is_mapped = self.mapped[span / 64] & (1 << (span % 64)) != 0;
            let Some(_) = &self.chunks[span * SPAN_PAGES / RUN_CHUNK_PAGES] else {
                if is_mapped {
                    return Err("a mapped span has no record chunk");
                }
                continue;
            };
            if !is_mapped {
                if (first..end).any(|p| self.rec(p).what != INSIDE) {
                    return Err("an unmapped span has a run record");
                }
                continue;
            }
            spans += 1;
            let (mut p, mut prev_free) = (first, false);
            while p < end {
                let r = self.rec(p);
                let len = r.len;
                if !matches!(r.what, FREE | USED) || len == 0 || len > end - p {
                    return Err("a span's runs do not tile it");
                }
                if len > 1 {
                    let t = self.rec(p + len - 1);
                    if t.what != TAIL || t.len != len {
                        return Err("a run's last record does not match its first");
                    }
                }
                if (p + 1..p + len.saturating_sub(1)).any(|q| self.rec(q).what != INSIDE) {
                    return Err("a record inside a run says otherwise");
                }
                if r.what == FREE {
                    if prev_free {
                        return Err("two free runs side by side");
                    }
                    free_runs += 1;
                    if len as usize == SPAN_PAGES {
                        empty += 1;
                    }
                } else {
                    blocks += 1;
                    used += u64::from(len);
                }
                prev_free = r.what == FREE;
                p += len;
            }
        }
        let mut listed = 0u64;
        for (bucket, &head) in self.heads.iter().enumerate() {
            if (head != NONE) != (self.nonempty & (1 << bucket) != 0) {
                return Err("the bucket bitmap does not match the lists");
            }
            let (mut page, mut prev, mut steps) = (head, NONE, 0u64);
            while page != NONE {
                steps += 1;
                if !self.contains(self.page_addr(page)) || steps > free_runs {
                    return Err("a free list is broken");
                }
                let r = self.rec(page);
                if r.what != FREE || bucket_of(r.len as usize) != bucket {
                    return Err("a free list holds a run of another bucket or in use");
                }
                if r.prev != prev {
                    return Err("a free list's back link is wrong");
                }
                listed += 1;
                prev = page;
                page = r.next;
            }
        }
        if listed != free_runs {
            return Err("a free run is on no list");
        }
        let s = self.stats;
        if s.spans != spans || s.empty_spans != empty {
            return Err("the span counters do not match the spans");
        }
        if s.blocks != blocks || s.used_pages != used {
            return Err("the block counters do not match the runs");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    const BASE: usize = 0x40_0000_0000;

    /// Spans as a set of addresses, records leaked; may refuse to map or unmap.
    #[derive(Default)]
    struct Src {
        mapped: std::collections::BTreeSet<usize>,
        spans_left: Option<usize>,
        busy: bool,
    }

    impl SpanSource<'static> for Src {
        fn map_span(&mut self, addr: usize) -> bool {
            if self.spans_left == Some(0) {
                return false;
            }
            if let Some(n) = self.spans_left.as_mut() {
                *n -= 1;
            }
            assert!(self.mapped.insert(addr), "span {addr:#x} mapped twice");
            true
        }
        fn unmap_span(&mut self, addr: usize) -> bool {
            if self.busy {
                return false;
            }
            assert!(self.mapped.remove(&addr), "span {addr:#x} not mapped");
            if let Some(n) = self.spans_left.as_mut() {
                *n += 1;
            }
            true
        }
        fn run_records(&mut self, _chunk: usize) -> Option<&'static mut RunChunk> {
            Some(Box::leak(Box::new([RunPage::INSIDE; RUN_CHUNK_PAGES])))
        }
    }

    #[test]
    fn buckets_cover_every_length_in_order() {
        for pages in 1..=SPAN_PAGES {
            let b = bucket_of(pages);
            assert!(b < NBUCKETS);
            assert!(bucket_of(pages.saturating_sub(1).max(1)) <= b);
            // Every run listed at or above the search bucket is long enough.
            let s = search_bucket(pages);
            assert!(s >= b);
            for longer in 1..=SPAN_PAGES {
                if bucket_of(longer) >= s {
                    assert!(longer >= pages, "{longer} in bucket {s}+ serves {pages}");
                }
            }
        }
        assert_eq!(search_bucket(16), bucket_of(16));
        assert!(RUN_CHUNK_BYTES.is_multiple_of(PAGE));
    }

    #[test]
    fn blocks_split_and_merge_back_into_one_span() {
        let mut h = RunHeap::new(BASE, 4).unwrap();
        let mut src = Src::default();
        let a = h.alloc(5000, 8, &mut src).unwrap();
        let b = h.alloc(PAGE, PAGE, &mut src).unwrap();
        let c = h.alloc(64 << 10, 8, &mut src).unwrap();
        assert_eq!((a, b, c), (BASE, BASE + 2 * PAGE, BASE + 3 * PAGE));
        assert_eq!(h.stats().spans, 1);
        assert_eq!(h.stats().used_pages, 19);
        h.validate().unwrap();
        // Free the middle one, then the first (merges right), then the last (merges both).
        h.free(b, PAGE, PAGE, &mut src).unwrap();
        h.validate().unwrap();
        h.free(a, 5000, 8, &mut src).unwrap();
        h.validate().unwrap();
        assert_eq!(
            h.alloc(3 * PAGE, 8, &mut src),
            Ok(BASE),
            "the merged gap reused"
        );
        h.free(BASE, 3 * PAGE, 8, &mut src).unwrap();
        h.free(c, 64 << 10, 8, &mut src).unwrap();
        h.validate().unwrap();
        let s = h.stats();
        assert_eq!((s.spans, s.empty_spans, s.blocks), (1, 1, 0));
    }

    #[test]
    fn misuse_is_refused_and_changes_nothing() {
        let mut h = RunHeap::new(BASE, 4).unwrap();
        let mut src = Src::default();
        let a = h.alloc(3 * PAGE, 8, &mut src).unwrap();
        let before = h.stats();
        assert_eq!(
            h.free(a + 8, 3 * PAGE, 8, &mut src),
            Err(RunMisuse::NotBlockStart { addr: a + 8 })
        );
        assert_eq!(
            h.free(a + PAGE, 2 * PAGE, 8, &mut src),
            Err(RunMisuse::NotBlockStart { addr: a + PAGE })
        );
        assert!(matches!(
            h.free(a, 5 * PAGE, 8, &mut src),
            Err(RunMisuse::WrongSize { pages: 3, .. })
        ));
        assert!(matches!(
            h.free(a, 3 * PAGE, 2 * PAGE, &mut src),
            Err(RunMisuse::WrongSize { .. })
        ));
        // Free space, and a span never mapped.
        assert_eq!(
            h.free(a + 3 * PAGE, PAGE, 8, &mut src),
            Err(RunMisuse::DoubleFree { addr: a + 3 * PAGE })
        );
        assert_eq!(
            h.free(BASE + 3 * SPAN_BYTES, PAGE, 8, &mut src),
            Err(RunMisuse::NotBlockStart {
                addr: BASE + 3 * SPAN_BYTES
            })
        );
        assert_eq!(h.stats().refused, 6);
        assert_eq!(h.stats().blocks, before.blocks);
        h.validate().unwrap();
        h.free(a, 3 * PAGE - 100, 1, &mut src).unwrap();
        assert_eq!(
            h.free(a, 3 * PAGE, 8, &mut src),
            Err(RunMisuse::DoubleFree { addr: a })
        );
        h.validate().unwrap();
        assert_eq!(h.alloc(0, 8, &mut src), Err(RunError::NotRun));
        assert_eq!(
            h.alloc(MAX_RUN_BYTES + 1, 8, &mut src),
            Err(RunError::NotRun)
        );
        assert_eq!(h.alloc(PAGE, 2 * PAGE, &mut src), Err(RunError::NotRun));
    }

    #[test]
    fn empty_spans_go_back_but_the_reserve() {
        let mut h = RunHeap::new(BASE, 8).unwrap();
        let mut src = Src::default();
        let blocks: Vec<usize> = (0..12)
            .map(|_| h.alloc(MAX_RUN_BYTES, 8, &mut src).unwrap())
            .collect();
        assert_eq!(h.stats().spans, 3);
        for b in blocks {
            h.free(b, MAX_RUN_BYTES, 8, &mut src).unwrap();
            h.validate().unwrap();
        }
        assert_eq!((h.stats().spans, h.stats().empty_spans), (1, 1));
        assert_eq!(src.mapped.len(), 1);
        src.busy = true;
        assert_eq!(h.release_empty(0, &mut src), 0);
        src.busy = false;
        assert_eq!(h.release_empty(0, &mut src), 1);
        assert!(src.mapped.is_empty());
        h.validate().unwrap();
        // The window used up, and a source out of frames: a clean refusal.
        let mut src = Src {
            spans_left: Some(1),
            ..Src::default()
        };
        // Five 50-page blocks fill the one span the source allows; a sixth is refused.
        let got: Vec<usize> = (0..6)
            .map_while(|_| h.alloc(200 << 10, 8, &mut src).ok())
            .collect();
        assert_eq!(got.len(), 5);
        assert_eq!(h.alloc(200 << 10, 8, &mut src), Err(RunError::OutOfSpans));
        for a in got {
            h.free(a, 200 << 10, 8, &mut src).unwrap();
        }
        let mut tiny = RunHeap::new(BASE, 0).unwrap();
        assert_eq!(tiny.alloc(PAGE, 8, &mut src), Err(RunError::OutOfSpans));
        h.validate().unwrap();
    }

    /// Random allocations and frees against a model of the live blocks: no overlap, every
    /// block inside a mapped span, `validate` after every step.
    #[test]
    fn random_workload_matches_a_model() {
        let mut h = RunHeap::new(BASE, 16).unwrap();
        let mut src = Src::default();
        let mut live: BTreeMap<usize, usize> = BTreeMap::new();
        let mut order: Vec<(usize, usize)> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if order.len() < 150 && (!x.is_multiple_of(3) || order.is_empty()) {
                let size = match x % 4 {
                    0 => 1 + (x >> 8) as usize % MAX_RUN_BYTES,
                    _ => (4 << 10) + (x >> 8) as usize % (60 << 10),
                };
                let Ok(a) = h.alloc(size, 8, &mut src) else {
                    panic!("step {step}: {size} bytes refused with {:?}", h.stats());
                };
                let bytes = size.div_ceil(PAGE) * PAGE;
                let span = a & !(SPAN_BYTES - 1);
                assert!(src.mapped.contains(&span) && a + bytes <= span + SPAN_BYTES);
                if let Some((&lo, &n)) = live.range(..a).next_back() {
                    assert!(lo + n <= a, "step {step}: overlap");
                }
                if let Some((&hi, _)) = live.range(a..).next() {
                    assert!(a + bytes <= hi, "step {step}: overlap");
                }
                live.insert(a, bytes);
                order.push((a, size));
            } else {
                let (a, size) = order.swap_remove((x >> 32) as usize % order.len());
                live.remove(&a);
                h.free(a, size, 8, &mut src).unwrap();
                // Merged into a free run (or its span given back), it is no block start.
                assert!(
                    matches!(
                        h.free(a, size, 8, &mut src),
                        Err(RunMisuse::DoubleFree { .. } | RunMisuse::NotBlockStart { .. })
                    ),
                    "step {step}: a double free passed"
                );
            }
            h.validate().unwrap_or_else(|e| panic!("step {step}: {e}"));
            assert_eq!(h.stats().spans as usize, src.mapped.len());
        }
        for (a, size) in order {
            h.free(a, size, 8, &mut src).unwrap();
        }
        assert_eq!(h.stats().spans, RETAIN_SPANS as u64);
        h.validate().unwrap();
    }
}
