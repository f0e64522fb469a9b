//! A small line editor for the serial console: printable ASCII, backspace, Ctrl-C, Ctrl-U,
//! CR/LF/CRLF line ends (terminals send CR, pipes LF).
//!
//! Escape sequences a terminal sends (keys, and replies to queries) are swallowed whole, so
//! that none leaves bytes in the line. The forms, from ECMA-48 (5th edition):
//! - CSI `ESC [`, parameter and intermediate bytes 0x20-0x3F, a final byte 0x40-0x7E (5.4):
//!   arrows `ESC [ A`, `ESC [ 1 ; 5 A`, bracketed paste `ESC [ 200 ~`;
//! - SS3 `ESC O` and a final byte (8.3.144): F1-F4 `ESC O P`, arrows in application mode,
//!   read with CSI's grammar since some terminals put parameters in it;
//! - control strings OSC `ESC ]`, DCS `ESC P`, SOS `ESC X`, PM `ESC ^`, APC `ESC _`, ended by
//!   ST `ESC \` (8.3.89 and 5.6) or BEL (xterm's OSC terminator, taken for all of them):
//!   colour and title replies;
//! - `ESC`, intermediate bytes 0x20-0x2F, a final byte 0x30-0x7E (nF, 13.2): `ESC ( B`;
//! - `ESC` and one byte (Fp/Fe/Fs, and what terminals send for Alt+key): `ESC 7`, `ESC x`.
//!
//! CAN and SUB cancel a sequence (8.3.6, 8.3.148) and ESC starts a new one. CR, LF and Ctrl-C
//! act even inside a sequence, so that a cut-off sequence can never swallow the Enter key or
//! trap the user. Bytes of 0x80 and above are ignored, never read as 8-bit C1 controls: on a
//! UTF-8 terminal they are parts of characters (0x9B is the last byte of "ě").
//!
//! A line longer than [`MAX_LINE`] is not run cut short: the editor stops storing and echoing
//! (one bell when it overflows), keeps counting, and returns [`TooLong`] at the line end.

use core::fmt;

/// Longest line accepted.
pub const MAX_LINE: usize = 256;

/// A line that did not fit: returned instead of the line, which is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong {
    /// Bytes typed on the line.
    pub len: usize,
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line too long: {} bytes, at most {MAX_LINE}", self.len)
    }
}

/// Where the editor is in an escape sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// After ESC and intermediate bytes, until a final byte (nF).
    Intermediate,
    /// Inside CSI or SS3, until a final byte.
    Csi,
    /// Inside a control string (OSC, DCS, SOS, PM, APC), until BEL or ST.
    String,
    /// ESC inside a control string: `\` makes it ST, anything else starts a new sequence.
    StringEsc,
}

impl Escape {
    /// The state after `byte` (not CR, LF or Ctrl-C, which end any sequence).
    fn next(self, byte: u8) -> Escape {
        const ESC: u8 = 0x1b;
        match (self, byte) {
            (_, 0x18 | 0x1a) => Escape::None,
            (Escape::Start, b'[' | b'O') => Escape::Csi,
            (Escape::Start, b']' | b'P' | b'X' | b'^' | b'_') => Escape::String,
            (Escape::Start | Escape::Intermediate | Escape::Csi, ESC) => Escape::Start,
            (Escape::Start | Escape::Intermediate, 0x20..=0x2f) => Escape::Intermediate,
            (Escape::Csi, 0x20..=0x3f) => Escape::Csi,
            (Escape::String, 0x07) => Escape::None,
            (Escape::String, ESC) => Escape::StringEsc,
            (Escape::String, _) => Escape::String,
            (Escape::StringEsc, b'\\') => Escape::None,
            (Escape::StringEsc, other) => Escape::Start.next(other),
            // A final byte ends the sequence; so does a byte its grammar has no place for
            // (swallowed all the same).
            (Escape::Start | Escape::Intermediate | Escape::Csi | Escape::None, _) => Escape::None,
        }
    }
}

/// The editor's state: the line so far.
pub struct LineEditor {
    buf: [u8; MAX_LINE],
    /// Bytes typed on this line; the first `MAX_LINE` of them are in `buf`.
    typed: usize,
    after_cr: bool,
    escape: Escape,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_LINE],
            typed: 0,
            after_cr: false,
            escape: Escape::None,
        }
    }

    /// Feeds one input byte. `echo` receives what to send back to the terminal. Returns the
    /// finished line when the byte ends one (Ctrl-C yields an empty line), or [`TooLong`].
    pub fn feed(&mut self, byte: u8, mut echo: impl FnMut(&[u8])) -> Option<Result<&str, TooLong>> {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        if self.escape != Escape::None {
            if matches!(byte, b'\r' | b'\n' | 0x03) {
                self.escape = Escape::None;
            } else {
                self.escape = self.escape.next(byte);
                return None;
            }
        }
        match byte {
            b'\n' if after_cr => None,
            b'\r' | b'\n' => {
                self.after_cr = byte == b'\r';
                echo(b"\r\n");
                let typed = core::mem::replace(&mut self.typed, 0);
                if typed > MAX_LINE {
                    return Some(Err(TooLong { len: typed }));
                }
                // Only printable ASCII is ever stored.
                let line = self.buf.get(..typed).unwrap_or(&[]);
                Some(Ok(core::str::from_utf8(line).unwrap_or("")))
            }
            0x08 | 0x7f => {
                if self.typed > 0 {
                    self.typed -= 1;
                    // Bytes past the limit were never echoed.
                    if self.typed < MAX_LINE {
                        echo(b"\x08 \x08");
                    }
                }
                None
            }
            0x03 => {
                echo(b"^C\r\n");
                self.typed = 0;
                Some(Ok(""))
            }
            0x15 => {
                for _ in 0..self.typed.min(MAX_LINE) {
                    echo(b"\x08 \x08");
                }
                self.typed = 0;
                None
            }
            0x1b => {
                self.escape = Escape::Start;
                None
            }
            0x20..=0x7e => {
                if let Some(slot) = self.buf.get_mut(self.typed) {
                    *slot = byte;
                    echo(&[byte]);
                } else if self.typed == MAX_LINE {
                    echo(b"\x07");
                }
                self.typed = self.typed.saturating_add(1);
                None
            }
            _ => None,
        }
    }
}

