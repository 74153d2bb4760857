//! Replays every input kept in `fuzz/regressions/<target>/` (crashes found by `scripts/fuzz`, plus seeds
//! worth keeping) through the same checks the fuzz targets run, so a fixed crash stays fixed.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::fs;
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        check(&fs::read(&path).unwrap());
        n += 1;
    }
    n
}

#[test]
fn kept_fuzz_inputs_stay_fixed() {
    let total = replay("token", checks::token)
        + replay("rewrite", checks::rewrite)
        + replay("route", checks::route)
        + replay("flags", checks::flags)
        + replay("wire", checks::wire)
        + replay("promql", checks::promql);
    assert!(
        total > 0,
        "no kept inputs: the seeds in fuzz/regressions are missing"
    );
}
