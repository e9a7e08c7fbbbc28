//! The process entry of the agent binaries: parse flags, set up logging, bind the listener, turn
//! SIGTERM/SIGINT into a shutdown, run the library, map the outcome to an exit code (0 ok,
//! 1 runtime error, 2 bad configuration, [`crate::upgrade::EXIT_UPGRADE`] stopped to start an
//! upgraded binary).
//!
//! `op-agent` and `op-agent-next` (a test target) both call [`main`], each with its own
//! compiled-in version: that version is what `--version`, the heartbeats and the facts report.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;

use crate::config::{AgentCommand, Cli, Config, LogFormat};

/// Runs the agent binary whose version is `version`.
pub fn main(version: &'static str) -> ExitCode {
    crate::set_version(version);
    limit_malloc_arenas();
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.print_config_reference {
        print!("{}", crate::config::reference());
        return ExitCode::SUCCESS;
    }
    if let Some(AgentCommand::ResetIdentity { state_dir }) = &cli.command {
        return reset_identity(state_dir);
    }
    if let Some(AgentCommand::Guard { args }) = &cli.command {
        return crate::upgrade::guard::run(args);
    }
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            op_log::print_stderr(&format!("op-agent: {e}"));
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);

    // One worker by default (`worker_threads`): the agent's work is timers, pipes and small
    // HTTP requests. Each more thread only adds memory (see `op-bench agent-footprint`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        // Blocking threads serve SQLite and /proc work, which serialize anyway; nothing blocks
        // on a process forever here (exits are awaited with pidfds or dedicated threads).
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            op_log::print_stderr(&format!("op-agent: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(serve(config)) {
        // Stopped so that the guard starts the upgraded binary.
        Ok(()) if crate::upgrade::restart_requested() => {
            ExitCode::from(crate::upgrade::EXIT_UPGRADE)
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            op_log::print_stderr(&format!("op-agent: {e:#}"));
            ExitCode::from(1)
        }
    };
    op_log::flush(std::time::Duration::from_secs(1));
    code
}

async fn serve(config: Config) -> anyhow::Result<()> {
    op_tls::catch_hangup(config.tls.is_some())
        .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts that pass port 0 read the real address from this line; a stdout that
    // nobody reads is no reason not to run.
    op_log::print_stdout(&format!("listening on {addr}"));
    tracing::info!(%addr, "listening");

    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        trigger.cancel();
    });
    tokio::spawn(trim_heap());
    crate::run(config, listener, shutdown).await?;
    Ok(())
}

/// Ten seconds after start (the jobs loaded, the first sync made), lets go of what start-up
/// left resident: the executable's start-up pages ([`release_startup_pages`]), once, and the
/// heap's free pages, then again every few minutes: start-up (flags, config, the state database,
/// the first sync) frees far more than an idle agent keeps, and glibc returns little of it on
/// its own. A few microseconds of CPU every few minutes.
async fn trim_heap() {
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    release_startup_pages();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut wait = std::time::Duration::ZERO;
        loop {
            tokio::time::sleep(wait).await;
            // SAFETY: malloc_trim only returns free memory to the kernel; it takes the arena
            // locks itself.
            unsafe {
                libc::malloc_trim(0);
            }
            wait = std::time::Duration::from_secs(300);
        }
    }
}

