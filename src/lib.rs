//! nemoclaw: a declarative reconciliation engine for NemoClaw hosts.
//!
//! The pipeline is observe → plan → apply:
//!
//! - [`spec`] reads `nemoclaw.yaml` (the desired state as written), checks it against its JSON
//!   Schema and semantic rules, and resolves it into a [`model::Desired`].
//! - [`observe`] reads the host (listening sockets through netlink or `/proc/net`, processes
//!   through procfs, the sandbox registry, forward pid files) into a [`model::Observed`]. Every
//!   observation is known or unknown-with-a-reason, never guessed.
//! - [`plan`] is a pure function of desired, observed and options: no I/O, clock or randomness.
//!   It returns a [`plan::Plan`] of ordered steps, each with a risk, a reason citing the observed
//!   fact, and the facts it was planned against.
//! - [`apply`] carries out a plan under a host lock, re-checking each step's facts just before
//!   acting, and never doing more than the step says.
//! - [`cli`] is the `nemoclaw` command: argument parsing, output, exit codes.
//!
//! `docs/ARCHITECTURE.md` has the module map and the invariants.

pub mod apply;
pub mod cli;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod observe;
pub mod plan;
pub mod spec;
