//! In-kernel tests of the screen console.
