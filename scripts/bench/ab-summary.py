# Summarises scripts/bench/ab.sh: per scenario, median req/s and p99 of stack A and B, and stack CPU per call.
import json,glob,os,statistics,sys
# Scenarios to summarise, as SCENARIOS=get:64,get:1,list: NAME:C is that
# scenario at C calls in flight, a bare NAME every run of it.
SCEN=os.environ.get('SCENARIOS','get,list').split(',')
def name(x):
    """A scenario report's NAME:C."""
    return f"{x['scenario']}:{x['concurrency']}"
def matches(x, sc):
    return name(x)==sc or x['scenario']==sc
pat=sys.argv[1] if len(sys.argv)>1 else '/tmp/bench-%s-*.json'
res={}
for s in 'ab':
    for f in sorted(glob.glob(pat%s)):
        r=json.load(open(f))
        for x in r['scenarios']:
            for sc in SCEN:
                if matches(x, sc):
                    res.setdefault((sc,s),[]).append((x['rps'],x['latency']['p99_ms'],x['machine_cpu']['other_cores'],x['latency']['p99.9_ms']))
for sc in SCEN:
    a=[x[0] for x in res.get((sc,'a'),[])]; b=[x[0] for x in res.get((sc,'b'),[])]
    if not a or not b: continue
    pa=[x[1] for x in res[(sc,'a')]]; pb=[x[1] for x in res[(sc,'b')]]
    ta=[x[3] for x in res[(sc,'a')]]; tb=[x[3] for x in res[(sc,'b')]]
    print(f"{sc}: n={len(a)} A median {statistics.median(a):.0f} req/s (runs {', '.join(f'{x:.0f}' for x in a)}), p99 median {statistics.median(pa):.1f} ms, p99.9 median {statistics.median(ta):.1f} ms; B median {statistics.median(b):.0f} req/s (runs {', '.join(f'{x:.0f}' for x in b)}), p99 median {statistics.median(pb):.1f} ms, p99.9 median {statistics.median(tb):.1f} ms; A/B = {statistics.median(a)/statistics.median(b):.3f}; mean ratio {statistics.mean(a)/statistics.mean(b):.3f}; other cores max {max(x[2] for x in res[(sc,'a')]+res[(sc,'b')]):.2f}")
def per_side(sc, measure):
    """measure(scenario report) for every run of scenario sc, per stack (a, b);
    runs where measure gives None are left out."""
    out=[]
    for s in 'ab':
        vals=[]
        for f in sorted(glob.glob(pat%s)):
            for x in json.load(open(f))['scenarios']:
                if matches(x, sc):
                    v=measure(x)
                    if v is not None:
                        vals.append(v)
        out.append(vals)
    return out
# CPU per call (stack processes: gateway + todo + user), microseconds, a steadier measure than req/s on a noisy VM
for sc in SCEN:
    out=per_side(sc, lambda x: sum(x['process_cpu'].values())/x['rps']*1e6)
    if out[0] and out[1]:
        print(f"{sc}: service CPU per call: A median {statistics.median(out[0]):.1f} us, B median {statistics.median(out[1]):.1f} us, ratio {statistics.median(out[0])/statistics.median(out[1]):.3f}")
# The VM's speed drifts between rounds (the bench client's own CPU per call,
# a fixed workload, moves in step with the stack's): the stack's CPU per call
# divided by the client's cancels that drift.
for sc in SCEN:
    out=per_side(sc, lambda x: sum(x['process_cpu'].values())/x['client_cpu']['cores'] if x['client_cpu']['cores']>0 else None)
    if out[0] and out[1]:
        a,b=statistics.median(out[0]),statistics.median(out[1])
        print(f"{sc}: stack CPU per call / client CPU per call: A median {a:.2f} (runs {', '.join(f'{v:.2f}' for v in out[0])}), B median {b:.2f} (runs {', '.join(f'{v:.2f}' for v in out[1])}), A/B {a/b:.3f}")
