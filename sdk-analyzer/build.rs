//! The bindings are generated from `../wit` by a macro, which cargo does not know reads it:
//! rebuild when the contract changes, or plugins would be built against a stale one.
fn main() {
    println!("cargo:rerun-if-changed=../wit");
}
