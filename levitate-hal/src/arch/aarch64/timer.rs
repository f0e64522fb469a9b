//! The generic timer's system counter (CNTPCT_EL0 / CNTFRQ_EL0): a monotonic clock for log
//! timestamps and timeouts.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};

/// Counter ticks since the counter started (usually power-on).
pub fn ticks() -> u64 {
    // The ISB keeps the read from being speculated ahead of earlier instructions.
    barrier::isb(barrier::SY);
    CNTPCT_EL0.get()
}

/// Counter frequency in Hz, as firmware programmed it.
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// Nanoseconds since the counter started; 0 when firmware left the frequency unset.
pub fn uptime_ns() -> u64 {
    let freq = frequency();
    if freq == 0 {
        return 0;
    }
    (u128::from(ticks()) * 1_000_000_000 / u128::from(freq)) as u64
}

/// Turns on the counter's event stream (CNTKCTL_EL1.EVNTEN): a WFE wakes at least every
/// 2^(EVNTI+1) ticks (when counter bit EVNTI rises), so idle polling loops sleep instead of
/// spinning. Bit 15 gives about 1 ms at 62.5 MHz (QEMU) and 2.7 ms at 24.576 MHz (gs101).
pub fn enable_event_stream() {
    use aarch64_cpu::registers::{ReadWriteable, CNTKCTL_EL1};
    CNTKCTL_EL1.modify(CNTKCTL_EL1::EVNTEN::SET + CNTKCTL_EL1::EVNTI.val(15));
    barrier::isb(barrier::SY);
}

/// The EL1 virtual timer (ARM ARM D11.2.4, CNTV_* registers), used for the kernel tick. The
/// kernel runs at EL1, where the virtual timer is always accessible: CNTHCTL_EL2's EL1PCEN
/// traps only the *physical* timer (FEAT_ECV adds optional virtual-timer traps, which no
/// hypervisor we boot under sets), and a hypervisor (or firmware at EL2) may keep the
/// physical timer for itself, so the virtual timer is the one an EL1 kernel can rely on at
/// either entry EL (Linux prefers it at EL1 for the same reason). When we entered at EL2, boot.S set
/// CNTVOFF_EL2 to 0, so virtual and physical counts agree.
pub mod virt {
    use aarch64_cpu::asm::barrier;
    use aarch64_cpu::registers::{Readable, Writeable, CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0};

    /// The virtual count (CNTVCT_EL0), which the virtual timer compares against.
    pub fn count() -> u64 {
        barrier::isb(barrier::SY);
        CNTVCT_EL0.get()
    }

    /// Fires the timer interrupt once the virtual count reaches `deadline` (CNTV_CVAL_EL0),
    /// enabled and unmasked. Writing the compare value also clears a condition already met.
    pub fn fire_at(deadline: u64) {
        CNTV_CVAL_EL0.set(deadline);
        CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
        barrier::isb(barrier::SY);
    }

    /// Stops the timer.
    pub fn stop() {
        CNTV_CTL_EL0.set(0);
        barrier::isb(barrier::SY);
    }
}
