//! The `lanspread` program.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    lanspread_app::cli::main()
}
