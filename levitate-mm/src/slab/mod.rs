//! A size-class heap for small objects, as pure bookkeeping over a range of virtual pages:
//! which page serves which size class, which slots of it are free, which pages are mapped but
//! empty. It never touches the memory it manages (it hands out and takes back addresses), so
//! it stays in this `forbid(unsafe_code)` crate; a thin adapter (the kernel's heap, or the
//! bench's) turns addresses into pointers, maps pages through [`PageSource`], and sends
//! requests this layer declines ([`SlabError::NotSmall`]) to its large-object heap.
//!
//! # Design
//!
//! * **Classes** 16 to 512 bytes ([`CLASSES`]); a request takes the smallest class that holds
//!   its size and is a multiple of its alignment (so every slot is aligned: slots sit at
//!   multiples of the class size from a page boundary). Bigger or more aligned requests are
//!   declined.
//! * **One page per slab**, described by a [`SlabPage`] kept outside the page (indexed by the
//!   page's place in the range): a freed object's bytes never steer the allocator, and a free
//!   finds its page by arithmetic, O(1).
//! * **Free slots in a bitmap** per page (256 bits: a 4 KiB page holds at most 256 objects of
//!   16 bytes); allocation takes the lowest free slot. Pages with a free slot are on their
//!   class's list; a full page leaves it.
//! * **Misuse is refused, never followed**: a free of an address outside a slab, not at a slot
//!   start, of a slot already free, or with a size of another class changes nothing and says
//!   which ([`SlabMisuse`]).
//! * **Empty pages** stay mapped for reuse by any class, up to [`SlabHeap::release_empty`],
//!   which unmaps them (the kernel's reclaim gives their frames back).

#[cfg(test)]
mod tests;

use core::fmt;

/// Bytes per slab page.
pub const PAGE: usize = 4096;
/// The size classes, in bytes.
pub const CLASSES: [usize; 10] = [16, 32, 48, 64, 96, 128, 192, 256, 384, 512];
/// The largest size served here.
pub const MAX_SMALL: usize = 512;
const NONE: u32 = u32::MAX;
const WORDS: usize = PAGE / 16 / 64;

/// Maps and unmaps the pages of the heap's range (the adapter's side).
pub trait PageSource {
    /// Maps the page at `addr` (read-write); false when no frame is left.
    fn map(&mut self, addr: usize) -> bool;
    /// Unmaps the page at `addr` and frees its frame.
    fn unmap(&mut self, addr: usize);
}

/// What a page of the range is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// Never mapped, or unmapped by `release_empty`.
    Unmapped,
    /// Mapped, serving no class (on the empty list).
    Empty,
    /// A slab of class `CLASSES[class]`.
    Slab { class: u8 },
}

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
    what: Use,
}

impl SlabPage {
    /// An unmapped page: the state a record array starts in.
    pub const UNMAPPED: SlabPage = SlabPage {
        free: [0; WORDS],
        next: NONE,
        prev: NONE,
        used: 0,
        what: Use::Unmapped,
    };
}

/// Why an allocation was not served here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// Larger than [`MAX_SMALL`], aligned beyond its class, or zero-sized: the large path's.
    NotSmall,
    /// No empty page and the source could not map one (or the range is used up).
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
    /// Frees refused.
    pub refused: u64,
}

/// The heap's bookkeeping over `[base, base + pages.len() * PAGE)`.
pub struct SlabHeap<'a> {
    base: usize,
    pages: &'a mut [SlabPage],
    partial: [u32; CLASSES.len()],
    empty: u32,
    unmapped: u32,
    stats: SlabStats,
}

impl fmt::Debug for SlabHeap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabHeap")
            .field("base", &self.base)
            .field("pages", &self.pages.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The class index for `size` bytes aligned to `align`, if small.
#[inline]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    if size == 0 || size > MAX_SMALL || align > MAX_SMALL {
        return None;
    }
    // Classes step by 16 up to 64, then by powers of two with a midpoint: a short scan.
    CLASSES
        .iter()
        .position(|&c| c >= size && c.is_multiple_of(align))
}

