//! Statistics: free blocks per zone and order (the /proc/buddyinfo line), frame totals,
//! frames per owner, misuse and failure counters, and Linux's fragmentation index. A `Stats`
//! is a copy, taken in O(zones x orders).

use super::{Buddy, Misuse, Owner, Zone, FRAGMENTATION_ORDER, MAX_ORDER, ORDERS, ZONES};
use core::fmt;

/// Refused calls, per kind of misuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MisuseCounts([u64; Misuse::COUNT]);

impl MisuseCounts {
    /// How many calls were refused for `kind`.
    pub const fn get(&self, kind: Misuse) -> u64 {
        self.0[kind as usize]
    }

    /// All refused calls.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each kind with its count.
    pub fn iter(&self) -> impl Iterator<Item = (Misuse, u64)> + '_ {
        Misuse::ALL.iter().map(|&k| (k, self.get(k)))
    }

    pub(super) fn record(&mut self, kind: Misuse) {
        self.0[kind as usize] += 1;
    }
}

/// One zone's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneStats {
    /// Which zone.
    pub zone: Zone,
    /// Frames the zone manages.
    pub managed_frames: u64,
    /// Frames free.
    pub free_frames: u64,
    /// Free blocks of each order.
    pub free_blocks: [u64; ORDERS],
}

impl ZoneStats {
    /// Linux's unusable free space index at `order`, in thousandths: the share of free memory
    /// in blocks too small for `order` (1000 when nothing is free).
    pub fn unusable_free_index(&self, order: u8) -> u32 {
        unusable_free_index(&self.free_blocks, self.free_frames, order)
    }
}

/// A snapshot of the allocator's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Per zone, in address order.
    pub zones: [ZoneStats; ZONES],
    /// Frames managed (every usable frame of the layout).
    pub managed_frames: u64,
    /// Frames free.
    pub free_frames: u64,
    /// Frames allocated, per owner (index: `Owner as usize`).
    pub allocated: [u64; Owner::COUNT],
    /// Refused calls, per kind.
    pub misuse: MisuseCounts,
    /// Allocations that failed for lack of memory.
    pub alloc_failures: u64,
    /// Allocations that found a use after free (poisoning).
    pub use_after_free: u64,
    /// Whether poisoning is on.
    pub poisoning: bool,
}

impl Stats {
    /// Free blocks of each order, all zones together.
    pub fn free_blocks(&self) -> [u64; ORDERS] {
        let mut sum = [0; ORDERS];
        for z in &self.zones {
            for (s, n) in sum.iter_mut().zip(z.free_blocks) {
                *s += n;
            }
        }
        sum
    }

    /// Frames allocated to `owner`.
    pub fn allocated_to(&self, owner: Owner) -> u64 {
        self.allocated[owner.index()]
    }

    /// Frames allocated, all owners together.
    pub fn allocated_frames(&self) -> u64 {
        self.allocated.iter().sum()
    }

    /// The order of the largest free block.
    pub fn largest_free_order(&self) -> Option<u8> {
        let blocks = self.free_blocks();
        (0..=MAX_ORDER).rev().find(|&o| blocks[usize::from(o)] > 0)
    }

    /// Linux's unusable free space index (mm/vmstat.c `unusable_free_index`) at `order`, over
    /// all zones, in thousandths: (free frames - free frames in blocks of `order` or more) /
    /// free frames. 0: every free frame could serve the order; 1000: none could, or nothing is
    /// free.
    pub fn unusable_free_index(&self, order: u8) -> u32 {
        unusable_free_index(&self.free_blocks(), self.free_frames, order)
    }

    /// The fragmentation figure: [`Self::unusable_free_index`] at [`FRAGMENTATION_ORDER`]
    /// (2 MiB), in thousandths.
    pub fn fragmentation(&self) -> u32 {
        self.unusable_free_index(FRAGMENTATION_ORDER)
    }

    /// The free blocks in /proc/buddyinfo's layout, one line per zone that manages frames.
    pub fn buddyinfo(&self) -> BuddyInfo<'_> {
        BuddyInfo(self)
    }
}

/// /proc/buddyinfo as Linux prints it (`Node 0, zone   Normal` then the free block count of
/// each order, six wide), one line per non-empty zone; without Linux's trailing space and
/// final newline.
pub struct BuddyInfo<'s>(&'s Stats);

impl fmt::Display for BuddyInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for z in self.0.zones.iter().filter(|z| z.managed_frames > 0) {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "Node 0, zone {:>8}", z.zone.as_str())?;
            for n in z.free_blocks {
                write!(f, " {n:6}")?;
            }
        }
        Ok(())
    }
}

fn unusable_free_index(blocks: &[u64; ORDERS], free_frames: u64, order: u8) -> u32 {
    if free_frames == 0 {
        return 1000;
    }
    let suitable: u64 = (order.min(MAX_ORDER)..=MAX_ORDER)
        .map(|o| blocks[usize::from(o)] << o)
        .sum();
    (free_frames.saturating_sub(suitable) * 1000 / free_frames) as u32
}

impl Buddy<'_> {
    /// Free frames in all zones: `stats().free_frames` without building the whole record (the
    /// kernel reads it after every buddy use to update the pressure level).
    #[inline]
    pub fn free_frames(&self) -> u64 {
        self.zones.iter().map(|z| z.free_frames).sum()
    }

    /// Managed frames in all zones: `stats().managed_frames`, as cheaply.
    #[inline]
    pub fn managed_frames(&self) -> u64 {
        self.zones.iter().map(|z| z.managed).sum()
    }

    /// Free and managed frames for a pressure policy, when the free frames moved by at least
    /// 1/1024 of the managed ones since the last report (or on the first call); `None`
    /// otherwise. Calling it after every use of the buddy keeps a policy's view within 0.1 %
    /// of the truth at a compare per call, instead of a percentage (a division) per call.
    #[inline]
    pub fn usage_report(&mut self) -> Option<(u64, u64)> {
        let free = self.free_frames();
        if free.abs_diff(self.reported_free) < self.report_step {
            return None;
        }
        self.reported_free = free;
        Some((free, self.managed_frames()))
    }

    /// The figures now.
    pub fn stats(&self) -> Stats {
        let zones = Zone::ALL.map(|zone| {
            let area = &self.zones[zone.index()];
            ZoneStats {
                zone,
                managed_frames: area.managed,
                free_frames: area.free_frames,
                free_blocks: area.counts,
            }
        });
        Stats {
            zones,
            managed_frames: zones.iter().map(|z| z.managed_frames).sum(),
            free_frames: zones.iter().map(|z| z.free_frames).sum(),
            allocated: self.allocated,
            misuse: self.misuse,
            alloc_failures: self.alloc_failures,
            use_after_free: self.use_after_free,
            poisoning: self.poisoning,
        }
    }
}
