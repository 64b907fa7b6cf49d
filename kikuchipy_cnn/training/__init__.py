"""Training data engine: random structures, dynamical master patterns,
projection with realistic degradation, and datasets on disk.

Training-only. Inference code never imports this subpackage.
"""
