//! The checker: resolves every reference, compiles every expression and collects every
//! problem with its place. This file holds the checker and the whole project's pass;
//! `systems`, `flows` and `notify` check their sections.

mod flows;
mod notify;
mod systems;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::webhook::Webhook;
use super::{CanonField, Entity, Project, Schedule};
use crate::config::model::CanonicalFieldConfig;
use crate::config::{Diagnostic, Problem, ProjectConfig};
use crate::connector::{CompileProblem, ProblemKind};
use crate::expr::{JsonPath, Predicate};

struct Checker<'a> {
    project: &'a ProjectConfig,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    /// Reports a problem at the value of `path`.
    fn report(&mut self, file: usize, path: &str, problem: Problem) {
        let d = self.project.at(file, path, problem);
        self.diags.push(d);
    }

    /// Reports a problem at the key of `path`.
    fn report_key(&mut self, file: usize, path: &str, problem: Problem) {
        let d = self.project.at_key(file, path, problem);
        self.diags.push(d);
    }

    fn path(&mut self, file: usize, path: &str, text: &str) -> Option<JsonPath> {
        JsonPath::parse(text)
            .map_err(|e| self.report(file, path, Problem::json_path(e.to_string())))
            .ok()
    }

    fn predicate(&mut self, file: usize, path: &str, text: &str) -> Option<Predicate> {
        Predicate::parse(text)
            .map_err(|e| {
                let problem = Problem::json_path(format!("invalid condition: {e}"));
                self.report(file, path, problem);
            })
            .ok()
    }

    fn schedule(
        &mut self,
        file: usize,
        path: &str,
        expr: &str,
        tz: Option<&str>,
    ) -> Option<Schedule> {
        Schedule::parse(expr, tz)
            .map_err(|e| self.report(file, path, Problem::schedule(e.to_string())))
            .ok()
    }

    fn problems(&mut self, file: usize, base: &str, problems: Vec<CompileProblem>) {
        for p in problems {
            let problem = match p.kind {
                ProblemKind::JsonPath => Problem::json_path(p.message),
                ProblemKind::Template => Problem::template(p.message),
                ProblemKind::Invalid => Problem::invalid(p.message),
                ProblemKind::Covers429 => Problem::covers_429(p.message),
            };
            self.report(file, &format!("{base}.{}", p.path), problem);
        }
    }
}

/// Compiles a loaded project. The project is returned only when there is no problem at all.
pub fn compile(project: &ProjectConfig) -> (Option<Project>, Vec<Diagnostic>) {
    let mut ck = Checker {
        project,
        diags: Vec::new(),
    };
    let entities = compile_entities(&mut ck);
    let systems = systems::compile_systems(&mut ck, &entities);
    let webhooks: Vec<String> = project
        .daemon
        .as_ref()
        .map(|d| d.value.webhooks.keys().cloned().collect())
        .unwrap_or_default();
    let compiled_webhooks = compile_webhooks(&mut ck);
    let flows = flows::compile_flows(&mut ck, &entities, &systems, &webhooks);
    if let Some(d) = &project.daemon
        && let Some(n) = &d.value.notify
    {
        notify::check_notify(&mut ck, d.file, n, &flows);
    }
    check_not_empty(&mut ck);
    let diags = deduplicated_in_order(ck.diags);
    if diags.iter().any(Diagnostic::is_error) {
        return (None, diags);
    }
    let project = Project {
        root: project.root.clone(),
        vars: Value::Object(project.vars.clone()),
        entities,
        systems: systems
            .into_iter()
            .filter_map(|(k, s)| Some((k, s.into_def()?)))
            .collect(),
        flows,
        webhooks: compiled_webhooks,
        state_url: project.state.as_ref().map(|s| s.value.url.clone()),
        daemon: project.daemon.as_ref().map(|d| d.value.clone()),
    };
    (Some(project), diags)
}

/// The project's `daemon.webhooks`, those that compile; the problems of the others are
/// reported.
fn compile_webhooks(ck: &mut Checker) -> BTreeMap<String, Arc<Webhook>> {
    let mut compiled = BTreeMap::new();
    let Some(d) = &ck.project.daemon else {
        return compiled;
    };
    for (name, w) in &d.value.webhooks {
        match Webhook::compile(name, w) {
            Ok(hook) => {
                compiled.insert(name.clone(), Arc::new(hook));
            }
            Err(problems) => {
                for (at, problem) in problems {
                    ck.report(d.file, &format!("daemon.webhooks.{name}.{at}"), problem);
                }
            }
        }
    }
    compiled
}

/// A folder of shared definitions declares systems (templates) or entities; a project with no
/// system and no flow at all is a wrong path or an empty file.
fn check_not_empty(ck: &mut Checker) {
    let project = ck.project;
    if project.systems.is_empty()
        && project.flows.is_empty()
        && !project.files.is_empty()
        && project.broken.is_empty()
        && ck.diags.iter().all(|d| !d.is_error())
    {
        ck.report(0, "", Problem::empty_project());
    }
}

/// The diagnostics told once each, in file and position order.
fn deduplicated_in_order(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = HashSet::new();
    diags.retain(|d| seen.insert((d.file.clone(), d.line, d.col, d.message.clone())));
    diags.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    diags
}

