//! Reads a project (flow files and folders of them) into one `ProjectConfig`, collecting every
//! problem instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::diagnostic::{Code, Diagnostic, Problem, did_you_mean};
use super::env::{EnvSource, substitute};
use super::model::{
    DaemonConfig, EntityConfig, FileConfig, FlowConfig, FlowOverrideConfig, IncludeConfig,
    ReconcileConfig, Section, StateConfig, SystemConfig,
};
use super::node::{self, LocatedDoc};
use super::schema_nav::allowed_keys;

/// One file of the project.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub doc: LocatedDoc,
}

impl SourceFile {
    /// A problem placed at the key of `path`.
    fn at_key(&self, path: &str, problem: Problem) -> Diagnostic {
        Diagnostic::new(problem, self.path.clone(), self.doc.key_pos(path), path)
    }
}

/// A declaration and where it was made.
#[derive(Debug, Clone)]
pub struct Decl<T> {
    pub value: T,
    /// Index into `ProjectConfig::files`.
    pub file: usize,
    /// Path of the declaration in its document, e.g. `flows.order_export`.
    pub path: String,
}

/// Every file of a project, merged.
#[derive(Debug, Default)]
pub struct ProjectConfig {
    /// Folder of the project (the first path given, or its folder when it is a file).
    pub root: PathBuf,
    pub files: Vec<SourceFile>,
    pub vars: Map<String, Value>,
    pub systems: BTreeMap<String, Decl<SystemConfig>>,
    pub entities: BTreeMap<String, Decl<EntityConfig>>,
    pub flows: BTreeMap<String, Decl<FlowConfig>>,
    pub state: Option<Decl<StateConfig>>,
    pub daemon: Option<Decl<DaemonConfig>>,
    /// Declarations left out because they could not be read (`systems.x`); references to them
    /// are not reported again.
    pub broken: HashSet<String>,
    /// `overrides.flows`, already applied to `flows`.
    pub overrides: BTreeMap<String, Decl<FlowOverrideConfig>>,
    /// Values set by an override: (file, path of the declared value) → (file, path of the
    /// override). Diagnostics about such a value point at the override.
    pub overridden: HashMap<(usize, String), (usize, String)>,
}

impl ProjectConfig {
    /// A diagnostic pointing at the value at `path` of file `file`.
    pub fn at(&self, file: usize, path: &str, problem: Problem) -> Diagnostic {
        if let Some((ofile, opath)) = self.overridden.get(&(file, path.to_string())) {
            let f = &self.files[*ofile];
            return Diagnostic::new(problem, f.path.clone(), f.doc.value_pos(opath), opath);
        }
        let f = &self.files[file];
        Diagnostic::new(problem, f.path.clone(), f.doc.value_pos(path), path)
    }

    /// A diagnostic pointing at the key of `path`.
    pub(crate) fn at_key(&self, file: usize, path: &str, problem: Problem) -> Diagnostic {
        self.files[file].at_key(path, problem)
    }

    /// Whether a name refers to a declaration that was dropped for its own errors.
    pub(crate) fn is_broken(&self, section: &str, name: &str) -> bool {
        self.broken.contains(&format!("{section}.{name}"))
    }
}

/// Splits the given paths into projects. Files given together are one project; a folder that
/// holds flow files itself is one project; a folder that only holds sub-folders (like `flows/`)
/// is a collection, one project per sub-folder.
pub fn projects(paths: &[PathBuf]) -> Vec<Vec<PathBuf>> {
    let is_flow = |p: &Path| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    let mut out = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            if entries.iter().any(|e| e.is_file() && is_flow(e)) || entries.is_empty() {
                out.push(vec![p.clone()]);
            } else {
                out.extend(entries.into_iter().filter(|e| e.is_dir()).map(|e| vec![e]));
            }
        } else {
            files.push(p.clone());
        }
    }
    if !files.is_empty() {
        out.insert(0, files);
    }
    out
}

