//! 512-bit maps, one bit per frame of a 2 MiB chunk, and the word-at-a-time searches the
//! bitmap layer runs on them. Everything here works on whole `u64` words with shifts, masks
//! and trailing/leading zero counts; no loop walks single bits except [`longest_free`], which
//! only the invariant checker calls.

/// Words in a chunk's map.
pub(super) const WORDS: usize = 8;
/// Bits (frames) in a chunk's map.
pub(super) const BITS: u32 = 512;

/// One bit per frame of a chunk, frame `i` at bit `i % 64` of word `i / 64`.
pub(super) type Bits = [u64; WORDS];

/// Whether bit `i` is set.
pub(super) const fn get(bits: &Bits, i: u32) -> bool {
    (bits[(i / 64) as usize] >> (i % 64)) & 1 != 0
}

/// Sets bit `i`.
pub(super) fn set(bits: &mut Bits, i: u32) {
    bits[(i / 64) as usize] |= 1 << (i % 64);
}

/// Clears bit `i`.
pub(super) fn clear(bits: &mut Bits, i: u32) {
    bits[(i / 64) as usize] &= !(1 << (i % 64));
}

/// The bits of word `word` that lie in `start..end`.
fn word_mask(word: usize, start: u32, end: u32) -> u64 {
    let low = word as u32 * 64;
    let from = start.max(low) - low;
    let to = end.min(low + 64) - low;
    let below_to = if to == 64 { !0 } else { (1u64 << to) - 1 };
    below_to & (!0u64 << from)
}

/// The words `start..start + len` touches, each with the mask of its bits in the range. `len`
/// is at least 1 and the range lies inside the map.
fn spans(start: u32, len: u32) -> impl Iterator<Item = (usize, u64)> {
    let end = start + len;
    (start as usize / 64..=(end as usize - 1) / 64).map(move |w| (w, word_mask(w, start, end)))
}

/// Sets bits `start..start + len`.
pub(super) fn set_range(bits: &mut Bits, start: u32, len: u32) {
    for (w, mask) in spans(start, len) {
        bits[w] |= mask;
    }
}

/// Clears bits `start..start + len`.
pub(super) fn clear_range(bits: &mut Bits, start: u32, len: u32) {
    for (w, mask) in spans(start, len) {
        bits[w] &= !mask;
    }
}

/// Whether every bit of `start..start + len` is set (true for an empty range).
pub(super) fn all_set(bits: &Bits, start: u32, len: u32) -> bool {
    len == 0 || spans(start, len).all(|(w, mask)| bits[w] & mask == mask)
}

/// The first set bit at or after `from` in the map whose word `w` is `word(w)`, or [`BITS`].
/// Taking the words through a closure lets callers search a combination of maps (the
/// union of run starts and free frames, say) without building it.
pub(super) fn next_set(from: u32, word: impl Fn(usize) -> u64) -> u32 {
    if from >= BITS {
        return BITS;
    }
    let mut w = (from / 64) as usize;
    let mut x = word(w) & (!0u64 << (from % 64));
    loop {
        if x != 0 {
            return w as u32 * 64 + x.trailing_zeros();
        }
        w += 1;
        if w == WORDS {
            return BITS;
        }
        x = word(w);
    }
}

/// The last set bit below `before`, if any.
pub(super) fn prev_set(bits: &Bits, before: u32) -> Option<u32> {
    let last = before.min(BITS).checked_sub(1)?;
    let mut w = (last / 64) as usize;
    let top = last % 64;
    let mut x = bits[w]
        & if top == 63 {
            !0
        } else {
            (1u64 << (top + 1)) - 1
        };
    loop {
        if x != 0 {
            return Some(w as u32 * 64 + 63 - x.leading_zeros());
        }
        w = w.checked_sub(1)?;
        x = bits[w];
    }
}

/// Bit `i` set iff bits `i..i + n` of `x` are all set, for `n` in 1..=64 (runs that would
/// pass bit 63 do not count). Doubling: after each step bit `i` stands for a run of `have`
/// bits from `i`; and-ing with itself shifted by `s <= have` extends that to `have + s`. So a
/// run of 64 costs six shift-and steps, a run of 1 none.
const fn run_starts(x: u64, n: u32) -> u64 {
    let (mut x, mut have) = (x, 1);
    while have < n {
        let step = if n - have < have { n - have } else { have };
        x &= x >> step;
        have += step;
    }
    x
}

/// What a run search found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Search {
    /// The first frame of the first run of `n` free frames at or after `from`.
    pub found: Option<u32>,
    /// The first free frame at or after `from` ([`BITS`] if none): where the chunk's hint
    /// moves to when the run does not start there.
    pub first_free: u32,
}

/// First fit: the lowest run of `n` (1..=512) clear bits of `used` at or after `from`.
///
/// One pass over the words. A run either lies inside one word (possible only for `n <= 64`;
/// [`run_starts`] finds it) or reaches the top of the word it starts in: then it is the
/// word's top run of free bits (its leading zeros of `used`), carried into the next words
/// through their bottom free bits (trailing zeros) until it is long enough or broken. A
/// carried run starts below anything found inside the current word, so it is tried first;
/// when it breaks, the current word has a used bit above it, so the word's own top run is a
/// new one.
pub(super) fn find_run(used: &Bits, n: u32, from: u32) -> Search {
    let mut first_free = BITS;
    if from >= BITS || n == 0 || n > BITS {
        return Search {
            found: None,
            first_free,
        };
    }
    let mut w = (from / 64) as usize;
    let mut free = !used[w] & (!0u64 << (from % 64));
    let (mut carry_start, mut carry_len) = (0u32, 0u32);
    loop {
        let base = w as u32 * 64;
        if free != 0 && first_free == BITS {
            first_free = base + free.trailing_zeros();
        }
        let found = 'word: {
            if carry_len > 0 {
                let bottom = (!free).trailing_zeros();
                if carry_len + bottom >= n {
                    break 'word Some(carry_start);
                }
                if bottom == 64 {
                    carry_len += 64;
                    break 'word None;
                }
                carry_len = 0;
            }
            if n <= 64 {
                let starts = run_starts(free, n);
                if starts != 0 {
                    break 'word Some(base + starts.trailing_zeros());
                }
            }
            let top = (!free).leading_zeros();
            carry_start = base + 64 - top;
            carry_len = top;
            None
        };
        if found.is_some() {
            return Search { found, first_free };
        }
        w += 1;
        if w == WORDS {
            return Search {
                found: None,
                first_free,
            };
        }
        free = !used[w];
    }
}

