//! The arithmetic and the references of `infra/template.yaml` that the code relies on, checked
//! against the code's own constants: cfn-lint knows CloudFormation, not our timeouts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use yaml_serde::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    let text = std::fs::read_to_string(path).expect("infra/template.yaml");
    yaml_serde::from_str(&text).expect("the template is YAML")
}

fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    let resource = &template["Resources"][name];
    assert!(!resource.is_null(), "the template has no {name}");
    resource
}

/// The keys of a mapping (a section's names, a resource's properties).
fn keys(mapping: &Value) -> BTreeSet<String> {
    mapping.as_mapping().into_iter().flatten().filter_map(|(k, _)| k.as_str().map(str::to_owned)).collect()
}

/// `(tag, value)` when `value` is a short-form intrinsic (`!Ref X`, `!GetAtt X.Y`, ...).
fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((tagged.tag.to_string(), &tagged.value)),
        _ => None,
    }
}

/// The parameter `value` refers to (`!Ref Name`), if it does.
fn referenced_parameter<'a>(template: &'a Value, value: &Value) -> Option<(String, &'a Value)> {
    let (tag, inner) = intrinsic(value)?;
    let name = inner.as_str().filter(|_| tag == "!Ref")?.to_owned();
    let parameter = &template["Parameters"][name.as_str()];
    (!parameter.is_null()).then_some((name, parameter))
}

fn number(value: &Value) -> i64 {
    match value {
        Value::Number(n) => n.as_i64().expect("an integer"),
        Value::String(s) => s.parse().expect("a number"),
        other => panic!("not a number: {other:?}"),
    }
}

/// A function's timeout: its own, else the Globals one.
fn timeout(template: &Value, function: &str) -> i64 {
    let own = &resource(template, function)["Properties"]["Timeout"];
    number(if own.is_null() { &template["Globals"]["Function"]["Timeout"] } else { own })
}

#[test]
fn the_provisioning_queue_outlasts_six_provisioner_timeouts() {
    let template = template();
    let function_timeout = timeout(&template, "ProvisionerFunction");
    let visibility = number(&resource(&template, "ProvisioningQueue")["Properties"]["VisibilityTimeout"]);
    // AWS's guidance for SQS event sources: a batch Lambda retries (throttled invocations)
    // must not reappear on the queue while the first invocation may still run.
    assert!(
        visibility >= 6 * function_timeout,
        "visibility timeout {visibility} s < 6 × the provisioner's {function_timeout} s"
    );
}

#[test]
fn one_attempt_fits_in_the_provisioner_timeout_even_at_the_longest_task_start() {
    let template = template();
    let function_timeout = timeout(&template, "ProvisionerFunction");
    let env = &template["Globals"]["Function"]["Environment"]["Variables"];
    let start = &env["DOTMAC_TASK_START_TIMEOUT_SECONDS"];
    // The worst case a deployer can choose: the parameter's MaxValue (or a literal).
    let (longest, default) = match referenced_parameter(&template, start) {
        Some((name, parameter)) => {
            assert!(!parameter["MaxValue"].is_null(), "{name} needs a MaxValue bounding the attempt");
            (number(&parameter["MaxValue"]), number(&parameter["Default"]))
        }
        None => (number(start), number(start)),
    };
    let reserve = i64::try_from(dotmac_queue::lambda::ANSWER_RESERVE.as_secs()).expect("seconds");
    let attempt = longest + dotmac_provisioner::LEASE_MARGIN_SECONDS + reserve;
    assert!(
        attempt < function_timeout,
        "task start {longest} s + other calls {} s + answer reserve {reserve} s = {attempt} s ≥ timeout {function_timeout} s",
        dotmac_provisioner::LEASE_MARGIN_SECONDS
    );
    // And a cold Fargate start (image pull included) fits by default.
    assert!(
        default >= 120,
        "a default task start timeout of {default} s is shorter than a cold Fargate start"
    );
}

