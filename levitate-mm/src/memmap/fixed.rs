//! A vector with a fixed capacity and no allocation, for the lists the memory map keeps
//! (reservations, warnings, dynamic requests): the map is built before any heap exists.

/// Up to `N` values of a `Copy` type, in insertion (or explicit) order. Slots past `len` hold a
/// filler value that is never exposed.
#[derive(Clone, Copy)]
pub(super) struct FixedVec<T: Copy, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy, const N: usize> FixedVec<T, N> {
    /// An empty vector; `fill` only initialises the unused slots.
    pub(super) const fn new(fill: T) -> Self {
        Self {
            items: [fill; N],
            len: 0,
        }
    }

    pub(super) fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Room left.
    pub(super) fn spare(&self) -> usize {
        N - self.len
    }

    /// Forgets every value.
    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `value`; gives it back when full.
    pub(super) fn push(&mut self, value: T) -> Result<(), T> {
        self.insert(self.len, value)
    }

    /// Inserts `value` before position `at` (clamped to `len`); gives it back when full.
    pub(super) fn insert(&mut self, at: usize, value: T) -> Result<(), T> {
        if self.len == N {
            return Err(value);
        }
        let at = at.min(self.len);
        self.items.copy_within(at..self.len, at + 1);
        self.items[at] = value;
        self.len += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::FixedVec;

    #[test]
    fn push_insert_and_capacity() {
        let mut v = FixedVec::<u8, 3>::new(0);
        assert_eq!(v.push(1), Ok(()));
        assert_eq!(v.insert(0, 2), Ok(()));
        assert_eq!(v.insert(99, 3), Ok(()));
        assert_eq!(v.as_slice(), [2, 1, 3]);
        assert_eq!((v.len(), v.spare()), (3, 0));
        assert_eq!(v.push(4), Err(4));
        assert_eq!(v.as_slice(), [2, 1, 3]);
    }
}
