//! Selector evaluation and parse time.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use halyard_selector::{Selector, Value};

fn props(color: &str, weight: f64, region: &str, name: &str) -> HashMap<String, Value<'static>> {
    let mut m = HashMap::new();
    m.insert("color".to_owned(), Value::Str(color.to_owned().into()));
    m.insert("weight".to_owned(), Value::Double(weight));
    m.insert("region".to_owned(), Value::Str(region.to_owned().into()));
    m.insert("name".to_owned(), Value::Str(name.to_owned().into()));
    m.insert("JMSPriority".to_owned(), Value::Long(4));
    m
}

const SIMPLE: &str = "color = 'red' AND weight > 2.5";
const IN10: &str =
    "region IN ('eu-1','eu-2','eu-3','us-1','us-2','us-3','ap-1','ap-2','ap-3','sa-1')";
const LIKE: &str = "name LIKE 'order-%-urgent'";

fn bench(c: &mut Criterion) {
    let hit = props("red", 3.0, "ap-2", "order-12345-urgent");
    let miss = props("blue", 1.0, "xx-9", "order-12345-normal");
    for (label, text) in [("simple", SIMPLE), ("in10", IN10), ("like", LIKE)] {
        let sel = Selector::parse(text).expect("valid selector");
        assert!(sel.matches(&hit) && !sel.matches(&miss), "{text}");
        c.bench_function(&format!("eval/{label}/match"), |b| {
            b.iter(|| black_box(&sel).matches(black_box(&hit)))
        });
        c.bench_function(&format!("eval/{label}/miss"), |b| {
            b.iter(|| black_box(&sel).matches(black_box(&miss)))
        });
        c.bench_function(&format!("parse/{label}"), |b| {
            b.iter(|| Selector::parse(black_box(text)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
