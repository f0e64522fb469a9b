//! Device selection on real trees: the console driver chosen through `/chosen/stdout-path` or
//! the first accepted node, register translation through `ranges`, the gs101 watchdog, and
//! the CPUs `/cpus` lists. Expected values were read off the trees with `dtc -I dtb -O dts`.

use fdt::Fdt;
use levitate_mm::addr::PhysAddr;
use levitate_mm::dtb::devices::{
    cpu_nodes, each_enabled, find_enabled, fixed_clock_rate, select_console, u32_property,
    ConsoleSource, CpuNode, NoConsole,
};

const QEMU_1G: &[u8] = include_bytes!("dtbs/qemu-virt-1g.dtb");
const QEMU_EL2: &[u8] = include_bytes!("dtbs/qemu-virt-el2-gicv3-2g.dtb");
const JUNO: &[u8] = include_bytes!("dtbs/juno.dtb");
const PIXEL6: &[u8] = include_bytes!("dtbs/gs101-oriole.dtb");
const RPI3: &[u8] = include_bytes!("dtbs/bcm2837-rpi-3-b.dtb");

/// The kernel's driver table (levitate-hal: pl011::COMPATIBLE, exynos_uart::COMPATIBLE).
const DRIVERS: &[&[&str]] = &[
    &["arm,pl011"],
    &[
        "google,gs101-uart",
        "samsung,exynos850-uart",
        "samsung,exynos-uart",
    ],
];

