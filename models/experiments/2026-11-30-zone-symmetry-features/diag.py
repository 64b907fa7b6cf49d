import sys, numpy as np
sys.path.insert(0,'models/experiments/2026-11-30-zone-symmetry-features')
import zones
from kikuchipy_cnn.training import band_sets as BS
from kikuchipy_cnn.training.projection import MasterSet
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info
from kikuchipy_cnn.bands import _gnomonic_matrix, pixel_directions
arrays, settings = BS.load_band_sets("models/training-data/band-sets/kinematical-fine/rendered_test.npz")
masters = MasterSet("cache/kin-fine", "test")
items, shards = BS.rendered_plan(masters, settings["n_per"], BS.split_rng(0,"rendered","test"), settings)
rows=[]
pos=0
for si,idx in enumerate(shards):
    its=[items[j] for j in idx]
    if min(its[0]["shape"])<120: pos+=len(its); continue
    pats = BS.render_patterns(masters, its, BS.split_rng(0,"rendered","test",si))
    for i,it in enumerate(its):
        g=pos+i; sysn=joint_class_info(JOINT_CLASSES[arrays["label"][g]])["crystal_system"]
        if sysn not in ("cubic","tetragonal","hexagonal","trigonal"): continue
        if i%2: continue
        T=BS.crystal_to_detector(it["quaternion"], *it["tilts"])
        img,pcb=zones.prepare(pats[i], it["pc"]); Minv=np.linalg.inv(_gnomonic_matrix(img.shape,pcb))
        dirs=pixel_directions(img.shape,pcb).reshape(-1,3)
        found,_=zones.find_zones(arrays["normals"][g],arrays["valid"][g],arrays["strength"][g])
        ax = np.eye(3) if sysn=="cubic" else np.array([[0,0,1.0]])
        n = {"cubic":4,"tetragonal":4,"hexagonal":6,"trigonal":3}[sysn]
        for a in ax:
            u=a@T; u=u*np.sign(u[2])
            hom=Minv@(u/u[2])
            if not (0.1<hom[0]<0.9 and 0.1<hom[1]<0.9): continue
            d0=zones._zone_symmetry(img,dirs,Minv,u)
            if len(found):
                k=np.argmax(np.abs(found@u)); ang=np.degrees(np.arccos(min(1,abs(found[k]@u))))
                d1=zones._zone_symmetry(img,dirs,Minv,found[k]) if ang<3 else None
            else: ang, d1 = 99, None
            rows.append((sysn, n, d0[f"r{n}"], d0["r2"], ang, d1[f"r{n}"] if d1 else np.nan, arrays["counts"][g]))
    pos+=len(its)
import collections
R=np.array([(r[1],r[2],r[3],r[4],r[5],r[6]) for r in rows],float); S=np.array([r[0] for r in rows])
for s in ["cubic","tetragonal","hexagonal","trigonal"]:
    m=S==s
    print(f"{s:11s} axes {m.sum():3d} true-axis r_n median {np.nanmedian(R[m,1]):.2f} (q25 {np.nanpercentile(R[m,1],25):.2f}) | found within 3deg {np.mean(R[m,3]<3):.2f}, angle median {np.median(R[m,3][R[m,3]<3]):.2f} | r_n at found axis {np.nanmedian(R[m,4]):.2f}")
np.save("/tmp/diag.npy", R)
