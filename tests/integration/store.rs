//! The DynamoDB adapter against the emulator.

use dotmac_domain::{Email, NewTenant, PlanId, Tenant, TenantName, TenantSlug, TenantStatus};
use dotmac_store::{Begin, IdempotencyKey, SavedResponse, StoreError, TenantRecord};
use dotmac_tests::TestStack;
use time::OffsetDateTime;

fn tenant(slug: &str) -> Tenant {
    Tenant::onboard(
        NewTenant {
            name: TenantName::parse("Acme Fiber").expect("name"),
            slug: TenantSlug::parse(slug).expect("slug"),
            plan: PlanId::parse("usage").expect("plan"),
            contact_email: Email::parse("ops@acme.example").expect("email"),
            partner_id: None,
        },
        OffsetDateTime::now_utc(),
    )
}

#[tokio::test]
async fn a_slug_is_claimed_once_and_a_refused_create_leaves_nothing() {
    let stack = TestStack::new(&[]).await;
    let store = &stack.platform.store;
    let first = tenant("acme-fiber");
    store.create_tenant(&first).await.expect("first create");
    let second = tenant("acme-fiber");
    let refused = store.create_tenant(&second).await;
    assert!(matches!(refused, Err(StoreError::SlugTaken(ref s)) if s == "acme-fiber"), "{refused:?}");
    assert_eq!(store.get_tenant(second.id).await.expect("get"), None, "the losing tenant must not exist");
    assert_eq!(store.get_tenant(first.id).await.expect("get"), Some(first.clone()));
    assert_eq!(store.tenant_id_for_slug("acme-fiber").await.expect("slug"), Some(first.id));
}

#[tokio::test]
async fn saves_are_optimistically_locked() {
    let stack = TestStack::new(&[]).await;
    let store = &stack.platform.store;
    let t = tenant("locked-isp");
    store.create_tenant(&t).await.expect("create");
    let mut mine = store.get_tenant_record(t.id).await.expect("get").expect("exists");
    let mut theirs: TenantRecord = mine.clone();
    mine.tenant.transition(TenantStatus::Active, OffsetDateTime::now_utc()).expect("transition");
    store.save_tenant(&mut mine).await.expect("first writer wins");
    assert_eq!(mine.tenant.version, 2);
    theirs.tenant.customer_count = 99;
    let lost = store.save_tenant(&mut theirs).await;
    assert!(matches!(lost, Err(StoreError::VersionConflict { expected: 1 })), "{lost:?}");
    let stored = store.get_tenant(t.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, TenantStatus::Active);
    assert_eq!(stored.customer_count, 0);
}

