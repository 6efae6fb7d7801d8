//! Reads a project (flow files and folders of them) into one `ProjectConfig`, collecting every
//! problem instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::diagnostic::{Code, Diagnostic, Problem, did_you_mean};
use super::env::{EnvSource, SecretResolveError, substitute};
use super::model::{
    DaemonConfig, EntityConfig, FileConfig, FlowConfig, FlowOverrideConfig, IncludeConfig,
    ReconcileConfig, ReconcileOverrideConfig, Section, StateConfig, SystemConfig,
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
        root: project_root(paths),
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
    let mut queue = FileQueue::new(files);
    while let Some((path, sections, again)) = queue.next() {
        let doc = match read_document(&path) {
            Ok(doc) => doc,
            Err(e) => {
                diags.push(e.into_diagnostic(path));
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
        queue_includes(
            &project, index, &includes, &sections, &mut queue, &mut diags,
        );
    }
    apply_overrides(&mut project, &mut diags);
    (project, diags)
}

/// Folder of the project: the first path given, or its folder when it is a file.
fn project_root(paths: &[PathBuf]) -> PathBuf {
    let Some(first) = paths.first() else {
        return PathBuf::new();
    };
    if first.is_dir() {
        first.clone()
    } else {
        first.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// The files still to read, each with the sections wanted from it. A file reached again (by
/// another include) gives only the sections not taken from it yet.
struct FileQueue {
    pending: VecDeque<(PathBuf, BTreeSet<Section>)>,
    taken: HashMap<PathBuf, BTreeSet<Section>>,
}

impl FileQueue {
    fn new(files: Vec<PathBuf>) -> FileQueue {
        let all: BTreeSet<Section> = Section::ALL.into_iter().collect();
        FileQueue {
            pending: files.into_iter().map(|f| (f, all.clone())).collect(),
            taken: HashMap::new(),
        }
    }

    fn push(&mut self, path: PathBuf, wanted: BTreeSet<Section>) {
        self.pending.push_back((path, wanted));
    }

    /// The next file with something new to take: its path, the sections to take, and whether
    /// it was read before.
    fn next(&mut self) -> Option<(PathBuf, BTreeSet<Section>, bool)> {
        while let Some((path, wanted)) = self.pending.pop_front() {
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            let before = self.taken.entry(canonical).or_default();
            let again = !before.is_empty();
            let sections: BTreeSet<Section> = wanted.difference(before).copied().collect();
            if !sections.is_empty() {
                before.extend(sections.iter().copied());
                return Some((path, sections, again));
            }
        }
        None
    }
}

/// Why a flow file gives no document.
#[derive(Debug, thiserror::Error)]
enum DocumentReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{}", .0.message)]
    Yaml(node::YamlParseError),
}

impl DocumentReadError {
    fn into_diagnostic(self, path: PathBuf) -> Diagnostic {
        match self {
            DocumentReadError::Io(e) => Diagnostic::unreadable(path, e),
            DocumentReadError::Yaml(e) => {
                let mut problem = Problem::yaml(e.message);
                problem.help = e.help;
                Diagnostic::new(problem, path, e.pos, "")
            }
        }
    }
}

/// Reads and parses one flow file.
fn read_document(path: &Path) -> Result<LocatedDoc, DocumentReadError> {
    let text = std::fs::read_to_string(path)?;
    node::parse(&text).map_err(DocumentReadError::Yaml)
}

/// Queues the files a file includes, each with what is wanted from it: what its `only`
/// allows of what was wanted from the including file.
fn queue_includes(
    project: &ProjectConfig,
    index: usize,
    includes: &[IncludeConfig],
    sections: &BTreeSet<Section>,
    queue: &mut FileQueue,
    diags: &mut Vec<Diagnostic>,
) {
    let dir = project.files[index]
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for (i, inc) in includes.iter().enumerate() {
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
            Ok(found) => found
                .into_iter()
                .for_each(|f| queue.push(f, wanted.clone())),
            Err((p, e)) => diags.push(project.at(
                index,
                &format!("include.{i}"),
                Problem::io(format!("cannot include `{}`: {e}", p.display())),
            )),
        }
    }
}

/// Applies `overrides.flows` to the declared flows; an override of a flow nobody declares is
/// an error.
fn apply_overrides(project: &mut ProjectConfig, diags: &mut Vec<Diagnostic>) {
    let overrides = std::mem::take(&mut project.overrides);
    for (name, o) in &overrides {
        if project.flows.contains_key(name) {
            apply_override(project, name, o, diags);
        } else if !project.is_broken("flows", name) {
            let known: Vec<&str> = project.flows.keys().map(String::as_str).collect();
            let problem = Problem::unresolved(format!("no flow `{name}` to override"))
                .with_names(name, known);
            diags.push(project.at_key(o.file, &o.path, problem));
        }
    }
    project.overrides = overrides;
}

/// Applies one override to its flow, and remembers which values it set.
fn apply_override(
    project: &mut ProjectConfig,
    name: &str,
    o: &Decl<FlowOverrideConfig>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(flow) = project.flows.get_mut(name) else {
        return;
    };
    let (file, base) = (flow.file, flow.path.clone());
    let mut set = override_settings(&mut flow.value, &o.value);
    if let Some(r) = &o.value.reconcile {
        match override_reconcile(&mut flow.value, r) {
            Some(places) => set.extend(places),
            None => diags.push(project.at(
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

/// Sets `enabled` and `trigger` from an override; returns the places set.
fn override_settings(f: &mut FlowConfig, o: &FlowOverrideConfig) -> Vec<&'static str> {
    let mut set = Vec::new();
    if let Some(enabled) = o.enabled {
        f.enabled = enabled;
        set.push("enabled");
    }
    if let Some(t) = &o.trigger {
        if let Some(s) = &t.schedule {
            f.trigger.schedule = Some(s.clone());
            set.push("trigger.schedule");
        }
        if let Some(tz) = &t.timezone {
            f.trigger.timezone = Some(tz.clone());
            set.push("trigger.timezone");
        }
    }
    set
}

/// Sets `reconcile` from an override; returns the places set, or `None` when the flow has no
/// `reconcile` and the override gives no `schedule` to make one.
fn override_reconcile(
    f: &mut FlowConfig,
    r: &ReconcileOverrideConfig,
) -> Option<Vec<&'static str>> {
    let mut set = Vec::new();
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
        (None, None) => return None,
    }
    Some(set)
}

/// Reads the given sections of one parsed file into the project; returns its `include` list.
fn read_file(
    project: &mut ProjectConfig,
    index: usize,
    env: &dyn EnvSource,
    diags: &mut Vec<Diagnostic>,
    sections: &BTreeSet<Section>,
) -> Vec<IncludeConfig> {
    let Some(mut value) = document_map(project, index, diags) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    substitute_all(&mut value, "", env, &mut problems);
    for (path, message) in problems {
        diags.push(project.at(index, &path, Problem::secret(message)));
    }
    let Some(mut file) = deserialize_file(project, index, value, diags) else {
        return Vec::new();
    };
    let includes = file.include.clone();
    keep_sections(&mut file, sections);
    merge(project, index, file, diags);
    includes
}

/// The file's document, which must be a map (an empty file is an empty one).
fn document_map(
    project: &ProjectConfig,
    index: usize,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    match &project.files[index].doc.value {
        Value::Object(_) => Some(project.files[index].doc.value.clone()),
        Value::Null => Some(Value::Object(Map::new())),
        _ => {
            diags.push(project.at(
                index,
                "",
                Problem::invalid("a flow file must be a map with `systems`, `entities`, `flows`…"),
            ));
            None
        }
    }
}

/// The file's settings. A declaration that cannot be read is reported, left out and marked
/// broken, and the rest read again; `None` when nothing could be kept.
fn deserialize_file(
    project: &mut ProjectConfig,
    index: usize,
    mut value: Value,
    diags: &mut Vec<Diagnostic>,
) -> Option<FileConfig> {
    let mut removed = Vec::new();
    let file: FileConfig = loop {
        let mut ignored = Vec::new();
        match deserialize_tracking::<FileConfig>(&value, &mut ignored) {
            Ok(f) => {
                report_ignored(project, index, &value, ignored, diags);
                break f;
            }
            Err((path, message)) => {
                diags.push(type_error(project, index, &path, &message));
                let item = item_of(&path);
                if item.is_empty() || !remove(&mut value, &item) || removed.len() > 64 {
                    return None;
                }
                removed.push(item);
            }
        }
    };
    for item in removed {
        mark_broken(project, &item);
    }
    Some(file)
}

/// Reports the keys no setting takes, with the keys allowed where they are.
fn report_ignored(
    project: &ProjectConfig,
    index: usize,
    value: &Value,
    ignored: Vec<String>,
    diags: &mut Vec<Diagnostic>,
) {
    for path in ignored {
        let (parent, key) = match path.rsplit_once('.') {
            Some((p, k)) => (p.to_string(), k.to_string()),
            None => (String::new(), path.clone()),
        };
        let segs: Vec<&str> = parent.split('.').filter(|s| !s.is_empty()).collect();
        let known = allowed_keys(value, &segs);
        diags.push(project.at_key(
            index,
            &path,
            Problem::unknown_key(&key, known.iter().map(String::as_str)),
        ));
    }
}

/// Remembers a declaration left out for its own errors, so references to it are not
/// reported again.
fn mark_broken(project: &mut ProjectConfig, item: &str) {
    let segs: Vec<&str> = item.split('.').collect();
    let name = match segs.as_slice() {
        [section, name] => format!("{section}.{name}"),
        [_, system, "operations", op] => format!("operations.{system}.{op}"),
        [_, system, "entities", e] => format!("system_entities.{system}.{e}"),
        _ => return,
    };
    project.broken.insert(name);
}

/// Empties the sections not wanted from the file.
fn keep_sections(file: &mut FileConfig, sections: &BTreeSet<Section>) {
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
    let message = message.split(" at line ").next().unwrap_or(message);
    if message.starts_with("unknown field")
        && let Some((wrong, names)) = quoted_names(message)
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
        && let Some((missing, _)) = quoted_names(message)
        && let Some(d) = misspelt_key(project, index, path, &missing)
    {
        return d;
    }
    if message.starts_with("unknown variant")
        && let Some((wrong, names)) = quoted_names(message)
    {
        return project.at(
            index,
            path,
            Problem::unknown_value(&wrong, names.iter().map(String::as_str)),
        );
    }
    project.at(index, path, Problem::invalid(message))
}

/// The first back-quoted name of a serde message and the ones after it: "unknown variant
/// `x`, expected one of `a`, `b`" / "unknown field `x`, expected …".
fn quoted_names(m: &str) -> Option<(String, Vec<String>)> {
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
}

/// A key beside `path` that looks like the `missing` one, as a diagnostic at that key.
fn misspelt_key(
    project: &ProjectConfig,
    index: usize,
    path: &str,
    missing: &str,
) -> Option<Diagnostic> {
    let doc = &project.files[index].doc.value;
    let segs: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let Some(Value::Object(map)) = segs.iter().try_fold(doc, |v, s| v.get(*s)) else {
        return None;
    };
    let known = allowed_keys(doc, &segs);
    let candidates = vec![missing.to_string()];
    let wrong = map
        .keys()
        .find(|k| !known.contains(k) && did_you_mean(k, &candidates).is_some())?;
    Some(project.at_key(
        index,
        &node::join(path, wrong),
        Problem::misspelt_key(wrong, missing, known.iter().map(String::as_str)),
    ))
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
        Value::String(s) => match substitute_string(s, path, env) {
            Ok(Some(new)) => *value = new,
            Ok(None) => {}
            Err(e) => problems.push((path.to_string(), e.to_string())),
        },
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

/// The value of a text with its `${VARS}` substituted, `None` when it has none. What came
/// from the environment is masked from then on, unless the key or the value says it is no
/// secret.
fn substitute_string(
    s: &str,
    path: &str,
    env: &dyn EnvSource,
) -> Result<Option<Value>, SecretResolveError> {
    let mut substituted = Vec::new();
    let std::borrow::Cow::Owned(new) = substitute(s, env, &mut substituted)? else {
        return Ok(None);
    };
    let key = path.rsplit('.').next().unwrap_or("");
    if !NOT_SECRET_KEYS.contains(&key) {
        // Numbers (ports, rates) are settings, not secrets.
        for secret in substituted.iter().filter(|v| v.parse::<f64>().is_err()) {
            crate::redact::register(secret);
        }
    }
    // A value that is one whole reference takes the type of what it stands for, so
    // `per_second: ${RATE:-2.5}` is a number.
    let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
    Ok(Some(
        match (whole, new.parse::<serde_json::Number>(), new.as_str()) {
            (true, Ok(n), _) => Value::Number(n),
            (true, _, "true") => Value::Bool(true),
            (true, _, "false") => Value::Bool(false),
            _ => Value::String(new),
        },
    ))
}

/// Adds a file's declarations to the project; a name declared twice is reported at the
/// second declaration.
fn merge(project: &mut ProjectConfig, index: usize, file: FileConfig, diags: &mut Vec<Diagnostic>) {
    let files = std::mem::take(&mut project.files);
    let mut m = Merger {
        files: &files,
        index,
        diags,
    };
    m.put(&mut project.systems, "systems", file.systems);
    m.put(&mut project.entities, "entities", file.entities);
    m.put(&mut project.flows, "flows", file.flows);
    m.put(
        &mut project.overrides,
        "overrides.flows",
        file.overrides.flows,
    );
    m.vars(&mut project.vars, file.vars);
    // `state` and `daemon` may each be declared once across the project.
    m.single(&mut project.state, file.state, "state");
    m.single(&mut project.daemon, file.daemon, "daemon");
    project.files = files;
}

/// What merging one file needs: the project's files, the file's index, and where to report.
struct Merger<'a> {
    files: &'a [SourceFile],
    index: usize,
    diags: &'a mut Vec<Diagnostic>,
}

impl Merger<'_> {
    fn put<T>(
        &mut self,
        map: &mut BTreeMap<String, Decl<T>>,
        section: &str,
        items: BTreeMap<String, T>,
    ) {
        for (name, value) in items {
            let path = format!("{section}.{name}");
            if let Some(prev) = map.get(&name) {
                let elsewhere = self.files[prev.file].path.display().to_string();
                let mut problem = Problem::duplicate(None, &name, &elsewhere);
                if section == "flows" {
                    problem = problem.with_help(format!(
                        "to change an included flow, set `enabled`, `trigger.schedule` or \
                         `reconcile` under `overrides.flows.{name}` instead of declaring it \
                         again; to leave out an included project's flows, include it with \
                         `{{path: …, only: [systems, entities]}}`"
                    ));
                }
                self.diags
                    .push(self.files[self.index].at_key(&path, problem));
                continue;
            }
            let file = self.index;
            map.insert(name, Decl { value, file, path });
        }
    }

    fn vars(&mut self, vars: &mut Map<String, Value>, items: BTreeMap<String, Value>) {
        for (k, v) in items {
            if vars.contains_key(&k) {
                let problem = Problem::duplicate(Some("variable"), &k, "another file");
                let d = self.files[self.index].at_key(&format!("vars.{k}"), problem);
                self.diags.push(d);
            } else {
                vars.insert(k, v);
            }
        }
    }

    fn single<T>(&mut self, slot: &mut Option<Decl<T>>, value: Option<T>, name: &str) {
        let Some(value) = value else { return };
        if slot.is_some() {
            let problem = Problem::duplicate(None, name, "another file");
            self.diags
                .push(self.files[self.index].at_key(name, problem));
            return;
        }
        *slot = Some(Decl {
            value,
            file: self.index,
            path: name.into(),
        });
    }
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
