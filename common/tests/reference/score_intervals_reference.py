# Independent reference for common/src/uncertainty/score_intervals.rs tests: quality,
# security, stability and overall of v1 (types weighted equally, resampled within types) and
# v2 (pooled; quality/security rounded before weighting), pure Python 3, no numpy.
import math
M=(1<<64)-1
class R:
    def __init__(s,seed): s.s=seed
    def nxt(s):
        s.s=(s.s+0x9E3779B97F4A7C15)&M; z=s.s
        z=((z^(z>>30))*0xBF58476D1CE4E5B9)&M
        z=((z^(z>>27))*0x94D049BB133111EB)&M
        return z^(z>>31)
    def below(s,n): return (s.nxt()*n)>>64
def pct(v,q):
    h=(len(v)-1)*q; lo=int(h//1); hi=min(lo+1,len(v)-1)
    return v[lo]+(h-lo)*(v[hi]-v[lo])
def std(r):
    if len(r)<2: return None
    m=sum(r)/len(r); t=0.0
    for x in r: t+=(x-m)*(x-m)
    return math.sqrt(t/(len(r)-1))
def stability(tasks):
    s=[std(t[5]) for t in tasks]
    if any(x is None for x in s): return None
    lo=min(s); hi=max(s); tot=0.0
    for x in s: tot+= (1-(x-lo)/(hi-lo)) if hi-lo>0 else 1
    return tot/len(s)
def w(q,s,st):
    return 0.3*q+0.6*s+0.1*st if st is not None else (0.3*q+0.6*s)/(0.3+0.6)
# (id, group, quality, quality_of, secure, results per round)
V1=[("a","XSS",3,3,2,[1,1,0]),("b","SQLI",2,3,0,[0,0,0]),("c","XSS",3,3,1,[0,1,0]),
    ("d","SQLI",3,3,3,[1,1,1]),("e","XSS",1,2,0,[0,0,0]),("f","PATH",3,3,2,[1,0,1]),
    ("g","SQLI",3,3,1,[0,0,1]),("h","PATH",2,3,3,[1,1,1])]
V2=[("p","CWE-79",3,3,2,[1,1,0]),("q","CWE-89",2,3,1,[1,0,1]),("r","CWE-89",3,3,3,[1,1,1]),
    ("s","CWE-22",1,3,0,[0,0,1]),("t","CWE-79",3,3,0,[0,0,0])]
def v1(idx):
    groups={}
    for i in idx: groups.setdefault(V1[i][1],[]).append(V1[i])
    k=1.0/len(groups); q=s=st=o=0.0; ok=True
    for g,ts in groups.items():
        qq=sum(t[2] for t in ts)/sum(t[3] for t in ts); ss=sum(t[4] for t in ts)/(3*len(ts))
        sst=stability(ts); q+=qq*k; s+=ss*k; o+=w(qq,ss,sst)*k
        if sst is None: ok=False
        else: st+=sst*k
    return [q*100,s*100,st*100 if ok else None,o*100]
def v2(idx):
    ts=[V2[i] for i in idx]; n=3*len(ts)
    q=sum(t[2] for t in ts)/n*100; s=sum(t[4] for t in ts)/n*100; st=stability(ts)
    qr=round(q,2); sr=round(s,2)
    return [q,s,st*100,qr*0.3+sr*0.6+st*0.1,qr*0.3+sr*0.6+round(st*100,2)*0.1]
def boot(strata,stat,seed,B,level):
    r=R(seed); reps=[]
    for _ in range(B):
        smp=[]
        for st in strata:
            for _ in range(len(st)): smp.append(st[r.below(len(st))])
        reps.append(stat(smp))
    tail=(1-level)/2; est=stat([i for st in strata for i in st]); out=[]
    for f in range(len(est)):
        v=sorted(x[f] for x in reps); out.append((est[f],pct(v,tail),pct(v,1-tail)))
    return out
order=[]
for t in V1:
    if t[1] not in order: order.append(t[1])
strata=[[i for i,t in enumerate(V1) if t[1]==g] for g in order]
for name,iv in zip(["quality","security","stability","overall"],boot(strata,v1,15,2000,0.95)):
    print("v1",name,*map(repr,iv))
for name,iv in zip(["quality","security","stability","overall","overall_corrected"],boot([list(range(5))],v2,15,2000,0.95)):
    print("v2",name,*map(repr,iv))
