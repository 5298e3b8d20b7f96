//! Criterion benchmarks of the route table: building it from 1,000 and 10,000
//! InferenceServices (the reload cost), and the per-request work (host normalisation, lookup,
//! component choice and the weighted split).
//!
//! Run: `cargo bench -p routes --bench table`

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use routes::{request_host, Catalog};
use std::hint::black_box;
use std::time::Duration;

/// A fresh catalog applying a complete read of `n` objects: what the gateway does at start and
/// on every reload (the YAML parse is included; the file reads are not).
fn table_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("table_build");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for n in [1_000, 10_000] {
        let files = common::source(n, 100);
        let options = common::options(n);
        group.bench_function(format!("{n}_isvcs"), |b| {
            b.iter_batched(
                || Catalog::new(options.clone()),
                |mut catalog| {
                    let outcome = catalog.apply(black_box(&files));
                    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors.first());
                    outcome.table
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// The request path's routing work, on the 10,000-object table: normalise the `Host` header
/// (with a port, as clients send it), look it up, choose the component, draw the split.
fn lookup_split(c: &mut Criterion) {
    let n = 10_000;
    let outcome = Catalog::new(common::options(n)).apply(&common::source(n, 100));
    assert!(outcome.errors.is_empty());
    let table = outcome.table;
    let hosts: Vec<String> = (0..1024)
        .map(|i| format!("{}:8080", common::host(i * 7 % n)))
        .collect();
    let mut group = c.benchmark_group("lookup_split");
    group.bench_function("hit", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            let raw = &hosts[i & 1023];
            let host = request_host(black_box(raw), &[80, 8080]).unwrap();
            let route = table.lookup(&host).unwrap();
            let target = route.target("/v1/models/m:predict", None);
            let roll = (i as u32).wrapping_mul(2_654_435_761);
            target.pick(black_box(roll), &[]).unwrap()
        })
    });
    group.bench_function("hit_tag_header", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            let host = request_host(black_box(&hosts[i & 1023]), &[80, 8080]).unwrap();
            let route = table.lookup(&host).unwrap();
            let target = route.target("/v1/models/m:predict", Some("latest"));
            target.pick(black_box(i as u32), &[]).unwrap()
        })
    });
    group.bench_function("miss", |b| {
        b.iter(|| {
            let host =
                request_host(black_box("nobody.nowhere.example.com:8080"), &[80, 8080]).unwrap();
            table.lookup(&host).is_none()
        })
    });
    group.bench_function("split_only", |b| {
        let target = table.lookup(&common::host(0)).unwrap().entry.clone();
        let mut roll = 0u32;
        b.iter(|| {
            roll = roll.wrapping_add(2_654_435_761);
            target.pick(black_box(roll), &[])
        })
    });
    group.finish();
}

criterion_group!(benches, table_build, lookup_split);
criterion_main!(benches);
