//! The catalog's rules across successive reads: what keeps its last good routes, what loses
//! them, who wins a contested host, and where revisions are reached.

use routes::{BuildOptions, Catalog, Contents, Endpoint, Outcome, RouteTable, SourceItem};
use std::collections::HashMap;

/// A ready Knative-mode InferenceService with one revision at 100 %.
fn isvc(name: &str, created: &str, revision: &str, ready: &str) -> String {
    format!(
        r#"apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {{name: {name}, namespace: ml, creationTimestamp: "{created}"}}
spec:
  predictor: {{model: {{modelFormat: {{name: sklearn}}, storageUri: "s3://m/{name}"}}}}
status:
  url: http://{name}.ml.example.com
  components:
    predictor:
      traffic: [{{latestRevision: true, percent: 100, revisionName: {revision}}}]
  conditions: [{{type: PredictorReady, status: "{ready}"}}]
"#
    )
}

fn file(path: &str, text: &str) -> SourceItem {
    SourceItem {
        path: path.into(),
        contents: routes::Contents::Text(Ok(text.into())),
    }
}

/// The revision each host's entry component sends everything to (these tests use one each).
fn revisions(table: &RouteTable) -> Vec<(String, String)> {
    table
        .hosts()
        .into_iter()
        .map(|(h, r)| {
            let revs: Vec<_> = r
                .entry
                .backends
                .iter()
                .map(|b| b.revision.as_str())
                .collect();
            (h.to_string(), revs.join(","))
        })
        .collect()
}

fn messages(outcome: &Outcome) -> Vec<String> {
    outcome.errors.iter().map(ToString::to_string).collect()
}

/// While an object flaps to not-ready its last good routes stay, also across several reads;
/// once ready again its new status is followed.
#[test]
fn not_ready_keeps_last_good_routes() {
    let mut c = Catalog::new(BuildOptions::default());
    let good = c.apply(&[file(
        "a.yaml",
        &isvc("m", "2024-01-01T00:00:00Z", "m-predictor-00001", "True"),
    )]);
    assert_eq!(
        revisions(&good.table),
        [("m.ml.example.com".into(), "m-predictor-00001".into())]
    );
    for _ in 0..2 {
        let flap = c.apply(&[file(
            "a.yaml",
            &isvc("m", "2024-01-01T00:00:00Z", "m-predictor-00002", "False"),
        )]);
        assert!(flap.errors.is_empty());
        assert_eq!(flap.table.hosts(), good.table.hosts());
        assert_eq!(c.routed_objects(), 1);
    }
    let back = c.apply(&[file(
        "a.yaml",
        &isvc("m", "2024-01-01T00:00:00Z", "m-predictor-00002", "True"),
    )]);
    assert_eq!(
        revisions(&back.table),
        [("m.ml.example.com".into(), "m-predictor-00002".into())]
    );
    assert_eq!(back.table.generation(), 4);
}

/// A file that fails to parse, or to be read, keeps the last good routes of every object it held;
/// other files still update.
#[test]
fn unparsable_file_keeps_last_good_routes() {
    let mut c = Catalog::new(BuildOptions::default());
    let two = format!(
        "{}---\n{}",
        isvc("a", "2024-01-01T00:00:00Z", "a-predictor-00001", "True"),
        isvc("b", "2024-01-01T00:00:00Z", "b-predictor-00001", "True")
    );
    let other = |rev: &str| {
        file(
            "other.yaml",
            &isvc("o", "2024-01-01T00:00:00Z", rev, "True"),
        )
    };
    let good = c.apply(&[file("ab.yaml", &two), other("o-predictor-00001")]);
    assert_eq!(good.table.len(), 3);
    let broken = c.apply(&[file("ab.yaml", "kind: [oops\n"), other("o-predictor-00002")]);
    assert_eq!(
        messages(&broken),
        ["ab.yaml: invalid YAML: did not find expected ',' or ']' at line 2 column 1, while parsing a flow sequence at line 1 column 7"]
    );
    assert_eq!(
        revisions(&broken.table),
        [
            (
                "a.ml.example.com".to_string(),
                "a-predictor-00001".to_string()
            ),
            ("b.ml.example.com".into(), "b-predictor-00001".into()),
            ("o.ml.example.com".into(), "o-predictor-00002".into()),
        ]
    );
    let unreadable = c.apply(&[
        SourceItem {
            path: "ab.yaml".into(),
            contents: routes::Contents::Text(Err("permission denied".into())),
        },
        other("o-predictor-00002"),
    ]);
    assert_eq!(
        messages(&unreadable),
        ["ab.yaml: cannot read: permission denied"]
    );
    assert_eq!(unreadable.table.hosts(), broken.table.hosts());
    assert_eq!(c.routed_objects(), 3);
}

