//! The PostgreSQL state store: one conformance suite run against SQLite and PostgreSQL,
//! leases and webhook deliveries between nodes, an engine run on PostgreSQL state, and two
//! daemons sharing one database where a due flow runs on exactly one node; the store's pool
//! (a call waiting on a row lock, a connection the server ended) and a run's lease dropped
//! as its runtime shuts down, released all the same. Each test works
//! in a fresh schema it drops at the end. The server is `ERPSYNC_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); when it is not reachable the tests fail,
//! unless `ERPSYNC_SKIP_POSTGRES=1`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use erpsync::clock::{Clock as _, ManualClock};
use erpsync::daemon::{Daemon, DaemonEvent};
use erpsync::engine::RunOptions;
use erpsync::state::{
    Adopted, Binding, Failure, Fence, FlowName, Instance, JournalEntry, JournalState, Lease,
    PostgresStore, RecordKey, Scope, SqliteStore, StateStoreError, StateWrite, Store,
};
use erpsync_sim::seed_both;
use serde_json::json;

use crate::support::postgres::{PgSchema, pg};
use crate::support::project::demo_yaml;
use crate::support::sims::sims;

fn t(s: &str) -> DateTime<Utc> {
    format!("2026-11-26T{s}Z").parse().unwrap()
}

fn entry(flow: &str, key: &str) -> JournalEntry {
    JournalEntry {
        id: 0,
        flow: flow.into(),
        key: key.into(),
        target: "erp".into(),
        operation: "create_order".into(),
        idempotency_key: format!("idem-{key}"),
        payload: json!({"reference": key, "z": 1, "a": 2}),
        state: JournalState::Pending,
        created_at: t("09:00:00.123456"),
    }
}