/// Lists the flow files below the given paths: `.yaml` and `.yml` files, sorted, folders
/// walked recursively.
pub(crate) fn flow_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let mut out = Vec::new();
    for p in paths {
        collect(p, &mut out, true)?;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn collect(
    p: &Path,
    out: &mut Vec<PathBuf>,
    explicit: bool,
) -> Result<(), (PathBuf, std::io::Error)> {
    let meta = std::fs::metadata(p).map_err(|e| (p.to_path_buf(), e))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| (p.to_path_buf(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            collect(&e, out, false)?;
        }
    } else if !explicit && is_test_material(p) {
        // Offline tests and their recorded exchanges live beside the flow files; they are
        // not flow files.
    } else if explicit
        || matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        )
    {
        out.push(p.to_path_buf());
    }
    Ok(())
}

/// Loads the project at `paths`. The result holds everything that could be read; the
/// diagnostics say what could not.
pub fn load(paths: &[PathBuf], env: &dyn EnvSource) -> (ProjectConfig, Vec<Diagnostic>) {
    let mut project = ProjectConfig {
        root: paths
            .first()
            .map(|p| {
                if p.is_dir() {
                    p.clone()
                } else {
                    p.parent().map(Path::to_path_buf).unwrap_or_default()
                }
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut diags = Vec::new();
    let files = match flow_files(paths) {
        Ok(f) => f,
        Err((path, e)) => {
            diags.push(Diagnostic::unreadable(path, e));
            return (project, diags);
        }
    };
    // Each file with the sections wanted from it; a file reached again (by another include)
    // gives only the sections not taken yet.
    let all: BTreeSet<Section> = Section::ALL.into_iter().collect();
    let mut queue: std::collections::VecDeque<(PathBuf, BTreeSet<Section>)> =
        files.into_iter().map(|f| (f, all.clone())).collect();
    let mut taken: HashMap<PathBuf, BTreeSet<Section>> = HashMap::new();
    while let Some((path, wanted)) = queue.pop_front() {
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let before = taken.entry(canonical).or_default();
        let again = !before.is_empty();
        let sections: BTreeSet<Section> = wanted.difference(before).copied().collect();
        if sections.is_empty() {
            continue;
        }
        before.extend(sections.iter().copied());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::unreadable(path, e));
                continue;
            }
        };
        let doc = match node::parse(&text) {
            Ok(d) => d,
            Err(e) => {
                let mut problem = Problem::yaml(e.message);
                problem.help = e.help;
                diags.push(Diagnostic::new(problem, path, e.pos, ""));
                continue;
            }
        };
        let index = project.files.len();
        project.files.push(SourceFile { path, doc });
        let includes = if again {
            // Its problems were reported the first time; only clashes of the newly taken
            // sections are new.
            let mut scratch = Vec::new();
            let includes = read_file(&mut project, index, env, &mut scratch, &sections);
            diags.extend(scratch.into_iter().filter(|d| d.code == Code::Duplicate));
            includes
        } else {
            read_file(&mut project, index, env, &mut diags, &sections)
        };
        let dir = project.files[index]
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for (i, inc) in includes.iter().enumerate() {
            // What an include brings is limited by its `only` and by what was wanted from
            // the including file.
            let wanted: BTreeSet<Section> = match inc.only() {
                Some(only) => only
                    .iter()
                    .copied()
                    .filter(|s| sections.contains(s))
                    .collect(),
                None => sections.clone(),
            };
            if wanted.is_empty() {
                continue;
            }
            match flow_files(&[dir.join(inc.path())]) {
                Ok(found) => queue.extend(found.into_iter().map(|f| (f, wanted.clone()))),
                Err((p, e)) => diags.push(project.at(
                    index,
                    &format!("include.{i}"),
                    Problem::io(format!("cannot include `{}`: {e}", p.display())),
                )),
            }
        }
    }
    apply_overrides(&mut project, &mut diags);
    (project, diags)
}