/// An invalid object keeps its last good routes and does not hold back its neighbours.
#[test]
fn invalid_object_keeps_last_good_routes() {
    let mut c = Catalog::new(BuildOptions::default());
    let text = |a: &str, b: &str| {
        format!(
            "{}---\n{}",
            isvc("a", "2024-01-01T00:00:00Z", a, "True"),
            isvc("b", "2024-01-01T00:00:00Z", b, "True")
        )
    };
    c.apply(&[file(
        "ab.yaml",
        &text("a-predictor-00001", "b-predictor-00001"),
    )]);
    let out = c.apply(&[file("ab.yaml", &text("Bad_Revision", "b-predictor-00002"))]);
    assert_eq!(
        messages(&out),
        [
            r#"ab.yaml: ml/a: status.components.predictor.traffic[0].revisionName: "Bad_Revision" is not a valid DNS-1123 label"#
        ]
    );
    assert_eq!(
        revisions(&out.table),
        [
            (
                "a.ml.example.com".to_string(),
                "a-predictor-00001".to_string()
            ),
            ("b.ml.example.com".into(), "b-predictor-00002".into()),
        ]
    );
}

/// An object gone from a file that parsed loses its routes; a file gone takes its objects; a
/// stop annotation removes routes; an object that never was ready has none and is no error.
#[test]
fn objects_and_files_that_go_take_their_routes() {
    let mut c = Catalog::new(BuildOptions::default());
    let a = isvc("a", "2024-01-01T00:00:00Z", "a-predictor-00001", "True");
    let b = isvc("b", "2024-01-01T00:00:00Z", "b-predictor-00001", "True");
    let out = c.apply(&[
        file("ab.yaml", &format!("{a}---\n{b}")),
        file(
            "c.yaml",
            &isvc("c", "2024-01-01T00:00:00Z", "c-predictor-00001", "True"),
        ),
    ]);
    assert_eq!(out.table.len(), 3);
    let out = c.apply(&[
        file("ab.yaml", &a),
        file(
            "c.yaml",
            &isvc("c", "2024-01-01T00:00:00Z", "c-predictor-00001", "True"),
        ),
    ]);
    assert_eq!(revisions(&out.table).len(), 2, "b left ab.yaml");
    let out = c.apply(&[file("ab.yaml", &a)]);
    assert_eq!(
        revisions(&out.table),
        [("a.ml.example.com".into(), "a-predictor-00001".into())]
    );
    let stopped = a.replace(
        "creationTimestamp",
        "annotations: {serving.kserve.io/stop: \"true\"}, creationTimestamp",
    );
    let out = c.apply(&[file("ab.yaml", &stopped)]);
    assert!(out.table.is_empty() && out.errors.is_empty());
    assert_eq!(c.routed_objects(), 0);
    let out = c.apply(&[file(
        "ab.yaml",
        &isvc("n", "2024-01-01T00:00:00Z", "n-predictor-00001", "Unknown"),
    )]);
    assert!(out.table.is_empty() && out.errors.is_empty());
}

