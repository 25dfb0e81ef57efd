//! The binary's contract: exit codes, usage errors, and planning offline from a snapshot.

use crate::support::code;
use crate::support::{Host, ME};

fn nemoclaw(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    crate::support::nemoclaw_cmd(dir)
        .args(args)
        .output()
        .unwrap()
}

const FILE: &str = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\nsandboxes:\n  - name: my-assistant\n    dashboardPort: 18789\n";

#[test]
fn usage_errors_exit_1_never_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(code(&nemoclaw(&["plan", "--no-such-flag"], dir.path())), 1);
    assert_eq!(code(&nemoclaw(&["frobnicate"], dir.path())), 1);
    assert_eq!(code(&nemoclaw(&["plan", "-o", "xml"], dir.path())), 1);
    let help = nemoclaw(&["plan", "--help"], dir.path());
    assert_eq!(code(&help), 0);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--detailed-exitcode") && text.contains("130  interrupted"),
        "{text}"
    );
}

#[test]
fn invalid_file_exits_1_with_positions_and_observes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nemoclaw.yaml"),
        "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ngateway:\n  port: 18790\n",
    )
    .unwrap();
    for cmd in [&["validate"][..], &["plan"], &["apply", "--yes"]] {
        let out = nemoclaw(cmd, dir.path());
        assert_eq!(code(&out), 1, "{cmd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("nemoclaw.yaml:4:9"), "{err}");
        assert!(err.contains("nothing was observed or changed"), "{err}");
    }
    assert!(
        !dir.path().join("apply.lock").exists(),
        "an invalid file never reaches the lock or the host"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = nemoclaw(&["plan", "-f", "nope.yaml"], dir.path());
    assert_eq!(code(&out), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the desired-state file `nope.yaml`") && err.contains("hint:"),
        "{err}"
    );
}

#[test]
fn offline_plan_from_a_snapshot_and_its_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nemoclaw.yaml"), FILE).unwrap();
    let write = |name: &str, o: &nemoclaw::model::Observed| {
        std::fs::write(
            dir.path().join(name),
            serde_json::to_string_pretty(o).unwrap(),
        )
        .unwrap();
    };
    write(
        "stale.json",
        &Host::new()
            .process(4242, ME, "openclaw-gateway")
            .listen(18789, &[4242])
            .build(),
    );
    write("clean.json", &Host::new().build());
    write(
        "blocked.json",
        &Host::new()
            .registry_unknown()
            .process(4242, ME, "openclaw-gateway")
            .listen(18789, &[4242])
            .build(),
    );

    let plan = |snap: &str, extra: &[&str]| {
        let mut args = vec!["plan", "--observed", snap];
        args.extend_from_slice(extra);
        nemoclaw(&args, dir.path())
    };
    assert_eq!(
        code(&plan("stale.json", &[])),
        0,
        "plain plan exits 0 on success"
    );
    assert_eq!(code(&plan("stale.json", &["--detailed-exitcode"])), 2);
    assert_eq!(code(&plan("clean.json", &["--detailed-exitcode"])), 0);
    assert_eq!(code(&plan("blocked.json", &["--detailed-exitcode"])), 3);
    assert_eq!(code(&plan("stale.json", &["--expect-no-changes"])), 7);
    assert_eq!(code(&plan("clean.json", &["--expect-no-changes"])), 0);

    // Offline planning gives the same JSON as the library on the same snapshot.
    let out = plan("stale.json", &["-o", "json"]);
    let d = nemoclaw::spec::load("nemoclaw.yaml", FILE).unwrap();
    let o: nemoclaw::model::Observed =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stale.json")).unwrap())
            .unwrap();
    let expected =
        nemoclaw::plan::render::render_json(&nemoclaw::plan::plan(&d, &o, &Default::default()));
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["format_version"], "1.0");
    assert_eq!(json["steps"][0]["pid"], 4242);
    assert_eq!(json["steps"][0]["port"], 18789);
    assert_eq!(json["steps"][0]["blocked"], serde_json::Value::Null);
}

