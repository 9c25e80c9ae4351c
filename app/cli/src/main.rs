//! The `lanspread` program: the only place where the command line, the
//! config directory and the terminal output live; peers are assembled with
//! the `lanspread` library's builder.
#![deny(unsafe_code)]

mod alloc;

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
