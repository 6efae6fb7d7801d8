//! Notifications when a sync needs a person (`daemon.notify`): rules watch for failed
//! records, bursts of failures, systems down and up again, writes in doubt left too long and
//! flows without a successful run, and send to webhook, Slack and email channels. Each alert
//! is sent once (deduplicated by what it is about), and each rule sends at most one message
//! per window: alerts that fire meanwhile go out together as a summary when it ends. Every
//! message links to the console page to act on, and every text in it is masked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::core::Daemon;
use crate::compile::Project;
use crate::config::model::{NotifyConfig, NotifyOn, NotifyRuleConfig};
use crate::redact::redact;
use crate::state::FlowName;

mod send;
mod state;

use send::send;
pub(crate) use state::Alert;
pub(super) use state::NotifyState;
#[cfg(test)]
use state::RuleState;

/// Seconds between two messages of one rule, unless configured.
const DEFAULT_WINDOW_SECS: u64 = 900;
/// Seconds of `write_in_doubt` and `flow_not_succeeded`, unless configured.
const DEFAULT_AFTER_SECS: u64 = 3600;
/// Alerts listed in a summary; the rest are counted.
const SUMMARY_LINES: usize = 10;
/// How long a channel may take to take a message.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Header of a webhook channel's signature.
pub(crate) const SIGNATURE_HEADER: &str = "X-Erpsync-Signature";

/// A message as channels get it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub rule: String,
    pub(crate) on: NotifyOn,
    pub title: String,
    pub(crate) text: String,
    /// The console page of the first alert (the list page for a summary).
    pub link: String,
    pub(crate) alerts: Vec<Alert>,
    /// Alerts left out of `alerts` in a long summary.
    pub(crate) more: usize,
    pub(crate) at: DateTime<Utc>,
}

fn secs(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000))
}

