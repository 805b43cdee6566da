//! `demo`: PyAgent's demo input, a random `x` to exercise alarms and the
//! discard sub-plugin without touching the host.
pub mod schema;
use crate::plugin::{Accumulator, Input, PluginResult};
use crate::registry::Registry;
use rand::Rng;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DemoConfig {}

#[derive(Debug, Default)]
pub struct Demo {
    total: u64,
}

impl Demo {
    pub fn new(_config: DemoConfig) -> Self {
        Demo::default()
    }
}

impl Input for Demo {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let mut rng = rand::rng();
        let x: i64 = rng.random_range(6..=30);
        self.total += 1;
        let mut m = acc.metric();
        m.push_field("x", x);
        // Gathers so far: a counter that never goes back.
        m.push_field("total", self.total);
        m.push_field("testin", "demo");
        m.push_field(
            "test_float",
            (rng.random::<f64>() * 10_000.0).round() / 100.0,
        );
        m.push_field(
            "demo_discard",
            "dropped by aggs/demo.yaml after.use_plugin_discard",
        );
        acc.add(m);
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "demo",
        "Random numbers for trying alarms and processors",
        include_str!("sample.yaml"),
        |cfg| Ok(Demo::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::FieldValue;

    #[actix_rt::test]
    async fn fields_and_ranges() {
        let mut d = Demo::default();
        for round in 1..=50u64 {
            let mut acc = Accumulator::new("demo", vec![].into());
            d.gather(&mut acc).await.unwrap();
            let m = acc.take().pop().unwrap();
            assert_eq!(m.name, "demo");
            let Some(FieldValue::Int(x)) = m.field("x") else {
                panic!("x missing")
            };
            assert!((6..=30).contains(x), "{x}");
            assert_eq!(m.field("total"), Some(&FieldValue::Uint(round)));
            for k in ["testin", "test_float", "demo_discard"] {
                assert!(m.field(k).is_some(), "{k} missing");
            }
        }
    }
}
