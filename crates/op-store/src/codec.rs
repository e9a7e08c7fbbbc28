//! Conversions between Rust values and SQLite columns, kept in one place so every table stores
//! times, ids and lists the same way: times as unix milliseconds, ids as hyphenated UUID text, IP
//! lists as ",a,b," (exact matching with LIKE), documents as JSON text.

use std::net::IpAddr;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{Result, StoreError};

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

pub(crate) fn ip_list(ips: &[IpAddr]) -> String {
    let mut s = String::from(",");
    for ip in ips {
        s.push_str(&ip.to_string());
        s.push(',');
    }
    s
}

/// The IPs of an `ip_list` column; entries that do not parse are skipped.
pub(crate) fn parse_ip_list(text: &str) -> Vec<IpAddr> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

pub(crate) fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).unwrap_or(Uuid::nil())
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing our own plain data types cannot fail (no maps with non-string keys, no I/O).
    serde_json::to_string(value).unwrap_or_default()
}

pub(crate) fn from_json<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { what, source })
}

/// Escapes `%`, `_` and `\` for a LIKE pattern used with `ESCAPE '\'`.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
