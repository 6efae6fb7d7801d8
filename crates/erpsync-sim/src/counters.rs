//! Request counters per method and route template, so tests can assert how many calls (and how
//! many writes) a sync run cost.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Routes that are not business writes even though they are not GETs.
const NOT_WRITES: &[&str] = &["/api/authorize/token"];

/// Counts of requests seen by one simulator, keyed by method and route template
/// (`("PATCH", "/api/v2/products/{id}")`). Control requests under `/__sim/` are not counted.
#[derive(Debug, Default)]
pub struct Counters {
    counts: Mutex<BTreeMap<(String, String), u64>>,
    /// Answers by HTTP status, so a run's 429s (the simulator's own or injected) can be told.
    statuses: Mutex<BTreeMap<u16, u64>>,
}

/// One line of [`Counters::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteCount {
    pub method: String,
    pub route: String,
    pub count: u64,
}

impl Counters {
    pub(crate) fn hit(&self, method: &str, route: &str) {
        let mut counts = self.counts.lock().unwrap();
        *counts
            .entry((method.to_owned(), route.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn answered(&self, status: u16) {
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
    }

    /// Counted requests answered with this HTTP status (`429`: rate-limited).
    pub fn status(&self, status: u16) -> u64 {
        self.statuses
            .lock()
            .unwrap()
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    /// Requests with this method and route template.
    pub fn count(&self, method: &str, route: &str) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .get(&(method.to_owned(), route.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests on this route template, any method.
    pub fn route(&self, route: &str) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, r), _)| r == route)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every counted request.
    pub fn total(&self) -> u64 {
        self.counts.lock().unwrap().values().sum()
    }

    /// Requests that are not GETs (nor HEAD), leaving out the token endpoint: the calls that
    /// change data, which a sync with nothing to do should not make.
    pub fn writes(&self) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|((m, r), _)| m != "GET" && m != "HEAD" && !NOT_WRITES.contains(&r.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every count, sorted by route then method.
    pub fn snapshot(&self) -> Vec<RouteCount> {
        let mut out: Vec<RouteCount> = self
            .counts
            .lock()
            .unwrap()
            .iter()
            .map(|((method, route), count)| RouteCount {
                method: method.clone(),
                route: route.clone(),
                count: *count,
            })
            .collect();
        out.sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));
        out
    }

    pub fn reset(&self) {
        self.counts.lock().unwrap().clear();
        self.statuses.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_leave_out_reads_and_the_token_endpoint() {
        let c = Counters::default();
        c.hit("GET", "/api/products");
        c.hit("POST", "/api/authorize/token");
        c.hit("POST", "/api/orders");
        c.hit("PUT", "/api/stock/{code}");
        c.hit("PUT", "/api/stock/{code}");
        assert_eq!(c.total(), 5);
        assert_eq!(c.writes(), 3);
        assert_eq!(c.count("PUT", "/api/stock/{code}"), 2);
        assert_eq!(c.route("/api/orders"), 1);
        c.answered(200);
        c.answered(429);
        c.answered(429);
        assert_eq!(c.status(429), 2);
        assert_eq!(c.status(500), 0);
        c.reset();
        assert_eq!(c.total(), 0);
        assert_eq!(c.status(429), 0);
    }
}
