//! The settings of the A/B split (`SITIO_SPLIT*`), owned here and flattened
//! into [`crate::Config`].

use clap::{Args, ValueEnum};

use crate::units::parse_switch;

/// A/B testing: a share of requests goes to other versions of the service.
/// Off unless `SITIO_SPLIT` is set.
#[derive(Debug, Clone, Args)]
pub struct SplitSettings {
    /// Variants and their shares, `NAME=HOST:PORT@PERCENT%`, comma-separated,
    /// e.g. `canary=127.0.0.1:8088@10%`; the rest goes to the service (TARGET_PORT).
    #[arg(long, global = true, env = "SITIO_SPLIT", value_name = "SITIO_SPLIT",
          default_value = "", hide_default_value = true, value_parser = parse_split)]
    pub split: Variants,

    /// Keep a client on its variant: `cookie` (a `sitio-variant` cookie) or `off`.
    #[arg(long, global = true, env = "SITIO_SPLIT_STICKY", value_name = "SITIO_SPLIT_STICKY",
          value_enum, default_value_t = Sticky::Off)]
    pub split_sticky: Sticky,

    /// Let a `sitio-variant: NAME` request header choose the variant (on|off).
    #[arg(long, global = true, env = "SITIO_SPLIT_HEADER", value_name = "SITIO_SPLIT_HEADER",
          default_value = "off", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub split_header: bool,

    /// Send all traffic back to the service, and notify, when a variant's
    /// error rate over the last minute exceeds the service's (on|off).
    #[arg(long, global = true, env = "SITIO_SPLIT_GUARD", value_name = "SITIO_SPLIT_GUARD",
          default_value = "off", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub split_guard: bool,

    /// How many times the service's error rate a variant may reach before the guard trips.
    #[arg(long, global = true, env = "SITIO_SPLIT_GUARD_FACTOR", value_name = "SITIO_SPLIT_GUARD_FACTOR",
          default_value_t = 2.0, value_parser = parse_factor)]
    pub split_guard_factor: f64,

    /// Requests a variant must have served in the last minute before the guard judges it.
    #[arg(long, global = true, env = "SITIO_SPLIT_GUARD_MIN", value_name = "SITIO_SPLIT_GUARD_MIN",
          default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub split_guard_min: u32,
}

impl Default for SplitSettings {
    fn default() -> Self {
        SplitSettings {
            split: Variants::default(),
            split_sticky: Sticky::Off,
            split_header: false,
            split_guard: false,
            split_guard_factor: 2.0,
            split_guard_min: 20,
        }
    }
}

/// How a client stays on its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Sticky {
    /// Every request is drawn anew.
    #[default]
    Off,
    /// The first answer sets a `sitio-variant` cookie; later requests follow it.
    Cookie,
}

/// One variant: a named upstream and its share of requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Its name (in stats, metrics, the cookie, notifications).
    pub name: String,
    /// Host (name or address).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Share of requests, in percent.
    pub percent: f64,
}

/// `SITIO_SPLIT`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Variants(pub Vec<Variant>);

fn parse_split(s: &str) -> Result<Variants, String> {
    let mut variants: Vec<Variant> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let err = |why: &str| {
            format!(
                "{why} in {item:?}: expected NAME=HOST:PORT@PERCENT%, e.g. canary=127.0.0.1:8088@10%"
            )
        };
        let (name, rest) = item.split_once('=').ok_or_else(|| err("no ="))?;
        let (addr, share) = rest.rsplit_once('@').ok_or_else(|| err("no @"))?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| err("no :PORT"))?;
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name.len() <= 24
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name || name == "service" {
            return Err(err("a name of letters, digits, - and _ (not \"service\")"));
        }
        if variants.iter().any(|v| v.name == name) {
            return Err(err("a name used twice"));
        }
        let port = port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| err("a port from 1 to 65535"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("a host"));
        }
        let percent = share
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<f64>().ok())
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or_else(|| err("a share from 0% to 100%"))?;
        variants.push(Variant {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
            percent,
        });
    }
    let total: f64 = variants.iter().map(|v| v.percent).sum();
    if total > 100.0 {
        return Err(format!(
            "the shares add up to {total}%: expected at most 100% (the rest goes to the service)"
        ));
    }
    Ok(Variants(variants))
}

fn parse_factor(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 1.0)
        .ok_or_else(|| "expected a factor of at least 1, e.g. 2 or 1.5".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_and_nonsense_is_refused() {
        let v = parse_split("canary=127.0.0.1:8088@10%, b=[::1]:9000@2.5%").unwrap();
        assert_eq!(v.0[0].name, "canary");
        assert_eq!((v.0[0].host.as_str(), v.0[0].port), ("127.0.0.1", 8088));
        assert_eq!((v.0[1].host.as_str(), v.0[1].percent), ("::1", 2.5));
        assert!(parse_split("").unwrap().0.is_empty());
        for bad in [
            "canary=127.0.0.1:8088",
            "canary=127.0.0.1@10%",
            "service=127.0.0.1:1@10%",
            "a=h:1@10%,a=h:2@10%",
            "a=h:1@60%,b=h:2@50%",
            "a=h:0@10%",
            "a b=h:1@10%",
            "a=h:1@ten%",
        ] {
            assert!(parse_split(bad).is_err(), "{bad}");
        }
        assert!(parse_factor("0.5").is_err());
        assert_eq!(parse_factor("3").unwrap(), 3.0);
    }
}
