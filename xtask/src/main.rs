//! Project automation: `cargo xtask ci` and its steps.
fn main() {}