/// What every store must do alike.
async fn conformance(s: &Store) {
    // Bindings: scopes are per entity and pair of systems, in name order.
    let scope = Scope::new("product", "shop", "erp");
    assert_eq!((scope.a.as_str(), scope.b.as_str()), ("erp", "shop"));
    let a1 = Binding {
        key: "A1".into(),
        id_b: Some("812".into()),
        // Key order is kept: records are shown as they came.
        base_b: Some(json!({"sku": "A1", "price": 50, "attrs": {"z": 1, "a": [1, 2]}})),
        exported_at: Some(t("10:00:00.5")),
        parked: Some("price conflict".into()),
        actions_done: true,
        ..Default::default()
    };
    let b2 = Binding {
        key: "B2".into(),
        id_a: Some("7".into()),
        ..Default::default()
    };
    s.bindings
        .put_bindings(&scope, vec![a1.clone(), b2.clone()])
        .await
        .unwrap();
    let got = s
        .bindings
        .bindings(&scope, &["A1".into(), "B2".into(), "C3".into()])
        .await
        .unwrap();
    assert_eq!(
        got,
        HashMap::from([("A1".into(), a1.clone()), ("B2".into(), b2.clone())])
    );
    assert_eq!(
        serde_json::to_string(&got["A1"].base_b).unwrap(),
        r#"{"sku":"A1","price":50,"attrs":{"z":1,"a":[1,2]}}"#
    );
    assert_eq!(
        s.bindings.all_bindings(&scope).await.unwrap(),
        vec![a1.clone(), b2.clone()]
    );
    assert_eq!(s.bindings.binding_count(&scope).await.unwrap(), 2);
    assert_eq!(
        s.bindings
            .binding_count(&Scope::new("stock", "shop", "erp"))
            .await
            .unwrap(),
        0
    );
    // A page of bindings in one call (adoptions, written together): both sides alike, or
    // differing in a field, read back as they were put; a key given twice keeps the last.
    let page_scope = Scope::new("page", "shop", "erp");
    let mut page: Vec<Binding> = (0..300)
        .map(|i| {
            let a = json!({"sku": format!("P{i}"), "name": "Cana", "price": i, "stamp": "x"});
            let mut b = a.clone();
            if i % 2 == 1 {
                b["stamp"] = json!(format!("y{i}"));
            }
            Binding {
                key: format!("P{i}"),
                id_a: Some(format!("{i}")),
                id_b: Some(format!("s{i}")),
                base_a: Some(a),
                base_b: Some(b),
                ..Default::default()
            }
        })
        .collect();
    let mut again = page[7].clone();
    again.base_b = Some(json!({"other": "shape"}));
    page.push(again.clone());
    s.bindings
        .put_bindings(&page_scope, page.clone())
        .await
        .unwrap();
    page[7] = page.pop().unwrap();
    let mut got = s.bindings.all_bindings(&page_scope).await.unwrap();
    got.sort_by_key(|b| b.key[1..].parse::<usize>().unwrap());
    assert_eq!(got, page);
    assert_eq!(got[7], again);
    // Adoptions kept packed, written with bindings in one call, read back as the bindings
    // they stand for: one record for both sides, records differing in a field, records of
    // different shapes; an adoption replaces a binding of its key.
    let held_scope = Scope::new("held", "shop", "erp");
    let record = |i: usize| json!({"sku": format!("H{i}"), "price": i, "stamp": "x"});
    let adopted: Vec<Adopted> = (0..90)
        .map(|i| {
            let b = match i % 3 {
                0 => None,
                1 => Some(json!({"sku": format!("H{i}"), "price": i, "stamp": "y"})),
                _ => Some(json!({"other": "shape", "n": -0.0})),
            };
            Adopted::of(
                format!("H{i}"),
                Some(format!("{i}")),
                Some(format!("s{i}")),
                &record(i),
                b.as_ref(),
            )
        })
        .collect();
    let plain = Binding {
        key: "PLAIN".into(),
        id_a: Some("p".into()),
        base_b: Some(json!({"sku": "PLAIN"})),
        ..Default::default()
    };
    let replaced = Binding {
        key: "H4".into(),
        id_a: Some("old".into()),
        ..Default::default()
    };
    s.bindings
        .put_bindings(&held_scope, vec![replaced])
        .await
        .unwrap();
    s.bindings
        .put_held(&held_scope, vec![plain.clone()], adopted.clone())
        .await
        .unwrap();
    let mut want: Vec<Binding> = adopted
        .iter()
        .map(|a| {
            let mut b = a.binding().unwrap();
            b.settle_bases();
            b
        })
        .collect();
    want.push(plain);
    want.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(s.bindings.all_bindings(&held_scope).await.unwrap(), want);
    let mut a1b = a1.clone();
    a1b.parked = None;
    a1b.id_a = Some("3".into());
    s.bindings
        .put_bindings(&scope, vec![a1b.clone()])
        .await
        .unwrap();
    assert_eq!(
        s.bindings.bindings(&scope, &["A1".into()]).await.unwrap()["A1"],
        a1b
    );

    // Cursors.
    assert_eq!(s.bindings.cursor(FlowName::new("f")).await.unwrap(), None);
    s.bindings
        .set_cursor(FlowName::new("f"), t("10:00:00"))
        .await
        .unwrap();
    s.bindings
        .set_cursor(FlowName::new("f"), t("11:00:00.000001"))
        .await
        .unwrap();
    assert_eq!(
        s.bindings.cursor(FlowName::new("f")).await.unwrap(),
        Some(t("11:00:00.000001"))
    );

    // The journal: finishing a write stores its binding with it; pending writes are listed
    // oldest first and settled by hand.
    let order = Scope::new("order", "shop", "erp");
    let id = s
        .journal
        .journal_begin(&entry("orders", "A"))
        .await
        .unwrap();
    let pending = s
        .journal
        .journal_pending(Some(FlowName::new("orders")))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].id, pending[0].state, pending[0].created_at),
        (id, JournalState::Pending, t("09:00:00.123456"))
    );
    assert_eq!(
        pending[0].payload.to_string(),
        r#"{"reference":"A","z":1,"a":2}"#
    );
    let bound = Binding {
        key: "A".into(),
        id_b: Some("o-1".into()),
        ..Default::default()
    };
    s.journal
        .journal_finish(id, JournalState::Pending, None)
        .await
        .unwrap();
    assert_eq!(s.journal.journal_pending(None).await.unwrap().len(), 1);
    s.journal
        .journal_finish(id, JournalState::Done, Some((&order, &bound)))
        .await
        .unwrap();
    assert!(s.journal.journal_pending(None).await.unwrap().is_empty());
    assert_eq!(
        s.bindings.bindings(&order, &["A".into()]).await.unwrap()["A"],
        bound
    );

    for (f, k) in [("orders", "B"), ("orders", "C"), ("other", "D")] {
        s.journal.journal_begin(&entry(f, k)).await.unwrap();
    }
    let keys: Vec<String> = s
        .journal
        .journal_pending(None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["B", "C", "D"]);
    assert_eq!(
        s.journal
            .journal_pending(Some(FlowName::new("orders")))
            .await
            .unwrap()
            .len(),
        2
    );
    let b = Binding {
        key: "B".into(),
        id_a: Some("77".into()),
        ..Default::default()
    };
    assert_eq!(
        s.journal
            .journal_settle(
                FlowName::new("orders"),
                RecordKey::new("B"),
                Some((&order, &b))
            )
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.bindings.bindings(&order, &["B".into()]).await.unwrap()["B"],
        b
    );
    assert_eq!(
        s.journal
            .journal_settle(FlowName::new("orders"), RecordKey::new("C"), None)
            .await
            .unwrap(),
        1
    );
    assert!(
        s.bindings
            .bindings(&order, &["C".into()])
            .await
            .unwrap()
            .is_empty()
    );
    // Nothing pending: nothing bound.
    let d = Binding {
        key: "D".into(),
        ..Default::default()
    };
    assert_eq!(
        s.journal
            .journal_settle(
                FlowName::new("orders"),
                RecordKey::new("D"),
                Some((&order, &d))
            )
            .await
            .unwrap(),
        0
    );
    assert!(
        s.bindings
            .bindings(&order, &["D".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let failed = s.journal.journal_begin(&entry("other", "E")).await.unwrap();
    s.journal
        .journal_finish(failed, JournalState::Failed, None)
        .await
        .unwrap();
    let left = s.journal.journal_pending(None).await.unwrap();
    assert_eq!((left.len(), left[0].key.as_str()), (1, "D"));

    // Failures: one per flow and key, counted.
    let mut f = Failure {
        id: 0,
        flow: "orders".into(),
        key: "1001".into(),
        source_record: json!({"number": "1001"}),
        payload: Some(json!({"lines": []})),
        error: "unknown product code".into(),
        status: Some(200),
        response: Some(json!({"errorText": "x"})),
        attempts: 0,
        created_at: t("12:00:00"),
        updated_at: t("12:00:00"),
    };
    let fid = s.failures.put_failure(&f).await.unwrap();
    f.error = "again".into();
    f.status = None;
    f.updated_at = t("12:05:00");
    assert_eq!(s.failures.put_failure(&f).await.unwrap(), fid);
    f.key = "1002".into();
    let other = s.failures.put_failure(&f).await.unwrap();
    assert_ne!(other, fid);
    let all = s
        .failures
        .failures(Some(FlowName::new("orders")))
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].attempts, all[0].error.as_str(), all[0].status),
        (2, "again", None)
    );
    assert_eq!(
        (all[0].created_at, all[0].updated_at),
        (t("12:00:00"), t("12:05:00"))
    );
    assert_eq!(all[0].source_record, json!({"number": "1001"}));
    assert!(
        s.failures
            .failures(Some(FlowName::new("stock")))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.failures.failure(fid).await.unwrap().unwrap().key, "1001");
    assert!(s.failures.failure(fid + 1000).await.unwrap().is_none());
    s.failures
        .clear_failure(FlowName::new("orders"), RecordKey::new("1002"))
        .await
        .unwrap();
    assert!(s.failures.discard_failure(fid).await.unwrap());
    assert!(!s.failures.discard_failure(fid).await.unwrap());
    assert!(s.failures.failures(None).await.unwrap().is_empty());

    // Runs, newest first.
    let me = Instance {
        id: "host-a:41:b-7".into(),
        node: "node-a".into(),
    };
    let r1 = s
        .runs
        .run_start(FlowName::new("stock"), "sync", t("13:00:00"), &me)
        .await
        .unwrap();
    let r2 = s
        .runs
        .run_start(FlowName::new("stock"), "reconcile", t("13:01:00"), &me)
        .await
        .unwrap();
    s.runs
        .run_start(FlowName::new("orders"), "sync", t("13:02:00"), &me)
        .await
        .unwrap();
    s.runs
        .run_finish(r1, t("13:00:05"), "ok", &json!({"read": 3}), None)
        .await
        .unwrap();
    s.runs
        .run_finish(r2, t("13:01:09"), "error", &json!({}), Some("boom"))
        .await
        .unwrap();
    let runs = s.runs.runs(Some(FlowName::new("stock")), 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0].id, runs[0].kind.as_str(), runs[0].status.as_str()),
        (r2, "reconcile", "error")
    );
    assert_eq!(runs[0].error.as_deref(), Some("boom"));
    assert_eq!(
        (runs[0].node.as_deref(), runs[0].instance.as_deref()),
        (Some("node-a"), Some("host-a:41:b-7"))
    );
    assert_eq!(
        (runs[1].finished_at, runs[1].counts.clone()),
        (Some(t("13:00:05")), json!({"read": 3}))
    );
    assert_eq!(s.runs.runs(None, 2).await.unwrap().len(), 2);
    assert_eq!(s.runs.runs(None, 10).await.unwrap()[0].finished_at, None);

    leases(s).await;
    fencing(s).await;
    deliveries(s).await;
    system_health(s).await;
    known_absent(s).await;
}

