//! The console interface: a byte sink and source that the logger, the panic handler and the
//! shell share. Drivers implement it; generic code never names a UART.

/// A serial console.
pub trait Console: Send {
    /// The driver's name for the boot log and the `console` command, e.g. "PL011".
    fn name(&self) -> &'static str;
    /// Writes one byte, waiting for room in the transmit FIFO.
    fn write_byte(&mut self, byte: u8);
    /// Reads one byte if one is waiting.
    fn read_byte(&mut self) -> Option<u8>;
    /// Waits until every written byte has left the device.
    fn flush(&mut self);
    /// Bytes dropped because the transmitter made no room within the driver's bounded wait
    /// (0 for drivers that always wait).
    fn dropped(&self) -> u64 {
        0
    }

    /// Writes a string, turning `\n` into `\r\n` for terminals.
    fn write_str(&mut self, s: &str) {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }
}
