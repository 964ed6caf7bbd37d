//! Server-side apply of children and of status, plain creates and deletes, with one field
//! manager.

use crate::context::Context;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "ccplant-operator";

/// Applies `obj` (a complete desired object with apiVersion and kind) over the object of that
/// name in its namespace. With `uid`, only over that very object: the apiserver refuses (422,
/// metadata.uid is immutable) when the name now belongs to another.
pub async fn apply_object<K>(ctx: &Context, obj: &K, uid: Option<&str>) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + Serialize + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let mut obj = obj.clone();
    if let Some(uid) = uid {
        obj.meta_mut().uid = Some(uid.to_owned());
    }
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
}

/// Whether a create made the object or found one of that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    /// Something of that name exists (made earlier by this operator, or by someone else: the
    /// caller tells which).
    AlreadyExists,
}

/// Creates `obj` in its namespace with the operator's field manager.
pub async fn create_object<K>(ctx: &Context, obj: &K) -> Result<Created, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + Serialize + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match api.create(&params, obj).await {
        Ok(_) => Ok(Created::New),
        Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => {
            Ok(Created::AlreadyExists)
        }
        Err(e) => Err(e),
    }
}

/// Like [`apply_status`], but only if `obj` is still at its `resourceVersion` (409 otherwise).
pub async fn apply_status_at_version<K, S>(
    ctx: &Context,
    obj: &K,
    status: &S,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + DeserializeOwned,
    S: Serialize,
{
    patch_status(ctx, obj, status, obj.resource_version()).await
}

/// Applies `status` to `obj`'s status subresource and notes the write, so a reconcile of the
/// older cached object is recognised as stale ([`Context::is_stale`]).
pub async fn apply_status<K, S>(ctx: &Context, obj: &K, status: &S) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + DeserializeOwned,
    S: Serialize,
{
    patch_status(ctx, obj, status, None).await
}

/// Applies `next` as `obj`'s status unless it equals `stored`: steady state writes nothing.
pub async fn write_status<K, S>(
    ctx: &Context,
    obj: &K,
    stored: &S,
    next: &S,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + DeserializeOwned,
    S: Serialize + PartialEq,
{
    if stored != next {
        apply_status(ctx, obj, next).await?;
    }
    Ok(())
}

/// Deletes `ns/name` in the background; already gone is fine. With `uid`, only that very
/// object: when the name belongs to another object now (the uid precondition fails, 409),
/// nothing is deleted and that is fine too.
pub async fn delete<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let mut params = DeleteParams::background();
    if let Some(uid) = uid {
        params = params.preconditions(kube::api::Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        });
    }
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 && uid.is_some() => Ok(()),
        Err(e) => Err(e),
    }
}

async fn patch_status<K, S>(
    ctx: &Context,
    obj: &K,
    status: &S,
    version: Option<String>,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + Debug + DeserializeOwned,
    S: Serialize,
{
    if !ctx.leadership.may_write() {
        // A replica that lost its lease (or was frozen past its renew deadline) writes no
        // status: the new leader's would be overwritten. A conflict: the caller steps back.
        return Err(not_leader());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(version) = version {
        // A resourceVersion in an apply request is a precondition.
        patch["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    let updated = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.record_write(obj, &updated);
    Ok(updated)
}

/// The error of a write refused because this replica no longer leads (a 409: callers treat it as
/// a conflict and step back).
pub fn not_leader() -> kube::Error {
    let mut status = kube::core::Status::failure(
        "not written: this replica is no longer the leader",
        "NotLeader",
    );
    status.code = 409;
    kube::Error::Api(status.boxed())
}
