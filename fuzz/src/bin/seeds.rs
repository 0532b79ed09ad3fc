//! Writes the structured seeds into the corpus folders: `jumpstarter-fuzz-seeds [fuzz dir]`
//! (`corpus/<target>/`, and `regressions/<target>/` for seeds that are only replayed).
//! Seeds with random parts (signatures, keys) differ on each run; commit them once.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz".into()));
    for seed in jumpstarter_fuzz::seed::seeds() {
        let kind = if seed.replay_only {
            "regressions"
        } else {
            "corpus"
        };
        let folder = dir.join(kind).join(seed.target.name());
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join(&seed.name), &seed.bytes)?;
    }
    println!("seeds written to {}", dir.display());
    Ok(())
}
