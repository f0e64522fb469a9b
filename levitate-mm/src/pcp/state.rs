//! One atomic byte per usable frame that says which layer holds it, kept in the frame's
//! mem_map entry ([`Page::cache_state`]: no array of its own, so no extra byte per frame),
//! and beside it the owner of a frame a cache handed out ([`Page::cache_owner`]). The buddy
//! sees every frame in a per-CPU cache as "allocated to the frame cache", so only this byte
//! can tell a frame parked in a cache from one handed out of it, and so catch a double free
//! into a cache.
//!
//! The state byte's low two bits are the kind, the upper six a payload:
//!
//! | kind                 | payload           | holder                                        |
//! |----------------------|-------------------|-----------------------------------------------|
//! | 0 buddy              | 0                 | the buddy: free there, or allocated from it   |
//! | 1 parked             | cache id          | a CPU cache, contents unchecked               |
//! | 2 handed out         | 0                 | whoever `pcp::alloc` handed it to (owner byte) |
//! | 3 parked, poisoned   | cache id          | a CPU cache, filled with the poison           |
//!
//! The owner is kept because a free carries none: the freeing CPU reads it to keep the
//! per-owner counts right. It has a byte of its own, not the handed-out payload, so every
//! handed-out frame has the same state byte and a free's compare-and-swap expects that one
//! constant: it needs no load of the byte first, whose latency sat between the frame number
//! and the swap (bench `order0-*` on an AMD EPYC guest: a pair 10 % faster). The cache id
//! lets `validate` prove no frame sits in two caches without allocating. The poisoned bit is
//! per frame, not global, so turning poisoning on while frames are parked never reports a
//! false use after free on the unpoisoned ones.
//!
//! Transitions, and who may make them:
//! * buddy -> parked in N: a refill by cache N, under N's lock and the buddy lock: a load (a
//!   byte that does not say "buddy" is a conflict, left alone) and a plain release store.
//! * parked in N -> buddy: a drain of cache N's ring, under N's lock and the buddy lock: a
//!   plain release store.
//! * parked in N -> handed out: a pop by CPU N, from its ring under N's lock or from its stash
//!   (`HotCache`, which only CPU N touches): a plain store of the owner byte, then a plain
//!   release store of the state byte.
//! * handed out -> parked in N: a free on CPU N, whichever CPU allocated the frame, into its
//!   stash or its ring: a compare-and-swap from "handed out"; the owner byte is read once the
//!   swap is won (the frame is then parked in N, whose CPU alone writes the owner byte). If
//!   that byte names no owner (corruption), a second swap moves the frame back to "handed
//!   out" and the free is refused: the frame is where it was.
//!
//! A parked frame's bytes are thus written only by its cache's CPU or under its cache's lock,
//! a stashed frame's only by its CPU, and a byte that says "buddy" only under the buddy lock:
//! plain stores suffice there (a free that races them only reads the byte). A handed-out frame
//! may be freed by any CPU, so the free is the one compare-and-swap of an alloc/free pair: of
//! two racing frees of one frame exactly one wins and parks it, the other reads "parked" and
//! is refused as a double free. A free that finds "buddy" re-reads the byte under the buddy
//! lock before it lets the buddy free the frame.

use super::PcpError;
use crate::addr::Pfn;
use crate::buddy::Owner;
use crate::mem_map::{Layout, Page};
use core::sync::atomic::{AtomicBool, Ordering};

/// Most caches (CPUs) the state byte can name: six bits of payload.
pub const MAX_CACHES: usize = 64;

const KIND_MASK: u8 = 0b11;
const PAYLOAD_SHIFT: u32 = 2;
const KIND_BUDDY: u8 = 0;
const KIND_PARKED: u8 = 1;
const KIND_HANDED_OUT: u8 = 2;
const KIND_PARKED_POISONED: u8 = 3;

/// The byte of a frame the buddy holds.
pub(super) const BUDDY: u8 = KIND_BUDDY;

/// The byte of a frame parked in cache `cache`.
#[inline]
pub(super) const fn parked(cache: u8, poisoned: bool) -> u8 {
    let kind = if poisoned {
        KIND_PARKED_POISONED
    } else {
        KIND_PARKED
    };
    cache << PAYLOAD_SHIFT | kind
}

/// The byte of every frame a cache handed out (its owner is in the owner byte).
pub(super) const HANDED_OUT: u8 = KIND_HANDED_OUT;

