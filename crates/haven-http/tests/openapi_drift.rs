//! The checked-in OpenAPI document must equal the one generated from the code. Regenerate it
//! with `HAVEN_UPDATE_OPENAPI=1 cargo test -p haven-http --test openapi_drift`.

use std::path::PathBuf;

#[test]
fn checked_in_openapi_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = haven_http::openapi::document_json() + "\n";
    if std::env::var_os("HAVEN_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == generated,
        "docs/openapi.json is out of date: run HAVEN_UPDATE_OPENAPI=1 cargo test -p haven-http --test openapi_drift"
    );
}

#[test]
fn every_operation_documents_its_errors_as_problem_json() {
    let doc: serde_json::Value = serde_json::from_str(&haven_http::openapi::document_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            if !path.starts_with("/api/v1/") {
                continue;
            }
            for code in ["401", "404", "429"] {
                let content = &op["responses"][code]["content"]["application/problem+json"];
                assert!(content.is_object(), "{method} {path} does not document {code} as problem+json");
            }
        }
    }
    assert!(operations >= 20, "{operations}");
}

#[test]
fn parameters_are_where_the_handlers_read_them() {
    // A parameter documented "in: path" that the path does not name is a query parameter
    // documented in the wrong place (utoipa's `IntoParams` puts them in the path unless told),
    // and a client generated from the document would build URLs the server does not serve.
    let doc: serde_json::Value = serde_json::from_str(&haven_http::openapi::document_json()).unwrap();
    let mut query = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                match p["in"].as_str().unwrap() {
                    "path" => assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: {name} is not in the path"
                    ),
                    "query" => query += 1,
                    _ => {}
                }
            }
        }
    }
    assert!(query >= 20, "the search and paging parameters are query parameters: {query}");
}
