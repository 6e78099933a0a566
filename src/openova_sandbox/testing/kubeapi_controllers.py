"""The fake API server's background controllers: garbage collection and namespace
termination. They run after the request that caused them has been answered (like the
real controllers), and ``settle`` runs them to completion on demand for tests."""

from __future__ import annotations

import asyncio

from .kubeapi_storage import Storage


async def settle(storage: Storage) -> None:
    """One pass of garbage collection and namespace termination, until nothing moves."""
    progressed = True
    while progressed:
        progressed = await _gc_pass(storage) or await _namespace_pass(storage)


async def _gc_pass(storage: Storage) -> bool:
    uids = {o["metadata"]["uid"] for objs in storage.objects.values() for o in objs.values()}
    for (group, plural), objs in list(storage.objects.items()):
        rt = storage.type_of(group, plural)
        if rt is None:
            continue
        for (ns, name), obj in list(objs.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if refs and not any(r.get("uid") in uids for r in refs):
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                await storage.delete(rt, ns, name)
                return True
    return False


async def _namespace_pass(storage: Storage) -> bool:
    namespaces = storage.objects[("", "namespaces")]
    for (_, ns_name), ns in list(namespaces.items()):
        if not ns["metadata"].get("deletionTimestamp"):
            continue
        remaining = False
        for (group, plural), objs in list(storage.objects.items()):
            rt = storage.type_of(group, plural)
            if rt is None or not rt.namespaced:
                continue
            for (ns_key, name), obj in list(objs.items()):
                if ns_key != ns_name:
                    continue
                remaining = True
                if not obj["metadata"].get("deletionTimestamp"):
                    await storage.delete(rt, ns_key, name)
                    return True
        if remaining:
            continue
        if ns["metadata"].get("finalizers"):
            continue
        del namespaces[("", ns_name)]
        ns["metadata"]["resourceVersion"] = storage.bump()
        ns_type = storage.type_of("", "namespaces")
        assert ns_type is not None
        await storage.emit(ns_type, "DELETED", ns)
        return True
    return False


async def run_controllers(storage: Storage) -> None:
    while not storage.closing:
        await storage.dirty.wait()
        storage.dirty.clear()
        await asyncio.sleep(0.01)  # let the caller's response go first, like real GC
        await settle(storage)
