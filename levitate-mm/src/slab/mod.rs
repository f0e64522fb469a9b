//! The kernel heap's policy, as pure bookkeeping over addresses: the size-class slabs for small
//! objects (this file), page runs in spans for medium blocks up to 256 KiB ([`runs`]), the
//! segments of the large-object heap ([`segments`]) and the records of the blocks in them
//! ([`blocks`]). Nothing here touches the memory it
//! manages (it hands out and takes back addresses), so it stays in this `forbid(unsafe_code)`
//! crate; the `levitate-heap` crate is the thin unsafe shell that turns addresses into
//! pointers, maps pages through [`PageSource`] and [`runs::SpanSource`] and runs
//! linked_list_allocator in the segments for what the slabs and runs decline.
//!
//! # Design
//!
//! * **Classes** 16 B to 2 KiB ([`CLASSES`]), chosen so one page holds a whole number of
//!   objects with little left over; a request takes the smallest class that holds its size and
//!   is a multiple of its alignment (slots sit at multiples of the class size from a page
//!   boundary, so every slot is aligned). The class is found by a table indexed by
//!   `size / 16`; bigger or more aligned requests are declined.
//! * **One page per slab**, described by a [`SlabPage`] record kept outside the page, indexed
//!   by the page's place in the slab window: a freed object's bytes never steer the allocator,
//!   and a free finds its record by address arithmetic, O(1). Records come in chunks of
//!   [`CHUNK_PAGES`] (one chunk per 2 MiB of window), asked of the [`PageSource`] the first
//!   time a page of that chunk is used, so an idle heap costs no records.
//! * **Free slots in a bitmap** per page (256 bits: a page holds at most 256 objects of 16
//!   bytes); allocation takes the lowest free slot; the slot of a free is computed by a
//!   multiplication (no division on the fast path). Pages with a free slot are on their
//!   class's list; a full page leaves it.
//! * **Misuse is refused, never followed**: a free of an address outside a slab, not at a slot
//!   start, of a slot already free, or with a size of another class changes nothing and says
//!   which ([`SlabMisuse`]).
//! * **Empty pages** stay mapped for reuse by any class up to a retained reserve; a free that
//!   leaves more than [`SlabHeap::set_retain`]'s high mark empty unmaps them down to its low
//!   mark, and [`SlabHeap::release_empty`] (reclaim under pressure) down to any number.

pub mod blocks;
pub mod runs;
pub mod segments;
#[cfg(test)]
mod tests;

use core::fmt;

/// Bytes per slab page.
pub const PAGE: usize = 4096;
/// The size classes, in bytes: steps of 16 to 128, then four per doubling to 512, then sizes
/// that fill a page (6 x 640, 5 x 816, 4 x 1024, 3 x 1360, 2 x 2048).
pub const CLASSES: [usize; 21] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 816, 1024, 1360,
    2048,
];
/// The largest size served here.
pub const MAX_SMALL: usize = 2048;
/// Pages described by one chunk of records.
pub const CHUNK_PAGES: usize = 512;
/// Most chunks (so at most 1 GiB of slab pages).
pub const MAX_CHUNKS: usize = 512;
/// One chunk of records, as the [`PageSource`] provides it.
pub type RecordChunk = [SlabPage; CHUNK_PAGES];
/// Bytes of one record chunk (a whole number of pages).
pub const CHUNK_BYTES: usize = CHUNK_PAGES * core::mem::size_of::<SlabPage>();

/// Most empty pages one free unmaps when it finds more empty than the retained reserve.
pub const TRIM_BATCH: usize = 4;
const NONE: u32 = u32::MAX;
const WORDS: usize = PAGE / 16 / 64;
const NCLASSES: usize = CLASSES.len();

