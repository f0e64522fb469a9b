//! The invariant checker for the caches together with the buddy. O(frames x log sections):
//! it walks every state byte, so property tests run it after each operation and the kernel's
//! `memcheck` on demand, with every cache and the buddy locked (nothing moves meanwhile).
//!
//! Together the checks mean: each cache's frames are distinct, managed, and parked in that
//! cache by their state byte; as many bytes name each cache as it holds frames (so no frame
//! is in two caches and none is lost); every frame a cache holds or handed out is an order-0
//! block allocated to the frame cache in the buddy, and the buddy counts no other; the
//! caches' per-owner counters add up to the frames handed out to each owner.

use super::cache::{CpuCache, CAPACITY};
use super::hot::{HotCache, HOT_CAPACITY};
use super::state::{FrameState, FrameStates, MAX_CACHES};
use crate::addr::{Pfn, PhysAddr};
use crate::buddy::{self, Buddy, Owner};
use core::fmt;

/// A broken invariant, with where it is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The buddy's own invariants.
    Buddy(buddy::Violation),
    /// Two caches share an id.
    DuplicateCacheId {
        /// The id.
        cache: u8,
    },
    /// A cache holds more frames than its `high` watermark.
    AboveHigh {
        /// The cache.
        cache: u8,
        /// Frames parked.
        len: usize,
        /// Its watermark.
        high: u16,
    },
    /// A cache entry's mem_map index does not describe its frame.
    BadIndex {
        /// The cache.
        cache: u8,
        /// The frame.
        addr: PhysAddr,
        /// The index recorded with it.
        index: u32,
    },
    /// A frame in a cache whose state byte does not say it is parked there.
    NotParked {
        /// The cache.
        cache: u8,
        /// The frame.
        addr: PhysAddr,
        /// Its state.
        state: FrameState,
    },
    /// A frame twice in one cache.
    Duplicate {
        /// The cache.
        cache: u8,
        /// The frame.
        addr: PhysAddr,
    },
    /// The state bytes name a cache for another number of frames than it holds.
    ParkedCount {
        /// The cache.
        cache: u8,
        /// Frames it holds.
        held: u64,
        /// State bytes parked in it.
        marked: u64,
    },
    /// A state byte no transition writes.
    BadState {
        /// The frame.
        addr: PhysAddr,
        /// The byte.
        raw: u8,
    },
    /// A handed-out frame whose owner byte names no owner.
    BadOwner {
        /// The frame.
        addr: PhysAddr,
        /// The owner byte.
        raw: u8,
    },
    /// A frame parked or handed out by the caches that the buddy does not hold as an order-0
    /// block allocated to the frame cache (freed to the buddy behind the caches' back).
    NotInBuddy {
        /// The frame.
        addr: PhysAddr,
        /// Its state.
        state: FrameState,
    },
    /// A stash whose id no cache has.
    StrayStash {
        /// The stash's id.
        cache: u8,
    },
    /// The buddy's frame-cache total disagrees with the state bytes.
    FrameCacheTotal {
        /// Frames parked or handed out by the state bytes.
        marked: u64,
        /// The buddy's count for [`Owner::FrameCache`].
        buddy: u64,
    },
    /// An owner's handed-out total disagrees with the caches' counters.
    HandedOut {
        /// The owner.
        owner: Owner,
        /// State bytes handed out to it.
        marked: u64,
        /// The caches' counters, summed.
        counted: i64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Buddy(v) => v.fmt(f),
            Self::DuplicateCacheId { cache } => {
                write!(f, "frame cache: two caches have id {cache}")
            }
            Self::AboveHigh { cache, len, high } => write!(
                f,
                "frame cache {cache}: {len} frames parked, above its high mark {high}"
            ),
            Self::BadIndex { cache, addr, index } => write!(
                f,
                "frame cache {cache}: frame {addr} recorded with mem_map index {index}, which \
                 is not its own"
            ),
            Self::NotParked { cache, addr, state } => write!(
                f,
                "frame cache {cache}: holds frame {addr} whose state is {state:?}"
            ),
            Self::Duplicate { cache, addr } => {
                write!(f, "frame cache {cache}: holds frame {addr} twice")
            }
            Self::ParkedCount {
                cache,
                held,
                marked,
            } => write!(
                f,
                "frame cache {cache}: holds {held} frames, {marked} state bytes say parked there"
            ),
            Self::BadState { addr, raw } => {
                write!(f, "frame cache: frame {addr} has state byte {raw:#04x}")
            }
            Self::BadOwner { addr, raw } => write!(
                f,
                "frame cache: frame {addr} is handed out with owner byte {raw:#04x}, which names \
                 no owner"
            ),
            Self::NotInBuddy { addr, state } => write!(
                f,
                "frame cache: frame {addr} is {state:?} but the buddy does not hold it as an \
                 order-0 frame-cache block"
            ),
            Self::StrayStash { cache } => {
                write!(f, "frame cache: a stash has id {cache}, which no cache has")
            }
            Self::FrameCacheTotal { marked, buddy } => write!(
                f,
                "frame cache: {marked} frames cached or handed out, the buddy counts {buddy}"
            ),
            Self::HandedOut {
                owner,
                marked,
                counted,
            } => write!(
                f,
                "frame cache: {marked} frames handed out to {owner}, the caches count {counted}"
            ),
        }
    }
}

