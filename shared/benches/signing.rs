//! Signing a delivery: the HMAC-SHA256 every request carries, with one secret and with two (while
//! a secret rotates), and verifying as a receiver does.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_shared::signing::{signature_header, verify, SigningKey};
use std::hint::black_box;
use std::time::Duration;

/// A delivered body of about 400 bytes, as a receiver gets it.
fn body() -> Vec<u8> {
    let note = "x".repeat(180);
    format!(
        r#"{{"uuid":"evt_2mFv0sQ8kX1cRt7LwZp4Yb","event":"order.completed","resource":"order","resource_id":"ord_77","payload":{{"order_id":"ord_77","total_cents":12900,"note":"{note}"}},"time_created":1774137600000,"time_sent":1774137600500}}"#
    )
    .into_bytes()
}

fn signing(c: &mut Criterion) {
    let body = body();
    let one = [SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret")];
    let two = [
        one[0].clone(),
        SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("secret"),
    ];
    let id = "evt_2mFv0sQ8kX1cRt7LwZp4Yb";
    let ts = 1_774_137_600;
    let mut g = c.benchmark_group("signing");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("sign {} B, one secret", body.len()), |b| {
        b.iter(|| signature_header(black_box(&one), id, ts, black_box(&body)))
    });
    g.bench_function(format!("sign {} B, two secrets", body.len()), |b| {
        b.iter(|| signature_header(black_box(&two), id, ts, black_box(&body)))
    });
    let header = signature_header(&one, id, ts, &body);
    g.bench_function(format!("verify {} B", body.len()), |b| {
        b.iter(|| verify(&one[0], id, "1774137600", black_box(&header), &body, ts))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = signing
}
criterion_main!(benches);
