//! The quickstart's demo model server: a tiny deterministic iris classifier behind the KServe v1
//! and v2 ("open inference protocol") JSON endpoints.
//!
//! It exists so a newcomer can run the gateway on loopback and see predictions, canary splits and
//! explainer routing without a cluster or a Python runtime. One server plays every revision: the
//! gateway names the revision in `Knative-Serving-Revision` on each upstream request, and every
//! response carries it back in `x-demo-revision`, so a curl shows which revision answered.
//!
//! The protocol is the pure [`respond`] function (method, path, revision, body in; status and JSON
//! out), so the tests check every shape without sockets; [`serve`] only adds the accept loop and
//! the 1 MiB request body limit.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Request bodies above this size are refused with 413; the demo has no use for more.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The iris features, in the order every instance lists them.
pub const FEATURES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

/// Class labels, indexed by the prediction.
pub const CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];

/// The one model version the v2 endpoints answer for.
const MODEL_VERSION: &str = "1";

const REVISION_HEADER: &str = "knative-serving-revision";
const NAMESPACE_HEADER: &str = "knative-serving-namespace";
const DEMO_REVISION_HEADER: &str = "x-demo-revision";

/// The numeric v2 datatypes an input tensor may declare; the values arrive as JSON numbers.
const NUMERIC_DATATYPES: [&str; 11] = [
    "FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
    "UINT64",
];

/// Serves the demo model protocol on `listener` until the task is dropped.
///
/// Connections live in a `JoinSet` owned by this future, so dropping (or aborting) the task that
/// runs it also closes every open connection.
pub async fn serve(listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream));
                }
                Err(err) => {
                    // Usually out of file descriptors: back off rather than spin on the error.
                    tracing::warn!(error = %err, "demo model server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream) {
    let io = TokioIo::new(stream);
    if let Err(err) = http1::Builder::new()
        .serve_connection(io, service_fn(handle))
        .await
    {
        // Clients hanging up mid-request is normal for a demo; worth a debug line, not a warning.
        tracing::debug!(error = %err, "demo model server: connection ended with an error");
    }
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let caller = Caller::from_headers(&parts.headers);
    let reply = match read_body(&parts.headers, body).await {
        Ok(bytes) => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or("?"));
            respond(
                &parts.method,
                parts.uri.path(),
                &caller,
                content_type,
                &bytes,
            )
        }
        Err(reply) => reply,
    };
    Ok(reply.into_response(&caller))
}

/// Reads the whole request body, refusing anything over [`MAX_BODY_BYTES`].
async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<Bytes, Reply> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {err}"),
        )),
    }
}

fn too_large() -> Reply {
    Reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// Who the gateway says is answering: the Knative revision and namespace headers.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `Knative-Serving-Revision`, if present and printable.
    pub revision: Option<String>,
    /// `Knative-Serving-Namespace`, if present and printable.
    pub namespace: Option<String>,
}

impl Caller {
    fn from_headers(headers: &HeaderMap) -> Caller {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        Caller {
            revision: text(REVISION_HEADER),
            namespace: text(NAMESPACE_HEADER),
        }
    }

    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("unknown")
    }
}