#[test]
fn the_redrive_count_and_the_functions_count_are_the_same_parameter() {
    let template = template();
    let redrive = &resource(&template, "ProvisioningQueue")["Properties"]["RedrivePolicy"]["maxReceiveCount"];
    let env =
        &template["Globals"]["Function"]["Environment"]["Variables"]["DOTMAC_PROVISIONING_MAX_RECEIVE_COUNT"];
    let (queue_side, parameter) =
        referenced_parameter(&template, redrive).expect("maxReceiveCount is a parameter");
    let (function_side, _) = referenced_parameter(&template, env).expect("the functions read a parameter");
    assert_eq!(queue_side, function_side, "the queue and the functions must read one number");
    // The configuration reads the parameter's value the way the functions will.
    let default = number(&parameter["Default"]).to_string();
    let source = HashMap::from([("DOTMAC_PROVISIONING_MAX_RECEIVE_COUNT".to_owned(), default.clone())]);
    let read = dotmac_config::Config::max_receive_count_from(&source).expect("a valid count");
    assert_eq!(read.to_string(), default);
    assert!(number(&parameter["MinValue"]) >= 1, "the configuration refuses 0");
}

#[test]
fn the_event_source_caps_its_concurrency_with_a_parameter() {
    let template = template();
    let mapping = &resource(&template, "ProvisionerQueueMapping")["Properties"];
    let cap = &mapping["ScalingConfig"]["MaximumConcurrency"];
    let (name, parameter) = referenced_parameter(&template, cap).expect("MaximumConcurrency is a parameter");
    let default = number(&parameter["Default"]);
    assert!((5..=20).contains(&default), "{name} defaults to {default}");
    assert!(number(&parameter["MinValue"]) >= 2, "SQS event sources take 2 at least");
    assert!(
        mapping["FunctionResponseTypes"]
            .as_sequence()
            .is_some_and(|t| t.iter().any(|v| v == "ReportBatchItemFailures")),
        "the handler reports partial batch failures"
    );
}

/// Every name an intrinsic refers to: `!Ref X`, `!GetAtt X.Y` (or `[X, Y]`), `${X}` and
/// `${X.Y}` in `!Sub`, with where it was found.
fn references(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            match (tag.as_str(), &tagged.value) {
                ("!Ref", Value::String(name)) => found.push((name.clone(), at.to_owned())),
                ("!GetAtt", Value::String(path)) => {
                    found.push((path.split('.').next().unwrap_or_default().to_owned(), at.to_owned()))
                }
                ("!GetAtt", Value::Sequence(parts)) => {
                    found.push((parts[0].as_str().unwrap_or_default().to_owned(), at.to_owned()))
                }
                ("!Sub", inner) => {
                    let (text, locals) = match inner {
                        Value::String(text) => (text.as_str(), BTreeSet::new()),
                        Value::Sequence(parts) => {
                            let locals = parts[1]
                                .as_mapping()
                                .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect())
                                .unwrap_or_default();
                            references(&parts[1], at, found);
                            (parts[0].as_str().unwrap_or_default(), locals)
                        }
                        _ => ("", BTreeSet::new()),
                    };
                    for piece in text.split("${").skip(1) {
                        let Some(name) = piece.split('}').next() else { continue };
                        if name.starts_with('!') || locals.contains(name) {
                            continue;
                        }
                        found.push((name.split('.').next().unwrap_or_default().to_owned(), at.to_owned()));
                    }
                }
                (_, inner) => references(inner, at, found),
            }
        }
        Value::Mapping(mapping) => {
            for (key, inner) in mapping {
                let key = key.as_str().unwrap_or("?");
                // Fn::Sub and Ref in long form.
                if key == "Ref" {
                    if let Some(name) = inner.as_str() {
                        found.push((name.to_owned(), at.to_owned()));
                    }
                    continue;
                }
                references(inner, &format!("{at}.{key}"), found);
            }
        }
        Value::Sequence(items) => {
            for (i, inner) in items.iter().enumerate() {
                references(inner, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn defined_names(template: &Value) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["Resources", "Parameters"]
        .iter()
        .filter_map(|section| template[*section].as_mapping())
        .flat_map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)))
        .collect();
    // SAM names the role it generates for a function without `Role` `<function>Role`.
    if let Some(resources) = template["Resources"].as_mapping() {
        for (name, resource) in resources {
            if resource["Type"].as_str() == Some("AWS::Serverless::Function")
                && resource["Properties"]["Role"].is_null()
                && let Some(name) = name.as_str()
            {
                names.insert(format!("{name}Role"));
            }
        }
    }
    names.extend(
        [
            "AccountId",
            "Region",
            "StackName",
            "StackId",
            "Partition",
            "URLSuffix",
            "NoValue",
            "NotificationARNs",
        ]
        .map(|p| format!("AWS::{p}")),
    );
    names
}

