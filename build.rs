//! Build steps for msync:
//!
//! 1. Generate the Rust bindings of the librclone C ABI from `ffi/librclone.h`
//!    with bindgen. The bindings load the library at run time (libloading),
//!    so msync links against nothing from rclone and finds `librclone.so`
//!    only when a command needs it.
//! 2. Compile the C test fixture `tests/fixtures/not_librclone.c` into a
//!    shared library with the C compiler the `cc` crate finds, and pass its
//!    path to the tests as `MSYNC_FIXTURE_NOT_LIBRCLONE`.

use std::env;
use std::path::PathBuf;

const HEADER: &str = "ffi/librclone.h";
const FIXTURE: &str = "tests/fixtures/not_librclone.c";

fn main() {
    println!("cargo:rerun-if-changed={HEADER}");
    println!("cargo:rerun-if-changed={FIXTURE}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    generate_bindings(&out_dir);
    build_fixture(&out_dir);
}

fn generate_bindings(out_dir: &std::path::Path) {
    let bindings = bindgen::Builder::default()
        .header(HEADER)
        .allowlist_function("Rclone.*")
        .allowlist_type("RcloneRPCResult")
        .dynamic_library_name("LibrcloneApi")
        .dynamic_link_require_all(true)
        .layout_tests(false)
        .generate()
        .unwrap_or_else(|err| {
            panic!(
                "bindgen could not read {HEADER}: {err}\n\
                 bindgen needs libclang: on Debian run `apt-get install libclang-dev` \
                 (or `make deps`), or point LIBCLANG_PATH at a libclang.so"
            )
        });
    bindings
        .write_to_file(out_dir.join("librclone_bindings.rs"))
        .expect("writing the bindings into OUT_DIR");
}

fn build_fixture(out_dir: &std::path::Path) {
    let output = out_dir.join("libnot_librclone.so");
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-o"])
        .arg(&output)
        .arg(FIXTURE)
        .status()
        .unwrap_or_else(|err| panic!("running the C compiler for {FIXTURE}: {err}"));
    assert!(
        status.success(),
        "the C compiler failed on {FIXTURE}: install gcc (`apt-get install build-essential`)"
    );
    println!(
        "cargo:rustc-env=MSYNC_FIXTURE_NOT_LIBRCLONE={}",
        output.display()
    );
}
