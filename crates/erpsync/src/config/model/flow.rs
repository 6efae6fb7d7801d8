//! Flows: one entity moving between two systems, with its triggers, conflict rules and actions.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// One entity moving between two systems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FlowConfig {
    /// What the flow is for, shown by `erpsync status` and the admin API.
    #[serde(default)]
    pub description: Option<String>,
    /// A disabled flow is validated but runs only when named by hand (`run --once --flow`,
    /// `failures retry`): never on its schedule, by a webhook, by `then`, nor through
    /// `requires` (an enabled flow requiring a disabled one is an error).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Canonical entity the flow moves (`product`, `stock`, `order`, `customer`…).
    pub entity: String,
    /// Source system. With `for_each`, `{{each}}` stands for each listed system.
    pub from: String,
    /// Target system. With `for_each`, `{{each}}` stands for each listed system.
    pub to: String,
    /// Run one copy of this flow per listed system (several shops against one ERP); each copy
    /// is named `FLOW.SYSTEM` and keeps its own state and failures.
    #[serde(default)]
    pub for_each: Vec<String>,
    /// `one_way` (from → to) or `bidirectional` (changes on either side propagate).
    #[serde(default)]
    pub direction: Direction,
    /// How records of both sides are paired.
    #[serde(default, rename = "match")]
    pub match_key: Option<MatchConfig>,
    /// What the flow may do to the target.
    #[serde(default)]
    pub mode: SyncMode,
    /// Canonical fields this flow carries; others are ignored (a stock flow carries only
    /// `stock`). Empty means every field the target's `write` mapping uses.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Source fields that are null leave the target's value alone instead of erasing it (a
    /// source that does not know an order's status yet must not reset it).
    #[serde(default)]
    pub skip_nulls: bool,
    /// Source records that do not satisfy this JSONPath filter condition on the canonical
    /// record are left alone, e.g. `@.status != 'cancelled'`.
    #[serde(default)]
    pub filter: Option<String>,
    /// When the flow runs.
    #[serde(default)]
    pub trigger: TriggerConfig,
    /// Incremental reading: only records changed since the last successful run.
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
    /// A periodic full comparison that finds and corrects drift the incremental runs missed.
    #[serde(default)]
    pub reconcile: Option<ReconcileConfig>,
    /// What to do when both sides changed the same record (bidirectional flows).
    #[serde(default)]
    pub conflict: Option<ConflictConfig>,
    /// Actions on the source record after the target accepted it, e.g. lock the order in the
    /// shop.
    #[serde(default)]
    pub after_export: Vec<PostActionConfig>,
    /// Keep sending source edits after the record was exported (orders are otherwise locked).
    /// Updates coming back from the target may then overwrite them; runs report each one.
    #[serde(default)]
    pub allow_edit_after_export: bool,
    /// Send each record at most once (orders): later source changes are not sent unless
    /// `allow_edit_after_export` is set.
    #[serde(default)]
    pub export_once: bool,
    /// Flows to run when this one finishes, scoped to the records it touched.
    #[serde(default)]
    pub then: Vec<ChainConfig>,
    /// Flows that run before this one when several run together (`run --once`, the same
    /// scheduler tick), e.g. products before the orders that reference them.
    #[serde(default)]
    pub after: Vec<String>,
    /// Related entities that must be synced before a record of this flow (e.g. an order's
    /// customer), through the named flows.
    #[serde(default)]
    pub requires: Vec<RequireConfig>,
}

/// Direction of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From `from` to `to` only.
    #[default]
    OneWay,
    /// Both ways, with a three-way comparison against the last synced state.
    Bidirectional,
}

/// What a flow may do to the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Create records missing in the target and update existing ones.
    #[default]
    Upsert,
    /// Only create records missing in the target.
    Create,
    /// Only update records that exist in the target.
    Update,
    /// Create missing records; never update existing ones (used to adopt a catalogue).
    CreateMissing,
}

/// How the records of both sides are paired.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MatchConfig {
    /// Canonical field compared; defaults to the entity's `key`.
    #[serde(default)]
    pub key: Option<String>,
    /// Normalisation applied to both sides' keys before comparing.
    #[serde(default)]
    pub normalize: Vec<Normalize>,
}

