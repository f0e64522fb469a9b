//! The invariant checker. O(frames): it walks every free list and every section frame by
//! frame, so property tests run it after each operation and the kernel's `memcheck` on
//! demand.
//!
//! Together the checks mean: every usable frame is in exactly one block (the section walk
//! tiles each section with aligned blocks whose frames other than the head are all tails);
//! every free block is on exactly one list, the list of its zone and order (list entries are
//! free heads of that zone and order with consistent back links, and there are as many
//! entries as free heads); no two free buddies of the same order; the counters agree.

use super::{Buddy, Owner, Zone, MAX_ORDER, STATE_ALLOCATED, STATE_FREE, STATE_TAIL};
use crate::addr::{Pfn, PhysAddr};
use crate::mem_map::Page;
use core::fmt;

/// A broken invariant, with where it is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A free list's links are broken at mem_map index `index`.
    BrokenList {
        /// The list's zone.
        zone: Zone,
        /// The list's order.
        order: u8,
        /// Where.
        index: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// A list entry is not a free head of the list's zone and order.
    BadListEntry {
        /// The list's zone.
        zone: Zone,
        /// The list's order.
        order: u8,
        /// The entry's frame.
        addr: PhysAddr,
        /// What is wrong.
        why: &'static str,
    },
    /// A list holds another number of blocks than its counter says.
    ListCount {
        /// The list's zone.
        zone: Zone,
        /// The list's order.
        order: u8,
        /// Blocks on the list.
        listed: u64,
        /// The counter.
        recorded: u64,
    },
    /// A zone's free frame total disagrees with its lists.
    ZoneFrames {
        /// The zone.
        zone: Zone,
        /// Frames on its lists.
        listed: u64,
        /// Its counter.
        recorded: u64,
    },
    /// A block is malformed or overlaps another.
    BadBlock {
        /// Its first frame (or the offending frame inside it).
        addr: PhysAddr,
        /// Its order.
        order: u8,
        /// What is wrong.
        why: &'static str,
    },
    /// A usable frame where a block must start is in no block.
    Uncovered {
        /// The frame.
        addr: PhysAddr,
    },
    /// There are free heads that no list holds.
    Unlisted {
        /// Free heads in the mem_map.
        free_heads: u64,
        /// Entries on all lists.
        listed: u64,
    },
    /// Two free buddies of the same order were not merged.
    UnmergedBuddies {
        /// The lower block.
        addr: PhysAddr,
        /// Their order.
        order: u8,
    },
    /// An owner's allocated total disagrees with the allocated heads.
    OwnerFrames {
        /// The owner.
        owner: Owner,
        /// Frames in blocks whose head names it.
        counted: u64,
        /// Its counter.
        recorded: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BrokenList {
                zone,
                order,
                index,
                why,
            } => write!(
                f,
                "buddy: {zone} order-{order} free list broken at mem_map index {index}: {why}"
            ),
            Self::BadListEntry {
                zone,
                order,
                addr,
                why,
            } => write!(
                f,
                "buddy: {zone} order-{order} free list entry {addr}: {why}"
            ),
            Self::ListCount {
                zone,
                order,
                listed,
                recorded,
            } => write!(
                f,
                "buddy: {zone} order-{order} free list holds {listed} blocks, counter says \
                 {recorded}"
            ),
            Self::ZoneFrames {
                zone,
                listed,
                recorded,
            } => write!(
                f,
                "buddy: {zone} lists hold {listed} free frames, counter says {recorded}"
            ),
            Self::BadBlock { addr, order, why } => {
                write!(f, "buddy: order-{order} block at {addr}: {why}")
            }
            Self::Uncovered { addr } => {
                write!(f, "buddy: usable frame {addr} is in no block")
            }
            Self::Unlisted { free_heads, listed } => write!(
                f,
                "buddy: {free_heads} free blocks in the mem_map but {listed} on the free lists"
            ),
            Self::UnmergedBuddies { addr, order } => write!(
                f,
                "buddy: free order-{order} buddies at {addr} were not merged"
            ),
            Self::OwnerFrames {
                owner,
                counted,
                recorded,
            } => write!(
                f,
                "buddy: {counted} frames allocated to {owner}, counter says {recorded}"
            ),
        }
    }
}

