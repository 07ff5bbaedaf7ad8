"""Model code logged with every version (MLflow models from code): no pickle, no training import."""
