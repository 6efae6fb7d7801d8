//! The engine against the simulators: creation both ways, adoption, one-way and bidirectional
//! updates with every conflict rule, nothing written when nothing changed, incremental reads
//! from a start date, reconciliation, dry runs, the order flows (status triggers,
//! transitions, lock, poll-back, ERP-only orders, failures and retry), and full reads whose
//! pages shift while they are read.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use erpsync::clock::Clock;
use erpsync::engine::{Decision, RunOptions, RunReport};
use erpsync::state::{
    Adopted, Binding, Bindings, Coordination, Fence, FlowName, Lease, NodeRecord, PairSide, Pruned,
    RecordKey, Scope, SqliteStore, StateWrite, Store,
};
use erpsync_sim::erp::{ErpOrderDraft, ErpProduct, SalesLine};
use erpsync_sim::shop::{Order, Product};
use erpsync_sim::{Faults, ShopHandle};
use serde_json::{Value, json};

use crate::support::harness::{Harness, build};
use crate::support::project::WAREHOUSE;

fn decisions(r: &RunReport) -> BTreeSet<(String, String)> {
    r.records
        .iter()
        .map(|x| (x.key.clone(), format!("{:?}", x.decision)))
        .collect()
}

fn decision_of(r: &RunReport, key: &str) -> Decision {
    r.records
        .iter()
        .find(|x| x.key == key)
        .unwrap_or_else(|| panic!("no record {key} in {:#?}", r.records))
        .decision
}

/// The keys of the records a run decided `decision` for, in the report's order.
fn keys_decided(r: &RunReport, decision: Decision) -> Vec<String> {
    r.records
        .iter()
        .filter(|x| x.decision == decision)
        .map(|x| x.key.clone())
        .collect()
}

fn shop_price(h: &Harness, sku: &str) -> f64 {
    h.shop.product_by_sku(sku).unwrap().price_gross.unwrap()
}

// ---------------------------------------------------------------------------------------
// Catalog

#[tokio::test]
async fn first_sync_adopts_matches_and_creates_on_both_sides() {
    let h = Harness::new(30, |_| {}).await;
    h.shop
        .create_product(Product::basic("SHOP-ONLY-1", "Doar in magazin", 59.9, 3))
        .unwrap();
    h.erp
        .create_product(ErpProduct::new("ERP-ONLY-1", "Doar in ERP", 120.0))
        .unwrap();
    h.reset_counters();

    let r = h.run("products").await;
    assert_eq!(
        (r.counts.adopted, r.counts.created, r.counts.failed),
        (30, 2, 0),
        "{r:#?}"
    );
    assert_eq!(decision_of(&r, "SHOP-ONLY-1"), Decision::Create);
    assert_eq!(h.erp.product("SHOP-ONLY-1").unwrap().price, 59.9);
    assert_eq!(
        h.erp.product("SHOP-ONLY-1").unwrap().name,
        "Doar in magazin"
    );
    assert_eq!(shop_price(&h, "ERP-ONLY-1"), 120.0);
    // Adoption wrote nothing: one create on each side.
    assert_eq!(h.writes(), (1, 1));

    h.later(10);
    h.reset_counters();
    let again = h.run("products").await;
    assert_eq!(again.counts.skipped, 32, "{again:#?}");
    assert_eq!(h.writes(), (0, 0), "unchanged records must cause no write");
}

/// A record adopted because both sides hold it alike is bound with a base on each side, the
/// same record on both (stored once, read back for both), and the next run finds nothing to
/// write. A binding lacking the target's base would hide later edits made in the target.
#[tokio::test]
async fn an_adopted_record_is_bound_with_the_same_base_on_both_sides() {
    // More records in the ERP's first page than single lookups before a full read of the
    // shop: the shop is read whole, and each record found there as it is in the ERP.
    let h = Harness::new(120, |_| {}).await;
    h.reset_counters();
    let r = h.run("stock").await;
    let adopted = keys_decided(&r, Decision::Adopt);
    assert_eq!(adopted.len(), 120, "{r:#?}");
    assert_eq!(h.writes(), (0, 0));
    let scope = Scope::new("stock", "erp", "shop");
    let keys: Vec<RecordKey> = adopted.iter().map(|k| RecordKey::new(k)).collect();
    let bound = h.store.bindings.bindings(&scope, &keys).await.unwrap();
    for key in &adopted {
        let b = &bound[key];
        let (a, shop) = (b.base(PairSide::A), b.base(PairSide::B));
        assert!(a.is_some_and(|a| a["sku"] == json!(key.as_str())), "{b:?}");
        assert_eq!(a, shop, "{key}: the two sides' bases differ");
        assert_eq!(
            (b.base_a.is_some(), b.base_b.is_some()),
            (true, true),
            "{b:?}"
        );
    }

    h.later(10);
    h.reset_counters();
    let again = h.run("stock").await;
    assert_eq!(again.counts.adopted, 0, "{again:#?}");
    assert_eq!(h.writes(), (0, 0), "unchanged records must cause no write");
}

/// The demo project with variants listed from the shop's products
/// (`$.data[*].variants[*]`): a variant's name is its product's, read through `$parent`.
fn variant_names(doc: &mut Value) {
    doc["entities"]["variant"] = json!({
        "key": "sku",
        "fields": {
            "sku": { "type": "string", "normalize": ["trim", "uppercase"] },
            "name": "string"
        }
    });
    let shop = &mut doc["systems"]["shop"];
    shop["operations"]["list_variants"] = json!({
        "path": "/products",
        "query": { "limit": "100", "include": "variants" },
        "records": "$.data[*].variants[*]",
        "paginate": { "kind": "next_url", "path": "$.meta.links.next" }
    });
    shop["entities"]["variant"] = json!({
        "list": "list_variants",
        "read": {
            "sku": "$.sku",
            "name": "$parent.name"
        },
        "write": { "sku": "$.sku" }
    });
    doc["systems"]["erp"]["entities"]["variant"] = json!({
        "id": "$.code",
        "list": "list_products",
        "lookup": "find_product",
        "update": "update_product",
        "read": { "sku": "$.code", "name": "$.name" },
        "write": { "code": "$.sku", "name": "$.name" }
    });
    doc["flows"]["variant_names"] = json!({
        "entity": "variant",
        "from": "shop",
        "to": "erp",
        "mode": "update",
        "fields": ["name"]
    });
}

#[tokio::test]
async fn a_variant_reads_its_products_title_and_a_new_title_reaches_every_variant() {
    use erpsync_sim::shop::{ProductType, Variant, VariantOption};
    let h = Harness::new(2, variant_names).await;
    let variant = |sku: &str, colour: &str| Variant {
        sku: sku.into(),
        variant_options: vec![VariantOption {
            name: "Culoare".into(),
            value: colour.into(),
        }],
        ..Variant::default()
    };
    let shirt = h
        .shop
        .create_product(Product {
            kind: ProductType::MultiVariant,
            sku: "TRICOU".into(),
            name: "Tricou".into(),
            status: "active".into(),
            variants: vec![variant("TRICOU-ROSU", "rosu"), variant("TRICOU-ALB", "alb")],
            ..Product::default()
        })
        .unwrap();
    for sku in ["TRICOU-ROSU", "TRICOU-ALB"] {
        h.erp
            .create_product(ErpProduct::new(sku, "fara nume", 49.0))
            .unwrap();
    }
    h.later(1);
    let first = h.run("variant_names").await;
    assert_eq!(
        (first.counts.read, first.counts.updated, first.counts.failed),
        (2, 2, 0),
        "two variants read, the seeded basic products have none: {first:#?}"
    );
    assert_eq!(h.erp.product("TRICOU-ALB").unwrap().name, "Tricou");

    // The merchant renames the product: the second variant's SKU takes the new title.
    h.later(10);
    h.shop
        .update_product(shirt.id, |p| p.name = "Tricou de vara".into())
        .unwrap();
    h.later(1);
    h.reset_counters();
    let r = h.run("variant_names").await;
    assert_eq!(r.counts.updated, 2, "{r:#?}");
    assert_eq!(h.erp.product("TRICOU-ALB").unwrap().name, "Tricou de vara");
    assert_eq!(h.erp.product("TRICOU-ROSU").unwrap().name, "Tricou de vara");
    let change = &r
        .records
        .iter()
        .find(|x| x.key == "TRICOU-ALB")
        .unwrap()
        .changes;
    assert_eq!(
        (change[0].field.as_str(), &change[0].new),
        ("name", &json!("Tricou de vara"))
    );
    // The variant written is the record as served: the parent is context, not payload.
    assert_eq!(
        h.shop.product_by_sku("TRICOU-ALB").unwrap().variants.len(),
        2
    );
    assert_eq!(h.writes(), (0, 2));
}

/// The demo project with a flow of product categories from the ERP into the shop, whose
/// `PATCH` replaces a product's whole `categories` list: the write merges by name with what
/// the shop holds (`merge`), so categories the merchant set in the shop stay.
fn erp_categories(doc: &mut Value) {
    doc["entities"]["listing"] = json!({
        "key": "sku",
        "fields": {
            "sku": { "type": "string", "normalize": ["trim", "uppercase"] },
            "categories": "json"
        }
    });
    doc["systems"]["shop"]["entities"]["listing"] = json!({
        "list": "list_products",
        "lookup": "find_product",
        "get": "get_product",
        "update": "update_product",
        "read": { "sku": "$.sku", "categories": "$.categories" },
        "write": {
            "categories": {
                "each": "$.categories",
                "fields": { "name": "$.name" },
                "merge": "name"
            },
            "meta_title": "{{target.name}} ({{sku}})"
        }
    });
    doc["systems"]["erp"]["entities"]["listing"] = json!({
        "id": "$.code",
        "list": "list_products",
        "lookup": "find_product",
        "read": { "sku": "$.code", "categories": "$.categories" },
        "write": { "code": "$.sku" }
    });
    doc["flows"]["erp_categories"] = json!({
        "entity": "listing",
        "from": "erp",
        "to": "shop",
        "mode": "update",
        "fields": ["categories"]
    });
}

#[tokio::test]
async fn an_update_merges_into_the_list_the_shop_holds_and_keeps_the_merchants_entries() {
    merges_categories(erp_categories).await;
}

/// The same without `get` and `lookup` in the shop: the shop's products are read in full, and
/// the merge takes each product as that reading served it.
#[tokio::test]
async fn a_merge_without_get_or_lookup_takes_the_record_the_run_read() {
    merges_categories(|doc| {
        erp_categories(doc);
        let listing = doc["systems"]["shop"]["entities"]["listing"]
            .as_object_mut()
            .unwrap();
        listing.remove("get");
        listing.remove("lookup");
    })
    .await;
}

