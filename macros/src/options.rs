//! The arguments of `#[netns_test(...)]`: parsing and validation.
//!
//! Every error is spanned on the offending token and, for unknown keys, lists
//! the valid ones.

use proc_macro2::Span;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, Meta, Token};

/// The keys `#[netns_test(...)]` accepts, in the order the error message lists them.
pub const VALID_KEYS: &[&str] = &[
    "veth",
    "flavor",
    "worker_threads",
    "start_paused",
    "timeout",
    "keep",
    "capture",
    "crate",
];

/// When to keep a test's namespaces, or its packet captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Failed,
    All,
}

/// The keys `veth(...)` accepts.
pub const VALID_VETH_KEYS: &[&str] = &["mtu", "ipv4", "host_ipv4", "ipv6", "host_ipv6"];

fn valid_keys_list() -> String {
    quoted_list(VALID_KEYS)
}

fn quoted_list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which tokio runtime drives an async test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread,
}

/// A timeout as written and as a number of milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    pub text: String,
    pub millis: u64,
}

/// An address pair for one end each of the veth pair, as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPair<A> {
    pub ns: A,
    pub host: A,
    pub prefix: u8,
}

/// `veth` or `veth(mtu = .., ipv4 = .., host_ipv4 = .., ipv6 = .., host_ipv6 = ..)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethOptions {
    pub mtu: u32,
    pub ipv4: Option<AddressPair<std::net::Ipv4Addr>>,
    pub ipv6: Option<AddressPair<std::net::Ipv6Addr>>,
}

/// The parsed arguments.
#[derive(Clone)]
pub struct Options {
    pub veth: Option<VethOptions>,
    /// The tokens the user wrote, re-emitted when the attribute moves below another one.
    pub raw: proc_macro2::TokenStream,
    pub flavor: Option<(Flavor, Span)>,
    pub worker_threads: Option<(usize, Span)>,
    /// `start_paused = true`: tokio's clock starts paused (the value's span).
    pub start_paused: Option<(bool, Span)>,
    pub timeout: Option<Timeout>,
    pub keep: Option<Policy>,
    pub capture: Option<Policy>,
    pub krate: syn::Path,
}

impl Options {
    /// Parses the attribute's arguments.
    pub fn parse(args: proc_macro2::TokenStream) -> syn::Result<Options> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args.clone())?;
        let mut options = Options {
            veth: None,
            raw: args,
            flavor: None,
            worker_threads: None,
            start_paused: None,
            timeout: None,
            keep: None,
            capture: None,
            krate: syn::parse_quote!(::netns_test),
        };
        let mut seen: Vec<String> = Vec::new();
        let mut errors: Option<syn::Error> = None;
        let mut push = |error: syn::Error| match &mut errors {
            Some(all) => all.combine(error),
            None => errors = Some(error),
        };
        for meta in metas {
            let key_path = meta.path();
            let key = match key_path.get_ident() {
                Some(ident) => ident.to_string(),
                None => {
                    push(syn::Error::new(
                        key_path.span(),
                        format!(
                            "unknown argument; valid arguments are: {}",
                            valid_keys_list()
                        ),
                    ));
                    continue;
                }
            };
            if !VALID_KEYS.contains(&key.as_str()) {
                push(syn::Error::new(
                    key_path.span(),
                    format!(
                        "unknown argument `{key}`; valid arguments are: {}",
                        valid_keys_list()
                    ),
                ));
                continue;
            }
            if seen.contains(&key) {
                push(syn::Error::new(
                    key_path.span(),
                    format!("argument `{key}` is given more than once"),
                ));
                continue;
            }
            seen.push(key.clone());
            if key == "capture" && matches!(meta, Meta::Path(_)) {
                options.capture = Some(Policy::Failed);
                continue;
            }
            if key == "veth" {
                match parse_veth(&meta) {
                    Ok(veth) => options.veth = Some(veth),
                    Err(error) => push(error),
                }
                continue;
            }
            let value = match &meta {
                Meta::NameValue(nv) => &nv.value,
                _ => {
                    push(syn::Error::new(
                        meta.span(),
                        format!("`{key}` needs a value: {}", example_for(&key)),
                    ));
                    continue;
                }
            };
            let result = match key.as_str() {
                "flavor" => {
                    parse_flavor(value).map(|f| options.flavor = Some((f, key_path.span())))
                }
                "worker_threads" => parse_worker_threads(value)
                    .map(|n| options.worker_threads = Some((n, key_path.span()))),
                "start_paused" => parse_bool(value, "start_paused")
                    .map(|b| options.start_paused = Some((b, value.span()))),
                "timeout" => parse_timeout_lit(value).map(|t| options.timeout = Some(t)),
                "crate" => parse_crate(value).map(|p| options.krate = p),
                "keep" => parse_policy(value, "keep").map(|p| options.keep = Some(p)),
                "capture" => parse_policy(value, "capture").map(|p| options.capture = Some(p)),
                _ => unreachable!("key checked against VALID_KEYS"),
            };
            if let Err(error) = result {
                push(error);
            }
        }
        if let (Some((_, span)), flavor) = (&options.worker_threads, &options.flavor) {
            if !matches!(flavor, Some((Flavor::MultiThread, _))) {
                push(syn::Error::new(
                    *span,
                    "`worker_threads` needs `flavor = \"multi_thread\"`: the default current-thread runtime has no worker threads",
                ));
            }
        }
        if let (Some((true, span)), Some((Flavor::MultiThread, _))) =
            (&options.start_paused, &options.flavor)
        {
            push(syn::Error::new(
                *span,
                "`start_paused = true` needs the current-thread runtime (tokio pauses time only there): remove `flavor = \"multi_thread\"`",
            ));
        }
        match errors {
            Some(error) => Err(error),
            None => Ok(options),
        }
    }
}

