//! What every authenticated request reads before it is let in, in one strongly consistent
//! round trip (`BatchGetItem`): the token's deny entry, its session, its user (active, and
//! the mark that ends older sessions), the definitions of the custom roles it names, and,
//! when the route asks, the object the route is about to read anyway. Checking each on its
//! own would cost a round trip per check on every request.

use dotmac_domain::{Fence, RoleName, Tenant, TenantId};

use crate::StoreError;
use crate::dynamo::{Item, decode};
use crate::fence::{Fenced, admits};
use crate::keys::{ItemKey, Stored, tenant_pk};
use crate::roles::RoleRecord;
use crate::sessions::{SessionRefusal, denied_until, session_of};
use crate::tenants::TenantItem;
use crate::users::{UserHome, UserRecord};

/// The signed-in person a session token speaks for.
#[derive(Debug, Clone)]
pub struct SessionOf<'a> {
    pub family: &'a str,
    pub home: UserHome,
    pub user_id: &'a str,
}

/// What a verified access token presents.
#[derive(Debug, Clone)]
pub struct Presented<'a> {
    pub jti: &'a str,
    /// `None` for a machine token, which belongs to no session.
    pub session: Option<SessionOf<'a>>,
    /// The custom roles the token names, in the caller's tenant.
    pub custom_roles: Option<(TenantId, Vec<&'a RoleName>)>,
}

/// An object a route reads, fetched in the same round trip as the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Also {
    Tenant(TenantId),
}

/// What the checks found.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Why the token is refused; `None` lets it in.
    pub refusal: Option<SessionRefusal>,
    pub user: Option<UserRecord>,
    /// The current definitions of the custom roles the token names (those that exist).
    pub roles: Vec<RoleRecord>,
    /// The tenant `Also::Tenant` asked for, if it exists within the caller's reach.
    pub tenant: Option<Tenant>,
}

impl Fenced<'_> {
    /// Reads everything `presented` needs checked, and `also`, in one round trip, and decides.
    pub async fn admission(
        &self,
        presented: &Presented<'_>,
        also: Option<Also>,
        now: i64,
    ) -> Result<Admission, StoreError> {
        let mut keys = vec![ItemKey::denied_token(presented.jti)];
        if let Some(session) = &presented.session {
            keys.push(ItemKey::session(session.family));
            keys.push(ItemKey::user(session.home.pk(), session.user_id));
        }
        let role_keys = match &presented.custom_roles {
            Some((tenant, names)) if admits(self.fence(), &tenant_pk(*tenant)) => {
                names.iter().map(|name| ItemKey::role(*tenant, name.as_str())).collect()
            }
            _ => Vec::new(),
        };
        let roles_at = keys.len();
        keys.extend(role_keys);
        let tenant_at = keys.len();
        // A partner's tenants are found by what they record, not by their key, so its read
        // is checked after; any other fence is checked before the key is even asked for.
        let wants_tenant = match also {
            Some(Also::Tenant(id)) if matches!(self.fence(), Fence::Partner(_)) => Some(id),
            Some(Also::Tenant(id)) => admits(self.fence(), &tenant_pk(id)).then_some(id),
            None => None,
        };
        if let Some(id) = wants_tenant {
            keys.push(ItemKey::tenant(id));
        }

        let items = self.store().read_items(keys).await?;
        let denied = denied_until(items.first().and_then(Option::as_ref), now);
        let (session, user) = match &presented.session {
            Some(_) => (session_of(item(&items, 1))?, item(&items, 2).cloned().map(user_of).transpose()?),
            None => (None, None),
        };
        let roles = items
            .get(roles_at..tenant_at)
            .unwrap_or_default()
            .iter()
            .flatten()
            .cloned()
            .map(|item| decode::<Stored<RoleRecord>>(item).map(|stored| stored.record))
            .collect::<Result<Vec<_>, _>>()?;
        let tenant = match wants_tenant {
            Some(_) => item(&items, tenant_at)
                .cloned()
                .map(|item| decode::<TenantItem>(item).map(|stored| stored.record.tenant))
                .transpose()?
                .filter(|tenant| self.may_see(tenant)),
            None => None,
        };
        let refusal = if denied {
            Some(SessionRefusal::SignedOut)
        } else {
            match (&presented.session, &session) {
                (None, _) => None,
                (Some(_), None) => Some(SessionRefusal::Unknown),
                (Some(_), Some(session)) => session.refusal(user.as_ref(), now),
            }
        };
        Ok(Admission { refusal, user, roles, tenant })
    }
}

fn item(items: &[Option<Item>], at: usize) -> Option<&Item> {
    items.get(at).and_then(Option::as_ref)
}

fn user_of(item: Item) -> Result<UserRecord, StoreError> {
    decode::<Stored<UserRecord>>(item).map(|stored| stored.record)
}
