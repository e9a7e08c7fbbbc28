//! The `op-agent` binary (the process entry is [`op_agent::entry`]).

fn main() -> std::process::ExitCode {
    op_agent::entry::main(op_agent::BUILD_VERSION)
}
