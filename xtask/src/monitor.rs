//! A client for QEMU's human monitor (HMP) on a unix socket (`-monitor
//! unix:SOCK,server=on,wait=off`): one command at a time, each answer read up to the next
//! `(qemu) ` prompt, every wait bounded. Used by `cargo xtask run --screenshot` (`screendump`)
//! and by the scenarios that look at the screen or at guest memory (`screendump`,
//! `pmemsave`).

use crate::picture::{self, Picture};
use crate::{bail, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The prompt HMP prints when it is ready for a command.
const PROMPT: &str = "(qemu) ";

/// How long one monitor command may take (a `pmemsave` of a few MiB, a `screendump`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A unix socket path for a monitor, unique to this process: under the temporary directory
/// rather than a work directory, since a socket path must fit `sun_path` (108 bytes).
pub fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("levitate-hmp-{}-{tag}.sock", std::process::id()))
}

/// A connected monitor.
pub struct Monitor {
    stream: UnixStream,
}

impl Monitor {
    /// Connects to the socket QEMU listens on, retrying until `deadline` (QEMU creates it
    /// while it starts), and reads the banner up to the first prompt.
    pub fn connect(socket: &Path, deadline: Instant) -> Result<Self> {
        Self::connect_while(socket, deadline, || Ok(true))
    }

    /// [`Self::connect`], giving up as soon as `alive` says QEMU is gone (a kernel that
    /// powers off at once can end QEMU before its socket is reached).
    pub fn connect_while(
        socket: &Path,
        deadline: Instant,
        mut alive: impl FnMut() -> Result<bool>,
    ) -> Result<Self> {
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(_) if !alive()? => {
                    bail!("QEMU exited before its monitor could be reached")
                }
                Err(e) if Instant::now() >= deadline => {
                    bail!("cannot reach the QEMU monitor at {}: {e}", socket.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut m = Monitor { stream };
        m.read_until(deadline, |t| t.contains(PROMPT))?;
        Ok(m)
    }

    /// Reads until `done` holds for what arrived since the call began.
    fn read_until(&mut self, deadline: Instant, done: impl Fn(&str) -> bool) -> Result<String> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => bail!("the QEMU monitor closed"),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            let text = String::from_utf8_lossy(&seen).into_owned();
            if done(&text) {
                return Ok(text);
            }
            if Instant::now() >= deadline {
                bail!("the QEMU monitor did not answer in time")
            }
        }
    }

    /// Sends one command line and returns its answer: the text after the echoed line, up to
    /// the next prompt (HMP echoes what it reads, then answers, then prompts).
    pub fn command(&mut self, line: &str) -> Result<String> {
        writeln!(self.stream, "{line}")?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let text = self.read_until(deadline, |t| {
            t.split_once("\r\n")
                .is_some_and(|(_, rest)| rest.contains(PROMPT))
        })?;
        let answer = text.split_once("\r\n").map_or("", |(_, rest)| rest);
        Ok(answer
            .split(PROMPT)
            .next()
            .unwrap_or("")
            .trim()
            .replace('\r', ""))
    }

    /// Runs a command that answers nothing when it succeeds; any answer is its error message.
    pub fn run(&mut self, line: &str) -> Result<()> {
        let answer = self.command(line)?;
        if answer.is_empty() {
            Ok(())
        } else {
            bail!("the QEMU monitor answered `{line}` with: {answer}")
        }
    }

    /// `screendump`: the display's current picture, written by QEMU to `ppm` (a binary PPM)
    /// and read back once the file is whole (its header says how long it must be).
    pub fn screendump(&mut self, ppm: &Path) -> Result<Picture> {
        let _ = std::fs::remove_file(ppm);
        // HMP reads a filename argument as a string; quoting keeps spaces in it.
        self.run(&format!("screendump \"{}\"", ppm.display()))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let bytes = std::fs::read(ppm).unwrap_or_default();
            if let Some(h) = picture::ppm_header(&bytes)? {
                if bytes.len() >= h.file_len() {
                    return picture::from_ppm(&bytes);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "screendump: {} is still incomplete ({} bytes) after {}s",
                    ppm.display(),
                    bytes.len(),
                    COMMAND_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `pmemsave`: `size` bytes of guest physical memory from `base`, through `file`.
    pub fn pmemsave(&mut self, base: u64, size: u64, file: &Path) -> Result<Vec<u8>> {
        let _ = std::fs::remove_file(file);
        // HMP reads an unquoted path as an expression ('/' divides): quote it.
        self.run(&format!(
            "pmemsave {base:#x} {size:#x} \"{}\"",
            file.display()
        ))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let bytes = std::fs::read(file).unwrap_or_default();
            if bytes.len() as u64 >= size {
                return Ok(bytes);
            }
            if Instant::now() >= deadline {
                bail!(
                    "pmemsave: {} has {} of {size} bytes after {}s",
                    file.display(),
                    bytes.len(),
                    COMMAND_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `quit`: QEMU exits at once (status 0). The stream is kept so that the caller can hold
    /// it open until QEMU is gone (closing it early may drop a command not yet read).
    pub fn quit(&mut self) -> Result<()> {
        writeln!(self.stream, "quit")?;
        Ok(())
    }
}
