//! Maglev table builds (paper, NSDI 2016: 1.8 ms for M = 65537 and 22.9 ms for
//! M = 655373 with 1000 backends).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use l4lb::balancer::flow::mapped;
use l4lb::balancer::maglev::{MaglevBackend, MaglevTable};

fn backends(n: u32) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| MaglevBackend { id: mapped(std::net::Ipv4Addr::from(0xc612_0000 + i)), weight: 1 })
        .collect()
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(20);
    let b = backends(1000);
    for m in [65537u32, 655373] {
        g.bench_with_input(BenchmarkId::new("n1000", m), &m, |bench, &m| {
            bench.iter(|| MaglevTable::build(&b, m).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, build);
criterion_main!(benches);
