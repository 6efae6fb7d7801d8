//! `run --once --record FILE`: the run goes through recording proxies, and FILE gets an
//! offline test of it: the state the flows started from, every exchange (secrets masked) and
//! what each flow did, so `erpsync test` replays the run without the systems.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use erpsync::authoring::proxy::Proxies;
use erpsync::authoring::runner::expectations_of;
use erpsync::authoring::testfile::{
    BindingSeedConfig, ExpectConfig, StateSeedConfig, TestFileConfig,
};
use erpsync::compile::{Flow, Project};
use erpsync::engine::RunReport;
use erpsync::state::{FlowName, Scope, Store};

/// How the recorded run was asked for, so its replay runs the same way.
pub struct RecordedRun<'a> {
    pub flows: &'a [String],
    pub reconcile: bool,
    pub full: bool,
    pub keys: &'a [String],
}

/// A run being recorded.
pub struct Recorder {
    proxies: Proxies,
    seed: StateSeedConfig,
}

impl Recorder {
    /// Notes the state the flows start from and starts a proxy per system. Inside a tokio
    /// runtime.
    pub async fn start(
        project: &Project,
        store: &Store,
        flows: &[Arc<Flow>],
    ) -> anyhow::Result<Recorder> {
        let mut seed = StateSeedConfig::default();
        let mut scopes = Vec::new();
        for f in flows {
            let scope = Scope::new(&f.entity, &f.from, &f.to);
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
            if let Some(at) = store.bindings.cursor(FlowName::new(&f.id)).await? {
                seed.cursors.insert(f.id.clone(), at);
            }
        }
        for scope in scopes {
            for b in store.bindings.all_bindings(&scope).await? {
                let mut ids = BTreeMap::new();
                let mut records = BTreeMap::new();
                for (system, id, base) in
                    [(&scope.a, b.id_a, b.base_a), (&scope.b, b.id_b, b.base_b)]
                {
                    if let Some(id) = id {
                        ids.insert(system.clone(), id);
                    }
                    if let Some(base) = base {
                        records.insert(system.clone(), erpsync::redact::redact_json(&base));
                    }
                }
                seed.bindings.push(BindingSeedConfig {
                    entity: scope.entity.clone(),
                    key: b.key,
                    ids,
                    records,
                    exported: b.exported_at.is_some(),
                    actions_done: b.actions_done,
                    systems: vec![scope.a.clone(), scope.b.clone()],
                });
            }
        }
        let upstreams: BTreeMap<String, String> = project
            .systems
            .iter()
            .map(|(n, d)| (n.clone(), d.base_url().to_string()))
            .collect();
        let proxies = Proxies::start(&upstreams).await?;
        Ok(Recorder { proxies, seed })
    }

    /// The project with every system behind its proxy.
    pub fn project(&self, project: &Project) -> anyhow::Result<Arc<Project>> {
        Ok(Arc::new(erpsync::authoring::redirect(
            project,
            &self.proxies.urls,
        )?))
    }

    /// Writes the test: flows run, starting state, exchanges, and what each flow reported.
    pub fn write(
        &self,
        file: &Path,
        run: RecordedRun<'_>,
        reports: &[RunReport],
    ) -> anyhow::Result<usize> {
        let flows = run.flows;
        let exchanges: Vec<_> = self
            .proxies
            .recording
            .exchanges()
            .into_iter()
            .map(|s| s.exchange)
            .collect();
        let count = exchanges.len();
        let doc = TestFileConfig {
            description: Some(format!("recorded run of {}", flows.join(", "))),
            flows: flows.to_vec(),
            reconcile: run.reconcile,
            full: run.full,
            keys: run.keys.to_vec(),
            state: self.seed.clone(),
            exchanges,
            expect: ExpectConfig {
                flows: reports
                    .iter()
                    .map(|r| (r.flow.clone(), expectations_of(r)))
                    .collect(),
            },
            ..Default::default()
        };
        super::call::write_yaml(file, &doc)?;
        Ok(count)
    }
}
