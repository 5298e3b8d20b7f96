//! One-shot measurement of building the route table from 10,000 InferenceServices: wall time
//! of the first build (cold, as at gateway start) and of a rebuild (a reload), and the memory
//! the table holds. Prints one JSON line; `bench/run.sh` records it.
//!
//! `rebuild_ms` re-applies the same files (every file unchanged, so nothing is parsed again);
//! `one_file_changed_ms` is the median of five reloads that each change one file of 100.
//!
//! Run: `cargo bench -p routes --bench table_oneshot` (`BENCH_ISVCS=N` changes the count).
//! Memory is read from /proc/self/status (Linux): `table_rss_kib` is the resident growth from
//! just before the build to just after the inputs are dropped (what the live table keeps),
//! `peak_rss_kib` the process's high-water mark (inputs, parse trees and table together).

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use routes::{Catalog, Contents, SourceItem};
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
        .map(|f| match &f.contents {
            Contents::Text(Ok(t)) => t.len(),
            _ => 0,
        })
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

    // A reload where one file of the many changed: only that file is parsed again.
    let mut files = files;
    let mut one_changed_ms = Vec::new();
    let count = files.len();
    for k in 0..5 {
        let f = &mut files[k * 7 % count];
        let Contents::Text(Ok(text)) = &f.contents else {
            unreachable!("generated")
        };
        let text = text.replace("generation: 2", &format!("generation: {}", 3 + k));
        f.contents = Contents::Text(Ok(text));
        let start = Instant::now();
        let changed = catalog.apply(&files);
        one_changed_ms.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(changed.table.len(), hosts);
    }
    one_changed_ms.sort_by(f64::total_cmp);
    let one_changed_ms = one_changed_ms[one_changed_ms.len() / 2];
    drop(outcome);
    drop(files);

    let table_rss_kib = status_kib("VmRSS:").saturating_sub(rss_before);
    println!(
        "{{\"isvcs\": {n}, \"hosts\": {hosts}, \"input_bytes\": {input_bytes}, \"first_build_ms\": {first_ms:.1}, \"rebuild_ms\": {rebuild_ms:.1}, \"one_file_changed_ms\": {one_changed_ms:.1}, \"table_rss_kib\": {table_rss_kib}, \"peak_rss_kib\": {}}}",
        status_kib("VmHWM:")
    );
    drop(again);
    api_objects(n);
}

/// The same objects as the Kubernetes API source hands them over: one item per object, already
/// decoded, versioned by `resourceVersion`. The first build, and a build after one object
/// changed (the catalog's share of "one changed object is in the table within 100 ms").
fn api_objects(n: usize) {
    let items: Vec<SourceItem> = (0..n)
        .map(|i| SourceItem {
            path: format!("api:/apis/serving.kserve.io/v1beta1/namespaces/x/inferenceservices/{i}"),
            contents: Contents::Object {
                value: std::sync::Arc::new(serde_yaml::from_str(&common::isvc_yaml(i)).unwrap()),
                version: "1".into(),
            },
        })
        .collect();
    let mut catalog = Catalog::new(common::options(n));
    let start = Instant::now();
    let outcome = catalog.apply_source("kubernetes", &items, &[]);
    let first_ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors.first());
    let mut items = items;
    let mut one_changed_ms = Vec::new();
    for k in 0..5 {
        let item = &mut items[k * 7 % n];
        item.contents = match &item.contents {
            Contents::Object { value, .. } => Contents::Object {
                value: value.clone(),
                version: format!("{}", 2 + k),
            },
            other => other.clone(),
        };
        let start = Instant::now();
        catalog.apply_source("kubernetes", &items, &[]);
        one_changed_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    one_changed_ms.sort_by(f64::total_cmp);
    println!(
        "{{\"source\": \"api\", \"isvcs\": {n}, \"hosts\": {}, \"first_build_ms\": {first_ms:.1}, \"one_object_changed_ms\": {:.1}}}",
        outcome.table.len(),
        one_changed_ms[one_changed_ms.len() / 2]
    );
}