/// The class for a size rounded up to 16, by `size.div_ceil(16)` (entry 0 unused).
const CLASS_OF: [u8; MAX_SMALL / 16 + 1] = {
    let mut t = [0u8; MAX_SMALL / 16 + 1];
    let (mut i, mut c) = (1, 0);
    while i < t.len() {
        while CLASSES[c] < i * 16 {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// Slots per page of each class.
const SLOTS: [u16; NCLASSES] = {
    let mut t = [0u16; NCLASSES];
    let mut c = 0;
    while c < NCLASSES {
        t[c] = (PAGE / CLASSES[c]) as u16;
        c += 1;
    }
    t
};

/// `ceil(2^32 / class)`: `(offset * RECIP[c]) >> 32 == offset / CLASSES[c]` exactly for every
/// offset below 2^20 (the rounding error times the offset stays below 2^32), so a free divides
/// by multiplying.
const RECIP: [u64; NCLASSES] = {
    let mut t = [0u64; NCLASSES];
    let mut c = 0;
    while c < NCLASSES {
        t[c] = (1u64 << 32).div_ceil(CLASSES[c] as u64);
        c += 1;
    }
    t
};

/// The initial free bitmap of a page of each class.
const FULL_BITMAP: [[u64; WORDS]; NCLASSES] = {
    let mut t = [[0u64; WORDS]; NCLASSES];
    let mut c = 0;
    while c < NCLASSES {
        let slots = PAGE / CLASSES[c];
        let mut w = 0;
        while w < WORDS {
            let have = slots.saturating_sub(w * 64);
            t[c][w] = if have >= 64 {
                u64::MAX
            } else {
                (1u64 << have) - 1
            };
            w += 1;
        }
        c += 1;
    }
    t
};

/// Maps and unmaps the pages of the slab window and provides the record chunks (the shell's
/// side). `'a` is how long the records live: as long as the heap.
pub trait PageSource<'a> {
    /// Maps the page at `addr` (read-write); false when no frame is left or the heap's limit
    /// is reached.
    fn map(&mut self, addr: usize) -> bool;
    /// Unmaps the page at `addr` and frees its frame; false (nothing done) when it cannot now
    /// (the kernel's page tables are busy): the page stays mapped and empty.
    fn unmap(&mut self, addr: usize) -> bool;
    /// The records for pages `chunk * CHUNK_PAGES ..` of the window, any contents (they are
    /// overwritten before use); `None` when they cannot be had.
    fn records(&mut self, chunk: usize) -> Option<&'a mut RecordChunk>;
}

/// What a page of the window is doing.
const UNMAPPED: u8 = 0;
const EMPTY: u8 = 1;
const SLAB: u8 = 2;

/// One page's record, kept outside the page.
#[derive(Clone, Copy, Debug)]
pub struct SlabPage {
    /// Free slots (bit set = free).
    free: [u64; WORDS],
    /// Next and previous page on the list the page is on (its class's partial list, the
    /// empty list or the unmapped stack); [`NONE`] ends it.
    next: u32,
    prev: u32,
    /// Slots in use.
    used: u16,
    /// Its class, when a slab.
    class: u8,
    /// UNMAPPED, EMPTY or SLAB.
    what: u8,
}

impl SlabPage {
    /// An unmapped page.
    pub const UNMAPPED: SlabPage = SlabPage {
        free: [0; WORDS],
        next: NONE,
        prev: NONE,
        used: 0,
        class: 0,
        what: UNMAPPED,
    };
}

/// Why an allocation was not served here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// Larger than [`MAX_SMALL`], aligned beyond its class, or zero-sized: the large path's.
    NotSmall,
    /// No empty page and the source could not map one (or the window is used up, or its
    /// records could not be had): the caller may try its large path.
    OutOfPages,
}

/// A free refused, and why. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabMisuse {
    /// The address is in no slab page of this heap.
    NotSlab { addr: usize },
    /// Inside a slab but not at the start of a slot.
    NotSlotStart { addr: usize, class: usize },
    /// The slot is already free.
    DoubleFree { addr: usize, class: usize },
    /// The size given belongs to another class than the slab's.
    WrongSize {
        addr: usize,
        size: usize,
        class: usize,
    },
}

impl fmt::Display for SlabMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotSlab { addr } => write!(f, "{addr:#x} is in no slab of the heap"),
            Self::NotSlotStart { addr, class } => {
                write!(f, "{addr:#x} is not the start of a {class}-byte object")
            }
            Self::DoubleFree { addr, class } => {
                write!(f, "double free of the {class}-byte object at {addr:#x}")
            }
            Self::WrongSize { addr, size, class } => write!(
                f,
                "free of {addr:#x} with size {size}, but it is a {class}-byte object"
            ),
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabStats {
    /// Objects live.
    pub objects: u64,
    /// Bytes asked for by the live objects.
    pub requested_bytes: u64,
    /// Bytes of their classes (the difference is lost to rounding).
    pub class_bytes: u64,
    /// Pages serving a class.
    pub slab_pages: u64,
    /// Pages mapped and empty.
    pub empty_pages: u64,
    /// Record chunks taken from the source.
    pub record_chunks: u64,
    /// Pages unmapped again (idle trimming and reclaim).
    pub released_pages: u64,
    /// Frees refused.
    pub refused: u64,
}