/// Applies `overrides.flows` to the declared flows; an override of a flow nobody declares is
/// an error.
fn apply_overrides(project: &mut ProjectConfig, diags: &mut Vec<Diagnostic>) {
    let overrides = std::mem::take(&mut project.overrides);
    for (name, o) in &overrides {
        let Some(flow) = project.flows.get_mut(name) else {
            if !project.is_broken("flows", name) {
                let known: Vec<&str> = project.flows.keys().map(String::as_str).collect();
                diags.push(
                    project.at_key(
                        o.file,
                        &o.path,
                        Problem::unresolved(format!("no flow `{name}` to override"))
                            .with_names(name, known),
                    ),
                );
            }
            continue;
        };
        let (file, base) = (flow.file, flow.path.clone());
        let f = &mut flow.value;
        let mut set = Vec::new();
        if let Some(enabled) = o.value.enabled {
            f.enabled = enabled;
            set.push("enabled");
        }
        if let Some(t) = &o.value.trigger {
            if let Some(s) = &t.schedule {
                f.trigger.schedule = Some(s.clone());
                set.push("trigger.schedule");
            }
            if let Some(tz) = &t.timezone {
                f.trigger.timezone = Some(tz.clone());
                set.push("trigger.timezone");
            }
        }
        if let Some(r) = &o.value.reconcile {
            match (&mut f.reconcile, &r.schedule) {
                (Some(rc), _) => {
                    if let Some(s) = &r.schedule {
                        rc.schedule = s.clone();
                        set.push("reconcile.schedule");
                    }
                    if let Some(c) = r.correct {
                        rc.correct = c;
                        set.push("reconcile.correct");
                    }
                }
                (None, Some(s)) => {
                    f.reconcile = Some(ReconcileConfig {
                        schedule: s.clone(),
                        correct: r.correct.unwrap_or(true),
                    });
                    set.extend(["reconcile", "reconcile.schedule", "reconcile.correct"]);
                }
                (None, None) => diags.push(project.at(
                    o.file,
                    &format!("{}.reconcile", o.path),
                    Problem::invalid(format!(
                        "flow `{name}` has no `reconcile`: give its `schedule`"
                    )),
                )),
            }
        }
        for sub in set {
            project.overridden.insert(
                (file, format!("{base}.{sub}")),
                (o.file, format!("{}.{sub}", o.path)),
            );
        }
    }
    project.overrides = overrides;
}

/// Reads the given sections of one parsed file into the project; returns its `include` list.
fn read_file(
    project: &mut ProjectConfig,
    index: usize,
    env: &dyn EnvSource,
    diags: &mut Vec<Diagnostic>,
    sections: &BTreeSet<Section>,
) -> Vec<IncludeConfig> {
    let mut value = project.files[index].doc.value.clone();
    if !value.is_object() {
        if value.is_null() {
            value = Value::Object(Map::new());
        } else {
            diags.push(project.at(
                index,
                "",
                Problem::invalid("a flow file must be a map with `systems`, `entities`, `flows`…"),
            ));
            return Vec::new();
        }
    }
    let mut problems = Vec::new();
    substitute_all(&mut value, "", env, &mut problems);
    for (path, message) in problems {
        diags.push(project.at(index, &path, Problem::secret(message)));
    }

    let mut removed = Vec::new();
    let file: FileConfig = loop {
        let mut ignored = Vec::new();
        match deserialize_tracking::<FileConfig>(&value, &mut ignored) {
            Ok(f) => {
                for path in ignored {
                    let (parent, key) = match path.rsplit_once('.') {
                        Some((p, k)) => (p.to_string(), k.to_string()),
                        None => (String::new(), path.clone()),
                    };
                    let segs: Vec<&str> = parent.split('.').filter(|s| !s.is_empty()).collect();
                    let known = allowed_keys(&value, &segs);
                    diags.push(project.at_key(
                        index,
                        &path,
                        Problem::unknown_key(&key, known.iter().map(String::as_str)),
                    ));
                }
                break f;
            }
            Err((path, message)) => {
                diags.push(type_error(project, index, &path, &message));
                let item = item_of(&path);
                if item.is_empty() || !remove(&mut value, &item) || removed.len() > 64 {
                    return Vec::new();
                }
                removed.push(item);
            }
        }
    };
    for item in removed {
        let segs: Vec<&str> = item.split('.').collect();
        match segs.as_slice() {
            [section, name] => {
                project.broken.insert(format!("{section}.{name}"));
            }
            [_, system, "operations", op] => {
                project.broken.insert(format!("operations.{system}.{op}"));
            }
            [_, system, "entities", e] => {
                project
                    .broken
                    .insert(format!("system_entities.{system}.{e}"));
            }
            _ => {}
        }
    }
    let includes = file.include.clone();
    let mut file = file;
    let has = |s: Section| sections.contains(&s);
    if !has(Section::Systems) {
        file.systems.clear();
    }
    if !has(Section::Entities) {
        file.entities.clear();
    }
    if !has(Section::Flows) {
        file.flows.clear();
        file.overrides.flows.clear();
    }
    if !has(Section::Vars) {
        file.vars.clear();
    }
    if !has(Section::State) {
        file.state = None;
    }
    if !has(Section::Daemon) {
        file.daemon = None;
    }
    merge(project, index, file, diags);
    includes
}

