//! Giving freed heap back to the kernel while thousands of agents are parked.
//!
//! Every sync cycle of every agent allocates a request, an answer and their buffers, and frees
//! them a moment later, on whichever worker thread the task ran. glibc keeps freed chunks inside
//! its arenas; with 10,000 agents cycling, holes between long-lived allocations (each parked
//! connection's buffers) are never at the top of the heap, so RSS drifts up by tens of MiB that
//! nothing uses (`op-bench idle --agents 10000`, BENCHMARKS.md). `malloc_trim(0)` releases the
//! free pages anywhere in the arenas. It walks the free lists with the arena locked, which takes
//! milliseconds at this size, so it runs on a blocking thread every [`TRIM_EVERY`], not on the
//! request path. Other allocators (musl, or when not on Linux/glibc) are left alone.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed heap is returned.
pub const TRIM_EVERY: Duration = Duration::from_secs(15);

/// Trims the heap every [`TRIM_EVERY`] until `shutdown`.
pub async fn trim_loop(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; nothing has been freed yet.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
