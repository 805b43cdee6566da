//! Text formats shared by outputs and the CLI.
pub mod console;
pub mod human;
pub mod json;
pub mod line_protocol;
pub mod parse;
pub mod prometheus;
