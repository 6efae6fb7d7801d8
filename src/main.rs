//! The `erpsync` command: parses arguments and hands over to `cli`, which runs the commands on
//! the `erpsync` library and, for `demo` and `sim`, the `erpsync-sim` simulators.

mod cli;

/// With `--features mimalloc`, mimalloc instead of the system's allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