/// Deserializes, recording unknown keys; an error comes with its document path.
fn deserialize_tracking<T: DeserializeOwned>(
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<T, (String, String)> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value.clone(), &mut track);
    let result = serde_ignored::deserialize(de, |p| ignored.push(ignored_path(&p)));
    result.map_err(|e: serde_json::Error| (error_path(&track.path()), e.to_string()))
}

fn ignored_path(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => node::join(&ignored_path(parent), &index.to_string()),
        P::Map { parent, key } => node::join(&ignored_path(parent), key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

fn error_path(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            Segment::Seq { index } => out = node::join(&out, &index.to_string()),
            Segment::Map { key } => out = node::join(&out, key),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// A serde error turned into a diagnostic, with "did you mean" where serde lists the choices.
fn type_error(project: &ProjectConfig, index: usize, path: &str, message: &str) -> Diagnostic {
    // serde: "unknown variant `x`, expected one of `a`, `b`" / "unknown field `x`, expected …"
    let parse_choices = |m: &str| -> Option<(String, Vec<String>)> {
        let start = m.find('`')? + 1;
        let end = start + m[start..].find('`')?;
        let wrong = m[start..end].to_string();
        let rest = &m[end + 1..];
        let names = rest
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect::<Vec<_>>();
        Some((wrong, names))
    };
    let message = message.split(" at line ").next().unwrap_or(message);
    if message.starts_with("unknown field")
        && let Some((wrong, names)) = parse_choices(message)
    {
        let key_path = node::join(path, &wrong);
        return project.at_key(
            index,
            &key_path,
            Problem::unknown_key(&wrong, names.iter().map(String::as_str)),
        );
    }
    // A required key reported missing is often a misspelt one: point at the misspelling.
    if message.starts_with("missing field")
        && let Some((missing, _)) = parse_choices(message)
    {
        let doc = &project.files[index].doc.value;
        let segs: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
        let here = segs.iter().try_fold(doc, |v, s| v.get(*s));
        if let Some(Value::Object(map)) = here {
            let known = allowed_keys(doc, &segs);
            let candidates = vec![missing.clone()];
            if let Some(wrong) = map
                .keys()
                .find(|k| !known.contains(k) && did_you_mean(k, &candidates).is_some())
            {
                let key_path = node::join(path, wrong);
                return project.at_key(
                    index,
                    &key_path,
                    Problem::misspelt_key(wrong, &missing, known.iter().map(String::as_str)),
                );
            }
        }
    }
    if message.starts_with("unknown variant")
        && let Some((wrong, names)) = parse_choices(message)
    {
        return project.at(
            index,
            path,
            Problem::unknown_value(&wrong, names.iter().map(String::as_str)),
        );
    }
    project.at(index, path, Problem::invalid(message))
}

/// The declaration that contains `path`: what is dropped when it cannot be read.
fn item_of(path: &str) -> String {
    let segs: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let depth = match segs.as_slice() {
        ["systems", _, "operations" | "entities", _, ..] => 4,
        ["systems" | "entities" | "flows" | "vars", _, ..] => 2,
        ["overrides", "flows", _, ..] => 3,
        ["daemon", "webhooks", _, ..] => 3,
        _ => 1,
    };
    segs[..depth.min(segs.len())].join(".")
}

fn remove(value: &mut Value, path: &str) -> bool {
    let segs: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut v = value;
    for s in parents {
        v = match v.get_mut(*s) {
            Some(c) => c,
            None => return false,
        };
    }
    v.as_object_mut().and_then(|m| m.remove(*last)).is_some()
}

/// Keys whose values are not secrets even when they come from the environment.
const NOT_SECRET_KEYS: &[&str] = &["base_url", "path", "listen", "url", "token_url", "start"];

fn substitute_all(
    value: &mut Value,
    path: &str,
    env: &dyn EnvSource,
    problems: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(s) => {
            let mut substituted = Vec::new();
            match substitute(s, env, &mut substituted) {
                Ok(std::borrow::Cow::Owned(new)) => {
                    let key = path.rsplit('.').next().unwrap_or("");
                    if !NOT_SECRET_KEYS.contains(&key) {
                        // Numbers (ports, rates) are settings, not secrets.
                        for secret in substituted.iter().filter(|v| v.parse::<f64>().is_err()) {
                            crate::redact::register(secret);
                        }
                    }
                    // A value that is one whole reference takes the type of what it stands
                    // for, so `per_second: ${RATE:-2.5}` is a number.
                    let whole =
                        s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
                    *value = match (whole, new.parse::<serde_json::Number>(), new.as_str()) {
                        (true, Ok(n), _) => Value::Number(n),
                        (true, _, "true") => Value::Bool(true),
                        (true, _, "false") => Value::Bool(false),
                        _ => Value::String(new),
                    };
                }
                Ok(_) => {}
                Err(e) => problems.push((path.to_string(), e.to_string())),
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                substitute_all(v, &node::join(path, &i.to_string()), env, problems);
            }
        }
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                substitute_all(v, &node::join(path, k), env, problems);
            }
        }
        _ => {}
    }
}

