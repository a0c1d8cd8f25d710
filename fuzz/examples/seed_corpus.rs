//! Writes the deterministic seeds of every target into a cargo-fuzz corpus:
//! `cargo run --example seed_corpus [DIR]` (default `corpus`, relative to the
//! current directory; run it from fuzz/). Existing files are kept.

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    for (name, _) in arca_fuzz::TARGETS {
        let d = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&d)?;
        for (i, s) in arca_fuzz::seeds(name).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i:02}")), s)?;
        }
        println!("{}: {} seeds", d.display(), arca_fuzz::seeds(name).len());
    }
    Ok(())
}
