//! The `nemoclaw` binary; everything lives in [`nemoclaw::cli`].

fn main() -> std::process::ExitCode {
    nemoclaw::cli::main(std::env::args_os())
}
