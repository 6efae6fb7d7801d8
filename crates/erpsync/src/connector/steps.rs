//! Multi-step operations: the steps of an operation sent in order, each reading the answers
//! of the earlier ones, with `on` fallbacks, and a log that lets a caller journal the steps
//! that must not be sent twice and resume an interrupted operation where it stopped.

use std::collections::HashMap;

use handlebars::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::CallError;
use super::operation::{Operation, Step};
use super::paginate::Next;
use super::system::{CallInput, CallOutput, HttpSystem};
use crate::redact::{redact, redact_json};

/// The answer of one step, as later steps read it (`steps.NAME`) and as a journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepAnswer {
    /// The HTTP status; none when the step got no response.
    pub(crate) status: Option<u16>,
    /// The decoded response body.
    pub(crate) body: Value,
    /// What the step's `record` path selects.
    #[serde(default)]
    pub(crate) record: Option<Value>,
    /// Whether the answer failed the step (a later step's `on` may take over).
    #[serde(default)]
    pub(crate) failed: bool,
}

impl StepAnswer {
    fn scope(&self) -> Value {
        json!({
            "status": self.status,
            "body": self.body,
            "record": self.record.clone().unwrap_or(Value::Null),
        })
    }
}

/// What a caller keeps of the steps of one operation call, so that a step that is not safe
/// to repeat (see `Step::journaled`) is never sent twice blindly: its intent is logged before
/// it is sent and its answer after. Steps safe to repeat are not logged: a resumed call
/// sends them again and follows what they answer now.
#[async_trait::async_trait]
pub(crate) trait StepLog: Send {
    /// The answer a journaled step got in an earlier, interrupted call.
    fn answered_before(&self, step: &str) -> Option<StepAnswer>;
    /// Whether a journaled step was sent in an earlier call without its answer being
    /// known (a crash, a timeout): it may have been applied.
    fn sent_before(&self, step: &str) -> bool;
    /// A journaled step is about to be sent.
    async fn sending(&mut self, step: &str) -> Result<(), StepLogError>;
    /// A journaled step answered.
    async fn answered(&mut self, step: &str, answer: &StepAnswer) -> Result<(), StepLogError>;
}

/// Why a log could not keep a step's intent or answer (its store failed): the call stops
/// rather than send a step it could not account for.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StepLogError(#[from] pub Box<dyn std::error::Error + Send + Sync>);

/// A log that keeps nothing: a call that is not journaled (`erpsync call`, lookups).
pub(crate) struct NoStepLog;

#[async_trait::async_trait]
impl StepLog for NoStepLog {
    fn answered_before(&self, _: &str) -> Option<StepAnswer> {
        None
    }
    fn sent_before(&self, _: &str) -> bool {
        false
    }
    async fn sending(&mut self, _: &str) -> Result<(), StepLogError> {
        Ok(())
    }
    async fn answered(&mut self, _: &str, _: &StepAnswer) -> Result<(), StepLogError> {
        Ok(())
    }
}

/// One step of a plan, as a dry run shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PlannedStep {
    pub(crate) name: String,
    /// `POST /orders/12/trackings`; a path that reads an earlier step's answer is shown as
    /// its template.
    pub(crate) request: String,
    /// When the step runs, if not always: "when `update` answered 404".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) condition: Option<String>,
}

