//! `cargo xtask bench`: Levitate's frame allocator (the kernel's front: per-CPU caches, the
//! bitmap layer, the buddy) and heaps against peer crates and a minimal reference, all in
//! one process with interleaved repetitions, printed as a table of median / mean / p99 per
//! operation with ratios, and optionally written as JSON (`--json FILE`) and as an SVG plot of
//! the latency distributions (`--svg FILE`, plot.rs). `--quick` is a
//! short run; `--smoke` a run of a second or so that only checks the bench still works.
//!
//! Numbers, not tests: nothing here asserts on time.

mod frame_work;
mod frames;
mod heap;
mod heap_work;
mod measure;
mod plot;
mod reference;
mod report;

use frame_work::{Sizes, FRAMES};
use frames::{BitmapAlloc, Bsa, Frames, Levitate};
use heap::Heap;
use measure::Summary;
use reference::Reference;
use report::{Report, Row};
use std::collections::BTreeMap;

/// How long to run.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Full,
    Quick,
    Smoke,
}

fn main() {
    let mut mode = Mode::Full;
    let mut json = None;
    let mut svg = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => mode = Mode::Quick,
            "--smoke" => mode = Mode::Smoke,
            "--json" => match args.next() {
                Some(f) => json = Some(f),
                None => fail("--json needs a file name"),
            },
            "--svg" => match args.next() {
                Some(f) => svg = Some(f),
                None => fail("--svg needs a file name"),
            },
            "-h" | "--help" => {
                println!("usage: levitate-bench [--quick | --smoke] [--json FILE] [--svg FILE]");
                return;
            }
            other => fail(&format!("unknown argument {other:?} (try --help)")),
        }
    }
    let report = run(mode);
    report.print();
    if let Some(path) = json {
        if let Err(e) = std::fs::write(&path, report.json()) {
            fail(&format!("cannot write {path}: {e}"));
        }
        println!("wrote {path}");
    }
    if let Some(path) = svg {
        let title = format!(
            "Latency per operation, CDF ({} repetitions{})",
            report.reps,
            if report.quick { ", short run" } else { "" }
        );
        if let Err(e) = plot::write_svg(&path, &report.distributions, &report::ORDER, &title) {
            fail(&e);
        }
        println!("wrote {path}");
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("levitate-bench: {msg}");
    std::process::exit(2);
}

