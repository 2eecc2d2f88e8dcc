//! Password hashing off the async runtime, and the allocator tuning that keeps
//! argon2's large buffers from piling up in memory.

use std::time::Instant;

use super::{SecretsManager, hash_password};

impl SecretsManager {
    /// Hashes new password versions on a blocking thread, so the async loop
    /// (watchdog, events, status) never waits on argon2. One at a time: each
    /// hash holds 19 MiB, and two in parallel made them the agent's peak memory
    /// (54 MiB at start with 8 developers, against ~35 MiB one at a time). Serial
    /// costs ~30 ms per password at start (8 developers: ~0.25 s instead of
    /// 0.12 s), and the peak no longer grows with the host's cores.
    pub async fn prehash(&mut self) {
        let needed = self.hashes_needed();
        if needed.is_empty() {
            return;
        }
        let started = Instant::now();
        let results = tokio::task::spawn_blocking(move || {
            needed
                .into_iter()
                .map(|(dev, version, password)| {
                    let hash = hash_password(&password);
                    (dev, version, hash)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                // The hashes are made again, one per developer, when the
                // containers are converged (`SecretsManager::password_hash`).
                tracing::error!(error = %e, "hashing task failed");
                return;
            }
        };
        let mut hashed = 0;
        for (dev, version, hash) in results {
            match hash {
                Ok(hash) => {
                    self.insert_hash(&dev, &version, hash);
                    hashed += 1;
                }
                Err(e) => {
                    tracing::error!(developer = %dev, error = %e, "hashing the password failed")
                }
            }
        }
        if hashed > 0 {
            tracing::debug!(
                hashed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "passwords hashed"
            );
            release_freed_memory();
        }
    }
}

/// Allocator settings for the agent, set before its runtime starts any thread.
///
/// Each argon2id hash takes 19 MiB. By default glibc raises its mmap threshold
/// after the first such buffer is freed, so later ones land in per-thread arenas
/// that keep the pages: hashing 8 passwords peaked at 130 MiB. A fixed threshold
/// keeps large buffers in their own mappings, given back on free.
///
/// glibc also gives threads their own arenas, up to 8 per core (64 on an
/// 8-vCPU host); each keeps its freed pages. The agent is mostly idle and its
/// few threads contend little, so two arenas are plenty (idle RSS with 8
/// developers: see docs/benchmarks.md, "issue 20: footprint").
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives the kernel back the free pages the arenas still hold: after a round of
/// hashing (belt and braces with the pinned threshold: small allocations made
/// while hashing) and once the agent has started (the start-up pass's
/// allocations are done).
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes
    // no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
