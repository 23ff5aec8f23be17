//! Throughput of the statistics core: Welford updates, Chan merges, event
//! recording, the 7-day window fold, and field extraction.
//! Run: `cargo bench -p sygno-shared --bench stats`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sygno_shared::domain::fields::{extract, Fields};
use sygno_shared::domain::series::{Series, Summary};
use sygno_shared::domain::stats::Moments;

fn values(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 20.0 + ((i * 7919) % 1000) as f64 / 100.0)
        .collect()
}

fn event_fields(n: usize) -> Fields {
    (0..n)
        .map(|i| (format!("sensor.f{i}"), i as f64 * 1.25))
        .collect()
}

fn bench(c: &mut Criterion) {
    let xs = values(100_000);
    let mut g = c.benchmark_group("moments");
    g.throughput(Throughput::Elements(xs.len() as u64));
    g.bench_function("welford_push", |b| {
        b.iter(|| {
            let mut m = Moments::default();
            for x in &xs {
                m.push(*x);
            }
            black_box(m)
        })
    });
    let parts: Vec<Moments> = xs
        .chunks(10)
        .map(|c| {
            let mut m = Moments::default();
            c.iter().for_each(|x| m.push(*x));
            m
        })
        .collect();
    g.throughput(Throughput::Elements(parts.len() as u64));
    g.bench_function("chan_merge", |b| {
        b.iter(|| {
            let mut m = Moments::default();
            for p in &parts {
                m.merge(p);
            }
            black_box(m)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("summary");
    let fields = event_fields(20);
    g.throughput(Throughput::Elements(fields.len() as u64));
    g.bench_function("record_event_20_fields", |b| {
        let mut s = Summary::default();
        s.record(&fields);
        b.iter(|| s.record(black_box(&fields)))
    });
    // A full week of one-minute buckets, 20 fields each.
    let mut series = Series::default();
    for bucket in 0..10_080 {
        series.record(bucket, &fields);
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("fold_7d_window_cold", |b| {
        b.iter_batched_ref(
            || {
                let mut s = Series::default();
                for bucket in 0..10_080 {
                    s.record(bucket, &fields);
                }
                s
            },
            |s| black_box(s.summarize(1, 10_081)),
            BatchSize::LargeInput,
        )
    });
    // Hour blocks cached from here on.
    series.summarize(1, 10_081);
    g.bench_function("fold_7d_window_warm", |b| {
        b.iter(|| black_box(series.summarize(1, 10_081)))
    });
    g.bench_function("fold_7d_window_one_block_stale", |b| {
        // `_ref`: the clone is built and dropped outside the timing.
        b.iter_batched_ref(
            || {
                let mut s = series.clone();
                s.record(10_079, &fields);
                s
            },
            |s| black_box(s.summarize(1, 10_081)),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("fields");
    let table: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        r#"{"name": "_ws_source_meteo", "rows": [["Variable", "Value"], ["external_temperature_c", 9.1387],
            ["wind_direction_compass", {"type": "hortimax.synopta.enum", "key": 8789, "value": "Actief"}],
            ["radiation", 150.0], ["humidity", 61.2], ["rain", 0]], "ts": "2021-05-01T12:07:50+02:00"}"#,
    ).expect("json");
    g.throughput(Throughput::Elements(1));
    g.bench_function("extract_rows_table", |b| {
        b.iter(|| black_box(extract(&table)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