#[test]
fn every_function_environment_names_only_what_the_template_defines() {
    let template = template();
    let defined = defined_names(&template);
    let mut found = Vec::new();
    references(&template["Globals"]["Function"]["Environment"], "Globals", &mut found);
    let resources = template["Resources"].as_mapping().expect("Resources");
    let mut functions = 0;
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        functions += 1;
        let name = name.as_str().expect("name");
        references(&resource["Properties"]["Environment"], name, &mut found);
    }
    assert_eq!(functions, dotmac_platform::Handler::ALL.len(), "one function per handler");
    let unknown: Vec<_> = found.iter().filter(|(name, _)| !defined.contains(name)).collect();
    assert!(unknown.is_empty(), "environment variables name undefined resources: {unknown:?}");
    assert!(found.len() > 10, "the walk found the references ({found:?})");
}

#[test]
fn every_reference_anywhere_resolves() {
    let template = template();
    let defined = defined_names(&template);
    let mut found = Vec::new();
    for section in ["Globals", "Resources", "Outputs", "Conditions"] {
        references(&template[section], section, &mut found);
    }
    let unknown: BTreeMap<_, _> = found
        .iter()
        .filter(|(name, _)| !defined.contains(name))
        .map(|(n, at)| (n.clone(), at.clone()))
        .collect();
    assert!(unknown.is_empty(), "references to nothing: {unknown:?}");
}

#[test]
fn the_reference_walk_sees_every_form() {
    let yaml = "a: !Ref One\nb: !GetAtt Two.Arn\nc: !Sub \"arn:${AWS::Partition}:${Three}:${Four.Arn}:${!Literal}\"\n\
                d: !Sub [\"${Local}-${Five}\", {Local: !Ref Six}]\ne: {Ref: Seven}\n";
    let value: Value = yaml_serde::from_str(yaml).expect("yaml");
    let mut found = Vec::new();
    references(&value, "", &mut found);
    let names: BTreeSet<_> = found.into_iter().map(|(n, _)| n).collect();
    let expected: BTreeSet<String> =
        ["One", "Two", "AWS::Partition", "Three", "Four", "Five", "Six", "Seven"].map(str::to_owned).into();
    assert_eq!(names, expected);
}

#[test]
fn every_function_logs_json_and_every_alarm_says_when_it_clears() {
    let template = template();
    for (name, resource) in template["Resources"].as_mapping().expect("Resources") {
        let name = name.as_str().expect("name");
        match resource["Type"].as_str() {
            Some("AWS::Serverless::Function") => assert_eq!(
                resource["Properties"]["LoggingConfig"]["LogFormat"].as_str(),
                Some("JSON"),
                "{name} does not log JSON"
            ),
            Some("AWS::CloudWatch::Alarm") => assert!(
                resource["Properties"]["OKActions"].as_sequence().is_some_and(|a| !a.is_empty()),
                "{name} has no OKActions"
            ),
            _ => {}
        }
    }
}