/// A response before it meets the wire: status, JSON body, and the `allow` header for a 405.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub allow: Option<&'static str>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            allow: None,
        }
    }

    fn error(status: StatusCode, message: impl Into<String>) -> Reply {
        Reply {
            status,
            body: json!({ "error": message.into() }),
            allow: None,
        }
    }

    fn into_response(self, caller: &Caller) -> Response<Full<Bytes>> {
        // Serialising a `Value` cannot fail (its keys are strings); an empty body is a safe
        // fallback that keeps this path free of panics.
        let mut body = serde_json::to_vec(&self.body).unwrap_or_default();
        body.push(b'\n');
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // The revision came from a header value that was valid text, so it is a valid value.
        let revision = HeaderValue::from_str(caller.revision())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        headers.insert(DEMO_REVISION_HEADER, revision);
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// The endpoints the demo knows, parsed from the path alone.
#[derive(Debug, Clone, PartialEq)]
enum Route<'a> {
    Hello,
    V1Ready(&'a str),
    V1Predict(&'a str),
    V1Explain(&'a str),
    V2Server,
    V2Live,
    V2Ready,
    V2Metadata(ModelRef<'a>),
    V2ModelReady(ModelRef<'a>),
    V2Infer(ModelRef<'a>),
}

/// A v2 model path: the name and, for `/versions/{v}/...` paths, the version asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ModelRef<'a> {
    name: &'a str,
    version: Option<&'a str>,
}

impl Route<'_> {
    /// The one method the endpoint answers, as its `allow` header spells it.
    fn method(&self) -> &'static str {
        match self {
            Route::V1Predict(_) | Route::V1Explain(_) | Route::V2Infer(_) => "POST",
            _ => "GET",
        }
    }
}

fn parse_route(path: &str) -> Option<Route<'_>> {
    match path {
        "/" => return Some(Route::Hello),
        "/v2" => return Some(Route::V2Server),
        "/v2/health/live" => return Some(Route::V2Live),
        "/v2/health/ready" => return Some(Route::V2Ready),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/v1/models/") {
        let (name, verb) = match rest.split_once(':') {
            None => (rest, None),
            Some((name, verb)) => (name, Some(verb)),
        };
        if name.is_empty() || name.contains('/') {
            return None;
        }
        return match verb {
            None => Some(Route::V1Ready(name)),
            Some("predict") => Some(Route::V1Predict(name)),
            Some("explain") => Some(Route::V1Explain(name)),
            Some(_) => None,
        };
    }
    let rest = path.strip_prefix("/v2/models/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (name, version, tail) = match segments.as_slice() {
        [name, "versions", version, tail @ ..] => (*name, Some(*version), tail),
        [name, tail @ ..] => (*name, None, tail),
        [] => return None,
    };
    if name.is_empty() || version.is_some_and(str::is_empty) {
        return None;
    }
    let model = ModelRef { name, version };
    match tail {
        [] => Some(Route::V2Metadata(model)),
        ["ready"] => Some(Route::V2ModelReady(model)),
        ["infer"] => Some(Route::V2Infer(model)),
        _ => None,
    }
}

/// Answers one demo request. Pure: everything it needs is in its arguments.
pub fn respond(
    method: &Method,
    path: &str,
    caller: &Caller,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let Some(route) = parse_route(path) else {
        return Reply::error(StatusCode::NOT_FOUND, format!("no demo endpoint at {path}"));
    };
    let allowed = route.method();
    if method.as_str() != allowed {
        let mut reply = Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} answers {allowed}, not {method}"),
        );
        reply.allow = Some(allowed);
        return reply;
    }
    if let Route::V2Metadata(model) | Route::V2ModelReady(model) | Route::V2Infer(model) = route {
        if let Some(version) = model.version.filter(|v| *v != MODEL_VERSION) {
            return Reply::error(
                StatusCode::NOT_FOUND,
                format!(
                    "model {} has no version {version}; the demo serves version {MODEL_VERSION}",
                    model.name
                ),
            );
        }
    }
    if let Some(refusal) = kserve_content_type(&route, content_type) {
        return refusal;
    }
    match route {
        Route::Hello => Reply::ok(json!({
            "message": "modelgate demo model server",
            "revision": caller.revision(),
            "namespace": caller.namespace,
        })),
        Route::V1Ready(name) => Reply::ok(json!({ "name": name, "ready": true })),
        Route::V1Predict(_) => match parse_instances(body) {
            Ok(rows) => Reply::ok(json!({
                "predictions": rows.iter().map(|row| classify(*row)).collect::<Vec<_>>(),
            })),
            Err(message) => Reply::error(StatusCode::BAD_REQUEST, message),
        },
        Route::V1Explain(_) => match parse_instances(body) {
            Ok(rows) => Reply::ok(json!({
                "explanations": rows.iter().map(|row| explain(*row)).collect::<Vec<_>>(),
            })),
            Err(message) => Reply::error(StatusCode::BAD_REQUEST, message),
        },
        Route::V2Server => Reply::ok(json!({
            "name": "modelgate-demo",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": [],
        })),
        Route::V2Live => Reply::ok(json!({ "live": true })),
        Route::V2Ready => Reply::ok(json!({ "ready": true })),
        Route::V2Metadata(model) => Reply::ok(metadata(model.name)),
        Route::V2ModelReady(model) => Reply::ok(json!({ "name": model.name, "ready": true })),
        Route::V2Infer(model) => match parse_infer(body) {
            Ok(request) => Reply::ok(infer_response(model, &request)),
            Err(message) => Reply::error(StatusCode::BAD_REQUEST, message),
        },
    }
}

