//! The `prism-launcher` binary: the command line (`cli`) over the library; `serve` runs
//! `prism_launcher::app`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