/// Keys a full read of a flow's target lacked: known when read at or after the asked
/// moment, per flow, moved by a later read, forgotten when the flow created the record.
async fn known_absent(s: &Store) {
    assert!(
        !s.bindings
            .is_absent(FlowName::new("stock"), RecordKey::new("A1"), t("09:00:00"))
            .await
            .unwrap()
    );
    s.bindings
        .note_absent(FlowName::new("stock"), RecordKey::new("A1"), t("10:00:00"))
        .await
        .unwrap();
    assert!(
        s.bindings
            .is_absent(FlowName::new("stock"), RecordKey::new("A1"), t("10:00:00"))
            .await
            .unwrap()
    );
    assert!(
        s.bindings
            .is_absent(FlowName::new("stock"), RecordKey::new("A1"), t("09:59:59"))
            .await
            .unwrap()
    );
    assert!(
        !s.bindings
            .is_absent(FlowName::new("stock"), RecordKey::new("A1"), t("10:00:01"))
            .await
            .unwrap(),
        "a read older than the asked moment is not trusted"
    );
    assert!(
        !s.bindings
            .is_absent(
                FlowName::new("products"),
                RecordKey::new("A1"),
                t("09:00:00")
            )
            .await
            .unwrap()
    );
    assert!(
        !s.bindings
            .is_absent(FlowName::new("stock"), RecordKey::new("B2"), t("09:00:00"))
            .await
            .unwrap()
    );
    // A later read of the target lacking it again moves the moment.
    s.bindings
        .note_absent(FlowName::new("stock"), RecordKey::new("A1"), t("11:00:00"))
        .await
        .unwrap();
    assert!(
        s.bindings
            .is_absent(FlowName::new("stock"), RecordKey::new("A1"), t("10:30:00"))
            .await
            .unwrap()
    );
    s.bindings
        .note_absent(FlowName::new("stock"), RecordKey::new("B2"), t("11:00:00"))
        .await
        .unwrap();
    s.bindings
        .forget_absent(FlowName::new("stock"), RecordKey::new("A1"))
        .await
        .unwrap();
    assert!(
        !s.bindings
            .is_absent(FlowName::new("stock"), RecordKey::new("A1"), t("09:00:00"))
            .await
            .unwrap()
    );
    assert!(
        s.bindings
            .is_absent(FlowName::new("stock"), RecordKey::new("B2"), t("09:00:00"))
            .await
            .unwrap()
    );
    // Forgetting what was never known is not an error.
    s.bindings
        .forget_absent(FlowName::new("stock"), RecordKey::new("C3"))
        .await
        .unwrap();
}

/// What was last seen of each system: one entry per system, replaced, in name order.
async fn system_health(s: &Store) {
    assert!(s.runs.system_health().await.unwrap().is_empty());
    let down = erpsync::state::SystemHealth {
        system: "erp".into(),
        down: true,
        down_since: Some(t("17:00:00")),
        consecutive_failures: 5,
        last_error: Some("connection refused".into()),
        next_probe: Some(t("17:00:05")),
        checked_at: t("17:00:00"),
    };
    s.runs.put_system_health(&down).await.unwrap();
    let shop = erpsync::state::SystemHealth {
        system: "shop".into(),
        down: false,
        down_since: None,
        consecutive_failures: 0,
        last_error: None,
        next_probe: None,
        checked_at: t("17:00:01"),
    };
    s.runs.put_system_health(&shop).await.unwrap();
    assert_eq!(
        s.runs.system_health().await.unwrap(),
        vec![down.clone(), shop.clone()]
    );
    let up = erpsync::state::SystemHealth {
        down: false,
        down_since: None,
        consecutive_failures: 0,
        last_error: None,
        next_probe: None,
        checked_at: t("17:01:00"),
        ..down
    };
    s.runs.put_system_health(&up).await.unwrap();
    assert_eq!(s.runs.system_health().await.unwrap(), vec![up, shop]);
}

/// A lease's name, holder and end (its token is checked by `fencing`).
fn lease(name: &str, holder: &str, expires_at: DateTime<Utc>) -> (String, String, DateTime<Utc>) {
    (name.into(), holder.into(), expires_at)
}

fn shown(list: Vec<Lease>) -> Vec<(String, String, DateTime<Utc>)> {
    list.into_iter()
        .map(|l| (l.name, l.holder, l.expires_at))
        .collect()
}

/// Leases: one holder at a time, renewed by its holder, free once expired or released, and
/// listed with their holders.
async fn leases(s: &Store) {
    let ttl = Duration::from_secs(60);
    let now = t("14:00:00");
    assert_eq!(s.coordination.leases().await.unwrap(), []);
    assert!(
        s.coordination
            .try_lease("flow:stock", "node-a", now, ttl)
            .await
            .unwrap()
    );
    let first = s.coordination.leases().await.unwrap()[0].token;
    assert!(
        !s.coordination
            .try_lease("flow:stock", "node-b", now, ttl)
            .await
            .unwrap()
    );
    // Another flow is another lease.
    assert!(
        s.coordination
            .try_lease("flow:orders", "node-b", now, ttl)
            .await
            .unwrap()
    );
    let listed = s.coordination.leases().await.unwrap();
    assert_eq!(listed[0].flow(), Some("orders"));
    assert!(listed[0].token > first, "each grant gets a larger token");
    assert_eq!(
        shown(listed),
        [
            lease("flow:orders", "node-b", t("14:01:00")),
            lease("flow:stock", "node-a", t("14:01:00")),
        ]
    );
    assert_eq!(Lease::of_flow("orders"), "flow:orders");
    // Renewed by its holder, it lasts from the renewal.
    let later = now + chrono::Duration::seconds(50);
    assert!(
        s.coordination
            .try_lease("flow:stock", "node-a", later, ttl)
            .await
            .unwrap()
    );
    assert_eq!(
        shown(s.coordination.leases().await.unwrap())[1],
        lease("flow:stock", "node-a", t("14:01:50"))
    );
    let after_first_ttl = now + chrono::Duration::seconds(70);
    assert!(
        !s.coordination
            .try_lease("flow:stock", "node-b", after_first_ttl, ttl)
            .await
            .unwrap()
    );
    // A holder that stopped renewing (a dead node) loses it when it expires.
    let expired = later + chrono::Duration::seconds(60);
    assert!(
        s.coordination
            .try_lease("flow:stock", "node-b", expired, ttl)
            .await
            .unwrap()
    );
    assert!(
        !s.coordination
            .try_lease("flow:stock", "node-a", expired, ttl)
            .await
            .unwrap()
    );
    // An expired lease is still listed, but nobody holds it.
    let listed = s.coordination.leases().await.unwrap();
    assert_eq!(
        shown(listed.clone()),
        [
            lease("flow:orders", "node-b", t("14:01:00")),
            lease("flow:stock", "node-b", t("14:02:50")),
        ]
    );
    assert!(!listed[0].held_at(expired));
    assert!(listed[1].held_at(expired));
    assert!(!listed[1].held_at(t("14:02:50")));
    // Only the holder releases it.
    s.coordination
        .release_lease("flow:stock", "node-a")
        .await
        .unwrap();
    assert!(
        !s.coordination
            .try_lease("flow:stock", "node-a", expired, ttl)
            .await
            .unwrap()
    );
    s.coordination
        .release_lease("flow:stock", "node-b")
        .await
        .unwrap();
    assert_eq!(
        shown(s.coordination.leases().await.unwrap()),
        [lease("flow:orders", "node-b", t("14:01:00"))]
    );
    assert!(
        s.coordination
            .try_lease("flow:stock", "node-a", expired, ttl)
            .await
            .unwrap()
    );

    // A firing is claimed once; the next one afresh.
    assert!(
        s.coordination
            .claim_firing("stock:sync", t("15:00:00"))
            .await
            .unwrap()
    );
    assert!(
        !s.coordination
            .claim_firing("stock:sync", t("15:00:00"))
            .await
            .unwrap()
    );
    assert!(
        s.coordination
            .claim_firing("stock:reconcile", t("15:00:00"))
            .await
            .unwrap()
    );
    assert!(
        s.coordination
            .claim_firing("stock:sync", t("15:05:00"))
            .await
            .unwrap()
    );
    assert!(
        !s.coordination
            .claim_firing("stock:sync", t("15:00:00"))
            .await
            .unwrap()
    );
}