/// The content types KServe's model server decodes as JSON on v1 (`dataplane.py`'s
/// `JSON_HEADERS`, compared as whole strings: `application/json; charset=utf-8` is not one).
const KSERVE_JSON_HEADERS: [&str; 4] = [
    "application/json",
    "application/cloudevents+json",
    "application/ld+json",
    "application/octet-stream",
];

/// What KServe's own server (v0.20, FastAPI 0.136) answers a body it will not read as JSON, so
/// that a client which works against the demo works against a real model: on v1, a body with
/// another content type (what `curl -d` sends without `-H 'Content-Type: application/json'`)
/// reaches the model as bytes and fails there with a 500; no content type at all is read as
/// JSON. On v2, FastAPI reads only a JSON content type (`application/json` or `+json`, with
/// parameters), and anything else, none included, is a 400.
fn kserve_content_type(route: &Route<'_>, content_type: Option<&str>) -> Option<Reply> {
    match route {
        Route::V1Predict(_) | Route::V1Explain(_) => match content_type {
            Some(ct) if !KSERVE_JSON_HEADERS.contains(&ct) => Some(Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "TypeError : byte indices must be integers or slices, not str",
            )),
            _ => None,
        },
        Route::V2Infer(_) => {
            let json = content_type.is_some_and(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
            (!json).then(|| {
                Reply::error(
                    StatusCode::BAD_REQUEST,
                    "received byte inputs, but the'inference-header-content-length' header is missing.",
                )
            })
        }
        _ => None,
    }
}

/// The demo's decision tree, the classic two-split tree on the petal measurements.
pub fn classify(features: [f64; 4]) -> i64 {
    let [_, _, petal_length, petal_width] = features;
    if petal_length < 2.45 {
        0
    } else if petal_width < 1.75 {
        1
    } else {
        2
    }
}

/// Explains one prediction: the rule of the leaf it reached and a weight per feature, shared
/// equally among the features the path tested (the sepal features are never tested).
fn explain(features: [f64; 4]) -> Value {
    let class = classify(features);
    let (rule, weights): (&str, [f64; 4]) = match class {
        0 => ("petal_length < 2.45", [0.0, 0.0, 1.0, 0.0]),
        1 => (
            "petal_length >= 2.45 and petal_width < 1.75",
            [0.0, 0.0, 0.5, 0.5],
        ),
        _ => (
            "petal_length >= 2.45 and petal_width >= 1.75",
            [0.0, 0.0, 0.5, 0.5],
        ),
    };
    let feature_weights: Map<String, Value> = FEATURES
        .iter()
        .zip(weights)
        .map(|(name, weight)| ((*name).to_owned(), json!(weight)))
        .collect();
    json!({
        "prediction": class,
        "class": CLASSES.get(class as usize).copied().unwrap_or("unknown"),
        "rule": rule,
        "feature_weights": feature_weights,
    })
}

fn metadata(name: &str) -> Value {
    json!({
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": "modelgate_demo",
        "inputs": [{ "name": "input-0", "datatype": "FP32", "shape": [-1, 4] }],
        "outputs": [{ "name": "output-0", "datatype": "INT64", "shape": [-1] }],
    })
}

fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|err| format!("request body is not valid JSON: {err}"))
}

/// Reads a v1 body: `{"instances": [[f, f, f, f], ...]}`.
fn parse_instances(body: &[u8]) -> Result<Vec<[f64; 4]>, String> {
    let value = parse_json(body)?;
    let instances = value
        .get("instances")
        .and_then(Value::as_array)
        .ok_or("expected a JSON object with an \"instances\" array")?;
    instances
        .iter()
        .enumerate()
        .map(|(index, instance)| {
            let row = instance.as_array().map(Vec::as_slice).unwrap_or_default();
            let numbers: Vec<f64> = row.iter().filter_map(Value::as_f64).collect();
            match <[f64; 4]>::try_from(numbers) {
                Ok(features) if row.len() == 4 => Ok(features),
                _ => Err(format!(
                    "instances[{index}]: expected 4 numbers [{}], got {instance}",
                    FEATURES.join(", ")
                )),
            }
        })
        .collect()
}

/// A v2 inference request, reduced to what the demo uses.
#[derive(Debug, Clone, PartialEq)]
struct InferRequest {
    id: Option<String>,
    rows: Vec<[f64; 4]>,
}

