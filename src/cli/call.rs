//! `erpsync call SYSTEM OPERATION`: runs one operation of a project against the live system
//! and prints the request (secrets masked), the raw response, the records the operation
//! extracts and each record mapped to its canonical entity with where every field came from.
//! Writing a mapping against a real API starts here. Only reads go out unless
//! `--allow-write`; `--record FILE` keeps the exchanges for `erpsync test`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::{Map, Value};

use super::common::{load_project, usage};
use super::output::FormatArgs;
use erpsync::authoring::exchange::{BASE_URL_PLACEHOLDER, replace_in_json};
use erpsync::authoring::proxy::Proxies;
use erpsync::authoring::testfile::TestFileConfig;
use erpsync::compile::{MapEnv, NoRefs, Project, SystemDef};
use erpsync::connector::{CallInput, HttpSystem};

/// Arguments of `erpsync call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The system, as the project names it.
    pub system: String,
    /// One of the system's operations.
    pub operation: String,
    /// The project: its folder or flow files (default: the current folder).
    #[arg(long, short = 'p', value_name = "PATH", default_value = ".")]
    pub project: Vec<PathBuf>,
    /// `{{key}}` of the operation's templates (a lookup's match key).
    #[arg(long)]
    pub key: Option<String>,
    /// `{{id}}` of the operation's templates (the system's id of a record).
    #[arg(long)]
    pub id: Option<String>,
    /// A field of `{{record}}`, the payload (dotted names nest; a value that parses as
    /// JSON keeps its type); repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// `{{since}}` of an incremental listing (RFC 3339 or `YYYY-MM-DD`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Pages of a paginated listing to read.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pages: u32,
    /// Map the records to this entity (default: the entities whose roles use the operation).
    #[arg(long)]
    pub entity: Option<String>,
    /// Send an operation that writes (anything but GET) to the live system.
    #[arg(long)]
    pub allow_write: bool,
    /// Write the exchanges (secrets masked) to FILE, in the `exchanges` form of a test file;
    /// name it `*.exchanges.yaml` to keep it in the project (a test's `exchanges_from`
    /// serves it).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub format: FormatArgs,
}

/// The payload `--set` builds.
fn payload(sets: &[String]) -> anyhow::Result<Value> {
    let mut record = Value::Object(Map::new());
    for s in sets {
        let Some((name, raw)) = s.split_once('=') else {
            return Err(usage(format!("`--set {s}`: expected NAME=VALUE")));
        };
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        let mut cur = &mut record;
        let parts: Vec<&str> = name.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let Value::Object(m) = cur else { break };
            if i + 1 == parts.len() {
                m.insert(part.to_string(), value.clone());
                break;
            }
            cur = m
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
        }
    }
    Ok(record)
}

fn parse_since(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    erpsync::expr::parse_datetime(text)
        .ok_or_else(|| usage(format!("`--since {text}`: expected RFC 3339 or YYYY-MM-DD")))
}

/// The entities of a system whose roles use an operation.
fn entities_using<'a>(def: &'a SystemDef, op: &str) -> Vec<&'a str> {
    def.entities
        .iter()
        .filter(|(_, e)| {
            [&e.list, &e.changes, &e.lookup, &e.get, &e.create, &e.update]
                .iter()
                .any(|r| r.as_deref() == Some(op))
                || e.actions.values().any(|a| a == op)
        })
        .map(|(n, _)| n.as_str())
        .collect()
}

/// One record mapped to an entity.
fn map_record(
    project: &Project,
    def: &SystemDef,
    http: &HttpSystem,
    entity: &str,
    native: &Value,
    parent: Option<&Value>,
) -> Value {
    let (Some(ent), Some(canon_ent)) = (def.entities.get(entity), project.entities.get(entity))
    else {
        return serde_json::json!({"entity": entity, "error": format!("system `{}` has no entity `{entity}`", def.name)});
    };
    let env = MapEnv {
        vars: &ent.tables,
        system: http.system_vars(),
        refs: &NoRefs,
    };
    let id = ent.id.of_in(native, parent);
    let mapped = ent
        .read
        .apply_in(native, parent, &env, None)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            erpsync::engine::canonical::normalise(canon_ent, m).map_err(|e| e.to_string())
        });
    match mapped {
        Err(e) => serde_json::json!({"entity": entity, "id": id, "error": e}),
        Ok(canon) => {
            let fields: Vec<Value> = ent
                .read
                .sources()
                .into_iter()
                .map(|(field, from)| {
                    let top = field.split('.').next().unwrap_or(&field).to_string();
                    serde_json::json!({
                        "field": field,
                        "value": canon.get(&top).cloned().unwrap_or(Value::Null),
                        "from": from,
                    })
                })
                .collect();
            serde_json::json!({
                "entity": entity,
                "id": id,
                "key": erpsync::engine::canonical::field_text(&canon, &canon_ent.key),
                "canonical": canon,
                "fields": fields,
            })
        }
    }
}

