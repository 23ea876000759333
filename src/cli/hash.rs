//! `countersign hash`: what an approver runs to check a payload's hash by hand.

use std::io::{Read, Write};
use std::path::PathBuf;

use super::{exit, fail};
use crate::canonical;

#[derive(clap::Args)]
#[command(after_help = "Reads the JSON from FILE, or from standard input when FILE is absent or `-`.\n\
Prints the hex SHA-256 of its canonical form: the `payload_sha256` an approval is pinned to.\n\
Numbers RFC 8785 cannot carry exactly (1e400, 9007199254740993) are refused, exit 2.\n\n\
Example: countersign hash --both payload.json")]
pub struct Args {
    /// The JSON file (`-` or nothing: standard input).
    file: Option<PathBuf>,
    /// Print the canonical form instead of the hash, exactly, with no trailing newline.
    #[arg(long, conflicts_with = "both")]
    canonical: bool,
    /// Print the canonical form on one line and the hash on the next.
    #[arg(long)]
    both: bool,
}

pub fn run(args: Args) -> u8 {
    let mut input = Vec::new();
    let source = match args.file.as_deref() {
        None => "standard input".to_string(),
        Some(p) if p.as_os_str() == "-" => "standard input".to_string(),
        Some(p) => p.display().to_string(),
    };
    let read = match args.file.as_deref() {
        Some(p) if p.as_os_str() != "-" => std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut input)),
        _ => std::io::stdin().read_to_end(&mut input),
    };
    if let Err(e) = read {
        return fail(exit::FAILURE, format!("cannot read {source}: {e}"));
    }
    let value = match canonical::parse(&input) {
        Ok(v) => v,
        Err(e) => return fail(exit::USAGE, format!("{source}: {e}")),
    };
    let pinned = match canonical::pin(&value) {
        Ok(p) => p,
        Err(e) => return fail(exit::USAGE, format!("{source}: {e}")),
    };
    let mut out = std::io::stdout().lock();
    let written = if args.canonical {
        out.write_all(pinned.canonical.as_bytes())
    } else if args.both {
        writeln!(out, "{}\n{}", pinned.canonical, pinned.sha256)
    } else {
        writeln!(out, "{}", pinned.sha256)
    };
    match written.and_then(|_| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => fail(exit::FAILURE, e),
    }
}
