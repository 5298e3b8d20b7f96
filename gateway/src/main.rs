//! The `modelgate` binary. All logic lives in the library; this only hands over the arguments.

use mimalloc::MiMalloc;

// On loopback most per-request cost is the kernel and the allocator; mimalloc beats glibc here.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    std::process::exit(gateway::cli::main());
}
