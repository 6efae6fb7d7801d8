//! Progress of a long run on a terminal: per flow, the records decided, written and failed,
//! and the rate, redrawn on stderr while the run goes on. Nothing is drawn when stderr is
//! not a terminal (a pipe, a log file, cron).

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::RunProgress;

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
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
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
                    let secs = since.elapsed().as_secs_f64().max(0.1);
                    bar.set_message(format!(
                        "{done} records, {} written, {} failed, {:.0}/s",
                        counter.written.load(Ordering::Relaxed),
                        counter.failed.load(Ordering::Relaxed),
                        done as f64 / secs,
                    ));
                    bar.tick();
                    std::thread::park_timeout(Duration::from_millis(120));
                }
            })
        };
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
        if self.bar.is_hidden() {
            f()
        } else {
            self.bar.suspend(f)
        }
    }

    /// Removes the progress line.
    pub fn finish(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}
