import numpy as np, sub, time
from kikuchipy_cnn.lattice import cell_fingerprint, CELL_AGREEMENT, consensus_cell
d = np.load("cells.npz", allow_pickle=True)
cells, true, sid = d["cells"], d["true"], d["sid"]
n = len(cells)
cand = []
t0=time.time()
for i in range(n):
    if np.isfinite(cells[i]).all():
        c = sub.sub_fps(cells[i])
        cand.append((np.array([k for k, _ in c]), np.array([f for _, f in c])))
    else:
        cand.append(None)
print("candidates", time.time()-t0)
tfp = np.array([np.log(cell_fingerprint(t)) for t in true])

def sub_consensus(bag, tol=CELL_AGREEMENT, max_hyp_index=4):
    bag = [i for i in bag if cand[i] is not None]
    if not bag: return None, 0
    ks = [cand[i][0] for i in bag]; fps = [cand[i][1] for i in bag]
    H = np.concatenate([f[k <= max_hyp_index] for k, f in zip(ks, fps)])
    Hk = np.concatenate([k[k <= max_hyp_index] for k in ks])
    sup = np.zeros(len(H)); cost = np.zeros(len(H))
    for k, f in zip(ks, fps):
        dist = np.abs(H[:, None, :] - f[None, :, :]).max(2)  # (h, m)
        ok = dist <= tol
        has = ok.any(1)
        sup += has
        cost += np.where(has, np.where(ok, k[None, :], 99).min(1), 0)
    order = np.lexsort((Hk, cost, -sup))
    return H[order[0]], sup[order[0]] / len(bag)

rng = np.random.default_rng(7)
for size in (1, 3, 10, 20):
    hm, hs, sups = [], [], []
    for s in np.unique(sid):
        rows = np.flatnonzero(sid == s)
        for _ in range(5 if size < len(rows) else 1):
            bag = rng.choice(rows, size, replace=False)
            i, _ = consensus_cell(cells[bag])
            hm.append(i >= 0 and np.abs(np.log(cell_fingerprint(cells[bag[i]])) - tfp[bag[0]]).max() <= CELL_AGREEMENT)
            h, sp = sub_consensus(bag)
            hs.append(h is not None and np.abs(h - tfp[bag[0]]).max() <= CELL_AGREEMENT); sups.append(sp)
    hs, sups = np.array(hs), np.array(sups)
    print(size, len(hm), "medoid", np.mean(hm).round(3), "sublattice consensus", hs.mean().round(3), "support", sups.mean().round(2), "sup>=.5", (sups>=.5).mean().round(2), hs[sups>=.5].mean().round(2) if (sups>=.5).any() else "-")

for maxk in (2, 3):
    cand_full = cand
    cand = [None if c is None else (c[0][c[0] <= maxk], c[1][c[0] <= maxk]) for c in cand_full]
    rng = np.random.default_rng(7)
    for size in (3, 10, 20):
        hs, sups = [], []
        for s in np.unique(sid):
            rows = np.flatnonzero(sid == s)
            for _ in range(5 if size < len(rows) else 1):
                bag = rng.choice(rows, size, replace=False)
                h, sp = sub_consensus(bag)
                hs.append(h is not None and np.abs(h - tfp[bag[0]]).max() <= CELL_AGREEMENT); sups.append(sp)
        hs, sups = np.array(hs), np.array(sups)
        print("maxk", maxk, size, "sublattice consensus", hs.mean().round(3), "support", sups.mean().round(2))
    cand = cand_full
