//! Architecture support. Only aarch64 exists; its pure parts also build on the host for tests.

pub mod aarch64;
