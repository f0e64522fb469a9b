//! A running QEMU whose serial console xtask drives: its output collected (and, for `run`,
//! copied to this terminal as it arrives), its input written line by line, the shell's prompts
//! counted so that xtask knows when the commands it sent have run. Every wait is bounded.

use crate::Result;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The shell's prompt (kernel/src/shell), printed once at start and after every command line.
pub const PROMPT: &str = "levitate> ";

/// How a session ended.
pub struct Ended {
    /// Exit status (None when killed).
    pub code: Option<i32>,
    /// Everything QEMU printed, `\r` removed.
    pub output: String,
    /// It had to be killed at the deadline.
    pub timed_out: bool,
}

/// What a wait saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The condition held.
    Ready,
    /// QEMU exited first.
    Exited,
    /// The deadline passed first.
    TimedOut,
}

/// A QEMU child with its stdio piped.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    /// Command lines sent so far.
    sent: usize,
}

impl Session {
    /// Starts `cmd`. With `tee`, QEMU's stdout and stderr are also copied to this process's
    /// as they arrive (a person watches the serial console of `cargo xtask run`).
    pub fn spawn(mut cmd: Command, tee: bool) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-aarch64: {e}"))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let streams: [(Option<Box<dyn Read + Send>>, bool); 2] = [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                true,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                false,
            ),
        ];
        for (stream, is_stdout) in streams {
            let Some(mut stream) = stream else { continue };
            let sink = Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    if tee {
                        let _ = if is_stdout {
                            let mut o = std::io::stdout().lock();
                            o.write_all(&buf[..n]).and_then(|_| o.flush())
                        } else {
                            std::io::stderr().lock().write_all(&buf[..n])
                        };
                    }
                }
            }));
        }
        let stdin = child.stdin.take();
        Ok(Session {
            child,
            stdin,
            output,
            readers,
            sent: 0,
        })
    }

    /// What QEMU printed so far, `\r` removed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).replace('\r', "")
    }

    /// Types one command line on the serial console (a `\r` in it is dropped: the shell
    /// would take it as a second Enter and prompt twice).
    pub fn send_line(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let line = line.replace('\r', "");
            let _ = s.write_all(line.trim_end_matches('\n').as_bytes());
            let _ = s.write_all(b"\n");
            let _ = s.flush();
        }
        self.sent += 1;
    }

    /// How many prompts the shell has printed.
    pub fn prompts(&self) -> usize {
        self.text().matches(PROMPT).count()
    }

    /// Command lines sent so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// Whether QEMU has exited.
    pub fn has_exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// Waits until `ready` holds for the output, QEMU exits, or `deadline` passes.
    pub fn wait_for(&mut self, deadline: Instant, ready: impl Fn(&str) -> bool) -> Result<Waited> {
        loop {
            if ready(&self.text()) {
                return Ok(Waited::Ready);
            }
            if self.child.try_wait()?.is_some() {
                return Ok(Waited::Exited);
            }
            if Instant::now() >= deadline {
                return Ok(Waited::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the shell has run every line sent: its first prompt plus one per line.
    pub fn wait_for_commands(&mut self, deadline: Instant) -> Result<Waited> {
        let want = self.sent + 1;
        self.wait_for(deadline, |t| t.matches(PROMPT).count() >= want)
    }

    /// Waits for QEMU to exit, killing it at `deadline`, and collects what it printed.
    pub fn finish(mut self, deadline: Instant) -> Result<Ended> {
        let (code, timed_out) = loop {
            if let Some(status) = self.child.try_wait()? {
                break (status.code(), false);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break (None, true);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(self.stdin.take());
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Ok(Ended {
            code,
            output: self.text(),
            timed_out,
        })
    }
}

impl Drop for Session {
    /// A session dropped on an error path must not leave QEMU running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
