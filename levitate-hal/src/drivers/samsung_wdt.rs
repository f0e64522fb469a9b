//! Samsung watchdog timer (S3C2410 layout, WTCLRINT as on S3C6410 and later) as on Google
//! gs101 (Pixel 6): state, stop and service, over 32-bit accesses only.
//!
//! Facts from Linux's drivers/watchdog/s3c2410_wdt.c: WTCON bit 0 enables the reset output,
//! bit 2 the interrupt, bits 4:3 select the clock divider (16, 32, 64, 128), bit 5 runs the
//! timer, bits 15:8 are the prescaler minus one; WTDAT (16 bits) is the reload value, WTCNT
//! (16 bits) the down-counter, WTCLRINT (write-only) clears the interrupt. The counter ticks
//! at `source / (prescaler + 1) / divider`; Linux keeps it alive by writing the reload value
//! to WTCNT.
//!
//! gs101's variant (drv_data_gs101_cl0) also has PMU bits: CLUSTER0_NONCPU_INT_EN bit 2
//! (inverted mask) lets the watchdog's reset request through, CLUSTER0_NONCPU_OUT bit 8
//! enables the counter; on gs101 the PMU is writable only through a secure monitor call
//! (Linux's gs101 PMU regmap uses SMC 0x82000504). Those bits only gate a running watchdog:
//! Linux's probe stops a watchdog the bootloader left running (its default, `tmr_atboot = 0`)
//! by clearing WTCON's enable and reset bits alone, before it ever writes the PMU. So
//! stopping through WTCON is what Linux does on every gs101 boot, and this driver does the
//! same; servicing (reloading WTCNT) is there for a watchdog that stays enabled.
//!
//! The downstream kernels also know a windowed mode (WTCON bit 20, minimum count register
//! WTMINCNT at 0x10) and set WTMINCNT to twice the reload value, so a reload is never early;
//! a bootloader that set a tighter window (unverified either way) could see an early service
//! as a fault. Stopping, the normal path here, does not depend on it.

use super::bus::{BusRegister, RegisterBus};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    /// Watchdog control.
    pub WTCON [
        /// Assert reset when the counter reaches zero.
        RESET_ENABLE OFFSET(0) NUMBITS(1) [],
        /// Raise an interrupt when the counter reaches zero.
        IRQ_ENABLE OFFSET(2) NUMBITS(1) [],
        /// Clock divider: 16 << value.
        DIVIDER OFFSET(3) NUMBITS(2) [],
        /// The timer runs.
        ENABLE OFFSET(5) NUMBITS(1) [],
        /// Prescaler minus one.
        PRESCALER OFFSET(8) NUMBITS(8) []
    ],
    /// A 16-bit count (WTDAT, WTCNT).
    pub COUNT [
        /// The value.
        VALUE OFFSET(0) NUMBITS(16) []
    ]
}

register_structs! {
    /// The register block.
    #[allow(non_snake_case)]
    pub Registers {
        (0x00 => WTCON: ReadWrite<u32, WTCON::Register>),
        (0x04 => WTDAT: ReadWrite<u32, COUNT::Register>),
        (0x08 => WTCNT: ReadWrite<u32, COUNT::Register>),
        (0x0c => WTCLRINT: WriteOnly<u32>),
        (0x10 => @END),
    }
}

/// `compatible` strings this driver binds to: mainline gs101 and Exynos850, and the Google
/// Tensor downstream kernels' per-cluster names (their s3c2410_wdt.c, read in the gs201
/// downstream tree, binds `google,gs101-cl0-wdt` and `-cl1-wdt` with the same WTCON layout).
pub const COMPATIBLE: &[&str] = &[
    "google,gs101-wdt",
    "samsung,exynos850-wdt",
    "google,gs101-cl0-wdt",
    "google,gs101-cl1-wdt",
];

/// Size of the register window to map.
pub const MMIO_SIZE: u64 = 0x1000;

/// What WTCON, WTDAT and WTCNT say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    /// The timer runs.
    pub enabled: bool,
    /// Expiry resets the SoC.
    pub reset_enabled: bool,
    /// Expiry raises an interrupt.
    pub irq_enabled: bool,
    /// Source clock cycles per counter tick: (prescaler + 1) * divider.
    pub cycles_per_tick: u32,
    /// The reload value (WTDAT).
    pub reload: u32,
    /// The counter now (WTCNT).
    pub count: u32,
}

impl State {
    /// Milliseconds `ticks` counter ticks last with a `source_hz` clock.
    pub fn ticks_to_ms(&self, ticks: u32, source_hz: u32) -> Option<u64> {
        (source_hz != 0).then(|| {
            u64::from(ticks) * u64::from(self.cycles_per_tick) * 1000 / u64::from(source_hz)
        })
    }
}

/// A Samsung watchdog on bus `B`.
pub struct SamsungWdt<B: RegisterBus> {
    bus: B,
}

