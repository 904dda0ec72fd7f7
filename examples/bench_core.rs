//! Micro-benchmarks of the hot loops inside Rust, without Python objects: generation + serialisation
//! of N events into reused buffers, and validation of raw bytes. The benchmark (`bench/bench.py`) prints
//! these beside the stages' figures. Not part of the extension module.
//!
//!     cargo run --release --no-default-features --example bench_core -- [EVENTS] [SEED]
//!
//! Prints one JSON object: {"generate": [events, wall_s, cpu_s], "validate": [...], "contract_default":
//! [...], "contract_default_schema": [...], "contract_shop": [...]}: today's typed validator, the shipped
//! default contract (which runs it), the same rules through the JSON Schema, and the example shop
//! contract; each validating and writing the canonical JSON of a valid event.

use std::time::Instant;

use _core::contract::Contract;
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

/// Validates `values` once each with `check` (which writes the canonical JSON of a valid event into the
/// buffer it is given, as the processor does).
fn contract_loop(values: &[Vec<u8>], c: &Contract, schema: bool) -> LoopTiming {
    let (mut valid, mut out) = (0u64, Vec::with_capacity(512));
    let t = timed(values.len() as u64, || {
        for v in values {
            let r = if schema {
                c.validate_with_schema(Some(v))
            } else {
                c.validate(Some(v))
            };
            if let Ok(e) = r {
                out.clear();
                e.write_canonical_json(&mut out);
                valid += 1;
            }
        }
    });
    std::hint::black_box((valid, out));
    t
}

/// Today's validator with the canonical JSON, for comparison with `contract_loop`.
fn typed_loop(values: &[Vec<u8>]) -> LoopTiming {
    let (mut valid, mut out) = (0u64, Vec::with_capacity(512));
    let t = timed(values.len() as u64, || {
        for v in values {
            if let Ok(e) = validate(Some(v)) {
                out.clear();
                e.write_canonical_json(&mut out);
                valid += 1;
            }
        }
    });
    std::hint::black_box((valid, out));
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
    let default = Contract::default_contract();
    let shop = Contract::parse(
        include_str!("../contracts/examples/shop.json"),
        "contracts/examples/shop.json",
    )
    .expect("the example contract compiles");
    // Alternate today's validator and the default contract five times each, and keep each one's least wall
    // and least CPU time, so that a burst of other load on the machine does not decide the ratio.
    let best = |runs: Vec<LoopTiming>| LoopTiming {
        events: runs[0].events,
        wall_s: runs.iter().map(|r| r.wall_s).fold(f64::INFINITY, f64::min),
        cpu_s: runs.iter().map(|r| r.cpu_s).fold(f64::INFINITY, f64::min),
    };
    let (mut typed_runs, mut default_runs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        typed_runs.push(typed_loop(&values));
        default_runs.push(contract_loop(&values, &default, false));
    }
    let (typed, by_default) = (best(typed_runs), best(default_runs));
    let by_schema = contract_loop(&values, &default, true);
    let by_shop = contract_loop(&values, &shop, false);
    let json = |t: LoopTiming| format!("[{}, {}, {}]", t.events, t.wall_s, t.cpu_s);
    println!(
        "{{\"generate\": {}, \"validate\": {}, \"typed_canonical\": {}, \"contract_default\": {}, \
         \"contract_default_schema\": {}, \"contract_shop\": {}}}",
        json(gen),
        json(val),
        json(typed),
        json(by_default),
        json(by_schema),
        json(by_shop)
    );
}
