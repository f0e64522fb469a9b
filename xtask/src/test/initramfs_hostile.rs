//! Hostile initramfs input and console lines: large and concatenated archives, over-long lines, control characters in `cat`, OSC sequences.

use super::harness::{boot, check, Expect, Tally};
use crate::initramfs::{pack_entries, RawEntry};
use crate::qemu::RunOptions;
use crate::Result;
use levitate_mm::cpio::{S_IFDIR, S_IFREG};
use std::path::{Path, PathBuf};

const DIR: u32 = S_IFDIR | 0o755;
const FILE: u32 = S_IFREG | 0o644;

/// Files in the large archive: enough that a listing quadratic in the entries never ends.
const MANY: usize = 20_000;

/// Runs this file's scenarios on the normal build `image`.
pub fn run(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    many_files(tally, image, work, base)?;
    concatenated(tally, image, work, base)?;
    over_long_lines(tally, image, base)?;
    cat_escapes(tally, image, work, base)?;
    escape_sequences_in_input(tally, image, base)?;
    Ok(())
}

fn with_initrd(base: &RunOptions, initrd: PathBuf) -> RunOptions {
    RunOptions {
        initrd: Some(initrd),
        ..base.clone()
    }
}

fn write(work: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = work.join(name);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// 20000 files in one directory are listed, all of them, and the root too: the count `ls`
/// prints is checked, not the time (the old listing was quadratic and never finished).
fn many_files(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    let names: Vec<String> = (0..MANY).map(|i| format!("many/f{i:05}")).collect();
    let mut entries: Vec<RawEntry<'_>> = vec![("many", DIR, b""), ("readme", FILE, b"hi\n")];
    entries.extend(names.iter().map(|n| (n.as_str(), FILE, &b"x"[..])));
    let initrd = write(work, "many-files.initrd", &pack_entries(&entries)?)?;
    let out = boot(
        image,
        &with_initrd(base, initrd),
        "ls /many\nls /\ncat /many/f12345\npoweroff\n",
    )?;
    let total = format!("initramfs: {} entries", MANY + 2);
    let listed = format!("\n{MANY} entries\n");
    tally.record(
        "initramfs: 20000 files listed",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    &total,
                    "-rw-r--r--        1  f00000\n",
                    "-rw-r--r--        1  f19999\n",
                    &listed,
                    "drwxr-xr-x        0  many/\n",
                    "\n2 entries\n",
                    "\nx\n",
                ],
                absent: &["PANIC", "corrupt"],
            },
        ),
    );
    Ok(())
}

/// A vendor ramdisk and a boot ramdisk back to back, as Android's bootloader passes them: the
/// second overrides a file of the first. A corrupt second archive refuses the whole initrd.
fn concatenated(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    let mut vendor = pack_entries(&[
        ("etc", DIR, b""),
        ("etc/motd", FILE, b"motd of the vendor ramdisk\n"),
        ("vendor.txt", FILE, b"only in the vendor ramdisk\n"),
    ])?;
    // Cut the block padding back to the 4-byte alignment the format asks for.
    while vendor.last() == Some(&0) {
        vendor.pop();
    }
    vendor.push(0);
    vendor.resize(vendor.len().next_multiple_of(4) + 8, 0);
    let boot_ramdisk = pack_entries(&[
        ("etc/motd", FILE, b"motd of the boot ramdisk\n"),
        ("init", FILE, b"#!/bin/sh\n"),
    ])?;
    let initrd = write(
        work,
        "concatenated.initrd",
        &[vendor.clone(), boot_ramdisk].concat(),
    )?;
    let out = boot(
        image,
        &with_initrd(base, initrd),
        "cat /etc/motd\ncat /vendor.txt\nls /\npoweroff\n",
    )?;
    tally.record(
        "initramfs: concatenated archives, the later overrides",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "initramfs: 2 concatenated archives, 4 distinct paths",
                    "\nmotd of the boot ramdisk\n",
                    "\nonly in the vendor ramdisk\n",
                    "  init\n",
                    "  vendor.txt\n",
                    "\n3 entries\n",
                ],
                absent: &["motd of the vendor ramdisk", "corrupt", "PANIC"],
            },
        ),
    );

    let start = vendor.len();
    let mut broken = vendor;
    broken.extend_from_slice(b"070701zzzzzzzz");
    broken.resize(start + 512, b'0');
    let initrd = write(work, "concatenated-corrupt.initrd", &broken)?;
    let out = boot(
        image,
        &with_initrd(base, initrd),
        "cat /vendor.txt\nls /\npoweroff\n",
    )?;
    let logged = format!(
        "corrupt initramfs: archive 2 of the concatenation (starting at offset {start:#x}): \
         header at offset {start:#x}: field 'ino' is not 8 hex digits (none of it is used)"
    );
    tally.record(
        "initramfs: corrupt second archive names it and fails closed",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    &logged,
                    "cat: corrupt initramfs: archive 2 of the concatenation",
                    "ls: corrupt initramfs: archive 2 of the concatenation",
                ],
                absent: &["only in the vendor ramdisk", "PANIC"],
            },
        ),
    );
    Ok(())
}