impl std::fmt::Display for PlannedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.request)?;
        if let Some(c) = &self.condition {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// Whether a rendered `if` lets a step run.
fn truthy(s: &str) -> bool {
    !matches!(s.trim(), "" | "false" | "0" | "null")
}

impl HttpSystem {
    /// Calls an operation once (with its retries); a multi-step operation sends its steps,
    /// journaling none of them (see `call_logged`).
    pub async fn call(&self, op_name: &str, input: &CallInput) -> Result<CallOutput, CallError> {
        self.call_logged(op_name, input, &mut NoStepLog).await
    }

    /// Calls an operation, journaling its steps in `log` (a single-request operation is
    /// called as `call` does).
    pub(crate) async fn call_logged(
        &self,
        op_name: &str,
        input: &CallInput,
        log: &mut dyn StepLog,
    ) -> Result<CallOutput, CallError> {
        self.ensure_resolved().await?;
        let op = self.operation(op_name)?.clone();
        if op.steps.is_empty() {
            return self.call_single(op_name, &op, input).await;
        }
        self.run_steps(op_name, &op, input, log).await
    }

    /// The steps an operation would send for `input`, for a dry run (nothing is sent).
    pub(crate) fn plan_steps(&self, op_name: &str, input: &CallInput) -> Vec<PlannedStep> {
        let Ok(op) = self.operation(op_name) else {
            return Vec::new();
        };
        op.steps
            .iter()
            .map(|s| {
                let reads_steps = s.op.path.variables().iter().any(|v| v[0] == "steps");
                let path = if reads_steps {
                    s.op.path.source().to_string()
                } else {
                    let ctx = self.context(&s.op, input);
                    s.op.path
                        .render(&ctx)
                        .unwrap_or_else(|_| s.op.path.source().to_string())
                };
                let method = format!("{:?}", s.op.method).to_uppercase();
                let mut condition = s.condition();
                if let Some(t) = &s.if_ {
                    let c = format!("if `{}`", t.source());
                    condition = Some(match condition {
                        Some(on) => format!("{on}, {c}"),
                        None => c,
                    });
                }
                PlannedStep {
                    name: s.name.clone(),
                    request: redact(&format!("{method} {path}")).into_owned(),
                    condition,
                }
            })
            .collect()
    }

    async fn run_steps(
        &self,
        op_name: &str,
        op: &Operation,
        input: &CallInput,
        log: &mut dyn StepLog,
    ) -> Result<CallOutput, CallError> {
        let mut answers: HashMap<&str, StepAnswer> = HashMap::new();
        let mut scope = Map::new();
        // The failed step no later step has taken over yet, with its error.
        let mut failure: Option<(&Step, CallError)> = None;
        let mut last: Option<StepAnswer> = None;
        let mut last_name = "";
        for (i, step) in op.steps.iter().enumerate() {
            let runs = match (&step.on, &failure) {
                // After a failure, only a step that takes over that answer runs.
                (Some(on), Some((failed, _))) => {
                    on.step == failed.name
                        && answers
                            .get(on.step.as_str())
                            .is_some_and(|a| on.matches(a.status, &a.body, a.failed))
                }
                (None, Some(_)) => false,
                (Some(on), None) => answers
                    .get(on.step.as_str())
                    .is_some_and(|a| on.matches(a.status, &a.body, a.failed)),
                (None, None) => true,
            };
            if !runs {
                continue;
            }
            let mut step_input = input.clone();
            step_input
                .extra
                .insert("steps".into(), Value::Object(scope.clone()));
            if let Some(k) = &input.idempotency_key {
                // Each step writes something else: one key per step.
                step_input.idempotency_key = Some(format!("{k}.{}", step.name));
            }
            if let Some(t) = &step.if_ {
                let ctx = self.context(&step.op, &step_input);
                let rendered = t.render(&ctx).map_err(|e| CallError::Render {
                    system: self.name.clone(),
                    operation: format!("{op_name}.{}", step.name),
                    message: redact(&e.to_string()).into_owned(),
                })?;
                if !truthy(&rendered) {
                    continue;
                }
            }
            failure = None;
            let answer = match log.answered_before(&step.name) {
                Some(a) => a,
                None => {
                    let journaled = step.journaled();
                    if journaled
                        && log.sent_before(&step.name)
                        && !step.guarded_by(&op.steps[i + 1..])
                    {
                        return Err(self.step_error(
                            op_name,
                            step,
                            &step_input,
                            CallError::InDoubt {
                                system: self.name.clone(),
                                operation: format!("{op_name}.{}", step.name),
                                status: None,
                                message: "it was sent before without its answer being known, \
                                          and no later step takes over if the system refuses \
                                          it again: it is not sent a second time"
                                    .into(),
                            },
                        ));
                    }
                    if journaled {
                        log.sending(&step.name)
                            .await
                            .map_err(|m| self.log_error(op_name, step, m))?;
                    }
                    let qualified = format!("{op_name}.{}", step.name);
                    let sent = self
                        .execute(&qualified, &step.op, &step_input, &Next::Query(vec![]))
                        .await;
                    let answer = match sent {
                        Ok((resp, _)) => StepAnswer {
                            status: Some(resp.status),
                            record: step.op.record.as_ref().and_then(|p| p.extract(&resp.body)),
                            body: resp.body,
                            failed: false,
                        },
                        Err(e) => {
                            let body = match &e {
                                CallError::Permanent { body, .. }
                                | CallError::NotFound { body, .. } => Some((**body).clone()),
                                _ => None,
                            };
                            match (e.status(), body) {
                                // A refusal: nothing was written; a later step may take over.
                                (Some(status), Some(body)) => {
                                    let a = StepAnswer {
                                        status: Some(status),
                                        body,
                                        record: None,
                                        failed: true,
                                    };
                                    failure = Some((step, e));
                                    a
                                }
                                // No answer, or one that says nothing about the write: the
                                // operation stops here (a journaled step stays "sent").
                                _ => return Err(self.step_error(op_name, step, &step_input, e)),
                            }
                        }
                    };
                    if journaled {
                        log.answered(&step.name, &answer)
                            .await
                            .map_err(|m| self.log_error(op_name, step, m))?;
                    }
                    answer
                }
            };
            if answer.failed && failure.is_none() {
                // A refusal replayed from the log: fail as it failed then.
                failure = Some((
                    step,
                    CallError::Permanent {
                        system: self.name.clone(),
                        operation: format!("{op_name}.{}", step.name),
                        status: answer.status.unwrap_or_default(),
                        message: "refused in an earlier attempt".into(),
                        body: Box::new(redact_json(&answer.body)),
                    },
                ));
            }
            scope.insert(step.name.clone(), answer.scope());
            if !answer.failed {
                last = Some(answer.clone());
                last_name = &step.name;
            }
            answers.insert(step.name.as_str(), answer);
        }
        if let Some((step, e)) = failure {
            let mut step_input = input.clone();
            step_input
                .extra
                .insert("steps".into(), Value::Object(scope.clone()));
            return Err(self.step_error(op_name, step, &step_input, e));
        }
        tracing::debug!(system = %self.name, operation = op_name, result = last_name, "steps done");
        Ok(match last {
            Some(a) => CallOutput {
                status: a.status.unwrap_or_default(),
                body: a.body,
                record: a.record,
                records: Vec::new(),
                parents: Vec::new(),
                already_done: false,
            },
            None => CallOutput {
                status: 0,
                body: Value::Null,
                record: None,
                records: Vec::new(),
                parents: Vec::new(),
                already_done: false,
            },
        })
    }

    /// A step's error, with the request it sent (secrets masked).
    fn step_error(
        &self,
        op_name: &str,
        step: &Step,
        input: &CallInput,
        source: CallError,
    ) -> CallError {
        let ctx: Context = self.context(&step.op, input);
        let url = step
            .op
            .path
            .render(&ctx)
            .unwrap_or_else(|_| step.op.path.source().to_string());
        let body = step
            .op
            .body
            .as_ref()
            .and_then(|b| b.render(&ctx).ok())
            .unwrap_or(Value::Null);
        CallError::Step {
            system: self.name.clone(),
            operation: op_name.to_string(),
            step: step.name.clone(),
            request: Box::new(json!({
                "method": format!("{:?}", step.op.method).to_uppercase(),
                "path": redact(&url),
                "body": redact_json(&body),
            })),
            source: Box::new(source),
        }
    }

    fn log_error(&self, op_name: &str, step: &Step, error: StepLogError) -> CallError {
        CallError::Render {
            system: self.name.clone(),
            operation: format!("{op_name}.{}", step.name),
            message: format!("the step could not be journaled: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_is_false_for_empty_false_zero_and_null() {
        for s in ["", " ", "false", "0", "null"] {
            assert!(!truthy(s), "{s:?}");
        }
        for s in ["AWB1", "true", "1"] {
            assert!(truthy(s), "{s:?}");
        }
    }
}
