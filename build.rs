//! With the `tch` feature, give this crate's own tests, examples, benches and binaries an
//! rpath to the libtorch that torch-sys linked, so they run without LD_LIBRARY_PATH, and
//! pass the folder on to crates that depend on this one (`DEP_BOOMERANG_LIBTORCH_LIB` in
//! their build scripts; see the README).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        if cfg!(target_os = "macos") || cfg!(target_os = "linux") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
        println!("cargo:libtorch_lib={dir}");
    }
}
