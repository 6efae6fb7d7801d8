//! Flow files: the shipped flows validate, every kind of mistake is reported at its place with
//! a stable code, all problems come out of one run, the schema is current, and no input makes
//! the checker panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use erpsync::compile::project::check;
use erpsync::config::load::projects;
use proptest::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn erpsync(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("erpsync runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_flow_project_is_valid() {
    let all = projects(&[root().join("flows")]);
    assert!(
        all.len() >= 3,
        "expected several projects in flows/, found {all:?}"
    );
    for paths in all {
        let (project, diags) = check(&paths);
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert!(diags.is_empty(), "{paths:?}:\n{}", text.join("\n"));
        assert!(project.is_some());
    }
    let (code, stdout, _) = erpsync(&["validate", "flows"]);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn five_problems_are_reported_in_one_run() {
    let (code, stdout, stderr) = erpsync(&[
        "validate",
        "tests/fixtures/flows/invalid/five_problems.yaml",
    ]);
    assert_eq!(code, 78);
    assert_eq!(stdout, "");
    insta::assert_snapshot!("five_problems", stderr);
}

#[test]
fn json_diagnostics_are_machine_readable() {
    let (code, stdout, _) = erpsync(&[
        "validate",
        "--format",
        "json",
        "tests/fixtures/flows/invalid/five_problems.yaml",
    ]);
    assert_eq!(code, 78);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json output");
    assert_eq!(v["valid"], false);
    let found: Vec<(String, u64, u64)> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
                d["col"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("E005", 15, 18),
        ("E006", 18, 15),
        ("E008", 30, 11),
        ("E003", 34, 7),
        ("E007", 41, 17),
    ];
    let expected: Vec<(String, u64, u64)> = expected
        .iter()
        .map(|(c, l, k)| (c.to_string(), *l, *k))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(v["diagnostics"][3]["suggestion"], "schedule");
}

/// One problem per fixture: the code, the place and a telling part of the message.
#[test]
fn each_kind_of_problem_is_reported_at_its_place() {
    let table: &[(&str, &str, u32, u32, &str)] = &[
        ("unknown_key", "E003", 4, 5, "did you mean `fields`"),
        ("bad_jsonpath", "E005", 7, 18, "invalid JSONPath"),
        ("bad_template", "E006", 6, 15, "invalid template"),
        (
            "unknown_helper",
            "E006",
            6,
            15,
            "unknown helper `uppercase`",
        ),
        (
            "bad_cron",
            "E007",
            16,
            26,
            "invalid cron expression `every five minutes`",
        ),
        ("unknown_system", "E008", 13, 11, "did you mean `shop`"),
        (
            "missing_env",
            "E010",
            4,
            34,
            "`ERPSYNC_TEST_SURELY_UNSET_TOKEN` is not set",
        ),
        ("yaml_syntax", "E002", 2, 9, "unclosed bracket"),
        ("wrong_type", "E004", 4, 31, "expected f64"),
        ("unknown_auth_kind", "E004", 4, 19, "did you mean `basic`"),
        (
            "unknown_entity_field",
            "E008",
            8,
            29,
            "did you mean `price`",
        ),
        ("bad_status_pattern", "E004", 5, 20, "`9xx`"),
        (
            "parent_without_nesting",
            "E008",
            11,
            35,
            "the `records` of `list` (`list_products`) are not nested",
        ),
        (
            "unknown_notify_channel",
            "E008",
            15,
            40,
            "unknown channel `opz`",
        ),
    ];
    for (name, code, line, col, needle) in table {
        let path = root().join(format!("tests/fixtures/flows/invalid/single/{name}.yaml"));
        let (project, diags) = check(std::slice::from_ref(&path));
        assert!(project.is_none(), "{name}: should be invalid");
        assert_eq!(diags.len(), 1, "{name}: {diags:#?}");
        let d = &diags[0];
        let rendered = d.to_string();
        assert_eq!(
            (d.code.as_str(), d.line, d.col),
            (*code, *line, *col),
            "{name}: {rendered}"
        );
        assert!(
            rendered.contains(needle),
            "{name}: `{needle}` not in:\n{rendered}"
        );
    }
}

/// `$parent` is meaningful under a nested `records` path: the same entity as the
/// `parent_without_nesting` fixture validates once its listing nests.
#[test]
fn a_parent_path_is_valid_under_a_nested_records_path() {
    let text = std::fs::read_to_string(
        root().join("tests/fixtures/flows/invalid/single/parent_without_nesting.yaml"),
    )
    .unwrap();
    let nested = text.replace("records: $.data }", "records: \"$.data[*].variants[*]\" }");
    assert_ne!(nested, text);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nested.yaml");
    std::fs::write(&file, nested).unwrap();
    let (project, diags) = check(std::slice::from_ref(&file));
    assert!(project.is_some() && diags.is_empty(), "{diags:#?}");
}

#[test]
fn secrets_never_appear_in_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.yaml");
    std::fs::write(
        &file,
        "systems:\n  s:\n    base_url: http://127.0.0.1:1\n    auth: { kind: bearer, token: \"${ERPSYNC_TEST_SECRET_TOKEN}\" }\n    headers: { X-Key: \"{{#if}}${ERPSYNC_TEST_SECRET_TOKEN}\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args(["validate", file.to_str().unwrap()])
        .env("ERPSYNC_TEST_SECRET_TOKEN", "tok-9f8e7d6c5b")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("invalid template"), "{stderr}");
    assert!(!stderr.contains("tok-9f8e7d6c5b"), "{stderr}");
    assert!(stderr.contains("***"), "{stderr}");
}

#[test]
fn committed_schema_matches_the_model() {
    let committed = std::fs::read_to_string(root().join("schemas/flow.schema.json")).unwrap();
    assert!(
        committed == erpsync::config::schema_nav::flow_schema_text(),
        "schemas/flow.schema.json is stale: run `cargo run -- schema --output schemas/flow.schema.json`"
    );
    let (code, stdout, stderr) = erpsync(&["schema", "--check"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Every property of the schema carries a description for editors.
    let schema: serde_json::Value = serde_json::from_str(&committed).unwrap();
    let mut missing = Vec::new();
    walk_properties(&schema, "", &mut missing);
    assert!(
        missing.is_empty(),
        "properties without description: {missing:?}"
    );
}

fn walk_properties(v: &serde_json::Value, at: &str, missing: &mut Vec<String>) {
    if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
        for (k, p) in props {
            let documented =
                p.get("description").is_some() || (k == "kind" && p.get("const").is_some());
            if !documented {
                missing.push(format!("{at}.{k}"));
            }
            walk_properties(p, &format!("{at}.{k}"), missing);
        }
    }
    if let Some(obj) = v.as_object() {
        for (k, child) in obj {
            if k != "properties" && (child.is_object() || child.is_array()) {
                walk_properties(child, &format!("{at}/{k}"), missing);
            }
        }
    }
    if let Some(arr) = v.as_array() {
        for (i, child) in arr.iter().enumerate() {
            walk_properties(child, &format!("{at}[{i}]"), missing);
        }
    }
}

fn check_text(dir: &Path, text: &str) {
    let file = dir.join("fuzz.yaml");
    std::fs::write(&file, text).unwrap();
    let _ = check(std::slice::from_ref(&file));
}

/// YAML-ish values built from the words of the language, so the checker gets deep into the
/// model, not just the parser.
fn yamlish() -> impl Strategy<Value = serde_json::Value> {
    let words = prop::sample::select(vec![
        "systems",
        "flows",
        "entities",
        "vars",
        "auth",
        "kind",
        "basic",
        "operations",
        "path",
        "records",
        "paginate",
        "next_url",
        "entity",
        "from",
        "to",
        "trigger",
        "schedule",
        "read",
        "write",
        "each",
        "fields",
        "ref",
        "lookup",
        "key",
        "base_url",
        "extends",
        "$.data",
        "{{x}}",
        "{{#if",
        "* * * * *",
        "product",
        "shop",
        "include",
        "..",
        "",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        words
            .clone()
            .prop_map(|w| serde_json::Value::String(w.to_string())),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec((words.clone(), inner), 0..5).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_structured_input_makes_the_checker_panic(v in yamlish()) {
        let dir = tempfile::tempdir().unwrap();
        let text = serde_json::to_string_pretty(&v).unwrap();
        check_text(dir.path(), &text);
    }

    #[test]
    fn no_text_makes_the_checker_panic(text in "[a-z:{}\\[\\]\\-\\$\\.#&*!|> \n\"']{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        check_text(dir.path(), &text);
    }
}

#[test]
fn a_system_carries_its_lookup_tables_and_a_child_may_replace_one() {
    use erpsync::compile::{MapEnv, NoRefs};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        r#"
entities:
  order:
    key: number
    fields: { number: string, status: string, paid: string }
vars:
  paid_in: { "1": "yes" }
systems:
  template:
    abstract: true
    vars:
      status_in: { new: pending, done: delivered }
    entities:
      order:
        read:
          number: $.no
          status: { lookup: { table: status_in, key: $.st } }
          paid: { lookup: { table: paid_in, key: $.paid } }
  plain:
    extends: template
    base_url: http://127.0.0.1:1
  custom:
    extends: template
    base_url: http://127.0.0.1:2
    vars:
      status_in: { new: processing, done: delivered }
  broken:
    base_url: http://127.0.0.1:3
    entities:
      order:
        read:
          status: { lookup: { table: status_in, key: $.st } }
"#,
    )
    .unwrap();
    let (project, diags) = check(std::slice::from_ref(&file));
    // `status_in` is the template's, not the project's: a system of its own does not see it.
    assert!(project.is_none());
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(
        diags[0].path == "systems.broken.entities.order.read.status.lookup.table",
        "{diags:#?}"
    );

    let text = std::fs::read_to_string(&file).unwrap();
    let start = text.find("  broken:").unwrap();
    std::fs::write(&file, &text[..start]).unwrap();
    let (project, diags) = check(std::slice::from_ref(&file));
    let project = project.unwrap_or_else(|| panic!("{diags:#?}"));
    let read = |system: &str| {
        let ent = &project.systems[system].entities["order"];
        let env = MapEnv {
            vars: &ent.tables,
            system: &serde_json::Value::Null,
            refs: &NoRefs,
        };
        ent.read
            .apply(&json!({"no": "7", "st": "new", "paid": "1"}), &env, None)
            .unwrap()
    };
    assert_eq!(read("plain")["status"], "pending");
    assert_eq!(
        read("custom")["status"],
        "processing",
        "the child's table wins"
    );
    assert_eq!(read("custom")["paid"], "yes", "project tables stay visible");
}

/// A shared project with a system, an entity and a scheduled flow, and a folder beside it for
/// the project that includes it, whose flow file is `text`.
fn shared_and_mine(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("shared")).unwrap();
    std::fs::create_dir_all(dir.path().join("mine")).unwrap();
    std::fs::write(
        dir.path().join("shared/shared.yaml"),
        "version: 1\n\
         entities:\n  product: { key: sku, fields: { sku: string, name: string } }\n\
         systems:\n  shop:\n    base_url: http://127.0.0.1:1\n    operations:\n      \
         list: { path: /p, records: $.data }\n    entities:\n      \
         product: { list: list, lookup: list, update: list, read: { sku: $.sku, name: $.name } }\n\
         flows:\n  shared_sync:\n    entity: product\n    from: shop\n    to: shop\n    \
         mode: update\n    trigger: { schedule: \"0 */5 * * * *\" }\n",
    )
    .unwrap();
    let mine = dir.path().join("mine");
    std::fs::write(mine.join("mine.yaml"), text).unwrap();
    (dir, mine)
}

/// The flow `own_sync` of the including project.
const OWN_FLOW: &str = "flows:\n  own_sync:\n    entity: product\n    from: shop\n    to: shop\n    \
                        mode: update\n    trigger: { schedule: \"0 0 * * * *\" }\n";

fn scheduled(project: &erpsync::compile::Project) -> Vec<String> {
    let mut names: Vec<String> = project
        .select(&[])
        .unwrap()
        .iter()
        .map(|f| f.id.clone())
        .collect();
    names.sort();
    names
}

/// Issue 18.4: `{path, only: [systems, entities]}` brings the systems and entities of a
/// shared project and none of its flows.
#[test]
fn an_include_may_take_only_systems_and_entities() {
    let (_dir, mine) = shared_and_mine(&format!(
        "version: 1\ninclude: [{{path: ../shared, only: [systems, entities]}}]\n{OWN_FLOW}"
    ));
    let (project, diags) = check(std::slice::from_ref(&mine));
    assert!(diags.is_empty(), "{diags:#?}");
    let project = project.unwrap();
    assert!(project.flow("shared_sync").is_none());
    assert_eq!(scheduled(&project), ["own_sync"]);

    // `run --once` runs the project's own flow only (its system is unreachable, so it fails:
    // what matters is which flows it tried).
    let state = format!("sqlite:{}", mine.join("state.sqlite").display());
    let out = Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args(["run", "--once", mine.to_str().unwrap(), "--state", &state])
        .arg("--init-state")
        .output()
        .unwrap();
    let all = crate::support::stdout_and_stderr(&out);
    assert!(all.contains("own_sync"), "{all}");
    assert!(!all.contains("shared_sync"), "{all}");

    // The string form still brings everything.
    let (_dir, mine) = shared_and_mine("version: 1\ninclude: [../shared]\n");
    let (project, diags) = check(std::slice::from_ref(&mine));
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(scheduled(&project.unwrap()), ["shared_sync"]);

    // A file reached by a selective and a full include gives everything once.
    let (_dir, mine) =
        shared_and_mine("version: 1\ninclude: [{path: ../shared, only: [entities]}, ../shared]\n");
    let (project, diags) = check(std::slice::from_ref(&mine));
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(scheduled(&project.unwrap()), ["shared_sync"]);

    // A misspelt section is named.
    let (_dir, mine) =
        shared_and_mine("version: 1\ninclude: [{path: ../shared, only: [systems, entitis]}]\n");
    let (_, diags) = check(std::slice::from_ref(&mine));
    let d = diags.iter().find(|d| d.path == "include.0.only.1").unwrap();
    assert!(d.to_string().contains("did you mean `entities`"), "{d}");
}

/// Issue 18.4: an override switches an included flow off or changes its schedule without
/// redeclaring it; redeclaring it stays an error that says how to override.
#[test]
fn an_override_changes_an_included_flow() {
    let (_dir, mine) = shared_and_mine(
        "version: 1\ninclude: [../shared]\noverrides:\n  flows:\n    shared_sync: { enabled: false }\n",
    );
    let (project, diags) = check(std::slice::from_ref(&mine));
    assert!(diags.is_empty(), "{diags:#?}");
    let project = project.unwrap();
    assert!(!project.flow("shared_sync").unwrap().enabled);
    assert!(scheduled(&project).is_empty());

    let (_dir, mine) = shared_and_mine(
        "version: 1\ninclude: [../shared]\noverrides:\n  flows:\n    shared_sync:\n      \
         trigger: { schedule: \"0 0 3 * * *\" }\n      reconcile: { schedule: \"0 0 4 * * *\" }\n",
    );
    let (project, diags) = check(std::slice::from_ref(&mine));
    assert!(diags.is_empty(), "{diags:#?}");
    let project = project.unwrap();
    let flow = project.flow("shared_sync").unwrap();
    assert!(flow.enabled);
    assert_eq!(flow.schedule.as_ref().unwrap().source(), "0 0 3 * * *");
    assert_eq!(
        flow.reconcile_schedule.as_ref().unwrap().source(),
        "0 0 4 * * *"
    );
    assert_eq!(flow.declared().to_json()["reconcile"]["correct"], true);

    // A wrong schedule in an override is reported at the override.
    let (_dir, mine) = shared_and_mine(
        "version: 1\ninclude: [../shared]\noverrides:\n  flows:\n    shared_sync:\n      \
         trigger: { schedule: \"every minute\" }\n",
    );
    let (_, diags) = check(std::slice::from_ref(&mine));
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(
        (diags[0].code.as_str(), diags[0].line, diags[0].col),
        ("E007", 6, 28),
        "{}",
        diags[0]
    );
    assert!(diags[0].file.ends_with("mine/mine.yaml"), "{}", diags[0]);

    // `correct` alone cannot make a reconciliation: it needs a schedule.
    let (_dir, mine) = shared_and_mine(
        "version: 1\ninclude: [../shared]\noverrides:\n  flows:\n    shared_sync:\n      \
         reconcile: { correct: false }\n",
    );
    let (_, diags) = check(std::slice::from_ref(&mine));
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].path, "overrides.flows.shared_sync.reconcile");
    assert!(
        diags[0].message.contains("give its `schedule`"),
        "{}",
        diags[0]
    );

    // One override per flow across the project.
    let (dir, mine) = shared_and_mine(
        "version: 1\ninclude: [../shared]\noverrides:\n  flows:\n    shared_sync: { enabled: false }\n",
    );
    std::fs::write(
        dir.path().join("shared/more.yaml"),
        "overrides:\n  flows:\n    shared_sync: { enabled: true }\n",
    )
    .unwrap();
    let (_, diags) = check(std::slice::from_ref(&mine));
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].code.as_str(), "E009", "{}", diags[0]);

    // Declaring it again is still refused, with the way out.
    let (_dir, mine) = shared_and_mine(
        "version: 1\ninclude: [../shared]\nflows:\n  shared_sync:\n    entity: product\n    \
         from: shop\n    to: shop\n    mode: update\n    enabled: false\n",
    );
    let (_, diags) = check(std::slice::from_ref(&mine));
    let d = diags.iter().find(|d| d.code.as_str() == "E009").unwrap();
    let text = d.to_string();
    assert!(text.contains("overrides.flows.shared_sync"), "{text}");
    assert!(text.contains("only: [systems, entities]"), "{text}");
}

