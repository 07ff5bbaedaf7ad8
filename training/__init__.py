"""Training scripts: scikit-learn and PyTorch models on datasets that ship with scikit-learn."""
