//! Ports that stay a manager's while it is down.
//!
//! A manager restarts on the ports it had (its agents and its cluster know them). A port the
//! kernel picked for `127.0.0.1:0` comes from the ephemeral range, which is also where every
//! outgoing connection of every other test gets its local port: while the manager was down, one
//! of them could take the port and the restart failed with "Address already in use" (seen in CI,
//! once in several hundred restarts). So a manager's ports are leased here instead: below the
//! ephemeral range, where no connection is given a port, and each one locked for the lease's life
//! by an `flock` on a file in a shared directory, so two test processes never hold the same one.
//! The lock goes with the process, however it ends.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// A port held for this process until the lease is dropped.
pub struct PortLease {
    pub port: u16,
    _lock: Flock<File>,
}

/// The ports leases come from: the 12,000 below the kernel's ephemeral range.
fn range() -> (u16, u16) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low = text
        .split_whitespace()
        .next()
        .and_then(|w| w.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = low.max(13_000);
    (low - 12_000, low)
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("op-testkit-ports");
    std::fs::create_dir_all(&dir).expect("create the port lock dir");
    dir
}

/// A pseudo-random start, different in every process and every call.
fn seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Leases a free port on 127.0.0.1: locked by no other test process and bindable now.
pub fn lease() -> PortLease {
    lease_consecutive(1).pop().expect("one lease")
}

/// Leases `n` consecutive free ports on 127.0.0.1 (for a program that takes one port and uses
/// the next ones too, as the quick start puts raft on the port after the API's).
pub fn lease_consecutive(n: u16) -> Vec<PortLease> {
    let (low, high) = range();
    let span = u64::from(high - low - n.saturating_sub(1));
    let dir = lock_dir();
    let start = seed();
    'next: for i in 0..span {
        let first = low + ((start + i) % span) as u16;
        let mut leases = Vec::with_capacity(usize::from(n));
        for port in first..first + n {
            let Ok(file) = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(port.to_string()))
            else {
                continue 'next;
            };
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue 'next;
            };
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue 'next;
            }
            leases.push(PortLease { port, _lock: lock });
        }
        return leases;
    }
    panic!("no {n} free consecutive ports in {low}..{high}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leased_port_is_below_the_ephemeral_range_and_never_leased_twice() {
        let (_, high) = range();
        let leases: Vec<PortLease> = (0..50).map(|_| lease()).collect();
        let mut ports: Vec<u16> = leases.iter().map(|l| l.port).collect();
        assert!(ports.iter().all(|p| *p < high), "{ports:?}");
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 50, "a port was leased twice");
    }

    #[test]
    fn consecutive_leases_are_consecutive_and_held() {
        let run = lease_consecutive(3);
        let ports: Vec<u16> = run.iter().map(|l| l.port).collect();
        assert_eq!(ports, vec![ports[0], ports[0] + 1, ports[0] + 2]);
        let others: Vec<PortLease> = (0..50).map(|_| lease()).collect();
        assert!(others.iter().all(|l| !ports.contains(&l.port)), "{ports:?}");
    }
}
