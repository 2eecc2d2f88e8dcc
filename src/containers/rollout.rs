//! Staged rollout of image and spec changes: which developers whose container
//! no longer matches its spec may be recreated this pass. Pure: the reconciler
//! gathers a [`Seen`] per developer and carries out the [`Verdict`]s.
//!
//! `rollout.strategy = "one-at-a-time"`: one developer at a time, in config
//! order. The next goes only once the last one's new container is healthy. A new
//! container that turns unhealthy, crash-loops, stops, or is not healthy within
//! `rollout.health_timeout` halts the rollout: the others stay on their old
//! container, and status says why. The halt ends when that developer's desired
//! spec changes again (a fixed or a reverted image), and that developer goes
//! first. With `rollout.apply = "when-idle"` a developer's turn waits until
//! their code-server is idle, at most `rollout.max_delay` after the change was
//! first seen; the first idle one goes first.
//!
//! Credential rotations are not rollouts (`[secrets]` decides those), and a
//! missing container is created at once: neither is gated here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use bollard::models::HealthStatusEnum;
use serde::Serialize;

use crate::config::{ApplyPolicy, RolloutConfig, RolloutStrategy};
use crate::secrets::policy::{ApplyDecision, decide};

/// One developer as this pass sees it, in config order.
#[derive(Debug, Clone)]
pub struct Seen {
    pub developer: String,
    /// The spec hash this developer should run, when its container differs
    /// from it by spec (not by credentials): a rollout candidate.
    pub drifted_to: Option<String>,
    /// The spec hash of the container it has now.
    pub current: Option<String>,
    pub running: bool,
    pub health: Option<HealthStatusEnum>,
    pub crash_looping: bool,
    /// What the idle probe said (asked only under `when-idle`).
    pub idle: Option<bool>,
}

/// What a rollout candidate does this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Go,
    Wait(String),
}

/// Where the rollout stands, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RolloutStatus {
    /// "idle" (nothing to roll out), "rolling", "waiting-for-idle" or "halted".
    pub state: String,
    /// The developer whose new container is awaited, and since when.
    pub in_flight: Option<String>,
    #[serde(skip)]
    pub in_flight_since: Option<SystemTime>,
    /// Developers moved to the new spec in this rollout.
    pub done: Vec<String>,
    /// Developers still on the old spec.
    pub pending: Vec<String>,
    /// Why the rollout stopped.
    pub halted: Option<String>,
}

#[derive(Debug, Clone)]
struct InFlight {
    developer: String,
    hash: String,
    since: SystemTime,
}

#[derive(Debug, Clone)]
struct Halt {
    developer: String,
    hash: String,
    why: String,
}

/// The rollout's memory across passes.
#[derive(Debug, Default)]
pub struct Rollout {
    in_flight: Option<InFlight>,
    halt: Option<Halt>,
    /// When each candidate's current target was first seen (for `max_delay`).
    first_seen: BTreeMap<String, (String, SystemTime)>,
    done: BTreeSet<String>,
    /// A rollout was under way after the last pass (`done` starts over with the next).
    active: bool,
}