#[test]
fn the_gateway_throttles_per_route() {
    let template = template();
    let api = &resource(&template, "HttpApi")["Properties"];
    let routes = api["RouteSettings"].as_mapping().expect("RouteSettings");
    let rate = |route: &str| {
        let settings = &routes[route];
        let (name, parameter) = referenced_parameter(&template, &settings["ThrottlingRateLimit"])
            .unwrap_or_else(|| panic!("{route}: the rate is a parameter"));
        assert!(
            referenced_parameter(&template, &settings["ThrottlingBurstLimit"]).is_some(),
            "{route}: burst"
        );
        (name, number(&parameter["Default"]))
    };
    let (_, default_parameter) =
        referenced_parameter(&template, &api["DefaultRouteSettings"]["ThrottlingRateLimit"])
            .expect("default");
    let default_rate = number(&default_parameter["Default"]);
    let (_, container) = rate("POST /v1/tenants/{id}/health");
    assert!(container > default_rate, "container routes get more than the default");
    for route in ["POST /v1/auth/login", "POST /v1/auth/refresh", "GET /ready"] {
        let (_, limited) = rate(route);
        assert!(limited < default_rate, "{route} gets less than the default");
    }
    // Every route setting names a route some function declares.
    let declared: BTreeSet<String> =
        http_api_routes(&template).into_iter().map(|(method, path)| format!("{method} {path}")).collect();
    for route in routes.keys().filter_map(Value::as_str) {
        assert!(declared.contains(route), "RouteSettings names {route}, which no event declares");
    }
}