fn merge(project: &mut ProjectConfig, index: usize, file: FileConfig, diags: &mut Vec<Diagnostic>) {
    fn put<T>(
        project_files: &[SourceFile],
        map: &mut BTreeMap<String, Decl<T>>,
        section: &str,
        index: usize,
        items: BTreeMap<String, T>,
        diags: &mut Vec<Diagnostic>,
    ) {
        for (name, value) in items {
            let path = format!("{section}.{name}");
            if let Some(prev) = map.get(&name) {
                let elsewhere = project_files[prev.file].path.display().to_string();
                let mut problem = Problem::duplicate(None, &name, &elsewhere);
                if section == "flows" {
                    problem = problem.with_help(format!(
                        "to change an included flow, set `enabled`, `trigger.schedule` or \
                         `reconcile` under `overrides.flows.{name}` instead of declaring it \
                         again; to leave out an included project's flows, include it with \
                         `{{path: …, only: [systems, entities]}}`"
                    ));
                }
                diags.push(project_files[index].at_key(&path, problem));
                continue;
            }
            map.insert(
                name,
                Decl {
                    value,
                    file: index,
                    path,
                },
            );
        }
    }
    let files = std::mem::take(&mut project.files);
    put(
        &files,
        &mut project.systems,
        "systems",
        index,
        file.systems,
        diags,
    );
    put(
        &files,
        &mut project.entities,
        "entities",
        index,
        file.entities,
        diags,
    );
    put(
        &files,
        &mut project.flows,
        "flows",
        index,
        file.flows,
        diags,
    );
    put(
        &files,
        &mut project.overrides,
        "overrides.flows",
        index,
        file.overrides.flows,
        diags,
    );
    for (k, v) in file.vars {
        if project.vars.contains_key(&k) {
            let path = format!("vars.{k}");
            diags.push(files[index].at_key(
                &path,
                Problem::duplicate(Some("variable"), &k, "another file"),
            ));
        } else {
            project.vars.insert(k, v);
        }
    }
    let duplicate =
        |name: &str| files[index].at_key(name, Problem::duplicate(None, name, "another file"));
    // `state` and `daemon` may each be declared once across the project.
    fn single<T>(slot: &mut Option<Decl<T>>, value: Option<T>, index: usize, name: &str) -> bool {
        match (slot.is_some(), value) {
            (true, Some(_)) => false,
            (false, Some(v)) => {
                *slot = Some(Decl {
                    value: v,
                    file: index,
                    path: name.into(),
                });
                true
            }
            (_, None) => true,
        }
    }
    if !single(&mut project.state, file.state, index, "state") {
        diags.push(duplicate("state"));
    }
    if !single(&mut project.daemon, file.daemon, index, "daemon") {
        diags.push(duplicate("daemon"));
    }
    project.files = files;
}

/// Whether a path names a test file (`*.test.yaml`, `*.test.yml`).
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

/// Whether a path names an exchanges file (`*.exchanges.yaml`, `*.exchanges.yml`): what
/// `call --record` writes, served by a test's `exchanges_from`.
pub fn is_exchanges_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".exchanges.yaml") || n.ends_with(".exchanges.yml"))
}

/// Whether a file beside the flow files belongs to the tests, not to the flows.
pub fn is_test_material(path: &Path) -> bool {
    is_test_file(path) || is_exchanges_file(path)
}
