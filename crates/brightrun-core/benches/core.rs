//! Throughput of the hot paths: validating a generated ~100 MB dataset from memory on one thread
//! (MB/s, with the real cl100k tokenizer and with the byte tokenizer, to separate parsing from
//! BPE); validating a ~50 MB one on one thread and on every core; counting cl100k tokens with
//! tiktoken-rs and with bpe-openai on the same texts; and rendering 100k metric points to SVG
//! (light, dark with a log axis) and PNG, beside the peer: plotters drawing the same 100k points
//! as one `LineSeries`, without our decimation.
//!
//! Run with `cargo bench -p brightrun-core --bench core` (one group: `-- chart_100k`,
//! `-- validate_50mb`, `-- count_tokens`).

use std::hint::black_box;

use brightrun_core::chart::{Chart, ChartKind, ChartSize, ChartStyle, ChartTheme};
use brightrun_core::{
    BpeOpenAiTokenizer, ByteTokenizer, MetricsPoint, TiktokenTokenizer, Tokenizer,
    ValidationOptions, validate,
};
use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

/// Deterministic chat lines of varied length until `target_bytes`.
fn dataset(target_bytes: usize) -> Vec<u8> {
    let words = [
        "adapter",
        "gradient",
        "the",
        "loss",
        "checkpoint",
        "tokens",
        "batch",
        "learning",
        "rate",
        "warmup",
        "über",
        "naïve",
        "of",
        "a",
        "and",
        "to",
        "résumé",
        "GPU",
        "epoch",
        "validation",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64: reproducible, no RNG dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let sentence = |len: u64, next: &mut dyn FnMut() -> u64| {
        (0..len)
            .map(|_| words[(next() % words.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = Vec::with_capacity(target_bytes + 4096);
    while out.len() < target_bytes {
        let turns = 1 + next() % 4;
        let mut line = String::from(
            "{\"messages\": [{\"role\": \"system\", \"content\": \"You are helpful.\"}",
        );
        for _ in 0..turns {
            let question = sentence(5 + next() % 40, &mut next);
            let answer = sentence(10 + next() % 200, &mut next);
            line.push_str(&format!(
                ", {{\"role\": \"user\", \"content\": \"{question}\"}}, {{\"role\": \"assistant\", \"content\": \"{answer}\"}}"
            ));
        }
        line.push_str("]}\n");
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// The same ~50 MB file on one thread and on every core (`threads: None`), with each cl100k
/// counter: the multi-threaded report is the single-threaded one (tests/core/parallel.rs), so
/// this measures only the speed-up.
fn validation_threads(c: &mut Criterion) {
    let data = dataset(50 * 1024 * 1024);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut group = c.benchmark_group("validate_50mb");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(data.len() as u64));
    let tokenizers: [(&str, Box<dyn Tokenizer>); 2] = [
        ("tiktoken_rs", Box::new(TiktokenTokenizer::cl100k_base())),
        ("bpe_openai", Box::new(BpeOpenAiTokenizer::cl100k_base())),
    ];
    for (name, tokenizer) in &tokenizers {
        for threads in [1, cores] {
            let options = ValidationOptions {
                threads: Some(threads),
                ..ValidationOptions::default()
            };
            group.bench_function(format!("{name}/threads_{threads}"), |b| {
                b.iter(|| validate(black_box(data.as_slice()), &options, tokenizer.as_ref()))
            });
        }
    }
    group.finish();
}

/// Message texts as the validator counts them, one call per message: the generated chat
/// contents plus multilingual, emoji, code and whitespace-heavy texts.
fn message_texts(target_bytes: usize) -> Vec<String> {
    let extra = [
        "我们今天去公园散步，天气很好。你吃饭了吗？",
        "مرحبا بالعالم، كيف حالك اليوم؟ أنا بخير، شكراً.",
        "नमस्ते दुनिया, आप कैसे हैं? मैं ठीक हूँ।",
        "Ça va? Über naïve café résumé Ångström façade 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵",
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "{\"a\": [1, 2.5, -3e10, null], \"b\": {\"c\": \"d\"}}\n\n\t\t    \n",
    ];
    let data = dataset(target_bytes);
    let mut texts = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let messages = value["messages"].as_array().cloned().unwrap_or_default();
        for message in messages {
            if let Some(text) = message["content"].as_str() {
                texts.push(text.to_owned());
            }
        }
        texts.push(extra[i % extra.len()].to_owned());
    }
    texts
}

/// tiktoken-rs's `count_ordinary` (encodes, then counts) against bpe-openai's `count` on the
/// same texts; both are cl100k_base and give the same counts (tests/core/tokenizer.rs).
fn token_counting(c: &mut Criterion) {
    let texts = message_texts(4 * 1024 * 1024);
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut group = c.benchmark_group("count_tokens");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(bytes as u64));
    let tokenizers: [(&str, Box<dyn Tokenizer>); 2] = [
        ("tiktoken_rs", Box::new(TiktokenTokenizer::cl100k_base())),
        ("bpe_openai", Box::new(BpeOpenAiTokenizer::cl100k_base())),
    ];
    for (name, tokenizer) in &tokenizers {
        // The first call loads the tables; keep that out of the measurement.
        tokenizer.count_tokens("warm up");
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(&texts)
                    .iter()
                    .map(|text| tokenizer.count_tokens(text))
                    .sum::<u64>()
            })
        });
    }
    group.finish();
}