fn parse_bool(value: &Expr, key: &str) -> syn::Result<bool> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        other => Err(syn::Error::new(
            other.span(),
            format!(
                "`{key}` expects `true` or `false`, like {}",
                example_for(key)
            ),
        )),
    }
}

fn parse_veth(meta: &Meta) -> syn::Result<VethOptions> {
    let mut veth = VethOptions {
        mtu: 1500,
        ipv4: None,
        ipv6: None,
    };
    let list = match meta {
        Meta::Path(_) => return Ok(veth),
        Meta::List(list) => list,
        Meta::NameValue(nv) => {
            return Err(syn::Error::new(
                nv.value.span(),
                "`veth` takes no value: write `veth` or `veth(mtu = 9000, ipv4 = \"198.51.100.2/24\", host_ipv4 = \"198.51.100.1/24\")`",
            ));
        }
    };
    let metas = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
    // Every mistake in the list is reported, not only the first.
    let mut errors: Option<syn::Error> = None;
    let mut push = |error: syn::Error| match &mut errors {
        Some(all) => all.combine(error),
        None => errors = Some(error),
    };
    let mut given: Vec<(String, Span, String)> = Vec::new();
    for meta in metas {
        let key_path = meta.path();
        let key = key_path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        if !VALID_VETH_KEYS.contains(&key.as_str()) {
            push(syn::Error::new(
                key_path.span(),
                format!(
                    "unknown `veth` argument `{}`; valid arguments are: {}",
                    quote::quote!(#key_path).to_string().replace(' ', ""),
                    quoted_list(VALID_VETH_KEYS)
                ),
            ));
            continue;
        }
        if given.iter().any(|(k, _, _)| *k == key) {
            push(syn::Error::new(
                key_path.span(),
                format!("`veth` argument `{key}` is given more than once"),
            ));
            continue;
        }
        let Meta::NameValue(nv) = &meta else {
            push(syn::Error::new(
                meta.span(),
                format!("`{key}` needs a value, like `mtu = 9000` or `ipv4 = \"198.51.100.2/24\"`"),
            ));
            continue;
        };
        if key == "mtu" {
            match parse_mtu(&nv.value) {
                Ok(mtu) => veth.mtu = mtu,
                Err(error) => push(error),
            }
            given.push((key, key_path.span(), String::new()));
        } else {
            match string_literal(&nv.value, &key) {
                Ok(lit) => given.push((key, lit.span(), lit.value())),
                Err(error) => push(error),
            }
        }
    }
    let find = |key: &str| given.iter().find(|(k, _, _)| k == key);
    for (ns_key, host_key) in [("ipv4", "host_ipv4"), ("ipv6", "host_ipv6")] {
        match (find(ns_key), find(host_key)) {
            (None, None) => {}
            (Some((_, span, _)), None) => push(syn::Error::new(
                *span,
                format!("`{ns_key}` needs `{host_key}` too: the host's end of the same subnet"),
            )),
            (None, Some((_, span, _))) => push(syn::Error::new(
                *span,
                format!("`{host_key}` needs `{ns_key}` too: the test's end of the same subnet"),
            )),
            (Some((_, ns_span, ns_text)), Some((_, host_span, host_text))) => {
                let ns = (ns_text.as_str(), *ns_span);
                let host = (host_text.as_str(), *host_span);
                let parsed = if ns_key == "ipv4" {
                    address_pair::<std::net::Ipv4Addr>(ns, host, 31, |a| u32::from(a).into(), 32)
                        .map(|pair| veth.ipv4 = Some(pair))
                } else {
                    address_pair::<std::net::Ipv6Addr>(ns, host, 127, u128::from, 128)
                        .map(|pair| veth.ipv6 = Some(pair))
                };
                if let Err(error) = parsed {
                    push(error);
                }
            }
        }
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(veth),
    }
}

/// `mtu = 9000`: an integer literal from 1280 (the IPv6 minimum) to 65535.
fn parse_mtu(value: &Expr) -> syn::Result<u32> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => {
            let mtu: u32 = int.base10_parse()?;
            if !(1280..=65535).contains(&mtu) {
                return Err(syn::Error::new(
                    int.span(),
                    "`mtu` must be between 1280 (the IPv6 minimum) and 65535",
                ));
            }
            Ok(mtu)
        }
        other => Err(syn::Error::new(
            other.span(),
            "`mtu` expects an integer literal, like `mtu = 9000`",
        )),
    }
}

