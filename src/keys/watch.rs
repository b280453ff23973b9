//! Re-reads file keys when their directory changes, and every `poll` as a
//! fallback for filesystems whose events do not arrive (network mounts).
//!
//! Directories are watched, not files: Kubernetes swaps a secret by renaming
//! a `..data` symlink in the mount directory, and editors and Vault agents
//! replace files by renaming over them; neither shows up as a write to the
//! file's old inode. Any event in a watched directory re-reads every file key,
//! which costs a few small reads.
//!
//! The watcher knows nothing of the running proxy: it asks a callback what to
//! watch (so it follows reloads) and calls another to re-read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// What to watch: the current config's key files and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// Re-read at least this often.
    pub poll: Duration,
    /// Also re-read as soon as a key file's directory changes.
    pub events: bool,
    /// The key files.
    pub files: BTreeSet<PathBuf>,
}

impl Watched {
    /// Directories holding the key files.
    fn directories(&self) -> BTreeSet<PathBuf> {
        self.files
            .iter()
            .map(|path| match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect()
    }
}

/// Whether a change to `path` can change a key: the key file itself, or a
/// Kubernetes `..data`-style entry (the atomic writer's symlink and directories).
/// Other files in the same directory (logs, say) must not cause re-reads.
fn concerns_a_key(path: &Path, keys: &BTreeSet<PathBuf>) -> bool {
    // Compared by file name: inotify reports `dir/name` as the watch was
    // given, which may not be spelled like the configured path.
    let Some(name) = path.file_name() else { return true };
    name.as_encoded_bytes().starts_with(b"..") || keys.iter().any(|k| k.file_name() == Some(name))
}

fn start_watcher(watched: &Watched, events: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let keys = watched.files.clone();
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading a key is itself an event (open, access, close): reacting to
        // those would re-read for ever. An error may mean missed events:
        // re-read to be safe.
        let relevant = event.map_or(true, |e| {
            !matches!(e.kind, EventKind::Access(_)) && e.paths.iter().any(|p| concerns_a_key(p, &keys))
        });
        if relevant {
            let _ = events.send(());
        }
    }) {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch key files; re-reading them periodically instead");
            return None;
        }
    };
    for dir in watched.directories() {
        if let Err(e) = watcher.watch(Path::new(&dir), RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch this key directory; re-reading it periodically");
        }
    }
    Some(watcher)
}

/// Watches what `current` says (asked again after every re-read, so reloads
/// are followed) and calls `refresh` with the reason, on the blocking pool
/// (file reads block; a stuck network mount must not stall a worker thread),
/// until the task is aborted.
pub fn watch(
    current: impl Fn() -> Watched + Send + 'static,
    refresh: impl Fn(&'static str) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let refresh = Arc::new(refresh);
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watched = current();
        let mut watcher = if watched.events { start_watcher(&watched, tx.clone()) } else { None };
        loop {
            let why = tokio::select! {
                Some(()) = rx.recv() => {
                    // Writers touch a file several times (truncate, write,
                    // rename): let them finish, then read once.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while rx.try_recv().is_ok() {}
                    "key file changed"
                }
                () = tokio::time::sleep(watched.poll) => "periodic re-read",
            };
            let refresh = Arc::clone(&refresh);
            let _ = tokio::task::spawn_blocking(move || refresh(why)).await;
            let now = current();
            if now != watched {
                drop(watcher.take());
                watcher = if now.events { start_watcher(&now, tx.clone()) } else { None };
                watched = now;
            }
        }
    })
}
