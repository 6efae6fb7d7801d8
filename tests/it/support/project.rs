//! The demo project (`flows/demo`) as the tests start from it: as JSON to edit, or as the
//! shipped YAML text, pointed at running simulators.

use std::path::Path;

use erpsync_sim::{ErpHandle, ShopHandle};
use serde_json::{Value, json};

use super::repo;

/// The ERP warehouse the demo project's stock flows read.
pub const WAREHOUSE: &str = "Depozit central";

/// The demo project (`demo_project`) written to `project.yaml` in `dir`; its path.
pub fn write_demo_project(dir: &Path) -> String {
    let project = dir.join("project.yaml");
    std::fs::write(
        &project,
        serde_json::to_string_pretty(&demo_project()).unwrap(),
    )
    .unwrap();
    project.to_str().unwrap().to_string()
}

/// The demo project as JSON (valid YAML), with `include` made absolute so it can be written
/// anywhere, and the state section dropped. Its ERP system is written out in full (what it
/// inherits from `simulated_erp` included), so tests can change any part of it.
pub fn demo_project() -> Value {
    let text = std::fs::read_to_string(repo().join("flows/demo/demo.yaml")).unwrap();
    let mut doc = erpsync::config::node::parse(&text).unwrap().value;
    doc["include"] = json!([repo().join("flows/common").display().to_string()]);
    doc.as_object_mut().unwrap().remove("state");
    let text = std::fs::read_to_string(repo().join("flows/common/simulated-erp.yaml")).unwrap();
    let template = erpsync::config::node::parse(&text).unwrap().value["systems"]["simulated_erp"]
        .as_object()
        .unwrap()
        .clone();
    let erp = doc["systems"]["erp"].as_object_mut().unwrap();
    assert_eq!(erp.remove("extends"), Some(json!("simulated_erp")));
    for (k, v) in template.into_iter().filter(|(k, _)| k != "abstract") {
        match (erp.get_mut(&k), v) {
            (Some(Value::Object(own)), Value::Object(inherited)) => {
                for (name, item) in inherited {
                    own.entry(name).or_insert(item);
                }
            }
            (Some(_), _) => {}
            (None, v) => {
                erp.insert(k, v);
            }
        }
    }
    doc
}

/// A project's text with the demo's simulator URLs (`${SHOP_URL:-…}`, `${ERP_URL:-…}`)
/// replaced by those of running simulators.
pub fn at_sims(text: &str, shop_url: &str, erp_url: &str) -> String {
    text.replace("${SHOP_URL:-http://127.0.0.1:8701}", shop_url)
        .replace("${ERP_URL:-http://127.0.0.1:8702}", erp_url)
}

/// `flows/demo/demo.yaml` pointed at the simulators and at a state file in `dir`.
pub fn demo_yaml(shop_url: &str, erp_url: &str, dir: &Path) -> String {
    let text = std::fs::read_to_string(repo().join("flows/demo/demo.yaml")).unwrap();
    let common = repo().join("flows/common");
    let text = text
        .replace(
            "include: [../common]",
            &format!("include: [\"{}\"]", common.display()),
        )
        .replace(
            "sqlite:../../target/demo/erpsync.sqlite",
            &format!("sqlite:{}", dir.join("state.sqlite").display()),
        );
    at_sims(&text, shop_url, erp_url)
}

/// The variables the demo project reads to reach the simulators: URLs and credentials.
pub fn sim_env(shop: &ShopHandle, erp: &ErpHandle) -> Vec<(&'static str, String)> {
    let (key, secret) = shop.credentials();
    let (client_id, client_secret) = erp.credentials();
    vec![
        ("SHOP_URL", shop.base_url()),
        ("ERP_URL", erp.base_url()),
        ("SHOP_API_KEY", key),
        ("SHOP_API_SECRET", secret),
        ("ERP_CLIENT_ID", client_id),
        ("ERP_CLIENT_SECRET", client_secret),
    ]
}