fn with(blob: &[u8], f: impl FnOnce(&Fdt<'_>)) {
    f(&Fdt::new(blob).unwrap())
}

#[test]
fn pixel6_console_is_the_gs101_uart_from_stdout_path() {
    with(PIXEL6, |fdt| {
        let (found, source) = select_console(fdt, DRIVERS).unwrap();
        assert_eq!(source, ConsoleSource::StdoutPath);
        assert_eq!(found.driver, 1);
        assert_eq!(found.compatible, "google,gs101-uart");
        assert_eq!(found.node.node.name, "serial@10a00000");
        // reg = <0x10a00000 0xc0> under usi@10a000c0 (empty ranges) under soc@0
        // (ranges = <0 0 0 0x40000000>).
        assert_eq!(found.phys, PhysAddr::new(0x10a0_0000));
        assert_eq!(found.size, 0xc0);
        assert_eq!(
            u32_property(&found.node, "samsung,uart-fifosize"),
            Some(256)
        );
    });
}

#[test]
fn pixel6_without_stdout_path_takes_the_first_enabled_uart() {
    // The disabled serial@109x0000 ports come first in the tree and must be passed over.
    let patched = patch(PIXEL6, b"stdout-path\0", b"stdout-patx\0");
    with(&patched, |fdt| {
        let (found, source) = select_console(fdt, DRIVERS).unwrap();
        assert_eq!(source, ConsoleSource::FirstAccepted);
        assert_eq!(found.phys, PhysAddr::new(0x10a0_0000));
    });
}

#[test]
fn exynos850_and_downstream_compatibles_alone_are_accepted() {
    let patched = patch(PIXEL6, b"google,gs101-uart\0", b"samsung,exynos850-uart\0");
    with(&patched, |fdt| {
        let (found, _) = select_console(fdt, DRIVERS).unwrap();
        assert_eq!(found.driver, 1);
        assert_eq!(found.compatible, "samsung,exynos850-uart");
    });
    // The downstream (stock Pixel kernel) compatible.
    let patched = patch(PIXEL6, b"google,gs101-uart\0", b"samsung,exynos-uart\0");
    with(&patched, |fdt| {
        let (found, source) = select_console(fdt, DRIVERS).unwrap();
        assert_eq!((found.driver, source), (1, ConsoleSource::StdoutPath));
        assert_eq!(found.compatible, "samsung,exynos-uart");
        assert_eq!(found.phys, PhysAddr::new(0x10a0_0000));
    });
}

#[test]
fn qemu_and_juno_consoles_are_pl011s() {
    with(QEMU_1G, |fdt| {
        let (found, source) = select_console(fdt, DRIVERS).unwrap();
        assert_eq!((found.driver, source), (0, ConsoleSource::StdoutPath));
        assert_eq!(found.phys, PhysAddr::new(0x900_0000));
    });
    with(JUNO, |fdt| {
        let (found, _) = select_console(fdt, DRIVERS).unwrap();
        assert_eq!(found.driver, 0);
        assert_eq!(found.compatible, "arm,pl011");
    });
}

#[test]
fn no_driver_for_any_node_names_the_stdout_path() {
    with(PIXEL6, |fdt| {
        let err = select_console(fdt, &[&["arm,pl011"]]).err();
        assert_eq!(
            err,
            Some(NoConsole {
                stdout_path: Some("/soc@0/usi@10a000c0/serial@10a00000")
            })
        );
    });
    // The Raspberry Pi 3's UARTs are a PL011 under another compatible and a mini UART.
    with(RPI3, |fdt| {
        assert!(select_console(fdt, &[&["google,gs101-uart"]]).is_err());
    });
}

#[test]
fn pixel6_watchdog_cluster0_is_found_and_cluster1_is_disabled() {
    with(PIXEL6, |fdt| {
        let wdt = find_enabled(fdt, &["google,gs101-wdt"]).unwrap();
        assert_eq!(wdt.phys, PhysAddr::new(0x1006_0000));
        assert_eq!(wdt.size, 0x100);
        assert_eq!(u32_property(&wdt.node, "timeout-sec"), Some(30));
        assert_eq!(u32_property(&wdt.node, "samsung,cluster-index"), Some(0));
        // clocks = <&cmu_misc 0x48>, <&oscclk>: the second names "watchdog_src", a
        // fixed-clock of 24.576 MHz; the first is not fixed.
        assert_eq!(
            fixed_clock_rate(fdt, &wdt.node, "watchdog_src"),
            Some(24_576_000)
        );
        assert_eq!(fixed_clock_rate(fdt, &wdt.node, "watchdog"), None);
        assert_eq!(fixed_clock_rate(fdt, &wdt.node, "nope"), None);
    });
    with(QEMU_1G, |fdt| {
        assert!(find_enabled(fdt, &["google,gs101-wdt"]).is_none())
    });
    // Both instances once cluster 1 is enabled too (downstream trees run both).
    let patched = patch(
        PIXEL6,
        b"status = \"disabled\";\n\t\t};\n\n\t\tinterrupt-controller@10400000",
        b"status = \"okay\";\n\t\t};\n\n\t\tinterrupt-controller@10400000",
    );
    with(&patched, |fdt| {
        let mut all = Vec::new();
        each_enabled(fdt, &["google,gs101-wdt"], |f| {
            all.push(f.phys.as_u64());
            true
        });
        assert_eq!(all, [0x1006_0000, 0x1007_0000]);
        let mut first = Vec::new();
        each_enabled(fdt, &["google,gs101-wdt"], |f| {
            first.push(f.phys.as_u64());
            false
        });
        assert_eq!(first, [0x1006_0000]);
    });
}

#[test]
fn pixel6_lists_eight_psci_cpus_with_aff1_0_to_7() {
    with(PIXEL6, |fdt| {
        let cpus: Vec<CpuNode<'_>> = cpu_nodes(fdt).collect();
        let mpidrs: Vec<u64> = cpus.iter().map(|c| c.mpidr).collect();
        assert_eq!(
            mpidrs,
            [0x000, 0x100, 0x200, 0x300, 0x400, 0x500, 0x600, 0x700]
        );
        assert!(cpus.iter().all(|c| c.enable_method == Some("psci")));
        assert_eq!(cpus[4].name, "cpu@400");
    });
}

#[test]
fn two_address_cells_in_cpus_are_read_whole() {
    // Juno: #address-cells = <2>, reg = <0x0 0x100> style.
    with(JUNO, |fdt| {
        let mpidrs: Vec<u64> = cpu_nodes(fdt).map(|c| c.mpidr).collect();
        assert_eq!(mpidrs, [0x0, 0x1, 0x100, 0x101, 0x102, 0x103]);
    });
    with(QEMU_EL2, |fdt| {
        let mpidrs: Vec<u64> = cpu_nodes(fdt).map(|c| c.mpidr).collect();
        assert_eq!(mpidrs, [0, 1]);
    });
}

#[test]
fn pixel6_cpus_with_two_address_cells_read_the_same() {
    // Rewrite /cpus to #address-cells = <2> with each reg as <0 MPIDR>: same MPIDRs.
    let mut text =
        String::from_utf8(run_dtc(&["-I", "dtb", "-O", "dts", "-q", "-"], PIXEL6)).unwrap();
    let start = text.find("\tcpus {").unwrap();
    let end = start + text[start..].find("\tect {").unwrap();
    let cpus = text[start..end]
        .replacen("#address-cells = <0x01>", "#address-cells = <0x02>", 1)
        .replace("reg = <0x", "reg = <0x00 0x");
    text.replace_range(start..end, &cpus);
    let blob = run_dtc(&["-I", "dts", "-O", "dtb", "-q", "-"], text.as_bytes());
    with(&blob, |fdt| {
        let cpus = levitate_mm::dtb::tree::find_path(fdt, "/cpus").unwrap();
        assert_eq!(levitate_mm::dtb::tree::child_cell_sizes(&cpus.node), (2, 0));
        let mpidrs: Vec<u64> = cpu_nodes(fdt).map(|c| c.mpidr).collect();
        assert_eq!(
            mpidrs,
            [0x000, 0x100, 0x200, 0x300, 0x400, 0x500, 0x600, 0x700]
        );
    });
}

/// The blob with every `from` replaced by `to`: in place when the lengths match, else
/// through dtc (decompile, replace in the source, recompile).
fn patch(blob: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.len() == to.len() {
        let mut out = blob.to_vec();
        let mut i = 0;
        while i + from.len() <= out.len() {
            if &out[i..i + from.len()] == from {
                out[i..i + from.len()].copy_from_slice(to);
                i += from.len();
            } else {
                i += 1;
            }
        }
        return out;
    }
    let dts = run_dtc(&["-I", "dtb", "-O", "dts", "-q", "-"], blob);
    let from = std::str::from_utf8(&from[..from.len() - 1]).unwrap();
    let to = std::str::from_utf8(&to[..to.len() - 1]).unwrap();
    let text = String::from_utf8(dts).unwrap().replace(from, to);
    run_dtc(&["-I", "dts", "-O", "dtb", "-q", "-"], text.as_bytes())
}

fn run_dtc(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("dtc")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dtc (device-tree-compiler) is needed for this test");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().stdout
}
