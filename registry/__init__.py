"""The only code that talks to MLflow: resolve, load, register, promote, history, runs, and
the contract every package shares (tasks, output columns, holdout, compatibility)."""
