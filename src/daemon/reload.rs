//! Noticing that flow files changed, without a file-watcher dependency: the contents of every
//! file of the project (included ones too) are hashed on each poll of the clock-driven loop,
//! so an edit is seen even when the file system's mtime resolution would hide it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use crate::config::env::ProcessEnv;

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
