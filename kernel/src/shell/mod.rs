//! The console shell: `levitate> `. Commands live in one table (`commands::COMMANDS`); adding
//! one is adding a row.

mod commands;
mod interrupts;
pub mod line;
mod mm;
mod screen;

use crate::{console, print, println};
use alloc::string::String;
use core::fmt;
use line::LineEditor;

/// The prompt.
pub const PROMPT: &str = "levitate> ";

/// What a command can report besides success.
pub enum CmdError {
    /// The arguments were wrong: the shell prints the command's usage.
    Usage,
    /// The command ran and failed; the message says why.
    Failed(String),
}

/// A shell command.
pub struct Command {
    /// What the user types.
    pub name: &'static str,
    /// Argument synopsis for usage lines, e.g. `[MESSAGE]`.
    pub args: &'static str,
    /// One line for `help`.
    pub help: &'static str,
    /// The implementation; receives the words after the name.
    pub run: fn(&[&str]) -> Result<(), CmdError>,
}

/// Looks a command up by name.
pub fn find(name: &str) -> Option<&'static Command> {
    commands::COMMANDS.iter().find(|c| c.name == name)
}

/// Runs one command line, printing its output or error.
pub fn execute(line: &str) {
    let mut words = line.split_ascii_whitespace();
    let Some(name) = words.next() else { return };
    let args: alloc::vec::Vec<&str> = words.collect();
    match find(name) {
        None => println!("unknown command: {name} (try help)"),
        Some(cmd) => match (cmd.run)(&args) {
            Ok(()) => {}
            Err(CmdError::Usage) if cmd.args.is_empty() => {
                println!("usage: {} (takes no arguments)", cmd.name)
            }
            Err(CmdError::Usage) => println!("usage: {} {}", cmd.name, cmd.args),
            Err(CmdError::Failed(why)) => println!("{}: {why}", cmd.name),
        },
    }
    // The memory strip shows what the stress left behind.
    if name == "stress" {
        crate::screen::redraw_memory();
    }
}

/// Bytes from outside (file contents, names in the initramfs) as text that cannot drive the
/// terminal: printable text, tab and newline pass; every other character (the C0 controls
/// such as ESC, BEL and CR, DEL, and the C1 controls U+0080-U+009F, which terminals may obey
/// as CSI or OSC) is shown as `\xNN` (below 0x80) or `\u{NN}`, and each byte that is not
/// UTF-8 as `\xNN`. Backslashes are left as they are, so ordinary text reads unchanged.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            let text = chunk.valid();
            // Write runs of safe text at once, escapes between them.
            let mut run = 0;
            for (at, c) in text.char_indices() {
                if !c.is_control() || c == '\t' || c == '\n' {
                    continue;
                }
                f.write_str(text.get(run..at).unwrap_or(""))?;
                if c.is_ascii() {
                    write!(f, "\\x{:02x}", u32::from(c))?;
                } else {
                    write!(f, "\\u{{{:x}}}", u32::from(c))?;
                }
                run = at + c.len_utf8();
            }
            f.write_str(text.get(run..).unwrap_or(""))?;
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// Reads and runs commands forever.
pub fn run() -> ! {
    let mut editor = LineEditor::new();
    print!("{PROMPT}");
    loop {
        let Some(byte) = console::read_byte() else {
            // Nothing typed: sleep until the timer's event stream wakes us.
            aarch64_cpu::asm::wfe();
            continue;
        };
        let mut line = String::new();
        let fed = editor
            .feed(byte, console::write_bytes)
            .map(|result| result.map(|l| line.push_str(l)));
        match fed {
            None => continue,
            Some(Ok(())) => execute(&line),
            // Never run a line cut short: its end might have changed what it does.
            Some(Err(too_long)) => println!("{too_long}"),
        }
        print!("{PROMPT}");
    }
}

levitate_hal::ktest!(
    fn command_table_is_sane() -> KtestResult {
        let all = commands::COMMANDS;
        for (i, c) in all.iter().enumerate() {
            levitate_hal::kassert!(!c.help.is_empty(), "a command has no help line");
            levitate_hal::kassert!(!c.name.contains(' '), "a command name has a space");
            levitate_hal::kassert!(
                all[i + 1..].iter().all(|d| d.name != c.name),
                "two commands share a name"
            );
        }
        for name in [
            "help", "version", "dtb", "poweroff", "reboot", "panic", "memmap", "ls", "cat",
        ] {
            levitate_hal::kassert!(find(name).is_some(), "a required command is missing");
        }
        Ok(())
    }
);

levitate_hal::ktest!(
    fn escaped_text_cannot_drive_the_terminal() -> KtestResult {
        let shown = alloc::format!(
            "{}",
            Escaped(b"A\x1b]0;x\x07B\tC\n\r\x7f\xc2\x9b\xff\x00\\n\xc3\xa9\xe2\x82")
        );
        levitate_hal::kassert_eq!(
            shown.as_str(),
            "A\\x1b]0;x\\x07B\tC\n\\x0d\\x7f\\u{9b}\\xff\\x00\\n\u{e9}\\xe2\\x82"
        );
        levitate_hal::kassert!(!shown.bytes().any(|b| b < 0x20 && b != b'\t' && b != b'\n'));
        levitate_hal::kassert_eq!(
            alloc::format!("{}", Escaped(b"plain text")).as_str(),
            "plain text"
        );
        Ok(())
    }
);

levitate_hal::ktest!(
    fn wrong_arguments_are_usage_errors() -> KtestResult {
        for (name, args) in [
            ("version", &["x"][..]),
            ("poweroff", &["now"][..]),
            ("dtb", &["a", "b"][..]),
        ] {
            let cmd = find(name).unwrap();
            levitate_hal::kassert!(matches!((cmd.run)(args), Err(CmdError::Usage)));
        }
        Ok(())
    }
);
