//! Progress of a long run on a terminal: per flow, the records decided, written and failed,
//! and the rate, redrawn on stderr while the run goes on. Nothing is drawn when stderr is
//! not a terminal (a pipe, a log file, cron).

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use erpsync::engine::RunProgress;

/// The printer of the progress line on screen, if any: log lines are written around it
/// (`around`).
static SHOWN: std::sync::Mutex<Option<Printer>> = std::sync::Mutex::new(None);

/// Runs `write` with the progress line on screen, if one is, cleared first and drawn again
/// after: what the log writes while a run goes on starts a line of its own.
pub fn around<R>(write: impl FnOnce() -> R) -> R {
    let shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match shown {
        Some(printer) => printer.suspend(write),
        None => write(),
    }
}

/// A spinner line fed by the engine's live totals.
pub struct Progress {
    bar: ProgressBar,
    counter: Arc<RunProgress>,
    ticker: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    /// A progress line on stderr when it is a terminal; hidden otherwise.
    pub fn start() -> Self {
        let counter = Arc::new(RunProgress::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                counter,
                ticker: None,
                stop,
            };
        }
        let bar = ProgressBar::new_spinner();
        // `wide_msg`: the totals take the row's room and are cut (with `…`) where the row
        // ends; a line wider than the terminal would wrap, and every redraw leave a row.
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}: {wide_msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let ticker = {
            let (bar, counter, stop) = (bar.clone(), counter.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut since = Instant::now();
                let mut last_done = 0;
                while !stop.load(Ordering::Relaxed) {
                    let done = counter.done.load(Ordering::Relaxed);
                    if done < last_done {
                        since = Instant::now();
                    }
                    last_done = done;
                    bar.set_message(line(&counter, since.elapsed()));
                    bar.tick();
                    std::thread::park_timeout(Duration::from_millis(120));
                }
            })
        };
        *SHOWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(Printer(bar.clone()));
        Progress {
            bar,
            counter,
            ticker: Some(ticker),
            stop,
        }
    }

    /// What the engine updates; `None` when nothing is drawn.
    pub fn counter(&self) -> Option<Arc<RunProgress>> {
        self.ticker.is_some().then(|| self.counter.clone())
    }

    /// A new flow begins.
    pub fn flow(&self, flow: &str) {
        self.counter.reset();
        self.bar.set_prefix(flow.to_string());
    }

    /// Prints without tearing the progress line.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.printer().suspend(f)
    }

    /// Prints around the progress line from wherever output is made (records streamed while
    /// the run goes on).
    pub fn printer(&self) -> Printer {
        Printer(self.bar.clone())
    }

    /// Removes the progress line.
    pub fn finish(self) {}
}

/// A handle that prints without tearing the progress line (see `Progress::printer`).
#[derive(Clone)]
pub struct Printer(ProgressBar);

impl Printer {
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.0.is_hidden() {
            f()
        } else {
            self.0.suspend(f)
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.ticker.is_some() {
            *SHOWN.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

/// The progress line: records decided (of how many, when known), written, failed, the rate,
/// and, with a known total, the time left at that rate.
fn line(c: &RunProgress, elapsed: Duration) -> String {
    let done = c.done.load(Ordering::Relaxed);
    let total = c.total.load(Ordering::Relaxed);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.1);
    let of = if total > 0 {
        format!("/{total}")
    } else {
        String::new()
    };
    let mut text = format!(
        "{done}{of} records, {} written, {} failed, {rate:.0}/s",
        c.written.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
    );
    if total > done && rate > 0.0 {
        let left = ((total - done) as f64 / rate).ceil() as u64;
        text.push_str(&format!(", about {left}s left"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_an_eta_only_when_the_total_is_known() {
        let c = RunProgress::default();
        c.done.store(50, Ordering::Relaxed);
        c.written.store(3, Ordering::Relaxed);
        assert_eq!(
            line(&c, Duration::from_secs(10)),
            "50 records, 3 written, 0 failed, 5/s"
        );
        c.total.store(80, Ordering::Relaxed);
        assert_eq!(
            line(&c, Duration::from_secs(10)),
            "50/80 records, 3 written, 0 failed, 5/s, about 6s left"
        );
    }
}