impl SlabStats {
    /// Pages mapped (serving a class or empty).
    pub fn mapped_pages(&self) -> u64 {
        self.slab_pages + self.empty_pages
    }
}

/// The slab bookkeeping over the window `[base, base + pages * PAGE)`.
pub struct SlabHeap<'a> {
    base: usize,
    /// Pages in the window.
    pages: u32,
    /// Pages `[0, fresh)` have records and were mapped at least once.
    fresh: u32,
    chunks: [Option<&'a mut RecordChunk>; MAX_CHUNKS],
    partial: [u32; NCLASSES],
    empty: u32,
    /// Pages unmapped again, a stack through `next`.
    unmapped: u32,
    /// A free that leaves more than `retain_high` pages empty unmaps a few, never below
    /// `retain_low` (by default never: until [`Self::set_retain`], only `release_empty`
    /// unmaps).
    retain_low: u32,
    retain_high: u32,
    stats: SlabStats,
}

impl fmt::Debug for SlabHeap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabHeap")
            .field("base", &self.base)
            .field("pages", &self.pages)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The class index for `size` bytes aligned to `align`, if small.
#[inline]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    if size == 0 || size > MAX_SMALL {
        return None;
    }
    let mut class = usize::from(CLASS_OF[size.div_ceil(16)]);
    if align > 16 {
        // Every class is a multiple of 16; larger alignments take the first class that is a
        // multiple of theirs (none for alignments past 2 KiB or not a power of two).
        while !CLASSES[class].is_multiple_of(align) {
            class += 1;
            if class == NCLASSES {
                return None;
            }
        }
    }
    Some(class)
}

impl<'a> SlabHeap<'a> {
    /// Bookkeeping for no window at all (serves nothing until `init`); `const` so a
    /// kernel can keep the heap in a static.
    pub const fn empty() -> Self {
        Self {
            base: 0,
            pages: 0,
            fresh: 0,
            chunks: [const { None }; MAX_CHUNKS],
            partial: [NONE; NCLASSES],
            empty: NONE,
            unmapped: NONE,
            retain_low: 0,
            retain_high: u32::MAX,
            stats: SlabStats {
                objects: 0,
                requested_bytes: 0,
                class_bytes: 0,
                slab_pages: 0,
                empty_pages: 0,
                record_chunks: 0,
                released_pages: 0,
                refused: 0,
            },
        }
    }

    /// Bookkeeping for the page-aligned window of `pages` pages at `base` (at most
    /// `MAX_CHUNKS * CHUNK_PAGES`). `None` when `base` is not page aligned, the window wraps or
    /// is too large.
    pub fn new(base: usize, pages: usize) -> Option<Self> {
        let mut h = Self::empty();
        if !base.is_multiple_of(PAGE) || pages > MAX_CHUNKS * CHUNK_PAGES {
            return None;
        }
        base.checked_add(pages.checked_mul(PAGE)?)?;
        h.base = base;
        h.pages = pages as u32;
        Some(h)
    }

    /// Empty pages kept mapped for reuse: a free that leaves more than `high` of them unmaps
    /// up to [`TRIM_BATCH`] of them, never below `low` (0, 0: every empty page goes back at
    /// once).
    pub fn set_retain(&mut self, low: usize, high: usize) {
        self.retain_low = low.min(u32::MAX as usize) as u32;
        self.retain_high = high.max(low).min(u32::MAX as usize) as u32;
    }

    /// The counters.
    #[inline]
    pub fn stats(&self) -> SlabStats {
        self.stats
    }

    /// The window's first byte and its length in bytes.
    pub fn window(&self) -> (usize, usize) {
        (self.base, self.pages as usize * PAGE)
    }

