//! Suppliers as their own flow (`flows/demo`: ERP → shop, matched by fiscal code): creation,
//! adoption of a supplier the shop already had under a differently written code, incremental
//! updates, reconciliation of hand edits in the shop, dry run, and a supplier the shop refuses
//! kept in the failure store until it is fixed and retried.

use erpsync::engine::{Decision, RunOptions};
use erpsync::state::FlowName;
use erpsync_sim::erp::SupplierInput as ErpSupplier;
use erpsync_sim::shop::SupplierInput as ShopSupplier;

use crate::support::harness::Harness;
use crate::support::project::WAREHOUSE;
use crate::support::repo;

fn erp_supplier(name: &str, vat_code: &str, email: &str) -> ErpSupplier {
    ErpSupplier {
        name: Some(name.into()),
        vat_code: Some(vat_code.into()),
        email: Some(email.into()),
        phone: Some("0264111222".into()),
        address: Some("Str. Fabricii 3, Cluj-Napoca".into()),
        ..ErpSupplier::default()
    }
}

/// The failures the `suppliers` flow keeps.
async fn supplier_failures(h: &Harness) -> Vec<erpsync::state::Failure> {
    h.store
        .failures
        .failures(Some(FlowName::new("suppliers")))
        .await
        .unwrap()
}

fn decision_of(r: &erpsync::engine::RunReport, key: &str) -> Decision {
    r.records
        .iter()
        .find(|x| x.key == key)
        .unwrap_or_else(|| panic!("no record {key} in {:#?}", r.records))
        .decision
}

