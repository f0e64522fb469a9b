//! The large-object heap's segments, as policy: where a new segment goes in the segment
//! window, how much to grow by for a request, when an empty segment is given back. The shell
//! (`levitate-heap`) keeps one linked_list_allocator heap per segment as the payload `T` and
//! does the mapping; this module only decides.
//!
//! * **Growth**: a request that fits no segment grows the heap by max([`MIN_GROWTH`], twice
//!   its worst-case need), so a run of similar requests does not grow every time; when that
//!   would take more than half the room left under the limit, by exactly the need
//!   ([`Segments::plan`]): the heap never refuses a request the limit still has room for, and
//!   does not spend the last of its room on slack.
//! * **Placement**: segments are kept sorted by address; a new one takes the first gap of the
//!   window big enough (aligned to 2 MiB when it is that large, so the mapping can use large
//!   blocks), so address space freed by a release is used again. With every slot taken, the
//!   highest segment is extended instead.
//! * **Big blocks alone**: a request of [`DEDICATED_MIN`] or more gets a segment of exactly
//!   its need that nothing else shares, given back as soon as the block is freed.
//! * **Release**: a segment whose blocks are all free is given back at once, except one, at most
//!   [`RETAIN_MAX`] bytes, kept as a reserve so that allocating and freeing one medium block in
//!   a loop does not map and unmap every time ([`Segments::surplus_empty`]). Under pressure or
//!   at the limit every empty segment goes ([`Segments::any_empty`]).

/// The heap never maps more than this, whatever the RAM.
pub const HEAP_MAX: u64 = 1 << 30;

/// The heap's limit for `usable` bytes of RAM: all but a quarter of it (at least 4 MiB left
/// for page tables, stacks and frame users), at most [`HEAP_MAX`], in pages. The heap gives
/// idle memory back on its own, so the limit guards against a runaway, not against an idle
/// heap holding memory; half of RAM (the old limit) made a 16 MiB stress fail at 32 MiB of RAM
/// with 12 MiB of frames free.
pub fn limit_for(usable: u64) -> u64 {
    let reserve = (usable / 4).max(4 << 20);
    usable.saturating_sub(reserve).min(HEAP_MAX) / PAGE as u64 * PAGE as u64
}

/// Most segments.
pub const MAX_SEGMENTS: usize = 64;
/// Smallest growth step: large enough that a segment holds a few dozen blocks of 4-64 KiB
/// (fewer segments to search, fewer that empty and go back only to be mapped again).
pub const MIN_GROWTH: usize = 1 << 20;
/// The largest empty segment kept mapped as a reserve (one at most).
pub const RETAIN_MAX: usize = 1 << 20;
/// Requests needing this much or more get a segment of their own, exactly their size, that no
/// other block shares (as Linux's vmalloc maps each area alone): freeing the block empties
/// the segment, so it goes back at once, and a small long-lived block can never pin the
/// memory of a big one that was freed.
pub const DEDICATED_MIN: usize = 256 << 10;
const PAGE: usize = super::PAGE;
const LARGE_ALIGN: usize = 2 << 20;

/// One mapped stretch of the large heap.
#[derive(Debug)]
pub struct Segment<T> {
    /// First byte.
    pub start: usize,
    /// Bytes mapped.
    pub size: usize,
    /// Made for one block alone ([`DEDICATED_MIN`]): no other block is placed in it.
    pub dedicated: bool,
    /// The shell's heap over it.
    pub payload: T,
}

impl<T> Segment<T> {
    /// Whether `addr` lies in it.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.start) < self.size
    }
}

/// A growth to make: map `bytes` at `at`, as a new segment (`dedicated` to one block), or at
/// the end of segment `extend` when every slot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub at: usize,
    pub bytes: usize,
    pub extend: Option<usize>,
    pub dedicated: bool,
}

/// Why the heap cannot grow for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrowError {
    /// Even the exact need does not fit under the limit.
    Limit { need: usize, room: usize },
    /// The segment window has no gap that large.
    Window { need: usize },
}

