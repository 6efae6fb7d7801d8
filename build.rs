//! Embeds the demo's flow project (`flows/demo` and the `flows/common` it includes) in the
//! binary, so `erpsync demo` works from any folder and after `cargo install`.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let mut out = String::from(
        "/// The demo's flow files: path under `flows/`, then the text.\n\
         pub(crate) const DEMO_FLOWS: &[(&str, &str)] = &[\n",
    );
    for dir in ["demo", "common"] {
        let folder = root.join(dir);
        println!("cargo:rerun-if-changed={}", folder.display());
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("reading {}: {e}", folder.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for path in files {
            println!("cargo:rerun-if-changed={}", path.display());
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    ({:?}, include_str!({:?})),",
                format!("{dir}/{name}"),
                path.display().to_string()
            );
        }
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("demo_flows.rs");
    std::fs::write(dest, out).expect("writing demo_flows.rs");
}
