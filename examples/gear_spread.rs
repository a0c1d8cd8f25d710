//! How much the number of chunks of the same data varies from repository to
//! repository: each repository has its own secret gear table (format-spec.md
//! §11), and data that repeats the same stretches of bytes (templated JSON)
//! is cut far more often under some tables than others (README "Chunk size").
//!
//!     cargo run --release --example gear_spread -- DIR REPOSITORIES
//!
//! Initialises REPOSITORIES repositories in memory (with a tiny Argon2id cost:
//! only their gear tables are used) and prints, for each, the number of
//! chunks of every file under DIR with the default chunker parameters and
//! with candidate alternatives.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arca::backend::MemoryBackend;
use arca::chunk::Chunker;
use arca::crypto::KdfParams;
use arca::format::config::ChunkerParams as P;
use arca::repository::{InitOptions, Repository};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        bail!("usage: gear_spread DIR REPOSITORIES");
    }
    let repos: u32 = args[1].parse().context("REPOSITORIES")?;
    let mut data = Vec::new();
    let mut stack = vec![PathBuf::from(&args[0])];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                data.push(std::fs::read(e.path())?);
            }
        }
    }
    let variants = [
        ("default 64/256/1024 KiB", P::DEFAULT),
        (
            "min 128 KiB",
            P {
                min: 128 << 10,
                ..P::DEFAULT
            },
        ),
        (
            "normalization 2",
            P {
                normalization: 2,
                ..P::DEFAULT
            },
        ),
    ];
    let opts = InitOptions {
        kdf: KdfParams::CHEAPEST,
        ..InitOptions::default()
    };
    println!("repository\t{}", variants.map(|v| v.0).join("\t"));
    for i in 0..repos {
        let repo = Repository::init(Arc::new(MemoryBackend::new()), b"probe", &opts)?;
        let mut line = format!("{i}");
        for (_, p) in &variants {
            let c = Chunker::new(*p, repo.keys().gear_table())?;
            let n: usize = data.iter().map(|d| c.chunk_lengths(d).len()).sum();
            line += &format!("\t{n}");
        }
        println!("{line}");
    }
    Ok(())
}
