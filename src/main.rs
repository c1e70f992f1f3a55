//! The `prism-launcher` binary: the command line (`cli`) over the library; `serve` runs
//! `prism_launcher::app`.

mod cli;

#[global_allocator]
static ALLOCATOR: prism_launcher::allocator::Allocator = prism_launcher::allocator::Allocator;

fn main() -> std::process::ExitCode {
    cli::main()
}