/// The console's address for links: `daemon.console_url`, else the listen address.
fn console_base(project: &Project) -> String {
    let d = project.daemon.as_ref();
    if let Some(u) = d.and_then(|d| d.console_url.clone()) {
        return u.trim_end_matches('/').to_string();
    }
    let listen = d
        .and_then(|d| d.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8700".to_string());
    format!("http://{listen}")
}

fn applies(rule: &NotifyRuleConfig, flow: &str, project: &Project) -> bool {
    rule.flows.is_empty()
        || rule
            .flows
            .iter()
            .any(|f| f == flow || project.flow(flow).is_some_and(|fl| fl.name == *f))
}

impl Daemon {
    /// Notes a system going down or coming up, for the next check.
    pub(super) fn notify_system(&self, system: &str, down: bool) {
        let now = self.clock.now();
        self.notify
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .systems
            .push((system.to_string(), down, now));
    }

    /// Starts the notifier's memory: failures kept at start are not news.
    pub(super) async fn notify_baseline(&self) {
        let failures = match self.store.failures.failures(None).await {
            Ok(list) => list.into_iter().map(|f| (f.id, f.attempts)).collect(),
            Err(e) => {
                tracing::warn!(error = %redact(&e.to_string()), "cannot read failures for notifications");
                BTreeSet::new()
            }
        };
        let mut st = self.notify.lock().unwrap_or_else(|e| e.into_inner());
        st.baseline = Some(failures);
        st.started = Some(self.clock.now());
    }

    /// Checks every rule now and sends what is due; returns what was sent (each to every
    /// channel of its rule that took it). The daemon calls it after each run and every
    /// half minute; tests call it after moving a manual clock.
    pub async fn notify_check(self: &Arc<Self>) -> Vec<Notification> {
        let engine = self.engine();
        let Some(cfg) = engine
            .project
            .daemon
            .as_ref()
            .and_then(|d| d.notify.clone())
        else {
            return Vec::new();
        };
        if cfg.rules.is_empty() {
            return Vec::new();
        }
        let project = engine.project.clone();
        let due = self.collect(&cfg, &project).await;
        let mut sent = Vec::new();
        for n in due {
            let Some(rule) = cfg.rules.get(&n.rule) else {
                continue;
            };
            let mut delivered = false;
            for name in &rule.to {
                let Some(ch) = cfg.channels.get(name) else {
                    continue;
                };
                match send(ch, &n).await {
                    Ok(()) => {
                        delivered = true;
                        tracing::info!(rule = %n.rule, channel = %name, alerts = n.alerts.len() + n.more, "notification sent")
                    }
                    Err(e) => {
                        tracing::warn!(rule = %n.rule, channel = %name, error = %redact(&e.to_string()), "notification not sent")
                    }
                }
            }
            if delivered {
                sent.push(n);
            }
        }
        sent
    }

    /// Fires the rules and takes out the messages whose window allows them.
    async fn collect(&self, cfg: &NotifyConfig, project: &Project) -> Vec<Notification> {
        let now = self.clock.now();
        let base = console_base(project);
        // Read the store before taking the lock.
        let needs = |on: NotifyOn| cfg.rules.values().any(|r| r.on == on);
        let failures = if needs(NotifyOn::RecordFailed) || needs(NotifyOn::Failures) {
            self.store.failures.failures(None).await.unwrap_or_else(|e| {
                tracing::warn!(error = %redact(&e.to_string()), "cannot read failures for notifications");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        let pending = if needs(NotifyOn::WriteInDoubt) {
            self.store
                .journal
                .journal_pending(None)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut last_ok: BTreeMap<String, Option<DateTime<Utc>>> = BTreeMap::new();
        if needs(NotifyOn::FlowNotSucceeded) {
            for f in &project.flows {
                if !self.flow_enabled(f) {
                    continue;
                }
                let ok = self
                    .store
                    .runs
                    .runs(Some(FlowName::new(&f.id)), 200)
                    .await
                    .ok()
                    .and_then(|runs| {
                        runs.into_iter()
                            .find(|r| r.status == "ok")
                            .and_then(|r| r.finished_at)
                    });
                last_ok.insert(f.id.clone(), ok);
            }
        }
        let mut st = self.notify.lock().unwrap_or_else(|e| e.into_inner());
        let systems = std::mem::take(&mut st.systems);
        let baseline = st.baseline.clone().unwrap_or_default();
        let started = st.started.unwrap_or(now);
        let mut out = Vec::new();
        for (name, rule) in &cfg.rules {
            let rs = st.rules.entry(name.clone()).or_default();
            let window = secs(rule.window_secs.unwrap_or(DEFAULT_WINDOW_SECS));
            let after = secs(rule.after_secs.unwrap_or(DEFAULT_AFTER_SECS));
            match rule.on {
                NotifyOn::RecordFailed => {
                    for f in failures.iter().filter(|f| applies(rule, &f.flow, project)) {
                        if baseline.contains(&(f.id, f.attempts)) {
                            continue;
                        }
                        rs.fire(
                            Alert {
                                subject: format!("{}:{}", f.id, f.attempts),
                                flow: Some(f.flow.clone()),
                                text: format!("{} `{}` failed: {}", f.flow, f.key, f.error),
                                link: format!("{base}/console/failures/{}", f.id),
                            },
                            now,
                        );
                    }
                }
                NotifyOn::Failures => {
                    let within = rule.within_secs.map(secs).unwrap_or(window);
                    let recent: Vec<_> = failures
                        .iter()
                        .filter(|f| applies(rule, &f.flow, project))
                        .filter(|f| f.updated_at > now - within)
                        .collect();
                    let count = rule.count.unwrap_or(1) as usize;
                    if recent.len() >= count.max(1) {
                        // One alert per span: the subject is the span's start.
                        let span = within.num_seconds().max(1);
                        let slot = now.timestamp().div_euclid(span);
                        let flows: BTreeSet<&str> =
                            recent.iter().map(|f| f.flow.as_str()).collect();
                        rs.fire(
                            Alert {
                                subject: format!("burst:{slot}"),
                                flow: None,
                                text: format!(
                                    "{} failures in the last {} min ({})",
                                    recent.len(),
                                    within.num_minutes().max(1),
                                    flows.into_iter().collect::<Vec<_>>().join(", ")
                                ),
                                link: format!("{base}/console/failures"),
                            },
                            now,
                        );
                    }
                }
                NotifyOn::SystemDown | NotifyOn::SystemUp => {
                    let want_down = rule.on == NotifyOn::SystemDown;
                    for (system, down, at) in systems.iter().filter(|s| s.1 == want_down) {
                        let text = if *down {
                            format!("system `{system}` is down")
                        } else {
                            format!("system `{system}` is up again")
                        };
                        rs.fire(
                            Alert {
                                subject: format!("{system}:{down}:{}", at.timestamp_micros()),
                                flow: None,
                                text,
                                link: format!("{base}/console/flows"),
                            },
                            now,
                        );
                    }
                }
                NotifyOn::WriteInDoubt => {
                    for e in pending
                        .iter()
                        .filter(|e| applies(rule, &e.flow, project))
                        .filter(|e| now - e.created_at >= after)
                    {
                        rs.fire(
                            Alert {
                                subject: format!("journal:{}", e.id),
                                flow: Some(e.flow.clone()),
                                text: format!(
                                    "{} `{}`: a write to `{}` of unknown outcome waits since {}",
                                    e.flow,
                                    e.key,
                                    e.target,
                                    e.created_at.format("%Y-%m-%d %H:%M UTC")
                                ),
                                link: format!("{base}/console/failures?flow={}", e.flow),
                            },
                            now,
                        );
                    }
                }
                NotifyOn::FlowNotSucceeded => {
                    for (flow, ok) in last_ok.iter().filter(|(f, _)| applies(rule, f, project)) {
                        let since = ok.unwrap_or(started);
                        if now - since < after {
                            continue;
                        }
                        let text = match ok {
                            Some(t) => format!(
                                "{flow} has not succeeded since {}",
                                t.format("%Y-%m-%d %H:%M UTC")
                            ),
                            None => format!(
                                "{flow} has not succeeded since the daemon started ({})",
                                started.format("%Y-%m-%d %H:%M UTC")
                            ),
                        };
                        rs.fire(
                            Alert {
                                subject: format!("{flow}:{}", since.timestamp_micros()),
                                flow: Some(flow.clone()),
                                text,
                                link: format!("{base}/console/runs?flow={flow}"),
                            },
                            now,
                        );
                    }
                }
            }
            let open = rs.last_sent.is_none_or(|t| now - t >= window);
            if open && !rs.queue.is_empty() {
                let alerts = std::mem::take(&mut rs.queue);
                rs.last_sent = Some(now);
                out.push(message(name, rule.on, alerts, &base, now));
            }
        }
        out
    }
}

fn on_text(on: NotifyOn) -> &'static str {
    match on {
        NotifyOn::RecordFailed => "record failed",
        NotifyOn::Failures => "failures",
        NotifyOn::SystemDown => "system down",
        NotifyOn::SystemUp => "system up",
        NotifyOn::WriteInDoubt => "write in doubt",
        NotifyOn::FlowNotSucceeded => "flow not succeeding",
    }
}

/// One alert as it is, or a summary of several.
fn message(
    rule: &str,
    on: NotifyOn,
    mut alerts: Vec<Alert>,
    base: &str,
    now: DateTime<Utc>,
) -> Notification {
    for a in &mut alerts {
        a.text = redact(&a.text).into_owned();
    }
    let n = alerts.len();
    let (title, link) = if n == 1 {
        (
            format!("erpsync: {}", alerts[0].text),
            alerts[0].link.clone(),
        )
    } else {
        let page = match on {
            NotifyOn::SystemDown | NotifyOn::SystemUp => "flows",
            NotifyOn::FlowNotSucceeded => "runs",
            _ => "failures",
        };
        (
            format!("erpsync: {n} alerts of rule `{rule}` ({})", on_text(on)),
            format!("{base}/console/{page}"),
        )
    };
    let more = n.saturating_sub(SUMMARY_LINES);
    alerts.truncate(SUMMARY_LINES);
    let mut text = String::new();
    for a in &alerts {
        text.push_str(&format!("- {} ({})\n", a.text, a.link));
    }
    if more > 0 {
        text.push_str(&format!("… and {more} more\n"));
    }
    text.push_str(&format!("Console: {link}\n"));
    Notification {
        rule: rule.to_string(),
        on,
        title,
        text,
        link,
        alerts,
        more,
        at: now,
    }
}

/// Checks the rules every `every` (wall time: this only polls; the rules' times come from
/// the daemon's clock) until the daemon stops.
pub(super) async fn run(d: Arc<Daemon>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !d.is_stopping() {
        tick.tick().await;
        d.notify_check().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: usize) -> Alert {
        Alert {
            subject: format!("s{i}"),
            flow: Some("orders".into()),
            text: format!("order {i} failed"),
            link: format!("http://x/console/failures/{i}"),
        }
    }

    #[test]
    fn one_alert_is_sent_as_is_and_many_as_a_capped_summary() {
        let now = Utc::now();
        let one = message("r", NotifyOn::RecordFailed, vec![alert(1)], "http://x", now);
        assert_eq!(one.title, "erpsync: order 1 failed");
        assert_eq!(one.link, "http://x/console/failures/1");
        let many: Vec<Alert> = (0..13).map(alert).collect();
        let sum = message("r", NotifyOn::RecordFailed, many, "http://x", now);
        assert_eq!(sum.title, "erpsync: 13 alerts of rule `r` (record failed)");
        assert_eq!(sum.link, "http://x/console/failures");
        assert_eq!((sum.alerts.len(), sum.more), (SUMMARY_LINES, 3));
        assert!(sum.text.contains("… and 3 more"));
    }

    #[test]
    fn a_subject_fires_once() {
        let now = Utc::now();
        let mut rs = RuleState::default();
        rs.fire(alert(1), now);
        rs.fire(alert(1), now);
        rs.fire(alert(2), now);
        assert_eq!(rs.queue.len(), 2);
    }
}
