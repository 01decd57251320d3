"""Serve the `restore-dataset` flow on a cron schedule from this process (no work pool needed).

    python -m flows.serve --config-path /data/jobs/nightly.yaml --cron "0 2 * * *"

The schedule and parameters default to the `nightly-restore` deployment in `prefect.yaml`, so both ways
of deploying run the same thing. Point `PREFECT_API_URL` at your Prefect server to see it there.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from flows.restore import restore_dataset
from pipeline.console import quiet_third_party

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"
DEPLOYMENT_NAME = "nightly-restore"


def deployment_defaults(name: str = DEPLOYMENT_NAME, prefect_yaml: Path = PREFECT_YAML) -> dict[str, Any]:
    """The cron, timezone and parameters of deployment `name` in prefect.yaml."""
    spec = yaml.safe_load(prefect_yaml.read_text())
    for deployment in spec.get("deployments", []):
        if deployment.get("name") == name:
            schedule = (deployment.get("schedules") or [{}])[0]
            return {"cron": schedule.get("cron"), "timezone": schedule.get("timezone", "UTC"),
                    "parameters": deployment.get("parameters") or {}}
    raise KeyError(f"no deployment named {name!r} in {prefect_yaml}")


def build_deployment(cron: str | None = None, parameters: dict[str, Any] | None = None,
                     name: str = DEPLOYMENT_NAME):
    """A RunnerDeployment of the flow with its cron schedule (apply() registers it with the API)."""
    defaults = deployment_defaults(name)
    return restore_dataset.to_deployment(
        name=name,
        cron=cron or defaults["cron"],
        parameters={**defaults["parameters"], **(parameters or {})},
        tags=["matpipe"],
        description="Restore a dataset with matpipe on a schedule",
    )


def stop_on_sigterm() -> None:
    """Make SIGTERM (what `kill`, systemd and container runtimes send) stop serving like Ctrl-C does:
    Prefect's runner handles KeyboardInterrupt but would otherwise ignore SIGTERM."""
    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _interrupt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-path", help="job YAML/JSON (default: the one in prefect.yaml)")
    parser.add_argument("--cron", help="cron schedule (default: the one in prefect.yaml)")
    parser.add_argument("--ray-address", help="Ray cluster to join (default: start Ray locally)")
    args = parser.parse_args(argv)
    defaults = deployment_defaults()
    parameters = dict(defaults["parameters"])
    if args.config_path:
        parameters["config_path"] = args.config_path
    if args.ray_address:
        parameters["ray_address"] = args.ray_address
    quiet_third_party()
    stop_on_sigterm()
    try:
        restore_dataset.serve(name=DEPLOYMENT_NAME, cron=args.cron or defaults["cron"], parameters=parameters,
                              tags=["matpipe"])
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (stop_on_sigterm): the normal way to stop serving
        print("flows.serve: interrupted", file=sys.stderr)
    print("flows.serve: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
