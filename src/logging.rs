//! Where log lines go: stderr, through a buffer flushed every 100 ms, at
//! once for warnings and errors, and at exit.
//!
//! Writing each access-log line to stderr is one `write(2)` per request; a
//! background writer thread (tracing-appender) trades that for a thread
//! wake-up per line, which on a busy core costs as much in context switches.
//! Buffering like nginx's `access_log ... buffer=` costs a memory copy per
//! line and one system call per 64 KiB or 100 ms.

use std::fmt;
use std::io::{self, BufWriter, Stderr, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, FormatEvent, FormatFields, Full, Json, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Whether log lines are JSON (`server.log_format`); a reload may change it.
static JSON: AtomicBool = AtomicBool::new(false);

/// Switches every log line, access lines included, to JSON or text.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Whether log lines are written as JSON now.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The binary's event format: text or JSON, whichever `set_json` last chose.
pub struct SwitchableFormat {
    text: Format<Full, Rfc3339Micros>,
    json: Format<Json, Rfc3339Micros>,
}

impl SwitchableFormat {
    /// Text lines coloured when `ansi`; JSON lines flat, one object each.
    pub fn new(ansi: bool) -> Self {
        Self {
            text: Format::default().with_timer(Rfc3339Micros).with_ansi(ansi),
            json: Format::default().json().flatten_event(true).with_current_span(false).with_timer(Rfc3339Micros),
        }
    }
}

impl<S, N> FormatEvent<S, N> for SwitchableFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if is_json() {
            self.json.format_event(ctx, writer, event)
        } else {
            self.text.format_event(ctx, writer, event)
        }
    }
}

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

    /// Appends one whole line (written out by the next flush).
    pub fn write_line(&self, line: &[u8]) {
        let _ = lock(&self.0).write_all(line);
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

/// Timestamps as RFC 3339 with microseconds (`2026-11-27T23:36:07.522376Z`),
/// the text tracing-subscriber's default timer writes, at a tenth of its
/// cost: the default pads each date part through `core::fmt` (callgrind).
pub struct Rfc3339Micros;

impl FormatTime for Rfc3339Micros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(w, "{}", humantime::format_rfc3339_micros(SystemTime::now()))
    }
}

/// Fields as `name=value`, values as `{:?}` would print them (strings
/// quoted and escaped), the event's message bare. Typed values skip
/// `core::fmt`: the access line is mostly strings and numbers, and
/// formatting them generically was most of its cost.
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor { writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Writes the separator and `name=`, or nothing before the message.
    fn start(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }

    fn record(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.start(field).and_then(|()| value(&mut self.writer));
        }
    }
}

/// True when `{:?}` prints `s` verbatim between quotes.
pub fn needs_no_escape(s: &str) -> bool {
    // Without early exit (`&`, not `all`/`&&`) the compiler checks 16 or 32
    // bytes per step: every field of every access line passes here.
    s.bytes().fold(true, |plain, b| plain & (b' '..=b'~').contains(&b) & (b != b'"') & (b != b'\\'))
}

/// `s` as `{:?}` prints it: verbatim between quotes when nothing needs escaping.
fn write_quoted(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    if needs_no_escape(s) {
        w.write_char('"')?;
        w.write_str(s)?;
        w.write_char('"')
    } else {
        write!(w, "{s:?}")
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record(field, |w| w.write_str(value));
        } else {
            self.record(field, |w| write_quoted(w, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, |w| write!(w, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_means_debug_prints_it_verbatim() {
        let mut samples: Vec<String> = (0u32..0x250).filter_map(char::from_u32).map(|c| format!("ab{c}cd")).collect();
        samples.extend(
            ["", "GET", "/reports/a b", "x\"y", "tab\there", "é", &"long-plain-text".repeat(9)].map(String::from),
        );
        for s in samples {
            let verbatim = format!("{s:?}") == format!("\"{s}\"");
            // Conservative beyond ASCII: `{:?}` then prints it (verbatim or not).
            if s.is_ascii() {
                assert_eq!(needs_no_escape(&s), verbatim, "{s:?}");
            } else {
                assert!(!needs_no_escape(&s), "{s:?}");
            }
        }
    }

    /// Formats one event with `PlainFields` the way the text log does.
    fn line(event: impl FnOnce()) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(PlainFields)
            .with_timer(Rfc3339Micros)
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::with_default(subscriber, event);
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fields_print_as_debug_would() {
        let text = line(|| {
            let evil = "a\"b\\c\nd";
            tracing::info!(
                plain = "bench",
                evil,
                unicode = "café",
                n = 42u64,
                neg = -7i64,
                ok = true,
                shown = %"x y",
                absent = None::<u64>,
                "the message {}",
                1
            );
        });
        let (time, rest) = text.split_once(' ').unwrap();
        // 2026-11-27T23:36:07.522376Z
        assert_eq!(time.len(), 27, "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
        let expected = format!(
            " INFO mmgate::logging::tests: the message 1 plain=\"bench\" evil={:?} unicode={:?} n=42 neg=-7 ok=true shown=x y\n",
            "a\"b\\c\nd", "café"
        );
        assert_eq!(rest, expected);
    }
}
