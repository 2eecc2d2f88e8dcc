//! Crash-loop guard: more than `max` container deaths within `window` marks a
//! developer as crash-looping. Docker's restart policy keeps restarting it; we
//! report it (status with the last log lines; the `restarts` metric climbs) instead of fighting the policy.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

#[derive(Debug)]
pub struct CrashTracker {
    max: usize,
    window: Duration,
    deaths: HashMap<String, VecDeque<SystemTime>>,
}

impl CrashTracker {
    pub fn new(max: usize, window: Duration) -> CrashTracker {
        CrashTracker {
            max,
            window,
            deaths: HashMap::new(),
        }
    }

    pub fn record(&mut self, developer: &str, at: SystemTime) {
        let q = self.deaths.entry(developer.to_string()).or_default();
        q.push_back(at);
        Self::trim(q, self.window, at);
    }

    pub fn is_looping(&self, developer: &str) -> bool {
        self.is_looping_at(developer, SystemTime::now())
    }

    pub fn is_looping_at(&self, developer: &str, now: SystemTime) -> bool {
        self.deaths.get(developer).is_some_and(|q| {
            q.iter()
                .filter(|t| {
                    now.duration_since(**t)
                        .map(|d| d <= self.window)
                        .unwrap_or(true)
                })
                .count()
                > self.max
        })
    }

    fn trim(q: &mut VecDeque<SystemTime>, window: Duration, now: SystemTime) {
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t).map(|d| d > window).unwrap_or(false))
        {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_max_in_window_is_a_loop() {
        let mut t = CrashTracker::new(3, Duration::from_secs(60));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..3 {
            t.record("dev1", t0 + Duration::from_secs(i));
        }
        assert!(!t.is_looping_at("dev1", t0 + Duration::from_secs(3)));
        t.record("dev1", t0 + Duration::from_secs(4));
        assert!(t.is_looping_at("dev1", t0 + Duration::from_secs(5)));
        assert!(
            !t.is_looping_at("dev2", t0 + Duration::from_secs(5)),
            "per developer"
        );
        assert!(
            !t.is_looping_at("dev1", t0 + Duration::from_secs(200)),
            "old deaths age out"
        );
    }
}
