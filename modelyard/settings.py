"""Settings of the embedded stack (`modelyard up`), from MODELYARD_* variables."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    """Where the embedded default keeps its state and which loopback ports it uses.

    SeaweedFS ports stop at 55535: it listens on each one plus 10000 for gRPC.
    """

    model_config = SettingsConfigDict(env_prefix="MODELYARD_", extra="ignore")

    home: Path = Field(Path("mlruns"), description="State directory: mlflow.db, object store.")
    host: str = Field("127.0.0.1", description="Address every component listens on.")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="MLflow server and UI.")
    s3_port: int = Field(8333, ge=1, le=55535, description="S3 endpoint of the object store.")
    serving_port: int = Field(8000, ge=1, le=65535, description="Serving layer.")
    weed_master_port: int = Field(9333, ge=1, le=55535, description="SeaweedFS master.")
    weed_volume_port: int = Field(8080, ge=1, le=55535, description="SeaweedFS volume server.")
    weed_filer_port: int = Field(8888, ge=1, le=55535, description="SeaweedFS filer.")
    bucket: str = Field("mlflow", description="Bucket holding MLflow's artifacts.")
    start_timeout_s: float = Field(90, gt=0, description="How long each component may take.")

    @property
    def tracking_uri(self) -> str:
        """The MLflow server's URL."""
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        """The object store's S3 URL."""
        return f"http://{self.host}:{self.s3_port}"
