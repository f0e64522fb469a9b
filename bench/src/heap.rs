//! The heaps under test, behind one trait, each over its own arena of host memory: talc,
//! linked_list_allocator alone, buddy_system_allocator's `Heap`, and rlsf (TLSF). The unsafe
//! here is the allocator contract itself (raw memory handed out and taken back); it stays in
//! this bench crate, outside the `forbid(unsafe_code)` of levitate-mm.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::mem::MaybeUninit;

/// Bytes of arena each heap gets.
pub const ARENA: usize = 64 << 20;

/// A heap as the workloads see it.
pub trait Heap {
    /// The name in the table and the JSON.
    fn name(&self) -> &'static str;
    /// A block for `layout`, or `None`.
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>>;
    /// Frees a block.
    ///
    /// # Safety
    /// `ptr` came from `alloc` of this heap with the same `layout` and is not freed yet.
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout);
    /// Levitate's heap, for the figures only it has (rounding, reclaim).
    fn as_levitate(&mut self) -> Option<&mut LevitateHeap> {
        None
    }
}

/// A fresh arena, leaked (one per heap per run).
fn arena() -> &'static mut [MaybeUninit<u8>] {
    Box::leak(Box::new_uninit_slice(ARENA))
}

/// talc with its default (error on out of memory) handler.
pub struct Talc(talc::Talc<talc::ErrOnOom>);

impl Talc {
    /// Over a fresh arena.
    pub fn new() -> Self {
        let mut t = talc::Talc::new(talc::ErrOnOom);
        let mem = arena();
        // SAFETY: the arena is leaked, so it lives for the program, and nobody else uses it.
        unsafe { t.claim(talc::Span::from_base_size(mem.as_mut_ptr().cast(), ARENA)) }
            .expect("talc takes the arena");
        Self(t)
    }
}

impl Heap for Talc {
    fn name(&self) -> &'static str {
        "talc"
    }
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: talc's `malloc` requires a non-zero size; the workloads never ask for zero.
        unsafe { self.0.malloc(layout) }.ok()
    }
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract is talc's.
        unsafe { self.0.free(ptr, layout) }
    }
}

/// linked_list_allocator alone over the whole arena.
pub struct LinkedList(linked_list_allocator::Heap);

impl LinkedList {
    /// Over a fresh arena.
    pub fn new() -> Self {
        Self(linked_list_allocator::Heap::from_slice(arena()))
    }
}

impl Heap for LinkedList {
    fn name(&self) -> &'static str {
        "linked_list_allocator"
    }
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.allocate_first_fit(layout).ok()
    }
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract is the crate's.
        unsafe { self.0.deallocate(ptr, layout) }
    }
}

/// buddy_system_allocator's heap (orders up to 2^32 bytes).
pub struct BuddyHeap(buddy_system_allocator::Heap<33>);

impl BuddyHeap {
    /// Over a fresh arena.
    pub fn new() -> Self {
        let mut h = buddy_system_allocator::Heap::empty();
        let mem = arena();
        // SAFETY: the arena is leaked and used by nobody else.
        unsafe { h.init(mem.as_mut_ptr() as usize, ARENA) };
        Self(h)
    }
}

impl Heap for BuddyHeap {
    fn name(&self) -> &'static str {
        "buddy_system_allocator"
    }
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.alloc(layout).ok()
    }
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract is the crate's.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

/// rlsf's TLSF (two-level segregated fit, O(1)).
pub struct Tlsf(rlsf::Tlsf<'static, u32, u32, 28, 32>);

impl Tlsf {
    /// Over a fresh arena.
    pub fn new() -> Self {
        let mut t = rlsf::Tlsf::new();
        t.insert_free_block(arena());
        Self(t)
    }
}

impl Heap for Tlsf {
    fn name(&self) -> &'static str {
        "rlsf"
    }
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.allocate(layout)
    }
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract is rlsf's.
        unsafe { self.0.deallocate(ptr, layout.align()) }
    }
}

/// Slab pages come from the arena: "mapping" one only counts it (the kernel maps a frame
/// there; that cost, once per 8 to 256 objects, is not in these numbers).
#[derive(Default)]
struct ArenaPages {
    mapped: usize,
    peak: usize,
}

impl levitate_mm::slab::PageSource for ArenaPages {
    fn map(&mut self, _addr: usize) -> bool {
        self.mapped += 1;
        self.peak = self.peak.max(self.mapped);
        true
    }
    fn unmap(&mut self, _addr: usize) {
        self.mapped -= 1;
    }
}

/// Levitate's heap design: the size-class bookkeeping of levitate_mm::slab for 16-512 bytes
/// over half the arena, linked_list_allocator for larger objects over the other half (the
/// kernel's large-object path). The adapter is the only unsafe part.
pub struct LevitateHeap {
    slab: levitate_mm::slab::SlabHeap<'static>,
    pages: ArenaPages,
    /// The arena's first byte: slab addresses become pointers derived from it.
    base: *mut u8,
    large: linked_list_allocator::Heap,
}

impl LevitateHeap {
    /// Over a fresh arena.
    pub fn new() -> Self {
        use levitate_mm::slab::{SlabHeap, SlabPage, PAGE};
        let mem = arena();
        let (small, large) = mem.split_at_mut(ARENA / 2);
        let base: *mut u8 = small.as_mut_ptr().cast();
        // The arena comes from the global allocator with byte alignment: start slabs at the
        // first page boundary.
        let skip = base.align_offset(PAGE);
        let records = vec![SlabPage::UNMAPPED; (ARENA / 2 - skip) / PAGE].leak();
        let base = base.wrapping_add(skip);
        let slab = SlabHeap::new(base as usize, records).expect("page-aligned range");
        Self {
            slab,
            pages: ArenaPages::default(),
            base,
            large: linked_list_allocator::Heap::from_slice(large),
        }
    }

    /// Bytes lost to class rounding over bytes asked for, of the live small objects.
    pub fn rounding_waste(&self) -> Option<f64> {
        let s = self.slab.stats();
        (s.requested_bytes > 0)
            .then(|| (s.class_bytes - s.requested_bytes) as f64 / s.requested_bytes as f64)
    }

    /// Unmaps every empty slab page: the share of the peak mapped pages given back.
    pub fn reclaim(&mut self) -> f64 {
        let peak = self.pages.peak.max(1);
        let released = self.slab.release_empty(0, &mut self.pages);
        self.pages.peak = self.pages.mapped;
        released as f64 / peak as f64
    }
}

impl Heap for LevitateHeap {
    fn name(&self) -> &'static str {
        "levitate"
    }
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        match self
            .slab
            .alloc(layout.size(), layout.align(), &mut self.pages)
        {
            Ok(addr) => NonNull::new(self.base.wrapping_add(addr - self.base as usize)),
            Err(levitate_mm::slab::SlabError::NotSmall) => {
                self.large.allocate_first_fit(layout).ok()
            }
            Err(levitate_mm::slab::SlabError::OutOfPages) => None,
        }
    }
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        let addr = ptr.as_ptr() as usize;
        if self.slab.contains(addr) {
            if let Err(e) = self.slab.free(addr, layout.size(), layout.align()) {
                panic!("bench bug: {e}");
            }
        } else {
            // SAFETY: not in the slab range, so it came from `large` (the caller's contract).
            unsafe { self.large.deallocate(ptr, layout) }
        }
    }
    fn as_levitate(&mut self) -> Option<&mut LevitateHeap> {
        Some(self)
    }
}
