//! `CertStore`: a reload is all or nothing.

use certs::{CertError, CertStore};

use crate::common::{info, Ca};

/// A failed `replace` (duplicate names) keeps serving the previous certificates.
#[test]
fn replace_keeps_old_certs_on_error() {
    let ca = Ca::new();
    let store = CertStore::new(vec![info(&ca.leaf(&["a.example.com"]), "old")]).unwrap();

    let err = store
        .replace(vec![
            info(&ca.leaf(&["b.example.com"]), "new-1"),
            info(&ca.leaf(&["b.example.com"]), "new-2"),
        ])
        .unwrap_err();
    assert!(matches!(err, CertError::DuplicateName { .. }), "{err:?}");
    assert_eq!(store.names(), ["a.example.com"]);
    assert_eq!(store.snapshot().lookup(Some("a.example.com")).origin, "old");
}

/// Replacing with an empty list is an error and keeps the previous certificates.
#[test]
fn replace_with_nothing_keeps_old_certs() {
    let store = CertStore::new(vec![info(&Ca::new().leaf(&["a.example.com"]), "old")]).unwrap();
    assert!(matches!(store.replace(vec![]), Err(CertError::Empty)));
    assert_eq!(store.names(), ["a.example.com"]);
}

/// A good `replace` swaps the whole set: old names are gone, new ones served.
#[test]
fn replace_swaps_the_whole_set() {
    let ca = Ca::new();
    let store = CertStore::new(vec![info(&ca.leaf(&["a.example.com"]), "old")]).unwrap();
    store
        .replace(vec![info(&ca.leaf(&["*.example.com", "b.test"]), "new")])
        .unwrap();
    assert_eq!(store.names(), ["*.example.com", "b.test"]);
    assert_eq!(store.snapshot().lookup(Some("a.example.com")).origin, "new");
}

/// A snapshot taken before a reload keeps answering from the old set.
#[test]
fn snapshot_is_pinned_across_replace() {
    let ca = Ca::new();
    let store = CertStore::new(vec![info(&ca.leaf(&["a.example.com"]), "old")]).unwrap();
    let before = store.snapshot();
    store
        .replace(vec![info(&ca.leaf(&["a.example.com"]), "new")])
        .unwrap();
    assert_eq!(before.lookup(Some("a.example.com")).origin, "old");
    assert_eq!(store.snapshot().lookup(Some("a.example.com")).origin, "new");
}

/// A store cannot start empty.
#[test]
fn new_with_nothing_is_an_error() {
    assert!(matches!(CertStore::new(vec![]), Err(CertError::Empty)));
}
