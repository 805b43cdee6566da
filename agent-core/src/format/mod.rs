//! Text formats shared by outputs and the CLI.
pub mod console;
pub mod parse;
