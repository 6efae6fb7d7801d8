//! Request counters per method and route template, so tests can assert how many calls (and how
//! many writes) a sync run cost.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Routes that are not business writes even though they are not GETs.
const NOT_WRITES: &[&str] = &["/api/authorize/token"];

/// One order of arrivals and answers across every simulator of the process, so a test can
/// tell that a request to one simulator came before another's answer.
static MOMENT: AtomicU64 = AtomicU64::new(1);

fn moment() -> u64 {
    MOMENT.fetch_add(1, Ordering::SeqCst)
}

/// Counts of requests seen by one simulator, keyed by method and route template
/// (`("PATCH", "/api/v2/products/{id}")`). Control requests under `/__sim/` are not counted.
#[derive(Debug, Default)]
pub struct Counters {
    counts: Mutex<BTreeMap<(String, String), u64>>,
    /// Answers by HTTP status, so a run's 429s (the simulator's own or injected) can be told.
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// Reads and writes being handled now, and the most at once since the last reset.
    flight: Mutex<Flight>,
    /// Every request with its moments, once `keep_log` asked for it.
    log: Mutex<Option<Vec<Exchange>>>,
}

#[derive(Debug, Default)]
struct Flight {
    reads: u64,
    writes: u64,
    max_reads: u64,
    max_writes: u64,
}

/// A request being handled, as `hit` counted it.
#[derive(Debug)]
pub(crate) struct Ticket {
    write: bool,
    logged: Option<usize>,
}

/// One request of the log (see `Counters::keep_log`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exchange {
    pub method: String,
    pub route: String,
    pub query: String,
    /// When it came in, and when its answer left (0 while it is handled), in one order
    /// shared by every simulator of the process.
    pub arrived: u64,
    pub answered: u64,
    pub status: u16,
}

/// One line of [`Counters::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteCount {
    pub method: String,
    pub route: String,
    pub count: u64,
}

impl Counters {
    pub(crate) fn hit(&self, method: &str, route: &str, query: &str) -> Ticket {
        let mut counts = self.counts.lock().unwrap();
        *counts
            .entry((method.to_owned(), route.to_owned()))
            .or_default() += 1;
        drop(counts);
        let write = is_write(method, route);
        let mut f = self.flight.lock().unwrap();
        if write {
            f.writes += 1;
            f.max_writes = f.max_writes.max(f.writes);
        } else {
            f.reads += 1;
            f.max_reads = f.max_reads.max(f.reads);
        }
        drop(f);
        let logged = self.log.lock().unwrap().as_mut().map(|log| {
            log.push(Exchange {
                method: method.to_owned(),
                route: route.to_owned(),
                query: query.to_owned(),
                arrived: moment(),
                answered: 0,
                status: 0,
            });
            log.len() - 1
        });
        Ticket { write, logged }
    }

    pub(crate) fn answered(&self, ticket: Ticket, status: u16) {
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
        let mut f = self.flight.lock().unwrap();
        if ticket.write {
            f.writes = f.writes.saturating_sub(1);
        } else {
            f.reads = f.reads.saturating_sub(1);
        }
        drop(f);
        if let (Some(i), Some(log)) = (ticket.logged, self.log.lock().unwrap().as_mut())
            && let Some(e) = log.get_mut(i)
        {
            e.answered = moment();
            e.status = status;
        }
    }

    /// The most reads (GET, HEAD) handled at once since the last reset.
    pub fn max_reads_in_flight(&self) -> u64 {
        self.flight.lock().unwrap().max_reads
    }

    /// The most writes (see `writes`) handled at once since the last reset.
    pub fn max_writes_in_flight(&self) -> u64 {
        self.flight.lock().unwrap().max_writes
    }

    /// Keeps every request from now on (until the next reset) with when it came and was
    /// answered; for tests of ordering, not for long runs.
    pub fn keep_log(&self) {
        *self.log.lock().unwrap() = Some(Vec::new());
    }

    /// The requests kept since `keep_log`, in order of arrival.
    pub fn log(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone().unwrap_or_default()
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
            .filter(|((m, r), _)| is_write(m, r))
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
        let mut f = self.flight.lock().unwrap();
        f.max_reads = f.reads;
        f.max_writes = f.writes;
        drop(f);
        *self.log.lock().unwrap() = None;
    }
}

/// Whether a request changes data (see `Counters::writes`).
fn is_write(method: &str, route: &str) -> bool {
    method != "GET" && method != "HEAD" && !NOT_WRITES.contains(&route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_leave_out_reads_and_the_token_endpoint() {
        let c = Counters::default();
        let mut tickets = vec![
            c.hit("GET", "/api/products", ""),
            c.hit("POST", "/api/authorize/token", ""),
            c.hit("POST", "/api/orders", ""),
            c.hit("PUT", "/api/stock/{code}", ""),
        ];
        assert_eq!(c.max_writes_in_flight(), 2);
        c.answered(tickets.pop().unwrap(), 200);
        c.hit("PUT", "/api/stock/{code}", "");
        assert_eq!(c.total(), 5);
        assert_eq!(c.writes(), 3);
        assert_eq!(c.count("PUT", "/api/stock/{code}"), 2);
        assert_eq!(c.route("/api/orders"), 1);
        let t = c.hit("GET", "/api/products", "");
        c.answered(t, 429);
        let t = c.hit("GET", "/api/products", "");
        c.answered(t, 429);
        assert_eq!(c.status(429), 2);
        assert_eq!(
            c.max_reads_in_flight(),
            3,
            "the product read and the token call still in flight, one at a time after"
        );
        assert_eq!(c.status(500), 0);
        c.reset();
        assert_eq!(c.total(), 0);
        assert_eq!(c.status(429), 0);
        assert_eq!(c.max_reads_in_flight(), 2, "the two still in flight");
    }

    #[test]
    fn the_log_orders_arrivals_and_answers() {
        let c = Counters::default();
        let t = c.hit("GET", "/api/products", "offset=0");
        assert!(c.log().is_empty(), "not kept until asked");
        c.answered(t, 200);
        c.keep_log();
        let a = c.hit("GET", "/api/products", "offset=0");
        let b = c.hit("PUT", "/api/stock/{code}", "");
        c.answered(b, 200);
        c.answered(a, 500);
        let log = c.log();
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].query.as_str(), log[0].status), ("offset=0", 500));
        assert!(log[0].arrived < log[1].arrived);
        assert!(log[1].answered < log[0].answered);
    }
}
