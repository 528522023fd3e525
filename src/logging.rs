//! Log output: `tracing` events to stderr as text or JSON, each line written while a request is
//! being handled carrying that request's id (`request_id=…` at the end of a text line, a
//! `"request_id"` field first in a JSON object). The id comes from a task-local set by the timing
//! wrapper, not from a span per request, which cost about a tenth of a core at 90,000 requests/s.

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber: `FLIGHTDECK_LOG` filters (default `info`), stderr, ANSI colours
/// only on a terminal.
pub fn init(format: LogFormat) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    init_with(format, std::io::stderr, ansi);
}

/// [`init`] with another writer (benchmarks log to a sink).
pub fn init_with<W>(format: LogFormat, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLIGHTDECK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder
            .event_format(WithRequestId {
                inner: format::Format::default(),
                json: false,
            })
            .init(),
        LogFormat::Json => builder
            .fmt_fields(format::JsonFields::new())
            .event_format(WithRequestId {
                inner: format::Format::default().json(),
                json: true,
            })
            .init(),
    }
}

/// Formats with `inner`, adding the current request's id when there is one.
struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        crate::http::timing::with_request_id(|id| {
            let Some(id) = id else {
                return self.inner.format_event(ctx, writer.by_ref(), event);
            };
            let mut line = String::new();
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            let body = line.strip_suffix('\n').unwrap_or(&line);
            match body.strip_prefix('{') {
                // A JSON object: the id goes in first, as a JSON string.
                Some(rest) if self.json => {
                    writer.write_str("{\"request_id\":")?;
                    writer.write_str(&json_string(id))?;
                    if rest != "}" {
                        writer.write_char(',')?;
                    }
                    writer.write_str(rest)?;
                }
                _ => {
                    writer.write_str(body)?;
                    writer.write_str(" request_id=")?;
                    writer.write_str(id)?;
                }
            }
            writer.write_char('\n')
        })
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}