#[test]
fn a_bad_snapshot_is_an_error_not_an_empty_host() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nemoclaw.yaml"), FILE).unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"format_version\": \"1.0\"}").unwrap();
    let out = nemoclaw(
        &["plan", "--observed", "bad.json", "--detailed-exitcode"],
        dir.path(),
    );
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an observation"));
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = nemoclaw(&["schema"], dir.path());
    assert_eq!(code(&out), 0);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/nemoclaw.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(printed, committed);
}

#[test]
fn completions_for_every_shell_come_from_the_clap_definition() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef nemoclaw"),
        ("fish", "complete -c nemoclaw"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = nemoclaw(&["completions", shell], dir.path());
        assert_eq!(code(&out), 0, "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {text}");
        for word in ["plan", "apply", "detailed-exitcode", "allow"] {
            assert!(text.contains(word), "{shell} completes `{word}`");
        }
    }
    assert_eq!(code(&nemoclaw(&["completions", "tcsh"], dir.path())), 1);
}

#[test]
fn man_pages_have_their_sections_and_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = nemoclaw(&["man"], dir.path());
    assert_eq!(code(&out), 0);
    let page = String::from_utf8_lossy(&out.stdout);
    let sections: Vec<&str> = page.lines().filter(|l| l.starts_with(".SH ")).collect();
    crate::snap!("man-sections", sections.join("\n"));
    assert!(
        page.starts_with(".ie") || page.contains(".TH nemoclaw"),
        "{page}"
    );
    for cmd in [
        "validate",
        "schema",
        "observe",
        "plan",
        "apply",
        "history",
        "init",
        "completions",
        "man",
    ] {
        assert!(page.contains(cmd), "the page lists `{cmd}`");
    }
    let plan = nemoclaw(&["man", "plan"], dir.path());
    assert_eq!(code(&plan), 0);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("nemoclaw\\-plan") && text.contains("detailed\\-exitcode"),
        "{text}"
    );
    assert_eq!(code(&nemoclaw(&["man", "nope"], dir.path())), 1);
}

#[test]
fn the_step_graph_is_mermaid_in_markdown_and_dot_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let range = crate::support::next_range();
    std::fs::write(
        dir.path().join("nemoclaw.yaml"),
        format!("apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{range}\"\ngateway:\n  runtime: docker-driver\n  binary: /nonexistent/openshell-gateway\n  port: {}\n", range.end + 1),
    )
    .unwrap();
    let md = nemoclaw(&["plan", "-o", "markdown"], dir.path());
    let md = String::from_utf8_lossy(&md.stdout).to_string();
    assert!(md.contains("```mermaid\nflowchart TD"), "{md}");
    assert!(
        md.contains("(blocked)") && md.contains(":::blocked"),
        "{md}"
    );
    let dot = nemoclaw(&["plan", "-o", "dot"], dir.path());
    assert_eq!(code(&dot), 0);
    let dot = String::from_utf8_lossy(&dot.stdout).to_string();
    assert!(
        dot.starts_with("digraph nemoclaw_plan {") && dot.contains("style=dashed"),
        "{dot}"
    );
}

#[test]
fn verbose_logs_time_every_observer_on_stderr_and_never_print_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let range = crate::support::next_range();
    std::fs::write(
        dir.path().join("nemoclaw.yaml"),
        format!("apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ndashboard:\n  portRange: \"{range}\"\ngateway:\n  runtime: docker-driver\n  port: {}\n  env:\n    MY_API_KEY: sup3r-secret-value\nsandboxes:\n  - name: alice\n    from: img:1\n", range.end + 1),
    )
    .unwrap();
    let out = nemoclaw(&["plan", "-o", "json", "-vv"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    for observer in [
        "listeners",
        "registry",
        "forwards",
        "openshell",
        "gateway health",
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("observer=\"{observer}\""))
                    && l.contains("elapsed_ms=")),
            "{observer} is timed: {err}"
        );
    }
    assert!(
        err.contains("openshell") && err.contains("command=--version"),
        "{err}"
    );
    assert!(
        !err.contains("sup3r-secret-value")
            && !String::from_utf8_lossy(&out.stdout).contains("sup3r-secret-value")
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("stdout stays data");
    let quiet = nemoclaw(&["plan", "-o", "json"], dir.path());
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("elapsed_ms"),
        "no logs without -v"
    );
}
