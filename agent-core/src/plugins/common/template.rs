//! Topic and subject templates of the broker outputs (mqtt, nats):
//! `agent/{host_name}/{name}`. `{name}` is the metric's name; `{KEY}` is a
//! tag the metric carries (main.yaml's `info` keys, or a key an input's
//! schema declares as identifying, such as a probe's `tag`); `{tag:KEY}` is
//! any other tag. An unknown `{KEY}` is a config error, so a typo does not
//! silently send everything to one topic.
use crate::config::{ConfigError, PluginConfig};
use crate::metric::Metric;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Name,
    /// A tag key; also looked up among the fields, where PyAgent's flat
    /// metrics keep identity keys such as a probe's `tag`.
    Key(String),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

/// What a placeholder is replaced with when the metric has no such key.
pub const MISSING: &str = "_";

fn known_keys(cfg: &PluginConfig) -> Vec<String> {
    let mut keys = cfg.info_keys();
    for s in crate::plugins::inputs::SCHEMAS {
        for k in s.tags.iter().chain(s.own_tags) {
            // `{name}` is the metric's name, whatever a schema calls `name`.
            if *k != "name" && !keys.iter().any(|x| x == k) {
                keys.push(k.to_string());
            }
        }
    }
    keys
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 256
        && k.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Template {
    /// Parses `text` read from `key`; `{`/`}` that do not form a placeholder
    /// are errors.
    pub fn parse(cfg: &PluginConfig, key: &str, text: &str) -> Result<Template, ConfigError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        let mut known: Option<Vec<String>> = None;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            if rest[i..].starts_with('}') {
                return Err(cfg.error(key, format!("`}}` without `{{` in `{text}`")));
            }
            let after = &rest[i + 1..];
            let Some(end) = after
                .find(['{', '}'])
                .filter(|&e| after[e..].starts_with('}'))
            else {
                return Err(cfg.error(key, format!("unclosed `{{` in `{text}`")));
            };
            let ph = &after[..end];
            let part = if ph == "name" {
                Part::Name
            } else if let Some(tag) = ph.strip_prefix("tag:") {
                if !valid_key(tag) {
                    return Err(cfg.error(key, format!("`{{{ph}}}`: not a valid tag key")));
                }
                Part::Key(tag.to_string())
            } else {
                let known = known.get_or_insert_with(|| known_keys(cfg));
                if !valid_key(ph) || !known.iter().any(|k| k == ph) {
                    return Err(cfg.error(
                        key,
                        format!(
                            "unknown placeholder `{{{ph}}}`; known: {{name}}, {}; write `{{tag:KEY}}` for any other tag",
                            known
                                .iter()
                                .map(|k| format!("{{{k}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                Part::Key(ph.to_string())
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// The literal text between placeholders, for validating it.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Lit(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The template with every placeholder replaced by `with`, for a
    /// subscription pattern (NATS `*`) or validation.
    pub fn with_placeholders(&self, with: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.as_str(),
                _ => with,
            })
            .collect()
    }

    pub fn has_placeholders(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Lit(_)))
    }

    /// Appends the template for `m` to `out`; each substituted value goes
    /// through `clean` (which replaces what the protocol cannot carry in
    /// one level of a topic or subject); an empty or missing value is
    /// [`MISSING`].
    pub fn render(&self, m: &Metric, clean: fn(char) -> char, out: &mut String) {
        for p in &self.parts {
            let value: std::borrow::Cow<'_, str> = match p {
                Part::Lit(s) => {
                    out.push_str(s);
                    continue;
                }
                Part::Name => m.name.as_str().into(),
                Part::Key(k) => match m.tag(k) {
                    Some(v) => v.into(),
                    None => m
                        .field(k)
                        .and_then(crate::schema::tag_text)
                        .unwrap_or(MISSING.into()),
                },
            };
            if value.is_empty() {
                out.push_str(MISSING);
            } else {
                out.extend(value.chars().map(clean));
            }
        }
    }
}

/// Message payload of the broker outputs: one message per metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// One flat JSON object (see `format::json`), with `kind`.
    #[default]
    Json,
    /// InfluxDB line protocol (reshaped by the input's schema, so one
    /// metric may give several lines), nanosecond timestamps.
    #[serde(alias = "line_protocol", alias = "influxdb")]
    Influx,
}

/// Encodes payloads; keeps the JSON encoder's cached time.
#[derive(Debug, Default)]
pub struct PayloadEncoder {
    format: PayloadFormat,
    json: crate::format::json::Encoder,
}

impl PayloadEncoder {
    pub fn new(format: PayloadFormat) -> Self {
        PayloadEncoder {
            format,
            json: crate::format::json::Encoder::new(true),
        }
    }

    /// Replaces `out` with `m`'s payload; false when the metric has nothing
    /// the format can carry (line protocol without a writable field).
    pub fn encode(&mut self, m: &Metric, out: &mut String) -> bool {
        out.clear();
        match self.format {
            PayloadFormat::Json => {
                self.json.write_object(m, out);
                true
            }
            PayloadFormat::Influx => crate::format::line_protocol::write_metric(
                m,
                &crate::format::line_protocol::Options::dimensional(),
                out,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PluginConfig {
        PluginConfig::from_value("t", serde_yaml_ng::Value::Null)
    }

    #[test]
    fn renders_name_info_tag_and_field_keys() {
        let t = Template::parse(
            &cfg(),
            "topic",
            "agent/{host_name}/{name}/{tag:mount}/{tag}",
        )
        .unwrap();
        let m = Metric::new("disk", 0)
            .with_tag("host_name", "web/1")
            .with_tag("mount", "")
            .with_field("tag", "probe a");
        let mut s = String::new();
        t.render(&m, |c| if c == '/' { '_' } else { c }, &mut s);
        assert_eq!(s, "agent/web_1/disk/_/probe a");
        assert_eq!(t.with_placeholders("*"), "agent/*/*/*/*");
    }

    #[test]
    fn bad_templates_are_config_errors() {
        for (text, why) in [
            ("a/{nmae}", "unknown placeholder `{nmae}`"),
            ("a/{name", "unclosed"),
            ("a/name}", "without"),
            ("a/{}", "unknown placeholder"),
            ("a/{tag:}", "not a valid tag key"),
            ("a/{na{me}", "unclosed"),
        ] {
            let e = Template::parse(&cfg(), "topic", text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why) && e.contains("topic"), "{text}: {e}");
        }
    }
}
