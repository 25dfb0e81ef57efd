//! Fleets: a host's desired state as a `NemoClawHost` in a cluster, and what its agent reports
//! back. The resource's definition is `spec::crd`; this layer turns a plan into the resource's
//! `status` (pure, so every status is reviewable from a plan) and names the agent's field manager.

pub mod metrics;
pub mod status;

/// The field manager of every status the agent writes (server-side apply).
pub const FIELD_MANAGER: &str = "nemoclaw-agent";