/// Two objects claiming one host: the older keeps it, the newer loses only that host and gets
/// an error naming the host and the winner. (The same object in two files is not a conflict
/// but a duplicate: `copies_of_one_object`.)
#[test]
fn host_conflicts_go_to_the_older_object() {
    let mut c = Catalog::new(BuildOptions::default());
    let old = isvc("a", "2023-01-01T00:00:00Z", "a-predictor-00001", "True").replace(
        "url: http://a.ml.example.com",
        "url: http://shared.ml.example.com\n  address: {url: http://a.ml.svc.cluster.local}",
    );
    let new = isvc("b", "2024-01-01T00:00:00Z", "b-predictor-00001", "True").replace(
        "url: http://b.ml.example.com",
        "url: http://shared.ml.example.com\n  address: {url: http://b.ml.svc.cluster.local}",
    );
    // The newer object comes first in path order; age decides, not order.
    let out = c.apply(&[file("1-new.yaml", &new), file("2-old.yaml", &old)]);
    assert_eq!(
        messages(&out),
        ["1-new.yaml: ml/b: host shared.ml.example.com is already routed to ml/a (from 2-old.yaml), which is older; this object does not get it"]
    );
    let hosts = revisions(&out.table);
    assert!(hosts.contains(&("shared.ml.example.com".into(), "a-predictor-00001".into())));
    assert!(hosts.contains(&("b.ml.svc.cluster.local".into(), "b-predictor-00001".into())));
    assert_eq!(c.routed_objects(), 2);
}