macro_rules! register {
    ($name:ident, $field:ident, $bits:ty) => {
        fn $name(&self) -> BusRegister<'_, B, u32, $bits> {
            BusRegister::new(&self.bus, core::mem::offset_of!(Registers, $field))
        }
    };
}

impl<B: RegisterBus> SamsungWdt<B> {
    /// A driver for the watchdog behind `bus`.
    pub fn new(bus: B) -> Self {
        Self { bus }
    }

    register!(wtcon, WTCON, WTCON::Register);
    register!(wtdat, WTDAT, COUNT::Register);
    register!(wtcnt, WTCNT, COUNT::Register);

    /// The registers' view of the watchdog.
    pub fn state(&self) -> State {
        let con = self.wtcon().extract();
        State {
            enabled: con.is_set(WTCON::ENABLE),
            reset_enabled: con.is_set(WTCON::RESET_ENABLE),
            irq_enabled: con.is_set(WTCON::IRQ_ENABLE),
            cycles_per_tick: (con.read(WTCON::PRESCALER) + 1) * (16 << con.read(WTCON::DIVIDER)),
            reload: self.wtdat().read(COUNT::VALUE),
            count: self.wtcnt().read(COUNT::VALUE),
        }
    }

    /// Stops the timer and its reset output (Linux's `__s3c2410wdt_stop`: WTCON's enable and
    /// reset bits cleared, everything else kept). Returns whether it reads back stopped.
    pub fn stop(&mut self) -> bool {
        let con = self.wtcon().get();
        self.wtcon()
            .set(con & !(WTCON::ENABLE::SET.value | WTCON::RESET_ENABLE::SET.value));
        !self.wtcon().is_set(WTCON::ENABLE)
    }

    /// Restarts the countdown from the reload value (Linux's keepalive). Returns whether the
    /// timer was running (a stopped one is left alone).
    pub fn service(&mut self) -> bool {
        if !self.wtcon().is_set(WTCON::ENABLE) {
            return false;
        }
        let reload = self.wtdat().read(COUNT::VALUE);
        self.wtcnt().write(COUNT::VALUE.val(reload));
        true
    }

    /// The bus (host tests inspect their model through it).
    pub fn bus(&self) -> &B {
        &self.bus
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::bus::model::{Device, Strict32};

    /// WTCON/WTDAT/WTCNT as plain registers; WTCON bits above 16 read back as written
    /// (gs101's DBGACK mask bit 16 must survive a stop), `locked` ignores WTCON writes.
    struct Model {
        wtcon: u32,
        wtdat: u32,
        wtcnt: u32,
        locked: bool,
    }

    impl Device for Model {
        fn read(&mut self, offset: usize) -> u32 {
            match offset {
                0x00 => self.wtcon,
                0x04 => self.wtdat,
                0x08 => self.wtcnt,
                _ => panic!("read of write-only or unknown register {offset:#x}"),
            }
        }
        fn write(&mut self, offset: usize, value: u32) {
            match offset {
                0x00 if !self.locked => self.wtcon = value,
                0x00 => {}
                0x04 => self.wtdat = value & 0xffff,
                0x08 => self.wtcnt = value & 0xffff,
                _ => {}
            }
        }
    }

    /// As a bootloader might leave it: running, reset on, DBGACK mask set, prescaler 0xff,
    /// divider 128, reload for 30 s at 24.576 MHz.
    fn running() -> Model {
        let reload = 30 * 24_576_000 / (256 * 128);
        Model {
            wtcon: 1 << 16 | 0xff << 8 | 1 << 5 | 3 << 3 | 1,
            wtdat: reload,
            wtcnt: reload - 100,
            locked: false,
        }
    }

    #[test]
    fn state_decodes_timeout_from_prescaler_divider_and_reload() {
        let wdt = SamsungWdt::new(Strict32::new(running()));
        let s = wdt.state();
        assert!(s.enabled && s.reset_enabled && !s.irq_enabled);
        assert_eq!(s.cycles_per_tick, 256 * 128);
        assert_eq!(s.ticks_to_ms(s.reload, 24_576_000), Some(30_000));
        assert_eq!(s.ticks_to_ms(s.reload, 0), None);
    }

    #[test]
    fn stop_clears_enable_and_reset_only() {
        let mut wdt = SamsungWdt::new(Strict32::new(running()));
        assert!(wdt.stop());
        let con = wdt.bus().device.borrow().wtcon;
        assert_eq!(con, 1 << 16 | 0xff << 8 | 3 << 3, "other bits kept");
        assert!(!wdt.service(), "a stopped watchdog is not touched");
    }

    #[test]
    fn service_reloads_a_watchdog_that_would_not_stop() {
        let mut m = running();
        m.locked = true;
        let mut wdt = SamsungWdt::new(Strict32::new(m));
        assert!(!wdt.stop());
        wdt.bus().device.borrow_mut().wtcnt = 5;
        assert!(wdt.service());
        let m = wdt.bus().device.borrow();
        assert_eq!(m.wtcnt, m.wtdat);
    }
}