impl Rollout {
    /// The verdict for every candidate in `seen` (developers without
    /// `drifted_to` get none).
    pub fn gate(
        &mut self,
        config: &RolloutConfig,
        seen: &[Seen],
        now: SystemTime,
    ) -> BTreeMap<String, Verdict> {
        let candidates: Vec<&Seen> = seen.iter().filter(|s| s.drifted_to.is_some()).collect();
        self.first_seen.retain(|dev, (hash, _)| {
            candidates
                .iter()
                .any(|c| &c.developer == dev && c.drifted_to.as_ref() == Some(hash))
        });
        for c in &candidates {
            if let Some(hash) = &c.drifted_to {
                self.first_seen
                    .entry(c.developer.clone())
                    .or_insert_with(|| (hash.clone(), now));
            }
        }
        if !candidates.is_empty() && !self.active {
            self.done.clear();
        }
        self.active = !candidates.is_empty() || self.in_flight.is_some();
        if config.strategy == RolloutStrategy::AllAtOnce {
            self.in_flight = None;
            self.halt = None;
            return candidates
                .iter()
                .map(|c| (c.developer.clone(), Verdict::Go))
                .collect();
        }
        self.settle_in_flight(config, seen, now);
        // A new target for the halted developer (fixed or reverted) lifts the halt.
        if let Some(h) = &self.halt
            && let Some(s) = seen.iter().find(|s| s.developer == h.developer)
            && s.drifted_to.as_ref().is_some_and(|t| t != &h.hash)
        {
            self.halt = None;
        }
        let wait = |why: String| {
            candidates
                .iter()
                .map(|c| (c.developer.clone(), Verdict::Wait(why.clone())))
                .collect::<BTreeMap<_, _>>()
        };
        if let Some(h) = &self.halt {
            return wait(format!("rollout halted: {}", h.why));
        }
        if let Some(f) = &self.in_flight {
            return wait(format!(
                "rollout: waiting for {} to become healthy on the new spec",
                f.developer
            ));
        }
        // The developer a halt was about goes first; then config order.
        let eligible = |c: &&&Seen| match config.apply {
            ApplyPolicy::Immediate => true,
            ApplyPolicy::WhenIdle => {
                let seen_at = self.first_seen.get(&c.developer).map_or(now, |(_, at)| *at);
                decide(config.apply, config.max_delay, seen_at, now, c.idle)
                    == ApplyDecision::ApplyNow
            }
        };
        let next = candidates.iter().find(eligible).map(|c| (*c).clone());
        let Some(next) = next else {
            return wait(
                "rollout: waiting for a developer to be idle (rollout.apply = \"when-idle\")"
                    .into(),
            );
        };
        let hash = next.drifted_to.clone().unwrap_or_default();
        self.in_flight = Some(InFlight {
            developer: next.developer.clone(),
            hash,
            since: now,
        });
        candidates
            .iter()
            .map(|c| {
                let v = if c.developer == next.developer {
                    Verdict::Go
                } else {
                    Verdict::Wait(format!(
                        "rollout: {} goes first; the next once it is healthy",
                        next.developer
                    ))
                };
                (c.developer.clone(), v)
            })
            .collect()
    }

    /// The developer in flight is done (healthy on its new spec), halts the
    /// rollout, is still starting, or was not recreated after all.
    fn settle_in_flight(&mut self, config: &RolloutConfig, seen: &[Seen], now: SystemTime) {
        let Some(f) = self.in_flight.clone() else {
            return;
        };
        let Some(s) = seen.iter().find(|s| s.developer == f.developer) else {
            // No longer configured.
            self.in_flight = None;
            return;
        };
        if s.current.as_ref() != Some(&f.hash) || s.drifted_to.is_some() {
            // The recreate failed, or a newer spec superseded the one awaited: it is
            // a candidate again (waiting for the old spec's health would be pointless).
            self.in_flight = None;
            return;
        }
        let waited = now.duration_since(f.since).unwrap_or(Duration::ZERO);
        let failed = if s.health == Some(HealthStatusEnum::HEALTHY) && s.running {
            self.done.insert(f.developer.clone());
            self.in_flight = None;
            return;
        } else if s.crash_looping {
            Some("is crash-looping".to_string())
        } else if s.health == Some(HealthStatusEnum::UNHEALTHY) {
            Some("is unhealthy".to_string())
        } else if !s.running {
            Some("is not running".to_string())
        } else if waited > config.health_timeout {
            Some(format!(
                "was not healthy within rollout.health_timeout ({}s)",
                config.health_timeout.as_secs()
            ))
        } else {
            None
        };
        if let Some(what) = failed {
            self.halt = Some(Halt {
                developer: f.developer.clone(),
                hash: f.hash.clone(),
                why: format!(
                    "{}'s new container {what}; the other developers stay on their current container until the image or spec is fixed (csagent reload)",
                    f.developer
                ),
            });
            self.in_flight = None;
        }
    }

