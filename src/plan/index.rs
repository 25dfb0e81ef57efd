//! Lookups the planners make per sandbox, per port and per pid, built once per plan.
//!
//! Every planner question of the form "the listeners on port P", "sandbox S's pid file for P",
//! "the CLI's row for S" used to be a scan of the whole observation, once per sandbox or group:
//! quadratic in host size. Built here in one pass each, they are hash lookups. Each list keeps the
//! observation's order, so the first match and every iteration are what the scans found — plans
//! stay byte-identical (`scale::generated_hosts_plan_exactly_as_before`).

use std::collections::{HashMap, HashSet};

use crate::model::{
    Desired, ForwardPidFile, ForwardRow, Listener, Observed, RegistryEntry, SandboxContainer,
    SandboxDesired, SandboxRow,
};

/// The indexes; borrowed from the desired state and the observation they were built from.
#[derive(Default)]
pub struct Index<'a> {
    /// Declared sandbox names.
    pub declared: HashSet<&'a str>,
    /// The first declared sandbox pinning each port (`dashboardPort`).
    pub needing: HashMap<u16, &'a SandboxDesired>,
    /// Known listeners by port.
    pub listeners: HashMap<u16, Vec<&'a Listener>>,
    /// Forward pid files by (sandbox, port).
    pub forward_files: HashMap<(&'a str, u16), Vec<&'a ForwardPidFile>>,
    /// Forward pid files by the sandbox id they hold.
    pub forward_files_by_id: HashMap<&'a str, Vec<&'a ForwardPidFile>>,
    /// `openshell forward list` rows by (sandbox, port) and by pid.
    pub forward_rows: HashMap<(&'a str, u16), Vec<&'a ForwardRow>>,
    /// See [`Self::forward_rows`].
    pub forward_rows_by_pid: HashMap<u32, Vec<&'a ForwardRow>>,
    /// `openshell sandbox list` rows by name (the first) and by id.
    pub rows: HashMap<&'a str, &'a SandboxRow>,
    /// See [`Self::rows`].
    pub rows_by_id: HashMap<&'a str, Vec<&'a SandboxRow>>,
    /// Sandbox containers by the sandbox they carry the label of.
    pub containers: HashMap<&'a str, Vec<&'a SandboxContainer>>,
    /// Registry entries of undeclared sandboxes, by recorded dashboard port.
    pub undeclared_by_port: HashMap<u16, Vec<&'a RegistryEntry>>,
    /// Whether `openshell sandbox list` is known, and whether each of its rows carries an id.
    pub rows_known: bool,
    /// See [`Self::rows_known`].
    pub rows_all_have_ids: bool,
}

impl<'a> Index<'a> {
    /// Builds every index in one pass over each part of the observation.
    #[must_use]
    pub fn new(desired: &'a Desired, observed: &'a Observed) -> Self {
        let mut ix = Self::default();
        for sb in &desired.sandboxes {
            ix.declared.insert(sb.name.as_str());
            if let Some(p) = sb.dashboard_port {
                ix.needing.entry(p).or_insert(sb);
            }
        }
        for l in observed.listeners.known().into_iter().flatten() {
            ix.listeners.entry(l.port).or_default().push(l);
        }
        for f in observed.forwards.known().into_iter().flatten() {
            ix.forward_files
                .entry((f.sandbox.as_str(), f.port))
                .or_default()
                .push(f);
            if let Some(c) = f.content.known() {
                ix.forward_files_by_id
                    .entry(c.sandbox_id.as_str())
                    .or_default()
                    .push(f);
            }
        }
        if let Some(cli) = &observed.openshell {
            for r in cli.forwards.known().into_iter().flatten() {
                ix.forward_rows
                    .entry((r.sandbox.as_str(), r.port))
                    .or_default()
                    .push(r);
                if let Some(pid) = r.pid {
                    ix.forward_rows_by_pid.entry(pid).or_default().push(r);
                }
            }
            if let Some(rows) = cli.sandboxes.known() {
                ix.rows_known = true;
                ix.rows_all_have_ids = rows.iter().all(|r| r.id.is_some());
            }
            for r in cli.sandboxes.known().into_iter().flatten() {
                ix.rows.entry(r.name.as_str()).or_insert(r);
                if let Some(id) = &r.id {
                    ix.rows_by_id.entry(id.as_str()).or_default().push(r);
                }
            }
        }
        if let Some(crate::model::Observation::Known { value }) = &observed.docker
            && let Some(cs) = &value.sandbox_containers
        {
            for c in cs {
                ix.containers.entry(c.sandbox.as_str()).or_default().push(c);
            }
        }
        for e in observed
            .registry
            .known()
            .into_iter()
            .flat_map(|r| r.sandboxes.values())
        {
            if let Some(p) = e.dashboard_port
                && !ix.declared.contains(e.name.as_str())
            {
                ix.undeclared_by_port.entry(p).or_default().push(e);
            }
        }
        ix
    }

    /// The known listeners on `port`, in observation order.
    #[must_use]
    pub fn listeners_on(&self, port: u16) -> &[&'a Listener] {
        self.listeners.get(&port).map_or(&[], Vec::as_slice)
    }

    /// Whether `name` is declared.
    #[must_use]
    pub fn declares(&self, name: &str) -> bool {
        self.declared.contains(name)
    }
}
