//! The `erpsync` command: parses arguments and hands over to `erpsync::cli`.

fn main() -> std::process::ExitCode {
    erpsync::cli::main()
}
