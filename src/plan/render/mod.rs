//! Renders a [`Plan`](super::Plan) for people (`human`), programs (`json`) and pull requests
//! (`markdown`).

mod graph;
mod human;
mod json;
mod markdown;

pub use graph::{render_dot, render_mermaid};
pub use human::{Style, render_human, summary, symbol};
pub use json::{render_json, to_json};
pub use markdown::render_markdown;
