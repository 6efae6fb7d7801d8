//! The sync rules as pure functions: what to do with one record, given the flow's rules, the
//! record as read, what its binding remembers and the other side's record. Nothing here
//! reads, writes or waits: the runner gathers what a decision needs, asks again when the
//! answer is "read the target first", and applies the verdict.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::Decision;
use super::canonical::{FieldChange, InOrder, diff, field_text, overlay, same};
pub(crate) use crate::compile::{Conflict, Side};
use crate::compile::{StatusTrigger, TransitionTrigger};
use crate::config::model::{ConflictRule, SyncMode, SystemRole};

/// The settings of a one-way flow that decide what happens to a record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneWayRules<'a> {
    pub(crate) mode: SyncMode,
    /// Each record is sent once; later edits are locked unless `allow_edit_after_export`.
    pub(crate) export_once: bool,
    pub(crate) allow_edit_after_export: bool,
    /// A reconciliation compares with the target as read now, not as last synced.
    pub(crate) reconcile: bool,
    /// Fields compared to detect a change.
    pub(crate) compared: &'a [String],
    /// Fields written.
    pub(crate) carried: &'a [String],
}

/// What a record's binding says, from the flow's point of view.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Link<'a> {
    /// The record is bound to one in the target (its id there is known).
    pub(crate) bound: bool,
    /// The target's record as last known there (read, adopted or written).
    pub(crate) target_base: Option<&'a Value>,
}

/// The other side's record, as far as this run knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counterpart<'a> {
    /// Not read (yet). For a bound record, the binding's base stands for it.
    NotRead,
    /// Read in this run.
    Read(&'a Value),
    /// Asked for, and not there.
    Absent,
}

/// Why a record is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The target holds what the source has, on the compared fields.
    Unchanged,
    /// Bound already, and the flow only creates.
    CreateOnly,
    /// Not in the target, and the flow only updates.
    UpdateOnly,
}

impl Hold {
    /// The reason reported, naming the system written to.
    pub(crate) fn reason(self, target: &str) -> Option<String> {
        match self {
            Hold::Unchanged => None,
            Hold::CreateOnly => Some("exists in target; mode creates only".into()),
            Hold::UpdateOnly => Some(format!("not in `{target}`; mode updates only")),
        }
    }
}

/// The decision for a record of a one-way flow.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Exported already, and edits after export are locked.
    Locked,
    /// Nothing to write. With `rebase`, the target was read and differs from what the
    /// binding remembers of it, though not from the source: the binding takes the reading.
    Skip { why: Hold, rebase: bool },
    /// The target must be read before this record can be decided: looked up by key when
    /// unbound, read now when reconciling.
    ReadTarget,
    /// Bound, but the target no longer has it: reported, never deleted or created again.
    Missing,
    /// Found in the target by key and linked, without a write.
    Adopt,
    /// `write` replaces the target's record. `linked`: found by key rather than bound;
    /// `corrected`: a reconciliation found the target drifted.
    Update {
        write: Value,
        changes: Vec<FieldChange>,
        linked: bool,
        corrected: bool,
    },
    /// Created in the target.
    Create { changes: Vec<FieldChange> },
}

impl Verdict {
    /// The decision a report shows for this verdict (`Missing` is reported as a failure).
    pub(crate) fn decision(&self) -> Decision {
        match self {
            Verdict::Locked => Decision::Locked,
            Verdict::Skip { .. } | Verdict::ReadTarget => Decision::Skip,
            Verdict::Missing => Decision::Failed,
            Verdict::Adopt => Decision::Adopt,
            Verdict::Update { .. } => Decision::Update,
            Verdict::Create { .. } => Decision::Create,
        }
    }
}

