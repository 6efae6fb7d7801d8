//! The daemon's `notify` section: channels, and the flows their rules name.

use std::sync::Arc;

use super::Checker;
use crate::compile::Flow;
use crate::config::Problem;

/// `daemon.notify`: each channel has what its kind needs; rules name channels and flows that
/// exist, and carry the numbers their event needs.
pub(super) fn check_notify(
    ck: &mut Checker,
    file: usize,
    n: &crate::config::model::NotifyConfig,
    flows: &[Arc<Flow>],
) {
    for (name, c) in &n.channels {
        check_channel(ck, file, name, c);
    }
    let mut flow_names: Vec<&str> = flows.iter().map(|f| f.id.as_str()).collect();
    flow_names.extend(flows.iter().map(|f| f.name.as_str()));
    flow_names.sort_unstable();
    flow_names.dedup();
    for (name, r) in &n.rules {
        check_rule(ck, file, n, &flow_names, name, r);
    }
}

/// One channel: the keys its kind needs are there.
fn check_channel(
    ck: &mut Checker,
    file: usize,
    name: &str,
    c: &crate::config::model::NotifyChannelConfig,
) {
    use crate::config::model::NotifyChannelKind as Kind;
    let at = format!("daemon.notify.channels.{name}");
    let missing: &[(&str, bool)] = match c.kind {
        Kind::Webhook | Kind::Slack => &[("url", c.url.is_none())],
        Kind::Email => &[
            ("smtp", c.smtp.is_none()),
            ("from", c.from.is_none()),
            ("to", c.to.is_empty()),
        ],
    };
    for (key, absent) in missing {
        if *absent {
            ck.report(
                file,
                &at,
                Problem::invalid(format!("channel `{name}` needs `{key}`")),
            );
        }
    }
}

/// One rule: it sends to channels that exist, names flows that exist, and a rule on failures
/// has a count.
fn check_rule(
    ck: &mut Checker,
    file: usize,
    n: &crate::config::model::NotifyConfig,
    flow_names: &[&str],
    name: &str,
    r: &crate::config::model::NotifyRuleConfig,
) {
    use crate::config::model::NotifyOn;
    let at = format!("daemon.notify.rules.{name}");
    if r.to.is_empty() {
        ck.report(
            file,
            &format!("{at}.to"),
            Problem::invalid(format!("rule `{name}` sends to no channel")),
        );
    }
    for c in &r.to {
        if !n.channels.contains_key(c) {
            ck.report(
                file,
                &format!("{at}.to"),
                Problem::unknown_name("channel", c, n.channels.keys().map(String::as_str)),
            );
        }
    }
    for f in &r.flows {
        if !flow_names.contains(&f.as_str()) {
            ck.report(
                file,
                &format!("{at}.flows"),
                Problem::unknown_name("flow", f, flow_names.iter().copied()),
            );
        }
    }
    if r.on == NotifyOn::Failures && r.count.is_none_or(|c| c == 0) {
        ck.report(
            file,
            &format!("{at}.count"),
            Problem::invalid(format!(
                "rule `{name}` on `failures` needs a `count` of at least 1"
            )),
        );
    }
}
