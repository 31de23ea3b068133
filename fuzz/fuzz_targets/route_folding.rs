//! Route folding on arbitrary paths: never panics, always yields a route that
//! starts with `/`, stays bounded, folds to itself, and respects the table limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitio::telemetry::routes::{OTHER, Routes, fold};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let route = fold(path);
    assert!(route.starts_with('/'), "{route:?}");
    assert!(route.len() <= path.len() + 8 * 17, "{route:?} from {path:?}");
    assert_eq!(fold(&route), route, "folding is idempotent");
    let routes = Routes::new("/users/{id},/static/*", 2).unwrap();
    let r = routes.route_of(path);
    assert!(r.starts_with('/') || r == OTHER);
});
