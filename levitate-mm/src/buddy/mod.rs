//! The buddy frame allocator (in progress).
