//! Project templates of `erpsync init`: a shop platform and an ERP chosen among the shipped
//! flows (or a blank ERP whose operations are written as commented examples), composed into
//! one project folder with the canonical entities, the schemas, an `.env.example` of every
//! `${VAR}` the files read, state and daemon sections, and an offline test that passes.

use std::collections::BTreeMap;
use std::path::PathBuf;

const ENTITIES: &str = include_str!("../../../../flows/common/entities.yaml");
const MERCHANTPRO: &str = include_str!("../../../../flows/common/merchantpro.yaml");
const WOOCOMMERCE: &str = include_str!("../../../../flows/woocommerce/woocommerce.yaml");
const SMARTBILL: &str = include_str!("../../../../flows/smartbill/smartbill.yaml");
const OBLIO: &str = include_str!("../../../../flows/oblio/oblio.yaml");
const TRYTON: &str = include_str!("../../../../flows/tryton/tryton.yaml");

/// The shop platforms a project can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shop {
    /// MerchantPro (API v2), from `flows/common/merchantpro.yaml`.
    Merchantpro,
    /// WooCommerce (REST API v3), from `flows/woocommerce`.
    Woocommerce,
}

/// The ERPs a project can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Erp {
    /// SmartBill Cloud, from `flows/smartbill`.
    Smartbill,
    /// Oblio, from `flows/oblio`.
    Oblio,
    /// Tryton, from `flows/tryton`.
    Tryton,
    /// A system of your own: example operations and mappings to edit.
    Blank,
}

impl Shop {
    fn title(self) -> &'static str {
        match self {
            Shop::Merchantpro => "MerchantPro",
            Shop::Woocommerce => "WooCommerce",
        }
    }
}

impl Erp {
    fn title(self) -> &'static str {
        match self {
            Erp::Smartbill => "SmartBill",
            Erp::Oblio => "Oblio",
            Erp::Tryton => "Tryton",
            Erp::Blank => "your ERP",
        }
    }
}

/// A template that cannot be composed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateComposeError {
    #[error("the shipped `{file}` has no `{what}` to take")]
    Missing { file: &'static str, what: String },
}

/// The files of a new project: path inside the project folder → text.
pub(crate) type Files = BTreeMap<PathBuf, String>;

/// The lines of `text` from the line that is exactly `start` (included) to the next line
/// indented `indent` spaces or less that is not blank (excluded), as a byte range.
fn block(text: &str, start: &str, indent: usize) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut begin = None;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        match begin {
            None if bare == start => begin = Some(offset),
            Some(b) => {
                let lead = bare.len() - bare.trim_start().len();
                if !bare.trim().is_empty() && lead <= indent {
                    return Some(b..offset);
                }
            }
            None => {}
        }
        offset += line.len();
    }
    begin.map(|b| b..text.len())
}

fn take<'a>(
    text: &'a str,
    file: &'static str,
    start: &str,
    indent: usize,
) -> Result<&'a str, TemplateComposeError> {
    block(text, start, indent)
        .map(|r| &text[r])
        .ok_or_else(|| TemplateComposeError::Missing {
            file,
            what: start.trim().to_string(),
        })
}

fn remove(text: &str, start: &str, indent: usize) -> String {
    match block(text, start, indent) {
        Some(r) => format!("{}{}", &text[..r.start], &text[r.end..]),
        None => text.to_string(),
    }
}