async fn merges_categories(edit: impl FnOnce(&mut Value)) {
    let clock = erpsync::clock::ManualClock::new("2026-03-01T08:00:00Z".parse().unwrap());
    let shared: erpsync::clock::SharedClock = Arc::new(clock.clone());
    let shop = erpsync_sim::ShopSim::start(erpsync_sim::ShopOptions {
        keep_unmodelled: true,
        ..erpsync_sim::ShopOptions::unlimited().with_clock(shared.clone())
    })
    .await
    .unwrap();
    let erp = erpsync_sim::ErpSim::start(erpsync_sim::ErpOptions::unlimited().with_clock(shared))
        .await
        .unwrap();
    let items = erpsync_sim::seed_both(&shop, &erp, 2, 1);
    let sku = items[0].sku.clone();
    let id = shop.product_by_sku(&sku).unwrap().id;
    shop.update_product(id, |p| {
        p.extra.insert(
            "categories".into(),
            json!([{"id": 4, "name": "Vara"}, {"id": 9, "name": "Reduceri"}]),
        );
    })
    .unwrap();
    let name = shop.product(id).unwrap().name;
    erp.update_product(&sku, |p| {
        p.extra.insert(
            "categories".into(),
            json!([{"name": "Reduceri"}, {"name": "Noutati"}]),
        );
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::from(SqliteStore::open(&dir.path().join("state.sqlite")).unwrap());
    let engine = build(&shop, &erp, &dir, store, &clock, edit);
    clock.advance(Duration::from_secs(60));

    let r = engine
        .run("erp_categories", &RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    let p = shop.product(id).unwrap();
    assert_eq!(
        p.extra["categories"],
        json!([{"id": 4, "name": "Vara"}, {"id": 9, "name": "Reduceri"}, {"name": "Noutati"}]),
        "the merchant's category stays, the paired one keeps its id, the new one is added"
    );
    assert_eq!(p.extra["meta_title"], json!(format!("{name} ({sku})")));

    // Nothing changed in the ERP since: nothing is written again.
    clock.advance(Duration::from_secs(60));
    let again = engine
        .run("erp_categories", &RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (again.counts.updated, again.counts.failed),
        (0, 0),
        "{again:#?}"
    );
}

/// The demo's `variant_stock` flow: the stock of a multi-variant product's variants, which
/// MerchantPro keeps per variant and takes through the product (`{{parent.id}}` in the
/// variant's id, `$target.id` for the variant's own id in the body).
#[tokio::test]
async fn variant_stock_reaches_each_variant_through_its_product() {
    use erpsync_sim::shop::{ProductType, Variant};
    let h = Harness::new(2, |_| {}).await;
    let variant = |sku: &str| Variant {
        sku: sku.into(),
        stock: 0,
        ..Variant::default()
    };
    let shirt = h
        .shop
        .create_product(Product {
            kind: ProductType::MultiVariant,
            sku: "TRICOU".into(),
            name: "Tricou".into(),
            status: "active".into(),
            variants: vec![variant("TRICOU-ROSU"), variant("TRICOU-ALB")],
            ..Product::default()
        })
        .unwrap();
    for (sku, qty) in [("TRICOU-ROSU", 7), ("TRICOU-ALB", 3)] {
        h.erp
            .create_product(ErpProduct::new(sku, "Tricou", 49.0))
            .unwrap();
        h.erp.set_stock(sku, WAREHOUSE, qty).unwrap();
    }
    let stock_of = |sku: &str| {
        h.shop
            .product(shirt.id)
            .unwrap()
            .variants
            .iter()
            .find(|v| v.sku == sku)
            .map(|v| v.stock)
    };
    h.later(1);
    h.reset_counters();
    let first = h.run("variant_stock").await;
    assert_eq!(
        (first.counts.updated, first.counts.failed),
        (2, 0),
        "{first:#?}"
    );
    assert_eq!(stock_of("TRICOU-ROSU"), Some(7));
    assert_eq!(stock_of("TRICOU-ALB"), Some(3));
    assert_eq!(h.shop.product(shirt.id).unwrap().variants.len(), 2);
    assert_eq!(h.writes(), (2, 0), "one PATCH of the product per variant");

    // One variant sells out in the ERP: only it is written.
    h.later(10);
    h.erp.set_stock("TRICOU-ALB", WAREHOUSE, 0).unwrap();
    h.later(1);
    h.reset_counters();
    let r = h.run("variant_stock").await;
    assert_eq!((r.counts.updated, r.counts.failed), (1, 0), "{r:#?}");
    assert_eq!(stock_of("TRICOU-ALB"), Some(0));
    assert_eq!(stock_of("TRICOU-ROSU"), Some(7));
    assert_eq!(h.writes(), (1, 0));
}

#[tokio::test]
async fn one_way_stock_updates_only_what_changed() {
    let h = Harness::new(40, |_| {}).await;
    let first = h.run("stock").await;
    assert_eq!(first.counts.adopted, 40, "{first:#?}");
    h.later(10);
    for (i, sku) in ["SKU-000003", "SKU-000007", "SKU-000011"]
        .iter()
        .enumerate()
    {
        h.erp.set_stock(sku, WAREHOUSE, 500 + i as i64);
    }
    h.later(1);
    h.reset_counters();
    let r = h.run("stock").await;
    assert_eq!(r.counts.updated, 3, "{r:#?}");
    assert_eq!(
        h.shop.product_by_sku("SKU-000007").unwrap().stock,
        Some(501)
    );
    assert_eq!(h.writes(), (3, 0), "one PATCH per changed stock level");
    let changes = &r
        .records
        .iter()
        .find(|x| x.key == "SKU-000003")
        .unwrap()
        .changes;
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].field.as_str(), &changes[0].new),
        ("quantity", &json!(500))
    );

    h.later(10);
    h.reset_counters();
    let quiet = h.run("stock").await;
    assert_eq!(quiet.counts.updated, 0);
    assert_eq!(h.writes(), (0, 0));
}

#[tokio::test]
async fn incremental_stock_starts_at_the_configured_date() {
    let h = Harness::new(25, |doc| {
        doc["flows"]["stock"]["incremental"]["start"] = json!("2026-03-01T09:00:00Z");
    })
    .await;
    // Seeded at 08:00, before the start: not read. Changed at 10:00: read.
    h.clock.set("2026-03-01T10:00:00Z".parse().unwrap());
    for (i, sku) in ["SKU-000001", "SKU-000002", "SKU-000003", "SKU-000004"]
        .iter()
        .enumerate()
    {
        let before = h.erp.stock(sku, WAREHOUSE).unwrap().quantity;
        h.erp.set_stock(sku, WAREHOUSE, before + 70 + i as i64);
    }
    h.later(1);
    let r = h.run("stock").await;
    assert_eq!(r.counts.read, 4, "{r:#?}");
    assert_eq!(r.counts.updated, 4);
    let erp4 = h.erp.stock("SKU-000004", WAREHOUSE).unwrap().quantity;
    assert_eq!(
        h.shop.product_by_sku("SKU-000004").unwrap().stock,
        Some(erp4)
    );
    let cursor = h.cursor("stock").await.unwrap();
    assert_eq!(cursor.to_rfc3339(), "2026-03-01T10:01:00+00:00");

    // The next run reads from the cursor less the 60 s overlap (10:00:00): the four records
    // stamped 10:00 are read again and skipped, the new change is written, nothing older.
    h.later(30);
    h.erp.set_stock("SKU-000010", WAREHOUSE, 5);
    h.later(1);
    let next = h.run("stock").await;
    let c = &next.counts;
    assert_eq!((c.read, c.updated, c.skipped), (5, 1, 4), "{next:#?}");
}