#[cfg(feature = "ktest")]
type Fed = (
    alloc::vec::Vec<Result<alloc::string::String, TooLong>>,
    alloc::vec::Vec<u8>,
);

#[cfg(feature = "ktest")]
fn feed_all(ed: &mut LineEditor, input: &[u8]) -> Fed {
    use alloc::string::ToString;
    let mut lines = alloc::vec::Vec::new();
    let mut echoed = alloc::vec::Vec::new();
    for &b in input {
        if let Some(line) = ed.feed(b, |e| echoed.extend_from_slice(e)) {
            lines.push(line.map(|l| l.to_string()));
        }
    }
    (lines, echoed)
}

#[cfg(feature = "ktest")]
fn ok_lines(lines: &[&str]) -> alloc::vec::Vec<Result<alloc::string::String, TooLong>> {
    use alloc::string::ToString;
    lines.iter().map(|l| Ok(l.to_string())).collect()
}

levitate_hal::ktest!(
    fn line_editor_handles_backspace_crlf_and_escapes() -> KtestResult {
        let mut ed = LineEditor::new();
        let (lines, echoed) = feed_all(&mut ed, b"helx\x7fp\r\nver\x1b[Asion\n\n");
        levitate_hal::kassert_eq!(lines, ok_lines(&["help", "version", ""]));
        levitate_hal::kassert!(echoed.starts_with(b"helx\x08 \x08p\r\n"));
        let (lines, _) = feed_all(&mut ed, b"abc\x15x\x03y\r");
        levitate_hal::kassert_eq!(lines, ok_lines(&["", "y"]));
        Ok(())
    }
);

levitate_hal::ktest!(
    fn line_editor_swallows_every_escape_form() -> KtestResult {
        let mut ed = LineEditor::new();
        let input: &[u8] = b"ver\x1b]0;title\x07sion\r\n\
            he\x1b]8;;http://x/\x1b\\lp\n\
            ls\x1bOP\x1bOA\x1bO5Q\x1b[1;5A\x1b[200~\n\
            a\x1bP1$r0m\x1b\\b\x1b_apc\x1b\\c\x1b^pm\x07\x1b\\\n\
            c\x1b(Bd\x1b#8e\x1b (\x1b)0f\n\
            f\x1bxg\x1b7h\x1b\x7fi\n\
            i\x1b[\x18j\x1b]k\x1al\n\
            k\x1b]unterminated\rl\x1b[\nm\x1bO\x03\
            m\x1b]x\x1b[Cn\x1b\x1b[Do\n";
        let (lines, echoed) = feed_all(&mut ed, input);
        levitate_hal::kassert_eq!(
            lines,
            ok_lines(&[
                "version", "help", "ls", "abc", "cdef", "fghi", "ijl", "k", "l", "", "mno",
            ])
        );
        // Nothing of the sequences is echoed: only the typed characters and line ends.
        levitate_hal::kassert!(!echoed.contains(&0x1b));
        levitate_hal::kassert!(!echoed.windows(5).any(|w| w == b"title"));
        Ok(())
    }
);

levitate_hal::ktest!(
    fn line_editor_rejects_over_long_lines() -> KtestResult {
        let mut ed = LineEditor::new();
        let mut long = alloc::vec![b'a'; MAX_LINE + 44];
        long.push(b'\n');
        let (lines, echoed) = feed_all(&mut ed, &long);
        levitate_hal::kassert_eq!(lines, [Err(TooLong { len: MAX_LINE + 44 })]);
        levitate_hal::kassert_eq!(echoed.iter().filter(|&&b| b == 0x07).count(), 1);
        levitate_hal::kassert_eq!(echoed.iter().filter(|&&b| b == b'a').count(), MAX_LINE);
        levitate_hal::kassert_eq!(
            alloc::format!("{}", TooLong { len: 300 }).as_str(),
            "line too long: 300 bytes, at most 256"
        );
        // Backspacing to the limit gives back exactly the line that was shown; the next line
        // starts afresh.
        long.truncate(MAX_LINE + 44);
        long.extend_from_slice(&[0x7f; 45]);
        long.extend_from_slice(b"b\nhelp\n");
        let (lines, echoed) = feed_all(&mut ed, &long);
        let mut fitted = alloc::string::String::new();
        fitted.extend(core::iter::repeat_n('a', MAX_LINE - 1));
        fitted.push('b');
        levitate_hal::kassert_eq!(lines, ok_lines(&[fitted.as_str(), "help"]));
        levitate_hal::kassert_eq!(echoed.windows(3).filter(|w| w == b"\x08 \x08").count(), 1);
        // Exactly the limit is fine.
        let mut exact = alloc::vec![b'z'; MAX_LINE];
        exact.push(b'\r');
        let (lines, _) = feed_all(&mut ed, &exact);
        levitate_hal::kassert!(matches!(&lines[..], [Ok(l)] if l.len() == MAX_LINE));
        Ok(())
    }
);