    /// Whether `addr` lies in this heap's window (its frees come here).
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.pages as usize * PAGE
    }

    #[inline]
    fn rec(&self, page: u32) -> &SlabPage {
        match &self.chunks[page as usize / CHUNK_PAGES] {
            Some(chunk) => &chunk[page as usize % CHUNK_PAGES],
            None => unreachable!("slab invariant: every page below `fresh` has a record"),
        }
    }

    #[inline]
    fn rec_mut(&mut self, page: u32) -> &mut SlabPage {
        match &mut self.chunks[page as usize / CHUNK_PAGES] {
            Some(chunk) => &mut chunk[page as usize % CHUNK_PAGES],
            None => unreachable!("slab invariant: every page below `fresh` has a record"),
        }
    }

    #[inline]
    fn page_addr(&self, page: u32) -> usize {
        self.base + page as usize * PAGE
    }

    /// An object of `size` bytes aligned to `align`: its address.
    #[inline]
    pub fn alloc<S: PageSource<'a> + ?Sized>(
        &mut self,
        size: usize,
        align: usize,
        src: &mut S,
    ) -> Result<usize, SlabError> {
        let class = class_for(size, align).ok_or(SlabError::NotSmall)?;
        let mut page = self.partial[class];
        if page == NONE {
            page = self.new_slab(class, src)?;
        }
        let p = self.rec_mut(page);
        let Some(word) = p.free.iter().position(|&w| w != 0) else {
            // A page on a partial list always has a free slot (`validate` checks it).
            unreachable!("slab bookkeeping invariant: a partial page has a free slot")
        };
        let bit = p.free[word].trailing_zeros() as usize;
        p.free[word] &= !(1 << bit);
        p.used += 1;
        let full = p.used == SLOTS[class];
        if full {
            self.unlink(page, class);
        }
        let size_class = CLASSES[class];
        self.stats.objects += 1;
        self.stats.requested_bytes += size as u64;
        self.stats.class_bytes += size_class as u64;
        Ok(self.page_addr(page) + (word * 64 + bit) * size_class)
    }

    /// Frees the object at `addr` allocated with `size` and `align` (the layout given to
    /// [`Self::alloc`]; another layout of the same class is taken too). A free that leaves
    /// more empty pages than the retained reserve unmaps the surplus through `src`.
    #[inline]
    pub fn free<S: PageSource<'a> + ?Sized>(
        &mut self,
        addr: usize,
        size: usize,
        align: usize,
        src: &mut S,
    ) -> Result<(), SlabMisuse> {
        if self.free_object(addr, size, align)? {
            self.trim(src);
        }
        Ok(())
    }

    /// [`Self::free`] without the trim: `Ok(true)` when the free left more empty pages than
    /// the high mark and the caller should call [`Self::trim`]. For a caller that builds its
    /// page source only then (the kernel heap: the common free makes no stores for it).
    #[inline]
    pub fn free_object(
        &mut self,
        addr: usize,
        size: usize,
        align: usize,
    ) -> Result<bool, SlabMisuse> {
        match self.free_checked(addr, size, align) {
            Ok(()) => Ok(self.stats.empty_pages > u64::from(self.retain_high)),
            Err(e) => {
                self.stats.refused += 1;
                Err(e)
            }
        }
    }

    /// Gives back empty pages above the low mark, a few per call, not the whole surplus at
    /// once: each unmap is a page-table edit and a TLB invalidation in the kernel, done with
    /// the heap lock held and interrupts masked.
    pub fn trim<S: PageSource<'a> + ?Sized>(&mut self, src: &mut S) {
        let keep = (self.stats.empty_pages as usize)
            .saturating_sub(TRIM_BATCH)
            .max(self.retain_low as usize);
        self.release_empty(keep, src);
    }

    fn free_checked(&mut self, addr: usize, size: usize, align: usize) -> Result<(), SlabMisuse> {
        let offset = addr.wrapping_sub(self.base);
        let page = offset / PAGE;
        if page >= self.fresh as usize {
            return Err(SlabMisuse::NotSlab { addr });
        }
        let page = page as u32;
        let p = self.rec(page);
        if p.what != SLAB {
            return Err(SlabMisuse::NotSlab { addr });
        }
        let class = usize::from(p.class);
        let size_class = CLASSES[class];
        let in_page = offset % PAGE;
        let slot = ((in_page as u64 * RECIP[class]) >> 32) as usize;
        if slot * size_class != in_page || slot >= usize::from(SLOTS[class]) {
            return Err(SlabMisuse::NotSlotStart {
                addr,
                class: size_class,
            });
        }
        // A layout that would have taken another class: a wrong size.
        if class_for(size, align) != Some(class) {
            return Err(SlabMisuse::WrongSize {
                addr,
                size,
                class: size_class,
            });
        }
        let (word, bit) = (slot / 64, slot % 64);
        if p.free[word] & (1 << bit) != 0 {
            return Err(SlabMisuse::DoubleFree {
                addr,
                class: size_class,
            });
        }
        let p = self.rec_mut(page);
        let was_full = p.used == SLOTS[class];
        p.free[word] |= 1 << bit;
        p.used -= 1;
        let now_empty = p.used == 0;
        self.stats.objects -= 1;
        self.stats.class_bytes -= size_class as u64;
        self.stats.requested_bytes = self.stats.requested_bytes.saturating_sub(size as u64);
        if now_empty {
            if !was_full {
                self.unlink(page, class);
            }
            self.rec_mut(page).what = EMPTY;
            self.push_empty(page);
            self.stats.slab_pages -= 1;
        } else if was_full {
            self.push_partial(page, class);
        }
        Ok(())
    }

    /// Unmaps empty pages beyond `keep` of them (reclaim under pressure, idle trimming).
    /// Returns how many pages it unmapped; stops early when the source cannot unmap now.
    pub fn release_empty<S: PageSource<'a> + ?Sized>(&mut self, keep: usize, src: &mut S) -> usize {
        let mut released = 0;
        while self.stats.empty_pages as usize > keep {
            let page = self.empty;
            if !src.unmap(self.page_addr(page)) {
                break;
            }
            self.pop_empty();
            let unmapped = self.unmapped;
            let p = self.rec_mut(page);
            *p = SlabPage::UNMAPPED;
            p.next = unmapped;
            self.unmapped = page;
            self.stats.released_pages += 1;
            released += 1;
        }
        released
    }

    fn pop_empty(&mut self) -> u32 {
        let page = self.empty;
        self.empty = self.rec(page).next;
        if self.empty != NONE {
            let head = self.empty;
            self.rec_mut(head).prev = NONE;
        }
        self.stats.empty_pages -= 1;
        page
    }

    /// A page made a slab of `class`, on its partial list: an empty page if any, else an
    /// unmapped one mapped again, else a fresh one (taking its records chunk if new).
    fn new_slab<S: PageSource<'a> + ?Sized>(
        &mut self,
        class: usize,
        src: &mut S,
    ) -> Result<u32, SlabError> {
        let page = if self.empty != NONE {
            self.pop_empty()
        } else if self.unmapped != NONE {
            let page = self.unmapped;
            if !src.map(self.page_addr(page)) {
                return Err(SlabError::OutOfPages);
            }
            self.unmapped = self.rec(page).next;
            page
        } else {
            let page = self.fresh;
            if page >= self.pages {
                return Err(SlabError::OutOfPages);
            }
            let chunk = page as usize / CHUNK_PAGES;
            if self.chunks[chunk].is_none() {
                let records = src.records(chunk).ok_or(SlabError::OutOfPages)?;
                *records = [SlabPage::UNMAPPED; CHUNK_PAGES];
                self.chunks[chunk] = Some(records);
                self.stats.record_chunks += 1;
            }
            if !src.map(self.page_addr(page)) {
                return Err(SlabError::OutOfPages);
            }
            self.fresh += 1;
            page
        };
        let p = self.rec_mut(page);
        p.free = FULL_BITMAP[class];
        p.used = 0;
        p.class = class as u8;
        p.what = SLAB;
        self.stats.slab_pages += 1;
        self.push_partial(page, class);
        Ok(page)
    }

    fn push_partial(&mut self, page: u32, class: usize) {
        let head = self.partial[class];
        let p = self.rec_mut(page);
        p.next = head;
        p.prev = NONE;
        if head != NONE {
            self.rec_mut(head).prev = page;
        }
        self.partial[class] = page;
    }

    fn push_empty(&mut self, page: u32) {
        let head = self.empty;
        let p = self.rec_mut(page);
        p.next = head;
        p.prev = NONE;
        if head != NONE {
            self.rec_mut(head).prev = page;
        }
        self.empty = page;
        self.stats.empty_pages += 1;
    }

    fn unlink(&mut self, page: u32, class: usize) {
        let SlabPage { next, prev, .. } = *self.rec(page);
        if prev == NONE {
            self.partial[class] = next;
        } else {
            self.rec_mut(prev).next = next;
        }
        if next != NONE {
            self.rec_mut(next).prev = prev;
        }
        let p = self.rec_mut(page);
        p.next = NONE;
        p.prev = NONE;
    }

    /// Checks every invariant: each partial list holds exactly the slabs of its class that
    /// have a free slot, linked both ways; the empty list the empty pages; the unmapped stack
    /// the unmapped pages; used counts match the bitmaps; the counters match the pages.
    /// Returns the first violation found.
    pub fn validate(&self) -> Result<(), &'static str> {
        let n = self.fresh;
        for c in 0..(n as usize).div_ceil(CHUNK_PAGES) {
            if self.chunks[c].is_none() {
                return Err("a page in use has no record chunk");
            }
        }
        let mut listed = 0usize;
        for (class, &head) in self.partial.iter().enumerate() {
            let (mut page, mut prev, mut steps) = (head, NONE, 0);
            while page != NONE {
                steps += 1;
                if page >= n || steps > n {
                    return Err("a partial list is broken");
                }
                let p = self.rec(page);
                if p.prev != prev {
                    return Err("a partial list's back link is wrong");
                }
                if p.what != SLAB || usize::from(p.class) != class {
                    return Err("a partial list holds a page of another class");
                }
                if p.used == 0 || p.used == SLOTS[class] {
                    return Err("a partial list holds an empty or full page");
                }
                listed += 1;
                prev = page;
                page = p.next;
            }
        }
        let (mut slabs, mut partial, mut objects, mut class_bytes) = (0u64, 0usize, 0u64, 0u64);
        let (mut empties_seen, mut unmapped_seen) = (0u64, 0u32);
        for page in 0..n {
            let p = self.rec(page);
            match p.what {
                SLAB => {
                    let class = usize::from(p.class);
                    if class >= NCLASSES {
                        return Err("a slab of no class");
                    }
                    let free: u32 = p.free.iter().map(|w| w.count_ones()).sum();
                    if p.free
                        .iter()
                        .zip(FULL_BITMAP[class])
                        .any(|(w, f)| w & !f != 0)
                    {
                        return Err("a slab's bitmap marks slots past its end");
                    }
                    if free + u32::from(p.used) != u32::from(SLOTS[class]) {
                        return Err("a slab's used count does not match its bitmap");
                    }
                    slabs += 1;
                    objects += u64::from(p.used);
                    class_bytes += u64::from(p.used) * CLASSES[class] as u64;
                    if free > 0 {
                        partial += 1;
                    }
                }
                EMPTY => empties_seen += 1,
                _ => unmapped_seen += 1,
            }
        }
        if partial != listed {
            return Err("a slab with a free slot is on no partial list");
        }
        let (mut page, mut empties) = (self.empty, 0u64);
        while page != NONE {
            empties += 1;
            if page >= n || empties > u64::from(n) {
                return Err("the empty list is broken");
            }
            if self.rec(page).what != EMPTY {
                return Err("the empty list holds a page in use");
            }
            page = self.rec(page).next;
        }
        let (mut page, mut unmapped) = (self.unmapped, 0u32);
        while page != NONE {
            unmapped += 1;
            if page >= n || unmapped > n {
                return Err("the unmapped stack is broken");
            }
            if self.rec(page).what != UNMAPPED {
                return Err("the unmapped stack holds a mapped page");
            }
            page = self.rec(page).next;
        }
        if empties != empties_seen || unmapped != unmapped_seen {
            return Err("a page is on no list");
        }
        let s = self.stats;
        if slabs != s.slab_pages || empties != s.empty_pages {
            return Err("the page counters do not match the pages");
        }
        if objects != s.objects || class_bytes != s.class_bytes {
            return Err("the object counters do not match the slabs");
        }
        Ok(())
    }
}
