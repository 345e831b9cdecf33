//! One list of routes: the router's inventory, the OpenAPI document and the HTTP API routes of
//! `infra/template.yaml` must agree on every method and path, function by function. None of
//! them is written from the others by hand, so this is what catches a route added to one only.

use dotmac_http::Access;
use dotmac_platform::{Handler, Kind, api_catalog};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

type Route = (String, String);

/// API Gateway spells a greedy path parameter `{name+}`; axum spells it `{*name}`.
fn gateway_path(axum_path: &str) -> String {
    axum_path
        .split('/')
        .map(|segment| match segment.strip_prefix("{*").and_then(|s| s.strip_suffix('}')) {
            Some(name) => format!("{{{name}+}}"),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn template() -> yaml_serde::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    let text = std::fs::read_to_string(path).expect("infra/template.yaml");
    yaml_serde::from_str(&text).expect("the template is YAML")
}

/// Every HTTP API route the template declares, by the handler of the function it reaches,
/// with whether it skips the authorizer. The `$default` route (unmatched requests answered in
/// the error envelope) is the gateway's own and matches no inventory entry.
fn template_routes() -> BTreeMap<&'static str, BTreeMap<Route, bool>> {
    let template = template();
    let resources = template["Resources"].as_mapping().expect("Resources");
    let mut routes: BTreeMap<&'static str, BTreeMap<Route, bool>> = BTreeMap::new();
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let handler = resource["Properties"]["Handler"].as_str().and_then(Handler::parse);
        let Some(events) = resource["Properties"]["Events"].as_mapping() else { continue };
        for event in events.values().filter(|e| e["Type"].as_str() == Some("HttpApi")) {
            let properties = &event["Properties"];
            // Without it SAM puts the route on an implicit API of its own, with no authorizer.
            assert_eq!(
                tag(&properties["ApiId"]),
                "!Ref HttpApi",
                "{name:?}: an HttpApi event must name the HttpApi"
            );
            let path = properties["Path"].as_str().expect("HttpApi event Path").to_owned();
            if path == "$default" {
                continue;
            }
            let handler = handler.unwrap_or_else(|| panic!("{name:?} routes {path} to an unknown handler"));
            let method = properties["Method"].as_str().expect("HttpApi event Method").to_uppercase();
            let public = properties["Auth"]["Authorizer"].as_str() == Some("NONE");
            let previous =
                routes.entry(handler.name()).or_default().insert((method.clone(), path.clone()), public);
            assert!(previous.is_none(), "{method} {path} is declared twice in the template");
        }
    }
    routes
}

/// A CloudFormation value as written (`!Ref HttpApi`, `!GetAtt AuthorizerFunction.Arn`).
fn tag(value: &yaml_serde::Value) -> String {
    yaml_serde::to_string(value).unwrap_or_default().trim().to_owned()
}

#[test]
fn every_route_not_declared_public_goes_through_the_authorizer() {
    let template = template();
    let resources = template["Resources"].as_mapping().expect("Resources");
    let api = &template["Resources"]["HttpApi"]["Properties"];
    // Routes declared any other way would escape the inventory comparison above.
    assert!(
        api.get("DefinitionBody").is_none() && api.get("DefinitionUri").is_none(),
        "routes come from events only"
    );
    for (name, resource) in resources {
        let kind = resource["Type"].as_str().unwrap_or_default();
        assert_ne!(kind, "AWS::ApiGatewayV2::Route", "{name:?}: routes come from function events only");
    }
    let default = api["Auth"]["DefaultAuthorizer"].as_str().expect("the HttpApi has a default authorizer");
    let authorizer = &api["Auth"]["Authorizers"][default];
    assert_eq!(tag(&authorizer["FunctionArn"]), "!GetAtt AuthorizerFunction.Arn");
    assert_eq!(
        template["Resources"]["AuthorizerFunction"]["Properties"]["Handler"]
            .as_str()
            .and_then(Handler::parse),
        Some(Handler::Authorizer)
    );
    assert_eq!(
        authorizer["Identity"]["ReauthorizeEvery"].as_u64(),
        Some(0),
        "a cached allow outlives a sign-out"
    );
}

fn inventory_routes() -> BTreeMap<&'static str, BTreeMap<Route, bool>> {
    Handler::ALL
        .into_iter()
        .filter(|handler| handler.kind() == Kind::Http)
        .map(|handler| {
            let routes = handler
                .catalog()
                .routes
                .iter()
                .map(|r| ((r.method.to_string(), gateway_path(&r.path)), r.access == Access::Public))
                .collect();
            (handler.name(), routes)
        })
        .collect()
}

#[test]
fn the_template_routes_exactly_what_each_function_serves() {
    let (template, inventory) = (template_routes(), inventory_routes());
    for (function, routes) in &inventory {
        let declared = template.get(function).cloned().unwrap_or_default();
        let missing: Vec<_> = routes.keys().filter(|r| !declared.contains_key(*r)).collect();
        let extra: Vec<_> = declared.keys().filter(|r| !routes.contains_key(*r)).collect();
        assert!(missing.is_empty(), "{function} serves {missing:?}, which the template does not route to it");
        assert!(extra.is_empty(), "the template routes {extra:?} to {function}, which does not serve them");
        for (route, public) in routes {
            assert_eq!(
                declared.get(route),
                Some(public),
                "{route:?}: the template's authorizer setting must match the route's access (public: {public})"
            );
        }
    }
    let unknown: Vec<_> = template.keys().filter(|f| !inventory.contains_key(*f)).collect();
    assert!(unknown.is_empty(), "the template routes HTTP requests to non-HTTP functions {unknown:?}");
}