/// Checks every invariant of the caches (all of them: the counts need every one) against
/// `states` and `buddy`, and the buddy's own. See the module docs. `hots` are the CPUs'
/// stashes, each with the id of its CPU's ring (none when the caller has no stashes); they
/// must not move meanwhile (held by `pcp::hold_stashes`, or one thread playing every CPU).
pub fn validate(
    caches: &[&CpuCache],
    hots: &[&HotCache],
    states: &FrameStates<'_>,
    buddy: &Buddy<'_>,
) -> Result<(), Violation> {
    buddy.validate().map_err(Violation::Buddy)?;
    let mut held = [None::<u64>; MAX_CACHES];
    let mut counted = [0i64; Owner::COUNT];
    for cache in caches {
        let id = cache.id();
        let entry = &mut held[usize::from(id)];
        if entry.is_some() {
            return Err(Violation::DuplicateCacheId { cache: id });
        }
        let hot = hots.iter().find(|h| h.id() == id).copied();
        *entry = Some((cache.len() + hot.map_or(0, HotCache::len)) as u64);
        check_cache(cache, hot, states)?;
        for (sum, n) in counted.iter_mut().zip(cache.stats().handed_out) {
            *sum += n;
        }
        if let Some(hot) = hot {
            for (sum, n) in counted.iter_mut().zip(hot.stats().handed_out) {
                *sum += n;
            }
        }
    }
    if let Some(stray) = hots.iter().find(|h| held[usize::from(h.id())].is_none()) {
        return Err(Violation::StrayStash { cache: stray.id() });
    }

    let mut parked = [0u64; MAX_CACHES];
    let mut handed = [0u64; Owner::COUNT];
    let mut marked = 0;
    for s in states.layout().sections() {
        for offset in 0..s.frames {
            let (_, state) = states.read((s.first_index + offset) as u32);
            let addr = Pfn::new(s.start + offset).addr();
            match state {
                FrameState::Buddy => continue,
                FrameState::Parked { cache, .. } => parked[usize::from(cache)] += 1,
                FrameState::HandedOut { owner } => handed[owner as usize] += 1,
                FrameState::Invalid(raw) => return Err(Violation::BadState { addr, raw }),
                FrameState::InvalidOwner(raw) => return Err(Violation::BadOwner { addr, raw }),
            }
            marked += 1;
            if buddy.owner_of(addr) != Some((Owner::FrameCache, 0, addr)) {
                return Err(Violation::NotInBuddy { addr, state });
            }
        }
    }
    for (cache, (&marked, &held)) in parked.iter().zip(&held).enumerate() {
        let held = held.unwrap_or(0);
        if marked != held {
            return Err(Violation::ParkedCount {
                cache: cache as u8,
                held,
                marked,
            });
        }
    }
    for owner in Owner::ALL {
        let (marked, counted) = (handed[owner as usize], counted[owner as usize]);
        if i64::try_from(marked) != Ok(counted) {
            return Err(Violation::HandedOut {
                owner,
                marked,
                counted,
            });
        }
    }
    let in_buddy = buddy.stats().allocated_to(Owner::FrameCache);
    if in_buddy != marked {
        return Err(Violation::FrameCacheTotal {
            marked,
            buddy: in_buddy,
        });
    }
    Ok(())
}

/// One cache's own entries, its ring's and its stash's: the ring within `high`, each index
/// right, each byte parked here (a stashed frame's unpoisoned), no frame twice (found by
/// sorting a copy on the stack: the crate allocates nothing).
fn check_cache(
    cache: &CpuCache,
    hot: Option<&HotCache>,
    states: &FrameStates<'_>,
) -> Result<(), Violation> {
    let id = cache.id();
    let high = cache.limits().high;
    if cache.len() > usize::from(high) {
        return Err(Violation::AboveHigh {
            cache: id,
            len: cache.len(),
            high,
        });
    }
    let layout = states.layout();
    let mut frames = [0u64; CAPACITY + HOT_CAPACITY];
    let stashed = hot.into_iter().flat_map(|h| h.slots().take(HOT_CAPACITY));
    let ring = cache.slots().map(|s| (s, false));
    let mut n = 0;
    for (i, ((addr, index), in_stash)) in ring.chain(stashed.map(|s| (s, true))).enumerate() {
        n = i + 1;
        if layout.pfn_of(u64::from(index)) != Some(addr.pfn()) {
            return Err(Violation::BadIndex {
                cache: id,
                addr,
                index,
            });
        }
        let (_, state) = states.read(index);
        let parked_here = match state {
            FrameState::Parked { cache, poisoned } => cache == id && !(in_stash && poisoned),
            _ => false,
        };
        if !parked_here {
            return Err(Violation::NotParked {
                cache: id,
                addr,
                state,
            });
        }
        frames[i] = addr.pfn().as_u64();
    }
    let frames = &mut frames[..n];
    frames.sort_unstable();
    if let Some(pair) = frames.windows(2).find(|w| w[0] == w[1]) {
        return Err(Violation::Duplicate {
            cache: id,
            addr: Pfn::new(pair[0]).addr(),
        });
    }
    Ok(())
}