impl<'a> SlabHeap<'a> {
    /// Bookkeeping for the page-aligned range at `base`, one record per page (all unmapped;
    /// their contents are overwritten). `None` when `base` is not page aligned, the range
    /// wraps, or it has more than `u32::MAX - 1` pages.
    pub fn new(base: usize, pages: &'a mut [SlabPage]) -> Option<Self> {
        let n = pages.len();
        if !base.is_multiple_of(PAGE) || n >= NONE as usize {
            return None;
        }
        base.checked_add(n.checked_mul(PAGE)?)?;
        // The unmapped stack: lowest page on top, so the heap grows upward.
        for (i, p) in pages.iter_mut().enumerate() {
            *p = SlabPage::UNMAPPED;
            p.next = if i + 1 < n { (i + 1) as u32 } else { NONE };
        }
        Some(Self {
            base,
            pages,
            partial: [NONE; CLASSES.len()],
            empty: NONE,
            unmapped: if n > 0 { 0 } else { NONE },
            stats: SlabStats::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> SlabStats {
        self.stats
    }

    /// Whether `addr` lies in this heap's range (its frees come here).
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.pages.len() * PAGE
    }

    /// An object of `size` bytes aligned to `align`: its address.
    #[inline]
    pub fn alloc<S: PageSource + ?Sized>(
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
        let p = &mut self.pages[page as usize];
        let word = p.free.iter().position(|&w| w != 0);
        let Some(word) = word else {
            // A page on a partial list always has a free slot (`validate` checks it).
            unreachable!("slab bookkeeping invariant: a partial page has a free slot")
        };
        let bit = p.free[word].trailing_zeros() as usize;
        p.free[word] &= !(1 << bit);
        p.used += 1;
        let full = p.free.iter().all(|&w| w == 0);
        if full {
            self.unlink(page, class);
        }
        let size_class = CLASSES[class];
        self.stats.objects += 1;
        self.stats.requested_bytes += size as u64;
        self.stats.class_bytes += size_class as u64;
        Ok(self.base + page as usize * PAGE + (word * 64 + bit) * size_class)
    }

    /// Frees the object at `addr` allocated with `size` and `align` (the layout given to
    /// [`Self::alloc`]; another layout of the same class is taken too).
    #[inline]
    pub fn free(&mut self, addr: usize, size: usize, align: usize) -> Result<(), SlabMisuse> {
        let r = self.free_checked(addr, size, align);
        if r.is_err() {
            self.stats.refused += 1;
        }
        r
    }

    fn free_checked(&mut self, addr: usize, size: usize, align: usize) -> Result<(), SlabMisuse> {
        if !self.contains(addr) {
            return Err(SlabMisuse::NotSlab { addr });
        }
        let offset = addr - self.base;
        let page = (offset / PAGE) as u32;
        let Use::Slab { class } = self.pages[page as usize].what else {
            return Err(SlabMisuse::NotSlab { addr });
        };
        let class = usize::from(class);
        let size_class = CLASSES[class];
        let in_page = offset % PAGE;
        let slot = in_page / size_class;
        if !in_page.is_multiple_of(size_class) || slot >= PAGE / size_class {
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
        let p = &mut self.pages[page as usize];
        let (word, bit) = (slot / 64, slot % 64);
        if p.free[word] & (1 << bit) != 0 {
            return Err(SlabMisuse::DoubleFree {
                addr,
                class: size_class,
            });
        }
        let was_full = p.free.iter().all(|&w| w == 0);
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
            self.pages[page as usize].what = Use::Empty;
            self.push_empty(page);
            self.stats.slab_pages -= 1;
        } else if was_full {
            self.push_partial(page, class);
        }
        Ok(())
    }

    /// Unmaps empty pages beyond `keep` of them (the kernel's reclaim, or idle trimming).
    /// Returns how many pages it unmapped.
    pub fn release_empty<S: PageSource + ?Sized>(&mut self, keep: usize, src: &mut S) -> usize {
        let mut released = 0;
        while self.stats.empty_pages as usize > keep {
            let page = self.empty;
            self.empty = self.pages[page as usize].next;
            if self.empty != NONE {
                self.pages[self.empty as usize].prev = NONE;
            }
            self.stats.empty_pages -= 1;
            src.unmap(self.base + page as usize * PAGE);
            let p = &mut self.pages[page as usize];
            *p = SlabPage::UNMAPPED;
            p.next = self.unmapped;
            self.unmapped = page;
            released += 1;
        }
        released
    }

    /// A page made a slab of `class`, on its partial list: an empty page if any, else a
    /// freshly mapped one.
    fn new_slab<S: PageSource + ?Sized>(
        &mut self,
        class: usize,
        src: &mut S,
    ) -> Result<u32, SlabError> {
        let page = if self.empty != NONE {
            let page = self.empty;
            self.empty = self.pages[page as usize].next;
            if self.empty != NONE {
                self.pages[self.empty as usize].prev = NONE;
            }
            self.stats.empty_pages -= 1;
            page
        } else {
            let page = self.unmapped;
            if page == NONE || !src.map(self.base + page as usize * PAGE) {
                return Err(SlabError::OutOfPages);
            }
            self.unmapped = self.pages[page as usize].next;
            page
        };
        let slots = PAGE / CLASSES[class];
        let p = &mut self.pages[page as usize];
        p.free = [0; WORDS];
        for (w, word) in p.free.iter_mut().enumerate() {
            let have = slots.saturating_sub(w * 64).min(64);
            *word = if have == 64 {
                u64::MAX
            } else {
                (1u64 << have) - 1
            };
        }
        p.used = 0;
        p.what = Use::Slab { class: class as u8 };
        self.stats.slab_pages += 1;
        self.push_partial(page, class);
        Ok(page)
    }

    fn push_partial(&mut self, page: u32, class: usize) {
        let head = self.partial[class];
        let p = &mut self.pages[page as usize];
        p.next = head;
        p.prev = NONE;
        if head != NONE {
            self.pages[head as usize].prev = page;
        }
        self.partial[class] = page;
    }

    fn push_empty(&mut self, page: u32) {
        let head = self.empty;
        let p = &mut self.pages[page as usize];
        p.next = head;
        p.prev = NONE;
        if head != NONE {
            self.pages[head as usize].prev = page;
        }
        self.empty = page;
        self.stats.empty_pages += 1;
    }

    fn unlink(&mut self, page: u32, class: usize) {
        let SlabPage { next, prev, .. } = self.pages[page as usize];
        if prev == NONE {
            self.partial[class] = next;
        } else {
            self.pages[prev as usize].next = next;
        }
        if next != NONE {
            self.pages[next as usize].prev = prev;
        }
        let p = &mut self.pages[page as usize];
        p.next = NONE;
        p.prev = NONE;
    }

    /// Checks every invariant: each partial list holds exactly the slabs of its class that
    /// have a free slot, linked both ways; the empty list the empty pages; used counts match
    /// the bitmaps; the counters match the pages. Returns the first violation found.
    pub fn validate(&self) -> Result<(), &'static str> {
        let n = self.pages.len();
        let mut listed = 0usize;
        for (class, &head) in self.partial.iter().enumerate() {
            let (mut page, mut prev, mut steps) = (head, NONE, 0);
            while page != NONE {
                steps += 1;
                if page as usize >= n || steps > n {
                    return Err("a partial list is broken");
                }
                let p = &self.pages[page as usize];
                if p.prev != prev {
                    return Err("a partial list's back link is wrong");
                }
                if p.what != (Use::Slab { class: class as u8 }) {
                    return Err("a partial list holds a page of another class");
                }
                if p.used == 0 || p.free.iter().all(|&w| w == 0) {
                    return Err("a partial list holds an empty or full page");
                }
                listed += 1;
                prev = page;
                page = p.next;
            }
        }
        let (mut slabs, mut partial, mut objects, mut class_bytes) = (0u64, 0usize, 0u64, 0u64);
        for p in self.pages.iter() {
            if let Use::Slab { class } = p.what {
                let size = CLASSES[usize::from(class)];
                let free: u32 = p.free.iter().map(|w| w.count_ones()).sum();
                if free as usize + usize::from(p.used) != PAGE / size {
                    return Err("a slab's used count does not match its bitmap");
                }
                slabs += 1;
                objects += u64::from(p.used);
                class_bytes += u64::from(p.used) * size as u64;
                if free > 0 {
                    partial += 1;
                }
            }
        }
        if partial != listed {
            return Err("a slab with a free slot is on no partial list");
        }
        let (mut page, mut empties) = (self.empty, 0u64);
        while page != NONE {
            empties += 1;
            if page as usize >= n || empties > n as u64 {
                return Err("the empty list is broken");
            }
            if self.pages[page as usize].what != Use::Empty {
                return Err("the empty list holds a page in use");
            }
            page = self.pages[page as usize].next;
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
