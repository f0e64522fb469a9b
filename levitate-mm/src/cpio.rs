//! CPIO newc archive reader for the initramfs (in progress).
