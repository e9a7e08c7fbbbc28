//! Integration tests of the wire contract: fixtures, cron vectors and properties.

mod cron;
mod fixtures;
mod properties;
