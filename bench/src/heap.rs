//! The heaps under test, behind one trait, each over its own arena of host memory: Levitate's
//! (the kernel's `levitate-heap`), talc, linked_list_allocator alone, buddy_system_allocator's
//! `Heap`, and rlsf (TLSF). The unsafe here is the allocator contract itself (raw memory
//! handed out and taken back); it stays in this bench crate, outside the
//! `forbid(unsafe_code)` of levitate-mm.

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

/// A fresh arena of `bytes`, leaked (one per heap per run), every page written once so the
/// host backs it before any timing: a first-touch fault would otherwise land in whichever
/// timed operation writes a page first (a kernel heap's memory is present when mapped).
fn prefaulted(bytes: usize) -> &'static mut [MaybeUninit<u8>] {
    let mem = Box::leak(Box::new_uninit_slice(bytes));
    for page in mem.chunks_mut(4096) {
        page[0].write(0);
    }
    mem
}

/// A fresh arena for a peer heap.
fn arena() -> &'static mut [MaybeUninit<u8>] {
    prefaulted(ARENA)
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

/// The bench's side of `levitate_heap::Mapper`: plain host memory, already there, so
/// "mapping" only counts bytes (the window is prefaulted, as every arena here; the kernel maps
/// a frame per slab page and frames per segment there; that cost, once per 2 to 256 objects
/// or per segment, is not in these numbers).
#[derive(Default)]
pub struct PlainMemory {
    mapped: usize,
    peak: usize,
    mark: usize,
}

impl levitate_heap::Mapper for PlainMemory {
    fn map(&mut self, _at: usize, bytes: usize) -> bool {
        self.mapped += bytes;
        self.peak = self.peak.max(self.mapped);
        true
    }
    fn unmap(&mut self, _at: usize, bytes: usize) -> bool {
        self.mapped -= bytes;
        true
    }
}

/// Levitate's heap exactly as the kernel runs it: the `levitate-heap` crate (levitate_mm's
/// size classes 16 B - 2 KiB, page runs in 1 MiB spans for 2-256 KiB, linked_list_allocator
/// segments for the rest) over a window of plain memory, allowed to map the same 64 MiB the
/// other heaps get.
pub struct LevitateHeap(levitate_heap::Heap<PlainMemory>);

impl LevitateHeap {
    /// Over a fresh window (2 x the arena of address space, 2 MiB aligned, prefaulted).
    pub fn new() -> Self {
        let window = 2 * ARENA;
        let mem = prefaulted(window + (2 << 20));
        let skip = mem.as_mut_ptr().align_offset(2 << 20);
        let base = mem.as_mut_ptr() as usize + skip;
        let mut h = levitate_heap::Heap::new(PlainMemory::default());
        // SAFETY: the window lies in a leaked allocation used by nothing else, so it stays
        // valid for the program; PlainMemory's "mapping" leaves it valid throughout.
        unsafe { h.init(base, window, ARENA) };
        Self(h)
    }

    /// Bytes lost to class rounding over bytes asked for, of the live small objects.
    pub fn rounding_waste(&self) -> Option<f64> {
        let s = self.0.stats().slab;
        (s.requested_bytes > 0)
            .then(|| (s.class_bytes - s.requested_bytes) as f64 / s.requested_bytes as f64)
    }

    /// Starts counting the mapped peak from here.
    pub fn mark(&mut self) {
        let m = self.0.mapper_mut();
        m.mark = m.mapped;
        m.peak = m.mapped;
    }

    /// Reclaims (as under memory pressure): the share of the bytes mapped since `mark`
    /// (at its peak) given back.
    pub fn reclaim(&mut self) -> f64 {
        self.0.reclaim();
        let m = self.0.mapper();
        let grown = m.peak.saturating_sub(m.mark).max(1);
        (m.peak.saturating_sub(m.mapped) as f64 / grown as f64).min(1.0)
    }
}

impl Heap for LevitateHeap {
    fn name(&self) -> &'static str {
        "levitate"
    }
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.alloc(layout)
    }
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract is the heap's.
        if let Err(e) = unsafe { self.0.free(ptr, layout) } {
            panic!("bench bug: {e}");
        }
    }
    fn as_levitate(&mut self) -> Option<&mut LevitateHeap> {
        Some(self)
    }
}
