//! The `lanspread` program: the only place where the command line, the
//! config directory and the terminal output live; peers are assembled with
//! the `lanspread` library's builder.
#![forbid(unsafe_code)]

mod cli;
mod control;
mod demo;
mod limits;
mod output;
mod remote;
mod setup;
mod ui;

fn main() -> std::process::ExitCode {
    cli::main()
}