/// A frame's state byte, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameState {
    /// The buddy holds it: free there, or allocated directly from it.
    Buddy,
    /// Parked in the cache with this id.
    Parked {
        /// The cache's id.
        cache: u8,
        /// Filled with the poison when it was parked; checked when it leaves.
        poisoned: bool,
    },
    /// Handed out of a cache to `owner`.
    HandedOut {
        /// Whom it was handed to.
        owner: Owner,
    },
    /// A state byte no transition writes (memory corruption).
    Invalid(u8),
    /// Handed out, with an owner byte that names no owner (memory corruption).
    InvalidOwner(u8),
}

impl FrameState {
    /// Decodes a state byte and the frame's owner byte (read only for "handed out").
    #[inline]
    pub const fn decode(raw: u8, owner: u8) -> Self {
        let payload = raw >> PAYLOAD_SHIFT;
        match raw & KIND_MASK {
            KIND_BUDDY if payload == 0 => FrameState::Buddy,
            KIND_PARKED => FrameState::Parked {
                cache: payload,
                poisoned: false,
            },
            KIND_PARKED_POISONED => FrameState::Parked {
                cache: payload,
                poisoned: true,
            },
            KIND_HANDED_OUT if payload == 0 => match Owner::from_u8(owner) {
                Some(owner) => FrameState::HandedOut { owner },
                None => FrameState::InvalidOwner(owner),
            },
            _ => FrameState::Invalid(raw),
        }
    }
}

/// Why [`FrameStates::take_handed_out`] did not park a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NotTaken {
    /// The state byte was not "handed out": it is this byte (it may have just changed).
    State(u8),
    /// Handed out, but the owner byte names no owner (corruption): left handed out.
    Owner(u8),
}

/// The state bytes of every usable frame, indexed like the mem_map, shared by all CPUs.
pub struct FrameStates<'a> {
    layout: &'a Layout,
    pages: &'a [Page],
    /// A copy of the buddy's poisoning switch that the caches' free path reads without the
    /// buddy's lock (it holds only its own per-CPU cache lock). Stale for a moment after a
    /// switch; harmless, since each frame records whether it was filled.
    poisoning: AtomicBool,
}

impl core::fmt::Debug for FrameStates<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameStates")
            .field("frames", &self.layout.frames())
            .field("poisoning", &self.poisoning())
            .finish_non_exhaustive()
    }
}

impl<'a> FrameStates<'a> {
    /// Sets every frame of `layout` to "buddy" in the state bytes of `pages` (the mem_map the
    /// buddy was built over, at least `layout.frames()` long). Build it before any frame is
    /// cached, over the same layout as the buddy.
    pub fn new(layout: &'a Layout, pages: &'a [Page]) -> Result<Self, PcpError> {
        let needed = layout.frames();
        let got = pages.len() as u64;
        if got < needed {
            return Err(PcpError::StatesTooSmall { needed, got });
        }
        let pages = &pages[..needed as usize];
        for p in pages {
            p.cache_state().store(BUDDY, Ordering::Relaxed);
            p.cache_owner().store(0, Ordering::Relaxed);
        }
        Ok(Self {
            layout,
            pages,
            poisoning: AtomicBool::new(false),
        })
    }

