//! A small line editor for the serial console: printable ASCII, backspace, Ctrl-C, Ctrl-U,
//! CR/LF/CRLF line ends (terminals send CR, pipes LF), and ANSI escape sequences swallowed
//! (arrow keys do nothing rather than insert garbage).

/// Longest line accepted; further characters are refused with a bell.
pub const MAX_LINE: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// Inside `ESC [ ...` until a final byte.
    Csi,
}

/// The editor's state: the line so far.
pub struct LineEditor {
    buf: [u8; MAX_LINE],
    len: usize,
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
            len: 0,
            after_cr: false,
            escape: Escape::None,
        }
    }

    /// Feeds one input byte. `echo` receives what to send back to the terminal. Returns the
    /// finished line when the byte ends one (Ctrl-C yields an empty line).
    pub fn feed(&mut self, byte: u8, mut echo: impl FnMut(&[u8])) -> Option<&str> {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        match self.escape {
            Escape::Start => {
                self.escape = if byte == b'[' {
                    Escape::Csi
                } else {
                    Escape::None
                };
                return None;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return None;
            }
            Escape::None => {}
        }
        match byte {
            b'\n' if after_cr => None,
            b'\r' | b'\n' => {
                self.after_cr = byte == b'\r';
                echo(b"\r\n");
                Some(self.take())
            }
            0x08 | 0x7f => {
                if self.len > 0 {
                    self.len -= 1;
                    echo(b"\x08 \x08");
                }
                None
            }
            0x03 => {
                echo(b"^C\r\n");
                self.len = 0;
                Some("")
            }
            0x15 => {
                for _ in 0..self.len {
                    echo(b"\x08 \x08");
                }
                self.len = 0;
                None
            }
            0x1b => {
                self.escape = Escape::Start;
                None
            }
            0x20..=0x7e => {
                if self.len < MAX_LINE {
                    self.buf[self.len] = byte;
                    self.len += 1;
                    echo(&[byte]);
                } else {
                    echo(b"\x07");
                }
                None
            }
            _ => None,
        }
    }

    fn take(&mut self) -> &str {
        let len = core::mem::replace(&mut self.len, 0);
        // Only printable ASCII is ever stored.
        core::str::from_utf8(&self.buf[..len]).unwrap_or("")
    }
}

#[cfg(feature = "ktest")]
fn feed_all(
    ed: &mut LineEditor,
    input: &[u8],
) -> (alloc::vec::Vec<alloc::string::String>, alloc::vec::Vec<u8>) {
    use alloc::string::ToString;
    let mut lines = alloc::vec::Vec::new();
    let mut echoed = alloc::vec::Vec::new();
    for &b in input {
        if let Some(line) = ed.feed(b, |e| echoed.extend_from_slice(e)) {
            lines.push(line.to_string());
        }
    }
    (lines, echoed)
}

levitate_hal::ktest!(
    fn line_editor_handles_backspace_crlf_and_escapes() -> KtestResult {
        let mut ed = LineEditor::new();
        let (lines, echoed) = feed_all(&mut ed, b"helx\x7fp\r\nver\x1b[Asion\n\n");
        levitate_hal::kassert_eq!(lines, ["help", "version", ""]);
        levitate_hal::kassert!(echoed.starts_with(b"helx\x08 \x08p\r\n"));
        let (lines, _) = feed_all(&mut ed, b"abc\x15x\x03y\r");
        levitate_hal::kassert_eq!(lines, ["", "y"]);
        Ok(())
    }
);

levitate_hal::ktest!(
    fn line_editor_caps_length() -> KtestResult {
        let mut ed = LineEditor::new();
        let long = [b'a'; MAX_LINE + 10];
        let (_, echoed) = feed_all(&mut ed, &long);
        levitate_hal::kassert_eq!(echoed.iter().filter(|&&b| b == 0x07).count(), 10);
        let (lines, _) = feed_all(&mut ed, b"\n");
        levitate_hal::kassert_eq!(lines[0].len(), MAX_LINE);
        Ok(())
    }
);
