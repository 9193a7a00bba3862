//! The fuzz targets' committed corpus (tests/fuzz/corpus: the seeds from
//! tests/fuzz/seeds.py and what fuzzing found worth keeping) replayed
//! through their bodies (`l4lb::fuzz`) in the fast tier: no fuzzer needed,
//! and an input that once broke an invariant stays a test.
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus", dir.display());
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn the_parsers_corpus_passes() {
    for (_, data) in corpus("parsers") {
        l4lb::fuzz::parsers(&data);
    }
}

#[test]
fn the_pipeline_corpus_passes() {
    for (_, data) in corpus("pipeline") {
        l4lb::fuzz::pipeline(&data);
    }
}

#[test]
fn the_config_corpus_passes_and_its_seeds_are_valid_configurations() {
    for (path, data) in corpus("config") {
        l4lb::fuzz::config(&data);
        if path.file_name().unwrap().to_string_lossy().starts_with("seed-") {
            let text = String::from_utf8(data).unwrap();
            let cfg = l4lb::control::config::Config::parse(&text, "seed.toml");
            assert!(
                cfg.and_then(|c| c.validate("seed.toml")).is_ok(),
                "{} does not validate",
                path.display()
            );
        }
    }
}

#[test]
fn the_control_corpus_passes_and_its_seeds_are_requests() {
    for (path, data) in corpus("control") {
        l4lb::fuzz::control(&data);
        if path.file_name().unwrap().to_string_lossy().starts_with("seed-") {
            let r = l4lb::control::api::parse_request(&data);
            assert!(r.is_ok(), "{}: {r:?}", path.display());
        }
    }
}
