//! Writes the seed corpus (fuzz/seeds/<target>/) from the daemon's encoders.
//! Usage: seeds [DIR] (default: seeds, relative to the current directory).

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    let n = tierwatch_fuzz::samples::write_seeds(std::path::Path::new(&dir))?;
    println!("{n} seeds written under {dir}");
    Ok(())
}
