//! Audit exports outside the server's routes: their formats (one list for the server,
//! the command line and the console), and an export written to a file, by the command
//! line and the console alike.
//!
//! The file appears only once it is whole: it is written beside its name as
//! `<name>.partial`, synced to disk, and then put in place (and the directory synced, so
//! that survives a power cut too). An export that fails part-way, or is dropped
//! unfinished, removes its `.partial` and leaves nothing that could be mistaken for a
//! complete log.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

/// The formats an export is written in (`GET /v1/audit/export?format=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One event per line exactly as stored: the whole chain, which verifies offline.
    Jsonl,
    /// For spreadsheets: RFC 4180, formulas neutralised.
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }

    /// The format a name (`jsonl`, `csv`) stands for.
    pub fn parse(name: &str) -> Option<Format> {
        [Format::Jsonl, Format::Csv].into_iter().find(|f| f.as_str() == name)
    }
}

/// Whether an export may take the place of a file already at its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it, as `-o FILE` does on the command line.
    Replace,
    /// Never: the console keeps whatever is there, even if it appeared while the export
    /// ran, and a `.partial` already there is someone else's, not to be truncated.
    Keep,
}

/// A file being written under a temporary name.
pub struct PartialFile {
    out: Option<BufWriter<File>>,
    partial: PathBuf,
    dest: PathBuf,
    existing: Existing,
    bytes: u64,
    /// In place under its name: the partial name is no longer this export's.
    published: bool,
}

