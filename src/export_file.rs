//! An audit export written to a file, by the command line and the console alike.
//!
//! The file appears only once it is whole: it is written beside its name as
//! `<name>.partial`, synced to disk, and renamed into place (then the directory is
//! synced, so the rename survives a power cut too). An export that fails part-way removes
//! its `.partial` and leaves nothing that could be mistaken for a complete log.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

/// A file being written under a temporary name.
pub struct PartialFile {
    out: BufWriter<File>,
    partial: PathBuf,
    dest: PathBuf,
    bytes: u64,
}

impl PartialFile {
    /// Starts writing `dest` (as `<dest>.partial`, replacing a leftover one).
    pub fn create(dest: &Path) -> Result<PartialFile, String> {
        let mut partial = dest.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let f = File::create(&partial).map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        Ok(PartialFile { out: BufWriter::with_capacity(256 * 1024, f), partial, dest: dest.to_path_buf(), bytes: 0 })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", self.partial.display()))
    }

    /// Syncs the file and renames it into place; returns how many bytes it holds.
    pub fn finish(self) -> Result<u64, String> {
        let PartialFile { out, partial, dest, bytes } = self;
        let fail = |e: std::io::Error| {
            let _ = std::fs::remove_file(&partial);
            format!("cannot write {}: {e}", partial.display())
        };
        let file = out.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        drop(file);
        std::fs::rename(&partial, &dest).map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            format!("cannot move {} to {}: {e}", partial.display(), dest.display())
        })?;
        // The rename is durable once the directory that holds it is synced.
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(bytes)
    }

    /// Gives up: removes what was written.
    pub fn abandon(self) {
        let PartialFile { out, partial, .. } = self;
        drop(out);
        let _ = std::fs::remove_file(partial);
    }
}

/// What a finished download wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// The last seq the export covers (`X-Countersign-Head-Seq`).
    pub head_seq: Option<i64>,
    /// Whether it is the whole log (`X-Countersign-Export: complete`), not a filtered part.
    pub complete: bool,
}

/// How long a download waits for the next part of the body before giving up: the server
/// sends pages continuously, so a silence this long means the connection is gone.
const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Streams an export response's body into `dest`. A body cut off before its end (the
/// server ends a failed export by breaking the connection) removes the partial file.
pub async fn download(resp: reqwest::Response, dest: &Path) -> Result<Downloaded, String> {
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let head_seq = header("x-countersign-head-seq").and_then(|v| v.parse().ok());
    let complete = header("x-countersign-export").as_deref() == Some("complete");
    let mut out = PartialFile::create(dest)?;
    if let Err(e) = copy_body(resp, |bytes| out.write(bytes)).await {
        out.abandon();
        return Err(e);
    }
    let bytes = out.finish()?;
    Ok(Downloaded { path: dest.to_path_buf(), bytes, head_seq, complete })
}

/// Hands each part of a response's body to `write`, in order, until its end. Fails when
/// the body is cut off, stalls for [`STALLED_AFTER`], or `write` fails.
pub async fn copy_body(resp: reqwest::Response, mut write: impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
    let mut body = resp.bytes_stream();
    loop {
        match tokio::time::timeout(STALLED_AFTER, body.next()).await {
            Ok(Some(Ok(chunk))) => write(&chunk)?,
            Ok(Some(Err(e))) => return Err(format!("the export was cut off before its end: {}", e.without_url())),
            Ok(None) => return Ok(()),
            Err(_) => return Err(format!("the server sent nothing for {} s; the export was abandoned", STALLED_AFTER.as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("audit.jsonl");
        let partial = dir.path().join("audit.jsonl.partial");

        let mut f = PartialFile::create(&dest).unwrap();
        f.write(b"{\"seq\":1}\n").unwrap();
        assert!(partial.exists() && !dest.exists(), "written beside its name until finished");
        assert_eq!(f.finish().unwrap(), 10);
        assert_eq!(std::fs::read(&dest).unwrap(), b"{\"seq\":1}\n");
        assert!(!partial.exists());

        let mut f = PartialFile::create(&dir.path().join("other.jsonl")).unwrap();
        f.write(b"half").unwrap();
        f.abandon();
        assert!(!dir.path().join("other.jsonl").exists() && !dir.path().join("other.jsonl.partial").exists());
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_named_in_the_error() {
        let e = PartialFile::create(Path::new("/nonexistent-dir/audit.jsonl")).err().unwrap();
        assert!(e.contains("/nonexistent-dir/audit.jsonl.partial"), "{e}");
    }
}
