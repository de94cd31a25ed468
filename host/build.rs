//! The host's bindings are generated from `../wit` by a macro, which cargo does not know reads
//! it: rebuild when the contract changes. The package version the host implements is read from
//! the contract itself (`package edgeguard:collector@x.y.z;` in `world.wit`), so it is written
//! in one place.
fn main() {
    println!("cargo:rerun-if-changed=../wit");
    let world = std::fs::read_to_string("../wit/world.wit").expect("../wit/world.wit");
    let version = world
        .lines()
        .find_map(|l| l.trim().strip_prefix("package edgeguard:collector@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .expect("world.wit declares `package edgeguard:collector@x.y.z;`");
    println!("cargo:rustc-env=EDGEGUARD_WIT_VERSION={version}");
}