#[tokio::test]
async fn lists_every_tenant_once_across_pages() {
    let stack = TestStack::new(&[]).await;
    let store = &stack.platform.store;
    let mut created = Vec::new();
    for i in 0..5 {
        let t = tenant(&format!("page-isp-{i}"));
        store.create_tenant(&t).await.expect("create");
        created.push(t.id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = store.list_tenants(2, cursor.as_deref()).await.expect("page");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|t| t.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, created, "creation order, no gaps, no repeats");
    assert!(matches!(store.list_tenants(2, Some("not-a-cursor")).await, Err(StoreError::BadCursor)));
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_reuse() {
    let stack = TestStack::new(&[]).await;
    let store = &stack.platform.store;
    let key = IdempotencyKey::parse("retry-me-1").expect("key");
    let now = OffsetDateTime::now_utc();
    let begin = |scope: &'static str, fingerprint: &'static str| {
        store.begin_idempotent(scope, &key, fingerprint, now)
    };
    let Begin::Started(claim) = begin("caller", "fp-a").await.expect("begin") else {
        panic!("a fresh key starts");
    };
    assert_eq!(begin("caller", "fp-a").await.expect("begin"), Begin::InProgress);
    let saved = SavedResponse { status: 202, body: "{\"id\":\"x\"}".into() };
    store.complete_idempotent("caller", &key, &claim, &saved).await.expect("complete");
    assert_eq!(begin("caller", "fp-a").await.expect("begin"), Begin::Replay(saved.clone()));
    assert_eq!(begin("caller", "fp-b").await.expect("begin"), Begin::Mismatch);
    // A stale claim can neither free nor overwrite the saved response.
    store.abandon_idempotent("caller", &key, &claim).await.expect("abandon is a no-op");
    assert_eq!(begin("caller", "fp-a").await.expect("begin"), Begin::Replay(saved.clone()));

    // Keys are per caller: another caller's identical key is a fresh start, and once freed
    // by its holder it can be used again.
    let Begin::Started(other) = begin("other", "fp-b").await.expect("begin") else {
        panic!("another caller's key is its own");
    };
    store.abandon_idempotent("other", &key, &other).await.expect("abandon");
    assert!(matches!(begin("other", "fp-c").await.expect("begin"), Begin::Started(_)));
}

#[tokio::test]
async fn plans_are_seeded() {
    let stack = TestStack::new(&[]).await;
    // The sizes the README promises: 0.25 vCPU / 512 MiB, 0.5 vCPU / 1 GiB, 1 vCPU / 2 GiB.
    for (id, cpu, memory_mib) in [("usage", 256, 512), ("scaled", 512, 1024), ("enterprise", 1024, 2048)] {
        let plan = stack.platform.store.get_plan(&PlanId::parse(id).expect("id")).await.expect("get");
        let plan = plan.unwrap_or_else(|| panic!("{id} is seeded"));
        assert!(plan.task_size.is_valid_fargate_size(), "{id}");
        assert_eq!((plan.task_size.cpu, plan.task_size.memory_mib), (cpu, memory_mib), "{id}");
    }
    assert_eq!(stack.platform.store.get_plan(&PlanId::parse("gold").expect("id")).await.expect("get"), None);
}

/// The fence is the store's own check: whatever a handler asked, a tenant's view of the store
/// cannot read or write another tenant's rows (and the refused call never reaches DynamoDB).
#[tokio::test]
async fn a_fenced_view_refuses_every_key_outside_its_tenant() {
    use dotmac_domain::{CustomRole, Fence, PartnerId, Permission, RoleName, Scope};
    use dotmac_store::{RoleRecord, RoleWrite, UserChanges, UserHome, UserRecord};

    let stack = TestStack::new(&[]).await;
    let store = &stack.platform.store;
    let (a, mut b) = (tenant("fence-a"), tenant("fence-b"));
    b.partner_id = Some(PartnerId::parse("acme").expect("partner"));
    store.create_tenant(&a).await.expect("a");
    store.create_tenant(&b).await.expect("b");
    let b_user = UserRecord {
        id: uuid::Uuid::now_v7().to_string(),
        email: Email::parse("user@fence-b.example").expect("email"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        tenant_id: Some(b.id),
        partner_id: None,
        roles: vec![RoleName::parse("customer_user").expect("role")],
        active: true,
        created_at: OffsetDateTime::now_utc(),
        last_login: None,
        sessions_valid_after_ms: 0,
    };
    store.create_user(&b_user).await.expect("b's user");
    let b_role = RoleRecord {
        role: CustomRole::new(
            RoleName::parse("b-role").expect("name"),
            String::new(),
            vec![Permission::new(None, None, Scope::Tenant)],
        )
        .expect("role"),
        tenant_id: b.id,
        updated_at: OffsetDateTime::now_utc(),
        retiring: false,
    };
    store.put_role(&b_role, RoleWrite::Create).await.expect("b's role");

    let fenced = store.fenced(Fence::Tenant(a.id));
    let b_home = UserHome::Tenant(b.id);
    let out = |result: Result<(), StoreError>, what: &str| {
        assert!(matches!(result, Err(StoreError::OutOfFence { .. })), "{what}: {result:?}");
    };
    out(fenced.get_tenant(b.id).await.map(|_| ()), "read B's tenant");
    out(fenced.get_user(&b_home, &b_user.id).await.map(|_| ()), "read B's user");
    out(fenced.list_users(&b_home, 10, None).await.map(|_| ()), "list B's users");
    out(
        fenced
            .update_user(&b_home, &b_user.id, &UserChanges { active: Some(false), roles: None }, 0)
            .await
            .map(|_| ()),
        "change B's user",
    );
    out(fenced.delete_user(&b_user).await.map(|_| ()), "delete B's user");
    let mut planted = b_user.clone();
    planted.id = uuid::Uuid::now_v7().to_string();
    planted.email = Email::parse("planted@fence-b.example").expect("email");
    out(fenced.create_user(&planted).await, "create a user in B");
    out(fenced.list_roles(b.id).await.map(|_| ()), "list B's roles");
    out(fenced.put_role(&b_role, RoleWrite::Replace).await.map(|_| ()), "change B's role");
    out(fenced.delete_role(b.id, &b_role.role.name, 0).await.map(|_| ()), "delete B's role");
    out(fenced.list_tenants(10, None).await.map(|_| ()), "list every tenant");
    out(fenced.create_tenant(&tenant("fence-c"), None).await, "create a tenant");
    // Its own rows it reaches.
    assert_eq!(fenced.get_tenant(a.id).await.expect("own"), Some(a.clone()));

    // A partner's view reaches the tenants it brought and no others.
    let acme = store.fenced(Fence::Partner(PartnerId::parse("acme").expect("partner")));
    assert_eq!(acme.get_tenant(b.id).await.expect("brought").map(|t| t.id), Some(b.id));
    assert_eq!(acme.get_tenant(a.id).await.expect("answer"), None, "a tenant it did not bring is not there");
    out(acme.get_user(&b_home, &b_user.id).await.map(|_| ()), "a partner reading a tenant's user");
    let listed = acme.list_tenants(100, None).await.expect("list");
    assert_eq!(listed.items.iter().map(|t| t.id).collect::<Vec<_>>(), vec![b.id]);

    // Nothing of B changed, and the global view sees it all.
    let global = store.fenced(Fence::Global);
    assert_eq!(global.get_user(&b_home, &b_user.id).await.expect("get"), Some(b_user.clone()));
    assert_eq!(global.list_roles(b.id).await.expect("roles"), vec![b_role]);
    assert_eq!(store.get_user_by_email(&planted.email).await.expect("lookup"), None);
}
