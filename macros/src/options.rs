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
pub const VALID_KEYS: &[&str] = &["flavor", "worker_threads", "timeout", "crate"];

fn valid_keys_list() -> String {
    VALID_KEYS
        .iter()
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

/// The parsed arguments.
#[derive(Clone)]
pub struct Options {
    /// The tokens the user wrote, re-emitted when the attribute moves below another one.
    pub raw: proc_macro2::TokenStream,
    pub flavor: Option<(Flavor, Span)>,
    pub worker_threads: Option<(usize, Span)>,
    pub timeout: Option<Timeout>,
    pub krate: syn::Path,
}

impl Options {
    /// Parses the attribute's arguments.
    pub fn parse(args: proc_macro2::TokenStream) -> syn::Result<Options> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args.clone())?;
        let mut options = Options {
            raw: args,
            flavor: None,
            worker_threads: None,
            timeout: None,
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
                "timeout" => parse_timeout_lit(value).map(|t| options.timeout = Some(t)),
                "crate" => parse_crate(value).map(|p| options.krate = p),
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
        match errors {
            Some(error) => Err(error),
            None => Ok(options),
        }
    }
}

fn example_for(key: &str) -> &'static str {
    match key {
        "flavor" => "`flavor = \"current_thread\"` or `flavor = \"multi_thread\"`",
        "worker_threads" => "`worker_threads = 2`",
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
            unknown.contains("`flavor`, `worker_threads`, `timeout`, `crate`"),
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
