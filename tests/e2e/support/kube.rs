//! The fake Kubernetes API server (`tests/fake-apiserver`), shared with the benchmark.

pub use fake_apiserver::{FakeApiServer, Gone, KSERVE};
