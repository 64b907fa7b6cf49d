import itertools, numpy as np
from kikuchipy_cnn.lattice import cell_fingerprint, niggli_cell

def hnf(k):
    out = []
    for a in range(1, k + 1):
        if k % a: continue
        for c in range(1, k // a + 1):
            if (k // a) % c: continue
            f = k // (a * c)
            # lower-triangular rows: [a,0,0],[b,c,0],[d,e,f], 0<=b<a? use column-diagonal ranges
            for b in range(a):
                for d in range(a):
                    for e in range(c):
                        out.append(np.array([[a, 0, 0], [b, c, 0], [d, e, f]]))
    return out

HNF = {k: hnf(k) for k in (1, 2, 3, 4)}

def sub_fps(direct, max_index=4):
    """(index, log fingerprint) of the sublattices of index <= max_index."""
    res = []
    for k in range(1, max_index + 1):
        seen = []
        for H in HNF[k]:
            try:
                c = niggli_cell(H @ direct)
            except ValueError:
                continue
            fp = np.log(cell_fingerprint(c))
            res.append((k, fp))
    return res
