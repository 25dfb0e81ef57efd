"""Fake kube-apiserver for tests: kmock 0.8 KubernetesEmulator + fixes. HTTP, no auth.
python kapi.py [--port N] [--port-file F]   (port 0 = any; prints PORT=<n>; SIGTERM stops)"""
import argparse, asyncio, datetime, itertools, os, re, signal, uuid
import aiohttp.web, attrs, kmock
from kmock._internal import enums, parsing, k8s as K

_parse = parsing.parse_path          # fix 1: /api/v1/namespaces[/<name>] is a resource, not a ns prefix
def _parse_path(path):
    p = path.strip('/').split('/')
    if p[:3] == ['api', 'v1', 'namespaces'] and len(p) <= 4:
        return parsing.ParsedPath('', 'v1', 'namespaces', None, p[3] if len(p) == 4 else None, None)
    return _parse(path)
parsing.parse_path = _parse_path
STD = {'NotFound', 'AlreadyExists', 'Conflict', 'Invalid', 'BadRequest'}
SEL = re.compile(r'^\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$')

def labels_match(selector, labels):
    for term in re.split(r',(?![^()]*\))', selector):
        neg, key, op, val, setop, vals = SEL.match(term).groups()
        have = labels.get(key)
        if op: ok = (have == val) == (op != '!=')
        elif setop: ok = (have in [v.strip() for v in vals.split(',')]) == (setop == 'in')
        else: ok = (key in labels) != bool(neg)
        if not ok: return False
    return True

def field(obj, path):
    for part in path.split('.'): obj = obj.get(part) if isinstance(obj, dict) else None
    return obj

@attrs.define(kw_only=True)
class FakeApiserver(K.KubernetesEmulator):
    _rv: itertools.count = attrs.field(factory=lambda: itertools.count(1000), init=False)

    async def _render_error(self, exc):  # fix 2: standard Status reasons (kube's is_not_found() etc.)
        if not isinstance(exc, K.KubernetesError): return await super()._render_error(exc)
        reason = exc.reason if exc.reason in STD else {404: 'NotFound', 409: 'AlreadyExists'}.get(exc.status, 'InternalError')
        return aiohttp.web.json_response({'apiVersion': 'v1', 'kind': 'Status', 'metadata': {}, 'status': 'Failure',
            'code': exc.status, 'reason': reason, 'message': exc.message or reason}, status=exc.status)

    async def _handle(self, req):
        # fix 9, speed only: kmock 0.8 logs every request (kmock/_internal/apps.py:289) and each
        # reaction its own (dsl.py:472), and matches each new request by scanning those logs
        # (apps.py:344 -> dsl.py:146): quadratic. Nothing reads the logs (they serve kmock's in-process
        # assertions; this emulator runs as its own process), so only the last 100 are kept.
        del self._requests[:-100]
        for r in self._payloads: del r._requests[:-100]
        data = req.data
        if req.resource is None or req.method not in ('POST', 'PUT', 'PATCH') or not isinstance(data, dict):
            return await super()._handle(req)
        meta = data.setdefault('metadata', {})
        key = (req.resource, req.namespace or meta.get('namespace'), req.name or meta.get('name'))
        obj = self.objects[key] if key in self.objects else None
        live = obj is not None and not obj.deleted
        if live and req.method != 'POST' and meta.get('resourceVersion') not in (None, obj['metadata'].get('resourceVersion')):
            raise K.KubernetesError(status=409, reason='Conflict', message='the object has been modified')  # fix 3
        meta['resourceVersion'] = str(next(self._rv))                                                      # fix 4
        if req.method == 'POST' or (not live and 'apply-patch' in req.headers.get('Content-Type', '')):
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ'))
            if req.namespace: meta['namespace'] = req.namespace
            object.__setattr__(req, 'action', enums.action.CREATE)  # fix 5: SSA creates (mutate: kmock matches by identity)
        elif req.method == 'PUT':                                   # fix 6: PUT = replace
            if not live: raise K.KubernetesObjectNotFoundError()
            meta.update(uid=obj['metadata'].get('uid'), creationTimestamp=obj['metadata'].get('creationTimestamp'))
            async with self._lock:
                obj.create(data)
                await self._buses[req.resource].put({'type': 'MODIFIED', 'object': obj.raw})
            return aiohttp.web.json_response(obj.raw)
        return await super()._handle(req)

    async def _serve_list(self, req):  # fix 7: labelSelector, fieldSelector (equality), list kind + rv
        items = [o for o in (await super()._serve_list(req))['items'] if selected(req, o)]
        return {'apiVersion': 'v1', 'kind': 'List', 'metadata': {'resourceVersion': str(next(self._rv))}, 'items': items}

    # fix 8: the same selectors on watches, as the real API server's watch cache filters them
    # (kubernetes 04d6b4f11d53, staging/src/k8s.io/apiserver/pkg/storage/cacher/cache_watcher.go:362-401,
    # convertToWatchEvent: an event whose object does not pass the watcher's filter is not sent).
    # It also turns an object that stops matching into DELETED (:389-397); kmock keeps no previous
    # object to tell, so here such an event is dropped (said below and in the agent tests).
    async def _serve_watch(self, req):
        async for event in super()._serve_watch(req):
            if not isinstance(event, dict) or selected(req, event.get('object') or {}): yield event

