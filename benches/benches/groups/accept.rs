//! `accept`: classifying an accept error, from a raw OS code and from `std::io::Error`.

use std::hint::black_box;
use std::io;

use criterion::Criterion;
use keel_core::accept::{classify_io_error, classify_os_error, Platform};

pub(crate) fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("accept");
    let codes = [24, 104, 103, 9, 71, 105, 12, 11];
    g.bench_function("keel/classify_os_error", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % codes.len();
            black_box(classify_os_error(black_box(codes[i]), Platform::Linux))
        })
    });
    let errors: Vec<io::Error> = codes
        .iter()
        .map(|&c| io::Error::from_raw_os_error(c))
        .collect();
    g.bench_function("keel/classify_io_error", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % errors.len();
            black_box(classify_io_error(black_box(&errors[i])))
        })
    });
    // The naive alternative: matching on `ErrorKind` (which cannot tell EMFILE from ENOBUFS).
    g.bench_function("std/error_kind_match", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % errors.len();
            black_box(matches!(
                black_box(&errors[i]).kind(),
                io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionRefused
            ))
        })
    });
    g.finish();
}
