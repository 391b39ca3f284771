//! The `msync` binary: parse the command line, run the command, and turn
//! the outcome into a documented exit code. Only this file exits.

use std::process::ExitCode as ProcessExit;

use clap::Parser;

use msync::cli::Cli;
use msync::error::exit_code_of;

fn main() -> ProcessExit {
    // clap exits with 2 on usage errors and 0 for --help, as documented.
    let cli = Cli::parse();
    let code = match msync::cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("msync: {err:#}");
            exit_code_of(&err)
        }
    };
    msync::rclone::finalize();
    ProcessExit::from(code.code())
}
