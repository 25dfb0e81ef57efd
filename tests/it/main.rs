//! One integration-test binary (one link instead of one per file). Modules by tier:
//!
//! - `planner`, `props`: the pure planner against observations built in code.
//! - `spec_files`: the schema, `examples/` and `examples/invalid/`.
//! - `cli`: the binary's contract (exit codes, usage errors, offline planning).
//! - `host`: real processes, real signals, the real socket table.

mod agent;
mod cli;
mod cluster;
mod docker;
mod driver;
mod fuzz_seeds;
mod generate;
mod gitops;
mod host;
mod openclaw;
mod openshell;
mod parallel;
mod planner;
mod planner_gateway;
mod planner_secrets;
mod props;
mod sandboxes;
mod scale;
mod spec_files;
mod support;
