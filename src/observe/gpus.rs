//! NVIDIA GPUs on the host, by their device nodes: `/dev/nvidia<N>` exists for each GPU the
//! driver has bound (`/dev/nvidiactl`, `/dev/nvidia-uvm` and friends are not GPUs).

use std::path::Path;

use crate::model::Observation;

/// The `nvidia<N>` device nodes under `dev`, sorted. A missing or unreadable directory is
/// unknown, never "no GPU".
#[must_use]
pub fn nvidia(dev: &Path) -> Observation<Vec<String>> {
    let entries = match std::fs::read_dir(dev) {
        Ok(e) => e,
        Err(e) => {
            return Observation::Unknown {
                reason: format!("{}: {e}", dev.display()),
            };
        }
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix("nvidia")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|n| dev.join(n).display().to_string())
        .collect();
    out.sort();
    Observation::Known { value: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numbered_nodes_are_gpus() {
        let d = tempfile::tempdir().unwrap();
        for n in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"] {
            std::fs::write(d.path().join(n), "").unwrap();
        }
        let Observation::Known { value } = nvidia(d.path()) else {
            panic!()
        };
        assert_eq!(value.len(), 2);
        assert!(matches!(
            nvidia(&d.path().join("missing")),
            Observation::Unknown { .. }
        ));
    }
}