/// Parses `"address/prefix"` for both ends and checks that they are two
/// different addresses of one subnet.
fn address_pair<A: std::str::FromStr + Copy + PartialEq + std::fmt::Display>(
    (ns_text, ns_span): (&str, Span),
    (host_text, host_span): (&str, Span),
    max_prefix: u8,
    to_bits: impl Fn(A) -> u128,
    width: u32,
) -> syn::Result<AddressPair<A>> {
    let parse = |text: &str, span: Span| -> syn::Result<(A, u8)> {
        let bad = || {
            syn::Error::new(
                span,
                format!(
                    "cannot parse \"{text}\": expected an address and a prefix length up to {max_prefix}, like \"198.51.100.2/24\" or \"2001:db8::2/64\""
                ),
            )
        };
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let address: A = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > max_prefix {
            return Err(bad());
        }
        Ok((address, prefix))
    };
    let (ns, ns_prefix) = parse(ns_text, ns_span)?;
    let (host, host_prefix) = parse(host_text, host_span)?;
    if ns_prefix != host_prefix {
        return Err(syn::Error::new(
            host_span,
            format!("the two ends need the same prefix length: /{ns_prefix} and /{host_prefix}"),
        ));
    }
    // Prefix 0 is handled apart: a shift by the full 128 bits would overflow.
    let network = |a: A| to_bits(a) >> (width - u32::from(ns_prefix));
    let same_subnet = ns_prefix == 0 || network(ns) == network(host);
    if !same_subnet || ns == host {
        return Err(syn::Error::new(
            host_span,
            format!("{host} and {ns} must be two different addresses of one /{ns_prefix} subnet"),
        ));
    }
    Ok(AddressPair {
        ns,
        host,
        prefix: ns_prefix,
    })
}

