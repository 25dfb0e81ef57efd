//! The committed schema, the examples, and the invalid examples' diagnostics.

use std::path::{Path, PathBuf};

use crate::snap;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// `file` (under the repository) holds exactly `generated`, as `nemoclaw COMMAND` prints it.
fn assert_fresh(file: &str, generated: &serde_json::Value, command: &str) {
    let generated = serde_json::to_string_pretty(generated).unwrap() + "\n";
    let committed = std::fs::read_to_string(root().join(file)).unwrap_or_default();
    if committed != generated {
        let diff = similar::TextDiff::from_lines(&committed, &generated)
            .unified_diff()
            .header("committed", "generated")
            .to_string();
        panic!("{file} is stale; run `cargo run -q -- {command} > {file}`\n{diff}");
    }
}

#[test]
fn committed_schema_is_fresh() {
    let schema = serde_json::to_value(nemoclaw::spec::json_schema()).unwrap();
    assert_fresh("schemas/nemoclaw.schema.json", &schema, "schema");
}

#[test]
fn committed_crd_is_fresh() {
    let crd = serde_json::to_value(nemoclaw::spec::crd::crd()).unwrap();
    assert_fresh("schemas/nemoclawhost.crd.json", &crd, "crd");
}

/// A NemoClawHost manifest is read as its `spec.desired`: the same desired state as the file
/// with that body, and diagnostics at the manifest's own lines.
#[test]
fn a_nemoclawhost_manifest_is_its_desired_file() {
    let manifest =
        std::fs::read_to_string(root().join("examples/fleet/workstation-1.yaml")).unwrap();
    let from_manifest =
        nemoclaw::spec::load("m.yaml", &manifest).unwrap_or_else(|d| panic!("{d:?}"));
    let file = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ngateway:\n  runtime: docker-driver\n  port: 8080\ndashboard:\n  portRange: \"18789-18799\"\nsandboxes:\n  - name: alice\n    dashboardPort: 18789\n    from: ghcr.io/nvidia/nemoclaw/sandbox-base:latest\n";
    let from_file = nemoclaw::spec::load("f.yaml", file).unwrap();
    let strip = |mut d: nemoclaw::model::Desired| {
        d.source = nemoclaw::model::DesiredSource {
            path: String::new(),
            sha256: String::new(),
        };
        d
    };
    assert_eq!(strip(from_manifest), strip(from_file));

    let broken = manifest.replace("port: 8080", "port: 80");
    let diags = nemoclaw::spec::load("m.yaml", &broken).unwrap_err();
    let line = broken.lines().position(|l| l.contains("port: 80")).unwrap() + 1;
    assert!(
        diags.iter().any(|d| d.span.is_some_and(|s| s.line == line)),
        "at the manifest's line {line}: {diags:?}"
    );
    let no_desired = "apiVersion: nemoclaw.io/v1alpha1\nkind: NemoClawHost\nspec:\n  host: x\n";
    let d = nemoclaw::spec::load("m.yaml", no_desired).unwrap_err();
    assert!(d[0].message.contains("no `spec.desired`"), "{d:?}");
}

#[test]
fn every_example_starts_with_the_schema_comment_and_validates() {
    let files = yaml_files(&root().join("examples"));
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema="),
            "{} must start with a `# yaml-language-server: $schema=` comment",
            f.display()
        );
        if let Err(d) = nemoclaw::spec::load(&f.display().to_string(), &text) {
            panic!("{} is invalid: {d:#?}", f.display());
        }
    }
}

#[test]
fn every_invalid_example_fails_with_its_diagnostics() {
    let files = yaml_files(&root().join("examples/invalid"));
    assert!(files.len() >= 5, "keep a spread of invalid examples");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let shown = format!(
            "examples/invalid/{}",
            f.file_name().unwrap().to_string_lossy()
        );
        let diags =
            nemoclaw::spec::load(&shown, &text).expect_err(&format!("{shown} must be invalid"));
        assert!(
            diags.iter().all(|d| d.span.is_some()),
            "{shown}: every diagnostic has a position"
        );
        let rendered: String = diags
            .iter()
            .map(|d| d.render(&shown, &text, false))
            .collect::<Vec<_>>()
            .join("\n");
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        snap!(format!("invalid-{name}"), rendered);
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = "apiVersion: nemoclaw.io/v1alpha1\nkind: Host\ngateway:\n  prot: 8080\nsandboxes:\n  - name: Bad_Name\n    dashboardPort: 18789\n  - name: ok\n    dashbordPort: 18790\ncleanup:\n  termGrace: 5\n";
    let diags = nemoclaw::spec::load("f.yaml", text).unwrap_err();
    let lines: Vec<usize> = diags.iter().map(|d| d.span.unwrap().line).collect();
    assert_eq!(
        lines,
        vec![4, 9, 11],
        "structural problems first, all of them: {diags:#?}"
    );
}

/// `deploy/`: every file parses; the kustomization lists files that exist; the agent's Role
/// grants exactly what the agent does (its NemoClawHosts, their status, its Lease, Events) and
/// nothing cluster-wide; the GitOps host files are valid NemoClawHosts.
#[test]
fn deploy_files_parse_and_grant_the_agent_what_it_uses() {
    let deploy = root().join("deploy");
    let docs = |name: &str| -> Vec<serde_yaml::Value> {
        let text = std::fs::read_to_string(deploy.join(name)).unwrap();
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    };
    let kustomization = &docs("kustomization.yaml")[0];
    for r in kustomization["resources"].as_sequence().unwrap() {
        let path = deploy.join(r.as_str().unwrap());
        assert!(path.is_file(), "{} is listed but missing", path.display());
    }
    let rbac = docs("rbac.yaml");
    let kinds: Vec<&str> = rbac.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "Role", "RoleBinding"],
        "namespaced only"
    );
    let grants = |group: &str, resource: &str| -> Vec<String> {
        rbac[1]["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|r| {
                r["apiGroups"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|g| g.as_str() == Some(group))
                    && r["resources"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|x| x.as_str() == Some(resource))
            })
            .flat_map(|r| {
                r["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
            })
            .collect()
    };
    for (group, resource, verb) in [
        ("nemoclaw.io", "nemoclawhosts", "list"),
        ("nemoclaw.io", "nemoclawhosts/status", "patch"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
        ("coordination.k8s.io", "leases", "delete"),
        ("", "events", "create"),
    ] {
        assert!(
            grants(group, resource).iter().any(|v| v == verb),
            "{verb} {group}/{resource}"
        );
    }
    assert!(grants("", "secrets").is_empty(), "no secrets");
    assert_eq!(docs("daemonset.yaml")[0]["kind"], "DaemonSet");
    assert_eq!(
        docs("gitops/application.yaml")[0]["spec"]["syncPolicy"]["automated"]["prune"],
        false
    );
    let flux = docs("gitops/flux.yaml");
    assert_eq!(flux[1]["kind"], "Kustomization");
    assert_eq!(flux[1]["spec"]["prune"], false);
    assert_eq!(flux[1]["spec"]["path"], "./deploy/gitops/hosts");
    for f in std::fs::read_dir(deploy.join("gitops/hosts")).unwrap() {
        let path = f.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        nemoclaw::spec::load(&path.display().to_string(), &text)
            .unwrap_or_else(|d| panic!("{} is invalid: {d:?}", path.display()));
    }
    let unit = std::fs::read_to_string(deploy.join("nemoclaw-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/nemoclaw agent "),
        "{unit}"
    );
}
