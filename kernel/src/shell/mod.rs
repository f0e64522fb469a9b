//! The console shell: `levitate> `. Commands live in one table (`commands::COMMANDS`); adding
//! one is adding a row.

mod commands;
pub mod line;
mod mm;

use crate::{console, print, println};
use alloc::string::String;
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
        let done = editor
            .feed(byte, console::write_bytes)
            .map(|l| line.push_str(l))
            .is_some();
        if done {
            execute(&line);
            print!("{PROMPT}");
        }
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
