//! The documentation against the tree: every source file is in
//! docs/architecture.md's layout, nothing points outside the repository, and
//! the Rust version is one number. (Fast tier: no DPDK, no root.)
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        // Build outputs and fuzzing's own files (tests/fuzz/target, its
        // artifacts) are not the repository's text.
        if p.is_dir() && matches!(p.file_name().and_then(|n| n.to_str()), Some("target" | "artifacts")) {
            continue;
        }
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_source_file_is_in_the_architecture_layout() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let mut files = vec![root().join("dpdk-sys/build.rs")];
    files_under(&root().join("src"), &mut files);
    files_under(&root().join("dpdk-sys/src"), &mut files);
    let missing: Vec<String> =
        files.iter().map(|p| rel(p)).filter(|f| !doc.contains(&format!("`{f}`"))).collect();
    assert!(missing.is_empty(), "not in docs/architecture.md's code layout: {missing:?}");
}

#[test]
fn nothing_points_outside_the_repository() {
    // Built from parts, so this file does not match itself.
    let needles = [format!("../{}/", "shared"), format!("{}.md", "DESIGN")];
    let mut files = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    for d in ["docs", "src", "tests", "scripts", "config", "benches", "examples"] {
        files_under(&root().join(d), &mut files);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        for n in &needles {
            assert!(!text.contains(n.as_str()), "{} refers to {n}, outside the repository", rel(&f));
        }
    }
}

#[test]
fn the_readme_names_the_rust_version_cargo_toml_sets() {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let msrv = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"');
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains(&format!("{msrv} or newer")), "README.md does not say Rust {msrv} or newer");
    for other in ["1.70", "1.75", "1.80"] {
        assert!(!readme.contains(&format!("{other} or newer")), "README.md names Rust {other}");
    }
}