fn parse_policy(value: &Expr, key: &str) -> syn::Result<Policy> {
    let lit = string_literal(value, key)?;
    match lit.value().as_str() {
        "failed" => Ok(Policy::Failed),
        "all" => Ok(Policy::All),
        other => Err(syn::Error::new(
            lit.span(),
            format!("`{key}` is \"failed\" or \"all\", not \"{other}\""),
        )),
    }
}

fn example_for(key: &str) -> &'static str {
    match key {
        "keep" => "`keep = \"failed\"` or `keep = \"all\"`",
        "capture" => "`capture`, `capture = \"failed\"` or `capture = \"all\"`",
        "flavor" => "`flavor = \"current_thread\"` or `flavor = \"multi_thread\"`",
        "worker_threads" => "`worker_threads = 2`",
        "start_paused" => "`start_paused = true`",
        "timeout" => "`timeout = \"10s\"`",
        _ => "`crate = \"path::to::netns_test\"`",
    }
}

fn string_literal(value: &Expr, key: &str) -> syn::Result<syn::LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(syn::Error::new(
            other.span(),
            format!(
                "`{key}` expects a string literal, like {}",
                example_for(key)
            ),
        )),
    }
}

fn parse_flavor(value: &Expr) -> syn::Result<Flavor> {
    let lit = string_literal(value, "flavor")?;
    match lit.value().as_str() {
        "current_thread" => Ok(Flavor::CurrentThread),
        "multi_thread" => Ok(Flavor::MultiThread),
        other => Err(syn::Error::new(
            lit.span(),
            format!("unknown flavor \"{other}\"; expected \"current_thread\" or \"multi_thread\""),
        )),
    }
}

fn parse_worker_threads(value: &Expr) -> syn::Result<usize> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => {
            let n: usize = int.base10_parse()?;
            if n == 0 {
                Err(syn::Error::new(
                    int.span(),
                    "`worker_threads` must be at least 1",
                ))
            } else {
                Ok(n)
            }
        }
        other => Err(syn::Error::new(
            other.span(),
            "`worker_threads` expects an integer literal, like `worker_threads = 2`",
        )),
    }
}

fn parse_timeout_lit(value: &Expr) -> syn::Result<Timeout> {
    let lit = string_literal(value, "timeout")?;
    let text = lit.value();
    match parse_duration_millis(&text) {
        Ok(0) => Err(syn::Error::new(
            lit.span(),
            "`timeout` must be longer than zero",
        )),
        Ok(millis) => Ok(Timeout { text, millis }),
        Err(why) => Err(syn::Error::new(
            lit.span(),
            format!(
                "cannot parse timeout \"{text}\": {why}; write a number followed by ms, s, m or h, like \"500ms\", \"10s\" or \"1m30s\""
            ),
        )),
    }
}

/// Parses `"500ms"`, `"10s"`, `"1.5s"`, `"2m"`, `"1h"` and sums like `"1m30s"` into milliseconds.
pub fn parse_duration_millis(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".into());
    }
    let mut total: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("expected a number at \"{rest}\""));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("\"{}\" is not a number", &rest[..number_len]))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        let scale = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "" => return Err(format!("the number {number} has no unit")),
            other => return Err(format!("unknown unit \"{other}\"")),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err("it is too long".into());
    }
    Ok(total.round() as u64)
}

