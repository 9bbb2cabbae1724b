# Independent reference for common/src/uncertainty.rs tests.
M=(1<<64)-1
class R:
    def __init__(s,seed): s.s=seed
    def nxt(s):
        s.s=(s.s+0x9E3779B97F4A7C15)&M; z=s.s
        z=((z^(z>>30))*0xBF58476D1CE4E5B9)&M
        z=((z^(z>>27))*0x94D049BB133111EB)&M
        return z^(z>>31)
    def below(s,n): return (s.nxt()*n)>>64
T=[("a","XSS",3,3),("b","SQLI",0,3),("c","XSS",1,3),("d","SQLI",2,3),("e","XSS",0,3),("f","PATH",3,3),("g","SQLI",1,3),("h","PATH",2,3)]
def pooled(idx):
    return sum(T[i][2] for i in idx)/sum(T[i][3] for i in idx)*100
def typed(idx):
    g={}
    for i in idx:
        a=g.setdefault(T[i][1],[0,0]); a[0]+=T[i][2]; a[1]+=T[i][3]
    w=1.0/len(g); s=0.0
    for k in g: s+= g[k][0]/g[k][1]*w
    return s*100
def pct(v,q):
    h=(len(v)-1)*q; lo=int(h//1); hi=min(lo+1,len(v)-1)
    return v[lo]+(h-lo)*(v[hi]-v[lo])
def boot(strata,stat,seed,B,level):
    r=R(seed); reps=[]
    for _ in range(B):
        smp=[]
        for st in strata:
            for _ in range(len(st)): smp.append(st[r.below(len(st))])
        reps.append(stat(smp))
    reps.sort(); tail=(1-level)/2
    return stat([i for st in strata for i in st]), pct(reps,tail), pct(reps,1-tail)
order=[]
for i,t in enumerate(T):
    if t[1] not in order: order.append(t[1])
strata=[[i for i,t in enumerate(T) if t[1]==g] for g in order]
print("pooled", *map(repr,boot([list(range(8))],pooled,15,2000,0.95)))
print("typed", *map(repr,boot(strata,typed,15,2000,0.95)))
print("seed99", *map(repr,boot([list(range(8))],pooled,99,500,0.9)))
