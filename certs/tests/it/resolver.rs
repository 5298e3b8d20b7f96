//! SNI precedence, one rule per test: exact > wildcard (one label) > default.

use certs::{CertError, SniResolver};

use crate::common::{info, Ca};

/// A resolver over: "default" (first, not a name below), "exact" (api.example.com),
/// "wildcard" (*.example.com), "deep-wildcard" (*.eu.example.com).
fn resolver() -> SniResolver {
    let ca = Ca::new();
    SniResolver::new(vec![
        info(&ca.leaf(&["default.test"]), "default"),
        info(&ca.leaf(&["api.example.com"]), "exact"),
        info(&ca.leaf(&["*.example.com"]), "wildcard"),
        info(&ca.leaf(&["*.eu.example.com"]), "deep-wildcard"),
    ])
    .unwrap()
}

fn served(resolver: &SniResolver, sni: Option<&str>) -> String {
    resolver.lookup(sni).origin.clone()
}

/// Exact name beats a wildcard that also matches.
#[test]
fn exact_beats_wildcard() {
    assert_eq!(served(&resolver(), Some("api.example.com")), "exact");
}

/// A matching wildcard beats the default.
#[test]
fn wildcard_beats_default() {
    assert_eq!(served(&resolver(), Some("models.example.com")), "wildcard");
}

/// A wildcard covers exactly one label: not the apex, not two labels deep.
#[test]
fn wildcard_matches_one_label_only() {
    let resolver = SniResolver::new(vec![
        info(&Ca::new().leaf(&["default.test"]), "default"),
        info(&Ca::new().leaf(&["*.example.com"]), "wildcard"),
    ])
    .unwrap();
    assert_eq!(served(&resolver, Some("a.example.com")), "wildcard");
    assert_eq!(served(&resolver, Some("example.com")), "default");
    assert_eq!(served(&resolver, Some("a.b.example.com")), "default");
    assert_eq!(served(&resolver, Some(".example.com")), "default");
}

/// With nested wildcards the longer (more specific) one wins: `*.eu.example.com` for
/// `a.eu.example.com`, although `*.example.com` exists (it could not match two labels anyway).
#[test]
fn longest_wildcard_wins() {
    let resolver = resolver();
    assert_eq!(served(&resolver, Some("a.eu.example.com")), "deep-wildcard");
    assert_eq!(served(&resolver, Some("eu.example.com")), "wildcard");
}

/// No SNI (a client connecting by IP address) gets the default.
#[test]
fn no_sni_gets_default() {
    assert_eq!(served(&resolver(), None), "default");
}

/// An unknown name gets the default rather than a failed handshake.
#[test]
fn unknown_name_gets_default() {
    assert_eq!(served(&resolver(), Some("other.org")), "default");
}

/// Matching ignores ASCII case, on both the SNI and the certificate's SAN.
#[test]
fn matching_is_case_insensitive() {
    let ca = Ca::new();
    let resolver = SniResolver::new(vec![
        info(&ca.leaf(&["default.test"]), "default"),
        info(&ca.leaf(&["Mixed.Example.COM"]), "mixed"),
        info(&ca.leaf(&["*.Models.Example.com"]), "wildcard"),
    ])
    .unwrap();
    assert_eq!(served(&resolver, Some("MIXED.example.com")), "mixed");
    assert_eq!(served(&resolver, Some("mixed.example.com")), "mixed");
    assert_eq!(served(&resolver, Some("A.MODELS.example.com")), "wildcard");
}

/// A trailing dot (absolute name) is ignored.
#[test]
fn trailing_dot_is_ignored() {
    let resolver = resolver();
    assert_eq!(served(&resolver, Some("api.example.com.")), "exact");
    assert_eq!(served(&resolver, Some("models.example.com.")), "wildcard");
}

/// A certificate marked default is the default even when it is not first.
#[test]
fn marked_default_beats_first() {
    let ca = Ca::new();
    let resolver = SniResolver::new(vec![
        info(&ca.leaf(&["first.test"]), "first"),
        info(&ca.leaf(&["marked.test"]), "marked").into_default(),
    ])
    .unwrap();
    assert_eq!(served(&resolver, None), "marked");
    assert_eq!(served(&resolver, Some("unknown.test")), "marked");
    assert_eq!(resolver.default_cert().origin, "marked");
    assert_eq!(served(&resolver, Some("first.test")), "first");
}

/// Two certificates marked default is an error naming both.
#[test]
fn two_defaults_are_an_error() {
    let ca = Ca::new();
    let err = SniResolver::new(vec![
        info(&ca.leaf(&["a.test"]), "a").into_default(),
        info(&ca.leaf(&["b.test"]), "b").into_default(),
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "b: marked as default certificate, but a already is"
    );
}

/// The same exact name in two certificates is an error naming both (never "file order wins").
#[test]
fn duplicate_exact_name_is_an_error() {
    let ca = Ca::new();
    let err = SniResolver::new(vec![
        info(&ca.leaf(&["a.example.com", "b.example.com"]), "one"),
        info(&ca.leaf(&["B.example.com"]), "two"),
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "two: name b.example.com is already served by one"
    );
}

/// The same wildcard in two certificates is an error too.
#[test]
fn duplicate_wildcard_is_an_error() {
    let ca = Ca::new();
    let err = SniResolver::new(vec![
        info(&ca.leaf(&["*.example.com"]), "one"),
        info(&ca.leaf(&["*.example.com", "x.test"]), "two"),
    ])
    .unwrap_err();
    assert!(
        matches!(&err, CertError::DuplicateName { name, .. } if name == "*.example.com"),
        "{err:?}"
    );
}

/// An exact name and a wildcard covering it are not duplicates: that is the precedence rule.
#[test]
fn exact_and_covering_wildcard_coexist() {
    assert!(SniResolver::new(vec![
        info(&Ca::new().leaf(&["a.example.com"]), "exact"),
        info(&Ca::new().leaf(&["*.example.com"]), "wildcard"),
    ])
    .is_ok());
}

/// An empty list is an error: a TLS listener with no certificate cannot handshake.
#[test]
fn empty_list_is_an_error() {
    assert!(matches!(SniResolver::new(vec![]), Err(CertError::Empty)));
}

/// `names()` lists every exact and wildcard name, sorted.
#[test]
fn names_are_sorted_and_complete() {
    assert_eq!(
        resolver().names(),
        [
            "*.eu.example.com",
            "*.example.com",
            "api.example.com",
            "default.test"
        ]
    );
}