fn document() -> Value {
    serde_json::to_value(dotmac_http::openapi::document(&api_catalog())).expect("the document serialises")
}

#[test]
fn the_document_describes_exactly_the_documented_routes() {
    let document = document();
    assert_eq!(document["openapi"], "3.1.0");
    let mut described = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            described.insert((method.to_uppercase(), path.clone()));
        }
    }
    let documented: BTreeSet<_> = api_catalog()
        .routes
        .iter()
        .filter(|r| r.documented())
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect();
    assert_eq!(described, documented);
    // Pages for browsers are the only routes left out (the docs UI, the page an invitation's
    // link opens), and they are all public GETs.
    for route in api_catalog().routes.iter().filter(|r| !r.documented()) {
        let page = route.path.starts_with("/docs") || route.path == dotmac_users::ACCEPT_PAGE_PATH;
        assert!(page, "{route:?} is missing from the document");
        assert_eq!((route.method.clone(), route.access), (http::Method::GET, Access::Public), "{route:?}");
    }
}

#[test]
fn every_operation_is_named_once_secured_by_its_access_and_answers_in_the_envelope() {
    let document = document();
    let catalog = api_catalog();
    let mut ids = BTreeSet::new();
    for route in catalog.routes.iter().filter(|r| r.documented()) {
        let operation = &document["paths"][&route.path][route.method.as_str().to_lowercase()];
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{route:?} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        let secured = operation.get("security").is_some();
        assert_eq!(secured, route.access != Access::Public, "{route:?}: security must follow its access");
        let responses = operation["responses"].as_object().expect("responses");
        assert!(responses.keys().any(|s| s.starts_with('2')), "{route:?} documents no success");
        for (status, response) in responses.iter().filter(|(s, _)| !s.starts_with('2')) {
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/ErrorEnvelope",
                "{route:?} {status} is not the envelope"
            );
        }
        for shared in ["500", "503"] {
            assert!(responses.contains_key(shared), "{route:?} does not document {shared}");
        }
        if route.access != Access::Public {
            assert!(responses.contains_key("401"), "{route:?} does not document 401");
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{route:?} takes a body but does not document {status}"
                );
            }
        }
        if let Some(limited) = responses.get("429") {
            assert!(limited["headers"].get("Retry-After").is_some(), "{route:?}: 429 without Retry-After");
        }
    }
}

#[test]
fn the_error_codes_and_the_bearer_scheme_are_in_the_document() {
    let document = document();
    let codes: BTreeSet<&str> = document["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ours: BTreeSet<&str> = dotmac_http::ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(codes, ours);
    let bearer = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!((bearer["type"].as_str(), bearer["scheme"].as_str()), (Some("http"), Some("bearer")));
}

#[test]
fn the_path_mapping_follows_the_gateway_syntax() {
    assert_eq!(gateway_path("/docs/{*file}"), "/docs/{file+}");
    assert_eq!(gateway_path("/v1/tenants/{id}"), "/v1/tenants/{id}");
}

/// `rate(1 hour)`, `rate(5 minutes)`: EventBridge Scheduler's rate expressions, in seconds.
fn rate_seconds(expression: &str) -> Option<u64> {
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let (count, unit) = inner.split_once(' ')?;
    let count: u64 = count.parse().ok()?;
    let unit = match unit.trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return None,
    };
    Some(count * unit)
}

#[test]
fn scheduled_functions_run_at_the_pace_the_local_server_keeps() {
    let template = template();
    for handler in Handler::ALL {
        let Some(every) = handler.schedule_every() else { continue };
        let resources = template["Resources"].as_mapping().expect("Resources");
        let function = resources
            .values()
            .find(|r| r["Properties"]["Handler"].as_str() == Some(handler.name()))
            .unwrap_or_else(|| panic!("no function for {}", handler.name()));
        let expressions: Vec<&str> = function["Properties"]["Events"]
            .as_mapping()
            .expect("a scheduled function has events")
            .values()
            .filter(|e| matches!(e["Type"].as_str(), Some("ScheduleV2" | "Schedule")))
            .filter_map(|e| e["Properties"]["ScheduleExpression"].as_str())
            .collect();
        let expected = handler.schedule_expression().expect("a scheduled function has an expression");
        assert_eq!(expressions, vec![expected], "{}: the template's schedule", handler.name());
        // The local server keeps a rate's pace; a calendar schedule (the monthly billing cycle)
        // is tried hourly there, which its handler makes harmless (one run per period).
        match rate_seconds(expected) {
            Some(rate) => assert_eq!(rate, every.as_secs(), "{}: the local pace", handler.name()),
            None => assert!(expected.starts_with("cron(") && every.as_secs() <= 3600, "{}", handler.name()),
        }
    }
    assert_eq!(rate_seconds("rate(5 minutes)"), Some(300));
}

#[test]
fn no_two_schemas_of_the_document_share_a_name() {
    let conflicts = dotmac_http::openapi::conflicting_schema_names(&api_catalog());
    assert!(conflicts.is_empty(), "schemas named alike but shaped differently: {conflicts:?}");
}
