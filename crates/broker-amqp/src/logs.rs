//! [`QuietNotFound`]: keeps lapin's "Channel closed" error out of the logs when RabbitMQ closes a channel with
//! 404 NOT_FOUND.
//!
//! A queue's depth is asked with a passive `queue.declare` on a channel of its own, and RabbitMQ answers a queue
//! that does not exist by closing that channel with 404. [`crate::AmqpTransport`] turns that into "no such queue"
//! (`queue_len` gives `None`, `purge` gives 0), an ordinary answer, but lapin logs every such close at error
//! level, and the coordinator's and the API's depth views ask at every metrics scrape and readiness probe: an error
//! line per missing queue per scrape, forever. Every other lapin event, other closes included, passes unchanged.

use std::fmt::Debug;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// A layer whose only effect is to disable lapin's log event of a channel closed with 404 NOT_FOUND. Add it to
/// a binary's subscriber: `tracing_subscriber::fmt().finish().with(QuietNotFound)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietNotFound;

impl<S: Subscriber> Layer<S> for QuietNotFound {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        !is_not_found_close(event)
    }
}

/// Whether `event` is lapin's log of a channel closed by the server with reply code 404.
fn is_not_found_close(event: &Event<'_>) -> bool {
    if !event.metadata().target().starts_with("lapin") {
        return false;
    }
    struct Method(bool);
    impl Visit for Method {
        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            if field.name() == "method" {
                // lapin prints the `channel.close` it received: `Close { reply_code: 404, reply_text: ... }`.
                let text = format!("{value:?}");
                self.0 = text.starts_with("Close {") && text.contains("reply_code: 404,");
            }
        }
    }
    let mut method = Method(false);
    event.record(&mut method);
    method.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug only, as lapin's own method struct is
    struct Close {
        reply_code: u16,
        reply_text: &'static str,
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn only_lapins_404_channel_close_is_dropped() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish()
            .with(QuietNotFound);
        tracing::subscriber::with_default(subscriber, || {
            let missing = Close {
                reply_code: 404,
                reply_text: "NOT_FOUND - no queue 'celery'",
            };
            let refused = Close {
                reply_code: 406,
                reply_text: "PRECONDITION_FAILED - inequivalent arg 'x-max-priority'",
            };
            tracing::error!(target: "lapin::channel", channel = 7, method = ?missing, "Channel closed");
            tracing::error!(target: "lapin::channel", channel = 8, method = ?refused, "Channel closed");
            tracing::error!(target: "lapin::channels", error = "connection reset", "Connection error");
            tracing::error!(target: "celeriac", method = ?Close { reply_code: 404, reply_text: "ours" }, "kept");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("no queue 'celery'"), "{text}");
        assert!(text.contains("PRECONDITION_FAILED"), "{text}");
        assert!(text.contains("connection reset"), "{text}");
        assert!(text.contains("kept"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
