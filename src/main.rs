//! The binary: reads the options, runs the daemon, and turns how it ended into the exit status
//! (0: stopped with nothing lost; 1: lines were lost, or the run failed; 2: wrong configuration).

mod allocator;
/// musl's `memcpy` and `memmove` replaced on x86_64 (see `memcopy`); other builds test them.
#[cfg(all(target_arch = "x86_64", any(target_env = "musl", test)))]
mod memcopy;

use std::process::ExitCode;

use fifo2kinesis::log::{self, Level};
use fifo2kinesis::options::{self, Command};

/// Small blocks from dlmalloc, large ones from the C library (see `allocator`).
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

fn main() -> ExitCode {
    let command = match options::parse(std::env::args_os().skip(1), |k| std::env::var_os(k)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fifo2kinesis: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match command {
        Command::Help => {
            print!("{}", options::help_text());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("fifo2kinesis {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Run(c) => *c,
    };
    log::set_max_level(if config.debug {
        Level::Debug
    } else {
        Level::Info
    });
    match fifo2kinesis::run(config) {
        Ok(outcome) if outcome.lost == 0 => ExitCode::SUCCESS,
        Ok(outcome) => {
            fifo2kinesis::log!(
                Error,
                "{} lines were lost: neither delivered nor kept on disk",
                outcome.lost
            );
            ExitCode::from(1)
        }
        Err(e @ fifo2kinesis::Error::Setup(_)) => {
            fifo2kinesis::log!(Error, "{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            fifo2kinesis::log!(Error, "{e}");
            ExitCode::from(1)
        }
    }
}
