//! Re-reads file keys when their directory changes, and every `poll` as a
//! fallback for filesystems whose events do not arrive (network mounts).
//!
//! Directories are watched, not files: Kubernetes swaps a secret by renaming
//! a `..data` symlink in the mount directory, and editors and Vault agents
//! replace files by renaming over them; neither shows up as a write to the
//! file's old inode. Any event in a watched directory re-reads every file key,
//! which costs a few small reads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::KeySource;
use crate::state::Gate;

/// The current config's key files.
fn key_files(gate: &Gate) -> BTreeSet<PathBuf> {
    gate.runtime()
        .keys
        .iter()
        .filter_map(|slot| match slot.source() {
            KeySource::File(path) => Some(path.clone()),
            KeySource::Env(_) => None,
        })
        .collect()
}

/// Directories holding the current config's file keys.
fn directories(gate: &Gate) -> BTreeSet<PathBuf> {
    key_files(gate)
        .iter()
        .map(|path| match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect()
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

fn start_watcher(
    gate: &Gate,
    dirs: &BTreeSet<PathBuf>,
    events: mpsc::UnboundedSender<()>,
) -> Option<RecommendedWatcher> {
    let keys = key_files(gate);
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
    for dir in dirs {
        if let Err(e) = watcher.watch(Path::new(dir), RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch this key directory; re-reading it periodically");
        }
    }
    Some(watcher)
}

/// What the watcher follows from the current config: re-read when it changes.
#[derive(PartialEq, Eq)]
struct Watched {
    poll: Duration,
    events: bool,
    dirs: BTreeSet<PathBuf>,
    files: BTreeSet<PathBuf>,
}

impl Watched {
    fn of(gate: &Gate) -> Self {
        let runtime = gate.runtime();
        let server = &runtime.settings.server;
        Self {
            poll: server.key_poll_interval,
            events: server.watch_key_files,
            dirs: directories(gate),
            files: key_files(gate),
        }
    }
}

/// Watches the file keys of `gate`'s current config until the task is
/// aborted, following reloads (key files, `key_poll_interval`,
/// `watch_key_files`); without events, only polls.
pub fn watch(gate: Arc<Gate>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watched = Watched::of(&gate);
        let mut watcher = if watched.events { start_watcher(&gate, &watched.dirs, tx.clone()) } else { None };
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
            let runtime = gate.runtime();
            // File reads block; a stuck network mount must not stall a worker thread.
            let _ = tokio::task::spawn_blocking(move || runtime.keys.refresh_files(why)).await;
            // After a reload the files, the interval or the watching may differ.
            let now = Watched::of(&gate);
            if now != watched {
                drop(watcher.take());
                watcher = if now.events { start_watcher(&gate, &now.dirs, tx.clone()) } else { None };
                watched = now;
            }
        }
    })
}
