"""Registering the serving layer's alias webhook with the MLflow server."""

from typing import Any

from mlflow.tracking import MlflowClient

ALIAS_EVENTS: list[Any] = ["model_version_alias.created", "model_version_alias.deleted"]


def ensure_alias_webhook(client: MlflowClient, name: str, url: str, secret: str) -> str:
    """Create or update the webhook `name` so alias moves are posted to `url`; return its id."""
    for webhook in client.list_webhooks(max_results=1000):
        if webhook.name == name:
            client.update_webhook(
                webhook.webhook_id, url=url, events=ALIAS_EVENTS, secret=secret, status="ACTIVE"
            )
            return str(webhook.webhook_id)
    created = client.create_webhook(name, url, events=ALIAS_EVENTS, secret=secret)
    return str(created.webhook_id)
