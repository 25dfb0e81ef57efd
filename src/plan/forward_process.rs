//! The real OpenShell forward, recognised by its command line.
//!
//! `openshell forward start --background P NAME` leaves an `ssh` process (OpenShell
//! `crates/openshell-cli/src/ssh.rs` `sandbox_forward`, v0.0.44 and v0.0.72):
//! `ssh -o ProxyCommand=<openshell> ssh-proxy --gateway URL --sandbox-id ID --token T
//! --gateway-name GW -o … [-f] -N -o ExitOnForwardFailure=yes -L [BIND:]P:127.0.0.1:P sandbox`
//! (`build_proxy_command`, `crates/openshell-core/src/forward.rs`). OpenShell itself judges a
//! pid file's forward alive only when that pid's command line is such an ssh for the file's port
//! and sandbox id (`pid_matches_openshell_ssh_forward`); the engine uses the same evidence, read
//! from the observation, in plan and in apply.

/// What an OpenShell forward's command line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardProcess {
    /// `--sandbox-id` inside the `ProxyCommand`.
    pub sandbox_id: Option<String>,
    /// `--gateway-name` inside the `ProxyCommand`.
    pub gateway: Option<String>,
    /// Local ports of its `-L P:127.0.0.1:P` forwards.
    pub ports: Vec<u16>,
}

/// Whether `cmdline` is an OpenShell `ssh … ssh-proxy … -N -L …` forward, and of what.
#[must_use]
pub fn forward_process(cmdline: &[String]) -> Option<ForwardProcess> {
    let first = cmdline.first()?;
    if first.rsplit('/').next() != Some("ssh") {
        return None;
    }
    let proxy = cmdline
        .iter()
        .find_map(|a| a.strip_prefix("ProxyCommand="))?;
    let words: Vec<&str> = proxy.split_whitespace().collect();
    if !words.contains(&"ssh-proxy") {
        return None;
    }
    let value = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .map(|v| v.trim_matches('\'').to_owned())
    };
    if !cmdline.iter().any(|a| a == "-N") {
        return None;
    }
    let mut ports = Vec::new();
    let mut args = cmdline.iter();
    while let Some(a) = args.next() {
        let spec = if a == "-L" {
            args.next().map(String::as_str)
        } else {
            a.strip_prefix("-L").filter(|v| !v.is_empty())
        };
        if let Some(port) = spec.and_then(loopback_forward_port) {
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return None;
    }
    Some(ForwardProcess {
        sandbox_id: value("--sandbox-id"),
        gateway: value("--gateway-name"),
        ports,
    })
}

/// `[BIND:]P:127.0.0.1:P` → `P` (OpenShell's `ssh_forward_arg`).
fn loopback_forward_port(spec: &str) -> Option<u16> {
    let parts: Vec<&str> = spec.rsplitn(4, ':').collect();
    // rsplitn yields the host port first: [P, 127.0.0.1, P, BIND?].
    match parts.as_slice() {
        [remote, "127.0.0.1", local, ..] if remote == local => local.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        // The ProxyCommand is one argument, as ssh receives it.
        let (head, rest) = s.split_once("ProxyCommand=").unwrap();
        let (proxy, tail) = rest.split_once(" -o StrictHostKeyChecking").unwrap();
        let mut v: Vec<String> = head.split_whitespace().map(str::to_owned).collect();
        v.push(format!("ProxyCommand={proxy}"));
        v.push("-o".to_owned());
        v.extend(
            format!("StrictHostKeyChecking{tail}")
                .split_whitespace()
                .map(str::to_owned),
        );
        v
    }

    #[test]
    fn the_real_forward_is_recognised() {
        let a = argv(
            "ssh -o ProxyCommand=/usr/local/bin/openshell ssh-proxy --gateway http://127.0.0.1:29510 --sandbox-id f57f --token <redacted> --gateway-name nemoclaw-29510 -o StrictHostKeyChecking=no -o LogLevel=ERROR -N -o ExitOnForwardFailure=yes -L 127.0.0.1:29521:127.0.0.1:29521 sandbox",
        );
        let f = forward_process(&a).unwrap();
        assert_eq!(f.sandbox_id.as_deref(), Some("f57f"));
        assert_eq!(f.gateway.as_deref(), Some("nemoclaw-29510"));
        assert_eq!(f.ports, vec![29521]);
    }

    #[test]
    fn look_alikes_are_not() {
        let plain: Vec<String> = ["ssh", "-N", "-L", "8080:127.0.0.1:8080", "host"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(forward_process(&plain), None, "no ssh-proxy");
        let a = argv(
            "ssh -o ProxyCommand=openshell ssh-proxy --sandbox-id x -o StrictHostKeyChecking=no -N -L 8080:10.0.0.1:8080 sandbox",
        );
        assert_eq!(forward_process(&a), None, "not a loopback forward");
    }
}
