//! One-shot measurement of building the route table from 10,000 InferenceServices: wall time
//! of the first build (cold, as at gateway start) and of a rebuild (a reload), and the memory
//! the table holds. Prints one JSON line; `bench/run.sh` records it.
//!
//! Run: `cargo bench -p routes --bench table_oneshot` (`BENCH_ISVCS=N` changes the count).
//! Memory is read from /proc/self/status (Linux): `table_rss_kib` is the resident growth from
//! just before the build to just after the inputs are dropped (what the live table keeps),
//! `peak_rss_kib` the process's high-water mark (inputs, parse trees and table together).

mod common;

use routes::Catalog;
use std::time::Instant;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("BENCH_ISVCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let files = common::source(n, 100);
    let input_bytes: usize = files
        .iter()
        .map(|f| f.contents.as_ref().map_or(0, String::len))
        .sum();
    let options = common::options(n);
    let rss_before = status_kib("VmRSS:");

    let mut catalog = Catalog::new(options);
    let start = Instant::now();
    let outcome = catalog.apply(&files);
    let first_ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors.first());
    let hosts = outcome.table.len();

    let start = Instant::now();
    let again = catalog.apply(&files);
    let rebuild_ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(again.table.len(), hosts);
    drop(outcome);
    drop(files);

    let table_rss_kib = status_kib("VmRSS:").saturating_sub(rss_before);
    println!(
        "{{\"isvcs\": {n}, \"hosts\": {hosts}, \"input_bytes\": {input_bytes}, \"first_build_ms\": {first_ms:.1}, \"rebuild_ms\": {rebuild_ms:.1}, \"table_rss_kib\": {table_rss_kib}, \"peak_rss_kib\": {}}}",
        status_kib("VmHWM:")
    );
    drop(again);
}