/// The comment at the top of a shipped file, without its schema line.
fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter(|l| !l.contains("yaml-language-server"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .trim_start_matches("#\n")
        .to_string()
}

/// The WooCommerce system, named `shop`, with its lookup tables in its own `vars`.
fn woo_system() -> Result<String, TemplateComposeError> {
    let file = "flows/woocommerce/woocommerce.yaml";
    let system = take(WOOCOMMERCE, file, "  woo:", 2)?;
    let tables = take(WOOCOMMERCE, file, "vars:", 0)?;
    let tables: String = tables
        .lines()
        .skip(1)
        .map(|l| {
            if l.trim().is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    let system = system.trim_end().replacen("  woo:", "  shop:", 1);
    Ok(format!(
        "{system}\n    # WooCommerce's statuses, as lookup tables of this system.\n    vars:\n{}\n",
        tables.trim_end()
    ))
}

/// The name of WooCommerce's order webhook in `flows/woocommerce`.
const WOO_HOOK: &str = "woo_orders";

/// The flow that sends the shop's orders to the ERP also takes WooCommerce's order webhook:
/// `webhook: woo_orders` joins its trigger's schedule. Without such a flow, `text` is
/// returned as it is.
fn order_webhook(text: &str) -> String {
    let Some(flow) = text.find("    entity: order\n    from: shop\n") else {
        return text.to_string();
    };
    let Some(trigger) = text[flow..]
        .find("    trigger:\n      schedule: ")
        .map(|t| t + flow)
    else {
        return text.to_string();
    };
    let Some(line_end) = text[trigger + "    trigger:\n".len()..]
        .find('\n')
        .map(|e| e + trigger + "    trigger:\n".len() + 1)
    else {
        return text.to_string();
    };
    let mut out = text.to_string();
    out.insert_str(line_end, &format!("      webhook: {WOO_HOOK}\n"));
    out
}

const MERCHANTPRO_SHOP: &str = "  shop:
    extends: merchantpro
    base_url: ${SHOP_URL:-https://www.example.ro}/api/v2
    auth:
      kind: basic
      username: ${SHOP_API_KEY:-}
      password: ${SHOP_API_SECRET:-}

";

const BLANK_ERP: &str = r#"  # Your ERP. Each operation is one HTTP request; `erpsync call erp OPERATION` shows what it
  # sends and gets back, and how the records map, before a flow uses it.
  erp:
    role: erp
    base_url: ${ERP_URL:-https://erp.example.com/api}
    auth:
      kind: bearer
      token: ${ERP_TOKEN:-}
    # auth: { kind: basic, username: "${ERP_USER}", password: "${ERP_PASSWORD}" }
    # auth: { kind: api_key, header: X-Api-Key, value: "${ERP_API_KEY}" }
    # auth: { kind: oauth2_client_credentials, token_url: oauth/token, client_id: "${ERP_CLIENT_ID}", client_secret: "${ERP_CLIENT_SECRET}" }
    # Keep under the API's documented limit: burst + per_second × window.
    rate_limit: { per_second: 2, burst: 4 }
    # errors:
    #   - when: "@.error && @.error != ''"   # a 200 carrying an error
    #     action: fail
    #     message: "{{body.error}}"
    operations:
      list_products:
        path: /products
        # Empty values are left out: a first run has no `since`.
        query: { updated_since: "{{since}}" }
        records: $.items
        # paginate: { kind: page, page_param: page, size_param: per_page, size: 100 }
        # paginate: { kind: offset, offset_param: offset, limit_param: limit, limit: 100 }
        # paginate: { kind: next_url, path: $.next }
      find_product:
        path: /products
        query: { sku: "{{key}}" }
        records: $.items
      create_product:
        method: POST
        path: /products
        body: "{{record}}"
        record: $
      update_product:
        method: PUT
        path: /products/{{id}}
        body: "{{record}}"
        record: $
    entities:
      product:
        id: $.id
        list: list_products
        lookup: find_product
        create: create_product
        update: update_product
        # The ERP's record → the canonical product (see common/entities.yaml).
        read:
          sku: $.sku
          name: $.name
          price: { path: $.price, type: decimal }
        # The canonical product → what the ERP takes.
        write:
          sku: $.sku
          name: $.name
          price: $.price

"#;

const BLANK_FLOWS: &str = r#"flows:
  products_to_erp:
    description: The shop's products created and kept up to date in the ERP, by SKU.
    entity: product
    from: shop
    to: erp
    mode: upsert
    fields: [sku, name, price]
    trigger: { schedule: "*/15 * * * *" }
    incremental: { start: "2026-01-01" }
"#;

/// Every `${VAR}` (with its default, if any) the texts read, in order of first use.
fn variables(texts: &[&str]) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for text in texts {
        for comment_free in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let mut rest = comment_free;
            while let Some(i) = rest.find("${") {
                let after = &rest[i + 2..];
                let Some(end) = after.find('}') else { break };
                let reference = &after[..end];
                rest = &after[end + 1..];
                if reference.starts_with("file:") {
                    continue;
                }
                let (name, default) = match reference.split_once(":-") {
                    Some((n, d)) => (n.trim(), Some(d.to_string())),
                    None => (reference.trim(), None),
                };
                if !out.iter().any(|(n, _)| n == name) {
                    out.push((name.to_string(), default));
                }
            }
        }
    }
    out
}

/// The flow that reads the shop, and the listing it starts with: the test skeleton's one
/// exchange.
fn first_shop_read(erp: Erp) -> (&'static str, &'static str) {
    match erp {
        Erp::Smartbill | Erp::Oblio => ("invoices", "/orders"),
        Erp::Tryton => ("products", "/products"),
        Erp::Blank => ("products_to_erp", "/products"),
    }
}

/// A shipped flow file (two folders under the repository's `schemas/`, in `flows/NAME/`) as
/// a project of its own holds it, one folder under the project's `schemas/`: its editor's
/// schema comment names `../schemas/flow.schema.json`.
pub fn with_schema_of_its_project(text: &str) -> String {
    text.replacen(
        "# yaml-language-server: $schema=../../schemas/flow.schema.json",
        "# yaml-language-server: $schema=../schemas/flow.schema.json",
        1,
    )
}

/// Composes the project.
pub fn compose(shop: Shop, erp: Erp) -> Result<Files, TemplateComposeError> {
    let mut files = Files::new();
    let shop_system = match shop {
        Shop::Merchantpro => MERCHANTPRO_SHOP.to_string(),
        Shop::Woocommerce => woo_system()?,
    };
    let (intro, body) = match erp {
        Erp::Blank => (
            String::new(),
            format!("systems:\n{shop_system}{BLANK_ERP}{BLANK_FLOWS}"),
        ),
        shipped => {
            let (file, text) = match shipped {
                Erp::Smartbill => ("flows/smartbill/smartbill.yaml", SMARTBILL),
                Erp::Oblio => ("flows/oblio/oblio.yaml", OBLIO),
                _ => ("flows/tryton/tryton.yaml", TRYTON),
            };
            let from = text
                .find("\nsystems:\n")
                .ok_or_else(|| TemplateComposeError::Missing {
                    file,
                    what: "systems".into(),
                })?;
            let mut body = text[from + 1..].to_string();
            let range =
                block(&body, "  shop:", 2).ok_or_else(|| TemplateComposeError::Missing {
                    file,
                    what: "systems.shop".into(),
                })?;
            body.replace_range(range, &shop_system);
            if shop == Shop::Woocommerce {
                // WooCommerce orders cannot be locked, and it keeps no suppliers.
                body = body.replace("    after_export:\n      - action: lock\n", "");
                body = remove(&body, "  suppliers:", 2);
                body = order_webhook(&body);
            }
            let mut intro = format!("# From `{file}`:\n#\n{}", header(text));
            if shop == Shop::Woocommerce {
                intro.push_str(
                    "#\n# Here the shop is WooCommerce (from `flows/woocommerce`): its orders cannot be\n\
                     # locked and it keeps no suppliers, so those parts of the shipped flows are left out.\n",
                );
            }
            (intro, body)
        }
    };
    // The shop's order webhooks, when a flow takes them (see `order_webhook`).
    let webhooks = if shop == Shop::Woocommerce && body.contains(&format!("webhook: {WOO_HOOK}")) {
        let file = "flows/woocommerce/woocommerce.yaml";
        format!(
            "  # WooCommerce's order webhooks: create one (topic \"Order updated\", delivery URL\n  \
             # …/hooks/woocommerce-orders, the secret below) and a paid order is exported as soon\n  \
             # as WooCommerce says so.\n{}",
            take(WOOCOMMERCE, file, "  webhooks:", 2)?
                .trim_end()
                // No shared default: a secret anybody can read would sign forgeries.
                .replace(
                    "${WOO_WEBHOOK_SECRET:-demo-webhook-secret}",
                    "${WOO_WEBHOOK_SECRET:-}"
                )
        ) + "\n"
    } else {
        String::new()
    };
    let (flow, path) = first_shop_read(erp);
    let shop_name = shop.title();
    let erp_name = erp.title();
    let main = format!(
        "# yaml-language-server: $schema=schemas/flow.schema.json
#
# {shop_name} ↔ {erp_name}, started with `erpsync init`. Addresses and secrets come from the
# environment (`.env.example` lists every variable); the canonical entities are in
# `common/entities.yaml`. Writing and checking a flow:
#   erpsync validate .                         every problem, with file:line:col
#   erpsync call shop OPERATION                one live request, its records, mapped field by field
#   erpsync call shop OPERATION --record tests/x.yaml   …kept for an offline test
#   erpsync test .                             the offline tests in tests/, no network
#   erpsync dry-run .                          what a run would do, writing nothing
#   erpsync run --once .                       one run; `erpsync run .` is the daemon
#
{intro}version: 1

state:
  # What erpsync knows (bindings, cursors, failures); created by the first run.
  url: sqlite:erpsync.sqlite

daemon:
  # Webhooks, admin API, console and metrics (`erpsync run .` without `--once`). The admin
  # token comes from ERPSYNC_ADMIN_TOKEN or `--admin-token`.
  listen: 127.0.0.1:8700
{webhooks}
{body}"
    );
    files.insert(
        "common/entities.yaml".into(),
        with_schema_of_its_project(ENTITIES),
    );
    let mut texts = vec![main.as_str()];
    if shop == Shop::Merchantpro {
        files.insert(
            "common/merchantpro.yaml".into(),
            with_schema_of_its_project(MERCHANTPRO),
        );
        texts.push(MERCHANTPRO);
    }
    let mut env = String::from(
        "# The variables the flow files read, with their defaults; copy to `.env`, fill in, and\n\
         # load it into the environment (`set -a; . ./.env; set +a`, systemd `EnvironmentFile=`,\n\
         # `docker run --env-file`). Keep it out of version control.\n",
    );
    for (name, default) in variables(&texts) {
        env.push_str(&format!("{name}={}\n", default.unwrap_or_default()));
    }
    files.insert(".env.example".into(), env);
    files.insert("erpsync.yaml".into(), main);
    let empty = match shop {
        Shop::Merchantpro => "{ data: [], meta: { links: {} } }",
        Shop::Woocommerce => "[]",
    };
    files.insert(
        format!("tests/{flow}.test.yaml").into(),
        format!(
            "# yaml-language-server: $schema=../schemas/test.schema.json
#
# An offline test: `erpsync test .` runs `{flow}` against these exchanges instead of the
# systems, from the state below, and compares what it did with `expect`. Replace the empty
# listing with records (`erpsync call shop OPERATION --record FILE` writes real ones, secrets
# masked; `exchanges_from: [FILE]` serves them), add the requests the run should send, and
# say what it must do. `erpsync run --once . --record FILE` writes a whole run as a test.
description: an empty listing of the shop reads nothing and writes nothing
flows: [{flow}]
# env: {{ SHOP_API_KEY: test }}          # values of ${{VARS}} for this test
# state:
#   cursors: {{ {flow}: \"2026-03-01T00:00:00Z\" }}
#   bindings:
#     - {{ entity: product, key: SKU-1, ids: {{ shop: \"11\", erp: \"P-1\" }} }}
exchanges:
  - system: shop
    # No `query`: any query matches. A recorded exchange pins it.
    request: {{ method: GET, path: {path} }}
    response:
      body: {empty}
  # - system: erp
  #   request:
  #     method: POST
  #     path: /products
  #     body: {{ sku: SKU-1, price: \"*\" }}    # members checked; \"*\" is any value
  #   response: {{ status: 201, body: {{ id: P-1 }} }}
expect:
  flows:
    {flow}:
      status: ok
      counts: {{ read: 0, created: 0, updated: 0, failed: 0 }}
      records: []
      # records:
      #   - {{ key: SKU-1, decision: create, target: erp, changes: {{ price: \"19.50\" }} }}
"
        ),
    );
    files.insert(
        "schemas/flow.schema.json".into(),
        crate::config::schema_nav::flow_schema_text(),
    );
    files.insert(
        "schemas/test.schema.json".into(),
        crate::authoring::testfile::schema_text(),
    );
    files.insert(
        ".gitignore".into(),
        ".env\nerpsync.sqlite\nerpsync.sqlite-*\n".into(),
    );
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_end_at_the_next_key_of_their_level() {
        let text = "systems:\n  a:\n    x: 1\n\n    y: 2\n  b:\n    z: 3\nflows:\n";
        assert_eq!(
            &text[block(text, "  a:", 2).unwrap()],
            "  a:\n    x: 1\n\n    y: 2\n"
        );
        assert_eq!(&text[block(text, "  b:", 2).unwrap()], "  b:\n    z: 3\n");
        assert_eq!(
            remove(text, "  a:", 2),
            "systems:\n  b:\n    z: 3\nflows:\n"
        );
    }

    #[test]
    fn variables_are_listed_once_with_their_defaults() {
        let vars = variables(&["a: ${A:-1}\n# ${C}\nb: ${B} ${A}\nc: ${file:/x}"]);
        assert_eq!(
            vars,
            vec![
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), None)
            ]
        );
    }
}