/// The same `namespace/name` twice (two dumps of one cluster, an old and a new file, or twice
/// in one file): the copy with the higher resourceVersion, then generation, is used whole, and
/// the other is reported. Never a mix: the older copy's hosts do not stay beside the newer's.
#[test]
fn copies_of_one_object() {
    let versioned = |rv: &str, generation: u32, revision: &str, tag_host: &str| {
        isvc("a", "2023-01-01T00:00:00Z", revision, "True")
            .replace(
                "creationTimestamp:",
                &format!("resourceVersion: \"{rv}\", generation: {generation}, creationTimestamp:"),
            )
            .replace(
                "traffic: [{latestRevision: true, percent: 100, revisionName",
                &format!("traffic: [{{tag: t, url: \"http://{tag_host}\", latestRevision: true, percent: 100, revisionName"),
            )
    };
    let old = versioned("900", 2, "a-predictor-00001", "old-tag.ml.example.com");
    let new = versioned("1000", 3, "a-predictor-00002", "new-tag.ml.example.com");
    for files in [
        vec![file("1-new.yaml", &new), file("2-old.yaml", &old)],
        vec![file("1-old.yaml", &old), file("2-new.yaml", &new)],
    ] {
        let mut c = Catalog::new(BuildOptions::default());
        let out = c.apply(&files);
        let (old_path, new_path) = if files[0].path == "1-new.yaml" {
            ("2-old.yaml", "1-new.yaml")
        } else {
            ("1-old.yaml", "2-new.yaml")
        };
        assert_eq!(
            messages(&out),
            [format!("{old_path}: ml/a: duplicate: another copy of this object (resourceVersion 1000, generation 3, in {new_path}) is used whole; this copy (resourceVersion 900, generation 2) is ignored")]
        );
        let hosts = revisions(&out.table);
        assert!(hosts.contains(&("a.ml.example.com".into(), "a-predictor-00002".into())));
        assert!(hosts.contains(&("new-tag.ml.example.com".into(), "a-predictor-00002".into())));
        assert!(
            !hosts.iter().any(|(h, _)| h == "old-tag.ml.example.com"),
            "{hosts:?}"
        );
        assert_eq!(c.routed_objects(), 1);
    }
    // resourceVersion decides before generation; a tie goes to generation.
    let same_rv = versioned("1000", 4, "a-predictor-00003", "g4.ml.example.com");
    let mut c = Catalog::new(BuildOptions::default());
    let out = c.apply(&[file("x.yaml", &same_rv), file("y.yaml", &new)]);
    assert!(
        revisions(&out.table).contains(&("a.ml.example.com".into(), "a-predictor-00003".into()))
    );
    assert_eq!(out.errors.len(), 1);
    // Both copies in one file: the same rule.
    let mut c = Catalog::new(BuildOptions::default());
    let out = c.apply(&[file("x.yaml", &format!("{old}---\n{new}"))]);
    assert_eq!(
        messages(&out),
        ["x.yaml: ml/a: duplicate: another copy of this object (resourceVersion 1000, generation 3, in x.yaml) is used whole; this copy (resourceVersion 900, generation 2) is ignored"]
    );
    assert!(
        revisions(&out.table).contains(&("a.ml.example.com".into(), "a-predictor-00002".into()))
    );
    // A newer copy that is not ready yet does not take the routes away: the newest copy that
    // has routes is used whole until it is ready.
    let not_ready = versioned("1100", 4, "a-predictor-00003", "nr.ml.example.com")
        .replace("status: \"True\"", "status: \"False\"");
    let mut c = Catalog::new(BuildOptions::default());
    let out = c.apply(&[file("a.yaml", &new), file("b.yaml", &not_ready)]);
    assert_eq!(
        messages(&out),
        ["b.yaml: ml/a: duplicate: another copy of this object (resourceVersion 1000, generation 3, in a.yaml) is used whole; this copy (resourceVersion 1100, generation 4) is ignored until it is ready (it has no routes yet)"]
    );
    assert!(
        revisions(&out.table).contains(&("a.ml.example.com".into(), "a-predictor-00002".into()))
    );
    // Only the kept copy's own errors are reported.
    let broken = versioned("800", 1, "a-predictor-00001", "b.ml.example.com")
        .replace("percent: 100", "percent: 50");
    let mut c = Catalog::new(BuildOptions::default());
    let out = c.apply(&[file("x.yaml", &format!("{broken}---\n{new}"))]);
    assert_eq!(out.errors.len(), 1, "{:?}", messages(&out));
    assert!(messages(&out)[0].contains("duplicate"));
    // Identical copies without versions: the first in path order, still reported.
    let mut c = Catalog::new(BuildOptions::default());
    let same = isvc("a", "2023-01-01T00:00:00Z", "a-predictor-00001", "True");
    let out = c.apply(&[file("x.yaml", &same), file("y.yaml", &same)]);
    assert_eq!(
        messages(&out),
        ["y.yaml: ml/a: duplicate: another copy of this object (no resourceVersion, in x.yaml) is used whole; this copy (no resourceVersion) is ignored"]
    );
    assert_eq!(out.table.len(), 1);
    assert_eq!(c.routed_objects(), 1);
}

/// An empty file (0 bytes, whitespace, only comments) is one being written or a mistake: an
/// error, and the objects it held keep their routes. An empty `kind: List` really is empty.
#[test]
fn empty_files_keep_their_objects() {
    let mut c = Catalog::new(BuildOptions::default());
    let good = isvc("m", "2024-01-01T00:00:00Z", "m-predictor-00001", "True");
    let first = c.apply(&[file("a.yaml", &good)]);
    assert_eq!(first.table.len(), 1);
    for empty in ["", "  \n\n", "# being written\n", "---\n"] {
        let out = c.apply(&[file("a.yaml", empty)]);
        assert_eq!(
            messages(&out),
            ["a.yaml: empty (no YAML document); its last good objects are kept (delete the file to remove them, or write a `kind: List` with `items: []`)"],
            "{empty:?}"
        );
        assert_eq!(out.table.hosts(), first.table.hosts(), "{empty:?}");
    }
    let out = c.apply(&[file("a.yaml", "apiVersion: v1\nkind: List\nitems: []\n")]);
    assert!(out.errors.is_empty() && out.table.is_empty());
    // A new empty file is reported too, and holds nothing.
    let out = c.apply(&[file("b.yaml", "")]);
    assert_eq!(out.errors.len(), 1);
}