/// `op-agent reset-identity`: says what it removed and what happens next.
fn reset_identity(state_dir: &std::path::Path) -> ExitCode {
    match crate::state::identity::reset(state_dir) {
        Ok(report) => {
            let previous = report.previous_node_id.map_or_else(
                || "unknown (its database was lost)".to_string(),
                |id| id.to_string(),
            );
            println!(
                "identity reset in {}; the old node id was {previous}",
                state_dir.display()
            );
            for path in &report.removed {
                println!("removed {}", path.display());
            }
            println!(
                "kept api-token, logs/ and deployed packages. At its next start the agent enrolls as a new node; \
                 the manager retires the node with this hostname and machine id and hands its once-job history back."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("op-agent reset-identity: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Never blocks and never panics on a failed stderr; failures are counted (`op-log`).
    op_log::init(filter, config.log_format == LogFormat::Json);
}

/// glibc gives each thread that allocates its own arena, and memory freed in an arena is rarely
/// returned. The agent's threads are few and mostly idle, so one arena loses nothing and keeps
/// the resident size small and flat when many jobs fire at once. `MALLOC_ARENA_MAX` overrides.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tuning parameter; called before any other
        // thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Drops the pages of the executable's read-only segments (code, constants and the relocation
/// table) from the resident set, once, after start-up. Start-up touches much that an idle agent
/// never runs again: flag parsing, the config, the state database's migrations, enrolment, and
/// the loader's pass over the whole relocation table (`.rela.dyn`, about 1 MiB that nothing
/// reads after `main` begins). Those pages are clean and backed by the file, so `MADV_DONTNEED`
/// only unmaps them: what the agent runs from then on faults back in (from the page cache) and
/// stays, and the rest is no longer held (BENCHMARKS.md, agent idle RSS). Writable segments,
/// relocated read-only data included, are never touched. Does nothing if the executable has
/// text relocations (its code pages would not be clean) or its headers are not found.
pub fn release_startup_pages() {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        for (start, len) in read_only_segments() {
            // Whole pages inside the segment only.
            let first = start.next_multiple_of(page);
            let end = (start + len) / page * page;
            if end > first {
                // SAFETY: the range lies inside a read-only, file-backed private mapping of the
                // executable that was never written (no text relocations); MADV_DONTNEED drops
                // its pages and any later access reads them from the file again, unchanged.
                unsafe {
                    libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
                }
            }
        }
    }
}

/// The address and size of each loaded segment of the main executable that is not writable,
/// from its program headers; none when its dynamic section asks for text relocations.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn read_only_segments() -> Vec<(usize, usize)> {
    /// An entry of the dynamic section (`Elf64_Dyn`).
    #[repr(C)]
    struct Dyn {
        tag: i64,
        val: u64,
    }
    const DT_NULL: i64 = 0;
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 0x4;
    const PF_W: u32 = 0x2;

    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the object and our `data` pointer;
        // the dynamic section it points to ends with DT_NULL.
        unsafe {
            let out = &mut *(data.cast::<Vec<(usize, usize)>>());
            let info = &*info;
            let base = info.dlpi_addr as usize;
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            let mut textrel = false;
            if let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) {
                let mut d = (base + dynamic.p_vaddr as usize) as *const Dyn;
                while (*d).tag != DT_NULL {
                    textrel |= (*d).tag == DT_TEXTREL
                        || ((*d).tag == DT_FLAGS && (*d).val & DF_TEXTREL != 0);
                    d = d.add(1);
                }
            }
            if !textrel {
                out.extend(
                    phdrs
                        .iter()
                        .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & PF_W == 0)
                        .map(|p| (base + p.p_vaddr as usize, p.p_memsz as usize)),
                );
            }
        }
        1 // The first object is the executable: stop there.
    }
    let mut found: Vec<(usize, usize)> = Vec::new();
    // SAFETY: the callback only reads the headers dl_iterate_phdr hands it and fills `found`.
    unsafe {
        libc::dl_iterate_phdr(Some(first_object), (&raw mut found).cast::<libc::c_void>());
    }
    found
}

#[cfg(test)]
mod tests {
    /// Resident file-backed kB of this process (`RssFile`).
    fn rss_file_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn start_up_pages_are_released_and_the_code_still_runs() {
        let segments = super::read_only_segments();
        assert!(
            segments.len() >= 2,
            "the test binary has read-only and code segments: {segments:?}"
        );
        let before = rss_file_kib();
        super::release_startup_pages();
        let after = rss_file_kib();
        assert!(
            after + 512 < before,
            "resident file pages went from {before} kB to {after} kB"
        );
        // Code and constants fault back in from the file, unchanged.
        let text = format!(
            "{:?}",
            std::collections::BTreeMap::from([(1, "one"), (2, "two")])
        );
        assert_eq!(text, r#"{1: "one", 2: "two"}"#);
        let parsed: serde_json::Value = serde_json::from_str(r#"{"a": [1, 2.5, "x"]}"#).unwrap();
        assert_eq!(parsed["a"][1], 2.5);
    }
}
