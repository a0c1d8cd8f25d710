//! Link settings for the `arca` binary.
//!
//! - Links the libraries that Debian's static RocksDB (`librocksdb.a`,
//!   chosen by `ROCKSDB_STATIC` in `.cargo/config.toml`) was built against.
//!   The shared library names them itself; the archive cannot.
//! - Two linker options that only change the executable's layout, and cut
//!   what every command maps in before `main` (README "Memory at start"):
//!   - `-z pack-relative-relocs` stores the relative relocations as a
//!     compact bitmap (DT_RELR, glibc 2.36 or later) instead of 1.1 MB of
//!     `.rela.dyn` that the loader reads through at every start;
//!   - `-z keep-text-section-prefix` keeps the compilers' `.text.startup`
//!     sections together, so the static constructors of RocksDB's several
//!     hundred C++ files run from a few pages instead of faulting in a
//!     64 KiB neighbourhood of RocksDB's code for each.
fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_STATIC");
    if std::env::var_os("ROCKSDB_STATIC").is_some() {
        for lib in ["snappy", "lz4", "zstd", "bz2", "z"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux-gnu") {
        for arg in [
            "-Wl,-z,pack-relative-relocs",
            "-Wl,-z,keep-text-section-prefix",
        ] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
