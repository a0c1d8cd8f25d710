//! Link settings for the `arca` binary.
//!
//! - Links the libraries that Debian's static RocksDB (`librocksdb.a`,
//!   chosen by `ROCKSDB_STATIC` in `.cargo/config.toml`) was built against.
//!   The shared library names them itself; the archive cannot.
//! - Two linker options that only change the executable's layout, and cut
//!   what every command maps in before `main` (README "Memory at start"):
//!   - `-z pack-relative-relocs` stores the relative relocations as a
//!     compact bitmap (DT_RELR) instead of 1.1 MB of `.rela.dyn` that the
//!     loader reads through at every start; only when the build machine's
//!     glibc is 2.36 or later, since an older one cannot load such a binary;
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
        println!("cargo:rustc-link-arg-bins=-Wl,-z,keep-text-section-prefix");
        // A binary with DT_RELR does not start on an older glibc: only
        // where the build machine's glibc has it (a cross build gets none).
        let host = std::env::var("HOST").unwrap_or_default();
        if host == target && glibc_at_least(2, 36) {
            println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        }
    }
}

/// Whether the build machine's glibc is `major.minor` or later
/// (`getconf GNU_LIBC_VERSION` prints "glibc 2.36").
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.split_whitespace().nth(1) else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}