/// Lines over the limit are refused with a message, not run cut short (a cut-off line can be
/// a different command), and the shell carries on.
fn over_long_lines(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let bad_path = format!("ls {}", "a".repeat(400));
    // Cut at 256 bytes this would still be `cat hello.txt`.
    let shortened = format!("cat hello.txt{}extra", " ".repeat(250));
    let input = format!("{bad_path}\n{shortened}\nls /etc\npoweroff\n");
    let out = boot(image, base, &input)?;
    let first = format!("line too long: {} bytes, at most 256", bad_path.len());
    let second = format!("line too long: {} bytes, at most 256", shortened.len());
    tally.record(
        "shell: over-long lines are refused",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[&first, &second, "  motd\n", "\n2 entries\n"],
                absent: &["no such file or directory", "Hello from the initramfs."],
            },
        ),
    );
    Ok(())
}

/// `cat` of a file full of terminal controls shows them escaped, and so does `ls` for a
/// name with one; nothing reaches the terminal raw.
fn cat_escapes(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    let evil: &[u8] = b"A\x1b]0;pwned\x07B\x1b[2J\x1b[31mC\r\x9b\xc2\x9bD\tE\n";
    let initrd = write(
        work,
        "escapes.initrd",
        &pack_entries(&[("evil.txt", FILE, evil), ("name\x1b[2Jx", FILE, b"")])?,
    )?;
    let out = boot(
        image,
        &with_initrd(base, initrd),
        "cat evil.txt\nls /\npoweroff\n",
    )?;
    tally.record(
        "initramfs: cat and ls escape control characters",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "\nA\\x1b]0;pwned\\x07B\\x1b[2J\\x1b[31mC\\x0d\\x9b\\u{9b}D\tE\n",
                    "  name\\x1b[2Jx\n",
                ],
                absent: &["\x1b]0;pwned", "\x1b[2J", "\x1b[31m", "\u{9b}"],
            },
        ),
    );
    Ok(())
}

/// Escape sequences a terminal sends (OSC replies, SS3 function keys, DCS, CSI) are swallowed
/// whole: the commands around them run as typed.
fn escape_sequences_in_input(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let input = "he\x1b]11;rgb:0000/0000/0000\x07lp\n\
                 he\x1bOPap\n\
                 ls \x1bP1$r0m\x1b\\/etc\x1b]0;t\x1b\\\n\
                 me\x1b[1;5Aminfo\n\
                 poweroff\n";
    let out = boot(image, base, input)?;
    tally.record(
        "shell: OSC, SS3, DCS and CSI input leave no garbage",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &["list the commands", "boot arena:", "  motd\n", "MemFree:"],
                absent: &["unknown command", "no such file"],
            },
        ),
    );
    Ok(())
}
