//! Handing freed heap memory back to the kernel. glibc's malloc keeps what
//! is freed in its per-thread arenas for reuse, so after a burst (say, many
//! large replies held for a slow client) a service would otherwise stay at
//! its peak resident size for good.

use std::time::Duration;

/// Allocator settings; call before any thread starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; called before the
    // runtime's threads exist.
    unsafe {
        // A fixed threshold, which also stops glibc from raising it after
        // the first large free: blocks of 128 KiB and more (reply buffers)
        // are mapped on their own and unmapped when freed.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Every `period`, returns free heap pages of every arena to the kernel.
/// One call takes well under a millisecond on a quiet heap.
pub fn spawn_trimmer(period: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            trim();
        }
    })
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
