//! Micro-benchmarks of the per-request work sitio adds on top of moving bytes:
//! route folding and the decorator chain (with the statistics recorder that
//! is on by default). The whole-proxy comparison with the peers is
//! `bench/run.sh`; these show regressions in seconds, without the setup.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sitio::telemetry::routes::fold;
use sitio::telemetry::{Recorder, Routes, StatsHub, TapHub};
use sitio::{AccessLog, Body, Decorators, ErrorPages};

fn route_folding(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_folding");
    for path in [
        "/",
        "/hello.txt",
        "/users/12345/orders/9f86d081884c7d65?page=2",
        "/static/js/app.3f2a9c.js",
    ] {
        group.bench_function(format!("fold {path}"), |b| b.iter(|| fold(black_box(path))));
    }
    let unpatterned = Routes::unpatterned(500);
    group.bench_function("route_of, built-in rules", |b| {
        b.iter(|| unpatterned.route_of(black_box("/users/12345/orders")))
    });
    let patterned =
        Routes::new("/api/{version}/items/{id},/static/*,/health", 500).expect("valid patterns");
    group.bench_function("route_of, SITIO_ROUTES patterns", |b| {
        b.iter(|| patterned.route_of(black_box("/static/js/app.js")))
    });
    group.finish();
}

/// A request hook that waits (on nothing): what waiting costs the exchange.
struct Waits;

impl sitio::Decorator for Waits {
    type State = ();
    fn on_request<'a>(
        &'a self,
        _: &'a mut http::request::Parts,
        _: &'a mut (),
        _: &'a mut sitio::Exchange,
    ) -> sitio::Action<'a> {
        sitio::Action::wait(async { sitio::Action::Continue })
    }
}

fn decorator_chain(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let recorder = || Recorder::new(Arc::new(StatsHub::default()), Arc::new(TapHub::default()));
    let pages = || ErrorPages::new().not_found("<h1>404</h1>");
    let chains = [
        ("none (sitio bare)", Decorators::none()),
        (
            "stats (sitio default)",
            Decorators::builder().with(recorder()).build(),
        ),
        (
            "stats + error pages",
            Decorators::builder().with(recorder()).with(pages()).build(),
        ),
        (
            "stats + a waiting hook",
            Decorators::builder().with(recorder()).with(Waits).build(),
        ),
        (
            "stats + access log + error pages",
            Decorators::builder()
                .with(recorder())
                .with(AccessLog)
                .with(pages())
                .build(),
        ),
    ];
    let body = bytes::Bytes::from_static(&[b'x'; 100]);
    let mut group = c.benchmark_group("decorator_chain");
    for (name, chain) in &chains {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let request = http::Request::get("/users/42/photos")
                    .header("host", "svc")
                    .body(())
                    .expect("request");
                runtime.block_on(chain.simulate(request, {
                    let body = body.clone();
                    move |_| Ok(http::Response::new(Body::full(body)))
                }))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route_folding, decorator_chain);
criterion_main!(benches);
