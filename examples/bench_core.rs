//! Micro-benchmarks of the hot loops inside Rust, without Python objects: generation + serialisation
//! of N events into reused buffers, and validation of raw bytes. The benchmark (`bench/bench.py`) prints
//! these beside the stages' figures. Not part of the extension module.
//!
//!     cargo run --release --no-default-features --example bench_core -- [EVENTS] [SEED]
//!
//! Prints one JSON object: {"generate": [events, wall_s, cpu_s], "validate": [...]}.

use std::time::Instant;

use _core::generate::{Generator, GeneratorConfig};
use _core::validate::validate;

#[derive(Debug, Clone, Copy)]
struct LoopTiming {
    events: u64,
    wall_s: f64,
    /// CPU time of the calling thread.
    cpu_s: f64,
}

fn thread_cpu_s() -> f64 {
    // /proc/thread-self/stat: utime and stime (fields 14 and 15) in clock ticks.
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // After ')', field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn timed(events: u64, f: impl FnOnce()) -> LoopTiming {
    let (c0, t0) = (thread_cpu_s(), Instant::now());
    f();
    LoopTiming {
        events,
        wall_s: t0.elapsed().as_secs_f64(),
        cpu_s: thread_cpu_s() - c0,
    }
}

/// Generates and serialises `n` events into reused buffers.
fn generate_loop(n: u64, seed: u64) -> LoopTiming {
    let mut g = Generator::new(&GeneratorConfig {
        seed: Some(seed),
        ..Default::default()
    });
    let (mut k, mut v) = (Vec::with_capacity(64), Vec::with_capacity(512));
    let mut bytes = 0usize;
    let t = timed(n, || {
        for _ in 0..n {
            g.next_into(&mut k, &mut v);
            bytes += v.len();
        }
    });
    std::hint::black_box(bytes);
    t
}

/// Validates `values` (raw bytes) once each.
fn validate_loop(values: &[Vec<u8>]) -> LoopTiming {
    let mut valid = 0u64;
    let t = timed(values.len() as u64, || {
        for v in values {
            if validate(Some(v)).is_ok() {
                valid += 1;
            }
        }
    });
    std::hint::black_box(valid);
    t
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    // The values to validate: the same generator's output, ~25% invalid in every way it knows.
    let mut g = Generator::new(&GeneratorConfig {
        seed: Some(seed + 1),
        ..Default::default()
    });
    let values: Vec<Vec<u8>> = (0..n.min(1_000_000))
        .map(|_| {
            let (mut k, mut v) = (Vec::new(), Vec::new());
            g.next_into(&mut k, &mut v);
            v
        })
        .collect();
    let gen = generate_loop(n, seed);
    let val = validate_loop(&values);
    println!(
        "{{\"generate\": [{}, {}, {}], \"validate\": [{}, {}, {}]}}",
        gen.events, gen.wall_s, gen.cpu_s, val.events, val.wall_s, val.cpu_s
    );
}
