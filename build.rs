//! Links the libraries that Debian's static RocksDB (`librocksdb.a`, chosen
//! by `ROCKSDB_STATIC` in `.cargo/config.toml`) was built against. The
//! shared library names them itself; the archive cannot.
fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_STATIC");
    if std::env::var_os("ROCKSDB_STATIC").is_some() {
        for lib in ["snappy", "lz4", "zstd", "bz2", "z"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
