//! Frame-pointer backtraces. The kernel is built with `-C force-frame-pointers=yes`, so every
//! function's prologue pushes the AAPCS64 frame record `{previous x29, x30}` and points x29 at
//! it. The walker trusts nothing: a frame pointer outside the known stacks, misaligned, or not
//! moving toward the stack's top ends the walk instead of faulting. The chain may move from
//! one stack to another (from the exception stack into the interrupted kernel stack), but
//! within one stack it must climb.

use core::ops::Range;

/// Most frames a backtrace prints.
pub const MAX_FRAMES: usize = 64;

/// Walks the frame-record chain from `fp`, calling `visit` with each return address.
/// `stacks` are the address ranges frame records may live in; `read` loads a u64 from an
/// address already checked to lie inside one of them. Returns the number of frames visited.
pub fn walk(
    mut fp: u64,
    stacks: &[Range<u64>],
    read: impl Fn(u64) -> u64,
    mut visit: impl FnMut(u64),
) -> usize {
    let stack_of = |fp: u64| {
        stacks
            .iter()
            .position(|s| fp >= s.start && fp.checked_add(16).is_some_and(|end| end <= s.end))
    };
    let mut frames = 0;
    while frames < MAX_FRAMES {
        let Some(here) = stack_of(fp).filter(|_| fp != 0 && fp.is_multiple_of(16)) else {
            break;
        };
        let next = read(fp);
        let lr = read(fp + 8);
        if lr == 0 {
            break;
        }
        visit(lr);
        frames += 1;
        if stack_of(next) == Some(here) && next <= fp {
            break;
        }
        fp = next;
    }
    frames
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::vec::Vec;

    #[test]
    fn follows_chain_and_stops_at_bounds() {
        let mem: HashMap<u64, u64> = [
            (0x1000, 0x1040),
            (0x1008, 0xaaa),
            (0x1040, 0x1080),
            (0x1048, 0xbbb),
            (0x1080, 0x9000), // outside the stack: the walk ends after this frame
            (0x1088, 0xccc),
        ]
        .into_iter()
        .collect();
        let mut seen = Vec::new();
        let n = walk(0x1000, &[0x1000..0x2000], |a| mem[&a], |lr| seen.push(lr));
        assert_eq!(n, 3);
        assert_eq!(seen, [0xaaa, 0xbbb, 0xccc]);
    }

    #[test]
    fn crosses_from_one_stack_into_another() {
        // Handler frames on an exception stack high in memory, then the interrupted stack lower.
        let mem: HashMap<u64, u64> = [
            (0x9000, 0x1000),
            (0x9008, 0xaaa),
            (0x1000, 0x1040),
            (0x1008, 0xbbb),
            (0x1040, 0),
            (0x1048, 0xccc),
        ]
        .into_iter()
        .collect();
        let mut seen = Vec::new();
        walk(
            0x9000,
            &[0x1000..0x2000, 0x8000..0xa000],
            |a| mem[&a],
            |lr| seen.push(lr),
        );
        assert_eq!(seen, [0xaaa, 0xbbb, 0xccc]);
    }

    #[test]
    fn rejects_loops_and_misalignment() {
        let mem: HashMap<u64, u64> = [(0x1000, 0x1000), (0x1008, 0xaaa)].into_iter().collect();
        let mut seen = Vec::new();
        walk(0x1000, &[0x1000..0x2000], |a| mem[&a], |lr| seen.push(lr));
        assert_eq!(seen, [0xaaa], "a self-loop ends after one frame");
        assert_eq!(
            walk(0x1008, &[0x1000..0x2000], |_| unreachable!(), |_| {}),
            0
        );
        assert_eq!(walk(0, &[0x0..0x2000], |_| unreachable!(), |_| {}), 0);
    }
}
