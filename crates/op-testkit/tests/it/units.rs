//! Both daemons read sizes and durations the same way: one table of inputs, resolved through each
//! daemon's real config code, from a flag and from its TOML file.

use std::time::Duration;

use op_agent::config as agent;
use op_manager::config as manager;

/// The agent's `shutdown_grace` and the manager's `prune_interval` from a flag, or `None` when
/// refused.
fn durations_from_flags(text: &str) -> (Option<Duration>, Option<Duration>) {
    let cli = agent::Cli {
        shutdown_grace: Some(text.to_string()),
        ..agent::Cli::default()
    };
    let a = agent::Config::resolve(&cli, &agent::FileConfig::default())
        .ok()
        .map(|c| c.shutdown_grace);
    let args = manager::ConfigArgs {
        prune_interval: Some(text.to_string()),
        ..manager::ConfigArgs::default()
    };
    let m = manager::Config::resolve(&args, manager::RawConfig::default())
        .ok()
        .map(|c| c.prune_interval);
    (a, m)
}

/// The agent's `log_keep_bytes` and the manager's `upload_max_bytes` from each daemon's TOML file.
fn sizes_from_files(text: &str) -> (Option<u64>, Option<u64>) {
    let a = agent::parse_file(&format!("log_keep_bytes = {text:?}"))
        .ok()
        .and_then(|f| agent::Config::resolve(&agent::Cli::default(), &f).ok())
        .map(|c| c.log_keep_bytes);
    let m = toml::from_str::<manager::RawConfig>(&format!("upload_max_bytes = {text:?}"))
        .ok()
        .and_then(|f| manager::Config::resolve(&manager::ConfigArgs::default(), f).ok())
        .map(|c| c.upload_max_bytes);
    (a, m)
}

#[test]
fn both_daemons_read_durations_alike() {
    for (text, want) in [
        ("30", Some(30)),
        ("30s", Some(30)),
        ("5m", Some(300)),
        ("1h", Some(3600)),
        ("30d", Some(30 * 86_400)),
        ("1h30m", Some(5400)),
        ("2 min", Some(120)),
        ("soon", None),
        ("1h 30", None),
        ("1y", None),
    ] {
        let want = want.map(Duration::from_secs);
        assert_eq!(durations_from_flags(text), (want, want), "{text:?}");
    }
}

#[test]
fn both_daemons_read_sizes_alike() {
    for (text, want) in [
        ("65536", Some(65_536)),
        ("64kb", Some(64_000)),
        ("64KB", Some(64_000)),
        ("64KiB", Some(65_536)),
        ("64k", Some(64_000)),
        ("20MB", Some(20_000_000)),
        ("1MiB", Some(1 << 20)),
        ("2GiB", Some(2 << 30)),
        ("12 parsecs", None),
        ("MiB", None),
    ] {
        assert_eq!(sizes_from_files(text), (want, want), "{text:?}");
    }
}
