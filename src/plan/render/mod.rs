//! Renders a [`Plan`](super::Plan) for people (`human`) and for programs (`json`).

mod human;
mod json;

pub use human::{Style, render_human, symbol};
pub use json::{render_json, to_json};
