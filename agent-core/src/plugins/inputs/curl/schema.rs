//! The curl input's schema (see `crate::schema`): the target's `tag`,
//! `url` and `method` identify its series.
use crate::schema::{gauge, text, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "curl",
    tags: &["tag", "url", "method"],
    own_tags: &[],
    fields: &[
        text("host", "Host header or the URL's host."),
        gauge(
            "status",
            Unit::None,
            "HTTP status code, 504 when no response arrived.",
        ),
        text("response", "Response body."),
        text("headers", "Response headers as JSON."),
        text("exception", "Why the request failed."),
        gauge("content_length", Unit::Bytes, "Response body length."),
        gauge("dns_ms", Unit::Milliseconds, "Name lookup time."),
        gauge("connect_ms", Unit::Milliseconds, "TCP connect time."),
        gauge("tls_ms", Unit::Milliseconds, "TLS handshake time."),
        gauge("ttfb_ms", Unit::Milliseconds, "Time to first byte."),
        gauge("total_ms", Unit::Milliseconds, "Whole request time."),
        text(
            "result",
            "success, timeout, connection_failed, tls_error or body_too_large.",
        ),
        gauge("attempts", Unit::None, "Requests made, 1 + retries."),
    ],
    groups: &[],
};