fn compile_entities(ck: &mut Checker) -> BTreeMap<String, Arc<Entity>> {
    let mut out = BTreeMap::new();
    for (name, decl) in &ck.project.entities {
        let (file, path) = (decl.file, decl.path.clone());
        let e = &decl.value;
        let names: Vec<&str> = e.fields.keys().map(String::as_str).collect();
        if !e.fields.contains_key(&e.key) {
            let problem = Problem::unknown_name("field", &e.key, names.clone());
            ck.report(file, &format!("{path}.key"), problem);
        }
        if let Some(u) = &e.updated_at
            && !e.fields.contains_key(u)
        {
            let problem = Problem::unknown_name("field", u, names.clone());
            ck.report(file, &format!("{path}.updated_at"), problem);
        }
        let fields = e
            .fields
            .iter()
            .map(|(k, f)| {
                let field = match f {
                    CanonicalFieldConfig::Type(t) => CanonField {
                        ty: *t,
                        scale: None,
                        normalize: Vec::new(),
                        volatile: false,
                    },
                    CanonicalFieldConfig::Full(s) => CanonField {
                        ty: s.field_type,
                        scale: s.scale,
                        normalize: s.normalize.clone(),
                        volatile: s.volatile,
                    },
                };
                (k.clone(), field)
            })
            .collect();
        out.insert(
            name.clone(),
            Arc::new(Entity {
                name: name.clone(),
                key: e.key.clone(),
                updated_at: e.updated_at.clone(),
                fields,
            }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::flows::filter_members;
    use crate::compile::Project;
    use crate::config::Diagnostic;

    /// Compiles a project of one file.
    fn check(text: &str) -> (Option<Project>, Vec<Diagnostic>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("project.yaml");
        std::fs::write(&file, text).unwrap();
        let (loaded, mut diags) = crate::config::load(&[file], &crate::config::env::ProcessEnv);
        let (project, more) = super::compile(&loaded);
        diags.extend(more);
        (project, diags)
    }

    #[test]
    fn every_problem_of_a_system_is_found_by_compiling_once_at_the_declaration_that_has_it() {
        let (project, diags) = check(
            "version: 1
systems:
  base:
    abstract: true
    headers: { X-Tenant: \"{{nope x}}\" }
    rate_limit: { per_second: 0 }
  shop:
    extends: base
    base_url: ftp://shop.example
  erp:
    extends: base
    base_url: https://erp.example
    retry: { max_attempts: 0 }
",
        );
        assert!(project.is_none());
        let mut paths: Vec<&str> = diags.iter().map(|d| d.path.as_str()).collect();
        paths.sort();
        // Inherited problems are told once, at `base`, not again at each system using them.
        assert_eq!(
            paths,
            [
                "systems.base.headers.X-Tenant",
                "systems.base.rate_limit.per_second",
                "systems.erp.retry.max_attempts",
                "systems.shop.base_url",
            ],
            "{diags:#?}"
        );
    }

    #[test]
    fn a_flow_copy_has_its_settings_typed_and_its_owners_named_by_system() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
        let demo = std::fs::read_to_string(repo.join("demo/demo.yaml")).unwrap();
        let common = repo.join("common").display().to_string();
        let text = demo.replace("include: [../common]", &format!("include: [\"{common}\"]"))
            + "
  prices:
    entity: product
    from: \"{{each}}\"
    to: erp
    for_each: [shop]
    direction: bidirectional
    fields: [sku, price]
    conflict: { rule: owner, owners: { price: \"{{each}}\", sku: erp } }
    trigger: { webhook: shop_orders }
";
        let (project, diags) = check(&text);
        let project = project.unwrap_or_else(|| panic!("{diags:#?}"));
        let flow = project.flow("prices.shop").unwrap();
        assert_eq!((flow.from.as_str(), flow.to.as_str()), ("shop", "erp"));
        assert_eq!(flow.entity, "product");
        assert_eq!(flow.fields, ["sku", "price"]);
        assert_eq!(flow.webhook.as_deref(), Some("shop_orders"));
        let owners = &flow.conflict.as_ref().unwrap().owners;
        assert_eq!(
            owners["price"],
            crate::compile::Side::Source,
            "`{{{{each}}}}` is the copy's system, its source"
        );
        assert_eq!(owners["sku"], crate::compile::Side::Target);
        // What the file declares stays as written, for `validate --print-config`.
        assert_eq!(flow.declared().to_json()["from"], "{{each}}");
    }

    #[test]
    fn a_valid_project_has_the_spec_of_every_concrete_system_and_none_of_a_template() {
        let (project, diags) = check(
            "version: 1
systems:
  base:
    abstract: true
    headers: { X-Tenant: acme }
    timeouts: { connect_ms: 1000, request_ms: 2000 }
  shop:
    extends: base
    base_url: https://shop.example/api
",
        );
        let project = project.unwrap_or_else(|| panic!("{diags:#?}"));
        assert_eq!(project.systems.keys().collect::<Vec<_>>(), ["shop"]);
        let spec = &project.systems["shop"].spec;
        assert_eq!(spec.base_url().as_str(), "https://shop.example/api");
        assert_eq!(spec.connect_timeout, std::time::Duration::from_secs(1));
        assert_eq!(spec.headers.len(), 1, "the template's header is inherited");
    }

    #[test]
    fn existence_tests_are_told_from_comparisons() {
        let m = |t: &str| filter_members(t);
        let s = |n: &str, b: bool| (n.to_string(), b);
        assert_eq!(
            m("@.awb && @.status == 'shipped'"),
            [s("awb", true), s("status", false)]
        );
        assert_eq!(m("@.awb != null"), [s("awb", false)]);
        assert_eq!(
            m("!@.awb || (@.total > 5)"),
            [s("awb", false), s("total", false)]
        );
        assert_eq!(m("@.customer.email"), [s("customer", true)]);
        assert_eq!(m("@.note == '@.x'"), [s("note", false)]);
    }
}