/// Every HTTP API route the functions' events declare, as (METHOD, path).
fn http_api_routes(template: &Value) -> BTreeSet<(String, String)> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .values()
        .filter_map(|r| r["Properties"]["Events"].as_mapping())
        .flat_map(|events| events.values())
        .filter(|e| e["Type"].as_str() == Some("HttpApi"))
        .map(|e| {
            let p = &e["Properties"];
            (
                p["Method"].as_str().unwrap_or_default().to_uppercase(),
                p["Path"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The list a CORS setting holds, lower-cased (header names and methods compare so).
fn lowercase_list(value: &Value) -> BTreeSet<String> {
    value.as_sequence().into_iter().flatten().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect()
}

/// The gateway answers CORS itself (its own 401, 403 and 429 included): for exactly the origins
/// of `CorsAllowedOrigins` (none when it is empty, never `*`), with the headers browsers send
/// (the bearer token, JSON, the idempotency key) and every method a route uses.
#[test]
fn the_gateway_answers_cors_from_the_origins_parameter_for_every_route() {
    let template = template();
    let cors = &resource(&template, "HttpApi")["Properties"]["CorsConfiguration"];
    let (tag, branches) = intrinsic(cors).expect("CorsConfiguration is an !If on the origins");
    let branches = branches.as_sequence().expect("!If [condition, then, else]");
    assert_eq!((tag.as_str(), branches.len()), ("!If", 3));
    let condition = branches[0].as_str().expect("a condition name");
    let condition_text = yaml_serde::to_string(&template["Conditions"][condition]).expect("yaml");
    assert!(
        condition_text.contains("CorsAllowedOrigins") && condition_text.contains("!Not"),
        "{condition} holds when CorsAllowedOrigins is not empty: {condition_text}"
    );
    let (tag, none) = intrinsic(&branches[2]).expect("the other branch");
    assert_eq!((tag.as_str(), none.as_str()), ("!Ref", Some("AWS::NoValue")), "no origins, no CORS");

    let config = &branches[1];
    let (tag, split) = intrinsic(&config["AllowOrigins"]).expect("AllowOrigins is computed");
    assert_eq!(tag, "!Split", "AllowOrigins: {:?}", config["AllowOrigins"]);
    let split = split.as_sequence().expect("!Split [delimiter, value]");
    assert_eq!(split[0].as_str(), Some(","), "the parameter is comma-separated");
    let parameter = referenced_parameter(&template, &split[1]).map(|(name, _)| name);
    assert_eq!(parameter.as_deref(), Some("CorsAllowedOrigins"));
    assert!(!yaml_serde::to_string(config).expect("yaml").contains("'*'"), "never a wildcard");

    let headers = lowercase_list(&config["AllowHeaders"]);
    for header in ["authorization", "content-type", dotmac_http::idempotency::IDEMPOTENCY_KEY_HEADER] {
        assert!(headers.contains(header), "AllowHeaders lacks {header}: {headers:?}");
    }
    let methods = lowercase_list(&config["AllowMethods"]);
    let routes = http_api_routes(&template);
    assert!(routes.len() > 20, "the walk found the routes ({routes:?})");
    for (method, path) in routes {
        // `ANY $default` only turns unmatched requests into the error envelope.
        if method == "ANY" {
            continue;
        }
        assert!(
            methods.contains(&method.to_ascii_lowercase()),
            "AllowMethods lacks {method} ({path}): {methods:?}"
        );
    }
}

#[test]
fn names_are_scoped_to_the_stack_and_the_image_is_pinned() {
    let template = template();
    let image = &template["Parameters"]["IspFrameworkImage"];
    assert!(image["Default"].is_null(), "the image is required");
    assert!(
        image["AllowedPattern"].as_str().is_some_and(|p| p.contains("(?!latest$)") && p.contains("@sha256:"))
    );
    let env = &template["Globals"]["Function"]["Environment"]["Variables"];
    for name in ["DOTMAC_TASK_FAMILY", "DOTMAC_TENANT_SECRET_PREFIX"] {
        let (tag, value) = intrinsic(&env[name]).unwrap_or_else(|| panic!("{name} is computed"));
        assert_eq!(tag, "!Sub", "{name}");
        assert!(value.as_str().is_some_and(|v| v.starts_with("${AWS::StackName}")), "{name}: {value:?}");
    }
    let family = &resource(&template, "IspFrameworkTaskDefinition")["Properties"]["Family"];
    assert_eq!(family, &env["DOTMAC_TASK_FAMILY"], "the baseline is the family the code looks up");
}

/// infra/README.md's parameter table and infra/samconfig.toml name exactly the template's
/// parameters.
#[test]
fn the_docs_and_samconfig_describe_exactly_the_parameters() {
    let template = template();
    let parameters = keys(&template["Parameters"]);
    let read = |file: &str| {
        std::fs::read_to_string(format!("{}/../../infra/{file}", env!("CARGO_MANIFEST_DIR"))).expect(file)
    };
    let samconfig: BTreeSet<String> = read("samconfig.toml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"')?.split('=').next().map(str::to_owned))
        .collect();
    assert_eq!(samconfig, parameters, "samconfig.toml's parameter_overrides");
    let readme = read("README.md");
    let section = readme.split("## Parameters").nth(1).expect("a Parameters section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let documented: BTreeSet<String> = section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| {
            line.split('|')
                .nth(1)
                .unwrap_or_default()
                .split('/')
                .map(|n| n.trim().trim_matches('`').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(documented, parameters, "infra/README.md's parameter table");
}

/// Whether a trust policy statement lets only this account's resources have the service
/// assume the role: `aws:SourceAccount` = `!Ref AWS::AccountId`, and any `aws:SourceArn` in
/// that same account.
fn conditioned_on_the_account(statement: &Value) -> Result<(), String> {
    let account = &statement["Condition"]["StringEquals"]["aws:SourceAccount"];
    match intrinsic(account) {
        Some((tag, name)) if tag == "!Ref" && name.as_str() == Some("AWS::AccountId") => {}
        _ => return Err(format!("no StringEquals aws:SourceAccount = !Ref AWS::AccountId ({account:?})")),
    }
    for operator in ["StringEquals", "StringLike", "ArnEquals", "ArnLike"] {
        let arn = &statement["Condition"][operator]["aws:SourceArn"];
        if arn.is_null() {
            continue;
        }
        let text = yaml_serde::to_string(arn).unwrap_or_default();
        if !text.contains("${AWS::AccountId}") {
            return Err(format!("aws:SourceArn names another account: {text}"));
        }
    }
    Ok(())
}

fn check_trust_policy(role: &str, document: &Value, problems: &mut Vec<String>) {
    let statements = document["Statement"].as_sequence().map(Vec::as_slice).unwrap_or_default();
    if statements.is_empty() {
        problems
            .push(format!("{role}: no trust policy of the template's own (SAM's default has no condition)"));
    }
    for statement in statements {
        if let Err(problem) = conditioned_on_the_account(statement) {
            problems.push(format!("{role}: {problem}"));
        }
    }
}

#[test]
fn every_role_a_service_assumes_trusts_only_this_account() {
    let template = template();
    let globals = &template["Globals"]["Function"]["AssumeRolePolicyDocument"];
    let mut problems = Vec::new();
    let mut roles = 0;
    for (name, resource) in template["Resources"].as_mapping().expect("Resources") {
        let name = name.as_str().expect("name");
        let properties = &resource["Properties"];
        match resource["Type"].as_str() {
            Some("AWS::IAM::Role") => {
                roles += 1;
                check_trust_policy(name, &properties["AssumeRolePolicyDocument"], &mut problems);
            }
            // SAM generates `<Function>Role` from the function's trust policy, else from
            // Globals', else from a default with no condition.
            Some("AWS::Serverless::Function") => {
                if properties["Role"].is_null() {
                    roles += 1;
                    let own = &properties["AssumeRolePolicyDocument"];
                    let document = if own.is_null() { globals } else { own };
                    check_trust_policy(&format!("{name}Role"), document, &mut problems);
                }
                // Event sources SAM would give a role of its own, unconditioned, must name one
                // of the template's; HTTP API events need none.
                for (event, spec) in properties["Events"].as_mapping().into_iter().flatten() {
                    let event = event.as_str().unwrap_or_default();
                    match spec["Type"].as_str() {
                        Some("HttpApi") => {}
                        Some("ScheduleV2") if !spec["Properties"]["RoleArn"].is_null() => {}
                        other => problems.push(format!(
                            "{name}.{event}: a {} event gets a role SAM writes (no condition): give it RoleArn or model it here",
                            other.unwrap_or("untyped")
                        )),
                    }
                }
            }
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "trust policies not conditioned on the account:\n  {}",
        problems.join("\n  ")
    );
    assert!(roles >= dotmac_platform::Handler::ALL.len() + 3, "the walk saw the roles ({roles})");
}

/// The sample custom resource requests in `events/` (what the emulator test drives the
/// rotation function with) are the ones `InitialSigningKeys` makes CloudFormation send: its
/// type and every property the template gives it.
#[test]
fn the_sample_custom_resource_requests_match_initial_signing_keys() {
    let template = template();
    let resource = resource(&template, "InitialSigningKeys");
    let declared = keys(&resource["Properties"]);
    assert!(declared.contains("ServiceToken"), "{declared:?}");
    for kind in ["create", "update", "delete"] {
        let path =
            format!("{}/../../events/cloudformation-signing-keys-{kind}.json", env!("CARGO_MANIFEST_DIR"));
        let event: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("sample event")).expect("JSON");
        assert_eq!(event["ResourceType"].as_str(), resource["Type"].as_str(), "{kind}");
        assert_eq!(event["LogicalResourceId"], "InitialSigningKeys", "{kind}");
        let sent: BTreeSet<String> =
            event["ResourceProperties"].as_object().expect("ResourceProperties").keys().cloned().collect();
        assert_eq!(sent, declared, "{kind}: ResourceProperties are the template's Properties");
    }
}
