"""The only code that talks to MLflow: resolve, register, load, promote, history, gates."""
