//! The `erpsync` command: parses arguments and hands over to `cli`, which runs the commands on
//! the `erpsync` library and, for `demo` and `sim`, the `erpsync-sim` simulators.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
