//! The route table and everything that builds it: InferenceService parsing, validation, host
//! normalisation and the canary split; and the checks a request head passes before it is routed
//! (`request`). Pure data and logic: no sockets, no clocks, no randomness
//! (the split's roll is passed in), no file reads (the caller hands over file contents), so every
//! rule is unit-tested exactly.

pub mod catalog;
pub mod host;
pub mod objects;
pub mod request;
pub mod table;

pub use catalog::{
    BuildOptions, Catalog, Contents, ObjectError, Outcome, PathTemplate, SourceItem,
};
pub use host::{normalize_host, request_host, HostError};
pub use table::{Backend, Endpoint, HostRoute, IsvcRef, RouteTable, Target};
