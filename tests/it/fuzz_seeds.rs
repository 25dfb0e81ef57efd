//! The fuzz targets' properties (`nemoclaw::fuzzing`) over the seed corpus and the adversarial
//! inputs #12 found, in every test run: `scripts/fuzz` explores from the same seeds for longer.

use std::path::Path;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Alias bombs, deep nesting, key floods, NUL/BOM/control characters, tags: each returns (with an
/// error) instead of panicking, overflowing the stack or running away.
fn hostile_yaml() -> Vec<Vec<u8>> {
    let header = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\n";
    let mut bomb = format!("{header}x0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        bomb.push_str(&format!(
            "x{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let mut keys = header.to_owned();
    for i in 0..40_000 {
        keys.push_str(&format!("k{i}: {i}\n"));
    }
    [
        bomb,
        format!("{header}x: {}1\n", "- ".repeat(300_000)),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("{}{}", "{a: ".repeat(50_000), "}".repeat(50_000)),
        keys,
        format!("{header}{}", "? ".repeat(10_000)),
        format!("{header}cleanup:\n  termGrace: 1s\0\n  staleListeners: false\n"),
        format!("\u{feff}{header}"),
        format!("{header}\u{feff}dashboard: {{}}\n"),
        format!("{header}dashboard: !!map {{}}\n"),
        format!("{header}sandboxes:\n  - name: \"a\x1b[2J\"\n"),
    ]
    .into_iter()
    .map(String::into_bytes)
    .chain([b"apiVersion: \xff\xfe\n".to_vec()])
    .collect()
}

#[test]
fn desired_files_hold_the_fuzz_properties() {
    let mut inputs: Vec<Vec<u8>> = files(&root().join("examples"))
        .into_iter()
        .chain(files(&root().join("examples/invalid")))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(inputs.len() > 10);
    inputs.extend(hostile_yaml());
    for input in &inputs {
        nemoclaw::fuzzing::desired(input);
    }
}

#[test]
fn snapshots_hold_the_fuzz_properties() {
    let seeds = files(&root().join("fuzz/seeds/observed"));
    assert!(!seeds.is_empty());
    for s in &seeds {
        let bytes = std::fs::read(s).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        nemoclaw::cli::context::parse_observed("seed", &text)
            .unwrap_or_else(|e| panic!("{} is a valid seed: {e:?}", s.display()));
        nemoclaw::fuzzing::observed(&bytes);
    }
    for input in hostile_yaml() {
        nemoclaw::fuzzing::observed(&input);
    }
}

#[test]
fn saved_plans_hold_the_fuzz_properties() {
    let seeds = files(&root().join("fuzz/seeds/saved_plan"));
    assert!(!seeds.is_empty());
    for s in &seeds {
        let bytes = std::fs::read(s).unwrap();
        nemoclaw::plan::saved::SavedPlan::parse(std::str::from_utf8(&bytes).unwrap())
            .unwrap_or_else(|e| panic!("{} is a valid seed: {e}", s.display()));
        nemoclaw::fuzzing::saved_plan(&bytes);
        // Deeply nested JSON: serde_json's recursion limit refuses it.
        nemoclaw::fuzzing::saved_plan(
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).as_bytes(),
        );
    }
}