#[tokio::test]
async fn reconciliation_corrects_drift_the_incremental_run_cannot_see() {
    let h = Harness::new(30, |_| {}).await;
    h.run("stock").await;
    h.later(10);
    // Stock edited by hand in the shop: the ERP did not change, so no incremental run reads it.
    for sku in ["SKU-000005", "SKU-000006", "SKU-000007"] {
        let p = h.shop.product_by_sku(sku).unwrap();
        h.shop.update_product(p.id, |p| p.stock = Some(999));
    }
    h.later(1);
    let incremental = h.run("stock").await;
    assert_eq!(incremental.counts.updated, 0);
    assert_eq!(
        h.shop.product_by_sku("SKU-000006").unwrap().stock,
        Some(999)
    );

    let r = h
        .run_with(
            "stock",
            RunOptions {
                reconcile: true,
                details: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!((r.counts.corrected, r.counts.updated), (3, 3), "{r:#?}");
    assert_eq!(r.counts.skipped, 27);
    let erp_stock = h.erp.stock("SKU-000006", WAREHOUSE).unwrap().quantity;
    assert_eq!(
        h.shop.product_by_sku("SKU-000006").unwrap().stock,
        Some(erp_stock)
    );
    let line = r.records.iter().find(|x| x.key == "SKU-000005").unwrap();
    assert_eq!(line.reason.as_deref(), Some("drift corrected"));
    assert_eq!(line.changes[0].old, json!(999));
}

/// `reconcile: { correct: false }`, run as a person would (`run --once --reconcile`): the
/// drift is found and said, record by record with what differs, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciliation_that_only_reports_says_what_drifted_and_writes_nothing() {
    use crate::support::binary::{Project, text};
    let p = Project::start(10, |doc| {
        doc["flows"]["stock"]["reconcile"]["correct"] = json!(false);
    })
    .await;
    let first = p.run(&["run", "--once", "--flow", "stock"]);
    assert!(first.status.success(), "{}", text(&first));
    for sku in ["SKU-000003", "SKU-000004"] {
        let id = p.shop.product_by_sku(sku).unwrap().id;
        p.shop.update_product(id, |x| x.stock = Some(999));
    }
    let writes = p.shop.counters().writes();
    let out = p.run(&["run", "--once", "--flow", "stock", "--reconcile"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("drift found (not corrected) 2"), "{said}");
    assert!(
        said.contains("SKU-000003") && said.contains("not corrected (`reconcile.correct: false`)"),
        "{said}"
    );
    assert_eq!(
        p.shop.counters().writes(),
        writes,
        "nothing written: {said}"
    );
    assert_eq!(
        p.shop.product_by_sku("SKU-000004").unwrap().stock,
        Some(999)
    );
}

#[tokio::test]
async fn bidirectional_writes_to_the_source_do_not_make_its_listing_skip_records() {
    // The shop lists by modification time, 100 a page: a write to a record already read
    // moves it to the end and shifts the rest, so a naive listing would skip records.
    let h = Harness::new(250, |_| {}).await;
    let first = h.run("products").await;
    assert_eq!(first.counts.adopted, 250, "{first:#?}");
    h.later(10);
    // Every shop record changed (so the incremental listing reads all of them), and every
    // other one has a new price in the ERP that must be written back to the shop.
    for p in h.shop.products() {
        h.shop
            .update_product(p.id, |p| p.name = format!("{} nou", p.name));
    }
    h.later(1);
    for (i, p) in h.shop.products().iter().enumerate() {
        if i % 2 == 0 {
            h.erp.update_product(&p.sku, |e| e.price += 7.0);
        }
    }
    h.later(1);
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!(
        (r.counts.read, r.counts.failed),
        (250, 0),
        "{:#?}",
        r.counts
    );
    assert_eq!(r.counts.updated, 250, "{:#?}", r.counts);
    let keys: BTreeSet<&str> = r.records.iter().map(|x| x.key.as_str()).collect();
    assert_eq!(keys.len(), 250, "every record reported");
    for p in h.shop.products() {
        let e = h.erp.product(&p.sku).unwrap();
        assert_eq!(e.name, p.name, "{}: shop name reached the ERP", p.sku);
        assert_eq!(
            Some(e.price),
            p.price_gross,
            "{}: ERP price reached the shop",
            p.sku
        );
    }
    // 125 prices written to the shop, 250 names to the ERP, each once.
    assert_eq!(h.writes(), (125, 250));
}

#[tokio::test]
async fn shifting_pages_never_hide_a_change_from_later_runs() {
    // Someone else edits the shop while erpsync pages through it (`page_drift`): every page
    // that has a successor sees its first record modified, which shifts the list by one, so
    // a record slides across the page boundary and is not served in that run. The cursor
    // must stay early enough that the next run reads it.
    changes_survive_shifting_pages(false).await;
}

/// A product's name and stamp on one side (`erp`, or the shop), by SKU.
fn names(h: &Harness, erp: bool) -> Vec<(String, String, DateTime<Utc>)> {
    if erp {
        let all = h.erp.products().into_iter();
        all.map(|e| (e.code, e.name, e.updated_at)).collect()
    } else {
        let all = h.shop.products().into_iter();
        all.map(|p| (p.sku, p.name, p.updated_at)).collect()
    }
}

/// Three rounds of renaming every product on one side (`erp`, or the shop) while that side's
/// pages shift as the bidirectional product flow reads them: after each run, every rename not
/// yet on the other side is after the cursor; once the shifting stops, all of them arrive.
async fn changes_survive_shifting_pages(erp: bool) {
    let h = Harness::new(250, |_| {}).await;
    h.run("products").await;
    let faults = if erp { h.erp.faults() } else { h.shop.faults() };
    drifting(faults);
    for round in 1..=3 {
        h.later(10);
        for (sku, _, _) in names(&h, erp) {
            let name = format!("{sku} r{round}");
            if erp {
                h.erp.update_product(&sku, |e| e.name = name);
            } else {
                let id = h.shop.product_by_sku(&sku).unwrap().id;
                h.shop.update_product(id, |p| p.name = name);
            }
        }
        h.later(1);
        let r = h.run("products").await;
        assert!(r.ok(), "{:?}", r.errors);
        // Whatever has not crossed yet must be after the cursor, where the next run reads.
        let cursor = h.cursor("products").await.unwrap();
        let across: HashMap<String, String> = names(&h, !erp)
            .into_iter()
            .map(|(sku, name, _)| (sku, name))
            .collect();
        for (sku, name, at) in names(&h, erp) {
            if across[&sku] != name {
                assert!(
                    at > cursor,
                    "round {round}: {sku} ({at}) is behind the cursor {cursor}"
                );
            }
        }
    }
    faults.set(Faults::default());
    h.later(10);
    h.run("products").await;
    let across: HashMap<String, String> = names(&h, !erp)
        .into_iter()
        .map(|(sku, name, _)| (sku, name))
        .collect();
    for (sku, name, _) in names(&h, erp) {
        assert_eq!(across[&sku], name, "{sku}");
    }
}

/// The bindings of a store, counting the reads they serve.
#[derive(Debug)]
struct CountingBindings {
    inner: Arc<dyn Bindings>,
    binding_reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Bindings for CountingBindings {
    async fn bindings(
        &self,
        scope: &Scope,
        keys: &[RecordKey<'_>],
    ) -> erpsync::state::Result<HashMap<String, Binding>> {
        self.binding_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.bindings(scope, keys).await
    }
    async fn all_bindings(&self, scope: &Scope) -> erpsync::state::Result<Vec<Binding>> {
        self.inner.all_bindings(scope).await
    }
    async fn binding_count(&self, scope: &Scope) -> erpsync::state::Result<usize> {
        self.inner.binding_count(scope).await
    }
    async fn put_bindings(&self, scope: &Scope, b: Vec<Binding>) -> erpsync::state::Result<()> {
        self.inner.put_bindings(scope, b).await
    }
    async fn put_held(
        &self,
        scope: &Scope,
        b: Vec<Binding>,
        adopted: Vec<Adopted>,
    ) -> erpsync::state::Result<()> {
        self.inner.put_held(scope, b, adopted).await
    }
    async fn cursor(&self, flow: FlowName<'_>) -> erpsync::state::Result<Option<DateTime<Utc>>> {
        self.inner.cursor(flow).await
    }
    async fn set_cursor(
        &self,
        flow: FlowName<'_>,
        at: DateTime<Utc>,
    ) -> erpsync::state::Result<()> {
        self.inner.set_cursor(flow, at).await
    }
    async fn is_absent(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        since: DateTime<Utc>,
    ) -> erpsync::state::Result<bool> {
        self.inner.is_absent(flow, key, since).await
    }
    async fn note_absent(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
        at: DateTime<Utc>,
    ) -> erpsync::state::Result<()> {
        self.inner.note_absent(flow, key, at).await
    }
    async fn forget_absent(
        &self,
        flow: FlowName<'_>,
        key: RecordKey<'_>,
    ) -> erpsync::state::Result<()> {
        self.inner.forget_absent(flow, key).await
    }
    async fn awaiting_actions(&self, scope: &Scope) -> erpsync::state::Result<Vec<Binding>> {
        self.inner.awaiting_actions(scope).await
    }
}

/// A store's coordination, noting how many bindings each write of bindings a run makes
/// under its lease holds (each write one transaction).
#[derive(Debug)]
struct CountingCoordination {
    inner: Arc<dyn Coordination>,
    binding_writes: std::sync::Mutex<Vec<usize>>,
    /// Of those bindings, the records adopted alike (written from their packed form).
    adopted_alike: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Coordination for CountingCoordination {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        node: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        take_from: Option<&str>,
    ) -> erpsync::state::Result<Option<i64>> {
        let inner = &self.inner;
        inner
            .acquire_lease(name, holder, node, now, ttl, take_from)
            .await
    }
    async fn renew_lease(
        &self,
        name: &str,
        token: i64,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> erpsync::state::Result<bool> {
        self.inner.renew_lease(name, token, now, ttl).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> erpsync::state::Result<()> {
        self.inner.release_lease(name, holder).await
    }
    async fn leases(&self) -> erpsync::state::Result<Vec<Lease>> {
        self.inner.leases().await
    }
    async fn claim_firing(&self, name: &str, at: DateTime<Utc>) -> erpsync::state::Result<bool> {
        self.inner.claim_firing(name, at).await
    }
    async fn remember_delivery(
        &self,
        webhook: &str,
        id: &str,
        at: DateTime<Utc>,
        keep: Duration,
    ) -> erpsync::state::Result<bool> {
        self.inner.remember_delivery(webhook, id, at, keep).await
    }
    async fn forget_delivery(&self, webhook: &str, id: &str) -> erpsync::state::Result<()> {
        self.inner.forget_delivery(webhook, id).await
    }
    async fn fenced(&self, fence: &Fence, write: StateWrite) -> erpsync::state::Result<i64> {
        match &write {
            StateWrite::PutBindings(_, b) => self.binding_writes.lock().unwrap().push(b.len()),
            StateWrite::PutHeld(_, b, a) => {
                self.binding_writes.lock().unwrap().push(b.len() + a.len());
                self.adopted_alike
                    .fetch_add(a.len(), std::sync::atomic::Ordering::Relaxed);
            }
            _ => {}
        }
        self.inner.fenced(fence, write).await
    }
    async fn heartbeat(
        &self,
        instance: &str,
        node: &str,
        now: DateTime<Utc>,
    ) -> erpsync::state::Result<Vec<NodeRecord>> {
        self.inner.heartbeat(instance, node, now).await
    }
    async fn prune(
        &self,
        runs_before: DateTime<Utc>,
        nodes_before: DateTime<Utc>,
    ) -> erpsync::state::Result<Pruned> {
        self.inner.prune(runs_before, nodes_before).await
    }
}

#[tokio::test]
async fn bindings_are_read_once_per_page() {
    let h = Harness::new(250, |_| {}).await;
    let counted = Arc::new(CountingBindings {
        inner: h.store.bindings.clone(),
        binding_reads: Default::default(),
    });
    let store = Store {
        bindings: counted.clone(),
        ..h.store.clone()
    };
    let engine = h.engine_on(store);
    let opts = RunOptions {
        details: true,
        ..Default::default()
    };
    let reads = || {
        counted
            .binding_reads
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    };
    // One page of 250 stock levels in the ERP.
    let first = engine.run("stock", &opts).await.unwrap();
    assert_eq!(first.counts.adopted, 250, "{:#?}", first.counts);
    assert!(reads() <= 3, "one binding read per page");
    h.later(10);
    for sku in ["SKU-000003", "SKU-000100", "SKU-000201"] {
        h.erp.set_stock(sku, WAREHOUSE, 4321);
    }
    h.later(1);
    let full = engine
        .run(
            "stock",
            &RunOptions {
                full: true,
                details: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c = &full.counts;
    assert_eq!((c.read, c.updated, c.skipped), (250, 3, 247), "{c:#?}");
    assert!(reads() <= 3, "one binding read per page");
    assert_eq!(
        h.shop.product_by_sku("SKU-000100").unwrap().stock,
        Some(4321)
    );
}

/// Runs `flow` on `h`'s store under a coordination that counts the writes of bindings.
async fn counted_run(h: &Harness, flow: &str) -> (RunReport, Arc<CountingCoordination>) {
    let counted = Arc::new(CountingCoordination {
        inner: h.store.coordination.clone(),
        binding_writes: Default::default(),
        adopted_alike: Default::default(),
    });
    let store = Store {
        coordination: counted.clone(),
        ..h.store.clone()
    };
    let r = h
        .engine_on(store)
        .run(flow, &RunOptions::default())
        .await
        .unwrap();
    (r, counted)
}

/// A binding row as the state file holds it: key, ids, the bytes of its base columns,
/// exported_at, parked, actions_done.
type StoredRow = (
    String,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    bool,
);

/// Every binding row of `h`'s state file, in key order.
fn stored_rows(h: &Harness) -> Vec<StoredRow> {
    let conn = rusqlite::Connection::open(h.dir.path().join("state.sqlite")).unwrap();
    let mut q = conn
        .prepare(
            "SELECT key, id_a, id_b, base_a, base_b, base_b_delta, exported_at, parked,
                    actions_done
             FROM bindings ORDER BY key",
        )
        .unwrap();
    q.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Products from the ERP with both sides' records of the same fields (the shop maps no VAT
/// rate); with `keep_all`, a filter that keeps every record, which makes a run decide each
/// record whole.
fn alike_flows(doc: &mut Value, keep_all: bool) {
    products_from_erp(doc);
    let read = &mut doc["systems"]["erp"]["entities"]["product"]["read"];
    read.as_object_mut().unwrap().remove("vat_rate");
    if keep_all {
        doc["flows"]["products"]["filter"] = json!("@.sku != null");
    }
}

/// 250 products on both sides before a first sync (`alike_flows`): the ERP's price of
/// `changed` raised, every other shop product touched (the same fields, a later stamp).
async fn alike_first_sync(keep_all: bool, changed: &[&str]) -> Harness {
    let h = Harness::new(250, |doc| alike_flows(doc, keep_all)).await;
    for sku in changed {
        h.erp.update_product(sku, |p| p.price += 7.0).unwrap();
    }
    h.later(1);
    for p in h.shop.products().iter().step_by(2) {
        h.shop.update_product(p.id, |_| {});
    }
    h.later(1);
    h
}

/// A dry run of a first sync adopts records alike as the run does, writing nothing: the
/// same decisions as deciding each record whole, and the bindings the run would store
/// planned, so that a second dry run over the plan finds every record bound and plans what
/// it plans after records decided whole. The run then does what the first dry run said.
#[tokio::test]
async fn a_dry_run_adopts_alike_and_plans_the_bindings_the_run_stores() {
    let changed = ["SKU-000007", "SKU-000120", "SKU-000233"];
    let mut outcomes = Vec::new();
    for keep_all in [false, true] {
        let h = alike_first_sync(keep_all, &changed).await;
        let planner = build(&h.shop, &h.erp, &h.dir, h.store.clone(), &h.clock, |doc| {
            alike_flows(doc, keep_all)
        })
        .planning();
        let dry = RunOptions {
            dry_run: true,
            ..Default::default()
        };
        h.reset_counters();
        let plan = planner.run("products", &dry).await.unwrap();
        let c = &plan.counts;
        assert_eq!(
            (c.read, c.adopted, c.updated, c.failed),
            (250, 247, 3, 0),
            "keep_all {keep_all}: {c:#?}"
        );
        assert_eq!(planner.plan_held().0, 250, "every binding planned");
        let scope = Scope::new("product", "erp", "shop");
        let planned = planner.planned_bindings(&scope);
        let again = planner.run("products", &dry).await.unwrap();
        assert_eq!(
            (again.counts.adopted, again.counts.failed),
            (0, 0),
            "keep_all {keep_all}: the plan binds every record: {:#?}",
            again.counts
        );
        assert_eq!(h.writes(), (0, 0), "a dry run writes nothing");
        let r = h.run("products").await;
        assert_eq!(decisions(&r), decisions(&plan), "keep_all {keep_all}");
        assert_eq!(r.counts, plan.counts);
        // Each adoption planned as the binding the run stored, ids and bases alike.
        let settled = |mut b: Binding| {
            b.settle_bases();
            b
        };
        let stored: HashMap<String, Binding> = h
            .store
            .bindings
            .all_bindings(&scope)
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.key.clone(), settled(b)))
            .collect();
        let adopted: Vec<Binding> = planned
            .into_iter()
            .filter(|b| !changed.contains(&b.key.as_str()))
            .map(settled)
            .collect();
        assert_eq!(adopted.len(), 247);
        for b in &adopted {
            assert_eq!(Some(b), stored.get(&b.key), "keep_all {keep_all}");
        }
        outcomes.push((decisions(&plan), decisions(&again), again.counts));
    }
    assert_eq!(outcomes[0], outcomes[1], "adopted alike and decided whole");
}

/// A first sync adopts the records its target holds alike from the packed form it compared
/// them in; what it stores is, byte for byte, what deciding each record whole stores (a
/// filter that keeps every record makes a run decide them whole): records the same on both
/// sides kept once, records alike but for their stamps kept as one and its differences.
#[tokio::test]
async fn records_adopted_alike_are_stored_as_records_decided_whole() {
    let changed = ["SKU-000007", "SKU-000120", "SKU-000233"];
    let mut runs = Vec::new();
    for keep_all in [false, true] {
        let h = alike_first_sync(keep_all, &changed).await;
        let (r, counted) = counted_run(&h, "products").await;
        let c = &r.counts;
        assert_eq!(
            (c.read, c.adopted, c.updated, c.failed),
            (250, 247, 3, 0),
            "{c:#?}"
        );
        let alike = counted
            .adopted_alike
            .load(std::sync::atomic::Ordering::Relaxed);
        runs.push((stored_rows(&h), alike));
    }
    let [(alike_rows, alike), (whole_rows, whole)] = <[_; 2]>::try_from(runs).unwrap();
    // Every adoption but the first, whose lookup reads the shop in full.
    assert_eq!((alike, whole), (246, 0));
    assert_eq!(alike_rows.len(), 250);
    // Kept once (no side `b`, no difference) and kept as side `a` and its differences.
    let empty: Option<Vec<u8>> = Some(vec![0xB1, 8, 0]);
    let once = alike_rows.iter().filter(|r| r.4.is_none() && r.5 == empty);
    let apart = alike_rows
        .iter()
        .filter(|r| r.4.is_none() && r.5.is_some() && r.5 != empty);
    assert_eq!((once.count(), apart.count()), (125, 125));
    assert_eq!(alike_rows, whole_rows);
}

/// A key the source serves twice in one page (two ERP codes that normalise alike): the first
/// reading is adopted alike and held back; the second, different, is decided against it as
/// bound, and its update binds at once. The held adoption, stale, is not written after it.
#[tokio::test]
async fn a_key_served_again_after_its_alike_adoption_keeps_the_later_binding() {
    // 81 records in the ERP's first page: the shop is read in full at the first lookup.
    let h = Harness::new(80, products_from_erp).await;
    let later = "Acelasi cod, alt produs";
    h.erp
        .create_product(ErpProduct::new("sku-000003", later, 99.5))
        .unwrap();
    h.later(1);
    let (r, counted) = counted_run(&h, "products").await;
    let c = &r.counts;
    assert_eq!(
        (c.read, c.adopted, c.updated, c.failed, c.created),
        (81, 80, 1, 0, 0),
        "{c:#?}"
    );
    assert!(
        counted
            .adopted_alike
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "records adopted alike"
    );
    let shop = h.shop.product_by_sku("SKU-000003").unwrap();
    assert_eq!((shop.name.as_str(), shop.price_gross), (later, Some(99.5)));
    assert_eq!(h.shop.product_count(), 80);
    let scope = Scope::new("product", "erp", "shop");
    let bound = h.store.bindings.all_bindings(&scope).await.unwrap();
    assert_eq!(bound.len(), 80);
    let b = bound.iter().find(|b| b.key == "SKU-000003").unwrap();
    for side in [PairSide::A, PairSide::B] {
        assert_eq!(b.base(side).unwrap()["name"], later, "{side:?}");
    }
}

/// A first sync of 200 products one way, from the ERP to the shop (`edit` changes the project
/// further), where 5 prices differ, spread over the ERP's two pages of 100: its counts, the
/// sizes of the writes of bindings it made under its lease (each one transaction), sorted;
/// every record ends bound and every price sent.
async fn first_sync_updating_five(edit: impl FnOnce(&mut Value)) -> (RunReport, Vec<usize>) {
    let h = Harness::new(200, |doc| {
        products_from_erp(doc);
        edit(doc);
    })
    .await;
    let changed = [
        "SKU-000010",
        "SKU-000050",
        "SKU-000090",
        "SKU-000130",
        "SKU-000170",
    ];
    for sku in changed {
        h.erp.update_product(sku, |p| p.price += 7.0).unwrap();
    }
    h.later(1);
    let (r, counted) = counted_run(&h, "products").await;
    let c = &r.counts;
    assert_eq!((c.read, c.adopted, c.updated), (200, 195, 5), "{c:#?}");
    let scope = Scope::new("product", "erp", "shop");
    let bound = h.store.bindings.all_bindings(&scope).await.unwrap();
    assert_eq!(bound.len(), 200);
    assert!(bound.iter().all(|b| b.id_a.is_some() && b.id_b.is_some()));
    for sku in changed {
        let erp_price = h.erp.product(sku).unwrap().price;
        let shop_price = h.shop.product_by_sku(sku).unwrap().price_gross;
        assert_eq!(shop_price, Some(erp_price), "{sku}");
    }
    let mut writes = counted.binding_writes.lock().unwrap().clone();
    writes.sort();
    (r, writes)
}

/// A first sync that updates a few records among those it adopts binds the adopted ones
/// with their page, in one write, not in one write before each update (the demo's write
/// mapping resolves no reference).
#[tokio::test]
async fn updates_among_adoptions_do_not_split_the_page_s_binding_write() {
    let (_, writes) = first_sync_updating_five(|_| {}).await;
    // Each update binds its record at once; the adoptions of each page go in one write.
    assert_eq!(writes, [1, 1, 1, 1, 1, 97, 98]);
}

/// A write mapping that resolves a reference reads bindings from the store: the ones held
/// back are written before each update, so a reference to a product the page adopted just
/// before resolves (held, it would not be found and the update would fail).
#[tokio::test]
async fn a_write_mapping_resolving_references_finds_the_page_s_adoptions() {
    let (r, writes) = first_sync_updating_five(|doc| {
        // The shop's product entity of flows/common/merchantpro.yaml, with one field more.
        doc["systems"]["shop"]["entities"]["product"] = json!({
            "list": "list_products",
            "lookup": "find_product",
            "get": "get_product",
            "create": "create_product",
            "update": "update_product",
            "read": {
                "sku": "$.sku",
                "name": "$.name",
                "price": "$.price_gross",
                "active": "{{#if (eq status 'active')}}true{{else}}false{{/if}}",
                "updated_at": "$.updated_at"
            },
            "write": {
                "type": {"const": "basic"},
                "sku": "$.sku",
                "name": "$.name",
                "price_gross": "$.price",
                "status": {"lookup": {"table": "active_status", "key": "$.active"}},
                "parent_id": {"ref": {"entity": "product", "key": "{{#if sku}}SKU-000001{{/if}}"}}
            }
        });
    })
    .await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    // Before each update, what its page had adopted so far: one write more a page than
    // updates in it.
    assert!(writes.len() > 7, "{writes:?}");
    assert_eq!(writes.iter().sum::<usize>(), 200, "{writes:?}");
}

/// Changes the price of SKU-000001 on both sides: the shop first, the ERP ten minutes later.
async fn conflicting_prices(rule: Value) -> (Harness, RunReport) {
    let h = Harness::new(10, |doc| doc["flows"]["products"]["conflict"] = rule).await;
    h.run("products").await;
    h.later(10);
    let p = h.shop.product_by_sku("SKU-000001").unwrap();
    h.shop.update_product(p.id, |p| p.price_gross = Some(111.0));
    let q = h.shop.product_by_sku("SKU-000002").unwrap();
    h.shop.update_product(q.id, |p| p.name = "Nume nou".into());
    h.later(10);
    h.erp.update_product("SKU-000001", |p| p.price = 222.0);
    h.later(1);
    let r = h.run("products").await;
    // A change on one side only is no conflict, whatever the rule.
    assert_eq!(h.erp.product("SKU-000002").unwrap().name, "Nume nou");
    (h, r)
}

#[tokio::test]
async fn bidirectional_conflicts_follow_the_flow_rule() {
    for (rule, expected) in [
        (json!({"rule": "erp_wins"}), 222.0),
        (json!({"rule": "shop_wins"}), 111.0),
        (json!({"rule": "newest_wins"}), 222.0),
        (json!({"rule": "owner", "owners": {"price": "shop"}}), 111.0),
    ] {
        let (h, r) = conflicting_prices(rule.clone()).await;
        assert_eq!(decision_of(&r, "SKU-000001"), Decision::Conflict, "{rule}");
        assert_eq!(shop_price(&h, "SKU-000001"), expected, "{rule}");
        assert_eq!(
            h.erp.product("SKU-000001").unwrap().price,
            expected,
            "{rule}"
        );
        assert_eq!(r.counts.conflicts, 1, "{rule}");
        // Echo suppression: what was just written is not synced back.
        h.later(10);
        h.reset_counters();
        let quiet = h.run("products").await;
        assert_eq!(h.writes(), (0, 0), "{rule}: {quiet:#?}");
    }
}

#[tokio::test]
async fn newest_wins_takes_the_later_side() {
    let h = Harness::new(5, |doc| {
        doc["flows"]["products"]["conflict"] = json!({"rule": "newest_wins"})
    })
    .await;
    h.run("products").await;
    h.later(10);
    h.erp.update_product("SKU-000001", |p| p.price = 222.0);
    h.later(10);
    let p = h.shop.product_by_sku("SKU-000001").unwrap();
    h.shop.update_product(p.id, |p| p.price_gross = Some(111.0));
    h.later(1);
    h.run("products").await;
    assert_eq!(h.erp.product("SKU-000001").unwrap().price, 111.0);
}

#[tokio::test]
async fn park_leaves_both_sides_alone_for_review() {
    let (h, r) = conflicting_prices(json!({"rule": "park"})).await;
    assert_eq!(decision_of(&r, "SKU-000001"), Decision::Park);
    assert_eq!(r.counts.parked, 1);
    assert_eq!(shop_price(&h, "SKU-000001"), 111.0);
    assert_eq!(h.erp.product("SKU-000001").unwrap().price, 222.0);
    let reason = r
        .records
        .iter()
        .find(|x| x.key == "SKU-000001")
        .unwrap()
        .reason
        .clone();
    assert!(reason.unwrap().contains("`price`"));
}

#[tokio::test]
async fn dry_run_writes_nothing_and_predicts_the_run() {
    let h = Harness::new(20, |_| {}).await;
    h.shop
        .create_product(Product::basic("SHOP-NEW", "Nou", 10.0, 1))
        .unwrap();
    h.erp.set_stock("SKU-000004", WAREHOUSE, 3);
    h.shop.seed_orders(6, 3);
    h.reset_counters();
    let flows = ["products", "stock", "orders_to_erp"];
    // Each flow is planned, then run: the run must do exactly what the plan said. (Planning
    // every flow up front could not foresee what an earlier flow's run changes.)
    let mut created = 0;
    let mut total = (0, 0);
    for f in flows {
        h.reset_counters();
        let plan = h
            .run_with(
                f,
                RunOptions {
                    dry_run: true,
                    ..Default::default()
                },
            )
            .await;
        assert!(plan.dry_run);
        assert_eq!(h.writes(), (0, 0), "{f}: a dry run sends no write");
        assert!(
            h.store
                .runs
                .runs(Some(FlowName::new(f)), 10)
                .await
                .unwrap()
                .is_empty(),
            "{f}: a dry run records no run"
        );
        assert!(
            h.cursor(f).await.is_none(),
            "{f}: a dry run moves no cursor"
        );
        created += plan.counts.created;
        let r = h.run(f).await;
        assert_eq!(
            decisions(&r),
            decisions(&plan),
            "{f}: the run did what the dry run said"
        );
        assert_eq!(r.counts, plan.counts, "{f}");
        let w = h.writes();
        total = (total.0 + w.0, total.1 + w.1);
    }
    assert!(created >= 2, "a product and orders were to be created");
    assert!(total.0 > 0 && total.1 > 0);
}

// ---------------------------------------------------------------------------------------
// Orders

fn place(h: &Harness, status: &str, skus: &[(&str, i64)]) -> Order {
    let lines: Vec<(&str, i64, f64)> = skus
        .iter()
        .map(|(s, q)| (*s, *q, shop_price(h, s)))
        .collect();
    let mut o = Order::new("ana.pop@example.com", &lines);
    o.customer.first_name = "Ana".into();
    o.customer.last_name = "Pop".into();
    o.shipping_status = status.into();
    h.shop.create_order(o).unwrap()
}

fn exported(h: &Harness) -> BTreeSet<String> {
    h.erp
        .orders()
        .into_iter()
        .filter_map(|o| o.reference)
        .collect()
}

#[tokio::test]
async fn orders_are_exported_at_the_configured_statuses() {
    let h = Harness::new(5, |doc| {
        doc["flows"]["orders_to_erp"]["trigger"]["on_status"]["in"] = json!(["pending"]);
    })
    .await;
    let pending = place(&h, "awaiting", &[("SKU-000001", 1)]);
    let confirmed = place(&h, "confirmed", &[("SKU-000002", 2)]);
    let r = h.run("orders_to_erp").await;
    assert_eq!(r.counts.created, 1, "{r:#?}");
    assert_eq!(exported(&h), BTreeSet::from([pending.number.clone()]));

    let mut h = h;
    h.reload(|doc| {
        doc["flows"]["orders_to_erp"]["trigger"]["on_status"]["in"] =
            json!(["confirmed", "processing"]);
    });
    let processing = place(&h, "in_process", &[("SKU-000003", 1)]);
    h.run("orders_to_erp").await;
    assert_eq!(
        exported(&h),
        BTreeSet::from([pending.number, confirmed.number, processing.number])
    );
    // The customer was created in the ERP first and the order references it.
    let client = h.erp.client_by_email("ana.pop@example.com").unwrap();
    assert!(h.erp.orders().iter().all(|o| o.client.id == client.id));
}

#[tokio::test]
async fn a_transition_trigger_fires_once() {
    let h = Harness::new(5, |doc| {
        let t = &mut doc["flows"]["orders_to_erp"]["trigger"];
        t.as_object_mut().unwrap().remove("on_status");
        t["on_transition"] = json!({"field": "status", "from": ["pending"], "to": ["confirmed"]});
    })
    .await;
    let o = place(&h, "awaiting", &[("SKU-000001", 1)]);
    let born_confirmed = place(&h, "confirmed", &[("SKU-000002", 1)]);
    let r = h.run("orders_to_erp").await;
    assert_eq!(r.counts.created, 0, "{r:#?}");
    h.later(5);
    h.shop.set_shipping_status(&o.id, "confirmed");
    h.later(1);
    let r = h.run("orders_to_erp").await;
    assert_eq!(r.counts.created, 1, "{r:#?}");
    h.later(5);
    h.shop.set_shipping_status(&o.id, "in_process");
    h.later(1);
    let again = h.run("orders_to_erp").await;
    assert_eq!(again.counts.created, 0, "{again:#?}");
    assert_eq!(h.erp.orders_by_reference(&o.number).len(), 1);
    assert!(h.erp.orders_by_reference(&born_confirmed.number).is_empty());
}

#[tokio::test]
async fn exported_orders_are_locked_and_updated_back_from_the_erp() {
    let h = Harness::new(5, |_| {}).await;
    let o = place(&h, "confirmed", &[("SKU-000001", 1), ("SKU-000002", 3)]);
    h.run("orders_to_erp").await;
    let shop_order = h.shop.order(&o.id).unwrap();
    assert!(shop_order.locked, "locked after export");

    // A shop-side edit after export is not sent.
    h.later(5);
    h.shop
        .update_order(&o.id, |x| x.payment_status = "paid".into());
    h.later(1);
    let r = h.run("orders_to_erp").await;
    assert_eq!(decision_of(&r, &o.number), Decision::Locked);

    let erp_order = h.erp.orders_by_reference(&o.number).remove(0);
    h.later(5);
    h.erp.issue_invoice(erp_order.id);
    h.erp.set_order_status(erp_order.id, "shipped");
    h.erp.set_awb(erp_order.id, "AWB-777");
    h.erp.set_order_lines(
        erp_order.id,
        vec![SalesLine {
            code: "SKU-000001".into(),
            name: erp_order.lines[0].name.clone(),
            quantity: 2,
            price: erp_order.lines[0].price,
        }],
    );
    h.later(1);
    let r = h.run("orders_from_erp").await;
    assert_eq!(r.counts.updated, 1, "{r:#?}");
    let back = h.shop.order(&o.id).unwrap();
    assert_eq!(back.shipping_status, "shipped");
    assert_eq!(back.awb.as_deref(), Some("AWB-777"));
    let invoice = h.erp.order(erp_order.id).unwrap().invoice.unwrap();
    assert_eq!(
        back.invoice_number,
        Some(format!("{}-{}", invoice.series, invoice.number))
    );
    assert_eq!(back.invoice_url.as_deref(), Some(invoice.url.as_str()));
    assert_eq!(back.lines.len(), 1);
    assert_eq!(
        (back.lines[0].sku.as_str(), back.lines[0].quantity),
        ("SKU-000001", 2)
    );
    assert_eq!(r.counts.overwrites, 0);
}

#[tokio::test]
async fn with_edits_allowed_after_export_erp_updates_report_what_they_overwrite() {
    let h = Harness::new(5, |doc| {
        doc["flows"]["orders_to_erp"]["allow_edit_after_export"] = json!(true);
    })
    .await;
    let o = place(&h, "confirmed", &[("SKU-000001", 1)]);
    h.run("orders_to_erp").await;
    h.later(5);
    h.shop
        .update_order(&o.id, |x| x.awb = Some("SHOP-AWB".into()));
    let erp_order = h.erp.orders_by_reference(&o.number).remove(0);
    h.erp.set_awb(erp_order.id, "ERP-AWB");
    h.later(1);
    let r = h.run("orders_from_erp").await;
    assert_eq!(r.counts.overwrites, 1, "{r:#?}");
    let reason = r
        .records
        .iter()
        .find(|x| x.key == o.number)
        .unwrap()
        .reason
        .clone()
        .unwrap();
    assert!(reason.contains("`awb`"), "{reason}");
    assert_eq!(h.shop.order(&o.id).unwrap().awb.as_deref(), Some("ERP-AWB"));
}

#[tokio::test]
async fn orders_born_in_the_erp_are_created_in_the_shop() {
    let h = Harness::new(5, |_| {}).await;
    let e = h
        .erp
        .create_order(ErpOrderDraft {
            channel: "phone".into(),
            client_name: "Ion Telefon".into(),
            client_email: "ion@example.com".into(),
            lines: vec![("SKU-000003".into(), 2)],
            series: None,
        })
        .unwrap();
    h.later(1);
    let r = h.run("orders_from_erp").await;
    assert_eq!(r.counts.created, 1, "{r:#?}");
    let number = format!("{}-{}", e.series_name, e.number);
    let o = h.shop.order_by_number(&number).unwrap();
    assert_eq!(o.customer.email, "ion@example.com");
    assert_eq!(
        (o.lines[0].sku.as_str(), o.lines[0].quantity),
        ("SKU-000003", 2)
    );
    // It is bound now: the export flow does not send it back to the ERP.
    let back = h.run("orders_to_erp").await;
    assert_eq!(back.counts.created, 0);
    assert_eq!(h.erp.orders().len(), 1);
}

#[tokio::test]
async fn a_permanent_failure_is_kept_and_succeeds_when_retried_after_the_fix() {
    let h = Harness::new(5, |_| {}).await;
    h.shop
        .create_product(Product::basic("GHOST-1", "Nu e in ERP", 10.0, 5))
        .unwrap();
    let o = place(&h, "confirmed", &[("GHOST-1", 1)]);
    let r = h.run("orders_to_erp").await;
    assert_eq!(r.counts.failed, 1, "{r:#?}");
    let failures = h
        .store
        .failures
        .failures(Some(FlowName::new("orders_to_erp")))
        .await
        .unwrap();
    assert_eq!(failures.len(), 1);
    let f = &failures[0];
    assert_eq!(f.key, o.number);
    assert!(f.error.contains("GHOST-1"), "{}", f.error);
    let error_text = f.response.as_ref().unwrap()["errorText"].as_str().unwrap();
    assert!(error_text.contains("GHOST-1"), "{error_text}");
    assert_eq!(f.payload.as_ref().unwrap()["lines"][0]["code"], "GHOST-1");
    assert_eq!(f.source_record["number"], o.number);
    assert!(h.erp.orders().is_empty());

    // Fixed in the ERP, then retried by hand (`erpsync failures retry --all`).
    h.erp
        .create_product(ErpProduct::new("GHOST-1", "Acum exista", 10.0))
        .unwrap();
    let retry = h.retry_all().await;
    assert_eq!(retry.counts.created, 1, "{retry:#?}");
    assert!(h.store.failures.failures(None).await.unwrap().is_empty());
    assert_eq!(h.erp.orders_by_reference(&o.number).len(), 1);
}

#[tokio::test]
async fn reconciling_a_bidirectional_flow_finds_changes_the_cursor_missed() {
    let h = Harness::new(12, |doc| {
        doc["flows"]["products"]["reconcile"] = json!({"schedule": "0 0 * * * *"});
    })
    .await;
    h.run("products").await;
    h.later(60);
    h.run("products").await;
    // An ERP edit stamped before the cursor (a clock behind, an import with old dates):
    // incremental runs cannot see it.
    let now = h.clock.now();
    h.clock.set(now - chrono::Duration::hours(3));
    h.erp.update_product("SKU-000004", |p| p.price = 404.0);
    h.clock.set(now + chrono::Duration::minutes(5));
    let missed = h.run("products").await;
    assert_eq!(missed.counts.updated, 0, "{missed:#?}");
    assert_ne!(shop_price(&h, "SKU-000004"), 404.0);

    let r = h
        .run_with(
            "products",
            RunOptions {
                reconcile: true,
                details: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(r.counts.updated, 1, "{r:#?}");
    assert_eq!(decision_of(&r, "SKU-000004"), Decision::Update);
    assert_eq!(shop_price(&h, "SKU-000004"), 404.0);
    assert_eq!(r.counts.read, 12);
}

// ---------------------------------------------------------------------------------------
// Full reads through shifting pages
//
// With `page_drift`, every list page that has a successor sees its first record modified
// before the next page is read: that record moves to the end of the list order (and is
// read twice), and the record that slides back across the page boundary is never served.

fn drifting(faults: &erpsync_sim::FaultControl) {
    faults.update(|f| f.page_drift = true);
}

async fn reconcile(h: &Harness, flow: &str) -> RunReport {
    h.run_with(
        flow,
        RunOptions {
            reconcile: true,
            details: true,
            ..Default::default()
        },
    )
    .await
}

/// No record was decided twice for the same system.
fn reported_once(r: &RunReport) {
    let mut seen = BTreeSet::new();
    for x in &r.records {
        assert!(
            seen.insert((x.key.as_str(), x.target.as_deref())),
            "{} decided twice: {:#?}",
            x.key,
            r.records
                .iter()
                .filter(|y| y.key == x.key)
                .collect::<Vec<_>>()
        );
    }
}

/// The records a run failed, for assertion messages.
fn failed(r: &RunReport) -> Vec<(&str, Option<&str>)> {
    r.records
        .iter()
        .filter(|x| x.decision == Decision::Failed)
        .map(|x| (x.key.as_str(), x.reason.as_deref()))
        .collect()
}

/// `n` stock levels synced, every one then edited by hand in the shop, and reconciled while
/// the shop's (`shop_shifts`) or the ERP's pages shift: every level is corrected once, with
/// one write each and no failure.
async fn stock_drift_reconciled_through_shift(n: usize, shop_shifts: bool) {
    let h = Harness::new(n, |_| {}).await;
    h.run("stock").await;
    h.later(10);
    for p in h.shop.products() {
        h.shop.update_product(p.id, |p| p.stock = Some(999));
    }
    h.later(1);
    drifting(if shop_shifts {
        h.shop.faults()
    } else {
        h.erp.faults()
    });
    h.reset_counters();
    let r = reconcile(&h, "stock").await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    reported_once(&r);
    for p in h.shop.products() {
        let erp = h.erp.stock(&p.sku, WAREHOUSE).unwrap().quantity;
        assert_eq!(p.stock, Some(erp), "{}: drift corrected", p.sku);
    }
    assert_eq!(r.counts.corrected, n as u64, "{:#?}", r.counts);
    assert_eq!(h.writes(), (n as u64, 0), "one write per corrected record");
}

#[tokio::test]
async fn a_bound_record_missed_by_a_shifted_target_read_is_not_reported_missing() {
    stock_drift_reconciled_through_shift(250, true).await;
}

/// Products one way, from the ERP to the shop, created when missing.
fn products_from_erp(doc: &mut Value) {
    let f = &mut doc["flows"]["products"];
    f["direction"] = json!("one_way");
    f["from"] = json!("erp");
    f["to"] = json!("shop");
    f.as_object_mut().unwrap().remove("conflict");
}

#[tokio::test]
async fn a_first_sync_through_shifted_target_pages_links_instead_of_creating_again() {
    // 250 products unbound on both sides: after the first lookups, the shop is read in
    // full and the rest matched in memory. Records the shifted read missed are in the shop.
    let h = Harness::new(250, products_from_erp).await;
    drifting(h.shop.faults());
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    assert_eq!(r.counts.created, 0, "{:#?}", r.counts);
    assert_eq!(r.counts.adopted, 250, "{:#?}", r.counts);
    assert_eq!(h.shop.product_count(), 250, "no product created twice");
    assert_eq!(h.writes(), (0, 0));
}

/// The same first sync while the ERP's pages shift as they are read: a record served again
/// with only its stamp changed is the same reading, adopted once (its stamp is left out of
/// the fingerprint of a record read by position, as of one read whole).
#[tokio::test]
async fn a_first_sync_through_shifted_source_pages_adopts_each_record_once() {
    let h = Harness::new(250, products_from_erp).await;
    drifting(h.erp.faults());
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    reported_once(&r);
    assert_eq!(
        (r.counts.adopted, r.counts.created),
        (r.counts.read, 0),
        "{:#?}",
        r.counts
    );
    assert_eq!(h.writes(), (0, 0));
}

/// A page of the shop's listing answered with a 200 and a text that is not JSON (a
/// maintenance page, a proxy's answer) is a failed attempt, not the listing's end. While the
/// shop keeps answering so, the first sync stops with the reason and creates none of the
/// products it could not see; a page answered so once is asked again, and nothing is lost.
#[tokio::test]
async fn a_target_page_answered_with_a_maintenance_page_creates_nothing_twice() {
    first_sync_through_a_page_of(
        "page=2",
        "<html><body><h1>Magazinul este in mentenanta</h1></body></html>",
        &["not JSON (text/html", "mentenanta"],
        true,
    )
    .await;
}

/// A later page of the shop's listing answered with a 200 and JSON that is not a page (an
/// error served as a success, without the `data` its records are read from) stops the read
/// with the reason: it is not taken for an empty last page, and nothing is created twice.
#[tokio::test]
async fn a_later_target_page_without_its_records_member_creates_nothing_twice() {
    first_sync_through_a_page_of(
        "page=2",
        r#"{"error":"Too many requests, slow down"}"#,
        &["page 2", "no `$.data`", "slow down"],
        false,
    )
    .await;
}

/// The same on the first page: the shop's answer to the first request of its listing is not
/// taken for an empty shop, which a first sync would fill again with all 250 products.
#[tokio::test]
async fn a_first_target_page_without_its_records_member_creates_nothing() {
    first_sync_through_a_page_of(
        // Every page's request (`limit=100`; the lookups ask `limit=1`): the first fails.
        "limit=100",
        r#"{"error":"Too many requests, slow down"}"#,
        &["page 1", "no `$.data`", "slow down"],
        false,
    )
    .await;
}

/// A first sync of 250 products one way while the shop answers the pages of its listing
/// whose query holds `query` with `body` and a 200, every time: the run stops, its errors say
/// each of `reasons`, and nothing is created. Then a run with the shop answering so once
/// more (`once_more`: the page is asked again) or not at all adopts the rest, creating
/// nothing.
async fn first_sync_through_a_page_of(query: &str, body: &str, reasons: &[&str], once_more: bool) {
    let h = Harness::new(250, products_from_erp).await;
    h.reset_counters();
    let answered = |count| {
        erpsync_sim::FailRule::new("GET", "/api/v2/products", 200, count)
            .with_query(query)
            .with_body(body)
    };
    h.shop.faults().fail_next(answered(1_000));
    let opts = RunOptions {
        details: true,
        ..Default::default()
    };
    let error = match h.engine.run("products", &opts).await {
        Ok(r) => format!("{:?} {:?} {:#?}", r.errors, failed(&r), r.counts),
        Err(e) => e.to_string(),
    };
    for reason in reasons {
        assert!(error.contains(reason), "the reason is given: {error}");
    }
    assert!(
        !error.contains("already exists"),
        "nothing created: {error}"
    );
    assert_eq!(h.shop.product_count(), 250, "no product created twice");
    assert_eq!(h.writes(), (0, 0));

    h.shop.faults().clear();
    if once_more {
        h.shop.faults().fail_next(answered(1));
    }
    h.reset_counters();
    let r = h.run("products").await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    assert_eq!(r.counts.created, 0, "{:#?}", r.counts);
    // The products bound before the read failed are not adopted again.
    assert_eq!(r.counts.adopted + r.counts.skipped, 250, "{:#?}", r.counts);
    assert_eq!(h.shop.product_count(), 250);
    assert_eq!(h.writes(), (0, 0));
}

/// A lookup answered with a 200 and JSON without the `data` its records are read from (an
/// error served as a success) did not say "none": each record it was asked for fails with the
/// reason, none is created, and the next run, the shop answering again, adopts them all.
#[tokio::test]
async fn a_lookup_answered_without_its_records_member_creates_nothing() {
    let h = Harness::new(10, products_from_erp).await;
    h.reset_counters();
    h.shop.faults().fail_next(
        erpsync_sim::FailRule::new("GET", "/api/v2/products", 200, 1_000)
            .with_query("sku=")
            .with_body(r#"{"error":"Service temporarily unavailable"}"#),
    );
    let r = h.run("products").await;
    assert_eq!(r.counts.failed, 10, "{:#?}", r.counts);
    assert_eq!(r.counts.created, 0, "{:#?}", r.counts);
    for (key, reason) in failed(&r) {
        let reason = reason.unwrap_or_default();
        assert!(
            reason.contains("find_product")
                && reason.contains("no `$.data`")
                && reason.contains("temporarily"),
            "{key}: {reason}"
        );
    }
    assert_eq!(h.shop.product_count(), 10, "no product created twice");
    assert_eq!(h.writes(), (0, 0));

    h.shop.faults().clear();
    h.reset_counters();
    let r = h.run("products").await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    assert_eq!(
        (r.counts.created, r.counts.adopted),
        (0, 10),
        "{:#?}",
        r.counts
    );
    assert_eq!(h.writes(), (0, 0));
}

#[tokio::test]
async fn reconciling_an_unbound_catalogue_through_shifted_target_pages_creates_nothing() {
    let h = Harness::new(250, products_from_erp).await;
    drifting(h.shop.faults());
    h.reset_counters();
    let r = reconcile(&h, "products").await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    assert_eq!(r.counts.created, 0, "{:#?}", r.counts);
    assert_eq!(r.counts.adopted, 250, "{:#?}", r.counts);
    assert_eq!(h.shop.product_count(), 250, "no product created twice");
    assert_eq!(h.writes(), (0, 0));
}

#[tokio::test]
async fn a_record_read_twice_by_a_shifted_source_read_is_written_once() {
    // 300 stock levels in pages of 250: the first is read again at the end, the 251st is
    // not served.
    stock_drift_reconciled_through_shift(300, false).await;
}

/// 250 products synced both ways, then the ERP's prices and the shop's names edited.
async fn edited_on_both_sides() -> Harness {
    let h = Harness::new(250, |_| {}).await;
    h.run("products").await;
    h.later(10);
    for p in h.shop.products() {
        h.erp.update_product(&p.sku, |e| e.price += 7.0);
        h.shop
            .update_product(p.id, |p| p.name = format!("{} nou", p.name));
    }
    h.later(1);
    h
}

fn both_edits_kept(h: &Harness) {
    for p in h.shop.products() {
        let e = h.erp.product(&p.sku).unwrap();
        assert_eq!(e.name, p.name, "{}: the shop's name reached the ERP", p.sku);
        assert!(p.name.ends_with(" nou"), "{}: the shop's name kept", p.sku);
        assert_eq!(
            Some(e.price),
            p.price_gross,
            "{}: the ERP's price reached the shop",
            p.sku
        );
    }
}

/// The ERP's prices by code.
fn erp_prices(h: &Harness) -> HashMap<String, f64> {
    h.erp
        .products()
        .into_iter()
        .map(|e| (e.code, e.price))
        .collect()
}

/// Every ERP price is still what it was (`before`).
fn erp_prices_kept(h: &Harness, before: &HashMap<String, f64>) {
    for e in h.erp.products() {
        assert!(
            (e.price - before[&e.code]).abs() < 0.005,
            "{}: the ERP's price kept",
            e.code
        );
    }
}

/// Both sides edited, then a run (reconciling or not) while the shop's or the ERP's pages
/// shift: no failure, nothing decided twice, the ERP's prices kept.
async fn run_through_shift(reconciling: bool, shop_shifts: bool) -> (Harness, RunReport) {
    let h = edited_on_both_sides().await;
    let prices = erp_prices(&h);
    drifting(if shop_shifts {
        h.shop.faults()
    } else {
        h.erp.faults()
    });
    let r = if reconciling {
        reconcile(&h, "products").await
    } else {
        h.run("products").await
    };
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    reported_once(&r);
    erp_prices_kept(&h, &prices);
    (h, r)
}

#[tokio::test]
async fn reconciling_both_ways_through_shifted_target_pages_loses_no_edit() {
    let (h, r) = run_through_shift(true, false).await;
    both_edits_kept(&h);
    assert_eq!(r.counts.updated, 250, "{:#?}", r.counts);
}

#[tokio::test]
async fn an_incremental_run_through_shifted_target_pages_loses_no_edit() {
    // The ERP's changes since the cursor are read while its pages shift: a record the read
    // missed must not be taken as unchanged when the shop's edit of it is written.
    let (h, _) = run_through_shift(false, false).await;
    h.erp.faults().set(Faults::default());
    h.later(10);
    let next = h.run("products").await;
    assert_eq!(next.counts.failed, 0, "{:#?}", failed(&next));
    both_edits_kept(&h);
}

#[tokio::test]
async fn reconciling_both_ways_through_shifted_source_pages_loses_no_edit() {
    let (h, r) = run_through_shift(true, true).await;
    both_edits_kept(&h);
    assert_eq!(r.counts.updated, 250, "{:#?}", r.counts);
}

#[tokio::test]
async fn shifting_target_pages_never_hide_a_change_from_later_runs() {
    // As `shifting_pages_never_hide_a_change_from_later_runs`, for the other side of a
    // bidirectional flow: the ERP's changes since the cursor, read while it shifts.
    changes_survive_shifting_pages(true).await;
}

/// Runs `flow` and, once the shop has been asked for the second page of its product list
/// (the first one read), applies `change` to it: someone editing the shop while erpsync
/// pages through it. A latency on the shop holds that page until the change is made.
async fn run_changing_the_shop_mid_listing(
    h: &Harness,
    flow: &str,
    opts: RunOptions,
    change: impl FnOnce(&ShopHandle),
) -> RunReport {
    let lists = || h.shop.counters().count("GET", "/api/v2/products");
    let before = lists();
    h.shop.faults().update(|f| f.latency_ms = 300);
    let edit = async {
        while lists() < before + 2 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        change(&h.shop);
        h.shop.faults().update(|f| f.latency_ms = 0);
    };
    let (r, ()) = tokio::join!(h.run_with(flow, opts), edit);
    r
}

#[tokio::test]
async fn a_record_changed_while_the_source_is_paged_is_merged_from_its_latest_reading() {
    // SKU-000001 is read on the first page, with a price from the ERP to write back (held
    // until the listing ends), then renamed again in the shop and read a second time.
    let h = edited_on_both_sides().await;
    let renamed = |shop: &ShopHandle| {
        let p = shop.product_by_sku("SKU-000001").unwrap();
        shop.update_product(p.id, |p| p.name = format!("{} din nou", p.name));
    };
    let opts = RunOptions {
        reconcile: true,
        details: true,
        ..Default::default()
    };
    let r = run_changing_the_shop_mid_listing(&h, "products", opts, renamed).await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    reported_once(&r);
    let newest = h.shop.product_by_sku("SKU-000001").unwrap().name;
    assert!(newest.ends_with("nou din nou"), "{newest}");
    assert_eq!(h.erp.product("SKU-000001").unwrap().name, newest);
    both_edits_kept(&h);
}

#[tokio::test]
async fn a_record_changed_while_the_source_is_paged_reaches_the_target_by_the_next_run() {
    let h = Harness::new(250, |_| {}).await;
    h.run("products").await;
    h.later(10);
    for p in h.shop.products() {
        h.shop
            .update_product(p.id, |p| p.name = format!("{} nou", p.name));
    }
    h.later(1);
    // One record already read, one not read yet.
    let renamed = |shop: &ShopHandle| {
        for sku in ["SKU-000001", "SKU-000240"] {
            let p = shop.product_by_sku(sku).unwrap();
            shop.update_product(p.id, |p| p.name = format!("{} din nou", p.sku));
        }
    };
    let opts = RunOptions {
        details: true,
        ..Default::default()
    };
    let r = run_changing_the_shop_mid_listing(&h, "products", opts, renamed).await;
    assert!(r.ok(), "{:?}", r.errors);
    let cursor = h.cursor("products").await.unwrap();
    for p in h.shop.products() {
        if h.erp.product(&p.sku).unwrap().name != p.name {
            assert!(
                p.updated_at > cursor,
                "{} ({}) is behind the cursor {cursor}",
                p.sku,
                p.updated_at
            );
        }
    }
    h.later(10);
    h.run("products").await;
    for p in h.shop.products() {
        assert_eq!(h.erp.product(&p.sku).unwrap().name, p.name, "{}", p.sku);
    }
    assert_eq!(
        h.erp.product("SKU-000240").unwrap().name,
        "SKU-000240 din nou"
    );
}

#[tokio::test]
async fn a_target_that_cannot_be_searched_is_read_again_when_its_pages_shifted() {
    // Shop orders have no lookup by number, so the shop's orders are read in full and
    // matched in memory. 150 orders exported, then the state is lost (a new store): the
    // orders are in both systems, unbound.
    let h = Harness::new(5, |_| {}).await;
    for i in 0..150 {
        place(&h, "confirmed", &[("SKU-000001", 1 + i % 3)]);
    }
    let exported = h.run("orders_to_erp").await;
    assert_eq!(exported.counts.created, 150, "{:#?}", exported.counts);
    h.later(10);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::from(SqliteStore::open(&dir.path().join("state.sqlite")).unwrap());
    let engine = build(&h.shop, &h.erp, &dir, store, &h.clock, |_| {});
    drifting(h.shop.faults());
    let r = engine
        .run(
            "orders_from_erp",
            &RunOptions {
                reconcile: true,
                details: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    assert_eq!(r.counts.created, 0, "{:#?}", r.counts);
    assert_eq!(h.shop.orders().len(), 150, "no order created twice");
}

/// A first sync (nothing bound) whose first source page holds more records to look up than
/// the single lookups allowed before a full read reads the shop in full at once: no record is
/// asked for alone. Later, a few new products are still looked up one by one, without
/// reading the shop again.
#[tokio::test]
async fn a_first_page_of_unbound_records_reads_the_target_at_once_and_new_ones_are_looked_up() {
    let h = Harness::new(300, |_| {}).await;
    h.shop.counters().keep_log();
    let r = h.run("stock").await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    assert_eq!(r.counts.adopted, 300, "{:#?}", r.counts);
    let (single, listed) = crate::support::sims::product_reads(&h.shop);
    assert_eq!(single, 0, "no product asked for alone");
    assert_eq!(listed, 3, "300 products in pages of 100, read once");

    h.later(10);
    for i in 0..3 {
        let code = format!("NEW-{i}");
        h.erp
            .create_product(erpsync_sim::erp::ErpProduct::new(&code, "Nou", 10.0))
            .unwrap();
        h.shop
            .create_product(erpsync_sim::shop::Product::basic(&code, "Nou", 10.0, 0))
            .unwrap();
    }
    h.later(1);
    h.shop.counters().reset();
    h.shop.counters().keep_log();
    let r = h.run("stock").await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    assert_eq!(r.counts.adopted, 3, "{:#?}", r.counts);
    assert_eq!(
        crate::support::sims::product_reads(&h.shop),
        (3, 0),
        "the three new products looked up alone, the shop not read in full"
    );
}

/// Adopted records are bound in one write per page, not one per record: a run stopped in
/// the middle of a page — interrupted, or its target gone — still keeps the binding of every
/// record it reported adopted, and the next run finds them bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_written_per_page_are_kept_when_a_run_stops_mid_page() {
    const N: usize = 300;
    for down in [false, true] {
        let h = Harness::new(N, |doc| {
            let shop = &mut doc["systems"]["shop"];
            shop["timeouts"] = json!({"connect_ms": 500, "request_ms": 300});
            shop["retry"] =
                json!({"max_attempts": 1, "initial_backoff_ms": 5, "max_backoff_ms": 10});
            shop["circuit_breaker"] = json!({"failures": 1, "probe_initial_secs": 60});
            // Pages of 40: fewer than the single lookups a first sync makes before it reads
            // the shop in full, so the first page's records are looked up one by one.
            doc["systems"]["erp"]["operations"]["list_stock"] = json!({
                "path": "/stock",
                "query": {"changedSince": "{{since}}", "warehouse": "{{system.warehouse}}"},
                "records": "$.data",
                "paginate": {"kind": "offset", "offset_param": "offset",
                             "limit_param": "limitPerPage", "limit": 40},
            });
        })
        .await;
        // Each lookup in the shop takes a while, so the run is stopped while it works through
        // the ERP's first page (40 records).
        h.shop.faults().set(Faults {
            latency_ms: 5,
            ..Faults::default()
        });
        h.reset_counters();
        let interrupt = erpsync::engine::Interrupt::default();
        let opts = RunOptions {
            details: true,
            interrupt: Some(interrupt.clone()),
            ..Default::default()
        };
        let stop = async {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while h.shop.counters().total() < 20 {
                assert!(std::time::Instant::now() < deadline, "no lookups made");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if down {
                // The shop accepts connections and never answers: it is taken as down.
                h.shop.faults().set(Faults {
                    timeout_rate: 1.0,
                    timeout_ms: 60_000,
                    ..Faults::default()
                });
            } else {
                interrupt.raise();
            }
        };
        let (r, ()) = tokio::join!(h.run_with("stock", opts), stop);
        if down {
            assert!(
                r.errors.iter().any(|e| e.contains("down")),
                "{:?}",
                r.errors
            );
        } else {
            assert!(r.interrupted, "{r:#?}");
        }
        let adopted = keys_decided(&r, Decision::Adopt);
        assert!(
            !adopted.is_empty() && adopted.len() < 40,
            "stopped within the first page: {} adopted",
            adopted.len()
        );
        let scope = Scope::new("stock", "erp", "shop");
        let keys: Vec<RecordKey> = adopted.iter().map(|k| RecordKey::new(k)).collect();
        let bound = h.store.bindings.bindings(&scope, &keys).await.unwrap();
        let missing: Vec<&String> = adopted
            .iter()
            .filter(|k| {
                bound
                    .get(*k)
                    .is_none_or(|b| b.id_a.is_none() || b.id_b.is_none())
            })
            .collect();
        assert!(
            missing.is_empty(),
            "reported adopted but not bound (stopped {}): {missing:?}",
            if down {
                "by the shop going down"
            } else {
                "by an interrupt"
            }
        );
        assert_eq!(
            h.store.bindings.binding_count(&scope).await.unwrap(),
            adopted.len()
        );
        assert_eq!(h.writes(), (0, 0));

        if !down {
            // The next run adopts the rest and finds the first ones bound: no write either way.
            h.shop.faults().clear();
            h.later(10);
            let rest = h.run("stock").await;
            assert_eq!(
                (rest.counts.adopted, rest.counts.skipped, rest.counts.failed),
                ((N - adopted.len()) as u64, adopted.len() as u64, 0),
                "{:?}",
                rest.counts
            );
            assert_eq!(h.writes(), (0, 0));
            assert_eq!(h.store.bindings.binding_count(&scope).await.unwrap(), N);
        }
    }
}

/// The source is read ahead of the records being synced: the ERP's second page of stock
/// levels is asked for while the updates of its first are still going out to the shop (one
/// page after another, all 250 would be answered first). A page read ahead that fails leaves
/// the run as a read page by page would: the pages before it synced, nothing of it or after
/// it, the cursor where it was; the next run syncs the rest, and nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_source_page_is_read_while_one_is_written_and_a_failed_one_loses_nothing() {
    const N: usize = 750;
    let h = Harness::new(N, |_| {}).await;
    let first = h.run("stock").await;
    assert_eq!(first.counts.adopted, N as u64, "{:#?}", first.counts);
    let cursor = h.cursor("stock").await;
    assert!(cursor.is_some());
    h.later(10);
    let codes: Vec<String> = h.erp.products().into_iter().map(|p| p.code).collect();
    for code in &codes {
        let before = h.erp.stock(code, WAREHOUSE).unwrap().quantity;
        h.erp.set_stock(code, WAREHOUSE, before + 11);
    }
    h.later(1);
    h.reset_counters();
    h.shop.faults().set(Faults {
        latency_ms: 2,
        ..Faults::default()
    });
    h.erp.counters().keep_log();
    h.shop.counters().keep_log();
    h.erp.faults().fail_next(
        erpsync_sim::FailRule::new("GET", "/api/stock", 400, 1).with_query("offset=500"),
    );
    let opts = RunOptions {
        details: true,
        ..Default::default()
    };
    let failed = match h.engine.run("stock", &opts).await {
        Ok(r) => !r.errors.is_empty(),
        Err(_) => true,
    };
    assert!(failed, "the third page's error stops the run");
    let erp_log = h.erp.counters().log();
    let second = erp_log
        .iter()
        .find(|x| x.method == "GET" && x.query.contains("offset=250"))
        .expect("the second page was read");
    let written_before = h
        .shop
        .counters()
        .log()
        .iter()
        .filter(|x| x.method != "GET" && x.answered != 0 && x.answered < second.arrived)
        .count();
    assert!(
        written_before < 250,
        "the second page is asked for before the first page's 250 updates are all answered \
         ({written_before} were)"
    );
    // The first two pages synced, the third not at all; the cursor did not move.
    let synced = || {
        codes
            .iter()
            .filter(|c| {
                h.shop.product_by_sku(c).unwrap().stock
                    == Some(h.erp.stock(c, WAREHOUSE).unwrap().quantity)
            })
            .count()
    };
    assert_eq!(synced(), 500, "two pages of updates");
    assert_eq!(h.writes(), (500, 0));
    assert_eq!(h.cursor("stock").await, cursor, "cursor kept");
    // The next run reads from the same cursor and writes only what is left.
    h.shop.faults().clear();
    h.reset_counters();
    let r = h.run("stock").await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.counts.updated, 250, "{:#?}", r.counts);
    assert_eq!(h.writes(), (250, 0));
    assert_eq!(synced(), N);
}

/// A shop with `concurrency: 4` gets up to four stock updates at once (one at a time with
/// the default), and the run ends as the one-at-a-time run ends: the same stock levels, the
/// same records updated and failed, every failure (refused, or applied and its answer lost)
/// retried into the same final state, no update sent for a record that had nothing to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_go_out_concurrently_up_to_the_systems_concurrency_and_end_as_one_at_a_time() {
    const N: usize = 120;
    let mut ends = Vec::new();
    for concurrency in [1, 4] {
        let h = Harness::new(N, |doc| {
            doc["systems"]["shop"]["concurrency"] = json!(concurrency);
        })
        .await;
        let first = h.run("stock").await;
        assert_eq!(first.counts.adopted, N as u64, "{:#?}", first.counts);
        h.later(10);
        let codes: Vec<String> = h.erp.products().into_iter().map(|p| p.code).collect();
        for (i, code) in codes.iter().enumerate() {
            if i % 5 != 0 {
                let before = h.erp.stock(code, WAREHOUSE).unwrap().quantity;
                h.erp.set_stock(code, WAREHOUSE, before + 3 + i as i64);
            }
        }
        let changed = codes.len() - codes.len().div_ceil(5);
        h.later(1);
        h.reset_counters();
        h.shop.faults().set(Faults {
            latency_ms: 15,
            ..Faults::default()
        });
        // Two updates refused, two applied with their answers lost.
        let route = "/api/v2/products/";
        h.shop
            .faults()
            .fail_next(erpsync_sim::FailRule::new("PATCH", route, 400, 2));
        h.shop
            .faults()
            .fail_next(erpsync_sim::FailRule::new("PATCH", route, 500, 2).after_apply());
        let r = h.run("stock").await;
        assert_eq!(
            (r.counts.updated, r.counts.failed),
            (changed as u64 - 4, 4),
            "{:#?}",
            r.counts
        );
        assert_eq!(h.writes(), (changed as u64, 0), "one update per change");
        let most = h.shop.counters().max_writes_in_flight();
        if concurrency == 1 {
            assert_eq!(most, 1);
        } else {
            assert!((2..=4).contains(&most), "{most} updates at once");
        }
        h.shop.faults().clear();
        h.reset_counters();
        let retried = h.retry_all().await;
        assert_eq!(retried.counts.updated, 4, "{:#?}", retried.counts);
        assert_eq!(h.writes(), (4, 0));
        h.later(10);
        let quiet = h.run("stock").await;
        assert_eq!((quiet.counts.updated, quiet.counts.failed), (0, 0));
        assert_eq!(h.writes(), (4, 0), "nothing left to write");
        let stock: Vec<(String, Option<i64>)> = codes
            .iter()
            .map(|c| (c.clone(), h.shop.product_by_sku(c).unwrap().stock))
            .collect();
        for (c, s) in &stock {
            assert_eq!(*s, Some(h.erp.stock(c, WAREHOUSE).unwrap().quantity), "{c}");
        }
        // Which four failed may differ (they are the first four answered); how many of each
        // decision does not.
        let mut decisions: Vec<String> = r
            .records
            .iter()
            .map(|x| format!("{:?}", x.decision))
            .collect();
        decisions.sort();
        ends.push((stock, decisions));
    }
    assert_eq!(ends[0], ends[1], "the same end, one at a time or four");
}

// ---------------------------------------------------------------------------------------
// The target index on disk
//
// A run that reads the target in full holds it in memory up to a bound, then in a private
// temporary file. `index_spill_bytes: Some(0)` moves it there at its first record: a run
// must decide the same with its index on disk as in memory.

/// A run keeping a line per record, its index of the target on disk (`spill`) or in memory.
fn index_on_disk(spill: bool, reconcile: bool) -> RunOptions {
    RunOptions {
        reconcile,
        details: true,
        index_spill_bytes: spill.then_some(0),
        ..Default::default()
    }
}

/// 250 products in both systems and unbound, synced one way from the ERP: ten prices
/// changed in the ERP, one product only in the ERP. The first sync looks up its first
/// records, then reads the shop in full and matches the rest against that index.
async fn first_sync_over_a_catalogue_the_target_holds(spill: bool) -> RunReport {
    let h = Harness::new(250, products_from_erp).await;
    let mut codes: Vec<String> = h.erp.products().into_iter().map(|e| e.code).collect();
    codes.sort();
    let changed: Vec<String> = codes.iter().step_by(25).cloned().collect();
    assert_eq!(changed.len(), 10);
    for code in &changed {
        h.erp.update_product(code, |e| e.price += 3.5);
    }
    h.erp
        .create_product(ErpProduct::new("ERP-ONLY-1", "Doar in ERP", 120.0))
        .unwrap();
    h.later(1);
    h.reset_counters();

    let r = h.run_with("products", index_on_disk(spill, false)).await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    assert_eq!(
        (r.counts.adopted, r.counts.updated, r.counts.created),
        (240, 10, 1),
        "spilled: {spill}; {:#?}",
        r.counts
    );
    reported_once(&r);
    for code in &changed {
        assert_eq!(decision_of(&r, code), Decision::Update, "{code}");
        assert!(
            (shop_price(&h, code) - h.erp.product(code).unwrap().price).abs() < 0.005,
            "{code}: the ERP's new price reached the shop"
        );
    }
    assert_eq!(decision_of(&r, "ERP-ONLY-1"), Decision::Create);
    assert_eq!(h.shop.product_count(), 251, "no product created twice");
    assert_eq!(
        h.writes(),
        (11, 0),
        "a write per changed record, one create"
    );

    // Every record is bound and in step: reconciling the whole catalogue writes nothing.
    h.later(10);
    h.reset_counters();
    let again = h.run_with("products", index_on_disk(spill, true)).await;
    assert_eq!(again.counts.skipped, 251, "{:#?}", again.counts);
    assert_eq!(h.writes(), (0, 0));
    r
}

#[tokio::test]
async fn a_first_sync_with_its_index_on_disk_adopts_and_updates_as_in_memory() {
    let on_disk = first_sync_over_a_catalogue_the_target_holds(true).await;
    let in_memory = first_sync_over_a_catalogue_the_target_holds(false).await;
    assert_eq!(on_disk.counts, in_memory.counts);
    assert_eq!(decisions(&on_disk), decisions(&in_memory));
}

/// 300 stock levels synced, every one then edited by hand in the shop, and reconciled while
/// the ERP's pages shift (pages of 250: the first record is served twice, the 251st not at
/// all, and is asked for as a bound record the listing did not serve).
async fn stock_drift_reconciled_with_index(spill: bool) -> RunReport {
    let h = Harness::new(300, |_| {}).await;
    h.run("stock").await;
    h.later(10);
    for p in h.shop.products() {
        h.shop.update_product(p.id, |p| p.stock = Some(999));
    }
    h.later(1);
    drifting(h.erp.faults());
    h.reset_counters();
    let r = h.run_with("stock", index_on_disk(spill, true)).await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    reported_once(&r);
    for p in h.shop.products() {
        let erp = h.erp.stock(&p.sku, WAREHOUSE).unwrap().quantity;
        assert_eq!(p.stock, Some(erp), "{}: drift corrected", p.sku);
    }
    assert_eq!(
        (r.counts.corrected, r.counts.created),
        (300, 0),
        "spilled: {spill}; {:#?}",
        r.counts
    );
    assert_eq!(h.writes(), (300, 0), "one write per corrected record");
    // The shop's records are found in the index, none asked for one by one: three pages of
    // the shop's listing, then the writes.
    assert_eq!(
        h.shop.counters().total(),
        3 + 300,
        "{:#?}",
        h.shop.counters().snapshot()
    );
    r
}

#[tokio::test]
async fn a_reconciliation_with_its_index_on_disk_corrects_drift_as_in_memory() {
    let on_disk = stock_drift_reconciled_with_index(true).await;
    let in_memory = stock_drift_reconciled_with_index(false).await;
    assert_eq!(on_disk.counts, in_memory.counts);
    assert_eq!(decisions(&on_disk), decisions(&in_memory));
}

/// 200 products synced both ways, then edited: names in the shop, prices in the ERP, one
/// price on both sides (the ERP wins), a product new in each system. Reconciled with the
/// target's records (the ERP read in full, which a bidirectional run holds until the source
/// has met them) on disk from the first record (`spill`) or in memory.
async fn both_ways_reconciled_with_index(spill: bool) -> RunReport {
    let h = Harness::new(200, |doc| {
        doc["flows"]["products"]["reconcile"] = json!({"schedule": "0 0 * * * *"});
    })
    .await;
    h.run("products").await;
    h.later(10);
    let mut skus: Vec<String> = h.shop.products().into_iter().map(|p| p.sku).collect();
    skus.sort();
    let renamed: Vec<&String> = skus.iter().skip(1).step_by(20).collect();
    let repriced: Vec<&String> = skus.iter().skip(2).step_by(25).collect();
    for sku in &renamed {
        let p = h.shop.product_by_sku(sku).unwrap();
        h.shop
            .update_product(p.id, |p| p.name = format!("Redenumit {sku}"));
    }
    let both = &skus[0];
    let p = h.shop.product_by_sku(both).unwrap();
    h.shop.update_product(p.id, |p| p.price_gross = Some(111.0));
    h.shop
        .create_product(Product::basic("SHOP-NEW-1", "Doar in magazin", 15.0, 1))
        .unwrap();
    h.later(10);
    for sku in &repriced {
        h.erp.update_product(sku, |e| e.price += 7.25);
    }
    h.erp.update_product(both, |e| e.price = 222.0);
    h.erp
        .create_product(ErpProduct::new("ERP-NEW-1", "Doar in ERP", 120.0))
        .unwrap();
    h.later(1);
    h.reset_counters();

    let r = h.run_with("products", index_on_disk(spill, true)).await;
    assert_eq!(r.counts.failed, 0, "{:#?}", failed(&r));
    reported_once(&r);
    for sku in &renamed {
        assert_eq!(
            h.erp.product(sku).unwrap().name,
            format!("Redenumit {sku}"),
            "spilled: {spill}: the shop's rename reached the ERP"
        );
    }
    for sku in &repriced {
        let erp = h.erp.product(sku).unwrap().price;
        assert!((shop_price(&h, sku) - erp).abs() < 0.005, "{sku}: {erp}");
    }
    assert_eq!(decision_of(&r, both), Decision::Conflict);
    assert_eq!(shop_price(&h, both), 222.0, "the ERP wins");
    assert_eq!(h.erp.product("SHOP-NEW-1").unwrap().name, "Doar in magazin");
    assert_eq!(
        h.shop.product_by_sku("ERP-NEW-1").map(|p| p.name),
        Some("Doar in ERP".to_string()),
        "a record only the target changed is merged after the source's"
    );
    assert_eq!(h.shop.product_count(), 202, "none created twice");
    assert_eq!(h.erp.products().len(), 202, "none created twice");
    assert_eq!(
        h.writes(),
        ((repriced.len() + 1 + 1) as u64, (renamed.len() + 1) as u64),
        "one write per change: shop (prices, the conflict, the ERP's new product), ERP \
         (names, the shop's new product)"
    );

    // In step: reconciling again writes nothing either way.
    h.later(10);
    h.reset_counters();
    let again = h.run_with("products", index_on_disk(spill, true)).await;
    assert_eq!(again.counts.failed, 0, "{:#?}", failed(&again));
    assert_eq!(h.writes(), (0, 0), "{:#?}", again.counts);
    r
}

#[tokio::test]
async fn a_bidirectional_reconciliation_with_the_target_on_disk_merges_as_in_memory() {
    let on_disk = both_ways_reconciled_with_index(true).await;
    let in_memory = both_ways_reconciled_with_index(false).await;
    assert_eq!(on_disk.counts, in_memory.counts);
    assert_eq!(decisions(&on_disk), decisions(&in_memory));
}
