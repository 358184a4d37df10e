//! `sessionfs demo`: placeholder, filled in below.

/// Run the demo.
pub fn run() -> Result<(), String> {
    Err("demo not yet built".into())
}
