# Generates the Grafana dashboards of this directory:
#   python3 deploy/monitoring/dashboards.py deploy/monitoring
# registry/monitoring_test.go checks every query against a running cache and origin.
import json, sys

def ds():
    return {"type": "prometheus", "uid": "${datasource}"}

class D:
    def __init__(s, uid, title, desc, var_metric, registry=False):
        s.uid, s.title, s.desc, s.registry = uid, title, desc, registry
        s.panels, s.y, s.id = [], 0, 0
        s.var_metric = var_metric
    def row(s, title):
        s.id += 1
        s.panels.append({"type": "row", "id": s.id, "title": title, "collapsed": False,
                         "gridPos": {"h": 1, "w": 24, "x": 0, "y": s.y}, "panels": []})
        s.y += 1; s.x = 0
    def panel(s, kind, title, desc, targets, unit="short", w=12, h=8, extra=None):
        s.id += 1
        if s.x + w > 24:
            s.x = 0; s.y += h
        p = {"type": kind, "id": s.id, "title": title, "description": desc, "datasource": ds(),
             "gridPos": {"h": h, "w": w, "x": s.x, "y": s.y},
             "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
             "options": {},
             "targets": [{"refId": chr(65+i), "datasource": ds(), "expr": s.filter(e), "legendFormat": l}
                         for i, (e, l) in enumerate(targets)]}
        if kind == "timeseries":
            p["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
        if kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value", "graphMode": "area"}
        if extra: p.update(extra)
        s.panels.append(p)
        s.x += w
        if s.x >= 24:
            s.x = 0; s.y += h
    def filter(s, e):
        """The registry filter on the metrics that have the registry label."""
        if not s.registry:
            return e
        for m in ("content_cache_requests_total", "content_cache_served_bytes_total",
                  "content_cache_upstream_bytes_total", "content_cache_authorization_decisions_total"):
            e = e.replace(m + '{instance=~"$instance"', m + '{instance=~"$instance",registry=~"$registry"')
        return e
    def out(s):
        return {"uid": s.uid, "title": s.title, "description": s.desc, "tags": ["content-cache"],
                "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
                "time": {"from": "now-6h", "to": "now"}, "refresh": "1m", "timezone": "",
                "templating": {"list": [
                    {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {}, "hide": 0},
                    {"name": "instance", "label": "Instance", "type": "query", "datasource": ds(),
                     "query": {"query": "label_values(%s, instance)" % s.var_metric, "refId": "instance"},
                     "definition": "label_values(%s, instance)" % s.var_metric,
                     "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1, "hide": 0}] + ([
                    {"name": "registry", "label": "Registry", "type": "query", "datasource": ds(),
                     "query": {"query": "label_values(%s, registry)" % s.var_metric, "refId": "registry"},
                     "definition": "label_values(%s, registry)" % s.var_metric,
                     "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1, "hide": 0}] if s.registry else [])},
                "annotations": {"list": []},
                "panels": s.panels}

I = 'instance=~"$instance"'
IR = 'instance=~"$instance",registry=~"$registry"'
R = '$__rate_interval'
c = D("content-cache", "content-cache: cache", "A content cache: hits, traffic, fills, upstreams, authorization, expiry.", "content_cache_requests_total", registry=True)
c.row("Hits and traffic")
hit = 'sum(rate(content_cache_requests_total{%s,kind="blob",result=~"hit|coalesced"}[%s])) / sum(rate(content_cache_requests_total{%s,kind="blob",result=~"hit|miss|coalesced"}[%s]))' % (I, R, I, R)
c.panel("stat", "Blob hit ratio", "Blob pulls the upstreams did not serve again (hit or coalesced) over hits, misses and coalesced.", [(hit, "hit ratio")], unit="percentunit", w=6, h=6)
c.panel("stat", "Bytes saved (24h)", "Bytes served that the upstreams did not send again: hits and coalesced streams.",
        [('sum(increase(content_cache_served_bytes_total{%s,result=~"hit|coalesced"}[1d]))' % I, "saved")], unit="bytes", w=6, h=6)
c.panel("stat", "Upstream bytes per byte served (1h)", "Below 1 the cache saves traffic.",
        [('sum(rate(content_cache_upstream_bytes_total{%s}[1h])) / sum(rate(content_cache_served_bytes_total{%s}[1h]))' % (I, I), "ratio")], unit="none", w=6, h=6)
c.panel("stat", "Fills in flight", "Blob fetches in progress, each shared by every client asking for that blob.",
        [('sum(content_cache_fills_in_flight{%s})' % I, "fills")], w=6, h=6)
c.panel("timeseries", "Blob hit ratio by instance", "Per cache.",
        [('sum by (instance) (rate(content_cache_requests_total{%s,kind="blob",result=~"hit|coalesced"}[%s])) / sum by (instance) (rate(content_cache_requests_total{%s,kind="blob",result=~"hit|miss|coalesced"}[%s]))' % (I, R, I, R), "{{instance}}")], unit="percentunit")
c.panel("timeseries", "Requests by result", "Requests answered, by result: hit, miss, coalesced, forwarded, denied, error.",
        [('sum by (result) (rate(content_cache_requests_total{%s}[%s]))' % (I, R), "{{result}}")], unit="reqps")
c.panel("timeseries", "Requests by registry", "The registries this cache serves (the registries option, chosen by ns); default is the top-level upstreams.",
        [('sum by (registry) (rate(content_cache_requests_total{%s}[%s]))' % (I, R), "{{registry}}")], unit="reqps")
c.panel("timeseries", "Requests by kind", "blob, manifest, tags, catalog, base (GET /v2/), referrers.",
        [('sum by (kind) (rate(content_cache_requests_total{%s}[%s]))' % (I, R), "{{kind}}")], unit="reqps")
c.panel("timeseries", "Bytes served and fetched", "Response bytes to clients by result, and body bytes from the upstreams.",
        [('sum by (result) (rate(content_cache_served_bytes_total{%s}[%s]))' % (I, R), "served {{result}}"),
         ('sum by (kind) (rate(content_cache_upstream_bytes_total{%s}[%s]))' % (I, R), "fetched {{kind}}")], unit="Bps")
c.panel("timeseries", "Fills in flight by instance", "Blob fetches in progress until their commit to storage ends.",
        [('sum by (instance) (content_cache_fills_in_flight{%s})' % I, "{{instance}}")])
c.row("Upstreams")
c.panel("timeseries", "Upstream health", "1 if the last health probe of the upstream got an HTTP answer.",
        [('content_cache_upstream_up{%s}' % I, "{{instance}} → {{upstream}}")], unit="bool", extra={"fieldConfig": {"defaults": {"unit": "bool", "min": 0, "max": 1}, "overrides": []}})
c.panel("timeseries", "Upstream requests by class", "Round trips to each upstream: 2xx, 3xx, 4xx, 5xx, or error (no answer).",
        [('sum by (upstream, class) (rate(content_cache_upstream_requests_total{%s}[%s]))' % (I, R), "{{upstream}} {{class}}")], unit="reqps")
c.panel("timeseries", "Upstream error ratio", "Answers 5xx or none at all, over all round trips, per upstream.",
        [('sum by (upstream) (rate(content_cache_upstream_requests_total{%s,class=~"5xx|error"}[%s])) / sum by (upstream) (rate(content_cache_upstream_requests_total{%s}[%s]))' % (I, R, I, R), "{{upstream}}")], unit="percentunit")
c.panel("timeseries", "Upstream latency", "Time to the upstream's response headers, or to its failure.",
        [('histogram_quantile(0.5, sum by (upstream, le) (rate(content_cache_upstream_request_duration_seconds_bucket{%s}[%s])))' % (I, R), "p50 {{upstream}}"),
         ('histogram_quantile(0.99, sum by (upstream, le) (rate(content_cache_upstream_request_duration_seconds_bucket{%s}[%s])))' % (I, R), "p99 {{upstream}}")], unit="s")
c.row("Authorization")
c.panel("timeseries", "Refusals by the origin", "Requests the origin refused (401 or 403), by kind.",
        [('sum by (kind) (rate(content_cache_requests_total{%s,result="denied"}[%s]))' % (I, R), "{{kind}}")], unit="reqps")
c.panel("timeseries", "Authorization decisions", "allowed/cached: an allowed answer reused within authttl; asked: answers the origin gave just now. Denials are never cached.",
        [('sum by (decision, source) (rate(content_cache_authorization_decisions_total{%s}[%s]))' % (I, R), "{{decision}} {{source}}")], unit="ops")
c.row("Expiry, size bound and storage")
c.panel("timeseries", "Evictions by reason", "Digests deleted: ttl (nobody pulled them for blobttl) or size (least recently pulled, once stored data passed maxsize).",
        [('sum by (reason) (rate(content_cache_evictions_total{%s}[%s]))' % (I, R), "{{reason}}")], unit="ops")
c.panel("timeseries", "Bytes evicted by reason", "Bytes of data freed, by reason (ttl, size).",
        [('sum by (reason) (rate(content_cache_evicted_bytes_total{%s}[%s]))' % (I, R), "{{reason}}")], unit="Bps")
c.panel("timeseries", "Stored bytes and the bound", "Blob and manifest data in storage as the size index counts it, and maxsize (both 0 without maxsize).",
        [('sum by (instance) (content_cache_stored_bytes{%s})' % I, "stored {{instance}}"),
         ('max by (instance) (content_cache_max_size_bytes{%s})' % I, "maxsize {{instance}}")], unit="bytes")
c.panel("stat", "Storage used of the bound", "Stored bytes over maxsize; eviction brings it back to lowwatermark.",
        [('max(content_cache_stored_bytes{%s} / (content_cache_max_size_bytes{%s} > 0))' % (I, I), "used")], unit="percentunit")

c.row("Replicas")
c.panel("timeseries", "Fills led and followed", "Blob fills fetched under the cluster-wide fill lease, and fills streamed from the replica holding it instead (with the redis option).",
        [('sum by (instance) (rate(content_cache_fills_led_total{%s}[%s]))' % (I, R), "led {{instance}}"),
         ('sum by (instance) (rate(content_cache_fills_followed_total{%s}[%s]))' % (I, R), "followed {{instance}}")], unit="ops")
c.panel("timeseries", "Lease takeovers", "Fill leases taken over after the holder died, stalled or lost its lease.",
        [('sum by (instance) (increase(content_cache_lease_takeovers_total{%s}[%s]))' % (I, R), "{{instance}}")], unit="short")
c.panel("timeseries", "Redis fallback", "1 while Redis is unreachable and the replica works alone (its own coalescing and in-use holds, no sweep).",
        [('max by (instance) (content_cache_cluster_fallback{%s})' % I, "{{instance}}")], unit="bool", extra={"fieldConfig": {"defaults": {"unit": "bool", "min": 0, "max": 1}, "overrides": []}})
c.panel("timeseries", "Redis errors", "Failed calls to Redis (timeouts, refused connections, errors).",
        [('sum by (instance) (rate(content_cache_redis_errors_total{%s}[%s]))' % (I, R), "{{instance}}")], unit="ops")

o = D("content-cache-origin", "content-cache: origin", "The origin side of transparent caches: redirects to caches, blobs the origin served itself, and the caches' health.", "content_cache_origin_direct_total")
o.row("Redirects")
o.panel("stat", "Share of blob GETs redirected", "Redirected to a cache over all blob GETs the origin authorized and found.",
        [('sum(rate(content_cache_origin_redirects_total{%s}[%s])) / (sum(rate(content_cache_origin_redirects_total{%s}[%s])) + sum(rate(content_cache_origin_direct_total{%s}[%s])))' % (I, R, I, R, I, R), "redirected")], unit="percentunit", w=8, h=6)
o.panel("stat", "Caches up", "Caches that answered the origin's last probe.",
        [('sum(content_cache_origin_cache_up{%s})' % I, "up")], w=8, h=6)
o.panel("stat", "Caches down", "Caches whose last probe failed: their users pull from the origin.",
        [('count(content_cache_origin_cache_up{%s} == 0) or vector(0)' % I, "down")], w=8, h=6)
o.panel("timeseries", "Redirects per cache", "Blob GETs redirected to each cache.",
        [('sum by (cache) (rate(content_cache_origin_redirects_total{%s}[%s]))' % (I, R), "{{cache}}")], unit="reqps")
o.panel("timeseries", "Direct serves by reason", "Blob GETs the origin served itself: unassigned, unknown_cache, unhealthy, store_error, via_cache.",
        [('sum by (reason) (rate(content_cache_origin_direct_total{%s}[%s]))' % (I, R), "{{reason}}")], unit="reqps")
o.panel("timeseries", "Cache health", "1 if the cache's /v2/ answered the origin's last probe.",
        [('content_cache_origin_cache_up{%s}' % I, "{{instance}} → {{cache}}")], unit="bool", w=24, extra={"fieldConfig": {"defaults": {"unit": "bool", "min": 0, "max": 1}, "overrides": []}})

json.dump(c.out(), open(sys.argv[1] + "/content-cache.json", "w"), indent=2)
json.dump(o.out(), open(sys.argv[1] + "/content-cache-origin.json", "w"), indent=2)