/// The bytes a fresh page-aligned segment needs to serve `size` bytes aligned to `align`
/// with linked_list_allocator, rounded to pages. `None` on overflow.
///
/// linked_list_allocator 0.10 rounds a block up to 8 bytes (at least 16) and takes a hole
/// only when what it leaves behind is nothing or a hole of its own (16 bytes or more): a
/// tail of 8 bytes makes the hole unusable. So a need whose page rounding would leave such a
/// tail gets one page more. Alignments up to a page are met at the segment's start; larger
/// ones may need up to `align` of padding.
pub fn need_for(size: usize, align: usize) -> Option<usize> {
    const MIN_HOLE: usize = 16;
    let block = size.max(MIN_HOLE).checked_next_multiple_of(8)?;
    let pad = if align > PAGE { align } else { 0 };
    let want = block.checked_add(pad)?;
    let need = want.checked_next_multiple_of(PAGE)?;
    if (1..MIN_HOLE).contains(&(need - want)) {
        need.checked_add(PAGE)
    } else {
        Some(need)
    }
}

/// The segments, sorted by address, over the window `[base, end)`.
#[derive(Debug)]
pub struct Segments<T> {
    slots: [Option<Segment<T>>; MAX_SEGMENTS],
    count: usize,
    base: usize,
    end: usize,
    /// Bytes mapped over all segments.
    mapped: usize,
}

impl<T> Segments<T> {
    /// No window yet (`const`, for a static).
    pub const fn empty() -> Self {
        Self {
            slots: [const { None }; MAX_SEGMENTS],
            count: 0,
            base: 0,
            end: 0,
            mapped: 0,
        }
    }

    /// Sets the window (only while there is no segment).
    pub fn set_window(&mut self, base: usize, bytes: usize) {
        debug_assert_eq!(self.count, 0);
        self.base = base;
        self.end = base.saturating_add(bytes);
    }

    /// Live segments.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No segment.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes mapped over all segments.
    pub fn mapped(&self) -> usize {
        self.mapped
    }

    /// Segment `i` (in address order).
    pub fn get(&self, i: usize) -> Option<&Segment<T>> {
        self.slots.get(i)?.as_ref()
    }