/// Fencing: a grant's token outlives renewals, a later grant (a takeover, or a grant after
/// a release) has a larger one, and writes and renewals under a replaced grant are refused.
/// Runs left by a holder are closed as abandoned; processes are registered; old runs pruned.
async fn fencing(s: &Store) {
    let ttl = Duration::from_secs(60);
    let now = t("16:00:00");
    let name = "flow:fenced";
    let a = s
        .coordination
        .acquire_lease(name, "host-a:1:x", "shop-node", now, ttl, None)
        .await
        .unwrap()
        .unwrap();
    let fence_a = Fence {
        lease: name.into(),
        token: a,
    };
    s.coordination
        .fenced(
            &fence_a,
            StateWrite::SetCursor("fenced".into(), t("16:00:00")),
        )
        .await
        .unwrap();
    assert!(s.coordination.renew_lease(name, a, now, ttl).await.unwrap());
    let held = s
        .coordination
        .leases()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.name == name)
        .unwrap();
    assert_eq!((held.node.as_str(), held.token), ("shop-node", a));
    // A live holder keeps it; one proven dead (`take_from`) gives it up at once.
    let b_node = "shop-node";
    assert_eq!(
        s.coordination
            .acquire_lease(name, "host-a:2:y", b_node, now, ttl, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.coordination
            .acquire_lease(name, "host-a:2:y", b_node, now, ttl, Some("someone-else"))
            .await
            .unwrap(),
        None
    );
    let b = s
        .coordination
        .acquire_lease(name, "host-a:2:y", b_node, now, ttl, Some("host-a:1:x"))
        .await
        .unwrap()
        .unwrap();
    assert!(b > a, "{b} > {a}");
    // The old grant writes nothing more, and cannot renew.
    let refused = s
        .coordination
        .fenced(
            &fence_a,
            StateWrite::SetCursor("fenced".into(), t("17:00:00")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StateStoreError::Fenced(ref l) if l == name),
        "{refused}"
    );
    let refused = s
        .coordination
        .fenced(&fence_a, StateWrite::JournalBegin(entry("fenced", "late")))
        .await
        .unwrap_err();
    assert!(matches!(refused, StateStoreError::Fenced(_)));
    // Bindings too (a SQLite store writes them as rows made before its thread takes them).
    let fenced_scope = Scope::new("fenced_product", "shop", "erp");
    let late = Binding {
        key: "LATE-1".into(),
        id_a: Some("1".into()),
        id_b: Some("E1".into()),
        base_a: Some(json!({"sku": "LATE-1", "price": 10})),
        base_b: Some(json!({"sku": "LATE-1", "price": 11})),
        ..Default::default()
    };
    let refused = s
        .coordination
        .fenced(
            &fence_a,
            StateWrite::PutBindings(fenced_scope.clone(), vec![late.clone()]),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, StateStoreError::Fenced(_)), "{refused}");
    let late_adoption = Adopted::of("LATE-2".into(), None, None, &json!({"sku": "LATE-2"}), None);
    let refused = s
        .coordination
        .fenced(
            &fence_a,
            StateWrite::PutHeld(fenced_scope.clone(), vec![], vec![late_adoption]),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, StateStoreError::Fenced(_)), "{refused}");
    assert_eq!(s.bindings.binding_count(&fenced_scope).await.unwrap(), 0);
    assert!(
        s.journal
            .journal_pending(Some(FlowName::new("fenced")))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.bindings.cursor(FlowName::new("fenced")).await.unwrap(),
        Some(t("16:00:00"))
    );
    assert!(!s.coordination.renew_lease(name, a, now, ttl).await.unwrap());
    let fence_b = Fence {
        lease: name.into(),
        token: b,
    };
    let id = s
        .coordination
        .fenced(&fence_b, StateWrite::JournalBegin(entry("fenced", "k1")))
        .await
        .unwrap();
    s.coordination
        .fenced(
            &fence_b,
            StateWrite::PutBindings(fenced_scope.clone(), vec![late.clone()]),
        )
        .await
        .unwrap();
    let stored = s
        .bindings
        .bindings(&fenced_scope, &[RecordKey::new("LATE-1")])
        .await
        .unwrap();
    assert_eq!(stored.get("LATE-1"), Some(&late));
    assert_eq!(
        s.journal
            .journal_pending(Some(FlowName::new("fenced")))
            .await
            .unwrap()[0]
            .id,
        id
    );
    // Released and granted again: larger still, so a grant never comes back.
    s.coordination
        .release_lease(name, "host-a:2:y")
        .await
        .unwrap();
    let c = s
        .coordination
        .acquire_lease(name, "host-a:1:x", "shop-node", now, ttl, None)
        .await
        .unwrap()
        .unwrap();
    assert!(c > b);
    assert!(matches!(
        s.coordination
            .fenced(
                &fence_b,
                StateWrite::ClearFailure {
                    flow: "fenced".into(),
                    key: "k1".into(),
                }
            )
            .await,
        Err(StateStoreError::Fenced(_))
    ));
    s.coordination
        .release_lease(name, "host-a:1:x")
        .await
        .unwrap();
    assert!(matches!(
        s.coordination
            .fenced(
                &fence_b,
                StateWrite::ClearFailure {
                    flow: "fenced".into(),
                    key: "k1".into(),
                }
            )
            .await,
        Err(StateStoreError::Fenced(_))
    ));

    // Runs left open by another process are closed as abandoned, with why.
    let dead = Instance {
        id: "host-a:1:x".into(),
        node: "shop-node".into(),
    };
    let alive = Instance {
        id: "host-a:2:y".into(),
        node: "shop-node".into(),
    };
    let r_dead = s
        .runs
        .run_start(FlowName::new("fenced"), "sync", now, &dead)
        .await
        .unwrap();
    let r_mine = s
        .runs
        .run_start(FlowName::new("fenced"), "sync", now, &alive)
        .await
        .unwrap();
    let r_other_flow = s
        .runs
        .run_start(FlowName::new("other"), "sync", now, &dead)
        .await
        .unwrap();
    assert_eq!(
        s.runs
            .abandon_runs(
                Some(FlowName::new("fenced")),
                None,
                &alive.id,
                t("16:05:00"),
                "lost"
            )
            .await
            .unwrap(),
        1
    );
    let runs = s
        .runs
        .runs(Some(FlowName::new("fenced")), 10)
        .await
        .unwrap();
    let of = |id: i64| runs.iter().find(|r| r.id == id).unwrap().clone();
    assert_eq!(
        (of(r_dead).status.as_str(), of(r_dead).error.as_deref()),
        ("abandoned", Some("lost"))
    );
    assert_eq!(of(r_dead).finished_at, Some(t("16:05:00")));
    assert_eq!(of(r_mine).status, "running");
    // By process, every flow.
    assert_eq!(
        s.runs
            .abandon_runs(None, Some(&dead.id), &alive.id, t("16:06:00"), "died")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.runs.runs(Some(FlowName::new("other")), 1).await.unwrap()[0].id,
        r_other_flow
    );
    assert_eq!(
        s.runs.runs(Some(FlowName::new("other")), 1).await.unwrap()[0].status,
        "abandoned"
    );

    // Processes: registered by heartbeat, pruned when not seen.
    s.coordination
        .heartbeat(&dead.id, "shop-node", t("15:00:00"))
        .await
        .unwrap();
    let nodes = s
        .coordination
        .heartbeat(&alive.id, "shop-node", now)
        .await
        .unwrap();
    let listed: Vec<_> = nodes
        .iter()
        .map(|n| (n.instance.as_str(), n.seen_at))
        .collect();
    assert_eq!(
        listed,
        [(dead.id.as_str(), t("15:00:00")), (alive.id.as_str(), now)]
    );
    // Finished runs before the cutoff go; open ones and later ones stay.
    s.runs
        .run_finish(r_mine, t("16:07:00"), "ok", &json!({}), None)
        .await
        .unwrap();
    // (the two `stock` runs of the conformance suite finished at 13:00 and 13:01).
    let pruned = s
        .coordination
        .prune(t("16:05:30"), t("15:30:00"))
        .await
        .unwrap();
    assert_eq!((pruned.runs, pruned.nodes), (3, 1));
    let left: Vec<i64> = s
        .runs
        .runs(Some(FlowName::new("fenced")), 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [r_mine]);
    assert!(
        s.runs
            .runs(Some(FlowName::new("stock")), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.runs
            .runs(Some(FlowName::new("other")), 1)
            .await
            .unwrap()
            .len(),
        1,
        "finished after the cutoff"
    );
    assert_eq!(
        s.runs.runs(Some(FlowName::new("orders")), 1).await.unwrap()[0].status,
        "running"
    );
}