/// Decides a record read from the source of a one-way flow (`seen`, canonical).
///
/// A bound record is compared with the target's record: the one read now when reconciling,
/// else the one last known there, which is what this flow or the opposite one wrote — so a
/// write coming back through the opposite flow is not sent again (echo suppression). An
/// unbound record is looked for in the target first and adopted when found.
pub(crate) fn decide(
    rules: &OneWayRules,
    seen: &Value,
    link: Link,
    counterpart: Counterpart,
) -> Verdict {
    let cmp = rules.compared;
    let create_only = matches!(rules.mode, SyncMode::Create | SyncMode::CreateMissing);
    if link.bound {
        if rules.export_once && !rules.allow_edit_after_export {
            return Verdict::Locked;
        }
        if create_only {
            return Verdict::Skip {
                why: Hold::CreateOnly,
                rebase: false,
            };
        }
        let current = match (rules.reconcile, counterpart) {
            (false, _) => None,
            (true, Counterpart::NotRead) => return Verdict::ReadTarget,
            (true, Counterpart::Absent) => return Verdict::Missing,
            (true, Counterpart::Read(c)) => Some(c),
        };
        let unchanged = match current {
            Some(cur) => same(Some(cur), Some(seen), cmp),
            None => link.target_base.is_some() && same(link.target_base, Some(seen), cmp),
        };
        if unchanged {
            let rebase = current.is_some() && !same(link.target_base, current, cmp);
            return Verdict::Skip {
                why: Hold::Unchanged,
                rebase,
            };
        }
        let old = current.or(link.target_base);
        return Verdict::Update {
            write: overlay(old, seen, rules.carried),
            changes: diff(old, seen, cmp),
            linked: false,
            corrected: current.is_some(),
        };
    }
    match counterpart {
        Counterpart::NotRead => Verdict::ReadTarget,
        Counterpart::Read(found) => {
            if rules.export_once || create_only || same(Some(found), Some(seen), cmp) {
                Verdict::Adopt
            } else {
                Verdict::Update {
                    write: overlay(Some(found), seen, rules.carried),
                    changes: diff(Some(found), seen, cmp),
                    linked: true,
                    corrected: false,
                }
            }
        }
        Counterpart::Absent if rules.mode == SyncMode::Update => Verdict::Skip {
            why: Hold::UpdateOnly,
            rebase: false,
        },
        Counterpart::Absent => Verdict::Create {
            changes: diff(None, seen, cmp),
        },
    }
}

/// Whether a source record's status lets it through the flow's triggers: with `on_status`,
/// its status is one of the values; with `on_transition`, its status moved since erpsync
/// last saw the record (`before`, the source record then), from one of `from` (any, when
/// empty; a record never seen before has moved from nothing) to one of `to`.
pub(crate) fn triggered(
    on_status: Option<&StatusTrigger>,
    on_transition: Option<&TransitionTrigger>,
    seen: &Value,
    before: Option<&Value>,
) -> bool {
    if let Some(s) = on_status {
        let now = field_text(seen, &s.field).unwrap_or_default();
        if !s.values.contains(&now) {
            return false;
        }
    }
    if let Some(t) = on_transition {
        let now = field_text(seen, &t.field).unwrap_or_default();
        let was = before.and_then(|b| field_text(b, &t.field));
        let moved = was.as_deref() != Some(now.as_str());
        let from_ok = t.from.is_empty() || was.as_ref().is_some_and(|w| t.from.contains(w));
        if !(moved && from_ok && t.to.contains(&now)) {
            return false;
        }
    }
    true
}

/// The compared and carried fields for one source record: with `skip_nulls`, fields the
/// source leaves empty are neither compared nor written.
pub(crate) fn fields_for<'a>(
    skip_nulls: bool,
    compared: &'a [String],
    carried: &'a [String],
    canon: &Value,
) -> (Cow<'a, [String]>, Cow<'a, [String]>) {
    if !skip_nulls {
        return (Cow::Borrowed(compared), Cow::Borrowed(carried));
    }
    let present = |fields: &'a [String]| -> Cow<'a, [String]> {
        fields
            .iter()
            .filter(|f| canon.get(f.as_str()).is_some_and(|v| !v.is_null()))
            .cloned()
            .collect()
    };
    (present(compared), present(carried))
}

impl Conflict {
    /// Which side wins a field both sides changed differently; `None`: a person decides.
    pub(crate) fn winner(&self, field: &str, source: &Value, target: &Value) -> Option<Side> {
        if let Some(owner) = self.owners.get(field) {
            return Some(*owner);
        }
        let source_if = |wins: bool| Some(if wins { Side::Source } else { Side::Target });
        match self.rule {
            ConflictRule::ErpWins => source_if(self.source_role == Some(SystemRole::Erp)),
            ConflictRule::ShopWins => source_if(self.source_role == Some(SystemRole::Shop)),
            ConflictRule::NewestWins => {
                let ts = self.timestamp.as_deref()?;
                let t = |v: &Value| {
                    v.get(ts)
                        .and_then(Value::as_str)
                        .and_then(crate::expr::parse_datetime)
                };
                source_if(t(source) >= t(target))
            }
            ConflictRule::Owner | ConflictRule::Park => None,
        }
    }
}

/// The settings of a bidirectional flow that decide what happens to a record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MergeRules<'a> {
    pub(crate) mode: SyncMode,
    /// Fields compared and merged.
    pub(crate) compared: &'a [String],
    pub(crate) conflict: Option<&'a Conflict>,
}

/// A record's two sides: as held now, or as last synced.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sides<'a> {
    pub(crate) source: Option<&'a Value>,
    pub(crate) target: Option<&'a Value>,
}