impl Buddy<'_> {
    /// Checks every invariant (see the module docs). O(frames).
    pub fn validate(&self) -> Result<(), Violation> {
        let listed = self.validate_lists()?;
        let (free_heads, owned) = self.validate_sections()?;
        if free_heads != listed {
            return Err(Violation::Unlisted { free_heads, listed });
        }
        for owner in Owner::ALL {
            let (counted, recorded) = (owned[owner.index()], self.allocated[owner.index()]);
            if counted != recorded {
                return Err(Violation::OwnerFrames {
                    owner,
                    counted,
                    recorded,
                });
            }
        }
        Ok(())
    }

    /// Walks every list; returns the number of entries.
    fn validate_lists(&self) -> Result<u64, Violation> {
        let frames = self.pages.len() as u64;
        let mut entries = 0;
        for (z, zone) in Zone::ALL.into_iter().enumerate() {
            let area = &self.zones[z];
            let mut frames_listed = 0;
            for order in 0..=MAX_ORDER {
                let o = usize::from(order);
                let (mut index, mut prev, mut listed) = (area.heads[o], Page::NONE, 0u64);
                while index != Page::NONE {
                    let broken = |why| Violation::BrokenList {
                        zone,
                        order,
                        index,
                        why,
                    };
                    let Some(page) = self.pages.get(index as usize) else {
                        return Err(broken("link outside the mem_map"));
                    };
                    if page.prev() != prev {
                        return Err(broken("back link does not match"));
                    }
                    listed += 1;
                    if listed > frames {
                        return Err(broken("the list is a cycle"));
                    }
                    let pfn = self.pfn_of(index);
                    let bad = |why| Violation::BadListEntry {
                        zone,
                        order,
                        addr: Pfn::new(pfn).addr(),
                        why,
                    };
                    if page.state() != STATE_FREE {
                        return Err(bad("not a free block head"));
                    }
                    if page.order() != order {
                        return Err(bad("its order differs from the list's"));
                    }
                    if Zone::of_pfn(pfn) != zone {
                        return Err(bad("it belongs to the other zone"));
                    }
                    prev = index;
                    index = page.next();
                }
                if listed != area.counts[o] {
                    return Err(Violation::ListCount {
                        zone,
                        order,
                        listed,
                        recorded: area.counts[o],
                    });
                }
                if (area.nonempty >> o) & 1 != u32::from(listed > 0) {
                    return Err(Violation::BrokenList {
                        zone,
                        order,
                        index: area.heads[o],
                        why: "the non-empty mask disagrees with the list",
                    });
                }
                entries += listed;
                frames_listed += listed << order;
            }
            if frames_listed != area.free_frames {
                return Err(Violation::ZoneFrames {
                    zone,
                    listed: frames_listed,
                    recorded: area.free_frames,
                });
            }
        }
        Ok(entries)
    }

    /// Walks every section block by block; returns the free heads and the frames per owner.
    fn validate_sections(&self) -> Result<(u64, [u64; Owner::COUNT]), Violation> {
        let mut free_heads = 0;
        let mut owned = [0u64; Owner::COUNT];
        for s in self.layout.sections() {
            let end = s.start + s.frames;
            let index_of = |pfn: u64| (s.first_index + (pfn - s.start)) as usize;
            let mut pfn = s.start;
            while pfn < end {
                let addr = Pfn::new(pfn).addr();
                let page = &self.pages[index_of(pfn)];
                let order = page.order();
                let bad = |why| Violation::BadBlock { addr, order, why };
                if page.state() == STATE_TAIL {
                    return Err(Violation::Uncovered { addr });
                }
                if order > MAX_ORDER {
                    return Err(bad("order above the maximum"));
                }
                let frames = 1u64 << order;
                if !pfn.is_multiple_of(frames) {
                    return Err(bad("not aligned to its size"));
                }
                if pfn + frames > end {
                    return Err(bad("runs past its section"));
                }
                let inner = &self.pages[index_of(pfn) + 1..index_of(pfn) + frames as usize];
                if let Some(i) = inner.iter().position(|p| p.state() != STATE_TAIL) {
                    return Err(Violation::BadBlock {
                        addr: Pfn::new(pfn + 1 + i as u64).addr(),
                        order,
                        why: "a block head inside another block",
                    });
                }
                match page.state() {
                    STATE_FREE => {
                        free_heads += 1;
                        let buddy = pfn ^ frames;
                        if order < MAX_ORDER && buddy >= s.start && buddy < end {
                            let b = &self.pages[index_of(buddy)];
                            if b.state() == STATE_FREE && b.order() == order {
                                return Err(Violation::UnmergedBuddies {
                                    addr: Pfn::new(pfn.min(buddy)).addr(),
                                    order,
                                });
                            }
                        }
                    }
                    STATE_ALLOCATED => match Owner::from_u8(page.owner()) {
                        Some(owner) => owned[owner.index()] += frames,
                        None => return Err(bad("allocated with an unknown owner")),
                    },
                    _ => return Err(bad("unknown page state")),
                }
                pfn += frames;
            }
        }
        Ok((free_heads, owned))
    }
}
