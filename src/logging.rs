//! Where log lines go: stderr, through a buffer flushed every 100 ms, at
//! once for warnings and errors, and at exit.
//!
//! Writing each access-log line to stderr is one `write(2)` per request; a
//! background writer thread (tracing-appender) trades that for a thread
//! wake-up per line, which on a busy core costs as much in context switches.
//! Buffering like nginx's `access_log ... buffer=` costs a memory copy per
//! line and one system call per 64 KiB or 100 ms.

use std::io::{self, BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

type Shared = Arc<Mutex<BufWriter<Stderr>>>;

fn lock(shared: &Mutex<BufWriter<Stderr>>) -> MutexGuard<'_, BufWriter<Stderr>> {
    // A panic while holding the lock leaves bytes in a buffer: still usable.
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A buffered stderr for `tracing_subscriber`.
#[derive(Clone)]
pub struct BufferedStderr(Shared);

/// Flushes the buffer when dropped (at exit).
pub struct FlushOnDrop(Shared);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let _ = lock(&self.0).flush();
    }
}

impl BufferedStderr {
    /// A 64 KiB buffer in front of stderr, and the guard that flushes it at exit.
    pub fn new() -> (Self, FlushOnDrop) {
        let shared = Arc::new(Mutex::new(BufWriter::with_capacity(64 * 1024, io::stderr())));
        (Self(Arc::clone(&shared)), FlushOnDrop(shared))
    }

    /// Flushes every `every` until the runtime stops.
    pub fn spawn_flusher(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let shared = Arc::clone(&self.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = lock(&shared).flush();
            }
        })
    }
}

/// One log line being written; flushes on drop when it is a warning or an error.
pub struct Line<'a> {
    shared: &'a Mutex<BufWriter<Stderr>>,
    flush: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(self.shared).write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        lock(self.shared).write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(self.shared).flush()
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.flush {
            let _ = lock(self.shared).flush();
        }
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { shared: &self.0, flush: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        // Problems are seen at once; request lines may wait up to 100 ms.
        Line { shared: &self.0, flush: *meta.level() <= Level::WARN }
    }
}
