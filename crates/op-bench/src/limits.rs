//! The operating-system limits a large simulated fleet runs into, checked before anything starts.
//!
//! Every simulated agent holds one TCP connection to the manager while its sync call is parked, so
//! N agents need N open files in this process and N in the manager; local ports come from the
//! ephemeral range of each pool's own loopback source address (127.0.0.1, .2, ...). A limit that is too
//! low would otherwise show up as connections that fail or hang half-way through a run; here it is
//! a clear error before the run, naming the setting to change (BENCHMARKS.md lists them).

use anyhow::bail;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Files and ports kept for everything that is not an agent connection: the manager's databases
/// and listeners, the admin client, the runtime, a few spare connections while pools turn over.
const HEADROOM: u64 = 256;

/// Raises this process's soft open-files limit to the hard limit (children inherit it, so the
/// manager starts with it too), and returns the new soft limit.
pub fn raise_nofile() -> anyhow::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// The number of ports in `net.ipv4.ip_local_port_range`, when it can be read.
fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (low, high) = (it.next()??, it.next()??);
    Some(high.saturating_sub(low) + 1)
}

/// Fails, naming the limit, when `agents` simulated agents cannot all hold a connection.
pub fn check_fleet(agents: usize) -> anyhow::Result<()> {
    let need = agents as u64 + HEADROOM;
    let nofile = raise_nofile()?;
    if nofile < need {
        bail!(
            "{agents} simulated agents need about {need} open files in op-bench and in the manager, \
             but the hard limit (ulimit -Hn) is {nofile}; raise it (e.g. `ulimit -Hn {need}` as root, \
             or LimitNOFILE= in a systemd unit) or simulate at most {} agents",
            nofile.saturating_sub(HEADROOM)
        );
    }
    // Each pool of agents connects from its own loopback address ([`crate::fleet::source_address`]),
    // so one address needs ports for one pool only.
    let per_address = agents.min(crate::fleet::AGENTS_PER_POOL) as u64 + HEADROOM;
    if let Some(ports) = ephemeral_ports()
        && ports < per_address
    {
        bail!(
            "each source address of the simulated agents needs about {per_address} local ports, \
             but net.ipv4.ip_local_port_range holds {ports}; widen it \
             (`sysctl -w net.ipv4.ip_local_port_range=\"1024 65000\"`)"
        );
    }
    Ok(())
}