    /// Where the rollout stands, given this pass's view.
    pub fn status(&self, config: &RolloutConfig, seen: &[Seen]) -> RolloutStatus {
        let pending: Vec<String> = seen
            .iter()
            .filter(|s| s.drifted_to.is_some())
            .map(|s| s.developer.clone())
            .collect();
        let state = if self.halt.is_some() {
            "halted"
        } else if self.in_flight.is_some() {
            "rolling"
        } else if pending.is_empty() {
            "idle"
        } else if config.apply == ApplyPolicy::WhenIdle {
            "waiting-for-idle"
        } else {
            "rolling"
        };
        RolloutStatus {
            state: state.into(),
            in_flight: self.in_flight.as_ref().map(|f| f.developer.clone()),
            in_flight_since: self.in_flight.as_ref().map(|f| f.since),
            done: self.done.iter().cloned().collect(),
            pending,
            halted: self.halt.as_ref().map(|h| h.why.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(strategy: RolloutStrategy, apply: ApplyPolicy) -> RolloutConfig {
        RolloutConfig {
            strategy,
            apply,
            max_delay: Duration::from_secs(3600),
            health_timeout: Duration::from_secs(300),
        }
    }

    fn one() -> RolloutConfig {
        config(RolloutStrategy::OneAtATime, ApplyPolicy::Immediate)
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    /// `n` developers, all on spec "old" and healthy, all drifted to "new".
    fn fleet(n: usize) -> Vec<Seen> {
        (1..=n)
            .map(|i| Seen {
                developer: format!("dev{i}"),
                drifted_to: Some(format!("new{i}")),
                current: Some(format!("old{i}")),
                running: true,
                health: Some(HealthStatusEnum::HEALTHY),
                crash_looping: false,
                idle: None,
            })
            .collect()
    }

    /// What the reconciler does with a Go: the container now runs the new spec,
    /// starting.
    fn recreate(seen: &mut [Seen], dev: &str) {
        let s = seen.iter_mut().find(|s| s.developer == dev).unwrap();
        s.current = s.drifted_to.take();
        s.health = Some(HealthStatusEnum::STARTING);
    }

    fn goes(v: &BTreeMap<String, Verdict>) -> Vec<&str> {
        v.iter()
            .filter(|(_, v)| **v == Verdict::Go)
            .map(|(d, _)| d.as_str())
            .collect()
    }

    #[test]
    fn one_at_a_time_waits_for_health_before_the_next() {
        let mut r = Rollout::default();
        let mut seen = fleet(3);
        let v = r.gate(&one(), &seen, t(0));
        assert_eq!(goes(&v), ["dev1"]);
        assert!(matches!(&v["dev2"], Verdict::Wait(w) if w.contains("dev1 goes first")));
        recreate(&mut seen, "dev1");
        // Still starting: nobody else goes.
        let v = r.gate(&one(), &seen, t(10));
        assert!(goes(&v).is_empty(), "{v:?}");
        assert_eq!(r.status(&one(), &seen).state, "rolling");
        assert_eq!(r.status(&one(), &seen).in_flight.as_deref(), Some("dev1"));
        // Healthy: dev2 goes.
        seen[0].health = Some(HealthStatusEnum::HEALTHY);
        let v = r.gate(&one(), &seen, t(40));
        assert_eq!(goes(&v), ["dev2"]);
        recreate(&mut seen, "dev2");
        seen[1].health = Some(HealthStatusEnum::HEALTHY);
        let v = r.gate(&one(), &seen, t(80));
        assert_eq!(goes(&v), ["dev3"]);
        let st = r.status(&one(), &seen);
        assert_eq!(st.done, ["dev1", "dev2"]);
        assert_eq!(st.pending, ["dev3"]);
        recreate(&mut seen, "dev3");
        seen[2].health = Some(HealthStatusEnum::HEALTHY);
        let v = r.gate(&one(), &seen, t(120));
        assert!(v.is_empty());
        let st = r.status(&one(), &seen);
        assert_eq!(st.state, "idle");
        assert_eq!(st.done, ["dev1", "dev2", "dev3"], "until the next rollout");
    }

    #[test]
    fn an_unhealthy_new_container_halts_and_the_rest_stay() {
        let mut r = Rollout::default();
        let mut seen = fleet(3);
        r.gate(&one(), &seen, t(0));
        recreate(&mut seen, "dev1");
        seen[0].health = Some(HealthStatusEnum::UNHEALTHY);
        for at in [30, 60, 3600] {
            let v = r.gate(&one(), &seen, t(at));
            assert!(goes(&v).is_empty(), "{v:?}");
            assert!(
                matches!(&v["dev2"], Verdict::Wait(w) if w.starts_with("rollout halted: dev1's new container is unhealthy")),
                "{v:?}"
            );
        }
        let st = r.status(&one(), &seen);
        assert_eq!(st.state, "halted");
        assert_eq!(st.pending, ["dev2", "dev3"]);
        // A fixed image: dev1 drifts to a third spec and goes first again.
        seen[0].drifted_to = Some("fixed1".into());
        seen[1].drifted_to = Some("fixed2".into());
        seen[2].drifted_to = Some("fixed3".into());
        let v = r.gate(&one(), &seen, t(4000));
        assert_eq!(goes(&v), ["dev1"]);
    }

    #[test]
    fn crash_loop_stop_or_timeout_halt_too() {
        for (what, change) in [
            (
                "crash-looping",
                Box::new(|s: &mut Seen| s.crash_looping = true) as Box<dyn Fn(&mut Seen)>,
            ),
            ("not running", Box::new(|s: &mut Seen| s.running = false)),
            ("health_timeout", Box::new(|_: &mut Seen| {})),
        ] {
            let mut r = Rollout::default();
            let mut seen = fleet(2);
            r.gate(&one(), &seen, t(0));
            recreate(&mut seen, "dev1");
            change(&mut seen[0]);
            let v = r.gate(&one(), &seen, t(301));
            assert!(goes(&v).is_empty(), "{what}: {v:?}");
            let st = r.status(&one(), &seen);
            assert_eq!(st.state, "halted", "{what}");
            assert!(st.halted.unwrap().contains(what), "{what}");
        }
    }

    #[test]
    fn a_failed_recreate_is_tried_again() {
        let mut r = Rollout::default();
        let seen = fleet(2);
        assert_eq!(goes(&r.gate(&one(), &seen, t(0))), ["dev1"]);
        // The create failed: dev1 still runs the old spec.
        assert_eq!(goes(&r.gate(&one(), &seen, t(5))), ["dev1"]);
    }

    #[test]
    fn all_at_once_lets_everyone_go() {
        let mut r = Rollout::default();
        let c = config(RolloutStrategy::AllAtOnce, ApplyPolicy::Immediate);
        let v = r.gate(&c, &fleet(3), t(0));
        assert_eq!(goes(&v), ["dev1", "dev2", "dev3"]);
    }

    #[test]
    fn when_idle_takes_the_first_idle_developer_or_the_deadline() {
        let c = config(RolloutStrategy::OneAtATime, ApplyPolicy::WhenIdle);
        let mut r = Rollout::default();
        let mut seen = fleet(3);
        seen[0].idle = Some(false);
        seen[1].idle = Some(false);
        seen[2].idle = Some(true);
        let v = r.gate(&c, &seen, t(0));
        assert_eq!(goes(&v), ["dev3"], "the idle one first");
        recreate(&mut seen, "dev3");
        seen[2].health = Some(HealthStatusEnum::HEALTHY);
        let v = r.gate(&c, &seen, t(60));
        assert!(goes(&v).is_empty(), "nobody else idle: {v:?}");
        assert_eq!(r.status(&c, &seen).state, "waiting-for-idle");
        // max_delay (1 h) after the change was first seen: dev1 goes anyway.
        let v = r.gate(&c, &seen, t(3600));
        assert_eq!(goes(&v), ["dev1"]);
    }

    #[test]
    fn developers_not_drifted_get_no_verdict() {
        let mut r = Rollout::default();
        let mut seen = fleet(2);
        seen[1].drifted_to = None;
        let v = r.gate(&one(), &seen, t(0));
        assert_eq!(v.keys().collect::<Vec<_>>(), ["dev1"]);
    }

    #[test]
    fn a_newer_spec_supersedes_the_one_in_flight() {
        let mut r = Rollout::default();
        let mut seen = fleet(1);
        assert_eq!(goes(&r.gate(&one(), &seen, t(0))), ["dev1"]);
        recreate(&mut seen, "dev1"); // starting on "new1"
        seen[0].drifted_to = Some("newer1".into());
        assert_eq!(
            goes(&r.gate(&one(), &seen, t(1))),
            ["dev1"],
            "no wait for new1's health"
        );
    }
}