/// Reads a v2 body: one numeric input tensor of shape `[N, 4]`, data flat or nested.
fn parse_infer(body: &[u8]) -> Result<InferRequest, String> {
    let value = parse_json(body)?;
    let request = value
        .as_object()
        .ok_or("expected a JSON object with an \"inputs\" array")?;
    let id = match request.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(other) => return Err(format!("id: expected a string, got {other}")),
    };
    let inputs = request
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("expected a JSON object with an \"inputs\" array")?;
    let [input] = inputs.as_slice() else {
        return Err(format!(
            "inputs: expected exactly one input tensor of shape [N, 4], got {}",
            inputs.len()
        ));
    };
    let datatype = input
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or("inputs[0].datatype: missing; use \"FP32\"")?;
    if !NUMERIC_DATATYPES.contains(&datatype) {
        return Err(format!(
            "inputs[0].datatype: {datatype} is not a numeric type; use \"FP32\""
        ));
    }
    let shape = input.get("shape").unwrap_or(&Value::Null);
    let batch = match shape.as_array().map(Vec::as_slice) {
        Some([batch, width]) if width.as_u64() == Some(4) => batch
            .as_u64()
            .and_then(|batch| usize::try_from(batch).ok())
            .filter(|batch| batch.checked_mul(4).is_some()),
        _ => None,
    }
    .ok_or_else(|| format!("inputs[0].shape: expected [N, 4], got {shape}"))?;
    let data = input
        .get("data")
        .ok_or("inputs[0].data: missing; expected an array of numbers")?;
    let mut flat = Vec::new();
    flatten(data, &mut flat)?;
    if flat.len() != batch * 4 {
        return Err(format!(
            "inputs[0].data: shape [{batch}, 4] needs {} numbers, got {}",
            batch * 4,
            flat.len()
        ));
    }
    let rows = flat
        .chunks_exact(4)
        .map(|chunk| [chunk[0], chunk[1], chunk[2], chunk[3]])
        .collect();
    Ok(InferRequest { id, rows })
}

/// Flattens nested arrays of numbers in row-major order. The depth is bounded by serde_json's
/// recursion limit on parsing, so the recursion here is too.
fn flatten(value: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, out)),
        Value::Number(number) => {
            out.push(number.as_f64().unwrap_or(f64::NAN));
            Ok(())
        }
        other => Err(format!(
            "inputs[0].data: expected numbers, got {other} after {} numbers",
            out.len()
        )),
    }
}