impl PartialFile {
    /// Starts writing `dest`, as `<dest>.partial`.
    pub fn create(dest: &Path, existing: Existing) -> Result<PartialFile, String> {
        let mut partial = dest.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let mut open = OpenOptions::new();
        open.write(true);
        match existing {
            Existing::Replace => open.create(true).truncate(true),
            Existing::Keep => open.create_new(true),
        };
        let f = open.open(&partial).map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => {
                format!(
                    "{} already exists (another export to this name, or one cut off): remove it, or choose another name",
                    partial.display()
                )
            }
            _ => format!("cannot write {}: {e}", partial.display()),
        })?;
        Ok(PartialFile {
            out: Some(BufWriter::with_capacity(256 * 1024, f)),
            partial,
            dest: dest.to_path_buf(),
            existing,
            bytes: 0,
            published: false,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let out = self.out.as_mut().ok_or("the export file is already closed")?;
        self.bytes += bytes.len() as u64;
        out.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", self.partial.display()))
    }

    /// Syncs the file and puts it in place; returns how many bytes it holds. On failure
    /// the partial file is removed (by `Drop`).
    pub fn finish(mut self) -> Result<u64, String> {
        let out = self.out.take().ok_or("the export file is already closed")?;
        let file = out.into_inner().map_err(|e| format!("cannot write {}: {}", self.partial.display(), e.error()))?;
        file.sync_all().map_err(|e| format!("cannot write {}: {e}", self.partial.display()))?;
        drop(file);
        self.publish()?;
        self.published = true;
        // Durable once the directory that holds the new name is synced.
        let dir = self.dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(self.bytes)
    }

    /// Gives the synced partial file its name: a rename (replacing), or a new link that
    /// fails if the name is taken (keeping), then the partial name removed.
    fn publish(&self) -> Result<(), String> {
        let (partial, dest) = (&self.partial, &self.dest);
        let moved = |e: std::io::Error| format!("cannot move {} to {}: {e}", partial.display(), dest.display());
        match self.existing {
            Existing::Replace => std::fs::rename(partial, dest).map_err(moved),
            Existing::Keep => match std::fs::hard_link(partial, dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(partial);
                    Ok(())
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    Err(format!("{} appeared while the export ran; it was kept and the export was not written", dest.display()))
                }
                // A file system without links: a rename, after one last look.
                Err(_) if !dest.exists() => std::fs::rename(partial, dest).map_err(moved),
                Err(e) => Err(moved(e)),
            },
        }
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        // Whatever ends an export before it is in place (an error, a cancelled task, a
        // console quitting) leaves no partial file behind.
        drop(self.out.take());
        if !self.published {
            let _ = std::fs::remove_file(&self.partial);
        }
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

/// Streams an export response's body into `dest`, never replacing a file there. The
/// file is written and synced on a thread of its own, so the task that downloads (on the
/// console's one thread, say) never waits on the disk. A body cut off before its end (the
/// server ends a failed export by breaking the connection) removes the partial file.
pub async fn download(resp: reqwest::Response, dest: &Path) -> Result<Downloaded, String> {
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let head_seq = header("x-countersign-head-seq").and_then(|v| v.parse().ok());
    let complete = header("x-countersign-export").as_deref() == Some("complete");
    let file = PartialFile::create(dest, Existing::Keep)?;
    // Parts to write, then `None` to finish. The writer answers once it is done — having
    // put the file in place, or removed the partial one — or, if the download gives up
    // first, goes without a word (dropping its answer), having removed it too.
    let (parts, mut to_write) = tokio::sync::mpsc::channel::<Option<bytes::Bytes>>(16);
    let (answer, written) = tokio::sync::oneshot::channel::<Result<u64, String>>();
    std::thread::Builder::new()
        .name("export-writer".into())
        .spawn(move || {
            let mut file = Some(file);
            let result = loop {
                match (to_write.blocking_recv(), file.as_mut()) {
                    (Some(Some(part)), Some(f)) => {
                        if let Err(e) = f.write(&part) {
                            break Some(Err(e));
                        }
                    }
                    (Some(None), _) => break file.take().map(PartialFile::finish),
                    _ => break None,
                }
            };
            drop(file);
            if let Some(result) = result {
                let _ = answer.send(result);
            }
        })
        .map_err(|e| format!("cannot start writing the export: {e}"))?;
    let mut body = resp.bytes_stream();
    let streamed: Result<(), String> = async {
        while let Some(part) = next_part(&mut body).await? {
            // The writer stopped (a write failed): its answer says why.
            if parts.send(Some(part)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = streamed {
        drop(parts);
        // Wait for the writer to remove what it wrote before saying the export failed.
        let _ = written.await;
        return Err(e);
    }
    let _ = parts.send(None).await;
    let bytes = written.await.map_err(|_| "the export's writer stopped".to_string())??;
    Ok(Downloaded { path: dest.to_path_buf(), bytes, head_seq, complete })
}

/// The next part of a body, `None` at its end; an error when it is cut off or stalls
/// for [`STALLED_AFTER`].
async fn next_part(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
) -> Result<Option<bytes::Bytes>, String> {
    match tokio::time::timeout(STALLED_AFTER, body.next()).await {
        Ok(Some(Ok(part))) => Ok(Some(part)),
        Ok(Some(Err(e))) => Err(format!("the export was cut off before its end: {}", e.without_url())),
        Ok(None) => Ok(None),
        Err(_) => Err(format!("the server sent nothing for {} s; the export was abandoned", STALLED_AFTER.as_secs())),
    }
}

/// Hands each part of a response's body to `write`, in order, until its end. Fails when
/// the body is cut off, stalls for [`STALLED_AFTER`], or `write` fails.
pub async fn copy_body(resp: reqwest::Response, mut write: impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
    let mut body = resp.bytes_stream();
    while let Some(part) = next_part(&mut body).await? {
        write(&part)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("audit.jsonl");
        let partial = dir.path().join("audit.jsonl.partial");

        let mut f = PartialFile::create(&dest, Existing::Keep).unwrap();
        f.write(b"{\"seq\":1}\n").unwrap();
        assert!(partial.exists() && !dest.exists(), "written beside its name until finished");
        assert_eq!(f.finish().unwrap(), 10);
        assert_eq!(std::fs::read(&dest).unwrap(), b"{\"seq\":1}\n");
        assert!(!partial.exists());

        // Dropped unfinished (an error, a task cancelled): nothing is left.
        let mut f = PartialFile::create(&dir.path().join("other.jsonl"), Existing::Keep).unwrap();
        f.write(b"half").unwrap();
        drop(f);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["audit.jsonl"], "only the finished export");
    }

    #[test]
    fn keeping_never_replaces_a_file_that_appears_meanwhile_nor_truncates_a_partial() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("evidence.jsonl");
        let mut f = PartialFile::create(&dest, Existing::Keep).unwrap();
        f.write(b"the export").unwrap();
        // Someone saves a file at that name while the export runs.
        std::fs::write(&dest, "theirs").unwrap();
        let e = f.finish().unwrap_err();
        assert!(e.contains("appeared while the export ran"), "{e}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "theirs");
        assert!(!dir.path().join("evidence.jsonl.partial").exists());

        // A `.partial` that is not this export's is not truncated.
        std::fs::write(dir.path().join("busy.jsonl.partial"), "another export").unwrap();
        let e = PartialFile::create(&dir.path().join("busy.jsonl"), Existing::Keep).err().unwrap();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read_to_string(dir.path().join("busy.jsonl.partial")).unwrap(), "another export");

        // The command line's `-o` replaces, as output options do.
        let mut f = PartialFile::create(&dest, Existing::Replace).unwrap();
        f.write(b"new").unwrap();
        f.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_named_in_the_error() {
        let e = PartialFile::create(Path::new("/nonexistent-dir/audit.jsonl"), Existing::Keep).err().unwrap();
        assert!(e.contains("/nonexistent-dir/audit.jsonl.partial"), "{e}");
    }
}
