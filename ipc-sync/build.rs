//! Declares the `loom` cfg, so `#[cfg(loom)]` model-check code passes the unexpected-cfg lint.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