fn infer_response(model: ModelRef<'_>, request: &InferRequest) -> Value {
    let predictions: Vec<i64> = request.rows.iter().map(|row| classify(*row)).collect();
    let mut response = json!({
        "model_name": model.name,
        "outputs": [{
            "name": "output-0",
            "shape": [predictions.len()],
            "datatype": "INT64",
            "data": predictions,
        }],
    });
    if let Some(object) = response.as_object_mut() {
        if let Some(version) = model.version {
            object.insert("model_version".into(), json!(version));
        }
        if let Some(id) = &request.id {
            object.insert("id".into(), json!(id));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(revision: &str) -> Caller {
        Caller {
            revision: Some(revision.to_owned()),
            namespace: Some("kserve-test".to_owned()),
        }
    }

    fn get(path: &str) -> Reply {
        respond(
            &Method::GET,
            path,
            &caller("iris-predictor-00001"),
            None,
            b"",
        )
    }

    fn post(path: &str, body: &str) -> Reply {
        post_as(path, Some("application/json"), body)
    }

    fn post_as(path: &str, content_type: Option<&str>, body: &str) -> Reply {
        respond(
            &Method::POST,
            path,
            &caller("iris-predictor-00001"),
            content_type,
            body.as_bytes(),
        )
    }

    /// A body without a JSON content type is refused as KServe's server refuses it: 500 on v1
    /// (the model gets bytes), 400 on v2; v1 without any content type is read as JSON.
    #[test]
    fn content_types_as_kserve() {
        let v1 = "/v1/models/iris:predict";
        let v2 = "/v2/models/iris/infer";
        let row = r#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#;
        let infer = r#"{"inputs": [{"name": "i", "shape": [1, 4], "datatype": "FP32", "data": [6.8, 2.8, 4.8, 1.4]}]}"#;
        for ct in [
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/json; charset=utf-8",
        ] {
            let r = post_as(v1, Some(ct), row);
            assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{ct}");
            assert_eq!(
                error_of(&r),
                "TypeError : byte indices must be integers or slices, not str"
            );
        }
        for ct in [
            None,
            Some("application/json"),
            Some("application/octet-stream"),
        ] {
            assert_eq!(post_as(v1, ct, row).status, StatusCode::OK, "{ct:?}");
        }
        for ct in [
            None,
            Some("application/x-www-form-urlencoded"),
            Some("text/plain"),
        ] {
            let r = post_as(v2, ct, infer);
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ct:?}");
            assert!(error_of(&r).contains("inference-header-content-length"));
        }
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.x+json",
        ] {
            assert_eq!(post_as(v2, Some(ct), infer).status, StatusCode::OK, "{ct}");
        }
    }

    fn error_of(reply: &Reply) -> &str {
        reply.body["error"].as_str().unwrap_or_default()
    }

    /// The tree splits on petal length at 2.45, then petal width at 1.75; both bounds belong
    /// to the upper branch.
    #[test]
    fn classifier_follows_the_two_splits() {
        assert_eq!(classify([5.1, 3.5, 1.4, 0.2]), 0);
        assert_eq!(classify([6.0, 2.2, 2.449, 9.0]), 0);
        assert_eq!(classify([6.4, 3.2, 4.5, 1.5]), 1);
        assert_eq!(classify([6.0, 3.0, 2.45, 1.0]), 1);
        assert_eq!(classify([6.3, 3.3, 6.0, 2.5]), 2);
        assert_eq!(classify([6.0, 3.0, 5.0, 1.75]), 2);
        // The sepal measurements never change the answer.
        assert_eq!(classify([-100.0, 1e9, 1.0, 0.1]), 0);
    }

    /// v1 predict answers one integer class per instance, in order.
    #[test]
    fn v1_predict_answers_one_class_per_instance() {
        let reply = post(
            "/v1/models/sklearn-iris:predict",
            r#"{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6, 2.5]]}"#,
        );
        assert_eq!(reply, Reply::ok(json!({ "predictions": [1, 1, 0, 2] })));
    }

    /// v1 model readiness names the model from the path.
    #[test]
    fn v1_ready_names_the_model() {
        assert_eq!(
            get("/v1/models/sklearn-iris"),
            Reply::ok(json!({ "name": "sklearn-iris", "ready": true }))
        );
    }

    /// v1 explain gives the leaf's rule and a weight for every feature, summing to one.
    #[test]
    fn v1_explain_weights_the_tested_features() {
        let reply = post(
            "/v1/models/sklearn-iris:explain",
            r#"{"instances": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]}"#,
        );
        assert_eq!(
            reply,
            Reply::ok(json!({ "explanations": [
                {
                    "prediction": 0,
                    "class": "setosa",
                    "rule": "petal_length < 2.45",
                    "feature_weights": {
                        "sepal_length": 0.0, "sepal_width": 0.0,
                        "petal_length": 1.0, "petal_width": 0.0,
                    },
                },
                {
                    "prediction": 2,
                    "class": "virginica",
                    "rule": "petal_length >= 2.45 and petal_width >= 1.75",
                    "feature_weights": {
                        "sepal_length": 0.0, "sepal_width": 0.0,
                        "petal_length": 0.5, "petal_width": 0.5,
                    },
                },
            ]}))
        );
    }

    /// A v1 body that is not JSON, lacks `instances`, or has a row that is not four numbers is
    /// a 400 whose message says which.
    #[test]
    fn v1_bad_bodies_are_400_saying_what_is_wrong() {
        let path = "/v1/models/iris:predict";
        let not_json = post(path, "{instances");
        assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
        assert!(error_of(&not_json).starts_with("request body is not valid JSON"));

        let no_instances = post(path, r#"{"inputs": []}"#);
        assert_eq!(
            no_instances,
            Reply::error(
                StatusCode::BAD_REQUEST,
                "expected a JSON object with an \"instances\" array"
            )
        );

        let short_row = post(path, r#"{"instances": [[1, 2, 3, 4], [1, 2, 3]]}"#);
        assert_eq!(
            error_of(&short_row),
            "instances[1]: expected 4 numbers [sepal_length, sepal_width, petal_length, \
             petal_width], got [1,2,3]"
        );

        let text_in_row = post(path, r#"{"instances": [[1, 2, "3", 4]]}"#);
        assert!(error_of(&text_in_row).starts_with("instances[0]: expected 4 numbers"));
    }

    /// The v2 health endpoints are constant; the server metadata names the demo.
    #[test]
    fn v2_health_is_always_live_and_ready() {
        assert_eq!(get("/v2/health/live"), Reply::ok(json!({ "live": true })));
        assert_eq!(get("/v2/health/ready"), Reply::ok(json!({ "ready": true })));
        assert_eq!(get("/v2").body["name"], "modelgate-demo");
    }

    /// v2 model metadata describes one [-1, 4] FP32 input and one [-1] INT64 output.
    #[test]
    fn v2_metadata_describes_the_tensors() {
        assert_eq!(
            get("/v2/models/iris"),
            Reply::ok(json!({
                "name": "iris",
                "versions": ["1"],
                "platform": "modelgate_demo",
                "inputs": [{ "name": "input-0", "datatype": "FP32", "shape": [-1, 4] }],
                "outputs": [{ "name": "output-0", "datatype": "INT64", "shape": [-1] }],
            }))
        );
        assert_eq!(
            get("/v2/models/iris/ready"),
            Reply::ok(json!({ "name": "iris", "ready": true }))
        );
    }

    /// v2 infer accepts flat data, echoes the request id and answers one INT64 per row.
    #[test]
    fn v2_infer_with_flat_data() {
        let reply = post(
            "/v2/models/iris/infer",
            r#"{"id": "req-7", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                "data": [6.8, 2.8, 4.8, 1.4, 5.1, 3.5, 1.4, 0.2]}]}"#,
        );
        assert_eq!(
            reply,
            Reply::ok(json!({
                "model_name": "iris",
                "id": "req-7",
                "outputs": [{ "name": "output-0", "shape": [2], "datatype": "INT64", "data": [1, 0] }],
            }))
        );
    }

    /// v2 infer accepts nested data, and without an id the response has none.
    #[test]
    fn v2_infer_with_nested_data_and_no_id() {
        let reply = post(
            "/v2/models/iris/infer",
            r#"{"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64",
                "data": [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6, 2.5]]}]}"#,
        );
        assert_eq!(
            reply,
            Reply::ok(json!({
                "model_name": "iris",
                "outputs": [{ "name": "output-0", "shape": [3], "datatype": "INT64", "data": [1, 0, 2] }],
            }))
        );
    }

    /// A versioned v2 path answers for version 1 and names it; other versions are 404.
    #[test]
    fn v2_versioned_paths_serve_version_one_only() {
        let body = r#"{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#;
        let reply = post("/v2/models/iris/versions/1/infer", body);
        assert_eq!(reply.body["model_version"], "1");
        assert_eq!(reply.body["outputs"][0]["data"], json!([0]));
        let missing = post("/v2/models/iris/versions/2/infer", body);
        assert_eq!(
            missing,
            Reply::error(
                StatusCode::NOT_FOUND,
                "model iris has no version 2; the demo serves version 1"
            )
        );
        assert_eq!(
            get("/v2/models/iris/versions/1/ready").status,
            StatusCode::OK
        );
    }

    /// Each wrong v2 body gets a 400 naming the field at fault.
    #[test]
    fn v2_bad_bodies_are_400_naming_the_field() {
        let path = "/v2/models/iris/infer";
        let cases = [
            (
                r#"[1, 2]"#,
                "expected a JSON object with an \"inputs\" array",
            ),
            (
                r#"{"inputs": []}"#,
                "inputs: expected exactly one input tensor of shape [N, 4], got 0",
            ),
            (
                r#"{"inputs": [{"shape": [1, 4], "datatype": "BYTES", "data": ["a"]}]}"#,
                "inputs[0].datatype: BYTES is not a numeric type; use \"FP32\"",
            ),
            (
                r#"{"inputs": [{"shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#,
                "inputs[0].shape: expected [N, 4], got [4]",
            ),
            (
                r#"{"inputs": [{"shape": [-1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#,
                "inputs[0].shape: expected [N, 4], got [-1,4]",
            ),
            (
                r#"{"inputs": [{"shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#,
                "inputs[0].data: shape [2, 4] needs 8 numbers, got 4",
            ),
            (
                r#"{"inputs": [{"shape": [1, 4], "datatype": "FP32", "data": [1, 2, null, 4]}]}"#,
                "inputs[0].data: expected numbers, got null after 2 numbers",
            ),
            (
                r#"{"id": 7, "inputs": [{"shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#,
                "id: expected a string, got 7",
            ),
            (
                r#"{"inputs": [{"shape": [18446744073709551615, 4], "datatype": "FP32", "data": []}]}"#,
                "inputs[0].shape: expected [N, 4], got [18446744073709551615,4]",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                post(path, body),
                Reply::error(StatusCode::BAD_REQUEST, expected),
                "body: {body}"
            );
        }
    }

    /// Paths the demo does not serve are 404; a known path with the wrong method is 405 with
    /// an `allow` header.
    #[test]
    fn unknown_paths_404_and_wrong_methods_405() {
        for path in [
            "/nope",
            "/v1/models/",
            "/v1/models/iris:train",
            "/v1/models/iris/extra",
            "/v2/models/",
            "/v2/models/iris/train",
            "/v2/models//ready",
        ] {
            assert_eq!(get(path).status, StatusCode::NOT_FOUND, "path: {path}");
        }
        let wrong = get("/v1/models/iris:predict");
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.allow, Some("POST"));
        let wrong = post("/v2/health/live", "");
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.allow, Some("GET"));
    }

    /// The hello at `/` names the revision and namespace the gateway sent, or "unknown".
    #[test]
    fn hello_names_the_revision() {
        assert_eq!(
            get("/"),
            Reply::ok(json!({
                "message": "modelgate demo model server",
                "revision": "iris-predictor-00001",
                "namespace": "kserve-test",
            }))
        );
        let anonymous = respond(&Method::GET, "/", &Caller::default(), None, b"");
        assert_eq!(anonymous.body["revision"], "unknown");
    }

    /// Arbitrary bytes on any route never panic; they get an answer.
    #[test]
    fn garbage_never_panics() {
        let bodies: [&[u8]; 6] = [
            b"",
            b"\xff\xfe",
            b"null",
            b"{\"instances\": 5}",
            b"[[[[",
            b"{}",
        ];
        for path in [
            "/v1/models/m:predict",
            "/v1/models/m:explain",
            "/v2/models/m/infer",
        ] {
            for body in bodies {
                let reply = respond(
                    &Method::POST,
                    path,
                    &Caller::default(),
                    Some("application/json"),
                    body,
                );
                assert_eq!(reply.status, StatusCode::BAD_REQUEST);
            }
        }
    }

    /// Sends `request` and reads until the server closes. Writing runs beside reading, and its
    /// error is ignored, because the server answers a refused upload before reading all of it.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let request = request.to_vec();
        let write = tokio::spawn(async move { writer.write_all(&request).await });
        let mut response = Vec::new();
        // A reset after the response is fine: what was read is all the test needs.
        let _ = reader.read_to_end(&mut response).await;
        write.abort();
        String::from_utf8_lossy(&response).into_owned()
    }

    /// Over a socket: the revision header comes back as `x-demo-revision`, with JSON content.
    #[tokio::test]
    async fn served_responses_carry_the_revision_and_json() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        let body = r#"{"instances": [[6.3, 3.3, 6.0, 2.5]]}"#;
        let request = format!(
            "POST /v1/models/iris:predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
             knative-serving-revision: iris-predictor-00002\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = exchange(addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("x-demo-revision: iris-predictor-00002\r\n"));
        assert!(response.contains("content-type: application/json\r\n"));
        assert!(response.ends_with("{\"predictions\":[2]}\n"), "{response}");

        let anonymous = exchange(
            addr,
            b"GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(
            anonymous.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{anonymous}"
        );
        assert!(anonymous.contains("x-demo-revision: unknown\r\n"));
        server.abort();
    }

    /// Over a socket: a body over 1 MiB is refused with 413, whether declared up front or sent
    /// chunked.
    #[tokio::test]
    async fn served_bodies_over_one_mebibyte_are_413() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        let declared = format!(
            "POST /v1/models/iris:predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        let response = exchange(addr, declared.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{response}"
        );

        let mut chunked =
            b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
             transfer-encoding: chunked\r\n\r\n"
                .to_vec();
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..17 {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(&chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let response = exchange(addr, &chunked).await;
        assert!(
            response.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{response}"
        );
        server.abort();
    }
}