fn metrics(count: i64) -> Vec<MetricsPoint> {
    (0..count)
        .map(|step| MetricsPoint {
            id: Uuid::nil(),
            job_id: Uuid::nil(),
            attempt: 1,
            timestamp: Utc
                .timestamp_opt(1_800_000_000 + step, 0)
                .single()
                .unwrap_or_default(),
            epoch: step / 10_000,
            step,
            training_loss: 2.0 / (1.0 + step as f64 / 1000.0) + ((step * 7919) % 13) as f64 * 0.01,
            validation_loss: (step % 1000 == 0).then_some(2.1 / (1.0 + step as f64 / 1000.0)),
            learning_rate: 2e-4,
            gradient_norm: None,
            throughput: Some(3000.0 + (step % 97) as f64),
            gpu_utilization: None,
        })
        .collect()
}

fn validation(c: &mut Criterion) {
    let data = dataset(100 * 1024 * 1024);
    let options = ValidationOptions {
        threads: Some(1),
        ..ValidationOptions::default()
    };
    let mut group = c.benchmark_group("validate_100mb");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(data.len() as u64));
    let tokenizers: [(&str, Box<dyn Tokenizer>); 2] = [
        ("bytes", Box::new(ByteTokenizer)),
        ("cl100k_base", Box::new(TiktokenTokenizer::cl100k_base())),
    ];
    for (name, tokenizer) in &tokenizers {
        group.bench_function(*name, |b| {
            b.iter(|| validate(black_box(data.as_slice()), &options, tokenizer.as_ref()))
        });
    }
    group.finish();
}

fn charts(c: &mut Criterion) {
    let points = metrics(100_000);
    let size = ChartSize {
        width: 1200,
        height: 500,
    };
    let mut group = c.benchmark_group("chart_100k_points");
    group.bench_function("svg", |b| {
        b.iter(|| Chart::from_metrics(ChartKind::Loss, black_box(&points)).to_svg(size))
    });
    let dark_log = ChartStyle {
        theme: ChartTheme::Dark,
        log_y: true,
    };
    group.bench_function("svg_dark_log", |b| {
        b.iter(|| {
            Chart::from_metrics(ChartKind::Loss, black_box(&points)).to_svg_styled(size, dark_log)
        })
    });
    group.bench_function("png", |b| {
        b.iter(|| Chart::from_metrics(ChartKind::Loss, black_box(&points)).to_png(size))
    });
    // The peer: plotters itself, every point of the training loss in one LineSeries.
    group.bench_function("peer_plotters_svg_every_point", |b| {
        b.iter(|| plotters_every_point(black_box(&points), size))
    });
    group.finish();
}

/// What a straightforward plotters chart of the loss does: all points, no decimation.
fn plotters_every_point(points: &[MetricsPoint], size: ChartSize) -> String {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).expect("fill");
        let last = points.last().map_or(1, |p| p.step) as f64;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..last, 0.0..2.2)
            .expect("axes");
        chart.configure_mesh().draw().expect("mesh");
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.step as f64, p.training_loss)),
                BLUE.stroke_width(2),
            ))
            .expect("series");
        root.present().expect("present");
    }
    svg
}

criterion_group!(
    benches,
    validation,
    validation_threads,
    token_counting,
    charts
);
criterion_main!(benches);