def selected(req, obj):
    if (sel := req.params.get('labelSelector')) and not labels_match(sel, obj.get('metadata', {}).get('labels') or {}):
        return False
    for term in filter(None, req.params.get('fieldSelector', '').split(',')):
        k, op, v = re.match(r'([\w.]+)\s*(!=|==|=)\s*(.*)', term).groups()
        if (str(field(obj, k)) == v) == (op == '!='): return False
    return True

# Where each resource's shape comes from (group/version/plural, namespaced or not). The first five are
# the original script (../shared/reference/test-infra.md section 4, tested verbatim). Added for
# `nemoclaw agent` (tests/it/agent.rs), each as the real API declares it:
# - nemoclaw.io/v1alpha1 nemoclawhosts, NemoClawHost, namespaced: the CRD `nemoclaw crd` prints
#   (src/spec/crd.rs GROUP/VERSION/PLURAL/KIND, `scope: Namespaced`; schemas/nemoclawhost.crd.json).
# - coordination.k8s.io/v1 leases, Lease, namespaced: k8s-openapi 0.29.0
#   src/v1_33/api/coordination/v1/lease.rs:15-19 (GROUP, KIND, VERSION, URL_PATH_SEGMENT, Scope).
# - v1 events, Event, namespaced: k8s-openapi 0.29.0 src/v1_33/api/core/v1/event.rs:54-58.
# Differences from a real API server the agent tests rely on not mattering, and say so at their
# top: kmock ignores subresources, so a PATCH to .../nemoclawhosts/<name>/status lands on the object
# (status is not kept apart from spec, and `generation` is not bumped); no CRD schema validation;
# server-side apply is a merge without field ownership; watches replay existing objects as ADDED; a
# selector watch drops the events of objects that do not match (a real one sends DELETED when one stops).
RESOURCES = {'v1/namespaces': ('Namespace', False), 'v1/secrets': ('Secret', True), 'v1/configmaps': ('ConfigMap', True),
             'v1/persistentvolumeclaims': ('PersistentVolumeClaim', True), 'apps/v1/statefulsets': ('StatefulSet', True),
             'nemoclaw.io/v1alpha1/nemoclawhosts': ('NemoClawHost', True),  # the CRD `nemoclaw crd` prints
             'coordination.k8s.io/v1/leases': ('Lease', True),              # `nemoclaw agent`'s host lease
             'v1/events': ('Event', True)}                                   # and its events

async def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--port', type=int, default=0); ap.add_argument('--port-file')
    a = ap.parse_args(); stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT): asyncio.get_running_loop().add_signal_handler(s, stop.set)
    async with FakeApiserver() as k, kmock.Server(k, host='127.0.0.1', port=a.port or None) as srv:
        for r, (kind, namespaced) in RESOURCES.items():   # undeclared resources answer 404
            k.resources[r] = dict(kind=kind, singular=kind.lower(), namespaced=namespaced,
                                  verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete'})
        print(f'PORT={srv.port}', flush=True)
        if a.port_file: open(a.port_file + '.tmp', 'w').write(str(srv.port)); os.replace(a.port_file + '.tmp', a.port_file)
        await stop.wait()

asyncio.run(main())