/// Issue 18.4: an override of a flow nobody declares is refused by `validate`, exit 78, with
/// its code, place and the flow meant.
#[test]
fn an_override_of_an_unknown_flow_is_refused() {
    let (_dir, mine) = shared_and_mine(
        "version: 1\ninclude: [../shared]\noverrides:\n  flows:\n    shared_synk:\n      \
         enabled: false\n",
    );
    let outside = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_erpsync"))
        .args(["validate", mine.to_str().unwrap()])
        .current_dir(outside.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let head = format!("{}:5:5: error[E008]", mine.join("mine.yaml").display());
    assert!(stderr.starts_with(&head), "expected `{head}` in\n{stderr}");
    assert!(
        stderr.contains("no flow `shared_synk` to override"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `shared_sync`"), "{stderr}");
    assert!(stderr.contains("1 problem found"), "{stderr}");
}

/// An editor reading the schema sees, at the mapping fields, the `$parent` and `$target` paths
/// and `merge`; in `$defs`, every helper a template may call with the arguments `validate`
/// demands; and at each template-bearing place, the names its templates see.
#[test]
fn schema_describes_mapping_paths_helpers_and_template_scopes() {
    use erpsync::config::model::FieldMapConfig;
    use erpsync::expr::{Template, helper_arities, helper_names, scope};
    use serde_json::Value;

    let committed = std::fs::read_to_string(root().join("schemas/flow.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&committed).unwrap();
    let defs = &schema["$defs"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();

    // (a) mapping fields: `$parent` in read mappings, `$target` and `merge` in write mappings.
    let field_map = text(&defs["FieldMapConfig"]["description"]);
    for needle in ["$parent.", "$target.", "{{parent.", "{{target."] {
        assert!(field_map.contains(needle), "{needle}: {field_map}");
    }
    let path_examples = defs["FieldSpecConfig"]["properties"]["path"]["examples"].to_string();
    assert!(
        path_examples.contains("$parent.") && path_examples.contains("$target."),
        "{path_examples}"
    );
    let merge = &defs["FieldSpecConfig"]["properties"]["merge"];
    assert!(
        text(&merge["description"]).contains("write mapping"),
        "{merge}"
    );
    assert!(
        merge["examples"]
            .as_array()
            .is_some_and(|e| e.contains(&Value::Bool(true)))
    );
    let entity = &defs["SystemEntityConfig"]["properties"];
    for (mapping, scope_name, must) in [
        ("read", "parent", "$parent."),
        ("write", "target", "$target."),
    ] {
        let desc = text(&entity[mapping]["description"]);
        assert!(
            desc.contains(&format!("`{scope_name}`")),
            "{mapping}: {desc}"
        );
        let each = &entity[mapping]["additionalProperties"];
        assert!(
            text(&each["description"]).contains(must),
            "{mapping}: {each}"
        );
        let examples = each["examples"]
            .as_array()
            .expect("examples of mapping entries");
        assert!(examples.iter().any(|e| text(e).starts_with(must)), "{each}");
        // Every example an editor offers is a mapping entry the loader accepts.
        for e in examples {
            serde_json::from_value::<FieldMapConfig>(e.clone())
                .unwrap_or_else(|err| panic!("{mapping} example {e}: {err}"));
        }
    }
    let write_examples = entity["write"]["additionalProperties"]["examples"].to_string();
    assert!(write_examples.contains("\"merge\""), "{write_examples}");

    // (b) helpers: exactly those templates may call, with the arguments they need.
    let helpers = defs["TemplateHelper"]["oneOf"]
        .as_array()
        .expect("helper list");
    let consts: Vec<String> = helpers.iter().map(|h| text(&h["const"])).collect();
    assert_eq!(consts, helper_names());
    for ((name, need), h) in helper_arities().into_iter().zip(helpers) {
        assert_eq!(h["x-min-args"], need, "{name}");
        let call = |n: usize| format!("{{{{json ({name}{})}}}}", " x".repeat(n));
        assert!(Template::compile(&call(need)).is_ok(), "{name} with {need}");
        if need > 0 {
            assert!(
                Template::compile(&call(need - 1)).is_err(),
                "{name} with {} accepted",
                need - 1
            );
        }
    }
    let op_path = text(&defs["OperationConfig"]["properties"]["path"]["description"]);
    for name in helper_names() {
        assert!(op_path.contains(&format!("`{name}`")), "{name}: {op_path}");
    }

    // (c) template scopes, per place.
    for name in scope::OPERATION {
        assert!(op_path.contains(&format!("`{name}`")), "{name}: {op_path}");
    }
    assert!(
        defs["OperationConfig"]["properties"]["path"]["examples"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
    for field in ["query", "headers", "body"] {
        let d = text(&defs["OperationConfig"]["properties"][field]["description"]);
        assert!(d.contains("Template scope: `record`, `id`"), "{field}: {d}");
    }
    for field in ["path", "query", "headers", "body", "if"] {
        let d = text(&defs["StepConfig"]["properties"][field]["description"]);
        assert!(d.contains("`steps.NAME.status`"), "step {field}: {d}");
    }
    let id = text(&entity["id"]["description"]);
    assert!(id.contains("`parent`"), "{id}");
    let message = text(&defs["ErrorRuleConfig"]["properties"]["message"]["description"]);
    assert!(
        message.contains("Template scope: `body`, `status`"),
        "{message}"
    );
    let key = text(&defs["WebhookConfig"]["properties"]["key"]["description"]);
    assert!(
        key.contains("Template scope: the delivered payload only"),
        "{key}"
    );
}

/// An include that cannot be read is the one problem told about the names it would have
/// declared: the flows that use its system and entity are not reported as naming unknown
/// ones (each would be an echo of the include), the include says how many were left out, and
/// a problem of another kind in the same file is still reported.
#[test]
fn a_missing_include_is_told_once_not_echoed_by_every_name_it_declared() {
    let (_dir, mine) = shared_and_mine(&format!(
        "version: 1\ninclude: [../sharde]\n{}",
        OWN_FLOW.replace("mode: update", "mode: update\n    direciton: one_way")
    ));
    let (project, diags) = check(std::slice::from_ref(&mine));
    assert!(project.is_none());
    let include = diags
        .iter()
        .find(|d| d.path == "include.0")
        .unwrap_or_else(|| panic!("{diags:#?}"));
    assert_eq!(include.code, erpsync::config::diagnostic::Code::Io);
    let help = include.help.as_deref().unwrap_or_default();
    assert!(
        help.starts_with("3 problems of unknown names are not shown"),
        "{include}"
    );
    assert!(
        diags
            .iter()
            .all(|d| d.code != erpsync::config::diagnostic::Code::UnknownName),
        "{diags:#?}"
    );
    assert!(
        diags.iter().any(|d| d.path == "flows.own_sync.direciton"),
        "{diags:#?}"
    );
    assert_eq!(diags.len(), 2, "{diags:#?}");

    // Read, the same include leaves nothing unknown and the flow is checked in full.
    let (_dir, mine) = shared_and_mine(&format!("version: 1\ninclude: [../shared]\n{OWN_FLOW}"));
    let (project, diags) = check(std::slice::from_ref(&mine));
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(scheduled(&project.unwrap()), ["own_sync", "shared_sync"]);
}