/// The free run around a range just cleared: the lowest `lo` and highest `hi` such that
/// every bit of `lo..hi` is clear, given that `start..end` is.
pub(super) fn free_extent(used: &Bits, start: u32, end: u32) -> (u32, u32) {
    let lo = prev_set(used, start).map_or(0, |i| i + 1);
    let hi = next_set(end, |w| used[w]);
    (lo, hi)
}

/// The longest run of clear bits, bit by bit: for the invariant checker only.
pub(super) fn longest_free(used: &Bits) -> u32 {
    let (mut longest, mut current) = (0, 0);
    for i in 0..BITS {
        if get(used, i) {
            current = 0;
        } else {
            current += 1;
            longest = longest.max(current);
        }
    }
    longest
}

/// Set bits in the map.
pub(super) fn count(bits: &Bits) -> u32 {
    bits.iter().map(|w| w.count_ones()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map with bits `ranges` set.
    fn map(ranges: &[(u32, u32)]) -> Bits {
        let mut b = [0; WORDS];
        for &(start, len) in ranges {
            set_range(&mut b, start, len);
        }
        b
    }

    /// First fit, bit by bit.
    fn slow_find(used: &Bits, n: u32, from: u32) -> Option<u32> {
        (from..=BITS.saturating_sub(n)).find(|&s| (s..s + n).all(|i| !get(used, i)))
    }

    #[test]
    fn ranges_set_and_clear_across_words() {
        let mut b = map(&[(60, 10)]);
        assert_eq!(b[0], 0xf << 60);
        assert_eq!(b[1], 0x3f);
        assert!(all_set(&b, 60, 10) && !all_set(&b, 59, 2) && all_set(&b, 0, 0));
        clear_range(&mut b, 62, 3);
        assert_eq!((b[0], b[1]), (0x3 << 60, 0x3e));
        set_range(&mut b, 0, BITS);
        assert_eq!(b, [!0; WORDS]);
        assert_eq!(count(&b), BITS);
    }

    #[test]
    fn next_and_prev_set_bits() {
        let b = map(&[(3, 1), (64, 1), (511, 1)]);
        assert_eq!(next_set(0, |w| b[w]), 3);
        assert_eq!(next_set(4, |w| b[w]), 64);
        assert_eq!(next_set(65, |w| b[w]), 511);
        assert_eq!(next_set(512, |w| b[w]), BITS);
        assert_eq!(prev_set(&b, 512), Some(511));
        assert_eq!(prev_set(&b, 511), Some(64));
        assert_eq!(prev_set(&b, 64), Some(3));
        assert_eq!(prev_set(&b, 3), None);
        assert_eq!(prev_set(&b, 0), None);
        assert_eq!(free_extent(&b, 10, 20), (4, 64));
    }

    #[test]
    fn run_starts_marks_every_fitting_position() {
        assert_eq!(run_starts(0b1110_0111, 3), 0b0010_0001);
        assert_eq!(run_starts(!0, 64), 1);
        assert_eq!(run_starts(!0 >> 1, 64), 0);
        assert_eq!(run_starts(0b101, 1), 0b101);
    }

    #[test]
    fn runs_are_found_inside_words_across_words_and_over_whole_words() {
        let full = [!0; WORDS];
        let mut b = full;
        clear_range(&mut b, 62, 5);
        assert_eq!(find_run(&b, 5, 0).found, Some(62));
        assert_eq!(find_run(&b, 6, 0).found, None);
        assert_eq!(find_run(&b, 6, 0).first_free, 62);
        clear_range(&mut b, 100, 300);
        assert_eq!(find_run(&b, 300, 0).found, Some(100));
        assert_eq!(find_run(&b, 300, 101).found, None);
        assert_eq!(find_run(&b, 2, 64).found, Some(64));
        assert_eq!(find_run(&b, 3, 65).found, Some(100));
        assert_eq!(find_run(&[0; WORDS], 512, 0).found, Some(0));
        assert_eq!(find_run(&[0; WORDS], 512, 1).found, None);
        assert_eq!(find_run(&full, 1, 0).first_free, BITS);
    }

    #[test]
    fn first_fit_agrees_with_a_bit_by_bit_search() {
        // A fixed pseudo-random walk over maps of every density.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let mut b = [0; WORDS];
            for w in &mut b {
                // Sparse, dense and mixed words.
                *w = match round % 3 {
                    0 => next() & next() & next(),
                    1 => next() | next(),
                    _ => next(),
                };
            }
            let n = (next() % 200) as u32 + 1;
            let from = (next() % 512) as u32;
            let s = find_run(&b, n, from);
            assert_eq!(s.found, slow_find(&b, n, from), "{b:x?} n={n} from={from}");
            let first = (from..BITS).find(|&i| !get(&b, i)).unwrap_or(BITS);
            assert_eq!(s.first_free, first);
        }
    }
}
