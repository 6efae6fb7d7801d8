//! A flow's settings in checked form: what the engine reads of its conflict rule, post-actions,
//! triggers and incremental reading, resolved against the flow's systems and entity when the
//! project compiles, so a run has nothing left to look up or parse.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::model::{
    ConflictConfig, ConflictRule, PostActionConfig, StatusTriggerConfig, SystemRole,
    TransitionTriggerConfig,
};

use super::{Entity, SystemEntity};

/// One end of a flow: the system it reads (`from`) or the one it writes (`to`). A
/// bidirectional flow writes to both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub(crate) fn other(self) -> Side {
        match self {
            Side::Source => Side::Target,
            Side::Target => Side::Source,
        }
    }
}

/// A flow's conflict rule, with owners named by side.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub rule: ConflictRule,
    /// Fields whose owner's value always wins.
    pub owners: BTreeMap<String, Side>,
    /// The source system's role, for `erp_wins` and `shop_wins`.
    pub source_role: Option<SystemRole>,
    /// The timestamp `newest_wins` compares: the rule's own field, else the entity's
    /// `updated_at`.
    pub timestamp: Option<String>,
}

/// The two systems of one flow copy: as the flow file writes them (`{{each}}` kept), and as
/// the copy runs between them.
pub(crate) struct Ends<'a> {
    pub(crate) declared_from: &'a str,
    pub(crate) declared_to: &'a str,
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
}

impl Conflict {
    /// The rule of one flow copy. An owner named as the flow file writes a side (`{{each}}`)
    /// is that side's system; the source's owners are its own, every other one the target's.
    pub(crate) fn compile(
        c: &ConflictConfig,
        ends: &Ends,
        source_role: Option<SystemRole>,
        entity: &Entity,
    ) -> Conflict {
        let owner_side = |owner: &str| {
            let system = if owner == ends.declared_from {
                ends.from
            } else if owner == ends.declared_to {
                ends.to
            } else {
                owner
            };
            if system == ends.from {
                Side::Source
            } else {
                Side::Target
            }
        };
        Conflict {
            rule: c.rule,
            owners: c
                .owners
                .iter()
                .map(|(field, owner)| (field.clone(), owner_side(owner)))
                .collect(),
            source_role,
            timestamp: c
                .timestamp_field
                .clone()
                .or_else(|| entity.updated_at.clone()),
        }
    }
}

/// An action called on the source record after the target accepted it, with the source
/// operation that performs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PostAction {
    /// The action's name, as the flow file writes it (`lock`).
    pub action: String,
    /// The source entity's operation the action calls.
    pub operation: String,
}

impl PostAction {
    /// The post-actions of a flow whose source declares `source`'s entity; an action the
    /// source does not declare is reported by the check and left out.
    pub(crate) fn compile(actions: &[PostActionConfig], source: &SystemEntity) -> Vec<PostAction> {
        actions
            .iter()
            .filter_map(|a| {
                let operation = source.actions.get(&a.action)?;
                Some(PostAction {
                    action: a.action.clone(),
                    operation: operation.clone(),
                })
            })
            .collect()
    }
}

/// Sends a record only when the canonical field holds one of the values.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTrigger {
    /// Canonical field holding the status (checked against the flow's entity).
    pub field: String,
    /// Values that make a record eligible.
    pub values: Vec<String>,
}

impl From<&StatusTriggerConfig> for StatusTrigger {
    fn from(c: &StatusTriggerConfig) -> StatusTrigger {
        StatusTrigger {
            field: c.field.clone(),
            values: c.values.clone(),
        }
    }
}

/// Sends a record only when the canonical field moved from one of `from` (any, when empty)
/// to one of `to` since erpsync last saw the record.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionTrigger {
    /// Canonical field holding the status (checked against the flow's entity).
    pub field: String,
    /// Previous values (empty: any).
    pub from: Vec<String>,
    /// New values.
    pub to: Vec<String>,
}

impl From<&TransitionTriggerConfig> for TransitionTrigger {
    fn from(c: &TransitionTriggerConfig) -> TransitionTrigger {
        TransitionTrigger {
            field: c.field.clone(),
            from: c.from.clone(),
            to: c.to.clone(),
        }
    }
}

/// Incremental reading: where the first run starts, and how far back each later run reaches
/// before the cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Incremental {
    /// Where the first run starts.
    pub start: DateTime<Utc>,
    /// Subtracted from the cursor on each run, to catch records written while the previous
    /// run was reading.
    pub overlap: TimeDelta,
}

impl Incremental {
    /// `overlap_secs` as a span of time; `None` when it is too large to be one.
    pub(crate) fn overlap(secs: u64) -> Option<TimeDelta> {
        i64::try_from(secs).ok().and_then(TimeDelta::try_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlap_too_large_for_a_span_of_time_has_none() {
        assert_eq!(Incremental::overlap(60), Some(TimeDelta::seconds(60)));
        assert_eq!(Incremental::overlap(0), Some(TimeDelta::zero()));
        let most = (i64::MAX / 1000) as u64;
        assert_eq!(
            Incremental::overlap(most),
            TimeDelta::try_seconds(most as i64)
        );
        assert_eq!(Incremental::overlap(most + 1), None);
        assert_eq!(Incremental::overlap(u64::MAX), None);
    }
}
