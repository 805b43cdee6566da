//! Parsers for what external programs print: InfluxDB line protocol, JSON,
//! a single value, Nagios plugin output and PyAgent's JSON metric shape.
//! Shared by the `exec` and `execd` plugins.
//!
//! Every parser fills metrics from a *template* (usually
//! [`crate::Accumulator::metric`]): its name, timestamp and `info` tags are
//! the defaults a format may override (an influx measurement, a JSON
//! `name_key`, a line's own timestamp).
mod influx;
mod json;
mod nagios;

use crate::metric::{FieldValue, Metric, Str};
use serde::Deserialize;

pub use nagios::parse_nagios;

/// The formats an external program may print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// InfluxDB line protocol, one metric per line.
    #[default]
    Influx,
    /// A JSON object or an array of objects (line-oriented: one object per line).
    Json,
    /// A single number or word.
    Value,
    /// Nagios plugin output; the exit status is the `state`.
    Nagios,
    /// One PyAgent-shaped JSON object per line.
    Pyagent,
}

impl DataFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Influx => "influx",
            DataFormat::Json => "json",
            DataFormat::Value => "value",
            DataFormat::Nagios => "nagios",
            DataFormat::Pyagent => "pyagent",
        }
    }
}

/// How a `json_time_key` value is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonTimeFormat {
    /// Seconds since the epoch (fractions allowed).
    #[default]
    Unix,
    UnixMs,
    UnixUs,
    UnixNs,
    /// `2026-11-26T10:15:23Z`, `2026-11-26T10:15:23.5+08:00`.
    Rfc3339,
}

/// The type of the `value` format's single field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Integer,
    #[default]
    Float,
    String,
    Boolean,
}

/// Parser settings, flattened into each exec/execd plugin's config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ParserConfig {
    pub data_format: DataFormat,
    /// json: the key whose string value names the metric.
    pub name_key: Option<String>,
    /// json: keys whose values become tags (after flattening, e.g. `host_name`).
    pub tag_keys: Vec<String>,
    /// json: the key holding the metric's time.
    pub json_time_key: Option<String>,
    pub json_time_format: JsonTimeFormat,
    /// json: string values kept as fields (Telegraf drops all others);
    /// `"*"` keeps every string.
    pub json_string_fields: Vec<String>,
    /// value: the field's type.
    pub data_type: ValueType,
}

/// One line (or document) that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number within the parsed text (1 for whole documents).
    pub line: usize,
    pub reason: String,
}

impl ParseError {
    fn new(line: usize, reason: impl Into<String>) -> Self {
        ParseError {
            line,
            reason: reason.into(),
        }
    }
}

/// A configured parser.
#[derive(Debug, Clone)]
pub struct Parser {
    cfg: ParserConfig,
    all_strings: bool,
}

impl Parser {
    pub fn new(cfg: ParserConfig) -> Self {
        let all_strings = cfg.json_string_fields.iter().any(|s| s == "*");
        Parser { cfg, all_strings }
    }

    pub fn format(&self) -> DataFormat {
        self.cfg.data_format
    }

    /// Parses a program's whole output. Malformed lines are skipped and
    /// returned as errors; the good ones are appended to `out`.
    /// Nagios needs the exit status: use [`parse_nagios`].
    pub fn parse_text(
        &self,
        text: &str,
        template: &Metric,
        out: &mut Vec<Metric>,
    ) -> Vec<ParseError> {
        let mut errors = Vec::new();
        match self.cfg.data_format {
            DataFormat::Value => {
                if let Err(reason) = self.parse_value(text.trim(), template, out) {
                    errors.push(ParseError::new(1, reason));
                }
            }
            DataFormat::Json => {
                // A whole document first (object or array), else one object per line.
                match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(v) => {
                        if let Err(reason) = self.json_document(v, template, out) {
                            errors.push(ParseError::new(1, reason));
                        }
                    }
                    Err(_) => self.each_line(text, template, out, &mut errors),
                }
            }
            DataFormat::Nagios => {
                if let Err(e) = parse_nagios(text, Some(0), template, out) {
                    errors.push(e);
                }
            }
            DataFormat::Influx | DataFormat::Pyagent => {
                self.each_line(text, template, out, &mut errors)
            }
        }
        errors
    }

    fn each_line(
        &self,
        text: &str,
        template: &Metric,
        out: &mut Vec<Metric>,
        errors: &mut Vec<ParseError>,
    ) {
        for (i, line) in text.lines().enumerate() {
            if let Err(reason) = self.parse_line_inner(line, template, out) {
                errors.push(ParseError::new(i + 1, reason));
            }
        }
    }

    /// Parses one line of a line-oriented stream (execd). Blank lines and
    /// influx `#` comments yield nothing.
    pub fn parse_line(
        &self,
        line: &str,
        template: &Metric,
        out: &mut Vec<Metric>,
    ) -> Result<(), ParseError> {
        self.parse_line_inner(line, template, out)
            .map_err(|reason| ParseError::new(1, reason))
    }

    fn parse_line_inner(
        &self,
        line: &str,
        template: &Metric,
        out: &mut Vec<Metric>,
    ) -> Result<(), String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(());
        }
        match self.cfg.data_format {
            DataFormat::Influx => {
                if line.trim_start().starts_with('#') {
                    return Ok(());
                }
                out.push(influx::parse_line(line, template)?);
                Ok(())
            }
            DataFormat::Json => {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
                self.json_document(v, template, out)
            }
            DataFormat::Pyagent => {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
                out.push(json::pyagent(v, template)?);
                Ok(())
            }
            DataFormat::Value => self.parse_value(line.trim(), template, out),
            DataFormat::Nagios => parse_nagios(line, Some(0), template, out).map_err(|e| e.reason),
        }
    }

    fn json_document(
        &self,
        v: serde_json::Value,
        template: &Metric,
        out: &mut Vec<Metric>,
    ) -> Result<(), String> {
        match v {
            serde_json::Value::Array(items) => {
                let mut built = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    built.push(
                        json::object(self, item, template).map_err(|e| format!("item {i}: {e}"))?,
                    );
                }
                out.extend(built);
                Ok(())
            }
            other => {
                out.push(json::object(self, other, template)?);
                Ok(())
            }
        }
    }

    fn parse_value(
        &self,
        text: &str,
        template: &Metric,
        out: &mut Vec<Metric>,
    ) -> Result<(), String> {
        if text.is_empty() {
            return Err("empty output, expected a value".into());
        }
        let value = match self.cfg.data_type {
            ValueType::Integer => text
                .parse::<i64>()
                .map(FieldValue::Int)
                // `3.0` from a script is still an integer reading.
                .or_else(|_| match text.parse::<f64>() {
                    Ok(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(FieldValue::Int(f as i64)),
                    _ => Err(()),
                })
                .map_err(|_| format!("not an integer: {:?}", clip(text)))?,
            ValueType::Float => match text.parse::<f64>() {
                Ok(f) if f.is_finite() => FieldValue::Float(f),
                _ => return Err(format!("not a number: {:?}", clip(text))),
            },
            ValueType::String => FieldValue::Str(Str::new(text)),
            ValueType::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "on" => FieldValue::Bool(true),
                "false" | "f" | "0" | "no" | "off" => FieldValue::Bool(false),
                _ => return Err(format!("not a boolean: {:?}", clip(text))),
            },
        };
        let mut m = template.clone();
        m.push_field("value", value);
        out.push(m);
        Ok(())
    }
}

/// The start of a bad input, for error messages that must stay short.
pub(crate) fn clip(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
