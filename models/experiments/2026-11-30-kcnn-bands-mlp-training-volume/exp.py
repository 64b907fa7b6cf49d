import sys, json, numpy as np, torch
from kikuchipy_cnn.training import band_model as BM
from kikuchipy_cnn.symmetry import JOINT_CLASSES
F = {
 'refl': 'cache/band-features/reflectors_train.features.npz',
 'rend': 'cache/band-features/rendered_train.features.npz',
 'refl3': 'cache/band-features-more/reflectors_train.features.npz',
 'kin': 'cache/band-features-kin/rendered_train.features.npz',
}
V = {'refl': 'cache/band-features/reflectors_val.features.npz', 'rend': 'cache/band-features/rendered_val.features.npz',
     'kin': 'cache/band-features-kin/rendered_val.features.npz'}
TESTS = {'rendered (coarse dyn)': 'cache/band-features/rendered_test.features.npz',
         'reflectors': 'cache/band-features/reflectors_test.features.npz',
         'rendered (fine kin, 225)': 'cache/band-features-kinfine/rendered_test.features.npz'}
def predict(run, path):
    ck = torch.load(f'{run}/checkpoint.pt', weights_only=False)
    m = BM._mlp(ck['n_in'], len(JOINT_CLASSES), ck['hidden'], ck['dropout']); m.load_state_dict(ck['state']); m.eval()
    d = BM.load_features([path])
    x = torch.as_tensor((d['features'] - ck['mu']) / ck['sd'], dtype=torch.float32)
    with torch.no_grad(): p = torch.softmax(m(x) / ck['temperature'], 1).numpy()
    return p, d
def report(run):
    out = {}
    for name, path in TESTS.items():
        p, d = predict(run, path)
        big = d['shape'].min(1) >= 120
        a = BM._levels_accuracy(p, d['label']); ab = BM._levels_accuracy(p[big], d['label'][big])
        out[name] = (len(p), a, int(big.sum()), ab)
        print(f"{run} | {name} | n {len(p)} | " + " / ".join(f"{a[k]:.3f}" for k in ['crystal_system','bravais_lattice','laue_class','joint'])
              + f" | >=120 px n {big.sum()}: " + " / ".join(f"{ab[k]:.3f}" for k in ['crystal_system','bravais_lattice','laue_class','joint']), flush=True)
    return out
if __name__ == '__main__':
    name, tr, va = sys.argv[1], sys.argv[2].split(','), sys.argv[3].split(',')
    run = f'runs/exp-{name}'
    if len(sys.argv) > 4 and sys.argv[4] == 'eval':
        report(run); sys.exit()
    r = BM.train([F[k] for k in tr], [V[k] for k in va], [], run, seed=int(__import__('os').environ.get('SEED', 0)))
    print(name, 'epochs', r['epochs'], 'val', r['val']['accuracy'], flush=True)
    report(run)
