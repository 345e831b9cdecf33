//! The tenant's task definition is reused only while it matches what would be registered now
//! (image, sizes, environment, secrets), and registered again when any of them changes.

use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, KeyValuePair, NetworkMode};
use dotmac_provisioner::Fleet;
use dotmac_tests::TestStack;

use crate::provisioner::onboarded;

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:t/tenants/x-AbCdEf";

async fn register_baseline(stack: &TestStack, value: &str) {
    let settings = &stack.config().ecs;
    aws_sdk_ecs::Client::new(&stack.sdk)
        .register_task_definition()
        .family(&settings.task_family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("isp-framework")
                .image("baseline:1")
                .essential(true)
                .memory(512)
                .environment(KeyValuePair::builder().name("DOTMAC_PLATFORM_API_URL").value(value).build())
                .build(),
        )
        .send()
        .await
        .expect("baseline registered");
}

#[tokio::test]
async fn a_tenant_definition_is_reused_until_something_it_runs_changes() {
    let stack = TestStack::new(&[]).await;
    let tenant = onboarded(&stack, "usage").await;
    let ecs = aws_sdk_ecs::Client::new(&stack.sdk);
    let fleet = Fleet::new(ecs.clone(), stack.config().ecs.clone());

    let first = fleet.ensure_tenant_task_definition(tenant.id, SECRET).await.expect("registered");
    let again = fleet.ensure_tenant_task_definition(tenant.id, SECRET).await.expect("reused");
    assert_eq!(first, again, "nothing changed: the same revision");

    // A baseline appears (the stack's definition): its environment is copied in.
    register_baseline(&stack, "https://api.one.example").await;
    let with_baseline = fleet.ensure_tenant_task_definition(tenant.id, SECRET).await.expect("registered");
    assert_ne!(with_baseline, again, "the environment changed");
    assert_eq!(fleet.ensure_tenant_task_definition(tenant.id, SECRET).await.expect("reused"), with_baseline);

    // The baseline's environment changes (a stack update).
    register_baseline(&stack, "https://api.two.example").await;
    let new_env = fleet.ensure_tenant_task_definition(tenant.id, SECRET).await.expect("registered");
    assert_ne!(new_env, with_baseline, "a changed environment registers a new revision");

    // Another secret, then another image.
    let other_secret = format!("{SECRET}2");
    let new_secret = fleet.ensure_tenant_task_definition(tenant.id, &other_secret).await.expect("registered");
    assert_ne!(new_secret, new_env);
    let mut settings = stack.config().ecs.clone();
    settings.image = "registry.example/isp-framework:2.0.0".into();
    let new_image = Fleet::new(ecs.clone(), settings)
        .ensure_tenant_task_definition(tenant.id, &other_secret)
        .await
        .expect("registered");
    assert_ne!(new_image, new_secret, "a new image registers a new revision");
    let described =
        ecs.describe_task_definition().task_definition(&new_image).send().await.expect("describe");
    let container = &described.task_definition().expect("definition").container_definitions()[0];
    assert_eq!(container.image(), Some("registry.example/isp-framework:2.0.0"));
    assert_eq!(container.environment()[0].value(), Some("https://api.two.example"));
}