    /// The layout the states are indexed by.
    #[inline]
    pub fn layout(&self) -> &'a Layout {
        self.layout
    }

    /// The state of frame `pfn`; `None` when the layout does not manage it.
    pub fn get(&self, pfn: Pfn) -> Option<FrameState> {
        let index = self.layout.index_of(pfn)?;
        Some(self.read(index as u32).1)
    }

    /// The state byte of the frame at mem_map `index`, and its state decoded (the owner byte
    /// read after the state byte, for a handed-out frame).
    #[inline]
    pub(super) fn read(&self, index: u32) -> (u8, FrameState) {
        let page = &self.pages[index as usize];
        let raw = page.cache_state().load(Ordering::Acquire);
        let owner = if raw == HANDED_OUT {
            page.cache_owner().load(Ordering::Relaxed)
        } else {
            0
        };
        (raw, FrameState::decode(raw, owner))
    }

    /// Hands out the frame at mem_map `index`, parked in the caller's own stash or in the
    /// ring whose lock it holds, to `owner`: the owner byte, then the state byte, release, so
    /// whoever sees "handed out" sees the owner and the frame's contents. (The owner byte is
    /// stored every time: storing it only when it changed, a load and a branch, made the
    /// order-0 pair 4-12 % slower in the bench's A/B.)
    #[inline(always)]
    pub(super) fn hand_out(&self, index: u32, owner: Owner) {
        hand_out(&self.pages[index as usize], owner);
    }

    /// [`Self::hand_out`] for the stash's pop: only if the frame's byte is still `parked`
    /// (its stash's id); `false`, touching nothing, if it is not (a conflict). One index into
    /// the mem_map for both (through two calls, the bounds check and the address were done
    /// twice: the byte's load is atomic, so the compiler kept them apart).
    #[inline(always)]
    pub(super) fn hand_out_if(&self, index: u32, parked: u8, owner: Owner) -> bool {
        let page = &self.pages[index as usize];
        if page.cache_state().load(Ordering::Acquire) != parked {
            return false;
        }
        hand_out(page, owner);
        true
    }

    /// The free's transition: the frame at mem_map `index` from "handed out" to `to` (parked
    /// in the caller's cache) by a compare-and-swap from the one handed-out byte, and then
    /// whom it had been handed to. Acquire-release: the holder's writes to the frame happen
    /// before whoever sees the new state takes it, and the owner read is the pop's. After a
    /// corrupt owner byte the state byte is swapped back to "handed out" (unless it changed
    /// meanwhile), so the caller can refuse the free and nothing moved.
    #[inline(always)]
    pub(super) fn take_handed_out(&self, index: u32, to: u8) -> Result<Owner, NotTaken> {
        let page = &self.pages[index as usize];
        page.cache_state()
            .compare_exchange(HANDED_OUT, to, Ordering::AcqRel, Ordering::Acquire)
            .map_err(NotTaken::State)?;
        let raw = page.cache_owner().load(Ordering::Relaxed);
        match Owner::from_u8(raw) {
            Some(owner) => Ok(owner),
            None => {
                // A swap back, not a store: on top of corruption the frame may also sit in
                // another ring, whose drain could move it to "buddy" meanwhile; that must
                // not be overwritten.
                let _ = page.cache_state().compare_exchange(
                    to,
                    HANDED_OUT,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                Err(NotTaken::Owner(raw))
            }
        }
    }

    /// Whether frames freed into a cache are poisoned (the buddy's switch, as last seen).
    #[inline]
    pub fn poisoning(&self) -> bool {
        self.poisoning.load(Ordering::Relaxed)
    }

    /// Follows the buddy's poisoning switch; `pcp::set_poisoning` calls it, and every refill
    /// and drain refreshes it from the buddy.
    #[inline]
    pub fn set_poisoning(&self, on: bool) {
        self.poisoning.store(on, Ordering::Relaxed);
    }

    /// The byte of the frame at mem_map `index` (always one of ours: the caller found it
    /// through the same layout).
    #[inline]
    pub(super) fn load(&self, index: u32) -> u8 {
        self.pages[index as usize]
            .cache_state()
            .load(Ordering::Acquire)
    }

    /// Sets the byte of a frame only the caller may move: a frame parked in the caller's own
    /// stash or in the ring whose lock it holds, or one the buddy holds, under the buddy's
    /// lock (see the module docs). Release: whoever sees
    /// the new state also sees the caller's writes before it.
    #[inline]
    pub(super) fn publish(&self, index: u32, to: u8) {
        self.pages[index as usize]
            .cache_state()
            .store(to, Ordering::Release);
    }

    /// Overwrites the owner byte of the frame at `index` (tests: corruption).
    #[cfg(test)]
    pub(super) fn set_owner_byte(&self, index: u32, raw: u8) {
        self.pages[index as usize]
            .cache_owner()
            .store(raw, Ordering::Relaxed);
    }

    /// Moves the frame at `index` from `from` to `to` if it is in `from`; otherwise returns
    /// the byte found. Acquire-release: the holder's writes to the frame happen before
    /// whoever sees the new state takes it.
    #[cfg(test)]
    #[inline]
    pub(super) fn transition(&self, index: u32, from: u8, to: u8) -> Result<(), u8> {
        self.pages[index as usize]
            .cache_state()
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }
}

/// The owner byte, then the state byte, release; see [`FrameStates::hand_out`].
#[inline(always)]
fn hand_out(page: &Page, owner: Owner) {
    page.cache_owner().store(owner as u8, Ordering::Relaxed);
    page.cache_state().store(HANDED_OUT, Ordering::Release);
}
