//! One module per measurement. The agent's own (`footprint`, `cron_precision`, `invoke`) start a
//! standalone `op-agent`; the manager's (`propagation`, `ingest`, `idle`, `follow`) start an `op-manager` and
//! the fleet simulator; `propagation_real` starts a manager and real agents.

pub mod cluster;
pub mod console;
pub mod cron_fleet;
pub mod cron_precision;
pub mod fanout;
pub mod follow;
pub mod footprint;
pub mod idle;
pub mod incident;
pub mod ingest;
pub mod invoke;
pub mod package_fanout;
pub mod package_peers;
pub mod propagation;
pub mod propagation_real;