fn run(mode: Mode) -> Report {
    let (reps, sizes, heap_ops, scaling_reps) = match mode {
        Mode::Full => (
            15,
            Sizes {
                pair_batches: 100,
                ops: 70_000,
                scaling_pairs: 200_000,
            },
            6_000,
            61,
        ),
        Mode::Quick => (
            7,
            Sizes {
                pair_batches: 50,
                ops: 30_000,
                scaling_pairs: 200_000,
            },
            2_000,
            11,
        ),
        Mode::Smoke => (
            1,
            Sizes {
                pair_batches: 3,
                ops: 2_000,
                scaling_pairs: 2_000,
            },
            100,
            1,
        ),
    };
    let clock = measure::clock_cost();
    let levitate = Levitate::instance(FRAMES, 2);
    let impls: [&dyn Frames; 4] = [
        levitate,
        &Reference::new(FRAMES as u32, 2),
        &Bsa::new(FRAMES),
        &BitmapAlloc::new(FRAMES),
    ];
    let mut samples: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut waste = BTreeMap::new();
    let mut scaling: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for rep in 0..reps {
        let seed = 0x1e71_7a7e + rep as u64;
        // (a) and (b) interleave the implementations slice by slice (frame_work::interleaved).
        for (w, per_impl) in [
            ("order0-empty", frame_work::order0_empty(&impls, sizes)),
            (
                "order0-fragmented",
                frame_work::order0_fragmented(&impls, sizes, seed),
            ),
        ] {
            for (f, s) in impls.iter().zip(per_impl) {
                samples.entry((w, f.name())).or_default().extend(s);
            }
        }
        for f in impls {
            let s = frame_work::mixed(f, sizes, seed, clock);
            samples.entry(("mixed", f.name())).or_default().extend(s);
            // bitmap-allocator searches for a run linearly (tens of microseconds at 1 GiB):
            // fewer operations, as for linked_list_allocator's heap below.
            let run_sizes = if f.name() == "bitmap_allocator" {
                Sizes {
                    ops: sizes.ops / 10,
                    ..sizes
                }
            } else {
                sizes
            };
            let (s, w) = frame_work::runs(f, run_sizes, seed, clock);
            samples.entry(("runs", f.name())).or_default().extend(s);
            waste.insert(f.name(), w);
        }
    }
    for _ in 0..scaling_reps {
        for f in impls {
            scaling
                .entry(f.name())
                .or_default()
                .push(frame_work::scaling(f, sizes));
        }
    }
    let before = levitate.chunks_taken();
    let boundary = 1000;
    frame_work::boundary_pairs(levitate, boundary);
    let chunk_churn = (levitate.chunks_taken() - before) as f64 / boundary as f64;

    let mut heaps: Vec<Box<dyn Heap>> = vec![
        Box::new(heap::LevitateHeap::new()),
        Box::new(heap::Talc::new()),
        Box::new(heap::LinkedList::new()),
        Box::new(heap::BuddyHeap::new()),
        Box::new(heap::Tlsf::new()),
    ];
    use heap_work::Timing::{Loop, PerOperation as PerOp};
    let (mut heap_waste, mut waste_1k, mut reclaimed) = (None, None, None);
    for rep in 0..reps {
        let seed = 0x4ea9 + rep as u64;
        for h in heaps.iter_mut() {
            let h = h.as_mut();
            let name = h.name();
            let mut add =
                |w: &'static str, s: Vec<f64>| samples.entry((w, name)).or_default().extend(s);
            add(
                "heap-small-1k",
                heap_work::steady(
                    h,
                    1_000,
                    (16, 512),
                    heap_ops,
                    seed,
                    clock,
                    PerOp,
                    &mut waste_1k,
                ),
            );
            // linked_list_allocator's first-fit walk over 10k blocks is slow: fewer ops.
            let ops_10k = if name == "linked_list_allocator" {
                heap_ops / 10
            } else {
                heap_ops
            };
            add(
                "heap-small-10k",
                heap_work::steady(
                    h,
                    10_000,
                    (16, 512),
                    ops_10k,
                    seed,
                    clock,
                    PerOp,
                    &mut heap_waste,
                ),
            );
            let large = (4 << 10, 64 << 10);
            let mut none = None;
            add(
                "heap-large",
                heap_work::steady(h, 64, large, heap_ops, seed, clock, PerOp, &mut none),
            );
            add(
                "heap-large-loop",
                heap_work::steady(h, 64, large, heap_ops, seed, clock, Loop, &mut none),
            );
            add("heap-mix", heap_work::mix(h, heap_ops / 50 + 1, seed));
            add(
                "heap-grow-16M",
                heap_work::grow_and_free(h, seed, &mut reclaimed),
            );
        }
    }

    let distributions = plot::distributions(&mut samples);
    let rows = samples
        .into_iter()
        .map(|((workload, imp), mut s)| Row {
            workload,
            imp,
            summary: Summary::of(&mut s),
        })
        .collect();
    let scaling = scaling
        .into_iter()
        .map(|(k, mut v)| (k, Summary::of(&mut v).median))
        .collect();
    Report {
        rows,
        scaling,
        waste,
        chunk_churn,
        heap_waste,
        heap_reclaimed: reclaimed,
        clock,
        reps,
        quick: mode != Mode::Full,
        distributions,
    }
}

#[cfg(test)]
mod tests {
    /// A run of a second or so: every workload measured on every implementation, the
    /// figures that are not timings right. Timings themselves are never checked.
    #[test]
    fn smoke_run_covers_every_workload_and_implementation() {
        let report = super::run(super::Mode::Smoke);
        let json = report.json();
        let frames = [
            "levitate",
            "reference",
            "buddy_system_allocator",
            "bitmap_allocator",
        ];
        let heaps = [
            "levitate",
            "talc",
            "linked_list_allocator",
            "buddy_system_allocator",
            "rlsf",
        ];
        for (workloads, impls) in [
            (
                &["order0-empty", "order0-fragmented", "mixed", "runs"][..],
                &frames[..],
            ),
            (
                &[
                    "heap-small-1k",
                    "heap-small-10k",
                    "heap-large",
                    "heap-large-loop",
                    "heap-mix",
                    "heap-grow-16M",
                ][..],
                &heaps[..],
            ),
        ] {
            for w in workloads {
                for i in impls {
                    let key = format!("\"name\":\"{w}\",\"impl\":\"{i}\"");
                    assert!(json.contains(&key), "no {key} in\n{json}");
                }
            }
        }
        // Levitate's runs cost exactly their frames; a buddy's are rounded up (about a third
        // more for lengths uniform in 1..=511).
        assert_eq!(report.waste["levitate"], 0.0);
        assert_eq!(report.waste["bitmap_allocator"], 0.0);
        assert!(report.waste["reference"] > 0.2);
        assert!(report.waste["buddy_system_allocator"] > 0.2);
        assert!(report.heap_reclaimed.is_some_and(|r| r >= 0.9));
        assert!(report.heap_waste.is_some_and(|w| w > 0.0 && w < 0.5));
        assert!(json.contains("\"scaling_2_threads\""));
        assert!(json.contains("\"metadata_percent_of_ram\""));
    }
}