/// A merged record, to be written to the sides that differ from it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Merged {
    pub(crate) merged: Value,
    pub(crate) to_source: bool,
    pub(crate) to_target: bool,
    /// `Conflict` when a rule settled a field, `Update` when a side is written, `Adopt` on a
    /// first sync that writes nothing, else `Skip`.
    pub(crate) decision: Decision,
    /// The fields a rule settled, and by which rule.
    pub(crate) reason: Option<String>,
}

impl Merged {
    pub(crate) fn writes(&self, side: Side) -> bool {
        match side {
            Side::Source => self.to_source,
            Side::Target => self.to_target,
        }
    }
}

/// The decision for a record of a bidirectional flow.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MergeVerdict {
    /// On neither side.
    Nothing,
    /// On one side only: created on `on`.
    Create { on: Side },
    /// On one side only, and the flow only updates: not created on `on`.
    Skip { on: Side },
    /// Both sides changed fields differently and no rule settles them: nothing is written
    /// until a person decides.
    Park {
        fields: Vec<String>,
        reason: String,
        changes: Vec<FieldChange>,
    },
    /// Merged field by field.
    Merge(Merged),
}

/// Three-way merge of one record: both sides as held now (`now`), against what was last
/// synced (`bases`). Per field, a side that alone changed propagates; both changed to
/// different values is a conflict, settled by the flow's rule or parked. With no base on
/// either side (a first sync) every difference is a conflict.
pub(crate) fn merge(rules: &MergeRules, now: Sides, bases: Sides) -> MergeVerdict {
    let (source, target) = match (now.source, now.target) {
        (None, None) => return MergeVerdict::Nothing,
        (Some(_), None) | (None, Some(_)) => {
            let on = if now.source.is_none() {
                Side::Source
            } else {
                Side::Target
            };
            return if rules.mode == SyncMode::Update {
                MergeVerdict::Skip { on }
            } else {
                MergeVerdict::Create { on }
            };
        }
        (Some(s), Some(t)) => (s, t),
    };
    let first_sync = bases.source.is_none() && bases.target.is_none();
    // The four records are read field by field in the order compared (see `InOrder`).
    let (mut now_s, mut now_t) = (InOrder::of(Some(source)), InOrder::of(Some(target)));
    let (mut base_s, mut base_t) = (InOrder::of(bases.source), InOrder::of(bases.target));
    let mut merged = Map::with_capacity(rules.compared.len());
    let mut conflicts = Vec::new();
    let mut parked = Vec::new();
    for f in rules.compared {
        let x = now_s.get(f).clone();
        let y = now_t.get(f).clone();
        let source_changed = first_sync || base_s.get(f) != &x;
        let target_changed = first_sync || base_t.get(f) != &y;
        let value = if x == y || (source_changed && !target_changed) {
            x
        } else if target_changed && !source_changed {
            y
        } else {
            conflicts.push(f.clone());
            match rules.conflict.and_then(|c| c.winner(f, source, target)) {
                Some(Side::Source) => x,
                Some(Side::Target) => y,
                None => {
                    parked.push(f.clone());
                    x
                }
            }
        };
        merged.insert(f.clone(), value);
    }
    let listed = |fields: &[String]| {
        fields
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let why = |fields: &[String]| {
        if first_sync {
            format!("the sides differ on {} at the first sync", listed(fields))
        } else {
            format!("both sides changed {}", listed(fields))
        }
    };
    if !parked.is_empty() {
        return MergeVerdict::Park {
            reason: format!("{}; parked for review", why(&parked)),
            changes: diff(Some(target), source, &parked),
            fields: parked,
        };
    }
    let merged = Value::Object(merged);
    let to_target = !same(Some(&merged), Some(target), rules.compared);
    let to_source = !same(Some(&merged), Some(source), rules.compared);
    let decision = if !conflicts.is_empty() {
        Decision::Conflict
    } else if to_source || to_target {
        Decision::Update
    } else if first_sync {
        Decision::Adopt
    } else {
        Decision::Skip
    };
    let reason = (!conflicts.is_empty()).then(|| {
        let rule = rules
            .conflict
            .map(|c| c.rule.as_str().to_string())
            .unwrap_or_default();
        format!("{}; resolved by `{rule}`", why(&conflicts))
    });
    MergeVerdict::Merge(Merged {
        merged,
        to_source,
        to_target,
        decision,
        reason,
    })
}

#[cfg(test)]
mod tests {
    //! One row per rule. A table fails with the name of every rule that misfired, what it
    //! should have decided and what it decided instead.

    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn fields(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// How a one-way row's flow is set up; the default is an upserting flow.
    #[derive(Clone, Copy, Default)]
    struct Flow {
        mode: SyncMode,
        export_once: bool,
        allow_edit_after_export: bool,
        reconcile: bool,
    }

    /// What a one-way row expects, by shape: enough to name the rule that misfired.
    #[derive(Debug, PartialEq)]
    enum Want {
        Locked,
        Skip(Hold, bool),
        ReadTarget,
        Missing,
        Adopt,
        /// Update: linked, corrected, the fields changed, the record written.
        Update(bool, bool, Vec<String>, Value),
        /// Create, with the fields it sets.
        Create(Vec<String>),
    }

    fn shape(v: &Verdict) -> Want {
        let names = |c: &[FieldChange]| c.iter().map(|c| c.field.clone()).collect();
        match v {
            Verdict::Locked => Want::Locked,
            Verdict::Skip { why, rebase } => Want::Skip(*why, *rebase),
            Verdict::ReadTarget => Want::ReadTarget,
            Verdict::Missing => Want::Missing,
            Verdict::Adopt => Want::Adopt,
            Verdict::Update {
                write,
                changes,
                linked,
                corrected,
            } => Want::Update(*linked, *corrected, names(changes), write.clone()),
            Verdict::Create { changes } => Want::Create(names(changes)),
        }
    }

    fn bound(target_base: Option<&Value>) -> Link<'_> {
        Link {
            bound: true,
            target_base,
        }
    }

    #[test]
    fn one_way_rules() {
        let cmp = fields(&["sku", "price", "stock"]);
        let carried = fields(&["sku", "price", "stock"]);
        let src = json!({"sku": "A", "price": 12, "stock": 3});
        let same_rec = json!({"sku": "A", "price": 12, "stock": 3, "note": "target only"});
        let older = json!({"sku": "A", "price": 10, "stock": 3, "note": "target only"});
        let drifted = json!({"sku": "A", "price": 12, "stock": 9});
        let export_once = Flow {
            export_once: true,
            ..Flow::default()
        };
        let reconcile = Flow {
            reconcile: true,
            ..Flow::default()
        };
        // What the opposite flow wrote to this source, as it recorded it for the target.
        let echoed = json!({"sku": "A", "price": 12, "stock": 3});
        let (older, same_rec, drifted, echoed) = (&older, &same_rec, &drifted, &echoed);
        let unbound = Link::default();
        use Counterpart::{Absent, NotRead, Read};

        let rows: Vec<(&str, Flow, Link, Counterpart, Want)> = vec![
            (
                "adoption: unbound, found by key with the same data, is linked",
                Flow::default(),
                unbound,
                Read(same_rec),
                Want::Adopt,
            ),
            (
                "adoption and update: unbound, found by key with other data, is linked and updated",
                Flow::default(),
                unbound,
                Read(older),
                Want::Update(
                    true,
                    false,
                    fields(&["price"]),
                    json!({"sku": "A", "price": 12, "stock": 3, "note": "target only"}),
                ),
            ),
            (
                "adoption under `create`: found by key is linked, never updated",
                Flow {
                    mode: SyncMode::Create,
                    ..Flow::default()
                },
                unbound,
                Read(older),
                Want::Adopt,
            ),
            (
                "adoption under `create_missing`: found by key is linked, never updated",
                Flow {
                    mode: SyncMode::CreateMissing,
                    ..Flow::default()
                },
                unbound,
                Read(older),
                Want::Adopt,
            ),
            (
                "export-once adoption: found by key is linked as exported, not sent again",
                export_once,
                unbound,
                Read(older),
                Want::Adopt,
            ),
            (
                "lookup first: unbound and not looked for yet",
                Flow::default(),
                unbound,
                NotRead,
                Want::ReadTarget,
            ),
            (
                "create: unbound and not in the target",
                Flow::default(),
                unbound,
                Absent,
                Want::Create(fields(&["sku", "price", "stock"])),
            ),
            (
                "export-once create: sent the first time",
                export_once,
                unbound,
                Absent,
                Want::Create(fields(&["sku", "price", "stock"])),
            ),
            (
                "update-only: not in the target is left alone",
                Flow {
                    mode: SyncMode::Update,
                    ..Flow::default()
                },
                unbound,
                Absent,
                Want::Skip(Hold::UpdateOnly, false),
            ),
            (
                "unchanged: the target's last known record equals the source",
                Flow::default(),
                bound(Some(same_rec)),
                NotRead,
                Want::Skip(Hold::Unchanged, false),
            ),
            (
                "echo: what the opposite flow wrote comes back unchanged and is not sent back",
                Flow::default(),
                bound(Some(echoed)),
                NotRead,
                Want::Skip(Hold::Unchanged, false),
            ),
            (
                "one-way update: the source changed a compared field",
                Flow::default(),
                bound(Some(older)),
                NotRead,
                Want::Update(
                    false,
                    false,
                    fields(&["price"]),
                    json!({"sku": "A", "price": 12, "stock": 3, "note": "target only"}),
                ),
            ),
            (
                "first write: bound without a known target record (settled from the journal) is written",
                Flow::default(),
                bound(None),
                NotRead,
                Want::Update(
                    false,
                    false,
                    fields(&["sku", "price", "stock"]),
                    json!({"sku": "A", "price": 12, "stock": 3}),
                ),
            ),
            (
                "create-only: bound already is not updated",
                Flow {
                    mode: SyncMode::Create,
                    ..Flow::default()
                },
                bound(Some(older)),
                NotRead,
                Want::Skip(Hold::CreateOnly, false),
            ),
            (
                "lock: exported once, edits after export are locked",
                export_once,
                bound(Some(older)),
                NotRead,
                Want::Locked,
            ),
            (
                "lock before reconcile: a locked record is not read again",
                Flow {
                    reconcile: true,
                    export_once: true,
                    ..Flow::default()
                },
                bound(Some(older)),
                NotRead,
                Want::Locked,
            ),
            (
                "edit after export: allowed, the edit is sent",
                Flow {
                    export_once: true,
                    allow_edit_after_export: true,
                    ..Flow::default()
                },
                bound(Some(older)),
                NotRead,
                Want::Update(
                    false,
                    false,
                    fields(&["price"]),
                    json!({"sku": "A", "price": 12, "stock": 3, "note": "target only"}),
                ),
            ),
            (
                "edit after export: allowed, an unchanged record is still skipped",
                Flow {
                    export_once: true,
                    allow_edit_after_export: true,
                    ..Flow::default()
                },
                bound(Some(same_rec)),
                NotRead,
                Want::Skip(Hold::Unchanged, false),
            ),
            (
                "reconcile: the target is read before deciding",
                reconcile,
                bound(Some(same_rec)),
                NotRead,
                Want::ReadTarget,
            ),
            (
                "reconcile: drift in the target is corrected even when the base agrees",
                reconcile,
                bound(Some(same_rec)),
                Read(drifted),
                Want::Update(
                    false,
                    true,
                    fields(&["stock"]),
                    json!({"sku": "A", "price": 12, "stock": 3}),
                ),
            ),
            (
                "reconcile: the target agrees though the base is stale; the base is taken",
                reconcile,
                bound(Some(older)),
                Read(same_rec),
                Want::Skip(Hold::Unchanged, true),
            ),
            (
                "reconcile: bound but gone from the target is reported, not recreated",
                reconcile,
                bound(Some(same_rec)),
                Absent,
                Want::Missing,
            ),
        ];
        let mut misfired = Vec::new();
        for (rule, flow, link, counterpart, want) in rows {
            let rules = OneWayRules {
                mode: flow.mode,
                export_once: flow.export_once,
                allow_edit_after_export: flow.allow_edit_after_export,
                reconcile: flow.reconcile,
                compared: &cmp,
                carried: &carried,
            };
            let got = shape(&decide(&rules, &src, link, counterpart));
            if got != want {
                misfired.push(format!("{rule}\n    want {want:?}\n    got  {got:?}"));
            }
        }
        assert!(
            misfired.is_empty(),
            "rules that misfired:\n  {}",
            misfired.join("\n  ")
        );
    }

    #[test]
    fn trigger_rules() {
        let status = |values: &[&str]| StatusTrigger {
            field: "status".into(),
            values: fields(values),
        };
        let transition = |from: &[&str], to: &[&str]| TransitionTrigger {
            field: "status".into(),
            from: fields(from),
            to: fields(to),
        };
        let at = |s: &str| json!({"status": s});
        let pending = status(&["pending"]);
        let to_paid = transition(&[], &["paid"]);
        let pending_to_paid = transition(&["pending"], &["paid"]);
        let (new, paid, shipped) = (at("pending"), at("paid"), at("shipped"));
        let blank = json!({"number": 1});
        type Row<'a> = (
            &'a str,
            Option<&'a StatusTrigger>,
            Option<&'a TransitionTrigger>,
            &'a Value,
            Option<&'a Value>,
            bool,
        );
        let rows: Vec<Row> = vec![
            ("no trigger: every record", None, None, &paid, None, true),
            (
                "on_status: a listed status",
                Some(&pending),
                None,
                &new,
                None,
                true,
            ),
            (
                "on_status: another status",
                Some(&pending),
                None,
                &paid,
                None,
                false,
            ),
            (
                "on_status: no status at all",
                Some(&pending),
                None,
                &blank,
                None,
                false,
            ),
            (
                "on_transition: moved into `to`",
                None,
                Some(&to_paid),
                &paid,
                Some(&new),
                true,
            ),
            (
                "on_transition: first sight counts as moved",
                None,
                Some(&to_paid),
                &paid,
                None,
                true,
            ),
            (
                "on_transition: fires once, not again while it stays",
                None,
                Some(&to_paid),
                &paid,
                Some(&paid),
                false,
            ),
            (
                "on_transition: moved elsewhere",
                None,
                Some(&to_paid),
                &shipped,
                Some(&paid),
                false,
            ),
            (
                "on_transition: from a listed status",
                None,
                Some(&pending_to_paid),
                &paid,
                Some(&new),
                true,
            ),
            (
                "on_transition: from an unlisted status",
                None,
                Some(&pending_to_paid),
                &paid,
                Some(&shipped),
                false,
            ),
            (
                "on_transition: `from` needs a status seen before",
                None,
                Some(&pending_to_paid),
                &paid,
                None,
                false,
            ),
            (
                "both triggers: each must pass",
                Some(&pending),
                Some(&to_paid),
                &paid,
                Some(&new),
                false,
            ),
        ];
        let misfired: Vec<&str> = rows
            .into_iter()
            .filter(|(_, s, t, seen, before, want)| triggered(*s, *t, seen, *before) != *want)
            .map(|(rule, ..)| rule)
            .collect();
        assert!(misfired.is_empty(), "rules that misfired: {misfired:#?}");
    }

    #[test]
    fn skip_nulls_leaves_empty_fields_out() {
        let cmp = fields(&["price", "stock"]);
        let rec = json!({"price": 1, "stock": null});
        assert_eq!(
            fields_for(true, &cmp, &cmp, &rec),
            (fields(&["price"]).into(), fields(&["price"]).into()),
            "rule misfired: skip_nulls"
        );
        assert_eq!(
            fields_for(false, &cmp, &cmp, &rec),
            (cmp.as_slice().into(), cmp.as_slice().into()),
            "rule misfired: without skip_nulls every field counts"
        );
    }

    /// What a merge row expects.
    #[derive(Debug, PartialEq)]
    enum Merges {
        Nothing,
        Create(Side),
        Skip(Side),
        /// Parked fields and the reason.
        Park(Vec<String>, String),
        /// The decision, the merged record, written to the source, to the target, the reason.
        Merge(Decision, Value, bool, bool, Option<String>),
    }

    fn merge_shape(v: MergeVerdict) -> Merges {
        match v {
            MergeVerdict::Nothing => Merges::Nothing,
            MergeVerdict::Create { on } => Merges::Create(on),
            MergeVerdict::Skip { on } => Merges::Skip(on),
            MergeVerdict::Park { fields, reason, .. } => Merges::Park(fields, reason),
            MergeVerdict::Merge(m) => {
                Merges::Merge(m.decision, m.merged, m.to_source, m.to_target, m.reason)
            }
        }
    }

    fn rule(rule: ConflictRule, source_role: Option<SystemRole>) -> Conflict {
        Conflict {
            rule,
            owners: BTreeMap::new(),
            source_role,
            timestamp: Some("updated".into()),
        }
    }

    #[test]
    fn merge_rules() {
        let cmp = fields(&["price", "stock"]);
        let base = json!({"price": 10, "stock": 1});
        let rec = |price: i64, stock: i64, updated: &str| json!({"price": price, "stock": stock, "updated": updated});
        let (early, late) = ("2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z");
        let erp_wins = rule(ConflictRule::ErpWins, Some(SystemRole::Erp));
        let erp_wins_from_shop = rule(ConflictRule::ErpWins, Some(SystemRole::Shop));
        let shop_wins = rule(ConflictRule::ShopWins, Some(SystemRole::Erp));
        let newest = rule(ConflictRule::NewestWins, None);
        let newest_no_stamp = Conflict {
            timestamp: None,
            ..rule(ConflictRule::NewestWins, None)
        };
        let park = rule(ConflictRule::Park, Some(SystemRole::Erp));
        let owner_rule = rule(ConflictRule::Owner, None);
        let owned = Conflict {
            owners: [("price".to_string(), Side::Target)].into(),
            ..rule(ConflictRule::Owner, None)
        };
        let owned_over_rule = Conflict {
            owners: [("price".to_string(), Side::Target)].into(),
            ..rule(ConflictRule::ErpWins, Some(SystemRole::Erp))
        };
        let both = |s: Value, t: Value| (Some(s), Some(t));
        let synced = Some(base.clone());

        type Row<'a> = (
            &'a str,
            SyncMode,
            Option<&'a Conflict>,
            (Option<Value>, Option<Value>),
            Option<Value>,
            Merges,
        );
        let rows: Vec<Row> = vec![
            (
                "neither side has it",
                SyncMode::Upsert,
                None,
                (None, None),
                None,
                Merges::Nothing,
            ),
            (
                "only in the source: created in the target",
                SyncMode::Upsert,
                None,
                (Some(rec(1, 1, early)), None),
                None,
                Merges::Create(Side::Target),
            ),
            (
                "only in the target: created in the source",
                SyncMode::Upsert,
                None,
                (None, Some(rec(1, 1, early))),
                None,
                Merges::Create(Side::Source),
            ),
            (
                "only on one side under `update`: not created",
                SyncMode::Update,
                None,
                (None, Some(rec(1, 1, early))),
                None,
                Merges::Skip(Side::Source),
            ),
            (
                "unchanged on both sides: nothing written",
                SyncMode::Upsert,
                None,
                both(rec(10, 1, early), rec(10, 1, late)),
                synced.clone(),
                Merges::Merge(Decision::Skip, base.clone(), false, false, None),
            ),
            (
                "adoption: a first sync of equal records writes nothing",
                SyncMode::Upsert,
                None,
                both(rec(10, 1, early), rec(10, 1, late)),
                None,
                Merges::Merge(Decision::Adopt, base.clone(), false, false, None),
            ),
            (
                "source changed: propagates to the target",
                SyncMode::Upsert,
                None,
                both(rec(12, 1, early), rec(10, 1, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Update,
                    json!({"price": 12, "stock": 1}),
                    false,
                    true,
                    None,
                ),
            ),
            (
                "target changed: propagates to the source",
                SyncMode::Upsert,
                None,
                both(rec(10, 1, early), rec(10, 5, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Update,
                    json!({"price": 10, "stock": 5}),
                    true,
                    false,
                    None,
                ),
            ),
            (
                "both changed different fields: each propagates, no conflict",
                SyncMode::Upsert,
                Some(&park),
                both(rec(12, 1, early), rec(10, 5, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Update,
                    json!({"price": 12, "stock": 5}),
                    true,
                    true,
                    None,
                ),
            ),
            (
                "both changed a field to the same value: no conflict, nothing written",
                SyncMode::Upsert,
                Some(&park),
                both(rec(12, 1, early), rec(12, 1, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Skip,
                    json!({"price": 12, "stock": 1}),
                    false,
                    false,
                    None,
                ),
            ),
            (
                "erp_wins, the source is the ERP: the source's value",
                SyncMode::Upsert,
                Some(&erp_wins),
                both(rec(12, 1, early), rec(15, 1, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Conflict,
                    json!({"price": 12, "stock": 1}),
                    false,
                    true,
                    Some("both sides changed `price`; resolved by `erp_wins`".to_string()),
                ),
            ),
            (
                "erp_wins, the source is the shop: the target's value",
                SyncMode::Upsert,
                Some(&erp_wins_from_shop),
                both(rec(12, 1, early), rec(15, 1, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Conflict,
                    json!({"price": 15, "stock": 1}),
                    true,
                    false,
                    Some("both sides changed `price`; resolved by `erp_wins`".to_string()),
                ),
            ),
            (
                "shop_wins, the source is the ERP: the target's value",
                SyncMode::Upsert,
                Some(&shop_wins),
                both(rec(12, 1, early), rec(15, 1, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Conflict,
                    json!({"price": 15, "stock": 1}),
                    true,
                    false,
                    Some("both sides changed `price`; resolved by `shop_wins`".to_string()),
                ),
            ),
            (
                "newest_wins: the later stamp, here the target's",
                SyncMode::Upsert,
                Some(&newest),
                both(rec(12, 1, early), rec(15, 1, late)),
                synced.clone(),
                Merges::Merge(
                    Decision::Conflict,
                    json!({"price": 15, "stock": 1}),
                    true,
                    false,
                    Some("both sides changed `price`; resolved by `newest_wins`".to_string()),
                ),
            ),
            (
                "newest_wins: the later stamp, here the source's",
                SyncMode::Upsert,
                Some(&newest),
                both(rec(12, 1, late), rec(15, 1, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Conflict,
                    json!({"price": 12, "stock": 1}),
                    false,
                    true,
                    Some("both sides changed `price`; resolved by `newest_wins`".to_string()),
                ),
            ),
            (
                "newest_wins: equal stamps go to the source",
                SyncMode::Upsert,
                Some(&newest),
                both(rec(12, 1, early), rec(15, 1, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Conflict,
                    json!({"price": 12, "stock": 1}),
                    false,
                    true,
                    Some("both sides changed `price`; resolved by `newest_wins`".to_string()),
                ),
            ),
            (
                "newest_wins without a timestamp field: parked",
                SyncMode::Upsert,
                Some(&newest_no_stamp),
                both(rec(12, 1, early), rec(15, 1, late)),
                synced.clone(),
                Merges::Park(
                    fields(&["price"]),
                    "both sides changed `price`; parked for review".to_string(),
                ),
            ),
            (
                "owner: the owning side's value wins",
                SyncMode::Upsert,
                Some(&owned),
                both(rec(12, 1, early), rec(15, 1, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Conflict,
                    json!({"price": 15, "stock": 1}),
                    true,
                    false,
                    Some("both sides changed `price`; resolved by `owner`".to_string()),
                ),
            ),
            (
                "owner: a field's owner overrides the rule",
                SyncMode::Upsert,
                Some(&owned_over_rule),
                both(rec(12, 1, early), rec(15, 1, early)),
                synced.clone(),
                Merges::Merge(
                    Decision::Conflict,
                    json!({"price": 15, "stock": 1}),
                    true,
                    false,
                    Some("both sides changed `price`; resolved by `erp_wins`".to_string()),
                ),
            ),
            (
                "owner: a conflicting field without owner is parked",
                SyncMode::Upsert,
                Some(&owner_rule),
                both(rec(12, 1, early), rec(15, 1, early)),
                synced.clone(),
                Merges::Park(
                    fields(&["price"]),
                    "both sides changed `price`; parked for review".to_string(),
                ),
            ),
            (
                "park: both changed a field differently, parked",
                SyncMode::Upsert,
                Some(&park),
                both(rec(12, 2, early), rec(15, 3, early)),
                synced.clone(),
                Merges::Park(
                    fields(&["price", "stock"]),
                    "both sides changed `price`, `stock`; parked for review".to_string(),
                ),
            ),
            (
                "no conflict rule: both changed a field differently, parked",
                SyncMode::Upsert,
                None,
                both(rec(12, 1, early), rec(15, 1, early)),
                synced.clone(),
                Merges::Park(
                    fields(&["price"]),
                    "both sides changed `price`; parked for review".to_string(),
                ),
            ),
            (
                "first sync: differing sides are a conflict, settled by the rule",
                SyncMode::Upsert,
                Some(&erp_wins),
                both(rec(12, 1, early), rec(15, 1, early)),
                None,
                Merges::Merge(
                    Decision::Conflict,
                    json!({"price": 12, "stock": 1}),
                    false,
                    true,
                    Some(
                        "the sides differ on `price` at the first sync; resolved by `erp_wins`"
                            .to_string(),
                    ),
                ),
            ),
            (
                "first sync under park: differing sides are parked",
                SyncMode::Upsert,
                Some(&park),
                both(rec(12, 1, early), rec(15, 1, early)),
                None,
                Merges::Park(
                    fields(&["price"]),
                    "the sides differ on `price` at the first sync; parked for review".to_string(),
                ),
            ),
        ];
        let mut misfired = Vec::new();
        for (name, mode, conflict, (s, t), synced, want) in rows {
            let rules = MergeRules {
                mode,
                compared: &cmp,
                conflict,
            };
            let now = Sides {
                source: s.as_ref(),
                target: t.as_ref(),
            };
            let bases = Sides {
                source: synced.as_ref(),
                target: synced.as_ref(),
            };
            let got = merge_shape(merge(&rules, now, bases));
            if got != want {
                misfired.push(format!("{name}\n    want {want:?}\n    got  {got:?}"));
            }
        }
        assert!(
            misfired.is_empty(),
            "rules that misfired:\n  {}",
            misfired.join("\n  ")
        );
    }

    #[test]
    fn park_names_what_each_side_holds() {
        let cmp = fields(&["price"]);
        let rules = MergeRules {
            mode: SyncMode::Upsert,
            compared: &cmp,
            conflict: None,
        };
        let (s, t, b) = (
            json!({"price": 12}),
            json!({"price": 15}),
            json!({"price": 10}),
        );
        let got = merge(
            &rules,
            Sides {
                source: Some(&s),
                target: Some(&t),
            },
            Sides {
                source: Some(&b),
                target: Some(&b),
            },
        );
        let MergeVerdict::Park {
            reason, changes, ..
        } = got
        else {
            panic!("rule misfired: park, got {got:?}");
        };
        assert_eq!(reason, "both sides changed `price`; parked for review");
        assert_eq!(
            changes,
            vec![FieldChange {
                field: "price".into(),
                old: json!(15),
                new: json!(12)
            }]
        );
    }
}
