import numpy as np, sub
from kikuchipy_cnn.lattice import cell_fingerprint, CELL_AGREEMENT
d = np.load("cells.npz", allow_pickle=True)
cells, true = d["cells"], d["true"]
n = len(cells); res = {"right":0, "truth_sub_of_cell":{1:0,2:0,3:0,4:0}, "cell_sub_of_truth":{2:0,3:0,4:0}, "none":0, "nofit":0}
for i in range(n):
    if not np.isfinite(cells[i]).all():
        res["nofit"] += 1; continue
    t = np.log(cell_fingerprint(true[i]))
    found = False
    for k, fp in sub.sub_fps(cells[i]):
        if np.abs(fp - t).max() <= CELL_AGREEMENT:
            res["truth_sub_of_cell"][k] += 1; found = True; break
    if found: continue
    c = np.log(cell_fingerprint(cells[i]))
    for k, fp in sub.sub_fps(true[i]):
        if k > 1 and np.abs(fp - c).max() <= CELL_AGREEMENT:
            res["cell_sub_of_truth"][k] += 1; found = True; break
    if not found: res["none"] += 1
print(n, res)
