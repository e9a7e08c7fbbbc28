//! `op-agent-next`: the same agent as `op-agent`, with the compiled-in version
//! `<crate version>.1`. It exists so tests of self-upgrade (issue 22) have two honestly different
//! agent binaries from one build: same code, a different version constant, a different file.
//! It is not packaged.

fn main() -> std::process::ExitCode {
    op_agent::entry::main(concat!(env!("CARGO_PKG_VERSION"), ".1"))
}
