# A model of the bit-sliced selection of a warp of 8 columns at the level of plane words
# (`ZERO_AT` and `sliced_select` in crates/psg-codegen/src/cuda_tile.rs): the full count against
# the early stop and the zero check.
# `python3 zero_check_model.py` should print "bad 0"; with an argument it models the first
# version (a mask of samples taken as a lone key's bits) and finds it wrong.
import random, struct, sys
BUG = len(sys.argv)>1
def key(f):
    u=struct.unpack('<I',struct.pack('<f',f))[0]
    return u ^ (0xffffffff if u>>31 else 0x80000000)
def planes_of(keys):
    P=[[0]*32 for _ in range(8)]
    for b,k in enumerate(keys):
        p,m=b%8,b//8
        for j in range(32):
            if (k>>j)&1: P[p][j]|=1<<m
    return P
def popc(x): return bin(x).count('1')
def finish(c, P, stopbit, r):
    if c['left']==0: r=((1<<stopbit)-1) if c['rem']>=0 else 0
    elif c['rem']<0:
        if r: c['m']=[0]*8
        r=0
    c['sel']|=r
def warp(cols, ranks, zero=True, early=True):
    B=len(cols[0]); PS=[planes_of(k) for k in cols]
    st=[]
    for k,rank in zip(cols,ranks):
        st.append(dict(m=[(1<<len(range(p,B,8)))-1 for p in range(8)], sel=0, rem=rank, left=B))
    stop=0; done=False
    for i in range(31,-1,-1):
        for c,P in zip(st,PS):
            z=[c['m'][p] & ~P[p][i] & 0xffffffff for p in range(8)]
            c0=sum(popc(x) for x in z)
            if c['rem']<c0: c['m']=z; c['left']=c0
            else:
                c['rem']-=c0; c['m']=[c['m'][p]&P[p][i] for p in range(8)]; c['sel']|=1<<i; c['left']-=c0
        if early and i<=24 and i>0 and i%2==0 and all(c['left']<=1 for c in st): stop=i; break
        if zero and i==22 and any(c['left']>1 and (c['sel']>>23)==0x100 for c in st):
            res=[]
            ok=True
            for c,P in zip(st,PS):
                some=[0]*4; rest=[0]*4
                for q in range(4):
                    for j in range(i-1,-1,-1):
                        o=(P[2*q][j]&c['m'][2*q])|(P[2*q+1][j]&c['m'][2*q+1])
                        some[q]|=o
                        if o: rest[q]|=1<<j
                ok = ok and all(c['left']<=1 or (some[q]==0 and c['rem']<c['left']) for q in range(4))
                res.append((some,rest))
            if ok:
                for c,P,(some,rest) in zip(st,PS,res):
                    r=(some[0]|some[1]|some[2]|some[3]) if BUG else (rest[0]|rest[1]|rest[2]|rest[3])
                    finish(c,P,i,r)
                done=True; break
    if not done and stop>0:
        for c,P in zip(st,PS):
            r=0
            for j in range(stop-1,-1,-1):
                if any(P[p][j]&c['m'][p] for p in range(8)): r|=1<<j
            finish(c,P,stop,r)
    return [(c['sel'],c['rem'],sum(popc(x) for x in c['m'])) for c in st]
random.seed(3)
bad=0; n=0
for t in range(1500):
    B=random.choice([65,100,129,200,256])
    cols=[]
    for c in range(8):
        mode=random.randrange(5)
        def val():
            if mode==0: return random.choice([0.0,0.0,0.0,-0.0,1e-40,-1e-40,random.gauss(0,1)])
            if mode==1: return random.choice([0.0]*9+[random.gauss(0,1)])
            if mode==2: return random.choice([0.0,-0.0,struct.unpack('<f',struct.pack('<I',random.randrange(1,1<<23)))[0]])
            if mode==3: return round(random.gauss(0,1)*8)/8
            return random.gauss(0,1)
        cols.append([key(val()) for _ in range(B)])
    for rk in range(4):
        ranks=[random.choice([(B-1)//2,(B-1)//2+1,0,B-1,B,-1,random.randrange(B)]) for _ in range(8)]
        a=warp(cols,ranks,zero=False,early=False); b=warp(cols,ranks)
        n+=1
        if a!=b:
            bad+=1
print('warps',n,'bad',bad)