/// Revisions are reached at `{revision}.{ns}.svc.cluster.local:80` unless an override names
/// them (`ns/revision`, else `ns/{isvc}-{component}`), or the fallback catches everything else.
#[test]
fn overrides_and_fallback() {
    let ep = |s: &str| Endpoint::parse(s).unwrap();
    let text = format!(
        "{}---\n{}---\n{}",
        isvc("a", "2024-01-01T00:00:00Z", "a-predictor-00001", "True"),
        isvc("b", "2024-01-01T00:00:00Z", "b-predictor-00001", "True"),
        isvc("c", "2024-01-01T00:00:00Z", "c-predictor-00001", "True"),
    );
    let endpoints = |options: BuildOptions| {
        let out = Catalog::new(options).apply(&[file("f.yaml", &text)]);
        out.table
            .hosts()
            .into_iter()
            .map(|(h, r)| {
                (
                    h.to_string(),
                    r.entry.backends[0]
                        .endpoints
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        endpoints(BuildOptions::default())[0],
        (
            "a.ml.example.com".into(),
            vec!["a-predictor-00001.ml.svc.cluster.local:80".to_string()]
        )
    );
    let options = BuildOptions {
        overrides: HashMap::from([
            (
                "ml/a-predictor-00001".to_string(),
                vec![ep("10.0.0.1:8080"), ep("10.0.0.2:8080")],
            ),
            ("ml/b-predictor".to_string(), vec![ep("127.0.0.1:9001")]),
            (
                "other/c-predictor-00001".to_string(),
                vec![ep("127.0.0.1:1")],
            ),
        ]),
        fallback: Some(vec![ep("127.0.0.1:9000")]),
        path_template: None,
    };
    assert_eq!(
        endpoints(options),
        [
            (
                "a.ml.example.com".to_string(),
                vec!["10.0.0.1:8080".to_string(), "10.0.0.2:8080".into()]
            ),
            ("b.ml.example.com".into(), vec!["127.0.0.1:9001".into()]),
            ("c.ml.example.com".into(), vec!["127.0.0.1:9000".into()]),
        ]
    );
}

/// Raw-mode components are overridden by their Service name, `ns/{isvc}-{component}`.
#[test]
fn raw_mode_override_uses_the_service_name() {
    let text = isvc("r", "2024-01-01T00:00:00Z", "unused", "True").replace(
        "creationTimestamp",
        "annotations: {serving.kserve.io/deploymentMode: Standard}, creationTimestamp",
    );
    let options = BuildOptions {
        overrides: HashMap::from([(
            "ml/r-predictor".to_string(),
            vec![Endpoint::parse("127.0.0.1:7000").unwrap()],
        )]),
        fallback: None,
        path_template: None,
    };
    let out = Catalog::new(options).apply(&[file("r.yaml", &text)]);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let route = out.table.lookup("r.ml.example.com").unwrap();
    let b = &route.entry.backends[0];
    assert_eq!(
        (b.revision.as_str(), b.weight, b.knative),
        ("r-predictor", 100, false)
    );
    assert_eq!(b.endpoints, [Endpoint::parse("127.0.0.1:7000").unwrap()]);
}

/// Generations count applies from 1, whatever happened.
#[test]
fn generation_counts_applies() {
    let mut c = Catalog::new(BuildOptions::default());
    assert_eq!(c.apply(&[]).table.generation(), 1);
    assert_eq!(c.apply(&[file("x.yaml", "{")]).table.generation(), 2);
}

/// A reload parses only the files whose text changed. What an unchanged file reports stays
/// the same (its errors again, its invalid object still on its last good routes), and a file
/// put back to an earlier text is read as that text.
#[test]
fn unchanged_files_keep_their_routes_and_errors() {
    let mut c = Catalog::new(BuildOptions::default());
    let good = isvc("a", "2024-01-01T00:00:00Z", "a-predictor-00001", "True");
    let bad = isvc("a", "2024-01-01T00:00:00Z", "Bad_Revision", "True");
    let other = isvc("b", "2024-01-01T00:00:00Z", "b-predictor-00001", "True");
    c.apply(&[file("a.yaml", &good), file("b.yaml", &other)]);
    let first = c.apply(&[file("a.yaml", &bad), file("b.yaml", &other)]);
    assert_eq!(first.errors.len(), 1, "{:?}", messages(&first));
    for _ in 0..3 {
        let again = c.apply(&[file("a.yaml", &bad), file("b.yaml", &other)]);
        assert_eq!(messages(&again), messages(&first));
        assert_eq!(revisions(&again.table), revisions(&first.table));
    }
    let broken = c.apply(&[file("a.yaml", "a: [unclosed"), file("b.yaml", &other)]);
    assert_eq!(revisions(&broken.table), revisions(&first.table));
    let back = c.apply(&[file("a.yaml", &good), file("b.yaml", &other)]);
    assert!(back.errors.is_empty(), "{:?}", messages(&back));
    let back = c.apply(&[file("a.yaml", &bad), file("b.yaml", &other)]);
    assert_eq!(messages(&back), messages(&first));
}

/// Many changed files are read on several threads; the outcome (table, error order, who wins a
/// contested host) must be exactly what one thread gives, file by file in path order.
#[test]
fn many_files_read_in_parallel_give_the_sequential_outcome() {
    let objects: Vec<String> = (0..40)
        .map(|i| {
            // Every fifth object claims a host an older one already has; every seventh is broken.
            let name = format!("m{i}");
            let text = isvc(
                &name,
                &format!("2024-01-{:02}T00:00:00Z", 1 + i % 28),
                &format!("{name}-predictor-00001"),
                "True",
            );
            let text = if i % 5 == 4 {
                text.replace(&format!("url: http://{name}.ml"), "url: http://shared.ml")
            } else {
                text
            };
            if i % 7 == 6 {
                text.replace("percent: 100", "percent: 101")
            } else {
                text
            }
        })
        .collect();
    let files: Vec<SourceItem> = objects
        .iter()
        .enumerate()
        .map(|(i, t)| file(&format!("f{i:02}.yaml"), t))
        .collect();
    let mut parallel = Catalog::new(BuildOptions::default());
    let all = parallel.apply(&files);
    let mut sequential = Catalog::new(BuildOptions::default());
    let mut one_by_one = None;
    for n in 1..=files.len() {
        // Fewer changed files than the parallel threshold each time: one thread.
        one_by_one = Some(sequential.apply(&files[..n]));
    }
    let one_by_one = one_by_one.unwrap();
    assert!(all.errors.len() > 10, "{:?}", messages(&all));
    assert_eq!(messages(&all), messages(&one_by_one));
    assert_eq!(revisions(&all.table), revisions(&one_by_one.table));
    assert_eq!(parallel.routed_objects(), sequential.routed_objects());
}

/// KServe's `pathTemplate`: every InferenceService is also reached under its prefix, which ends
/// on a segment boundary (`/serving/ml/m-2` never matches `m`), the longest prefix first; the
/// prefix's length is what the upstream request drops.
#[test]
fn path_template_routes() {
    let template = routes::PathTemplate::parse("/serving/{{ .Namespace }}/{{.Name}}/").unwrap();
    let mut c = Catalog::new(BuildOptions {
        path_template: Some(template),
        ..Default::default()
    });
    let out = c.apply(&[
        file(
            "m.yaml",
            &isvc("m", "2024-01-01T00:00:00Z", "m-predictor-00001", "True"),
        ),
        file(
            "m2.yaml",
            &isvc("m-2", "2024-01-01T00:00:00Z", "m-2-predictor-00001", "True"),
        ),
    ]);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let t = &out.table;
    let hit = |path: &str| {
        t.lookup_path(path)
            .map(|(r, strip)| (r.isvc.name.clone(), path[strip..].to_string()))
    };
    assert_eq!(
        hit("/serving/ml/m/v1/models/m:predict"),
        Some(("m".into(), "/v1/models/m:predict".into()))
    );
    assert_eq!(hit("/serving/ml/m"), Some(("m".into(), "".into())));
    assert_eq!(hit("/serving/ml/m/"), Some(("m".into(), "/".into())));
    assert_eq!(hit("/serving/ml/m-2/x"), Some(("m-2".into(), "/x".into())));
    for miss in [
        "/serving/ml/mx",
        "/serving/ml",
        "/serving/ml/",
        "/",
        "/m",
        "/other/ml/m/x",
    ] {
        assert_eq!(hit(miss), None, "{miss}");
    }
    // Hosts are unchanged, and the prefixes show apart from them.
    assert!(t.lookup("m.ml.example.com").is_some());
    assert_eq!(
        t.paths().into_keys().collect::<Vec<_>>(),
        ["/serving/ml/m", "/serving/ml/m-2"]
    );
    assert!(t.hosts().keys().all(|h| !h.starts_with('/')));
}

/// What a pathTemplate may be: a plain path naming both the namespace and the name, each a
/// whole segment (so that no two objects render the same prefix).
#[test]
fn path_templates() {
    let ok = |t: &str| routes::PathTemplate::parse(t).map(|t| t.render("ns", "m"));
    assert_eq!(
        ok("/serving/{{ .Namespace }}/{{ .Name }}").as_deref(),
        Ok("/serving/ns/m")
    );
    assert_eq!(
        ok("/models/{{.Name}}/in/{{.Namespace}}/").as_deref(),
        Ok("/models/m/in/ns")
    );
    for bad in [
        "serving/{{ .Namespace }}/{{ .Name }}",
        "/serving/{{ .Name }}",
        "/serving/{{ .Namespace }}/{{ .Name",
        "/serving/{{ .Host }}/{{ .Name }}/{{ .Namespace }}",
        "/serving//{{ .Namespace }}/{{ .Name }}",
        "/a/../{{ .Namespace }}/{{ .Name }}",
        "/a b/{{ .Namespace }}/{{ .Name }}",
        "/a%2F/{{ .Namespace }}/{{ .Name }}",
        "/serving/{{ .Namespace }}{{ .Name }}",
        "/serving/{{ .Namespace }}/m-{{ .Name }}",
        "/{{.Name}}-in-{{.Namespace}}",
    ] {
        assert!(ok(bad).is_err(), "{bad}");
    }
}

/// A file named in `keep` (still being written) keeps what its last read gave, routes and
/// errors alike, whatever else changes; one never read before stays absent.
#[test]
fn files_being_written_keep_their_last_read() {
    let mut c = Catalog::new(BuildOptions::default());
    let a = isvc("a", "2024-01-01T00:00:00Z", "a-predictor-00001", "True");
    let b = isvc("b", "2024-01-01T00:00:00Z", "b-predictor-00001", "True");
    let first = c.apply(&[file("a.yaml", &a), file("b.yaml", &b)]);
    assert_eq!(first.table.len(), 2);
    let b2 = isvc("b", "2024-01-01T00:00:00Z", "b-predictor-00002", "True");
    let out = c.apply_source(
        "",
        &[file("b.yaml", &b2)],
        &["a.yaml".into(), "new.yaml".into()],
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let hosts = revisions(&out.table);
    assert!(hosts.contains(&("a.ml.example.com".into(), "a-predictor-00001".into())));
    assert!(hosts.contains(&("b.ml.example.com".into(), "b-predictor-00002".into())));
    assert_eq!(out.table.len(), 2);
    // Settled and gone: the kept state goes with it.
    let out = c.apply(&[file("b.yaml", &b2)]);
    assert_eq!(out.table.len(), 1);
}

/// An object from the Kubernetes API, as the watcher hands it over.
fn api_object(name: &str, created: &str, revision: &str, ready: &str, rv: &str) -> SourceItem {
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(&isvc(name, created, revision, ready)).unwrap();
    value["metadata"]["resourceVersion"] = rv.into();
    SourceItem {
        path: format!("api:/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/{name}"),
        contents: routes::Contents::Object {
            value: std::sync::Arc::new(value),
            version: rv.into(),
        },
    }
}

/// Two sources read apart: a read of one keeps the other's objects and its errors; objects go
/// when their own source no longer has them; a host both claim stays with the older object and
/// the other is told, whichever source was read last.
#[test]
fn sources_are_read_apart() {
    let mut c = Catalog::new(BuildOptions::default());
    let dir = [
        file(
            "static.yaml",
            &isvc("s", "2024-01-01T00:00:00Z", "s-predictor-00001", "True"),
        ),
        file("broken.yaml", "kind: [oops\n"),
    ];
    c.apply_source("directory", &dir, &[]);
    let api = [api_object(
        "a",
        "2024-02-01T00:00:00Z",
        "a-predictor-00001",
        "True",
        "10",
    )];
    let out = c.apply_source("kubernetes", &api, &[]);
    assert_eq!(
        revisions(&out.table),
        [
            (
                "a.ml.example.com".to_string(),
                "a-predictor-00001".to_string()
            ),
            (
                "s.ml.example.com".to_string(),
                "s-predictor-00001".to_string()
            ),
        ]
    );
    // The directory's error is still reported after a read of the API.
    assert_eq!(out.errors.len(), 1, "{:?}", messages(&out));
    assert!(messages(&out)[0].starts_with("broken.yaml: invalid YAML"));

    // An update from the API (new resourceVersion) is followed; an unchanged one is kept.
    let out = c.apply_source(
        "kubernetes",
        &[api_object(
            "a",
            "2024-02-01T00:00:00Z",
            "a-predictor-00002",
            "True",
            "11",
        )],
        &[],
    );
    assert!(
        revisions(&out.table).contains(&("a.ml.example.com".into(), "a-predictor-00002".into()))
    );

    // A newer object from the API claiming the directory's host does not get it, and says so
    // with its API path.
    let taker = {
        let mut item = api_object(
            "s2",
            "2024-03-01T00:00:00Z",
            "s2-predictor-00001",
            "True",
            "12",
        );
        let Contents::Object { value, .. } = &mut item.contents else {
            unreachable!()
        };
        std::sync::Arc::make_mut(value)["status"]["url"] = "http://s.ml.example.com".into();
        item
    };
    let out = c.apply_source("kubernetes", &[taker], &[]);
    assert_eq!(
        revisions(&out.table),
        [(
            "s.ml.example.com".to_string(),
            "s-predictor-00001".to_string()
        )]
    );
    let m = messages(&out);
    assert!(
        m.iter().any(|e| e.starts_with("api:/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/s2: ml/s2: host s.ml.example.com is already routed to ml/s (from static.yaml)")),
        "{m:?}"
    );

    // The API's objects gone: only the directory's remain.
    let out = c.apply_source("kubernetes", &[], &[]);
    assert_eq!(
        revisions(&out.table),
        [(
            "s.ml.example.com".to_string(),
            "s-predictor-00001".to_string()
        )]
    );
    // And a read of the directory leaves the API's (now none) alone.
    let out = c.apply_source("directory", &dir[..1], &[]);
    assert!(out.errors.is_empty(), "{:?}", messages(&out));
}
