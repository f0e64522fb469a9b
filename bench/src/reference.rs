//! The yardstick: a minimal Linux-style buddy (orders 0-10, one 16-byte entry per frame,
//! doubly linked free lists) with a per-CPU list of single frames in front (batch 32,
//! high 160, like Levitate's defaults). It has NO misuse checks at all: a double free, a
//! wrong order or a foreign address corrupts it silently. It exists only to show how fast
//! the same job can be done, so "near the limit" has a number; never use it for real.

use spin::Mutex;

/// Largest order.
const MAX_ORDER: u8 = 10;
const NONE: u32 = u32::MAX;
const BATCH: usize = 32;
const HIGH: usize = 160;

/// One frame's entry: 16 bytes, as Levitate's `Page`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    next: u32,
    prev: u32,
    order: u8,
    free: bool,
    _pad: [u8; 6],
}

/// The buddy over frames `0..n` (`n` a multiple of 2^MAX_ORDER).
pub struct RefBuddy {
    entries: Vec<Entry>,
    heads: [u32; MAX_ORDER as usize + 1],
}

impl RefBuddy {
    /// All of `frames` free.
    pub fn new(frames: u32) -> Self {
        assert!(frames.is_multiple_of(1 << MAX_ORDER));
        let empty = Entry {
            next: NONE,
            prev: NONE,
            order: 0,
            free: false,
            _pad: [0; 6],
        };
        let mut b = Self {
            entries: vec![empty; frames as usize],
            heads: [NONE; MAX_ORDER as usize + 1],
        };
        for i in (0..frames).step_by(1 << MAX_ORDER) {
            b.push(i, MAX_ORDER);
        }
        b
    }

    fn push(&mut self, i: u32, order: u8) {
        let head = self.heads[order as usize];
        self.entries[i as usize] = Entry {
            next: head,
            prev: NONE,
            order,
            free: true,
            _pad: [0; 6],
        };
        if head != NONE {
            self.entries[head as usize].prev = i;
        }
        self.heads[order as usize] = i;
    }

    fn unlink(&mut self, i: u32) {
        let e = self.entries[i as usize];
        if e.prev == NONE {
            self.heads[e.order as usize] = e.next;
        } else {
            self.entries[e.prev as usize].next = e.next;
        }
        if e.next != NONE {
            self.entries[e.next as usize].prev = e.prev;
        }
        self.entries[i as usize].free = false;
    }

    /// A block of 2^`order` frames: its first frame.
    pub fn alloc(&mut self, order: u8) -> Option<u32> {
        let mut o = order;
        while self.heads[o as usize] == NONE {
            o += 1;
            if o > MAX_ORDER {
                return None;
            }
        }
        let i = self.heads[o as usize];
        self.unlink(i);
        while o > order {
            o -= 1;
            self.push(i + (1 << o), o);
        }
        Some(i)
    }

    /// Gives the block back, merging with free buddies.
    pub fn free(&mut self, mut i: u32, mut order: u8) {
        while order < MAX_ORDER {
            let buddy = i ^ (1 << order);
            match self.entries.get(buddy as usize) {
                Some(e) if e.free && e.order == order => {}
                _ => break,
            }
            self.unlink(buddy);
            i &= !(1 << order);
            order += 1;
        }
        self.push(i, order);
    }
}

/// One CPU's list of single frames, on its own cache lines.
#[repr(align(128))]
struct CpuList {
    frames: Mutex<Vec<u32>>,
}

/// The reference buddy behind one lock, with per-CPU lists in front.
pub struct Reference {
    buddy: Mutex<RefBuddy>,
    cpus: Vec<CpuList>,
}

impl Reference {
    /// `frames` frames (a multiple of 1024), `cpus` lists.
    pub fn new(frames: u32, cpus: usize) -> Self {
        Self {
            buddy: Mutex::new(RefBuddy::new(frames)),
            cpus: (0..cpus)
                .map(|_| CpuList {
                    frames: Mutex::new(Vec::with_capacity(HIGH + BATCH + 1)),
                })
                .collect(),
        }
    }

    /// Order 0 from `cpu`'s list, refilled in batches; others from the buddy.
    pub fn alloc(&self, cpu: usize, order: u8) -> Option<u32> {
        if order != 0 {
            return self.buddy.lock().alloc(order);
        }
        let mut list = self.cpus[cpu].frames.lock();
        if let Some(f) = list.pop() {
            return Some(f);
        }
        let mut buddy = self.buddy.lock();
        for _ in 0..BATCH {
            match buddy.alloc(0) {
                Some(f) => list.push(f),
                None => break,
            }
        }
        drop(buddy);
        list.pop()
    }

    /// Order 0 to `cpu`'s list, drained in batches above `HIGH`; others to the buddy.
    pub fn free(&self, cpu: usize, frame: u32, order: u8) {
        if order != 0 {
            return self.buddy.lock().free(frame, order);
        }
        let mut list = self.cpus[cpu].frames.lock();
        list.push(frame);
        if list.len() > HIGH {
            let mut buddy = self.buddy.lock();
            for _ in 0..BATCH {
                if let Some(f) = list.pop() {
                    buddy.free(f, 0);
                }
            }
        }
    }
}