/// When a flow runs. Several triggers may be combined.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Cron schedule with seconds (`0 */15 * * * *`) or classic five fields (`*/15 * * * *`).
    /// Flows with a schedule are the ones `run --once` without `--flow` runs.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Time zone of the schedule (IANA name); UTC by default.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Only records whose canonical field has one of these values are sent (e.g. orders at
    /// `pending`, or at `confirmed`/`processing`).
    #[serde(default)]
    pub on_status: Option<StatusTriggerConfig>,
    /// Only records that moved from one value to another since erpsync last saw them.
    #[serde(default)]
    pub on_transition: Option<TransitionTriggerConfig>,
    /// Name of a webhook (under `daemon.webhooks`) that runs the flow for the notified record.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Says that the flow is run by hand. Every flow can be (`run --once --flow`, the admin
    /// API); a flow without `schedule` runs only that way, or when another flow requires or
    /// chains it, or its webhook arrives — never by `run --once` without `--flow`.
    #[serde(default = "default_true")]
    pub manual: bool,
}

/// A status-set trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StatusTriggerConfig {
    /// Canonical field holding the status.
    #[serde(default = "default_status_field")]
    pub field: String,
    /// Values that make a record eligible.
    #[serde(rename = "in")]
    pub values: Vec<String>,
}

fn default_status_field() -> String {
    "status".into()
}

/// A status-transition trigger; fires once per transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TransitionTriggerConfig {
    /// Canonical field holding the status.
    #[serde(default = "default_status_field")]
    pub field: String,
    /// Previous values (empty: any).
    #[serde(default)]
    pub from: Vec<String>,
    /// New values.
    pub to: Vec<String>,
}

/// Incremental reading settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// Where the first run starts (RFC 3339 or `YYYY-MM-DD`).
    pub start: String,
    /// Seconds subtracted from the cursor on each run, to catch records written while the
    /// previous run was reading.
    #[serde(default = "default_overlap")]
    pub overlap_secs: u64,
}

fn default_overlap() -> u64 {
    60
}

/// Reconciliation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Cron schedule of the full comparison.
    pub schedule: String,
    /// Correct the drift found (otherwise only report it).
    #[serde(default = "default_true")]
    pub correct: bool,
}

/// Conflict handling for bidirectional flows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ConflictConfig {
    /// Rule for fields without an owner.
    pub rule: ConflictRule,
    /// Canonical timestamp field compared by `newest_wins` (defaults to the entity's
    /// `updated_at`).
    #[serde(default)]
    pub timestamp_field: Option<String>,
    /// Per-field owner: the named system's value always wins for that field.
    #[serde(default)]
    pub owners: BTreeMap<String, String>,
}

/// Conflict rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictRule {
    /// The ERP's value wins.
    ErpWins,
    /// The shop's value wins.
    ShopWins,
    /// The side with the later timestamp wins.
    NewestWins,
    /// Only per-field owners decide; a conflict on a field without owner is parked.
    Owner,
    /// Park the record for review; nothing is written until it is resolved.
    Park,
}

impl ConflictRule {
    /// The rule as flow files spell it (`erp_wins`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictRule::ErpWins => "erp_wins",
            ConflictRule::ShopWins => "shop_wins",
            ConflictRule::NewestWins => "newest_wins",
            ConflictRule::Owner => "owner",
            ConflictRule::Park => "park",
        }
    }
}

/// An action called on the source record after the target accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PostActionConfig {
    /// Name of an action of the source system's entity (e.g. `lock`).
    pub action: String,
}

/// A flow run when this one finishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ChainConfig {
    /// Flow to run.
    pub flow: String,
    /// JSONPath into each touched canonical record that gives the keys the chained flow is
    /// limited to, e.g. `$.lines[*].sku`; without it the chained flow runs in full.
    #[serde(default)]
    pub keys: Option<String>,
}

/// A related record that must exist in the target before this one is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RequireConfig {
    /// Flow that syncs the related entity.
    pub flow: String,
    /// JSONPath into this flow's canonical record that gives the related record, whose match
    /// key that flow uses (e.g. `$.customer`).
    pub record: String,
}

#[cfg(test)]
mod tests {
    use super::ConflictRule;

    #[test]
    fn a_conflict_rule_names_itself_as_flow_files_spell_it() {
        for rule in [
            ConflictRule::ErpWins,
            ConflictRule::ShopWins,
            ConflictRule::NewestWins,
            ConflictRule::Owner,
            ConflictRule::Park,
        ] {
            let read: ConflictRule = serde_json::from_value(rule.as_str().into()).unwrap();
            assert_eq!(read, rule, "{}", rule.as_str());
        }
    }
}