/// Webhook deliveries: remembered once per webhook and id, forgotten once older than what
/// is kept, or on request.
async fn deliveries(s: &Store) {
    let keep = Duration::from_secs(3600);
    // Whether the delivery `id` of `webhook`, arriving `m` minutes after 16:00, is new.
    let new = async |webhook: &str, id: &str, m: i64| {
        let at = t("16:00:00") + chrono::Duration::minutes(m);
        s.coordination
            .remember_delivery(webhook, id, at, keep)
            .await
            .unwrap()
    };
    assert!(new("shop", "id:1", 0).await);
    assert!(!new("shop", "id:1", 1).await);
    // Ids are per webhook.
    assert!(new("erp", "id:1", 0).await);
    assert!(new("shop", "id:2", 30).await);
    // Kept from its first arrival (a repeat does not extend it), for `keep` exactly...
    assert!(!new("shop", "id:1", 60).await);
    // ...and forgotten after: the same id is a new delivery again, a younger one is not.
    assert!(new("shop", "id:1", 61).await);
    assert!(!new("shop", "id:2", 61).await);
    // Pruned by any call, whatever its webhook.
    assert!(new("erp", "id:1", 61).await);
    // Forgotten on request (its flows could not be started): the next attempt is accepted.
    s.coordination
        .forget_delivery("shop", "id:2")
        .await
        .unwrap();
    assert!(new("shop", "id:2", 62).await);
    assert!(!new("shop", "id:2", 62).await);
    s.coordination
        .forget_delivery("shop", "never-seen")
        .await
        .unwrap();

    operator_state(s).await;
}