fn parse_crate(value: &Expr) -> syn::Result<syn::Path> {
    let lit = string_literal(value, "crate")?;
    lit.parse::<syn::Path>().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!(
                "`crate` expects a path, like \"::netns_test\"; got \"{}\"",
                lit.value()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_millis("10s"), Ok(10_000));
        assert_eq!(parse_duration_millis("500ms"), Ok(500));
        assert_eq!(parse_duration_millis("1.5s"), Ok(1_500));
        assert_eq!(parse_duration_millis("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_millis("2min"), Ok(120_000));
        assert_eq!(parse_duration_millis("1h"), Ok(3_600_000));
        assert!(parse_duration_millis("10").unwrap_err().contains("no unit"));
        assert!(
            parse_duration_millis("10x")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration_millis("s")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(parse_duration_millis("").is_err());
    }

    #[test]
    fn all_keys() {
        let o = Options::parse(quote!(
            flavor = "multi_thread",
            worker_threads = 3,
            timeout = "2s",
            crate = "my::netns"
        ))
        .unwrap();
        assert_eq!(o.flavor.unwrap().0, Flavor::MultiThread);
        assert_eq!(o.worker_threads.unwrap().0, 3);
        assert_eq!(o.timeout.unwrap().millis, 2_000);
        let krate = &o.krate;
        assert_eq!(quote!(#krate).to_string(), quote!(my::netns).to_string());
    }

    #[test]
    fn veth_arguments() {
        let bare = Options::parse(quote!(veth)).unwrap().veth.unwrap();
        assert_eq!((bare.mtu, bare.ipv4, bare.ipv6), (1500, None, None));
        let full = Options::parse(quote!(veth(
            mtu = 9000,
            ipv4 = "198.51.100.2/24",
            host_ipv4 = "198.51.100.1/24",
            ipv6 = "2001:db8:7::2/64",
            host_ipv6 = "2001:db8:7::1/64"
        )))
        .unwrap()
        .veth
        .unwrap();
        assert_eq!(full.mtu, 9000);
        let v4 = full.ipv4.unwrap();
        assert_eq!(
            (v4.ns.to_string(), v4.host.to_string(), v4.prefix),
            ("198.51.100.2".into(), "198.51.100.1".into(), 24)
        );
        assert_eq!(full.ipv6.unwrap().prefix, 64);
        assert!(
            error(quote!(veth(
                ipv4 = "198.51.100.2/24",
                host_ipv4 = "198.51.100.2/24"
            )))
            .contains("two different addresses")
        );
        assert!(
            error(quote!(veth(
                ipv4 = "198.51.100.2/24",
                host_ipv4 = "198.51.100.1/25"
            )))
            .contains("same prefix length")
        );
        assert!(
            error(quote!(veth(
                ipv4 = "198.51.100.2/32",
                host_ipv4 = "198.51.100.1/32"
            )))
            .contains("up to 31")
        );
        assert!(error(quote!(veth(host_ipv6 = "2001:db8::1/64"))).contains("needs `ipv6` too"));
        assert!(error(quote!(veth(mtu = 9000, mtu = 1500))).contains("more than once"));
    }

    #[test]
    fn every_veth_mistake_is_reported() {
        let errors = match Options::parse(quote!(veth(
            mtu = 80,
            colour = "red",
            ipv4 = "198.51.100.2/24",
            ipv6 = "2001:db8::2/64",
            host_ipv6 = "2001:db8:1::1/64"
        ))) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        };
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(errors[0].contains("between 1280"), "{errors:#?}");
        assert!(
            errors[1].contains("unknown `veth` argument `colour`"),
            "{errors:#?}"
        );
        assert!(
            errors[2].contains("`ipv4` needs `host_ipv4`"),
            "{errors:#?}"
        );
        assert!(
            errors[3].contains("two different addresses of one /64"),
            "{errors:#?}"
        );
    }

    fn error(args: proc_macro2::TokenStream) -> String {
        match Options::parse(args) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let unknown = error(quote!(veth_pair = 1));
        assert!(
            unknown.contains("unknown argument `veth_pair`"),
            "{unknown}"
        );
        assert!(
            unknown.contains(
                "`veth`, `flavor`, `worker_threads`, `start_paused`, `timeout`, `keep`, `capture`, `crate`"
            ),
            "{unknown}"
        );
        let twice = error(quote!(timeout = "1s", timeout = "2s"));
        assert!(twice.contains("more than once"), "{twice}");
        let orphan = error(quote!(worker_threads = 2));
        assert!(orphan.contains("multi_thread"), "{orphan}");
        let typ = error(quote!(timeout = 10));
        assert!(typ.contains("string literal"), "{typ}");
    }
}
