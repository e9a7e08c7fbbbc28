//! One module per measurement.

pub mod cluster;
pub mod console;
pub mod cron_precision;
pub mod fanout;
pub mod footprint;
pub mod invoke;
pub mod package_fanout;
