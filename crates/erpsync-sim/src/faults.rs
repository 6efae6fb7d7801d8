//! Fault injection shared by both simulators: random 5xx, 429s, latency and timeouts drawn from
//! a seeded generator (so a failing test replays), plus precise "fail the next N requests"
//! rules, including writes that are applied and then answered with an error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The faults a simulator injects. Every share is a probability in `0.0..=1.0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered with `error_status` without being handled.
    pub error_rate: f64,
    /// Status of injected server errors.
    pub error_status: u16,
    /// Delay added before every request is handled, in milliseconds.
    pub latency_ms: u64,
    /// Share of requests held for `timeout_ms` and then answered 504 without being handled:
    /// a client with a shorter timeout sees a timeout.
    pub timeout_rate: f64,
    /// How long a timed-out request is held, in milliseconds.
    pub timeout_ms: u64,
    /// Share of requests answered 429 (on top of the simulator's own rate limit).
    pub rate_limit_rate: f64,
    /// `Retry-After` seconds sent with injected 429s; `None` sends no header.
    pub retry_after_secs: Option<u64>,
    /// Share of writes (not GET) that are applied and then answered with `error_status`, so
    /// the client cannot know the write happened.
    pub lost_write_rate: f64,
    /// Every webhook is delivered twice (same body, same delivery id).
    pub duplicate_webhooks: bool,
    /// Whenever a list page is followed by another, the first record of the served page
    /// changes before the next page is read: it moves to the end of the list order, so naive
    /// offset paging skips one record and sees the changed one twice.
    pub page_drift: bool,
    /// Share of batch items that fail with a transient error while the rest succeed.
    pub batch_failure_rate: f64,
    /// Precise rules, checked in order before the random faults.
    pub rules: Vec<FailRule>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_status: 503,
            latency_ms: 0,
            timeout_rate: 0.0,
            timeout_ms: 5_000,
            rate_limit_rate: 0.0,
            retry_after_secs: Some(1),
            lost_write_rate: 0.0,
            duplicate_webhooks: false,
            page_drift: false,
            batch_failure_rate: 0.0,
            rules: Vec::new(),
        }
    }
}

/// "Fail the next `count` requests matching `method` and `path_prefix` with `status`."
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRule {
    /// HTTP method to match (any when absent), e.g. `POST`.
    #[serde(default)]
    pub method: Option<String>,
    /// Request paths starting with this match, e.g. `/api/orders`.
    pub path_prefix: String,
    /// Only requests whose query string holds this (`offset=200`), when set.
    #[serde(default)]
    pub query: Option<String>,
    /// Status of the injected answer.
    pub status: u16,
    /// How many more requests this rule fails.
    #[serde(default = "one")]
    pub count: u32,
    /// Handle the request first and then answer with the fault (an applied-then-lost write).
    #[serde(default)]
    pub after_apply: bool,
    /// Hold the answer this long first (a timeout for a client with a shorter one).
    #[serde(default)]
    pub hold_ms: Option<u64>,
    /// `Retry-After` seconds to send with the answer.
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// The answer's body instead of the simulator's error (`application/json` when it is
    /// JSON, `text/html` otherwise): a maintenance page, a proxy's answer or an error served
    /// with `status` 200, say.
    #[serde(default)]
    pub body: Option<String>,
}

fn one() -> u32 {
    1
}

impl FailRule {
    /// A rule failing the next `count` requests of `method` under `path_prefix` with `status`.
    pub fn new(method: &str, path_prefix: &str, status: u16, count: u32) -> Self {
        FailRule {
            method: Some(method.to_owned()),
            path_prefix: path_prefix.to_owned(),
            query: None,
            status,
            count,
            after_apply: false,
            hold_ms: None,
            retry_after_secs: None,
            body: None,
        }
    }

    /// The request is handled (the write happens) before the fault answers.
    pub fn after_apply(mut self) -> Self {
        self.after_apply = true;
        self
    }

    /// Only requests whose query string holds `part` (one page of a listing: `offset=200`).
    pub fn with_query(mut self, part: &str) -> Self {
        self.query = Some(part.to_owned());
        self
    }

    /// The answer is held this long first.
    pub fn hold(mut self, d: Duration) -> Self {
        self.hold_ms = Some(d.as_millis() as u64);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The answer is this text instead of the simulator's error.
    pub fn with_body(mut self, body: &str) -> Self {
        self.body = Some(body.to_owned());
        self
    }

    fn matches(&self, method: &str, path: &str, query: &str) -> bool {
        self.count > 0
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path.starts_with(&self.path_prefix)
            && self.query.as_deref().is_none_or(|q| query.contains(q))
    }
}

/// An injected answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Injected {
    pub status: u16,
    pub hold: Option<Duration>,
    pub retry_after: Option<u64>,
    /// Text answered instead of the simulator's error.
    pub body: Option<String>,
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Handle it (after `latency`), then answer with `lost` instead when set.
    Handle {
        latency: Option<Duration>,
        lost: Option<Injected>,
    },
    /// Answer with this without handling it.
    Answer(Injected),
}

