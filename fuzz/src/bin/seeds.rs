//! Writes the structured seeds into the corpus folders: `jumpstarter-fuzz-seeds <corpus dir>`.
//! Seeds with random parts (signatures, keys) differ on each run; commit them once.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    for seed in jumpstarter_fuzz::seed::seeds() {
        let folder = dir.join(seed.target.name());
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join(&seed.name), &seed.bytes)?;
    }
    println!("seeds written to {}", dir.display());
    Ok(())
}