    /// Segment `i`, to change its payload.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Segment<T>> {
        self.slots.get_mut(i)?.as_mut()
    }

    /// The segments in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Segment<T>> {
        self.slots[..self.count].iter().flatten()
    }

    /// The segments in address order, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Segment<T>> {
        self.slots[..self.count].iter_mut().flatten()
    }

    /// The index of the segment holding `addr` (binary search).
    #[inline]
    pub fn find(&self, addr: usize) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let seg = self.slots[mid].as_ref()?;
            if addr < seg.start {
                hi = mid;
            } else if addr - seg.start >= seg.size {
                lo = mid + 1;
            } else {
                return Some(mid);
            }
        }
        None
    }

    /// How to grow for a request of `size` bytes aligned to `align` when `room` bytes are
    /// left under the limit: twice the need (at least [`MIN_GROWTH`]) when it fits, else
    /// exactly the need.
    pub fn plan(&self, size: usize, align: usize, room: usize) -> Result<Plan, GrowError> {
        let need = need_for(size, align).ok_or(GrowError::Window { need: usize::MAX })?;
        if need > room {
            return Err(GrowError::Limit { need, room });
        }
        let generous = need
            .saturating_mul(2)
            .max(MIN_GROWTH)
            .next_multiple_of(PAGE);
        // Near the limit, a generous step would spend room that later requests need: grow
        // generously only while that leaves at least as much room again.
        let dedicated = need >= DEDICATED_MIN;
        let bytes = if !dedicated && generous <= room / 2 {
            generous
        } else {
            need
        };
        if self.count == MAX_SEGMENTS {
            // Every slot taken: extend the highest segment, whose end has the window's rest.
            let last = self.count - 1;
            let seg = self.slots[last]
                .as_ref()
                .ok_or(GrowError::Window { need })?;
            let at = seg.start + seg.size;
            return match at.checked_add(bytes) {
                Some(e) if e <= self.end => Ok(Plan {
                    at,
                    bytes,
                    extend: Some(last),
                    dedicated: false,
                }),
                _ => Err(GrowError::Window { need }),
            };
        }
        let align = if bytes >= LARGE_ALIGN {
            LARGE_ALIGN
        } else {
            MIN_GROWTH
        };
        let mut from = self.base;
        for seg in self.iter() {
            let at = from.next_multiple_of(align);
            if at.checked_add(bytes).is_some_and(|e| e <= seg.start) {
                return Ok(Plan {
                    at,
                    bytes,
                    extend: None,
                    dedicated,
                });
            }
            from = seg.start + seg.size;
        }
        let at = from.next_multiple_of(align);
        match at.checked_add(bytes) {
            Some(e) if e <= self.end => Ok(Plan {
                at,
                bytes,
                extend: None,
                dedicated,
            }),
            _ => Err(GrowError::Window { need }),
        }
    }

    /// Records a growth made by `plan` (mapped by the shell): a new segment with `payload`,
    /// or the extension of one (`payload` is then dropped: the shell extended its heap).
    /// Returns the segment's index.
    pub fn add(&mut self, plan: Plan, payload: T) -> usize {
        self.mapped += plan.bytes;
        if let Some(i) = plan.extend {
            if let Some(seg) = self.slots[i].as_mut() {
                // Extended for another block: shared from now on.
                seg.size += plan.bytes;
                seg.dedicated = false;
            }
            return i;
        }
        let i = self
            .iter()
            .position(|s| s.start > plan.at)
            .unwrap_or(self.count);
        self.slots[i..=self.count].rotate_right(1);
        self.slots[i] = Some(Segment {
            start: plan.at,
            size: plan.bytes,
            dedicated: plan.dedicated,
            payload,
        });
        self.count += 1;
        i
    }

    /// Takes segment `i` out (the shell has unmapped it).
    pub fn remove(&mut self, i: usize) -> Option<Segment<T>> {
        if i >= self.count {
            return None;
        }
        let seg = self.slots[i].take()?;
        self.slots[i..self.count].rotate_left(1);
        self.count -= 1;
        self.mapped -= seg.size;
        Some(seg)
    }

    /// An empty segment to give back now, by the idle policy: every empty segment except one
    /// shared one of at most [`RETAIN_MAX`] bytes (the smallest). `is_empty` says whether a
    /// payload holds no block.
    pub fn surplus_empty(&self, is_empty: impl Fn(&T) -> bool) -> Option<usize> {
        let empties = || {
            self.iter()
                .enumerate()
                .filter(|(_, s)| is_empty(&s.payload))
        };
        let keep = empties()
            .filter(|(_, s)| s.size <= RETAIN_MAX && !s.dedicated)
            .min_by_key(|(_, s)| s.size)
            .map(|(i, _)| i);
        empties().map(|(i, _)| i).find(|&i| Some(i) != keep)
    }

    /// Any empty segment (reclaim under pressure, or at the limit).
    pub fn any_empty(&self, is_empty: impl Fn(&T) -> bool) -> Option<usize> {
        self.iter().position(|s| is_empty(&s.payload))
    }

    /// Checks the invariants: sorted, disjoint, inside the window, `mapped` the sum.
    pub fn validate(&self) -> Result<(), &'static str> {
        let mut prev_end = self.base;
        let mut sum = 0usize;
        for (i, slot) in self.slots.iter().enumerate() {
            match (slot, i < self.count) {
                (Some(s), true) => {
                    if s.start < prev_end || s.start.saturating_add(s.size) > self.end {
                        return Err("segments overlap or leave the window");
                    }
                    if s.size == 0 || !s.start.is_multiple_of(PAGE) || !s.size.is_multiple_of(PAGE)
                    {
                        return Err("a segment is empty or not page aligned");
                    }
                    prev_end = s.start + s.size;
                    sum += s.size;
                }
                (None, false) => {}
                _ => return Err("the segment count does not match the slots"),
            }
        }
        if sum != self.mapped {
            return Err("the mapped count does not match the segments");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 0x40_0000_0000;
    const MB: usize = 1 << 20;

    #[test]
    fn the_limit_leaves_a_quarter_of_ram() {
        assert_eq!(limit_for(28 * MB as u64), 21 * MB as u64);
        assert_eq!(limit_for(8 * MB as u64), 4 * MB as u64);
        assert_eq!(limit_for(2 * MB as u64), 0);
        assert_eq!(limit_for(8 << 30), HEAP_MAX);
        assert_eq!(limit_for(1_000_001) % PAGE as u64, 0);
    }

    #[test]
    fn growth_is_generous_then_exact_then_refused() {
        let mut s: Segments<bool> = Segments::empty();
        s.set_window(BASE, 1 << 40);
        // Plenty of room: twice the need, at least MIN_GROWTH.
        assert_eq!(s.plan(100, 8, 100 * MB).unwrap().bytes, MIN_GROWTH);
        assert_eq!(s.plan(100_000, 8, 100 * MB).unwrap().bytes, MIN_GROWTH);
        assert_eq!(s.plan(200_000, 8, 100 * MB).unwrap().bytes, MIN_GROWTH);
        // Big requests alone, exactly.
        assert_eq!(s.plan(3 * MB, 8, 100 * MB).unwrap().bytes, 3 * MB);
        // Near the limit, the need.
        assert_eq!(s.plan(100_000, 8, 300_000).unwrap().bytes, 102_400);
        // The case: 56 MB asked for with 89 MB of room takes exactly 56 MB.
        let p = s.plan(56_000_000, 8, 89 * MB).unwrap();
        assert_eq!(p.bytes, need_for(56_000_000, 8).unwrap());
        assert!(p.bytes >= 56_000_000 && p.bytes < 56_000_000 + PAGE);
        // No room even for the need.
        assert_eq!(
            s.plan(3 * MB, 8, 2 * MB),
            Err(GrowError::Limit {
                need: 3 * MB,
                room: 2 * MB
            })
        );
        // Large alignments need their padding.
        assert_eq!(need_for(100, 1 << 16), Some(PAGE + (1 << 16)));
        assert_eq!(need_for(usize::MAX, 8), None);
    }

    #[test]
    fn big_requests_get_a_segment_of_their_own() {
        let mut s: Segments<bool> = Segments::empty();
        s.set_window(BASE, 1 << 40);
        let p = s.plan(DEDICATED_MIN, 8, usize::MAX).unwrap();
        assert!(p.dedicated);
        assert_eq!(p.bytes, DEDICATED_MIN);
        assert!(
            !s.plan(DEDICATED_MIN - PAGE, 8, usize::MAX)
                .unwrap()
                .dedicated
        );
        let i = s.add(p, true);
        assert!(s.get(i).unwrap().dedicated);
        // An empty dedicated segment is never the reserve.
        assert_eq!(s.surplus_empty(|e| *e), Some(i));
    }

    #[test]
    fn released_address_space_is_used_again() {
        let mut s: Segments<u32> = Segments::empty();
        s.set_window(BASE, 64 * MB);
        let a = s.plan(MB, 8, usize::MAX).unwrap();
        let ia = s.add(a, 1);
        let b = s.plan(MB, 8, usize::MAX).unwrap();
        s.add(b, 2);
        assert!(b.at >= a.at + a.bytes);
        s.validate().unwrap();
        assert_eq!(s.find(a.at + 5), Some(0));
        assert_eq!(s.find(b.at + b.bytes - 1), Some(1));
        assert_eq!(s.find(b.at + b.bytes), None);
        assert_eq!(s.find(BASE - 1), None);
        s.remove(ia).unwrap();
        // The gap left by `a` takes the next segment that fits.
        let c = s.plan(MB / 2, 8, usize::MAX).unwrap();
        assert_eq!(c.at, a.at);
        s.add(c, 3);
        s.validate().unwrap();
        assert_eq!(s.get(0).unwrap().payload, 3);
        // The window is finite.
        assert!(matches!(
            s.plan(64 * MB, 8, usize::MAX),
            Err(GrowError::Window { .. })
        ));
        assert_eq!(s.mapped(), MB + MB / 2);
    }

    #[test]
    fn every_slot_taken_extends_the_highest() {
        let mut s: Segments<()> = Segments::empty();
        s.set_window(BASE, 1 << 40);
        for _ in 0..MAX_SEGMENTS {
            let p = s.plan(10, 8, usize::MAX).unwrap();
            assert_eq!(p.extend, None);
            s.add(p, ());
        }
        let p = s.plan(10, 8, usize::MAX).unwrap();
        assert_eq!(p.extend, Some(MAX_SEGMENTS - 1));
        let last = s.get(MAX_SEGMENTS - 1).unwrap();
        assert_eq!(p.at, last.start + last.size);
        s.add(p, ());
        assert_eq!(s.len(), MAX_SEGMENTS);
        s.validate().unwrap();
    }

    #[test]
    fn one_small_empty_segment_is_kept_the_rest_released() {
        let mut s: Segments<bool> = Segments::empty();
        s.set_window(BASE, 1 << 40);
        for (size, empty) in [(MB / 8, true), (4 * MB, true), (MB / 5, true), (MB, false)] {
            let p = s.plan(size, 8, usize::MAX).unwrap();
            s.add(
                Plan {
                    bytes: size.next_multiple_of(PAGE),
                    ..p
                },
                empty,
            );
        }
        let empty = |e: &bool| *e;
        let mut released = 0;
        while let Some(i) = s.surplus_empty(empty) {
            s.remove(i).unwrap();
            released += 1;
        }
        assert_eq!(released, 2);
        assert_eq!(s.len(), 2);
        // The reserve kept is the smallest empty one.
        assert!(s.iter().any(|seg| seg.payload && seg.size == MB / 8));
        assert!(s.any_empty(empty).is_some());
        s.validate().unwrap();
    }
}