#[tokio::test]
async fn suppliers_reach_the_shop_matched_by_fiscal_code() {
    let h = Harness::new(0, |_| {}).await;
    let seeded = h.erp.seed_suppliers(6, 4);
    assert_eq!(seeded.len(), 6);
    h.erp
        .create_supplier(erp_supplier(
            "Lumina Import SRL",
            "RO 18547290",
            "vanzari@lumina.example.ro",
        ))
        .unwrap();
    // The shop typed the same company's code without the prefix and has an old phone; it
    // also buys from a supplier the ERP does not know.
    let known = h
        .shop
        .create_supplier(ShopSupplier {
            name: Some("Lumina Import SRL".into()),
            vat_code: Some("18547290".into()),
            phone: Some("0700000000".into()),
            ..ShopSupplier::default()
        })
        .unwrap();
    h.shop
        .create_supplier(ShopSupplier {
            name: Some("Atelier Local".into()),
            vat_code: Some("40111222".into()),
            ..ShopSupplier::default()
        })
        .unwrap();
    h.reset_counters();

    let plan = h
        .run_with(
            "suppliers",
            RunOptions {
                dry_run: true,
                details: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(h.writes(), (0, 0), "a dry run writes nothing");
    assert_eq!(
        (plan.counts.created, plan.counts.updated),
        (6, 1),
        "{plan:#?}"
    );

    let r = h.run("suppliers").await;
    assert_eq!(r.counts, plan.counts, "the run did what the dry run said");
    // The supplier the shop already had is linked and updated: counted once, as updated.
    assert_eq!(
        (
            r.counts.created,
            r.counts.updated,
            r.counts.adopted,
            r.counts.failed
        ),
        (6, 1, 0, 0)
    );
    assert_eq!(r.counts.read, r.counts.decided(), "{:?}", r.counts);
    assert_eq!(decision_of(&r, "18547290"), Decision::Update);
    assert_eq!(
        h.writes(),
        (7, 0),
        "six creates and one update, nothing in the ERP"
    );
    assert_eq!(h.shop.suppliers().len(), 8, "no supplier duplicated");
    let adopted = h.shop.supplier_by_vat("18547290").unwrap();
    assert_eq!(adopted.id, known.id);
    assert_eq!(
        adopted.vat_code, "RO18547290",
        "the ERP's code wins, as written there"
    );
    assert_eq!(adopted.phone, "0264111222");
    assert_eq!(adopted.email, "vanzari@lumina.example.ro");
    for s in &seeded {
        let copy = h.shop.supplier_by_vat(&s.vat_code).unwrap();
        assert_eq!(
            (
                &copy.name,
                &copy.email,
                &copy.phone,
                &copy.address,
                copy.status.as_str()
            ),
            (&s.name, &s.email, &s.phone, &s.address, "active")
        );
    }
    assert!(
        h.shop.supplier_by_vat("40111222").is_some(),
        "shop-only supplier kept"
    );

    h.later(30);
    h.reset_counters();
    let quiet = h.run("suppliers").await;
    assert_eq!(quiet.counts.created + quiet.counts.updated, 0, "{quiet:#?}");
    assert_eq!(h.writes(), (0, 0), "unchanged suppliers cause no write");
}

#[tokio::test]
async fn supplier_edits_flow_incrementally_and_reconciliation_undoes_shop_edits() {
    let h = Harness::new(0, |_| {}).await;
    let seeded = h.erp.seed_suppliers(10, 9);
    let first = h.run("suppliers").await;
    assert!(first.ok() && first.counts.created == 10, "{first:#?}");
    h.later(30);

    // The ERP deactivates one supplier and moves another: only those two are written (the
    // cursor's overlap re-reads the rest, which are unchanged).
    h.erp
        .update_supplier(
            seeded[2].id,
            ErpSupplier {
                active: Some(false),
                ..ErpSupplier::default()
            },
        )
        .unwrap();
    h.erp
        .update_supplier(
            seeded[5].id,
            ErpSupplier {
                address: Some("Bd. Unirii 1, Bucuresti".into()),
                ..ErpSupplier::default()
            },
        )
        .unwrap();
    h.later(1);
    h.reset_counters();
    let r = h.run("suppliers").await;
    assert_eq!((r.counts.updated, r.counts.created), (2, 0), "{r:#?}");
    assert_eq!(h.writes(), (2, 0));
    assert_eq!(
        h.shop.supplier_by_vat(&seeded[2].vat_code).unwrap().status,
        "inactive"
    );
    assert_eq!(
        h.shop.supplier_by_vat(&seeded[5].vat_code).unwrap().address,
        "Bd. Unirii 1, Bucuresti"
    );

    // Someone renames a supplier in the shop admin: the ERP did not change, so the
    // incremental run cannot see it; reconciliation compares everything and restores it.
    let copy = h.shop.supplier_by_vat(&seeded[7].vat_code).unwrap();
    h.shop
        .update_supplier(
            copy.id,
            ShopSupplier {
                name: Some("Nume schimbat de mana".into()),
                ..ShopSupplier::default()
            },
        )
        .unwrap();
    h.later(30);
    let missed = h.run("suppliers").await;
    assert_eq!(missed.counts.updated, 0, "{missed:#?}");
    let fixed = h
        .run_with(
            "suppliers",
            RunOptions {
                reconcile: true,
                details: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        (fixed.counts.read, fixed.counts.corrected),
        (10, 1),
        "{fixed:#?}"
    );
    assert_eq!(
        h.shop.supplier_by_vat(&seeded[7].vat_code).unwrap().name,
        seeded[7].name
    );
}

/// A supplier whose ERP record cannot be mapped (here a read mapping that takes its `active`
/// from a text) fails, and its failure keeps the record as the ERP listed it, whole, though
/// the listing read only the members the mapping reads.
#[tokio::test]
async fn a_supplier_that_cannot_be_mapped_is_kept_whole_in_its_failure() {
    let common = std::fs::read_to_string(repo().join("flows/common/simulated-erp.yaml")).unwrap();
    let mut entities = erpsync::config::node::parse(&common).unwrap().value["systems"]
        ["simulated_erp"]["entities"]
        .take();
    entities["supplier"]["read"]["active"] = "$.iban".into();
    let h = Harness::new(0, |doc| doc["systems"]["erp"]["entities"] = entities).await;
    let bad = h
        .erp
        .create_supplier(ErpSupplier {
            iban: Some("RO49AAAA1B31007593840000".into()),
            ..erp_supplier("Carpat Metal SRL", "RO30111222", "office@carpat.example.ro")
        })
        .unwrap();
    let r = h.run("suppliers").await;
    assert_eq!((r.counts.created, r.counts.failed), (0, 1), "{r:#?}");
    let failures = supplier_failures(&h).await;
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].error.contains("active"),
        "{}",
        failures[0].error
    );
    assert_eq!(
        failures[0].source_record,
        serde_json::to_value(&bad).unwrap()
    );
}

#[tokio::test]
async fn a_supplier_the_shop_refuses_is_kept_and_retried_after_the_fix() {
    let h = Harness::new(0, |_| {}).await;
    // ERPs take an e-mail address as typed; the shop checks it.
    let bad = h
        .erp
        .create_supplier(erp_supplier(
            "Carpat Metal SRL",
            "RO30111222",
            "comenzi la carpat.example.ro",
        ))
        .unwrap();
    h.erp
        .create_supplier(erp_supplier(
            "Delta Agro SRL",
            "30222333",
            "office@delta.example.ro",
        ))
        .unwrap();
    let r = h.run("suppliers").await;
    assert_eq!((r.counts.created, r.counts.failed), (1, 1), "{r:#?}");
    let failures = supplier_failures(&h).await;
    assert_eq!(failures.len(), 1);
    let f = &failures[0];
    assert_eq!(f.key, "30111222");
    assert!(
        f.error.contains("not a valid e-mail address"),
        "{}",
        f.error
    );
    assert_eq!(
        f.response.as_ref().unwrap()["error"]["name"],
        "ValidationError"
    );
    assert_eq!(
        f.payload.as_ref().unwrap()["email"],
        "comenzi la carpat.example.ro"
    );
    // The record as the ERP listed it, members the mapping does not read included.
    assert_eq!(f.source_record, serde_json::to_value(&bad).unwrap());
    assert_eq!(f.source_record["vatCode"], "RO30111222");
    assert!(f.source_record["iban"].is_string(), "{}", f.source_record);
    assert!(h.shop.supplier_by_vat("30111222").is_none());

    // The accountant fixes the address; the merchant retries the record by hand
    // (`erpsync failures retry --all`).
    h.later(5);
    h.erp
        .update_supplier(
            bad.id,
            ErpSupplier {
                email: Some("comenzi@carpat.example.ro".into()),
                ..ErpSupplier::default()
            },
        )
        .unwrap();
    let retry = h.retry_all().await;
    assert_eq!(retry.counts.created, 1, "{retry:#?}");
    assert!(h.store.failures.failures(None).await.unwrap().is_empty());
    assert_eq!(
        h.shop.supplier_by_vat("30111222").unwrap().email,
        "comenzi@carpat.example.ro"
    );
    assert_eq!(h.shop.suppliers().len(), 2);
}

#[tokio::test]
async fn goods_received_from_a_supplier_reach_the_shop_stock() {
    let h = Harness::new(30, |_| {}).await;
    let supplier = h.erp.seed_suppliers(1, 3).remove(0);
    h.run("stock").await;
    h.later(10);
    let before = h.erp.stock("SKU-000004", WAREHOUSE).unwrap().quantity;
    h.erp
        .receive_goods(
            &supplier.vat_code,
            WAREHOUSE,
            &[("SKU-000004", 40, 12.5), ("SKU-000009", 15, 3.0)],
        )
        .unwrap();
    h.later(1);
    h.reset_counters();
    let r = h.run("stock").await;
    assert_eq!(r.counts.updated, 2, "{r:#?}");
    assert_eq!(
        h.writes(),
        (2, 0),
        "only the two received products are written"
    );
    assert_eq!(
        h.shop.product_by_sku("SKU-000004").unwrap().stock,
        Some(before + 40)
    );
}
