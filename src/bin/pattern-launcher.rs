//! `pattern-launcher`: prism-launcher under its old name (ADR-057). It runs the `prism-launcher`
//! beside it with the same arguments and the old name, which selects the old command line
//! (`--patterns-dir`, `--grpc-port`, `--isolation`, ...). A symlink named `pattern-launcher` to
//! `prism-launcher` works the same way.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let sibling = match std::env::current_exe() {
        Ok(path) => path.with_file_name("prism-launcher"),
        Err(error) => {
            eprintln!("pattern-launcher: cannot find where it runs from: {error}");
            return ExitCode::FAILURE;
        }
    };
    let error = Command::new(&sibling)
        .arg0("pattern-launcher")
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!(
        "pattern-launcher: cannot run {}: {error}",
        sibling.display()
    );
    ExitCode::FAILURE
}
