//! Noticing that flow files changed, without a file-watcher dependency: the contents of every
//! file of the project (included ones too) are hashed on each poll of the clock-driven loop,
//! so an edit is seen even when the file system's mtime resolution would hide it. And what a
//! reload changed, told by comparing the compiled specs of the two projects.

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use serde::Serialize;

use crate::compile::Project;
use crate::config::env::ProcessEnv;

/// What a reload changed: the names of the systems, canonical entities, flows and webhooks
/// added, removed or compiled differently, each in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadChanges {
    pub systems: Vec<String>,
    pub(crate) entities: Vec<String>,
    pub flows: Vec<String>,
    pub(crate) webhooks: Vec<String>,
}

impl ReloadChanges {
    /// What differs from `old` in `new`. Specs compare by what they were compiled from, so an
    /// edit that compiles to the same thing (a comment, a reordered key) is no change.
    pub(crate) fn between(old: &Project, new: &Project) -> ReloadChanges {
        let flows = |p: &Project| p.flows.iter().map(|f| (f.id.clone(), f.clone())).collect();
        ReloadChanges {
            systems: changed(&old.systems, &new.systems),
            entities: changed(&old.entities, &new.entities),
            flows: changed(&flows(old), &flows(new)),
            webhooks: changed(&old.webhooks, &new.webhooks),
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.systems.is_empty()
            && self.entities.is_empty()
            && self.flows.is_empty()
            && self.webhooks.is_empty()
    }
}

/// The names in either map whose values are not the same in both.
fn changed<T: PartialEq>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Vec<String> {
    let mut names: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|n| old.get(*n) != new.get(*n))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The files of a project and a fingerprint of their contents.
#[derive(Debug)]
pub struct FileWatch {
    paths: Vec<PathBuf>,
    /// Files the last load read, includes among them; new files below `paths` are found by
    /// listing the folders again on every poll.
    known: Vec<PathBuf>,
    last: u64,
}

impl FileWatch {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let mut w = FileWatch {
            paths,
            known: Vec::new(),
            last: 0,
        };
        w.known = w.loaded_files();
        w.last = w.fingerprint();
        w
    }

    fn loaded_files(&self) -> Vec<PathBuf> {
        let (project, _) = crate::config::load(&self.paths, &ProcessEnv);
        project.files.into_iter().map(|f| f.path).collect()
    }

    fn fingerprint(&self) -> u64 {
        let mut files = self.known.clone();
        files.extend(crate::config::load::flow_files(&self.paths).unwrap_or_default());
        files.sort();
        files.dedup();
        let mut h = DefaultHasher::new();
        for f in files {
            f.hash(&mut h);
            std::fs::read(&f).ok().hash(&mut h);
        }
        h.finish()
    }

    /// Whether anything changed since the last call (or since `new`).
    pub fn changed(&mut self) -> bool {
        let now = self.fingerprint();
        if now == self.last {
            return false;
        }
        // Includes may have changed too: follow what the files now name.
        self.known = self.loaded_files();
        self.last = self.fingerprint();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_new_files_and_included_files_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let common = dir.path().join("common");
        std::fs::create_dir(&common).unwrap();
        std::fs::write(common.join("vars.yaml"), "version: 1\nvars: { a: 1 }\n").unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(
            project.join("main.yaml"),
            "version: 1\ninclude: [../common]\n",
        )
        .unwrap();
        let mut w = FileWatch::new(vec![project.clone()]);
        assert!(!w.changed());
        std::fs::write(common.join("vars.yaml"), "version: 1\nvars: { a: 2 }\n").unwrap();
        assert!(w.changed());
        assert!(!w.changed());
        std::fs::write(project.join("more.yml"), "version: 1\n").unwrap();
        assert!(w.changed());
    }
}

#[cfg(test)]
mod changes {
    use std::path::Path;

    use super::*;

    /// The demo project, edited by `edit`, compiled from a copy in `dir`.
    fn demo(dir: &Path, edit: impl Fn(String) -> String) -> Project {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
        for sub in ["demo", "common"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            for f in std::fs::read_dir(repo.join(sub)).unwrap() {
                let f = f.unwrap().path();
                if f.is_file() {
                    let name = f.file_name().unwrap();
                    std::fs::copy(&f, dir.join(sub).join(name)).unwrap();
                }
            }
        }
        let file = dir.join("demo/demo.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, edit(text)).unwrap();
        let (project, diags) = crate::compile::project::check(&[dir.join("demo")]);
        project.unwrap_or_else(|| panic!("{diags:?}"))
    }

    fn changes(edit: impl Fn(String) -> String) -> ReloadChanges {
        let dir = tempfile::tempdir().unwrap();
        let old = demo(dir.path(), |t| t);
        let new = demo(dir.path(), edit);
        ReloadChanges::between(&old, &new)
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_edit_that_compiles_to_the_same_project_changes_nothing() {
        let c = changes(|t| format!("# a comment\n{t}\n# another\n"));
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn a_changed_system_is_told_and_the_others_are_not() {
        let c = changes(|t| t.replace("token_url: authorize/token", "token_url: oauth/token"));
        assert_eq!(
            c,
            ReloadChanges {
                systems: names(&["erp"]),
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_changed_flow_is_told_and_the_others_are_not() {
        let c = changes(|t| {
            t.replacen(
                "trigger: { schedule: \"*/15 * * * *\" }",
                "trigger: { schedule: \"*/7 * * * *\" }",
                1,
            )
        });
        assert_eq!(
            c,
            ReloadChanges {
                flows: names(&["products"]),
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_changed_webhook_secret_is_told() {
        let c = changes(|t| {
            t.replace(
                "${SHOP_WEBHOOK_SECRET:-demo-webhook-secret}",
                "another-secret",
            )
        });
        assert_eq!(
            c,
            ReloadChanges {
                webhooks: names(&["shop_orders"]),
                ..Default::default()
            }
        );
    }
}
