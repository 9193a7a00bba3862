//! How fast this machine serves random cache-line reads from a table of a
//! given size, the way the flow table is read: a batch of 32 addresses is
//! prefetched, then read; and the same reads without the prefetch (the core
//! still overlaps what its out-of-order window holds).
//! The figure bounds what a packet that needs N lines of a big table can cost.
//!
//! `cargo run --release --example memory_parallelism [MiB ...]`
//! (default sizes 1, 8, 32, 128, 512; the tables are madvised onto
//! transparent huge pages, as `l4lb run` does for the flow table).

use l4lb::dpdk::{advise_hugepages, prefetch};

const LINES_READ: usize = 20_000_000;

/// One 64-byte line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([u64; 8]);

fn table(mib: usize) -> Vec<Line> {
    let n = (mib << 20) / std::mem::size_of::<Line>();
    let mut v: Vec<Line> = Vec::with_capacity(n);
    advise_hugepages(v.spare_capacity_mut().as_ptr() as usize, n * std::mem::size_of::<Line>());
    v.resize(n, Line([1; 8]));
    v
}

/// Nanoseconds per line read at random from `t`, `batch` lines at a time
/// (prefetched first when `batch` > 1).
fn ns_per_line(t: &[Line], batch: usize) -> f64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut at = [0usize; 32];
    let mut sum = 0u64;
    let rounds = LINES_READ / batch;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        for a in at.iter_mut().take(batch) {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *a = (((x >> 32) * t.len() as u64) >> 32) as usize;
            if batch > 1 {
                prefetch(&t[*a]);
            }
        }
        for &a in at.iter().take(batch) {
            sum = sum.wrapping_add(std::hint::black_box(&t[a]).0[0]);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / (rounds * batch) as f64;
    std::hint::black_box(sum);
    ns
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1, 8, 32, 128, 512] } else { sizes };
    println!("| table | ns per line, 32 prefetched then read | ns per line, no prefetch |");
    println!("|---|---|---|");
    for mib in sizes {
        let t = table(mib);
        // One pass first: every page mapped, the table as warm as it gets.
        ns_per_line(&t, 32);
        println!("| {mib} MiB | {:.1} | {:.1} |", ns_per_line(&t, 32), ns_per_line(&t, 1));
    }
}