/// Live fault settings of one simulator; cheap to clone, changes apply to the next request.
#[derive(Debug, Clone)]
pub struct FaultControl {
    inner: Arc<Mutex<(Faults, StdRng)>>,
}

impl FaultControl {
    pub(crate) fn new(faults: Faults, seed: u64) -> Self {
        FaultControl {
            inner: Arc::new(Mutex::new((faults, StdRng::seed_from_u64(seed)))),
        }
    }

    /// The current settings.
    pub fn get(&self) -> Faults {
        self.inner.lock().unwrap().0.clone()
    }

    /// Replaces every setting.
    pub fn set(&self, faults: Faults) {
        self.inner.lock().unwrap().0 = faults;
    }

    /// Changes some settings.
    pub fn update(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.inner.lock().unwrap().0);
    }

    /// Turns every fault off.
    pub fn clear(&self) {
        self.set(Faults::default());
    }

    /// Adds a precise rule.
    pub fn fail_next(&self, rule: FailRule) {
        self.inner.lock().unwrap().0.rules.push(rule);
    }

    /// True with probability `share`, from the seeded generator.
    pub(crate) fn roll(&self, share: f64) -> bool {
        if share <= 0.0 {
            return false;
        }
        let mut inner = self.inner.lock().unwrap();
        inner.1.random::<f64>() < share
    }

    pub(crate) fn decide(&self, method: &str, path: &str, query: &str) -> Decision {
        let mut guard = self.inner.lock().unwrap();
        let (faults, rng) = &mut *guard;
        if let Some(rule) = faults
            .rules
            .iter_mut()
            .find(|r| r.matches(method, path, query))
        {
            rule.count -= 1;
            let injected = Injected {
                status: rule.status,
                hold: rule.hold_ms.map(Duration::from_millis),
                retry_after: rule.retry_after_secs,
                body: rule.body.clone(),
            };
            let after_apply = rule.after_apply;
            faults.rules.retain(|r| r.count > 0);
            return if after_apply {
                Decision::Handle {
                    latency: None,
                    lost: Some(injected),
                }
            } else {
                Decision::Answer(injected)
            };
        }
        let mut roll = |share: f64| share > 0.0 && rng.random::<f64>() < share;
        if roll(faults.timeout_rate) {
            return Decision::Answer(Injected {
                status: 504,
                hold: Some(Duration::from_millis(faults.timeout_ms)),
                retry_after: None,
                body: None,
            });
        }
        if roll(faults.error_rate) {
            return Decision::Answer(Injected {
                status: faults.error_status,
                hold: None,
                retry_after: None,
                body: None,
            });
        }
        if roll(faults.rate_limit_rate) {
            return Decision::Answer(Injected {
                status: 429,
                hold: None,
                retry_after: faults.retry_after_secs,
                body: None,
            });
        }
        let is_write = method != "GET" && method != "HEAD";
        let lost = (is_write && roll(faults.lost_write_rate)).then_some(Injected {
            status: faults.error_status,
            hold: None,
            retry_after: None,
            body: None,
        });
        let latency = (faults.latency_ms > 0).then(|| Duration::from_millis(faults.latency_ms));
        Decision::Handle { latency, lost }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_fails_exactly_count_matching_requests() {
        let faults = FaultControl::new(Faults::default(), 1);
        faults.fail_next(FailRule::new("POST", "/api/orders", 500, 2));
        let pass = Decision::Handle {
            latency: None,
            lost: None,
        };
        assert_eq!(faults.decide("GET", "/api/orders", ""), pass);
        assert!(
            matches!(faults.decide("POST", "/api/orders", ""), Decision::Answer(i) if i.status == 500)
        );
        assert!(matches!(
            faults.decide("post", "/api/orders/7", ""),
            Decision::Answer(_)
        ));
        assert_eq!(faults.decide("POST", "/api/orders", ""), pass);
        assert!(faults.get().rules.is_empty());
    }

    #[test]
    fn random_faults_replay_from_the_seed() {
        let draw = || {
            let f = FaultControl::new(
                Faults {
                    error_rate: 0.5,
                    ..Faults::default()
                },
                42,
            );
            (0..32)
                .map(|_| matches!(f.decide("GET", "/x", ""), Decision::Answer(_)))
                .collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
    }
}