/// The operator's state (flow switches, per-record run lines), alike in every store.
async fn operator_state(s: &Store) {
    use erpsync::state::{FlowSwitch, RunLine};
    assert!(s.runs.flow_switches().await.unwrap().is_empty());
    let switch = |flow: &str, enabled: bool, at: &str| FlowSwitch {
        flow: flow.into(),
        enabled,
        changed_at: t(at),
        changed_by: "console".into(),
    };
    s.runs
        .set_flow_switch(&switch("products", false, "10:00:00"))
        .await
        .unwrap();
    s.runs
        .set_flow_switch(&switch("orders", false, "10:00:01"))
        .await
        .unwrap();
    // A later switch replaces the earlier one.
    s.runs
        .set_flow_switch(&switch("products", true, "10:00:02"))
        .await
        .unwrap();
    assert_eq!(
        s.runs.flow_switches().await.unwrap(),
        vec![
            switch("orders", false, "10:00:01"),
            switch("products", true, "10:00:02")
        ]
    );

    let me = Instance {
        id: "host-a:41:b-7".into(),
        node: "node-a".into(),
    };
    let run = s
        .runs
        .run_start(FlowName::new("products"), "sync", t("10:01:00"), &me)
        .await
        .unwrap();
    s.runs
        .run_finish(run, t("10:01:05"), "partial", &json!({"failed": 1}), None)
        .await
        .unwrap();
    let line = |key: &str, decision: &str| RunLine {
        run_id: run,
        flow: "products".into(),
        key: key.into(),
        decision: decision.into(),
        target: Some("erp".into()),
        changes: Some(json!([{"field": "price", "old": 1, "new": 2}])),
        reason: None,
    };
    s.runs
        .put_run_lines(&[line("B2", "update"), line("A1", "failed")])
        .await
        .unwrap();
    assert_eq!(
        s.runs.run_lines(run).await.unwrap(),
        vec![line("B2", "update"), line("A1", "failed")],
        "in the order the run made them"
    );
    assert_eq!(
        s.runs
            .run_lines_of_key(RecordKey::new("A1"), 10)
            .await
            .unwrap(),
        vec![line("A1", "failed")]
    );
    assert!(
        s.runs
            .run_lines_of_key(RecordKey::new("nope"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let got = s.runs.run(run).await.unwrap().unwrap();
    assert_eq!(
        (got.flow.as_str(), got.status.as_str()),
        ("products", "partial")
    );
    assert!(s.runs.run(run + 1000).await.unwrap().is_none());

    // Lines of runs older than the newest `RUN_LINES_RUNS_KEPT` go as new runs come.
    for _ in 0..erpsync::state::RUN_LINES_RUNS_KEPT {
        s.runs
            .run_start(FlowName::new("products"), "sync", t("10:02:00"), &me)
            .await
            .unwrap();
    }
    s.runs.put_run_lines(&[]).await.unwrap();
    assert!(s.runs.run_lines(run).await.unwrap().is_empty());

    // The journal of one key, whatever its state.
    let id = s
        .journal
        .journal_begin(&entry("orders", "K-9"))
        .await
        .unwrap();
    let of_key = s
        .journal
        .journal_of_key(RecordKey::new("K-9"))
        .await
        .unwrap();
    assert_eq!(of_key.len(), 1);
    assert_eq!(of_key[0].id, id);
    assert_eq!(of_key[0].state, JournalState::Pending);
}

#[tokio::test]
async fn sqlite_store_conforms() {
    conformance(&Store::from(SqliteStore::in_memory().unwrap())).await;
}

#[tokio::test]
async fn postgres_store_conforms_and_keeps_state_across_reopen() {
    let Some(db) = pg() else { return };
    conformance(&db.open().await).await;
    let again = db.open().await;
    assert_eq!(
        again
            .bindings
            .binding_count(&Scope::new("product", "erp", "shop"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        again.bindings.cursor(FlowName::new("f")).await.unwrap(),
        Some(t("11:00:00.000001"))
    );
    assert!(
        again
            .bindings
            .is_absent(FlowName::new("stock"), RecordKey::new("B2"), t("11:00:00"))
            .await
            .unwrap(),
        "what the target lacked is kept across processes"
    );
}

/// A holder that stops inside a fenced write (its transaction holds the lease row, as a
/// process paused by the host between the token check and the commit would) does not block
/// the takeover for ever: the server ends its idle transaction, the other node takes the
/// lease, and what the stopped holder had not committed is never made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stuck_inside_a_write_does_not_block_the_takeover() {
    let Some(db) = pg() else { return };
    let store = db.open().await;
    let ttl = Duration::from_secs(3);
    let now = t("18:00:00");
    let name = "flow:stuck";
    let a = store
        .coordination
        .acquire_lease(name, "host-a:1:x", "node-a", now, ttl, None)
        .await
        .unwrap()
        .unwrap();
    // The holder's session, set up as a store sets up its own, stops between the token
    // check and the commit of a cursor write.
    let mut stuck = PostgresStore::session(&db.url).await.unwrap();
    let pid: i32 = stuck
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Should the server not end it, this ends it after 30 s, so that a regression fails
    // below instead of hanging the suite.
    let (done, watch) = tokio::sync::oneshot::channel::<()>();
    let url = db.url.clone();
    let watchdog = tokio::spawn(async move {
        if tokio::time::timeout(Duration::from_secs(30), watch)
            .await
            .is_ok()
        {
            return false;
        }
        let c = PostgresStore::session(&url).await.unwrap();
        c.query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap()
            .get::<_, bool>(0)
    });
    let tx = stuck.transaction().await.unwrap();
    let token: i64 = tx
        .query_one(
            "SELECT token FROM leases WHERE name = $1 FOR SHARE",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(token, a);
    tx.execute(
        "INSERT INTO cursors (flow, since) VALUES ('stuck', now())",
        &[],
    )
    .await
    .unwrap();

    // Past the TTL, another node asks for the lease: it gets it, once the server has ended
    // the stopped session (rather than waiting on its row lock for as long as it is stopped).
    let later = now + chrono::Duration::seconds(10);
    let b = store
        .coordination
        .acquire_lease(name, "host-b:2:y", "node-b", later, ttl, None)
        .await
        .unwrap();
    done.send(()).unwrap();
    assert!(
        !watchdog.await.unwrap(),
        "the stopped holder's session had to be ended by hand"
    );
    assert!(
        b.is_some_and(|b| b > a),
        "the takeover was refused while the stopped holder kept its transaction: {b:?}"
    );

    // Resumed, the stopped holder's commit fails and its write was never made.
    assert!(
        tx.commit().await.is_err(),
        "a write after the lease was lost"
    );
    assert_eq!(
        store.bindings.cursor(FlowName::new("stuck")).await.unwrap(),
        None
    );
}

/// An attempt to take a lease that had to wait on the lease row (its holder inside a fenced
/// write) judges the expiry when its wait ended, not when it was sent: sent 50 ms before the
/// lease runs out and kept waiting 200 ms after it is seen blocked, it takes the lease. (A
/// holder cut off from the database mid-write, whose late renewal lands when the server ends
/// its session, was otherwise still alive to every attempt sent before that.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_attempt_that_waited_on_the_row_judges_the_expiry_when_the_wait_ended() {
    let Some(db) = pg() else { return };
    let store = db.open().await;
    let ttl = Duration::from_secs(1);
    let name = "flow:waited";
    let a = store
        .coordination
        .acquire_lease(name, "host-a:1:x", "node-a", t("18:00:00"), ttl, None)
        .await
        .unwrap()
        .unwrap();
    let mut holder = PostgresStore::session(&db.url).await.unwrap();
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let tx = holder.transaction().await.unwrap();
    tx.query_one(
        "SELECT token FROM leases WHERE name = $1 FOR SHARE",
        &[&name],
    )
    .await
    .unwrap();
    let attempt = tokio::spawn({
        let store = store.clone();
        async move {
            let sent = "2026-11-26T18:00:00.950Z".parse().unwrap();
            store
                .coordination
                .acquire_lease(name, "host-b:2:y", "node-b", sent, ttl, None)
                .await
        }
    });
    // The attempt is seen blocked by the holder's session (not merely not started yet, as
    // on a loaded machine), then kept waiting past the lease's end.
    let observer = PostgresStore::session(&db.url).await.unwrap();
    let blocked = async || {
        observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                &[&holder_pid],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
    };
    let since = std::time::Instant::now();
    while !blocked().await {
        assert!(
            since.elapsed() < Duration::from_secs(30) && !attempt.is_finished(),
            "the attempt never waited for the row lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!attempt.is_finished(), "the attempt waits for the row lock");
    tx.rollback().await.unwrap();
    let b = attempt.await.unwrap().unwrap();
    assert!(
        b.is_some_and(|b| b > a),
        "a lease past its expiry when the wait ended was refused: {b:?}"
    );
}

/// Flows share a store's connections: a call waiting on a row lock another session holds
/// keeps one of them, and the other flows' calls go on meanwhile on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_on_a_row_lock_does_not_hold_up_the_other_calls() {
    let Some(db) = pg() else { return };
    let store = db.open().await;
    for flow in ["locked", "free"] {
        store
            .bindings
            .set_cursor(FlowName::new(flow), t("10:00:00"))
            .await
            .unwrap();
    }
    let mut other = PostgresStore::session(&db.url).await.unwrap();
    let tx = other.transaction().await.unwrap();
    tx.query(
        "SELECT 1 FROM cursors WHERE flow = 'locked' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .bindings
                .set_cursor(FlowName::new("locked"), t("11:00:00"))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = tokio::time::timeout(
        Duration::from_secs(3),
        store.bindings.cursor(FlowName::new("free")),
    )
    .await;
    assert_eq!(
        read.expect("a read waited for a write held up by another session's lock")
            .unwrap(),
        Some(t("10:00:00"))
    );
    assert!(!waiting.is_finished(), "the write waits for the row lock");
    tx.rollback().await.unwrap();
    waiting.await.unwrap().unwrap();
    assert_eq!(
        store
            .bindings
            .cursor(FlowName::new("locked"))
            .await
            .unwrap(),
        Some(t("11:00:00"))
    );
}

/// A connection the server ended (a restart, an administrator) is replaced by a fresh one
/// at the store's next call, not kept in the pool.
#[tokio::test]
async fn a_connection_the_server_ended_is_replaced() {
    let Some(db) = pg() else { return };
    let app = db.url.rsplit("schema=").next().unwrap().to_string();
    let url = with_params(&db.url, &format!("application_name={app}"));
    let store: Store = PostgresStore::open(&url).await.unwrap().into();
    store
        .bindings
        .set_cursor(FlowName::new("f"), t("10:00:00"))
        .await
        .unwrap();
    let admin = PostgresStore::session(&db.url).await.unwrap();
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ended >= 1, "the store's connections were found");
    // The driver learns of it when the server closes the socket.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.bindings.cursor(FlowName::new("f")).await.unwrap(),
        Some(t("10:00:00"))
    );
}

/// A run's lease dropped while its runtime shuts down (a command's runtime dropped in the
/// middle of a run) is released all the same, on either store: the next process need not
/// wait out its ttl.
fn a_lease_dropped_as_its_runtime_shuts_down_is_released(
    open: impl AsyncFnOnce(&tempfile::TempDir) -> Store,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(crate::support::harness::Harness::new(1, |_| {}));
    let store = rt.block_on(open(&h.dir));
    let engine =
        crate::support::harness::build(&h.shop, &h.erp, &h.dir, store.clone(), &h.clock, |_| {});
    let lease = rt.block_on(engine.take_lease("products")).unwrap();
    // A run holding it, cut short by the end of the runtime.
    rt.spawn(async move {
        let _held = lease;
        std::future::pending::<()>().await
    });
    drop(rt);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let leases = rt.block_on(store.coordination.leases()).unwrap();
    assert_eq!(leases, [], "the dropped lease is still held");
    drop(h);
}

#[test]
fn a_lease_dropped_as_its_runtime_shuts_down_is_released_on_sqlite() {
    a_lease_dropped_as_its_runtime_shuts_down_is_released(async |dir| {
        SqliteStore::open(&dir.path().join("leases.sqlite"))
            .unwrap()
            .into()
    });
}

#[test]
fn a_lease_dropped_as_its_runtime_shuts_down_is_released_on_postgres() {
    let Some(db) = pg() else { return };
    a_lease_dropped_as_its_runtime_shuts_down_is_released(async |_| db.open().await);
}

/// Issue 17.7 on PostgreSQL state: a SKU the unsearchable shop lacks costs one full read of
/// the shop, not one per `run --once` process.
#[tokio::test]
async fn a_missing_key_does_not_cost_a_full_read_on_every_run_on_postgres() {
    let Some(db) = pg() else { return };
    let store: Store = db.open().await;
    crate::flowfile::a_missing_key_costs_one_full_read(Some(store)).await;
}

#[tokio::test]
async fn postgres_store_answers_from_async_code() {
    let Some(db) = pg() else { return };
    // The store's calls and its connections' drivers share this runtime's one thread.
    let s = db.open().await;
    s.bindings
        .set_cursor(FlowName::new("f"), t("10:00:00"))
        .await
        .unwrap();
    let s2 = s.clone();
    let got = tokio::spawn(async move { s2.bindings.cursor(FlowName::new("f")).await.unwrap() })
        .await
        .unwrap();
    assert_eq!(got, Some(t("10:00:00")));
}

/// Runs `attempt` on `NODES` stores of one database at the same moment; how many won.
async fn race<F, Fut>(db: &PgSchema, attempt: F) -> usize
where
    F: Fn(Store, usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    const NODES: usize = 6;
    let start = Arc::new(tokio::sync::Barrier::new(NODES));
    let mut tasks = Vec::new();
    for i in 0..NODES {
        let (start, attempt) = (start.clone(), attempt(db.open().await, i));
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            attempt.await
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap() {
            won += 1;
        }
    }
    won
}

#[tokio::test]
async fn racing_nodes_get_a_lease_once() {
    let Some(db) = pg() else { return };
    let winners = race(&db, |s, i| async move {
        s.coordination
            .try_lease(
                "flow:orders",
                &format!("node-{i}"),
                t("09:00:00"),
                Duration::from_secs(30),
            )
            .await
            .unwrap()
    })
    .await;
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn racing_nodes_accept_a_delivery_once() {
    let Some(db) = pg() else { return };
    let keep = Duration::from_secs(3600);
    // An old delivery every node would prune first.
    db.open()
        .await
        .coordination
        .remember_delivery("shop_orders", "id:old", t("07:00:00"), keep)
        .await
        .unwrap();
    let winners = race(&db, |s, _| async move {
        s.coordination
            .remember_delivery("shop_orders", "id:d-1", t("09:00:00"), keep)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(winners, 1);
    let again = db.open().await;
    assert!(
        again
            .coordination
            .remember_delivery("shop_orders", "id:old", t("09:00:00"), keep)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_without_the_password() {
    let err = PostgresStore::open("postgres://erp:s3cret-pw@127.0.0.1:1/x?connect_timeout=2")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("state database error"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
    let err = erpsync::state::open("mysql://erp:s3cret-pw@db/x", std::path::Path::new("."))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "unsupported state url `mysql://erp:***@db/x`: expected `sqlite:PATH` or `postgres://…`"
    );
}

#[tokio::test]
async fn the_engine_syncs_on_postgres_state() {
    let Some(db) = pg() else { return };
    let h = crate::support::harness::Harness::new(20, |_| {}).await;
    let store: Store = erpsync::state::open(&db.url, h.dir.path()).await.unwrap();
    let engine =
        crate::support::harness::build(&h.shop, &h.erp, &h.dir, store.clone(), &h.clock, |_| {});
    let opts = RunOptions::default();
    let r = engine.run("products", &opts).await.unwrap();
    assert_eq!((r.counts.adopted, r.counts.failed), (20, 0), "{r:#?}");
    h.later(10);
    h.reset_counters();
    let again = engine.run("products", &opts).await.unwrap();
    assert_eq!(again.counts.skipped, 20, "{again:#?}");
    assert_eq!(h.writes(), (0, 0), "unchanged records must cause no write");
    assert_eq!(
        store
            .runs
            .runs(Some(FlowName::new("products")), 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// A daemon on the demo project and a shared store, named `node` in leases.
async fn daemon(
    dir: &std::path::Path,
    yaml: &str,
    node: &str,
    store: Store,
    clock: &ManualClock,
) -> Arc<Daemon> {
    let project = dir.join(node);
    std::fs::create_dir(&project).unwrap();
    let yaml = yaml.replacen("daemon:\n", &format!("daemon:\n  node_id: {node}\n"), 1);
    std::fs::write(project.join("demo.yaml"), yaml).unwrap();
    let d = crate::support::daemon::start(vec![project], clock, store, None).await;
    assert_eq!(d.node_id(), node);
    d
}

/// Events until both daemons are idle.
async fn settle(nodes: &[&Arc<Daemon>]) {
    for d in nodes {
        assert!(d.drain(Duration::from_secs(10)).await, "runs finish");
    }
}

fn drained(rx: &mut tokio::sync::broadcast::Receiver<DaemonEvent>) -> Vec<DaemonEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test]
async fn two_daemons_on_one_database_run_a_due_flow_once() {
    let Some(db) = pg() else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = ManualClock::new("2026-05-04T10:00:30Z".parse().unwrap());
    let (shop, erp) = sims(&clock).await;
    seed_both(&shop, &erp, 5, 7);
    let dir = tempfile::tempdir().unwrap();
    let yaml = demo_yaml(&shop.base_url(), &erp.base_url(), dir.path());
    let a = daemon(dir.path(), &yaml, "node-a", db.open().await, &clock).await;
    let b = daemon(dir.path(), &yaml, "node-b", db.open().await, &clock).await;
    let (mut ea, mut eb) = (a.subscribe(), b.subscribe());

    // Both nodes plan the same schedules and fire them at the same moments.
    for minutes in [2, 3, 5] {
        clock.advance(Duration::from_secs(60 * minutes));
        let now = clock.now();
        let due_a = a.tick(now);
        let due_b = b.tick(now);
        assert_eq!(due_a, due_b);
        assert!(!due_a.is_empty(), "something is due at {now}");
        settle(&[&a, &b]).await;
        let (on_a, on_b) = (drained(&mut ea), drained(&mut eb));
        for (flow, _) in &due_a {
            let started = |events: &[DaemonEvent]| {
                events
                    .iter()
                    .filter(|e| matches!(e, DaemonEvent::RunStarted { flow: f, .. } if f == flow))
                    .count()
            };
            assert_eq!(
                started(&on_a) + started(&on_b),
                1,
                "`{flow}` at {now} runs on exactly one node\nnode a: {on_a:?}\nnode b: {on_b:?}"
            );
        }
    }
    let store = db.open().await;
    let runs = store.runs.runs(None, 100).await.unwrap();
    assert!(runs.iter().all(|r| r.finished_at.is_some()), "{runs:#?}");
    // Every lease was released after its run.
    assert!(
        store
            .coordination
            .try_lease("flow:stock", "node-c", clock.now(), Duration::from_secs(1))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_flow_leased_by_a_dead_node_waits_for_its_lease_to_expire() {
    let Some(db) = pg() else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = ManualClock::new("2026-05-04T10:00:30Z".parse().unwrap());
    let (shop, erp) = sims(&clock).await;
    seed_both(&shop, &erp, 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let yaml = demo_yaml(&shop.base_url(), &erp.base_url(), dir.path()).replacen(
        "daemon:\n",
        "daemon:\n  lease_ttl_secs: 90\n",
        1,
    );
    let store = db.open().await;
    // A node took the flow and died without releasing it.
    assert!(
        store
            .coordination
            .try_lease(
                "flow:stock",
                "dead-node",
                clock.now(),
                Duration::from_secs(90)
            )
            .await
            .unwrap()
    );
    let d = daemon(dir.path(), &yaml, "node-a", store.clone(), &clock).await;
    let mut events = d.subscribe();

    // Refused at once, saying who runs it: not accepted and then skipped.
    let refused = d
        .trigger(
            "stock",
            RunOptions::default(),
            erpsync::daemon::Cause::Manual,
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        erpsync::daemon::TriggerRefusedError::Elsewhere {
            flow: "stock".into(),
            node: "dead-node".into(),
            until: clock.now() + chrono::Duration::seconds(90),
        }
    );
    settle(&[&d]).await;
    assert_eq!(drained(&mut events), []);

    clock.advance(Duration::from_secs(91));
    d.trigger(
        "stock",
        RunOptions::default(),
        erpsync::daemon::Cause::Manual,
    )
    .await
    .unwrap();
    settle(&[&d]).await;
    let got = drained(&mut events);
    assert!(
        matches!(
            &got[..],
            [
                DaemonEvent::RunStarted { .. },
                DaemonEvent::RunFinished { .. }
            ]
        ),
        "{got:?}"
    );
}

/// `url` with `params` added to its query.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

#[tokio::test]
async fn sslmode_is_honoured_as_libpq_does() {
    let Some(schema) = pg() else { return };
    let plain = PostgresStore::open(&with_params(&schema.url, "sslmode=disable"))
        .await
        .unwrap();
    assert!(!plain.encrypted().await.unwrap());
    let server_tls = PostgresStore::open(&schema.url)
        .await
        .unwrap()
        .encrypted()
        .await
        .unwrap();
    let required = PostgresStore::open(&with_params(&schema.url, "sslmode=require")).await;
    if !server_tls {
        // `prefer` fell back to plain: the server has no TLS, so `require` must refuse.
        let err = required.unwrap_err().to_string();
        assert!(err.contains("TLS") || err.contains("SSL"), "{err}");
        eprintln!("skipped the certificate checks: the test server has TLS off");
        return;
    }
    // `require` encrypts without asking whose certificate it is.
    assert!(required.unwrap().encrypted().await.unwrap());

    // The server's own certificate as the CA: its chain is good, but it names the machine,
    // not 127.0.0.1, so only `verify-ca` accepts it.
    let cert_file: String = {
        let probe = PostgresStore::open(&schema.url).await.unwrap();
        probe.setting("ssl_cert_file").await.unwrap()
    };
    if std::fs::metadata(&cert_file).is_err() {
        eprintln!("skipped the certificate checks: `{cert_file}` is not readable here");
        return;
    }
    let root = format!("sslrootcert={}", cert_file.replace('/', "%2F"));
    let ca = PostgresStore::open(&with_params(
        &schema.url,
        &format!("sslmode=verify-ca&{root}"),
    ))
    .await
    .unwrap();
    assert!(ca.encrypted().await.unwrap());
    let full = PostgresStore::open(&with_params(
        &schema.url,
        &format!("sslmode=verify-full&{root}"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(full.contains("certificate"), "{full}");

    let bad = PostgresStore::open(&with_params(&schema.url, "sslmode=always"))
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("`sslmode=always`"), "{bad}");
}