pub fn run(args: CallArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(&args.project)?;
    let Some(def) = project.systems.get(&args.system) else {
        let known: Vec<&str> = project.systems.keys().map(String::as_str).collect();
        return Err(usage(format!(
            "unknown system `{}` (known: {})",
            args.system,
            known.join(", ")
        )));
    };
    let Some(op) = def.operations.get(&args.operation) else {
        let known: Vec<&str> = def.operations.keys().map(String::as_str).collect();
        let near = known
            .iter()
            .min_by_key(|k| strsim::levenshtein(k, &args.operation))
            .filter(|k| strsim::levenshtein(k, &args.operation) <= 3)
            .map(|k| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        return Err(usage(format!(
            "system `{}` has no operation `{}`{near} (known: {})",
            args.system,
            args.operation,
            known.join(", ")
        )));
    };
    if let Some(method) = op.write_method()
        && !args.allow_write
    {
        return Err(usage(format!(
            "`{}.{}` is a {:?} request: it may change data in the live system; pass \
             `--allow-write` to send it",
            args.system, args.operation, method
        )));
    }
    let entities: Vec<String> = match &args.entity {
        Some(e) => vec![e.clone()],
        None => entities_using(def, &args.operation)
            .into_iter()
            .map(str::to_string)
            .collect(),
    };
    let input = CallInput {
        record: payload(&args.set)?,
        id: args.id.clone(),
        key: args.key.clone(),
        since: args.since.as_deref().map(parse_since).transpose()?,
        ..Default::default()
    };
    let upstream = def.base_url().to_string();
    let rt = tokio::runtime::Runtime::new()?;
    let shown_base = erpsync::redact::redact(upstream.trim_end_matches('/')).into_owned();
    let (records, parents, error, exchanges, http) = rt.block_on(async {
        let proxies = Proxies::start(&BTreeMap::from([(args.system.clone(), upstream)])).await?;
        let redirected = erpsync::authoring::redirect(&project, &proxies.urls)?;
        let rdef = redirected
            .systems
            .get(&args.system)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("system `{}` vanished", args.system))?;
        let http = HttpSystem::new(rdef.spec.clone(), Arc::new(erpsync::clock::SystemClock))?;
        let announce: erpsync::connector::WaitAnnouncer =
            Arc::new(|n: &erpsync::connector::WaitNotice| eprintln!("erpsync: {n}"));
        http.set_waits(Some(std::time::Duration::from_secs(60)), Some(announce));
        let mut records = Vec::new();
        // Each record's parent when the `records` path is nested.
        let mut parents: Vec<Option<Arc<Value>>> = Vec::new();
        let mut error = None;
        if op.paginated() {
            let mut pages = std::pin::pin!(http.list(&args.operation, input.clone()));
            let mut n = 0;
            while n < args.pages.max(1) {
                match pages.next().await {
                    None => break,
                    Some(Ok(page)) => {
                        parents.resize(records.len(), None);
                        parents.extend(page.parents);
                        records.extend(page.records);
                    }
                    Some(Err(e)) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
                n += 1;
            }
        } else {
            match http.call(&args.operation, &input).await {
                Ok(out) => {
                    if !out.records.is_empty() {
                        records = out.records;
                        parents = out.parents;
                    } else if let Some(r) = out.record {
                        records.push(r);
                    }
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
        let exchanges = proxies.recording.exchanges();
        Ok::<_, anyhow::Error>((records, parents, error, exchanges, http))
    })?;
    let records: Vec<Value> = records.iter().map(erpsync::redact::redact_json).collect();
    let parents: Vec<Option<Value>> = parents
        .iter()
        .map(|p| p.as_deref().map(erpsync::redact::redact_json))
        .collect();
    let mapped: Vec<Value> = records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            let parent = parents.get(i).and_then(Option::as_ref);
            entities
                .iter()
                .map(|e| map_record(&project, def, &http, e, r, parent))
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some(file) = &args.record {
        use erpsync::authoring::testfile::is_test_material;
        let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && !is_test_material(file) {
            crate::errln!(
                "note: name recordings `*.exchanges.yaml` (or `*.test.yaml`) to keep them beside \
                 the flow files: other YAML files in a project folder are read as flow files"
            );
        }
        let doc = TestFileConfig {
            exchanges: exchanges.iter().map(|s| s.exchange.clone()).collect(),
            ..Default::default()
        };
        write_yaml(file, &doc)?;
        crate::errln!(
            "wrote {} exchange(s) to {}",
            exchanges.len(),
            file.display()
        );
    }
    let shown: Vec<Value> = exchanges
        .iter()
        .map(|s| {
            serde_json::json!({
                "method": s.exchange.request.method,
                "url": s.url,
                "request_headers": s.exchange.request.headers,
                "request_body": s.exchange.request.body,
                "status": s.exchange.response.status,
                "response_headers": s.exchange.response.headers.iter().map(|(k, v)| {
                    (k.clone(), v.replace(BASE_URL_PLACEHOLDER, &shown_base))
                }).collect::<BTreeMap<_, _>>(),
                // As the system sent it: its own links, not the recording's placeholder.
                "response_body": replace_in_json(&s.exchange.response.body, BASE_URL_PLACEHOLDER, &shown_base),
                "duration_ms": s.duration.as_millis() as u64,
            })
        })
        .collect();
    if args.format.is_json() {
        super::output::json(&serde_json::json!({
            "system": args.system,
            "operation": args.operation,
            "ok": error.is_none(),
            "error": error.as_deref().map(|e| erpsync::redact::redact(e).into_owned()),
            "exchanges": shown,
            "records": records,
            "mapped": mapped,
        }))?;
    } else {
        print_text(
            &args,
            &shown,
            &records,
            &mapped,
            &entities,
            error.as_deref(),
        );
    }
    Ok(if error.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILED)
    })
}

fn pretty(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_text(
    args: &CallArgs,
    exchanges: &[Value],
    records: &[Value],
    mapped: &[Value],
    entities: &[String],
    error: Option<&str>,
) {
    for (i, x) in exchanges.iter().enumerate() {
        crate::outln!(
            "── request {} ─ {} {}",
            i + 1,
            x["method"].as_str().unwrap_or(""),
            x["url"].as_str().unwrap_or("")
        );
        if let Some(h) = x["request_headers"].as_object() {
            for (k, v) in h {
                crate::outln!("  {k}: {}", v.as_str().unwrap_or(""));
            }
        }
        if !x["request_body"].is_null() {
            crate::outln!("{}", indent(&pretty(&x["request_body"]), "  "));
        }
        crate::outln!(
            "── response {} ─ {} ({} ms)",
            i + 1,
            x["status"],
            x["duration_ms"]
        );
        if let Some(h) = x["response_headers"].as_object() {
            for (k, v) in h {
                crate::outln!("  {k}: {}", v.as_str().unwrap_or(""));
            }
        }
        if !x["response_body"].is_null() {
            crate::outln!("{}", indent(&pretty(&x["response_body"]), "  "));
        }
    }
    crate::outln!(
        "── records ─ {} extracted by `{}.{}`",
        records.len(),
        args.system,
        args.operation
    );
    for (i, r) in records.iter().enumerate() {
        crate::outln!("  [{}] {}", i + 1, erpsync::authoring::exchange::short(r));
    }
    if entities.is_empty() {
        crate::outln!(
            "── mapped ─ no entity of `{}` uses `{}` (name one with `--entity`)",
            args.system,
            args.operation
        );
    }
    for (i, m) in mapped.iter().enumerate() {
        let entity = m["entity"].as_str().unwrap_or("");
        let head = format!(
            "── mapped [{}] ─ `{entity}`{}{}",
            i / entities.len().max(1) + 1,
            m["key"]
                .as_str()
                .map(|k| format!(" key {k}"))
                .unwrap_or_default(),
            m["id"]
                .as_str()
                .map(|k| format!(", id {k}"))
                .unwrap_or_default(),
        );
        crate::outln!("{head}");
        if let Some(e) = m["error"].as_str() {
            crate::outln!("  error: {e}");
            continue;
        }
        let fields = m["fields"].as_array().cloned().unwrap_or_default();
        let width = fields
            .iter()
            .filter_map(|f| f["field"].as_str().map(str::len))
            .max()
            .unwrap_or(0);
        for f in &fields {
            crate::outln!(
                "  {:<width$} = {:<24}  ← {}",
                f["field"].as_str().unwrap_or(""),
                erpsync::authoring::exchange::short(&f["value"]),
                f["from"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(e) = error {
        crate::outln!("── error ─ {}", erpsync::redact::redact(e));
    }
}

/// Writes a test-file document as YAML, creating its folder.
pub fn write_yaml(file: &std::path::Path, doc: &TestFileConfig) -> anyhow::Result<()> {
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_saphyr::to_string(doc)?;
    std::fs::write(
        file,
        format!("# Recorded by erpsync; secrets are masked (`***`).\n{text}"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_builds_the_payload_with_nesting_and_json_types() {
        let v = payload(&[
            "sku=A-1".into(),
            "price=12.5".into(),
            "client.name=Ana Pop".into(),
            "client.vat=false".into(),
            "tags=[\"x\"]".into(),
        ])
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"sku": "A-1", "price": 12.5, "client": {"name": "Ana Pop", "vat": false}, "tags": ["x"]})
        );
        assert!(payload(&["no-equals".into()]).is_err());
    }
}
