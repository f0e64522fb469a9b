//! Every kind of refused free: the exact error, its message, the counter, and an allocator
//! left exactly as it was (down to every `Page`).

use super::*;
use crate::buddy::{FreeError, Holder, Misuse, NullMemory};

/// 1 MiB of RAM at 0x4000_0000: 64 usable frames, 256 KiB reserved, 128 usable frames.
fn fixture() -> Fixture {
    Fixture::new(
        &[(0x4000_0000, 0x4010_0000)],
        &[(0x4000_0000, 0x4004_0000), (0x4008_0000, 0x4010_0000)],
    )
}

/// Frees, expects `want`, and checks that nothing but the counter changed.
fn refused(b: &mut Buddy<'_>, addr: u64, order: u8, want: FreeError, message: &str) {
    let pages = b.pages.to_vec();
    let before = snapshot(b);
    let counted = b.stats().misuse.get(want.kind());
    let got = b.free(pa(addr), order, &mut NullMemory);
    assert_eq!(got, Err(want));
    assert_eq!(want.to_string(), message);
    assert_eq!(want.addr(), pa(addr));
    assert_eq!(b.pages, &pages[..], "pages changed by a refused free");
    assert_eq!(snapshot(b), before);
    assert_eq!(b.stats().misuse.get(want.kind()), counted + 1);
    b.validate().unwrap();
}

#[test]
fn addresses_the_allocator_does_not_manage() {
    let mut f = fixture();
    let mut b = f.buddy();
    refused(
        &mut b,
        0x4000_0000,
        19,
        FreeError::BadOrder {
            addr: pa(0x4000_0000),
            order: 19,
        },
        "free of 0x40000000 (order 19): order is above the maximum 18",
    );
    for outside in [0x2000_0000, 0x4010_0000, u64::MAX] {
        refused(
            &mut b,
            outside,
            0,
            FreeError::OutsideRam {
                addr: pa(outside),
                order: 0,
            },
            &std::format!("free of {outside:#x} (order 0): the address is not RAM"),
        );
    }
    refused(
        &mut b,
        0x4004_0000,
        0,
        FreeError::Reserved {
            addr: pa(0x4004_0000),
            order: 0,
        },
        "free of 0x40040000 (order 0): the frame is reserved, not managed by the allocator",
    );
}

#[test]
fn misaligned_and_wrong_order() {
    let mut f = fixture();
    let mut b = f.buddy();
    let (x, _) = take(&mut b, Request::new(0, Owner::Test), &mut NullMemory);
    assert_eq!(x, pa(0x4000_0000));
    refused(
        &mut b,
        0x4000_0800,
        0,
        FreeError::Misaligned {
            addr: pa(0x4000_0800),
            order: 0,
        },
        "free of 0x40000800 (order 0): not aligned to 4 KiB",
    );
    // A free frame never handed out, freed with an order it cannot be aligned to.
    refused(
        &mut b,
        0x4000_1000,
        1,
        FreeError::Misaligned {
            addr: pa(0x4000_1000),
            order: 1,
        },
        "free of 0x40001000 (order 1): not aligned to 8 KiB",
    );
    refused(
        &mut b,
        0x4000_0000,
        2,
        FreeError::WrongOrder {
            addr: x,
            order: 2,
            actual: 0,
            owner: Owner::Test,
        },
        "free of 0x40000000 (order 2): the block was allocated with order 0 (owner test)",
    );
    b.free(x, 0, &mut NullMemory).unwrap();
}

#[test]
fn double_frees_are_caught_before_and_after_coalescing_and_reuse() {
    let mut f = fixture();
    let mut b = f.buddy();
    let (x, _) = take(&mut b, Request::new(0, Owner::Heap), &mut NullMemory);
    let (y, _) = take(&mut b, Request::new(0, Owner::Test), &mut NullMemory);
    assert_eq!((x, y), (pa(0x4000_0000), pa(0x4000_1000)));
    b.free(x, 0, &mut NullMemory).unwrap();
    refused(
        &mut b,
        0x4000_0000,
        0,
        FreeError::DoubleFree {
            addr: x,
            order: 0,
            now: Holder::Free { block: x, order: 0 },
        },
        "double free of 0x40000000 (order 0): the block is already free",
    );
    // Freeing y merges everything back into the order-6 block: both are still caught.
    b.free(y, 0, &mut NullMemory).unwrap();
    let whole = Holder::Free { block: x, order: 6 };
    refused(
        &mut b,
        0x4000_1000,
        0,
        FreeError::DoubleFree {
            addr: y,
            order: 0,
            now: whole,
        },
        "double free of 0x40001000 (order 0): already free, in the free order-6 block at \
         0x40000000",
    );
    refused(
        &mut b,
        0x4000_0000,
        0,
        FreeError::DoubleFree {
            addr: x,
            order: 0,
            now: whole,
        },
        "double free of 0x40000000 (order 0): already free, in the free order-6 block at \
         0x40000000",
    );
    // The memory is reused by a larger block: a stale free of y is still a double free.
    let (z, _) = take(&mut b, Request::new(3, Owner::Kernel), &mut NullMemory);
    assert_eq!(z, x);
    let inside_z = Holder::Allocated {
        block: z,
        order: 3,
        owner: Owner::Kernel,
    };
    refused(
        &mut b,
        0x4000_1000,
        0,
        FreeError::DoubleFree {
            addr: y,
            order: 0,
            now: inside_z,
        },
        "double free of 0x40001000 (order 0): freed before, now inside the order-3 block at \
         0x40000000 allocated to kernel",
    );
    refused(
        &mut b,
        0x4000_2000,
        0,
        FreeError::NeverAllocated {
            addr: pa(0x4000_2000),
            order: 0,
            now: inside_z,
        },
        "free of 0x40002000 (order 0): never allocated; it is inside the order-3 block at \
         0x40000000 allocated to kernel",
    );
    refused(
        &mut b,
        0x4008_4000,
        0,
        FreeError::NeverAllocated {
            addr: pa(0x4008_4000),
            order: 0,
            now: Holder::Free {
                block: pa(0x4008_0000),
                order: 7,
            },
        },
        "free of 0x40084000 (order 0): never allocated; it is in the free order-7 block at \
         0x40080000",
    );
    assert_eq!(b.free(z, 3, &mut NullMemory), Ok(Owner::Kernel));
}

#[test]
fn counters_per_kind() {
    let mut f = fixture();
    let mut b = f.buddy();
    let mut mem = NullMemory;
    let _ = b.free(pa(0x4000_0000), 0, &mut mem); // never allocated
    let _ = b.free(pa(0x4000_0000), 0, &mut mem);
    let _ = b.free(pa(0x5000_0000), 0, &mut mem); // outside
    let _ = b.free(pa(0x4004_0000), 0, &mut mem); // reserved
    let _ = b.alloc(Request::new(30, Owner::Test), &mut mem); // bad order
    let m = b.stats().misuse;
    let counts: Vec<(&str, u64)> = m.iter().map(|(k, n)| (k.as_str(), n)).collect();
    assert_eq!(
        counts,
        [
            ("bad-order", 1),
            ("outside-ram", 1),
            ("reserved", 1),
            ("misaligned", 0),
            ("wrong-order", 0),
            ("double-free", 0),
            ("never-allocated", 2),
        ]
    );
    assert_eq!(m.total(), 5);
    assert_eq!(Misuse::ALL.len(), Misuse::COUNT);
    assert_eq!(Misuse::DoubleFree.to_string(), "double-free");
}
