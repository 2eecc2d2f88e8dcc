//! Password hashing off the async runtime, and the allocator tuning that keeps
//! argon2's large buffers from piling up in memory.

use std::time::Instant;

use futures_util::StreamExt;

use super::{SecretsManager, hash_password};

impl SecretsManager {
    /// Hashes new password versions on blocking threads, so the async loop
    /// (watchdog, events, status) never waits on argon2. At most one hash per
    /// core at a time: argon2 is CPU-bound, so more would not finish sooner but
    /// would hold 19 MiB each (64 developers at once: 1.2 GiB).
    pub async fn prehash(&mut self) {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let started = Instant::now();
        let results: Vec<_> = futures_util::stream::iter(self.hashes_needed())
            .map(|(dev, version, password)| {
                tokio::task::spawn_blocking(move || {
                    let hash = hash_password(&password);
                    (dev, version, hash)
                })
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut hashed = 0;
        for joined in results {
            match joined {
                Ok((dev, version, Ok(hash))) => {
                    self.insert_hash(&dev, &version, hash);
                    hashed += 1;
                }
                Ok((dev, _, Err(e))) => {
                    tracing::error!(developer = %dev, error = %e, "hashing the password failed")
                }
                Err(e) => tracing::error!(error = %e, "hashing task failed"),
            }
        }
        if hashed > 0 {
            tracing::debug!(
                hashed,
                parallel,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "passwords hashed"
            );
            release_freed_memory();
        }
    }
}

/// Each argon2id hash takes 19 MiB. By default glibc raises its mmap threshold
/// after the first such buffer is freed, so later ones land in per-thread arenas
/// that keep the pages: hashing 8 passwords peaked at 130 MiB. A fixed threshold
/// keeps large buffers in their own mappings, given back on free. Call it once,
/// first thing in the process.
pub fn pin_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Returns what the arenas still hold after a round of hashing (belt and braces
/// with the pinned threshold: small allocations made while hashing).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes
    // no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
