//! In-process micro-benchmarks of the hot paths, without Python objects in the loop (the benchmark
//! command prints these next to the pure-Python equivalents).

use std::time::Instant;

use crate::generate::{Generator, GeneratorConfig};
use crate::validate::validate;

#[derive(Debug, Clone, Copy)]
pub struct LoopTiming {
    pub events: u64,
    pub wall_s: f64,
    /// CPU time of the calling thread.
    pub cpu_s: f64,
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
pub fn generate_loop(n: u64, seed: u64) -> LoopTiming {
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
pub fn validate_loop(values: &[Vec<u8>]) -> LoopTiming {
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

#[cfg(test)]
mod tests {
    #[test]
    fn loops_count_what_they_do() {
        let t = super::generate_loop(1000, 1);
        assert_eq!(t.events, 1000);
        assert!(t.wall_s >= 0.0);
        let v = vec![b"{}".to_vec(); 10];
        assert_eq!(super::validate_loop(&v).events, 10);
    }
}
