"""The serving layer: alias-resolved model slots behind MLflow's scoring protocol."""
